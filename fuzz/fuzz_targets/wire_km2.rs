//! Key-method-2 messages: parse never panics and consumes at most the input; parse → emit →
//! parse is the identity.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openvpn_wire::{KeyMethod2, WireError};

fuzz_target!(|input: &[u8]| {
    let Some((&ctl, data)) = input.split_first() else {
        return;
    };
    let from_client = ctl & 1 == 1;
    let Ok((msg, used)) = KeyMethod2::parse(data, from_client) else {
        return;
    };
    assert!(used <= data.len());
    assert_eq!(msg.is_from_client(), from_client);
    let mut out = Vec::new();
    msg.emit(&mut out);
    assert_eq!(out.len(), msg.buffer_len());
    match KeyMethod2::parse(&out, from_client) {
        Ok((again, n)) => {
            assert_eq!(n, out.len());
            assert_eq!(again, msg);
        }
        // invalid UTF-8 in the options string is replaced by U+FFFD (3 bytes), which can
        // push a re-emitted string past the 512-byte limit
        Err(WireError::OptionsTooLong(_)) => assert!(msg.options.contains('\u{FFFD}')),
        Err(e) => panic!("re-parse of own output failed: {e}"),
    }
});
