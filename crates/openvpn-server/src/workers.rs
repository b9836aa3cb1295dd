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
use crate::core::{Outputs, ServerCore};
use crate::management::{self, CoreRequest, KillTarget, Notify, Signal};
use crate::runtime::{
    ServeOptions, SideChannels, TcpEvent, TcpRoute, accept_loop, apply_config, begin_exit,
    bind_udp_with, file_timers, flush, start_management, start_metrics, write_pool_persist,
};
use crate::shard::{Forward, ShardInfo, ShardTables};
use crate::status::{self, ClientRow};
use crate::udpio::FastUdp;

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
    path: PathBuf,
    version: u8,
    rows: Mutex<Vec<Vec<ClientRow>>>,
}

/// What the main task asks a worker.
enum WorkerMsg {
    /// A management request for this worker's core; the answer text.
    Execute(CoreRequest, oneshot::Sender<String>),
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

/// One worker's channels and handles.
struct Worker<D> {
    index: u32,
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
    let ServeOptions {
        reload,
        authenticator,
    } = opts;
    let (n, mut sockets, tcp) = match listeners {
        Listeners::Udp(sockets) => (
            u32::try_from(sockets.len()).context("too many sockets")?,
            sockets.into_iter().map(Some).collect::<Vec<_>>(),
            None,
        ),
        Listeners::Tcp { listener, workers } => (
            workers,
            (0..workers).map(|_| None).collect(),
            Some(listener),
        ),
    };
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
            tokio::spawn(accept_loop(listener, tcp_routes));
        }
        None => drop(tcp_routes),
    }
    // Wire peer-ids stay below (slots per worker) × n.
    let slots = (cfg.max_clients.max(1) as usize).min(4096);
    let tables = Arc::new(ShardTables::new(n, slots * n as usize));
    let mut gate_key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut gate_key);
    let leases = ServerCore::new_leases(&cfg);
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
            path: path.clone(),
            version: cfg.status_version,
            rows: Mutex::new(vec![Vec::new(); n as usize]),
        })
    });
    let (req_tx, mut req_rx) = mpsc::channel::<management::Request>(64);
    let notify = start_management(&cfg, &req_tx).await?;
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
        core.set_shard(ShardInfo {
            index,
            count: n,
            tables: Arc::clone(&tables),
            leases: Arc::clone(&leases),
            gate_key,
        });
        if notify.is_some() && cfg.management_hold {
            core.set_hold(true);
        }
        core.set_authenticator(authenticator.is_some());
        let worker = Worker {
            index,
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
        };
        handles.push(tokio::spawn(worker.run(udp, tcp)));
    }
    info!(
        "data path: {n} workers ({}, one core each, shared tun)",
        if cfg.transport == Transport::Udp {
            "SO_REUSEPORT sockets"
        } else {
            "TCP connections dealt in turn"
        }
    );
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
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
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

    /// Answers a management request from the workers' cores.
    async fn answer(&self, req: CoreRequest) -> String {
        let n = self.0.len() as u64;
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
            CoreRequest::ClientKill(cid, _) | CoreRequest::Decide(cid, _, _) => {
                let owner = (cid % n) as usize;
                let (otx, orx) = oneshot::channel();
                match self.0.get(owner) {
                    Some(tx) if tx.send(WorkerMsg::Execute(req, otx)).is_ok() => {
                        orx.await.unwrap_or_default()
                    }
                    _ => "ERROR: worker stopped\r\n".into(),
                }
            }
            CoreRequest::ByteCounts => self
                .ask_all(|tx| WorkerMsg::Execute(CoreRequest::ByteCounts, tx))
                .await
                .concat(),
            CoreRequest::HoldRelease => self
                .ask_all(|tx| WorkerMsg::Execute(CoreRequest::HoldRelease, tx))
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
        let mut fast =
            match &udp {
                Some(u) => Some(FastUdp::new(u).with_context(|| {
                    format!("worker {}: cannot batch its UDP socket", self.index)
                })?),
                None => None,
            };
        let mut out = Outputs {
            tun_batch: fast.as_ref().map(|_| TunBatch::new()),
            ..Outputs::default()
        };
        let mut tun_in = TunBatch::new();
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
            tokio::select! {
                r = async {
                    match (&udp, fast.as_mut()) {
                        (Some(u), Some(f)) => f.recv(u).await,
                        _ => std::future::pending().await,
                    }
                } => match (r, fast.as_mut()) {
                    (Ok(n), Some(f)) => f.on_link_batch(n, &mut self.core, Instant::now(), &mut out),
                    (Ok(_), None) => {}
                    (Err(e), _) => warn!("worker {}: UDP receive: {e}", self.index),
                },
                Some(ev) = tcp.events.recv() => match ev {
                    TcpEvent::Packet(peer, mut pkt) => {
                        self.core.on_link_packet(Instant::now(), peer, &mut pkt, &mut out)
                    }
                    TcpEvent::Closed(conn) => {
                        tcp.writers.remove(&conn);
                        self.core.on_conn_closed(conn, &mut out);
                    }
                },
                Some((conn, w)) = tcp.new_conn.recv() => {
                    tcp.writers.insert(conn, w);
                }
                r = self.tun.recv_batch(&mut tun_in) => match r {
                    Ok(()) => match fast.as_mut() {
                        Some(f) => f.on_tun_batch(&tun_in, &mut self.core, Instant::now(), &mut out),
                        None => {
                            let now = Instant::now();
                            for pkt in tun_in.iter() {
                                self.core.on_tun_packet(now, pkt, &mut out);
                            }
                        }
                    },
                    Err(e) => {
                        warn!("worker {}: tun read: {e}", self.index);
                        tokio::time::sleep(Duration::from_millis(100)).await;
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
                _ = sleep => self.core.on_timeout(Instant::now(), &mut out),
                _ = status_every.tick() => self.share_status(),
                _ = persist_every.tick(), if self.index == 0 => write_pool_persist(&self.core),
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
            }
            .dispatch(&mut out);
            match (fast.as_mut(), &udp) {
                (Some(f), Some(u)) => {
                    f.flush(&mut out, u, self.tun.as_ref(), &mut tcp.writers)
                        .await
                }
                _ => flush(&mut out, None, self.tun.as_ref(), &mut tcp.writers).await,
            }
            for (owner, f) in out.forward.drain(..) {
                // Closing a duplicate must not be dropped: the unbounded message channel.
                let f = match f {
                    Forward::CloseCommonName(cn, seq) => {
                        if let Some(tx) = self.siblings.get(owner as usize) {
                            let _ = tx.send(WorkerMsg::CloseCommonName(cn, seq));
                        }
                        continue;
                    }
                    f => f,
                };
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
        self.share_status();
        if self.index == 0 {
            write_pool_persist(&self.core);
        }
        info!(
            "worker {}: {} handshakes, {forwarded} packets handed to other workers, {forward_drops} dropped (queue full)",
            self.index,
            self.core.stats().handshakes
        );
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
            Forward::CloseCommonName(cn, seq) => {
                self.core.close_common_name(&cn, Some(seq), out);
            }
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
        if let Err(e) = status::write_text(&share.path, &text) {
            warn!("status file {}: {e}", share.path.display());
        }
    }
}
