//! `workers 2`: our server as two worker cores on two SO_REUSEPORT sockets sharing one
//! in-memory tun, with twelve of our clients over UDP loopback. The clients land on both
//! workers (peer-ids of both parities), get distinct addresses from the shared pool, and
//! packets flow both ways for every client — including tun packets read by the worker that
//! does not own the client (forwarded) — and the status file, the management interface
//! (`status 2`, `load-stats`, `kill`) and `/metrics` see all twelve across both workers.
//! `max-clients 12` is one limit for both workers: all twelve connect however the kernel
//! spreads them, and a thirteenth is refused.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openvpn_client::{ClientConfig, MemoryTunBuilder, VpnEvent};
use openvpn_server::config::Family;
use openvpn_tests::{icmp_echo_v4, pki};
use openvpn_tun::MemoryTun;

const CLIENTS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_clients_spread_over_two_workers_and_all_reach_the_tun_both_ways() {
    // max-clients 12 with twelve clients: an even split (6 per worker) would refuse some
    // whenever the kernel does not send exactly six to each worker.
    let mut server = Server::start(&format!("duplicate-cn\nmax-clients {CLIENTS}\n")).await;
    let (status, mgmt, metrics_port) = (
        server.dir.join("status.txt"),
        server.dir.join("mgmt.sock"),
        server.metrics_port,
    );
    let mut clients: Vec<_> = (0..CLIENTS)
        .map(|_| start_client(&server.client_profile, 256))
        .collect();
    // Each client's tunnel address and peer-id.
    let mut addrs: Vec<Ipv4Addr> = Vec::new();
    let mut peer_ids = Vec::new();
    for (client, _) in &mut clients {
        let (addr, pid) = connected(client).await;
        addrs.push(addr);
        peer_ids.push(pid);
    }
    let distinct: BTreeSet<_> = addrs.iter().collect();
    assert_eq!(
        distinct.len(),
        CLIENTS,
        "addresses handed out twice: {addrs:?}"
    );
    let parities: BTreeSet<u32> = peer_ids.iter().map(|p| p % 2).collect();
    assert_eq!(
        parities.len(),
        2,
        "all {CLIENTS} clients landed on one worker (peer-ids {peer_ids:?}); the kernel's \
         SO_REUSEPORT hash should spread them"
    );
    // One more is over max-clients on whichever worker it reaches.
    let (mut extra, extra_tun) = start_client(&server.client_profile, 16);
    let refused = tokio::time::timeout(Duration::from_secs(3), connected(&mut extra))
        .await
        .is_err();
    assert!(refused, "a client over max-clients {CLIENTS} connected");
    extra.command(openvpn_client::Command::Disconnect);
    let _ = extra.wait().await;
    drop(extra_tun);

    // Client → tun and tun → client for every client, several rounds.
    exchange(
        &mut server,
        &mut clients,
        &addrs,
        5,
        Duration::from_millis(50),
    )
    .await;

    // The status file (worker 0 writes everyone's rows) lists all of them.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&status).unwrap_or_default();
        let listed = text
            .lines()
            .filter(|l| l.starts_with("CLIENT_LIST,"))
            .count();
        if listed == CLIENTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status file lists {listed} of {CLIENTS} clients:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The management interface answers from both workers.
    let status2 = openvpn_tests::management_command(&mgmt, "status 2\n", "END").await;
    let listed = status2
        .lines()
        .filter(|l| l.starts_with("CLIENT_LIST,"))
        .count();
    assert_eq!(listed, CLIENTS, "management status 2:\n{status2}");
    let load = openvpn_tests::management_command(&mgmt, "load-stats\n", "SUCCESS").await;
    assert!(load.contains(&format!("nclients={CLIENTS},")), "{load}");
    let metrics = openvpn_tests::scrape_metrics(metrics_port).await;
    assert!(
        metrics.contains(&format!("\nopenvpn_server_clients_connected {CLIENTS}\n"))
            && metrics.contains(&format!("\nopenvpn_server_handshakes_total {CLIENTS}\n")),
        "{metrics}"
    );
    let peers = metrics
        .lines()
        .filter(|l| l.starts_with("openvpn_client_sent_packets_total{"))
        .count();
    assert_eq!(peers, CLIENTS, "{metrics}");
    // `kill` by common name reaches every worker's clients.
    let killed = openvpn_tests::management_command(&mgmt, "kill client1\n", "\n").await;
    assert!(
        killed.contains(&format!("{CLIENTS} client(s) killed")),
        "{killed}"
    );

    server.finish(clients).await;
}

/// Sends `rounds` ICMP echoes from every client to the server's tun and back (pausing
/// `pause` after each round) and requires every one to arrive, counted per client.
async fn exchange(
    server: &mut Server,
    clients: &mut [(openvpn_client::ClientHandle, openvpn_tun::MemoryTunHandle)],
    addrs: &[Ipv4Addr],
    rounds: u8,
    pause: Duration,
) {
    let by_addr: HashMap<Ipv4Addr, usize> =
        addrs.iter().enumerate().map(|(i, a)| (*a, i)).collect();
    let mut up = vec![0u8; clients.len()];
    let mut down = vec![0u8; clients.len()];
    for seq in 0..rounds {
        for (i, (_, handle)) in clients.iter().enumerate() {
            handle
                .inject(icmp_echo_v4(addrs[i].octets(), [10, 8, 0, 1], seq))
                .await
                .unwrap();
            server
                .tun
                .inject(icmp_echo_v4([10, 8, 0, 1], addrs[i].octets(), seq))
                .await
                .unwrap();
        }
        tokio::time::sleep(pause).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while (up.iter().chain(&down).any(|n| *n < rounds)) && Instant::now() < deadline {
        while let Some(p) = server.tun.try_written() {
            let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
            if let Some(i) = by_addr.get(&src) {
                up[*i] += 1;
            }
        }
        for (i, (_, handle)) in clients.iter_mut().enumerate() {
            while handle.try_written().is_some() {
                down[i] += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        up.iter().all(|n| *n == rounds),
        "client → server packets per client (of {rounds}): {up:?}"
    );
    assert!(
        down.iter().all(|n| *n == rounds),
        "server → client packets per client (of {rounds}): {down:?}"
    );
}

/// Starts one of our clients on `profile` with an in-memory tun of `queue` packets.
fn start_client(
    profile: &str,
    queue: usize,
) -> (openvpn_client::ClientHandle, openvpn_tun::MemoryTunHandle) {
    let ccfg = ClientConfig::from_ovpn(profile, std::path::Path::new("/")).unwrap();
    let (tun, handle) = MemoryTun::pair(queue);
    (
        openvpn_client::connect(ccfg, MemoryTunBuilder::new(tun)),
        handle,
    )
}

/// Waits (30 s at most) until `client` is connected: its tunnel IPv4 address and peer-id.
async fn connected(client: &mut openvpn_client::ClientHandle) -> (Ipv4Addr, u32) {
    let (addr, pid) = tokio::time::timeout(Duration::from_secs(30), async {
        let mut pid = None;
        loop {
            match client.events.recv().await.expect("client stopped") {
                VpnEvent::PushedOptions(p) => pid = p.peer_id,
                VpnEvent::Connected { settings, .. } => {
                    return (settings.ipv4.expect("no IPv4 address").0, pid);
                }
                _ => {}
            }
        }
    })
    .await
    .expect("a client did not connect");
    (addr, pid.expect("no peer-id pushed"))
}

/// Our server with `workers 2` on two SO_REUSEPORT sockets and an in-memory tun, with a
/// status file, a management socket and `/metrics`; `extra` config lines.
struct Server {
    dir: std::path::PathBuf,
    metrics_port: u16,
    tun: openvpn_tun::MemoryTunHandle,
    /// Its port on 127.0.0.1 (both workers' sockets).
    port: u16,
    /// A client profile for it (client1's certificate).
    client_profile: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Disconnects `clients`, stops the server and removes its directory.
    async fn finish(
        self,
        clients: Vec<(openvpn_client::ClientHandle, openvpn_tun::MemoryTunHandle)>,
    ) {
        let mut clients = clients;
        for (client, _) in &mut clients {
            client.command(openvpn_client::Command::Disconnect);
        }
        for (client, _) in clients {
            let _ = client.wait().await;
        }
        let _ = self.stop.send(());
        self.task.await.unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    async fn start(extra: &str) -> Server {
        Self::start_on(extra, false).await
    }

    /// [`Server::start`] over UDP, or over TCP (one listener, connections dealt in turn).
    async fn start_on(extra: &str, tcp: bool) -> Server {
        Self::start_with(extra, tcp, openvpn_server::runtime::ServeOptions::default()).await
    }

    /// [`Server::start_on`] with serve options (an authenticator).
    async fn start_with(
        extra: &str,
        tcp: bool,
        opts: openvpn_server::runtime::ServeOptions,
    ) -> Server {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let pki = pki();
        let dir = std::env::temp_dir().join(format!(
            "ovrs-workers-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server_text = format!(
            "mode server\ntls-server\ntopology subnet\nproto {}\nserver 10.8.0.0 255.255.255.0\n\
             keepalive 10 60\nworkers 2\nstatus {} 1\nstatus-version 2\n\
             management {} unix\nmetrics-listen 127.0.0.1:{metrics_port}\n{extra}\n\
             <ca>\n{ca}</ca>\n<cert>\n{c}</cert>\n<key>\n{k}</key>\n",
            if tcp { "tcp-server" } else { "udp" },
            dir.join("status.txt").display(),
            dir.join("mgmt.sock").display(),
            ca = pki.ca,
            c = pki.server.0,
            k = pki.server.1
        );
        let scfg = openvpn_tests::server_config(&server_text);
        assert_eq!(scfg.workers, 2);
        let (listeners, port) = if tcp {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let l = openvpn_server::workers::Listeners::Tcp {
                listener,
                workers: 2,
            };
            (l, port)
        } else {
            let sockets = openvpn_server::workers::bind_udp_sockets(
                "127.0.0.1:0".parse().unwrap(),
                Family::V4,
                2,
            )
            .unwrap();
            let port = sockets[0].local_addr().unwrap().port();
            assert_eq!(sockets[1].local_addr().unwrap().port(), port);
            (openvpn_server::workers::Listeners::Udp(sockets), port)
        };
        let (srv_tun, tun) = MemoryTun::pair(1024);
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            openvpn_server::workers::serve_workers(
                scfg,
                Arc::new(srv_tun),
                listeners,
                async {
                    let _ = stop_rx.await;
                },
                opts,
            )
            .await
            .expect("the server failed");
        });
        let client_profile = format!(
            "client\nproto {}\nremote 127.0.0.1 {port}\nremote-cert-tls server\n\
             <ca>\n{ca}</ca>\n<cert>\n{c}</cert>\n<key>\n{k}</key>\n",
            if tcp { "tcp-client" } else { "udp" },
            ca = pki.ca,
            c = pki.client.0,
            k = pki.client.1
        );
        Server {
            dir,
            metrics_port,
            tun,
            port,
            client_profile,
            stop,
            task,
        }
    }
}

/// Without `duplicate-cn`, six connections with the same certificate one after the other
/// (from six sockets: both workers get some): each closes the earlier ones on *every*
/// worker, so one client is left (two if the other worker's were not told).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_duplicate_cn_a_new_connection_closes_the_old_one_on_every_worker() {
    let server = Server::start("").await;
    let mgmt = server.dir.join("mgmt.sock");
    let mut clients = Vec::new();
    let mut peer_ids = Vec::new();
    for _ in 0..6 {
        let (mut client, handle) = start_client(&server.client_profile, 16);
        peer_ids.push(connected(&mut client).await.1);
        clients.push((client, handle));
    }
    let parities: BTreeSet<u32> = peer_ids.iter().map(|p| p % 2).collect();
    let load = openvpn_tests::management_command(&mgmt, "load-stats\n", "SUCCESS").await;
    assert!(
        load.contains("nclients=1,"),
        "after 6 connections with one name (peer-ids {peer_ids:?}, workers {parities:?}): {load}"
    );
    server.finish(clients).await;
}

/// A NAT between the client and the server whose outside port changes on request.
struct Nat {
    /// Where the client sends (the NAT's inside address).
    inside: std::net::SocketAddr,
    rebind: tokio::sync::mpsc::UnboundedSender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Nat {
    async fn start(server: std::net::SocketAddr) -> Nat {
        let inside_sock = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let inside = inside_sock.local_addr().unwrap();
        let (rebind, mut rebind_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let task = tokio::spawn(async move {
            let mut outside = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut client: Option<std::net::SocketAddr> = None;
            let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
            loop {
                tokio::select! {
                    r = inside_sock.recv_from(&mut a) => {
                        let Ok((n, from)) = r else { return };
                        client = Some(from);
                        let _ = outside.send_to(&a[..n], server).await;
                    }
                    r = outside.recv_from(&mut b) => {
                        let Ok((n, _)) = r else { return };
                        if let Some(c) = client {
                            let _ = inside_sock.send_to(&b[..n], c).await;
                        }
                    }
                    r = rebind_rx.recv() => {
                        if r.is_none() { return; }
                        outside = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                    }
                }
            }
        });
        Nat {
            inside,
            rebind,
            task,
        }
    }
}

/// A client behind a NAT that rebinds its outside port six times: every new 4-tuple is
/// hashed to one of the two sockets, so (with probability 1 - 2⁻⁶) its datagrams reach the
/// worker that does not own it at least once; the data is forwarded to the owner, which
/// accepts the float after the packet authenticated, and the control channel keeps working
/// from the new address (renegotiation every 2 s; at least one completes even on a loaded
/// machine): at least 80 % of the packets arrive in each direction (a packet or two per
/// rebind is lost on a quiet machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_floating_across_workers_keeps_its_session_and_renegotiates() {
    let mut server = Server::start("reneg-sec 2\n").await;
    let nat = Nat::start(([127, 0, 0, 1], server.port).into()).await;
    // The client talks to the NAT's inside port; the NAT forwards to the server.
    let client_text = server.client_profile.replace(
        &format!("remote 127.0.0.1 {}\n", server.port),
        &format!("remote 127.0.0.1 {}\n", nat.inside.port()),
    );
    assert_ne!(
        client_text, server.client_profile,
        "the profile still names the server"
    );
    let ccfg = ClientConfig::from_ovpn(&client_text, std::path::Path::new("/")).unwrap();
    let (tun, mut handle) = MemoryTun::pair(1024);
    let mut client = openvpn_client::connect(ccfg, MemoryTunBuilder::new(tun));
    let srv_handle = &mut server.tun;
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let VpnEvent::Connected { settings, .. } =
                client.events.recv().await.expect("client stopped")
            {
                return settings.ipv4.expect("no IPv4").0;
            }
        }
    })
    .await
    .expect("no connection");

    // 8 s, a packet each way every 20 ms, a rebind every 500 ms at first.
    let start = Instant::now();
    let mut sent = 0u32;
    let (mut up, mut down) = (0u32, 0u32);
    let mut rebinds = 0;
    while start.elapsed() < Duration::from_secs(8) {
        handle
            .inject(icmp_echo_v4(addr.octets(), [10, 8, 0, 1], sent as u8))
            .await
            .unwrap();
        srv_handle
            .inject(icmp_echo_v4([10, 8, 0, 1], addr.octets(), sent as u8))
            .await
            .unwrap();
        sent += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Six rebinds in the first 3.5 s, then a quiet stretch in which a renegotiation
        // (every 2 s) can complete from the last address.
        if start.elapsed() > Duration::from_millis(500 * (rebinds + 1)) && rebinds < 6 {
            nat.rebind.send(()).unwrap();
            rebinds += 1;
        }
        while srv_handle.try_written().is_some() {
            up += 1;
        }
        while handle.try_written().is_some() {
            down += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    while srv_handle.try_written().is_some() {
        up += 1;
    }
    while handle.try_written().is_some() {
        down += 1;
    }
    let mut renegotiated = 0;
    while let Ok(ev) = client.events.try_recv() {
        if matches!(ev, VpnEvent::Renegotiated { .. }) {
            renegotiated += 1;
        }
        assert!(
            !matches!(ev, VpnEvent::Reconnecting { .. }),
            "the session was lost: {ev:?}"
        );
    }
    assert!(renegotiated >= 1, "no renegotiation");
    // A datagram in flight at a rebind may be lost (the old outside socket is gone), one
    // or two per rebind, more on a machine busy with other tests; the session itself must
    // not be. Without the hand-over between workers about half would be lost (the time
    // spent on addresses hashed to the other socket).
    assert!(
        up * 10 >= sent * 8 && down * 10 >= sent * 8,
        "client → server {up}, server → client {down} of {sent} packets ({rebinds} rebinds)"
    );
    nat.task.abort();
    server.finish(vec![(client, handle)]).await;
}

/// Over TCP (`proto tcp-server`, `workers 2`): one listener, connections dealt to the
/// workers in turn; four clients all connect and pass packets both ways (the tun reads of
/// the worker that does not own a client are handed over), and management sees all four.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_clients_are_dealt_to_both_workers_and_pass_packets() {
    let mut server = Server::start_on("duplicate-cn\n", true).await;
    let mut clients = Vec::new();
    let mut addrs = Vec::new();
    let mut peer_ids = Vec::new();
    for _ in 0..4 {
        let (mut client, handle) = start_client(&server.client_profile, 64);
        let (addr, pid) = connected(&mut client).await;
        addrs.push(addr);
        peer_ids.push(pid);
        clients.push((client, handle));
    }
    let parities: BTreeSet<u32> = peer_ids.iter().map(|p| p % 2).collect();
    assert_eq!(
        parities.len(),
        2,
        "connections were not dealt to both workers: {peer_ids:?}"
    );
    exchange(&mut server, &mut clients, &addrs, 3, Duration::ZERO).await;
    let status =
        openvpn_tests::management_command(&server.dir.join("mgmt.sock"), "status 2\n", "END").await;
    let listed = status
        .lines()
        .filter(|l| l.starts_with("CLIENT_LIST,"))
        .count();
    assert_eq!(listed, 4, "{status}");
    server.finish(clients).await;
}

/// Accepts "alice" (pushing a route), denies anyone else, and parks "carol" for the test to
/// decide later.
#[derive(Default)]
struct TestAuth {
    parked: std::sync::Mutex<Vec<openvpn_server::auth::AuthHandle>>,
}

impl openvpn_server::auth::Authenticator for TestAuth {
    fn authenticate(
        &self,
        req: openvpn_server::auth::AuthRequest,
        h: openvpn_server::auth::AuthHandle,
    ) {
        match req.username.as_str() {
            "alice" => {
                h.accept(
                    openvpn_server::auth::ClientOptions::default()
                        .push("route 10.99.0.0 255.255.0.0"),
                );
            }
            "carol" => {
                h.pending(Duration::from_secs(60), "OPEN_URL:https://sso.example/x");
                self.parked.lock().unwrap().push(h);
            }
            _ => {
                h.deny("unknown user", Some("go away".into()));
            }
        }
    }
}

/// An embedder's `Authenticator` with `workers 2`: eight "alice" clients land on both
/// workers and each is accepted with its pushed route, "bob" is denied, and "carol" is
/// parked (pending) and accepted later through her handle — the decision reaches the worker
/// that owns her.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticator_decides_for_clients_on_both_workers() {
    let auth = Arc::new(TestAuth::default());
    let server = Server::start_with(
        "duplicate-cn\n",
        false,
        openvpn_server::runtime::ServeOptions::with_authenticator(auth.clone()),
    )
    .await;
    let connect = |user: &str| {
        let profile = server.client_profile.replace(
            "remote-cert-tls server\n",
            &format!(
                "remote-cert-tls server\nconnect-retry-max 1\nsetenv IV_SSO openurl\n\
                 <auth-user-pass>\n{user}\npw\n</auth-user-pass>\n"
            ),
        );
        let ccfg = ClientConfig::from_ovpn(&profile, std::path::Path::new("/")).unwrap();
        let (tun, handle) = MemoryTun::pair(16);
        (
            openvpn_client::connect(ccfg, MemoryTunBuilder::new(tun)),
            handle,
        )
    };
    // Until Connected (peer-id, pushed routes) or AuthFailed (None).
    async fn outcome(c: &mut openvpn_client::ClientHandle) -> Option<(u32, Vec<String>)> {
        tokio::time::timeout(Duration::from_secs(20), async {
            let mut pushed = None;
            loop {
                match c.events.recv().await? {
                    VpnEvent::PushedOptions(p) => {
                        let routes = p.routes.iter().map(|r| r.network.to_string()).collect();
                        pushed = Some((p.peer_id?, routes));
                    }
                    VpnEvent::Connected { .. } => return pushed,
                    VpnEvent::AuthFailed { .. } => return None,
                    _ => {}
                }
            }
        })
        .await
        .expect("no decision within 20 s")
    }
    let mut clients = Vec::new();
    let mut peer_ids = Vec::new();
    for _ in 0..8 {
        let (mut c, h) = connect("alice");
        let (pid, routes) = outcome(&mut c).await.expect("alice was not accepted");
        assert_eq!(routes, ["10.99.0.0"], "the authenticator's push");
        peer_ids.push(pid);
        clients.push((c, h));
    }
    let parities: BTreeSet<u32> = peer_ids.iter().map(|p| p % 2).collect();
    assert_eq!(parities.len(), 2, "all on one worker: {peer_ids:?}");
    let (mut bob, _bh) = connect("bob");
    assert!(outcome(&mut bob).await.is_none(), "bob was accepted");
    let _ = bob.wait().await;
    // Carol waits until the test decides, from outside the server.
    let (mut carol, ch) = connect("carol");
    let decide = {
        let auth = auth.clone();
        tokio::spawn(async move {
            loop {
                if let Some(h) = auth.parked.lock().unwrap().pop() {
                    h.accept(openvpn_server::auth::ClientOptions::default());
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    assert!(
        outcome(&mut carol).await.is_some(),
        "carol's late accept did not arrive"
    );
    decide.await.unwrap();
    clients.push((carol, ch));
    server.finish(clients).await;
}
