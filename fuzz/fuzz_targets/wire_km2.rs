//! Key-method-2 messages: parse never panics; parse → emit → parse is the identity.
//! The body is `openvpn_fuzz_targets::wire::km2::run`, shared with `cargo xtask fuzz-smoke`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| openvpn_fuzz_targets::wire::km2::run(data));
