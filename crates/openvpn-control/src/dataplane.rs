//! The data channel of one peer: up to three keys by key ID, the send-key rule, compression
//! framing and keepalive-ping detection. Shared by client and server drivers.
//!
//! ```text
//!  tun packet ─▶ seal(now, payload) ─▶ framing ─▶ DataSealer (newest usable key) ─▶ wire
//!  wire ─▶ open(now, packet) ─▶ DataOpener by key_id ─▶ unframe ─▶ Payload::{Ip, Ping, Occ}
//! ```

use std::time::{Duration, Instant};

use openvpn_crypto::{
    CipherKind, DataError, DataKeys, DataOpener, DataSealer, DigestKind, KeyBlock, PacketBuf, Role,
};
use openvpn_wire::{CompressionFraming, DataHeader, KeyId, PEER_ID_NONE};
use rand_core::{CryptoRng, RngCore};

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

struct Slot {
    key_id: KeyId,
    sealer: DataSealer,
    opener: DataOpener,
    installed: Instant,
    confirmed: bool,
    /// Plaintext bytes sealed and opened with this key (`reneg-bytes`).
    bytes: u64,
    /// Packets sealed and opened with this key (`reneg-pkts`).
    packets: u64,
}

/// What an opened data packet carried.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload {
    /// An IP packet for the tun device (the range within the buffer).
    Ip(std::ops::Range<usize>),
    /// A keepalive ping.
    Ping,
    /// An OCC message (e.g. OCC_EXIT) — the range within the buffer.
    Occ(std::ops::Range<usize>),
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
    /// Dropped: bad compression framing.
    pub bad_framing: u64,
}

/// One peer's data channel.
pub struct DataChannel {
    role: Role,
    auth: DigestKind,
    framing: CompressionFraming,
    peer_id: Option<u32>,
    slots: Vec<Slot>,
    send_idx: Option<usize>,
    switch_delay: Duration,
    reneg_bytes: Option<u64>,
    reneg_pkts: Option<u64>,
    stats: DataStats,
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
        DataChannel {
            role,
            auth,
            framing,
            peer_id,
            slots: Vec::new(),
            send_idx: None,
            switch_delay: SEND_SWITCH_DELAY,
            reneg_bytes: None,
            reneg_pkts: None,
            stats: DataStats::default(),
        }
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
    }

    /// Sets the compression framing.
    pub fn set_framing(&mut self, framing: CompressionFraming) {
        self.framing = framing;
    }

    /// Counters.
    pub fn stats(&self) -> DataStats {
        self.stats
    }

    /// Whether a key is installed for sending.
    pub fn can_send(&self) -> bool {
        self.send_idx.is_some()
    }

    /// Installs keys for `key_id`.
    pub fn install(
        &mut self,
        now: Instant,
        key_id: KeyId,
        cipher: CipherKind,
        key2: &KeyBlock,
    ) -> Result<(), openvpn_crypto::CryptoError> {
        let (sealer, opener) = DataKeys::new(cipher, self.auth, key2, self.role)?;
        self.slots.retain(|s| s.key_id != key_id);
        // Keep at most the new key and two older ones.
        while self.slots.len() >= 3 {
            self.slots.remove(0);
        }
        let first = self.slots.is_empty();
        self.slots.push(Slot {
            key_id,
            sealer,
            opener,
            installed: now,
            confirmed: first,
            bytes: 0,
            packets: 0,
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
            .is_some_and(|s| s.sealer.needs_renegotiation());
        let newest = self.slots.last();
        let by_bytes = matches!((self.reneg_bytes, newest), (Some(l), Some(s)) if s.bytes >= l);
        let by_pkts = matches!((self.reneg_pkts, newest), (Some(l), Some(s)) if s.packets >= l);
        exhausted || by_bytes || by_pkts
    }

    fn pick_send_key(&mut self, now: Instant) {
        // Newest key that is confirmed (peer sent on it) or old enough; else the newest older one.
        let n = self.slots.len();
        self.send_idx = (0..n).rev().find(|&i| {
            self.slots[i].confirmed || now >= self.slots[i].installed + self.switch_delay || i == 0
        });
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
        let _ = now;
        let Some(i) = self.send_idx else {
            return Err(DataError::BadHeader);
        };
        if self.framing != CompressionFraming::None {
            let mut v = buf.as_slice().to_vec();
            self.framing.encap(&mut v);
            buf.clear(PacketBuf::DEFAULT_HEADROOM);
            buf.extend_from_slice(&v);
        }
        let slot = &mut self.slots[i];
        let header = match self.peer_id {
            Some(p) => DataHeader::V2 {
                key_id: slot.key_id,
                peer_id: p & PEER_ID_NONE,
            },
            None => DataHeader::V1 {
                key_id: slot.key_id,
            },
        };
        let (hdr, hl) = header.to_bytes();
        let len = buf.len() as u64;
        slot.sealer.seal(&hdr[..hl], buf, rng)?;
        slot.bytes += len;
        slot.packets += 1;
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += len;
        Ok(())
    }

    /// Opens a wire packet in place. On success returns what it carried (ranges index
    /// `packet`).
    pub fn open(
        &mut self,
        now: Instant,
        now_secs: u64,
        packet: &mut [u8],
    ) -> Result<Payload, DataError> {
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
        let start = plain.as_ptr() as usize - base;
        let plain_len = plain.len();
        let inner = match self.framing.decap(plain) {
            Ok(x) => x,
            Err(_) => {
                self.stats.bad_framing += 1;
                return Err(DataError::BadHeader);
            }
        };
        let inner_start = inner.as_ptr() as usize - base;
        let inner_len = inner.len();
        let _ = (start, plain_len);
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += inner_len as u64;
        if let Some(slot) = self.slots.get_mut(i) {
            slot.bytes += inner_len as u64;
            slot.packets += 1;
        }
        let range = inner_start..inner_start + inner_len;
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
