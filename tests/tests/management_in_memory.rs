//! The management interface with `management-client-auth`, in memory: our client connects,
//! a test management client (unix socket) approves it with `client-auth` pushing a route,
//! reads `status 3`, kills it with `client-kill` (the client reconnects), denies the
//! reconnection with `client-deny`; plus a Prometheus `/metrics` scrape; and a CR_TEXT challenge
//! (`client-pending-auth`) answered by the client (`>CLIENT:CR_RESPONSE`).
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use openvpn_client::{ClientConfig, ExitReason, MemoryTunBuilder, VpnEvent};
use openvpn_tun::MemoryTun;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

fn pki() -> (String, (String, String), (String, String)) {
    openvpn_tests::pki().parts()
}

struct Mgmt {
    rd: BufReader<tokio::net::unix::OwnedReadHalf>,
    wr: tokio::net::unix::OwnedWriteHalf,
    seen: Vec<String>,
}

impl Mgmt {
    async fn line(&mut self) -> String {
        let mut l = String::new();
        let n = tokio::time::timeout(Duration::from_secs(20), self.rd.read_line(&mut l))
            .await
            .unwrap_or_else(|_| panic!("management read timed out; seen {:#?}", self.seen))
            .unwrap();
        assert!(n > 0, "management connection closed; seen {:#?}", self.seen);
        assert!(l.ends_with("\r\n"), "{l:?}");
        let l = l.trim_end().to_owned();
        self.seen.push(l.clone());
        l
    }

    /// Reads until a line starting with `prefix`; returns it.
    async fn until(&mut self, prefix: &str) -> String {
        loop {
            let l = self.line().await;
            if l.starts_with(prefix) {
                return l;
            }
        }
    }

    /// Reads `>CLIENT:ENV,…` lines up to END.
    async fn env(&mut self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        loop {
            let l = self.line().await;
            let Some(kv) = l.strip_prefix(">CLIENT:ENV,") else {
                continue;
            };
            if kv == "END" {
                return v;
            }
            let (k, val) = kv.split_once('=').unwrap();
            v.push((k.to_owned(), val.to_owned()));
        }
    }

    async fn send(&mut self, text: &str) {
        self.wr.write_all(text.as_bytes()).await.unwrap();
    }
}

async fn until_event(
    c: &mut openvpn_client::ClientHandle,
    want: impl Fn(&VpnEvent) -> bool,
) -> (Vec<VpnEvent>, Option<VpnEvent>) {
    let mut seen = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = c.events.recv().await {
            if want(&ev) {
                return Some(ev);
            }
            seen.push(ev);
        }
        None
    })
    .await
    .ok()
    .flatten();
    (seen, r)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_client_auth_status_kill_deny_and_metrics() {
    let (ca, (sc, sk), (cc, ck)) = pki();
    let dir = std::env::temp_dir().join(format!("ovrs-mgmt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("mgmt.sock");
    let _ = std::fs::remove_file(&sock);
    let metrics_port = free_port();
    let text = format!(
        "server 10.8.0.0 255.255.255.0\ntopology subnet\nkeepalive 10 60\nmanagement {} unix\nmanagement-client-auth\nmetrics-listen 127.0.0.1:{metrics_port}\n<ca>\n{ca}</ca>\n<cert>\n{sc}</cert>\n<key>\n{sk}</key>\n",
        sock.display()
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

    // The management client.
    let mut stream = None;
    for _ in 0..100 {
        if let Ok(s) = tokio::net::UnixStream::connect(&sock).await {
            stream = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (rd, wr) = stream.expect("management socket").into_split();
    let mut m = Mgmt {
        rd: BufReader::new(rd),
        wr,
        seen: Vec::new(),
    };
    assert_eq!(
        m.line().await,
        ">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info"
    );
    m.send("version\n").await;
    assert!(m.line().await.starts_with("OpenVPN Version: "));
    assert_eq!(m.line().await, "Management Version: 5");
    assert_eq!(m.line().await, "END");
    m.send("pid\n").await;
    assert_eq!(
        m.line().await,
        format!("SUCCESS: pid={}", std::process::id())
    );
    m.send("frobnicate\n").await;
    assert_eq!(
        m.line().await,
        "ERROR: unknown command, enter 'help' for more options"
    );

    // Our client.
    let profile = format!(
        "client\nremote 127.0.0.1 {port} udp\nconnect-retry 1\nsetenv IV_GUI_VER \"mgmt-gui 1.0\"\n<ca>\n{ca}</ca>\n<cert>\n{cc}</cert>\n<key>\n{ck}</key>\n"
    );
    let ccfg = ClientConfig::from_ovpn(&profile, std::path::Path::new("/")).unwrap();
    let (ctun, _h) = MemoryTun::pair(16);
    let mut client = openvpn_client::connect(ccfg, MemoryTunBuilder::new(ctun));

    let connect = m.until(">CLIENT:CONNECT,").await;
    let ids: Vec<&str> = connect
        .trim_start_matches(">CLIENT:CONNECT,")
        .split(',')
        .collect();
    let (cid, kid) = (ids[0].to_owned(), ids[1].to_owned());
    let env = m.env().await;
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("common_name"), Some("client1"), "{env:?}");
    assert_eq!(get("untrusted_ip"), Some("127.0.0.1"), "{env:?}");
    assert_eq!(get("IV_GUI_VER"), Some("mgmt-gui_1.0"), "{env:?}");
    assert!(get("password").is_none());

    m.send(&format!(
        "client-auth {cid} {kid}\npush \"route 10.77.7.0 255.255.255.0\"\nEND\n"
    ))
    .await;
    assert_eq!(
        m.until("SUCCESS: client-auth").await,
        "SUCCESS: client-auth command succeeded"
    );

    let (seen, pushed) =
        until_event(&mut client, |e| matches!(e, VpnEvent::PushedOptions(_))).await;
    let Some(VpnEvent::PushedOptions(p)) = pushed else {
        panic!("no PushedOptions: {seen:#?}")
    };
    assert!(
        p.routes
            .iter()
            .any(|r| r.network.to_string() == "10.77.7.0"),
        "{p:?}"
    );
    let (seen, up) = until_event(&mut client, |e| matches!(e, VpnEvent::Connected { .. })).await;
    assert!(up.is_some(), "{seen:#?}");
    assert_eq!(
        m.until(">CLIENT:ESTABLISHED,").await,
        format!(">CLIENT:ESTABLISHED,{cid}")
    );
    let env = m.env().await;
    assert!(
        env.iter()
            .any(|(k, v)| k == "trusted_ip" && v == "127.0.0.1")
    );

    // status 3: tab-separated CLIENT_LIST with our client.
    m.send("status 3\n").await;
    let mut listed = false;
    loop {
        let l = m.line().await;
        if l.starts_with("CLIENT_LIST\tclient1\t127.0.0.1:") {
            // Client ID is the CID of >CLIENT:CONNECT (openvpn-monitor kills by it).
            assert_eq!(l.split('\t').nth(10), Some(cid.as_str()), "{l}");
            listed = true;
        }
        if l == "END" {
            break;
        }
    }
    assert!(listed, "{:#?}", m.seen);
    m.send("load-stats\n").await;
    let stats = m.until("SUCCESS: nclients=").await;
    let nums: Vec<u64> = stats
        .trim_start_matches("SUCCESS: ")
        .split(',')
        .map(|kv| kv.split_once('=').unwrap().1.parse().unwrap())
        .collect();
    // Link bytes, as OpenVPN counts them: the TLS handshake alone is over 1 KB each way.
    assert!(nums[0] == 1 && nums[1] > 1000 && nums[2] > 1000, "{stats}");
    println!("{stats}");

    // Metrics.
    let body = openvpn_tests::scrape_metrics(metrics_port).await;
    assert!(body.starts_with("HTTP/1.0 200 OK\r\n"), "{body}");
    assert!(
        body.contains("\nopenvpn_server_clients_connected 1\n"),
        "{body}"
    );
    assert!(
        body.contains("openvpn_client_received_bytes_total{common_name=\"client1\",peer_id=\"0\"}"),
        "{body}"
    );
    assert!(body.contains("# TYPE openvpn_server_handshakes_total counter"));

    // client-kill: the client is told RESTART and reconnects.
    m.send(&format!("client-kill {cid}\n")).await;
    assert_eq!(
        m.until("SUCCESS: client-kill").await,
        "SUCCESS: client-kill command succeeded"
    );
    let (seen, re) = until_event(&mut client, |e| matches!(e, VpnEvent::Reconnecting { .. })).await;
    assert!(re.is_some(), "{seen:#?}");
    assert_eq!(
        m.until(">CLIENT:DISCONNECT,").await,
        format!(">CLIENT:DISCONNECT,{cid}")
    );

    // The reconnection is denied.
    let connect = m.until(">CLIENT:CONNECT,").await;
    let ids: Vec<String> = connect
        .trim_start_matches(">CLIENT:CONNECT,")
        .split(',')
        .map(str::to_owned)
        .collect();
    assert_ne!(ids[0], cid, "a new connection has a new CID");
    let _ = m.env().await;
    m.send(&format!(
        "client-deny {} {} \"x\" \"go away\"\n",
        ids[0], ids[1]
    ))
    .await;
    assert_eq!(
        m.until("SUCCESS: client-deny").await,
        "SUCCESS: client-deny command succeeded"
    );
    let (seen, failed) =
        until_event(&mut client, |e| matches!(e, VpnEvent::AuthFailed { .. })).await;
    match failed {
        Some(VpnEvent::AuthFailed { reason }) => assert_eq!(reason, "go away"),
        _ => panic!("no AuthFailed: {seen:#?}"),
    }
    assert_eq!(
        client.wait().await,
        ExitReason::AuthFailed("go away".into())
    );
    let body = openvpn_tests::scrape_metrics(metrics_port).await;
    assert!(
        body.contains("\nopenvpn_server_auth_failures_total 1\n"),
        "{body}"
    );

    m.send("quit\n").await;
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_management_password_and_hold() {
    let (ca, (sc, sk), (cc, ck)) = pki();
    let dir = std::env::temp_dir().join(format!("ovrs-mgmt-hold-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("pw.txt");
    std::fs::write(&pw, "s3cret\nignored\n").unwrap();
    let mport = free_port();
    let text = format!(
        "server 10.8.0.0 255.255.255.0\ntopology subnet\nkeepalive 10 60\nmanagement 127.0.0.1 {mport} {}\nmanagement-hold\n<ca>\n{ca}</ca>\n<cert>\n{sc}</cert>\n<key>\n{sk}</key>\n",
        pw.display()
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
    let connect = || async {
        for _ in 0..100 {
            if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", mport)).await {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no management listener");
    };
    // A wrong password closes the session; the next management client is served.
    let mut s = connect().await;
    let mut prompt = [0u8; 15];
    s.read_exact(&mut prompt).await.unwrap();
    assert_eq!(&prompt, b"ENTER PASSWORD:");
    s.write_all(b"wrong\n").await.unwrap();
    let mut rest = String::new();
    s.read_to_string(&mut rest).await.unwrap();
    assert_eq!(rest, "ERROR: bad password\r\n");

    let s = connect().await;
    let (rd, mut wr) = s.into_split();
    let mut rd = BufReader::new(rd);
    let mut prompt = [0u8; 15];
    rd.read_exact(&mut prompt).await.unwrap();
    assert_eq!(&prompt, b"ENTER PASSWORD:");
    wr.write_all(b"s3cret\r\n").await.unwrap();
    let mut lines = Vec::new();
    for _ in 0..3 {
        let mut l = String::new();
        rd.read_line(&mut l).await.unwrap();
        lines.push(l);
    }
    assert_eq!(
        lines,
        [
            "SUCCESS: password is correct\r\n",
            ">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info\r\n",
            ">HOLD:Waiting for hold release:0\r\n"
        ]
    );

    // Held: the client gets no answer.
    let profile = format!(
        "client\nremote 127.0.0.1 {port} udp\nconnect-retry 1\n<ca>\n{ca}</ca>\n<cert>\n{cc}</cert>\n<key>\n{ck}</key>\n"
    );
    let ccfg = ClientConfig::from_ovpn(&profile, std::path::Path::new("/")).unwrap();
    let (ctun, _h) = MemoryTun::pair(16);
    let mut client = openvpn_client::connect(ccfg, MemoryTunBuilder::new(ctun));
    let early = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(ev) = client.events.recv().await {
            if matches!(ev, VpnEvent::Connected { .. }) {
                return true;
            }
        }
        false
    })
    .await;
    assert!(!matches!(early, Ok(true)), "connected while held");
    let mut l = String::new();
    wr.write_all(b"hold\n").await.unwrap();
    rd.read_line(&mut l).await.unwrap();
    assert_eq!(l, "SUCCESS: hold=1\r\n");
    l.clear();
    wr.write_all(b"hold release\n").await.unwrap();
    rd.read_line(&mut l).await.unwrap();
    assert_eq!(l, "SUCCESS: hold release succeeded\r\n");
    let (seen, up) = until_event(&mut client, |e| matches!(e, VpnEvent::Connected { .. })).await;
    assert!(up.is_some(), "{seen:#?}");
    // kill by common name.
    l.clear();
    wr.write_all(b"kill client1\n").await.unwrap();
    rd.read_line(&mut l).await.unwrap();
    assert_eq!(
        l,
        "SUCCESS: common name 'client1' found, 1 client(s) killed\r\n"
    );
    client.command(openvpn_client::Command::Disconnect);
    let _ = client.wait().await;
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_cr_text_challenge_and_cr_response() {
    use openvpn_client::Command;
    let (ca, (sc, sk), (cc, ck)) = pki();
    let dir = std::env::temp_dir().join(format!("ovrs-mgmt-cr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("mgmt.sock");
    let text = format!(
        "server 10.8.0.0 255.255.255.0\ntopology subnet\nkeepalive 10 60\nmanagement {} unix\nmanagement-client-auth\n<ca>\n{ca}</ca>\n<cert>\n{sc}</cert>\n<key>\n{sk}</key>\n",
        sock.display()
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
    let mut stream = None;
    for _ in 0..100 {
        if let Ok(s) = tokio::net::UnixStream::connect(&sock).await {
            stream = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (rd, wr) = stream.expect("management socket").into_split();
    let mut m = Mgmt {
        rd: BufReader::new(rd),
        wr,
        seen: Vec::new(),
    };

    let profile = format!(
        "client\nremote 127.0.0.1 {port} udp\nsetenv IV_SSO crtext\n<ca>\n{ca}</ca>\n<cert>\n{cc}</cert>\n<key>\n{ck}</key>\n"
    );
    let ccfg = ClientConfig::from_ovpn(&profile, std::path::Path::new("/")).unwrap();
    let (ctun, _h) = MemoryTun::pair(16);
    let mut client = openvpn_client::connect(ccfg, MemoryTunBuilder::new(ctun));

    let connect = m.until(">CLIENT:CONNECT,").await;
    let ids: Vec<String> = connect
        .trim_start_matches(">CLIENT:CONNECT,")
        .split(',')
        .map(str::to_owned)
        .collect();
    let (cid, kid) = (ids[0].clone(), ids[1].clone());
    let env = m.env().await;
    assert!(
        env.iter().any(|(k, v)| k == "IV_SSO" && v == "crtext"),
        "{env:?}"
    );
    m.send(&format!(
        "client-pending-auth {cid} {kid} \"CR_TEXT:R,E:Enter your OTP\" 30\n"
    ))
    .await;
    assert_eq!(
        m.until("SUCCESS: client-pending-auth").await,
        "SUCCESS: client-pending-auth command succeeded"
    );
    // The client hears the challenge while its authentication is pending.
    let (seen, info) = until_event(
        &mut client,
        |e| matches!(e, VpnEvent::Info(t) if t.starts_with("CR_TEXT:")),
    )
    .await;
    match info {
        Some(VpnEvent::Info(t)) => assert_eq!(t, "CR_TEXT:R,E:Enter your OTP"),
        _ => panic!("no CR_TEXT: {seen:#?}"),
    }
    client.command(Command::ChallengeResponse("MTIzNDU2".into()));
    assert_eq!(
        m.until(">CLIENT:CR_RESPONSE,").await,
        format!(">CLIENT:CR_RESPONSE,{cid},{kid},MTIzNDU2")
    );
    let env = m.env().await;
    assert!(
        env.iter()
            .any(|(k, v)| k == "common_name" && v == "client1"),
        "{env:?}"
    );
    m.send(&format!("client-auth-nt {cid} {kid}\n")).await;
    let (seen, up) = until_event(&mut client, |e| matches!(e, VpnEvent::Connected { .. })).await;
    assert!(up.is_some(), "{seen:#?}");
    client.command(Command::Disconnect);
    let _ = tokio::time::timeout(Duration::from_secs(10), client.wait()).await;
    m.send("quit\n").await;
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
