//! TCP framing: every OpenVPN packet is preceded by its length as a big-endian `u16`
//! (`packets.md` §1). A zero length, or a length above the receive limit, is a fatal
//! stream error.
//!
//! ```text
//! | len u16 | packet (len bytes) | len u16 | packet | …     (segments split/coalesce freely)
//! ```

use crate::error::WireError;

/// Length of the frame prefix.
pub const FRAME_HEADER_LEN: usize = 2;
/// Largest packet a `u16` length can describe.
pub const MAX_FRAME_LEN: usize = u16::MAX as usize;

/// Appends `u16 len ‖ packet` to `out`. Errors (appending nothing) on an empty packet or one
/// longer than 65535 bytes.
pub fn frame_tcp(packet: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
    if packet.is_empty() {
        return Err(WireError::ZeroLengthFrame);
    }
    let len = u16::try_from(packet.len()).map_err(|_| WireError::FrameTooLarge {
        len: packet.len(),
        max: MAX_FRAME_LEN,
    })?;
    out.reserve(FRAME_HEADER_LEN + packet.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(packet);
    Ok(())
}

/// Stateless, zero-copy frame decoder: looks at the start of `buf` and returns the first
/// complete packet and the number of bytes it occupies (prefix included), `Ok(None)` if more
/// bytes are needed, or an error for a zero or over-long (`> max_packet_len`) length.
pub fn decode_frame(
    buf: &[u8],
    max_packet_len: usize,
) -> Result<Option<(&[u8], usize)>, WireError> {
    let Some(hdr) = buf.get(..FRAME_HEADER_LEN) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([hdr[0], hdr[1]]));
    if len == 0 {
        return Err(WireError::ZeroLengthFrame);
    }
    if len > max_packet_len {
        return Err(WireError::FrameTooLarge {
            len,
            max: max_packet_len,
        });
    }
    let end = FRAME_HEADER_LEN + len;
    Ok(buf.get(FRAME_HEADER_LEN..end).map(|p| (p, end)))
}

/// Reassembles packets from a TCP byte stream, coping with partial and coalesced reads.
///
/// Feed received bytes with [`StreamDecoder::push`] and drain with
/// [`StreamDecoder::next_packet`] (owned) or [`StreamDecoder::next_packet_ref`] (borrowed)
/// until it returns `Ok(None)`. Errors are sticky: once the stream is broken every later call
/// returns the same error (OpenVPN tears such a connection down).
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    pos: usize,
    max_packet_len: usize,
    failed: Option<WireError>,
}

impl StreamDecoder {
    /// A decoder that rejects frames longer than `max_packet_len` bytes.
    pub fn new(max_packet_len: usize) -> Self {
        StreamDecoder {
            buf: Vec::new(),
            pos: 0,
            max_packet_len,
            failed: None,
        }
    }

    /// The receive limit given to [`StreamDecoder::new`].
    pub fn max_packet_len(&self) -> usize {
        self.max_packet_len
    }

    /// Bytes received but not yet returned as packets.
    pub fn buffered_len(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The sticky error, if the stream is broken.
    pub fn error(&self) -> Option<WireError> {
        self.failed
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos.min(self.buf.len()));
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete packet, borrowed from the internal buffer (valid until the next
    /// call on the decoder).
    pub fn next_packet_ref(&mut self) -> Result<Option<&[u8]>, WireError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        match decode_frame(rest, self.max_packet_len) {
            Err(e) => {
                self.failed = Some(e);
                Err(e)
            }
            Ok(None) => Ok(None),
            Ok(Some((_, used))) => {
                let start = self.pos + FRAME_HEADER_LEN;
                self.pos += used;
                Ok(self.buf.get(start..self.pos))
            }
        }
    }

    /// The next complete packet, copied out.
    pub fn next_packet(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        Ok(self.next_packet_ref()?.map(<[u8]>::to_vec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESET: [u8; 14] = [
        0x38, 0x68, 0x91, 0x92, 0x3f, 0xa3, 0x10, 0x34, 0x37, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn frame_and_decode() {
        let mut out = Vec::new();
        frame_tcp(&RESET, &mut out).expect("frames");
        assert_eq!(&out[..2], &[0x00, 0x0e]);
        assert_eq!(&out[2..], &RESET);
        assert_eq!(decode_frame(&out, 1600), Ok(Some((&RESET[..], 16))));
        assert_eq!(decode_frame(&out[..15], 1600), Ok(None));
        assert_eq!(frame_tcp(&[], &mut out), Err(WireError::ZeroLengthFrame));
        assert_eq!(
            frame_tcp(&vec![0; 65536], &mut out),
            Err(WireError::FrameTooLarge {
                len: 65536,
                max: 65535
            })
        );
        assert_eq!(out.len(), 16);
    }

    #[test]
    fn partial_and_coalesced() {
        let mut stream = Vec::new();
        frame_tcp(&RESET, &mut stream).expect("frames");
        frame_tcp(b"abc", &mut stream).expect("frames");
        frame_tcp(&[7; 300], &mut stream).expect("frames");
        // byte by byte
        let mut d = StreamDecoder::new(1600);
        let mut got = Vec::new();
        for b in &stream {
            d.push(&[*b]);
            while let Some(p) = d.next_packet().expect("valid") {
                got.push(p);
            }
        }
        assert_eq!(got, vec![RESET.to_vec(), b"abc".to_vec(), vec![7; 300]]);
        assert_eq!(d.buffered_len(), 0);
        // all at once
        let mut d = StreamDecoder::new(1600);
        d.push(&stream);
        assert_eq!(d.next_packet_ref(), Ok(Some(&RESET[..])));
        assert_eq!(d.next_packet_ref(), Ok(Some(&b"abc"[..])));
        assert_eq!(d.next_packet().map(|p| p.map(|p| p.len())), Ok(Some(300)));
        assert_eq!(d.next_packet(), Ok(None));
    }

    #[test]
    fn errors_are_sticky() {
        let mut d = StreamDecoder::new(100);
        d.push(&[0x00, 0x00, 0x38]);
        assert_eq!(d.next_packet(), Err(WireError::ZeroLengthFrame));
        d.push(&[0x00, 0x01, 0x38]);
        assert_eq!(d.next_packet(), Err(WireError::ZeroLengthFrame));
        let mut d = StreamDecoder::new(100);
        d.push(&[0x00, 0x65]);
        assert_eq!(
            d.next_packet(),
            Err(WireError::FrameTooLarge { len: 101, max: 100 })
        );
        assert_eq!(
            d.error(),
            Some(WireError::FrameTooLarge { len: 101, max: 100 })
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_split_reassembles(
                packets in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..200), 0..8),
                cuts in prop::collection::vec(1usize..50, 0..40),
            ) {
                let mut stream = Vec::new();
                for p in &packets {
                    frame_tcp(p, &mut stream).expect("frames");
                }
                let mut d = StreamDecoder::new(200);
                let mut got = Vec::new();
                let mut rest = &stream[..];
                let mut cuts = cuts.into_iter();
                while !rest.is_empty() {
                    let n = cuts.next().unwrap_or(rest.len()).min(rest.len());
                    d.push(&rest[..n]);
                    rest = &rest[n..];
                    while let Some(p) = d.next_packet().expect("valid stream") {
                        got.push(p);
                    }
                }
                prop_assert_eq!(got, packets);
            }

            #[test]
            fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
                let mut d = StreamDecoder::new(64);
                d.push(&bytes);
                for _ in 0..300 {
                    match d.next_packet() {
                        Ok(Some(p)) => prop_assert!(!p.is_empty() && p.len() <= 64),
                        _ => break,
                    }
                }
            }
        }
    }
}
