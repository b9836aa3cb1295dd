//! Client authentication for embedders: the [`Authenticator`] trait.
//!
//! ```text
//!  key exchange ─▶ auth-user-pass-verify script (if set, off the packet path)
//!              ─▶ Authenticator::authenticate (if set; a blocking-pool thread) ──▶ AuthHandle
//!              ─▶ management-client-auth (if set: >CLIENT:CONNECT, client-auth/-deny)
//!              ─▶ accepted: client-config-dir, client-connect, PUSH_REPLY
//! ```
//! The authenticator and the management interface are driven the same way: the core announces
//! a pending key (client ID `cid`, key ID `kid`), keeps the client waiting (other clients are
//! never blocked), and applies a decision when it arrives — accept (with per-client options),
//! deny, or pending (`AUTH_PENDING` + `INFO_PRE,{extra}` to the client, e.g. `OPEN_URL:…` or a
//! `CR_TEXT:…` challenge). A key with no final decision within the hand-window (or the pending
//! timeout) is rejected.
//!
//! A `CR_TEXT` challenge's answer (`CR_RESPONSE,{base64}` from the client) reaches
//! [`Authenticator::challenge_response`] with a fresh handle for the same key, and the
//! management interface as `>CLIENT:CR_RESPONSE,{CID},{KID},{base64}`.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::management::Decision;

/// The state of an auth-gen-token the client presented, as OpenVPN's `session_state`
/// (only reported with `auth-gen-token … external-auth`; a valid token otherwise
/// authenticates a renegotiation or reconnect without asking the authenticator).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenState {
    /// No token: a first authentication.
    Initial,
    /// A valid token.
    Authenticated,
    /// A token past its lifetime.
    Expired,
    /// A token that does not verify.
    Invalid,
}

impl TokenState {
    /// OpenVPN's `session_state` value.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Initial => "Initial",
            TokenState::Authenticated => "Authenticated",
            TokenState::Expired => "Expired",
            TokenState::Invalid => "Invalid",
        }
    }

    pub(crate) fn from_session_state(s: &str) -> Option<Self> {
        Some(match s {
            "Initial" => TokenState::Initial,
            "Authenticated" => TokenState::Authenticated,
            "Expired" => TokenState::Expired,
            "Invalid" => TokenState::Invalid,
            _ => return None,
        })
    }
}

/// What the authenticator is asked to decide on.
#[derive(Clone)]
pub struct AuthRequest {
    /// Client ID (the management interface's CID; unique per connection).
    pub cid: u64,
    /// Key ID being authenticated (0 for the first key, then renegotiations).
    pub key_id: u8,
    /// Whether this is a renegotiation of a connected client (`>CLIENT:REAUTH`).
    pub reauth: bool,
    /// Certificate common name (or the username with `username-as-common-name`).
    pub common_name: Option<String>,
    /// Username (empty without `auth-user-pass` on the client).
    pub username: String,
    /// Password (or auth-token / `SCRV1:…` static-challenge text) as the client sent it.
    pub password: String,
    /// The client's address.
    pub peer: SocketAddr,
    /// Every peer-info variable the client sent (`IV_VER`, `IV_PLAT`, `IV_GUI_VER`,
    /// `IV_SSO`, `UV_*`…), in order.
    pub peer_info: Vec<(String, String)>,
    /// With `auth-gen-token … external-auth`: the state of the token the client sent.
    pub token: Option<TokenState>,
}

impl std::fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthRequest")
            .field("cid", &self.cid)
            .field("key_id", &self.key_id)
            .field("reauth", &self.reauth)
            .field("common_name", &self.common_name)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .field("peer", &self.peer)
            .field("peer_info", &self.peer_info)
            .field("token", &self.token)
            .finish()
    }
}

impl AuthRequest {
    /// A peer-info variable (`IV_PLAT`, `IV_SSO`, …).
    pub fn peer_info(&self, name: &str) -> Option<&str> {
        self.peer_info
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The client's answer to a `CR_TEXT` challenge (`CR_RESPONSE,{base64}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChallengeResponse {
    /// Client ID.
    pub cid: u64,
    /// The key whose authentication is pending.
    pub key_id: u8,
    /// The response as the client sent it (base64; not checked).
    pub response_base64: String,
}

impl ChallengeResponse {
    /// The decoded response, if it is valid base64 and UTF-8.
    pub fn response(&self) -> Option<String> {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(self.response_base64.trim())
            .ok()?;
        String::from_utf8(raw).ok()
    }
}

/// Per-client options that come with an acceptance (applied like a client-connect script's
/// output, for the first key only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// Extra `push` options for this client (e.g. `route 10.99.0.0 255.255.0.0`).
    pub push: Vec<String>,
    /// A fixed tunnel address (`ifconfig-push`).
    pub ifconfig_push: Option<Ipv4Addr>,
    /// Further client-config-dir directives, as text (`iroute …`, `push-reset`, …).
    pub config: Option<String>,
}

impl ClientOptions {
    /// Adds a pushed option.
    pub fn push(mut self, option: impl Into<String>) -> Self {
        self.push.push(option.into());
        self
    }

    /// Sets the client's tunnel address.
    pub fn ifconfig_push(mut self, addr: Ipv4Addr) -> Self {
        self.ifconfig_push = Some(addr);
        self
    }

    /// The options as client-config-dir text (`None` when empty).
    pub fn to_config_text(&self) -> Option<String> {
        let mut s = String::new();
        if let Some(a) = self.ifconfig_push {
            let _ = writeln!(s, "ifconfig-push {a} 255.255.255.0");
        }
        for p in &self.push {
            let q = p.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(s, "push \"{q}\"");
        }
        if let Some(c) = &self.config {
            s.push_str(c);
            if !c.ends_with('\n') {
                s.push('\n');
            }
        }
        (!s.is_empty()).then_some(s)
    }
}

/// An authenticator's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthDecision {
    /// Accept the key (for the first key, with per-client options).
    Accept(ClientOptions),
    /// Reject: the client gets `AUTH_FAILED[,{client_reason}]`.
    Deny {
        /// Logged on the server.
        reason: String,
        /// Sent to the client.
        client_reason: Option<String>,
    },
    /// Not yet: the client is told `AUTH_PENDING` and `INFO_PRE,{extra}` (e.g.
    /// `OPEN_URL:https://…` or `CR_TEXT:R,E:Enter your OTP`) and waits up to `timeout`; a
    /// final decision follows through the same (or a later) [`AuthHandle`].
    Pending {
        /// How long the client should wait.
        timeout: Duration,
        /// The text after `INFO_PRE,`.
        extra: String,
    },
}

impl AuthDecision {
    /// The shared form the core applies (management decisions use it too).
    pub(crate) fn into_decision(self) -> Decision {
        match self {
            AuthDecision::Accept(o) => Decision::Allow(o.to_config_text()),
            AuthDecision::Deny {
                reason,
                client_reason,
            } => Decision::Deny {
                reason,
                client_reason,
            },
            AuthDecision::Pending { timeout, extra } => Decision::Pending {
                extra,
                timeout: u32::try_from(timeout.as_secs().max(1)).unwrap_or(u32::MAX),
            },
        }
    }
}

/// A decision on its way to the core: (client ID, key ID, decision).
pub(crate) type DecisionMsg = (u64, u8, AuthDecision);

/// Where to send the decision for one pending key. Cheap to clone, `Send`, usable from any
/// thread or task, with or without tokio; keep it as long as the decision takes.
#[derive(Clone, Debug)]
pub struct AuthHandle {
    cid: u64,
    key_id: u8,
    tx: mpsc::UnboundedSender<DecisionMsg>,
}

impl AuthHandle {
    pub(crate) fn new(cid: u64, key_id: u8, tx: mpsc::UnboundedSender<DecisionMsg>) -> Self {
        AuthHandle { cid, key_id, tx }
    }

    /// Client ID.
    pub fn cid(&self) -> u64 {
        self.cid
    }

    /// Key ID.
    pub fn key_id(&self) -> u8 {
        self.key_id
    }

    /// Sends a decision. False when the server is gone. A decision for a key that is no
    /// longer pending (decided, timed out, client gone) is ignored by the server.
    pub fn decide(&self, d: AuthDecision) -> bool {
        self.tx.send((self.cid, self.key_id, d)).is_ok()
    }

    /// Accepts the key.
    pub fn accept(&self, options: ClientOptions) -> bool {
        self.decide(AuthDecision::Accept(options))
    }

    /// Rejects the key (`client_reason` goes to the client in `AUTH_FAILED`).
    pub fn deny(&self, reason: impl Into<String>, client_reason: Option<String>) -> bool {
        self.decide(AuthDecision::Deny {
            reason: reason.into(),
            client_reason,
        })
    }

    /// Tells the client to wait (`AUTH_PENDING`, `INFO_PRE,{extra}`); decide later.
    pub fn pending(&self, timeout: Duration, extra: impl Into<String>) -> bool {
        self.decide(AuthDecision::Pending {
            timeout,
            extra: extra.into(),
        })
    }
}

/// Decides whether a client may connect; set with [`crate::runtime::ServeOptions`].
///
/// Each call runs on a blocking-pool thread, never on the packet path, so an implementation
/// may block (a database or LDAP lookup) without stalling other clients; an async
/// implementation spawns its work (`tokio::runtime::Handle::current().spawn(…)` works inside
/// the call) and answers through the handle. Undecided keys are rejected when the
/// hand-window (or a pending timeout) passes.
pub trait Authenticator: Send + Sync + 'static {
    /// A client's key needs a decision: answer through `handle` (now or later, from anywhere).
    fn authenticate(&self, request: AuthRequest, handle: AuthHandle);

    /// The client answered a `CR_TEXT` challenge; `handle` decides the same pending key.
    /// The default denies.
    fn challenge_response(&self, response: ChallengeResponse, handle: AuthHandle) {
        let _ = response;
        handle.deny("challenge response not expected", None);
    }
}

/// What the core asks of the authenticator (the runtime makes the calls).
#[derive(Clone, Debug)]
pub enum AuthCall {
    /// [`Authenticator::authenticate`].
    Authenticate(AuthRequest),
    /// [`Authenticator::challenge_response`].
    Challenge(ChallengeResponse),
}

impl AuthCall {
    /// Runs the call (blocking is allowed; the runtime calls this on a blocking thread).
    pub(crate) fn dispatch(
        self,
        authenticator: &dyn Authenticator,
        tx: mpsc::UnboundedSender<DecisionMsg>,
    ) {
        match self {
            AuthCall::Authenticate(r) => {
                let h = AuthHandle::new(r.cid, r.key_id, tx);
                authenticator.authenticate(r, h);
            }
            AuthCall::Challenge(c) => {
                let h = AuthHandle::new(c.cid, c.key_id, tx);
                authenticator.challenge_response(c, h);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_render_as_client_config() {
        let o = ClientOptions::default()
            .ifconfig_push(Ipv4Addr::new(10, 8, 0, 50))
            .push("route 10.99.0.0 255.255.0.0")
            .push("setenv X \"a b\"");
        let text = o.to_config_text().unwrap();
        assert_eq!(
            text,
            "ifconfig-push 10.8.0.50 255.255.255.0\npush \"route 10.99.0.0 255.255.0.0\"\npush \"setenv X \\\"a b\\\"\"\n"
        );
        let lines = openvpn_control::options::parse_config(&text).unwrap();
        assert_eq!(lines[2].arg(0), Some("setenv X \"a b\""));
        assert_eq!(ClientOptions::default().to_config_text(), None);
    }

    #[test]
    fn challenge_response_decodes() {
        let c = ChallengeResponse {
            cid: 1,
            key_id: 0,
            response_base64: "MTIzNDU2".into(),
        };
        assert_eq!(c.response().as_deref(), Some("123456"));
        let bad = ChallengeResponse {
            response_base64: "!!".into(),
            ..c
        };
        assert_eq!(bad.response(), None);
    }

    #[test]
    fn pending_timeout_is_whole_seconds_at_least_one() {
        let d = AuthDecision::Pending {
            timeout: Duration::from_millis(10),
            extra: "CR_TEXT:R:x".into(),
        };
        assert_eq!(
            d.into_decision(),
            Decision::Pending {
                extra: "CR_TEXT:R:x".into(),
                timeout: 1
            }
        );
    }
}
