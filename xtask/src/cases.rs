//! The interop case table: which implementation runs on each side, and with what settings.
//!
//! To add a case, append a [`Case`] to [`CASES`], starting from [`BASE`] and overriding what
//! differs. `cargo xtask interop --list` prints the table; `--filter NAME` runs a subset.

/// Which program plays a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Impl {
    /// The distribution's OpenVPN 2.6 (`openvpn` on PATH).
    Real,
    /// Our `target/release/openvpn-server` or `target/release/openvpn-client`.
    Ours,
}

/// The transport, as `scripts/ovpn-conf.sh --proto` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Udp,
    Tcp,
    Udp6,
    Tcp6,
}

/// Control-channel wrapping, as `scripts/ovpn-conf.sh --tls` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wrap {
    TlsCrypt,
    TlsAuth,
    TlsCryptV2,
    None,
}

/// What a case must show to pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Both sides reach "Initialization Sequence Completed" and 10.8.0.1 and fd08::1 answer
    /// pings from ovrs-cli.
    Tunnel,
    /// The client never completes initialisation (it may exit or keep retrying). Our client
    /// must exit with a non-zero status.
    NoTunnel,
}

/// What a case does beyond connecting one client and pinging the server (see `interop.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scenario {
    /// Just the pings of [`Expect::Tunnel`].
    Ping,
    /// A second client (cert client2, tun ovrs-tun-c2, its own namespace ovrs-cli2 reaching
    /// the server at 10.77.1.1) with these `data-ciphers`; the server has `client-to-client`
    /// and a version-2 status file. Each client pings the other's v4 and v6 tunnel address;
    /// the status file must list both with their ciphers.
    TwoClients { second_ciphers: &'static str },
    /// Mid-session the client's address moves from 10.77.0.2 to 10.77.0.3 (UDP): a ping
    /// running across the move loses at most 2, and the client initialised exactly once.
    Float,
    /// One continuous ping (-i 0.5) for this many seconds with no loss (reneg-sec cases).
    LongPing { secs: u32 },
    /// Ten pings of compressible payload (`ping -p 00 -s 1000`) to 10.8.0.1, none lost: a
    /// compressing peer compresses them (the case's `client_log_has` shows our side
    /// decompressed them).
    CompressiblePing,
    /// The real server, then ours, on the byte-identical generated server.conf; the client
    /// (real) connects to each and pings.
    SameConfig,
    /// Junk datagrams at the server port from ovrs-cli while pinging; our server must lose
    /// at most 1 ping, stay alive and grow its RSS by less than 5 MiB.
    Flood,
    /// The real server checks username/password with `auth-user-pass-verify … via-file`
    /// (accepts alice/right); the client sends these.
    UserPass {
        user: &'static str,
        pass: &'static str,
    },
    /// The server is SIGKILLed mid-session and restarted on the same config; the client
    /// must reconnect on its own and ping again.
    ServerRestart,
    /// `remote vpn.test` resolves (ovrs-cli's hosts file) to 10.77.0.3 (nobody) first and
    /// 10.77.0.1 second; the client must try them in that order and connect to the second.
    DualStack,
    /// Server operations against the real client (`server_ops.rs`): auth scripts, deferred
    /// auth, auth-gen-token, client-connect, client-config-dir, pool persistence, management.
    ServerOps(Ops),
    /// Laptop safety (`laptop.rs`): our client on ovrs-cli with its own default route to
    /// "the internet" (198.18.0.1 / 2001:db8:ffff::1 on ovrs-srv); the routing tables and
    /// resolv.conf of ovrs-cli must equal their snapshot once the client is gone.
    Laptop(Laptop),
    /// Pushed DNS through a real systemd-resolved (`resolved.rs`): resolved and a system bus
    /// run in a private mount namespace inside ovrs-cli; `resolvectl` must show the pushed
    /// server and domains while connected, and the link is reverted on exit.
    Resolved,
    /// The client reaches the server only through the lab's proxy in ovrs-srv (`proxy_lab.rs`):
    /// its remote does not resolve (TCP) or does not answer (UDP); the proxy must have carried
    /// the tunnel, with username/password.
    Proxy(ProxyKind),
    /// A server config of `tests/corpus/server/` (this file name) as the real 2.6 starts it
    /// (`corpus_lab.rs`): our server on the materialised file, unchanged, in its directory; the
    /// real 2.6 client on a profile written to match; both initialise and the server's tunnel
    /// address(es) answer pings from ovrs-cli.
    CorpusServer(&'static str),
    /// A profile of `tests/corpus/client/` run by our client (only its `remote` lines rewritten
    /// to the lab server) against the real 2.6 server on the matching file of
    /// `tests/corpus/server/` (`corpus_lab.rs`); pings as for [`Scenario::CorpusServer`].
    CorpusClient {
        profile: &'static str,
        server: &'static str,
    },
}

/// The proxy of a [`Scenario::Proxy`] case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyKind {
    /// `http-proxy … AUTHFILE basic` (TCP only).
    Http,
    /// `socks-proxy … AUTHFILE`: CONNECT over TCP, UDP ASSOCIATE over UDP.
    Socks,
}

/// What a [`Scenario::Laptop`] case checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Laptop {
    /// `redirect-gateway def1 ipv6`: outside v4/v6 via the tun, the server via the veth;
    /// SIGTERM restores the tables.
    RedirectSigterm,
    /// The same, then `kill -9`: the client's guardian restores the tables and resolv.conf
    /// within 3 s (no restart needed); a restart then finds nothing to recover.
    RedirectKill9,
    /// The server at 2001:db8:ffff::1 (via the v6 default route) pushes a `route-ipv6` that
    /// covers it: a /128 host route via the original gateway, no loop.
    OverlapIpv6,
    /// An IPv4-only tunnel with `block-ipv6`: IPv6 fails fast, none leaves the veth.
    BlockIpv6,
    /// Pushed DNS in resolv.conf mode, restored byte for byte.
    Dns,
    /// The client as uid 65534 with the root helper; refusals.
    Unprivileged,
    /// `user nobody` / `group nogroup` in the profile: uid/gid 65534 once the tunnel is up, a
    /// SIGUSR1 restart keeps working, `route-pre-down`/`down` run as nobody, and the guardian
    /// (still root) restores routes and resolv.conf after SIGTERM.
    UserGroup,
    /// `redirect-gateway def1 block-local bypass-dhcp` pushed: the laptop's LAN goes into the
    /// tunnel except the server; then `redirect-gateway def1 local` from the profile (the
    /// pushed one filtered): no host route to the on-link server.
    RedirectFlags,
    /// The server restarts under `redirect-gateway def1 ipv6` + pushed DNS: while our client
    /// reconnects, its routes, rules and resolv.conf never change and no packet leaves the
    /// veth outside the tunnel (the leak guard that `persist-tun` asks for).
    ReconnectLeakGuard,
}

/// What a [`Scenario::ServerOps`] case does (our server, the real client; see `server_ops.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ops {
    /// The auth script (via-file, accepts alice/right) exits 2 and writes `1` to
    /// `auth_control_file` 2 s later; the client must connect only after that.
    DeferredAuth,
    /// `auth-gen-token`, `reneg-sec 5`: 12 s of pings through ≥ 2 renegotiations that
    /// authenticate with the token; the auth script ran exactly once.
    TokenReneg,
    /// `auth-gen-token-secret`: the server is stopped and a second instance started on the
    /// same config and secret; the client's reconnect authenticates with its token (the
    /// script still ran once).
    TokenSecondServer,
    /// A client-connect script reads IV_GUI_VER and IV_PLAT and pushes route 10.99.0.0/16,
    /// which must show in `ip -n ovrs-cli route`.
    ClientConnect,
    /// client-config-dir gives client1 10.8.0.50 and fd08::50, removes one pushed route
    /// (`push-remove`) and adds another.
    CcdFixedAddress,
    /// ifconfig-pool-persist: "other" keeps 10.8.0.2, so client1 gets 10.8.0.3; after a
    /// server restart (with "other" gone from the file) client1 gets 10.8.0.3 again.
    PoolPersist,
    /// `user nobody` / `group nogroup` with the management unix socket, the status file and
    /// the ifconfig-pool-persist file in a directory only root may write: all three are
    /// opened before the privilege drop (OpenVPN's order), so the socket answers and both
    /// files are updated by the unprivileged server.
    PrivDropFiles,
    /// `port-share 127.0.0.1 8443` on a TCP server: the real client's tunnel works, and a
    /// plain TCP request to the server's port from ovrs-cli is answered by the web service.
    PortShare,
    /// `chroot DIR` + `user nobody`: the server's root is DIR (`/proc/PID/root`) and it still
    /// serves the client.
    Chroot,
    /// tls-crypt-v2-verify: the script sees `metadata_type` and the metadata file and accepts
    /// (`true`) or rejects (`false`, no tunnel) before any TLS.
    CryptV2Verify(bool),
    /// `user nobody` + `persist-tun`: SIGUSR1 to the (unprivileged) server restarts every
    /// client, which reconnects and pings again; SIGUSR2 logs the client list; the server
    /// lives on (their default action would end it).
    OsSignals,
    /// management-client-auth with an external agent (python3) on the unix socket: the first
    /// attempt is denied (client log: AUTH_FAILED), the retry approved with `client-auth` and a
    /// pushed route (in ovrs-cli's routes), `status 3` lists client1, then `client-kill` and the
    /// client reconnects (approved again with `client-auth-nt`).
    Management,
    /// CR_TEXT dynamic challenge: the management agent answers `>CLIENT:CONNECT` with
    /// `client-pending-auth … CR_TEXT:R,E:Enter your OTP`; a GUI script on the real client's
    /// own management socket sees `>INFOMSG:CR_TEXT:…` and answers `cr-response`; the server
    /// announces `>CLIENT:CR_RESPONSE,CID,KID,base64` and the agent approves.
    CrText,
    /// An openvpn-monitor-style poll (`version`, `state`, `load-stats`, `status 3`, parsed the
    /// way that tool parses them: semver from the version line, tab-separated CLIENT_LIST /
    /// ROUTING_TABLE columns, CRLF framing) over the server's management socket, then its
    /// disconnect (`client-kill` with status 3's Client ID; the client reconnects); run
    /// against our server and, to validate the script, the real 2.6 server.
    Monitor,
    /// crl-verify + reneg-sec 10 with two clients: client2 is revoked (`openssl ca -revoke`,
    /// `-gencrl`) and the server gets SIGHUP; client2's next renegotiation fails while
    /// client1 pings on without loss.
    CrlHup,
}

/// One interop scenario.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Case {
    /// Unique name; also the run directory `target/interop/<name>/`.
    pub(crate) name: &'static str,
    /// Disabled cases are listed but not run (say why in a comment next to the case).
    pub(crate) enabled: bool,
    pub(crate) server: Impl,
    pub(crate) client: Impl,
    pub(crate) proto: Proto,
    pub(crate) wrap: Wrap,
    /// `data-ciphers` of the server.
    pub(crate) server_ciphers: &'static str,
    /// `data-ciphers` of the client.
    pub(crate) client_ciphers: &'static str,
    /// Extra config lines for the server.
    pub(crate) server_extra: &'static [&'static str],
    /// Extra config lines for the client.
    pub(crate) client_extra: &'static [&'static str],
    pub(crate) expect: Expect,
    pub(crate) scenario: Scenario,
    /// Text the server's log must contain once the case has run (checked after the pings).
    pub(crate) server_log_has: &'static [&'static str],
    /// Text the client's log must contain once the case has run.
    pub(crate) client_log_has: &'static [&'static str],
}

impl Proto {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
            Proto::Udp6 => "udp6",
            Proto::Tcp6 => "tcp6",
        }
    }
}

impl Wrap {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Wrap::TlsCrypt => "tls-crypt",
            Wrap::TlsAuth => "tls-auth",
            Wrap::TlsCryptV2 => "tls-crypt-v2",
            Wrap::None => "none",
        }
    }
}

/// The defaults every case starts from: real on both sides, UDP, tls-crypt, AES-256-GCM.
pub(crate) const BASE: Case = Case {
    name: "",
    enabled: true,
    server: Impl::Real,
    client: Impl::Real,
    proto: Proto::Udp,
    wrap: Wrap::TlsCrypt,
    server_ciphers: "AES-256-GCM",
    client_ciphers: "AES-256-GCM",
    server_extra: &[],
    client_extra: &[],
    expect: Expect::Tunnel,
    scenario: Scenario::Ping,
    server_log_has: &[],
    client_log_has: &[],
};

/// Our server (`target/release/openvpn-server`) against the real 2.6 client.
const OURS_SERVER: Case = Case {
    server: Impl::Ours,
    ..BASE
};

/// The real 2.6 server against our client (`target/release/openvpn-client`).
const OURS_CLIENT: Case = Case {
    client: Impl::Ours,
    ..BASE
};

/// Ours on both sides.
const OURS_OURS: Case = Case {
    server: Impl::Ours,
    client: Impl::Ours,
    ..BASE
};

/// The proto x wrapping matrix of one pairing as a `[Case; 16]`, AES-256-GCM, named
/// `<prefix>-<proto>-<wrap>`.
macro_rules! matrix {
    ($prefix:literal, $base:expr) => {
        [
            matrix!(@one $prefix, $base, "udp", Udp, "tls-crypt", TlsCrypt),
            matrix!(@one $prefix, $base, "udp", Udp, "tls-auth", TlsAuth),
            matrix!(@one $prefix, $base, "udp", Udp, "tls-crypt-v2", TlsCryptV2),
            matrix!(@one $prefix, $base, "udp", Udp, "no-wrap", None),
            matrix!(@one $prefix, $base, "tcp", Tcp, "tls-crypt", TlsCrypt),
            matrix!(@one $prefix, $base, "tcp", Tcp, "tls-auth", TlsAuth),
            matrix!(@one $prefix, $base, "tcp", Tcp, "tls-crypt-v2", TlsCryptV2),
            matrix!(@one $prefix, $base, "tcp", Tcp, "no-wrap", None),
            matrix!(@one $prefix, $base, "udp6", Udp6, "tls-crypt", TlsCrypt),
            matrix!(@one $prefix, $base, "udp6", Udp6, "tls-auth", TlsAuth),
            matrix!(@one $prefix, $base, "udp6", Udp6, "tls-crypt-v2", TlsCryptV2),
            matrix!(@one $prefix, $base, "udp6", Udp6, "no-wrap", None),
            matrix!(@one $prefix, $base, "tcp6", Tcp6, "tls-crypt", TlsCrypt),
            matrix!(@one $prefix, $base, "tcp6", Tcp6, "tls-auth", TlsAuth),
            matrix!(@one $prefix, $base, "tcp6", Tcp6, "tls-crypt-v2", TlsCryptV2),
            matrix!(@one $prefix, $base, "tcp6", Tcp6, "no-wrap", None),
        ]
    };
    (@one $prefix:literal, $base:expr, $p:literal, $proto:ident, $w:literal, $wrap:ident) => {
        Case {
            name: concat!($prefix, "-", $p, "-", $w),
            proto: Proto::$proto,
            wrap: Wrap::$wrap,
            ..$base
        }
    };
}

/// `corpus-server-<stem>`: our server on `tests/corpus/server/<stem>.conf`, the real client.
macro_rules! corpus_server {
    ($stem:literal) => {
        Case {
            name: concat!("corpus-server-", $stem),
            scenario: Scenario::CorpusServer(concat!($stem, ".conf")),
            ..OURS_SERVER
        }
    };
}

/// `corpus-client-<stem>`: our client on `tests/corpus/client/<stem>.ovpn`, the real server on
/// `tests/corpus/server/<server>.conf`.
macro_rules! corpus_client {
    ($stem:literal, $server:literal) => {
        Case {
            name: concat!("corpus-client-", $stem),
            scenario: Scenario::CorpusClient {
                profile: concat!($stem, ".ovpn"),
                server: concat!($server, ".conf"),
            },
            ..OURS_CLIENT
        }
    };
}

/// Every case, in run order.
pub(crate) const CASES: &[Case] = &[
    // Real against real: proves the harness, the scripts and the PKI.
    Case {
        name: "real-real-udp-tls-crypt",
        ..BASE
    },
    Case {
        name: "real-real-tcp-tls-auth",
        proto: Proto::Tcp,
        wrap: Wrap::TlsAuth,
        ..BASE
    },
    Case {
        name: "real-real-udp6-tls-crypt-v2-chacha20",
        proto: Proto::Udp6,
        wrap: Wrap::TlsCryptV2,
        server_ciphers: "AES-256-GCM:CHACHA20-POLY1305",
        client_ciphers: "CHACHA20-POLY1305",
        client_log_has: &["Data Channel: cipher 'CHACHA20-POLY1305'"],
        ..BASE
    },
    Case {
        name: "real-real-no-common-cipher",
        server_ciphers: "AES-256-GCM",
        client_ciphers: "CHACHA20-POLY1305",
        expect: Expect::NoTunnel,
        client_log_has: &["AUTH_FAILED"],
        ..BASE
    },
    // ---- Our server against the real client (server issue) ----
    // 1. proto x wrapping, AES-256-GCM, ping 10.8.0.1 and fd08::1.
    MATRIX_OURS_SERVER[0],
    MATRIX_OURS_SERVER[1],
    MATRIX_OURS_SERVER[2],
    MATRIX_OURS_SERVER[3],
    MATRIX_OURS_SERVER[4],
    MATRIX_OURS_SERVER[5],
    MATRIX_OURS_SERVER[6],
    MATRIX_OURS_SERVER[7],
    MATRIX_OURS_SERVER[8],
    MATRIX_OURS_SERVER[9],
    MATRIX_OURS_SERVER[10],
    MATRIX_OURS_SERVER[11],
    MATRIX_OURS_SERVER[12],
    MATRIX_OURS_SERVER[13],
    MATRIX_OURS_SERVER[14],
    MATRIX_OURS_SERVER[15],
    // 2. ciphers and negotiation.
    Case {
        name: "ours-server-real-client-aes128gcm",
        server_ciphers: "AES-128-GCM",
        client_ciphers: "AES-128-GCM",
        client_log_has: &["Data Channel: cipher 'AES-128-GCM'"],
        ..OURS_SERVER
    },
    Case {
        name: "ours-server-real-client-chacha20",
        server_ciphers: "CHACHA20-POLY1305",
        client_ciphers: "CHACHA20-POLY1305",
        client_log_has: &["Data Channel: cipher 'CHACHA20-POLY1305'"],
        ..OURS_SERVER
    },
    Case {
        name: "ours-server-real-client-ncp-picks-aes128gcm",
        server_ciphers: "AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305",
        client_ciphers: "CHACHA20-POLY1305:AES-128-GCM",
        client_log_has: &["Data Channel: cipher 'AES-128-GCM'"],
        ..OURS_SERVER
    },
    Case {
        name: "ours-server-real-client-no-common-cipher",
        client_ciphers: "CHACHA20-POLY1305",
        expect: Expect::NoTunnel,
        server_log_has: &["no shared data channel cipher"],
        client_log_has: &["AUTH_FAILED,Data channel cipher negotiation failed (no shared cipher)"],
        ..OURS_SERVER
    },
    // 3. two real clients with different ciphers, client-to-client, status file.
    Case {
        name: "ours-server-two-real-clients-c2c",
        client_ciphers: "AES-256-GCM",
        server_ciphers: "AES-256-GCM:CHACHA20-POLY1305",
        scenario: Scenario::TwoClients {
            second_ciphers: "CHACHA20-POLY1305",
        },
        ..OURS_SERVER
    },
    // 3b. the same with our server as two workers (`workers 2`: SO_REUSEPORT sockets, one
    // core each; the two clients may land on different workers, c2c then crosses them).
    Case {
        name: "ours-server-workers-2-two-real-clients-c2c",
        client_ciphers: "AES-256-GCM",
        server_ciphers: "AES-256-GCM:CHACHA20-POLY1305",
        server_extra: &["workers 2"],
        server_log_has: &["2 workers"],
        scenario: Scenario::TwoClients {
            second_ciphers: "CHACHA20-POLY1305",
        },
        ..OURS_SERVER
    },
    // 4. float: the real client's source address changes mid-session.
    Case {
        name: "ours-server-real-client-float",
        scenario: Scenario::Float,
        server_log_has: &["floated from"],
        ..OURS_SERVER
    },
    Case {
        name: "ours-server-workers-2-real-client-float",
        server_extra: &["workers 2"],
        scenario: Scenario::Float,
        server_log_has: &["floated from", "2 workers"],
        ..OURS_SERVER
    },
    // 5. server-initiated renegotiation every 10 s under a continuous ping.
    Case {
        name: "ours-server-real-client-reneg-sec-10",
        server_extra: &["reneg-sec 10"],
        scenario: Scenario::LongPing { secs: 35 },
        ..OURS_SERVER
    },
    // 6. the same generated server.conf starts the real server and ours.
    Case {
        name: "same-server-conf-real-then-ours",
        scenario: Scenario::SameConfig,
        ..OURS_SERVER
    },
    // 7. junk at the server port while a client pings.
    Case {
        name: "ours-server-flood-junk",
        scenario: Scenario::Flood,
        ..OURS_SERVER
    },
    // ---- The real server against our client (client issue) ----
    // 8. proto x wrapping, ciphers, NCP both ways, renegotiation.
    MATRIX_OURS_CLIENT[0],
    MATRIX_OURS_CLIENT[1],
    MATRIX_OURS_CLIENT[2],
    MATRIX_OURS_CLIENT[3],
    MATRIX_OURS_CLIENT[4],
    MATRIX_OURS_CLIENT[5],
    MATRIX_OURS_CLIENT[6],
    MATRIX_OURS_CLIENT[7],
    MATRIX_OURS_CLIENT[8],
    MATRIX_OURS_CLIENT[9],
    MATRIX_OURS_CLIENT[10],
    MATRIX_OURS_CLIENT[11],
    MATRIX_OURS_CLIENT[12],
    MATRIX_OURS_CLIENT[13],
    MATRIX_OURS_CLIENT[14],
    MATRIX_OURS_CLIENT[15],
    Case {
        name: "real-server-ours-client-aes128gcm",
        server_ciphers: "AES-128-GCM",
        client_ciphers: "AES-128-GCM",
        client_log_has: &["Data Channel: cipher 'AES-128-GCM'"],
        ..OURS_CLIENT
    },
    Case {
        name: "real-server-ours-client-chacha20",
        server_ciphers: "CHACHA20-POLY1305",
        client_ciphers: "CHACHA20-POLY1305",
        client_log_has: &["Data Channel: cipher 'CHACHA20-POLY1305'"],
        ..OURS_CLIENT
    },
    Case {
        name: "real-server-ours-client-ncp-picks-aes128gcm",
        server_ciphers: "AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305",
        client_ciphers: "CHACHA20-POLY1305:AES-128-GCM",
        client_log_has: &["Data Channel: cipher 'AES-128-GCM'"],
        ..OURS_CLIENT
    },
    Case {
        name: "real-server-ours-client-ncp-picks-chacha20",
        server_ciphers: "CHACHA20-POLY1305:AES-256-GCM",
        client_ciphers: "AES-128-GCM:AES-256-GCM:CHACHA20-POLY1305",
        client_log_has: &["Data Channel: cipher 'CHACHA20-POLY1305'"],
        ..OURS_CLIENT
    },
    Case {
        name: "real-server-ours-client-no-common-cipher",
        client_ciphers: "CHACHA20-POLY1305",
        expect: Expect::NoTunnel,
        client_log_has: &["AUTH_FAILED"],
        ..OURS_CLIENT
    },
    Case {
        name: "real-server-ours-client-reneg-sec-10",
        server_extra: &["reneg-sec 10"],
        scenario: Scenario::LongPing { secs: 35 },
        ..OURS_CLIENT
    },
    // 8b. compression: the real server compresses (allow-compression yes) and pushes the
    // algorithm; our client decompresses (allow-compression asym, or 2.6's default for a
    // profile with the algorithm) and sends uncompressed (0xFA / lz4-v2 uncompressed).
    Case {
        name: "real-server-ours-client-compress-comp-lzo-yes",
        server_extra: &[
            "comp-lzo yes",
            "allow-compression yes",
            "push \"comp-lzo yes\"",
        ],
        client_extra: &["allow-compression asym"],
        scenario: Scenario::CompressiblePing,
        client_log_has: &[
            "compression 'comp-lzo yes': LZO packets from the server are decompressed",
            "decompressing: the server sent a compressed packet",
        ],
        ..OURS_CLIENT
    },
    // The other way: the real client compresses to our server (its profile's algorithm with
    // allow-compression yes; it ignores the pushed stub), ours decompresses and answers
    // uncompressed.
    Case {
        name: "ours-server-real-client-compress-comp-lzo-yes",
        server_extra: &["comp-lzo yes"],
        client_extra: &[
            "comp-lzo yes",
            "allow-compression yes",
            "pull-filter ignore comp-lzo",
        ],
        scenario: Scenario::CompressiblePing,
        server_log_has: &["decompressing what the client compresses"],
        ..OURS_SERVER
    },
    Case {
        name: "ours-server-real-client-compress-lz4",
        server_extra: &["compress lz4", "allow-compression yes"],
        client_extra: &[
            "compress lz4",
            "allow-compression yes",
            "pull-filter ignore compress",
        ],
        scenario: Scenario::CompressiblePing,
        server_log_has: &["decompressing what the client compresses"],
        ..OURS_SERVER
    },
    Case {
        name: "real-server-ours-client-compress-lz4-v2",
        server_extra: &[
            "compress lz4-v2",
            "allow-compression yes",
            "push \"compress lz4-v2\"",
        ],
        client_extra: &["compress lz4-v2"],
        scenario: Scenario::CompressiblePing,
        client_log_has: &[
            "compression 'compress lz4-v2': LZ4 packets from the server are decompressed",
            "decompressing: the server sent a compressed packet",
        ],
        ..OURS_CLIENT
    },
    // 9. username/password checked by the real server's script.
    Case {
        name: "real-server-ours-client-auth-user-pass-right",
        scenario: Scenario::UserPass {
            user: "alice",
            pass: "right",
        },
        server_log_has: &["Username/Password authentication succeeded for username 'alice'"],
        ..OURS_CLIENT
    },
    Case {
        name: "real-server-ours-client-auth-user-pass-wrong",
        scenario: Scenario::UserPass {
            user: "alice",
            pass: "wrong",
        },
        expect: Expect::NoTunnel,
        server_log_has: &["Auth Username/Password verification failed"],
        client_log_has: &["AUTH_FAILED"],
        ..OURS_CLIENT
    },
    // 10. the server dies and comes back; our client reconnects by itself.
    Case {
        name: "real-server-restart-ours-client-reconnects",
        client_extra: &["ping 2", "ping-restart 6"],
        scenario: Scenario::ServerRestart,
        ..OURS_CLIENT
    },
    // 11. a name with an unreachable address first and the server second.
    Case {
        name: "real-server-ours-client-dual-address",
        client_extra: &["connect-timeout 4"],
        scenario: Scenario::DualStack,
        ..OURS_CLIENT
    },
    // 12. peer info from setenv / push-peer-info reaches the server.
    Case {
        name: "real-server-ours-client-peer-info",
        client_extra: &[
            "setenv IV_GUI_VER \"ovrs-test 1.0\"",
            "setenv UV_TESTVAR hello",
            "push-peer-info",
        ],
        server_log_has: &[
            "peer info: IV_GUI_VER=ovrs-test_1.0",
            "peer info: UV_TESTVAR=hello",
        ],
        ..OURS_CLIENT
    },
    // 13. ours on both sides.
    Case {
        name: "ours-ours-udp-tls-crypt-v2",
        wrap: Wrap::TlsCryptV2,
        ..OURS_OURS
    },
    Case {
        name: "ours-ours-tcp-tls-crypt-v2",
        proto: Proto::Tcp,
        wrap: Wrap::TlsCryptV2,
        ..OURS_OURS
    },
    // 14. roaming: our client's address changes mid-session.
    Case {
        name: "real-server-ours-client-roaming",
        scenario: Scenario::Float,
        server_log_has: &["floated from"],
        ..OURS_CLIENT
    },
    Case {
        name: "ours-ours-roaming",
        scenario: Scenario::Float,
        server_log_has: &["floated from"],
        ..OURS_OURS
    },
    // ---- A client that is safe on a real laptop (laptop.rs, docs/laptop-safety.md) ----
    // 15. redirect-gateway def1 ipv6 pushed; clean exit, then kill -9 + restart.
    Case {
        name: "laptop-redirect-def1-ipv6-sigterm",
        server_extra: &["push \"redirect-gateway def1 ipv6\""],
        scenario: Scenario::Laptop(Laptop::RedirectSigterm),
        ..OURS_CLIENT
    },
    Case {
        name: "laptop-redirect-def1-ipv6-kill-9-restart",
        server_extra: &[
            "push \"redirect-gateway def1 ipv6\"",
            "push \"dhcp-option DNS 10.8.0.1\"",
        ],
        scenario: Scenario::Laptop(Laptop::RedirectKill9),
        ..OURS_CLIENT
    },
    // 16. a pushed route-ipv6 that covers the server's own (IPv6) address.
    Case {
        name: "laptop-route-ipv6-covers-server",
        proto: Proto::Udp6,
        // multihome: answer from the address the client sent to (2001:db8:ffff::1).
        server_extra: &["multihome", "push \"route-ipv6 2001:db8::/32\""],
        scenario: Scenario::Laptop(Laptop::OverlapIpv6),
        ..OURS_CLIENT
    },
    // 17. block-ipv6 with an IPv4-only tunnel (the server has no server-ipv6).
    Case {
        name: "laptop-block-ipv6-v4-only-tunnel",
        server_extra: &["push \"block-ipv6\""],
        scenario: Scenario::Laptop(Laptop::BlockIpv6),
        ..OURS_CLIENT
    },
    // 18. pushed DNS in resolv.conf mode.
    Case {
        name: "laptop-dns-resolv-conf",
        server_extra: &[
            "push \"dhcp-option DNS 10.8.0.1\"",
            "push \"dhcp-option DOMAIN vpn.test\"",
        ],
        scenario: Scenario::Laptop(Laptop::Dns),
        ..OURS_CLIENT
    },
    // 18b. pushed DNS through a real systemd-resolved (D-Bus), not resolv.conf.
    Case {
        name: "laptop-dns-systemd-resolved",
        server_extra: &[
            "push \"redirect-gateway def1\"",
            "push \"dhcp-option DNS 10.8.0.1\"",
            "push \"dhcp-option DOMAIN vpn.test\"",
        ],
        scenario: Scenario::Resolved,
        ..OURS_CLIENT
    },
    // 15b. redirect-gateway flags block-local, bypass-dhcp, then local.
    Case {
        name: "laptop-redirect-block-local-then-local",
        server_extra: &["push \"redirect-gateway def1 block-local bypass-dhcp\""],
        scenario: Scenario::Laptop(Laptop::RedirectFlags),
        ..OURS_CLIENT
    },
    // 18c. the server restarts: routes, blocks and DNS stay while the client reconnects.
    Case {
        name: "laptop-reconnect-keeps-routes-no-leak",
        server_extra: &[
            "push \"redirect-gateway def1 ipv6\"",
            "push \"dhcp-option DNS 10.8.0.1\"",
            // On SIGTERM the server tells its clients to reconnect (RESTART).
            "explicit-exit-notify 1",
        ],
        client_log_has: &["Restart: server"],
        scenario: Scenario::Laptop(Laptop::ReconnectLeakGuard),
        ..OURS_CLIENT
    },
    // 19. the client as an ordinary user with the privileged helper.
    Case {
        name: "laptop-unprivileged-client-helper",
        server_extra: &["push \"route 10.66.0.0 255.255.0.0\""],
        scenario: Scenario::Laptop(Laptop::Unprivileged),
        ..OURS_CLIENT
    },
    // 19b. user/group in the profile: privileges dropped once the tunnel is up.
    Case {
        name: "laptop-user-group-drops-privileges",
        server_extra: &[
            "push \"redirect-gateway def1 ipv6\"",
            "push \"dhcp-option DNS 10.8.0.1\"",
        ],
        client_extra: &["user nobody", "group nogroup"],
        client_log_has: &["dropped privileges: user nobody group nogroup"],
        scenario: Scenario::Laptop(Laptop::UserGroup),
        ..OURS_CLIENT
    },
    // ---- Topologies: OpenVPN's default net30 (no 'topology' line) and p2p ----
    Case {
        name: "topology-net30-ours-server-real-client",
        server_extra: &["topology net30"],
        server_log_has: &["topology net30"],
        client_log_has: &["10.8.0.6", "10.8.0.5"],
        ..OURS_SERVER
    },
    Case {
        name: "topology-p2p-ours-server-real-client",
        server_extra: &["topology p2p"],
        client_log_has: &["10.8.0.4"],
        ..OURS_SERVER
    },
    Case {
        name: "topology-net30-real-server-ours-client",
        server_extra: &["topology net30"],
        ..OURS_CLIENT
    },
    Case {
        name: "topology-net30-ours-both",
        server_extra: &["topology net30", "client-to-client"],
        ..OURS_OURS
    },
    // ---- Server operations: our server, the real client (server_ops.rs) ----
    Case {
        name: "ops-auth-script-accepts-alice",
        scenario: Scenario::UserPass {
            user: "alice",
            pass: "right",
        },
        ..OURS_SERVER
    },
    Case {
        name: "ops-auth-script-rejects-bob",
        scenario: Scenario::UserPass {
            user: "bob",
            pass: "right",
        },
        expect: Expect::NoTunnel,
        client_log_has: &["AUTH_FAILED"],
        ..OURS_SERVER
    },
    Case {
        name: "ops-deferred-auth",
        scenario: Scenario::ServerOps(Ops::DeferredAuth),
        server_log_has: &["deferred the decision"],
        ..OURS_SERVER
    },
    Case {
        name: "ops-auth-token-reneg",
        scenario: Scenario::ServerOps(Ops::TokenReneg),
        server_log_has: &["authenticated by auth-token"],
        ..OURS_SERVER
    },
    Case {
        name: "ops-auth-token-second-server",
        client_extra: &["ping 2", "ping-restart 6"],
        scenario: Scenario::ServerOps(Ops::TokenSecondServer),
        ..OURS_SERVER
    },
    Case {
        name: "ops-client-connect-gui-ver-route",
        client_extra: &["setenv IV_GUI_VER ovrs-interop-gui-1.0"],
        scenario: Scenario::ServerOps(Ops::ClientConnect),
        ..OURS_SERVER
    },
    Case {
        name: "ops-ccd-fixed-address",
        scenario: Scenario::ServerOps(Ops::CcdFixedAddress),
        ..OURS_SERVER
    },
    Case {
        name: "ops-pool-persist-restart",
        client_extra: &["ping 2", "ping-restart 6"],
        scenario: Scenario::ServerOps(Ops::PoolPersist),
        ..OURS_SERVER
    },
    Case {
        name: "ops-user-nobody-keeps-root-opened-files",
        scenario: Scenario::ServerOps(Ops::PrivDropFiles),
        server_log_has: &["dropped privileges to user nobody"],
        ..OURS_SERVER
    },
    Case {
        name: "ops-sigusr1-unprivileged-restart-sigusr2-status",
        client_extra: &["ping 2", "ping-restart 6"],
        scenario: Scenario::ServerOps(Ops::OsSignals),
        server_log_has: &["SIGUSR1 received", "client1"],
        ..OURS_SERVER
    },
    Case {
        name: "ops-tls-crypt-v2-verify-accepts",
        wrap: Wrap::TlsCryptV2,
        scenario: Scenario::ServerOps(Ops::CryptV2Verify(true)),
        ..OURS_SERVER
    },
    Case {
        name: "ops-tls-crypt-v2-verify-rejects",
        wrap: Wrap::TlsCryptV2,
        scenario: Scenario::ServerOps(Ops::CryptV2Verify(false)),
        expect: Expect::NoTunnel,
        server_log_has: &["tls-crypt-v2-verify rejected the client key"],
        ..OURS_SERVER
    },
    Case {
        name: "ops-chroot-user-nobody",
        scenario: Scenario::ServerOps(Ops::Chroot),
        server_log_has: &["chroot to"],
        ..OURS_SERVER
    },
    Case {
        name: "ops-port-share-tcp",
        proto: Proto::Tcp,
        scenario: Scenario::ServerOps(Ops::PortShare),
        ..OURS_SERVER
    },
    Case {
        name: "ops-management-deny-auth-kill-status",
        client_extra: &["auth-retry nointeract"],
        scenario: Scenario::ServerOps(Ops::Management),
        client_log_has: &["AUTH_FAILED"],
        ..OURS_SERVER
    },
    Case {
        name: "ops-management-cr-text-challenge",
        scenario: Scenario::ServerOps(Ops::CrText),
        server_log_has: &["CR response was sent by the client"],
        ..OURS_SERVER
    },
    Case {
        name: "ops-management-monitor-style-poll",
        scenario: Scenario::ServerOps(Ops::Monitor),
        ..OURS_SERVER
    },
    Case {
        name: "ops-management-monitor-style-poll-real-server",
        scenario: Scenario::ServerOps(Ops::Monitor),
        ..BASE
    },
    Case {
        name: "ops-sighup-crl-revokes-on-renegotiation",
        scenario: Scenario::ServerOps(Ops::CrlHup),
        ..OURS_SERVER
    },
    // ---- Proxies (proxy_lab.rs): the lab's proxy is the only way to the server. Real
    // against real proves the proxy script; then our client. ----
    Case {
        name: "proxy-http-real-real",
        proto: Proto::Tcp,
        scenario: Scenario::Proxy(ProxyKind::Http),
        ..BASE
    },
    Case {
        name: "proxy-http-real-server-ours-client",
        proto: Proto::Tcp,
        scenario: Scenario::Proxy(ProxyKind::Http),
        client_log_has: &["HTTP proxy: HTTP/1.1 200"],
        ..OURS_CLIENT
    },
    Case {
        name: "proxy-socks-tcp-real-server-ours-client",
        proto: Proto::Tcp,
        scenario: Scenario::Proxy(ProxyKind::Socks),
        ..OURS_CLIENT
    },
    Case {
        name: "proxy-socks-udp-real-real",
        scenario: Scenario::Proxy(ProxyKind::Socks),
        ..BASE
    },
    Case {
        name: "proxy-socks-udp-real-server-ours-client",
        scenario: Scenario::Proxy(ProxyKind::Socks),
        client_log_has: &["SOCKS proxy relays UDP"],
        ..OURS_CLIENT
    },
    // ---- Corpus files started for real (corpus_lab.rs): installer and sample configs the
    // real 2.6 starts (expected.tsv), materialised by oracle.sh. Our server on the file as is
    // against the real client; then corpus profiles for our client against the real server on
    // the matching corpus server (the profile's `remote` lines rewritten to the lab). ----
    corpus_server!("angristan-tls-crypt-ecdsa"),
    corpus_server!("nyr-server-udp-ipv6"),
    corpus_server!("nyr-server-tcp-status"),
    corpus_server!("nyr-server-legacy-tls-auth"),
    corpus_server!("pivpn-server-tls-auth"),
    corpus_server!("pivpn-server-ecdsa-tls-crypt"),
    corpus_server!("kylemanna-genconfig-udp"),
    corpus_server!("openvpn-sample-server"),
    corpus_server!("openvpn-sample-server-tcp-comp-lzo"),
    corpus_server!("angristan-ipv6-tls-auth-lz4"),
    corpus_server!("openvpn-man-server-expanded-net30"),
    corpus_server!("openvpn-man-server-expanded-subnet"),
    corpus_client!("angristan-client-tls-crypt", "angristan-tls-crypt-ecdsa"),
    corpus_client!("nyr-client-block-outside-dns", "nyr-server-udp-ipv6"),
    corpus_client!("pivpn-client-tls-crypt", "pivpn-server-ecdsa-tls-crypt"),
    corpus_client!("pivpn-client-tls-auth-legacy", "pivpn-server-tls-auth"),
    corpus_client!("kylemanna-getclient-combined", "kylemanna-genconfig-udp"),
    corpus_client!("openvpn-sample-client", "openvpn-sample-server"),
];

/// Issue item 1: our server, every proto x wrapping.
const MATRIX_OURS_SERVER: [Case; 16] = matrix!("ours-server-real-client", OURS_SERVER);
/// Issue item 8: our client, every proto x wrapping.
const MATRIX_OURS_CLIENT: [Case; 16] = matrix!("real-server-ours-client", OURS_CLIENT);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_usable_as_directories() {
        let mut seen = std::collections::HashSet::new();
        for case in CASES {
            assert!(!case.name.is_empty());
            assert!(
                case.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{}",
                case.name
            );
            assert!(seen.insert(case.name), "duplicate case {}", case.name);
        }
    }

    #[test]
    fn corpus_cases_name_files_the_real_openvpn_starts() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus");
        let expected = std::fs::read_to_string(corpus.join("expected.tsv")).expect("expected.tsv");
        let real_ok = |role: &str, file: &str| {
            expected
                .lines()
                .any(|l| l.starts_with(&format!("{role}\t{file}\tok")))
        };
        let mut n = 0;
        for case in CASES {
            let files: &[(&str, &str)] = match case.scenario {
                Scenario::CorpusServer(file) => &[("server", file)],
                Scenario::CorpusClient { profile, server } => {
                    &[("client", profile), ("server", server)]
                }
                _ => continue,
            };
            n += 1;
            for (role, file) in files {
                assert!(corpus.join(role).join(file).is_file(), "{role}/{file}");
                assert!(
                    real_ok(role, file),
                    "{role}/{file} is not ok in expected.tsv"
                );
            }
        }
        assert!(n >= 7, "{n} corpus cases");
    }

    #[test]
    fn the_harness_proof_case_is_enabled() {
        let case = CASES
            .iter()
            .find(|c| c.name == "real-real-udp-tls-crypt")
            .expect("case present");
        assert!(case.enabled);
        assert_eq!((case.server, case.client), (Impl::Real, Impl::Real));
    }
}
