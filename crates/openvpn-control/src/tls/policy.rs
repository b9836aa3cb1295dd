//! What OpenVPN checks in the peer's certificate beyond the chain, and which TLS suites and
//! key-exchange groups a config allows: `ns-cert-type`, `remote-cert-tls`, `remote-cert-ku`,
//! `remote-cert-eku`, `tls-cert-profile`, `tls-cipher`, `tls-ciphersuites`,
//! `tls-groups` / `ecdh-curve`.

use rustls::SupportedCipherSuite;
use rustls::crypto::SupportedKxGroup;
use rustls::crypto::ring::{cipher_suite as cs, kx_group};
use x509_parser::extensions::ParsedExtension;

use crate::error::ControlError;

/// Netscape certificate type (`ns-cert-type server|client`, deprecated but still honoured by
/// OpenVPN 2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NsCertType {
    /// The SSL server bit must be set.
    Server,
    /// The SSL client bit must be set.
    Client,
}

/// One certificate of the peer's chain as `tls-verify` sees it: depth 0 is the peer's own,
/// the highest is the root CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Depth in the chain.
    pub depth: usize,
    /// The subject in OpenSSL's one-line form (`C=US, O=Org, CN=name`).
    pub subject: String,
    /// OpenVPN's per-certificate variables: `X509_{depth}_{field}`, `tls_serial_{depth}`,
    /// `tls_serial_hex_{depth}`, `tls_digest_{depth}`, `tls_digest_sha256_{depth}`.
    pub env: Vec<(String, String)>,
}

impl CertInfo {
    /// Reads a DER certificate at `depth`.
    pub fn of(der: &[u8], depth: usize) -> Option<Self> {
        use sha2::Digest as _;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let colon_hex = |bytes: &[u8]| {
            bytes
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        let mut env = Vec::new();
        for rdn in cert.subject().iter() {
            for attr in rdn.iter() {
                let oid = attr.attr_type().to_id_string();
                let key = match oid.as_str() {
                    "2.5.4.3" => "CN",
                    "2.5.4.6" => "C",
                    "2.5.4.7" => "L",
                    "2.5.4.8" => "ST",
                    "2.5.4.10" => "O",
                    "2.5.4.11" => "OU",
                    "2.5.4.5" => "serialNumber",
                    "1.2.840.113549.1.9.1" => "emailAddress",
                    other => other,
                };
                if let Ok(v) = attr.as_str() {
                    env.push((format!("X509_{depth}_{key}"), v.to_owned()));
                }
            }
        }
        let serial = cert.tbs_certificate.serial.clone();
        env.push((format!("tls_serial_{depth}"), serial.to_string()));
        env.push((
            format!("tls_serial_hex_{depth}"),
            colon_hex(&serial.to_bytes_be()).to_lowercase(),
        ));
        env.push((
            format!("tls_digest_{depth}"),
            colon_hex(&sha1::Sha1::digest(der)).to_lowercase(),
        ));
        env.push((
            format!("tls_digest_sha256_{depth}"),
            colon_hex(&sha2::Sha256::digest(der)).to_lowercase(),
        ));
        Some(CertInfo {
            depth,
            subject: cert.subject().to_string(),
            env,
        })
    }
}

/// `tls-verify`: called for each certificate of the verified chain, root first (as OpenVPN
/// does); `false` rejects the peer. The binary supplies it (it runs the command), so that this
/// crate runs no process.
#[derive(Clone)]
pub struct CertHook(pub std::sync::Arc<dyn Fn(&CertInfo) -> bool + Send + Sync>);

impl std::fmt::Debug for CertHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertHook")
    }
}

impl PartialEq for CertHook {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CertHook {}

/// `crl-verify DIR dir`'s check: true when the decimal serial number is revoked.
#[derive(Clone)]
pub struct SerialCheck(pub std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl std::fmt::Debug for SerialCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SerialCheck")
    }
}

impl PartialEq for SerialCheck {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SerialCheck {}

/// A `peer-fingerprint` value: `AB:CD:…` (32 bytes of SHA-256).
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let bytes: Vec<u8> = s
        .trim()
        .split(':')
        .map(|h| {
            (h.len() == 2)
                .then(|| u8::from_str_radix(h, 16).ok())
                .flatten()
        })
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

/// Checks on the peer's leaf certificate, after its chain verified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerCertPolicy {
    /// `peer-fingerprint`: the SHA-256 of the peer's certificate must be one of these.
    pub fingerprints: Vec<[u8; 32]>,
    /// `tls-verify`.
    pub verify_hook: Option<CertHook>,
    /// `crl-verify DIR dir`: whether a serial number (decimal) is revoked (a file of that
    /// name exists in the directory; looked up at each handshake).
    pub revoked_serial: Option<SerialCheck>,
    /// `ns-cert-type`.
    pub ns_cert_type: Option<NsCertType>,
    /// `remote-cert-ku [v…]` (values in OpenSSL's hex order, e.g. `a0`); `Some(empty)`: the
    /// key usage extension must be present (what `remote-cert-tls` asks).
    pub key_usage: Option<Vec<u16>>,
    /// `remote-cert-eku OID|name` as a dotted OID.
    pub extended_key_usage: Option<String>,
    /// `tls-cert-profile suiteb`: the peer's key must be an EC key.
    pub suite_b: bool,
}

/// The OID of `serverAuth`.
pub const EKU_SERVER_AUTH: &str = "1.3.6.1.5.5.7.3.1";
/// The OID of `clientAuth`.
pub const EKU_CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";

/// A `remote-cert-eku` argument as a dotted OID: OpenSSL's long or short names of the common
/// purposes, or an OID as given.
pub fn eku_oid(name: &str) -> Option<String> {
    let oid = match name {
        "TLS Web Server Authentication" | "serverAuth" => EKU_SERVER_AUTH,
        "TLS Web Client Authentication" | "clientAuth" => EKU_CLIENT_AUTH,
        "Code Signing" | "codeSigning" => "1.3.6.1.5.5.7.3.3",
        "E-mail Protection" | "emailProtection" => "1.3.6.1.5.5.7.3.4",
        "Time Stamping" | "timeStamping" => "1.3.6.1.5.5.7.3.8",
        "OCSP Signing" | "OCSPSigning" => "1.3.6.1.5.5.7.3.9",
        oid if !oid.is_empty() && oid.split('.').all(|p| p.parse::<u64>().is_ok()) => oid,
        _ => return None,
    };
    Some(oid.to_owned())
}

impl PeerCertPolicy {
    /// Whether nothing is checked.
    pub fn is_empty(&self) -> bool {
        *self == PeerCertPolicy::default()
    }

    /// `remote-cert-tls server|client`: key usage present and the matching extended key usage.
    pub fn remote_cert_tls(&mut self, peer_is_server: bool) {
        self.key_usage.get_or_insert_with(Vec::new);
        self.extended_key_usage = Some(
            if peer_is_server {
                EKU_SERVER_AUTH
            } else {
                EKU_CLIENT_AUTH
            }
            .to_owned(),
        );
    }

    /// Runs `tls-verify` over the chain (`chain[0]` is the peer's certificate; the issuer of
    /// the last one is looked up in `roots`), root first.
    pub fn run_hook(&self, chain: &[&[u8]], roots: &[Vec<u8>]) -> Result<(), String> {
        let Some(hook) = &self.verify_hook else {
            return Ok(());
        };
        let mut all: Vec<&[u8]> = chain.to_vec();
        if let Some(last) = chain.last() {
            let issuer_of = |der: &[u8]| {
                x509_parser::parse_x509_certificate(der)
                    .ok()
                    .map(|(_, c)| (c.issuer().as_raw().to_vec(), c.subject().as_raw().to_vec()))
            };
            if let Some((issuer, subject)) = issuer_of(last) {
                if issuer != subject {
                    if let Some(root) = roots
                        .iter()
                        .find(|r| issuer_of(r).is_some_and(|(_, s)| s == issuer))
                    {
                        all.push(root);
                    }
                }
            }
        }
        for depth in (0..all.len()).rev() {
            let info = CertInfo::of(all[depth], depth).ok_or_else(|| {
                format!("tls-verify: certificate at depth {depth} does not parse")
            })?;
            if !(hook.0)(&info) {
                return Err(format!(
                    "tls-verify rejected the certificate at depth {depth} ({})",
                    info.subject
                ));
            }
        }
        Ok(())
    }

    /// Checks a DER leaf certificate; the error names the failed check.
    pub fn check(&self, der: &[u8]) -> Result<(), String> {
        if self.is_empty() {
            return Ok(());
        }
        if !self.fingerprints.is_empty() {
            use sha2::Digest as _;
            let fp: [u8; 32] = sha2::Sha256::digest(der).into();
            if !self.fingerprints.contains(&fp) {
                return Err("peer-fingerprint: the peer certificate's SHA-256 matches none".into());
            }
        }
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("peer certificate does not parse: {e}"))?;
        if let Some(revoked) = &self.revoked_serial {
            let serial = cert.tbs_certificate.serial.to_string();
            if (revoked.0)(&serial) {
                return Err(format!(
                    "crl-verify dir: the peer certificate's serial {serial} is revoked"
                ));
            }
        }
        if let Some(kind) = self.ns_cert_type {
            let ok = cert
                .extensions()
                .iter()
                .any(|e| match e.parsed_extension() {
                    ParsedExtension::NSCertType(t) => match kind {
                        NsCertType::Server => t.ssl_server(),
                        NsCertType::Client => t.ssl_client(),
                    },
                    _ => false,
                });
            if !ok {
                return Err(format!(
                    "ns-cert-type {}: the peer certificate's Netscape type lacks that bit",
                    match kind {
                        NsCertType::Server => "server",
                        NsCertType::Client => "client",
                    }
                ));
            }
        }
        if let Some(wanted) = &self.key_usage {
            let ku = cert
                .key_usage()
                .ok()
                .flatten()
                .map(|k| openssl_ku(k.value.flags))
                .ok_or("remote-cert-ku: the peer certificate has no key usage extension")?;
            if !wanted.is_empty() && !wanted.iter().any(|w| ku & w == *w) {
                return Err(format!(
                    "remote-cert-ku: the peer certificate's key usage {ku:02x} matches none of {}",
                    wanted
                        .iter()
                        .map(|w| format!("{w:02x}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        if let Some(oid) = &self.extended_key_usage {
            let eku = cert
                .extended_key_usage()
                .ok()
                .flatten()
                .ok_or("remote-cert-eku: the peer certificate has no extended key usage")?;
            let e = eku.value;
            let found = match oid.as_str() {
                EKU_SERVER_AUTH => e.server_auth,
                EKU_CLIENT_AUTH => e.client_auth,
                "1.3.6.1.5.5.7.3.3" => e.code_signing,
                "1.3.6.1.5.5.7.3.4" => e.email_protection,
                "1.3.6.1.5.5.7.3.8" => e.time_stamping,
                "1.3.6.1.5.5.7.3.9" => e.ocsp_signing,
                other => e.other.iter().any(|o| o.to_id_string() == other),
            };
            if !found {
                return Err(format!(
                    "remote-cert-eku: the peer certificate lacks extended key usage {oid}"
                ));
            }
        }
        if self.suite_b {
            let alg = cert.public_key().algorithm.algorithm.to_id_string();
            if alg != "1.2.840.10045.2.1" {
                return Err("tls-cert-profile suiteb: the peer's key is not an EC key".into());
            }
        }
        Ok(())
    }
}

/// x509-parser's key usage bits (bit 0 = digitalSignature) in OpenSSL's order, which
/// OpenVPN's `remote-cert-ku` values use (0x80 = digitalSignature … 0x01 = encipherOnly,
/// 0x8000 = decipherOnly).
fn openssl_ku(flags: u16) -> u16 {
    let mut v = 0;
    for bit in 0..8 {
        if flags & (1 << bit) != 0 {
            v |= 0x80 >> bit;
        }
    }
    if flags & (1 << 8) != 0 {
        v |= 0x8000;
    }
    v
}

/// `tls-cert-profile`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CertProfile {
    /// `legacy` (OpenVPN's default): SHA-1 and RSA ≥ 1024 allowed by OpenSSL. The verifier
    /// here never accepts SHA-1 signatures or RSA keys under 2048 bits, so this acts as
    /// `preferred` (stricter).
    #[default]
    Legacy,
    /// `preferred`: SHA-2 signatures, RSA ≥ 2048, any curve.
    Preferred,
    /// `suiteb`: ECDSA keys, AES-GCM suites, P-256/P-384 groups only.
    SuiteB,
    /// `insecure`: everything OpenSSL allows; acts as `preferred` here (stricter).
    Insecure,
}

impl CertProfile {
    /// Parses the option's argument.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "legacy" => CertProfile::Legacy,
            "preferred" => CertProfile::Preferred,
            "suiteb" => CertProfile::SuiteB,
            "insecure" => CertProfile::Insecure,
            _ => return None,
        })
    }
}

/// One TLS 1.2 suite rustls offers, with the names and OpenSSL cipher-string tags that select
/// it.
struct Tls12Suite {
    suite: SupportedCipherSuite,
    names: [&'static str; 2],
    tags: &'static [&'static str],
}

/// Tags every suite here has (all are ECDHE, AEAD, TLS 1.2, "HIGH").
const COMMON_TAGS: &[&str] = &[
    "ALL", "DEFAULT", "HIGH", "ECDHE", "EECDH", "kECDHE", "kEECDH", "TLSv1.2", "AEAD",
];

fn tls12_suites() -> [Tls12Suite; 6] {
    let t = |suite, iana, openssl, tags| Tls12Suite {
        suite,
        names: [iana, openssl],
        tags,
    };
    [
        t(
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            &["aECDSA", "ECDSA", "AES", "AES256", "AESGCM", "SHA384"][..],
        ),
        t(
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            &["aECDSA", "ECDSA", "AES", "AES128", "AESGCM", "SHA256"][..],
        ),
        t(
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256",
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            &["aECDSA", "ECDSA", "CHACHA20", "SHA256"][..],
        ),
        t(
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384",
            "ECDHE-RSA-AES256-GCM-SHA384",
            &["aRSA", "RSA", "AES", "AES256", "AESGCM", "SHA384"][..],
        ),
        t(
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256",
            "ECDHE-RSA-AES128-GCM-SHA256",
            &["aRSA", "RSA", "AES", "AES128", "AESGCM", "SHA256"][..],
        ),
        t(
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            "TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256",
            "ECDHE-RSA-CHACHA20-POLY1305",
            &["aRSA", "RSA", "CHACHA20", "SHA256"][..],
        ),
    ]
}

impl Tls12Suite {
    fn has(&self, tag: &str) -> bool {
        self.names.contains(&tag) || self.tags.contains(&tag) || COMMON_TAGS.contains(&tag)
    }

    /// `A+B+C`: every part must match.
    fn matches(&self, term: &str) -> bool {
        term.split('+').all(|t| self.has(t))
    }
}

/// The TLS 1.2 suites a `tls-cipher` string selects, in its order (an OpenSSL cipher string
/// evaluated over the suites rustls has: names in OpenVPN's `TLS-…-WITH-…` or OpenSSL's form,
/// tags like `HIGH`, `ECDHE+AESGCM`, `!aNULL`, `-x`, `+x`, `@STRENGTH`). Names of suites we
/// do not have (DHE, CBC, …) select nothing.
pub fn select_tls12(list: &str) -> Vec<SupportedCipherSuite> {
    let all = tls12_suites();
    let mut chosen: Vec<usize> = Vec::new();
    let mut banned: Vec<usize> = Vec::new();
    for word in list.split([':', ',', ' ']).filter(|w| !w.is_empty()) {
        if word.starts_with('@') {
            continue;
        }
        let (op, term) = match word.split_at(1) {
            (o @ ("!" | "-" | "+"), rest) => (o, rest),
            _ => ("", word),
        };
        let hits: Vec<usize> = all
            .iter()
            .enumerate()
            .filter(|(_, s)| s.matches(term))
            .map(|(i, _)| i)
            .collect();
        match op {
            "!" => banned.extend(hits),
            "-" => chosen.retain(|i| !hits.contains(i)),
            "+" => {
                let moved: Vec<usize> = hits.into_iter().filter(|i| chosen.contains(i)).collect();
                chosen.retain(|i| !moved.contains(i));
                chosen.extend(moved);
            }
            _ => {
                for i in hits {
                    if !chosen.contains(&i) {
                        chosen.push(i);
                    }
                }
            }
        }
    }
    chosen
        .into_iter()
        .filter(|i| !banned.contains(i))
        .map(|i| all[i].suite)
        .collect()
}

/// The TLS 1.3 suites a `tls-ciphersuites` list names (OpenSSL's `TLS_AES_256_GCM_SHA384`
/// names, or with dashes), in its order; names rustls lacks are skipped.
pub fn select_tls13(list: &str) -> Vec<SupportedCipherSuite> {
    list.split(':')
        .filter_map(|n| match n.trim().replace('-', "_").as_str() {
            "TLS_AES_256_GCM_SHA384" => Some(cs::TLS13_AES_256_GCM_SHA384),
            "TLS_AES_128_GCM_SHA256" => Some(cs::TLS13_AES_128_GCM_SHA256),
            "TLS_CHACHA20_POLY1305_SHA256" => Some(cs::TLS13_CHACHA20_POLY1305_SHA256),
            _ => None,
        })
        .collect()
}

/// The key-exchange groups a `tls-groups` list (or one `ecdh-curve`) names, in order; groups
/// rustls lacks are skipped.
pub fn select_groups(list: &str) -> Vec<&'static dyn SupportedKxGroup> {
    list.split(':')
        .filter_map(|n| -> Option<&'static dyn SupportedKxGroup> {
            match n.trim() {
                "X25519" | "x25519" => Some(kx_group::X25519),
                "secp256r1" | "prime256v1" | "P-256" => Some(kx_group::SECP256R1),
                "secp384r1" | "P-384" => Some(kx_group::SECP384R1),
                _ => None,
            }
        })
        .collect()
}

/// The suites and groups of a config (`None` = rustls's defaults).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Algorithms {
    /// `tls-cipher`.
    pub tls12: Option<String>,
    /// `tls-ciphersuites`.
    pub tls13: Option<String>,
    /// `tls-groups` / `ecdh-curve`.
    pub groups: Option<String>,
    /// `tls-cert-profile`.
    pub profile: CertProfile,
}

/// A crypto provider limited by [`Algorithms`], and which TLS versions keep a suite.
pub struct Limited {
    /// The provider.
    pub provider: rustls::crypto::CryptoProvider,
    /// TLS 1.2 keeps at least one suite.
    pub tls12: bool,
    /// TLS 1.3 keeps at least one suite.
    pub tls13: bool,
}

impl Algorithms {
    /// A ring provider limited to what the options allow.
    pub fn provider(&self) -> Result<Limited, ControlError> {
        let mut p = rustls::crypto::ring::default_provider();
        let suite_b = self.profile == CertProfile::SuiteB;
        let is13 = |s: &SupportedCipherSuite| s.tls13().is_some();
        let mut v12: Vec<SupportedCipherSuite> = match &self.tls12 {
            Some(list) => select_tls12(list),
            None => p
                .cipher_suites
                .iter()
                .filter(|s| !is13(s))
                .copied()
                .collect(),
        };
        let mut v13: Vec<SupportedCipherSuite> = match &self.tls13 {
            Some(list) => select_tls13(list),
            None => p
                .cipher_suites
                .iter()
                .filter(|s| is13(s))
                .copied()
                .collect(),
        };
        if suite_b {
            v12.retain(|s| {
                matches!(
                    s.suite(),
                    rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                        | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                )
            });
            v13.retain(|s| s.suite() != rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
        }
        if v12.is_empty() && v13.is_empty() {
            return Err(ControlError::Config(
                "tls-cipher / tls-ciphersuites leave no cipher suite this implementation has \
                 (ECDHE with AES-GCM or ChaCha20-Poly1305 for TLS 1.2, and the three TLS 1.3 suites)"
                    .into(),
            ));
        }
        let (tls12, tls13) = (!v12.is_empty(), !v13.is_empty());
        p.cipher_suites = v13.into_iter().chain(v12).collect();
        if let Some(list) = &self.groups {
            p.kx_groups = select_groups(list);
        }
        if suite_b {
            p.kx_groups
                .retain(|g| g.name() != rustls::NamedGroup::X25519);
        }
        if p.kx_groups.is_empty() {
            return Err(ControlError::Config(format!(
                "tls-groups '{}' names no group this implementation has (X25519, secp256r1, secp384r1)",
                self.groups.as_deref().unwrap_or("")
            )));
        }
        Ok(Limited {
            provider: p,
            tls12,
            tls13,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CipherSuite as C;

    fn names(v: Vec<SupportedCipherSuite>) -> Vec<C> {
        v.into_iter().map(|s| s.suite()).collect()
    }

    #[test]
    fn tls_cipher_strings_select_like_openssl() {
        assert_eq!(
            names(select_tls12("TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384")),
            [C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]
        );
        assert_eq!(
            names(select_tls12(
                "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
            )),
            [
                C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            ]
        );
        assert_eq!(select_tls12("DEFAULT:!EXP:!PSK:!SRP:!kRSA").len(), 6);
        assert_eq!(select_tls12("HIGH:!CHACHA20").len(), 4);
        assert_eq!(select_tls12("ECDHE+AESGCM:!aRSA").len(), 2);
        // Only suites we do not have: TLS 1.2 is left with none.
        assert!(
            select_tls12("TLS-DHE-RSA-WITH-AES-256-CBC-SHA:TLS-DHE-DSS-WITH-AES-256-CBC-SHA")
                .is_empty()
        );
        assert_eq!(
            select_tls13("TLS_AES_256_GCM_SHA384:TLS_AES_128_CCM_SHA256").len(),
            1
        );
        assert_eq!(select_groups("X448:secp384r1:prime256v1").len(), 2);
    }

    #[test]
    fn providers_follow_the_options() {
        let a = Algorithms {
            tls12: Some("TLS-DHE-RSA-WITH-AES-256-CBC-SHA".into()),
            ..Default::default()
        };
        let l = a.provider().unwrap();
        assert!(!l.tls12 && l.tls13);
        assert_eq!(l.provider.cipher_suites.len(), 3);
        let a = Algorithms {
            tls12: Some("TLS-DHE-RSA-WITH-AES-256-CBC-SHA".into()),
            tls13: Some("TLS_AES_128_CCM_8_SHA256".into()),
            ..Default::default()
        };
        assert!(a.provider().is_err());
        let a = Algorithms {
            groups: Some("X448".into()),
            ..Default::default()
        };
        assert!(a.provider().is_err());
        let a = Algorithms {
            profile: CertProfile::SuiteB,
            ..Default::default()
        };
        let l = a.provider().unwrap();
        assert_eq!(l.provider.cipher_suites.len(), 4);
        assert_eq!(l.provider.kx_groups.len(), 2);
    }

    #[test]
    fn key_usage_bits_are_openssl_order() {
        assert_eq!(openssl_ku(0b1), 0x80);
        assert_eq!(openssl_ku(0b101), 0xa0);
        assert_eq!(openssl_ku(1 << 8), 0x8000);
        assert_eq!(
            eku_oid("TLS Web Server Authentication").as_deref(),
            Some(EKU_SERVER_AUTH)
        );
        assert_eq!(eku_oid("1.2.3").as_deref(), Some("1.2.3"));
        assert_eq!(eku_oid("nonsense"), None);
    }
}
