//! `openvpn-server --config server.conf [--option args …]`.

use std::path::PathBuf;

use anyhow::Context;
use openvpn_control::options;
use openvpn_server::config;

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: openvpn-server --config FILE [--option args ...]\n       openvpn-server --check-config --config FILE   (validate; print what each option does)\n\nReads OpenVPN 2.6 server configs; see README.md."
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
    // Ours, not OpenVPN's: validate, say what each option does, and exit.
    let check_only = args.iter().any(|a| a == "--check-config");
    args.retain(|a| a != "--check-config");
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
    if check_only {
        std::process::exit(openvpn_control::options::check_config(
            config_file.as_deref(),
            cli,
            openvpn_control::options::catalog::Role::Server,
            config::load_from,
        ));
    }
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
    openvpn_tun::logging::init(
        &cfg.log_options(),
        "openvpn_server",
        // The management interface's log cache (`log all`, `>LOG:`) sees what the log shows.
        Some(Box::new(openvpn_server::management::LogLayer)),
    )?;
    for note in &cfg.notices {
        tracing::info!("{note}");
    }
    // cd, nice, mlock: before the runtime's threads start (they inherit the nice value).
    let p = &cfg.process;
    openvpn_tun::process::apply_start(p.cd.as_deref(), p.nice, p.mlock)?;
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
