//! The load generator against our server in the same process, over loopback, with in-memory tun
//! devices (no root, no namespaces). The test plays the server's operating system: it answers
//! ICMP echo requests to 10.8.0.1 that the server writes to its tun device.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openvpn_client::ClientConfig;
use openvpn_control::options;
use openvpn_loadgen::{Load, Outcome};
use openvpn_tun::{MemoryTun, MemoryTunHandle};

/// RFC 1071 checksum, written independently of the generator's.
fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The echo reply to an IPv4 echo request for `me`, if `pkt` is one with valid checksums.
fn echo_reply(pkt: &[u8], me: Ipv4Addr) -> Option<Vec<u8>> {
    if pkt.len() < 28 || pkt[0] != 0x45 || pkt[9] != 1 || pkt[16..20] != me.octets() {
        return None;
    }
    if csum(&pkt[..20]) != 0 || csum(&pkt[20..]) != 0 || pkt[20] != 8 {
        return None;
    }
    let mut r = pkt.to_vec();
    r[12..16].copy_from_slice(&pkt[16..20]);
    r[16..20].copy_from_slice(&pkt[12..16]);
    r[10..12].fill(0);
    let c = csum(&r[..20]);
    r[10..12].copy_from_slice(&c.to_be_bytes());
    r[20] = 0;
    r[22..24].fill(0);
    let c = csum(&r[20..]);
    r[22..24].copy_from_slice(&c.to_be_bytes());
    Some(r)
}

/// Answers pings to 10.8.0.1 on the server's tun until the server is gone.
async fn os_side(mut tun: MemoryTunHandle, answer: bool) {
    while let Some(pkt) = tun.written().await {
        if !answer {
            continue;
        }
        if let Some(r) = echo_reply(&pkt, Ipv4Addr::new(10, 8, 0, 1))
            && tun.inject(r).await.is_err()
        {
            return;
        }
    }
}

/// Starts our server on a loopback port; returns the client profile for it.
async fn server(max_clients: usize, answer_pings: bool) -> ClientConfig {
    let (ca, (scert, skey), (ccert, ckey)) = openvpn_tests::pki().parts();
    let text = format!(
        "server 10.8.0.0 255.255.240.0\ntopology subnet\nkeepalive 10 60\nduplicate-cn\n\
         max-clients {max_clients}\ndata-ciphers AES-256-GCM\n\
         <ca>\n{ca}</ca>\n<cert>\n{scert}</cert>\n<key>\n{skey}</key>\n"
    );
    let cfg = openvpn_server::config::load(
        &options::parse_config(&text).expect("server config parses"),
        Path::new("/"),
    )
    .expect("server config loads");
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = udp.local_addr().expect("local addr").port();
    let (tun, os) = MemoryTun::pair(256);
    tokio::spawn(os_side(os, answer_pings));
    tokio::spawn(openvpn_server::runtime::serve(
        cfg,
        Arc::new(tun),
        Some(udp),
        None,
        std::future::pending(),
    ));
    let profile = format!(
        "client\nremote 127.0.0.1 {port} udp\ndata-ciphers AES-256-GCM\n\
         <ca>\n{ca}</ca>\n<cert>\n{ccert}</cert>\n<key>\n{ckey}</key>\n"
    );
    ClientConfig::from_ovpn(&profile, Path::new(".")).expect("client profile")
}

fn load(clients: usize, concurrency: usize) -> Load {
    Load {
        clients,
        concurrency,
        server_pid: Some(std::process::id()),
        hold: Duration::from_secs(1),
        timeout: Duration::from_secs(4),
        settle: Duration::ZERO,
        ..Load::default()
    }
}

fn json_number(o: &Outcome, key: &str) -> Option<f64> {
    let at = o.json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let v = o.json[at..].trim_start();
    let end = v.find([',', '\n']).unwrap_or(v.len());
    v[..end].trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_connects_and_pings_through_its_tunnel() {
    let cfg = server(64, true).await;
    let o = openvpn_loadgen::run(&load(40, 10), cfg).await;
    assert_eq!(o.connected, 40, "{}", o.json);
    assert_eq!(o.ping1_ok, 40, "{}", o.json);
    assert_eq!(o.ping2_ok, 40, "{}", o.json);
    assert_eq!(o.reconnects, 0, "{}", o.json);
    assert_eq!(json_number(&o, "failed"), Some(0.0));
    assert!(json_number(&o, "handshakes_per_s").is_some_and(|v| v > 0.0));
    // the "server" is this process: its memory and CPU were sampled
    assert!(json_number(&o, "server_rss_kib_connected").is_some_and(|v| v > 0.0));
    assert!(json_number(&o, "server_cpu_s_connect").is_some_and(|v| v > 0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_beyond_max_clients_are_counted_as_failed() {
    let cfg = server(5, true).await;
    let o = openvpn_loadgen::run(&load(9, 3), cfg).await;
    assert_eq!(o.connected, 5, "{}", o.json);
    assert_eq!(json_number(&o, "failed"), Some(4.0));
    assert!(o.json.contains("not connected after 4 s"), "{}", o.json);
    assert_eq!(o.ping1_ok, 5, "{}", o.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_pings_are_counted() {
    let cfg = server(8, false).await;
    let o = openvpn_loadgen::run(&load(3, 3), cfg).await;
    assert_eq!(o.connected, 3, "{}", o.json);
    assert_eq!(o.ping1_ok, 0, "{}", o.json);
    assert_eq!(o.ping2_ok, 0, "{}", o.json);
}
