//! rtnetlink over a `NETLINK_ROUTE` socket: link MTU and state, addresses, routes, and route
//! look-ups, without running `ip`.
//!
//! ```text
//!   encode_* (pure, byte-tested)  ──▶  Netlink::request  ──▶  kernel
//!   parse_route / parse_addr (pure) ◀──  Netlink::dump / get  ◀──┘
//! ```
//!
//! Messages are built by hand (`nlmsghdr` + `ifinfomsg`/`ifaddrmsg`/`rtmsg` + attributes);
//! the layouts are the stable kernel ABI from `<linux/netlink.h>` and `<linux/rtnetlink.h>`.
//! Every socket lives only for one request and belongs to the network namespace of the
//! calling thread, which is what the namespace tests rely on.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::TunError;

const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;

const IFLA_MTU: u16 = 4;
const IFF_UP: u32 = 0x1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_TABLE: u16 = 15;

const RT_TABLE_MAIN: u8 = 254;
const RTN_UNICAST: u8 = 1;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
/// In a delete request: match a route of any scope (what `ip route del` sends).
const RT_SCOPE_NOWHERE: u8 = 255;
/// `RTPROT_STATIC`: a route added by an administrator (what `ip route add … proto static` sets).
const RTPROT_STATIC: u8 = 4;

const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

/// A route: destination prefix, optional gateway, outgoing interface index, optional metric.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMsg {
    /// Destination network (host bits cleared by the caller).
    pub dest: IpAddr,
    /// Prefix length.
    pub prefix: u8,
    /// Next hop, or `None` for a route straight out of the interface.
    pub gateway: Option<IpAddr>,
    /// Outgoing interface index.
    pub ifindex: u32,
    /// Metric (`RTA_PRIORITY`); `None` lets the kernel choose (0 for IPv4, 1024 for IPv6).
    pub metric: Option<u32>,
}

/// What the kernel answered for a route look-up or a default-route dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    /// The next hop, if the destination is not on-link.
    pub gateway: Option<IpAddr>,
    /// Outgoing interface index.
    pub ifindex: u32,
    /// Outgoing interface name (empty if it vanished meanwhile).
    pub ifname: String,
    /// Preferred source address, when the kernel reported one.
    pub source: Option<IpAddr>,
    /// Metric, when reported.
    pub metric: Option<u32>,
}

/// The current default routes of the main table (lowest metric wins).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DefaultGateways {
    /// IPv4 default route.
    pub v4: Option<RouteInfo>,
    /// IPv6 default route.
    pub v6: Option<RouteInfo>,
}

/// A handle for rtnetlink requests in the calling thread's network namespace.
#[derive(Debug, Default, Clone, Copy)]
pub struct Netlink;

impl Netlink {
    /// A handle; sockets are opened per request.
    pub fn new() -> Self {
        Netlink
    }

    /// The index of interface `name` (`if_nametoindex`).
    pub fn link_index(&self, name: &str) -> Result<u32, TunError> {
        let c = std::ffi::CString::new(name).map_err(|_| TunError::InvalidName {
            name: name.to_owned(),
            reason: "it contains NUL",
        })?;
        // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
        let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if idx == 0 {
            return Err(TunError::Netlink {
                op: format!("look up interface {name}"),
                source: io::Error::last_os_error(),
            });
        }
        Ok(idx)
    }

    /// The name of interface `index`, if it exists.
    pub fn link_name(&self, index: u32) -> Option<String> {
        let mut buf = [0u8; libc::IF_NAMESIZE];
        // SAFETY: `buf` has room for IF_NAMESIZE bytes, as if_indextoname requires.
        let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr().cast()) };
        if p.is_null() {
            return None;
        }
        let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        Some(String::from_utf8_lossy(&buf[..len]).into_owned())
    }

    /// Sets the MTU of interface `ifindex`.
    pub fn set_mtu(&self, ifindex: u32, mtu: u32) -> Result<(), TunError> {
        self.ack(
            &format!("set mtu {mtu} on link {ifindex}"),
            encode_link(ifindex, Some(mtu), false),
        )
    }

    /// Brings interface `ifindex` up.
    pub fn set_up(&self, ifindex: u32) -> Result<(), TunError> {
        self.ack(
            &format!("set link {ifindex} up"),
            encode_link(ifindex, None, true),
        )
    }

    /// Adds an address to interface `ifindex`.
    pub fn add_address(&self, ifindex: u32, addr: IpAddr, prefix: u8) -> Result<(), TunError> {
        self.ack(
            &format!("add address {addr}/{prefix} to link {ifindex}"),
            encode_addr(RTM_NEWADDR, ifindex, addr, prefix),
        )
    }

    /// Removes an address from interface `ifindex`.
    pub fn del_address(&self, ifindex: u32, addr: IpAddr, prefix: u8) -> Result<(), TunError> {
        self.ack(
            &format!("delete address {addr}/{prefix} from link {ifindex}"),
            encode_addr(RTM_DELADDR, ifindex, addr, prefix),
        )
    }

    /// Adds a route to the main table (fails if the same route exists).
    pub fn add_route(&self, r: &RouteMsg) -> Result<(), TunError> {
        self.ack(
            &format!("add route {}", describe(r)),
            encode_route(RTM_NEWROUTE, r),
        )
    }

    /// Deletes a route from the main table; matches destination, gateway, interface, metric.
    pub fn del_route(&self, r: &RouteMsg) -> Result<(), TunError> {
        self.ack(
            &format!("delete route {}", describe(r)),
            encode_route(RTM_DELROUTE, r),
        )
    }

    /// The route the kernel would use for `dest` (like `ip route get`).
    pub fn route_get(&self, dest: IpAddr) -> Result<RouteInfo, TunError> {
        let op = format!("look up the route to {dest}");
        let msgs = self.exchange(&op, &encode_route_get(dest), false)?;
        let parsed = msgs
            .iter()
            .filter(|(t, _)| *t == RTM_NEWROUTE)
            .find_map(|(_, body)| parse_route(body));
        let r = parsed.ok_or_else(|| TunError::Netlink {
            op,
            source: io::Error::other("the kernel sent no route"),
        })?;
        Ok(self.info(&r))
    }

    /// The default routes (v4 and v6) of the main table, lowest metric first.
    pub fn default_gateways(&self) -> Result<DefaultGateways, TunError> {
        let mut out = DefaultGateways::default();
        for family in [AF_INET, AF_INET6] {
            let op = "dump the routing table".to_owned();
            let msgs = self.exchange(&op, &encode_dump(RTM_GETROUTE, family), true)?;
            let best = msgs
                .iter()
                .filter(|(t, _)| *t == RTM_NEWROUTE)
                .filter_map(|(_, body)| parse_route(body))
                .filter(|r| r.table == RT_TABLE_MAIN && r.prefix == 0 && r.kind == RTN_UNICAST)
                .min_by_key(|r| r.metric.unwrap_or(0));
            let info = best.map(|r| self.info(&r));
            if family == AF_INET {
                out.v4 = info;
            } else {
                out.v6 = info;
            }
        }
        Ok(out)
    }

    /// The routes of the main table (both families), for tests and diagnostics.
    pub fn routes(&self) -> Result<Vec<RouteMsg>, TunError> {
        let mut out = Vec::new();
        for family in [AF_INET, AF_INET6] {
            let op = "dump the routing table".to_owned();
            for (t, body) in self.exchange(&op, &encode_dump(RTM_GETROUTE, family), true)? {
                if t != RTM_NEWROUTE {
                    continue;
                }
                if let Some(r) = parse_route(&body).filter(|r| r.table == RT_TABLE_MAIN) {
                    out.push(RouteMsg {
                        dest: r.dest,
                        prefix: r.prefix,
                        gateway: r.gateway,
                        ifindex: r.oif.unwrap_or(0),
                        metric: r.metric,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The addresses (with prefix lengths) of interface `ifindex`.
    pub fn addresses(&self, ifindex: u32) -> Result<Vec<(IpAddr, u8)>, TunError> {
        let mut out = Vec::new();
        for family in [AF_INET, AF_INET6] {
            let op = format!("list the addresses of link {ifindex}");
            for (t, body) in self.exchange(&op, &encode_dump(RTM_GETADDR, family), true)? {
                if t != RTM_NEWADDR {
                    continue;
                }
                if let Some((idx, a, p)) = parse_addr(&body) {
                    if idx == ifindex {
                        out.push((a, p));
                    }
                }
            }
        }
        Ok(out)
    }

    fn info(&self, r: &ParsedRoute) -> RouteInfo {
        let ifindex = r.oif.unwrap_or(0);
        RouteInfo {
            gateway: r.gateway,
            ifindex,
            ifname: self.link_name(ifindex).unwrap_or_default(),
            source: r.prefsrc,
            metric: r.metric,
        }
    }

    fn ack(&self, op: &str, msg: Vec<u8>) -> Result<(), TunError> {
        tracing::debug!(%op, "netlink");
        self.exchange(op, &msg, false).map(|_| ())
    }

    /// Sends one request and collects the answers until the ACK, `NLMSG_DONE`, or (for a
    /// plain GET) the first answer.
    fn exchange(&self, op: &str, msg: &[u8], dump: bool) -> Result<Vec<(u16, Vec<u8>)>, TunError> {
        let fail = |source: io::Error| TunError::Netlink {
            op: op.to_owned(),
            source,
        };
        let sock = Socket::open().map_err(fail)?;
        sock.send(msg).map_err(fail)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = sock.recv(&mut buf).map_err(fail)?;
            for (t, body) in split_messages(&buf[..n]) {
                match t {
                    NLMSG_ERROR => {
                        let code = body
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(-libc::EIO);
                        if code == 0 {
                            return Ok(out);
                        }
                        return Err(fail(io::Error::from_raw_os_error(-code)));
                    }
                    NLMSG_DONE => return Ok(out),
                    _ => {
                        out.push((t, body.to_vec()));
                        if !dump && msg_flags(msg) & NLM_F_ACK == 0 {
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }
}

fn describe(r: &RouteMsg) -> String {
    let mut s = format!("{}/{}", r.dest, r.prefix);
    if let Some(g) = r.gateway {
        s.push_str(&format!(" via {g}"));
    }
    s.push_str(&format!(" dev #{}", r.ifindex));
    if let Some(m) = r.metric {
        s.push_str(&format!(" metric {m}"));
    }
    s
}

fn msg_flags(msg: &[u8]) -> u16 {
    msg.get(6..8)
        .map(|b| u16::from_ne_bytes([b[0], b[1]]))
        .unwrap_or(0)
}

/// One netlink socket, closed on drop.
struct Socket(OwnedFd);

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` was just returned by socket(2) and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: `tv` is a live timeval and the length passed is its size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::from_ref(&tv).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket(fd))
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: an all-zero sockaddr_nl is valid; we then set its family (pid 0 = kernel).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `msg` is readable for its length; `addr` is a live sockaddr_nl of the
        // given size.
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                std::ptr::from_ref(&addr).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is writable for its length for the whole call.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

// ---- pure encoding -------------------------------------------------------------------------

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn header(buf: &mut Vec<u8>, kind: u16, flags: u16) {
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by finish()
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
}

fn attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align4(buf.len()), 0);
}

fn finish(mut buf: Vec<u8>) -> Vec<u8> {
    let len = buf.len() as u32;
    buf[..4].copy_from_slice(&len.to_ne_bytes());
    buf
}

fn ip_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn family(a: IpAddr) -> u8 {
    if a.is_ipv4() { AF_INET } else { AF_INET6 }
}

/// `RTM_NEWLINK` for an existing link: optionally set the MTU, optionally set `IFF_UP`.
pub(crate) fn encode_link(ifindex: u32, mtu: Option<u32>, up: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(40);
    header(&mut b, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK);
    b.push(libc::AF_UNSPEC as u8);
    b.push(0);
    b.extend_from_slice(&0u16.to_ne_bytes()); // type
    b.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    let (flags, change) = if up { (IFF_UP, IFF_UP) } else { (0, 0) };
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&change.to_ne_bytes());
    if let Some(mtu) = mtu {
        attr(&mut b, IFLA_MTU, &mtu.to_ne_bytes());
    }
    finish(b)
}

/// `RTM_NEWADDR` / `RTM_DELADDR` with `IFA_LOCAL` and `IFA_ADDRESS` both set (as `ip addr`).
pub(crate) fn encode_addr(kind: u16, ifindex: u32, addr: IpAddr, prefix: u8) -> Vec<u8> {
    let mut b = Vec::with_capacity(48);
    let flags = if kind == RTM_NEWADDR {
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    } else {
        NLM_F_REQUEST | NLM_F_ACK
    };
    header(&mut b, kind, flags);
    b.extend_from_slice(&[family(addr), prefix, 0, RT_SCOPE_UNIVERSE]);
    b.extend_from_slice(&ifindex.to_ne_bytes());
    attr(&mut b, IFA_LOCAL, &ip_bytes(addr));
    attr(&mut b, IFA_ADDRESS, &ip_bytes(addr));
    finish(b)
}

/// `RTM_NEWROUTE` / `RTM_DELROUTE` in the main table.
pub(crate) fn encode_route(kind: u16, r: &RouteMsg) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    let flags = if kind == RTM_NEWROUTE {
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    } else {
        NLM_F_REQUEST | NLM_F_ACK
    };
    header(&mut b, kind, flags);
    // Like iproute2: an IPv4 route without a gateway is scope link; a delete matches any
    // scope (the kernel compares the scope unless it is RT_SCOPE_NOWHERE).
    let scope = if kind == RTM_DELROUTE {
        RT_SCOPE_NOWHERE
    } else if r.dest.is_ipv4() && r.gateway.is_none() {
        RT_SCOPE_LINK
    } else {
        RT_SCOPE_UNIVERSE
    };
    let protocol = if kind == RTM_NEWROUTE {
        RTPROT_STATIC
    } else {
        0
    };
    b.extend_from_slice(&[
        family(r.dest),
        r.prefix,
        0,
        0,
        RT_TABLE_MAIN,
        protocol,
        scope,
        RTN_UNICAST,
    ]);
    b.extend_from_slice(&0u32.to_ne_bytes());
    attr(&mut b, RTA_DST, &ip_bytes(r.dest));
    if let Some(g) = r.gateway {
        attr(&mut b, RTA_GATEWAY, &ip_bytes(g));
    }
    attr(&mut b, RTA_OIF, &r.ifindex.to_ne_bytes());
    if let Some(m) = r.metric {
        attr(&mut b, RTA_PRIORITY, &m.to_ne_bytes());
    }
    finish(b)
}

/// `RTM_GETROUTE` for one destination (a look-up, not a dump).
pub(crate) fn encode_route_get(dest: IpAddr) -> Vec<u8> {
    let mut b = Vec::with_capacity(48);
    header(&mut b, RTM_GETROUTE, NLM_F_REQUEST);
    let bits = if dest.is_ipv4() { 32 } else { 128 };
    b.extend_from_slice(&[family(dest), bits, 0, 0, 0, 0, 0, 0]);
    b.extend_from_slice(&0u32.to_ne_bytes());
    attr(&mut b, RTA_DST, &ip_bytes(dest));
    finish(b)
}

/// A dump request (`RTM_GETROUTE` / `RTM_GETADDR`) for one address family.
pub(crate) fn encode_dump(kind: u16, fam: u8) -> Vec<u8> {
    let mut b = Vec::with_capacity(32);
    header(&mut b, kind, NLM_F_REQUEST | NLM_F_DUMP);
    if kind == RTM_GETROUTE {
        b.extend_from_slice(&[fam, 0, 0, 0, 0, 0, 0, 0]);
        b.extend_from_slice(&0u32.to_ne_bytes());
    } else {
        b.extend_from_slice(&[fam, 0, 0, 0]);
        b.extend_from_slice(&0u32.to_ne_bytes());
    }
    finish(b)
}

// ---- pure parsing --------------------------------------------------------------------------

/// Splits a receive buffer into (type, body) pairs; stops at the first malformed header.
fn split_messages(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDR {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDR || len > buf.len() {
            break;
        }
        out.push((kind, &buf[NLMSG_HDR..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[4..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

fn ip_from(fam: u8, b: &[u8]) -> Option<IpAddr> {
    match fam {
        AF_INET => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        AF_INET6 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

fn u32_from(b: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(b).ok().map(u32::from_ne_bytes)
}

#[derive(Debug, PartialEq, Eq)]
struct ParsedRoute {
    dest: IpAddr,
    prefix: u8,
    table: u8,
    kind: u8,
    gateway: Option<IpAddr>,
    oif: Option<u32>,
    prefsrc: Option<IpAddr>,
    metric: Option<u32>,
}

fn parse_route(body: &[u8]) -> Option<ParsedRoute> {
    let hdr = body.get(..12)?;
    let fam = hdr[0];
    let unspecified = if fam == AF_INET {
        IpAddr::from([0u8; 4])
    } else {
        IpAddr::from([0u8; 16])
    };
    let mut r = ParsedRoute {
        dest: unspecified,
        prefix: hdr[1],
        table: hdr[4],
        kind: hdr[7],
        gateway: None,
        oif: None,
        prefsrc: None,
        metric: None,
    };
    for (k, v) in attrs(&body[12..]) {
        match k {
            RTA_DST => r.dest = ip_from(fam, v)?,
            RTA_GATEWAY => r.gateway = ip_from(fam, v),
            RTA_OIF => r.oif = u32_from(v),
            RTA_PREFSRC => r.prefsrc = ip_from(fam, v),
            RTA_PRIORITY => r.metric = u32_from(v),
            RTA_TABLE => {
                if let Some(t) = u32_from(v) {
                    r.table = u8::try_from(t).unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    Some(r)
}

fn parse_addr(body: &[u8]) -> Option<(u32, IpAddr, u8)> {
    let hdr = body.get(..8)?;
    let fam = hdr[0];
    let prefix = hdr[1];
    let index = u32_from(&hdr[4..8])?;
    let mut local = None;
    let mut address = None;
    for (k, v) in attrs(&body[8..]) {
        match k {
            IFA_LOCAL => local = ip_from(fam, v),
            IFA_ADDRESS => address = ip_from(fam, v),
            _ => {}
        }
    }
    Some((index, local.or(address)?, prefix))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn ne16(v: u16) -> [u8; 2] {
        v.to_ne_bytes()
    }

    #[test]
    fn link_message_sets_mtu_and_up() {
        let m = encode_link(7, Some(1400), true);
        assert_eq!(m.len(), 16 + 16 + 8);
        assert_eq!(&m[..4], &(40u32).to_ne_bytes());
        assert_eq!(&m[4..6], &ne16(RTM_NEWLINK));
        assert_eq!(&m[6..8], &ne16(NLM_F_REQUEST | NLM_F_ACK));
        assert_eq!(&m[20..24], &7i32.to_ne_bytes());
        assert_eq!(&m[24..28], &1u32.to_ne_bytes()); // IFF_UP
        assert_eq!(&m[28..32], &1u32.to_ne_bytes()); // change mask
        assert_eq!(&m[32..34], &ne16(8));
        assert_eq!(&m[34..36], &ne16(IFLA_MTU));
        assert_eq!(&m[36..40], &1400u32.to_ne_bytes());
    }

    #[test]
    fn route_message_has_dst_gateway_oif_metric() {
        let r = RouteMsg {
            dest: Ipv4Addr::new(198, 51, 100, 7).into(),
            prefix: 32,
            gateway: Some(Ipv4Addr::new(192, 0, 2, 1).into()),
            ifindex: 3,
            metric: Some(50),
        };
        let m = encode_route(RTM_NEWROUTE, &r);
        // header 16 + rtmsg 12 + 4 attributes of 8 bytes
        assert_eq!(m.len(), 16 + 12 + 32);
        assert_eq!(
            &m[16..28],
            &[AF_INET, 32, 0, 0, 254, RTPROT_STATIC, 0, 1, 0, 0, 0, 0]
        );
        let parsed = parse_route(&m[16..]).expect("parse");
        assert_eq!(parsed.dest, r.dest);
        assert_eq!(parsed.gateway, r.gateway);
        assert_eq!(parsed.oif, Some(3));
        assert_eq!(parsed.metric, Some(50));
        assert_eq!(parsed.prefix, 32);
        // v4 without a gateway is scope link, v6 never is.
        let dev = RouteMsg {
            gateway: None,
            ..r.clone()
        };
        assert_eq!(encode_route(RTM_NEWROUTE, &dev)[22], RT_SCOPE_LINK);
        let v6 = RouteMsg {
            dest: Ipv6Addr::UNSPECIFIED.into(),
            prefix: 1,
            gateway: None,
            ifindex: 3,
            metric: None,
        };
        let m6 = encode_route(RTM_DELROUTE, &v6);
        assert_eq!(m6[16], AF_INET6);
        assert_eq!(m6[22], RT_SCOPE_NOWHERE);
        assert_eq!(encode_route(RTM_NEWROUTE, &v6)[22], RT_SCOPE_UNIVERSE);
        assert_eq!(m6.len(), 16 + 12 + 20 + 8);
    }

    #[test]
    fn address_and_dump_messages() {
        let m = encode_addr(RTM_NEWADDR, 9, Ipv6Addr::LOCALHOST.into(), 64);
        assert_eq!(&m[16..20], &[AF_INET6, 64, 0, 0]);
        assert_eq!(
            parse_addr(&m[16..]),
            Some((9, Ipv6Addr::LOCALHOST.into(), 64))
        );
        let d = encode_dump(RTM_GETROUTE, AF_INET6);
        assert_eq!(d.len(), 28);
        assert_eq!(&d[6..8], &ne16(NLM_F_REQUEST | NLM_F_DUMP));
        let g = encode_route_get(Ipv4Addr::new(8, 8, 4, 4).into());
        assert_eq!(g[17], 32);
        assert_eq!(&g[g.len() - 4..], &[8, 8, 4, 4]);
    }

    #[test]
    fn split_stops_at_garbage() {
        let mut two = encode_dump(RTM_GETADDR, AF_INET);
        two.extend(encode_link(1, None, true));
        let parts = split_messages(&two);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].0, RTM_NEWLINK);
        assert!(split_messages(&[0xff; 15]).is_empty());
        let mut bad = encode_link(1, None, true);
        bad[0] = 0xff; // length past the buffer
        assert!(split_messages(&bad).is_empty());
        assert!(parse_route(&[0; 5]).is_none());
    }
}
