//! Two network namespaces joined by a veth pair, for `bench` and `load`, plus the small
//! command helpers both use.
//!
//! ```text
//! <srv> <srv_addr>/24 on <veth_s>  <--veth-->  <cli> <cli_addr>/24 on <veth_c>
//! ```
//!
//! [`NetPair::up`] first deletes leftovers of an interrupted run (only these names); dropping
//! the pair deletes both namespaces. Processes still inside are reported, never killed: the
//! callers stop their own processes by pid before.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Names and addresses of one namespace pair.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NetPairSpec {
    /// Label for messages (`bench`, `load`).
    pub tool: &'static str,
    pub srv: &'static str,
    pub cli: &'static str,
    pub veth_s: &'static str,
    pub veth_c: &'static str,
    pub srv_addr: &'static str,
    pub cli_addr: &'static str,
}

/// The namespace pair, deleted on drop.
pub(crate) struct NetPair(NetPairSpec);

impl NetPair {
    /// Creates both namespaces, the veth link, addresses, and brings everything up.
    pub(crate) fn up(spec: NetPairSpec) -> Result<NetPair> {
        delete(&spec);
        let pair = NetPair(spec);
        let s = spec;
        let s_addr = format!("{}/24", s.srv_addr);
        let c_addr = format!("{}/24", s.cli_addr);
        let cmds: &[&[&str]] = &[
            &["ip", "netns", "add", s.srv],
            &["ip", "netns", "add", s.cli],
            &[
                "ip", "-n", s.srv, "link", "add", s.veth_s, "type", "veth", "peer", "name",
                s.veth_c,
            ],
            &["ip", "-n", s.srv, "link", "set", s.veth_c, "netns", s.cli],
            &["ip", "-n", s.srv, "link", "set", "lo", "up"],
            &["ip", "-n", s.cli, "link", "set", "lo", "up"],
            &["ip", "-n", s.srv, "addr", "add", &s_addr, "dev", s.veth_s],
            &["ip", "-n", s.cli, "addr", "add", &c_addr, "dev", s.veth_c],
            &["ip", "-n", s.srv, "link", "set", s.veth_s, "up"],
            &["ip", "-n", s.cli, "link", "set", s.veth_c, "up"],
        ];
        for c in cmds {
            println!("+ {}", c.join(" "));
            quiet(Command::new(c[0]).args(&c[1..]))?;
        }
        Ok(pair)
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        delete(&self.0);
    }
}

/// Deletes the pair's namespaces if they exist.
fn delete(spec: &NetPairSpec) {
    let list = Command::new("ip").args(["netns", "list"]).output();
    let list = list.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    for ns in [spec.cli, spec.srv] {
        let present = list
            .as_ref()
            .is_ok_and(|l| l.lines().any(|x| x.split_whitespace().next() == Some(ns)));
        if !present {
            continue;
        }
        if let Ok(p) = Command::new("ip").args(["netns", "pids", ns]).output() {
            let p = String::from_utf8_lossy(&p.stdout).replace('\n', " ");
            if !p.trim().is_empty() {
                println!(
                    "{}: warning: {ns} still has processes ({p}); not ours to kill",
                    spec.tool
                );
            }
        }
        println!("+ ip netns del {ns}");
        let _ = Command::new("ip").args(["netns", "del", ns]).status();
    }
}

/// Runs a command, failing with its output if it fails.
pub(crate) fn quiet(cmd: &mut Command) -> Result<()> {
    let shown = crate::show(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{shown}`"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `program` on PATH (or in /usr/sbin, /sbin).
pub(crate) fn which(program: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("'{program}' not found on PATH"))
}
