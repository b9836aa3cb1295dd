//! The OpenVPN 2.6 stateless UDP server handshake ("HMAC cookie").
//!
//! A UDP server keeps no state for a client until the client proves that it receives the
//! server's packets: the server's session ID is a MAC over the client address, the client's
//! session ID and a time slot, and only a packet that echoes it creates a session.
//!
//! ```text
//!  HARD_RESET_CLIENT_V2/V3 ──▶ CookieGate::check ──▶ Reply(HARD_RESET_SERVER_V2, sid = cookie)
//!  CONTROL_V1/WKC_V1/ACK_V1 echoing the cookie ──▶ Accept { sids, per-client wrapping }
//!  anything else ──▶ Drop (counted by the caller)
//! ```

use std::sync::Arc;

use hmac::{Hmac, Mac};
use openvpn_crypto::{
    ControlWrap, ReplayId, Role, StaticKey, TlsAuth, TlsCrypt, TlsCryptV2ServerKey,
};
use openvpn_wire::{AckList, ControlPacket, KeyId, Opcode, SessionId};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::session::ControlWrapping;

/// Server-side control-channel protection.
#[derive(Clone)]
pub enum ServerWrapping {
    /// No wrapping.
    None,
    /// `tls-auth`.
    TlsAuth(Arc<TlsAuth>, Arc<StaticKey>),
    /// `tls-crypt`.
    TlsCrypt(Arc<TlsCrypt>, Arc<StaticKey>),
    /// `tls-crypt-v2` server key: every client brings its own wrapped key.
    TlsCryptV2(Arc<TlsCryptV2ServerKey>),
}

impl std::fmt::Debug for ServerWrapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerWrapping::None => "None",
            ServerWrapping::TlsAuth(..) => "TlsAuth",
            ServerWrapping::TlsCrypt(..) => "TlsCrypt",
            ServerWrapping::TlsCryptV2(..) => "TlsCryptV2",
        })
    }
}

/// Why the gate dropped a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateDrop {
    /// Not an opcode that may start a session (e.g. data from an unknown address).
    Opcode,
    /// Wrapping (HMAC, tag, WKc) did not verify.
    Wrap,
    /// Not a well-formed control packet.
    Malformed,
    /// The echoed cookie is wrong or expired, or message IDs too high.
    Cookie,
}

/// What to do with a packet from an unknown address.
#[derive(Debug)]
pub enum GateVerdict {
    /// Send this datagram back; keep no state.
    Reply(Vec<u8>),
    /// The client proved its address: create a session, then feed it the same packet.
    Accept {
        /// The client's session ID.
        client_sid: SessionId,
        /// Our session ID (the cookie).
        server_sid: SessionId,
        /// Wrapping for this client's session (tls-crypt-v2: the client's own key).
        wrapping: ControlWrapping,
        /// tls-crypt-v2 metadata of the client key, if any.
        metadata: Option<Vec<u8>>,
    },
    /// Drop silently.
    Drop(GateDrop),
}

/// The stateless cookie check of a UDP server.
pub struct CookieGate {
    key: Zeroizing<[u8; 32]>,
    slot_secs: u64,
    wrapping: ServerWrapping,
}

impl std::fmt::Debug for CookieGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieGate")
            .field("slot_secs", &self.slot_secs)
            .field("wrapping", &self.wrapping)
            .finish()
    }
}

impl CookieGate {
    /// A gate with a random per-process `key`, cookies valid for 2–3 slots of
    /// `(hand_window + 1) / 2` seconds.
    pub fn new(key: [u8; 32], hand_window_secs: u64, wrapping: ServerWrapping) -> Self {
        CookieGate {
            key: Zeroizing::new(key),
            slot_secs: hand_window_secs.saturating_add(1) / 2,
            wrapping,
        }
    }

    /// The wrapping configured for the server.
    pub fn wrapping(&self) -> &ServerWrapping {
        &self.wrapping
    }

    fn cookie(&self, slot: u64, addr: &[u8], client: &SessionId) -> SessionId {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_ref())
            .expect("HMAC accepts any key length");
        mac.update(&slot.to_be_bytes());
        mac.update(&(addr.len() as u32).to_be_bytes());
        mac.update(addr);
        mac.update(&client.0);
        let tag = mac.finalize().into_bytes();
        let mut sid = [0u8; 8];
        sid.copy_from_slice(&tag[..8]);
        if sid == [0u8; 8] {
            sid[7] = 1;
        }
        SessionId(sid)
    }

    fn slot(&self, now_unix: u64) -> u64 {
        now_unix / self.slot_secs.max(1)
    }

    /// Checks a datagram from an address without a session. `addr` is any stable byte form of
    /// the client's address and port.
    pub fn check(&self, now_unix: u64, addr: &[u8], datagram: &[u8]) -> GateVerdict {
        let Some(&first) = datagram.first() else {
            return GateVerdict::Drop(GateDrop::Malformed);
        };
        let Ok((opcode, key_id)) = openvpn_wire::parse_first_byte(first) else {
            return GateVerdict::Drop(GateDrop::Opcode);
        };
        let allowed = matches!(
            opcode,
            Opcode::HardResetClientV2
                | Opcode::HardResetClientV3
                | Opcode::ControlV1
                | Opcode::ControlWkcV1
                | Opcode::AckV1
        );
        if !allowed || key_id != KeyId::ZERO {
            return GateVerdict::Drop(GateDrop::Opcode);
        }
        // Per-client wrapping.
        let (wrapping, body, metadata) = match self.client_wrapping(opcode, datagram) {
            Ok(x) => x,
            Err(d) => return GateVerdict::Drop(d),
        };
        let mut plain = Vec::with_capacity(datagram.len());
        let replay = match wrapping_unwrap(&wrapping, body, &mut plain) {
            Ok(r) => r,
            Err(()) => return GateVerdict::Drop(GateDrop::Wrap),
        };
        let Ok(pkt) = ControlPacket::parse(&plain) else {
            return GateVerdict::Drop(GateDrop::Malformed);
        };
        match opcode {
            Opcode::HardResetClientV2 | Opcode::HardResetClientV3 => {
                if pkt.message_id != Some(0) {
                    return GateVerdict::Drop(GateDrop::Malformed);
                }
                let early = opcode == Opcode::HardResetClientV3
                    && replay.is_some_and(|r| r.id & 0xff00_0000 == 0x0f00_0000);
                let payload: &[u8] = if early {
                    &openvpn_wire::emit_early_neg_flags(openvpn_wire::EARLY_NEG_RESEND_WKC)
                } else {
                    &[]
                };
                let sid = self.cookie(self.slot(now_unix), addr, &pkt.session_id);
                let mut acks = AckList::new();
                let _ = acks.push(0);
                let reply = ControlPacket {
                    opcode: Opcode::HardResetServerV2,
                    key_id: KeyId::ZERO,
                    session_id: sid,
                    acks,
                    remote_session_id: Some(pkt.session_id),
                    message_id: Some(0),
                    payload,
                };
                let mut reply_plain = Vec::with_capacity(64);
                reply.emit_to_vec(&mut reply_plain);
                let mut out = Vec::with_capacity(128);
                let replay = ReplayId {
                    id: 1,
                    time: now_unix as u32,
                };
                match wrapping.wrapper() {
                    None => out.extend_from_slice(&reply_plain),
                    Some(w) => w.wrap(&reply_plain, replay, &mut out),
                }
                GateVerdict::Reply(out)
            }
            _ => {
                let Some(echoed) = pkt.remote_session_id else {
                    return GateVerdict::Drop(GateDrop::Cookie);
                };
                if pkt.acks.as_slice().iter().any(|&a| a > 1)
                    || pkt.message_id.is_some_and(|m| m > 1)
                {
                    return GateVerdict::Drop(GateDrop::Cookie);
                }
                let slot = self.slot(now_unix);
                let valid = (0..3u64).any(|back| {
                    slot.checked_sub(back)
                        .is_some_and(|s| self.cookie(s, addr, &pkt.session_id) == echoed)
                });
                if !valid {
                    return GateVerdict::Drop(GateDrop::Cookie);
                }
                GateVerdict::Accept {
                    client_sid: pkt.session_id,
                    server_sid: echoed,
                    wrapping: wrapping.into_session(),
                    metadata,
                }
            }
        }
    }

    /// The wrapping of one client's session, the part of the datagram it covers and the
    /// tls-crypt-v2 metadata.
    #[allow(clippy::type_complexity)]
    fn client_wrapping<'a>(
        &self,
        opcode: Opcode,
        datagram: &'a [u8],
    ) -> Result<(GateWrap, &'a [u8], Option<Vec<u8>>), GateDrop> {
        match &self.wrapping {
            ServerWrapping::None => Ok((GateWrap::None, datagram, None)),
            ServerWrapping::TlsAuth(a, k) => {
                Ok((GateWrap::TlsAuth(a.clone(), k.clone()), datagram, None))
            }
            ServerWrapping::TlsCrypt(c, k) => {
                Ok((GateWrap::TlsCrypt(c.clone(), k.clone()), datagram, None))
            }
            ServerWrapping::TlsCryptV2(server) => {
                if !matches!(opcode, Opcode::HardResetClientV3 | Opcode::ControlWkcV1) {
                    return Err(GateDrop::Wrap);
                }
                let (inner, wkc) =
                    openvpn_crypto::split_wkc(datagram).map_err(|_| GateDrop::Wrap)?;
                let (kc, metadata) = server.unwrap_client_key(wkc).map_err(|_| GateDrop::Wrap)?;
                let wrap = Arc::new(TlsCrypt::new(&kc, Role::Server));
                Ok((
                    GateWrap::TlsCrypt(wrap, Arc::new(kc)),
                    inner,
                    Some(metadata),
                ))
            }
        }
    }
}

enum GateWrap {
    None,
    TlsAuth(Arc<TlsAuth>, Arc<StaticKey>),
    TlsCrypt(Arc<TlsCrypt>, Arc<StaticKey>),
}

impl GateWrap {
    fn wrapper(&self) -> Option<&dyn ControlWrap> {
        match self {
            GateWrap::None => None,
            GateWrap::TlsAuth(a, _) => Some(a.as_ref()),
            GateWrap::TlsCrypt(c, _) => Some(c.as_ref()),
        }
    }

    fn into_session(self) -> ControlWrapping {
        match self {
            GateWrap::None => ControlWrapping::None,
            GateWrap::TlsAuth(a, k) => ControlWrapping::TlsAuth(a, k),
            GateWrap::TlsCrypt(c, k) => ControlWrapping::TlsCrypt(c, k),
        }
    }
}

fn wrapping_unwrap(w: &GateWrap, wire: &[u8], out: &mut Vec<u8>) -> Result<Option<ReplayId>, ()> {
    match w.wrapper() {
        None => {
            out.extend_from_slice(wire);
            Ok(None)
        }
        Some(w) => w.unwrap(wire, out).map(Some).map_err(|_| ()),
    }
}
