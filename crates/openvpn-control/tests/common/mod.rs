//! In-memory client ↔ server pair with simulated time, loss, reordering and duplication.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openvpn_control::client::{ClientEvent, ClientPolicy, ClientSession};
use openvpn_control::compression::AllowCompression;
use openvpn_control::cookie::{CookieGate, GateVerdict, ServerWrapping};
use openvpn_control::dataplane::{DataChannel, Payload, send_switch_delay};
use openvpn_control::keepalive::{Keepalive, KeepaliveAction};
use openvpn_control::peer_info::ClientPeerInfo;
use openvpn_control::server::{ServerEvent, ServerPolicy, ServerSession};
use openvpn_control::tls::{TlsConfig, TlsCredentials, TlsVersionMax};
use openvpn_control::{ControlWrapping, Session, SessionConfig, Timers};
use openvpn_crypto::{
    DigestKind, KeyDirection, PacketBuf, Role, StaticKey, TlsAuth, TlsCrypt, TlsCryptV2ClientKey,
    TlsCryptV2ServerKey,
};
use openvpn_wire::{CompressionFraming, KeyId};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

pub struct Pki {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

pub fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test-ca");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = |cn: &str, eku: ExtendedKeyUsagePurpose| {
        let mut p = CertificateParams::new(vec![cn.to_owned()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![eku];
        let k = KeyPair::generate().unwrap();
        let c = p.signed_by(&k, &ca, &ca_key).unwrap();
        (c.pem(), k.serialize_pem())
    };
    let (server_cert, server_key) = leaf("server", ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = leaf("client1", ExtendedKeyUsagePurpose::ClientAuth);
    Pki {
        ca: ca.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrap {
    None,
    TlsAuth,
    TlsCrypt,
    TlsCryptV2,
}

pub struct Options {
    pub wrap: Wrap,
    pub client_ciphers: Vec<String>,
    pub server_ciphers: Vec<String>,
    pub iv_proto: u32,
    pub timers: Timers,
    pub credentials: Option<(String, String)>,
    pub dyn_tls_crypt: bool,
    /// Server timers when they differ from `timers` (which the client uses).
    pub server_timers: Option<Timers>,
    pub client_tls_max: TlsVersionMax,
    pub server_tls_max: TlsVersionMax,
    /// The client's `allow-compression` (effective mode).
    pub client_allow_compression: AllowCompression,
    /// Options the server pushes besides the fixed ones (e.g. `comp-lzo yes`).
    pub extra_push: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            wrap: Wrap::TlsCrypt,
            client_ciphers: vec![
                "AES-256-GCM".into(),
                "AES-128-GCM".into(),
                "CHACHA20-POLY1305".into(),
            ],
            server_ciphers: vec![
                "AES-256-GCM".into(),
                "AES-128-GCM".into(),
                "CHACHA20-POLY1305".into(),
            ],
            iv_proto: 990,
            timers: Timers::default(),
            credentials: None,
            dyn_tls_crypt: true,
            server_timers: None,
            client_tls_max: TlsVersionMax::Tls13,
            server_tls_max: TlsVersionMax::Tls13,
            client_allow_compression: AllowCompression::No,
            extra_push: vec![],
        }
    }
}

pub struct Link {
    pub loss: f64,
    pub duplicate: f64,
    pub reorder: f64,
    pub latency: Duration,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            latency: Duration::from_millis(10),
        }
    }
}

pub struct Pair {
    pub now: Instant,
    pub client: ClientSession,
    pub server: Option<ServerSession>,
    pub gate: CookieGate,
    pub server_cfg: SessionConfig,
    pub server_policy: ServerPolicy,
    pub c2s: VecDeque<(Instant, Vec<u8>)>,
    pub s2c: VecDeque<(Instant, Vec<u8>)>,
    pub link: Link,
    pub rng: ChaCha20Rng,
    pub client_events: Vec<ClientEvent>,
    pub server_events: Vec<ServerEvent>,
    pub reject_user: Option<String>,
    /// The server leaves this user's authentication pending (AUTH_PENDING sent, no decision).
    pub defer_user: Option<String>,
    pub gate_replies: usize,
    pub client_timers: Timers,
    /// Data-channel traffic on both sides, once [`Pair::enable_data`] was called.
    pub data: Option<DataPump>,
    /// Every control datagram put on the link: (towards the server, bytes).
    pub tap: Vec<(bool, Vec<u8>)>,
    /// Drop everything the client sends (ping-restart tests).
    pub blackhole_c2s: bool,
}

/// Unix time the simulated clock starts at (replay windows of the data channel).
const UNIX_BASE: u64 = 1_700_000_000;

fn is_data(p: &[u8]) -> bool {
    matches!(p.first().map(|b| b >> 3), Some(6 | 9))
}

/// One side's data channel with what it sent and received.
pub struct DataEnd {
    pub dc: DataChannel,
    pub keepalive: Keepalive,
    /// (sequence number, key ID it was sealed with).
    pub sent: Vec<(u64, u8)>,
    /// Sequence numbers of IP packets opened.
    pub received: BTreeSet<u64>,
    /// Key IDs of opened packets, consecutive duplicates removed.
    pub rx_key_ids: Vec<u8>,
    /// Key IDs of sealed packets, consecutive duplicates removed.
    pub tx_key_ids: Vec<u8>,
    /// Key IDs installed, in order.
    pub installed: Vec<u8>,
    /// Key IDs retired, in order.
    pub retired: Vec<u8>,
    /// Wire packets that failed to open.
    pub open_errors: u64,
    pub pings_received: u64,
    /// Keepalive actions other than sending a ping.
    pub restarts: Vec<Instant>,
    next_seq: u64,
}

impl DataEnd {
    fn new(role: Role, now: Instant, timers: &Timers) -> Self {
        let mut dc = DataChannel::new(role, DigestKind::Sha1, CompressionFraming::None, Some(0));
        dc.set_send_switch_delay(send_switch_delay(timers.hand_window, timers.reneg_sec));
        DataEnd {
            dc,
            keepalive: Keepalive::new(
                now,
                Some(Duration::from_secs(10)),
                Some(Duration::from_secs(60)),
            ),
            sent: vec![],
            received: BTreeSet::new(),
            rx_key_ids: vec![],
            tx_key_ids: vec![],
            installed: vec![],
            retired: vec![],
            open_errors: 0,
            pings_received: 0,
            restarts: vec![],
            next_seq: 0,
        }
    }

    fn install(
        &mut self,
        now: Instant,
        key_id: KeyId,
        cipher: openvpn_crypto::CipherKind,
        key2: &openvpn_crypto::KeyBlock,
    ) {
        self.dc.install(now, key_id, cipher, key2).unwrap();
        self.installed.push(key_id.value());
    }

    fn retire(&mut self, now: Instant, key_id: KeyId) {
        self.dc.retire(now, key_id);
        self.retired.push(key_id.value());
    }

    /// Seals an IP-like packet carrying the next sequence number.
    pub fn seal_ip(&mut self, now: Instant, rng: &mut ChaCha20Rng) -> Option<Vec<u8>> {
        if !self.dc.can_send() {
            return None;
        }
        let seq = self.next_seq;
        let mut ip = [0u8; 28];
        ip[0] = 0x45;
        ip[3] = 28;
        ip[8] = 64;
        ip[9] = 17;
        ip[20..].copy_from_slice(&seq.to_be_bytes());
        let mut b = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, &ip);
        self.dc.seal(now, &mut b, rng).unwrap();
        let wire = b.as_slice().to_vec();
        let key_id = wire[0] & 7;
        self.next_seq += 1;
        self.sent.push((seq, key_id));
        if self.tx_key_ids.last() != Some(&key_id) {
            self.tx_key_ids.push(key_id);
        }
        self.keepalive.on_sent(now);
        Some(wire)
    }

    fn seal_ping(&mut self, now: Instant, rng: &mut ChaCha20Rng) -> Option<Vec<u8>> {
        if !self.dc.can_send() {
            return None;
        }
        let mut b = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, &openvpn_wire::PING_MAGIC);
        self.dc.seal(now, &mut b, rng).unwrap();
        self.keepalive.on_sent(now);
        Some(b.as_slice().to_vec())
    }

    /// Opens a wire packet; returns whether it opened.
    pub fn open(&mut self, now: Instant, base: Instant, wire: &[u8]) -> bool {
        let mut w = wire.to_vec();
        let secs = UNIX_BASE + now.saturating_duration_since(base).as_secs();
        match self.dc.open(now, secs, &mut w) {
            Ok(p) => {
                let key_id = w[0] & 7;
                if self.rx_key_ids.last() != Some(&key_id) {
                    self.rx_key_ids.push(key_id);
                }
                self.keepalive.on_received(now);
                match p {
                    Payload::Ip(r) => {
                        let seq = u64::from_be_bytes(w[r][20..28].try_into().unwrap());
                        self.received.insert(seq);
                    }
                    Payload::Ping => self.pings_received += 1,
                    Payload::Occ(_) | Payload::Decompressed => {}
                }
                true
            }
            Err(_) => {
                self.open_errors += 1;
                false
            }
        }
    }

    /// Sequence numbers this side sent that `peer` never opened.
    pub fn lost_at(&self, peer: &DataEnd) -> Vec<(u64, u8)> {
        self.sent
            .iter()
            .filter(|(s, _)| !peer.received.contains(s))
            .copied()
            .collect()
    }
}

/// Data traffic of both sides: an IP packet each way every `interval`, keepalive pings.
pub struct DataPump {
    pub interval: Option<Duration>,
    pub next: Instant,
    pub client: DataEnd,
    pub server: DataEnd,
    pub running: bool,
    base: Instant,
    rng: ChaCha20Rng,
}

impl DataPump {
    fn next_deadline(&self) -> Option<Instant> {
        if !self.running {
            return None;
        }
        let mut t = self.interval.map(|_| self.next);
        for k in [&self.client.keepalive, &self.server.keepalive] {
            if let Some(x) = k.poll_timeout() {
                t = Some(t.map_or(x, |y: Instant| y.min(x)));
            }
        }
        t
    }
}

pub fn tls_creds(pki: &Pki, role: Role) -> TlsCredentials {
    let (c, k) = match role {
        Role::Client => (&pki.client_cert, &pki.client_key),
        Role::Server => (&pki.server_cert, &pki.server_key),
    };
    TlsCredentials {
        ca_pem: pki.ca.clone(),
        cert_pem: Some(c.clone()),
        key_pem: Some(k.clone()),
        ..Default::default()
    }
}

impl Pair {
    pub fn new(opts: Options, link: Link) -> Pair {
        let pki = pki();
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let now = Instant::now();
        let shared = StaticKey::generate(&mut rng);
        let v2_server = TlsCryptV2ServerKey::generate(&mut rng);
        let v2_client =
            TlsCryptV2ClientKey::generate(&v2_server, &[1, 0, 0, 0, 0, 0, 0, 0, 0], &mut rng)
                .unwrap();
        let (cwrap, swrap) = match opts.wrap {
            Wrap::None => (ControlWrapping::None, ServerWrapping::None),
            Wrap::TlsAuth => (
                ControlWrapping::TlsAuth(
                    Arc::new(
                        TlsAuth::new(&shared, KeyDirection::Inverse, DigestKind::Sha1).unwrap(),
                    ),
                    Arc::new(shared.clone()),
                ),
                ServerWrapping::TlsAuth(
                    Arc::new(
                        TlsAuth::new(&shared, KeyDirection::Normal, DigestKind::Sha1).unwrap(),
                    ),
                    Arc::new(shared.clone()),
                ),
            ),
            Wrap::TlsCrypt => (
                ControlWrapping::TlsCrypt(
                    Arc::new(TlsCrypt::new(&shared, Role::Client)),
                    Arc::new(shared.clone()),
                ),
                ServerWrapping::TlsCrypt(
                    Arc::new(TlsCrypt::new(&shared, Role::Server)),
                    Arc::new(shared.clone()),
                ),
            ),
            Wrap::TlsCryptV2 => (
                ControlWrapping::TlsCryptV2Client {
                    kc: Arc::new(TlsCrypt::new(&v2_client.kc, Role::Client)),
                    key: Arc::new(v2_client.kc.clone()),
                    wkc: Arc::new(v2_client.wkc.clone()),
                },
                ServerWrapping::TlsCryptV2(Arc::new(v2_server)),
            ),
        };
        let peer_info = ClientPeerInfo {
            version: "openvpn-rs-test".into(),
            platform: "linux".into(),
            ciphers: opts.client_ciphers.clone(),
            proto: opts.iv_proto,
            mtu: Some(1600),
            extra: vec![("IV_GUI_VER".into(), "pairtest_1.0".into())],
            decompresses: opts.client_allow_compression != AllowCompression::No,
        }
        .render();
        let client_cfg = SessionConfig {
            role: Role::Client,
            tls: TlsConfig::client(&TlsCredentials {
                version_max: opts.client_tls_max,
                ..tls_creds(&pki, Role::Client)
            })
            .unwrap(),
            name_check: None,
            wrapping: cwrap,
            options_string: "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,key-method 2,tls-client".into(),
            peer_info,
            credentials: opts.credentials.clone(),
            timers: opts.timers.clone(),
            max_packet: 1250,
            unix_time: 1_700_000_000,
        };
        let server_cfg = SessionConfig {
            role: Role::Server,
            tls: TlsConfig::server(
                &TlsCredentials {
                    version_max: opts.server_tls_max,
                    ..tls_creds(&pki, Role::Server)
                },
                false,
            )
            .unwrap(),
            name_check: None,
            wrapping: ControlWrapping::None,
            options_string: "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,key-method 2,tls-server".into(),
            peer_info: String::new(),
            credentials: None,
            timers: opts.server_timers.clone().unwrap_or_else(|| opts.timers.clone()),
            max_packet: 1250,
            unix_time: 1_700_000_000,
        };
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let client = ClientSession::new(
            Session::new_client(client_cfg, now, seed),
            ClientPolicy {
                ciphers: opts.client_ciphers,
                fallback: None,
                pull_filter: vec![],
                route_nopull: false,
                allow_compression: opts.client_allow_compression,
            },
        );
        let mut gkey = [0u8; 32];
        rng.fill_bytes(&mut gkey);
        Pair {
            now,
            client,
            server: None,
            gate: CookieGate::new(gkey, 60, swrap),
            server_cfg,
            server_policy: ServerPolicy {
                ciphers: opts.server_ciphers,
                fallback: None,
                push: [
                    "topology subnet".into(),
                    "route-gateway 10.8.0.1".into(),
                    "ping 10".into(),
                    "ping-restart 60".into(),
                ]
                .into_iter()
                .chain(opts.extra_push)
                .collect(),
                dyn_tls_crypt: opts.dyn_tls_crypt,
                tun_mtu: Some(1500),
            },
            c2s: VecDeque::new(),
            s2c: VecDeque::new(),
            link,
            rng,
            client_events: vec![],
            server_events: vec![],
            reject_user: None,
            defer_user: None,
            gate_replies: 0,
            client_timers: opts.timers.clone(),
            data: None,
            tap: vec![],
            blackhole_c2s: false,
        }
    }

    /// Starts data traffic: keys are installed from KeysReady events (including the ones
    /// already seen), an IP packet goes each way every `interval` (`None`: keepalive pings
    /// only).
    pub fn enable_data(&mut self, interval: Option<Duration>) {
        let now = self.now;
        let mut pump = DataPump {
            interval,
            next: now,
            client: DataEnd::new(Role::Client, now, &self.client_timers),
            server: DataEnd::new(Role::Server, now, &self.server_cfg.timers),
            running: true,
            base: self.now,
            rng: ChaCha20Rng::seed_from_u64(99),
        };
        for e in &self.client_events {
            match e {
                ClientEvent::KeysReady {
                    key_id,
                    key2,
                    cipher,
                } => pump.client.install(now, *key_id, *cipher, key2),
                ClientEvent::KeyRetired { key_id } => pump.client.retire(now, *key_id),
                _ => {}
            }
        }
        for e in &self.server_events {
            match e {
                ServerEvent::KeysReady {
                    key_id,
                    key2,
                    cipher,
                } => pump.server.install(now, *key_id, *cipher, key2),
                ServerEvent::KeyRetired { key_id } => pump.server.retire(now, *key_id),
                _ => {}
            }
        }
        self.data = Some(pump);
    }

    /// Stops sending data (packets in flight are still delivered).
    pub fn stop_data(&mut self) {
        if let Some(d) = self.data.as_mut() {
            d.running = false;
        }
    }

    pub fn data(&self) -> &DataPump {
        self.data.as_ref().unwrap()
    }

    fn run_data(&mut self) {
        let now = self.now;
        let Some(d) = self.data.as_mut() else { return };
        if !d.running {
            return;
        }
        d.client.dc.tick(now);
        d.server.dc.tick(now);
        let mut out: Vec<(bool, Vec<u8>)> = vec![];
        if let (Some(interval), true) = (d.interval, now >= d.next) {
            if let Some(w) = d.client.seal_ip(now, &mut d.rng) {
                out.push((true, w));
            }
            if let Some(w) = d.server.seal_ip(now, &mut d.rng) {
                out.push((false, w));
            }
            while d.next <= now {
                d.next += interval;
            }
        }
        for (to_server, end) in [(true, &mut d.client), (false, &mut d.server)] {
            match end.keepalive.handle_timeout(now) {
                Some(KeepaliveAction::SendPing) => {
                    if let Some(w) = end.seal_ping(now, &mut d.rng) {
                        out.push((to_server, w));
                    }
                }
                Some(KeepaliveAction::Restart) => {
                    end.restarts.push(now);
                    // Report once per silence period.
                    end.keepalive.on_received(now);
                }
                None => {}
            }
        }
        for (to_server, w) in out {
            self.send(to_server, w);
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u32() as f64 / u32::MAX as f64) < p
    }

    fn send(&mut self, to_server: bool, pkt: Vec<u8>) {
        if to_server && self.blackhole_c2s {
            return;
        }
        if !is_data(&pkt) && self.tap.len() < 20_000 {
            self.tap.push((to_server, pkt.clone()));
        }
        if self.chance(self.link.loss) {
            return;
        }
        let mut at = self.now + self.link.latency;
        if self.chance(self.link.reorder) {
            at += self.link.latency * 3;
        }
        let dup = self.chance(self.link.duplicate);
        let q = if to_server {
            &mut self.c2s
        } else {
            &mut self.s2c
        };
        if dup {
            q.push_back((at, pkt.clone()));
        }
        q.push_back((at, pkt));
    }

    fn deliver_due(&mut self) -> bool {
        let mut any = false;
        let now = self.now;
        let mut due_c2s = vec![];
        self.c2s.retain(|(t, p)| {
            if *t <= now {
                due_c2s.push(p.clone());
                false
            } else {
                true
            }
        });
        let mut due_s2c = vec![];
        self.s2c.retain(|(t, p)| {
            if *t <= now {
                due_s2c.push(p.clone());
                false
            } else {
                true
            }
        });
        for p in due_c2s {
            any = true;
            if is_data(&p) {
                if let Some(d) = self.data.as_mut() {
                    d.server.open(now, d.base, &p);
                }
                continue;
            }
            self.server_input(&p);
        }
        for p in due_s2c {
            any = true;
            if is_data(&p) {
                if let Some(d) = self.data.as_mut() {
                    d.client.open(now, d.base, &p);
                }
                continue;
            }
            self.client.handle_datagram(now, &p);
        }
        any
    }

    pub fn server_input(&mut self, p: &[u8]) {
        let now = self.now;
        if let Some(s) = self.server.as_mut() {
            s.handle_datagram(now, p);
            return;
        }
        match self.gate.check(1_700_000_000, b"client-addr", p) {
            GateVerdict::Reply(r) => {
                self.gate_replies += 1;
                self.send(false, r)
            }
            GateVerdict::Accept {
                client_sid,
                server_sid,
                wrapping,
                ..
            } => {
                let mut cfg = self.server_cfg.clone();
                cfg.wrapping = wrapping;
                let mut seed = [0u8; 32];
                self.rng.fill_bytes(&mut seed);
                let session =
                    Session::new_server_from_cookie(cfg, now, seed, server_sid, client_sid)
                        .unwrap();
                let mut s = ServerSession::new(session, self.server_policy.clone(), 0);
                s.handle_datagram(now, p);
                self.server = Some(s);
            }
            GateVerdict::Drop(_) => {}
        }
    }

    fn pump_outputs(&mut self) {
        let now = self.now;
        while let Some(p) = self.client.poll_transmit(now) {
            self.send(true, p);
        }
        while let Some(ev) = self.client.poll_event() {
            if let Some(d) = self.data.as_mut() {
                match &ev {
                    ClientEvent::KeysReady {
                        key_id,
                        key2,
                        cipher,
                    } => d.client.install(now, *key_id, *cipher, key2),
                    ClientEvent::KeyRetired { key_id } => d.client.retire(now, *key_id),
                    _ => {}
                }
            }
            self.client_events.push(ev);
        }
        let mut out = vec![];
        if let Some(s) = self.server.as_mut() {
            while let Some(ev) = s.poll_event() {
                if let ServerEvent::Authenticate { key_id, auth, .. } = &ev {
                    if self.reject_user.as_deref() == Some(auth.username.as_str()) {
                        s.reject(now, *key_id, Some("bad user"));
                    } else if self.defer_user.as_deref() == Some(auth.username.as_str()) {
                        s.send_pending_text(now, *key_id, "AUTH_PENDING,timeout 600");
                    } else {
                        s.accept(now, *key_id, vec!["ifconfig 10.8.0.2 255.255.255.0".into()]);
                    }
                }
                if let Some(d) = self.data.as_mut() {
                    match &ev {
                        ServerEvent::KeysReady {
                            key_id,
                            key2,
                            cipher,
                        } => d.server.install(now, *key_id, *cipher, key2),
                        ServerEvent::KeyRetired { key_id } => d.server.retire(now, *key_id),
                        _ => {}
                    }
                }
                self.server_events.push(ev);
            }
            while let Some(p) = s.poll_transmit(now) {
                out.push(p);
            }
        }
        for p in out {
            self.send(false, p);
        }
    }

    /// Runs until `until` (simulated).
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.deliver_due();
            self.pump_outputs();
            // timers
            let now = self.now;
            if self.client.poll_timeout().is_some_and(|t| t <= now) {
                self.client.handle_timeout(now);
            }
            if let Some(s) = self.server.as_mut() {
                if s.poll_timeout().is_some_and(|t| t <= now) {
                    s.handle_timeout(now);
                }
            }
            self.pump_outputs();
            self.run_data();
            let mut next = end;
            if let Some(t) = self.data.as_ref().and_then(DataPump::next_deadline) {
                next = next.min(t);
            }
            for t in self.c2s.iter().chain(self.s2c.iter()).map(|(t, _)| *t) {
                next = next.min(t);
            }
            if let Some(t) = self.client.poll_timeout() {
                next = next.min(t);
            }
            if let Some(t) = self.server.as_ref().and_then(|s| s.poll_timeout()) {
                next = next.min(t);
            }
            if next >= end && self.now >= end {
                break;
            }
            self.now = next
                .max(self.now + Duration::from_millis(1))
                .min(end.max(self.now));
            if self.now >= end && next >= end {
                self.deliver_due();
                self.pump_outputs();
                break;
            }
        }
    }

    pub fn client_keys(&self) -> Vec<(u8, [u8; 256])> {
        self.client_events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::KeysReady { key_id, key2, .. } => {
                    Some((key_id.value(), *key2.as_bytes()))
                }
                _ => None,
            })
            .collect()
    }

    pub fn server_keys(&self) -> Vec<(u8, [u8; 256])> {
        self.server_events
            .iter()
            .filter_map(|e| match e {
                ServerEvent::KeysReady { key_id, key2, .. } => {
                    Some((key_id.value(), *key2.as_bytes()))
                }
                _ => None,
            })
            .collect()
    }

    pub fn connected(&self) -> bool {
        self.client_events
            .iter()
            .any(|e| matches!(e, ClientEvent::Connected(_)))
    }
}
