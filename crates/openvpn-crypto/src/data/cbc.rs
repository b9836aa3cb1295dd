//! AES-CBC with caller-managed PKCS#7 padding, keyed once per direction.

use crate::error::CryptoError;
use crate::kinds::{AES_BLOCK, CipherKind};
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::consts::U16;
use cbc::cipher::{
    BlockCipher, BlockDecryptMut, BlockEncryptMut, BlockSizeUser, InnerIvInit, KeyInit,
};

/// An expanded AES key of any supported size.
#[derive(Clone)]
pub(crate) enum AesCbc {
    A128(aes::Aes128),
    A192(aes::Aes192),
    A256(aes::Aes256),
}

fn enc<C>(c: &C, iv: &[u8; AES_BLOCK], buf: &mut [u8])
where
    C: BlockEncryptMut + BlockCipher + BlockSizeUser<BlockSize = U16> + Clone,
{
    let len = buf.len();
    // `buf` is a whole number of blocks (padded by the caller), so NoPadding cannot fail.
    let _ = cbc::Encryptor::<C>::inner_iv_init(c.clone(), iv.into())
        .encrypt_padded_mut::<NoPadding>(buf, len);
}

fn dec<C>(c: &C, iv: &[u8; AES_BLOCK], buf: &mut [u8]) -> bool
where
    C: BlockDecryptMut + BlockCipher + BlockSizeUser<BlockSize = U16> + Clone,
{
    cbc::Decryptor::<C>::inner_iv_init(c.clone(), iv.into())
        .decrypt_padded_mut::<NoPadding>(buf)
        .is_ok()
}

impl AesCbc {
    pub(crate) fn new(kind: CipherKind, key: &[u8]) -> Result<Self, CryptoError> {
        let bad = |_| CryptoError::Unsupported("bad AES key length");
        Ok(match kind {
            CipherKind::Aes128Cbc => Self::A128(aes::Aes128::new_from_slice(key).map_err(bad)?),
            CipherKind::Aes192Cbc => Self::A192(aes::Aes192::new_from_slice(key).map_err(bad)?),
            CipherKind::Aes256Cbc => Self::A256(aes::Aes256::new_from_slice(key).map_err(bad)?),
            _ => return Err(CryptoError::Unsupported("not a CBC cipher")),
        })
    }

    /// Encrypts a whole number of blocks in place.
    pub(crate) fn encrypt(&self, iv: &[u8; AES_BLOCK], buf: &mut [u8]) {
        match self {
            Self::A128(c) => enc(c, iv, buf),
            Self::A192(c) => enc(c, iv, buf),
            Self::A256(c) => enc(c, iv, buf),
        }
    }

    /// Decrypts in place; false if `buf` is not a whole number of blocks.
    pub(crate) fn decrypt(&self, iv: &[u8; AES_BLOCK], buf: &mut [u8]) -> bool {
        match self {
            Self::A128(c) => dec(c, iv, buf),
            Self::A192(c) => dec(c, iv, buf),
            Self::A256(c) => dec(c, iv, buf),
        }
    }
}

/// Length of the PKCS#7 padding of a decrypted buffer, if valid.
pub(crate) fn pkcs7_len(buf: &[u8]) -> Option<usize> {
    let p = usize::from(*buf.last()?);
    if p == 0 || p > AES_BLOCK || p > buf.len() {
        return None;
    }
    buf[buf.len() - p..]
        .iter()
        .all(|&b| usize::from(b) == p)
        .then_some(p)
}
