//! The route plan (pure): which routes to install for a tunnel, in which order, given the
//! pushed routes, `redirect-gateway` flags, blocks, and the route the kernel used for the VPN
//! server before the tunnel came up. Also the journal line format.
//!
//! ```text
//!  RoutePlanInput { tun, server, server_route (ip route get SERVER), routes, flags }
//!        └─▶ plan() ─▶ [ SERVER/32 via old-gw dev eth0 ]   only if a tunnel route covers SERVER
//!                      [ outside routes via old-gw / GW ]  profile `route … net_gateway`
//!                      [ pushed + profile routes dev tun ] (own metric, else route-metric)
//!                      [ block-local subnets, as halves, dev tun ]
//!                      [ block-ipv4/6 halves  dev tun ]
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::netlink::RouteInfo;

/// One route as installed and journaled: destination, gateway, interface *name*, metric.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteSpec {
    /// Destination network (host bits cleared).
    pub dest: IpAddr,
    /// Prefix length.
    pub prefix: u8,
    /// Next hop (`None` = straight out of `dev`).
    pub gateway: Option<IpAddr>,
    /// Outgoing interface.
    pub dev: String,
    /// Metric; `None` = the kernel default.
    pub metric: Option<u32>,
}

impl RouteSpec {
    /// A route into `dev` without a gateway; the destination's host bits are cleared.
    pub fn dev_route(dest: IpAddr, prefix: u8, dev: &str, metric: Option<u32>) -> RouteSpec {
        RouteSpec {
            dest: mask(dest, prefix),
            prefix,
            gateway: None,
            dev: dev.to_owned(),
            metric,
        }
    }

    /// Whether `addr` lies inside this route's destination.
    pub fn covers(&self, addr: IpAddr) -> bool {
        covers(self.dest, self.prefix, addr)
    }

    /// Parses the text form written by `Display` (`0.0.0.0/1 via 192.0.2.1 dev eth0 metric 5`).
    pub fn parse(s: &str) -> Option<RouteSpec> {
        let mut it = s.split_whitespace();
        let (dest, prefix) = it.next()?.split_once('/')?;
        let dest: IpAddr = dest.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        if prefix > max_prefix(dest) {
            return None;
        }
        let mut r = RouteSpec {
            dest,
            prefix,
            gateway: None,
            dev: String::new(),
            metric: None,
        };
        while let Some(k) = it.next() {
            let v = it.next()?;
            match k {
                "via" => r.gateway = Some(v.parse().ok()?),
                "dev" => r.dev = v.to_owned(),
                "metric" => r.metric = Some(v.parse().ok()?),
                _ => return None,
            }
        }
        (!r.dev.is_empty()).then_some(r)
    }
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.dest, self.prefix)?;
        if let Some(g) = self.gateway {
            write!(f, " via {g}")?;
        }
        write!(f, " dev {}", self.dev)?;
        if let Some(m) = self.metric {
            write!(f, " metric {m}")?;
        }
        Ok(())
    }
}

/// `redirect-gateway` / `redirect-private` flags.
///
/// Both the plain form and `def1` install the two half routes (`0.0.0.0/1` + `128.0.0.0/1`),
/// which are more specific than the default route and leave it untouched; that is what
/// OpenVPN 2.6 recommends and it makes cleanup trivially exact. `ipv6` installs `::/1` +
/// `8000::/1` (the whole IPv6 space, where OpenVPN 2.6 uses `2000::/4` + `3000::/4`): link-local
/// and multicast keep their more specific routes, and unique-local (`fc00::/7`) traffic no
/// longer leaks outside the tunnel. `bypass-dhcp` and `bypass-dns` are no-ops on Linux (the
/// DHCP server is on-link, its connected route is more specific than a /1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Redirect {
    /// Redirect IPv4 (unless `!ipv4`).
    pub ipv4: bool,
    /// Redirect IPv6 (`ipv6`).
    pub ipv6: bool,
    /// `local`: the server is on the local network: no host route to it.
    pub local: bool,
    /// `block-local`: route the local subnets into the tunnel too (as two halves each, so
    /// they beat the connected route; the server keeps its host route).
    pub block_local: bool,
}

impl Redirect {
    /// Parses the flags of a `redirect-gateway` line (unknown flags are ignored).
    pub fn from_flags<S: AsRef<str>>(flags: &[S]) -> Redirect {
        let has = |f: &str| flags.iter().any(|x| x.as_ref() == f);
        Redirect {
            ipv4: !has("!ipv4"),
            ipv6: has("ipv6"),
            local: has("local"),
            block_local: has("block-local"),
        }
    }

    /// Merges two sets of flags (profile and pushed).
    pub fn union(self, o: Redirect) -> Redirect {
        Redirect {
            ipv4: self.ipv4 || o.ipv4,
            ipv6: self.ipv6 || o.ipv6,
            local: self.local || o.local,
            block_local: self.block_local || o.block_local,
        }
    }

    /// The IPv4 routes into the tunnel.
    pub fn routes_v4(&self) -> Vec<(Ipv4Addr, u8)> {
        if self.ipv4 {
            HALVES_V4.to_vec()
        } else {
            Vec::new()
        }
    }

    /// The IPv6 routes into the tunnel.
    pub fn routes_v6(&self) -> Vec<(Ipv6Addr, u8)> {
        if self.ipv6 {
            HALVES_V6.to_vec()
        } else {
            Vec::new()
        }
    }
}

/// `0.0.0.0/1` and `128.0.0.0/1`.
pub const HALVES_V4: [(Ipv4Addr, u8); 2] = [
    (Ipv4Addr::new(0, 0, 0, 0), 1),
    (Ipv4Addr::new(128, 0, 0, 0), 1),
];

/// `::/1` and `8000::/1`.
pub const HALVES_V6: [(Ipv6Addr, u8); 2] = [
    (Ipv6Addr::UNSPECIFIED, 1),
    (Ipv6Addr::new(0x8000, 0, 0, 0, 0, 0, 0, 0), 1),
];

/// A route that goes around the tunnel: a profile `route NET MASK net_gateway` (or with a
/// gateway address outside the tunnel).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OutsideRoute {
    /// Destination network.
    pub dest: IpAddr,
    /// Prefix length.
    pub prefix: u8,
    /// Next hop; `None` = the gateway of the default route of the family before the tunnel
    /// (`net_gateway`).
    pub gateway: Option<IpAddr>,
    /// Metric; `None` = the kernel default.
    pub metric: Option<u32>,
}

/// Everything the route plan depends on.
#[derive(Clone, Debug, Default)]
pub struct RoutePlanInput {
    /// The tun device name.
    pub tun: String,
    /// The VPN server's address.
    pub server: Option<IpAddr>,
    /// How the kernel reached the server before the tunnel (`ip route get SERVER`).
    pub server_route: Option<RouteInfo>,
    /// Routes into the tunnel: destination, prefix, metric (pushed routes and redirect halves).
    pub routes: Vec<(IpAddr, u8, Option<u32>)>,
    /// `redirect-gateway` flags, if any.
    pub redirect: Option<Redirect>,
    /// The local subnets (of the server's interface) for `block-local`.
    pub local_subnets: Vec<(IpAddr, u8)>,
    /// `block-ipv4`: send all IPv4 into the tunnel (which answers it with ICMP unreachable).
    pub block_ipv4: bool,
    /// `block-ipv6`: send all IPv6 into the tunnel (which answers it with ICMPv6 unreachable).
    pub block_ipv6: bool,
    /// `route-metric`: the default metric of tunnel routes.
    pub metric: Option<u32>,
    /// Routes around the tunnel, each with how the kernel reached its gateway before the
    /// tunnel (`net_gateway`: the default route of its family; a gateway address: `ip route
    /// get GW`). One without that information is left out (no default route, say).
    pub outside: Vec<(OutsideRoute, Option<RouteInfo>)>,
}

/// The routes to install, in order; the server host route (if needed) comes first.
pub fn plan(input: &RoutePlanInput) -> Vec<RouteSpec> {
    let tun = input.tun.as_str();
    let mut out: Vec<RouteSpec> = Vec::new();
    let push = |r: RouteSpec, out: &mut Vec<RouteSpec>| {
        if !out
            .iter()
            .any(|o| o.dest == r.dest && o.prefix == r.prefix && o.dev == r.dev)
        {
            out.push(r);
        }
    };
    for &(dest, prefix, metric) in &input.routes {
        if prefix <= max_prefix(dest) {
            push(
                RouteSpec::dev_route(dest, prefix, tun, metric.or(input.metric)),
                &mut out,
            );
        }
    }
    let redirect = input.redirect.unwrap_or_default();
    if redirect.block_local {
        // Each subnet as its two halves: more specific than the interface's connected
        // route, which would otherwise win (it has the lower metric).
        for &(net, prefix) in &input.local_subnets {
            if net.is_loopback() || is_link_local(net) {
                continue;
            }
            for (half, half_prefix) in halves(net, prefix).into_iter().flatten() {
                push(
                    RouteSpec::dev_route(half, half_prefix, tun, input.metric),
                    &mut out,
                );
            }
        }
    }
    if input.block_ipv4 {
        for (n, p) in HALVES_V4 {
            push(
                RouteSpec::dev_route(n.into(), p, tun, input.metric),
                &mut out,
            );
        }
    }
    if input.block_ipv6 {
        for (n, p) in HALVES_V6 {
            push(
                RouteSpec::dev_route(n.into(), p, tun, input.metric),
                &mut out,
            );
        }
    }
    // Around the tunnel, before the host route is decided (they do not count as covering
    // the server: traffic to it goes where it went before anyway).
    let mut outside = Vec::new();
    for (r, via) in &input.outside {
        let Some(via) = via
            .as_ref()
            .filter(|v| !v.ifname.is_empty() && v.ifname != tun)
        else {
            continue;
        };
        if r.prefix > max_prefix(r.dest) {
            continue;
        }
        let spec = RouteSpec {
            dest: mask(r.dest, r.prefix),
            prefix: r.prefix,
            gateway: r.gateway.or(via.gateway),
            dev: via.ifname.clone(),
            metric: r.metric,
        };
        let clash = |o: &RouteSpec| o.dest == spec.dest && o.prefix == spec.prefix;
        if !out.iter().any(clash) && !outside.iter().any(clash) {
            outside.push(spec);
        }
    }
    let outside_count = outside.len();
    out.splice(0..0, outside);
    if let (Some(server), Some(via)) = (input.server, &input.server_route) {
        let needed = !redirect.local
            && via.ifname != tun
            && !via.ifname.is_empty()
            && out[outside_count..].iter().any(|r| r.covers(server))
            && !out[..outside_count]
                .iter()
                .any(|r| r.dest == server && r.prefix == max_prefix(server));
        if needed {
            let host = RouteSpec {
                dest: server,
                prefix: max_prefix(server),
                gateway: via.gateway,
                dev: via.ifname.clone(),
                metric: None,
            };
            out.insert(0, host);
        }
    }
    out
}

fn is_link_local(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// The two halves of `net/prefix` (one bit longer each), or `None` for a host route.
fn halves(net: IpAddr, prefix: u8) -> Option<[(IpAddr, u8); 2]> {
    if prefix >= max_prefix(net) {
        return None;
    }
    let low = mask(net, prefix);
    let bit = max_prefix(net) - prefix - 1;
    let high = match low {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) | (1u32 << bit))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) | (1u128 << bit))),
    };
    Some([(low, prefix + 1), (high, prefix + 1)])
}

/// 32 for IPv4, 128 for IPv6.
pub fn max_prefix(a: IpAddr) -> u8 {
    if a.is_ipv4() { 32 } else { 128 }
}

/// Clears the host bits of `a` beyond `prefix`.
pub fn mask(a: IpAddr, prefix: u8) -> IpAddr {
    match a {
        IpAddr::V4(a) => {
            let m = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

/// Whether `net/prefix` contains `addr` (false across address families).
pub fn covers(net: IpAddr, prefix: u8, addr: IpAddr) -> bool {
    net.is_ipv4() == addr.is_ipv4() && mask(addr, prefix) == mask(net, prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn texts(p: &[RouteSpec]) -> Vec<String> {
        p.iter().map(ToString::to_string).collect()
    }

    fn eth0(gw: &str) -> RouteInfo {
        RouteInfo {
            gateway: Some(ip(gw)),
            ifindex: 2,
            ifname: "eth0".into(),
            source: None,
            metric: None,
        }
    }

    #[test]
    fn def1_with_ipv6_adds_server_host_route_first() {
        let r = Redirect::from_flags(&["def1", "ipv6", "bypass-dhcp"]);
        let mut routes: Vec<(IpAddr, u8, Option<u32>)> = Vec::new();
        routes.extend(r.routes_v4().into_iter().map(|(n, p)| (n.into(), p, None)));
        routes.extend(r.routes_v6().into_iter().map(|(n, p)| (n.into(), p, None)));
        let input = RoutePlanInput {
            tun: "tun0".into(),
            server: Some(ip("198.51.100.10")),
            server_route: Some(eth0("192.0.2.1")),
            routes,
            redirect: Some(r),
            ..Default::default()
        };
        assert_eq!(
            texts(&plan(&input)),
            [
                "198.51.100.10/32 via 192.0.2.1 dev eth0",
                "0.0.0.0/1 dev tun0",
                "128.0.0.0/1 dev tun0",
                "::/1 dev tun0",
                "8000::/1 dev tun0",
            ]
        );
    }

    #[test]
    fn overlapping_ipv6_route_gets_a_host_route_via_the_v6_gateway() {
        let input = RoutePlanInput {
            tun: "tun0".into(),
            server: Some(ip("2001:db8::1")),
            server_route: Some(eth0("fe80::1")),
            routes: vec![(ip("2001:db8::"), 32, None), (ip("10.9.0.0"), 16, Some(7))],
            metric: Some(100),
            ..Default::default()
        };
        assert_eq!(
            texts(&plan(&input)),
            [
                "2001:db8::1/128 via fe80::1 dev eth0",
                "2001:db8::/32 dev tun0 metric 100",
                "10.9.0.0/16 dev tun0 metric 7",
            ]
        );
    }

    #[test]
    fn no_host_route_when_nothing_covers_the_server_or_local_is_set() {
        let mut input = RoutePlanInput {
            tun: "tun0".into(),
            server: Some(ip("198.51.100.10")),
            server_route: Some(eth0("192.0.2.1")),
            routes: vec![(ip("10.9.0.1"), 16, None)],
            ..Default::default()
        };
        assert_eq!(texts(&plan(&input)), ["10.9.0.0/16 dev tun0"]);
        input.routes.push((ip("0.0.0.0"), 1, None));
        input.routes.push((ip("128.0.0.0"), 1, None));
        input.redirect = Some(Redirect::from_flags(&["local"]));
        assert_eq!(plan(&input).len(), 3);
        // An IPv4 server is not covered by IPv6 routes.
        input.redirect = None;
        input.routes = vec![(ip("::"), 1, None), (ip("8000::"), 1, None)];
        assert_eq!(plan(&input).len(), 2);
        // An on-link server: host route without a gateway.
        input.routes = vec![(ip("198.51.0.0"), 16, None)];
        input.server_route = Some(RouteInfo {
            gateway: None,
            ..eth0("192.0.2.1")
        });
        assert_eq!(texts(&plan(&input))[0], "198.51.100.10/32 dev eth0");
    }

    #[test]
    fn blocks_and_block_local() {
        let input = RoutePlanInput {
            tun: "tun1".into(),
            server: Some(ip("192.0.2.77")),
            server_route: Some(RouteInfo {
                gateway: None,
                ..eth0("0.0.0.0")
            }),
            redirect: Some(Redirect::from_flags(&["def1", "block-local"])),
            routes: vec![(ip("0.0.0.0"), 1, None), (ip("128.0.0.0"), 1, None)],
            local_subnets: vec![
                (ip("192.0.2.2"), 24),
                (ip("fe80::1"), 64),
                (ip("fd77::2"), 64),
                (ip("192.0.2.9"), 32),
            ],
            block_ipv6: true,
            ..Default::default()
        };
        // The halves beat the interface's own connected /24 and /64; a /32 has none.
        assert_eq!(
            texts(&plan(&input)),
            [
                "192.0.2.77/32 dev eth0",
                "0.0.0.0/1 dev tun1",
                "128.0.0.0/1 dev tun1",
                "192.0.2.0/25 dev tun1",
                "192.0.2.128/25 dev tun1",
                "fd77::/65 dev tun1",
                "fd77::8000:0:0:0/65 dev tun1",
                "::/1 dev tun1",
                "8000::/1 dev tun1",
            ]
        );
    }

    #[test]
    fn outside_routes_go_via_the_old_gateway_and_metrics_are_kept() {
        let mut input = RoutePlanInput {
            tun: "tun0".into(),
            server: Some(ip("198.51.100.10")),
            server_route: Some(eth0("192.0.2.1")),
            routes: vec![
                (ip("0.0.0.0"), 1, None),
                (ip("128.0.0.0"), 1, None),
                (ip("10.9.0.0"), 16, Some(50)),
            ],
            metric: Some(20),
            outside: vec![
                (
                    OutsideRoute {
                        dest: ip("192.168.7.9"),
                        prefix: 24,
                        gateway: None,
                        metric: Some(5),
                    },
                    Some(eth0("192.0.2.1")),
                ),
                (
                    OutsideRoute {
                        dest: ip("2001:db8:7::"),
                        prefix: 48,
                        gateway: None,
                        metric: None,
                    },
                    Some(eth0("fe80::1")),
                ),
                (
                    OutsideRoute {
                        dest: ip("172.16.0.0"),
                        prefix: 12,
                        gateway: Some(ip("192.0.2.254")),
                        metric: None,
                    },
                    Some(RouteInfo {
                        gateway: None,
                        ..eth0("0.0.0.0")
                    }),
                ),
                // No default route of that family: left out.
                (
                    OutsideRoute {
                        dest: ip("10.200.0.0"),
                        prefix: 16,
                        gateway: None,
                        metric: None,
                    },
                    None,
                ),
            ],
            ..Default::default()
        };
        assert_eq!(
            texts(&plan(&input)),
            [
                "198.51.100.10/32 via 192.0.2.1 dev eth0",
                "192.168.7.0/24 via 192.0.2.1 dev eth0 metric 5",
                "2001:db8:7::/48 via fe80::1 dev eth0",
                "172.16.0.0/12 via 192.0.2.254 dev eth0",
                "0.0.0.0/1 dev tun0 metric 20",
                "128.0.0.0/1 dev tun0 metric 20",
                "10.9.0.0/16 dev tun0 metric 50",
            ]
        );
        // An outside route covering the server does not call for a host route.
        input.routes.clear();
        input.outside[0].0.dest = ip("198.51.100.0");
        assert_eq!(
            texts(&plan(&input))[0],
            "198.51.100.0/24 via 192.0.2.1 dev eth0 metric 5"
        );
    }

    #[test]
    fn redirect_flags() {
        let r = Redirect::from_flags(&["!ipv4", "ipv6"]);
        assert!(r.routes_v4().is_empty());
        assert_eq!(r.routes_v6().len(), 2);
        assert_eq!(Redirect::from_flags::<&str>(&[]).routes_v4().len(), 2);
    }

    #[test]
    fn spec_text_round_trips() {
        for s in [
            "0.0.0.0/1 dev tun0",
            "198.51.100.10/32 via 192.0.2.1 dev eth0 metric 5",
            "2001:db8::1/128 via fe80::1 dev wlan0",
        ] {
            assert_eq!(RouteSpec::parse(s).expect(s).to_string(), s);
        }
        for bad in [
            "",
            "1.2.3.4/33 dev x",
            "1.2.3.4/8",
            "1.2.3.4/8 dev",
            "x/1 dev a",
        ] {
            assert!(RouteSpec::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn covers_and_mask() {
        assert!(covers(ip("0.0.0.0"), 1, ip("10.1.1.1")));
        assert!(!covers(ip("0.0.0.0"), 1, ip("200.1.1.1")));
        assert!(covers(ip("8000::"), 1, ip("fd00::1")));
        assert!(!covers(ip("::"), 0, ip("1.1.1.1")));
        assert_eq!(mask(ip("10.1.2.3"), 0), ip("0.0.0.0"));
        assert_eq!(mask(ip("2001:db8::1"), 32), ip("2001:db8::"));
    }
}
