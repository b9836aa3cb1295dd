//! Algorithm and role enums: [`Role`], [`CipherKind`], [`DigestKind`].

/// TLS role of this side (in P2P mode: `tls-client` / `tls-server`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// TLS client.
    Client,
    /// TLS server.
    Server,
}

/// Data-channel cipher (`--cipher` / `--data-ciphers` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherKind {
    /// AES-128-GCM.
    Aes128Gcm,
    /// AES-192-GCM (not available with the ring backend).
    Aes192Gcm,
    /// AES-256-GCM.
    Aes256Gcm,
    /// CHACHA20-POLY1305.
    ChaCha20Poly1305,
    /// AES-128-CBC with HMAC.
    Aes128Cbc,
    /// AES-192-CBC with HMAC.
    Aes192Cbc,
    /// AES-256-CBC with HMAC.
    Aes256Cbc,
    /// `cipher none`: no encryption (optionally HMAC only).
    None,
}

const CIPHERS: [(CipherKind, &str); 8] = [
    (CipherKind::Aes128Gcm, "AES-128-GCM"),
    (CipherKind::Aes192Gcm, "AES-192-GCM"),
    (CipherKind::Aes256Gcm, "AES-256-GCM"),
    (CipherKind::ChaCha20Poly1305, "CHACHA20-POLY1305"),
    (CipherKind::Aes128Cbc, "AES-128-CBC"),
    (CipherKind::Aes192Cbc, "AES-192-CBC"),
    (CipherKind::Aes256Cbc, "AES-256-CBC"),
    (CipherKind::None, "none"),
];

/// AEAD tag length (all supported AEAD ciphers).
pub(crate) const AEAD_TAG_LEN: usize = 16;
/// Data-channel short packet id length.
pub(crate) const PACKET_ID_LEN: usize = 4;
/// AES block size (CBC IV length).
pub(crate) const AES_BLOCK: usize = 16;

impl CipherKind {
    /// Parses an OpenVPN cipher name, case-insensitively (`"AES-256-GCM"`, `"chacha20-poly1305"`,
    /// `"none"`). Unknown or unsupported names give `None`.
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim();
        CIPHERS
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(k, _)| *k)
    }

    /// Canonical OpenVPN name (upper case, `none` for no cipher).
    pub fn name(self) -> &'static str {
        CIPHERS
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("none", |(_, n)| n)
    }

    /// True for AEAD ciphers (GCM, ChaCha20-Poly1305): `--auth` is ignored for them.
    pub fn is_aead(self) -> bool {
        matches!(
            self,
            Self::Aes128Gcm | Self::Aes192Gcm | Self::Aes256Gcm | Self::ChaCha20Poly1305
        )
    }

    /// Cipher key length in bytes (taken from the start of the key block's cipher area).
    pub fn key_len(self) -> usize {
        match self {
            Self::Aes128Gcm | Self::Aes128Cbc => 16,
            Self::Aes192Gcm | Self::Aes192Cbc => 24,
            Self::Aes256Gcm | Self::Aes256Cbc | Self::ChaCha20Poly1305 => 32,
            Self::None => 0,
        }
    }

    /// Worst-case number of bytes a data packet grows by when sealed, including a header of
    /// `header_len` bytes (1 for DATA_V1, 4 for DATA_V2). AEAD: header + packet id + tag
    /// (exact). CBC: header + IV + packet id + maximum padding, **excluding the HMAC**
    /// (add [`DigestKind::output_len`], or use [`DataSealer::overhead`] for the exact value).
    /// None: header + packet id (plus the HMAC, if any).
    ///
    /// [`DataSealer::overhead`]: crate::DataSealer::overhead
    pub fn overhead(self, header_len: usize) -> usize {
        if self.is_aead() {
            header_len + PACKET_ID_LEN + AEAD_TAG_LEN
        } else if self == Self::None {
            header_len + PACKET_ID_LEN
        } else {
            header_len + AES_BLOCK + PACKET_ID_LEN + AES_BLOCK
        }
    }
}

/// HMAC digest (`--auth`), used by CBC data channels and tls-auth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestKind {
    /// SHA1 (20 bytes), the 2.6 default.
    Sha1,
    /// SHA256 (32 bytes).
    Sha256,
    /// SHA384 (48 bytes).
    Sha384,
    /// SHA512 (64 bytes).
    Sha512,
    /// No HMAC (`--auth none`).
    None,
}

const DIGESTS: [(DigestKind, &str); 5] = [
    (DigestKind::Sha1, "SHA1"),
    (DigestKind::Sha256, "SHA256"),
    (DigestKind::Sha384, "SHA384"),
    (DigestKind::Sha512, "SHA512"),
    (DigestKind::None, "none"),
];

impl DigestKind {
    /// Parses a digest name case-insensitively (`"SHA1"`, `"sha256"`, `"SHA-256"`, `"none"`).
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim();
        DIGESTS
            .iter()
            .find(|(_, n)| {
                n.eq_ignore_ascii_case(name)
                    || (name.len() == n.len() + 1
                        && name.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("SHA"))
                        && name.get(3..4) == Some("-")
                        && name.get(4..).is_some_and(|r| n.get(3..) == Some(r)))
            })
            .map(|(k, _)| *k)
    }

    /// Canonical OpenVPN name (`SHA1`, `SHA256`, …, `none`).
    pub fn name(self) -> &'static str {
        DIGESTS
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("none", |(_, n)| n)
    }

    /// HMAC output (and key) length in bytes; 0 for `None`.
    pub fn output_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
            Self::None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_names_round_trip_case_insensitively() {
        for (k, n) in CIPHERS {
            assert_eq!(CipherKind::from_name(n), Some(k));
            assert_eq!(CipherKind::from_name(&n.to_ascii_lowercase()), Some(k));
            assert_eq!(k.name(), n);
        }
        assert_eq!(CipherKind::from_name("BF-CBC"), None);
        assert_eq!(
            CipherKind::from_name("chacha20-poly1305"),
            Some(CipherKind::ChaCha20Poly1305)
        );
    }

    #[test]
    fn digest_names() {
        assert_eq!(DigestKind::from_name("sha256"), Some(DigestKind::Sha256));
        assert_eq!(DigestKind::from_name("SHA-512"), Some(DigestKind::Sha512));
        assert_eq!(DigestKind::from_name("NONE"), Some(DigestKind::None));
        assert_eq!(DigestKind::from_name("MD5"), None);
        assert_eq!(DigestKind::Sha1.output_len(), 20);
    }

    #[test]
    fn overheads_match_data_md() {
        assert_eq!(CipherKind::Aes256Gcm.overhead(4), 24);
        assert_eq!(CipherKind::Aes128Gcm.overhead(1), 21);
        assert_eq!(CipherKind::Aes256Cbc.overhead(1) + 20, 1 + 20 + 16 + 4 + 16);
    }
}
