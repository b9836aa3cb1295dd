//! The tokio driver: sockets, tun device, timers and signals around [`ServerCore`].

use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use openvpn_plugin::PluginKind;
use openvpn_tun::{PacketDevice, SystemTun, TunConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::auth::{Authenticator, DecisionMsg};
use crate::config::{Family, ServerConfig, Transport};
use crate::core::{Outputs, PeerAddr, ServerCore};
use crate::management;
use crate::plugins::PluginChain;
use crate::udpio;

/// Frames queued to one TCP client before we drop (a stuck client never blocks others),
/// unless `tcp-queue-limit` says otherwise.
pub(crate) const TCP_QUEUE: usize = 256;
/// Bytes of queued frames a TCP client's writer joins into one write.
const TCP_WRITE_BATCH: usize = 65_536;

/// Picks the listen address: without `local`, one IPv6 socket for both families (udp/tcp),
/// or the family's wildcard; `local` must resolve to exactly one address.
pub fn listen_addr(cfg: &ServerConfig) -> anyhow::Result<SocketAddr> {
    let Some(local) = &cfg.local else {
        return Ok(match cfg.family {
            Family::V4 => SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), cfg.port),
            Family::Any | Family::V6 => {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), cfg.port)
            }
        });
    };
    let addrs: Vec<SocketAddr> = (local.as_str(), cfg.port)
        .to_socket_addrs()
        .with_context(|| format!("local '{local}' does not resolve"))?
        .filter(|a| match cfg.family {
            Family::Any => true,
            Family::V4 => a.is_ipv4(),
            Family::V6 => a.is_ipv6(),
        })
        .collect();
    match addrs.as_slice() {
        [one] => Ok(*one),
        [] => bail!("local '{local}' has no address of the family that 'proto' asks for"),
        many => bail!(
            "local '{local}' resolves to {} addresses ({}); give 'local' a single address",
            many.len(),
            many.iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Binds the server UDP socket; an IPv6 address gets IPV6_V6ONLY off unless `family` is V6.
pub fn bind_udp(addr: SocketAddr, family: Family) -> anyhow::Result<UdpSocket> {
    bind_udp_with(addr, family, false)
}

/// [`bind_udp`], with SO_REUSEPORT set when `reuse_port` (the sockets of `workers N`).
pub(crate) fn bind_udp_with(
    addr: SocketAddr,
    family: Family,
    reuse_port: bool,
) -> anyhow::Result<UdpSocket> {
    let domain = if addr.is_ipv6() {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(family == Family::V6)?;
    }
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())
        .with_context(|| format!("cannot bind UDP {addr}"))?;
    Ok(UdpSocket::from_std(s.into())?)
}

/// Binds and listens on the server TCP socket (dual-stack like [`bind_udp`]).
pub fn bind_tcp(addr: SocketAddr, family: Family) -> anyhow::Result<TcpListener> {
    let domain = if addr.is_ipv6() {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(family == Family::V6)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())
        .with_context(|| format!("cannot bind TCP {addr}"))?;
    s.listen(128)?;
    Ok(TcpListener::from_std(s.into())?)
}

/// What a TCP connection's reader task reports.
pub(crate) enum TcpEvent {
    Packet(PeerAddr, Vec<u8>),
    Closed(u64),
}

/// Re-reads the configuration for SIGHUP.
pub type Reloader = Arc<dyn Fn() -> Result<ServerConfig, String> + Send + Sync>;

/// What an embedder adds around the configuration ([`serve_with`], [`run_with`]).
#[derive(Default)]
pub struct ServeOptions {
    /// Reloads: each message on the channel re-reads the configuration through the reloader
    /// (what SIGHUP does in [`run`]).
    pub reload: Option<(Reloader, mpsc::UnboundedReceiver<()>)>,
    /// Decides on clients after the auth script, before the management interface
    /// (see [`crate::auth`]).
    pub authenticator: Option<Arc<dyn Authenticator>>,
    /// The management listener and files opened before the privilege drop ([`run_with`]
    /// opens them as root); `None`: opened when serving starts.
    pub prebound: Option<crate::prebind::Prebound>,
    /// Operating-system SIGUSR1/SIGUSR2 ([`run_with`] installs the handlers): handled as the
    /// management interface's `signal SIGUSR1|SIGUSR2` (restart every client and re-read the
    /// configuration; log the client list).
    pub os_signals: Option<mpsc::UnboundedReceiver<management::Signal>>,
    /// The `plugin` modules, already opened ([`run_with`] opens them before dropping
    /// privileges); `None`: opened from the configuration when serving starts.
    pub plugins: Option<Arc<PluginChain>>,
}

impl ServeOptions {
    /// Options with an authenticator.
    pub fn with_authenticator(authenticator: Arc<dyn Authenticator>) -> Self {
        ServeOptions {
            authenticator: Some(authenticator),
            ..ServeOptions::default()
        }
    }
}

/// Runs the server until SIGTERM/SIGINT: creates the tun device, binds the socket, serves.
/// SIGHUP calls `reloader` and applies the result without dropping clients.
pub async fn run(cfg: ServerConfig, reloader: Option<Reloader>) -> anyhow::Result<()> {
    run_with(cfg, reloader, ServeOptions::default()).await
}

/// Like [`run`], with [`ServeOptions`] (e.g. an [`Authenticator`]); SIGHUP drives `reloader`
/// (a reload channel in `opts` is replaced by it).
pub async fn run_with(
    cfg: ServerConfig,
    reloader: Option<Reloader>,
    mut opts: ServeOptions,
) -> anyhow::Result<()> {
    // Modules are opened first, as root (OpenVPN opens them before the device).
    let plugins = PluginChain::load(&cfg)?;
    let (v4, v6) = crate::pool::PoolShape::new(cfg.server_v4, cfg.server_v6).server_addresses();
    let tun_cfg = TunConfig {
        name: (cfg.dev != "tun").then(|| cfg.dev.clone()),
        mtu: cfg.tun_mtu,
        ipv4: v4,
        ipv6: v6,
        routes_v4: cfg
            .routes
            .iter()
            .map(|(n, m)| (*n, u32::from(*m).leading_ones() as u8, None))
            .collect(),
        routes_v6: cfg.routes_v6.iter().map(|(n, p)| (*n, *p, None)).collect(),
    };
    let fast = udpio::enabled();
    let tun = Arc::new(SystemTun::create(&tun_cfg, fast).context("cannot create the tun device")?);
    info!(
        "TUN/TAP device {} opened (fast I/O {}, tun offload {})",
        tun.name(),
        if fast {
            "on"
        } else {
            "off: OPENVPN_RS_FAST_IO=0"
        },
        if tun.offload_enabled() { "on" } else { "off" }
    );
    let addr = listen_addr(&cfg)?;
    let workers = cfg.workers.max(1);
    let listeners = match cfg.transport {
        Transport::Udp if workers > 1 => {
            let sockets = crate::workers::bind_udp_sockets(addr, cfg.family, workers)?;
            info!("UDPv6/UDPv4 link local (bound): {addr} ({workers} sockets, SO_REUSEPORT)");
            crate::workers::Listeners::Udp(sockets)
        }
        Transport::Udp => {
            let socket = bind_udp(addr, cfg.family)?;
            info!("UDPv6/UDPv4 link local (bound): {addr}");
            crate::workers::Listeners::Udp(vec![socket])
        }
        Transport::Tcp => {
            let listener = bind_tcp(addr, cfg.family)?;
            if workers > 1 {
                info!("TCPv6/TCPv4 link local (bound): {addr} ({workers} workers)");
            } else {
                info!("TCPv6/TCPv4 link local (bound): {addr}");
            }
            crate::workers::Listeners::Tcp { listener, workers }
        }
    };
    let dev = tun.name().to_owned();
    if let Some(chain) = &plugins {
        // UP as root, before user/group (down-root starts its root helper here).
        if chain.handles(PluginKind::Up) && !chain.tun_hook(PluginKind::Up, &cfg, &dev) {
            bail!("a plugin's PLUGIN_UP failed");
        }
    }
    if let Some(cmd) = &cfg.up {
        run_tun_script(cmd, "up", &cfg, &dev).context("the 'up' script failed")?;
    }
    // As root, before user/group: management socket, status and pool files (OpenVPN's order).
    opts.prebound = Some(crate::prebind::Prebound::open(&cfg).await?);
    crate::process::after_setup(&cfg)?;
    info!("Initialization Sequence Completed");
    let (shutdown, hup_rx, usr_rx) = signals()?;
    if let Some(r) = reloader {
        opts.reload = Some((r, hup_rx));
    }
    opts.os_signals = Some(usr_rx);
    opts.plugins = plugins.clone();
    let down_cfg = (plugins.is_some() || cfg.down.is_some()).then(|| cfg.clone());
    // One worker is the plain server (no shard), as with `serve_with`.
    let served = crate::workers::serve_workers(cfg, tun, listeners, shutdown, opts).await;
    if let Some(cmd) = down_cfg.as_ref().and_then(|c| c.down.as_deref()) {
        if let Some(cfg) = &down_cfg {
            if let Err(e) = run_tun_script(cmd, "down", cfg, &dev) {
                warn!("the 'down' script failed: {e:#}");
            }
        }
    }
    if let (Some(chain), Some(cfg)) = (plugins, down_cfg) {
        if chain.handles(PluginKind::Down) && !chain.tun_hook(PluginKind::Down, &cfg, &dev) {
            warn!("a plugin's PLUGIN_DOWN failed");
        }
    }
    served
}

/// Runs the server's `up` or `down` script as OpenVPN does: `/bin/sh -c "CMD dev tun_mtu
/// link_mtu ifconfig_local ifconfig_netmask init"` with `script_type`, `dev`, `tun_mtu`,
/// `ifconfig_local`, `ifconfig_netmask` (and the IPv6 ones) and `setenv` variables in its
/// environment; a non-zero exit is an error.
fn run_tun_script(cmd: &str, kind: &str, cfg: &ServerConfig, dev: &str) -> anyhow::Result<()> {
    let (v4, v6) = crate::pool::PoolShape::new(cfg.server_v4, cfg.server_v6).server_addresses();
    let (local, mask) = v4
        .map(|(a, bits)| {
            let mask =
                std::net::Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0));
            (a.to_string(), mask.to_string())
        })
        .unwrap_or_default();
    let link_mtu = cfg.tun_mtu + 41;
    let line = format!("{cmd} {dev} {} {link_mtu} {local} {mask} init", cfg.tun_mtu);
    let mut c = std::process::Command::new("/bin/sh");
    c.arg("-c").arg(&line);
    for (k, v) in &cfg.setenv {
        c.env(k, v);
    }
    c.env("script_type", kind)
        .env("script_context", "init")
        .env("dev", dev)
        .env("dev_type", "tun")
        .env("tun_mtu", cfg.tun_mtu.to_string())
        .env("link_mtu", link_mtu.to_string())
        .env("ifconfig_local", &local)
        .env("ifconfig_netmask", &mask)
        .env("script_security", cfg.script_security.to_string());
    if let Some((a, bits)) = v6 {
        c.env("ifconfig_ipv6_local", a.to_string())
            .env("ifconfig_ipv6_netbits", bits.to_string());
    }
    let status = c.status().with_context(|| format!("cannot run '{line}'"))?;
    if !status.success() {
        bail!("'{line}' exited with {status}");
    }
    info!("{kind} script ran: {line}");
    Ok(())
}

/// SIGTERM/SIGINT as a future (logs "SIGTERM received"), and SIGHUP as a channel.
fn signals() -> anyhow::Result<(
    impl std::future::Future<Output = ()>,
    mpsc::UnboundedReceiver<()>,
    mpsc::UnboundedReceiver<management::Signal>,
)> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
        info!("SIGTERM received, shutting down");
    };
    let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let (hup_tx, hup_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while sighup.recv().await.is_some() {
            if hup_tx.send(()).is_err() {
                break;
            }
        }
    });
    // SIGUSR1/SIGUSR2 would otherwise end the process (their default action): OpenVPN's
    // meanings instead, as through the management interface.
    let (usr_tx, usr_rx) = mpsc::unbounded_channel();
    for (kind, signal) in [
        (
            tokio::signal::unix::SignalKind::user_defined1(),
            management::Signal::Usr1,
        ),
        (
            tokio::signal::unix::SignalKind::user_defined2(),
            management::Signal::Usr2,
        ),
    ] {
        let mut stream = tokio::signal::unix::signal(kind)?;
        let tx = usr_tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(signal).is_err() {
                    break;
                }
            }
        });
    }
    Ok((shutdown, hup_rx, usr_rx))
}

/// Serves clients on an already bound socket and an existing packet device until
/// `shutdown` completes. Used by [`run`] and by in-memory tests (e.g. with a `MemoryTun`).
pub async fn serve<D: PacketDevice + 'static>(
    cfg: ServerConfig,
    tun: Arc<D>,
    udp: Option<UdpSocket>,
    tcp: Option<TcpListener>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    serve_with(cfg, tun, udp, tcp, shutdown, ServeOptions::default()).await
}

/// Like [`serve`]; each message on the trigger channel reloads the configuration through the
/// reloader (what SIGHUP does in [`run`]).
pub async fn serve_with_reload<D: PacketDevice + 'static>(
    cfg: ServerConfig,
    tun: Arc<D>,
    udp: Option<UdpSocket>,
    tcp: Option<TcpListener>,
    shutdown: impl std::future::Future<Output = ()>,
    reload: Option<(Reloader, mpsc::UnboundedReceiver<()>)>,
) -> anyhow::Result<()> {
    let opts = ServeOptions {
        reload,
        ..ServeOptions::default()
    };
    serve_with(cfg, tun, udp, tcp, shutdown, opts).await
}

/// Serves clients on an already bound socket and an existing packet device until `shutdown`
/// completes, with [`ServeOptions`] (reloads, an [`Authenticator`]).
pub async fn serve_with<D: PacketDevice + 'static>(
    cfg: ServerConfig,
    tun: Arc<D>,
    udp: Option<UdpSocket>,
    tcp: Option<TcpListener>,
    shutdown: impl std::future::Future<Output = ()>,
    opts: ServeOptions,
) -> anyhow::Result<()> {
    crate::workers::serve_one(cfg, tun, udp, tcp, shutdown, opts).await
}

/// The status file and `ifconfig-pool-persist` timers of `cfg` (the first persist tick,
/// which is immediate, already taken).
pub(crate) async fn file_timers(
    cfg: &ServerConfig,
) -> (tokio::time::Interval, tokio::time::Interval) {
    let status_every = tokio::time::interval(Duration::from_secs(
        cfg.status.as_ref().map_or(60, |s| u64::from(s.1.max(1))),
    ));
    let persist_secs = cfg
        .ifconfig_pool_persist
        .as_ref()
        .map_or(0, |p| u64::from(p.1));
    let mut persist_every = tokio::time::interval(Duration::from_secs(if persist_secs == 0 {
        86_400 * 365
    } else {
        persist_secs
    }));
    persist_every.tick().await;
    (status_every, persist_every)
}

/// Where a turn's side effects go: `>CLIENT:` notifications, authenticator calls and hook
/// scripts, all off the packet path.
pub(crate) struct SideChannels<'a> {
    /// The management interface's notifications, if it runs.
    pub(crate) notify: Option<&'a mpsc::UnboundedSender<management::Notify>>,
    /// The embedder's authenticator, if any.
    pub(crate) authenticator: Option<&'a Arc<dyn Authenticator>>,
    /// Where the authenticator's decisions come back.
    pub(crate) decisions: &'a mpsc::UnboundedSender<DecisionMsg>,
    /// Where hook script results come back.
    pub(crate) jobs: &'a mpsc::UnboundedSender<crate::scripts::JobResult>,
    /// The `plugin` modules, called with the hook jobs.
    pub(crate) plugins: Option<&'a Arc<PluginChain>>,
}

impl SideChannels<'_> {
    /// Sends the notifications and starts the authenticator calls and scripts of `out`.
    pub(crate) fn dispatch(&self, out: &mut Outputs) {
        match self.notify {
            Some(tx) => {
                for n in out.mgmt.drain(..) {
                    let _ = tx.send(n);
                }
            }
            None => out.mgmt.clear(),
        }
        for call in out.auth.drain(..) {
            // Off the packet path: an authenticator may block.
            if let Some(a) = self.authenticator.cloned() {
                let tx = self.decisions.clone();
                tokio::task::spawn_blocking(move || call.dispatch(a.as_ref(), tx));
            }
        }
        for job in out.jobs.drain(..) {
            let tx = self.jobs.clone();
            let plugins = self.plugins.cloned();
            tokio::task::spawn_blocking(move || {
                crate::plugins::run_job(plugins.as_deref(), &job, |r| match r {
                    Some(r) => tx.send(r).is_ok(),
                    None => !tx.is_closed(),
                });
            });
        }
    }
}

/// Longest a shutdown waits for clients to acknowledge their exit notification (covers one
/// retransmission of a lost datagram).
const EXIT_DRAIN: Duration = Duration::from_secs(3);

/// Starts shutting down: exit notifications go out; returns when the loop has to stop
/// (now, when there is nobody to wait for).
pub(crate) fn begin_exit(core: &mut ServerCore, out: &mut Outputs) -> Option<Instant> {
    let now = Instant::now();
    let waiting = core.shutdown(now, out);
    if waiting > 0 {
        info!("exit notification sent to {waiting} client(s); waiting for their acknowledgements");
    }
    // One more turn flushes the notifications; then the loop stops when all are acknowledged.
    Some(if waiting > 0 { now + EXIT_DRAIN } else { now })
}

/// Writes the `ifconfig-pool-persist` file (atomically: temporary file, then rename).
pub(crate) fn write_pool_persist(core: &ServerCore, kept: Option<&crate::prebind::KeptFile>) {
    let Some((path, _)) = &core.config().ifconfig_pool_persist else {
        return;
    };
    if let Err(e) = crate::prebind::write(kept, path, &core.pool_persist_text()) {
        warn!("ifconfig-pool-persist {}: {e}", path.display());
    }
}

/// Applies a re-read configuration (or logs why there is none) without dropping clients.
pub(crate) fn apply_config(core: &mut ServerCore, reread: Result<ServerConfig, String>) {
    match reread {
        Ok(new) => match core.reload(new) {
            Ok(ignored) => {
                info!("SIGHUP: configuration reloaded; connected clients kept");
                for i in ignored {
                    warn!("SIGHUP: '{i}' cannot change while running; restart to apply");
                }
            }
            Err(e) => warn!("SIGHUP: reload failed, keeping the old configuration: {e}"),
        },
        Err(e) => warn!("SIGHUP: cannot read the configuration, keeping the old one: {e}"),
    }
}

/// Starts the management interface if the config has one: requests go to `req_tx`; returns
/// the sender for `>CLIENT:` notifications.
pub(crate) async fn start_management(
    cfg: &ServerConfig,
    req_tx: &mpsc::Sender<management::Request>,
    prebound: Option<management::Listener>,
) -> anyhow::Result<Option<mpsc::UnboundedSender<management::Notify>>> {
    let Some(m) = &cfg.management else {
        return Ok(None);
    };
    let listener = match prebound {
        Some(l) => l,
        None => crate::prebind::bind_management(&m.listen).await?,
    };
    let password = match &m.password_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("management password file {}", p.display()))?
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
        ),
        None => None,
    };
    let (v4, v6) = crate::pool::PoolShape::new(cfg.server_v4, cfg.server_v6).server_addresses();
    let settings = management::Settings {
        password,
        client_auth: cfg.management_client_auth,
        hold: cfg.management_hold,
        local_v4: v4.map(|(a, _)| a.to_string()),
        local_v6: v6.map(|(a, _)| a.to_string()),
        log_cache: cfg.management_log_cache,
    };
    let (ntx, nrx) = mpsc::unbounded_channel();
    tokio::spawn(management::serve(listener, settings, req_tx.clone(), nrx));
    Ok(Some(ntx))
}

/// Serves `/metrics` if the config has `metrics-listen`; requests go to `req_tx`.
pub(crate) async fn start_metrics(
    cfg: &ServerConfig,
    req_tx: &mpsc::Sender<management::Request>,
) -> anyhow::Result<()> {
    if let Some(addr) = cfg.metrics_listen {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("metrics-listen {addr}"))?;
        info!("metrics on http://{addr}/metrics");
        tokio::spawn(crate::metrics::serve(l, req_tx.clone()));
    }
    Ok(())
}

/// Sends what the core produced without batched UDP: one datagram per call, and the tun
/// packets one per call or, when the core filled `out.tun_batch`, as one coalesced batch.
pub(crate) async fn flush<D: PacketDevice>(
    out: &mut Outputs,
    udp: Option<&UdpSocket>,
    tun: &D,
    tcp: &mut std::collections::HashMap<u64, mpsc::Sender<Vec<u8>>>,
) {
    for (peer, pkt) in out.link.drain(..) {
        match peer.conn {
            None => {
                if let Some(u) = udp {
                    let _ = u.send_to(&pkt, peer.addr).await;
                }
            }
            Some(c) => {
                if let Some(w) = tcp.get(&c) {
                    let mut framed = Vec::with_capacity(pkt.len() + 2);
                    if openvpn_wire::frame_tcp(&pkt, &mut framed).is_ok() {
                        let _ = w.try_send(framed);
                    }
                }
            }
        }
    }
    for pkt in out.tun.drain(..) {
        let _ = tun.send(&pkt).await;
    }
    if let Some(batch) = out.tun_batch.as_mut().filter(|b| !b.is_empty()) {
        let _ = tun.send_batch(batch).await;
        batch.clear();
    }
    for c in out.close_conns.drain(..) {
        tcp.remove(&c);
    }
}

/// Where a TCP connection's packets and writer go (one per worker).
pub(crate) struct TcpRoute {
    /// Packets and the close of the connection.
    pub(crate) events: mpsc::Sender<TcpEvent>,
    /// The connection's id and writer, when it is accepted.
    pub(crate) new_conn: mpsc::Sender<(u64, mpsc::Sender<Vec<u8>>)>,
}

/// Accepts TCP connections; connection `id` goes to `routes[id % routes.len()]`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    routes: Vec<TcpRoute>,
    queue: usize,
    port_share: Option<(String, u16)>,
) {
    if routes.is_empty() {
        return;
    }
    let routes = Arc::new(routes);
    let port_share = port_share.map(Arc::new);
    let mut next_id = 1u64;
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let id = next_id;
        next_id += 1;
        let routes = Arc::clone(&routes);
        match &port_share {
            None => serve_tcp_client(stream, from, id, &routes, queue).await,
            Some(share) => {
                // The first bytes decide, without holding up other connections.
                let share = Arc::clone(share);
                tokio::spawn(async move {
                    if crate::port_share::is_openvpn(&stream).await {
                        serve_tcp_client(stream, from, id, &routes, queue).await;
                    } else {
                        crate::port_share::proxy(stream, from, &share.0, share.1).await;
                    }
                });
            }
        }
    }
}

/// Hands one accepted TCP connection to its worker: a writer task (frames queued to it go
/// out joined, up to 64 KiB per write) and a reader task (frames to the worker).
async fn serve_tcp_client(
    stream: tokio::net::TcpStream,
    from: SocketAddr,
    id: u64,
    routes: &[TcpRoute],
    queue: usize,
) {
    let route = &routes[(id % routes.len() as u64) as usize];
    let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(queue.max(1));
    if route.new_conn.send((id, wtx)).await.is_err() {
        return;
    }
    let (mut rd, mut wr) = stream.into_split();
    tokio::spawn(async move {
        let mut buf = Vec::with_capacity(TCP_WRITE_BATCH);
        while let Some(frame) = wrx.recv().await {
            buf.clear();
            buf.extend_from_slice(&frame);
            while buf.len() < TCP_WRITE_BATCH {
                match wrx.try_recv() {
                    Ok(f) => buf.extend_from_slice(&f),
                    Err(_) => break,
                }
            }
            if wr.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let events = route.events.clone();
    tokio::spawn(async move {
        let peer = PeerAddr {
            addr: from,
            conn: Some(id),
        };
        let mut dec = openvpn_wire::StreamDecoder::new(4096);
        let mut buf = vec![0u8; 16 * 1024];
        'conn: loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            dec.push(&buf[..n]);
            loop {
                match dec.next_packet() {
                    Ok(Some(p)) => {
                        if events.send(TcpEvent::Packet(peer, p)).await.is_err() {
                            break 'conn;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => break 'conn,
                }
            }
        }
        let _ = events.send(TcpEvent::Closed(id)).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_and_down_scripts_get_openvpn_arguments_and_environment() {
        let dir = std::env::temp_dir().join(format!("ovrs-updown-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let log = dir.join("log");
        let script = dir.join("updown.sh");
        std::fs::write(
            &script,
            format!(
                "echo \"$script_type $dev $ifconfig_local $ifconfig_netmask $MY: $*\" >> {}\n",
                log.display()
            ),
        )
        .expect("script");
        let cmd = format!("sh {}", script.display());
        let cfg = ServerConfig {
            server_v4: Some((
                "10.8.0.0".parse().expect("ip"),
                "255.255.255.0".parse().expect("ip"),
            )),
            setenv: vec![("MY".into(), "x".into())],
            ..ServerConfig::default()
        };
        run_tun_script(&cmd, "up", &cfg, "tun7").expect("up ran");
        run_tun_script(&cmd, "down", &cfg, "tun7").expect("down ran");
        let text = std::fs::read_to_string(&log).expect("log");
        assert_eq!(
            text,
            "up tun7 10.8.0.1 255.255.255.0 x: tun7 1500 1541 10.8.0.1 255.255.255.0 init\n\
             down tun7 10.8.0.1 255.255.255.0 x: tun7 1500 1541 10.8.0.1 255.255.255.0 init\n"
        );
        let e = run_tun_script("exit 3", "up", &cfg, "tun7").expect_err("a failing up");
        assert!(e.to_string().contains("exited"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
