//! Renegotiation with data flowing, key-ID wrap, lame-duck decryption, keepalive, TLS 1.2.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{Link, Options, Pair};
use openvpn_control::Timers;
use openvpn_control::client::ClientEvent;
use openvpn_control::keepalive::{Keepalive, KeepaliveAction};
use openvpn_control::tls::TlsVersionMax;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn timers(reneg: Option<u64>, tran: u64) -> Timers {
    Timers {
        reneg_sec: reneg.map(Duration::from_secs),
        tran_window: Duration::from_secs(tran),
        ..Timers::default()
    }
}

/// A pair whose client renegotiates every `client_reneg` s and server every `server_reneg` s.
fn pair(client_reneg: Option<u64>, server_reneg: Option<u64>, tran: u64) -> Pair {
    let mut p = Pair::new(
        Options {
            timers: timers(client_reneg, tran),
            server_timers: Some(timers(server_reneg, tran)),
            ..Default::default()
        },
        Link::default(),
    );
    p.run_for(Duration::from_secs(3));
    assert!(p.connected(), "{:?}", p.client_events);
    p.enable_data(Some(Duration::from_millis(100)));
    p
}

fn renegotiations_by(p: &Pair) -> Vec<u8> {
    p.client_events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Renegotiating { key_id } => Some(key_id.value()),
            _ => None,
        })
        .collect()
}

/// Runs with data for `secs`, drains the link and checks that nothing was lost.
fn run_without_loss(p: &mut Pair, secs: u64) {
    p.run_for(Duration::from_secs(secs));
    p.stop_data();
    p.run_for(Duration::from_secs(1));
    let d = p.data();
    let c2s = d.client.lost_at(&d.server);
    let s2c = d.server.lost_at(&d.client);
    assert!(
        c2s.is_empty() && s2c.is_empty(),
        "lost client→server {} of {} (first {:?}), server→client {} of {} (first {:?}); \
         client tx keys {:?} rx keys {:?} installed {:?} retired {:?}; \
         server tx keys {:?} rx keys {:?} installed {:?} retired {:?}",
        c2s.len(),
        d.client.sent.len(),
        c2s.first(),
        s2c.len(),
        d.server.sent.len(),
        s2c.first(),
        d.client.tx_key_ids,
        d.client.rx_key_ids,
        d.client.installed,
        d.client.retired,
        d.server.tx_key_ids,
        d.server.rx_key_ids,
        d.server.installed,
        d.server.retired,
    );
    assert_eq!(d.client.open_errors, 0);
    assert_eq!(d.server.open_errors, 0);
}

#[test]
fn client_initiated_renegotiation_loses_no_data() {
    let mut p = pair(Some(10), None, 3600);
    run_without_loss(&mut p, 65);
    let d = p.data();
    // 0 at connect, then one renegotiation every 10 s.
    assert_eq!(d.client.installed, vec![0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(d.server.installed, d.client.installed);
    assert_eq!(renegotiations_by(&p), vec![1, 2, 3, 4, 5, 6]);
    // Both sides moved their sending to the newest key.
    assert_eq!(d.client.tx_key_ids.last(), Some(&6));
    assert_eq!(d.server.tx_key_ids.last(), Some(&6));
    assert!(d.client.sent.len() >= 640, "{}", d.client.sent.len());
    assert_eq!(p.client_keys(), p.server_keys());
}

#[test]
fn server_initiated_renegotiation_loses_no_data() {
    let mut p = pair(None, Some(10), 3600);
    run_without_loss(&mut p, 65);
    let d = p.data();
    assert_eq!(d.server.installed, vec![0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(d.client.installed, d.server.installed);
    assert_eq!(d.client.tx_key_ids.last(), Some(&6));
    assert_eq!(d.server.tx_key_ids.last(), Some(&6));
    assert_eq!(p.client_keys(), p.server_keys());
}

#[test]
fn renegotiation_under_loss_loses_no_data_sent_after_keys_settle() {
    // Lossy link: control packets are retransmitted; the check here is that both sides
    // keep agreeing on keys and every renegotiation completes.
    let mut p = Pair::new(
        Options {
            timers: timers(Some(10), 3600),
            server_timers: Some(timers(None, 3600)),
            ..Default::default()
        },
        Link {
            loss: 0.1,
            duplicate: 0.05,
            reorder: 0.1,
            latency: Duration::from_millis(20),
        },
    );
    p.run_for(Duration::from_secs(10));
    assert!(p.connected());
    p.enable_data(Some(Duration::from_millis(100)));
    p.run_for(Duration::from_secs(60));
    let d = p.data();
    assert!(d.client.installed.len() >= 6, "{:?}", d.client.installed);
    assert_eq!(p.client_keys(), p.server_keys());
    // Duplicated packets are replays; nothing may fail authentication or lack a key.
    for end in [&d.client, &d.server] {
        let st = end.dc.stats();
        assert_eq!((st.bad_auth, st.no_key), (0, 0), "{st:?}");
    }
}

#[test]
fn key_id_wraps_from_7_to_1() {
    let mut p = pair(Some(10), None, 3600);
    run_without_loss(&mut p, 95);
    let d = p.data();
    let want = vec![0, 1, 2, 3, 4, 5, 6, 7, 1, 2];
    assert_eq!(d.client.installed, want);
    assert_eq!(d.server.installed, want);
    let ck: Vec<u8> = p.client_keys().iter().map(|k| k.0).collect();
    assert_eq!(ck, want);
    assert_eq!(p.client_keys(), p.server_keys());
    // Each renegotiation retires the key before the lame duck.
    assert_eq!(d.client.retired, vec![0, 1, 2, 3, 4, 5, 6, 7]);
    // Key blocks are all different.
    let mut blocks: Vec<[u8; 256]> = p.client_keys().iter().map(|k| k.1).collect();
    blocks.sort();
    blocks.dedup();
    assert_eq!(blocks.len(), want.len());
}

#[test]
fn lame_duck_key_decrypts_until_tran_window_and_not_after() {
    // Client renegotiates after 10 s; the lame duck lives 4 s.
    let mut p = pair(Some(10), None, 4);
    p.stop_data();
    let t0 = p.now;
    // Packets sealed with key 0 before the renegotiation, held back.
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut held = vec![];
    for _ in 0..3 {
        let w = p
            .data
            .as_mut()
            .unwrap()
            .client
            .seal_ip(p.now, &mut rng)
            .unwrap();
        assert_eq!(w[0] & 7, 0);
        held.push(w);
    }
    // Step until the renegotiation has produced key 1 on the server.
    let mut steps = 0;
    while p.data().server.installed != vec![0, 1] {
        p.run_for(Duration::from_millis(100));
        steps += 1;
        assert!(
            steps < 200,
            "no renegotiation: {:?}",
            p.data().server.installed
        );
    }
    let started = p
        .client_events
        .iter()
        .any(|e| matches!(e, ClientEvent::Renegotiating { key_id } if key_id.value() == 1));
    assert!(started);
    let reneg_at = p.now;
    let now = p.now;
    let d = p.data.as_mut().unwrap();
    let base = t0;
    assert!(
        d.server.open(now, base, &held[0]),
        "old key opens right after"
    );
    assert!(d.server.retired.is_empty());
    // Still open just before the window ends.
    p.run_for(Duration::from_millis(2000));
    let now = p.now;
    let d = p.data.as_mut().unwrap();
    assert!(
        d.server.retired.is_empty(),
        "retired too early at {:?}",
        now - reneg_at
    );
    assert!(d.server.open(now, base, &held[1]));
    // After tran-window the old key is gone on both sides.
    p.run_for(Duration::from_millis(3000));
    let now = p.now;
    let d = p.data.as_mut().unwrap();
    assert_eq!(d.server.retired, vec![0]);
    assert_eq!(d.client.retired, vec![0]);
    assert!(
        !d.server.open(now, base, &held[2]),
        "old key must not open after"
    );
    assert_eq!(d.server.dc.stats().no_key, 1);
    assert!(
        p.client_events
            .iter()
            .any(|e| matches!(e, ClientEvent::KeyRetired { key_id } if key_id.value() == 0))
    );
}

#[test]
fn ping_restart_when_client_is_blackholed() {
    let mut p = pair(None, None, 3600);
    // Keepalive pings only (ping 10, ping-restart 60 in the harness).
    p.data.as_mut().unwrap().interval = None;
    p.run_for(Duration::from_secs(100));
    {
        let d = p.data();
        assert!(d.client.pings_received >= 9, "{}", d.client.pings_received);
        assert!(d.server.pings_received >= 9);
        assert!(d.client.restarts.is_empty() && d.server.restarts.is_empty());
    }
    let cut = p.now;
    p.blackhole_c2s = true;
    p.run_for(Duration::from_secs(75));
    let d = p.data();
    assert_eq!(
        d.server.restarts.len(),
        1,
        "server restarts {:?}",
        d.server.restarts
    );
    let after = d.server.restarts[0] - cut;
    assert!(
        after <= Duration::from_secs(60) && after >= Duration::from_secs(50),
        "ping-restart after {after:?} of silence"
    );
    // The client still hears the server's pings.
    assert!(d.client.restarts.is_empty());
}

#[test]
fn keepalive_unit_restart_without_input() {
    let t = std::time::Instant::now();
    let mut k = Keepalive::new(
        t,
        Some(Duration::from_secs(1)),
        Some(Duration::from_secs(5)),
    );
    let mut pings = 0;
    let restart = loop {
        let at = k.poll_timeout().unwrap();
        match k.handle_timeout(at) {
            Some(KeepaliveAction::SendPing) => pings += 1,
            Some(KeepaliveAction::Restart) => break at,
            None => panic!("woken for nothing at {:?}", at - t),
        }
        assert!(at - t <= Duration::from_secs(5));
    };
    assert_eq!(restart - t, Duration::from_secs(5));
    assert_eq!(
        pings, 4,
        "pings at 1..4 s, restart at 5 s wins over the 5 s ping"
    );
}

#[test]
fn tls12_only_on_one_side_still_connects_and_renegotiates() {
    for (client_max, server_max) in [
        (TlsVersionMax::Tls12, TlsVersionMax::Tls13),
        (TlsVersionMax::Tls13, TlsVersionMax::Tls12),
    ] {
        let mut p = Pair::new(
            Options {
                client_tls_max: client_max,
                server_tls_max: server_max,
                timers: timers(Some(10), 3600),
                server_timers: Some(timers(None, 3600)),
                ..Default::default()
            },
            Link::default(),
        );
        p.run_for(Duration::from_secs(3));
        assert!(p.connected(), "{client_max:?}/{server_max:?}");
        let desc = p.client_events.iter().find_map(|e| match e {
            ClientEvent::TlsEstablished { description } => Some(description.clone()),
            _ => None,
        });
        assert!(
            desc.as_deref().unwrap_or("").contains("TLSv1_2"),
            "negotiated {desc:?}"
        );
        p.enable_data(Some(Duration::from_millis(100)));
        run_without_loss(&mut p, 25);
        assert_eq!(p.data().client.installed, vec![0, 1, 2]);
        assert_eq!(p.client_keys(), p.server_keys());
    }
}

#[test]
fn tls_version_min_13_with_max_12_is_a_config_error() {
    let pki = common::pki();
    let mut creds = common::tls_creds(&pki, openvpn_crypto::Role::Client);
    creds.version_min = openvpn_control::tls::TlsVersionMin::Tls13;
    creds.version_max = TlsVersionMax::Tls12;
    let e = openvpn_control::tls::TlsConfig::client(&creds).unwrap_err();
    assert!(e.to_string().contains("tls-version-max"), "{e}");
}
