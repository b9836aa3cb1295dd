//! `RouteManager`: installs routes and DNS for one tunnel, records exactly what it changed in
//! memory and in a journal file, and undoes exactly that on `cleanup()`, on drop, or — after a
//! crash — with [`RouteManager::recover`].
//!
//! ```text
//!  install(route) ──netlink──▶ kernel        then append  "route 0.0.0.0/1 dev tun0"
//!  apply_dns(...) ──busctl / resolv.conf──▶  then append  "resolv-conf /etc/resolv.conf BACKUP"
//!  cleanup() / Drop / recover(journal): undo every line, last first; delete the journal
//! ```
//!
//! Journal (`/run/openvpn-rs/<dev>.ns<inode>.journal` by default: the tun device and the
//! network namespace, so that clients in two namespaces with the same device name never share
//! one), one change per line:
//! ```text
//! dev tun0
//! netns net:[4026531840]
//! owner 4711-1732550000123456789-1
//! route 198.51.100.10/32 via 192.0.2.1 dev eth0
//! route 0.0.0.0/1 dev tun0
//! resolv-conf /etc/resolv.conf /run/openvpn-rs/tun0.resolv.conf
//! resolved 7
//! ```
//! A route is journaled after the kernel accepted it, so the journal never names a route that
//! someone else added (an existing identical route is left alone and not journaled). A DNS
//! change is journaled before it is made (undoing it is harmless if it never happened).
//!
//! Ownership: the manager holds an exclusive `flock` on its journal for as long as it lives;
//! the kernel drops the lock when the process dies, even on `kill -9`. Whoever recovers a
//! journal ([`RouteManager::new`] on the same path, [`RouteManager::recover_stale`],
//! [`RouteManager::recover_owned`] in a guardian process) takes the lock first, so a journal
//! that a live process owns is never undone, and two recoverers never undo one journal at
//! once. The `owner` line is a token unique to one manager: a guardian undoes a journal only
//! if it still carries the token of the run it watched.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::TunError;
use crate::dns::{self, DnsBackend, DnsSettings, ResolvedCall};
use crate::netlink::{Netlink, RouteMsg};
use crate::route::RouteSpec;

/// The directory of the default journals.
pub const DEFAULT_JOURNAL_DIR: &str = "/run/openvpn-rs";

/// One change the manager made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalEntry {
    /// A route it added.
    Route(RouteSpec),
    /// A rewritten `resolv.conf` and the file holding its original bytes.
    ResolvConf {
        /// The rewritten file.
        path: PathBuf,
        /// The exact original contents.
        backup: PathBuf,
    },
    /// systemd-resolved settings on a link (undone with `RevertLink`).
    Resolved {
        /// Interface index.
        ifindex: u32,
    },
    /// A `dns-updown` command ran with `dns-up` (undone by running it with `dns-down`).
    DnsScript {
        /// Interface index.
        ifindex: u32,
        /// Interface name.
        dev: String,
        /// The command (`/bin/sh -c`); one line.
        command: String,
    },
}

impl fmt::Display for JournalEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalEntry::Route(r) => write!(f, "route {r}"),
            JournalEntry::ResolvConf { path, backup } => {
                write!(f, "resolv-conf {} {}", path.display(), backup.display())
            }
            JournalEntry::Resolved { ifindex } => write!(f, "resolved {ifindex}"),
            JournalEntry::DnsScript {
                ifindex,
                dev,
                command,
            } => write!(f, "dns-script {ifindex} {dev} {command}"),
        }
    }
}

impl JournalEntry {
    /// Parses one journal line (the `Display` form).
    pub fn parse(line: &str) -> Option<JournalEntry> {
        let (kind, rest) = line.trim().split_once(' ')?;
        match kind {
            "route" => RouteSpec::parse(rest).map(JournalEntry::Route),
            "resolv-conf" => {
                let (path, backup) = rest.split_once(' ')?;
                Some(JournalEntry::ResolvConf {
                    path: path.into(),
                    backup: backup.trim().into(),
                })
            }
            "resolved" => rest
                .trim()
                .parse()
                .ok()
                .map(|ifindex| JournalEntry::Resolved { ifindex }),
            "dns-script" => {
                let (ifindex, rest) = rest.trim_start().split_once(' ')?;
                let (dev, command) = rest.split_once(' ')?;
                let command = command.trim();
                if dev.is_empty() || command.is_empty() {
                    return None;
                }
                Some(JournalEntry::DnsScript {
                    ifindex: ifindex.parse().ok()?,
                    dev: dev.to_owned(),
                    command: command.to_owned(),
                })
            }
            _ => None,
        }
    }
}

/// A parsed journal: the device it belongs to and its changes in the order they were made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Journal {
    /// The tun device (from the `dev` line).
    pub dev: Option<String>,
    /// The network namespace the journal was written in (`netns net:[…]` line, as
    /// `/proc/self/ns/net` reads; absent in older journals).
    pub netns: Option<String>,
    /// The token of the manager that wrote it (`owner` line; absent in older journals).
    pub owner: Option<String>,
    /// The changes, oldest first.
    pub entries: Vec<JournalEntry>,
}

impl Journal {
    /// Parses journal text; unreadable lines are skipped with a warning (a crash may have cut
    /// the last one short).
    pub fn parse(text: &str) -> Journal {
        let mut j = Journal::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(dev) = line.strip_prefix("dev ") {
                j.dev = Some(dev.trim().to_owned());
            } else if let Some(ns) = line.strip_prefix("netns ") {
                j.netns = Some(ns.trim().to_owned());
            } else if let Some(o) = line.strip_prefix("owner ") {
                j.owner = Some(o.trim().to_owned());
            } else if let Some(e) = JournalEntry::parse(line) {
                j.entries.push(e);
            } else {
                tracing::warn!(%line, "ignoring an unreadable journal line");
            }
        }
        j
    }
}

/// What [`RouteManager::recover`] undid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoverReport {
    /// Entries undone (or already gone).
    pub undone: Vec<JournalEntry>,
    /// Entries that could not be undone, with the reason.
    pub failed: Vec<(JournalEntry, String)>,
}

/// Installs routes and DNS for one tunnel and takes them away again, exactly.
#[derive(Debug)]
pub struct RouteManager {
    nl: Netlink,
    dev: String,
    journal: PathBuf,
    entries: Vec<JournalEntry>,
    owner: String,
    /// The journal, open and exclusively `flock`ed while this manager lives.
    _lock: File,
}

/// How long [`RouteManager::new`] waits for another process that holds the lock of a journal
/// at the same path (a guardian or another run recovering it) before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// A journal file opened and exclusively locked by us, with its text as read under the lock.
struct Claimed {
    _file: File,
    text: String,
}

enum Claim {
    /// Locked by us; still the file at the path.
    Ours(Claimed),
    /// Another process holds the lock (for all of `wait`).
    Busy,
    /// No file at the path (any more).
    Gone,
}

/// Opens the journal at `path` and takes its exclusive lock, trying for up to `wait`; checks
/// that the locked file is still the one at `path` (a recoverer may have deleted it and a new
/// run created another one meanwhile).
fn claim(path: &Path, wait: Duration) -> Result<Claim, TunError> {
    let jerr = |source: io::Error| TunError::Journal {
        path: path.to_owned(),
        source,
    };
    let deadline = Instant::now() + wait;
    loop {
        let mut f = match std::fs::OpenOptions::new().read(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Claim::Gone),
            Err(e) => return Err(jerr(e)),
        };
        if !try_lock(&f).map_err(jerr)? {
            if Instant::now() >= deadline {
                return Ok(Claim::Busy);
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let held = f.metadata().map_err(jerr)?;
        match std::fs::metadata(path) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {}
            Ok(_) => continue, // replaced: try the new one
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Claim::Gone),
            Err(e) => return Err(jerr(e)),
        }
        let mut text = String::new();
        f.read_to_string(&mut text).map_err(jerr)?;
        return Ok(Claim::Ours(Claimed { _file: f, text }));
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(false)` when another open file holds the lock.
fn try_lock(f: &File) -> io::Result<bool> {
    // SAFETY: flock on a descriptor owned by `f`, which outlives the call; no pointers.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// A token no other manager has: pid, the time, and a counter.
fn new_owner_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Undoes the entries of a parsed journal, last first.
fn undo_all(nl: &Netlink, entries: Vec<JournalEntry>) -> RecoverReport {
    let mut report = RecoverReport::default();
    for e in entries.into_iter().rev() {
        match undo(nl, &e) {
            Ok(()) => report.undone.push(e),
            Err(err) => report.failed.push((e, err.to_string())),
        }
    }
    report
}

impl RouteManager {
    /// The default journal path for device `dev` in this thread's network namespace:
    /// `/run/openvpn-rs/<dev>.ns<inode>.journal`.
    pub fn default_journal(dev: &str) -> PathBuf {
        RouteManager::journal_in(Path::new(DEFAULT_JOURNAL_DIR), dev)
    }

    /// The journal path for device `dev` in `dir`: `<dev>.ns<inode>.journal`, where `inode`
    /// names this thread's network namespace (as `/proc/thread-self/ns/net` does), so that
    /// clients in different namespaces with the same device name never share a journal.
    /// `<dev>.journal` when the namespace cannot be read (no /proc). Journals of the older
    /// `<dev>.journal` form are still recovered by [`RouteManager::recover_stale`].
    pub fn journal_in(dir: &Path, dev: &str) -> PathBuf {
        dir.join(journal_name(dev, current_netns().as_deref()))
    }

    /// A manager for tun device `dev` journaling to `journal`.
    ///
    /// A journal left at that path by a crashed run is recovered first; one whose lock a
    /// live process holds (for more than a few seconds) is an error, not undone. The
    /// directory is created if needed.
    pub fn new(dev: &str, journal: impl Into<PathBuf>) -> Result<RouteManager, TunError> {
        RouteManager::new_waiting(dev, journal.into(), LOCK_WAIT)
    }

    fn new_waiting(dev: &str, journal: PathBuf, wait: Duration) -> Result<RouteManager, TunError> {
        let jerr = |source: io::Error| TunError::Journal {
            path: journal.clone(),
            source,
        };
        if let Some(dir) = journal.parent() {
            std::fs::create_dir_all(dir).map_err(jerr)?;
        }
        let owner = new_owner_token();
        // Written and locked under a temporary name, then linked into place (fails if a file
        // is there): nobody ever sees our journal unlocked or without its header.
        let mut tmp_name = journal.clone().into_os_string();
        tmp_name.push(format!(".tmp-{owner}"));
        let tmp = PathBuf::from(tmp_name);
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(jerr)?;
        let written = (|| -> io::Result<()> {
            if !try_lock(&f)? {
                return Err(io::Error::other("cannot lock a new journal"));
            }
            writeln!(f, "dev {dev}")?;
            if let Some(ns) = current_netns() {
                writeln!(f, "netns {ns}")?;
            }
            writeln!(f, "owner {owner}")?;
            f.sync_all()
        })();
        let linked = written.map_err(jerr).and_then(|()| loop {
            match std::fs::hard_link(&tmp, &journal) {
                Ok(()) => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => break Err(jerr(e)),
            }
            // A journal left by a previous run at this path.
            match claim(&journal, wait)? {
                Claim::Ours(c) => {
                    let j = Journal::parse(&c.text);
                    let report = undo_all(&Netlink::new(), j.entries);
                    if !report.failed.is_empty() {
                        break Err(TunError::Journal {
                            path: journal.clone(),
                            source: io::Error::other(format!(
                                "cannot undo what a previous run journaled: {:?}",
                                report.failed
                            )),
                        });
                    }
                    let _ = std::fs::remove_file(&journal);
                    tracing::warn!(path = %journal.display(), undone = report.undone.len(), "recovered a journal left by a previous run");
                }
                Claim::Gone => {}
                Claim::Busy => {
                    break Err(TunError::Journal {
                        path: journal.clone(),
                        source: io::Error::new(
                            io::ErrorKind::WouldBlock,
                            "a running process owns this journal (is another client using the same device?)",
                        ),
                    });
                }
            }
        });
        let _ = std::fs::remove_file(&tmp);
        linked?;
        Ok(RouteManager {
            nl: Netlink::new(),
            dev: dev.to_owned(),
            journal,
            entries: Vec::new(),
            owner,
            _lock: f,
        })
    }

    /// The token in this manager's `owner` line (for [`RouteManager::recover_owned`]).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The tun device this manager belongs to.
    pub fn dev(&self) -> &str {
        &self.dev
    }

    /// The journal file.
    pub fn journal_path(&self) -> &Path {
        &self.journal
    }

    /// What the manager changed so far, oldest first.
    pub fn entries(&self) -> &[JournalEntry] {
        &self.entries
    }

    /// Adds one route and journals it. A route that already exists is left alone and not
    /// journaled (it is not ours to remove).
    pub fn install(&mut self, spec: &RouteSpec) -> Result<(), TunError> {
        let msg = route_msg(&self.nl, spec)?;
        match self.nl.add_route(&msg) {
            Ok(()) => {}
            Err(TunError::Netlink { source, .. })
                if source.raw_os_error() == Some(libc::EEXIST) =>
            {
                tracing::warn!(route = %spec, "route exists already; leaving it alone");
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        tracing::info!(route = %spec, "route added");
        self.record(JournalEntry::Route(spec.clone()))
    }

    /// Installs a plan in order; stops at the first error (what was added stays journaled and
    /// is removed by `cleanup`).
    pub fn install_all(&mut self, plan: &[RouteSpec]) -> Result<(), TunError> {
        plan.iter().try_for_each(|r| self.install(r))
    }

    /// Applies DNS settings to link `ifindex` with `backend`.
    pub fn apply_dns(
        &mut self,
        ifindex: u32,
        settings: &DnsSettings,
        backend: &DnsBackend,
    ) -> Result<(), TunError> {
        if settings.is_empty() {
            return Ok(());
        }
        match backend {
            DnsBackend::None => Ok(()),
            DnsBackend::Resolved => {
                self.record(JournalEntry::Resolved { ifindex })?;
                for call in dns::resolved_plan(ifindex, settings) {
                    call.call()?;
                }
                tracing::info!(ifindex, "DNS set through systemd-resolved");
                Ok(())
            }
            DnsBackend::Script(command) => {
                if command.contains(['\n', '\r']) || command.trim().is_empty() {
                    return Err(TunError::Command {
                        command: command.clone(),
                        status: "not run".into(),
                        stderr: "a dns-updown command must be one non-empty line".into(),
                    });
                }
                self.record(JournalEntry::DnsScript {
                    ifindex,
                    dev: self.dev.clone(),
                    command: command.trim().to_owned(),
                })?;
                dns::run_updown(
                    command,
                    &dns::updown_env(true, &self.dev, ifindex, settings),
                )?;
                tracing::info!(command = %command, "DNS handed to the dns-updown command");
                Ok(())
            }
            DnsBackend::ResolvConf(path) => {
                let jerr = |source: io::Error| TunError::Journal {
                    path: path.clone(),
                    source,
                };
                let original = std::fs::read(path).map_err(jerr)?;
                let backup = self.journal.with_extension("resolv.conf");
                let mut f = std::fs::File::create(&backup).map_err(jerr)?;
                f.write_all(&original).map_err(jerr)?;
                f.sync_all().map_err(jerr)?;
                self.record(JournalEntry::ResolvConf {
                    path: path.clone(),
                    backup,
                })?;
                let text = dns::render_resolv_conf(&String::from_utf8_lossy(&original), settings);
                dns::write_in_place(path, text.as_bytes()).map_err(jerr)?;
                tracing::info!(path = %path.display(), "DNS written to resolv.conf");
                Ok(())
            }
        }
    }

    /// Undoes every change, last first, and deletes the journal. Changes that are already gone
    /// (a route that left with its device) count as undone. Returns the first failure; the
    /// journal is kept then, so that `recover` can retry.
    pub fn cleanup(&mut self) -> Result<(), TunError> {
        let entries = std::mem::take(&mut self.entries);
        let mut first_err = None;
        for e in entries.iter().rev() {
            if let Err(err) = undo(&self.nl, e) {
                tracing::warn!(entry = %e, %err, "cannot undo");
                first_err.get_or_insert(err);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => {
                let _ = std::fs::remove_file(&self.journal);
                Ok(())
            }
        }
    }

    /// Undoes what a journal records (after a crash or `kill -9`) and deletes it.
    ///
    /// Unconditional: the caller knows the journal's owner is gone (the lock is not
    /// consulted). Prefer [`RouteManager::recover_owned`] or
    /// [`RouteManager::recover_stale`] when another process might still own it.
    pub fn recover(journal: &Path) -> Result<RecoverReport, TunError> {
        let text = std::fs::read_to_string(journal).map_err(|source| TunError::Journal {
            path: journal.to_owned(),
            source,
        })?;
        let j = Journal::parse(&text);
        let report = undo_all(&Netlink::new(), j.entries);
        if report.failed.is_empty() {
            let _ = std::fs::remove_file(journal);
        }
        Ok(report)
    }

    /// Recovers `journal` only if it is still the one manager `owner` wrote
    /// ([`RouteManager::owner`]) and no live process holds it: what a guardian does once
    /// the process it watched has died. Waits up to `wait` for the lock (a dying process
    /// releases it a moment after its other descriptors close). `Ok(None)`: nothing to do
    /// (no such file, another owner's journal, or a live process holds it).
    pub fn recover_owned(
        journal: &Path,
        owner: &str,
        wait: Duration,
    ) -> Result<Option<RecoverReport>, TunError> {
        let Claim::Ours(c) = claim(journal, wait)? else {
            return Ok(None);
        };
        let j = Journal::parse(&c.text);
        if j.owner.as_deref() != Some(owner) {
            return Ok(None);
        }
        let report = undo_all(&Netlink::new(), j.entries);
        if report.failed.is_empty() {
            let _ = std::fs::remove_file(journal);
        }
        Ok(Some(report))
    }

    /// Recovers every `*.journal` in `dir` whose owner is gone: no live process holds its
    /// lock, and its tun device no longer exists. Journals of live devices or held locks
    /// belong to running clients and are left alone, and so are journals written in another
    /// network namespace (whether their device lives cannot be seen from here, and their
    /// routes are not ours to touch). Journals of both names (`<dev>.ns<inode>.journal`,
    /// and the older `<dev>.journal`) are seen.
    pub fn recover_stale(dir: &Path) -> Vec<(PathBuf, Result<RecoverReport, TunError>)> {
        let nl = Netlink::new();
        let here = current_netns();
        let Ok(read) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for path in read.flatten().map(|e| e.path()) {
            if path.extension().is_none_or(|x| x != "journal") {
                continue;
            }
            let c = match claim(&path, Duration::ZERO) {
                Ok(Claim::Ours(c)) => c,
                Ok(Claim::Busy | Claim::Gone) => continue,
                Err(e) => {
                    out.push((path, Err(e)));
                    continue;
                }
            };
            let j = Journal::parse(&c.text);
            if !same_netns(j.netns.as_deref(), here.as_deref()) {
                continue;
            }
            let live = j.dev.is_some_and(|d| nl.link_index(&d).is_ok());
            if !live {
                let report = undo_all(&nl, j.entries);
                if report.failed.is_empty() {
                    let _ = std::fs::remove_file(&path);
                }
                out.push((path, Ok(report)));
            }
        }
        out
    }

    fn record(&mut self, e: JournalEntry) -> Result<(), TunError> {
        let jerr = |source: io::Error| TunError::Journal {
            path: self.journal.clone(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.journal)
            .map_err(jerr)?;
        writeln!(f, "{e}").map_err(jerr)?;
        f.sync_data().map_err(jerr)?;
        self.entries.push(e);
        Ok(())
    }
}

impl Drop for RouteManager {
    fn drop(&mut self) {
        if self.entries.is_empty() {
            let _ = std::fs::remove_file(&self.journal);
            return;
        }
        if crate::process::privileges_dropped() {
            // Without root nothing here can be undone (or the journal deleted): it stays for
            // a root process that watches it (the client's guardian) or the next start.
            tracing::info!(dev = %self.dev, journal = %self.journal.display(), "privileges were dropped (user/group): routes and DNS are left to the guardian");
            return;
        }
        if let Err(e) = self.cleanup() {
            tracing::warn!(dev = %self.dev, %e, "cleanup on drop failed; the journal is kept for recover");
        }
    }
}

fn route_msg(nl: &Netlink, spec: &RouteSpec) -> Result<RouteMsg, TunError> {
    Ok(RouteMsg {
        dest: spec.dest,
        prefix: spec.prefix,
        gateway: spec.gateway,
        ifindex: nl.link_index(&spec.dev)?,
        metric: spec.metric,
    })
}

fn undo(nl: &Netlink, e: &JournalEntry) -> Result<(), TunError> {
    match e {
        JournalEntry::Route(spec) => {
            // The device is gone: so are its routes.
            let Ok(msg) = route_msg(nl, spec) else {
                return Ok(());
            };
            match nl.del_route(&msg) {
                Ok(()) => {
                    tracing::info!(route = %spec, "route removed");
                    Ok(())
                }
                Err(TunError::Netlink { source, .. })
                    if matches!(
                        source.raw_os_error(),
                        Some(libc::ESRCH | libc::ENOENT | libc::ENODEV)
                    ) =>
                {
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        JournalEntry::ResolvConf { path, backup } => {
            let jerr = |source: io::Error| TunError::Journal {
                path: backup.clone(),
                source,
            };
            let original = std::fs::read(backup).map_err(jerr)?;
            dns::write_in_place(path, &original).map_err(jerr)?;
            let _ = std::fs::remove_file(backup);
            tracing::info!(path = %path.display(), "resolv.conf restored");
            Ok(())
        }
        JournalEntry::Resolved { ifindex } => {
            if nl.link_name(*ifindex).is_none() {
                return Ok(()); // resolved forgets a link that vanished
            }
            ResolvedCall::RevertLink { ifindex: *ifindex }.call()
        }
        JournalEntry::DnsScript {
            ifindex,
            dev,
            command,
        } => {
            let env = dns::updown_env(false, dev, *ifindex, &DnsSettings::default());
            dns::run_updown(command, &env)?;
            tracing::info!(command = %command, "dns-updown command ran with dns-down");
            Ok(())
        }
    }
}

/// `<dev>.ns<inode>.journal` for namespace `netns` (`net:[inode]`), or `<dev>.journal`.
fn journal_name(dev: &str, netns: Option<&str>) -> String {
    let inode = netns
        .and_then(|n| n.strip_prefix("net:["))
        .and_then(|n| n.strip_suffix(']'))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    match inode {
        Some(i) => format!("{dev}.ns{i}.journal"),
        None => format!("{dev}.journal"),
    }
}

/// This thread's network namespace as `/proc/thread-self/ns/net` names it (`net:[4026531840]`).
fn current_netns() -> Option<String> {
    std::fs::read_link("/proc/thread-self/ns/net")
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Whether a journal written in namespace `journal` belongs to namespace `here`; unknown on
/// either side (an older journal, no /proc) counts as the same.
fn same_netns(journal: Option<&str>, here: Option<&str>) -> bool {
    match (journal, here) {
        (Some(j), Some(h)) => j == h,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journals_of_other_namespaces_are_not_recovered() {
        let j = Journal::parse("dev tun0\nnetns net:[4026532001]\nroute ::/1 dev tun0\n");
        assert_eq!(j.netns.as_deref(), Some("net:[4026532001]"));
        assert_eq!(j.entries.len(), 1);
        assert!(same_netns(j.netns.as_deref(), Some("net:[4026532001]")));
        assert!(!same_netns(j.netns.as_deref(), Some("net:[4026531840]")));
        assert!(same_netns(None, Some("net:[4026531840]")), "older journals");
        assert!(current_netns().is_some_and(|n| n.starts_with("net:[")));
        // A stale journal from "another namespace" in a directory is left alone.
        let dir = std::env::temp_dir().join(format!("ovrs-netns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("ovrs-gone0.journal");
        std::fs::write(&path, "dev ovrs-gone0\nnetns net:[1]\n").expect("write");
        assert!(RouteManager::recover_stale(&dir).is_empty());
        assert!(path.exists());
        std::fs::write(&path, "dev ovrs-gone0\n").expect("write");
        assert_eq!(RouteManager::recover_stale(&dir).len(), 1);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ovrs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    fn dns() -> DnsSettings {
        DnsSettings {
            servers: vec!["10.8.0.1".parse().expect("ip")],
            search_domains: vec![],
            default_route: true,
        }
    }

    #[test]
    fn journal_names_carry_the_network_namespace() {
        assert_eq!(
            journal_name("tun0", Some("net:[4026531840]")),
            "tun0.ns4026531840.journal"
        );
        assert_eq!(journal_name("tun0", None), "tun0.journal");
        assert_eq!(journal_name("tun0", Some("net:[x/../y]")), "tun0.journal");
        let here = current_netns().expect("/proc");
        let inode = here.trim_start_matches("net:[").trim_end_matches(']');
        assert_eq!(
            RouteManager::journal_in(Path::new("/run/x"), "ovrs-t"),
            PathBuf::from(format!("/run/x/ovrs-t.ns{inode}.journal"))
        );
        assert!(RouteManager::default_journal("tun0").starts_with(DEFAULT_JOURNAL_DIR));
        // An old-named journal (no namespace in the name) is still recovered.
        let dir = temp_dir("oldname");
        let conf = dir.join("resolv.conf");
        std::fs::write(&conf, "nameserver 192.0.2.53\n").expect("write");
        let backup = dir.join("ovrs-gone1.resolv.conf");
        std::fs::write(&backup, "original\n").expect("write");
        let old = dir.join("ovrs-gone1.journal");
        std::fs::write(
            &old,
            format!(
                "dev ovrs-gone1\nresolv-conf {} {}\n",
                conf.display(),
                backup.display()
            ),
        )
        .expect("write");
        let r = RouteManager::recover_stale(&dir);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(std::fs::read_to_string(&conf).expect("read"), "original\n");
        assert!(!old.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_live_managers_journal_is_never_recovered_by_others() {
        let dir = temp_dir("live");
        let conf = dir.join("resolv.conf");
        std::fs::write(&conf, "nameserver 192.0.2.53\n").expect("write");
        // No such device, so only the lock says the owner is alive.
        let journal = dir.join("ovrs-nodev0.journal");
        let mut m = RouteManager::new("ovrs-nodev0", &journal).expect("manager");
        m.apply_dns(1, &dns(), &DnsBackend::ResolvConf(conf.clone()))
            .expect("apply");
        let text = std::fs::read_to_string(&journal).expect("journal");
        assert!(text.contains(&format!("owner {}", m.owner())), "{text}");
        assert!(RouteManager::recover_stale(&dir).is_empty());
        let owned = RouteManager::recover_owned(&journal, m.owner(), Duration::from_millis(50))
            .expect("recover_owned");
        assert!(owned.is_none(), "locked by a live manager");
        assert!(journal.exists());
        let e = RouteManager::new_waiting("ovrs-nodev0", journal.clone(), Duration::ZERO)
            .expect_err("in use");
        assert!(e.to_string().contains("running process owns"), "{e}");
        assert!(
            std::fs::read_to_string(&conf)
                .expect("read")
                .contains("10.8.0.1")
        );
        drop(m);
        assert_eq!(
            std::fs::read_to_string(&conf).expect("read"),
            "nameserver 192.0.2.53\n"
        );
        assert!(!journal.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn recover_owned_undoes_only_the_watched_runs_journal() {
        let dir = temp_dir("owned");
        let conf = dir.join("resolv.conf");
        let backup = dir.join("t.resolv.conf");
        let journal = dir.join("t.journal");
        let write = |owner: &str| {
            std::fs::write(&conf, "nameserver 10.8.0.1\n").expect("write");
            std::fs::write(&backup, "nameserver 192.0.2.53\n").expect("write");
            std::fs::write(
                &journal,
                format!(
                    "dev t\nowner {owner}\nresolv-conf {} {}\n",
                    conf.display(),
                    backup.display()
                ),
            )
            .expect("write");
        };
        // Another run's journal at the same path: left alone.
        write("1-2-3");
        let r = RouteManager::recover_owned(&journal, "1-2-4", Duration::ZERO).expect("ok");
        assert!(r.is_none());
        assert!(journal.exists());
        assert_eq!(
            std::fs::read_to_string(&conf).expect("read"),
            "nameserver 10.8.0.1\n"
        );
        // The watched run's journal: undone and deleted.
        let r = RouteManager::recover_owned(&journal, "1-2-3", Duration::ZERO)
            .expect("ok")
            .expect("recovered");
        assert_eq!(r.undone.len(), 1);
        assert!(!journal.exists());
        assert_eq!(
            std::fs::read_to_string(&conf).expect("read"),
            "nameserver 192.0.2.53\n"
        );
        assert!(
            RouteManager::recover_owned(&journal, "1-2-3", Duration::ZERO)
                .expect("ok")
                .is_none()
        );
        // A journal left at the path of a new manager is recovered by it first.
        write("9-9-9");
        let m = RouteManager::new("t", &journal).expect("manager");
        assert_eq!(
            std::fs::read_to_string(&conf).expect("read"),
            "nameserver 192.0.2.53\n"
        );
        assert_ne!(m.owner(), "9-9-9");
        let j = Journal::parse(&std::fs::read_to_string(&journal).expect("read"));
        assert_eq!(j.owner.as_deref(), Some(m.owner()));
        assert!(j.entries.is_empty());
        drop(m);
        assert!(!journal.exists());
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dns_script_runs_up_then_down_on_cleanup_and_after_a_crash() {
        let dir = temp_dir("dnsscript");
        let log = dir.join("calls");
        let command = format!(
            "echo \"$script_type $dev $dev_idx ${{dns_server_0_address_1:-}} ${{dns_search_domain_1:-}}\" >> '{}'",
            log.display()
        );
        let settings = DnsSettings {
            servers: vec!["10.8.0.1".parse().expect("ip")],
            search_domains: vec!["corp.example".into()],
            default_route: false,
        };
        let journal = dir.join("t1.journal");
        let backend = DnsBackend::Script(command.clone());
        let mut m = RouteManager::new("t1", &journal).expect("manager");
        m.apply_dns(9, &settings, &backend).expect("dns-up");
        let line = std::fs::read_to_string(&journal).expect("journal");
        let entry = Journal::parse(&line).entries.pop().expect("entry");
        assert_eq!(
            entry,
            JournalEntry::DnsScript {
                ifindex: 9,
                dev: "t1".into(),
                command: command.clone()
            }
        );
        assert_eq!(JournalEntry::parse(&entry.to_string()), Some(entry));
        drop(m);
        // Crash: recover runs dns-down.
        let m = RouteManager::new("t1", &journal).expect("manager");
        let mut m = m;
        m.apply_dns(9, &settings, &backend).expect("dns-up");
        std::mem::forget(m);
        RouteManager::recover(&journal).expect("recover");
        assert_eq!(
            std::fs::read_to_string(&log).expect("log"),
            "dns-up t1 9 10.8.0.1 corp.example\n\
             dns-down t1 9  \n\
             dns-up t1 9 10.8.0.1 corp.example\n\
             dns-down t1 9  \n"
        );
        // A multi-line command is refused before anything runs.
        let mut m = RouteManager::new("t2", dir.join("t2.journal")).expect("manager");
        assert!(
            m.apply_dns(9, &settings, &DnsBackend::Script("true\ntrue".into()))
                .is_err()
        );
        assert!(m.entries().is_empty());
        drop(m);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn journal_round_trips_and_skips_a_torn_last_line() {
        let text = "dev tun0\n\
                    route 198.51.100.10/32 via 192.0.2.1 dev eth0\n\
                    route ::/1 dev tun0 metric 5\n\
                    resolv-conf /etc/resolv.conf /run/openvpn-rs/tun0.resolv.conf\n\
                    resolved 7\n\
                    route 128.0.0";
        let j = Journal::parse(text);
        assert_eq!(j.dev.as_deref(), Some("tun0"));
        assert_eq!(j.entries.len(), 4);
        let back: Vec<String> = j.entries.iter().map(ToString::to_string).collect();
        assert_eq!(
            back.join("\n"),
            text.lines().skip(1).take(4).collect::<Vec<_>>().join("\n")
        );
        assert_eq!(j.entries[3], JournalEntry::Resolved { ifindex: 7 });
    }

    #[test]
    fn resolv_conf_backup_is_restored_exactly_by_recover() {
        let dir = std::env::temp_dir().join(format!("ovrs-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let conf = dir.join("resolv.conf");
        let original = b"nameserver 192.0.2.53\noptions edns0\n# no newline at end";
        std::fs::write(&conf, original).expect("write");
        let journal = dir.join("t0.journal");
        let mut m = RouteManager::new("t0", &journal).expect("manager");
        let dns = DnsSettings {
            servers: vec!["10.8.0.1".parse().expect("ip")],
            search_domains: vec!["vpn.example".into()],
            default_route: true,
        };
        m.apply_dns(1, &dns, &DnsBackend::ResolvConf(conf.clone()))
            .expect("apply");
        let now = std::fs::read_to_string(&conf).expect("read");
        assert!(
            now.contains("nameserver 10.8.0.1") && now.contains("options edns0"),
            "{now}"
        );
        // Crash: the manager vanishes without cleanup.
        std::mem::forget(m);
        let report = RouteManager::recover(&journal).expect("recover");
        assert_eq!(report.undone.len(), 1);
        assert_eq!(std::fs::read(&conf).expect("read"), original);
        assert!(!journal.exists());
        // And the normal path: cleanup on drop.
        let mut m = RouteManager::new("t0", &journal).expect("manager");
        m.apply_dns(1, &dns, &DnsBackend::ResolvConf(conf.clone()))
            .expect("apply");
        drop(m);
        assert_eq!(std::fs::read(&conf).expect("read"), original);
        assert!(!journal.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
