//! Decompression of what a compressing peer sends (LZO1X, LZ4 blocks), raw and framed as
//! `comp-lzo`, `compress lz4` and `compress lz4-v2` frame it. Beyond "never panics": a stream
//! that decodes decodes the same into a buffer of exactly its length and is refused with one
//! byte less (the limit is exact, never a silent truncation), and an uncompressed packet
//! re-framed with our own (never compressing) sending side unframes to the same payload.

use openvpn_wire::{Algorithm, CompressionFraming, Unframed};

/// Room for any payload a stream can produce here (the data channel allows far less).
const ROOM: usize = 64 * 1024;

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    let mut out = vec![0u8; ROOM];
    for alg in [Algorithm::Lzo, Algorithm::Lz4] {
        check_limits(alg, data, &mut out);
    }
    for f in [
        CompressionFraming::Lzo,
        CompressionFraming::Lz4,
        CompressionFraming::Lz4V2,
    ] {
        let mut pkt = data.to_vec();
        match f.unframe(&mut pkt) {
            Ok(Unframed::Compressed { algorithm, body }) => {
                assert_eq!(Some(algorithm), f.decompresses());
                let body = body.to_vec();
                check_limits(algorithm, &body, &mut out);
            }
            Ok(Unframed::Plain(payload)) => {
                let payload = payload.to_vec();
                let mut again = payload.clone();
                f.encap(&mut again);
                match f.unframe(&mut again) {
                    Ok(Unframed::Plain(p)) => assert_eq!(p, &payload[..], "{f:?}"),
                    other => panic!("{f:?}: our own framing unframes to {other:?}"),
                }
            }
            Err(_) => {}
        }
    }
}

fn check_limits(alg: Algorithm, input: &[u8], out: &mut [u8]) {
    let Ok(n) = alg.decompress(input, out) else {
        return;
    };
    assert!(n > 0 && n <= out.len(), "{alg}: {n} bytes");
    let mut exact = vec![0u8; n];
    assert_eq!(
        alg.decompress(input, &mut exact),
        Ok(n),
        "{alg}: exact room"
    );
    assert_eq!(&exact[..], &out[..n], "{alg}: same payload");
    assert!(
        alg.decompress(input, &mut exact[..n - 1]).is_err(),
        "{alg}: one byte short must be refused"
    );
}

/// The reference streams of openvpn-wire (liblzo2 / liblz4, `scripts/compress-vectors.py`),
/// raw and framed for each compressed framing.
pub fn seed_inputs(fuzz_dir: &std::path::Path) -> Vec<Vec<u8>> {
    let dir = fuzz_dir.join("../crates/openvpn-wire/testdata/compress");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    names.sort();
    let mut out = Vec::new();
    for path in names {
        let Ok(z) = std::fs::read(&path) else {
            continue;
        };
        if z.is_empty() || z.len() > 4096 {
            continue;
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext.starts_with("lzo") {
            out.push([&[0x66u8][..], &z].concat());
        } else {
            out.push([&[0x69u8][..], &z[1..], &z[..1]].concat());
            out.push([&[0x50u8, 0x01][..], &z].concat());
        }
        out.push(z);
    }
    out
}
