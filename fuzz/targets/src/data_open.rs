//! The data channel with fixed keys: opening arbitrary bytes never panics; sealing the input
//! as a payload and opening it gives it back; a flipped bit never opens and does not burn
//! the packet ID (the original still opens afterwards).
//!
//! Keys: the live session 2 key block of `test-vectors.md` §7 (AES-256-CBC + HMAC-SHA1,
//! DATA_V1, so its captured server ping opens as the client) and fixed blocks for AEAD
//! ciphers with DATA_V2.

use std::time::Instant;

use openvpn_control::dataplane::{DataChannel, Payload};
use openvpn_crypto::{CipherKind, DigestKind, KeyBlock, PacketBuf, Role};
use openvpn_wire::{CompressionFraming, KeyId};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// key2 of live session 2 (`test-vectors.md` §7).
const LIVE2_KEY2: &str = concat!(
    "c0109ec61fd36d7111de2ba11eee86c7b00475f454da3ad86ba770e79951775f",
    "00ea65cd9b0213a11dc387b0e07d3128ff9b94535b17b0fce5d0a26812fc71dd",
    "5c300fa630666bc1080be3e050999144fac035056d3bc956fa33154816cbc906",
    "5153aebe8398c32e8bed9d1abbc5bb6fa236ec1ecbcf480b0c095c348a594a50",
    "6860e189476115a05efa19f2254e9102514ec3d2fa39dd90a23ccf85fed80160",
    "af64e5bd562afedd5a8420d7d2c56c09643700aea92760dc5b6888edfce88010",
    "6e6e6d71ac9cef5db185b26d54f34824a4e2ebf7e11fe2c3cd95b252978e541d",
    "f7e3510666bb9f61d4ed5ca80f79339a6fc0a986b3bce62d9384af8501bc55ca",
);

/// Unix seconds given to the replay window.
const NOW_SECS: u64 = 1_700_000_000;

fn live2_key() -> KeyBlock {
    let mut k = [0u8; 256];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&LIVE2_KEY2[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    KeyBlock::from_bytes(k)
}

fn fixed_key(fill: u8) -> KeyBlock {
    let mut k = [0u8; 256];
    for (i, b) in k.iter_mut().enumerate() {
        *b = (i as u8) ^ fill;
    }
    KeyBlock::from_bytes(k)
}

/// (cipher, framing, peer-id, key block) of one sender/receiver pair.
fn setups() -> [(CipherKind, CompressionFraming, Option<u32>, KeyBlock); 5] {
    [
        (
            CipherKind::Aes256Cbc,
            CompressionFraming::None,
            None,
            live2_key(),
        ),
        (
            CipherKind::Aes256Gcm,
            CompressionFraming::None,
            Some(7),
            fixed_key(0x5a),
        ),
        (
            CipherKind::ChaCha20Poly1305,
            CompressionFraming::StubV2,
            Some(0x00ff_ffff),
            fixed_key(0xa5),
        ),
        (
            CipherKind::Aes128Gcm,
            CompressionFraming::Stub,
            None,
            fixed_key(0x11),
        ),
        (
            CipherKind::Aes256Gcm,
            CompressionFraming::Lzo,
            Some(3),
            fixed_key(0x33),
        ),
    ]
}

fn channel(
    role: Role,
    cipher: CipherKind,
    framing: CompressionFraming,
    peer_id: Option<u32>,
    key: &KeyBlock,
    now: Instant,
) -> DataChannel {
    let mut dc = DataChannel::new(role, DigestKind::Sha1, framing, peer_id);
    dc.install(now, KeyId::ZERO, cipher, key)
        .expect("fixed keys install");
    dc
}

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    let now = Instant::now();
    let mut rng = ChaCha20Rng::seed_from_u64(u64::from(data.first().copied().unwrap_or(0)));
    for (cipher, framing, peer_id, key) in setups() {
        // Arbitrary bytes into both roles.
        for role in [Role::Client, Role::Server] {
            let mut rx = channel(role, cipher, framing, peer_id, &key, now);
            let mut buf = data.to_vec();
            if let Ok(p) = rx.open(now, NOW_SECS, &mut buf) {
                let r = match p {
                    Payload::Ip(r) | Payload::Occ(r) => r,
                    Payload::Ping => 0..0,
                    Payload::Decompressed => {
                        assert!(!rx.decompressed().is_empty());
                        0..0
                    }
                };
                assert!(r.end <= buf.len());
            }
        }

        // Seal the input as a payload, open it on the other side.
        let mut tx = channel(Role::Client, cipher, framing, peer_id, &key, now);
        let mut rx = channel(Role::Server, cipher, framing, peer_id, &key, now);
        let payload = &data[..data.len().min(1500)];
        let mut b = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, payload);
        if tx.seal(now, &mut b, &mut rng).is_err() {
            continue;
        }
        let wire = b.as_slice().to_vec();

        // A flipped bit (after the header for CBC, whose op/peer-id byte is not
        // authenticated) never opens and does not burn the packet ID.
        let header = if cipher.is_aead() { 0 } else { 1 };
        if wire.len() * 8 > header * 8 {
            let span = wire.len() * 8 - header * 8;
            let bit = header * 8
                + (usize::from(data.get(1).copied().unwrap_or(0)) * 131 + data.len()) % span;
            let mut bad = wire.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                rx.open(now, NOW_SECS, &mut bad).is_err(),
                "{cipher:?}: packet with bit {bit} flipped opened"
            );
        }

        let mut good = wire.clone();
        let opened = rx
            .open(now, NOW_SECS, &mut good)
            .unwrap_or_else(|e| panic!("{cipher:?}: sealed packet does not open: {e:?}"));
        match opened {
            Payload::Ip(r) | Payload::Occ(r) => assert_eq!(&good[r], payload),
            Payload::Ping => assert_eq!(payload, openvpn_wire::PING_MAGIC),
            Payload::Decompressed => panic!("{cipher:?}: nothing was compressed"),
        }
        // The same packet again is a replay.
        let mut again = wire.clone();
        assert!(
            rx.open(now, NOW_SECS, &mut again).is_err(),
            "{cipher:?}: replay opened"
        );
    }
}

/// Packets sealed with each fixed key: an IP-like packet, a ping, an empty payload.
pub fn seed_inputs() -> Vec<Vec<u8>> {
    let now = Instant::now();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut out = vec![];
    for (cipher, framing, peer_id, key) in setups() {
        let mut tx = channel(Role::Client, cipher, framing, peer_id, &key, now);
        let ip = [
            0x45u8, 0, 0, 20, 0, 0, 0, 0, 64, 1, 0, 0, 10, 8, 0, 2, 10, 8, 0, 1,
        ];
        for payload in [&ip[..], &openvpn_wire::PING_MAGIC[..], &[]] {
            let mut b = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, payload);
            if tx.seal(now, &mut b, &mut rng).is_ok() {
                out.push(b.as_slice().to_vec());
            }
        }
    }
    out
}
