//! Data-channel packet protection (`data.md` §2–§4): [`DataKeys`] builds a
//! [`DataSealer`] / [`DataOpener`] pair from key2; both work in place.
//!
//! ```text
//! AEAD:  hdr(1|4) ‖ packet_id(4) ‖ tag(16) ‖ ciphertext        AAD = [V2 hdr ‖] packet_id
//! CBC:   hdr(1|4) ‖ HMAC(H) ‖ IV(16) ‖ CBC(packet_id ‖ payload ‖ PKCS#7)
//! none:  hdr(1|4) ‖ [HMAC(H)] ‖ packet_id ‖ payload
//! ```

mod aead;
mod buf;
mod cbc;

pub use aead::AeadBackend;
pub use buf::PacketBuf;

use crate::error::{CryptoError, DataError};
use crate::hmac_key::{HmacKey, MAX_HMAC_LEN};
use crate::keys::{KeyBlock, block};
use crate::kinds::{AEAD_TAG_LEN, AES_BLOCK, CipherKind, DigestKind, PACKET_ID_LEN, Role};
use crate::replay::ReplayWindow;
use aead::AeadCipher;
use cbc::AesCbc;
use rand_core::{CryptoRng, RngCore};
use std::sync::atomic::{AtomicU64, Ordering};

/// Opcode of P_DATA_V1.
const OP_DATA_V1: u8 = 6;
/// Opcode of P_DATA_V2.
const OP_DATA_V2: u8 = 9;
/// The sender must renegotiate once its packet id reaches this value (`keys.md` §7.2).
const RENEGOTIATE_AT: u64 = 0xFF00_0000;

/// One direction's keyed algorithm.
enum Engine {
    Aead {
        cipher: Box<dyn AeadCipher>,
        implicit_iv: [u8; 8],
    },
    Cbc {
        cipher: Box<AesCbc>,
        hmac: Option<HmacKey>,
    },
    Plain {
        hmac: Option<HmacKey>,
    },
}

impl Engine {
    fn new(
        backend: AeadBackend,
        kind: CipherKind,
        auth: DigestKind,
        key2: &KeyBlock,
        blk: usize,
    ) -> Result<Self, CryptoError> {
        let (cipher_area, hmac_area) = block(key2.as_bytes(), blk);
        let key = &cipher_area[..kind.key_len()];
        if kind != CipherKind::None && key.iter().all(|&b| b == 0) {
            return Err(CryptoError::ZeroKey("data-channel cipher"));
        }
        Ok(if kind.is_aead() {
            let mut implicit_iv = [0u8; 8];
            implicit_iv.copy_from_slice(&hmac_area[..8]);
            Self::Aead {
                cipher: aead::new_cipher(backend, kind, key)?,
                implicit_iv,
            }
        } else if kind == CipherKind::None {
            Self::Plain {
                hmac: HmacKey::new(auth, hmac_area),
            }
        } else {
            Self::Cbc {
                cipher: Box::new(AesCbc::new(kind, key)?),
                hmac: HmacKey::new(auth, hmac_area),
            }
        })
    }

    fn hmac_len(&self) -> usize {
        match self {
            Self::Aead { .. } => 0,
            Self::Cbc { hmac, .. } | Self::Plain { hmac } => hmac.as_ref().map_or(0, HmacKey::len),
        }
    }
}

fn nonce(packet_id: [u8; 4], implicit_iv: &[u8; 8]) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&packet_id);
    n[4..].copy_from_slice(implicit_iv);
    n
}

/// Builds the two directions of a data channel key.
#[derive(Debug)]
pub struct DataKeys;

impl DataKeys {
    /// Sealer and opener for `role` with the default (ring) AEAD backend. The client encrypts
    /// with key2 block 0 and decrypts with block 1, the server the reverse. `auth` is ignored
    /// for AEAD ciphers.
    #[allow(clippy::new_ret_no_self)] // the agreed API: DataKeys names the pair it builds
    pub fn new(
        cipher: CipherKind,
        auth: DigestKind,
        key2: &KeyBlock,
        role: Role,
    ) -> Result<(DataSealer, DataOpener), CryptoError> {
        Self::with_backend(AeadBackend::default(), cipher, auth, key2, role)
    }

    /// Like [`new`](Self::new) with an explicit AEAD backend.
    pub fn with_backend(
        backend: AeadBackend,
        cipher: CipherKind,
        auth: DigestKind,
        key2: &KeyBlock,
        role: Role,
    ) -> Result<(DataSealer, DataOpener), CryptoError> {
        let (tx, rx) = match role {
            Role::Client => (0, 1),
            Role::Server => (1, 0),
        };
        let sealer = DataSealer {
            kind: cipher,
            engine: Engine::new(backend, cipher, auth, key2, tx)?,
            next_id: AtomicU64::new(1),
        };
        let opener = DataOpener {
            kind: cipher,
            engine: Engine::new(backend, cipher, auth, key2, rx)?,
            replay: ReplayWindow::default_openvpn(),
        };
        Ok((sealer, opener))
    }
}

/// Sending half: allocates packet ids and seals packets in place.
///
/// `seal` takes `&self`: the packet-id counter is atomic, so one sealer may be shared (e.g. in
/// an `Arc`) by several threads and every sealed packet still gets its own packet id.
pub struct DataSealer {
    kind: CipherKind,
    engine: Engine,
    /// The next packet id to hand out; only ever incremented (by `fetch_add`), so no two
    /// `seal` calls, on any threads, get the same id.
    next_id: AtomicU64,
}

impl std::fmt::Debug for DataSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DataSealer({}, next id {})",
            self.kind.name(),
            self.next_packet_id()
        )
    }
}

impl DataSealer {
    /// The cipher.
    pub fn cipher(&self) -> CipherKind {
        self.kind
    }

    /// Bytes that `seal` writes in front of the payload for a header of `header_len` bytes
    /// (the headroom a [`PacketBuf`] needs to avoid moving the payload).
    pub fn headroom(&self, header_len: usize) -> usize {
        let h = self.engine.hmac_len();
        match self.engine {
            Engine::Aead { .. } => header_len + PACKET_ID_LEN + AEAD_TAG_LEN,
            Engine::Cbc { .. } => header_len + h + AES_BLOCK + PACKET_ID_LEN,
            Engine::Plain { .. } => header_len + h + PACKET_ID_LEN,
        }
    }

    /// Exact worst-case growth of a packet (headroom plus CBC padding).
    pub fn overhead(&self, header_len: usize) -> usize {
        self.headroom(header_len)
            + match self.engine {
                Engine::Cbc { .. } => AES_BLOCK,
                _ => 0,
            }
    }

    /// The packet id the next `seal` will use.
    pub fn next_packet_id(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed)
    }

    /// Sets the next packet id (tests; never reuse an id with the same key).
    pub fn set_next_packet_id(&mut self, id: u32) {
        *self.next_id.get_mut() = u64::from(id);
    }

    /// True once the next packet id is ≥ 0xFF000000: start a renegotiation.
    pub fn needs_renegotiation(&self) -> bool {
        self.next_packet_id() >= RENEGOTIATE_AT
    }

    /// Takes the next packet id. One atomic read-modify-write: ids are unique across threads
    /// (relaxed ordering suffices for that, nothing else is published through the counter).
    /// Past `u32::MAX` the counter keeps growing (a u64 does not wrap in practice) and every
    /// call fails, so an id is never reused.
    fn alloc_id(&self) -> Result<[u8; 4], DataError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        match u32::try_from(id) {
            Ok(id) if id != 0 => Ok(id.to_be_bytes()),
            _ => Err(DataError::PacketIdExhausted),
        }
    }

    /// Seals the payload in `buf` in place: afterwards `buf` holds the complete wire packet
    /// `header ‖ crypto payload`. `header` is the 1-byte DATA_V1 op/key or the 4-byte DATA_V2
    /// op/key ‖ peer-id. `rng` supplies CBC IVs (unused by AEAD ciphers). Returns the packet id.
    pub fn seal(
        &self,
        header: &[u8],
        buf: &mut PacketBuf,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<u32, DataError> {
        let hl = header.len();
        if hl != 1 && hl != 4 {
            return Err(DataError::BadHeader);
        }
        let pid = self.alloc_id()?;
        match &self.engine {
            Engine::Aead {
                cipher,
                implicit_iv,
            } => {
                let mut aad = [0u8; 8];
                let aad = if hl == 4 {
                    aad[..4].copy_from_slice(header);
                    aad[4..].copy_from_slice(&pid);
                    &aad[..]
                } else {
                    &pid[..]
                };
                let tag = cipher
                    .seal(nonce(pid, implicit_iv), aad, buf.as_mut_slice())
                    .ok_or(DataError::TooLong)?;
                let front = buf.prepend(hl + PACKET_ID_LEN + AEAD_TAG_LEN);
                front[..hl].copy_from_slice(header);
                front[hl..hl + 4].copy_from_slice(&pid);
                front[hl + 4..hl + 20].copy_from_slice(&tag);
            }
            Engine::Cbc { cipher, hmac } => {
                buf.prepend(PACKET_ID_LEN)[..4].copy_from_slice(&pid);
                let pad = AES_BLOCK - buf.len() % AES_BLOCK;
                for _ in 0..pad {
                    buf.extend_from_slice(&[pad as u8]);
                }
                let mut iv = [0u8; AES_BLOCK];
                rng.fill_bytes(&mut iv);
                cipher.encrypt(&iv, buf.as_mut_slice());
                let h = hmac.as_ref().map_or(0, HmacKey::len);
                let all = buf.prepend(hl + h + AES_BLOCK);
                all[hl + h..hl + h + AES_BLOCK].copy_from_slice(&iv);
                all[..hl].copy_from_slice(header);
                if let Some(k) = hmac {
                    let mut mac = [0u8; MAX_HMAC_LEN];
                    k.sign_parts(&[&all[hl + h..]], &mut mac);
                    all[hl..hl + h].copy_from_slice(&mac[..h]);
                }
            }
            Engine::Plain { hmac } => {
                buf.prepend(PACKET_ID_LEN)[..4].copy_from_slice(&pid);
                let h = hmac.as_ref().map_or(0, HmacKey::len);
                let all = buf.prepend(hl + h);
                all[..hl].copy_from_slice(header);
                if let Some(k) = hmac {
                    let mut mac = [0u8; MAX_HMAC_LEN];
                    k.sign_parts(&[&all[hl + h..]], &mut mac);
                    all[hl..hl + h].copy_from_slice(&mac[..h]);
                }
            }
        }
        Ok(u32::from_be_bytes(pid))
    }
}

/// Receiving half: verifies, decrypts in place and runs the replay window.
pub struct DataOpener {
    kind: CipherKind,
    engine: Engine,
    replay: ReplayWindow,
}

impl std::fmt::Debug for DataOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataOpener({})", self.kind.name())
    }
}

/// Header length from the first byte of a data packet.
fn header_len(packet: &[u8]) -> Result<usize, DataError> {
    match packet.first().map(|b| b >> 3) {
        Some(OP_DATA_V1) => Ok(1),
        Some(OP_DATA_V2) if packet.len() >= 4 => Ok(4),
        Some(OP_DATA_V2) => Err(DataError::TooShort),
        Some(_) => Err(DataError::BadOpcode),
        None => Err(DataError::TooShort),
    }
}

fn read_id(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl DataOpener {
    /// The cipher.
    pub fn cipher(&self) -> CipherKind {
        self.kind
    }

    /// Replaces the replay window (`--replay-window n t`; default 64 / 15 s).
    pub fn set_replay_window(&mut self, window: ReplayWindow) {
        self.replay = window;
    }

    /// The replay window state.
    pub fn replay_window(&self) -> &ReplayWindow {
        &self.replay
    }

    /// Opens a complete wire packet (`op/key ‖ [peer-id] ‖ crypto payload`, DATA_V1 or
    /// DATA_V2 by its opcode) in place and returns the plaintext as a sub-slice of `packet`.
    /// The tag/HMAC is verified before anything else changes; the replay window is checked
    /// first as a cheap filter and marked (with `now_secs`) only after success.
    pub fn open<'a>(
        &mut self,
        packet: &'a mut [u8],
        now_secs: u64,
    ) -> Result<&'a mut [u8], DataError> {
        let hl = header_len(packet)?;
        let (header, rest) = packet.split_at_mut(hl);
        let (pid, plain) = match &self.engine {
            Engine::Aead {
                cipher,
                implicit_iv,
            } => {
                if rest.len() < PACKET_ID_LEN + AEAD_TAG_LEN {
                    return Err(DataError::TooShort);
                }
                let (pid_bytes, tag_ct) = rest.split_at_mut(PACKET_ID_LEN);
                let pid = read_id(pid_bytes);
                if !self.replay.check(pid, 0) {
                    return Err(DataError::Replay);
                }
                let mut aad = [0u8; 8];
                let aad = if hl == 4 {
                    aad[..4].copy_from_slice(header);
                    aad[4..].copy_from_slice(pid_bytes);
                    &aad[..]
                } else {
                    &pid_bytes[..]
                };
                let mut pb = [0u8; 4];
                pb.copy_from_slice(pid_bytes);
                let range = cipher
                    .open(nonce(pb, implicit_iv), aad, tag_ct)
                    .ok_or(DataError::BadTag)?;
                (pid, &mut tag_ct[range])
            }
            Engine::Cbc { cipher, hmac } => {
                let h = hmac.as_ref().map_or(0, HmacKey::len);
                if rest.len() < h + 2 * AES_BLOCK {
                    return Err(DataError::TooShort);
                }
                let (mac, iv_ct) = rest.split_at_mut(h);
                if let Some(k) = hmac {
                    if !k.verify_parts(&[iv_ct], mac) {
                        return Err(DataError::BadTag);
                    }
                }
                let (iv, ct) = iv_ct.split_at_mut(AES_BLOCK);
                let mut ivb = [0u8; AES_BLOCK];
                ivb.copy_from_slice(iv);
                if !cipher.decrypt(&ivb, ct) {
                    return Err(DataError::BadPadding);
                }
                let pad = cbc::pkcs7_len(ct).ok_or(DataError::BadPadding)?;
                let n = ct.len() - pad;
                if n < PACKET_ID_LEN {
                    return Err(DataError::TooShort);
                }
                let pid = read_id(ct);
                (pid, &mut ct[PACKET_ID_LEN..n])
            }
            Engine::Plain { hmac } => {
                let h = hmac.as_ref().map_or(0, HmacKey::len);
                if rest.len() < h + PACKET_ID_LEN {
                    return Err(DataError::TooShort);
                }
                let (mac, body) = rest.split_at_mut(h);
                if let Some(k) = hmac {
                    if !k.verify_parts(&[body], mac) {
                        return Err(DataError::BadTag);
                    }
                }
                (read_id(body), &mut body[PACKET_ID_LEN..])
            }
        };
        if !self.replay.check(pid, 0) {
            return Err(DataError::Replay);
        }
        self.replay.mark(pid, 0, now_secs);
        Ok(plain)
    }

    /// [`open`](Self::open) on a [`PacketBuf`], narrowing it to the plaintext on success.
    pub fn open_buf(&mut self, buf: &mut PacketBuf, now_secs: u64) -> Result<(), DataError> {
        let slice = buf.as_mut_slice();
        let base = slice.as_ptr() as usize;
        let plain = self.open(slice, now_secs)?;
        let (offset, len) = (plain.as_ptr() as usize - base, plain.len());
        buf.narrow(offset, len);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
