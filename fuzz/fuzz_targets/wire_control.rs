//! Plain control packets: parse/emit round trip, checked view agrees with parse.
//! The body is `openvpn_fuzz_targets::wire::control::run`, shared with `cargo xtask fuzz-smoke`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| openvpn_fuzz_targets::wire::control::run(data));
