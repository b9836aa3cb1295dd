//! Known-answer and property tests of the data channel, run against every AEAD backend.

use super::*;
use crate::prf::derive_key2_prf;
use crate::tls_crypt::tests::h;
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const PING: &str = "2a187bf3641eb4cb07ed2d0a981fc748";

fn counting_key2() -> KeyBlock {
    KeyBlock::from_bytes(std::array::from_fn(|i| i as u8))
}

fn key2(s: &str) -> KeyBlock {
    let mut b = [0u8; 256];
    b.copy_from_slice(&h(s));
    KeyBlock::from_bytes(b)
}

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(1)
}

/// An RNG that returns a constant byte (fixed CBC IVs for the known-answer test).
struct Fixed(u8);
impl rand_core::RngCore for Fixed {
    fn next_u32(&mut self) -> u32 {
        u32::from_ne_bytes([self.0; 4])
    }
    fn next_u64(&mut self) -> u64 {
        u64::from_ne_bytes([self.0; 8])
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.fill(self.0);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        dest.fill(self.0);
        Ok(())
    }
}
impl CryptoRng for Fixed {}

fn pair(
    b: AeadBackend,
    c: CipherKind,
    d: DigestKind,
    k: &KeyBlock,
) -> [(DataSealer, DataOpener); 2] {
    let cl = DataKeys::with_backend(b, c, d, k, Role::Client).expect("client keys");
    let sv = DataKeys::with_backend(b, c, d, k, Role::Server).expect("server keys");
    [cl, sv]
}

/// Seals `payload` and checks the packet, then opens it with the peer and checks the result.
fn seal_check_open(
    sealer: &mut DataSealer,
    opener: &mut DataOpener,
    header: &[u8],
    payload: &[u8],
    expected: &[u8],
) {
    let mut buf = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, payload);
    sealer
        .seal(header, &mut buf, &mut Fixed(0xaa))
        .expect("seal");
    assert_eq!(hex::encode(buf.as_slice()), hex::encode(expected));
    let mut wire = expected.to_vec();
    assert_eq!(opener.open(&mut wire, 0).expect("open"), payload);
    let mut wire = expected.to_vec();
    assert_eq!(opener.open(&mut wire, 0), Err(DataError::Replay));
}

// test-vectors.md §4 [DER]
#[test]
fn aead_known_answers_every_backend() {
    let k = counting_key2();
    let ping = h(PING);
    let v2 = h("48000005");
    for &b in AeadBackend::ALL {
        let [(mut cs, mut co), (mut ss, mut so)] =
            pair(b, CipherKind::Aes256Gcm, DigestKind::Sha1, &k);
        seal_check_open(
            &mut cs,
            &mut so,
            &v2,
            &ping,
            &h("4800000500000001ec453d1dbd9f22d610a3a7300856dd03e1d3004e0fa812021253797dec29cf6b"),
        );
        seal_check_open(
            &mut ss,
            &mut co,
            &v2,
            &ping,
            &h("48000005000000014733b9b60b56cf3ada0169d9be9a4594935c53e2eadd3824275aa3759531edf7"),
        );

        let [(mut cs, _), (_, mut so)] =
            pair(b, CipherKind::ChaCha20Poly1305, DigestKind::None, &k);
        seal_check_open(
            &mut cs,
            &mut so,
            &v2,
            &ping,
            &h("4800000500000001a4bd54f14db41cd9fa79bd54cbf1e6b8249c493797b2d7f5945bcaf9ded73aa2"),
        );

        let [(mut cs, _), (_, mut so)] = pair(b, CipherKind::Aes128Gcm, DigestKind::Sha1, &k);
        seal_check_open(
            &mut cs,
            &mut so,
            &[0x30],
            &ping,
            &h("300000000110438b3eeb8b95a32b00e79f37623d20f81b8714b8cd8e5b853004a780a8bde5"),
        );
    }
}

// test-vectors.md §4.1 [DER]
#[test]
fn cbc_known_answer() {
    let [(mut cs, _), (_, mut so)] = pair(
        AeadBackend::Ring,
        CipherKind::Aes256Cbc,
        DigestKind::Sha1,
        &counting_key2(),
    );
    let pkt = h(
        "30 fe2a756e4bccd13db0946cd11ddff569afe5c014 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
                 ef193c4b7b4ef0e1177a65f8bf6c9aa11fbfce2177c4e13b5807d847bcbc1a40",
    );
    seal_check_open(&mut cs, &mut so, &[0x30], &h(PING), &pkt);
}

const LIVE1_KEY2: &str = "
    5770dc454bd38b126b114fdc1656cdea53c761dae69e8abf7c13a99c90578e57
    9939d9cdb905c7e7c3de70772010bfaff59288fac19d8b188265841ecfa2c69e
    730d27d2100c8b7f31e0a7995f4f5888a21b9582ef4cbd964ecd2031e2f58496
    737a0a3c6b65c47d5b0f8b13b9f7d6075c041ff5caea1bb2d1942727634524b1
    206f70fe8ecce679d0dc1f46d771acbc354d9a6f8bb5e9a426be47dd5502b8bc
    fcc78b04837498c07bd336dae60c3af30e757b54c9edc2845c4f4e8740305691
    2d372dcd4bf9965b9de579ee811f10b8544c0564fd172e9c901d241a40a8bdd4
    9b12844115f26242d1c4e72ed380b6e8102f89451d57fe785f0ab588eca14bc3";

fn arr<const N: usize>(s: &str) -> [u8; N] {
    h(s).try_into().expect("test vector length")
}

// test-vectors.md §6 [IOP]
#[test]
fn live_session_1_prf_and_data() {
    let k = derive_key2_prf(
        &arr(
            "87a325212e5b0976bec2338e45241e8d59e673e113ccf0fcb0cb349013ea98a0105969fa26168b42bcddf8e9163c4c75",
        ),
        &arr("da796b1cb2546ddba2fd6452c365e5d0b823dfc30593570dc5ccc750a8b009d7"),
        &arr("08712dff57d40bc7c1d9523c7f87e5575d793b2ca5cd089c50f591507bf5c41a"),
        &arr("c0823af7c75dec7b67da4b313391a0e2568af297ddd3d23368a3ad3bbb16bc4c"),
        &arr("b6dd278304d351a826ff1003843b1dfd683466e198f1c956f44da7b9815e3a12"),
        &arr("ce8ab0b78b3fa99b"),
        &arr("20e765907f037df2"),
    );
    assert_eq!(k.as_bytes()[..], key2(LIVE1_KEY2).as_bytes()[..]);
    for &b in AeadBackend::ALL {
        let [(_, mut client_rx), (_, mut server_rx)] =
            pair(b, CipherKind::Aes256Gcm, DigestKind::Sha1, &k);
        let mut s2c = h(
            "4800000000000001b0a1ff7e705bdf8da57c2a775abf3f74222ef243aaad184fb81d71b108c6675bb14073832d63eea13dc2011a3f15af56f0917aed48df9525d5a7609a41f0bd7f",
        );
        assert_eq!(
            client_rx
                .open(&mut s2c, 0)
                .expect("client opens server packet"),
            &h(
                "6000000000083afffe800000000000006817b214f6f6d710ff0200000000000000000000000000028500950300000000"
            )[..]
        );
        let mut c2s =
            h("4800000000000001c6af1c4f45f9a02f42021359dae25836b813926e20129242a67ddb0cdfc9c9dc");
        assert_eq!(
            server_rx.open(&mut c2s, 0).expect("server opens ping"),
            &h(PING)[..]
        );
        // wrong direction fails
        let [(_, mut client_rx), _] = pair(b, CipherKind::Aes256Gcm, DigestKind::Sha1, &k);
        let mut c2s =
            h("4800000000000001c6af1c4f45f9a02f42021359dae25836b813926e20129242a67ddb0cdfc9c9dc");
        assert_eq!(client_rx.open(&mut c2s, 0), Err(DataError::BadTag));
    }
}

// test-vectors.md §7 [IOP]
#[test]
fn live_session_2_prf_and_cbc_ping() {
    let k = derive_key2_prf(
        &arr(
            "c564b1caafd58bbfa88ec34f83d97f4d2f6210498b09c5e1c79555c3b168777aa51b01f38d39090fc037c6d5eb74c466",
        ),
        &arr("720e0ea3974372f31fa9ddf465dbb9987c9109c20c1d2b5d596f093f68c5d676"),
        &arr("2838e9f8f56ecec7bbbd59048d26c8f3d8efcc31aa567ed5def871a6dfb93c2f"),
        &arr("abe3dabbbaacb2cf0a1acec86e44e6bcbba67f1eaecd2b89e379cd9eb4d82130"),
        &arr("f118fe4edc2df85e905885526a83575c1c00f6d2052a68b47a36398f068d8e4c"),
        &arr("d8ef5aa1cde9b379"),
        &arr("628d8ebf86a41e70"),
    );
    assert_eq!(
        hex::encode(&k.as_bytes()[128..160]),
        "6860e189476115a05efa19f2254e9102514ec3d2fa39dd90a23ccf85fed80160"
    );
    assert_eq!(
        hex::encode(&k.as_bytes()[192..212]),
        "6e6e6d71ac9cef5db185b26d54f34824a4e2ebf7"
    );
    let [(_, mut client_rx), (_, mut server_rx)] = pair(
        AeadBackend::Ring,
        CipherKind::Aes256Cbc,
        DigestKind::Sha1,
        &k,
    );
    let ping = h(
        "3025395b62d995702d11b1635fa7fd09956fa34315bb030d5e2fe86bf54d9a82f93e4e7c153812a5eba33007773ac0a50d132e4c567b10149066f78792e75caa4c2768c4a2",
    );
    assert_eq!(
        client_rx
            .open(&mut ping.clone(), 0)
            .expect("client opens server ping"),
        &h(PING)[..]
    );
    assert_eq!(server_rx.open(&mut ping.clone(), 0), Err(DataError::BadTag));
    for i in 0..ping.len() {
        let mut bad = ping.clone();
        bad[i] ^= 0x10;
        let mut fresh = pair(
            AeadBackend::Ring,
            CipherKind::Aes256Cbc,
            DigestKind::Sha1,
            &k,
        );
        let r = fresh[0].1.open(&mut bad, 0);
        if i == 0 {
            assert_eq!(r, Err(DataError::BadOpcode));
        } else {
            assert_eq!(r, Err(DataError::BadTag), "flip at {i}");
        }
    }
}

#[test]
fn packet_id_exhaustion_and_renegotiation() {
    let [(mut s, _), _] = pair(
        AeadBackend::Ring,
        CipherKind::Aes256Gcm,
        DigestKind::None,
        &counting_key2(),
    );
    assert!(!s.needs_renegotiation());
    s.set_next_packet_id(0xFF00_0000);
    assert!(s.needs_renegotiation());
    s.set_next_packet_id(u32::MAX);
    let mut buf = PacketBuf::from_payload(32, b"x");
    assert_eq!(s.seal(&[0x30], &mut buf, &mut rng()), Ok(u32::MAX));
    let mut buf = PacketBuf::from_payload(32, b"x");
    assert_eq!(
        s.seal(&[0x30], &mut buf, &mut rng()),
        Err(DataError::PacketIdExhausted)
    );
    assert_eq!(
        s.seal(&[0x30, 0], &mut buf, &mut rng()),
        Err(DataError::BadHeader)
    );
}

#[test]
fn zero_key_and_bad_input() {
    let zero = KeyBlock::from_bytes([0; 256]);
    assert!(matches!(
        DataKeys::new(CipherKind::Aes256Gcm, DigestKind::None, &zero, Role::Client),
        Err(CryptoError::ZeroKey(_))
    ));
    let [(_, mut o), _] = pair(
        AeadBackend::Ring,
        CipherKind::Aes256Gcm,
        DigestKind::None,
        &counting_key2(),
    );
    assert_eq!(o.open(&mut [], 0), Err(DataError::TooShort));
    assert_eq!(o.open(&mut [0x48, 0], 0), Err(DataError::TooShort));
    assert_eq!(o.open(&mut [0x20; 40], 0), Err(DataError::BadOpcode));
    assert_eq!(o.open(&mut [0x30; 20], 0), Err(DataError::TooShort));
    let mut zero_id = [0u8; 40];
    zero_id[0] = 0x30;
    assert_eq!(o.open(&mut zero_id, 0), Err(DataError::Replay));
}

#[test]
fn small_headroom_and_open_buf() {
    let [(s, _), (_, mut o)] = pair(
        AeadBackend::Ring,
        CipherKind::Aes256Cbc,
        DigestKind::Sha256,
        &counting_key2(),
    );
    let mut buf = PacketBuf::from_payload(0, b"hello");
    s.seal(&[0x48, 0, 0, 1], &mut buf, &mut rng())
        .expect("seal");
    assert!(buf.len() <= 5 + s.overhead(4));
    o.open_buf(&mut buf, 0).expect("open");
    assert_eq!(buf.as_slice(), b"hello");
}

const ALL_CIPHERS: [CipherKind; 7] = [
    CipherKind::Aes128Gcm,
    CipherKind::Aes256Gcm,
    CipherKind::ChaCha20Poly1305,
    CipherKind::Aes128Cbc,
    CipherKind::Aes192Cbc,
    CipherKind::Aes256Cbc,
    CipherKind::None,
];

fn configs() -> Vec<(AeadBackend, CipherKind, DigestKind)> {
    let mut v = Vec::new();
    for &b in AeadBackend::ALL {
        for c in ALL_CIPHERS {
            if !c.is_aead() && b != AeadBackend::Ring {
                continue; // backend choice only affects AEAD ciphers
            }
            for d in [DigestKind::Sha1, DigestKind::Sha512] {
                v.push((b, c, d));
            }
        }
        #[cfg(feature = "rustcrypto")]
        if b == AeadBackend::RustCrypto {
            v.push((b, CipherKind::Aes192Gcm, DigestKind::None));
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn open_of_seal_is_identity_and_flips_fail(
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        v2 in any::<bool>(),
        flip_at in any::<prop::sample::Index>(),
        flip_bit in 0u8..8,
        seed in any::<u64>(),
    ) {
        let mut r = ChaCha20Rng::seed_from_u64(seed);
        let mut key = [0u8; 256];
        rand_core::RngCore::fill_bytes(&mut r, &mut key);
        let k = KeyBlock::from_bytes(key);
        let header: &[u8] = if v2 { &[0x48, 0, 0, 7] } else { &[0x31] };
        for (b, c, d) in configs() {
            let [(s, _), (_, mut o)] = pair(b, c, d, &k);
            let mut buf = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, &payload);
            s.seal(header, &mut buf, &mut r).expect("seal");
            let wire = buf.as_slice().to_vec();
            let mut bad = wire.clone();
            let i = flip_at.index(bad.len());
            bad[i] ^= 1 << flip_bit;
            let integrity = c != CipherKind::None || d != DigestKind::None;
            // Only AEAD with DATA_V2 authenticates the header (data.md §3.1, §4.1); elsewhere
            // a header flip that keeps the opcode goes unnoticed by design.
            let header_authenticated = c.is_aead() && v2;
            let unauthenticated =
                i < header.len() && !header_authenticated && (bad[0] >> 3) == (wire[0] >> 3);
            if integrity && !unauthenticated {
                prop_assert!(o.open(&mut bad, 0).is_err(), "{:?} {:?} flip {} accepted", b, c, i);
            }
            let mut ok = wire.clone();
            prop_assert_eq!(o.open(&mut ok, 0).expect("open"), &payload[..]);
            // and the same packet again is a replay
            let mut again = wire.clone();
            prop_assert_eq!(o.open(&mut again, 0), Err(DataError::Replay));
        }
    }
}

#[test]
fn a_shared_sealer_never_reuses_a_packet_id_across_threads() {
    fn shareable<T: Send + Sync>(_: &T) {}
    for cipher in [CipherKind::Aes256Gcm, CipherKind::Aes128Cbc] {
        let [(s, _), (_, mut o)] = pair(
            AeadBackend::Ring,
            cipher,
            DigestKind::Sha256,
            &counting_key2(),
        );
        shareable(&s);
        let s = std::sync::Arc::new(s);
        const PER_THREAD: usize = 2000;
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let s = std::sync::Arc::clone(&s);
                std::thread::spawn(move || {
                    let mut rng = ChaCha20Rng::seed_from_u64(t);
                    (0..PER_THREAD)
                        .map(|i| {
                            let mut b = PacketBuf::from_payload(32, &i.to_be_bytes());
                            let id = s.seal(&[0x30], &mut b, &mut rng).unwrap();
                            (id, b.as_slice().to_vec())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<(u32, Vec<u8>)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort_by_key(|(id, _)| *id);
        let ids: Vec<u32> = all.iter().map(|(id, _)| *id).collect();
        let expect: Vec<u32> = (1..=(4 * PER_THREAD) as u32).collect();
        assert_eq!(ids, expect, "{cipher:?}: every id exactly once");
        assert_eq!(s.next_packet_id(), 4 * PER_THREAD as u64 + 1);
        // In id order every packet opens (a reused id would be refused as a replay).
        for (id, mut wire) in all {
            assert!(o.open(&mut wire, 0).is_ok(), "{cipher:?}: packet {id}");
        }
    }
}
