//! Compression as OpenVPN 2.6 does it, with openvpn-rs never compressing: both loaders'
//! `allow-compression` (defaults, conflicts), and our client with a real algorithm against
//! our server with one (pushed the stub of the family; both decompress, neither compresses)
//! over loopback with in-memory tun devices. Decompression of really compressed packets is
//! covered by openvpn-control's dataplane tests (vectors from liblzo2/liblz4) and by the
//! interop cases against the real OpenVPN 2.6 server (`cargo xtask interop --filter compress`).
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openvpn_client::{ClientConfig, MemoryTunBuilder, VpnEvent};
use openvpn_control::compression::AllowCompression;
use openvpn_control::server::CompressionConfig;
use openvpn_crypto::StaticKey;
use openvpn_tests::{icmp_echo_v4, pki};
use openvpn_tun::MemoryTun;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

/// One PKI for every config of this file (both sides must share the CA).
fn shared_pki() -> &'static openvpn_tests::Pki {
    static PKI: std::sync::OnceLock<openvpn_tests::Pki> = std::sync::OnceLock::new();
    PKI.get_or_init(pki)
}

fn server_text(extra: &str) -> String {
    let pki = shared_pki();
    let tc = StaticKey::generate(&mut ChaCha20Rng::seed_from_u64(3)).to_pem();
    format!(
        "mode server\ntls-server\ntopology subnet\nproto udp\nserver 10.8.0.0 255.255.255.0\nkeepalive 10 60\ndh none\n{extra}\n<ca>\n{ca}</ca>\n<cert>\n{c}</cert>\n<key>\n{k}</key>\n<tls-crypt>\n{tc}</tls-crypt>\n",
        ca = pki.ca,
        c = pki.server.0,
        k = pki.server.1
    )
}

fn client_text(port: u16, extra: &str) -> String {
    let pki = shared_pki();
    let tc = StaticKey::generate(&mut ChaCha20Rng::seed_from_u64(3)).to_pem();
    format!(
        "client\nproto udp\nremote 127.0.0.1 {port}\n{extra}\n<ca>\n{ca}</ca>\n<cert>\n{c}</cert>\n<key>\n{k}</key>\n<tls-crypt>\n{tc}</tls-crypt>\n",
        ca = pki.ca,
        c = pki.client.0,
        k = pki.client.1
    )
}

fn load_server(extra: &str) -> Result<openvpn_server::config::ServerConfig, String> {
    let lines = openvpn_control::options::parse_config(&server_text(extra)).unwrap();
    openvpn_server::config::load(&lines, Path::new("/")).map_err(|e| e.to_string())
}

fn load_client(extra: &str) -> Result<ClientConfig, String> {
    ClientConfig::from_ovpn(&client_text(1194, extra), Path::new("/")).map_err(|e| e.to_string())
}

/// 2.6's rules in both loaders: `allow-compression no` with a real algorithm (either order)
/// is an error, so is another mode after `no`; `yes` is accepted with a notice that we
/// never compress.
#[test]
fn allow_compression_in_both_loaders() {
    let s = load_server("comp-lzo yes").unwrap();
    assert_eq!(s.compression, CompressionConfig::Lzo);
    assert_eq!(s.allow_compression, None);
    let s = load_server("compress lz4-v2\nallow-compression yes").unwrap();
    assert_eq!(s.allow_compression, Some(AllowCompression::Yes));
    assert!(
        s.notices.iter().any(|n| n.contains("never compresses")),
        "{:?}",
        s.notices
    );
    let c = load_client("allow-compression asym").unwrap();
    assert_eq!(c.allow_compression, Some(AllowCompression::Asym));
    let c = load_client("compress stub-v2\nallow-compression no").unwrap();
    assert_eq!(c.allow_compression, Some(AllowCompression::No));
    for extra in [
        "comp-lzo yes\nallow-compression no",
        "allow-compression no\ncompress lz4",
        "allow-compression no\nallow-compression yes",
        "allow-compression maybe",
    ] {
        let e = load_server(extra).expect_err(extra);
        assert!(
            e.contains("allow-compression") || e.contains("compression"),
            "{extra}: {e}"
        );
        let e = load_client(extra).expect_err(extra);
        assert!(
            e.contains("allow-compression") || e.contains("compression"),
            "{extra}: {e}"
        );
    }
}

/// Our server with `compress lz4-v2` (pushes `compress stub-v2`, decompresses LZ4 from
/// clients) and our client with `compress lz4-v2` in its profile (2.6's default for it:
/// `asym`): the tunnel carries packets both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_algorithm_on_both_sides_connects_and_carries_packets() {
    let scfg = load_server("compress lz4-v2\nallow-compression yes").unwrap();
    let (srv_tun, mut srv_handle) = MemoryTun::pair(64);
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = udp.local_addr().unwrap().port();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(openvpn_server::runtime::serve(
        scfg,
        Arc::new(srv_tun),
        Some(udp),
        None,
        async {
            let _ = stop_rx.await;
        },
    ));
    let ccfg =
        ClientConfig::from_ovpn(&client_text(port, "compress lz4-v2"), Path::new("/")).unwrap();
    let (cli_tun, mut cli_handle) = MemoryTun::pair(64);
    let mut client = openvpn_client::connect(ccfg, MemoryTunBuilder::new(cli_tun));
    let mut seen = Vec::new();
    let pushed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut pushed = None;
        loop {
            let ev = client.events.recv().await.expect("client stopped");
            seen.push(format!("{ev:?}"));
            match ev {
                VpnEvent::PushedOptions(p) => pushed = Some(p.compression.clone()),
                VpnEvent::Connected { .. } => return pushed,
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no connection; events {seen:#?}"));
    assert_eq!(
        pushed,
        Some(Some(vec!["compress".to_owned(), "stub-v2".to_owned()]))
    );
    let ping = icmp_echo_v4([10, 8, 0, 2], [10, 8, 0, 1], 1);
    cli_handle.inject(ping.clone()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), srv_handle.written())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, ping);
    let reply = icmp_echo_v4([10, 8, 0, 1], [10, 8, 0, 2], 1);
    srv_handle.inject(reply.clone()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), cli_handle.written())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, reply);
    client.command(openvpn_client::Command::Disconnect);
    assert_eq!(
        client.wait().await,
        openvpn_client::ExitReason::Disconnected
    );
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}
