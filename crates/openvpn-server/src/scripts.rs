//! Server hooks run as external scripts, off the packet path: `auth-user-pass-verify`,
//! `client-connect`, `client-disconnect`, with OpenVPN's environment variables.
//!
//! ```text
//!  core ──ScriptJob──▶ runtime (spawn_blocking: /bin/sh -c "cmd ARG") ──JobResult──▶ core
//! ```
//! Each job carries the client's connection generation, so a result for a client that has gone
//! (or reconnected) is ignored.

use std::io::Write;
use std::path::PathBuf;
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
}

impl JobKind {
    /// The `script_type` variable.
    pub fn script_type(self) -> &'static str {
        match self {
            JobKind::AuthUserPass => "user-pass-verify",
            JobKind::ClientConnect => "client-connect",
            JobKind::ClientDisconnect => "client-disconnect",
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
}

fn temp_path(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("openvpn-rs-{}-{tag}-{n}", std::process::id()))
}

/// Runs a hook to completion (blocking; call from a blocking thread).
pub fn run(job: &ScriptJob) -> JobResult {
    let mut arg: Option<PathBuf> = None;
    let mut cleanup = Vec::new();
    if let Some((u, p)) = &job.credentials_file {
        let path = temp_path("up");
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{u}\n{p}"));
        if written.is_err() {
            return result(job, false, None);
        }
        arg = Some(path.clone());
        cleanup.push(path);
    }
    if job.kind == JobKind::ClientConnect {
        let path = temp_path("cc");
        arg = Some(path.clone());
        cleanup.push(path);
    }
    let line = match &arg {
        Some(a) => format!("{} {}", job.command, a.display()),
        None => job.command.clone(),
    };
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(&line).stdin(Stdio::null());
    cmd.env("script_type", job.kind.script_type());
    for (k, v) in &job.env {
        cmd.env(k, v);
    }
    let success = match cmd.spawn() {
        Err(_) => false,
        Ok(mut child) => {
            let start = Instant::now();
            loop {
                match child.try_wait() {
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
    result(job, success, dynamic)
}

fn result(job: &ScriptJob, success: bool, dynamic_config: Option<String>) -> JobResult {
    JobResult {
        pid: job.pid,
        generation: job.generation,
        key_id: job.key_id,
        kind: job.kind,
        success,
        dynamic_config,
    }
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
        }
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
