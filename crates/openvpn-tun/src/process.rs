//! Process helpers that need `unsafe` libc calls: daemonizing and dropping privileges.

use std::ffi::CString;
use std::io;

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

/// Switches to `group` then `user` (names or numeric ids), also dropping supplementary groups.
pub fn drop_privileges(user: Option<&str>, group: Option<&str>) -> io::Result<()> {
    if let Some(g) = group {
        let gid = lookup_group(g)?;
        // SAFETY: setgroups with an empty list, then setgid; plain syscalls.
        if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 || unsafe { libc::setgid(gid) } != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    if let Some(u) = user {
        let (uid, gid) = lookup_user(u)?;
        if group.is_none() {
            // SAFETY: as above.
            if unsafe { libc::setgroups(0, std::ptr::null()) } != 0
                || unsafe { libc::setgid(gid) } != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: plain syscall.
        if unsafe { libc::setuid(uid) } != 0 {
            return Err(io::Error::last_os_error());
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_root_and_nobody() {
        assert_eq!(lookup_user("root").map(|u| u.0).ok(), Some(0));
        assert_eq!(lookup_group("root").ok(), Some(0));
        assert!(lookup_user("no-such-user-ovrs").is_err());
    }
}
