//! The client's batched data path over UDP: many packets per system call in both directions.
//!
//! ```text
//!  tun.recv_batch (TSO super-packets split) ─▶ seal each into one reused PacketBuf
//!      ─▶ SendQueue (equal sizes to the server) ─▶ one UDP GSO sendmsg per run
//!  recvmmsg + UDP GRO ─▶ open each datagram in place ─▶ TunBatch
//!      ─▶ tun.send_batch (TCP segments coalesced into GSO super-packets)
//! ```
//!
//! On by default; `OPENVPN_RS_FAST_IO=0` in the environment selects the one-packet-per-call
//! path (and a plain tun device).
//!
//! **Both directions in parallel** (`OPENVPN_RS_THREADS=2`; off by default, see
//! [`split_enabled`]): the tun → seal → GSO send direction runs as its own task ([`SealTask`], on another
//! worker of the multi-threaded runtime) with a [`DataSender`] of the engine's
//! [`DataChannel`] and its own descriptor of the UDP socket; receiving, opening, control
//! and timers stay in the engine. Key installs, the send-key switch, retirements and peer-id
//! changes reach the task through the channel's published sealing state (no lock per
//! packet); a change of device, `mssfix` or tun settings, a pause or the end of the
//! connection stops the task (and the engine starts a new one when it applies).

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openvpn_control::dataplane::{DataChannel, DataSender, Payload};
use openvpn_crypto::PacketBuf;
use openvpn_tun::udp_batch::{SendQueue, UdpBatch, UdpRecvBufs};
use openvpn_tun::{PacketDevice, TunBatch};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::UdpSocket;

use crate::tun::{TunSettings, TunVerdict};

/// Receive buffers per `recvmmsg` (each holds one GRO batch of up to 64 KiB).
const RECV_BUFFERS: usize = 16;

/// Whether the batched data path is on (`OPENVPN_RS_FAST_IO` unset or anything but `0`).
pub(crate) fn enabled() -> bool {
    std::env::var("OPENVPN_RS_FAST_IO").map_or(true, |v| v.trim() != "0")
}

/// Whether the sending direction runs on its own task: `OPENVPN_RS_THREADS=2` (or more).
/// Off by default: on this project's 2-core bench it gained no throughput and added latency
/// under load (`docs/performance.md`, "Multi-core").
pub(crate) fn split_enabled() -> bool {
    std::env::var("OPENVPN_RS_THREADS").is_ok_and(|v| v.trim().parse::<u32>().is_ok_and(|n| n >= 2))
}

/// What one received link batch asks of the engine.
#[derive(Debug, Default)]
pub(crate) struct LinkBatchResult {
    /// An authentic data packet or ping arrived (keepalive).
    pub received_data: bool,
    /// The server sent OCC_EXIT.
    pub occ_exit: bool,
    /// Bytes of IP packets for the tun device (`inactive`).
    pub tun_bytes: u64,
}

/// Batched UDP state of one connection.
pub(crate) struct FastUdp {
    udp: UdpBatch,
    rbufs: UdpRecvBufs,
    sendq: SendQueue,
    sbuf: PacketBuf,
    tun_out: TunBatch,
}

impl FastUdp {
    /// Sets `sock` up for recvmmsg/GRO and GSO; logs what the kernel offers.
    pub(crate) fn new(sock: &UdpSocket) -> std::io::Result<Self> {
        let udp = UdpBatch::new(sock)?;
        tracing::info!(
            gso_segments = udp.max_gso_segments(),
            gro_segments = udp.gro_segments(),
            send_task = if split_enabled() {
                "own task (seal+send parallel to recv+open)"
            } else {
                "off (OPENVPN_RS_THREADS=2 turns it on)"
            },
            "fast I/O: batched UDP"
        );
        let sendq = SendQueue::new(udp.max_gso_segments());
        Ok(Self {
            udp,
            rbufs: UdpRecvBufs::new(RECV_BUFFERS, 65_536),
            sendq,
            sbuf: PacketBuf::new(PacketBuf::DEFAULT_HEADROOM, 2048),
            tun_out: TunBatch::new(),
        })
    }

    /// Waits for datagrams; returns the number of filled buffers.
    pub(crate) async fn recv(&mut self, sock: &UdpSocket) -> std::io::Result<usize> {
        self.udp.recv(sock, &mut self.rbufs).await
    }

    /// Handles `n` received buffers: data packets from `server` are opened in place and
    /// written to `device` as one batch; control packets go to `control` (in order).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn on_link_batch<D: PacketDevice>(
        &mut self,
        n: usize,
        server: SocketAddr,
        now: Instant,
        unix_now: u64,
        data: &mut DataChannel,
        mss: Option<u16>,
        device: Option<&D>,
        mut control: impl FnMut(&mut [u8]),
    ) -> LinkBatchResult {
        let mut res = LinkBatchResult::default();
        self.tun_out.clear();
        for i in 0..n {
            let (from, bytes, stride) = self.rbufs.buffer_mut(i);
            if from.ip().to_canonical() != server.ip().to_canonical()
                || from.port() != server.port()
            {
                continue;
            }
            for pkt in bytes.chunks_mut(stride) {
                let op = pkt.first().map_or(0, |b| b >> 3);
                if op != 6 && op != 9 {
                    control(pkt);
                    continue;
                }
                match data.open(now, unix_now, pkt) {
                    Ok(Payload::Ip(r)) => {
                        res.received_data = true;
                        res.tun_bytes += r.len() as u64;
                        let ip = &mut pkt[r];
                        if let Some(mss) = mss {
                            openvpn_wire::clamp_mss(ip, mss);
                        }
                        self.tun_out.push(ip);
                    }
                    Ok(Payload::Decompressed) => {
                        res.received_data = true;
                        res.tun_bytes += data.decompressed().len() as u64;
                        self.tun_out.push(data.decompressed());
                        if let Some(mss) = mss {
                            let last = self.tun_out.len() - 1;
                            openvpn_wire::clamp_mss(self.tun_out.get_mut(last), mss);
                        }
                    }
                    Ok(Payload::Ping) => res.received_data = true,
                    Ok(Payload::Occ(r)) => {
                        res.received_data = true;
                        if pkt.get(r.start + 16) == Some(&6) {
                            res.occ_exit = true;
                        }
                    }
                    Err(_) => {}
                }
            }
        }
        if let Some(d) = device {
            if !self.tun_out.is_empty() {
                let _ = d.send_batch(&mut self.tun_out).await;
            }
        }
        res
    }

    /// Seals every packet of `batch` (blocked families answered locally, MSS clamped) and
    /// sends them to `server` in GSO runs. Returns the bytes of the IP packets sent (0:
    /// nothing).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn seal_and_send<D: PacketDevice>(
        &mut self,
        sock: &UdpSocket,
        server: SocketAddr,
        batch: &mut TunBatch,
        now: Instant,
        data: &mut DataChannel,
        rng: &mut StdRng,
        mss: Option<u16>,
        settings: Option<&TunSettings>,
        device: &D,
    ) -> u64 {
        let mut out = SealOut {
            sendq: &mut self.sendq,
            sbuf: &mut self.sbuf,
            server,
        };
        let sent = out
            .seal_batch(batch, mss, settings, device, |b| {
                data.seal(now, b, rng).is_ok()
            })
            .await;
        if !self.sendq.is_empty() {
            let _ = self.sendq.flush(&self.udp, sock).await;
        }
        sent
    }

    /// Starts the sending direction on its own task (see the module documentation), or
    /// keeps the running one if nothing it depends on changed. `device` = `None` (not
    /// connected, paused) stops it. While `task` is `Some`, the engine must not read the tun
    /// device itself.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn update_sealer<D: PacketDevice + 'static>(
        &self,
        task: &mut Option<SealTask>,
        sock: &UdpSocket,
        server: SocketAddr,
        data: &DataChannel,
        device: Option<&Arc<D>>,
        mss: Option<u16>,
        settings: Option<&TunSettings>,
        max_packet: usize,
    ) {
        let Some(device) = device else {
            *task = None;
            return;
        };
        let device_id = Arc::as_ptr(device) as *const () as usize;
        if let Some(t) = task.as_ref() {
            if t.device_id == device_id
                && t.mss == mss
                && t.max_packet == max_packet
                && t.settings.as_ref() == settings
                && !t.handle.is_finished()
            {
                return;
            }
        }
        *task = None;
        let dup = match sock
            .as_fd()
            .try_clone_to_owned()
            .map(std::net::UdpSocket::from)
            .and_then(UdpSocket::from_std)
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("send task: cannot duplicate the UDP socket ({e})");
                return;
            }
        };
        let udp = match UdpBatch::new(&dup) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!("send task: cannot batch the UDP socket ({e})");
                return;
            }
        };
        let base = Instant::now();
        let sent_at = Arc::new(AtomicU64::new(0));
        let sent_bytes = Arc::new(AtomicU64::new(0));
        let job = SealJob {
            sock: dup,
            sendq: SendQueue::new(udp.max_gso_segments()),
            udp,
            server,
            tx: data.sender(),
            device: Arc::clone(device),
            mss,
            settings: settings.cloned(),
            max_packet,
            base,
            sent_at: Arc::clone(&sent_at),
            sent_bytes: Arc::clone(&sent_bytes),
        };
        tracing::debug!("send task started");
        *task = Some(SealTask {
            handle: tokio::spawn(job.run()),
            device_id,
            mss,
            settings: settings.cloned(),
            max_packet,
            base,
            sent_at,
            sent_bytes,
            reported: 0,
        });
    }
}

/// Where sealed packets go: one reused seal buffer and the GSO queue to the server.
struct SealOut<'a> {
    sendq: &'a mut SendQueue,
    sbuf: &'a mut PacketBuf,
    server: SocketAddr,
}

impl SealOut<'_> {
    /// Filters (block-ipv4/-ipv6), clamps and seals every packet of `batch` with `seal` and
    /// queues it. Returns the bytes of the IP packets queued.
    async fn seal_batch<D: PacketDevice>(
        &mut self,
        batch: &mut TunBatch,
        mss: Option<u16>,
        settings: Option<&TunSettings>,
        device: &D,
        mut seal: impl FnMut(&mut PacketBuf) -> bool,
    ) -> u64 {
        let mut sent = 0;
        for i in 0..batch.len() {
            let pkt = batch.get_mut(i);
            match settings.map_or(TunVerdict::Forward, |t| t.verdict(pkt)) {
                TunVerdict::Forward => {}
                TunVerdict::Drop => continue,
                TunVerdict::Answer(icmp) => {
                    let _ = device.send(&icmp).await;
                    continue;
                }
            }
            if let Some(mss) = mss {
                openvpn_wire::clamp_mss(pkt, mss);
            }
            self.sbuf.clear(PacketBuf::DEFAULT_HEADROOM);
            self.sbuf.extend_from_slice(pkt);
            if seal(self.sbuf) {
                self.sendq.push(self.server, self.sbuf.as_slice());
                sent += pkt.len() as u64;
            }
        }
        sent
    }
}

/// The running sending direction; dropping it stops the task.
pub(crate) struct SealTask {
    handle: tokio::task::JoinHandle<()>,
    device_id: usize,
    mss: Option<u16>,
    settings: Option<TunSettings>,
    max_packet: usize,
    base: Instant,
    /// Nanoseconds after `base` of the last send (0 = nothing yet).
    sent_at: Arc<AtomicU64>,
    /// Bytes of IP packets sent since the last [`SealTask::take_bytes`].
    sent_bytes: Arc<AtomicU64>,
    reported: u64,
}

impl SealTask {
    /// When the task last sent something, if that is newer than the last answer (for the
    /// keepalive's "something was sent").
    pub(crate) fn take_sent(&mut self) -> Option<Instant> {
        let at = self.sent_at.load(Ordering::Relaxed);
        if at == self.reported {
            return None;
        }
        self.reported = at;
        Some(self.base + Duration::from_nanos(at))
    }

    /// Bytes of IP packets the task sent since the last call (for `inactive`).
    pub(crate) fn take_bytes(&self) -> u64 {
        self.sent_bytes.swap(0, Ordering::Relaxed)
    }
}

impl Drop for SealTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// What the sending task owns.
struct SealJob<D> {
    sock: UdpSocket,
    udp: UdpBatch,
    sendq: SendQueue,
    server: SocketAddr,
    tx: DataSender,
    device: Arc<D>,
    mss: Option<u16>,
    settings: Option<TunSettings>,
    max_packet: usize,
    base: Instant,
    sent_at: Arc<AtomicU64>,
    sent_bytes: Arc<AtomicU64>,
}

impl<D: PacketDevice + 'static> SealJob<D> {
    /// tun batch → seal → GSO send, until aborted.
    async fn run(mut self) {
        let mut rng = StdRng::from_entropy();
        let mut sbuf = PacketBuf::new(PacketBuf::DEFAULT_HEADROOM, 2048);
        let mut batch = TunBatch::new();
        batch.set_max_packet(self.max_packet);
        loop {
            if let Err(e) = self.device.recv_batch(&mut batch).await {
                tracing::debug!("send task: tun read: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let tx = &mut self.tx;
            let mut out = SealOut {
                sendq: &mut self.sendq,
                sbuf: &mut sbuf,
                server: self.server,
            };
            let sent = out
                .seal_batch(
                    &mut batch,
                    self.mss,
                    self.settings.as_ref(),
                    &*self.device,
                    |b| tx.seal(b, &mut rng).is_ok(),
                )
                .await;
            tx.flush_counters();
            if !self.sendq.is_empty() {
                let _ = self.sendq.flush(&self.udp, &self.sock).await;
            }
            if sent > 0 {
                self.sent_bytes.fetch_add(sent, Ordering::Relaxed);
                let at = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.sent_at.store(at.max(1), Ordering::Relaxed);
            }
        }
    }
}
