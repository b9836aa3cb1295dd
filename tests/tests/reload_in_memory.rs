//! SIGHUP-style reload with a new CRL: the revoked client's next renegotiation fails while it
//! and the other client stay connected and keep passing packets.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use openvpn_client::{ClientConfig, MemoryTunBuilder, VpnEvent};
use openvpn_control::options;
use openvpn_tun::{MemoryTun, MemoryTunHandle};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
};

fn icmp(src: [u8; 4], dst: [u8; 4], seq: u8) -> Vec<u8> {
    openvpn_tests::icmp_echo_v4(src, dst, seq)
}

async fn until(
    c: &mut openvpn_client::ClientHandle,
    secs: u64,
    want: impl Fn(&VpnEvent) -> bool,
) -> Option<VpnEvent> {
    tokio::time::timeout(Duration::from_secs(secs), async {
        while let Some(ev) = c.events.recv().await {
            if want(&ev) {
                return Some(ev);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

async fn passes(cli: &MemoryTunHandle, srv: &mut MemoryTunHandle, src: [u8; 4], seq: u8) -> bool {
    let p = icmp(src, [10, 8, 0, 1], seq);
    cli.inject(p.clone()).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(3), srv.written()).await {
            Ok(Some(got)) if got == p => return true,
            Ok(Some(_)) => continue,
            _ => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_crl_revokes_next_renegotiation_only() {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "reload-ca");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = |cn: &str, eku, serial: u8| {
        let mut p = CertificateParams::new(vec![cn.to_owned()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![eku];
        p.serial_number = Some(SerialNumber::from(vec![serial]));
        let k = KeyPair::generate().unwrap();
        (
            p.signed_by(&k, &ca, &ca_key).unwrap().pem(),
            k.serialize_pem(),
        )
    };
    let (sc, sk) = leaf("server", ExtendedKeyUsagePurpose::ServerAuth, 1);
    let c1 = leaf("client1", ExtendedKeyUsagePurpose::ClientAuth, 2);
    let c2 = leaf("client2", ExtendedKeyUsagePurpose::ClientAuth, 3);
    let now = rcgen::date_time_ymd(2025, 1, 1);
    let crl = CertificateRevocationListParams {
        this_update: now,
        next_update: rcgen::date_time_ymd(2035, 1, 1),
        crl_number: SerialNumber::from(vec![1]),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(vec![3]),
            revocation_time: now,
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca, &ca_key)
    .unwrap()
    .pem()
    .unwrap();

    let ca_pem = ca.pem();
    let text = |with_crl: bool| {
        format!(
            "server 10.8.0.0 255.255.255.0\ntopology subnet\nkeepalive 10 60\n<ca>\n{ca_pem}</ca>\n<cert>\n{sc}</cert>\n<key>\n{sk}</key>\n{}",
            if with_crl {
                format!("<crl-verify>\n{crl}</crl-verify>\n")
            } else {
                String::new()
            }
        )
    };
    let load = |t: String| {
        openvpn_server::config::load(
            &options::parse_config(&t).unwrap(),
            std::path::Path::new("/"),
        )
        .map_err(|e| e.to_string())
    };
    let cfg = load(text(false)).unwrap();
    let reloaded = load(text(true)).unwrap();
    let reloader: openvpn_server::runtime::Reloader = Arc::new(move || Ok(reloaded.clone()));
    let (hup_tx, hup_rx) = tokio::sync::mpsc::unbounded_channel();
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = udp.local_addr().unwrap().port();
    let (stun, mut srv) = MemoryTun::pair(64);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(openvpn_server::runtime::serve_with_reload(
        cfg,
        Arc::new(stun),
        Some(udp),
        None,
        async {
            let _ = stop_rx.await;
        },
        Some((reloader, hup_rx)),
    ));
    let client = |(cert, key): &(String, String)| {
        let profile = format!(
            "client\nremote 127.0.0.1 {port} udp\nreneg-sec 4\n<ca>\n{ca_pem}</ca>\n<cert>\n{cert}</cert>\n<key>\n{key}</key>\n"
        );
        let (tun, handle) = MemoryTun::pair(64);
        (
            openvpn_client::connect(
                ClientConfig::from_ovpn(&profile, std::path::Path::new("/")).unwrap(),
                MemoryTunBuilder::new(tun),
            ),
            handle,
        )
    };
    let (mut a, a_tun) = client(&c1);
    assert!(
        until(&mut a, 15, |e| matches!(e, VpnEvent::Connected { .. }))
            .await
            .is_some()
    );
    let (mut b, b_tun) = client(&c2);
    assert!(
        until(&mut b, 15, |e| matches!(e, VpnEvent::Connected { .. }))
            .await
            .is_some()
    );
    assert!(passes(&a_tun, &mut srv, [10, 8, 0, 2], 1).await);
    assert!(passes(&b_tun, &mut srv, [10, 8, 0, 3], 2).await);

    hup_tx.send(()).unwrap();
    // Both renegotiate after 4 s; only client1's succeeds.
    assert!(
        until(&mut a, 12, |e| matches!(e, VpnEvent::Renegotiated { .. }))
            .await
            .is_some(),
        "client1 renegotiates"
    );
    assert!(
        until(&mut b, 8, |e| matches!(e, VpnEvent::Renegotiated { .. }))
            .await
            .is_none(),
        "revoked client2 must not get new keys"
    );
    // Both still pass packets (client2 on its old key until that expires).
    assert!(passes(&a_tun, &mut srv, [10, 8, 0, 2], 3).await);
    assert!(passes(&b_tun, &mut srv, [10, 8, 0, 3], 4).await);

    a.command(openvpn_client::Command::Disconnect);
    b.command(openvpn_client::Command::Disconnect);
    let _ = a.wait().await;
    let _ = b.wait().await;
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}
