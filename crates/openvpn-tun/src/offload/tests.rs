use super::*;

/// Independent reference: RFC 1071 over 16-bit words, one at a time.
fn ref_sum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u32 = 0;
    for c in bytes.chunks(2) {
        let w = if c.len() == 2 {
            (u32::from(c[0]) << 8) | u32::from(c[1])
        } else {
            u32::from(c[0]) << 8
        };
        sum += w;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// True if the IPv4 header checksum verifies (reference arithmetic).
fn ref_ipv4_ok(p: &[u8]) -> bool {
    let ihl = usize::from(p[0] & 0xf) * 4;
    ref_sum(&[&p[..ihl]]) == 0xffff
}

/// True if the TCP checksum verifies (reference arithmetic, own pseudo-header).
fn ref_tcp_ok(p: &[u8]) -> bool {
    let (l4, pseudo) = if p[0] >> 4 == 4 {
        let l4 = usize::from(p[0] & 0xf) * 4;
        let len = (p.len() - l4) as u16;
        let mut ph = Vec::new();
        ph.extend_from_slice(&p[12..20]);
        ph.extend_from_slice(&[0, 6]);
        ph.extend_from_slice(&len.to_be_bytes());
        (l4, ph)
    } else {
        let len = (p.len() - 40) as u32;
        let mut ph = Vec::new();
        ph.extend_from_slice(&p[8..40]);
        ph.extend_from_slice(&len.to_be_bytes());
        ph.extend_from_slice(&[0, 0, 0, 6]);
        (40, ph)
    };
    ref_sum(&[&pseudo, &p[l4..]]) == 0xffff
}

const SEQ0: u32 = 0xffff_f000; // wraps inside the super-packet

/// An IPv4 or IPv6 TCP packet with a timestamp option and `payload`, checksum left as `csum`.
fn tcp_packet(v6: bool, payload: &[u8], flags: u8, seq: u32, id: u16) -> Vec<u8> {
    let mut tcp = vec![0u8; 32];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    tcp[12] = 8 << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&502u16.to_be_bytes());
    tcp[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9]);
    let mut p = if v6 {
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&((32 + payload.len()) as u16).to_be_bytes());
        h[6] = 6;
        h[7] = 64;
        h[8..24].copy_from_slice(&"fd66::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        h[24..40].copy_from_slice(&"fd66::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        h
    } else {
        let mut h = vec![0u8; 20];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&((52 + payload.len()) as u16).to_be_bytes());
        h[4..6].copy_from_slice(&id.to_be_bytes());
        h[6] = 0x40;
        h[8] = 64;
        h[9] = 6;
        h[12..16].copy_from_slice(&[10, 66, 0, 2]);
        h[16..20].copy_from_slice(&[10, 66, 0, 1]);
        fix_ipv4_header(&mut h);
        h
    };
    let l4 = p.len();
    p.extend_from_slice(&tcp);
    p.extend_from_slice(payload);
    fix_tcp_checksum(&mut p, l4);
    p
}

/// What the kernel hands a TSO device: the super-packet with only the pseudo-header sum in
/// the TCP checksum field.
fn tso_frame(v6: bool, payload: &[u8], gso: u16, flags: u8) -> (VirtioNetHdr, Vec<u8>) {
    let mut p = tcp_packet(v6, payload, flags, SEQ0, 100);
    let l4 = if v6 { 40 } else { 20 };
    let partial = checksum_fold(pseudo_header_sum(&p, 6, p.len() - l4));
    p[l4 + 16..l4 + 18].copy_from_slice(&partial.to_be_bytes());
    let hdr = VirtioNetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
        hdr_len: (l4 + 32) as u16,
        gso_size: gso,
        csum_start: l4 as u16,
        csum_offset: 16,
    };
    (hdr, p)
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

#[test]
fn virtio_header_round_trip() {
    let h = VirtioNetHdr {
        flags: 1,
        gso_type: GSO_TCPV6 | GSO_ECN,
        hdr_len: 72,
        gso_size: 1428,
        csum_start: 40,
        csum_offset: 16,
    };
    let b = h.to_bytes();
    assert_eq!(b, [1, 0x84, 72, 0, 0x94, 0x05, 40, 0, 16, 0]);
    assert_eq!(VirtioNetHdr::parse(&b), Some(h));
    assert_eq!(VirtioNetHdr::parse(&b[..9]), None);
}

#[test]
fn checksum_matches_reference_for_every_length_and_split() {
    let data = payload(301);
    for len in 0..data.len() {
        let d = &data[..len];
        assert_eq!(
            checksum_fold(checksum_add(0, d)),
            ref_sum(&[d]),
            "len {len}"
        );
        // Pieces at even offsets add up to the whole.
        let mid = (len / 2) & !1;
        let s = checksum_add(checksum_add(0, &d[..mid]), &d[mid..]);
        assert_eq!(checksum_fold(s), ref_sum(&[d]), "len {len} split");
    }
    // All-ones data folds to 0xffff, never past 16 bits.
    assert_eq!(checksum_fold(checksum_add(0, &[0xff; 1024])), 0xffff);
}

fn check_split(v6: bool, total: usize, gso: u16, max_packet: usize, want_seg: usize) {
    let data = payload(total);
    let (hdr, frame) = tso_frame(v6, &data, gso, TCP_ACK | TCP_PSH | TCP_CWR);
    let mut out = TunBatch::new();
    let n = split_frame(&hdr, &frame, max_packet, &mut out).unwrap();
    assert_eq!(n, total.div_ceil(want_seg));
    assert_eq!(out.len(), n);
    let l4 = if v6 { 40 } else { 20 };
    let hl = l4 + 32;
    let mut joined = Vec::new();
    for (i, p) in out.iter().enumerate() {
        let last = i + 1 == n;
        let plen = if last { total - i * want_seg } else { want_seg };
        assert_eq!(p.len(), hl + plen, "segment {i} length");
        if max_packet > 0 {
            assert!(p.len() <= max_packet);
        }
        if v6 {
            assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])), p.len() - 40);
        } else {
            assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
            assert_eq!(u16::from_be_bytes([p[4], p[5]]), 100 + i as u16, "ip id");
            assert!(ref_ipv4_ok(p), "ipv4 header checksum of segment {i}");
        }
        assert!(ref_tcp_ok(p), "tcp checksum of segment {i}");
        let seq = u32::from_be_bytes([p[l4 + 4], p[l4 + 5], p[l4 + 6], p[l4 + 7]]);
        assert_eq!(seq, SEQ0.wrapping_add((i * want_seg) as u32));
        let flags = p[l4 + 13];
        assert_eq!(flags & TCP_PSH != 0, last, "PSH only on the last");
        assert_eq!(flags & TCP_CWR != 0, i == 0, "CWR only on the first");
        assert!(flags & TCP_ACK != 0);
        assert_eq!(&p[l4 + 20..hl], &frame[l4 + 20..hl], "options kept");
        joined.extend_from_slice(&p[hl..]);
    }
    assert_eq!(joined, data);
}

#[test]
fn tso_v4_super_packet_splits_into_three_valid_segments() {
    check_split(false, 3000, 1000, 0, 1000);
}

#[test]
fn tso_v6_super_packet_splits_with_a_short_tail() {
    check_split(true, 2500, 1000, 0, 1000);
}

#[test]
fn max_packet_caps_the_segment_size() {
    // gso 1448, but sealed packets must fit: at most 1100-byte IP packets.
    check_split(false, 5000, 1448, 1100, 1100 - 52);
    check_split(true, 5000, 1448, 1100, 1100 - 72);
    // A cap above the sender's segment size changes nothing.
    check_split(false, 4000, 1000, 1500, 1000);
}

#[test]
fn partial_checksum_of_a_plain_packet_is_completed() {
    // A UDP packet with the pseudo-header sum in its checksum field (CHECKSUM_PARTIAL).
    let data = payload(333);
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((28 + data.len()) as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 66, 0, 2]);
    p[16..20].copy_from_slice(&[10, 66, 0, 1]);
    fix_ipv4_header(&mut p);
    p[20..22].copy_from_slice(&1000u16.to_be_bytes());
    p[22..24].copy_from_slice(&2000u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    p.extend_from_slice(&data);
    let partial = checksum_fold(pseudo_header_sum(&p, 17, p.len() - 20));
    p[26..28].copy_from_slice(&partial.to_be_bytes());
    let hdr = VirtioNetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: 20,
        csum_offset: 6,
        ..VirtioNetHdr::default()
    };
    let mut out = TunBatch::new();
    assert_eq!(split_frame(&hdr, &p, 0, &mut out).unwrap(), 1);
    let q = out.get(0);
    let len = (q.len() - 20) as u16;
    let mut ph = q[12..20].to_vec();
    ph.extend_from_slice(&[0, 17]);
    ph.extend_from_slice(&len.to_be_bytes());
    assert_eq!(ref_sum(&[&ph, &q[20..]]), 0xffff, "udp checksum verifies");
    assert_eq!(&q[28..], &data[..]);
    // Offsets past the end are refused and add nothing.
    let bad = VirtioNetHdr {
        csum_offset: 2000,
        ..hdr
    };
    assert_eq!(
        split_frame(&bad, &p, 0, &mut out),
        Err(OffloadError::BadChecksumOffsets)
    );
    assert_eq!(out.len(), 1);
    // UDP GSO is not enabled, so not split.
    let uso = VirtioNetHdr { gso_type: 5, ..hdr };
    assert_eq!(
        split_frame(&uso, &p, 0, &mut out),
        Err(OffloadError::UnsupportedGso(5))
    );
}

/// Splits a coalesced frame back (as the kernel would segment it) for comparison.
fn resplit(frame: &[u8]) -> Vec<Vec<u8>> {
    let h = VirtioNetHdr::parse(frame).unwrap();
    let mut b = TunBatch::new();
    split_frame(&h, &frame[VNET_HDR_LEN..], 0, &mut b).unwrap();
    b.iter().map(<[u8]>::to_vec).collect()
}

#[test]
fn split_then_coalesce_gives_back_one_super_packet() {
    for v6 in [false, true] {
        let data = payload(4100);
        let (hdr, frame) = tso_frame(v6, &data, 1000, TCP_ACK | TCP_PSH);
        let mut batch = TunBatch::new();
        split_frame(&hdr, &frame, 0, &mut batch).unwrap();
        let segments: Vec<Vec<u8>> = batch.iter().map(<[u8]>::to_vec).collect();
        assert_eq!(batch.coalesce(), 1, "one flow, in order: one frame");
        let f = batch.frame(0);
        let h = VirtioNetHdr::parse(f).unwrap();
        let l4 = if v6 { 40 } else { 20 };
        assert_eq!(h.flags, F_NEEDS_CSUM);
        assert_eq!(h.gso_type, if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
        assert_eq!(usize::from(h.gso_size), 1000);
        assert_eq!(usize::from(h.csum_start), l4);
        assert_eq!(h.csum_offset, 16);
        assert_eq!(usize::from(h.hdr_len), l4 + 32);
        let p = &f[VNET_HDR_LEN..];
        assert_eq!(p.len(), l4 + 32 + data.len());
        assert_eq!(&p[l4 + 32..], &data[..]);
        if !v6 {
            assert!(ref_ipv4_ok(p));
        }
        assert!(p[l4 + 13] & TCP_PSH != 0, "PSH of the last segment kept");
        // The checksum field holds the pseudo-header sum of the whole super-packet.
        let mut full = p.to_vec();
        fix_tcp_checksum(&mut full, l4);
        assert!(ref_tcp_ok(&full));
        // Segmenting it again gives exactly the original segments.
        assert_eq!(resplit(f), segments);
    }
}

#[test]
fn coalesce_keeps_flows_order_and_odd_packets_apart() {
    let mut b = TunBatch::new();
    let seg = |seq: u32, len: usize, flags: u8| tcp_packet(false, &payload(len), flags, seq, 1);
    b.push(&seg(1000, 500, TCP_ACK)); // 0: group A
    b.push(&seg(1500, 500, TCP_ACK)); // 1: joins A
    let other = tcp_packet(true, &payload(500), TCP_ACK, 7, 0); // 2: another flow
    b.push(&other);
    b.push(&seg(2000, 200, TCP_ACK)); // 3: short: joins A and closes it
    b.push(&seg(2200, 500, TCP_ACK)); // 4: new group B
    b.push(&seg(9999, 500, TCP_ACK)); // 5: gap: closes B, new group C
    b.push(&seg(10499, 0, TCP_ACK)); // 6: pure ACK: single, DATA_VALID, closes C
    let mut bad = seg(10499, 500, TCP_ACK);
    bad[60] ^= 0xff; // 7: corrupted payload: single, kernel checks it
    b.push(&bad);
    b.push(&[0x45, 0, 0, 20]); // 8: garbage: single
    b.push(&seg(10499, 500, TCP_ACK)); // 9: C was closed by the ACK: new group D
    let n = b.coalesce();
    let frames: Vec<(VirtioNetHdr, usize)> = (0..n)
        .map(|i| {
            let f = b.frame(i);
            (VirtioNetHdr::parse(f).unwrap(), f.len() - VNET_HDR_LEN)
        })
        .collect();
    assert_eq!(frames.len(), 8, "{frames:?}");
    assert_eq!(frames[0].0.gso_type, GSO_TCPV4);
    assert_eq!(frames[0].0.gso_size, 500);
    assert_eq!(frames[0].1, 52 + 1200);
    assert_eq!(frames[1].0.flags, F_DATA_VALID, "v6 single");
    assert_eq!(frames[2].0.gso_type, GSO_NONE, "B has one packet");
    assert_eq!(frames[2].0.flags, F_DATA_VALID);
    assert_eq!(frames[3].1, 52 + 500, "C");
    assert_eq!(frames[4].0.flags, F_DATA_VALID, "pure ACK");
    assert_eq!(frames[5].0.flags, 0, "bad checksum: the kernel decides");
    assert_eq!(frames[6].0.flags, 0);
    assert_eq!(frames[6].1, 4);
    assert_eq!(frames[7].1, 52 + 500, "D");
}

#[tokio::test]
async fn default_batch_methods_move_one_packet_at_a_time() {
    let (dev, mut os) = crate::MemoryTun::pair(4);
    os.inject(vec![0x45; 30]).await.unwrap();
    let mut b = TunBatch::new();
    dev.recv_batch(&mut b).await.unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b.get(0), &[0x45; 30][..]);
    b.push(&[0x60; 50]);
    dev.send_batch(&mut b).await.unwrap();
    assert_eq!(os.written().await.unwrap(), vec![0x45; 30]);
    assert_eq!(os.written().await.unwrap(), vec![0x60; 50]);
}

mod netns {
    //! Root only: a real TCP connection between the kernel and a peer played by the test
    //! through an [`OffloadTun`] in a namespace of its own (`ovrs6-*`).
    use super::*;
    use std::fs::File;
    use std::process::Command;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    struct Netns(String);

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
        }
    }

    const PEER: [u8; 4] = [10, 66, 0, 2];
    const LOCAL: [u8; 4] = [10, 66, 0, 1];
    const PEER_PORT: u16 = 40000;
    const PORT: u16 = 5201;

    /// A TCP/IPv4 packet from the peer to the kernel's listener.
    fn from_peer(seq: u32, ack: u32, flags: u8, opts: &[u8], data: &[u8]) -> Vec<u8> {
        let tcp_hl = 20 + opts.len();
        let mut p = vec![0u8; 20 + tcp_hl];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((20 + tcp_hl + data.len()) as u16).to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&PEER);
        p[16..20].copy_from_slice(&LOCAL);
        fix_ipv4_header(&mut p);
        p[20..22].copy_from_slice(&PEER_PORT.to_be_bytes());
        p[22..24].copy_from_slice(&PORT.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[28..32].copy_from_slice(&ack.to_be_bytes());
        p[32] = ((tcp_hl / 4) as u8) << 4;
        p[33] = flags;
        p[34..36].copy_from_slice(&65535u16.to_be_bytes());
        p[40..40 + opts.len()].copy_from_slice(opts);
        p.extend_from_slice(data);
        fix_tcp_checksum(&mut p, 20);
        p
    }

    fn is_to_peer(p: &[u8]) -> bool {
        p.len() >= 40 && p[0] == 0x45 && p[9] == 6 && p[16..20] == PEER
    }

    async fn next_from_kernel(tun: &OffloadTun, batch: &mut TunBatch) {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                tun.recv_batch(batch).await.expect("recv_batch");
                if batch.iter().any(is_to_peer) {
                    return;
                }
            }
        })
        .await
        .expect("packet within 5 s");
    }

    async fn run() {
        let cfg = TunConfig {
            name: Some("ovrs6-tun0".into()),
            mtu: 1500,
            ipv4: Some((LOCAL.into(), 24)),
            ..TunConfig::default()
        };
        let tun = OffloadTun::create(&cfg).expect("create offload tun");
        assert!(tun.offload_enabled(), "kernel refused TUNSETOFFLOAD");
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::from(LOCAL), PORT))
            .await
            .expect("listen");
        let mut batch = TunBatch::new();
        // Handshake: MSS 1400, window scale 7.
        let mut out = TunBatch::new();
        out.push(&from_peer(
            1000,
            0,
            0x02,
            &[2, 4, 0x05, 0x78, 1, 3, 3, 7],
            &[],
        ));
        tun.send_batch(&mut out).await.expect("send SYN");
        next_from_kernel(&tun, &mut batch).await;
        let synack = batch
            .iter()
            .find(|p| is_to_peer(p))
            .expect("syn-ack")
            .to_vec();
        assert_eq!(synack[33], 0x12, "SYN-ACK");
        assert!(tcp_checksum_ok(&synack, 20), "completed checksum");
        let isn = u32::from_be_bytes([synack[24], synack[25], synack[26], synack[27]]);
        out.clear();
        out.push(&from_peer(1001, isn + 1, TCP_ACK, &[], &[]));
        tun.send_batch(&mut out).await.expect("send ACK");
        let (mut conn, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("accept within 5 s")
            .expect("accept");

        // Peer → kernel: three in-order segments written as one GSO super-packet.
        let data = payload(3000);
        out.clear();
        for i in 0..3 {
            let seq = 1001 + (i * 1000) as u32;
            let chunk = &data[i * 1000..(i + 1) * 1000];
            out.push(&from_peer(seq, isn + 1, TCP_ACK, &[], chunk));
        }
        assert_eq!(out.coalesce(), 1, "coalesced into one frame");
        tun.send_batch(&mut out).await.expect("send data");
        let mut got = vec![0u8; 3000];
        tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut got))
            .await
            .expect("data within 5 s")
            .expect("read");
        assert_eq!(got, data, "the kernel accepted the super-packet");

        // Kernel → peer: a TSO burst split into MSS-sized, valid segments.
        let reply = payload(12_000);
        conn.write_all(&reply).await.expect("write");
        let mut received = Vec::new();
        let mut most_in_one_read = 0;
        let mut expect_seq = isn + 1;
        while received.len() < reply.len() {
            next_from_kernel(&tun, &mut batch).await;
            most_in_one_read = most_in_one_read.max(batch.len());
            for p in batch.iter().filter(|p| is_to_peer(p)) {
                assert!(p.len() <= 1440, "segment of {} bytes", p.len());
                assert!(ref_ipv4_ok(p) && ref_tcp_ok(p), "valid checksums");
                let seq = u32::from_be_bytes([p[24], p[25], p[26], p[27]]);
                let body = &p[20 + usize::from(p[32] >> 4) * 4..];
                if seq == expect_seq && !body.is_empty() {
                    received.extend_from_slice(body);
                    expect_seq = expect_seq.wrapping_add(body.len() as u32);
                }
            }
            out.clear();
            out.push(&from_peer(4001, expect_seq, TCP_ACK, &[], &[]));
            tun.send_batch(&mut out).await.expect("send ACK");
        }
        assert_eq!(received, reply);
        assert!(
            most_in_one_read > 1,
            "a super-packet was split (most packets from one read: {most_in_one_read})"
        );
    }

    #[test]
    fn offload_tun_carries_a_real_tcp_connection() {
        if !is_root() {
            println!("skipped: needs root/netns");
            return;
        }
        let name = format!("ovrs6-offload-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("ip netns add");
        assert!(out.status.success(), "{out:?}");
        let ns = Netns(name.clone());
        let result = std::thread::spawn(move || {
            let f = File::open(format!("/run/netns/{name}")).expect("open netns");
            // SAFETY: `f` is an open network-namespace fd; setns moves only this thread,
            // which exists just for this test.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(run());
        })
        .join();
        drop(ns);
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    }
}
