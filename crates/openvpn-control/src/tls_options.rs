//! The TLS options both roles share, parsed in one place: `ca`, `capath`, `cert`,
//! `extra-certs`, `key`, `crl-verify`, `verify-x509-name`, `remote-cert-tls`,
//! `remote-cert-ku`, `remote-cert-eku`, `ns-cert-type`, `tls-version-min`, `tls-version-max`,
//! `tls-cipher`, `tls-ciphersuites`, `tls-groups`, `ecdh-curve`, `tls-cert-profile`,
//! `pkcs12`, `askpass`.
//!
//! ```text
//!  OptionLine ──TlsOptions::apply──▶ TlsOptions ──finish()──▶ ──credentials()──▶ tls::TlsCredentials
//!                                     (pkcs12 bundle, encrypted key: unwrapped by finish)
//! ```

use std::path::Path;

use base64::Engine;
use zeroize::Zeroizing;

use crate::keyfile::{self, Passphrase, UnwrapError};
use crate::loading::{LoadError, arg, file_or_inline, invalid};
use crate::options::catalog::Role;
use crate::options::{OptionLine, describe_location};
use crate::tls::{
    Algorithms, CertHook, CertProfile, NsCertType, PeerCertPolicy, TlsCredentials, TlsVersionMax,
    TlsVersionMin, X509NameCheck, eku_oid, parse_fingerprint,
};

/// Control-channel wrapping with key material (file text): `tls-auth`, `tls-crypt`,
/// `tls-crypt-v2` (the server's key on a server, the client's key on a client).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TlsWrap {
    /// None.
    #[default]
    None,
    /// `tls-auth FILE [dir]` (+ `key-direction`).
    Auth {
        /// Key file text.
        key: String,
        /// 0, 1 or bidirectional (`None`).
        direction: Option<u8>,
    },
    /// `tls-crypt FILE`.
    Crypt {
        /// Key file text.
        key: String,
    },
    /// `tls-crypt-v2 FILE`.
    CryptV2 {
        /// Key file text.
        key: String,
    },
}

/// The TLS settings of a config (file contents already read).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// `ca` PEM (plus every certificate found by `capath`).
    pub ca: String,
    /// `cert` PEM (plus `extra-certs`).
    pub cert: Option<String>,
    /// `key` PEM.
    pub key: Option<String>,
    /// `crl-verify` PEM (plus CRLs found by `capath`).
    pub crl: Option<String>,
    /// `verify-x509-name NAME [TYPE]`.
    pub verify_x509_name: Option<(String, String)>,
    /// `tls-version-min 1.3`.
    pub tls13_only: bool,
    /// `tls-version-max 1.2`.
    pub tls12_max: bool,
    /// Suites, groups and profile.
    pub algorithms: Algorithms,
    /// Checks on the peer's certificate.
    pub peer_policy: PeerCertPolicy,
    /// `tls-verify CMD`: the command the binary runs for each certificate of the peer's
    /// chain ([`TlsOptions::credentials_with`] takes the hook that runs it).
    pub tls_verify: Option<String>,
    /// `tls-auth` / `tls-crypt` / `tls-crypt-v2` (with `key-direction` applied by
    /// [`TlsOptions::finish`]).
    pub wrap: TlsWrap,
    key_direction: Option<u8>,
    extra_certs: Option<String>,
    wrapped: Wrapped,
}

/// What [`TlsOptions::finish`] unwraps: a `pkcs12` bundle and an encrypted `key`, with the
/// `askpass` passphrase (which may come before or after them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Wrapped {
    /// `pkcs12`: where (for messages), the file's name, its bytes.
    pkcs12: Option<(String, String, Zeroizing<Vec<u8>>)>,
    /// Where the `key` line is.
    key_at: Option<String>,
    /// `askpass`: where, and the passphrase (`None`: OpenVPN would ask on the terminal).
    askpass: Option<(String, Option<Passphrase>)>,
    ca_given: bool,
    capath_given: bool,
}

/// `config line 7: 'pkcs12'`: the start of a message about `o`.
fn location(o: &OptionLine) -> String {
    format!("{}: '{}'", describe_location(o), o.name)
}

/// `pkcs12 FILE` (DER) or `<pkcs12>` (base64, as OpenVPN wants it inline): the name for
/// messages and the bytes.
fn pkcs12_bytes(o: &OptionLine, base: &Path) -> Result<(String, Zeroizing<Vec<u8>>), LoadError> {
    if let Some(text) = o.inline_content() {
        let b64: Zeroizing<String> =
            Zeroizing::new(text.chars().filter(|c| !c.is_whitespace()).collect());
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| {
                invalid(
                    o,
                    "an inline <pkcs12> block holds the bundle in base64 (openssl base64 -in FILE.p12)",
                )
            })?;
        return Ok(("<pkcs12>".into(), Zeroizing::new(der)));
    }
    let name = arg(o, 0)?;
    let path = base.join(name);
    let der = std::fs::read(&path).map_err(|source| LoadError::Io {
        what: location(o),
        path,
        source,
    })?;
    Ok((name.to_owned(), Zeroizing::new(der)))
}

/// `askpass [FILE]`: the first line of FILE; `None` without FILE.
fn askpass(o: &OptionLine, base: &Path) -> Result<Option<Passphrase>, LoadError> {
    if o.is_inline() {
        return Err(invalid(
            o,
            "takes a file name (the passphrase is the file's first line), not an inline block",
        ));
    }
    let Some(name) = o.arg(0) else {
        return Ok(None);
    };
    let path = base.join(name);
    let text = Zeroizing::new(
        std::fs::read_to_string(&path).map_err(|source| LoadError::Io {
            what: location(o),
            path,
            source,
        })?,
    );
    Passphrase::first_line(&text).map(Some).ok_or_else(|| {
        invalid(
            o,
            format!("'{name}' is empty: its first line is the passphrase"),
        )
    })
}

fn direction(o: &OptionLine, d: &str) -> Result<u8, LoadError> {
    match d {
        "0" => Ok(0),
        "1" => Ok(1),
        x => Err(invalid(o, format!("key direction '{x}' must be 0 or 1"))),
    }
}

impl TlsOptions {
    /// Interprets `o` if it is one of this group's options (true), else leaves it (false).
    /// `role` is this side: a client checks `remote-cert-tls server`, a server `client`.
    pub fn apply(&mut self, o: &OptionLine, base: &Path, role: Role) -> Result<bool, LoadError> {
        match o.name.as_str() {
            "ca" => {
                self.ca.push_str(&file_or_inline(o, base)?);
                self.wrapped.ca_given = true;
            }
            "capath" => {
                self.capath(o, base)?;
                self.wrapped.capath_given = true;
            }
            "cert" => self.cert = Some(file_or_inline(o, base)?),
            "extra-certs" => self.extra_certs = Some(file_or_inline(o, base)?),
            "key" => {
                self.key = Some(file_or_inline(o, base)?);
                self.wrapped.key_at = Some(location(o));
            }
            "pkcs12" => {
                let (name, der) = pkcs12_bytes(o, base)?;
                self.wrapped.pkcs12 = Some((location(o), name, der));
            }
            "askpass" => self.wrapped.askpass = Some((location(o), askpass(o, base)?)),
            "crl-verify" => {
                if o.arg(1) == Some("dir") {
                    let dir = base.join(arg(o, 0)?);
                    if !dir.is_dir() {
                        return Err(invalid(
                            o,
                            format!("'{}' is not a directory", dir.display()),
                        ));
                    }
                    self.peer_policy.revoked_serial = Some(crate::tls::SerialCheck(
                        std::sync::Arc::new(move |serial: &str| {
                            !serial.contains(['/', '.']) && dir.join(serial).exists()
                        }),
                    ));
                    return Ok(true);
                }
                self.crl
                    .get_or_insert_with(String::new)
                    .push_str(&file_or_inline(o, base)?)
            }
            "verify-x509-name" => {
                let kind = o.arg(1).unwrap_or("subject");
                if !matches!(kind, "subject" | "name" | "name-prefix") {
                    return Err(invalid(
                        o,
                        format!("'{kind}' is not one of subject, name, name-prefix"),
                    ));
                }
                self.verify_x509_name = Some((arg(o, 0)?.to_owned(), kind.to_owned()))
            }
            "remote-cert-tls" => {
                let want = arg(o, 0)?;
                let peer_is_server = match (want, role) {
                    ("server", Role::Client) => true,
                    ("client", Role::Server) => false,
                    ("server" | "client", _) => {
                        return Err(invalid(
                            o,
                            format!(
                                "'remote-cert-tls {want}' checks this side's own kind of certificate; the peer is a {}",
                                if role == Role::Client {
                                    "server"
                                } else {
                                    "client"
                                }
                            ),
                        ));
                    }
                    _ => return Err(invalid(o, format!("'{want}' is not one of server, client"))),
                };
                self.peer_policy.remote_cert_tls(peer_is_server);
            }
            "remote-cert-ku" => {
                let mut values = Vec::new();
                for v in &o.args {
                    values.push(u16::from_str_radix(v, 16).map_err(|_| {
                        invalid(o, format!("'{v}' is not a hex key usage value (e.g. a0)"))
                    })?);
                }
                self.peer_policy.key_usage = Some(values);
            }
            "remote-cert-eku" => {
                let name = o.args.join(" ");
                self.peer_policy.extended_key_usage = Some(eku_oid(&name).ok_or_else(|| {
                    invalid(o, format!("'{name}' is not an OID or a known purpose name"))
                })?);
            }
            "ns-cert-type" => {
                self.peer_policy.ns_cert_type = Some(match arg(o, 0)? {
                    "server" => NsCertType::Server,
                    "client" => NsCertType::Client,
                    x => return Err(invalid(o, format!("'{x}' is not one of server, client"))),
                })
            }
            "tls-version-min" => match arg(o, 0)? {
                "1.0" | "1.1" | "1.2" => self.tls13_only = false,
                "1.3" => self.tls13_only = true,
                "or-highest" => self.tls13_only = true,
                v => {
                    return Err(invalid(
                        o,
                        format!("'{v}' is not a TLS version (1.0, 1.1, 1.2, 1.3, or-highest)"),
                    ));
                }
            },
            "tls-version-max" => match arg(o, 0)? {
                "1.3" => self.tls12_max = false,
                "1.2" => self.tls12_max = true,
                "1.0" | "1.1" => {
                    return Err(invalid(
                        o,
                        "TLS below 1.2 is not supported: use tls-version-max 1.2 or 1.3",
                    ));
                }
                v => return Err(invalid(o, format!("'{v}' is not a TLS version (1.2, 1.3)"))),
            },
            "tls-auth" => {
                let key = file_or_inline(o, base)?;
                let dir = if o.is_inline() { None } else { o.arg(1) };
                self.wrap = TlsWrap::Auth {
                    key,
                    direction: dir.map(|d| direction(o, d)).transpose()?,
                };
            }
            "key-direction" => self.key_direction = Some(direction(o, arg(o, 0)?)?),
            "tls-crypt" => {
                self.wrap = TlsWrap::Crypt {
                    key: file_or_inline(o, base)?,
                }
            }
            "tls-crypt-v2" => {
                self.wrap = TlsWrap::CryptV2 {
                    key: file_or_inline(o, base)?,
                }
            }
            "tls-verify" => self.tls_verify = Some(o.args.join(" ")).filter(|c| !c.is_empty()),
            "peer-fingerprint" => {
                let text = match o.inline_content() {
                    Some(t) => t.to_owned(),
                    None => o.args.join(";"),
                };
                for fp in text
                    .split([';', '\n'])
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                {
                    self.peer_policy
                        .fingerprints
                        .push(parse_fingerprint(fp).ok_or_else(|| {
                            invalid(
                                o,
                                format!("'{fp}' is not a SHA-256 fingerprint (32 hex bytes separated by ':')"),
                            )
                        })?);
                }
            }
            "tls-cipher" => self.algorithms.tls12 = Some(arg(o, 0)?.to_owned()),
            "tls-ciphersuites" => self.algorithms.tls13 = Some(arg(o, 0)?.to_owned()),
            "tls-groups" | "ecdh-curve" => self.algorithms.groups = Some(arg(o, 0)?.to_owned()),
            "tls-cert-profile" => {
                let p = arg(o, 0)?;
                self.algorithms.profile = CertProfile::parse(p).ok_or_else(|| {
                    invalid(
                        o,
                        format!("'{p}' is not one of legacy, preferred, suiteb, insecure"),
                    )
                })?;
                self.peer_policy.suite_b = self.algorithms.profile == CertProfile::SuiteB;
            }
            _ => return Ok(false),
        }
        if matches!(
            o.name.as_str(),
            "tls-cipher" | "tls-ciphersuites" | "tls-groups" | "ecdh-curve" | "tls-cert-profile"
        ) {
            self.algorithms
                .provider()
                .map_err(|e| invalid(o, e.to_string().trim_start_matches("config: ")))?;
        }
        Ok(true)
    }

    /// `capath DIR`: every certificate and CRL in the directory's files (OpenSSL's hashed
    /// names `*.0`, `*.r0`, or any PEM file).
    fn capath(&mut self, o: &OptionLine, base: &Path) -> Result<(), LoadError> {
        let dir = base.join(arg(o, 0)?);
        let entries = std::fs::read_dir(&dir).map_err(|source| LoadError::Io {
            what: format!("{} 'capath'", crate::options::describe_location(o)),
            path: dir.clone(),
            source,
        })?;
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if text.contains("-----BEGIN CERTIFICATE-----") {
                self.ca.push_str(&text);
                self.ca.push('\n');
            }
            if text.contains("-----BEGIN X509 CRL-----") {
                let crl = self.crl.get_or_insert_with(String::new);
                crl.push_str(&text);
                crl.push('\n');
            }
        }
        Ok(())
    }

    /// What one sees after loading: the `pkcs12` bundle read into `cert`, `key` and (without
    /// `ca`) `ca`; an encrypted `key` decrypted with the `askpass` passphrase; `extra-certs`
    /// joined to the chain. Call once, after the last line.
    pub fn finish(&mut self) -> Result<(), LoadError> {
        if let (TlsWrap::Auth { direction, .. }, Some(k)) = (&mut self.wrap, self.key_direction) {
            if direction.is_none() {
                *direction = Some(k);
            }
        }
        self.unwrap_credentials()?;
        if let (Some(cert), Some(extra)) = (&mut self.cert, self.extra_certs.take()) {
            if !cert.ends_with('\n') {
                cert.push('\n');
            }
            cert.push_str(&extra);
        }
        Ok(())
    }

    /// `pkcs12` and an encrypted `key`, read as OpenVPN reads them: the bundle's other
    /// certificates complete the chain and, without `ca`, are the CA; a passphrase comes
    /// from `askpass FILE` (an empty one is tried first for a bundle).
    fn unwrap_credentials(&mut self) -> Result<(), LoadError> {
        let w = std::mem::take(&mut self.wrapped);
        let pass = w.askpass.as_ref().and_then(|(_, p)| p.as_ref());
        let ask_at = w.askpass.as_ref().map(|(at, _)| at.as_str()).unwrap_or("");
        let failed = |at: &str, what: &str, e: UnwrapError| {
            LoadError::Invalid(match e {
                UnwrapError::NeedsPassphrase if w.askpass.is_some() => format!(
                    "{at}: {what} needs a passphrase, and {ask_at} without a file would ask for it on the terminal, which openvpn-rs does not do yet: give 'askpass FILE' with the passphrase on the file's first line"
                ),
                UnwrapError::NeedsPassphrase => format!(
                    "{at}: {what} needs a passphrase: add 'askpass FILE' with the passphrase on the file's first line (asking on the terminal or the management interface is not supported yet)"
                ),
                UnwrapError::WrongPassphrase => {
                    format!("{at}: the passphrase of {ask_at} does not open {what}")
                }
                UnwrapError::Bad(why) => format!("{at}: cannot read {what}: {why}"),
            })
        };
        if let Some((at, name, der)) = &w.pkcs12 {
            for (given, option) in [
                (self.cert.is_some(), "cert"),
                (self.key.is_some(), "key"),
                (w.capath_given, "capath"),
            ] {
                if given {
                    return Err(LoadError::Invalid(format!(
                        "{at}: '{option}' cannot be used with 'pkcs12' (the bundle is the certificate, key and CA)"
                    )));
                }
            }
            let what = format!("'{name}'");
            let mut bundle = keyfile::pkcs12(der, pass).map_err(|e| failed(at, &what, e))?;
            if !w.ca_given {
                self.ca.push_str(&bundle.others);
            }
            bundle.cert.push_str(&bundle.others);
            self.cert = Some(bundle.cert);
            self.key = Some(std::mem::take(&mut *bundle.key));
        }
        if self.key.as_deref().is_some_and(keyfile::is_encrypted_key) {
            let at = w.key_at.as_deref().unwrap_or("'key'");
            let what = "the encrypted private key";
            let pem = self.key.as_deref().unwrap_or_default();
            let mut plain = match pass {
                Some(p) => keyfile::decrypt_key(pem, p),
                None => Err(UnwrapError::NeedsPassphrase),
            }
            .map_err(|e| failed(at, what, e))?;
            self.key = Some(std::mem::take(&mut *plain));
        }
        Ok(())
    }

    /// Whether the peer can be verified: a `ca` (or `capath`), or `peer-fingerprint`.
    pub fn can_verify_peer(&self) -> bool {
        !self.ca.trim().is_empty() || !self.peer_policy.fingerprints.is_empty()
    }

    /// The `verify-x509-name` check.
    pub fn name_check(&self) -> Option<X509NameCheck> {
        self.verify_x509_name
            .as_ref()
            .map(|(n, t)| match t.as_str() {
                "name" => X509NameCheck::CommonName(n.clone()),
                "name-prefix" => X509NameCheck::CommonNamePrefix(n.clone()),
                _ => X509NameCheck::Subject(n.clone()),
            })
    }

    /// [`TlsOptions::credentials`] with the `tls-verify` hook (`None` when there is no
    /// `tls-verify`, or the caller runs no scripts).
    pub fn credentials_with(&self, hook: Option<CertHook>) -> TlsCredentials {
        let mut c = self.credentials();
        c.peer_policy.verify_hook = hook;
        c
    }

    /// The credentials for [`crate::tls::TlsConfig`].
    pub fn credentials(&self) -> TlsCredentials {
        TlsCredentials {
            ca_pem: self.ca.clone(),
            cert_pem: self.cert.clone(),
            key_pem: self.key.clone(),
            crl_pem: self.crl.clone(),
            verify_name: self.name_check(),
            version_min: if self.tls13_only {
                TlsVersionMin::Tls13
            } else {
                TlsVersionMin::Tls12
            },
            version_max: if self.tls12_max {
                TlsVersionMax::Tls12
            } else {
                TlsVersionMax::Tls13
            },
            algorithms: self.algorithms.clone(),
            peer_policy: self.peer_policy.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::parse_config;

    #[test]
    fn capath_collects_the_directorys_certificates_and_crls() {
        let dir = std::env::temp_dir().join(format!("ovrs-capath-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("abcd1234.0"),
            "-----BEGIN CERTIFICATE-----\nQQ==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("abcd1234.r0"),
            "-----BEGIN X509 CRL-----\nQg==\n-----END X509 CRL-----\n",
        )
        .unwrap();
        std::fs::write(dir.join("README"), "not a certificate").unwrap();
        let t = load(&format!("capath {}\n", dir.display()), Role::Server).unwrap();
        assert!(t.ca.contains("QQ==") && !t.ca.contains("not a certificate"));
        assert!(t.crl.as_deref().is_some_and(|c| c.contains("Qg==")));
        assert!(t.can_verify_peer());
        assert!(load("capath /nonexistent-ovrs\n", Role::Server).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    fn load(text: &str, role: Role) -> Result<TlsOptions, LoadError> {
        let mut t = TlsOptions::default();
        for o in parse_config(text).map_err(LoadError::from)? {
            assert!(t.apply(&o, Path::new("/"), role)?, "{}", o.name);
        }
        t.finish()?;
        Ok(t)
    }

    #[test]
    fn security_options_become_policy() {
        let t = load(
            "remote-cert-tls server\nns-cert-type server\ntls-cipher TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384\ntls-groups X25519:secp384r1\ntls-cert-profile preferred\ntls-version-max 1.2\n<cert>\nA\n</cert>\n<extra-certs>\nB\n</extra-certs>\n",
            Role::Client,
        )
        .unwrap();
        assert_eq!(t.peer_policy.ns_cert_type, Some(NsCertType::Server));
        assert_eq!(
            t.peer_policy.extended_key_usage.as_deref(),
            Some(crate::tls::EKU_SERVER_AUTH)
        );
        assert_eq!(t.peer_policy.key_usage, Some(vec![]));
        assert!(t.tls12_max);
        assert_eq!(t.cert.as_deref(), Some("A\nB\n"));
        let c = t.credentials();
        assert_eq!(c.version_max, TlsVersionMax::Tls12);
    }

    #[test]
    fn bad_values_name_the_line() {
        for (text, want) in [
            ("remote-cert-tls client\n", "peer is a server"),
            ("ns-cert-type both\n", "'both'"),
            ("remote-cert-ku zz\n", "hex key usage"),
            ("tls-groups X448\n", "no group"),
            ("tls-cert-profile strong\n", "'strong'"),
            ("tls-version-max 1.1\n", "below 1.2"),
            ("verify-x509-name x cn\n", "'cn'"),
        ] {
            let e = load(text, Role::Client).unwrap_err().to_string();
            assert!(
                e.contains("config line 1") && e.contains(want),
                "{text}: {e}"
            );
        }
    }

    // pkcs12 and askpass, against fixtures made by tests/data/keyfile/make.sh with OpenSSL 3:
    // whatever was read must complete a real handshake as the right certificate.

    fn data() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/keyfile")
    }

    fn load_data(text: &str, role: Role) -> Result<TlsOptions, LoadError> {
        let mut t = TlsOptions::default();
        for o in parse_config(text).map_err(LoadError::from)? {
            assert!(t.apply(&o, &data(), role)?, "{}", o.name);
        }
        t.finish()?;
        Ok(t)
    }

    fn read(name: &str) -> String {
        std::fs::read_to_string(data().join(name)).unwrap()
    }

    /// An in-memory handshake between the two configs; the common name each side saw.
    fn handshake(client: &TlsOptions, server: &TlsOptions) -> Result<(String, String), String> {
        use crate::tls::{TlsConfig, TlsSession};
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
                return Ok((
                    cs.peer_common_name().unwrap_or_default(),
                    ss.peer_common_name().unwrap_or_default(),
                ));
            }
        }
        Err("handshake did not finish".into())
    }

    fn server() -> TlsOptions {
        // OpenSSL 3's `pkcs12 -export -passout pass:`: PBES2/AES-256-CBC, MAC SHA-256.
        load_data("pkcs12 server.p12\nremote-cert-tls client\n", Role::Server).unwrap()
    }

    fn client_key_der(t: &TlsOptions) -> Vec<u8> {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let der = PrivateKeyDer::from_pem_slice(t.key.as_deref().unwrap().as_bytes()).unwrap();
        der.secret_der().to_vec()
    }

    #[test]
    fn pkcs12_bundles_are_the_cert_key_and_ca() {
        let server = server();
        assert_eq!(server.ca, read("ca.crt"), "the bundle's CA is the ca");
        let want_key = {
            let t = load_data("cert client.crt\nkey client.key\n", Role::Client).unwrap();
            client_key_der(&t)
        };
        let b64 = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .encode(std::fs::read(data().join("client.p12")).unwrap())
        };
        for text in [
            // OpenSSL 3's default, as the corpus makes its bundles.
            "pkcs12 client.p12\n".to_owned(),
            // OpenSSL 1.1's algorithms (RC2-40 certificates, 3DES key, SHA-1 MAC), no password.
            "pkcs12 client-legacy.p12\n".to_owned(),
            // Nothing encrypted, no MAC.
            "pkcs12 client-plain.p12\n".to_owned(),
            // With a password, given by askpass before or after.
            "pkcs12 client-pw.p12\naskpass pass.txt\n".to_owned(),
            "askpass pass.txt\npkcs12 client-legacy-pw.p12\n".to_owned(),
            // Inline, in base64 (64-column lines, as `openssl base64` writes).
            format!(
                "<pkcs12>\n{}\n</pkcs12>\n",
                b64.as_bytes()
                    .chunks(64)
                    .map(|c| std::str::from_utf8(c).unwrap())
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        ] {
            let text = format!("{text}remote-cert-tls server\n");
            let client = load_data(&text, Role::Client).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(client_key_der(&client), want_key, "{text}");
            assert!(
                client
                    .cert
                    .as_deref()
                    .unwrap()
                    .starts_with(read("client.crt").trim_end()),
                "{text}: the leaf first"
            );
            let (server_cn, client_cn) =
                handshake(&client, &server).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (server_cn.as_str(), client_cn.as_str()),
                ("server", "client"),
                "{text}"
            );
        }
    }

    #[test]
    fn pkcs12_with_ca_keeps_that_ca() {
        let ca = read("ca.crt");
        let t = load_data(
            &format!("<ca>\n{ca}</ca>\npkcs12 client.p12\n"),
            Role::Client,
        )
        .unwrap();
        assert_eq!(t.ca, ca, "the bundle's CA is not added to a given 'ca'");
        // ... but still completes the chain sent to the peer.
        assert!(t.cert.as_deref().unwrap().ends_with(&ca));
    }

    #[test]
    fn encrypted_keys_are_decrypted_with_askpass() {
        let der = |plain: &str| {
            let t = load_data(&format!("key {plain}\n"), Role::Client).unwrap();
            client_key_der(&t)
        };
        let server = server();
        for (key, plain) in [
            ("client-enc.key", "client.key"),
            ("client-trad.key", "client-sec1.key"),
            ("client-trad-des3.key", "client-sec1.key"),
        ] {
            let want = der(plain);
            for text in [
                format!("ca ca.crt\ncert client.crt\nkey {key}\naskpass pass.txt\n"),
                format!("askpass pass.txt\nca ca.crt\ncert client.crt\nkey {key}\n"),
            ] {
                let client =
                    load_data(&text, Role::Client).unwrap_or_else(|e| panic!("{text}: {e}"));
                assert_eq!(client_key_der(&client), want, "{text}");
                let (server_cn, _) =
                    handshake(&client, &server).unwrap_or_else(|e| panic!("{text}: {e}"));
                assert_eq!(server_cn, "server");
            }
        }
        // A plain key with askpass: the passphrase is not needed, nothing changes.
        let t = load_data("key client.key\naskpass pass.txt\n", Role::Client).unwrap();
        assert_eq!(t.key.as_deref(), Some(read("client.key").as_str()));
    }

    #[test]
    fn wrapped_credentials_name_the_line_and_the_fix() {
        let dir = std::env::temp_dir().join(format!("ovrs-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let wrong = dir.join("wrong.txt");
        std::fs::write(&wrong, "not-it\n").unwrap();
        let empty = dir.join("empty.txt");
        std::fs::write(&empty, "").unwrap();
        let (wrong, empty) = (wrong.display(), empty.display());
        for (text, want) in [
            ("key client-enc.key\n", "config line 1: 'key': the encrypted private key needs a passphrase: add 'askpass FILE'".to_owned()),
            ("key client-trad.key\naskpass\n", "config line 2: 'askpass' without a file would ask for it on the terminal".to_owned()),
            (&*format!("key client-enc.key\naskpass {wrong}\n"), "config line 1: 'key': the passphrase of config line 2: 'askpass' does not open the encrypted private key".to_owned()),
            (&*format!("askpass {wrong}\nkey client-trad-des3.key\n"), "does not open the encrypted private key".to_owned()),
            ("pkcs12 client-pw.p12\n", "config line 1: 'pkcs12': 'client-pw.p12' needs a passphrase".to_owned()),
            (&*format!("pkcs12 client-legacy-pw.p12\naskpass {wrong}\n"), "does not open 'client-legacy-pw.p12'".to_owned()),
            ("pkcs12 ca.crt\n", "cannot read 'ca.crt': not a PKCS#12 file".to_owned()),
            ("pkcs12 client.p12\ncert client.crt\n", "'cert' cannot be used with 'pkcs12'".to_owned()),
            ("key client.key\npkcs12 client.p12\n", "'key' cannot be used with 'pkcs12'".to_owned()),
            ("<pkcs12>\n-----BEGIN PKCS12-----\n</pkcs12>\n", "base64".to_owned()),
            (&*format!("askpass {empty}\n"), "is empty".to_owned()),
            ("askpass missing.txt\n", "cannot read".to_owned()),
        ] {
            let e = load_data(text, Role::Client).unwrap_err().to_string();
            assert!(e.contains(&want), "{text}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
