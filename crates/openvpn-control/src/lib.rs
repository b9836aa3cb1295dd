//! The OpenVPN control channel as sans-I/O state machines, for both roles.
//!
//! ```text
//!            datagrams in                          datagrams out
//!                 │                                      ▲
//!   ┌─────────────▼──────────────────────────────────────┴─────────────┐
//!   │ cookie (UDP server gate) ─▶ Session: unwrap ─▶ reliable ─▶ TLS     │
//!   │                             key-method-2 ─▶ events (KeysReady …)  │
//!   │ client::ClientSession / server::ServerSession: push, NCP, auth   │
//!   └───────────────────────────────────────────────────────────────────┘
//!        time enters only through `handle_timeout(now)`
//! ```
//! Nothing here does I/O, reads the clock or uses a global RNG: callers pass `now` and
//! random seeds. [`options`] is the OpenVPN option grammar shared by config files, the
//! command line and PUSH_REPLY.
#![forbid(unsafe_code)]

pub mod client;
pub mod compression;
pub mod cookie;
pub mod dataplane;
pub mod error;
pub mod keepalive;
mod keyfile;
pub mod loading;
pub mod messages;
pub mod mgmt_words;
pub mod ncp;
pub mod options;
pub mod peer_info;
pub mod process_options;
pub mod reliable;
pub mod server;
pub mod session;
pub mod tls;
pub mod tls_options;

pub use error::ControlError;
pub use session::{
    CloseReason, ControlStats, ControlWrapping, Event, KeyDerivation, PeerAuth, Session,
    SessionConfig, Timers,
};
