//! Packet devices for openvpn-rs: the tun interface that carries the tunnel's IP packets.
//!
//! This crate owns everything that talks to the kernel about interfaces (the `TUNSETIFF`
//! ioctl, rtnetlink for links, addresses and routes) plus the laptop-safety pieces built on
//! it: the route plan ([`route`]), the journaled [`RouteManager`], DNS ([`dns`]) and the ICMP
//! answers for blocked families ([`icmp`]). It is the only crate of the workspace with
//! `unsafe` code.
//! The VPN drivers see a device only through [`PacketDevice`]: one IP packet per call, no
//! packet-info header.
//!
//! ```text
//!              kernel IP stack                         tests
//!                    |                                   |
//!         /dev/net/tun (IFF_TUN|IFF_NO_PI)      MemoryTunHandle (inject / written)
//!                    |                                   |
//!               LinuxTun                             MemoryTun
//!                    \_____________     _________________/
//!                                  \   /
//!                            impl PacketDevice
//!                        recv(buf) -> one packet from the OS side
//!                        send(pkt) -> one packet to the OS side
//!                                    |
//!                           openvpn-server / openvpn-client
//! ```
//!
//! [`LinuxTun::create`] also applies a [`TunConfig`] (MTU, addresses, link up, routes) with
//! netlink messages; [`TunConfig::ip_commands`] shows the equivalent `ip` commands.

mod config;
pub mod dns;
pub mod fdpass;
pub mod icmp;
mod linux;
pub mod logging;
mod manager;
mod memory;
pub mod netlink;
pub mod offload;
pub mod process;
pub mod route;
pub mod udp_batch;

use std::future::Future;
use std::io;
use std::sync::Arc;

pub use config::{Route4, Route6, TunConfig};
pub use dns::{DnsBackend, DnsSettings};
pub use linux::LinuxTun;
pub use manager::{DEFAULT_JOURNAL_DIR, Journal, JournalEntry, RecoverReport, RouteManager};
pub use memory::{MemoryTun, MemoryTunHandle};
pub use netlink::{DefaultGateways, Netlink, RouteInfo};
pub use offload::{OffloadTun, SystemTun, TunBatch};
pub use route::{Redirect, RoutePlanInput, RouteSpec};

/// Errors from creating and configuring a packet device.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// The requested interface name cannot be used.
    #[error("tun device name {name:?} is invalid: {reason}")]
    InvalidName {
        /// The name that was asked for.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A prefix length is out of range for its address family.
    #[error("prefix length /{prefix} is too long for {what} (at most /{max})")]
    InvalidPrefix {
        /// What carried the prefix, for example `address 10.8.0.1`.
        what: String,
        /// The prefix length given.
        prefix: u8,
        /// The largest allowed prefix length.
        max: u8,
    },
    /// `/dev/net/tun` could not be opened.
    #[error("cannot open /dev/net/tun: {0} (creating a tun device needs root or CAP_NET_ADMIN)")]
    Open(#[source] io::Error),
    /// An ioctl on the tun file descriptor failed.
    #[error("ioctl {op} on /dev/net/tun failed: {source}")]
    Ioctl {
        /// The ioctl request, for example `TUNSETIFF`.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The device was created outside a tokio runtime, or the reactor refused it.
    #[error(
        "cannot register the tun device with tokio: {0} (call LinuxTun::create inside a tokio runtime)"
    )]
    Runtime(#[source] io::Error),
    /// A configuration command could not be started.
    #[error("cannot run `{command}`: {source} (is iproute2 installed?)")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A configuration command ran but failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// How it exited.
        status: String,
        /// What it printed on stderr, trimmed.
        stderr: String,
    },
    /// A netlink request failed.
    #[error("netlink: cannot {op}: {source}")]
    Netlink {
        /// What was asked, for example `add route 0.0.0.0/1 dev #5`.
        op: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// The route journal (or a DNS backup next to it) could not be read or written.
    #[error("journal {path}: {source}")]
    Journal {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A device that carries whole IP packets between the VPN and the operating system.
///
/// `recv` yields one packet the OS wants to send through the tunnel; `send` hands one
/// decrypted packet to the OS. Both take `&self`, so one device can serve a reading task and a
/// writing task at the same time (share it with an [`Arc`]).
pub trait PacketDevice: Send + Sync {
    /// Waits for the next packet from the OS side and copies it into `buf`.
    ///
    /// Returns the packet length. A buffer smaller than the packet gives an `InvalidInput`
    /// error and the packet is lost, so pass at least MTU bytes.
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;

    /// Writes one IP packet to the OS side and returns the number of bytes written.
    fn send(&self, pkt: &[u8]) -> impl Future<Output = io::Result<usize>> + Send;

    /// Waits for packets from the OS side and puts them into `batch` (cleared first): at
    /// least one, more when the device has a batch path ([`OffloadTun`] splits TSO
    /// super-packets and drains what is ready). The default reads one packet with `recv`.
    fn recv_batch(&self, batch: &mut TunBatch) -> impl Future<Output = io::Result<()>> + Send {
        offload::recv_one(self, batch)
    }

    /// Writes every packet of `batch` to the OS side ([`OffloadTun`] coalesces TCP segments
    /// into super-packets). Errors of single packets are dropped; the default calls `send`
    /// for each packet.
    fn send_batch(&self, batch: &mut TunBatch) -> impl Future<Output = io::Result<()>> + Send {
        offload::send_each(self, batch)
    }
}

impl<T: PacketDevice> PacketDevice for Arc<T> {
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send {
        (**self).recv(buf)
    }

    fn send(&self, pkt: &[u8]) -> impl Future<Output = io::Result<usize>> + Send {
        (**self).send(pkt)
    }

    fn recv_batch(&self, batch: &mut TunBatch) -> impl Future<Output = io::Result<()>> + Send {
        (**self).recv_batch(batch)
    }

    fn send_batch(&self, batch: &mut TunBatch) -> impl Future<Output = io::Result<()>> + Send {
        (**self).send_batch(batch)
    }
}
