//! `plugin MODULE [ARGS…]` in a client profile: the modules are opened at start and called
//! around the tunnel's life, each before the matching script, as OpenVPN does.
//!
//! ```text
//!  start:                     ClientPlugins::load(cfg)  (in profile order)
//!  first Connected{settings}: up(dev, settings)   → PLUGIN_UP, then PLUGIN_ROUTE_UP
//!  exit:                      down(dev, settings) → PLUGIN_DOWN
//! ```
//!
//! Calls block (down-root's UP starts its root helper, DOWN waits for the command): the
//! binary makes them where it runs its `up` and `down` scripts.

use openvpn_plugin::{CallStatus, Plugin, PluginError, PluginKind};
use tracing::{info, warn};

use crate::config::ClientConfig;
use crate::tun::TunSettings;

/// The profile's modules, in order.
#[derive(Debug)]
pub struct ClientPlugins {
    modules: Vec<Plugin>,
    base_env: Vec<(String, String)>,
}

impl ClientPlugins {
    /// Opens the profile's `plugin` lines (`None` without any).
    pub fn load(cfg: &ClientConfig) -> Result<Option<ClientPlugins>, PluginError> {
        if cfg.plugins.is_empty() {
            return Ok(None);
        }
        let base_env = vec![
            ("verb".to_owned(), cfg.verb.to_string()),
            ("daemon".to_owned(), u8::from(cfg.daemon).to_string()),
            ("daemon_log_redirect".to_owned(), "0".to_owned()),
        ];
        let mut modules = Vec::new();
        for (name, args) in &cfg.plugins {
            let p = Plugin::load(name, args, &base_env)?;
            info!(
                "PLUGIN_INIT: POST {} '{}' intercepted={}",
                p.path().display(),
                args.join(" "),
                p.type_mask()
                    .kinds()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join("|")
            );
            modules.push(p);
        }
        Ok(Some(ClientPlugins { modules, base_env }))
    }

    /// The tunnel is configured: `PLUGIN_UP` (argv `dev tun_mtu link_mtu ifconfig_local
    /// ifconfig_netmask init`), then `PLUGIN_ROUTE_UP` (routes are set with the device).
    /// False if a module failed.
    pub fn up(&mut self, dev: &str, settings: &TunSettings) -> bool {
        let args = up_args(dev, settings);
        let up = self.call(PluginKind::Up, &args, dev, settings);
        up && self.call(PluginKind::RouteUp, &[], dev, settings)
    }

    /// The tunnel is going away: `PLUGIN_DOWN` with the arguments `up` had.
    pub fn down(&mut self, dev: &str, settings: &TunSettings) -> bool {
        let args = up_args(dev, settings);
        self.call(PluginKind::Down, &args, dev, settings)
    }

    fn call(&mut self, kind: PluginKind, args: &[String], dev: &str, s: &TunSettings) -> bool {
        let mut env = self.base_env.clone();
        env.extend(tun_env(dev, s));
        let mut ok = true;
        for p in self.modules.iter_mut().filter(|p| p.handles(kind)) {
            match p.call(kind, args, &env, None) {
                Ok(o) if o.status == CallStatus::Success => {}
                Ok(o) => {
                    warn!(
                        "PLUGIN_CALL: plugin function {kind} failed ({:?}): {}",
                        o.status,
                        p.path().display()
                    );
                    ok = false;
                }
                Err(e) => {
                    warn!("{e}");
                    ok = false;
                }
            }
        }
        ok
    }
}

fn netmask(prefix: u8) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    })
}

fn up_args(dev: &str, s: &TunSettings) -> Vec<String> {
    let (local, mask) = s
        .ipv4
        .map(|(a, p)| (a.to_string(), netmask(p).to_string()))
        .unwrap_or_default();
    vec![
        dev.to_owned(),
        s.mtu.to_string(),
        s.mtu.to_string(),
        local,
        mask,
        "init".to_owned(),
    ]
}

/// The environment OpenVPN's up/down scripts and modules get for the tunnel: `dev`,
/// `tun_mtu`, `ifconfig_local`/`ifconfig_netmask`, `ifconfig_ipv6_local`/`_netbits`, and
/// each pushed DNS server as `foreign_option_N`.
pub fn tun_env(dev: &str, s: &TunSettings) -> Vec<(String, String)> {
    let mut env = vec![
        ("dev".to_owned(), dev.to_owned()),
        ("tun_mtu".to_owned(), s.mtu.to_string()),
    ];
    if let Some((a, p)) = s.ipv4 {
        env.push(("ifconfig_local".to_owned(), a.to_string()));
        env.push(("ifconfig_netmask".to_owned(), netmask(p).to_string()));
    }
    if let Some((a, p)) = s.ipv6 {
        env.push(("ifconfig_ipv6_local".to_owned(), a.to_string()));
        env.push(("ifconfig_ipv6_netbits".to_owned(), p.to_string()));
    }
    for (i, d) in s.dns_servers.iter().enumerate() {
        env.push((
            format!("foreign_option_{}", i + 1),
            format!("dhcp-option DNS {d}"),
        ));
    }
    env
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A profile's `plugin` line, called around the tunnel with the up script's argv.
    #[test]
    fn profile_plugin_gets_up_and_down() {
        let dir = std::env::temp_dir().join(format!("ovrs-client-plugin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../openvpn-plugin/tests/test_plugin.c");
        let so = dir.join("ovrs-test-plugin.so");
        match std::process::Command::new("gcc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&so)
            .arg(&src)
            .status()
        {
            Ok(s) => assert!(s.success(), "gcc failed"),
            Err(e) => {
                eprintln!("SKIP: no gcc ({e})");
                return;
            }
        }
        let journal = dir.join("journal");
        let cfg = ClientConfig {
            plugins: vec![(
                so.display().to_string(),
                vec![journal.display().to_string()],
            )],
            ..ClientConfig::default()
        };
        let mut p = ClientPlugins::load(&cfg).unwrap().unwrap();
        let s = TunSettings {
            ipv4: Some(("10.8.0.2".parse().unwrap(), 24)),
            mtu: 1500,
            ..TunSettings::default()
        };
        // The module asks for UP and DOWN, not ROUTE_UP (which is then skipped).
        assert!(p.up("tun9", &s));
        assert!(p.down("tun9", &s));
        drop(p);
        let text = std::fs::read_to_string(&journal).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "open -",
                "constructor",
                "up tun9",
                "type 1",
                "destructor 2",
                "close"
            ]
        );
        assert_eq!(up_args("tun9", &s)[3..5], ["10.8.0.2", "255.255.255.0"]);
    }
}
