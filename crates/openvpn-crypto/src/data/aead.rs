//! AEAD backends behind one small internal trait. ring is the default; RustCrypto
//! (`aes-gcm`, `chacha20poly1305`) is available with the `rustcrypto` feature.
//!
//! OpenVPN puts the tag *before* the ciphertext, so `open` receives `tag ‖ ciphertext` and
//! returns where the plaintext ended up: ring's `open_in_place_separate_tag` decrypts and
//! shifts left over the tag in one pass (`0..n`), RustCrypto decrypts in place (`16..`).

use crate::error::CryptoError;
use crate::kinds::{AEAD_TAG_LEN, CipherKind};
use std::ops::Range;

/// Which AEAD implementation a [`DataKeys`](crate::DataKeys) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AeadBackend {
    /// ring (BoringSSL assembly): AES-128/256-GCM, ChaCha20-Poly1305.
    #[default]
    Ring,
    /// RustCrypto `aes-gcm` / `chacha20poly1305` (also AES-192-GCM).
    #[cfg(feature = "rustcrypto")]
    RustCrypto,
}

impl AeadBackend {
    /// Every backend compiled in (tests and benches run against each).
    pub const ALL: &'static [AeadBackend] = &[
        AeadBackend::Ring,
        #[cfg(feature = "rustcrypto")]
        AeadBackend::RustCrypto,
    ];

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ring => "ring",
            #[cfg(feature = "rustcrypto")]
            Self::RustCrypto => "rustcrypto",
        }
    }
}

/// One keyed AEAD direction.
pub(crate) trait AeadCipher: Send + Sync {
    /// Encrypts `in_out` in place and returns the detached tag; `None` if too long.
    fn seal(&self, nonce: [u8; 12], aad: &[u8], in_out: &mut [u8]) -> Option<[u8; AEAD_TAG_LEN]>;
    /// `tag_ct` = `tag ‖ ciphertext`. On success the plaintext is `tag_ct[range]`.
    fn open(&self, nonce: [u8; 12], aad: &[u8], tag_ct: &mut [u8]) -> Option<Range<usize>>;
}

/// Keys one direction with `key` (exactly `kind.key_len()` bytes).
pub(crate) fn new_cipher(
    backend: AeadBackend,
    kind: CipherKind,
    key: &[u8],
) -> Result<Box<dyn AeadCipher>, CryptoError> {
    match backend {
        AeadBackend::Ring => ring_backend::new(kind, key),
        #[cfg(feature = "rustcrypto")]
        AeadBackend::RustCrypto => rustcrypto_backend::new(kind, key),
    }
}

mod ring_backend {
    use super::*;
    use ring::aead::{self, Aad, LessSafeKey, Nonce, Tag, UnboundKey};

    struct RingAead(LessSafeKey);

    pub(super) fn new(kind: CipherKind, key: &[u8]) -> Result<Box<dyn AeadCipher>, CryptoError> {
        let alg = match kind {
            CipherKind::Aes128Gcm => &aead::AES_128_GCM,
            CipherKind::Aes256Gcm => &aead::AES_256_GCM,
            CipherKind::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
            _ => {
                return Err(CryptoError::Unsupported(
                    "this cipher is not available with the ring backend",
                ));
            }
        };
        let k = UnboundKey::new(alg, key)
            .map_err(|_| CryptoError::Unsupported("ring rejected the AEAD key length"))?;
        Ok(Box::new(RingAead(LessSafeKey::new(k))))
    }

    impl AeadCipher for RingAead {
        fn seal(
            &self,
            nonce: [u8; 12],
            aad: &[u8],
            in_out: &mut [u8],
        ) -> Option<[u8; AEAD_TAG_LEN]> {
            let tag = self
                .0
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    in_out,
                )
                .ok()?;
            tag.as_ref().try_into().ok()
        }

        fn open(&self, nonce: [u8; 12], aad: &[u8], tag_ct: &mut [u8]) -> Option<Range<usize>> {
            let tag = Tag::try_from(tag_ct.get(..AEAD_TAG_LEN)?).ok()?;
            let pt = self
                .0
                .open_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    tag,
                    tag_ct,
                    AEAD_TAG_LEN..,
                )
                .ok()?;
            Some(0..pt.len())
        }
    }
}

#[cfg(feature = "rustcrypto")]
mod rustcrypto_backend {
    use super::*;
    use aes_gcm::aead::consts::{U12, U16};
    use aes_gcm::aead::{AeadInPlace, KeyInit};

    struct Rc<A>(A);

    type Aes192Gcm = aes_gcm::AesGcm<aes_gcm::aes::Aes192, U12>;

    pub(super) fn new(kind: CipherKind, key: &[u8]) -> Result<Box<dyn AeadCipher>, CryptoError> {
        let bad = |_| CryptoError::Unsupported("bad AEAD key length");
        Ok(match kind {
            CipherKind::Aes128Gcm => {
                Box::new(Rc(aes_gcm::Aes128Gcm::new_from_slice(key).map_err(bad)?))
            }
            CipherKind::Aes192Gcm => Box::new(Rc(Aes192Gcm::new_from_slice(key).map_err(bad)?)),
            CipherKind::Aes256Gcm => {
                Box::new(Rc(aes_gcm::Aes256Gcm::new_from_slice(key).map_err(bad)?))
            }
            CipherKind::ChaCha20Poly1305 => Box::new(Rc(
                chacha20poly1305::ChaCha20Poly1305::new_from_slice(key).map_err(bad)?,
            )),
            _ => return Err(CryptoError::Unsupported("not an AEAD cipher")),
        })
    }

    impl<A> AeadCipher for Rc<A>
    where
        A: AeadInPlace<NonceSize = U12, TagSize = U16> + Send + Sync,
    {
        fn seal(
            &self,
            nonce: [u8; 12],
            aad: &[u8],
            in_out: &mut [u8],
        ) -> Option<[u8; AEAD_TAG_LEN]> {
            let tag = self
                .0
                .encrypt_in_place_detached(&nonce.into(), aad, in_out)
                .ok()?;
            tag.as_slice().try_into().ok()
        }

        fn open(&self, nonce: [u8; 12], aad: &[u8], tag_ct: &mut [u8]) -> Option<Range<usize>> {
            if tag_ct.len() < AEAD_TAG_LEN {
                return None;
            }
            let (tag, ct) = tag_ct.split_at_mut(AEAD_TAG_LEN);
            let tag = *aes_gcm::aead::Tag::<A>::from_slice(tag);
            self.0
                .decrypt_in_place_detached(&nonce.into(), aad, ct, &tag)
                .ok()?;
            Some(AEAD_TAG_LEN..AEAD_TAG_LEN + ct.len())
        }
    }
}
