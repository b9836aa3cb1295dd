//! LZO1X decompression (the `0x66` packets of `comp-lzo` / `compress lzo` peers), written from
//! the description of the LZO1X format: no compressor, no `unsafe`, no allocation, and every
//! read and write bounds-checked so that hostile input ends in an [`LzoError`], never a panic.
//!
//! ```text
//!  compressed bytes ──▶ decompress(input, out) ──▶ Ok(n): out[..n] is the payload
//!                                              └──▶ Err(LzoError): drop the packet
//! ```
//!
//! The stream is a sequence of instructions, each a literal run or a back-reference
//! ("match") into the output already written. What an instruction byte `0..=15` means depends
//! on how many literals the previous instruction copied (`state` below: 0, 1–3, or 4 for a
//! run of four or more):
//!
//! | byte | state | meaning |
//! |---|---|---|
//! | first byte `18..=255` | – | copy `byte - 17` literals (state = that count, 4 if ≥ 4) |
//! | `0000 LLLL` | 0 | literal run of `3 + L` bytes (`L = 0`: `18 + 255·zeros + next`); state 4 |
//! | `0000 DDSS` + `H` | 1–3 | match of 2 bytes, distance `1 + D + 4·H` |
//! | `0000 DDSS` + `H` | 4 | match of 3 bytes, distance `2049 + D + 4·H` |
//! | `0001 HLLL` + LE16 | any | match of `2 + L` (`L = 0`: `9 + 255·zeros + next`), distance `16384 + 16384·H + LE16/4`; distance 16384 ends the stream |
//! | `001L LLLL` + LE16 | any | match of `2 + L` (`L = 0`: `33 + 255·zeros + next`), distance `1 + LE16/4` |
//! | `01LD DDSS` / `1LLD DDSS` + `H` | any | match of `1 + byte/32` (3–8) bytes, distance `1 + D + 8·H` |
//!
//! After a match, `S` (the low two bits of the instruction byte for one-byte forms, of the
//! first distance byte for LE16 forms) literals follow and become the next state. A stream
//! ends with the end marker `11 00 00`; bytes after it are an error, as in liblzo's
//! `lzo1x_decompress_safe`.

/// Why LZO1X input was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LzoError {
    /// The input ended inside an instruction or before the end marker.
    #[error("LZO input ends before the end-of-stream marker")]
    InputOverrun,
    /// The payload would exceed the output buffer (the size limit).
    #[error("LZO payload exceeds the {0}-byte limit")]
    OutputOverrun(usize),
    /// A match refers to bytes before the start of the output.
    #[error("LZO match refers before the start of the output")]
    LookBehindOverrun,
    /// Bytes follow the end-of-stream marker.
    #[error("{0} bytes follow the LZO end-of-stream marker")]
    InputNotConsumed(usize),
}

/// Bytes of the end-of-stream marker a compressor appends (an `M4` match of distance 16384).
pub const END_MARKER: [u8; 3] = [0x11, 0x00, 0x00];

/// Decompresses the LZO1X stream `input` into `out`; returns the payload length. The length
/// of `out` is the size limit: a longer payload is [`LzoError::OutputOverrun`].
pub fn decompress(input: &[u8], out: &mut [u8]) -> Result<usize, LzoError> {
    let mut d = Decoder {
        input,
        ip: 0,
        out,
        op: 0,
    };
    d.run()?;
    match d.input.len() - d.ip {
        0 => Ok(d.op),
        rest => Err(LzoError::InputNotConsumed(rest)),
    }
}

struct Decoder<'a, 'b> {
    input: &'a [u8],
    ip: usize,
    out: &'b mut [u8],
    op: usize,
}

impl Decoder<'_, '_> {
    fn byte(&mut self) -> Result<usize, LzoError> {
        let b = *self.input.get(self.ip).ok_or(LzoError::InputOverrun)?;
        self.ip += 1;
        Ok(usize::from(b))
    }

    fn le16(&mut self) -> Result<usize, LzoError> {
        Ok(self.byte()? | self.byte()? << 8)
    }

    /// A length field of `bits` bits: non-zero as is, zero followed by zero bytes (255
    /// each) and a final non-zero byte added to `bias`.
    fn length(&mut self, field: usize, bias: usize) -> Result<usize, LzoError> {
        if field != 0 {
            return Ok(field);
        }
        let mut n = bias;
        loop {
            match self.byte()? {
                // Bounded by the input; the limit is checked where bytes are written (the
                // end marker's length is never used, so it must not be refused here).
                0 => n = n.saturating_add(255),
                b => return Ok(n + b),
            }
        }
    }

    fn literals(&mut self, n: usize) -> Result<(), LzoError> {
        let src = self
            .input
            .get(self.ip..self.ip.saturating_add(n))
            .ok_or(LzoError::InputOverrun)?;
        let limit = self.out.len();
        let dst = self
            .out
            .get_mut(self.op..self.op.saturating_add(n))
            .ok_or(LzoError::OutputOverrun(limit))?;
        dst.copy_from_slice(src);
        self.ip += n;
        self.op += n;
        Ok(())
    }

    /// Copies `len` bytes from `distance` back; overlapping copies repeat the pattern.
    fn copy_match(&mut self, distance: usize, len: usize) -> Result<(), LzoError> {
        let from = self
            .op
            .checked_sub(distance)
            .ok_or(LzoError::LookBehindOverrun)?;
        let end = self.op.saturating_add(len);
        if end > self.out.len() {
            return Err(LzoError::OutputOverrun(self.out.len()));
        }
        if distance >= len {
            self.out.copy_within(from..from + len, self.op);
        } else {
            for i in 0..len {
                let b = self.out.get(from + i).copied().unwrap_or_default();
                if let Some(slot) = self.out.get_mut(self.op + i) {
                    *slot = b;
                }
            }
        }
        self.op = end;
        Ok(())
    }

    fn run(&mut self) -> Result<(), LzoError> {
        // Literals copied by the previous instruction: 0, 1..=3, or 4 (four or more).
        let mut state = 0usize;
        if let Some(&first) = self.input.first()
            && first > 17
        {
            self.ip = 1;
            let n = usize::from(first) - 17;
            self.literals(n)?;
            state = n.min(4);
        }
        loop {
            let inst = self.byte()?;
            let (distance, len) = match inst {
                64..=255 => {
                    let h = self.byte()?;
                    (1 + ((inst >> 2) & 7) + (h << 3), 1 + (inst >> 5))
                }
                32..=63 => {
                    let len = 2 + self.length(inst & 31, 31)?;
                    (1 + (self.le16()? >> 2), len)
                }
                16..=31 => {
                    let len = 2 + self.length(inst & 7, 7)?;
                    let far = ((inst & 8) << 11) + (self.le16()? >> 2);
                    if far == 0 {
                        return Ok(());
                    }
                    (16384 + far, len)
                }
                _ if state == 0 => {
                    let len = 3 + self.length(inst, 15)?;
                    self.literals(len)?;
                    state = 4;
                    continue;
                }
                _ => {
                    let h = self.byte()?;
                    let d = (inst >> 2) + (h << 2);
                    if state == 4 {
                        (2049 + d, 3)
                    } else {
                        (1 + d, 2)
                    }
                }
            };
            self.copy_match(distance, len)?;
            // The trailing-literal count sits in the byte before the last one read.
            let s = usize::from(self.input.get(self.ip.wrapping_sub(2)).map_or(0, |b| b & 3));
            self.literals(s)?;
            state = s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_made_streams() {
        // Only the end marker: an empty payload.
        let mut out = [0u8; 16];
        assert_eq!(decompress(&END_MARKER, &mut out), Ok(0));
        // First-byte literal run of 4 ("abcd"), then the end marker.
        let s = [17 + 4, b'a', b'b', b'c', b'd', 0x11, 0, 0];
        assert_eq!(decompress(&s, &mut out), Ok(4));
        assert_eq!(&out[..4], b"abcd");
        // "ab", an M2 match of 6 bytes at distance 2 (overlapping: the pattern repeats) with
        // one trailing literal "z". M2 byte: (len - 1) << 5 | (distance - 1) << 2 | S.
        let inst = (6 - 1) << 5 | (2 - 1) << 2 | 1;
        let s = [17 + 2, b'a', b'b', inst, 0, b'z', 0x11, 0, 0];
        assert_eq!(decompress(&s, &mut out), Ok(9));
        assert_eq!(&out[..9], b"ababababz");
    }

    #[test]
    fn hostile_streams_are_errors() {
        let mut out = [0u8; 8];
        assert_eq!(decompress(&[], &mut out), Err(LzoError::InputOverrun));
        assert_eq!(
            decompress(&[0x11, 0], &mut out),
            Err(LzoError::InputOverrun)
        );
        // One literal, then a match of distance 2: before the start.
        assert_eq!(
            decompress(&[18, b'a', 0x44, 0, 0x11, 0, 0], &mut out),
            Err(LzoError::LookBehindOverrun)
        );
        // Longer than the limit.
        assert_eq!(
            decompress(&[17 + 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0x11, 0, 0], &mut out),
            Err(LzoError::OutputOverrun(8))
        );
        // A long literal run (length bytes 0 … 0 1) longer than the input.
        let mut s = vec![0u8; 1000];
        s.push(1);
        assert_eq!(decompress(&s, &mut out), Err(LzoError::InputOverrun));
        // One of 19 literals (0, then 15 + 3 + 1) present but over the limit.
        let mut s = vec![0u8, 1];
        s.extend([7u8; 19]);
        s.extend(END_MARKER);
        assert_eq!(decompress(&s, &mut out), Err(LzoError::OutputOverrun(8)));
        assert_eq!(decompress(&s, &mut [0u8; 19]), Ok(19));
        // The end marker's length field is never used: a long one is no error, whatever
        // the room (found by the decompress fuzz target).
        let s = [18, b'E', 0x10, 0x00, 0x11, 0x00, 0x00];
        assert_eq!(decompress(&s, &mut out[..1]), Ok(1));
        // Trailing garbage.
        assert_eq!(
            decompress(&[0x11, 0, 0, 7], &mut out),
            Err(LzoError::InputNotConsumed(1))
        );
    }
}
