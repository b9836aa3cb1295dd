//! Data-channel cipher negotiation (NCP), server side.

use crate::peer_info::PeerInfo;

/// Why no cipher could be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoSharedCipher {
    /// The server's list.
    pub server: Vec<String>,
    /// What the client offered.
    pub client: Vec<String>,
}

impl NoSharedCipher {
    /// The reason sent in `AUTH_FAILED`.
    pub fn auth_failed_reason(&self) -> &'static str {
        "Data channel cipher negotiation failed (no shared cipher)"
    }
}

impl std::fmt::Display for NoSharedCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no shared data channel cipher: server data-ciphers {} , client offers {}",
            self.server.join(":"),
            if self.client.is_empty() {
                "nothing".into()
            } else {
                self.client.join(":")
            }
        )
    }
}

/// Picks the first of the server's `data-ciphers` that the client supports, else the
/// `--data-ciphers-fallback` for clients that announce nothing.
pub fn choose_cipher(
    server_ciphers: &[String],
    fallback: Option<&str>,
    peer: &PeerInfo,
    client_occ_cipher: Option<&str>,
) -> Result<String, NoSharedCipher> {
    let client = peer.ciphers();
    let has_list = peer.get("IV_CIPHERS").is_some() || !client.is_empty();
    for s in server_ciphers {
        if client.iter().any(|c| c.eq_ignore_ascii_case(s)) {
            return Ok(s.clone());
        }
        if !has_list && client_occ_cipher.is_some_and(|c| c.eq_ignore_ascii_case(s)) {
            return Ok(s.clone());
        }
    }
    if !has_list && client_occ_cipher.is_none() {
        if let Some(f) = fallback {
            return Ok(f.to_owned());
        }
    }
    Err(NoSharedCipher {
        server: server_ciphers.to_vec(),
        client,
    })
}

/// The `cipher X` value in an OCC options string, if any.
pub fn occ_cipher(options: &str) -> Option<&str> {
    options
        .split(',')
        .find_map(|o| o.strip_prefix("cipher "))
        .map(str::trim)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn list(s: &str) -> Vec<String> {
        s.split(':').map(str::to_owned).collect()
    }

    #[test]
    fn server_order_wins() {
        let peer = PeerInfo::parse("IV_CIPHERS=CHACHA20-POLY1305:AES-128-GCM\n");
        let got = choose_cipher(
            &list("AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305"),
            None,
            &peer,
            None,
        );
        assert_eq!(got.as_deref(), Ok("AES-128-GCM"));
    }

    #[test]
    fn no_common_cipher_fails() {
        let peer = PeerInfo::parse("IV_CIPHERS=CHACHA20-POLY1305\n");
        let err =
            choose_cipher(&list("AES-256-GCM"), Some("AES-256-CBC"), &peer, None).unwrap_err();
        assert!(err.to_string().contains("no shared"));
    }

    #[test]
    fn old_client_uses_fallback_or_occ() {
        let peer = PeerInfo::parse("IV_VER=2.3\n");
        assert_eq!(
            choose_cipher(&list("AES-256-GCM"), Some("AES-256-CBC"), &peer, None).as_deref(),
            Ok("AES-256-CBC")
        );
        assert_eq!(
            choose_cipher(
                &list("AES-256-GCM:AES-256-CBC"),
                None,
                &peer,
                Some("AES-256-CBC")
            )
            .as_deref(),
            Ok("AES-256-CBC")
        );
        assert_eq!(
            occ_cipher("V4,dev-type tun,cipher BF-CBC,auth SHA1"),
            Some("BF-CBC")
        );
    }
}
