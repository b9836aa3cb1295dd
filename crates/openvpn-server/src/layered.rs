//! Configuration layering through figment: the OpenVPN-format file (and `--options`) is the
//! base layer, a TOML file (`--layer-toml FILE`) and `OPENVPN_*` environment variables
//! override it option by option.
//!
//! ```text
//!  server.conf + argv ─▶ OpenVpnFormat (figment Provider) ─┐
//!  layer.toml ─────────▶ Toml ─────────────────────────────┼─▶ merged dict ─▶ option lines ─▶ config::load
//!  OPENVPN_PORT=1195 ──▶ Env::prefixed("OPENVPN_") ─────────┘
//! ```
//! Value forms in TOML/env: a string is the rest of a config line (`proto = "udp6"`,
//! `OPENVPN_KEEPALIVE="10 60"`), a number is one argument, `true` is a flag and `false`
//! removes the option, an array of strings gives one option per element, an array of arrays
//! gives exact arguments (`push = [["route 10.0.0.0 255.0.0.0"]]`). `_` in keys means `-`.
//! Options that no layer overrides keep their file line numbers for error messages.

use std::collections::BTreeMap;
use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use openvpn_control::options::{self, OptionLine, OptionSource};

use crate::config::ConfigError;

/// Environment variables that are not configuration; every `OPENVPN_RS_*` (our own
/// run-time settings, e.g. `OPENVPN_RS_THREADS`) is not either ([`is_ignored`]).
const ENV_IGNORED: &[&str] = &["log", "config_toml"];

/// Whether `OPENVPN_<name>` (lower-case) is not a configuration option.
fn is_ignored(name: &str) -> bool {
    ENV_IGNORED.contains(&name) || name.starts_with("rs_")
}

/// A figment provider for OpenVPN option lines.
#[derive(Debug, Clone)]
pub struct OpenVpnFormat {
    lines: Vec<OptionLine>,
}

impl OpenVpnFormat {
    /// Wraps parsed option lines.
    pub fn new(lines: Vec<OptionLine>) -> Self {
        OpenVpnFormat { lines }
    }
}

fn lines_to_value(lines: &[&OptionLine]) -> Value {
    Value::from(
        lines
            .iter()
            .map(|l| Value::from(l.args.clone()))
            .collect::<Vec<Value>>(),
    )
}

impl Provider for OpenVpnFormat {
    fn metadata(&self) -> Metadata {
        Metadata::named("OpenVPN config")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut grouped: BTreeMap<String, Vec<&OptionLine>> = BTreeMap::new();
        for l in &self.lines {
            grouped.entry(l.name.clone()).or_default().push(l);
        }
        let dict: Dict = grouped
            .into_iter()
            .map(|(k, v)| (k, lines_to_value(&v)))
            .collect();
        Ok(Profile::Default.collect(dict))
    }
}

fn norm(key: &str) -> String {
    key.replace('_', "-").to_ascii_lowercase()
}

fn value_to_lines(name: &str, v: &Value) -> Result<Vec<OptionLine>, ConfigError> {
    let mk = |args: Vec<String>| OptionLine {
        name: name.to_owned(),
        args,
        line: 0,
        source: OptionSource::CommandLine,
    };
    let from_text = |s: &str| -> Result<OptionLine, ConfigError> {
        let parsed = options::parse_config(&format!("{name} {s}\n"))?;
        Ok(parsed
            .into_iter()
            .next()
            .map(|mut l| {
                l.source = OptionSource::CommandLine;
                l.line = 0;
                l
            })
            .unwrap_or_else(|| mk(Vec::new())))
    };
    Ok(match v {
        Value::Bool(_, true) => vec![mk(Vec::new())],
        Value::Bool(_, false) => Vec::new(),
        Value::String(_, s) => vec![from_text(s)?],
        Value::Num(_, n) => vec![mk(vec![num_text(n)])],
        Value::Array(_, items) => {
            let mut out = Vec::new();
            for it in items {
                match it {
                    Value::Array(_, args) => out.push(mk(args
                        .iter()
                        .map(scalar_text)
                        .collect::<Result<_, _>>()?)),
                    Value::String(_, s) => out.push(from_text(s)?),
                    Value::Num(_, n) => out.push(mk(vec![num_text(n)])),
                    other => {
                        return Err(ConfigError::Invalid(format!(
                            "layered option '{name}': unsupported value {other:?}"
                        )));
                    }
                }
            }
            out
        }
        other => {
            return Err(ConfigError::Invalid(format!(
                "layered option '{name}': unsupported value {other:?}"
            )));
        }
    })
}

fn num_text(n: &figment::value::Num) -> String {
    n.to_u128()
        .map(|x| x.to_string())
        .or_else(|| n.to_i128().map(|x| x.to_string()))
        .or_else(|| n.to_f64().map(|x| x.to_string()))
        .unwrap_or_default()
}

fn scalar_text(v: &Value) -> Result<String, ConfigError> {
    match v {
        Value::String(_, s) => Ok(s.clone()),
        Value::Num(_, n) => Ok(num_text(n)),
        Value::Bool(_, b) => Ok(b.to_string()),
        other => Err(ConfigError::Invalid(format!(
            "layered option argument: unsupported value {other:?}"
        ))),
    }
}

/// Applies the TOML file and `OPENVPN_*` variables (from `env`) over `base`. Without either,
/// `base` is returned unchanged.
pub fn layer(
    base: Vec<OptionLine>,
    toml: Option<&Path>,
    env: &[(String, String)],
) -> Result<Vec<OptionLine>, ConfigError> {
    let env_keys: Vec<String> = env
        .iter()
        .filter_map(|(k, _)| k.strip_prefix("OPENVPN_"))
        .map(str::to_ascii_lowercase)
        .filter(|k| !is_ignored(k))
        .collect();
    if toml.is_none() && env_keys.is_empty() {
        return Ok(base);
    }
    let mut fig = Figment::from(OpenVpnFormat::new(base.clone()));
    if let Some(t) = toml {
        let text = std::fs::read_to_string(t).map_err(|source| ConfigError::Io {
            what: "layer-toml".into(),
            path: t.to_owned(),
            source,
        })?;
        fig = fig.merge(Toml::string(&text));
    }
    let mut env_dict = Dict::new();
    for (k, v) in env {
        if let Some(name) = k.strip_prefix("OPENVPN_") {
            let name = name.to_ascii_lowercase();
            if !is_ignored(&name) {
                env_dict.insert(name, Value::from(v.clone()));
            }
        }
    }
    let _ = Env::prefixed("OPENVPN_");
    fig = fig.merge(figment::providers::Serialized::defaults(env_dict));
    let merged: BTreeMap<String, Value> = fig
        .extract()
        .map_err(|e| ConfigError::Invalid(format!("layered configuration: {e}")))?;
    // Rebuild in the base order; keep original lines for options no layer touched.
    let mut out = Vec::new();
    let mut done = std::collections::BTreeSet::new();
    let originals: BTreeMap<String, Value> = OpenVpnFormat::new(base.clone())
        .data()
        .map_err(|e| ConfigError::Invalid(e.to_string()))?
        .remove(&Profile::Default)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let merged_norm: BTreeMap<String, (String, Value)> = merged
        .into_iter()
        .map(|(k, v)| (norm(&k), (k, v)))
        .collect();
    for l in &base {
        if done.contains(&l.name) {
            continue;
        }
        match merged_norm.get(&l.name) {
            Some((k, v)) if originals.get(k) == Some(v) => {
                out.extend(base.iter().filter(|b| b.name == l.name).cloned());
            }
            Some((_, v)) => out.extend(value_to_lines(&l.name, v)?),
            None => {}
        }
        done.insert(l.name.clone());
    }
    for (name, (_, v)) in &merged_norm {
        if !done.contains(name) {
            out.extend(value_to_lines(name, v)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_and_env_override_file_options() {
        let base = options::parse_config(
            "port 1194\nproto udp\npush \"route 10.1.0.0 255.255.0.0\"\nverb 3\n",
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("ovrs-layer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let toml = dir.join("layer.toml");
        std::fs::write(&toml, "proto = \"udp6\"\npush = [[\"route 10.2.0.0 255.255.0.0\"], [\"ping 5\"]]\nclient_to_client = true\n").unwrap();
        let env = vec![
            ("OPENVPN_PORT".to_owned(), "1195".to_owned()),
            ("OPENVPN_LOG".to_owned(), "debug".to_owned()),
            ("OPENVPN_RS_FAST_IO".to_owned(), "0".to_owned()),
        ];
        let out = layer(base, Some(&toml), &env).unwrap();
        assert!(
            out.iter().all(|l| !l.name.contains("fast")),
            "not an option"
        );
        let find = |n: &str| {
            out.iter()
                .filter(|l| l.name == n)
                .map(|l| l.args.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(find("port"), vec![vec!["1195".to_owned()]]);
        assert_eq!(find("proto"), vec![vec!["udp6".to_owned()]]);
        assert_eq!(
            find("push"),
            vec![
                vec!["route 10.2.0.0 255.255.0.0".to_owned()],
                vec!["ping 5".to_owned()]
            ]
        );
        assert_eq!(find("client-to-client"), vec![Vec::<String>::new()]);
        // Untouched options keep their line numbers.
        assert_eq!(
            out.iter().find(|l| l.name == "verb").map(|l| l.line),
            Some(4)
        );
    }

    #[test]
    fn no_layers_is_identity() {
        let base = options::parse_config("port 1194\n").unwrap();
        assert_eq!(
            layer(base.clone(), None, &[("HOME".into(), "/".into())]).unwrap(),
            base
        );
    }
}
