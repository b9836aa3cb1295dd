//! LZO1X / LZ4 decompression and the compressed framings (exact size limit, own framing
//! round trip). The body is `openvpn_fuzz_targets::decompress::run`, shared with
//! `cargo xtask fuzz-smoke`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| openvpn_fuzz_targets::decompress::run(data));
