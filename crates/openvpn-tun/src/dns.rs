//! DNS for the tunnel: systemd-resolved per-link settings, or a rewritten `resolv.conf`.
//!
//! ```text
//!  DnsSettings ─▶ resolved_plan(ifindex)  ─▶ [SetLinkDNS, SetLinkDomains, SetLinkDefaultRoute]
//!             │                               └▶ busctl call org.freedesktop.resolve1 …
//!             └─▶ render_resolv_conf(original) ─▶ /etc/resolv.conf (original kept in the journal)
//! ```
//!
//! [`DnsBackend::detect`] picks systemd-resolved when `/run/systemd/resolve/` exists and the
//! bus name answers a ping, else `resolv.conf`. The resolved calls are made with `busctl`
//! (shipped with systemd wherever resolved runs); the call plan itself is pure and tested.
//! [`DnsBackend::Script`] hands DNS to a `dns-updown`-style command instead
//! ([`updown_env`]: what it is told).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::TunError;

/// The DNS configuration pushed for the tunnel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsSettings {
    /// Name servers, in order.
    pub servers: Vec<IpAddr>,
    /// Search domains (`dhcp-option DOMAIN`/`DOMAIN-SEARCH`, `dns search-domains`).
    pub search_domains: Vec<String>,
    /// Whether the tunnel takes the default route: all names are then resolved through it
    /// (systemd-resolved routing domain `~.`).
    pub default_route: bool,
}

impl DnsSettings {
    /// Nothing to configure.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.search_domains.is_empty()
    }
}

/// How DNS is configured on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsBackend {
    /// systemd-resolved's per-link API.
    Resolved,
    /// Rewrite this file (normally `/etc/resolv.conf`) and restore it afterwards.
    ResolvConf(PathBuf),
    /// Leave DNS alone.
    None,
    /// Run this command (`/bin/sh -c`) with `script_type=dns-up` and the settings in its
    /// environment ([`updown_env`]), and with `script_type=dns-down` to undo it.
    Script(String),
}

/// The environment of a `dns-updown` command: `script_type` (`dns-up` / `dns-down`), `dev`,
/// `dev_idx`, and for `dns-up` the settings in OpenVPN's `dns` option style:
/// `dns_server_0_address_N` (N from 1), `dns_search_domain_N` (N from 1), and
/// `dns_default_route` (`1` when the tunnel takes the default route, else `0`).
pub fn updown_env(up: bool, dev: &str, ifindex: u32, s: &DnsSettings) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "script_type".to_owned(),
            if up { "dns-up" } else { "dns-down" }.to_owned(),
        ),
        ("dev".to_owned(), dev.to_owned()),
        ("dev_idx".to_owned(), ifindex.to_string()),
    ];
    if up {
        for (i, a) in s.servers.iter().enumerate() {
            env.push((format!("dns_server_0_address_{}", i + 1), a.to_string()));
        }
        for (i, d) in s.search_domains.iter().enumerate() {
            env.push((format!("dns_search_domain_{}", i + 1), d.clone()));
        }
        env.push((
            "dns_default_route".to_owned(),
            if s.default_route { "1" } else { "0" }.to_owned(),
        ));
    }
    env
}

/// Runs a `dns-updown` command with `env`; a non-zero exit is an error.
pub fn run_updown(command: &str, env: &[(String, String)]) -> Result<(), TunError> {
    let shown = format!("/bin/sh -c {command:?}");
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| TunError::Spawn {
            command: shown.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TunError::Command {
            command: shown,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

impl DnsBackend {
    /// systemd-resolved if `/run/systemd/resolve/` exists and the resolved that answers on the
    /// system bus runs in our network namespace, else `/etc/resolv.conf`.
    pub fn detect() -> DnsBackend {
        if Path::new("/run/systemd/resolve").is_dir() && resolved_in_our_netns() {
            DnsBackend::Resolved
        } else {
            DnsBackend::ResolvConf(PathBuf::from("/etc/resolv.conf"))
        }
    }
}

/// Whether systemd-resolved answers on the system bus and serves our network namespace.
///
/// resolved manages the links of the namespace it runs in; under `ip netns exec` (or in a
/// container sharing the host's /run) the host's resolved answers, and an interface index of
/// ours names some other link to it, so it must not be given ours. The bus tells resolved's
/// pid; its `/proc/<pid>/ns/net` must be ours. A pid we cannot inspect counts as the same
/// namespace only when pid 1 is in ours too (the usual single-namespace laptop).
fn resolved_in_our_netns() -> bool {
    let Some(pid) = resolved_pid() else {
        return false;
    };
    let ours = std::fs::read_link("/proc/self/ns/net");
    match (&ours, std::fs::read_link(format!("/proc/{pid}/ns/net"))) {
        (Ok(ours), Ok(theirs)) => *ours == theirs,
        _ => match (&ours, std::fs::read_link("/proc/1/ns/net")) {
            (Ok(ours), Ok(init)) => *ours == init,
            _ => true,
        },
    }
}

/// The pid of the bus connection that owns `org.freedesktop.resolve1`, if it answers.
fn resolved_pid() -> Option<u32> {
    let out = Command::new("busctl")
        .args([
            "--system",
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "GetConnectionUnixProcessID",
            "s",
            RESOLVE1,
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_busctl_u32(&String::from_utf8_lossy(&out.stdout))
}

/// Parses busctl's reply to a method returning one `u` (`u 1234`).
fn parse_busctl_u32(reply: &str) -> Option<u32> {
    reply.trim().strip_prefix("u ")?.trim().parse().ok()
}

const RESOLVE1: &str = "org.freedesktop.resolve1";
const RESOLVE1_PATH: &str = "/org/freedesktop/resolve1";
const RESOLVE1_MANAGER: &str = "org.freedesktop.resolve1.Manager";

/// One method call on `org.freedesktop.resolve1.Manager`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolvedCall {
    /// `SetLinkDNS(i ifindex, a(iay) addresses)`.
    SetLinkDns {
        /// Interface index.
        ifindex: u32,
        /// (address family, address bytes).
        servers: Vec<(i32, Vec<u8>)>,
    },
    /// `SetLinkDomains(i ifindex, a(sb) domains)`: (name, routing-only).
    SetLinkDomains {
        /// Interface index.
        ifindex: u32,
        /// (domain, routing-only).
        domains: Vec<(String, bool)>,
    },
    /// `SetLinkDefaultRoute(i ifindex, b enable)`.
    SetLinkDefaultRoute {
        /// Interface index.
        ifindex: u32,
        /// Whether the link is used for names no other link claims.
        enable: bool,
    },
    /// `RevertLink(i ifindex)`: forget everything set for the link.
    RevertLink {
        /// Interface index.
        ifindex: u32,
    },
}

impl ResolvedCall {
    /// The method name.
    pub fn method(&self) -> &'static str {
        match self {
            ResolvedCall::SetLinkDns { .. } => "SetLinkDNS",
            ResolvedCall::SetLinkDomains { .. } => "SetLinkDomains",
            ResolvedCall::SetLinkDefaultRoute { .. } => "SetLinkDefaultRoute",
            ResolvedCall::RevertLink { .. } => "RevertLink",
        }
    }

    /// `busctl call` arguments (after `busctl`): destination, path, interface, method,
    /// signature, values.
    pub fn busctl_args(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "--system",
            "call",
            RESOLVE1,
            RESOLVE1_PATH,
            RESOLVE1_MANAGER,
            self.method(),
        ]
        .map(str::to_owned)
        .to_vec();
        match self {
            ResolvedCall::SetLinkDns { ifindex, servers } => {
                a.push("ia(iay)".into());
                a.push(ifindex.to_string());
                a.push(servers.len().to_string());
                for (fam, bytes) in servers {
                    a.push(fam.to_string());
                    a.push(bytes.len().to_string());
                    a.extend(bytes.iter().map(u8::to_string));
                }
            }
            ResolvedCall::SetLinkDomains { ifindex, domains } => {
                a.push("ia(sb)".into());
                a.push(ifindex.to_string());
                a.push(domains.len().to_string());
                for (d, routing) in domains {
                    a.push(d.clone());
                    a.push(routing.to_string());
                }
            }
            ResolvedCall::SetLinkDefaultRoute { ifindex, enable } => {
                a.push("ib".into());
                a.push(ifindex.to_string());
                a.push(enable.to_string());
            }
            ResolvedCall::RevertLink { ifindex } => {
                a.push("i".into());
                a.push(ifindex.to_string());
            }
        }
        a
    }

    /// Makes the call with `busctl`.
    pub fn call(&self) -> Result<(), TunError> {
        let args = self.busctl_args();
        let command = format!("busctl {}", args.join(" "));
        let out = Command::new("busctl")
            .args(&args)
            .output()
            .map_err(|source| TunError::Spawn {
                command: command.clone(),
                source,
            })?;
        if !out.status.success() {
            tracing::warn!(%command, "systemd-resolved call failed");
            return Err(TunError::Command {
                command,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        tracing::info!(%command, "systemd-resolved: {}", self.method());
        Ok(())
    }
}

/// The systemd-resolved calls that apply `s` to link `ifindex`, in order.
///
/// Search domains are plain (not routing-only) domains. When the tunnel takes the default
/// route, the root domain is added as a routing-only domain (what `resolvectl` shows as `~.`;
/// on the bus it is `"."` with the routing flag — a literal `"~."` would be stored as a domain
/// named `~`) and the link becomes the default DNS route, so every name is resolved
/// through the tunnel. Otherwise the link is the default DNS route only if it has no search
/// domains (else only names under those domains go to its servers).
pub fn resolved_plan(ifindex: u32, s: &DnsSettings) -> Vec<ResolvedCall> {
    let mut calls = Vec::new();
    if !s.servers.is_empty() {
        let servers = s
            .servers
            .iter()
            .map(|a| match a {
                IpAddr::V4(v) => (libc::AF_INET, v.octets().to_vec()),
                IpAddr::V6(v) => (libc::AF_INET6, v.octets().to_vec()),
            })
            .collect();
        calls.push(ResolvedCall::SetLinkDns { ifindex, servers });
    }
    let mut domains: Vec<(String, bool)> = s
        .search_domains
        .iter()
        .map(|d| (d.trim_end_matches('.').to_owned(), false))
        .collect();
    if s.default_route {
        domains.push((".".into(), true));
    }
    if !domains.is_empty() {
        calls.push(ResolvedCall::SetLinkDomains { ifindex, domains });
    }
    let enable = s.default_route || s.search_domains.is_empty();
    if !calls.is_empty() {
        calls.push(ResolvedCall::SetLinkDefaultRoute { ifindex, enable });
    }
    calls
}

/// The `resolv.conf` text while the tunnel is up: our servers first (at most 3, the resolver's
/// limit), our search domains, then the `options` lines of the original file.
pub fn render_resolv_conf(original: &str, s: &DnsSettings) -> String {
    let mut out = String::from("# written by openvpn-rs; the original is restored on exit\n");
    for a in s.servers.iter().take(3) {
        out.push_str(&format!("nameserver {a}\n"));
    }
    if !s.search_domains.is_empty() {
        out.push_str(&format!("search {}\n", s.search_domains.join(" ")));
    }
    for line in original.lines() {
        if line.trim_start().starts_with("options") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Writes `contents` into `path` in place (same inode, mode, and bind mount).
pub(crate) fn write_in_place(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn resolved_plan_with_default_route() {
        let s = DnsSettings {
            servers: vec![ip("10.8.0.1"), ip("fd00::53")],
            search_domains: vec!["corp.example.".into()],
            default_route: true,
        };
        let plan = resolved_plan(7, &s);
        let mut v6 = vec![0xfd, 0];
        v6.extend([0; 12]);
        v6.extend([0, 0x53]);
        assert_eq!(
            plan,
            [
                ResolvedCall::SetLinkDns {
                    ifindex: 7,
                    servers: vec![(2, vec![10, 8, 0, 1]), (10, v6)],
                },
                ResolvedCall::SetLinkDomains {
                    ifindex: 7,
                    domains: vec![("corp.example".into(), false), (".".into(), true)],
                },
                ResolvedCall::SetLinkDefaultRoute {
                    ifindex: 7,
                    enable: true
                },
            ]
        );
        assert_eq!(
            plan[0].busctl_args()[6..].join(" "),
            "ia(iay) 7 2 2 4 10 8 0 1 10 16 253 0 0 0 0 0 0 0 0 0 0 0 0 0 0 83"
        );
        assert_eq!(
            plan[1].busctl_args()[6..].join(" "),
            "ia(sb) 7 2 corp.example false . true"
        );
        assert_eq!(
            ResolvedCall::RevertLink { ifindex: 7 }.busctl_args()[4..].join(" "),
            "org.freedesktop.resolve1.Manager RevertLink i 7"
        );
    }

    #[test]
    fn updown_env_names_the_settings() {
        let s = DnsSettings {
            servers: vec![ip("10.8.0.1"), ip("fd00::53")],
            search_domains: vec!["corp.example".into()],
            default_route: true,
        };
        let env = updown_env(true, "tun0", 7, &s);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("script_type"), Some("dns-up"));
        assert_eq!(get("dev"), Some("tun0"));
        assert_eq!(get("dev_idx"), Some("7"));
        assert_eq!(get("dns_server_0_address_1"), Some("10.8.0.1"));
        assert_eq!(get("dns_server_0_address_2"), Some("fd00::53"));
        assert_eq!(get("dns_search_domain_1"), Some("corp.example"));
        assert_eq!(get("dns_default_route"), Some("1"));
        let down = updown_env(false, "tun0", 7, &s);
        assert_eq!(down.len(), 3, "{down:?}");
        assert!(down.contains(&("script_type".into(), "dns-down".into())));
        assert!(run_updown("exit 0", &down).is_ok());
        let e = run_updown("echo oops >&2; exit 3", &down).expect_err("exit 3");
        assert!(e.to_string().contains("oops"), "{e}");
    }

    #[test]
    fn busctl_pid_reply() {
        assert_eq!(parse_busctl_u32("u 11708\n"), Some(11708));
        assert_eq!(parse_busctl_u32("s \"x\"\n"), None);
        assert_eq!(parse_busctl_u32(""), None);
    }

    #[test]
    fn resolved_plan_split_dns_and_empty() {
        let s = DnsSettings {
            servers: vec![ip("10.8.0.1")],
            search_domains: vec!["corp.example".into()],
            default_route: false,
        };
        let plan = resolved_plan(3, &s);
        assert_eq!(plan.len(), 3);
        assert_eq!(
            plan[2],
            ResolvedCall::SetLinkDefaultRoute {
                ifindex: 3,
                enable: false
            }
        );
        assert!(resolved_plan(3, &DnsSettings::default()).is_empty());
    }

    #[test]
    fn resolv_conf_keeps_options_only() {
        let orig = "nameserver 192.0.2.53\nsearch home.arpa\noptions edns0 trust-ad\n";
        let s = DnsSettings {
            servers: vec![
                ip("10.8.0.1"),
                ip("10.8.0.2"),
                ip("10.8.0.3"),
                ip("10.8.0.4"),
            ],
            search_domains: vec!["a.example".into(), "b.example".into()],
            default_route: true,
        };
        assert_eq!(
            render_resolv_conf(orig, &s),
            "# written by openvpn-rs; the original is restored on exit\n\
             nameserver 10.8.0.1\nnameserver 10.8.0.2\nnameserver 10.8.0.3\n\
             search a.example b.example\noptions edns0 trust-ad\n"
        );
    }
}
