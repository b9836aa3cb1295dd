//! The reliability layer of one key state: send window, receive window, ACKs.
//!
//! ```text
//!  messages in  ──▶ ReliableSend (≤ 6 unACKed, retransmit with doubling timeout)
//!                     └─▶ due messages ──▶ packets (with piggy-backed ACKs)
//!  packets in   ──▶ ReliableRecv (window of 12, in-order delivery, duplicates re-ACKed)
//!                     └─▶ AckQueue (IDs to ACK) + MRU re-ACK list
//! ```
//! Time is given by the caller; nothing here allocates per ACK.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use openvpn_wire::Opcode;

/// Messages in flight at most (OpenVPN 2.6: 6).
pub const SEND_WINDOW: u32 = 6;
/// Receive window (OpenVPN 2.6: 12).
pub const RECV_WINDOW: u32 = 12;
/// ACKed-by-higher-IDs count that triggers a fast retransmit.
const FAST_RETRANSMIT_ACKS: u8 = 3;
/// Size of the re-ACK list.
const MRU_LEN: usize = 8;

#[derive(Debug)]
struct Pending {
    id: u32,
    opcode: Opcode,
    payload: Vec<u8>,
    /// When it must be (re)sent; `None` = immediately.
    due: Option<Instant>,
    timeout: Duration,
    higher_acks: u8,
}

/// Send side: messages waiting for their ACK.
#[derive(Debug)]
pub struct ReliableSend {
    next_id: u32,
    pending: VecDeque<Pending>,
    initial_timeout: Duration,
}

/// One message ready to go on the wire.
#[derive(Debug)]
pub struct OutgoingMessage<'a> {
    /// Control opcode of the message.
    pub opcode: Opcode,
    /// Message packet ID.
    pub id: u32,
    /// Payload (TLS bytes, TLV, or empty).
    pub payload: &'a [u8],
}

impl ReliableSend {
    /// A send side whose first message gets ID `first_id`.
    pub fn new(first_id: u32, initial_timeout: Duration) -> Self {
        ReliableSend {
            next_id: first_id,
            pending: VecDeque::new(),
            initial_timeout,
        }
    }

    /// Whether one more message fits in the send window.
    pub fn can_queue(&self) -> bool {
        match self.pending.front() {
            None => true,
            Some(p) => self.next_id.wrapping_sub(p.id) < SEND_WINDOW,
        }
    }

    /// Queues a message to be sent as soon as possible; returns its ID.
    pub fn queue(&mut self, opcode: Opcode, payload: Vec<u8>) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.pending.push_back(Pending {
            id,
            opcode,
            payload,
            due: None,
            timeout: self.initial_timeout,
            higher_acks: 0,
        });
        id
    }

    /// Marks a message acknowledged. Returns true if it was pending.
    pub fn ack(&mut self, id: u32) -> bool {
        let Some(pos) = self.pending.iter().position(|p| p.id == id) else {
            return false;
        };
        self.pending.remove(pos);
        for p in self
            .pending
            .iter_mut()
            .filter(|p| p.id.wrapping_sub(id) > u32::MAX / 2)
        {
            // p.id < id: a later message got through before it.
            p.higher_acks = p.higher_acks.saturating_add(1);
            if p.higher_acks == FAST_RETRANSMIT_ACKS {
                p.due = None;
            }
        }
        true
    }

    /// Whether nothing is waiting for an ACK.
    pub fn all_acked(&self) -> bool {
        self.pending.is_empty()
    }

    /// The next ID that will be assigned.
    pub fn next_id(&self) -> u32 {
        self.next_id
    }

    /// The lowest-ID message due at `now`, marking it sent (its timeout doubles).
    pub fn next_due(&mut self, now: Instant) -> Option<OutgoingMessage<'_>> {
        let idx = self
            .pending
            .iter()
            .position(|p| p.due.is_none_or(|d| d <= now))?;
        let p = &mut self.pending[idx];
        p.due = Some(now + p.timeout);
        p.timeout = p.timeout.saturating_mul(2);
        p.higher_acks = 0;
        Some(OutgoingMessage {
            opcode: p.opcode,
            id: p.id,
            payload: &p.payload,
        })
    }

    /// Earliest retransmission time.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.pending.iter().filter_map(|p| p.due).min()
    }

    /// Whether some message is waiting to go out right now.
    pub fn has_immediate(&self) -> bool {
        self.pending.iter().any(|p| p.due.is_none())
    }

    /// Schedules every pending message for immediate retransmission (OpenVPN's burst).
    pub fn retransmit_all(&mut self) {
        for p in &mut self.pending {
            p.due = None;
            p.timeout = self.initial_timeout;
        }
    }
}

/// What the receive side made of one incoming message ID.
#[derive(Debug, PartialEq, Eq)]
pub enum RecvVerdict {
    /// New and stored; ACK it.
    Stored,
    /// Seen before; ACK it again, do not store.
    Duplicate,
    /// Outside the window; drop without ACK.
    OutOfWindow,
}

/// Receive side: reorders messages and hands them out strictly in order.
#[derive(Debug)]
pub struct ReliableRecv {
    next_expected: u32,
    buffer: BTreeMap<u32, (Opcode, Vec<u8>)>,
}

impl ReliableRecv {
    /// A receive side expecting `first_id` next.
    pub fn new(first_id: u32) -> Self {
        ReliableRecv {
            next_expected: first_id,
            buffer: BTreeMap::new(),
        }
    }

    /// Offers a received message.
    pub fn offer(&mut self, id: u32, opcode: Opcode, payload: &[u8]) -> RecvVerdict {
        let ahead = id.wrapping_sub(self.next_expected);
        if ahead > u32::MAX / 2 {
            return RecvVerdict::Duplicate;
        }
        if ahead >= RECV_WINDOW {
            return RecvVerdict::OutOfWindow;
        }
        if self.buffer.contains_key(&id) {
            return RecvVerdict::Duplicate;
        }
        self.buffer.insert(id, (opcode, payload.to_vec()));
        RecvVerdict::Stored
    }

    /// The next in-order message, if it has arrived.
    pub fn pop(&mut self) -> Option<(u32, Opcode, Vec<u8>)> {
        let id = self.next_expected;
        let (op, payload) = self.buffer.remove(&id)?;
        self.next_expected = id.wrapping_add(1);
        Some((id, op, payload))
    }

    /// The ID expected next.
    pub fn next_expected(&self) -> u32 {
        self.next_expected
    }
}

/// IDs to acknowledge, plus the most-recently-ACKed list used to re-ACK.
#[derive(Debug, Default)]
pub struct AckQueue {
    pending: VecDeque<u32>,
    recent: VecDeque<u32>,
}

impl AckQueue {
    /// Remembers that `id` must be acknowledged.
    pub fn push(&mut self, id: u32) {
        if !self.pending.contains(&id) {
            self.pending.push_back(id);
        }
    }

    /// Whether an ACK is owed.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Fills `out` with up to `max` IDs: owed ones first, then recent ones (re-ACK).
    pub fn fill(&mut self, out: &mut openvpn_wire::AckList, max: usize) {
        while out.len() < max {
            let Some(id) = self.pending.pop_front() else {
                break;
            };
            if !out.push(id) {
                self.pending.push_front(id);
                break;
            }
            self.recent.retain(|&r| r != id);
            self.recent.push_front(id);
            self.recent.truncate(MRU_LEN);
        }
        for &id in &self.recent {
            if out.len() >= max {
                break;
            }
            if !out.as_slice().contains(&id) {
                let _ = out.push(id);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn window_limits_in_flight_messages() {
        let mut s = ReliableSend::new(1, Duration::from_secs(2));
        for _ in 0..SEND_WINDOW {
            assert!(s.can_queue());
            s.queue(Opcode::ControlV1, vec![]);
        }
        assert!(!s.can_queue());
        assert!(s.ack(1));
        assert!(s.can_queue());
        assert!(!s.ack(1), "second ACK of the same ID is a no-op");
    }

    #[test]
    fn retransmit_timeout_doubles() {
        let now = t0();
        let mut s = ReliableSend::new(0, Duration::from_secs(2));
        s.queue(Opcode::HardResetClientV2, vec![]);
        assert_eq!(s.next_due(now).map(|m| m.id), Some(0));
        assert!(s.next_due(now).is_none());
        assert_eq!(s.next_timeout(), Some(now + Duration::from_secs(2)));
        let later = now + Duration::from_secs(2);
        assert!(s.next_due(later).is_some());
        assert_eq!(s.next_timeout(), Some(later + Duration::from_secs(4)));
    }

    #[test]
    fn fast_retransmit_after_three_higher_acks() {
        let now = t0();
        let mut s = ReliableSend::new(1, Duration::from_secs(2));
        for _ in 0..4 {
            s.queue(Opcode::ControlV1, vec![]);
        }
        while s.next_due(now).is_some() {}
        s.ack(2);
        s.ack(3);
        assert!(!s.has_immediate());
        s.ack(4);
        assert!(s.has_immediate());
        assert_eq!(s.next_due(now).map(|m| m.id), Some(1));
    }

    #[test]
    fn receive_reorders_and_detects_duplicates() {
        let mut r = ReliableRecv::new(1);
        assert_eq!(r.offer(2, Opcode::ControlV1, b"b"), RecvVerdict::Stored);
        assert!(r.pop().is_none());
        assert_eq!(r.offer(1, Opcode::ControlV1, b"a"), RecvVerdict::Stored);
        assert_eq!(r.offer(1, Opcode::ControlV1, b"a"), RecvVerdict::Duplicate);
        assert_eq!(r.pop().map(|m| m.2), Some(b"a".to_vec()));
        assert_eq!(r.pop().map(|m| m.2), Some(b"b".to_vec()));
        assert_eq!(r.offer(1, Opcode::ControlV1, b"a"), RecvVerdict::Duplicate);
        assert_eq!(
            r.offer(3 + RECV_WINDOW, Opcode::ControlV1, b""),
            RecvVerdict::OutOfWindow
        );
    }

    #[test]
    fn acks_prefer_owed_then_recent() {
        let mut q = AckQueue::default();
        for id in 0..6 {
            q.push(id);
        }
        let mut a = openvpn_wire::AckList::new();
        q.fill(&mut a, 4);
        assert_eq!(a.as_slice(), &[0, 1, 2, 3]);
        let mut b = openvpn_wire::AckList::new();
        q.fill(&mut b, 4);
        assert_eq!(&b.as_slice()[..2], &[4, 5]);
        assert_eq!(b.len(), 4, "free slots re-ACK recent IDs");
        assert!(!q.has_pending());
    }
}
