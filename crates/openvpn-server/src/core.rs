//! The server's protocol core: the client table, routing by peer-id and tunnel address,
//! float, and the per-client control sessions. No sockets here: the runtime feeds packets
//! in and takes packets out.
//!
//! ```text
//!  link packet ─▶ DATA_V2: clients[peer_id] (O(1)) ─▶ open ─▶ float if authentic ─▶ tun / other client
//!              └▶ control: by address ─▶ ServerSession, or CookieGate for new clients
//!  tun packet  ─▶ destination address ─▶ client ─▶ seal ─▶ link
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use openvpn_control::cookie::{CookieGate, GateDrop, GateVerdict, ServerWrapping};
use openvpn_control::dataplane::{DataChannel, Payload, decompress_limit};
use openvpn_control::keepalive::{Keepalive, KeepaliveAction};
use openvpn_control::server::{ServerEvent, ServerPolicy, ServerSession};
use openvpn_control::tls::TlsConfig;
use openvpn_control::{ControlWrapping, Session, SessionConfig, Timers};
use openvpn_crypto::{
    DigestKind, KeyDirection, PacketBuf, Role, StaticKey, TlsAuth, TlsCrypt, TlsCryptV2ServerKey,
};
use openvpn_wire::{CompressionFraming, KeyId, Opcode, PEER_ID_NONE};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tracing::{debug, info, warn};

use crate::auth::{AuthCall, AuthDecision, AuthRequest, ChallengeResponse, TokenState};
use crate::auth_token::{TokenError, TokenInfo, TokenKey};
use crate::ccd::{self, Directive};
use crate::config::{ServerConfig, TlsWrap, Transport, VerifyClientCert};
use crate::management::{Decision, Notify};
use crate::pool::{AddressPool, Lease, Leases, PoolShape, SharedLeases};
use crate::scripts::{JobKind, JobResult, ScriptJob};
use crate::shard::{Forward, ShardInfo};

/// How long a killed client is kept for its `RESTART`/`HALT` to be retransmitted.
pub const KILL_LINGER: Duration = Duration::from_secs(10);

/// Where a client's packets come from: its address, plus the TCP connection it uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddr {
    /// Socket address (IPv4-mapped IPv6 is shown as IPv4).
    pub addr: SocketAddr,
    /// TCP connection number (`None` for UDP).
    pub conn: Option<u64>,
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let a = SocketAddr::new(self.addr.ip().to_canonical(), self.addr.port());
        write!(f, "{a}")
    }
}

/// Counters of the server.
#[derive(Debug, Default, Clone, Copy)]
pub struct ServerStats {
    /// Data packets with an unknown peer-id or from an unknown address.
    pub unknown_peer: u64,
    /// Data packets that failed authentication or replay checks.
    pub bad_data: u64,
    /// Tun packets with no client route.
    pub no_route: u64,
    /// Packets from a client with a source address it does not own.
    pub spoofed_source: u64,
    /// Cookie-gate drops.
    pub gate_drops: u64,
    /// Stateless reset replies.
    pub gate_replies: u64,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Floats accepted.
    pub floats: u64,
    /// Clients rejected by auth-user-pass-verify, client-connect or the management interface.
    pub auth_failures: u64,
}

/// What the runtime has to send after a call into the core.
#[derive(Debug, Default)]
pub struct Outputs {
    /// Packets to the link (to the given peer).
    pub link: Vec<(PeerAddr, Vec<u8>)>,
    /// Packets to the tun device.
    pub tun: Vec<Vec<u8>>,
    /// TCP connections to close.
    pub close_conns: Vec<u64>,
    /// Hook scripts to run off the packet path; feed results to [`ServerCore::on_job_result`].
    pub jobs: Vec<ScriptJob>,
    /// `>CLIENT:` notifications for the management interface (`management-client-auth`).
    pub mgmt: Vec<Notify>,
    /// Calls to the embedder's [`crate::auth::Authenticator`]; answers go to
    /// [`ServerCore::authenticator_decision`].
    pub auth: Vec<AuthCall>,
    /// When set (by a batching runtime), packets for the tun device are appended here
    /// instead of to [`Outputs::tun`] (no allocation per packet).
    pub tun_batch: Option<openvpn_tun::TunBatch>,
    /// Packets for other workers (`workers N`): (worker index, packet).
    pub forward: Vec<(u32, Forward)>,
    /// `workers N` without `duplicate-cn`: a client with this common name was accepted with
    /// this connection sequence number ([`ShardTables::next_connect_seq`]); every other
    /// worker closes its clients with that name accepted before it (never a newer one).
    ///
    /// [`ShardTables::next_connect_seq`]: crate::shard::ShardTables::next_connect_seq
    pub close_common_name: Vec<(String, u64)>,
}

/// Where [`ServerCore::route_or_forward`] sends a packet.
enum RouteTo {
    /// This core's client (slot).
    Local(u32),
    /// Another worker.
    Worker(u32),
    /// No route.
    Nowhere,
}

/// One connected (or connecting) client.
pub struct ClientConn {
    /// Index into this core's client table (the peer-id, unless the server has workers).
    pub peer_id: u32,
    /// The peer-id on the wire (`workers N`: encodes the worker; else equals `peer_id`).
    pub wire_peer_id: u32,
    /// Current address.
    pub addr: PeerAddr,
    control: ServerSession,
    data: DataChannel,
    keepalive: Keepalive,
    /// `inactive N [BYTES]`: closes the client after N seconds with too little tunnel
    /// traffic (started when its tunnel is up).
    inactivity: Option<openvpn_control::keepalive::Inactivity>,
    /// Certificate common name.
    pub common_name: Option<String>,
    /// Username, if any.
    pub username: Option<String>,
    /// Pool lease.
    pub lease: Option<Lease>,
    /// Connected since.
    pub since: SystemTime,
    /// Whether PUSH_REPLY went out.
    pub established: bool,
    close_at: Option<Instant>,
    /// Last activity, for the status file.
    pub last_ref: SystemTime,
    /// Connection generation (stale hook results are ignored).
    generation: u64,
    /// Client-visible peer-info, for hook environments.
    peer_info: Vec<(String, String)>,
    /// Credentials, kept only until the auth hook has run.
    pending_credentials: Option<(String, String)>,
    /// This client's push list when client-config-dir or client-connect changed it
    /// (`push`, `push-reset`, `push-remove`); `None`: the server's.
    push_list: Option<Vec<String>>,
    /// `ifconfig-push` override.
    fixed_v4: Option<Ipv4Addr>,
    /// The second address of a client-config-dir `ifconfig-push` (netmask or peer).
    fixed_v4_second: Option<Ipv4Addr>,
    /// `ifconfig-ipv6-push` override: address, prefix length, server side (if given).
    fixed_v6: Option<(Ipv6Addr, u8, Option<Ipv6Addr>)>,
    /// `push-remove ifconfig` / `push-remove ifconfig-ipv6`: (IPv4, IPv6) not pushed.
    no_ifconfig: (bool, bool),
    /// When it was accepted, in the workers' common order (`workers N`; else 0).
    connect_seq: u64,
    /// `iroute` / `iroute-ipv6` networks behind this client.
    iroutes: Vec<(IpAddr, u8)>,
    /// Key IDs waiting for a management `client-auth` / `client-deny`.
    mgmt_pending: Vec<u8>,
    /// Key IDs waiting for the embedder's authenticator.
    auth_pending: Vec<u8>,
    /// Password for the authenticator (until asked).
    auth_password: Option<String>,
    /// Password for the management `>CLIENT:ENV` (until announced).
    mgmt_password: Option<String>,
    /// Config text from `client-auth` (applied like client-connect output).
    mgmt_config: Option<String>,
    /// Deadline for the pending management decision (hand-window).
    auth_deadline: Option<Instant>,
    /// `>CLIENT:CONNECT` went out (so `>CLIENT:DISCONNECT` follows).
    announced: bool,
    /// Control-channel bytes received / sent on the link (for [`ClientConn::link_bytes`]).
    ctl_bytes: (u64, u64),
    /// Killed (`kill`, `client-kill`, SIGUSR1): its `RESTART`/`HALT` is retransmitted until
    /// acknowledged (then, or at `close_at`, it is removed); no data passes meanwhile.
    killed: bool,
    /// auth-gen-token session (kept across renewals).
    token: Option<TokenInfo>,
    /// `external-auth`: the state of the token the client sent (`session_state`).
    token_state: Option<&'static str>,
    /// `auth-token …` / `auth-token-user …` for the first PUSH_REPLY.
    token_push: Vec<String>,
    /// The instant of this client's live entry in [`ServerCore`]'s timer heap (see
    /// [`ClientConn::deadline`]); heap entries with another instant are stale.
    timer_at: Option<Instant>,
}

impl ClientConn {
    /// The earliest instant at which this client has something to do: control-channel
    /// retransmits and handshake timers, keepalive, a pending close or auth deadline.
    fn deadline(&self) -> Option<Instant> {
        // Before PUSH_REPLY only the restart half of keepalive applies (a client that never
        // completes its set-up is closed at `ping-restart` / the handshake limit).
        let keepalive = if self.established {
            self.keepalive.poll_timeout()
        } else {
            self.keepalive.restart_deadline()
        };
        [
            self.control.poll_timeout(),
            keepalive,
            self.close_at,
            self.auth_deadline,
            self.inactivity.as_ref().map(|i| i.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Data-channel counters.
    pub fn data_stats(&self) -> openvpn_control::dataplane::DataStats {
        self.data.stats()
    }

    /// Bytes received from / sent to the client on the link, as OpenVPN counts them for the
    /// status, `load-stats`, `>BYTECOUNT_CLI:` and `bytes_received`/`bytes_sent`: every
    /// control-channel datagram plus each data packet with its header, packet ID and tag
    /// (exact for AEAD ciphers; CBC padding is estimated).
    pub fn link_bytes(&self) -> (u64, u64) {
        let st = self.data.stats();
        let header = if self.control.uses_data_v2() { 4 } else { 1 };
        let framing = u64::from(self.data_framing_len());
        let per_packet = self.control.cipher().map_or(0, |c| c.overhead(header)) as u64 + framing;
        (
            st.rx_bytes + st.rx_packets * per_packet + self.ctl_bytes.0,
            st.tx_bytes + st.tx_packets * per_packet + self.ctl_bytes.1,
        )
    }

    /// Bytes of compression framing in each data packet (stub framings: 1).
    fn data_framing_len(&self) -> u8 {
        u8::from(self.established && self.control.framing() != CompressionFraming::None)
    }

    /// Connection generation: the management interface's client ID (CID).
    pub fn cid(&self) -> u64 {
        self.generation
    }

    /// Tunnel IPv4 address: `ifconfig-push` from client-config-dir / client-connect, else the
    /// pool lease.
    pub fn v4(&self) -> Option<Ipv4Addr> {
        self.fixed_v4.or(self.lease.and_then(|l| l.v4))
    }

    /// Its tunnel addresses (IPv4 and/or IPv6).
    fn tunnel_addrs(&self) -> Vec<IpAddr> {
        self.v4()
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.v6().map(IpAddr::V6))
            .collect()
    }

    /// Tunnel IPv6 address: `ifconfig-ipv6-push`, else the pool lease.
    pub fn v6(&self) -> Option<Ipv6Addr> {
        self.fixed_v6.map(|f| f.0).or(self.lease.and_then(|l| l.v6))
    }

    /// Negotiated cipher name.
    pub fn cipher_name(&self) -> &'static str {
        self.control.cipher().map(|c| c.name()).unwrap_or("none")
    }
}

/// One tun → client route for a sending thread ([`ServerCore::send_routes`]).
#[derive(Debug)]
pub struct SendRoute {
    /// Destination network (a client's tunnel address or an iroute).
    pub net: IpAddr,
    /// Prefix length.
    pub bits: u8,
    /// The client.
    pub peer_id: u32,
    /// Where the client is.
    pub addr: PeerAddr,
    /// MSS clamp for TCP SYNs (`mssfix`).
    pub mss: Option<u16>,
    /// Seals with the client's data channel.
    pub sender: openvpn_control::dataplane::DataSender,
}

/// The server core.
pub struct ServerCore {
    cfg: ServerConfig,
    session_template: SessionConfig,
    policy: ServerPolicy,
    gate: CookieGate,
    clients: Vec<Option<ClientConn>>,
    by_addr: HashMap<PeerAddr, u32>,
    by_v4: HashMap<Ipv4Addr, u32>,
    by_v6: HashMap<Ipv6Addr, u32>,
    /// The `server` / `server-ipv6` ranges (the leases live in `leases`).
    shape: PoolShape,
    stats: ServerStats,
    rng: StdRng,
    auth_digest: DigestKind,
    started_unix: u64,
    base_instant: Instant,
    next_generation: u64,
    /// Bumped when the tun → client routing ([`ServerCore::send_routes`]) may have changed.
    send_gen: u64,
    iroutes: Vec<(IpAddr, u8, u32)>,
    hold: bool,
    /// An embedder's authenticator is consulted (after the auth script).
    authenticator: bool,
    /// Hooks that loaded plug-ins handle besides any script (set by the runtime).
    plugin_hooks: Vec<JobKind>,
    /// `tls-crypt-v2-verify`: decides on a client key's metadata before any TLS (the driver
    /// supplies the function that runs the command; it blocks, as in OpenVPN).
    crypt_v2_verify: Option<crate::scripts::CryptV2Verify>,
    /// auth-gen-token secret (`None` = no tokens).
    token_key: Option<TokenKey>,
    /// The pool's leases and the `ifconfig-pool-persist` memory (shared by the workers).
    leases: SharedLeases,
    /// Client deadlines, earliest first, so that neither [`ServerCore::next_timeout`] nor
    /// [`ServerCore::on_timeout`] walks every client (see [`TimerHeap`]).
    timers: TimerHeap,
    /// Set when this core is one of several workers (`workers N`).
    shard: Option<ShardInfo>,
    /// A packet a client compressed, while it is delivered (reused, no allocation per packet).
    inflated: Vec<u8>,
}

/// The server's timer heap: `(deadline, peer-id)` entries, earliest first.
///
/// An entry is live while its client exists and the client's `timer_at` equals its instant;
/// others are stale and skipped. A client's entry may be *earlier* than its real deadline
/// (keepalive and retransmit deadlines move later with traffic; the early wake-up finds
/// nothing due and re-arms it), never later: every path that can make a deadline earlier
/// re-arms the client (`arm`), and the rare ones (management, hooks, reload, shutdown) ask
/// for a full rebuild. As a safety net the heap is rebuilt from all clients at least once a
/// second (O(clients), a few microseconds per thousand).
#[derive(Debug, Default)]
struct TimerHeap {
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, u32)>>,
    rebuild: bool,
    last_rebuild: Option<Instant>,
}

/// How often the timer heap is rebuilt from every client regardless (safety net).
const TIMER_REBUILD_EVERY: Duration = Duration::from_secs(1);

/// Parses an `ifconfig-pool-persist` file (`common_name,ipv4[,ipv6]` lines, OpenVPN's format).
pub fn parse_pool_persist(
    text: &str,
) -> std::collections::BTreeMap<String, (Option<Ipv4Addr>, Option<Ipv6Addr>)> {
    let mut m = std::collections::BTreeMap::new();
    for line in text.lines() {
        let mut f = line.trim().split(',');
        let Some(cn) = f.next().filter(|c| !c.is_empty()) else {
            continue;
        };
        let v4 = f.next().and_then(|a| a.trim().parse().ok());
        let v6 = f.next().and_then(|a| a.trim().parse().ok());
        if v4.is_some() || v6.is_some() {
            m.insert(cn.to_owned(), (v4, v6));
        }
    }
    m
}

fn digest(name: &str) -> Result<DigestKind, String> {
    DigestKind::from_name(name).ok_or_else(|| format!("unsupported digest '{name}'"))
}

/// Builds the TLS server configuration (certificates, CA, CRL, client-certificate policy).
fn build_tls(cfg: &ServerConfig) -> Result<TlsConfig, String> {
    let creds = cfg
        .tls
        .credentials_with(cfg.tls.tls_verify.clone().map(|cmd| {
            let env = cfg.setenv.clone();
            openvpn_control::tls::CertHook(Arc::new(move |c: &openvpn_control::tls::CertInfo| {
                openvpn_tun::process::run_tls_verify(&cmd, c.depth, &c.subject, &c.env, &env)
            }))
        }));
    if cfg.verify_client_cert == VerifyClientCert::None && !cfg.has_password_check() {
        return Err(
            "verify-client-cert none needs another authentication: add auth-user-pass-verify, an authentication plugin or management-client-auth"
                .into(),
        );
    }
    TlsConfig::server(&creds, cfg.verify_client_cert != VerifyClientCert::Require)
        .map_err(|e| e.to_string())
}

/// The negotiation/push policy for new key exchanges.
fn build_policy(cfg: &ServerConfig) -> ServerPolicy {
    ServerPolicy {
        ciphers: cfg.data_ciphers.clone(),
        fallback: cfg.data_ciphers_fallback.clone(),
        push: cfg.push.clone(),
        dyn_tls_crypt: true,
        tun_mtu: Some(cfg.tun_mtu),
    }
}

/// Builds the server-side control wrapping from the config.
fn server_wrapping(cfg: &ServerConfig) -> Result<ServerWrapping, String> {
    Ok(match &cfg.tls.wrap {
        TlsWrap::None => ServerWrapping::None,
        TlsWrap::Auth { key, direction } => {
            let k = StaticKey::parse_pem(key).map_err(|e| format!("tls-auth: {e}"))?;
            let dir = match direction {
                None => KeyDirection::Bidirectional,
                Some(0) => KeyDirection::Normal,
                Some(_) => KeyDirection::Inverse,
            };
            let a =
                TlsAuth::new(&k, dir, digest(&cfg.auth)?).map_err(|e| format!("tls-auth: {e}"))?;
            ServerWrapping::TlsAuth(Arc::new(a), Arc::new(k))
        }
        TlsWrap::Crypt { key } => {
            let k = StaticKey::parse_pem(key).map_err(|e| format!("tls-crypt: {e}"))?;
            ServerWrapping::TlsCrypt(Arc::new(TlsCrypt::new(&k, Role::Server)), Arc::new(k))
        }
        TlsWrap::CryptV2 { key } => {
            let k =
                TlsCryptV2ServerKey::parse_pem(key).map_err(|e| format!("tls-crypt-v2: {e}"))?;
            ServerWrapping::TlsCryptV2(Arc::new(k))
        }
    })
}

fn options_string(cfg: &ServerConfig) -> String {
    let proto = match cfg.transport {
        Transport::Udp => "UDPv4",
        Transport::Tcp => "TCPv4_SERVER",
    };
    let link_mtu = if cfg.transport == Transport::Tcp {
        1543
    } else {
        1541
    };
    let mut s = format!(
        "V4,dev-type tun,link-mtu {link_mtu},tun-mtu {},proto {proto}",
        cfg.tun_mtu
    );
    if let TlsWrap::Auth {
        direction: Some(d), ..
    } = cfg.tls.wrap
    {
        s.push_str(&format!(",keydir {d}"));
    }
    s.push_str(&format!(",auth {},keysize 128", cfg.auth.to_uppercase()));
    if matches!(cfg.tls.wrap, TlsWrap::Auth { .. }) {
        s.push_str(",tls-auth");
    }
    s.push_str(",key-method 2,tls-server");
    s
}

impl ServerCore {
    /// Builds the core from a loaded configuration.
    pub fn new(cfg: ServerConfig, now: Instant) -> Result<Self, String> {
        let name_check = cfg.tls.name_check();
        let tls = build_tls(&cfg)?;
        let wrapping = server_wrapping(&cfg)?;
        let mut rng = StdRng::from_entropy();
        let mut gate_key = [0u8; 32];
        rng.fill_bytes(&mut gate_key);
        let gate = CookieGate::new(gate_key, u64::from(cfg.hand_window), wrapping);
        let started_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let session_template = SessionConfig {
            role: Role::Server,
            tls,
            name_check,
            wrapping: ControlWrapping::None,
            options_string: options_string(&cfg),
            peer_info: String::new(),
            credentials: None,
            timers: Timers {
                tls_timeout: Duration::from_secs(2),
                hand_window: Duration::from_secs(u64::from(cfg.hand_window)),
                reneg_sec: (cfg.reneg_sec > 0)
                    .then(|| Duration::from_secs(u64::from(cfg.reneg_sec))),
                tran_window: Duration::from_secs(u64::from(cfg.tran_window)),
            },
            max_packet: 1250,
            unix_time: started_unix as u32,
        };
        let policy = build_policy(&cfg);
        let shape = cfg.pool_shape();
        let token_key = cfg.auth_gen_token.map(|_| {
            cfg.auth_gen_token_secret
                .clone()
                .unwrap_or_else(TokenKey::random)
        });
        let leases = Self::new_leases(&cfg);
        let max = cfg.max_clients.clamp(1, PEER_ID_NONE - 1) as usize;
        let mut clients = Vec::new();
        clients.resize_with(max.min(4096), || None);
        Ok(ServerCore {
            auth_digest: digest(&cfg.auth)?,
            cfg,
            session_template,
            policy,
            gate,
            clients,
            by_addr: HashMap::new(),
            by_v4: HashMap::new(),
            by_v6: HashMap::new(),
            shape,
            stats: ServerStats::default(),
            rng,
            started_unix,
            base_instant: now,
            next_generation: 1,
            send_gen: 0,
            iroutes: Vec::new(),
            hold: false,
            authenticator: false,
            plugin_hooks: Vec::new(),
            crypt_v2_verify: None,
            token_key,
            leases,
            timers: TimerHeap::default(),
            shard: None,
            inflated: Vec::new(),
        })
    }

    /// Closes every client of this core with common name `cn` (a new connection with that
    /// name arrived and `duplicate-cn` is not set; the new one is not in the table yet), or,
    /// with `before`, those accepted before that connection sequence number (another
    /// worker's new connection).
    pub fn close_common_name(&mut self, cn: &str, before: Option<u64>, out: &mut Outputs) {
        let dup: Vec<u32> = self
            .clients
            .iter()
            .flatten()
            .filter(|o| o.common_name.as_deref() == Some(cn))
            .filter(|o| before.is_none_or(|seq| o.connect_seq < seq))
            .map(|o| o.peer_id)
            .collect();
        for d in dup {
            info!(
                "peer {d}: closed, new connection with the same common name (duplicate-cn not set)"
            );
            self.remove_client(d, out);
        }
    }

    /// The address pool of `cfg` with what its `ifconfig-pool-persist` file remembers (for
    /// one core, or shared by a server's workers).
    pub fn new_leases(cfg: &ServerConfig) -> SharedLeases {
        let persist = cfg
            .pool_persist_seed
            .as_deref()
            .map(parse_pool_persist)
            .unwrap_or_default();
        let pool = AddressPool::with_shape(cfg.pool_shape());
        Arc::new(std::sync::Mutex::new(Leases::new(pool, persist)))
    }

    /// Makes this core worker `shard.index` of `shard.count` (`workers N`): its peer-ids and
    /// client IDs are the ones `≡ index (mod count)`, it leases addresses from the workers'
    /// shared pool (so `ifconfig-pool-persist` holds across workers), it keeps the shared
    /// tables up to date and hands packets of other workers' clients to
    /// [`Outputs::forward`]. `max-clients` counts the clients of all workers together
    /// ([`ShardTables::admit_client`]); each worker's table has room for all of them, as
    /// the kernel may send most clients to one worker. Call before any client arrives.
    ///
    /// [`ShardTables::admit_client`]: crate::shard::ShardTables::admit_client
    pub fn set_shard(&mut self, shard: ShardInfo) {
        self.leases = Arc::clone(&shard.leases);
        if let Ok(wrapping) = server_wrapping(&self.cfg) {
            self.gate = CookieGate::new(shard.gate_key, u64::from(self.cfg.hand_window), wrapping);
        }
        self.next_generation = u64::from(shard.count) + u64::from(shard.index);
        self.shard = Some(shard);
    }

    /// The peer-id on the wire for table slot `slot`.
    fn wire_id(&self, slot: u32) -> u32 {
        self.shard.as_ref().map_or(slot, |s| s.wire_id(slot))
    }

    /// Publishes (`add`) or withdraws the tunnel addresses and iroutes of client `slot`
    /// in the workers' shared table.
    fn share_routes(&self, addrs: &[IpAddr], iroutes: &[(IpAddr, u8)], add: bool) {
        let Some(s) = &self.shard else { return };
        for a in addrs {
            if add {
                s.tables.insert_host(*a, s.index);
            } else {
                s.tables.remove_host(*a, s.index);
            }
        }
        for (net, bits) in iroutes {
            if add {
                s.tables.add_prefix(*net, *bits, s.index);
            } else {
                s.tables.remove_prefix(*net, *bits, s.index);
            }
        }
    }

    /// The `ifconfig-pool-persist` file text: `common_name,ipv4[,ipv6]` per line (every
    /// worker's clients when the server has workers: they share the leases).
    pub fn pool_persist_text(&self) -> String {
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .persist_text()
    }

    /// Leases an address for `cn`: its persisted one if free, else one nobody else keeps.
    fn lease_for(&mut self, cn: Option<&str>) -> Option<Lease> {
        let persist = self.cfg.ifconfig_pool_persist.is_some();
        let take_over = !self.cfg.duplicate_cn;
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lease_for(cn, persist, take_over)
    }

    fn token_renewal(&self) -> u64 {
        self.cfg
            .auth_gen_token
            .and_then(|g| g.renewal)
            .unwrap_or(u64::from(self.cfg.reneg_sec))
    }

    /// Checks an auth-gen-token password; `None` if tokens are off or it is not a token.
    fn check_token(&self, username: &str, password: &str) -> Option<Result<TokenInfo, TokenError>> {
        let key = self.token_key.as_ref()?;
        let g = self.cfg.auth_gen_token?;
        if !password.starts_with(crate::auth_token::PREFIX) {
            return None;
        }
        Some(key.verify(
            password,
            username,
            wall_unix(),
            g.lifetime,
            self.token_renewal(),
        ))
    }

    /// After a successful authentication: issue (or renew) the client's token. For key 0 it
    /// goes into the PUSH_REPLY; for renegotiations it is sent as `PUSH_REPLY,auth-token …`.
    fn issue_token(&self, now: Instant, c: &mut ClientConn, key_id: KeyId) {
        let Some(key) = &self.token_key else { return };
        let t = wall_unix();
        let info = match c.token {
            Some(i) => TokenInfo { renewed: t, ..i },
            None => TokenKey::new_session(t),
        };
        c.token = Some(info);
        let user = c.username.clone().unwrap_or_default();
        let tok = key.issue(&user, &info);
        if key_id.value() == 0 {
            c.token_push = vec![format!("auth-token {tok}")];
            if !user.is_empty() {
                use base64::Engine as _;
                c.token_push.push(format!(
                    "auth-token-user {}",
                    base64::engine::general_purpose::STANDARD.encode(user.as_bytes())
                ));
            }
        } else {
            c.control
                .send_text(now, &format!("PUSH_REPLY,auth-token {tok}"));
        }
    }

    /// Applies a re-read configuration (SIGHUP) without dropping clients: certificates and CRL
    /// (used from each client's next renegotiation), push options, hooks, client-config-dir,
    /// client-to-client, duplicate-cn, timers for new sessions. Transport, port, device and
    /// pools cannot change live; a change there is reported and ignored.
    pub fn reload(&mut self, new: ServerConfig) -> Result<Vec<String>, String> {
        // Rare: may move any client's deadline earlier.
        self.timers.rebuild = true;
        let tls = build_tls(&new)?;
        let mut ignored = Vec::new();
        if new.transport != self.cfg.transport
            || new.port != self.cfg.port
            || new.local != self.cfg.local
        {
            ignored.push("proto/port/local".to_owned());
        }
        if new.dev != self.cfg.dev
            || new.server_v4 != self.cfg.server_v4
            || new.server_v6 != self.cfg.server_v6
        {
            ignored.push("dev/server/server-ipv6".to_owned());
        }
        if new.tls.wrap != self.cfg.tls.wrap {
            ignored.push("tls-auth/tls-crypt/tls-crypt-v2".to_owned());
        }
        if new.plugins != self.cfg.plugins {
            ignored.push("plugin".to_owned());
        }
        let policy = build_policy(&new);
        self.token_key = match (new.auth_gen_token, &new.auth_gen_token_secret) {
            (None, _) => None,
            (Some(_), Some(k)) => Some(k.clone()),
            (Some(_), None) => self.token_key.take().or_else(|| Some(TokenKey::random())),
        };
        self.session_template.tls = tls.clone();
        self.policy = policy.clone();
        for c in self.clients.iter_mut().flatten() {
            c.control.session_mut().set_tls_config(tls.clone());
            c.control.set_policy(policy.clone());
        }
        let keep = (
            self.cfg.transport,
            self.cfg.port,
            self.cfg.local.clone(),
            self.cfg.dev.clone(),
            self.cfg.server_v4,
            self.cfg.server_v6,
            self.cfg.tls.wrap.clone(),
        );
        self.cfg = new;
        (
            self.cfg.transport,
            self.cfg.port,
            self.cfg.local,
            self.cfg.dev,
            self.cfg.server_v4,
            self.cfg.server_v6,
            self.cfg.tls.wrap,
        ) = keep;
        Ok(ignored)
    }

    /// The `server` / `server-ipv6` ranges (server addresses for the tun device).
    pub fn pool_shape(&self) -> PoolShape {
        self.shape
    }

    /// Counters.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// Connected clients.
    pub fn clients(&self) -> impl Iterator<Item = &ClientConn> {
        self.clients.iter().flatten()
    }

    fn unix_now(&self, now: Instant) -> u64 {
        self.started_unix + now.saturating_duration_since(self.base_instant).as_secs()
    }

    /// A packet from the link.
    pub fn on_link_packet(
        &mut self,
        now: Instant,
        from: PeerAddr,
        pkt: &mut [u8],
        out: &mut Outputs,
    ) {
        let Some(&first) = pkt.first() else { return };
        let op = first >> 3;
        if op == Opcode::DataV2 as u8 || op == Opcode::DataV1 as u8 {
            self.on_data(now, from, pkt, out);
            return;
        }
        if let Some(&pid) = self.by_addr.get(&from) {
            let killed = self
                .clients
                .get(pid as usize)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.killed);
            let hard_reset =
                op == Opcode::HardResetClientV2 as u8 || op == Opcode::HardResetClientV3 as u8;
            if !(killed && hard_reset) {
                if let Some(c) = self.clients.get_mut(pid as usize).and_then(Option::as_mut) {
                    c.ctl_bytes.0 += pkt.len() as u64;
                    c.control.handle_datagram(now, pkt);
                    c.keepalive.on_received(now);
                }
                self.after_control(now, pid, out);
                return;
            }
            // A killed client reconnecting from the same address: a new session.
            self.remove_client(pid, out);
        } else if let Some(s) = &self.shard {
            // A control packet from an address another worker's client floated to.
            if let Some(owner) = s.tables.floated_owner(&from).filter(|o| *o != s.index) {
                out.forward.push((owner, Forward::Link(from, pkt.to_vec())));
                return;
            }
        }
        self.on_new_peer(now, from, pkt, out);
    }

    fn on_new_peer(&mut self, now: Instant, from: PeerAddr, pkt: &[u8], out: &mut Outputs) {
        if self.hold {
            // management-hold: no new clients until `hold release`.
            self.stats.gate_drops += 1;
            return;
        }
        let addr_bytes = addr_key(&from);
        let unix = self.unix_now(now);
        let verdict = if from.conn.is_some() {
            // TCP: the connection itself proves the address; no cookie.
            self.tcp_first_packet(pkt)
        } else {
            self.gate.check(unix, &addr_bytes, pkt)
        };
        match verdict {
            GateVerdict::Reply(r) => {
                self.stats.gate_replies += 1;
                out.link.push((from, r));
            }
            GateVerdict::Drop(_) => self.stats.gate_drops += 1,
            GateVerdict::Accept {
                client_sid,
                server_sid,
                wrapping,
                metadata,
            } => {
                if let (Some(verify), Some(meta)) = (&self.crypt_v2_verify, &metadata) {
                    if !(verify.0)(meta) {
                        self.stats.gate_drops += 1;
                        warn!("{from}: tls-crypt-v2-verify rejected the client key");
                        return;
                    }
                }
                let Some(peer_id) = self.clients.iter().position(Option::is_none) else {
                    warn!(
                        "{from}: max-clients ({}) reached, dropping new client",
                        self.clients.len()
                    );
                    return;
                };
                let mut cfg = self.session_template.clone();
                cfg.wrapping = wrapping;
                cfg.unix_time = unix as u32;
                let mut seed = [0u8; 32];
                self.rng.fill_bytes(&mut seed);
                let session = if from.conn.is_some() {
                    Session::new_server(cfg, now, seed, client_sid)
                } else {
                    Session::new_server_from_cookie(cfg, now, seed, server_sid, client_sid)
                };
                let session = match session {
                    Ok(s) => s,
                    Err(e) => {
                        warn!("{from}: cannot start session: {e}");
                        return;
                    }
                };
                // With workers, max-clients counts all workers' clients together.
                let max = self.cfg.max_clients.max(1) as usize;
                if let Some(s) = &self.shard
                    && !s.tables.admit_client(max)
                {
                    warn!(
                        "{from}: max-clients ({max}) reached on all workers, dropping new client"
                    );
                    return;
                }
                let wire_id = self.wire_id(peer_id as u32);
                if let Some(s) = &self.shard {
                    s.tables.set_live(wire_id, true);
                }
                let mut control = ServerSession::new(session, self.policy.clone(), wire_id);
                control.set_compression(self.cfg.compression);
                let ping = self.cfg.ping.map(|s| Duration::from_secs(u64::from(s)));
                let restart = self
                    .cfg
                    .ping_restart
                    .map(|s| Duration::from_secs(u64::from(s)));
                let conn = ClientConn {
                    peer_id: peer_id as u32,
                    wire_peer_id: wire_id,
                    addr: from,
                    control,
                    data: {
                        let mut d = DataChannel::new(
                            Role::Server,
                            self.auth_digest,
                            CompressionFraming::None,
                            None,
                        );
                        d.set_send_switch_delay(openvpn_control::dataplane::send_switch_delay(
                            self.session_template.timers.hand_window,
                            self.session_template.timers.reneg_sec,
                        ));
                        d.set_reneg_limits(Some(self.cfg.reneg_bytes), Some(self.cfg.reneg_pkts));
                        d.set_decompress_limit(decompress_limit(self.cfg.tun_mtu));
                        let (window, secs) = self.cfg.replay_window;
                        d.set_replay_window(window, u64::from(secs));
                        d
                    },
                    inactivity: None,
                    keepalive: Keepalive::new(
                        now,
                        ping,
                        restart.or(Some(Duration::from_secs(
                            u64::from(self.cfg.hand_window) * 2,
                        ))),
                    ),
                    common_name: None,
                    username: None,
                    lease: None,
                    since: SystemTime::now(),
                    established: false,
                    close_at: None,
                    last_ref: SystemTime::now(),
                    generation: self.next_generation,
                    peer_info: Vec::new(),
                    pending_credentials: None,
                    push_list: None,
                    fixed_v4: None,
                    fixed_v4_second: None,
                    fixed_v6: None,
                    no_ifconfig: (false, false),
                    connect_seq: 0,
                    iroutes: Vec::new(),
                    mgmt_pending: Vec::new(),
                    auth_pending: Vec::new(),
                    auth_password: None,
                    mgmt_password: None,
                    mgmt_config: None,
                    auth_deadline: None,
                    announced: false,
                    killed: false,
                    ctl_bytes: (0, 0),
                    token: None,
                    token_state: None,
                    token_push: Vec::new(),
                    timer_at: None,
                };
                self.next_generation += self.shard.as_ref().map_or(1, |s| u64::from(s.count));
                debug!("{from}: new session, peer-id {peer_id}");
                self.clients[peer_id] = Some(conn);
                self.by_addr.insert(from, peer_id as u32);
                if let Some(c) = self.clients[peer_id].as_mut() {
                    c.ctl_bytes.0 += pkt.len() as u64;
                    c.control.handle_datagram(now, pkt);
                }
                self.after_control(now, peer_id as u32, out);
            }
        }
    }

    /// TCP has no cookie: a valid hard reset creates the session directly.
    fn tcp_first_packet(&mut self, pkt: &[u8]) -> GateVerdict {
        // Reuse the gate's unwrap and parse, then turn its reply into acceptance.
        match self.gate.check(0, b"tcp", pkt) {
            GateVerdict::Reply(_) => {}
            GateVerdict::Drop(d) => return GateVerdict::Drop(d),
            GateVerdict::Accept { .. } => return GateVerdict::Drop(GateDrop::Opcode),
        }
        let Some(client_sid) = openvpn_wire::peek_session_id(pkt) else {
            return GateVerdict::Drop(GateDrop::Malformed);
        };
        let mut metadata = None;
        let wrapping = match self.gate.wrapping() {
            ServerWrapping::None => ControlWrapping::None,
            ServerWrapping::TlsAuth(a, k) => ControlWrapping::TlsAuth(a.clone(), k.clone()),
            ServerWrapping::TlsCrypt(c, k) => ControlWrapping::TlsCrypt(c.clone(), k.clone()),
            ServerWrapping::TlsCryptV2(server) => {
                let Ok((_, wkc)) = openvpn_crypto::split_wkc(pkt) else {
                    return GateVerdict::Drop(GateDrop::Wrap);
                };
                let Ok((kc, meta)) = server.unwrap_client_key(wkc) else {
                    return GateVerdict::Drop(GateDrop::Wrap);
                };
                metadata = Some(meta);
                ControlWrapping::TlsCrypt(Arc::new(TlsCrypt::new(&kc, Role::Server)), Arc::new(kc))
            }
        };
        GateVerdict::Accept {
            client_sid,
            server_sid: client_sid,
            wrapping,
            metadata,
        }
    }

    fn on_data(&mut self, now: Instant, from: PeerAddr, pkt: &mut [u8], out: &mut Outputs) {
        let pid = match openvpn_wire::peek_peer_id(pkt) {
            Some(p) if p != PEER_ID_NONE => match &self.shard {
                None => p,
                Some(s) => match s.slot_of(p) {
                    Ok(slot) => slot,
                    Err(owner) => {
                        // Another worker's client (it floated to an address hashed to us);
                        // an id nobody has is dropped here, not queued.
                        if s.tables.is_live(p) {
                            out.forward.push((owner, Forward::Link(from, pkt.to_vec())));
                        } else {
                            self.stats.unknown_peer += 1;
                        }
                        return;
                    }
                },
            },
            _ => match self.by_addr.get(&from) {
                Some(&p) => p,
                None => {
                    self.stats.unknown_peer += 1;
                    return;
                }
            },
        };
        let unix = self.unix_now(now);
        let Some(c) = self.clients.get_mut(pid as usize).and_then(Option::as_mut) else {
            self.stats.unknown_peer += 1;
            return;
        };
        // TCP packets must come on the client's own connection.
        if from.conn.is_some() && from != c.addr {
            self.stats.unknown_peer += 1;
            return;
        }
        if c.killed {
            return;
        }
        let payload = match c.data.open(now, unix, pkt) {
            Ok(p) => p,
            Err(_) => {
                self.stats.bad_data += 1;
                return;
            }
        };
        c.keepalive.on_received(now);
        c.last_ref = SystemTime::now();
        if c.data.needs_renegotiation() {
            c.control.session_mut().renegotiate(now);
            self.after_control(now, pid, out);
        }
        let Some(c) = self.clients.get_mut(pid as usize).and_then(Option::as_mut) else {
            return;
        };
        if from != c.addr {
            // Authenticated: float.
            info!(
                "peer {} ({}) floated from {} to {}",
                c.peer_id,
                c.common_name.as_deref().unwrap_or("?"),
                c.addr,
                from
            );
            self.by_addr.remove(&c.addr);
            if let Some(s) = &self.shard {
                s.tables.forget_float(&c.addr, s.index);
                s.tables.floated_to(from, s.index);
            }
            c.addr = from;
            self.by_addr.insert(from, pid);
            self.send_gen += 1;
            self.stats.floats += 1;
        }
        let range = match payload {
            Payload::Ping => return,
            Payload::Occ(r) => {
                if pkt.get(r.start + 16) == Some(&6) {
                    debug!("peer {pid}: OCC_EXIT");
                    if let Some(c) = self.clients.get_mut(pid as usize).and_then(Option::as_mut) {
                        c.close_at.get_or_insert(now + Duration::from_secs(1));
                    }
                    self.arm(pid);
                }
                return;
            }
            Payload::Ip(r) => r,
            Payload::Decompressed => {
                // The client compressed it: copied out of its channel into the core's reused
                // buffer (the channel is part of `self`, which delivering borrows).
                let mut ip = std::mem::take(&mut self.inflated);
                ip.clear();
                if let Some(c) = self.clients.get(pid as usize).and_then(Option::as_ref) {
                    ip.extend_from_slice(c.data.decompressed());
                    if c.data.stats().decompressed == 1 {
                        info!(
                            "peer {} ({}): decompressing what the client compresses (openvpn-rs sends uncompressed)",
                            c.peer_id,
                            c.common_name.as_deref().unwrap_or("?")
                        );
                    }
                }
                self.deliver(now, pid, &ip, out);
                self.inflated = ip;
                return;
            }
        };
        self.deliver(now, pid, &pkt[range], out);
    }

    /// An authentic IP packet from client `pid`: source check, then to another client
    /// (`client-to-client`), another worker or the tun device.
    fn deliver(&mut self, now: Instant, pid: u32, ip: &[u8], out: &mut Outputs) {
        let Some((src, dst)) = ip_addrs(ip) else {
            self.stats.spoofed_source += 1;
            return;
        };
        let own = match src {
            IpAddr::V4(a) => self.by_v4.get(&a) == Some(&pid),
            IpAddr::V6(a) => self.by_v6.get(&a) == Some(&pid),
        } || self
            .iroutes
            .iter()
            .any(|(net, bits, p)| *p == pid && in_prefix(src, *net, *bits));
        if !own {
            self.stats.spoofed_source += 1;
            return;
        }
        if let Some(i) = self
            .clients
            .get_mut(pid as usize)
            .and_then(Option::as_mut)
            .and_then(|c| c.inactivity.as_mut())
        {
            i.on_traffic(now, ip.len() as u64);
        }
        if self.cfg.client_to_client {
            match self.route_or_forward(dst) {
                RouteTo::Local(to) if to != pid => {
                    let bytes = ip.to_vec();
                    self.send_to_client(now, to, &bytes, out);
                    return;
                }
                RouteTo::Worker(owner) => {
                    out.forward.push((owner, Forward::Tun(ip.to_vec())));
                    return;
                }
                _ => {}
            }
        }
        let mss = self
            .clients
            .get(pid as usize)
            .and_then(Option::as_ref)
            .and_then(|c| mss_limit(self.cfg.mssfix, &c.control));
        if let Some(batch) = out.tun_batch.as_mut() {
            // Batched runtime: straight into its reusable arena, no allocation.
            batch.push(ip);
            if let Some(mss) = mss {
                let last = batch.len() - 1;
                openvpn_wire::clamp_mss(batch.get_mut(last), mss);
            }
            return;
        }
        let mut ip = ip.to_vec();
        if let Some(mss) = mss {
            openvpn_wire::clamp_mss(&mut ip, mss);
        }
        out.tun.push(ip);
    }

    /// Where a packet for `dst` goes: one of this core's clients, another worker (whose
    /// client has the host address or the longest matching iroute), or nowhere.
    fn route_or_forward(&self, dst: IpAddr) -> RouteTo {
        if let Some(pid) = self.host(dst) {
            return RouteTo::Local(pid);
        }
        let iroute = || longest_prefix(&self.iroutes, dst).map_or(RouteTo::Nowhere, RouteTo::Local);
        match &self.shard {
            // The shared table has every worker's hosts and iroutes: it picks the owner.
            Some(s) => match s.tables.route(s.index, dst) {
                Some(owner) if owner != s.index => RouteTo::Worker(owner),
                _ => iroute(),
            },
            None => iroute(),
        }
    }

    /// This core's client with tunnel address `dst`.
    fn host(&self, dst: IpAddr) -> Option<u32> {
        match dst {
            IpAddr::V4(a) => self.by_v4.get(&a).copied(),
            IpAddr::V6(a) => self.by_v6.get(&a).copied(),
        }
    }

    /// This core's client for `dst`: its tunnel address, else the longest iroute.
    fn route(&self, dst: IpAddr) -> Option<u32> {
        self.host(dst)
            .or_else(|| longest_prefix(&self.iroutes, dst))
    }

    /// A packet from the tun device.
    pub fn on_tun_packet(&mut self, now: Instant, ip: &[u8], out: &mut Outputs) {
        let Some((_, dst)) = ip_addrs(ip) else {
            self.stats.no_route += 1;
            return;
        };
        match self.route_or_forward(dst) {
            RouteTo::Local(pid) => self.send_to_client(now, pid, ip, out),
            RouteTo::Worker(owner) => out.forward.push((owner, Forward::Tun(ip.to_vec()))),
            RouteTo::Nowhere => self.stats.no_route += 1,
        }
    }

    /// A tun packet another worker handed over: to one of this core's clients, never handed
    /// on again (the workers' tables may disagree for a moment; no ping-pong).
    pub fn on_forwarded_tun_packet(&mut self, now: Instant, ip: &[u8], out: &mut Outputs) {
        let Some((_, dst)) = ip_addrs(ip) else {
            self.stats.no_route += 1;
            return;
        };
        match self.route(dst) {
            Some(pid) => self.send_to_client(now, pid, ip, out),
            None => self.stats.no_route += 1,
        }
    }

    /// A packet from the tun device, sealed into `buf` (reused: no allocation): returns the
    /// address of the client to send `buf` to, or `None` (no route, no key yet, or dropped).
    /// The batching runtime's form of [`ServerCore::on_tun_packet`].
    pub fn seal_tun_packet(
        &mut self,
        now: Instant,
        ip: &[u8],
        buf: &mut PacketBuf,
        out: &mut Outputs,
    ) -> Option<PeerAddr> {
        let Some((_, dst)) = ip_addrs(ip) else {
            self.stats.no_route += 1;
            return None;
        };
        let pid = match self.route_or_forward(dst) {
            RouteTo::Local(pid) => pid,
            RouteTo::Worker(owner) => {
                out.forward.push((owner, Forward::Tun(ip.to_vec())));
                return None;
            }
            RouteTo::Nowhere => {
                self.stats.no_route += 1;
                return None;
            }
        };
        let c = self
            .clients
            .get_mut(pid as usize)
            .and_then(Option::as_mut)?;
        if c.killed || !c.data.can_send() {
            return None;
        }
        buf.clear(PacketBuf::DEFAULT_HEADROOM);
        buf.extend_from_slice(ip);
        if let Some(mss) = mss_limit(self.cfg.mssfix, &c.control) {
            openvpn_wire::clamp_mss(buf.as_mut_slice(), mss);
        }
        let payload = buf.len() as u64;
        c.data.seal(now, buf, &mut self.rng).ok()?;
        c.keepalive.on_sent(now);
        if let Some(i) = c.inactivity.as_mut() {
            i.on_traffic(now, payload);
        }
        Some(c.addr)
    }

    fn send_to_client(&mut self, now: Instant, pid: u32, payload: &[u8], out: &mut Outputs) {
        let Some(c) = self.clients.get_mut(pid as usize).and_then(Option::as_mut) else {
            return;
        };
        if c.killed || !c.data.can_send() {
            return;
        }
        let mut buf = PacketBuf::from_payload(PacketBuf::DEFAULT_HEADROOM, payload);
        if let Some(mss) = mss_limit(self.cfg.mssfix, &c.control) {
            openvpn_wire::clamp_mss(buf.as_mut_slice(), mss);
        }
        if c.data.seal(now, &mut buf, &mut self.rng).is_ok() {
            c.keepalive.on_sent(now);
            out.link.push((c.addr, buf.as_slice().to_vec()));
        }
    }

    /// Handles control events and transmits of client `pid`.
    fn after_control(&mut self, now: Instant, pid: u32, out: &mut Outputs) {
        let Some(mut c) = self.clients.get_mut(pid as usize).and_then(Option::take) else {
            return;
        };
        let mut close: Option<String> = None;
        while let Some(ev) = c.control.poll_event() {
            match ev {
                ServerEvent::Authenticate {
                    key_id,
                    auth,
                    peer_info,
                    cipher,
                } => {
                    if key_id.value() == 0 {
                        c.common_name = auth.common_name.clone();
                        c.username = (!auth.username.is_empty()).then(|| auth.username.clone());
                        if self.cfg.username_as_common_name && c.username.is_some() {
                            c.common_name = c.username.clone();
                        }
                        c.peer_info = peer_info.vars().to_vec();
                        info!(
                            "{}: peer-id {} common name '{}', cipher {}",
                            c.addr,
                            pid,
                            c.common_name.as_deref().unwrap_or(""),
                            cipher.name()
                        );
                        for (k, v) in peer_info.vars() {
                            debug!("{}: peer info: {k}={v}", c.addr);
                        }
                    }
                    let external = self.cfg.auth_gen_token.is_some_and(|g| g.external_auth);
                    match self.check_token(&auth.username, &auth.password) {
                        Some(Ok(info)) if !external => {
                            info!(
                                "{}: user '{}' authenticated by auth-token (key {})",
                                c.addr,
                                auth.username,
                                key_id.value()
                            );
                            c.token = Some(info);
                            self.auth_ok(now, &mut c, key_id, out);
                            continue;
                        }
                        Some(Err(e)) if !external => {
                            self.stats.auth_failures += 1;
                            warn!(
                                "{}: TLS Auth Error: auth-token of user '{}' {}",
                                c.addr,
                                auth.username,
                                if e == TokenError::Expired {
                                    "expired"
                                } else {
                                    "invalid"
                                }
                            );
                            c.control.reject(now, key_id, None);
                            if key_id.value() == 0 {
                                c.close_at = Some(now + Duration::from_secs(5));
                            }
                            continue;
                        }
                        Some(v) => {
                            c.token_state = Some(match v {
                                Ok(info) => {
                                    c.token = Some(info);
                                    "Authenticated"
                                }
                                Err(TokenError::Expired) => "Expired",
                                Err(TokenError::Invalid) => "Invalid",
                            });
                        }
                        None => c.token_state = external.then_some("Initial"),
                    }
                    if self.cfg.management_client_auth && !auth.username.is_empty() {
                        c.mgmt_password = Some(auth.password.to_string());
                    }
                    if self.authenticator {
                        c.auth_password = Some(auth.password.to_string());
                    }
                    let skip_script = auth.username.is_empty() && self.cfg.auth_user_pass_optional;
                    match (self.hooked(JobKind::AuthUserPass), skip_script) {
                        (true, false) => {
                            c.pending_credentials =
                                Some((auth.username.clone(), auth.password.to_string()));
                            out.jobs
                                .push(self.job(&mut c, key_id.value(), JobKind::AuthUserPass));
                        }
                        _ => self.auth_external(now, &mut c, key_id, out),
                    }
                }
                ServerEvent::NegotiationFailed(m) => {
                    warn!("{}: {m}", c.addr);
                    c.close_at = Some(now + Duration::from_secs(5));
                }
                ServerEvent::KeysReady {
                    key_id,
                    key2,
                    cipher,
                } => {
                    if let Err(e) = c.data.install(now, key_id, cipher, &key2) {
                        warn!("{}: cannot install data keys: {e}", c.addr);
                    } else {
                        debug!(
                            "{}: data channel key {} ready ({})",
                            c.addr,
                            key_id.value(),
                            cipher.name()
                        );
                    }
                }
                ServerEvent::Pushed => {
                    c.established = true;
                    if let Some((secs, bytes)) = self.cfg.inactive {
                        c.inactivity = Some(openvpn_control::keepalive::Inactivity::new(
                            now,
                            Duration::from_secs(u64::from(secs)),
                            bytes,
                        ));
                    }
                    c.data.set_framing(c.control.framing());
                    self.stats.handshakes += 1;
                    if self.cfg.management_client_auth {
                        let env = self.client_env(&c, JobKind::ClientConnect);
                        out.mgmt.push(Notify::Established {
                            cid: c.generation,
                            env,
                        });
                        if let Some(a) = c.lease.and(c.v4()) {
                            out.mgmt.push(Notify::Address {
                                cid: c.generation,
                                addr: a.to_string(),
                            });
                        }
                    }
                    self.learn_address(&mut c, "add", out);
                    if c.lease.is_some() {
                        if let Some(a) = c.v4() {
                            self.by_v4.insert(a, pid);
                        }
                        if let Some(a) = c.v6() {
                            self.by_v6.insert(a, pid);
                        }
                        self.share_routes(&c.tunnel_addrs(), &c.iroutes, true);
                    }
                    self.send_gen += 1;
                    info!(
                        "{}/{}: connected, addresses {} {}",
                        c.common_name.as_deref().unwrap_or("?"),
                        c.addr,
                        c.v4().map(|a| a.to_string()).unwrap_or_default(),
                        c.v6().map(|a| a.to_string()).unwrap_or_default()
                    );
                }
                ServerEvent::KeyRetired { key_id } => c.data.retire(now, key_id),
                ServerEvent::RenegotiationFailed { key_id, reason } => warn!(
                    "{} ({}): renegotiation of key {} failed: {reason}; the previous key stays until it expires",
                    c.addr,
                    c.common_name.as_deref().unwrap_or("?"),
                    key_id.value()
                ),
                ServerEvent::CrResponse(response) => self.on_cr_response(&c, response, out),
                ServerEvent::ClientExit => {
                    info!("{}: client sent EXIT", c.addr);
                    c.close_at.get_or_insert(now + Duration::from_secs(5));
                }
                ServerEvent::Closed(r) => close = Some(format!("{r:?}")),
            }
        }
        while let Some(p) = c.control.poll_transmit(now) {
            c.keepalive.on_sent(now);
            c.ctl_bytes.1 += p.len() as u64;
            out.link.push((c.addr, p));
        }
        if c.killed && close.is_none() && c.control.session().all_acked() {
            close = Some("killed; the client acknowledged".into());
        }
        self.clients[pid as usize] = Some(c);
        if let Some(reason) = close {
            info!("peer {pid}: session closed: {reason}");
            self.remove_client(pid, out);
        }
        self.arm(pid);
    }

    /// Puts client `pid`'s deadline into the timer heap if it is earlier than its live entry
    /// (a later deadline keeps the earlier entry: it fires early and re-arms).
    fn arm(&mut self, pid: u32) {
        let Some(c) = self.clients.get_mut(pid as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(at) = c.deadline() else { return };
        if c.timer_at.is_none_or(|live| at < live) {
            c.timer_at = Some(at);
            self.timers.heap.push(std::cmp::Reverse((at, pid)));
        }
    }

    /// Rebuilds the timer heap from every client (rare paths, and the periodic safety net).
    fn rebuild_timers(&mut self, now: Instant) {
        self.timers.heap.clear();
        for (pid, slot) in self.clients.iter_mut().enumerate() {
            let Some(c) = slot.as_mut() else { continue };
            c.timer_at = c.deadline();
            if let Some(at) = c.timer_at {
                self.timers.heap.push(std::cmp::Reverse((at, pid as u32)));
            }
        }
        self.timers.rebuild = false;
        self.timers.last_rebuild = Some(now);
    }

    /// Whether heap entry `(at, pid)` is its client's live entry.
    fn timer_live(&self, at: Instant, pid: u32) -> bool {
        self.clients
            .get(pid as usize)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.timer_at == Some(at))
    }

    fn remove_client(&mut self, pid: u32, out: &mut Outputs) {
        let Some(mut c) = self.clients.get_mut(pid as usize).and_then(Option::take) else {
            return;
        };
        if let Some(s) = &self.shard {
            s.tables.release_client();
        }
        if c.established && self.hooked(JobKind::ClientDisconnect) {
            let job = self.job(&mut c, 0, JobKind::ClientDisconnect);
            out.jobs.push(job);
        } else if self.hooked(JobKind::ClientGone) {
            // Plug-ins' per-client state goes with the client-disconnect job when there is one.
            let job = self.job(&mut c, 0, JobKind::ClientGone);
            out.jobs.push(job);
        }
        if c.established {
            self.learn_address(&mut c, "delete", out);
        }
        if c.announced {
            let env = self.client_env(&c, JobKind::ClientDisconnect);
            out.mgmt.push(Notify::Disconnect {
                cid: c.generation,
                env,
            });
        }
        self.iroutes.retain(|r| r.2 != pid);
        self.send_gen += 1;
        if self.by_addr.get(&c.addr) == Some(&pid) {
            self.by_addr.remove(&c.addr);
        }
        if let Some(s) = &self.shard {
            s.tables.forget_float(&c.addr, s.index);
            s.tables.set_live(c.wire_peer_id, false);
        }
        if c.established && c.lease.is_some() {
            self.share_routes(&c.tunnel_addrs(), &c.iroutes, false);
        }
        if let Some(l) = c.lease {
            if let Some(a) = c.v4() {
                if self.by_v4.get(&a) == Some(&pid) {
                    self.by_v4.remove(&a);
                }
            }
            if let Some(a) = c.v6() {
                if self.by_v6.get(&a) == Some(&pid) {
                    self.by_v6.remove(&a);
                }
            }
            self.leases
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .release(&l);
        }
        if let Some(conn) = c.addr.conn {
            out.close_conns.push(conn);
        }
    }

    /// Builds a hook job with OpenVPN's environment for client `c`.
    fn job(&self, c: &mut ClientConn, key_id: u8, kind: JobKind) -> ScriptJob {
        let command = match kind {
            JobKind::AuthUserPass => self.cfg.auth_user_pass_verify.as_ref().map(|a| a.0.clone()),
            JobKind::ClientConnect => self.cfg.client_connect.clone(),
            JobKind::ClientDisconnect => self.cfg.client_disconnect.clone(),
            JobKind::LearnAddress => self.cfg.learn_address.clone(),
            JobKind::ClientGone => None,
        }
        .unwrap_or_default();
        let mut env = self.client_env(c, kind);
        let mut credentials_file = None;
        if kind == JobKind::AuthUserPass {
            let (u, p) = c.pending_credentials.take().unwrap_or_default();
            match self.cfg.auth_user_pass_verify.as_ref().map(|a| a.1) {
                Some(true) => credentials_file = Some((u, p)),
                _ => {
                    env.push(("username".into(), u));
                    env.push(("password".into(), p));
                }
            }
            if let Some(st) = c.token_state {
                env.push(("session_state".into(), st.to_owned()));
            }
        }
        ScriptJob {
            pid: c.peer_id,
            generation: c.generation,
            key_id,
            kind,
            command,
            env,
            credentials_file,
            args: Vec::new(),
            deferred_timeout: Duration::from_secs(u64::from(self.cfg.hand_window)),
        }
    }

    /// `learn-address OP ADDR [CN]` jobs for client `c`'s tunnel addresses.
    fn learn_address(&self, c: &mut ClientConn, op: &str, out: &mut Outputs) {
        if !self.hooked(JobKind::LearnAddress) {
            return;
        }
        if c.lease.is_none() {
            return;
        }
        let addrs: Vec<String> = [c.v4().map(|a| a.to_string()), c.v6().map(|a| a.to_string())]
            .into_iter()
            .flatten()
            .collect();
        for a in addrs {
            let mut job = self.job(c, 0, JobKind::LearnAddress);
            job.args = vec![op.to_owned(), a];
            if op != "delete" {
                job.args.push(c.common_name.clone().unwrap_or_default());
            }
            out.jobs.push(job);
        }
    }

    /// OpenVPN's hook environment for client `c` (without the password).
    fn client_env(&self, c: &ClientConn, kind: JobKind) -> Vec<(String, String)> {
        let real = SocketAddr::new(c.addr.addr.ip().to_canonical(), c.addr.addr.port());
        let mut env: Vec<(String, String)> = vec![
            (
                "common_name".into(),
                c.common_name.clone().unwrap_or_default(),
            ),
            ("dev".into(), self.cfg.dev.clone()),
            (
                "time_unix".into(),
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
                    .to_string(),
            ),
        ];
        let (ip_key, port_key) = if kind == JobKind::AuthUserPass {
            ("untrusted_ip", "untrusted_port")
        } else {
            ("trusted_ip", "trusted_port")
        };
        let ip_key = if real.is_ipv6() {
            format!("{ip_key}6")
        } else {
            ip_key.to_owned()
        };
        env.push((ip_key, real.ip().to_string()));
        env.push((port_key.into(), real.port().to_string()));
        if let Some(u) = &c.username {
            env.push(("username".into(), u.clone()));
        }
        for (k, v) in &c.peer_info {
            env.push((
                k.clone(),
                openvpn_control::peer_info::PeerInfo::sanitized(v),
            ));
        }
        if c.lease.is_some() {
            if let Some(a) = c.v4() {
                env.push(("ifconfig_pool_remote_ip".into(), a.to_string()));
            }
            match (self.shape.topology(), c.v4()) {
                (crate::pool::Topology::Subnet, _) => {
                    if let Some(m) = self.shape.netmask_v4() {
                        env.push(("ifconfig_pool_netmask".into(), m.to_string()));
                    }
                }
                // net30 / p2p: the client's point-to-point peer address.
                (_, Some(a)) => {
                    if let Some(line) = self.shape.ifconfig_push(a, c.fixed_v4_second) {
                        if let Some(peer) = line.split(' ').nth(2) {
                            env.push(("ifconfig_pool_local_ip".into(), peer.to_owned()));
                        }
                    }
                }
                _ => {}
            }
            if let Some(a) = c.v6() {
                env.push(("ifconfig_pool_remote_ip6".into(), a.to_string()));
            }
        }
        if kind == JobKind::ClientDisconnect {
            let (rx, tx) = c.link_bytes();
            env.push(("bytes_received".into(), rx.to_string()));
            env.push(("bytes_sent".into(), tx.to_string()));
            let secs = c.since.elapsed().map(|d| d.as_secs()).unwrap_or(0);
            env.push(("time_duration".into(), secs.to_string()));
        }
        env
    }

    /// After the auth script (if any): with `management-client-auth`, announce the key to the
    /// management interface and wait for its decision; otherwise accept.
    fn auth_management(
        &mut self,
        now: Instant,
        c: &mut ClientConn,
        key_id: KeyId,
        out: &mut Outputs,
    ) {
        if !self.cfg.management_client_auth {
            self.auth_ok(now, c, key_id, out);
            return;
        }
        let kid = key_id.value();
        let mut env = self.client_env(c, JobKind::AuthUserPass);
        if let Some(p) = c.mgmt_password.take() {
            env.push(("password".into(), p));
        }
        let cid = c.generation;
        out.mgmt.push(if kid == 0 {
            Notify::Connect { cid, kid, env }
        } else {
            Notify::Reauth { cid, kid, env }
        });
        c.announced = true;
        if !c.mgmt_pending.contains(&kid) {
            c.mgmt_pending.push(kid);
        }
        c.auth_deadline
            .get_or_insert(now + Duration::from_secs(u64::from(self.cfg.hand_window)));
    }

    /// The embedder's authenticator: asks it about key `key_id` of client `c` (after the auth
    /// script); without one, goes on to the management stage.
    fn auth_external(
        &mut self,
        now: Instant,
        c: &mut ClientConn,
        key_id: KeyId,
        out: &mut Outputs,
    ) {
        if !self.authenticator {
            self.auth_management(now, c, key_id, out);
            return;
        }
        let kid = key_id.value();
        out.auth.push(AuthCall::Authenticate(AuthRequest {
            cid: c.generation,
            key_id: kid,
            reauth: kid != 0,
            common_name: c.common_name.clone(),
            username: c.username.clone().unwrap_or_default(),
            password: c.auth_password.take().unwrap_or_default(),
            peer: SocketAddr::new(c.addr.addr.ip().to_canonical(), c.addr.addr.port()),
            peer_info: c.peer_info.clone(),
            token: c.token_state.and_then(TokenState::from_session_state),
        }));
        if !c.auth_pending.contains(&kid) {
            c.auth_pending.push(kid);
        }
        c.auth_deadline
            .get_or_insert(now + Duration::from_secs(u64::from(self.cfg.hand_window)));
    }

    /// `CR_RESPONSE,{base64}` from the client: to the management interface
    /// (`>CLIENT:CR_RESPONSE,{CID},{KID},{base64}`) and the authenticator, for the key whose
    /// authentication is pending (else the first key).
    fn on_cr_response(&self, c: &ClientConn, response: String, out: &mut Outputs) {
        // Only while a decision is pending: an unsolicited CR_RESPONSE would otherwise be one
        // more authenticator call and management notification per control message.
        let Some(kid) = c.auth_pending.last().or(c.mgmt_pending.last()).copied() else {
            debug!(
                "{}: CR_RESPONSE while no decision is pending, ignored",
                c.addr
            );
            return;
        };
        info!("{}: CR response was sent by the client (key {kid})", c.addr);
        if self.cfg.management_client_auth {
            out.mgmt.push(Notify::CrResponse {
                cid: c.generation,
                kid,
                response: response.clone(),
                env: self.client_env(c, JobKind::AuthUserPass),
            });
        }
        if self.authenticator {
            out.auth.push(AuthCall::Challenge(ChallengeResponse {
                cid: c.generation,
                key_id: kid,
                response_base64: response,
            }));
        }
    }

    /// Whether an embedder's [`crate::auth::Authenticator`] decides (set by the runtime).
    pub fn set_authenticator(&mut self, on: bool) {
        self.authenticator = on;
    }

    /// Sets the `tls-crypt-v2-verify` check (called with the client key's metadata: type byte,
    /// then the data).
    pub fn set_crypt_v2_verify(&mut self, verify: Option<crate::scripts::CryptV2Verify>) {
        self.crypt_v2_verify = verify;
    }

    /// The hooks loaded plug-ins handle ([`crate::plugins::PluginChain::hooks`]): their jobs
    /// are made even without a script (the job's command is then empty).
    pub fn set_plugin_hooks(&mut self, kinds: Vec<JobKind>) {
        self.plugin_hooks = kinds;
    }

    /// Whether a job of `kind` has anything to run: its script or a plug-in.
    fn hooked(&self, kind: JobKind) -> bool {
        self.plugin_hooks.contains(&kind)
            || match kind {
                JobKind::AuthUserPass => self.cfg.auth_user_pass_verify.is_some(),
                JobKind::ClientConnect => self.cfg.client_connect.is_some(),
                JobKind::ClientDisconnect => self.cfg.client_disconnect.is_some(),
                JobKind::LearnAddress => self.cfg.learn_address.is_some(),
                JobKind::ClientGone => false,
            }
    }

    /// A management decision (`client-auth`, `client-auth-nt`, `client-deny`,
    /// `client-pending-auth`) for client `cid`, key `kid`. False if no such request is pending.
    pub fn management_decision(
        &mut self,
        now: Instant,
        cid: u64,
        kid: u8,
        decision: Decision,
        out: &mut Outputs,
    ) -> bool {
        self.decide(now, cid, kid, AuthStage::Management, decision, out)
    }

    /// A decision of the embedder's authenticator for client `cid`, key `kid`. False if the
    /// key is not waiting for one (decided, timed out, or the client is gone).
    pub fn authenticator_decision(
        &mut self,
        now: Instant,
        cid: u64,
        kid: u8,
        decision: AuthDecision,
        out: &mut Outputs,
    ) -> bool {
        self.decide(
            now,
            cid,
            kid,
            AuthStage::Authenticator,
            decision.into_decision(),
            out,
        )
    }

    /// Applies a decision of the authenticator or the management interface (one path).
    fn decide(
        &mut self,
        now: Instant,
        cid: u64,
        kid: u8,
        stage: AuthStage,
        decision: Decision,
        out: &mut Outputs,
    ) -> bool {
        let Some(pid) = self.pid_of_cid(cid) else {
            return false;
        };
        let Some(mut c) = self.clients.get_mut(pid as usize).and_then(Option::take) else {
            return false;
        };
        if !stage.pending(&mut c).contains(&kid) {
            self.clients[pid as usize] = Some(c);
            return false;
        }
        let key_id = KeyId::new(kid).unwrap_or(KeyId::ZERO);
        match decision {
            Decision::Allow(config) => {
                stage.pending(&mut c).retain(|k| *k != kid);
                if c.mgmt_pending.is_empty() && c.auth_pending.is_empty() {
                    c.auth_deadline = None;
                }
                info!(
                    "{}: '{}' authorized by the {} (key {kid})",
                    c.addr,
                    c.common_name.as_deref().unwrap_or(""),
                    stage.name()
                );
                if let (0, Some(text)) = (kid, config) {
                    c.mgmt_config
                        .get_or_insert_with(String::new)
                        .push_str(&text);
                }
                match stage {
                    AuthStage::Authenticator => self.auth_management(now, &mut c, key_id, out),
                    AuthStage::Management => self.auth_ok(now, &mut c, key_id, out),
                }
            }
            Decision::Deny {
                reason,
                client_reason,
            } => {
                stage.pending(&mut c).retain(|k| *k != kid);
                c.mgmt_password = None;
                self.stats.auth_failures += 1;
                warn!(
                    "{}: MULTI: client-deny by the {}: {reason}",
                    c.addr,
                    stage.name()
                );
                c.control.reject(now, key_id, client_reason.as_deref());
                if kid == 0 {
                    c.close_at = Some(now + Duration::from_secs(5));
                }
            }
            Decision::Pending { extra, timeout } => {
                // As OpenVPN: at most half the renegotiation period or the hand-window.
                let most = (self.cfg.reneg_sec / 2).max(self.cfg.hand_window).max(1);
                let timeout = timeout.clamp(1, most);
                send_auth_pending(now, &mut c, key_id, timeout, &extra);
                info!("{}: authentication pending ({timeout} s): {extra}", c.addr);
                c.auth_deadline = Some(now + Duration::from_secs(u64::from(timeout.max(1))));
            }
        }
        self.clients[pid as usize] = Some(c);
        self.after_control(now, pid, out);
        true
    }

    fn pid_of_cid(&self, cid: u64) -> Option<u32> {
        self.clients
            .iter()
            .flatten()
            .find(|c| c.generation == cid)
            .map(|c| c.peer_id)
    }

    /// Sends `msg` (e.g. `RESTART`, `HALT`) to client `cid` and closes it (`client-kill`).
    pub fn kill_client(&mut self, now: Instant, cid: u64, msg: &str, out: &mut Outputs) -> bool {
        // Rare: may move any client's deadline earlier.
        self.timers.rebuild = true;
        let Some(pid) = self.pid_of_cid(cid) else {
            return false;
        };
        if self
            .clients
            .get(pid as usize)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.killed)
        {
            return false;
        }
        self.kill_pid(now, pid, msg, out);
        true
    }

    /// Sends `msg` on the control channel and keeps the client (without data) until the
    /// message is acknowledged or [`KILL_LINGER`] passes, so a lost datagram is retransmitted.
    /// A client without an active control channel is removed at once.
    fn kill_pid(&mut self, now: Instant, pid: u32, msg: &str, out: &mut Outputs) {
        let Some(c) = self.clients.get_mut(pid as usize).and_then(Option::as_mut) else {
            return;
        };
        if c.killed {
            return;
        }
        if !c.control.session().is_active() {
            info!("peer {pid} ({}): killed", c.addr);
            self.remove_client(pid, out);
            return;
        }
        info!("peer {pid} ({}): killed, sending {msg}", c.addr);
        c.control.send_text(now, msg);
        c.killed = true;
        c.close_at = Some(now + KILL_LINGER);
        // A sending thread stops sealing for it.
        self.send_gen += 1;
        while let Some(p) = c.control.poll_transmit(now) {
            c.ctl_bytes.1 += p.len() as u64;
            out.link.push((c.addr, p));
        }
    }

    /// `kill CN` / `kill IP:port`: kills matching clients, returns how many.
    pub fn kill_matching(
        &mut self,
        now: Instant,
        pred: impl Fn(&ClientConn) -> bool,
        out: &mut Outputs,
    ) -> usize {
        // Rare: may move any client's deadline earlier.
        self.timers.rebuild = true;
        let pids: Vec<u32> = self
            .clients
            .iter()
            .flatten()
            .filter(|c| !c.killed && pred(c))
            .map(|c| c.peer_id)
            .collect();
        for &p in &pids {
            self.kill_pid(now, p, "RESTART", out);
        }
        pids.len()
    }

    /// Sends `RESTART` to every client and drops them (SIGUSR1).
    pub fn restart_all(&mut self, now: Instant, out: &mut Outputs) {
        // Rare: may move any client's deadline earlier.
        self.timers.rebuild = true;
        for pid in 0..self.clients.len() as u32 {
            if self.clients[pid as usize].is_some() {
                self.kill_pid(now, pid, "RESTART", out);
            }
        }
    }

    /// `management-hold`: while held, new clients are dropped at the gate.
    pub fn set_hold(&mut self, hold: bool) {
        // Rare: may move any client's deadline earlier.
        self.timers.rebuild = true;
        self.hold = hold;
    }

    /// Whether new clients wait for `hold release`.
    pub fn held(&self) -> bool {
        self.hold
    }

    /// Authentication of `key_id` succeeded: for the first key, run the connect stage.
    fn auth_ok(&mut self, now: Instant, c: &mut ClientConn, key_id: KeyId, out: &mut Outputs) {
        if key_id.value() != 0 {
            c.control.accept(now, key_id, Vec::new());
            self.issue_token(now, c, key_id);
            return;
        }
        self.issue_token(now, c, key_id);
        let pid = c.peer_id;
        if !self.cfg.duplicate_cn {
            if let Some(cn) = c.common_name.clone() {
                self.close_common_name(&cn, None, out);
                // The same name on another worker's socket.
                if let Some(s) = &self.shard {
                    c.connect_seq = s.tables.next_connect_seq();
                    out.close_common_name.push((cn, c.connect_seq));
                }
            }
        }
        let mgmt = c.mgmt_config.take();
        if let Err(reason) = self
            .apply_ccd(c)
            .and_then(|()| mgmt.map_or(Ok(()), |t| self.apply_dynamic_config(c, &t)))
        {
            warn!("{}: {reason}", c.addr);
            c.control.reject(now, key_id, None);
            c.close_at = Some(now + Duration::from_secs(5));
            return;
        }
        let cn = c.common_name.clone();
        let Some(lease) = self.lease_for(cn.as_deref()) else {
            warn!("{}: address pool exhausted", c.addr);
            c.control
                .reject(now, key_id, Some("address pool exhausted"));
            c.close_at = Some(now + Duration::from_secs(5));
            return;
        };
        c.lease = Some(lease);
        if c.control.uses_data_v2() {
            c.data.set_peer_id(Some(self.wire_id(pid)));
        }
        if self.hooked(JobKind::ClientConnect) {
            out.jobs.push(self.job(c, 0, JobKind::ClientConnect));
            return;
        }
        self.finish_accept(now, c);
    }

    /// Reads `client-config-dir/<common name>` (or `DEFAULT`).
    fn apply_ccd(&self, c: &mut ClientConn) -> Result<(), String> {
        let Some(dir) = &self.cfg.client_config_dir else {
            return Ok(());
        };
        let cn = c.common_name.clone().unwrap_or_default();
        let safe = !cn.is_empty() && !cn.contains('/') && cn != "." && cn != "..";
        let text = safe
            .then(|| std::fs::read_to_string(dir.join(&cn)).ok())
            .flatten()
            .or_else(|| std::fs::read_to_string(dir.join("DEFAULT")).ok());
        let Some(text) = text else {
            if self.cfg.ccd_exclusive {
                return Err(format!(
                    "no client-config-dir file for '{cn}' (ccd-exclusive)"
                ));
            }
            return Ok(());
        };
        self.apply_dynamic_config(c, &text)
    }

    /// Applies ccd / client-connect directives.
    fn apply_dynamic_config(&self, c: &mut ClientConn, text: &str) -> Result<(), String> {
        let lines = openvpn_control::options::parse_config(text)
            .map_err(|e| format!("client config: {e}"))?;
        let mut push = c
            .push_list
            .take()
            .unwrap_or_else(|| self.policy.push.clone());
        let result = lines.iter().try_for_each(|l| {
            let at = |e: String| format!("client config line {}: {e}", l.line);
            let d = ccd::parse_directive(l).map_err(at)?;
            if ccd::apply_push(&d, &mut push) {
                return Ok(());
            }
            match d {
                Directive::Disable => Err(at("client disabled (disable)".into())),
                Directive::IfconfigPush(a, second) => {
                    c.fixed_v4 = Some(a);
                    c.fixed_v4_second = second;
                    Ok(())
                }
                Directive::IfconfigIpv6Push(a, bits, remote) => {
                    if remote.is_none() && self.shape.server_addresses().1.is_none() {
                        return Err(at(format!(
                            "ifconfig-ipv6-push {a}/{bits} names no server address and the server has no server-ipv6"
                        )));
                    }
                    c.fixed_v6 = Some((a, bits, remote));
                    Ok(())
                }
                Directive::Iroute(net, bits) => {
                    c.iroutes.push((net, bits));
                    Ok(())
                }
                Directive::Unsupported(why) => {
                    warn!("{}: client config line {}: {why}", c.addr, l.line);
                    Ok(())
                }
                Directive::NoIfconfig { v6 } => {
                    if v6 {
                        c.no_ifconfig.1 = true;
                    } else {
                        c.no_ifconfig.0 = true;
                    }
                    Ok(())
                }
                Directive::Push(_) | Directive::PushReset | Directive::PushRemove(_) => Ok(()),
            }
        });
        c.push_list = Some(push);
        result
    }

    /// Sends our key-method-2 and (for key 0) the PUSH_REPLY.
    fn finish_accept(&mut self, now: Instant, c: &mut ClientConn) {
        let Some(lease) = c.lease else { return };
        let mut push = Vec::new();
        let (_, s6) = self.shape.server_addresses();
        match (c.fixed_v6, lease.v6, s6) {
            _ if c.no_ifconfig.1 => {}
            (Some((a, p, Some(remote))), _, _) => {
                push.push(format!("ifconfig-ipv6 {a}/{p} {remote}"));
            }
            (Some((a, p, None)), _, Some((s, _))) | (None, Some(a), Some((s, p))) => {
                push.push(format!("ifconfig-ipv6 {a}/{p} {s}"));
            }
            _ => {}
        }
        let second = c.fixed_v4.and(c.fixed_v4_second);
        if let (Some(line), false) = (
            c.fixed_v4
                .or(lease.v4)
                .and_then(|a| self.shape.ifconfig_push(a, second)),
            c.no_ifconfig.0,
        ) {
            push.push(line);
        }
        push.append(&mut c.token_push);
        if let Some(list) = &c.push_list {
            c.control.set_push_list(list.clone());
        }
        for (net, bits) in &c.iroutes {
            self.iroutes.push((*net, *bits, c.peer_id));
        }
        self.send_gen += 1;
        c.control.accept(now, KeyId::ZERO, push);
    }

    /// A hook finished.
    pub fn on_job_result(&mut self, now: Instant, r: JobResult, out: &mut Outputs) {
        let pid = r.pid;
        let Some(mut c) = self.clients.get_mut(pid as usize).and_then(Option::take) else {
            return;
        };
        if c.generation != r.generation {
            self.clients[pid as usize] = Some(c);
            return;
        }
        let key_id = KeyId::new(r.key_id).unwrap_or(KeyId::ZERO);
        if let Some(d) = &r.deferred {
            info!(
                "{}: auth-user-pass-verify deferred the decision (auth_control_file)",
                c.addr
            );
            if let Some((timeout, _method, extra)) = &d.pending {
                send_auth_pending(now, &mut c, key_id, *timeout, extra);
            }
            self.clients[pid as usize] = Some(c);
            self.after_control(now, pid, out);
            return;
        }
        match (r.kind, r.success) {
            (JobKind::AuthUserPass, true) => {
                info!(
                    "{}: user '{}' authenticated by auth-user-pass-verify",
                    c.addr,
                    c.username.as_deref().unwrap_or("")
                );
                self.auth_external(now, &mut c, key_id, out);
            }
            (JobKind::AuthUserPass, false) => {
                self.stats.auth_failures += 1;
                c.mgmt_password = None;
                c.auth_password = None;
                warn!(
                    "{}: TLS Auth Error: Auth Username/Password verification failed for peer",
                    c.addr
                );
                c.control.reject(now, key_id, None);
                if key_id.value() == 0 {
                    c.close_at = Some(now + Duration::from_secs(5));
                }
            }
            (JobKind::ClientConnect, true) => {
                if let Some(text) = &r.dynamic_config {
                    if let Err(e) = self.apply_dynamic_config(&mut c, text) {
                        warn!("{}: client-connect: {e}", c.addr);
                        c.control.reject(now, key_id, None);
                        c.close_at = Some(now + Duration::from_secs(5));
                        self.clients[pid as usize] = Some(c);
                        self.after_control(now, pid, out);
                        return;
                    }
                }
                self.finish_accept(now, &mut c);
            }
            (JobKind::ClientConnect, false) => {
                self.stats.auth_failures += 1;
                warn!("{}: client-connect script failed, rejecting", c.addr);
                c.control.reject(now, key_id, None);
                c.close_at = Some(now + Duration::from_secs(5));
            }
            (JobKind::ClientDisconnect | JobKind::LearnAddress | JobKind::ClientGone, _) => {}
        }
        self.clients[pid as usize] = Some(c);
        self.after_control(now, pid, out);
    }

    /// Changes whenever [`ServerCore::send_routes`] may return something else (a client's
    /// addresses routed or removed, an iroute learned, a float).
    pub fn send_routes_generation(&self) -> u64 {
        self.send_gen
    }

    /// The tun → client routing for a sending thread (`udpio`): one entry per client tunnel
    /// address (/32, /128) and per iroute, with the client's address, MSS clamp and a handle
    /// that seals with its data channel.
    pub fn send_routes(&self) -> Vec<SendRoute> {
        let entry = |net: IpAddr, bits: u8, pid: u32| {
            let c = self.clients.get(pid as usize)?.as_ref()?;
            if c.killed {
                return None;
            }
            Some(SendRoute {
                net,
                bits,
                peer_id: pid,
                addr: c.addr,
                mss: mss_limit(self.cfg.mssfix, &c.control),
                sender: c.data.sender(),
            })
        };
        let v4 = self.by_v4.iter().map(|(a, p)| (IpAddr::V4(*a), 32, *p));
        let v6 = self.by_v6.iter().map(|(a, p)| (IpAddr::V6(*a), 128, *p));
        let iroutes = self.iroutes.iter().map(|r| (r.0, r.1, r.2));
        v4.chain(v6)
            .chain(iroutes)
            .filter_map(|(n, b, p)| entry(n, b, p))
            .collect()
    }

    /// A sending thread dropped `n` tun packets without a client route.
    pub fn count_no_route(&mut self, n: u64) {
        self.stats.no_route += n;
    }

    /// A sending thread sent data to client `peer_id` at `at` (its keepalive need not ping).
    pub fn note_sent(&mut self, peer_id: u32, at: Instant) {
        if let Some(c) = self
            .clients
            .get_mut(peer_id as usize)
            .and_then(Option::as_mut)
        {
            c.keepalive.on_sent(at);
        }
    }

    /// The earliest deadline of any client (from the timer heap: no walk over the clients,
    /// but for the rebuild [`TimerHeap`] describes).
    pub fn next_timeout(&mut self, now: Instant) -> Option<Instant> {
        if self.timers.rebuild
            || self
                .timers
                .last_rebuild
                .is_none_or(|t| now.saturating_duration_since(t) >= TIMER_REBUILD_EVERY)
        {
            self.rebuild_timers(now);
        }
        // Wake up for the periodic rebuild too.
        let rebuild_at = self
            .timers
            .last_rebuild
            .map_or(now, |t| t + TIMER_REBUILD_EVERY);
        while let Some(&std::cmp::Reverse((at, pid))) = self.timers.heap.peek() {
            if self.timer_live(at, pid) {
                return Some(at.min(rebuild_at));
            }
            self.timers.heap.pop();
        }
        Some(rebuild_at)
    }

    /// Runs the due timers of the clients whose heap entries are due.
    pub fn on_timeout(&mut self, now: Instant, out: &mut Outputs) {
        let mut due = Vec::new();
        while let Some(&std::cmp::Reverse((at, pid))) = self.timers.heap.peek() {
            if at > now {
                break;
            }
            self.timers.heap.pop();
            if self.timer_live(at, pid) {
                if let Some(c) = self.clients.get_mut(pid as usize).and_then(Option::as_mut) {
                    c.timer_at = None;
                }
                due.push(pid);
            }
        }
        for pid in due {
            self.on_client_timeout(now, pid, out);
            self.arm(pid);
        }
    }

    /// Runs client `pid`'s due timers.
    fn on_client_timeout(&mut self, now: Instant, pid: u32, out: &mut Outputs) {
        let Some(c) = self.clients[pid as usize].as_mut() else {
            return;
        };
        if c.close_at.is_some_and(|t| now >= t) {
            info!("peer {pid}: closing");
            self.remove_client(pid, out);
            return;
        }
        if c.auth_deadline.is_some_and(|t| now >= t) {
            c.auth_deadline = None;
            if !c.mgmt_pending.is_empty() || !c.auth_pending.is_empty() {
                warn!(
                    "peer {pid} ({}): no authentication decision in time, rejecting",
                    c.addr
                );
                self.stats.auth_failures += 1;
                let mut kids = std::mem::take(&mut c.mgmt_pending);
                kids.append(&mut c.auth_pending);
                kids.sort_unstable();
                kids.dedup();
                for kid in kids {
                    let key_id = KeyId::new(kid).unwrap_or(KeyId::ZERO);
                    c.control.reject(now, key_id, None);
                    if kid == 0 {
                        c.close_at = Some(now + Duration::from_secs(5));
                    }
                }
            }
        }
        if c.control.poll_timeout().is_some_and(|t| now >= t) {
            c.control.handle_timeout(now);
        }
        c.data.tick(now);
        if c.inactivity.as_ref().is_some_and(|i| i.expired(now)) {
            info!(
                "peer {pid} ({}): Inactivity timeout (--inactive), closing",
                c.addr
            );
            self.remove_client(pid, out);
            return;
        }
        let mut ping = false;
        if c.established {
            match c.keepalive.handle_timeout(now) {
                Some(KeepaliveAction::SendPing) => ping = true,
                Some(KeepaliveAction::Restart) => {
                    info!(
                        "peer {pid} ({}): Inactivity timeout (--ping-restart), closing",
                        c.addr
                    );
                    self.remove_client(pid, out);
                    return;
                }
                None => {}
            }
        } else if c.keepalive.handle_timeout(now) == Some(KeepaliveAction::Restart) {
            info!(
                "peer {pid} ({}): handshake did not complete, closing",
                c.addr
            );
            self.remove_client(pid, out);
            return;
        }
        if ping {
            self.send_to_client(now, pid, &openvpn_wire::PING_MAGIC, out);
        }
        self.after_control(now, pid, out);
    }

    /// Tells every client that the server goes away (`RESTART` with explicit-exit-notify, on
    /// the reliable control channel, like a kill) and stops taking new clients; returns how
    /// many clients wait for the message to be acknowledged ([`ServerCore::exit_pending`]).
    pub fn shutdown(&mut self, now: Instant, out: &mut Outputs) -> usize {
        // Rare: may move any client's deadline earlier.
        self.timers.rebuild = true;
        self.hold = true;
        let Some(n) = self.cfg.explicit_exit_notify else {
            return 0;
        };
        let msg = if n >= 2 { "RESTART,[N]" } else { "RESTART" };
        for pid in 0..self.clients.len() as u32 {
            if self.clients[pid as usize].is_some() {
                self.kill_pid(now, pid, msg, out);
            }
        }
        self.exit_pending()
    }

    /// Clients whose `RESTART`/`HALT` is not acknowledged yet (killed, still lingering).
    pub fn exit_pending(&self) -> usize {
        self.clients.iter().flatten().filter(|c| c.killed).count()
    }

    /// A TCP connection closed: drop its client.
    pub fn on_conn_closed(&mut self, conn: u64, out: &mut Outputs) {
        // Rare: may move any client's deadline earlier.
        self.timers.rebuild = true;
        let pids: Vec<u32> = self
            .clients
            .iter()
            .flatten()
            .filter(|c| c.addr.conn == Some(conn))
            .map(|c| c.peer_id)
            .collect();
        for p in pids {
            self.remove_client(p, out);
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }
}

/// Tells client `c` that the authentication of `key_id` is pending (the same for a deferred
/// auth script's `auth_pending_file`, `client-pending-auth` and the authenticator):
/// `AUTH_PENDING,timeout N` (plain `AUTH_PENDING` to a client without IV_PROTO bit 4), then
/// `INFO_PRE,{extra}` if there is any.
fn send_auth_pending(now: Instant, c: &mut ClientConn, key_id: KeyId, timeout: u32, extra: &str) {
    let kw = c.control.peer_info().proto_bits()
        & openvpn_control::peer_info::IV_PROTO_AUTH_PENDING_KW
        != 0;
    let pending = if kw {
        format!("AUTH_PENDING,timeout {timeout}")
    } else {
        "AUTH_PENDING".to_owned()
    };
    c.control.send_pending_text(now, key_id, &pending);
    if !extra.is_empty() {
        c.control
            .send_pending_text(now, key_id, &format!("INFO_PRE,{extra}"));
    }
}

/// Which stage a pending authentication waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AuthStage {
    /// The embedder's authenticator.
    Authenticator,
    /// The management interface (`management-client-auth`).
    Management,
}

impl AuthStage {
    fn pending(self, c: &mut ClientConn) -> &mut Vec<u8> {
        match self {
            AuthStage::Authenticator => &mut c.auth_pending,
            AuthStage::Management => &mut c.mgmt_pending,
        }
    }

    fn name(self) -> &'static str {
        match self {
            AuthStage::Authenticator => "authenticator",
            AuthStage::Management => "management interface",
        }
    }
}

/// Wall-clock unix seconds.
fn wall_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The MSS to clamp TCP SYNs to for `mssfix` (0 = off) with this client's cipher.
fn mss_limit(mssfix: u16, control: &ServerSession) -> Option<u16> {
    if mssfix == 0 {
        return None;
    }
    let overhead = control.cipher().map_or(24, |c| c.overhead(4)) as u16;
    Some(openvpn_wire::mss_for_mssfix(mssfix, overhead))
}

/// Whether `a` lies in `net/bits` (false across address families).
pub(crate) fn in_prefix(a: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(bits.min(32)))
            };
            u32::from(a) & m == u32::from(n) & m
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(bits.min(128)))
            };
            u128::from(a) & m == u128::from(n) & m
        }
        _ => false,
    }
}

/// The target of the longest prefix in `prefixes` (network, length, target) that holds `a`.
pub(crate) fn longest_prefix<T: Copy>(prefixes: &[(IpAddr, u8, T)], a: IpAddr) -> Option<T> {
    prefixes
        .iter()
        .filter(|(net, bits, _)| in_prefix(a, *net, *bits))
        .max_by_key(|p| p.1)
        .map(|p| p.2)
}

fn addr_key(p: &PeerAddr) -> Vec<u8> {
    let mut v = Vec::with_capacity(20);
    match p.addr.ip().to_canonical() {
        IpAddr::V4(a) => v.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => v.extend_from_slice(&a.octets()),
    }
    v.extend_from_slice(&p.addr.port().to_be_bytes());
    v
}

/// Source and destination of an IPv4/IPv6 packet.
pub fn ip_addrs(ip: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match ip.first()? >> 4 {
        4 if ip.len() >= 20 => {
            let s: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            Some((IpAddr::from(s), IpAddr::from(d)))
        }
        6 if ip.len() >= 40 => {
            let s: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            Some((IpAddr::from(s), IpAddr::from(d)))
        }
        _ => None,
    }
}
