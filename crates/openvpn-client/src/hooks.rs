//! The tunnel's hooks in OpenVPN's order: the `up`, `route-up`, `ipchange`, `route-pre-down`
//! and `down` scripts with the matching plug-in calls, `up-restart`, `down-pre`, and
//! `user`/`group` once the tunnel is first up.
//!
//! ```text
//!  TunHooks::wrap(builder) ─▶ HookedTunBuilder ─establish─▶ HookedTun (closes with hooks)
//!
//!  new device (init):    inner.establish (tun, addresses, routes, DNS)
//!                        → PLUGIN_UP, up → PLUGIN_ROUTE_UP, route-up → user/group (first time)
//!  each connection:      on_event(Connected) → PLUGIN_IPCHANGE, ipchange IP PORT
//!  restart keeping the device, with up-restart:
//!                        on_event(Reconnecting) → PLUGIN_DOWN, down (restart)
//!                        on_event(Connected)    → PLUGIN_UP, up (restart)
//!  device closed:        PLUGIN_ROUTE_PREDOWN, route-pre-down → [down-pre: PLUGIN_DOWN, down]
//!                        → routes, DNS and tun go (after user/group the guardian, which is
//!                          still root, undoes routes and DNS) → [PLUGIN_DOWN, down]
//! ```
//!
//! Scripts run as `/bin/sh -c "CMD ARGS"` with OpenVPN's arguments (`dev tun_mtu 0
//! ifconfig_local ifconfig_netmask|ifconfig_remote init|restart`; `ipchange`: `ip port`) and
//! environment (`script_type`, `script_context`, `signal`, `dev`, `dev_type`, `tun_mtu`,
//! `ifconfig_*`, `route_*`, `foreign_option_N`, `trusted_ip`/`trusted_port`, `setenv` and
//! `setenv-safe` variables). They need `script-security 2`. As in OpenVPN, a refused or
//! failing `up` script or PLUGIN_UP stops the client; the others are logged. After
//! `user`/`group` the scripts run without root, as OpenVPN's do.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openvpn_plugin::PluginKind;
use openvpn_tun::route::{HALVES_V4, HALVES_V6};
use openvpn_tun::{LinuxTun, MemoryTun, PacketDevice, SystemTun, TunBatch};
use tracing::{error, info, warn};

use crate::plugins::ClientPlugins;
use crate::tun::{TunBuilder, TunSettings};
use crate::{ClientConfig, VpnEvent};

/// How long a closing device waits for the guardian to undo routes and DNS once privileges
/// were dropped.
const GUARDIAN_WAIT: Duration = Duration::from_secs(5);

/// `script_context`: a new device, or a restart that kept it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// The device was just created (or is going away for good).
    Init,
    /// A restart keeps the device (`up-restart`).
    Restart,
}

impl Context {
    fn as_str(self) -> &'static str {
        match self {
            Context::Init => "init",
            Context::Restart => "restart",
        }
    }
}

/// A device's interface name, for the scripts' `dev` (`None`: the profile's `dev`).
pub trait TunName {
    /// The interface name.
    fn tun_name(&self) -> Option<String>;
}

impl TunName for SystemTun {
    fn tun_name(&self) -> Option<String> {
        Some(self.name().to_owned())
    }
}

impl TunName for LinuxTun {
    fn tun_name(&self) -> Option<String> {
        Some(self.name().to_owned())
    }
}

impl TunName for crate::privsep::HelperTun {
    fn tun_name(&self) -> Option<String> {
        Some(self.name().to_owned())
    }
}

impl TunName for MemoryTun {
    fn tun_name(&self) -> Option<String> {
        None
    }
}

/// The profile's hooks and what they know of the tunnel; cheap to clone (shared state).
#[derive(Clone, Debug)]
pub struct TunHooks(Arc<Mutex<State>>);

#[derive(Debug)]
struct State {
    up: Option<String>,
    down: Option<String>,
    route_up: Option<String>,
    route_pre_down: Option<String>,
    ipchange: Option<String>,
    down_pre: bool,
    up_restart: bool,
    scripts_allowed: bool,
    user: Option<String>,
    group: Option<String>,
    /// `setenv` / `setenv-safe` pairs, `verb`, `daemon`: every script's environment.
    env: Vec<(String, String)>,
    /// The profile's `dev` (the name when the device has none of its own).
    dev: String,
    plugins: Option<ClientPlugins>,
    /// The device that is up: its name and settings.
    device: Option<(String, TunSettings)>,
    /// Devices created so far, and the count at the last connection.
    generation: u64,
    seen: u64,
    /// `down` (restart) ran; `up` (restart) is due at the next connection.
    restarting: bool,
    /// `signal` of the next closing hooks.
    signal: Option<String>,
    /// `user`/`group` were applied.
    dropped: bool,
}

impl TunHooks {
    /// The hooks of `cfg`, calling `plugins` (opened before) before each script.
    pub fn new(cfg: &ClientConfig, plugins: Option<ClientPlugins>) -> TunHooks {
        let mut env = vec![
            ("verb".to_owned(), cfg.verb.to_string()),
            ("daemon".to_owned(), u8::from(cfg.daemon).to_string()),
            (
                "daemon_log_redirect".to_owned(),
                u8::from(cfg.log.is_some()).to_string(),
            ),
        ];
        env.extend(cfg.setenv.iter().cloned());
        TunHooks(Arc::new(Mutex::new(State {
            up: cfg.up.clone(),
            down: cfg.down.clone(),
            route_up: cfg.route_up.clone(),
            route_pre_down: cfg.route_pre_down.clone(),
            ipchange: cfg.ipchange.clone(),
            down_pre: cfg.down_pre,
            up_restart: cfg.up_restart,
            scripts_allowed: cfg.script_security >= 2,
            user: cfg.user.clone(),
            group: cfg.group.clone(),
            env,
            dev: cfg.dev.clone(),
            plugins,
            device: None,
            generation: 0,
            seen: 0,
            restarting: false,
            signal: None,
            dropped: false,
        })))
    }

    /// `inner`, with the hooks run around each device it builds.
    pub fn wrap<B>(&self, inner: B) -> HookedTunBuilder<B> {
        HookedTunBuilder {
            inner,
            hooks: self.clone(),
        }
    }

    /// What the next closing hooks get as `signal` (`sigterm`, `sigusr1`, …).
    pub fn set_signal(&self, signal: &str) {
        self.lock().signal = Some(signal.to_owned());
    }

    /// Feeds the client's events: `Reconnecting` and `Connected` run the restart hooks
    /// (`up-restart`) and `ipchange`. Blocks while a script runs.
    pub fn on_event(&self, ev: &VpnEvent) {
        let mut st = self.lock();
        match ev {
            VpnEvent::Reconnecting { reason }
                if st.up_restart && !st.restarting && st.device.is_some() =>
            {
                if st.signal.is_none() {
                    st.signal = Some(signal_of(reason).to_owned());
                }
                st.restarting = true;
                let id = st.generation;
                st.device_down(Context::Restart, id, || {});
            }
            VpnEvent::Connected { server, .. } => {
                let kept = st.generation == st.seen;
                if std::mem::take(&mut st.restarting) && kept {
                    if let Some((dev, s)) = st.device.clone() {
                        if let Err(e) = st.device_up(&dev, &s, Context::Restart) {
                            error!("{e}");
                        }
                    }
                }
                st.seen = st.generation;
                st.ipchange(*server);
            }
            _ => {}
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// OpenVPN's `signal` text for a restart reason of [`VpnEvent::Reconnecting`].
fn signal_of(reason: &str) -> &'static str {
    if reason.contains("ping-restart") {
        "ping-restart"
    } else if reason.starts_with("server sent RESTART") {
        "server-pushed-connection-reset"
    } else if reason.starts_with("reconnect requested") {
        "sigusr1"
    } else if reason.starts_with("link error") {
        "connection-reset"
    } else {
        "soft-restart"
    }
}

impl State {
    /// The environment of a tunnel hook.
    fn env(&self, kind: &str, ctx: Context, dev: &str, s: &TunSettings) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.push(("script_type".into(), kind.into()));
        env.push(("script_context".into(), ctx.as_str().into()));
        if let Some(sig) = &self.signal {
            env.push(("signal".into(), sig.clone()));
        }
        env.push(("dev_type".into(), "tun".into()));
        env.extend(tun_env(dev, s));
        // On a restart OpenVPN leaves out what concerns routes: they are in place already.
        if ctx == Context::Init {
            let gw = openvpn_tun::Netlink::new()
                .default_gateways()
                .ok()
                .and_then(|g| g.v4)
                .and_then(|r| r.gateway);
            env.extend(route_env(s, gw));
        }
        env
    }

    /// Runs a script (`None`: not configured); an error says why it did not succeed.
    fn script(
        &self,
        kind: &str,
        cmd: Option<&String>,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<(), String> {
        let Some(cmd) = cmd else { return Ok(()) };
        let mut line = cmd.clone();
        for a in args {
            line.push(' ');
            line.push_str(&sh_quote(a));
        }
        if !self.scripts_allowed {
            let e = format!(
                "WARNING: Failed running command (--{kind}): disallowed by script-security setting (add 'script-security 2'): {line}"
            );
            warn!("{e}");
            return Err(e);
        }
        info!("{line}");
        let mut c = std::process::Command::new("/bin/sh");
        c.arg("-c").arg(&line).envs(env.iter().cloned());
        match c.status() {
            Ok(st) if st.success() => Ok(()),
            Ok(st) => Err(format!("{kind} script '{line}' exited with {st}")),
            Err(e) => Err(format!("{kind} script '{line}': {e}")),
        }
    }

    /// Calls `kind` of the modules that asked for it; false if one failed.
    fn plugin(&mut self, kind: PluginKind, args: &[String], env: &[(String, String)]) -> bool {
        self.plugins
            .as_mut()
            .is_none_or(|p| p.call(kind, args, env))
    }

    /// The device `dev` is up (init: just created, its routes in place; restart: kept).
    fn device_up(&mut self, dev: &str, s: &TunSettings, ctx: Context) -> Result<(), String> {
        let args = script_args(dev, s, ctx);
        let env = self.env("up", ctx, dev, s);
        if !self.plugin(PluginKind::Up, &args, &env) {
            return Err("ERROR: up/down plugin call failed (PLUGIN_UP)".into());
        }
        self.script("up", self.up.as_ref(), &args, &env)?;
        if ctx == Context::Restart {
            return Ok(());
        }
        self.device = Some((dev.to_owned(), s.clone()));
        self.generation += 1;
        let env = self.env("route-up", ctx, dev, s);
        if !self.plugin(PluginKind::RouteUp, &[], &env) {
            warn!("WARNING: route-up plugin call failed");
        }
        if let Err(e) = self.script("route-up", self.route_up.as_ref(), &[], &env) {
            warn!("{e}");
        }
        if !self.dropped && (self.user.is_some() || self.group.is_some()) {
            openvpn_tun::process::drop_privileges(self.user.as_deref(), self.group.as_deref())
                .map_err(|e| format!("cannot drop privileges (user/group): {e}"))?;
            self.dropped = true;
            info!(
                "dropped privileges: user {} group {} (restarts keep this tun device; routes and DNS are undone by the guardian)",
                self.user.as_deref().unwrap_or("-"),
                self.group.as_deref().unwrap_or("-")
            );
        }
        Ok(())
    }

    /// The device is going away (init: `close` drops it) or a restart keeps it (restart:
    /// `close` is not called). `id`: the closing device's generation (a device replaced
    /// already gets no hooks).
    fn device_down(&mut self, ctx: Context, id: u64, close: impl FnOnce()) {
        let Some((dev, s)) = self.device.clone().filter(|_| id == self.generation) else {
            close();
            return;
        };
        let args = script_args(&dev, &s, ctx);
        if ctx == Context::Init {
            let env = self.env("route-pre-down", ctx, &dev, &s);
            if !self.plugin(PluginKind::RoutePredown, &args, &env) {
                warn!("WARNING: route-pre-down plugin call failed");
            }
            if let Err(e) = self.script("route-pre-down", self.route_pre_down.as_ref(), &args, &env)
            {
                warn!("{e}");
            }
        }
        let env = self.env("down", ctx, &dev, &s);
        let run_down = |st: &mut State| {
            if !st.plugin(PluginKind::Down, &args, &env) {
                warn!("a plugin's PLUGIN_DOWN failed");
            }
            if let Err(e) = st.script("down", st.down.as_ref(), &args, &env) {
                warn!("{e}");
            }
        };
        if ctx == Context::Restart {
            run_down(self);
            self.signal = None;
            return;
        }
        if self.down_pre {
            run_down(self);
        }
        close();
        self.device = None;
        if openvpn_tun::process::privileges_dropped() {
            // The routes and DNS are still journaled (nobody here may undo them): the
            // guardian, still root, does it now.
            crate::guardian::finish(GUARDIAN_WAIT);
        }
        if !self.down_pre {
            run_down(self);
        }
        self.signal = None;
    }

    /// `ipchange IP PORT` (and PLUGIN_IPCHANGE) for a connection to `server`.
    fn ipchange(&mut self, server: SocketAddr) {
        if self.ipchange.is_none()
            && self
                .plugins
                .as_ref()
                .is_none_or(|p| !p.handles(PluginKind::IpChange))
        {
            return;
        }
        let ip = server.ip().to_canonical();
        let mut env = self.env.clone();
        env.push(("script_type".into(), "ipchange".into()));
        env.push((
            if ip.is_ipv4() {
                "trusted_ip"
            } else {
                "trusted_ip6"
            }
            .into(),
            ip.to_string(),
        ));
        env.push(("trusted_port".into(), server.port().to_string()));
        let args = [ip.to_string(), server.port().to_string()];
        if !self.plugin(PluginKind::IpChange, &args, &env) {
            warn!("WARNING: ipchange plugin call failed");
        }
        if let Err(e) = self.script("ipchange", self.ipchange.as_ref(), &args, &env) {
            warn!("{e}");
        }
    }
}

/// Builds devices with `inner` and runs the hooks around them ([`TunHooks::wrap`]).
#[derive(Debug)]
pub struct HookedTunBuilder<B> {
    inner: B,
    hooks: TunHooks,
}

impl<B> TunBuilder for HookedTunBuilder<B>
where
    B: TunBuilder,
    B::Device: TunName,
{
    type Device = HookedTun<B::Device>;

    async fn establish(&mut self, s: &TunSettings) -> Result<HookedTun<B::Device>, String> {
        let device = self.inner.establish(s).await?;
        let hooks = self.hooks.clone();
        let dev = device
            .tun_name()
            .unwrap_or_else(|| hooks.lock().dev.clone());
        let settings = s.clone();
        // Scripts and modules block: off the runtime's threads. On an error the device is
        // dropped here (its routes and DNS undone) without closing hooks.
        let id = tokio::task::spawn_blocking(move || {
            let mut st = hooks.lock();
            st.device_up(&dev, &settings, Context::Init)
                .map(|()| st.generation)
        })
        .await
        .map_err(|e| e.to_string())??;
        Ok(HookedTun {
            inner: Some(device),
            hooks: self.hooks.clone(),
            id,
        })
    }
}

/// A device whose closing runs `route-pre-down` and `down` around it ([`HookedTunBuilder`]).
#[derive(Debug)]
pub struct HookedTun<D> {
    /// `None` only while it is dropped.
    inner: Option<D>,
    hooks: TunHooks,
    /// Its generation (see [`State::device_down`]).
    id: u64,
}

fn closed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotConnected, "the tun device is closed")
}

impl<D: PacketDevice> PacketDevice for HookedTun<D> {
    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &self.inner {
            Some(d) => d.recv(buf).await,
            None => Err(closed()),
        }
    }

    async fn send(&self, pkt: &[u8]) -> std::io::Result<usize> {
        match &self.inner {
            Some(d) => d.send(pkt).await,
            None => Err(closed()),
        }
    }

    async fn recv_batch(&self, batch: &mut TunBatch) -> std::io::Result<()> {
        match &self.inner {
            Some(d) => d.recv_batch(batch).await,
            None => Err(closed()),
        }
    }

    async fn send_batch(&self, batch: &mut TunBatch) -> std::io::Result<()> {
        match &self.inner {
            Some(d) => d.send_batch(batch).await,
            None => Err(closed()),
        }
    }
}

impl<D> Drop for HookedTun<D> {
    fn drop(&mut self) {
        let inner = self.inner.take();
        self.hooks
            .lock()
            .device_down(Context::Init, self.id, move || drop(inner));
    }
}

/// The arguments OpenVPN appends to `up`, `down` and `route-pre-down` (and passes to the
/// matching modules): `dev tun_mtu 0 ifconfig_local ifconfig_netmask|ifconfig_remote
/// init|restart` (the `0` stands where 2.5 passed link_mtu).
pub fn script_args(dev: &str, s: &TunSettings, ctx: Context) -> Vec<String> {
    let (local, remote) = ifconfig(s);
    vec![
        dev.to_owned(),
        s.mtu.to_string(),
        "0".to_owned(),
        local,
        remote,
        ctx.as_str().to_owned(),
    ]
}

/// `ifconfig_local` and the netmask (subnet) or the peer (net30/p2p: a /32 address).
fn ifconfig(s: &TunSettings) -> (String, String) {
    match s.ipv4 {
        Some((a, 32)) => (
            a.to_string(),
            s.route_details
                .vpn_gateway
                .map(|g| g.to_string())
                .unwrap_or_default(),
        ),
        Some((a, p)) => (a.to_string(), netmask(p).to_string()),
        None => (String::new(), String::new()),
    }
}

fn netmask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(prefix.min(32)))
            .unwrap_or(0),
    )
}

/// The tunnel part of a hook's environment: `dev`, `tun_mtu`, `ifconfig_local` with
/// `ifconfig_netmask` (subnet) or `ifconfig_remote` (net30/p2p), `ifconfig_ipv6_local` /
/// `_netbits`, and the DNS settings as `foreign_option_N` (`dhcp-option DNS …`, `dhcp-option
/// DOMAIN …`, what update-resolv-conf style scripts read).
pub fn tun_env(dev: &str, s: &TunSettings) -> Vec<(String, String)> {
    let mut env = vec![
        ("dev".to_owned(), dev.to_owned()),
        ("tun_mtu".to_owned(), s.mtu.to_string()),
    ];
    if let Some((_, p)) = s.ipv4 {
        let (local, other) = ifconfig(s);
        env.push(("ifconfig_local".to_owned(), local));
        let name = if p == 32 {
            "ifconfig_remote"
        } else {
            "ifconfig_netmask"
        };
        if !other.is_empty() {
            env.push((name.to_owned(), other));
        }
    }
    if let Some((a, p)) = s.ipv6 {
        env.push(("ifconfig_ipv6_local".to_owned(), a.to_string()));
        env.push(("ifconfig_ipv6_netbits".to_owned(), p.to_string()));
    }
    let dns = s.dns_servers.iter().map(|d| format!("dhcp-option DNS {d}"));
    let domains = s
        .dns_domains
        .iter()
        .map(|d| format!("dhcp-option DOMAIN {d}"));
    for (i, o) in dns.chain(domains).enumerate() {
        env.push((format!("foreign_option_{}", i + 1), o));
    }
    env
}

/// The route part of an `init` hook's environment, as OpenVPN numbers it:
/// `route_vpn_gateway`, `route_net_gateway` (the default gateway outside the tunnel),
/// `route_network_N` / `route_netmask_N` / `route_gateway_N` / `route_metric_N` for the IPv4
/// routes (pushed and profile ones, into the tunnel and around it), `route_ipv6_network_N`
/// (`NET/BITS`) / `route_ipv6_gateway_N` / `route_ipv6_metric_N`, `redirect_gateway` and
/// `route_redirect_gateway_ipv4`/`_ipv6` (1, or 2 with `block-local`). The halves that
/// `redirect-gateway` and `block-ipv4`/`-ipv6` add are not routes of the list, as in OpenVPN.
pub fn route_env(s: &TunSettings, net_gateway: Option<IpAddr>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: String, v: String| env.push((k, v));
    let vpn = s.route_details.vpn_gateway;
    if let Some(g) = vpn {
        set("route_vpn_gateway".into(), g.to_string());
    }
    if let Some(g) = net_gateway.filter(IpAddr::is_ipv4) {
        set("route_net_gateway".into(), g.to_string());
    }
    let redirect = s.redirect.unwrap_or_default();
    let metric = |net: IpAddr, p: u8| s.metric_of(net, p).or(s.route_metric);
    let mut n = 0;
    for &(net, p) in &s.routes_v4 {
        if (redirect.ipv4 || s.block_ipv4) && HALVES_V4.contains(&(net, p)) {
            continue;
        }
        if p == 32 && Some(net) == vpn {
            continue; // the net30 peer itself
        }
        n += 1;
        set(format!("route_network_{n}"), net.to_string());
        set(format!("route_netmask_{n}"), netmask(p).to_string());
        if let Some(g) = vpn {
            set(format!("route_gateway_{n}"), g.to_string());
        }
        if let Some(m) = metric(net.into(), p) {
            set(format!("route_metric_{n}"), m.to_string());
        }
    }
    let mut n6 = 0;
    for &(net, p) in &s.routes_v6 {
        if (redirect.ipv6 || s.block_ipv6) && HALVES_V6.contains(&(net, p)) {
            continue;
        }
        n6 += 1;
        set(format!("route_ipv6_network_{n6}"), format!("{net}/{p}"));
        if let Some(m) = metric(net.into(), p) {
            set(format!("route_ipv6_metric_{n6}"), m.to_string());
        }
    }
    for r in &s.route_details.outside {
        let gw = r.gateway.or(net_gateway.filter(|_| r.dest.is_ipv4()));
        if r.dest.is_ipv4() {
            n += 1;
            set(format!("route_network_{n}"), r.dest.to_string());
            set(format!("route_netmask_{n}"), netmask(r.prefix).to_string());
            if let Some(g) = gw {
                set(format!("route_gateway_{n}"), g.to_string());
            }
            if let Some(m) = r.metric {
                set(format!("route_metric_{n}"), m.to_string());
            }
        } else {
            n6 += 1;
            set(
                format!("route_ipv6_network_{n6}"),
                format!("{}/{}", r.dest, r.prefix),
            );
            if let Some(g) = gw {
                set(format!("route_ipv6_gateway_{n6}"), g.to_string());
            }
            if let Some(m) = r.metric {
                set(format!("route_ipv6_metric_{n6}"), m.to_string());
            }
        }
    }
    set(
        "redirect_gateway".into(),
        u8::from(redirect.ipv4).to_string(),
    );
    let level = if redirect.block_local { "2" } else { "1" };
    if redirect.ipv4 && s.redirect.is_some() {
        set("route_redirect_gateway_ipv4".into(), level.into());
    }
    if redirect.ipv6 {
        set("route_redirect_gateway_ipv6".into(), level.into());
    }
    env
}

/// `'a'` for `/bin/sh` (a `'` inside becomes `'\''`).
fn sh_quote(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:=@%+,".contains(c))
    {
        return a.to_owned();
    }
    format!("'{}'", a.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    /// A device that notes its closing in the scripts' log.
    #[derive(Debug)]
    struct TestTun(PathBuf);

    impl PacketDevice for TestTun {
        async fn recv(&self, _buf: &mut [u8]) -> std::io::Result<usize> {
            std::future::pending().await
        }
        async fn send(&self, pkt: &[u8]) -> std::io::Result<usize> {
            Ok(pkt.len())
        }
    }

    impl TunName for TestTun {
        fn tun_name(&self) -> Option<String> {
            Some("tun-t".into())
        }
    }

    impl Drop for TestTun {
        fn drop(&mut self) {
            append(&self.0, "tun closed");
        }
    }

    struct TestBuilder(PathBuf);

    impl TunBuilder for TestBuilder {
        type Device = TestTun;
        async fn establish(&mut self, _s: &TunSettings) -> Result<TestTun, String> {
            Ok(TestTun(self.0.clone()))
        }
    }

    fn append(log: &Path, line: &str) {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log");
        writeln!(f, "{line}").expect("write");
    }

    /// A scratch directory with a script that logs its type, context, arguments and a few
    /// variables.
    fn lab(tag: &str) -> (PathBuf, PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("ovrs-hooks-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("log");
        let script = dir.join("hook.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$script_type ${{script_context:-}} $* sig=${{signal:-}} rn1=${{route_network_1:-}}/${{route_netmask_1:-}} gw1=${{route_gateway_1:-}} m1=${{route_metric_1:-}} rn2=${{route_network_2:-}} v6=${{route_ipv6_network_1:-}} vpngw=${{route_vpn_gateway:-}} safe=${{OPENVPN_SAFE:-}} fo1=${{foreign_option_1:-}} tip=${{trusted_ip:-}}:${{trusted_port:-}}\" >> '{}'\n",
                log.display()
            ),
        )
        .expect("script");
        let cmd = format!("/bin/sh {}", script.display());
        (dir, log, cmd)
    }

    fn profile(cmd: &str, extra: &str) -> ClientConfig {
        let text = format!(
            "client\nremote 192.0.2.1\n<ca>\nx\n</ca>\nscript-security 2\nsetenv-safe SAFE yes\n\
             up \"{cmd}\"\nroute-up \"{cmd}\"\nroute-pre-down \"{cmd}\"\ndown \"{cmd}\"\n{extra}"
        );
        ClientConfig::from_ovpn(&text, Path::new("/")).expect("profile")
    }

    fn settings() -> TunSettings {
        let mut s = TunSettings {
            ipv4: Some((Ipv4Addr::new(10, 8, 0, 2), 24)),
            routes_v4: vec![(Ipv4Addr::new(10, 9, 0, 0), 16)],
            routes_v6: vec![("2001:db8:9::".parse().expect("v6"), 48)],
            dns_servers: vec![IpAddr::from([10, 8, 0, 1])],
            mtu: 1500,
            route_metric: Some(20),
            ..Default::default()
        };
        s.route_details.vpn_gateway = Some(Ipv4Addr::new(10, 8, 0, 1));
        s
    }

    fn lines(log: &Path) -> Vec<String> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// up (args as OpenVPN: dev tun_mtu 0 local netmask init) and route-up (route_*
    /// variables) when the device is built; route-pre-down, then the device closes, then
    /// down; with down-pre, down comes before the device closes.
    #[tokio::test]
    async fn up_route_up_then_route_pre_down_and_down_around_the_close() {
        for down_pre in [false, true] {
            let (dir, log, cmd) = lab(&format!("order-{down_pre}"));
            let cfg = profile(&cmd, if down_pre { "down-pre\n" } else { "" });
            let hooks = TunHooks::new(&cfg, None);
            let mut b = hooks.wrap(TestBuilder(log.clone()));
            let dev = b.establish(&settings()).await.expect("establish");
            let up = lines(&log);
            assert_eq!(up.len(), 2, "{up:?}");
            assert!(
                up[0].starts_with(
                    "up init tun-t 1500 0 10.8.0.2 255.255.255.0 init sig= rn1=10.9.0.0/255.255.0.0 gw1=10.8.0.1 m1=20 rn2= v6=2001:db8:9::/48 vpngw=10.8.0.1 safe=yes fo1=dhcp-option DNS 10.8.0.1"
                ),
                "{}",
                up[0]
            );
            assert!(
                up[1].starts_with("route-up init  sig= rn1=10.9.0.0/255.255.0.0"),
                "{}",
                up[1]
            );
            hooks.set_signal("sigterm");
            drop(dev);
            let all = lines(&log);
            let tail: Vec<&str> = all[2..]
                .iter()
                .map(|l| l.split(" sig=").next().unwrap_or(""))
                .collect();
            let pre = "route-pre-down init tun-t 1500 0 10.8.0.2 255.255.255.0 init";
            let down = "down init tun-t 1500 0 10.8.0.2 255.255.255.0 init";
            let want = if down_pre {
                [pre, down, "tun closed"]
            } else {
                [pre, "tun closed", down]
            };
            assert_eq!(tail, want, "down-pre {down_pre}");
            assert!(all[2].contains("sig=sigterm"), "{}", all[2]);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// up-restart: a restart that keeps the device runs down, then up, with context
    /// `restart` and without the route variables; ipchange gets `ip port` at each
    /// connection. Without up-restart a restart runs neither.
    #[tokio::test]
    async fn up_restart_and_ipchange() {
        for up_restart in [true, false] {
            let (dir, log, cmd) = lab(&format!("restart-{up_restart}"));
            let extra = format!(
                "ipchange \"{cmd}\"\n{}",
                if up_restart { "up-restart\n" } else { "" }
            );
            let hooks = TunHooks::new(&profile(&cmd, &extra), None);
            let mut b = hooks.wrap(TestBuilder(log.clone()));
            let dev = b.establish(&settings()).await.expect("establish");
            let connected = VpnEvent::Connected {
                server: "198.51.100.7:1194".parse().expect("addr"),
                settings: settings(),
                cipher: "AES-256-GCM",
            };
            hooks.on_event(&connected);
            hooks.on_event(&VpnEvent::Reconnecting {
                reason: "reconnect requested".into(),
            });
            // A second notice while reconnecting runs nothing more.
            hooks.on_event(&VpnEvent::Reconnecting {
                reason: "no remote answered; retrying in 1 s".into(),
            });
            hooks.on_event(&connected);
            let all = lines(&log);
            let short: Vec<&str> = all
                .iter()
                .map(|l| l.split(" rn2=").next().unwrap_or(""))
                .collect();
            let ip = "ipchange  198.51.100.7 1194 sig= rn1=/ gw1= m1=";
            let mut want = vec![
                "up init tun-t 1500 0 10.8.0.2 255.255.255.0 init sig= rn1=10.9.0.0/255.255.0.0 gw1=10.8.0.1 m1=20",
                "route-up init  sig= rn1=10.9.0.0/255.255.0.0 gw1=10.8.0.1 m1=20",
                ip,
            ];
            if up_restart {
                want.extend([
                    "down restart tun-t 1500 0 10.8.0.2 255.255.255.0 restart sig=sigusr1 rn1=/ gw1= m1=",
                    "up restart tun-t 1500 0 10.8.0.2 255.255.255.0 restart sig= rn1=/ gw1= m1=",
                ]);
            }
            want.push(ip);
            assert_eq!(short, want, "up-restart {up_restart}");
            assert!(all[2].ends_with("tip=198.51.100.7:1194"), "{}", all[2]);
            drop(dev);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// A failing `up` (or one script-security refuses) stops the device from coming up, as
    /// OpenVPN's fatal error does; the device is closed without closing hooks.
    #[tokio::test]
    async fn a_failing_or_refused_up_script_fails_the_tunnel() {
        let (dir, log, _) = lab("fail");
        let mut cfg = profile("/bin/false", "");
        cfg.route_up = None;
        let hooks = TunHooks::new(&cfg, None);
        let e = hooks
            .wrap(TestBuilder(log.clone()))
            .establish(&settings())
            .await
            .expect_err("up fails");
        assert!(e.contains("up script") && e.contains("exited"), "{e}");
        assert_eq!(lines(&log), ["tun closed"]);
        cfg.up = Some("/bin/true".into());
        cfg.script_security = 1;
        let hooks = TunHooks::new(&cfg, None);
        let e = hooks
            .wrap(TestBuilder(log.clone()))
            .establish(&settings())
            .await
            .expect_err("refused");
        assert!(e.contains("script-security"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn route_env_lists_pushed_and_profile_routes_not_the_halves() {
        use openvpn_tun::route::{OutsideRoute, Redirect};
        let mut s = settings();
        s.redirect = Some(Redirect::from_flags(&["def1", "block-local"]));
        s.routes_v4.extend(HALVES_V4);
        s.block_ipv6 = true;
        s.routes_v6.extend(HALVES_V6);
        s.route_details
            .metrics
            .push((IpAddr::from([10, 9, 0, 0]), 16, 7));
        s.route_details.outside.push(OutsideRoute {
            dest: IpAddr::from([192, 168, 1, 0]),
            prefix: 24,
            gateway: None,
            metric: None,
        });
        let env = route_env(&s, Some(IpAddr::from([192, 0, 2, 1])));
        let text: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            text,
            [
                "route_vpn_gateway=10.8.0.1",
                "route_net_gateway=192.0.2.1",
                "route_network_1=10.9.0.0",
                "route_netmask_1=255.255.0.0",
                "route_gateway_1=10.8.0.1",
                "route_metric_1=7",
                "route_ipv6_network_1=2001:db8:9::/48",
                "route_ipv6_metric_1=20",
                "route_network_2=192.168.1.0",
                "route_netmask_2=255.255.255.0",
                "route_gateway_2=192.0.2.1",
                "redirect_gateway=1",
                "route_redirect_gateway_ipv4=2",
            ]
        );
        // net30: the peer is ifconfig_remote (and the 5th argument), not a listed route.
        let net30 = TunSettings {
            ipv4: Some((Ipv4Addr::new(10, 8, 0, 6), 32)),
            routes_v4: vec![(Ipv4Addr::new(10, 8, 0, 5), 32)],
            mtu: 1500,
            route_details: Box::new(crate::tun::RouteDetails {
                vpn_gateway: Some(Ipv4Addr::new(10, 8, 0, 5)),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(
            route_env(&net30, None)
                .iter()
                .all(|(k, _)| k != "route_network_1")
        );
        assert_eq!(
            script_args("tun0", &net30, Context::Init)[3..],
            ["10.8.0.6", "10.8.0.5", "init"]
        );
        assert!(tun_env("tun0", &net30).contains(&("ifconfig_remote".into(), "10.8.0.5".into())));
        assert_eq!(sh_quote("a b'c"), "'a b'\\''c'");
        assert_eq!(sh_quote("tun0"), "tun0");
    }
}
