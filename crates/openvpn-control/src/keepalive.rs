//! Keepalive timers (`ping`, `ping-restart`), sans-I/O.

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
}
