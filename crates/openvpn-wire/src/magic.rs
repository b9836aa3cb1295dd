//! Special data-channel payloads recognised after decryption and decompression
//! (`data.md` §8): the keepalive ping and OCC messages.
//!
//! ```text
//! ping:  | PING_MAGIC (16) |                          (exactly 16 bytes, nothing else)
//! OCC:   | OCC_MAGIC (16)  | occ opcode u8 | data … |
//! ```

use crate::error::WireError;

/// The keepalive ping payload.
pub const PING_MAGIC: [u8; 16] = [
    0x2a, 0x18, 0x7b, 0xf3, 0x64, 0x1e, 0xb4, 0xcb, 0x07, 0xed, 0x2d, 0x0a, 0x98, 0x1f, 0xc7, 0x48,
];

/// The prefix of every OCC message.
pub const OCC_MAGIC: [u8; 16] = [
    0x28, 0x7f, 0x34, 0x6b, 0xd4, 0xef, 0x7a, 0x81, 0x2d, 0x56, 0xb8, 0xd3, 0xaf, 0xc5, 0x45, 0x9c,
];

/// Offset of the OCC opcode byte.
pub const OCC_OPCODE_OFFSET: usize = OCC_MAGIC.len();
/// Offset of the OCC opcode-specific data.
pub const OCC_DATA_OFFSET: usize = OCC_OPCODE_OFFSET + 1;

/// OCC opcode: request the peer's options string.
pub const OCC_REQUEST: u8 = 0;
/// OCC opcode: options string reply.
pub const OCC_REPLY: u8 = 1;
/// OCC opcode: request an MTU-load packet of a given size.
pub const OCC_MTU_LOAD_REQUEST: u8 = 2;
/// OCC opcode: MTU-load filler.
pub const OCC_MTU_LOAD: u8 = 3;
/// OCC opcode: request an MTU reply.
pub const OCC_MTU_REQUEST: u8 = 4;
/// OCC opcode: MTU test result.
pub const OCC_MTU_REPLY: u8 = 5;
/// OCC opcode: the peer is exiting.
pub const OCC_EXIT: u8 = 6;

/// True if a decrypted, decompressed data payload is exactly the keepalive ping.
pub fn is_ping(payload: &[u8]) -> bool {
    payload == PING_MAGIC
}

/// True if a decrypted, decompressed data payload starts with the OCC magic.
pub fn is_occ(payload: &[u8]) -> bool {
    payload.starts_with(&OCC_MAGIC)
}

/// An OCC message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OccMessage<'a> {
    /// OCC_REQUEST: asks for an OCC_REPLY.
    Request,
    /// OCC_REPLY: the options string (without its terminating NUL).
    Reply(&'a [u8]),
    /// OCC_MTU_LOAD_REQUEST: asks for an OCC_MTU_LOAD of about this size.
    MtuLoadRequest(u16),
    /// OCC_MTU_LOAD: filler (content ignored).
    MtuLoad,
    /// OCC_MTU_REQUEST: asks for an OCC_MTU_REPLY.
    MtuRequest,
    /// OCC_MTU_REPLY: results of `--mtu-test`.
    MtuReply {
        /// Largest packet size received.
        largest_received: u16,
        /// Largest packet size sent.
        largest_sent: u16,
    },
    /// OCC_EXIT: the peer is shutting down.
    Exit,
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

impl<'a> OccMessage<'a> {
    /// Parses a data payload as an OCC message; `None` if it is not one (no magic, unknown
    /// OCC opcode, or missing data).
    pub fn parse(payload: &'a [u8]) -> Option<Self> {
        if !is_occ(payload) {
            return None;
        }
        let op = *payload.get(OCC_OPCODE_OFFSET)?;
        let data = payload.get(OCC_DATA_OFFSET..)?;
        Some(match op {
            OCC_REQUEST => OccMessage::Request,
            OCC_REPLY => {
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                OccMessage::Reply(data.get(..end)?)
            }
            OCC_MTU_LOAD_REQUEST => OccMessage::MtuLoadRequest(read_u16(data, 0)?),
            OCC_MTU_LOAD => OccMessage::MtuLoad,
            OCC_MTU_REQUEST => OccMessage::MtuRequest,
            OCC_MTU_REPLY => OccMessage::MtuReply {
                largest_received: read_u16(data, 0)?,
                largest_sent: read_u16(data, 2)?,
            },
            OCC_EXIT => OccMessage::Exit,
            _ => return None,
        })
    }

    /// The OCC opcode byte.
    pub fn opcode(&self) -> u8 {
        match self {
            OccMessage::Request => OCC_REQUEST,
            OccMessage::Reply(_) => OCC_REPLY,
            OccMessage::MtuLoadRequest(_) => OCC_MTU_LOAD_REQUEST,
            OccMessage::MtuLoad => OCC_MTU_LOAD,
            OccMessage::MtuRequest => OCC_MTU_REQUEST,
            OccMessage::MtuReply { .. } => OCC_MTU_REPLY,
            OccMessage::Exit => OCC_EXIT,
        }
    }

    /// Length of the emitted message (magic, opcode, data; a Reply gets a NUL appended;
    /// MtuLoad is emitted without filler).
    pub fn buffer_len(&self) -> usize {
        OCC_DATA_OFFSET
            + match self {
                OccMessage::Reply(s) => s.len() + 1,
                OccMessage::MtuLoadRequest(_) => 2,
                OccMessage::MtuReply { .. } => 4,
                _ => 0,
            }
    }

    /// Writes the message into the start of `out`; returns `buffer_len()`.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let needed = self.buffer_len();
        let available = out.len();
        let out = out
            .get_mut(..needed)
            .ok_or(WireError::BufferTooSmall { needed, available })?;
        let (head, data) = out.split_at_mut(OCC_OPCODE_OFFSET);
        head.copy_from_slice(&OCC_MAGIC);
        let (op, data) = data.split_at_mut(1);
        op.copy_from_slice(&[self.opcode()]);
        match *self {
            OccMessage::Reply(s) => {
                let (text, nul) = data.split_at_mut(s.len());
                text.copy_from_slice(s);
                nul.fill(0);
            }
            OccMessage::MtuLoadRequest(n) => data.copy_from_slice(&n.to_be_bytes()),
            OccMessage::MtuReply {
                largest_received,
                largest_sent,
            } => {
                let (a, b) = data.split_at_mut(2);
                a.copy_from_slice(&largest_received.to_be_bytes());
                b.copy_from_slice(&largest_sent.to_be_bytes());
            }
            _ => {}
        }
        Ok(needed)
    }

    /// The message as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.buffer_len()];
        let n = self.emit(&mut v).unwrap_or(0);
        v.truncate(n);
        v
    }

    /// The 17-byte OCC_EXIT payload.
    pub fn emit_exit() -> [u8; 17] {
        Self::fixed(OCC_EXIT)
    }

    /// The 17-byte OCC_REQUEST payload.
    pub fn emit_request() -> [u8; 17] {
        Self::fixed(OCC_REQUEST)
    }

    fn fixed(op: u8) -> [u8; 17] {
        let mut out = [0u8; 17];
        let (magic, rest) = out.split_at_mut(OCC_OPCODE_OFFSET);
        magic.copy_from_slice(&OCC_MAGIC);
        rest.copy_from_slice(&[op]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_magic_bytes() {
        // data.md §8.1 and test-vectors.md §7 (decrypted ping plaintext after packet id)
        let plain = [
            0x2a, 0x18, 0x7b, 0xf3, 0x64, 0x1e, 0xb4, 0xcb, 0x07, 0xed, 0x2d, 0x0a, 0x98, 0x1f,
            0xc7, 0x48,
        ];
        assert!(is_ping(&plain));
        assert!(!is_ping(&plain[..15]));
        let mut longer = plain.to_vec();
        longer.push(0);
        assert!(!is_ping(&longer));
        assert!(OccMessage::parse(&plain).is_none());
    }

    #[test]
    fn occ_exit() {
        let exit = OccMessage::emit_exit();
        assert_eq!(&exit[..4], &[0x28, 0x7f, 0x34, 0x6b]);
        assert_eq!(exit[16], 6);
        assert_eq!(OccMessage::parse(&exit), Some(OccMessage::Exit));
        assert_eq!(OccMessage::Exit.to_vec(), exit.to_vec());
        assert_eq!(
            OccMessage::parse(&OccMessage::emit_request()),
            Some(OccMessage::Request)
        );
        assert_eq!(OccMessage::parse(&exit[..16]), None);
    }

    #[test]
    fn occ_with_data() {
        let reply = OccMessage::Reply(b"V4,dev-type tun");
        let v = reply.to_vec();
        assert_eq!(v.len(), 17 + 15 + 1);
        assert_eq!(v.last(), Some(&0));
        assert_eq!(OccMessage::parse(&v), Some(reply));

        let mut v = OCC_MAGIC.to_vec();
        v.extend_from_slice(&[5, 0x05, 0xdc, 0x05, 0x78]);
        let m = OccMessage::MtuReply {
            largest_received: 1500,
            largest_sent: 1400,
        };
        assert_eq!(OccMessage::parse(&v), Some(m));
        assert_eq!(m.to_vec(), v);
        assert_eq!(OccMessage::parse(&v[..v.len() - 1]), None);

        let mut v = OCC_MAGIC.to_vec();
        v.extend_from_slice(&[2, 0x01, 0x00]);
        assert_eq!(OccMessage::parse(&v), Some(OccMessage::MtuLoadRequest(256)));
        let mut v = OCC_MAGIC.to_vec();
        v.push(7);
        assert_eq!(OccMessage::parse(&v), None);
        let mut small = [0u8; 17];
        assert_eq!(
            OccMessage::MtuLoadRequest(1).emit(&mut small),
            Err(WireError::BufferTooSmall {
                needed: 19,
                available: 17
            })
        );
    }
}
