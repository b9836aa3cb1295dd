//! Client profiles: `.ovpn` files and `--option` arguments, or built in code.
//!
//! Every option is implemented, a documented no-op, or rejected with an error that names
//! the line.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use openvpn_control::client::PullFilterAction;
use openvpn_control::loading::{self, arg, file_or_inline, invalid as err, number as num};
use openvpn_control::options::catalog::{self, Role, Screened};
use openvpn_control::options::{self, OptionLine};

/// Errors while loading the configuration (shared with the other binary's loader).
pub use openvpn_control::loading::LoadError as ConfigError;

pub use crate::proxy::{HttpAuth, HttpProxy, Proxy, SocksProxy};

/// Transport of a remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// UDP.
    Udp,
    /// TCP client.
    Tcp,
}

/// Address family restriction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4 and IPv6, in the order the resolver returns them.
    Any,
    /// IPv4 only (`udp4`, `tcp4`).
    V4,
    /// IPv6 only (`udp6`, `tcp6`).
    V6,
}

/// One `remote` (or `<connection>` block).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Transport.
    pub proto: Proto,
    /// Family.
    pub family: Family,
    /// `http-proxy` / `socks-proxy` in front of this remote (the profile's, or its
    /// `<connection>` block's).
    pub proxy: Option<Proxy>,
}

pub use openvpn_control::tls_options::TlsWrap;

/// How username/password are obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthUserPass {
    /// Not used.
    None,
    /// Read from a file (two lines) or inline block.
    Given {
        /// Username.
        username: String,
        /// Password.
        password: String,
    },
    /// Ask the application (the binary prompts on the terminal).
    Ask {
        /// Username from the file, if the file had only that line.
        username: Option<String>,
    },
}

/// Where the management interface listens (`management IP PORT` / `management PATH unix`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManagementAddr {
    /// TCP on `host:port` (use a loopback address: the protocol is cleartext).
    Tcp {
        /// Address or host name.
        host: String,
        /// Port.
        port: u16,
    },
    /// A unix domain socket at this path.
    Unix(PathBuf),
}

/// The management interface options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagementOptions {
    /// Listening address.
    pub addr: ManagementAddr,
    /// Password file (its first line is the password management clients must give).
    pub password_file: Option<PathBuf>,
    /// `management-hold`: do not connect until `hold release`.
    pub hold: bool,
    /// `management-query-passwords`: ask for `auth-user-pass` through the interface.
    pub query_passwords: bool,
    /// `management-log-cache N`: log lines kept for `log all`.
    pub log_cache: usize,
}

/// `auth-retry`: what to do after `AUTH_FAILED`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthRetry {
    /// Exit (the default).
    #[default]
    None,
    /// Reconnect with the same credentials.
    NoInteract,
    /// Ask for new credentials (through the management interface) and reconnect.
    Interact,
}

/// `dns-updown`: who applies the tunnel's DNS settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsUpdown {
    /// `dns-updown disable`: nobody; DNS is left alone.
    Disable,
    /// `dns-updown CMD`: this command, run with `/bin/sh -c` with `script_type=dns-up` /
    /// `dns-down` and the settings in its environment (`openvpn_tun::dns::updown_env`);
    /// needs `script-security 2`.
    Command(String),
}

/// Where a profile `route` / `route-ipv6` sends its traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteGateway {
    /// No gateway given (or `default`): the profile's `route-gateway` (IPv4) if any, else
    /// the tunnel.
    Default,
    /// `vpn_gateway`: into the tunnel.
    Vpn,
    /// `net_gateway`: around the tunnel, via the gateway of the default route before the
    /// tunnel came up.
    Net,
    /// A gateway address: into the tunnel when it lies in the tunnel's network (or is the
    /// pushed `route-gateway`), else around the tunnel via that gateway.
    Addr(IpAddr),
}

/// The destination of a profile route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteDest {
    /// A network and its prefix length (host bits are cleared when installed).
    Net(IpAddr, u8),
    /// `remote_host` with this prefix length: the VPN server's address (IPv4 servers only).
    RemoteHost(u8),
}

/// A `route NETWORK [NETMASK] [GATEWAY] [METRIC]` or `route-ipv6 NET/BITS [GATEWAY]
/// [METRIC]` line of the profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProfileRoute {
    /// Destination.
    pub dest: RouteDest,
    /// Gateway.
    pub gateway: RouteGateway,
    /// Metric; `None` = `route-metric`, else the kernel default.
    pub metric: Option<u32>,
}

fn parse_metric(o: &OptionLine, i: usize) -> Result<Option<u32>, ConfigError> {
    match o.arg(i) {
        None | Some("default") => Ok(None),
        Some(m) => m
            .parse()
            .map(Some)
            .map_err(|_| err(o, format!("metric '{m}' is not a number"))),
    }
}

fn parse_gateway<A: Into<IpAddr> + std::str::FromStr>(
    o: &OptionLine,
    i: usize,
) -> Result<RouteGateway, ConfigError> {
    match o.arg(i) {
        None | Some("default") => Ok(RouteGateway::Default),
        Some("vpn_gateway") => Ok(RouteGateway::Vpn),
        Some("net_gateway") => Ok(RouteGateway::Net),
        Some(g) => g.parse::<A>().map(|a| RouteGateway::Addr(a.into())).map_err(|_| {
            err(
                o,
                format!("gateway '{g}' is not an address of the route's family, vpn_gateway, net_gateway or default"),
            )
        }),
    }
}

/// `route NETWORK [NETMASK] [GATEWAY] [METRIC]`.
fn parse_route_v4(o: &OptionLine) -> Result<ProfileRoute, ConfigError> {
    if o.args.len() > 4 {
        return Err(err(
            o,
            "too many arguments: route NETWORK [NETMASK] [GATEWAY] [METRIC]",
        ));
    }
    let prefix = match o.arg(1) {
        None | Some("default") => 32,
        Some(m) => {
            let mask: Ipv4Addr = m
                .parse()
                .map_err(|_| err(o, format!("netmask '{m}' is not an IPv4 netmask")))?;
            let bits = u32::from(mask);
            let prefix = bits.leading_ones();
            if bits.checked_shl(prefix).unwrap_or(0) != 0 {
                return Err(err(o, format!("netmask '{m}' is not contiguous")));
            }
            prefix as u8
        }
    };
    let dest = match arg(o, 0)? {
        "remote_host" => RouteDest::RemoteHost(prefix),
        n => {
            let net: Ipv4Addr = n.parse().map_err(|_| {
                err(
                    o,
                    format!("network '{n}' is not an IPv4 address (host names are not supported; use an address or remote_host)"),
                )
            })?;
            if openvpn_tun::route::mask(net.into(), prefix) != IpAddr::from(net) {
                return Err(err(
                    o,
                    format!("network {n} has host bits set for netmask /{prefix}"),
                ));
            }
            RouteDest::Net(net.into(), prefix)
        }
    };
    Ok(ProfileRoute {
        dest,
        gateway: parse_gateway::<Ipv4Addr>(o, 2)?,
        metric: parse_metric(o, 3)?,
    })
}

/// `route-ipv6 NET/BITS [GATEWAY] [METRIC]`.
fn parse_route_v6(o: &OptionLine) -> Result<ProfileRoute, ConfigError> {
    if o.args.len() > 3 {
        return Err(err(
            o,
            "too many arguments: route-ipv6 NETWORK/BITS [GATEWAY] [METRIC]",
        ));
    }
    let a = arg(o, 0)?;
    let (net, bits) = a.split_once('/').unwrap_or((a, "128"));
    let net: Ipv6Addr = net
        .parse()
        .map_err(|_| err(o, format!("'{a}' is not an IPv6 network/bits")))?;
    let prefix: u8 = bits
        .parse()
        .ok()
        .filter(|b| *b <= 128)
        .ok_or_else(|| err(o, format!("'/{bits}' is not a prefix length of 0..=128")))?;
    if openvpn_tun::route::mask(net.into(), prefix) != IpAddr::from(net) {
        return Err(err(o, format!("network {a} has host bits set")));
    }
    Ok(ProfileRoute {
        dest: RouteDest::Net(net.into(), prefix),
        gateway: parse_gateway::<Ipv6Addr>(o, 1)?,
        metric: parse_metric(o, 2)?,
    })
}

/// A complete client profile.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Remotes in order.
    pub remotes: Vec<Remote>,
    /// `remote-random`.
    pub remote_random: bool,
    /// `dev` name (`tun` = kernel chooses).
    pub dev: String,
    /// The TLS options (`ca`, `cert`, `key`, `crl-verify`, `tls-cipher`, `remote-cert-tls`, …).
    pub tls: openvpn_control::tls_options::TlsOptions,
    /// `data-ciphers`.
    pub data_ciphers: Vec<String>,
    /// `data-ciphers-fallback` / `cipher`.
    pub data_ciphers_fallback: Option<String>,
    /// `auth`.
    pub auth: String,
    /// `auth-user-pass`.
    pub auth_user_pass: AuthUserPass,
    /// `static-challenge TEXT ECHO`: the challenge text, and whether to echo the response.
    /// Answer it with [`ClientConfig::answer_static_challenge`] (the binary prompts).
    pub static_challenge: Option<(String, bool)>,
    /// `setenv` variables (IV_* / UV_* become peer-info).
    pub setenv: Vec<(String, String)>,
    /// `push-peer-info`.
    pub push_peer_info: bool,
    /// `pull-filter`.
    pub pull_filter: Vec<(PullFilterAction, String)>,
    /// `route-nopull`.
    pub route_nopull: bool,
    /// `route-noexec`.
    pub route_noexec: bool,
    /// `connect-retry N [MAX]`.
    pub connect_retry: (Duration, Duration),
    /// `connect-retry-max`.
    pub connect_retry_max: Option<u32>,
    /// `connect-timeout` / `server-poll-timeout`.
    pub connect_timeout: Duration,
    /// `resolv-retry` seconds (None = infinite).
    pub resolv_retry: Option<Duration>,
    /// `ping`.
    pub ping: Option<u32>,
    /// `ping-restart`.
    pub ping_restart: Option<u32>,
    /// `ping-exit`.
    pub ping_exit: Option<u32>,
    /// `reneg-sec`.
    pub reneg_sec: u32,
    /// `reneg-bytes` (0 = off).
    pub reneg_bytes: u64,
    /// `reneg-pkts` (0 = off).
    pub reneg_pkts: u64,
    /// `hand-window`.
    pub hand_window: u32,
    /// `explicit-exit-notify`.
    pub explicit_exit_notify: Option<u32>,
    /// `tun-mtu`.
    pub tun_mtu: u16,
    /// `mssfix` (largest encapsulated datagram; 0 = off).
    pub mssfix: u16,
    /// `presolve-ipaddress` / `ip-remote-hint`: `Some(None)` = resolve all remotes before
    /// connecting, `Some(Some(addr))` = use this address for every remote.
    pub presolve: Option<Option<String>>,
    /// `daemon`.
    pub daemon: bool,
    /// `writepid`.
    pub writepid: Option<PathBuf>,
    /// `log` / `log-append`.
    pub log: Option<(PathBuf, bool)>,
    /// `verb`.
    pub verb: u8,
    /// `up` script.
    pub up: Option<String>,
    /// `down` script.
    pub down: Option<String>,
    /// `route-up CMD`: run after the routes are added (`script_type=route-up`).
    pub route_up: Option<String>,
    /// `route-pre-down CMD`: run before the routes are removed.
    pub route_pre_down: Option<String>,
    /// `down-pre`: the `down` script runs before the tun device is closed, not after.
    pub down_pre: bool,
    /// `up-restart`: `down` and `up` also run (context `restart`) around a restart that keeps
    /// the tun device.
    pub up_restart: bool,
    /// `ipchange CMD`: run with the server's `ip port` each time a connection to it is
    /// authenticated.
    pub ipchange: Option<String>,
    /// `tls-exit`: a TLS failure ends the client instead of trying again.
    pub tls_exit: bool,
    /// `user NAME` / `group NAME`: switch to them once the tunnel is first up.
    pub user: Option<String>,
    /// See [`ClientConfig::user`].
    pub group: Option<String>,
    /// `cd`, `nice`, `mlock` (applied by the binary at start-up).
    pub process: openvpn_control::process_options::ProcessOptions,
    /// `plugin MODULE [ARGS…]` in profile order: the module as written and its arguments (a
    /// single init string split into words, as OpenVPN does). Called for UP, ROUTE_UP and
    /// DOWN.
    pub plugins: Vec<(String, Vec<String>)>,
    /// `script-security` level.
    pub script_security: u8,
    /// `persist-tun`.
    pub persist_tun: bool,
    /// `redirect-gateway [flags]` in the profile (merged with a pushed one).
    pub redirect_gateway: Option<Vec<String>>,
    /// `block-ipv6`: IPv6 is answered with ICMPv6 unreachable when the tunnel has no IPv6.
    pub block_ipv6: bool,
    /// `block-ipv4`: IPv4 is answered with ICMP unreachable when the tunnel has no IPv4.
    pub block_ipv4: bool,
    /// `route-metric`: default metric of tunnel routes.
    pub route_metric: Option<u32>,
    /// `route` / `route-ipv6` lines of the profile, installed with the pushed routes
    /// (`route-nopull` does not drop them; `route-noexec` does).
    pub routes: Vec<ProfileRoute>,
    /// `route-gateway ADDR`: the gateway of profile `route` lines that name none.
    pub route_gateway: Option<Ipv4Addr>,
    /// `dns-updown CMD|disable` (default: systemd-resolved or resolv.conf).
    pub dns_updown: Option<DnsUpdown>,
    /// `dhcp-option TYPE VALUE` in the profile (added to pushed ones).
    pub dhcp_options: Vec<(String, String)>,
    /// `compress …` / `comp-lzo …` from the profile (a push overrides it). Real algorithms
    /// are decompressed, never used to compress.
    pub compression: Option<Vec<String>>,
    /// `allow-compression no|asym|yes` (`None`: 2.6's default, see
    /// `openvpn_control::compression::AllowCompression::effective`).
    pub allow_compression: Option<openvpn_control::compression::AllowCompression>,
    /// `management …` and the `management-*` options.
    pub management: Option<ManagementOptions>,
    /// `auth-retry none|nointeract|interact` (used by the binary's management loop).
    pub auth_retry: AuthRetry,
    /// `syslog [NAME]` (the program name, default `openvpn`).
    pub syslog: Option<String>,
    /// `errors-to-stderr`.
    pub errors_to_stderr: bool,
    /// `suppress-timestamps`.
    pub suppress_timestamps: bool,
    /// `local` / `lport` / `bind`: bind the socket to this address (`None` = any) and port.
    pub bind_local: Option<(Option<IpAddr>, u16)>,
    /// The `auth-user-pass FILE` path (re-read before each connection with `auth-nocache`).
    pub auth_file: Option<PathBuf>,
    /// `auth-nocache`: credentials from a file are read again for every connection instead
    /// of being kept; prompted ones are still kept (there is no terminal after start-up).
    pub auth_nocache: bool,
    /// `route-delay [N] [W]`: wait N seconds (default 0) after the connection is up before
    /// configuring the tunnel's routes (and addresses); W is Windows-only.
    pub route_delay: Option<Duration>,
    /// `replay-window N [T]` (packets, seconds).
    pub replay_window: (u32, u32),
    /// `remote-random-hostname`: a random label is prepended to each remote host name.
    pub remote_random_hostname: bool,
    /// `persist-remote-ip`: a restart reuses the addresses already resolved.
    pub persist_remote_ip: bool,
    /// `passtos`: the link socket's TOS / traffic class follows each tunnelled packet's.
    pub passtos: bool,
    /// `inactive N [BYTES]`: exit after N seconds in which fewer than BYTES of tunnel
    /// payload passed (both directions; pings and control packets do not count).
    pub inactive: Option<(Duration, u64)>,
    /// One line each for options accepted without effect here (logged at start-up).
    pub notices: Vec<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            remotes: Vec::new(),
            remote_random: false,
            dev: "tun".into(),
            tls: Default::default(),
            data_ciphers: vec![
                "AES-256-GCM".into(),
                "AES-128-GCM".into(),
                "CHACHA20-POLY1305".into(),
            ],
            data_ciphers_fallback: None,
            auth: "SHA1".into(),
            auth_user_pass: AuthUserPass::None,
            static_challenge: None,
            setenv: Vec::new(),
            push_peer_info: false,
            pull_filter: Vec::new(),
            route_nopull: false,
            route_noexec: false,
            connect_retry: (Duration::from_secs(1), Duration::from_secs(300)),
            connect_retry_max: None,
            connect_timeout: Duration::from_secs(120),
            resolv_retry: None,
            ping: None,
            ping_restart: None,
            ping_exit: None,
            reneg_sec: 3600,
            reneg_bytes: 0,
            reneg_pkts: 0,
            hand_window: 60,
            explicit_exit_notify: None,
            tun_mtu: 1500,
            mssfix: 1492,
            presolve: None,
            daemon: false,
            writepid: None,
            log: None,
            verb: 1,
            up: None,
            down: None,
            route_up: None,
            route_pre_down: None,
            down_pre: false,
            up_restart: false,
            ipchange: None,
            tls_exit: false,
            user: None,
            group: None,
            process: Default::default(),
            plugins: Vec::new(),
            script_security: 1,
            persist_tun: false,
            redirect_gateway: None,
            block_ipv6: false,
            block_ipv4: false,
            route_metric: None,
            routes: Vec::new(),
            route_gateway: None,
            dns_updown: None,
            dhcp_options: Vec::new(),
            compression: None,
            allow_compression: None,
            management: None,
            auth_retry: AuthRetry::None,
            syslog: None,
            errors_to_stderr: false,
            suppress_timestamps: false,
            bind_local: None,
            replay_window: (64, 15),
            route_delay: None,
            auth_file: None,
            auth_nocache: false,
            remote_random_hostname: false,
            persist_remote_ip: false,
            passtos: false,
            inactive: None,
            notices: Vec::new(),
        }
    }
}

fn parse_proto(o: &OptionLine, p: &str) -> Result<(Proto, Family), ConfigError> {
    Ok(match p {
        "udp" => (Proto::Udp, Family::Any),
        "udp4" => (Proto::Udp, Family::V4),
        "udp6" => (Proto::Udp, Family::V6),
        "tcp" | "tcp-client" => (Proto::Tcp, Family::Any),
        "tcp4" | "tcp4-client" => (Proto::Tcp, Family::V4),
        "tcp6" | "tcp6-client" => (Proto::Tcp, Family::V6),
        _ => {
            return Err(err(
                o,
                format!(
                    "'{p}' is not one of udp, udp4, udp6, tcp-client, tcp4-client, tcp6-client"
                ),
            ));
        }
    })
}

struct Defaults {
    port: u16,
    proto: Proto,
    family: Family,
}

fn remote_from(o: &OptionLine, d: &Defaults) -> Result<Remote, ConfigError> {
    let host = arg(o, 0)?.to_owned();
    let port = if o.arg(1).is_some() {
        num(o, 1)?
    } else {
        d.port
    };
    let (proto, family) = match o.arg(2) {
        Some(p) => parse_proto(o, p)?,
        None => (d.proto, d.family),
    };
    Ok(Remote {
        host,
        port,
        proto,
        family,
        proxy: None,
    })
}

/// `connect-retry N [MAX]`.
fn parse_connect_retry(o: &OptionLine) -> Result<(Duration, Duration), ConfigError> {
    let a: u64 = num(o, 0)?;
    let b: u64 = if o.arg(1).is_some() { num(o, 1)? } else { 300 };
    Ok((Duration::from_secs(a), Duration::from_secs(b.max(a))))
}

/// The password field for a static-challenge response: `SCRV1:<base64 password>:<base64
/// response>` (what OpenVPN 2.6 clients send; the server's auth script splits it).
pub fn static_challenge_password(password: &str, response: &str) -> String {
    use base64::Engine as _;
    let b = &base64::engine::general_purpose::STANDARD;
    format!("SCRV1:{}:{}", b.encode(password), b.encode(response))
}

impl ClientConfig {
    /// Folds the response to `static-challenge` into the password of `auth-user-pass` (given
    /// credentials only; for prompted ones, combine with [`static_challenge_password`]).
    /// No-op without `static-challenge`.
    pub fn answer_static_challenge(&mut self, response: &str) {
        if self.static_challenge.is_none() {
            return;
        }
        if let AuthUserPass::Given { password, .. } = &mut self.auth_user_pass {
            *password = static_challenge_password(password, response);
        }
    }

    /// The logging options (`verb`, `log`, `syslog`, …).
    pub fn log_options(&self) -> openvpn_tun::logging::LogOptions {
        openvpn_tun::logging::LogOptions {
            verb: self.verb,
            file: self.log.clone(),
            syslog: self.syslog.clone(),
            errors_to_stderr: self.errors_to_stderr,
            suppress_timestamps: self.suppress_timestamps,
        }
    }

    /// The DNS backend `dns-updown` asks for (`None`: detect systemd-resolved or
    /// resolv.conf).
    pub fn dns_backend(&self) -> Option<openvpn_tun::DnsBackend> {
        match &self.dns_updown {
            None => None,
            Some(DnsUpdown::Disable) => Some(openvpn_tun::DnsBackend::None),
            Some(DnsUpdown::Command(c)) => Some(openvpn_tun::DnsBackend::Script(c.clone())),
        }
    }

    /// Parses a profile text; relative paths are resolved against `base`.
    pub fn from_ovpn(text: &str, base: &Path) -> Result<Self, ConfigError> {
        Self::from_lines(&options::parse_config(text)?, base)
    }

    /// Builds a profile from option lines (file lines first, command-line options after).
    pub fn from_lines(lines: &[OptionLine], base: &Path) -> Result<Self, ConfigError> {
        let mut c = ClientConfig::default();
        let mut d = Defaults {
            port: 1194,
            proto: Proto::Udp,
            family: Family::Any,
        };
        let mut remote_lines: Vec<OptionLine> = Vec::new();
        // Each block with the profile's proxy lines above it (OpenVPN's defaulting).
        let mut connection_blocks: Vec<(Vec<OptionLine>, crate::proxy::ProxyLines)> = Vec::new();
        let mut proxy = crate::proxy::ProxyLines::default();
        let mut is_client = false;
        let mut mgmt = MgmtLines::default();
        let ignored = catalog::ignored_unknown(lines);
        let (mut nobind, mut bind_asked) = (false, false);
        let mut local: Option<String> = None;
        let mut lport: Option<u16> = None;
        // `cd DIR` moves the base of the relative paths after it.
        let mut base_dir = base.to_path_buf();
        for o in lines {
            let n = o.name.as_str();
            if n == "client" || n == "pull" || n == "tls-client" {
                is_client = true;
            }
            match catalog::screen(o, Role::Client)? {
                Screened::Handle => {}
                Screened::Note(note) => {
                    c.notices.push(note);
                    continue;
                }
                Screened::Skip => continue,
            }
            if c.process.apply(o, &mut base_dir)? {
                continue;
            }
            let base = base_dir.as_path();
            if c.tls.apply(o, base, Role::Client)? {
                continue;
            }
            match n {
                "config" | "client" | "pull" | "tls-client" | "ignore-unknown-option" => {}
                "remote" => remote_lines.push(o.clone()),
                "connection" => connection_blocks.push((o.connection_options()?, proxy.clone())),
                "http-proxy" | "http-proxy-option" | "http-proxy-user-pass" | "socks-proxy" => {
                    proxy.add(o, base)?
                }
                "passtos" => c.passtos = true,
                "inactive" => {
                    let bytes = if o.arg(1).is_some() { num(o, 1)? } else { 0 };
                    let secs: u64 = num(o, 0)?;
                    c.inactive = (secs > 0).then(|| (Duration::from_secs(secs), bytes));
                }
                "remote-random" => c.remote_random = true,
                "port" | "rport" => d.port = num(o, 0)?,
                "proto" => (d.proto, d.family) = parse_proto(o, arg(o, 0)?)?,
                "dev" => c.dev = arg(o, 0)?.to_owned(),
                "dev-type" => {
                    if arg(o, 0)? != "tun" {
                        return Err(err(o, "only 'dev-type tun' is supported (tap is not)"));
                    }
                }
                "data-ciphers" | "ncp-ciphers" => c.data_ciphers = loading::cipher_list(o)?,
                "data-ciphers-fallback" | "cipher" => match loading::fallback_cipher(o)? {
                    Ok(name) => c.data_ciphers_fallback = Some(name),
                    Err(note) => c.notices.push(note),
                },
                "auth" => c.auth = loading::digest(o)?,
                "dev-node" => loading::dev_node(o)?,
                "static-challenge" => {
                    c.static_challenge =
                        Some((arg(o, 0)?.to_owned(), o.arg(1).is_some_and(|e| e == "1")));
                }
                "auth-user-pass" => {
                    c.auth_user_pass = match (o.inline_content(), o.arg(0)) {
                        (Some(text), _) => user_pass_from_text(text, o)?,
                        (None, None) => AuthUserPass::Ask { username: None },
                        (None, Some(f)) => {
                            c.auth_file = Some(base.join(f));
                            user_pass_from_text(&file_or_inline(o, base)?, o)?
                        }
                    }
                }
                "auth-nocache" => c.auth_nocache = true,
                "setenv" => {
                    let mut name = arg(o, 0)?;
                    let mut rest = 1;
                    if name == "opt" {
                        name = arg(o, 1)?;
                        rest = 2;
                    }
                    c.setenv.push((
                        name.to_owned(),
                        o.args.get(rest..).map(|a| a.join(" ")).unwrap_or_default(),
                    ));
                }
                "push-peer-info" => c.push_peer_info = true,
                "pull-filter" => {
                    let action = match arg(o, 0)? {
                        "accept" => PullFilterAction::Accept,
                        "ignore" => PullFilterAction::Ignore,
                        "reject" => PullFilterAction::Reject,
                        x => {
                            return Err(err(
                                o,
                                format!("'{x}' is not one of accept, ignore, reject"),
                            ));
                        }
                    };
                    c.pull_filter.push((action, arg(o, 1)?.to_owned()));
                }
                "route-nopull" => c.route_nopull = true,
                "route-noexec" => c.route_noexec = true,
                "connect-retry" => c.connect_retry = parse_connect_retry(o)?,
                "resolv-retry" => {
                    c.resolv_retry = match arg(o, 0)? {
                        "infinite" => None,
                        _ => Some(Duration::from_secs(num(o, 0)?)),
                    }
                }
                "nobind" => {
                    nobind = true;
                    c.bind_local = None;
                }
                "bind" => bind_asked = true,
                "local" => local = Some(arg(o, 0)?.to_owned()),
                "lport" => lport = Some(num(o, 0)?),
                "remote-random-hostname" => c.remote_random_hostname = true,
                "route-delay" => {
                    c.route_delay = Some(Duration::from_secs(if o.arg(0).is_some() {
                        num(o, 0)?
                    } else {
                        0
                    }))
                }
                "replay-window" => {
                    c.replay_window = (num(o, 0)?, if o.arg(1).is_some() { num(o, 1)? } else { 15 })
                }
                "persist-remote-ip" => c.persist_remote_ip = true,
                "connect-retry-max" => c.connect_retry_max = Some(num(o, 0)?),
                "connect-timeout" | "server-poll-timeout" => {
                    c.connect_timeout = Duration::from_secs(num(o, 0)?)
                }
                "ping" => c.ping = Some(num(o, 0)?),
                "ping-restart" => c.ping_restart = Some(num(o, 0)?),
                "ping-exit" => c.ping_exit = Some(num(o, 0)?),
                "keepalive" => {
                    c.ping = Some(num(o, 0)?);
                    c.ping_restart = Some(num(o, 1)?);
                }
                "reneg-sec" => c.reneg_sec = num(o, 0)?,
                "reneg-bytes" => c.reneg_bytes = num(o, 0)?,
                "reneg-pkts" => c.reneg_pkts = num(o, 0)?,
                "hand-window" => c.hand_window = num(o, 0)?,
                "explicit-exit-notify" => {
                    c.explicit_exit_notify = Some(if o.arg(0).is_some() { num(o, 0)? } else { 1 })
                }
                "tun-mtu" => c.tun_mtu = num(o, 0)?,
                "mssfix" => c.mssfix = if o.arg(0).is_some() { num(o, 0)? } else { 1492 },
                "presolve-ipaddress" | "ip-remote-hint" => {
                    c.presolve = Some(o.arg(0).map(str::to_owned))
                }
                "daemon" => c.daemon = true,
                "writepid" => c.writepid = Some(base.join(arg(o, 0)?)),
                "log" => c.log = Some((base.join(arg(o, 0)?), false)),
                "log-append" => c.log = Some((base.join(arg(o, 0)?), true)),
                "verb" => c.verb = num(o, 0)?,
                "syslog" => c.syslog = Some(o.arg(0).unwrap_or("openvpn").to_owned()),
                "errors-to-stderr" => c.errors_to_stderr = true,
                "suppress-timestamps" => c.suppress_timestamps = true,
                "machine-readable-output" => {}
                "up" => c.up = Some(arg(o, 0)?.to_owned()),
                "down" => c.down = Some(arg(o, 0)?.to_owned()),
                "route-up" => c.route_up = Some(arg(o, 0)?.to_owned()),
                "route-pre-down" => c.route_pre_down = Some(arg(o, 0)?.to_owned()),
                "down-pre" => c.down_pre = true,
                "up-restart" => c.up_restart = true,
                "ipchange" => c.ipchange = Some(arg(o, 0)?.to_owned()),
                "tls-exit" => c.tls_exit = true,
                "user" => c.user = Some(arg(o, 0)?.to_owned()),
                "group" => c.group = Some(arg(o, 0)?.to_owned()),
                "setenv-safe" => c
                    .setenv
                    .push(openvpn_control::process_options::setenv_safe(o)?),
                "plugin" => c.plugins.push((
                    arg(o, 0)?.to_owned(),
                    openvpn_plugin::init_args(o.args.get(1..).unwrap_or_default()),
                )),
                "script-security" => c.script_security = num(o, 0)?,
                "persist-tun" => c.persist_tun = true,
                "status" | "status-version" => {}
                "management" => {
                    let a0 = arg(o, 0)?;
                    let a1 = arg(o, 1)?;
                    let addr = if a1 == "unix" {
                        ManagementAddr::Unix(base.join(a0))
                    } else {
                        ManagementAddr::Tcp {
                            host: a0.to_owned(),
                            port: num(o, 1)?,
                        }
                    };
                    mgmt.addr = Some(addr);
                    mgmt.password_file = o.arg(2).map(|p| base.join(p));
                }
                "management-hold" => mgmt.hold = true,
                "management-query-passwords" => mgmt.query_passwords = true,
                "management-log-cache" => mgmt.log_cache = Some(num(o, 0)?),
                // Accepted for GUIs that pass them; nothing to do in this client.
                "management-forget-disconnect" | "management-up-down" | "management-signal" => {}
                "auth-retry" => {
                    c.auth_retry = match arg(o, 0)? {
                        "none" => AuthRetry::None,
                        "nointeract" => AuthRetry::NoInteract,
                        "interact" => AuthRetry::Interact,
                        x => {
                            return Err(err(
                                o,
                                format!("'{x}' is not one of none, nointeract, interact"),
                            ));
                        }
                    }
                }
                "redirect-gateway" => c.redirect_gateway = Some(o.args.clone()),
                "block-ipv6" => c.block_ipv6 = true,
                "block-ipv4" => c.block_ipv4 = true,
                "route-metric" => c.route_metric = Some(num(o, 0)?),
                "dhcp-option" => {
                    let kind = arg(o, 0)?;
                    let value = arg(o, 1)?;
                    if matches!(kind, "DNS" | "DNS6") && value.parse::<std::net::IpAddr>().is_err()
                    {
                        return Err(err(o, format!("'{value}' is not an IP address")));
                    }
                    c.dhcp_options.push((kind.to_owned(), value.to_owned()));
                }
                "route" => c.routes.push(parse_route_v4(o)?),
                "route-ipv6" => c.routes.push(parse_route_v6(o)?),
                "dns-updown" => {
                    c.dns_updown = Some(match arg(o, 0)? {
                        "disable" => DnsUpdown::Disable,
                        "force" => {
                            return Err(err(
                                o,
                                "'dns-updown force' is not supported: give a command or 'disable'",
                            ));
                        }
                        _ => {
                            let cmd = o.args.join(" ");
                            if cmd.contains(['\n', '\r']) {
                                return Err(err(o, "the command must be one line"));
                            }
                            DnsUpdown::Command(cmd)
                        }
                    })
                }
                "route-gateway" => {
                    c.route_gateway = match arg(o, 0)? {
                        "dhcp" => None,
                        g => Some(g.parse().map_err(|_| {
                            err(o, format!("'{g}' is not an IPv4 address (or dhcp)"))
                        })?),
                    }
                }
                "compress" | "comp-lzo" => {
                    let mut v = vec![o.name.clone()];
                    v.extend(o.args.iter().cloned());
                    let framing = openvpn_control::compression::framing_for(&v);
                    if framing == openvpn_wire::CompressionFraming::None
                        && o.arg(0) != Some("migrate")
                    {
                        return Err(err(
                            o,
                            "unknown compression; use stub, stub-v2, lz4, lz4-v2 or lzo (comp-lzo: yes, no, adaptive)",
                        ));
                    }
                    openvpn_control::compression::check_compress(c.allow_compression, framing)
                        .map_err(|e| err(o, e))?;
                    c.compression = Some(v);
                }
                "allow-compression" => {
                    use openvpn_control::compression::AllowCompression;
                    let mode = AllowCompression::parse(arg(o, 0)?)
                        .ok_or_else(|| err(o, "must be 'yes', 'no', or 'asym'"))?;
                    let configured = c
                        .compression
                        .as_deref()
                        .map(openvpn_control::compression::framing_for);
                    c.allow_compression = Some(
                        AllowCompression::set(c.allow_compression, mode, configured)
                            .map_err(|e| err(o, e))?,
                    );
                    if mode == AllowCompression::Yes {
                        c.notices.push(
                            "allow-compression yes: what the server compresses is decompressed, \
                             but openvpn-rs never compresses (it sends uncompressed packets, \
                             which every compression framing accepts)"
                                .into(),
                        );
                    }
                }
                _ => c
                    .notices
                    .push(catalog::unhandled(o, Role::Client, &ignored)?),
            }
        }
        if !is_client {
            return Err(ConfigError::Invalid(
                "this is not a client profile: add 'client' (or 'pull' and 'tls-client')".into(),
            ));
        }
        // `local`/`lport`/`bind` bind the client's socket (port 1194 unless lport says
        // otherwise, as OpenVPN); without them it uses an ephemeral port; `nobind` wins.
        if !nobind && (local.is_some() || lport.is_some() || bind_asked) {
            let addr = match &local {
                Some(a) => Some(a.parse::<IpAddr>().map_err(|_| {
                    ConfigError::Invalid(format!(
                        "'local {a}': give an IP address (host names are not resolved for local)"
                    ))
                })?),
                None => None,
            };
            c.bind_local = Some((addr, lport.unwrap_or(1194)));
        }
        // With only <connection> blocks, the profile's own proxy lines are just their
        // defaults (OpenVPN checks each block).
        let global_proxy = if remote_lines.is_empty() {
            None
        } else {
            proxy.finish()?
        };
        for o in &remote_lines {
            let r = remote_from(o, &d)?;
            c.remotes.push(crate::proxy::apply(
                r,
                global_proxy.as_ref(),
                &mut c.notices,
            )?);
        }
        for (block, inherited) in &connection_blocks {
            let mut block_proxy = inherited.clone();
            let mut bd = Defaults {
                port: d.port,
                proto: d.proto,
                family: d.family,
            };
            let mut hosts = Vec::new();
            for o in block {
                match o.name.as_str() {
                    "remote" => hosts.push(o.clone()),
                    "port" | "rport" => bd.port = num(o, 0)?,
                    "proto" => (bd.proto, bd.family) = parse_proto(o, arg(o, 0)?)?,
                    // Per-entry in OpenVPN; here they apply to the whole profile (the last
                    // block's value wins).
                    "connect-timeout" | "server-poll-timeout" => {
                        c.connect_timeout = Duration::from_secs(num(o, 0)?)
                    }
                    "connect-retry" => c.connect_retry = parse_connect_retry(o)?,
                    "connect-retry-max" => c.connect_retry_max = Some(num(o, 0)?),
                    "explicit-exit-notify" => {
                        c.explicit_exit_notify =
                            Some(if o.arg(0).is_some() { num(o, 0)? } else { 1 })
                    }
                    "mssfix" => c.mssfix = if o.arg(0).is_some() { num(o, 0)? } else { 1492 },
                    "tun-mtu" => c.tun_mtu = num(o, 0)?,
                    "nobind" => c.bind_local = None,
                    "float" | "tun-mtu-extra" => {}
                    "http-proxy" | "http-proxy-option" | "socks-proxy" => {
                        block_proxy.add(o, base)?
                    }
                    "http-proxy-retry" | "socks-proxy-retry" => {}
                    other => {
                        return Err(err(
                            o,
                            format!("option '{other}' is not supported inside <connection>"),
                        ));
                    }
                }
            }
            let block_proxy = block_proxy.finish()?;
            for o in &hosts {
                let r = remote_from(o, &bd)?;
                c.remotes.push(crate::proxy::apply(
                    r,
                    block_proxy.as_ref(),
                    &mut c.notices,
                )?);
            }
        }
        c.management = mgmt.finish(lines)?;
        if c.remotes.is_empty() {
            return Err(ConfigError::Invalid(
                "no 'remote' given: add 'remote HOST [PORT] [PROTO]'".into(),
            ));
        }
        c.tls.finish()?;
        if !c.tls.can_verify_peer() {
            return Err(ConfigError::Invalid(
                "no 'ca' (nor 'peer-fingerprint') given: the server certificate cannot be verified"
                    .into(),
            ));
        }
        if c.tls.tls_verify.is_some() && c.script_security < 2 {
            return Err(ConfigError::Invalid(
                "'tls-verify' runs an external command: it needs 'script-security 2'".into(),
            ));
        }
        if let (Some(DnsUpdown::Command(_)), true) = (&c.dns_updown, c.script_security < 2) {
            return Err(ConfigError::Invalid(
                "'dns-updown COMMAND' runs an external command: it needs 'script-security 2'"
                    .into(),
            ));
        }
        Ok(c)
    }

    /// Loads a profile file plus command-line options.
    /// `--cd DIR` before `--config FILE` on the command line reads FILE from DIR.
    pub fn load(file: Option<&Path>, cli: Vec<OptionLine>) -> Result<Self, ConfigError> {
        let (lines, base) = openvpn_control::loading::config_lines(file, cli)?;
        Self::from_lines(&lines, &base)
    }
}

/// The `management*` lines seen while parsing.
#[derive(Default)]
struct MgmtLines {
    addr: Option<ManagementAddr>,
    password_file: Option<PathBuf>,
    hold: bool,
    query_passwords: bool,
    log_cache: Option<usize>,
}

impl MgmtLines {
    fn finish(self, lines: &[OptionLine]) -> Result<Option<ManagementOptions>, ConfigError> {
        let Some(addr) = self.addr else {
            if let Some(o) = lines
                .iter()
                .find(|o| o.name.starts_with("management-") && o.name != "management-log-cache")
            {
                return Err(err(
                    o,
                    "needs the management interface: add 'management IP PORT' or 'management PATH unix'",
                ));
            }
            return Ok(None);
        };
        Ok(Some(ManagementOptions {
            addr,
            password_file: self.password_file,
            hold: self.hold,
            query_passwords: self.query_passwords,
            log_cache: self.log_cache.unwrap_or(1000),
        }))
    }
}

fn user_pass_from_text(text: &str, o: &OptionLine) -> Result<AuthUserPass, ConfigError> {
    let mut it = text.lines().map(str::trim_end).filter(|l| !l.is_empty());
    match (it.next(), it.next()) {
        (Some(u), Some(p)) => Ok(AuthUserPass::Given {
            username: u.to_owned(),
            password: p.to_owned(),
        }),
        (Some(u), None) => Ok(AuthUserPass::Ask {
            username: Some(u.to_owned()),
        }),
        _ => Err(err(
            o,
            "the file is empty: put the username on line 1 and the password on line 2",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn prof(extra: &str) -> Result<ClientConfig, ConfigError> {
        ClientConfig::from_ovpn(
            &format!(
                "client\ndev tun\nproto udp\nremote vpn.example 1194\n<ca>\n{CA}</ca>\n{extra}"
            ),
            Path::new("/"),
        )
    }

    #[test]
    fn profile_with_inline_blocks_and_connections() {
        let c = prof("setenv IV_GUI_VER \"my-gui 1.0\"\n<connection>\nremote a.example 443 tcp\n</connection>\n<connection>\nremote b.example\nproto udp6\n</connection>\n<auth-user-pass>\nalice\nsecret\n</auth-user-pass>\n").unwrap();
        assert_eq!(c.remotes.len(), 3);
        assert_eq!(
            c.remotes[1],
            Remote {
                host: "a.example".into(),
                port: 443,
                proto: Proto::Tcp,
                family: Family::Any,
                proxy: None,
            }
        );
        assert_eq!(c.remotes[2].family, Family::V6);
        assert_eq!(
            c.setenv,
            vec![("IV_GUI_VER".to_owned(), "my-gui 1.0".to_owned())]
        );
        assert_eq!(
            c.auth_user_pass,
            AuthUserPass::Given {
                username: "alice".into(),
                password: "secret".into()
            }
        );
    }

    #[test]
    fn laptop_safety_options() {
        let c = prof("redirect-gateway def1 ipv6\nblock-ipv6\nblock-ipv4\nroute-metric 50\ndhcp-option DNS 10.8.0.1\ndhcp-option DOMAIN vpn.example\n").unwrap();
        assert_eq!(c.redirect_gateway, Some(vec!["def1".into(), "ipv6".into()]));
        assert!(c.block_ipv6 && c.block_ipv4);
        assert_eq!(c.route_metric, Some(50));
        assert_eq!(c.dhcp_options.len(), 2);
        let e = prof("dhcp-option DNS nope\n").unwrap_err().to_string();
        assert!(e.contains("config line 10") && e.contains("nope"), "{e}");
        let e = prof("route-metric x\n").unwrap_err().to_string();
        assert!(e.contains("route-metric"), "{e}");
    }

    #[test]
    fn dns_updown() {
        let c = prof("script-security 2\ndns-updown \"/etc/vpn/dns.sh --verbose\"\n").unwrap();
        assert_eq!(
            c.dns_updown,
            Some(DnsUpdown::Command("/etc/vpn/dns.sh --verbose".into()))
        );
        assert_eq!(
            c.dns_backend(),
            Some(openvpn_tun::DnsBackend::Script(
                "/etc/vpn/dns.sh --verbose".into()
            ))
        );
        let c = prof("dns-updown disable\n").unwrap();
        assert_eq!(c.dns_backend(), Some(openvpn_tun::DnsBackend::None));
        assert_eq!(prof("").unwrap().dns_backend(), None);
        let e = prof("dns-updown /x.sh\n").unwrap_err().to_string();
        assert!(e.contains("script-security 2"), "{e}");
        let e = prof("dns-updown force\n").unwrap_err().to_string();
        assert!(e.contains("config line 10") && e.contains("force"), "{e}");
        assert!(prof("dns-updown\n").is_err());
    }

    #[test]
    fn profile_routes_parse_like_openvpn() {
        let c = prof(
            "route 10.1.0.0 255.255.0.0\n\
             route 10.2.0.0 255.255.0.0 192.168.1.1 50\n\
             route 10.3.0.0 255.255.0.0 net_gateway\n\
             route remote_host 255.255.255.255 net_gateway\n\
             route 10.4.0.1\n\
             route 10.5.0.0 255.255.0.0 vpn_gateway default\n\
             route 10.6.0.0 255.255.0.0 default 7\n\
             route-ipv6 2001:db8::/32\n\
             route-ipv6 2001:db8:1::/48 net_gateway 9\n\
             route-ipv6 2001:db8:2::1 fd00::1\n\
             route-gateway 10.8.0.1\n",
        )
        .unwrap();
        let v4 = |a: [u8; 4]| IpAddr::from(Ipv4Addr::from(a));
        let v6 = |a: &str| IpAddr::V6(a.parse().unwrap());
        let r = |dest, gateway, metric| ProfileRoute {
            dest,
            gateway,
            metric,
        };
        assert_eq!(
            c.routes,
            [
                r(
                    RouteDest::Net(v4([10, 1, 0, 0]), 16),
                    RouteGateway::Default,
                    None
                ),
                r(
                    RouteDest::Net(v4([10, 2, 0, 0]), 16),
                    RouteGateway::Addr(v4([192, 168, 1, 1])),
                    Some(50)
                ),
                r(
                    RouteDest::Net(v4([10, 3, 0, 0]), 16),
                    RouteGateway::Net,
                    None
                ),
                r(RouteDest::RemoteHost(32), RouteGateway::Net, None),
                r(
                    RouteDest::Net(v4([10, 4, 0, 1]), 32),
                    RouteGateway::Default,
                    None
                ),
                r(
                    RouteDest::Net(v4([10, 5, 0, 0]), 16),
                    RouteGateway::Vpn,
                    None
                ),
                r(
                    RouteDest::Net(v4([10, 6, 0, 0]), 16),
                    RouteGateway::Default,
                    Some(7)
                ),
                r(
                    RouteDest::Net(v6("2001:db8::"), 32),
                    RouteGateway::Default,
                    None
                ),
                r(
                    RouteDest::Net(v6("2001:db8:1::"), 48),
                    RouteGateway::Net,
                    Some(9)
                ),
                r(
                    RouteDest::Net(v6("2001:db8:2::1"), 128),
                    RouteGateway::Addr(v6("fd00::1")),
                    None
                ),
            ]
        );
        assert_eq!(c.route_gateway, Some(Ipv4Addr::new(10, 8, 0, 1)));
        assert_eq!(prof("route-gateway dhcp\n").unwrap().route_gateway, None);
        // Errors name the line (the profile's first extra line is line 10) and the problem.
        for (line, want) in [
            ("route vpn.example.com\n", "host names are not supported"),
            ("route 10.1.0.0 255.0.255.0\n", "not contiguous"),
            ("route 10.1.0.0 255.255.0\n", "not an IPv4 netmask"),
            ("route 10.1.2.0 255.255.0.0\n", "host bits set"),
            ("route 10.1.0.0 255.255.0.0 fd00::1\n", "gateway 'fd00::1'"),
            ("route 10.1.0.0 255.255.0.0 vpn_gateway x\n", "metric 'x'"),
            ("route 10.1.0.0 255.255.0.0 vpn_gateway 1 2\n", "too many"),
            ("route\n", "route"),
            ("route-ipv6 2001:db8::/129\n", "prefix length"),
            ("route-ipv6 10.0.0.0/8\n", "not an IPv6"),
            ("route-ipv6 2001:db8::1/32\n", "host bits set"),
            ("route-ipv6 2001:db8::/32 10.8.0.1\n", "gateway '10.8.0.1'"),
            ("route-ipv6 2001:db8::/32 net_gateway -1\n", "metric '-1'"),
            ("route-gateway nope\n", "not an IPv4 address"),
        ] {
            let e = prof(line).expect_err(line).to_string();
            assert!(
                e.contains("config line 10") && e.contains(want),
                "{line:?}: {e}"
            );
        }
    }

    #[test]
    fn errors_name_lines() {
        let e = prof("proto udp7\n").unwrap_err().to_string();
        assert!(e.contains("config line 10") && e.contains("udp7"), "{e}");
        let e = prof("frobnicate\n").unwrap_err().to_string();
        assert!(
            e.contains("config line 10") && e.contains("frobnicate"),
            "{e}"
        );
        let e = ClientConfig::from_ovpn("dev tun\nremote x\n", Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a client profile"), "{e}");
        let e = ClientConfig::from_ovpn(&format!("client\n<ca>\n{CA}</ca>\n"), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("remote"), "{e}");
    }

    #[test]
    fn management_options() {
        let c = prof("management /run/gui.sock unix pw.txt\nmanagement-hold\nmanagement-query-passwords\nauth-user-pass\nauth-retry interact\n").unwrap();
        assert_eq!(
            c.management,
            Some(ManagementOptions {
                addr: ManagementAddr::Unix("/run/gui.sock".into()),
                password_file: Some("/pw.txt".into()),
                hold: true,
                query_passwords: true,
                log_cache: 1000,
            })
        );
        assert_eq!(c.auth_retry, AuthRetry::Interact);
        let c = prof("management 127.0.0.1 7505\nmanagement-log-cache 50\n").unwrap();
        let m = c.management.unwrap();
        assert_eq!(
            m.addr,
            ManagementAddr::Tcp {
                host: "127.0.0.1".into(),
                port: 7505
            }
        );
        assert_eq!((m.hold, m.log_cache, m.password_file), (false, 50, None));
        assert!(prof("").unwrap().management.is_none());
        let e = prof("management-hold\n").unwrap_err().to_string();
        assert!(
            e.contains("management-hold") && e.contains("management IP PORT"),
            "{e}"
        );
        assert!(prof("management 127.0.0.1 notaport\n").is_err());
        assert!(prof("auth-retry sometimes\n").is_err());
    }

    #[test]
    fn process_and_script_options() {
        let c = prof(
            "user nobody\ngroup nogroup\nnice 3\nmlock\nsetenv-safe GREETING \"hi there\"\n\
             script-security 2\nroute-up \"/bin/echo r\"\nroute-pre-down /x/pre.sh\n\
             down-pre\nup-restart\nipchange /x/ip.sh\ntls-exit\n",
        )
        .unwrap();
        assert_eq!(
            (c.user.as_deref(), c.group.as_deref()),
            (Some("nobody"), Some("nogroup"))
        );
        assert_eq!(
            (c.process.nice, c.process.mlock, c.process.cd),
            (3, true, None)
        );
        assert_eq!(
            c.setenv,
            [("OPENVPN_GREETING".to_owned(), "hi there".to_owned())]
        );
        assert_eq!(c.route_up.as_deref(), Some("/bin/echo r"));
        assert_eq!(c.route_pre_down.as_deref(), Some("/x/pre.sh"));
        assert_eq!(c.ipchange.as_deref(), Some("/x/ip.sh"));
        assert!(c.down_pre && c.up_restart && c.tls_exit);
        let d = prof("").unwrap();
        assert!(!d.down_pre && !d.up_restart && !d.tls_exit && d.user.is_none());
        assert_eq!(d.process, Default::default());
    }

    /// `cd DIR`: the relative paths after it are read from DIR, those before it are not.
    #[test]
    fn cd_is_the_base_of_later_relative_paths() {
        let dir = std::env::temp_dir().join(format!("ovrs-client-cd-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        std::fs::write(dir.join("keys/ta.key"), "ta-key-text").unwrap();
        let text = format!(
            "client\nremote vpn.example\n<ca>\n{CA}</ca>\nlog before.log\ncd keys\ntls-crypt ta.key\nlog-append after.log\n"
        );
        let c = ClientConfig::from_ovpn(&text, &dir).unwrap();
        assert_eq!(c.process.cd, Some(dir.join("keys")));
        assert_eq!(
            c.tls.wrap,
            TlsWrap::Crypt {
                key: "ta-key-text".into()
            }
        );
        assert_eq!(c.log, Some((dir.join("keys/after.log"), true)));
        // Without the cd the key is looked for beside the profile, and is not there.
        let e = ClientConfig::from_ovpn(&text.replace("cd keys\n", ""), &dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ta.key"), "{e}");
        let e = prof("cd no-such-dir-ovrs\n").unwrap_err().to_string();
        assert!(e.contains("config line 10") && e.contains("cd to"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every option the catalog calls implemented for clients reaches an arm of `from_lines`
    /// (it may still reject the dummy argument, but never as "not supported").
    #[test]
    fn every_implemented_option_is_handled() {
        use openvpn_control::options::catalog::{Role, implemented_but_unhandled};
        let missing = implemented_but_unhandled(Role::Client, prof);
        assert!(missing.is_empty(), "not handled: {missing:?}");
    }

    #[test]
    fn network_options_from_real_profiles() {
        let c = prof(
            "persist-remote-ip\nremote-random-hostname\nroute-delay 4\nreplay-window 512 30\nresolv-retry 60\nlport 5000\nlocal 127.0.0.2\n<connection>\nremote b.example 443 tcp\nconnect-retry-max 3\nconnect-timeout 9\n</connection>\n",
        )
        .unwrap();
        assert!(c.persist_remote_ip && c.remote_random_hostname);
        assert_eq!(c.route_delay, Some(Duration::from_secs(4)));
        assert_eq!(c.replay_window, (512, 30));
        assert_eq!(c.resolv_retry, Some(Duration::from_secs(60)));
        assert_eq!(
            c.bind_local,
            Some((Some("127.0.0.2".parse().unwrap()), 5000))
        );
        assert_eq!(c.connect_retry_max, Some(3));
        assert_eq!(c.connect_timeout, Duration::from_secs(9));
        // `bind` alone binds OpenVPN's port; `nobind` wins over everything.
        assert_eq!(prof("bind\n").unwrap().bind_local, Some((None, 1194)));
        assert_eq!(prof("lport 5000\nnobind\n").unwrap().bind_local, None);
        assert_eq!(prof("").unwrap().bind_local, None);
        assert!(prof("local vpn.example\n").is_err());
        assert_eq!(prof("resolv-retry infinite\n").unwrap().resolv_retry, None);
        // OpenVPN's old default cipher is accepted as the fallback it is, with a note.
        let c = prof("cipher BF-CBC\n").unwrap();
        assert!(
            c.notices.iter().any(|n| n.contains("BF-CBC")),
            "{:?}",
            c.notices
        );
        assert!(prof("data-ciphers-fallback BF-CBC\n").is_err());
    }

    #[test]
    fn proto_restrictions() {
        let c = prof("proto tcp6-client\nremote other 443\n").unwrap();
        // `proto` is global, as in OpenVPN: it applies to every remote without its own proto.
        assert_eq!(
            (c.remotes[0].proto, c.remotes[0].family),
            (Proto::Tcp, Family::V6)
        );
        assert_eq!(c.remotes[1].port, 443);
    }
}
