//! The TLS options every real config uses, enforced for real: `remote-cert-tls`,
//! `ns-cert-type`, `tls-cipher`, `tls-groups` decide whether a handshake between our two
//! sides completes (in memory, through the same rustls configs the binaries build).

use openvpn_control::options::catalog::Role;
use openvpn_control::options::parse_config;
use openvpn_control::tls::{TlsConfig, TlsSession};
use openvpn_control::tls_options::TlsOptions;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

struct Leaf {
    cert: String,
    key: String,
}

struct TestPki {
    ca: String,
    server: Leaf,
    server_no_ku: Leaf,
    server_ns: Leaf,
    client: Leaf,
}

fn pki() -> TestPki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "policy-ca");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = |cn: &str, eku, ku: bool, ns: Option<u8>| {
        let mut p = CertificateParams::new(vec![cn.to_owned()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![eku];
        if ku {
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        }
        if let Some(bits) = ns {
            // Netscape cert type (2.16.840.1.113730.1.1): a BIT STRING, 0x40 = SSL server.
            p.custom_extensions = vec![CustomExtension::from_oid_content(
                &[2, 16, 840, 1, 113730, 1, 1],
                vec![0x03, 0x02, 0x06, bits],
            )];
        }
        let k = KeyPair::generate().unwrap();
        Leaf {
            cert: p.signed_by(&k, &ca, &ca_key).unwrap().pem(),
            key: k.serialize_pem(),
        }
    };
    TestPki {
        ca: ca.pem(),
        server: leaf("server", ExtendedKeyUsagePurpose::ServerAuth, true, None),
        server_no_ku: leaf("server", ExtendedKeyUsagePurpose::ServerAuth, false, None),
        server_ns: leaf(
            "server",
            ExtendedKeyUsagePurpose::ServerAuth,
            true,
            Some(0x40),
        ),
        client: leaf("client1", ExtendedKeyUsagePurpose::ClientAuth, true, None),
    }
}

fn options(text: &str, role: Role, ca: &str, leaf: &Leaf) -> TlsOptions {
    let mut t = TlsOptions::default();
    let full = format!(
        "<ca>\n{ca}</ca>\n<cert>\n{}</cert>\n<key>\n{}</key>\n{text}",
        leaf.cert, leaf.key
    );
    for o in parse_config(&full).unwrap() {
        assert!(
            t.apply(&o, std::path::Path::new("/"), role).unwrap(),
            "{}",
            o.name
        );
    }
    t.finish().unwrap();
    t
}

/// Runs a TLS handshake between the two configs in memory; the error text on failure.
fn handshake(client: &TlsOptions, server: &TlsOptions) -> Result<(), String> {
    let c = TlsConfig::client(&client.credentials()).map_err(|e| e.to_string())?;
    let s = TlsConfig::server(&server.credentials(), false).map_err(|e| e.to_string())?;
    let mut cs = TlsSession::new(&c, None).map_err(|e| e.to_string())?;
    let mut ss = TlsSession::new(&s, None).map_err(|e| e.to_string())?;
    for _ in 0..20 {
        let mut buf = Vec::new();
        cs.take_tls(&mut buf);
        ss.read_tls(&buf).map_err(|e| format!("server: {e}"))?;
        let mut buf = Vec::new();
        ss.take_tls(&mut buf);
        cs.read_tls(&buf).map_err(|e| format!("client: {e}"))?;
        if !cs.is_handshaking() && !ss.is_handshaking() {
            return Ok(());
        }
    }
    Err("handshake did not finish".into())
}

#[test]
fn remote_cert_tls_needs_key_usage_and_the_right_eku() {
    let p = pki();
    let server = options("remote-cert-tls client\n", Role::Server, &p.ca, &p.server);
    let client = options("remote-cert-tls server\n", Role::Client, &p.ca, &p.client);
    handshake(&client, &server).expect("matching certificates");
    // A server certificate without a key usage extension: OpenVPN refuses it, so do we.
    let bad = options(
        "remote-cert-tls client\n",
        Role::Server,
        &p.ca,
        &p.server_no_ku,
    );
    let e = handshake(&client, &bad).unwrap_err();
    assert!(e.contains("key usage"), "{e}");
    // The client's certificate presented as a server's: wrong extended key usage.
    let wrong = options("", Role::Server, &p.ca, &p.client);
    let e = handshake(&client, &wrong).unwrap_err();
    assert!(
        e.contains("extended key usage") || e.contains("client"),
        "{e}"
    );
}

#[test]
fn ns_cert_type_checks_the_netscape_bits() {
    let p = pki();
    let client = options("ns-cert-type server\n", Role::Client, &p.ca, &p.client);
    let with_ns = options("", Role::Server, &p.ca, &p.server_ns);
    handshake(&client, &with_ns).expect("server bit set");
    let without = options("", Role::Server, &p.ca, &p.server);
    let e = handshake(&client, &without).unwrap_err();
    assert!(e.contains("ns-cert-type"), "{e}");
}

#[test]
fn tls_cipher_and_groups_limit_the_handshake() {
    let p = pki();
    // TLS 1.2 only, with one suite each side does not share: no handshake.
    let client = options(
        "tls-version-max 1.2\ntls-cipher TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384\n",
        Role::Client,
        &p.ca,
        &p.client,
    );
    let server = options(
        "tls-cipher TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256\n",
        Role::Server,
        &p.ca,
        &p.server,
    );
    assert!(handshake(&client, &server).is_err());
    let server = options(
        "tls-cipher DEFAULT:!CHACHA20\n",
        Role::Server,
        &p.ca,
        &p.server,
    );
    handshake(&client, &server).expect("AES-256-GCM is shared");
    // A provider profile naming only DHE/CBC suites still connects over TLS 1.3.
    let legacy = options(
        "tls-cipher TLS-DHE-RSA-WITH-AES-256-CBC-SHA:TLS-DHE-DSS-WITH-AES-256-CBC-SHA\n",
        Role::Client,
        &p.ca,
        &p.client,
    );
    handshake(&legacy, &options("", Role::Server, &p.ca, &p.server)).expect("TLS 1.3");
    // Disjoint key-exchange groups: no handshake.
    let a = options("tls-groups X25519\n", Role::Client, &p.ca, &p.client);
    let b = options("ecdh-curve secp384r1\n", Role::Server, &p.ca, &p.server);
    assert!(handshake(&a, &b).is_err());
}

#[test]
fn verify_client_cert_none_is_allowed_with_management_client_auth() {
    let p = pki();
    let base = format!(
        "server 10.8.0.0 255.255.255.0\ntopology subnet\nverify-client-cert none\n<ca>\n{}</ca>\n<cert>\n{}</cert>\n<key>\n{}</key>\n",
        p.ca, p.server.cert, p.server.key
    );
    let now = std::time::Instant::now();
    let with = openvpn_tests::server_config(&format!(
        "{base}management 127.0.0.1 7505\nmanagement-client-auth\n"
    ));
    if let Err(e) = openvpn_server::core::ServerCore::new(with, now) {
        panic!("{e}");
    }
    let without = openvpn_tests::server_config(&base);
    let e = openvpn_server::core::ServerCore::new(without, now)
        .err()
        .expect("no authentication at all is refused");
    assert!(e.contains("management-client-auth"), "{e}");
}

#[test]
fn tls_verify_sees_every_depth_root_first_and_can_refuse() {
    use std::sync::{Arc, Mutex};
    let p = pki();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hook = |refuse_leaf: bool| {
        let seen = Arc::clone(&seen);
        openvpn_control::tls::CertHook(Arc::new(move |c: &openvpn_control::tls::CertInfo| {
            seen.lock().unwrap().push((
                c.depth,
                c.subject.clone(),
                c.env
                    .iter()
                    .any(|(k, v)| k == &format!("X509_{}_CN", c.depth) && !v.is_empty()),
            ));
            !(refuse_leaf && c.depth == 0)
        }))
    };
    let client = options("", Role::Client, &p.ca, &p.client);
    let server = options("", Role::Server, &p.ca, &p.server);
    let run = |h| {
        let c = TlsConfig::client(&client.credentials_with(Some(h))).unwrap();
        let s = TlsConfig::server(&server.credentials(), false).unwrap();
        let mut cs = TlsSession::new(&c, None).unwrap();
        let mut ss = TlsSession::new(&s, None).unwrap();
        for _ in 0..20 {
            let mut buf = Vec::new();
            cs.take_tls(&mut buf);
            ss.read_tls(&buf).map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            ss.take_tls(&mut buf);
            cs.read_tls(&buf).map_err(|e| e.to_string())?;
            if !cs.is_handshaking() && !ss.is_handshaking() {
                return Ok(());
            }
        }
        Err("unfinished".to_string())
    };
    run(hook(false)).expect("accepted by the hook");
    let calls = seen.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].0, 1, "the root CA first: {calls:?}");
    assert!(calls[0].1.contains("policy-ca") && calls[1].1.contains("server"));
    assert!(calls.iter().all(|c| c.2), "X509_<depth>_CN set: {calls:?}");
    let e = run(hook(true)).unwrap_err();
    assert!(e.contains("tls-verify"), "{e}");
}

#[test]
fn tls_verify_runs_the_command_with_depth_and_subject() {
    let dir = std::env::temp_dir().join(format!("ovrs-tlsverify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("calls");
    let script = dir.join("verify.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1|$2|$script_type|$X509_0_CN|$MY_ENV\" >> {}\n[ \"$1\" != 0 ] || [ \"$X509_0_CN\" = server ]\n",
            out.display()
        ),
    )
    .unwrap();
    let info = |cn: &str| openvpn_control::tls::CertInfo {
        depth: 0,
        subject: format!("CN={cn}, O=it's"),
        env: vec![("X509_0_CN".into(), cn.into())],
    };
    let env = [("MY_ENV".to_owned(), "x".to_owned())];
    let cmd = format!("sh {}", script.display());
    let ok = |c: &openvpn_control::tls::CertInfo| {
        openvpn_tun::process::run_tls_verify(&cmd, c.depth, &c.subject, &c.env, &env)
    };
    assert!(ok(&info("server")));
    assert!(!ok(&info("mallory")));
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        text,
        "0|CN=server, O=it's|tls-verify|server|x\n0|CN=mallory, O=it's|tls-verify|mallory|x\n"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn peer_fingerprint_pins_a_self_signed_server_without_ca() {
    use sha2_digest::sha256_colon;
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["server".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "server");
    let cert = params.self_signed(&key).unwrap();
    let server_leaf = Leaf {
        cert: cert.pem(),
        key: key.serialize_pem(),
    };
    let fp = sha256_colon(cert.der());
    let p = pki();
    // The server verifies its client with the ordinary CA; the client pins the server.
    let server = options("", Role::Server, &p.ca, &server_leaf);
    let pinned = |fp: &str| {
        let mut t = TlsOptions::default();
        let text = format!(
            "<cert>\n{}</cert>\n<key>\n{}</key>\n<peer-fingerprint>\n{fp}\n</peer-fingerprint>\n",
            p.client.cert, p.client.key
        );
        for o in parse_config(&text).unwrap() {
            t.apply(&o, std::path::Path::new("/"), Role::Client)
                .unwrap();
        }
        t.finish().unwrap();
        t
    };
    handshake(&pinned(&fp), &server).expect("the pinned fingerprint");
    let wrong = fp.replacen(&fp[..2], if &fp[..2] == "00" { "01" } else { "00" }, 1);
    let e = handshake(&pinned(&wrong), &server).unwrap_err();
    assert!(e.contains("peer-fingerprint"), "{e}");
    // Neither ca nor peer-fingerprint: refused when the TLS configuration is built.
    let mut none = TlsOptions::default();
    none.finish().unwrap();
    assert!(TlsConfig::client(&none.credentials()).is_err());
}

mod sha2_digest {
    /// SHA-256 as `AB:CD:…`, as `openssl x509 -fingerprint -sha256` prints it.
    pub fn sha256_colon(der: &[u8]) -> String {
        let out = std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-binary"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write as _;
                c.stdin.take().unwrap().write_all(der)?;
                c.wait_with_output()
            })
            .unwrap();
        out.stdout
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

#[test]
fn crl_verify_dir_refuses_a_serial_that_has_a_file() {
    let p = pki();
    let dir = std::env::temp_dir().join(format!("ovrs-crldir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!("crl-verify {} dir\n", dir.display());
    let client = options("", Role::Client, &p.ca, &p.client);
    let server = options(&text, Role::Server, &p.ca, &p.server);
    handshake(&client, &server).expect("nothing revoked yet");
    // Revoke the client's serial: a file named after it, in decimal, as OpenVPN expects.
    let der = rustls_pki_der(&p.client.cert);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    std::fs::write(dir.join(cert.tbs_certificate.serial.to_string()), "").unwrap();
    let e = handshake(&client, &server).unwrap_err();
    assert!(e.contains("revoked"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

fn rustls_pki_der(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}
