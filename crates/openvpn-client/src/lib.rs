//! `openvpn-client`: a library-first OpenVPN 2.6 client, in the spirit of OpenVPN 3's core.
//!
//! ```text
//!  ClientConfig (from .ovpn or code) ─▶ connect(config, tun_builder) ─▶ ClientHandle
//!        events: Resolving, Connecting{n of m}, TlsEstablished, Connected{settings} …
//!        commands: Disconnect, Pause, Resume, ReconnectNow, Credentials
//!  TunBuilder: the app gets addresses/routes/DNS/MTU and returns a packet device
//!        (LinuxTunBuilder for a real tun, HelperTunBuilder for an unprivileged client that
//!        asks the root helper (`privsep`), MemoryTunBuilder for tests and embedding)
//! ```
//! The library never reads stdin: credentials come through [`Command::Credentials`] after a
//! [`VpnEvent::CredentialsRequired`].
#![forbid(unsafe_code)]

pub mod config;
mod engine;
mod fast;
pub mod guardian;
pub mod hooks;
pub mod management;
pub mod plugins;
pub mod privsep;
mod proxy;
mod tos;
pub mod tun;

use std::net::SocketAddr;

pub use config::{ClientConfig, ConfigError};
pub use hooks::{HookedTunBuilder, TunHooks};
use openvpn_control::client::PushedOptions;
pub use privsep::{HelperTun, HelperTunBuilder};
use tokio::sync::mpsc;
pub use tun::{
    LinuxTunBuilder, MemoryTunBuilder, OffloadTunBuilder, TunBuilder, TunSettings, TunVerdict,
};

/// What the client is doing; sent on the handle's event channel.
#[derive(Debug, Clone)]
pub enum VpnEvent {
    /// Resolving a remote host name.
    Resolving {
        /// The host.
        host: String,
    },
    /// Trying address `index` of `total` of the current remote.
    Connecting {
        /// Server address.
        remote: SocketAddr,
        /// 1-based index among the addresses of this remote.
        index: usize,
        /// Number of addresses of this remote.
        total: usize,
        /// Transport.
        proto: config::Proto,
    },
    /// An attempt failed; the next address or remote is tried.
    ConnectFailed {
        /// Address or host.
        remote: String,
        /// Why.
        reason: String,
    },
    /// The TLS session is up and keys were exchanged.
    TlsEstablished {
        /// TLS version and cipher suite.
        description: String,
    },
    /// The application must provide a username and password ([`Command::Credentials`]).
    CredentialsRequired {
        /// Username from the profile, if any.
        username: Option<String>,
    },
    /// The server's pushed options.
    PushedOptions(Box<PushedOptions>),
    /// The tunnel is up.
    Connected {
        /// The server.
        server: SocketAddr,
        /// What was applied to the tun device.
        settings: TunSettings,
        /// Data-channel cipher.
        cipher: &'static str,
    },
    /// Keys are being renegotiated.
    Renegotiating {
        /// The new key ID.
        key_id: u8,
    },
    /// New data-channel keys are in use (after a renegotiation).
    Renegotiated {
        /// The new key ID.
        key_id: u8,
    },
    /// The connection is being re-established.
    Reconnecting {
        /// Why.
        reason: String,
    },
    /// The server rejected our credentials.
    AuthFailed {
        /// The server's reason.
        reason: String,
    },
    /// Informational text from the server.
    Info(String),
    /// Traffic paused by [`Command::Pause`].
    Paused,
    /// Traffic resumed.
    Resumed,
}

/// Commands an application sends to a running client.
#[derive(Debug, Clone)]
pub enum Command {
    /// Disconnect (with explicit-exit-notify if configured) and stop.
    Disconnect,
    /// Stop forwarding tunnel traffic (the session stays up).
    Pause,
    /// Resume forwarding.
    Resume,
    /// Drop the current connection and reconnect now.
    ReconnectNow,
    /// Answer to [`VpnEvent::CredentialsRequired`].
    Credentials {
        /// Username.
        username: String,
        /// Password.
        password: String,
    },
    /// Answer to a `CR_TEXT` challenge ([`VpnEvent::Info`] `CR_TEXT:…`): sent to the server
    /// as `CR_RESPONSE,{base64}` (the argument is the response, already base64).
    ChallengeResponse(String),
}

/// Why the client stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// [`Command::Disconnect`] or the handle was dropped.
    Disconnected,
    /// `AUTH_FAILED` from the server.
    AuthFailed(String),
    /// `HALT` from the server.
    Halted(String),
    /// `ping-exit` expired.
    PingExit,
    /// `inactive`: too little tunnel traffic for that long ("Inactivity timeout").
    Inactive,
    /// `connect-retry-max` reached without a connection.
    Unreachable,
    /// The profile could not be used.
    ConfigError(String),
    /// The tun device could not be created.
    TunError(String),
    /// `tls-exit`: the TLS negotiation failed.
    TlsError(String),
}

/// A running client: events out, commands in.
pub struct ClientHandle {
    /// Events, in order.
    pub events: mpsc::UnboundedReceiver<VpnEvent>,
    commands: mpsc::UnboundedSender<Command>,
    task: tokio::task::JoinHandle<ExitReason>,
}

impl ClientHandle {
    /// Sends a command.
    pub fn command(&self, c: Command) {
        let _ = self.commands.send(c);
    }

    /// A sender for commands usable from other tasks.
    pub fn commander(&self) -> mpsc::UnboundedSender<Command> {
        self.commands.clone()
    }

    /// Waits until the client stops.
    pub async fn wait(self) -> ExitReason {
        self.task.await.unwrap_or(ExitReason::Disconnected)
    }
}

/// Starts a client on the current tokio runtime.
pub fn connect<T: TunBuilder>(config: ClientConfig, tun: T) -> ClientHandle {
    let (etx, erx) = mpsc::unbounded_channel();
    let (ctx, crx) = mpsc::unbounded_channel();
    let task = tokio::spawn(engine::run(config, tun, etx, crx));
    ClientHandle {
        events: erx,
        commands: ctx,
        task,
    }
}
