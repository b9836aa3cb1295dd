//! The embedder's `Authenticator` (openvpn_server::auth) with our client against our server, in
//! memory: accept with per-client options, deny with a client reason, a pending decision
//! completed later while another client keeps passing packets, a blocking authenticator that
//! does not stall the packet path, a CR_TEXT challenge answered by the client
//! (`CR_RESPONSE`), and a pending key that times out.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openvpn_client::{ClientConfig, ClientHandle, MemoryTunBuilder, VpnEvent};
use openvpn_server::auth::{
    AuthHandle, AuthRequest, Authenticator, ChallengeResponse, ClientOptions,
};
use openvpn_server::runtime::ServeOptions;
use openvpn_tests::{Pki, icmp_echo_v4};
use openvpn_tun::{MemoryTun, MemoryTunHandle};

const OTP_PROMPT: &str = "CR_TEXT:R,E:Enter your OTP";

#[derive(Default)]
struct TestAuth {
    seen: Mutex<Vec<AuthRequest>>,
    parked: Mutex<Vec<AuthHandle>>,
    responses: Mutex<Vec<ChallengeResponse>>,
}

impl Authenticator for TestAuth {
    fn authenticate(&self, req: AuthRequest, h: AuthHandle) {
        self.seen.lock().unwrap().push(req.clone());
        match (req.username.as_str(), req.password.as_str()) {
            ("alice", "right") => {
                h.accept(
                    ClientOptions::default()
                        .ifconfig_push("10.8.0.50".parse().unwrap())
                        .push("route 10.99.0.0 255.255.0.0"),
                );
            }
            ("bob", _) => {
                h.deny("bad password", Some("go away bob".into()));
            }
            // Decided later by the test, through the parked handle.
            ("carol", _) | ("hank", _) => {
                h.pending(Duration::from_secs(60), "OPEN_URL:https://sso.example/x");
                self.parked.lock().unwrap().push(h);
            }
            // A blocking implementation (a slow directory lookup): runs off the packet path.
            ("dave", _) => {
                std::thread::sleep(Duration::from_secs(2));
                h.accept(ClientOptions::default());
            }
            // Dynamic challenge: the answer arrives in challenge_response.
            ("erin", _) | ("frank", _) => {
                h.pending(Duration::from_secs(60), OTP_PROMPT);
            }
            // Pending and never decided: rejected when the timeout passes.
            ("gina", _) => {
                h.pending(Duration::from_secs(2), "OPEN_URL:https://sso.example/never");
            }
            _ => {
                h.deny("unknown user", None);
            }
        }
    }

    fn challenge_response(&self, r: ChallengeResponse, h: AuthHandle) {
        self.responses.lock().unwrap().push(r.clone());
        if r.response().as_deref() == Some("123456") {
            h.accept(ClientOptions::default().push("route 10.77.0.0 255.255.0.0"));
        } else {
            h.deny("wrong OTP", Some("wrong one-time password".into()));
        }
    }
}

struct Server {
    port: u16,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), String>>,
    tun: MemoryTunHandle,
}

async fn server(pki: &Pki, auth: Arc<TestAuth>) -> Server {
    server_with(pki, auth, "").await
}

async fn server_with(pki: &Pki, auth: Arc<TestAuth>, extra: &str) -> Server {
    let (sc, sk) = &pki.server;
    let ca = &pki.ca;
    let text = format!(
        "server 10.8.0.0 255.255.255.0\ntopology subnet\nkeepalive 10 60\nduplicate-cn\n{extra}\n<ca>\n{ca}</ca>\n<cert>\n{sc}</cert>\n<key>\n{sk}</key>\n"
    );
    let cfg = openvpn_tests::server_config(&text);
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = udp.local_addr().unwrap().port();
    let (tun, keep) = MemoryTun::pair(256);
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        openvpn_server::runtime::serve_with(
            cfg,
            Arc::new(tun),
            Some(udp),
            None,
            async {
                let _ = stop_rx.await;
            },
            ServeOptions::with_authenticator(auth),
        )
        .await
        .map_err(|e| e.to_string())
    });
    Server {
        port,
        stop,
        task,
        tun: keep,
    }
}

fn start(pki: &Pki, port: u16, user: &str, pass: &str) -> (ClientHandle, MemoryTunHandle) {
    let (cc, ck) = &pki.client;
    let ca = &pki.ca;
    let profile = format!(
        "client\nremote 127.0.0.1 {port} udp\nconnect-retry-max 1\nsetenv IV_GUI_VER \"authtest 1.0\"\nsetenv IV_SSO openurl,crtext\n<auth-user-pass>\n{user}\n{pass}\n</auth-user-pass>\n<ca>\n{ca}</ca>\n<cert>\n{cc}</cert>\n<key>\n{ck}</key>\n"
    );
    let ccfg = ClientConfig::from_ovpn(&profile, std::path::Path::new("/")).unwrap();
    let (ctun, h) = MemoryTun::pair(64);
    (
        openvpn_client::connect(ccfg, MemoryTunBuilder::new(ctun)),
        h,
    )
}

/// Events until Connected / AuthFailed (or `secs` pass); `on_info` sees INFO texts.
async fn until_done(
    c: &mut ClientHandle,
    secs: u64,
    mut on_info: impl FnMut(&str),
) -> Vec<VpnEvent> {
    let mut events = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(secs), async {
        while let Some(ev) = c.events.recv().await {
            if let VpnEvent::Info(t) = &ev {
                on_info(t);
            }
            let done = matches!(ev, VpnEvent::Connected { .. } | VpnEvent::AuthFailed { .. });
            events.push(ev);
            if done {
                break;
            }
        }
    })
    .await;
    events
}

fn connected(events: &[VpnEvent]) -> Option<&openvpn_client::TunSettings> {
    events.iter().find_map(|e| match e {
        VpnEvent::Connected { settings, .. } => Some(settings),
        _ => None,
    })
}

fn auth_failed(events: &[VpnEvent]) -> Option<&str> {
    events.iter().find_map(|e| match e {
        VpnEvent::AuthFailed { reason } => Some(reason.as_str()),
        _ => None,
    })
}

async fn disconnect(c: ClientHandle) {
    c.command(openvpn_client::Command::Disconnect);
    let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
}

/// Sends `n` pings from alice (10.8.0.50) through the tunnel, each must reach the server's
/// tun within 1 s; returns the slowest.
async fn alice_pings(alice: &MemoryTunHandle, srv: &mut MemoryTunHandle, n: u8) -> Duration {
    let mut worst = Duration::ZERO;
    for seq in 0..n {
        let p = icmp_echo_v4([10, 8, 0, 50], [10, 8, 0, 1], seq);
        let t = Instant::now();
        alice.inject(p.clone()).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(1), srv.written())
            .await
            .unwrap_or_else(|_| panic!("ping {seq} from alice stalled"))
            .unwrap();
        assert_eq!(got, p);
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticator_accepts_denies_and_decides_later() {
    let pki = openvpn_tests::pki();
    let auth = Arc::new(TestAuth::default());
    let mut srv = server(&pki, auth.clone()).await;

    // Accept, with an ifconfig-push and a pushed route.
    let (mut alice, alice_tun) = start(&pki, srv.port, "alice", "right");
    let ev = until_done(&mut alice, 20, |_| {}).await;
    let s = connected(&ev).unwrap_or_else(|| panic!("alice: {ev:#?}"));
    assert_eq!(s.ipv4, Some(("10.8.0.50".parse().unwrap(), 24)));
    assert!(
        s.routes_v4.contains(&("10.99.0.0".parse().unwrap(), 16)),
        "{s:?}"
    );
    {
        let seen = auth.seen.lock().unwrap();
        let r = &seen[0];
        assert_eq!(r.username, "alice");
        assert_eq!(r.password, "right");
        assert_eq!(r.common_name.as_deref(), Some("client1"));
        assert_eq!(r.key_id, 0);
        assert!(!r.reauth);
        assert_eq!(r.peer.ip().to_string(), "127.0.0.1");
        assert_eq!(r.peer_info("IV_GUI_VER"), Some("authtest 1.0"));
        assert_eq!(r.peer_info("IV_SSO"), Some("openurl,crtext"));
        assert!(r.peer_info("IV_VER").is_some(), "{r:?}");
        assert!(
            !format!("{r:?}").contains("right"),
            "Debug shows the password"
        );
    }

    // Deny, with the client reason in AUTH_FAILED.
    let (mut bob, _bt) = start(&pki, srv.port, "bob", "x");
    let ev = until_done(&mut bob, 20, |_| {}).await;
    let reason = auth_failed(&ev).unwrap_or_else(|| panic!("bob: {ev:#?}"));
    assert!(reason.contains("go away bob"), "{reason}");
    disconnect(bob).await;

    // Pending (carol) and a blocking authenticator (dave) while alice keeps pinging.
    let (mut carol, _ct) = start(&pki, srv.port, "carol", "x");
    let (mut dave, _dt) = start(&pki, srv.port, "dave", "x");
    let carol_infos = Arc::new(Mutex::new(Vec::<String>::new()));
    let ci = carol_infos.clone();
    let carol_events = tokio::spawn(async move {
        let ev = until_done(&mut carol, 30, |t| ci.lock().unwrap().push(t.to_owned())).await;
        (carol, ev)
    });
    let dave_events = tokio::spawn(async move {
        let ev = until_done(&mut dave, 30, |_| {}).await;
        (dave, ev)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while auth.parked.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "carol never reached the authenticator"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let worst = alice_pings(&alice_tun, &mut srv.tun, 25).await;
    println!("alice: 25 pings while carol pending and dave's lookup blocked, slowest {worst:?}");
    assert!(
        !carol_events.is_finished(),
        "carol finished before the decision"
    );
    // The client saw INFO_PRE while its authentication was pending (not after it).
    let infos = carol_infos.lock().unwrap().clone();
    assert!(
        infos.iter().any(|i| i == "OPEN_URL:https://sso.example/x"),
        "{infos:?}"
    );
    let handle = auth.parked.lock().unwrap().pop().unwrap();
    assert!(handle.accept(ClientOptions::default()));
    let (carol, ev) = carol_events.await.unwrap();
    assert!(connected(&ev).is_some(), "carol: {ev:#?}");
    // A second decision for the same key is ignored (the key is no longer pending).
    assert!(handle.deny("late", None));
    let (dave, ev) = dave_events.await.unwrap();
    assert!(connected(&ev).is_some(), "dave: {ev:#?}");
    // Alice is still fine after carol's late acceptance.
    alice_pings(&alice_tun, &mut srv.tun, 3).await;

    disconnect(carol).await;
    disconnect(dave).await;
    disconnect(alice).await;
    let _ = srv.stop.send(());
    srv.task.await.unwrap().unwrap();
}

/// Answers a CR_TEXT challenge with `otp` (as a GUI would with `cr-response`).
async fn challenge(pki: &Pki, port: u16, user: &str, otp: &str) -> (Vec<VpnEvent>, Vec<String>) {
    use base64::Engine as _;
    let (mut c, _t) = start(pki, port, user, "pw");
    let cmd = c.commander();
    let answer = base64::engine::general_purpose::STANDARD.encode(otp);
    let mut infos = Vec::new();
    let ev = until_done(&mut c, 20, |t| {
        infos.push(t.to_owned());
        if t.starts_with("CR_TEXT:") {
            let _ = cmd.send(openvpn_client::Command::ChallengeResponse(answer.clone()));
        }
    })
    .await;
    disconnect(c).await;
    (ev, infos)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticator_cr_text_round_trip_and_pending_timeout() {
    let pki = openvpn_tests::pki();
    let auth = Arc::new(TestAuth::default());
    let srv = server(&pki, auth.clone()).await;

    let (ev, infos) = challenge(&pki, srv.port, "erin", "123456").await;
    let s = connected(&ev).unwrap_or_else(|| panic!("erin: {ev:#?} {infos:?}"));
    assert!(infos.iter().any(|i| i == OTP_PROMPT), "{infos:?}");
    assert!(
        s.routes_v4.contains(&("10.77.0.0".parse().unwrap(), 16)),
        "{s:?}"
    );
    let (ev, _) = challenge(&pki, srv.port, "frank", "000000").await;
    let reason = auth_failed(&ev).unwrap_or_else(|| panic!("frank: {ev:#?}"));
    assert!(reason.contains("wrong one-time password"), "{reason}");
    {
        let r = auth.responses.lock().unwrap();
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].response().as_deref(), Some("123456"));
        assert_eq!(r[0].key_id, 0);
        assert_eq!(r[1].response().as_deref(), Some("000000"));
    }

    // Pending for 2 s and never decided: rejected.
    let t = Instant::now();
    let (mut gina, _gt) = start(&pki, srv.port, "gina", "x");
    let ev = until_done(&mut gina, 20, |_| {}).await;
    assert!(auth_failed(&ev).is_some(), "gina: {ev:#?}");
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
    disconnect(gina).await;

    let _ = srv.stop.send(());
    srv.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_authentication_outlives_the_hand_window() {
    let pki = openvpn_tests::pki();
    let auth = Arc::new(TestAuth::default());
    let srv = server_with(&pki, auth.clone(), "hand-window 3").await;
    let (mut hank, _ht) = start(&pki, srv.port, "hank", "x");
    let events = tokio::spawn(async move {
        let ev = until_done(&mut hank, 30, |_| {}).await;
        (hank, ev)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while auth.parked.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "hank never reached the authenticator"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Twice the hand-window: a pending key waits for its decision, not for the window.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!events.is_finished(), "hank gave up while pending");
    let h = auth.parked.lock().unwrap().pop().unwrap();
    h.accept(ClientOptions::default());
    let (hank, ev) = events.await.unwrap();
    assert!(connected(&ev).is_some(), "hank: {ev:#?}");
    disconnect(hank).await;
    let _ = srv.stop.send(());
    srv.task.await.unwrap().unwrap();
}
