//! The one error type of this crate.

use crate::opcode::Opcode;

/// Everything that can go wrong while parsing or emitting an OpenVPN wire structure.
///
/// Parsing untrusted input never panics; it returns one of these instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ended before the structure was complete (for a stream: more bytes are needed).
    #[error("truncated input: more bytes are needed to complete the structure")]
    Truncated,
    /// The opcode bits of the first byte are not an OpenVPN opcode (valid: 1..=11).
    #[error("unknown opcode {0} in first byte (valid opcodes are 1..=11)")]
    UnknownOpcode(u8),
    /// A control-channel structure was given a data-channel opcode.
    #[error("opcode {0:?} is not a control-channel opcode")]
    NotControl(Opcode),
    /// A data-channel structure was given a control-channel opcode.
    #[error("opcode {0:?} is not a data-channel opcode (expected P_DATA_V1 or P_DATA_V2)")]
    NotData(Opcode),
    /// The ACK block announces more than [`MAX_ACKS`](crate::control::MAX_ACKS) entries.
    #[error("ack_len {0} exceeds the maximum of 8 ACKs per control packet")]
    TooManyAcks(u8),
    /// The sender's own session ID is all zeros, which OpenVPN reserves as "undefined".
    #[error("session id is all zeros (reserved as 'undefined'); use 8 random non-zero bytes")]
    ZeroSessionId,
    /// The fields of a structure to emit contradict each other (e.g. ACKs without a remote
    /// session ID, or a message ID on P_ACK_V1).
    #[error("inconsistent packet to emit: {0}")]
    Inconsistent(&'static str),
    /// The output buffer given to `emit` is shorter than `buffer_len()`.
    #[error("output buffer too small: {needed} bytes needed, {available} available")]
    BufferTooSmall {
        /// Bytes the structure needs.
        needed: usize,
        /// Bytes the caller provided.
        available: usize,
    },
    /// A DATA_V2 peer-id does not fit in 24 bits.
    #[error("peer-id {0:#x} does not fit in 24 bits (maximum 0xffffff)")]
    PeerIdOutOfRange(u32),
    /// A TCP frame announced (or a caller tried to send) a zero-length packet.
    #[error("zero-length TCP frame: OpenVPN treats this as a fatal stream error")]
    ZeroLengthFrame,
    /// A TCP frame is larger than the receive limit, or a packet to send exceeds 65535 bytes.
    #[error("TCP frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced or actual packet length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// A key-method-2 message announced a key method other than 2.
    #[error("key method {0} is not supported (only key-method 2 exists in OpenVPN 2.6)")]
    BadKeyMethod(u8),
    /// The options string of a key-method-2 message exceeds 512 bytes (including its NUL).
    #[error("options string of {0} bytes exceeds the 512-byte limit (including NUL)")]
    OptionsTooLong(usize),
    /// A username or password in a key-method-2 message is not valid UTF-8.
    #[error("key-method-2 {0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// A TLV in a hard-reset payload has an invalid length for its type.
    #[error("TLV type {tlv_type} has length {len}, expected {expected}")]
    BadTlvLength {
        /// TLV type.
        tlv_type: u16,
        /// Length found.
        len: u16,
        /// Length required for that type.
        expected: u16,
    },
    /// The peer sent a really compressed packet (LZO/LZ4/Snappy) under a framing that does
    /// not decompress it (a stub, or another algorithm).
    #[error(
        "peer sent a compressed packet (marker {0:#04x}) that the configured framing does not decompress; use the same 'compress'/'comp-lzo' algorithm on both sides"
    )]
    CompressedNotSupported(u8),
    /// Compressed data from the peer is corrupt, or decompresses to nothing or to more than
    /// the size limit.
    #[error(
        "peer's {algorithm}-compressed packet is corrupt or decompresses to more than {limit} bytes"
    )]
    BadCompressedData {
        /// The algorithm of the packet.
        algorithm: crate::compress::Algorithm,
        /// The size limit in force.
        limit: usize,
    },
    /// The compression marker byte is neither the stub marker nor a known compression marker.
    #[error("bad compression framing marker byte {0:#04x}")]
    BadCompressionMarker(u8),
}
