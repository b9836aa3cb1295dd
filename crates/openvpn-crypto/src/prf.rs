//! TLS 1.0 PRF and OpenVPN's legacy key derivation (`keys.md` §6.2), exporter labels (§6.4).

use crate::keys::KeyBlock;
use hmac::{Mac, SimpleHmac};
use zeroize::Zeroizing;

/// RFC 5705 exporter label for the 256-byte data-channel key block (no context).
pub const EKM_LABEL_DATAKEYS: &[u8] = b"EXPORTER-OpenVPN-datakeys";
/// Exporter label for the 256-byte dynamic tls-crypt key (no context).
pub const EKM_LABEL_DYN_TLS_CRYPT: &[u8] = b"EXPORTER-OpenVPN-dynamic-tls-crypt";
/// Exporter label for the 3-byte P2P peer-id (no context).
pub const EKM_LABEL_P2P_PEERID: &[u8] = b"EXPORTER-OpenVPN-p2p-peerid";

const LABEL_MASTER: &[u8] = b"OpenVPN master secret";
const LABEL_EXPANSION: &[u8] = b"OpenVPN key expansion";

/// XORs `P_hash(secret, seed)` into `out`.
fn p_hash_xor<D>(secret: &[u8], seed: &[u8], out: &mut [u8])
where
    D: hmac::digest::Digest + hmac::digest::core_api::BlockSizeUser,
{
    let new = || {
        <SimpleHmac<D> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
    };
    // A(1) = HMAC(secret, seed)
    let mut a = Zeroizing::new({
        let mut m = new();
        m.update(seed);
        m.finalize().into_bytes().to_vec()
    });
    for chunk in out.chunks_mut(a.len()) {
        let mut m = new();
        m.update(&a);
        m.update(seed);
        let block = m.finalize().into_bytes();
        for (o, b) in chunk.iter_mut().zip(block.iter()) {
            *o ^= b;
        }
        let mut m = new();
        m.update(&a);
        *a = m.finalize().into_bytes().to_vec();
    }
}

/// TLS 1.0/1.1 PRF (RFC 2246 §5): `P_MD5(S1, label_and_seed) ⊕ P_SHA1(S2, label_and_seed)`,
/// filling all of `out`. OpenVPN passes the label and the seed as one buffer.
pub fn tls1_prf(secret: &[u8], label_and_seed: &[u8], out: &mut [u8]) {
    let half = secret.len().div_ceil(2);
    let s1 = &secret[..half];
    let s2 = &secret[secret.len() - half..];
    out.fill(0);
    p_hash_xor::<md5::Md5>(s1, label_and_seed, out);
    p_hash_xor::<sha1::Sha1>(s2, label_and_seed, out);
}

fn prf_labeled(secret: &[u8], label: &[u8], seeds: &[&[u8]], out: &mut [u8]) {
    let mut seed = Zeroizing::new(Vec::with_capacity(label.len() + 128));
    seed.extend_from_slice(label);
    for s in seeds {
        seed.extend_from_slice(s);
    }
    tls1_prf(secret, &seed, out);
}

/// The 48-byte master secret: `PRF(pre_master, "OpenVPN master secret", c.random1 ‖ s.random1)`.
pub fn derive_master_prf(
    client_pre_master: &[u8; 48],
    client_random1: &[u8; 32],
    server_random1: &[u8; 32],
) -> Zeroizing<[u8; 48]> {
    let mut master = Zeroizing::new([0u8; 48]);
    prf_labeled(
        client_pre_master,
        LABEL_MASTER,
        &[client_random1, server_random1],
        &mut master[..],
    );
    master
}

/// Legacy (non-EKM) data-channel key derivation, `keys.md` §6.2:
/// `key2 = PRF(master, "OpenVPN key expansion", c.random2 ‖ s.random2 ‖ c.sid ‖ s.sid)`.
pub fn derive_key2_prf(
    client_pre_master: &[u8; 48],
    client_random1: &[u8; 32],
    client_random2: &[u8; 32],
    server_random1: &[u8; 32],
    server_random2: &[u8; 32],
    client_sid: &[u8; 8],
    server_sid: &[u8; 8],
) -> KeyBlock {
    let master = derive_master_prf(client_pre_master, client_random1, server_random1);
    let mut key2 = Zeroizing::new([0u8; 256]);
    prf_labeled(
        &master[..],
        LABEL_EXPANSION,
        &[client_random2, server_random2, client_sid, server_sid],
        &mut key2[..],
    );
    KeyBlock::from_bytes(*key2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).expect("test hex")
    }

    // test-vectors.md §1 [UT]
    #[test]
    fn prf_unit_test_vector() {
        let secret = b"Lorem ipsum dolor sit amet, consectetur adipisici elit, sed eiusmod tempor incidunt ut labore et dolore magna aliqua.";
        let seed = b"Quis aute iure reprehenderit in voluptate velit esse cillum dolore";
        assert_eq!(secret.len(), 117);
        assert_eq!(seed.len(), 66);
        let mut out = [0u8; 32];
        tls1_prf(secret, seed, &mut out);
        assert_eq!(
            out.to_vec(),
            h("d98c8518c85e946927916acfc2d592fbb1567e4b4b1459e6a904ac2ddab72d67")
        );
    }

    // test-vectors.md §5.1 [DER]
    #[test]
    fn prf_chain_deterministic() {
        let master = derive_master_prf(&[0x11; 48], &[0x22; 32], &[0x33; 32]);
        assert_eq!(
            master.to_vec(),
            h(
                "20ddbdd008184af1517619079c7ce1de092cef3611547ace50f98304b09b32d9
               55f37acdf73a2bca0132561e8651848d"
            )
        );
        let key2 = derive_key2_prf(
            &[0x11; 48],
            &[0x22; 32],
            &[0x44; 32],
            &[0x33; 32],
            &[0x55; 32],
            &[1, 2, 3, 4, 5, 6, 7, 8],
            &[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18],
        );
        assert_eq!(
            key2.as_bytes().to_vec(),
            h(
                "d8e22c15d4136061cf0320542b25b08178520a44c93d261a26dcfbea52011ce9
               9787969bba29abba339c9c2d1b150c1a3b25cdc39bc8466019426e4130bb6890
               e7e478b17be2b19f98b649de214b32b99a99fda7ab8fc56a4d3187174178f889
               b89f57deec63c85e1a65bbaa93555081cbeac868ec3a2c85f967933325f19b48
               f98d3bbcbe376a0813e01f39010bbc07fc212c8d8d87e087331638e845637d3c
               2e295ce00d4388b4bfee03846ea79d98281981415b0fa5ca8964b7b66b6e6fc4
               cb6cd34424ba920b160ba1f1532a6e332b4abe7403571de452171ea1a26b6ae1
               fb7979a76c4e8f9462d392d321b1b8c06f69a7011a7e483ae90c07d88de5f5f0"
            )
        );
    }

    #[test]
    fn labels() {
        assert_eq!(EKM_LABEL_DATAKEYS.len(), 25);
        assert_eq!(
            EKM_LABEL_DYN_TLS_CRYPT,
            b"EXPORTER-OpenVPN-dynamic-tls-crypt"
        );
    }
}
