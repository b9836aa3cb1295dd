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

use std::collections::HashMap;
use std::time::Instant;

use openvpn_crypto::PacketBuf;
use openvpn_tun::udp_batch::{SendQueue, UdpBatch, UdpRecvBufs};
use openvpn_tun::{PacketDevice, TunBatch};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::core::{Outputs, PeerAddr, ServerCore};

/// Receive buffers per `recvmmsg` (each holds one GRO batch of up to 64 KiB).
const RECV_BUFFERS: usize = 16;

/// Whether the batched data path is on (`OPENVPN_RS_FAST_IO` unset or anything but `0`).
pub fn enabled() -> bool {
    std::env::var("OPENVPN_RS_FAST_IO").map_or(true, |v| v.trim() != "0")
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
            match core.seal_tun_packet(now, pkt, &mut self.sbuf) {
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
