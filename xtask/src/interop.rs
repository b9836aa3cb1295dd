//! The interop harness: runs each [`Case`] in the ovrs-srv / ovrs-cli / ovrs-cli2 namespaces.
//!
//! ```text
//! scripts/pki.sh target/interop/pki        (kept between runs)
//! scripts/netns.sh up                      ovrs-srv 10.77.0.1 <-veth-> ovrs-cli 10.77.0.2
//!                                          ovrs-srv 10.77.1.1 <-veth-> ovrs-cli2 10.77.1.2
//! for each enabled case, one after the other:
//!     scripts/ovpn-conf.sh server|client   target/interop/<case>/{server,client1}.conf
//!     ip netns exec ovrs-srv <server> --config server.conf     (pid kept)
//!     wait for "Initialization Sequence Completed"
//!     ip netns exec ovrs-cli <client> --config client1.conf    (pid kept)
//!     wait, then ping 10.8.0.1 and fd08::1 from ovrs-cli
//!     the case's Scenario (second client, float, flood, restart, ...)
//!     SIGTERM (then SIGKILL) the pids this case started
//! scripts/netns.sh down                    always: on error, panic, SIGINT or SIGTERM too
//! interop: N passed, M failed              the last line
//! ```
//!
//! SIGINT and SIGTERM only set a flag; every wait in here polls it, so an interrupted run
//! unwinds through the same drop guards (processes by pid, then the namespaces).

use std::ffi::OsStr;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::cases::{CASES, Case, Expect, Impl, Proto, Scenario};

/// The laptop-safety cases ([`Scenario::Laptop`]); a child module, so it shares the private
/// helpers below.
#[path = "laptop.rs"]
mod laptop;

/// The corpus cases ([`Scenario::CorpusServer`], [`Scenario::CorpusClient`]).
#[path = "corpus_lab.rs"]
mod corpus_lab;

#[path = "proxy_lab.rs"]
mod proxy_lab;
#[path = "resolved.rs"]
mod resolved;
#[path = "server_ops.rs"]
mod server_ops;

const SERVER_NS: &str = "ovrs-srv";
const CLIENT_NS: &str = "ovrs-cli";
const CLIENT2_NS: &str = "ovrs-cli2";
const CLIENT_VETH: &str = "ovrs-veth-c";
const INIT_DONE: &str = "Initialization Sequence Completed";
const SERVER_WAIT: Duration = Duration::from_secs(15);
const CLIENT_WAIT: Duration = Duration::from_secs(30);
/// How long a client that must not connect is watched.
const NO_TUNNEL_WAIT: Duration = Duration::from_secs(12);
const PING_TARGETS: [&str; 2] = ["10.8.0.1", "fd08::1"];
/// The address the float/roaming cases move the client to, and the unreachable first
/// address of the dual-address case.
const SPARE_ADDR: &str = "10.77.0.3";

/// Set by SIGINT/SIGTERM.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Command-line options of `cargo xtask interop`.
#[derive(Debug, Default)]
pub(crate) struct Options {
    /// Run only enabled cases whose name contains this.
    filter: Option<String>,
    /// Print the table and exit.
    list: bool,
    /// Also run disabled cases (to try one that is not ready for CI yet).
    all: bool,
    /// Use the release binaries as they are in target/release instead of building them.
    no_build: bool,
}

impl Options {
    pub(crate) fn parse(args: &[String]) -> Result<Options> {
        let mut opts = Options::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--filter" => {
                    let value = args.next().context("--filter needs a NAME")?;
                    opts.filter = Some(value.clone());
                }
                "--list" => opts.list = true,
                "--all" => opts.all = true,
                "--no-build" => opts.no_build = true,
                other => {
                    bail!(
                        "interop: unknown argument '{other}' (use --filter NAME, --all, --list, --no-build)"
                    )
                }
            }
        }
        Ok(opts)
    }
}

/// Paths shared by all cases.
struct Env {
    root: PathBuf,
    scripts: PathBuf,
    pki: PathBuf,
    out: PathBuf,
    /// Our release binaries, if the workspace has them: (server, client).
    ours: (Option<PathBuf>, Option<PathBuf>),
}

pub(crate) fn run(opts: &Options) -> Result<()> {
    if opts.list {
        for case in CASES {
            println!(
                "{:<50} {:<8} server={:?} client={:?} proto={} tls={} ciphers={}/{} expect={:?} {:?}",
                case.name,
                if case.enabled { "enabled" } else { "disabled" },
                case.server,
                case.client,
                case.proto.as_str(),
                case.wrap.as_str(),
                case.server_ciphers,
                case.client_ciphers,
                case.expect,
                case.scenario,
            );
        }
        return Ok(());
    }
    let selected: Vec<&Case> = CASES
        .iter()
        .filter(|c| c.enabled || opts.all)
        .filter(|c| opts.filter.as_deref().is_none_or(|f| c.name.contains(f)))
        .collect();
    if selected.is_empty() {
        bail!(
            "no interop case to run matches {:?} (see cargo xtask interop --list; --all runs disabled ones)",
            opts.filter
        );
    }
    if !crate::is_root()? {
        bail!("interop needs root: it creates network namespaces and tun devices");
    }
    which("openvpn").context("the real OpenVPN is needed (apt-get install openvpn)")?;
    which("ping").context("ping is needed (apt-get install iputils-ping)")?;
    install_signal_handlers();

    let root = crate::workspace_root()?;
    let out = root.join("target/interop");
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut env = Env {
        scripts: root.join("scripts"),
        pki: out.join("pki"),
        out,
        ours: (None, None),
        root,
    };
    env.ours = build_ours(&env.root, &selected, opts.no_build)?;
    script(&env, "pki.sh", &[env.pki.as_os_str()])?;

    let run_started = Instant::now();
    // Leftovers from an interrupted run would make `up` a no-op.
    script(&env, "netns.sh", &[OsStr::new("down")])?;
    let namespaces = Namespaces { env: &env };
    script(&env, "netns.sh", &[OsStr::new("up")])?;

    let (mut passed, mut failed) = (0, 0);
    for case in selected {
        if interrupted() {
            break;
        }
        let started = Instant::now();
        println!("interop: --- {}", case.name);
        match run_case(&env, case) {
            Ok(()) => {
                passed += 1;
                println!(
                    "PASS {} ({:.1}s)",
                    case.name,
                    started.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                failed += 1;
                println!(
                    "FAIL {} ({:.1}s): {e:#}",
                    case.name,
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    drop(namespaces);
    if interrupted() {
        println!("interop: interrupted; stopped what was started and removed the namespaces");
    }
    if failed > 0 {
        println!("interop: logs in {}", env.out.display());
    }
    println!(
        "interop: cases took {:.0}s",
        run_started.elapsed().as_secs_f64()
    );
    println!("interop: {passed} passed, {failed} failed");
    if failed > 0 || interrupted() {
        // The summary above stays the last line: exit without another error message.
        std::process::exit(1);
    }
    Ok(())
}

/// Tears the namespaces down when dropped, whatever happened in between.
struct Namespaces<'a> {
    env: &'a Env,
}

impl Drop for Namespaces<'_> {
    fn drop(&mut self) {
        if let Err(e) = script(self.env, "netns.sh", &[OsStr::new("down")]) {
            eprintln!("interop: teardown failed: {e:#}");
            return;
        }
        let left = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if left.lines().any(|l| l.starts_with("ovrs-")) {
            eprintln!("interop: teardown left namespaces behind:\n{left}");
        } else {
            println!("interop: namespaces {SERVER_NS}, {CLIENT_NS} and {CLIENT2_NS} removed");
        }
    }
}

// ---- signals ----

unsafe extern "C" {
    /// `signal(2)` from the C library std already links.
    fn signal(signum: i32, handler: usize) -> usize;
}

extern "C" fn on_signal(_signum: i32) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM set [`INTERRUPTED`] instead of killing the harness, so the drop guards
/// run. (Programs we start get default dispositions back on exec.)
fn install_signal_handlers() {
    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;
    let handler = on_signal as extern "C" fn(i32) as usize;
    for signum in [SIGINT, SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            signal(signum, handler);
        }
    }
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn check_interrupt() -> Result<()> {
    if interrupted() {
        bail!("interrupted by a signal");
    }
    Ok(())
}

/// Sleeps, waking every 100 ms to notice a signal.
fn pause(d: Duration) -> Result<()> {
    let deadline = Instant::now() + d;
    loop {
        check_interrupt()?;
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        sleep((deadline - now).min(Duration::from_millis(100)));
    }
}

// ---- cases ----

/// Where one case keeps its files.
struct CaseDir {
    dir: PathBuf,
    server_conf: PathBuf,
    client_conf: PathBuf,
}

fn run_case(env: &Env, case: &Case) -> Result<()> {
    let dir = env.out.join(case.name);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    fs::create_dir_all(&dir)?;
    let cd = CaseDir {
        server_conf: dir.join("server.conf"),
        client_conf: dir.join("client1.conf"),
        dir,
    };
    if let Scenario::CorpusServer(_) | Scenario::CorpusClient { .. } = case.scenario {
        return corpus_lab::run(env, case, &cd);
    }
    let scenario_server = scenario_extra(case, Role::Server, &cd.dir)?;
    let scenario_client = scenario_extra(case, Role::Client, &cd.dir)?;
    write_conf(
        env,
        case,
        Role::Server,
        &cd.server_conf,
        &ConfArgs::default(),
        &scenario_server,
    )?;
    let client_args = ConfArgs {
        remote: (case.scenario == Scenario::DualStack)
            .then_some("vpn.test")
            .or(proxy_lab::remote(case)),
        ..ConfArgs::default()
    };
    write_conf(
        env,
        case,
        Role::Client,
        &cd.client_conf,
        &client_args,
        &scenario_client,
    )?;
    if case.scenario == Scenario::SameConfig {
        return same_config(env, case, &cd);
    }
    if let Scenario::Laptop(check) = case.scenario {
        return laptop::run(env, case, &cd, check);
    }
    if case.scenario == Scenario::Resolved {
        return resolved::run(env, case, &cd);
    }

    // Dropping these guards stops whatever was started and undoes namespace changes, on
    // every return path. Declared first, so dropped after the processes.
    let _net = NetGuard;
    // The lab proxy outlives the client (dropped after `procs`), so that stopping the case
    // does not look like a lost connection to it.
    let _proxy = proxy_lab::before_client(case, &cd)?;
    let mut procs = Procs(Vec::new());
    let server = procs.start_server(env, case, &cd)?;
    if case.scenario == Scenario::DualStack {
        dual_address_hosts()?;
    }
    let _agent = server_ops::before_client(case, &cd)?;
    let client = procs.start(
        env,
        case.client,
        Role::Client,
        "client",
        CLIENT_NS,
        &cd.client_conf,
    )?;
    match (case.expect, procs.wait_init(client, wait_for(case))?) {
        (Expect::Tunnel, Waited::Init) => {}
        (Expect::Tunnel, other) => bail!("client {other}\n{}", procs.tails()),
        (Expect::NoTunnel, Waited::Init) => {
            bail!(
                "client connected but the case expects no tunnel\n{}",
                procs.tails()
            )
        }
        (Expect::NoTunnel, other) => {
            println!("interop: client {other}, as expected");
            if case.client == Impl::Ours {
                match other {
                    Waited::Exited(status) if !status.success() => {}
                    other => bail!(
                        "our client must exit with a non-zero status, but it {other}\n{}",
                        procs.tails()
                    ),
                }
            }
            return procs
                .check_logs(&[(server, case.server_log_has), (client, case.client_log_has)]);
        }
    }
    for target in PING_TARGETS {
        ping_ok(&cd.dir, CLIENT_NS, target, &procs)?;
    }
    match case.scenario {
        Scenario::Ping
        | Scenario::UserPass { .. }
        | Scenario::SameConfig
        | Scenario::Laptop(_)
        | Scenario::Resolved
        | Scenario::CorpusServer(_)
        | Scenario::CorpusClient { .. } => {}
        Scenario::TwoClients { second_ciphers } => {
            two_clients(env, case, &cd, &mut procs, second_ciphers)?
        }
        Scenario::Float => float(&cd, &procs, client)?,
        Scenario::LongPing { secs } => {
            let r = ping_run(&cd.dir, CLIENT_NS, PING_TARGETS[0], secs * 2, "0.5")?;
            println!("interop: continuous ping for {secs}s: {}", r.summary());
            ensure!(
                r.sent >= secs * 2 && r.received == r.sent,
                "pings were lost during {secs}s: {}\n{}",
                r.summary(),
                procs.tails()
            );
            // The real peer logs each new data channel key; renegotiation every 10 s must
            // have replaced the first one at least twice.
            let real = match (case.server, case.client) {
                (Impl::Real, _) => Some(server),
                (_, Impl::Real) => Some(client),
                _ => None,
            };
            if let Some(real) = real {
                let keys = procs.count(real, "Outgoing Data Channel: Cipher")?;
                println!("interop: the real peer installed {keys} data channel keys");
                ensure!(
                    keys >= 3,
                    "only {keys} data channel key(s) in {secs}s: no renegotiation\n{}",
                    procs.tails()
                );
            }
        }
        Scenario::CompressiblePing => {
            let r = ping_result(ping_start_with(
                &cd.dir,
                CLIENT_NS,
                PING_TARGETS[0],
                10,
                "0.2",
                &["-p", "00", "-s", "1000"],
            )?)?;
            println!("interop: compressible pings: {}", r.summary());
            ensure!(
                r.all_ok(),
                "compressible pings were lost: {}\n{}",
                r.summary(),
                procs.tails()
            );
        }
        Scenario::Flood => flood(&cd, &mut procs, server)?,
        Scenario::ServerRestart => server_restart(env, case, &cd, &mut procs, server, client)?,
        Scenario::ServerOps(ops) => {
            server_ops::run(ops, env, case, &cd, &mut procs, server, client)?
        }
        Scenario::Proxy(_) => proxy_lab::check(&cd)?,
        Scenario::DualStack => {
            procs.check_in_order(
                client,
                &[
                    &format!("{SPARE_ADDR}:1194"),
                    "address 1 of 2",
                    "10.77.0.1:1194",
                    "address 2 of 2",
                    INIT_DONE,
                ],
            )?;
        }
    }
    procs.check_logs(&[(server, case.server_log_has), (client, case.client_log_has)])
}

fn wait_for(case: &Case) -> Duration {
    match case.expect {
        Expect::Tunnel => CLIENT_WAIT,
        Expect::NoTunnel => NO_TUNNEL_WAIT,
    }
}

/// Config lines a scenario adds, and the files they refer to (written into `dir`).
fn scenario_extra(case: &Case, role: Role, dir: &Path) -> Result<Vec<String>> {
    let d = dir.display();
    Ok(match (case.scenario, role) {
        (Scenario::TwoClients { .. }, Role::Server) => vec![
            "client-to-client".into(),
            format!("status {d}/status.txt 1"),
            "status-version 2".into(),
        ],
        (Scenario::UserPass { .. }, Role::Server) => {
            let script = dir.join("check-user-pass.sh");
            fs::write(
                &script,
                "#!/bin/sh\n\
                 # auth-user-pass-verify via-file: $1 holds the username, then the password.\n\
                 { read -r user; read -r pass; } < \"$1\"\n\
                 [ \"$user\" = alice ] && [ \"$pass\" = right ]\n",
            )?;
            set_mode(&script, 0o755)?;
            vec![
                "script-security 2".into(),
                format!("auth-user-pass-verify {} via-file", script.display()),
            ]
        }
        (Scenario::UserPass { user, pass }, Role::Client) => {
            let file = dir.join("user-pass.txt");
            fs::write(&file, format!("{user}\n{pass}\n"))?;
            set_mode(&file, 0o600)?;
            vec![format!("auth-user-pass {}", file.display())]
        }
        (Scenario::ServerOps(ops), role) => server_ops::extra(ops, role, dir)?,
        (Scenario::Proxy(kind), role) => proxy_lab::extra(kind, role, dir)?,
        _ => Vec::new(),
    })
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

/// Item 3: a second client in ovrs-cli2; each pings the other through the server.
fn two_clients(
    env: &Env,
    case: &Case,
    cd: &CaseDir,
    procs: &mut Procs,
    second_ciphers: &'static str,
) -> Result<()> {
    let conf2 = cd.dir.join("client2.conf");
    let second = Case {
        client_ciphers: second_ciphers,
        proto: Proto::Udp,
        ..*case
    };
    let args = ConfArgs {
        remote: Some("10.77.1.1"),
        dev: Some("ovrs-tun-c2"),
        cert: Some("client2"),
        ..ConfArgs::default()
    };
    write_conf(env, &second, Role::Client, &conf2, &args, &[])?;
    let c2 = procs.start(
        env,
        case.client,
        Role::Client,
        "client2",
        CLIENT2_NS,
        &conf2,
    )?;
    match procs.wait_init(c2, CLIENT_WAIT)? {
        Waited::Init => {}
        other => bail!("client2 {other}\n{}", procs.tails()),
    }
    let (a4, a6) = tun_addrs(CLIENT_NS, "ovrs-tun-c")?;
    let (b4, b6) = tun_addrs(CLIENT2_NS, "ovrs-tun-c2")?;
    println!("interop: client1 has {a4} {a6}, client2 has {b4} {b6}");
    for target in [&b4, &b6] {
        ping_ok(&cd.dir, CLIENT_NS, target, procs)?;
    }
    for target in [&a4, &a6] {
        ping_ok(&cd.dir, CLIENT2_NS, target, procs)?;
    }
    // The status file is rewritten every second.
    let status = cd.dir.join("status.txt");
    let want = [
        ("CLIENT_LIST,client1,", case.client_ciphers),
        ("CLIENT_LIST,client2,", second_ciphers),
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = fs::read_to_string(&status).unwrap_or_default();
        let listed = want.iter().all(|(prefix, cipher)| {
            text.lines()
                .any(|l| l.starts_with(prefix) && l.ends_with(&format!(",{cipher}")))
        });
        if listed {
            println!(
                "interop: status file lists client1 ({}) and client2 ({second_ciphers})",
                case.client_ciphers
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} does not list client1 with {} and client2 with {second_ciphers}:\n{text}",
                status.display(),
                case.client_ciphers
            );
        }
        pause(Duration::from_millis(300))?;
    }
}

/// The v4 and v6 (global) addresses of a tun device.
fn tun_addrs(ns: &str, dev: &str) -> Result<(String, String)> {
    let text = output(Command::new("ip").args(["-n", ns, "-o", "addr", "show", "dev", dev]))?;
    let find = |family: &str| {
        text.lines()
            .filter(|l| !l.contains("scope link"))
            .find_map(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == family)?;
                words.next()?.split('/').next().map(str::to_owned)
            })
            .with_context(|| format!("{dev} in {ns} has no {family} address:\n{text}"))
    };
    Ok((find("inet")?, find("inet6")?))
}

/// Items 4 and 14: the client's address moves from 10.77.0.2 to 10.77.0.3 while it pings.
fn float(cd: &CaseDir, procs: &Procs, client: usize) -> Result<()> {
    let ping = ping_start(&cd.dir, CLIENT_NS, PING_TARGETS[0], 40, "0.2")?;
    pause(Duration::from_secs(3))?;
    // Deleting the primary address would take the secondary with it, unless promoted.
    run_ip(&[
        "netns",
        "exec",
        CLIENT_NS,
        "sysctl",
        "-q",
        "-w",
        &format!("net.ipv4.conf.{CLIENT_VETH}.promote_secondaries=1"),
    ])?;
    run_ip(&[
        "-n",
        CLIENT_NS,
        "addr",
        "add",
        &format!("{SPARE_ADDR}/24"),
        "dev",
        CLIENT_VETH,
    ])?;
    run_ip(&[
        "-n",
        CLIENT_NS,
        "addr",
        "del",
        "10.77.0.2/24",
        "dev",
        CLIENT_VETH,
    ])?;
    println!("interop: moved the client from 10.77.0.2 to {SPARE_ADDR}");
    let r = ping_result(ping)?;
    println!("interop: ping across the move: {}", r.summary());
    ensure!(
        r.sent >= 40 && r.received + 2 >= r.sent,
        "more than 2 pings lost across the address change: {}\n{}",
        r.summary(),
        procs.tails()
    );
    let inits = procs.count(client, INIT_DONE)?;
    ensure!(
        inits == 1,
        "the client initialised {inits} times (a new session instead of a float)\n{}",
        procs.tails()
    );
    Ok(())
}

/// Item 7: junk at the server port from ovrs-cli while the client pings.
fn flood(cd: &CaseDir, procs: &mut Procs, server: usize) -> Result<()> {
    let pid = procs.pid(server)?;
    let rss_before = vm_rss_kib(pid)?;
    let ping = ping_start(&cd.dir, CLIENT_NS, PING_TARGETS[0], 40, "0.2")?;
    let exe = std::env::current_exe().context("cannot find the xtask executable")?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", CLIENT_NS]).arg(&exe).args([
        "flood-send",
        "10.77.0.1:1194",
        "20000",
    ]);
    let sender = Bg::start(&mut cmd, &cd.dir.join("flood.out"))?;
    let (status, text) = sender.finish(Duration::from_secs(15))?;
    print!("{text}");
    ensure!(status.success(), "the junk sender failed ({status})");
    let r = ping_result(ping)?;
    println!("interop: ping during the flood: {}", r.summary());
    let alive = procs.alive(server)?;
    ensure!(alive, "our server died during the flood\n{}", procs.tails());
    let rss_after = vm_rss_kib(pid)?;
    println!("interop: server VmRSS {rss_before} kB before, {rss_after} kB after");
    ensure!(
        r.received + 1 >= r.sent,
        "more than 1 ping lost during the flood: {}\n{}",
        r.summary(),
        procs.tails()
    );
    ensure!(
        rss_after < rss_before + 5 * 1024,
        "server RSS grew by {} kB (limit 5120)",
        rss_after.saturating_sub(rss_before)
    );
    Ok(())
}

fn vm_rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// Item 10: SIGKILL the server, start it again on the same config, the client reconnects.
fn server_restart(
    env: &Env,
    case: &Case,
    cd: &CaseDir,
    procs: &mut Procs,
    server: usize,
    client: usize,
) -> Result<()> {
    procs.kill(server)?;
    let log = cd.server_conf.with_extension("log");
    if log.exists() {
        fs::rename(&log, cd.dir.join("server-before-restart.log"))?;
    }
    let again = procs.start(
        env,
        case.server,
        Role::Server,
        "server (restarted)",
        SERVER_NS,
        &cd.server_conf,
    )?;
    match procs.wait_init(again, SERVER_WAIT)? {
        Waited::Init => {}
        other => bail!("restarted server {other}\n{}", procs.tails()),
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    procs.wait_inits(client, 2, Duration::from_secs(30), |_| Ok(()))?;
    println!(
        "interop: client initialised again {:.1}s after the server came back",
        started.elapsed().as_secs_f64()
    );
    while !ping_run(&cd.dir, CLIENT_NS, PING_TARGETS[0], 1, "1")?.all_ok() {
        ensure!(
            Instant::now() < deadline,
            "no ping through the tunnel within 30s of the restart\n{}",
            procs.tails()
        );
    }
    for target in PING_TARGETS {
        ping_ok(&cd.dir, CLIENT_NS, target, procs)?;
    }
    Ok(())
}

/// Item 11: ovrs-cli resolves vpn.test to 10.77.0.3 (nobody) first, 10.77.0.1 second.
fn dual_address_hosts() -> Result<()> {
    let dir = Path::new("/etc/netns").join(CLIENT_NS);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::write(
        dir.join("hosts"),
        format!("127.0.0.1 localhost\n{SPARE_ADDR} vpn.test\n10.77.0.1 vpn.test\n"),
    )?;
    let text = output(
        Command::new("ip").args(["netns", "exec", CLIENT_NS, "getent", "ahosts", "vpn.test"]),
    )?;
    let mut order: Vec<&str> = Vec::new();
    for addr in text.lines().filter_map(|l| l.split_whitespace().next()) {
        if !order.contains(&addr) {
            order.push(addr);
        }
    }
    ensure!(
        order == [SPARE_ADDR, "10.77.0.1"],
        "getent ahosts vpn.test in {CLIENT_NS} gives {order:?}, not [{SPARE_ADDR}, 10.77.0.1]: \
         the OS orders the addresses differently, so this case cannot test the fallback"
    );
    println!("interop: vpn.test resolves to {order:?} in {CLIENT_NS}");
    Ok(())
}

/// Item 6: the real server and then ours on the byte-identical server.conf.
fn same_config(env: &Env, case: &Case, cd: &CaseDir) -> Result<()> {
    let conf = fs::read(&cd.server_conf)?;
    for (which, name) in [(Impl::Real, "real"), (Impl::Ours, "ours")] {
        let mut procs = Procs(Vec::new());
        let now = fs::read(&cd.server_conf)?;
        ensure!(now == conf, "server.conf changed between the two servers");
        let server = procs.start(
            env,
            which,
            Role::Server,
            "server",
            SERVER_NS,
            &cd.server_conf,
        )?;
        match procs.wait_init(server, SERVER_WAIT)? {
            Waited::Init => println!("interop: the {name} server initialised on server.conf"),
            other => bail!("{name} server {other}\n{}", procs.tails()),
        }
        let client = procs.start(
            env,
            case.client,
            Role::Client,
            "client",
            CLIENT_NS,
            &cd.client_conf,
        )?;
        match procs.wait_init(client, CLIENT_WAIT)? {
            Waited::Init => {}
            other => bail!("client of the {name} server {other}\n{}", procs.tails()),
        }
        for target in PING_TARGETS {
            ping_ok(&cd.dir, CLIENT_NS, target, &procs)?;
        }
        drop(procs);
        for file in ["server.log", "client1.log"] {
            let from = cd.dir.join(file);
            if from.exists() {
                fs::rename(&from, cd.dir.join(format!("{name}-{file}")))?;
            }
        }
    }
    println!(
        "interop: both servers ran on the same {} bytes of server.conf",
        conf.len()
    );
    Ok(())
}

/// Undoes what cases change in the namespaces: the float address and the hosts file.
struct NetGuard;

impl Drop for NetGuard {
    fn drop(&mut self) {
        let has = |addr: &str| {
            output(Command::new("ip").args([
                "-n",
                CLIENT_NS,
                "-o",
                "-4",
                "addr",
                "show",
                "dev",
                CLIENT_VETH,
            ]))
            .is_ok_and(|t| t.contains(&format!("inet {addr}/")))
        };
        if has(SPARE_ADDR) {
            if !has("10.77.0.2") {
                let _ = run_ip(&[
                    "-n",
                    CLIENT_NS,
                    "addr",
                    "add",
                    "10.77.0.2/24",
                    "dev",
                    CLIENT_VETH,
                ]);
            }
            let _ = run_ip(&[
                "-n",
                CLIENT_NS,
                "addr",
                "del",
                &format!("{SPARE_ADDR}/24"),
                "dev",
                CLIENT_VETH,
            ]);
        }
        let hosts = Path::new("/etc/netns").join(CLIENT_NS);
        if hosts.exists() {
            let _ = fs::remove_dir_all(&hosts);
        }
    }
}

fn run_ip(args: &[&str]) -> Result<()> {
    output(Command::new("ip").args(args)).map(drop)
}

/// Runs a short command, failing with its stderr; returns its stdout.
fn output(cmd: &mut Command) -> Result<String> {
    let shown = crate::show(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{shown}`"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---- configs ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Server,
    Client,
}

/// Per-file overrides for `ovpn-conf.sh`.
#[derive(Default)]
struct ConfArgs {
    remote: Option<&'static str>,
    dev: Option<&'static str>,
    cert: Option<&'static str>,
    /// The server's `server-ipv6` network, or `none` for an IPv4-only tunnel.
    server_ipv6: Option<&'static str>,
}

fn write_conf(
    env: &Env,
    case: &Case,
    role: Role,
    conf: &Path,
    over: &ConfArgs,
    more: &[String],
) -> Result<()> {
    let (role_name, ciphers, extra) = match role {
        Role::Server => ("server", case.server_ciphers, case.server_extra),
        Role::Client => ("client", case.client_ciphers, case.client_extra),
    };
    let mut args: Vec<&OsStr> = vec![
        OsStr::new(role_name),
        conf.as_os_str(),
        env.pki.as_os_str(),
        OsStr::new("--proto"),
        OsStr::new(case.proto.as_str()),
        OsStr::new("--tls"),
        OsStr::new(case.wrap.as_str()),
        OsStr::new("--cipher"),
        OsStr::new(ciphers),
    ];
    for (flag, value) in [
        ("--remote", over.remote),
        ("--dev", over.dev),
        ("--cert", over.cert),
        ("--server-ipv6", over.server_ipv6),
    ] {
        if let Some(value) = value {
            args.extend([OsStr::new(flag), OsStr::new(value)]);
        }
    }
    for line in extra.iter().copied().chain(more.iter().map(String::as_str)) {
        args.extend([OsStr::new("--extra"), OsStr::new(line)]);
    }
    script(env, "ovpn-conf.sh", &args)
}

// ---- pings and other background commands ----

/// A command we started and must not leave behind: killed (by pid) if dropped running.
struct Bg {
    child: Child,
    out: PathBuf,
    shown: String,
}

impl Bg {
    fn start(cmd: &mut Command, out: &Path) -> Result<Bg> {
        let file = File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let shown = crate::show(cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        Ok(Bg {
            child,
            out: out.to_path_buf(),
            shown,
        })
    }

    /// Waits up to `timeout` for the command; returns its status and output.
    fn finish(mut self, timeout: Duration) -> Result<(ExitStatus, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                let text = fs::read_to_string(&self.out).unwrap_or_default();
                return Ok((status, text));
            }
            check_interrupt()?;
            if Instant::now() >= deadline {
                bail!("`{}` still runs after {}s", self.shown, timeout.as_secs());
            }
            sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The counts of one ping run.
struct PingResult {
    target: String,
    sent: u32,
    received: u32,
    text: String,
}

impl PingResult {
    fn all_ok(&self) -> bool {
        self.sent > 0 && self.received == self.sent
    }

    fn summary(&self) -> String {
        format!(
            "{}: {} sent, {} received",
            self.target, self.sent, self.received
        )
    }
}

/// Numbers ping output files within a run.
static PING_SEQ: AtomicUsize = AtomicUsize::new(0);

/// Starts `ping -c COUNT -i INTERVAL -W 2 TARGET` in `ns`, output into `dir`.
fn ping_start(
    dir: &Path,
    ns: &str,
    target: &str,
    count: u32,
    interval: &str,
) -> Result<(Bg, String, u32, f64)> {
    ping_start_with(dir, ns, target, count, interval, &[])
}

/// [`ping_start`] with more ping options (e.g. `-p 00 -s 1000`) before the target.
fn ping_start_with(
    dir: &Path,
    ns: &str,
    target: &str,
    count: u32,
    interval: &str,
    options: &[&str],
) -> Result<(Bg, String, u32, f64)> {
    let n = PING_SEQ.fetch_add(1, Ordering::Relaxed);
    let count_s = count.to_string();
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns", "exec", ns, "ping", "-n", "-c", &count_s, "-i", interval, "-W", "2",
    ]);
    cmd.args(options).arg(target);
    let bg = Bg::start(&mut cmd, &dir.join(format!("ping-{n}.txt")))?;
    let secs = f64::from(count) * interval.parse::<f64>().unwrap_or(1.0);
    Ok((bg, target.to_owned(), count, secs))
}

fn ping_result((bg, target, _count, secs): (Bg, String, u32, f64)) -> Result<PingResult> {
    let (_status, text) = bg.finish(Duration::from_secs_f64(secs + 10.0))?;
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or("");
    let number_before = |word: &str| -> u32 {
        line.split(',')
            .find(|part| part.contains(word))
            .and_then(|part| part.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Ok(PingResult {
        target,
        sent: number_before("transmitted"),
        received: number_before("received"),
        text,
    })
}

fn ping_run(dir: &Path, ns: &str, target: &str, count: u32, interval: &str) -> Result<PingResult> {
    ping_result(ping_start(dir, ns, target, count, interval)?)
}

/// Three quick pings that must all be answered.
fn ping_ok(dir: &Path, ns: &str, target: &str, procs: &Procs) -> Result<()> {
    let r = ping_run(dir, ns, target, 3, "0.2")?;
    println!("interop: {ns} -> {}", r.summary());
    ensure!(
        r.all_ok(),
        "ping {target} from {ns} failed:\n{}\n{}",
        r.text,
        procs.tails()
    );
    Ok(())
}

/// How waiting for a process's "Initialization Sequence Completed" ended.
enum Waited {
    Init,
    Exited(ExitStatus),
    Timeout(Duration),
}

impl std::fmt::Display for Waited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Waited::Init => write!(f, "initialized"),
            Waited::Exited(status) => write!(f, "exited before initializing ({status})"),
            Waited::Timeout(d) => write!(f, "not initialized after {}s", d.as_secs()),
        }
    }
}

/// A process this harness started, with where its output goes.
struct Proc {
    label: &'static str,
    child: Child,
    /// The `log` file from the config, and captured stdout/stderr.
    logs: [PathBuf; 2],
}

/// The processes of one case; all are stopped, by pid, when this is dropped.
struct Procs(Vec<Proc>);

impl Procs {
    fn start(
        &mut self,
        env: &Env,
        which: Impl,
        role: Role,
        label: &'static str,
        ns: &str,
        conf: &Path,
    ) -> Result<usize> {
        let program = match (which, role) {
            (Impl::Real, _) => PathBuf::from("openvpn"),
            (Impl::Ours, Role::Server) => env.ours.0.clone().context(
                "case needs target/release/openvpn-server, but the workspace has no such binary",
            )?,
            (Impl::Ours, Role::Client) => env.ours.1.clone().context(
                "case needs target/release/openvpn-client, but the workspace has no such binary",
            )?,
        };
        let out_path = conf.with_extension("out");
        let out = File::options()
            .create(true)
            .append(true)
            .open(&out_path)
            .with_context(|| format!("cannot create {}", out_path.display()))?;
        let mut cmd = Command::new("ip");
        if (which, role) == (Impl::Ours, Role::Client) {
            // Route/DNS journals of this case only: our client recovers journals whose device
            // it cannot see, and from a namespace it cannot see the host's (or another
            // namespace's) devices, so the shared /run/openvpn-rs is not for it.
            let run_dir = conf.with_file_name("run");
            fs::create_dir_all(&run_dir)?;
            cmd.env("OPENVPN_RS_RUN_DIR", run_dir);
        }
        cmd.args(["netns", "exec", ns])
            .arg(&program)
            .arg("--config")
            .arg(conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let shown = crate::show(&cmd);
        // `ip netns exec` execs the program, so the child's pid is the program's pid.
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        println!("interop: {label} pid {}: {shown}", child.id());
        self.0.push(Proc {
            label,
            child,
            logs: [conf.with_extension("log"), out_path],
        });
        Ok(self.0.len() - 1)
    }

    /// Starts the case's server in ovrs-srv on its server.conf and waits until it is
    /// initialised; anything else is an error with the logs' tails.
    fn start_server(&mut self, env: &Env, case: &Case, cd: &CaseDir) -> Result<usize> {
        let server = self.start(
            env,
            case.server,
            Role::Server,
            "server",
            SERVER_NS,
            &cd.server_conf,
        )?;
        match self.wait_init(server, SERVER_WAIT)? {
            Waited::Init => Ok(server),
            other => bail!("server {other}\n{}", self.tails()),
        }
    }

    fn get(&self, index: usize) -> Result<&Proc> {
        self.0.get(index).context("no such process")
    }

    fn pid(&self, index: usize) -> Result<u32> {
        Ok(self.get(index)?.child.id())
    }

    fn alive(&mut self, index: usize) -> Result<bool> {
        let proc = self.0.get_mut(index).context("no such process")?;
        Ok(proc.child.try_wait()?.is_none())
    }

    /// SIGKILL, as a crash would.
    fn kill(&mut self, index: usize) -> Result<()> {
        let proc = self.0.get_mut(index).context("no such process")?;
        proc.child.kill()?;
        proc.child.wait()?;
        println!(
            "interop: killed {} pid {} (SIGKILL)",
            proc.label,
            proc.child.id()
        );
        Ok(())
    }

    fn wait_init(&mut self, index: usize, timeout: Duration) -> Result<Waited> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.count(index, INIT_DONE)? > 0 {
                return Ok(Waited::Init);
            }
            let proc = self.0.get_mut(index).context("no such process")?;
            if let Some(status) = proc.child.try_wait()? {
                // It may have logged success and exited in the same breath.
                if self.count(index, INIT_DONE)? > 0 {
                    return Ok(Waited::Init);
                }
                return Ok(Waited::Exited(status));
            }
            if Instant::now() >= deadline {
                return Ok(Waited::Timeout(timeout));
            }
            pause(Duration::from_millis(100))?;
        }
    }

    /// Waits (at most `within`) until process `index` logged `INIT_DONE` at least `n` times
    /// (a client reconnecting: `n` = 2), calling `each` at every look (a check that must
    /// hold all the while); fails as soon as the process exits.
    fn wait_inits(
        &mut self,
        index: usize,
        n: usize,
        within: Duration,
        mut each: impl FnMut(&mut Procs) -> Result<()>,
    ) -> Result<()> {
        let deadline = Instant::now() + within;
        while self.count(index, INIT_DONE)? < n {
            each(self)?;
            let label = self.get(index)?.label;
            ensure!(
                self.alive(index)?,
                "the {label} exited before initialising {n} times\n{}",
                self.tails()
            );
            ensure!(
                Instant::now() < deadline,
                "the {label} did not initialise {n} times within {}s\n{}",
                within.as_secs(),
                self.tails()
            );
            pause(Duration::from_millis(50))?;
        }
        Ok(())
    }

    /// The text of a process's logs, each file separately.
    fn texts(&self, index: usize) -> Result<Vec<String>> {
        Ok(self
            .get(index)?
            .logs
            .iter()
            .filter_map(|p| fs::read_to_string(p).ok())
            .collect())
    }

    /// How often `needle` occurs in the process's log (the fuller of its two files).
    fn count(&self, index: usize, needle: &str) -> Result<usize> {
        Ok(self
            .texts(index)?
            .iter()
            .map(|t| t.matches(needle).count())
            .max()
            .unwrap_or(0))
    }

    /// Fails unless each process's logs contain all of its needles.
    fn check_logs(&self, wanted: &[(usize, &[&str])]) -> Result<()> {
        for &(index, needles) in wanted {
            let text = self.texts(index)?.concat();
            if let Some(missing) = needles.iter().find(|n| !text.contains(**n)) {
                bail!(
                    "{} log lacks {missing:?}\n{}",
                    self.get(index)?.label,
                    self.tails()
                );
            }
        }
        Ok(())
    }

    /// Fails unless one of the process's log files has the needles in this order.
    fn check_in_order(&self, index: usize, needles: &[&str]) -> Result<()> {
        let in_order = |text: &str| {
            let mut rest = text;
            needles.iter().all(|n| match rest.find(n) {
                Some(at) => {
                    rest = &rest[at + n.len()..];
                    true
                }
                None => false,
            })
        };
        if !self.texts(index)?.iter().any(|t| in_order(t)) {
            bail!(
                "{} log lacks, in this order: {needles:?}\n{}",
                self.get(index)?.label,
                self.tails()
            );
        }
        println!(
            "interop: {} log has, in order: {needles:?}",
            self.get(index)?.label
        );
        Ok(())
    }

    /// The last lines of every log, for failure reports.
    fn tails(&self) -> String {
        let mut text = String::new();
        for proc in &self.0 {
            for path in &proc.logs {
                let Ok(body) = fs::read_to_string(path) else {
                    continue;
                };
                if body.trim().is_empty() {
                    continue;
                }
                let lines: Vec<&str> = body.lines().collect();
                let tail = &lines[lines.len().saturating_sub(15)..];
                text.push_str(&format!(
                    "--- {} {} (last {} lines)\n{}\n",
                    proc.label,
                    path.display(),
                    tail.len(),
                    tail.join("\n")
                ));
            }
        }
        text
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for proc in self.0.iter_mut().rev() {
            stop(proc);
        }
    }
}

/// SIGTERM, up to 5 s to exit, then SIGKILL. The pid cannot have been reused: the child is
/// not reaped until we wait for it here.
fn stop(proc: &mut Proc) {
    if matches!(proc.child.try_wait(), Ok(Some(_))) {
        return;
    }
    let pid = proc.child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if matches!(proc.child.try_wait(), Ok(Some(_))) {
            println!("interop: stopped {} pid {pid}", proc.label);
            return;
        }
        sleep(Duration::from_millis(50));
    }
    let _ = proc.child.kill();
    let _ = proc.child.wait();
    println!("interop: killed {} pid {pid} (SIGKILL)", proc.label);
}

/// Runs `scripts/NAME args...`, failing with its output when it fails.
fn script(env: &Env, name: &str, args: &[&OsStr]) -> Result<()> {
    let mut cmd = Command::new("bash");
    cmd.arg(env.scripts.join(name)).args(args);
    crate::netpair::quiet(&mut cmd)
}

/// Builds our release binaries that the selected cases need and the workspace has.
fn build_ours(
    root: &Path,
    cases: &[&Case],
    no_build: bool,
) -> Result<(Option<PathBuf>, Option<PathBuf>)> {
    let wanted: Vec<&str> = [
        (
            "openvpn-server",
            cases.iter().any(|c| c.server == Impl::Ours),
        ),
        (
            "openvpn-client",
            cases.iter().any(|c| c.client == Impl::Ours),
        ),
    ]
    .into_iter()
    .filter_map(|(bin, needed)| needed.then_some(bin))
    .collect();
    if wanted.is_empty() {
        return Ok((None, None));
    }
    let present = workspace_bins(root)?;
    let build: Vec<&str> = wanted
        .into_iter()
        .filter(|b| present.iter().any(|p| p == b))
        .collect();
    if no_build {
        for bin in &build {
            let path = root.join("target/release").join(bin);
            ensure!(
                path.is_file(),
                "--no-build, but {} is missing",
                path.display()
            );
        }
    } else if !build.is_empty() {
        let mut cmd = Command::new(crate::cargo());
        cmd.args(["build", "--release"]).current_dir(root);
        for bin in &build {
            cmd.args(["--bin", bin]);
        }
        crate::run_checked(&mut cmd)?;
    }
    let path = |bin: &str| {
        build
            .contains(&bin)
            .then(|| root.join("target/release").join(bin))
    };
    Ok((path("openvpn-server"), path("openvpn-client")))
}

/// Names of the binary targets in the workspace, from `cargo metadata`.
fn workspace_bins(root: &Path) -> Result<Vec<String>> {
    let out = Command::new(crate::cargo())
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(root)
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(bin_names(&String::from_utf8_lossy(&out.stdout)))
}

/// Finds `"kind":["bin"]` targets in cargo-metadata JSON and returns their names. A tiny
/// scan instead of a JSON parser: cargo writes `kind` before `name` in each target.
fn bin_names(json: &str) -> Vec<String> {
    json.split(r#""kind":["bin"]"#)
        .skip(1)
        .filter_map(|rest| {
            let start = rest.find(r#""name":""#)? + r#""name":""#.len();
            let len = rest[start..].find('"')?;
            Some(rest[start..start + len].to_owned())
        })
        .collect()
}

/// Fails unless `program` is on PATH.
fn which(program: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("'{program}' not found on PATH"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_names_from_metadata() {
        let json = r#"{"packages":[{"name":"openvpn-server","targets":[{"kind":["lib"],"crate_types":["lib"],"name":"openvpn_server"},{"kind":["bin"],"crate_types":["bin"],"name":"openvpn-server","src_path":"/x"}]},{"targets":[{"kind":["bin"],"crate_types":["bin"],"name":"xtask"}]}]}"#;
        assert_eq!(bin_names(json), ["openvpn-server", "xtask"]);
        assert!(bin_names(r#"{"packages":[]}"#).is_empty());
    }

    #[test]
    fn options_parse() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let opts = Options::parse(&args(&["--filter", "real-real", "--list"])).expect("valid");
        assert_eq!(opts.filter.as_deref(), Some("real-real"));
        assert!(opts.list);
        assert!(Options::parse(&args(&["--filter"])).is_err());
        assert!(Options::parse(&args(&["--bogus"])).is_err());
    }
}
