//! `passtos`: the outer packet's TOS (IPv4) or traffic class (IPv6) follows the tunnelled
//! packet's.
//!
//! ```text
//!  inner IP packet ─▶ PassTos::update ─▶ Some(tos) when it differs from the last one
//!      ─▶ set_tos(link socket) (IP_TOS / IPV6_TCLASS) ─▶ then the sealed packet is sent
//! ```
//!
//! The socket option is changed only when the value changes. The TCP link writes what it
//! queued before changing it, so each packet leaves with its own inner packet's value; pings
//! and control packets go with the last one. The batched UDP path cannot do this (its
//! `sendmsg` gives every message a TOS of its own, 0), so with `passtos` the UDP link sends
//! one datagram per call.

use std::os::fd::AsFd;

/// The value last set on the link socket.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PassTos {
    last: Option<u8>,
}

impl PassTos {
    /// The value to set before sending the sealed form of `inner` (`None`: unchanged, or not
    /// an IP packet).
    pub(crate) fn update(&mut self, inner: &[u8]) -> Option<u8> {
        let tos = inner_tos(inner)?;
        if self.last == Some(tos) {
            return None;
        }
        self.last = Some(tos);
        Some(tos)
    }
}

/// The IPv4 TOS byte or the IPv6 traffic class of an IP packet.
pub(crate) fn inner_tos(pkt: &[u8]) -> Option<u8> {
    let (&b0, &b1) = (pkt.first()?, pkt.get(1)?);
    match b0 >> 4 {
        4 => Some(b1),
        6 => Some((b0 << 4) | (b1 >> 4)),
        _ => None,
    }
}

/// Sets IP_TOS (IPv4 socket) or IPV6_TCLASS (IPv6 socket) on the link socket; failures are
/// logged once per call at debug level (the packet still goes out).
pub(crate) fn set_tos(sock: &impl AsFd, ipv6: bool, tos: u8) {
    let s = socket2::SockRef::from(sock);
    let r = if ipv6 {
        s.set_tclass_v6(u32::from(tos))
    } else {
        s.set_tos_v4(u32::from(tos))
    };
    if let Err(e) = r {
        tracing::debug!("passtos: cannot set the link socket's TOS to {tos:#04x}: {e}");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tos_of_ipv4_and_ipv6_packets() {
        assert_eq!(inner_tos(&[0x45, 0xb8, 0, 20]), Some(0xb8));
        // Version 6, traffic class 0xba, flow label 0x12345.
        assert_eq!(inner_tos(&[0x6b, 0xa1, 0x23, 0x45]), Some(0xba));
        assert_eq!(inner_tos(&[0x45]), None);
        assert_eq!(inner_tos(&[0x00, 0x10]), None);
    }

    #[test]
    fn changes_only_when_the_value_changes() {
        let mut p = PassTos::default();
        assert_eq!(p.update(&[0x45, 0]), Some(0));
        assert_eq!(p.update(&[0x45, 0]), None);
        assert_eq!(p.update(&[0x45, 0xb8]), Some(0xb8));
        assert_eq!(p.update(&[0x6b, 0x80]), None);
        assert_eq!(p.update(&[0x60, 0x00]), Some(0));
        assert_eq!(p.update(&[0xff]), None);
    }

    #[tokio::test]
    async fn sets_the_socket_option() {
        let v4 = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        set_tos(&v4, false, 0xb8);
        assert_eq!(v4.tos_v4().unwrap(), 0xb8);
        if let Ok(v6) = tokio::net::UdpSocket::bind("[::1]:0").await {
            set_tos(&v6, true, 0x28);
            assert_eq!(v6.tclass_v6().unwrap(), 0x28);
        }
    }
}
