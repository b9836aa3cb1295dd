//! Plain control packets: parse → emit must reproduce the input exactly, the checked view
//! must agree with the parsed packet, and the body parser must agree with the plain parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openvpn_wire::control::HEADER_LEN;
use openvpn_wire::{ControlPacket, ControlPacketView, peek_session_id};

fuzz_target!(|data: &[u8]| {
    let _ = openvpn_wire::parse_early_neg_flags(data);
    let Ok(pkt) = ControlPacket::parse(data) else {
        return;
    };
    // parse → emit round trip: the payload takes the rest, so the whole input is reproduced
    assert_eq!(pkt.buffer_len(), data.len());
    let mut out = vec![0u8; pkt.buffer_len()];
    assert_eq!(pkt.emit(&mut out), Ok(data.len()));
    assert_eq!(&out[..], data);
    let mut v = Vec::new();
    pkt.emit_to_vec(&mut v);
    assert_eq!(&v[..], data);
    assert_eq!(ControlPacket::parse(&out), Ok(pkt));
    // a buffer one byte short is an error, never a panic
    assert!(pkt.emit(&mut out[..data.len() - 1]).is_err());

    let view = ControlPacketView::new_checked(data).expect("parse succeeded");
    assert_eq!(view.opcode(), pkt.opcode);
    assert_eq!(view.key_id(), pkt.key_id);
    assert_eq!(view.session_id(), pkt.session_id);
    assert_eq!(view.acks(), pkt.acks);
    assert_eq!(view.remote_session_id(), pkt.remote_session_id);
    assert_eq!(view.message_id(), pkt.message_id);
    assert_eq!(view.payload(), pkt.payload);
    assert_eq!(peek_session_id(data), Some(pkt.session_id));

    let body = &data[HEADER_LEN..];
    let from_body = ControlPacket::parse_body(pkt.opcode, pkt.key_id, pkt.session_id, body);
    assert_eq!(from_body, Ok(pkt));
    let mut b = vec![0u8; pkt.body_len()];
    assert_eq!(pkt.emit_body(&mut b), Ok(body.len()));
    assert_eq!(&b[..], body);
});
