//! Our client driven through its management interface like a GUI (openvpn-gui,
//! NetworkManager-openvpn) drives `openvpn`: a unix socket in a temporary directory,
//! `management-hold` (also for restarts the engine starts: ping-restart, a server RESTART),
//! `management-query-passwords`, `>STATE:` notifications, `signal SIGTERM`, a CR_TEXT challenge
//! answered with `cr-response`.
//! The server runs an auth-user-pass-verify script; everything else is in memory.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openvpn_client::management::{
    ClientManagement, CountingTunBuilder, Listener, ManagementSettings,
};
use openvpn_client::{ClientConfig, ExitReason, MemoryTunBuilder};
use openvpn_tun::{MemoryTun, MemoryTunHandle};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

fn pki() -> (String, (String, String), (String, String)) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "mgmt-ca");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = |cn: &str, eku| {
        let mut p = CertificateParams::new(vec![cn.to_owned()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![eku];
        let k = KeyPair::generate().unwrap();
        (
            p.signed_by(&k, &ca, &ca_key).unwrap().pem(),
            k.serialize_pem(),
        )
    };
    (
        ca.pem(),
        leaf("server", ExtendedKeyUsagePurpose::ServerAuth),
        leaf("client1", ExtendedKeyUsagePurpose::ClientAuth),
    )
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ovrs-cmgmt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A GUI on the management socket: reads lines, remembers all of them for error messages.
struct Gui {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
    seen: Vec<String>,
}

impl Gui {
    async fn connect(path: &Path) -> Gui {
        let s = UnixStream::connect(path).await.unwrap();
        let (r, w) = s.into_split();
        Gui {
            r: BufReader::new(r),
            w,
            seen: Vec::new(),
        }
    }

    async fn send(&mut self, line: &str) {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
    }

    /// Reads lines until one satisfies `pred`; returns it.
    async fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let r = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let mut l = String::new();
                if self.r.read_line(&mut l).await.unwrap() == 0 {
                    return None;
                }
                assert!(l.ends_with("\r\n"), "not CRLF-terminated: {l:?}");
                let l = l.trim_end().to_owned();
                self.seen.push(l.clone());
                if pred(&l) {
                    return Some(l);
                }
            }
        })
        .await;
        match r {
            Ok(Some(l)) => l,
            Ok(None) => panic!("EOF waiting for {what}; seen {:#?}", self.seen),
            Err(_) => panic!("timed out waiting for {what}; seen {:#?}", self.seen),
        }
    }

    async fn expect_line(&mut self, exact: &str) {
        self.expect(exact, |l| l == exact).await;
    }
}

/// A server with an auth script accepting alice/right and a held client under management;
/// returns the GUI's socket path, the client's run task, and the server's stop handle.
struct Setup {
    socket: PathBuf,
    client: tokio::task::JoinHandle<ExitReason>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), String>>,
    _tuns: Arc<Mutex<Vec<MemoryTunHandle>>>,
    _server_tun: MemoryTunHandle,
}

async fn setup(tag: &str, client_extra: &str) -> Setup {
    setup_with(tag, client_extra, None).await
}

/// [`setup`] with an embedder's authenticator on the server (after the auth script).
async fn setup_with(
    tag: &str,
    client_extra: &str,
    auth: Option<Arc<dyn openvpn_server::auth::Authenticator>>,
) -> Setup {
    let d = tempdir(tag);
    let script = d.join("auth.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$(sed -n 1p \"$1\")\" = alice ] && [ \"$(sed -n 2p \"$1\")\" = right ]\n",
    )
    .unwrap();
    let (ca, (sc, sk), (cc, ck)) = pki();
    let text = format!(
        "server 10.8.0.0 255.255.255.0\ntopology subnet\nkeepalive 10 60\nscript-security 2\nauth-user-pass-verify \"/bin/sh {}\" via-file\nmanagement {} unix\n<ca>\n{ca}</ca>\n<cert>\n{sc}</cert>\n<key>\n{sk}</key>\n",
        script.display(),
        d.join("server-mgmt.sock").display()
    );
    let cfg = openvpn_tests::server_config(&text);
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = udp.local_addr().unwrap().port();
    let (tun, server_tun) = MemoryTun::pair(16);
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let opts = openvpn_server::runtime::ServeOptions {
        authenticator: auth,
        ..Default::default()
    };
    let server = tokio::spawn(async move {
        openvpn_server::runtime::serve_with(
            cfg,
            Arc::new(tun),
            Some(udp),
            None,
            async {
                let _ = stop_rx.await;
            },
            opts,
        )
        .await
        .map_err(|e| e.to_string())
    });
    let socket = d.join("mgmt.sock");
    let profile = format!(
        "client\nremote 127.0.0.1 {port} udp\nconnect-retry-max 1\nauth-user-pass\nmanagement {} unix\nmanagement-hold\nmanagement-query-passwords\n{client_extra}\n<ca>\n{ca}</ca>\n<cert>\n{cc}</cert>\n<key>\n{ck}</key>\n",
        socket.display()
    );
    let ccfg = ClientConfig::from_ovpn(&profile, Path::new("/")).unwrap();
    let m = ccfg.management.clone().unwrap();
    let listener = Listener::bind(&m.addr).await.unwrap();
    let settings = ManagementSettings::from_options(&m, &ccfg).unwrap();
    assert!(settings.hold && settings.query_passwords);
    let mgmt = ClientManagement::new(listener, settings);
    let tuns = Arc::new(Mutex::new(Vec::new()));
    let keep = tuns.clone();
    let client = tokio::spawn(mgmt.run(
        move |counters| {
            let (ctun, h) = MemoryTun::pair(16);
            keep.lock().unwrap().push(h);
            openvpn_client::connect(
                ccfg.clone(),
                CountingTunBuilder::new(MemoryTunBuilder::new(ctun), counters.clone()),
            )
        },
        |_| {},
    ));
    Setup {
        socket,
        client,
        stop,
        server,
        _tuns: tuns,
        _server_tun: server_tun,
    }
}

async fn finish(s: Setup, gui: &mut Gui) -> ExitReason {
    gui.send("signal SIGTERM").await;
    gui.expect_line("SUCCESS: signal SIGTERM thrown").await;
    let exiting = gui
        .expect(">STATE:…,EXITING", |l| l.contains(",EXITING,"))
        .await;
    assert!(exiting.starts_with(">STATE:"), "{exiting}");
    assert_eq!(exiting.split(',').nth(2), Some("SIGTERM"), "{exiting}");
    let reason = tokio::time::timeout(Duration::from_secs(10), s.client)
        .await
        .expect("the client stops after SIGTERM")
        .unwrap();
    let _ = s.stop.send(());
    s.server.await.unwrap().unwrap();
    reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gui_releases_hold_answers_password_and_terminates() {
    let s = setup("ok", "").await;
    assert!(s.socket.exists());
    let mut gui = Gui::connect(&s.socket).await;
    gui.expect_line(">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info")
        .await;
    gui.expect_line(">HOLD:Waiting for hold release:0").await;
    gui.send("frobnicate").await;
    gui.expect_line("ERROR: unknown command, enter 'help' for more options")
        .await;
    gui.send("hold").await;
    gui.expect_line("SUCCESS: hold=1").await;
    gui.send("version").await;
    gui.expect("Management Version", |l| l == "Management Version: 5")
        .await;
    gui.expect_line("END").await;
    gui.send("pid").await;
    let pid = gui.expect("pid", |l| l.starts_with("SUCCESS: pid=")).await;
    assert_eq!(pid, format!("SUCCESS: pid={}", std::process::id()));
    gui.send("state on").await;
    gui.expect_line("SUCCESS: real-time state notification set to ON")
        .await;
    gui.send("bytecount 1").await;
    gui.expect_line("SUCCESS: bytecount interval changed").await;
    // A password before it is asked for is refused.
    gui.send("password \"Auth\" right").await;
    gui.expect_line("ERROR: no password is currently needed at this time")
        .await;
    gui.send("hold release").await;
    gui.expect_line("SUCCESS: hold release succeeded").await;
    gui.expect_line(">PASSWORD:Need 'Auth' username/password")
        .await;
    gui.send("username \"Auth\" alice").await;
    gui.expect_line("SUCCESS: 'Auth' username entered, but not yet verified")
        .await;
    gui.send("password \"Auth\" right").await;
    gui.expect_line("SUCCESS: 'Auth' password entered, but not yet verified")
        .await;
    let connected = gui
        .expect(">STATE:…,CONNECTED,SUCCESS", |l| {
            l.contains(",CONNECTED,SUCCESS,")
        })
        .await;
    let f: Vec<&str> = connected.trim_start_matches(">STATE:").split(',').collect();
    assert_eq!(f.len(), 9, "{connected}");
    assert!(f[0].parse::<u64>().unwrap() > 1_600_000_000, "{connected}");
    assert_eq!(
        &f[1..4],
        ["CONNECTED", "SUCCESS", "10.8.0.2"],
        "{connected}"
    );
    assert_eq!(f[4], "127.0.0.1", "{connected}");
    assert!(f[5].parse::<u16>().is_ok(), "{connected}");
    // The states a GUI shows on the way, in order.
    let names: Vec<&str> = gui
        .seen
        .iter()
        .filter_map(|l| l.strip_prefix(">STATE:"))
        .filter_map(|l| l.split(',').nth(1))
        .collect();
    let want = [
        "RESOLVE",
        "WAIT",
        "AUTH",
        "GET_CONFIG",
        "ASSIGN_IP",
        "CONNECTED",
    ];
    let mut at = 0;
    for n in &names {
        if at < want.len() && *n == want[at] {
            at += 1;
        }
    }
    assert_eq!(at, want.len(), "states {names:?}");
    gui.expect("bytecount", |l| l.starts_with(">BYTECOUNT:"))
        .await;
    gui.send("bytecount 0").await;
    gui.expect_line("SUCCESS: bytecount interval changed").await;
    gui.send("state").await;
    let cur = gui.expect("current state", |l| !l.starts_with('>')).await;
    assert!(cur.contains(",CONNECTED,SUCCESS,10.8.0.2,"), "{cur}");
    gui.expect_line("END").await;
    gui.send("state all").await;
    gui.expect("history", |l| l.contains(",WAIT,")).await;
    gui.expect_line("END").await;
    // SIGUSR1 (a GUI's "reconnect") restarts without asking for the password again.
    gui.send("signal SIGUSR1").await;
    gui.expect_line("SUCCESS: signal SIGUSR1 thrown").await;
    let r = gui
        .expect("RECONNECTING", |l| l.contains(",RECONNECTING,"))
        .await;
    assert_eq!(r.split(',').nth(2), Some("SIGUSR1"), "{r}");
    // The hold flag (management-hold) holds restarts too; the GUI releases again.
    gui.expect_line(">HOLD:Waiting for hold release:0").await;
    gui.send("hold release").await;
    gui.expect("CONNECTED again", |l| l.contains(",CONNECTED,SUCCESS,"))
        .await;
    let asked = gui
        .seen
        .iter()
        .filter(|l| l.starts_with(">PASSWORD:Need"))
        .count();
    assert_eq!(asked, 1, "the password is remembered: {:#?}", gui.seen);
    // Without the hold flag the engine reconnects by itself.
    gui.send("hold off").await;
    gui.expect_line("SUCCESS: hold flag set to OFF").await;
    let before = gui.seen.len();
    gui.send("signal SIGHUP").await;
    let r = gui
        .expect("RECONNECTING", |l| l.contains(",RECONNECTING,"))
        .await;
    assert_eq!(r.split(',').nth(2), Some("SIGHUP"), "{r}");
    gui.expect("CONNECTED a third time", |l| {
        l.contains(",CONNECTED,SUCCESS,")
    })
    .await;
    assert!(
        !gui.seen[before..].iter().any(|l| l.starts_with(">HOLD:")),
        "{:#?}",
        gui.seen
    );
    let reason = finish(s, &mut gui).await;
    assert_eq!(reason, ExitReason::Disconnected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_reported_and_asked_again_with_auth_retry_interact() {
    let s = setup("retry", "auth-retry interact").await;
    let mut gui = Gui::connect(&s.socket).await;
    gui.expect_line(">HOLD:Waiting for hold release:0").await;
    gui.send("state on").await;
    gui.send("hold release").await;
    gui.expect_line(">PASSWORD:Need 'Auth' username/password")
        .await;
    gui.send("username \"Auth\" alice").await;
    gui.send("password \"Auth\" wrong").await;
    gui.expect(">PASSWORD:Verification Failed", |l| {
        l.starts_with(">PASSWORD:Verification Failed: 'Auth'")
    })
    .await;
    let r = gui
        .expect("RECONNECTING", |l| l.contains(",RECONNECTING,"))
        .await;
    assert_eq!(r.split(',').nth(2), Some("auth-failure"), "{r}");
    // The hold flag holds every restart, as in OpenVPN; the GUI releases it again.
    gui.expect("hold after restart", |l| {
        l.starts_with(">HOLD:Waiting for hold release:")
    })
    .await;
    gui.send("hold release").await;
    gui.expect_line(">PASSWORD:Need 'Auth' username/password")
        .await;
    gui.send("username \"Auth\" alice").await;
    gui.send("password \"Auth\" right").await;
    gui.expect(">STATE:…,CONNECTED,SUCCESS", |l| {
        l.contains(",CONNECTED,SUCCESS,10.8.0.2,")
    })
    .await;
    let reason = finish(s, &mut gui).await;
    assert_eq!(reason, ExitReason::Disconnected);
}

/// Logs in through the GUI: hold release, username/password; waits for CONNECTED.
async fn release_and_log_in(gui: &mut Gui) {
    gui.expect_line(">HOLD:Waiting for hold release:0").await;
    gui.send("state on").await;
    gui.expect_line("SUCCESS: real-time state notification set to ON")
        .await;
    gui.send("hold release").await;
    gui.expect_line(">PASSWORD:Need 'Auth' username/password")
        .await;
    gui.send("username \"Auth\" alice").await;
    gui.send("password \"Auth\" right").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_restart_holds_again_with_the_hold_flag() {
    // ping-restart 3: the server (keepalive 10 60) is silent for 3 s, so the engine restarts.
    let s = setup("pinghold", "ping-restart 3").await;
    let mut gui = Gui::connect(&s.socket).await;
    release_and_log_in(&mut gui).await;
    gui.expect(">STATE:…,CONNECTED,SUCCESS", |l| {
        l.contains(",CONNECTED,SUCCESS,")
    })
    .await;
    let r = gui
        .expect("RECONNECTING", |l| l.contains(",RECONNECTING,"))
        .await;
    assert_eq!(r.split(',').nth(2), Some("ping-restart"), "{r}");
    // connect-retry's default (1 s) is what the client would have waited.
    gui.expect_line(">HOLD:Waiting for hold release:1").await;
    // Held: no new connection attempt until the GUI releases.
    let held_at = gui.seen.len();
    let quiet = tokio::time::timeout(Duration::from_millis(2500), async {
        let mut l = String::new();
        gui.r.read_line(&mut l).await.map(|_| l)
    })
    .await;
    assert!(
        quiet.is_err(),
        "output while held: {quiet:?}; seen {:#?}",
        gui.seen
    );
    gui.send("hold release").await;
    gui.expect_line("SUCCESS: hold release succeeded").await;
    gui.expect("CONNECTED after the release", |l| {
        l.contains(",CONNECTED,SUCCESS,")
    })
    .await;
    assert!(
        !gui.seen[held_at..]
            .iter()
            .any(|l| l.starts_with(">PASSWORD:Need")),
        "the password is remembered across the held restart: {:#?}",
        gui.seen
    );
    let reason = finish(s, &mut gui).await;
    assert_eq!(reason, ExitReason::Disconnected);
}

/// Asks every client a CR_TEXT one-time password; 123456 passes.
struct Otp;

impl openvpn_server::auth::Authenticator for Otp {
    fn authenticate(
        &self,
        _req: openvpn_server::auth::AuthRequest,
        h: openvpn_server::auth::AuthHandle,
    ) {
        h.pending(Duration::from_secs(60), "CR_TEXT:R,E:Enter your OTP");
    }

    fn challenge_response(
        &self,
        r: openvpn_server::auth::ChallengeResponse,
        h: openvpn_server::auth::AuthHandle,
    ) {
        if r.response().as_deref() == Some("123456") {
            h.accept(Default::default());
        } else {
            h.deny("wrong OTP", None);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gui_answers_a_cr_text_challenge_with_cr_response() {
    let s = setup_with("crtext", "", Some(Arc::new(Otp))).await;
    let mut gui = Gui::connect(&s.socket).await;
    release_and_log_in(&mut gui).await;
    let p = gui
        .expect("AUTH_PENDING state", |l| l.contains(",AUTH_PENDING,"))
        .await;
    assert_eq!(p.split(',').nth(2), Some("timeout 60"), "{p}");
    gui.expect_line(">INFOMSG:CR_TEXT:R,E:Enter your OTP").await;
    gui.send("cr-response MTIzNDU2").await;
    gui.expect_line("SUCCESS: command succeeded").await;
    gui.expect(">STATE:…,CONNECTED,SUCCESS", |l| {
        l.contains(",CONNECTED,SUCCESS,10.8.0.2,")
    })
    .await;
    let reason = finish(s, &mut gui).await;
    assert_eq!(reason, ExitReason::Disconnected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_holds_again_with_the_hold_flag() {
    let s = setup("restarthold", "").await;
    let mut gui = Gui::connect(&s.socket).await;
    release_and_log_in(&mut gui).await;
    gui.expect(">STATE:…,CONNECTED,SUCCESS", |l| {
        l.contains(",CONNECTED,SUCCESS,")
    })
    .await;
    // The server's operator kills the client: it is told RESTART.
    let server_mgmt = s.socket.with_file_name("server-mgmt.sock");
    let stream = UnixStream::connect(&server_mgmt).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut greeting = String::new();
    r.read_line(&mut greeting).await.unwrap();
    w.write_all(b"kill client1\r\n").await.unwrap();
    let mut reply = String::new();
    r.read_line(&mut reply).await.unwrap();
    assert!(reply.starts_with("SUCCESS:"), "{reply}");
    let re = gui
        .expect("RECONNECTING", |l| l.contains(",RECONNECTING,"))
        .await;
    assert_eq!(
        re.split(',').nth(2),
        Some("server-pushed-connection-reset"),
        "{re}"
    );
    gui.expect_line(">HOLD:Waiting for hold release:1").await;
    gui.send("hold release").await;
    gui.expect_line("SUCCESS: hold release succeeded").await;
    gui.expect("CONNECTED after the release", |l| {
        l.contains(",CONNECTED,SUCCESS,")
    })
    .await;
    let reason = finish(s, &mut gui).await;
    assert_eq!(reason, ExitReason::Disconnected);
}
