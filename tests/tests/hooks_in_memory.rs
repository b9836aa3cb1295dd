//! Server hooks with our client, in memory: auth-user-pass-verify (via-file and via-env),
//! client-connect reading IV_GUI_VER and pushing a route, client-config-dir fixed address.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use openvpn_client::{ClientConfig, ExitReason, MemoryTunBuilder, VpnEvent};
use openvpn_tun::MemoryTun;

fn pki() -> (String, (String, String), (String, String)) {
    openvpn_tests::pki().parts()
}

/// Starts a server with `extra` lines, connects a client with `client_extra`, returns the
/// client's events until Connected or exit, and the exit reason if it stopped.
async fn session(extra: &str, client_extra: &str) -> (Vec<VpnEvent>, Option<ExitReason>) {
    let (ca, (sc, sk), (cc, ck)) = pki();
    let text = format!(
        "server 10.8.0.0 255.255.255.0\ntopology subnet\nkeepalive 10 60\n{extra}\n<ca>\n{ca}</ca>\n<cert>\n{sc}</cert>\n<key>\n{sk}</key>\n"
    );
    let cfg = openvpn_tests::server_config(&text);
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = udp.local_addr().unwrap().port();
    let (tun, _keep) = MemoryTun::pair(16);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(openvpn_server::runtime::serve(
        cfg,
        Arc::new(tun),
        Some(udp),
        None,
        async {
            let _ = stop_rx.await;
        },
    ));
    let profile = format!(
        "client\nremote 127.0.0.1 {port} udp\nconnect-retry-max 1\nsetenv IV_GUI_VER \"hooks-gui 2.0\"\n{client_extra}\n<ca>\n{ca}</ca>\n<cert>\n{cc}</cert>\n<key>\n{ck}</key>\n"
    );
    let ccfg = ClientConfig::from_ovpn(&profile, std::path::Path::new("/")).unwrap();
    let (ctun, _h) = MemoryTun::pair(16);
    let mut client = openvpn_client::connect(ccfg, MemoryTunBuilder::new(ctun));
    let mut events = Vec::new();
    let mut exit = None;
    let r = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = client.events.recv().await {
            let done = matches!(ev, VpnEvent::Connected { .. } | VpnEvent::AuthFailed { .. });
            events.push(ev);
            if done {
                break;
            }
        }
    })
    .await;
    assert!(r.is_ok(), "timed out; events {events:#?}");
    if events
        .iter()
        .any(|e| matches!(e, VpnEvent::AuthFailed { .. }))
    {
        exit = Some(client.wait().await);
    } else {
        client.command(openvpn_client::Command::Disconnect);
        let _ = client.wait().await;
    }
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
    (events, exit)
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ovrs-hooks-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn pushed(events: &[VpnEvent]) -> Option<openvpn_control::client::PushedOptions> {
    events.iter().find_map(|e| match e {
        VpnEvent::PushedOptions(p) => Some((**p).clone()),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_script_via_file_accepts_right_and_rejects_wrong_password() {
    let d = tempdir("auth");
    let script = d.join("auth.sh");
    std::fs::write(&script, "#!/bin/sh\n[ \"$(sed -n 1p \"$1\")\" = alice ] && [ \"$(sed -n 2p \"$1\")\" = right ] && [ \"$IV_GUI_VER\" = hooks-gui_2.0 ]\n").unwrap();
    let server = format!(
        "script-security 2\nauth-user-pass-verify \"/bin/sh {}\" via-file",
        script.display()
    );
    let (ok, _) = session(&server, "<auth-user-pass>\nalice\nright\n</auth-user-pass>").await;
    assert!(
        ok.iter().any(|e| matches!(e, VpnEvent::Connected { .. })),
        "{ok:#?}"
    );
    let (bad, exit) = session(&server, "<auth-user-pass>\nalice\nwrong\n</auth-user-pass>").await;
    assert!(
        bad.iter().any(|e| matches!(e, VpnEvent::AuthFailed { .. })),
        "{bad:#?}"
    );
    assert!(matches!(exit, Some(ExitReason::AuthFailed(_))), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_script_via_env() {
    let server = "script-security 2\nauth-user-pass-verify \"/bin/sh -c '[ \\\"$username\\\" = bob ] && [ \\\"$password\\\" = pw ]' --\" via-env";
    let (ok, _) = session(server, "<auth-user-pass>\nbob\npw\n</auth-user-pass>").await;
    assert!(
        ok.iter().any(|e| matches!(e, VpnEvent::Connected { .. })),
        "{ok:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connect_pushes_client_specific_route_and_ccd_fixes_address() {
    let d = tempdir("cc");
    let script = d.join("connect.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$IV_GUI_VER\" = hooks-gui_2.0 ] && [ \"$IV_PLAT\" = linux ] && [ \"$common_name\" = client1 ] || exit 1\necho \"push \\\"route 10.99.0.0 255.255.0.0\\\"\" > \"$1\"\n",
    )
    .unwrap();
    let ccd = d.join("ccd");
    std::fs::create_dir_all(&ccd).unwrap();
    std::fs::write(
        ccd.join("client1"),
        "ifconfig-push 10.8.0.50 255.255.255.0\n",
    )
    .unwrap();
    let server = format!(
        "script-security 2\nclient-connect \"/bin/sh {}\"\nclient-config-dir {}",
        script.display(),
        ccd.display()
    );
    let (events, _) = session(&server, "").await;
    let p = pushed(&events).unwrap_or_else(|| panic!("{events:#?}"));
    assert!(
        p.routes
            .iter()
            .any(|r| r.network.to_string() == "10.99.0.0"),
        "{p:?}"
    );
    assert_eq!(
        p.ifconfig.map(|(a, _)| a.to_string()).as_deref(),
        Some("10.8.0.50")
    );
    // A failing client-connect rejects the client.
    let bad = d.join("bad.sh");
    std::fs::write(&bad, "#!/bin/sh\nexit 1\n").unwrap();
    let (events, _) = session(
        &format!(
            "script-security 2\nclient-connect \"/bin/sh {}\"",
            bad.display()
        ),
        "",
    )
    .await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, VpnEvent::AuthFailed { .. })),
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccd_push_reset_and_client_connect_push_remove_shape_the_push_and_bad_lines_refuse() {
    let d = tempdir("pushrm");
    let ccd = d.join("ccd");
    std::fs::create_dir_all(&ccd).unwrap();
    // ccd first: the server's list is dropped, two routes added; then the client-connect
    // output removes one of them again.
    std::fs::write(
        ccd.join("client1"),
        "push-reset\npush \"topology subnet\"\npush \"route 10.56.0.0 255.255.0.0\"\n\
         push \"route 10.58.0.0 255.255.0.0\"\nifconfig-ipv6-push fd08::77/64 fd08::1\n",
    )
    .unwrap();
    let script = d.join("connect.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'push-remove \"route 10.58.\"' > \"$1\"\n",
    )
    .unwrap();
    let server = format!(
        "push \"route 10.55.0.0 255.255.0.0\"\npush \"dhcp-option DNS 10.8.0.1\"\n\
         script-security 2\nclient-connect \"/bin/sh {}\"\nclient-config-dir {}",
        script.display(),
        ccd.display()
    );
    let (events, _) = session(&server, "").await;
    let p = pushed(&events).unwrap_or_else(|| panic!("{events:#?}"));
    let routes: Vec<String> = p.routes.iter().map(|r| r.network.to_string()).collect();
    assert_eq!(routes, ["10.56.0.0"], "{p:?}");
    assert!(p.dhcp_options.is_empty(), "push-reset kept DNS: {p:?}");
    assert_eq!(
        p.ifconfig_ipv6
            .map(|(a, bits, _)| format!("{a}/{bits}"))
            .as_deref(),
        Some("fd08::77/64"),
        "{p:?}"
    );

    // A malformed line refuses the client instead of guessing (was: a silent /128).
    for bad in [
        "iroute-ipv6 fd99::/129\n",
        "ifconfig-push 10.8.0\n",
        "iroute 10.9.0.0 255.0.255.0\n",
    ] {
        std::fs::write(ccd.join("client1"), bad).unwrap();
        let (events, _) = session(&format!("client-config-dir {}", ccd.display()), "").await;
        assert!(
            events
                .iter()
                .any(|e| matches!(e, VpnEvent::AuthFailed { .. })),
            "{bad}: {events:#?}"
        );
    }
}

/// Our C test module (crates/openvpn-plugin/tests/test_plugin.c) built with gcc into `dir`;
/// `None`, with the reason printed, without gcc.
fn test_plugin(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/openvpn-plugin/tests/test_plugin.c");
    let so = dir.join("ovrs-test-plugin.so");
    match std::process::Command::new("gcc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&so)
        .arg(&src)
        .status()
    {
        Ok(s) if s.success() => Some(so),
        Ok(s) => panic!("gcc failed on {}: {s}", src.display()),
        Err(e) => {
            eprintln!("SKIP: no gcc to build the test plug-in ({e})");
            None
        }
    }
}

/// Waits up to 5 s for `path` to contain `line` (hooks run on blocking threads).
fn wait_for_line(path: &std::path::Path, line: &str) -> String {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().any(|l| l == line) || std::time::Instant::now() >= end {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_decides_auth_and_its_connect_config_is_pushed() {
    let d = tempdir("plugin");
    let Some(so) = test_plugin(&d) else { return };
    let journal = d.join("journal");
    // No script: the module alone decides (accepts alice/right; later-yes/later-no through
    // auth_control_file) and returns config text (CLIENT_CONNECT file and CONNECT_V2 list).
    let server = format!("plugin {} {}", so.display(), journal.display());
    let (ok, _) = session(&server, "<auth-user-pass>\nalice\nright\n</auth-user-pass>").await;
    let p = pushed(&ok).unwrap_or_else(|| panic!("{ok:#?}"));
    let routes: Vec<String> = p.routes.iter().map(|r| r.network.to_string()).collect();
    // 10.99.3.0: the client's own context saw auth, connect and connect-v2 (3 calls).
    assert!(
        routes.contains(&"10.98.0.0".to_owned()) && routes.contains(&"10.99.3.0".to_owned()),
        "{routes:?}"
    );
    // The server stopped: the client's context went back to the module, then it was closed.
    let text = wait_for_line(&journal, "close");
    for line in [
        "open -",
        "auth alice client1 calls=1",
        "connect client1",
        "connect-v2 client1 calls=3",
        "learn add 10.8.0.2 client1",
        "destructor 3",
        "close",
    ] {
        assert!(text.lines().any(|l| l == line), "no '{line}' in:\n{text}");
    }

    let (bad, exit) = session(&server, "<auth-user-pass>\nalice\nwrong\n</auth-user-pass>").await;
    assert!(
        bad.iter().any(|e| matches!(e, VpnEvent::AuthFailed { .. })),
        "{bad:#?}"
    );
    assert!(matches!(exit, Some(ExitReason::AuthFailed(_))), "{exit:?}");

    // Deferred: the module's helper writes the verdict 300 ms after the call.
    let (later, _) = session(&server, "<auth-user-pass>\nlater-yes\nx\n</auth-user-pass>").await;
    assert!(
        later
            .iter()
            .any(|e| matches!(e, VpnEvent::Connected { .. })),
        "{later:#?}"
    );
    let (later, _) = session(&server, "<auth-user-pass>\nlater-no\nx\n</auth-user-pass>").await;
    assert!(
        later
            .iter()
            .any(|e| matches!(e, VpnEvent::AuthFailed { .. })),
        "{later:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_auth_pam_plugin_accepts_alice_and_denies_bob() {
    let so = "/usr/lib/x86_64-linux-gnu/openvpn/plugins/openvpn-plugin-auth-pam.so";
    if !std::path::Path::new(so).exists() {
        eprintln!("SKIP: {so} is not installed (apt-get install openvpn)");
        return;
    }
    /// The test's PAM service file, removed however the test ends.
    struct PamService(std::path::PathBuf);
    impl Drop for PamService {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let service = format!("ovrs-hooks-{}", std::process::id());
    let pam = PamService(std::path::Path::new("/etc/pam.d").join(&service));
    if std::fs::write(
        &pam.0,
        "auth required pam_succeed_if.so user = alice quiet\nauth required pam_permit.so\naccount required pam_permit.so\n",
    )
    .is_err()
    {
        eprintln!("SKIP: cannot write {} (needs root)", pam.0.display());
        return;
    }
    // Deferred, as OpenVPN servers usually run it: auth-pam's helper writes the verdict
    // into auth_control_file.
    let server = format!("setenv deferred_auth_pam 1\nplugin openvpn-plugin-auth-pam.so {service}");
    let (ok, _) = session(
        &server,
        "<auth-user-pass>\nalice\nsecret\n</auth-user-pass>",
    )
    .await;
    let (bad, _) = session(&server, "<auth-user-pass>\nbob\nsecret\n</auth-user-pass>").await;
    drop(pam);
    assert!(
        ok.iter().any(|e| matches!(e, VpnEvent::Connected { .. })),
        "{ok:#?}"
    );
    assert!(
        bad.iter().any(|e| matches!(e, VpnEvent::AuthFailed { .. })),
        "{bad:#?}"
    );
}
