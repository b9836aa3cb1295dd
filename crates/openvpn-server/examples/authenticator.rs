//! An embedder's [`Authenticator`]: passwords from an in-process table, a per-user tunnel
//! address and route, and a one-time-password challenge (`CR_TEXT`) for one user.
//!
//! The server runs in-process with an in-memory tun device; two clients (our client library)
//! connect over loopback: `alice` (password only) and `bob` (password, then the OTP challenge,
//! answered with `Command::ChallengeResponse` the way a GUI answers `>INFOMSG:CR_TEXT:` with
//! `cr-response`). A third, `mallory`, is denied.
//!
//! Run with `cargo run -p openvpn-server --example authenticator` (no root needed).
//!
//! ```text
//!  client ─key exchange─▶ server ─spawn_blocking─▶ Directory::authenticate ─AuthHandle─▶ server
//!     ◀── AUTH_PENDING + INFO_PRE,CR_TEXT:R,E:… ──        (bob: pending)
//!     ─── CR_RESPONSE,base64 ──▶ server ─▶ Directory::challenge_response ─▶ accept / deny
//! ```

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use openvpn_client::{ClientConfig, Command, MemoryTunBuilder, VpnEvent};
use openvpn_control::options;
use openvpn_server::auth::{
    AuthHandle, AuthRequest, Authenticator, ChallengeResponse, ClientOptions,
};
use openvpn_server::runtime::ServeOptions;
use openvpn_tun::MemoryTun;

/// One account.
struct Account {
    password: &'static str,
    address: Ipv4Addr,
    /// Needs a one-time password after the password.
    otp: Option<&'static str>,
}

/// The user directory; a real one would query LDAP or a database (blocking is fine here:
/// each call runs on a blocking-pool thread, never on the packet path).
struct Directory {
    accounts: HashMap<&'static str, Account>,
}

impl Directory {
    fn accepted(&self, user: &str) -> ClientOptions {
        let mut o = ClientOptions::default().push("route 10.99.0.0 255.255.0.0");
        if let Some(a) = self.accounts.get(user) {
            o = o.ifconfig_push(a.address);
        }
        o
    }
}

impl Authenticator for Directory {
    fn authenticate(&self, req: AuthRequest, handle: AuthHandle) {
        println!(
            "authenticate: cid {} key {} user '{}' cn {:?} from {} (IV_PLAT={:?}, IV_SSO={:?})",
            req.cid,
            req.key_id,
            req.username,
            req.common_name,
            req.peer,
            req.peer_info("IV_PLAT"),
            req.peer_info("IV_SSO"),
        );
        let Some(account) = self.accounts.get(req.username.as_str()) else {
            handle.deny("unknown user", Some("unknown user".into()));
            return;
        };
        if account.password != req.password {
            handle.deny("wrong password", Some("wrong password".into()));
            return;
        }
        match account.otp {
            // Ask for the second factor; the answer comes to challenge_response.
            Some(_) => {
                handle.pending(Duration::from_secs(60), "CR_TEXT:R,E:Enter your OTP");
            }
            None => {
                handle.accept(self.accepted(&req.username));
            }
        }
    }

    fn challenge_response(&self, r: ChallengeResponse, handle: AuthHandle) {
        let answer = r.response().unwrap_or_default();
        println!(
            "challenge response: cid {} key {} '{answer}'",
            r.cid, r.key_id
        );
        // The CID identifies the connection; a real server keeps cid -> user from authenticate.
        let expected = self.accounts.get("bob").and_then(|a| a.otp);
        if expected == Some(answer.as_str()) {
            handle.accept(self.accepted("bob"));
        } else {
            handle.deny("wrong OTP", Some("wrong one-time password".into()));
        }
    }
}

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

/// Connects one client; answers a CR_TEXT challenge with `otp`. Returns the last event.
async fn client(profile_base: &str, user: &str, pass: &str, otp: &str) -> anyhow::Result<String> {
    use base64::Engine as _;
    let profile = format!(
        "{profile_base}setenv IV_SSO crtext\n<auth-user-pass>\n{user}\n{pass}\n</auth-user-pass>\n"
    );
    let config = ClientConfig::from_ovpn(&profile, std::path::Path::new("."))?;
    let (tun, _app_side) = MemoryTun::pair(16);
    let mut handle = openvpn_client::connect(config, MemoryTunBuilder::new(tun));
    let mut last = String::from("no event");
    while let Some(event) = handle.events.recv().await {
        match &event {
            VpnEvent::Info(text) if text.starts_with("CR_TEXT:") => {
                println!("  {user}: server asks '{text}', answering");
                let answer = base64::engine::general_purpose::STANDARD.encode(otp);
                handle.command(Command::ChallengeResponse(answer));
            }
            VpnEvent::Connected { settings, .. } => {
                last = format!(
                    "connected with {:?}, routes {:?}",
                    settings.ipv4, settings.routes_v4
                );
                break;
            }
            VpnEvent::AuthFailed { reason } => {
                last = format!("AUTH_FAILED: {reason}");
                break;
            }
            _ => {}
        }
    }
    handle.command(Command::Disconnect);
    let _ = tokio::time::timeout(Duration::from_secs(5), handle.wait()).await;
    Ok(last)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (ca, (scert, skey), (ccert, ckey)) = pem_pki()?;
    let server_text = format!(
        "server 10.8.0.0 255.255.255.0\ntopology subnet\nkeepalive 10 60\nduplicate-cn\n<ca>\n{ca}</ca>\n<cert>\n{scert}</cert>\n<key>\n{skey}</key>\n"
    );
    let cfg = openvpn_server::config::load(
        &options::parse_config(&server_text)?,
        std::path::Path::new("/"),
    )?;
    let directory = Directory {
        accounts: HashMap::from([
            (
                "alice",
                Account {
                    password: "wonderland",
                    address: Ipv4Addr::new(10, 8, 0, 50),
                    otp: None,
                },
            ),
            (
                "bob",
                Account {
                    password: "builder",
                    address: Ipv4Addr::new(10, 8, 0, 60),
                    otp: Some("424242"),
                },
            ),
        ]),
    };
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let port = udp.local_addr()?.port();
    let (srv_tun, _srv_side) = MemoryTun::pair(16);
    tokio::spawn(openvpn_server::runtime::serve_with(
        cfg,
        Arc::new(srv_tun),
        Some(udp),
        None,
        std::future::pending(),
        ServeOptions::with_authenticator(Arc::new(directory)),
    ));

    let base = format!(
        "client\nremote 127.0.0.1 {port} udp\nconnect-retry-max 1\n<ca>\n{ca}</ca>\n<cert>\n{ccert}</cert>\n<key>\n{ckey}</key>\n"
    );
    for (user, pass, otp) in [
        ("alice", "wonderland", ""),
        ("bob", "builder", "424242"),
        ("bob", "builder", "000000"),
        ("mallory", "guess", ""),
    ] {
        let r = client(&base, user, pass, otp).await?;
        println!("{user}: {r}");
    }
    Ok(())
}
