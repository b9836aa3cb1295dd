//! Client ↔ server handshakes in memory.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{Link, Options, Pair, Wrap};
use openvpn_control::Timers;
use openvpn_control::client::ClientEvent;
use openvpn_control::server::ServerEvent;

fn connect(wrap: Wrap, iv_proto: u32) -> Pair {
    let mut p = Pair::new(
        Options {
            wrap,
            iv_proto,
            ..Default::default()
        },
        Link::default(),
    );
    p.run_for(Duration::from_secs(5));
    p
}

#[test]
fn handshake_every_wrapping_ekm() {
    for wrap in [Wrap::None, Wrap::TlsAuth, Wrap::TlsCrypt, Wrap::TlsCryptV2] {
        let p = connect(wrap, 990);
        assert!(
            p.connected(),
            "{wrap:?}: not connected; events {:?}",
            p.client_events
        );
        let c = p.client_keys();
        let s = p.server_keys();
        assert_eq!(c.len(), 1, "{wrap:?}");
        assert_eq!(c, s, "{wrap:?}: both sides derive the same key block");
        assert!(
            p.server_events
                .iter()
                .any(|e| matches!(e, ServerEvent::Pushed))
        );
    }
}

#[test]
fn handshake_prf_without_ekm() {
    let p = connect(Wrap::TlsCrypt, 6);
    assert!(p.connected());
    assert_eq!(p.client_keys(), p.server_keys());
    let pushed = p.client_events.iter().find_map(|e| match e {
        ClientEvent::Connected(o) => Some(o.clone()),
        _ => None,
    });
    let pushed = pushed.unwrap();
    assert!(!pushed.tls_ekm);
    assert_eq!(pushed.peer_id, Some(0));
    assert_eq!(pushed.cipher.as_deref(), Some("AES-256-GCM"));
    assert_eq!(
        pushed.ifconfig.map(|(a, _)| a.to_string()).as_deref(),
        Some("10.8.0.2")
    );
}

#[test]
fn tls_crypt_v2_uses_early_negotiation() {
    let p = connect(Wrap::TlsCryptV2, 990);
    assert!(p.connected());
    assert!(p.gate_replies >= 1);
}

#[test]
fn handshake_under_30_percent_loss_reorder_duplicates() {
    for seed_wrap in [Wrap::TlsCrypt, Wrap::TlsAuth, Wrap::TlsCryptV2] {
        let mut p = Pair::new(
            Options {
                wrap: seed_wrap,
                ..Default::default()
            },
            Link {
                loss: 0.3,
                duplicate: 0.1,
                reorder: 0.2,
                latency: Duration::from_millis(20),
            },
        );
        p.run_for(Duration::from_secs(55));
        assert!(p.connected(), "{seed_wrap:?}: {:?}", p.client_events);
        assert_eq!(p.client_keys(), p.server_keys());
    }
}

#[test]
fn cipher_negotiation_picks_server_order() {
    let mut p = Pair::new(
        Options {
            client_ciphers: vec!["CHACHA20-POLY1305".into(), "AES-128-GCM".into()],
            ..Default::default()
        },
        Link::default(),
    );
    p.run_for(Duration::from_secs(5));
    assert!(p.connected());
    let cipher = p.client_events.iter().find_map(|e| match e {
        ClientEvent::KeysReady { cipher, .. } => Some(*cipher),
        _ => None,
    });
    assert_eq!(cipher.map(|c| c.name()), Some("AES-128-GCM"));
}

#[test]
fn cipher_mismatch_fails_clearly_on_both_sides() {
    let mut p = Pair::new(
        Options {
            client_ciphers: vec!["CHACHA20-POLY1305".into()],
            server_ciphers: vec!["AES-256-GCM".into()],
            ..Default::default()
        },
        Link::default(),
    );
    p.run_for(Duration::from_secs(5));
    assert!(!p.connected());
    assert!(
        p.client_events
            .iter()
            .any(|e| matches!(e, ClientEvent::AuthFailed(r) if r.contains("cipher"))),
        "{:?}",
        p.client_events
    );
    assert!(
        p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::NegotiationFailed(m) if m.contains("no shared")))
    );
    assert!(p.client_keys().is_empty() && p.server_keys().is_empty());
}

#[test]
fn auth_failed_reaches_client() {
    let mut p = Pair::new(
        Options {
            credentials: Some(("mallory".into(), "x".into())),
            ..Default::default()
        },
        Link::default(),
    );
    p.reject_user = Some("mallory".into());
    p.run_for(Duration::from_secs(5));
    assert!(!p.connected());
    assert!(
        p.client_events
            .iter()
            .any(|e| matches!(e, ClientEvent::AuthFailed(r) if r == "bad user"))
    );
    assert!(p.server_keys().is_empty());
}

#[test]
fn credentials_and_peer_info_reach_server() {
    let mut p = Pair::new(
        Options {
            credentials: Some(("alice".into(), "secret".into())),
            ..Default::default()
        },
        Link::default(),
    );
    p.run_for(Duration::from_secs(5));
    let auth = p.server_events.iter().find_map(|e| match e {
        ServerEvent::Authenticate {
            auth, peer_info, ..
        } => Some((auth.clone(), peer_info.clone())),
        _ => None,
    });
    let (auth, pi) = auth.unwrap();
    assert_eq!(auth.username, "alice");
    assert_eq!(auth.password.as_str(), "secret");
    assert_eq!(auth.common_name.as_deref(), Some("client1"));
    assert_eq!(pi.get("IV_GUI_VER"), Some("pairtest_1.0"));
    assert_eq!(pi.proto_bits(), 990);
}

#[test]
fn debug_print_events() {
    let p = connect(Wrap::TlsCryptV2, 990);
    for e in &p.client_events {
        eprintln!("client: {e:?}");
    }
    for e in &p.server_events {
        eprintln!(
            "server: {}",
            format!("{e:?}").chars().take(150).collect::<String>()
        );
    }
    eprintln!(
        "stats {:?} / {:?}",
        p.client.session().stats(),
        p.server.as_ref().unwrap().session().stats()
    );
}

/// A key whose authentication is pending past the hand-window must neither fail nor leave a
/// deadline in the past (a driver would wake up for it again and again: a busy loop).
#[test]
fn deferred_auth_past_the_hand_window_sets_no_past_deadline() {
    // A short hand-window keeps the simulated run small: a broken build loops once per
    // simulated millisecond after the deadline.
    let timers = Timers {
        hand_window: Duration::from_secs(3),
        ..Timers::default()
    };
    let mut p = Pair::new(
        Options {
            credentials: Some(("carol".into(), "pw".into())),
            timers: timers.clone(),
            server_timers: Some(timers),
            ..Default::default()
        },
        Link::default(),
    );
    p.defer_user = Some("carol".into());
    // Just before the hand-window ends: everything is acknowledged, so the only deadline a
    // server could still report soon is the hand-window of the pending key — which must not
    // be one (once passed, it would stay in the past).
    p.run_for(Duration::from_millis(2500));
    let now = p.now;
    let server = p.server.as_ref().expect("server session");
    let deadline = server.poll_timeout();
    assert!(
        deadline.is_none_or(|t| t > now + Duration::from_secs(1)),
        "the server reports a deadline {:?} s ahead: the pending key's hand-window",
        deadline.map(|t| t.saturating_duration_since(now).as_secs_f64())
    );
    // And past the hand-window the pending key is still there, not failed.
    p.run_for(Duration::from_secs(2));
    assert!(
        p.server_keys().is_empty(),
        "no data keys while the decision is pending"
    );
    assert!(
        !p.client_events
            .iter()
            .any(|e| matches!(e, ClientEvent::AuthFailed(_))),
        "the pending key must not fail at the hand-window"
    );
}

/// A server that pushes real compression: 2.6's default `allow-compression no` fails the
/// push; `asym` connects with the algorithm (decompress, never compress); stubs are always
/// fine; unknown algorithms fail.
#[test]
fn pushed_compression_follows_allow_compression() {
    use openvpn_control::compression::AllowCompression as A;
    for (push, allow, ok) in [
        ("comp-lzo yes", A::No, false),
        ("compress lz4-v2", A::No, false),
        ("compress stub-v2", A::No, true),
        ("comp-lzo no", A::No, true),
        ("comp-lzo yes", A::Asym, true),
        ("compress lz4", A::Yes, true),
        ("compress zstd", A::Asym, false),
    ] {
        let mut p = Pair::new(
            Options {
                client_allow_compression: allow,
                extra_push: vec![push.into()],
                ..Default::default()
            },
            Link::default(),
        );
        p.run_for(Duration::from_secs(3));
        assert_eq!(
            p.connected(),
            ok,
            "{push} / {allow:?}: {:?}",
            p.client_events
        );
        let pushed = p.client_events.iter().find_map(|e| match e {
            ClientEvent::Connected(o) => Some(o.compression.clone()),
            _ => None,
        });
        let failed = p.client_events.iter().find_map(|e| match e {
            ClientEvent::PushFailed(r) => Some(r.clone()),
            _ => None,
        });
        if ok {
            let words: Vec<String> = push.split(' ').map(str::to_owned).collect();
            assert_eq!(pushed, Some(Some(words)), "{push}");
        } else {
            let reason = failed.unwrap_or_else(|| panic!("{push}: no PushFailed"));
            assert!(reason.contains("compression"), "{push}: {reason}");
        }
    }
}
