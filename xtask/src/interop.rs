//! The interop harness: runs each [`Case`] in the ovrs-srv / ovrs-cli namespaces.
//!
//! ```text
//! scripts/pki.sh target/interop/pki        (kept between runs)
//! scripts/netns.sh up                      ovrs-srv 10.77.0.1 <-veth-> ovrs-cli 10.77.0.2
//! for each enabled case:
//!     scripts/ovpn-conf.sh server|client   target/interop/<case>/{server,client1}.conf
//!     ip netns exec ovrs-srv <server> --config server.conf     (pid kept)
//!     wait for "Initialization Sequence Completed"
//!     ip netns exec ovrs-cli <client> --config client1.conf    (pid kept)
//!     wait, then ping -c 3 -W 2 10.8.0.1 and fd08::1 from ovrs-cli
//!     SIGTERM (then SIGKILL) the two pids
//! scripts/netns.sh down                    always, also on error or panic
//! interop: N passed, M failed
//! ```

use std::ffi::OsStr;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cases::{CASES, Case, Expect, Impl};

const SERVER_NS: &str = "ovrs-srv";
const CLIENT_NS: &str = "ovrs-cli";
const INIT_DONE: &str = "Initialization Sequence Completed";
const SERVER_WAIT: Duration = Duration::from_secs(15);
const CLIENT_WAIT: Duration = Duration::from_secs(30);
/// How long a client that must not connect is watched.
const NO_TUNNEL_WAIT: Duration = Duration::from_secs(12);
const PING_TARGETS: [&str; 2] = ["10.8.0.1", "fd08::1"];

/// Command-line options of `cargo xtask interop`.
#[derive(Debug, Default)]
pub(crate) struct Options {
    /// Run only enabled cases whose name contains this.
    filter: Option<String>,
    /// Print the table and exit.
    list: bool,
    /// Also run disabled cases (to try one that is not ready for CI yet).
    all: bool,
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
                other => {
                    bail!("interop: unknown argument '{other}' (use --filter NAME, --all, --list)")
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
                "{:<55} {:<8} server={:?} client={:?} proto={} tls={} ciphers={}/{} expect={:?}",
                case.name,
                if case.enabled { "enabled" } else { "disabled" },
                case.server,
                case.client,
                case.proto.as_str(),
                case.wrap.as_str(),
                case.server_ciphers,
                case.client_ciphers,
                case.expect
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
    env.ours = build_ours(&env.root, &selected)?;
    script(&env, "pki.sh", &[env.pki.as_os_str()])?;

    // Leftovers from an interrupted run would make `up` a no-op.
    script(&env, "netns.sh", &[OsStr::new("down")])?;
    let namespaces = Namespaces { env: &env };
    script(&env, "netns.sh", &[OsStr::new("up")])?;

    let (mut passed, mut failed) = (0, 0);
    for case in selected {
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
                println!("FAIL {}: {e:#}", case.name);
            }
        }
    }
    drop(namespaces);
    println!("interop: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!(
            "{failed} interop case(s) failed; logs in {}",
            env.out.display()
        );
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
        if left
            .lines()
            .any(|l| l.starts_with(SERVER_NS) || l.starts_with(CLIENT_NS))
        {
            eprintln!("interop: teardown left namespaces behind:\n{left}");
        } else {
            println!("interop: namespaces {SERVER_NS} and {CLIENT_NS} removed");
        }
    }
}

fn run_case(env: &Env, case: &Case) -> Result<()> {
    let dir = env.out.join(case.name);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    fs::create_dir_all(&dir)?;
    let server_conf = dir.join("server.conf");
    let client_conf = dir.join("client1.conf");
    write_conf(env, case, "server", &server_conf)?;
    write_conf(env, case, "client", &client_conf)?;

    // Dropping `procs` stops whatever was started, on every return path.
    let mut procs = Procs(Vec::new());
    let server = procs.start(env, case.server, "server", SERVER_NS, &server_conf)?;
    match procs.wait_init(server, SERVER_WAIT)? {
        Waited::Init => {}
        other => bail!("server {other}\n{}", procs.tails()),
    }
    let client = procs.start(env, case.client, "client", CLIENT_NS, &client_conf)?;
    match (
        case.expect,
        procs.wait_init(client, CLIENT_WAIT.min(wait_for(case)))?,
    ) {
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
            return procs
                .check_logs(&[(server, case.server_log_has), (client, case.client_log_has)]);
        }
    }
    for target in PING_TARGETS {
        let mut ping = Command::new("ip");
        ping.args([
            "netns", "exec", CLIENT_NS, "ping", "-c", "3", "-W", "2", target,
        ]);
        let shown = crate::show(&ping);
        let out = ping
            .output()
            .with_context(|| format!("cannot run `{shown}`"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let summary = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or("");
        println!("interop: {target}: {summary}");
        if !out.status.success() {
            bail!(
                "`{shown}` failed ({}):\n{text}{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                procs.tails()
            );
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

fn write_conf(env: &Env, case: &Case, role: &str, conf: &Path) -> Result<()> {
    let (ciphers, extra) = match role {
        "server" => (case.server_ciphers, case.server_extra),
        _ => (case.client_ciphers, case.client_extra),
    };
    let mut args: Vec<&OsStr> = vec![
        OsStr::new(role),
        conf.as_os_str(),
        env.pki.as_os_str(),
        OsStr::new("--proto"),
        OsStr::new(case.proto.as_str()),
        OsStr::new("--tls"),
        OsStr::new(case.wrap.as_str()),
        OsStr::new("--cipher"),
        OsStr::new(ciphers),
    ];
    for line in extra {
        args.extend([OsStr::new("--extra"), OsStr::new(line)]);
    }
    script(env, "ovpn-conf.sh", &args)
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
        label: &'static str,
        ns: &str,
        conf: &Path,
    ) -> Result<usize> {
        let program = match (which, label) {
            (Impl::Real, _) => PathBuf::from("openvpn"),
            (Impl::Ours, "server") => env.ours.0.clone().context(
                "case needs target/release/openvpn-server, but the workspace has no such binary",
            )?,
            (Impl::Ours, _) => env.ours.1.clone().context(
                "case needs target/release/openvpn-client, but the workspace has no such binary",
            )?,
        };
        let out_path = conf.with_extension("out");
        let out = File::create(&out_path)
            .with_context(|| format!("cannot create {}", out_path.display()))?;
        let mut cmd = Command::new("ip");
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

    fn wait_init(&mut self, index: usize, timeout: Duration) -> Result<Waited> {
        let proc = self.0.get_mut(index).context("no such process")?;
        let deadline = Instant::now() + timeout;
        loop {
            let done = proc
                .logs
                .iter()
                .any(|p| fs::read_to_string(p).is_ok_and(|t| t.contains(INIT_DONE)));
            if done {
                return Ok(Waited::Init);
            }
            if let Some(status) = proc.child.try_wait()? {
                return Ok(Waited::Exited(status));
            }
            if Instant::now() >= deadline {
                return Ok(Waited::Timeout(timeout));
            }
            sleep(Duration::from_millis(200));
        }
    }

    /// Fails unless each process's logs contain all of its needles.
    fn check_logs(&self, wanted: &[(usize, &[&str])]) -> Result<()> {
        for &(index, needles) in wanted {
            let proc = self.0.get(index).context("no such process")?;
            let text: String = proc
                .logs
                .iter()
                .filter_map(|p| fs::read_to_string(p).ok())
                .collect();
            if let Some(missing) = needles.iter().find(|n| !text.contains(**n)) {
                bail!("{} log lacks {missing:?}\n{}", proc.label, self.tails());
            }
        }
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
        sleep(Duration::from_millis(100));
    }
    let _ = proc.child.kill();
    let _ = proc.child.wait();
    println!("interop: killed {} pid {pid} (SIGKILL)", proc.label);
}

/// Runs `scripts/NAME args...`, failing with its output when it fails.
fn script(env: &Env, name: &str, args: &[&OsStr]) -> Result<()> {
    let mut cmd = Command::new("bash");
    cmd.arg(env.scripts.join(name)).args(args);
    let shown = crate::show(&cmd);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{shown}`"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Builds our release binaries that the selected cases need and the workspace has.
fn build_ours(root: &Path, cases: &[&Case]) -> Result<(Option<PathBuf>, Option<PathBuf>)> {
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
    if !build.is_empty() {
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
