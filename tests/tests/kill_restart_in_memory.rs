//! `kill` / `client-kill` on the server's management interface, and a server shutdown with
//! `explicit-exit-notify`: the `RESTART` goes out on the reliable control channel and is
//! retransmitted when the datagram is lost (a proxy between our client and our server drops
//! it); the client reconnects.
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use openvpn_client::{ClientConfig, MemoryTunBuilder, VpnEvent};
use openvpn_tun::MemoryTun;
use tokio::net::UdpSocket;

/// P_CONTROL_V1.
const CONTROL_V1: u8 = 4;

/// A UDP proxy for one client: `drop_control` drops the next server → client P_CONTROL_V1.
struct Proxy {
    port: u16,
    drop_control: Arc<AtomicBool>,
    dropped: Arc<AtomicU32>,
}

async fn proxy(server: SocketAddr) -> Proxy {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let port = front.local_addr().unwrap().port();
    let drop_control = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicU32::new(0));
    let (dc, dd) = (drop_control.clone(), dropped.clone());
    tokio::spawn(async move {
        // One back socket per client address (a reconnecting client uses a new port).
        let mut backs: std::collections::HashMap<SocketAddr, Arc<UdpSocket>> = Default::default();
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = front.recv_from(&mut buf).await else {
                return;
            };
            let back = match backs.get(&from) {
                Some(b) => b.clone(),
                None => {
                    let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                    b.connect(server).await.unwrap();
                    let (b2, f2, dc, dd) = (b.clone(), front.clone(), dc.clone(), dd.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65536];
                        while let Ok(n) = b2.recv(&mut buf).await {
                            let op = buf.first().map_or(0, |b| b >> 3);
                            if op == CONTROL_V1 && dc.swap(false, Ordering::SeqCst) {
                                dd.fetch_add(1, Ordering::SeqCst);
                                continue;
                            }
                            let _ = f2.send_to(&buf[..n], from).await;
                        }
                    });
                    backs.insert(from, b.clone());
                    b
                }
            };
            let _ = back.send(&buf[..n]).await;
        }
    });
    Proxy {
        port,
        drop_control,
        dropped,
    }
}

async fn until(
    c: &mut openvpn_client::ClientHandle,
    secs: u64,
    pred: impl Fn(&VpnEvent) -> bool,
) -> Option<Vec<VpnEvent>> {
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(secs), async {
        while let Some(ev) = c.events.recv().await {
            let done = pred(&ev);
            seen.push(ev);
            if done {
                return Some(seen);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// `kill`: a management command, or `None` for a server shutdown (explicit-exit-notify 1);
/// `lose`: the proxy drops the first RESTART datagram.
async fn lost_restart_is_retransmitted(kill: Option<&str>, lose: bool) {
    let name = kill.map_or("shutdown", |k| k.split(' ').next().unwrap());
    let pki = openvpn_tests::pki();
    let (sc, sk) = &pki.server;
    let ca = &pki.ca;
    let d = std::env::temp_dir().join(format!("ovrs-kill-{name}-{lose}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let sock = d.join("mgmt.sock");
    let text = format!(
        "server 10.8.0.0 255.255.255.0\ntopology subnet\nkeepalive 10 60\nexplicit-exit-notify 1\nmanagement {} unix\n<ca>\n{ca}</ca>\n<cert>\n{sc}</cert>\n<key>\n{sk}</key>\n",
        sock.display()
    );
    let cfg = openvpn_tests::server_config(&text);
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = udp.local_addr().unwrap();
    let (tun, _keep) = MemoryTun::pair(16);
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(openvpn_server::runtime::serve(
        cfg,
        Arc::new(tun),
        Some(udp),
        None,
        async {
            let _ = stop_rx.await;
        },
    ));
    let p = proxy(server_addr).await;
    let (cc, ck) = &pki.client;
    let profile = format!(
        "client\nremote 127.0.0.1 {} udp\n<ca>\n{ca}</ca>\n<cert>\n{cc}</cert>\n<key>\n{ck}</key>\n",
        p.port
    );
    let ccfg = ClientConfig::from_ovpn(&profile, Path::new("/")).unwrap();
    let (ctun, _h) = MemoryTun::pair(16);
    let mut c = openvpn_client::connect(ccfg, MemoryTunBuilder::new(ctun));
    until(&mut c, 20, |e| matches!(e, VpnEvent::Connected { .. }))
        .await
        .expect("connected");

    p.drop_control.store(lose, Ordering::SeqCst);
    let t = Instant::now();
    let mut stop = Some(stop);
    match kill {
        Some(kill) => {
            let reply =
                openvpn_tests::management_command(&sock, &format!("{kill}\r\n"), "\n").await;
            let reply = reply.trim_end();
            assert!(reply.starts_with("SUCCESS:"), "{kill}: {reply}");
        }
        None => {
            let _ = stop.take().unwrap().send(());
        }
    }
    let seen = until(
        &mut c,
        15,
        |e| matches!(e, VpnEvent::Reconnecting { reason } if reason.contains("RESTART")),
    )
    .await
    .unwrap_or_else(|| panic!("{name}: no RESTART reached the client"));
    let took = t.elapsed();
    assert_eq!(
        p.dropped.load(Ordering::SeqCst),
        u32::from(lose),
        "{seen:#?}"
    );
    println!("{name} (lost once: {lose}): RESTART reached the client after {took:?}");
    match stop {
        Some(stop) => {
            until(&mut c, 20, |e| matches!(e, VpnEvent::Connected { .. }))
                .await
                .expect("reconnected after RESTART");
            let _ = stop.send(());
            server.await.unwrap().unwrap();
        }
        None => {
            // The server waits for the acknowledgement, not longer (EXIT_DRAIN is 3 s).
            tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .expect("the server stops after the acknowledgement")
                .unwrap()
                .unwrap();
            let stopped = t.elapsed();
            println!("{name} (lost once: {lose}): server stopped after {stopped:?}");
            if !lose {
                assert!(stopped < Duration::from_secs(2), "{stopped:?}");
            }
        }
    }
    c.command(openvpn_client::Command::Disconnect);
    let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_by_common_name_retransmits_a_lost_restart() {
    lost_restart_is_retransmitted(Some("kill client1"), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_retransmits_a_lost_restart() {
    // Without management-client-auth the first client's CID is 1.
    lost_restart_is_retransmitted(Some("client-kill 1"), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_exit_notify_retransmits_a_lost_restart() {
    lost_restart_is_retransmitted(None, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_only_for_the_acknowledgement() {
    lost_restart_is_retransmitted(None, false).await;
}
