//! Tun offload: a tun device opened with `IFF_VNET_HDR` and `TUNSETOFFLOAD`, so that TCP
//! crosses it in super-packets of up to 64 KiB, plus the pure functions that split and
//! coalesce such packets.
//!
//! ```text
//!  kernel TCP ─▶ tun (TSO super-packet + virtio_net_hdr) ─▶ recv_batch: split_tso ─▶ MTU-sized
//!                                                           IP packets in a TunBatch ─▶ seal
//!  open ─▶ TunBatch ─▶ send_batch: coalesce (same flow, in order) ─▶ one GSO super-packet
//!          + virtio_net_hdr (NEEDS_CSUM, pseudo-header partial sum) ─▶ tun ─▶ kernel TCP
//! ```
//!
//! Every read and write on an `IFF_VNET_HDR` device starts with a 10-byte `virtio_net_hdr`
//! (little-endian on every host this runs on): `flags`, `gso_type`, `hdr_len`, `gso_size`,
//! `csum_start`, `csum_offset`. On read, `gso_type` TCPV4/TCPV6 says the packet is a TSO
//! super-packet to be cut into `gso_size` payload chunks, and `NEEDS_CSUM` says the checksum
//! field at `csum_start + csum_offset` holds only the pseudo-header sum. On write, the same
//! header hands the kernel a coalesced super-packet (it then behaves like a GRO packet), or
//! marks a single packet's checksum as already verified (`DATA_VALID`).
//!
//! [`OffloadTun::create`] falls back, and logs it, when the kernel refuses `TUNSETOFFLOAD`:
//! the device then still uses the header (every read is one plain packet) and
//! [`OffloadTun::offload_enabled`] is false.

use std::io;
use std::net::IpAddr;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;

use crate::netlink::{Netlink, RouteMsg};
use crate::route::mask;
use crate::{PacketDevice, RouteManager, TunConfig, TunError};

/// Size of `struct virtio_net_hdr` (without `num_buffers`), the tun default.
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is partial.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the packet's checksums are known to be good.
pub const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_ECN` (a flag bit on `gso_type`).
pub const GSO_ECN: u8 = 0x80;

/// Largest IP packet (and so super-packet) a tun read or write carries.
const MAX_IP: usize = 65_535;
/// Packets per [`TunBatch`] before `recv_batch` stops reading.
const BATCH_PACKETS: usize = 128;

const TUNSETIFF: u32 = 0x4004_54ca;
/// `_IOW('T', 208, unsigned int)`.
const TUNSETOFFLOAD: u32 = 0x4004_54d0;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const IFNAMSIZ: usize = 16;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;

/// `struct virtio_net_hdr`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    /// `F_NEEDS_CSUM` / `F_DATA_VALID`.
    pub flags: u8,
    /// `GSO_*`, possibly with `GSO_ECN`.
    pub gso_type: u8,
    /// Length of the headers (L3 + L4).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the checksummed range starts (the L4 header).
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
}

impl VirtioNetHdr {
    /// Parses the 10-byte header.
    pub fn parse(b: &[u8]) -> Option<Self> {
        let b = b.get(..VNET_HDR_LEN)?;
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        })
    }

    /// The 10 header bytes.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }
}

/// Why a packet read from the device could not be turned into IP packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// Shorter than the headers it claims.
    #[error("truncated packet")]
    Truncated,
    /// A GSO type this module does not split (only TCPv4/TCPv6 are enabled).
    #[error("unsupported gso_type {0}")]
    UnsupportedGso(u8),
    /// Checksum offsets outside the packet.
    #[error("bad checksum offsets")]
    BadChecksumOffsets,
    /// Not an IPv4/IPv6 TCP packet where one was required.
    #[error("not a TCP/IP packet")]
    NotTcp,
}

// ---------------------------------------------------------------------------------------------
// Internet checksum

/// Adds `data` to a running ones'-complement sum (big-endian 16-bit words; an odd last byte
/// is padded with zero). Keep sums of several pieces even-aligned except the last.
pub fn checksum_add(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        // Add the two 32-bit halves: 2^32 ≡ 1 (mod 2^16 - 1), so this keeps the residue.
        sum += (w >> 32) + (w & 0xffff_ffff);
    }
    let rest = chunks.remainder();
    let mut words = rest.chunks_exact(2);
    for c in &mut words {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = words.remainder() {
        sum += u64::from(*b) << 8;
    }
    sum
}

/// Folds a running sum to 16 bits (not complemented).
pub fn checksum_fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The pseudo-header sum for an L4 packet of `l4_len` bytes inside `ip` (IPv4 or IPv6).
pub fn pseudo_header_sum(ip: &[u8], proto: u8, l4_len: usize) -> u64 {
    let mut sum = match ip[0] >> 4 {
        4 => checksum_add(0, &ip[12..20]),
        _ => checksum_add(0, &ip[8..40]),
    };
    sum += u64::from(proto);
    sum += l4_len as u64;
    sum
}

/// The IPv4 header checksum for `hdr` (its checksum field must be zero).
pub fn ipv4_header_checksum(hdr: &[u8]) -> u16 {
    !checksum_fold(checksum_add(0, hdr))
}

/// Recomputes the IPv4 header checksum of `pkt` in place.
fn fix_ipv4_header(pkt: &mut [u8]) {
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    pkt[10] = 0;
    pkt[11] = 0;
    let c = ipv4_header_checksum(&pkt[..ihl]);
    pkt[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Computes and stores the full TCP checksum of the TCP/IP packet `pkt` whose TCP header
/// starts at `l4`.
fn fix_tcp_checksum(pkt: &mut [u8], l4: usize) {
    pkt[l4 + 16] = 0;
    pkt[l4 + 17] = 0;
    let sum = checksum_add(pseudo_header_sum(pkt, 6, pkt.len() - l4), &pkt[l4..]);
    let c = !checksum_fold(sum);
    pkt[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
}

/// True if the TCP checksum of `pkt` (TCP header at `l4`) verifies.
fn tcp_checksum_ok(pkt: &[u8], l4: usize) -> bool {
    checksum_fold(checksum_add(
        pseudo_header_sum(pkt, 6, pkt.len() - l4),
        &pkt[l4..],
    )) == 0xffff
}

// ---------------------------------------------------------------------------------------------
// Batches

/// IP packets stored back to back in one reusable arena (no allocation per packet), plus the
/// scratch space a device needs to read or write them.
#[derive(Debug, Default)]
pub struct TunBatch {
    data: Vec<u8>,
    ranges: Vec<Range<usize>>,
    /// Largest IP packet `recv_batch` produces when splitting a super-packet (0 = the
    /// super-packet's own segment size).
    max_packet: usize,
    raw: Vec<u8>,
    out: Vec<u8>,
    frames: Vec<Range<usize>>,
    coalescer: Coalescer,
}

impl TunBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Caps the size of the IP packets a TSO super-packet is split into (so that each one,
    /// sealed, fits the link MTU); 0 keeps the sender's segment size.
    pub fn set_max_packet(&mut self, max: usize) {
        self.max_packet = max;
    }

    /// The cap set with [`TunBatch::set_max_packet`].
    pub fn max_packet(&self) -> usize {
        self.max_packet
    }

    /// Removes every packet (keeps the allocations).
    pub fn clear(&mut self) {
        self.data.clear();
        self.ranges.clear();
    }

    /// Number of packets.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// True without packets.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Packet `i`.
    pub fn get(&self, i: usize) -> &[u8] {
        &self.data[self.ranges[i].clone()]
    }

    /// Packet `i`, mutable.
    pub fn get_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.data[self.ranges[i].clone()]
    }

    /// The packets in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.ranges.iter().map(|r| &self.data[r.clone()])
    }

    /// Appends a copy of `pkt`.
    pub fn push(&mut self, pkt: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(pkt);
        self.ranges.push(start..self.data.len());
    }

    /// Appends one packet made of `parts` and returns it for in-place changes.
    fn push_parts(&mut self, parts: &[&[u8]]) -> &mut [u8] {
        let start = self.data.len();
        for p in parts {
            self.data.extend_from_slice(p);
        }
        self.ranges.push(start..self.data.len());
        &mut self.data[start..]
    }

    /// Room for one packet of at most `max` bytes at the end; finish with
    /// [`TunBatch::commit_tail`].
    pub fn tail_mut(&mut self, max: usize) -> &mut [u8] {
        let start = self.data.len();
        self.data.resize(start + max, 0);
        &mut self.data[start..]
    }

    /// Keeps the first `len` bytes of the room from [`TunBatch::tail_mut`] as a packet.
    pub fn commit_tail(&mut self, len: usize) {
        let start = self.ranges.last().map_or(0, |r| r.end);
        self.data.truncate(start + len);
        self.ranges.push(start..start + len);
    }

    /// Drops the room from [`TunBatch::tail_mut`] without adding a packet.
    pub fn abandon_tail(&mut self) {
        let end = self.ranges.last().map_or(0, |r| r.end);
        self.data.truncate(end);
    }

    /// Coalesces the packets into frames (virtio header + packet or super-packet) in the
    /// batch's output area; returns how many frames there are ([`TunBatch::frame`]).
    pub fn coalesce(&mut self) -> usize {
        let mut out = std::mem::take(&mut self.out);
        let mut frames = std::mem::take(&mut self.frames);
        let mut co = std::mem::take(&mut self.coalescer);
        co.run(self, &mut out, &mut frames);
        self.out = out;
        self.frames = frames;
        self.coalescer = co;
        self.frames.len()
    }

    /// Frame `i` from the last [`TunBatch::coalesce`].
    pub fn frame(&self, i: usize) -> &[u8] {
        &self.out[self.frames[i].clone()]
    }
}

// ---------------------------------------------------------------------------------------------
// Split (device → VPN)

/// Turns one frame read from a vnet-header device (`hdr` already parsed, `pkt` the bytes after
/// it) into plain IP packets appended to `out`: a TSO super-packet is cut into segments of at
/// most `gso_size` payload bytes and at most `max_packet` bytes in all (0 = no cap), each with
/// its own IP length, IPv4 id and header checksum, TCP sequence number, flags (FIN/PSH only on
/// the last, CWR only on the first) and a full TCP checksum; a partial checksum
/// (`NEEDS_CSUM`) is completed. Returns the number of packets added.
pub fn split_frame(
    hdr: &VirtioNetHdr,
    pkt: &[u8],
    max_packet: usize,
    out: &mut TunBatch,
) -> Result<usize, OffloadError> {
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => {
            let copy = out.push_parts(&[pkt]);
            if hdr.flags & F_NEEDS_CSUM != 0 {
                if let Err(e) = complete_checksum(copy, hdr) {
                    out.ranges.pop();
                    out.abandon_tail();
                    return Err(e);
                }
            }
            Ok(1)
        }
        GSO_TCPV4 | GSO_TCPV6 => split_tcp(hdr, pkt, max_packet, out),
        other => Err(OffloadError::UnsupportedGso(other)),
    }
}

/// Completes a partial checksum: ones'-complement sum from `csum_start` to the end (the field
/// already holds the pseudo-header sum), stored complemented.
fn complete_checksum(pkt: &mut [u8], hdr: &VirtioNetHdr) -> Result<(), OffloadError> {
    let start = usize::from(hdr.csum_start);
    let field = start + usize::from(hdr.csum_offset);
    if field + 2 > pkt.len() {
        return Err(OffloadError::BadChecksumOffsets);
    }
    let mut c = !checksum_fold(checksum_add(0, &pkt[start..]));
    if c == 0 {
        c = 0xffff; // UDP: 0 means "no checksum"; equivalent for TCP
    }
    pkt[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Offset of the L4 header of an IPv4/IPv6 packet without extension headers.
fn l4_offset(pkt: &[u8]) -> Option<usize> {
    match pkt.first()? >> 4 {
        4 => Some(usize::from(pkt[0] & 0x0f) * 4),
        6 => Some(40),
        _ => None,
    }
}

fn split_tcp(
    hdr: &VirtioNetHdr,
    pkt: &[u8],
    max_packet: usize,
    out: &mut TunBatch,
) -> Result<usize, OffloadError> {
    let version = pkt.first().ok_or(OffloadError::Truncated)? >> 4;
    let l4 = match usize::from(hdr.csum_start) {
        0 => l4_offset(pkt).ok_or(OffloadError::NotTcp)?,
        s => s,
    };
    let min_l3 = if version == 4 { 20 } else { 40 };
    if (version != 4 && version != 6) || l4 < min_l3 || pkt.len() < l4 + 20 {
        return Err(OffloadError::Truncated);
    }
    let tcp_hl = usize::from(pkt[l4 + 12] >> 4) * 4;
    let hl = l4 + tcp_hl;
    if tcp_hl < 20 || pkt.len() < hl {
        return Err(OffloadError::Truncated);
    }
    let mut seg = usize::from(hdr.gso_size);
    if max_packet > hl {
        seg = if seg == 0 {
            max_packet - hl
        } else {
            seg.min(max_packet - hl)
        };
    }
    if seg == 0 {
        return Err(OffloadError::Truncated);
    }
    let (headers, payload) = pkt.split_at(hl);
    let seq0 = u32::from_be_bytes([pkt[l4 + 4], pkt[l4 + 5], pkt[l4 + 6], pkt[l4 + 7]]);
    let id0 = u16::from_be_bytes([pkt[4], pkt[5]]);
    let flags0 = pkt[l4 + 13];
    let n = payload.len().div_ceil(seg).max(1);
    for i in 0..n {
        let chunk = &payload[(i * seg).min(payload.len())..((i + 1) * seg).min(payload.len())];
        let p = out.push_parts(&[headers, chunk]);
        let total = p.len();
        if version == 4 {
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[4..6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            fix_ipv4_header(p);
        } else {
            p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        }
        let seq = seq0.wrapping_add((i * seg) as u32);
        p[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = flags0;
        if i + 1 < n {
            flags &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            flags &= !TCP_CWR;
        }
        p[l4 + 13] = flags;
        fix_tcp_checksum(p, l4);
    }
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// Coalesce (VPN → device)

/// One super-packet being assembled.
#[derive(Debug, Clone)]
struct Group {
    /// Index of the first packet (its headers are the super-packet's).
    first: usize,
    /// Number of packets.
    count: usize,
    /// Payload bytes per segment (the first packet's).
    gso: usize,
    /// Sum of payload bytes.
    payload: usize,
    /// Sequence number the next segment must have.
    next_seq: u32,
    /// Still accepting segments.
    open: bool,
    /// The last segment carried PSH.
    psh: bool,
    /// L3 + L4 header length.
    hl: usize,
    l4: usize,
}

/// What a packet is, for coalescing.
#[derive(Debug, Clone, Copy)]
enum Class {
    /// Not a candidate: written as it is (the kernel checks it).
    Plain,
    /// A TCP segment with payload whose checksum verified: `l4`, `hl`, payload length.
    Tcp { l4: usize, hl: usize, len: usize },
    /// A TCP packet whose checksum verified but that cannot be merged (e.g. a pure ACK); its
    /// TCP header offset.
    Valid(usize),
}

#[derive(Debug, Default)]
struct Coalescer {
    groups: Vec<Group>,
    /// Group of each packet.
    member: Vec<usize>,
    /// Whether each packet's checksum verified.
    valid: Vec<bool>,
    emitted: Vec<bool>,
}

fn classify(p: &[u8]) -> Class {
    let Some(l4) = l4_offset(p) else {
        return Class::Plain;
    };
    let v4 = p[0] >> 4 == 4;
    if v4 {
        // No options, not a fragment, TCP, consistent length.
        if l4 != 20
            || p.len() < 40
            || p[9] != 6
            || u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0
            || usize::from(u16::from_be_bytes([p[2], p[3]])) != p.len()
        {
            return Class::Plain;
        }
    } else if p.len() < 60
        || p[6] != 6
        || usize::from(u16::from_be_bytes([p[4], p[5]])) + 40 != p.len()
    {
        return Class::Plain;
    }
    let tcp_hl = usize::from(p[l4 + 12] >> 4) * 4;
    let hl = l4 + tcp_hl;
    if tcp_hl < 20 || p.len() < hl || !tcp_checksum_ok(p, l4) {
        return Class::Plain;
    }
    let flags = p[l4 + 13];
    if flags & !(TCP_PSH) != TCP_ACK || p.len() == hl {
        return Class::Valid(l4);
    }
    Class::Tcp {
        l4,
        hl,
        len: p.len() - hl,
    }
}

/// Whether `q` belongs to the same flow with the same header fields as `f` (first packet of
/// a group), apart from lengths, IPv4 id/checksum, sequence number, PSH and checksum.
fn same_flow(f: &[u8], q: &[u8], l4: usize, hl: usize) -> bool {
    if f[0] >> 4 == 4 {
        // version/ihl, tos; DF; ttl, proto; addresses
        if f[0..2] != q[0..2] || f[6] & 0x40 != q[6] & 0x40 || f[8..10] != q[8..10] {
            return false;
        }
        if f[12..20] != q[12..20] {
            return false;
        }
    } else if f[0..4] != q[0..4] || f[6..40] != q[6..40] {
        return false;
    }
    // ports; ack; data offset; flags without PSH; window; urgent; options
    f[l4..l4 + 4] == q[l4..l4 + 4]
        && f[l4 + 8..l4 + 13] == q[l4 + 8..l4 + 13]
        && f[l4 + 13] & !TCP_PSH == q[l4 + 13] & !TCP_PSH
        && f[l4 + 14..l4 + 16] == q[l4 + 14..l4 + 16]
        && f[l4 + 18..hl] == q[l4 + 18..hl]
}

/// Same addresses and ports (`l4` = TCP header offset of both).
fn same_addrs_ports(f: &[u8], q: &[u8], l4: usize) -> bool {
    let addrs = if f[0] >> 4 == 4 { 12..20 } else { 8..40 };
    f.len() >= l4 + 4
        && f[0] >> 4 == q[0] >> 4
        && f[addrs.clone()] == q[addrs]
        && f[l4..l4 + 4] == q[l4..l4 + 4]
}

impl Coalescer {
    fn run(&mut self, batch: &TunBatch, out: &mut Vec<u8>, frames: &mut Vec<Range<usize>>) {
        out.clear();
        frames.clear();
        self.groups.clear();
        self.member.clear();
        self.valid.clear();
        for (i, q) in batch.iter().enumerate() {
            let class = classify(q);
            self.valid.push(!matches!(class, Class::Plain));
            let (l4, hl, len) = match class {
                Class::Tcp { l4, hl, len } => (l4, hl, len),
                Class::Valid(l4) => {
                    // Nothing of its flow may be merged past it.
                    for g in self.groups.iter_mut().filter(|g| g.open && g.l4 == l4) {
                        if same_addrs_ports(batch.get(g.first), q, l4) {
                            g.open = false;
                        }
                    }
                    self.member.push(usize::MAX);
                    continue;
                }
                Class::Plain => {
                    self.member.push(usize::MAX);
                    continue;
                }
            };
            let seq = u32::from_be_bytes([q[l4 + 4], q[l4 + 5], q[l4 + 6], q[l4 + 7]]);
            let psh = q[l4 + 13] & TCP_PSH != 0;
            // The newest open group of the same flow.
            let mut joined = None;
            for (gi, g) in self.groups.iter_mut().enumerate().rev() {
                if !g.open || g.hl != hl || g.l4 != l4 {
                    continue;
                }
                let f = batch.get(g.first);
                if f.len() < hl || !same_flow(f, q, l4, hl) {
                    continue;
                }
                let fits = seq == g.next_seq && len <= g.gso && hl + g.payload + len <= MAX_IP;
                if fits {
                    g.count += 1;
                    g.payload += len;
                    g.next_seq = seq.wrapping_add(len as u32);
                    g.psh = psh;
                    if psh || len < g.gso {
                        g.open = false;
                    }
                    joined = Some(gi);
                } else {
                    // Keep the flow's order: nothing may join a group behind this packet.
                    g.open = false;
                }
                break;
            }
            let gi = match joined {
                Some(gi) => gi,
                None => {
                    self.groups.push(Group {
                        first: i,
                        count: 1,
                        gso: len,
                        payload: len,
                        next_seq: seq.wrapping_add(len as u32),
                        open: !psh,
                        psh,
                        hl,
                        l4,
                    });
                    self.groups.len() - 1
                }
            };
            self.member.push(gi);
        }
        // Emit in order of each frame's first packet.
        self.emitted.clear();
        self.emitted.resize(self.groups.len(), false);
        for (i, &gi) in self.member.iter().enumerate() {
            let start = out.len();
            if gi == usize::MAX {
                let flags = if self.valid[i] { F_DATA_VALID } else { 0 };
                let h = VirtioNetHdr {
                    flags,
                    ..VirtioNetHdr::default()
                };
                out.extend_from_slice(&h.to_bytes());
                out.extend_from_slice(batch.get(i));
                frames.push(start..out.len());
                continue;
            }
            if self.emitted[gi] {
                continue;
            }
            self.emitted[gi] = true;
            let g = &self.groups[gi];
            let f = batch.get(g.first);
            if g.count == 1 {
                let h = VirtioNetHdr {
                    flags: F_DATA_VALID,
                    ..VirtioNetHdr::default()
                };
                out.extend_from_slice(&h.to_bytes());
                out.extend_from_slice(f);
                frames.push(start..out.len());
                continue;
            }
            let v4 = f[0] >> 4 == 4;
            let h = VirtioNetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: if v4 { GSO_TCPV4 } else { GSO_TCPV6 },
                hdr_len: g.hl as u16,
                gso_size: g.gso as u16,
                csum_start: g.l4 as u16,
                csum_offset: 16,
            };
            out.extend_from_slice(&h.to_bytes());
            let p0 = out.len();
            out.extend_from_slice(&f[..g.hl]);
            for (j, &m) in self.member.iter().enumerate().skip(i) {
                if m == gi {
                    let q = batch.get(j);
                    out.extend_from_slice(&q[g.hl..]);
                }
            }
            let p = &mut out[p0..];
            let total = p.len();
            if v4 {
                p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                fix_ipv4_header(p);
            } else {
                p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
            }
            if g.psh {
                p[g.l4 + 13] |= TCP_PSH;
            }
            let partial = checksum_fold(pseudo_header_sum(p, 6, total - g.l4));
            p[g.l4 + 16..g.l4 + 18].copy_from_slice(&partial.to_be_bytes());
            frames.push(start..out.len());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The device

#[repr(C)]
struct IfReqFlags {
    name: [u8; IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// A Linux tun device with a virtio header on every read and write and, when the kernel
/// allows it, TSO/checksum offload: reads may be 64 KiB TCP super-packets (split by
/// [`OffloadTun::recv_batch`]), writes coalesce TCP segments (in
/// [`OffloadTun::send_batch`]).
///
/// Like [`LinuxTun`](crate::LinuxTun), the interface lives as long as this value, and an
/// attached [`RouteManager`] is cleaned up first.
#[derive(Debug)]
pub struct OffloadTun {
    routes: Option<RouteManager>,
    fd: AsyncFd<OwnedFd>,
    name: String,
    ifindex: u32,
    offload: bool,
    /// Packets split from a super-packet that plain `recv` has not handed out yet.
    pending: tokio::sync::Mutex<(TunBatch, usize)>,
}

impl OffloadTun {
    /// Creates the device and applies `config` (MTU, addresses, link up, routes) like
    /// [`LinuxTun::create`](crate::LinuxTun::create). Offloads are switched on when the
    /// kernel accepts them; otherwise the device works without (logged).
    pub fn create(config: &TunConfig) -> Result<Self, TunError> {
        let mut tun = Self::open(config.name.as_deref())?;
        config.ip_commands(&tun.name)?; // checks every prefix length
        let nl = Netlink::new();
        let idx = tun.ifindex;
        nl.set_mtu(idx, u32::from(config.mtu))?;
        if let Some((a, p)) = config.ipv4 {
            nl.add_address(idx, a.into(), p)?;
        }
        if let Some((a, p)) = config.ipv6 {
            nl.add_address(idx, a.into(), p)?;
        }
        nl.set_up(idx)?;
        let v4 = config
            .routes_v4
            .iter()
            .map(|&(n, p, g)| (IpAddr::from(n), p, g.map(IpAddr::from)));
        let v6 = config
            .routes_v6
            .iter()
            .map(|&(n, p, g)| (IpAddr::from(n), p, g.map(IpAddr::from)));
        for (dest, prefix, gateway) in v4.chain(v6) {
            nl.add_route(&RouteMsg {
                dest: mask(dest, prefix),
                prefix,
                gateway,
                ifindex: idx,
                metric: None,
            })?;
        }
        tun.routes = None;
        tracing::info!(dev = %tun.name, mtu = config.mtu, offload = tun.offload, "tun device configured");
        Ok(tun)
    }

    /// Creates a bare (down) device; `name` as for [`LinuxTun::open`](crate::LinuxTun::open).
    pub fn open(name: Option<&str>) -> Result<Self, TunError> {
        let mut req = IfReqFlags {
            name: [0; IFNAMSIZ],
            flags: IFF_TUN | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        if let Some(name) = name {
            if name.is_empty() || name.len() >= IFNAMSIZ || name.contains(['/', ' ', '\0']) {
                return Err(TunError::InvalidName {
                    name: name.to_owned(),
                    reason: "must be 1-15 bytes without '/', spaces or NUL",
                });
            }
            req.name[..name.len()].copy_from_slice(name.as_bytes());
        }
        tokio::runtime::Handle::try_current()
            .map_err(|e| TunError::Runtime(io::Error::other(e)))?;
        let flags = libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC;
        // SAFETY: the path is a NUL-terminated C string literal; the result is checked.
        let raw = unsafe { libc::open(c"/dev/net/tun".as_ptr(), flags) };
        if raw < 0 {
            return Err(TunError::Open(io::Error::last_os_error()));
        }
        // SAFETY: `raw` was just returned by `open` and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: `fd` is an open tun fd; `req` is a live buffer the size of `struct ifreq`,
        // which TUNSETIFF reads and writes back (the chosen name).
        let rc =
            unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, std::ptr::from_mut(&mut req)) };
        if rc < 0 {
            return Err(TunError::Ioctl {
                op: "TUNSETIFF",
                source: io::Error::last_os_error(),
            });
        }
        let offloads: libc::c_uint = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
        // SAFETY: TUNSETOFFLOAD takes its unsigned int argument by value; `fd` is open.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD as _, offloads) };
        let offload = rc == 0;
        let len = req.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        let name = String::from_utf8_lossy(&req.name[..len]).into_owned();
        if !offload {
            tracing::warn!(dev = %name, error = %io::Error::last_os_error(),
                "tun: TUNSETOFFLOAD refused; no TSO/checksum offload (one packet per read)");
        }
        let ifindex = Netlink::new().link_index(&name)?;
        // SAFETY: `OwnedFd` keeps the descriptor open and unchanged until the `AsyncFd` that
        // owns it is dropped, and its `as_raw_fd` always returns that same descriptor.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| TunError::Runtime(e.into()))?;
        Ok(Self {
            routes: None,
            fd,
            name,
            ifindex,
            offload,
            pending: tokio::sync::Mutex::new((TunBatch::new(), 0)),
        })
    }

    /// Whether TSO/checksum offload is on.
    pub fn offload_enabled(&self) -> bool {
        self.offload
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Hands a route manager to the device (undone when the device is dropped).
    pub fn attach_route_manager(&mut self, manager: RouteManager) {
        self.routes = Some(manager);
    }

    /// The attached route manager.
    pub fn route_manager_mut(&mut self) -> Option<&mut RouteManager> {
        self.routes.as_mut()
    }

    /// Reads at least one frame (waiting for it), then whatever else is ready without
    /// waiting, into `batch` as plain IP packets (super-packets split, checksums completed).
    pub async fn recv_batch(&self, batch: &mut TunBatch) -> io::Result<()> {
        batch.clear();
        let mut raw = std::mem::take(&mut batch.raw);
        raw.resize(VNET_HDR_LEN + MAX_IP, 0);
        let result = self.recv_into(batch, &mut raw).await;
        batch.raw = raw;
        result
    }

    async fn recv_into(&self, batch: &mut TunBatch, raw: &mut [u8]) -> io::Result<()> {
        let mut guard = self.fd.readable().await?;
        loop {
            match guard.try_io(|fd| read_fd(fd.as_raw_fd(), raw)) {
                Ok(Ok(n)) => {
                    let frame = &raw[..n];
                    match VirtioNetHdr::parse(frame) {
                        Some(h) => {
                            if let Err(e) =
                                split_frame(&h, &frame[VNET_HDR_LEN..], batch.max_packet, batch)
                            {
                                tracing::debug!(dev = %self.name, "tun: dropped a frame: {e}");
                            }
                        }
                        None => tracing::debug!(dev = %self.name, "tun: short frame"),
                    }
                    if batch.len() >= BATCH_PACKETS || batch.bytes() >= 2 * MAX_IP {
                        return Ok(());
                    }
                }
                Ok(Err(e)) => {
                    return if batch.is_empty() { Err(e) } else { Ok(()) };
                }
                Err(_would_block) => {
                    if !batch.is_empty() {
                        return Ok(());
                    }
                    guard = self.fd.readable().await?;
                }
            }
        }
    }

    /// Writes the packets of `batch`, TCP segments of one flow coalesced into super-packets
    /// (single packets whose checksum verified are marked `DATA_VALID`). Write errors of
    /// single frames are dropped like a full queue would drop them.
    pub async fn send_batch(&self, batch: &mut TunBatch) -> io::Result<()> {
        let frames = batch.coalesce();
        let mut i = 0;
        while i < frames {
            let mut guard = self.fd.writable().await?;
            while i < frames {
                let frame = batch.frame(i);
                match guard.try_io(|fd| write_fd(fd.as_raw_fd(), frame)) {
                    Ok(r) => {
                        if let Err(e) = r {
                            tracing::debug!(dev = %self.name, "tun write: {e}");
                        }
                        i += 1;
                    }
                    Err(_would_block) => break,
                }
            }
        }
        Ok(())
    }
}

impl PacketDevice for OffloadTun {
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut pending = self.pending.lock().await;
        let (batch, next) = &mut *pending;
        if *next >= batch.len() {
            *next = 0;
            self.recv_batch(batch).await?;
        }
        let pkt = batch.get(*next);
        *next += 1;
        let have = buf.len();
        let dst = buf.get_mut(..pkt.len()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "tun: buffer of {have} bytes is too small for a {}-byte packet",
                    pkt.len()
                ),
            )
        })?;
        dst.copy_from_slice(pkt);
        Ok(pkt.len())
    }

    async fn send(&self, pkt: &[u8]) -> io::Result<usize> {
        let mut frame = Vec::with_capacity(VNET_HDR_LEN + pkt.len());
        frame.extend_from_slice(&VirtioNetHdr::default().to_bytes());
        frame.extend_from_slice(pkt);
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| write_fd(fd.as_raw_fd(), &frame)) {
                Ok(r) => return r.map(|n| n.saturating_sub(VNET_HDR_LEN)),
                Err(_would_block) => continue,
            }
        }
    }

    fn recv_batch(
        &self,
        batch: &mut TunBatch,
    ) -> impl std::future::Future<Output = io::Result<()>> + Send {
        OffloadTun::recv_batch(self, batch)
    }

    fn send_batch(
        &self,
        batch: &mut TunBatch,
    ) -> impl std::future::Future<Output = io::Result<()>> + Send {
        OffloadTun::send_batch(self, batch)
    }
}

fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call, and `fd` is
    // kept open by the `AsyncFd` that lent it to us.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

fn write_fd(fd: RawFd, frame: &[u8]) -> io::Result<usize> {
    // SAFETY: `frame` is valid for reads of `frame.len()` bytes for the whole call, and `fd`
    // is kept open by the `AsyncFd` that lent it to us.
    let n = unsafe { libc::write(fd, frame.as_ptr().cast(), frame.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

/// [`PacketDevice::recv_batch`] for devices without a batch path: one packet.
pub(crate) async fn recv_one<D: PacketDevice + ?Sized>(
    dev: &D,
    batch: &mut TunBatch,
) -> io::Result<()> {
    batch.clear();
    let mut raw = std::mem::take(&mut batch.raw);
    if raw.len() < MAX_IP {
        raw.resize(MAX_IP, 0);
    }
    let r = dev.recv(&mut raw).await;
    if let Ok(n) = r {
        batch.push(&raw[..n]);
    }
    batch.raw = raw;
    r.map(|_| ())
}

/// [`PacketDevice::send_batch`] for devices without a batch path: one write per packet.
pub(crate) async fn send_each<D: PacketDevice + ?Sized>(
    dev: &D,
    batch: &mut TunBatch,
) -> io::Result<()> {
    for i in 0..batch.len() {
        let _ = dev.send(batch.get(i)).await;
    }
    Ok(())
}

/// A kernel tun device, plain ([`LinuxTun`](crate::LinuxTun), one packet per system call) or
/// with offloads ([`OffloadTun`]), chosen at start-up.
#[derive(Debug)]
pub enum SystemTun {
    /// `IFF_TUN | IFF_NO_PI`.
    Plain(crate::LinuxTun),
    /// `IFF_VNET_HDR` with TSO/checksum offload.
    Offload(Box<OffloadTun>),
}

impl SystemTun {
    /// Creates the device: with `offload`, an [`OffloadTun`] (falling back to a plain device,
    /// logged, if the kernel refuses `IFF_VNET_HDR`), else a plain one.
    pub fn create(config: &TunConfig, offload: bool) -> Result<Self, TunError> {
        if offload {
            match OffloadTun::create(config) {
                Ok(t) => return Ok(Self::Offload(Box::new(t))),
                Err(e @ TunError::Ioctl { .. }) => {
                    tracing::warn!("tun: no offload device ({e}); using a plain tun");
                }
                Err(e) => return Err(e),
            }
        }
        crate::LinuxTun::create(config).map(Self::Plain)
    }

    /// Whether TSO/checksum offload is on.
    pub fn offload_enabled(&self) -> bool {
        matches!(self, Self::Offload(t) if t.offload_enabled())
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        match self {
            Self::Plain(t) => t.name(),
            Self::Offload(t) => t.name(),
        }
    }

    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        match self {
            Self::Plain(t) => t.ifindex(),
            Self::Offload(t) => t.ifindex(),
        }
    }

    /// Hands a route manager to the device (undone when the device is dropped).
    pub fn attach_route_manager(&mut self, manager: RouteManager) {
        match self {
            Self::Plain(t) => t.attach_route_manager(manager),
            Self::Offload(t) => t.attach_route_manager(manager),
        }
    }
}

impl PacketDevice for SystemTun {
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(t) => t.recv(buf).await,
            Self::Offload(t) => PacketDevice::recv(&**t, buf).await,
        }
    }

    async fn send(&self, pkt: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(t) => t.send(pkt).await,
            Self::Offload(t) => PacketDevice::send(&**t, pkt).await,
        }
    }

    async fn recv_batch(&self, batch: &mut TunBatch) -> io::Result<()> {
        match self {
            Self::Plain(t) => recv_one(t, batch).await,
            Self::Offload(t) => t.recv_batch(batch).await,
        }
    }

    async fn send_batch(&self, batch: &mut TunBatch) -> io::Result<()> {
        match self {
            Self::Plain(t) => send_each(t, batch).await,
            Self::Offload(t) => t.send_batch(batch).await,
        }
    }
}
