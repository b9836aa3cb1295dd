//! One OpenVPN control session (one TLS session object, both roles), sans-I/O.
//!
//! ```text
//!  handle_datagram(now, bytes) ─▶ unwrap (tls-auth / tls-crypt) ─▶ replay check
//!        ─▶ ControlPacket ─▶ key state by key_id ─▶ reliable recv ─▶ TLS ─▶ key-method-2
//!        ─▶ control messages ─▶ poll_event()
//!  poll_transmit(now) ◀─ reliable send ◀─ TLS bytes / resets / ACKs ◀─ wrap
//!  poll_timeout() / handle_timeout(now): retransmits, hand-window, reneg-sec, lame duck
//! ```
//! Bad input never returns an error to the caller: it is dropped and counted in
//! [`ControlStats`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openvpn_crypto::{
    ControlWrap, KeyBlock, ReplayId, ReplayWindow, Role, StaticKey, TlsAuth, TlsCrypt,
};
use openvpn_wire::{AckList, ControlPacket, KeyId, KeyMethod2, Opcode, SessionId};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use zeroize::Zeroizing;

use crate::error::ControlError;
use crate::reliable::{AckQueue, RecvVerdict, ReliableRecv, ReliableSend};
use crate::tls::{TlsConfig, TlsSession, X509NameCheck};

/// Label of the dynamic tls-crypt exporter.
const DYN_TLS_CRYPT_LABEL: &[u8] = b"EXPORTER-OpenVPN-dynamic-tls-crypt";
/// Label of the data-channel key exporter.
const DATAKEYS_LABEL: &[u8] = b"EXPORTER-OpenVPN-datakeys";
/// Largest plaintext of one control message (OpenVPN's TLS channel buffer).
const MAX_CONTROL_MESSAGE: usize = 2047;

/// How control packets are protected (`tls-auth`, `tls-crypt`, `tls-crypt-v2`).
#[derive(Clone)]
pub enum ControlWrapping {
    /// No wrapping.
    None,
    /// HMAC authentication (`tls-auth`); the key file is kept for dynamic tls-crypt.
    TlsAuth(Arc<TlsAuth>, Arc<StaticKey>),
    /// Encryption and authentication (`tls-crypt`, and the per-client key of tls-crypt-v2).
    TlsCrypt(Arc<TlsCrypt>, Arc<StaticKey>),
    /// A tls-crypt-v2 client: `Kc` as tls-crypt plus the wrapped key `WKc` sent to the server.
    TlsCryptV2Client {
        /// tls-crypt with the client key.
        kc: Arc<TlsCrypt>,
        /// The client key itself.
        key: Arc<StaticKey>,
        /// The wrapped client key appended to P_CONTROL_HARD_RESET_CLIENT_V3 / WKC_V1.
        wkc: Arc<Vec<u8>>,
    },
}

impl std::fmt::Debug for ControlWrapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ControlWrapping::None => "None",
            ControlWrapping::TlsAuth(..) => "TlsAuth",
            ControlWrapping::TlsCrypt(..) => "TlsCrypt",
            ControlWrapping::TlsCryptV2Client { .. } => "TlsCryptV2Client",
        })
    }
}

impl ControlWrapping {
    fn wrapper(&self) -> Option<&dyn ControlWrap> {
        match self {
            ControlWrapping::None => None,
            ControlWrapping::TlsAuth(a, _) => Some(a.as_ref()),
            ControlWrapping::TlsCrypt(c, _) => Some(c.as_ref()),
            ControlWrapping::TlsCryptV2Client { kc, .. } => Some(kc.as_ref()),
        }
    }

    fn original_key(&self) -> Option<&StaticKey> {
        match self {
            ControlWrapping::None => None,
            ControlWrapping::TlsAuth(_, k) | ControlWrapping::TlsCrypt(_, k) => Some(k),
            ControlWrapping::TlsCryptV2Client { key, .. } => Some(key),
        }
    }

    /// Bytes added to each control packet by the wrapping.
    pub fn overhead(&self) -> usize {
        self.wrapper().map_or(0, |w| w.overhead())
    }
}

/// Timers of the control channel.
#[derive(Clone, Debug)]
pub struct Timers {
    /// Initial retransmit timeout (`tls-timeout`, 2 s).
    pub tls_timeout: Duration,
    /// Time for a key state to complete TLS and key exchange (`hand-window`, 60 s).
    pub hand_window: Duration,
    /// Renegotiate after this long (`reneg-sec`, 3600 s; `None` = never by time).
    pub reneg_sec: Option<Duration>,
    /// How long the previous key keeps decrypting after a renegotiation (`tran-window`).
    pub tran_window: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            tls_timeout: Duration::from_secs(2),
            hand_window: Duration::from_secs(60),
            reneg_sec: Some(Duration::from_secs(3600)),
            tran_window: Duration::from_secs(3600),
        }
    }
}

/// Everything a session needs to know about its side of the connection.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Client or server.
    pub role: Role,
    /// TLS configuration for this role.
    pub tls: TlsConfig,
    /// `verify-x509-name` for the server side (the client checks it inside TLS).
    pub name_check: Option<X509NameCheck>,
    /// Control-channel wrapping.
    pub wrapping: ControlWrapping,
    /// Our OCC options string.
    pub options_string: String,
    /// Peer-info to announce (clients).
    pub peer_info: String,
    /// Username and password for key-method-2 (clients).
    pub credentials: Option<(String, String)>,
    /// Timers.
    pub timers: Timers,
    /// Largest control packet on the wire, including an estimate of IP/UDP headers.
    pub max_packet: usize,
    /// Unix time used in the replay-protection header of tls-auth / tls-crypt.
    pub unix_time: u32,
}

/// How the 256-byte data-channel key block is derived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyDerivation {
    /// RFC 5705 exporter (`tls-ekm`).
    TlsEkm,
    /// The legacy TLS 1.0 PRF over the key-method-2 randoms.
    Prf,
}

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The initial TLS handshake and key exchange did not finish within `hand-window`.
    HandshakeTimeout,
    /// TLS failed (certificate, alert, protocol).
    Tls(String),
    /// The peer broke the control protocol.
    Protocol(String),
    /// Closed on request.
    Local,
}

/// What the client said about itself in its key-method-2 message (server side).
#[derive(Clone, Debug)]
pub struct PeerAuth {
    /// Username (may be empty).
    pub username: String,
    /// Password or auth-token (may be empty).
    pub password: Zeroizing<String>,
    /// Raw peer-info text.
    pub peer_info: String,
    /// The client's OCC options string.
    pub options: String,
    /// Common name of the client certificate, if one was presented.
    pub common_name: Option<String>,
}

/// Events for the layer above.
#[derive(Debug)]
// Events are few (one per key state or message); boxing the 256-byte key block would only
// add an allocation and change the public type.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// (server) A client sent its key-method-2 message; answer with
    /// [`Session::accept_auth`] or [`Session::reject_auth`].
    AuthRequest {
        /// Key state.
        key_id: KeyId,
        /// What the client sent.
        auth: Box<PeerAuth>,
    },
    /// TLS and key exchange of a key state are complete.
    KeyStateActive {
        /// Key state.
        key_id: KeyId,
        /// The peer's key-method-2 options string.
        peer_options: String,
    },
    /// Data-channel keys for a key state.
    KeysReady {
        /// Key ID of data packets using these keys.
        key_id: KeyId,
        /// The 256-byte key block.
        key2: KeyBlock,
    },
    /// A data-channel key may no longer be used (lame duck expired or key state failed).
    KeyRetired {
        /// Key ID.
        key_id: KeyId,
    },
    /// A renegotiation started.
    RenegotiationStarted {
        /// New key ID.
        key_id: KeyId,
    },
    /// A control-channel text message from the peer.
    ControlMessage(String),
    /// A renegotiation failed; the previous key stays in use until it expires.
    RenegotiationFailed {
        /// Key ID of the failed key state.
        key_id: KeyId,
        /// Why.
        reason: String,
    },
    /// The session is over.
    Closed(CloseReason),
}

/// Dropped-packet counters (never logged per packet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlStats {
    /// Packets accepted.
    pub accepted: u64,
    /// Opcode not a control opcode, or wrong direction.
    pub bad_opcode: u64,
    /// tls-auth HMAC / tls-crypt tag failed.
    pub bad_wrap: u64,
    /// Replay check failed.
    pub replay: u64,
    /// Malformed control packet.
    pub malformed: u64,
    /// Session ID did not match.
    pub wrong_session: u64,
    /// No key state for the key ID.
    pub unknown_key_id: u64,
    /// Message outside the receive window.
    pub out_of_window: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthState {
    /// Not decided yet (server) / not applicable (client).
    Pending,
    Accepted,
    Rejected,
}

#[derive(Debug)]
struct KeyState {
    key_id: KeyId,
    send: ReliableSend,
    recv: ReliableRecv,
    acks: AckQueue,
    tls: Option<TlsSession>,
    /// TLS ciphertext not yet cut into control messages.
    tls_out: Vec<u8>,
    /// TLS plaintext received and not yet parsed.
    plain_in: Vec<u8>,
    local_km2: Option<KeyMethod2>,
    remote_km2: Option<KeyMethod2>,
    auth: AuthState,
    started: Instant,
    active_since: Option<Instant>,
    keys_emitted: bool,
    lame_duck_until: Option<Instant>,
    /// Messages waiting for this key state to become active.
    queued_messages: Vec<Vec<u8>>,
    /// Client: TLS starts once the peer's reset has arrived.
    peer_reset_seen: bool,
}

impl KeyState {
    fn new(key_id: KeyId, first_send: u32, first_recv: u32, timers: &Timers, now: Instant) -> Self {
        KeyState {
            key_id,
            send: ReliableSend::new(first_send, timers.tls_timeout),
            recv: ReliableRecv::new(first_recv),
            acks: AckQueue::default(),
            tls: None,
            tls_out: Vec::new(),
            plain_in: Vec::new(),
            local_km2: None,
            remote_km2: None,
            auth: AuthState::Pending,
            started: now,
            active_since: None,
            keys_emitted: false,
            lame_duck_until: None,
            queued_messages: Vec::new(),
            peer_reset_seen: false,
        }
    }

    fn is_active(&self) -> bool {
        self.active_since.is_some()
    }

    /// A server key whose authentication is pending after both key-method-2 messages
    /// (`send_pending_message`): it waits for the decision (the server bounds that wait),
    /// not for the hand-window — neither in `handle_timeout` nor as a `poll_timeout`
    /// deadline (a past deadline that fails nothing would wake the driver in a busy loop).
    fn is_deferred(&self) -> bool {
        self.auth == AuthState::Pending && self.local_km2.is_some() && self.remote_km2.is_some()
    }
}

/// The control session. See the module documentation for the data flow.
pub struct Session {
    cfg: SessionConfig,
    local_sid: SessionId,
    remote_sid: Option<SessionId>,
    replay_counter: u32,
    recv_replay: ReplayWindow,
    dyn_wrap: Option<(TlsCrypt, u32, ReplayWindow)>,
    /// Key states; the last one is the primary, earlier ones are lame ducks.
    keys: Vec<KeyState>,
    events: VecDeque<Event>,
    data_channel: Option<KeyDerivation>,
    resend_wkc: bool,
    early_negotiation: bool,
    /// (server) The reset exchange happened in the stateless cookie gate: any client hard
    /// reset reaching this session is a replay or a stale retransmission.
    reset_done_by_gate: bool,
    stats: ControlStats,
    closed: bool,
    rng: ChaCha20Rng,
    scratch: Vec<u8>,
    base: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.cfg.role)
            .field("local_sid", &self.local_sid)
            .field("remote_sid", &self.remote_sid)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Session {
    fn base(cfg: SessionConfig, now: Instant, seed: [u8; 32]) -> Self {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut sid = [0u8; 8];
        while sid == [0u8; 8] {
            rng.fill_bytes(&mut sid);
        }
        let early = matches!(cfg.wrapping, ControlWrapping::TlsCryptV2Client { .. });
        Session {
            local_sid: SessionId(sid),
            remote_sid: None,
            replay_counter: if early { 0x0f00_0000 } else { 0 },
            recv_replay: ReplayWindow::new(64, 15),
            dyn_wrap: None,
            keys: Vec::new(),
            events: VecDeque::new(),
            data_channel: None,
            resend_wkc: false,
            early_negotiation: early,
            reset_done_by_gate: false,
            stats: ControlStats::default(),
            closed: false,
            rng,
            scratch: Vec::with_capacity(2048),
            base: now,
            cfg,
        }
    }

    /// Starts a client session: queues P_CONTROL_HARD_RESET_CLIENT_V2 (V3 with tls-crypt-v2).
    pub fn new_client(cfg: SessionConfig, now: Instant, seed: [u8; 32]) -> Self {
        let mut s = Session::base(cfg, now, seed);
        let mut ks = KeyState::new(KeyId::ZERO, 0, 0, &s.cfg.timers, now);
        let op = if s.early_negotiation {
            Opcode::HardResetClientV3
        } else {
            Opcode::HardResetClientV2
        };
        ks.send.queue(op, Vec::new());
        s.keys.push(ks);
        s
    }

    /// Starts a server session for a client that passed the stateless cookie check
    /// ([`crate::cookie`]): behaves as if the reset exchange had happened, with our session ID
    /// = the cookie. Process the packet that proved the cookie with
    /// [`Session::handle_datagram`] next.
    pub fn new_server_from_cookie(
        cfg: SessionConfig,
        now: Instant,
        seed: [u8; 32],
        own_sid: SessionId,
        client_sid: SessionId,
    ) -> Result<Self, ControlError> {
        let mut s = Session::base(cfg, now, seed);
        s.local_sid = own_sid;
        s.remote_sid = Some(client_sid);
        s.replay_counter = 1;
        s.early_negotiation = false;
        s.reset_done_by_gate = true;
        let mut ks = KeyState::new(KeyId::ZERO, 1, 1, &s.cfg.timers, now);
        ks.tls = Some(TlsSession::new(&s.cfg.tls, s.cfg.name_check.clone())?);
        ks.peer_reset_seen = true;
        s.keys.push(ks);
        Ok(s)
    }

    /// Starts a server session from a client's hard reset (TCP, or UDP without cookie):
    /// the reset is processed by [`Session::handle_datagram`] next and answered with
    /// P_CONTROL_HARD_RESET_SERVER_V2.
    pub fn new_server(
        cfg: SessionConfig,
        now: Instant,
        seed: [u8; 32],
        client_sid: SessionId,
    ) -> Result<Self, ControlError> {
        let mut s = Session::base(cfg, now, seed);
        s.remote_sid = Some(client_sid);
        s.early_negotiation = false;
        s.replay_counter = 0;
        let mut ks = KeyState::new(KeyId::ZERO, 0, 0, &s.cfg.timers, now);
        ks.tls = Some(TlsSession::new(&s.cfg.tls, s.cfg.name_check.clone())?);
        ks.send.queue(Opcode::HardResetServerV2, Vec::new());
        s.keys.push(ks);
        Ok(s)
    }

    // ----- getters -------------------------------------------------------------------------

    /// Our session ID.
    pub fn local_session_id(&self) -> SessionId {
        self.local_sid
    }

    /// The peer's session ID, once known.
    pub fn remote_session_id(&self) -> Option<SessionId> {
        self.remote_sid
    }

    /// Drop counters.
    pub fn stats(&self) -> ControlStats {
        self.stats
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Key ID of the primary key state.
    pub fn primary_key_id(&self) -> Option<KeyId> {
        self.keys.last().map(|k| k.key_id)
    }

    /// Whether the primary key state is active (TLS and key exchange done).
    pub fn is_active(&self) -> bool {
        self.keys.last().is_some_and(KeyState::is_active)
    }

    /// The role of this session.
    pub fn role(&self) -> Role {
        self.cfg.role
    }

    /// Negotiated TLS parameters of the primary key state, for logs.
    pub fn tls_description(&self) -> Option<String> {
        self.keys.last()?.tls.as_ref().map(TlsSession::describe)
    }

    /// The credentials sent on key exchanges (username, password or auth-token).
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.cfg
            .credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Replaces the credentials sent on the next key exchange (e.g. with an auth-token).
    pub fn set_credentials(&mut self, creds: Option<(String, String)>) {
        self.cfg.credentials = creds;
    }

    /// Replaces the TLS configuration used by the next key states (e.g. a reloaded CRL on
    /// SIGHUP): the running key state is untouched, the next renegotiation uses the new one.
    pub fn set_tls_config(&mut self, tls: TlsConfig) {
        self.cfg.tls = tls;
    }

    // ----- network input ---------------------------------------------------------------------

    /// Processes one control-channel datagram (without TCP length prefix). Data packets
    /// and garbage are dropped and counted.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        if self.closed {
            return;
        }
        let Some(&first) = datagram.first() else {
            self.stats.malformed += 1;
            return;
        };
        let Ok((opcode, key_id)) = openvpn_wire::parse_first_byte(first) else {
            self.stats.bad_opcode += 1;
            return;
        };
        if !opcode.is_control() || !self.direction_ok(opcode) {
            self.stats.bad_opcode += 1;
            return;
        }
        let mut body = datagram;
        if matches!(opcode, Opcode::HardResetClientV3 | Opcode::ControlWkcV1) {
            match openvpn_crypto::split_wkc(datagram) {
                Ok((inner, _wkc)) => body = inner,
                Err(_) => {
                    self.stats.malformed += 1;
                    return;
                }
            }
        }
        let mut plain = std::mem::take(&mut self.scratch);
        let ok = self.unwrap_packet(key_id, body, &mut plain);
        if ok {
            self.process_plain(now, &plain);
        }
        self.scratch = plain;
        self.pump(now);
    }

    fn direction_ok(&self, op: Opcode) -> bool {
        match self.cfg.role {
            Role::Client => !matches!(
                op,
                Opcode::HardResetClientV1
                    | Opcode::HardResetClientV2
                    | Opcode::HardResetClientV3
                    | Opcode::ControlWkcV1
            ),
            Role::Server => !matches!(op, Opcode::HardResetServerV1 | Opcode::HardResetServerV2),
        }
    }

    /// Unwraps into `plain`; returns false (and counts) if the packet must be dropped.
    fn unwrap_packet(&mut self, key_id: KeyId, wire: &[u8], plain: &mut Vec<u8>) -> bool {
        plain.clear();
        let use_dyn = key_id != KeyId::ZERO && self.dyn_wrap.is_some();
        let result = if use_dyn {
            self.dyn_wrap
                .as_ref()
                .map(|(w, _, _)| w.unwrap(wire, plain))
        } else {
            self.cfg.wrapping.wrapper().map(|w| w.unwrap(wire, plain))
        };
        let replay = match result {
            None => {
                plain.extend_from_slice(wire);
                return true;
            }
            Some(Err(_)) => {
                self.stats.bad_wrap += 1;
                return false;
            }
            Some(Ok(r)) => r,
        };
        let window = if use_dyn {
            match self.dyn_wrap.as_mut() {
                Some((_, _, w)) => w,
                None => return false,
            }
        } else {
            &mut self.recv_replay
        };
        if !window.check(replay.id, replay.time) {
            self.stats.replay += 1;
            return false;
        }
        let now_secs = u64::from(self.cfg.unix_time);
        window.mark(replay.id, replay.time, now_secs);
        true
    }

    fn process_plain(&mut self, now: Instant, plain: &[u8]) {
        let Ok(pkt) = ControlPacket::parse(plain) else {
            self.stats.malformed += 1;
            return;
        };
        if self.reset_done_by_gate && pkt.opcode.is_hard_reset() {
            // The gate answered this reset before the session existed (its packet ID is not in
            // our replay window); the client has proved it got the answer.
            self.stats.replay += 1;
            return;
        }
        // Session ID routing.
        match self.remote_sid {
            Some(sid) if sid != pkt.session_id => {
                self.stats.wrong_session += 1;
                return;
            }
            Some(_) => {}
            None => {
                if pkt.opcode == Opcode::HardResetServerV2 && pkt.message_id == Some(0) {
                    self.remote_sid = Some(pkt.session_id);
                } else {
                    self.stats.wrong_session += 1;
                    return;
                }
            }
        }
        if !pkt.acks.is_empty() && pkt.remote_session_id != Some(self.local_sid) {
            self.stats.wrong_session += 1;
            return;
        }
        let Some(idx) = self.key_index_for(now, pkt.opcode, pkt.key_id) else {
            self.stats.unknown_key_id += 1;
            return;
        };
        self.stats.accepted += 1;
        let ks = &mut self.keys[idx];
        for &id in pkt.acks.as_slice() {
            ks.send.ack(id);
        }
        let Some(mid) = pkt.message_id else {
            return;
        };
        if pkt.opcode.is_hard_reset() && mid != 0 {
            return;
        }
        match ks.recv.offer(mid, pkt.opcode, pkt.payload) {
            RecvVerdict::Stored | RecvVerdict::Duplicate => ks.acks.push(mid),
            RecvVerdict::OutOfWindow => self.stats.out_of_window += 1,
        }
        self.drain_received(idx);
    }

    /// Finds (or, for a SOFT_RESET with the next key ID, creates) the key state.
    fn key_index_for(&mut self, now: Instant, opcode: Opcode, key_id: KeyId) -> Option<usize> {
        if let Some(i) = self.keys.iter().rposition(|k| k.key_id == key_id) {
            return Some(i);
        }
        let primary = self.keys.last()?;
        if opcode == Opcode::SoftResetV1 && key_id == primary.key_id.next() && primary.keys_emitted
        {
            self.start_key_state(now, key_id, false);
            return Some(self.keys.len() - 1);
        }
        None
    }

    /// Feeds in-order messages of key state `idx` to TLS.
    fn drain_received(&mut self, idx: usize) {
        let role = self.cfg.role;
        while let Some((_, op, payload)) = self.keys[idx].recv.pop() {
            match op {
                Opcode::HardResetServerV2
                | Opcode::HardResetClientV2
                | Opcode::HardResetClientV3 => {
                    if role == Role::Client {
                        match openvpn_wire::parse_early_neg_flags(&payload) {
                            Ok(flags) => {
                                self.resend_wkc = flags & openvpn_wire::EARLY_NEG_RESEND_WKC != 0
                                    && matches!(
                                        self.cfg.wrapping,
                                        ControlWrapping::TlsCryptV2Client { .. }
                                    );
                            }
                            Err(e) => {
                                self.close(CloseReason::Protocol(format!(
                                    "bad early-negotiation data in server reset: {e}"
                                )));
                                return;
                            }
                        }
                    }
                    self.keys[idx].peer_reset_seen = true;
                }
                Opcode::SoftResetV1 => self.keys[idx].peer_reset_seen = true,
                Opcode::ControlV1 | Opcode::ControlWkcV1 => {
                    let ks = &mut self.keys[idx];
                    let Some(tls) = ks.tls.as_mut() else {
                        continue;
                    };
                    if let Err(e) = tls.read_tls(&payload) {
                        // Flush the alert rustls wants to send before failing the key state.
                        tls.take_tls(&mut ks.tls_out);
                        self.fail_key_state(idx, e.to_string());
                        return;
                    }
                }
                _ => {}
            }
        }
    }

    // ----- the engine: move bytes between TLS, key exchange and the reliable layer --------

    fn pump(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        let mut i = 0;
        while i < self.keys.len() {
            let before = self.keys.len();
            self.pump_key_state(now, i);
            if self.keys.len() < before || self.closed {
                // A key state was removed; restart conservatively.
                if self.closed {
                    return;
                }
                continue;
            }
            i += 1;
        }
    }

    fn pump_key_state(&mut self, now: Instant, idx: usize) {
        let role = self.cfg.role;
        // Client: TLS starts once the peer's reset has arrived.
        if role == Role::Client && self.keys[idx].tls.is_none() && self.keys[idx].peer_reset_seen {
            match TlsSession::new(&self.cfg.tls, None) {
                Ok(t) => self.keys[idx].tls = Some(t),
                Err(e) => {
                    self.fail_key_state(idx, e.to_string());
                    return;
                }
            }
        }
        // Client: key-method-2 once the handshake is done.
        let needs_km2 = {
            let ks = &self.keys[idx];
            role == Role::Client
                && ks.local_km2.is_none()
                && ks.tls.as_ref().is_some_and(|t| !t.is_handshaking())
        };
        if needs_km2 {
            let km2 = self.make_km2();
            if let Err(e) = self.write_km2(idx, km2) {
                self.fail_key_state(idx, e.to_string());
                return;
            }
        }
        // Read TLS plaintext.
        {
            let ks = &mut self.keys[idx];
            if let Some(tls) = ks.tls.as_mut() {
                tls.read_plaintext(&mut ks.plain_in);
            }
        }
        if self.keys[idx].remote_km2.is_none() && !self.keys[idx].plain_in.is_empty() {
            match KeyMethod2::parse(&self.keys[idx].plain_in, role == Role::Server) {
                Ok((km2, used)) => {
                    self.keys[idx].plain_in.drain(..used);
                    self.on_remote_km2(idx, km2);
                    if self.closed || idx >= self.keys.len() {
                        return;
                    }
                }
                Err(openvpn_wire::WireError::Truncated) => {}
                Err(e) => {
                    self.fail_key_state(idx, format!("bad key-method-2 message: {e}"));
                    return;
                }
            }
        }
        // Control messages after key exchange.
        if self.keys[idx].remote_km2.is_some() {
            let ks = &mut self.keys[idx];
            while let Some(pos) = ks.plain_in.iter().position(|&b| b == 0) {
                let raw: Vec<u8> = ks.plain_in.drain(..=pos).collect();
                let text = String::from_utf8_lossy(&raw[..pos]);
                let text = text.trim_end_matches(['\r', '\n']);
                if text.bytes().all(|b| (0x20..0x7f).contains(&b)) && !text.is_empty() {
                    self.events
                        .push_back(Event::ControlMessage(text.to_owned()));
                }
            }
        }
        self.check_active(now, idx);
        // Move TLS ciphertext into reliable messages.
        let max_payload = self.max_payload();
        let wkc_len = self.wkc_len();
        let ks = &mut self.keys[idx];
        if let Some(tls) = ks.tls.as_mut() {
            tls.take_tls(&mut ks.tls_out);
        }
        while !ks.tls_out.is_empty() && ks.send.can_queue() {
            let wkc_first = self.resend_wkc && ks.key_id == KeyId::ZERO && ks.send.next_id() == 1;
            let limit = if wkc_first {
                max_payload.saturating_sub(wkc_len).max(64)
            } else {
                max_payload
            };
            let n = ks.tls_out.len().min(limit);
            let chunk: Vec<u8> = ks.tls_out.drain(..n).collect();
            let op = if wkc_first {
                Opcode::ControlWkcV1
            } else {
                Opcode::ControlV1
            };
            ks.send.queue(op, chunk);
        }
        // Early negotiation: an ACK alone must still travel as WKC_V1 (mid 1).
        if self.resend_wkc
            && ks.key_id == KeyId::ZERO
            && ks.send.next_id() == 1
            && ks.peer_reset_seen
            && ks.acks.has_pending()
            && ks.tls_out.is_empty()
        {
            ks.send.queue(Opcode::ControlWkcV1, Vec::new());
        }
    }

    fn max_payload(&self) -> usize {
        // IPv6+UDP estimate, wrapping, op+sid, ACK block of 4, message ID.
        let overhead = 48 + self.cfg.wrapping.overhead().max(49) + 9 + (1 + 16 + 8) + 4;
        self.cfg.max_packet.saturating_sub(overhead).max(100)
    }

    fn wkc_len(&self) -> usize {
        match &self.cfg.wrapping {
            ControlWrapping::TlsCryptV2Client { wkc, .. } => wkc.len(),
            _ => 0,
        }
    }

    fn make_km2(&mut self) -> KeyMethod2 {
        let mut r1 = [0u8; 32];
        let mut r2 = [0u8; 32];
        self.rng.fill_bytes(&mut r1);
        self.rng.fill_bytes(&mut r2);
        let pre_master = (self.cfg.role == Role::Client).then(|| {
            let mut pm = [0u8; 48];
            self.rng.fill_bytes(&mut pm);
            pm
        });
        let (username, password) = match (&self.cfg.role, &self.cfg.credentials) {
            (Role::Client, Some((u, p))) => (u.clone(), p.clone()),
            _ => (String::new(), String::new()),
        };
        KeyMethod2 {
            pre_master,
            random1: r1,
            random2: r2,
            options: self.cfg.options_string.clone(),
            username,
            password,
            peer_info: if self.cfg.role == Role::Client {
                self.cfg.peer_info.clone()
            } else {
                String::new()
            },
        }
    }

    fn write_km2(&mut self, idx: usize, km2: KeyMethod2) -> Result<(), ControlError> {
        let mut bytes = Zeroizing::new(Vec::with_capacity(512));
        km2.emit(&mut bytes);
        let ks = &mut self.keys[idx];
        let tls = ks
            .tls
            .as_mut()
            .ok_or_else(|| ControlError::Protocol("no TLS session".into()))?;
        tls.write_plaintext(&bytes)?;
        ks.local_km2 = Some(km2);
        Ok(())
    }

    fn on_remote_km2(&mut self, idx: usize, km2: KeyMethod2) {
        let ks = &mut self.keys[idx];
        match self.cfg.role {
            Role::Client => {
                ks.auth = AuthState::Accepted;
                ks.remote_km2 = Some(km2);
            }
            Role::Server => {
                let tls = ks.tls.as_ref();
                if !tls.is_some_and(TlsSession::peer_name_ok) {
                    self.fail_key_state(idx, "peer certificate fails verify-x509-name".into());
                    return;
                }
                let auth = PeerAuth {
                    username: km2.username.clone(),
                    password: Zeroizing::new(km2.password.clone()),
                    peer_info: km2.peer_info.clone(),
                    options: km2.options.clone(),
                    common_name: tls.and_then(TlsSession::peer_common_name),
                };
                let key_id = ks.key_id;
                ks.remote_km2 = Some(km2);
                self.events.push_back(Event::AuthRequest {
                    key_id,
                    auth: Box::new(auth),
                });
            }
        }
    }

    fn check_active(&mut self, now: Instant, idx: usize) {
        let ks = &mut self.keys[idx];
        if ks.is_active()
            || ks.local_km2.is_none()
            || ks.remote_km2.is_none()
            || ks.auth == AuthState::Pending
        {
            return;
        }
        ks.active_since = Some(now);
        let peer_options = ks
            .remote_km2
            .as_ref()
            .map(|k| k.options.clone())
            .unwrap_or_default();
        let key_id = ks.key_id;
        let queued = std::mem::take(&mut ks.queued_messages);
        for m in queued {
            if let Some(tls) = ks.tls.as_mut() {
                let _ = tls.write_plaintext(&m);
            }
        }
        self.events.push_back(Event::KeyStateActive {
            key_id,
            peer_options,
        });
        self.emit_keys(idx);
    }

    fn emit_keys(&mut self, idx: usize) {
        let Some(method) = self.data_channel else {
            return;
        };
        let ks = &self.keys[idx];
        if ks.keys_emitted || !ks.is_active() || ks.auth != AuthState::Accepted {
            return;
        }
        let key2 = match method {
            KeyDerivation::TlsEkm => {
                let mut out = [0u8; 256];
                let Some(tls) = ks.tls.as_ref() else { return };
                if let Err(e) = tls.export(DATAKEYS_LABEL, &mut out) {
                    self.fail_key_state(idx, e.to_string());
                    return;
                }
                let k = KeyBlock::from_bytes(out);
                out.fill(0);
                k
            }
            KeyDerivation::Prf => {
                let (Some(local), Some(remote)) = (&ks.local_km2, &ks.remote_km2) else {
                    return;
                };
                let (client, server) = match self.cfg.role {
                    Role::Client => (local, remote),
                    Role::Server => (remote, local),
                };
                let Some(remote_sid) = self.remote_sid else {
                    return;
                };
                let (csid, ssid) = match self.cfg.role {
                    Role::Client => (self.local_sid, remote_sid),
                    Role::Server => (remote_sid, self.local_sid),
                };
                let Some(pm) = client.pre_master.as_ref() else {
                    self.fail_key_state(idx, "client key exchange lacks pre_master".into());
                    return;
                };
                openvpn_crypto::derive_key2_prf(
                    pm,
                    &client.random1,
                    &client.random2,
                    &server.random1,
                    &server.random2,
                    &csid.0,
                    &ssid.0,
                )
            }
        };
        let key_id = ks.key_id;
        self.keys[idx].keys_emitted = true;
        self.events.push_back(Event::KeysReady { key_id, key2 });
    }

    fn fail_key_state(&mut self, idx: usize, reason: String) {
        let key_id = self.keys[idx].key_id;
        let was_initial =
            key_id == KeyId::ZERO && !self.keys[idx].keys_emitted && self.keys.len() == 1;
        if was_initial {
            self.close(CloseReason::Tls(reason));
            return;
        }
        let ks = self.keys.remove(idx);
        if ks.keys_emitted {
            self.events.push_back(Event::KeyRetired { key_id });
        }
        self.events
            .push_back(Event::RenegotiationFailed { key_id, reason });
    }

    fn close(&mut self, reason: CloseReason) {
        if !self.closed {
            self.closed = true;
            self.events.push_back(Event::Closed(reason));
        }
    }

    fn start_key_state(&mut self, now: Instant, key_id: KeyId, initiator: bool) {
        let tran = self.cfg.timers.tran_window;
        if let Some(old) = self.keys.last_mut() {
            old.lame_duck_until = Some(now + tran);
        }
        // Only one lame duck: drop older ones.
        while self.keys.len() > 1 {
            let gone = self.keys.remove(0);
            if gone.keys_emitted {
                self.events.push_back(Event::KeyRetired {
                    key_id: gone.key_id,
                });
            }
        }
        let mut ks = KeyState::new(key_id, 0, 0, &self.cfg.timers, now);
        ks.send.queue(Opcode::SoftResetV1, Vec::new());
        ks.peer_reset_seen = false;
        if self.cfg.role == Role::Server {
            match TlsSession::new(&self.cfg.tls, self.cfg.name_check.clone()) {
                Ok(t) => ks.tls = Some(t),
                Err(e) => {
                    self.events.push_back(Event::RenegotiationFailed {
                        key_id,
                        reason: e.to_string(),
                    });
                    return;
                }
            }
        }
        let _ = initiator;
        self.keys.push(ks);
        self.events
            .push_back(Event::RenegotiationStarted { key_id });
    }

    // ----- commands ------------------------------------------------------------------------

    /// (server) Accepts the client's authentication for `key_id` and answers with our
    /// key-method-2 message.
    pub fn accept_auth(&mut self, now: Instant, key_id: KeyId) {
        self.decide_auth(now, key_id, None);
    }

    /// (server) Rejects the client: completes the key exchange, then sends
    /// `AUTH_FAILED[,reason]`. No data keys are produced for this key state.
    pub fn reject_auth(&mut self, now: Instant, key_id: KeyId, reason: Option<&str>) {
        self.decide_auth(now, key_id, Some(reason.unwrap_or("")));
    }

    fn decide_auth(&mut self, now: Instant, key_id: KeyId, reject: Option<&str>) {
        let Some(idx) = self.keys.iter().rposition(|k| k.key_id == key_id) else {
            return;
        };
        if self.keys[idx].auth != AuthState::Pending {
            return;
        }
        // Our key-method-2 may already be out (a pending decision, `send_pending_message`).
        if self.keys[idx].local_km2.is_none() {
            let km2 = self.make_km2();
            if let Err(e) = self.write_km2(idx, km2) {
                self.fail_key_state(idx, e.to_string());
                return;
            }
        }
        match reject {
            None => self.keys[idx].auth = AuthState::Accepted,
            Some(reason) => {
                self.keys[idx].auth = AuthState::Rejected;
                let msg = if reason.is_empty() {
                    "AUTH_FAILED".to_owned()
                } else {
                    format!("AUTH_FAILED,{reason}")
                };
                if let Some(tls) = self.keys[idx].tls.as_mut() {
                    let mut bytes = msg.into_bytes();
                    bytes.push(0);
                    let _ = tls.write_plaintext(&bytes);
                }
            }
        }
        self.pump(now);
    }

    /// (server) Sends a control message on key state `key_id` while its authentication is
    /// undecided (`AUTH_PENDING`, `INFO_PRE,…`): our key-method-2 goes out first so the client
    /// completes its key exchange and reads the message; the key state stays inactive (no
    /// data keys) until [`Session::accept_auth`] / [`Session::reject_auth`]. A decided key
    /// state sends it like [`Session::send_message`].
    pub fn send_pending_message(
        &mut self,
        now: Instant,
        key_id: KeyId,
        msg: &str,
    ) -> Result<(), ControlError> {
        let Some(idx) = self.keys.iter().rposition(|k| k.key_id == key_id) else {
            return Err(ControlError::Protocol("no such key state".into()));
        };
        if self.cfg.role != Role::Server || self.keys[idx].auth != AuthState::Pending {
            return self.send_message(now, msg);
        }
        if msg.len() > MAX_CONTROL_MESSAGE || msg.contains('\0') {
            return Err(ControlError::Protocol(format!(
                "control message too long or contains NUL ({} bytes)",
                msg.len()
            )));
        }
        if self.keys[idx].local_km2.is_none() {
            let km2 = self.make_km2();
            self.write_km2(idx, km2)?;
        }
        let mut bytes = msg.as_bytes().to_vec();
        bytes.push(0);
        if let Some(tls) = self.keys[idx].tls.as_mut() {
            tls.write_plaintext(&bytes)?;
        }
        self.pump(now);
        Ok(())
    }

    /// Sends a control-channel text message on the primary key state (queued until it is
    /// active). Messages longer than 2047 bytes are refused.
    pub fn send_message(&mut self, now: Instant, msg: &str) -> Result<(), ControlError> {
        if msg.len() > MAX_CONTROL_MESSAGE || msg.contains('\0') {
            return Err(ControlError::Protocol(format!(
                "control message too long or contains NUL ({} bytes)",
                msg.len()
            )));
        }
        let mut bytes = msg.as_bytes().to_vec();
        bytes.push(0);
        let Some(ks) = self.keys.iter_mut().rev().find(|k| k.is_active()) else {
            match self.keys.last_mut() {
                Some(ks) => ks.queued_messages.push(bytes),
                None => return Err(ControlError::Protocol("no key state".into())),
            }
            return Ok(());
        };
        if let Some(tls) = ks.tls.as_mut() {
            tls.write_plaintext(&bytes)?;
        }
        self.pump(now);
        Ok(())
    }

    /// Fixes how data-channel keys are derived (after push / NCP) and emits
    /// [`Event::KeysReady`] for every active key state.
    pub fn enable_data_channel(&mut self, method: KeyDerivation) {
        self.data_channel = Some(method);
        for i in 0..self.keys.len() {
            self.emit_keys(i);
        }
    }

    /// Switches renegotiations (key_id > 0) to dynamic tls-crypt, derived from the key_id 0
    /// TLS session (`protocol-flags dyn-tls-crypt`).
    pub fn enable_dyn_tls_crypt(&mut self) -> Result<(), ControlError> {
        let ks = self
            .keys
            .iter()
            .find(|k| k.key_id == KeyId::ZERO)
            .ok_or_else(|| ControlError::Protocol("dynamic tls-crypt needs key state 0".into()))?;
        let tls = ks
            .tls
            .as_ref()
            .ok_or_else(|| ControlError::Protocol("no TLS session".into()))?;
        let mut k = Zeroizing::new([0u8; 256]);
        tls.export(DYN_TLS_CRYPT_LABEL, k.as_mut())?;
        if let Some(orig) = self.cfg.wrapping.original_key() {
            for (a, b) in k.iter_mut().zip(orig.as_bytes().iter()) {
                *a ^= b;
            }
        }
        let key = StaticKey::from_bytes(*k);
        let wrap = TlsCrypt::new(&key, self.cfg.role);
        self.dyn_wrap = Some((wrap, 0, ReplayWindow::new(64, 15)));
        Ok(())
    }

    /// Starts a renegotiation now (e.g. `reneg-bytes` / `reneg-pkts` reached), if the primary
    /// key state has data keys and no renegotiation is running.
    pub fn renegotiate(&mut self, now: Instant) {
        let Some(p) = self.keys.last() else { return };
        if !p.keys_emitted || self.closed {
            return;
        }
        let next = p.key_id.next();
        self.start_key_state(now, next, true);
        self.pump(now);
    }

    /// Closes the session (no further output).
    pub fn shutdown(&mut self) {
        self.close(CloseReason::Local);
    }

    /// Whether every reliable control message we sent has been acknowledged (e.g. a
    /// `RESTART` before the server drops a killed client).
    pub fn all_acked(&self) -> bool {
        self.keys.iter().all(|k| k.send.all_acked())
    }

    // ----- output ---------------------------------------------------------------------------

    /// The next datagram to send, if any. Call until it returns `None` after every input.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.closed {
            return None;
        }
        for idx in (0..self.keys.len()).rev() {
            if let Some(p) = self.build_packet(now, idx) {
                return Some(p);
            }
        }
        None
    }

    fn build_packet(&mut self, now: Instant, idx: usize) -> Option<Vec<u8>> {
        let remote = self.remote_sid;
        let local = self.local_sid;
        let ks = &mut self.keys[idx];
        let key_id = ks.key_id;
        let mut acks = AckList::new();
        let mut plain = Vec::with_capacity(1300);
        let opcode;
        if let Some(msg) = ks.send.next_due(now) {
            if remote.is_some() {
                ks.acks.fill(&mut acks, 4);
            }
            opcode = msg.opcode;
            let pkt = ControlPacket {
                opcode,
                key_id,
                session_id: local,
                remote_session_id: if acks.is_empty() { None } else { remote },
                acks,
                message_id: Some(msg.id),
                payload: msg.payload,
            };
            pkt.emit_to_vec(&mut plain);
        } else if ks.acks.has_pending() && remote.is_some() {
            ks.acks.fill(&mut acks, openvpn_wire::MAX_ACKS);
            opcode = Opcode::AckV1;
            let pkt = ControlPacket {
                opcode,
                key_id,
                session_id: local,
                remote_session_id: remote,
                acks,
                message_id: None,
                payload: &[],
            };
            pkt.emit_to_vec(&mut plain);
        } else {
            return None;
        }
        Some(self.wrap(key_id, opcode, &plain))
    }

    fn wrap(&mut self, key_id: KeyId, opcode: Opcode, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + 64);
        let time = self.cfg.unix_time;
        if key_id != KeyId::ZERO {
            if let Some((w, counter, _)) = self.dyn_wrap.as_mut() {
                *counter = counter.wrapping_add(1).max(1);
                w.wrap(plain, ReplayId { id: *counter, time }, &mut out);
                return out;
            }
        }
        match self.cfg.wrapping.wrapper() {
            None => out.extend_from_slice(plain),
            Some(w) => {
                self.replay_counter = self.replay_counter.wrapping_add(1).max(1);
                w.wrap(
                    plain,
                    ReplayId {
                        id: self.replay_counter,
                        time,
                    },
                    &mut out,
                );
            }
        }
        if let ControlWrapping::TlsCryptV2Client { wkc, .. } = &self.cfg.wrapping {
            if matches!(opcode, Opcode::HardResetClientV3 | Opcode::ControlWkcV1) {
                out.extend_from_slice(wkc);
            }
        }
        out
    }

    /// When [`Session::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let mut t: Option<Instant> = None;
        let mut consider = |x: Instant| t = Some(t.map_or(x, |y| y.min(x)));
        let timers = &self.cfg.timers;
        for (i, ks) in self.keys.iter().enumerate() {
            if let Some(x) = ks.send.next_timeout() {
                consider(x);
            }
            if !ks.is_active() && !ks.is_deferred() {
                consider(ks.started + timers.hand_window);
            }
            if let Some(x) = ks.lame_duck_until {
                consider(x);
            }
            let primary = i + 1 == self.keys.len();
            if primary && ks.keys_emitted {
                if let (Some(r), Some(a)) = (timers.reneg_sec, ks.active_since) {
                    consider(a + r);
                }
            }
        }
        t
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        let hand = self.cfg.timers.hand_window;
        let mut idx = 0;
        while idx < self.keys.len() {
            let ks = &self.keys[idx];
            // A server key whose authentication is pending after both key-method-2 messages
            // (`send_pending_message`) waits for the decision, not for the hand-window.
            if !ks.is_active() && !ks.is_deferred() && now >= ks.started + hand {
                let reason = format!(
                    "TLS key negotiation failed to occur within {} seconds",
                    hand.as_secs()
                );
                if ks.key_id == KeyId::ZERO && self.keys.len() == 1 {
                    self.close(CloseReason::HandshakeTimeout);
                    return;
                }
                self.fail_key_state(idx, reason);
                continue;
            }
            if ks.lame_duck_until.is_some_and(|t| now >= t) {
                let gone = self.keys.remove(idx);
                if gone.keys_emitted {
                    self.events.push_back(Event::KeyRetired {
                        key_id: gone.key_id,
                    });
                }
                continue;
            }
            idx += 1;
        }
        if let Some(p) = self.keys.last() {
            if let (Some(r), Some(a)) = (self.cfg.timers.reneg_sec, p.active_since) {
                if p.keys_emitted && p.lame_duck_until.is_none() && now >= a + r {
                    self.renegotiate(now);
                }
            }
        }
        self.pump(now);
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Seconds since the session was created (for logs).
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.base)
    }
}
