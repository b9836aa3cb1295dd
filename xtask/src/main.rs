//! Project automation for openvpn-rs, run as `cargo xtask <command>`.
//!
//! ```text
//! cargo xtask ci                      fmt check, clippy, tests, then interop when root
//! cargo xtask bench [--quick]         throughput/RTT/CPU: real vs ours vs wireguard-go/boringtun (root)
//! cargo xtask interop [--filter S]    real/ours OpenVPN peers in the ovrs-* namespaces
//!                     [--all]         also run the disabled cases
//!                     [--list]        print the case table and exit
//! cargo xtask load [--clients N]      N concurrent clients against one server, ours vs real (root)
//! ```
//!
//! `.ci/run` installs the system packages and then runs `cargo xtask ci`, so CI and a local
//! run execute the same steps.

mod bench;
mod cases;
mod corpus;
mod deps;
mod flood;
mod fuzz;
mod interop;
mod load;
mod netpair;
mod stats;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo xtask <command>
commands:
  ci                          cargo fmt --check, clippy -D warnings, tests, interop (as root)
  bench [--time S] [--repeat N] [--quick] [--only a,b,..] [--udp-rate R] [--no-build]
                              tunnel throughput/RTT/CPU, real vs ours vs wireguard-go/boringtun (root;
                              default 10 s x 3 rounds, --quick = 3 s x 1); target/bench/
  interop [--filter NAME]     run the enabled interop cases whose name contains NAME
          [--all]             also run disabled cases
          [--list]            list all cases (enabled or not) and exit
          [--no-build]        use target/release binaries as they are
  load [--clients N] [--quick] [--concurrency C] [--hold S] [--only ours|real] [--verb N] [--no-build]
                              N concurrent clients (default 1000, --quick = 100) against one
                              server, ours and real OpenVPN: handshakes/s, memory and CPU per
                              client, ping success (root); target/bench/load.{json,md}
  corpus [--update]           tests/corpus through --check-config vs the real 2.6's
                              verdicts (expected.tsv) and the last accepted run (ours.tsv)
  fuzz-smoke [--seconds N]    fuzz targets over seeds + mutants on stable (default 20 s)";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(());
    };
    match command.as_str() {
        "ci" => {
            if let Some(extra) = rest.first() {
                bail!("ci takes no arguments, got '{extra}'\n{USAGE}");
            }
            ci()
        }
        "interop" => interop::run(&interop::Options::parse(rest)?),
        // Internal: the junk sender of the interop flood case (run inside ovrs-cli).
        "flood-send" => flood::send(rest),
        "bench" => bench::run(&bench::Options::parse(rest)?),
        "load" => load::run(&load::Options::parse(rest)?),
        "fuzz-smoke" => fuzz::smoke(rest),
        "corpus" => corpus::run(&workspace_root()?, rest.iter().any(|a| a == "--update")),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command '{other}'\n{USAGE}"),
    }
}

/// The steps of `.ci/run` after package installation.
fn ci() -> Result<()> {
    let root = workspace_root()?;
    deps::ensure(&root, is_root()?)?;
    let cargo = cargo();
    for args in [
        &["fmt", "--all", "--", "--check"][..],
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &["test", "--workspace"],
        &["test", "-p", "openvpn-crypto", "--features", "rustcrypto"],
        &["xtask", "fuzz-smoke", "--seconds", "20"],
        &["xtask", "corpus"],
    ] {
        let mut cmd = Command::new(&cargo);
        cmd.args(args).current_dir(&root);
        run_checked(&mut cmd)?;
    }
    if is_root()? {
        interop::run(&interop::Options::default())
    } else {
        println!("ci: skipping interop (needs root for network namespaces)");
        Ok(())
    }
}

/// Runs a command with inherited stdio; a non-zero exit is an error naming the command.
fn run_checked(cmd: &mut Command) -> Result<()> {
    let shown = show(cmd);
    println!("+ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// A command line for messages.
fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The cargo that runs us (`$CARGO`), or `cargo` from PATH.
fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

/// The workspace root: the parent of this crate's directory, symlinks resolved.
fn workspace_root() -> Result<PathBuf> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::fs::canonicalize(manifest_dir)
        .with_context(|| format!("cannot resolve {}", manifest_dir.display()))?;
    dir.parent()
        .map(Path::to_path_buf)
        .context("xtask directory has no parent")
}

/// Whether the effective user id is 0, read from `/proc/self/status`.
fn is_root() -> Result<bool> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .context("no Uid line in /proc/self/status")?;
    Ok(euid == "0")
}
