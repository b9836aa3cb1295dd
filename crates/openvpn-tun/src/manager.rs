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
//! Journal (`/run/openvpn-rs/<dev>.journal` by default), one change per line:
//! ```text
//! dev tun0
//! route 198.51.100.10/32 via 192.0.2.1 dev eth0
//! route 0.0.0.0/1 dev tun0
//! resolv-conf /etc/resolv.conf /run/openvpn-rs/tun0.resolv.conf
//! resolved 7
//! ```
//! A route is journaled after the kernel accepted it, so the journal never names a route that
//! someone else added (an existing identical route is left alone and not journaled). A DNS
//! change is journaled before it is made (undoing it is harmless if it never happened).

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

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
}

impl fmt::Display for JournalEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalEntry::Route(r) => write!(f, "route {r}"),
            JournalEntry::ResolvConf { path, backup } => {
                write!(f, "resolv-conf {} {}", path.display(), backup.display())
            }
            JournalEntry::Resolved { ifindex } => write!(f, "resolved {ifindex}"),
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
}

impl RouteManager {
    /// The default journal path for device `dev`: `/run/openvpn-rs/<dev>.journal`.
    pub fn default_journal(dev: &str) -> PathBuf {
        Path::new(DEFAULT_JOURNAL_DIR).join(format!("{dev}.journal"))
    }

    /// A manager for tun device `dev` journaling to `journal`.
    ///
    /// A journal left at that path by a crashed run is recovered first. The directory is
    /// created if needed.
    pub fn new(dev: &str, journal: impl Into<PathBuf>) -> Result<RouteManager, TunError> {
        let journal = journal.into();
        let jerr = |source: io::Error| TunError::Journal {
            path: journal.clone(),
            source,
        };
        if journal.exists() {
            let report = RouteManager::recover(&journal)?;
            tracing::warn!(path = %journal.display(), undone = report.undone.len(), "recovered a journal left by a previous run");
        }
        if let Some(dir) = journal.parent() {
            std::fs::create_dir_all(dir).map_err(jerr)?;
        }
        let mut f = std::fs::File::create(&journal).map_err(jerr)?;
        writeln!(f, "dev {dev}").map_err(jerr)?;
        if let Some(ns) = current_netns() {
            writeln!(f, "netns {ns}").map_err(jerr)?;
        }
        f.sync_all().map_err(jerr)?;
        Ok(RouteManager {
            nl: Netlink::new(),
            dev: dev.to_owned(),
            journal,
            entries: Vec::new(),
        })
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
    pub fn recover(journal: &Path) -> Result<RecoverReport, TunError> {
        let text = std::fs::read_to_string(journal).map_err(|source| TunError::Journal {
            path: journal.to_owned(),
            source,
        })?;
        let j = Journal::parse(&text);
        let nl = Netlink::new();
        let mut report = RecoverReport::default();
        for e in j.entries.into_iter().rev() {
            match undo(&nl, &e) {
                Ok(()) => report.undone.push(e),
                Err(err) => report.failed.push((e, err.to_string())),
            }
        }
        if report.failed.is_empty() {
            let _ = std::fs::remove_file(journal);
        }
        Ok(report)
    }

    /// Recovers every `*.journal` in `dir` whose tun device no longer exists (its owner
    /// crashed). Journals of live devices belong to running clients and are left alone, and
    /// so are journals written in another network namespace (whether their device lives
    /// cannot be seen from here, and their routes are not ours to touch).
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
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let j = Journal::parse(&text);
            if !same_netns(j.netns.as_deref(), here.as_deref()) {
                continue;
            }
            let live = j.dev.is_some_and(|d| nl.link_index(&d).is_ok());
            if !live {
                let r = RouteManager::recover(&path);
                out.push((path, r));
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
