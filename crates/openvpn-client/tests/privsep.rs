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

use openvpn_client::{HelperTunBuilder, TunBuilder, TunSettings, privsep};
use openvpn_tun::PacketDevice;

const PROBE_ENV: &str = "OVRS7_PROBE";
const CA: &str = "<ca>\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n</ca>\n";

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Our namespace, directory and processes; all removed on drop.
struct Lab {
    ns: String,
    dir: PathBuf,
    children: Vec<Child>,
}

impl Lab {
    /// A namespace `ovrs7-TAG-PID` (lo up, its own resolv.conf) and `/tmp/ovrs7-TAG-PID` with
    /// `profiles`, `outside`, `sock` (all 0755, root).
    fn new(tag: &str) -> Lab {
        let pid = std::process::id();
        let mut lab = Lab {
            ns: format!("ovrs7-{tag}-{pid}"),
            dir: PathBuf::from(format!("/tmp/ovrs7-{tag}-{pid}")),
            children: Vec::new(),
        };
        lab.remove();
        ip(&["netns", "add", &lab.ns]);
        ip(&["-n", &lab.ns, "link", "set", "lo", "up"]);
        std::fs::create_dir_all(lab.etc()).unwrap();
        std::fs::write(lab.resolv(), ORIGINAL_RESOLV).unwrap();
        for d in ["", "profiles", "outside", "sock"] {
            mkdir(&lab.dir.join(d));
        }
        lab
    }

    fn etc(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.ns)
    }

    /// The namespace's resolv.conf (bind-mounted over /etc/resolv.conf by `ip netns exec`).
    fn resolv(&self) -> PathBuf {
        self.etc().join("resolv.conf")
    }

    fn remove(&mut self) {
        for mut child in self.children.drain(..).rev() {
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

const ORIGINAL_RESOLV: &str = "nameserver 192.0.2.53\noptions ndots:2\n";

/// Runs as root; the usual preconditions of the root tests.
fn root_tools() -> bool {
    if openvpn_tun::fdpass::euid() != 0 {
        println!("skipped: needs root");
        return false;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        println!("skipped: needs setpriv (util-linux)");
        return false;
    }
    true
}

/// `ip netns exec NS setpriv --reuid=65534 … PROGRAM`: PROGRAM runs as nobody in the
/// namespace.
fn as_nobody(ns: &str, program: &Path) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns])
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ])
        .arg(program);
    c
}

/// The interface names of a namespace.
fn links(ns: &str) -> Vec<String> {
    ip(&["-n", ns, "-o", "link"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
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
    if !root_tools() {
        return;
    }
    let mut lab = Lab::new("h");
    let resolv = lab.resolv();
    let (profiles, outside, sock, run) = (
        lab.dir.join("profiles"),
        lab.dir.join("outside"),
        lab.dir.join("sock/helper.sock"),
        lab.dir.join("run"),
    );
    let profile = format!(
        "client\ndev tun\nremote 192.0.2.1 1194\n{CA}pull-filter ignore \"route 10.66.\"\ndhcp-option DNS 10.8.0.53\n"
    );
    let allowed = profiles.join("allowed.ovpn");
    std::fs::write(&allowed, &profile).unwrap();
    let other = outside.join("other.ovpn");
    std::fs::write(&other, &profile).unwrap();

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
    lab.children.push(helper);
    wait_until("the helper's socket", || sock.exists());

    let exe = std::env::current_exe().unwrap();
    let mut probe = as_nobody(&lab.ns, &exe);
    probe
        .args(["--exact", "probe", "--nocapture", "--test-threads=1"])
        .env(PROBE_ENV, "1")
        .env("OVRS7_SOCKET", &sock)
        .env("OVRS7_PROFILE", &allowed)
        .env("OVRS7_OUTSIDE", &other)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut probe = probe.spawn().expect("start the probe");
    let out = probe.stdout.take().unwrap();
    lab.children.push(probe);
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
    let kept = find("kept-fd ");
    assert_ne!(kept, dev);
    wait_until("the device of the closed connection to go", || {
        !links(&lab.ns).contains(&kept)
    });
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
    let journal = journal_of(&run, &dev);
    assert!(journal.exists(), "journal {}", journal.display());
    let log = log_text();
    assert!(
        log.contains("uid=65534") && log.contains("tunnel established"),
        "the helper logs the peer and the change:\n{log}"
    );

    // kill -9: the socket closes, the helper undoes everything.
    let mut probe = lab.children.pop().unwrap();
    probe.kill().unwrap();
    probe.wait().unwrap();
    wait_until("the device to disappear", || !links(&lab.ns).contains(&dev));
    let routes = ip(&["-n", &lab.ns, "route"]);
    assert!(!routes.contains("10.77."), "{routes}");
    wait_until("the journal to go", || !journal.exists());
    assert_eq!(std::fs::read_to_string(&resolv).unwrap(), ORIGINAL_RESOLV);
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
        // A client that keeps the descriptor but closes the connection: the helper deletes
        // the device anyway.
        let kept = {
            use std::io::Write;
            use std::os::fd::AsFd;
            let mut conn = std::os::unix::net::UnixStream::connect(&socket).unwrap();
            let path = allowed.canonicalize().unwrap();
            let s2 = TunSettings {
                ipv4: Some((Ipv4Addr::new(10, 9, 0, 2), 24)),
                dns_servers: Vec::new(),
                ..settings.clone()
            };
            write!(
                conn,
                "OPEN {}\nESTABLISH {}\n",
                privsep::escape(path.to_str().unwrap()),
                privsep::encode_settings(&s2)
            )
            .unwrap();
            let (mut text, mut fds) = (Vec::new(), Vec::new());
            while text.iter().filter(|&&b| b == b'\n').count() < 2 {
                let mut buf = [0u8; 512];
                let (n, got) = openvpn_tun::fdpass::recv_with_fds(conn.as_fd(), &mut buf).unwrap();
                assert!(n > 0, "helper closed: {}", String::from_utf8_lossy(&text));
                text.extend_from_slice(&buf[..n]);
                fds.extend(got);
            }
            let text = String::from_utf8(text).unwrap();
            let name = text
                .lines()
                .nth(1)
                .unwrap()
                .strip_prefix("OK ")
                .unwrap()
                .to_owned();
            assert_eq!(fds.len(), 1, "{text}");
            (name, fds)
        };
        println!("PROBE kept-fd {}", kept.0);
        println!("PROBE ready");
        // Hold the tunnel until killed.
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        drop(tun);
    });
}

const SERVE_ENV: &str = "OVRS7_SERVE";

/// PEM CA, server and client certificates and keys.
fn pki() -> (String, (String, String), (String, String)) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ovrs7-ca");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = |cn: &str, eku| {
        let mut p = CertificateParams::new(vec![cn.to_owned()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![eku];
        let k = KeyPair::generate().unwrap();
        (
            p.signed_by(&k, &ca, &ca_key).unwrap().pem(),
            k.serialize_pem(),
        )
    };
    let server = leaf("server", ExtendedKeyUsagePurpose::ServerAuth);
    let client = leaf("client1", ExtendedKeyUsagePurpose::ClientAuth);
    (ca.pem(), server, client)
}

/// The real `openvpn-client` binary as nobody with `--helper-socket`, against our server (an
/// in-process `openvpn-server` with an in-memory tun that answers every ping, run by this
/// test binary inside the namespace). The helper is socket-activated by
/// `systemd-socket-activate` (LISTEN_FDS). Pings through the tunnel to the server's address
/// and to a pushed route, then `kill -9` of the client.
#[test]
fn real_client_as_nobody_through_a_socket_activated_helper() {
    if std::env::var_os(PROBE_ENV).is_some() || std::env::var_os(SERVE_ENV).is_some() {
        return;
    }
    if !root_tools() {
        return;
    }
    if Command::new("systemd-socket-activate")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("skipped: needs systemd-socket-activate");
        return;
    }
    let mut lab = Lab::new("e");
    let (profiles, sock, run) = (
        lab.dir.join("profiles"),
        lab.dir.join("sock/helper.sock"),
        lab.dir.join("run"),
    );
    let (ca, (scert, skey), (ccert, ckey)) = pki();
    let server_conf = lab.dir.join("server.conf");
    std::fs::write(
        &server_conf,
        format!(
            "server 10.8.0.0 255.255.255.0\ntopology subnet\nkeepalive 10 60\npush \"route 10.77.0.0 255.255.0.0\"\n<ca>\n{ca}</ca>\n<cert>\n{scert}</cert>\n<key>\n{skey}</key>\n"
        ),
    )
    .unwrap();

    // The server, inside the namespace: prints its port.
    let exe = std::env::current_exe().unwrap();
    let mut server = Command::new("ip")
        .args(["netns", "exec", &lab.ns])
        .arg(&exe)
        .args(["--exact", "serve", "--nocapture", "--test-threads=1"])
        .env(SERVE_ENV, &server_conf)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server");
    let out = server.stdout.take().unwrap();
    lab.children.push(server);
    let mut port = None;
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        if let Some(i) = line.find("SERVE port ") {
            port = Some(line[i + 11..].trim().to_owned());
            break;
        }
    }
    let port = port.expect("the server's port");

    // The helper, socket-activated.
    let log_path = lab.dir.join("helper.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let helper = Command::new("ip")
        .args(["netns", "exec", &lab.ns, "systemd-socket-activate", "-l"])
        .arg(&sock)
        .arg(format!("--setenv=OPENVPN_RS_RUN_DIR={}", run.display()))
        .arg("--setenv=OPENVPN_LOG=info")
        .arg("--setenv=PATH")
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_openvpn-client"))
        .arg("helper")
        .arg("--profiles")
        .arg(&profiles)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start systemd-socket-activate");
    lab.children.push(helper);
    wait_until("the activation socket", || sock.exists());
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();

    let profile = profiles.join("e2e.ovpn");
    std::fs::write(
        &profile,
        format!(
            "client\ndev tun\nremote 127.0.0.1 {port} udp\nverb 3\n<ca>\n{ca}</ca>\n<cert>\n{ccert}</cert>\n<key>\n{ckey}</key>\n"
        ),
    )
    .unwrap();
    let client_log_path = lab.dir.join("client.log");
    let client_log = std::fs::File::create(&client_log_path).unwrap();
    let client = as_nobody(&lab.ns, Path::new(env!("CARGO_BIN_EXE_openvpn-client")))
        .arg("--config")
        .arg(&profile)
        .arg("--helper-socket")
        .arg(&sock)
        .stdout(client_log.try_clone().unwrap())
        .stderr(client_log)
        .spawn()
        .expect("start the client");
    lab.children.push(client);
    let logs = || {
        format!(
            "client:\n{}\nhelper:\n{}",
            std::fs::read_to_string(&client_log_path).unwrap_or_default(),
            std::fs::read_to_string(&log_path).unwrap_or_default()
        )
    };
    let start = Instant::now();
    while !std::fs::read_to_string(&client_log_path)
        .unwrap_or_default()
        .contains("Initialization Sequence Completed")
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no tunnel within 30 s\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let helper_log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        helper_log.contains("listening on the socket passed by systemd")
            && helper_log.contains("uid=65534"),
        "{}",
        logs()
    );
    let dev = links(&lab.ns)
        .into_iter()
        .find(|n| n.starts_with("tun"))
        .unwrap_or_else(|| panic!("no tun device\n{}", logs()));
    let routes = ip(&["-n", &lab.ns, "route"]);
    assert!(
        routes.contains(&format!("10.77.0.0/16 dev {dev}")),
        "{routes}"
    );
    for target in ["10.8.0.1", "10.77.0.1"] {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &lab.ns, "ping", "-c", "1", "-W", "5", target,
            ])
            .output()
            .expect("ping");
        assert!(
            out.status.success(),
            "ping {target} through the tunnel: {out:?}\n{}",
            logs()
        );
    }

    // kill -9 of the unprivileged client: the helper removes everything.
    let mut client = lab.children.pop().unwrap();
    client.kill().unwrap();
    client.wait().unwrap();
    wait_until("the device to disappear", || !links(&lab.ns).contains(&dev));
    assert!(!ip(&["-n", &lab.ns, "route"]).contains("10.77."));
    wait_until("the journal to go", || !journal_of(&run, &dev).exists());
    println!("{}", logs());
    lab.remove();
}

/// Answers an ICMP echo request (IPv4) with the reply, anything else with `None`.
fn echo_reply(p: &[u8]) -> Option<Vec<u8>> {
    let ihl = usize::from(p.first()? & 0x0f) * 4;
    if p.len() < ihl + 8 || p[0] >> 4 != 4 || p[9] != 1 || p[ihl] != 8 {
        return None;
    }
    let mut r = p.to_vec();
    r[12..16].copy_from_slice(&p[16..20]);
    r[16..20].copy_from_slice(&p[12..16]);
    r[ihl] = 0;
    r[ihl + 2] = 0;
    r[ihl + 3] = 0;
    let mut sum: u32 = r[ihl..]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    r[ihl + 2..ihl + 4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    Some(r)
}

/// The server side of the test above; does nothing unless started by it.
#[test]
fn serve() {
    let Some(conf) = std::env::var_os(SERVE_ENV) else {
        return;
    };
    let text = std::fs::read_to_string(conf).unwrap();
    let cfg = openvpn_server::config::load(
        &openvpn_control::options::parse_config(&text).unwrap(),
        Path::new("/"),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        println!("SERVE port {}", udp.local_addr().unwrap().port());
        let (tun, mut side) = openvpn_tun::MemoryTun::pair(64);
        tokio::spawn(openvpn_server::runtime::serve(
            cfg,
            std::sync::Arc::new(tun),
            Some(udp),
            None,
            std::future::pending(),
        ));
        while let Some(pkt) = side.written().await {
            if let Some(reply) = echo_reply(&pkt) {
                let _ = side.inject(reply).await;
            }
        }
    });
}

/// The journal of device `dev` in `run` (`<dev>.ns<inode>.journal`: the helper's network
/// namespace is in the name), or a path that does not exist.
fn journal_of(run: &Path, dev: &str) -> PathBuf {
    std::fs::read_dir(run)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with(&format!("{dev}.")) && n.ends_with(".journal")
        })
        .unwrap_or_else(|| run.join(format!("{dev}.journal")))
}
