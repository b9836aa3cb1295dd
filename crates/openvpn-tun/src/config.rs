//! What a tun device should look like once it is up, and the `ip` commands equivalent to the
//! netlink requests that get it there.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::TunError;

/// An IPv4 route through the tun device: destination network, prefix length, optional gateway.
pub type Route4 = (Ipv4Addr, u8, Option<Ipv4Addr>);

/// An IPv6 route through the tun device: destination network, prefix length, optional gateway.
pub type Route6 = (Ipv6Addr, u8, Option<Ipv6Addr>);

/// The settings [`LinuxTun::create`](crate::LinuxTun::create) applies to a new tun device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunConfig {
    /// Interface name (at most 15 bytes); `None` lets the kernel choose (`tun0`, `tun1`, ...).
    pub name: Option<String>,
    /// Link MTU in bytes.
    pub mtu: u16,
    /// The device's IPv4 address and prefix length, for example `10.8.0.1/24`.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// The device's IPv6 address and prefix length, for example `fd08::1/64`.
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// IPv4 routes to add through the device. Host bits of the destination are cleared.
    pub routes_v4: Vec<Route4>,
    /// IPv6 routes to add through the device. Host bits of the destination are cleared.
    pub routes_v6: Vec<Route6>,
}

impl Default for TunConfig {
    /// A kernel-named device with MTU 1500, no addresses and no routes.
    fn default() -> Self {
        Self {
            name: None,
            mtu: 1500,
            ipv4: None,
            ipv6: None,
            routes_v4: Vec::new(),
            routes_v6: Vec::new(),
        }
    }
}

impl TunConfig {
    /// The `ip` commands (program name first) that configure the device `ifname`, in order:
    /// MTU, IPv4 address, IPv6 address, link up, IPv4 routes, IPv6 routes.
    ///
    /// Pure: nothing is run. [`LinuxTun::create`](crate::LinuxTun::create) sends the same
    /// settings as netlink requests; these commands document them (and are handy to debug).
    pub fn ip_commands(&self, ifname: &str) -> Result<Vec<Vec<String>>, TunError> {
        let mut cmds = Vec::new();
        let ip = |args: &[&str]| -> Vec<String> {
            std::iter::once("ip")
                .chain(args.iter().copied())
                .map(str::to_owned)
                .collect()
        };
        cmds.push(ip(&[
            "link",
            "set",
            "dev",
            ifname,
            "mtu",
            &self.mtu.to_string(),
        ]));
        if let Some((addr, prefix)) = self.ipv4 {
            check_prefix(&format!("address {addr}"), prefix, 32)?;
            cmds.push(ip(&[
                "addr",
                "add",
                &format!("{addr}/{prefix}"),
                "dev",
                ifname,
            ]));
        }
        if let Some((addr, prefix)) = self.ipv6 {
            check_prefix(&format!("address {addr}"), prefix, 128)?;
            cmds.push(ip(&[
                "-6",
                "addr",
                "add",
                &format!("{addr}/{prefix}"),
                "dev",
                ifname,
            ]));
        }
        cmds.push(ip(&["link", "set", "dev", ifname, "up"]));
        for &(net, prefix, gateway) in &self.routes_v4 {
            check_prefix(&format!("route {net}"), prefix, 32)?;
            let net = mask_v4(net, prefix);
            let dest = format!("{net}/{prefix}");
            let mut args = vec!["route", "add", dest.as_str()];
            let gw = gateway.map(|g| g.to_string());
            if let Some(gw) = &gw {
                args.extend(["via", gw.as_str()]);
            }
            args.extend(["dev", ifname]);
            cmds.push(ip(&args));
        }
        for &(net, prefix, gateway) in &self.routes_v6 {
            check_prefix(&format!("route {net}"), prefix, 128)?;
            let net = mask_v6(net, prefix);
            let dest = format!("{net}/{prefix}");
            let mut args = vec!["-6", "route", "add", dest.as_str()];
            let gw = gateway.map(|g| g.to_string());
            if let Some(gw) = &gw {
                args.extend(["via", gw.as_str()]);
            }
            args.extend(["dev", ifname]);
            cmds.push(ip(&args));
        }
        Ok(cmds)
    }
}

fn check_prefix(what: &str, prefix: u8, max: u8) -> Result<(), TunError> {
    if prefix > max {
        return Err(TunError::InvalidPrefix {
            what: what.to_owned(),
            prefix,
            max,
        });
    }
    Ok(())
}

fn mask_v4(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from(u32::from(addr) & mask)
}

fn mask_v6(addr: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    Ipv6Addr::from(u128::from(addr) & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(cmds: &[Vec<String>]) -> Vec<String> {
        cmds.iter().map(|c| c.join(" ")).collect()
    }

    #[test]
    fn full_config_gives_exact_commands() {
        let cfg = TunConfig {
            name: Some("ovrs-tun0".into()),
            mtu: 1400,
            ipv4: Some((Ipv4Addr::new(10, 8, 0, 1), 24)),
            ipv6: Some(("fd08::1".parse().expect("v6"), 64)),
            routes_v4: vec![
                (
                    Ipv4Addr::new(10, 9, 0, 7),
                    24,
                    Some(Ipv4Addr::new(10, 8, 0, 2)),
                ),
                (Ipv4Addr::new(192, 0, 2, 0), 24, None),
            ],
            routes_v6: vec![("fd09::".parse().expect("v6"), 48, None)],
        };
        let cmds = cfg.ip_commands("ovrs-tun0").expect("valid");
        assert_eq!(
            joined(&cmds),
            [
                "ip link set dev ovrs-tun0 mtu 1400",
                "ip addr add 10.8.0.1/24 dev ovrs-tun0",
                "ip -6 addr add fd08::1/64 dev ovrs-tun0",
                "ip link set dev ovrs-tun0 up",
                "ip route add 10.9.0.0/24 via 10.8.0.2 dev ovrs-tun0",
                "ip route add 192.0.2.0/24 dev ovrs-tun0",
                "ip -6 route add fd09::/48 dev ovrs-tun0",
            ]
        );
    }

    #[test]
    fn empty_config_sets_mtu_and_link_up() {
        let cmds = TunConfig::default().ip_commands("tun3").expect("valid");
        assert_eq!(
            joined(&cmds),
            ["ip link set dev tun3 mtu 1500", "ip link set dev tun3 up"]
        );
    }

    #[test]
    fn prefix_too_long_is_rejected() {
        let cfg = TunConfig {
            ipv4: Some((Ipv4Addr::new(10, 8, 0, 1), 33)),
            ..TunConfig::default()
        };
        let err = cfg.ip_commands("tun0").expect_err("prefix 33");
        assert!(err.to_string().contains("/33"), "{err}");
        let cfg = TunConfig {
            routes_v6: vec![(Ipv6Addr::UNSPECIFIED, 129, None)],
            ..TunConfig::default()
        };
        assert!(cfg.ip_commands("tun0").is_err());
    }

    #[test]
    fn masks_cover_edges() {
        assert_eq!(
            mask_v4(Ipv4Addr::new(10, 1, 2, 3), 0),
            Ipv4Addr::UNSPECIFIED
        );
        assert_eq!(
            mask_v4(Ipv4Addr::new(10, 1, 2, 3), 32),
            Ipv4Addr::new(10, 1, 2, 3)
        );
        assert_eq!(
            mask_v4(Ipv4Addr::new(10, 1, 2, 3), 12),
            Ipv4Addr::new(10, 0, 0, 0)
        );
        let a: Ipv6Addr = "fd08::1234".parse().expect("v6");
        assert_eq!(mask_v6(a, 0), Ipv6Addr::UNSPECIFIED);
        assert_eq!(mask_v6(a, 128), a);
        assert_eq!(mask_v6(a, 64), "fd08::".parse::<Ipv6Addr>().expect("v6"));
    }
}
