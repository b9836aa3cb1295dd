//! The per-client directives of a `client-config-dir` file, a `client-connect` script's
//! dynamic config file and a management `client-auth` config block, parsed one line at a
//! time into [`Directive`]s (pure; the server core applies them to the client).
//!
//! ```text
//!  OptionLine ──▶ parse_directive ──▶ Directive::{Push, PushReset, PushRemove, IfconfigPush,
//!                                      IfconfigIpv6Push, Iroute, Disable, Unsupported}
//!  push list (the server's, once per client) ──▶ apply_push ──▶ this client's push list
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use openvpn_control::options::OptionLine;

/// One per-client directive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Directive {
    /// `disable`: refuse this client.
    Disable,
    /// `push "OPTION"`: append to this client's push list.
    Push(String),
    /// `push-reset`: drop the push list so far (the server's and earlier `push` lines).
    PushReset,
    /// `push-remove TEXT`: drop every pushed option whose text starts with `TEXT`.
    PushRemove(String),
    /// `push-remove ifconfig` / `push-remove ifconfig-ipv6`: do not push this client its
    /// IPv4 (`false`) or IPv6 (`true`) tunnel address (generated, not in the push list).
    NoIfconfig {
        /// The IPv6 one.
        v6: bool,
    },
    /// `ifconfig-push ADDR [NETMASK]`: this client's fixed IPv4 address.
    IfconfigPush(Ipv4Addr, Option<Ipv4Addr>),
    /// `ifconfig-ipv6-push ADDR/BITS [SERVER]`: this client's fixed IPv6 address, its prefix
    /// length and, if given, the server side of the tunnel.
    IfconfigIpv6Push(Ipv6Addr, u8, Option<Ipv6Addr>),
    /// `iroute NETWORK [NETMASK]` / `iroute-ipv6 NETWORK/BITS`: a network behind the client.
    Iroute(IpAddr, u8),
    /// A directive OpenVPN knows that we do not act on here; the text says why.
    Unsupported(String),
}

/// Parses one line of a client config. Malformed arguments are an error (the client is
/// refused rather than connected with half its policy).
pub fn parse_directive(l: &OptionLine) -> Result<Directive, String> {
    let arg = |i: usize| {
        l.arg(i)
            .ok_or_else(|| format!("'{}' needs an argument", l.name))
    };
    let at_most = |n: usize| {
        if l.args.len() > n {
            Err(format!("too many arguments in '{}'", l.render()))
        } else {
            Ok(())
        }
    };
    Ok(match l.name.as_str() {
        "disable" => Directive::Disable,
        "push" => {
            at_most(1)?;
            Directive::Push(arg(0)?.to_owned())
        }
        "push-reset" => {
            at_most(0)?;
            Directive::PushReset
        }
        "push-remove" => {
            at_most(1)?;
            match arg(0)? {
                "" => return Err("push-remove needs a non-empty text".into()),
                "ifconfig" => Directive::NoIfconfig { v6: false },
                "ifconfig-ipv6" => Directive::NoIfconfig { v6: true },
                text => Directive::PushRemove(text.to_owned()),
            }
        }
        "ifconfig-push" => {
            at_most(3)?;
            let a = arg(0)?;
            let addr = a
                .parse()
                .map_err(|_| format!("bad ifconfig-push address '{a}'"))?;
            let second = match l.arg(1) {
                Some(m) => Some(
                    m.parse::<Ipv4Addr>()
                        .map_err(|_| format!("bad ifconfig-push netmask or peer address '{m}'"))?,
                ),
                None => None,
            };
            Directive::IfconfigPush(addr, second)
        }
        "ifconfig-ipv6-push" => {
            at_most(2)?;
            let (addr, bits) = ipv6_prefix(arg(0)?, "ifconfig-ipv6-push", None)?;
            let remote = match l.arg(1) {
                Some(r) => Some(
                    r.parse()
                        .map_err(|_| format!("bad ifconfig-ipv6-push server address '{r}'"))?,
                ),
                None => None,
            };
            Directive::IfconfigIpv6Push(addr, bits, remote)
        }
        "iroute" => {
            at_most(2)?;
            let a = arg(0)?;
            let net: Ipv4Addr = a.parse().map_err(|_| format!("bad iroute network '{a}'"))?;
            let bits = match l.arg(1) {
                None => 32,
                Some(m) => {
                    let mask: Ipv4Addr =
                        m.parse().map_err(|_| format!("bad iroute netmask '{m}'"))?;
                    let bits = u32::from(mask).leading_ones();
                    if u32::from(mask).checked_shl(bits).unwrap_or(0) != 0 {
                        return Err(format!("iroute netmask '{m}' is not contiguous"));
                    }
                    bits as u8
                }
            };
            Directive::Iroute(IpAddr::V4(net), bits)
        }
        "iroute-ipv6" => {
            at_most(1)?;
            let (net, bits) = ipv6_prefix(arg(0)?, "iroute-ipv6", Some(128))?;
            Directive::Iroute(IpAddr::V6(net), bits)
        }
        other => Directive::Unsupported(format!(
            "'{other}' is not supported in a client config (client-config-dir, client-connect); ignored"
        )),
    })
}

/// `ADDR/BITS` (BITS 0..=128; without `/BITS`, `default` if given, else an error).
fn ipv6_prefix(text: &str, what: &str, default: Option<u8>) -> Result<(Ipv6Addr, u8), String> {
    let (addr, bits) = match text.split_once('/') {
        Some((a, b)) => {
            let bits = b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= 128)
                .ok_or_else(|| format!("bad {what} prefix length in '{text}'"))?;
            (a, bits)
        }
        None => (
            text,
            default.ok_or_else(|| format!("{what} '{text}' needs a /BITS prefix length"))?,
        ),
    };
    let addr = addr
        .parse()
        .map_err(|_| format!("bad {what} address '{text}'"))?;
    Ok((addr, bits))
}

/// Applies a push directive to `list` (this client's push list so far); false for other
/// directives.
pub fn apply_push(d: &Directive, list: &mut Vec<String>) -> bool {
    match d {
        Directive::Push(o) => list.push(o.clone()),
        Directive::PushReset => list.clear(),
        // A prefix of the option text, as OpenVPN compares.
        Directive::PushRemove(text) => list.retain(|o| !o.starts_with(text.as_str())),
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<OptionLine> {
        openvpn_control::options::parse_config(text).unwrap()
    }

    fn one(text: &str) -> Result<Directive, String> {
        parse_directive(&lines(text)[0])
    }

    #[test]
    fn push_reset_and_remove_work_in_order_on_the_server_list() {
        let mut list: Vec<String> = vec![
            "route-gateway 10.8.0.1".into(),
            "route 10.1.0.0 255.255.0.0".into(),
            "route-ipv6 2001:db8:1::/48".into(),
            "route-ipv6 fd00:1::/48".into(),
            "dhcp-option DNS 10.8.0.1".into(),
        ];
        for l in lines(
            "push-remove \"route-ipv6 2001:\"\npush \"route 10.2.0.0 255.255.0.0\"\n\
             push-remove dhcp-option\npush-remove gateway\n",
        ) {
            assert!(apply_push(&parse_directive(&l).unwrap(), &mut list));
        }
        // "gateway" is not a prefix of "route-gateway …": kept.
        assert_eq!(
            list,
            [
                "route-gateway 10.8.0.1",
                "route 10.1.0.0 255.255.0.0",
                "route-ipv6 fd00:1::/48",
                "route 10.2.0.0 255.255.0.0"
            ]
        );
        for l in lines("push-reset\npush \"route 10.3.0.0 255.255.0.0\"\n") {
            apply_push(&parse_directive(&l).unwrap(), &mut list);
        }
        assert_eq!(list, ["route 10.3.0.0 255.255.0.0"]);
        // A removal that matches everything mentioning "route".
        apply_push(&one("push-remove route").unwrap(), &mut list);
        assert!(list.is_empty());
    }

    #[test]
    fn addresses_and_iroutes_parse() {
        assert_eq!(
            one("ifconfig-push 10.8.0.50 255.255.255.0"),
            Ok(Directive::IfconfigPush(
                "10.8.0.50".parse().unwrap(),
                Some("255.255.255.0".parse().unwrap())
            ))
        );
        assert_eq!(
            one("ifconfig-ipv6-push fd08::50/64 fd08::1"),
            Ok(Directive::IfconfigIpv6Push(
                "fd08::50".parse().unwrap(),
                64,
                Some("fd08::1".parse().unwrap())
            ))
        );
        assert_eq!(
            one("ifconfig-ipv6-push fd08::50/112"),
            Ok(Directive::IfconfigIpv6Push(
                "fd08::50".parse().unwrap(),
                112,
                None
            ))
        );
        assert_eq!(
            one("iroute 192.168.5.0 255.255.255.0"),
            Ok(Directive::Iroute("192.168.5.0".parse().unwrap(), 24))
        );
        assert_eq!(
            one("iroute 192.168.5.7"),
            Ok(Directive::Iroute("192.168.5.7".parse().unwrap(), 32))
        );
        assert_eq!(
            one("iroute-ipv6 2001:db8:5::/48"),
            Ok(Directive::Iroute("2001:db8:5::".parse().unwrap(), 48))
        );
        assert_eq!(
            one("iroute-ipv6 2001:db8:5::9"),
            Ok(Directive::Iroute("2001:db8:5::9".parse().unwrap(), 128))
        );
    }

    #[test]
    fn malformed_lines_are_errors_not_defaults() {
        for bad in [
            "iroute-ipv6 2001:db8:5::/129",
            "iroute-ipv6 2001:db8:5::/abc",
            "iroute-ipv6 nonsense/48",
            "iroute 192.168.5.0 255.0.255.0",
            "iroute 192.168.5.0 24",
            "iroute",
            "ifconfig-push 10.8.0",
            "ifconfig-push 10.8.0.5 not-a-mask",
            "ifconfig-ipv6-push fd08::50",
            "ifconfig-ipv6-push fd08::50/64 nope",
            "push-remove",
            "push-reset now",
            "push a b",
        ] {
            assert!(one(bad).is_err(), "{bad} was accepted: {:?}", one(bad));
        }
    }

    #[test]
    fn unknown_directives_are_reported_not_silently_dropped() {
        match one("comp-lzo yes") {
            Ok(Directive::Unsupported(why)) => assert!(why.contains("comp-lzo")),
            other => panic!("{other:?}"),
        }
        assert_eq!(one("disable"), Ok(Directive::Disable));
        assert_eq!(
            one("push-remove ifconfig-ipv6"),
            Ok(Directive::NoIfconfig { v6: true })
        );
        assert_eq!(
            one("push-remove ifconfig"),
            Ok(Directive::NoIfconfig { v6: false })
        );
    }
}
