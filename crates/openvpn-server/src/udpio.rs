//! The server's batched data path over UDP: many packets per system call in both directions.
//!
//! ```text
//!  recvmmsg + UDP GRO ─▶ ServerCore::on_link_packet per datagram, opened in place
//!      ─▶ Outputs.tun_batch (one arena) ─▶ tun.send_batch (TCP segments coalesced into GSO super-packets)
//!  tun.recv_batch (TSO super-packets split) ─▶ ServerCore::seal_tun_packet into one reused
//!      PacketBuf ─▶ SendQueue (runs of equal sizes per client) ─▶ one UDP GSO sendmsg per run
//! ```
//!
//! On by default for UDP servers; `OPENVPN_RS_FAST_IO=0` in the environment selects the
//! one-packet-per-call path (and a plain tun device).
//!
//! **Both directions in parallel** (`OPENVPN_RS_THREADS=2`; off by default, see
//! [`split_enabled`]): [`SendTask`] runs tun → route → seal → GSO send on its own task (another worker of
//! the multi-threaded runtime) while the main loop keeps UDP receive, opening, control,
//! timers and tun writes.
//!
//! ```text
//!  main loop (owns ServerCore)                     send task
//!  routes added/removed, float, iroute             tun.recv_batch
//!    └▶ core.send_routes_generation() changed        └▶ epoch moved? take the new RouteTable
//!        └▶ RouteTable (Arc) published ──────────────▶ dst → client (HashMap / iroute prefixes)
//!  keys, send-key switch, peer-id                     └▶ DataSender::seal (key + atomic packet id
//!    └▶ each client's DataChannel publishes ─────────▶    published by the client's DataChannel)
//!  timer: core.note_sent(pid) ◀── sent_at (atomic) ◀──└▶ SendQueue ─▶ UDP GSO sendmsg
//! ```
//!
//! The table is immutable once published: the send task reads it without any lock or
//! contention; the mutex around the current `Arc` is taken only when the epoch moved.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openvpn_control::dataplane::DataSender;
use openvpn_crypto::PacketBuf;
use openvpn_tun::udp_batch::{SendQueue, UdpBatch, UdpRecvBufs};
use openvpn_tun::{PacketDevice, TunBatch};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::core::{Outputs, PeerAddr, SendRoute, ServerCore, in_prefix, ip_addrs};

/// Receive buffers per `recvmmsg` (each holds one GRO batch of up to 64 KiB).
const RECV_BUFFERS: usize = 16;

/// Whether the batched data path is on (`OPENVPN_RS_FAST_IO` unset or anything but `0`).
pub fn enabled() -> bool {
    std::env::var("OPENVPN_RS_FAST_IO").map_or(true, |v| v.trim() != "0")
}

/// Whether the sending direction runs on its own task: `OPENVPN_RS_THREADS=2` (or more).
/// Off by default: on this project's 2-core bench it gained no throughput and added latency
/// under load (`docs/performance.md`, "Multi-core").
pub fn split_enabled() -> bool {
    std::env::var("OPENVPN_RS_THREADS").is_ok_and(|v| v.trim().parse::<u32>().is_ok_and(|n| n >= 2))
}

/// Batched UDP state of the server socket (used by [`crate::runtime`]).
pub struct FastUdp {
    udp: UdpBatch,
    rbufs: UdpRecvBufs,
    sendq: SendQueue,
    sbuf: PacketBuf,
}

impl FastUdp {
    /// Sets `sock` up for recvmmsg/GRO and GSO; logs what the kernel offers.
    pub fn new(sock: &UdpSocket) -> std::io::Result<Self> {
        let udp = UdpBatch::new(sock)?;
        tracing::info!(
            gso_segments = udp.max_gso_segments(),
            gro_segments = udp.gro_segments(),
            "fast I/O: batched UDP"
        );
        let sendq = SendQueue::new(udp.max_gso_segments());
        Ok(Self {
            udp,
            rbufs: UdpRecvBufs::new(RECV_BUFFERS, 65_536),
            sendq,
            sbuf: PacketBuf::new(PacketBuf::DEFAULT_HEADROOM, 2048),
        })
    }

    /// Waits for datagrams; returns the number of filled buffers.
    pub async fn recv(&mut self, sock: &UdpSocket) -> std::io::Result<usize> {
        self.udp.recv(sock, &mut self.rbufs).await
    }

    /// Feeds the datagrams of `n` received buffers to the core.
    pub fn on_link_batch(
        &mut self,
        n: usize,
        core: &mut ServerCore,
        now: Instant,
        out: &mut Outputs,
    ) {
        for i in 0..n {
            let (from, bytes, stride) = self.rbufs.buffer_mut(i);
            let peer = PeerAddr {
                addr: from,
                conn: None,
            };
            for pkt in bytes.chunks_mut(stride) {
                core.on_link_packet(now, peer, pkt, out);
            }
        }
    }

    /// Seals every packet of `batch` for its client and queues UDP ones for GSO sending
    /// (packets for TCP clients go to `out.link`).
    pub fn on_tun_batch(
        &mut self,
        batch: &TunBatch,
        core: &mut ServerCore,
        now: Instant,
        out: &mut Outputs,
    ) {
        for pkt in batch.iter() {
            match core.seal_tun_packet(now, pkt, &mut self.sbuf, out) {
                Some(peer) if peer.conn.is_none() => {
                    self.sendq.push(peer.addr, self.sbuf.as_slice())
                }
                Some(peer) => out.link.push((peer, self.sbuf.as_slice().to_vec())),
                None => {}
            }
        }
    }

    /// Sends what the core produced: UDP datagrams in GSO runs, TCP frames to their writers,
    /// tun packets (`out.tun_batch`, set up here, and `out.tun`) as one coalesced batch.
    pub async fn flush<D: PacketDevice>(
        &mut self,
        out: &mut Outputs,
        sock: &UdpSocket,
        tun: &D,
        tcp: &mut HashMap<u64, mpsc::Sender<Vec<u8>>>,
    ) {
        for (peer, pkt) in out.link.drain(..) {
            match peer.conn {
                None => self.sendq.push(peer.addr, &pkt),
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
        if !self.sendq.is_empty() {
            let _ = self.sendq.flush(&self.udp, sock).await;
        }
        let mut batch = out.tun_batch.take().unwrap_or_default();
        for pkt in out.tun.drain(..) {
            batch.push(&pkt);
        }
        if !batch.is_empty() {
            let _ = tun.send_batch(&mut batch).await;
            batch.clear();
        }
        out.tun_batch = Some(batch);
        for c in out.close_conns.drain(..) {
            tcp.remove(&c);
        }
    }
}

/// One client reachable through the send task.
struct RouteEntry {
    addr: SocketAddr,
    mss: Option<u16>,
    /// Template; the task clones its own.
    sender: DataSender,
    /// When the task last sent to this client (ns after `SendShared::base`; 0 = never).
    sent_at: Arc<AtomicU64>,
}

/// An immutable snapshot of the tun → client routing.
#[derive(Default)]
struct RouteTable {
    v4: HashMap<Ipv4Addr, usize>,
    v6: HashMap<Ipv6Addr, usize>,
    /// Iroutes: (network, prefix length, entry), searched longest prefix first.
    prefixes: Vec<(IpAddr, u8, usize)>,
    entries: Vec<RouteEntry>,
}

impl RouteTable {
    /// The entry for destination `dst`: a client address, else the longest iroute prefix
    /// (the same rule as `ServerCore`'s routing).
    fn lookup(&self, dst: IpAddr) -> Option<usize> {
        let direct = match dst {
            IpAddr::V4(a) => self.v4.get(&a),
            IpAddr::V6(a) => self.v6.get(&a),
        };
        direct.copied().or_else(|| {
            self.prefixes
                .iter()
                .find(|(net, bits, _)| in_prefix(dst, *net, *bits))
                .map(|r| r.2)
        })
    }
}

/// What the main loop and the send task share.
struct SendShared {
    /// Bumped (under `table`'s lock) after every new table.
    epoch: AtomicU64,
    table: Mutex<Arc<RouteTable>>,
    /// Packets the task dropped because no client has the destination.
    no_route: AtomicU64,
    base: Instant,
}

impl SendShared {
    fn table(&self) -> Arc<RouteTable> {
        Arc::clone(
            &self
                .table
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// The server's sending direction on its own task (see the module documentation); dropping
/// it stops the task. While it exists the main loop must not read the tun device.
pub struct SendTask {
    shared: Arc<SendShared>,
    handle: tokio::task::JoinHandle<()>,
    /// `core.send_routes_generation()` of the published table.
    generation: Option<u64>,
    /// Per client: its `sent_at` cell and the last value handed to the core.
    sent: HashMap<u32, (Arc<AtomicU64>, u64)>,
    no_route_seen: u64,
}

impl SendTask {
    /// Starts the task on `sock` (shared with the main loop's receive side) and `tun`.
    pub fn spawn<D: PacketDevice + 'static>(
        sock: Arc<UdpSocket>,
        tun: Arc<D>,
        core: &ServerCore,
    ) -> std::io::Result<Self> {
        let udp = UdpBatch::new(&sock)?;
        let shared = Arc::new(SendShared {
            epoch: AtomicU64::new(0),
            table: Mutex::new(Arc::new(RouteTable::default())),
            no_route: AtomicU64::new(0),
            base: Instant::now(),
        });
        let job = SendJob {
            shared: Arc::clone(&shared),
            sendq: SendQueue::new(udp.max_gso_segments()),
            udp,
            sock,
            tun,
        };
        let mut task = SendTask {
            shared,
            handle: tokio::spawn(job.run()),
            generation: None,
            sent: HashMap::new(),
            no_route_seen: 0,
        };
        task.sync(core);
        Ok(task)
    }

    /// Publishes a new routing table if the core's routing changed since the last one.
    /// Call after every event the core handled.
    pub fn sync(&mut self, core: &ServerCore) {
        let generation = core.send_routes_generation();
        if self.generation == Some(generation) {
            return;
        }
        self.generation = Some(generation);
        let mut table = RouteTable::default();
        let mut sent = HashMap::new();
        let mut by_peer: HashMap<u32, usize> = HashMap::new();
        for SendRoute {
            net,
            bits,
            peer_id,
            addr,
            mss,
            sender,
        } in core.send_routes()
        {
            // Only UDP clients: the send task has no TCP writers (a UDP server has none).
            if addr.conn.is_some() {
                continue;
            }
            let idx = *by_peer.entry(peer_id).or_insert_with(|| {
                let cell = self
                    .sent
                    .remove(&peer_id)
                    .unwrap_or_else(|| (Arc::new(AtomicU64::new(0)), 0));
                let sent_at = Arc::clone(&cell.0);
                sent.insert(peer_id, cell);
                table.entries.push(RouteEntry {
                    addr: addr.addr,
                    mss,
                    sender,
                    sent_at,
                });
                table.entries.len() - 1
            });
            match net {
                IpAddr::V4(a) if bits == 32 => {
                    table.v4.insert(a, idx);
                }
                IpAddr::V6(a) if bits == 128 => {
                    table.v6.insert(a, idx);
                }
                _ => table.prefixes.push((net, bits, idx)),
            }
        }
        // Client addresses are exact routes; iroutes go longest prefix first.
        table.prefixes.sort_by_key(|p| std::cmp::Reverse(p.1));
        self.sent = sent;
        let mut cur = self
            .shared
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *cur = Arc::new(table);
        self.shared.epoch.fetch_add(1, Ordering::Release);
    }

    /// Tells the core which clients the task sent to since the last call (their keepalive
    /// need not ping). Call before `ServerCore::on_timeout`.
    pub fn feed_keepalive(&mut self, core: &mut ServerCore) {
        for (peer_id, (cell, seen)) in &mut self.sent {
            let at = cell.load(Ordering::Relaxed);
            if at != *seen {
                *seen = at;
                core.note_sent(*peer_id, self.shared.base + Duration::from_nanos(at));
            }
        }
        let dropped = self.shared.no_route.load(Ordering::Relaxed);
        if dropped != self.no_route_seen {
            core.count_no_route(dropped - self.no_route_seen);
            self.no_route_seen = dropped;
        }
    }
}

impl Drop for SendTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// What the send task owns.
struct SendJob<D> {
    shared: Arc<SendShared>,
    udp: UdpBatch,
    sendq: SendQueue,
    sock: Arc<UdpSocket>,
    tun: Arc<D>,
}

/// The task's own state per table entry.
struct LocalEntry {
    sender: DataSender,
    touched: bool,
}

impl<D: PacketDevice + 'static> SendJob<D> {
    /// tun batch → route → seal → GSO send, until aborted.
    async fn run(mut self) {
        let mut rng = StdRng::from_entropy();
        let mut sbuf = PacketBuf::new(PacketBuf::DEFAULT_HEADROOM, 2048);
        let mut batch = TunBatch::new();
        let mut seen = u64::MAX;
        let mut table = Arc::new(RouteTable::default());
        let mut local: Vec<LocalEntry> = Vec::new();
        let mut touched: Vec<usize> = Vec::new();
        loop {
            if let Err(e) = self.tun.recv_batch(&mut batch).await {
                tracing::warn!("tun read: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let epoch = self.shared.epoch.load(Ordering::Acquire);
            if epoch != seen {
                seen = epoch;
                table = self.shared.table();
                local = table
                    .entries
                    .iter()
                    .map(|e| LocalEntry {
                        sender: e.sender.clone(),
                        touched: false,
                    })
                    .collect();
            }
            let mut no_route = 0;
            for pkt in batch.iter() {
                let Some(i) = ip_addrs(pkt).and_then(|(_, d)| table.lookup(d)) else {
                    no_route += 1;
                    continue;
                };
                let (Some(entry), Some(l)) = (table.entries.get(i), local.get_mut(i)) else {
                    continue;
                };
                sbuf.clear(PacketBuf::DEFAULT_HEADROOM);
                sbuf.extend_from_slice(pkt);
                if let Some(mss) = entry.mss {
                    openvpn_wire::clamp_mss(sbuf.as_mut_slice(), mss);
                }
                if l.sender.seal(&mut sbuf, &mut rng).is_ok() {
                    self.sendq.push(entry.addr, sbuf.as_slice());
                    if !l.touched {
                        l.touched = true;
                        touched.push(i);
                    }
                }
            }
            if no_route > 0 {
                self.shared.no_route.fetch_add(no_route, Ordering::Relaxed);
            }
            if !touched.is_empty() {
                let at = u64::try_from(self.shared.base.elapsed().as_nanos())
                    .unwrap_or(u64::MAX)
                    .max(1);
                for i in touched.drain(..) {
                    if let (Some(e), Some(l)) = (table.entries.get(i), local.get_mut(i)) {
                        l.touched = false;
                        l.sender.flush_counters();
                        e.sent_at.store(at, Ordering::Relaxed);
                    }
                }
            }
            if !self.sendq.is_empty() {
                let _ = self.sendq.flush(&self.udp, &self.sock).await;
            }
        }
    }
}
