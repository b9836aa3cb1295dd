//! `plugin MODULE [ARGS…]` on the server: the loaded modules in config order, and the hook
//! jobs they take part in, off the packet path.
//!
//! ```text
//!  start (root, before user/group):  PluginChain::load(cfg) ──▶ each module opened
//!  tun configured / torn down:       chain.tun_hook(Up | Down)
//!  core ──ScriptJob──▶ runtime (spawn_blocking) ──▶ run_job: modules of the kind, in order,
//!                                                   then the job's script (if any)
//!                                                   ──JobResult──▶ core (as for scripts)
//! ```
//!
//! OpenVPN's order: every module that asked for the call, in config order, then the script;
//! for a decision (auth-user-pass-verify, client-connect) all must succeed. A deferred
//! authentication is decided through `auth_control_file` as for a deferred script (one module
//! at most may defer); a deferred `CLIENT_CONNECT` through `client_connect_deferred_file`.
//! A `CLIENT_CONNECT_V2` module's returned `config` text is applied like the client-connect
//! script's file. Per-client contexts are keyed by the connection's generation and given
//! back after `client-disconnect` (or [`JobKind::ClientGone`]). Not called: `TLS_VERIFY` and
//! `TLS_FINAL` (the TLS layer has no per-depth hook yet), `IPCHANGE`, `ROUTE_UP`,
//! `ROUTE_PREDOWN`, and deferred `CLIENT_CONNECT_V2`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use openvpn_plugin::{CallStatus, ClientContext, Plugin, PluginError, PluginKind, TypeMask};
use tracing::{debug, error, info, warn};

use crate::config::ServerConfig;
use crate::scripts::{self, Deferred, JobKind, JobResult, ScriptJob};

/// How many gone clients each module remembers, so that a late call for one of them does not
/// make it a new context that nobody would give back.
const GONE_MEMORY: usize = 1024;

/// One module and its per-client contexts, used only under its lock (so one thread at a time
/// calls into the module, and a context is never used by two calls at once).
struct Slot {
    plugin: Plugin,
    clients: HashMap<u64, ClientContext>,
    gone: VecDeque<u64>,
}

impl Slot {
    fn call(
        &mut self,
        kind: PluginKind,
        args: &[String],
        env: &[(String, String)],
        client: Option<u64>,
    ) -> Result<openvpn_plugin::CallOutcome, PluginError> {
        let per_client =
            client.filter(|g| self.plugin.has_client_contexts() && !self.gone.contains(g));
        let ctx = per_client.map(|g| {
            self.clients
                .remove(&g)
                .unwrap_or_else(|| self.plugin.new_client())
        });
        let r = self.plugin.call(kind, args, env, ctx.as_ref());
        if let (Some(g), Some(c)) = (per_client, ctx) {
            self.clients.insert(g, c);
        }
        r
    }

    fn forget(&mut self, generation: u64) {
        if !self.plugin.has_client_contexts() {
            return;
        }
        if let Some(c) = self.clients.remove(&generation) {
            if let Err(e) = self.plugin.drop_client(c) {
                warn!("{e}");
            }
        }
        self.gone.push_back(generation);
        if self.gone.len() > GONE_MEMORY {
            self.gone.pop_front();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        for (_, c) in self.clients.drain() {
            let _ = self.plugin.drop_client(c);
        }
    }
}

/// A module's slot with what is known of it without taking its lock.
struct Module {
    mask: TypeMask,
    contexts: bool,
    slot: Mutex<Slot>,
}

/// The answer of all modules that asked for a call.
#[derive(Debug, Default)]
pub struct ChainOutcome {
    /// Failure if any failed; else deferred if any deferred; else success.
    pub status: Option<CallStatus>,
    /// How many modules deferred.
    pub deferred: usize,
    /// Their returned lists, in config order.
    pub returned: Vec<(String, String)>,
}

impl ChainOutcome {
    /// Success (also when no module asked for the call).
    fn ok(&self) -> bool {
        matches!(self.status, None | Some(CallStatus::Success))
    }
}

/// The loaded modules, in config order. Shared (`Arc`) by the workers; every call blocks,
/// so it is made on a blocking thread, never on the packet path.
pub struct PluginChain {
    modules: Vec<Module>,
    /// `setenv` pairs and process variables every call's environment starts with.
    base_env: Vec<(String, String)>,
}

impl std::fmt::Debug for PluginChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginChain")
            .field("modules", &self.modules.len())
            .finish_non_exhaustive()
    }
}

impl PluginChain {
    /// Opens the `plugin` lines of `cfg` in order (`None` without any). Run it before
    /// dropping privileges: modules may start helpers that keep root (down-root, auth-pam).
    pub fn load(cfg: &ServerConfig) -> Result<Option<Arc<PluginChain>>, PluginError> {
        if cfg.plugins.is_empty() {
            return Ok(None);
        }
        let mut base_env = cfg.setenv.clone();
        base_env.push(("verb".into(), cfg.verb.to_string()));
        base_env.push(("daemon".into(), u8::from(cfg.daemon).to_string()));
        base_env.push(("daemon_log_redirect".into(), "0".into()));
        let mut modules = Vec::new();
        for (name, args) in &cfg.plugins {
            let plugin = Plugin::load(name, args, &base_env)?;
            info!(
                "PLUGIN_INIT: POST {} '{}' intercepted={}",
                plugin.path().display(),
                args.join(" "),
                plugin
                    .type_mask()
                    .kinds()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join("|")
            );
            modules.push(Module {
                mask: plugin.type_mask(),
                contexts: plugin.has_client_contexts(),
                slot: Mutex::new(Slot {
                    plugin,
                    clients: HashMap::new(),
                    gone: VecDeque::new(),
                }),
            });
        }
        Ok(Some(Arc::new(PluginChain { modules, base_env })))
    }

    /// The modules that asked for `kind`, each locked in turn.
    fn slots(&self, kind: PluginKind) -> impl Iterator<Item = std::sync::MutexGuard<'_, Slot>> {
        self.modules
            .iter()
            .filter(move |m| m.mask.contains(kind))
            .map(|m| m.slot.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether any module asked for `kind`.
    pub fn handles(&self, kind: PluginKind) -> bool {
        self.modules.iter().any(|m| m.mask.contains(kind))
    }

    /// The hook jobs the core must make for the modules ([`crate::core::ServerCore::set_plugin_hooks`]).
    pub fn hooks(&self) -> Vec<JobKind> {
        let mut kinds = Vec::new();
        let mut add = |on: bool, k: JobKind| {
            if on {
                kinds.push(k);
            }
        };
        add(
            self.handles(PluginKind::AuthUserPassVerify),
            JobKind::AuthUserPass,
        );
        add(
            self.handles(PluginKind::ClientConnect) || self.handles(PluginKind::ClientConnectV2),
            JobKind::ClientConnect,
        );
        add(
            self.handles(PluginKind::ClientDisconnect),
            JobKind::ClientDisconnect,
        );
        add(
            self.handles(PluginKind::LearnAddress),
            JobKind::LearnAddress,
        );
        add(self.modules.iter().any(|m| m.contexts), JobKind::ClientGone);
        kinds
    }

    /// Calls every module that asked for `kind`, in order, with `args` (`argv[1..]`) and the
    /// base environment followed by `env`, about connection `client` (its per-client
    /// contexts) or none (the top-level ones). Blocking.
    pub fn call(
        &self,
        kind: PluginKind,
        args: &[String],
        env: &[(String, String)],
        client: Option<u64>,
    ) -> ChainOutcome {
        let mut full = self.base_env.clone();
        full.extend_from_slice(env);
        let mut out = ChainOutcome::default();
        let mut failed = false;
        for mut slot in self.slots(kind) {
            match slot.call(kind, args, &full, client) {
                Ok(o) => {
                    match o.status {
                        CallStatus::Success => debug!(
                            "PLUGIN_CALL: POST {}/{kind} status=0",
                            slot.plugin.path().display()
                        ),
                        CallStatus::Deferred => out.deferred += 1,
                        CallStatus::Failure => {
                            warn!(
                                "PLUGIN_CALL: plugin function {kind} failed: {}",
                                slot.plugin.path().display()
                            );
                            failed = true;
                        }
                    }
                    out.returned.extend(o.returned);
                }
                Err(e) => {
                    warn!("{e}");
                    failed = true;
                }
            }
            out.status = Some(CallStatus::Success);
        }
        if failed {
            out.status = Some(CallStatus::Failure);
        } else if out.deferred > 0 {
            out.status = Some(CallStatus::Deferred);
        }
        out
    }

    /// `UP` / `DOWN` around the tun device `dev` (argv and environment as OpenVPN's up/down
    /// script gets them). False if a module failed (for `UP`, OpenVPN stops).
    pub fn tun_hook(&self, kind: PluginKind, cfg: &ServerConfig, dev: &str) -> bool {
        let (args, env) = tun_args(cfg, dev);
        let o = self.call(kind, &args, &env, None);
        o.ok()
    }

    /// Gives connection `generation`'s per-client contexts back to their modules.
    pub fn forget(&self, generation: u64) {
        for m in self.modules.iter().filter(|m| m.contexts) {
            m.slot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .forget(generation);
        }
    }
}

/// The up/down script's arguments and environment for the server's tun device: `dev
/// tun_mtu link_mtu ifconfig_local ifconfig_netmask init` (the link MTU is given as the tun
/// MTU: ours does not compute OpenVPN's link MTU).
fn tun_args(cfg: &ServerConfig, dev: &str) -> (Vec<String>, Vec<(String, String)>) {
    let shape = crate::pool::PoolShape::new(cfg.server_v4, cfg.server_v6);
    let (v4, v6) = shape.server_addresses();
    let mtu = cfg.tun_mtu.to_string();
    let local = v4.map(|(a, _)| a.to_string()).unwrap_or_default();
    let mask = shape
        .netmask_v4()
        .map(|m| m.to_string())
        .unwrap_or_default();
    let args = vec![
        dev.to_owned(),
        mtu.clone(),
        mtu.clone(),
        local.clone(),
        mask.clone(),
        "init".to_owned(),
    ];
    let mut env = vec![
        ("dev".to_owned(), dev.to_owned()),
        ("dev_type".to_owned(), "tun".to_owned()),
        ("tun_mtu".to_owned(), mtu.clone()),
        ("link_mtu".to_owned(), mtu),
        ("script_context".to_owned(), "init".to_owned()),
    ];
    if v4.is_some() {
        env.push(("ifconfig_local".to_owned(), local));
        env.push(("ifconfig_netmask".to_owned(), mask));
    }
    if let Some((a, p)) = v6 {
        env.push(("ifconfig_ipv6_local".to_owned(), a.to_string()));
        env.push(("ifconfig_ipv6_netbits".to_owned(), p.to_string()));
    }
    (args, env)
}

/// Runs hook `job`: with modules, those that asked for its kind first (config order), then
/// its script (when it has a command); without, the script alone ([`scripts::run_to_end`]).
/// Results go to `send` as for scripts (a deferred one first, then the final one). Blocking.
pub fn run_job(
    chain: Option<&PluginChain>,
    job: &ScriptJob,
    send: impl Fn(Option<JobResult>) -> bool,
) {
    let Some(chain) = chain else {
        script_or_success(job, send);
        return;
    };
    match job.kind {
        JobKind::AuthUserPass => auth(chain, job, send),
        JobKind::ClientConnect => connect(chain, job, send),
        JobKind::ClientDisconnect => {
            chain.call(
                PluginKind::ClientDisconnect,
                &[],
                &job.env,
                Some(job.generation),
            );
            let r = script_result(job);
            chain.forget(job.generation);
            send(Some(r));
        }
        JobKind::LearnAddress => {
            chain.call(PluginKind::LearnAddress, &job.args, &job.env, None);
            send(Some(script_result(job)));
        }
        JobKind::ClientGone => chain.forget(job.generation),
    }
}

/// The script of `job` (to the end, deferred decisions included), or success without one.
fn script_or_success(job: &ScriptJob, send: impl Fn(Option<JobResult>) -> bool) {
    if job.command.is_empty() {
        send(Some(scripts::result(job, true, None)));
    } else {
        scripts::run_to_end(job, send);
    }
}

/// The script of `job` run once (no deferral), or success without one.
fn script_result(job: &ScriptJob) -> JobResult {
    if job.command.is_empty() {
        scripts::result(job, true, None)
    } else {
        scripts::run(job)
    }
}

/// An empty file the module may write (auth-pam only opens it for writing).
fn fresh_file(tag: &str) -> Option<std::path::PathBuf> {
    let p = scripts::temp_path(tag);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
        .ok()
        .map(|_| p)
}

fn auth(chain: &PluginChain, job: &ScriptJob, send: impl Fn(Option<JobResult>) -> bool) {
    if !chain.handles(PluginKind::AuthUserPassVerify) {
        script_or_success(job, send);
        return;
    }
    let (Some(control), Some(pending)) = (fresh_file("pacf"), fresh_file("papf")) else {
        error!("auth-user-pass-verify plugin: cannot create the auth control files");
        send(Some(scripts::result(job, false, None)));
        return;
    };
    let mut env = job.env.clone();
    // Modules always get the credentials in the environment (via-file is for scripts).
    if let Some((u, p)) = &job.credentials_file {
        env.push(("username".into(), u.clone()));
        env.push(("password".into(), p.clone()));
    }
    env.push(("auth_control_file".into(), control.display().to_string()));
    env.push(("auth_pending_file".into(), pending.display().to_string()));
    let o = chain.call(
        PluginKind::AuthUserPassVerify,
        &[],
        &env,
        Some(job.generation),
    );
    let accepted = match o.status {
        None | Some(CallStatus::Success) => true,
        Some(CallStatus::Failure) => false,
        Some(CallStatus::Deferred) if o.deferred > 1 => {
            error!(
                "{} plug-ins deferred auth-user-pass-verify; at most one may (as in OpenVPN): rejecting",
                o.deferred
            );
            false
        }
        Some(CallStatus::Deferred) => {
            let info = scripts::read_pending(&pending);
            let mut r = scripts::result(job, false, None);
            r.deferred = Some(Deferred {
                pending: info.clone(),
            });
            let listening = send(Some(r));
            scripts::await_control(
                &control,
                info.as_ref(),
                job.deferred_timeout,
                listening,
                &send,
            )
        }
    };
    let _ = std::fs::remove_file(&control);
    let _ = std::fs::remove_file(&pending);
    if !accepted {
        send(Some(scripts::result(job, false, None)));
        return;
    }
    script_or_success(job, send);
}

fn connect(chain: &PluginChain, job: &ScriptJob, send: impl Fn(Option<JobResult>) -> bool) {
    let mut texts = Vec::new();
    let mut ok = true;
    if chain.handles(PluginKind::ClientConnect) {
        let (Some(file), Some(deferred)) = (fresh_file("pcc"), fresh_file("pccd")) else {
            error!("client-connect plugin: cannot create its files");
            send(Some(scripts::result(job, false, None)));
            return;
        };
        let mut env = job.env.clone();
        env.push((
            "client_connect_config_file".into(),
            file.display().to_string(),
        ));
        env.push((
            "client_connect_deferred_file".into(),
            deferred.display().to_string(),
        ));
        let o = chain.call(
            PluginKind::ClientConnect,
            &[file.display().to_string()],
            &env,
            Some(job.generation),
        );
        ok = match o.status {
            None | Some(CallStatus::Success) => true,
            Some(CallStatus::Failure) => false,
            Some(CallStatus::Deferred) => {
                scripts::await_control(&deferred, None, job.deferred_timeout, true, &send)
            }
        };
        if ok {
            if let Ok(t) = std::fs::read_to_string(&file) {
                texts.push(t);
            }
        }
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_file(&deferred);
    }
    if ok && chain.handles(PluginKind::ClientConnectV2) {
        let o = chain.call(
            PluginKind::ClientConnectV2,
            &[],
            &job.env,
            Some(job.generation),
        );
        ok = match o.status {
            None | Some(CallStatus::Success) => true,
            Some(CallStatus::Failure) => false,
            Some(CallStatus::Deferred) => {
                warn!("a deferred PLUGIN_CLIENT_CONNECT_V2 is not supported: rejecting the client");
                false
            }
        };
        texts.extend(
            o.returned
                .into_iter()
                .filter(|(n, _)| n == "config")
                .map(|(_, v)| v),
        );
    }
    if ok && !job.command.is_empty() {
        let r = scripts::run(job);
        ok = r.success;
        texts.extend(r.dynamic_config);
    }
    let text = texts
        .iter()
        .filter(|t| !t.trim().is_empty())
        .map(|t| t.trim_end_matches('\n'))
        .collect::<Vec<_>>()
        .join("\n");
    let text = (ok && !text.is_empty()).then(|| text + "\n");
    send(Some(scripts::result(job, ok, text)));
}
