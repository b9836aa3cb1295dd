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
    t.finish();
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
