//! Data-channel headers, compression framing and OCC round trips.
//! The body is `openvpn_fuzz_targets::wire::data::run`, shared with `cargo xtask fuzz-smoke`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| openvpn_fuzz_targets::wire::data::run(data));
