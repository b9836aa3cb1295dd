//! TCP stream reassembly: feeding the input in arbitrary chunks gives the same packets (and
//! the same error) as decoding it in one piece, and re-framing the packets reproduces the
//! consumed bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openvpn_wire::tcp::decode_frame;
use openvpn_wire::{StreamDecoder, frame_tcp};

fuzz_target!(|input: &[u8]| {
    let Some((&ctl, data)) = input.split_first() else {
        return;
    };
    let max = usize::from(ctl) * 8 + 1;
    let chunk = usize::from(ctl % 17) + 1;

    // reference: stateless decoding of the whole buffer
    let mut want = Vec::new();
    let mut want_err = None;
    let mut at = 0;
    loop {
        match decode_frame(&data[at..], max) {
            Ok(Some((p, used))) => {
                want.push(p.to_vec());
                at += used;
            }
            Ok(None) => break,
            Err(e) => {
                want_err = Some(e);
                break;
            }
        }
    }

    let mut dec = StreamDecoder::new(max);
    let mut got = Vec::new();
    let mut got_err = None;
    'outer: for piece in data.chunks(chunk) {
        dec.push(piece);
        loop {
            match dec.next_packet() {
                Ok(Some(p)) => got.push(p),
                Ok(None) => break,
                Err(e) => {
                    got_err = Some(e);
                    break 'outer;
                }
            }
        }
    }
    assert_eq!(got, want);
    assert_eq!(got_err, want_err);
    if got_err.is_some() {
        assert_eq!(dec.next_packet(), Err(got_err.expect("set")));
    }

    let mut reframed = Vec::new();
    for p in &got {
        assert!(!p.is_empty() && p.len() <= max);
        frame_tcp(p, &mut reframed).expect("non-empty packets frame");
    }
    assert_eq!(&reframed[..], &data[..at]);
});
