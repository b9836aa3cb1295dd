//! Our client against our server over loopback, with in-memory tun devices on both sides
//! (no root needed): handshake, IPv4 and IPv6 packets both ways, UDP and TCP.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use openvpn_client::{ClientConfig, MemoryTunBuilder, VpnEvent};
use openvpn_crypto::StaticKey;
use openvpn_tests::{icmp_echo_v4, pki};
use openvpn_tun::MemoryTun;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

fn udp_v6(src: &str, dst: &str) -> Vec<u8> {
    let s: std::net::Ipv6Addr = src.parse().unwrap();
    let d: std::net::Ipv6Addr = dst.parse().unwrap();
    let mut p = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    p.extend_from_slice(&s.octets());
    p.extend_from_slice(&d.octets());
    p.extend_from_slice(&[0x30, 0x39, 0x30, 0x39, 0, 8, 0, 0]);
    p
}

async fn round_trip(proto: &str) {
    let pki = pki();
    let tc = StaticKey::generate(&mut ChaCha20Rng::seed_from_u64(3)).to_pem();
    let server_text = format!(
        "mode server\ntls-server\ntopology subnet\nproto {sp}\nserver 10.8.0.0 255.255.255.0\nserver-ipv6 fd08::/64\nkeepalive 10 60\ndh none\n<ca>\n{ca}</ca>\n<cert>\n{c}</cert>\n<key>\n{k}</key>\n<tls-crypt>\n{tc}</tls-crypt>\n",
        sp = if proto == "udp" { "udp" } else { "tcp-server" },
        ca = pki.ca,
        c = pki.server.0,
        k = pki.server.1
    );
    let scfg = openvpn_tests::server_config(&server_text);
    let (srv_tun, mut srv_handle) = MemoryTun::pair(64);
    let (udp, tcp, port) = if proto == "udp" {
        let u = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = u.local_addr().unwrap().port();
        (Some(u), None, port)
    } else {
        let t = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = t.local_addr().unwrap().port();
        (None, Some(t), port)
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(openvpn_server::runtime::serve(
        scfg,
        Arc::new(srv_tun),
        udp,
        tcp,
        async {
            let _ = stop_rx.await;
        },
    ));

    let client_text = format!(
        "client\nproto {cp}\nremote 127.0.0.1 {port}\nremote-cert-tls server\nverify-x509-name server name\nsetenv IV_GUI_VER \"memtest 1.0\"\n<ca>\n{ca}</ca>\n<cert>\n{c}</cert>\n<key>\n{k}</key>\n<tls-crypt>\n{tc}</tls-crypt>\n",
        cp = if proto == "udp" { "udp" } else { "tcp-client" },
        ca = pki.ca,
        c = pki.client.0,
        k = pki.client.1
    );
    let ccfg = ClientConfig::from_ovpn(&client_text, std::path::Path::new("/")).unwrap();
    let (cli_tun, mut cli_handle) = MemoryTun::pair(64);
    let mut client = openvpn_client::connect(ccfg, MemoryTunBuilder::new(cli_tun));
    let mut seen = Vec::new();
    let settings = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let ev = client.events.recv().await.expect("client stopped");
            seen.push(format!("{ev:?}"));
            if let VpnEvent::Connected { settings, .. } = ev {
                return settings;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{proto}: no connection; events {seen:#?}"));
    assert_eq!(settings.ipv4, Some(("10.8.0.2".parse().unwrap(), 24)));
    assert_eq!(settings.ipv6, Some(("fd08::1000".parse().unwrap(), 64)));
    assert!(seen.iter().any(|e| e.starts_with("Connecting")), "{seen:?}");

    // Client → server, IPv4 and IPv6.
    let ping = icmp_echo_v4([10, 8, 0, 2], [10, 8, 0, 1], 1);
    cli_handle.inject(ping.clone()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), srv_handle.written())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, ping);
    let v6 = udp_v6("fd08::1000", "fd08::1");
    cli_handle.inject(v6.clone()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), srv_handle.written())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, v6);
    // A spoofed source is dropped by the server, the next real packet still passes.
    cli_handle
        .inject(icmp_echo_v4([10, 8, 0, 77], [10, 8, 0, 1], 2))
        .await
        .unwrap();
    let real = icmp_echo_v4([10, 8, 0, 2], [10, 8, 0, 1], 3);
    cli_handle.inject(real.clone()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), srv_handle.written())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, real, "spoofed packet must not reach the server's tun");
    // Server → client.
    let reply = icmp_echo_v4([10, 8, 0, 1], [10, 8, 0, 2], 1);
    srv_handle.inject(reply.clone()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), cli_handle.written())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, reply);
    let v6r = udp_v6("fd08::1", "fd08::1000");
    srv_handle.inject(v6r.clone()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), cli_handle.written())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, v6r);

    client.command(openvpn_client::Command::Disconnect);
    assert_eq!(
        client.wait().await,
        openvpn_client::ExitReason::Disconnected
    );
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_udp_in_memory() {
    round_trip("udp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_tcp_in_memory() {
    round_trip("tcp").await;
}
