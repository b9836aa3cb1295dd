//! The OpenVPN management interface on the client side (protocol version 5, as described in
//! OpenVPN's `doc/management-notes.txt`), so GUIs that drive `openvpn` (openvpn-gui,
//! NetworkManager-openvpn, Tunnelblick-style front ends) can drive this client unchanged.
//!
//! ```text
//!  GUI ──TCP / unix socket──▶ ClientManagement::run(start, on_event)
//!         state on, hold release, username/password, signal, bytecount, log …
//!  ◀── >HOLD:, >STATE:, >PASSWORD:, >BYTECOUNT:, >LOG:
//!                  │ hold released: start(&counters) ─▶ ClientHandle (connect())
//!                  │ VpnEvents ─▶ >STATE: lines, >PASSWORD:Need …, on_event(…)
//!                  └ commands ─▶ Command::{Credentials, ReconnectNow, Disconnect}
//! ```
//! One management client at a time (the next one is accepted when it leaves), as in OpenVPN.
//! Everything runs in one task: the engine never waits for the management client, and a
//! management client that does not read its output is dropped after a write timeout.
//!
//! `>BYTECOUNT:` counts tunnel payload bytes (what the tun device reads and writes, through
//! [`CountingTunBuilder`]); OpenVPN counts link bytes, which include the encryption overhead.

pub use openvpn_control::mgmt_words::Realtime;
use openvpn_control::mgmt_words::{num, realtime, words};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openvpn_tun::{PacketDevice, TunBatch};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{broadcast, mpsc};
use tracing::{info, warn};

use crate::config::{AuthRetry, ClientConfig, ManagementAddr, ManagementOptions, Proto};
use crate::tun::{TunBuilder, TunSettings};
use crate::{ClientHandle, Command, ExitReason, VpnEvent};

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
/// The `>HOLD:` notification.
pub const HOLD: &str = ">HOLD:Waiting for hold release:0";
/// How the engine reports `AUTH_PENDING` as [`VpnEvent::Info`] (shown as the AUTH_PENDING
/// state, not as `>INFOMSG:`).
const AUTH_PENDING_INFO: &str = "authentication pending (timeout ";
/// The `>PASSWORD:` request for `auth-user-pass`.
pub const NEED_AUTH: &str = ">PASSWORD:Need 'Auth' username/password";
/// Longest command line accepted from a management client.
const MAX_LINE: usize = 64 * 1024;
/// A management client that does not take our output within this time is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// State history kept for `state all`.
const STATE_HISTORY: usize = 100;

// ---------------------------------------------------------------------------------------------
// Commands.

/// `hold` sub-command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldOp {
    /// Set the hold flag (future restarts hold).
    On,
    /// Clear the hold flag.
    Off,
    /// Leave the hold state and connect.
    Release,
}

/// Signals the `signal` command (or the operating system) can throw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Restart the connection.
    Hup,
    /// Disconnect and exit.
    Term,
    /// Disconnect and exit (Ctrl-C).
    Int,
    /// Restart the connection.
    Usr1,
    /// Log the status.
    Usr2,
}

impl Signal {
    /// `SIGHUP`, …
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hup => "SIGHUP",
            Signal::Term => "SIGTERM",
            Signal::Int => "SIGINT",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
        }
    }
}

/// A parsed management command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MgmtCommand {
    /// `help`.
    Help,
    /// `version` / `version N`.
    Version(Option<u32>),
    /// `pid`.
    Pid,
    /// `state [...]`.
    State(Realtime),
    /// `log [...]`.
    Log(Realtime),
    /// `echo [...]`.
    Echo(Realtime),
    /// `bytecount N`.
    Bytecount(u64),
    /// `hold` / `hold on|off|release`.
    Hold(Option<HoldOp>),
    /// `signal NAME`.
    Signal(Signal),
    /// `username TYPE NAME`.
    Username {
        /// The query type (`Auth`).
        kind: String,
        /// The username.
        value: String,
    },
    /// `password TYPE PASSWORD`.
    Password {
        /// The query type (`Auth`).
        kind: String,
        /// The password.
        value: String,
    },
    /// `forget-passwords`.
    ForgetPasswords,
    /// `cr-response BASE64`: the answer to a `>INFOMSG:CR_TEXT:` challenge, sent to the
    /// server as `CR_RESPONSE,BASE64`.
    CrResponse(String),
    /// `auth-retry [none|nointeract|interact]`.
    AuthRetry(Option<AuthRetry>),
    /// `status [N]`.
    Status,
    /// `verb [N]`.
    Verb(Option<u8>),
    /// `mute [N]`.
    Mute(Option<u32>),
    /// `exit` / `quit`.
    Exit,
    /// Empty line.
    Nothing,
}

/// Parses one management command line. `Err` is the complete `ERROR: …` reply (no CRLF).
pub fn parse(line: &str) -> Result<MgmtCommand, String> {
    let w = words(line)?;
    let Some(cmd) = w.first() else {
        return Ok(MgmtCommand::Nothing);
    };
    let cmd = cmd.to_ascii_lowercase();
    let need = |n: usize| {
        if w.len() < n + 1 {
            Err(format!(
                "ERROR: the '{cmd}' command requires {n} parameter{}",
                if n == 1 { "" } else { "s" }
            ))
        } else {
            Ok(())
        }
    };
    Ok(match cmd.as_str() {
        "help" => MgmtCommand::Help,
        "version" => MgmtCommand::Version(
            w.get(1)
                .map(|_| {
                    num(&w, 1, "version").map_err(|_| {
                        "ERROR: Invalid value specified for management client version".to_owned()
                    })
                })
                .transpose()?,
        ),
        "pid" => MgmtCommand::Pid,
        "state" => MgmtCommand::State(realtime(&w, Realtime::Current)?),
        "log" => MgmtCommand::Log(realtime(&w, Realtime::All)?),
        "echo" => MgmtCommand::Echo(realtime(&w, Realtime::All)?),
        "bytecount" => {
            need(1)?;
            MgmtCommand::Bytecount(num(&w, 1, "bytecount")?)
        }
        "hold" => MgmtCommand::Hold(match w.get(1).map(String::as_str) {
            None => None,
            Some("on") => Some(HoldOp::On),
            Some("off") => Some(HoldOp::Off),
            Some("release") => Some(HoldOp::Release),
            Some(_) => return Err("ERROR: bad hold command parameter".into()),
        }),
        "signal" => {
            need(1)?;
            MgmtCommand::Signal(match w[1].to_ascii_uppercase().as_str() {
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
        "username" | "password" => {
            need(2)?;
            let (kind, value) = (w[1].clone(), w[2].clone());
            if cmd == "username" {
                MgmtCommand::Username { kind, value }
            } else {
                MgmtCommand::Password { kind, value }
            }
        }
        "forget-passwords" => MgmtCommand::ForgetPasswords,
        "cr-response" => {
            need(1)?;
            MgmtCommand::CrResponse(w[1].clone())
        }
        "auth-retry" => MgmtCommand::AuthRetry(match w.get(1).map(String::as_str) {
            None => None,
            Some("none") => Some(AuthRetry::None),
            Some("nointeract") => Some(AuthRetry::NoInteract),
            Some("interact") => Some(AuthRetry::Interact),
            Some(_) => return Err("ERROR: bad auth-retry parameter".into()),
        }),
        "status" => MgmtCommand::Status,
        "verb" => MgmtCommand::Verb(w.get(1).map(|_| num(&w, 1, "verb")).transpose()?),
        "mute" => MgmtCommand::Mute(w.get(1).map(|_| num(&w, 1, "mute")).transpose()?),
        "exit" | "quit" => MgmtCommand::Exit,
        _ => return Err(UNKNOWN.into()),
    })
}

/// The `help` text (CRLF line ends, `END` last).
pub fn help_text() -> String {
    let lines = [
        "Management Interface for openvpn-rs openvpn-client (OpenVPN 2.6 compatible)",
        "Commands:",
        "auth-retry t           : How to answer an authentication failure (none, nointeract, interact).",
        "bytecount n            : Report tunnel bytes in/out every n seconds (0 = off).",
        "echo [on|off] [N|all]  : Like log, for echo messages.",
        "exit|quit              : Close this management session.",
        "cr-response response   : Send a challenge response (base64) to the server (CR_RESPONSE).",
        "forget-passwords       : Forget the username and password entered so far.",
        "help                   : This list.",
        "hold [on|off|release]  : Show or set the hold flag, or release the hold and connect.",
        "log [on|off] [N|all]   : Real-time log on/off, and/or the last N or all cached lines.",
        "mute [n]               : Accepted for compatibility.",
        "password type p        : Answer a >PASSWORD: request of this type.",
        "pid                    : The process ID.",
        "signal s               : s = SIGHUP|SIGUSR1 (reconnect), SIGTERM (exit), SIGUSR2.",
        "state [on|off] [N|all] : Like log, for state changes.",
        "status [n]             : Tunnel statistics.",
        "username type u        : Answer a >PASSWORD: request of this type.",
        "verb [n]               : Accepted for compatibility.",
        "version [n]            : Show the versions, or announce the GUI's management version.",
        "END",
    ];
    let mut s = String::new();
    for l in lines {
        s.push_str(l);
        s.push_str("\r\n");
    }
    s
}

// ---------------------------------------------------------------------------------------------
// States.

/// One entry of the state history (`>STATE:` / `state all`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateEntry {
    /// Unix time.
    pub time: u64,
    /// `CONNECTING`, `RESOLVE`, `WAIT`, `TCP_CONNECT`, `AUTH`, `GET_CONFIG`, `ASSIGN_IP`,
    /// `ADD_ROUTES`, `CONNECTED`, `RECONNECTING`, `EXITING`.
    pub name: &'static str,
    /// Descriptive string (`SUCCESS`, the restart or exit reason).
    pub detail: String,
    /// Tunnel IPv4 address.
    pub local_v4: String,
    /// Server address.
    pub remote_ip: String,
    /// Server port.
    pub remote_port: String,
    /// Tunnel IPv6 address.
    pub local_v6: String,
}

impl StateEntry {
    fn new(name: &'static str, detail: impl Into<String>) -> Self {
        StateEntry {
            time: unix_now(),
            name,
            detail: detail.into(),
            ..Default::default()
        }
    }

    /// `time,STATE,detail,local-ip,remote-ip,remote-port,local-addr,local-port,local-ipv6`
    /// (OpenVPN's nine fields; the local socket address is not reported).
    pub fn render(&self) -> String {
        let clean = |s: &str| s.replace([',', '\r', '\n'], " ");
        format!(
            "{},{},{},{},{},{},,,{}",
            self.time,
            self.name,
            clean(&self.detail),
            self.local_v4,
            self.remote_ip,
            self.remote_port,
            self.local_v6
        )
    }
}

/// Maps [`VpnEvent`]s to OpenVPN states.
#[derive(Debug, Default)]
pub struct StateTracker {
    local_v4: String,
    local_v6: String,
    /// The signal that asked for the next restart (its name is the RECONNECTING detail).
    pub pending_signal: Option<Signal>,
}

impl StateTracker {
    /// The state entries for one event (none for most).
    pub fn on_event(&mut self, ev: &VpnEvent) -> Vec<StateEntry> {
        match ev {
            VpnEvent::Resolving { .. } => vec![StateEntry::new("RESOLVE", "")],
            VpnEvent::Connecting { proto, .. } => vec![StateEntry::new(
                if *proto == Proto::Tcp {
                    "TCP_CONNECT"
                } else {
                    "WAIT"
                },
                "",
            )],
            VpnEvent::TlsEstablished { .. } => vec![
                StateEntry::new("AUTH", ""),
                StateEntry::new("GET_CONFIG", ""),
            ],
            VpnEvent::PushedOptions(p) => {
                self.local_v4 = p.ifconfig.map(|(a, _)| a.to_string()).unwrap_or_default();
                self.local_v6 = p
                    .ifconfig_ipv6
                    .map(|(a, _, _)| a.to_string())
                    .unwrap_or_default();
                vec![StateEntry {
                    local_v4: self.local_v4.clone(),
                    local_v6: self.local_v6.clone(),
                    ..StateEntry::new("ASSIGN_IP", "")
                }]
            }
            VpnEvent::Connected {
                server, settings, ..
            } => {
                self.addresses(settings);
                vec![
                    StateEntry::new("ADD_ROUTES", ""),
                    StateEntry {
                        local_v4: self.local_v4.clone(),
                        local_v6: self.local_v6.clone(),
                        remote_ip: server.ip().to_canonical().to_string(),
                        remote_port: server.port().to_string(),
                        ..StateEntry::new("CONNECTED", "SUCCESS")
                    },
                ]
            }
            VpnEvent::Info(t) if t.starts_with(AUTH_PENDING_INFO) => {
                let secs: String = t.chars().filter(char::is_ascii_digit).collect();
                let detail = if secs.is_empty() {
                    String::new()
                } else {
                    format!("timeout {secs}")
                };
                vec![StateEntry::new("AUTH_PENDING", &detail)]
            }
            VpnEvent::Reconnecting { reason } => {
                let detail = match self.pending_signal.take() {
                    Some(s) => s.name(),
                    None => restart_detail(reason),
                };
                vec![StateEntry::new("RECONNECTING", detail)]
            }
            _ => Vec::new(),
        }
    }

    fn addresses(&mut self, s: &TunSettings) {
        if let Some((a, _)) = s.ipv4 {
            self.local_v4 = a.to_string();
        }
        if let Some((a, _)) = s.ipv6 {
            self.local_v6 = a.to_string();
        }
    }
}

/// OpenVPN's restart reasons for our engine's texts.
fn restart_detail(reason: &str) -> &'static str {
    if reason.contains("ping-restart") {
        "ping-restart"
    } else if reason.starts_with("server sent RESTART") {
        "server-pushed-connection-reset"
    } else if reason.starts_with("no remote answered") {
        "connection-failed"
    } else if reason.starts_with("reconnect requested") {
        "SIGUSR1"
    } else {
        "connection-reset"
    }
}

/// The EXITING detail for an exit reason.
pub fn exit_detail(r: &ExitReason) -> &'static str {
    match r {
        ExitReason::Disconnected => "SIGTERM",
        ExitReason::AuthFailed(_) => "auth-failure",
        ExitReason::Halted(_) => "server-pushed-halt",
        ExitReason::PingExit => "ping-exit",
        ExitReason::Inactive => "inactive",
        ExitReason::Unreachable => "connection-failed",
        ExitReason::ConfigError(_) => "config-error",
        ExitReason::TunError(_) => "tun-error",
        ExitReason::TlsError(_) => "tls-error",
    }
}

/// `>PASSWORD:Verification Failed: 'Auth'` (with `['reason']` when the server gave one).
pub fn verification_failed(reason: &str) -> String {
    let reason = reason.trim().replace(['\r', '\n'], " ");
    if reason.is_empty() {
        ">PASSWORD:Verification Failed: 'Auth'".into()
    } else {
        format!(">PASSWORD:Verification Failed: 'Auth' ['{reason}']")
    }
}

/// `>HOLD:Waiting for hold release:N`: N is how long the client would wait before its next
/// attempt without a GUI.
pub fn hold_line(wait_secs: u64) -> String {
    format!(">HOLD:Waiting for hold release:{wait_secs}")
}

/// `>BYTECOUNT:in,out`.
pub fn bytecount_line(received: u64, sent: u64) -> String {
    format!(">BYTECOUNT:{received},{sent}")
}

/// Reply for `log`/`state`/`echo` and whether real-time output turns on (`Some(true)`),
/// off (`Some(false)`) or stays (`None`).
fn realtime_reply(what: &str, rt: Realtime, history: &[String]) -> (String, Option<bool>) {
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
                list(history)
            ),
            Some(true),
        ),
        Realtime::Last(n) => (list(&history[history.len().saturating_sub(n)..]), None),
        Realtime::All | Realtime::Current => (list(history), None),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Log ring buffer and tracing layer.

/// One cached log line.
#[derive(Clone, Debug)]
pub struct LogLine {
    /// Unix time.
    pub time: u64,
    /// `I`, `W`, `N`, `D`.
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
    cap: AtomicUsize,
    tx: broadcast::Sender<LogLine>,
}

fn hub() -> &'static LogHub {
    static HUB: OnceLock<LogHub> = OnceLock::new();
    HUB.get_or_init(|| LogHub {
        ring: Mutex::new(VecDeque::new()),
        cap: AtomicUsize::new(1000),
        tx: broadcast::channel(1024).0,
    })
}

/// Adds a line to the log cache and to real-time `>LOG:` listeners.
pub fn push_log(flags: &'static str, text: &str) {
    let h = hub();
    let line = LogLine {
        time: unix_now(),
        flags,
        text: text.replace(['\r', '\n'], " "),
    };
    if let Ok(mut r) = h.ring.lock() {
        let cap = h.cap.load(Ordering::Relaxed).max(1);
        while r.len() >= cap {
            r.pop_front();
        }
        r.push_back(line.clone());
    }
    let _ = h.tx.send(line);
}

/// The cached log lines (the last `last`, or all).
pub fn log_history(last: Option<usize>) -> Vec<LogLine> {
    let Ok(r) = hub().ring.lock() else {
        return Vec::new();
    };
    let skip = last.map_or(0, |n| r.len().saturating_sub(n));
    r.iter().skip(skip).cloned().collect()
}

/// A `tracing` layer feeding the management log cache (`log all`, `>LOG:`). Install it next
/// to the usual formatter: `tracing_subscriber::registry().with(fmt_layer).with(LogLayer)`.
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
        let flags = match *event.metadata().level() {
            tracing::Level::ERROR => "N",
            tracing::Level::WARN => "W",
            tracing::Level::INFO => "I",
            _ => "D",
        };
        let mut v = MsgVisitor(String::new());
        event.record(&mut v);
        push_log(flags, &v.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Byte counters.

#[derive(Debug, Default)]
struct Counts {
    received: AtomicU64,
    sent: AtomicU64,
}

/// Tunnel byte counters shared between a [`CountingTunBuilder`]'s devices and the
/// management interface.
#[derive(Clone, Debug, Default)]
pub struct ByteCounters(Arc<Counts>);

impl ByteCounters {
    /// New counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes received from the server (written to the tun device).
    pub fn received(&self) -> u64 {
        self.0.received.load(Ordering::Relaxed)
    }

    /// Bytes sent to the server (read from the tun device).
    pub fn sent(&self) -> u64 {
        self.0.sent.load(Ordering::Relaxed)
    }

    /// Back to zero (a new connection).
    pub fn reset(&self) {
        self.0.received.store(0, Ordering::Relaxed);
        self.0.sent.store(0, Ordering::Relaxed);
    }

    fn add_received(&self, n: usize) {
        self.0.received.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn add_sent(&self, n: usize) {
        self.0.sent.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// A [`TunBuilder`] whose devices count the bytes they carry.
#[derive(Debug, Clone)]
pub struct CountingTunBuilder<T> {
    /// The real builder.
    pub inner: T,
    /// Where the bytes are counted.
    pub counters: ByteCounters,
}

impl<T> CountingTunBuilder<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, counters: ByteCounters) -> Self {
        CountingTunBuilder { inner, counters }
    }
}

impl<T: TunBuilder> TunBuilder for CountingTunBuilder<T> {
    type Device = CountingDevice<T::Device>;

    fn establish(
        &mut self,
        settings: &TunSettings,
    ) -> impl std::future::Future<Output = Result<Self::Device, String>> + Send {
        let counters = self.counters.clone();
        let fut = self.inner.establish(settings);
        async move {
            Ok(CountingDevice {
                inner: fut.await?,
                counters,
            })
        }
    }
}

/// A packet device that counts the bytes it carries.
#[derive(Debug)]
pub struct CountingDevice<D> {
    inner: D,
    counters: ByteCounters,
}

impl<D: PacketDevice> PacketDevice for CountingDevice<D> {
    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.recv(buf).await?;
        self.counters.add_sent(n);
        Ok(n)
    }

    async fn send(&self, pkt: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.send(pkt).await?;
        self.counters.add_received(n);
        Ok(n)
    }

    async fn recv_batch(&self, batch: &mut TunBatch) -> std::io::Result<()> {
        self.inner.recv_batch(batch).await?;
        self.counters.add_sent(batch.bytes());
        Ok(())
    }

    async fn send_batch(&self, batch: &mut TunBatch) -> std::io::Result<()> {
        let n = batch.bytes();
        self.inner.send_batch(batch).await?;
        self.counters.add_received(n);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Listener and settings.

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A management listener.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(tokio::net::TcpListener),
    /// Unix domain socket (the path is removed when the listener is dropped).
    Unix(tokio::net::UnixListener, PathBuf),
}

impl Listener {
    /// Binds `management IP PORT` or `management PATH unix` (a stale socket file is replaced).
    pub async fn bind(addr: &ManagementAddr) -> std::io::Result<Self> {
        match addr {
            ManagementAddr::Tcp { host, port } => Ok(Listener::Tcp(
                tokio::net::TcpListener::bind((host.as_str(), *port)).await?,
            )),
            ManagementAddr::Unix(path) => {
                use std::os::unix::fs::FileTypeExt;
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                    let _ = std::fs::remove_file(path);
                }
                Ok(Listener::Unix(
                    tokio::net::UnixListener::bind(path)?,
                    path.clone(),
                ))
            }
        }
    }

    async fn accept(&self) -> std::io::Result<(Box<dyn Stream>, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, a) = l.accept().await?;
                Ok((Box::new(s), a.to_string()))
            }
            Listener::Unix(l, _) => {
                let (s, _) = l.accept().await?;
                Ok((Box::new(s), "unix socket".into()))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What the management interface needs to know.
#[derive(Clone, Debug, Default)]
pub struct ManagementSettings {
    /// Password management clients must give (`ENTER PASSWORD:`).
    pub password: Option<String>,
    /// `management-hold`.
    pub hold: bool,
    /// `management-query-passwords`.
    pub query_passwords: bool,
    /// Log lines kept.
    pub log_cache: usize,
    /// `auth-retry`.
    pub auth_retry: AuthRetry,
    /// Username and password known up front (asked on the terminal), given to the engine
    /// when it asks.
    pub credentials: Option<(String, String)>,
    /// How long a restart would wait without the hold (`connect-retry`), shown in
    /// `>HOLD:Waiting for hold release:N` when an engine restart holds.
    pub restart_wait: Duration,
}

impl ManagementSettings {
    /// From the profile's options (reads the password file).
    pub fn from_options(m: &ManagementOptions, cfg: &ClientConfig) -> std::io::Result<Self> {
        let password = match &m.password_file {
            None => None,
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            ),
        };
        Ok(ManagementSettings {
            password,
            hold: m.hold,
            query_passwords: m.query_passwords,
            log_cache: m.log_cache,
            auth_retry: cfg.auth_retry,
            credentials: None,
            restart_wait: cfg.connect_retry.0,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The management loop.

/// Reads CRLF/LF-terminated lines with a length cap (cancel-safe: the buffer is kept).
struct LineReader {
    r: ReadHalf<Box<dyn Stream>>,
    buf: Vec<u8>,
}

impl LineReader {
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

/// One connected management client.
struct Conn {
    lines: LineReader,
    w: WriteHalf<Box<dyn Stream>>,
    authenticated: bool,
    state_on: bool,
    log_rx: Option<broadcast::Receiver<LogLine>>,
    bytecount: Option<tokio::time::Interval>,
}

/// Something that woke the management loop.
enum Input {
    Accepted(Box<dyn Stream>, String),
    Line(String),
    Closed,
    Log(LogLine),
    Tick,
    Signal(Signal),
    Event(Option<VpnEvent>),
}

/// What a command asks of the driver.
enum Flow {
    Continue,
    Release,
    Signal(Signal),
}

/// An `auth-user-pass` query waiting for the management client.
#[derive(Default)]
struct AuthQuery {
    username: Option<String>,
    password: Option<String>,
}

/// How a connection run ended when the management side asked for it.
enum End {
    Exit(Signal),
    Restart(Signal),
    /// The engine restarted by itself (ping-restart, server RESTART) with the hold flag set:
    /// stopped, to hold before the next attempt (the RECONNECTING state is already out).
    Held,
}

/// The client's management interface. See the module documentation.
pub struct ClientManagement {
    listener: Listener,
    settings: ManagementSettings,
    conn: Option<Conn>,
    signals_tx: mpsc::UnboundedSender<Signal>,
    signals_rx: mpsc::UnboundedReceiver<Signal>,
    counters: ByteCounters,
    tracker: StateTracker,
    states: VecDeque<StateEntry>,
    hold_flag: bool,
    holding: bool,
    hold_wait: u64,
    auth_retry: AuthRetry,
    /// Credentials given through the interface (kept for reconnects, as OpenVPN does).
    cached: Option<(String, String)>,
    /// Username from the profile's `auth-user-pass` file.
    profile_username: Option<String>,
    query: Option<AuthQuery>,
}

impl ClientManagement {
    /// A management interface on `listener`.
    pub fn new(listener: Listener, settings: ManagementSettings) -> Self {
        hub()
            .cap
            .store(settings.log_cache.max(1), Ordering::Relaxed);
        let (signals_tx, signals_rx) = mpsc::unbounded_channel();
        ClientManagement {
            listener,
            hold_flag: settings.hold,
            auth_retry: settings.auth_retry,
            settings,
            conn: None,
            signals_tx,
            signals_rx,
            counters: ByteCounters::new(),
            tracker: StateTracker::default(),
            states: VecDeque::new(),
            holding: false,
            hold_wait: 0,
            cached: None,
            profile_username: None,
            query: None,
        }
    }

    /// A sender for operating-system signals (SIGTERM, SIGINT, SIGHUP, SIGUSR1), handled like
    /// the `signal` command.
    pub fn signals(&self) -> mpsc::UnboundedSender<Signal> {
        self.signals_tx.clone()
    }

    /// The byte counters `start` should wrap its tun builder with ([`CountingTunBuilder`]).
    pub fn byte_counters(&self) -> ByteCounters {
        self.counters.clone()
    }

    /// Runs the client under management control until it exits: holds while asked to, calls
    /// `start` (which calls [`crate::connect`]) on release and again for every restart the
    /// interface asks for (`signal SIGHUP` with the hold flag set, `auth-retry`), answers the
    /// engine's credential requests, and passes every event to `on_event`.
    pub async fn run<S, E>(mut self, mut start: S, mut on_event: E) -> ExitReason
    where
        S: FnMut(&ByteCounters) -> ClientHandle,
        E: FnMut(&VpnEvent),
    {
        let mut wait_before = Duration::ZERO;
        loop {
            if self.hold_flag {
                // The GUI decides when to go on; it is told how long we would have waited.
                info!("MANAGEMENT: waiting for hold release");
                self.holding = true;
                self.hold_wait = wait_before.as_secs();
                self.notify(&hold_line(self.hold_wait)).await;
                let r = self.idle(None).await;
                self.holding = false;
                if let Some(sig) = r {
                    self.push_state(StateEntry::new("EXITING", sig.name()))
                        .await;
                    return ExitReason::Disconnected;
                }
            } else if !wait_before.is_zero() {
                if let Some(sig) = self.idle(Some(wait_before)).await {
                    self.push_state(StateEntry::new("EXITING", sig.name()))
                        .await;
                    return ExitReason::Disconnected;
                }
            }
            self.counters.reset();
            self.push_state(StateEntry::new("CONNECTING", "")).await;
            let mut handle = start(&self.counters);
            let mut end = None;
            loop {
                let input = tokio::select! {
                    ev = handle.events.recv() => Input::Event(ev),
                    i = self.wait_input() => i,
                };
                match input {
                    Input::Event(None) => break,
                    Input::Event(Some(ev)) => {
                        // An engine-initiated restart holds like any restart in OpenVPN.
                        let hold = end.is_none()
                            && self.hold_flag
                            && matches!(ev, VpnEvent::Reconnecting { .. });
                        self.on_vpn_event(&ev, &handle).await;
                        on_event(&ev);
                        if hold {
                            end = Some(End::Held);
                            handle.command(Command::Disconnect);
                        }
                    }
                    other => match self.handle_input(other, Some(&handle)).await {
                        Flow::Continue | Flow::Release => {}
                        Flow::Signal(sig) => match sig {
                            Signal::Term | Signal::Int => {
                                end = Some(End::Exit(sig));
                                handle.command(Command::Disconnect);
                            }
                            Signal::Hup | Signal::Usr1 if self.hold_flag => {
                                end = Some(End::Restart(sig));
                                handle.command(Command::Disconnect);
                            }
                            Signal::Hup | Signal::Usr1 => {
                                self.tracker.pending_signal = Some(sig);
                                handle.command(Command::ReconnectNow);
                            }
                            Signal::Usr2 => {}
                        },
                    },
                }
            }
            self.query = None;
            let reason = handle.wait().await;
            wait_before = Duration::ZERO;
            match (end, reason) {
                (Some(End::Exit(sig)), _) => {
                    self.push_state(StateEntry::new("EXITING", sig.name()))
                        .await;
                    return ExitReason::Disconnected;
                }
                (Some(End::Restart(sig)), _) => {
                    self.push_state(StateEntry::new("RECONNECTING", sig.name()))
                        .await;
                }
                (Some(End::Held), _) => {
                    info!("restart with the hold flag set: holding");
                    wait_before = self.settings.restart_wait;
                }
                (None, ExitReason::AuthFailed(_)) if self.auth_retry != AuthRetry::None => {
                    info!("AUTH: Received control message: AUTH_FAILED; auth-retry: reconnecting");
                    if self.auth_retry == AuthRetry::Interact {
                        self.cached = None;
                    }
                    self.push_state(StateEntry::new("RECONNECTING", "auth-failure"))
                        .await;
                    wait_before = Duration::from_secs(
                        if self.cached.is_some() || self.settings.credentials.is_some() {
                            5
                        } else {
                            1
                        },
                    );
                }
                (None, r) => {
                    self.push_state(StateEntry::new("EXITING", exit_detail(&r)))
                        .await;
                    return r;
                }
            }
        }
    }

    /// Serves the interface without a client running, until `hold release` (`None`), the
    /// timeout (`None`) or a terminating signal (`Some`).
    async fn idle(&mut self, timeout: Option<Duration>) -> Option<Signal> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let input = tokio::select! {
                i = self.wait_input() => i,
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => return None,
            };
            match self.handle_input(input, None).await {
                Flow::Release if self.holding => return None,
                Flow::Signal(s @ (Signal::Term | Signal::Int)) => return Some(s),
                _ => {}
            }
        }
    }

    /// Waits for something to do (cancel-safe).
    async fn wait_input(&mut self) -> Input {
        let Self {
            listener,
            conn,
            signals_rx,
            ..
        } = self;
        match conn {
            None => tokio::select! {
                a = listener.accept() => match a {
                    Ok((s, from)) => Input::Accepted(s, from),
                    Err(e) => {
                        warn!("MANAGEMENT: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Input::Tick
                    }
                },
                Some(s) = signals_rx.recv() => Input::Signal(s),
            },
            Some(c) => {
                let Conn {
                    lines,
                    log_rx,
                    bytecount,
                    ..
                } = c;
                tokio::select! {
                    l = lines.next() => match l {
                        Some(l) => Input::Line(l),
                        None => Input::Closed,
                    },
                    Some(s) = signals_rx.recv() => Input::Signal(s),
                    l = async { match log_rx.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => match l {
                        Ok(l) => Input::Log(l),
                        Err(broadcast::error::RecvError::Lagged(_)) => Input::Tick,
                        Err(broadcast::error::RecvError::Closed) => {
                            *log_rx = None;
                            Input::Tick
                        }
                    },
                    _ = async { match bytecount.as_mut() { Some(i) => { i.tick().await; } None => std::future::pending().await } } => {
                        Input::Tick
                    }
                }
            }
        }
    }

    /// Writes to the management client (dropped when it does not read).
    async fn send(&mut self, text: &str) {
        let Some(c) = self.conn.as_mut() else {
            return;
        };
        if text.is_empty() {
            return;
        }
        let ok = matches!(
            tokio::time::timeout(WRITE_TIMEOUT, c.w.write_all(text.as_bytes())).await,
            Ok(Ok(()))
        );
        if !ok {
            warn!("MANAGEMENT: client does not read its output, closing the session");
            self.conn = None;
        }
    }

    /// A real-time notification line (only to an authenticated client).
    async fn notify(&mut self, line: &str) {
        if self.conn.as_ref().is_some_and(|c| c.authenticated) {
            self.send(&format!("{line}\r\n")).await;
        }
    }

    async fn push_state(&mut self, e: StateEntry) {
        let line = e.render();
        while self.states.len() >= STATE_HISTORY {
            self.states.pop_front();
        }
        self.states.push_back(e);
        if self
            .conn
            .as_ref()
            .is_some_and(|c| c.authenticated && c.state_on)
        {
            self.send(&format!(">STATE:{line}\r\n")).await;
        }
    }

    async fn on_vpn_event(&mut self, ev: &VpnEvent, handle: &ClientHandle) {
        for s in self.tracker.on_event(ev) {
            self.push_state(s).await;
        }
        match ev {
            VpnEvent::CredentialsRequired { username } => {
                self.profile_username = username.clone();
                if let Some((u, p)) = self
                    .settings
                    .credentials
                    .clone()
                    .or_else(|| self.cached.clone())
                {
                    handle.command(Command::Credentials {
                        username: u,
                        password: p,
                    });
                } else if self.settings.query_passwords {
                    self.query = Some(AuthQuery::default());
                    self.notify(NEED_AUTH).await;
                } else {
                    warn!(
                        "a username and password are needed but management-query-passwords is not set"
                    );
                }
            }
            VpnEvent::AuthFailed { reason } => {
                self.notify(&verification_failed(reason)).await;
            }
            // INFO / INFO_PRE from the server (e.g. `CR_TEXT:R,E:…`, `OPEN_URL:…`).
            VpnEvent::Info(text) if !text.starts_with(AUTH_PENDING_INFO) => {
                let line: String = text.chars().filter(|c| *c != '\r' && *c != '\n').collect();
                self.notify(&format!(">INFOMSG:{line}")).await;
            }
            _ => {}
        }
    }

    async fn accept(&mut self, stream: Box<dyn Stream>, from: String) {
        info!("MANAGEMENT: Client connected from {from}");
        let (r, w) = tokio::io::split(stream);
        self.conn = Some(Conn {
            lines: LineReader { r, buf: Vec::new() },
            w,
            authenticated: self.settings.password.is_none(),
            state_on: false,
            log_rx: None,
            bytecount: None,
        });
        if self.settings.password.is_some() {
            self.send("ENTER PASSWORD:").await;
        } else {
            self.greet().await;
        }
    }

    async fn greet(&mut self) {
        self.send(&format!("{GREETING}\r\n")).await;
        if self.holding {
            let line = hold_line(self.hold_wait);
            self.notify(&line).await;
        }
        if self.query.is_some() {
            self.notify(NEED_AUTH).await;
        }
    }

    async fn handle_input(&mut self, input: Input, handle: Option<&ClientHandle>) -> Flow {
        match input {
            Input::Accepted(s, from) => self.accept(s, from).await,
            Input::Closed => {
                info!("MANAGEMENT: Client disconnected");
                self.conn = None;
            }
            Input::Log(l) => {
                let line = format!(">LOG:{}", l.render());
                self.notify(&line).await;
            }
            Input::Tick => {
                if self.conn.as_ref().is_some_and(|c| c.bytecount.is_some()) {
                    let line = bytecount_line(self.counters.received(), self.counters.sent());
                    self.notify(&line).await;
                }
            }
            Input::Signal(s) => {
                info!("{} received", s.name());
                return Flow::Signal(s);
            }
            Input::Event(_) => {}
            Input::Line(l) => {
                let Some(c) = self.conn.as_mut() else {
                    return Flow::Continue;
                };
                if !c.authenticated {
                    if Some(l.as_str()) == self.settings.password.as_deref() {
                        c.authenticated = true;
                        self.send("SUCCESS: password is correct\r\n").await;
                        self.greet().await;
                    } else {
                        warn!("MANAGEMENT: client provided an incorrect password");
                        self.send("ERROR: bad password\r\n").await;
                        self.conn = None;
                    }
                    return Flow::Continue;
                }
                return self.command(&l, handle).await;
            }
        }
        Flow::Continue
    }

    async fn command(&mut self, line: &str, handle: Option<&ClientHandle>) -> Flow {
        let cmd = match parse(line) {
            Ok(c) => c,
            Err(e) => {
                self.send(&format!("{e}\r\n")).await;
                return Flow::Continue;
            }
        };
        let mut flow = Flow::Continue;
        let reply: String = match cmd {
            MgmtCommand::Nothing => String::new(),
            MgmtCommand::Help => help_text(),
            MgmtCommand::Version(None) => format!(
                "OpenVPN Version: OpenVPN {OPENVPN_RELEASE} openvpn-rs {} (openvpn-client, OpenVPN 2.6 compatible)\r\nManagement Version: {MANAGEMENT_VERSION}\r\nEND\r\n",
                env!("CARGO_PKG_VERSION")
            ),
            MgmtCommand::Version(Some(v)) => {
                if v > 3 {
                    format!("SUCCESS: Management client version set to {v}\r\n")
                } else {
                    String::new()
                }
            }
            MgmtCommand::Pid => format!("SUCCESS: pid={}\r\n", std::process::id()),
            MgmtCommand::State(rt) => {
                let hist: Vec<String> = match rt {
                    Realtime::Current => self
                        .states
                        .back()
                        .map(StateEntry::render)
                        .into_iter()
                        .collect(),
                    _ => self.states.iter().map(StateEntry::render).collect(),
                };
                let (s, on) = realtime_reply("state", rt, &hist);
                if let (Some(on), Some(c)) = (on, self.conn.as_mut()) {
                    c.state_on = on;
                }
                s
            }
            MgmtCommand::Log(rt) => {
                let hist: Vec<String> = log_history(None).iter().map(LogLine::render).collect();
                let (s, on) = realtime_reply("log", rt, &hist);
                if let (Some(on), Some(c)) = (on, self.conn.as_mut()) {
                    c.log_rx = on.then(|| hub().tx.subscribe());
                }
                s
            }
            MgmtCommand::Echo(rt) => {
                // Nothing is ever echoed (pushed `echo` options are not kept).
                realtime_reply("echo", rt, &[]).0
            }
            MgmtCommand::Bytecount(n) => {
                if let Some(c) = self.conn.as_mut() {
                    c.bytecount = (n > 0).then(|| {
                        let d = Duration::from_secs(n);
                        tokio::time::interval_at(tokio::time::Instant::now() + d, d)
                    });
                }
                "SUCCESS: bytecount interval changed\r\n".into()
            }
            MgmtCommand::Hold(op) => match op {
                None => format!("SUCCESS: hold={}\r\n", u8::from(self.hold_flag)),
                Some(HoldOp::On) => {
                    self.hold_flag = true;
                    "SUCCESS: hold flag set to ON\r\n".into()
                }
                Some(HoldOp::Off) => {
                    self.hold_flag = false;
                    "SUCCESS: hold flag set to OFF\r\n".into()
                }
                Some(HoldOp::Release) => {
                    flow = Flow::Release;
                    "SUCCESS: hold release succeeded\r\n".into()
                }
            },
            MgmtCommand::Signal(s) => {
                flow = Flow::Signal(s);
                format!("SUCCESS: signal {} thrown\r\n", s.name())
            }
            MgmtCommand::Username { kind, value } => self.answer(kind, Some(value), None, handle),
            MgmtCommand::Password { kind, value } => self.answer(kind, None, Some(value), handle),
            MgmtCommand::ForgetPasswords => {
                self.cached = None;
                "SUCCESS: Passwords were forgotten\r\n".into()
            }
            MgmtCommand::CrResponse(b64) => match handle {
                Some(h) => {
                    h.command(Command::ChallengeResponse(b64));
                    "SUCCESS: command succeeded\r\n".into()
                }
                None => "ERROR: cr-response command failed\r\n".into(),
            },
            MgmtCommand::AuthRetry(None) => {
                let name = match self.auth_retry {
                    AuthRetry::None => "none",
                    AuthRetry::NoInteract => "nointeract",
                    AuthRetry::Interact => "interact",
                };
                format!("SUCCESS: auth-retry={name}\r\n")
            }
            MgmtCommand::AuthRetry(Some(r)) => {
                self.auth_retry = r;
                "SUCCESS: auth-retry parameter changed\r\n".into()
            }
            MgmtCommand::Status => format!(
                "OpenVPN STATISTICS\r\nUpdated,{}\r\nTUN/TAP read bytes,{}\r\nTUN/TAP write bytes,{}\r\nEND\r\n",
                unix_now(),
                self.counters.sent(),
                self.counters.received()
            ),
            MgmtCommand::Verb(None) => "SUCCESS: verb=1\r\n".into(),
            MgmtCommand::Verb(Some(_)) => "SUCCESS: verb level changed\r\n".into(),
            MgmtCommand::Mute(None) => "SUCCESS: mute=0\r\n".into(),
            MgmtCommand::Mute(Some(_)) => "SUCCESS: mute level changed\r\n".into(),
            MgmtCommand::Exit => {
                info!("MANAGEMENT: Client disconnected");
                self.conn = None;
                String::new()
            }
        };
        self.send(&reply).await;
        flow
    }

    /// `username`/`password` for the pending `Auth` query.
    fn answer(
        &mut self,
        kind: String,
        username: Option<String>,
        password: Option<String>,
        handle: Option<&ClientHandle>,
    ) -> String {
        let what = if username.is_some() {
            "username"
        } else {
            "password"
        };
        let Some(q) = self.query.as_mut() else {
            return format!("ERROR: no {what} is currently needed at this time\r\n");
        };
        if kind != "Auth" {
            return format!(
                "ERROR: {what} of type '{kind}' entered, but we need one of type 'Auth'\r\n"
            );
        }
        if username.is_some() {
            q.username = username;
        }
        if password.is_some() {
            q.password = password;
        }
        let user = q.username.clone().or_else(|| self.profile_username.clone());
        if let (Some(u), Some(p), Some(h)) = (user, q.password.clone(), handle) {
            self.query = None;
            self.cached = Some((u.clone(), p.clone()));
            h.command(Command::Credentials {
                username: u,
                password: p,
            });
        }
        format!("SUCCESS: 'Auth' {what} entered, but not yet verified\r\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn parses_commands() {
        assert_eq!(parse("state on"), Ok(MgmtCommand::State(Realtime::On)));
        assert_eq!(parse("state"), Ok(MgmtCommand::State(Realtime::Current)));
        assert_eq!(parse("state all"), Ok(MgmtCommand::State(Realtime::All)));
        assert_eq!(parse("state 3"), Ok(MgmtCommand::State(Realtime::Last(3))));
        assert_eq!(parse("log on all"), Ok(MgmtCommand::Log(Realtime::OnAll)));
        assert_eq!(
            parse("hold release"),
            Ok(MgmtCommand::Hold(Some(HoldOp::Release)))
        );
        assert_eq!(parse("hold"), Ok(MgmtCommand::Hold(None)));
        assert!(parse("hold maybe").is_err());
        assert_eq!(
            parse("signal SIGUSR1"),
            Ok(MgmtCommand::Signal(Signal::Usr1))
        );
        assert_eq!(
            parse("signal sigterm"),
            Ok(MgmtCommand::Signal(Signal::Term))
        );
        assert!(parse("signal SIGKILL").is_err());
        assert_eq!(parse("bytecount 5"), Ok(MgmtCommand::Bytecount(5)));
        assert!(parse("bytecount").is_err());
        assert_eq!(
            parse("username \"Auth\" alice"),
            Ok(MgmtCommand::Username {
                kind: "Auth".into(),
                value: "alice".into()
            })
        );
        assert_eq!(
            parse(r#"password "Auth" "se cr\"et""#),
            Ok(MgmtCommand::Password {
                kind: "Auth".into(),
                value: "se cr\"et".into()
            })
        );
        assert!(parse("password Auth").is_err());
        assert_eq!(parse("version"), Ok(MgmtCommand::Version(None)));
        assert_eq!(parse("version 5"), Ok(MgmtCommand::Version(Some(5))));
        assert_eq!(
            parse("auth-retry interact"),
            Ok(MgmtCommand::AuthRetry(Some(AuthRetry::Interact)))
        );
        assert_eq!(parse("quit"), Ok(MgmtCommand::Exit));
        assert_eq!(parse("exit"), Ok(MgmtCommand::Exit));
        assert_eq!(parse(""), Ok(MgmtCommand::Nothing));
        assert_eq!(parse("frobnicate"), Err(UNKNOWN.to_owned()));
        assert_eq!(parse("client-kill 1"), Err(UNKNOWN.to_owned()));
    }

    #[test]
    fn renders_states_and_notifications() {
        let mut t = StateTracker::default();
        let e = t.on_event(&VpnEvent::Connecting {
            remote: "192.0.2.1:1194".parse().unwrap(),
            index: 1,
            total: 1,
            proto: Proto::Udp,
        });
        assert_eq!(e[0].name, "WAIT");
        let server: SocketAddr = "[::ffff:192.0.2.1]:1194".parse().unwrap();
        let settings = TunSettings {
            ipv4: Some(("10.8.0.2".parse().unwrap(), 24)),
            ipv6: Some(("fd00::1000".parse().unwrap(), 64)),
            ..Default::default()
        };
        let e = t.on_event(&VpnEvent::Connected {
            server,
            settings,
            cipher: "AES-256-GCM",
        });
        let mut c = e[1].clone();
        c.time = 1700000000;
        assert_eq!(
            c.render(),
            "1700000000,CONNECTED,SUCCESS,10.8.0.2,192.0.2.1,1194,,,fd00::1000"
        );
        t.pending_signal = Some(Signal::Hup);
        let r = t.on_event(&VpnEvent::Reconnecting {
            reason: "reconnect requested".into(),
        });
        assert_eq!(r[0].detail, "SIGHUP");
        let r = t.on_event(&VpnEvent::Reconnecting {
            reason: "Inactivity timeout (--ping-restart), restarting".into(),
        });
        assert_eq!(r[0].detail, "ping-restart");
        let mut x = StateEntry::new("EXITING", "a,b");
        x.time = 5;
        assert_eq!(x.render(), "5,EXITING,a b,,,,,,");
        assert_eq!(
            verification_failed(""),
            ">PASSWORD:Verification Failed: 'Auth'"
        );
        assert_eq!(
            verification_failed("expired"),
            ">PASSWORD:Verification Failed: 'Auth' ['expired']"
        );
        assert_eq!(bytecount_line(10, 20), ">BYTECOUNT:10,20");
        assert_eq!(hold_line(0), HOLD);
        assert_eq!(exit_detail(&ExitReason::Disconnected), "SIGTERM");
        assert!(help_text().ends_with("END\r\n"));
    }

    #[tokio::test]
    async fn password_hold_and_sigterm_before_connecting() {
        use tokio::io::AsyncBufReadExt;
        let dir = std::env::temp_dir().join(format!("ovrs-mgmt-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.sock");
        let listener = Listener::bind(&ManagementAddr::Unix(path.clone()))
            .await
            .unwrap();
        let m = ClientManagement::new(
            listener,
            ManagementSettings {
                password: Some("pw".into()),
                hold: true,
                ..Default::default()
            },
        );
        let run = tokio::spawn(m.run(|_| panic!("a held client must not connect"), |_| {}));
        let s = tokio::net::UnixStream::connect(&path).await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = tokio::io::BufReader::new(r);
        let mut prompt = [0u8; 15];
        r.read_exact(&mut prompt).await.unwrap();
        assert_eq!(&prompt, b"ENTER PASSWORD:");
        w.write_all(b"pw\n").await.unwrap();
        let mut lines = Vec::new();
        for cmd in ["", "state on", "signal SIGTERM"] {
            if !cmd.is_empty() {
                w.write_all(format!("{cmd}\r\n").as_bytes()).await.unwrap();
            }
        }
        let exit = tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(exit, ExitReason::Disconnected);
        let mut l = String::new();
        while r.read_line(&mut l).await.unwrap() > 0 {
            lines.push(l.trim_end().to_owned());
            l.clear();
        }
        assert_eq!(lines[0], "SUCCESS: password is correct");
        assert_eq!(lines[1], GREETING);
        assert_eq!(lines[2], HOLD);
        assert_eq!(lines[3], "SUCCESS: real-time state notification set to ON");
        assert_eq!(lines[4], "SUCCESS: signal SIGTERM thrown");
        assert!(lines[5].starts_with(">STATE:") && lines[5].ends_with(",EXITING,SIGTERM,,,,,,"));
        assert!(!path.exists(), "the socket is removed");
    }

    #[test]
    fn realtime_replies() {
        let (s, on) = realtime_reply("state", Realtime::On, &[]);
        assert_eq!(s, "SUCCESS: real-time state notification set to ON\r\n");
        assert_eq!(on, Some(true));
        let h = vec!["1,A,,,,,,,".to_owned(), "2,B,,,,,,,".to_owned()];
        assert_eq!(
            realtime_reply("state", Realtime::Last(1), &h).0,
            "2,B,,,,,,,\r\nEND\r\n"
        );
        assert_eq!(
            realtime_reply("state", Realtime::All, &h).0,
            "1,A,,,,,,,\r\n2,B,,,,,,,\r\nEND\r\n"
        );
        push_log("I", "hello\nworld");
        assert!(
            log_history(Some(5))
                .iter()
                .any(|l| l.render().ends_with(",I,hello world"))
        );
    }
}
