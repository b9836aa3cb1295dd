//! Key material: the 256-byte data-channel [`KeyBlock`] ("key2"), the 2048-bit
//! [`StaticKey`] file (`keys.md` §8.1) and [`KeyDirection`].

use crate::error::CryptoError;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

/// Size of a key2 / static key.
pub(crate) const KEY2_LEN: usize = 256;
/// Size of one direction block.
pub(crate) const BLOCK_LEN: usize = 128;
/// Offset of the HMAC area inside a block.
pub(crate) const HMAC_AREA: usize = 64;

/// Returns block `i` (0 or 1) of a 256-byte key as `(cipher area, HMAC area)`, 64 bytes each.
pub(crate) fn block(bytes: &[u8; KEY2_LEN], i: usize) -> (&[u8], &[u8]) {
    let b = &bytes[i * BLOCK_LEN..(i + 1) * BLOCK_LEN];
    b.split_at(HMAC_AREA)
}

/// The 256 bytes of data-channel key material ("key2", `keys.md` §6.1): two blocks of
/// `cipher area (64) ‖ HMAC area (64)`; block 0 is client→server, block 1 server→client.
#[derive(Clone)]
pub struct KeyBlock(Zeroizing<[u8; KEY2_LEN]>);

impl KeyBlock {
    /// Wraps 256 bytes of key material (PRF or `EXPORTER-OpenVPN-datakeys` output).
    pub fn from_bytes(bytes: [u8; KEY2_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The raw 256 bytes.
    pub fn as_bytes(&self) -> &[u8; KEY2_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for KeyBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyBlock(..)")
    }
}

/// Which blocks of a static key a side uses (`key-direction`, `packets.md` §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyDirection {
    /// No key-direction: block 0 both ways.
    Bidirectional,
    /// `key-direction 0`: send with block 0, receive with block 1 (conventionally the server).
    Normal,
    /// `key-direction 1`: send with block 1, receive with block 0 (conventionally the client).
    Inverse,
}

impl KeyDirection {
    /// `(send block, receive block)` indices.
    pub(crate) fn blocks(self) -> (usize, usize) {
        match self {
            Self::Bidirectional => (0, 0),
            Self::Normal => (0, 1),
            Self::Inverse => (1, 0),
        }
    }
}

const STATIC_BEGIN: &str = "-----BEGIN OpenVPN Static key V1-----";
const STATIC_END: &str = "-----END OpenVPN Static key V1-----";

/// A 2048-bit "OpenVPN Static key V1" (tls-auth, tls-crypt, tls-crypt-v2 client key `Kc`,
/// dynamic tls-crypt key).
#[derive(Clone)]
pub struct StaticKey(Zeroizing<[u8; KEY2_LEN]>);

impl StaticKey {
    /// Wraps 256 key bytes.
    pub fn from_bytes(bytes: [u8; KEY2_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The raw 256 bytes.
    pub fn as_bytes(&self) -> &[u8; KEY2_LEN] {
        &self.0
    }

    /// 256 fresh random bytes (`openvpn --genkey secret`).
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut k = Zeroizing::new([0u8; KEY2_LEN]);
        rng.fill_bytes(&mut k[..]);
        Self(k)
    }

    /// Byte-wise XOR with another key (dynamic tls-crypt: `EKM ⊕ original key`, `keys.md` §6.6).
    pub fn xor(&self, other: &[u8; KEY2_LEN]) -> Self {
        let mut k = Zeroizing::new([0u8; KEY2_LEN]);
        for (o, (a, b)) in k.iter_mut().zip(self.0.iter().zip(other.iter())) {
            *o = a ^ b;
        }
        Self(k)
    }

    /// Parses the key file text (`keys.md` §8.1): text before the `-----BEGIN OpenVPN Static
    /// key V1-----` line is ignored, between header and footer only hex digits and whitespace
    /// are allowed, the footer must be present and exactly 256 bytes must be encoded.
    pub fn parse_pem(text: &str) -> Result<Self, CryptoError> {
        let err = |m: String| Err(CryptoError::KeyFormat(format!("static key: {m}")));
        let mut lines = text.lines().enumerate();
        if !lines.any(|(_, l)| l.starts_with(STATIC_BEGIN)) {
            return err(format!(
                "no '{STATIC_BEGIN}' line found; is this an OpenVPN static key file \
                 (openvpn --genkey secret)?"
            ));
        }
        let mut hex = Zeroizing::new(String::with_capacity(2 * KEY2_LEN));
        let mut footer = false;
        for (no, line) in lines {
            if line.starts_with(STATIC_END) {
                footer = true;
                break;
            }
            for c in line.chars() {
                if c.is_ascii_hexdigit() {
                    hex.push(c);
                } else if !c.is_whitespace() {
                    return err(format!(
                        "line {}: unexpected character {c:?}; only hex digits are allowed \
                         between the BEGIN and END lines",
                        no + 1
                    ));
                }
            }
        }
        if !footer {
            return err(format!("missing '{STATIC_END}' line"));
        }
        if hex.len() != 2 * KEY2_LEN {
            return err(format!(
                "{} hex digits found, need exactly {} (256 bytes, two 128-byte blocks); \
                 regenerate the key with openvpn --genkey secret",
                hex.len(),
                2 * KEY2_LEN
            ));
        }
        let mut k = Zeroizing::new([0u8; KEY2_LEN]);
        hex::decode_to_slice(hex.as_bytes(), &mut k[..])
            .map_err(|e| CryptoError::KeyFormat(format!("static key: bad hex: {e}")))?;
        Ok(Self(k))
    }

    /// Writes the key file text exactly as `openvpn --genkey secret` does.
    pub fn to_pem(&self) -> String {
        let mut s = String::from("#\n# 2048 bit OpenVPN static key\n#\n");
        s.push_str(STATIC_BEGIN);
        s.push('\n');
        for chunk in self.0.chunks(16) {
            s.push_str(&hex::encode(chunk));
            s.push('\n');
        }
        s.push_str(STATIC_END);
        s.push('\n');
        s
    }
}

impl std::fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticKey(..)")
    }
}

impl PartialEq for StaticKey {
    fn eq(&self, other: &Self) -> bool {
        subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]).into()
    }
}

impl Eq for StaticKey {}

#[cfg(test)]
mod tests {
    use super::*;

    fn counting() -> [u8; 256] {
        std::array::from_fn(|i| i as u8)
    }

    #[test]
    fn pem_round_trip_and_layout() {
        let k = StaticKey::from_bytes(counting());
        let pem = k.to_pem();
        assert!(pem.starts_with("#\n# 2048 bit OpenVPN static key\n#\n-----BEGIN"));
        assert!(pem.contains("\n000102030405060708090a0b0c0d0e0f\n"));
        assert_eq!(pem.lines().count(), 3 + 1 + 16 + 1);
        assert_eq!(StaticKey::parse_pem(&pem), Ok(k));
    }

    #[test]
    fn pem_accepts_leading_junk_and_whitespace() {
        let pem = StaticKey::from_bytes(counting()).to_pem();
        let pem = format!("junk line\n{}", pem.replace("0f\n", "0f \t\r\n"));
        assert!(StaticKey::parse_pem(&pem).is_ok());
    }

    #[test]
    fn pem_errors_are_specific() {
        let pem = StaticKey::from_bytes(counting()).to_pem();
        let e = |t: &str| match StaticKey::parse_pem(t) {
            Err(CryptoError::KeyFormat(m)) => m,
            other => panic!("expected KeyFormat, got {other:?}"),
        };
        assert!(e("nothing").contains("no '-----BEGIN"));
        assert!(e(&pem.replace(STATIC_END, "")).contains("missing"));
        assert!(e(&pem.replace("0001", "00g1")).contains("unexpected character 'g'"));
        let half: String = pem
            .lines()
            .take(12)
            .chain([STATIC_END])
            .collect::<Vec<_>>()
            .join("\n");
        assert!(e(&half).contains("need exactly 512"));
    }

    #[test]
    fn blocks_and_directions() {
        let b = counting();
        let (c, h) = block(&b, 1);
        assert_eq!(c[0], 128);
        assert_eq!(h[0], 192);
        assert_eq!(KeyDirection::Inverse.blocks(), (1, 0));
    }
}
