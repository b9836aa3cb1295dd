//! Bodies of the openvpn-wire fuzz targets (moved from `fuzz_targets/`, unchanged logic).

use openvpn_wire::control::HEADER_LEN;
use openvpn_wire::tcp::decode_frame;
use openvpn_wire::{CompressionFraming, DataHeader, OccMessage, Opcode, is_ping, peek_peer_id};
use openvpn_wire::{ControlPacket, ControlPacketView, peek_session_id};
use openvpn_wire::{KeyMethod2, WireError};
use openvpn_wire::{StreamDecoder, frame_tcp};

pub mod control {
    #![allow(clippy::unwrap_used)]
    //! Plain control packets: parse → emit must reproduce the input exactly, the checked view
    //! must agree with the parsed packet, and the body parser must agree with the plain parser.
    use super::*;

    /// Runs the target on one input.
    pub fn run(data: &[u8]) {
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
    }
}

pub mod data {
    #![allow(clippy::unwrap_used)]
    //! Data-channel side: header parse → emit reproduces the prefix, peek_peer_id agrees,
    //! compression framing decap/encap and OCC parse/emit round trip.
    use super::*;
    const FRAMINGS: [CompressionFraming; 7] = [
        CompressionFraming::None,
        CompressionFraming::LzoStub,
        CompressionFraming::Stub,
        CompressionFraming::StubV2,
        CompressionFraming::Lzo,
        CompressionFraming::Lz4,
        CompressionFraming::Lz4V2,
    ];

    /// Runs the target on one input.
    pub fn run(data: &[u8]) {
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
                if let Some(&b) = data.first()
                    && data.len() >= 4
                    && Opcode::from_u8(b >> 3) == Some(Opcode::DataV2)
                {
                    panic!("DATA_V2 with 4 bytes must parse");
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
    }
}

pub mod tcp_stream {
    #![allow(clippy::unwrap_used)]
    //! TCP stream reassembly: feeding the input in arbitrary chunks gives the same packets (and
    //! the same error) as decoding it in one piece, and re-framing the packets reproduces the
    //! consumed bytes.
    use super::*;

    /// Runs the target on one input.
    pub fn run(input: &[u8]) {
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
        if let Some(e) = got_err {
            assert_eq!(dec.next_packet(), Err(e));
        }

        let mut reframed = Vec::new();
        for p in &got {
            assert!(!p.is_empty() && p.len() <= max);
            frame_tcp(p, &mut reframed).expect("non-empty packets frame");
        }
        assert_eq!(&reframed[..], &data[..at]);
    }
}

pub mod km2 {
    #![allow(clippy::unwrap_used)]
    //! Key-method-2 messages: parse never panics and consumes at most the input; parse → emit →
    //! parse is the identity.
    use super::*;

    /// Runs the target on one input.
    pub fn run(input: &[u8]) {
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
    }
}
