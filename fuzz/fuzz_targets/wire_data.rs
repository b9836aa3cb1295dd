//! Data-channel side: header parse → emit reproduces the prefix, peek_peer_id agrees,
//! compression framing decap/encap and OCC parse/emit round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openvpn_wire::{CompressionFraming, DataHeader, OccMessage, Opcode, is_ping, peek_peer_id};

const FRAMINGS: [CompressionFraming; 4] = [
    CompressionFraming::None,
    CompressionFraming::LzoStub,
    CompressionFraming::Stub,
    CompressionFraming::StubV2,
];

fuzz_target!(|data: &[u8]| {
    match DataHeader::parse(data) {
        Ok(h) => {
            let mut out = [0u8; 4];
            let n = h.emit(&mut out).expect("parsed header re-emits");
            assert_eq!(n, h.len());
            assert_eq!(&out[..n], &data[..n]);
            let (bytes, m) = h.to_bytes();
            assert_eq!(&bytes[..m], &data[..n]);
            assert_eq!(peek_peer_id(data), h.peer_id());
            let (h2, rest) = DataHeader::split(data).expect("split agrees with parse");
            assert_eq!(h2, h);
            assert_eq!(rest.len(), data.len() - n);
        }
        Err(_) => {
            if let Some(&b) = data.first() {
                if data.len() >= 4 && Opcode::from_u8(b >> 3) == Some(Opcode::DataV2) {
                    panic!("DATA_V2 with 4 bytes must parse");
                }
            }
            assert_eq!(peek_peer_id(data), None);
        }
    }

    for f in FRAMINGS {
        let mut buf = data.to_vec();
        if let Ok(payload) = f.decap(&mut buf) {
            let payload = payload.to_vec();
            let mut framed = payload.clone();
            f.encap(&mut framed);
            assert_eq!(framed.len(), payload.len() + f.overhead(&payload));
            let again = f.decap(&mut framed).expect("own framing decapsulates");
            assert_eq!(again, &payload[..]);
        }
    }

    let _ = is_ping(data);
    if let Some(msg) = OccMessage::parse(data) {
        let v = msg.to_vec();
        assert_eq!(v.len(), msg.buffer_len());
        assert_eq!(OccMessage::parse(&v), Some(msg));
    }
});
