//! Embedding the client library: connect to an in-process `openvpn-server` over loopback with
//! in-memory tun devices on both sides, print every event, send one packet each way.
//!
//! Run with `cargo run -p openvpn-client --example embed` (no root needed).

use std::sync::Arc;
use std::time::Duration;

use openvpn_client::{ClientConfig, Command, MemoryTunBuilder, VpnEvent};
use openvpn_control::options;
use openvpn_tun::MemoryTun;

/// PEM certificate and key.
type CertKey = (String, String);

fn pem_pki() -> anyhow::Result<(String, CertKey, CertKey)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "example-ca");
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;
    let leaf = |cn: &str, eku| -> anyhow::Result<CertKey> {
        let mut p = CertificateParams::new(vec![cn.to_owned()])?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![eku];
        let k = KeyPair::generate()?;
        Ok((p.signed_by(&k, &ca, &ca_key)?.pem(), k.serialize_pem()))
    };
    let server = leaf("server", ExtendedKeyUsagePurpose::ServerAuth)?;
    let client = leaf("client1", ExtendedKeyUsagePurpose::ClientAuth)?;
    Ok((ca.pem(), server, client))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (ca, (scert, skey), (ccert, ckey)) = pem_pki()?;
    // The server, in-process, on a loopback port.
    let server_text = format!(
        "server 10.8.0.0 255.255.255.0\ntopology subnet\nkeepalive 10 60\n<ca>\n{ca}</ca>\n<cert>\n{scert}</cert>\n<key>\n{skey}</key>\n"
    );
    let scfg = openvpn_server::config::load(
        &options::parse_config(&server_text)?,
        std::path::Path::new("/"),
    )?;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let port = udp.local_addr()?.port();
    let (srv_tun, mut srv_side) = MemoryTun::pair(16);
    tokio::spawn(openvpn_server::runtime::serve(
        scfg,
        Arc::new(srv_tun),
        Some(udp),
        None,
        std::future::pending(),
    ));

    // The client: a profile from text, an in-memory tun owned by this app.
    let profile = format!(
        "client\nremote 127.0.0.1 {port} udp\n<ca>\n{ca}</ca>\n<cert>\n{ccert}</cert>\n<key>\n{ckey}</key>\n"
    );
    let config = ClientConfig::from_ovpn(&profile, std::path::Path::new("."))?;
    let (tun, app_side) = MemoryTun::pair(16);
    let mut handle = openvpn_client::connect(config, MemoryTunBuilder::new(tun));
    while let Some(event) = handle.events.recv().await {
        println!("event: {event:?}");
        if matches!(event, VpnEvent::Connected { .. }) {
            break;
        }
    }
    // An ICMP echo request from our tunnel address to the server's.
    let ping = vec![
        0x45, 0, 0, 28, 0, 1, 0, 0, 64, 1, 0, 0, 10, 8, 0, 2, 10, 8, 0, 1, 8, 0, 0, 0, 0, 1, 0, 1,
    ];
    app_side.inject(ping).await?;
    let at_server = tokio::time::timeout(Duration::from_secs(5), srv_side.written()).await?;
    println!(
        "server's tun received {} bytes",
        at_server.map_or(0, |p| p.len())
    );
    handle.command(Command::Disconnect);
    println!("client stopped: {:?}", handle.wait().await);
    Ok(())
}
