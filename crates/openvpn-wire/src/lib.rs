//! OpenVPN 2.6 packet formats: parsing and emitting, no I/O, no crypto.
//!
//! This crate owns the byte layout of everything OpenVPN puts on the wire or inside its
//! channels, and nothing else:
//!
//! ```text
//!   UDP datagram / TCP stream ──► tcp::StreamDecoder (u16 length framing)
//!          │
//!          ▼
//!   opcode::parse_first_byte ──► control::ControlPacket (plain form, or the reliable body
//!          │                      after openvpn-crypto removed tls-auth / tls-crypt)
//!          │                     control::peek_session_id (routing before unwrapping)
//!          ▼
//!   data::DataHeader / data::peek_peer_id ──► (openvpn-crypto decrypts) ──►
//!          compress::CompressionFraming::unframe (─► Algorithm::decompress, lzo) ──►
//!          magic::is_ping / magic::OccMessage / tun
//!
//!   TLS plaintext ──► km2::KeyMethod2 (key-method-2 message)
//!   hard-reset payload ──► tlv::parse_early_neg_flags
//! ```
//!
//! Two levels, as in smoltcp: checked views over a byte buffer (`*View`) whose accessors never
//! panic once constructed with `new_checked`, and owned/borrowed representations with
//! `parse`, `buffer_len` and `emit`. `emit` never panics; it returns
//! [`WireError::BufferTooSmall`] if the output buffer is shorter than `buffer_len()`.
//!
//! All integers are big-endian. The layouts follow `shared/protocol/packets.md`, `data.md`
//! and `keys.md` of this project.
#![forbid(unsafe_code)]

pub mod compress;
pub mod control;
pub mod data;
mod error;
pub mod km2;
pub mod lzo;
pub mod magic;
pub mod mss;
pub mod opcode;
pub mod tcp;
pub mod tlv;

pub use compress::{Algorithm, CompressionFraming, Unframed};
pub use control::{
    AckList, ControlPacket, ControlPacketView, MAX_ACKS, SessionId, peek_session_id,
};
pub use data::{DataHeader, PEER_ID_NONE, peek_peer_id};
pub use error::WireError;
pub use km2::KeyMethod2;
pub use magic::{OCC_MAGIC, OccMessage, PING_MAGIC, is_occ, is_ping};
pub use mss::{clamp_mss, mss_for_mssfix};
pub use opcode::{KeyId, Opcode, first_byte, parse_first_byte};
pub use tcp::{StreamDecoder, decode_frame, frame_tcp};
pub use tlv::{
    EARLY_NEG_RESEND_WKC, TLV_EARLY_NEG_FLAGS, emit_early_neg_flags, parse_early_neg_flags,
};
