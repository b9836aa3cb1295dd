//! Seal/open throughput per cipher and backend for 64/512/1400-byte payloads, plus the
//! replay window. Run: `cargo bench -p openvpn-crypto [--features rustcrypto]`.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use openvpn_crypto::{
    AeadBackend, CipherKind, DataKeys, DigestKind, KeyBlock, PacketBuf, ReplayWindow, Role,
};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use std::hint::black_box;

const SIZES: [usize; 3] = [64, 512, 1400];
const HEADER: [u8; 4] = [0x48, 0, 0, 1];

fn key() -> KeyBlock {
    KeyBlock::from_bytes(std::array::from_fn(|i| (i as u8) | 1))
}

fn configs() -> Vec<(AeadBackend, CipherKind)> {
    let mut v = Vec::new();
    for &b in AeadBackend::ALL {
        for c in [
            CipherKind::Aes128Gcm,
            CipherKind::Aes256Gcm,
            CipherKind::ChaCha20Poly1305,
        ] {
            v.push((b, c));
        }
    }
    v.push((AeadBackend::Ring, CipherKind::Aes256Cbc));
    v
}

fn seal_open(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    for (backend, cipher) in configs() {
        let name = format!("{}/{}", cipher.name(), backend.name());
        let mut g = c.benchmark_group(name);
        for size in SIZES {
            g.throughput(Throughput::Bytes(size as u64));
            let (sealer, _) =
                DataKeys::with_backend(backend, cipher, DigestKind::Sha1, &key(), Role::Client)
                    .expect("keys");
            let (_, mut opener) =
                DataKeys::with_backend(backend, cipher, DigestKind::Sha1, &key(), Role::Server)
                    .expect("keys");
            let payload = vec![0x5au8; size];
            let mut buf = PacketBuf::new(PacketBuf::DEFAULT_HEADROOM, 2048);
            g.bench_with_input(BenchmarkId::new("seal", size), &size, |b, _| {
                b.iter(|| {
                    buf.clear(PacketBuf::DEFAULT_HEADROOM);
                    buf.extend_from_slice(&payload);
                    sealer.seal(&HEADER, &mut buf, &mut rng).expect("seal");
                    black_box(buf.len())
                })
            });
            // Open: seal a batch of fresh packets, open each once (replay window stays valid).
            let mut wire = Vec::new();
            g.bench_with_input(BenchmarkId::new("open", size), &size, |b, _| {
                b.iter_batched_ref(
                    || {
                        buf.clear(PacketBuf::DEFAULT_HEADROOM);
                        buf.extend_from_slice(&payload);
                        sealer.seal(&HEADER, &mut buf, &mut rng).expect("seal");
                        wire.clear();
                        wire.extend_from_slice(buf.as_slice());
                        wire.clone()
                    },
                    |w| black_box(opener.open(w, 0).expect("open").len()),
                    criterion::BatchSize::SmallInput,
                )
            });
        }
        g.finish();
    }
}

fn replay(c: &mut Criterion) {
    c.bench_function("replay/in_order", |b| {
        let mut w = ReplayWindow::new(64, 15);
        let mut id = 0u32;
        b.iter(|| {
            id = id.wrapping_add(1).max(1);
            if w.check(id, 0) {
                w.mark(id, 0, u64::from(id >> 20));
            }
        })
    });
    c.bench_function("replay/reordered", |b| {
        let mut w = ReplayWindow::new(64, 15);
        let mut id = 100u32;
        b.iter(|| {
            id += 2;
            for i in [id, id - 3] {
                if w.check(i, 0) {
                    w.mark(i, 0, 0);
                }
            }
        })
    });
}

criterion_group!(benches, seal_open, replay);
criterion_main!(benches);
