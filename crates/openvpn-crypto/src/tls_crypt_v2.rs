//! tls-crypt-v2 (`packets.md` §5.4, `keys.md` §8.2): server key, client key `Kc ‖ WKc`,
//! wrapping/unwrapping of `WKc`, and splitting WKc off a datagram.
//!
//! ```text
//! len = 32 + 256 + len(metadata) + 2
//! T   = HMAC-SHA256(Ka, len ‖ Kc ‖ metadata)
//! WKc = T ‖ AES-256-CTR(Ke, IV = T[..16], Kc ‖ metadata) ‖ len
//! ```

use crate::error::CryptoError;
use crate::keys::StaticKey;
use crate::tls_crypt::{CtrHmac, TAG};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

/// Largest WKc 2.6 accepts.
pub const WKC_MAX_LEN: usize = 1024;
/// Smallest WKc: tag + Kc + length, no metadata.
const WKC_MIN_LEN: usize = TAG + 256 + 2;
/// Largest metadata (including its type byte).
const METADATA_MAX: usize = WKC_MAX_LEN - WKC_MIN_LEN;

const SERVER_BEGIN: &str = "-----BEGIN OpenVPN tls-crypt-v2 server key-----";
const SERVER_END: &str = "-----END OpenVPN tls-crypt-v2 server key-----";
const CLIENT_BEGIN: &str = "-----BEGIN OpenVPN tls-crypt-v2 client key-----";
const CLIENT_END: &str = "-----END OpenVPN tls-crypt-v2 client key-----";

/// Default metadata when generating a client key: type 0x01 TIMESTAMP ‖ u64 BE Unix time.
pub fn timestamp_metadata(now_secs: u64) -> [u8; 9] {
    let mut m = [0u8; 9];
    m[0] = 0x01;
    m[1..].copy_from_slice(&now_secs.to_be_bytes());
    m
}

/// Splits a datagram of opcode 10 / 11 into `(tls-crypt packet, WKc)` using the trailing u16
/// length (step 1 of the server unwrap procedure).
pub fn split_wkc(packet: &[u8]) -> Result<(&[u8], &[u8]), CryptoError> {
    let n = packet.len();
    if n < 2 {
        return Err(CryptoError::TooShort {
            len: n,
            min: WKC_MIN_LEN,
        });
    }
    let len = usize::from(u16::from_be_bytes([packet[n - 2], packet[n - 1]]));
    if !(WKC_MIN_LEN..=WKC_MAX_LEN).contains(&len) || len > n {
        return Err(CryptoError::BadWkcLength {
            len,
            min: WKC_MIN_LEN,
            max: WKC_MAX_LEN.min(n),
        });
    }
    Ok(packet.split_at(n - len))
}

fn pem_body(
    text: &str,
    begin: &str,
    end: &str,
    what: &str,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let err = |m: String| CryptoError::KeyFormat(format!("tls-crypt-v2 {what} key: {m}"));
    let mut lines = text.lines();
    if !lines.any(|l| l.trim() == begin) {
        return Err(err(format!("no '{begin}' line found")));
    }
    let mut b64 = Zeroizing::new(String::new());
    let mut footer = false;
    for l in lines {
        if l.trim() == end {
            footer = true;
            break;
        }
        b64.extend(l.chars().filter(|c| !c.is_whitespace()));
    }
    if !footer {
        return Err(err(format!("missing '{end}' line")));
    }
    STANDARD
        .decode(b64.as_bytes())
        .map(Zeroizing::new)
        .map_err(|e| err(format!("bad base64: {e}")))
}

fn pem_write(bytes: &[u8], begin: &str, end: &str) -> String {
    let b64 = Zeroizing::new(STANDARD.encode(bytes));
    let mut s = String::with_capacity(b64.len() + b64.len() / 64 + 100);
    s.push_str(begin);
    s.push('\n');
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        s.push('\n');
    }
    s.push_str(end);
    s.push('\n');
    s
}

/// tls-crypt-v2 server key (128 bytes: `Ke` = 0..32, `Ka` = 64..96).
#[derive(Clone)]
pub struct TlsCryptV2ServerKey {
    bytes: Zeroizing<[u8; 128]>,
    wrap: CtrHmac,
}

impl TlsCryptV2ServerKey {
    /// From the 128 decoded key bytes.
    pub fn from_bytes(bytes: &[u8; 128]) -> Self {
        Self {
            bytes: Zeroizing::new(*bytes),
            wrap: CtrHmac::new(&bytes[..64], &bytes[64..]),
        }
    }

    /// The raw 128 bytes.
    pub fn as_bytes(&self) -> &[u8; 128] {
        &self.bytes
    }

    /// 128 random bytes (`openvpn --genkey tls-crypt-v2-server`).
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut b = Zeroizing::new([0u8; 128]);
        rng.fill_bytes(&mut b[..]);
        Self::from_bytes(&b)
    }

    /// Parses the `-----BEGIN OpenVPN tls-crypt-v2 server key-----` PEM block.
    pub fn parse_pem(text: &str) -> Result<Self, CryptoError> {
        let body = pem_body(text, SERVER_BEGIN, SERVER_END, "server")?;
        let bytes: &[u8; 128] = body.as_slice().try_into().map_err(|_| {
            CryptoError::KeyFormat(format!(
                "tls-crypt-v2 server key: {} bytes decoded, need 128; \
                 regenerate with openvpn --genkey tls-crypt-v2-server",
                body.len()
            ))
        })?;
        Ok(Self::from_bytes(bytes))
    }

    /// PEM text as written by `openvpn --genkey tls-crypt-v2-server`.
    pub fn to_pem(&self) -> String {
        pem_write(&self.bytes[..], SERVER_BEGIN, SERVER_END)
    }

    /// Wraps a client key: `WKc = T ‖ AES-256-CTR(Kc ‖ metadata) ‖ len`.
    /// `metadata` must be 1..=734 bytes (first byte: 0x00 USER or 0x01 TIMESTAMP).
    pub fn wrap_client_key(&self, kc: &StaticKey, metadata: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if metadata.is_empty() || metadata.len() > METADATA_MAX {
            return Err(CryptoError::MetadataLength {
                len: metadata.len(),
                max: METADATA_MAX,
            });
        }
        let len = WKC_MIN_LEN + metadata.len();
        let len_be = (len as u16).to_be_bytes();
        let tag = self.wrap.tag(&[&len_be, kc.as_bytes(), metadata]);
        let mut wkc = Vec::with_capacity(len);
        wkc.extend_from_slice(&tag);
        wkc.extend_from_slice(kc.as_bytes());
        wkc.extend_from_slice(metadata);
        self.wrap.apply_ctr(&tag, &mut wkc[TAG..]);
        wkc.extend_from_slice(&len_be);
        Ok(wkc)
    }

    /// Verifies and unwraps a WKc, returning `(Kc, metadata)`. Any failure should make the
    /// server drop the packet silently.
    pub fn unwrap_client_key(&self, wkc: &[u8]) -> Result<(StaticKey, Vec<u8>), CryptoError> {
        let n = wkc.len();
        let bad = |len| CryptoError::BadWkcLength {
            len,
            min: WKC_MIN_LEN,
            max: WKC_MAX_LEN,
        };
        if !(WKC_MIN_LEN..=WKC_MAX_LEN).contains(&n) {
            return Err(bad(n));
        }
        let len_be = [wkc[n - 2], wkc[n - 1]];
        if usize::from(u16::from_be_bytes(len_be)) != n {
            return Err(bad(usize::from(u16::from_be_bytes(len_be))));
        }
        let tag = &wkc[..TAG];
        let mut plain = Zeroizing::new(wkc[TAG..n - 2].to_vec());
        self.wrap.apply_ctr(tag, &mut plain);
        if !self.wrap.verify(&[&len_be, &plain], tag) {
            return Err(CryptoError::BadAuth);
        }
        let mut kc = Zeroizing::new([0u8; 256]);
        kc.copy_from_slice(&plain[..256]);
        Ok((StaticKey::from_bytes(*kc), plain[256..].to_vec()))
    }
}

impl std::fmt::Debug for TlsCryptV2ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsCryptV2ServerKey(..)")
    }
}

/// tls-crypt-v2 client key: `Kc` (used as a tls-crypt key, client role) and the opaque `WKc`
/// appended to opcode 10/11 packets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsCryptV2ClientKey {
    /// The client's tls-crypt key.
    pub kc: StaticKey,
    /// The wrapped client key, sent unencrypted after the tls-crypt packet.
    pub wkc: Vec<u8>,
}

impl TlsCryptV2ClientKey {
    /// A fresh random `Kc` wrapped by `server` with `metadata` (e.g. [`timestamp_metadata`]).
    pub fn generate(
        server: &TlsCryptV2ServerKey,
        metadata: &[u8],
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Self, CryptoError> {
        let kc = StaticKey::generate(rng);
        let wkc = server.wrap_client_key(&kc, metadata)?;
        Ok(Self { kc, wkc })
    }

    /// Parses the `-----BEGIN OpenVPN tls-crypt-v2 client key-----` PEM block (`Kc ‖ WKc`).
    pub fn parse_pem(text: &str) -> Result<Self, CryptoError> {
        let body = pem_body(text, CLIENT_BEGIN, CLIENT_END, "client")?;
        if body.len() < 256 + WKC_MIN_LEN {
            return Err(CryptoError::KeyFormat(format!(
                "tls-crypt-v2 client key: {} bytes decoded, need at least {} (Kc ‖ WKc)",
                body.len(),
                256 + WKC_MIN_LEN
            )));
        }
        let (kc, wkc) = body.split_at(256);
        let (_, tail) = split_wkc(wkc)?;
        if tail.len() != wkc.len() {
            return Err(CryptoError::KeyFormat(format!(
                "tls-crypt-v2 client key: WKc is {} bytes but its length field says {}",
                wkc.len(),
                tail.len()
            )));
        }
        let mut k = [0u8; 256];
        k.copy_from_slice(kc);
        let kc = StaticKey::from_bytes(k);
        k.fill(0);
        Ok(Self {
            kc,
            wkc: wkc.to_vec(),
        })
    }

    /// PEM text as written by `openvpn --genkey tls-crypt-v2-client`.
    pub fn to_pem(&self) -> String {
        let mut all = Zeroizing::new(Vec::with_capacity(256 + self.wkc.len()));
        all.extend_from_slice(self.kc.as_bytes());
        all.extend_from_slice(&self.wkc);
        pem_write(&all, CLIENT_BEGIN, CLIENT_END)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls_crypt::tests::h;
    use rand_chacha::rand_core::SeedableRng;

    fn server() -> TlsCryptV2ServerKey {
        TlsCryptV2ServerKey::from_bytes(&std::array::from_fn(|i| i as u8))
    }

    fn kc() -> StaticKey {
        StaticKey::from_bytes(std::array::from_fn(|i| i as u8))
    }

    const UT_WKC: &str = "
        177da5c074a94619b16be4acb71f1a6ccf24f33c6bbaf498459d5f06c369d4952c78396efd93c2598f4771e068cafca3d2d3
        87d87151392b1f74b43df29137072ca3ceae6bf741153c97b0cf6d8386b0ddd4baa201fd024693fa44510e035c29691009bc
        2624ad8995f9171c1c1b02d9a7efc02436e868e90085a8276a19a6f7ce1daf85e16a18c3dd1a9ba46c5ad3deb70edd52f151
        e1be45dcd788c4c2a494a8bc504fd650e46306093e7cfa75a1218f44f3277055aeef56dc2a68b5d36deeed3d927c407e90b1
        8edacfdec7a6b037b0fe04c1b5c7d0fcea131721479cde64459faad7b482e276dadcfa7cfc5b34fa149bbf6b49a33a03f121
        2516aed221626c7224d887cabc7f9c90c6376de16c6efd9e70b4f080674b4ece3e08b5323bedf04e6114df11acb31e012b";

    // test-vectors.md §3 [UT]
    #[test]
    fn unwrap_unit_test_wkc() {
        let wkc = h(UT_WKC);
        assert_eq!(wkc.len(), 299);
        let (k, md) = server().unwrap_client_key(&wkc).expect("valid WKc");
        assert_eq!(k, kc());
        assert_eq!(md, h("010000000000000000"));
        // and re-wrapping gives the same bytes (deterministic construction)
        assert_eq!(server().wrap_client_key(&k, &md).expect("wrap"), wkc);
        for i in 0..wkc.len() {
            let mut bad = wkc.clone();
            bad[i] ^= 0x04;
            assert!(server().unwrap_client_key(&bad).is_err(), "flip at {i}");
        }
    }

    // test-vectors.md §5.2 [DER]
    #[test]
    fn wrap_deterministic() {
        let wkc = server()
            .wrap_client_key(&kc(), &h("01 0000000065000000"))
            .expect("wrap");
        assert_eq!(wkc, h("
            3c57811d3c2e91a4eb921952dd3c602e1709510ca36dbfe1e1d79793b07cb3f57260d17c70466ed6d96ece7c5f88140ed6e2
            0b2cfb9dd633d4fc04a51b2a6b63b746cb5f4a2d3293e760a95d6775250bce5c5cb18e2ac94568bbe34cff52163d076c3618
            01ed6dfa30e1d0f3e0879bf1aa2f080c05c8a64d92816e9ec07ebfdf69d312e78e6f8eacd8fd361a7444324087b8e2077018
            7138b033c11c497f2b36a290bc735e1c98d5f0598c9d46d943922574d5a5da47f490d3589bc7ce8fdcc1ef99ceec209dc633
            1a2a41dc0fa3a1912c8e06d17be6c894bdadc7cc62147a580a1260083703fc45512d0b87d14295b3612e1bfa44090e485024
            3408dcd2da592d3913fc89ae5ced7463cc60db9491eb10469fc7b5bd023d9ac226cced612ce864e1bec628fa9bf2b3012b"));
    }

    #[test]
    fn pem_round_trips_and_split() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let s = TlsCryptV2ServerKey::generate(&mut rng);
        let pem = s.to_pem();
        assert!(pem.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
        let s2 = TlsCryptV2ServerKey::parse_pem(&pem).expect("parse server");
        assert_eq!(s2.as_bytes(), s.as_bytes());
        let c = TlsCryptV2ClientKey::generate(&s, &timestamp_metadata(0x6500_0000), &mut rng)
            .expect("gen");
        assert_eq!(c.wkc.len(), 299);
        let c2 = TlsCryptV2ClientKey::parse_pem(&c.to_pem()).expect("parse client");
        assert_eq!(c2, c);
        let (k, md) = s.unwrap_client_key(&c.wkc).expect("unwrap");
        assert_eq!(k, c.kc);
        assert_eq!(md, timestamp_metadata(0x6500_0000));
        let mut pkt = vec![0x50; 60];
        pkt.extend_from_slice(&c.wkc);
        let (tc, w) = split_wkc(&pkt).expect("split");
        assert_eq!((tc.len(), w), (60, &c.wkc[..]));
        assert!(split_wkc(&pkt[70..]).is_err());
        assert!(TlsCryptV2ServerKey::parse_pem(&c.to_pem()).is_err());
        assert!(s.wrap_client_key(&k, &[]).is_err());
        assert!(s.wrap_client_key(&k, &[0; 735]).is_err());
        assert!(s.wrap_client_key(&k, &[0; 734]).is_ok());
    }
}
