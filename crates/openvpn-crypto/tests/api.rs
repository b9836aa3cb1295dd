//! End-to-end use of the public API as openvpn-control uses it.

use openvpn_crypto::{
    ControlWrap, CryptoError, ReplayId, ReplayWindow, Role, StaticKey, TlsCrypt,
    TlsCryptV2ClientKey, TlsCryptV2ServerKey, split_wkc, timestamp_metadata,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// packets.md §5.4: client sends HARD_RESET_CLIENT_V3 = tls-crypt(Kc) ‖ WKc; the server splits
/// WKc off, recovers Kc, unwraps the packet and replies with plain tls-crypt under Kc.
#[test]
fn tls_crypt_v2_handshake_packet_flow() {
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let server_key = TlsCryptV2ServerKey::generate(&mut rng);
    let client_key =
        TlsCryptV2ClientKey::generate(&server_key, &timestamp_metadata(1_700_000_000), &mut rng)
            .expect("client key");
    // keys survive their PEM files
    let server_key = TlsCryptV2ServerKey::parse_pem(&server_key.to_pem()).expect("server pem");
    let client_key = TlsCryptV2ClientKey::parse_pem(&client_key.to_pem()).expect("client pem");

    let client = TlsCrypt::new(&client_key.kc, Role::Client);
    let plain = [0x50, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0];
    let mut wire = Vec::new();
    client.wrap(&plain, ReplayId { id: 1, time: 7 }, &mut wire);
    wire.extend_from_slice(&client_key.wkc);

    let (tc, wkc) = split_wkc(&wire).expect("split");
    let (kc, metadata) = server_key.unwrap_client_key(wkc).expect("WKc");
    assert_eq!(metadata, timestamp_metadata(1_700_000_000));
    let server = TlsCrypt::new(&kc, Role::Server);
    let mut out = Vec::new();
    let rid = server.unwrap(tc, &mut out).expect("unwrap");
    assert_eq!(out, plain);
    let mut window = ReplayWindow::new(64, 15);
    assert!(window.check(rid.id, rid.time));
    window.mark(rid.id, rid.time, 0);
    assert!(!window.check(rid.id, rid.time));

    // a different server key rejects the WKc
    let other = TlsCryptV2ServerKey::generate(&mut rng);
    assert_eq!(
        other.unwrap_client_key(wkc).map(|_| ()),
        Err(CryptoError::BadAuth)
    );
}

/// keys.md §6.6: dynamic tls-crypt key = EKM ⊕ original key, used as a normal tls-crypt key.
#[test]
fn dynamic_tls_crypt_key() {
    let original = StaticKey::from_bytes([0x5a; 256]);
    let ekm = [0xa5; 256];
    let k = original.xor(&ekm);
    assert_eq!(k.as_bytes(), &[0xff; 256]);
    let (c, s) = (
        TlsCrypt::new(&k, Role::Client),
        TlsCrypt::new(&k, Role::Server),
    );
    let mut wire = Vec::new();
    s.wrap(&[0x19; 20], ReplayId { id: 1, time: 1 }, &mut wire);
    let mut out = Vec::new();
    assert!(c.unwrap(&wire, &mut out).is_ok());
    assert_eq!(out, [0x19; 20]);
}
