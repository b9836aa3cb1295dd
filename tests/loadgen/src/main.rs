//! `ovrs-loadgen`: many clients of our client library against one OpenVPN server, in one
//! process. Run by `cargo xtask load` inside the client namespace.
//!
//! ```text
//! ovrs-loadgen --profile client.ovpn --clients N --out result.json
//!              [--concurrency 50] [--target 10.8.0.1] [--server-pid PID] [--hold S]
//!              [--timeout S]
//! ```
//!
//! Every client is a full `openvpn_client::connect` on the shared tokio runtime: its own UDP
//! socket, TLS handshake, data-channel keys and keepalive, with an in-memory tun
//! (`openvpn_tun::MemoryTun`) instead of a kernel device. At most `--concurrency` handshakes
//! are in flight. The work itself is the library's `openvpn_loadgen::run`.
//!
//! 1. Samples the server's `VmRSS` and CPU (`/proc/PID/status`, `/proc/PID/stat`), and ours.
//! 2. Connect phase: starts the clients, waits until every one is connected (or failed or
//!    timed out), samples both processes again at once.
//! 3. Ping round 1: each client sends an ICMP echo through its tunnel to `--target` (the
//!    server's tunnel address) and waits for the reply (up to 3 tries, 2 s each).
//! 4. Holds the clients for `--hold` seconds (keepalive pings keep them up), then ping round 2
//!    and a last sample.
//! 5. Writes the numbers as JSON to `--out` and stops the clients.
//!
//! Progress goes to stderr; the exit status is 0 whenever the JSON was written.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use openvpn_client::ClientConfig;
use openvpn_loadgen::Load;

/// Command-line options.
#[derive(Debug, Clone)]
struct Args {
    profile: PathBuf,
    /// The run, from `Load::default()` and the options given.
    load: Load,
    out: PathBuf,
}

const USAGE: &str = "usage: ovrs-loadgen --profile FILE --clients N --out FILE \
                     [--concurrency N] [--target IPV4] [--server-pid PID] [--hold S] [--timeout S]";

impl Args {
    fn parse() -> Result<Args> {
        let mut profile = None;
        let mut out = None;
        let mut a = Load::default();
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--profile" => profile = Some(PathBuf::from(value()?)),
                "--out" => out = Some(PathBuf::from(value()?)),
                "--clients" => a.clients = value()?.parse().context("--clients")?,
                "--concurrency" => a.concurrency = value()?.parse().context("--concurrency")?,
                "--target" => a.target = value()?.parse().context("--target")?,
                "--server-pid" => a.server_pid = Some(value()?.parse().context("--server-pid")?),
                "--hold" => a.hold = Duration::from_secs(value()?.parse().context("--hold")?),
                "--timeout" => {
                    a.timeout = Duration::from_secs(value()?.parse().context("--timeout")?)
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument '{other}'\n{USAGE}"),
            }
        }
        if a.clients == 0 || a.concurrency == 0 {
            bail!("--clients and --concurrency must be at least 1");
        }
        Ok(Args {
            profile: profile.context(USAGE)?,
            load: a,
            out: out.context(USAGE)?,
        })
    }
}

fn main() -> Result<()> {
    let args = Args::parse()?;
    let text = std::fs::read_to_string(&args.profile)
        .with_context(|| format!("cannot read {}", args.profile.display()))?;
    let base = args
        .profile
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let cfg = ClientConfig::from_ovpn(&text, &base).context("client profile")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let outcome = rt.block_on(openvpn_loadgen::run(&args.load, cfg));
    std::fs::write(&args.out, &outcome.json)
        .with_context(|| format!("cannot write {}", args.out.display()))
}
