//! `plugin MODULE [ARGS…]` in a client profile: the modules are opened at start and called
//! around the tunnel's life, each before the matching script, as OpenVPN does.
//!
//! ```text
//!  start:  ClientPlugins::load(cfg)  (in profile order)
//!  then:   call(kind, argv, env) from the hooks (`crate::hooks`): PLUGIN_UP, PLUGIN_ROUTE_UP,
//!          PLUGIN_IPCHANGE, PLUGIN_ROUTE_PREDOWN, PLUGIN_DOWN, each with its script's argv
//!          and environment
//! ```
//!
//! Calls block (down-root's UP starts its root helper, DOWN waits for the command): the
//! hooks make them where they run the scripts.

use openvpn_plugin::{CallStatus, Plugin, PluginError, PluginKind};
use tracing::{info, warn};

use crate::config::ClientConfig;

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

    /// Whether a module asked for `kind`.
    pub fn handles(&self, kind: PluginKind) -> bool {
        self.modules.iter().any(|p| p.handles(kind))
    }

    /// Calls `kind` of every module that asked for it, in profile order, with `args` (the
    /// matching script's arguments) and `env` (its environment, after `verb`/`daemon`).
    /// False if a module failed.
    pub fn call(&mut self, kind: PluginKind, args: &[String], env: &[(String, String)]) -> bool {
        let mut all = self.base_env.clone();
        all.extend(env.iter().cloned());
        let mut ok = true;
        for p in self.modules.iter_mut().filter(|p| p.handles(kind)) {
            match p.call(kind, args, &all, None) {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::tun::TunSettings;

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
        let args = crate::hooks::script_args("tun9", &s, crate::hooks::Context::Init);
        // The module asks for UP and DOWN, not ROUTE_UP.
        assert!(p.handles(PluginKind::Up) && !p.handles(PluginKind::RouteUp));
        assert!(p.call(PluginKind::Up, &args, &[]));
        assert!(p.call(PluginKind::RouteUp, &[], &[]));
        assert!(p.call(PluginKind::Down, &args, &[]));
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
        assert_eq!(
            args,
            ["tun9", "1500", "0", "10.8.0.2", "255.255.255.0", "init"]
        );
    }
}
