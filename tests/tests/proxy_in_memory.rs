//! Our client reaching our server only through proxies written here, over loopback with
//! in-memory tun devices: HTTP `CONNECT` that requires `Proxy-Authorization: Basic` (an
//! authfile, and `auto` answering a 407), SOCKS5 with username/password over TCP, and SOCKS5
//! `UDP ASSOCIATE`. The profile's remote is a name that does not resolve (`vpn.invalid`, TCP)
//! or an address that does not answer (192.0.2.1, UDP): only a proxy that forwards to the
//! server can connect it, so a client that bypassed the proxy fails these tests. Also
//! `passtos` (the outer ECN bits follow the inner packet's, seen by a UDP relay) and
//! `inactive`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use openvpn_client::{ClientConfig, ExitReason, MemoryTunBuilder, VpnEvent};
use openvpn_crypto::StaticKey;
use openvpn_tests::{icmp_echo_v4, pki};
use openvpn_tun::{MemoryTun, MemoryTunHandle};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

fn shared_pki() -> &'static openvpn_tests::Pki {
    static PKI: std::sync::OnceLock<openvpn_tests::Pki> = std::sync::OnceLock::new();
    PKI.get_or_init(pki)
}

fn tls_crypt() -> String {
    StaticKey::generate(&mut ChaCha20Rng::seed_from_u64(7)).to_pem()
}

/// Our server on loopback (UDP or TCP); stops when the sender is dropped or used.
struct Server {
    addr: SocketAddr,
    tun: MemoryTunHandle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_server(udp: bool) -> Server {
    let pki = shared_pki();
    let text = format!(
        "mode server\ntls-server\ntopology subnet\nproto {p}\nserver 10.8.0.0 255.255.255.0\nkeepalive 10 60\ndh none\n<ca>\n{ca}</ca>\n<cert>\n{c}</cert>\n<key>\n{k}</key>\n<tls-crypt>\n{tc}</tls-crypt>\n",
        p = if udp { "udp" } else { "tcp-server" },
        ca = pki.ca,
        c = pki.server.0,
        k = pki.server.1,
        tc = tls_crypt(),
    );
    let cfg = openvpn_tests::server_config(&text);
    let (tun, handle) = MemoryTun::pair(64);
    let (u, t, addr) = if udp {
        let u = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let a = u.local_addr().unwrap();
        (Some(u), None, a)
    } else {
        let t = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = t.local_addr().unwrap();
        (None, Some(t), a)
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(openvpn_server::runtime::serve(
        cfg,
        Arc::new(tun),
        u,
        t,
        async {
            let _ = stopped.await;
        },
    ));
    Server {
        addr,
        tun: handle,
        _stop: stop,
    }
}

/// A client profile (`extra` holds remote, proto and proxy lines); relative paths from `dir`.
fn client(extra: &str, dir: &Path) -> ClientConfig {
    let pki = shared_pki();
    let text = format!(
        "client\nverify-x509-name server name\nconnect-retry-max 1\nconnect-timeout 10\n{extra}\n<ca>\n{ca}</ca>\n<cert>\n{c}</cert>\n<key>\n{k}</key>\n<tls-crypt>\n{tc}</tls-crypt>\n",
        ca = pki.ca,
        c = pki.client.0,
        k = pki.client.1,
        tc = tls_crypt(),
    );
    ClientConfig::from_ovpn(&text, dir).unwrap()
}

/// Connects `cfg`, sends a ping each way through the tunnel, disconnects.
async fn tunnel_works(cfg: ClientConfig, server: &mut Server) {
    let (tun, mut handle) = MemoryTun::pair(64);
    let mut c = openvpn_client::connect(cfg, MemoryTunBuilder::new(tun));
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let Some(ev) = c.events.recv().await else {
                panic!("client stopped; events {seen:#?}");
            };
            seen.push(format!("{ev:?}"));
            if matches!(ev, VpnEvent::Connected { .. }) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no connection; events {seen:#?}"));
    let ping = icmp_echo_v4([10, 8, 0, 2], [10, 8, 0, 1], 1);
    handle.inject(ping.clone()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), server.tun.written())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, ping);
    let reply = icmp_echo_v4([10, 8, 0, 1], [10, 8, 0, 2], 1);
    server.tun.inject(reply.clone()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), handle.written())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, reply);
    c.command(openvpn_client::Command::Disconnect);
    assert_eq!(c.wait().await, ExitReason::Disconnected);
}

/// Reads a request or reply header (bounded).
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 8192, "header too long");
        head.push(s.read_u8().await.unwrap());
    }
    String::from_utf8(head).unwrap()
}

/// What a test proxy saw.
#[derive(Default)]
struct Seen {
    tunnels: AtomicUsize,
    refused: AtomicUsize,
}

/// An HTTP proxy that tunnels `CONNECT vpn.invalid:1194` to `server` when the request
/// carries `Proxy-Authorization: Basic` for puser/ppass, and answers 407 otherwise.
async fn http_proxy(server: SocketAddr) -> (SocketAddr, Arc<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s2 = Arc::clone(&seen);
    let want = format!(
        "Proxy-Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode("puser:ppass")
    );
    tokio::spawn(async move {
        loop {
            let (mut c, _) = l.accept().await.unwrap();
            let (seen, want) = (Arc::clone(&s2), want.clone());
            tokio::spawn(async move {
                let req = read_head(&mut c).await;
                assert!(
                    req.starts_with("CONNECT vpn.invalid:1194 HTTP/1.1\r\n"),
                    "{req}"
                );
                assert!(req.contains("User-Agent: memtest\r\n"), "{req}");
                if !req.contains(&want) {
                    seen.refused.fetch_add(1, Ordering::SeqCst);
                    let _ = c
                        .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let mut up = TcpStream::connect(server).await.unwrap();
                c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                seen.tunnels.fetch_add(1, Ordering::SeqCst);
                let _ = tokio::io::copy_bidirectional(&mut c, &mut up).await;
            });
        }
    });
    (addr, seen)
}

/// The SOCKS5 greeting and RFC 1929 authentication (puser/ppass required).
async fn socks_hello(c: &mut TcpStream) {
    let mut hello = [0u8; 3];
    c.read_exact(&mut hello).await.unwrap();
    assert_eq!(hello, [5, 1, 2], "username/password offered");
    c.write_all(&[5, 2]).await.unwrap();
    let mut auth = [0u8; 13];
    c.read_exact(&mut auth).await.unwrap();
    assert_eq!(&auth, b"\x01\x05puser\x05ppass");
    c.write_all(&[1, 0]).await.unwrap();
}

/// A SOCKS5 proxy: CONNECT to the name `vpn.invalid` port 1194 goes to `server`.
async fn socks_tcp_proxy(server: SocketAddr) -> (SocketAddr, Arc<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s2 = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (mut c, _) = l.accept().await.unwrap();
            let seen = Arc::clone(&s2);
            tokio::spawn(async move {
                socks_hello(&mut c).await;
                let mut req = [0u8; 18];
                c.read_exact(&mut req).await.unwrap();
                assert_eq!(&req, b"\x05\x01\x00\x03\x0bvpn.invalid\x04\xaa");
                let mut up = TcpStream::connect(server).await.unwrap();
                c.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
                seen.tunnels.fetch_add(1, Ordering::SeqCst);
                let _ = tokio::io::copy_bidirectional(&mut c, &mut up).await;
            });
        }
    });
    (addr, seen)
}

/// A SOCKS5 proxy with a UDP relay: datagrams for 192.0.2.1:1194 go to `server`, the
/// answers come back with the relay header.
async fn socks_udp_proxy(server: SocketAddr) -> (SocketAddr, Arc<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s2 = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (mut c, _) = l.accept().await.unwrap();
            let seen = Arc::clone(&s2);
            tokio::spawn(async move {
                socks_hello(&mut c).await;
                let mut req = [0u8; 10];
                c.read_exact(&mut req).await.unwrap();
                assert_eq!(req, [5, 3, 0, 1, 0, 0, 0, 0, 0, 0], "UDP ASSOCIATE");
                let relay = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                upstream.connect(server).await.unwrap();
                let port = relay.local_addr().unwrap().port().to_be_bytes();
                c.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, port[0], port[1]])
                    .await
                    .unwrap();
                seen.tunnels.fetch_add(1, Ordering::SeqCst);
                let header = [0u8, 0, 0, 1, 192, 0, 2, 1, 0x04, 0xaa];
                let mut client: Option<SocketAddr> = None;
                let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
                let mut eof = [0u8; 1];
                loop {
                    tokio::select! {
                        r = relay.recv_from(&mut a) => {
                            let (n, from) = r.unwrap();
                            assert_eq!(&a[..10], &header, "datagram for 192.0.2.1:1194");
                            client = Some(from);
                            upstream.send(&a[10..n]).await.unwrap();
                        }
                        r = upstream.recv(&mut b[10..]) => {
                            let n = r.unwrap();
                            b[..10].copy_from_slice(&header);
                            if let Some(to) = client {
                                relay.send_to(&b[..10 + n], to).await.unwrap();
                            }
                        }
                        // The association ends with its TCP connection.
                        _ = c.read(&mut eof) => return,
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A directory with `proxy-auth.txt` (puser/ppass), one per test (they run in parallel).
fn auth_dir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ovpn-rs-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("proxy-auth.txt"), "puser\nppass\n").unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_proxy_with_basic_authfile() {
    let mut server = start_server(false).await;
    let (proxy, seen) = http_proxy(server.addr).await;
    let cfg = client(
        &format!(
            "proto tcp-client\nremote vpn.invalid 1194\nhttp-proxy 127.0.0.1 {} proxy-auth.txt basic\nhttp-proxy-option VERSION 1.1\nhttp-proxy-option AGENT memtest",
            proxy.port()
        ),
        &auth_dir("http-basic"),
    );
    tunnel_works(cfg, &mut server).await;
    assert_eq!(seen.tunnels.load(Ordering::SeqCst), 1);
    assert_eq!(seen.refused.load(Ordering::SeqCst), 0);
}

/// `auto`: the first request has no credentials; the 407's Basic challenge is answered on a
/// second connection with the inline `<http-proxy-user-pass>` given above the `<connection>`
/// (which, as in OpenVPN, takes the profile's proxy lines above it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_proxy_auto_answers_the_challenge() {
    let mut server = start_server(false).await;
    let (proxy, seen) = http_proxy(server.addr).await;
    let cfg = client(
        &format!(
            "proto tcp-client\n<http-proxy-user-pass>\npuser\nppass\n</http-proxy-user-pass>\n<connection>\nremote vpn.invalid 1194\nhttp-proxy 127.0.0.1 {} auto\nhttp-proxy-option VERSION 1.1\nhttp-proxy-option AGENT memtest\n</connection>",
            proxy.port()
        ),
        Path::new("/"),
    );
    assert!(cfg.remotes[0].proxy.is_some());
    tunnel_works(cfg, &mut server).await;
    assert_eq!(seen.refused.load(Ordering::SeqCst), 1);
    assert_eq!(seen.tunnels.load(Ordering::SeqCst), 1);
}

/// Without credentials the 407 fails the attempt with a reason that says what to add.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_proxy_without_credentials_says_why() {
    let server = start_server(false).await;
    let (proxy, seen) = http_proxy(server.addr).await;
    let cfg = client(
        &format!(
            "proto tcp-client\nremote vpn.invalid 1194\nhttp-proxy 127.0.0.1 {}\nhttp-proxy-option VERSION 1.1\nhttp-proxy-option AGENT memtest",
            proxy.port()
        ),
        Path::new("/"),
    );
    let (tun, _handle) = MemoryTun::pair(8);
    let mut c = openvpn_client::connect(cfg, MemoryTunBuilder::new(tun));
    let reason = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let VpnEvent::ConnectFailed { reason, .. } = c.events.recv().await.unwrap() {
                return reason;
            }
        }
    })
    .await
    .unwrap();
    assert!(
        reason.contains("407") && reason.contains("AUTHFILE"),
        "{reason}"
    );
    assert_eq!(seen.refused.load(Ordering::SeqCst), 1);
    c.command(openvpn_client::Command::Disconnect);
    let _ = c.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks_proxy_over_tcp_with_username_and_password() {
    let mut server = start_server(false).await;
    let (proxy, seen) = socks_tcp_proxy(server.addr).await;
    let cfg = client(
        &format!(
            "proto tcp-client\nremote vpn.invalid 1194\nsocks-proxy 127.0.0.1 {} proxy-auth.txt\nsocks-proxy-retry",
            proxy.port()
        ),
        &auth_dir("socks-tcp"),
    );
    tunnel_works(cfg, &mut server).await;
    assert_eq!(seen.tunnels.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks_proxy_relays_udp() {
    let mut server = start_server(true).await;
    let (proxy, seen) = socks_udp_proxy(server.addr).await;
    let cfg = client(
        &format!(
            "proto udp\nremote 192.0.2.1 1194\nsocks-proxy 127.0.0.1 {} proxy-auth.txt",
            proxy.port()
        ),
        &auth_dir("socks-udp"),
    );
    tunnel_works(cfg, &mut server).await;
    assert_eq!(seen.tunnels.load(Ordering::SeqCst), 1);
}

/// `inactive 2`: a connected client with no tunnel traffic stops by itself; traffic (not
/// pings: `ping 1` runs all along) keeps it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactive_stops_an_idle_client() {
    let mut server = start_server(true).await;
    let cfg = client(
        &format!(
            "proto udp\nremote 127.0.0.1 {}\ninactive 3\nping 1",
            server.addr.port()
        ),
        Path::new("/"),
    );
    let (tun, handle) = MemoryTun::pair(64);
    let mut c = openvpn_client::connect(cfg, MemoryTunBuilder::new(tun));
    tokio::time::timeout(Duration::from_secs(20), async {
        while !matches!(c.events.recv().await, Some(VpnEvent::Connected { .. })) {}
    })
    .await
    .unwrap();
    // Traffic every second for 5 s (longer than `inactive`) keeps the client up.
    for seq in 0..5 {
        let ping = icmp_echo_v4([10, 8, 0, 2], [10, 8, 0, 1], seq);
        handle.inject(ping).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(2), server.tun.written()).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let started = std::time::Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(10), c.wait())
        .await
        .expect("the idle client did not stop");
    assert_eq!(reason, ExitReason::Inactive);
    let idle = started.elapsed();
    assert!(idle >= Duration::from_secs(1), "stopped after {idle:?}");
}

/// `passtos`: a UDP relay between client and server sees the outer ECN bits follow the
/// inner packet's TOS (quinn-udp reports the ECN field of received datagrams).
#[test]
fn passtos_copies_the_inner_tos() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut server = start_server(true).await;
        // The relay: client → server datagrams are read with their ECN field.
        let relay = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let relay_addr = relay.local_addr().unwrap();
        let ecn_seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&ecn_seen);
        let server_addr = server.addr;
        std::thread::spawn(move || {
            use std::io::IoSliceMut;
            let state = quinn_udp::UdpSocketState::new((&relay).into()).unwrap();
            let up = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            up.connect(server_addr).unwrap();
            up.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
            relay
                .set_read_timeout(Some(Duration::from_millis(5)))
                .unwrap();
            let mut client = None;
            let mut buf = vec![0u8; 65536];
            let mut back = vec![0u8; 65536];
            loop {
                let mut meta = [quinn_udp::RecvMeta::default()];
                let n = state.recv((&relay).into(), &mut [IoSliceMut::new(&mut buf)], &mut meta);
                if let Ok(1) = n {
                    let m = meta[0];
                    client = Some(m.addr);
                    for d in buf[..m.len].chunks(m.stride) {
                        seen.lock().unwrap().push(m.ecn.map(|e| e as u8));
                        let _ = up.send(d);
                    }
                }
                if let (Ok(n), Some(to)) = (up.recv(&mut back), client) {
                    let _ = relay.send_to(&back[..n], to);
                }
            }
        });
        let cfg = client(
            &format!("proto udp\nremote 127.0.0.1 {}\npasstos", relay_addr.port()),
            Path::new("/"),
        );
        let (tun, handle) = MemoryTun::pair(64);
        let mut c = openvpn_client::connect(cfg, MemoryTunBuilder::new(tun));
        tokio::time::timeout(Duration::from_secs(20), async {
            while !matches!(c.events.recv().await, Some(VpnEvent::Connected { .. })) {}
        })
        .await
        .unwrap();
        // DSCP EF with ECT(1), then ECT(0), then not ECN-capable: one of the datagrams sent
        // after each packet (its own; pings and ACKs keep the last value) has its ECN bits.
        for (seq, (tos, ecn)) in [(0xb9, Some(1)), (0x02, Some(2)), (0x00, None)]
            .into_iter()
            .enumerate()
        {
            let before = ecn_seen.lock().unwrap().len();
            let mut p = icmp_echo_v4([10, 8, 0, 2], [10, 8, 0, 1], seq as u8);
            p[1] = tos;
            handle.inject(p.clone()).await.unwrap();
            let got = tokio::time::timeout(Duration::from_secs(5), server.tun.written())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got, p);
            let v = ecn_seen.lock().unwrap();
            assert!(
                v[before..].contains(&ecn),
                "TOS {tos:#x}: ECN seen {:?}",
                &v[before..]
            );
        }
        c.command(openvpn_client::Command::Disconnect);
        let _ = c.wait().await;
    });
}
