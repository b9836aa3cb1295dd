//! The one module that talks to rustls.
//!
//! OpenVPN carries TLS records inside P_CONTROL packets, so TLS here is a pipe:
//! ciphertext in ([`TlsSession::read_tls`]), plaintext out ([`TlsSession::read_plaintext`]),
//! plaintext in ([`TlsSession::write_plaintext`]), ciphertext out ([`TlsSession::take_tls`]).
//! Everything that depends on the rustls API (0.23) lives here, so that a later rustls
//! upgrade touches one file.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::error::ControlError;

mod policy;

pub use policy::{
    Algorithms, CertHook, CertInfo, CertProfile, EKU_CLIENT_AUTH, EKU_SERVER_AUTH, NsCertType,
    PeerCertPolicy, SerialCheck, eku_oid, parse_fingerprint, select_groups, select_tls12,
    select_tls13,
};

/// TLS protocol versions a peer may use (`tls-version-min`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TlsVersionMin {
    /// TLS 1.2 or newer (OpenVPN 2.6's default).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// The newest TLS protocol version a peer may use (`tls-version-max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TlsVersionMax {
    /// TLS 1.3 (no limit; the default).
    #[default]
    Tls13,
    /// TLS 1.2 at most (`tls-version-max 1.2`).
    Tls12,
}

/// How `verify-x509-name` compares the peer certificate's subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum X509NameCheck {
    /// The common name must equal this value (`verify-x509-name NAME name`).
    CommonName(String),
    /// The common name must start with this value (`name-prefix`).
    CommonNamePrefix(String),
    /// The full subject, in OpenSSL's one-line `C=.., CN=..` form, must equal this value.
    Subject(String),
}

impl X509NameCheck {
    fn matches(&self, cert: &CertificateDer<'_>) -> bool {
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
            return false;
        };
        let cn = common_name_of(&parsed);
        match self {
            X509NameCheck::CommonName(want) => cn.as_deref() == Some(want.as_str()),
            X509NameCheck::CommonNamePrefix(p) => cn.is_some_and(|c| c.starts_with(p.as_str())),
            X509NameCheck::Subject(want) => {
                let subject = parsed.subject().to_string().replace(", ", ",");
                subject == want.replace(", ", ",")
            }
        }
    }
}

fn common_name_of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

/// The common name of a DER certificate, if it has one.
pub fn certificate_common_name(der: &[u8]) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(der).ok()?;
    common_name_of(&parsed)
}

/// PEM inputs for one side's TLS configuration (`ca`, `cert`, `key`, `crl-verify`).
#[derive(Clone, Debug, Default)]
pub struct TlsCredentials {
    /// PEM text of the CA certificate(s) that sign the peer's certificate.
    pub ca_pem: String,
    /// PEM text of our certificate chain (leaf first).
    pub cert_pem: Option<String>,
    /// PEM text of our private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_pem: Option<String>,
    /// PEM text of CRLs to check the peer against (`crl-verify`).
    pub crl_pem: Option<String>,
    /// `verify-x509-name`.
    pub verify_name: Option<X509NameCheck>,
    /// `tls-version-min`.
    pub version_min: TlsVersionMin,
    /// `tls-version-max`.
    pub version_max: TlsVersionMax,
    /// `tls-cipher`, `tls-ciphersuites`, `tls-groups`, `tls-cert-profile`.
    pub algorithms: Algorithms,
    /// `ns-cert-type`, `remote-cert-tls`, `remote-cert-ku`, `remote-cert-eku`.
    pub peer_policy: PeerCertPolicy,
}

fn load_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, ControlError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    let certs = certs.map_err(|e| ControlError::Config(format!("{what}: bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ControlError::Config(format!(
            "{what}: no certificate found"
        )));
    }
    Ok(certs)
}

fn load_key(pem: &str) -> Result<PrivateKeyDer<'static>, ControlError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| ControlError::Config(format!("key: no usable private key: {e}")))
}

fn load_crls(pem: &str) -> Result<Vec<CertificateRevocationListDer<'static>>, ControlError> {
    let crls: Result<Vec<_>, _> =
        CertificateRevocationListDer::pem_slice_iter(pem.as_bytes()).collect();
    crls.map_err(|e| ControlError::Config(format!("crl-verify: bad PEM: {e}")))
}

fn roots(ca_pem: &str) -> Result<Arc<rustls::RootCertStore>, ControlError> {
    let mut store = rustls::RootCertStore::empty();
    for cert in load_certs(ca_pem, "ca")? {
        store
            .add(cert)
            .map_err(|e| ControlError::Config(format!("ca: unusable CA certificate: {e}")))?;
    }
    Ok(Arc::new(store))
}

/// Whether the peer is identified by `peer-fingerprint` alone (no `ca`): its chain is then not
/// verified, only its fingerprint, as OpenVPN does for self-signed peers.
fn fingerprint_only(creds: &TlsCredentials) -> Result<bool, ControlError> {
    match (
        creds.ca_pem.trim().is_empty(),
        creds.peer_policy.fingerprints.is_empty(),
    ) {
        (true, true) => Err(ControlError::Config(
            "no 'ca' (nor 'peer-fingerprint'): the peer's certificate cannot be verified".into(),
        )),
        (true, false) => Ok(true),
        (false, _) => Ok(false),
    }
}

/// The provider and protocol versions the options leave.
fn limited(
    creds: &TlsCredentials,
) -> Result<
    (
        Arc<rustls::crypto::CryptoProvider>,
        &'static [&'static rustls::SupportedProtocolVersion],
    ),
    ControlError,
> {
    let l = creds.algorithms.provider()?;
    let max = creds.version_max;
    let (min, max) = match (l.tls12, l.tls13) {
        // tls-cipher left no TLS 1.2 suite: only TLS 1.3 (as with OpenSSL, whose TLS 1.3
        // suites tls-cipher does not touch).
        (false, _) => (TlsVersionMin::Tls13, max),
        (true, false) => (creds.version_min, TlsVersionMax::Tls12),
        (true, true) => (creds.version_min, max),
    };
    Ok((Arc::new(l.provider), versions(min, max)?))
}

fn versions(
    min: TlsVersionMin,
    max: TlsVersionMax,
) -> Result<&'static [&'static rustls::SupportedProtocolVersion], ControlError> {
    static BOTH: &[&rustls::SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];
    static ONLY13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    static ONLY12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    match (min, max) {
        (TlsVersionMin::Tls12, TlsVersionMax::Tls13) => Ok(BOTH),
        (TlsVersionMin::Tls13, TlsVersionMax::Tls13) => Ok(ONLY13),
        (TlsVersionMin::Tls12, TlsVersionMax::Tls12) => Ok(ONLY12),
        (TlsVersionMin::Tls13, TlsVersionMax::Tls12) => Err(ControlError::Config(
            "tls-version-min / tls-version-max / tls-cipher / tls-ciphersuites leave no TLS version: TLS 1.3 needs a tls-ciphersuites suite, TLS 1.2 a tls-cipher suite of ours"
                .into(),
        )),
    }
}

/// Client verifier: the chain must lead to our CA, but OpenVPN clients do not match the
/// server's host name (that is what `verify-x509-name` is for).
#[derive(Debug)]
struct OpenVpnServerVerifier {
    /// webpki's chain check; `None` with `peer-fingerprint` and no `ca` (the fingerprint
    /// alone identifies the peer, as in OpenVPN).
    inner: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    name: Option<X509NameCheck>,
    checks: Checks,
}

/// What both verifiers check after (or, with fingerprints only, instead of) the chain.
#[derive(Debug)]
struct Checks {
    policy: PeerCertPolicy,
    /// The `ca` certificates (DER), for `tls-verify`'s root (empty without `tls-verify`).
    roots: Vec<Vec<u8>>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl Checks {
    fn new(creds: &TlsCredentials, provider: &rustls::crypto::CryptoProvider) -> Self {
        // Only tls-verify looks at the root; the chain check has its own parsed store.
        let roots = if creds.ca_pem.is_empty() || creds.peer_policy.verify_hook.is_none() {
            Vec::new()
        } else {
            load_certs(&creds.ca_pem, "ca")
                .map(|v| v.into_iter().map(|c| c.as_ref().to_vec()).collect())
                .unwrap_or_default()
        };
        Checks {
            policy: creds.peer_policy.clone(),
            roots,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// The certificate policy and `tls-verify` over the presented chain.
    fn after_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        self.policy
            .check(end_entity.as_ref())
            .map_err(rustls::Error::General)?;
        let chain: Vec<&[u8]> = std::iter::once(end_entity.as_ref())
            .chain(intermediates.iter().map(|c| c.as_ref()))
            .collect();
        self.policy
            .run_hook(&chain, &self.roots)
            .map_err(rustls::Error::General)
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

/// Server verifier: webpki's chain and CRL checks, then OpenVPN's certificate policy.
#[derive(Debug)]
struct OpenVpnClientVerifier {
    /// webpki's chain and CRL checks; `None` with `peer-fingerprint` and no `ca`.
    inner: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    /// `verify-client-cert optional|none` (used without `inner`).
    optional: bool,
    checks: Checks,
}

impl rustls::server::danger::ClientCertVerifier for OpenVpnClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.as_ref().is_none_or(|i| i.offer_client_auth())
    }

    fn client_auth_mandatory(&self) -> bool {
        match &self.inner {
            Some(i) => i.client_auth_mandatory(),
            None => !self.optional,
        }
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        match &self.inner {
            Some(i) => i.root_hint_subjects(),
            None => &[],
        }
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        if let Some(inner) = &self.inner {
            inner.verify_client_cert(end_entity, intermediates, now)?;
        }
        self.checks.after_chain(end_entity, intermediates)?;
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.checks.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.checks.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.checks.algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for OpenVpnServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(inner) = &self.inner {
            match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
                Ok(_) => {}
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(check) = &self.name {
            if !check.matches(end_entity) {
                return Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ));
            }
        }
        self.checks.after_chain(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.checks.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.checks.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.checks.algorithms.supported_schemes()
    }
}

/// A ready TLS configuration for one role, cheap to clone and share between sessions.
#[derive(Clone, Debug)]
pub enum TlsConfig {
    /// OpenVPN client = TLS client.
    Client(Arc<rustls::ClientConfig>),
    /// OpenVPN server = TLS server.
    Server(Arc<rustls::ServerConfig>),
}

impl TlsConfig {
    /// Builds the client side: verifies the server against `ca` (and CRL, name check);
    /// presents `cert`/`key` if given; TLS versions from `version_min`/`version_max`.
    pub fn client(creds: &TlsCredentials) -> Result<Self, ControlError> {
        let (provider, versions) = limited(creds)?;
        let inner = if fingerprint_only(creds)? {
            None
        } else {
            let mut builder = rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots(&creds.ca_pem)?,
                provider.clone(),
            );
            if let Some(crl) = &creds.crl_pem {
                builder = builder.with_crls(load_crls(crl)?);
            }
            Some(
                builder
                    .build()
                    .map_err(|e| ControlError::Config(format!("ca: {e}")))?,
            )
        };
        let verifier = Arc::new(OpenVpnServerVerifier {
            inner,
            name: creds.verify_name.clone(),
            checks: Checks::new(creds, &provider),
        });
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| ControlError::Config(format!("tls: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&creds.cert_pem, &creds.key_pem) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(load_certs(cert, "cert")?, load_key(key)?)
                .map_err(|e| ControlError::Config(format!("cert/key: {e}")))?,
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(ControlError::Config(
                    "cert and key must be given together".into(),
                ));
            }
        };
        Ok(TlsConfig::Client(Arc::new(config)))
    }

    /// Builds the server side: requires (or, with `client_cert_optional`, allows missing)
    /// client certificates signed by `ca`.
    pub fn server(
        creds: &TlsCredentials,
        client_cert_optional: bool,
    ) -> Result<Self, ControlError> {
        let (provider, versions) = limited(creds)?;
        let inner = if fingerprint_only(creds)? {
            None
        } else {
            let mut builder = WebPkiClientVerifier::builder_with_provider(
                roots(&creds.ca_pem)?,
                provider.clone(),
            );
            if let Some(crl) = &creds.crl_pem {
                builder = builder.with_crls(load_crls(crl)?);
            }
            if client_cert_optional {
                builder = builder.allow_unauthenticated();
            }
            Some(
                builder
                    .build()
                    .map_err(|e| ControlError::Config(format!("ca: {e}")))?,
            )
        };
        let verifier = Arc::new(OpenVpnClientVerifier {
            inner,
            optional: client_cert_optional,
            checks: Checks::new(creds, &provider),
        });
        let (Some(cert), Some(key)) = (&creds.cert_pem, &creds.key_pem) else {
            return Err(ControlError::Config(
                "a server needs both 'cert' and 'key'".into(),
            ));
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| ControlError::Config(format!("tls: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(load_certs(cert, "cert")?, load_key(key)?)
            .map_err(|e| ControlError::Config(format!("cert/key: {e}")))?;
        config.send_tls13_tickets = 0;
        Ok(TlsConfig::Server(Arc::new(config)))
    }
}

/// One TLS session (one per OpenVPN key state).
pub struct TlsSession {
    conn: rustls::Connection,
    name_check: Option<X509NameCheck>,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.conn.is_handshaking())
            .finish()
    }
}

impl TlsSession {
    /// Starts a TLS session for the given configuration.
    pub fn new(
        config: &TlsConfig,
        server_name_check: Option<X509NameCheck>,
    ) -> Result<Self, ControlError> {
        let conn = match config {
            TlsConfig::Client(c) => {
                let name = ServerName::try_from("openvpn-server")
                    .map_err(|e| ControlError::Config(format!("tls: {e}")))?;
                rustls::Connection::Client(
                    rustls::ClientConnection::new(c.clone(), name)
                        .map_err(|e| ControlError::Tls(e.to_string()))?,
                )
            }
            TlsConfig::Server(c) => rustls::Connection::Server(
                rustls::ServerConnection::new(c.clone())
                    .map_err(|e| ControlError::Tls(e.to_string()))?,
            ),
        };
        Ok(TlsSession {
            conn,
            name_check: server_name_check,
        })
    }

    /// Feeds TLS ciphertext received from the peer and processes it.
    pub fn read_tls(&mut self, mut data: &[u8]) -> Result<(), ControlError> {
        while !data.is_empty() {
            let n = self
                .conn
                .read_tls(&mut data)
                .map_err(|e| ControlError::Tls(e.to_string()))?;
            if n == 0 {
                break;
            }
            self.conn
                .process_new_packets()
                .map_err(|e| ControlError::Tls(e.to_string()))?;
        }
        Ok(())
    }

    /// Appends all TLS ciphertext waiting to be sent to `out`.
    pub fn take_tls(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            if self.conn.write_tls(out).is_err() {
                break;
            }
        }
    }

    /// Whether the TLS handshake is still running.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Writes one application message; rustls emits it as one record (≤ 16 KiB).
    pub fn write_plaintext(&mut self, msg: &[u8]) -> Result<(), ControlError> {
        self.conn
            .writer()
            .write_all(msg)
            .map_err(|e| ControlError::Tls(e.to_string()))
    }

    /// Appends decrypted application data to `out`.
    pub fn read_plaintext(&mut self, out: &mut Vec<u8>) {
        let mut buf = [0u8; 4096];
        loop {
            match self.conn.reader().read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// RFC 5705 exporter without context (OpenVPN's `tls-ekm`).
    pub fn export(&self, label: &[u8], out: &mut [u8]) -> Result<(), ControlError> {
        self.conn
            .export_keying_material(out, label, None)
            .map(|_| ())
            .map_err(|e| ControlError::Tls(format!("keying material exporter: {e}")))
    }

    /// The common name of the peer's certificate, if it sent one.
    pub fn peer_common_name(&self) -> Option<String> {
        let certs = self.conn.peer_certificates()?;
        certificate_common_name(certs.first()?.as_ref())
    }

    /// Checks `verify-x509-name` on the server side (the client checks it during the handshake).
    pub fn peer_name_ok(&self) -> bool {
        match (
            &self.name_check,
            self.conn.peer_certificates().and_then(|c| c.first()),
        ) {
            (None, _) => true,
            (Some(check), Some(cert)) => check.matches(cert),
            (Some(_), None) => false,
        }
    }

    /// Negotiated TLS version and cipher suite, for logs.
    pub fn describe(&self) -> String {
        format!(
            "{:?} {:?}",
            self.conn.protocol_version(),
            self.conn.negotiated_cipher_suite().map(|s| s.suite())
        )
    }
}
