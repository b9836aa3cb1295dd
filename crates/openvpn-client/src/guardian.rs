//! The guardian: a small child process that undoes a root-run client's routes and DNS when the
//! client dies without cleaning up (`kill -9`, a crash, the OOM killer), or can no longer
//! undo them itself (it dropped root with `user`/`group`: [`finish`]).
//!
//! ```text
//!  openvpn-client (root)                                  openvpn-client __guardian
//!   spawn(/proc/self/exe __guardian) ── stdin pipe ───▶  own process group (no ^C, no job
//!   RouteManager::new(journal)                            control signals), same network
//!   watch(journal, owner token) ── "watch PATH TOKEN" ─▶  and mount namespace
//!   install routes, DNS (journaled)                       … blocks reading the pipe …
//!   clean exit: cleanup, journal deleted ── EOF ──────▶  journal gone: exit
//!   kill -9: the kernel closes the pipe ── EOF ───────▶  RouteManager::recover_owned(
//!                                                           journal, token): undo, delete
//!   after user/group, tun closed (lock released):
//!     finish(): closes the pipe ─────────── EOF ───────▶  the same, then exits
//!     … waits for the guardian's exit
//! ```
//!
//! The guardian undoes a journal only if it still carries the owner token of the watched run
//! and no live process holds its lock (see `openvpn_tun::RouteManager::recover_owned`): a
//! journal another run owns by now is never touched. The same binary serves both sides; the
//! privileged helper starts one too, for the tunnels it holds.

use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use openvpn_tun::RouteManager;

use crate::privsep::{escape, unescape};

/// The hidden subcommand that runs the guardian.
pub const SUBCOMMAND: &str = "__guardian";

/// How long the guardian waits for a dead client's journal lock (the kernel releases it a
/// moment after it closed the pipe).
const LOCK_WAIT: Duration = Duration::from_secs(2);

static PIPE: Mutex<Option<ChildStdin>> = Mutex::new(None);
static CHILD: Mutex<Option<Child>> = Mutex::new(None);

/// Starts the guardian (once per process; later calls do nothing). Its output is appended to
/// `log` when given, else it goes to this process's stderr. Call it before the first tunnel.
pub fn spawn(log: Option<&Path>) -> std::io::Result<u32> {
    let mut pipe = PIPE.lock().unwrap_or_else(|e| e.into_inner());
    if pipe.is_some() {
        return Ok(0);
    }
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(SUBCOMMAND)
        .arg(std::process::id().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        // Not in the terminal's foreground group: ^C and SIGHUP of the session go to the
        // client only (which cleans up itself); kill -9 of the client's pid never reaches us.
        .process_group(0);
    if let Some(path) = log {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        cmd.stderr(f);
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    *pipe = child.stdin.take();
    // Kept for `finish`; otherwise never waited for: it outlives us when it matters, and
    // init reaps it.
    *CHILD.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
    Ok(pid)
}

/// Hands what is still journaled to the guardian now and waits (up to `wait`) until it has
/// undone it and exited: for a process that can no longer undo its own routes and DNS
/// (after `user`/`group`). Its journals' locks must be released first (their managers
/// dropped). Later [`watch`] calls do nothing. Returns whether the guardian finished.
pub fn finish(wait: Duration) -> bool {
    // End of input: the guardian undoes each watched journal still its owner's, and exits.
    drop(PIPE.lock().unwrap_or_else(|e| e.into_inner()).take());
    let Some(mut child) = CHILD.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return false;
    };
    let deadline = std::time::Instant::now() + wait;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                tracing::warn!("the guardian did not finish within {} s", wait.as_secs());
                return false;
            }
        }
    }
}

/// Tells the guardian (if one runs) to undo `journal` should this process die while the
/// journal still carries `owner`. Call it after the journal exists and before the first
/// change is made.
pub fn watch(journal: &Path, owner: &str) {
    let mut pipe = PIPE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(p) = pipe.as_mut() else { return };
    let Some(path) = journal.to_str() else {
        tracing::warn!(journal = %journal.display(), "guardian: journal path is not UTF-8; not watched");
        return;
    };
    let line = format!("watch {} {}\n", escape(path), escape(owner));
    if let Err(e) = p.write_all(line.as_bytes()).and_then(|()| p.flush()) {
        tracing::warn!(%e, "guardian: gone; a kill -9 now leaves the changes until the next start");
        *pipe = None;
    }
}

/// One `watch PATH TOKEN` line.
pub fn parse_watch(line: &str) -> Result<(PathBuf, String), String> {
    let mut it = line.split(' ');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some("watch"), Some(path), Some(owner), None) if !path.is_empty() && !owner.is_empty() => {
            Ok((PathBuf::from(unescape(path)?), unescape(owner)?))
        }
        _ => Err(format!("not a watch line: {line:?}")),
    }
}

/// Reads watch lines until end of input; then undoes each watched journal that is still its
/// owner's. Returns what it did, one line per journal, for the log.
pub fn serve(input: impl BufRead) -> Vec<String> {
    let mut watched: Vec<(PathBuf, String)> = Vec::new();
    for line in input.lines() {
        let Ok(line) = line else { break };
        match parse_watch(&line) {
            Ok((path, owner)) => {
                watched.retain(|(p, _)| *p != path);
                watched.push((path, owner));
            }
            Err(e) => return vec![format!("guardian: {e}; stopping without undoing anything")],
        }
    }
    let mut out = Vec::new();
    for (path, owner) in watched.iter().rev() {
        match RouteManager::recover_owned(path, owner, LOCK_WAIT) {
            Ok(Some(r)) => out.push(format!(
                "guardian: undid {} change(s) of {} ({} failed{})",
                r.undone.len(),
                path.display(),
                r.failed.len(),
                if r.failed.is_empty() {
                    String::new()
                } else {
                    format!(": {:?}", r.failed)
                }
            )),
            Ok(None) => {}
            Err(e) => out.push(format!("guardian: {}: {e}", path.display())),
        }
    }
    out
}

/// `openvpn-client __guardian PID`: the guardian process's main (`PID`: the process it
/// watches, for the log).
pub fn main(args: &[String]) -> anyhow::Result<()> {
    let watched = args.first().map(String::as_str).unwrap_or("?");
    let lines = serve(std::io::stdin().lock());
    let mut err = std::io::stderr();
    for l in &lines {
        let _ = writeln!(err, "{l} (left by process {watched})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_lines_round_trip_and_bad_ones_stop_it() {
        let (p, o) = parse_watch("watch /run/x%20y/tun0.journal 12-34-5").expect("parse");
        assert_eq!(p, PathBuf::from("/run/x y/tun0.journal"));
        assert_eq!(o, "12-34-5");
        for bad in [
            "",
            "watch",
            "watch /a",
            "watch /a b c",
            "frob /a b",
            "watch  b",
        ] {
            assert!(parse_watch(bad).is_err(), "{bad:?}");
        }
        let out = serve(std::io::Cursor::new("bogus\n"));
        assert!(out[0].contains("not a watch line"), "{out:?}");
    }

    #[test]
    fn serve_recovers_only_journals_still_owned_by_the_watched_run() {
        let dir = std::env::temp_dir().join(format!("ovrs-guardian-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let conf = dir.join("resolv.conf");
        let journal = |n: &str, owner: &str| {
            let backup = dir.join(format!("{n}.resolv.conf"));
            std::fs::write(&backup, "nameserver 192.0.2.53\n").expect("write");
            let j = dir.join(format!("{n}.journal"));
            std::fs::write(
                &j,
                format!(
                    "dev {n}\nowner {owner}\nresolv-conf {} {}\n",
                    conf.display(),
                    backup.display()
                ),
            )
            .expect("write");
            j
        };
        std::fs::write(&conf, "nameserver 10.8.0.1\n").expect("write");
        let mine = journal("a", "1-1-1");
        let theirs = journal("b", "2-2-2");
        let gone = dir.join("c.journal");
        let input = format!(
            "watch {} 1-1-1\nwatch {} 1-1-2\nwatch {} 1-1-3\n",
            escape(mine.to_str().expect("utf8")),
            escape(theirs.to_str().expect("utf8")),
            escape(gone.to_str().expect("utf8")),
        );
        let out = serve(std::io::Cursor::new(input));
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].contains("undid 1 change(s)"), "{out:?}");
        assert!(!mine.exists());
        assert!(theirs.exists(), "another run's journal is left alone");
        assert_eq!(
            std::fs::read_to_string(&conf).expect("read"),
            "nameserver 192.0.2.53\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
