//! `auth-gen-token`: session tokens the server hands to authenticated clients, so later key
//! exchanges (renegotiations, reconnects, another server instance sharing the secret) are
//! authenticated without running `auth-user-pass-verify` again.
//!
//! Token format (ours; opaque to clients, which only echo it back as the password):
//!
//! ```text
//!  "SESS_ID_" ‖ base64( session_id[12] ‖ created u64 BE ‖ renewed u64 BE ‖ mac[32] )
//!  mac = HMAC-SHA256(secret, len(username) u32 BE ‖ username ‖ session_id ‖ created ‖ renewed)
//! ```
//!
//! `created` is when the client first authenticated (the `lifetime` limit counts from it);
//! `renewed` is the last time the server re-issued the token (a token not renewed for twice
//! the renewal interval has expired: the client is gone). The session id stays the same across
//! renewals, so a client keeps one identity. The secret comes from `auth-gen-token-secret FILE`
//! (`-----BEGIN OpenVPN auth-token server key-----`, base64 of ≥ 32 random bytes; make one with
//! `openvpn-server --genkey auth-token FILE`); without it, a random secret is made at start-up
//! (tokens then die with the process).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Prefix of every token (OpenVPN's convention, which clients recognise).
pub const PREFIX: &str = "SESS_ID_";
const PEM_BEGIN: &str = "-----BEGIN OpenVPN auth-token server key-----";
const PEM_END: &str = "-----END OpenVPN auth-token server key-----";
const BODY: usize = 12 + 8 + 8 + 32;

/// The token secret.
#[derive(Clone)]
pub struct TokenKey {
    secret: Vec<u8>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl PartialEq for TokenKey {
    fn eq(&self, other: &Self) -> bool {
        self.secret == other.secret
    }
}

/// Why a token was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token of ours, bad MAC, or another user's token.
    Invalid,
    /// Past `lifetime`, or not renewed in time.
    Expired,
}

/// A verified token's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    /// Session id (stable across renewals).
    pub session_id: [u8; 12],
    /// First authentication (unix seconds).
    pub created: u64,
    /// Last renewal (unix seconds).
    pub renewed: u64,
}

impl TokenKey {
    /// A random secret (tokens are valid for this process only).
    pub fn random() -> Self {
        let mut secret = vec![0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        TokenKey { secret }
    }

    /// Parses an `auth-gen-token-secret` file.
    pub fn parse_pem(text: &str) -> Result<Self, String> {
        let start = text
            .find(PEM_BEGIN)
            .ok_or("missing '-----BEGIN OpenVPN auth-token server key-----'")?;
        let rest = &text[start + PEM_BEGIN.len()..];
        let end = rest
            .find(PEM_END)
            .ok_or("missing '-----END OpenVPN auth-token server key-----'")?;
        let b64: String = rest[..end].chars().filter(|c| !c.is_whitespace()).collect();
        let secret = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("bad base64: {e}"))?;
        if secret.len() < 32 {
            return Err(format!(
                "the key has {} bytes; at least 32 are needed",
                secret.len()
            ));
        }
        Ok(TokenKey { secret })
    }

    /// A new secret file's text (`--genkey auth-token`).
    pub fn generate_pem() -> String {
        let mut secret = [0u8; 64];
        rand::thread_rng().fill_bytes(&mut secret);
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        let mut s = format!("{PEM_BEGIN}\n");
        for chunk in b64.as_bytes().chunks(64) {
            s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            s.push('\n');
        }
        s.push_str(PEM_END);
        s.push('\n');
        s
    }

    fn mac(&self, username: &str, body: &[u8]) -> [u8; 32] {
        // HMAC accepts keys of any length; new_from_slice cannot fail for HMAC.
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(&self.secret) else {
            return [0; 32];
        };
        m.update(&(username.len() as u32).to_be_bytes());
        m.update(username.as_bytes());
        m.update(body);
        m.finalize().into_bytes().into()
    }

    /// Issues a token for `username`.
    pub fn issue(&self, username: &str, info: &TokenInfo) -> String {
        let mut body = Vec::with_capacity(BODY);
        body.extend_from_slice(&info.session_id);
        body.extend_from_slice(&info.created.to_be_bytes());
        body.extend_from_slice(&info.renewed.to_be_bytes());
        let mac = self.mac(username, &body);
        body.extend_from_slice(&mac);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(body)
        )
    }

    /// A fresh session (new session id, created = renewed = `now`).
    pub fn new_session(now: u64) -> TokenInfo {
        let mut session_id = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut session_id);
        TokenInfo {
            session_id,
            created: now,
            renewed: now,
        }
    }

    /// Checks `token` for `username` at `now` (unix seconds): MAC, `lifetime` (0 = none) since
    /// creation, and renewal within `2 × renewal` (0 = not checked).
    pub fn verify(
        &self,
        token: &str,
        username: &str,
        now: u64,
        lifetime: u64,
        renewal: u64,
    ) -> Result<TokenInfo, TokenError> {
        let b64 = token.strip_prefix(PREFIX).ok_or(TokenError::Invalid)?;
        let body = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| TokenError::Invalid)?;
        if body.len() != BODY {
            return Err(TokenError::Invalid);
        }
        let (fields, mac) = body.split_at(BODY - 32);
        let want = self.mac(username, fields);
        // Constant-time comparison.
        let diff = want.iter().zip(mac).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(TokenError::Invalid);
        }
        let mut session_id = [0u8; 12];
        session_id.copy_from_slice(&fields[..12]);
        let num = |r: std::ops::Range<usize>| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&fields[r]);
            u64::from_be_bytes(b)
        };
        let info = TokenInfo {
            session_id,
            created: num(12..20),
            renewed: num(20..28),
        };
        if lifetime > 0 && now > info.created.saturating_add(lifetime) {
            return Err(TokenError::Expired);
        }
        if renewal > 0 && now > info.renewed.saturating_add(renewal.saturating_mul(2)) {
            return Err(TokenError::Expired);
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_verify_expire_and_share() {
        let pem = TokenKey::generate_pem();
        let k = TokenKey::parse_pem(&pem).unwrap();
        let k2 = TokenKey::parse_pem(&pem).unwrap();
        let s = TokenKey::new_session(1000);
        let t = k.issue("alice", &s);
        assert!(t.starts_with(PREFIX));
        assert_eq!(k2.verify(&t, "alice", 1010, 0, 0), Ok(s));
        assert_eq!(
            k.verify(&t, "bob", 1010, 0, 0),
            Err(TokenError::Invalid),
            "another user's token"
        );
        assert_eq!(
            k.verify(&t, "alice", 2001, 1000, 0),
            Err(TokenError::Expired)
        );
        assert_eq!(k.verify(&t, "alice", 1121, 0, 60), Err(TokenError::Expired));
        let mut bad = t.clone();
        bad.replace_range(10..11, if &t[10..11] == "A" { "B" } else { "A" });
        assert_eq!(
            k.verify(&bad, "alice", 1010, 0, 0),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            TokenKey::random().verify(&t, "alice", 1010, 0, 0),
            Err(TokenError::Invalid)
        );
        assert!(TokenKey::parse_pem("garbage").is_err());
    }
}
