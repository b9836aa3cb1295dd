//! The `TunBuilder` contract: the core hands the app the addresses, routes, DNS and MTU to
//! apply and gets a packet device back (like OpenVPN 3's TunBuilder / mobile VPN APIs).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use openvpn_control::client::PushedOptions;
use openvpn_tun::{LinuxTun, MemoryTun, PacketDevice, TunConfig};

/// What the tunnel needs from the operating system.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TunSettings {
    /// IPv4 address and prefix length.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// IPv6 address and prefix length.
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// IPv4 routes into the tunnel (network, prefix).
    pub routes_v4: Vec<(Ipv4Addr, u8)>,
    /// IPv6 routes into the tunnel.
    pub routes_v6: Vec<(Ipv6Addr, u8)>,
    /// DNS servers pushed by the server.
    pub dns_servers: Vec<IpAddr>,
    /// DNS search / routing domains.
    pub dns_domains: Vec<String>,
    /// Link MTU.
    pub mtu: u16,
}

fn prefix_of(mask: Ipv4Addr) -> u8 {
    u32::from(mask).leading_ones() as u8
}

impl TunSettings {
    /// Derives the settings from the PUSH_REPLY. `route_noexec` leaves routes out.
    pub fn from_pushed(p: &PushedOptions, default_mtu: u16, route_noexec: bool) -> Self {
        let topology_subnet = p.topology.as_deref() == Some("subnet");
        let ipv4 = p.ifconfig.map(|(a, b)| {
            if topology_subnet {
                (a, prefix_of(b))
            } else {
                (a, 32)
            }
        });
        let mut s = TunSettings {
            ipv4,
            ipv6: p.ifconfig_ipv6.map(|(a, bits, _)| (a, bits)),
            mtu: p.tun_mtu.unwrap_or(default_mtu),
            ..Default::default()
        };
        if !topology_subnet {
            if let Some((_, remote)) = p.ifconfig {
                s.routes_v4.push((remote, 32));
            }
        }
        if !route_noexec {
            for r in &p.routes {
                s.routes_v4.push((r.network, prefix_of(r.netmask)));
            }
            for r in &p.routes_v6 {
                s.routes_v6.push((r.network, r.prefix));
            }
            if let Some(flags) = &p.redirect_gateway {
                let v4 = !flags.iter().any(|f| f == "!ipv4");
                if v4 {
                    s.routes_v4.push((Ipv4Addr::new(0, 0, 0, 0), 1));
                    s.routes_v4.push((Ipv4Addr::new(128, 0, 0, 0), 1));
                }
                if flags.iter().any(|f| f == "ipv6") {
                    s.routes_v6
                        .push(("2000::".parse().unwrap_or(Ipv6Addr::UNSPECIFIED), 4));
                    s.routes_v6
                        .push(("3000::".parse().unwrap_or(Ipv6Addr::UNSPECIFIED), 4));
                }
            }
        }
        for (kind, value) in &p.dhcp_options {
            match kind.as_str() {
                "DNS" | "DNS6" => {
                    if let Ok(a) = value.parse() {
                        s.dns_servers.push(a);
                    }
                }
                "DOMAIN" | "DOMAIN-SEARCH" => s.dns_domains.push(value.clone()),
                _ => {}
            }
        }
        s
    }
}

/// Builds the packet device for a tunnel. Implement it to let your app own the device.
pub trait TunBuilder: Send + 'static {
    /// The device type.
    type Device: PacketDevice + 'static;
    /// Creates (or reconfigures) the device for `settings`.
    fn establish(
        &mut self,
        settings: &TunSettings,
    ) -> impl Future<Output = Result<Self::Device, String>> + Send;
}

/// Linux tun device configured with `ip` (run as root or with CAP_NET_ADMIN).
#[derive(Debug, Clone)]
pub struct LinuxTunBuilder {
    /// Interface name (`None` = kernel chooses `tunN`).
    pub name: Option<String>,
}

impl TunBuilder for LinuxTunBuilder {
    type Device = LinuxTun;
    async fn establish(&mut self, s: &TunSettings) -> Result<LinuxTun, String> {
        let cfg = TunConfig {
            name: self.name.clone(),
            mtu: s.mtu,
            ipv4: s.ipv4,
            ipv6: s.ipv6,
            routes_v4: s.routes_v4.iter().map(|(n, p)| (*n, *p, None)).collect(),
            routes_v6: s.routes_v6.iter().map(|(n, p)| (*n, *p, None)).collect(),
        };
        LinuxTun::create(&cfg).map_err(|e| e.to_string())
    }
}

/// An in-memory device for tests and apps that do their own networking.
#[derive(Debug)]
pub struct MemoryTunBuilder {
    device: Option<MemoryTun>,
    /// The settings the core asked for (for tests).
    pub requested: std::sync::Arc<std::sync::Mutex<Vec<TunSettings>>>,
}

impl MemoryTunBuilder {
    /// Wraps the VPN side of a [`MemoryTun::pair`].
    pub fn new(device: MemoryTun) -> Self {
        MemoryTunBuilder {
            device: Some(device),
            requested: Default::default(),
        }
    }
}

impl TunBuilder for MemoryTunBuilder {
    type Device = MemoryTun;
    async fn establish(&mut self, s: &TunSettings) -> Result<MemoryTun, String> {
        if let Ok(mut r) = self.requested.lock() {
            r.push(s.clone());
        }
        self.device
            .take()
            .ok_or_else(|| "the in-memory tun was already handed out".to_owned())
    }
}
