//! Early-negotiation TLVs in the payload of a hard reset's first message (`packets.md` §7.3).
//!
//! ```text
//! | type u16 | length u16 | value (length bytes) |  repeated until the payload ends
//! ```

use crate::error::WireError;

/// TLV type EARLY_NEG_FLAGS (value: u16 flags).
pub const TLV_EARLY_NEG_FLAGS: u16 = 1;
/// EARLY_NEG_FLAGS bit: the client must resend its WKc with its next control packet.
pub const EARLY_NEG_RESEND_WKC: u16 = 1;
/// Length of a TLV header (type and length).
pub const TLV_HEADER_LEN: usize = 4;

/// One TLV borrowed from a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The type.
    pub tlv_type: u16,
    /// The value.
    pub value: &'a [u8],
}

/// Iterates over the TLVs of a payload; yields `Err(Truncated)` once (and then stops) if
/// the payload ends inside a TLV.
#[derive(Debug, Clone)]
pub struct TlvIter<'a> {
    rest: &'a [u8],
}

impl<'a> TlvIter<'a> {
    /// An iterator over the TLVs of `payload`.
    pub fn new(payload: &'a [u8]) -> Self {
        TlvIter { rest: payload }
    }
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Result<Tlv<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let parsed = (|| {
            let hdr = self.rest.get(..TLV_HEADER_LEN)?;
            let tlv_type = u16::from_be_bytes([*hdr.first()?, *hdr.get(1)?]);
            let len = usize::from(u16::from_be_bytes([*hdr.get(2)?, *hdr.get(3)?]));
            let end = TLV_HEADER_LEN + len;
            let value = self.rest.get(TLV_HEADER_LEN..end)?;
            Some((Tlv { tlv_type, value }, end))
        })();
        match parsed {
            Some((tlv, end)) => {
                self.rest = self.rest.get(end..).unwrap_or(&[]);
                Some(Ok(tlv))
            }
            None => {
                self.rest = &[];
                Some(Err(WireError::Truncated))
            }
        }
    }
}

/// The EARLY_NEG_FLAGS of a hard-reset payload: 0 if absent (including an empty payload);
/// unknown TLV types are skipped; several EARLY_NEG_FLAGS TLVs are OR-ed. Errors on a
/// truncated TLV or an EARLY_NEG_FLAGS value that is not 2 bytes long.
pub fn parse_early_neg_flags(payload: &[u8]) -> Result<u16, WireError> {
    let mut flags = 0;
    for tlv in TlvIter::new(payload) {
        let tlv = tlv?;
        if tlv.tlv_type == TLV_EARLY_NEG_FLAGS {
            let [a, b] = <[u8; 2]>::try_from(tlv.value).map_err(|_| WireError::BadTlvLength {
                tlv_type: TLV_EARLY_NEG_FLAGS,
                len: tlv.value.len() as u16,
                expected: 2,
            })?;
            flags |= u16::from_be_bytes([a, b]);
        }
    }
    Ok(flags)
}

/// The 6-byte EARLY_NEG_FLAGS TLV carrying `flags`.
pub fn emit_early_neg_flags(flags: u16) -> [u8; 6] {
    let t = TLV_EARLY_NEG_FLAGS.to_be_bytes();
    let f = flags.to_be_bytes();
    [t[0], t[1], 0x00, 0x02, f[0], f[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_resend_wkc_tlv() {
        // test-vectors.md §8 / packets.md §7.3: exactly what 2.6.14 sends
        let tlv = [0x00, 0x01, 0x00, 0x02, 0x00, 0x01];
        assert_eq!(parse_early_neg_flags(&tlv), Ok(EARLY_NEG_RESEND_WKC));
        assert_eq!(emit_early_neg_flags(EARLY_NEG_RESEND_WKC), tlv);
    }

    #[test]
    fn empty_unknown_and_truncated() {
        assert_eq!(parse_early_neg_flags(&[]), Ok(0));
        // unknown type 7 with 3 bytes, then the flags
        let p = [
            0x00, 0x07, 0x00, 0x03, 1, 2, 3, 0x00, 0x01, 0x00, 0x02, 0x00, 0x01,
        ];
        assert_eq!(parse_early_neg_flags(&p), Ok(1));
        assert_eq!(parse_early_neg_flags(&p[..7]), Ok(0));
        for n in [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12] {
            assert_eq!(
                parse_early_neg_flags(&p[..n]),
                Err(WireError::Truncated),
                "len {n}"
            );
        }
        assert_eq!(
            parse_early_neg_flags(&[0x00, 0x01, 0x00, 0x01, 0x00]),
            Err(WireError::BadTlvLength {
                tlv_type: 1,
                len: 1,
                expected: 2
            })
        );
        let mut it = TlvIter::new(&[0, 1]);
        assert_eq!(it.next(), Some(Err(WireError::Truncated)));
        assert_eq!(it.next(), None);
    }
}
