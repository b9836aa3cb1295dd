//! The client side of a connection: push request/reply, pushed options, cipher checks.
//!
//! ```text
//!  Session events ─▶ ClientSession ─▶ ClientEvent (Connected{pushed}, KeysReady{cipher}, AuthFailed …)
//!                     └─ sends PUSH_REQUEST every 5 s until PUSH_REPLY (all continuation parts)
//! ```

use std::collections::VecDeque;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use openvpn_crypto::{CipherKind, KeyBlock};
use openvpn_wire::KeyId;

use crate::compression::{AllowCompression, framing_for};
use crate::messages::ControlMessage;
use crate::options::{self, Continuation, OptionLine};
use crate::session::{CloseReason, Event, KeyDerivation, Session};

/// Interval between PUSH_REQUESTs.
const PUSH_REQUEST_INTERVAL: Duration = Duration::from_secs(5);

/// Client-side negotiation settings.
#[derive(Clone, Debug)]
pub struct ClientPolicy {
    /// `data-ciphers`, in preference order.
    pub ciphers: Vec<String>,
    /// `data-ciphers-fallback`.
    pub fallback: Option<String>,
    /// `pull-filter` rules in order: (action, prefix).
    pub pull_filter: Vec<(PullFilterAction, String)>,
    /// `route-nopull`: ignore pushed routes and DNS.
    pub route_nopull: bool,
    /// The `allow-compression` mode in force ([`AllowCompression::effective`]): with `no` a
    /// pushed real compression algorithm fails the connection, as in 2.6.
    pub allow_compression: AllowCompression,
}

/// What `pull-filter` does with a matching option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullFilterAction {
    /// Keep it.
    Accept,
    /// Drop it silently.
    Ignore,
    /// Refuse the whole push (connection fails).
    Reject,
}

/// An IPv4 route from `route`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteV4 {
    /// Network.
    pub network: Ipv4Addr,
    /// Netmask.
    pub netmask: Ipv4Addr,
    /// Gateway (`None` = the VPN gateway).
    pub gateway: Option<Ipv4Addr>,
    /// Metric.
    pub metric: Option<u32>,
}

/// An IPv6 route from `route-ipv6`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteV6 {
    /// Network.
    pub network: Ipv6Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Gateway.
    pub gateway: Option<Ipv6Addr>,
    /// Metric.
    pub metric: Option<u32>,
}

/// Everything the server pushed that this implementation understands.
#[derive(Clone, Debug, Default)]
pub struct PushedOptions {
    /// `topology`.
    pub topology: Option<String>,
    /// `ifconfig local netmask-or-remote`.
    pub ifconfig: Option<(Ipv4Addr, Ipv4Addr)>,
    /// `ifconfig-ipv6 addr/bits remote`.
    pub ifconfig_ipv6: Option<(Ipv6Addr, u8, Option<Ipv6Addr>)>,
    /// `route-gateway`.
    pub route_gateway: Option<Ipv4Addr>,
    /// `route` entries.
    pub routes: Vec<RouteV4>,
    /// `route-ipv6` entries.
    pub routes_v6: Vec<RouteV6>,
    /// `redirect-gateway` flags (present = redirect).
    pub redirect_gateway: Option<Vec<String>>,
    /// `block-ipv6`.
    pub block_ipv6: bool,
    /// `dhcp-option` entries (type, value).
    pub dhcp_options: Vec<(String, String)>,
    /// `dns …` lines, raw.
    pub dns: Vec<Vec<String>>,
    /// `peer-id`.
    pub peer_id: Option<u32>,
    /// `cipher`.
    pub cipher: Option<String>,
    /// `key-derivation tls-ekm` or `protocol-flags tls-ekm`.
    pub tls_ekm: bool,
    /// `protocol-flags cc-exit`.
    pub cc_exit: bool,
    /// `protocol-flags dyn-tls-crypt`.
    pub dyn_tls_crypt: bool,
    /// `ping`.
    pub ping: Option<u32>,
    /// `ping-restart`.
    pub ping_restart: Option<u32>,
    /// `tun-mtu`.
    pub tun_mtu: Option<u16>,
    /// `auth-token`.
    pub auth_token: Option<String>,
    /// `auth-token-user` (base64).
    pub auth_token_user: Option<String>,
    /// `explicit-exit-notify`.
    pub explicit_exit_notify: Option<u32>,
    /// `compress` / `comp-lzo` framing asked for.
    pub compression: Option<Vec<String>>,
    /// Options accepted but without a dedicated field (echo, setenv-safe, …).
    pub other: Vec<OptionLine>,
    /// Pushed options deliberately not applied (logged), e.g. routes via `net_gateway`.
    pub ignored: Vec<OptionLine>,
}

/// Whether a pushed `route`/`route-ipv6` names `net_gateway` as its gateway.
fn is_net_gateway_route(o: &OptionLine) -> bool {
    let gateway_arg = if o.name == "route" { 2 } else { 1 };
    o.arg(gateway_arg) == Some("net_gateway")
}

fn bad(o: &OptionLine) -> String {
    format!("pushed option '{}' is malformed", o.render())
}

fn num<T: std::str::FromStr>(o: &OptionLine, i: usize) -> Result<T, String> {
    o.arg(i).and_then(|s| s.parse().ok()).ok_or_else(|| bad(o))
}

impl PushedOptions {
    /// Applies parsed options (later ones override earlier ones).
    pub fn apply(&mut self, opts: &[OptionLine], route_nopull: bool) -> Result<(), String> {
        for o in opts {
            let is_route_class = matches!(
                o.name.as_str(),
                "route"
                    | "route-ipv6"
                    | "route-gateway"
                    | "redirect-gateway"
                    | "redirect-private"
                    | "dhcp-option"
                    | "dns"
                    | "block-ipv6"
                    | "route-metric"
            );
            if route_nopull && is_route_class {
                continue;
            }
            match o.name.as_str() {
                "topology" => self.topology = o.arg(0).map(str::to_owned),
                "ifconfig" => self.ifconfig = Some((num(o, 0)?, num(o, 1)?)),
                "ifconfig-ipv6" => {
                    let a = o.arg(0).ok_or_else(|| bad(o))?;
                    let (addr, bits) = a.split_once('/').ok_or_else(|| bad(o))?;
                    let addr: Ipv6Addr = addr.parse().map_err(|_| bad(o))?;
                    let bits: u8 = bits
                        .parse()
                        .ok()
                        .filter(|b| *b <= 128)
                        .ok_or_else(|| bad(o))?;
                    let remote = o.arg(1).and_then(|r| r.parse().ok());
                    self.ifconfig_ipv6 = Some((addr, bits, remote));
                }
                "route-gateway" => {
                    if o.arg(0) != Some("dhcp") {
                        self.route_gateway = Some(num(o, 0)?);
                    }
                }
                "route" | "route-ipv6" if is_net_gateway_route(o) => {
                    // A route around the tunnel (the client's own gateway) is taken from the
                    // profile only: a server must not be able to steer the client's traffic
                    // outside the tunnel. Skipped, not fatal, so the push still applies.
                    tracing::warn!(
                        option = %o.render(),
                        "ignoring a pushed route via net_gateway (allowed in the profile only)"
                    );
                    self.ignored.push(o.clone());
                }
                "route" => {
                    let network = num(o, 0)?;
                    let netmask = match o.arg(1) {
                        None | Some("default") => Ipv4Addr::BROADCAST,
                        Some(m) => m.parse().map_err(|_| bad(o))?,
                    };
                    let gateway = match o.arg(2) {
                        None | Some("vpn_gateway") | Some("default") => None,
                        Some(g) => Some(g.parse().map_err(|_| bad(o))?),
                    };
                    let metric = o.arg(3).and_then(|m| m.parse().ok());
                    self.routes.push(RouteV4 {
                        network,
                        netmask,
                        gateway,
                        metric,
                    });
                }
                "route-ipv6" => {
                    let a = o.arg(0).ok_or_else(|| bad(o))?;
                    let (net, bits) = a.split_once('/').unwrap_or((a, "128"));
                    let network: Ipv6Addr = net.parse().map_err(|_| bad(o))?;
                    let prefix: u8 = bits
                        .parse()
                        .ok()
                        .filter(|b| *b <= 128)
                        .ok_or_else(|| bad(o))?;
                    let gateway = o.arg(1).and_then(|g| g.parse().ok());
                    let metric = o.arg(2).and_then(|m| m.parse().ok());
                    self.routes_v6.push(RouteV6 {
                        network,
                        prefix,
                        gateway,
                        metric,
                    });
                }
                "redirect-gateway" => self.redirect_gateway = Some(o.args.clone()),
                "block-ipv6" => self.block_ipv6 = true,
                "dhcp-option" => self.dhcp_options.push((
                    o.arg(0).ok_or_else(|| bad(o))?.to_owned(),
                    o.args.get(1..).map(|a| a.join(" ")).unwrap_or_default(),
                )),
                "dns" => self.dns.push(o.args.clone()),
                "peer-id" => {
                    let v: i64 = num(o, 0)?;
                    self.peer_id = Some((v as u32) & 0xFF_FFFF);
                }
                "cipher" => self.cipher = o.arg(0).map(str::to_owned),
                "key-derivation" => self.tls_ekm |= o.arg(0) == Some("tls-ekm"),
                "protocol-flags" => {
                    for f in &o.args {
                        match f.as_str() {
                            "tls-ekm" => self.tls_ekm = true,
                            "cc-exit" => self.cc_exit = true,
                            "dyn-tls-crypt" => self.dyn_tls_crypt = true,
                            _ => {}
                        }
                    }
                }
                "ping" => self.ping = Some(num(o, 0)?),
                "ping-restart" => self.ping_restart = Some(num(o, 0)?),
                "tun-mtu" => self.tun_mtu = Some(num(o, 0)?),
                "auth-token" => self.auth_token = o.arg(0).map(str::to_owned),
                "auth-token-user" => self.auth_token_user = o.arg(0).map(str::to_owned),
                "explicit-exit-notify" => {
                    self.explicit_exit_notify =
                        Some(o.arg(0).and_then(|v| v.parse().ok()).unwrap_or(1))
                }
                "compress" | "comp-lzo" => {
                    let mut v = vec![o.name.clone()];
                    v.extend(o.args.iter().cloned());
                    self.compression = Some(v);
                }
                "echo" | "setenv-safe" | "socket-flags" | "sndbuf" | "rcvbuf" | "persist-tun"
                | "persist-key" | "verb" | "mute" | "tun-ipv6" | "ping-timer-rem" | "ping-exit"
                | "inactive" | "session-timeout" | "route-metric" | "route-delay"
                | "redirect-private" | "register-dns" | "block-outside-dns" | "ip-win32"
                | "dhcp-renew" | "dhcp-pre-release" | "tap-sleep" | "shaper" => {
                    self.other.push(o.clone())
                }
                other => {
                    return Err(format!(
                        "option '{other}' cannot be pushed to a client (pushed: '{}')",
                        o.render()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Events of a client connection.
#[derive(Debug)]
// Events are few (one per key state or message); boxing the 256-byte key block would only
// add an allocation and change the public type.
#[allow(clippy::large_enum_variant)]
pub enum ClientEvent {
    /// TLS and key exchange for the first key are done; waiting for PUSH_REPLY.
    TlsEstablished {
        /// TLS version and cipher suite.
        description: String,
    },
    /// The complete PUSH_REPLY was received and accepted.
    Connected(Box<PushedOptions>),
    /// Data-channel keys (initial or renegotiated).
    KeysReady {
        /// Key ID.
        key_id: KeyId,
        /// Key block.
        key2: KeyBlock,
        /// Cipher to use.
        cipher: CipherKind,
    },
    /// A data key may no longer be used.
    KeyRetired {
        /// Key ID.
        key_id: KeyId,
    },
    /// Renegotiation started.
    Renegotiating {
        /// New key ID.
        key_id: KeyId,
    },
    /// `AUTH_FAILED` from the server.
    AuthFailed(String),
    /// `AUTH_PENDING`: authentication continues out of band.
    AuthPending(Option<u32>),
    /// `INFO` / `INFO_PRE` text.
    Info(String),
    /// The server asks us to reconnect.
    Restart {
        /// Reconnect to the next remote.
        next_server: bool,
        /// Text for the user.
        text: Option<String>,
    },
    /// The server asks us to stop.
    Halt(Option<String>),
    /// The connection is over (no reconnect implied).
    Closed(CloseReason),
    /// Push negotiation failed (cipher not allowed, bad option): reconnect.
    PushFailed(String),
}

/// A client connection's control logic around a [`Session`].
#[derive(Debug)]
pub struct ClientSession {
    session: Session,
    policy: ClientPolicy,
    pushed: PushedOptions,
    push_parts_pending: bool,
    next_push_request: Option<Instant>,
    connected: bool,
    cipher: Option<CipherKind>,
    pending_keys: Vec<(KeyId, KeyBlock)>,
    server_options: String,
    events: VecDeque<ClientEvent>,
}

impl ClientSession {
    /// Wraps a client [`Session`].
    pub fn new(session: Session, policy: ClientPolicy) -> Self {
        ClientSession {
            session,
            policy,
            pushed: PushedOptions::default(),
            push_parts_pending: false,
            next_push_request: None,
            connected: false,
            cipher: None,
            pending_keys: Vec::new(),
            server_options: String::new(),
            events: VecDeque::new(),
        }
    }

    /// The underlying session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The underlying session, mutably (for datagrams, transmits and timeouts).
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Whether PUSH_REPLY has been applied.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The negotiated data cipher.
    pub fn cipher(&self) -> Option<CipherKind> {
        self.cipher
    }

    /// Feeds a control datagram.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        self.session.handle_datagram(now, datagram);
        self.process(now);
    }

    /// Runs timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.session.handle_timeout(now);
        if self.next_push_request.is_some_and(|t| now >= t) {
            let _ = self.session.send_message(now, "PUSH_REQUEST");
            self.next_push_request = Some(now + PUSH_REQUEST_INTERVAL);
        }
        self.process(now);
    }

    /// Next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.session.poll_timeout(), self.next_push_request) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.session.poll_transmit(now)
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Sends `EXIT` (when `cc-exit` was negotiated) before shutting down.
    pub fn send_exit(&mut self, now: Instant) -> bool {
        if self.pushed.cc_exit {
            return self.session.send_message(now, "EXIT").is_ok();
        }
        false
    }

    fn process(&mut self, now: Instant) {
        while let Some(ev) = self.session.poll_event() {
            match ev {
                Event::KeyStateActive {
                    key_id,
                    peer_options,
                } => {
                    if key_id == KeyId::ZERO && !self.connected {
                        self.server_options = peer_options;
                        self.events.push_back(ClientEvent::TlsEstablished {
                            description: self.session.tls_description().unwrap_or_default(),
                        });
                        let _ = self.session.send_message(now, "PUSH_REQUEST");
                        self.next_push_request = Some(now + PUSH_REQUEST_INTERVAL);
                    }
                }
                Event::KeysReady { key_id, key2 } => match self.cipher {
                    Some(cipher) => self.events.push_back(ClientEvent::KeysReady {
                        key_id,
                        key2,
                        cipher,
                    }),
                    None => self.pending_keys.push((key_id, key2)),
                },
                Event::KeyRetired { key_id } => {
                    self.events.push_back(ClientEvent::KeyRetired { key_id })
                }
                Event::RenegotiationStarted { key_id } => {
                    self.events.push_back(ClientEvent::Renegotiating { key_id })
                }
                Event::RenegotiationFailed { .. } | Event::AuthRequest { .. } => {}
                Event::ControlMessage(m) => self.on_message(now, &m),
                Event::Closed(r) => self.events.push_back(ClientEvent::Closed(r)),
            }
        }
    }

    fn on_message(&mut self, now: Instant, msg: &str) {
        match ControlMessage::parse(msg) {
            ControlMessage::PushReply(text) => self.on_push_reply(now, text),
            ControlMessage::AuthFailed(r) => {
                self.next_push_request = None;
                self.events
                    .push_back(ClientEvent::AuthFailed(r.unwrap_or("").to_owned()));
            }
            ControlMessage::AuthPending(t) => self.events.push_back(ClientEvent::AuthPending(t)),
            ControlMessage::Info(t) | ControlMessage::InfoPre(t) => {
                self.events.push_back(ClientEvent::Info(t.to_owned()))
            }
            ControlMessage::Restart {
                next_server, text, ..
            } => self.events.push_back(ClientEvent::Restart {
                next_server,
                text: text.map(str::to_owned),
            }),
            ControlMessage::Halt(t) => self
                .events
                .push_back(ClientEvent::Halt(t.map(str::to_owned))),
            ControlMessage::Exit => self.events.push_back(ClientEvent::Restart {
                next_server: false,
                text: Some("server sent EXIT".into()),
            }),
            ControlMessage::PushRequest
            | ControlMessage::CrResponse(_)
            | ControlMessage::Unknown(_) => {}
        }
    }

    fn filtered(&self, opts: Vec<OptionLine>) -> Result<Vec<OptionLine>, String> {
        let mut out = Vec::with_capacity(opts.len());
        'next: for o in opts {
            let text = o.render();
            for (action, prefix) in &self.policy.pull_filter {
                if text.starts_with(prefix.as_str()) {
                    match action {
                        PullFilterAction::Accept => break,
                        PullFilterAction::Ignore => continue 'next,
                        PullFilterAction::Reject => {
                            return Err(format!("pushed option '{text}' rejected by pull-filter"));
                        }
                    }
                }
            }
            out.push(o);
        }
        Ok(out)
    }

    /// 2.6's check of a pushed `compress`/`comp-lzo` (`init.c`, `check_compression_settings_valid`).
    fn check_pushed_compression(&self) -> Result<(), String> {
        let Some(words) = &self.pushed.compression else {
            return Ok(());
        };
        let framing = framing_for(words);
        if framing == openvpn_wire::CompressionFraming::None
            && words.get(1).map(String::as_str) != Some("migrate")
        {
            return Err(format!(
                "server pushed an unknown compression option '{}'",
                words.join(" ")
            ));
        }
        if !self.policy.allow_compression.allows(framing) {
            return Err(format!(
                "server pushed compression settings that are not allowed ('{}' with \
                 allow-compression no, the default): add 'allow-compression asym' to decompress \
                 what the server compresses (openvpn-rs never compresses)",
                words.join(" ")
            ));
        }
        Ok(())
    }

    fn on_push_reply(&mut self, now: Instant, text: &str) {
        if self.connected && !self.push_parts_pending {
            // A later PUSH_REPLY (e.g. auth-token refresh): apply what it carries.
            if let Ok(reply) = options::parse_push_reply(text) {
                if let Ok(opts) = self.filtered(reply.options) {
                    let _ = self.pushed.apply(&opts, self.policy.route_nopull);
                }
            }
            // A renewed auth-token replaces the password of later key exchanges.
            if let Some(tok) = self.pushed.auth_token.clone() {
                let user = self.session_username();
                self.session.set_credentials(Some((user, tok)));
            }
            return;
        }
        let reply = match options::parse_push_reply(text) {
            Ok(r) => r,
            Err(e) => return self.push_failed(e.to_string()),
        };
        let opts = match self.filtered(reply.options) {
            Ok(o) => o,
            Err(e) => return self.push_failed(e),
        };
        if let Err(e) = self.pushed.apply(&opts, self.policy.route_nopull) {
            return self.push_failed(e);
        }
        if reply.continuation == Continuation::More {
            self.push_parts_pending = true;
            return;
        }
        if let Err(e) = self.check_pushed_compression() {
            return self.push_failed(e);
        }
        self.push_parts_pending = false;
        self.next_push_request = None;
        let cipher = match self.choose_cipher() {
            Ok(c) => c,
            Err(e) => return self.push_failed(e),
        };
        self.cipher = Some(cipher);
        self.connected = true;
        if self.pushed.dyn_tls_crypt {
            let _ = self.session.enable_dyn_tls_crypt();
        }
        if let Some(tok) = self.pushed.auth_token.clone() {
            let user = self.session_username();
            self.session.set_credentials(Some((user, tok)));
        }
        self.events
            .push_back(ClientEvent::Connected(Box::new(self.pushed.clone())));
        for (key_id, key2) in self.pending_keys.drain(..) {
            self.events.push_back(ClientEvent::KeysReady {
                key_id,
                key2,
                cipher,
            });
        }
        let method = if self.pushed.tls_ekm {
            KeyDerivation::TlsEkm
        } else {
            KeyDerivation::Prf
        };
        self.session.enable_data_channel(method);
        let _ = now;
        self.process(now);
    }

    fn session_username(&self) -> String {
        use base64::Engine;
        self.pushed
            .auth_token_user
            .as_deref()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|v| String::from_utf8(v).ok())
            .or_else(|| self.session.credentials().map(|(u, _)| u.to_owned()))
            .unwrap_or_default()
    }

    fn choose_cipher(&self) -> Result<CipherKind, String> {
        let allowed = |name: &str| {
            self.policy
                .ciphers
                .iter()
                .any(|c| c.eq_ignore_ascii_case(name))
                || self
                    .policy
                    .fallback
                    .as_deref()
                    .is_some_and(|f| f.eq_ignore_ascii_case(name))
        };
        let name = match &self.pushed.cipher {
            Some(c) if allowed(c) => c.clone(),
            Some(c) => {
                return Err(format!(
                    "server pushed cipher '{c}', which is not in data-ciphers {}",
                    self.policy.ciphers.join(":")
                ));
            }
            None => match crate::ncp::occ_cipher(&self.server_options) {
                Some(c) if allowed(c) => c.to_owned(),
                _ => self.policy.fallback.clone().ok_or_else(|| {
                    "server pushed no cipher and data-ciphers-fallback is not set".to_owned()
                })?,
            },
        };
        CipherKind::from_name(&name).ok_or_else(|| format!("cipher '{name}' is not supported"))
    }

    fn push_failed(&mut self, reason: String) {
        self.next_push_request = None;
        self.events.push_back(ClientEvent::PushFailed(reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::parse_push_reply;

    fn pushed(reply: &str) -> Result<PushedOptions, String> {
        let reply = parse_push_reply(reply).map_err(|e| e.to_string())?;
        let mut p = PushedOptions::default();
        p.apply(&reply.options, false)?;
        Ok(p)
    }

    #[test]
    fn pushed_net_gateway_routes_are_skipped_not_fatal() {
        let p = pushed(
            "PUSH_REPLY,route 10.9.0.0 255.255.0.0 vpn_gateway 50,\
             route 198.51.100.0 255.255.255.0 net_gateway,\
             route-ipv6 2001:db8:1::/48 net_gateway,ifconfig 10.8.0.2 255.255.255.0",
        )
        .expect("the push applies");
        assert_eq!(p.routes.len(), 1, "only the tunnel route is applied");
        assert_eq!(p.routes[0].metric, Some(50));
        assert!(p.routes_v6.is_empty());
        assert_eq!(p.ignored.len(), 2);
        assert!(
            p.ifconfig.is_some(),
            "options after the skipped ones still apply"
        );
    }

    #[test]
    fn malformed_pushed_route_still_fails() {
        let e = pushed("PUSH_REPLY,route 10.9.0.0 255.255.0.0 nonsense").unwrap_err();
        assert!(e.contains("malformed"), "{e}");
    }
}
