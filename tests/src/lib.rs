//! Support for the cross-crate tests in `tests/tests/`: an in-memory PKI, server configs from
//! text, packet builders, a `/metrics` scraper and a management-socket client.
//! The tests themselves run our client against our server over loopback with in-memory tun
//! devices (no root needed).

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// A CA with one server and one client certificate, as PEM.
#[derive(Debug, Clone)]
pub struct Pki {
    /// CA certificate.
    pub ca: String,
    /// Server certificate and key (CN `server`, EKU serverAuth).
    pub server: (String, String),
    /// Client certificate and key (CN `client1`, EKU clientAuth).
    pub client: (String, String),
}

impl Pki {
    /// `(ca, server, client)`.
    pub fn parts(self) -> (String, (String, String), (String, String)) {
        (self.ca, self.server, self.client)
    }
}

/// Generates a fresh PKI (EC P-256).
///
/// # Panics
/// If rcgen fails, which only happens on a broken build.
#[allow(clippy::unwrap_used)]
pub fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test-ca");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = |cn: &str, eku| {
        let mut p = CertificateParams::new(vec![cn.to_owned()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![eku];
        // As real PKIs (easy-rsa, the installers) make them: `remote-cert-tls` needs it.
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let k = KeyPair::generate().unwrap();
        (
            p.signed_by(&k, &ca, &ca_key).unwrap().pem(),
            k.serialize_pem(),
        )
    };
    Pki {
        ca: ca.pem(),
        server: leaf("server", ExtendedKeyUsagePurpose::ServerAuth),
        client: leaf("client1", ExtendedKeyUsagePurpose::ClientAuth),
    }
}

/// An IPv4 ICMP echo request from `src` to `dst` with sequence number `seq`.
pub fn icmp_echo_v4(src: [u8; 4], dst: [u8; 4], seq: u8) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 28, 0, seq, 0, 0, 64, 1, 0, 0];
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, seq]);
    p
}

/// Fetches `http://127.0.0.1:PORT/metrics` (the server's `metrics-listen`): the whole HTTP
/// response, headers included. Panics if it cannot connect or no answer ends within 10 s.
pub async fn scrape_metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("cannot connect to the metrics port");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .expect("cannot send the metrics request");
    let mut body = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.read_to_string(&mut body),
    )
    .await
    .expect("no metrics answer within 10 s")
    .expect("cannot read the metrics answer");
    body
}

/// Sends `cmd` on the management interface at unix socket `sock` and returns what came back
/// up to the first line containing `until` (`"\n"`: the first line), after checking the
/// `>INFO:` greeting. Panics if the socket does not answer within 10 s.
pub async fn management_command(sock: &std::path::Path, cmd: &str, until: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let stream = tokio::net::UnixStream::connect(sock)
        .await
        .expect("cannot connect to the management socket");
    let (r, mut w) = stream.into_split();
    let mut lines = tokio::io::BufReader::new(r).lines();
    let greeting = lines
        .next_line()
        .await
        .expect("cannot read the management greeting")
        .unwrap_or_default();
    assert!(greeting.starts_with(">INFO:"), "{greeting}");
    w.write_all(cmd.as_bytes())
        .await
        .expect("cannot send the management command");
    let mut text = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(l) = lines
            .next_line()
            .await
            .expect("cannot read the management answer")
        {
            text.push_str(&l);
            text.push('\n');
            if until == "\n" || l.contains(until) {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no answer to {cmd:?}: {text}"));
    text
}

/// Our server's configuration from OpenVPN config text (inline certificates; relative paths
/// from `/`). Panics if the text does not parse or load.
pub fn server_config(text: &str) -> openvpn_server::config::ServerConfig {
    let lines = openvpn_control::options::parse_config(text).expect("the server config parses");
    openvpn_server::config::load(&lines, std::path::Path::new("/"))
        .expect("the server config loads")
}
