//! Proxies between the client and its server: HTTP `CONNECT` (`http-proxy`, with Basic
//! authentication) and SOCKS5 (`socks-proxy`, RFC 1928, with RFC 1929 username/password).
//!
//! ```text
//!  profile lines ─▶ options::ProxyLines (per scope) ─▶ Remote::proxy
//!  TCP to the proxy ─▶ connect_http / connect_socks ─▶ the same stream, a pipe to HOST:PORT
//!  TCP to the proxy ─▶ UdpRelay::open (UDP ASSOCIATE; the TCP stream keeps the association
//!      alive) ─▶ each datagram to and from the relay = udp_header(server) ‖ packet
//! ```
//!
//! Over TCP the server's name goes to the proxy as written and the proxy resolves it, as
//! OpenVPN does; for UDP the client resolves it (the relay header carries an address). Replies
//! are read with a bound ([`MAX_REPLY`]) and within the connect timeout; what a proxy sends
//! can fail the attempt, never panic.

mod http;
mod options;
mod socks;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

pub(crate) use http::connect_http;
pub(crate) use options::{ProxyLines, apply};
pub(crate) use socks::{UdpRelay, connect_socks};

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
