//! tls-auth: HMAC-authenticated control packets (`packets.md` §5.2).
//!
//! ```text
//! plain: op/key ‖ sid(8) ‖ body
//! wire:  op/key ‖ sid(8) ‖ HMAC(H) ‖ replay_id ‖ replay_time ‖ body
//! HMAC input: replay_id ‖ replay_time ‖ op/key ‖ sid ‖ body
//! ```

use crate::error::CryptoError;
use crate::hmac_key::{HmacKey, MAX_HMAC_LEN};
use crate::keys::{KeyDirection, StaticKey, block};
use crate::kinds::DigestKind;
use crate::replay::ReplayId;
use crate::wrap::{CONTROL_PREFIX, ControlWrap};

/// tls-auth wrapping with the `--auth` digest and `key-direction` of the configuration.
#[derive(Clone)]
pub struct TlsAuth {
    send: HmacKey,
    recv: HmacKey,
}

impl TlsAuth {
    /// Selects the HMAC keys of `key` for `dir` (first H bytes of the block's HMAC area).
    /// `DigestKind::None` is refused: tls-auth needs a digest.
    pub fn new(
        key: &StaticKey,
        dir: KeyDirection,
        digest: DigestKind,
    ) -> Result<Self, CryptoError> {
        let (s, r) = dir.blocks();
        let k = |i| {
            HmacKey::new(digest, block(key.as_bytes(), i).1)
                .ok_or(CryptoError::Unsupported("tls-auth with digest 'none'"))
        };
        Ok(Self {
            send: k(s)?,
            recv: k(r)?,
        })
    }

    fn hmac_len(&self) -> usize {
        self.send.len()
    }
}

impl std::fmt::Debug for TlsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsAuth(hmac {} bytes)", self.hmac_len())
    }
}

impl ControlWrap for TlsAuth {
    fn overhead(&self) -> usize {
        self.hmac_len() + 8
    }

    fn wrap(&self, plain: &[u8], replay: ReplayId, out: &mut Vec<u8>) {
        let (head, body) = plain.split_at(plain.len().min(CONTROL_PREFIX));
        let rid = replay.to_bytes();
        let h = self.hmac_len();
        let mut mac = [0u8; MAX_HMAC_LEN];
        self.send.sign_parts(&[&rid, head, body], &mut mac);
        out.clear();
        out.reserve(plain.len() + h + 8);
        out.extend_from_slice(head);
        out.extend_from_slice(&mac[..h]);
        out.extend_from_slice(&rid);
        out.extend_from_slice(body);
    }

    fn unwrap(&self, wire: &[u8], out: &mut Vec<u8>) -> Result<ReplayId, CryptoError> {
        out.clear();
        let h = self.hmac_len();
        let min = CONTROL_PREFIX + h + 8;
        if wire.len() < min {
            return Err(CryptoError::TooShort {
                len: wire.len(),
                min,
            });
        }
        let head = &wire[..CONTROL_PREFIX];
        let mac = &wire[CONTROL_PREFIX..CONTROL_PREFIX + h];
        let rid = &wire[CONTROL_PREFIX + h..min];
        let body = &wire[min..];
        if !self.recv.verify_parts(&[rid, head, body], mac) {
            return Err(CryptoError::BadAuth);
        }
        out.extend_from_slice(head);
        out.extend_from_slice(body);
        let mut r = [0u8; 8];
        r.copy_from_slice(rid);
        Ok(ReplayId::from_bytes(&r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls_crypt::tests::{UT_KEY, h, static_key};

    fn counting() -> StaticKey {
        StaticKey::from_bytes(std::array::from_fn(|i| i as u8))
    }

    fn all_flips_rejected(w: &impl ControlWrap, wire: &[u8]) {
        let mut out = Vec::new();
        for i in 0..wire.len() {
            let mut bad = wire.to_vec();
            bad[i] ^= 0x01;
            assert!(
                w.unwrap(&bad, &mut out).is_err(),
                "flip at byte {i} accepted"
            );
            assert!(out.is_empty());
        }
        assert!(w.unwrap(&wire[..wire.len() - 1], &mut out).is_err());
    }

    // test-vectors.md §2.2 [UT]
    #[test]
    fn unit_test_packet_direction_and_flips() {
        let key = static_key(UT_KEY);
        let wire = h(
            "38 de694c5c7bfba274 93537c1ded4e781529ae7cfe4b8c6d6b2b51f05a
                      00000001 61d3bf6c 00 00000000",
        );
        let server = TlsAuth::new(&key, KeyDirection::Normal, DigestKind::Sha1).expect("key");
        let wrong = TlsAuth::new(&key, KeyDirection::Inverse, DigestKind::Sha1).expect("key");
        let mut out = Vec::new();
        let r = server.unwrap(&wire, &mut out).expect("server kd 0 accepts");
        assert_eq!(
            r,
            ReplayId {
                id: 1,
                time: 0x61d3bf6c
            }
        );
        assert_eq!(out, h("38 de694c5c7bfba274 00 00000000"));
        assert_eq!(wrong.unwrap(&wire, &mut out), Err(CryptoError::BadAuth));
        all_flips_rejected(&server, &wire);
        // and the client (kd 1) produces exactly this packet
        let mut again = Vec::new();
        wrong.wrap(&h("38 de694c5c7bfba274 00 00000000"), r, &mut again);
        assert_eq!(again, wire);
        assert_eq!(server.overhead(), 28);
    }

    // test-vectors.md §5 [DER]
    #[test]
    fn deterministic_packets() {
        let plain = h("38 0102030405060708 00 00000000");
        let rid = ReplayId {
            id: 1,
            time: 0x6400_0000,
        };
        let mut out = Vec::new();
        let kd1 = TlsAuth::new(&counting(), KeyDirection::Inverse, DigestKind::Sha1).expect("key");
        kd1.wrap(&plain, rid, &mut out);
        assert_eq!(
            out,
            h(
                "380102030405060708f403ec5dfc655e58e8753ae94871e539dd01755000000001640000000000000000"
            )
        );
        let bi =
            TlsAuth::new(&counting(), KeyDirection::Bidirectional, DigestKind::Sha1).expect("key");
        bi.wrap(&plain, rid, &mut out);
        assert_eq!(
            out,
            h(
                "380102030405060708ce425c58496ac016015fe0c87f4ded0f6a0f2c0100000001640000000000000000"
            )
        );
        let mut back = Vec::new();
        assert_eq!(bi.unwrap(&out, &mut back), Ok(rid));
        assert_eq!(back, plain);
    }

    // test-vectors.md §7 [IOP]: tls-auth resets with ta.key, client kd 1 / server kd 0.
    #[test]
    fn live_session_2_resets() {
        let key = static_key(crate::tls_crypt::tests::LIVE_TA_KEY);
        let server = TlsAuth::new(&key, KeyDirection::Normal, DigestKind::Sha1).expect("key");
        let client = TlsAuth::new(&key, KeyDirection::Inverse, DigestKind::Sha1).expect("key");
        let c2s = h(
            "38d8ef5aa1cde9b37930ee77c0edd05a6f2bdfc1a2e7fc3d8352cd2992000000016b06d86b0000000000",
        );
        let s2c = h(
            "40628d8ebf86a41e705b451557ee65818d407cb27982ec6b946d440ebe000000016b06d86b0100000000d8ef5aa1cde9b37900000000",
        );
        let mut out = Vec::new();
        assert!(server.unwrap(&c2s, &mut out).is_ok());
        assert_eq!(out, h("38d8ef5aa1cde9b379 0000000000"));
        assert!(client.unwrap(&c2s, &mut out).is_err());
        let r = client
            .unwrap(&s2c, &mut out)
            .expect("client accepts server reset");
        assert_eq!(
            r,
            ReplayId {
                id: 1,
                time: 0x6b06d86b
            }
        );
        assert_eq!(
            out,
            h("40628d8ebf86a41e70 0100000000d8ef5aa1cde9b37900000000")
        );
        assert!(server.unwrap(&s2c, &mut out).is_err());
        all_flips_rejected(&client, &s2c);
    }

    #[test]
    fn none_digest_refused() {
        assert!(TlsAuth::new(&counting(), KeyDirection::Normal, DigestKind::None).is_err());
    }
}
