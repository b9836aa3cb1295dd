//! `workers N`: the server as N worker tasks, each a full [`ServerCore`] for the clients
//! that reach its UDP socket (SO_REUSEPORT: the kernel keeps each client's 4-tuple on one
//! socket), all reading and writing the same tun device. Workers hand each other what is not
//! theirs through bounded channels ([`crate::shard`]): data of a client that floated to an
//! address hashed to another socket, and tun packets for another worker's client.
//!
//! ```text
//!            ┌─ worker 0: UDP socket 0 ─ ServerCore (peer-ids ≡ 0 mod N) ─┐
//!  clients ──┤                         ▲  Forward  ▼                      ├── tun (shared)
//!            └─ worker 1: UDP socket 1 ─ ServerCore (peer-ids ≡ 1 mod N) ─┘
//!  main task: SIGHUP → every worker re-applies the config; shutdown → every worker drains
//! ```
//!
//! The management interface is served by the main task: `status` and `load-stats` gather
//! every worker's figures, `kill` asks all, `client-kill` / `client-auth` / `client-deny`
//! go to the worker that owns the client ID (`CID mod N`), signals reach every worker, and
//! `>CLIENT:` notifications come from all. The status file is written by worker 0 from every
//! worker's latest rows; `/metrics` sums the workers' counters and lists every worker's
//! clients. The address pool (and its `ifconfig-pool-persist` memory) is one, shared;
//! worker 0 writes the persist file. Without `duplicate-cn`, a new connection closes the
//! clients with the same common name on every worker.
//!
//! With TCP (`proto tcp-server`) there is one listener and accepted connections are dealt
//! to the workers in turn (a TCP client never floats). An embedder's authenticator is asked
//! by the worker that owns the client, and its decision goes back to that worker.
//!
//! A server without `workers` is the same loop with one worker and no shard
//! ([`serve_one`], behind [`crate::runtime::serve_with`]): its core keeps its own tables,
//! and only there the UDP send direction can run on its own task (`OPENVPN_RS_THREADS=2`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use openvpn_tun::{PacketDevice, TunBatch};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::auth::{Authenticator, DecisionMsg};
use crate::config::{Family, ServerConfig, Transport};
use crate::core::{Outputs, PeerAddr, ServerCore};
use crate::management::{self, CoreOp, CoreRequest, KillTarget, Notify, Signal};
use crate::plugins::PluginChain;
use crate::runtime::{
    ServeOptions, SideChannels, TcpEvent, TcpRoute, accept_loop, apply_config, begin_exit,
    bind_udp_with, file_timers, flush, start_management, start_metrics, write_pool_persist,
};
use crate::shard::{Forward, ShardInfo, ShardTables};
use crate::status::{self, ClientRow};
use crate::udpio::{self, FastUdp, SendTask};

/// Largest datagram we accept.
const MAX_DATAGRAM: usize = 65_535;

/// Packets queued from one worker to another before more are dropped (and counted).
const FORWARD_QUEUE: usize = 4096;

/// Binds `n` UDP sockets to `addr` with SO_REUSEPORT (dual-stack like
/// [`crate::runtime::bind_udp`]); with port 0 the first socket picks the port.
pub fn bind_udp_sockets(
    addr: SocketAddr,
    family: Family,
    n: u32,
) -> anyhow::Result<Vec<UdpSocket>> {
    let mut out = Vec::new();
    let mut addr = addr;
    for _ in 0..n {
        let sock = bind_udp_with(addr, family, true)?;
        // With port 0 the first socket picked the port; the others join it.
        addr = sock.local_addr()?;
        out.push(sock);
    }
    Ok(out)
}

/// What every worker shares with the one writing the status file.
struct StatusShare {
    /// The status file opened before the privilege drop, if it was.
    file: Option<Arc<crate::prebind::KeptFile>>,
    path: PathBuf,
    version: u8,
    rows: Mutex<Vec<Vec<ClientRow>>>,
}

/// What the main task asks a worker.
enum WorkerMsg {
    /// A management request for this worker's core; the answer text.
    Execute(CoreOp, oneshot::Sender<String>),
    /// This worker's status rows.
    Rows(oneshot::Sender<Vec<ClientRow>>),
    /// `kill`: how many of this worker's clients matched.
    Kill(KillTarget, oneshot::Sender<usize>),
    /// `load-stats` figures.
    LoadStats(oneshot::Sender<(usize, u64, u64)>),
    /// Metrics figures.
    Metrics(oneshot::Sender<crate::metrics::Sample>),
    /// SIGUSR1: every client reconnects.
    RestartAll,
    /// SIGHUP: the re-read configuration.
    Reload(Box<Result<ServerConfig, String>>),
    /// Close this worker's clients with this common name accepted before this sequence
    /// number (another worker accepted a new one; `duplicate-cn` not set).
    CloseCommonName(String, u64),
}

/// A worker's TCP connections: their packets, new ones, and their writers.
struct TcpInput {
    events: mpsc::Receiver<TcpEvent>,
    new_conn: mpsc::Receiver<(u64, mpsc::Sender<Vec<u8>>)>,
    writers: HashMap<u64, mpsc::Sender<Vec<u8>>>,
}

impl TcpInput {
    /// Hands one connection event to the core.
    fn handle(&mut self, core: &mut ServerCore, now: Instant, ev: TcpEvent, out: &mut Outputs) {
        match ev {
            TcpEvent::Packet(peer, mut pkt) => core.on_link_packet(now, peer, &mut pkt, out),
            TcpEvent::Closed(conn) => {
                self.writers.remove(&conn);
                core.on_conn_closed(conn, out);
            }
        }
    }
}

/// One worker's channels and handles.
struct Worker<D> {
    index: u32,
    /// The `ifconfig-pool-persist` file opened before the privilege drop, if it was.
    pool_file: Option<Arc<crate::prebind::KeptFile>>,
    /// The only worker (no shard): logs its data path, may run a send task.
    single: bool,
    core: ServerCore,
    tun: Arc<D>,
    inbox: mpsc::Receiver<Forward>,
    peers: Arc<Vec<mpsc::Sender<Forward>>>,
    /// Every worker's message channel (unbounded: for what must not be dropped).
    siblings: Arc<Vec<mpsc::UnboundedSender<WorkerMsg>>>,
    stop: watch::Receiver<bool>,
    msgs: mpsc::UnboundedReceiver<WorkerMsg>,
    notify: Option<mpsc::UnboundedSender<Notify>>,
    status: Option<Arc<StatusShare>>,
    authenticator: Option<Arc<dyn Authenticator>>,
    plugins: Option<Arc<PluginChain>>,
}

/// Where a server with workers takes its clients from.
pub enum Listeners {
    /// One UDP socket per worker (bound with [`bind_udp_sockets`]).
    Udp(Vec<UdpSocket>),
    /// One TCP listener; accepted connections are dealt to `workers` workers in turn.
    Tcp {
        /// The listener.
        listener: tokio::net::TcpListener,
        /// Number of workers.
        workers: u32,
    },
}

/// Serves clients with workers (one per UDP socket, or `workers` for TCP) on the shared
/// device `tun`, until `shutdown` completes. Each message on the reload channel of `opts`
/// re-reads the configuration once and applies it in every worker; its authenticator is
/// asked by the worker that owns the client (the decision comes back to that worker).
pub async fn serve_workers<D: PacketDevice + 'static>(
    cfg: ServerConfig,
    tun: Arc<D>,
    listeners: Listeners,
    shutdown: impl std::future::Future<Output = ()>,
    opts: ServeOptions,
) -> anyhow::Result<()> {
    let (sockets, tcp) = match listeners {
        Listeners::Udp(sockets) => (sockets.into_iter().map(Some).collect::<Vec<_>>(), None),
        Listeners::Tcp { listener, workers } => {
            ((0..workers).map(|_| None).collect(), Some(listener))
        }
    };
    serve_on(cfg, tun, sockets, tcp, shutdown, opts).await
}

/// Serves clients with one worker and no shard on `udp` and/or `tcp` (a server without
/// `workers`; what [`crate::runtime::serve_with`] runs).
pub(crate) async fn serve_one<D: PacketDevice + 'static>(
    cfg: ServerConfig,
    tun: Arc<D>,
    udp: Option<UdpSocket>,
    tcp: Option<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()>,
    opts: ServeOptions,
) -> anyhow::Result<()> {
    serve_on(cfg, tun, vec![udp], tcp, shutdown, opts).await
}

/// One worker per entry of `sockets` (its UDP socket, if any); TCP connections of `tcp`
/// dealt to them in turn. More than one worker: the cores are shards of one server.
async fn serve_on<D: PacketDevice + 'static>(
    cfg: ServerConfig,
    tun: Arc<D>,
    mut sockets: Vec<Option<UdpSocket>>,
    tcp: Option<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()>,
    opts: ServeOptions,
) -> anyhow::Result<()> {
    let ServeOptions {
        reload,
        authenticator,
        plugins,
        prebound,
        os_signals,
    } = opts;
    let mut os_signals = os_signals;
    let prebound = prebound.unwrap_or_default();
    // Embedders and tests that serve without `run_with` get the modules opened here.
    let plugins = match plugins {
        Some(p) => Some(p),
        None => PluginChain::load(&cfg)?,
    };
    let n = u32::try_from(sockets.len()).context("too many sockets")?;
    if n == 0 {
        bail!("workers: no socket");
    }
    // TCP: connection i goes to worker i mod n.
    let mut tcp_routes = Vec::new();
    let mut tcp_inputs = Vec::new();
    for _ in 0..n {
        let (events, events_rx) = mpsc::channel(1024);
        let (new_conn, new_conn_rx) = mpsc::channel(64);
        tcp_routes.push(TcpRoute { events, new_conn });
        tcp_inputs.push(TcpInput {
            events: events_rx,
            new_conn: new_conn_rx,
            writers: HashMap::new(),
        });
    }
    match tcp {
        Some(listener) => {
            let queue = cfg.tcp_queue_limit.unwrap_or(crate::runtime::TCP_QUEUE);
            tokio::spawn(accept_loop(
                listener,
                tcp_routes,
                queue,
                cfg.port_share.clone(),
            ));
        }
        None => drop(tcp_routes),
    }
    // What the cores of several workers share (one core keeps its own tables, pool and
    // cookie key). Wire peer-ids stay below (slots per worker) × n.
    let shared = (n > 1).then(|| {
        let slots = (cfg.max_clients.max(1) as usize).min(4096);
        let mut gate_key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut gate_key);
        (
            Arc::new(ShardTables::new(n, slots * n as usize)),
            ServerCore::new_leases(&cfg),
            gate_key,
        )
    });
    // Workers stop when it says so, or when it is dropped (an embedder dropped the serving
    // future).
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut inboxes = Vec::new();
    let mut senders = Vec::new();
    for _ in 0..n {
        let (tx, rx) = mpsc::channel(FORWARD_QUEUE);
        senders.push(tx);
        inboxes.push(rx);
    }
    let peers = Arc::new(senders);
    let status = cfg.status.as_ref().map(|(path, _)| {
        Arc::new(StatusShare {
            file: prebound.status.clone(),
            path: path.clone(),
            version: cfg.status_version,
            rows: Mutex::new(vec![Vec::new(); n as usize]),
        })
    });
    let (req_tx, mut req_rx) = mpsc::channel::<management::Request>(64);
    let notify = start_management(&cfg, &req_tx, prebound.management).await?;
    start_metrics(&cfg, &req_tx).await?;
    drop(req_tx);
    let now = Instant::now();
    let (worker_txs, worker_rxs): (Vec<_>, Vec<_>) =
        (0..n).map(|_| mpsc::unbounded_channel()).unzip();
    let siblings = Arc::new(worker_txs.clone());
    let mut handles = Vec::new();
    for (((index, inbox), tcp), wrx) in (0..n).zip(inboxes).zip(tcp_inputs).zip(worker_rxs) {
        let udp = sockets.get_mut(index as usize).and_then(Option::take);
        let mut core = ServerCore::new(cfg.clone(), now).map_err(anyhow::Error::msg)?;
        if let Some((tables, leases, gate_key)) = &shared {
            core.set_shard(ShardInfo {
                index,
                count: n,
                tables: Arc::clone(tables),
                leases: Arc::clone(leases),
                gate_key: *gate_key,
            });
        }
        if notify.is_some() && cfg.management_hold {
            core.set_hold(true);
        }
        core.set_authenticator(authenticator.is_some());
        core.set_crypt_v2_verify(crate::scripts::crypt_v2_verify(&cfg));
        if let Some(p) = &plugins {
            core.set_plugin_hooks(p.hooks());
        }
        let worker = Worker {
            index,
            pool_file: prebound.pool_persist.clone(),
            single: n == 1,
            core,
            tun: Arc::clone(&tun),
            inbox,
            peers: Arc::clone(&peers),
            siblings: Arc::clone(&siblings),
            stop: stop_rx.clone(),
            msgs: wrx,
            notify: notify.clone(),
            status: status.clone(),
            authenticator: authenticator.clone(),
            plugins: plugins.clone(),
        };
        handles.push(tokio::spawn(worker.run(udp, tcp)));
    }
    if n > 1 {
        info!(
            "data path: {n} workers ({}, one core each, shared tun)",
            if cfg.transport == Transport::Udp {
                "SO_REUSEPORT sockets"
            } else {
                "TCP connections dealt in turn"
            }
        );
    }
    let (reloader, mut reload_rx) = match reload {
        Some((r, rx)) => (Some(r), Some(rx)),
        None => (None, None),
    };
    if notify.is_some() && cfg.management_hold {
        info!("management-hold: new clients wait for 'hold release'");
    }
    let workers = Workers(worker_txs);
    let reload_all = || {
        let reread = match &reloader {
            Some(r) => r(),
            None => Err("no way to re-read the configuration here".into()),
        };
        workers.broadcast(|| WorkerMsg::Reload(Box::new(reread.clone())));
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(()) = async { match reload_rx.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => reload_all(),
            Some(sig) = async { match os_signals.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => match sig {
                Signal::Usr1 => {
                    info!("SIGUSR1 received: restarting every client (the tun device and keys persist)");
                    workers.broadcast(|| WorkerMsg::RestartAll);
                    reload_all();
                }
                Signal::Usr2 => {
                    let rows: Vec<ClientRow> =
                        workers.ask_all(WorkerMsg::Rows).await.into_iter().flatten().collect();
                    for l in status::render_rows(2, &rows).lines() {
                        info!("{l}");
                    }
                }
                _ => {}
            },
            Some((req, reply)) = req_rx.recv() => {
                let mut stop = false;
                match &req {
                    CoreRequest::Signal(Signal::Hup) => reload_all(),
                    CoreRequest::Signal(Signal::Usr1) => {
                        info!("SIGUSR1 (management): restarting every client");
                        workers.broadcast(|| WorkerMsg::RestartAll);
                        reload_all();
                    }
                    CoreRequest::Signal(Signal::Term) => {
                        info!("SIGTERM (management) received, shutting down");
                        stop = true;
                    }
                    CoreRequest::Signal(Signal::Usr2) => {
                        let rows: Vec<ClientRow> =
                            workers.ask_all(WorkerMsg::Rows).await.into_iter().flatten().collect();
                        for l in status::render_rows(2, &rows).lines() {
                            info!("{l}");
                        }
                    }
                    _ => {}
                }
                let text = workers.answer(req).await;
                let _ = reply.send(text);
                if stop {
                    break;
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    let mut first_error = None;
    for h in handles {
        match h.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(anyhow::anyhow!("worker task: {e}"));
            }
        }
    }
    // Writer tasks (TCP connections) get a moment to send what is queued.
    tokio::time::sleep(Duration::from_millis(200)).await;
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What one UDP receive brought.
enum UdpIn {
    /// A batch of `n` datagrams in the batched path's buffers.
    Batch(usize),
    /// One datagram of this length, from this address (the one-per-call path).
    One(usize, SocketAddr),
}

/// The main task's handles to the workers.
struct Workers(Vec<mpsc::UnboundedSender<WorkerMsg>>);

impl Workers {
    fn broadcast(&self, msg: impl Fn() -> WorkerMsg) {
        for tx in &self.0 {
            let _ = tx.send(msg());
        }
    }

    /// Asks every worker with `make` and collects the answers (a worker that has stopped
    /// gives none).
    async fn ask_all<T>(&self, make: impl Fn(oneshot::Sender<T>) -> WorkerMsg) -> Vec<T> {
        let mut waiting = Vec::new();
        for tx in &self.0 {
            let (otx, orx) = oneshot::channel();
            if tx.send(make(otx)).is_ok() {
                waiting.push(orx);
            }
        }
        let mut out = Vec::new();
        for rx in waiting {
            if let Ok(v) = rx.await {
                out.push(v);
            }
        }
        out
    }

    /// Runs `op` on the worker that owns client ID `cid` (`cid mod N`).
    async fn on_owner(&self, cid: u64, op: CoreOp) -> String {
        let owner = (cid % self.0.len().max(1) as u64) as usize;
        let (otx, orx) = oneshot::channel();
        match self.0.get(owner) {
            Some(tx) if tx.send(WorkerMsg::Execute(op, otx)).is_ok() => {
                orx.await.unwrap_or_default()
            }
            _ => "ERROR: worker stopped\r\n".into(),
        }
    }

    /// Answers a management request from the workers' cores.
    async fn answer(&self, req: CoreRequest) -> String {
        match req {
            CoreRequest::Status(v) => {
                let rows: Vec<ClientRow> = self
                    .ask_all(WorkerMsg::Rows)
                    .await
                    .into_iter()
                    .flatten()
                    .collect();
                management::crlf(&status::render_rows(v, &rows))
            }
            CoreRequest::Kill(target) => {
                let killed = self
                    .ask_all(|tx| WorkerMsg::Kill(target.clone(), tx))
                    .await
                    .into_iter()
                    .sum();
                management::kill_reply(&target, killed)
            }
            CoreRequest::LoadStats => {
                let all = self.ask_all(WorkerMsg::LoadStats).await;
                let sum = all
                    .into_iter()
                    .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
                management::load_stats_reply(sum)
            }
            // The worker that owns the client ID.
            CoreRequest::ClientKill(cid, msg) => {
                self.on_owner(cid, CoreOp::ClientKill(cid, msg)).await
            }
            CoreRequest::Decide(cid, kid, d) => {
                self.on_owner(cid, CoreOp::Decide(cid, kid, d)).await
            }
            CoreRequest::ByteCounts => self
                .ask_all(|tx| WorkerMsg::Execute(CoreOp::ByteCounts, tx))
                .await
                .concat(),
            CoreRequest::HoldRelease => self
                .ask_all(|tx| WorkerMsg::Execute(CoreOp::HoldRelease, tx))
                .await
                .into_iter()
                .next()
                .unwrap_or_default(),
            CoreRequest::Signal(sig) => format!("SUCCESS: signal {} thrown\r\n", sig.name()),
            CoreRequest::Metrics => {
                let all = self.ask_all(WorkerMsg::Metrics).await;
                let merged = all.into_iter().fold(
                    crate::metrics::Sample::default(),
                    crate::metrics::Sample::merge,
                );
                crate::metrics::render_sample(&merged)
            }
        }
    }
}

impl<D: PacketDevice + 'static> Worker<D> {
    async fn run(mut self, udp: Option<UdpSocket>, mut tcp: TcpInput) -> anyhow::Result<()> {
        let udp = udp.map(Arc::new);
        let tun = Arc::clone(&self.tun);
        // Batched data path (UDP): recvmmsg/GRO, GSO sends, tun batches; else one packet
        // per call (OPENVPN_RS_FAST_IO=0, or a socket that cannot batch).
        let fast_io = udpio::enabled();
        let mut fast = match (&udp, fast_io) {
            (Some(u), true) => FastUdp::new(u)
                .inspect_err(|e| {
                    warn!(
                        "worker {}: fast I/O: cannot batch the UDP socket ({e}); one datagram per call",
                        self.index
                    );
                })
                .ok(),
            _ => None,
        };
        // Tun writes go out as one coalesced batch per turn whenever the batched path is on
        // (also for TCP clients: a turn takes many of their packets).
        let mut out = Outputs {
            tun_batch: fast_io.then(TunBatch::new),
            ..Outputs::default()
        };
        let mut tun_in = TunBatch::new();
        let mut tun_buf = if fast_io {
            Vec::new()
        } else {
            vec![0u8; MAX_DATAGRAM]
        };
        let mut udp_buf = if udp.is_some() && fast.is_none() {
            vec![0u8; MAX_DATAGRAM]
        } else {
            Vec::new()
        };
        // The sending direction (tun -> seal -> GSO) on its own task with
        // OPENVPN_RS_THREADS=2; only without a shard (a worker's tun reads also carry other
        // workers' clients).
        let mut sender = match (
            &udp,
            self.single && fast.is_some() && udpio::split_enabled(),
        ) {
            (Some(u), true) => SendTask::spawn(Arc::clone(u), Arc::clone(&tun), &self.core)
                .inspect_err(|e| warn!("send task: {e}; one task for both directions"))
                .ok(),
            _ => None,
        };
        if self.single {
            info!(
                "data path: {}",
                match (&sender, fast.is_some()) {
                    (Some(_), _) => "send direction on its own task (parallel to receive)",
                    (None, true) =>
                        "one task for both directions (OPENVPN_RS_THREADS=2: a send task)",
                    (None, false) => "one task for both directions",
                }
            );
        }
        let (job_tx, mut job_rx) = mpsc::unbounded_channel::<crate::scripts::JobResult>();
        let (decision_tx, mut decision_rx) = mpsc::unbounded_channel::<DecisionMsg>();
        let (mut status_every, mut persist_every) = file_timers(self.core.config()).await;
        let mut draining: Option<Instant> = None;
        let (mut forwarded, mut forward_drops) = (0u64, 0u64);
        loop {
            if let Some(d) = draining {
                if Instant::now() >= d || self.core.exit_pending() == 0 {
                    break;
                }
            }
            let deadline = self
                .core
                .next_timeout(Instant::now())
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            let deadline = draining.map_or(deadline, |d| d.min(deadline));
            let sleep = tokio::time::sleep_until(deadline.into());
            let send_task = sender.is_some();
            tokio::select! {
                r = async {
                    match (&udp, fast.as_mut()) {
                        (Some(u), Some(f)) => f.recv(u).await.map(UdpIn::Batch),
                        (Some(u), None) => u
                            .recv_from(&mut udp_buf)
                            .await
                            .map(|(n, a)| UdpIn::One(n, a)),
                        _ => std::future::pending().await,
                    }
                } => match r {
                    Ok(UdpIn::Batch(n)) => {
                        if let Some(f) = fast.as_mut() {
                            f.on_link_batch(n, &mut self.core, Instant::now(), &mut out);
                        }
                    }
                    Ok(UdpIn::One(n, from)) => {
                        let peer = PeerAddr { addr: from, conn: None };
                        self.core.on_link_packet(Instant::now(), peer, &mut udp_buf[..n], &mut out);
                    }
                    Err(e) => warn!("worker {}: UDP receive: {e}", self.index),
                },
                Some(ev) = tcp.events.recv() => {
                    let now = Instant::now();
                    tcp.handle(&mut self.core, now, ev, &mut out);
                    // What else the connections queued, in one turn (one flush, one
                    // coalesced tun write; bounded, so the other sources get their turn).
                    for _ in 0..256 {
                        match tcp.events.try_recv() {
                            Ok(ev) => tcp.handle(&mut self.core, now, ev, &mut out),
                            Err(_) => break,
                        }
                    }
                }
                Some((conn, w)) = tcp.new_conn.recv() => {
                    tcp.writers.insert(conn, w);
                }
                r = async {
                    if send_task {
                        std::future::pending().await
                    } else if fast_io {
                        tun.recv_batch(&mut tun_in).await.map(|()| None)
                    } else {
                        tun.recv(&mut tun_buf).await.map(Some)
                    }
                } => {
                    let now = Instant::now();
                    match r {
                        Ok(Some(n)) => self.core.on_tun_packet(now, &tun_buf[..n], &mut out),
                        Ok(None) => match fast.as_mut() {
                            Some(f) => f.on_tun_batch(&tun_in, &mut self.core, now, &mut out),
                            None => {
                                for pkt in tun_in.iter() {
                                    self.core.on_tun_packet(now, pkt, &mut out);
                                }
                            }
                        },
                        Err(e) => {
                            warn!("worker {}: tun read: {e}", self.index);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                },
                Some(f) = self.inbox.recv() => {
                    let now = Instant::now();
                    self.forwarded(now, f, &mut out);
                    // What else is queued, in one turn (bounded, so the socket gets its turn).
                    for _ in 0..256 {
                        match self.inbox.try_recv() {
                            Ok(f) => self.forwarded(now, f, &mut out),
                            Err(_) => break,
                        }
                    }
                }
                Some(r) = job_rx.recv() => self.core.on_job_result(Instant::now(), r, &mut out),
                Some((cid, kid, d)) = decision_rx.recv() => {
                    if !self.core.authenticator_decision(Instant::now(), cid, kid, d, &mut out) {
                        debug!("authenticator: decision for client {cid} key {kid} not pending (ignored)");
                    }
                }
                _ = sleep => {
                    if let Some(s) = sender.as_mut() {
                        s.feed_keepalive(&mut self.core);
                    }
                    self.core.on_timeout(Instant::now(), &mut out);
                }
                _ = status_every.tick() => self.share_status(),
                _ = persist_every.tick(), if self.index == 0 => write_pool_persist(&self.core, self.pool_file.as_deref()),
                Some(msg) = self.msgs.recv() => self.message(Instant::now(), msg, &mut out),
                _ = self.stop.changed(), if draining.is_none() => {
                    draining = begin_exit(&mut self.core, &mut out);
                }
            }
            SideChannels {
                notify: self.notify.as_ref(),
                authenticator: self.authenticator.as_ref(),
                decisions: &decision_tx,
                jobs: &job_tx,
                plugins: self.plugins.as_ref(),
            }
            .dispatch(&mut out);
            match (fast.as_mut(), udp.as_deref()) {
                (Some(f), Some(u)) => f.flush(&mut out, u, tun.as_ref(), &mut tcp.writers).await,
                _ => flush(&mut out, udp.as_deref(), tun.as_ref(), &mut tcp.writers).await,
            }
            if let Some(s) = sender.as_mut() {
                s.sync(&self.core);
            }
            // Closing a duplicate must not be dropped: the unbounded message channel.
            for (cn, seq) in out.close_common_name.drain(..) {
                for (w, tx) in self.siblings.iter().enumerate() {
                    if w as u32 != self.index {
                        let _ = tx.send(WorkerMsg::CloseCommonName(cn.clone(), seq));
                    }
                }
            }
            for (owner, f) in out.forward.drain(..) {
                let sent = self
                    .peers
                    .get(owner as usize)
                    .is_some_and(|tx| tx.try_send(f).is_ok());
                forwarded += u64::from(sent);
                if !sent {
                    forward_drops += 1;
                    if forward_drops.is_power_of_two() {
                        warn!(
                            "worker {}: {forward_drops} packet(s) for worker {owner} dropped (its queue is full)",
                            self.index
                        );
                    }
                }
            }
        }
        drop(sender);
        self.share_status();
        if self.index == 0 {
            write_pool_persist(&self.core, self.pool_file.as_deref());
        }
        if !self.single {
            info!(
                "worker {}: {} handshakes, {forwarded} packets handed to other workers, {forward_drops} dropped (queue full)",
                self.index,
                self.core.stats().handshakes
            );
        }
        Ok(())
    }

    /// A message from the main task.
    fn message(&mut self, now: Instant, msg: WorkerMsg, out: &mut Outputs) {
        match msg {
            WorkerMsg::Execute(req, reply) => {
                let _ = reply.send(management::execute(&mut self.core, now, req, out));
            }
            WorkerMsg::Rows(reply) => {
                let _ = reply.send(status::rows(&self.core));
            }
            WorkerMsg::Kill(target, reply) => {
                let _ = reply.send(management::kill_count(&mut self.core, now, &target, out));
            }
            WorkerMsg::LoadStats(reply) => {
                let _ = reply.send(management::load_stats(&self.core));
            }
            WorkerMsg::Metrics(reply) => {
                let _ = reply.send(crate::metrics::Sample::of(&self.core));
            }
            WorkerMsg::RestartAll => self.core.restart_all(now, out),
            WorkerMsg::Reload(reread) => apply_config(&mut self.core, *reread),
            WorkerMsg::CloseCommonName(cn, seq) => {
                self.core.close_common_name(&cn, Some(seq), out);
            }
        }
    }

    /// A packet another worker handed us.
    fn forwarded(&mut self, now: Instant, f: Forward, out: &mut Outputs) {
        match f {
            Forward::Link(from, mut pkt) => self.core.on_link_packet(now, from, &mut pkt, out),
            Forward::Tun(ip) => self.core.on_forwarded_tun_packet(now, &ip, out),
        }
    }

    /// Publishes this worker's status rows; worker 0 writes the file from everyone's.
    fn share_status(&self) {
        let Some(share) = &self.status else { return };
        let text = {
            let mut rows = share.rows.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = rows.get_mut(self.index as usize) {
                *slot = status::rows(&self.core);
            }
            if self.index != 0 {
                return;
            }
            let all: Vec<ClientRow> = rows.iter().flatten().cloned().collect();
            status::render_rows(share.version, &all)
        };
        if let Err(e) = crate::prebind::write(share.file.as_deref(), &share.path, &text) {
            warn!("status file {}: {e}", share.path.display());
        }
    }
}
