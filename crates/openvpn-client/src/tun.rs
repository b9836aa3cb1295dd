//! The `TunBuilder` contract: the core hands the app the addresses, routes, DNS and MTU to
//! apply and gets a packet device back (like OpenVPN 3's TunBuilder / mobile VPN APIs).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use openvpn_control::client::PushedOptions;
use openvpn_tun::route::{self, OutsideRoute, Redirect, RoutePlanInput};
use openvpn_tun::{
    DnsBackend, DnsSettings, LinuxTun, MemoryTun, Netlink, PacketDevice, RouteManager, SystemTun,
    TunConfig, icmp,
};

use crate::ClientConfig;
use crate::config::{RouteDest, RouteGateway};

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
    /// The VPN server's address (its host route keeps going via the pre-tunnel gateway when
    /// a tunnel route covers it).
    pub server: Option<IpAddr>,
    /// `redirect-gateway` flags (pushed or in the profile); its routes are already in
    /// `routes_v4` / `routes_v6`.
    pub redirect: Option<Redirect>,
    /// IPv4 is blocked: the tunnel has no IPv4 and `block-ipv4` was asked for. The tunnel
    /// takes all IPv4 and each packet is answered with ICMP net unreachable.
    pub block_ipv4: bool,
    /// IPv6 is blocked: the tunnel has no IPv6 and `block-ipv6` was asked for. The tunnel
    /// takes all IPv6 and each packet is answered with ICMPv6 no route.
    pub block_ipv6: bool,
    /// `route-metric`: default metric of the tunnel routes.
    pub route_metric: Option<u32>,
    /// Per-route metrics and routes around the tunnel (boxed: the settings travel in
    /// events).
    pub route_details: Box<RouteDetails>,
}

/// The parts of a route set beyond "network into the tunnel".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteDetails {
    /// Own metrics of tunnel routes (a pushed `route … METRIC`, or a profile route's):
    /// network, prefix, metric. Routes without one get `route_metric`.
    pub metrics: Vec<(IpAddr, u8, u32)>,
    /// Routes around the tunnel: the profile's `route … net_gateway` lines (or with a
    /// gateway address outside the tunnel). Never from the server.
    pub outside: Vec<OutsideRoute>,
    /// The tunnel's IPv4 gateway (`route_vpn_gateway` of scripts): the pushed
    /// `route-gateway`, else the peer of a net30/p2p `ifconfig`.
    pub vpn_gateway: Option<Ipv4Addr>,
}

/// What to do with a packet read from the tun device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunVerdict {
    /// Seal it and send it to the server.
    Forward,
    /// Its family is blocked and it gets no answer (multicast, ICMP errors…): drop it.
    Drop,
    /// Its family is blocked: write this ICMP answer back to the device.
    Answer(Vec<u8>),
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
        s.route_details.vpn_gateway = p
            .route_gateway
            .or(p.ifconfig.filter(|_| !topology_subnet).map(|(_, r)| r));
        if !route_noexec {
            // Pushed routes go into the tunnel whatever gateway they name (a server cannot
            // route traffic around it); their metric is kept.
            for r in &p.routes {
                let prefix = prefix_of(r.netmask);
                s.routes_v4.push((r.network, prefix));
                if let Some(m) = r.metric {
                    s.route_details.metrics.push((r.network.into(), prefix, m));
                }
            }
            for r in &p.routes_v6 {
                s.routes_v6.push((r.network, r.prefix));
                if let Some(m) = r.metric {
                    s.route_details
                        .metrics
                        .push((r.network.into(), r.prefix, m));
                }
            }
            if let Some(flags) = &p.redirect_gateway {
                let r = Redirect::from_flags(flags);
                s.redirect = Some(r);
                s.routes_v4.extend(r.routes_v4());
                s.routes_v6.extend(r.routes_v6());
            }
            s.block_ipv6 = p.block_ipv6 && s.ipv6.is_none();
        }
        s.add_dns(&p.dns, &p.dhcp_options);
        s
    }

    /// Derives the settings from the PUSH_REPLY and the profile (`redirect-gateway`,
    /// `block-ipv6`, `block-ipv4`, `route-metric`, `dhcp-option`, `route-noexec`) for a tunnel
    /// to `server`.
    pub fn from_profile(p: &PushedOptions, cfg: &ClientConfig, server: IpAddr) -> Self {
        let mut s = Self::from_pushed(p, cfg.tun_mtu, cfg.route_noexec);
        s.server = Some(server);
        if !cfg.route_noexec {
            if let Some(flags) = &cfg.redirect_gateway {
                let local = Redirect::from_flags(flags);
                let before = s.redirect.unwrap_or_default();
                for r in local.routes_v4() {
                    if !before.ipv4 && !s.routes_v4.contains(&r) {
                        s.routes_v4.push(r);
                    }
                }
                for r in local.routes_v6() {
                    if !before.ipv6 && !s.routes_v6.contains(&r) {
                        s.routes_v6.push(r);
                    }
                }
                s.redirect = Some(match s.redirect {
                    Some(pushed) => pushed.union(local),
                    None => local,
                });
            }
            s.block_ipv6 = (p.block_ipv6 || cfg.block_ipv6) && s.ipv6.is_none();
            s.block_ipv4 = cfg.block_ipv4 && s.ipv4.is_none();
            s.route_metric = cfg.route_metric;
            s.add_profile_routes(p, cfg, server);
        }
        s.add_dns(&[], &cfg.dhcp_options);
        s
    }

    /// Adds the profile's `route` / `route-ipv6` lines (after the pushed ones; `route-nopull`
    /// does not drop them): into the tunnel, or around it for `net_gateway` and gateway
    /// addresses outside the tunnel.
    fn add_profile_routes(&mut self, p: &PushedOptions, cfg: &ClientConfig, server: IpAddr) {
        for r in &cfg.routes {
            let (dest, prefix) = match r.dest {
                RouteDest::Net(a, pfx) => (a, pfx),
                RouteDest::RemoteHost(pfx) if server.is_ipv4() => (server, pfx),
                RouteDest::RemoteHost(_) => {
                    tracing::warn!(%server, "route remote_host: the server is not IPv4; route left out");
                    continue;
                }
            };
            let dest = route::mask(dest, prefix);
            let gateway = match r.gateway {
                RouteGateway::Default if dest.is_ipv4() => cfg
                    .route_gateway
                    .map_or(RouteGateway::Vpn, |g| RouteGateway::Addr(g.into())),
                RouteGateway::Default => RouteGateway::Vpn,
                g => g,
            };
            let outside = match gateway {
                RouteGateway::Net => Some(None),
                RouteGateway::Addr(g) if !self.in_tunnel(g, p) => Some(Some(g)),
                _ => None,
            };
            if let Some(gateway) = outside {
                let o = OutsideRoute {
                    dest,
                    prefix,
                    gateway,
                    metric: r.metric.or(cfg.route_metric),
                };
                if !self.route_details.outside.contains(&o) {
                    self.route_details.outside.push(o);
                }
                continue;
            }
            match dest {
                IpAddr::V4(a) if !self.routes_v4.contains(&(a, prefix)) => {
                    self.routes_v4.push((a, prefix))
                }
                IpAddr::V6(a) if !self.routes_v6.contains(&(a, prefix)) => {
                    self.routes_v6.push((a, prefix))
                }
                _ => {}
            }
            if let Some(m) = r.metric {
                self.route_details
                    .metrics
                    .retain(|&(n, pf, _)| (route::mask(n, pf), pf) != (dest, prefix));
                self.route_details.metrics.push((dest, prefix, m));
            }
        }
    }

    /// Whether gateway `g` lies in the tunnel: in the tunnel's subnet, the pushed
    /// `route-gateway`, the `ifconfig` / `ifconfig-ipv6` peer.
    fn in_tunnel(&self, g: IpAddr, p: &PushedOptions) -> bool {
        match g {
            IpAddr::V4(g4) => {
                self.ipv4
                    .is_some_and(|(a, pfx)| route::covers(a.into(), pfx, g))
                    || p.route_gateway == Some(g4)
                    || p.ifconfig.is_some_and(|(_, peer)| peer == g4)
            }
            IpAddr::V6(g6) => {
                self.ipv6
                    .is_some_and(|(a, pfx)| route::covers(a.into(), pfx, g))
                    || p.ifconfig_ipv6.is_some_and(|(_, _, peer)| peer == Some(g6))
            }
        }
    }

    /// Whether the tunnel's routes (pushed, profile, redirect and block halves) would take
    /// traffic to `addr` into the tunnel.
    pub fn routes_cover(&self, addr: IpAddr) -> bool {
        const TUN: &str = "(tun)";
        let input = RoutePlanInput {
            server: None,
            outside: Vec::new(),
            ..self.plan_input(TUN)
        };
        route::plan(&input)
            .iter()
            .any(|r| r.dev == TUN && r.covers(addr))
    }

    /// The own metric of tunnel route `net/prefix`, if it has one.
    pub fn metric_of(&self, net: IpAddr, prefix: u8) -> Option<u32> {
        let net = route::mask(net, prefix);
        self.route_details
            .metrics
            .iter()
            .find(|&&(n, p, _)| p == prefix && route::mask(n, p) == net)
            .map(|&(_, _, m)| m)
    }

    /// What to do with one packet read from the tun device.
    pub fn verdict(&self, pkt: &[u8]) -> TunVerdict {
        let answer = match pkt.first().map(|b| b >> 4) {
            Some(4) if self.block_ipv4 => icmp::unreachable_v4(pkt),
            Some(6) if self.block_ipv6 => icmp::unreachable_v6(pkt),
            _ => return TunVerdict::Forward,
        };
        answer.map_or(TunVerdict::Drop, TunVerdict::Answer)
    }

    /// Whether the tunnel takes the default route (IPv4 or IPv6).
    pub fn takes_default_route(&self) -> bool {
        self.redirect.is_some_and(|r| r.ipv4 || r.ipv6)
    }

    /// The DNS settings for the tunnel.
    pub fn dns(&self) -> DnsSettings {
        DnsSettings {
            servers: self.dns_servers.clone(),
            search_domains: self.dns_domains.clone(),
            default_route: self.takes_default_route(),
        }
    }

    /// The route plan input (without the kernel's current state: `server_route`,
    /// `local_subnets`).
    pub fn plan_input(&self, tun: &str) -> RoutePlanInput {
        let routes = self
            .routes_v4
            .iter()
            .map(|&(n, p)| (IpAddr::from(n), p))
            .chain(self.routes_v6.iter().map(|&(n, p)| (IpAddr::from(n), p)))
            .map(|(n, p)| (n, p, self.metric_of(n, p)))
            .collect();
        RoutePlanInput {
            tun: tun.to_owned(),
            server: self.server,
            routes,
            redirect: self.redirect,
            block_ipv4: self.block_ipv4,
            block_ipv6: self.block_ipv6,
            metric: self.route_metric,
            outside: self
                .route_details
                .outside
                .iter()
                .map(|r| (r.clone(), None))
                .collect(),
            ..Default::default()
        }
    }

    /// Adds 2.6 `dns` lines (`server N address A…`, `search-domains D…`) and `dhcp-option`
    /// `DNS`/`DNS6`/`DOMAIN`/`DOMAIN-SEARCH`, in that order, without duplicates.
    fn add_dns(&mut self, dns: &[Vec<String>], dhcp: &[(String, String)]) {
        let mut servers = Vec::new();
        let mut domains = Vec::new();
        for line in dns {
            match line.first().map(String::as_str) {
                Some("server") if line.get(2).map(String::as_str) == Some("address") => {
                    servers.extend(line[3..].iter().filter_map(|a| dns_address(a)));
                }
                Some("search-domains") => domains.extend(line[1..].iter().cloned()),
                _ => {}
            }
        }
        for (kind, value) in dhcp {
            match kind.as_str() {
                "DNS" | "DNS6" => servers.extend(value.parse::<IpAddr>().ok()),
                "DOMAIN" | "DOMAIN-SEARCH" => domains.push(value.clone()),
                _ => {}
            }
        }
        for a in servers {
            if !self.dns_servers.contains(&a) {
                self.dns_servers.push(a);
            }
        }
        for d in domains {
            if !self.dns_domains.contains(&d) {
                self.dns_domains.push(d);
            }
        }
    }
}

/// An address of a 2.6 `dns server N address` line: `A`, `A:port`, `[A6]:port`.
fn dns_address(a: &str) -> Option<IpAddr> {
    a.parse::<IpAddr>()
        .ok()
        .or_else(|| a.parse::<SocketAddr>().ok().map(|s| s.ip()))
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

/// A Linux tun device configured with netlink (run as root or with CAP_NET_ADMIN).
///
/// Routes go through a journaled [`RouteManager`] (host route to the server via the
/// pre-tunnel gateway first when a tunnel route covers it), DNS through systemd-resolved or
/// `/etc/resolv.conf`; all of it is undone when the device is dropped (disconnect, or a
/// reconnect with different settings), after `kill -9` by the guardian process when one was
/// started ([`crate::guardian::spawn`]; the `openvpn-client` binary does), and otherwise by
/// the next start (journals whose owner is gone are recovered). Journals live in
/// `/run/openvpn-rs`, or in `$OPENVPN_RS_RUN_DIR`.
#[derive(Debug, Clone)]
pub struct LinuxTunBuilder {
    /// Interface name (`None` = kernel chooses `tunN`).
    pub name: Option<String>,
    /// How DNS is applied (`None`: systemd-resolved if it serves our namespace, else
    /// `/etc/resolv.conf`); see [`ClientConfig::dns_backend`].
    pub dns: Option<DnsBackend>,
}

pub(crate) fn journal_dir() -> PathBuf {
    std::env::var_os("OPENVPN_RS_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(openvpn_tun::DEFAULT_JOURNAL_DIR))
}

/// Like [`LinuxTunBuilder`], but the device carries TCP in super-packets (`IFF_VNET_HDR`
/// with TSO/checksum offload, [`SystemTun::Offload`]) for the batched data path; with
/// `OPENVPN_RS_FAST_IO=0`, or when the kernel refuses the offload device, a plain tun.
/// The `openvpn-client` binary uses this one.
#[derive(Debug, Clone)]
pub struct OffloadTunBuilder {
    /// Interface name (`None` = kernel chooses `tunN`).
    pub name: Option<String>,
    /// How DNS is applied (as [`LinuxTunBuilder::dns`]).
    pub dns: Option<DnsBackend>,
}

impl TunBuilder for OffloadTunBuilder {
    type Device = SystemTun;
    async fn establish(&mut self, s: &TunSettings) -> Result<SystemTun, String> {
        let offload = crate::fast::enabled();
        let name = self.name.clone();
        let tun = establish_with(s, name, self.dns.clone(), |cfg| {
            SystemTun::create(cfg, offload)
        })
        .await?;
        tracing::info!(
            dev = tun.name(),
            offload = tun.offload_enabled(),
            "tun device ready"
        );
        Ok(tun)
    }
}

/// What [`establish_with`] needs of a freshly created device.
trait NewTun {
    fn name(&self) -> &str;
    fn ifindex(&self) -> u32;
    fn attach_route_manager(&mut self, manager: RouteManager);
}

impl NewTun for LinuxTun {
    fn name(&self) -> &str {
        LinuxTun::name(self)
    }
    fn ifindex(&self) -> u32 {
        LinuxTun::ifindex(self)
    }
    fn attach_route_manager(&mut self, manager: RouteManager) {
        LinuxTun::attach_route_manager(self, manager);
    }
}

impl NewTun for SystemTun {
    fn name(&self) -> &str {
        SystemTun::name(self)
    }
    fn ifindex(&self) -> u32 {
        SystemTun::ifindex(self)
    }
    fn attach_route_manager(&mut self, manager: RouteManager) {
        SystemTun::attach_route_manager(self, manager);
    }
}

impl TunBuilder for LinuxTunBuilder {
    type Device = LinuxTun;
    async fn establish(&mut self, s: &TunSettings) -> Result<LinuxTun, String> {
        establish_with(s, self.name.clone(), self.dns.clone(), LinuxTun::create).await
    }
}

/// Creates the device with `create`, then routes (journaled) and DNS.
async fn establish_with<D: NewTun>(
    s: &TunSettings,
    name: Option<String>,
    dns_backend: Option<DnsBackend>,
    create: impl FnOnce(&TunConfig) -> Result<D, openvpn_tun::TunError>,
) -> Result<D, String> {
    let dir = journal_dir();
    for (path, r) in RouteManager::recover_stale(&dir) {
        match r {
            Ok(rep) => {
                tracing::warn!(journal = %path.display(), undone = rep.undone.len(), failed = rep.failed.len(), "recovered changes left by a crashed run")
            }
            Err(e) => tracing::warn!(journal = %path.display(), %e, "cannot recover"),
        }
    }
    let nl = Netlink::new();
    // Before anything changes: how does the kernel reach the server now?
    let server_route = s.server.and_then(|a| nl.route_get(a).ok());
    // … and the gateways of the routes around the tunnel.
    let gateways = if s.route_details.outside.iter().any(|r| r.gateway.is_none()) {
        nl.default_gateways().unwrap_or_default()
    } else {
        Default::default()
    };
    let outside: Vec<_> = s
        .route_details
        .outside
        .iter()
        .map(|r| {
            let via = match r.gateway {
                Some(g) => nl.route_get(g).ok(),
                None if r.dest.is_ipv4() => gateways.v4.clone(),
                None => gateways.v6.clone(),
            };
            if via.is_none() {
                tracing::warn!(route = ?r, "no route to its gateway (no default route?): left out");
            }
            (r.clone(), via)
        })
        .collect();
    let cfg = TunConfig {
        name,
        mtu: s.mtu,
        ipv4: s.ipv4,
        ipv6: s.ipv6,
        routes_v4: Vec::new(),
        routes_v6: Vec::new(),
    };
    let mut tun = create(&cfg).map_err(|e| e.to_string())?;
    let mut input = s.plan_input(tun.name());
    if s.redirect.is_some_and(|r| r.block_local) {
        if let Some(via) = &server_route {
            input.local_subnets = nl.addresses(via.ifindex).unwrap_or_default();
        }
    }
    input.server_route = server_route;
    input.outside = outside;
    let plan = route::plan(&input);
    let journal = RouteManager::journal_in(&dir, tun.name());
    let mut manager = RouteManager::new(tun.name(), journal).map_err(|e| e.to_string())?;
    // Before the first change: should this process die, the guardian undoes the journal.
    crate::guardian::watch(manager.journal_path(), manager.owner());
    // On error `manager` is dropped here and removes what it added.
    manager.install_all(&plan).map_err(|e| e.to_string())?;
    let dns = s.dns();
    if !dns.is_empty() {
        let backend = dns_backend.unwrap_or_else(DnsBackend::detect);
        manager
            .apply_dns(tun.ifindex(), &dns, &backend)
            .map_err(|e| e.to_string())?;
    }
    tun.attach_route_manager(manager);
    Ok(tun)
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

#[cfg(test)]
mod tests {
    use openvpn_control::client::RouteV6;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn overlapping_pushed_ipv6_route_plans_a_host_route_first() {
        let p = PushedOptions {
            topology: Some("subnet".into()),
            ifconfig: Some((Ipv4Addr::new(10, 8, 0, 2), Ipv4Addr::new(255, 255, 255, 0))),
            ifconfig_ipv6: Some(("fd08::2".parse().expect("v6"), 64, None)),
            routes_v6: vec![RouteV6 {
                network: "2001:db8::".parse().expect("v6"),
                prefix: 32,
                gateway: None,
                metric: None,
            }],
            ..Default::default()
        };
        let cfg = ClientConfig {
            route_metric: Some(20),
            ..Default::default()
        };
        let s = TunSettings::from_profile(&p, &cfg, ip("2001:db8::1"));
        let mut input = s.plan_input("tun0");
        input.server_route = Some(openvpn_tun::RouteInfo {
            gateway: Some(ip("fe80::1")),
            ifindex: 2,
            ifname: "wlan0".into(),
            source: None,
            metric: None,
        });
        let plan: Vec<String> = route::plan(&input)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            plan,
            [
                "2001:db8::1/128 via fe80::1 dev wlan0",
                "2001:db8::/32 dev tun0 metric 20"
            ]
        );
    }

    #[test]
    fn profile_and_pushed_options_merge() {
        let p = PushedOptions {
            topology: Some("subnet".into()),
            ifconfig: Some((Ipv4Addr::new(10, 8, 0, 2), Ipv4Addr::new(255, 255, 255, 0))),
            redirect_gateway: Some(vec!["def1".into()]),
            block_ipv6: true,
            dhcp_options: vec![("DNS".into(), "10.8.0.1".into())],
            dns: vec![
                vec![
                    "server".into(),
                    "0".into(),
                    "address".into(),
                    "10.8.0.53".into(),
                    "[fd00::53]:5353".into(),
                ],
                vec!["search-domains".into(), "corp.example".into()],
            ],
            ..Default::default()
        };
        let cfg = ClientConfig {
            redirect_gateway: Some(vec!["ipv6".into()]),
            dhcp_options: vec![("DOMAIN".into(), "home.example".into())],
            ..Default::default()
        };
        let s = TunSettings::from_profile(&p, &cfg, ip("198.51.100.1"));
        assert_eq!(
            s.routes_v4,
            [
                (Ipv4Addr::new(0, 0, 0, 0), 1),
                (Ipv4Addr::new(128, 0, 0, 0), 1)
            ]
        );
        assert_eq!(
            s.routes_v6.len(),
            2,
            "profile's ipv6 flag adds ::/1 and 8000::/1"
        );
        assert!(s.block_ipv6, "no IPv6 in the tunnel");
        assert_eq!(
            s.dns_servers,
            [ip("10.8.0.53"), ip("fd00::53"), ip("10.8.0.1")]
        );
        assert_eq!(s.dns_domains, ["corp.example", "home.example"]);
        assert!(s.dns().default_route);
        // route-noexec: nothing is routed or blocked.
        let quiet = TunSettings::from_profile(
            &p,
            &ClientConfig {
                route_noexec: true,
                ..cfg
            },
            ip("198.51.100.1"),
        );
        assert!(quiet.routes_v4.is_empty() && !quiet.block_ipv6 && quiet.redirect.is_none());
    }

    fn plan_texts(s: &TunSettings) -> Vec<String> {
        let mut input = s.plan_input("tun0");
        let eth0 = |gw: &str| openvpn_tun::RouteInfo {
            gateway: Some(ip(gw)),
            ifindex: 2,
            ifname: "eth0".into(),
            source: None,
            metric: None,
        };
        input.server_route = Some(eth0("192.0.2.1"));
        for (r, via) in &mut input.outside {
            *via = Some(eth0(if r.dest.is_ipv4() {
                "192.0.2.1"
            } else {
                "fe80::1"
            }));
        }
        route::plan(&input)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn pushed_route_metrics_are_applied_and_route_metric_is_the_default() {
        use openvpn_control::client::RouteV4;
        let p = PushedOptions {
            topology: Some("subnet".into()),
            ifconfig: Some((Ipv4Addr::new(10, 8, 0, 2), Ipv4Addr::new(255, 255, 255, 0))),
            routes: vec![
                RouteV4 {
                    network: Ipv4Addr::new(10, 9, 0, 0),
                    netmask: Ipv4Addr::new(255, 255, 0, 0),
                    gateway: None,
                    metric: Some(50),
                },
                RouteV4 {
                    network: Ipv4Addr::new(10, 10, 0, 0),
                    netmask: Ipv4Addr::new(255, 255, 0, 0),
                    gateway: None,
                    metric: None,
                },
            ],
            routes_v6: vec![RouteV6 {
                network: "2001:db8:9::".parse().expect("v6"),
                prefix: 48,
                gateway: None,
                metric: Some(60),
            }],
            ..Default::default()
        };
        let cfg = ClientConfig {
            route_metric: Some(20),
            ..Default::default()
        };
        let s = TunSettings::from_profile(&p, &cfg, ip("198.51.100.1"));
        assert_eq!(
            plan_texts(&s),
            [
                "10.9.0.0/16 dev tun0 metric 50",
                "10.10.0.0/16 dev tun0 metric 20",
                "2001:db8:9::/48 dev tun0 metric 60",
            ]
        );
        // Without route-metric the route without a metric gets the kernel's default.
        let s = TunSettings::from_profile(&p, &ClientConfig::default(), ip("198.51.100.1"));
        assert_eq!(plan_texts(&s)[1], "10.10.0.0/16 dev tun0");
        assert_eq!(s.metric_of(ip("10.9.1.2"), 16), Some(50));
    }

    #[test]
    fn profile_routes_join_the_pushed_ones_and_net_gateway_goes_around() {
        let p = PushedOptions {
            topology: Some("subnet".into()),
            ifconfig: Some((Ipv4Addr::new(10, 8, 0, 2), Ipv4Addr::new(255, 255, 255, 0))),
            redirect_gateway: Some(vec!["def1".into()]),
            ..Default::default()
        };
        let cfg = ClientConfig::from_ovpn(
            "client\nremote 198.51.100.1\n<ca>\nx\n</ca>\n\
             route-metric 30\n\
             route 10.1.0.0 255.255.0.0\n\
             route 10.2.0.0 255.255.0.0 10.8.0.1 5\n\
             route 192.168.1.0 255.255.255.0 net_gateway\n\
             route 172.16.0.0 255.240.0.0 192.0.2.254 7\n\
             route remote_host 255.255.255.255 net_gateway\n\
             route-ipv6 2001:db8:7::/48 net_gateway\n",
            std::path::Path::new("/"),
        )
        .expect("profile");
        let s = TunSettings::from_profile(&p, &cfg, ip("198.51.100.1"));
        assert_eq!(
            plan_texts(&s),
            [
                "192.168.1.0/24 via 192.0.2.1 dev eth0 metric 30",
                "172.16.0.0/12 via 192.0.2.254 dev eth0 metric 7",
                // remote_host: the profile's own host route to the server replaces ours.
                "198.51.100.1/32 via 192.0.2.1 dev eth0 metric 30",
                "2001:db8:7::/48 via fe80::1 dev eth0 metric 30",
                "0.0.0.0/1 dev tun0 metric 30",
                "128.0.0.0/1 dev tun0 metric 30",
                "10.1.0.0/16 dev tun0 metric 30",
                "10.2.0.0/16 dev tun0 metric 5",
            ]
        );
        // route-noexec: none of them; route-nopull: the profile's still.
        let noexec = ClientConfig {
            route_noexec: true,
            ..cfg.clone()
        };
        let s = TunSettings::from_profile(&p, &noexec, ip("198.51.100.1"));
        assert!(s.routes_v4.is_empty() && s.route_details.outside.is_empty());
        let nopull = ClientConfig {
            route_nopull: true,
            ..cfg
        };
        // (route-nopull dropped the pushed redirect-gateway before this point.)
        let pushed = PushedOptions {
            redirect_gateway: None,
            ..p
        };
        let s = TunSettings::from_profile(&pushed, &nopull, ip("198.51.100.1"));
        assert_eq!(s.routes_v4.len(), 2);
        assert_eq!(s.route_details.outside.len(), 4);
    }

    #[test]
    fn routes_cover_says_whether_a_server_would_go_into_the_tunnel() {
        let s = TunSettings {
            routes_v4: vec![(Ipv4Addr::new(10, 9, 0, 0), 16)],
            block_ipv6: true,
            ..Default::default()
        };
        assert!(s.routes_cover(ip("10.9.3.4")));
        assert!(!s.routes_cover(ip("198.51.100.1")));
        assert!(s.routes_cover(ip("2001:db8::1")), "block-ipv6 halves");
        let mut r = TunSettings {
            redirect: Some(Redirect::from_flags(&["def1"])),
            routes_v4: route::HALVES_V4.to_vec(),
            ..Default::default()
        };
        assert!(r.routes_cover(ip("198.51.100.1")));
        assert!(!r.routes_cover(ip("2001:db8::1")));
        // Routes around the tunnel do not count.
        r.routes_v4.clear();
        r.route_details.outside.push(OutsideRoute {
            dest: ip("198.51.100.0"),
            prefix: 24,
            gateway: None,
            metric: None,
        });
        assert!(!r.routes_cover(ip("198.51.100.1")));
    }

    #[test]
    fn verdict_answers_only_blocked_families() {
        let s = TunSettings {
            block_ipv6: true,
            ..Default::default()
        };
        let mut v6 = vec![0x60, 0, 0, 0, 0, 0, 17, 64];
        v6.extend(
            ip("2001:db8::2")
                .to_string()
                .parse::<Ipv6Addr>()
                .expect("v6")
                .octets(),
        );
        v6.extend("2001:db8:1::1".parse::<Ipv6Addr>().expect("v6").octets());
        assert!(matches!(s.verdict(&v6), TunVerdict::Answer(a) if a[40] == 1));
        v6[24] = 0xff; // multicast destination: dropped, not answered
        assert_eq!(s.verdict(&v6), TunVerdict::Drop);
        let v4 = [0x45u8; 20];
        assert_eq!(s.verdict(&v4), TunVerdict::Forward);
    }
}
