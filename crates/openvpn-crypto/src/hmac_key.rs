//! A keyed HMAC for a [`DigestKind`], backed by ring (pre-computed inner/outer pads).

use crate::kinds::DigestKind;
use ring::hmac;

/// Largest HMAC output (SHA512).
pub(crate) const MAX_HMAC_LEN: usize = 64;

/// HMAC key; `None` digest is represented by the absence of a key at the call sites.
#[derive(Clone)]
pub(crate) struct HmacKey {
    key: hmac::Key,
    len: usize,
}

impl HmacKey {
    /// Keys an HMAC with the first `digest.output_len()` bytes of `area`.
    /// Returns `None` for [`DigestKind::None`] or an `area` that is too short.
    pub(crate) fn new(digest: DigestKind, area: &[u8]) -> Option<Self> {
        let alg = match digest {
            DigestKind::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            DigestKind::Sha256 => hmac::HMAC_SHA256,
            DigestKind::Sha384 => hmac::HMAC_SHA384,
            DigestKind::Sha512 => hmac::HMAC_SHA512,
            DigestKind::None => return None,
        };
        let len = digest.output_len();
        let key = area.get(..len)?;
        Some(Self {
            key: hmac::Key::new(alg, key),
            len,
        })
    }

    /// Output length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// HMAC over the concatenation of `parts`, written to `out[..len]`.
    pub(crate) fn sign_parts(&self, parts: &[&[u8]], out: &mut [u8]) {
        let mut ctx = hmac::Context::with_key(&self.key);
        for p in parts {
            ctx.update(p);
        }
        let tag = ctx.sign();
        out[..self.len].copy_from_slice(tag.as_ref());
    }

    /// Constant-time verification of `expected` against the HMAC of the concatenated `parts`.
    pub(crate) fn verify_parts(&self, parts: &[&[u8]], expected: &[u8]) -> bool {
        let mut buf = [0u8; MAX_HMAC_LEN];
        self.sign_parts(parts, &mut buf);
        expected.len() == self.len
            && bool::from(subtle::ConstantTimeEq::ct_eq(&buf[..self.len], expected))
    }
}
