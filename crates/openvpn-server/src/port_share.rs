//! `port-share HOST PORT`: a TCP server shares its port with another service (typically
//! HTTPS). A connection whose first bytes are not an OpenVPN client's first packet is relayed
//! to HOST:PORT; OpenVPN clients are served as usual.
//!
//! ```text
//!  accept ─▶ peek 3 bytes ─┬─ length + P_CONTROL_HARD_RESET_CLIENT_V2/V3 ─▶ OpenVPN
//!                          └─ anything else (a TLS ClientHello, an HTTP request) ─▶ HOST:PORT
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use openvpn_wire::Opcode;
use tokio::net::TcpStream;
use tracing::{debug, warn};

/// How long a connection may stay silent before it is treated as not OpenVPN.
const FIRST_BYTES_WAIT: Duration = Duration::from_secs(10);

/// Whether `first` (at least the first 3 bytes of a connection) starts an OpenVPN client's
/// first packet: a 2-byte length of a plausible size, then a client hard-reset opcode.
pub fn looks_like_openvpn(first: &[u8]) -> bool {
    let [hi, lo, op, ..] = *first else {
        return false;
    };
    let len = u16::from_be_bytes([hi, lo]);
    let opcode = openvpn_wire::parse_first_byte(op).ok().map(|(o, _)| o);
    (14..=2048).contains(&len)
        && matches!(
            opcode,
            Some(Opcode::HardResetClientV2 | Opcode::HardResetClientV3)
        )
}

/// Peeks at a new connection's first bytes (without consuming them).
pub async fn is_openvpn(stream: &TcpStream) -> bool {
    let mut first = [0u8; 3];
    let peeked = tokio::time::timeout(FIRST_BYTES_WAIT, async {
        loop {
            match stream.peek(&mut first).await {
                Ok(n) if n >= first.len() => return true,
                Ok(0) | Err(_) => return false,
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    matches!(peeked, Ok(true)) && looks_like_openvpn(&first)
}

/// Relays `stream` to `host:port` until either side closes.
pub async fn proxy(mut stream: TcpStream, from: SocketAddr, host: &str, port: u16) {
    match TcpStream::connect((host, port)).await {
        Ok(mut upstream) => {
            debug!("port-share: {from} is not OpenVPN, relayed to {host}:{port}");
            let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
        }
        Err(e) => warn!("port-share: cannot reach {host}:{port} for {from}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openvpn_first_packets_and_others() {
        // Length 14+, opcode 7 (P_CONTROL_HARD_RESET_CLIENT_V2) in the top 5 bits.
        assert!(looks_like_openvpn(&[0x00, 0x2a, 7 << 3]));
        assert!(looks_like_openvpn(&[0x01, 0x10, 10 << 3]));
        // A TLS ClientHello, an HTTP request, a data packet, too short.
        assert!(!looks_like_openvpn(&[0x16, 0x03, 0x01]));
        assert!(!looks_like_openvpn(b"GET"));
        assert!(!looks_like_openvpn(&[0x00, 0x2a, 9 << 3]));
        assert!(!looks_like_openvpn(&[0x00, 0x2a]));
    }

    #[tokio::test]
    async fn non_openvpn_connections_are_relayed() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let web = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let web_port = web.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = web.accept().await.unwrap();
            let mut req = [0u8; 4];
            s.read_exact(&mut req).await.unwrap();
            s.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await.unwrap();
        });
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_addr = front.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, from) = front.accept().await.unwrap();
            assert!(!is_openvpn(&s).await);
            proxy(s, from, "127.0.0.1", web_port).await;
        });
        let mut c = TcpStream::connect(front_addr).await.unwrap();
        c.write_all(b"GET ").await.unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    }
}
