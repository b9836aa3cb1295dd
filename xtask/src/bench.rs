//! `cargo xtask bench`: throughput, latency and CPU cost of the tunnel, side by side in one run.
//!
//! ```text
//! cargo build --release --bin openvpn-server --bin openvpn-client
//! scripts/pki.sh target/bench/pki
//! ovrsb-srv 10.77.0.1 <-ovrsb-veth-s/-c-> ovrsb-cli 10.77.0.2      (own namespaces)
//! for each round (--repeat), for each pair, in turn:
//!     a real-real   b ours-ours   c ours-srv+real-cli   d real-srv+ours-cli
//!     e wireguard-go (userspace WireGuard reference, if installed)
//!     f boringtun-cli (Cloudflare's userspace WireGuard in Rust; `cargo install boringtun-cli
//!       --root target/bench-tools` on first use)
//!   bring the tunnel up (UDP, tls-crypt, AES-256-GCM, same PKI and config for everyone)
//!   ping idle (20 x 0.2 s), iperf3 TCP 1 stream (+ ping -i 0.2 alongside: RTT under load),
//!   iperf3 TCP 4 streams, iperf3 UDP at a fixed offered load; CPU of both VPN processes from
//!   /proc/PID/stat (utime+stime) before/after each iperf3 run
//!   stop both processes (by pid)
//! delete the namespaces (always, also on error)
//! table of medians with ratios to (a); target/bench/bench.{json,md,svg}
//! ```

use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::netpair::{NetPair, NetPairSpec, quiet, which};
use crate::stats::{fmt_num, json_notes, median};
use anyhow::{Context, Result, bail};

const SRV_NS: &str = "ovrsb-srv";
const CLI_NS: &str = "ovrsb-cli";
const VETH_S: &str = "ovrsb-veth-s";
const VETH_C: &str = "ovrsb-veth-c";
const TUN_S: &str = "ovrsb-tun-s";
const TUN_C: &str = "ovrsb-tun-c";
const WG_S: &str = "ovrsb-wg-s";
const WG_C: &str = "ovrsb-wg-c";
const OVPN_TARGET: &str = "10.8.0.1";
const WG_TARGET: &str = "10.9.0.1";
const IPERF_PORT: &str = "5201";
const INIT_DONE: &str = "Initialization Sequence Completed";
const WG_SOCK_DIR: &str = "/var/run/wireguard";

/// Command-line options of `cargo xtask bench`.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Seconds per iperf3 run.
    time: u32,
    /// Rounds; every metric is the median over them.
    repeat: u32,
    /// iperf3 -b for the UDP test.
    udp_rate: String,
    /// Only the pairs whose key (a..f) is one of these, or whose name contains one of more
    /// than one letter (a one-letter name filter would match nearly every pair).
    only: Vec<String>,
    /// Do not run `cargo build --release` first.
    no_build: bool,
    /// Idle pings per round.
    pings: u32,
    /// The OpenVPN pairs' transport: `udp` or `tcp` (WireGuard has only UDP; with `tcp` its
    /// pairs are left out).
    proto: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            time: 10,
            repeat: 3,
            udp_rate: "200M".into(),
            only: Vec::new(),
            no_build: false,
            pings: 20,
            proto: "udp",
        }
    }
}

const USAGE: &str = "usage: cargo xtask bench [--time S] [--repeat N] [--quick] [--only a,b,..] \
                     [--udp-rate R] [--pings N] [--proto udp|tcp] [--no-build]";

impl Options {
    pub(crate) fn parse(args: &[String]) -> Result<Options> {
        let mut opts = Options::default();
        let mut args = args.iter();
        let num = |name: &str, v: Option<&String>| -> Result<u32> {
            let v = v.with_context(|| format!("{name} needs a number"))?;
            let n: u32 = v
                .parse()
                .with_context(|| format!("{name}: '{v}' is not a number"))?;
            if n == 0 {
                bail!("{name} must be at least 1");
            }
            Ok(n)
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--time" => opts.time = num("--time", args.next())?,
                "--repeat" => opts.repeat = num("--repeat", args.next())?,
                "--pings" => opts.pings = num("--pings", args.next())?,
                "--quick" => {
                    opts.time = 3;
                    opts.repeat = 1;
                    opts.pings = 10;
                }
                "--udp-rate" => {
                    opts.udp_rate = args.next().context("--udp-rate needs a rate")?.clone();
                }
                "--only" => {
                    let v = args.next().context("--only needs a list")?;
                    opts.only = v.split(',').map(str::to_owned).collect();
                }
                "--proto" => {
                    opts.proto = match args.next().map(String::as_str) {
                        Some("udp") => "udp",
                        Some("tcp") => "tcp",
                        other => bail!("--proto needs udp or tcp, not {other:?}"),
                    }
                }
                "--no-build" => opts.no_build = true,
                other => bail!("bench: unknown argument '{other}'\n{USAGE}"),
            }
        }
        Ok(opts)
    }
}

/// Which implementation runs one side of an OpenVPN tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Real,
    Ours,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Ovpn { server: Side, client: Side },
    WireGuard(Wg),
}

/// A userspace WireGuard daemon speaking the `wg` UAPI socket protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wg {
    /// Debian's `wireguard-go`.
    Go,
    /// The `boringtun-cli` crate.
    BoringTun,
}

impl Wg {
    fn key(self) -> &'static str {
        match self {
            Wg::Go => "e",
            Wg::BoringTun => "f",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Pair {
    key: &'static str,
    name: &'static str,
    kind: Kind,
}

const PAIRS: [Pair; 6] = [
    Pair {
        key: "a",
        name: "real-srv+real-cli",
        kind: Kind::Ovpn {
            server: Side::Real,
            client: Side::Real,
        },
    },
    Pair {
        key: "b",
        name: "ours-srv+ours-cli",
        kind: Kind::Ovpn {
            server: Side::Ours,
            client: Side::Ours,
        },
    },
    Pair {
        key: "c",
        name: "ours-srv+real-cli",
        kind: Kind::Ovpn {
            server: Side::Ours,
            client: Side::Real,
        },
    },
    Pair {
        key: "d",
        name: "real-srv+ours-cli",
        kind: Kind::Ovpn {
            server: Side::Real,
            client: Side::Ours,
        },
    },
    Pair {
        key: "e",
        name: "wireguard-go",
        kind: Kind::WireGuard(Wg::Go),
    },
    Pair {
        key: "f",
        name: "boringtun",
        kind: Kind::WireGuard(Wg::BoringTun),
    },
];

/// One row of the table: key in the JSON and description.
struct Metric {
    key: &'static str,
    desc: &'static str,
    /// Whether a ratio to (a) means something (not for a loss % near zero).
    ratio: bool,
}

const METRICS: &[Metric] = &[
    Metric {
        key: "tcp1_gbps",
        desc: "TCP 1 stream, Gbit/s",
        ratio: true,
    },
    Metric {
        key: "tcp4_gbps",
        desc: "TCP 4 streams, Gbit/s",
        ratio: true,
    },
    Metric {
        key: "udp_rx_gbps",
        desc: "UDP offered load: receiver Gbit/s",
        ratio: true,
    },
    Metric {
        key: "udp_loss_pct",
        desc: "UDP offered load: loss %",
        ratio: false,
    },
    Metric {
        key: "rtt_idle_ms",
        desc: "ping RTT idle, median ms",
        ratio: true,
    },
    Metric {
        key: "rtt_load_ms",
        desc: "ping RTT during TCP 1 stream, median ms",
        ratio: true,
    },
    Metric {
        key: "rtt_udp_load_ms",
        desc: "ping RTT during the UDP offered load, median ms",
        ratio: true,
    },
    Metric {
        key: "tcp1_cpu_s_per_gb",
        desc: "VPN CPU s/GB (srv+cli), TCP 1",
        ratio: true,
    },
    Metric {
        key: "tcp1_srv_cpu_s_per_gb",
        desc: "  server process CPU s/GB, TCP 1",
        ratio: true,
    },
    Metric {
        key: "tcp1_cli_cpu_s_per_gb",
        desc: "  client process CPU s/GB, TCP 1",
        ratio: true,
    },
    Metric {
        key: "tcp4_cpu_s_per_gb",
        desc: "VPN CPU s/GB (srv+cli), TCP 4",
        ratio: true,
    },
    Metric {
        key: "udp_cpu_s_per_gb",
        desc: "VPN CPU s/GB (srv+cli), UDP",
        ratio: true,
    },
    Metric {
        key: "tcp1_srv_cpu_pct",
        desc: "server process CPU %, TCP 1",
        ratio: true,
    },
    Metric {
        key: "tcp1_cli_cpu_pct",
        desc: "client process CPU %, TCP 1",
        ratio: true,
    },
];

/// All samples: (pair key, metric key, value).
#[derive(Default)]
struct Samples(Vec<(&'static str, &'static str, f64)>);

impl Samples {
    fn add(&mut self, pair: &'static str, metric: &'static str, value: f64) {
        if value.is_finite() {
            self.0.push((pair, metric, value));
        }
    }

    fn values(&self, pair: &str, metric: &str) -> Vec<f64> {
        self.0
            .iter()
            .filter(|(p, m, _)| *p == pair && *m == metric)
            .map(|s| s.2)
            .collect()
    }

    fn median(&self, pair: &str, metric: &str) -> Option<f64> {
        median(self.values(pair, metric))
    }
}

struct Env {
    root: PathBuf,
    out: PathBuf,
    pki: PathBuf,
    server_bin: PathBuf,
    client_bin: PathBuf,
    hz: f64,
    opts: Options,
}

pub(crate) fn run(opts: &Options) -> Result<()> {
    if !crate::is_root()? {
        bail!("bench needs root: it creates network namespaces and tun devices");
    }
    for tool in ["openvpn", "iperf3", "ping", "ip", "ss"] {
        which(tool).with_context(|| format!("bench needs '{tool}'"))?;
    }
    let root = crate::workspace_root()?;
    let out = root.join("target/bench");
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    if !opts.no_build {
        let mut cmd = Command::new(crate::cargo());
        cmd.args(["build", "--release", "--bin", "openvpn-server"])
            .args(["--bin", "openvpn-client"])
            .current_dir(&root);
        crate::run_checked(&mut cmd)?;
    }
    let env = Env {
        server_bin: root.join("target/release/openvpn-server"),
        client_bin: root.join("target/release/openvpn-client"),
        pki: out.join("pki"),
        hz: clk_tck(),
        out,
        root,
        opts: opts.clone(),
    };
    for bin in [&env.server_bin, &env.client_bin] {
        if !bin.is_file() {
            bail!("{} is missing (run without --no-build)", bin.display());
        }
    }
    quiet(
        Command::new("bash")
            .arg(env.root.join("scripts/pki.sh"))
            .arg(&env.pki),
    )?;

    let mut pairs: Vec<Pair> = PAIRS
        .iter()
        .copied()
        .filter(|p| {
            opts.only.is_empty()
                || opts
                    .only
                    .iter()
                    .any(|o| o == p.key || (o.len() > 1 && p.name.contains(o.as_str())))
        })
        .collect();
    let mut notes = Vec::new();
    if opts.proto != "udp" && pairs.iter().any(|p| matches!(p.kind, Kind::WireGuard(_))) {
        pairs.retain(|p| !matches!(p.kind, Kind::WireGuard(_)));
        notes.push(format!(
            "(e, f) WireGuard left out: it has no {} transport",
            opts.proto
        ));
    }
    if pairs.is_empty() {
        bail!(
            "--only {:?} matches no pair (a..f; WireGuard only with --proto udp)",
            opts.only
        );
    }
    if pairs.iter().any(|p| matches!(p.kind, Kind::WireGuard(_)))
        && let Err(e) = which("wg")
    {
        let note = format!("(e, f) WireGuard skipped: {e:#} (apt-get install wireguard-tools)");
        println!("bench: {note}");
        notes.push(note);
        pairs.retain(|p| !matches!(p.kind, Kind::WireGuard(_)));
    }
    if pairs
        .iter()
        .any(|p| matches!(p.kind, Kind::WireGuard(Wg::Go)))
        && let Err(e) = which("wireguard-go")
    {
        let note = format!("(e) wireguard-go skipped: {e:#} (apt-get install wireguard-go)");
        println!("bench: {note}");
        notes.push(note);
        pairs.retain(|p| !matches!(p.kind, Kind::WireGuard(Wg::Go)));
    }
    if pairs
        .iter()
        .any(|p| matches!(p.kind, Kind::WireGuard(Wg::BoringTun)))
        && let Err(e) = boringtun_binary(&env)
    {
        let note = format!("(f) boringtun skipped: {e:#}");
        println!("bench: {note}");
        notes.push(note);
        pairs.retain(|p| !matches!(p.kind, Kind::WireGuard(Wg::BoringTun)));
    }

    let versions = versions();
    println!(
        "bench: {} s x {} rounds, UDP -b {} -l 1300; {}",
        opts.time, opts.repeat, opts.udp_rate, versions
    );

    let netns = NetPair::up(NetPairSpec {
        tool: "bench",
        srv: SRV_NS,
        cli: CLI_NS,
        veth_s: VETH_S,
        veth_c: VETH_C,
        srv_addr: "10.77.0.1",
        cli_addr: "10.77.0.2",
    })?;
    let mut samples = Samples::default();
    for round in 1..=opts.repeat {
        for pair in &pairs {
            println!(
                "== round {round}/{}: ({}) {}",
                opts.repeat, pair.key, pair.name
            );
            match measure_pair(&env, pair, round, &mut samples) {
                Ok(()) => {}
                Err(e) => {
                    let note = format!("round {round} ({}) {}: {e:#}", pair.key, pair.name);
                    println!("bench: FAILED {note}");
                    if let Kind::WireGuard(wg) = pair.kind {
                        notes.push(format!("({}) {} could not run: {e:#}", wg.key(), pair.name));
                    } else {
                        notes.push(note);
                    }
                }
            }
            sleep(Duration::from_secs(1));
        }
    }
    drop(netns);

    let report = Report {
        opts,
        pairs: &pairs,
        samples: &samples,
        versions: &versions,
        notes: &notes,
    };
    let md = report.markdown();
    println!("\n{md}");
    fs::write(env.out.join("bench.md"), &md)?;
    fs::write(env.out.join("bench.json"), report.json())?;
    fs::write(env.out.join("bench.svg"), report.svg())?;
    println!(
        "bench: wrote {}/bench.{{md,json,svg}}",
        env.out
            .strip_prefix(&env.root)
            .unwrap_or(&env.out)
            .display()
    );
    Ok(())
}

/// Brings one pair up, measures it, and always takes it down again.
fn measure_pair(env: &Env, pair: &Pair, round: u32, samples: &mut Samples) -> Result<()> {
    let dir = env.out.join(format!("run-{}", pair.key));
    fs::create_dir_all(&dir)?;
    let mut procs = Procs(Vec::new());
    let target = match pair.kind {
        Kind::Ovpn { server, client } => {
            ovpn_up(env, &dir, server, client, &mut procs)?;
            OVPN_TARGET
        }
        Kind::WireGuard(wg) => {
            wg_up(env, wg, &dir, &mut procs)?;
            WG_TARGET
        }
    };
    let pids = [procs.0[0].child.id(), procs.0[1].child.id()];
    // warm-up: the first packets may trigger ARP/ND and route setup
    let _ = Command::new("ip")
        .args([
            "netns", "exec", CLI_NS, "ping", "-n", "-c", "3", "-i", "0.2",
        ])
        .args(["-W", "2", target])
        .output();
    let m = Measure {
        env,
        pair,
        round,
        target,
        pids,
        dir: &dir,
    };
    let result = m.all(samples);
    drop(procs);
    if matches!(pair.kind, Kind::WireGuard(_)) {
        wg_cleanup();
    }
    result
}

struct Measure<'a> {
    env: &'a Env,
    pair: &'a Pair,
    round: u32,
    target: &'static str,
    pids: [u32; 2],
    dir: &'a Path,
}

impl Measure<'_> {
    fn all(&self, samples: &mut Samples) -> Result<()> {
        let key = self.pair.key;
        let idle = ping(self.target, self.env.opts.pings, "0.2")?;
        let idle_med = median(idle.clone());
        println!(
            "  ping idle: median {} ms ({} of {} answered)",
            fmt_opt(idle_med),
            idle.len(),
            self.env.opts.pings
        );
        if idle.is_empty() {
            bail!("no ping answer through the tunnel");
        }
        samples.add(key, "rtt_idle_ms", idle_med.unwrap_or(f64::NAN));

        // TCP 1 stream, with ping alongside for the RTT under load
        let mut pinger = self.pinger();
        let side = Some((&mut pinger, Duration::from_secs(1)));
        let tcp1 = self.iperf("tcp1", &["-P", "1"], side)?;
        if let Some(r) = &tcp1 {
            let rtt = median(parse_ping(&r.side_output));
            samples.add(key, "rtt_load_ms", rtt.unwrap_or(f64::NAN));
            println!("  ping during tcp1: median {} ms", fmt_opt(rtt));
            self.record(samples, "tcp1", r);
        }
        sleep(Duration::from_secs(1));
        if let Some(r) = self.iperf("tcp4", &["-P", "4"], None)? {
            self.record(samples, "tcp4", &r);
        }
        sleep(Duration::from_secs(1));
        // UDP at the same offered load for every pair, with ping alongside: the RTT under an
        // equal load (the TCP 1 stream loads each VPN as far as it goes)
        let rate = self.env.opts.udp_rate.clone();
        let mut pinger = self.pinger();
        let side = Some((&mut pinger, Duration::from_secs(1)));
        if let Some(r) = self.iperf("udp", &["-u", "-b", &rate, "-l", "1300"], side)? {
            let rtt = median(parse_ping(&r.side_output));
            samples.add(key, "rtt_udp_load_ms", rtt.unwrap_or(f64::NAN));
            println!("  ping during udp: median {} ms", fmt_opt(rtt));
            self.record(samples, "udp", &r);
        }
        Ok(())
    }

    /// `ping -i 0.2` from the client namespace for the length of one iperf3 test (started 1 s
    /// after it).
    fn pinger(&self) -> Command {
        let t = self.env.opts.time;
        let count = ((f64::from(t) - 1.5) * 5.0).max(3.0) as u32;
        let mut pinger = Command::new("ip");
        pinger
            .args([
                "netns", "exec", CLI_NS, "ping", "-n", "-i", "0.2", "-W", "2",
            ])
            .args(["-c", &count.to_string(), self.target])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        pinger
    }

    fn record(&self, samples: &mut Samples, test: &'static str, r: &IperfRun) {
        let key = self.pair.key;
        let gb = r.bytes / 1e9;
        let srv = r.cpu[0] / self.env.hz;
        let cli = r.cpu[1] / self.env.hz;
        let per_gb = |s: f64| if gb > 0.0 { s / gb } else { f64::NAN };
        let (gbps, total, s_gb, c_gb, s_pct, c_pct) = match test {
            "tcp1" => (
                "tcp1_gbps",
                "tcp1_cpu_s_per_gb",
                "tcp1_srv_cpu_s_per_gb",
                "tcp1_cli_cpu_s_per_gb",
                "tcp1_srv_cpu_pct",
                "tcp1_cli_cpu_pct",
            ),
            "tcp4" => (
                "tcp4_gbps",
                "tcp4_cpu_s_per_gb",
                "tcp4_srv_cpu_s_per_gb",
                "tcp4_cli_cpu_s_per_gb",
                "tcp4_srv_cpu_pct",
                "tcp4_cli_cpu_pct",
            ),
            _ => (
                "udp_rx_gbps",
                "udp_cpu_s_per_gb",
                "udp_srv_cpu_s_per_gb",
                "udp_cli_cpu_s_per_gb",
                "udp_srv_cpu_pct",
                "udp_cli_cpu_pct",
            ),
        };
        samples.add(key, gbps, r.gbps);
        samples.add(key, total, per_gb(srv + cli));
        samples.add(key, s_gb, per_gb(srv));
        samples.add(key, c_gb, per_gb(cli));
        samples.add(key, s_pct, srv / r.wall * 100.0);
        samples.add(key, c_pct, cli / r.wall * 100.0);
        if test == "udp" {
            samples.add(key, "udp_loss_pct", r.loss);
        }
        println!(
            "  {test:<4} {:7.3} Gbit/s  cpu srv {:.2}s cli {:.2}s = {:.1} s/GB  ({:.0}% / {:.0}%){}",
            r.gbps,
            srv,
            cli,
            per_gb(srv + cli),
            srv / r.wall * 100.0,
            cli / r.wall * 100.0,
            if test == "udp" {
                format!("  loss {:.2}%", r.loss)
            } else {
                String::new()
            }
        );
    }

    /// One iperf3 run against a one-off server in the server namespace. `side` is started
    /// `delay` after the client and its stdout is returned (the pinger).
    fn iperf(
        &self,
        test: &str,
        args: &[&str],
        side: Option<(&mut Command, Duration)>,
    ) -> Result<Option<IperfRun>> {
        let mut server = Command::new("ip")
            .args(["netns", "exec", SRV_NS, "iperf3", "-s", "-1", "-B"])
            .args([self.target, "-p", IPERF_PORT])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start iperf3 -s")?;
        let server = KillOnDrop(&mut server);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = Command::new("ip")
                .args(["netns", "exec", SRV_NS, "ss", "-Hltn"])
                .arg(format!("sport = :{IPERF_PORT}"))
                .output()?;
            if !out.stdout.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                bail!("iperf3 server did not start listening");
            }
            sleep(Duration::from_millis(100));
        }
        let json_path = self.dir.join(format!("iperf-r{}-{test}.json", self.round));
        let json_file = File::create(&json_path)?;
        let cpu0 = self.pids.map(ticks);
        let t0 = Instant::now();
        let mut client = Command::new("ip")
            .args(["netns", "exec", CLI_NS, "iperf3", "-c", self.target])
            .args([
                "-p",
                IPERF_PORT,
                "-J",
                "-t",
                &self.env.opts.time.to_string(),
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(json_file)
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start iperf3 -c")?;
        let mut side_output = String::new();
        if let Some((cmd, delay)) = side {
            sleep(delay);
            let out = cmd.output().context("cannot run the side command")?;
            side_output = String::from_utf8_lossy(&out.stdout).into_owned();
        }
        let wait_limit = Duration::from_secs(u64::from(self.env.opts.time) + 30);
        let status = loop {
            if let Some(s) = client.try_wait()? {
                break s;
            }
            if t0.elapsed() > wait_limit {
                let _ = client.kill();
                break client.wait()?;
            }
            sleep(Duration::from_millis(50));
        };
        let wall = t0.elapsed().as_secs_f64();
        let cpu1 = self.pids.map(ticks);
        drop(server);
        let json = fs::read_to_string(&json_path).unwrap_or_default();
        let Some(recv) = json_object(&json, "sum_received") else {
            println!(
                "  {test}: iperf3 failed ({status}): {}",
                json_string(&json, "error").unwrap_or_default()
            );
            return Ok(None);
        };
        Ok(Some(IperfRun {
            gbps: json_number(recv, "bits_per_second").unwrap_or(f64::NAN) / 1e9,
            bytes: json_number(recv, "bytes").unwrap_or(0.0),
            loss: json_number(recv, "lost_percent").unwrap_or(0.0),
            cpu: [
                cpu1[0].saturating_sub(cpu0[0]) as f64,
                cpu1[1].saturating_sub(cpu0[1]) as f64,
            ],
            wall,
            side_output,
        }))
    }
}

struct IperfRun {
    gbps: f64,
    bytes: f64,
    loss: f64,
    /// Clock ticks of (server, client) VPN process during the run.
    cpu: [f64; 2],
    wall: f64,
    side_output: String,
}

/// Kills (SIGKILL) and reaps a helper child such as a one-off iperf3 server.
struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ping -c count -i interval` from the client namespace; the RTTs that came back.
fn ping(target: &str, count: u32, interval: &str) -> Result<Vec<f64>> {
    let out = Command::new("ip")
        .args([
            "netns", "exec", CLI_NS, "ping", "-n", "-W", "2", "-i", interval,
        ])
        .args(["-c", &count.to_string(), target])
        .output()
        .context("cannot run ping")?;
    Ok(parse_ping(&String::from_utf8_lossy(&out.stdout)))
}

fn parse_ping(text: &str) -> Vec<f64> {
    text.lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect()
}

/// utime + stime (all threads) of a process, in clock ticks; 0 if it is gone.
fn ticks(pid: u32) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // fields after "comm)" start at field 3 (state); utime and stime are fields 14 and 15
    let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The text of `"key": { ... }` (a flat object) in iperf3's JSON, searched after `"end"`.
fn json_object<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let end = json.find("\"end\":")?;
    let tail = &json[end..];
    let at = tail.find(&format!("\"{key}\":"))?;
    let obj = &tail[at..];
    let open = obj.find('{')?;
    let close = obj.find('}')?;
    (open < close).then(|| &obj[open..=close])
}

fn json_number(obj: &str, key: &str) -> Option<f64> {
    let at = obj.find(&format!("\"{key}\":"))? + key.len() + 3;
    let v = obj[at..].trim_start();
    let len = v
        .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .unwrap_or(v.len());
    v[..len].parse().ok()
}

fn json_string(json: &str, key: &str) -> Option<String> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let v = json[at..].trim_start().strip_prefix('"')?;
    Some(v[..v.find('"')?].to_owned())
}

/// Starts the OpenVPN server and client of one pair and waits for both to be initialized.
fn ovpn_up(env: &Env, dir: &Path, server: Side, client: Side, procs: &mut Procs) -> Result<()> {
    for (role, conf, dev) in [
        ("server", dir.join("server.conf"), TUN_S),
        ("client", dir.join("client1.conf"), TUN_C),
    ] {
        let _ = fs::remove_file(conf.with_extension("log"));
        quiet(
            Command::new("bash")
                .arg(env.root.join("scripts/ovpn-conf.sh"))
                .arg(role)
                .arg(&conf)
                .arg(&env.pki)
                .args(["--proto", env.opts.proto, "--tls", "tls-crypt"])
                .args(["--cipher", "AES-256-GCM", "--dev", dev, "--verb", "3"]),
        )?;
    }
    let program = |side: Side, ours: &Path| match side {
        Side::Real => PathBuf::from("openvpn"),
        Side::Ours => ours.to_path_buf(),
    };
    let conf = dir.join("server.conf");
    procs.start(
        "server",
        SRV_NS,
        &program(server, &env.server_bin),
        &["--config".as_ref(), conf.as_os_str()],
        conf.with_extension("log"),
        &[],
    )?;
    procs.wait_init(0, Duration::from_secs(15))?;
    let conf = dir.join("client1.conf");
    procs.start(
        "client",
        CLI_NS,
        &program(client, &env.client_bin),
        &["--config".as_ref(), conf.as_os_str()],
        conf.with_extension("log"),
        &[],
    )?;
    procs.wait_init(1, Duration::from_secs(30))?;
    Ok(())
}

/// `boringtun-cli`: on PATH, else under `target/bench-tools/bin`, else installed there with
/// `cargo install boringtun-cli --root target/bench-tools` (a few minutes, once).
fn boringtun_binary(env: &Env) -> Result<PathBuf> {
    if let Ok(p) = which("boringtun-cli") {
        return Ok(p);
    }
    let tools = env.root.join("target/bench-tools");
    let bin = tools.join("bin/boringtun-cli");
    if !bin.is_file() {
        println!("bench: installing boringtun-cli into {}", tools.display());
        let status = Command::new(crate::cargo())
            .args(["install", "--locked", "boringtun-cli", "--root"])
            .arg(&tools)
            .status()
            .context("cannot run cargo install boringtun-cli")?;
        if !status.success() {
            bail!("cargo install boringtun-cli failed ({status})");
        }
    }
    Ok(bin)
}

/// Userspace WireGuard (wireguard-go or boringtun-cli) between the two namespaces, MTU 1420.
fn wg_up(env: &Env, wg: Wg, dir: &Path, procs: &mut Procs) -> Result<()> {
    wg_cleanup();
    let mut keys = Vec::new();
    for side in ["s", "c"] {
        let private = capture(Command::new("wg").arg("genkey"))?;
        let key_path = dir.join(format!("wg-{side}.key"));
        fs::write(&key_path, format!("{private}\n"))?;
        let public = capture_stdin(Command::new("wg").arg("pubkey"), &private)?;
        keys.push((key_path, public));
    }
    let vars = [("WG_PROCESS_FOREGROUND", "1"), ("LOG_LEVEL", "error")];
    let program = match wg {
        Wg::Go => PathBuf::from("wireguard-go"),
        Wg::BoringTun => boringtun_binary(env)?,
    };
    for (i, (ns, ifname)) in [(SRV_NS, WG_S), (CLI_NS, WG_C)].into_iter().enumerate() {
        let args: Vec<&std::ffi::OsStr> = match wg {
            Wg::Go => vec!["-f".as_ref(), ifname.as_ref()],
            // Its defaults otherwise (worker threads, log level); root keeps root so the
            // harness can stop it by pid.
            Wg::BoringTun => vec![
                "--foreground".as_ref(),
                "--disable-drop-privileges".as_ref(),
                ifname.as_ref(),
            ],
        };
        procs.start(
            if i == 0 { "wg-server" } else { "wg-client" },
            ns,
            &program,
            &args,
            dir.join(format!("{ifname}.log")),
            &vars,
        )?;
        let sock = Path::new(WG_SOCK_DIR).join(format!("{ifname}.sock"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            if let Some(status) = procs.0[i].child.try_wait()? {
                bail!("{wg:?} {ifname} exited ({status}): {}", procs.tail(i));
            }
            if Instant::now() > deadline {
                bail!("{wg:?} {ifname}: no UAPI socket after 10 s");
            }
            sleep(Duration::from_millis(50));
        }
    }
    let key_s = keys[0].0.to_string_lossy().into_owned();
    let key_c = keys[1].0.to_string_lossy().into_owned();
    for cmd in [
        vec![
            "ip",
            "netns",
            "exec",
            SRV_NS,
            "wg",
            "set",
            WG_S,
            "private-key",
            &key_s,
            "listen-port",
            "51820",
            "peer",
            &keys[1].1,
            "allowed-ips",
            "10.9.0.2/32",
        ],
        vec![
            "ip",
            "netns",
            "exec",
            CLI_NS,
            "wg",
            "set",
            WG_C,
            "private-key",
            &key_c,
            "listen-port",
            "51821",
            "peer",
            &keys[0].1,
            "allowed-ips",
            "10.9.0.0/24",
            "endpoint",
            "10.77.0.1:51820",
        ],
        vec![
            "ip",
            "-n",
            SRV_NS,
            "addr",
            "add",
            "10.9.0.1/24",
            "dev",
            WG_S,
        ],
        vec![
            "ip",
            "-n",
            CLI_NS,
            "addr",
            "add",
            "10.9.0.2/24",
            "dev",
            WG_C,
        ],
        vec!["ip", "-n", SRV_NS, "link", "set", WG_S, "mtu", "1420", "up"],
        vec!["ip", "-n", CLI_NS, "link", "set", WG_C, "mtu", "1420", "up"],
    ] {
        quiet(Command::new(cmd[0]).args(&cmd[1..]))?;
    }
    Ok(())
}

/// Removes leftover wireguard interfaces/sockets with our names (after the daemons are gone).
fn wg_cleanup() {
    for (ns, ifname) in [(SRV_NS, WG_S), (CLI_NS, WG_C)] {
        let _ = Command::new("ip")
            .args(["-n", ns, "link", "del", ifname])
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_file(Path::new(WG_SOCK_DIR).join(format!("{ifname}.sock")));
    }
}

/// A VPN process this harness started.
struct Proc {
    label: &'static str,
    child: Child,
    log: PathBuf,
    out: PathBuf,
}

/// Stopped by pid (SIGTERM, then SIGKILL after 5 s) when dropped, last started first.
struct Procs(Vec<Proc>);

impl Procs {
    fn start(
        &mut self,
        label: &'static str,
        ns: &str,
        program: &Path,
        args: &[&std::ffi::OsStr],
        log: PathBuf,
        env: &[(&str, &str)],
    ) -> Result<()> {
        let out = log.with_extension("out");
        let file =
            File::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let shown = crate::show(&cmd);
        // `ip netns exec` execs the program: the child's pid is the VPN process's pid
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        println!("  {label} pid {}: {shown}", child.id());
        self.0.push(Proc {
            label,
            child,
            log,
            out,
        });
        Ok(())
    }

    fn wait_init(&mut self, index: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let proc = &mut self.0[index];
            let label = proc.label;
            let done = [&proc.log, &proc.out]
                .iter()
                .any(|p| fs::read_to_string(p).is_ok_and(|t| t.contains(INIT_DONE)));
            if done {
                return Ok(());
            }
            if let Some(status) = proc.child.try_wait()? {
                bail!("{label} exited ({status}): {}", self.tail(index));
            }
            if Instant::now() >= deadline {
                bail!(
                    "{label} not initialized after {} s: {}",
                    timeout.as_secs(),
                    self.tail(index)
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    fn tail(&self, index: usize) -> String {
        let proc = &self.0[index];
        let mut text = String::new();
        for p in [&proc.log, &proc.out] {
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

impl Drop for Procs {
    fn drop(&mut self) {
        for proc in self.0.iter_mut().rev() {
            if matches!(proc.child.try_wait(), Ok(Some(_))) {
                continue;
            }
            let pid = proc.child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut exited = false;
            while Instant::now() < deadline {
                if matches!(proc.child.try_wait(), Ok(Some(_))) {
                    exited = true;
                    break;
                }
                sleep(Duration::from_millis(50));
            }
            if !exited {
                let _ = proc.child.kill();
                let _ = proc.child.wait();
                println!("  killed {} pid {pid} (SIGKILL)", proc.label);
            }
        }
    }
}

fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().context("cannot run command")?;
    if !out.status.success() {
        bail!("`{}` failed", crate::show(cmd));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn capture_stdin(cmd: &mut Command, input: &str) -> Result<String> {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run command")?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(format!("{input}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn versions() -> String {
    let first = |cmd: &mut Command| {
        cmd.output()
            .ok()
            .map(|o| {
                let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
                s.push_str(&String::from_utf8_lossy(&o.stderr));
                s.lines().next().unwrap_or("").to_owned()
            })
            .unwrap_or_default()
    };
    let ovpn = first(Command::new("openvpn").arg("--version"));
    let ovpn: String = ovpn
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let iperf = first(Command::new("iperf3").arg("--version"));
    let iperf: String = iperf
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let wg = first(Command::new("wireguard-go").arg("--version"));
    let wg: String = wg.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let kernel = first(Command::new("uname").arg("-r"));
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{ovpn}; {wg}; {iperf}; kernel {kernel}; {cpus} cpus")
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), fmt_num)
}

struct Report<'a> {
    opts: &'a Options,
    pairs: &'a [Pair],
    samples: &'a Samples,
    versions: &'a str,
    notes: &'a [String],
}

impl Report<'_> {
    fn reference(&self) -> Option<&Pair> {
        self.pairs.iter().find(|p| p.key == "a")
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        let kind = if self.opts.time <= 3 && self.opts.repeat == 1 {
            "quick run"
        } else {
            "full run"
        };
        let _ = writeln!(
            s,
            "`cargo xtask bench` ({kind}: {} s per iperf3 run, median of {} round(s), UDP \
             offered load -b {} -l 1300). {} transport, tls-crypt, AES-256-GCM, same PKI and \
             config for every OpenVPN pair. Ratio = value / (a).",
            self.opts.time,
            self.opts.repeat,
            self.opts.udp_rate,
            self.opts.proto.to_uppercase()
        );
        let _ = writeln!(s, "{}\n", self.versions);
        s.push_str("| metric |");
        for p in self.pairs {
            let _ = write!(s, " ({}) {} |", p.key, p.name);
        }
        s.push_str("\n| --- |");
        for _ in self.pairs {
            s.push_str(" ---: |");
        }
        s.push('\n');
        let reference = self.reference();
        for m in METRICS {
            let _ = write!(s, "| {} |", m.desc);
            let r = reference.and_then(|r| self.samples.median(r.key, m.key));
            for p in self.pairs {
                match self.samples.median(p.key, m.key) {
                    None => s.push_str(" n/a |"),
                    Some(v) => {
                        let _ = write!(s, " {}", fmt_num(v));
                        match r {
                            Some(r) if p.key != "a" && r > 0.0 && m.ratio => {
                                let _ = write!(s, " (x{:.2})", v / r);
                            }
                            _ => {}
                        }
                        s.push_str(" |");
                    }
                }
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
        let _ = writeln!(
            s,
            "  \"time_s\": {}, \"repeat\": {}, \"udp_rate\": \"{}\", \"proto\": \"{}\", \"versions\": \"{}\",",
            self.opts.time,
            self.opts.repeat,
            self.opts.udp_rate,
            self.opts.proto,
            self.versions.replace('"', "'")
        );
        let _ = writeln!(s, "  \"notes\": [{}],", json_notes(self.notes));
        s.push_str("  \"pairs\": {\n");
        let reference = self.reference();
        for (i, p) in self.pairs.iter().enumerate() {
            let _ = writeln!(
                s,
                "    \"{}\": {{\"name\": \"{}\", \"metrics\": {{",
                p.key, p.name
            );
            let mut keys: Vec<&str> = self
                .samples
                .0
                .iter()
                .filter(|x| x.0 == p.key)
                .map(|x| x.1)
                .collect();
            keys.dedup();
            keys.sort_unstable();
            keys.dedup();
            for (j, k) in keys.iter().enumerate() {
                let vals = self.samples.values(p.key, k);
                let med = median(vals.clone()).unwrap_or(f64::NAN);
                let ratio = reference
                    .and_then(|r| self.samples.median(r.key, k))
                    .filter(|r| *r > 0.0)
                    .map_or_else(|| "null".to_owned(), |r| format!("{:.4}", med / r));
                let list: Vec<String> = vals.iter().map(|v| format!("{v:.6}")).collect();
                let _ = writeln!(
                    s,
                    "      \"{k}\": {{\"median\": {med:.6}, \"ratio_to_a\": {ratio}, \"samples\": [{}]}}{}",
                    list.join(", "),
                    if j + 1 < keys.len() { "," } else { "" }
                );
            }
            let _ = writeln!(
                s,
                "    }}}}{}",
                if i + 1 < self.pairs.len() { "," } else { "" }
            );
        }
        s.push_str("  }\n}\n");
        s
    }

    /// A grouped bar chart of TCP 1 / TCP 4 / UDP throughput per pair.
    fn svg(&self) -> String {
        let series = [
            ("tcp1_gbps", "TCP 1 stream", "#4e79a7"),
            ("tcp4_gbps", "TCP 4 streams", "#f28e2b"),
            ("udp_rx_gbps", "UDP rx", "#59a14f"),
        ];
        let max = self
            .pairs
            .iter()
            .flat_map(|p| {
                series
                    .iter()
                    .filter_map(|m| self.samples.median(p.key, m.0))
            })
            .fold(0.1_f64, f64::max);
        let (w, h, left, top, bottom) = (760.0, 360.0, 60.0, 40.0, 70.0);
        let plot_h = h - top - bottom;
        let group_w = (w - left - 20.0) / self.pairs.len().max(1) as f64;
        let bar_w = group_w / (series.len() as f64 + 1.0);
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
             font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" \
             fill=\"white\"/>\n<text x=\"{left}\" y=\"20\" font-size=\"14\">Throughput through \
             the tunnel, Gbit/s (median of {}, {} s runs)</text>\n",
            self.opts.repeat, self.opts.time
        );
        for i in 0..=4 {
            let v = max * f64::from(i) / 4.0;
            let y = top + plot_h - plot_h * f64::from(i) / 4.0;
            let _ = writeln!(
                s,
                "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.2}</text>",
                w - 20.0,
                left - 5.0,
                y + 4.0
            );
        }
        for (i, p) in self.pairs.iter().enumerate() {
            let x0 = left + group_w * i as f64 + bar_w / 2.0;
            for (j, (key, _, color)) in series.iter().enumerate() {
                let Some(v) = self.samples.median(p.key, key) else {
                    continue;
                };
                let bh = plot_h * v / max;
                let x = x0 + bar_w * j as f64;
                let _ = writeln!(
                    s,
                    "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" \
                     fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" \
                     font-size=\"10\">{v:.2}</text>",
                    top + plot_h - bh,
                    bar_w - 2.0,
                    x + bar_w / 2.0,
                    top + plot_h - bh - 3.0
                );
            }
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">({}) {}</text>",
                x0 + bar_w * 1.5,
                top + plot_h + 18.0,
                p.key,
                p.name
            );
        }
        for (j, (_, label, color)) in series.iter().enumerate() {
            let x = left + 150.0 * j as f64;
            let y = h - 25.0;
            let _ = writeln!(
                s,
                "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{color}\"/>\
                 <text x=\"{}\" y=\"{y}\">{label}</text>",
                y - 10.0,
                x + 16.0
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iperf_json_and_ping() {
        let json = "{\"start\":{},\"end\":{\"sum_sent\":{\"bytes\":5},\n\t\"sum_received\":\
                    {\"bytes\": 12486500, \"bits_per_second\": 9.9e7, \"lost_percent\": 0.5}}}";
        let obj = json_object(json, "sum_received").expect("object");
        assert_eq!(json_number(obj, "bytes"), Some(12_486_500.0));
        assert_eq!(json_number(obj, "bits_per_second"), Some(9.9e7));
        assert_eq!(json_number(obj, "lost_percent"), Some(0.5));
        let ping = "64 bytes from 10.8.0.1: icmp_seq=1 ttl=64 time=0.512 ms\n\
                    64 bytes from 10.8.0.1: icmp_seq=2 ttl=64 time=1.5 ms\n";
        assert_eq!(parse_ping(ping), [0.512, 1.5]);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
    }

    #[test]
    fn options_parse() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let o = Options::parse(&args(&["--quick", "--only", "a,b"])).expect("valid");
        assert_eq!((o.time, o.repeat), (3, 1));
        assert_eq!(o.only, ["a", "b"]);
        let o = Options::parse(&args(&["--time", "5", "--repeat", "2"])).expect("valid");
        assert_eq!((o.time, o.repeat), (5, 2));
        assert!(Options::parse(&args(&["--time"])).is_err());
        assert!(Options::parse(&args(&["--time", "0"])).is_err());
        assert!(Options::parse(&args(&["--bogus"])).is_err());
        assert_eq!(Options::parse(&[]).expect("defaults").proto, "udp");
        let o = Options::parse(&args(&["--proto", "tcp"])).expect("valid");
        assert_eq!(o.proto, "tcp");
        assert!(Options::parse(&args(&["--proto", "sctp"])).is_err());
    }
}
