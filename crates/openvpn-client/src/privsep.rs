//! Privilege separation: the client runs as an ordinary user, a small root helper opens the
//! tun device, installs addresses, routes and DNS for it, and passes the device's file
//! descriptor back over a Unix socket (the idea of OpenVPN's interactive service, for Linux).
//!
//! ```text
//!  openvpn-client (user)                              openvpn-client helper (root)
//!   HelperTunBuilder::establish(settings)
//!     connect(/run/openvpn-rs/helper.sock) ─────────▶ SO_PEERCRED: log uid/pid
//!     OPEN /etc/openvpn-rs/profiles/work.ovpn ──────▶ canonicalize, inside --profiles?
//!                                                     root-owned, not group/world-writable?
//!                                          ◀──────── OK                 (or ERR reason)
//!     ESTABLISH ipv4=10.8.0.2/24 route4=… ──────────▶ Policy::check (what the profile allows)
//!                                                     LinuxTunBuilder: tun, routes, DNS,
//!                                                     journal
//!                                          ◀──────── OK tun3 + fd (SCM_RIGHTS)
//!   HelperTun { LinuxTun::from_fd, connection }        keeps its LinuxTun while the
//!     … tunnel runs …                                  connection is open
//!   exit / crash / kill -9: socket closes ──────────▶ EOF: drop LinuxTun (routes, DNS
//!                                                     undone), delete the link
//! ```
//!
//! The protocol is line-based text: a command word, a space, and an argument. `OPEN` takes a
//! percent-escaped path; `ESTABLISH` takes the [`TunSettings`] as space-separated
//! `key=value` pairs with percent-escaped values ([`encode_settings`]). Answers are `OK
//! [ifname]` or `ERR reason`. One tunnel per connection.

use std::collections::HashSet;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openvpn_control::client::PullFilterAction;
use openvpn_tun::route::{self, HALVES_V4, HALVES_V6, OutsideRoute, Redirect};
use openvpn_tun::{LinuxTun, Netlink, PacketDevice, fdpass};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};

use crate::config::{ProfileRoute, RouteDest, RouteGateway};
use crate::tun::{LinuxTunBuilder, TunBuilder, TunSettings};
use crate::{ClientConfig, ConfigError};

/// Where the helper listens by default.
pub const DEFAULT_SOCKET: &str = "/run/openvpn-rs/helper.sock";
/// The directory of the profiles the helper accepts, by default.
pub const DEFAULT_PROFILES: &str = "/etc/openvpn-rs/profiles";

/// Longest request line the helper reads.
const MAX_LINE: usize = 64 * 1024;
/// Most connections the helper serves at once.
const MAX_CONNECTIONS: usize = 64;
/// Time a client has for `OPEN` and `ESTABLISH`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Most routes of each family, DNS servers and domains in one request.
const MAX_ROUTES: usize = 1024;
const MAX_DNS: usize = 16;

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

/// Percent-escapes everything but unreserved printable ASCII, so a value never contains a
/// space, `=`, `%`, a line break or a control character.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b".-_~/:,!+@[]".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses [`escape`]; the result must be UTF-8.
pub fn unescape(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad escape in {s:?}"))?;
                out.push(hex);
                i += 3;
            }
            b if b.is_ascii_graphic() && b != b'=' => {
                out.push(b);
                i += 1;
            }
            _ => return Err(format!("unescaped character in {s:?}")),
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8"))
}

/// Encodes the settings as `key=value` pairs: `ipv4=A/P`, `ipv6=A/P`, `route4=N/P`…,
/// `route6=N/P`…, `dns=IP`…, `domain=D`…, `mtu=N`, `server=IP`,
/// `redirect=FLAG,FLAG` (`ipv4`, `ipv6`, `local`, `block-local`; present = redirect),
/// `block4=1`, `block6=1`, `metric=N`, `rmetric=N/P,M`… (a route's own metric),
/// `outside=N/P,GW,M`… (a route around the tunnel; `GW` = an address or `net_gateway`, `M`
/// empty for none).
pub fn encode_settings(s: &TunSettings) -> String {
    let mut kv: Vec<(&str, String)> = Vec::new();
    if let Some((a, p)) = s.ipv4 {
        kv.push(("ipv4", format!("{a}/{p}")));
    }
    if let Some((a, p)) = s.ipv6 {
        kv.push(("ipv6", format!("{a}/{p}")));
    }
    kv.extend(
        s.routes_v4
            .iter()
            .map(|(n, p)| ("route4", format!("{n}/{p}"))),
    );
    kv.extend(
        s.routes_v6
            .iter()
            .map(|(n, p)| ("route6", format!("{n}/{p}"))),
    );
    kv.extend(s.dns_servers.iter().map(|a| ("dns", a.to_string())));
    kv.extend(s.dns_domains.iter().map(|d| ("domain", d.clone())));
    kv.push(("mtu", s.mtu.to_string()));
    if let Some(a) = s.server {
        kv.push(("server", a.to_string()));
    }
    if let Some(r) = s.redirect {
        kv.push(("redirect", redirect_flags(&r).join(",")));
    }
    if s.block_ipv4 {
        kv.push(("block4", "1".into()));
    }
    if s.block_ipv6 {
        kv.push(("block6", "1".into()));
    }
    if let Some(m) = s.route_metric {
        kv.push(("metric", m.to_string()));
    }
    kv.extend(
        s.route_details
            .metrics
            .iter()
            .map(|(n, p, m)| ("rmetric", format!("{n}/{p},{m}"))),
    );
    kv.extend(s.route_details.outside.iter().map(|r| {
        let gw = r
            .gateway
            .map_or("net_gateway".to_owned(), |g| g.to_string());
        let m = r.metric.map(|m| m.to_string()).unwrap_or_default();
        ("outside", format!("{}/{},{gw},{m}", r.dest, r.prefix))
    }));
    kv.iter()
        .map(|(k, v)| format!("{k}={}", escape(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn redirect_flags(r: &Redirect) -> Vec<&'static str> {
    [
        (r.ipv4, "ipv4"),
        (r.ipv6, "ipv6"),
        (r.local, "local"),
        (r.block_local, "block-local"),
    ]
    .into_iter()
    .filter_map(|(on, f)| on.then_some(f))
    .collect()
}

fn parse_net<A: std::str::FromStr>(v: &str, max: u8) -> Result<(A, u8), String> {
    let (a, p) = v
        .split_once('/')
        .ok_or_else(|| format!("{v:?} is not ADDRESS/PREFIX"))?;
    let a = a
        .parse()
        .map_err(|_| format!("{a:?} is not an address of the right family"))?;
    let p: u8 = p
        .parse()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| format!("prefix /{p} is out of range (0..={max})"))?;
    Ok((a, p))
}

/// `A/P` of either family.
fn parse_any_net(v: &str) -> Result<(IpAddr, u8), String> {
    let (a, _) = v
        .split_once('/')
        .ok_or_else(|| format!("{v:?} is not ADDRESS/PREFIX"))?;
    if a.contains(':') {
        parse_net::<Ipv6Addr>(v, 128).map(|(a, p)| (a.into(), p))
    } else {
        parse_net::<Ipv4Addr>(v, 32).map(|(a, p)| (a.into(), p))
    }
}

/// Decodes [`encode_settings`]. Unknown keys and repeated single-valued keys are errors.
pub fn decode_settings(line: &str) -> Result<TunSettings, String> {
    let mut s = TunSettings::default();
    let mut seen = HashSet::new();
    let mut mtu = None;
    for pair in line.split(' ').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not key=value"))?;
        let v = unescape(v)?;
        let single = !matches!(
            k,
            "route4" | "route6" | "dns" | "domain" | "rmetric" | "outside"
        );
        if single && !seen.insert(k.to_owned()) {
            return Err(format!("'{k}' given twice"));
        }
        let num = |what: &str| -> Result<u32, String> {
            v.parse()
                .map_err(|_| format!("{what} {v:?} is not a number"))
        };
        match k {
            "ipv4" => s.ipv4 = Some(parse_net::<Ipv4Addr>(&v, 32)?),
            "ipv6" => s.ipv6 = Some(parse_net::<Ipv6Addr>(&v, 128)?),
            "route4" => s.routes_v4.push(parse_net(&v, 32)?),
            "route6" => s.routes_v6.push(parse_net(&v, 128)?),
            "dns" => s.dns_servers.push(
                v.parse()
                    .map_err(|_| format!("dns {v:?} is not an address"))?,
            ),
            "domain" => s.dns_domains.push(v),
            "mtu" => {
                mtu =
                    Some(u16::try_from(num("mtu")?).map_err(|_| format!("mtu {v} is too large"))?);
            }
            "server" => {
                s.server = Some(
                    v.parse()
                        .map_err(|_| format!("server {v:?} is not an address"))?,
                );
            }
            "redirect" => {
                let mut r = Redirect::default();
                for f in v.split(',').filter(|f| !f.is_empty()) {
                    match f {
                        "ipv4" => r.ipv4 = true,
                        "ipv6" => r.ipv6 = true,
                        "local" => r.local = true,
                        "block-local" => r.block_local = true,
                        x => return Err(format!("unknown redirect flag {x:?}")),
                    }
                }
                s.redirect = Some(r);
            }
            "block4" => s.block_ipv4 = v == "1",
            "block6" => s.block_ipv6 = v == "1",
            "metric" => s.route_metric = Some(num("metric")?),
            "rmetric" => {
                let (net, m) = v
                    .split_once(',')
                    .ok_or_else(|| format!("rmetric {v:?} is not NET/P,METRIC"))?;
                let (n, p) = parse_any_net(net)?;
                let m = m
                    .parse()
                    .map_err(|_| format!("rmetric {v:?}: {m:?} is not a number"))?;
                s.route_details.metrics.push((n, p, m));
            }
            "outside" => {
                let mut parts = v.split(',');
                let (Some(net), Some(gw), Some(m), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Err(format!("outside {v:?} is not NET/P,GATEWAY,METRIC"));
                };
                let (dest, prefix) = parse_any_net(net)?;
                let gateway = match gw {
                    "net_gateway" => None,
                    g => Some(
                        g.parse::<IpAddr>()
                            .ok()
                            .filter(|g| g.is_ipv4() == dest.is_ipv4())
                            .ok_or_else(|| format!("outside {v:?}: bad gateway {g:?}"))?,
                    ),
                };
                let metric = match m {
                    "" => None,
                    m => Some(
                        m.parse()
                            .map_err(|_| format!("outside {v:?}: {m:?} is not a number"))?,
                    ),
                };
                s.route_details.outside.push(OutsideRoute {
                    dest,
                    prefix,
                    gateway,
                    metric,
                });
            }
            other => return Err(format!("unknown key {other:?}")),
        }
    }
    s.mtu = mtu.ok_or("mtu is missing")?;
    Ok(s)
}

/// A reason on one line (for `ERR`).
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

// ---------------------------------------------------------------------------------------
// Profiles
// ---------------------------------------------------------------------------------------

fn owner_ok(meta: &std::fs::Metadata, trusted_uid: u32) -> bool {
    meta.uid() == 0 || meta.uid() == trusted_uid
}

/// Resolves `requested` (symlinks, `..`) and accepts it only if it is a regular file inside
/// `dir` and nobody but root (or `trusted_uid`, the helper's own uid) can change it: the file
/// and every directory from `dir` down to it are owned by root and not group- or
/// world-writable; the directories above `dir` are owned by root and not group- or
/// world-writable unless sticky (like `/tmp`).
pub fn resolve_profile(dir: &Path, requested: &Path, trusted_uid: u32) -> Result<PathBuf, String> {
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("profiles directory {}: {e}", dir.display()))?;
    if !requested.is_absolute() {
        return Err(format!(
            "profile path {} is not absolute",
            requested.display()
        ));
    }
    let path = requested
        .canonicalize()
        .map_err(|e| format!("profile {}: {e}", requested.display()))?;
    if !path.starts_with(&dir) || path == dir {
        return Err(format!(
            "profile {} is not inside the profiles directory {}",
            requested.display(),
            dir.display()
        ));
    }
    let meta = std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.file_type().is_file() {
        return Err(format!("profile {} is not a regular file", path.display()));
    }
    if !owner_ok(&meta, trusted_uid) || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "profile {} must be owned by root and not group- or world-writable (mode {:o}, uid {})",
            path.display(),
            meta.mode() & 0o7777,
            meta.uid()
        ));
    }
    for d in path.ancestors().skip(1) {
        let m = std::fs::symlink_metadata(d).map_err(|e| format!("{}: {e}", d.display()))?;
        let writable = m.mode() & 0o022 != 0;
        let inside = d.starts_with(&dir);
        let sticky = m.mode() & 0o1000 != 0;
        if !owner_ok(&m, trusted_uid) || (writable && (inside || !sticky)) {
            return Err(format!(
                "directory {} must be owned by root and not group- or world-writable (mode {:o}, uid {}): a user could swap the profile",
                d.display(),
                m.mode() & 0o7777,
                m.uid()
            ));
        }
    }
    Ok(path)
}

/// Loads a profile the way the helper does: relative file names (`ca ca.crt`) are resolved
/// against the profile's directory.
pub fn load_profile(path: &Path) -> Result<ClientConfig, ConfigError> {
    let lines = openvpn_control::loading::read_config_file(path)?;
    ClientConfig::from_lines(&lines, path.parent().unwrap_or(Path::new("/")))
}

// ---------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------

/// Pushed options that `route-nopull` drops (as `PushedOptions::apply` does).
const ROUTE_CLASS: &[&str] = &[
    "route",
    "route-ipv6",
    "route-gateway",
    "redirect-gateway",
    "redirect-private",
    "dhcp-option",
    "dns",
    "block-ipv6",
    "route-metric",
];

/// What a profile lets a tunnel ask for: the helper's view of the profile.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// The profile (for messages).
    pub profile: String,
    /// `dev` (`tun` = the kernel chooses `tunN`).
    pub dev: String,
    /// `redirect-gateway` of the profile.
    pub redirect: Option<Redirect>,
    /// `route-nopull`.
    pub route_nopull: bool,
    /// `route-noexec`.
    pub route_noexec: bool,
    /// `pull-filter` rules in order.
    pub pull_filter: Vec<(PullFilterAction, String)>,
    /// `block-ipv4` in the profile.
    pub block_ipv4: bool,
    /// `block-ipv6` in the profile.
    pub block_ipv6: bool,
    /// `route-metric`.
    pub route_metric: Option<u32>,
    /// `dhcp-option DNS/DNS6` of the profile.
    pub dns_servers: Vec<IpAddr>,
    /// `dhcp-option DOMAIN/DOMAIN-SEARCH` of the profile.
    pub dns_domains: Vec<String>,
    /// `route` / `route-ipv6` lines of the profile.
    pub routes: Vec<ProfileRoute>,
    /// `route-gateway` of the profile.
    pub route_gateway: Option<Ipv4Addr>,
}

fn v4_mask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    })
}

fn sane_unicast(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => {
            !(a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback())
        }
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast() || a.is_loopback()),
    }
}

fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

impl Policy {
    /// The policy of a loaded profile.
    pub fn from_config(cfg: &ClientConfig, profile: &str) -> Policy {
        let mut dns_servers = Vec::new();
        let mut dns_domains = Vec::new();
        for (kind, value) in &cfg.dhcp_options {
            match kind.as_str() {
                "DNS" | "DNS6" => dns_servers.extend(value.parse::<IpAddr>().ok()),
                "DOMAIN" | "DOMAIN-SEARCH" => dns_domains.push(value.clone()),
                _ => {}
            }
        }
        Policy {
            profile: profile.to_owned(),
            dev: cfg.dev.clone(),
            redirect: cfg.redirect_gateway.as_deref().map(Redirect::from_flags),
            route_nopull: cfg.route_nopull,
            route_noexec: cfg.route_noexec,
            pull_filter: cfg.pull_filter.clone(),
            block_ipv4: cfg.block_ipv4,
            block_ipv6: cfg.block_ipv6,
            route_metric: cfg.route_metric,
            dns_servers,
            dns_domains,
            routes: cfg.routes.clone(),
            route_gateway: cfg.route_gateway,
        }
    }

    /// The profile routes whose destination is `net/prefix` (`remote_host` = `server`).
    fn profile_routes_to(
        &self,
        net: IpAddr,
        prefix: u8,
        server: Option<IpAddr>,
    ) -> impl Iterator<Item = &ProfileRoute> {
        let want = (route::mask(net, prefix), prefix);
        self.routes.iter().filter(move |r| match r.dest {
            RouteDest::Net(a, p) => (route::mask(a, p), p) == want,
            RouteDest::RemoteHost(p) => {
                server.is_some_and(|s| s.is_ipv4() && (route::mask(s, p), p) == want)
            }
        })
    }

    /// Whether the profile lists a route to `net/prefix` around the tunnel via `gateway`
    /// (`None` = `net_gateway`).
    fn lists_outside(&self, r: &OutsideRoute, server: Option<IpAddr>) -> bool {
        self.profile_routes_to(r.dest, r.prefix, server)
            .any(|p| match (p.gateway, r.gateway) {
                (RouteGateway::Net, None) => true,
                (RouteGateway::Addr(a), Some(g)) => a == g,
                (RouteGateway::Default, Some(g)) => self.route_gateway.map(IpAddr::from) == Some(g),
                _ => false,
            })
    }

    /// Whether a pushed option rendered as `text` would reach the client: the client's
    /// `pull-filter` semantics (first rule whose text is a prefix decides: accept, ignore,
    /// reject — a reject fails the whole push), then `route-nopull` for the route and DNS
    /// options. `Err` names the profile line that drops it.
    pub fn pulled(&self, text: &str) -> Result<(), String> {
        for (action, prefix) in &self.pull_filter {
            if text.starts_with(prefix.as_str()) {
                return match action {
                    PullFilterAction::Accept => break,
                    PullFilterAction::Ignore => Err(format!("pull-filter ignore \"{prefix}\"")),
                    PullFilterAction::Reject => Err(format!("pull-filter reject \"{prefix}\"")),
                };
            }
        }
        let name = text.split(' ').next().unwrap_or_default();
        if self.route_nopull && ROUTE_CLASS.contains(&name) {
            return Err("route-nopull".into());
        }
        Ok(())
    }

    fn refuse(&self, what: String, why: &str) -> String {
        format!("{what} not allowed by profile {} ({why})", self.profile)
    }

    /// Checks a request against the profile. `Err` says what was refused and which profile
    /// line forbids it.
    pub fn check(&self, s: &TunSettings) -> Result<(), String> {
        if !(576..=65535).contains(&s.mtu) {
            return Err(format!("mtu {} is outside 576..=65535", s.mtu));
        }
        if let Some((a, p)) = s.ipv4 {
            if !sane_unicast(a.into()) || !(8..=32).contains(&p) {
                return Err(format!(
                    "address {a}/{p} is not a unicast address with a prefix of /8../32"
                ));
            }
        }
        if let Some((a, p)) = s.ipv6 {
            if !sane_unicast(a.into()) || !(32..=128).contains(&p) {
                return Err(format!(
                    "address {a}/{p} is not a unicast address with a prefix of /32../128"
                ));
            }
        }
        if s.routes_v4.len() > MAX_ROUTES || s.routes_v6.len() > MAX_ROUTES {
            return Err(format!("more than {MAX_ROUTES} routes"));
        }
        if s.dns_servers.len() > MAX_DNS || s.dns_domains.len() > MAX_DNS {
            return Err(format!("more than {MAX_DNS} DNS servers or domains"));
        }
        if let Some(a) = s.server {
            // Loopback is allowed here: the server must also be a remote of the profile.
            if a.is_unspecified() || a.is_multicast() {
                return Err(format!("server address {a} is not unicast"));
            }
        }
        // Redirect: the profile's own flags, or a pushed redirect-gateway that the profile
        // lets through.
        let redirect = match s.redirect {
            None => None,
            Some(r) => {
                let what = || {
                    let mut t = vec!["redirect-gateway", "def1"];
                    if !r.ipv4 {
                        t.push("!ipv4");
                    }
                    t.extend(redirect_flags(&r).into_iter().filter(|f| *f != "ipv4"));
                    t.join(" ")
                };
                if self.route_noexec {
                    return Err(self.refuse(what(), "route-noexec"));
                }
                let within_profile = self.redirect.is_some_and(|p| {
                    (!r.ipv4 || p.ipv4)
                        && (!r.ipv6 || p.ipv6)
                        && (!r.local || p.local)
                        && (!r.block_local || p.block_local)
                });
                if !within_profile {
                    self.pulled(&what())
                        .map_err(|why| self.refuse(what(), &why))?;
                }
                Some(r)
            }
        };
        for &(n, p) in &s.routes_v4 {
            if redirect.is_some_and(|r| r.ipv4) && HALVES_V4.contains(&(n, p)) {
                continue;
            }
            // `ifconfig local remote` (net30/p2p): the /32 route to the peer comes with the
            // address, not with a pushed route.
            let peer = s.ipv4.is_some_and(|(a, ap)| {
                ap == 32 && p == 32 && (u32::from(a) >> 8) == (u32::from(n) >> 8)
            });
            if peer {
                continue;
            }
            let what = format!("route {n}/{p}");
            if self.route_noexec {
                return Err(self.refuse(what, "route-noexec"));
            }
            if self
                .profile_routes_to(n.into(), p, s.server)
                .next()
                .is_some()
            {
                continue;
            }
            self.pulled(&format!("route {n} {}", v4_mask(p)))
                .map_err(|why| self.refuse(what, &why))?;
        }
        for &(n, p) in &s.routes_v6 {
            if redirect.is_some_and(|r| r.ipv6) && HALVES_V6.contains(&(n, p)) {
                continue;
            }
            let what = format!("route-ipv6 {n}/{p}");
            if self.route_noexec {
                return Err(self.refuse(what, "route-noexec"));
            }
            if self
                .profile_routes_to(n.into(), p, s.server)
                .next()
                .is_some()
            {
                continue;
            }
            self.pulled(&what)
                .map_err(|why| self.refuse(what.clone(), &why))?;
        }
        if s.route_details.outside.len() > MAX_ROUTES
            || s.route_details.metrics.len() > 2 * MAX_ROUTES
        {
            return Err(format!("more than {MAX_ROUTES} routes"));
        }
        // Around the tunnel: only what the profile itself lists.
        for r in &s.route_details.outside {
            let gw = r
                .gateway
                .map_or("net_gateway".to_owned(), |g| g.to_string());
            let what = format!("route {}/{} via {gw} (around the tunnel)", r.dest, r.prefix);
            if self.route_noexec {
                return Err(self.refuse(what, "route-noexec"));
            }
            if r.gateway.is_some_and(|g| !sane_unicast(g)) {
                return Err(format!("{what}: the gateway is not unicast"));
            }
            if !self.lists_outside(r, s.server) {
                return Err(self.refuse(
                    what,
                    "only the profile's own route lines go around the tunnel",
                ));
            }
        }
        // A route's own metric: only for a route of this request.
        for &(n, p, m) in &s.route_details.metrics {
            let net = route::mask(n, p);
            let requested = match net {
                IpAddr::V4(a) => s
                    .routes_v4
                    .iter()
                    .any(|&(r, rp)| rp == p && route::mask(r.into(), p) == IpAddr::V4(a)),
                IpAddr::V6(a) => s
                    .routes_v6
                    .iter()
                    .any(|&(r, rp)| rp == p && route::mask(r.into(), p) == IpAddr::V6(a)),
            };
            if !requested {
                return Err(format!(
                    "metric {m} for {n}/{p}, which is not a requested route"
                ));
            }
        }
        if s.block_ipv4 {
            if s.ipv4.is_some() {
                return Err("block-ipv4 with an IPv4 address in the tunnel".into());
            }
            if !self.block_ipv4 || self.route_noexec {
                return Err(self.refuse("block-ipv4".into(), "not in the profile"));
            }
        }
        if s.block_ipv6 {
            if s.ipv6.is_some() {
                return Err("block-ipv6 with an IPv6 address in the tunnel".into());
            }
            if self.route_noexec {
                return Err(self.refuse("block-ipv6".into(), "route-noexec"));
            }
            if !self.block_ipv6 {
                self.pulled("block-ipv6")
                    .map_err(|why| self.refuse("block-ipv6".into(), &why))?;
            }
        }
        if let Some(m) = s.route_metric {
            if self.route_metric != Some(m) {
                return Err(self.refuse(format!("route-metric {m}"), "not in the profile"));
            }
        }
        for &a in &s.dns_servers {
            if !sane_unicast(a) {
                return Err(format!("DNS server {a} is not unicast"));
            }
            if self.dns_servers.contains(&a) {
                continue;
            }
            let kind = if a.is_ipv4() { "DNS" } else { "DNS6" };
            let dhcp = self.pulled(&format!("dhcp-option {kind} {a}"));
            let dns = self.pulled(&format!("dns server 0 address {a}"));
            if let (Err(why), Err(_)) = (dhcp, dns) {
                return Err(self.refuse(format!("DNS server {a}"), &why));
            }
        }
        for d in &s.dns_domains {
            if !valid_domain(d) {
                return Err(format!("DNS domain {d:?} is not a domain name"));
            }
            if self.dns_domains.contains(d) {
                continue;
            }
            let a = self.pulled(&format!("dhcp-option DOMAIN {d}"));
            let b = self.pulled(&format!("dhcp-option DOMAIN-SEARCH {d}"));
            let c = self.pulled(&format!("dns search-domains {d}"));
            if let (Err(why), Err(_), Err(_)) = (a, b, c) {
                return Err(self.refuse(format!("DNS domain {d}"), &why));
            }
        }
        Ok(())
    }
}

/// The server addresses a profile can connect to: its literal `remote` addresses, the
/// addresses its host names resolve to now, and `ip-remote-hint`; for a remote behind a
/// proxy, the proxy's (the link goes there).
pub async fn profile_servers(cfg: &ClientConfig) -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Some(Some(hint)) = &cfg.presolve {
        out.extend(hint.parse::<IpAddr>().ok());
    }
    for r in &cfg.remotes {
        let (host, port) = match &r.proxy {
            Some(p) => (p.host(), p.port()),
            None => (r.host.as_str(), r.port),
        };
        match host.parse::<IpAddr>() {
            Ok(a) => out.push(a),
            Err(_) => {
                if let Ok(addrs) = tokio::net::lookup_host((host, port)).await {
                    out.extend(addrs.map(|a| a.ip()));
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The helper
// ---------------------------------------------------------------------------------------

/// Options of `openvpn-client helper`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperOptions {
    /// The Unix socket to listen on (unless systemd passed one).
    pub socket: PathBuf,
    /// The profiles directory.
    pub profiles: PathBuf,
}

impl Default for HelperOptions {
    fn default() -> Self {
        HelperOptions {
            socket: PathBuf::from(DEFAULT_SOCKET),
            profiles: PathBuf::from(DEFAULT_PROFILES),
        }
    }
}

impl HelperOptions {
    /// Parses `[--socket PATH] [--profiles DIR]`.
    pub fn parse(args: &[String]) -> Result<HelperOptions, String> {
        let mut o = HelperOptions::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .map(PathBuf::from)
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match a.as_str() {
                "--socket" => o.socket = value("--socket")?,
                "--profiles" => o.profiles = value("--profiles")?,
                x => {
                    return Err(format!(
                        "unknown helper option {x:?} (usage: openvpn-client helper [--socket PATH] [--profiles DIR])"
                    ));
                }
            }
        }
        Ok(o)
    }
}

/// `openvpn-client helper …`: parses the options, sets up logging (`OPENVPN_LOG`, default
/// `info`) and serves until killed.
pub fn helper_main(args: &[String]) -> anyhow::Result<()> {
    let opts = HelperOptions::parse(args).map_err(anyhow::Error::msg)?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("OPENVPN_LOG")
        .unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Should the helper itself be killed, its guardian undoes the tunnels' routes and DNS.
    match crate::guardian::spawn(None) {
        Ok(pid) => tracing::info!(pid, "helper: guardian started"),
        Err(e) => tracing::warn!(%e, "helper: cannot start the guardian"),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_helper(opts))?;
    Ok(())
}

/// Binds the socket (or takes systemd's) and serves clients until the task is dropped.
pub async fn run_helper(opts: HelperOptions) -> io::Result<()> {
    let listener = match fdpass::systemd_listen_fd()? {
        Some(fd) => {
            let std = std::os::unix::net::UnixListener::from(fd);
            std.set_nonblocking(true)?;
            tracing::info!("helper: listening on the socket passed by systemd");
            UnixListener::from_std(std)?
        }
        None => {
            if let Some(dir) = opts.socket.parent() {
                std::fs::create_dir_all(dir)?;
            }
            match std::fs::remove_file(&opts.socket) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let l = UnixListener::bind(&opts.socket)?;
            // Who may ask is decided by the profiles directory and the policy; restrict the
            // socket's directory to limit it to some users.
            std::fs::set_permissions(&opts.socket, std::fs::Permissions::from_mode(0o666))?;
            tracing::info!(socket = %opts.socket.display(), "helper: listening");
            l
        }
    };
    if let Err(e) = resolve_dir_check(&opts.profiles) {
        tracing::warn!("helper: {e}; every OPEN will be refused until this is fixed");
    }
    let dir = crate::tun::journal_dir();
    for (path, r) in openvpn_tun::RouteManager::recover_stale(&dir) {
        tracing::warn!(journal = %path.display(), ok = r.is_ok(), "helper: recovered a journal left by a crashed session");
    }
    let opts = Arc::new(opts);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = listener.accept().await?;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let mut stream = stream;
            let _ = stream.write_all(b"ERR helper busy\n").await;
            continue;
        };
        let opts = opts.clone();
        tokio::spawn(async move {
            serve(stream, &opts).await;
            drop(permit);
        });
    }
}

/// The profiles directory itself must pass the same ownership checks as a profile's
/// directories.
fn resolve_dir_check(dir: &Path) -> Result<(), String> {
    let d = dir
        .canonicalize()
        .map_err(|e| format!("profiles directory {}: {e}", dir.display()))?;
    let m = std::fs::metadata(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    if !owner_ok(&m, fdpass::euid()) || m.mode() & 0o022 != 0 {
        return Err(format!(
            "profiles directory {} must be owned by root and not group- or world-writable (mode {:o})",
            d.display(),
            m.mode() & 0o7777
        ));
    }
    Ok(())
}

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Conn {
    /// The next line; `None` at end of stream. Descriptors a client sends are discarded by
    /// the kernel (plain `read`).
    async fn read_line(&mut self) -> io::Result<Option<String>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let text = String::from_utf8(line[..i].to_vec())
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))?;
                return Ok(Some(text.trim_end_matches('\r').to_owned()));
            }
            if self.buf.len() > MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "request line too long",
                ));
            }
            let mut tmp = [0u8; 4096];
            let n = self.stream.read(&mut tmp).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    async fn send(&mut self, line: &str) -> io::Result<()> {
        self.stream.write_all(format!("{line}\n").as_bytes()).await
    }

    async fn send_with_fd(
        &mut self,
        line: &str,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> io::Result<()> {
        let data = format!("{line}\n");
        let sent = loop {
            self.stream.writable().await?;
            match self.stream.try_io(Interest::WRITABLE, || {
                fdpass::send_with_fd(self.stream.as_fd(), data.as_bytes(), fd)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        self.stream.write_all(&data.as_bytes()[sent..]).await
    }
}

struct Session {
    profile: Option<(PathBuf, ClientConfig, Policy)>,
    tun: Option<LinuxTun>,
}

async fn serve(stream: UnixStream, opts: &HelperOptions) {
    let cred = match fdpass::peer_cred(stream.as_fd()) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%e, "helper: no peer credentials; closing");
            return;
        }
    };
    let (uid, pid) = (cred.uid, cred.pid);
    tracing::info!(uid, pid, "helper: client connected");
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
    };
    let mut session = Session {
        profile: None,
        tun: None,
    };
    loop {
        let line = if session.tun.is_none() {
            match tokio::time::timeout(REQUEST_TIMEOUT, conn.read_line()).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(uid, pid, "helper: no request in time; closing");
                    break;
                }
            }
        } else {
            conn.read_line().await
        };
        let line = match line {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(uid, pid, %e, "helper: bad request; closing");
                break;
            }
        };
        let (cmd, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let result = match cmd {
            "OPEN" => handle_open(&mut session, opts, arg, uid, pid).map(|()| None),
            "ESTABLISH" => handle_establish(&mut session, arg, uid, pid)
                .await
                .map(Some),
            other => Err(format!("unknown command {other:?}")),
        };
        let sent = match (&result, &session.tun) {
            (Ok(Some(name)), Some(tun)) => {
                // `LinuxTun` owns the descriptor; we lend it for the send.
                conn.send_with_fd(&format!("OK {name}"), tun_fd(tun)).await
            }
            (Ok(_), _) => conn.send("OK").await,
            (Err(reason), _) => {
                tracing::warn!(uid, pid, "helper: refused: {reason}");
                conn.send(&format!("ERR {}", one_line(reason))).await
            }
        };
        if sent.is_err() {
            break;
        }
    }
    if let Some(tun) = session.tun.take() {
        let (name, ifindex) = (tun.name().to_owned(), tun.ifindex());
        tracing::info!(uid, pid, dev = %name, "helper: client gone; removing routes, DNS and the device");
        drop(tun); // routes and DNS undone (journal deleted), our descriptor closed
        // The client may still hold its descriptor (or have made the device persistent).
        if Netlink::new().link_name(ifindex).as_deref() == Some(name.as_str()) {
            match std::process::Command::new("ip")
                .args(["link", "delete", "dev", &name])
                .output()
            {
                Ok(o) if o.status.success() => {
                    tracing::info!(dev = %name, "helper: deleted the device")
                }
                Ok(o) => {
                    tracing::warn!(dev = %name, stderr = %String::from_utf8_lossy(&o.stderr).trim(), "helper: cannot delete the device")
                }
                Err(e) => tracing::warn!(dev = %name, %e, "helper: cannot run ip link delete"),
            }
        }
    }
    tracing::info!(uid, pid, "helper: connection closed");
}

fn tun_fd(tun: &LinuxTun) -> std::os::fd::BorrowedFd<'_> {
    tun.as_fd()
}

fn handle_open(
    session: &mut Session,
    opts: &HelperOptions,
    arg: &str,
    uid: u32,
    pid: i32,
) -> Result<(), String> {
    if session.profile.is_some() {
        return Err("a profile is already open on this connection".into());
    }
    let requested = PathBuf::from(unescape(arg)?);
    let path = resolve_profile(&opts.profiles, &requested, fdpass::euid())?;
    let cfg = load_profile(&path).map_err(|e| format!("profile {}: {e}", path.display()))?;
    let policy = Policy::from_config(&cfg, &path.display().to_string());
    tracing::info!(uid, pid, profile = %path.display(), "helper: profile opened");
    session.profile = Some((path, cfg, policy));
    Ok(())
}

async fn handle_establish(
    session: &mut Session,
    arg: &str,
    uid: u32,
    pid: i32,
) -> Result<String, String> {
    let Some((path, cfg, policy)) = &session.profile else {
        return Err("OPEN a profile first".into());
    };
    if session.tun.is_some() {
        return Err("one tunnel per connection".into());
    }
    let s = decode_settings(arg)?;
    policy.check(&s)?;
    if let Some(server) = s.server {
        if !profile_servers(cfg).await.contains(&server) {
            return Err(format!(
                "server {server} is not a remote of profile {}",
                path.display()
            ));
        }
    }
    let name = (policy.dev != "tun").then(|| policy.dev.clone());
    if let Some(n) = &name {
        // Never attach to someone else's (persistent) device.
        if Netlink::new().link_index(n).is_ok() {
            return Err(format!("device {n} already exists"));
        }
    }
    // DNS as the (root-owned) profile says: its dns-updown command, never one from the request.
    let dns = cfg.dns_backend();
    let tun = LinuxTunBuilder { name, dns }.establish(&s).await?;
    tracing::info!(
        uid,
        pid,
        profile = %path.display(),
        dev = %tun.name(),
        settings = %encode_settings(&s),
        "helper: tunnel established"
    );
    let name = tun.name().to_owned();
    session.tun = Some(tun);
    Ok(name)
}

// ---------------------------------------------------------------------------------------
// The client side
// ---------------------------------------------------------------------------------------

/// A [`TunBuilder`] for an unprivileged client: asks the root helper at `socket` for a tun
/// device configured for `profile` (which must lie in the helper's profiles directory).
#[derive(Clone, Debug)]
pub struct HelperTunBuilder {
    /// The helper's socket.
    pub socket: PathBuf,
    /// The profile, as the helper should see it.
    pub profile: PathBuf,
}

/// A tun device opened by the helper. The connection to the helper stays open as long as the
/// device lives: closing it (drop, exit, crash) makes the helper undo routes and DNS and
/// remove the device.
#[derive(Debug)]
pub struct HelperTun {
    tun: LinuxTun,
    _conn: std::os::unix::net::UnixStream,
}

impl HelperTun {
    /// The interface name.
    pub fn name(&self) -> &str {
        self.tun.name()
    }
}

impl PacketDevice for HelperTun {
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.tun.recv(buf).await
    }

    async fn send(&self, pkt: &[u8]) -> io::Result<usize> {
        self.tun.send(pkt).await
    }
}

fn read_reply(
    conn: &std::os::unix::net::UnixStream,
    pending: &mut Vec<u8>,
) -> Result<(String, Vec<OwnedFd>), String> {
    let mut fds = Vec::new();
    loop {
        if let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line[..i]).into_owned();
            return match text.strip_prefix("ERR") {
                Some(reason) => Err(format!("the helper refused: {}", reason.trim())),
                None => Ok((text, fds)),
            };
        }
        if pending.len() > MAX_LINE {
            return Err("the helper's answer is too long".into());
        }
        let mut tmp = [0u8; 1024];
        let (n, got) = fdpass::recv_with_fds(conn.as_fd(), &mut tmp)
            .map_err(|e| format!("reading from the helper: {e}"))?;
        if n == 0 {
            return Err("the helper closed the connection".into());
        }
        fds.extend(got);
        pending.extend_from_slice(&tmp[..n]);
    }
}

/// Runs OPEN + ESTABLISH; returns the interface name, its descriptor and the connection.
fn exchange(
    socket: &Path,
    profile: &Path,
    settings: &str,
) -> Result<(String, OwnedFd, std::os::unix::net::UnixStream), String> {
    let profile = profile
        .canonicalize()
        .map_err(|e| format!("profile {}: {e}", profile.display()))?;
    let profile = profile
        .to_str()
        .ok_or_else(|| format!("profile path {} is not UTF-8", profile.display()))?;
    let mut conn = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("helper socket {}: {e}", socket.display()))?;
    conn.set_read_timeout(Some(REQUEST_TIMEOUT + Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut pending = Vec::new();
    conn.write_all(format!("OPEN {}\n", escape(profile)).as_bytes())
        .map_err(|e| format!("writing to the helper: {e}"))?;
    read_reply(&conn, &mut pending)?;
    conn.write_all(format!("ESTABLISH {settings}\n").as_bytes())
        .map_err(|e| format!("writing to the helper: {e}"))?;
    let (reply, fds) = read_reply(&conn, &mut pending)?;
    let name = reply
        .strip_prefix("OK ")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("unexpected answer from the helper: {reply:?}"))?
        .to_owned();
    let fd = fds
        .into_iter()
        .next()
        .ok_or("the helper sent no descriptor")?;
    conn.set_read_timeout(None).map_err(|e| e.to_string())?;
    Ok((name, fd, conn))
}

impl TunBuilder for HelperTunBuilder {
    type Device = HelperTun;
    async fn establish(&mut self, s: &TunSettings) -> Result<HelperTun, String> {
        let (socket, profile, line) = (
            self.socket.clone(),
            self.profile.clone(),
            encode_settings(s),
        );
        let (name, fd, conn) =
            tokio::task::spawn_blocking(move || exchange(&socket, &profile, &line))
                .await
                .map_err(|e| e.to_string())??;
        let tun = LinuxTun::from_fd(fd, &name).map_err(|e| e.to_string())?;
        tracing::info!(dev = %name, "tun device opened by the privileged helper");
        Ok(HelperTun { tun, _conn: conn })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::tun::RouteDetails;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn escaping_round_trips() {
        for s in [
            "",
            "plain",
            "a b=c%d\ne\r\tf",
            "/etc/openvpn-rs/profiles/wörk vpn.ovpn",
            "~.corp",
        ] {
            let e = escape(s);
            assert!(!e.contains([' ', '=', '\n', '\r']), "{e}");
            assert_eq!(unescape(&e).expect("unescape"), s);
        }
        assert!(unescape("%G1").is_err());
        assert!(unescape("%4").is_err());
        assert!(unescape("a b").is_err());
        assert!(unescape("%FF").is_err(), "not UTF-8");
    }

    #[test]
    fn settings_round_trip() {
        let s = TunSettings {
            ipv4: Some((Ipv4Addr::new(10, 8, 0, 2), 24)),
            ipv6: Some(("fd00::2".parse().expect("v6"), 64)),
            routes_v4: vec![
                (Ipv4Addr::new(0, 0, 0, 0), 1),
                (Ipv4Addr::new(10, 1, 0, 0), 16),
            ],
            routes_v6: vec![("2001:db8::".parse().expect("v6"), 32)],
            dns_servers: vec![ip("10.8.0.1"), ip("fd00::53")],
            dns_domains: vec!["corp.example".into(), "a b\nc".into()],
            mtu: 1420,
            server: Some(ip("198.51.100.1")),
            redirect: Some(Redirect {
                ipv4: true,
                ipv6: false,
                local: true,
                block_local: true,
            }),
            block_ipv4: true,
            block_ipv6: true,
            route_metric: Some(50),
            route_details: Box::new(RouteDetails {
                metrics: vec![(ip("10.1.0.0"), 16, 7), (ip("2001:db8::"), 32, 8)],
                outside: vec![
                    OutsideRoute {
                        dest: ip("192.168.1.0"),
                        prefix: 24,
                        gateway: None,
                        metric: Some(5),
                    },
                    OutsideRoute {
                        dest: ip("2001:db8:7::"),
                        prefix: 48,
                        gateway: Some(ip("fe80::1")),
                        metric: None,
                    },
                ],
                ..Default::default()
            }),
        };
        let line = encode_settings(&s);
        assert!(!line.contains('\n'));
        assert_eq!(decode_settings(&line).expect("decode"), s);
        let minimal = TunSettings {
            mtu: 1500,
            redirect: Some(Redirect::default()),
            ..Default::default()
        };
        assert_eq!(
            decode_settings(&encode_settings(&minimal)).expect("decode"),
            minimal
        );
        for bad in [
            "mtu=1500 frob=1",
            "mtu=1500 mtu=1400",
            "ipv4=10.8.0.2 mtu=1500",
            "ipv4=10.8.0.2/33 mtu=1500",
            "route6=10.0.0.0/8 mtu=1500",
            "redirect=def2 mtu=1500",
            "ipv4=10.8.0.2/24",
            "mtu=70000",
            "mtu=1500 rmetric=10.0.0.0/8",
            "mtu=1500 rmetric=10.0.0.0/8,x",
            "mtu=1500 outside=10.0.0.0/8,net_gateway",
            "mtu=1500 outside=10.0.0.0/8,fe80::1,",
            "mtu=1500 outside=10.0.0.0/33,net_gateway,",
            "mtu=1500 outside=10.0.0.0/8,net_gateway,1,2",
        ] {
            assert!(decode_settings(bad).is_err(), "{bad}");
        }
    }

    const CA: &str = "<ca>\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n</ca>\n";

    fn policy(extra: &str) -> Policy {
        let cfg = ClientConfig::from_ovpn(
            &format!("client\nremote 192.0.2.1 1194\n{CA}{extra}"),
            Path::new("/"),
        )
        .expect("profile");
        Policy::from_config(&cfg, "/etc/openvpn-rs/profiles/p.ovpn")
    }

    fn base() -> TunSettings {
        TunSettings {
            ipv4: Some((Ipv4Addr::new(10, 8, 0, 2), 24)),
            mtu: 1500,
            server: Some(ip("192.0.2.1")),
            ..Default::default()
        }
    }

    fn with_routes(routes: &[(Ipv4Addr, u8)]) -> TunSettings {
        TunSettings {
            routes_v4: routes.to_vec(),
            ..base()
        }
    }

    fn redirect_v4() -> TunSettings {
        TunSettings {
            routes_v4: HALVES_V4.to_vec(),
            redirect: Some(Redirect::from_flags(&["def1"])),
            ..base()
        }
    }

    #[test]
    fn route_nopull_refuses_pushed_routes() {
        let p = policy("route-nopull\n");
        let err = p
            .check(&with_routes(&[(Ipv4Addr::new(10, 1, 0, 0), 16)]))
            .expect_err("refused");
        assert!(
            err.contains("route 10.1.0.0/16 not allowed by profile")
                && err.contains("route-nopull"),
            "{err}"
        );
        let err = p.check(&redirect_v4()).expect_err("no pushed redirect");
        assert!(err.contains("redirect-gateway"), "{err}");
        // The same requests are fine without route-nopull.
        let open = policy("");
        open.check(&with_routes(&[(Ipv4Addr::new(10, 1, 0, 0), 16)]))
            .expect("pulled route");
        open.check(&redirect_v4()).expect("pulled redirect");
        // The profile's own redirect-gateway is allowed even with route-nopull.
        policy("route-nopull\nredirect-gateway def1\n")
            .check(&redirect_v4())
            .expect("profile redirect");
        // ... but not more than it asks for.
        let mut v6 = redirect_v4();
        v6.redirect = Some(Redirect::from_flags(&["def1", "ipv6"]));
        v6.routes_v6 = HALVES_V6.to_vec();
        assert!(
            policy("route-nopull\nredirect-gateway def1\n")
                .check(&v6)
                .is_err()
        );
        // net30: the /32 to the ifconfig peer comes with the address.
        let net30 = TunSettings {
            ipv4: Some((Ipv4Addr::new(10, 8, 0, 6), 32)),
            routes_v4: vec![(Ipv4Addr::new(10, 8, 0, 5), 32)],
            ..base()
        };
        p.check(&net30).expect("peer route");
        // route-noexec: nothing but the peer route.
        let noexec = policy("route-noexec\n");
        noexec.check(&net30).expect("peer route");
        assert!(
            noexec
                .check(&with_routes(&[(Ipv4Addr::new(10, 1, 0, 0), 16)]))
                .is_err()
        );
    }

    #[test]
    fn profile_routes_are_allowed_and_only_they_go_around_the_tunnel() {
        let p = policy(
            "route-nopull\nroute 10.1.0.0 255.255.0.0 vpn_gateway 9\n\
             route 192.168.1.0 255.255.255.0 net_gateway\n\
             route 172.16.0.0 255.240.0.0 192.0.2.254\n\
             route remote_host 255.255.255.255 net_gateway\n\
             route-ipv6 2001:db8:7::/48 net_gateway\n",
        );
        let outside = |dest: &str, prefix, gateway: Option<&str>| OutsideRoute {
            dest: ip(dest),
            prefix,
            gateway: gateway.map(ip),
            metric: None,
        };
        // The profile's tunnel route despite route-nopull, with its own metric.
        let mut s = with_routes(&[(Ipv4Addr::new(10, 1, 0, 0), 16)]);
        s.route_details.metrics = vec![(ip("10.1.0.0"), 16, 9)];
        s.route_details.outside = vec![
            outside("192.168.1.0", 24, None),
            outside("172.16.0.0", 12, Some("192.0.2.254")),
            outside("192.0.2.1", 32, None), // remote_host = the server
            outside("2001:db8:7::", 48, None),
        ];
        p.check(&s).expect("the profile's routes");
        // A pushed route is still refused (route-nopull).
        let e = p
            .check(&with_routes(&[(Ipv4Addr::new(10, 2, 0, 0), 16)]))
            .expect_err("pushed");
        assert!(e.contains("route-nopull"), "{e}");
        // Around the tunnel: another network, another gateway, or net_gateway for a route
        // the profile sends via an address — refused.
        for bad in [
            outside("10.66.0.0", 16, None),
            outside("192.168.1.0", 24, Some("192.0.2.99")),
            outside("172.16.0.0", 12, None),
            outside("10.1.0.0", 16, None),
        ] {
            let mut s = base();
            s.route_details.outside = vec![bad.clone()];
            let e = p.check(&s).expect_err("outside");
            assert!(
                e.contains("around the tunnel") && e.contains("not allowed"),
                "{bad:?}: {e}"
            );
        }
        // Even an open profile does not let anything around the tunnel.
        let mut s = base();
        s.route_details.outside = vec![outside("10.66.0.0", 16, None)];
        assert!(policy("").check(&s).is_err());
        // A metric for a route that is not requested.
        let mut s = base();
        s.route_details.metrics = vec![(ip("10.9.0.0"), 16, 1)];
        assert!(policy("").check(&s).is_err());
        // route-noexec: none of them.
        let noexec = policy("route-noexec\nroute 192.168.1.0 255.255.255.0 net_gateway\n");
        let mut s = base();
        s.route_details.outside = vec![outside("192.168.1.0", 24, None)];
        assert!(noexec.check(&s).is_err());
    }

    #[test]
    fn pull_filter_decides_like_the_client() {
        let p = policy("pull-filter accept \"route 10.1.\"\npull-filter ignore \"route\"\n");
        p.check(&with_routes(&[(Ipv4Addr::new(10, 1, 0, 0), 16)]))
            .expect("accepted first");
        let err = p
            .check(&with_routes(&[(Ipv4Addr::new(10, 2, 0, 0), 16)]))
            .expect_err("ignored");
        assert!(err.contains("pull-filter ignore \"route\""), "{err}");
        // "route" is also a prefix of "route-ipv6".
        let v6 = TunSettings {
            routes_v6: vec![("2001:db8::".parse().expect("v6"), 32)],
            ..base()
        };
        assert!(p.check(&v6).is_err());
        let reject = policy("pull-filter reject \"redirect-gateway\"\n");
        let err = reject.check(&redirect_v4()).expect_err("rejected");
        assert!(err.contains("pull-filter reject"), "{err}");
    }

    #[test]
    fn dns_follows_the_profile() {
        let s = TunSettings {
            dns_servers: vec![ip("10.8.0.1")],
            dns_domains: vec!["corp.example".into()],
            ..base()
        };
        policy("").check(&s).expect("pulled DNS");
        let err = policy("pull-filter ignore \"dhcp-option\"\npull-filter ignore \"dns\"\n")
            .check(&s)
            .expect_err("DNS filtered");
        assert!(err.contains("DNS server 10.8.0.1"), "{err}");
        // Only one of the two forms filtered: the server may have pushed the other.
        policy("pull-filter ignore \"dhcp-option\"\n")
            .check(&s)
            .expect("2.6 dns form");
        assert!(policy("route-nopull\n").check(&s).is_err());
        // The profile's own dhcp-option lines are always fine.
        policy("route-nopull\ndhcp-option DNS 10.8.0.1\ndhcp-option DOMAIN corp.example\n")
            .check(&s)
            .expect("profile DNS");
        let bad = TunSettings {
            dns_domains: vec!["evil\nnameserver 6.6.6.6".into()],
            ..base()
        };
        assert!(policy("").check(&bad).is_err());
    }

    #[test]
    fn addresses_and_mtu_must_be_sane() {
        let p = policy("");
        for (a, pfx) in [
            (Ipv4Addr::UNSPECIFIED, 24),
            (Ipv4Addr::new(224, 0, 0, 1), 24),
            (Ipv4Addr::new(127, 0, 0, 1), 8),
            (Ipv4Addr::new(10, 8, 0, 2), 1),
        ] {
            let s = TunSettings {
                ipv4: Some((a, pfx)),
                ..base()
            };
            assert!(p.check(&s).is_err(), "{a}/{pfx}");
        }
        let v6 = TunSettings {
            ipv6: Some(("ff02::1".parse().expect("v6"), 64)),
            ..base()
        };
        assert!(p.check(&v6).is_err());
        for mtu in [575, 0] {
            assert!(p.check(&TunSettings { mtu, ..base() }).is_err(), "{mtu}");
        }
        p.check(&TunSettings {
            mtu: 65535,
            ..base()
        })
        .expect("max mtu");
        assert!(
            p.check(&TunSettings {
                route_metric: Some(5),
                ..base()
            })
            .is_err()
        );
        assert!(
            p.check(&TunSettings {
                ipv4: None,
                block_ipv4: true,
                ..base()
            })
            .is_err(),
            "block-ipv4 only from the profile"
        );
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "ovrs7-unit-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("mkdir");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn mkdir(p: &Path, mode: u32) {
        std::fs::create_dir_all(p).expect("mkdir");
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn write(p: &Path, mode: u32) {
        std::fs::write(p, format!("client\nremote 192.0.2.1\n{CA}")).expect("write");
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn profile_paths_are_confined() {
        let t = TempDir::new("paths");
        let me = fdpass::euid();
        let profiles = t.0.join("profiles");
        mkdir(&profiles, 0o755);
        mkdir(&profiles.join("sub"), 0o755);
        mkdir(&t.0.join("elsewhere"), 0o755);
        write(&profiles.join("ok.ovpn"), 0o644);
        write(&profiles.join("sub/deep.ovpn"), 0o600);
        write(&t.0.join("elsewhere/out.ovpn"), 0o644);
        write(&t.0.join("profiles-evil.ovpn"), 0o644);

        let ok = resolve_profile(&profiles, &profiles.join("ok.ovpn"), me).expect("inside");
        assert!(ok.ends_with("profiles/ok.ovpn"));
        let cfg = load_profile(&ok).expect("loads");
        assert_eq!(cfg.remotes.len(), 1);
        resolve_profile(&profiles, &profiles.join("sub/deep.ovpn"), me).expect("subdir");

        let refused =
            |p: PathBuf| resolve_profile(&profiles, &p, me).expect_err(&p.display().to_string());
        let e = refused(t.0.join("elsewhere/out.ovpn"));
        assert!(e.contains("not inside"), "{e}");
        let e = refused(profiles.join("../elsewhere/out.ovpn"));
        assert!(e.contains("not inside"), "..: {e}");
        let e = refused(profiles.join("sub/../../elsewhere/out.ovpn"));
        assert!(e.contains("not inside"), "{e}");
        refused(t.0.join("profiles-evil.ovpn"));
        refused(PathBuf::from("profiles/ok.ovpn")); // relative
        refused(profiles.join("missing.ovpn"));
        refused(profiles.clone()); // the directory itself
        // A symlink inside the directory pointing out of it.
        std::os::unix::fs::symlink(t.0.join("elsewhere/out.ovpn"), profiles.join("link.ovpn"))
            .expect("symlink");
        let e = refused(profiles.join("link.ovpn"));
        assert!(e.contains("not inside"), "symlink: {e}");
        // Writable by others: the file, a subdirectory, the directory itself.
        write(&profiles.join("ww.ovpn"), 0o666);
        let e = refused(profiles.join("ww.ovpn"));
        assert!(e.contains("not group- or world-writable"), "{e}");
        mkdir(&profiles.join("gw"), 0o775);
        write(&profiles.join("gw/p.ovpn"), 0o644);
        refused(profiles.join("gw/p.ovpn"));
        std::fs::set_permissions(&profiles, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = refused(profiles.join("ok.ovpn"));
        assert!(e.contains("world-writable"), "{e}");
        // Sticky and world-writable does not help inside the profiles directory.
        std::fs::set_permissions(&profiles, std::fs::Permissions::from_mode(0o1777))
            .expect("chmod");
        refused(profiles.join("ok.ovpn"));
        assert!(resolve_dir_check(&profiles).is_err());
        // Owned by someone else (only checkable as root: chown to nobody).
        if me == 0 {
            std::fs::set_permissions(&profiles, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
            std::os::unix::fs::chown(profiles.join("ok.ovpn"), Some(65534), None).expect("chown");
            let e = refused(profiles.join("ok.ovpn"));
            assert!(e.contains("owned by root"), "{e}");
        }
    }

    #[test]
    fn helper_options_parse() {
        assert_eq!(
            HelperOptions::parse(&[]).expect("defaults"),
            HelperOptions::default()
        );
        let o = HelperOptions::parse(&[
            "--socket".into(),
            "/tmp/s".into(),
            "--profiles".into(),
            "/tmp/p".into(),
        ])
        .expect("parse");
        assert_eq!(o.socket, PathBuf::from("/tmp/s"));
        assert_eq!(o.profiles, PathBuf::from("/tmp/p"));
        assert!(HelperOptions::parse(&["--socket".into()]).is_err());
        assert!(HelperOptions::parse(&["--frob".into()]).is_err());
    }
}
