//! tls-crypt: AES-256-CTR + HMAC-SHA256 SIV-like control-packet encryption (`packets.md` §5.3).
//!
//! ```text
//! plain: op/key ‖ sid(8) ‖ body
//! wire:  hdr = op/key ‖ sid(8) ‖ replay_id ‖ replay_time  (17 bytes)
//!        ‖ tag = HMAC-SHA256(Ka, hdr ‖ body)               (32 bytes)
//!        ‖ AES-256-CTR(Ke, IV = tag[..16], body)
//! ```

use crate::error::CryptoError;
use crate::hmac_key::HmacKey;
use crate::keys::{StaticKey, block};
use crate::kinds::{DigestKind, Role};
use crate::replay::ReplayId;
use crate::wrap::{CONTROL_PREFIX, ControlWrap};
use aes::cipher::{KeyIvInit, StreamCipher};
use zeroize::Zeroizing;

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// Length of the authenticated clear header.
const HDR: usize = CONTROL_PREFIX + 8;
/// Tag length (full HMAC-SHA256).
pub(crate) const TAG: usize = 32;

/// One direction of the AES-256-CTR + HMAC-SHA256 construction (also used for WKc).
#[derive(Clone)]
pub(crate) struct CtrHmac {
    ke: Zeroizing<[u8; 32]>,
    ka: HmacKey,
}

impl CtrHmac {
    /// `Ke` = first 32 bytes of `cipher_area`, `Ka` = first 32 bytes of `hmac_area`.
    pub(crate) fn new(cipher_area: &[u8], hmac_area: &[u8]) -> Self {
        let mut ke = Zeroizing::new([0u8; 32]);
        ke.copy_from_slice(&cipher_area[..32]);
        let ka = HmacKey::new(DigestKind::Sha256, hmac_area)
            .unwrap_or_else(|| unreachable!("hmac areas are 64 bytes"));
        Self { ke, ka }
    }

    /// Tag over the concatenated parts.
    pub(crate) fn tag(&self, parts: &[&[u8]]) -> [u8; TAG] {
        let mut t = [0u8; TAG];
        self.ka.sign_parts(parts, &mut t);
        t
    }

    /// Constant-time tag check.
    pub(crate) fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        self.ka.verify_parts(parts, tag)
    }

    /// AES-256-CTR with the full 128-bit counter block `tag[..16]`.
    pub(crate) fn apply_ctr(&self, tag: &[u8], data: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&tag[..16]);
        let mut c = Aes256Ctr::new((&*self.ke).into(), (&iv).into());
        c.apply_keystream(data);
    }
}

/// tls-crypt wrapping (also for dynamic tls-crypt keys and the tls-crypt-v2 client key `Kc`).
/// The server encrypts with block 0 and decrypts with block 1; the client the reverse.
#[derive(Clone)]
pub struct TlsCrypt {
    send: CtrHmac,
    recv: CtrHmac,
}

impl TlsCrypt {
    /// Keys for `role` from a 2048-bit key (`Ke` = block bytes 0..32, `Ka` = 64..96).
    pub fn new(key: &StaticKey, role: Role) -> Self {
        let (s, r) = match role {
            Role::Server => (0, 1),
            Role::Client => (1, 0),
        };
        let dir = |i| {
            let (c, h) = block(key.as_bytes(), i);
            CtrHmac::new(c, h)
        };
        Self {
            send: dir(s),
            recv: dir(r),
        }
    }
}

impl std::fmt::Debug for TlsCrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsCrypt(..)")
    }
}

impl ControlWrap for TlsCrypt {
    fn overhead(&self) -> usize {
        8 + TAG
    }

    fn wrap(&self, plain: &[u8], replay: ReplayId, out: &mut Vec<u8>) {
        let (head, body) = plain.split_at(plain.len().min(CONTROL_PREFIX));
        let rid = replay.to_bytes();
        let tag = self.send.tag(&[head, &rid, body]);
        out.clear();
        out.reserve(plain.len() + 8 + TAG);
        out.extend_from_slice(head);
        out.extend_from_slice(&rid);
        out.extend_from_slice(&tag);
        let start = out.len();
        out.extend_from_slice(body);
        self.send.apply_ctr(&tag, &mut out[start..]);
    }

    fn unwrap(&self, wire: &[u8], out: &mut Vec<u8>) -> Result<ReplayId, CryptoError> {
        out.clear();
        let min = HDR + TAG;
        if wire.len() < min {
            return Err(CryptoError::TooShort {
                len: wire.len(),
                min,
            });
        }
        let hdr = &wire[..HDR];
        let tag = &wire[HDR..min];
        out.extend_from_slice(&wire[..CONTROL_PREFIX]);
        out.extend_from_slice(&wire[min..]);
        self.recv.apply_ctr(tag, &mut out[CONTROL_PREFIX..]);
        if !self.recv.verify(&[hdr, &out[CONTROL_PREFIX..]], tag) {
            out.clear();
            return Err(CryptoError::BadAuth);
        }
        let mut r = [0u8; 8];
        r.copy_from_slice(&wire[CONTROL_PREFIX..HDR]);
        Ok(ReplayId::from_bytes(&r))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const UT_KEY: &str = "
        37268ea8f95d7f71f9fb8fc03770c460daf714a483d815c013ce0a537efc18f2
        8f4f172669d9e6a413bac6741d8ea05400f49b7fd6326470f23798c606bf53d4
        de63ebc64ec59d57ce5d04d5b62e68b53ca6e5354351097fa370446c4d269f18
        7bb6ae54af2dc70ff7317fe2f8754b8282aad4202f9fa42c8640245d883e2c54
        a0c1c489a036cf3a8964d8d289c1583b9447c262b1da5fd167a5d27bd5ac5143
        17bc2343a31a2efc38dd920d910375f51c2e27f3afd36c49269da079f7ce466e
        bb0f9ad13e9bbb4665974e6bc24b513c5700393bf4a3e7f967e2f384069ac8a8
        e78b18b15604993fd16515cce9c0f3e42b4126b999005ade802797b0eeb8b9e6";

    pub(crate) const LIVE_TA_KEY: &str = "
        b4233fd0551611e779d2241bb99cb82ce69ae63f55d13895e31c25148f44564a
        67f8f70e76d3a716acab09bca3f0a8965ee88d6693b0df30dd60ee5df45e6366
        278100aa9768e46e3ccbfee33f3db867a8c5f4f03cd7ab90660fa8965e7a750f
        ad26f2c14f2127f3253263ca163c3ce7510fa14550e94dabb8e380de0854b265
        ac9803e66ffc5f89d415fd6f087e7323e4eb6893595a8c70960715ed1e6afc4a
        9831fc5cde8ec4284c9d6403822418756ddb40b26c7d70f02b0e9066e740d449
        0101ca6d87f51d40067071d2196edb8dcd9c7266e6ad4620c59fcfedc6c78927
        afc8c8874a29e96d9144207813cff69ed070aa0675b0673803ae0d523ea43579";

    pub(crate) fn h(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).expect("test hex")
    }

    pub(crate) fn static_key(s: &str) -> StaticKey {
        let mut b = [0u8; 256];
        b.copy_from_slice(&h(s));
        StaticKey::from_bytes(b)
    }

    fn all_flips_rejected(w: &TlsCrypt, wire: &[u8]) {
        let mut out = Vec::new();
        for i in 0..wire.len() {
            let mut bad = wire.to_vec();
            bad[i] ^= 0x80;
            assert_eq!(
                w.unwrap(&bad, &mut out),
                Err(CryptoError::BadAuth),
                "flip at {i}"
            );
            assert!(out.is_empty());
        }
    }

    // test-vectors.md §2.3 [UT]
    #[test]
    fn unit_test_packet() {
        let key = static_key(UT_KEY);
        let wire = h("38 f419cb12d1f9e48f 00000001 61d3f8e1
            330206f56802be44fbed905064e3db43416bec5e526719462b7eb90c96defc9b 05c44879f7");
        let server = TlsCrypt::new(&key, Role::Server);
        let client = TlsCrypt::new(&key, Role::Client);
        let mut out = Vec::new();
        let r = server
            .unwrap(&wire, &mut out)
            .expect("server accepts the client packet");
        assert_eq!(
            r,
            ReplayId {
                id: 1,
                time: 0x61d3f8e1
            }
        );
        assert_eq!(out, h("38 f419cb12d1f9e48f 0000000000"));
        assert_eq!(client.unwrap(&wire, &mut out), Err(CryptoError::BadAuth));
        all_flips_rejected(&server, &wire);
        let mut again = Vec::new();
        client.wrap(&h("38 f419cb12d1f9e48f 0000000000"), r, &mut again);
        assert_eq!(again, wire);
        assert_eq!(client.overhead(), 40);
    }

    // test-vectors.md §5 [DER]
    #[test]
    fn deterministic_packet() {
        let key = StaticKey::from_bytes(std::array::from_fn(|i| i as u8));
        let mut out = Vec::new();
        TlsCrypt::new(&key, Role::Client).wrap(
            &h("38 0102030405060708 00 00000000"),
            ReplayId {
                id: 1,
                time: 0x6400_0000,
            },
            &mut out,
        );
        assert_eq!(
            out,
            h(
                "3801020304050607080000000164000000210efcf02acf3f6041b23f8b6b982fa90c8e6a2b0bbf2373af51239dcfd1a9fe3e7c919c57"
            )
        );
    }

    // test-vectors.md §6 [IOP]: first two datagrams of live session 1.
    #[test]
    fn live_session_1_resets() {
        let key = static_key(LIVE_TA_KEY);
        let server = TlsCrypt::new(&key, Role::Server);
        let client = TlsCrypt::new(&key, Role::Client);
        let c2s = h(
            "38ce8ab0b78b3fa99b000000016b06d8528a2312b7490dffad30fd9b71c9cc9d00d89eb7644869f57bda3e1e834a4fc28749b67b9537",
        );
        let s2c = h(
            "4020e765907f037df2000000016b06d852c271b5a3d0d8f2d228209125e3ab275b0604478669387787a2ecfe4a2c2275550b80c1ac61d64d76ef94aad15a2c025274",
        );
        let mut out = Vec::new();
        server.unwrap(&c2s, &mut out).expect("server accepts");
        assert_eq!(out, h("38ce8ab0b78b3fa99b 0000000000"));
        client.unwrap(&s2c, &mut out).expect("client accepts");
        assert_eq!(
            out,
            h("4020e765907f037df2 0100000000ce8ab0b78b3fa99b00000000")
        );
        assert!(client.unwrap(&c2s, &mut out).is_err());
        all_flips_rejected(&client, &s2c);
    }

    #[test]
    fn too_short() {
        let t = TlsCrypt::new(&static_key(UT_KEY), Role::Server);
        assert_eq!(
            t.unwrap(&[0u8; 48], &mut Vec::new()),
            Err(CryptoError::TooShort { len: 48, min: 49 })
        );
    }
}
