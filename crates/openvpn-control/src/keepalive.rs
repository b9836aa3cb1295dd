//! Keepalive timers (`ping`, `ping-restart`) and the `inactive` timer, sans-I/O.

use std::time::{Duration, Instant};

/// What a keepalive deadline asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepaliveAction {
    /// Nothing was sent for `ping` seconds: send the ping magic.
    SendPing,
    /// Nothing was received for `ping-restart` seconds: restart the connection.
    Restart,
}

/// Tracks when we last sent and received anything on the data or control channel.
#[derive(Debug, Clone)]
pub struct Keepalive {
    ping: Option<Duration>,
    ping_restart: Option<Duration>,
    last_sent: Instant,
    last_received: Instant,
}

impl Keepalive {
    /// New timers; `None` disables one.
    pub fn new(now: Instant, ping: Option<Duration>, ping_restart: Option<Duration>) -> Self {
        Keepalive {
            ping: ping.filter(|d| !d.is_zero()),
            ping_restart: ping_restart.filter(|d| !d.is_zero()),
            last_sent: now,
            last_received: now,
        }
    }

    /// Changes the intervals (e.g. after PUSH_REPLY).
    pub fn set(&mut self, ping: Option<Duration>, ping_restart: Option<Duration>) {
        self.ping = ping.filter(|d| !d.is_zero());
        self.ping_restart = ping_restart.filter(|d| !d.is_zero());
    }

    /// The `ping-restart` interval.
    pub fn ping_restart(&self) -> Option<Duration> {
        self.ping_restart
    }

    /// Something was sent.
    pub fn on_sent(&mut self, now: Instant) {
        self.last_sent = now;
    }

    /// Something authenticated was received.
    pub fn on_received(&mut self, now: Instant) {
        self.last_received = now;
    }

    /// When `ping-restart` fires if nothing more is received (`None` without `ping-restart`).
    pub fn restart_deadline(&self) -> Option<Instant> {
        self.ping_restart.map(|r| self.last_received + r)
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let a = self.ping.map(|p| self.last_sent + p);
        let b = self.ping_restart.map(|r| self.last_received + r);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The action due at `now`, if any. `Restart` wins over `SendPing`.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<KeepaliveAction> {
        if self
            .ping_restart
            .is_some_and(|r| now >= self.last_received + r)
        {
            return Some(KeepaliveAction::Restart);
        }
        if self.ping.is_some_and(|p| now >= self.last_sent + p) {
            self.last_sent = now;
            return Some(KeepaliveAction::SendPing);
        }
        None
    }
}

/// `inactive N [BYTES]`: the tunnel ends after `N` seconds in which fewer than `BYTES`
/// (default 0: any packet) of tunnel payload passed, both directions combined. Pings,
/// OCC and control packets are not traffic. As in OpenVPN 2.6, the count is kept from the
/// last time it reached `BYTES` (which restarts the `N` seconds), not per fixed window.
#[derive(Debug, Clone)]
pub struct Inactivity {
    timeout: Duration,
    min_bytes: u64,
    bytes: u64,
    deadline: Instant,
}

impl Inactivity {
    /// Starts the timer at `now`.
    pub fn new(now: Instant, timeout: Duration, min_bytes: u64) -> Self {
        Inactivity {
            timeout,
            min_bytes,
            bytes: 0,
            deadline: now + timeout,
        }
    }

    /// `n` bytes of tunnel payload were read from or written to the tun device (0: nothing
    /// happened).
    pub fn on_traffic(&mut self, now: Instant, n: u64) {
        if n == 0 {
            return;
        }
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes >= self.min_bytes {
            self.bytes = 0;
            self.deadline = now + self.timeout;
        }
    }

    /// When the tunnel is inactive if no more traffic comes.
    pub fn poll_timeout(&self) -> Instant {
        self.deadline
    }

    /// Whether the tunnel is inactive at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ping_then_restart() {
        let t = Instant::now();
        let mut k = Keepalive::new(
            t,
            Some(Duration::from_secs(10)),
            Some(Duration::from_secs(60)),
        );
        assert_eq!(k.poll_timeout(), Some(t + Duration::from_secs(10)));
        assert_eq!(k.handle_timeout(t + Duration::from_secs(5)), None);
        assert_eq!(
            k.handle_timeout(t + Duration::from_secs(10)),
            Some(KeepaliveAction::SendPing)
        );
        assert_eq!(k.poll_timeout(), Some(t + Duration::from_secs(20)));
        assert_eq!(k.restart_deadline(), Some(t + Duration::from_secs(60)));
        k.on_received(t + Duration::from_secs(30));
        assert_eq!(k.restart_deadline(), Some(t + Duration::from_secs(90)));
        assert_eq!(
            k.handle_timeout(t + Duration::from_secs(89)),
            Some(KeepaliveAction::SendPing)
        );
        assert_eq!(
            k.handle_timeout(t + Duration::from_secs(90)),
            Some(KeepaliveAction::Restart)
        );
    }

    #[test]
    fn inactivity_counts_both_directions_up_to_the_minimum() {
        let t = Instant::now();
        let s = Duration::from_secs;
        // No minimum: any packet restarts the timer.
        let mut i = Inactivity::new(t, s(10), 0);
        assert_eq!(i.poll_timeout(), t + s(10));
        i.on_traffic(t + s(4), 1);
        assert_eq!(i.poll_timeout(), t + s(14));
        i.on_traffic(t + s(5), 0);
        assert_eq!(i.poll_timeout(), t + s(14));
        assert!(!i.expired(t + s(13)) && i.expired(t + s(14)));
        // A minimum: the timer restarts only once that many bytes passed.
        let mut i = Inactivity::new(t, s(10), 1000);
        i.on_traffic(t + s(1), 600);
        assert_eq!(i.poll_timeout(), t + s(10));
        i.on_traffic(t + s(2), 399);
        assert!(i.expired(t + s(10)));
        i.on_traffic(t + s(3), 1);
        assert_eq!(i.poll_timeout(), t + s(13));
        // The count starts again from zero after a restart.
        i.on_traffic(t + s(5), 999);
        assert_eq!(i.poll_timeout(), t + s(13));
    }
}
