//! Error types: [`CryptoError`] for setup and control-channel calls, [`DataError`] (small,
//! `Copy`) for the per-packet data path.

/// Errors of the fallible public API (key parsing, key setup, control-channel unwrapping).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// A key file could not be parsed; the text says what is wrong and how to fix it.
    #[error("{0}")]
    KeyFormat(String),
    /// A packet is shorter than its wrapping requires.
    #[error("packet too short: {len} bytes, need at least {min}")]
    TooShort {
        /// Length of the packet received.
        len: usize,
        /// Minimum length for this wrapping.
        min: usize,
    },
    /// HMAC or tag verification failed (wrong key, wrong direction or a modified packet).
    #[error("authentication failed (wrong key or key direction, or the packet was modified)")]
    BadAuth,
    /// The trailing length of a wrapped tls-crypt-v2 client key (WKc) is inconsistent.
    #[error("bad WKc length {len}: must be between {min} and {max} and fit the packet")]
    BadWkcLength {
        /// Length read from the last two bytes.
        len: usize,
        /// Smallest valid WKc.
        min: usize,
        /// Largest valid WKc.
        max: usize,
    },
    /// tls-crypt-v2 metadata outside 1..=734 bytes.
    #[error("tls-crypt-v2 metadata is {len} bytes; it must be 1..={max} bytes")]
    MetadataLength {
        /// Length given.
        len: usize,
        /// Maximum length.
        max: usize,
    },
    /// A derived or supplied cipher key is all zeros (2.6: "Bad dynamic key generated").
    #[error("the {0} key is all zeros")]
    ZeroKey(&'static str),
    /// The combination of algorithm and backend is not supported.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// A data-channel error surfaced through the general API.
    #[error(transparent)]
    Data(#[from] DataError),
}

/// Per-packet data-channel errors; `Copy` so that callers can count them cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DataError {
    /// The packet is shorter than header + packet id + tag/HMAC (+ IV).
    #[error("data packet too short")]
    TooShort,
    /// The first byte is not P_DATA_V1 / P_DATA_V2.
    #[error("not a data packet opcode")]
    BadOpcode,
    /// The header given to `seal` is not 1 (DATA_V1) or 4 (DATA_V2) bytes.
    #[error("data header must be 1 or 4 bytes")]
    BadHeader,
    /// AEAD tag or HMAC did not verify.
    #[error("bad tag/HMAC")]
    BadTag,
    /// CBC ciphertext not a multiple of the block size or bad PKCS#7 padding (after a good HMAC).
    #[error("bad CBC length or padding")]
    BadPadding,
    /// Packet id 0, already seen, or too old for the replay window.
    #[error("replayed or out-of-window packet id")]
    Replay,
    /// The payload is too long for the cipher.
    #[error("data packet too long")]
    TooLong,
    /// The sender's packet ids are used up (would pass 0xFFFFFFFF): renegotiate.
    #[error("packet ids exhausted: renegotiate the data-channel key")]
    PacketIdExhausted,
}
