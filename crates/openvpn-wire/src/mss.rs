//! TCP MSS clamping (`mssfix`) on IP packets crossing the tunnel.
//!
//! A TCP SYN carries the largest segment its sender accepts; lowering it makes both ends send
//! segments whose encrypted, encapsulated datagrams fit the path without IP fragmentation.
//! The TCP checksum is updated incrementally (RFC 1624).

/// The MSS to announce for `mssfix N` (N = largest encapsulated datagram including the outer
/// IPv4 and UDP headers) with `overhead` bytes of OpenVPN framing and crypto (24 for AEAD with
/// DATA_V2): `N - 20 - 8 - overhead - 40` for inner IPv4; 20 less for inner IPv6.
pub fn mss_for_mssfix(mssfix: u16, overhead: u16) -> u16 {
    mssfix.saturating_sub(20 + 8 + overhead + 40)
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Clamps the MSS option of a TCP SYN in an IPv4 or IPv6 packet to `max_mss` (for IPv6 the
/// caller's value minus 20 is used, since the inner header is 20 bytes longer). Returns true
/// if the packet was changed. Anything that is not a well-formed TCP SYN is left alone.
pub fn clamp_mss(packet: &mut [u8], max_mss: u16) -> bool {
    let Some(&first) = packet.first() else {
        return false;
    };
    let (tcp_off, limit) = match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            let frag = packet
                .get(6..8)
                .map(|b| u16::from_be_bytes([b[0], b[1]]) & 0x1fff);
            if ihl < 20 || packet.get(9) != Some(&6) || frag != Some(0) {
                return false;
            }
            (ihl, max_mss)
        }
        6 => {
            if packet.get(6) != Some(&6) {
                return false; // no extension-header walk: only plain TCP
            }
            (40, max_mss.saturating_sub(20))
        }
        _ => return false,
    };
    let Some(tcp) = packet.get_mut(tcp_off..) else {
        return false;
    };
    if tcp.len() < 20 || tcp[13] & 0x02 == 0 {
        return false; // not a SYN
    }
    let data_off = usize::from(tcp[12] >> 4) * 4;
    if data_off < 20 || data_off > tcp.len() {
        return false;
    }
    let mut i = 20;
    while i < data_off {
        match tcp[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let Some(&len) = tcp.get(i + 1) else {
                    return false;
                };
                let len = usize::from(len);
                if len < 2 || i + len > data_off {
                    return false;
                }
                if kind == 2 && len == 4 {
                    let old = u16::from_be_bytes([tcp[i + 2], tcp[i + 3]]);
                    if old <= limit {
                        return false;
                    }
                    tcp[i + 2..i + 4].copy_from_slice(&limit.to_be_bytes());
                    // RFC 1624: HC' = ~(~HC + ~m + m')
                    let hc = u16::from_be_bytes([tcp[16], tcp[17]]);
                    let sum = u32::from(!hc) + u32::from(!old) + u32::from(limit);
                    let new = !fold(sum);
                    tcp[16..18].copy_from_slice(&new.to_be_bytes());
                    return true;
                }
                i += len;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Full TCP checksum over the IPv4 pseudo-header, for checking.
    fn tcp_checksum_v4(p: &[u8]) -> u16 {
        let ihl = usize::from(p[0] & 0x0f) * 4;
        let tcp = &p[ihl..];
        let mut sum: u32 = 0;
        let mut add = |b: &[u8]| {
            for c in b.chunks(2) {
                sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
        };
        add(&p[12..20]);
        add(&[0, 6]);
        add(&(tcp.len() as u16).to_be_bytes());
        let mut t = tcp.to_vec();
        t[16] = 0;
        t[17] = 0;
        add(&t);
        !fold(sum)
    }

    fn syn_v4(mss: u16) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 44, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 8, 0, 2, 10, 8, 0, 1,
        ];
        let mut tcp = vec![
            0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ];
        tcp.extend_from_slice(&[2, 4]);
        tcp.extend_from_slice(&mss.to_be_bytes());
        p.extend_from_slice(&tcp);
        let c = tcp_checksum_v4(&p);
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn default_mssfix_gives_openvpn_value() {
        assert_eq!(mss_for_mssfix(1492, 24), 1400);
    }

    #[test]
    fn clamps_syn_and_keeps_checksum_valid() {
        let mut p = syn_v4(1460);
        assert!(clamp_mss(&mut p, 1400));
        assert_eq!(u16::from_be_bytes([p[42], p[43]]), 1400);
        assert_eq!(
            u16::from_be_bytes([p[36], p[37]]),
            tcp_checksum_v4(&p),
            "incremental checksum matches full recompute"
        );
        let before = p.clone();
        assert!(!clamp_mss(&mut p, 1400), "already small enough");
        assert_eq!(p, before);
    }

    #[test]
    fn leaves_other_packets_alone() {
        let mut p = syn_v4(1460);
        p[33] = 0x10; // ACK only
        assert!(!clamp_mss(&mut p, 1400));
        let mut udp = syn_v4(1460);
        udp[9] = 17;
        assert!(!clamp_mss(&mut udp, 1400));
        for n in 0..44 {
            let mut t = syn_v4(1460)[..n].to_vec();
            let _ = clamp_mss(&mut t, 1400); // never panics on truncation
        }
    }
}
