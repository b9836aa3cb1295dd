//! Our client's process and script options against our server, in memory: the hooks
//! (`up`, `route-up`, `ipchange`, `up-restart`, `route-pre-down`, `down`, with OpenVPN's
//! arguments and variables) through a connect, a restart that keeps the device and a
//! disconnect; and `tls-exit` (a TLS failure ends the client instead of retrying).
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openvpn_client::{ClientConfig, Command, ExitReason, MemoryTunBuilder, TunHooks, VpnEvent};
use openvpn_tests::{Pki, pki};
use openvpn_tun::MemoryTun;

struct Server {
    port: u16,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

async fn server(pki: &Pki, extra: &str) -> Server {
    let text = format!(
        "mode server\ntls-server\ntopology subnet\nproto udp\nserver 10.8.0.0 255.255.255.0\nkeepalive 10 60\ndh none\n{extra}<ca>\n{ca}</ca>\n<cert>\n{c}</cert>\n<key>\n{k}</key>\n",
        ca = pki.ca,
        c = pki.server.0,
        k = pki.server.1
    );
    let cfg = openvpn_tests::server_config(&text);
    let (tun, _handle) = MemoryTun::pair(64);
    // The handle must outlive the server: leak it into the task.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = udp.local_addr().unwrap().port();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _keep = _handle;
        openvpn_server::runtime::serve(cfg, Arc::new(tun), Some(udp), None, async {
            let _ = stop_rx.await;
        })
        .await
        .map_err(|e| e.to_string())
    });
    Server { port, stop, task }
}

fn client(pki: &Pki, port: u16, extra: &str) -> ClientConfig {
    let text = format!(
        "client\nproto udp\nremote 127.0.0.1 {port}\nconnect-retry 1\n{extra}<ca>\n{ca}</ca>\n<cert>\n{c}</cert>\n<key>\n{k}</key>\n",
        ca = pki.ca,
        c = pki.client.0,
        k = pki.client.1
    );
    ClientConfig::from_ovpn(&text, Path::new("/")).unwrap()
}

async fn until(
    handle: &mut openvpn_client::ClientHandle,
    hooks: &TunHooks,
    what: &str,
    pred: impl Fn(&VpnEvent) -> bool,
) {
    let mut seen = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let ev = handle.events.recv().await.expect("client stopped");
            // What the binary does with each event.
            hooks.on_event(&ev);
            seen.push(format!("{ev:?}"));
            if pred(&ev) {
                return;
            }
        }
    })
    .await;
    assert!(r.is_ok(), "no {what}; events {seen:#?}");
}

fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Connect, SIGUSR1-style restart (the device is kept), disconnect: each hook runs once at
/// its place with OpenVPN's arguments and variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_in_openvpns_order_with_its_arguments() {
    let pki = pki();
    let srv = server(&pki, "push \"route 10.99.0.0 255.255.0.0\"\n").await;
    let dir: PathBuf =
        std::env::temp_dir().join(format!("ovrs-client-scripts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("log");
    let script = dir.join("hook.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$script_type ${{script_context:-}} $* | sig=${{signal:-}} rn1=${{route_network_1:-}} vpngw=${{route_vpn_gateway:-}} tip=${{trusted_ip:-}} safe=${{OPENVPN_WHO:-}}\" >> '{}'\n",
            log.display()
        ),
    )
    .unwrap();
    let cmd = format!("/bin/sh {}", script.display());
    let cfg = client(
        &pki,
        srv.port,
        &format!(
            "script-security 2\nsetenv-safe WHO me\nup-restart\nup \"{cmd}\"\nroute-up \"{cmd}\"\nipchange \"{cmd}\"\nroute-pre-down \"{cmd}\"\ndown \"{cmd}\"\n"
        ),
    );
    let hooks = TunHooks::new(&cfg, None);
    let (tun, _tun_handle) = MemoryTun::pair(64);
    let mut h = openvpn_client::connect(cfg, hooks.wrap(MemoryTunBuilder::new(tun)));
    until(&mut h, &hooks, "connection", |e| {
        matches!(e, VpnEvent::Connected { .. })
    })
    .await;
    let port = srv.port;
    let up_args = "tun 1500 0 10.8.0.2 255.255.255.0";
    assert_eq!(
        lines(&log),
        [
            format!("up init {up_args} init | sig= rn1=10.99.0.0 vpngw=10.8.0.1 tip= safe=me"),
            "route-up init  | sig= rn1=10.99.0.0 vpngw=10.8.0.1 tip= safe=me".to_owned(),
            format!("ipchange  127.0.0.1 {port} | sig= rn1= vpngw= tip=127.0.0.1 safe=me"),
        ]
    );
    // A restart keeps the in-memory device (it cannot be built twice): down and up run with
    // context `restart`, without the route variables.
    hooks.set_signal("sigusr1");
    h.command(Command::ReconnectNow);
    until(&mut h, &hooks, "reconnection", |e| {
        matches!(e, VpnEvent::Connected { .. })
    })
    .await;
    assert_eq!(
        lines(&log)[3..],
        [
            format!("down restart {up_args} restart | sig=sigusr1 rn1= vpngw= tip= safe=me"),
            format!("up restart {up_args} restart | sig= rn1= vpngw= tip= safe=me"),
            format!("ipchange  127.0.0.1 {port} | sig= rn1= vpngw= tip=127.0.0.1 safe=me"),
        ]
    );
    hooks.set_signal("sigterm");
    h.command(Command::Disconnect);
    while let Some(ev) = h.events.recv().await {
        hooks.on_event(&ev);
    }
    assert_eq!(h.wait().await, ExitReason::Disconnected);
    assert_eq!(
        lines(&log)[6..],
        [
            format!(
                "route-pre-down init {up_args} init | sig=sigterm rn1=10.99.0.0 vpngw=10.8.0.1 tip= safe=me"
            ),
            format!(
                "down init {up_args} init | sig=sigterm rn1=10.99.0.0 vpngw=10.8.0.1 tip= safe=me"
            ),
        ]
    );
    let _ = srv.stop.send(());
    srv.task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client that does not trust the server's CA: with `tls-exit` it stops with
/// `TlsError` at the first failure; without, it keeps trying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_exit_stops_at_the_first_tls_failure() {
    let good = pki();
    let other = pki();
    let srv = server(&good, "").await;
    let mut h = openvpn_client::connect(
        client(&other, srv.port, "tls-exit\n"),
        MemoryTunBuilder::new(MemoryTun::pair(64).0),
    );
    let exit = tokio::time::timeout(Duration::from_secs(15), async {
        while h.events.recv().await.is_some() {}
        h.wait().await
    })
    .await
    .expect("tls-exit: the client must stop");
    assert!(
        matches!(&exit, ExitReason::TlsError(r) if r.contains("Tls")),
        "{exit:?}"
    );
    // Without tls-exit: still trying after two failures.
    let mut h = openvpn_client::connect(
        client(&other, srv.port, ""),
        MemoryTunBuilder::new(MemoryTun::pair(64).0),
    );
    let mut failures = 0;
    while failures < 2 {
        match tokio::time::timeout(Duration::from_secs(15), h.events.recv()).await {
            Ok(Some(VpnEvent::ConnectFailed { .. })) => failures += 1,
            Ok(Some(_)) => {}
            other => panic!("the client stopped or stalled: {other:?}"),
        }
    }
    h.command(Command::Disconnect);
    while h.events.recv().await.is_some() {}
    assert_eq!(h.wait().await, ExitReason::Disconnected);
    let _ = srv.stop.send(());
    srv.task.await.unwrap().unwrap();
}
