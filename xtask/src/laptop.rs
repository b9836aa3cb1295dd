//! The laptop-safety cases ([`Scenario::Laptop`]): our client binary on a "laptop" namespace
//! that has its own default route to "the internet", against the real 2.6 server.
//!
//! ```text
//! ovrs-srv: the internet and the VPN server        ovrs-cli: the laptop
//!   ovrs-out (dummy) 198.18.0.1/32                   default via 10.77.0.1
//!                    2001:db8:ffff::1/128            default via fd77::1
//!   ovrs-veth-s 10.77.0.1 fd77::1  <------------->   ovrs-veth-c 10.77.0.2 fd77::2
//!                                                    /etc/netns/ovrs-cli/resolv.conf (known bytes)
//! ```
//!
//! 198.18.0.0/15 and 2001:db8::/32 are test ranges; they exist only inside these namespaces.
//! Every case snapshots `ip route`, `ip -6 route`, `ip rule` of ovrs-cli and the bytes of its
//! resolv.conf after the server is up and before our client starts, and ends by requiring
//! both to be equal again once the client is gone. [`LaptopNet`] undoes the topology (and
//! deletes routes a failed case left behind) on every return path; [`Procs`] stops the
//! processes by pid; [`Lab`] removes the helper's directory.
//!
//! A child module of `interop`, so it uses the harness's private helpers directly.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;

use super::*;
use crate::cases::Laptop;

/// The "internet" addresses, on ovrs-srv's loopback (no dummy module needed).
const OUT4: &str = "198.18.0.1";
const OUT6: &str = "2001:db8:ffff::1";
/// The client's tun device (ovpn-conf.sh's default for clients).
const TUN: &str = "ovrs-tun-c";
/// ovrs-cli's resolv.conf as `ip netns exec` bind-mounts it over /etc/resolv.conf.
const RESOLV: &str = "/etc/netns/ovrs-cli/resolv.conf";
const RESOLV_ORIGINAL: &str = "# ovrs-cli resolv.conf, written by the interop harness (laptop cases)\n\
                               nameserver 192.0.2.53\n\
                               search home.test\n\
                               options edns0 timeout:2\n";
/// The filter for "IPv6 that leaves the laptop": anything but multicast, link-local and
/// neighbour discovery / router solicitation (ICMPv6 133..=137, on-link by definition).
const LEAK_FILTER: &str = "ip6 and not dst net ff00::/8 and not dst net fe80::/10 \
                           and not (icmp6 and ip6[40] >= 133 and ip6[40] <= 137)";

pub(super) fn run(env: &Env, case: &Case, cd: &CaseDir, check: Laptop) -> Result<()> {
    ensure!(
        case.client == Impl::Ours,
        "laptop cases run our client binary"
    );
    // Case-specific config files (the generic ones were written by run_case).
    match check {
        Laptop::OverlapIpv6 => {
            let args = ConfArgs {
                remote: Some(OUT6),
                ..ConfArgs::default()
            };
            write_conf(env, case, Role::Client, &cd.client_conf, &args, &[])?;
        }
        Laptop::RedirectSigterm => {
            // Routes of the profile (not pushed): two outside the tunnel, one into it with
            // its own metric.
            // A second remote: the same server at OUT4 (reached via the default route, so
            // covered by the redirect), for the failover check; a short connect-timeout.
            let mut conf = fs::read_to_string(&cd.client_conf)?;
            conf.push_str(&format!(
                "route 198.18.7.0 255.255.255.0 net_gateway\n\
                 route 10.99.0.0 255.255.0.0 vpn_gateway 77\n\
                 route-ipv6 2001:db8:7::/48 net_gateway\n\
                 remote {OUT4} 1194\n\
                 connect-timeout 3\n"
            ));
            fs::write(&cd.client_conf, conf)?;
            // multihome: the server answers from the address the client sent to (OUT4).
            write_conf(
                env,
                case,
                Role::Server,
                &cd.server_conf,
                &ConfArgs::default(),
                &["multihome".to_owned()],
            )?;
        }
        Laptop::BlockIpv6 => {
            let args = ConfArgs {
                server_ipv6: Some("none"),
                ..ConfArgs::default()
            };
            write_conf(env, case, Role::Server, &cd.server_conf, &args, &[])?;
        }
        _ => {}
    }

    // Guards: the topology (dropped last), then the processes.
    let mut net = LaptopNet::up()?;
    let mut procs = Procs(Vec::new());
    let server = procs.start_server(env, case, cd)?;
    let before = Tables::capture()?;
    net.snapshot = Some(before.clone());
    fs::write(cd.dir.join("tables-before.txt"), before.to_string())?;
    println!(
        "interop: {CLIENT_NS} before the client: {} v4 routes, {} v6 routes, {} rules (tables-before.txt)",
        before.v4.lines().count(),
        before.v6.lines().count(),
        before.rules.lines().count()
    );

    match check {
        Laptop::RedirectSigterm => redirect(env, case, cd, &mut procs, &before, false)?,
        Laptop::RedirectKill9 => redirect(env, case, cd, &mut procs, &before, true)?,
        Laptop::OverlapIpv6 => overlap_ipv6(env, case, cd, &mut procs)?,
        Laptop::BlockIpv6 => block_ipv6(env, case, cd, &mut procs)?,
        Laptop::Dns => dns(env, case, cd, &mut procs)?,
        Laptop::Unprivileged => unprivileged(env, cd, &mut procs, &before)?,
        Laptop::UserGroup => user_group(env, case, cd, &mut procs)?,
        Laptop::RedirectFlags => redirect_flags(env, cd, &mut procs)?,
        Laptop::ReconnectLeakGuard => reconnect_leak_guard(env, case, cd, &mut procs, server)?,
    }

    wait_restored(&before, Duration::from_secs(3), &procs)?;
    let resolv = fs::read(RESOLV).with_context(|| format!("cannot read {RESOLV}"))?;
    ensure!(
        resolv == RESOLV_ORIGINAL.as_bytes(),
        "{RESOLV} is not the original after the client:\n{}",
        String::from_utf8_lossy(&resolv)
    );
    println!("interop: routes, rules and resolv.conf of {CLIENT_NS} equal the snapshot");
    // (After ReconnectLeakGuard's restart this reads the restarted server's log: same files.)
    procs.check_logs(&[(server, case.server_log_has)])
}

/// Our client as root in ovrs-cli on the case's client.conf.
fn start_client(env: &Env, cd: &CaseDir, procs: &mut Procs, label: &'static str) -> Result<usize> {
    let client = procs.start(
        env,
        Impl::Ours,
        Role::Client,
        label,
        CLIENT_NS,
        &cd.client_conf,
    )?;
    match procs.wait_init(client, CLIENT_WAIT)? {
        Waited::Init => Ok(client),
        other => bail!("{label} {other}\n{}", procs.tails()),
    }
}

/// Items 1-2: `redirect-gateway def1 ipv6` pushed; outside addresses go into the tun, the
/// server stays on the veth; then SIGTERM, or kill -9: the client's guardian process undoes
/// the host route to the server and resolv.conf at once (the tables must equal the snapshot
/// within 3 s, with no restart), and a restart finds nothing left to recover.
fn redirect(
    env: &Env,
    case: &Case,
    cd: &CaseDir,
    procs: &mut Procs,
    before: &Tables,
    kill9: bool,
) -> Result<()> {
    let client = start_client(env, cd, procs, "client")?;
    for target in PING_TARGETS {
        ping_ok(&cd.dir, CLIENT_NS, target, procs)?;
    }
    redirect_routes(procs)?;
    for target in [OUT4, OUT6] {
        ping_ok(&cd.dir, CLIENT_NS, target, procs)?;
    }
    procs.check_logs(&[(client, case.client_log_has)])?;
    if !kill9 {
        profile_routes(procs)?;
        failover(cd, procs, client)?;
        return terminate(procs, client);
    }
    procs.kill(client)?;
    let killed = Instant::now();
    wait_restored(before, Duration::from_secs(3), procs)
        .context("after kill -9 of the client (no restart): the guardian did not restore")?;
    let took = killed.elapsed();
    let resolv = fs::read(RESOLV).with_context(|| format!("cannot read {RESOLV}"))?;
    ensure!(
        resolv == RESOLV_ORIGINAL.as_bytes(),
        "{RESOLV} is not the original after kill -9 of the client:\n{}",
        String::from_utf8_lossy(&resolv)
    );
    ensure!(
        !link_exists(TUN)?,
        "{TUN} still exists after kill -9 of the client"
    );
    println!(
        "interop: {:.2}s after kill -9 (no restart): ip route, ip -6 route, ip rule and resolv.conf of {CLIENT_NS} equal the snapshot",
        took.as_secs_f64()
    );
    let log = cd.client_conf.with_extension("log");
    let text = fs::read_to_string(&log).unwrap_or_default();
    let line = text
        .lines()
        .find(|l| l.contains("guardian: undid"))
        .with_context(|| format!("the guardian logged nothing in {}", log.display()))?;
    println!("interop: {}", line.trim());
    if log.exists() {
        fs::rename(&log, cd.dir.join("client1-killed.log"))?;
    }
    let again = start_client(env, cd, procs, "client (restarted)")?;
    ensure!(
        procs.count(again, "recovered changes left by a crashed run")? == 0,
        "the restarted client found a journal to recover: the guardian left one\n{}",
        procs.tails()
    );
    ping_ok(&cd.dir, CLIENT_NS, PING_TARGETS[0], procs)?;
    redirect_routes(procs)?;
    terminate(procs, again)
}

/// Failover to the second remote, an address the tunnel's routes cover: ovrs-srv drops
/// what comes to the first (10.77.0.1:1194), SIGUSR1 makes the client reconnect; it must
/// give up the kept device to reach OUT4 (else its packets would go into the dead tunnel),
/// connect there, and route OUT4 via the veth (a host route to the new server) and the rest
/// into the new tunnel.
fn failover(cd: &CaseDir, procs: &mut Procs, client: usize) -> Result<()> {
    let _block = NftDrop::add("ip daddr 10.77.0.1 udp dport 1194 drop")?;
    let pid = procs.pid(client)?.to_string();
    let _ = Command::new("kill").args(["-USR1", &pid]).status();
    procs
        .wait_inits(client, 2, Duration::from_secs(30), |_| Ok(()))
        .with_context(|| format!("no connection to the second remote {OUT4}"))?;
    route_via(false, OUT4, CLIENT_VETH, procs)?;
    route_via(true, OUT6, TUN, procs)?;
    ping_ok(&cd.dir, CLIENT_NS, PING_TARGETS[0], procs)?;
    println!("interop: failover to {OUT4} (covered by the tunnel's routes) connected");
    Ok(())
}

/// An nftables rule in ovrs-srv's input path, removed (with its table) when dropped.
struct NftDrop;

impl NftDrop {
    const TABLE: &'static str = "ovrs_laptop_failover";

    fn add(rule: &str) -> Result<NftDrop> {
        which("nft").context("nft is needed (apt-get install nftables)")?;
        let nft = |cmd: &str| {
            output(
                Command::new("ip")
                    .args(["netns", "exec", SERVER_NS, "nft"])
                    .arg(cmd),
            )
        };
        nft(&format!("add table inet {}", Self::TABLE))?;
        let guard = NftDrop;
        nft(&format!(
            "add chain inet {} input {{ type filter hook input priority 0 ; }}",
            Self::TABLE
        ))?;
        nft(&format!("add rule inet {} input {rule}", Self::TABLE))?;
        Ok(guard)
    }
}

impl Drop for NftDrop {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "exec", SERVER_NS, "nft"])
            .arg(format!("delete table inet {}", Self::TABLE))
            .status();
    }
}

/// Profile `route` / `route-ipv6` lines (added to the SIGTERM case's client.conf by
/// [`run`]): the `net_gateway` routes go via the laptop's original gateways, the tunnel
/// route carries its own metric. Their removal is checked with the snapshot at the end.
fn profile_routes(procs: &Procs) -> Result<()> {
    let v4 = ip_cli(&["route"])?;
    let v6 = ip_cli(&["-6", "route"])?;
    let want: [(&str, &str, &[&str]); 3] = [
        (
            &v4,
            "198.18.7.0/24 ",
            &["via 10.77.0.1", &format!("dev {CLIENT_VETH}")],
        ),
        (&v4, "10.99.0.0/16 ", &[&format!("dev {TUN}"), "metric 77"]),
        (
            &v6,
            "2001:db8:7::/48 ",
            &["via fd77::1", &format!("dev {CLIENT_VETH}")],
        ),
    ];
    for (table, prefix, parts) in want {
        let line = table
            .lines()
            .find(|l| l.starts_with(prefix))
            .with_context(|| format!("no profile route {prefix}in {CLIENT_NS}:\n{table}"))?;
        for part in parts {
            ensure!(
                line.contains(part),
                "profile route without {part:?}: {line}"
            );
        }
        println!("interop: profile route: {line}");
    }
    route_via(false, "198.18.7.1", CLIENT_VETH, procs)?;
    route_via(true, "2001:db8:7::1", CLIENT_VETH, procs)
}

/// While a `redirect-gateway def1 ipv6` tunnel is up: outside v4/v6 via the tun, the server
/// via the original interface (one host route, not two).
fn redirect_routes(procs: &Procs) -> Result<()> {
    route_via(false, OUT4, TUN, procs)?;
    route_via(true, OUT6, TUN, procs)?;
    route_via(false, "10.77.0.1", CLIENT_VETH, procs)?;
    let v4 = ip_cli(&["route"])?;
    let hosts = v4
        .lines()
        .filter(|l| l.starts_with("10.77.0.1 ") && l.contains(CLIENT_VETH))
        .count();
    ensure!(
        hosts == 1,
        "expected one host route to the server 10.77.0.1 via {CLIENT_VETH}, found {hosts}:\n{v4}"
    );
    Ok(())
}

/// Item 3: the server is reached at 2001:db8:ffff::1 via the laptop's IPv6 default route and
/// pushes `route-ipv6 2001:db8::/32`, which covers it: a /128 host route via the original
/// gateway comes first, and the tunnel keeps working (no loop).
fn overlap_ipv6(env: &Env, case: &Case, cd: &CaseDir, procs: &mut Procs) -> Result<()> {
    let client = start_client(env, cd, procs, "client")?;
    let v6 = ip_cli(&["-6", "route"])?;
    ensure!(
        v6.lines()
            .any(|l| l.starts_with(&format!("{OUT6} via fd77::1 dev {CLIENT_VETH}"))),
        "no host route {OUT6} via fd77::1 dev {CLIENT_VETH}:\n{v6}"
    );
    ensure!(
        v6.lines()
            .any(|l| l.starts_with("2001:db8::/32 dev ") && l.contains(TUN)),
        "the pushed route-ipv6 2001:db8::/32 is not on {TUN}:\n{v6}"
    );
    route_via(true, OUT6, CLIENT_VETH, procs)?;
    route_via(true, "2001:db8:1::1", TUN, procs)?;
    // Pings through the tunnel for a few seconds: with a loop they would die at once.
    let a = ping_start(&cd.dir, CLIENT_NS, PING_TARGETS[0], 15, "0.2")?;
    let b = ping_start(&cd.dir, CLIENT_NS, PING_TARGETS[1], 15, "0.2")?;
    for r in [ping_result(a)?, ping_result(b)?] {
        println!("interop: {CLIENT_NS} -> {}", r.summary());
        ensure!(
            r.sent >= 15 && r.all_ok(),
            "pings through the tunnel were lost: {}\n{}",
            r.summary(),
            procs.tails()
        );
    }
    ensure!(procs.alive(client)?, "the client exited\n{}", procs.tails());
    let inits = procs.count(client, INIT_DONE)?;
    ensure!(
        inits == 1,
        "the client initialised {inits} times (the tunnel broke)\n{}",
        procs.tails()
    );
    procs.check_logs(&[(client, case.client_log_has)])?;
    terminate(procs, client)
}

/// Item 4: an IPv4-only tunnel with `block-ipv6` pushed: IPv6 to the internet fails at once
/// and nothing but on-link IPv6 leaves the veth. A capture first shows it would leave without
/// the tunnel (so the filter and the capture work).
fn block_ipv6(env: &Env, case: &Case, cd: &CaseDir, procs: &mut Procs) -> Result<()> {
    which("tcpdump").context("tcpdump is needed (apt-get install tcpdump)")?;
    let control = Capture::start(cd, "capture-before.txt")?;
    let (ok, _, text) = timed(&["ping", "-6", "-n", "-c1", "-W2", OUT6])?;
    let seen = control.finish()?;
    ensure!(
        ok && seen >= 1,
        "without the tunnel, ping -6 {OUT6} should work and be captured (ok={ok}, captured {seen}):\n{text}"
    );
    println!(
        "interop: before the tunnel, ping -6 {OUT6} works and the capture sees {seen} packet(s)"
    );

    let client = start_client(env, cd, procs, "client")?;
    ping_ok(&cd.dir, CLIENT_NS, PING_TARGETS[0], procs)?;
    let v6 = ip_cli(&["-6", "route"])?;
    for half in ["::/1 ", "8000::/1 "] {
        ensure!(
            v6.lines()
                .any(|l| l.starts_with(half) && l.contains(&format!("dev {TUN}"))),
            "no {half}into {TUN}:\n{v6}"
        );
    }
    let capture = Capture::start(cd, "capture-blocked.txt")?;
    let (ok, took, text) = timed(&["ping", "-6", "-n", "-c1", "-W2", OUT6])?;
    println!(
        "interop: ping -6 {OUT6}: {} in {:.2}s: {}",
        if ok { "answered" } else { "failed" },
        took.as_secs_f64(),
        text.lines()
            .find(|l| l.contains("nreachable"))
            .unwrap_or("")
    );
    ensure!(
        !ok && text.contains("nreachable") && took < Duration::from_millis(1500),
        "ping -6 {OUT6} must fail fast with 'unreachable' (took {:.2}s):\n{text}",
        took.as_secs_f64()
    );
    let addr: SocketAddr = format!("[{OUT6}]:443").parse()?;
    let (r, took) = connect_in_ns(CLIENT_NS, addr)?;
    println!(
        "interop: TCP connect to {addr}: {} in {:.3}s",
        match &r {
            Ok(()) => "connected".to_owned(),
            Err(e) => e.to_string(),
        },
        took.as_secs_f64()
    );
    match r {
        Err(e) if matches!(e.raw_os_error(), Some(101 | 113)) => {}
        other => {
            bail!("TCP connect to {addr} must fail with ENETUNREACH/EHOSTUNREACH, got {other:?}")
        }
    }
    ensure!(
        took < Duration::from_secs(1),
        "TCP connect took {:.2}s",
        took.as_secs_f64()
    );
    pause(Duration::from_millis(300))?;
    let leaked = capture.finish()?;
    ensure!(
        leaked == 0,
        "{leaked} IPv6 packet(s) left {CLIENT_VETH} while blocked (see capture-blocked.txt)"
    );
    println!("interop: no IPv6 packet left {CLIENT_VETH} while blocked");
    procs.check_logs(&[(client, case.client_log_has)])?;
    terminate(procs, client)
}

/// Item 5: pushed DNS in resolv.conf mode, seen in the namespace while connected.
fn dns(env: &Env, case: &Case, cd: &CaseDir, procs: &mut Procs) -> Result<()> {
    let client = start_client(env, cd, procs, "client")?;
    ping_ok(&cd.dir, CLIENT_NS, PING_TARGETS[0], procs)?;
    let file = fs::read_to_string(RESOLV)?;
    let seen =
        output(Command::new("ip").args(["netns", "exec", CLIENT_NS, "cat", "/etc/resolv.conf"]))?;
    println!("interop: {CLIENT_NS}'s /etc/resolv.conf while connected:\n{seen}");
    ensure!(
        seen == file,
        "the namespace's /etc/resolv.conf is not {RESOLV}"
    );
    let has_line = |want: &str| {
        seen.lines()
            .any(|l| l.split_whitespace().eq(want.split_whitespace()))
    };
    ensure!(
        has_line("nameserver 10.8.0.1") && seen.contains("vpn.test"),
        "the pushed DNS 10.8.0.1 / DOMAIN vpn.test are not in resolv.conf:\n{seen}"
    );
    ensure!(
        !has_line("nameserver 192.0.2.53"),
        "the original nameserver is still in resolv.conf:\n{seen}"
    );
    procs.check_logs(&[(client, case.client_log_has)])?;
    terminate(procs, client)?;
    dns_updown(env, cd, procs)
}

/// `dns-updown CMD`: the command gets the pushed DNS (resolv.conf is left alone), and is run
/// with `dns-down` by the guardian after kill -9 of the client.
fn dns_updown(env: &Env, cd: &CaseDir, procs: &mut Procs) -> Result<()> {
    let calls = cd.dir.join("dns-updown.calls");
    let script = cd.dir.join("dns-updown.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$script_type $dev ${{dns_server_0_address_1:-}} ${{dns_search_domain_1:-}}\" >> '{}'\n",
            calls.display()
        ),
    )?;
    set_mode(&script, 0o755)?;
    let mut conf = fs::read_to_string(&cd.client_conf)?;
    conf.push_str(&format!(
        "script-security 2\ndns-updown {}\n",
        script.display()
    ));
    fs::write(&cd.client_conf, conf)?;
    // The first run's log (its "Initialization Sequence Completed" must not count).
    let log = cd.client_conf.with_extension("log");
    if log.exists() {
        fs::rename(&log, cd.dir.join("client1-resolv-conf.log"))?;
    }
    let client = start_client(env, cd, procs, "client (dns-updown)")?;
    let text = fs::read_to_string(&calls).unwrap_or_default();
    ensure!(
        text == format!("dns-up {TUN} 10.8.0.1 vpn.test\n"),
        "the dns-updown command was not run with the pushed DNS: {text:?}"
    );
    let resolv = fs::read(RESOLV)?;
    ensure!(
        resolv == RESOLV_ORIGINAL.as_bytes(),
        "with dns-updown, resolv.conf must be left alone:\n{}",
        String::from_utf8_lossy(&resolv)
    );
    procs.kill(client)?;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let text = fs::read_to_string(&calls).unwrap_or_default();
        if text.lines().nth(1) == Some(&format!("dns-down {TUN}  ")) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "3 s after kill -9 the dns-updown command did not run with dns-down: {text:?}"
        );
        pause(Duration::from_millis(50))?;
    }
    println!(
        "interop: dns-updown: dns-up with the pushed DNS, and dns-down after kill -9 (guardian)"
    );
    Ok(())
}

/// `redirect-gateway def1 block-local bypass-dhcp` (pushed): another host on the laptop's
/// LAN (10.77.0.5) is routed into the tunnel, the server (10.77.0.1, on that LAN) is not,
/// outside addresses go into the tunnel. Then the same profile with `pull-filter ignore
/// redirect-gateway` and its own `redirect-gateway def1 local`: the server is on-link, so
/// no host route to it is added, and the tunnel still works.
fn redirect_flags(env: &Env, cd: &CaseDir, procs: &mut Procs) -> Result<()> {
    let client = start_client(env, cd, procs, "client (block-local)")?;
    ping_ok(&cd.dir, CLIENT_NS, PING_TARGETS[0], procs)?;
    route_via(false, "10.77.0.5", TUN, procs)?;
    route_via(true, "fd77::5", TUN, procs)?;
    route_via(false, "10.77.0.1", CLIENT_VETH, procs)?;
    route_via(false, OUT4, TUN, procs)?;
    ping_ok(&cd.dir, CLIENT_NS, OUT4, procs)?;
    terminate(procs, client)?;
    println!("interop: block-local: the LAN goes into the tunnel, the server does not");

    let log = cd.client_conf.with_extension("log");
    if log.exists() {
        fs::rename(&log, cd.dir.join("client1-block-local.log"))?;
    }
    let mut conf = fs::read_to_string(&cd.client_conf)?;
    conf.push_str("pull-filter ignore \"redirect-gateway\"\nredirect-gateway def1 local\n");
    fs::write(&cd.client_conf, conf)?;
    let client = start_client(env, cd, procs, "client (local)")?;
    ping_ok(&cd.dir, CLIENT_NS, PING_TARGETS[0], procs)?;
    let v4 = ip_cli(&["route"])?;
    ensure!(
        !v4.lines().any(|l| l.starts_with("10.77.0.1 ")),
        "redirect-gateway local: a host route to the server was added:\n{v4}"
    );
    route_via(false, "10.77.0.1", CLIENT_VETH, procs)?;
    route_via(false, "10.77.0.5", CLIENT_VETH, procs)?;
    route_via(false, OUT4, TUN, procs)?;
    ping_ok(&cd.dir, CLIENT_NS, OUT4, procs)?;
    println!(
        "interop: redirect-gateway local: no host route to the on-link server, outside via the tunnel"
    );
    terminate(procs, client)
}

/// What leaves the laptop outside the tunnel: every outgoing packet except the client's own
/// datagrams to the server (10.77.0.1:1194), ARP, and on-link IPv6 (multicast, link-local,
/// neighbour discovery).
const OUTSIDE_TUNNEL: [&str; 3] = [
    "-Q",
    "out",
    "not arp and not (dst host 10.77.0.1 and udp dst port 1194) \
     and not (ip6 and (dst net ff00::/8 or dst net fe80::/10)) \
     and not (icmp6 and ip6[40] >= 133 and ip6[40] <= 137)",
];

/// Item "leak guard while reconnecting": connected under `redirect-gateway def1 ipv6` with
/// pushed DNS, pings to outside v4 and v6 addresses run all along; the real server is
/// stopped (`explicit-exit-notify 1`: it tells the client to restart), stays down 3 s and comes
/// back. From the stop until the client is connected again and pings through the new
/// tunnel, `ip route`/`ip -6 route`/`ip rule` must equal the connected snapshot at every
/// poll, resolv.conf must keep the pushed server, and the capture on the veth must see no
/// packet outside the tunnel.
fn reconnect_leak_guard(
    env: &Env,
    case: &Case,
    cd: &CaseDir,
    procs: &mut Procs,
    server: usize,
) -> Result<()> {
    which("tcpdump").context("tcpdump is needed (apt-get install tcpdump)")?;
    let client = start_client(env, cd, procs, "client")?;
    ping_ok(&cd.dir, CLIENT_NS, PING_TARGETS[0], procs)?;
    redirect_routes(procs)?;
    let connected = Tables::capture()?;
    let dns_line = |text: &str| {
        text.lines()
            .any(|l| l.split_whitespace().eq(["nameserver", "10.8.0.1"]))
    };
    ensure!(
        dns_line(&fs::read_to_string(RESOLV)?),
        "the pushed DNS 10.8.0.1 is not in {RESOLV} while connected"
    );
    let capture = Capture::start_with(cd, "capture-reconnect.txt", &OUTSIDE_TUNNEL)?;
    // Applications keep sending while the tunnel is down (ping's deadline ends them).
    let mut pingers = Vec::new();
    for (flag, target, name) in [("-4", OUT4, "ping-out4.txt"), ("-6", OUT6, "ping-out6.txt")] {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns", "exec", CLIENT_NS, "ping", flag, "-n", "-i", "0.2", "-w", "30",
        ])
        .arg(target);
        pingers.push(Bg::start(&mut cmd, &cd.dir.join(name))?);
    }
    pause(Duration::from_millis(600))?;

    let restarts_before = procs.count(client, "Restart:")?;
    let pid = procs.pid(server)?;
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    wait_exit(procs, server, Duration::from_secs(5))?;
    let stopped = Instant::now();
    println!("interop: server pid {pid} stopped (SIGTERM); the client must keep its routes");
    let mut polls = 0u32;
    let mut poll = |procs: &Procs| -> Result<()> {
        polls += 1;
        let now = Tables::capture()?;
        ensure!(
            now == connected,
            "{:.2}s after the server stopped the routing tables changed while reconnecting:\n{}\n{}",
            stopped.elapsed().as_secs_f64(),
            Tables::diff_text(&connected.to_string(), &now.to_string()),
            procs.tails()
        );
        ensure!(
            dns_line(&fs::read_to_string(RESOLV)?),
            "the pushed DNS left {RESOLV} while reconnecting"
        );
        Ok(())
    };
    while stopped.elapsed() < Duration::from_secs(3) {
        poll(procs)?;
        pause(Duration::from_millis(50))?;
    }
    ensure!(
        procs.count(client, "Restart:")? > restarts_before,
        "the client did not act on the server's exit notification (RESTART) within 3 s\n{}",
        procs.tails()
    );
    let again = procs.start_server(env, case, cd)?;
    procs
        .wait_inits(client, 2, Duration::from_secs(40), |p| poll(p))
        .context("the client did not reconnect after the server's restart")?;
    let down = stopped.elapsed();
    ping_ok(&cd.dir, CLIENT_NS, PING_TARGETS[0], procs)?;
    poll(procs)?;
    for target in [OUT4, OUT6] {
        ping_ok(&cd.dir, CLIENT_NS, target, procs)?;
    }
    for p in pingers {
        let pid = p.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let (_, text) = p.finish(Duration::from_secs(5))?;
        if let Some(line) = text.lines().find(|l| l.contains("packets transmitted")) {
            println!("interop: background {line}");
        }
    }
    let leaked = capture.finish()?;
    ensure!(
        leaked == 0,
        "{leaked} packet(s) left {CLIENT_VETH} outside the tunnel while reconnecting (see capture-reconnect.txt)"
    );
    println!(
        "interop: {polls} polls over {:.1}s (server down, client reconnecting): routes, rules and resolv.conf unchanged, no packet left {CLIENT_VETH} outside the tunnel",
        down.as_secs_f64()
    );
    procs.check_logs(&[(again, case.server_log_has), (client, case.client_log_has)])?;
    terminate(procs, client)
}

/// Item 6: our client as uid 65534 with the root helper (both in ovrs-cli): it connects and
/// pings; kill -9 leaves nothing behind (the helper undoes it, no restart needed); the helper
/// refuses a profile outside its directory and a route the profile does not allow.
fn unprivileged(env: &Env, cd: &CaseDir, procs: &mut Procs, before: &Tables) -> Result<()> {
    which("setpriv").context("setpriv is needed (util-linux)")?;
    let bin = env
        .ours
        .1
        .clone()
        .context("the case needs target/release/openvpn-client")?;
    let lab = Lab::new()?;
    let profile = inline_profile(&fs::read_to_string(&cd.client_conf)?)?;
    let allowed = lab.dir.join("profiles/laptop.ovpn");
    let nopull = lab.dir.join("profiles/nopull.ovpn");
    let outside = lab.dir.join("outside/laptop.ovpn");
    // The allowed profile also sends one network around the tunnel (the helper allows it
    // because the profile lists it).
    let around = format!("{profile}route 198.18.7.0 255.255.255.0 net_gateway\n");
    for (path, text) in [
        (&allowed, around),
        (&nopull, format!("{profile}route-nopull\n")),
        (&outside, profile.clone()),
    ] {
        fs::write(path, text)?;
        set_mode(path, 0o644)?;
    }
    let sock = lab.dir.join("sock/helper.sock");
    let helper_log = cd.dir.join("helper.log");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", CLIENT_NS])
        .arg(&bin)
        .arg("helper")
        .arg("--socket")
        .arg(&sock)
        .arg("--profiles")
        .arg(lab.dir.join("profiles"))
        .env("OPENVPN_RS_RUN_DIR", lab.dir.join("run"));
    let helper = procs.spawn(
        "helper",
        cmd,
        [cd.dir.join("helper.none"), helper_log.clone()],
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        ensure!(procs.alive(helper)?, "the helper exited\n{}", procs.tails());
        ensure!(
            Instant::now() < deadline,
            "no helper socket after 10s\n{}",
            procs.tails()
        );
        pause(Duration::from_millis(50))?;
    }

    let nobody = |profile: &Path, extra: &[&str]| {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            CLIENT_NS,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .arg(&bin)
        .arg("--config")
        .arg(profile)
        .arg("--helper-socket")
        .arg(&sock)
        .args(extra);
        cmd
    };
    let out = |name: &str| {
        [
            cd.dir.join(format!("{name}.none")),
            cd.dir.join(format!("{name}.out")),
        ]
    };

    // The allowed profile: connects, pings, gets the pushed route.
    let client = procs.spawn(
        "client (uid 65534)",
        nobody(&allowed, &[]),
        out("client-nobody"),
    )?;
    match procs.wait_init(client, CLIENT_WAIT)? {
        Waited::Init => {}
        other => bail!("the unprivileged client {other}\n{}", procs.tails()),
    }
    let pid = procs.pid(client)?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
    ensure!(
        uid.split_whitespace().skip(1).all(|u| u == "65534"),
        "the client does not run as uid 65534: {uid}"
    );
    println!("interop: client pid {pid} runs as uid 65534 ({uid})");
    for target in PING_TARGETS {
        ping_ok(&cd.dir, CLIENT_NS, target, procs)?;
    }
    route_via(false, "10.66.0.1", TUN, procs)?;
    route_via(false, "198.18.7.1", CLIENT_VETH, procs)?;
    procs.check_logs(&[(helper, &["uid=65534", "helper: tunnel established"])])?;
    procs.kill(client)?;
    wait_restored(before, Duration::from_secs(5), procs)?;
    ensure!(
        !link_exists(TUN)?,
        "{TUN} still exists after kill -9 of the client"
    );
    procs.check_logs(&[(helper, &["helper: client gone"])])?;
    println!(
        "interop: after kill -9 of the unprivileged client the helper restored everything (no restart needed)"
    );

    // A profile outside the helper's directory; then a redirect-gateway given on the command
    // line to a client whose profile has route-nopull (the helper only trusts the profile).
    let refusals: [(&str, &Path, &[&str], &str); 2] = [
        (
            "client-outside",
            &outside,
            &[],
            "is not inside the profiles directory",
        ),
        (
            "client-nopull",
            &nopull,
            &["--redirect-gateway", "def1"],
            "redirect-gateway def1 not allowed by profile",
        ),
    ];
    for (name, profile, extra, reason) in refusals {
        let c = procs.spawn(
            "client (uid 65534, refused)",
            nobody(profile, extra),
            out(name),
        )?;
        let status = wait_exit(procs, c, CLIENT_WAIT)?;
        let text = procs.texts(c)?.concat();
        ensure!(
            !status.success() && text.contains("the helper refused"),
            "{name}: the client must exit non-zero saying the helper refused ({status}):\n{text}"
        );
        let log = fs::read_to_string(&helper_log)?;
        let line = log
            .lines()
            .find(|l| l.contains("refused:") && l.contains(reason))
            .with_context(|| {
                format!("{name}: the helper log lacks a refusal with {reason:?}:\n{log}")
            })?;
        println!("interop: {name} exited ({status}); helper: {}", line.trim());
        ensure!(!link_exists(TUN)?, "{name}: {TUN} exists after the refusal");
    }
    ensure!(
        fs::read_to_string(&helper_log)?.contains("(route-nopull)"),
        "the helper's refusal does not name route-nopull"
    );

    // kill -9 of the helper while a client is connected: the helper's guardian removes the
    // routes (the one around the tunnel too) and DNS at once; the device stays until the
    // client, which holds its descriptor, goes.
    let client = procs.spawn(
        "client (uid 65534, second)",
        nobody(&allowed, &[]),
        out("client-nobody-2"),
    )?;
    match procs.wait_init(client, CLIENT_WAIT)? {
        Waited::Init => {}
        other => bail!("the second unprivileged client {other}\n{}", procs.tails()),
    }
    route_via(false, "198.18.7.1", CLIENT_VETH, procs)?;
    procs.kill(helper)?;
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(3);
    loop {
        let v4 = ip_cli(&["route"])?;
        if !v4.contains("198.18.7.0/24") && !v4.contains("10.66.0.0/16") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "3 s after kill -9 of the helper its routes are still there:\n{v4}\n{}",
            procs.tails()
        );
        pause(Duration::from_millis(50))?;
    }
    println!(
        "interop: {:.2}s after kill -9 of the helper its routes are gone ({TUN} exists: {})",
        killed.elapsed().as_secs_f64(),
        link_exists(TUN)?
    );
    let log = fs::read_to_string(&helper_log)?;
    let line = log
        .lines()
        .find(|l| l.contains("guardian: undid"))
        .with_context(|| format!("the helper's guardian logged nothing:\n{log}"))?;
    println!("interop: {}", line.trim());
    procs.kill(client)?;
    wait_restored(before, Duration::from_secs(5), procs)?;
    Ok(())
}

/// `user nobody` + `group nogroup`: OpenVPN drops privileges once the tunnel is up (after
/// `up` and `route-up`, which run as root), and so do we. Then: the process is uid/gid 65534
/// and pings; SIGUSR1 reconnects (the device and its routes are kept, nothing needs root);
/// SIGTERM runs `route-pre-down` and `down` as nobody, and the guardian, still root, undoes
/// the host route to the server and resolv.conf before the client exits (`run` compares the
/// tables and resolv.conf with the snapshot).
fn user_group(env: &Env, case: &Case, cd: &CaseDir, procs: &mut Procs) -> Result<()> {
    // A script that notes its type, uid and context (nobody can write the log, read it).
    let calls = cd.dir.join("hooks.calls");
    let script = cd.dir.join("hooks.sh");
    fs::write(&calls, "")?;
    set_mode(&calls, 0o666)?;
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$script_type $(id -u) ${{script_context:-}} ${{signal:-}}\" >> '{}'\n",
            calls.display()
        ),
    )?;
    set_mode(&script, 0o755)?;
    let mut conf = fs::read_to_string(&cd.client_conf)?;
    for hook in ["up", "route-up", "route-pre-down", "down"] {
        conf.push_str(&format!("{hook} {}\n", script.display()));
    }
    conf.push_str("script-security 2\n");
    fs::write(&cd.client_conf, conf)?;

    let client = start_client(env, cd, procs, "client (user nobody)")?;
    let ids = |procs: &Procs| -> Result<()> {
        let pid = procs.pid(client)?;
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        for key in ["Uid:", "Gid:"] {
            let line = status.lines().find(|l| l.starts_with(key)).unwrap_or("");
            ensure!(
                line.split_whitespace().skip(1).all(|u| u == "65534"),
                "the client does not run as nobody/nogroup: {line}"
            );
        }
        let groups = status
            .lines()
            .find(|l| l.starts_with("Groups:"))
            .unwrap_or("");
        ensure!(
            groups.split_whitespace().count() == 1,
            "supplementary groups kept: {groups}"
        );
        println!("interop: client pid {pid} runs as uid/gid 65534 (real, effective, saved)");
        Ok(())
    };
    ids(procs)?;
    for target in PING_TARGETS {
        ping_ok(&cd.dir, CLIENT_NS, target, procs)?;
    }
    redirect_routes(procs)?;
    let resolv = fs::read_to_string(RESOLV)?;
    ensure!(
        resolv.contains("10.8.0.1"),
        "the pushed DNS is not in {RESOLV}:\n{resolv}"
    );

    // SIGUSR1: a restart as nobody keeps the device and its routes.
    let pid = procs.pid(client)?.to_string();
    let _ = Command::new("kill").args(["-USR1", &pid]).status();
    procs
        .wait_inits(client, 2, Duration::from_secs(30), |_| Ok(()))
        .context("no reconnection after SIGUSR1 as nobody")?;
    ids(procs)?;
    ping_ok(&cd.dir, CLIENT_NS, PING_TARGETS[0], procs)?;
    redirect_routes(procs)?;
    println!("interop: SIGUSR1 as nobody: reconnected, routes kept, pings pass");

    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = wait_exit(procs, client, Duration::from_secs(15))?;
    ensure!(
        status.success(),
        "SIGTERM: the client exited with {status}\n{}",
        procs.tails()
    );
    let text = fs::read_to_string(&calls)?;
    let got: Vec<&str> = text.lines().collect();
    ensure!(
        got == [
            "up 0 init ",
            "route-up 0 init ",
            "route-pre-down 65534 init sigterm",
            "down 65534 init sigterm",
        ],
        "the hooks did not run as expected (type, uid, context, signal):\n{text}"
    );
    println!("interop: up and route-up ran as root, route-pre-down and down as nobody");
    let log = fs::read_to_string(cd.client_conf.with_extension("log"))?;
    let line = log
        .lines()
        .find(|l| l.contains("guardian: undid"))
        .context("the guardian did not undo the routes and DNS after SIGTERM")?;
    println!("interop: {}", line.trim());
    procs.check_logs(&[(client, case.client_log_has)])
}

// ---- helpers ----

/// `ip -n ovrs-cli ARGS`.
fn ip_cli(args: &[&str]) -> Result<String> {
    output(Command::new("ip").args(["-n", CLIENT_NS]).args(args))
}

fn link_exists(dev: &str) -> Result<bool> {
    Ok(Command::new("ip")
        .args(["-n", CLIENT_NS, "link", "show", "dev", dev])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success())
}

/// `ip -n ovrs-cli [-6] route get ADDR` must name `dev`.
fn route_via(v6: bool, addr: &str, dev: &str, procs: &Procs) -> Result<()> {
    let mut args = vec![];
    if v6 {
        args.push("-6");
    }
    args.extend(["route", "get", addr]);
    let text = ip_cli(&args)?;
    let line = text.lines().next().unwrap_or("").trim();
    ensure!(
        line.split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w == ["dev", dev]),
        "route get {addr} in {CLIENT_NS} is not via {dev}: {line}\n{}",
        procs.tails()
    );
    println!("interop: route get {addr}: {line}");
    Ok(())
}

/// SIGTERM to one process; it must exit 0 within 5 s.
fn terminate(procs: &mut Procs, index: usize) -> Result<()> {
    let pid = procs.pid(index)?;
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = wait_exit(procs, index, Duration::from_secs(5))?;
    println!(
        "interop: {} pid {pid} exited on SIGTERM ({status})",
        procs.get(index)?.label
    );
    ensure!(
        status.success(),
        "SIGTERM: the client exited with {status}\n{}",
        procs.tails()
    );
    // A clean exit undoes its own changes; the guardian (which would log into the same
    // file) must find nothing left.
    pause(Duration::from_millis(200))?;
    ensure!(
        procs.count(index, "guardian: undid")? == 0,
        "after SIGTERM the guardian had to undo what the client left\n{}",
        procs.tails()
    );
    Ok(())
}

fn wait_exit(procs: &mut Procs, index: usize, timeout: Duration) -> Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        let proc = procs.0.get_mut(index).context("no such process")?;
        if let Some(status) = proc.child.try_wait()? {
            return Ok(status);
        }
        let label = proc.label;
        ensure!(
            Instant::now() < deadline,
            "{label} still runs after {}s\n{}",
            timeout.as_secs(),
            procs.tails()
        );
        pause(Duration::from_millis(50))?;
    }
}

/// Runs `ARGS` in ovrs-cli; (succeeded, how long, output).
fn timed(args: &[&str]) -> Result<(bool, Duration, String)> {
    let started = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", CLIENT_NS])
        .args(args)
        .output()
        .with_context(|| format!("cannot run {args:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), started.elapsed(), text))
}

unsafe extern "C" {
    /// `setns(2)` from the C library std already links.
    fn setns(fd: i32, nstype: i32) -> i32;
}

/// A TCP connect from inside network namespace `ns` (a thread that joins it; threads have
/// their own network namespace): its result and how long it took.
fn connect_in_ns(ns: &str, addr: SocketAddr) -> Result<(io::Result<()>, Duration)> {
    const CLONE_NEWNET: i32 = 0x4000_0000;
    let file = File::open(Path::new("/run/netns").join(ns))
        .with_context(|| format!("cannot open /run/netns/{ns}"))?;
    let joined = std::thread::spawn(move || {
        // SAFETY: setns only changes this thread's network namespace; the fd is valid.
        if unsafe { setns(file.as_raw_fd(), CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let started = Instant::now();
        let r = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map(drop);
        Ok((r, started.elapsed()))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the connect thread panicked"))?;
    joined.context("setns into the client namespace")
}

/// `tcpdump` on the client's veth with [`LEAK_FILTER`].
struct Capture {
    bg: Bg,
    path: PathBuf,
}

impl Capture {
    fn start(cd: &CaseDir, name: &str) -> Result<Capture> {
        Self::start_with(cd, name, &[LEAK_FILTER])
    }

    /// tcpdump on the client's veth with these extra arguments (options, then the filter).
    fn start_with(cd: &CaseDir, name: &str, filter: &[&str]) -> Result<Capture> {
        let path = cd.dir.join(name);
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            CLIENT_NS,
            "tcpdump",
            // Without it, libpcap hands packets over a block at a time (after up to 1 s),
            // and a capture stopped sooner reports none.
            "--immediate-mode",
            "-l",
            "-n",
            "-i",
            CLIENT_VETH,
        ]);
        cmd.args(filter);
        let bg = Bg::start(&mut cmd, &path)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = fs::read_to_string(&path).unwrap_or_default();
            if text.contains("listening on") {
                return Ok(Capture { bg, path });
            }
            ensure!(Instant::now() < deadline, "tcpdump did not start:\n{text}");
            pause(Duration::from_millis(50))?;
        }
    }

    /// Stops the capture (SIGINT, so tcpdump reports its count); the packets it captured.
    fn finish(mut self) -> Result<u32> {
        let pid = self.bg.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.bg.child.try_wait()?.is_none() {
            ensure!(Instant::now() < deadline, "tcpdump does not stop");
            pause(Duration::from_millis(50))?;
        }
        let text = fs::read_to_string(&self.path)?;
        text.lines()
            .find_map(|l| {
                l.strip_suffix(" packets captured")
                    .or(l.strip_suffix(" packet captured"))
            })
            .and_then(|n| n.trim().parse().ok())
            .with_context(|| format!("no packet count in {}:\n{text}", self.path.display()))
    }
}

/// The profile for the helper: the client.conf with its files inlined (the client, as
/// nobody, cannot read the root-only PKI) and without `log`/`writepid` (its output goes to
/// the harness's file instead).
fn inline_profile(conf: &str) -> Result<String> {
    let mut out = String::new();
    for line in conf.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("log" | "writepid"), _) => {}
            (
                Some(tag @ ("ca" | "cert" | "key" | "tls-crypt" | "tls-auth" | "tls-crypt-v2")),
                Some(file),
            ) => {
                let body =
                    fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
                out.push_str(&format!("<{tag}>\n{}\n</{tag}>\n", body.trim_end()));
                if let ("tls-auth", Some(dir)) = (tag, words.next()) {
                    out.push_str(&format!("key-direction {dir}\n"));
                }
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// `ip route`, `ip -6 route` and `ip rule` of ovrs-cli.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tables {
    v4: String,
    v6: String,
    rules: String,
}

impl Tables {
    fn capture() -> Result<Tables> {
        Ok(Tables {
            v4: ip_cli(&["route"])?,
            v6: ip_cli(&["-6", "route"])?,
            rules: format!("{}{}", ip_cli(&["rule"])?, ip_cli(&["-6", "rule"])?),
        })
    }

    /// `-` lines that are gone, `+` lines that are new.
    fn diff_text(before: &str, now: &str) -> String {
        let a: Vec<&str> = before.lines().collect();
        let b: Vec<&str> = now.lines().collect();
        let mut out = String::new();
        for l in a.iter().filter(|l| !b.contains(l)) {
            out.push_str(&format!("  - {l}\n"));
        }
        for l in b.iter().filter(|l| !a.contains(l)) {
            out.push_str(&format!("  + {l}\n"));
        }
        out
    }
}

impl std::fmt::Display for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "## ip route\n{}## ip -6 route\n{}## ip rule\n{}",
            self.v4, self.v6, self.rules
        )
    }
}

/// Polls until the tables equal `before` (the kernel removes a tun's routes as it goes).
fn wait_restored(before: &Tables, within: Duration, procs: &Procs) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let now = Tables::capture()?;
        if &now == before {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the routing tables of {CLIENT_NS} differ from the snapshot:\n{}\n{}",
                Tables::diff_text(&before.to_string(), &now.to_string()),
                procs.tails()
            );
        }
        pause(Duration::from_millis(100))?;
    }
}

/// The laptop topology; dropping it deletes what a failed case left in ovrs-cli's main
/// tables (compared with the snapshot), the default routes, the outside addresses and
/// resolv.conf.
struct LaptopNet {
    snapshot: Option<Tables>,
}

impl LaptopNet {
    fn up() -> Result<LaptopNet> {
        let net = LaptopNet { snapshot: None };
        let srv = |args: &[&str]| output(Command::new("ip").args(["-n", SERVER_NS]).args(args));
        srv(&["addr", "add", &format!("{OUT4}/32"), "dev", "lo"])?;
        srv(&["addr", "add", &format!("{OUT6}/128"), "dev", "lo", "nodad"])?;
        ip_cli(&[
            "route",
            "add",
            "default",
            "via",
            "10.77.0.1",
            "dev",
            CLIENT_VETH,
        ])?;
        ip_cli(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fd77::1",
            "dev",
            CLIENT_VETH,
        ])?;
        let dir = Path::new(RESOLV).parent().context("resolv.conf path")?;
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        fs::write(RESOLV, RESOLV_ORIGINAL).with_context(|| format!("cannot write {RESOLV}"))?;
        println!(
            "interop: laptop topology: {CLIENT_NS} default via 10.77.0.1 / fd77::1, {OUT4} and {OUT6} on {SERVER_NS}'s lo, {RESOLV}"
        );
        Ok(net)
    }
}

impl Drop for LaptopNet {
    fn drop(&mut self) {
        if let (Some(before), Ok(now)) = (&self.snapshot, Tables::capture()) {
            for (family, old, new) in [("-4", &before.v4, &now.v4), ("-6", &before.v6, &now.v6)] {
                for line in new.lines().filter(|l| !old.lines().any(|o| o == *l)) {
                    // prefix [via GW] dev DEV [metric M]: enough to name the route.
                    let words: Vec<&str> = line.split_whitespace().collect();
                    let mut args = vec!["-n", CLIENT_NS, family, "route", "del", words[0]];
                    for key in ["via", "dev", "metric", "proto"] {
                        let at = words.iter().position(|w| *w == key);
                        if let Some(v) = at.and_then(|i| words.get(i + 1)) {
                            args.extend([key, v]);
                        }
                    }
                    let _ = run_ip(&args);
                    println!("interop: removed a leftover route from {CLIENT_NS}: {line}");
                }
            }
        }
        let _ = ip_cli(&["route", "del", "default", "via", "10.77.0.1"]);
        let _ = ip_cli(&["-6", "route", "del", "default", "via", "fd77::1"]);
        for addr in [format!("{OUT4}/32"), format!("{OUT6}/128")] {
            let _ = run_ip(&["-n", SERVER_NS, "addr", "del", &addr, "dev", "lo"]);
        }
        let _ = fs::remove_file(RESOLV);
        if let Some(dir) = Path::new(RESOLV).parent() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// /tmp/ovrs-laptop-PID (root, 0755): profiles/, outside/, sock/, run/ for the helper;
/// removed when dropped. Under /tmp (sticky) because the helper wants every directory above a
/// profile owned by root and not writable by others, which a checkout may not be.
struct Lab {
    dir: PathBuf,
}

impl Lab {
    fn new() -> Result<Lab> {
        let dir = PathBuf::from(format!("/tmp/ovrs-laptop-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        let lab = Lab { dir };
        for sub in ["", "profiles", "outside", "sock", "run"] {
            let d = lab.dir.join(sub);
            fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
            set_mode(&d, 0o755)?;
        }
        Ok(lab)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Procs {
    /// Starts `cmd` (already with `ip netns exec …`), output appended to `logs[1]`.
    pub(super) fn spawn(
        &mut self,
        label: &'static str,
        mut cmd: Command,
        logs: [PathBuf; 2],
    ) -> Result<usize> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(&logs[1])
            .with_context(|| format!("cannot create {}", logs[1].display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let shown = crate::show(&cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        println!("interop: {label} pid {}: {shown}", child.id());
        self.0.push(Proc { label, child, logs });
        Ok(self.0.len() - 1)
    }
}
