//! Root-only: the privilege-separated helper serving an unprivileged client, in a network
//! namespace of our own.
//!
//! ```text
//!  ovrs7-h-PID (namespace; /etc/netns/ovrs7-h-PID/resolv.conf is its resolv.conf)
//!   openvpn-client helper --socket DIR/sock/helper.sock --profiles DIR/profiles   (root)
//!   this test binary, re-run as uid 65534 (setpriv) with OVRS7_PROBE set: the probe
//!     HelperTunBuilder → OK tun + fd; ping through the fd; a forbidden route → ERR;
//!     a profile outside the directory → ERR; a server that is no remote → ERR
//!   kill -9 of the probe → the helper removes routes, DNS, journal and the device
//! ```
//! DIR = /tmp/ovrs7-PID (0755, root). The namespace, /etc/netns/<ns>, DIR and the helper are
//! removed on drop, also when a check panics. Nothing leaves the namespace: the only packets
//! are an ICMP echo written into our tun and the kernel's answer.
//!
//! Run: `sudo cargo test -p openvpn-client --test privsep -- --nocapture`.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openvpn_client::{HelperTunBuilder, TunBuilder, TunSettings};
use openvpn_tun::PacketDevice;

const PROBE_ENV: &str = "OVRS7_PROBE";
const CA: &str = "<ca>\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n</ca>\n";

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Our namespace, directory and helper process; all removed on drop.
struct Lab {
    ns: String,
    dir: PathBuf,
    helper: Option<Child>,
    probe: Option<Child>,
}

impl Lab {
    fn etc(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.ns)
    }

    fn remove(&mut self) {
        for child in [self.probe.take(), self.helper.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = std::fs::remove_dir_all(self.etc());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.remove();
    }
}

fn mkdir(p: &Path) {
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn helper_serves_an_unprivileged_client_and_cleans_up_after_kill_9() {
    if std::env::var_os(PROBE_ENV).is_some() {
        return; // we are the probe's process; see `probe`
    }
    if openvpn_tun::fdpass::euid() != 0 {
        println!("skipped: needs root");
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        println!("skipped: needs setpriv (util-linux)");
        return;
    }
    let pid = std::process::id();
    let mut lab = Lab {
        ns: format!("ovrs7-h-{pid}"),
        dir: PathBuf::from(format!("/tmp/ovrs7-{pid}")),
        helper: None,
        probe: None,
    };
    lab.remove();
    ip(&["netns", "add", &lab.ns]);
    std::fs::create_dir_all(lab.etc()).unwrap();
    let resolv = lab.etc().join("resolv.conf");
    let original = "nameserver 192.0.2.53\noptions ndots:2\n";
    std::fs::write(&resolv, original).unwrap();

    let (profiles, outside, sockdir, run) = (
        lab.dir.join("profiles"),
        lab.dir.join("outside"),
        lab.dir.join("sock"),
        lab.dir.join("run"),
    );
    for d in [&lab.dir, &profiles, &outside, &sockdir] {
        mkdir(d);
    }
    let profile = format!(
        "client\ndev tun\nremote 192.0.2.1 1194\n{CA}pull-filter ignore \"route 10.66.\"\ndhcp-option DNS 10.8.0.53\n"
    );
    let allowed = profiles.join("allowed.ovpn");
    std::fs::write(&allowed, &profile).unwrap();
    let other = outside.join("other.ovpn");
    std::fs::write(&other, &profile).unwrap();
    let sock = sockdir.join("helper.sock");

    let log = std::fs::File::create(lab.dir.join("helper.log")).unwrap();
    let helper = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns,
            env!("CARGO_BIN_EXE_openvpn-client"),
            "helper",
        ])
        .arg("--socket")
        .arg(&sock)
        .arg("--profiles")
        .arg(&profiles)
        .env("OPENVPN_RS_RUN_DIR", &run)
        .env("OPENVPN_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start the helper");
    lab.helper = Some(helper);
    wait_until("the helper's socket", || sock.exists());

    let exe = std::env::current_exe().unwrap();
    let mut probe = Command::new("ip")
        .args(["netns", "exec", &lab.ns])
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ])
        .arg(&exe)
        .args(["--exact", "probe", "--nocapture", "--test-threads=1"])
        .env(PROBE_ENV, "1")
        .env("OVRS7_SOCKET", &sock)
        .env("OVRS7_PROFILE", &allowed)
        .env("OVRS7_OUTSIDE", &other)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the probe");
    let out = probe.stdout.take().unwrap();
    lab.probe = Some(probe);
    let mut lines = Vec::new();
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        println!("{line}");
        if line.ends_with("PROBE ready") {
            break;
        }
        // The harness prints "test probe ... " without a line break before our first line.
        if let Some(i) = line.find("PROBE ") {
            lines.push(line[i + 6..].to_owned());
        }
    }
    let log_path = lab.dir.join("helper.log");
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let find = |prefix: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no '{prefix}' from the probe: {lines:?}\n{}", log_text()))
    };
    assert_eq!(find("uid "), "65534", "the probe runs unprivileged");
    let dev = find("ok ");
    assert!(dev.starts_with("tun"), "{dev}");
    assert_eq!(find("echo "), "ok", "the passed fd carries packets");
    let forbidden = find("forbidden ");
    assert!(
        forbidden.contains("route 10.66.0.0/16 not allowed by profile")
            && forbidden.contains("pull-filter ignore"),
        "{forbidden}"
    );
    assert!(find("outside ").contains("not inside"), "outside profile");
    assert!(find("server ").contains("not a remote"), "unknown server");

    // While the probe holds its connection: device, address, route, DNS, journal.
    let addr = ip(&["-n", &lab.ns, "addr", "show", "dev", &dev]);
    for want in ["10.8.0.2/24", "UP", "mtu 1400"] {
        assert!(addr.contains(want), "missing {want}:\n{addr}");
    }
    let routes = ip(&["-n", &lab.ns, "route"]);
    assert!(
        routes.contains(&format!("10.77.0.0/16 dev {dev}")),
        "{routes}"
    );
    assert!(!routes.contains("10.66."), "{routes}");
    let dns = std::fs::read_to_string(&resolv).unwrap();
    assert!(dns.contains("nameserver 10.8.0.53"), "{dns}");
    let journal = run.join(format!("{dev}.journal"));
    assert!(journal.exists(), "journal {}", journal.display());
    let log = log_text();
    assert!(
        log.contains("uid=65534") && log.contains("tunnel established"),
        "the helper logs the peer and the change:\n{log}"
    );

    // kill -9: the socket closes, the helper undoes everything.
    let mut probe = lab.probe.take().unwrap();
    probe.kill().unwrap();
    probe.wait().unwrap();
    wait_until("the device to disappear", || {
        !ip(&["-n", &lab.ns, "link"]).contains(&dev)
    });
    let routes = ip(&["-n", &lab.ns, "route"]);
    assert!(!routes.contains("10.77."), "{routes}");
    wait_until("the journal to go", || !journal.exists());
    assert_eq!(std::fs::read_to_string(&resolv).unwrap(), original);
    assert!(log_text().contains("client gone"), "{}", log_text());
    lab.remove();
    assert!(!ip(&["netns", "list"]).contains(&lab.ns));
}

fn echo_request(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
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
    let mut p = vec![0x45, 0, 0, 32, 0x12, 0x34, 0, 0, 64, 1, 0, 0];
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

fn own_euid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .unwrap()
}

/// The unprivileged side; does nothing unless started by the test above.
#[test]
fn probe() {
    if std::env::var_os(PROBE_ENV).is_none() {
        return;
    }
    let var = |k: &str| PathBuf::from(std::env::var_os(k).unwrap());
    let (socket, allowed, outside) = (
        var("OVRS7_SOCKET"),
        var("OVRS7_PROFILE"),
        var("OVRS7_OUTSIDE"),
    );
    println!("PROBE uid {}", own_euid());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let local = Ipv4Addr::new(10, 8, 0, 2);
        let settings = TunSettings {
            ipv4: Some((local, 24)),
            routes_v4: vec![(Ipv4Addr::new(10, 77, 0, 0), 16)],
            dns_servers: vec![IpAddr::from([10, 8, 0, 53])],
            mtu: 1400,
            server: Some(IpAddr::from([192, 0, 2, 1])),
            ..Default::default()
        };
        let mut builder = HelperTunBuilder {
            socket: socket.clone(),
            profile: allowed.clone(),
        };
        let tun = match builder.establish(&settings).await {
            Ok(t) => t,
            Err(e) => {
                println!("PROBE failed {e}");
                println!("PROBE ready");
                return;
            }
        };
        println!("PROBE ok {}", tun.name());

        // The kernel answers an echo request written into the tun.
        let peer = Ipv4Addr::new(10, 8, 0, 1);
        let req = echo_request(peer, local);
        tun.send(&req).await.unwrap();
        let mut buf = vec![0u8; 2000];
        let wait = async {
            loop {
                let n = tun.recv(&mut buf).await.unwrap();
                let p = &buf[..n];
                if n >= 28
                    && p[0] >> 4 == 4
                    && p[9] == 1
                    && p[20] == 0
                    && p[16..20] == peer.octets()
                {
                    return;
                }
            }
        };
        let echo = tokio::time::timeout(Duration::from_secs(5), wait).await;
        println!("PROBE echo {}", if echo.is_ok() { "ok" } else { "timeout" });

        let answer = |r: Result<openvpn_client::HelperTun, String>| match r {
            Ok(t) => format!("OK {} (unexpected)", t.name()),
            Err(e) => format!("ERR {e}"),
        };
        let forbidden = TunSettings {
            ipv4: Some((Ipv4Addr::new(10, 9, 0, 2), 24)),
            routes_v4: vec![(Ipv4Addr::new(10, 66, 0, 0), 16)],
            ..settings.clone()
        };
        println!(
            "PROBE forbidden {}",
            answer(builder.establish(&forbidden).await)
        );
        let mut elsewhere = HelperTunBuilder {
            socket: socket.clone(),
            profile: outside,
        };
        println!(
            "PROBE outside {}",
            answer(elsewhere.establish(&settings).await)
        );
        let wrong_server = TunSettings {
            ipv4: Some((Ipv4Addr::new(10, 9, 0, 2), 24)),
            routes_v4: Vec::new(),
            server: Some(IpAddr::from([203, 0, 113, 9])),
            ..settings.clone()
        };
        println!(
            "PROBE server {}",
            answer(builder.establish(&wrong_server).await)
        );
        println!("PROBE ready");
        // Hold the tunnel until killed.
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        drop(tun);
    });
}
