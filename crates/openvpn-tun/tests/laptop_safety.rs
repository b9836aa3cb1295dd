//! Root-only: routes, crash recovery, resolv.conf and block-ipv6 in namespaces of our own.
//!
//! ```text
//!   ovrs5-c-PID (the laptop)                      ovrs5-i-PID (the internet)
//!   v0 10.55.0.2/24 fd55::2/64  ── veth ──  v1 10.55.0.1/24 fd55::1/64
//!   default via 10.55.0.1 / fd55::1               lo: 10.55.1.1 fd55:1::1 (the VPN server)
//!   ovrs5-tun (our tun device)
//! ```
//! Nothing is sent outside the two namespaces: `ip route get` sends no packet, and the only
//! datagram (block-ipv6) ends in our tun device. Both namespaces and /etc/netns/<ns> are
//! removed on drop, also when a check panics. Run: `sudo cargo test -p openvpn-tun --test
//! laptop_safety -- --nocapture`.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::net::{IpAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use openvpn_tun::route::{self, Redirect, RoutePlanInput};
use openvpn_tun::{
    DnsBackend, DnsSettings, LinuxTun, Netlink, PacketDevice, RouteManager, TunConfig, icmp,
};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces of ours; deleted (with /etc/netns/<ns>) on drop.
struct Lab {
    client: String,
    inet: String,
    dir: PathBuf,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let pid = std::process::id();
        let lab = Lab {
            client: format!("ovrs5-c{tag}-{pid}"),
            inet: format!("ovrs5-i{tag}-{pid}"),
            dir: std::env::temp_dir().join(format!("ovrs5-{tag}-{pid}")),
        };
        lab.remove();
        std::fs::create_dir_all(&lab.dir).unwrap();
        let (c, i) = (lab.client.as_str(), lab.inet.as_str());
        ip(&["netns", "add", c]);
        ip(&["netns", "add", i]);
        ip(&[
            "-n", c, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", i,
        ]);
        for (ns, dev, a4, a6) in [
            (c, "v0", "10.55.0.2/24", "fd55::2/64"),
            (i, "v1", "10.55.0.1/24", "fd55::1/64"),
        ] {
            ip(&["-n", ns, "addr", "add", a4, "dev", dev]);
            ip(&["-n", ns, "addr", "add", a6, "dev", dev, "nodad"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&["-n", i, "addr", "add", "10.55.1.1/32", "dev", "lo"]);
        ip(&["-n", i, "addr", "add", "fd55:1::1/128", "dev", "lo"]);
        ip(&["-n", c, "route", "add", "default", "via", "10.55.0.1"]);
        ip(&["-n", c, "-6", "route", "add", "default", "via", "fd55::1"]);
        let etc = Path::new("/etc/netns").join(c);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("resolv.conf"),
            "nameserver 10.55.0.1\noptions ndots:2\n",
        )
        .unwrap();
        lab
    }

    fn remove(&self) {
        for ns in [&self.client, &self.inet] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// `ip route`, `ip -6 route`, `ip rule`, `ip -6 rule` of the client namespace.
    fn snapshot(&self) -> String {
        let c = self.client.as_str();
        [
            ip(&["-n", c, "route"]),
            ip(&["-n", c, "-6", "route"]),
            ip(&["-n", c, "rule"]),
            ip(&["-n", c, "-6", "rule"]),
        ]
        .join("----\n")
    }

    fn route_get(&self, dest: &str) -> String {
        ip(&["-n", &self.client, "route", "get", dest])
    }

    fn resolv_conf(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.client, "cat", "/etc/resolv.conf"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` in a thread that joined the client namespace, with a tokio runtime.
    fn inside<F: FnOnce(&Lab, &tokio::runtime::Runtime) + Send>(&self, f: F) {
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                let nsfile = File::open(format!("/run/netns/{}", self.client)).unwrap();
                // SAFETY: an open netns fd; setns moves only this short-lived thread.
                let rc = unsafe { libc::setns(nsfile.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let _guard = rt.enter();
                f(self, &rt);
            });
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p);
            }
        });
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.remove();
    }
}

fn p(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const SERVER4: &str = "10.55.1.1";
const SERVER6: &str = "fd55:1::1";

fn tun() -> LinuxTun {
    LinuxTun::create(&TunConfig {
        name: Some("ovrs5-tun".into()),
        mtu: 1400,
        ipv4: Some(("10.8.5.2".parse().unwrap(), 24)),
        ipv6: Some(("fd08:5::2".parse().unwrap(), 64)),
        ..TunConfig::default()
    })
    .unwrap()
}

/// The redirect-gateway def1 + ipv6 plan for a server at `server`.
fn redirect_plan(server: IpAddr) -> Vec<openvpn_tun::RouteSpec> {
    let r = Redirect::from_flags(&["def1", "ipv6"]);
    let routes = r
        .routes_v4()
        .into_iter()
        .map(|(n, p)| (IpAddr::from(n), p, None))
        .chain(
            r.routes_v6()
                .into_iter()
                .map(|(n, p)| (IpAddr::from(n), p, None)),
        )
        .collect();
    let input = RoutePlanInput {
        tun: "ovrs5-tun".into(),
        server: Some(server),
        server_route: Some(Netlink::new().route_get(server).unwrap()),
        routes,
        redirect: Some(r),
        ..Default::default()
    };
    route::plan(&input)
}

fn assert_redirected(lab: &Lab, server: &str, via: &str) {
    for outside in ["203.0.113.5", "2001:db8:5::5"] {
        let r = lab.route_get(outside);
        assert!(
            r.contains("dev ovrs5-tun"),
            "{outside} should use the tunnel: {r}"
        );
    }
    let r = lab.route_get(server);
    assert!(
        r.contains(&format!("via {via} dev v0")),
        "server route: {r}"
    );
}

#[test]
fn redirect_gateway_cleanup_and_crash_recovery() {
    if !is_root() {
        println!("skipped: needs root");
        return;
    }
    let lab = Lab::new("r");
    let pristine = lab.snapshot();
    lab.inside(|lab, _| {
        for (server, via) in [(SERVER4, "10.55.0.1"), (SERVER6, "fd55::1")] {
            // Normal run: install, check, cleanup -> routes and rules as before.
            let tun = tun();
            let before = lab.snapshot();
            let plan = redirect_plan(p(server));
            assert_eq!(plan[0].dev, "v0", "{plan:?}");
            let journal = lab.dir.join("ovrs5-tun.journal");
            let mut m = RouteManager::new("ovrs5-tun", &journal).unwrap();
            m.install_all(&plan).unwrap();
            assert_eq!(m.entries().len(), 5);
            assert_redirected(lab, server, via);
            let conf = PathBuf::from(format!("/etc/netns/{}/resolv.conf", lab.client));
            let dns = DnsSettings {
                servers: vec![p("10.8.5.1"), p("fd08:5::1")],
                search_domains: vec!["vpn.example".into()],
                default_route: true,
            };
            m.apply_dns(tun.ifindex(), &dns, &DnsBackend::ResolvConf(conf))
                .unwrap();
            let rc = lab.resolv_conf();
            assert!(
                rc.contains("nameserver 10.8.5.1") && rc.contains("search vpn.example"),
                "{rc}"
            );
            m.cleanup().unwrap();
            assert_eq!(lab.snapshot(), before);
            assert_eq!(lab.resolv_conf(), "nameserver 10.55.0.1\noptions ndots:2\n");
            assert!(!journal.exists());

            // Crash: the process dies (manager forgotten, tun closed by the kernel).
            let mut m = RouteManager::new("ovrs5-tun", &journal).unwrap();
            m.install_all(&plan).unwrap();
            m.apply_dns(
                tun.ifindex(),
                &dns,
                &DnsBackend::ResolvConf(format!("/etc/netns/{}/resolv.conf", lab.client).into()),
            )
            .unwrap();
            std::mem::forget(m);
            drop(tun);
            assert!(
                lab.snapshot() != pristine,
                "the server host route outlives the crash"
            );
            let report = RouteManager::recover(&journal).unwrap();
            assert!(report.failed.is_empty(), "{report:?}");
            assert_eq!(lab.snapshot(), pristine);
            assert_eq!(lab.resolv_conf(), "nameserver 10.55.0.1\noptions ndots:2\n");
            assert!(!journal.exists());
        }
        // Drop of an attached manager cleans up with the device.
        let mut tun = tun();
        let before_tun = lab.snapshot();
        let mut m = RouteManager::new("ovrs5-tun", lab.dir.join("d.journal")).unwrap();
        m.install_all(&redirect_plan(p(SERVER4))).unwrap();
        tun.attach_route_manager(m);
        assert!(lab.snapshot() != before_tun);
        drop(tun);
        assert_eq!(lab.snapshot(), pristine);
    });
    // Netlink reads what `ip` shows.
    lab.inside(|_, _| {
        let gw = Netlink::new().default_gateways().unwrap();
        assert_eq!(
            gw.v4.as_ref().map(|g| (g.gateway, g.ifname.as_str())),
            Some((Some(p("10.55.0.1")), "v0"))
        );
        assert_eq!(
            gw.v6.as_ref().map(|g| (g.gateway, g.ifname.as_str())),
            Some((Some(p("fd55::1")), "v0"))
        );
    });
}

#[test]
fn block_ipv6_answers_with_icmpv6_no_route() {
    if !is_root() {
        println!("skipped: needs root");
        return;
    }
    let lab = Lab::new("b");
    lab.inside(|lab, rt| {
        let tun = LinuxTun::create(&TunConfig {
            name: Some("ovrs5-tun".into()),
            mtu: 1400,
            ipv4: Some(("10.8.5.2".parse().unwrap(), 24)),
            ..TunConfig::default()
        })
        .unwrap();
        let input = RoutePlanInput {
            tun: "ovrs5-tun".into(),
            block_ipv6: true,
            ..Default::default()
        };
        let mut m = RouteManager::new("ovrs5-tun", lab.dir.join("b.journal")).unwrap();
        m.install_all(&route::plan(&input)).unwrap();
        let r = lab.route_get("2001:db8:5::5");
        assert!(r.contains("dev ovrs5-tun"), "{r}");

        let sock = UdpSocket::bind("[::]:0").unwrap();
        sock.connect("[2001:db8:5::5]:9").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        // "No route" is a soft error: a UDP socket sees it with IPV6_RECVERR (a connecting
        // TCP socket fails with it at once).
        let on: libc::c_int = 1;
        // SAFETY: a live socket and a c_int option value of the given size.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_RECVERR,
                std::ptr::from_ref(&on).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        sock.send(b"leak?").unwrap();
        let answer = rt.block_on(async {
            let mut buf = vec![0u8; 2000];
            tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    let n = tun.recv(&mut buf).await.unwrap();
                    let pkt = &buf[..n];
                    // Our datagram (skip MLD/RS noise): UDP to 2001:db8:5::5.
                    if pkt[0] >> 4 == 6
                        && pkt[6] == 17
                        && pkt[24..40]
                            == p("2001:db8:5::5")
                                .to_string()
                                .parse::<std::net::Ipv6Addr>()
                                .unwrap()
                                .octets()
                    {
                        return icmp::unreachable_v6(pkt).unwrap();
                    }
                }
            })
            .await
            .unwrap()
        });
        rt.block_on(tun.send(&answer)).unwrap();
        let mut b = [0u8; 64];
        let err = sock
            .recv(&mut b)
            .expect_err("the kernel must deliver the ICMPv6 error");
        assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err}");
        m.cleanup().unwrap();
    });
}
