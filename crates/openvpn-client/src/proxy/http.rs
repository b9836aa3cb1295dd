//! HTTP `CONNECT` through a proxy, with Basic authentication (from the first request, or
//! after a 407 with `auto`), as OpenVPN 2.6 sends it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{HttpAuth, HttpProxy, MAX_REPLY, ProxyError, io_error, tcp};

/// `host:port` as an HTTP authority (IPv6 literals in brackets).
fn authority(host: &str, port: Option<u16>) -> String {
    let h = if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    match port {
        Some(p) => format!("{h}:{p}"),
        None => h,
    }
}

/// The `CONNECT` request (what OpenVPN 2.6 sends: custom headers, `Host`, `User-Agent`,
/// `Proxy-Authorization`).
fn http_request(p: &HttpProxy, host: &str, port: u16, basic: bool) -> String {
    use base64::Engine as _;
    let mut r = format!(
        "CONNECT {} HTTP/{}\r\n",
        authority(host, Some(port)),
        p.version
    );
    let mut host_header = authority(host, None);
    for (name, value) in &p.headers {
        if name.eq_ignore_ascii_case("host") {
            host_header.clone_from(value);
        } else {
            r.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    r.push_str(&format!("Host: {host_header}\r\n"));
    if let Some(agent) = &p.agent {
        r.push_str(&format!("User-Agent: {agent}\r\n"));
    }
    if let (true, Some((user, pass))) = (basic, &p.credentials) {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        r.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    r.push_str("\r\n");
    r
}

/// What an HTTP proxy answered.
#[derive(Debug, PartialEq, Eq)]
struct HttpReply {
    status: u16,
    status_line: String,
    /// The schemes of its `Proxy-Authenticate` headers, as sent.
    schemes: Vec<String>,
}

impl HttpReply {
    fn offers_basic(&self) -> bool {
        self.schemes.iter().any(|s| s.eq_ignore_ascii_case("basic"))
    }
}

fn parse_http_reply(head: &[u8]) -> Result<HttpReply, ProxyError> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let status_line = lines.next().unwrap_or_default().to_owned();
    let mut words = status_line.split_ascii_whitespace();
    if !words.next().is_some_and(|v| v.starts_with("HTTP/")) {
        return Err(ProxyError::Malformed("not an HTTP status line"));
    }
    let status = words
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or(ProxyError::Malformed("no HTTP status code"))?;
    let schemes = lines
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("proxy-authenticate"))
        .filter_map(|(_, value)| value.split_ascii_whitespace().next())
        .map(str::to_owned)
        .collect();
    Ok(HttpReply {
        status,
        status_line,
        schemes,
    })
}

/// Reads the reply header, up to and including its empty line, one byte at a time (what
/// follows it is the tunnel's, and must stay in the stream).
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(256);
    while !(head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n")) {
        if head.len() >= MAX_REPLY {
            return Err(std::io::Error::other(format!(
                "reply header longer than {MAX_REPLY} bytes"
            )));
        }
        head.push(s.read_u8().await?);
    }
    Ok(head)
}

async fn http_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    p: &HttpProxy,
    host: &str,
    port: u16,
    basic: bool,
) -> std::io::Result<Vec<u8>> {
    s.write_all(http_request(p, host, port, basic).as_bytes())
        .await?;
    read_head(s).await
}

/// Connects to the HTTP proxy at `addr` and asks it for a tunnel to `host:port`; `auto`
/// answers a Basic challenge on a second connection, as OpenVPN does.
pub(crate) async fn connect_http(
    addr: SocketAddr,
    timeout: Duration,
    p: &HttpProxy,
    host: &str,
    port: u16,
) -> Result<TcpStream, ProxyError> {
    let mut basic = p.auth == HttpAuth::Basic;
    loop {
        let mut s = tcp(addr, timeout).await?;
        let head = tokio::time::timeout(timeout, http_exchange(&mut s, p, host, port, basic))
            .await
            .map_err(|_| ProxyError::Timeout(addr))?
            .map_err(io_error(addr))?;
        let reply = parse_http_reply(&head)?;
        if (200..300).contains(&reply.status) {
            tracing::info!(proxy = %addr, "HTTP proxy: {}", reply.status_line);
            return Ok(s);
        }
        if reply.status != 407 {
            return Err(ProxyError::HttpStatus(reply.status_line));
        }
        let auth_error = |why: String| ProxyError::HttpAuth {
            status: reply.status_line.clone(),
            why,
        };
        let offered = if reply.schemes.is_empty() {
            "no method".to_owned()
        } else {
            reply.schemes.join(", ")
        };
        match p.auth {
            HttpAuth::Auto { .. } if basic => {
                return Err(auth_error("the username or password was refused".into()));
            }
            HttpAuth::Basic => {
                return Err(auth_error("the username or password was refused".into()));
            }
            HttpAuth::None => {
                return Err(auth_error(format!(
                    "it wants authentication ({offered}): give 'http-proxy HOST PORT AUTHFILE basic', or 'auto' with <http-proxy-user-pass>"
                )));
            }
            HttpAuth::Auto { .. } if !reply.offers_basic() => {
                return Err(auth_error(format!(
                    "it offers {offered}; openvpn-rs authenticates to proxies with Basic only"
                )));
            }
            HttpAuth::Auto { no_cleartext: true } => {
                return Err(auth_error(
                    "'auto-nct' refuses Basic (a clear-text password), and openvpn-rs has no other method: use 'auto'".into(),
                ));
            }
            HttpAuth::Auto { .. } if p.credentials.is_none() => {
                return Err(auth_error(
                    "it wants a password: add <http-proxy-user-pass> (openvpn-rs does not prompt for it)".into(),
                ));
            }
            HttpAuth::Auto { .. } => {
                tracing::info!(proxy = %addr, "HTTP proxy wants Basic authentication; asking again with it");
                basic = true;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn http(auth: HttpAuth) -> HttpProxy {
        HttpProxy {
            host: "proxy.example".into(),
            port: 3128,
            auth,
            credentials: Some(("puser".into(), "ppass".into())),
            version: "1.0".into(),
            agent: None,
            headers: Vec::new(),
        }
    }

    /// The requests are byte for byte what OpenVPN 2.6.14 sent to a test proxy.
    #[test]
    fn http_requests_match_openvpn() {
        assert_eq!(
            http_request(&http(HttpAuth::None), "vpn.example.test", 443, false),
            "CONNECT vpn.example.test:443 HTTP/1.0\r\nHost: vpn.example.test\r\n\r\n"
        );
        assert_eq!(
            http_request(&http(HttpAuth::Basic), "vpn.example.test", 443, true),
            "CONNECT vpn.example.test:443 HTTP/1.0\r\nHost: vpn.example.test\r\n\
             Proxy-Authorization: Basic cHVzZXI6cHBhc3M=\r\n\r\n"
        );
        let mut p = http(HttpAuth::Basic);
        p.version = "1.1".into();
        p.agent = Some("Foo/1".into());
        p.headers = vec![("X-A".into(), "b c".into())];
        assert_eq!(
            http_request(&p, "192.0.2.1", 443, true),
            "CONNECT 192.0.2.1:443 HTTP/1.1\r\nX-A: b c\r\nHost: 192.0.2.1\r\n\
             User-Agent: Foo/1\r\nProxy-Authorization: Basic cHVzZXI6cHBhc3M=\r\n\r\n"
        );
        // A custom Host header replaces the default one.
        p.headers = vec![("Host".into(), "vpn.example.test".into())];
        p.agent = None;
        assert_eq!(
            http_request(&p, "192.0.2.1", 443, false),
            "CONNECT 192.0.2.1:443 HTTP/1.1\r\nHost: vpn.example.test\r\n\r\n"
        );
        assert!(
            http_request(&p, "2001:db8::1", 443, false).starts_with("CONNECT [2001:db8::1]:443 ")
        );
    }

    #[test]
    fn http_replies() {
        let r = parse_http_reply(b"HTTP/1.0 200 Connection established\r\n\r\n").unwrap();
        assert_eq!((r.status, r.offers_basic()), (200, false));
        let r = parse_http_reply(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: NTLM\r\n\
              Proxy-Authenticate: Basic realm=\"x\"\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status, 407);
        assert_eq!(r.schemes, ["NTLM", "Basic"]);
        assert!(r.offers_basic());
        for bad in [
            &b"SSH-2.0-x\r\n\r\n"[..],
            b"HTTP/1.1 abc\r\n\r\n",
            b"\r\n\r\n",
        ] {
            assert!(parse_http_reply(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn reply_head_is_bounded_and_leaves_the_tunnel_bytes() {
        let mut input: &[u8] = b"HTTP/1.0 200 OK\r\nX: y\r\n\r\n\x00\x2a";
        let head = read_head(&mut input).await.unwrap();
        assert!(head.ends_with(b"\r\n\r\n"));
        assert_eq!(input, b"\x00\x2a");
        let long = vec![b'a'; MAX_REPLY + 10];
        let mut input: &[u8] = &long;
        assert!(read_head(&mut input).await.is_err());
        let mut input: &[u8] = b"HTTP/1.0 200 OK\r\n";
        assert!(read_head(&mut input).await.is_err());
    }
}
