//! Compression *framing* of data-channel plaintext (`data.md` §6). No real compression:
//! only the stub framings that carry uncompressed data, and a clear error when a peer sends
//! a really compressed packet.
//!
//! ```text
//! None     | payload |                                   unchanged
//! LzoStub  | FA | payload |                              comp-lzo no          (0x66 = LZO)
//! Stub     | FB | payload[1..] | payload[0] |            compress (stub), swap (0x69 = LZ4)
//! StubV2   | payload |, or | 50 00 | payload | if payload[0] == 0x50     compress stub-v2
//! ```
//!
//! An empty payload is left empty by every framing, and an empty packet decapsulates to an
//! empty payload (as 2.6 does).

use core::ops::Range;

use crate::error::WireError;

/// v1 marker: uncompressed (no swap), `comp-lzo`.
pub const NO_COMPRESS_BYTE: u8 = 0xFA;
/// v1 marker: uncompressed with swap, `compress` / `compress lz4`.
pub const NO_COMPRESS_BYTE_SWAP: u8 = 0xFB;
/// v1 marker: LZO-compressed.
pub const LZO_COMPRESS_BYTE: u8 = 0x66;
/// v1 marker: LZ4-compressed (swap).
pub const LZ4_COMPRESS_BYTE: u8 = 0x69;
/// v2 indicator byte.
pub const COMP_ALGV2_INDICATOR_BYTE: u8 = 0x50;
/// v2 algorithm byte: uncompressed.
pub const COMP_ALGV2_UNCOMPRESSED: u8 = 0x00;
/// v2 algorithm byte: LZ4.
pub const COMP_ALGV2_LZ4: u8 = 0x01;
/// v2 algorithm byte: LZO (reserved).
pub const COMP_ALGV2_LZO: u8 = 0x02;
/// v2 algorithm byte: Snappy (reserved).
pub const COMP_ALGV2_SNAPPY: u8 = 0x03;

/// The compression framing in force for a session (from configuration or push).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CompressionFraming {
    /// No compression framing at all (2.6 default).
    #[default]
    None,
    /// `comp-lzo no` (and `comp-lzo` peers that never compress): `0xFA` prefix.
    LzoStub,
    /// `compress` / `compress stub`: first byte swapped to the end, replaced by `0xFB`.
    Stub,
    /// `compress stub-v2`: unchanged unless the first byte is `0x50`, then `50 00` prefix.
    StubV2,
}

impl CompressionFraming {
    /// Bytes the framing adds to `payload` (0, 1 or 2).
    pub fn overhead(self, payload: &[u8]) -> usize {
        match (self, payload.first()) {
            (_, None) | (CompressionFraming::None, _) => 0,
            (CompressionFraming::LzoStub | CompressionFraming::Stub, _) => 1,
            (CompressionFraming::StubV2, Some(&b)) => {
                if b == COMP_ALGV2_INDICATOR_BYTE {
                    2
                } else {
                    0
                }
            }
        }
    }

    /// Most bytes of headroom [`CompressionFraming::encap_in_place`] may need before the
    /// payload.
    pub const MAX_HEADROOM: usize = 2;
    /// Most bytes of tailroom [`CompressionFraming::encap_in_place`] may need after the
    /// payload.
    pub const MAX_TAILROOM: usize = 1;

    /// Frames `payload` in place in a vector (may insert 1–2 bytes at the front).
    pub fn encap(self, payload: &mut Vec<u8>) {
        let Some(&first) = payload.first() else {
            return;
        };
        match self {
            CompressionFraming::None => {}
            CompressionFraming::LzoStub => {
                payload.insert(0, NO_COMPRESS_BYTE);
            }
            CompressionFraming::Stub => {
                payload.push(first);
                if let Some(head) = payload.first_mut() {
                    *head = NO_COMPRESS_BYTE_SWAP;
                }
            }
            CompressionFraming::StubV2 => {
                if first == COMP_ALGV2_INDICATOR_BYTE {
                    payload.splice(0..0, [COMP_ALGV2_INDICATOR_BYTE, COMP_ALGV2_UNCOMPRESSED]);
                }
            }
        }
    }

    /// Frames the payload `buf[payload]` in place, using up to [`Self::MAX_HEADROOM`] bytes
    /// before it and [`Self::MAX_TAILROOM`] after it; returns the range of the framed packet.
    /// Errors with [`WireError::BufferTooSmall`] if the room needed is not there.
    pub fn encap_in_place(
        self,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> Result<Range<usize>, WireError> {
        let Range { start, end } = payload;
        if start > end || end > buf.len() {
            return Err(WireError::BufferTooSmall {
                needed: end.max(start),
                available: buf.len(),
            });
        }
        let Some(&first) = buf.get(start).filter(|_| start < end) else {
            return Ok(start..end);
        };
        let need_before = |n: usize| -> Result<usize, WireError> {
            start.checked_sub(n).ok_or(WireError::BufferTooSmall {
                needed: n,
                available: start,
            })
        };
        match self {
            CompressionFraming::None => Ok(start..end),
            CompressionFraming::LzoStub => {
                let s = need_before(1)?;
                if let Some(b) = buf.get_mut(s) {
                    *b = NO_COMPRESS_BYTE;
                }
                Ok(s..end)
            }
            CompressionFraming::Stub => {
                let tail = buf.get_mut(end).ok_or(WireError::BufferTooSmall {
                    needed: end + 1,
                    available: end,
                })?;
                *tail = first;
                if let Some(b) = buf.get_mut(start) {
                    *b = NO_COMPRESS_BYTE_SWAP;
                }
                Ok(start..end + 1)
            }
            CompressionFraming::StubV2 => {
                if first != COMP_ALGV2_INDICATOR_BYTE {
                    return Ok(start..end);
                }
                let s = need_before(2)?;
                if let Some(h) = buf.get_mut(s..start) {
                    h.copy_from_slice(&[COMP_ALGV2_INDICATOR_BYTE, COMP_ALGV2_UNCOMPRESSED]);
                }
                Ok(s..end)
            }
        }
    }

    /// Removes the framing in place and returns the payload as a sub-slice of `data`.
    ///
    /// Errors with [`WireError::CompressedNotSupported`] for really compressed packets
    /// (LZO `0x66`, LZ4 `0x69`, v2 algorithms 1–3), [`WireError::BadCompressionMarker`] for
    /// any other unexpected marker, and [`WireError::Truncated`] for a lone v2 indicator.
    pub fn decap(self, data: &mut [u8]) -> Result<&mut [u8], WireError> {
        let Some(&first) = data.first() else {
            return Ok(data);
        };
        let v1_error = |b: u8| match b {
            LZO_COMPRESS_BYTE | LZ4_COMPRESS_BYTE => WireError::CompressedNotSupported(b),
            _ => WireError::BadCompressionMarker(b),
        };
        match self {
            CompressionFraming::None => Ok(data),
            CompressionFraming::LzoStub => {
                if first != NO_COMPRESS_BYTE {
                    return Err(v1_error(first));
                }
                Ok(data.get_mut(1..).unwrap_or_default())
            }
            CompressionFraming::Stub => {
                if first != NO_COMPRESS_BYTE_SWAP {
                    return Err(v1_error(first));
                }
                let n = data.len();
                if let Some(&last) = data.last() {
                    if let Some(head) = data.first_mut() {
                        *head = last;
                    }
                }
                Ok(data.get_mut(..n - 1).unwrap_or_default())
            }
            CompressionFraming::StubV2 => {
                if first != COMP_ALGV2_INDICATOR_BYTE {
                    return Ok(data);
                }
                match data.get(1).copied() {
                    None => Err(WireError::Truncated),
                    Some(COMP_ALGV2_UNCOMPRESSED) => Ok(data.get_mut(2..).unwrap_or_default()),
                    Some(alg @ (COMP_ALGV2_LZ4 | COMP_ALGV2_LZO | COMP_ALGV2_SNAPPY)) => {
                        Err(WireError::CompressedNotSupported(alg))
                    }
                    Some(other) => Err(WireError::BadCompressionMarker(other)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::magic::PING_MAGIC;

    const ALL: [CompressionFraming; 4] = [
        CompressionFraming::None,
        CompressionFraming::LzoStub,
        CompressionFraming::Stub,
        CompressionFraming::StubV2,
    ];

    #[test]
    fn stub_bytes() {
        let ip = [0x45, 0x00, 0x00, 0x14];
        let mut v = ip.to_vec();
        CompressionFraming::LzoStub.encap(&mut v);
        assert_eq!(v, [0xfa, 0x45, 0x00, 0x00, 0x14]);
        assert_eq!(
            CompressionFraming::LzoStub.decap(&mut v),
            Ok(&mut { ip }[..])
        );

        let mut v = ip.to_vec();
        CompressionFraming::Stub.encap(&mut v);
        assert_eq!(v, [0xfb, 0x00, 0x00, 0x14, 0x45]);
        assert_eq!(CompressionFraming::Stub.decap(&mut v), Ok(&mut { ip }[..]));

        let mut v = ip.to_vec();
        CompressionFraming::StubV2.encap(&mut v);
        assert_eq!(v, ip);
        let mut v = vec![0x50, 0x01];
        CompressionFraming::StubV2.encap(&mut v);
        assert_eq!(v, [0x50, 0x00, 0x50, 0x01]);
        assert_eq!(
            CompressionFraming::StubV2.decap(&mut v),
            Ok(&mut [0x50u8, 0x01][..])
        );
    }

    #[test]
    fn ping_framed() {
        let mut v = PING_MAGIC.to_vec();
        CompressionFraming::Stub.encap(&mut v);
        assert_eq!(v[0], 0xfb);
        assert_eq!(v[16], 0x2a);
        assert!(crate::magic::is_ping(
            CompressionFraming::Stub.decap(&mut v).expect("ok")
        ));
    }

    #[test]
    fn compressed_rejected() {
        assert_eq!(
            CompressionFraming::LzoStub.decap(&mut [0x66, 1, 2]),
            Err(WireError::CompressedNotSupported(0x66))
        );
        assert_eq!(
            CompressionFraming::Stub.decap(&mut [0x69, 1, 2]),
            Err(WireError::CompressedNotSupported(0x69))
        );
        assert_eq!(
            CompressionFraming::StubV2.decap(&mut [0x50, 0x01, 2]),
            Err(WireError::CompressedNotSupported(0x01))
        );
        assert_eq!(
            CompressionFraming::StubV2.decap(&mut [0x50, 0x07]),
            Err(WireError::BadCompressionMarker(0x07))
        );
        assert_eq!(
            CompressionFraming::StubV2.decap(&mut [0x50]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            CompressionFraming::LzoStub.decap(&mut [0x45, 0]),
            Err(WireError::BadCompressionMarker(0x45))
        );
        assert_eq!(
            CompressionFraming::StubV2.decap(&mut [0x45, 7]),
            Ok(&mut [0x45u8, 7][..])
        );
        for f in ALL {
            assert_eq!(f.decap(&mut []), Ok(&mut [][..]));
        }
    }

    #[test]
    fn in_place_matches_vec() {
        for f in ALL {
            for payload in [&[0x45u8, 1, 2][..], &[0x50, 9][..], &[7][..], &[][..]] {
                let mut v = payload.to_vec();
                f.encap(&mut v);
                assert_eq!(v.len(), payload.len() + f.overhead(payload));
                let mut buf = vec![0u8; 2 + payload.len() + 1];
                buf[2..2 + payload.len()].copy_from_slice(payload);
                let r = f
                    .encap_in_place(&mut buf, 2..2 + payload.len())
                    .expect("room");
                assert_eq!(&buf[r], &v[..], "{f:?} {payload:?}");
            }
        }
        let mut buf = [0x50u8, 1];
        assert!(
            CompressionFraming::StubV2
                .encap_in_place(&mut buf, 0..2)
                .is_err()
        );
        assert!(
            CompressionFraming::Stub
                .encap_in_place(&mut buf, 0..2)
                .is_err()
        );
        assert!(
            CompressionFraming::LzoStub
                .encap_in_place(&mut buf, 0..2)
                .is_err()
        );
        assert!(
            CompressionFraming::None
                .encap_in_place(&mut buf, 1..3)
                .is_err()
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn decap_encap_identity(f in 0usize..4, payload in prop::collection::vec(any::<u8>(), 0..40)) {
                let f = ALL[f];
                let mut v = payload.clone();
                f.encap(&mut v);
                prop_assert_eq!(f.decap(&mut v).map(|s| s.to_vec()), Ok(payload));
            }

            #[test]
            fn garbage_never_panics(f in 0usize..4, mut data in prop::collection::vec(any::<u8>(), 0..8)) {
                let _ = ALL[f].decap(&mut data);
            }
        }
    }
}
