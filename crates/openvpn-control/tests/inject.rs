//! Garbage, truncated, replayed, bit-flipped, wrong-session and random control packets
//! injected into a connected session at both ends: dropped, counted in `ControlStats`, and
//! the connection keeps working (data flows, later renegotiations succeed).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{Link, Options, Pair, Wrap};
use openvpn_control::{ControlStats, Timers};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

fn drops(s: &ControlStats) -> u64 {
    s.bad_opcode
        + s.bad_wrap
        + s.replay
        + s.malformed
        + s.wrong_session
        + s.unknown_key_id
        + s.out_of_window
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Client,
    Server,
}

fn stats(p: &Pair, end: End) -> ControlStats {
    match end {
        End::Client => p.client.session().stats(),
        End::Server => p.server.as_ref().unwrap().session().stats(),
    }
}

fn inject(p: &mut Pair, end: End, bytes: &[u8]) {
    let now = p.now;
    match end {
        End::Client => p.client.handle_datagram(now, bytes),
        End::Server => p.server.as_mut().unwrap().handle_datagram(now, bytes),
    }
}

/// Datagrams to inject at `end`: everything the peer sent so far (replays), truncations and
/// bit flips of them, random bytes, random bytes behind a control opcode, data opcodes.
fn hostile_inputs(p: &Pair, end: End, rng: &mut ChaCha20Rng) -> Vec<(&'static str, Vec<u8>)> {
    let towards_server = end == End::Server;
    let seen: Vec<Vec<u8>> = p
        .tap
        .iter()
        .filter(|(to_server, _)| *to_server == towards_server)
        .map(|(_, b)| b.clone())
        .collect();
    assert!(seen.len() > 5, "tap has {} packets", seen.len());
    let mut out = vec![];
    for pkt in &seen {
        out.push(("replay", pkt.clone()));
    }
    for pkt in seen.iter().rev().take(20) {
        for cut in [0, 1, 2, 8, 9, 13, 20, pkt.len() / 2, pkt.len() - 1] {
            if cut < pkt.len() {
                out.push(("truncated", pkt[..cut].to_vec()));
            }
        }
        let mut flipped = pkt.clone();
        let bit = (rng.next_u32() as usize) % (flipped.len() * 8 - 8) + 8;
        flipped[bit / 8] ^= 1 << (bit % 8);
        out.push(("bit flip", flipped));
        let mut longer = pkt.clone();
        longer.extend_from_slice(&[0xAA; 7]);
        out.push(("trailing junk", longer));
    }
    for _ in 0..200 {
        let len = (rng.next_u32() % 300) as usize;
        let mut b = vec![0u8; len];
        rng.fill_bytes(&mut b);
        out.push(("random", b));
    }
    for op in [4u8, 5, 7, 8, 10, 3, 1, 2, 11] {
        for key_id in 0..8u8 {
            let len = 1 + (rng.next_u32() % 200) as usize;
            let mut b = vec![0u8; len];
            rng.fill_bytes(&mut b);
            b[0] = op << 3 | key_id;
            out.push(("random with control opcode", b));
        }
    }
    for first in [0x30u8, 0x31, 0x48, 0x49, 0x00, 0xF8] {
        out.push((
            "data/invalid opcode",
            vec![first, 0, 0, 1, 2, 3, 4, 5, 6, 7],
        ));
    }
    out
}

fn pair(wrap: Wrap) -> Pair {
    let timers = Timers {
        reneg_sec: Some(Duration::from_secs(10)),
        ..Timers::default()
    };
    let mut p = Pair::new(
        Options {
            wrap,
            timers: timers.clone(),
            server_timers: Some(Timers {
                reneg_sec: None,
                ..timers
            }),
            ..Default::default()
        },
        Link::default(),
    );
    p.run_for(Duration::from_secs(3));
    assert!(p.connected(), "{wrap:?}");
    p.enable_data(Some(Duration::from_millis(100)));
    // Past the first renegotiation, so key 1 (and dynamic tls-crypt) is in use.
    p.run_for(Duration::from_secs(12));
    assert_eq!(p.data().client.installed, vec![0, 1]);
    p
}

fn check_survives(p: &mut Pair, wrap: Wrap) {
    // Data keeps flowing and two more renegotiations succeed.
    p.run_for(Duration::from_secs(20));
    p.stop_data();
    p.run_for(Duration::from_secs(1));
    let d = p.data();
    assert_eq!(d.client.installed, vec![0, 1, 2, 3], "{wrap:?}");
    assert_eq!(d.server.installed, vec![0, 1, 2, 3], "{wrap:?}");
    assert_eq!(p.client_keys(), p.server_keys(), "{wrap:?}");
    let lost_c2s = d.client.lost_at(&d.server);
    let lost_s2c = d.server.lost_at(&d.client);
    assert!(
        lost_c2s.is_empty() && lost_s2c.is_empty(),
        "{wrap:?}: lost {lost_c2s:?} / {lost_s2c:?}"
    );
    assert!(!p.client.session().is_closed() && !p.server.as_ref().unwrap().session().is_closed());
}

#[test]
fn hostile_control_packets_on_wrapped_channel_are_dropped_and_counted() {
    for wrap in [Wrap::TlsCrypt, Wrap::TlsAuth, Wrap::TlsCryptV2] {
        let mut p = pair(wrap);
        let mut rng = ChaCha20Rng::seed_from_u64(42);
        for end in [End::Client, End::Server] {
            let inputs = hostile_inputs(&p, end, &mut rng);
            for (what, bytes) in &inputs {
                let before = stats(&p, end);
                inject(&mut p, end, bytes);
                let after = stats(&p, end);
                assert_eq!(
                    drops(&after),
                    drops(&before) + 1,
                    "{wrap:?} {end:?}: {what} {:02x?} not counted as one drop: {before:?} -> {after:?}",
                    &bytes[..bytes.len().min(16)]
                );
                assert_eq!(
                    after.accepted, before.accepted,
                    "{wrap:?} {end:?}: {what} was accepted"
                );
            }
            let st = stats(&p, end);
            assert!(st.replay > 5, "{wrap:?} {end:?}: {st:?}");
            assert!(st.bad_wrap > 10, "{wrap:?} {end:?}: {st:?}");
            assert!(
                st.bad_opcode > 0 && st.malformed > 0,
                "{wrap:?} {end:?}: {st:?}"
            );
        }
        check_survives(&mut p, wrap);
    }
}

#[test]
fn hostile_control_packets_without_wrapping_do_not_break_the_session() {
    let wrap = Wrap::None;
    let mut p = pair(wrap);
    let mut rng = ChaCha20Rng::seed_from_u64(43);
    for end in [End::Client, End::Server] {
        let before = stats(&p, end);
        let inputs = hostile_inputs(&p, end, &mut rng);
        let mut wrong_sid = 0;
        for (_, bytes) in &inputs {
            inject(&mut p, end, bytes);
            // The same packet with another session ID.
            if bytes.len() > 9 && matches!(bytes[0] >> 3, 4 | 5 | 8) {
                let mut b = bytes.clone();
                b[1] ^= 0x5a;
                let s0 = stats(&p, end);
                inject(&mut p, end, &b);
                let s1 = stats(&p, end);
                assert_eq!(drops(&s1), drops(&s0) + 1, "{b:02x?}");
                wrong_sid += s1.wrong_session - s0.wrong_session;
            }
        }
        let after = stats(&p, end);
        assert!(wrong_sid > 10, "{end:?}: {wrong_sid}");
        assert!(after.malformed > before.malformed, "{end:?}");
        assert!(after.bad_opcode > before.bad_opcode, "{end:?}");
        // Without wrapping, replays are plain retransmissions: acknowledged again, never
        // delivered twice (the checks after this loop see the session still working).
    }
    check_survives(&mut p, wrap);
}
