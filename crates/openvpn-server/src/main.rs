//! `openvpn-server --config server.conf [--option args …]`.

use std::path::PathBuf;

use anyhow::Context;
use openvpn_control::options;
use openvpn_server::config;

fn verb_filter(verb: u8) -> &'static str {
    match verb {
        0 => "error",
        1 => "warn,openvpn_server=info",
        2..=3 => "info",
        4 => "debug,rustls=info",
        _ => "trace",
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: openvpn-server --config FILE [--option args ...]\n\nReads OpenVPN 2.6 server configs; see README.md."
        );
        return Ok(());
    }
    if args.iter().any(|a| a == "--version") {
        println!("openvpn-server (openvpn-rs) {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    if let Some(i) = args.iter().position(|a| a == "--genkey") {
        // `--genkey auth-token FILE`: a new auth-gen-token-secret.
        match (args.get(i + 1).map(String::as_str), args.get(i + 2)) {
            (Some("auth-token"), Some(file)) => {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let pem = openvpn_server::auth_token::TokenKey::generate_pem();
                let written = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(file)
                    .and_then(|mut f| f.write_all(pem.as_bytes()));
                if let Err(e) = written {
                    eprintln!("openvpn-server: cannot create {file}: {e}");
                    std::process::exit(1);
                }
                return Ok(());
            }
            _ => {
                eprintln!("openvpn-server: usage: --genkey auth-token FILE");
                std::process::exit(1);
            }
        }
    }
    let cli = match options::parse_cli_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("openvpn-server: {e}");
            std::process::exit(1);
        }
    };
    let config_file = cli
        .iter()
        .find(|l| l.name == "config")
        .and_then(|l| l.arg(0))
        .map(PathBuf::from);
    let cfg = match config::load_from(config_file.as_deref(), cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("openvpn-server: {e}");
            std::process::exit(1);
        }
    };
    if cfg.daemon {
        openvpn_tun::process::daemonize().context("daemon")?;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("OPENVPN_LOG")
        .unwrap_or_else(|_| verb_filter(cfg.verb).into());
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let fmt = tracing_subscriber::fmt::layer().with_target(false);
    // The management interface's log cache (`log all`, `>LOG:`) sees what the log shows.
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(openvpn_server::management::LogLayer);
    match &cfg.log {
        Some((path, append)) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(*append)
                .write(true)
                .truncate(!*append)
                .open(path)
                .with_context(|| format!("log file {}", path.display()))?;
            registry
                .with(
                    fmt.with_ansi(false)
                        .with_writer(std::sync::Mutex::new(file)),
                )
                .init();
        }
        None => registry.with(fmt).init(),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let reload_args: Vec<String> = std::env::args().skip(1).collect();
    let reloader: openvpn_server::runtime::Reloader = std::sync::Arc::new(move || {
        let cli = options::parse_cli_args(reload_args.clone()).map_err(|e| e.to_string())?;
        let file = cli
            .iter()
            .find(|l| l.name == "config")
            .and_then(|l| l.arg(0))
            .map(PathBuf::from);
        config::load_from(file.as_deref(), cli).map_err(|e| e.to_string())
    });
    let result = rt.block_on(openvpn_server::runtime::run(cfg, Some(reloader)));
    if let Err(e) = &result {
        tracing::error!("fatal: {e:#}");
    }
    result
}
