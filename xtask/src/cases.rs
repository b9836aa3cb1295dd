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
    /// The client never completes initialisation (it may exit or keep retrying).
    NoTunnel,
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
    server_log_has: &[],
    client_log_has: &[],
};

/// Cases with our server: disabled in the first harness version, when openvpn-server had no
/// binary. All of them pass with `cargo xtask interop --all --filter ours-server`; set
/// `enabled: true` here to put them into CI.
const OURS_SERVER: Case = Case {
    enabled: false,
    server: Impl::Ours,
    ..BASE
};

/// Our client binary does not exist yet either.
const OURS_CLIENT: Case = Case {
    enabled: false,
    client: Impl::Ours,
    ..BASE
};

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
    // Our server against the real client (disabled for now, see OURS_SERVER).
    Case {
        name: "ours-server-real-client-udp-tls-crypt-aes256gcm",
        ..OURS_SERVER
    },
    Case {
        name: "ours-server-real-client-udp-tls-crypt-aes128gcm",
        server_ciphers: "AES-128-GCM",
        client_ciphers: "AES-128-GCM",
        ..OURS_SERVER
    },
    Case {
        name: "ours-server-real-client-udp-tls-crypt-chacha20",
        server_ciphers: "CHACHA20-POLY1305",
        client_ciphers: "CHACHA20-POLY1305",
        ..OURS_SERVER
    },
    Case {
        name: "ours-server-real-client-udp-tls-auth-aes256gcm",
        wrap: Wrap::TlsAuth,
        ..OURS_SERVER
    },
    Case {
        name: "ours-server-real-client-udp-tls-crypt-v2-aes256gcm",
        wrap: Wrap::TlsCryptV2,
        ..OURS_SERVER
    },
    Case {
        name: "ours-server-real-client-udp-no-wrap-aes256gcm",
        wrap: Wrap::None,
        ..OURS_SERVER
    },
    Case {
        name: "ours-server-real-client-tcp-tls-crypt-aes256gcm",
        proto: Proto::Tcp,
        ..OURS_SERVER
    },
    Case {
        name: "ours-server-real-client-udp6-tls-crypt-aes256gcm",
        proto: Proto::Udp6,
        ..OURS_SERVER
    },
    Case {
        name: "ours-server-real-client-tcp6-tls-crypt-aes256gcm",
        proto: Proto::Tcp6,
        ..OURS_SERVER
    },
    Case {
        name: "ours-server-real-client-ncp-picks-chacha20",
        server_ciphers: "CHACHA20-POLY1305:AES-256-GCM",
        client_ciphers: "AES-128-GCM:CHACHA20-POLY1305",
        client_log_has: &["Data Channel: cipher 'CHACHA20-POLY1305'"],
        ..OURS_SERVER
    },
    Case {
        name: "ours-server-real-client-no-common-cipher",
        client_ciphers: "CHACHA20-POLY1305",
        expect: Expect::NoTunnel,
        client_log_has: &["AUTH_FAILED"],
        ..OURS_SERVER
    },
    // The real server against our client. Disabled: openvpn-client has no binary yet.
    Case {
        name: "real-server-ours-client-udp-tls-crypt-aes256gcm",
        ..OURS_CLIENT
    },
    Case {
        name: "real-server-ours-client-tcp-tls-auth-aes256gcm",
        proto: Proto::Tcp,
        wrap: Wrap::TlsAuth,
        ..OURS_CLIENT
    },
    // Ours on both sides. Disabled: neither binary exists yet.
    Case {
        name: "ours-ours-udp-tls-crypt-aes256gcm",
        server: Impl::Ours,
        ..OURS_CLIENT
    },
];

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
    fn the_harness_proof_case_is_enabled() {
        let case = CASES
            .iter()
            .find(|c| c.name == "real-real-udp-tls-crypt")
            .expect("case present");
        assert!(case.enabled);
        assert_eq!((case.server, case.client), (Impl::Real, Impl::Real));
    }
}
