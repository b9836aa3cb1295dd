//! Replay protection (`data.md` §5): the sliding window shared by the data channel
//! (short form, time = 0) and tls-auth / tls-crypt (long form `id ‖ time`).

/// Long-form packet id of tls-auth / tls-crypt packets: `replay_id ‖ replay_time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplayId {
    /// Packet counter, starting at 1 (0 is never valid).
    pub id: u32,
    /// Sender's session start time (Unix seconds); only changes when `id` wraps.
    pub time: u32,
}

impl ReplayId {
    /// Wire form: `id (u32 BE) ‖ time (u32 BE)`.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.id.to_be_bytes());
        b[4..].copy_from_slice(&self.time.to_be_bytes());
        b
    }

    /// Reads the wire form.
    pub fn from_bytes(b: &[u8; 8]) -> Self {
        Self {
            id: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            time: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

const UNSEEN: u64 = 0;
const EXPIRED: u64 = u64::MAX;
/// How often (seconds) `mark` runs the expiry pass.
const REAP_INTERVAL: u64 = 5;
/// Largest window 2.6 accepts (`--replay-window`).
const MAX_WINDOW: u32 = 65536;

/// Receiver replay state: highest accepted id `H`, its time `T`, and one slot per id in
/// `H-n+1..=H` that is unseen, seen at some time, or expired.
///
/// Use [`check`](Self::check) before (cheap pre-filter) and after authentication, and
/// [`mark`](Self::mark) only once the packet authenticated.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    window: u32,
    time_secs: u64,
    /// Highest accepted id (0 = nothing accepted yet).
    high: u32,
    /// Time belonging to `high`.
    high_time: u32,
    /// Ring of slots indexed by `id % window`: UNSEEN, EXPIRED or `seen_at + 1`.
    slots: Vec<u64>,
    last_reap: u64,
}

impl ReplayWindow {
    /// A window of `window` ids (2.6 default 64, capped at 65536; 0 = strict sequence) and a
    /// reorder time of `time_secs` seconds (default 15).
    pub fn new(window: u32, time_secs: u64) -> Self {
        let window = window.min(MAX_WINDOW);
        Self {
            window,
            time_secs,
            high: 0,
            high_time: 0,
            slots: vec![UNSEEN; window as usize],
            last_reap: 0,
        }
    }

    /// The 2.6 default: window 64, 15 seconds.
    pub fn default_openvpn() -> Self {
        Self::new(64, 15)
    }

    /// Highest accepted `(id, time)` so far (`id` 0 before the first packet).
    pub fn highest(&self) -> ReplayId {
        ReplayId {
            id: self.high,
            time: self.high_time,
        }
    }

    fn slot(&self, id: u32) -> usize {
        (id % self.window) as usize
    }

    /// Would `(id, time)` be accepted? Does not change the state.
    pub fn check(&self, id: u32, time: u32) -> bool {
        if id == 0 {
            return false;
        }
        if time != self.high_time {
            return time > self.high_time;
        }
        if id > self.high {
            return self.window > 0 || self.high == 0 || id == self.high.wrapping_add(1);
        }
        if self.window == 0 {
            return false;
        }
        let back = self.high - id;
        back < self.window && self.slots[self.slot(id)] == UNSEEN
    }

    /// Records `(id, time)` as seen at `now_secs`. Call only after [`check`](Self::check)
    /// returned true and the packet authenticated; an id that `check` rejects is ignored.
    pub fn mark(&mut self, id: u32, time: u32, now_secs: u64) {
        if !self.check(id, time) {
            return;
        }
        if self.window == 0 {
            self.high = id;
            self.high_time = time;
            return;
        }
        if time > self.high_time || (id > self.high && id - self.high >= self.window) {
            self.slots.fill(UNSEEN);
            self.high = id;
            self.high_time = time;
        } else if id > self.high {
            for i in self.high + 1..id {
                let s = self.slot(i);
                self.slots[s] = UNSEEN;
            }
            self.high = id;
        }
        let s = self.slot(id);
        self.slots[s] = now_secs.saturating_add(1).min(EXPIRED - 1);
        if now_secs >= self.last_reap.saturating_add(REAP_INTERVAL) {
            self.reap(now_secs);
        }
    }

    /// Expiry pass: the newest slot seen more than `time_secs` ago and every older slot become
    /// expired, so late reordered packets are refused. `mark` runs it every 5 seconds.
    pub fn reap(&mut self, now_secs: u64) {
        self.last_reap = now_secs;
        if self.window == 0 || self.high == 0 {
            return;
        }
        let span = self.window.min(self.high);
        let mut expire_from = None;
        for back in 0..span {
            let v = self.slots[self.slot(self.high - back)];
            if v != UNSEEN && v != EXPIRED && (v - 1).saturating_add(self.time_secs) < now_secs {
                expire_from = Some(back);
                break;
            }
        }
        if let Some(from) = expire_from {
            for back in from..span {
                let s = self.slot(self.high - back);
                self.slots[s] = EXPIRED;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn basic_window() {
        let mut w = ReplayWindow::new(64, 15);
        assert!(!w.check(0, 0));
        for id in [5u32, 3, 4, 1, 2, 70] {
            assert!(w.check(id, 0), "{id}");
            w.mark(id, 0, 0);
            assert!(!w.check(id, 0), "{id} replay");
        }
        assert!(!w.check(6, 0), "70 - 6 = 64 is outside the window");
        assert!(w.check(7, 0));
        assert!(w.check(69, 0));
    }

    #[test]
    fn time_epochs_long_form() {
        let mut w = ReplayWindow::new(64, 15);
        w.mark(10, 100, 0);
        assert!(!w.check(11, 99), "older time");
        assert!(w.check(1, 101), "newer time resets");
        w.mark(1, 101, 0);
        assert!(!w.check(10, 100));
        assert!(w.check(2, 101));
    }

    #[test]
    fn reordered_packets_expire_after_time_secs() {
        let mut w = ReplayWindow::new(64, 15);
        w.mark(1, 0, 100);
        w.mark(3, 0, 100);
        assert!(w.check(2, 0));
        w.mark(4, 0, 120); // reap: slot 3 (seen at 100) is older than 15 s
        assert!(!w.check(2, 0), "2 expired");
        assert!(w.check(5, 0));
    }

    #[test]
    fn strict_mode() {
        let mut w = ReplayWindow::new(0, 15);
        assert!(w.check(1, 0));
        w.mark(1, 0, 0);
        assert!(!w.check(3, 0));
        assert!(w.check(2, 0));
        assert!(!w.check(1, 0));
    }

    #[test]
    fn replay_id_bytes() {
        let r = ReplayId {
            id: 1,
            time: 0x61d3bf6c,
        };
        assert_eq!(r.to_bytes(), [0, 0, 0, 1, 0x61, 0xd3, 0xbf, 0x6c]);
        assert_eq!(ReplayId::from_bytes(&r.to_bytes()), r);
    }

    proptest! {
        // Window behaviour (no expiry) against a set model.
        #[test]
        fn window_matches_set_model(ids in proptest::collection::vec(0u32..300, 1..200)) {
            let n = 64u32;
            let mut w = ReplayWindow::new(n, u64::MAX / 4);
            let mut seen = BTreeSet::new();
            let mut high = 0u32;
            for id in ids {
                let model = id != 0 && (id > high || (high - id < n && !seen.contains(&id)));
                prop_assert_eq!(w.check(id, 0), model, "id {} high {}", id, high);
                if model {
                    w.mark(id, 0, 1);
                    seen.insert(id);
                    high = high.max(id);
                }
            }
        }
    }
}
