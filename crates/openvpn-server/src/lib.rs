//! `openvpn-server`: an OpenVPN 2.6 compatible server, as a library and a thin binary.
//!
//! ```text
//!  server.conf + --options ─▶ config::load ─▶ ServerConfig
//!  runtime (tokio): UDP/TCP sockets, tun, timers ─▶ core::ServerCore (client table, routing)
//!        └─ per client: openvpn_control::server::ServerSession + dataplane::DataChannel
//! ```
#![forbid(unsafe_code)]

pub mod auth;
pub mod auth_token;
pub mod ccd;
pub mod config;
pub mod core;
pub mod layered;
pub mod management;
pub mod metrics;
pub mod plugins;
pub mod pool;
pub mod port_share;
pub mod prebind;
pub mod process;
pub mod runtime;
pub mod scripts;
pub mod shard;
pub mod status;
pub mod udpio;
pub mod workers;
