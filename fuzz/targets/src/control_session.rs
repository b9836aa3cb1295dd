//! Control sessions fed with hostile input. Never panics; outputs stay within the packet
//! size; when both ends of a pair derive data keys for key 0 they are the same.
//!
//! ```text
//! byte 0 % 4: 0 server alone, 1 client alone, 2 | 3 client ↔ server pair
//! byte 0 / 4 % 3: wrapping none, tls-auth, tls-crypt (fixed key)
//! alone: records  op(1) [len(2) bytes]
//!        op % 4 = 0 raw datagram, 1 time step + timers, 2 command, 3 datagram built as a
//!        valid control packet for this session (wrapped with the peer's key)
//! pair:  one byte per step: deliver / drop / duplicate / bit-flip / time / inject
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use openvpn_control::client::{ClientEvent, ClientPolicy, ClientSession};
use openvpn_control::cookie::{CookieGate, GateVerdict, ServerWrapping};
use openvpn_control::server::{ServerEvent, ServerPolicy, ServerSession};
use openvpn_control::tls::{TlsConfig, TlsCredentials};
use openvpn_control::{ControlWrapping, KeyDerivation, Session, SessionConfig, Timers};
use openvpn_crypto::{
    ControlWrap, DigestKind, KeyDirection, ReplayId, Role, StaticKey, TlsAuth, TlsCrypt,
};
use openvpn_wire::{AckList, ControlPacket, KeyId, Opcode, SessionId};

/// Largest control datagram a session may emit with this configuration.
const MAX_PACKET: usize = 1250;
const CLIENT_SID: SessionId = SessionId([1, 2, 3, 4, 5, 6, 7, 8]);
const SERVER_SID: SessionId = SessionId([8, 7, 6, 5, 4, 3, 2, 1]);
const UNIX: u32 = 1_700_000_000;
/// Steps per input, so that one run stays in the millisecond range.
const MAX_STEPS: usize = 400;

struct Fixture {
    client_tls: TlsConfig,
    server_tls: TlsConfig,
    key: Arc<StaticKey>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let ca = include_str!("../../data/ca.pem").to_owned();
        let creds = |cert: &str, key: &str| TlsCredentials {
            ca_pem: ca.clone(),
            cert_pem: Some(cert.to_owned()),
            key_pem: Some(key.to_owned()),
            ..Default::default()
        };
        let client = creds(
            include_str!("../../data/client.pem"),
            include_str!("../../data/client.key"),
        );
        let server = creds(
            include_str!("../../data/server.pem"),
            include_str!("../../data/server.key"),
        );
        let mut k = [0u8; 256];
        for (i, b) in k.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        Fixture {
            client_tls: TlsConfig::client(&client).expect("fixed client PKI loads"),
            server_tls: TlsConfig::server(&server, false).expect("fixed server PKI loads"),
            key: Arc::new(StaticKey::from_bytes(k)),
        }
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Wrap {
    None,
    TlsAuth,
    TlsCrypt,
}

fn control_wrapping(wrap: Wrap, role: Role) -> ControlWrapping {
    let key = fixture().key.clone();
    let dir = match role {
        Role::Server => KeyDirection::Normal,
        Role::Client => KeyDirection::Inverse,
    };
    match wrap {
        Wrap::None => ControlWrapping::None,
        Wrap::TlsAuth => ControlWrapping::TlsAuth(
            Arc::new(TlsAuth::new(&key, dir, DigestKind::Sha1).expect("sha1 tls-auth")),
            key,
        ),
        Wrap::TlsCrypt => ControlWrapping::TlsCrypt(Arc::new(TlsCrypt::new(&key, role)), key),
    }
}

fn server_wrapping(wrap: Wrap) -> ServerWrapping {
    match control_wrapping(wrap, Role::Server) {
        ControlWrapping::TlsAuth(a, k) => ServerWrapping::TlsAuth(a, k),
        ControlWrapping::TlsCrypt(c, k) => ServerWrapping::TlsCrypt(c, k),
        _ => ServerWrapping::None,
    }
}

/// What the peer of `role` would use to wrap packets towards it.
fn peer_wrapper(wrap: Wrap, role: Role) -> Option<Box<dyn ControlWrap>> {
    let key = &fixture().key;
    match wrap {
        Wrap::None => None,
        Wrap::TlsAuth => {
            let dir = match role {
                Role::Server => KeyDirection::Inverse,
                Role::Client => KeyDirection::Normal,
            };
            Some(Box::new(
                TlsAuth::new(key, dir, DigestKind::Sha1).expect("sha1 tls-auth"),
            ))
        }
        Wrap::TlsCrypt => {
            let peer = match role {
                Role::Server => Role::Client,
                Role::Client => Role::Server,
            };
            Some(Box::new(TlsCrypt::new(key, peer)))
        }
    }
}

fn config(role: Role, wrap: Wrap) -> SessionConfig {
    let f = fixture();
    SessionConfig {
        role,
        tls: match role {
            Role::Client => f.client_tls.clone(),
            Role::Server => f.server_tls.clone(),
        },
        name_check: None,
        wrapping: control_wrapping(wrap, role),
        options_string: "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,cipher AES-256-GCM,auth SHA1,keysize 256,key-method 2".into(),
        peer_info: "IV_VER=2.6.14\nIV_PLAT=linux\nIV_PROTO=990\nIV_CIPHERS=AES-256-GCM:CHACHA20-POLY1305\nIV_MTU=1600\n".into(),
        credentials: Some(("user".into(), "pass".into())),
        timers: Timers {
            reneg_sec: Some(Duration::from_secs(20)),
            tran_window: Duration::from_secs(10),
            ..Timers::default()
        },
        max_packet: MAX_PACKET,
        unix_time: UNIX,
    }
}

fn client_policy() -> ClientPolicy {
    ClientPolicy {
        ciphers: vec!["AES-256-GCM".into(), "CHACHA20-POLY1305".into()],
        fallback: None,
        pull_filter: vec![],
        route_nopull: false,
        allow_compression: Default::default(),
    }
}

fn server_policy() -> ServerPolicy {
    ServerPolicy {
        ciphers: vec!["AES-256-GCM".into(), "CHACHA20-POLY1305".into()],
        fallback: None,
        push: vec!["ping 10".into(), "ping-restart 60".into()],
        dyn_tls_crypt: true,
        tun_mtu: Some(1500),
    }
}

/// Client or server behind one interface.
enum Peer {
    Client(Box<ClientSession>),
    Server(Box<ServerSession>),
}

impl Peer {
    fn session(&self) -> &Session {
        match self {
            Peer::Client(c) => c.session(),
            Peer::Server(s) => s.session(),
        }
    }

    fn session_mut(&mut self) -> &mut Session {
        match self {
            Peer::Client(c) => c.session_mut(),
            Peer::Server(s) => s.session_mut(),
        }
    }

    fn handle_datagram(&mut self, now: Instant, d: &[u8]) {
        match self {
            Peer::Client(c) => c.handle_datagram(now, d),
            Peer::Server(s) => s.handle_datagram(now, d),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Peer::Client(c) => c.handle_timeout(now),
            Peer::Server(s) => s.handle_timeout(now),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Peer::Client(c) => c.poll_timeout(),
            Peer::Server(s) => s.poll_timeout(),
        }
    }

    /// Drains transmits and events; answers authentication (`reject` decides how). Returns
    /// the datagrams and the key block of key 0, if it appeared.
    fn drain(&mut self, now: Instant, reject: bool, key0: &mut Option<[u8; 256]>) -> Vec<Vec<u8>> {
        let mut out = vec![];
        for _ in 0..64 {
            let mut progressed = false;
            match self {
                Peer::Client(c) => {
                    while let Some(ev) = c.poll_event() {
                        progressed = true;
                        if let ClientEvent::KeysReady { key_id, key2, .. } = ev
                            && key_id == KeyId::ZERO
                        {
                            *key0 = Some(*key2.as_bytes());
                        }
                    }
                    while let Some(p) = c.poll_transmit(now) {
                        progressed = true;
                        out.push(p);
                    }
                }
                Peer::Server(s) => {
                    while let Some(ev) = s.poll_event() {
                        progressed = true;
                        match ev {
                            ServerEvent::Authenticate { key_id, .. } => {
                                if reject {
                                    s.reject(now, key_id, Some("fuzz"));
                                } else {
                                    s.accept(
                                        now,
                                        key_id,
                                        vec!["ifconfig 10.8.0.2 255.255.255.0".into()],
                                    );
                                }
                            }
                            ServerEvent::KeysReady { key_id, key2, .. }
                                if key_id == KeyId::ZERO =>
                            {
                                *key0 = Some(*key2.as_bytes());
                            }
                            _ => {}
                        }
                    }
                    while let Some(p) = s.poll_transmit(now) {
                        progressed = true;
                        out.push(p);
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        for p in &out {
            assert!(
                !p.is_empty() && p.len() <= MAX_PACKET,
                "control datagram of {} bytes",
                p.len()
            );
        }
        out
    }
}

/// Splits the input into records.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn bytes(&mut self) -> &'a [u8] {
        let hi = self.byte().unwrap_or(0);
        let lo = self.byte().unwrap_or(0);
        let n = (usize::from(hi) << 8 | usize::from(lo)).min(self.data.len());
        let (b, rest) = self.data.split_at(n);
        self.data = rest;
        b
    }
}

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let wrap = match (mode / 4) % 3 {
        0 => Wrap::None,
        1 => Wrap::TlsAuth,
        _ => Wrap::TlsCrypt,
    };
    let reject = mode & 0x80 != 0;
    match mode % 4 {
        0 => alone(Role::Server, wrap, reject, rest),
        1 => alone(Role::Client, wrap, reject, rest),
        _ => pair(wrap, reject, rest),
    }
}

/// Plain (unwrapped) control packets of a complete client ↔ server handshake.
pub fn seed_packets() -> Vec<Vec<u8>> {
    let mut rec = vec![];
    pair_recorded(Wrap::None, false, &[], &mut rec);
    rec.into_iter().map(|(_, p)| p).collect()
}

/// Key-method-2 messages in the `wire_km2` input format (direction byte first).
pub fn seed_km2() -> Vec<Vec<u8>> {
    let client = openvpn_wire::KeyMethod2 {
        pre_master: Some([0x11; 48]),
        random1: [0x22; 32],
        random2: [0x33; 32],
        options: config(Role::Client, Wrap::None).options_string,
        username: "user".into(),
        password: "pass".into(),
        peer_info: config(Role::Client, Wrap::None).peer_info,
    };
    let server = openvpn_wire::KeyMethod2 {
        pre_master: None,
        username: String::new(),
        password: String::new(),
        peer_info: String::new(),
        ..client.clone()
    };
    let mut a = vec![1u8];
    client.emit(&mut a);
    let mut b = vec![0u8];
    server.emit(&mut b);
    vec![a, b]
}

/// Inputs for this target: pair schedules, and real TLS records of a handshake sent to a
/// lone server or client as forged (correctly addressed) control packets.
pub fn seed_inputs() -> Vec<Vec<u8>> {
    let mut out = vec![];
    for mode in [2u8, 3, 6, 10, 0x82] {
        out.push(vec![mode]);
        // a lossy start, then the fair schedule
        out.push(vec![
            mode,
            0,
            2,
            1,
            6,
            0,
            1,
            3,
            6 | 16,
            0,
            1,
            4,
            0,
            1,
            5,
            9,
            1,
        ]);
    }
    let mut rec = vec![];
    pair_recorded(Wrap::None, false, &[], &mut rec);
    for (role_mode, towards_server) in [(0u8, true), (1u8, false)] {
        for wrap_mode in [0u8, 4, 8] {
            let mut s = vec![role_mode | wrap_mode];
            if !towards_server {
                // the server's reset: HardResetServerV2 (sel 3), ACK of 0, mid 0
                s.extend_from_slice(&[3 | 3 << 2, 0, 7, 1, 0, 0, 0, 0, 0, 0]);
            }
            for (to_server, p) in &rec {
                let Ok(pkt) = ControlPacket::parse(p) else {
                    continue;
                };
                if *to_server != towards_server || pkt.opcode != Opcode::ControlV1 {
                    continue;
                }
                let mut d = vec![0u8, 0, 0, 0, 0, 0, pkt.message_id.unwrap_or(0) as u8];
                d.extend_from_slice(pkt.payload);
                s.push(3);
                s.extend_from_slice(&(d.len() as u16).to_be_bytes());
                s.extend_from_slice(&d);
                s.push(1 | 4 << 2);
            }
            out.push(s);
        }
    }
    out
}

fn alone(role: Role, wrap: Wrap, reject: bool, data: &[u8]) {
    let mut now = Instant::now();
    let seed = [7u8; 32];
    let mut peer = match role {
        Role::Client => Peer::Client(Box::new(ClientSession::new(
            Session::new_client(config(role, wrap), now, seed),
            client_policy(),
        ))),
        Role::Server => {
            let cfg = config(role, wrap);
            let session = if data.first().is_some_and(|b| b & 1 == 1) {
                Session::new_server(cfg, now, seed, CLIENT_SID)
            } else {
                Session::new_server_from_cookie(cfg, now, seed, SERVER_SID, CLIENT_SID)
            };
            let Ok(session) = session else { return };
            Peer::Server(Box::new(ServerSession::new(session, server_policy(), 3)))
        }
    };
    let wrapper = peer_wrapper(wrap, role);
    let mut replay_id = 1u32;
    let mut key0 = None;
    let mut r = Reader { data };
    let mut steps = 0;
    while let Some(op) = r.byte() {
        steps += 1;
        if steps > MAX_STEPS {
            break;
        }
        match op % 4 {
            0 => {
                let d = r.bytes();
                peer.handle_datagram(now, d);
            }
            1 => {
                now += Duration::from_millis(u64::from(op >> 2) * 250);
                peer.handle_timeout(now);
            }
            2 => command(&mut peer, now, op >> 2),
            _ => {
                let d = r.bytes();
                let pkt = forge(&peer, op >> 2, d);
                let wire = match &wrapper {
                    None => pkt,
                    Some(w) => {
                        let mut out = Vec::new();
                        w.wrap(
                            &pkt,
                            ReplayId {
                                id: replay_id,
                                time: UNIX,
                            },
                            &mut out,
                        );
                        replay_id = replay_id.wrapping_add(1);
                        out
                    }
                };
                peer.handle_datagram(now, &wire);
            }
        }
        peer.drain(now, reject, &mut key0);
    }
    let _ = peer.session().stats();
}

/// Runs one command on the session; `sel` picks which.
fn command(peer: &mut Peer, now: Instant, sel: u8) {
    let s = peer.session_mut();
    match sel % 8 {
        0 => s.renegotiate(now),
        1 => {
            let _ = s.send_message(now, "PUSH_REQUEST");
        }
        2 => s.enable_data_channel(KeyDerivation::TlsEkm),
        3 => s.enable_data_channel(KeyDerivation::Prf),
        4 => {
            let _ = s.enable_dyn_tls_crypt();
        }
        5 => {
            let _ = s.send_message(now, &"x".repeat(usize::from(sel) * 40));
        }
        6 => {
            if let Some(k) = s.primary_key_id() {
                s.accept_auth(now, k);
            }
        }
        _ => {
            let _ = s.poll_timeout();
            let _ = s.tls_description();
        }
    }
}

/// A control packet with this session's IDs (so it gets past routing): opcode and key ID
/// from `sel`, ACKs and message ID from the first bytes of `d`, the rest as payload.
fn forge(peer: &Peer, sel: u8, d: &[u8]) -> Vec<u8> {
    let s = peer.session();
    let opcodes = [
        Opcode::ControlV1,
        Opcode::AckV1,
        Opcode::SoftResetV1,
        Opcode::HardResetServerV2,
        Opcode::HardResetClientV2,
        Opcode::ControlWkcV1,
    ];
    let opcode = opcodes[usize::from(sel & 7) % opcodes.len()];
    let key_id = KeyId::new((sel >> 3) & 7).unwrap_or(KeyId::ZERO);
    let (own, remote) = match peer {
        Peer::Client(_) => (
            s.remote_session_id().unwrap_or(SERVER_SID),
            s.local_session_id(),
        ),
        Peer::Server(_) => (CLIENT_SID, s.local_session_id()),
    };
    let mut acks = AckList::new();
    let n_acks = d.first().map_or(0, |b| usize::from(b % 5));
    for i in 0..n_acks {
        let id = d.get(1 + i).copied().unwrap_or(0);
        let _ = acks.push(u32::from(id));
    }
    let mid = d.get(6).map(|b| u32::from(*b % 16));
    let payload = d.get(7..).unwrap_or(&[]);
    let pkt = ControlPacket {
        opcode,
        key_id,
        session_id: own,
        remote_session_id: if acks.is_empty() { None } else { Some(remote) },
        acks,
        message_id: if opcode == Opcode::AckV1 { None } else { mid },
        payload,
    };
    let mut out = Vec::new();
    pkt.emit_to_vec(&mut out);
    out
}

fn pair(wrap: Wrap, reject: bool, data: &[u8]) {
    let _ = pair_recorded(wrap, reject, data, &mut Vec::new());
}

/// [`pair`], recording every datagram delivered: (towards the server, bytes). Returns
/// whether both ends derived key 0.
fn pair_recorded(wrap: Wrap, reject: bool, data: &[u8], record: &mut Vec<(bool, Vec<u8>)>) -> bool {
    let mut now = Instant::now();
    let mut client = Peer::Client(Box::new(ClientSession::new(
        Session::new_client(config(Role::Client, wrap), now, [3u8; 32]),
        client_policy(),
    )));
    let gate = CookieGate::new([9u8; 32], 60, server_wrapping(wrap));
    let mut server: Option<Peer> = None;
    let mut c2s: VecDeque<Vec<u8>> = VecDeque::new();
    let mut s2c: VecDeque<Vec<u8>> = VecDeque::new();
    let (mut ck0, mut sk0) = (None, None);
    let mut r = Reader { data };

    let to_server = |server: &mut Option<Peer>, s2c: &mut VecDeque<Vec<u8>>, now, d: &[u8]| {
        if let Some(s) = server.as_mut() {
            s.handle_datagram(now, d);
            return;
        }
        match gate.check(u64::from(UNIX), b"fuzz", d) {
            GateVerdict::Reply(p) => s2c.push_back(p),
            GateVerdict::Accept {
                client_sid,
                server_sid,
                wrapping,
                ..
            } => {
                let mut cfg = config(Role::Server, wrap);
                cfg.wrapping = wrapping;
                if let Ok(sess) =
                    Session::new_server_from_cookie(cfg, now, [5u8; 32], server_sid, client_sid)
                {
                    let mut s =
                        Peer::Server(Box::new(ServerSession::new(sess, server_policy(), 1)));
                    s.handle_datagram(now, d);
                    *server = Some(s);
                }
            }
            GateVerdict::Drop(_) => {}
        }
    };

    let mut steps = 0;
    // Hostile schedule from the input, then a fair schedule so handshakes can finish.
    let mut fair = 0usize;
    loop {
        steps += 1;
        if steps > MAX_STEPS {
            break;
        }
        let op = match r.byte() {
            Some(b) => b,
            None => {
                fair += 1;
                if fair > 120 {
                    break;
                }
                [0u8, 1, 6 | 8][fair % 3]
            }
        };
        match op % 8 {
            0 => {
                if let Some(p) = c2s.pop_front() {
                    to_server(&mut server, &mut s2c, now, &p);
                    record.push((true, p));
                }
            }
            1 => {
                if let Some(p) = s2c.pop_front() {
                    client.handle_datagram(now, &p);
                    record.push((false, p));
                }
            }
            2 => {
                c2s.pop_front();
            }
            3 => {
                s2c.pop_front();
            }
            4 => {
                if let Some(p) = c2s.front().cloned() {
                    c2s.push_back(p);
                }
            }
            5 => {
                let at = usize::from(r.byte().unwrap_or(0)) << 3 | usize::from(op >> 5);
                let q = if op & 8 == 0 { &mut c2s } else { &mut s2c };
                if let Some(p) = q.front_mut()
                    && !p.is_empty()
                {
                    let bit = at % (p.len() * 8);
                    p[bit / 8] ^= 1 << (bit % 8);
                }
            }
            6 => {
                now += Duration::from_millis(u64::from(op >> 3) * 100 + 10);
                if client.poll_timeout().is_some_and(|t| t <= now) {
                    client.handle_timeout(now);
                }
                if let Some(s) = server.as_mut()
                    && s.poll_timeout().is_some_and(|t| t <= now)
                {
                    s.handle_timeout(now);
                }
            }
            _ => {
                let d = r.bytes();
                if op & 8 == 0 {
                    to_server(&mut server, &mut s2c, now, d);
                } else {
                    client.handle_datagram(now, d);
                }
            }
        }
        c2s.extend(client.drain(now, reject, &mut ck0));
        if let Some(s) = server.as_mut() {
            s2c.extend(s.drain(now, reject, &mut sk0));
        }
        c2s.truncate(256);
        s2c.truncate(256);
    }
    if let (Some(c), Some(s)) = (ck0, sk0) {
        assert!(c == s, "client and server derived different keys for key 0");
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fair_schedule_connects_with_every_wrapping() {
        for wrap in [Wrap::None, Wrap::TlsAuth, Wrap::TlsCrypt] {
            let mut rec = vec![];
            assert!(pair_recorded(wrap, false, &[], &mut rec), "{wrap:?}");
            assert!(rec.len() > 6);
        }
    }

    #[test]
    fn forged_client_hello_reaches_the_lone_server() {
        let seeds = seed_inputs();
        assert!(seeds.len() > 10);
        for s in &seeds {
            run(s);
        }
    }
}
