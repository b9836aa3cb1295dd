//! Server operations with our client, in memory: auth-gen-token (renegotiation without the
//! auth script, a second server instance sharing the secret), deferred authentication through
//! auth_control_file, ifconfig-pool-persist across a restart, learn-address.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use openvpn_client::{ClientConfig, MemoryTunBuilder, VpnEvent};
use openvpn_tests::Pki;
use openvpn_tun::MemoryTun;

struct Server {
    port: u16,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), String>>,
    _tun: openvpn_tun::MemoryTunHandle,
}

impl Server {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

async fn server(pki: &Pki, extra: &str) -> Server {
    let (sc, sk) = &pki.server;
    let ca = &pki.ca;
    let text = format!(
        "server 10.8.0.0 255.255.255.0\ntopology subnet\nkeepalive 10 60\n{extra}\n<ca>\n{ca}</ca>\n<cert>\n{sc}</cert>\n<key>\n{sk}</key>\n"
    );
    let cfg = openvpn_tests::server_config(&text);
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = udp.local_addr().unwrap().port();
    let (tun, keep) = MemoryTun::pair(16);
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        openvpn_server::runtime::serve(cfg, Arc::new(tun), Some(udp), None, async {
            let _ = stop_rx.await;
        })
        .await
        .map_err(|e| e.to_string())
    });
    Server {
        port,
        stop,
        task,
        _tun: keep,
    }
}

/// Connects a client; returns it and its events up to Connected / AuthFailed.
async fn client(
    pki: &Pki,
    port: u16,
    extra: &str,
) -> (
    openvpn_client::ClientHandle,
    Vec<VpnEvent>,
    openvpn_tun::MemoryTunHandle,
) {
    let (cc, ck) = &pki.client;
    let ca = &pki.ca;
    let profile = format!(
        "client\nremote 127.0.0.1 {port} udp\nconnect-retry-max 1\n{extra}\n<ca>\n{ca}</ca>\n<cert>\n{cc}</cert>\n<key>\n{ck}</key>\n"
    );
    let ccfg = ClientConfig::from_ovpn(&profile, std::path::Path::new("/")).unwrap();
    let (ctun, h) = MemoryTun::pair(16);
    let mut c = openvpn_client::connect(ccfg, MemoryTunBuilder::new(ctun));
    let mut events = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = c.events.recv().await {
            let done = matches!(ev, VpnEvent::Connected { .. } | VpnEvent::AuthFailed { .. });
            events.push(ev);
            if done {
                break;
            }
        }
    })
    .await;
    assert!(r.is_ok(), "timed out; events {events:#?}");
    (c, events, h)
}

fn connected(events: &[VpnEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, VpnEvent::Connected { .. }))
}

fn pushed(events: &[VpnEvent]) -> openvpn_control::client::PushedOptions {
    events
        .iter()
        .find_map(|e| match e {
            VpnEvent::PushedOptions(p) => Some((**p).clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{events:#?}"))
}

async fn disconnect(c: openvpn_client::ClientHandle) {
    c.command(openvpn_client::Command::Disconnect);
    let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ovrs-ops-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn lines(p: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// An auth script that accepts alice/right only and logs each call.
fn auth_script(d: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let log = d.join("calls.log");
    let script = d.join("auth.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$username\" >> {}\n[ \"$username\" = alice ] && [ \"$password\" = right ]\n",
            log.display()
        ),
    )
    .unwrap();
    (script, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_token_renegotiates_without_script_and_works_on_second_instance() {
    let pki = openvpn_tests::pki();
    let d = tempdir("token");
    let (script, log) = auth_script(&d);
    let secret = d.join("token.key");
    std::fs::write(
        &secret,
        openvpn_server::auth_token::TokenKey::generate_pem(),
    )
    .unwrap();
    let conf = format!(
        "script-security 2\nauth-user-pass-verify \"/bin/sh {}\" via-env\nauth-gen-token 3600 60\nauth-gen-token-secret {}\nreneg-sec 2",
        script.display(),
        secret.display()
    );
    let a = server(&pki, &conf).await;
    let (c, events, _h) = client(
        &pki,
        a.port,
        "<auth-user-pass>\nalice\nright\n</auth-user-pass>",
    )
    .await;
    assert!(connected(&events), "{events:#?}");
    let p = pushed(&events);
    let token = p
        .auth_token
        .clone()
        .unwrap_or_else(|| panic!("no token: {p:?}"));
    assert!(token.starts_with("SESS_ID_"), "{token}");
    // reneg-sec 2: two renegotiations authenticate with the token, not the script.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(lines(&log), vec!["alice"], "the script ran again");
    disconnect(c).await;
    a.stop().await;

    // Server B with the same secret accepts the token without the script.
    let b = server(&pki, &conf).await;
    let (c, events, _h) = client(
        &pki,
        b.port,
        &format!("<auth-user-pass>\nalice\n{token}\n</auth-user-pass>"),
    )
    .await;
    assert!(connected(&events), "{events:#?}");
    assert_eq!(lines(&log), vec!["alice"], "the script ran on server B");
    disconnect(c).await;
    // The token is bound to the user.
    let (c, events, _h) = client(
        &pki,
        b.port,
        &format!("<auth-user-pass>\nbob\n{token}\n</auth-user-pass>"),
    )
    .await;
    assert!(!connected(&events), "{events:#?}");
    disconnect(c).await;
    b.stop().await;

    // A server with another secret rejects it.
    let other = d.join("other.key");
    std::fs::write(&other, openvpn_server::auth_token::TokenKey::generate_pem()).unwrap();
    let conf2 = conf.replace(&secret.display().to_string(), &other.display().to_string());
    let s = server(&pki, &conf2).await;
    let (c, events, _h) = client(
        &pki,
        s.port,
        &format!("<auth-user-pass>\nalice\n{token}\n</auth-user-pass>"),
    )
    .await;
    assert!(!connected(&events), "{events:#?}");
    assert_eq!(lines(&log), vec!["alice"]);
    disconnect(c).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_auth_accepts_through_control_file() {
    let pki = openvpn_tests::pki();
    let d = tempdir("deferred");
    let script = d.join("auth.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf '30\\nwebauth\\nOPEN_URL:https://example.invalid/login\\n' > \"$auth_pending_file\"\n(sleep 2; [ \"$password\" = right ] && echo 1 > \"$auth_control_file\" || echo 0 > \"$auth_control_file\") >/dev/null 2>&1 &\nexit 2\n",
    )
    .unwrap();
    let conf = format!(
        "script-security 2\nauth-user-pass-verify \"/bin/sh {}\" via-env",
        script.display()
    );
    let s = server(&pki, &conf).await;
    let start = Instant::now();
    let (c, events, _h) = client(
        &pki,
        s.port,
        "<auth-user-pass>\nalice\nright\n</auth-user-pass>",
    )
    .await;
    assert!(connected(&events), "{events:#?}");
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // auth_pending_file → AUTH_PENDING,timeout 30 + INFO_PRE,OPEN_URL:… (we announce IV_PROTO
    // bit 4).
    let infos: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            VpnEvent::Info(t) => Some(t),
            _ => None,
        })
        .collect();
    assert!(
        infos
            .iter()
            .any(|t| t.contains("pending") && t.contains("30")),
        "{infos:?}"
    );
    assert!(
        infos
            .iter()
            .any(|t| t.contains("OPEN_URL:https://example.invalid/login")),
        "{infos:?}"
    );
    disconnect(c).await;
    let (c, events, _h) = client(
        &pki,
        s.port,
        "<auth-user-pass>\nalice\nwrong\n</auth-user-pass>",
    )
    .await;
    assert!(!connected(&events), "{events:#?}");
    disconnect(c).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_persist_gives_returning_client_its_address_after_restart() {
    let pki = openvpn_tests::pki();
    let d = tempdir("persist");
    let file = d.join("ipp.txt");
    // 10.8.0.2 is kept for "other": client1 gets 10.8.0.3.
    std::fs::write(&file, "other,10.8.0.2\n").unwrap();
    let conf = format!("ifconfig-pool-persist {} 1", file.display());
    let s = server(&pki, &conf).await;
    let (c, events, _h) = client(&pki, s.port, "").await;
    let addr = pushed(&events).ifconfig.map(|(a, _)| a.to_string());
    assert_eq!(addr.as_deref(), Some("10.8.0.3"), "{events:#?}");
    disconnect(c).await;
    s.stop().await;
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("client1,10.8.0.3"), "{text}");
    // Restart without "other": the lowest address is free, but client1 gets its old one.
    std::fs::write(&file, "client1,10.8.0.3\n").unwrap();
    let s = server(&pki, &conf).await;
    let (c, events, _h) = client(&pki, s.port, "").await;
    let addr = pushed(&events).ifconfig.map(|(a, _)| a.to_string());
    assert_eq!(addr.as_deref(), Some("10.8.0.3"), "{events:#?}");
    disconnect(c).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learn_address_add_and_delete() {
    let pki = openvpn_tests::pki();
    let d = tempdir("learn");
    let log = d.join("learn.log");
    let conf = format!(
        "script-security 2\nlearn-address \"/bin/sh -c 'echo \\\"$*\\\" >> {}' --\"",
        log.display()
    );
    let s = server(&pki, &conf).await;
    let (c, events, _h) = client(&pki, s.port, "explicit-exit-notify 1").await;
    assert!(connected(&events), "{events:#?}");
    disconnect(c).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines(&log).len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        lines(&log),
        vec!["add 10.8.0.2 client1", "delete 10.8.0.2"],
        "learn-address calls"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_challenge_response_reaches_the_auth_script() {
    let pki = openvpn_tests::pki();
    let d = tempdir("scrv1");
    let script = d.join("auth.sh");
    // SCRV1:base64("right"):base64("123456")
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$username\" = alice ] && [ \"$password\" = \"SCRV1:cmlnaHQ=:MTIzNDU2\" ]\n",
    )
    .unwrap();
    let conf = format!(
        "script-security 2\nauth-user-pass-verify \"/bin/sh {}\" via-env",
        script.display()
    );
    let s = server(&pki, &conf).await;
    let (cc, ck) = &pki.client;
    let ca = &pki.ca;
    let port = s.port;
    let profile = format!(
        "client\nremote 127.0.0.1 {port} udp\nconnect-retry-max 1\nstatic-challenge \"Enter PIN\" 1\n<auth-user-pass>\nalice\nright\n</auth-user-pass>\n<ca>\n{ca}</ca>\n<cert>\n{cc}</cert>\n<key>\n{ck}</key>\n"
    );
    let mut ccfg = ClientConfig::from_ovpn(&profile, std::path::Path::new("/")).unwrap();
    assert_eq!(ccfg.static_challenge, Some(("Enter PIN".into(), true)));
    ccfg.answer_static_challenge("123456");
    let (ctun, _h) = MemoryTun::pair(16);
    let mut c = openvpn_client::connect(ccfg, MemoryTunBuilder::new(ctun));
    let mut events = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = c.events.recv().await {
            let done = matches!(ev, VpnEvent::Connected { .. } | VpnEvent::AuthFailed { .. });
            events.push(ev);
            if done {
                break;
            }
        }
    })
    .await;
    assert!(connected(&events), "{events:#?}");
    disconnect(c).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_rejected_and_external_auth_asks_the_script() {
    let pki = openvpn_tests::pki();
    let d = tempdir("token-expiry");
    let (script, log) = auth_script(&d);
    // lifetime 2 s: valid at once, expired 3 s later (rejected without the script).
    let conf = format!(
        "script-security 2\nauth-user-pass-verify \"/bin/sh {}\" via-env\nauth-gen-token 2",
        script.display()
    );
    let s = server(&pki, &conf).await;
    let (c, events, _h) = client(
        &pki,
        s.port,
        "<auth-user-pass>\nalice\nright\n</auth-user-pass>",
    )
    .await;
    let token = pushed(&events).auth_token.unwrap();
    disconnect(c).await;
    let with_token = format!("<auth-user-pass>\nalice\n{token}\n</auth-user-pass>");
    let (c, events, _h) = client(&pki, s.port, &with_token).await;
    assert!(connected(&events), "fresh token: {events:#?}");
    disconnect(c).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (c, events, _h) = client(&pki, s.port, &with_token).await;
    assert!(!connected(&events), "expired token: {events:#?}");
    disconnect(c).await;
    assert_eq!(lines(&log), vec!["alice"]);
    s.stop().await;

    // external-auth: the script sees every token attempt with session_state.
    let script2 = d.join("ext.sh");
    let log2 = d.join("ext.log");
    std::fs::write(
        &script2,
        format!(
            "#!/bin/sh\necho \"$session_state\" >> {}\n[ \"$password\" = right ] || [ \"$session_state\" = Authenticated ]\n",
            log2.display()
        ),
    )
    .unwrap();
    let conf = format!(
        "script-security 2\nauth-user-pass-verify \"/bin/sh {}\" via-env\nauth-gen-token 0 external-auth",
        script2.display()
    );
    let s = server(&pki, &conf).await;
    let (c, events, _h) = client(
        &pki,
        s.port,
        "<auth-user-pass>\nalice\nright\n</auth-user-pass>",
    )
    .await;
    let token = pushed(&events).auth_token.unwrap();
    disconnect(c).await;
    let (c, events, _h) = client(
        &pki,
        s.port,
        &format!("<auth-user-pass>\nalice\n{token}\n</auth-user-pass>"),
    )
    .await;
    assert!(connected(&events), "{events:#?}");
    disconnect(c).await;
    assert_eq!(lines(&log2), vec!["Initial", "Authenticated"]);
    s.stop().await;
}

/// An embedder that drops the serving future (here: aborts its task) stops the server: its
/// worker task sees the stop channel close, ends, and the UDP port is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_serve_future_stops_the_server() {
    let pki = openvpn_tests::pki();
    let s = server(&pki, "").await;
    let (c, _, _ctun) = client(&pki, s.port, "").await;
    s.task.abort();
    assert!(s.task.await.unwrap_err().is_cancelled());
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if std::net::UdpSocket::bind(("127.0.0.1", s.port)).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server still holds UDP port {} after its task was dropped",
            s.port
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(s.stop);
    c.command(openvpn_client::Command::Disconnect);
    let _ = c.wait().await;
}

/// `inactive 2` in a server config: a client whose tunnel carries nothing for 2 s is closed
/// (its keepalive pings do not count), as OpenVPN closes an inactive client instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactive_closes_an_idle_client_despite_its_pings() {
    let pki = openvpn_tests::pki();
    let d = tempdir("inactive");
    let log = d.join("learn.log");
    let conf = format!(
        "inactive 2\nscript-security 2\nlearn-address \"/bin/sh -c 'echo \\\"$*\\\" >> {}' --\"",
        log.display()
    );
    let s = server(&pki, &conf).await;
    let (c, events, _h) = client(&pki, s.port, "ping 1").await;
    assert!(connected(&events), "{events:#?}");
    let deadline = Instant::now() + Duration::from_secs(8);
    while lines(&log).len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        lines(&log),
        vec!["add 10.8.0.2 client1", "delete 10.8.0.2"],
        "the idle client was not closed"
    );
    disconnect(c).await;
    s.stop().await;
}
