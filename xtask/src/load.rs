//! `cargo xtask load`: many concurrent clients against one server process, ours and the real
//! OpenVPN 2.6 on the same load.
//!
//! ```text
//! cargo build --release --bin openvpn-server --bin ovrs-loadgen
//! scripts/pki.sh target/bench/pki                     (the bench's PKI: EC P-256)
//! ovrsl-srv 10.78.0.1 <-ovrsl-veth-s/-c-> ovrsl-cli 10.78.0.2      (own namespaces)
//! for each server (ours, real):
//!     server.conf: UDP, tls-crypt, AES-256-GCM, `server 10.8.0.0 255.255.240.0` (a /20 pool),
//!                  duplicate-cn, max-clients N+16, keepalive 10 60 (the real one also
//!                  disable-dco and connect-freq-initial high enough not to throttle)
//!     start it in ovrsl-srv (tun ovrsl-tun-s), wait for "Initialization Sequence Completed"
//!     ovrs-loadgen in ovrsl-cli: N clients of our client library, at most C handshakes in
//!         flight; it samples the server's VmRSS and utime+stime itself (same pid namespace)
//!         before the clients, once all are connected, and after a hold; every client pings
//!         10.8.0.1 through its tunnel (round 1), the clients are held (keepalive), round 2
//!     stop the server (by pid)
//! delete the namespaces (always, also on error)
//! table with ratios ours/real; target/bench/load.{json,md}
//! ```

use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::netpair::{NetPair, NetPairSpec, quiet, which};
use crate::stats::{fmt_num, json_notes, median_finite};
use anyhow::{Context, Result, bail};

const SRV_NS: &str = "ovrsl-srv";
const CLI_NS: &str = "ovrsl-cli";
const VETH_S: &str = "ovrsl-veth-s";
const VETH_C: &str = "ovrsl-veth-c";
const TUN_S: &str = "ovrsl-tun-s";
const SRV_ADDR: &str = "10.78.0.1";
const CLI_ADDR: &str = "10.78.0.2";
const TARGET: &str = "10.8.0.1";
const INIT_DONE: &str = "Initialization Sequence Completed";

/// Command-line options of `cargo xtask load`.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Concurrent clients.
    clients: usize,
    /// Handshakes in flight at most.
    concurrency: usize,
    /// Seconds the clients are held after ping round 1.
    hold: u32,
    /// Rounds (ours and real alternate); every row is the median over them.
    repeat: usize,
    /// Which servers: ours, real.
    only: Vec<Server>,
    /// Do not run `cargo build --release` first.
    no_build: bool,
    /// `verb` of both servers.
    verb: u32,
    /// Our server once per entry, with `workers N` (1: the single-worker default).
    workers: Vec<usize>,
    /// The key the server signs each handshake with.
    server_key: ServerKey,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clients: 1000,
            concurrency: 50,
            hold: 15,
            repeat: 3,
            only: vec![Server::Ours, Server::Real],
            no_build: false,
            verb: 3,
            workers: vec![1],
            server_key: ServerKey::Ec,
        }
    }
}

const USAGE: &str = "usage: cargo xtask load [--clients N] [--quick] [--concurrency C] [--hold S] \
                     [--repeat R] [--only ours|real] [--workers N,M..] [--server-key ec|rsa] [--verb N] \
                     [--no-build]";

impl Options {
    pub(crate) fn parse(args: &[String]) -> Result<Options> {
        let mut opts = Options::default();
        let mut args = args.iter();
        let num = |name: &str, v: Option<&String>| -> Result<usize> {
            let v = v.with_context(|| format!("{name} needs a number"))?;
            v.parse()
                .with_context(|| format!("{name}: '{v}' is not a number"))
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--clients" => opts.clients = num("--clients", args.next())?,
                "--concurrency" => opts.concurrency = num("--concurrency", args.next())?,
                "--hold" => opts.hold = num("--hold", args.next())? as u32,
                "--repeat" => opts.repeat = num("--repeat", args.next())?,
                "--verb" => opts.verb = num("--verb", args.next())? as u32,
                "--quick" => {
                    opts.clients = 100;
                    opts.hold = 12;
                    opts.repeat = 1;
                }
                "--only" => {
                    let v = args.next().context("--only needs ours or real")?;
                    opts.only = v
                        .split(',')
                        .map(|s| match s {
                            "ours" => Ok(Server::Ours),
                            "real" => Ok(Server::Real),
                            o => bail!("--only: '{o}' is not ours or real"),
                        })
                        .collect::<Result<_>>()?;
                }
                "--workers" => {
                    let v = args.next().context("--workers needs a list such as 1,2")?;
                    opts.workers = v
                        .split(',')
                        .map(|w| match w.parse::<usize>() {
                            Ok(n @ 1..=64) => Ok(n),
                            _ => bail!("--workers: '{w}' is not a number from 1 to 64"),
                        })
                        .collect::<Result<_>>()?;
                }
                "--server-key" => {
                    opts.server_key = match args.next().map(String::as_str) {
                        Some("ec") => ServerKey::Ec,
                        Some("rsa") => ServerKey::Rsa,
                        other => bail!("--server-key needs ec or rsa, not {other:?}"),
                    }
                }
                "--no-build" => opts.no_build = true,
                other => bail!("load: unknown argument '{other}'\n{USAGE}"),
            }
        }
        if opts.clients == 0 || opts.concurrency == 0 || opts.repeat == 0 {
            bail!("--clients, --concurrency and --repeat must be at least 1");
        }
        // A /20 pool has 4093 client addresses, a /16 65533.
        if opts.clients > 60_000 {
            bail!("--clients: at most 60000");
        }
        Ok(opts)
    }
}

/// Which server the clients connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Ours,
    Real,
}

/// The server's certificate key, from `scripts/pki.sh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerKey {
    /// `server.key`: EC P-256, cheap to sign with (the client's work dominates).
    Ec,
    /// `server-rsa.key`: RSA 3072, about 1.4 ms per signature, so the server's handshake work
    /// dominates and shows whether it spreads over workers.
    Rsa,
}

impl ServerKey {
    /// The PKI file stem of the certificate and key.
    fn stem(self) -> &'static str {
        match self {
            ServerKey::Ec => "server",
            ServerKey::Rsa => "server-rsa",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ServerKey::Ec => "EC P-256",
            ServerKey::Rsa => "RSA 3072",
        }
    }
}

/// One column of the table: a server, and for ours its number of workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Variant {
    server: Server,
    workers: usize,
}

impl Variant {
    /// Short name: `ours`, `ours-w2`, `real`.
    fn label(self) -> String {
        match (self.server, self.workers) {
            (Server::Real, _) => "real".to_owned(),
            (Server::Ours, 1) => "ours".to_owned(),
            (Server::Ours, n) => format!("ours-w{n}"),
        }
    }

    /// Column title.
    fn title(self) -> String {
        match (self.server, self.workers) {
            (Server::Real, _) => "real OpenVPN 2.6".to_owned(),
            (Server::Ours, 1) => "ours".to_owned(),
            (Server::Ours, n) => format!("ours, {n} workers"),
        }
    }
}

struct Env {
    root: PathBuf,
    out: PathBuf,
    pki: PathBuf,
    server_bin: PathBuf,
    loadgen_bin: PathBuf,
    opts: Options,
}

pub(crate) fn run(opts: &Options) -> Result<()> {
    if !crate::is_root()? {
        bail!("load needs root: it creates network namespaces and a tun device");
    }
    which("ip").context("load needs 'ip'")?;
    let root = crate::workspace_root()?;
    let out = root.join("target/bench");
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    if !opts.no_build {
        let mut cmd = Command::new(crate::cargo());
        cmd.args(["build", "--release", "--bin", "openvpn-server"])
            .args(["--bin", "ovrs-loadgen"])
            .current_dir(&root);
        crate::run_checked(&mut cmd)?;
    }
    let env = Env {
        server_bin: root.join("target/release/openvpn-server"),
        loadgen_bin: root.join("target/release/ovrs-loadgen"),
        pki: out.join("pki"),
        out,
        root,
        opts: opts.clone(),
    };
    for bin in [&env.server_bin, &env.loadgen_bin] {
        if !bin.is_file() {
            bail!("{} is missing (run without --no-build)", bin.display());
        }
    }
    quiet(
        Command::new("bash")
            .arg(env.root.join("scripts/pki.sh"))
            .arg(&env.pki),
    )?;
    let mut servers = opts.only.clone();
    let mut notes = Vec::new();
    if servers.contains(&Server::Real) && which("openvpn").is_err() {
        let note = "real OpenVPN skipped: 'openvpn' not found".to_owned();
        println!("load: {note}");
        notes.push(note);
        servers.retain(|s| *s != Server::Real);
    }
    let versions = versions();
    println!(
        "load: {} clients, {} handshakes in flight, hold {} s, {} round(s), server key {}; \
         {versions}",
        opts.clients,
        opts.concurrency,
        opts.hold,
        opts.repeat,
        opts.server_key.describe()
    );
    let variants: Vec<Variant> = servers
        .iter()
        .flat_map(|&server| match server {
            Server::Ours => opts
                .workers
                .iter()
                .map(|&workers| Variant { server, workers })
                .collect(),
            Server::Real => vec![Variant { server, workers: 1 }],
        })
        .collect();

    let netns = NetPair::up(NetPairSpec {
        tool: "load",
        srv: SRV_NS,
        cli: CLI_NS,
        veth_s: VETH_S,
        veth_c: VETH_C,
        srv_addr: SRV_ADDR,
        cli_addr: CLI_ADDR,
    })?;
    let mut results: Vec<(Variant, Result<String>)> = Vec::new();
    for round in 1..=opts.repeat {
        for &variant in &variants {
            if !results.is_empty() {
                sleep(Duration::from_secs(2));
            }
            let label = variant.label();
            println!(
                "== round {round}/{}: {label} server, {} clients",
                opts.repeat, opts.clients
            );
            let r = measure(&env, variant);
            match &r {
                Err(e) => {
                    let note = format!("round {round}, {label} server: {e:#}");
                    println!("load: FAILED {note}");
                    notes.push(note);
                }
                Ok(j) => {
                    if let Some(note) = shortfall(j) {
                        let note = format!("round {round}, {label} server: {note}");
                        println!("load: {note}");
                        notes.push(note);
                    }
                }
            }
            results.push((variant, r));
        }
    }
    drop(netns);

    let report = Report {
        opts,
        versions: &versions,
        notes: &notes,
        columns: variants.iter().map(|&v| (v, find(&results, v))).collect(),
    };
    let md = report.markdown();
    println!("\n{md}");
    fs::write(env.out.join("load.md"), &md)?;
    fs::write(env.out.join("load.json"), report.json())?;
    println!("load: wrote target/bench/load.{{md,json}}");
    if results.iter().all(|(_, r)| r.is_err()) {
        bail!("no server could be measured");
    }
    Ok(())
}

/// What went short in one generator result: clients not connected, pings not answered,
/// reconnects.
fn shortfall(j: &str) -> Option<String> {
    let get = |k| json_number(j, k).unwrap_or(0.0);
    let (n, c) = (get("clients"), get("connected"));
    let mut parts = Vec::new();
    if c < n {
        parts.push(format!("only {c} of {n} clients connected"));
    }
    for (k, when) in [
        ("ping1_ok", "after connect"),
        ("ping2_ok", "after the hold"),
    ] {
        if get(k) < c {
            parts.push(format!("{} of {c} pings answered {when}", get(k)));
        }
    }
    if get("reconnects") > 0.0 {
        parts.push(format!("{} client reconnects", get("reconnects")));
    }
    let first_error = j
        .find("\"errors\": [\"")
        .map(|i| &j[i + 12..])
        .and_then(|t| t.split('"').next());
    if let (false, Some(e)) = (parts.is_empty(), first_error) {
        parts.push(format!("first error: {e}"));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The generator results of one variant, one per round that worked.
fn find(results: &[(Variant, Result<String>)], s: Variant) -> Vec<&str> {
    results
        .iter()
        .filter(|(k, _)| *k == s)
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(String::as_str)
        .collect()
}

/// One server under the load; returns the load generator's JSON.
fn measure(env: &Env, variant: Variant) -> Result<String> {
    let server = variant.server;
    let dir = env.out.join(format!("load-{}", variant.label()));
    fs::create_dir_all(&dir)?;
    let n = env.opts.clients;
    let conf = dir.join("server.conf");
    let log = dir.join("server.log");
    let _ = fs::remove_file(&log);
    fs::write(&conf, server_conf(env, variant, &dir))?;
    let profile = dir.join("client.ovpn");
    fs::write(&profile, client_profile(env))?;
    let result = dir.join("result.json");
    let _ = fs::remove_file(&result);

    let program = match server {
        Server::Ours => env.server_bin.clone(),
        Server::Real => PathBuf::from("openvpn"),
    };
    let mut srv = Proc::start(
        "server",
        SRV_NS,
        &program,
        &["--config".as_ref(), conf.as_os_str()],
        log.clone(),
    )?;
    srv.wait_init(Duration::from_secs(20))?;
    sleep(Duration::from_secs(1)); // let the idle server settle before the baseline
    let pid = srv.child.id().to_string();
    let conc = env.opts.concurrency.to_string();
    let clients = n.to_string();
    let hold = env.opts.hold.to_string();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", CLI_NS])
        .arg(&env.loadgen_bin)
        .arg("--profile")
        .arg(&profile)
        .args(["--clients", &clients, "--concurrency", &conc])
        .args(["--target", TARGET, "--server-pid", &pid, "--hold", &hold])
        .arg("--out")
        .arg(&result)
        // one datagram per call: the batched path's receive buffers (16 x 64 KiB per
        // socket) are for throughput, not for a thousand idle clients in one process
        .env("OPENVPN_RS_FAST_IO", "0")
        .stdin(Stdio::null());
    let status = {
        let shown = crate::show(&cmd);
        println!("  + {shown}");
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        let guard = KillOnDrop(&mut child);
        // generous: connect phase, two ping rounds, hold
        let limit = Duration::from_secs(120 + n as u64 / 2 + u64::from(env.opts.hold) * 2);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = guard.0.try_wait()? {
                break st;
            }
            if Instant::now() > deadline {
                bail!("ovrs-loadgen still running after {} s", limit.as_secs());
            }
            if let Ok(Some(st)) = srv.child.try_wait() {
                bail!("the server exited during the load ({st}): {}", srv.tail());
            }
            sleep(Duration::from_millis(200));
        }
    };
    if !status.success() {
        bail!("ovrs-loadgen failed ({status})");
    }
    let json = fs::read_to_string(&result)
        .with_context(|| format!("ovrs-loadgen wrote no {}", result.display()))?;
    if let Ok(Some(st)) = srv.child.try_wait() {
        bail!("the server exited during the load ({st}): {}", srv.tail());
    }
    drop(srv);
    Ok(json)
}

/// The same server config for both implementations, IPv4-only tunnel with a /20 pool.
fn server_conf(env: &Env, variant: Variant, dir: &Path) -> String {
    let server = variant.server;
    let pki = &env.pki;
    let stem = env.opts.server_key.stem();
    let n = env.opts.clients;
    let mask = if n <= 4000 {
        "255.255.240.0"
    } else {
        "255.255.0.0"
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# written by cargo xtask load ({} server)",
        variant.label()
    );
    for line in [
        "mode server",
        "tls-server",
        &format!("dev {TUN_S}"),
        "dev-type tun",
        "topology subnet",
        "proto udp",
        "port 1194",
        &format!("server 10.8.0.0 {mask}"),
        "keepalive 10 60",
        "duplicate-cn",
        &format!("max-clients {}", n + 16),
        &format!("ca {}/ca.crt", pki.display()),
        &format!("cert {}/{stem}.crt", pki.display()),
        &format!("key {}/{stem}.key", pki.display()),
        "dh none",
        "data-ciphers AES-256-GCM",
        &format!("tls-crypt {}/tc.key", pki.display()),
        &format!("writepid {}/server.pid", dir.display()),
        &format!("log {}/server.log", dir.display()),
        &format!("verb {}", env.opts.verb),
    ] {
        let _ = writeln!(s, "{line}");
    }
    if server == Server::Real {
        // 2.6 answers at most 100 initial packets per 10 s by default (reflection-attack
        // limit); the load's handshakes would be throttled by that, not by the server.
        let _ = writeln!(s, "disable-dco\nconnect-freq-initial 1000000 10");
    }
    if variant.workers > 1 {
        let _ = writeln!(s, "workers {}", variant.workers);
    }
    s
}

/// The profile every load-generator client uses.
fn client_profile(env: &Env) -> String {
    let pki = env.pki.display();
    format!(
        "client\ndev tun\ndev-type tun\nproto udp\nremote {SRV_ADDR} 1194\nnobind\n\
         ca {pki}/ca.crt\ncert {pki}/client1.crt\nkey {pki}/client1.key\n\
         remote-cert-tls server\ndata-ciphers AES-256-GCM\ntls-crypt {pki}/tc.key\nverb 1\n"
    )
}

/// Kills a child (by pid) when dropped unless it has exited.
struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A server process this harness started; stopped by pid (SIGTERM, SIGKILL after 5 s) when
/// dropped.
struct Proc {
    child: Child,
    log: PathBuf,
    out: PathBuf,
}

impl Proc {
    fn start(
        label: &str,
        ns: &str,
        program: &Path,
        args: &[&std::ffi::OsStr],
        log: PathBuf,
    ) -> Result<Proc> {
        let out = log.with_extension("out");
        let file =
            File::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let shown = crate::show(&cmd);
        // `ip netns exec` execs the program: the child's pid is the server's pid
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        println!("  {label} pid {}: {shown}", child.id());
        Ok(Proc { child, log, out })
    }

    fn wait_init(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let done = [&self.log, &self.out]
                .iter()
                .any(|p| fs::read_to_string(p).is_ok_and(|t| t.contains(INIT_DONE)));
            if done {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("server exited ({status}): {}", self.tail());
            }
            if Instant::now() >= deadline {
                bail!(
                    "server not initialized after {} s: {}",
                    timeout.as_secs(),
                    self.tail()
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    fn tail(&self) -> String {
        let mut text = String::new();
        for p in [&self.log, &self.out] {
            if let Ok(body) = fs::read_to_string(p) {
                let lines: Vec<&str> = body.lines().collect();
                for l in &lines[lines.len().saturating_sub(8)..] {
                    text.push_str("\n    ");
                    text.push_str(l);
                }
            }
        }
        text
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        println!("  killed server pid {pid} (SIGKILL)");
    }
}

fn versions() -> String {
    let ovpn = Command::new("openvpn")
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            let first = s.lines().next().unwrap_or("").to_owned();
            first
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{ovpn}; kernel {kernel}; {cpus} cpus")
}

/// A number field of the load generator's flat JSON (`null` and missing: None).
fn json_number(json: &str, key: &str) -> Option<f64> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let v = json[at..].trim_start();
    let len = v
        .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .unwrap_or(v.len());
    v[..len].parse().ok()
}

/// How a row is computed from one generator result.
type Derive = fn(&str) -> Option<f64>;

/// One row of the table.
struct Row {
    key: &'static str,
    desc: &'static str,
    value: Derive,
    /// Whether ours/real means something for this row.
    ratio: bool,
}

fn per_client(j: &str, after: &str) -> Option<f64> {
    let before = json_number(j, "server_rss_kib_before")?;
    let after = json_number(j, after)?;
    let n = json_number(j, "connected")?;
    (n > 0.0).then(|| (after - before) / n)
}

fn per_handshake_ms(j: &str, cpu: &str) -> Option<f64> {
    let cpu = json_number(j, cpu)?;
    let n = json_number(j, "connected")?;
    (n > 0.0).then(|| cpu * 1e3 / n)
}

fn pct(j: &str, ok: &str) -> Option<f64> {
    let ok = json_number(j, ok)?;
    let n = json_number(j, "clients")?;
    (n > 0.0).then(|| ok * 100.0 / n)
}

const ROWS: &[Row] = &[
    Row {
        key: "connected",
        desc: "clients connected",
        value: |j| json_number(j, "connected"),
        ratio: false,
    },
    Row {
        key: "handshakes_per_s",
        desc: "handshakes per second (connect phase)",
        value: |j| json_number(j, "handshakes_per_s"),
        ratio: true,
    },
    Row {
        key: "handshake_ms_p50",
        desc: "handshake time per client, median ms",
        value: |j| json_number(j, "handshake_ms_p50"),
        ratio: true,
    },
    Row {
        key: "handshake_ms_p95",
        desc: "handshake time per client, p95 ms",
        value: |j| json_number(j, "handshake_ms_p95"),
        ratio: true,
    },
    Row {
        key: "server_rss_mib_before",
        desc: "server RSS before the clients, MiB",
        value: |j| json_number(j, "server_rss_kib_before").map(|v| v / 1024.0),
        ratio: true,
    },
    Row {
        key: "server_rss_mib_connected",
        desc: "server RSS with all clients connected, MiB",
        value: |j| json_number(j, "server_rss_kib_connected").map(|v| v / 1024.0),
        ratio: true,
    },
    Row {
        key: "server_rss_mib_peak",
        desc: "server peak RSS (VmHWM) over the run, MiB",
        value: |j| json_number(j, "server_rss_kib_peak").map(|v| v / 1024.0),
        ratio: true,
    },
    Row {
        key: "kib_per_client",
        desc: "**memory per connected client, KiB** (RSS delta / N)",
        value: |j| per_client(j, "server_rss_kib_connected"),
        ratio: true,
    },
    Row {
        key: "kib_per_client_after_hold",
        desc: "memory per client after pings + hold, KiB",
        value: |j| per_client(j, "server_rss_kib_after_hold"),
        ratio: true,
    },
    Row {
        key: "server_cpu_ms_per_handshake",
        desc: "**server CPU per handshake, ms** (utime+stime / N)",
        value: |j| per_handshake_ms(j, "server_cpu_s_connect"),
        ratio: true,
    },
    Row {
        key: "loadgen_cpu_ms_per_handshake",
        desc: "load generator CPU per handshake, ms (our client library)",
        value: |j| per_handshake_ms(j, "loadgen_cpu_s_connect"),
        ratio: true,
    },
    Row {
        key: "server_cpu_pct_hold",
        desc: "server CPU % while holding the clients (keepalive)",
        value: |j| {
            let cpu = json_number(j, "server_cpu_s_hold")?;
            let h = json_number(j, "hold_seconds")?;
            (h > 0.0).then(|| cpu * 100.0 / h)
        },
        ratio: true,
    },
    Row {
        key: "ping1_ok_pct",
        desc: "ping success after connect, % of clients",
        value: |j| pct(j, "ping1_ok"),
        ratio: false,
    },
    Row {
        key: "ping1_first_try_pct",
        desc: "  of which on the first try, % of clients",
        value: |j| pct(j, "ping1_ok_first_try"),
        ratio: false,
    },
    Row {
        key: "ping1_rtt_ms_p50",
        desc: "ping RTT through the tunnel, median ms (all clients pinging)",
        value: |j| json_number(j, "ping1_rtt_ms_p50"),
        ratio: true,
    },
    Row {
        key: "ping2_ok_pct",
        desc: "ping success after the hold, % of clients",
        value: |j| pct(j, "ping2_ok"),
        ratio: false,
    },
    Row {
        key: "reconnects",
        desc: "client reconnects during the run",
        value: |j| json_number(j, "reconnects"),
        ratio: false,
    },
];

/// The table: one column per variant, each the median over its rounds.
struct Report<'a> {
    opts: &'a Options,
    versions: &'a str,
    notes: &'a [String],
    /// Every variant measured, with its generator results (one per round that worked).
    columns: Vec<(Variant, Vec<&'a str>)>,
}

impl Report<'_> {
    /// The median of a row for every column.
    fn values(&self, r: &Row) -> Vec<Option<f64>> {
        self.columns
            .iter()
            .map(|(_, runs)| median_finite(runs.iter().filter_map(|j| (r.value)(j)).collect()))
            .collect()
    }

    /// Which columns are compared, as (numerator, denominator) indices: every ours column
    /// against the real server, and every ours column with more than one worker against the
    /// single-worker one (the scaling).
    fn ratio_pairs(&self) -> Vec<(usize, usize)> {
        let index = |want: Variant| self.columns.iter().position(|(v, _)| *v == want);
        let real = index(Variant {
            server: Server::Real,
            workers: 1,
        });
        let single = index(Variant {
            server: Server::Ours,
            workers: 1,
        });
        let mut pairs = Vec::new();
        for (i, (v, _)) in self.columns.iter().enumerate() {
            if v.server != Server::Ours {
                continue;
            }
            if let Some(r) = real {
                pairs.push((i, r));
            }
        }
        for (i, (v, _)) in self.columns.iter().enumerate() {
            if let (Server::Ours, Some(one)) = (v.server, single)
                && v.workers > 1
            {
                pairs.push((i, one));
            }
        }
        pairs
    }

    fn ratio_label(&self, (n, d): (usize, usize)) -> String {
        format!(
            "{}/{}",
            self.columns[n].0.label(),
            self.columns[d].0.label()
        )
    }

    /// The ratios of a row, in `ratio_pairs` order (None where the row has no ratio).
    fn ratios(&self, r: &Row, values: &[Option<f64>]) -> Vec<Option<f64>> {
        self.ratio_pairs()
            .into_iter()
            .map(|(n, d)| match (values[n], values[d]) {
                (Some(o), Some(x)) if r.ratio && x > 0.0 => Some(o / x),
                _ => None,
            })
            .collect()
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        let rounds: Vec<String> = self
            .columns
            .iter()
            .map(|(v, runs)| format!("{} for {}", runs.len(), v.label()))
            .collect();
        let _ = writeln!(
            s,
            "`cargo xtask load --clients {}` ({} handshakes in flight at most, hold {} s, \
             verb {}, median of {} round(s)): one server process in a namespace, the clients in \
             one `ovrs-loadgen` process (our client library) in another. UDP, tls-crypt, \
             AES-256-GCM, server key {} (CA and clients EC P-256), keepalive 10 60, \
             duplicate-cn. `ours-wN`: our server with `workers N`.",
            self.opts.clients,
            self.opts.concurrency,
            self.opts.hold,
            self.opts.verb,
            rounds.join(", "),
            self.opts.server_key.describe()
        );
        let _ = writeln!(s, "{}\n", self.versions);
        let pairs = self.ratio_pairs();
        s.push_str("| metric |");
        for (v, _) in &self.columns {
            let _ = write!(s, " {} |", v.title());
        }
        for &p in &pairs {
            let _ = write!(s, " {} |", self.ratio_label(p));
        }
        s.push_str("\n| --- |");
        s.push_str(&" ---: |".repeat(self.columns.len() + pairs.len()));
        s.push('\n');
        let cell = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), fmt_num);
        for r in ROWS {
            let values = self.values(r);
            let _ = write!(s, "| {} |", r.desc);
            for v in &values {
                let _ = write!(s, " {} |", cell(*v));
            }
            for ratio in self.ratios(r, &values) {
                let _ = write!(
                    s,
                    " {} |",
                    ratio.map_or_else(String::new, |v| format!("x{v:.2}"))
                );
            }
            s.push('\n');
        }
        for n in self.notes {
            let _ = writeln!(s, "\nNote: {n}");
        }
        s
    }

    fn json(&self) -> String {
        let mut s = String::from("{\n");
        let workers: Vec<String> = self.opts.workers.iter().map(usize::to_string).collect();
        let _ = writeln!(
            s,
            "  \"clients\": {}, \"concurrency\": {}, \"hold_s\": {}, \"repeat\": {}, \"verb\": {}, \"workers\": [{}], \"server_key\": \"{}\", \"versions\": \"{}\",",
            self.opts.clients,
            self.opts.concurrency,
            self.opts.hold,
            self.opts.repeat,
            self.opts.verb,
            workers.join(", "),
            self.opts.server_key.describe(),
            self.versions.replace('"', "'")
        );
        let _ = writeln!(s, "  \"notes\": [{}],", json_notes(self.notes));
        let num = |v: Option<f64>| {
            v.filter(|v| v.is_finite())
                .map_or_else(|| "null".to_owned(), |v| format!("{v:.6}"))
        };
        let pairs = self.ratio_pairs();
        s.push_str("  \"metrics\": {\n");
        for (i, r) in ROWS.iter().enumerate() {
            let values = self.values(r);
            let mut fields = Vec::new();
            for ((v, runs), value) in self.columns.iter().zip(&values) {
                let samples: Vec<String> = runs.iter().map(|j| num((r.value)(j))).collect();
                fields.push(format!(
                    "\"{0}\": {1}, \"{0}_samples\": [{2}]",
                    v.label(),
                    num(*value),
                    samples.join(", ")
                ));
            }
            for (&p, ratio) in pairs.iter().zip(self.ratios(r, &values)) {
                fields.push(format!("\"{}\": {}", self.ratio_label(p), num(ratio)));
            }
            let _ = writeln!(
                s,
                "    \"{}\": {{{}}}{}",
                r.key,
                fields.join(", "),
                if i + 1 < ROWS.len() { "," } else { "" }
            );
        }
        s.push_str("  },\n  \"raw\": {\n");
        for (i, (v, runs)) in self.columns.iter().enumerate() {
            let runs: Vec<&str> = runs.iter().map(|j| j.trim()).collect();
            let _ = writeln!(
                s,
                "    \"{}\": [{}]{}",
                v.label(),
                runs.join(", "),
                if i + 1 < self.columns.len() { "," } else { "" }
            );
        }
        s.push_str("  }\n}\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse() {
        let o = Options::parse(&[]).expect("defaults");
        assert_eq!(o.clients, 1000);
        let args: Vec<String> = ["--quick", "--only", "ours"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let o = Options::parse(&args).expect("quick");
        assert_eq!(o.clients, 100);
        assert_eq!(o.only, vec![Server::Ours]);
        assert!(Options::parse(&["--only".into(), "both".into()]).is_err());
        assert!(Options::parse(&["--clients".into(), "0".into()]).is_err());
        let args: Vec<String> = ["--workers", "1,2", "--server-key", "rsa"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let o = Options::parse(&args).expect("workers");
        assert_eq!(o.workers, vec![1, 2]);
        assert_eq!(o.server_key, ServerKey::Rsa);
        assert!(Options::parse(&["--workers".into(), "1,0".into()]).is_err());
        assert!(Options::parse(&["--server-key".into(), "dsa".into()]).is_err());
    }

    #[test]
    fn scaling_columns() {
        let one = r#"{ "clients": 10, "connected": 10, "handshakes_per_s": 400 }"#;
        let two = r#"{ "clients": 10, "connected": 10, "handshakes_per_s": 700 }"#;
        let real = r#"{ "clients": 10, "connected": 10, "handshakes_per_s": 350 }"#;
        let v = |server, workers| Variant { server, workers };
        let opts = Options::default();
        let r = Report {
            opts: &opts,
            versions: "v",
            notes: &[],
            columns: vec![
                (v(Server::Ours, 1), vec![one]),
                (v(Server::Ours, 2), vec![two]),
                (v(Server::Real, 1), vec![real]),
            ],
        };
        assert_eq!(r.ratio_pairs(), vec![(0, 2), (1, 2), (1, 0)]);
        let md = r.markdown();
        assert!(md.contains(
            "| metric | ours | ours, 2 workers | real OpenVPN 2.6 | ours/real | ours-w2/real | ours-w2/ours |"
        ));
        assert!(
            md.contains("| 400 | 700 | 350 | x1.14 | x2.00 | x1.75 |"),
            "{md}"
        );
        let json = r.json();
        assert!(json.contains("\"ours-w2/ours\": 1.750000"), "{json}");
        assert!(json.contains("\"ours-w2_samples\": [700.000000]"), "{json}");
    }

    #[test]
    fn rows_from_generator_json() {
        let j = r#"{ "clients": 10, "connected": 10, "server_rss_kib_before": 1000,
            "server_rss_kib_connected": 1400, "server_cpu_s_connect": 0.02,
            "ping1_ok": 9, "handshake_ms_p50": null }"#;
        assert_eq!(per_client(j, "server_rss_kib_connected"), Some(40.0));
        assert_eq!(per_handshake_ms(j, "server_cpu_s_connect"), Some(2.0));
        assert_eq!(pct(j, "ping1_ok"), Some(90.0));
        assert_eq!(json_number(j, "handshake_ms_p50"), None);
        let opts = Options::default();
        let ours = Variant {
            server: Server::Ours,
            workers: 1,
        };
        let real = Variant {
            server: Server::Real,
            workers: 1,
        };
        let r = Report {
            opts: &opts,
            versions: "v",
            notes: &[],
            columns: vec![(ours, vec![j, j]), (real, vec![j])],
        };
        assert!(r.markdown().contains("| 40.0 | 40.0 | x1.00 |"));
        assert!(
            r.json()
                .contains("\"kib_per_client\": {\"ours\": 40.000000")
        );
        assert!(
            r.json()
                .contains("\"ours_samples\": [40.000000, 40.000000]")
        );
        assert_eq!(median_finite(vec![3.0, 1.0, f64::NAN, 2.0]), Some(2.0));
        assert_eq!(median_finite(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(
            shortfall(j).as_deref(),
            Some("9 of 10 pings answered after connect; 0 of 10 pings answered after the hold")
        );
        let bad = r#"{ "clients": 10, "connected": 8, "ping1_ok": 8, "ping2_ok": 7,
            "reconnects": 0, "errors": ["client 3: not connected after 120 s", "x"] }"#;
        assert_eq!(
            shortfall(bad).as_deref(),
            Some(
                "only 8 of 10 clients connected; 7 of 8 pings answered after the hold; \
                 first error: client 3: not connected after 120 s"
            )
        );
        let good = r#"{ "clients": 2, "connected": 2, "ping1_ok": 2, "ping2_ok": 2,
            "reconnects": 0, "errors": [] }"#;
        assert_eq!(shortfall(good), None);
    }
}
