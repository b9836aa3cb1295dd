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

use std::net::SocketAddr;
use std::time::Instant;

use openvpn_control::dataplane::{DataChannel, Payload};
use openvpn_crypto::PacketBuf;
use openvpn_tun::udp_batch::{SendQueue, UdpBatch, UdpRecvBufs};
use openvpn_tun::{PacketDevice, TunBatch};
use rand::rngs::StdRng;
use tokio::net::UdpSocket;

use crate::tun::{TunSettings, TunVerdict};

/// Receive buffers per `recvmmsg` (each holds one GRO batch of up to 64 KiB).
const RECV_BUFFERS: usize = 16;

/// Whether the batched data path is on (`OPENVPN_RS_FAST_IO` unset or anything but `0`).
pub(crate) fn enabled() -> bool {
    std::env::var("OPENVPN_RS_FAST_IO").map_or(true, |v| v.trim() != "0")
}

/// What one received link batch asks of the engine.
#[derive(Debug, Default)]
pub(crate) struct LinkBatchResult {
    /// An authentic data packet or ping arrived (keepalive).
    pub received_data: bool,
    /// The server sent OCC_EXIT.
    pub occ_exit: bool,
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
                        let ip = &mut pkt[r];
                        if let Some(mss) = mss {
                            openvpn_wire::clamp_mss(ip, mss);
                        }
                        self.tun_out.push(ip);
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
    /// sends them to `server` in GSO runs. Returns whether anything was sent.
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
    ) -> bool {
        let mut sent = false;
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
            if data.seal(now, &mut self.sbuf, rng).is_ok() {
                self.sendq.push(server, self.sbuf.as_slice());
                sent = true;
            }
        }
        if !self.sendq.is_empty() {
            let _ = self.sendq.flush(&self.udp, sock).await;
        }
        sent
    }
}
