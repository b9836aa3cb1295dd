//! The tokio driver: sockets, tun device, timers and signals around [`ServerCore`].

use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use openvpn_tun::{PacketDevice, SystemTun, TunBatch, TunConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::auth::{Authenticator, DecisionMsg};
use crate::config::ManagementListen;
use crate::config::{Family, ServerConfig, Transport};
use crate::core::{Outputs, PeerAddr, ServerCore};
use crate::management::{self, CoreRequest, Signal};
use crate::status;
use crate::udpio::{self, FastUdp};

/// Largest datagram we accept.
const MAX_DATAGRAM: usize = 65_535;
/// Frames queued to one TCP client before we drop (a stuck client never blocks others).
const TCP_QUEUE: usize = 256;

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

/// What the UDP branch received.
enum UdpIn {
    /// Buffers filled by a batched receive.
    Batch(usize),
    /// One datagram (plain path).
    One(usize, SocketAddr),
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
}

impl ServeOptions {
    /// Options with an authenticator.
    pub fn with_authenticator(authenticator: Arc<dyn Authenticator>) -> Self {
        ServeOptions {
            reload: None,
            authenticator: Some(authenticator),
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
    let pool = crate::pool::AddressPool::new(cfg.server_v4, cfg.server_v6);
    let (v4, v6) = pool.server_addresses();
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
    let workers = cfg.workers;
    if workers > 1 {
        let listeners = match cfg.transport {
            Transport::Udp => {
                let sockets = crate::workers::bind_udp_sockets(addr, cfg.family, workers)?;
                info!("UDPv6/UDPv4 link local (bound): {addr} ({workers} sockets, SO_REUSEPORT)");
                crate::workers::Listeners::Udp(sockets)
            }
            Transport::Tcp => {
                let listener = bind_tcp(addr, cfg.family)?;
                info!("TCPv6/TCPv4 link local (bound): {addr} ({workers} workers)");
                crate::workers::Listeners::Tcp { listener, workers }
            }
        };
        crate::process::after_setup(&cfg)?;
        info!("Initialization Sequence Completed");
        let (shutdown, hup_rx) = signals()?;
        if let Some(r) = reloader {
            opts.reload = Some((r, hup_rx));
        }
        return crate::workers::serve_workers(cfg, tun, listeners, shutdown, opts).await;
    }
    let (udp, tcp) = match cfg.transport {
        Transport::Udp => (Some(bind_udp(addr, cfg.family)?), None),
        Transport::Tcp => (None, Some(bind_tcp(addr, cfg.family)?)),
    };
    info!(
        "{} link local (bound): {addr}",
        if udp.is_some() {
            "UDPv6/UDPv4"
        } else {
            "TCPv6/TCPv4"
        }
    );
    crate::process::after_setup(&cfg)?;
    info!("Initialization Sequence Completed");
    let (shutdown, hup_rx) = signals()?;
    if let Some(r) = reloader {
        opts.reload = Some((r, hup_rx));
    }
    serve_with(cfg, tun, udp, tcp, shutdown, opts).await
}

/// SIGTERM/SIGINT as a future (logs "SIGTERM received"), and SIGHUP as a channel.
fn signals() -> anyhow::Result<(
    impl std::future::Future<Output = ()>,
    mpsc::UnboundedReceiver<()>,
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
    Ok((shutdown, hup_rx))
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
        authenticator: None,
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
    let ServeOptions {
        reload,
        authenticator,
    } = opts;
    let (reloader, mut reload_rx) = match reload {
        Some((r, rx)) => (Some(r), Some(rx)),
        None => (None, None),
    };
    let now = Instant::now();
    let mut core = ServerCore::new(cfg.clone(), now).map_err(anyhow::Error::msg)?;
    core.set_authenticator(authenticator.is_some());
    let (decision_tx, mut decision_rx) = mpsc::unbounded_channel::<DecisionMsg>();
    let udp = udp.map(Arc::new);
    let (tcp_tx, mut tcp_rx) = mpsc::channel::<TcpEvent>(1024);
    let mut tcp_writers: std::collections::HashMap<u64, mpsc::Sender<Vec<u8>>> = Default::default();
    let (new_conn_tx, mut new_conn_rx) = mpsc::channel::<(u64, mpsc::Sender<Vec<u8>>)>(64);
    if let Some(listener) = tcp {
        let route = TcpRoute {
            events: tcp_tx.clone(),
            new_conn: new_conn_tx,
        };
        tokio::spawn(accept_loop(listener, vec![route]));
    }
    let (mut status_every, mut persist_every) = file_timers(&cfg).await;
    let mut udp_buf = vec![0u8; MAX_DATAGRAM];
    let mut tun_buf = vec![0u8; MAX_DATAGRAM];
    let mut out = Outputs::default();
    // Batched data path (UDP): recvmmsg/GRO, GSO sends, tun batches; else one packet per call.
    let fast_io = udpio::enabled();
    let mut fast = match (&udp, fast_io) {
        (Some(u), true) => match FastUdp::new(u) {
            Ok(f) => {
                out.tun_batch = Some(TunBatch::new());
                Some(f)
            }
            Err(e) => {
                warn!("fast I/O: cannot batch the UDP socket ({e}); one datagram per call");
                None
            }
        },
        _ => None,
    };
    let mut tun_in = TunBatch::new();
    // The sending direction (tun -> seal -> GSO) on its own task with OPENVPN_RS_THREADS=2.
    let mut sender = match (&udp, fast.is_some() && udpio::split_enabled()) {
        (Some(u), true) => udpio::SendTask::spawn(Arc::clone(u), Arc::clone(&tun), &core)
            .inspect_err(|e| warn!("send task: {e}; one task for both directions"))
            .ok(),
        _ => None,
    };
    info!(
        "data path: {}",
        match (&sender, fast.is_some()) {
            (Some(_), _) => "send direction on its own task (parallel to receive)",
            (None, true) => "one task for both directions (OPENVPN_RS_THREADS=2: a send task)",
            (None, false) => "one task for both directions",
        }
    );
    let (job_tx, mut job_rx) = mpsc::unbounded_channel::<crate::scripts::JobResult>();
    let (req_tx, mut req_rx) = mpsc::channel::<management::Request>(64);
    let notify_tx = start_management(&cfg, &req_tx).await?;
    if notify_tx.is_some() && cfg.management_hold {
        core.set_hold(true);
        info!("management-hold: new clients wait for 'hold release'");
    }
    start_metrics(&cfg, &req_tx).await?;
    drop(req_tx);
    tokio::pin!(shutdown);
    // Shutting down: until this instant, the loop runs on so that exit notifications
    // (explicit-exit-notify) are retransmitted until the clients acknowledge them.
    let mut draining: Option<Instant> = None;
    loop {
        if let Some(d) = draining {
            if Instant::now() >= d || core.exit_pending() == 0 {
                break;
            }
        }
        let deadline = core
            .next_timeout(Instant::now())
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        let deadline = draining.map_or(deadline, |d| d.min(deadline));
        let sleep = tokio::time::sleep_until(deadline.into());
        tokio::select! {
            r = async {
                match (&udp, fast.as_mut()) {
                    (Some(u), Some(f)) => f.recv(u).await.map(UdpIn::Batch),
                    (Some(u), None) => u.recv_from(&mut udp_buf).await.map(|(n, a)| UdpIn::One(n, a)),
                    _ => std::future::pending().await,
                }
            } => {
                match r {
                    Ok(UdpIn::Batch(n)) => {
                        if let Some(f) = fast.as_mut() {
                            f.on_link_batch(n, &mut core, Instant::now(), &mut out);
                        }
                    }
                    Ok(UdpIn::One(n, from)) => {
                        let peer = PeerAddr { addr: from, conn: None };
                        core.on_link_packet(Instant::now(), peer, &mut udp_buf[..n], &mut out);
                    }
                    Err(e) => warn!("UDP receive: {e}"),
                }
            }
            r = async {
                if sender.is_some() {
                    std::future::pending().await
                } else if fast_io {
                    tun.recv_batch(&mut tun_in).await.map(|()| None)
                } else {
                    tun.recv(&mut tun_buf).await.map(Some)
                }
            } => {
                let now = Instant::now();
                match r {
                    Ok(Some(n)) => core.on_tun_packet(now, &tun_buf[..n], &mut out),
                    Ok(None) => match fast.as_mut() {
                        Some(f) => f.on_tun_batch(&tun_in, &mut core, now, &mut out),
                        None => {
                            for pkt in tun_in.iter() {
                                core.on_tun_packet(now, pkt, &mut out);
                            }
                        }
                    },
                    Err(e) => {
                        warn!("tun read: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            Some(ev) = tcp_rx.recv() => {
                match ev {
                    TcpEvent::Packet(peer, mut pkt) => core.on_link_packet(Instant::now(), peer, &mut pkt, &mut out),
                    TcpEvent::Closed(conn) => {
                        tcp_writers.remove(&conn);
                        core.on_conn_closed(conn, &mut out);
                    }
                }
            }
            Some((conn, w)) = new_conn_rx.recv() => { tcp_writers.insert(conn, w); }
            Some(r) = job_rx.recv() => core.on_job_result(Instant::now(), r, &mut out),
            Some((cid, kid, d)) = decision_rx.recv() => {
                if !core.authenticator_decision(Instant::now(), cid, kid, d, &mut out) {
                    debug!("authenticator: decision for client {cid} key {kid} not pending (ignored)");
                }
            }
            _ = persist_every.tick() => write_pool_persist(&core),
            _ = sleep => {
                if let Some(s) = sender.as_mut() {
                    s.feed_keepalive(&mut core);
                }
                core.on_timeout(Instant::now(), &mut out);
            }
            _ = status_every.tick() => {
                if let Some((path, _)) = &cfg.status {
                    if let Err(e) = status::write(path, cfg.status_version, &core) {
                        warn!("status file {}: {e}", path.display());
                    }
                }
            }
            Some(()) = async { match reload_rx.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                apply_reload(&mut core, reloader.as_ref());
            }
            Some((req, reply)) = req_rx.recv() => {
                let now = Instant::now();
                let mut stop = false;
                match &req {
                    CoreRequest::Signal(Signal::Hup) => apply_reload(&mut core, reloader.as_ref()),
                    CoreRequest::Signal(Signal::Usr1) => {
                        info!("SIGUSR1 (management): restarting every client");
                        core.restart_all(now, &mut out);
                        apply_reload(&mut core, reloader.as_ref());
                    }
                    CoreRequest::Signal(Signal::Usr2) => {
                        for l in status::render(2, &core).lines() {
                            info!("{l}");
                        }
                    }
                    CoreRequest::Signal(Signal::Term) if draining.is_none() => {
                        info!("SIGTERM (management) received, shutting down");
                        stop = true;
                    }
                    _ => {}
                }
                let text = management::execute(&mut core, now, req, &mut out);
                let _ = reply.send(text);
                if stop {
                    draining = begin_exit(&mut core, &mut out);
                }
            }
            _ = &mut shutdown, if draining.is_none() => {
                draining = begin_exit(&mut core, &mut out);
            }
        }
        let side = SideChannels {
            notify: notify_tx.as_ref(),
            authenticator: authenticator.as_ref(),
            decisions: &decision_tx,
            jobs: &job_tx,
        };
        side.dispatch(&mut out);
        match (fast.as_mut(), udp.as_deref()) {
            (Some(f), Some(u)) => f.flush(&mut out, u, tun.as_ref(), &mut tcp_writers).await,
            _ => flush(&mut out, udp.as_deref(), tun.as_ref(), &mut tcp_writers).await,
        }
        if let Some(s) = sender.as_mut() {
            s.sync(&core);
        }
    }
    drop(sender);
    write_pool_persist(&core);
    // Writer tasks (TCP connections) get a moment to send what is queued.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
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
            tokio::task::spawn_blocking(move || {
                crate::scripts::run_to_end(&job, |r| match r {
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
pub(crate) fn write_pool_persist(core: &ServerCore) {
    let Some((path, _)) = &core.config().ifconfig_pool_persist else {
        return;
    };
    let tmp = path.with_extension("tmp-ovrs");
    let r =
        std::fs::write(&tmp, core.pool_persist_text()).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = r {
        warn!("ifconfig-pool-persist {}: {e}", path.display());
    }
}

/// Re-reads and applies the configuration (SIGHUP), keeping connected clients.
fn apply_reload(core: &mut ServerCore, reloader: Option<&Reloader>) {
    match reloader.map(|r| r()) {
        Some(r) => apply_config(core, r),
        None => warn!("SIGHUP: no way to re-read the configuration here; ignored"),
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
) -> anyhow::Result<Option<mpsc::UnboundedSender<management::Notify>>> {
    let Some(m) = &cfg.management else {
        return Ok(None);
    };
    let listener = bind_management(&m.listen).await?;
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
    let (v4, v6) = crate::pool::AddressPool::new(cfg.server_v4, cfg.server_v6).server_addresses();
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

/// Binds the management listener (a stale unix socket file is replaced).
async fn bind_management(listen: &ManagementListen) -> anyhow::Result<management::Listener> {
    Ok(match listen {
        ManagementListen::Tcp(host, port) => {
            let l = TcpListener::bind((host.as_str(), *port))
                .await
                .with_context(|| format!("management {host} {port}"))?;
            info!("MANAGEMENT: TCP Socket listening on [AF_INET]{host}:{port}");
            management::Listener::Tcp(l)
        }
        ManagementListen::Unix(path) => {
            if std::fs::symlink_metadata(path)
                .map(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_socket()
                })
                .unwrap_or(false)
            {
                let _ = std::fs::remove_file(path);
            }
            let l = tokio::net::UnixListener::bind(path)
                .with_context(|| format!("management {} unix", path.display()))?;
            info!(
                "MANAGEMENT: unix domain socket listening on {}",
                path.display()
            );
            management::Listener::Unix(l)
        }
    })
}

/// Sends what the core produced, one packet per call (the path without batched UDP).
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
pub(crate) async fn accept_loop(listener: TcpListener, routes: Vec<TcpRoute>) {
    if routes.is_empty() {
        return;
    }
    let mut next_id = 1u64;
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let id = next_id;
        next_id += 1;
        let route = &routes[(id % routes.len() as u64) as usize];
        let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(TCP_QUEUE);
        if route.new_conn.send((id, wtx)).await.is_err() {
            return;
        }
        let (mut rd, mut wr) = stream.into_split();
        tokio::spawn(async move {
            while let Some(frame) = wrx.recv().await {
                if wr.write_all(&frame).await.is_err() {
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
}
