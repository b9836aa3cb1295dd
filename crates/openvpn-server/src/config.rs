//! The server's configuration, read from OpenVPN 2.6 server config files and `--option`
//! command-line arguments. Every option is implemented, a documented no-op, or rejected with
//! an error naming its line.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use openvpn_control::loading::{self, arg, file_or_inline, invalid as err, number as parse_num};
use openvpn_control::options::catalog::{self, Role, Screened};
use openvpn_control::options::{OptionLine, OptionSource};
use openvpn_control::server::CompressionConfig;

pub use crate::pool::Topology;

/// Errors while loading the configuration (shared with the other binary's loader).
pub use openvpn_control::loading::LoadError as ConfigError;

/// Transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP (server side).
    Tcp,
}

/// Address family restriction from `proto udp4/udp6/…`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4 and IPv6 (one dual-stack socket).
    Any,
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
}

pub use openvpn_control::tls_options::TlsWrap;

/// `verify-client-cert`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyClientCert {
    /// Client certificates required (default).
    Require,
    /// Checked if sent.
    Optional,
    /// Not requested.
    None,
}

/// Everything the server runs with.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Transport.
    pub transport: Transport,
    /// Family restriction.
    pub family: Family,
    /// `local`.
    pub local: Option<String>,
    /// `port` / `lport`.
    pub port: u16,
    /// `dev` name (`tun` = kernel chooses `tunN`).
    pub dev: String,
    /// `server NET MASK`.
    pub server_v4: Option<(Ipv4Addr, Ipv4Addr)>,
    /// `server-ipv6 NET/BITS`.
    pub server_v6: Option<(Ipv6Addr, u8)>,
    /// The TLS options (`ca`, `cert`, `key`, `crl-verify`, `tls-cipher`, `remote-cert-tls`, …).
    pub tls: openvpn_control::tls_options::TlsOptions,
    /// `data-ciphers`.
    pub data_ciphers: Vec<String>,
    /// `data-ciphers-fallback`.
    pub data_ciphers_fallback: Option<String>,
    /// `auth` digest name (CBC ciphers and tls-auth).
    pub auth: String,
    /// `verify-client-cert`.
    pub verify_client_cert: VerifyClientCert,
    /// `ping` seconds.
    pub ping: Option<u32>,
    /// `ping-restart` seconds.
    pub ping_restart: Option<u32>,
    /// `reneg-sec`.
    pub reneg_sec: u32,
    /// `reneg-bytes` (0 = off).
    pub reneg_bytes: u64,
    /// `reneg-pkts` (0 = off).
    pub reneg_pkts: u64,
    /// `hand-window`.
    pub hand_window: u32,
    /// `tran-window`.
    pub tran_window: u32,
    /// `push` options in order (including those `server`/`keepalive`/`topology` generate).
    pub push: Vec<String>,
    /// `route NET MASK` (server-side routes into the tun).
    pub routes: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// `route-ipv6 NET/BITS`.
    pub routes_v6: Vec<(Ipv6Addr, u8)>,
    /// `client-to-client`.
    pub client_to_client: bool,
    /// `duplicate-cn`.
    pub duplicate_cn: bool,
    /// `max-clients`.
    pub max_clients: u32,
    /// `workers N` (ours, not OpenVPN's): clients are spread over N worker tasks, each with
    /// its own UDP socket (SO_REUSEPORT) and core; 1 (the default) is one core for all.
    pub workers: u32,
    /// `explicit-exit-notify` (server: send RESTART to clients on shutdown).
    pub explicit_exit_notify: Option<u32>,
    /// `tun-mtu`.
    pub tun_mtu: u16,
    /// `mssfix` (0 = off).
    pub mssfix: u16,
    /// `setenv NAME VALUE`.
    pub setenv: Vec<(String, String)>,
    /// `plugin MODULE [ARGS…]` in config order: the module as written (see
    /// `openvpn_plugin::resolve_path`) and its arguments (a single init string is split into
    /// words, as OpenVPN does).
    pub plugins: Vec<(String, Vec<String>)>,
    /// `user`.
    pub user: Option<String>,
    /// `group`.
    pub group: Option<String>,
    /// `cd`, `nice`, `mlock` (applied at start-up).
    pub process: openvpn_control::process_options::ProcessOptions,
    /// `daemon [name]`.
    pub daemon: bool,
    /// `writepid FILE`.
    pub writepid: Option<PathBuf>,
    /// `log FILE` / `log-append FILE` (true = append).
    pub log: Option<(PathBuf, bool)>,
    /// `verb`.
    pub verb: u8,
    /// `status FILE [seconds]`.
    pub status: Option<(PathBuf, u32)>,
    /// `status-version`.
    pub status_version: u8,
    /// `replay-window N [T]`.
    pub replay_window: (u32, u32),
    /// `auth-user-pass-verify CMD via-file|via-env` (true = via-file).
    pub auth_user_pass_verify: Option<(String, bool)>,
    /// `client-connect CMD`.
    pub client_connect: Option<String>,
    /// `client-disconnect CMD`.
    pub client_disconnect: Option<String>,
    /// `script-security N`.
    pub script_security: u8,
    /// `username-as-common-name`.
    pub username_as_common_name: bool,
    /// `client-config-dir DIR`.
    pub client_config_dir: Option<PathBuf>,
    /// `ccd-exclusive`.
    pub ccd_exclusive: bool,
    /// `auth-user-pass-optional`.
    pub auth_user_pass_optional: bool,
    /// `compress` / `comp-lzo` (clients are pushed the stub framing; a real algorithm's
    /// packets from clients are decompressed, never sent).
    pub compression: CompressionConfig,
    /// `allow-compression no|asym|yes` (`None`: 2.6's default for `compression`).
    pub allow_compression: Option<openvpn_control::compression::AllowCompression>,
    /// `management IP PORT [pw-file]` / `management PATH unix [pw-file]`.
    pub management: Option<ManagementConfig>,
    /// `management-client-auth`: the management client approves every client.
    pub management_client_auth: bool,
    /// `management-hold`: no clients until `hold release`.
    pub management_hold: bool,
    /// `management-log-cache N` (log lines kept for `log all`).
    pub management_log_cache: usize,
    /// `metrics-listen IP:PORT` (ours): Prometheus `GET /metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// `auth-gen-token [lifetime] [renewal] [external-auth]`.
    pub auth_gen_token: Option<AuthGenToken>,
    /// `auth-gen-token-secret FILE` (parsed key).
    pub auth_gen_token_secret: Option<crate::auth_token::TokenKey>,
    /// `ifconfig-pool-persist FILE [seconds]` (seconds: 0 = read only, written at shutdown).
    pub ifconfig_pool_persist: Option<(PathBuf, u32)>,
    /// `learn-address CMD`.
    pub learn_address: Option<String>,
    /// `up CMD`: run after the tun device is configured (as root, before user/group).
    pub up: Option<String>,
    /// `down CMD`: run after the tun device is closed (as the unprivileged user if
    /// user/group dropped privileges, as in OpenVPN).
    pub down: Option<String>,
    /// `ifconfig-pool START END` of the explicit server form (without `server`).
    pub pool_v4: Option<(Ipv4Addr, Ipv4Addr)>,
    /// `ifconfig-ipv6-pool START/BITS` of the explicit server form.
    pub pool_v6_start: Option<Ipv6Addr>,
    /// `port-share HOST PORT`: TCP connections that are not OpenVPN go to HOST:PORT.
    pub port_share: Option<(String, u16)>,
    /// `chroot DIR`: the process's root after set-up (before `user`/`group`); files read
    /// later (CRL on SIGHUP, client-config-dir, scripts) are looked up inside it.
    pub chroot: Option<PathBuf>,
    /// `inactive N [BYTES]`: a client whose tunnel carries fewer than BYTES (default 0: no
    /// packet) in N seconds is closed (OpenVPN's meaning in server mode: per client instance).
    pub inactive: Option<(u32, u64)>,
    /// `tls-crypt-v2-verify CMD`: run for each client key's metadata before the handshake.
    pub tls_crypt_v2_verify: Option<String>,
    /// `tcp-queue-limit N`: packets queued to one TCP client before more are dropped (ours
    /// is 256 when absent; OpenVPN's default is 64).
    pub tcp_queue_limit: Option<usize>,
    /// `topology` (net30 when absent, as in OpenVPN).
    pub topology: Topology,
    /// `persist-tun`: a SIGUSR1 restart keeps the tun device (and its addresses) open.
    pub persist_tun: bool,
    /// `syslog [NAME]` (the program name, default `openvpn`).
    pub syslog: Option<String>,
    /// `errors-to-stderr`.
    pub errors_to_stderr: bool,
    /// `suppress-timestamps`.
    pub suppress_timestamps: bool,
    /// The `ifconfig-pool-persist` file's text when the config was read (read then, as
    /// root, so that the core does no file I/O and an unprivileged server still has it).
    pub pool_persist_seed: Option<String>,
    /// One line each for options accepted without effect here (logged at start-up).
    pub notices: Vec<String>,
}

/// `auth-gen-token` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthGenToken {
    /// Seconds a token is valid after the first authentication (0 = as long as renewed).
    pub lifetime: u64,
    /// Renewal interval (`None` = `reneg-sec`).
    pub renewal: Option<u64>,
    /// `external-auth`: every token attempt also goes through the auth script / management
    /// interface, with `session_state` in its environment.
    pub external_auth: bool,
}

/// Where the management interface listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManagementListen {
    /// TCP host and port.
    Tcp(String, u16),
    /// Unix domain socket path.
    Unix(PathBuf),
}

/// `management` option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagementConfig {
    /// Listen address.
    pub listen: ManagementListen,
    /// Password file (first line is the password).
    pub password_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            transport: Transport::Udp,
            family: Family::Any,
            local: None,
            port: 1194,
            dev: "tun".into(),
            server_v4: None,
            server_v6: None,
            tls: Default::default(),
            data_ciphers: vec![
                "AES-256-GCM".into(),
                "AES-128-GCM".into(),
                "CHACHA20-POLY1305".into(),
            ],
            data_ciphers_fallback: None,
            auth: "SHA1".into(),
            verify_client_cert: VerifyClientCert::Require,
            ping: None,
            ping_restart: None,
            reneg_sec: 3600,
            reneg_bytes: 0,
            reneg_pkts: 0,
            hand_window: 60,
            tran_window: 3600,
            push: Vec::new(),
            routes: Vec::new(),
            routes_v6: Vec::new(),
            client_to_client: false,
            duplicate_cn: false,
            max_clients: 1024,
            workers: 1,
            explicit_exit_notify: None,
            tun_mtu: 1500,
            mssfix: 1492,
            setenv: Vec::new(),
            plugins: Vec::new(),
            user: None,
            group: None,
            process: Default::default(),
            daemon: false,
            writepid: None,
            log: None,
            verb: 1,
            status: None,
            status_version: 1,
            replay_window: (64, 15),
            auth_user_pass_verify: None,
            client_connect: None,
            client_disconnect: None,
            script_security: 1,
            username_as_common_name: false,
            client_config_dir: None,
            ccd_exclusive: false,
            auth_user_pass_optional: false,
            compression: CompressionConfig::None,
            allow_compression: None,
            management: None,
            management_client_auth: false,
            management_hold: false,
            management_log_cache: 1000,
            metrics_listen: None,
            auth_gen_token: None,
            auth_gen_token_secret: None,
            ifconfig_pool_persist: None,
            learn_address: None,
            persist_tun: false,
            topology: Topology::Net30,
            tcp_queue_limit: None,
            tls_crypt_v2_verify: None,
            inactive: None,
            chroot: None,
            port_share: None,
            pool_v4: None,
            pool_v6_start: None,
            up: None,
            down: None,
            syslog: None,
            errors_to_stderr: false,
            suppress_timestamps: false,
            pool_persist_seed: None,
            notices: Vec::new(),
        }
    }
}

fn ipv4(o: &OptionLine, i: usize) -> Result<Ipv4Addr, ConfigError> {
    let a = arg(o, i)?;
    a.parse()
        .map_err(|_| err(o, format!("'{a}' is not an IPv4 address")))
}

fn ipv6_prefix(o: &OptionLine, i: usize) -> Result<(Ipv6Addr, u8), ConfigError> {
    let a = arg(o, i)?;
    let (addr, bits) = a.split_once('/').unwrap_or((a, "128"));
    let addr: Ipv6Addr = addr
        .parse()
        .map_err(|_| err(o, format!("'{a}' is not an IPv6 address/prefix")))?;
    let bits: u8 = bits
        .parse()
        .ok()
        .filter(|b| *b <= 128)
        .ok_or_else(|| err(o, format!("bad prefix length in '{a}'")))?;
    Ok((addr, bits))
}

/// Loads options from a config file text plus command-line options (which come after the
/// file and override it). `base` resolves relative paths.
pub fn load(lines: &[OptionLine], base: &Path) -> Result<ServerConfig, ConfigError> {
    let mut c = ServerConfig::default();
    let mut seen_tls_server = false;
    let mut mode_server = false;
    let mut topology: Option<String> = None;
    let mut keepalive: Option<(u32, u32)> = None;
    let mut explicit = Explicit::default();
    let ignored = catalog::ignored_unknown(lines);
    // `cd DIR` moves the base of the relative paths after it.
    let mut base_dir = base.to_path_buf();
    for o in lines {
        let n = o.name.as_str();
        match catalog::screen(o, Role::Server)? {
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
        if c.tls.apply(o, base, Role::Server)? {
            continue;
        }
        match n {
            "config" => {}
            "mode" => {
                if arg(o, 0)? != "server" {
                    return Err(err(
                        o,
                        "openvpn-server only runs 'mode server' (use openvpn-client for p2p/client)",
                    ));
                }
                mode_server = true;
            }
            "tls-server" => seen_tls_server = true,
            "server" => {
                let net = ipv4(o, 0)?;
                let mask = ipv4(o, 1)?;
                if o.arg(2).is_some_and(|a| a != "nopool") {
                    return Err(err(
                        o,
                        "only the optional flag 'nopool' is allowed after NET MASK",
                    ));
                }
                mode_server = true;
                seen_tls_server = true;
                c.server_v4 = Some((net, mask));
            }
            "server-ipv6" => c.server_v6 = Some(ipv6_prefix(o, 0)?),
            // The explicit form of `server` (OpenVPN's manual spells it out): the server's
            // tunnel addresses and the client pool, interpreted once every line is read.
            "ifconfig" => explicit.v4 = Some((o.clone(), ipv4(o, 0)?, ipv4(o, 1)?)),
            "ifconfig-pool" => {
                if o.arg(2).is_some() {
                    ipv4(o, 2)?;
                }
                explicit.pool_v4 = Some((o.clone(), ipv4(o, 0)?, ipv4(o, 1)?))
            }
            "ifconfig-ipv6" => {
                let (a, bits) = ipv6_prefix(o, 0)?;
                explicit.v6 = Some((o.clone(), a, bits));
            }
            "ifconfig-ipv6-pool" => explicit.pool_v6 = Some(ipv6_prefix(o, 0)?.0),
            "topology" => {
                let t = arg(o, 0)?;
                if !matches!(t, "subnet" | "net30" | "p2p") {
                    return Err(err(o, format!("'{t}' is not one of subnet, net30, p2p")));
                }
                topology = Some(t.to_owned());
            }
            "dev" => c.dev = arg(o, 0)?.to_owned(),
            "dev-type" => {
                if arg(o, 0)? != "tun" {
                    return Err(err(o, "only 'dev-type tun' is supported (tap is not)"));
                }
            }
            "proto" => {
                let p = arg(o, 0)?;
                (c.transport, c.family) = match p {
                    "udp" => (Transport::Udp, Family::Any),
                    "udp4" => (Transport::Udp, Family::V4),
                    "udp6" => (Transport::Udp, Family::V6),
                    "tcp" | "tcp-server" => (Transport::Tcp, Family::Any),
                    "tcp4" | "tcp4-server" => (Transport::Tcp, Family::V4),
                    "tcp6" | "tcp6-server" => (Transport::Tcp, Family::V6),
                    _ => {
                        return Err(err(
                            o,
                            format!(
                                "'{p}' is not one of udp, udp4, udp6, tcp-server, tcp4-server, tcp6-server"
                            ),
                        ));
                    }
                };
            }
            "local" => c.local = Some(arg(o, 0)?.to_owned()),
            "port" | "lport" => c.port = parse_num(o, 0)?,
            "dh" => {
                if arg(o, 0)? != "none" && !o.is_inline() {
                    // A DH file is harmless: only ECDHE is used.
                }
            }
            "data-ciphers" | "ncp-ciphers" => c.data_ciphers = loading::cipher_list(o)?,
            "data-ciphers-fallback" | "cipher" => match loading::fallback_cipher(o)? {
                Ok(name) => c.data_ciphers_fallback = Some(name),
                Err(note) => c.notices.push(note),
            },
            "auth" => c.auth = loading::digest(o)?,
            "dev-node" => loading::dev_node(o)?,
            "verify-client-cert" => {
                c.verify_client_cert = match arg(o, 0)? {
                    "require" => VerifyClientCert::Require,
                    "optional" => VerifyClientCert::Optional,
                    "none" => VerifyClientCert::None,
                    v => {
                        return Err(err(
                            o,
                            format!("'{v}' is not one of none, optional, require"),
                        ));
                    }
                }
            }
            "keepalive" => keepalive = Some((parse_num(o, 0)?, parse_num(o, 1)?)),
            "ping" => c.ping = Some(parse_num(o, 0)?),
            "ping-restart" => c.ping_restart = Some(parse_num(o, 0)?),
            "reneg-sec" => c.reneg_sec = parse_num(o, 0)?,
            "reneg-bytes" => c.reneg_bytes = parse_num(o, 0)?,
            "reneg-pkts" => c.reneg_pkts = parse_num(o, 0)?,
            "hand-window" => c.hand_window = parse_num(o, 0)?,
            "tran-window" => c.tran_window = parse_num(o, 0)?,
            "push" => {
                let p = arg(o, 0)?;
                if o.args.len() > 1 {
                    return Err(err(
                        o,
                        "quote the pushed option: push \"route 10.0.0.0 255.0.0.0\"",
                    ));
                }
                c.push.push(p.to_owned());
            }
            "route" => {
                let net = ipv4(o, 0)?;
                let mask = if o.arg(1).is_some() {
                    ipv4(o, 1)?
                } else {
                    Ipv4Addr::BROADCAST
                };
                c.routes.push((net, mask));
            }
            "route-ipv6" => c.routes_v6.push(ipv6_prefix(o, 0)?),
            "client-to-client" => c.client_to_client = true,
            "duplicate-cn" => c.duplicate_cn = true,
            "max-clients" => c.max_clients = parse_num(o, 0)?,
            "workers" => {
                c.workers = parse_num(o, 0)?;
                if !(1..=64).contains(&c.workers) {
                    return Err(err(o, "workers must be between 1 and 64"));
                }
            }
            "explicit-exit-notify" => {
                c.explicit_exit_notify =
                    Some(o.arg(0).map(|_| parse_num(o, 0)).transpose()?.unwrap_or(1))
            }
            "tun-mtu" => c.tun_mtu = parse_num(o, 0)?,
            "mssfix" => {
                c.mssfix = o
                    .arg(0)
                    .map(|_| parse_num(o, 0))
                    .transpose()?
                    .unwrap_or(1492)
            }
            "setenv" => c.setenv.push((
                arg(o, 0)?.to_owned(),
                o.args.get(1..).map(|a| a.join(" ")).unwrap_or_default(),
            )),
            "plugin" => c.plugins.push((
                arg(o, 0)?.to_owned(),
                openvpn_plugin::init_args(o.args.get(1..).unwrap_or_default()),
            )),
            "setenv-safe" => c
                .setenv
                .push(openvpn_control::process_options::setenv_safe(o)?),
            "user" => c.user = Some(arg(o, 0)?.to_owned()),
            "group" => c.group = Some(arg(o, 0)?.to_owned()),
            "daemon" => c.daemon = true,
            "writepid" => c.writepid = Some(base.join(arg(o, 0)?)),
            "log" => c.log = Some((base.join(arg(o, 0)?), false)),
            "log-append" => c.log = Some((base.join(arg(o, 0)?), true)),
            "verb" => c.verb = parse_num(o, 0)?,
            "persist-tun" => c.persist_tun = true,
            "port-share" => {
                if o.arg(2).is_some() {
                    return Err(err(
                        o,
                        "the DIR argument (files with the real client addresses) is not supported yet",
                    ));
                }
                c.port_share = Some((arg(o, 0)?.to_owned(), parse_num(o, 1)?));
            }
            "chroot" => c.chroot = Some(base.join(arg(o, 0)?)),
            "inactive" => {
                let secs: u32 = parse_num(o, 0)?;
                let bytes: u64 = if o.arg(1).is_some() {
                    parse_num(o, 1)?
                } else {
                    0
                };
                c.inactive = (secs > 0).then_some((secs, bytes));
            }
            "tls-crypt-v2-verify" => c.tls_crypt_v2_verify = Some(o.args.join(" ")),
            "tcp-queue-limit" => {
                let n: usize = parse_num(o, 0)?;
                if n == 0 {
                    return Err(err(o, "must be at least 1"));
                }
                c.tcp_queue_limit = Some(n);
            }
            "syslog" => c.syslog = Some(o.arg(0).unwrap_or("openvpn").to_owned()),
            "errors-to-stderr" => c.errors_to_stderr = true,
            "suppress-timestamps" => c.suppress_timestamps = true,
            "machine-readable-output" => {}
            "status" => {
                c.status = Some((
                    base.join(arg(o, 0)?),
                    o.arg(1).map(|_| parse_num(o, 1)).transpose()?.unwrap_or(60),
                ))
            }
            "status-version" => {
                let v: u8 = parse_num(o, 0)?;
                if !(1..=3).contains(&v) {
                    return Err(err(o, "must be 1, 2 or 3"));
                }
                c.status_version = v;
            }
            "replay-window" => {
                c.replay_window = (
                    parse_num(o, 0)?,
                    o.arg(1).map(|_| parse_num(o, 1)).transpose()?.unwrap_or(15),
                )
            }
            "script-security" => c.script_security = parse_num(o, 0)?,
            "up" => c.up = Some(arg(o, 0)?.to_owned()),
            "down" => c.down = Some(arg(o, 0)?.to_owned()),
            "auth-user-pass-verify" => {
                let cmd = arg(o, 0)?.to_owned();
                let via_file = match arg(o, 1)? {
                    "via-file" => true,
                    "via-env" => false,
                    m => return Err(err(o, format!("'{m}' is not one of via-file, via-env"))),
                };
                c.auth_user_pass_verify = Some((cmd, via_file));
            }
            "client-connect" => c.client_connect = Some(arg(o, 0)?.to_owned()),
            "learn-address" => c.learn_address = Some(arg(o, 0)?.to_owned()),
            "auth-gen-token" => {
                let mut g = AuthGenToken {
                    lifetime: 0,
                    renewal: None,
                    external_auth: false,
                };
                let mut nums = 0;
                for (i, a) in o.args.iter().enumerate() {
                    if a == "external-auth" {
                        g.external_auth = true;
                    } else if nums == 0 {
                        g.lifetime = parse_num(o, i)?;
                        nums += 1;
                    } else if nums == 1 {
                        g.renewal = Some(parse_num(o, i)?);
                        nums += 1;
                    } else {
                        return Err(err(
                            o,
                            "usage: auth-gen-token [lifetime] [renewal] [external-auth]",
                        ));
                    }
                }
                c.auth_gen_token = Some(g);
            }
            "auth-gen-token-secret" => {
                let text = file_or_inline(o, base)?;
                c.auth_gen_token_secret =
                    Some(crate::auth_token::TokenKey::parse_pem(&text).map_err(|e| err(o, e))?);
            }
            "ifconfig-pool-persist" => {
                c.ifconfig_pool_persist = Some((
                    base.join(arg(o, 0)?),
                    o.arg(1)
                        .map(|_| parse_num(o, 1))
                        .transpose()?
                        .unwrap_or(600),
                ))
            }
            "client-disconnect" => c.client_disconnect = Some(arg(o, 0)?.to_owned()),
            "username-as-common-name" => c.username_as_common_name = true,
            "client-config-dir" => c.client_config_dir = Some(base.join(arg(o, 0)?)),
            "ccd-exclusive" => c.ccd_exclusive = true,
            "auth-user-pass-optional" => c.auth_user_pass_optional = true,
            "management" => {
                let a0 = arg(o, 0)?;
                let a1 = arg(o, 1)?;
                let (listen, pw) = if a1 == "unix" {
                    (ManagementListen::Unix(base.join(a0)), o.arg(2))
                } else {
                    let port: u16 = parse_num(o, 1)?;
                    (ManagementListen::Tcp(a0.to_owned(), port), o.arg(2))
                };
                if pw == Some("stdin") {
                    return Err(err(
                        o,
                        "a management password from stdin is not supported; give a password file",
                    ));
                }
                c.management = Some(ManagementConfig {
                    listen,
                    password_file: pw.map(|p| base.join(p)),
                });
            }
            "management-client-auth" => c.management_client_auth = true,
            "management-hold" => c.management_hold = true,
            "management-log-cache" => c.management_log_cache = parse_num(o, 0)?,
            "management-query-passwords"
            | "management-forget-disconnect"
            | "management-signal"
            | "management-up-down" => {}
            "metrics-listen" => {
                let a = arg(o, 0)?;
                c.metrics_listen = Some(
                    a.parse()
                        .map_err(|_| err(o, format!("'{a}' is not IP:PORT")))?,
                );
            }
            "compress" | "comp-lzo" => {
                c.compression = CompressionConfig::from_option(n == "comp-lzo", o.arg(0)).ok_or_else(|| {
                    err(o, "use stub, stub-v2, lz4, lz4-v2, lzo or migrate (comp-lzo: yes, no, adaptive); data is never compressed")
                })?;
                openvpn_control::compression::check_compress(
                    c.allow_compression,
                    c.compression.framing(),
                )
                .map_err(|e| err(o, e))?;
            }
            "allow-compression" => {
                use openvpn_control::compression::AllowCompression;
                let mode = AllowCompression::parse(arg(o, 0)?)
                    .ok_or_else(|| err(o, "must be 'yes', 'no', or 'asym'"))?;
                let configured =
                    (c.compression != CompressionConfig::None).then(|| c.compression.framing());
                c.allow_compression = Some(
                    AllowCompression::set(c.allow_compression, mode, configured)
                        .map_err(|e| err(o, e))?,
                );
                if mode == AllowCompression::Yes {
                    c.notices.push(
                        "allow-compression yes: what clients compress is decompressed, but openvpn-rs \
                         never compresses (it sends uncompressed packets, which every compression \
                         framing accepts)"
                            .into(),
                    );
                }
            }
            "ignore-unknown-option" => {}
            _ => c
                .notices
                .push(catalog::unhandled(o, Role::Server, &ignored)?),
        }
    }
    if !mode_server || !seen_tls_server {
        return Err(ConfigError::Invalid(
            "this is not a server config: add 'server NET MASK' (or 'mode server' and 'tls-server')".into(),
        ));
    }
    let scripts = [
        &c.client_connect,
        &c.client_disconnect,
        &c.up,
        &c.down,
        &c.tls.tls_verify,
        &c.tls_crypt_v2_verify,
    ]
    .iter()
    .any(|x| x.is_some())
        || c.auth_user_pass_verify.is_some();
    if scripts && c.script_security < 2 {
        return Err(ConfigError::Invalid(
            "auth-user-pass-verify / client-connect / client-disconnect / up / down / tls-verify need 'script-security 2'"
                .into(),
        ));
    }
    if (c.management_client_auth || c.management_hold) && c.management.is_none() {
        return Err(ConfigError::Invalid(
            "management-client-auth / management-hold need 'management IP PORT' or 'management PATH unix'".into(),
        ));
    }
    c.tls.finish()?;
    c.pool_persist_seed = c
        .ifconfig_pool_persist
        .as_ref()
        .and_then(|(p, _)| std::fs::read_to_string(p).ok());
    if !c.tls.can_verify_peer() || c.tls.cert.is_none() || c.tls.key.is_none() {
        return Err(ConfigError::Invalid(
            "a server needs 'ca' (or 'peer-fingerprint'), 'cert' and 'key'".into(),
        ));
    }
    if let Some((a, b)) = keepalive {
        c.ping = Some(a);
        c.ping_restart = Some(b.saturating_mul(2));
        c.push.insert(0, format!("ping-restart {b}"));
        c.push.insert(0, format!("ping {a}"));
    }
    c.topology = match topology.as_deref() {
        Some("subnet") => Topology::Subnet,
        Some("p2p") => Topology::P2p,
        _ => Topology::Net30,
    };
    let server_directive = c.server_v4.is_some();
    explicit.apply(&mut c)?;
    if server_directive {
        if c.topology == Topology::Net30 {
            c.notices.push(
                "topology net30 (OpenVPN's default without a 'topology' line) is deprecated by OpenVPN 2.6 for IPv4 pools; 'topology subnet' is recommended"
                    .into(),
            );
        }
        let shape = c.pool_shape();
        for (i, line) in shape
            .server_push(c.client_to_client)
            .into_iter()
            .enumerate()
        {
            c.push.insert(i, line);
        }
    }
    if c.port_share.is_some() && c.transport != Transport::Tcp {
        return Err(ConfigError::Invalid(
            "'port-share' needs 'proto tcp-server' (it shares a TCP port)".into(),
        ));
    }
    if c.server_v4.is_none() && c.server_v6.is_none() {
        return Err(ConfigError::Invalid(
            "no address pool: add 'server NET MASK' (and optionally 'server-ipv6 NET/BITS')".into(),
        ));
    }
    Ok(c)
}

impl ServerConfig {
    /// The address pool's ranges and layout (`server`/`server-ipv6` or the explicit form,
    /// `topology`).
    pub fn pool_shape(&self) -> crate::pool::PoolShape {
        crate::pool::PoolShape::new(self.server_v4, self.server_v6).with_layout(
            self.topology,
            self.pool_v4,
            self.pool_v6_start,
        )
    }

    /// Whether something other than the client certificate decides who may connect
    /// (`auth-user-pass-verify`, `management-client-auth`, or a plugin), as `verify-client-cert
    /// none` requires.
    pub fn has_password_check(&self) -> bool {
        self.auth_user_pass_verify.is_some()
            || self.management_client_auth
            || !self.plugins.is_empty()
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
}

/// The explicit server form's lines (`ifconfig`, `ifconfig-pool`, `ifconfig-ipv6`,
/// `ifconfig-ipv6-pool`), applied after every line is read (topology and routes are known).
#[derive(Default)]
struct Explicit {
    v4: Option<(OptionLine, Ipv4Addr, Ipv4Addr)>,
    pool_v4: Option<(OptionLine, Ipv4Addr, Ipv4Addr)>,
    v6: Option<(OptionLine, Ipv6Addr, u8)>,
    pool_v6: Option<Ipv6Addr>,
}

impl Explicit {
    /// Turns the lines into the server's ranges, as `server`/`server-ipv6` would set them, and
    /// the pool bounds. The config pushes what it needs itself (nothing is added).
    fn apply(self, c: &mut ServerConfig) -> Result<(), ConfigError> {
        if let Some((o, local, second)) = self.v4 {
            if c.server_v4.is_some() {
                return Err(err(&o, "'server' already sets the server's addresses"));
            }
            let (net, mask) = match c.topology {
                Topology::Subnet => (Ipv4Addr::from(u32::from(local) & u32::from(second)), second),
                // net30/p2p: `ifconfig LOCAL PEER`; the network comes from the `route` line
                // that covers LOCAL (the expanded form has one).
                Topology::Net30 | Topology::P2p => c
                    .routes
                    .iter()
                    .find(|(n, m)| u32::from(local) & u32::from(*m) == u32::from(*n))
                    .copied()
                    .ok_or_else(|| {
                        err(&o, "add the 'route NET MASK' that covers the server's address (as OpenVPN's expanded server form does)")
                    })?,
            };
            if u32::from(local) != u32::from(net) + 1 {
                return Err(err(
                    &o,
                    format!(
                        "the server's address must be the network's first ({}); openvpn-rs lays out its pool from there",
                        Ipv4Addr::from(u32::from(net) + 1)
                    ),
                ));
            }
            let Some((po, start, end)) = self.pool_v4 else {
                return Err(err(
                    &o,
                    "add 'ifconfig-pool START END' (without a pool, clients need a client-config-dir ifconfig-push; not supported yet)",
                ));
            };
            let inside = |a: Ipv4Addr| u32::from(a) & u32::from(mask) == u32::from(net);
            if !inside(start) || !inside(end) || start > end {
                return Err(err(
                    &po,
                    "the pool must lie inside the server's network, START before END",
                ));
            }
            // The server's network is the tun's own: a route for it would only repeat it.
            c.routes.retain(|r| *r != (net, mask));
            c.server_v4 = Some((net, mask));
            c.pool_v4 = Some((start, end));
        }
        if let Some((o, local, bits)) = self.v6 {
            if c.server_v6.is_some() {
                return Err(err(
                    &o,
                    "'server-ipv6' already sets the server's IPv6 address",
                ));
            }
            let net = openvpn_tun::route::mask(local.into(), bits);
            let std::net::IpAddr::V6(net) = net else {
                return Err(err(&o, "not an IPv6 address"));
            };
            if u128::from(local) != u128::from(net) + 1 {
                return Err(err(
                    &o,
                    "the server's IPv6 address must be the network's first",
                ));
            }
            c.server_v6 = Some((net, bits));
            c.pool_v6_start = self.pool_v6;
        }
        Ok(())
    }
}

/// Parses a config file and command-line options (command line last).
pub fn load_from(
    config_file: Option<&Path>,
    cli: Vec<OptionLine>,
) -> Result<ServerConfig, ConfigError> {
    // `--cd DIR` before `--config FILE` reads FILE (and its relative paths) from DIR.
    let (mut lines, base) = openvpn_control::loading::config_lines(config_file, cli)?;
    lines.retain(|l| l.name != "config" || l.source != OptionSource::CommandLine);
    let toml = lines
        .iter()
        .rev()
        .find(|l| l.name == "layer-toml")
        .and_then(|l| l.arg(0))
        .map(PathBuf::from);
    lines.retain(|l| l.name != "layer-toml");
    let env: Vec<(String, String)> = std::env::vars().collect();
    let lines = crate::layered::layer(lines, toml.as_deref(), &env)?;
    load(&lines, &base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Result<ServerConfig, ConfigError> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ovrs-cfg-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        for f in ["ca.crt", "server.crt", "server.key", "tc.key"] {
            std::fs::write(dir.join(f), "x").ok();
        }
        load(&openvpn_control::options::parse_config(text)?, &dir)
    }

    const BASE: &str = "mode server\ntls-server\ndev tun\ntopology subnet\nproto udp\nport 1194\nserver 10.8.0.0 255.255.255.0\nserver-ipv6 fd08::/64\nkeepalive 10 60\ndisable-dco\nca ca.crt\ncert server.crt\nkey server.key\ndh none\ndata-ciphers AES-256-GCM\ntls-crypt tc.key\npersist-key\npersist-tun\nverb 4\n";

    #[test]
    fn lab_config_loads() {
        let c = cfg(BASE).unwrap();
        assert_eq!(c.transport, Transport::Udp);
        assert_eq!(c.family, Family::Any);
        assert_eq!(
            c.server_v4,
            Some((
                "10.8.0.0".parse().unwrap(),
                "255.255.255.0".parse().unwrap()
            ))
        );
        assert_eq!(c.ping, Some(10));
        assert_eq!(c.ping_restart, Some(120));
        assert_eq!(
            &c.push[..4],
            &[
                "topology subnet",
                "route-gateway 10.8.0.1",
                "ping 10",
                "ping-restart 60"
            ]
        );
        assert!(matches!(c.tls.wrap, TlsWrap::Crypt { .. }));
    }

    #[test]
    fn bad_lines_name_their_line() {
        let e = cfg(&format!("{BASE}proto udp7\n")).unwrap_err().to_string();
        assert!(
            e.contains("config line 20") && e.contains("udp7") && e.contains("udp4"),
            "{e}"
        );
        let e = cfg(&format!("{BASE}frobnicate yes\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("config line 20") && e.contains("frobnicate"),
            "{e}"
        );
        let e = cfg(&format!("{BASE}data-ciphers AES-256-GCM:NOPE-1\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("NOPE-1"), "{e}");
        let e = cfg(&format!("{BASE}port http\n")).unwrap_err().to_string();
        assert!(
            e.contains("config line 20") && e.contains("'http' is not a valid number"),
            "{e}"
        );
        // No topology line: OpenVPN's net30, with its deprecation note.
        let c = cfg(&BASE.replace("topology subnet\n", "")).unwrap();
        assert_eq!(c.topology, Topology::Net30);
        assert_eq!(&c.push[..2], &["topology net30", "route 10.8.0.1"]);
        assert!(c.notices.iter().any(|n| n.contains("deprecated")));
        let c =
            cfg(&BASE.replace("topology subnet\n", "topology p2p\nclient-to-client\n")).unwrap();
        assert_eq!(
            &c.push[..2],
            &["topology p2p", "route 10.8.0.0 255.255.255.0"]
        );
        let e = cfg(&format!("{BASE}ca missing.crt\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.crt"), "{e}");
        let e = cfg("dev tun\n").unwrap_err().to_string();
        assert!(e.contains("not a server config"), "{e}");
    }

    #[test]
    fn management_and_metrics_options() {
        let c = cfg(&format!(
            "{BASE}management 127.0.0.1 7505 pw.txt\nmanagement-client-auth\nmanagement-hold\nmetrics-listen 127.0.0.1:9176\n"
        ))
        .unwrap();
        let m = c.management.unwrap();
        assert_eq!(m.listen, ManagementListen::Tcp("127.0.0.1".into(), 7505));
        assert!(m.password_file.unwrap().ends_with("pw.txt"));
        assert!(c.management_client_auth && c.management_hold);
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9176".parse().unwrap()));
        let c = cfg(&format!("{BASE}management /run/ovpn.sock unix\n")).unwrap();
        assert_eq!(
            c.management.unwrap().listen,
            ManagementListen::Unix("/run/ovpn.sock".into())
        );
        let e = cfg(&format!("{BASE}management-client-auth\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("need 'management"), "{e}");
        let e = cfg(&format!("{BASE}metrics-listen nope\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("IP:PORT"), "{e}");
    }

    /// Every option the catalog calls implemented for servers reaches an arm of `load`
    /// (it may still reject the dummy argument, but never as "not supported").
    #[test]
    fn every_implemented_option_is_handled() {
        use openvpn_control::options::catalog::{Role, implemented_but_unhandled};
        let missing = implemented_but_unhandled(Role::Server, |text| cfg(&format!("{BASE}{text}")));
        assert!(missing.is_empty(), "not handled: {missing:?}");
    }

    /// OpenVPN's manual spells `server` out as ifconfig + ifconfig-pool (+ route for net30):
    /// the same ranges, the pool's bounds honoured, and nothing pushed on the config's behalf.
    #[test]
    fn explicit_server_form() {
        let base = BASE
            .replace("server 10.8.0.0 255.255.255.0\n", "")
            .replace("server-ipv6 fd08::/64\n", "");
        let c = cfg(&format!(
            "{base}ifconfig 10.8.0.1 255.255.255.0\nifconfig-pool 10.8.0.10 10.8.0.20 255.255.255.0\nifconfig-ipv6 fd50::1/64 fd50::2\nifconfig-ipv6-pool fd50::100/64\n"
        ))
        .unwrap();
        assert_eq!(
            c.server_v4,
            Some((
                "10.8.0.0".parse().unwrap(),
                "255.255.255.0".parse().unwrap()
            ))
        );
        assert!(
            !c.push.iter().any(|p| p.starts_with("topology")),
            "{:?}",
            c.push
        );
        let mut pool = crate::pool::AddressPool::with_shape(c.pool_shape());
        let first = pool.lease().unwrap();
        assert_eq!(first.v4, Some("10.8.0.10".parse().unwrap()));
        assert_eq!(first.v6, Some("fd50::100".parse().unwrap()));
        let mut n = 1;
        while pool.lease().is_some() {
            n += 1;
        }
        assert_eq!(n, 11, "10.8.0.10 ..= 10.8.0.20");
        // net30: the network comes from the route line; the pool is /30 blocks.
        let net30 = base.replace("topology subnet\n", "");
        let c = cfg(&format!(
            "{net30}ifconfig 10.8.0.1 10.8.0.2\nifconfig-pool 10.8.0.4 10.8.0.251\nroute 10.8.0.0 255.255.255.0\n"
        ))
        .unwrap();
        assert!(
            c.routes.is_empty(),
            "the tun's own network is not routed again"
        );
        let mut pool = crate::pool::AddressPool::with_shape(c.pool_shape());
        let a = pool.lease().unwrap();
        assert_eq!(
            pool.shape().push_options(&a),
            ["ifconfig 10.8.0.6 10.8.0.5"]
        );
        let e = cfg(&format!(
            "{net30}ifconfig 10.8.0.1 10.8.0.2\nifconfig-pool 10.8.0.4 10.8.0.251\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("route NET MASK"), "{e}");
        let e = cfg(&format!("{base}ifconfig 10.8.0.1 255.255.255.0\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ifconfig-pool"), "{e}");
    }

    #[test]
    fn tcp_queue_limit() {
        assert_eq!(cfg(BASE).unwrap().tcp_queue_limit, None);
        let c = cfg(&format!("{BASE}tcp-queue-limit 32\n")).unwrap();
        assert_eq!(c.tcp_queue_limit, Some(32));
        assert!(cfg(&format!("{BASE}tcp-queue-limit 0\n")).is_err());
    }

    #[test]
    fn tcp_and_families() {
        for (p, t, f) in [
            ("tcp-server", Transport::Tcp, Family::Any),
            ("tcp6-server", Transport::Tcp, Family::V6),
            ("udp4", Transport::Udp, Family::V4),
            ("udp6", Transport::Udp, Family::V6),
        ] {
            let c = cfg(&BASE.replace("proto udp", &format!("proto {p}"))).unwrap();
            assert_eq!((c.transport, c.family), (t, f), "{p}");
        }
    }

    /// `cd`, `nice`, `mlock`, `setenv-safe`: `cd` moves the base of later relative paths.
    #[test]
    fn process_options() {
        let c = cfg(&format!(
            "{BASE}status before.txt\ncd /\nnice 2\nmlock\nsetenv-safe NAME v\nlog after.log\n"
        ))
        .unwrap();
        assert_eq!(c.process.cd.as_deref(), Some(Path::new("/")));
        assert_eq!((c.process.nice, c.process.mlock), (2, true));
        assert_eq!(c.log, Some((PathBuf::from("/after.log"), false)));
        assert!(
            c.status
                .as_ref()
                .is_some_and(|(p, _)| p.ends_with("before.txt") && p != Path::new("/before.txt"))
        );
        assert!(
            c.setenv
                .contains(&("OPENVPN_NAME".to_owned(), "v".to_owned()))
        );
        // ca.crt is beside the config, not in /: a cd before it changes where it is read.
        let e = cfg(&format!("cd /\n{BASE}")).unwrap_err().to_string();
        assert!(e.contains("ca.crt"), "{e}");
    }
}
