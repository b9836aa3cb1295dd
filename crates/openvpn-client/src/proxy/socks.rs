//! SOCKS5 (RFC 1928) with username/password authentication (RFC 1929): `CONNECT` for TCP,
//! `UDP ASSOCIATE` and the relay header for UDP.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::{ProxyError, SocksProxy, tcp};

/// SOCKS5 constants (RFC 1928, RFC 1929).
const SOCKS_VERSION: u8 = 5;
const METHOD_NONE: u8 = 0;
const METHOD_USER_PASS: u8 = 2;
const METHOD_REFUSED: u8 = 0xff;
const USER_PASS_VERSION: u8 = 1;
const CMD_CONNECT: u8 = 1;
const CMD_UDP_ASSOCIATE: u8 = 3;
const ATYP_V4: u8 = 1;
const ATYP_NAME: u8 = 3;
const ATYP_V6: u8 = 4;

fn socks_reply_text(code: u8) -> &'static str {
    match code {
        1 => "general failure",
        2 => "connection not allowed by its rules",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown reply code",
    }
}

/// The address part of a SOCKS request: `ATYP ADDR PORT`.
fn socks_address(host: &str, port: u16) -> Result<Vec<u8>, ProxyError> {
    let name = host.as_bytes();
    let len = u8::try_from(name.len())
        .map_err(|_| ProxyError::Socks(format!("host name '{host}' is longer than 255 bytes")))?;
    let mut a = vec![ATYP_NAME, len];
    a.extend_from_slice(name);
    a.extend_from_slice(&port.to_be_bytes());
    Ok(a)
}

fn socks_socket_address(addr: SocketAddr) -> Vec<u8> {
    let mut a = match addr.ip() {
        IpAddr::V4(ip) => [&[ATYP_V4][..], &ip.octets()].concat(),
        IpAddr::V6(ip) => [&[ATYP_V6][..], &ip.octets()].concat(),
    };
    a.extend_from_slice(&addr.port().to_be_bytes());
    a
}

/// Method negotiation and, with credentials, username/password authentication.
async fn socks_hello<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    p: &SocksProxy,
) -> Result<(), ProxyError> {
    let io = |e: std::io::Error| ProxyError::Socks(e.to_string());
    // Like OpenVPN, one method: username/password when there is an authfile.
    let method = if p.credentials.is_some() {
        METHOD_USER_PASS
    } else {
        METHOD_NONE
    };
    s.write_all(&[SOCKS_VERSION, 1, method]).await.map_err(io)?;
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply).await.map_err(io)?;
    if reply[0] != SOCKS_VERSION {
        return Err(ProxyError::Malformed("not a SOCKS5 proxy"));
    }
    if reply[1] == METHOD_REFUSED {
        return Err(ProxyError::Socks(if method == METHOD_NONE {
            "it wants authentication: give 'socks-proxy HOST PORT AUTHFILE'".into()
        } else {
            "it does not accept username/password authentication".into()
        }));
    }
    if reply[1] != method {
        return Err(ProxyError::Malformed("a method we did not offer"));
    }
    if let Some((user, pass)) = &p.credentials {
        let (u, pw) = (user.as_bytes(), pass.as_bytes());
        let (Ok(ulen), Ok(plen)) = (u8::try_from(u.len()), u8::try_from(pw.len())) else {
            return Err(ProxyError::Socks(
                "username and password must be at most 255 bytes each".into(),
            ));
        };
        let mut m = vec![USER_PASS_VERSION, ulen];
        m.extend_from_slice(u);
        m.push(plen);
        m.extend_from_slice(pw);
        s.write_all(&m).await.map_err(io)?;
        s.read_exact(&mut reply).await.map_err(io)?;
        if reply[1] != 0 {
            return Err(ProxyError::Socks(
                "it refused the username and password".into(),
            ));
        }
    }
    Ok(())
}

/// One request; returns the bound address of the reply (`None`: a name).
async fn socks_request<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    cmd: u8,
    address: &[u8],
) -> Result<Option<SocketAddr>, ProxyError> {
    let io = |e: std::io::Error| ProxyError::Socks(e.to_string());
    let mut m = vec![SOCKS_VERSION, cmd, 0];
    m.extend_from_slice(address);
    s.write_all(&m).await.map_err(io)?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.map_err(io)?;
    if head[0] != SOCKS_VERSION {
        return Err(ProxyError::Malformed("not a SOCKS5 reply"));
    }
    if head[1] != 0 {
        return Err(ProxyError::Socks(format!(
            "request refused: {} ({})",
            socks_reply_text(head[1]),
            head[1]
        )));
    }
    let ip = match head[3] {
        ATYP_V4 => {
            let mut a = [0u8; 4];
            s.read_exact(&mut a).await.map_err(io)?;
            Some(IpAddr::from(a))
        }
        ATYP_V6 => {
            let mut a = [0u8; 16];
            s.read_exact(&mut a).await.map_err(io)?;
            Some(IpAddr::from(a))
        }
        ATYP_NAME => {
            let len = s.read_u8().await.map_err(io)?;
            let mut name = vec![0u8; usize::from(len)];
            s.read_exact(&mut name).await.map_err(io)?;
            None
        }
        _ => return Err(ProxyError::Malformed("unknown address type in the reply")),
    };
    let port = s.read_u16().await.map_err(io)?;
    Ok(ip.map(|ip| SocketAddr::new(ip, port)))
}

/// Connects to the SOCKS5 proxy at `addr` and asks it for a TCP connection to `host:port`
/// (the name as written; the proxy resolves it).
pub(crate) async fn connect_socks(
    addr: SocketAddr,
    timeout: Duration,
    p: &SocksProxy,
    host: &str,
    port: u16,
) -> Result<TcpStream, ProxyError> {
    let mut s = tcp(addr, timeout).await?;
    let target = socks_address(host, port)?;
    tokio::time::timeout(timeout, async {
        socks_hello(&mut s, p).await?;
        socks_request(&mut s, CMD_CONNECT, &target).await
    })
    .await
    .map_err(|_| ProxyError::Timeout(addr))??;
    Ok(s)
}

/// Opens a UDP association through the SOCKS5 proxy at `addr`: the TCP connection (keep it
/// open as long as the association is used) and the relay's address (the proxy's own
/// address when it answers with an unspecified one).
async fn socks_udp_associate(
    addr: SocketAddr,
    timeout: Duration,
    p: &SocksProxy,
) -> Result<(TcpStream, SocketAddr), ProxyError> {
    let mut s = tcp(addr, timeout).await?;
    // Like OpenVPN, the client's own address is left open (0.0.0.0:0).
    let any = socks_socket_address(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
    let bound = tokio::time::timeout(timeout, async {
        socks_hello(&mut s, p).await?;
        socks_request(&mut s, CMD_UDP_ASSOCIATE, &any).await
    })
    .await
    .map_err(|_| ProxyError::Timeout(addr))??;
    let relay = bound.ok_or(ProxyError::Socks(
        "the UDP relay was given as a name; openvpn-rs needs an address".into(),
    ))?;
    let relay = if relay.ip().is_unspecified() {
        SocketAddr::new(addr.ip(), relay.port())
    } else {
        relay
    };
    Ok((s, relay))
}

/// UDP through a SOCKS5 relay (`socks-proxy` with `proto udp`): every datagram to and from
/// the relay carries the relay header.
pub(crate) struct UdpRelay {
    sock: UdpSocket,
    relay: SocketAddr,
    /// The header of every datagram we send (the server's address).
    header: Vec<u8>,
    /// Reused send buffer: header ‖ packet.
    out: Vec<u8>,
    /// The TCP connection to the proxy: the association lives as long as it is open.
    _control: TcpStream,
}

impl UdpRelay {
    /// Associates through the SOCKS5 proxy at `addr` and binds a socket for its relay, which
    /// forwards what we send to `server`.
    pub(crate) async fn open(
        addr: SocketAddr,
        timeout: Duration,
        p: &SocksProxy,
        server: SocketAddr,
    ) -> Result<Self, ProxyError> {
        let (control, relay) = socks_udp_associate(addr, timeout, p).await?;
        let any: IpAddr = if relay.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        let sock = UdpSocket::bind(SocketAddr::new(any, 0))
            .await
            .map_err(|e| ProxyError::Io(format!("UDP socket for the relay {relay}: {e}")))?;
        tracing::info!(proxy = %addr, %relay, %server, "SOCKS proxy relays UDP");
        Ok(UdpRelay {
            sock,
            relay,
            header: udp_header(server),
            out: Vec::with_capacity(2048),
            _control: control,
        })
    }

    /// The UDP socket (for `passtos`).
    pub(crate) fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    /// The relay's address.
    pub(crate) fn relay(&self) -> SocketAddr {
        self.relay
    }

    /// Sends one packet to the server through the relay.
    pub(crate) async fn send(&mut self, pkt: &[u8]) -> std::io::Result<()> {
        self.out.clear();
        self.out.extend_from_slice(&self.header);
        self.out.extend_from_slice(pkt);
        self.sock.send_to(&self.out, self.relay).await.map(|_| ())
    }

    /// Receives one packet from the relay into `buf` (its header removed); returns its length.
    /// Datagrams from elsewhere, malformed ones and fragments are dropped.
    pub(crate) async fn recv(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        loop {
            buf.resize(65_535, 0);
            let (n, src) = self.sock.recv_from(buf).await?;
            if src.ip().to_canonical() != self.relay.ip().to_canonical()
                || src.port() != self.relay.port()
            {
                continue;
            }
            let Some(start) = buf.get(..n).and_then(udp_payload) else {
                continue;
            };
            buf.copy_within(start..n, 0);
            return Ok(n - start);
        }
    }
}

/// The header of every datagram sent through a SOCKS5 relay to `target` (RFC 1928 §7:
/// `RSV RSV FRAG ATYP ADDR PORT`).
fn udp_header(target: SocketAddr) -> Vec<u8> {
    let mut h = vec![0, 0, 0];
    h.extend_from_slice(&socks_socket_address(target));
    h
}

/// Where the payload of a datagram from the relay starts (`None`: malformed, or a fragment,
/// which OpenVPN does not reassemble either).
fn udp_payload(datagram: &[u8]) -> Option<usize> {
    let &[_, _, frag, atyp, ..] = datagram else {
        return None;
    };
    if frag != 0 {
        return None;
    }
    let start = match atyp {
        ATYP_V4 => 4 + 4 + 2,
        ATYP_V6 => 4 + 16 + 2,
        ATYP_NAME => 4 + 1 + usize::from(*datagram.get(4)?) + 2,
        _ => return None,
    };
    (start <= datagram.len()).then_some(start)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A SOCKS5 conversation as OpenVPN 2.6.14 had it with a test proxy (username/password,
    /// CONNECT with the name as written), against a scripted proxy.
    #[tokio::test]
    async fn socks_connect_with_username_and_password() {
        let (mut ours, mut proxy) = tokio::io::duplex(1024);
        let p = SocksProxy {
            host: "127.0.0.1".into(),
            port: 1080,
            credentials: Some(("puser".into(), "ppass".into())),
        };
        let server = tokio::spawn(async move {
            let mut b = [0u8; 3];
            proxy.read_exact(&mut b).await.unwrap();
            assert_eq!(b, [5, 1, 2]);
            proxy.write_all(&[5, 2]).await.unwrap();
            let mut b = [0u8; 13];
            proxy.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"\x01\x05puser\x05ppass");
            proxy.write_all(&[1, 0]).await.unwrap();
            let mut b = [0u8; 16];
            proxy.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"\x05\x01\x00\x03\x09192.0.2.1\x01\xbb");
            proxy
                .write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0x10, 0, 0xAA])
                .await
                .unwrap();
        });
        socks_hello(&mut ours, &p).await.unwrap();
        let bound = socks_request(
            &mut ours,
            CMD_CONNECT,
            &socks_address("192.0.2.1", 443).unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(bound, Some("127.0.0.1:4096".parse().unwrap()));
        // The tunnel's first byte stays in the stream.
        assert_eq!(ours.read_u8().await.unwrap(), 0xAA);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn socks_refusals_are_errors() {
        let p = SocksProxy {
            host: "p".into(),
            port: 1080,
            credentials: None,
        };
        for (reply, want) in [
            (&[5u8, 0xff][..], "wants authentication"),
            (&[4, 0][..], "not a SOCKS5 proxy"),
            (&[5, 2][..], "did not offer"),
            (&[5][..], "eof"),
        ] {
            let (mut ours, mut proxy) = tokio::io::duplex(64);
            proxy.write_all(reply).await.unwrap();
            proxy.shutdown().await.unwrap();
            let e = socks_hello(&mut ours, &p).await.unwrap_err().to_string();
            assert!(
                e.to_lowercase().contains(&want.to_lowercase()),
                "{reply:?}: {e}"
            );
        }
        let (mut ours, mut proxy) = tokio::io::duplex(64);
        proxy.write_all(&[5, 5, 0, 1]).await.unwrap();
        let e = socks_request(&mut ours, CMD_CONNECT, &[1, 0, 0, 0, 0, 0, 0])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("connection refused"), "{e}");
        assert!(socks_address(&"a".repeat(256), 1).is_err());
    }

    #[test]
    fn udp_relay_header() {
        let h = udp_header("192.0.2.1:1194".parse().unwrap());
        assert_eq!(h, [0, 0, 0, 1, 192, 0, 2, 1, 0x04, 0xaa]);
        let h6 = udp_header("[2001:db8::1]:1194".parse().unwrap());
        assert_eq!(h6.len(), 22);
        assert_eq!(h6[3], 4);
        let mut d = h.clone();
        d.extend_from_slice(b"payload");
        assert_eq!(udp_payload(&d), Some(10));
        assert_eq!(udp_payload(&h6), Some(22));
        assert_eq!(
            udp_payload(&[0, 0, 0, 3, 3, b'a', b'b', b'c', 0, 1, 9]),
            Some(10)
        );
        // Fragments, unknown address types and short datagrams are dropped.
        assert_eq!(udp_payload(&[0, 0, 1, 1, 192, 0, 2, 1, 0, 1]), None);
        assert_eq!(udp_payload(&[0, 0, 0, 9, 0, 0]), None);
        assert_eq!(udp_payload(&[0, 0, 0, 1, 192]), None);
        assert_eq!(udp_payload(&[0, 0]), None);
    }
}
