//! The data channel of one peer: up to three keys by key ID, the send-key rule, compression
//! framing (and decompression of what a compressing peer sends) and keepalive-ping detection.
//! Shared by client and server drivers.
//!
//! ```text
//!  tun packet ─▶ seal(now, payload) ─▶ framing ─▶ DataSealer (newest usable key) ─▶ wire
//!  wire ─▶ open(now, packet) ─▶ DataOpener by key_id ─▶ unframe ─▶ Payload::{Ip, Ping, Occ}
//!                                                        └─▶ decompress ─▶ Payload::Decompressed
//! ```
//!
//! Nothing is ever compressed: a compressing framing sends its algorithm's uncompressed form.
//! A compressed packet from the peer is decompressed into a buffer the channel owns (sized
//! once, [`DataChannel::set_decompress_limit`]); corrupt or oversized ones are counted drops.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openvpn_crypto::{
    CipherKind, DataError, DataKeys, DataOpener, DataSealer, DigestKind, KeyBlock, PacketBuf, Role,
};
use openvpn_wire::compress::{
    COMP_ALGV2_INDICATOR_BYTE, COMP_ALGV2_UNCOMPRESSED, NO_COMPRESS_BYTE, NO_COMPRESS_BYTE_SWAP,
};
use openvpn_wire::{CompressionFraming, DataHeader, KeyId, PEER_ID_NONE, Unframed};
use rand_core::{CryptoRng, RngCore};

/// Bytes a decompressed payload may exceed the tun MTU by ([`decompress_limit`]): OpenVPN's
/// own buffers have room beyond the MTU, so a peer's payload of exactly its frame size fits.
pub const DECOMPRESS_HEADROOM: usize = 256;

/// The largest decompressed payload accepted with tun MTU `tun_mtu`: larger ones are dropped.
pub fn decompress_limit(tun_mtu: u16) -> usize {
    usize::from(tun_mtu) + DECOMPRESS_HEADROOM
}

/// After this long a new key is used for sending even if nothing arrived on it yet
/// (default of [`DataChannel::set_send_switch_delay`]).
const SEND_SWITCH_DELAY: Duration = Duration::from_secs(10);

/// The send-switch delay OpenVPN 2.6 uses for a key state: `min(hand-window, reneg-sec / 2)`
/// (`keys.md` §7.4). With `reneg-sec` shorter than twice the delay, a fixed delay would keep
/// both peers sending on the old key until the next renegotiation retires it.
pub fn send_switch_delay(hand_window: Duration, reneg_sec: Option<Duration>) -> Duration {
    match reneg_sec {
        Some(r) => hand_window.min(r / 2),
        None => hand_window,
    }
}

/// The sending half of one key, shared by the channel and every [`DataSender`].
struct SendKey {
    key_id: KeyId,
    sealer: DataSealer,
    /// Plaintext bytes sealed with this key (`reneg-bytes`), added per batch by the senders.
    bytes: AtomicU64,
    /// Packets sealed with this key (`reneg-pkts`), added per batch by the senders.
    packets: AtomicU64,
}

/// What a sender seals with: one consistent view of key, header and framing.
struct Snapshot {
    key: Arc<SendKey>,
    header: [u8; 4],
    header_len: usize,
    framing: CompressionFraming,
}

/// The published sealing state of one channel (read-mostly).
struct SendState {
    /// Bumped (under `current`'s lock) after every change of `current`.
    epoch: AtomicU64,
    current: Mutex<Option<Arc<Snapshot>>>,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
}

impl SendState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Snapshot>>> {
        // A panic elsewhere while holding the lock leaves a valid Option behind; keep going.
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A handle that seals packets for one [`DataChannel`] from any thread (see the module
/// documentation). Cheap to create; each sealing thread should own one. Counters
/// (`reneg-bytes`/`reneg-pkts`, [`DataStats`] tx) are collected locally and added to the channel
/// by [`DataSender::flush_counters`] (call it once per batch) and when the handle is dropped.
pub struct DataSender {
    state: Arc<SendState>,
    seen: u64,
    current: Option<Arc<Snapshot>>,
    pending_bytes: u64,
    pending_packets: u64,
}

impl std::fmt::Debug for DataSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataSender")
            .field("key", &self.current.as_ref().map(|s| s.key.key_id.value()))
            .finish()
    }
}

impl DataSender {
    fn new(state: Arc<SendState>) -> Self {
        DataSender {
            state,
            seen: u64::MAX,
            current: None,
            pending_bytes: 0,
            pending_packets: 0,
        }
    }

    /// Picks up a newly published send key / peer-id / framing (one atomic load when nothing
    /// changed).
    fn refresh(&mut self) {
        let epoch = self.state.epoch.load(Ordering::Acquire);
        if epoch != self.seen {
            self.flush_counters();
            self.current = self.state.lock().clone();
            self.seen = epoch;
        }
    }

    /// Whether the channel has a key to send with.
    pub fn can_send(&mut self) -> bool {
        self.refresh();
        self.current.is_some()
    }

    /// The key ID the next [`seal`](Self::seal) would use.
    pub fn key_id(&mut self) -> Option<KeyId> {
        self.refresh();
        self.current.as_ref().map(|s| s.key.key_id)
    }

    /// Seals `buf` (payload after its headroom) in place into a complete wire packet with the
    /// channel's current send key, exactly like [`DataChannel::seal`].
    pub fn seal(
        &mut self,
        buf: &mut PacketBuf,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(), DataError> {
        self.refresh();
        let Some(snap) = self.current.as_ref() else {
            return Err(DataError::BadHeader);
        };
        frame_in_place(snap.framing, buf);
        let len = buf.len() as u64;
        snap.key
            .sealer
            .seal(&snap.header[..snap.header_len], buf, rng)?;
        self.pending_bytes += len;
        self.pending_packets += 1;
        Ok(())
    }

    /// Adds the locally counted packets and bytes to the channel's counters.
    pub fn flush_counters(&mut self) {
        if self.pending_packets == 0 {
            return;
        }
        if let Some(snap) = &self.current {
            snap.key
                .bytes
                .fetch_add(self.pending_bytes, Ordering::Relaxed);
            snap.key
                .packets
                .fetch_add(self.pending_packets, Ordering::Relaxed);
        }
        self.state
            .tx_packets
            .fetch_add(self.pending_packets, Ordering::Relaxed);
        self.state
            .tx_bytes
            .fetch_add(self.pending_bytes, Ordering::Relaxed);
        self.pending_bytes = 0;
        self.pending_packets = 0;
    }
}

/// Applies `framing` to the payload in `buf` in place (headroom in front, room at the end),
/// exactly as [`CompressionFraming::encap`] does; never compresses.
fn frame_in_place(framing: CompressionFraming, buf: &mut PacketBuf) {
    let Some(&first) = buf.as_slice().first() else {
        return;
    };
    match framing.sends_as() {
        CompressionFraming::LzoStub => {
            if let Some(b) = buf.prepend(1).first_mut() {
                *b = NO_COMPRESS_BYTE;
            }
        }
        CompressionFraming::Stub => {
            buf.extend_from_slice(&[first]);
            if let Some(b) = buf.as_mut_slice().first_mut() {
                *b = NO_COMPRESS_BYTE_SWAP;
            }
        }
        CompressionFraming::StubV2 if first == COMP_ALGV2_INDICATOR_BYTE => {
            if let Some(h) = buf.prepend(2).get_mut(..2) {
                h.copy_from_slice(&[COMP_ALGV2_INDICATOR_BYTE, COMP_ALGV2_UNCOMPRESSED]);
            }
        }
        _ => {}
    }
}

impl Clone for DataSender {
    fn clone(&self) -> Self {
        DataSender::new(Arc::clone(&self.state))
    }
}

impl Drop for DataSender {
    fn drop(&mut self) {
        self.flush_counters();
    }
}

struct Slot {
    key_id: KeyId,
    send: Arc<SendKey>,
    opener: DataOpener,
    installed: Instant,
    confirmed: bool,
    /// Plaintext bytes opened with this key (`reneg-bytes`; sealed ones are in `send`).
    rx_bytes: u64,
    /// Packets opened with this key (`reneg-pkts`; sealed ones are in `send`).
    rx_packets: u64,
}

impl Slot {
    fn bytes(&self) -> u64 {
        self.rx_bytes + self.send.bytes.load(Ordering::Relaxed)
    }

    fn packets(&self) -> u64 {
        self.rx_packets + self.send.packets.load(Ordering::Relaxed)
    }
}

/// What an opened data packet carried.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload {
    /// An IP packet for the tun device (the range within the buffer).
    Ip(std::ops::Range<usize>),
    /// A keepalive ping.
    Ping,
    /// An OCC message (e.g. OCC_EXIT) — the range within the buffer. (A compressed one is
    /// copied to the start of the buffer, cut to the buffer's length.)
    Occ(std::ops::Range<usize>),
    /// An IP packet the peer compressed, decompressed into the channel's own buffer: read it
    /// with [`DataChannel::decompressed`] / [`DataChannel::decompressed_mut`] before the next
    /// [`DataChannel::open`].
    Decompressed,
}

/// Per-packet counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DataStats {
    /// Packets opened successfully.
    pub rx_packets: u64,
    /// Plaintext bytes received.
    pub rx_bytes: u64,
    /// Packets sealed.
    pub tx_packets: u64,
    /// Plaintext bytes sent.
    pub tx_bytes: u64,
    /// Dropped: no key for the key ID.
    pub no_key: u64,
    /// Dropped: bad tag / HMAC / length.
    pub bad_auth: u64,
    /// Dropped: replayed.
    pub replay: u64,
    /// Dropped: bad compression framing, or compressed data that did not decompress.
    pub bad_framing: u64,
    /// Packets the peer compressed, decompressed (included in `rx_packets`).
    pub decompressed: u64,
}

/// One peer's data channel.
pub struct DataChannel {
    role: Role,
    auth: DigestKind,
    framing: CompressionFraming,
    peer_id: Option<u32>,
    slots: Vec<Slot>,
    send_idx: Option<usize>,
    /// When a newer, not yet confirmed key becomes old enough to send with (re-checked by
    /// `seal` and `open`, so the switch does not wait for the driver's next `tick`).
    switch_at: Option<Instant>,
    switch_delay: Duration,
    reneg_bytes: Option<u64>,
    reneg_pkts: Option<u64>,
    /// Receive-side and drop counters (tx ones live in `state`).
    stats: DataStats,
    /// What the senders seal with.
    state: Arc<SendState>,
    /// The channel's own sender ([`DataChannel::seal`]).
    own: DataSender,
    /// What was last published (compared to skip needless publications).
    published: Option<Arc<Snapshot>>,
    /// Where compressed payloads are decompressed: `decompress_limit` bytes, allocated at the
    /// first compressed packet; `inflated_len` of them hold the last one.
    inflated: Vec<u8>,
    inflated_len: usize,
    decompress_limit: usize,
    /// `replay-window N T` for keys installed from now on.
    replay_window: (u32, u64),
}

impl std::fmt::Debug for DataChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataChannel")
            .field("role", &self.role)
            .field(
                "keys",
                &self
                    .slots
                    .iter()
                    .map(|s| s.key_id.value())
                    .collect::<Vec<_>>(),
            )
            .field("stats", &self.stats)
            .finish()
    }
}

impl DataChannel {
    /// A data channel without keys. `peer_id` = `Some` sends DATA_V2.
    pub fn new(
        role: Role,
        auth: DigestKind,
        framing: CompressionFraming,
        peer_id: Option<u32>,
    ) -> Self {
        let state = Arc::new(SendState {
            epoch: AtomicU64::new(0),
            current: Mutex::new(None),
            tx_packets: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
        });
        DataChannel {
            role,
            auth,
            framing,
            peer_id,
            slots: Vec::new(),
            send_idx: None,
            switch_at: None,
            switch_delay: SEND_SWITCH_DELAY,
            reneg_bytes: None,
            reneg_pkts: None,
            stats: DataStats::default(),
            state: Arc::clone(&state),
            own: DataSender::new(state),
            published: None,
            inflated: Vec::new(),
            inflated_len: 0,
            decompress_limit: decompress_limit(1500),
            replay_window: (64, 15),
        }
    }

    /// A handle that seals with this channel's current send key from another thread (see
    /// the module documentation). Key installs, retirements, the send-key switch, peer-id and
    /// framing changes made here reach it before its next packet.
    pub fn sender(&self) -> DataSender {
        DataSender::new(Arc::clone(&self.state))
    }

    /// Publishes the sealing state to the senders if it changed.
    fn publish(&mut self) {
        let key = self
            .send_idx
            .and_then(|i| self.slots.get(i))
            .map(|s| &s.send);
        let snap = key.map(|key| {
            let header = match self.peer_id {
                Some(p) => DataHeader::V2 {
                    key_id: key.key_id,
                    peer_id: p & PEER_ID_NONE,
                },
                None => DataHeader::V1 { key_id: key.key_id },
            };
            let (bytes, header_len) = header.to_bytes();
            let mut h = [0u8; 4];
            h[..header_len].copy_from_slice(&bytes[..header_len]);
            Snapshot {
                key: Arc::clone(key),
                header: h,
                header_len,
                framing: self.framing,
            }
        });
        let same = match (&snap, &self.published) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                Arc::ptr_eq(&a.key, &b.key)
                    && a.header[..a.header_len] == b.header[..b.header_len]
                    && a.framing == b.framing
            }
            _ => false,
        };
        if same {
            return;
        }
        let snap = snap.map(Arc::new);
        self.published = snap.clone();
        let mut cur = self.state.lock();
        *cur = snap;
        self.state.epoch.fetch_add(1, Ordering::Release);
    }

    /// How long after its installation a new key is used for sending even if the peer has
    /// not sent on it yet (default 10 s). Drivers should pass
    /// [`send_switch_delay`]`(hand_window, reneg_sec)` so that short `reneg-sec` values work.
    pub fn set_send_switch_delay(&mut self, delay: Duration) {
        self.switch_delay = delay;
    }

    /// `reneg-bytes` / `reneg-pkts`: [`DataChannel::needs_renegotiation`] turns true once the
    /// newest key has carried this many bytes or packets (both directions).
    pub fn set_reneg_limits(&mut self, bytes: Option<u64>, packets: Option<u64>) {
        self.reneg_bytes = bytes.filter(|b| *b > 0);
        self.reneg_pkts = packets.filter(|p| *p > 0);
    }

    /// Sets the peer-id used in DATA_V2 headers (`None` = DATA_V1).
    pub fn set_peer_id(&mut self, peer_id: Option<u32>) {
        self.peer_id = peer_id;
        self.publish();
    }

    /// Sets the compression framing.
    pub fn set_framing(&mut self, framing: CompressionFraming) {
        self.framing = framing;
        self.publish();
    }

    /// Largest decompressed payload accepted (default [`decompress_limit`]`(1500)`); drivers
    /// pass [`decompress_limit`] of the tun MTU in force.
    pub fn set_decompress_limit(&mut self, bytes: usize) {
        self.decompress_limit = bytes;
    }

    /// The payload of the last [`Payload::Decompressed`] (valid until the next `open`).
    pub fn decompressed(&self) -> &[u8] {
        self.inflated.get(..self.inflated_len).unwrap_or_default()
    }

    /// [`DataChannel::decompressed`], mutable (e.g. for MSS clamping).
    pub fn decompressed_mut(&mut self) -> &mut [u8] {
        self.inflated
            .get_mut(..self.inflated_len)
            .unwrap_or_default()
    }

    /// Counters (tx ones include what every [`DataSender`] flushed).
    pub fn stats(&self) -> DataStats {
        DataStats {
            tx_packets: self.state.tx_packets.load(Ordering::Relaxed),
            tx_bytes: self.state.tx_bytes.load(Ordering::Relaxed),
            ..self.stats
        }
    }

    /// Whether a key is installed for sending.
    pub fn can_send(&self) -> bool {
        self.send_idx.is_some()
    }

    /// Sets `replay-window N T` (OpenVPN's default is 64 packets, 15 seconds) for the keys
    /// installed after this call.
    pub fn set_replay_window(&mut self, window: u32, time_secs: u64) {
        self.replay_window = (window, time_secs);
    }

    /// Installs keys for `key_id`.
    pub fn install(
        &mut self,
        now: Instant,
        key_id: KeyId,
        cipher: CipherKind,
        key2: &KeyBlock,
    ) -> Result<(), openvpn_crypto::CryptoError> {
        let (sealer, mut opener) = DataKeys::new(cipher, self.auth, key2, self.role)?;
        opener.set_replay_window(openvpn_crypto::ReplayWindow::new(
            self.replay_window.0,
            self.replay_window.1,
        ));
        self.slots.retain(|s| s.key_id != key_id);
        // Keep at most the new key and two older ones.
        while self.slots.len() >= 3 {
            self.slots.remove(0);
        }
        let first = self.slots.is_empty();
        self.slots.push(Slot {
            key_id,
            send: Arc::new(SendKey {
                key_id,
                sealer,
                bytes: AtomicU64::new(0),
                packets: AtomicU64::new(0),
            }),
            opener,
            installed: now,
            confirmed: first,
            rx_bytes: 0,
            rx_packets: 0,
        });
        self.pick_send_key(now);
        Ok(())
    }

    /// Forgets a key.
    pub fn retire(&mut self, now: Instant, key_id: KeyId) {
        self.slots.retain(|s| s.key_id != key_id);
        self.pick_send_key(now);
    }

    /// Whether a renegotiation is due: the send key is near packet-ID exhaustion, or the
    /// newest key reached `reneg-bytes` / `reneg-pkts`.
    pub fn needs_renegotiation(&self) -> bool {
        let exhausted = self
            .send_idx
            .and_then(|i| self.slots.get(i))
            .is_some_and(|s| s.send.sealer.needs_renegotiation());
        let newest = self.slots.last();
        let by_bytes = matches!((self.reneg_bytes, newest), (Some(l), Some(s)) if s.bytes() >= l);
        let by_pkts = matches!((self.reneg_pkts, newest), (Some(l), Some(s)) if s.packets() >= l);
        exhausted || by_bytes || by_pkts
    }

    fn pick_send_key(&mut self, now: Instant) {
        // Newest key that is confirmed (peer sent on it) or old enough; else the newest older one.
        let n = self.slots.len();
        self.send_idx = (0..n).rev().find(|&i| {
            self.slots[i].confirmed || now >= self.slots[i].installed + self.switch_delay || i == 0
        });
        let newer = self.send_idx.map_or(0, |i| i + 1);
        self.switch_at = self
            .slots
            .get(newer..)
            .unwrap_or_default()
            .iter()
            .map(|s| s.installed + self.switch_delay)
            .min();
        self.publish();
    }

    /// Re-evaluates the send key (call from a timer now and then).
    pub fn tick(&mut self, now: Instant) {
        self.pick_send_key(now);
    }

    /// Seals `buf` (payload after its headroom) in place into a complete wire packet.
    pub fn seal(
        &mut self,
        now: Instant,
        buf: &mut PacketBuf,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(), DataError> {
        if self.switch_at.is_some_and(|t| now >= t) {
            self.pick_send_key(now);
        }
        let r = self.own.seal(buf, rng);
        self.own.flush_counters();
        r
    }

    /// Opens a wire packet in place. On success returns what it carried (ranges index
    /// `packet`).
    pub fn open(
        &mut self,
        now: Instant,
        now_secs: u64,
        packet: &mut [u8],
    ) -> Result<Payload, DataError> {
        if self.switch_at.is_some_and(|t| now >= t) {
            self.pick_send_key(now);
        }
        let Ok(header) = DataHeader::parse(packet) else {
            return Err(DataError::TooShort);
        };
        let key_id = header.key_id();
        let Some(i) = self.slots.iter().position(|s| s.key_id == key_id) else {
            self.stats.no_key += 1;
            return Err(DataError::BadOpcode);
        };
        let base = packet.as_ptr() as usize;
        let slot = &mut self.slots[i];
        let plain = match slot.opener.open(packet, now_secs) {
            Ok(p) => p,
            Err(e) => {
                match e {
                    DataError::Replay => self.stats.replay += 1,
                    _ => self.stats.bad_auth += 1,
                }
                return Err(e);
            }
        };
        if !slot.confirmed {
            slot.confirmed = true;
            self.pick_send_key(now);
        }
        let inner = match self.framing.unframe(plain) {
            // (offset in `packet`, length)
            Ok(Unframed::Plain(inner)) => Some((inner.as_ptr() as usize - base, inner.len())),
            Ok(Unframed::Compressed { algorithm, body }) => {
                let limit = self.decompress_limit;
                if self.inflated.len() != limit {
                    self.inflated.resize(limit, 0);
                }
                match algorithm.decompress(body, &mut self.inflated) {
                    Ok(n) => {
                        self.inflated_len = n;
                        None
                    }
                    Err(_) => {
                        self.stats.bad_framing += 1;
                        return Err(DataError::BadHeader);
                    }
                }
            }
            Err(_) => {
                self.stats.bad_framing += 1;
                return Err(DataError::BadHeader);
            }
        };
        let inner_len = inner.map_or(self.inflated_len, |(_, len)| len);
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += inner_len as u64;
        if let Some(slot) = self.slots.get_mut(i) {
            slot.rx_bytes += inner_len as u64;
            slot.rx_packets += 1;
        }
        let Some((start, len)) = inner else {
            self.stats.decompressed += 1;
            let bytes = self.decompressed();
            if openvpn_wire::is_ping(bytes) {
                return Ok(Payload::Ping);
            }
            if openvpn_wire::is_occ(bytes) {
                let n = bytes.len().min(packet.len());
                packet[..n].copy_from_slice(&bytes[..n]);
                return Ok(Payload::Occ(0..n));
            }
            return Ok(Payload::Decompressed);
        };
        let range = start..start + len;
        let bytes = &packet[range.clone()];
        if openvpn_wire::is_ping(bytes) {
            return Ok(Payload::Ping);
        }
        if openvpn_wire::is_occ(bytes) {
            return Ok(Payload::Occ(range));
        }
        Ok(Payload::Ip(range))
    }
}

#[cfg(test)]
mod reneg_limit_tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn reneg_pkts_and_bytes_trigger_and_reset_with_a_new_key() {
        let t = Instant::now();
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let mut c = DataChannel::new(
            Role::Client,
            DigestKind::Sha1,
            CompressionFraming::None,
            Some(1),
        );
        c.set_reneg_limits(Some(1000), Some(5));
        c.install(
            t,
            KeyId::ZERO,
            CipherKind::Aes128Gcm,
            &KeyBlock::from_bytes([3u8; 256]),
        )
        .unwrap();
        for i in 0..5 {
            assert!(!c.needs_renegotiation(), "after {i} packets");
            let mut b = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, &[0x45; 20]);
            c.seal(t, &mut b, &mut rng).unwrap();
        }
        assert!(c.needs_renegotiation(), "5 packets reach reneg-pkts 5");
        c.install(
            t,
            KeyId::new(1).unwrap(),
            CipherKind::Aes128Gcm,
            &KeyBlock::from_bytes([4u8; 256]),
        )
        .unwrap();
        assert!(
            !c.needs_renegotiation(),
            "a new key starts counting from zero"
        );
        c.set_reneg_limits(Some(100), None);
        c.tick(t + Duration::from_secs(3600));
        let mut b = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, &[0x45; 120]);
        c.seal(t + Duration::from_secs(3600), &mut b, &mut rng)
            .unwrap();
        assert!(c.needs_renegotiation(), "120 bytes reach reneg-bytes 100");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn pair(framing: CompressionFraming) -> (DataChannel, DataChannel) {
        let c = DataChannel::new(Role::Client, DigestKind::Sha1, framing, Some(5));
        let s = DataChannel::new(Role::Server, DigestKind::Sha1, framing, Some(5));
        (c, s)
    }

    #[test]
    fn round_trip_with_key_rollover() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let t = Instant::now();
        for framing in [
            CompressionFraming::None,
            CompressionFraming::StubV2,
            CompressionFraming::Stub,
            CompressionFraming::LzoStub,
        ] {
            let (mut c, mut s) = pair(framing);
            let k0 = KeyBlock::from_bytes([7u8; 256]);
            c.install(t, KeyId::ZERO, CipherKind::Aes256Gcm, &k0)
                .unwrap();
            s.install(t, KeyId::ZERO, CipherKind::Aes256Gcm, &k0)
                .unwrap();
            let ip = [
                0x45u8, 0, 0, 20, 1, 2, 3, 4, 64, 1, 0, 0, 10, 8, 0, 2, 10, 8, 0, 1,
            ];
            let mut b = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, &ip);
            c.seal(t, &mut b, &mut rng).unwrap();
            let mut wire = b.as_slice().to_vec();
            assert_eq!(wire[0], 0x48);
            match s.open(t, 0, &mut wire).unwrap() {
                Payload::Ip(r) => assert_eq!(&wire[r], &ip),
                other => panic!("{other:?}"),
            }
            // New key 1: the client keeps sending on key 0 until the server used key 1.
            let k1 = KeyBlock::from_bytes([9u8; 256]);
            c.install(t, KeyId::new(1).unwrap(), CipherKind::Aes256Gcm, &k1)
                .unwrap();
            s.install(t, KeyId::new(1).unwrap(), CipherKind::Aes256Gcm, &k1)
                .unwrap();
            let mut b =
                PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, &openvpn_wire::PING_MAGIC);
            c.seal(t, &mut b, &mut rng).unwrap();
            assert_eq!(b.as_slice()[0] & 7, 0, "old key still used for sending");
            let mut wire = b.as_slice().to_vec();
            assert_eq!(s.open(t, 0, &mut wire).unwrap(), Payload::Ping);
            let later = t + SEND_SWITCH_DELAY;
            s.tick(later);
            let mut b = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, &ip);
            s.seal(later, &mut b, &mut rng).unwrap();
            assert_eq!(b.as_slice()[0] & 7, 1, "server switched after the delay");
            let mut wire = b.as_slice().to_vec();
            assert!(matches!(c.open(later, 0, &mut wire), Ok(Payload::Ip(_))));
            let mut b = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, &ip);
            c.seal(later, &mut b, &mut rng).unwrap();
            assert_eq!(
                b.as_slice()[0] & 7,
                1,
                "client switched once key 1 was confirmed"
            );
            // Replay and garbage are counted, not fatal.
            let mut again = b.as_slice().to_vec();
            let mut copy = again.clone();
            assert!(s.open(later, 0, &mut again).is_ok());
            assert!(s.open(later, 0, &mut copy).is_err());
            assert_eq!(s.stats().replay, 1);
            let mut junk = vec![0x49u8, 0, 0, 5, 1, 2, 3];
            assert!(s.open(later, 0, &mut junk).is_err());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod sender_tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use std::collections::HashSet;
    use std::sync::atomic::AtomicBool;

    fn key(b: u8) -> KeyBlock {
        KeyBlock::from_bytes([b; 256])
    }

    const IP: [u8; 20] = [
        0x45, 0, 0, 20, 1, 2, 3, 4, 64, 1, 0, 0, 10, 8, 0, 2, 10, 8, 0, 1,
    ];

    /// (key id, packet id) of a sealed AEAD DATA_V2 packet.
    fn ids(wire: &[u8]) -> (u8, u32) {
        (
            wire[0] & 7,
            u32::from_be_bytes([wire[4], wire[5], wire[6], wire[7]]),
        )
    }

    /// Two sealing threads plus the owner (pings) seal while the owner installs key 1, the
    /// switch happens (by the peer's confirmation), and key 0 is retired. No (key, packet id)
    /// pair may repeat, and every packet must open at the peer, which had both keys.
    #[test]
    fn threads_never_reuse_a_packet_id_and_packets_across_a_key_switch_open() {
        let t = Instant::now();
        let mut c = DataChannel::new(
            Role::Client,
            DigestKind::Sha1,
            CompressionFraming::None,
            Some(7),
        );
        let mut s = DataChannel::new(
            Role::Server,
            DigestKind::Sha1,
            CompressionFraming::None,
            Some(7),
        );
        c.install(t, KeyId::ZERO, CipherKind::Aes256Gcm, &key(1))
            .unwrap();
        s.install(t, KeyId::ZERO, CipherKind::Aes256Gcm, &key(1))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..2u64)
            .map(|n| {
                let mut tx = c.sender();
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut rng = ChaCha20Rng::seed_from_u64(n);
                    let mut out = Vec::new();
                    while !stop.load(Ordering::Relaxed) || out.len() < 2000 {
                        let mut b = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, &IP);
                        if tx.seal(&mut b, &mut rng).is_ok() {
                            out.push(b.as_slice().to_vec());
                        }
                        if out.len() % 64 == 0 {
                            tx.flush_counters();
                        }
                    }
                    out
                })
            })
            .collect();
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let mut owner = Vec::new();
        let mut owner_rng = ChaCha20Rng::seed_from_u64(10);
        let mut seal_some = |c: &mut DataChannel, owner: &mut Vec<Vec<u8>>| {
            let rng = &mut owner_rng;
            for _ in 0..200 {
                let mut b =
                    PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, &openvpn_wire::PING_MAGIC);
                c.seal(t, &mut b, rng).unwrap();
                owner.push(b.as_slice().to_vec());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        seal_some(&mut c, &mut owner);
        let k1 = KeyId::new(1).unwrap();
        c.install(t, k1, CipherKind::Aes256Gcm, &key(2)).unwrap();
        s.install(t, k1, CipherKind::Aes256Gcm, &key(2)).unwrap();
        seal_some(&mut c, &mut owner);
        // The peer sends on key 1: the client confirms it and switches its sending.
        s.tick(t + SEND_SWITCH_DELAY);
        let mut b = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, &IP);
        s.seal(t, &mut b, &mut rng).unwrap();
        let mut w = b.as_slice().to_vec();
        assert!(c.open(t, 0, &mut w).is_ok());
        seal_some(&mut c, &mut owner);
        stop.store(true, Ordering::Relaxed);
        let mut all: Vec<Vec<u8>> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        all.extend(owner);
        let mut seen = HashSet::new();
        for p in &all {
            assert!(seen.insert(ids(p)), "packet id reused: {:?}", ids(p));
        }
        let on_key1 = all.iter().filter(|p| p[0] & 7 == 1).count();
        assert!(on_key1 > 0, "the senders moved to key 1");
        // In (key, packet id) order every packet opens: a reused id would be a replay.
        all.sort_by_key(|p| ids(p));
        for p in &mut all {
            let id = ids(p);
            assert!(
                matches!(s.open(t, 0, p), Ok(Payload::Ip(_) | Payload::Ping)),
                "{id:?} does not open"
            );
        }
        // After key 0 is retired nothing is sealed with it any more.
        c.retire(t, KeyId::ZERO);
        let mut tx = c.sender();
        let mut b = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, &IP);
        tx.seal(&mut b, &mut rng).unwrap();
        assert_eq!(b.as_slice()[0] & 7, 1);
        drop(tx);
        let st = c.stats();
        assert_eq!(
            st.tx_packets,
            all.len() as u64 + 1,
            "every sender's count arrived"
        );
    }

    /// A sender follows the send-key rule exactly as the channel does: a new key is not used
    /// before the peer confirms it or the switch delay passed; peer-id changes reach it.
    #[test]
    fn a_sender_follows_the_switch_delay_and_peer_id() {
        let t = Instant::now();
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut c = DataChannel::new(
            Role::Server,
            DigestKind::Sha1,
            CompressionFraming::None,
            None,
        );
        let mut tx = c.sender();
        assert!(!tx.can_send());
        let mut b = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, &IP);
        assert!(tx.seal(&mut b, &mut rng).is_err(), "no key yet");
        c.install(t, KeyId::ZERO, CipherKind::Aes128Gcm, &key(5))
            .unwrap();
        assert_eq!(tx.key_id(), Some(KeyId::ZERO));
        let mut b = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, &IP);
        tx.seal(&mut b, &mut rng).unwrap();
        assert_eq!(b.as_slice()[0], 6 << 3, "DATA_V1, key 0");
        c.set_peer_id(Some(0x123));
        let mut b = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, &IP);
        tx.seal(&mut b, &mut rng).unwrap();
        assert_eq!(
            &b.as_slice()[..4],
            &[9 << 3, 0, 1, 0x23],
            "DATA_V2 with the peer-id"
        );
        c.set_send_switch_delay(Duration::from_secs(5));
        c.install(t, KeyId::new(1).unwrap(), CipherKind::Aes128Gcm, &key(6))
            .unwrap();
        c.tick(t + Duration::from_secs(4));
        assert_eq!(tx.key_id(), Some(KeyId::ZERO), "lame duck keeps sending");
        // Without a tick: any received packet after the delay moves the send key.
        let mut junk = vec![0x49u8, 0, 0, 5, 1, 2, 3];
        assert!(c.open(t + Duration::from_secs(5), 0, &mut junk).is_err());
        assert_eq!(tx.key_id(), KeyId::new(1), "switched after the delay");
        c.retire(t, KeyId::new(1).unwrap());
        assert_eq!(tx.key_id(), Some(KeyId::ZERO), "back to the remaining key");
        c.retire(t, KeyId::ZERO);
        assert!(!tx.can_send());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod compression_tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const ALL: [CompressionFraming; 7] = [
        CompressionFraming::None,
        CompressionFraming::LzoStub,
        CompressionFraming::Stub,
        CompressionFraming::StubV2,
        CompressionFraming::Lzo,
        CompressionFraming::Lz4,
        CompressionFraming::Lz4V2,
    ];

    /// A reference vector of openvpn-wire (`scripts/compress-vectors.py`).
    fn vector(file: &str) -> Vec<u8> {
        let path = format!(
            "{}/../openvpn-wire/testdata/compress/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The ICMP echo reply of `ping -p 00 -s 1000` the vectors compress.
    fn icmp() -> Vec<u8> {
        let mut out = vec![0u8; 2000];
        let n = openvpn_wire::Algorithm::Lz4
            .decompress(&vector("icmp.lz4"), &mut out)
            .unwrap();
        out.truncate(n);
        out
    }

    /// A compressing peer: a server channel without framing that seals bytes framed (and
    /// compressed) by hand, and our client channel with `framing`.
    fn pair(framing: CompressionFraming) -> (DataChannel, DataChannel) {
        let t = Instant::now();
        let key = KeyBlock::from_bytes([0x42; 256]);
        let mut peer = DataChannel::new(
            Role::Server,
            DigestKind::Sha1,
            CompressionFraming::None,
            Some(1),
        );
        let mut ours = DataChannel::new(Role::Client, DigestKind::Sha1, framing, Some(1));
        peer.install(t, KeyId::ZERO, CipherKind::Aes256Gcm, &key)
            .unwrap();
        ours.install(t, KeyId::ZERO, CipherKind::Aes256Gcm, &key)
            .unwrap();
        (peer, ours)
    }

    fn seal(peer: &mut DataChannel, framed: &[u8], rng: &mut ChaCha20Rng) -> Vec<u8> {
        let mut b = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, framed);
        peer.seal(Instant::now(), &mut b, rng).unwrap();
        b.as_slice().to_vec()
    }

    /// What a 2.6 peer sends for `ip` compressed under `framing` (`comp-lzo.c`/`comp-lz4.c`).
    fn compressed_packet(framing: CompressionFraming) -> Vec<u8> {
        match framing {
            CompressionFraming::Lzo => [&[0x66u8][..], &vector("icmp.lzo1x_1")].concat(),
            CompressionFraming::Lz4 => {
                let z = vector("icmp.lz4");
                [&[0x69u8][..], &z[1..], &z[..1]].concat()
            }
            _ => [&[0x50u8, 0x01][..], &vector("icmp.lz4")].concat(),
        }
    }

    #[test]
    fn in_place_framing_is_encap() {
        for f in ALL {
            for payload in [&[0x45u8, 1, 2][..], &[0x50, 9][..], &[7][..], &[][..]] {
                let mut v = payload.to_vec();
                f.encap(&mut v);
                let mut b = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, payload);
                frame_in_place(f, &mut b);
                assert_eq!(b.as_slice(), &v[..], "{f:?} {payload:?}");
            }
        }
    }

    #[test]
    fn compressed_packets_are_decompressed_and_we_send_uncompressed() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let ip = icmp();
        for f in [
            CompressionFraming::Lzo,
            CompressionFraming::Lz4,
            CompressionFraming::Lz4V2,
        ] {
            let (mut peer, mut ours) = pair(f);
            let mut wire = seal(&mut peer, &compressed_packet(f), &mut rng);
            assert_eq!(
                ours.open(Instant::now(), 0, &mut wire),
                Ok(Payload::Decompressed)
            );
            assert_eq!(ours.decompressed(), &ip[..], "{f:?}");
            let st = ours.stats();
            assert_eq!((st.decompressed, st.rx_packets), (1, 1));
            assert_eq!(st.rx_bytes, ip.len() as u64);
            // Uncompressed packets of the same framing still arrive in place.
            let mut plain = ip.clone();
            f.encap(&mut plain);
            let mut wire = seal(&mut peer, &plain, &mut rng);
            let Ok(Payload::Ip(r)) = ours.open(Instant::now(), 0, &mut wire) else {
                panic!("{f:?}: uncompressed packet");
            };
            assert_eq!(&wire[r], &ip[..]);
            // What we send is the algorithm's uncompressed form: the peer (no framing here)
            // sees the stub bytes.
            let mut b = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, &ip);
            ours.seal(Instant::now(), &mut b, &mut rng).unwrap();
            let mut wire = b.as_slice().to_vec();
            let Ok(Payload::Ip(r)) = peer.open(Instant::now(), 0, &mut wire) else {
                panic!("{f:?}: our packet");
            };
            let mut stub = ip.clone();
            f.sends_as().encap(&mut stub);
            assert_eq!(&wire[r], &stub[..], "{f:?}: we never compress");
        }
    }

    #[test]
    fn bad_compressed_data_is_a_counted_drop() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let ip = icmp();
        let (mut peer, mut ours) = pair(CompressionFraming::Lzo);
        // Corrupt LZO, an empty body, a packet over the size limit.
        for framed in [&[0x66u8, 0xff, 0xff, 0xff][..], &[0x66]] {
            let mut wire = seal(&mut peer, framed, &mut rng);
            assert!(ours.open(Instant::now(), 0, &mut wire).is_err());
        }
        ours.set_decompress_limit(ip.len() - 1);
        let mut wire = seal(
            &mut peer,
            &compressed_packet(CompressionFraming::Lzo),
            &mut rng,
        );
        assert!(ours.open(Instant::now(), 0, &mut wire).is_err());
        assert_eq!(ours.stats().bad_framing, 3);
        // The channel goes on: the same packet within the limit decompresses.
        ours.set_decompress_limit(decompress_limit(1500));
        let mut wire = seal(
            &mut peer,
            &compressed_packet(CompressionFraming::Lzo),
            &mut rng,
        );
        assert_eq!(
            ours.open(Instant::now(), 0, &mut wire),
            Ok(Payload::Decompressed)
        );
        // A stub framing does not decompress: a counted drop too.
        let (mut peer, mut stub) = pair(CompressionFraming::LzoStub);
        let mut wire = seal(
            &mut peer,
            &compressed_packet(CompressionFraming::Lzo),
            &mut rng,
        );
        assert!(stub.open(Instant::now(), 0, &mut wire).is_err());
        assert_eq!(stub.stats().bad_framing, 1);
    }

    /// A compressed ping is a ping; a compressed OCC message is copied to the front of the
    /// packet (hand-made LZO streams: one literal run and the end marker).
    #[test]
    fn compressed_ping_and_occ() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let (mut peer, mut ours) = pair(CompressionFraming::Lzo);
        let literal = |bytes: &[u8]| -> Vec<u8> {
            let mut v = vec![0x66, 17 + bytes.len() as u8];
            v.extend_from_slice(bytes);
            v.extend_from_slice(&openvpn_wire::lzo::END_MARKER);
            v
        };
        let mut wire = seal(&mut peer, &literal(&openvpn_wire::PING_MAGIC), &mut rng);
        assert_eq!(ours.open(Instant::now(), 0, &mut wire), Ok(Payload::Ping));
        let mut occ = openvpn_wire::OCC_MAGIC.to_vec();
        occ.push(6); // OCC_EXIT
        let mut wire = seal(&mut peer, &literal(&occ), &mut rng);
        let Ok(Payload::Occ(r)) = ours.open(Instant::now(), 0, &mut wire) else {
            panic!("OCC");
        };
        assert_eq!(&wire[r], &occ[..]);
        assert_eq!(ours.stats().decompressed, 2);
    }
}
