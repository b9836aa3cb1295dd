//! What each OpenVPN 2.6 option does in openvpn-rs, per role: the one table both binaries'
//! loaders and `--check-config` read.
//!
//! ```text
//!  OptionLine ──screen(line, role, ignored)──▶ Handle      → the role's loader interprets it
//!                                          ├─▶ Skip(note)  → logged once, nothing else
//!                                          └─▶ Err         → refused, with line and reason
//! ```
//!
//! The rule: whatever OpenVPN 2.6 accepts on Linux is accepted. An option is implemented with
//! OpenVPN's meaning ([`Effect::Implemented`], or [`Effect::Inherent`] when ours always
//! behaves that way); only where OpenVPN itself does nothing on Linux (or in this role) is it
//! accepted with one logged line ([`Effect::NoEffect`]); what we cannot do yet is refused with
//! the reason ([`Effect::Refused`]). Security options are never in the no-effect group.

use crate::loading::{LoadError, invalid};
use crate::options::OptionLine;

/// Which binary reads the option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `openvpn-client` (a profile with `client` / `pull` + `tls-client`).
    Client,
    /// `openvpn-server` (`server` / `mode server`).
    Server,
}

/// What an option does in one role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Implemented with OpenVPN's meaning by the role's loader.
    Implemented,
    /// Implemented because ours always behaves this way (the text says how); nothing logged.
    Inherent(&'static str),
    /// Accepted with one logged line: OpenVPN itself does nothing with it on Linux or in this
    /// role (the text says why).
    NoEffect(&'static str),
    /// Refused: not supported yet (the text says why and what to do).
    Refused(&'static str),
}

impl Effect {
    /// A short label for `--check-config`.
    pub fn label(self) -> &'static str {
        match self {
            Effect::Implemented | Effect::Inherent(_) => "implemented",
            Effect::NoEffect(_) => "no effect on Linux",
            Effect::Refused(_) => "refused",
        }
    }

    /// The explanation, if any.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Effect::Implemented => None,
            Effect::Inherent(s) | Effect::NoEffect(s) | Effect::Refused(s) => Some(s),
        }
    }
}

/// One option's effects in both roles.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// The option name.
    pub name: &'static str,
    /// In a client profile.
    pub client: Effect,
    /// In a server config.
    pub server: Effect,
}

const I: Effect = Effect::Implemented;
const fn na(s: &'static str) -> Effect {
    Effect::NoEffect(s)
}
const fn always(s: &'static str) -> Effect {
    Effect::Inherent(s)
}
const fn no(s: &'static str) -> Effect {
    Effect::Refused(s)
}
const fn e(name: &'static str, client: Effect, server: Effect) -> Entry {
    Entry {
        name,
        client,
        server,
    }
}

const WINDOWS: Effect = na("a Windows-only option; OpenVPN ignores it on Linux too");
const SERVER_ONLY: Effect =
    no("a server option: it needs 'mode server' (use openvpn-server for this config)");
const CLIENT_SIDE: Effect = na("only a client uses it; OpenVPN ignores it in server mode");
const NO_TAP: Effect = no("tap devices (layer 2) are not supported; use 'dev tun'");
const NO_P2P: Effect = no(
    "point-to-point configs (static 'ifconfig' + 'remote', no 'server'/'client') are not supported yet",
);
const NO_STATIC_KEY: Effect = no(
    "static-key mode ('secret') is deprecated in OpenVPN 2.6 and not supported; use TLS with 'tls-crypt'",
);
const PROXY_RETRY: Effect = na(
    "removed in OpenVPN 2.4 (2.6 accepts it with a warning): a proxy connection is retried like any other; 'connect-retry-max 1' gives the old behaviour",
);
const NO_PKCS11: Effect =
    no("smart cards and PKCS#11 are not supported yet; use 'cert'/'key' files");

/// Every option we know, in the manual's groups. Names not here are not OpenVPN 2.6
/// options we know of, or are ours (`workers`, `metrics-listen`, `layer-toml`).
pub static CATALOG: &[Entry] = &[
    // General and process.
    e("config", I, I),
    e(
        "connection",
        I,
        no("'<connection>' blocks belong in a client profile"),
    ),
    e(
        "mode",
        no("a client profile has no 'mode' (use 'client')"),
        I,
    ),
    e(
        "client",
        I,
        no("'client' makes a client profile: use openvpn-client"),
    ),
    e(
        "pull",
        I,
        no("'pull' belongs in a client profile: use openvpn-client"),
    ),
    e(
        "tls-client",
        I,
        no("'tls-client' belongs in a client profile: use openvpn-client"),
    ),
    e(
        "tls-server",
        no("'tls-server' belongs in a server config: use openvpn-server"),
        I,
    ),
    e("daemon", I, I),
    e("syslog", I, I),
    e("errors-to-stderr", I, I),
    e("log", I, I),
    e("log-append", I, I),
    e("writepid", I, I),
    e("verb", I, I),
    e(
        "mute",
        always("per-packet events are counted, never logged one by one"),
        always("per-packet events are counted, never logged one by one"),
    ),
    e("suppress-timestamps", I, I),
    e("machine-readable-output", I, I),
    e("user", I, I),
    e("group", I, I),
    e(
        "chroot",
        no("'chroot' is not supported by openvpn-client"),
        I,
    ),
    e("cd", I, I),
    e("nice", I, I),
    e(
        "setcon",
        no("SELinux contexts (setcon) are not supported"),
        no("SELinux contexts (setcon) are not supported"),
    ),
    e("mlock", I, I),
    e("status", I, I),
    e("status-version", I, I),
    e("setenv", I, I),
    e("setenv-safe", I, I),
    e("ignore-unknown-option", I, I),
    e("script-security", I, I),
    e(
        "echo",
        na("'echo' only talks to a GUI on the management interface"),
        na("'echo' only talks to a GUI on the management interface"),
    ),
    e(
        "remap-usr1",
        no("'remap-usr1' is not supported yet"),
        no("'remap-usr1' is not supported yet"),
    ),
    e(
        "disable-occ",
        always("no OCC (options consistency) messages are ever sent"),
        always("no OCC (options consistency) messages are ever sent"),
    ),
    e(
        "memstats",
        no("'memstats' is not supported; use the metrics"),
        no("'memstats' is not supported; use metrics-listen"),
    ),
    // Transport.
    e("local", I, I),
    e("remote", I, NO_P2P),
    e("remote-random", I, CLIENT_SIDE),
    e("remote-random-hostname", I, CLIENT_SIDE),
    e("proto", I, I),
    e(
        "proto-force",
        no("'proto-force' is not supported yet"),
        CLIENT_SIDE,
    ),
    e("port", I, I),
    e("lport", I, I),
    e(
        "rport",
        I,
        na("'rport' is the port of a point-to-point 'remote'; a server has none"),
    ),
    e("bind", I, always("a server always binds its port")),
    e(
        "nobind",
        I,
        na("'nobind' only matters to a client; a server always binds its port"),
    ),
    e(
        "float",
        always(
            "a client accepts its server's packets only from the address it connected to (OpenVPN's float is about p2p peers)",
        ),
        always("clients float after authentication (peer-id)"),
    ),
    e("resolv-retry", I, CLIENT_SIDE),
    e("connect-retry", I, CLIENT_SIDE),
    e("connect-retry-max", I, CLIENT_SIDE),
    e("connect-timeout", I, CLIENT_SIDE),
    e("server-poll-timeout", I, CLIENT_SIDE),
    e("persist-remote-ip", I, CLIENT_SIDE),
    e(
        "persist-local-ip",
        always("the local address is resolved once, at start"),
        always("the local address is resolved once, at start"),
    ),
    e("http-proxy", I, CLIENT_SIDE),
    e("http-proxy-option", I, CLIENT_SIDE),
    e("http-proxy-user-pass", I, CLIENT_SIDE),
    e("socks-proxy", I, CLIENT_SIDE),
    e("http-proxy-retry", PROXY_RETRY, PROXY_RETRY),
    e("socks-proxy-retry", PROXY_RETRY, PROXY_RETRY),
    e("explicit-exit-notify", I, I),
    e("passtos", I, no("'passtos' is not supported yet")),
    e(
        "sndbuf",
        always("socket buffers are sized for batched I/O"),
        always("socket buffers are sized for batched I/O"),
    ),
    e(
        "rcvbuf",
        always("socket buffers are sized for batched I/O"),
        always("socket buffers are sized for batched I/O"),
    ),
    e(
        "fast-io",
        always("the data path always batches its writes"),
        always("the data path always batches its writes"),
    ),
    e(
        "multihome",
        always("replies always leave from the address the client sent to"),
        always("replies always leave from the address the client sent to"),
    ),
    e(
        "mark",
        no("'mark' (SO_MARK) is not supported yet"),
        no("'mark' (SO_MARK) is not supported yet"),
    ),
    e(
        "bind-dev",
        no("'bind-dev' (VRF) is not supported yet"),
        no("'bind-dev' (VRF) is not supported yet"),
    ),
    e(
        "socket-flags",
        always("TCP sockets always set TCP_NODELAY, the only flag OpenVPN knows"),
        always("TCP sockets always set TCP_NODELAY, the only flag OpenVPN knows"),
    ),
    e(
        "tcp-nodelay",
        always("TCP sockets always set TCP_NODELAY"),
        always("TCP sockets always set TCP_NODELAY"),
    ),
    e("port-share", SERVER_ONLY, I),
    e(
        "inetd",
        no("inetd mode is not supported"),
        no("inetd mode is not supported"),
    ),
    // Device.
    e("dev", I, I),
    e("dev-type", I, I),
    e("dev-node", I, I),
    e(
        "topology",
        always(
            "the client follows the topology the server pushes; an ifconfig push without it is net30/p2p",
        ),
        I,
    ),
    e(
        "tun-ipv6",
        na("IPv6 on a tun device needs no switch; OpenVPN 2.6 ignores it too"),
        na("IPv6 on a tun device needs no switch; OpenVPN 2.6 ignores it too"),
    ),
    e("tun-mtu", I, I),
    e(
        "tun-mtu-max",
        no("'tun-mtu-max' is not supported yet"),
        no("'tun-mtu-max' is not supported yet"),
    ),
    e(
        "tun-mtu-extra",
        always("read buffers always have room for 64 KiB packets"),
        always("read buffers always have room for 64 KiB packets"),
    ),
    e(
        "link-mtu",
        no("'link-mtu' is deprecated in OpenVPN 2.6 and not supported; use 'tun-mtu'"),
        no("'link-mtu' is deprecated in OpenVPN 2.6 and not supported; use 'tun-mtu'"),
    ),
    e(
        "mtu-disc",
        no("'mtu-disc' is not supported yet"),
        no("'mtu-disc' is not supported yet"),
    ),
    e(
        "mtu-test",
        no("'mtu-test' is not supported"),
        no("'mtu-test' is not supported"),
    ),
    e(
        "fragment",
        no(
            "'fragment' (OpenVPN's own fragmentation) is not supported: the server must use it too, so remove it on both sides and rely on 'mssfix'",
        ),
        no(
            "'fragment' (OpenVPN's own fragmentation) is not supported: its clients must use it too, so remove it on both sides and rely on 'mssfix'",
        ),
    ),
    e("mssfix", I, I),
    e(
        "txqueuelen",
        no("'txqueuelen' is not supported yet: set it with 'ip link set DEV txqueuelen N'"),
        no("'txqueuelen' is not supported yet: set it with 'ip link set DEV txqueuelen N'"),
    ),
    e("lladdr", NO_TAP, NO_TAP),
    e("ifconfig", NO_P2P, I),
    e("ifconfig-ipv6", NO_P2P, I),
    e(
        "ifconfig-noexec",
        no("'ifconfig-noexec' is not supported yet"),
        no("'ifconfig-noexec' is not supported yet"),
    ),
    e(
        "ifconfig-nowarn",
        always("tunnel addresses are never compared with the peer's"),
        always("tunnel addresses are never compared with the peer's"),
    ),
    e("persist-tun", I, I),
    e(
        "persist-key",
        always("keys are kept in memory across restarts"),
        always("keys are kept in memory across restarts"),
    ),
    e(
        "disable-dco",
        always("the data path runs in user space (no kernel DCO)"),
        always("the data path runs in user space (no kernel DCO)"),
    ),
    e(
        "enable-dco",
        always("the data path runs in user space (no kernel DCO)"),
        always("the data path runs in user space (no kernel DCO)"),
    ),
    e(
        "mktun",
        no("'mktun' is a standalone command; use 'ip tuntap add'"),
        no("'mktun' is a standalone command; use 'ip tuntap add'"),
    ),
    e(
        "rmtun",
        no("'rmtun' is a standalone command; use 'ip tuntap del'"),
        no("'rmtun' is a standalone command; use 'ip tuntap del'"),
    ),
    e(
        "shaper",
        no("'shaper' is not supported yet; use tc"),
        no("'shaper' is not supported yet; use tc"),
    ),
    e("server-bridge", NO_TAP, NO_TAP),
    e("vlan-tagging", NO_TAP, NO_TAP),
    e("vlan-accept", NO_TAP, NO_TAP),
    e("vlan-pvid", NO_TAP, NO_TAP),
    e("vlan-tag", NO_TAP, NO_TAP),
    // Routes and scripts.
    e("route", I, I),
    e("route-ipv6", I, I),
    e(
        "route-gateway",
        I,
        no("'route-gateway' in a server config is not supported yet"),
    ),
    e(
        "route-ipv6-gateway",
        no("'route-ipv6-gateway' is not supported yet by openvpn-client"),
        no("'route-ipv6-gateway' in a server config is not supported yet"),
    ),
    e(
        "route-metric",
        I,
        no("'route-metric' in a server config is not supported yet"),
    ),
    e(
        "route-delay",
        I,
        no("'route-delay' in a server config is not supported yet"),
    ),
    e(
        "route-up",
        I,
        no("'route-up' in a server config is not supported yet"),
    ),
    e(
        "route-pre-down",
        I,
        no("'route-pre-down' in a server config is not supported yet"),
    ),
    e(
        "route-noexec",
        I,
        no("'route-noexec' in a server config is not supported yet"),
    ),
    e("route-nopull", I, CLIENT_SIDE),
    e(
        "allow-pull-fqdn",
        no("'allow-pull-fqdn' is not supported yet by openvpn-client"),
        CLIENT_SIDE,
    ),
    e(
        "redirect-gateway",
        I,
        na("'redirect-gateway' only acts on a client; a server pushes it with 'push'"),
    ),
    e(
        "redirect-private",
        no("'redirect-private' is not supported yet by openvpn-client"),
        na("'redirect-private' only acts on a client; a server pushes it with 'push'"),
    ),
    e(
        "block-ipv6",
        I,
        no("'block-ipv6' in a server config is not supported yet"),
    ),
    e("route-method", WINDOWS, WINDOWS),
    e(
        "max-routes",
        no("'max-routes' is not supported yet by openvpn-client"),
        no("'max-routes' in a server config is not supported yet"),
    ),
    e(
        "allow-recursive-routing",
        no("'allow-recursive-routing' is not supported yet by openvpn-client"),
        no("'allow-recursive-routing' in a server config is not supported yet"),
    ),
    e("up", I, I),
    e(
        "up-delay",
        no("'up-delay' is not supported yet"),
        no("'up-delay' is not supported yet"),
    ),
    e(
        "up-restart",
        I,
        no("'up-restart' in a server config is not supported yet"),
    ),
    e("down", I, I),
    e(
        "down-pre",
        I,
        no("'down-pre' in a server config is not supported yet"),
    ),
    e(
        "ipchange",
        I,
        na("'ipchange' runs when a point-to-point peer's address changes; a server has none"),
    ),
    e("plugin", I, I),
    // Keepalive and timers.
    e("ping", I, I),
    e("ping-restart", I, I),
    e(
        "ping-exit",
        I,
        no("'ping-exit' in a server config is not supported yet"),
    ),
    e(
        "ping-timer-rem",
        always("the ping timers run only with a known remote, and every peer here has one"),
        always("the ping timers run only with a known remote, and every client has one"),
    ),
    e("keepalive", I, I),
    e("inactive", I, I),
    e(
        "session-timeout",
        no("'session-timeout' is not supported yet"),
        no("'session-timeout' is not supported yet"),
    ),
    // Data channel crypto.
    e("cipher", I, I),
    e("data-ciphers", I, I),
    e("ncp-ciphers", I, I),
    e("data-ciphers-fallback", I, I),
    e(
        "ncp-disable",
        no("'ncp-disable' was removed in OpenVPN 2.6"),
        no("'ncp-disable' was removed in OpenVPN 2.6"),
    ),
    e("auth", I, I),
    e(
        "keysize",
        no("'keysize' was removed in OpenVPN 2.6"),
        no("'keysize' was removed in OpenVPN 2.6"),
    ),
    e("secret", NO_STATIC_KEY, NO_STATIC_KEY),
    e("replay-window", I, I),
    e(
        "mute-replay-warnings",
        always("replayed packets are counted, never logged one by one"),
        always("replayed packets are counted, never logged one by one"),
    ),
    e(
        "replay-persist",
        no("'replay-persist' only applies to static-key mode, which is not supported"),
        no("'replay-persist' only applies to static-key mode, which is not supported"),
    ),
    e(
        "no-iv",
        no("'no-iv' was removed in OpenVPN 2.6"),
        no("'no-iv' was removed in OpenVPN 2.6"),
    ),
    e(
        "engine",
        na("OpenSSL engines do not apply: the TLS library is rustls"),
        na("OpenSSL engines do not apply: the TLS library is rustls"),
    ),
    e(
        "providers",
        no("OpenSSL providers are not supported (the TLS library is rustls)"),
        no("OpenSSL providers are not supported (the TLS library is rustls)"),
    ),
    e(
        "prng",
        no("'prng' was removed in OpenVPN 2.6"),
        no("'prng' was removed in OpenVPN 2.6"),
    ),
    e(
        "use-prediction-resistance",
        always("the random generator is the operating system's"),
        always("the random generator is the operating system's"),
    ),
    e("key-direction", I, I),
    e(
        "key-method",
        always("key method 2 is the only one"),
        always("key method 2 is the only one"),
    ),
    e(
        "opt-verify",
        no("'opt-verify' was removed in OpenVPN 2.6"),
        no("'opt-verify' was removed in OpenVPN 2.6"),
    ),
    e(
        "force-tls-key-material-export",
        no("'force-tls-key-material-export' is not supported yet"),
        no("'force-tls-key-material-export' is not supported yet"),
    ),
    // TLS.
    e("ca", I, I),
    e("capath", I, I),
    e("cert", I, I),
    e("extra-certs", I, I),
    e("key", I, I),
    e(
        "dh",
        na("only a TLS server uses Diffie-Hellman parameters"),
        I,
    ),
    e("pkcs12", I, I),
    e("pkcs11-providers", NO_PKCS11, NO_PKCS11),
    e("pkcs11-id", NO_PKCS11, NO_PKCS11),
    e("pkcs11-id-management", NO_PKCS11, NO_PKCS11),
    e("cryptoapicert", WINDOWS, WINDOWS),
    e(
        "management-external-key",
        no("'management-external-key' is not supported yet"),
        no("'management-external-key' is not supported yet"),
    ),
    e(
        "management-external-cert",
        no("'management-external-cert' is not supported yet"),
        no("'management-external-cert' is not supported yet"),
    ),
    e("tls-version-min", I, I),
    e("tls-version-max", I, I),
    e("tls-cipher", I, I),
    e("tls-ciphersuites", I, I),
    e("tls-groups", I, I),
    e("ecdh-curve", I, I),
    e("tls-cert-profile", I, I),
    e(
        "tls-timeout",
        no(
            "'tls-timeout' is not supported yet: control packets are retransmitted on their own adaptive timer",
        ),
        no(
            "'tls-timeout' is not supported yet: control packets are retransmitted on their own adaptive timer",
        ),
    ),
    e("tls-auth", I, I),
    e("tls-crypt", I, I),
    e("tls-crypt-v2", I, I),
    e("tls-crypt-v2-verify", SERVER_ONLY, I),
    e(
        "tls-crypt-v2-max-age",
        SERVER_ONLY,
        no("'tls-crypt-v2-max-age' is not supported yet"),
    ),
    e(
        "tls-exit",
        I,
        no("'tls-exit' in a server config is not supported yet"),
    ),
    e("tls-verify", I, I),
    e(
        "tls-export-cert",
        no("'tls-export-cert' is not supported yet"),
        no("'tls-export-cert' is not supported yet"),
    ),
    e("verify-x509-name", I, I),
    e(
        "verify-hash",
        no("'verify-hash' is not supported yet"),
        no("'verify-hash' is not supported yet"),
    ),
    e("peer-fingerprint", I, I),
    e(
        "x509-track",
        no("'x509-track' is not supported yet"),
        no("'x509-track' is not supported yet"),
    ),
    e(
        "x509-username-field",
        SERVER_ONLY,
        no("'x509-username-field' is not supported yet: the common name is the username"),
    ),
    e("ns-cert-type", I, I),
    e("remote-cert-tls", I, I),
    e("remote-cert-ku", I, I),
    e("remote-cert-eku", I, I),
    e("crl-verify", I, I),
    e(
        "single-session",
        no("'single-session' is not supported yet"),
        no("'single-session' is not supported yet"),
    ),
    e("hand-window", I, I),
    e(
        "tran-window",
        no("'tran-window' is not supported yet by openvpn-client"),
        I,
    ),
    e("reneg-sec", I, I),
    e("reneg-bytes", I, I),
    e("reneg-pkts", I, I),
    e("askpass", I, I),
    e("auth-nocache", I, CLIENT_SIDE),
    // Client authentication and push.
    e("auth-user-pass", I, SERVER_ONLY_CLIENT_OPTION),
    e("auth-retry", I, CLIENT_SIDE),
    e("static-challenge", I, CLIENT_SIDE),
    e(
        "auth-token",
        no("'auth-token' in a profile is not supported yet (it is accepted when pushed)"),
        CLIENT_SIDE,
    ),
    e(
        "auth-token-user",
        no("'auth-token-user' in a profile is not supported yet (it is accepted when pushed)"),
        CLIENT_SIDE,
    ),
    e("pull-filter", I, CLIENT_SIDE),
    e("push-peer-info", I, CLIENT_SIDE),
    e(
        "dhcp-option",
        I,
        na("'dhcp-option' only acts on a client; a server pushes it with 'push'"),
    ),
    e(
        "dns",
        no(
            "'dns' in a profile is not supported yet (a pushed 'dns' is applied); use dhcp-option DNS",
        ),
        na("'dns' only acts on a client; a server pushes it with 'push'"),
    ),
    e("dns-updown", I, CLIENT_SIDE),
    e("block-outside-dns", WINDOWS, WINDOWS),
    e("register-dns", WINDOWS, WINDOWS),
    e("ip-win32", WINDOWS, WINDOWS),
    e("dhcp-renew", WINDOWS, WINDOWS),
    e("dhcp-release", WINDOWS, WINDOWS),
    e("dhcp-pre-release", WINDOWS, WINDOWS),
    e("tap-sleep", WINDOWS, WINDOWS),
    e("show-net-up", WINDOWS, WINDOWS),
    e("pause-exit", WINDOWS, WINDOWS),
    e("service", WINDOWS, WINDOWS),
    e("allow-nonadmin", WINDOWS, WINDOWS),
    e("windows-driver", WINDOWS, WINDOWS),
    e("win-sys", WINDOWS, WINDOWS),
    e("msg-channel", WINDOWS, WINDOWS),
    e(
        "block-ipv4",
        I,
        no("'block-ipv4' in a server config is not supported yet"),
    ),
    // Server mode.
    e("server", SERVER_ONLY, I),
    e("server-ipv6", SERVER_ONLY, I),
    e("ifconfig-pool", SERVER_ONLY, I),
    e("ifconfig-ipv6-pool", SERVER_ONLY, I),
    e("ifconfig-pool-persist", SERVER_ONLY, I),
    e(
        "ifconfig-push",
        SERVER_ONLY,
        no(
            "'ifconfig-push' belongs in a client-config-dir file or a client-connect script's output",
        ),
    ),
    e(
        "ifconfig-ipv6-push",
        SERVER_ONLY,
        no(
            "'ifconfig-ipv6-push' belongs in a client-config-dir file or a client-connect script's output",
        ),
    ),
    e(
        "iroute",
        SERVER_ONLY,
        no("'iroute' belongs in a client-config-dir file or a client-connect script's output"),
    ),
    e(
        "iroute-ipv6",
        SERVER_ONLY,
        no("'iroute-ipv6' belongs in a client-config-dir file or a client-connect script's output"),
    ),
    e("push", SERVER_ONLY, I),
    e(
        "push-reset",
        SERVER_ONLY,
        no("'push-reset' belongs in a client-config-dir file or a client-connect script's output"),
    ),
    e(
        "push-remove",
        SERVER_ONLY,
        no("'push-remove' belongs in a client-config-dir file or a client-connect script's output"),
    ),
    e("client-to-client", SERVER_ONLY, I),
    e("duplicate-cn", SERVER_ONLY, I),
    e("client-config-dir", SERVER_ONLY, I),
    e("ccd-exclusive", SERVER_ONLY, I),
    e("tmp-dir", SERVER_ONLY, no("'tmp-dir' is not supported yet")),
    e(
        "hash-size",
        SERVER_ONLY,
        always("client tables grow as needed"),
    ),
    e(
        "bcast-buffers",
        SERVER_ONLY,
        always("client-to-client packets are forwarded without a broadcast queue"),
    ),
    e("tcp-queue-limit", SERVER_ONLY, I),
    e("max-clients", SERVER_ONLY, I),
    e(
        "max-routes-per-client",
        SERVER_ONLY,
        no("'max-routes-per-client' is not supported yet"),
    ),
    e(
        "stale-routes-check",
        SERVER_ONLY,
        no("'stale-routes-check' is not supported yet"),
    ),
    e(
        "connect-freq",
        SERVER_ONLY,
        no("'connect-freq' is not supported yet"),
    ),
    e(
        "connect-freq-initial",
        SERVER_ONLY,
        no("'connect-freq-initial' is not supported yet"),
    ),
    e("learn-address", SERVER_ONLY, I),
    e("auth-user-pass-verify", SERVER_ONLY, I),
    e("auth-user-pass-optional", SERVER_ONLY, I),
    e("auth-gen-token", SERVER_ONLY, I),
    e("auth-gen-token-secret", SERVER_ONLY, I),
    e("client-connect", SERVER_ONLY, I),
    e("client-disconnect", SERVER_ONLY, I),
    e(
        "client-crresponse",
        SERVER_ONLY,
        no("'client-crresponse' is not supported yet"),
    ),
    e("username-as-common-name", SERVER_ONLY, I),
    e(
        "compat-names",
        SERVER_ONLY,
        no("'compat-names' was removed in OpenVPN 2.5"),
    ),
    e("verify-client-cert", SERVER_ONLY, I),
    e(
        "client-cert-not-required",
        SERVER_ONLY,
        no("'client-cert-not-required' was removed in OpenVPN 2.5: use 'verify-client-cert none'"),
    ),
    // Compression.
    e("compress", I, I),
    e("comp-lzo", I, I),
    e(
        "comp-noadapt",
        always("data is never compressed, so there is nothing to adapt"),
        always("data is never compressed, so there is nothing to adapt"),
    ),
    e("allow-compression", I, I),
    // Management.
    e("management", I, I),
    e(
        "management-client",
        no("'management-client' is not supported yet"),
        no("'management-client' is not supported yet"),
    ),
    e("management-client-auth", SERVER_ONLY, I),
    e(
        "management-client-pf",
        SERVER_ONLY,
        no("'management-client-pf' was removed in OpenVPN 2.6"),
    ),
    e("management-hold", I, I),
    e("management-query-passwords", I, I),
    e(
        "management-query-proxy",
        no("'management-query-proxy' is not supported yet"),
        CLIENT_SIDE,
    ),
    e(
        "management-query-remote",
        no("'management-query-remote' is not supported yet"),
        CLIENT_SIDE,
    ),
    e("management-forget-disconnect", I, I),
    e("management-signal", I, I),
    e("management-up-down", I, I),
    e("management-log-cache", I, I),
    e(
        "management-client-user",
        no("'management-client-user' is not supported yet"),
        no("'management-client-user' is not supported yet"),
    ),
    e(
        "management-client-group",
        no("'management-client-group' is not supported yet"),
        no("'management-client-group' is not supported yet"),
    ),
];

const SERVER_ONLY_CLIENT_OPTION: Effect =
    na("'auth-user-pass' is what a client sends; a server asks with 'auth-user-pass-verify'");

/// The entry of `name`, if it is an OpenVPN option we know.
pub fn lookup(name: &str) -> Option<&'static Entry> {
    CATALOG.iter().find(|e| e.name == name)
}

/// The effect of `name` in `role` (`None`: not an option we know).
pub fn effect(name: &str, role: Role) -> Option<Effect> {
    lookup(name).map(|e| match role {
        Role::Client => e.client,
        Role::Server => e.server,
    })
}

/// What a loader does with one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Screened {
    /// Interpret it (the role implements it).
    Handle,
    /// Skip it; log this line once.
    Note(String),
    /// Skip it silently: ours always behaves that way.
    Skip,
}

/// The names listed by `ignore-unknown-option` lines (OpenVPN reads them before the
/// options they excuse, wherever they stand in the file).
pub fn ignored_unknown(lines: &[OptionLine]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.name == "ignore-unknown-option")
        .flat_map(|l| l.args.iter().cloned())
        .collect()
}

/// Decides what happens to `o` in `role` before the loader's own match: refused and
/// no-effect options end here.
pub fn screen(o: &OptionLine, role: Role) -> Result<Screened, LoadError> {
    match effect(&o.name, role) {
        None | Some(Effect::Implemented) => Ok(Screened::Handle),
        Some(Effect::Inherent(_)) => Ok(Screened::Skip),
        Some(Effect::NoEffect(why)) => Ok(Screened::Note(format!(
            "{}: '{}' has no effect: {why}",
            crate::options::describe_location(o),
            o.name
        ))),
        Some(Effect::Refused(why)) => Err(invalid(o, why)),
    }
}

/// The error (or, for a name listed by `ignore-unknown-option`, the note) for an option the
/// role's loader does not handle.
pub fn unhandled(o: &OptionLine, role: Role, ignored: &[String]) -> Result<String, LoadError> {
    if ignored.iter().any(|n| n == &o.name) {
        return Ok(format!(
            "{}: ignoring unknown option '{}' (ignore-unknown-option)",
            crate::options::describe_location(o),
            o.name
        ));
    }
    let binary = match role {
        Role::Client => "openvpn-client",
        Role::Server => "openvpn-server",
    };
    Err(match lookup(&o.name) {
        Some(_) => invalid(
            o,
            format!("option '{}' is not supported by {binary}", o.name),
        ),
        None => invalid(
            o,
            format!(
                "unknown option '{}' (not an OpenVPN 2.6 option; 'ignore-unknown-option {}' skips it)",
                o.name, o.name
            ),
        ),
    })
}

/// The options the catalog calls implemented in `role` that the role's loader does not reach:
/// `load` gets a config text ending in `NAME 1` for each of them, and an option counts as not
/// reached when the loader answers with [`unhandled`]'s "not supported" error (rejecting the
/// dummy argument is fine). Each binary's tests require this to be empty.
pub fn implemented_but_unhandled<T>(
    role: Role,
    load: impl Fn(&str) -> Result<T, LoadError>,
) -> Vec<&'static str> {
    let binary = match role {
        Role::Client => "openvpn-client",
        Role::Server => "openvpn-server",
    };
    let not_supported = format!("is not supported by {binary}");
    CATALOG
        .iter()
        .filter(|e| e.name != "config" && effect(e.name, role) == Some(Effect::Implemented))
        .filter(|e| {
            load(&format!("{} 1\n", e.name))
                .is_err_and(|err| err.to_string().contains(&not_supported))
        })
        .map(|e| e.name)
        .collect()
}

/// Options of openvpn-rs's own (not OpenVPN's), implemented by the named role's loader.
pub const OURS: &[&str] = &["workers", "metrics-listen", "layer-toml"];

/// `--check-config`: one line per option line, saying what it does in `role`.
pub fn report(lines: &[OptionLine], role: Role) -> String {
    use std::fmt::Write as _;
    let ignored = ignored_unknown(lines);
    let mut out = String::new();
    for o in lines {
        let at = crate::options::describe_location(o);
        let (label, why) = match effect(&o.name, role) {
            Some(eff) => (eff.label(), eff.reason()),
            None if OURS.contains(&o.name.as_str()) => {
                ("implemented", Some("an openvpn-rs option"))
            }
            None if ignored.contains(&o.name) => {
                ("ignored", Some("listed by ignore-unknown-option"))
            }
            None => ("unknown", Some("not an OpenVPN 2.6 option")),
        };
        let _ = match why {
            Some(why) => writeln!(out, "{at}: {:<24} {label}: {why}", o.name),
            None => writeln!(out, "{at}: {:<24} {label}", o.name),
        };
    }
    out
}

/// `docs/options.md`: every option in the catalog with its effect in each role (the unit test
/// `docs_options_md_is_current` keeps the committed file equal to this).
pub fn markdown() -> String {
    use std::fmt::Write as _;
    let cell = |e: Effect| match e.reason() {
        Some(why) => format!("{}: {}", e.label(), why.replace('|', "\\|")),
        None => e.label().to_owned(),
    };
    let mut out = String::from(
        "# What each OpenVPN 2.6 option does in openvpn-rs\n\n\
         Generated from `crates/openvpn-control/src/options/catalog.rs` (the table both binaries \
         and `--check-config` use; `cargo test -p openvpn-control docs_options_md` checks this file \
         is current, `OVRS_WRITE_DOCS=1` rewrites it). *implemented*: OpenVPN's meaning; \
         *no effect on Linux*: accepted with one logged line, because OpenVPN itself does nothing \
         with it on Linux or in that role; *refused*: the config is rejected with the line number \
         and this reason.\n\n| option | client (`openvpn-client`) | server (`openvpn-server`) |\n|---|---|---|\n",
    );
    let mut entries: Vec<&Entry> = CATALOG.iter().collect();
    entries.sort_by_key(|e| e.name);
    for e in entries {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            e.name,
            cell(e.client),
            cell(e.server)
        );
    }
    for name in OURS {
        let _ = writeln!(
            out,
            "| `{name}` | implemented: an openvpn-rs option | implemented: an openvpn-rs option |"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::parse_config;

    #[test]
    fn report_names_each_line_and_its_effect() {
        let lines = parse_config(
            "client\nroute-method exe\nfragment 1300\nfrob 1\nignore-unknown-option frob\n",
        )
        .unwrap();
        let r = report(&lines, Role::Client);
        assert!(
            r.contains("config line 1: client") && r.contains("implemented"),
            "{r}"
        );
        assert!(
            r.contains("route-method") && r.contains("no effect on Linux"),
            "{r}"
        );
        assert!(r.contains("fragment") && r.contains("refused"), "{r}");
        assert!(r.contains("frob") && r.contains("ignored"), "{r}");
    }

    #[test]
    fn docs_options_md_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/options.md");
        let want = markdown();
        if std::env::var_os("OVRS_WRITE_DOCS").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/options.md is stale: run OVRS_WRITE_DOCS=1 cargo test -p openvpn-control docs_options_md"
        );
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = CATALOG.iter().map(|e| e.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "an option is listed twice");
    }

    #[test]
    fn security_options_are_never_no_effect() {
        for name in [
            "tls-cipher",
            "tls-ciphersuites",
            "tls-groups",
            "ecdh-curve",
            "tls-cert-profile",
            "ns-cert-type",
            "tls-verify",
            "tls-crypt-v2-verify",
            "capath",
            "remote-cert-tls",
            "verify-x509-name",
            "crl-verify",
            "verify-client-cert",
            "auth-user-pass-verify",
        ] {
            for role in [Role::Client, Role::Server] {
                let Some(eff) = effect(name, role) else {
                    panic!("{name} missing");
                };
                assert!(
                    !matches!(eff, Effect::NoEffect(_) | Effect::Inherent(_)),
                    "{name} in {role:?} must be implemented or refused"
                );
            }
        }
    }

    #[test]
    fn screening_refuses_with_the_line_and_notes_no_ops() {
        let lines = parse_config("client\nroute-method exe\nfragment 1300\nfrob 1\n").unwrap();
        assert_eq!(screen(&lines[0], Role::Client).unwrap(), Screened::Handle);
        match screen(&lines[1], Role::Client).unwrap() {
            Screened::Note(n) => assert!(n.contains("line 2") && n.contains("Windows"), "{n}"),
            other => panic!("{other:?}"),
        }
        let e = screen(&lines[2], Role::Client).unwrap_err().to_string();
        assert!(e.contains("config line 3") && e.contains("mssfix"), "{e}");
        let e = unhandled(&lines[3], Role::Client, &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 4") && e.contains("unknown option 'frob'"),
            "{e}"
        );
        let n = unhandled(&lines[3], Role::Client, &["frob".into()]).unwrap();
        assert!(n.contains("ignoring unknown option 'frob'"), "{n}");
    }
}
