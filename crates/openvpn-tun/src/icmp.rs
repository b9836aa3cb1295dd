//! ICMP answers for blocked address families (pure).
//!
//! With `block-ipv6` the tunnel owns `::/1` + `8000::/1` but carries no IPv6; each IPv6
//! packet the OS sends into the tun is answered with an ICMPv6 *destination unreachable, no
//! route* (type 1, code 0) written back to the tun, so applications fail at once instead of
//! timing out. `block-ipv4` does the same for IPv4 with ICMP *net unreachable* (type 3, code 0).
//!
//! ```text
//!  tun ─▶ [v6 packet A→B] ─▶ unreachable_v6 ─▶ [B→A ICMPv6 1/0 | A→B packet…] ─▶ tun
//! ```
//! The answer's source is the unreachable destination B (the kernel matches the error to the
//! socket by the quoted packet). No answer is made for errors, multicast, or unspecified
//! addresses (RFC 4443 §2.4, RFC 1812 §4.3.2.7).

use std::net::{Ipv4Addr, Ipv6Addr};

/// IPv6 header length.
const V6_HDR: usize = 40;
/// The minimum IPv6 MTU: an ICMPv6 error must not exceed it.
const V6_MIN_MTU: usize = 1280;
const NEXT_ICMPV6: u8 = 58;
const PROTO_ICMP: u8 = 1;

/// The ICMPv6 "no route to destination" answer for one IPv6 packet, or `None` when the packet
/// must not be answered (not IPv6, truncated, an ICMPv6 error, multicast or unspecified
/// source, multicast destination).
pub fn unreachable_v6(pkt: &[u8]) -> Option<Vec<u8>> {
    if pkt.len() < V6_HDR || pkt[0] >> 4 != 6 {
        return None;
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&pkt[8..24]).ok()?);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&pkt[24..40]).ok()?);
    if src.is_unspecified() || src.is_multicast() || dst.is_multicast() || dst.is_unspecified() {
        return None;
    }
    // Never answer an ICMPv6 error (types 0..=127) that sits right after the fixed header.
    if pkt[6] == NEXT_ICMPV6 && pkt.get(V6_HDR).is_some_and(|&t| t < 128) {
        return None;
    }
    let quoted = &pkt[..pkt.len().min(V6_MIN_MTU - V6_HDR - 8)];
    let icmp_len = 8 + quoted.len();
    let mut out = Vec::with_capacity(V6_HDR + icmp_len);
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&(icmp_len as u16).to_be_bytes());
    out.push(NEXT_ICMPV6);
    out.push(64); // hop limit
    out.extend_from_slice(&dst.octets()); // from the unreachable destination
    out.extend_from_slice(&src.octets()); // back to the sender
    out.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // type 1 code 0, checksum, unused
    out.extend_from_slice(quoted);
    let mut sum = Sum::default();
    sum.add(&dst.octets());
    sum.add(&src.octets());
    sum.add(&(icmp_len as u32).to_be_bytes());
    sum.add(&[0, 0, 0, NEXT_ICMPV6]);
    sum.add(&out[V6_HDR..]);
    let c = sum.finish();
    out[V6_HDR + 2..V6_HDR + 4].copy_from_slice(&c.to_be_bytes());
    Some(out)
}

/// The ICMP "net unreachable" answer for one IPv4 packet, or `None` when the packet must not
/// be answered (not IPv4, truncated, a non-first fragment, an ICMP error, broadcast, multicast
/// or unspecified addresses).
pub fn unreachable_v4(pkt: &[u8]) -> Option<Vec<u8>> {
    if pkt.len() < 20 || pkt[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    if ihl < 20 || pkt.len() < ihl {
        return None;
    }
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
    let bad = |a: Ipv4Addr| a.is_unspecified() || a.is_multicast() || a.is_broadcast();
    if bad(src) || bad(dst) {
        return None;
    }
    let frag_offset = u16::from_be_bytes([pkt[6], pkt[7]]) & 0x1fff;
    if frag_offset != 0 {
        return None;
    }
    if pkt[9] == PROTO_ICMP {
        // Only echo requests and other queries get an answer; errors never do.
        match pkt.get(ihl) {
            Some(0 | 8 | 13 | 15 | 17) => {}
            _ => return None,
        }
    }
    let quoted = &pkt[..pkt.len().min(ihl + 8)];
    let total = 20 + 8 + quoted.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&[0x45, 0]);
    out.extend_from_slice(&(total as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 64, PROTO_ICMP, 0, 0]);
    out.extend_from_slice(&dst.octets());
    out.extend_from_slice(&src.octets());
    let mut h = Sum::default();
    h.add(&out[..20]);
    let c = h.finish();
    out[10..12].copy_from_slice(&c.to_be_bytes());
    out.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(quoted);
    let mut s = Sum::default();
    s.add(&out[20..]);
    let c = s.finish();
    out[22..24].copy_from_slice(&c.to_be_bytes());
    Some(out)
}

/// The Internet checksum (RFC 1071), fed in pieces of even length except the last.
#[derive(Default)]
struct Sum(u64);

impl Sum {
    fn add(&mut self, data: &[u8]) {
        for c in data.chunks(2) {
            self.0 += u64::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
        }
    }

    fn finish(&self) -> u16 {
        let mut s = self.0;
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP datagram from 2001:db8::2 port 40000 to 2001:db8:1::53 port 53, 4 payload bytes.
    fn udp6() -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 12, 17, 64];
        p.extend("2001:db8::2".parse::<Ipv6Addr>().expect("v6").octets());
        p.extend("2001:db8:1::53".parse::<Ipv6Addr>().expect("v6").octets());
        p.extend([0x9c, 0x40, 0, 53, 0, 12, 0, 0, b'o', b'v', b'r', b's']);
        p
    }

    /// Verifies a checksum the way a receiver does: the sum over everything is zero.
    fn ok6(pkt: &[u8]) -> bool {
        let mut s = Sum::default();
        s.add(&pkt[8..40]);
        s.add(&((pkt.len() - 40) as u32).to_be_bytes());
        s.add(&[0, 0, 0, 58]);
        s.add(&pkt[40..]);
        s.finish() == 0
    }

    #[test]
    fn icmpv6_no_route_answer_is_exact() {
        let p = udp6();
        let a = unreachable_v6(&p).expect("answer");
        assert_eq!(a.len(), 40 + 8 + p.len());
        assert_eq!(&a[..8], &[0x60, 0, 0, 0, 0, (8 + p.len()) as u8, 58, 64]);
        assert_eq!(&a[8..24], &p[24..40]);
        assert_eq!(&a[24..40], &p[8..24]);
        assert_eq!(&a[40..42], &[1, 0]);
        assert_eq!(&a[44..48], &[0; 4]);
        assert_eq!(&a[48..], &p[..]);
        assert!(ok6(&a));
        // Known answer: the checksum of this exact packet (checked with a separate script).
        assert_eq!(u16::from_be_bytes([a[42], a[43]]), 0x5741); // computed independently
    }

    #[test]
    fn icmpv6_answer_is_capped_at_1280_bytes() {
        let mut p = udp6();
        p.resize(1500, 0xaa);
        p[4..6].copy_from_slice(&((1500 - 40) as u16).to_be_bytes());
        let a = unreachable_v6(&p).expect("answer");
        assert_eq!(a.len(), 1280);
        assert!(ok6(&a));
    }

    #[test]
    fn icmpv6_errors_multicast_and_garbage_are_not_answered() {
        let mut err = udp6();
        err[6] = 58;
        err[40] = 1;
        assert!(unreachable_v6(&err).is_none());
        err[40] = 128; // echo request: answered
        assert!(unreachable_v6(&err).is_some());
        let mut mc = udp6();
        mc[24] = 0xff;
        assert!(unreachable_v6(&mc).is_none());
        let mut unspec = udp6();
        unspec[8..24].fill(0);
        assert!(unreachable_v6(&unspec).is_none());
        assert!(unreachable_v6(&udp6()[..39]).is_none());
        assert!(unreachable_v6(&[0x45; 60]).is_none());
    }

    fn udp4() -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 32, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0];
        p.extend([192, 0, 2, 2, 198, 51, 100, 9]);
        let mut s = Sum::default();
        s.add(&p);
        let c = s.finish();
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend([0x9c, 0x40, 0, 53, 0, 12, 0, 0, b'o', b'v', b'r', b's']);
        p
    }

    #[test]
    fn icmp_net_unreachable_answer_is_exact() {
        let p = udp4();
        let a = unreachable_v4(&p).expect("answer");
        assert_eq!(a.len(), 20 + 8 + 28);
        let mut s = Sum::default();
        s.add(&a[..20]);
        assert_eq!(s.finish(), 0, "IP header checksum");
        let mut s = Sum::default();
        s.add(&a[20..]);
        assert_eq!(s.finish(), 0, "ICMP checksum");
        assert_eq!(&a[12..16], &[198, 51, 100, 9]);
        assert_eq!(&a[16..20], &[192, 0, 2, 2]);
        assert_eq!(&a[20..22], &[3, 0]);
        assert_eq!(&a[28..], &p[..28]);
    }

    #[test]
    fn icmp_errors_fragments_and_broadcast_are_not_answered() {
        let mut p = udp4();
        p[9] = 1;
        p[20] = 3;
        assert!(unreachable_v4(&p).is_none());
        p[20] = 8;
        assert!(unreachable_v4(&p).is_some());
        let mut frag = udp4();
        frag[7] = 1;
        assert!(unreachable_v4(&frag).is_none());
        let mut bc = udp4();
        bc[16..20].fill(255);
        assert!(unreachable_v4(&bc).is_none());
        assert!(unreachable_v4(&udp4()[..19]).is_none());
        assert!(unreachable_v4(&udp6()).is_none());
    }
}
