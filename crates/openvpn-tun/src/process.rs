//! Process helpers that need `unsafe` libc calls: daemonizing, dropping privileges, and the
//! start-up options `cd`, `nice` and `mlock` ([`apply_start`]).

use std::ffi::CString;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once [`drop_privileges`] changed the user or group.
static DROPPED: AtomicBool = AtomicBool::new(false);

/// The memory-lock limit `mlock` asks for when the current one is lower (OpenVPN's 100 MB).
pub const MLOCK_LIMIT: u64 = 100 * 1024 * 1024;

/// Detaches from the terminal like OpenVPN's `daemon`: fork (parent exits), new session,
/// stdin/stdout/stderr to /dev/null. Call before starting any threads (before tokio).
pub fn daemonize() -> io::Result<()> {
    // SAFETY: called before any other thread exists; fork in a single-threaded process is
    // sound, and the parent only calls `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        // SAFETY: `_exit` never returns and runs no destructors in the parent.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: plain syscall without pointers.
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    let null =
        CString::new("/dev/null").map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `null` is a valid NUL-terminated path; the returned fd is checked.
    let fd = unsafe { libc::open(null.as_ptr(), libc::O_RDWR) };
    if fd >= 0 {
        for target in 0..3 {
            // SAFETY: dup2 on descriptors we own; errors are ignored (best effort).
            unsafe { libc::dup2(fd, target) };
        }
        if fd > 2 {
            // SAFETY: closing the descriptor we opened above.
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
}

/// Whether [`drop_privileges`] switched user or group in this process: what needs root
/// (routes, DNS) can no longer be undone here and is left to a root process (the client's
/// guardian) or the next start.
pub fn privileges_dropped() -> bool {
    DROPPED.load(Ordering::Relaxed)
}

/// Switches to `group` then `user` (names or numeric ids), also dropping supplementary groups.
/// glibc applies the change to every thread of the process.
pub fn drop_privileges(user: Option<&str>, group: Option<&str>) -> io::Result<()> {
    drop_privileges_in(user, group, None)
}

/// [`drop_privileges`] after `chroot DIR` (OpenVPN's order: the names are looked up first,
/// while /etc/passwd is still visible, then the root changes, then the ids).
pub fn drop_privileges_in(
    user: Option<&str>,
    group: Option<&str>,
    chroot: Option<&Path>,
) -> io::Result<()> {
    let gid = group.map(lookup_group).transpose()?;
    let uid = user.map(lookup_user).transpose()?;
    if let Some(dir) = chroot {
        let c = CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "chroot path has a NUL"))?;
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        if unsafe { libc::chroot(c.as_ptr()) } != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("chroot to '{}' failed: {e}", dir.display()),
            ));
        }
        std::env::set_current_dir("/")?;
    }
    // The user's primary group unless `group` names one.
    let Some(gid) = gid.or(uid.map(|(_, g)| g)) else {
        return Ok(());
    };
    // Set before the first change: should a call below fail half-way, root-only clean-up is
    // not attempted either.
    DROPPED.store(true, Ordering::Relaxed);
    // SAFETY: setgroups with an empty list, then setgid; plain syscalls.
    if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 || unsafe { libc::setgid(gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if let Some((uid, _)) = uid {
        // SAFETY: plain syscall.
        if unsafe { libc::setuid(uid) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `cd`, `nice`, `mlock` as OpenVPN applies them at start-up: change the working directory
/// (later relative paths, scripts included, start there), add `nice` to the scheduling
/// priority, lock all memory. Call it before any thread is started (Linux keeps the nice
/// value per thread; new threads inherit it). A failing `cd` or memory-lock limit is an
/// error; a failing nice or mlockall is logged, as OpenVPN does.
pub fn apply_start(cd: Option<&Path>, nice: i32, mlock: bool) -> io::Result<()> {
    if let Some(dir) = cd {
        std::env::set_current_dir(dir).map_err(|e| {
            io::Error::new(e.kind(), format!("cd to '{}' failed: {e}", dir.display()))
        })?;
        tracing::info!("cd {}: working directory changed", dir.display());
    }
    if nice != 0 {
        match renice(nice) {
            Ok(now) => tracing::info!("nice {nice} succeeded (priority now {now})"),
            Err(e) => tracing::warn!("WARNING: nice {nice} failed: {e}"),
        }
    }
    if mlock {
        let (soft, hard) = raise_memlock_limit(MLOCK_LIMIT).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("mlock: setrlimit(RLIMIT_MEMLOCK) failed: {e}"),
            )
        })?;
        tracing::info!(
            "mlock: MEMLOCK limit: soft={} KB, hard={} KB",
            soft / 1024,
            hard / 1024
        );
        match mlock_all() {
            Ok(()) => tracing::info!("mlockall call succeeded"),
            Err(e) => tracing::warn!("WARNING: mlockall call failed: {e}"),
        }
    }
    Ok(())
}

/// Adds `inc` to the calling thread's nice value (clamped to -20..=19, like nice(2));
/// returns the new value. Threads started afterwards inherit it.
pub fn renice(inc: i32) -> io::Result<i32> {
    let now = priority()?;
    let want = now.saturating_add(inc).clamp(-20, 19);
    // SAFETY: plain syscall without pointers; `who` 0 is the calling thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, want) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(want)
}

/// The calling thread's nice value.
pub fn priority() -> io::Result<i32> {
    // SAFETY: errno is thread-local; getpriority can legitimately return -1, so errno is
    // cleared first and checked after, as its manual page prescribes.
    let p = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, 0)
    };
    if p == -1 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(0) {
            return Err(e);
        }
    }
    Ok(p)
}

/// Raises RLIMIT_MEMLOCK to at least `min` bytes (the hard limit too, if it is lower); returns
/// the (soft, hard) limits in force afterwards.
pub fn raise_memlock_limit(min: u64) -> io::Result<(u64, u64)> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if rl.rlim_cur < min {
        rl.rlim_cur = min;
        rl.rlim_max = rl.rlim_max.max(min);
        // SAFETY: `rl` is a valid rlimit read above.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rl) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((rl.rlim_cur, rl.rlim_max))
}

/// `mlockall(MCL_CURRENT | MCL_FUTURE)`: no page of this process is ever swapped out (keys
/// included). Memory allocated later counts against RLIMIT_MEMLOCK unless the process keeps
/// CAP_IPC_LOCK ([`raise_memlock_limit`] first).
pub fn mlock_all() -> io::Result<()> {
    // SAFETY: plain syscall with constant flags.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Undoes [`mlock_all`] (for tests).
pub fn munlock_all() -> io::Result<()> {
    // SAFETY: plain syscall without arguments.
    if unsafe { libc::munlockall() } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn not_found(what: &str, name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{what} '{name}' not found"),
    )
}

fn lookup_user(name: &str) -> io::Result<(libc::uid_t, libc::gid_t)> {
    let text = std::fs::read_to_string("/etc/passwd")?;
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && (f[0] == name || f[2] == name) {
            let uid = f[2].parse().map_err(|_| not_found("user", name))?;
            let gid = f[3].parse().map_err(|_| not_found("user", name))?;
            return Ok((uid, gid));
        }
    }
    name.parse::<libc::uid_t>()
        .map(|u| (u, u))
        .map_err(|_| not_found("user", name))
}

fn lookup_group(name: &str) -> io::Result<libc::gid_t> {
    let text = std::fs::read_to_string("/etc/group")?;
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 3 && (f[0] == name || f[2] == name) {
            return f[2].parse().map_err(|_| not_found("group", name));
        }
    }
    name.parse().map_err(|_| not_found("group", name))
}

/// Runs a `tls-verify` command for one certificate as OpenVPN does: `/bin/sh -c "CMD DEPTH
/// 'SUBJECT'"` with `script_type=tls-verify`, the certificate's variables and `env` (the
/// config's `setenv`); exit status 0 accepts. The server and client both call this from their
/// TLS verifier (like OpenVPN, the handshake waits for it).
pub fn run_tls_verify(
    cmd: &str,
    depth: usize,
    subject: &str,
    cert_env: &[(String, String)],
    env: &[(String, String)],
) -> bool {
    let quoted = format!("'{}'", subject.replace('\'', "'\\''"));
    let line = format!("{cmd} {depth} {quoted}");
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&line)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(cert_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("script_type", "tls-verify")
        .stdin(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => true,
        Ok(s) => {
            tracing::warn!("tls-verify: '{line}' rejected the certificate ({s})");
            false
        }
        Err(e) => {
            tracing::warn!("tls-verify: cannot run '{line}': {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_root_and_nobody() {
        assert_eq!(lookup_user("root").map(|u| u.0).ok(), Some(0));
        assert_eq!(lookup_group("root").ok(), Some(0));
        assert!(lookup_user("no-such-user-ovrs").is_err());
    }

    /// `nice 1` lowers this thread's priority by one (a test thread: the others keep theirs).
    #[test]
    fn renice_adds_to_the_threads_priority() {
        let handle = std::thread::spawn(|| {
            let before = priority().expect("getpriority");
            let after = renice(1).expect("setpriority");
            assert_eq!(after, (before + 1).min(19));
            assert_eq!(priority().expect("getpriority"), after);
            // A thread started now inherits it.
            let child = std::thread::spawn(priority).join().expect("join");
            assert_eq!(child.expect("getpriority"), after);
        });
        handle.join().expect("test thread");
    }

    /// `mlock`: after mlock_all the process has locked memory (VmLck > 0); undone at once so
    /// the other tests run unlocked. Without the privilege (an unprivileged CI) the call
    /// fails with EPERM/ENOMEM, which apply_start logs as OpenVPN does.
    #[test]
    fn mlock_all_locks_the_process_memory() {
        let vm_lck = || -> u64 {
            std::fs::read_to_string("/proc/self/status")
                .expect("status")
                .lines()
                .find_map(|l| l.strip_prefix("VmLck:"))
                .and_then(|v| v.split_whitespace().next().map(str::to_owned))
                .and_then(|v| v.parse().ok())
                .expect("VmLck")
        };
        let limits = raise_memlock_limit(MLOCK_LIMIT);
        match (limits, mlock_all()) {
            (Ok((soft, _)), Ok(())) => {
                assert!(soft >= MLOCK_LIMIT);
                let locked = vm_lck();
                munlock_all().expect("munlockall");
                assert!(locked > 0, "VmLck is 0 after mlockall");
                assert_eq!(vm_lck(), 0);
            }
            (l, m) => {
                let _ = munlock_all();
                eprintln!("SKIP: no privilege to lock memory here ({l:?}, {m:?})");
            }
        }
    }
}
