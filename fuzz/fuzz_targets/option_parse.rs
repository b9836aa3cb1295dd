//! Config files, command lines and PUSH_REPLY: never panics; render → parse round trips.
//! The body is `openvpn_fuzz_targets::option_parse::run`, shared with `cargo xtask fuzz-smoke`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| openvpn_fuzz_targets::option_parse::run(data));
