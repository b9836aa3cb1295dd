//! The server side of one client connection: authentication hand-off, NCP, PUSH_REPLY.
//!
//! ```text
//!  Session events ─▶ ServerSession ─▶ ServerEvent::Authenticate ─▶ (driver decides)
//!                         ▲                                         │
//!                         └──── accept(now, key_id, client_push) ◀──┘
//!  PUSH_REQUEST ─▶ PUSH_REPLY (global push + per-client options + peer-id, cipher, flags)
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use openvpn_crypto::{CipherKind, KeyBlock};
use openvpn_wire::KeyId;

use crate::messages::ControlMessage;
use crate::ncp;
use crate::options;
use crate::peer_info::{self, PeerInfo};
use crate::session::{CloseReason, Event, KeyDerivation, PeerAuth, Session};

/// Largest PUSH_REPLY message we send (OpenVPN 2.6 keeps them ≤ 1024 bytes).
const PUSH_BUNDLE_SIZE: usize = 1024;
/// A repeated PUSH_REQUEST within this time gets no second reply.
const PUSH_REPEAT_GUARD: Duration = Duration::from_secs(30);

/// Server-wide negotiation policy.
#[derive(Clone, Debug)]
pub struct ServerPolicy {
    /// `data-ciphers` in preference order.
    pub ciphers: Vec<String>,
    /// `data-ciphers-fallback`.
    pub fallback: Option<String>,
    /// `push "…"` options for every client, already formatted.
    pub push: Vec<String>,
    /// Offer dynamic tls-crypt to clients that support it.
    pub dyn_tls_crypt: bool,
    /// `tun-mtu` pushed to clients that announce `IV_MTU`.
    pub tun_mtu: Option<u16>,
}

/// The server's `compress` / `comp-lzo` setting. Compression itself is never done (VORACLE):
/// clients are pushed the stub framing of the configured family, and with a real algorithm
/// what a client compresses anyway is decompressed (2.6's default `asym` for a config that
/// enables compression; `allow-compression no` with one is a configuration error).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CompressionConfig {
    /// No compression option (OpenVPN 2.6's default): no framing.
    #[default]
    None,
    /// `compress` / `compress stub` → `compress stub`.
    Stub,
    /// `compress stub-v2` → `compress stub-v2`.
    StubV2,
    /// `comp-lzo no` → `comp-lzo no`.
    LzoStub,
    /// `comp-lzo [yes|adaptive]` / `compress lzo` → `comp-lzo no`; LZO from clients is
    /// decompressed.
    Lzo,
    /// `compress lz4` → `compress stub`; LZ4 from clients is decompressed.
    Lz4,
    /// `compress lz4-v2` → `compress stub-v2`; LZ4 from clients is decompressed.
    Lz4V2,
    /// `compress migrate`: clients that announce `comp-lzo` get `compress stub-v2` (if they
    /// understand it) or `comp-lzo no`; others get nothing.
    Migrate,
}

impl CompressionConfig {
    /// Parses the arguments of `compress` (`comp_lzo` = the option was `comp-lzo`).
    pub fn from_option(comp_lzo: bool, arg: Option<&str>) -> Option<Self> {
        if comp_lzo {
            return match arg {
                Some("no") => Some(CompressionConfig::LzoStub),
                None | Some("yes" | "adaptive") => Some(CompressionConfig::Lzo),
                Some(_) => None,
            };
        }
        Some(match arg {
            None | Some("stub") => CompressionConfig::Stub,
            Some("stub-v2") => CompressionConfig::StubV2,
            Some("lz4") => CompressionConfig::Lz4,
            Some("lz4-v2") => CompressionConfig::Lz4V2,
            Some("lzo") => CompressionConfig::Lzo,
            Some("migrate") => CompressionConfig::Migrate,
            Some(_) => return None,
        })
    }

    /// The framing the option stands for (`migrate`: none, it is chosen per client), for
    /// [`crate::compression::AllowCompression`]'s checks.
    pub fn framing(self) -> openvpn_wire::CompressionFraming {
        use openvpn_wire::CompressionFraming as F;
        match self {
            CompressionConfig::None | CompressionConfig::Migrate => F::None,
            CompressionConfig::Stub => F::Stub,
            CompressionConfig::StubV2 => F::StubV2,
            CompressionConfig::LzoStub => F::LzoStub,
            CompressionConfig::Lzo => F::Lzo,
            CompressionConfig::Lz4 => F::Lz4,
            CompressionConfig::Lz4V2 => F::Lz4V2,
        }
    }
}

pub use crate::compression::framing_for;

/// Events of one client connection on the server.
#[derive(Debug)]
// Events are few (one per key state or message); boxing the 256-byte key block would only
// add an allocation and change the public type.
#[allow(clippy::large_enum_variant)]
pub enum ServerEvent {
    /// The client sent credentials and peer-info; the cipher is already negotiated. Call
    /// [`ServerSession::accept`] or [`ServerSession::reject`].
    Authenticate {
        /// Key state being authenticated (0 first, then renegotiations).
        key_id: KeyId,
        /// What the client sent.
        auth: Box<PeerAuth>,
        /// Parsed peer-info.
        peer_info: PeerInfo,
        /// The negotiated cipher.
        cipher: CipherKind,
    },
    /// NCP failed; the client has been told with AUTH_FAILED.
    NegotiationFailed(String),
    /// Data-channel keys for `key_id`.
    KeysReady {
        /// Key ID.
        key_id: KeyId,
        /// Key block.
        key2: KeyBlock,
        /// Cipher.
        cipher: CipherKind,
    },
    /// The PUSH_REPLY went out: the client is connected.
    Pushed,
    /// A key may no longer be used.
    KeyRetired {
        /// Key ID.
        key_id: KeyId,
    },
    /// The client said `EXIT`.
    ClientExit,
    /// `CR_RESPONSE,{base64}`: the client's answer to a `CR_TEXT` challenge (as sent).
    CrResponse(String),
    /// A renegotiation failed (e.g. the client's certificate is now revoked); the previous
    /// key stays in use until it expires.
    RenegotiationFailed {
        /// Key ID of the failed key state.
        key_id: KeyId,
        /// Why.
        reason: String,
    },
    /// The session is over.
    Closed(CloseReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    WaitingKeyExchange,
    WaitingDecision,
    Accepted,
    Rejected,
}

/// One client connection's control logic around a [`Session`].
#[derive(Debug)]
pub struct ServerSession {
    session: Session,
    policy: ServerPolicy,
    peer_id: u32,
    stage: Stage,
    peer_info: PeerInfo,
    cipher: Option<CipherKind>,
    derivation: KeyDerivation,
    client_push: Vec<String>,
    /// This client's replacement for the policy's push list (client-config-dir
    /// `push-reset` / `push-remove` / `push`).
    push_list: Option<Vec<String>>,
    last_push: Option<Instant>,
    pushed_once: bool,
    compression: CompressionConfig,
    client_options: String,
    events: VecDeque<ServerEvent>,
}

impl ServerSession {
    /// Wraps a server [`Session`] for the client that got `peer_id`.
    pub fn new(session: Session, policy: ServerPolicy, peer_id: u32) -> Self {
        ServerSession {
            session,
            policy,
            peer_id,
            stage: Stage::WaitingKeyExchange,
            peer_info: PeerInfo::default(),
            cipher: None,
            derivation: KeyDerivation::Prf,
            client_push: Vec::new(),
            push_list: None,
            last_push: None,
            pushed_once: false,
            compression: CompressionConfig::None,
            client_options: String::new(),
            events: VecDeque::new(),
        }
    }

    /// The underlying session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The underlying session, mutably.
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Sets the server's compression option (before the client connects).
    pub fn set_compression(&mut self, c: CompressionConfig) {
        self.compression = c;
    }

    /// The `compress`/`comp-lzo` option pushed to this client, if any.
    fn compression_option(&self) -> Option<&'static str> {
        let has = |v: &str| self.peer_info.get(v) == Some("1");
        match self.compression {
            CompressionConfig::None => None,
            CompressionConfig::Stub | CompressionConfig::Lz4 => Some("compress stub"),
            CompressionConfig::StubV2 | CompressionConfig::Lz4V2 => Some("compress stub-v2"),
            CompressionConfig::LzoStub | CompressionConfig::Lzo => Some("comp-lzo no"),
            CompressionConfig::Migrate => {
                if !self.client_options.contains(",comp-lzo") {
                    None
                } else if has("IV_COMP_STUBv2") {
                    Some("compress stub-v2")
                } else {
                    Some("comp-lzo no")
                }
            }
        }
    }

    /// The data-channel framing this client uses (valid once authenticated): a configured
    /// real algorithm decompresses what the client compresses anyway and sends like the
    /// pushed stub.
    pub fn framing(&self) -> openvpn_wire::CompressionFraming {
        if self.compression.framing().decompresses().is_some() {
            return self.compression.framing();
        }
        match self.compression_option() {
            Some(o) => framing_for(&o.split(' ').map(str::to_owned).collect::<Vec<_>>()),
            None => openvpn_wire::CompressionFraming::None,
        }
    }

    /// Replaces the policy (push options, ciphers) for key exchanges that start later.
    pub fn set_policy(&mut self, policy: ServerPolicy) {
        self.policy = policy;
    }

    /// The client's peer-info.
    pub fn peer_info(&self) -> &PeerInfo {
        &self.peer_info
    }

    /// The client's peer-id.
    pub fn peer_id(&self) -> u32 {
        self.peer_id
    }

    /// The negotiated cipher.
    pub fn cipher(&self) -> Option<CipherKind> {
        self.cipher
    }

    /// Whether the client uses DATA_V2 (announced IV_PROTO bit 1).
    pub fn uses_data_v2(&self) -> bool {
        self.peer_info.proto_bits() & peer_info::IV_PROTO_DATA_V2 != 0
    }

    /// Feeds a control datagram.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        self.session.handle_datagram(now, datagram);
        self.process(now);
    }

    /// Runs timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.session.handle_timeout(now);
        self.process(now);
    }

    /// Next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.session.poll_timeout()
    }

    /// Next datagram.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.session.poll_transmit(now)
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Accepts the client for `key_id`. `client_push` are per-client options (e.g.
    /// `ifconfig 10.8.0.2 255.255.255.0`, `ifconfig-ipv6 fd08::1000/64 fd08::1`) sent in the
    /// PUSH_REPLY of the first key.
    pub fn accept(&mut self, now: Instant, key_id: KeyId, client_push: Vec<String>) {
        if key_id == KeyId::ZERO {
            self.client_push = client_push;
            self.stage = Stage::Accepted;
            let bits = self.peer_info.proto_bits();
            self.derivation = if bits & peer_info::IV_PROTO_TLS_KEY_EXPORT != 0 {
                KeyDerivation::TlsEkm
            } else {
                KeyDerivation::Prf
            };
            self.session.enable_data_channel(self.derivation);
        }
        self.session.accept_auth(now, key_id);
        if key_id == KeyId::ZERO
            && self.peer_info.proto_bits() & peer_info::IV_PROTO_REQUEST_PUSH != 0
        {
            self.send_push_reply(now);
        }
        self.process(now);
    }

    /// Replaces the server's push list for this client (its per-client config changed it
    /// with `push`, `push-reset` or `push-remove`); call before [`Self::accept`]. The
    /// generated options (`ifconfig…`, `peer-id`, `cipher`, …) are still added.
    pub fn set_push_list(&mut self, list: Vec<String>) {
        self.push_list = Some(list);
    }

    /// Rejects the client: it is told `AUTH_FAILED[,reason]`.
    pub fn reject(&mut self, now: Instant, key_id: KeyId, reason: Option<&str>) {
        if key_id == KeyId::ZERO {
            self.stage = Stage::Rejected;
        }
        self.session.reject_auth(now, key_id, reason);
        self.process(now);
    }

    /// Sends `AUTH_PENDING` / `INFO_PRE,…` while key `key_id` waits for its authentication
    /// decision (see [`Session::send_pending_message`]).
    pub fn send_pending_text(&mut self, now: Instant, key_id: KeyId, msg: &str) {
        let _ = self.session.send_pending_message(now, key_id, msg);
    }

    /// Sends a `RESTART` (server shutting down, `explicit-exit-notify`) or `HALT`.
    pub fn send_text(&mut self, now: Instant, msg: &str) {
        let _ = self.session.send_message(now, msg);
    }

    fn process(&mut self, now: Instant) {
        while let Some(ev) = self.session.poll_event() {
            match ev {
                Event::AuthRequest { key_id, auth } => self.on_auth_request(now, key_id, auth),
                Event::KeysReady { key_id, key2 } => {
                    if let Some(cipher) = self.cipher {
                        self.events.push_back(ServerEvent::KeysReady {
                            key_id,
                            key2,
                            cipher,
                        });
                    }
                }
                Event::KeyRetired { key_id } => {
                    self.events.push_back(ServerEvent::KeyRetired { key_id })
                }
                Event::ControlMessage(m) => match ControlMessage::parse(&m) {
                    ControlMessage::PushRequest => self.on_push_request(now),
                    ControlMessage::Exit => self.events.push_back(ServerEvent::ClientExit),
                    ControlMessage::CrResponse(r) => {
                        self.events.push_back(ServerEvent::CrResponse(r.to_owned()))
                    }
                    _ => {}
                },
                Event::Closed(r) => self.events.push_back(ServerEvent::Closed(r)),
                Event::RenegotiationFailed { key_id, reason } => self
                    .events
                    .push_back(ServerEvent::RenegotiationFailed { key_id, reason }),
                Event::KeyStateActive { .. } | Event::RenegotiationStarted { .. } => {}
            }
        }
    }

    fn on_auth_request(&mut self, now: Instant, key_id: KeyId, auth: Box<PeerAuth>) {
        if key_id == KeyId::ZERO {
            self.peer_info = PeerInfo::parse(&auth.peer_info);
            self.client_options = auth.options.clone();
            let occ = ncp::occ_cipher(&auth.options);
            match ncp::choose_cipher(
                &self.policy.ciphers,
                self.policy.fallback.as_deref(),
                &self.peer_info,
                occ,
            ) {
                Ok(name) => match CipherKind::from_name(&name) {
                    Some(c) => self.cipher = Some(c),
                    None => {
                        let msg = format!("cipher '{name}' is not supported");
                        self.fail_negotiation(
                            now,
                            key_id,
                            msg,
                            "Data channel cipher negotiation failed (no shared cipher)",
                        );
                        return;
                    }
                },
                Err(e) => {
                    let reason = e.auth_failed_reason();
                    self.fail_negotiation(now, key_id, e.to_string(), reason);
                    return;
                }
            }
            self.stage = Stage::WaitingDecision;
        } else if self.stage == Stage::Rejected {
            self.session.reject_auth(now, key_id, None);
            return;
        }
        let Some(cipher) = self.cipher else { return };
        self.events.push_back(ServerEvent::Authenticate {
            key_id,
            auth,
            peer_info: self.peer_info.clone(),
            cipher,
        });
    }

    fn fail_negotiation(&mut self, now: Instant, key_id: KeyId, log: String, reason: &str) {
        self.stage = Stage::Rejected;
        self.session.reject_auth(now, key_id, Some(reason));
        self.events.push_back(ServerEvent::NegotiationFailed(log));
    }

    fn on_push_request(&mut self, now: Instant) {
        match self.stage {
            Stage::Accepted => {
                if self.last_push.is_some_and(|t| now < t + PUSH_REPEAT_GUARD) {
                    return;
                }
                self.send_push_reply(now);
            }
            Stage::Rejected => {
                let _ = self.session.send_message(now, "AUTH_FAILED");
            }
            Stage::WaitingKeyExchange | Stage::WaitingDecision => {}
        }
    }

    /// The per-client options OpenVPN 2.6 appends: ifconfig…, peer-id, cipher, flags, tun-mtu.
    fn generated_options(&self) -> Vec<String> {
        let bits = self.peer_info.proto_bits();
        let mut v = self.client_push.clone();
        if bits & peer_info::IV_PROTO_DATA_V2 != 0 {
            v.push(format!("peer-id {}", self.peer_id));
        }
        let ncp_capable = self.peer_info.get("IV_CIPHERS").is_some()
            || self
                .peer_info
                .get("IV_NCP")
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(0)
                >= 2;
        if let (Some(c), true) = (self.cipher, ncp_capable) {
            v.push(format!("cipher {}", c.name()));
        }
        if bits & peer_info::IV_PROTO_CC_EXIT_NOTIFY != 0 {
            let mut flags = vec!["cc-exit"];
            if self.derivation == KeyDerivation::TlsEkm {
                flags.push("tls-ekm");
            }
            if self.policy.dyn_tls_crypt && bits & peer_info::IV_PROTO_DYN_TLS_CRYPT != 0 {
                flags.push("dyn-tls-crypt");
            }
            v.push(format!("protocol-flags {}", flags.join(" ")));
        } else if self.derivation == KeyDerivation::TlsEkm {
            v.push("key-derivation tls-ekm".into());
        }
        if let (Some(mtu), Some(_)) = (self.policy.tun_mtu, self.peer_info.get("IV_MTU")) {
            v.push(format!("tun-mtu {mtu}"));
        }
        if let Some(c) = self.compression_option() {
            v.push(c.to_owned());
        }
        v
    }

    fn send_push_reply(&mut self, now: Instant) {
        let mut all = self
            .push_list
            .clone()
            .unwrap_or_else(|| self.policy.push.clone());
        all.extend(self.generated_options());
        let messages = match options::build_push_reply(&all, PUSH_BUNDLE_SIZE) {
            Ok(m) => m,
            Err(e) => {
                self.events
                    .push_back(ServerEvent::NegotiationFailed(format!(
                        "cannot build PUSH_REPLY: {e}"
                    )));
                let _ = self.session.send_message(now, "AUTH_FAILED");
                return;
            }
        };
        for m in messages {
            let _ = self.session.send_message(now, &m);
        }
        self.last_push = Some(now);
        let bits = self.peer_info.proto_bits();
        if self.policy.dyn_tls_crypt
            && bits & peer_info::IV_PROTO_DYN_TLS_CRYPT != 0
            && bits & peer_info::IV_PROTO_CC_EXIT_NOTIFY != 0
        {
            let _ = self.session.enable_dyn_tls_crypt();
        }
        if !self.pushed_once {
            self.pushed_once = true;
            self.events.push_back(ServerEvent::Pushed);
        }
    }
}

#[cfg(test)]
mod compression_tests {
    use super::*;
    use openvpn_wire::CompressionFraming as F;

    #[test]
    fn options_map_to_stub_pushes_and_decompressing_framings() {
        for (comp_lzo, arg, config, framing) in [
            (false, Some("lz4"), CompressionConfig::Lz4, F::Lz4),
            (false, Some("lz4-v2"), CompressionConfig::Lz4V2, F::Lz4V2),
            (false, Some("lzo"), CompressionConfig::Lzo, F::Lzo),
            (true, Some("adaptive"), CompressionConfig::Lzo, F::Lzo),
            (true, None, CompressionConfig::Lzo, F::Lzo),
            (true, Some("no"), CompressionConfig::LzoStub, F::LzoStub),
            (false, None, CompressionConfig::Stub, F::Stub),
        ] {
            let c = CompressionConfig::from_option(comp_lzo, arg);
            assert_eq!(c, Some(config), "{arg:?}");
            assert_eq!(config.framing(), framing);
        }
        assert_eq!(CompressionConfig::from_option(false, Some("zstd")), None);
        assert_eq!(CompressionConfig::from_option(true, Some("maybe")), None);
        let f = |s: &str| framing_for(&s.split(' ').map(str::to_owned).collect::<Vec<_>>());
        assert_eq!(f("compress stub-v2"), F::StubV2);
        assert_eq!(f("compress"), F::Stub);
        assert_eq!(f("comp-lzo no"), F::LzoStub);
        assert_eq!(f("compress migrate"), F::None);
    }
}
