//! The systemd-resolved case ([`Scenario::Resolved`]): our client on ovrs-cli applies pushed
//! DNS through a real systemd-resolved over D-Bus, and takes it back on exit.
//!
//! ```text
//! ip netns exec ovrs-cli unshare --mount sandbox.sh <our client> --config client1.conf
//!   sandbox.sh (a private mount namespace, so nothing of the host changes):
//!     tmpfs on /run/dbus and /run/systemd, /etc/passwd + /etc/group with a systemd-resolve user
//!     dbus-daemon (system bus, allow-all policy) and systemd-resolved, both in ovrs-cli
//!     exec the client  (same pid all the way: ip → unshare → bash → client)
//! ```
//!
//! The resolved binary comes from Debian's `systemd-resolved` package, downloaded and
//! unpacked under `target/resolved-pkg` (never installed: installing it would take over the
//! host's /etc/resolv.conf). While connected, `resolvectl` (run in the client's namespaces
//! with nsenter) must show the pushed server, the pushed domain and the root routing domain
//! `~.` with default-route on the tun link, and ovrs-cli's resolv.conf must be untouched;
//! after SIGTERM resolved must have been told to revert the link.
//!
//! A child module of `interop`, so it uses the harness's private helpers directly.

use std::path::Path;

use super::*;

/// The client's tun device (ovpn-conf.sh's default for clients).
const TUN: &str = "ovrs-tun-c";
/// ovrs-cli's resolv.conf as `ip netns exec` bind-mounts it over /etc/resolv.conf; the
/// client must leave it alone when resolved is there ([`NetGuard`] removes the directory).
const RESOLV: &str = "/etc/netns/ovrs-cli/resolv.conf";
const RESOLV_TEXT: &str = "# ovrs-cli resolv.conf (resolved case): must stay as written\n\
                           nameserver 192.0.2.53\n";

/// The private mount namespace with dbus-daemon and systemd-resolved; execs its arguments.
const SANDBOX: &str = r#"#!/bin/bash
# usage: sandbox.sh DIR PKG CMD...   (run under `unshare --mount`)
set -eu
dir=$1 pkg=$2; shift 2
mount --make-rprivate /
mount -t tmpfs tmpfs /run/dbus 2>/dev/null || { mkdir -p /run/dbus; mount -t tmpfs tmpfs /run/dbus; }
mount -t tmpfs tmpfs /run/systemd
mkdir -p /run/systemd/resolve
chown 991:991 /run/systemd/resolve
mount --bind "$dir/passwd" /etc/passwd
mount --bind "$dir/group" /etc/group
dbus-daemon --config-file="$dir/bus.conf" --fork --print-pid > "$dir/dbus.pid"
"$pkg/lib/systemd/systemd-resolved" > "$dir/resolved.log" 2>&1 &
echo $! > "$dir/resolved.pid"
for _ in $(seq 100); do
  busctl --system call org.freedesktop.resolve1 /org/freedesktop/resolve1 \
    org.freedesktop.DBus.Peer Ping > /dev/null 2>&1 && break
  sleep 0.05
done
echo "sandbox: dbus-daemon $(cat "$dir/dbus.pid"), systemd-resolved $(cat "$dir/resolved.pid") up"
exec "$@"
"#;

/// A system bus that lets root do anything (only the test's own processes connect to it).
const BUS_CONF: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#;

pub(super) fn run(env: &Env, case: &Case, cd: &CaseDir) -> Result<()> {
    ensure!(
        case.client == Impl::Ours,
        "the resolved case runs our client binary"
    );
    let pkg = resolved_package(env)?;
    let client_bin = env
        .ours
        .1
        .clone()
        .context("the resolved case needs target/release/openvpn-client")?;

    // The sandbox's files.
    let sb = cd.dir.join("sandbox");
    fs::create_dir_all(&sb)?;
    fs::write(sb.join("bus.conf"), BUS_CONF)?;
    fs::write(sb.join("sandbox.sh"), SANDBOX)?;
    let mut passwd = fs::read_to_string("/etc/passwd")?;
    if !passwd.lines().any(|l| l.starts_with("systemd-resolve:")) {
        passwd.push_str("systemd-resolve:x:991:991:resolve:/:/usr/sbin/nologin\n");
    }
    fs::write(sb.join("passwd"), passwd)?;
    let mut group = fs::read_to_string("/etc/group")?;
    if !group.lines().any(|l| l.starts_with("systemd-resolve:")) {
        group.push_str("systemd-resolve:x:991:\n");
    }
    fs::write(sb.join("group"), group)?;

    let _net = NetGuard;
    let _daemons = Daemons(sb.clone());
    let resolv_dir = Path::new(RESOLV)
        .parent()
        .context("resolv.conf has a directory")?;
    fs::create_dir_all(resolv_dir)?;
    fs::write(RESOLV, RESOLV_TEXT)?;

    let mut procs = Procs(Vec::new());
    let server = procs.start_server(env, case, cd)?;

    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", CLIENT_NS, "unshare", "--mount", "bash"])
        .arg(sb.join("sandbox.sh"))
        .arg(&sb)
        .arg(&pkg)
        .arg(&client_bin)
        .arg("--config")
        .arg(&cd.client_conf)
        .env("OPENVPN_RS_RUN_DIR", cd.dir.join("run"));
    let client = procs.spawn(
        "client (with systemd-resolved)",
        cmd,
        [
            cd.client_conf.with_extension("log"),
            cd.dir.join("client.out"),
        ],
    )?;
    match procs.wait_init(client, CLIENT_WAIT)? {
        Waited::Init => {}
        other => bail!("client {other}\n{}", procs.tails()),
    }
    ping_ok(&cd.dir, CLIENT_NS, PING_TARGETS[0], &procs)?;

    let pid = procs.pid(client)?;
    let resolvectl = |args: &[&str]| -> Result<String> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={pid}"))
            .args(["--mount", "--net"])
            .arg(pkg.join("usr/bin/resolvectl"))
            .args(args);
        output(&mut cmd)
    };
    let dns = resolvectl(&["dns", TUN])?;
    let domain = resolvectl(&["domain", TUN])?;
    let default_route = resolvectl(&["default-route", TUN])?;
    println!(
        "interop: resolvectl while connected:\n  {}\n  {}\n  {}",
        dns.trim(),
        domain.trim(),
        default_route.trim()
    );
    ensure!(
        dns.contains("10.8.0.1"),
        "resolved has not got the pushed DNS server for {TUN}: {dns}\n{}",
        procs.tails()
    );
    let words: Vec<&str> = domain
        .split_once("):")
        .map_or("", |(_, d)| d)
        .split_whitespace()
        .collect();
    ensure!(
        words == ["vpn.test", "~."],
        "resolved's domains for {TUN} should be [vpn.test, ~.] (pushed DOMAIN, and the root \
         routing domain since the tunnel takes the default route), got {words:?}"
    );
    ensure!(
        default_route.trim_end().ends_with("yes"),
        "{TUN} is not resolved's default DNS route: {default_route}"
    );
    let resolv = fs::read_to_string(RESOLV)?;
    ensure!(
        resolv == RESOLV_TEXT,
        "the client rewrote resolv.conf although resolved runs:\n{resolv}"
    );

    // A clean exit must hand the link back to resolved (RevertLink) before the tun goes.
    let before_exit = fs::read_to_string(sb.join("resolved.log")).unwrap_or_default();
    stop(procs.0.get_mut(client).context("no such process")?);
    let log = fs::read_to_string(sb.join("resolved.log")).unwrap_or_default();
    let after: &str = log.get(before_exit.len()..).unwrap_or("");
    println!(
        "interop: resolved's log after the client's exit:\n{}",
        after.trim_end()
    );
    let client_log = procs.texts(client)?.join("\n");
    ensure!(
        client_log.contains("RevertLink") || after.contains("Bus client reverted"),
        "the client did not revert its resolved link on exit\n{}",
        procs.tails()
    );
    ensure!(
        fs::read_to_string(RESOLV)? == RESOLV_TEXT,
        "resolv.conf changed"
    );
    println!("interop: systemd-resolved had the pushed DNS while connected and was reverted");
    procs.check_logs(&[(server, case.server_log_has)])
}

/// Stops the sandbox's dbus-daemon and systemd-resolved (by the pids it wrote).
struct Daemons(PathBuf);

impl Drop for Daemons {
    fn drop(&mut self) {
        for name in ["resolved.pid", "dbus.pid"] {
            if let Ok(pid) = fs::read_to_string(self.0.join(name)) {
                let pid = pid.trim();
                if !pid.is_empty() {
                    let _ = Command::new("kill").args(["-TERM", pid]).status();
                }
            }
        }
    }
}

/// `target/resolved-pkg`: Debian's systemd-resolved package unpacked (downloaded once).
fn resolved_package(env: &Env) -> Result<PathBuf> {
    let dir = env.out.parent().unwrap_or(&env.out).join("resolved-pkg");
    let bin = dir.join("lib/systemd/systemd-resolved");
    if bin.exists() {
        return Ok(dir);
    }
    fs::create_dir_all(&dir)?;
    output(
        Command::new("apt-get")
            .args(["download", "systemd-resolved"])
            .current_dir(&dir),
    )
    .context("cannot download Debian's systemd-resolved package (apt-get download)")?;
    let deb = fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
    ensure!(bin.exists(), "{} is not in the package", bin.display());
    Ok(dir)
}
