//! A Linux tun device: `/dev/net/tun` with `IFF_TUN | IFF_NO_PI`, non-blocking, driven by tokio.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;

use crate::netlink::{Netlink, RouteMsg};
use crate::route::mask;
use crate::{PacketDevice, RouteManager, TunConfig, TunError};

/// `_IOW('T', 202, int)` from `<linux/if_tun.h>`.
const TUNSETIFF: u32 = 0x4004_54ca;
/// `_IOR('T', 210, unsigned int)`: the name and flags of the device behind a tun fd.
const TUNGETIFF: u32 = 0x8004_54d2;
/// Layer-3 device: each read/write is one IP packet.
const IFF_TUN: libc::c_short = 0x0001;
/// No 4-byte packet-information header in front of each packet.
const IFF_NO_PI: libc::c_short = 0x1000;
/// Interface name buffer size, including the terminating NUL.
const IFNAMSIZ: usize = 16;

/// The part of `struct ifreq` that `TUNSETIFF` uses, padded to the full 40-byte size.
#[repr(C)]
struct IfReqFlags {
    name: [u8; IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// A Linux tun interface carrying IP packets without a packet-information header.
///
/// The interface exists as long as this value does: dropping it closes the file descriptor
/// and the kernel removes the interface together with its addresses and routes.
///
/// A [`RouteManager`] attached with [`LinuxTun::attach_route_manager`] is cleaned up (routes
/// and DNS undone) when the device is dropped, before the interface goes away.
#[derive(Debug)]
pub struct LinuxTun {
    // Dropped first: undo routes and DNS while the interface still exists.
    routes: Option<RouteManager>,
    fd: AsyncFd<OwnedFd>,
    name: String,
    ifindex: u32,
    commands: Vec<Vec<String>>,
}

impl LinuxTun {
    /// Creates the device and applies `config`: MTU, addresses, link up, then routes.
    ///
    /// Must be called inside a tokio runtime. The settings are applied with rtnetlink
    /// messages (blocking, a few milliseconds); [`LinuxTun::applied_commands`] lists the
    /// equivalent `ip` commands ([`TunConfig::ip_commands`]). On the first failure the device
    /// is removed again and the error names the request and the kernel's answer.
    pub fn create(config: &TunConfig) -> Result<Self, TunError> {
        let mut tun = Self::open(config.name.as_deref())?;
        let commands = config.ip_commands(&tun.name)?; // also checks every prefix length
        let nl = Netlink::new();
        let idx = tun.ifindex;
        nl.set_mtu(idx, u32::from(config.mtu))?;
        if let Some((a, p)) = config.ipv4 {
            nl.add_address(idx, a.into(), p)?;
        }
        if let Some((a, p)) = config.ipv6 {
            nl.add_address(idx, a.into(), p)?;
        }
        nl.set_up(idx)?;
        let v4 = config
            .routes_v4
            .iter()
            .map(|&(n, p, g)| (IpAddr::from(n), p, g.map(IpAddr::from)));
        let v6 = config
            .routes_v6
            .iter()
            .map(|&(n, p, g)| (IpAddr::from(n), p, g.map(IpAddr::from)));
        for (dest, prefix, gateway) in v4.chain(v6) {
            nl.add_route(&RouteMsg {
                dest: mask(dest, prefix),
                prefix,
                gateway,
                ifindex: idx,
                metric: None,
            })?;
        }
        tun.commands = commands;
        tracing::info!(dev = %tun.name, mtu = config.mtu, "tun device configured");
        Ok(tun)
    }

    /// Creates a bare, unconfigured (and down) tun device.
    ///
    /// `name` may contain one `%d` for the kernel to number (`ovrs%d`); `None` gives `tun%d`.
    /// Must be called inside a tokio runtime.
    pub fn open(name: Option<&str>) -> Result<Self, TunError> {
        let mut req = IfReqFlags {
            name: [0; IFNAMSIZ],
            flags: IFF_TUN | IFF_NO_PI,
            _pad: [0; 22],
        };
        if let Some(name) = name {
            check_name(name)?;
            req.name[..name.len()].copy_from_slice(name.as_bytes());
        }
        // Fail before opening anything: AsyncFd::new panics without a reactor.
        tokio::runtime::Handle::try_current()
            .map_err(|e| TunError::Runtime(io::Error::other(e)))?;

        let flags = libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC;
        // SAFETY: the path is a NUL-terminated C string literal; `open` has no other
        // preconditions and the result is checked below.
        let raw = unsafe { libc::open(c"/dev/net/tun".as_ptr(), flags) };
        if raw < 0 {
            return Err(TunError::Open(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a file descriptor that `open` just returned and nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        // SAFETY: `fd` is an open tun fd; `req` is a live, initialised buffer at least as large
        // as `struct ifreq`, which TUNSETIFF reads and then writes back (the chosen name).
        let rc =
            unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, std::ptr::from_mut(&mut req)) };
        if rc < 0 {
            return Err(TunError::Ioctl {
                op: "TUNSETIFF",
                source: io::Error::last_os_error(),
            });
        }
        let len = req.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        let name = String::from_utf8_lossy(&req.name[..len]).into_owned();
        let ifindex = Netlink::new().link_index(&name)?;
        // SAFETY: `OwnedFd` keeps the descriptor open and unchanged until the `AsyncFd` that
        // owns it is dropped, and its `as_raw_fd` always returns that same descriptor.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| TunError::Runtime(e.into()))?;
        tracing::debug!(dev = %name, "tun device created");
        Ok(Self {
            routes: None,
            fd,
            name,
            ifindex,
            commands: Vec::new(),
        })
    }

    /// Wraps a tun file descriptor opened by someone else (the privilege-separated helper
    /// passes one over a Unix socket), without a [`RouteManager`]: whoever configured the
    /// device keeps its routes and DNS.
    ///
    /// The descriptor must be a tun device (`TUNGETIFF` answers) named `name` with
    /// `IFF_TUN | IFF_NO_PI`; it is made non-blocking. Must be called inside a tokio runtime.
    pub fn from_fd(fd: OwnedFd, name: &str) -> Result<Self, TunError> {
        tokio::runtime::Handle::try_current()
            .map_err(|e| TunError::Runtime(io::Error::other(e)))?;
        let mut req = IfReqFlags {
            name: [0; IFNAMSIZ],
            flags: 0,
            _pad: [0; 22],
        };
        // SAFETY: `req` is a live, initialised buffer as large as `struct ifreq`, which
        // TUNGETIFF fills; on a descriptor that is not a tun device the ioctl fails (checked).
        let rc =
            unsafe { libc::ioctl(fd.as_raw_fd(), TUNGETIFF as _, std::ptr::from_mut(&mut req)) };
        if rc < 0 {
            return Err(TunError::Ioctl {
                op: "TUNGETIFF",
                source: io::Error::last_os_error(),
            });
        }
        let len = req.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        let actual = String::from_utf8_lossy(&req.name[..len]).into_owned();
        if actual != name {
            return Err(TunError::InvalidName {
                name: name.to_owned(),
                reason: "the descriptor belongs to a tun device of another name",
            });
        }
        if req.flags & (IFF_TUN | IFF_NO_PI) != (IFF_TUN | IFF_NO_PI) {
            return Err(TunError::InvalidName {
                name: name.to_owned(),
                reason: "the device is not IFF_TUN | IFF_NO_PI",
            });
        }
        // SAFETY: F_GETFL/F_SETFL on a descriptor we own; results are checked.
        let rc = unsafe {
            let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            if flags < 0 {
                flags
            } else {
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK)
            }
        };
        if rc < 0 {
            return Err(TunError::Ioctl {
                op: "F_SETFL O_NONBLOCK",
                source: io::Error::last_os_error(),
            });
        }
        let ifindex = Netlink::new().link_index(&actual)?;
        // SAFETY: as in `open`: the `OwnedFd` keeps the descriptor open and unchanged for as
        // long as the `AsyncFd` owns it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| TunError::Runtime(e.into()))?;
        Ok(Self {
            routes: None,
            fd,
            name: actual,
            ifindex,
            commands: Vec::new(),
        })
    }

    /// The interface name the kernel gave the device (for example `tun0`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kernel's interface index of the device.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The `ip` commands equivalent to what [`LinuxTun::create`] applied, in order (empty
    /// after [`LinuxTun::open`]).
    pub fn applied_commands(&self) -> &[Vec<String>] {
        &self.commands
    }

    /// Hands a route manager to the device: its routes and DNS are undone when the device is
    /// dropped (a manager attached earlier is cleaned up now).
    pub fn attach_route_manager(&mut self, manager: RouteManager) {
        self.routes = Some(manager);
    }

    /// The attached route manager.
    pub fn route_manager_mut(&mut self) -> Option<&mut RouteManager> {
        self.routes.as_mut()
    }

    /// Detaches the route manager (it then cleans up when *it* is dropped).
    pub fn take_route_manager(&mut self) -> Option<RouteManager> {
        self.routes.take()
    }
}

/// The tun descriptor, for passing it to another process (the privilege-separated helper
/// sends it with `SCM_RIGHTS`); reading or writing it directly bypasses tokio's readiness.
impl AsFd for LinuxTun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }
}

impl PacketDevice for LinuxTun {
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| read_fd(fd.as_raw_fd(), buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    async fn send(&self, pkt: &[u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| write_fd(fd.as_raw_fd(), pkt)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call, and `fd` is
    // kept open by the `AsyncFd` that lent it to us.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    // The kernel silently truncates a packet to the buffer (older kernels report the full
    // length instead). A full buffer is checked against the IP header's length field.
    if n >= buf.len() {
        let claimed = ip_total_len(&buf[..buf.len().min(n)]).unwrap_or(0);
        let real = n.max(claimed);
        if real > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "tun: buffer of {} bytes is too small for a {real}-byte packet",
                    buf.len()
                ),
            ));
        }
    }
    Ok(n)
}

/// The packet length an IPv4 or IPv6 header claims, if the header is there.
fn ip_total_len(pkt: &[u8]) -> Option<usize> {
    match pkt.first()? >> 4 {
        4 => Some(usize::from(u16::from_be_bytes([
            *pkt.get(2)?,
            *pkt.get(3)?,
        ]))),
        6 => Some(40 + usize::from(u16::from_be_bytes([*pkt.get(4)?, *pkt.get(5)?]))),
        _ => None,
    }
}

fn write_fd(fd: RawFd, pkt: &[u8]) -> io::Result<usize> {
    // SAFETY: `pkt` is valid for reads of `pkt.len()` bytes for the whole call, and `fd` is
    // kept open by the `AsyncFd` that lent it to us.
    let n = unsafe { libc::write(fd, pkt.as_ptr().cast(), pkt.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// The kernel's rules for interface names (`dev_valid_name`), checked up front for a clear error.
fn check_name(name: &str) -> Result<(), TunError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() >= IFNAMSIZ {
        Some("it is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are reserved")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        Some("it contains '/', ':', NUL or whitespace")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TunError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::net::{Ipv4Addr, UdpSocket};
    use std::process::Command;
    use std::time::Duration;

    use super::*;

    #[test]
    fn names_are_checked_before_touching_the_kernel() {
        for bad in ["", "0123456789abcdef", "a/b", "a b", "a:1", ".", ".."] {
            let err = check_name(bad).expect_err(bad);
            assert!(matches!(err, TunError::InvalidName { .. }), "{bad}: {err}");
        }
        for good in ["tun0", "ovrs-tun-srv", "ovrs%d", "0123456789abcde"] {
            check_name(good).expect(good);
        }
    }

    #[test]
    fn open_outside_a_runtime_is_an_error() {
        let err = LinuxTun::open(Some("ovrs-x")).expect_err("no runtime");
        assert!(matches!(err, TunError::Runtime(_)), "{err}");
    }

    #[test]
    fn ip_total_len_reads_v4_and_v6_headers() {
        assert_eq!(ip_total_len(&[0x45, 0, 0x05, 0xdc]), Some(1500));
        assert_eq!(ip_total_len(&[0x60, 0, 0, 0, 0x01, 0x00]), Some(296));
        assert_eq!(ip_total_len(&[0x45, 0]), None);
        assert_eq!(ip_total_len(&[0x10, 0, 0, 0]), None);
        assert_eq!(ip_total_len(&[]), None);
    }

    #[test]
    fn ifreq_has_the_kernel_size() {
        assert_eq!(size_of::<IfReqFlags>(), 40);
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    /// Deletes the namespace when the test ends, also on panic.
    struct Netns(String);

    impl Netns {
        fn add(name: &str) -> Netns {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
            let out = Command::new("ip")
                .args(["netns", "add", name])
                .output()
                .expect("run ip netns add");
            assert!(out.status.success(), "ip netns add {name}: {out:?}");
            Netns(name.to_owned())
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
        }
    }

    fn ip_output(args: &[&str]) -> String {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(out.status.success(), "ip {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn checksum(data: &[u8]) -> u16 {
        let mut sum: u32 = data
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
            .sum();
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// An ICMP echo request from `src` to `dst` with a 4-byte payload.
    fn echo_request(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 32, 0x12, 0x34, 0, 0, 64, 1, 0, 0, // ver/ihl .. proto, csum
        ];
        p.extend(src.octets());
        p.extend(dst.octets());
        let c = checksum(&p);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let mut icmp = vec![8, 0, 0, 0, 0x0b, 0xad, 0, 1, b'o', b'v', b'r', b's'];
        let c = checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        p.extend(icmp);
        p
    }

    /// Reads packets from `tun` until one matches, skipping IPv6 noise (MLD, RS).
    async fn recv_matching(tun: &LinuxTun, want: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let mut buf = vec![0u8; 2000];
        let wait = async {
            loop {
                let n = tun.recv(&mut buf).await.expect("tun recv");
                if want(&buf[..n]) {
                    return buf[..n].to_vec();
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("packet within 5 s")
    }

    fn is_v4(p: &[u8], proto: u8, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        p.len() >= 20
            && p[0] >> 4 == 4
            && p[9] == proto
            && p[12..16] == src.octets()
            && p[16..20] == dst.octets()
    }

    /// Runs in a thread that has joined the test namespace: everything here, including the
    /// `ip` children, sees only that namespace.
    fn checks_inside(ns: &str) {
        let nsfile = File::open(format!("/run/netns/{ns}")).expect("open netns file");
        // SAFETY: `nsfile` is an open network-namespace fd; setns moves only this thread,
        // which exists just for this test.
        let rc = unsafe { libc::setns(nsfile.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let local = Ipv4Addr::new(10, 99, 0, 1);
            let peer = Ipv4Addr::new(10, 99, 0, 2);
            let cfg = TunConfig {
                name: Some("ovrs-tun0".into()),
                mtu: 1400,
                ipv4: Some((local, 24)),
                ipv6: Some(("fd99::1".parse().expect("v6"), 64)),
                routes_v4: vec![(Ipv4Addr::new(10, 98, 0, 0), 24, None)],
                routes_v6: vec![("fd98::".parse().expect("v6"), 64, None)],
            };
            let tun = LinuxTun::create(&cfg).expect("create tun");
            assert_eq!(tun.name(), "ovrs-tun0");
            assert_eq!(
                tun.applied_commands(),
                cfg.ip_commands("ovrs-tun0").expect("cmds")
            );

            let addr = ip_output(&["-n", ns, "addr", "show", "dev", "ovrs-tun0"]);
            for want in ["10.99.0.1/24", "fd99::1/64", "mtu 1400", "UP"] {
                assert!(addr.contains(want), "missing {want} in:\n{addr}");
            }
            let routes = ip_output(&["-n", ns, "route"]);
            assert!(routes.contains("10.98.0.0/24 dev ovrs-tun0"), "{routes}");

            // OS -> tun: a datagram to the peer, and one to the routed network.
            let sock = UdpSocket::bind((local, 0)).expect("bind udp");
            sock.send_to(b"to peer", (peer, 5555)).expect("send");
            recv_matching(&tun, |p| is_v4(p, 17, local, peer)).await;
            let routed = Ipv4Addr::new(10, 98, 0, 5);
            sock.send_to(b"routed", (routed, 5555)).expect("send");
            recv_matching(&tun, |p| is_v4(p, 17, local, routed)).await;

            // tun -> OS: the kernel answers an echo request written by us.
            let req = echo_request(peer, local);
            assert_eq!(tun.send(&req).await.expect("tun send"), req.len());
            let reply = recv_matching(&tun, |p| is_v4(p, 1, local, peer) && p[20] == 0).await;
            assert_eq!(&reply[28..], b"ovrs");

            // A packet larger than the buffer is an error, never a length past the buffer.
            sock.send_to(&[0u8; 200], (peer, 5555)).expect("send");
            let mut small = [0u8; 64];
            let read_small = async {
                loop {
                    match tun.recv(&mut small).await {
                        Ok(n) => assert!(n < small.len(), "no truncated packet as Ok"),
                        Err(e) => break e,
                    }
                }
            };
            let err = tokio::time::timeout(Duration::from_secs(5), read_small)
                .await
                .expect("error within 5 s");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");

            // A failing request names itself and carries the kernel's answer; the device is gone.
            let bad = TunConfig {
                name: Some("ovrs-tun1".into()),
                routes_v4: vec![(
                    Ipv4Addr::new(10, 97, 0, 0),
                    24,
                    Some(Ipv4Addr::new(192, 0, 2, 1)),
                )],
                ..TunConfig::default()
            };
            match LinuxTun::create(&bad) {
                Err(TunError::Netlink { op, source }) => {
                    assert!(
                        op.starts_with("add route 10.97.0.0/24 via 192.0.2.1 dev #"),
                        "{op}"
                    );
                    assert!(source.raw_os_error().is_some(), "{source}");
                }
                other => panic!("expected a netlink error, got {other:?}"),
            }
            let links = ip_output(&["-n", ns, "link"]);
            assert!(!links.contains("ovrs-tun1"), "{links}");

            // A kernel-chosen name.
            let auto = LinuxTun::open(None).expect("open unnamed");
            assert!(auto.name().starts_with("tun"), "{}", auto.name());
        });
    }

    #[test]
    fn linux_tun_in_a_fresh_netns() {
        if !is_root() {
            println!("skipped: needs root/netns");
            return;
        }
        let name = format!("ovrs-tuntest-{}", std::process::id());
        let ns = Netns::add(&name);
        let inner = ns.0.clone();
        let result = std::thread::spawn(move || checks_inside(&inner)).join();
        drop(ns);
        let list = ip_output(&["netns", "list"]);
        assert!(!list.contains(&name), "namespace left behind: {list}");
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }
}
