//! Data-channel open on arbitrary bytes with fixed keys; seal → open round trip; flipped
//! bits never open.
//! The body is `openvpn_fuzz_targets::data_open::run`, shared with `cargo xtask fuzz-smoke`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| openvpn_fuzz_targets::data_open::run(data));
