//! TCP stream reassembly in arbitrary chunks agrees with one-piece decoding.
//! The body is `openvpn_fuzz_targets::wire::tcp_stream::run`, shared with `cargo xtask fuzz-smoke`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| openvpn_fuzz_targets::wire::tcp_stream::run(data));
