//! `openvpn-client --config profile.ovpn [--option args …]`: a thin binary over the library.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::Context;
use openvpn_client::{
    ClientConfig, Command, ExitReason, HelperTunBuilder, LinuxTunBuilder, VpnEvent,
};
use openvpn_control::options;
use tracing::{error, info, warn};

fn verb_filter(verb: u8) -> &'static str {
    match verb {
        0 => "error",
        1 => "warn,openvpn_client=info",
        2..=3 => "info",
        4 => "debug,rustls=info",
        _ => "trace",
    }
}

fn prompt(label: &str, echo: bool) -> std::io::Result<String> {
    let mut out = std::io::stderr();
    write!(out, "{label}")?;
    out.flush()?;
    let _ = echo;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn run_script(
    cmd: &str,
    script_type: &str,
    dev: &str,
    settings: Option<&openvpn_client::TunSettings>,
) {
    let mut c = std::process::Command::new("/bin/sh");
    c.arg("-c").arg(format!("{cmd} {dev}"));
    c.env("script_type", script_type).env("dev", dev);
    if let Some(s) = settings {
        c.env("tun_mtu", s.mtu.to_string());
        if let Some((a, p)) = s.ipv4 {
            let mask = std::net::Ipv4Addr::from(if p == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(p))
            });
            c.env("ifconfig_local", a.to_string())
                .env("ifconfig_netmask", mask.to_string());
        }
        if let Some((a, p)) = s.ipv6 {
            c.env("ifconfig_ipv6_local", a.to_string())
                .env("ifconfig_ipv6_netbits", p.to_string());
        }
        for (i, d) in s.dns_servers.iter().enumerate() {
            c.env(
                format!("foreign_option_{}", i + 1),
                format!("dhcp-option DNS {d}"),
            );
        }
    }
    match c.status() {
        Ok(st) if st.success() => {}
        Ok(st) => warn!("{script_type} script '{cmd}' exited with {st}"),
        Err(e) => warn!("{script_type} script '{cmd}': {e}"),
    }
}

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("helper") {
        return openvpn_client::privsep::helper_main(&args[1..]);
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: openvpn-client --config PROFILE.ovpn [--helper-socket PATH] [--option args ...]"
        );
        println!("       openvpn-client helper [--socket PATH] [--profiles DIR]   (as root)");
        return Ok(());
    }
    // Ours, not an OpenVPN option: take it out before the OpenVPN option parser sees it.
    let mut helper_socket = None;
    if let Some(i) = args.iter().position(|a| a == "--helper-socket") {
        if i + 1 >= args.len() {
            eprintln!("openvpn-client: --helper-socket needs a path");
            std::process::exit(1);
        }
        helper_socket = Some(PathBuf::from(args.remove(i + 1)));
        args.remove(i);
    }
    if args.iter().any(|a| a == "--version") {
        println!("openvpn-client (openvpn-rs) {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let cli = match options::parse_cli_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("openvpn-client: {e}");
            std::process::exit(1);
        }
    };
    let file = cli
        .iter()
        .find(|l| l.name == "config")
        .and_then(|l| l.arg(0))
        .map(PathBuf::from);
    let cfg = match ClientConfig::load(file.as_deref(), cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("openvpn-client: {e}");
            std::process::exit(1);
        }
    };
    // Ask for credentials before daemonizing (the terminal goes away).
    let mut creds = None;
    if let openvpn_client::config::AuthUserPass::Ask { username } = &cfg.auth_user_pass {
        let u = match username {
            Some(u) => u.clone(),
            None => prompt("Enter Auth Username: ", true)?,
        };
        let p = prompt("Enter Auth Password: ", false)?;
        creds = Some((u, p));
    }
    if cfg.daemon {
        openvpn_tun::process::daemonize().context("daemon")?;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("OPENVPN_LOG")
        .unwrap_or_else(|_| verb_filter(cfg.verb).into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match &cfg.log {
        Some((path, append)) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(*append)
                .write(true)
                .truncate(!*append)
                .open(path)
                .with_context(|| format!("log file {}", path.display()))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .init();
        }
        None => builder.init(),
    }
    if let Some(p) = &cfg.writepid {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("writepid {}", p.display()))?;
    }
    // Unprivileged: let the root helper open the tun (explicitly, or when its socket exists).
    let default_socket = PathBuf::from(openvpn_client::privsep::DEFAULT_SOCKET);
    let helper_socket = helper_socket.or_else(|| {
        (openvpn_tun::fdpass::euid() != 0 && default_socket.exists()).then_some(default_socket)
    });
    let helper = match (helper_socket, &file) {
        (Some(socket), Some(profile)) => Some(HelperTunBuilder {
            socket,
            profile: profile.clone(),
        }),
        (Some(_), None) => anyhow::bail!("the privileged helper needs a profile file (--config)"),
        (None, _) => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let code = rt.block_on(async move {
        let dev = cfg.dev.clone();
        let up = cfg.up.clone().filter(|_| cfg.script_security >= 2);
        let down = cfg.down.clone().filter(|_| cfg.script_security >= 2);
        let name = (dev != "tun").then(|| dev.clone());
        let mut handle = match helper {
            Some(b) => {
                info!("using the privileged helper at {}", b.socket.display());
                openvpn_client::connect(cfg, b)
            }
            None => openvpn_client::connect(cfg, LinuxTunBuilder { name }),
        };
        let cmd = handle.commander();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).ok();
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => { let _ = cmd.send(Command::Disconnect); }
                    Some(_) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => { let _ = cmd.send(Command::Disconnect); }
                    Some(_) = async { match usr1.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => { let _ = cmd.send(Command::ReconnectNow); }
                }
            }
        });
        let mut last_settings = None;
        let mut ran_up = false;
        loop {
            tokio::select! {
                ev = handle.events.recv() => {
                    let Some(ev) = ev else { break };
                    match ev {
                        VpnEvent::CredentialsRequired { .. } => {
                            if let Some((u, p)) = creds.take() {
                                handle.command(Command::Credentials { username: u, password: p });
                            }
                        }
                        VpnEvent::Connected { server, settings, cipher } => {
                            info!("Data Channel: cipher '{cipher}', connected to {server}");
                            if let (Some(up), false) = (&up, ran_up) {
                                run_script(up, "up", &dev, Some(&settings));
                                ran_up = true;
                            }
                            last_settings = Some(settings);
                            info!("Initialization Sequence Completed");
                        }
                        VpnEvent::Connecting { remote, index, total, proto } => info!("Attempting to establish connection with {remote} ({proto:?}, address {index} of {total})"),
                        VpnEvent::ConnectFailed { remote, reason } => warn!("connection to {remote} failed: {reason}"),
                        VpnEvent::Reconnecting { reason } => warn!("Restart: {reason}"),
                        VpnEvent::AuthFailed { reason } => error!("AUTH: Received control message: AUTH_FAILED{}", if reason.is_empty() { String::new() } else { format!(",{reason}") }),
                        other => info!("{other:?}"),
                    }
                }
            }
        }
        let reason = handle.wait().await;
        if let (Some(down), Some(s)) = (&down, &last_settings) {
            run_script(down, "down", &dev, Some(s));
        }
        match reason {
            ExitReason::Disconnected => { info!("SIGTERM received, process exiting"); 0 }
            other => { error!("exiting: {other:?}"); 1 }
        }
    });
    std::process::exit(code);
}
