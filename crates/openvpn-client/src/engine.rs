//! The connection engine: remotes in order, every resolved address in order, reconnects with
//! backoff, and one session's event loop (socket, tun, timers, commands).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use openvpn_control::client::{
    ClientEvent as CtlEvent, ClientPolicy, ClientSession, PushedOptions,
};
use openvpn_control::compression::{AllowCompression, framing_for};
use openvpn_control::dataplane::{DataChannel, Payload, decompress_limit};
use openvpn_control::keepalive::{Inactivity, Keepalive, KeepaliveAction};
use openvpn_control::peer_info::{self, ClientPeerInfo};
use openvpn_control::tls::TlsConfig;
use openvpn_control::{ControlWrapping, Session, SessionConfig, Timers};
use openvpn_crypto::{
    DigestKind, KeyDirection, PacketBuf, Role, StaticKey, TlsAuth, TlsCrypt, TlsCryptV2ClientKey,
};
use openvpn_tun::{PacketDevice, TunBatch};
use openvpn_wire::CompressionFraming;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::config::{AuthUserPass, ClientConfig, Family, Proto, Remote, TlsWrap};
use crate::fast::FastUdp;
use crate::tun::{TunBuilder, TunSettings, TunVerdict};
use crate::{Command, ExitReason, VpnEvent};

/// How one connection attempt ended.
enum Outcome {
    /// Could not reach the server (try the next address).
    Unreachable(String),
    /// Established session ended; reconnect.
    Restart { reason: String, next_server: bool },
    /// Stop for good.
    Exit(ExitReason),
}

struct Shared<T: TunBuilder> {
    cfg: ClientConfig,
    tls: TlsConfig,
    wrapping: ControlWrapping,
    builder: T,
    device: Option<Arc<T::Device>>,
    device_settings: Option<TunSettings>,
    events: mpsc::UnboundedSender<VpnEvent>,
    commands: mpsc::UnboundedReceiver<Command>,
    credentials: Option<(String, String)>,
    rng: StdRng,
    paused: bool,
}

fn emit<T: TunBuilder>(s: &Shared<T>, e: VpnEvent) {
    let _ = s.events.send(e);
}

fn wrapping(cfg: &ClientConfig) -> Result<ControlWrapping, String> {
    Ok(match &cfg.tls.wrap {
        TlsWrap::None => ControlWrapping::None,
        TlsWrap::Auth { key, direction } => {
            let k = StaticKey::parse_pem(key).map_err(|e| format!("tls-auth: {e}"))?;
            let dir = match direction {
                None => KeyDirection::Bidirectional,
                Some(0) => KeyDirection::Normal,
                Some(_) => KeyDirection::Inverse,
            };
            let digest = DigestKind::from_name(&cfg.auth).ok_or("bad auth digest")?;
            ControlWrapping::TlsAuth(
                Arc::new(TlsAuth::new(&k, dir, digest).map_err(|e| e.to_string())?),
                Arc::new(k),
            )
        }
        TlsWrap::Crypt { key } => {
            let k = StaticKey::parse_pem(key).map_err(|e| format!("tls-crypt: {e}"))?;
            ControlWrapping::TlsCrypt(Arc::new(TlsCrypt::new(&k, Role::Client)), Arc::new(k))
        }
        TlsWrap::CryptV2 { key } => {
            let k =
                TlsCryptV2ClientKey::parse_pem(key).map_err(|e| format!("tls-crypt-v2: {e}"))?;
            ControlWrapping::TlsCryptV2Client {
                kc: Arc::new(TlsCrypt::new(&k.kc, Role::Client)),
                key: Arc::new(k.kc.clone()),
                wkc: Arc::new(k.wkc.clone()),
            }
        }
    })
}

fn tls_config(cfg: &ClientConfig) -> Result<TlsConfig, String> {
    let hook = cfg.tls.tls_verify.clone().map(|cmd| {
        let env = cfg.setenv.clone();
        openvpn_control::tls::CertHook(std::sync::Arc::new(
            move |c: &openvpn_control::tls::CertInfo| {
                openvpn_tun::process::run_tls_verify(&cmd, c.depth, &c.subject, &c.env, &env)
            },
        ))
    });
    TlsConfig::client(&cfg.tls.credentials_with(hook)).map_err(|e| e.to_string())
}

fn options_string(cfg: &ClientConfig, proto: Proto) -> String {
    let p = match proto {
        Proto::Udp => "UDPv4",
        Proto::Tcp => "TCPv4_CLIENT",
    };
    let mut s = format!(
        "V4,dev-type tun,link-mtu {},tun-mtu {},proto {p}",
        if proto == Proto::Tcp { 1543 } else { 1541 },
        cfg.tun_mtu
    );
    if let TlsWrap::Auth {
        direction: Some(d), ..
    } = cfg.tls.wrap
    {
        s.push_str(&format!(",keydir {d}"));
    }
    s.push_str(&format!(",auth {},keysize 128", cfg.auth.to_uppercase()));
    if matches!(cfg.tls.wrap, TlsWrap::Auth { .. }) {
        s.push_str(",tls-auth");
    }
    s.push_str(",key-method 2,tls-client");
    // 2.6 adds this whenever a compression option is configured (`migrate` servers read it).
    if cfg
        .compression
        .as_ref()
        .is_some_and(|c| c.get(1).map(String::as_str) != Some("migrate"))
    {
        s.push_str(",comp-lzo");
    }
    s
}

/// The `allow-compression` mode in force: the profile's, else 2.6's default for its
/// `compress`/`comp-lzo` line.
fn allow_compression(cfg: &ClientConfig) -> AllowCompression {
    AllowCompression::effective(
        cfg.allow_compression,
        cfg.compression.as_deref().map(framing_for),
    )
}

/// Logs the first packet the server compressed (once per connection): proof that
/// decompression is in use.
fn note_decompressed(data: &DataChannel, logged: &mut bool) {
    if !*logged && data.stats().decompressed > 0 {
        *logged = true;
        tracing::info!(
            "decompressing: the server sent a compressed packet (openvpn-rs sends uncompressed)"
        );
    }
}

fn peer_info(cfg: &ClientConfig) -> String {
    let mut extra: Vec<(String, String)> = cfg
        .setenv
        .iter()
        .filter(|(n, _)| n.starts_with("IV_") || (cfg.push_peer_info && n.starts_with("UV_")))
        .cloned()
        .collect();
    if cfg.push_peer_info {
        extra.push(("IV_SSL".into(), "rustls-0.23".into()));
    }
    ClientPeerInfo {
        version: format!("openvpn-rs-{}", env!("CARGO_PKG_VERSION")),
        platform: "linux".into(),
        ciphers: cfg.data_ciphers.clone(),
        proto: peer_info::IV_PROTO_DATA_V2
            | peer_info::IV_PROTO_REQUEST_PUSH
            | peer_info::IV_PROTO_TLS_KEY_EXPORT
            | peer_info::IV_PROTO_AUTH_PENDING_KW
            | peer_info::IV_PROTO_CC_EXIT_NOTIFY
            | peer_info::IV_PROTO_AUTH_FAIL_TEMP
            | peer_info::IV_PROTO_DYN_TLS_CRYPT,
        mtu: Some(1600),
        extra,
        // 2.6 announces the algorithms unless allow-compression is no or a stub is set.
        decompresses: allow_compression(cfg) != AllowCompression::No
            && !matches!(
                cfg.compression.as_deref().map(framing_for),
                Some(CompressionFraming::Stub | CompressionFraming::StubV2)
            ),
    }
    .render()
}

/// Runs the client until it stops for good.
pub(crate) async fn run<T: TunBuilder>(
    cfg: ClientConfig,
    builder: T,
    events: mpsc::UnboundedSender<VpnEvent>,
    commands: mpsc::UnboundedReceiver<Command>,
) -> ExitReason {
    let tls = match tls_config(&cfg) {
        Ok(t) => t,
        Err(e) => return ExitReason::ConfigError(e),
    };
    let wrapping = match wrapping(&cfg) {
        Ok(w) => w,
        Err(e) => return ExitReason::ConfigError(e),
    };
    let mut s = Shared {
        cfg,
        tls,
        wrapping,
        builder,
        device: None,
        device_settings: None,
        events,
        commands,
        credentials: None,
        rng: StdRng::from_entropy(),
        paused: false,
    };
    match s.cfg.auth_user_pass.clone() {
        AuthUserPass::None => {}
        AuthUserPass::Given { username, password } => s.credentials = Some((username, password)),
        AuthUserPass::Ask { username } => {
            emit(
                &s,
                VpnEvent::CredentialsRequired {
                    username: username.clone(),
                },
            );
            loop {
                match s.commands.recv().await {
                    Some(Command::Credentials { username, password }) => {
                        s.credentials = Some((username, password));
                        break;
                    }
                    Some(Command::Disconnect) | None => return ExitReason::Disconnected,
                    Some(_) => {}
                }
            }
        }
    }
    // presolve: resolve every remote before connecting.
    let mut remotes = s.cfg.remotes.clone();
    if s.cfg.remote_random && remotes.len() > 1 {
        let k = (s.rng.next_u32() as usize) % remotes.len();
        remotes.rotate_left(k);
    }
    let presolved: Option<Vec<Vec<SocketAddr>>> = match &s.cfg.presolve {
        None => None,
        Some(hint) => {
            let mut all = Vec::new();
            for r in &remotes {
                let host = hint.clone().unwrap_or_else(|| r.host.clone());
                all.push(resolve(&host, r.port, r.family).await.unwrap_or_default());
            }
            Some(all)
        }
    };
    let mut failures: u32 = 0;
    let mut start_at = 0usize;
    // persist-remote-ip: addresses resolved once are reused by every restart.
    let mut kept: std::collections::HashMap<usize, Vec<SocketAddr>> = Default::default();
    loop {
        let mut restart_from = None;
        for ri in 0..remotes.len() {
            let idx = (start_at + ri) % remotes.len();
            let remote = remotes[idx].clone();
            let host = if s.cfg.remote_random_hostname {
                random_hostname(&remote.host, s.rng.next_u64())
            } else {
                remote.host.clone()
            };
            // Through a proxy, the client connects to the proxy; the server's name goes to
            // the proxy as written (SOCKS over UDP resolves it in open_link).
            let (lookup, port) = match &remote.proxy {
                Some(p) => (p.host().to_owned(), p.port()),
                None => (host.clone(), remote.port),
            };
            emit(
                &s,
                VpnEvent::Resolving {
                    host: lookup.clone(),
                },
            );
            let addrs = match presolved
                .as_ref()
                .filter(|_| remote.proxy.is_none())
                .and_then(|p| p.get(idx))
                .or(kept.get(&idx))
                .filter(|a| !a.is_empty())
            {
                Some(a) => a.clone(),
                None => match resolve(&lookup, port, remote.family).await {
                    Ok(a) => {
                        if s.cfg.persist_remote_ip {
                            kept.insert(idx, a.clone());
                        }
                        a
                    }
                    Err(e) => {
                        emit(
                            &s,
                            VpnEvent::ConnectFailed {
                                remote: remote.host.clone(),
                                reason: e,
                            },
                        );
                        continue;
                    }
                },
            };
            let total = addrs.len();
            for (ai, addr) in addrs.into_iter().enumerate() {
                emit(
                    &s,
                    VpnEvent::Connecting {
                        remote: addr,
                        index: ai + 1,
                        total,
                        proto: remote.proto,
                    },
                );
                match connect_once(&mut s, &remote, &host, addr).await {
                    Outcome::Unreachable(reason) => {
                        emit(
                            &s,
                            VpnEvent::ConnectFailed {
                                remote: addr.to_string(),
                                reason,
                            },
                        );
                    }
                    Outcome::Exit(r) => return r,
                    Outcome::Restart {
                        reason,
                        next_server,
                    } => {
                        failures = 0;
                        emit(&s, VpnEvent::Reconnecting { reason });
                        restart_from = Some(if next_server { idx + 1 } else { idx });
                        break;
                    }
                }
            }
            if restart_from.is_some() {
                break;
            }
        }
        match restart_from {
            Some(i) => start_at = i % remotes.len(),
            None => {
                failures += 1;
                if s.cfg.connect_retry_max.is_some_and(|m| failures >= m) {
                    return ExitReason::Unreachable;
                }
                let (base, max) = s.cfg.connect_retry;
                let wait =
                    (base * 2u32.saturating_pow(failures.min(16).saturating_sub(1))).min(max);
                emit(
                    &s,
                    VpnEvent::Reconnecting {
                        reason: format!("no remote answered; retrying in {} s", wait.as_secs()),
                    },
                );
                let sleep = tokio::time::sleep(wait);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        c = s.commands.recv() => match c {
                            Some(Command::Disconnect) | None => return ExitReason::Disconnected,
                            Some(Command::ReconnectNow) => break,
                            _ => {}
                        }
                    }
                }
            }
        }
    }
}

/// `remote-random-hostname`: a random 12-hex-digit label before a host name (not before an
/// IP address), so that each connection resolves a new name (wildcard DNS load balancing).
fn random_hostname(host: &str, random: u64) -> String {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return host.to_owned();
    }
    format!("{:012x}.{host}", random & 0xffff_ffff_ffff)
}

async fn resolve(host: &str, port: u16, family: Family) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve '{host}': {e}"))?
        .filter(|a| match family {
            Family::Any => true,
            Family::V4 => a.is_ipv4(),
            Family::V6 => a.is_ipv6(),
        })
        .collect();
    let mut uniq = Vec::new();
    for a in addrs {
        if !uniq.contains(&a) {
            uniq.push(a);
        }
    }
    if uniq.is_empty() {
        return Err(format!("'{host}' has no address of the requested family"));
    }
    Ok(uniq)
}

/// What the link branch received.
enum LinkIn {
    /// Buffers filled by a batched UDP receive.
    Batch(usize),
    /// One packet of this length in the receive buffer.
    One(usize),
}

/// What the tun branch received.
enum TunIn {
    /// Packets in the tun batch.
    Batch,
    /// One packet of this length in the tun buffer.
    One(usize),
}

/// Bytes of framed packets the TCP link joins into one write ([`Link::queue`]).
const TCP_WRITE_BATCH: usize = 65_536;

enum Link {
    Udp(UdpSocket, SocketAddr),
    /// The stream's halves, the frame decoder and the write buffer of [`Link::queue`].
    Tcp(
        tokio::net::tcp::OwnedReadHalf,
        tokio::net::tcp::OwnedWriteHalf,
        openvpn_wire::StreamDecoder,
        Vec<u8>,
    ),
    /// UDP through a SOCKS5 relay (`socks-proxy` with `proto udp`).
    SocksUdp(crate::proxy::UdpRelay),
}

impl Link {
    /// Sends one packet now (TCP: after what [`Link::queue`] holds).
    async fn send(&mut self, pkt: &[u8]) -> std::io::Result<()> {
        match self {
            Link::Udp(s, to) => s.send_to(pkt, *to).await.map(|_| ()),
            Link::SocksUdp(u) => u.send(pkt).await,
            Link::Tcp(..) => {
                self.queue(pkt).await?;
                self.flush().await
            }
        }
    }

    /// Sends one packet of a batch: UDP now; TCP framed into the write buffer, written once
    /// 64 KiB are queued or by [`Link::flush`] (one write per batch, not per packet).
    async fn queue(&mut self, pkt: &[u8]) -> std::io::Result<()> {
        match self {
            Link::Udp(s, to) => s.send_to(pkt, *to).await.map(|_| ()),
            Link::SocksUdp(u) => u.send(pkt).await,
            Link::Tcp(_, w, _, out) => {
                openvpn_wire::frame_tcp(pkt, out)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                if out.len() >= TCP_WRITE_BATCH {
                    let r = w.write_all(out).await;
                    out.clear();
                    r?;
                }
                Ok(())
            }
        }
    }

    /// Writes what [`Link::queue`] holds (TCP; nothing to do for UDP).
    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Link::Tcp(_, w, _, out) if !out.is_empty() => {
                let r = w.write_all(out).await;
                out.clear();
                r
            }
            _ => Ok(()),
        }
    }

    /// Receives one packet into `buf`; returns its length (TCP: reassembled frame).
    async fn recv(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        match self {
            Link::Udp(s, from) => loop {
                buf.resize(65_535, 0);
                let (n, src) = s.recv_from(buf).await?;
                if src.ip().to_canonical() == from.ip().to_canonical() && src.port() == from.port()
                {
                    return Ok(n);
                }
            },
            Link::SocksUdp(u) => u.recv(buf).await,
            Link::Tcp(r, _, dec, _) => loop {
                if let Some(p) = dec
                    .next_packet()
                    .map_err(|e| std::io::Error::other(e.to_string()))?
                {
                    buf.clear();
                    buf.extend_from_slice(&p);
                    return Ok(p.len());
                }
                let mut tmp = [0u8; 16 * 1024];
                let n = r.read(&mut tmp).await?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "server closed the TCP connection",
                    ));
                }
                dec.push(&tmp[..n]);
            },
        }
    }

    /// `passtos`: sets the socket's TOS / traffic class (TCP: after writing what is queued,
    /// which was sealed under the previous value).
    async fn set_tos(&mut self, tos: u8) {
        match self {
            Link::Udp(s, to) => crate::tos::set_tos(s, to.is_ipv6(), tos),
            Link::SocksUdp(u) => crate::tos::set_tos(u.socket(), u.relay().is_ipv6(), tos),
            Link::Tcp(..) => {
                let _ = self.flush().await;
                if let Link::Tcp(_, w, ..) = self {
                    let v6 = w.peer_addr().is_ok_and(|a| a.is_ipv6());
                    crate::tos::set_tos(w.as_ref(), v6, tos);
                }
            }
        }
    }
}

fn tcp_link(stream: TcpStream) -> Link {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    Link::Tcp(r, w, openvpn_wire::StreamDecoder::new(4096), Vec::new())
}

/// Opens the link to `addr`: the server, or the proxy in front of it (which is then asked
/// for `host` and the remote's port).
async fn open_link(
    remote: &Remote,
    host: &str,
    addr: SocketAddr,
    timeout: Duration,
    bind_local: Option<(Option<std::net::IpAddr>, u16)>,
) -> Result<Link, String> {
    use crate::proxy::{self, Proxy};
    match (remote.proto, &remote.proxy) {
        (Proto::Udp, Some(Proxy::Socks(p))) => {
            let server = *resolve(host, remote.port, remote.family)
                .await?
                .first()
                .ok_or("no address")?;
            proxy::UdpRelay::open(addr, timeout, p, server)
                .await
                .map(Link::SocksUdp)
                .map_err(|e| e.to_string())
        }
        (Proto::Udp, Some(Proxy::Http(_))) => {
            Err("an HTTP proxy carries TCP only (use proto tcp-client)".into())
        }
        (Proto::Tcp, Some(Proxy::Http(p))) => {
            proxy::connect_http(addr, timeout, p, host, remote.port)
                .await
                .map(tcp_link)
                .map_err(|e| e.to_string())
        }
        (Proto::Tcp, Some(Proxy::Socks(p))) => {
            proxy::connect_socks(addr, timeout, p, host, remote.port)
                .await
                .map(tcp_link)
                .map_err(|e| e.to_string())
        }
        (Proto::Udp, None) => {
            let any: std::net::IpAddr = if addr.is_ipv4() {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            };
            let bind = match bind_local {
                Some((ip, port)) => SocketAddr::new(ip.unwrap_or(any), port),
                None => SocketAddr::new(any, 0),
            };
            let s = UdpSocket::bind(bind)
                .await
                .map_err(|e| format!("UDP socket: {e}"))?;
            Ok(Link::Udp(s, addr))
        }
        (Proto::Tcp, None) => {
            let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| format!("TCP connect to {addr} timed out"))?
                .map_err(|e| format!("TCP connect to {addr}: {e}"))?;
            Ok(tcp_link(stream))
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One connection to `addr` (the server, or the proxy that is asked for `host`).
async fn connect_once<T: TunBuilder>(
    s: &mut Shared<T>,
    remote: &Remote,
    host: &str,
    addr: SocketAddr,
) -> Outcome {
    // The device kept from the last connection (routes, blocks and DNS stay while we
    // reconnect) would swallow the packets to another server that its routes cover, which
    // has no host route around it: give the device up first.
    if s.device_settings
        .as_ref()
        .is_some_and(|d| d.server != Some(addr.ip()) && d.routes_cover(addr.ip()))
    {
        tracing::warn!(server = %addr, "the tunnel's routes cover the next server: removing the device to reach it");
        s.device = None;
        s.device_settings = None;
    }
    if let (true, Some(path)) = (s.cfg.auth_nocache, &s.cfg.auth_file) {
        // auth-nocache: the file is read again for this connection.
        if let Ok(text) = std::fs::read_to_string(path) {
            let mut it = text.lines().map(str::trim_end).filter(|l| !l.is_empty());
            if let (Some(u), Some(p)) = (it.next(), it.next()) {
                s.credentials = Some((u.to_owned(), p.to_owned()));
            }
        }
    }
    let mut link =
        match open_link(remote, host, addr, s.cfg.connect_timeout, s.cfg.bind_local).await {
            Ok(l) => l,
            Err(e) => return Outcome::Unreachable(e),
        };
    let now = Instant::now();
    let mut seed = [0u8; 32];
    s.rng.fill_bytes(&mut seed);
    let session_cfg = SessionConfig {
        role: Role::Client,
        tls: s.tls.clone(),
        name_check: None,
        wrapping: s.wrapping.clone(),
        options_string: options_string(&s.cfg, remote.proto),
        peer_info: peer_info(&s.cfg),
        credentials: s.credentials.clone(),
        timers: Timers {
            tls_timeout: Duration::from_secs(2),
            hand_window: Duration::from_secs(u64::from(s.cfg.hand_window)),
            reneg_sec: (s.cfg.reneg_sec > 0)
                .then(|| Duration::from_secs(u64::from(s.cfg.reneg_sec))),
            tran_window: Duration::from_secs(3600),
        },
        max_packet: 1250,
        unix_time: unix_now() as u32,
    };
    let policy = ClientPolicy {
        ciphers: s.cfg.data_ciphers.clone(),
        fallback: s.cfg.data_ciphers_fallback.clone(),
        pull_filter: s.cfg.pull_filter.clone(),
        route_nopull: s.cfg.route_nopull,
        allow_compression: allow_compression(&s.cfg),
    };
    let mut ctl = ClientSession::new(Session::new_client(session_cfg, now, seed), policy);
    let digest = DigestKind::from_name(&s.cfg.auth).unwrap_or(DigestKind::Sha1);
    let mut data = DataChannel::new(Role::Client, digest, CompressionFraming::None, None);
    let (window, secs) = s.cfg.replay_window;
    data.set_replay_window(window, u64::from(secs));
    data.set_reneg_limits(Some(s.cfg.reneg_bytes), Some(s.cfg.reneg_pkts));
    let mut mss: Option<u16> = None;
    data.set_send_switch_delay(openvpn_control::dataplane::send_switch_delay(
        Duration::from_secs(u64::from(s.cfg.hand_window)),
        (s.cfg.reneg_sec > 0).then(|| Duration::from_secs(u64::from(s.cfg.reneg_sec))),
    ));
    let sec = |v: Option<u32>| v.map(|x| Duration::from_secs(u64::from(x)));
    let mut keepalive = Keepalive::new(
        now,
        None,
        sec(s.cfg.ping_restart).or(Some(s.cfg.connect_timeout)),
    );
    let mut connected = false;
    let mut pushed_cc_exit = false;
    let mut established_once = false;
    let mut decompress_logged = false;
    let mut rbuf = Vec::with_capacity(65_535);
    let mut tbuf = vec![0u8; 65_535];
    // Batched data path: tun batches always (unless OPENVPN_RS_FAST_IO=0), recvmmsg/GSO on UDP.
    let fast_io = crate::fast::enabled();
    // passtos: the TOS last set on the link socket. The batched path's sends give every
    // message its own TOS (0), so with passtos each packet goes out by itself.
    let mut passtos = s.cfg.passtos.then(crate::tos::PassTos::default);
    let mut fast = match &link {
        Link::Udp(..) if fast_io && passtos.is_some() => {
            tracing::info!("passtos: one datagram per call (batched UDP sends carry no TOS)");
            None
        }
        Link::Udp(sock, _) if fast_io => match FastUdp::new(sock) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(
                    "fast I/O: cannot batch the UDP socket ({e}); one datagram per call"
                );
                None
            }
        },
        _ => None,
    };
    let mut tun_in = TunBatch::new();
    // The sending direction on its own task (fast.rs) with OPENVPN_RS_THREADS=2.
    let split = fast.is_some() && crate::fast::split_enabled();
    let mut sealer: Option<crate::fast::SealTask> = None;
    let connect_deadline = now + s.cfg.connect_timeout;
    // inactive: from the start of each connection, as OpenVPN restarts its timer.
    let mut inactivity = s
        .cfg
        .inactive
        .map(|(secs, bytes)| Inactivity::new(now, secs, bytes));
    loop {
        // Flush control output.
        let now = Instant::now();
        while let Some(p) = ctl.poll_transmit(now) {
            keepalive.on_sent(now);
            if let Err(e) = link.send(&p).await {
                if !established_once {
                    return Outcome::Unreachable(format!("send: {e}"));
                }
            }
        }
        // Control events.
        while let Some(ev) = ctl.poll_event() {
            match ev {
                CtlEvent::TlsEstablished { description } => {
                    emit(s, VpnEvent::TlsEstablished { description })
                }
                CtlEvent::Connected(p) => {
                    let p: PushedOptions = *p;
                    established_once = true;
                    if p.peer_id.is_some() {
                        data.set_peer_id(p.peer_id);
                    }
                    if s.cfg.mssfix > 0 {
                        let overhead = ctl.cipher().map_or(24, |c| c.overhead(4)) as u16;
                        mss = Some(openvpn_wire::mss_for_mssfix(s.cfg.mssfix, overhead));
                        // TSO super-packets are cut so that each sealed datagram fits too.
                        tun_in.set_max_packet(usize::from(
                            s.cfg.mssfix.saturating_sub(20 + 8 + overhead),
                        ));
                    }
                    if let Some(c) = p.compression.as_ref().or(s.cfg.compression.as_ref()) {
                        let framing = framing_for(c);
                        data.set_framing(framing);
                        data.set_decompress_limit(decompress_limit(
                            p.tun_mtu.unwrap_or(s.cfg.tun_mtu),
                        ));
                        if let Some(alg) = framing.decompresses() {
                            tracing::info!(
                                "compression '{}': {alg} packets from the server are decompressed; \
                                 openvpn-rs sends uncompressed (allow-compression {})",
                                c.join(" "),
                                allow_compression(&s.cfg).as_str()
                            );
                        }
                    }
                    pushed_cc_exit = p.cc_exit;
                    let ping = sec(s.cfg.ping).or(sec(p.ping));
                    let restart = sec(s.cfg.ping_restart)
                        .or(sec(p.ping_restart))
                        .or(sec(s.cfg.ping_exit));
                    keepalive.set(ping, restart);
                    let settings = TunSettings::from_profile(&p, &s.cfg, addr.ip());
                    emit(s, VpnEvent::PushedOptions(Box::new(p.clone())));
                    if s.device.is_none() || s.device_settings.as_ref() != Some(&settings) {
                        s.device = None;
                        if let Some(delay) = s.cfg.route_delay.filter(|d| !d.is_zero()) {
                            // route-delay: routes (with the tunnel's addresses, which go up
                            // with them here) wait this long after the connection is up.
                            tracing::info!(
                                "route-delay: configuring the tunnel in {} s",
                                delay.as_secs()
                            );
                            tokio::time::sleep(delay).await;
                        }
                        match s.builder.establish(&settings).await {
                            Ok(d) => {
                                s.device = Some(Arc::new(d));
                                s.device_settings = Some(settings.clone());
                            }
                            Err(e) => return Outcome::Exit(ExitReason::TunError(e)),
                        }
                    }
                    connected = true;
                    emit(
                        s,
                        VpnEvent::Connected {
                            server: addr,
                            settings,
                            cipher: ctl.cipher().map(|c| c.name()).unwrap_or("?"),
                        },
                    );
                }
                CtlEvent::KeysReady {
                    key_id,
                    key2,
                    cipher,
                } => {
                    if let Err(e) = data.install(now, key_id, cipher, &key2) {
                        return Outcome::Restart {
                            reason: format!("data channel keys: {e}"),
                            next_server: false,
                        };
                    }
                    if key_id.value() != 0 {
                        emit(
                            s,
                            VpnEvent::Renegotiated {
                                key_id: key_id.value(),
                            },
                        );
                    }
                }
                CtlEvent::KeyRetired { key_id } => data.retire(now, key_id),
                CtlEvent::Renegotiating { key_id } => emit(
                    s,
                    VpnEvent::Renegotiating {
                        key_id: key_id.value(),
                    },
                ),
                CtlEvent::AuthFailed(reason) => {
                    emit(
                        s,
                        VpnEvent::AuthFailed {
                            reason: reason.clone(),
                        },
                    );
                    return Outcome::Exit(ExitReason::AuthFailed(reason));
                }
                CtlEvent::AuthPending(t) => emit(
                    s,
                    VpnEvent::Info(format!("authentication pending (timeout {t:?})")),
                ),
                CtlEvent::Info(t) => emit(s, VpnEvent::Info(t)),
                CtlEvent::Restart { next_server, text } => {
                    return Outcome::Restart {
                        reason: format!(
                            "server sent RESTART{}",
                            text.map(|t| format!(": {t}")).unwrap_or_default()
                        ),
                        next_server,
                    };
                }
                CtlEvent::Halt(t) => {
                    return Outcome::Exit(ExitReason::Halted(t.unwrap_or_default()));
                }
                CtlEvent::Closed(r) => {
                    let reason = format!("{r:?}");
                    // tls-exit: a failed TLS negotiation ends the client (OpenVPN's
                    // "tls-error" becomes SIGTERM instead of SIGUSR1).
                    if s.cfg.tls_exit && !matches!(r, openvpn_control::CloseReason::Local) {
                        return Outcome::Exit(ExitReason::TlsError(reason));
                    }
                    return if established_once {
                        Outcome::Restart {
                            reason,
                            next_server: false,
                        }
                    } else {
                        Outcome::Unreachable(reason)
                    };
                }
                CtlEvent::PushFailed(reason) => {
                    return Outcome::Restart {
                        reason,
                        next_server: false,
                    };
                }
            }
        }
        if !connected && now >= connect_deadline {
            return Outcome::Unreachable(format!(
                "no answer within connect-timeout ({} s)",
                s.cfg.connect_timeout.as_secs()
            ));
        }
        let deadline = [
            ctl.poll_timeout(),
            keepalive.poll_timeout(),
            (!connected).then_some(connect_deadline),
            inactivity.as_ref().map(Inactivity::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + Duration::from_secs(1))
        .max(now);
        let device = s.device.clone();
        let tun_active = connected && device.is_some() && !s.paused;
        if let (true, Some(f), Link::Udp(sock, server)) = (split, fast.as_ref(), &link) {
            let d = device.as_ref().filter(|_| tun_active);
            let (set, max) = (s.device_settings.as_ref(), tun_in.max_packet());
            f.update_sealer(&mut sealer, sock, *server, &data, d, mss, set, max);
        }
        if let Some(t) = sealer.as_mut().and_then(crate::fast::SealTask::take_sent) {
            keepalive.on_sent(t);
            if let (Some(i), Some(task)) = (inactivity.as_mut(), &sealer) {
                i.on_traffic(t, task.take_bytes());
            }
        }
        let tun_active = tun_active && sealer.is_none();
        tokio::select! {
            r = async {
                match (fast.as_mut(), &mut link) {
                    (Some(f), Link::Udp(sock, _)) => f.recv(sock).await.map(LinkIn::Batch),
                    (_, l) => l.recv(&mut rbuf).await.map(LinkIn::One),
                }
            } => {
                let n = match r {
                    Ok(LinkIn::One(n)) => n,
                    Ok(LinkIn::Batch(n)) => {
                        let now = Instant::now();
                        let (Some(f), Link::Udp(_, server)) = (fast.as_mut(), &link) else {
                            continue;
                        };
                        let mut accepted = false;
                        let res = f
                            .on_link_batch(n, *server, now, unix_now(), &mut data, mss, device.as_deref(), |pkt| {
                                let before = ctl.session().stats().accepted;
                                ctl.handle_datagram(now, pkt);
                                accepted |= ctl.session().stats().accepted > before;
                            })
                            .await;
                        note_decompressed(&data, &mut decompress_logged);
                        if res.received_data || accepted {
                            keepalive.on_received(now);
                        }
                        if let (Some(i), 1..) = (inactivity.as_mut(), res.tun_bytes) {
                            i.on_traffic(now, res.tun_bytes);
                        }
                        if res.occ_exit {
                            return Outcome::Restart { reason: "server sent OCC_EXIT".into(), next_server: false };
                        }
                        continue;
                    }
                    Err(e) => {
                        if established_once {
                            return Outcome::Restart { reason: format!("link error: {e}"), next_server: false };
                        }
                        return Outcome::Unreachable(format!("{e}"));
                    }
                };
                let now = Instant::now();
                let pkt = &mut rbuf[..n];
                let op = pkt.first().map(|b| b >> 3).unwrap_or(0);
                if op == 6 || op == 9 {
                    match data.open(now, unix_now(), pkt) {
                        Ok(Payload::Ip(r)) => {
                            keepalive.on_received(now);
                            if let Some(i) = inactivity.as_mut() {
                                i.on_traffic(now, r.len() as u64);
                            }
                            if let Some(d) = &device {
                                if let Some(mss) = mss {
                                    openvpn_wire::clamp_mss(&mut pkt[r.clone()], mss);
                                }
                                let _ = d.send(&pkt[r]).await;
                            }
                        }
                        Ok(Payload::Decompressed) => {
                            keepalive.on_received(now);
                            if let Some(i) = inactivity.as_mut() {
                                i.on_traffic(now, data.decompressed().len() as u64);
                            }
                            note_decompressed(&data, &mut decompress_logged);
                            if let Some(d) = &device {
                                if let Some(mss) = mss {
                                    openvpn_wire::clamp_mss(data.decompressed_mut(), mss);
                                }
                                let _ = d.send(data.decompressed()).await;
                            }
                        }
                        Ok(Payload::Ping) => keepalive.on_received(now),
                        Ok(Payload::Occ(r)) => {
                            keepalive.on_received(now);
                            if pkt.get(r.start + 16) == Some(&6) {
                                return Outcome::Restart { reason: "server sent OCC_EXIT".into(), next_server: false };
                            }
                        }
                        Err(_) => {}
                    }
                } else {
                    let before = ctl.session().stats().accepted;
                    ctl.handle_datagram(now, pkt);
                    if ctl.session().stats().accepted > before {
                        keepalive.on_received(now);
                    }
                }
            }
            r = async {
                match &device {
                    Some(d) if tun_active && fast_io => d.recv_batch(&mut tun_in).await.map(|()| TunIn::Batch),
                    Some(d) if tun_active => d.recv(&mut tbuf).await.map(TunIn::One),
                    _ => std::future::pending().await,
                }
            } => {
                let Some(d) = &device else { continue };
                let now = Instant::now();
                match r {
                    Ok(TunIn::Batch) => match (fast.as_mut(), &link) {
                        (Some(f), Link::Udp(sock, server)) => {
                            let sent = f
                                .seal_and_send(sock, *server, &mut tun_in, now, &mut data, &mut s.rng, mss, s.device_settings.as_ref(), &**d)
                                .await;
                            if sent > 0 {
                                keepalive.on_sent(now);
                                if let Some(i) = inactivity.as_mut() {
                                    i.on_traffic(now, sent);
                                }
                            }
                        }
                        _ => {
                            for i in 0..tun_in.len() {
                                let pkt = tun_in.get_mut(i);
                                if let Some(sealed) = seal_one(pkt, now, &mut data, &mut s.rng, mss, s.device_settings.as_ref(), &**d).await {
                                    keepalive.on_sent(now);
                                    if let Some(i) = inactivity.as_mut() {
                                        i.on_traffic(now, pkt.len() as u64);
                                    }
                                    if let Some(tos) = passtos.as_mut().and_then(|p| p.update(pkt)) {
                                        link.set_tos(tos).await;
                                    }
                                    let _ = link.queue(sealed.as_slice()).await;
                                }
                            }
                            let _ = link.flush().await;
                        }
                    },
                    Ok(TunIn::One(n)) => {
                        if let Some(sealed) = seal_one(&mut tbuf[..n], now, &mut data, &mut s.rng, mss, s.device_settings.as_ref(), &**d).await {
                            keepalive.on_sent(now);
                            if let Some(i) = inactivity.as_mut() {
                                i.on_traffic(now, n as u64);
                            }
                            if let Some(tos) = passtos.as_mut().and_then(|p| p.update(&tbuf[..n])) {
                                link.set_tos(tos).await;
                            }
                            let _ = link.send(sealed.as_slice()).await;
                        }
                    }
                    Err(_) => {}
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                ctl.handle_timeout(now);
                data.tick(now);
                if let Some(t) = sealer.as_mut().and_then(crate::fast::SealTask::take_sent) {
                    keepalive.on_sent(t);
                    if let (Some(i), Some(task)) = (inactivity.as_mut(), &sealer) {
                        i.on_traffic(t, task.take_bytes());
                    }
                }
                if inactivity.as_ref().is_some_and(|i| i.expired(now)) {
                    // OpenVPN: "Inactivity timeout (--inactive), exiting" (a SIGTERM: the
                    // server is told when explicit-exit-notify asks for it).
                    if connected {
                        exit_notify(s, &mut ctl, &mut data, &mut link, pushed_cc_exit, remote.proto, now).await;
                    }
                    return Outcome::Exit(ExitReason::Inactive);
                }
                match keepalive.handle_timeout(now) {
                    Some(KeepaliveAction::SendPing) if connected => {
                        let mut buf = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, &openvpn_wire::PING_MAGIC);
                        if data.seal(now, &mut buf, &mut s.rng).is_ok() {
                            let _ = link.send(buf.as_slice()).await;
                        }
                    }
                    Some(KeepaliveAction::Restart) => {
                        if s.cfg.ping_exit.is_some() {
                            return Outcome::Exit(ExitReason::PingExit);
                        }
                        let reason = "Inactivity timeout (--ping-restart), restarting".to_owned();
                        return if established_once { Outcome::Restart { reason, next_server: false } } else { Outcome::Unreachable(reason) };
                    }
                    _ => {}
                }
                if data.needs_renegotiation() {
                    ctl.session_mut().renegotiate(now);
                }
            }
            c = s.commands.recv() => match c {
                None | Some(Command::Disconnect) => {
                    let now = Instant::now();
                    if connected {
                        exit_notify(s, &mut ctl, &mut data, &mut link, pushed_cc_exit, remote.proto, now).await;
                    }
                    return Outcome::Exit(ExitReason::Disconnected);
                }
                Some(Command::ReconnectNow) => return Outcome::Restart { reason: "reconnect requested".into(), next_server: false },
                Some(Command::Pause) => { s.paused = true; emit(s, VpnEvent::Paused); }
                Some(Command::Resume) => { s.paused = false; emit(s, VpnEvent::Resumed); }
                Some(Command::Credentials { .. }) => {}
                Some(Command::ChallengeResponse(r)) => { let _ = ctl.session_mut().send_message(Instant::now(), &format!("CR_RESPONSE,{r}")); }
            }
        }
    }
}

/// One packet read from the tun device, sealed (`None`: dropped, answered locally for a
/// blocked family, or no key yet).
async fn seal_one<D: PacketDevice>(
    pkt: &mut [u8],
    now: Instant,
    data: &mut DataChannel,
    rng: &mut StdRng,
    mss: Option<u16>,
    settings: Option<&TunSettings>,
    device: &D,
) -> Option<PacketBuf> {
    // block-ipv4/block-ipv6: answer the blocked family locally, never seal it.
    match settings.map_or(TunVerdict::Forward, |t| t.verdict(pkt)) {
        TunVerdict::Forward => {}
        TunVerdict::Drop => return None,
        TunVerdict::Answer(icmp) => {
            let _ = device.send(&icmp).await;
            return None;
        }
    }
    if let Some(mss) = mss {
        openvpn_wire::clamp_mss(pkt, mss);
    }
    let mut buf = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, pkt);
    data.seal(now, &mut buf, rng).ok()?;
    Some(buf)
}

async fn exit_notify<T: TunBuilder>(
    s: &mut Shared<T>,
    ctl: &mut ClientSession,
    data: &mut DataChannel,
    link: &mut Link,
    cc_exit: bool,
    proto: Proto,
    now: Instant,
) {
    let Some(n) = s.cfg.explicit_exit_notify else {
        return;
    };
    if proto != Proto::Udp {
        return;
    }
    if cc_exit && ctl.send_exit(now) {
        while let Some(p) = ctl.poll_transmit(now) {
            let _ = link.send(&p).await;
        }
    } else {
        for _ in 0..n.clamp(1, 3) {
            let mut buf = PacketBuf::from_payload(
                PacketBuf::DEFAULT_HEADROOM,
                &openvpn_wire::OccMessage::emit_exit(),
            );
            if data.seal(now, &mut buf, &mut s.rng).is_ok() {
                let _ = link.send(buf.as_slice()).await;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = IpAddr::from([0u8; 4]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_hostnames_prefix_names_not_addresses() {
        assert_eq!(
            random_hostname("vpn.example", 0xab),
            "0000000000ab.vpn.example"
        );
        assert_eq!(
            random_hostname("vpn.example", u64::MAX),
            "ffffffffffff.vpn.example"
        );
        assert_eq!(random_hostname("192.0.2.1", 7), "192.0.2.1");
        assert_eq!(random_hostname("2001:db8::1", 7), "2001:db8::1");
    }
}
