//! Server hooks run as external scripts, off the packet path: `auth-user-pass-verify`,
//! `client-connect`, `client-disconnect`, with OpenVPN's environment variables.
//!
//! ```text
//!  core ──ScriptJob──▶ runtime (spawn_blocking: /bin/sh -c "cmd ARG") ──JobResult──▶ core
//! ```
//! Each job carries the client's connection generation, so a result for a client that has gone
//! (or reconnected) is ignored.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a hook may run before it counts as failed.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// `auth-user-pass-verify`.
    AuthUserPass,
    /// `client-connect`.
    ClientConnect,
    /// `client-disconnect`.
    ClientDisconnect,
    /// `learn-address` (`add|update|delete ADDR [CN]` as arguments).
    LearnAddress,
    /// The client is gone without a `client-disconnect` job: no script; plug-ins release
    /// their per-client state (see [`crate::plugins`]).
    ClientGone,
}

impl JobKind {
    /// The `script_type` variable.
    pub fn script_type(self) -> &'static str {
        match self {
            JobKind::AuthUserPass => "user-pass-verify",
            JobKind::ClientConnect => "client-connect",
            JobKind::ClientDisconnect => "client-disconnect",
            JobKind::LearnAddress => "learn-address",
            JobKind::ClientGone => "client-gone",
        }
    }
}

/// A hook to run.
#[derive(Clone, Debug)]
pub struct ScriptJob {
    /// Client peer-id.
    pub pid: u32,
    /// Client connection generation.
    pub generation: u64,
    /// Key state the decision is for.
    pub key_id: u8,
    /// Which hook.
    pub kind: JobKind,
    /// The command (run through `/bin/sh -c`).
    pub command: String,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// `via-file`: username and password written to a temporary file passed as argument.
    pub credentials_file: Option<(String, String)>,
    /// Extra arguments (shell-quoted when run), e.g. `add 10.8.0.2 client1` for learn-address.
    pub args: Vec<String>,
    /// How long a deferred authentication (exit status 2) may take (hand-window).
    pub deferred_timeout: Duration,
}

/// A deferred authentication: the auth script exited with status 2 and the decision comes
/// later through `auth_control_file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deferred {
    /// From `auth_pending_file`: timeout (seconds), method, extra (e.g. `OPEN_URL:…`).
    pub pending: Option<(u32, String, String)>,
}

/// The outcome of a hook.
#[derive(Clone, Debug)]
pub struct JobResult {
    /// Client peer-id.
    pub pid: u32,
    /// Client connection generation.
    pub generation: u64,
    /// Key state.
    pub key_id: u8,
    /// Which hook.
    pub kind: JobKind,
    /// Exit status 0.
    pub success: bool,
    /// `client-connect`: the dynamic config file the script wrote.
    pub dynamic_config: Option<String>,
    /// The auth script deferred its decision (a final result follows).
    pub deferred: Option<Deferred>,
}

/// A fresh path in the temporary directory, named after this process, `tag` and a counter.
pub(crate) fn temp_path(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("openvpn-rs-{}-{tag}-{n}", std::process::id()))
}

fn shell_quote(a: &str) -> String {
    format!("'{}'", a.replace('\'', "'\\''"))
}

/// Runs a hook, then (if the auth script deferred its decision) polls `auth_control_file`
/// every 250 ms until it holds `1` (accept) or `0` (reject), or the pending timeout /
/// hand-window passes (reject). Each result goes to `send` (`Some`): a deferred one first (so
/// the server can tell the client `AUTH_PENDING`), then the final one. `send(None)` asks
/// whether anyone still listens (false ends the wait, e.g. at shutdown). Blocking: call from
/// a blocking thread.
pub fn run_to_end(job: &ScriptJob, send: impl Fn(Option<JobResult>) -> bool) {
    let control = temp_path("acf");
    let pending = temp_path("apf");
    let r = run_with(job, Some((&control, &pending)));
    let Some(d) = r.deferred.clone() else {
        send(Some(r));
        return;
    };
    let listening = send(Some(r));
    let verdict = await_control(
        &control,
        d.pending.as_ref(),
        job.deferred_timeout,
        listening,
        &send,
    );
    let _ = std::fs::remove_file(&control);
    let _ = std::fs::remove_file(&pending);
    send(Some(result(job, verdict, None)));
}

/// Polls a deferred decision's control file every 250 ms until it holds `1` (true) or `0`
/// (false), or the wait passes (false): the pending file's timeout if any, capped by
/// `hand_window` (at least 1 s). `send(None)` asks whether anyone still listens (`listening`
/// is the answer so far); false ends the wait. Blocking.
pub(crate) fn await_control(
    control: &Path,
    pending: Option<&(u32, String, String)>,
    hand_window: Duration,
    mut listening: bool,
    send: &impl Fn(Option<JobResult>) -> bool,
) -> bool {
    let wait = pending
        .map_or(hand_window, |p| Duration::from_secs(u64::from(p.0)))
        .min(hand_window.max(Duration::from_secs(1)));
    let start = Instant::now();
    loop {
        match std::fs::read_to_string(control)
            .ok()
            .as_deref()
            .map(str::trim)
        {
            Some(v) if v.starts_with('1') => return true,
            Some(v) if v.starts_with('0') => return false,
            _ => {}
        }
        listening = listening && send(None);
        if start.elapsed() >= wait || !listening {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// An `auth_pending_file`: timeout (seconds), method, extra, one per line.
pub(crate) fn read_pending(path: &Path) -> Option<(u32, String, String)> {
    let t = std::fs::read_to_string(path).ok()?;
    let mut l = t.lines();
    let timeout = l.next()?.trim().parse().ok()?;
    let method = l.next().unwrap_or("").trim().to_owned();
    let extra = l.next().unwrap_or("").trim().to_owned();
    Some((timeout, method, extra))
}

/// Runs a hook to completion (blocking; call from a blocking thread).
pub fn run(job: &ScriptJob) -> JobResult {
    run_with(job, None)
}

fn run_with(job: &ScriptJob, deferral: Option<(&PathBuf, &PathBuf)>) -> JobResult {
    let mut arg: Option<PathBuf> = None;
    let mut cleanup = Vec::new();
    if let Some((u, p)) = &job.credentials_file {
        // Only this process's user may read the password (OpenVPN creates it 0600 too).
        let Ok(path) = private_temp_file("up", format!("{u}\n{p}\n").as_bytes()) else {
            return result(job, false, None);
        };
        arg = Some(path.clone());
        cleanup.push(path);
    }
    if job.kind == JobKind::ClientConnect {
        let path = temp_path("cc");
        arg = Some(path.clone());
        cleanup.push(path);
    }
    let mut line = match &arg {
        Some(a) => format!("{} {}", job.command, a.display()),
        None => job.command.clone(),
    };
    for a in &job.args {
        line.push(' ');
        line.push_str(&shell_quote(a));
    }
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(&line).stdin(Stdio::null());
    cmd.env("script_type", job.kind.script_type());
    for (k, v) in &job.env {
        cmd.env(k, v);
    }
    let deferral = deferral.filter(|_| job.kind == JobKind::AuthUserPass);
    if let Some((control, pending)) = deferral {
        cmd.env("auth_control_file", control);
        cmd.env("auth_pending_file", pending);
    }
    let mut deferred = false;
    let success = match cmd.spawn() {
        Err(_) => false,
        Ok(mut child) => {
            let start = Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(st)) if st.code() == Some(2) && deferral.is_some() => {
                        deferred = true;
                        break false;
                    }
                    Ok(Some(st)) => break st.success(),
                    Ok(None) if start.elapsed() < SCRIPT_TIMEOUT => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break false;
                    }
                }
            }
        }
    };
    let dynamic = if job.kind == JobKind::ClientConnect {
        arg.as_ref().and_then(|p| std::fs::read_to_string(p).ok())
    } else {
        None
    };
    for p in cleanup {
        let _ = std::fs::remove_file(p);
    }
    let mut r = result(job, success, dynamic);
    if deferred {
        let pending = deferral.and_then(|(_, p)| read_pending(p));
        r.deferred = Some(Deferred { pending });
    } else if let Some((control, pending)) = deferral {
        let _ = std::fs::remove_file(control);
        let _ = std::fs::remove_file(pending);
    }
    r
}

/// The result of `job`: `success`, with `dynamic_config` (client-connect).
pub(crate) fn result(job: &ScriptJob, success: bool, dynamic_config: Option<String>) -> JobResult {
    JobResult {
        pid: job.pid,
        generation: job.generation,
        key_id: job.key_id,
        kind: job.kind,
        success,
        dynamic_config,
        deferred: None,
    }
}

/// The `tls-crypt-v2-verify` decision on a client key's metadata (type byte, then data).
#[derive(Clone)]
pub struct CryptV2Verify(pub std::sync::Arc<MetadataCheck>);

/// The function behind [`CryptV2Verify`]: true accepts the metadata.
pub type MetadataCheck = dyn Fn(&[u8]) -> bool + Send + Sync;

impl std::fmt::Debug for CryptV2Verify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CryptV2Verify")
    }
}

/// The `tls-crypt-v2-verify` check of `cfg`, if it has one: writes the key's metadata (without
/// its type byte) to a temporary file and runs the command with `script_type`,
/// `metadata_type` (0 user data, 1 timestamp) and `metadata_file`, as OpenVPN does; exit
/// status 0 accepts. The server waits for it (OpenVPN blocks too), so keep it quick.
pub fn crypt_v2_verify(cfg: &crate::config::ServerConfig) -> Option<CryptV2Verify> {
    let cmd = cfg.tls_crypt_v2_verify.clone()?;
    let env = cfg.setenv.clone();
    Some(CryptV2Verify(std::sync::Arc::new(move |meta: &[u8]| {
        let (kind, data) = match meta.split_first() {
            Some((k, d)) => (*k, d),
            None => (0, &[][..]),
        };
        let file = match private_temp_file("tc2", data) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("tls-crypt-v2-verify: cannot write the metadata file: {e}");
                return false;
            }
        };
        let status = Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("script_type", "tls-crypt-v2-verify")
            .env("metadata_type", kind.to_string())
            .env("metadata_file", &file)
            .stdin(Stdio::null())
            .status();
        let _ = std::fs::remove_file(&file);
        matches!(status, Ok(s) if s.success())
    })))
}

/// A new temporary file (named with `tag`) that only this process's user may read, holding
/// `data`; nothing is left behind when writing fails.
fn private_temp_file(tag: &str, data: &[u8]) -> std::io::Result<PathBuf> {
    let path = temp_path(tag);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    if let Err(e) = f.write_all(data) {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(kind: JobKind, command: &str) -> ScriptJob {
        ScriptJob {
            pid: 1,
            generation: 7,
            key_id: 0,
            kind,
            command: command.into(),
            env: vec![("common_name".into(), "client1".into())],
            credentials_file: None,
            args: Vec::new(),
            deferred_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn deferred_auth_through_control_file() {
        let j = job(
            JobKind::AuthUserPass,
            "f() { printf '30\\nwebauth\\nOPEN_URL:https://x\\n' > \"$auth_pending_file\"; (sleep 1; echo 1 > \"$auth_control_file\") & exit 2; }; f",
        );
        let got = std::sync::Mutex::new(Vec::new());
        let start = Instant::now();
        run_to_end(&j, |r| {
            got.lock().unwrap().extend(r);
            true
        });
        let got = got.into_inner().unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            got[0].deferred.as_ref().unwrap().pending,
            Some((30, "webauth".into(), "OPEN_URL:https://x".into()))
        );
        assert!(got[1].success && got[1].deferred.is_none());
        assert!(start.elapsed() >= Duration::from_millis(900));
        let j = job(
            JobKind::AuthUserPass,
            "echo 0 > \"$auth_control_file\"; exit 2",
        );
        let got = std::sync::Mutex::new(Vec::new());
        run_to_end(&j, |r| {
            got.lock().unwrap().extend(r);
            true
        });
        assert!(!got.into_inner().unwrap()[1].success);
    }

    #[test]
    fn deferred_wait_ends_when_nobody_listens() {
        let j = job(JobKind::AuthUserPass, "exit 2");
        let start = Instant::now();
        let n = std::sync::atomic::AtomicU32::new(0);
        run_to_end(&j, |r| {
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            r.is_some()
        });
        // The deferred result, one failed probe, then the final (reject) result.
        assert_eq!(n.into_inner(), 3);
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn learn_address_arguments_are_quoted() {
        let mut j = job(
            JobKind::LearnAddress,
            "f() { [ \"$1\" = add ] && [ \"$2\" = 10.8.0.2 ] && [ \"$3\" = \"a b\" ]; }; f",
        );
        j.args = vec!["add".into(), "10.8.0.2".into(), "a b".into()];
        assert!(run(&j).success);
    }

    #[test]
    fn via_file_and_env() {
        let mut j = job(
            JobKind::AuthUserPass,
            "f() { [ \"$(head -n1 \"$1\")\" = alice ] && [ \"$(sed -n 2p \"$1\")\" = right ] && [ \"$common_name\" = client1 ] && [ \"$script_type\" = user-pass-verify ]; }; f",
        );
        j.credentials_file = Some(("alice".into(), "right".into()));
        assert!(run(&j).success);
        j.credentials_file = Some(("alice".into(), "wrong".into()));
        assert!(!run(&j).success);
    }

    /// The via-file credentials file holds a password: no other user may read it, whatever
    /// the umask (it was created with the default mode, 0644 under the usual umask).
    #[test]
    fn via_file_credentials_are_readable_by_the_owner_only() {
        let mut j = job(
            JobKind::AuthUserPass,
            "f() { [ \"$(stat -c %a \"$1\")\" = 600 ]; }; f",
        );
        j.credentials_file = Some(("alice".into(), "secret".into()));
        assert!(run(&j).success, "the credentials file is not mode 0600");
    }

    #[test]
    fn client_connect_dynamic_config() {
        let j = job(
            JobKind::ClientConnect,
            "f() { echo 'push \"route 10.99.0.0 255.255.0.0\"' > \"$1\"; }; f",
        );
        let r = run(&j);
        assert!(r.success);
        assert_eq!(
            r.dynamic_config.as_deref(),
            Some("push \"route 10.99.0.0 255.255.0.0\"\n")
        );
        assert_eq!(r.generation, 7);
    }
}
