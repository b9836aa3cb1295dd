//! Data-channel packet headers (`data.md` §2).
//!
//! ```text
//! P_DATA_V1:  | op/key (0x30|k) | crypto payload …
//! P_DATA_V2:  | op/key (0x48|k) | peer-id u24 BE | crypto payload …
//! ```
//!
//! The DATA_V2 header (all 4 bytes) is authenticated as AEAD additional data; the DATA_V1 byte
//! is not. [`DataHeader::to_bytes`] gives the exact bytes for either use.

use crate::error::WireError;
use crate::opcode::{KeyId, Opcode, first_byte, parse_first_byte};

/// The DATA_V2 peer-id meaning "no peer-id" (look the peer up by address instead).
pub const PEER_ID_NONE: u32 = 0xFF_FFFF;
/// Largest peer-id (24 bits).
pub const PEER_ID_MAX: u32 = 0xFF_FFFF;
/// Length of the DATA_V1 header.
pub const DATA_V1_HEADER_LEN: usize = 1;
/// Length of the DATA_V2 header.
pub const DATA_V2_HEADER_LEN: usize = 4;
/// Offset of the 24-bit peer-id in a DATA_V2 packet.
pub const PEER_ID_OFFSET: usize = 1;

/// The header of a data packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataHeader {
    /// P_DATA_V1: one byte.
    V1 {
        /// Key ID.
        key_id: KeyId,
    },
    /// P_DATA_V2: one byte plus a 24-bit peer-id.
    V2 {
        /// Key ID.
        key_id: KeyId,
        /// Peer-id, at most [`PEER_ID_MAX`]; [`PEER_ID_NONE`] means "none".
        peer_id: u32,
    },
}

impl DataHeader {
    /// Parses the header at the start of `bytes` (which may continue with the payload).
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let first = *bytes.first().ok_or(WireError::Truncated)?;
        let (op, key_id) = parse_first_byte(first)?;
        match op {
            Opcode::DataV1 => Ok(DataHeader::V1 { key_id }),
            Opcode::DataV2 => {
                let p = bytes
                    .get(PEER_ID_OFFSET..DATA_V2_HEADER_LEN)
                    .ok_or(WireError::Truncated)?;
                let peer_id = p.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
                Ok(DataHeader::V2 { key_id, peer_id })
            }
            other => Err(WireError::NotData(other)),
        }
    }

    /// Splits a data packet into its header and the crypto payload after it.
    pub fn split(datagram: &[u8]) -> Result<(Self, &[u8]), WireError> {
        let header = Self::parse(datagram)?;
        let rest = datagram.get(header.len()..).ok_or(WireError::Truncated)?;
        Ok((header, rest))
    }

    /// Header length: 1 for V1, 4 for V2.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        match self {
            DataHeader::V1 { .. } => DATA_V1_HEADER_LEN,
            DataHeader::V2 { .. } => DATA_V2_HEADER_LEN,
        }
    }

    /// Same as [`DataHeader::len`], named as in the other wire types.
    pub fn buffer_len(&self) -> usize {
        self.len()
    }

    /// The key ID.
    pub fn key_id(&self) -> KeyId {
        match *self {
            DataHeader::V1 { key_id } | DataHeader::V2 { key_id, .. } => key_id,
        }
    }

    /// The opcode (DataV1 or DataV2).
    pub fn opcode(&self) -> Opcode {
        match self {
            DataHeader::V1 { .. } => Opcode::DataV1,
            DataHeader::V2 { .. } => Opcode::DataV2,
        }
    }

    /// The peer-id of a V2 header, `None` for V1.
    pub fn peer_id(&self) -> Option<u32> {
        match *self {
            DataHeader::V1 { .. } => None,
            DataHeader::V2 { peer_id, .. } => Some(peer_id),
        }
    }

    /// Writes the header into the start of `out`; returns its length. Errors if `out` is
    /// too short or a V2 peer-id exceeds 24 bits.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        if let DataHeader::V2 { peer_id, .. } = *self {
            if peer_id > PEER_ID_MAX {
                return Err(WireError::PeerIdOutOfRange(peer_id));
            }
        }
        let (bytes, n) = self.to_bytes();
        let available = out.len();
        let dst = out.get_mut(..n).ok_or(WireError::BufferTooSmall {
            needed: n,
            available,
        })?;
        dst.copy_from_slice(bytes.get(..n).unwrap_or(&[]));
        Ok(n)
    }

    /// The header bytes and their count (only the first `len()` bytes are meaningful).
    ///
    /// A V2 peer-id is masked to 24 bits here; [`DataHeader::emit`] rejects it instead.
    pub fn to_bytes(&self) -> ([u8; 4], usize) {
        let b0 = first_byte(self.opcode(), self.key_id());
        match *self {
            DataHeader::V1 { .. } => ([b0, 0, 0, 0], DATA_V1_HEADER_LEN),
            DataHeader::V2 { peer_id, .. } => {
                let p = (peer_id & PEER_ID_MAX).to_be_bytes();
                ([b0, p[1], p[2], p[3]], DATA_V2_HEADER_LEN)
            }
        }
    }
}

/// The peer-id of a DATA_V2 datagram in O(1), for routing before any decryption; `None` for
/// anything else or a datagram shorter than 4 bytes.
pub fn peek_peer_id(datagram: &[u8]) -> Option<u32> {
    let hdr: [u8; 4] = datagram.get(..DATA_V2_HEADER_LEN)?.try_into().ok()?;
    if hdr[0] >> 3 != Opcode::DataV2.value() {
        return None;
    }
    Some(u32::from_be_bytes(hdr) & PEER_ID_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_v2_live_vector() {
        // test-vectors.md §6: server's first data packet starts 48 000000 …
        let pkt = [0x48, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xb0, 0xa1];
        let (h, rest) = DataHeader::split(&pkt).expect("parses");
        assert_eq!(
            h,
            DataHeader::V2 {
                key_id: KeyId::ZERO,
                peer_id: 0
            }
        );
        assert_eq!(h.len(), 4);
        assert_eq!(rest, &pkt[4..]);
        assert_eq!(peek_peer_id(&pkt), Some(0));
        assert_eq!(h.to_bytes(), ([0x48, 0, 0, 0], 4));
    }

    #[test]
    fn data_v2_peer_id_and_key() {
        let k = KeyId::new(3).expect("key");
        let h = DataHeader::V2 {
            key_id: k,
            peer_id: 0x12_3456,
        };
        let mut out = [0u8; 4];
        assert_eq!(h.emit(&mut out), Ok(4));
        assert_eq!(out, [0x4b, 0x12, 0x34, 0x56]);
        assert_eq!(DataHeader::parse(&out), Ok(h));
        assert_eq!(peek_peer_id(&out), Some(0x12_3456));
        let none = DataHeader::V2 {
            key_id: k,
            peer_id: PEER_ID_NONE,
        };
        assert_eq!(none.to_bytes().0, [0x4b, 0xff, 0xff, 0xff]);
        let bad = DataHeader::V2 {
            key_id: k,
            peer_id: 0x100_0000,
        };
        assert_eq!(
            bad.emit(&mut out),
            Err(WireError::PeerIdOutOfRange(0x100_0000))
        );
        assert_eq!(
            h.emit(&mut out[..3]),
            Err(WireError::BufferTooSmall {
                needed: 4,
                available: 3
            })
        );
    }

    #[test]
    fn data_v1_live_vector() {
        // test-vectors.md §7: server ping starts 30 ‖ HMAC …
        let pkt = [0x30, 0x25, 0x39, 0x5b];
        let (h, rest) = DataHeader::split(&pkt).expect("parses");
        assert_eq!(
            h,
            DataHeader::V1 {
                key_id: KeyId::ZERO
            }
        );
        assert_eq!(rest, &pkt[1..]);
        assert_eq!(peek_peer_id(&pkt), None);
        let mut out = [0u8; 1];
        assert_eq!(h.emit(&mut out), Ok(1));
        assert_eq!(out, [0x30]);
        assert_eq!(h.peer_id(), None);
    }

    #[test]
    fn rejections() {
        assert_eq!(DataHeader::parse(&[]), Err(WireError::Truncated));
        assert_eq!(DataHeader::parse(&[0x48, 0, 0]), Err(WireError::Truncated));
        assert_eq!(peek_peer_id(&[0x48, 0, 0]), None);
        assert_eq!(
            DataHeader::parse(&[0x38, 0, 0, 0]),
            Err(WireError::NotData(Opcode::HardResetClientV2))
        );
        assert_eq!(peek_peer_id(&[0x38, 0, 0, 0]), None);
        assert_eq!(DataHeader::parse(&[0x00]), Err(WireError::UnknownOpcode(0)));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_emit_identity(bytes in prop::collection::vec(any::<u8>(), 0..8)) {
                if let Ok(h) = DataHeader::parse(&bytes) {
                    let mut out = [0u8; 4];
                    let n = h.emit(&mut out).expect("parsed headers re-emit");
                    prop_assert_eq!(&out[..n], &bytes[..n]);
                    prop_assert_eq!(peek_peer_id(&bytes), h.peer_id());
                }
            }
        }
    }
}
