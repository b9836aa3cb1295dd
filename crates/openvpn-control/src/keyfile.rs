//! Credentials that come wrapped, unwrapped in memory into the PEM the TLS adapter loads:
//! PKCS#12 bundles (`pkcs12`) and passphrase-protected private keys (`key` + `askpass`).
//!
//! ```text
//!  PKCS#12 DER ──pkcs12(der, passphrase)──▶ Bundle { cert, others, key }   (PEM)
//!  encrypted key PEM ──decrypt_key(pem, passphrase)──▶ PKCS#8 / PKCS#1 / SEC1 PEM
//! ```
//!
//! Read: PKCS#12 with PBES2 (PBKDF2 with HMAC-SHA-1/-SHA-2, AES-CBC or 3DES; OpenSSL 3's
//! default) and the PKCS#12 PBEs OpenSSL 1.1 used (3DES, RC2-40, RC2-128), MACs with SHA-1 or
//! SHA-2; PKCS#8 `ENCRYPTED PRIVATE KEY` with the same algorithms; OpenSSL's traditional
//! `Proc-Type: 4,ENCRYPTED` PEM with AES-128/192/256-CBC or DES-EDE3-CBC. Decrypted bytes live in
//! [`Zeroizing`] buffers, and so does the passphrase.

use base64::Engine;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, KeyIvInit};
use cms::cert::x509::spki::AlgorithmIdentifierOwned;
use cms::content_info::ContentInfo;
use cms::encrypted_data::EncryptedData;
use der::asn1::{ContextSpecific, ObjectIdentifier, OctetString};
use der::{Decode, Encode, Tagged};
use hmac::Mac;
use hmac::digest::core_api::BlockSizeUser;
use hmac::digest::{Digest, FixedOutputReset};
use md5::Md5;
use pkcs12::cert_type::CertBag;
use pkcs12::kdf::{Pkcs12KeyType, derive_key};
use pkcs12::pbe_params::{EncryptedPrivateKeyInfo, Pkcs12PbeParams};
use pkcs12::pfx::Pfx;
use pkcs12::safe_bag::SafeContents;
use zeroize::Zeroizing;

const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_ENCRYPTED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.6");
const X509_CERTIFICATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.22.1");
const LOCAL_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.21");
const PBES2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.13");
const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

/// A passphrase (`askpass FILE`: the file's first line). Wiped when dropped; never printed.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Passphrase(Zeroizing<String>);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

impl Passphrase {
    /// The first line of `text` (without its line end), or `None` for an empty text.
    pub(crate) fn first_line(text: &str) -> Option<Self> {
        if text.is_empty() {
            return None;
        }
        let line = text.split('\n').next().unwrap_or_default();
        Some(Self(Zeroizing::new(line.trim_end_matches('\r').to_owned())))
    }
}

/// Why a wrapped credential could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UnwrapError {
    /// It is encrypted, and no passphrase was given.
    NeedsPassphrase,
    /// The passphrase given does not open it.
    WrongPassphrase,
    /// Damaged, or a form not read here (the text says which).
    Bad(String),
}

/// What a PKCS#12 bundle holds, as PEM.
pub(crate) struct Bundle {
    /// The certificate of the private key.
    pub(crate) cert: String,
    /// Every other certificate (the CA and any intermediates), possibly empty.
    pub(crate) others: String,
    /// The private key (PKCS#8).
    pub(crate) key: Zeroizing<String>,
}

/// A password as the two schemes take it: PBES2 the UTF-8 bytes, the PKCS#12 KDF (MAC and
/// the old PBEs) big-endian UTF-16 with two zero bytes at the end.
struct Password {
    utf8: Zeroizing<Vec<u8>>,
    bmp: Zeroizing<Vec<u8>>,
}

impl Password {
    fn new(p: &str) -> Self {
        let mut bmp = Zeroizing::new(Vec::with_capacity(p.len() * 2 + 2));
        for unit in p.encode_utf16() {
            bmp.extend_from_slice(&unit.to_be_bytes());
        }
        bmp.extend_from_slice(&[0, 0]);
        Self {
            utf8: Zeroizing::new(p.as_bytes().to_vec()),
            bmp,
        }
    }

    /// No password at all (OpenSSL's NULL password): the KDF gets zero bytes.
    fn none() -> Self {
        Self {
            utf8: Zeroizing::new(Vec::new()),
            bmp: Zeroizing::new(Vec::new()),
        }
    }
}

fn bad(what: &str, e: impl std::fmt::Display) -> UnwrapError {
    UnwrapError::Bad(format!("{what}: {e}"))
}

/// Reads a PKCS#12 bundle (DER). As OpenVPN does, an empty password is tried first, then
/// `pass` if given.
pub(crate) fn pkcs12(der: &[u8], pass: Option<&Passphrase>) -> Result<Bundle, UnwrapError> {
    let pfx = Pfx::from_der(der).map_err(|e| bad("not a PKCS#12 file", e))?;
    if pfx.auth_safe.content_type != ID_DATA {
        return Err(UnwrapError::Bad(
            "a PKCS#12 file protected by a public key (not a password) is not supported".into(),
        ));
    }
    let data = octets(&pfx.auth_safe.content)?;
    let mut candidates = vec![Password::new(""), Password::none()];
    if let Some(p) = pass {
        candidates.push(Password::new(&p.0));
    }
    for password in &candidates {
        if let Some(mac) = &pfx.mac_data {
            if !mac_matches(mac, &password.bmp, &data)? {
                continue;
            }
        }
        match read_safes(&data, password) {
            Ok(b) => return Ok(b),
            // The MAC may be missing, or made with another password than the contents.
            Err(UnwrapError::WrongPassphrase) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(match pass {
        Some(_) => UnwrapError::WrongPassphrase,
        None => UnwrapError::NeedsPassphrase,
    })
}

/// The content of an `id-data` ContentInfo: an OCTET STRING.
fn octets(content: &der::Any) -> Result<Zeroizing<Vec<u8>>, UnwrapError> {
    let os = content
        .decode_as::<OctetString>()
        .map_err(|e| bad("PKCS#12 data", e))?;
    Ok(Zeroizing::new(os.into_bytes()))
}

fn mac_matches(
    mac: &pkcs12::mac_data::MacData,
    bmp: &[u8],
    data: &[u8],
) -> Result<bool, UnwrapError> {
    let salt = mac.mac_salt.as_bytes();
    let want = mac.mac.digest.as_bytes();
    let rounds = mac.iterations;
    Ok(match mac.mac.algorithm.oid {
        SHA1 => hmac_matches::<sha1::Sha1>(bmp, salt, rounds, data, want),
        SHA256 => hmac_matches::<sha2::Sha256>(bmp, salt, rounds, data, want),
        SHA384 => hmac_matches::<sha2::Sha384>(bmp, salt, rounds, data, want),
        SHA512 => hmac_matches::<sha2::Sha512>(bmp, salt, rounds, data, want),
        oid => {
            return Err(UnwrapError::Bad(format!(
                "the PKCS#12 integrity check uses {oid}, which is not supported (SHA-1 and SHA-2 are)"
            )));
        }
    })
}

fn hmac_matches<D>(bmp: &[u8], salt: &[u8], rounds: i32, data: &[u8], want: &[u8]) -> bool
where
    D: Digest + FixedOutputReset + BlockSizeUser,
{
    let len = <D as Digest>::output_size();
    let key = Zeroizing::new(derive_key::<D>(bmp, salt, Pkcs12KeyType::Mac, rounds, len));
    let Ok(mut m) = <hmac::SimpleHmac<D> as Mac>::new_from_slice(&key) else {
        return false;
    };
    m.update(data);
    m.verify_slice(want).is_ok()
}

/// A certificate or key of the bundle, with its `localKeyId` (what pairs a key with its
/// certificate).
struct Item {
    der: Zeroizing<Vec<u8>>,
    local_key_id: Option<Vec<u8>>,
}

fn read_safes(data: &[u8], password: &Password) -> Result<Bundle, UnwrapError> {
    let safes =
        Vec::<ContentInfo>::from_der(data).map_err(|e| bad("PKCS#12 authenticated safe", e))?;
    let mut certs = Vec::new();
    let mut key: Option<Item> = None;
    for safe in &safes {
        let (contents, encrypted) = match safe.content_type {
            ID_DATA => (octets(&safe.content)?, false),
            ID_ENCRYPTED_DATA => {
                let enc = safe
                    .content
                    .decode_as::<EncryptedData>()
                    .map_err(|e| bad("PKCS#12 encrypted data", e))?;
                let info = enc.enc_content_info;
                match &info.encrypted_content {
                    Some(c) => (
                        decrypt(&info.content_enc_alg, c.as_bytes(), password)?,
                        true,
                    ),
                    None => continue,
                }
            }
            oid => {
                return Err(UnwrapError::Bad(format!(
                    "PKCS#12 content of type {oid} is not supported"
                )));
            }
        };
        let bags = SafeContents::from_der(&contents).map_err(|e| match encrypted {
            // Padding alone lets about one wrong password in 256 through.
            true => UnwrapError::WrongPassphrase,
            false => bad("PKCS#12 bags", e),
        })?;
        for bag in bags {
            let id = bag.bag_attributes.as_ref().and_then(|attrs| {
                attrs
                    .iter()
                    .find(|a| a.oid == LOCAL_KEY_ID)
                    .and_then(|a| a.values.iter().next())
                    .map(|v| v.value().to_vec())
            });
            match bag.bag_id {
                pkcs12::PKCS_12_CERT_BAG_OID => {
                    let b = ContextSpecific::<CertBag>::from_der(&bag.bag_value)
                        .map_err(|e| bad("PKCS#12 certificate bag", e))?
                        .value;
                    if b.cert_id == X509_CERTIFICATE {
                        certs.push(Item {
                            der: Zeroizing::new(b.cert_value.into_bytes()),
                            local_key_id: id,
                        });
                    }
                }
                pkcs12::PKCS_12_PKCS8_KEY_BAG_OID if key.is_none() => {
                    let info = ContextSpecific::<EncryptedPrivateKeyInfo>::from_der(&bag.bag_value)
                        .map_err(|e| bad("PKCS#12 key bag", e))?
                        .value;
                    let plain = decrypt(
                        &info.encryption_algorithm,
                        info.encrypted_data.as_bytes(),
                        password,
                    )?;
                    check_sequence(&plain)?;
                    key = Some(Item {
                        der: plain,
                        local_key_id: id,
                    });
                }
                pkcs12::PKCS_12_KEY_BAG_OID if key.is_none() => {
                    let any = ContextSpecific::<der::Any>::from_der(&bag.bag_value)
                        .map_err(|e| bad("PKCS#12 key bag", e))?
                        .value;
                    let plain = Zeroizing::new(any.to_der().map_err(|e| bad("key bag", e))?);
                    key = Some(Item {
                        der: plain,
                        local_key_id: id,
                    });
                }
                _ => {}
            }
        }
    }
    let Some(key) = key else {
        return Err(UnwrapError::Bad("the bundle holds no private key".into()));
    };
    let leaf = key
        .local_key_id
        .as_ref()
        .and_then(|id| {
            certs
                .iter()
                .position(|c| c.local_key_id.as_ref() == Some(id))
        })
        .or_else(|| certs.iter().position(|c| !is_ca(&c.der)))
        .ok_or_else(|| UnwrapError::Bad("the bundle holds no certificate for its key".into()))?;
    let mut others = String::new();
    for (i, c) in certs.iter().enumerate() {
        if i != leaf {
            others.push_str(&pem("CERTIFICATE", &c.der));
        }
    }
    Ok(Bundle {
        cert: pem("CERTIFICATE", &certs[leaf].der),
        others,
        key: pem_secret("PRIVATE KEY", &key.der),
    })
}

fn is_ca(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .and_then(|(_, c)| c.basic_constraints().ok().flatten().map(|b| b.value.ca))
        .unwrap_or(false)
}

/// Decrypts `data` under `alg`: PBES2, or one of the PKCS#12 PBEs (SHA-1 KDF).
fn decrypt(
    alg: &AlgorithmIdentifierOwned,
    data: &[u8],
    password: &Password,
) -> Result<Zeroizing<Vec<u8>>, UnwrapError> {
    let params = alg
        .parameters
        .as_ref()
        .ok_or_else(|| UnwrapError::Bad(format!("encryption {} has no parameters", alg.oid)))?;
    let mut buf = Zeroizing::new(data.to_vec());
    if alg.oid == PBES2 {
        let p = params
            .decode_as::<pkcs5::pbes2::Parameters<'_>>()
            .map_err(|e| bad("PBES2 parameters", e))?;
        let len = match p.decrypt_in_place(&*password.utf8, &mut buf) {
            Ok(plain) => plain.len(),
            // (pkcs5 0.7 reports bad padding as EncryptFailed.)
            Err(pkcs5::Error::DecryptFailed | pkcs5::Error::EncryptFailed) => {
                return Err(UnwrapError::WrongPassphrase);
            }
            Err(e) => return Err(bad("PBES2", e)),
        };
        buf.truncate(len);
        return Ok(buf);
    }
    let p = params
        .decode_as::<Pkcs12PbeParams>()
        .map_err(|e| bad("PKCS#12 PBE parameters", e))?;
    let derive = |kind, len| {
        Zeroizing::new(derive_key::<sha1::Sha1>(
            &password.bmp,
            p.salt.as_bytes(),
            kind,
            p.iterations,
            len,
        ))
    };
    let (key_len, iv_len) = match alg.oid {
        pkcs12::PKCS_12_PBE_WITH_SHAAND3_KEY_TRIPLE_DES_CBC => (24, 8),
        pkcs12::PKCS_12_PBE_WITH_SHAAND128_BIT_RC2_CBC => (16, 8),
        pkcs12::PKCS_12_PBEWITH_SHAAND40_BIT_RC2_CBC => (5, 8),
        oid => {
            return Err(UnwrapError::Bad(format!(
                "encryption {oid} is not supported (PBES2 with AES or 3DES, and PKCS#12's 3DES and RC2 PBEs are)"
            )));
        }
    };
    let key = derive(Pkcs12KeyType::EncryptionKey, key_len);
    let iv = derive(Pkcs12KeyType::Iv, iv_len);
    let plain = if key_len == 24 {
        cbc_decrypt::<des::TdesEde3>(&key, &iv, &mut buf)
    } else {
        cbc_decrypt::<rc2::Rc2>(&key, &iv, &mut buf)
    };
    let len = plain.ok_or(UnwrapError::WrongPassphrase)?;
    buf.truncate(len);
    Ok(buf)
}

/// CBC with PKCS#7 padding, in place; the plaintext length, or `None` when the padding is
/// wrong (the usual sign of a wrong key).
fn cbc_decrypt<C>(key: &[u8], iv: &[u8], buf: &mut [u8]) -> Option<usize>
where
    C: cbc::cipher::BlockCipher + cbc::cipher::BlockDecrypt + cbc::cipher::KeyInit,
{
    let d = cbc::Decryptor::<C>::new_from_slices(key, iv).ok()?;
    d.decrypt_padded_mut::<Pkcs7>(buf).ok().map(<[u8]>::len)
}

/// A decrypted key must at least be one DER SEQUENCE: padding alone lets about one wrong
/// passphrase in 256 through.
fn check_sequence(der: &[u8]) -> Result<(), UnwrapError> {
    match der::Any::from_der(der) {
        Ok(a) if a.tag() == der::Tag::Sequence => Ok(()),
        _ => Err(UnwrapError::WrongPassphrase),
    }
}

/// One PEM block: its label, its RFC 1421 headers, its bytes.
struct PemBlock<'a> {
    label: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    der: Zeroizing<Vec<u8>>,
}

/// The first private-key block of `text` (labels `… PRIVATE KEY`).
fn key_block(text: &str) -> Option<PemBlock<'_>> {
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        if !label.ends_with("PRIVATE KEY") {
            continue;
        }
        let mut headers = Vec::new();
        let mut body = Zeroizing::new(String::new());
        for l in lines.by_ref() {
            if l.starts_with("-----END ") {
                break;
            }
            match l.split_once(':') {
                Some((k, v)) if body.is_empty() => headers.push((k.trim(), v.trim())),
                _ => body.push_str(l),
            }
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .unwrap_or_default();
        return Some(PemBlock {
            label,
            headers,
            der: Zeroizing::new(der),
        });
    }
    None
}

/// Whether the first private key in `pem` is encrypted (PKCS#8 `ENCRYPTED PRIVATE KEY`, or
/// the traditional form with `Proc-Type: 4,ENCRYPTED`).
pub(crate) fn is_encrypted_key(pem: &str) -> bool {
    key_block(pem).is_some_and(|b| {
        b.label == "ENCRYPTED PRIVATE KEY"
            || b.headers
                .iter()
                .any(|(k, v)| *k == "Proc-Type" && v.ends_with("ENCRYPTED"))
    })
}

/// Decrypts the first private key of `pem` with `pass`: the same key, unencrypted, as PEM.
pub(crate) fn decrypt_key(pem: &str, pass: &Passphrase) -> Result<Zeroizing<String>, UnwrapError> {
    let block = key_block(pem).ok_or_else(|| UnwrapError::Bad("no private key found".into()))?;
    let password = Password::new(&pass.0);
    if block.label == "ENCRYPTED PRIVATE KEY" {
        let info = EncryptedPrivateKeyInfo::from_der(&block.der)
            .map_err(|e| bad("encrypted PKCS#8 key", e))?;
        let plain = decrypt(
            &info.encryption_algorithm,
            info.encrypted_data.as_bytes(),
            &password,
        )?;
        check_sequence(&plain)?;
        return Ok(pem_secret("PRIVATE KEY", &plain));
    }
    let dek = block
        .headers
        .iter()
        .find(|(k, _)| *k == "DEK-Info")
        .map(|(_, v)| *v)
        .ok_or_else(|| UnwrapError::Bad("encrypted PEM key without DEK-Info".into()))?;
    let (cipher, iv_hex) = dek
        .split_once(',')
        .ok_or_else(|| UnwrapError::Bad(format!("DEK-Info '{dek}' has no IV")))?;
    let iv = hex_bytes(iv_hex.trim())
        .filter(|iv| iv.len() >= 8)
        .ok_or_else(|| UnwrapError::Bad(format!("DEK-Info IV '{iv_hex}' is not hex")))?;
    let key_len = match cipher {
        "AES-128-CBC" => 16,
        "AES-192-CBC" => 24,
        "AES-256-CBC" => 32,
        "DES-EDE3-CBC" => 24,
        c => {
            return Err(UnwrapError::Bad(format!(
                "a key encrypted with {c} is not supported (AES-128/192/256-CBC and DES-EDE3-CBC are): re-encrypt it with 'openssl pkey -aes256'"
            )));
        }
    };
    let key = bytes_to_key(&password.utf8, &iv[..8], key_len);
    let mut buf = Zeroizing::new(block.der.to_vec());
    let len = match cipher {
        "AES-128-CBC" => cbc_decrypt::<aes::Aes128>(&key, &iv, &mut buf),
        "AES-192-CBC" => cbc_decrypt::<aes::Aes192>(&key, &iv, &mut buf),
        "AES-256-CBC" => cbc_decrypt::<aes::Aes256>(&key, &iv, &mut buf),
        _ => cbc_decrypt::<des::TdesEde3>(&key, &iv, &mut buf),
    }
    .ok_or(UnwrapError::WrongPassphrase)?;
    buf.truncate(len);
    check_sequence(&buf)?;
    Ok(pem_secret(block.label, &buf))
}

/// OpenSSL's `EVP_BytesToKey` with MD5 and one round, as its traditional PEM encryption
/// uses: D_i = MD5(D_{i-1} ‖ password ‖ salt), concatenated to `len` bytes.
fn bytes_to_key(password: &[u8], salt: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(len + 16));
    let mut prev: Option<Zeroizing<Vec<u8>>> = None;
    while out.len() < len {
        let mut h = Md5::new();
        if let Some(p) = &prev {
            h.update(&**p);
        }
        h.update(password);
        h.update(salt);
        let d = Zeroizing::new(h.finalize().to_vec());
        out.extend_from_slice(&d);
        prev = Some(d);
    }
    out.truncate(len);
    out
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn pem(label: &str, der: &[u8]) -> String {
    String::clone(&pem_secret(label, der))
}

fn pem_secret(label: &str, der: &[u8]) -> Zeroizing<String> {
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let mut out = Zeroizing::new(String::with_capacity(b64.len() + b64.len() / 64 + 80));
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_to_key_matches_openssl() {
        // `openssl enc -aes-256-cbc -P -md md5 -S 0001020304050607 -pass pass:testpass`: key, iv
        let k = bytes_to_key(b"testpass", &[0, 1, 2, 3, 4, 5, 6, 7], 48);
        let want = hex_bytes(concat!(
            "3A2B247E08BB12D0969468D57536B72BB6D74FF6642240E8174CBEC386128F4F",
            "155BC5649DAAB29631B78C28AD0212EA"
        ))
        .unwrap();
        assert_eq!(&k[..], &want[..]);
    }

    #[test]
    fn passphrase_is_the_first_line_and_never_printed() {
        let p = Passphrase::first_line("secret\r\nsecond\n").unwrap();
        assert_eq!(&*p.0, "secret");
        assert_eq!(format!("{p:?}"), "Passphrase(..)");
        assert_eq!(Passphrase::first_line(""), None);
        assert_eq!(&*Passphrase::first_line("\n").unwrap().0, "");
    }

    #[test]
    fn bmp_password_has_the_terminator() {
        assert_eq!(&*Password::new("").bmp, &[0, 0]);
        assert_eq!(&*Password::new("ab").bmp, &[0, b'a', 0, b'b', 0, 0]);
        assert!(Password::none().bmp.is_empty());
    }
}
