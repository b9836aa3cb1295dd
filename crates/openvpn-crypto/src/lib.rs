//! OpenVPN 2.6 cryptography: data-channel sealing/opening, control-channel wrapping
//! (tls-auth, tls-crypt, tls-crypt-v2), key files, key derivation and replay protection.
//!
//! Sans-I/O: no sockets, no clock (every time-dependent call takes `now` in seconds), no global
//! RNG (randomness comes from a caller-supplied `RngCore + CryptoRng`).
//!
//! ```text
//!   key-method-2 randoms ──► derive_key2_prf ──┐
//!   TLS exporter (EKM)  ──► KeyBlock::from_bytes ┴──► DataKeys::new ──► (DataSealer, DataOpener)
//!
//!   tun payload ─► PacketBuf ─► DataSealer::seal ─► wire packet (in place)
//!   wire packet ─► DataOpener::open ─► &mut plaintext (sub-slice, in place)
//!
//!   plain control packet ─► ControlWrap::wrap   ─► wire   (TlsAuth / TlsCrypt)
//!   wire control packet  ─► ControlWrap::unwrap ─► plain + ReplayId ─► ReplayWindow
//! ```
#![forbid(unsafe_code)]

mod data;
mod error;
mod hmac_key;
mod keys;
mod kinds;
mod prf;
mod replay;
mod tls_auth;
mod tls_crypt;
mod tls_crypt_v2;
mod wrap;

pub use data::{AeadBackend, DataKeys, DataOpener, DataSealer, PacketBuf};
pub use error::{CryptoError, DataError};
pub use keys::{KeyBlock, KeyDirection, StaticKey};
pub use kinds::{CipherKind, DigestKind, Role};
pub use prf::{
    EKM_LABEL_DATAKEYS, EKM_LABEL_DYN_TLS_CRYPT, EKM_LABEL_P2P_PEERID, derive_key2_prf,
    derive_master_prf, tls1_prf,
};
pub use replay::{ReplayId, ReplayWindow};
pub use tls_auth::TlsAuth;
pub use tls_crypt::TlsCrypt;
pub use tls_crypt_v2::{
    TlsCryptV2ClientKey, TlsCryptV2ServerKey, WKC_MAX_LEN, split_wkc, timestamp_metadata,
};
pub use wrap::ControlWrap;
