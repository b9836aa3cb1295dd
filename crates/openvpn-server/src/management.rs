//! The OpenVPN management interface (protocol version 5, as documented in OpenVPN's
//! `doc/management-notes.txt`), so existing tools (openvpn-auth-oauth2, openvpn-monitor, GUIs)
//! work unchanged.
//!
//! ```text
//!  TCP / unix socket ─▶ session task (one management client at a time)
//!      │  line ─▶ parse ─▶ Command ─┬─ local: help, version, pid, state, log, hold, bytecount
//!      │                            └─ CoreRequest ──(mpsc + oneshot)──▶ server main task
//!      │                                 ├─ status, kill, load-stats, metrics: gathered from every worker
//!      │                                 └─ CoreOp ─▶ the worker owning the client (or each) ─▶ execute(core)
//!      ◀── >CLIENT:… notifications (core Outputs::mgmt), >LOG:, >BYTECOUNT_CLI:, >HOLD:
//! ```
//! The core never waits for the management task: requests are answered inside the worker loops,
//! notifications go out on an unbounded channel, and a stuck management client is dropped after
//! a write timeout. Undecided `>CLIENT:CONNECT`/`REAUTH` requests are replayed to the next
//! management client that connects (until hand-window expires).

pub use openvpn_control::mgmt_words::Realtime;
use openvpn_control::mgmt_words::{num, realtime, words};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{info, warn};

use crate::core::{Outputs, ServerCore};

/// Management protocol version we speak.
pub const MANAGEMENT_VERSION: u32 = 5;
/// The OpenVPN release whose behaviour we follow, as the second word of the `version` reply
/// (`OpenVPN Version: OpenVPN 2.6.0 openvpn-rs …`): tools such as openvpn-monitor parse that
/// word as a semantic version and pick the `status 3` layout from it.
pub const OPENVPN_RELEASE: &str = "2.6.0";
/// The greeting line.
pub const GREETING: &str =
    ">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info";
/// Reply to an unknown command.
pub const UNKNOWN: &str = "ERROR: unknown command, enter 'help' for more options";
/// Longest command line accepted from a management client.
const MAX_LINE: usize = 64 * 1024;
/// A management client that does not take our output within this time is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A `>CLIENT:` notification from the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notify {
    /// `>CLIENT:CONNECT,{CID},{KID}` + ENV.
    Connect {
        /// Client ID.
        cid: u64,
        /// Key ID.
        kid: u8,
        /// Environment.
        env: Vec<(String, String)>,
    },
    /// `>CLIENT:REAUTH,{CID},{KID}` + ENV.
    Reauth {
        /// Client ID.
        cid: u64,
        /// Key ID.
        kid: u8,
        /// Environment.
        env: Vec<(String, String)>,
    },
    /// `>CLIENT:ESTABLISHED,{CID}` + ENV.
    Established {
        /// Client ID.
        cid: u64,
        /// Environment.
        env: Vec<(String, String)>,
    },
    /// `>CLIENT:DISCONNECT,{CID}` + ENV.
    Disconnect {
        /// Client ID.
        cid: u64,
        /// Environment.
        env: Vec<(String, String)>,
    },
    /// `>CLIENT:CR_RESPONSE,{CID},{KID},{base64}` + ENV: the client's answer to a `CR_TEXT`
    /// challenge (sent by `client-pending-auth … CR_TEXT:…`).
    CrResponse {
        /// Client ID.
        cid: u64,
        /// Key ID.
        kid: u8,
        /// The response as the client sent it (base64).
        response: String,
        /// Environment.
        env: Vec<(String, String)>,
    },
    /// `>CLIENT:ADDRESS,{CID},{ADDR},1`.
    Address {
        /// Client ID.
        cid: u64,
        /// Virtual address.
        addr: String,
    },
}

fn env_lines(s: &mut String, env: &[(String, String)]) {
    for (k, v) in env {
        // One line per variable: never let a value break the framing.
        let v: String = v.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        let _ = write!(s, ">CLIENT:ENV,{k}={v}\r\n");
    }
    s.push_str(">CLIENT:ENV,END\r\n");
}

impl Notify {
    /// The wire text (CRLF line ends).
    pub fn render(&self) -> String {
        let mut s = String::new();
        match self {
            Notify::Connect { cid, kid, env } => {
                let _ = write!(s, ">CLIENT:CONNECT,{cid},{kid}\r\n");
                env_lines(&mut s, env);
            }
            Notify::Reauth { cid, kid, env } => {
                let _ = write!(s, ">CLIENT:REAUTH,{cid},{kid}\r\n");
                env_lines(&mut s, env);
            }
            Notify::Established { cid, env } => {
                let _ = write!(s, ">CLIENT:ESTABLISHED,{cid}\r\n");
                env_lines(&mut s, env);
            }
            Notify::Disconnect { cid, env } => {
                let _ = write!(s, ">CLIENT:DISCONNECT,{cid}\r\n");
                env_lines(&mut s, env);
            }
            Notify::CrResponse {
                cid,
                kid,
                response,
                env,
            } => {
                let r: String = response
                    .chars()
                    .filter(|c| *c != '\r' && *c != '\n')
                    .collect();
                let _ = write!(s, ">CLIENT:CR_RESPONSE,{cid},{kid},{r}\r\n");
                env_lines(&mut s, env);
            }
            Notify::Address { cid, addr } => {
                let _ = write!(s, ">CLIENT:ADDRESS,{cid},{addr},1\r\n");
            }
        }
        s
    }
}

/// A management decision on a pending client key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// `client-auth` (with its config text) / `client-auth-nt`.
    Allow(Option<String>),
    /// `client-deny`.
    Deny {
        /// Logged reason.
        reason: String,
        /// Sent to the client as `AUTH_FAILED,{client_reason}`.
        client_reason: Option<String>,
    },
    /// `client-pending-auth`: `AUTH_PENDING` + `INFO_PRE,{extra}`, decision later.
    Pending {
        /// Text after `INFO_PRE,`.
        extra: String,
        /// Seconds the client should wait.
        timeout: u32,
    },
}

/// Signals the `signal` command can throw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Reload the configuration.
    Hup,
    /// Shut down.
    Term,
    /// Restart: every client is told RESTART and dropped; configuration reloaded.
    Usr1,
    /// Log the status.
    Usr2,
}

impl Signal {
    /// The signal's name (`SIGHUP`, …).
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hup => "SIGHUP",
            Signal::Term => "SIGTERM",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
        }
    }
}

/// `kill` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KillTarget {
    /// A common name.
    CommonName(String),
    /// `IP:port` (optionally `proto:IP:port`).
    Address(String),
}

/// A parsed management command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `help`.
    Help,
    /// `version` / `version N`.
    Version(Option<u32>),
    /// `pid`.
    Pid,
    /// `status [1|2|3]`.
    Status(u8),
    /// `state [...]`.
    State(Realtime),
    /// `log [...]`.
    Log(Realtime),
    /// `echo [...]`.
    Echo(Realtime),
    /// `bytecount N`.
    Bytecount(u64),
    /// `kill CN|IP:port`.
    Kill(KillTarget),
    /// `client-kill CID [message]`.
    ClientKill(u64, String),
    /// `client-auth CID KID` (config lines follow, up to `END`).
    ClientAuth(u64, u8),
    /// `client-auth-nt CID KID`.
    ClientAuthNt(u64, u8),
    /// `client-deny CID KID reason [client-reason]`.
    ClientDeny(u64, u8, String, Option<String>),
    /// `client-pending-auth CID KID EXTRA TIMEOUT`.
    ClientPendingAuth(u64, u8, String, u32),
    /// `hold` / `hold on|off|release`.
    Hold(Option<HoldOp>),
    /// `signal NAME`.
    Signal(Signal),
    /// `load-stats`.
    LoadStats,
    /// `verb [N]`.
    Verb(Option<u8>),
    /// `mute [N]`.
    Mute(Option<u32>),
    /// `exit` / `quit`.
    Exit,
    /// Empty line.
    Nothing,
}

/// `hold` sub-command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldOp {
    /// Set the hold flag.
    On,
    /// Clear the hold flag.
    Off,
    /// Leave the hold state.
    Release,
}

/// Parses one management command line. `Err` is the complete `ERROR: …` reply.
pub fn parse(line: &str) -> Result<Command, String> {
    let w = words(line)?;
    let Some(cmd) = w.first() else {
        return Ok(Command::Nothing);
    };
    let cmd = cmd.to_ascii_lowercase();
    let need = |n: usize| {
        if w.len() < n + 1 {
            Err(format!(
                "ERROR: the '{cmd}' command needs at least {n} parameter(s)"
            ))
        } else {
            Ok(())
        }
    };
    Ok(match cmd.as_str() {
        "help" => Command::Help,
        "version" => Command::Version(w.get(1).map(|_| num(&w, 1, "version")).transpose()?),
        "pid" => Command::Pid,
        "status" => {
            let v: u8 = w
                .get(1)
                .map(|_| num(&w, 1, "status"))
                .transpose()?
                .unwrap_or(1);
            if !(1..=3).contains(&v) {
                return Err("ERROR: status: version must be 1, 2 or 3".into());
            }
            Command::Status(v)
        }
        "state" => Command::State(realtime(&w, Realtime::Current)?),
        "log" => Command::Log(realtime(&w, Realtime::All)?),
        "echo" => Command::Echo(realtime(&w, Realtime::All)?),
        "bytecount" => {
            need(1)?;
            Command::Bytecount(num(&w, 1, "bytecount")?)
        }
        "kill" => {
            need(1)?;
            let t = &w[1];
            let addr_like = t
                .rsplit_once(':')
                .is_some_and(|(h, p)| p.parse::<u16>().is_ok() && !h.is_empty());
            if addr_like {
                Command::Kill(KillTarget::Address(t.clone()))
            } else {
                Command::Kill(KillTarget::CommonName(t.clone()))
            }
        }
        "client-kill" => {
            need(1)?;
            Command::ClientKill(
                num(&w, 1, "client-kill")?,
                w.get(2).cloned().unwrap_or_else(|| "RESTART".into()),
            )
        }
        "client-auth" => {
            need(2)?;
            Command::ClientAuth(num(&w, 1, "client-auth")?, num(&w, 2, "client-auth")?)
        }
        "client-auth-nt" => {
            need(2)?;
            Command::ClientAuthNt(num(&w, 1, "client-auth-nt")?, num(&w, 2, "client-auth-nt")?)
        }
        "client-deny" => {
            need(3)?;
            Command::ClientDeny(
                num(&w, 1, "client-deny")?,
                num(&w, 2, "client-deny")?,
                w[3].clone(),
                w.get(4).cloned(),
            )
        }
        "client-pending-auth" => {
            need(3)?;
            Command::ClientPendingAuth(
                num(&w, 1, "client-pending-auth")?,
                num(&w, 2, "client-pending-auth")?,
                w[3].clone(),
                w.get(4)
                    .map(|_| num(&w, 4, "client-pending-auth"))
                    .transpose()?
                    .unwrap_or(60),
            )
        }
        "hold" => Command::Hold(match w.get(1).map(String::as_str) {
            None => None,
            Some("on") => Some(HoldOp::On),
            Some("off") => Some(HoldOp::Off),
            Some("release") => Some(HoldOp::Release),
            Some(o) => return Err(format!("ERROR: unknown hold parameter '{o}'")),
        }),
        "signal" => {
            need(1)?;
            Command::Signal(match w[1].to_ascii_uppercase().as_str() {
                "SIGHUP" => Signal::Hup,
                "SIGTERM" => Signal::Term,
                "SIGUSR1" => Signal::Usr1,
                "SIGUSR2" => Signal::Usr2,
                other => {
                    return Err(format!(
                        "ERROR: signal '{other}' is not a known signal type"
                    ));
                }
            })
        }
        "load-stats" => Command::LoadStats,
        "verb" => Command::Verb(w.get(1).map(|_| num(&w, 1, "verb")).transpose()?),
        "mute" => Command::Mute(w.get(1).map(|_| num(&w, 1, "mute")).transpose()?),
        "exit" | "quit" => Command::Exit,
        _ => return Err(UNKNOWN.into()),
    })
}

/// The `help` text.
pub fn help_text() -> String {
    let lines = [
        "Management Interface for openvpn-rs (OpenVPN 2.6 compatible)",
        "Commands:",
        "bytecount n            : Show bytes in/out per client, update every n secs (0=off).",
        "client-auth CID KID    : Authenticate client-id/key-id CID/KID (MULTILINE, END ends).",
        "client-auth-nt CID KID : Authenticate client-id/key-id CID/KID.",
        "client-deny CID KID R [CR] : Deny auth of client-id/key-id CID/KID with log reason R",
        "                         and optional client reason CR.",
        "client-pending-auth CID KID MSG timeout : Send AUTH_PENDING and INFO_PRE,MSG.",
        "client-kill CID [M]    : Kill client instance CID with message M (def=RESTART).",
        "echo [on|off] [N|all]  : Like log, but only show messages in echo buffer.",
        "exit|quit              : Close management session.",
        "help                   : Print this message.",
        "hold [on|off|release]  : Set/show hold flag to on/off state, or release",
        "                         current hold and start accepting clients.",
        "kill cn                : Kill the client instance(s) having common name cn.",
        "kill IP:port           : Kill the client instance connecting from IP:port.",
        "load-stats             : Show global server load stats.",
        "log [on|off] [N|all]   : Turn on/off realtime log display",
        "                         + show last N lines or 'all' for entire history.",
        "mute [n]               : Show (accepted for compatibility).",
        "pid                    : Show process ID of the current OpenVPN process.",
        "signal s               : Send signal s to daemon,",
        "                         s = SIGHUP|SIGTERM|SIGUSR1|SIGUSR2.",
        "state [on|off] [N|all] : Like log, but show state history.",
        "status [n]             : Show current daemon status info using format #n.",
        "verb [n]               : Show verb level.",
        "version [n]            : Show version info or set the client's version.",
        "END",
    ];
    let mut s = String::new();
    for l in lines {
        s.push_str(l);
        s.push_str("\r\n");
    }
    s
}

/// Turns `\n` line ends into `\r\n`.
pub fn crlf(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 16);
    for l in text.lines() {
        s.push_str(l);
        s.push_str("\r\n");
    }
    s
}

/// A request the management or metrics task makes of the core (answered in the packet loop).
#[derive(Debug)]
pub enum CoreRequest {
    /// `status N`.
    Status(u8),
    /// `kill`.
    Kill(KillTarget),
    /// `client-kill`.
    ClientKill(u64, String),
    /// `client-auth*`, `client-deny`, `client-pending-auth`.
    Decide(u64, u8, Decision),
    /// `load-stats`.
    LoadStats,
    /// `>BYTECOUNT_CLI` lines.
    ByteCounts,
    /// `signal`.
    Signal(Signal),
    /// `hold release`.
    HoldRelease,
    /// Prometheus text.
    Metrics,
}

/// A request with its reply channel.
pub type Request = (CoreRequest, oneshot::Sender<String>);

/// A request one core answers by itself: the core that owns the client ID, or each core in
/// turn. The others (`status`, `kill`, `load-stats`, signals, metrics) are gathered from
/// every core by the server's main task.
#[derive(Debug)]
pub enum CoreOp {
    /// `client-kill`.
    ClientKill(u64, String),
    /// `client-auth*`, `client-deny`, `client-pending-auth`.
    Decide(u64, u8, Decision),
    /// `>BYTECOUNT_CLI` lines.
    ByteCounts,
    /// `hold release`.
    HoldRelease,
}

/// Answers a [`CoreOp`] against the core.
pub fn execute(core: &mut ServerCore, now: Instant, op: CoreOp, out: &mut Outputs) -> String {
    match op {
        CoreOp::ClientKill(cid, msg) => {
            if core.kill_client(now, cid, &msg, out) {
                "SUCCESS: client-kill command succeeded\r\n".into()
            } else {
                "ERROR: client-kill command failed\r\n".into()
            }
        }
        CoreOp::Decide(cid, kid, d) => {
            let name = match &d {
                Decision::Allow(_) => "client-auth",
                Decision::Deny { .. } => "client-deny",
                Decision::Pending { .. } => "client-pending-auth",
            };
            if core.management_decision(now, cid, kid, d, out) {
                format!("SUCCESS: {name} command succeeded\r\n")
            } else {
                format!("ERROR: {name} command failed\r\n")
            }
        }
        CoreOp::ByteCounts => {
            let mut s = String::new();
            for c in core.clients().filter(|c| c.established) {
                let (rx, tx) = c.link_bytes();
                let _ = write!(s, ">BYTECOUNT_CLI:{},{rx},{tx}\r\n", c.cid());
            }
            s
        }
        CoreOp::HoldRelease => {
            core.set_hold(false);
            "SUCCESS: hold release succeeded\r\n".into()
        }
    }
}

/// `kill`: closes the clients `target` names; how many.
pub fn kill_count(
    core: &mut ServerCore,
    now: Instant,
    target: &KillTarget,
    out: &mut Outputs,
) -> usize {
    match target {
        KillTarget::CommonName(cn) => {
            core.kill_matching(now, |c| c.common_name.as_deref() == Some(cn), out)
        }
        KillTarget::Address(a) => {
            let bare = kill_address(a);
            core.kill_matching(now, |c| c.addr.to_string() == bare, out)
        }
    }
}

fn kill_address(a: &str) -> &str {
    a.strip_prefix("udp:")
        .or_else(|| a.strip_prefix("tcp:"))
        .unwrap_or(a)
}

/// The answer to `kill` after `n` clients were closed (by one core or all workers).
pub fn kill_reply(target: &KillTarget, n: usize) -> String {
    match target {
        KillTarget::CommonName(cn) if n > 0 => {
            format!("SUCCESS: common name '{cn}' found, {n} client(s) killed\r\n")
        }
        KillTarget::CommonName(cn) => format!("ERROR: common name '{cn}' not found\r\n"),
        KillTarget::Address(a) if n > 0 => {
            format!(
                "SUCCESS: {n} client(s) at address {} killed\r\n",
                kill_address(a)
            )
        }
        KillTarget::Address(a) => {
            format!("ERROR: client at address {} not found\r\n", kill_address(a))
        }
    }
}

/// `load-stats` figures: connected clients, bytes in, bytes out.
pub fn load_stats(core: &ServerCore) -> (usize, u64, u64) {
    let (mut n, mut rx, mut tx) = (0usize, 0u64, 0u64);
    for c in core.clients().filter(|c| c.established) {
        let (r, t) = c.link_bytes();
        rx += r;
        tx += t;
        n += 1;
    }
    (n, rx, tx)
}

/// The answer to `load-stats`.
pub fn load_stats_reply((n, rx, tx): (usize, u64, u64)) -> String {
    format!("SUCCESS: nclients={n},bytesin={rx},bytesout={tx}\r\n")
}

// ---------------------------------------------------------------------------------------------
// Log ring buffer and tracing layer.

/// One cached log line.
#[derive(Clone, Debug)]
pub struct LogLine {
    /// Unix time.
    pub time: u64,
    /// `I`, `W`, `N`, `F`, `D`.
    pub flags: &'static str,
    /// Message.
    pub text: String,
}

impl LogLine {
    /// `time,flags,text`.
    pub fn render(&self) -> String {
        format!("{},{},{}", self.time, self.flags, self.text)
    }
}

struct LogHub {
    ring: Mutex<VecDeque<LogLine>>,
    cap: std::sync::atomic::AtomicUsize,
    tx: broadcast::Sender<LogLine>,
}

fn hub() -> &'static LogHub {
    static HUB: OnceLock<LogHub> = OnceLock::new();
    HUB.get_or_init(|| LogHub {
        ring: Mutex::new(VecDeque::new()),
        cap: std::sync::atomic::AtomicUsize::new(1000),
        tx: broadcast::channel(1024).0,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Adds a line to the log cache and to real-time `>LOG:` listeners.
pub fn push_log(flags: &'static str, text: String) {
    let h = hub();
    let line = LogLine {
        time: unix_now(),
        flags,
        text: text.replace(['\r', '\n'], " "),
    };
    if let Ok(mut r) = h.ring.lock() {
        let cap = h.cap.load(std::sync::atomic::Ordering::Relaxed).max(1);
        while r.len() >= cap {
            r.pop_front();
        }
        r.push_back(line.clone());
    }
    let _ = h.tx.send(line);
}

fn log_history(last: Option<usize>) -> Vec<LogLine> {
    let Ok(r) = hub().ring.lock() else {
        return Vec::new();
    };
    let skip = last.map_or(0, |n| r.len().saturating_sub(n));
    r.iter().skip(skip).cloned().collect()
}

/// A `tracing` layer feeding the management log cache (`log all`, `>LOG:`).
pub struct LogLayer;

struct MsgVisitor(String);

impl tracing::field::Visit for MsgVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LogLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let level = *event.metadata().level();
        let flags = match level {
            tracing::Level::ERROR => "N",
            tracing::Level::WARN => "W",
            tracing::Level::INFO => "I",
            _ => "D",
        };
        let mut v = MsgVisitor(String::new());
        event.record(&mut v);
        push_log(flags, v.0);
    }
}

// ---------------------------------------------------------------------------------------------
// The management server task.

/// Settings of the management task.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Password (first line of the password file).
    pub password: Option<String>,
    /// `management-client-auth`.
    pub client_auth: bool,
    /// `management-hold` (initial hold flag).
    pub hold: bool,
    /// Local tun addresses for the `state` line.
    pub local_v4: Option<String>,
    /// Local tun IPv6 address.
    pub local_v6: Option<String>,
    /// Log cache size.
    pub log_cache: usize,
}

/// A management listener.
pub enum Listener {
    /// TCP.
    Tcp(tokio::net::TcpListener),
    /// Unix domain socket.
    Unix(tokio::net::UnixListener),
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl Listener {
    async fn accept(&self) -> std::io::Result<(Box<dyn Stream>, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, a) = l.accept().await?;
                Ok((Box::new(s), a.to_string()))
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept().await?;
                Ok((Box::new(s), "unix socket".into()))
            }
        }
    }
}

/// State kept across management sessions.
struct Shared {
    settings: Settings,
    requests: mpsc::Sender<Request>,
    /// Undecided CONNECT/REAUTH notifications, replayed to a new management client.
    pending: BTreeMap<(u64, u8), String>,
    hold_flag: bool,
    holding: bool,
    states: Vec<String>,
    version: u32,
}

impl Shared {
    fn note(&mut self, n: &Notify) {
        match n {
            Notify::Connect { cid, kid, .. } | Notify::Reauth { cid, kid, .. } => {
                self.pending.insert((*cid, *kid), n.render());
            }
            Notify::Disconnect { cid, .. } => self.pending.retain(|k, _| k.0 != *cid),
            _ => {}
        }
    }

    async fn ask(&self, req: CoreRequest) -> String {
        let (tx, rx) = oneshot::channel();
        if self.requests.send((req, tx)).await.is_err() {
            return "ERROR: the server is shutting down\r\n".into();
        }
        rx.await
            .unwrap_or_else(|_| "ERROR: the server is shutting down\r\n".into())
    }
}

/// Serves management clients one after another until the request channel closes.
pub async fn serve(
    listener: Listener,
    settings: Settings,
    requests: mpsc::Sender<Request>,
    mut notify: mpsc::UnboundedReceiver<Notify>,
) {
    hub().cap.store(
        settings.log_cache.max(1),
        std::sync::atomic::Ordering::Relaxed,
    );
    let state_line = format!(
        "{},CONNECTED,SUCCESS,{},,,,,{}",
        unix_now(),
        settings.local_v4.clone().unwrap_or_default(),
        settings.local_v6.clone().unwrap_or_default()
    );
    let mut shared = Shared {
        hold_flag: settings.hold,
        holding: settings.hold,
        settings,
        requests,
        pending: BTreeMap::new(),
        states: vec![state_line],
        version: 1,
    };
    if shared.holding {
        info!("MANAGEMENT: waiting for hold release");
    }
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            n = notify.recv() => {
                match n {
                    Some(n) => shared.note(&n),
                    None => return,
                }
                continue;
            }
        };
        match accepted {
            Ok((stream, from)) => {
                info!("MANAGEMENT: Client connected from {from}");
                if session(stream, &mut shared, &mut notify).await.is_none() {
                    return;
                }
                info!("MANAGEMENT: Client disconnected");
            }
            Err(e) => {
                warn!("MANAGEMENT: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Reads CRLF/LF-terminated lines with a length cap.
struct LineReader<R> {
    r: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    /// Next line; `None` on EOF, error or an over-long line.
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let s = String::from_utf8_lossy(&line);
                return Some(s.trim_end_matches(['\r', '\n']).to_owned());
            }
            if self.buf.len() > MAX_LINE {
                return None;
            }
            let mut chunk = [0u8; 4096];
            match self.r.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, text: &str) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, w.write_all(text.as_bytes())).await,
        Ok(Ok(()))
    )
}

/// One management session. `None` when the server is gone (stop serving).
async fn session(
    stream: Box<dyn Stream>,
    sh: &mut Shared,
    notify: &mut mpsc::UnboundedReceiver<Notify>,
) -> Option<()> {
    let (rd, mut wr) = tokio::io::split(stream);
    let mut lines = LineReader {
        r: rd,
        buf: Vec::new(),
    };
    if let Some(pw) = sh.settings.password.clone() {
        if !send(&mut wr, "ENTER PASSWORD:").await {
            return Some(());
        }
        let got = tokio::time::timeout(Duration::from_secs(60), lines.next())
            .await
            .ok()
            .flatten();
        if got.as_deref() != Some(pw.as_str()) {
            let _ = send(&mut wr, "ERROR: bad password\r\n").await;
            warn!("MANAGEMENT: client provided an incorrect password");
            return Some(());
        }
        if !send(&mut wr, "SUCCESS: password is correct\r\n").await {
            return Some(());
        }
    }
    if !send(&mut wr, &format!("{GREETING}\r\n")).await {
        return Some(());
    }
    if sh.holding && !send(&mut wr, ">HOLD:Waiting for hold release:0\r\n").await {
        return Some(());
    }
    let replay: String = sh.pending.values().cloned().collect();
    if !replay.is_empty() && !send(&mut wr, &replay).await {
        return Some(());
    }
    let mut log_rx: Option<broadcast::Receiver<LogLine>> = None;
    let mut state_on = false;
    let mut bytecount: Option<tokio::time::Interval> = None;
    // `client-auth CID KID` collecting config lines until END.
    let mut collecting: Option<(u64, u8, Vec<String>)> = None;
    loop {
        let out: String = tokio::select! {
            l = lines.next() => {
                let Some(l) = l else { return Some(()) };
                if let Some((cid, kid, mut acc)) = collecting.take() {
                    if l.trim() == "END" {
                        let text = (!acc.is_empty()).then(|| acc.join("\n") + "\n");
                        sh.ask(CoreRequest::Decide(cid, kid, Decision::Allow(text))).await
                    } else {
                        acc.push(l);
                        collecting = Some((cid, kid, acc));
                        continue;
                    }
                } else {
                    match parse(&l) {
                        Err(e) => format!("{e}\r\n"),
                        Ok(Command::Exit) => return Some(()),
                        Ok(Command::ClientAuth(cid, kid)) => {
                            collecting = Some((cid, kid, Vec::new()));
                            continue;
                        }
                        Ok(Command::Signal(Signal::Term)) => {
                            let r = sh.ask(CoreRequest::Signal(Signal::Term)).await;
                            let _ = send(&mut wr, &r).await;
                            return None;
                        }
                        Ok(Command::Log(rt)) => {
                            let (s, on) = realtime_reply("log", rt, log_history(match rt {
                                Realtime::Last(n) => Some(n),
                                _ => None,
                            }).iter().map(LogLine::render).collect());
                            if let Some(on) = on {
                                log_rx = on.then(|| hub().tx.subscribe());
                            }
                            s
                        }
                        Ok(Command::State(rt)) => {
                            let hist = match rt {
                                Realtime::Current => sh.states.last().cloned().into_iter().collect(),
                                Realtime::Last(n) => sh.states.iter().rev().take(n).rev().cloned().collect(),
                                _ => sh.states.clone(),
                            };
                            let (s, on) = realtime_reply("state", rt, hist);
                            if let Some(on) = on {
                                state_on = on;
                            }
                            s
                        }
                        Ok(Command::Bytecount(n)) => {
                            bytecount = (n > 0).then(|| {
                                let d = Duration::from_secs(n);
                                tokio::time::interval_at(tokio::time::Instant::now() + d, d)
                            });
                            "SUCCESS: bytecount interval changed\r\n".into()
                        }
                        Ok(Command::Hold(op)) => match op {
                            None => format!("SUCCESS: hold={}\r\n", u8::from(sh.hold_flag)),
                            Some(HoldOp::On) => {
                                sh.hold_flag = true;
                                "SUCCESS: hold flag set to ON\r\n".into()
                            }
                            Some(HoldOp::Off) => {
                                sh.hold_flag = false;
                                "SUCCESS: hold flag set to OFF\r\n".into()
                            }
                            Some(HoldOp::Release) => {
                                sh.holding = false;
                                sh.ask(CoreRequest::HoldRelease).await
                            }
                        },
                        Ok(Command::Version(Some(v))) => {
                            sh.version = v;
                            format!("SUCCESS: Management client version set to {v}\r\n")
                        }
                        Ok(c) => local_or_core(sh, c).await,
                    }
                }
            }
            n = notify.recv() => {
                let n = n?;
                sh.note(&n);
                if !sh.settings.client_auth {
                    continue;
                }
                n.render()
            }
            l = async { match log_rx.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                match l {
                    Ok(l) => format!(">LOG:{}\r\n", l.render()),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => { log_rx = None; continue; }
                }
            }
            _ = async { match bytecount.as_mut() { Some(i) => { i.tick().await; } None => std::future::pending().await } } => {
                sh.ask(CoreRequest::ByteCounts).await
            }
        };
        let _ = state_on;
        if !out.is_empty() && !send(&mut wr, &out).await {
            warn!("MANAGEMENT: client does not read its output, closing the session");
            return Some(());
        }
    }
}

/// Reply for `log`/`state`/`echo` and whether real-time output turns on (`Some(true)`),
/// off (`Some(false)`) or stays (`None`).
fn realtime_reply(what: &str, rt: Realtime, history: Vec<String>) -> (String, Option<bool>) {
    let list = |h: &[String]| {
        let mut s = String::new();
        for l in h {
            s.push_str(l);
            s.push_str("\r\n");
        }
        s.push_str("END\r\n");
        s
    };
    match rt {
        Realtime::On => (
            format!("SUCCESS: real-time {what} notification set to ON\r\n"),
            Some(true),
        ),
        Realtime::Off => (
            format!("SUCCESS: real-time {what} notification set to OFF\r\n"),
            Some(false),
        ),
        Realtime::OnAll => (
            format!(
                "SUCCESS: real-time {what} notification set to ON\r\n{}",
                list(&history)
            ),
            Some(true),
        ),
        Realtime::All | Realtime::Current | Realtime::Last(_) => (list(&history), None),
    }
}

async fn local_or_core(sh: &mut Shared, c: Command) -> String {
    match c {
        Command::Help => help_text(),
        Command::Version(_) => format!(
            "OpenVPN Version: OpenVPN {OPENVPN_RELEASE} openvpn-rs {} (openvpn-server, OpenVPN 2.6 compatible)\r\nManagement Version: {MANAGEMENT_VERSION}\r\nEND\r\n",
            env!("CARGO_PKG_VERSION")
        ),
        Command::Pid => format!("SUCCESS: pid={}\r\n", std::process::id()),
        Command::Status(v) => sh.ask(CoreRequest::Status(v)).await,
        Command::Echo(rt) => realtime_reply("echo", rt, Vec::new()).0,
        Command::Kill(t) => sh.ask(CoreRequest::Kill(t)).await,
        Command::ClientKill(cid, m) => sh.ask(CoreRequest::ClientKill(cid, m)).await,
        Command::ClientAuthNt(cid, kid) => {
            sh.ask(CoreRequest::Decide(cid, kid, Decision::Allow(None)))
                .await
        }
        Command::ClientDeny(cid, kid, reason, client_reason) => {
            sh.ask(CoreRequest::Decide(
                cid,
                kid,
                Decision::Deny {
                    reason,
                    client_reason,
                },
            ))
            .await
        }
        Command::ClientPendingAuth(cid, kid, extra, timeout) => {
            sh.ask(CoreRequest::Decide(
                cid,
                kid,
                Decision::Pending { extra, timeout },
            ))
            .await
        }
        Command::Signal(s) => sh.ask(CoreRequest::Signal(s)).await,
        Command::LoadStats => sh.ask(CoreRequest::LoadStats).await,
        Command::Verb(None) => "SUCCESS: verb=1\r\n".into(),
        Command::Verb(Some(_)) => "SUCCESS: verb level changed\r\n".into(),
        Command::Mute(None) => "SUCCESS: mute=0\r\n".into(),
        Command::Mute(Some(_)) => "SUCCESS: mute level changed\r\n".into(),
        Command::Nothing => String::new(),
        // Handled in `session`.
        Command::Exit
        | Command::ClientAuth(..)
        | Command::Log(_)
        | Command::State(_)
        | Command::Bytecount(_)
        | Command::Hold(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(parse("status 3"), Ok(Command::Status(3)));
        assert_eq!(parse("status"), Ok(Command::Status(1)));
        assert!(parse("status 9").is_err());
        assert_eq!(
            parse("client-deny 5 0 \"bad password\" \"go away\""),
            Ok(Command::ClientDeny(
                5,
                0,
                "bad password".into(),
                Some("go away".into())
            ))
        );
        assert_eq!(
            parse("client-deny 5 1 x"),
            Ok(Command::ClientDeny(5, 1, "x".into(), None))
        );
        assert_eq!(parse("client-auth 7 2"), Ok(Command::ClientAuth(7, 2)));
        assert_eq!(parse("client-auth-nt 7 0"), Ok(Command::ClientAuthNt(7, 0)));
        assert_eq!(
            parse("client-kill 3"),
            Ok(Command::ClientKill(3, "RESTART".into()))
        );
        assert_eq!(
            parse("client-kill 3 HALT"),
            Ok(Command::ClientKill(3, "HALT".into()))
        );
        assert_eq!(
            parse("client-pending-auth 1 0 \"OPEN_URL:https://x/y\" 120"),
            Ok(Command::ClientPendingAuth(
                1,
                0,
                "OPEN_URL:https://x/y".into(),
                120
            ))
        );
        assert_eq!(
            parse("kill client1"),
            Ok(Command::Kill(KillTarget::CommonName("client1".into())))
        );
        assert_eq!(
            parse("kill 1.2.3.4:4000"),
            Ok(Command::Kill(KillTarget::Address("1.2.3.4:4000".into())))
        );
        assert_eq!(parse("log on all"), Ok(Command::Log(Realtime::OnAll)));
        assert_eq!(parse("log 20"), Ok(Command::Log(Realtime::Last(20))));
        assert_eq!(parse("state"), Ok(Command::State(Realtime::Current)));
        assert_eq!(parse("state off"), Ok(Command::State(Realtime::Off)));
        assert_eq!(
            parse("hold release"),
            Ok(Command::Hold(Some(HoldOp::Release)))
        );
        assert_eq!(parse("signal SIGHUP"), Ok(Command::Signal(Signal::Hup)));
        assert!(parse("signal SIGFOO").is_err());
        assert_eq!(parse("bytecount 5"), Ok(Command::Bytecount(5)));
        assert_eq!(parse("  "), Ok(Command::Nothing));
        assert_eq!(parse("quit"), Ok(Command::Exit));
        assert_eq!(parse("frobnicate"), Err(UNKNOWN.to_owned()));
        assert!(parse("client-auth x 0").is_err());
        assert!(parse("client-deny 1").is_err());
    }

    #[test]
    fn renders_notifications() {
        let n = Notify::Connect {
            cid: 4,
            kid: 0,
            env: vec![
                ("common_name".into(), "client1".into()),
                ("IV_GUI_VER".into(), "a\nb".into()),
            ],
        };
        assert_eq!(
            n.render(),
            ">CLIENT:CONNECT,4,0\r\n>CLIENT:ENV,common_name=client1\r\n>CLIENT:ENV,IV_GUI_VER=ab\r\n>CLIENT:ENV,END\r\n"
        );
        assert_eq!(
            Notify::Address {
                cid: 4,
                addr: "10.8.0.2".into()
            }
            .render(),
            ">CLIENT:ADDRESS,4,10.8.0.2,1\r\n"
        );
        assert_eq!(
            Notify::CrResponse {
                cid: 3,
                kid: 0,
                response: "MTIz\r\nNDU2".into(),
                env: vec![("common_name".into(), "c".into())],
            }
            .render(),
            ">CLIENT:CR_RESPONSE,3,0,MTIzNDU2\r\n>CLIENT:ENV,common_name=c\r\n>CLIENT:ENV,END\r\n"
        );
        assert_eq!(
            Notify::Disconnect {
                cid: 9,
                env: vec![]
            }
            .render(),
            ">CLIENT:DISCONNECT,9\r\n>CLIENT:ENV,END\r\n"
        );
    }

    #[test]
    fn reply_formats() {
        assert!(help_text().ends_with("END\r\n"));
        assert_eq!(crlf("a\nb\n"), "a\r\nb\r\n");
        let (s, on) = realtime_reply("log", Realtime::On, vec![]);
        assert_eq!(s, "SUCCESS: real-time log notification set to ON\r\n");
        assert_eq!(on, Some(true));
        let (s, _) = realtime_reply(
            "state",
            Realtime::All,
            vec!["1,CONNECTED,SUCCESS,,,,,,".into()],
        );
        assert_eq!(s, "1,CONNECTED,SUCCESS,,,,,,\r\nEND\r\n");
        push_log("I", "hello\nworld".into());
        assert!(
            log_history(Some(1))
                .iter()
                .any(|l| l.render().ends_with(",I,hello world"))
        );
    }
}
