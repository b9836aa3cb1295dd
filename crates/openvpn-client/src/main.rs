//! `openvpn-client --config profile.ovpn [--option args …]`: a thin binary over the library.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::Context;
use openvpn_client::management::{
    ByteCounters, ClientManagement, CountingTunBuilder, Listener, LogLayer, ManagementSettings,
    Signal,
};
use openvpn_client::plugins::ClientPlugins;
use openvpn_client::{
    ClientConfig, ClientHandle, Command, ExitReason, HelperTunBuilder, OffloadTunBuilder, TunHooks,
    VpnEvent,
};
use openvpn_control::options;
use tracing::{error, info, warn};

fn prompt(label: &str, echo: bool) -> std::io::Result<String> {
    let mut out = std::io::stderr();
    write!(out, "{label}")?;
    out.flush()?;
    let _ = echo;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Logs the client's events and feeds them to the hooks (`up-restart`, `ipchange`); the
/// hooks of a new or closing device run in its builder ([`TunHooks::wrap`]).
struct EventLog {
    hooks: TunHooks,
}

impl EventLog {
    fn on_event(&mut self, ev: &VpnEvent) {
        match ev {
            VpnEvent::Connected { server, cipher, .. } => {
                info!("Data Channel: cipher '{cipher}', connected to {server}");
                self.hooks.on_event(ev);
                info!("Initialization Sequence Completed");
            }
            VpnEvent::Connecting {
                remote,
                index,
                total,
                proto,
            } => info!(
                "Attempting to establish connection with {remote} ({proto:?}, address {index} of {total})"
            ),
            VpnEvent::ConnectFailed { remote, reason } => {
                warn!("connection to {remote} failed: {reason}")
            }
            VpnEvent::Reconnecting { reason } => {
                warn!("Restart: {reason}");
                self.hooks.on_event(ev);
            }
            VpnEvent::AuthFailed { reason } => error!(
                "AUTH: Received control message: AUTH_FAILED{}",
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(",{reason}")
                }
            ),
            VpnEvent::CredentialsRequired { .. } => {}
            other => info!("{other:?}"),
        }
    }
}

/// Sends SIGTERM, SIGINT (Ctrl-C), SIGUSR1 and SIGHUP to `tx` (on the current runtime), and
/// tells the hooks (the `signal` of the scripts that follow).
fn forward_signals(tx: tokio::sync::mpsc::UnboundedSender<Signal>, hooks: TunHooks) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let kinds = [
            (SignalKind::terminate(), Signal::Term),
            (SignalKind::interrupt(), Signal::Int),
            (SignalKind::user_defined1(), Signal::Usr1),
            (SignalKind::hangup(), Signal::Hup),
        ];
        let (stx, mut srx) = tokio::sync::mpsc::unbounded_channel();
        for (kind, s) in kinds {
            let Ok(mut sig) = signal(kind) else { continue };
            let stx = stx.clone();
            tokio::spawn(async move {
                while sig.recv().await.is_some() {
                    if stx.send(s).is_err() {
                        break;
                    }
                }
            });
        }
        drop(stx);
        while let Some(s) = srx.recv().await {
            hooks.set_signal(match s {
                Signal::Term => "sigterm",
                Signal::Int => "sigint",
                Signal::Usr1 => "sigusr1",
                Signal::Hup => "sighup",
                Signal::Usr2 => "sigusr2",
            });
            if tx.send(s).is_err() {
                break;
            }
        }
    });
}

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("helper") {
        return openvpn_client::privsep::helper_main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some(openvpn_client::guardian::SUBCOMMAND) {
        return openvpn_client::guardian::main(&args[1..]);
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: openvpn-client --config PROFILE.ovpn [--helper-socket PATH] [--option args ...]"
        );
        println!(
            "       openvpn-client --check-config --config PROFILE.ovpn   (validate; print what each option does)"
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
    // Ours, not OpenVPN's: validate, say what each option does, and exit.
    let check_only = args.iter().any(|a| a == "--check-config");
    args.retain(|a| a != "--check-config");
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
    if check_only {
        std::process::exit(openvpn_control::options::check_config(
            file.as_deref(),
            cli,
            openvpn_control::options::catalog::Role::Client,
            ClientConfig::load,
        ));
    }
    let mut cfg = match ClientConfig::load(file.as_deref(), cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("openvpn-client: {e}");
            std::process::exit(1);
        }
    };
    // Ask for credentials before daemonizing (the terminal goes away); with
    // management-query-passwords the management client is asked instead.
    let query_passwords = cfg.management.as_ref().is_some_and(|m| m.query_passwords);
    let mut creds = None;
    if let (openvpn_client::config::AuthUserPass::Ask { username }, false) =
        (&cfg.auth_user_pass, query_passwords)
    {
        let u = match username {
            Some(u) => u.clone(),
            None => prompt("Enter Auth Username: ", true)?,
        };
        let mut p = prompt("Enter Auth Password: ", false)?;
        if let Some((text, echo)) = &cfg.static_challenge {
            let r = prompt(&format!("{text} "), *echo)?;
            p = openvpn_client::config::static_challenge_password(&p, &r);
        }
        creds = Some((u, p));
    } else if let (Some((text, echo)), openvpn_client::config::AuthUserPass::Given { .. }) =
        (cfg.static_challenge.clone(), &cfg.auth_user_pass)
    {
        let r = prompt(&format!("{text} "), echo)?;
        cfg.answer_static_challenge(&r);
    }
    if cfg.daemon {
        openvpn_tun::process::daemonize().context("daemon")?;
    }
    // The management interface's `log` command reads what the log shows.
    let log_layer: Option<openvpn_tun::logging::ExtraLayer> = cfg
        .management
        .is_some()
        .then(|| Box::new(LogLayer) as openvpn_tun::logging::ExtraLayer);
    openvpn_tun::logging::init(&cfg.log_options(), "openvpn_client", log_layer)?;
    for note in &cfg.notices {
        info!("{note}");
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
    if helper.is_none() {
        // We install routes and DNS ourselves: a guardian process undoes them should we be
        // killed (kill -9) before we can.
        match openvpn_client::guardian::spawn(cfg.log.as_ref().map(|(p, _)| p.as_path())) {
            Ok(pid) => info!("guardian pid {pid} undoes routes and DNS if this process is killed"),
            Err(e) => warn!(
                "cannot start the guardian process ({e}): after kill -9, routes and DNS stay until the next start"
            ),
        }
    }
    // Modules are opened before the tunnel, in profile order.
    let plugins = match ClientPlugins::load(&cfg) {
        Ok(p) => p,
        Err(e) => {
            error!("{e}");
            std::process::exit(1);
        }
    };
    if cfg.user.is_some() || cfg.group.is_some() {
        // OpenVPN warns that restarts may fail; here a restart keeps the tun device and its
        // routes, and only one that needs a new device fails.
        warn!(
            "WARNING: you are using user/group: privileges are dropped once the tunnel is up; a restart that needs a new tun device (the server pushed other settings) then fails, and routes and DNS are undone by the guardian at exit"
        );
    }
    // Scripts and modules around the tunnel (and user/group once it is first up).
    let hooks = TunHooks::new(&cfg, plugins);
    // cd, nice, mlock: before the runtime's threads start (they inherit the nice value).
    let p = &cfg.process;
    openvpn_tun::process::apply_start(p.cd.as_deref(), p.nice, p.mlock)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let code = rt.block_on(async move {
        let dev = cfg.dev.clone();
        let name = (dev != "tun").then(|| dev.clone());
        let mut log = EventLog {
            hooks: hooks.clone(),
        };
        if let Some(b) = &helper {
            info!("using the privileged helper at {}", b.socket.display());
        }
        let reason = match cfg.management.clone() {
            Some(m) => {
                // Management: the GUI releases the hold, answers password queries and sends
                // signals; connect() is called only when it says so.
                let listener = match Listener::bind(&m.addr).await {
                    Ok(l) => l,
                    Err(e) => {
                        error!("MANAGEMENT: cannot listen on {:?}: {e}", m.addr);
                        return 1;
                    }
                };
                let mut settings = match ManagementSettings::from_options(&m, &cfg) {
                    Ok(s) => s,
                    Err(e) => {
                        error!("MANAGEMENT: password file: {e}");
                        return 1;
                    }
                };
                settings.credentials = creds.take();
                let mgmt = ClientManagement::new(listener, settings);
                forward_signals(mgmt.signals(), hooks.clone());
                let start = |counters: &ByteCounters| -> ClientHandle {
                    match helper.clone() {
                        Some(b) => openvpn_client::connect(
                            cfg.clone(),
                            CountingTunBuilder::new(hooks.wrap(b), counters.clone()),
                        ),
                        None => openvpn_client::connect(
                            cfg.clone(),
                            CountingTunBuilder::new(
                                hooks.wrap(OffloadTunBuilder {
                                    name: name.clone(),
                                    dns: cfg.dns_backend(),
                                }),
                                counters.clone(),
                            ),
                        ),
                    }
                };
                mgmt.run(start, |ev| log.on_event(ev)).await
            }
            None => {
                let mut handle = match helper {
                    Some(b) => openvpn_client::connect(cfg, hooks.wrap(b)),
                    None => {
                        let dns = cfg.dns_backend();
                        openvpn_client::connect(cfg, hooks.wrap(OffloadTunBuilder { name, dns }))
                    }
                };
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                forward_signals(tx, hooks.clone());
                let cmd = handle.commander();
                tokio::spawn(async move {
                    while let Some(s) = rx.recv().await {
                        let _ = cmd.send(match s {
                            Signal::Usr1 | Signal::Hup => Command::ReconnectNow,
                            _ => Command::Disconnect,
                        });
                    }
                });
                while let Some(ev) = handle.events.recv().await {
                    if let VpnEvent::CredentialsRequired { .. } = ev {
                        if let Some((u, p)) = creds.take() {
                            handle.command(Command::Credentials {
                                username: u,
                                password: p,
                            });
                        }
                    }
                    log.on_event(&ev);
                }
                handle.wait().await
            }
        };
        // The device (and with it route-pre-down and down) has closed when the engine
        // stopped, unless the data path's send task still holds it (then: below).
        match reason {
            ExitReason::Disconnected => {
                info!("SIGTERM received, process exiting");
                0
            }
            ExitReason::Inactive => {
                info!("Inactivity timeout (--inactive), exiting");
                0
            }
            ExitReason::TlsError(why) => {
                // tls-exit: OpenVPN turns the TLS error into SIGTERM and exits with status 0.
                info!("SIGTERM[soft,tls-error] received, process exiting ({why})");
                0
            }
            other => {
                error!("exiting: {other:?}");
                1
            }
        }
    });
    // Tasks that still hold the device (the data path's send task) are dropped with the
    // runtime, and the device with them: routes and DNS are undone here, before exit (which
    // runs no destructors), not by the guardian afterwards.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    if openvpn_tun::process::privileges_dropped() {
        // Whatever the closing device could not hand over (it does so itself).
        openvpn_client::guardian::finish(std::time::Duration::from_secs(5));
    }
    std::process::exit(code);
}
