//! Arbitrary datagrams, timer steps and commands into client and server sessions, and a
//! client ↔ server pair over a hostile link: never panics, keys agree.
//! The body is `openvpn_fuzz_targets::control_session::run`, shared with `cargo xtask fuzz-smoke`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| openvpn_fuzz_targets::control_session::run(data));
