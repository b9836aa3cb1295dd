//! Proxies between the client and its server: HTTP `CONNECT` (`http-proxy`, with Basic
//! authentication) and SOCKS5 (`socks-proxy`, RFC 1928, with RFC 1929 username/password).
//!
//! ```text
//!  TCP to the proxy ─▶ connect_http / connect_socks ─▶ the same stream, now a pipe to HOST:PORT
//!  TCP to the proxy ─▶ socks_udp_associate ─▶ the relay's address (the TCP stream keeps the
//!      association alive); each datagram to and from the relay = udp_header(server) ‖ packet
//! ```
//!
//! Over TCP the server's name goes to the proxy as written and the proxy resolves it, as
//! OpenVPN does; for UDP the client resolves it (the relay header carries an address). Replies
//! are read with a bound ([`MAX_REPLY`]) and within the connect timeout; what a proxy sends
//! can fail the attempt, never panic.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use openvpn_control::loading::{LoadError, arg, file_or_inline, invalid, number};
use openvpn_control::options::OptionLine;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{Family, Proto, Remote};

/// A proxy in front of one remote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proxy {
    /// `http-proxy HOST PORT [AUTHFILE|auto|auto-nct] [none|basic]` and its
    /// `http-proxy-option` / `http-proxy-user-pass` lines. TCP only.
    Http(HttpProxy),
    /// `socks-proxy HOST [PORT] [AUTHFILE]`: TCP, or UDP through `UDP ASSOCIATE`.
    Socks(SocksProxy),
}

impl Proxy {
    /// The proxy's host name or address.
    pub fn host(&self) -> &str {
        match self {
            Proxy::Http(p) => &p.host,
            Proxy::Socks(p) => &p.host,
        }
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        match self {
            Proxy::Http(p) => p.port,
            Proxy::Socks(p) => p.port,
        }
    }
}

/// How the client authenticates to an HTTP proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpAuth {
    /// No `Proxy-Authorization` (no authfile, or method `none`).
    None,
    /// `Proxy-Authorization: Basic` from the first request (an authfile, method `basic` or
    /// none given).
    Basic,
    /// `auto` / `auto-nct`: ask without credentials; a `407` that offers Basic is answered on
    /// a new connection with them. `auto-nct` refuses clear-text Basic, and openvpn-rs has no
    /// other method (Digest, NTLM), so it only works with proxies that need no password.
    Auto {
        /// `auto-nct`.
        no_cleartext: bool,
    },
}

/// An HTTP proxy (`CONNECT HOST:PORT`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpProxy {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Authentication.
    pub auth: HttpAuth,
    /// Username and password (`<http-proxy-user-pass>` / `http-proxy-user-pass FILE`, else
    /// the `http-proxy` line's authfile).
    pub credentials: Option<(String, String)>,
    /// `http-proxy-option VERSION` (default `1.0`).
    pub version: String,
    /// `http-proxy-option AGENT`: the `User-Agent` header.
    pub agent: Option<String>,
    /// `http-proxy-option CUSTOM-HEADER NAME VALUE`, in order; a `Host` one replaces the
    /// default `Host: HOST` header.
    pub headers: Vec<(String, String)>,
}

/// A SOCKS5 proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocksProxy {
    /// Host name or address.
    pub host: String,
    /// Port (default 1080).
    pub port: u16,
    /// Username and password (RFC 1929) from the authfile; without one, no authentication.
    pub credentials: Option<(String, String)>,
}

/// The proxy options of one scope (the profile, or one `<connection>` block, which starts
/// from the profile's lines above it, as OpenVPN's defaulting works), checked line by line.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProxyLines {
    http: Option<(OptionLine, HttpLine)>,
    socks: Option<(OptionLine, SocksProxy)>,
    /// The first `http-proxy-option` / `http-proxy-user-pass` line (for its error).
    http_extra: Option<OptionLine>,
    version: Option<String>,
    agent: Option<String>,
    headers: Vec<(String, String)>,
    /// `<http-proxy-user-pass>` / `http-proxy-user-pass FILE` (wins over the authfile).
    user_pass: Option<(String, String)>,
}

/// An `http-proxy` line before its credentials are read.
#[derive(Clone, Debug)]
struct HttpLine {
    host: String,
    port: u16,
    auth: HttpAuth,
    /// The authfile (read at the end, only if no `http-proxy-user-pass` replaces it).
    authfile: Option<PathBuf>,
}

/// Username on the first line, password on the second (what OpenVPN reads).
fn user_pass(text: &str, o: &OptionLine, what: &str) -> Result<(String, String), LoadError> {
    let mut it = text.lines().map(str::trim_end).filter(|l| !l.is_empty());
    match (it.next(), it.next()) {
        (Some(u), Some(p)) => Ok((u.to_owned(), p.to_owned())),
        _ => Err(invalid(
            o,
            format!("{what}: put the username on line 1 and the password on line 2"),
        )),
    }
}

fn no_prompt(o: &OptionLine) -> LoadError {
    invalid(
        o,
        "'stdin' (asking for the proxy password on the terminal) is not supported: give a file with the username and password",
    )
}

fn one_line(o: &OptionLine, s: &str) -> Result<String, LoadError> {
    if s.contains(['\r', '\n']) {
        return Err(invalid(o, "the value must be one line"));
    }
    Ok(s.to_owned())
}

impl ProxyLines {
    /// Takes one proxy option line (`http-proxy`, `http-proxy-option`,
    /// `http-proxy-user-pass`, `socks-proxy`); relative paths from `base`.
    pub(crate) fn add(&mut self, o: &OptionLine, base: &Path) -> Result<(), LoadError> {
        match o.name.as_str() {
            "http-proxy" => {
                let host = arg(o, 0)?.to_owned();
                if o.arg(1).is_none() {
                    return Err(invalid(
                        o,
                        "no port: http-proxy HOST PORT [AUTHFILE|auto|auto-nct] [AUTH-METHOD]",
                    ));
                }
                let port = number(o, 1)?;
                let (mut auth, authfile) = match o.arg(2) {
                    None => (HttpAuth::None, None),
                    Some("auto") => (
                        HttpAuth::Auto {
                            no_cleartext: false,
                        },
                        None,
                    ),
                    Some("auto-nct") => (HttpAuth::Auto { no_cleartext: true }, None),
                    Some("stdin") => return Err(no_prompt(o)),
                    Some(f) => (HttpAuth::Basic, Some(base.join(f))),
                };
                match o.arg(3) {
                    None | Some("basic") => {}
                    Some("none") => {
                        if auth == HttpAuth::Basic {
                            auth = HttpAuth::None;
                        }
                    }
                    Some(m @ ("ntlm" | "ntlm2")) => {
                        return Err(invalid(
                            o,
                            format!("'{m}' proxy authentication is not supported: use basic"),
                        ));
                    }
                    Some(m) => {
                        return Err(invalid(
                            o,
                            format!(
                                "unknown HTTP proxy authentication method '{m}': use none or basic"
                            ),
                        ));
                    }
                }
                self.http = Some((
                    o.clone(),
                    HttpLine {
                        host,
                        port,
                        auth,
                        authfile,
                    },
                ));
            }
            "http-proxy-option" => {
                self.http_extra.get_or_insert_with(|| o.clone());
                let bad = || invalid(o, "use VERSION V, AGENT STRING or CUSTOM-HEADER NAME VALUE");
                match (o.arg(0), o.args.len()) {
                    (Some("VERSION"), 2) => self.version = Some(one_line(o, arg(o, 1)?)?),
                    (Some("AGENT"), 2) => self.agent = Some(one_line(o, arg(o, 1)?)?),
                    (Some("CUSTOM-HEADER"), 2 | 3) => {
                        let name = arg(o, 1)?;
                        if name.is_empty()
                            || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
                        {
                            return Err(invalid(o, format!("'{name}' is not a header name")));
                        }
                        let value = o.arg(2).unwrap_or_default();
                        self.headers.push((name.to_owned(), one_line(o, value)?));
                    }
                    _ => return Err(bad()),
                }
            }
            "http-proxy-user-pass" => {
                self.http_extra.get_or_insert_with(|| o.clone());
                if o.inline_content().is_none() && o.arg(0) == Some("stdin") {
                    return Err(no_prompt(o));
                }
                let text = file_or_inline(o, base)?;
                self.user_pass = Some(user_pass(&text, o, "http-proxy-user-pass")?);
            }
            "socks-proxy" => {
                let host = arg(o, 0)?.to_owned();
                let port = if o.arg(1).is_some() {
                    number(o, 1)?
                } else {
                    1080
                };
                let credentials = match o.arg(2) {
                    None => None,
                    Some("stdin") => return Err(no_prompt(o)),
                    Some(f) => {
                        let path = base.join(f);
                        let text = std::fs::read_to_string(&path).map_err(|e| {
                            invalid(
                                o,
                                format!("cannot read the authfile {}: {e}", path.display()),
                            )
                        })?;
                        let up = user_pass(&text, o, "the authfile")?;
                        if up.0.len() > 255 || up.1.len() > 255 {
                            return Err(invalid(
                                o,
                                "SOCKS5 usernames and passwords are at most 255 bytes",
                            ));
                        }
                        Some(up)
                    }
                };
                self.socks = Some((
                    o.clone(),
                    SocksProxy {
                        host,
                        port,
                        credentials,
                    },
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// The scope's proxy, with the line that named it.
    pub(crate) fn finish(&self) -> Result<Option<(OptionLine, Proxy)>, LoadError> {
        match (&self.http, &self.socks) {
            (Some(_), Some((o, _))) => Err(invalid(
                o,
                "'http-proxy' and 'socks-proxy' cannot both be used for one connection",
            )),
            (None, Some((o, p))) => {
                if let Some(x) = &self.http_extra {
                    return Err(invalid(x, "needs 'http-proxy HOST PORT'"));
                }
                Ok(Some((o.clone(), Proxy::Socks(p.clone()))))
            }
            (None, None) => match &self.http_extra {
                Some(x) => Err(invalid(x, "needs 'http-proxy HOST PORT'")),
                None => Ok(None),
            },
            (Some((o, h)), None) => {
                let credentials = match (&self.user_pass, &h.authfile) {
                    (Some(up), _) => Some(up.clone()),
                    (None, Some(path)) => {
                        let text = std::fs::read_to_string(path).map_err(|e| {
                            invalid(
                                o,
                                format!("cannot read the authfile {}: {e}", path.display()),
                            )
                        })?;
                        Some(user_pass(&text, o, "the authfile")?)
                    }
                    (None, None) => None,
                };
                Ok(Some((
                    o.clone(),
                    Proxy::Http(HttpProxy {
                        host: h.host.clone(),
                        port: h.port,
                        auth: h.auth,
                        credentials,
                        version: self.version.clone().unwrap_or_else(|| "1.0".into()),
                        agent: self.agent.clone(),
                        headers: self.headers.clone(),
                    }),
                )))
            }
        }
    }
}

/// Puts `proxy` in front of `remote`: an HTTP proxy needs TCP (OpenVPN refuses it with UDP
/// too); SOCKS with dual-stack UDP reaches the server over IPv4, as OpenVPN 2.6 does.
pub(crate) fn apply(
    mut remote: Remote,
    proxy: Option<&(OptionLine, Proxy)>,
    notices: &mut Vec<String>,
) -> Result<Remote, LoadError> {
    let Some((o, p)) = proxy else {
        return Ok(remote);
    };
    match (p, remote.proto) {
        (Proxy::Http(_), Proto::Udp) => {
            return Err(invalid(
                o,
                format!(
                    "an HTTP proxy carries TCP only, and remote {} uses UDP: add 'proto tcp-client' (or use socks-proxy)",
                    remote.host
                ),
            ));
        }
        (Proxy::Socks(_), Proto::Udp) if remote.family == Family::Any => {
            remote.family = Family::V4;
            let note = "socks-proxy with proto udp: the server is reached over IPv4 (OpenVPN 2.6 forces IPv4 for UDP through SOCKS too)";
            if !notices.iter().any(|n| n == note) {
                notices.push(note.into());
            }
        }
        _ => {}
    }
    remote.proxy = Some(p.clone());
    Ok(remote)
}

/// The longest reply header read from a proxy.
pub(crate) const MAX_REPLY: usize = 8192;

/// Why a proxy gave no tunnel.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    /// Connecting to the proxy or talking to it failed.
    #[error("proxy {0}")]
    Io(String),
    /// The proxy did not finish its answer within the connect timeout.
    #[error("proxy {0}: no answer within connect-timeout")]
    Timeout(SocketAddr),
    /// The proxy's answer is not what the protocol allows.
    #[error("proxy sent a malformed answer: {0}")]
    Malformed(&'static str),
    /// The HTTP proxy refused the `CONNECT`.
    #[error("HTTP proxy answered '{0}'")]
    HttpStatus(String),
    /// The HTTP proxy wants credentials this profile cannot give.
    #[error("HTTP proxy answered '{status}': {why}")]
    HttpAuth {
        /// The status line.
        status: String,
        /// What is missing and what to do.
        why: String,
    },
    /// The SOCKS proxy refused.
    #[error("SOCKS proxy: {0}")]
    Socks(String),
}

fn io_error(addr: SocketAddr) -> impl Fn(std::io::Error) -> ProxyError {
    move |e| ProxyError::Io(format!("{addr}: {e}"))
}

async fn tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ProxyError> {
    let s = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ProxyError::Timeout(addr))?
        .map_err(io_error(addr))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

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
pub(crate) async fn socks_udp_associate(
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

/// The header of every datagram sent through a SOCKS5 relay to `target` (RFC 1928 §7:
/// `RSV RSV FRAG ATYP ADDR PORT`).
pub(crate) fn udp_header(target: SocketAddr) -> Vec<u8> {
    let mut h = vec![0, 0, 0];
    h.extend_from_slice(&socks_socket_address(target));
    h
}

/// Where the payload of a datagram from the relay starts (`None`: malformed, or a fragment,
/// which OpenVPN does not reassemble either).
pub(crate) fn udp_payload(datagram: &[u8]) -> Option<usize> {
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
    use crate::ClientConfig;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    /// A profile with `extra` lines; `proxy-auth.txt` in its directory holds `puser`/`ppass`.
    fn prof(extra: &str) -> Result<ClientConfig, LoadError> {
        let dir = std::env::temp_dir().join(format!("ovpn-rs-proxy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("proxy-auth.txt"), "puser\nppass\n").unwrap();
        ClientConfig::from_ovpn(
            &format!("client\ndev tun\nremote vpn.example 443\n<ca>\n{CA}</ca>\n{extra}"),
            &dir,
        )
    }

    fn http_of(c: &ClientConfig, i: usize) -> HttpProxy {
        match &c.remotes[i].proxy {
            Some(Proxy::Http(h)) => h.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn http_proxy_options() {
        let c = prof(
            "proto tcp-client\nhttp-proxy proxy.example 3128 proxy-auth.txt\n\
             http-proxy-option VERSION 1.1\nhttp-proxy-option AGENT OpenVPN\n\
             http-proxy-option CUSTOM-HEADER Host vpn.example.test\nhttp-proxy-retry\n",
        )
        .unwrap();
        let h = http_of(&c, 0);
        assert_eq!(
            (h.host.as_str(), h.port, h.auth),
            ("proxy.example", 3128, HttpAuth::Basic)
        );
        assert_eq!(h.credentials, Some(("puser".into(), "ppass".into())));
        assert_eq!(
            (h.version.as_str(), h.agent.as_deref()),
            ("1.1", Some("OpenVPN"))
        );
        assert_eq!(
            h.headers,
            [("Host".to_owned(), "vpn.example.test".to_owned())]
        );
        // No authfile: no authentication; `none`; `auto` with the inline credentials, which
        // also replace an authfile.
        let c = prof("proto tcp\nhttp-proxy p 8080\n").unwrap();
        assert_eq!(
            (http_of(&c, 0).auth, http_of(&c, 0).credentials),
            (HttpAuth::None, None)
        );
        let c = prof("proto tcp\nhttp-proxy p 8080 proxy-auth.txt none\n").unwrap();
        assert_eq!(http_of(&c, 0).auth, HttpAuth::None);
        let c = prof("proto tcp\nhttp-proxy p 8080 auto-nct\n<http-proxy-user-pass>\niu\nip\n</http-proxy-user-pass>\n").unwrap();
        assert_eq!(http_of(&c, 0).auth, HttpAuth::Auto { no_cleartext: true });
        assert_eq!(http_of(&c, 0).credentials, Some(("iu".into(), "ip".into())));
        let c = prof("proto tcp\nhttp-proxy p 8080 missing.txt basic\n<http-proxy-user-pass>\niu\nip\n</http-proxy-user-pass>\n").unwrap();
        assert_eq!(http_of(&c, 0).credentials, Some(("iu".into(), "ip".into())));
    }

    #[test]
    fn proxy_errors_are_openvpns() {
        // The profile's first extra line is line 6.
        for (extra, want) in [
            ("http-proxy p 3128\n", "carries TCP only"),
            (
                "proto tcp\nremote b 1194 udp\nhttp-proxy p 3128\n",
                "remote b uses UDP",
            ),
            ("proto tcp\nhttp-proxy p\n", "no port"),
            ("proto tcp\nhttp-proxy p 3128 stdin\n", "stdin"),
            (
                "proto tcp\nhttp-proxy p 3128 proxy-auth.txt ntlm2\n",
                "'ntlm2' proxy authentication is not supported",
            ),
            (
                "proto tcp\nhttp-proxy p 3128 proxy-auth.txt digest\n",
                "unknown HTTP proxy authentication method",
            ),
            (
                "proto tcp\nhttp-proxy p 3128 nofile.txt\n",
                "cannot read the authfile",
            ),
            (
                "proto tcp\nhttp-proxy-option VERSION 1.1\n",
                "needs 'http-proxy HOST PORT'",
            ),
            (
                "proto tcp\nhttp-proxy p 3128\nhttp-proxy-option X-Other v\n",
                "CUSTOM-HEADER",
            ),
            (
                "proto tcp\nhttp-proxy p 3128\nhttp-proxy-option AGENT\n",
                "AGENT",
            ),
            (
                "proto tcp\nhttp-proxy p 3128\nsocks-proxy s\n",
                "cannot both be used",
            ),
            ("socks-proxy s 1080 stdin\n", "stdin"),
        ] {
            let e = prof(extra).expect_err(extra).to_string();
            assert!(
                e.contains(want) && e.contains("config line"),
                "{extra:?}: {e}"
            );
        }
    }

    #[test]
    fn connection_blocks_take_the_proxy_lines_above_them() {
        let c = prof(
            "proto tcp\n<connection>\nremote a 443\n</connection>\n\
             http-proxy p 3128\n\
             <connection>\nremote b 443\nhttp-proxy-option AGENT X\n</connection>\n\
             <connection>\nremote c 443\nsocks-proxy s 1081\n</connection>\n",
        )
        .unwrap_err();
        // The third block has the profile's http-proxy and its own socks-proxy.
        assert!(c.to_string().contains("cannot both be used"), "{c}");
        let c = prof(
            "proto tcp\n<connection>\nremote a 443\n</connection>\n\
             http-proxy p 3128\n\
             <connection>\nremote b 443\nhttp-proxy-option AGENT X\nhttp-proxy-retry\n</connection>\n\
             <connection>\nremote c 1194 udp\nsocks-proxy-retry\n</connection>\n",
        );
        // An HTTP proxy reaches the UDP block too, as in OpenVPN.
        assert!(c.unwrap_err().to_string().contains("remote c uses UDP"));
        let c = prof(
            "proto tcp\n<connection>\nremote a 443\n</connection>\n\
             http-proxy p 3128\n\
             <connection>\nremote b 443\nhttp-proxy-option AGENT X\n</connection>\n",
        )
        .unwrap();
        let hosts: Vec<_> = c.remotes.iter().map(|r| r.host.as_str()).collect();
        assert_eq!(hosts, ["vpn.example", "a", "b"]);
        assert!(c.remotes[1].proxy.is_none(), "a block above the proxy line");
        assert_eq!(http_of(&c, 0).agent, None);
        assert_eq!(http_of(&c, 2).agent.as_deref(), Some("X"));
    }

    #[test]
    fn socks_proxy_options() {
        let c = prof("socks-proxy 127.0.0.1\n").unwrap();
        assert_eq!(
            c.remotes[0].proxy,
            Some(Proxy::Socks(SocksProxy {
                host: "127.0.0.1".into(),
                port: 1080,
                credentials: None
            }))
        );
        // UDP through SOCKS goes over IPv4 (as OpenVPN 2.6 forces it), with a notice.
        assert_eq!(c.remotes[0].family, Family::V4);
        assert!(
            c.notices.iter().any(|n| n.contains("IPv4")),
            "{:?}",
            c.notices
        );
        let c = prof("proto tcp6\nsocks-proxy s 9150 proxy-auth.txt\n").unwrap();
        let Some(Proxy::Socks(p)) = &c.remotes[0].proxy else {
            panic!()
        };
        assert_eq!(p.credentials, Some(("puser".into(), "ppass".into())));
        assert_eq!(c.remotes[0].family, Family::V6);
    }

    #[test]
    fn passtos_and_inactive() {
        let c = prof("passtos\ninactive 120 10000000\n").unwrap();
        assert!(c.passtos);
        assert_eq!(c.inactive, Some((Duration::from_secs(120), 10_000_000)));
        assert_eq!(
            prof("inactive 30\n").unwrap().inactive,
            Some((Duration::from_secs(30), 0))
        );
        assert_eq!(prof("inactive 0\n").unwrap().inactive, None);
        assert!(prof("inactive x\n").is_err());
    }

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
