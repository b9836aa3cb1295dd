//! Compression *framing* of data-channel plaintext (`data.md` §6), and decompression of what
//! a compressing peer sends. Nothing is ever compressed here (VORACLE): every framing sends
//! its algorithm's "uncompressed" form, which every peer must accept.
//!
//! ```text
//! None     | payload |                                   unchanged
//! LzoStub  | FA | payload |                              comp-lzo no
//! Lzo      sends as LzoStub; receives | 66 | lzo1x |     comp-lzo [yes|adaptive], compress lzo
//! Stub     | FB | payload[1..] | payload[0] |            compress (stub), swap
//! Lz4      sends as Stub; receives | 69 | lz4[1..] | lz4[0] |          compress lz4
//! StubV2   | payload |, or | 50 00 | payload | if payload[0] == 0x50     compress stub-v2
//! Lz4V2    sends as StubV2; receives | 50 01 | lz4 |                    compress lz4-v2
//!
//! received ──unframe──▶ Unframed::Plain(payload)               (in place)
//!                  └──▶ Unframed::Compressed(algorithm, body) ──Algorithm::decompress──▶ out
//! ```
//!
//! An empty payload is left empty by every framing, and an empty packet decapsulates to an
//! empty payload (as 2.6 does). LZ4 blocks are decoded by `lz4_flex` (its safe decoder), LZO1X
//! by [`crate::lzo`].

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
    /// `comp-lzo [yes|adaptive]` / `compress lzo`: sends as [`Self::LzoStub`], also receives
    /// LZO1X-compressed packets (`0x66`).
    Lzo,
    /// `compress lz4`: sends as [`Self::Stub`], also receives LZ4 packets (`0x69`, swapped).
    Lz4,
    /// `compress lz4-v2`: sends as [`Self::StubV2`], also receives LZ4 packets (`50 01`).
    Lz4V2,
}

/// A compression algorithm a peer may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// LZO1X (`comp-lzo`, `compress lzo`).
    Lzo,
    /// LZ4 block format (`compress lz4`, `compress lz4-v2`).
    Lz4,
}

impl core::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Algorithm::Lzo => "LZO",
            Algorithm::Lz4 => "LZ4",
        })
    }
}

impl Algorithm {
    /// Decompresses `input` into `out`, whose length is the size limit; returns the payload
    /// length. Corrupt input, an empty payload or one longer than `out` is
    /// [`WireError::BadCompressedData`]; nothing here panics.
    pub fn decompress(self, input: &[u8], out: &mut [u8]) -> Result<usize, WireError> {
        let n = match self {
            Algorithm::Lzo => crate::lzo::decompress(input, out).ok(),
            Algorithm::Lz4 => lz4_flex::block::decompress_into(input, out).ok(),
        };
        match n {
            Some(n) if n > 0 && n <= out.len() => Ok(n),
            _ => Err(WireError::BadCompressedData {
                algorithm: self,
                limit: out.len(),
            }),
        }
    }
}

/// A received packet with its framing removed.
#[derive(Debug, PartialEq, Eq)]
pub enum Unframed<'a> {
    /// An uncompressed payload (a sub-slice of the packet).
    Plain(&'a mut [u8]),
    /// A compressed payload: decompress `body` with `algorithm`.
    Compressed {
        /// How the peer compressed it.
        algorithm: Algorithm,
        /// The compressed bytes (marker removed, swap undone).
        body: &'a [u8],
    },
}

impl CompressionFraming {
    /// The framing of what this framing sends: the stub of its family (data is never
    /// compressed, and a compressing peer accepts its algorithm's uncompressed form).
    pub fn sends_as(self) -> Self {
        match self {
            CompressionFraming::Lzo => CompressionFraming::LzoStub,
            CompressionFraming::Lz4 => CompressionFraming::Stub,
            CompressionFraming::Lz4V2 => CompressionFraming::StubV2,
            other => other,
        }
    }

    /// The algorithm whose packets this framing decompresses, if any.
    pub fn decompresses(self) -> Option<Algorithm> {
        match self {
            CompressionFraming::Lzo => Some(Algorithm::Lzo),
            CompressionFraming::Lz4 | CompressionFraming::Lz4V2 => Some(Algorithm::Lz4),
            _ => None,
        }
    }

    /// Bytes the framing adds to `payload` (0, 1 or 2).
    pub fn overhead(self, payload: &[u8]) -> usize {
        match (self.sends_as(), payload.first()) {
            (_, None) | (CompressionFraming::None, _) => 0,
            (CompressionFraming::StubV2, Some(&b)) => {
                if b == COMP_ALGV2_INDICATOR_BYTE {
                    2
                } else {
                    0
                }
            }
            _ => 1,
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
        match self.sends_as() {
            CompressionFraming::LzoStub => {
                payload.insert(0, NO_COMPRESS_BYTE);
            }
            CompressionFraming::Stub => {
                payload.push(first);
                if let Some(head) = payload.first_mut() {
                    *head = NO_COMPRESS_BYTE_SWAP;
                }
            }
            CompressionFraming::StubV2 if first == COMP_ALGV2_INDICATOR_BYTE => {
                payload.splice(0..0, [COMP_ALGV2_INDICATOR_BYTE, COMP_ALGV2_UNCOMPRESSED]);
            }
            _ => {}
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
        match self.sends_as() {
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
            _ => Ok(start..end),
        }
    }

    /// Removes the framing in place: an uncompressed payload as a sub-slice of `data`, or
    /// the compressed body for [`Algorithm::decompress`] (only for [`Self::Lzo`],
    /// [`Self::Lz4`] and [`Self::Lz4V2`]).
    ///
    /// Errors with [`WireError::CompressedNotSupported`] for a compressed packet under a
    /// framing that does not decompress (LZO `0x66`, LZ4 `0x69`, v2 algorithms 1–3),
    /// [`WireError::BadCompressionMarker`] for any other unexpected marker, and
    /// [`WireError::Truncated`] for a lone v2 indicator.
    pub fn unframe(self, data: &mut [u8]) -> Result<Unframed<'_>, WireError> {
        let Some(&first) = data.first() else {
            return Ok(Unframed::Plain(data));
        };
        let v1_error = |b: u8| match b {
            LZO_COMPRESS_BYTE | LZ4_COMPRESS_BYTE => WireError::CompressedNotSupported(b),
            _ => WireError::BadCompressionMarker(b),
        };
        match self {
            CompressionFraming::None => Ok(Unframed::Plain(data)),
            CompressionFraming::LzoStub | CompressionFraming::Lzo => {
                let rest = data.get_mut(1..).unwrap_or_default();
                match first {
                    NO_COMPRESS_BYTE => Ok(Unframed::Plain(rest)),
                    LZO_COMPRESS_BYTE if self == CompressionFraming::Lzo => {
                        Ok(Unframed::Compressed {
                            algorithm: Algorithm::Lzo,
                            body: rest,
                        })
                    }
                    b => Err(v1_error(b)),
                }
            }
            CompressionFraming::Stub | CompressionFraming::Lz4 => {
                let compressed = match first {
                    NO_COMPRESS_BYTE_SWAP => false,
                    LZ4_COMPRESS_BYTE if self == CompressionFraming::Lz4 => true,
                    b => return Err(v1_error(b)),
                };
                let n = data.len();
                if let Some(&last) = data.last() {
                    if let Some(head) = data.first_mut() {
                        *head = last;
                    }
                }
                let body = data.get_mut(..n - 1).unwrap_or_default();
                Ok(if compressed {
                    Unframed::Compressed {
                        algorithm: Algorithm::Lz4,
                        body,
                    }
                } else {
                    Unframed::Plain(body)
                })
            }
            CompressionFraming::StubV2 | CompressionFraming::Lz4V2 => {
                if first != COMP_ALGV2_INDICATOR_BYTE {
                    return Ok(Unframed::Plain(data));
                }
                let alg = data.get(1).copied();
                let rest = data.get_mut(2..).unwrap_or_default();
                match alg {
                    None => Err(WireError::Truncated),
                    Some(COMP_ALGV2_UNCOMPRESSED) => Ok(Unframed::Plain(rest)),
                    Some(COMP_ALGV2_LZ4) if self == CompressionFraming::Lz4V2 => {
                        Ok(Unframed::Compressed {
                            algorithm: Algorithm::Lz4,
                            body: rest,
                        })
                    }
                    Some(alg @ (COMP_ALGV2_LZ4 | COMP_ALGV2_LZO | COMP_ALGV2_SNAPPY)) => {
                        Err(WireError::CompressedNotSupported(alg))
                    }
                    Some(other) => Err(WireError::BadCompressionMarker(other)),
                }
            }
        }
    }

    /// Removes the framing in place and returns the payload as a sub-slice of `data`; a
    /// compressed packet is [`WireError::CompressedNotSupported`] (use
    /// [`Self::unframe`] to decompress it).
    pub fn decap(self, data: &mut [u8]) -> Result<&mut [u8], WireError> {
        let marker = match self {
            CompressionFraming::Lzo => LZO_COMPRESS_BYTE,
            CompressionFraming::Lz4 => LZ4_COMPRESS_BYTE,
            _ => COMP_ALGV2_LZ4,
        };
        match self.unframe(data)? {
            Unframed::Plain(p) => Ok(p),
            Unframed::Compressed { .. } => Err(WireError::CompressedNotSupported(marker)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::magic::PING_MAGIC;

    const ALL: [CompressionFraming; 7] = [
        CompressionFraming::None,
        CompressionFraming::LzoStub,
        CompressionFraming::Stub,
        CompressionFraming::StubV2,
        CompressionFraming::Lzo,
        CompressionFraming::Lz4,
        CompressionFraming::Lz4V2,
    ];

    /// The inputs of `scripts/compress-vectors.py` (same functions, same bytes).
    fn vector_input(name: &str) -> Vec<u8> {
        fn lcg(seed: u64, n: usize) -> Vec<u8> {
            let mut x = seed;
            (0..n)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (x >> 56) as u8
                })
                .collect()
        }
        let text = |lines: u64| -> Vec<u8> {
            (0..lines)
                .map(|i| {
                    format!(
                        "line {i}: the quick brown fox jumps over the lazy dog {}\n",
                        i * 7
                    )
                })
                .collect::<String>()
                .into_bytes()
        };
        let counter = |lines: u64| -> Vec<u8> {
            (0..lines)
                .map(|i| format!("{i:08x} {}\n", i * i % 99991))
                .collect::<String>()
                .into_bytes()
        };
        match name {
            "icmp" => {
                let mut v = vec![
                    0x45, 0x00, 0x04, 0x04, 0x12, 0x34, 0x00, 0x00, 0x40, 0x01, 0x00, 0x00, 0x0a,
                    0x08, 0x00, 0x01, 0x0a, 0x08, 0x00, 0x06, 0x00, 0x00, 0xab, 0xcd, 0x00, 0x01,
                    0x00, 0x01,
                ];
                v.resize(v.len() + 1000 - 8, 0);
                v.extend(lcg(9, 8));
                v
            }
            "text" => text(24),
            "random" => lcg(1, 1400),
            "big" => {
                let mut v = text(40);
                v.extend(counter(1200));
                v.extend(text(40));
                v.extend(lcg(3, 2000));
                v.extend(&counter(1200)[..3000]);
                v.resize(v.len() + 3000, 0);
                v
            }
            "one" => vec![0x45],
            _ => unreachable!("no vector {name}"),
        }
    }

    fn vector(file: &str) -> Vec<u8> {
        let path = format!("{}/testdata/compress/{file}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    const NAMES: [&str; 5] = ["icmp", "text", "random", "big", "one"];

    /// Streams made by liblzo2 (lzo1x_1, what OpenVPN sends, and lzo1x_999) and liblz4
    /// (fast and HC) decompress to their inputs.
    #[test]
    fn reference_vectors_decompress() {
        let mut out = vec![0u8; 64 * 1024];
        for name in NAMES {
            let input = vector_input(name);
            for (ext, alg) in [
                ("lzo1x_1", Algorithm::Lzo),
                ("lzo1x_999", Algorithm::Lzo),
                ("lz4", Algorithm::Lz4),
                ("lz4hc", Algorithm::Lz4),
            ] {
                let packed = vector(&format!("{name}.{ext}"));
                let n = alg
                    .decompress(&packed, &mut out)
                    .unwrap_or_else(|e| panic!("{name}.{ext}: {e}"));
                assert_eq!(&out[..n], &input[..], "{name}.{ext}");
                // One byte less room than needed is refused, not truncated.
                let short = alg.decompress(&packed, &mut out[..input.len() - 1]);
                assert_eq!(
                    short,
                    Err(WireError::BadCompressedData {
                        algorithm: alg,
                        limit: input.len() - 1
                    }),
                    "{name}.{ext}"
                );
            }
        }
    }

    /// The three compressed framings, as OpenVPN 2.6 frames them (`comp-lzo.c`/`comp-lz4.c`
    /// order: compress, then marker — v1 LZ4 swaps the first byte of the block to the end).
    #[test]
    fn compressed_packets_unframe_and_decompress() {
        let ip = vector_input("icmp");
        let lzo = vector("icmp.lzo1x_1");
        let lz4 = vector("icmp.lz4");
        let mut lzo_pkt = vec![LZO_COMPRESS_BYTE];
        lzo_pkt.extend(&lzo);
        let mut lz4_pkt = vec![LZ4_COMPRESS_BYTE];
        lz4_pkt.extend(&lz4[1..]);
        lz4_pkt.push(lz4[0]);
        let mut v2_pkt = vec![0x50, 0x01];
        v2_pkt.extend(&lz4);
        let mut out = vec![0u8; 1600];
        for (f, pkt) in [
            (CompressionFraming::Lzo, lzo_pkt),
            (CompressionFraming::Lz4, lz4_pkt),
            (CompressionFraming::Lz4V2, v2_pkt),
        ] {
            let mut p = pkt.clone();
            let Ok(Unframed::Compressed { algorithm, body }) = f.unframe(&mut p) else {
                panic!("{f:?}: not a compressed packet");
            };
            assert_eq!(Some(algorithm), f.decompresses());
            let n = algorithm.decompress(body, &mut out).expect("decompresses");
            assert_eq!(&out[..n], &ip[..], "{f:?}");
            // The stub of the same family refuses it; decap too.
            let mut p = pkt.clone();
            assert!(matches!(
                f.sends_as().unframe(&mut p),
                Err(WireError::CompressedNotSupported(_))
            ));
            let mut p = pkt.clone();
            assert!(matches!(
                f.decap(&mut p),
                Err(WireError::CompressedNotSupported(_))
            ));
            // What we send under it is the stub's uncompressed form, and it comes back.
            let mut sent = ip.clone();
            f.encap(&mut sent);
            let mut stub_sent = ip.clone();
            f.sends_as().encap(&mut stub_sent);
            assert_eq!(sent, stub_sent);
            assert_eq!(
                f.unframe(&mut sent),
                Ok(Unframed::Plain(&mut ip.clone()[..]))
            );
        }
        // lz4-v2 does not take the reserved LZO/Snappy algorithms or unknown bytes.
        assert_eq!(
            CompressionFraming::Lz4V2.unframe(&mut [0x50, 0x02, 1]),
            Err(WireError::CompressedNotSupported(0x02))
        );
        assert_eq!(
            CompressionFraming::Lz4V2.unframe(&mut [0x50, 0x09, 1]),
            Err(WireError::BadCompressionMarker(0x09))
        );
        // LZO framing does not take LZ4's marker, nor LZ4 LZO's.
        assert_eq!(
            CompressionFraming::Lzo.unframe(&mut [0x69, 1]),
            Err(WireError::CompressedNotSupported(0x69))
        );
        assert_eq!(
            CompressionFraming::Lz4.unframe(&mut [0x66, 1]),
            Err(WireError::CompressedNotSupported(0x66))
        );
        // Corrupt or empty compressed bodies are errors.
        let mut out = [0u8; 64];
        for alg in [Algorithm::Lzo, Algorithm::Lz4] {
            assert!(alg.decompress(&[], &mut out).is_err());
            assert!(alg.decompress(&[0xff; 9], &mut out).is_err());
        }
    }

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
            fn decap_encap_identity(f in 0usize..7, payload in prop::collection::vec(any::<u8>(), 0..40)) {
                let f = ALL[f];
                let mut v = payload.clone();
                f.encap(&mut v);
                prop_assert_eq!(f.decap(&mut v).map(|s| s.to_vec()), Ok(payload));
            }

            #[test]
            fn garbage_never_panics(f in 0usize..7, mut data in prop::collection::vec(any::<u8>(), 0..8)) {
                let _ = ALL[f].decap(&mut data);
            }

            /// Random bytes, and damaged reference streams, never panic either decoder; what
            /// decodes fits the limit.
            #[test]
            fn decompressors_never_panic(
                data in prop::collection::vec(any::<u8>(), 0..300),
                vec_idx in 0usize..20,
                cut in any::<prop::sample::Index>(),
                flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
                limit in 0usize..2000,
            ) {
                let mut out = vec![0u8; limit];
                for alg in [Algorithm::Lzo, Algorithm::Lz4] {
                    if let Ok(n) = alg.decompress(&data, &mut out) {
                        prop_assert!(n <= limit);
                    }
                }
                let exts = ["lzo1x_1", "lzo1x_999", "lz4", "lz4hc"];
                let ext = exts[vec_idx % 4];
                let mut packed = vector(&format!("{}.{ext}", NAMES[vec_idx / 4]));
                for (at, b) in &flips {
                    let i = at.index(packed.len());
                    packed[i] ^= *b;
                }
                packed.truncate(cut.index(packed.len() + 1));
                let alg = if ext.starts_with("lzo") { Algorithm::Lzo } else { Algorithm::Lz4 };
                if let Ok(n) = alg.decompress(&packed, &mut out) {
                    prop_assert!(n <= limit);
                }
            }

            /// Whatever lz4_flex compresses (as a compressing peer would) decompresses back.
            #[test]
            fn lz4_round_trip(data in prop::collection::vec(prop::sample::select(vec![0u8, 1, 0x45, 0xff]), 1..1600)) {
                let packed = lz4_flex::block::compress(&data);
                let mut out = vec![0u8; 1600];
                let n = Algorithm::Lz4.decompress(&packed, &mut out);
                prop_assert_eq!(n.map(|n| out[..n].to_vec()), Ok(data));
            }
        }
    }
}
