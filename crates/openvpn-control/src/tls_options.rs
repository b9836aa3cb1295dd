//! The TLS options both roles share, parsed in one place: `ca`, `capath`, `cert`,
//! `extra-certs`, `key`, `crl-verify`, `verify-x509-name`, `remote-cert-tls`,
//! `remote-cert-ku`, `remote-cert-eku`, `ns-cert-type`, `tls-version-min`, `tls-version-max`,
//! `tls-cipher`, `tls-ciphersuites`, `tls-groups`, `ecdh-curve`, `tls-cert-profile`.
//!
//! ```text
//!  OptionLine ──TlsOptions::apply──▶ TlsOptions ──credentials()──▶ tls::TlsCredentials
//! ```

use std::path::Path;

use crate::loading::{LoadError, arg, file_or_inline, invalid};
use crate::options::OptionLine;
use crate::options::catalog::Role;
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
            "ca" => self.ca.push_str(&file_or_inline(o, base)?),
            "capath" => self.capath(o, base)?,
            "cert" => self.cert = Some(file_or_inline(o, base)?),
            "extra-certs" => self.extra_certs = Some(file_or_inline(o, base)?),
            "key" => self.key = Some(file_or_inline(o, base)?),
            "crl-verify" => {
                if o.arg(1) == Some("dir") {
                    return Err(invalid(
                        o,
                        "'crl-verify DIR dir' is not supported yet; give a CRL file",
                    ));
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

    /// What one sees after loading: `extra-certs` joined to the chain. Call once, after the
    /// last line.
    pub fn finish(&mut self) {
        if let (TlsWrap::Auth { direction, .. }, Some(k)) = (&mut self.wrap, self.key_direction) {
            if direction.is_none() {
                *direction = Some(k);
            }
        }
        if let (Some(cert), Some(extra)) = (&mut self.cert, self.extra_certs.take()) {
            if !cert.ends_with('\n') {
                cert.push('\n');
            }
            cert.push_str(&extra);
        }
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

    fn load(text: &str, role: Role) -> Result<TlsOptions, LoadError> {
        let mut t = TlsOptions::default();
        for o in parse_config(text).map_err(LoadError::from)? {
            assert!(t.apply(&o, Path::new("/"), role)?, "{}", o.name);
        }
        t.finish();
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
}
