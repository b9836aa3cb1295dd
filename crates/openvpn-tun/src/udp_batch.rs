//! Batched UDP on a tokio socket: `recvmmsg` with UDP GRO on receive (many datagrams per
//! system call), `sendmsg` with UDP GSO on send (a run of equal-sized datagrams to one peer in
//! one call), via `quinn-udp`.
//!
//! ```text
//!  recv(bufs) ─▶ up to 32 buffers, each holding `len` bytes of datagrams `stride` apart
//!               from one sender ─▶ datagrams() yields (from, &mut datagram)
//!  send(dest, contents, Some(seg)) ─▶ contents cut by the kernel into seg-byte datagrams
//!                                      (the last may be shorter)
//! ```
//!
//! `quinn-udp` forbids IP fragmentation on the socket; [`UdpBatch::new`] switches that back to
//! the kernel default so that a datagram larger than the path MTU still leaves (fragmented),
//! as with a plain socket. GSO is only used for segments that fit a 1500-byte MTU
//! ([`gso_max_segment`]); the kernel rejects GSO segments above the MTU.
//!
//! [`SendQueue`] collects sealed datagrams and sends each run of equal-sized datagrams to one
//! peer (the last of a run may be shorter) as one GSO call.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Buffers for one [`UdpBatch::recv`].
#[derive(Debug)]
pub struct UdpRecvBufs {
    bufs: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
    filled: usize,
}

impl UdpRecvBufs {
    /// `count` buffers of `size` bytes each (64 KiB holds a full GRO batch).
    pub fn new(count: usize, size: usize) -> Self {
        let count = count.clamp(1, quinn_udp::BATCH_SIZE);
        Self {
            bufs: (0..count).map(|_| vec![0u8; size]).collect(),
            meta: vec![RecvMeta::default(); count],
            filled: 0,
        }
    }

    /// Number of buffers filled by the last receive.
    pub fn filled(&self) -> usize {
        self.filled
    }

    /// Buffer `i` of the last receive: its sender, its datagrams' bytes, and the stride
    /// between datagrams (every datagram is `stride` bytes except maybe the last).
    pub fn buffer_mut(&mut self, i: usize) -> (SocketAddr, &mut [u8], usize) {
        let m = &self.meta[i];
        let stride = m.stride.max(1);
        (m.addr, &mut self.bufs[i][..m.len], stride)
    }
}

/// Batched send and receive on one UDP socket.
#[derive(Debug)]
pub struct UdpBatch {
    state: UdpSocketState,
}

/// Largest total of one GSO send: the kernel refuses (`EMSGSIZE`) a UDP payload over
/// 65535 − 20 (IPv4) − 8 (UDP) bytes, even when it is sent as segments.
pub const GSO_MAX_BYTES: usize = 65_507;

/// Largest segment sent with GSO to `dest`: what fits a 1500-byte MTU (1472 over IPv4,
/// also IPv4-mapped IPv6; 1452 over IPv6).
pub fn gso_max_segment(dest: SocketAddr) -> usize {
    match dest {
        SocketAddr::V4(_) => 1472,
        SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_some() => 1472,
        SocketAddr::V6(_) => 1452,
    }
}

impl UdpBatch {
    /// Sets the socket up for batching (GRO on where the kernel has it).
    pub fn new(sock: &UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new(UdpSockRef::from(sock))?;
        allow_fragmentation(sock);
        Ok(Self { state })
    }

    /// How many segments one GSO send may carry (1 = no GSO).
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// How many datagrams the kernel may coalesce into one receive buffer (1 = no GRO).
    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    /// Waits for datagrams and receives as many as are ready into `bufs`; returns the number
    /// of filled buffers.
    pub async fn recv(&self, sock: &UdpSocket, bufs: &mut UdpRecvBufs) -> io::Result<usize> {
        loop {
            sock.readable().await?;
            let mut slices: Vec<IoSliceMut<'_>> =
                bufs.bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let meta = &mut bufs.meta;
            match sock.try_io(Interest::READABLE, || {
                self.state.recv(UdpSockRef::from(sock), &mut slices, meta)
            }) {
                Ok(n) => {
                    bufs.filled = n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends `contents` to `dest`: one datagram, or with `segment = Some(n)` datagrams of `n`
    /// bytes (the last may be shorter) in one GSO call when the socket can, else one call each.
    pub async fn send(
        &self,
        sock: &UdpSocket,
        dest: SocketAddr,
        contents: &[u8],
        segment: Option<usize>,
    ) -> io::Result<()> {
        let segment = segment.filter(|&s| s > 0 && s < contents.len());
        let gso = segment.filter(|&s| s <= gso_max_segment(dest) && self.max_gso_segments() > 1);
        match (segment, gso) {
            (Some(s), None) => {
                for chunk in contents.chunks(s) {
                    self.send_one(sock, dest, chunk, None).await?;
                }
                Ok(())
            }
            (_, Some(s)) => {
                // As many whole segments per call as the kernel takes.
                let per_call = (GSO_MAX_BYTES / s).min(self.max_gso_segments()).max(1);
                for chunk in contents.chunks(per_call * s) {
                    let seg = (chunk.len() > s).then_some(s);
                    self.send_one(sock, dest, chunk, seg).await?;
                }
                Ok(())
            }
            (None, None) => self.send_one(sock, dest, contents, None).await,
        }
    }

    async fn send_one(
        &self,
        sock: &UdpSocket,
        dest: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
    ) -> io::Result<()> {
        let t = Transmit {
            destination: dest,
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        };
        loop {
            sock.writable().await?;
            match sock.try_io(Interest::WRITABLE, || {
                self.state.try_send(UdpSockRef::from(sock), &t)
            }) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if segment_size.is_some() => {
                    // GSO refused (quinn-udp turns it off for later sends): one by one.
                    tracing::debug!("UDP GSO send failed ({e}); sending the segments one by one");
                    let s = segment_size.unwrap_or(contents.len()).max(1);
                    for chunk in contents.chunks(s) {
                        Box::pin(self.send_one(sock, dest, chunk, None)).await?;
                    }
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// One run of datagrams to one peer: `count` datagrams of `seg` bytes, the last `last` bytes.
#[derive(Debug, Clone, Copy)]
struct Run {
    dest: SocketAddr,
    start: usize,
    seg: usize,
    count: usize,
    /// A shorter datagram ended the run.
    closed: bool,
}

/// Datagrams waiting to be sent, grouped into GSO runs (no allocation per datagram).
#[derive(Debug, Default)]
pub struct SendQueue {
    data: Vec<u8>,
    runs: Vec<Run>,
    max_segments: usize,
}

impl SendQueue {
    /// An empty queue; a run holds at most `max_segments` datagrams (use
    /// [`UdpBatch::max_gso_segments`]).
    pub fn new(max_segments: usize) -> Self {
        Self {
            data: Vec::new(),
            runs: Vec::new(),
            max_segments: max_segments.max(1),
        }
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Number of GSO runs (send calls) queued.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Queues one datagram for `dest`.
    pub fn push(&mut self, dest: SocketAddr, datagram: &[u8]) {
        let len = datagram.len();
        let start = self.data.len();
        self.data.extend_from_slice(datagram);
        if let Some(r) = self.runs.last_mut() {
            if !r.closed
                && r.dest == dest
                && r.count < self.max_segments
                && start - r.start + len <= GSO_MAX_BYTES
                && len <= r.seg
                && r.seg <= gso_max_segment(dest)
                && len > 0
            {
                r.count += 1;
                if len < r.seg {
                    r.closed = true;
                }
                return;
            }
        }
        self.runs.push(Run {
            dest,
            start,
            seg: len,
            count: 1,
            closed: false,
        });
    }

    /// Sends everything queued (one call per run) and empties the queue. Send errors other
    /// than a full socket buffer are dropped, like lost datagrams.
    pub async fn flush(&mut self, batch: &UdpBatch, sock: &UdpSocket) -> io::Result<()> {
        let mut result = Ok(());
        for (i, r) in self.runs.iter().enumerate() {
            let end = self.runs.get(i + 1).map_or(self.data.len(), |n| n.start);
            let contents = &self.data[r.start..end];
            let seg = (r.count > 1).then_some(r.seg);
            if let Err(e) = batch.send(sock, r.dest, contents, seg).await {
                tracing::debug!("UDP send to {}: {e}", r.dest);
                if result.is_ok() && e.kind() != io::ErrorKind::WouldBlock {
                    result = Err(e);
                }
            }
        }
        self.data.clear();
        self.runs.clear();
        result.or(Ok(()))
    }
}

/// Undoes `quinn-udp`'s "never fragment" (IP_PMTUDISC_PROBE / IPV6_DONTFRAG): back to the
/// kernel default, path-MTU discovery that fragments locally when needed.
fn allow_fragmentation(sock: &UdpSocket) {
    let fd = sock.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        // SAFETY: `fd` is the open socket behind `sock`; the option value is a live c_int of
        // the size passed.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                std::ptr::from_ref(&value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    let _ = set(
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_WANT,
    );
    if sock.local_addr().is_ok_and(|a| a.is_ipv6()) {
        let _ = set(
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_WANT,
        );
        let _ = set(libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 0);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gso_send_and_gro_receive_on_loopback() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let ba = UdpBatch::new(&a).unwrap();
        let bb = UdpBatch::new(&b).unwrap();
        // Ten 1000-byte datagrams and a 300-byte one, in one call.
        let mut contents = Vec::new();
        for i in 0..11u8 {
            let len = if i == 10 { 300 } else { 1000 };
            contents.extend(std::iter::repeat_n(i, len));
        }
        ba.send(&a, b.local_addr().unwrap(), &contents, Some(1000))
            .await
            .unwrap();
        // A big datagram still leaves (fragmented on a real link; loopback has 64K MTU).
        ba.send(&a, b.local_addr().unwrap(), &[0xee; 3000], None)
            .await
            .unwrap();
        let mut bufs = UdpRecvBufs::new(8, 65_536);
        let mut got: Vec<Vec<u8>> = Vec::new();
        while got.len() < 12 {
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), bb.recv(&b, &mut bufs))
                .await
                .expect("datagrams within 5 s")
                .unwrap();
            for i in 0..n {
                let (from, data, stride) = bufs.buffer_mut(i);
                assert_eq!(from, a.local_addr().unwrap());
                got.extend(data.chunks(stride).map(<[u8]>::to_vec));
            }
        }
        for (i, d) in got.iter().take(11).enumerate() {
            assert_eq!(d.len(), if i == 10 { 300 } else { 1000 }, "datagram {i}");
            assert!(d.iter().all(|&x| x == i as u8));
        }
        assert_eq!(got[11], vec![0xee; 3000]);
    }

    #[test]
    fn send_queue_groups_equal_runs_per_peer() {
        let p: SocketAddr = "10.0.0.1:1194".parse().unwrap();
        let q: SocketAddr = "[fd00::1]:1194".parse().unwrap();
        let mut sq = SendQueue::new(3);
        for len in [100, 100, 100, 100, 60, 100] {
            sq.push(p, &vec![1; len]);
        }
        sq.push(q, &[2; 100]);
        sq.push(q, &[2; 1460]); // too big for GSO over IPv6: its own run
        sq.push(q, &[2; 1460]);
        let runs: Vec<(usize, usize, bool)> =
            sq.runs.iter().map(|r| (r.seg, r.count, r.closed)).collect();
        assert_eq!(
            runs,
            [
                (100, 3, false),
                (100, 2, true),
                (100, 1, false),
                (100, 1, false),
                (1460, 1, false),
                (1460, 1, false)
            ]
        );
        assert_eq!(
            gso_max_segment("[::ffff:10.0.0.1]:1".parse().unwrap()),
            1472
        );
        // A run stops before the kernel's 64 KiB limit for one send.
        let mut sq = SendQueue::new(64);
        for _ in 0..47 {
            sq.push(p, &[3; 1464]);
        }
        let counts: Vec<usize> = sq.runs.iter().map(|r| r.count).collect();
        assert_eq!(counts, [44, 3]);
    }

    #[tokio::test]
    async fn send_splits_a_gso_batch_over_64k_into_calls_the_kernel_takes() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let ba = UdpBatch::new(&a).unwrap();
        let contents: Vec<u8> = (0..47 * 1464).map(|i| (i / 1464) as u8).collect();
        // One call with 47 segments (68,808 bytes) would get EMSGSIZE.
        let t = Transmit {
            destination: b.local_addr().unwrap(),
            ecn: None,
            contents: &contents,
            segment_size: Some(1464),
            src_ip: None,
        };
        let err = ba.state.try_send(UdpSockRef::from(&a), &t).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EMSGSIZE));
        ba.send(&a, b.local_addr().unwrap(), &contents, Some(1464))
            .await
            .unwrap();
        let mut buf = vec![0u8; 2048];
        for i in 0..47u8 {
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), b.recv(&mut buf))
                .await
                .expect("datagram within 5 s")
                .unwrap();
            assert_eq!(n, 1464);
            assert!(buf[..n].iter().all(|&x| x == i), "datagram {i} in order");
        }
    }
}
