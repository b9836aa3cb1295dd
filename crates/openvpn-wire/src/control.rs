//! Control packets in their plain (unwrapped) form, and the "reliable" body they share with
//! the tls-auth / tls-crypt forms (`packets.md` §4, §5.1).
//!
//! ```text
//! 0      1                9         10
//! +------+----------------+---------+----------------+--------------+-----------+---------+
//! |op/key| own_session_id | ack_len | ack_len x u32  | [remote_sid] | [msg_id]  | payload |
//! |  u8  |    8 bytes     |   u8    |                | iff ack_len>0| not ACK_V1|         |
//! +------+----------------+---------+----------------+--------------+-----------+---------+
//!                         \________________ reliable body __________________________________/
//! ```
//!
//! With tls-auth or tls-crypt the wrapping sits between the session ID and the reliable body;
//! once `openvpn-crypto` has removed it, use [`ControlPacket::parse_body`] and
//! [`ControlPacket::emit_body`] on the body alone.

use core::fmt;

use crate::error::WireError;
use crate::opcode::{KeyId, Opcode, first_byte, parse_first_byte};

/// Offset of the op/key byte.
pub const OPCODE_OFFSET: usize = 0;
/// Offset of the sender's own session ID.
pub const SESSION_ID_OFFSET: usize = 1;
/// Length of a session ID.
pub const SESSION_ID_LEN: usize = 8;
/// Length of the unwrapped header: op/key ‖ own session ID.
pub const HEADER_LEN: usize = SESSION_ID_OFFSET + SESSION_ID_LEN;
/// Offset of `ack_len` in the plain form.
pub const ACK_LEN_OFFSET: usize = HEADER_LEN;
/// Offset of the first ACK entry in the plain form.
pub const ACKS_OFFSET: usize = ACK_LEN_OFFSET + 1;
/// Size of one ACK entry (a u32 message packet ID).
pub const ACK_ENTRY_LEN: usize = 4;
/// Size of the message packet ID.
pub const MESSAGE_ID_LEN: usize = 4;
/// Maximum number of ACK entries in one control packet (2.6 `RELIABLE_ACK_SIZE`).
pub const MAX_ACKS: usize = 8;
/// Smallest plain control packet: a P_ACK_V1 with no ACKs (1 + 8 + 1).
pub const MIN_PLAIN_LEN: usize = ACKS_OFFSET;

/// An 8-byte session ID. All zeros means "undefined" and is never valid on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SessionId(pub [u8; 8]);

impl SessionId {
    /// The all-zero ("undefined") session ID.
    pub const ZERO: SessionId = SessionId([0; 8]);

    /// True for the reserved all-zero value.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 8]
    }

    /// The session ID in the first 8 bytes of `bytes`, or `None` if it is shorter.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 8] = bytes.get(..SESSION_ID_LEN)?.try_into().ok()?;
        Some(SessionId(arr))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The session ID at bytes 1..9 of any control packet (plain or wrapped), without checking
/// the opcode; `None` if the packet is shorter than 9 bytes.
pub fn peek_session_id(bytes: &[u8]) -> Option<SessionId> {
    SessionId::from_slice(bytes.get(SESSION_ID_OFFSET..)?)
}

/// Up to [`MAX_ACKS`] acknowledged message packet IDs, stored inline (no allocation).
#[derive(Clone, Copy, Default)]
pub struct AckList {
    ids: [u32; MAX_ACKS],
    len: u8,
}

impl AckList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// A list holding `ids`, or `None` if there are more than [`MAX_ACKS`].
    pub fn from_slice(ids: &[u32]) -> Option<Self> {
        let mut list = Self::new();
        for &id in ids {
            if !list.push(id) {
                return None;
            }
        }
        Some(list)
    }

    /// Appends `id`; returns `false` (and changes nothing) if the list is full.
    pub fn push(&mut self, id: u32) -> bool {
        match self.ids.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = id;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// The IDs in order.
    pub fn as_slice(&self) -> &[u32] {
        self.ids.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// Number of IDs.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// True if there are no IDs.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True if the list holds [`MAX_ACKS`] IDs.
    pub fn is_full(&self) -> bool {
        self.len() >= MAX_ACKS
    }

    /// True if `id` is in the list.
    pub fn contains(&self, id: u32) -> bool {
        self.as_slice().contains(&id)
    }

    /// Removes all IDs.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Iterates over the IDs in order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.as_slice().iter().copied()
    }

    /// Size of the ACK block on the wire: `1 + 4n + (n > 0 ? 8 : 0)`.
    pub fn wire_len(&self) -> usize {
        ack_block_len(self.len())
    }
}

impl PartialEq for AckList {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for AckList {}

impl fmt::Debug for AckList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// Size of an ACK block with `n` entries, including `ack_len` and the remote session ID.
pub fn ack_block_len(n: usize) -> usize {
    1 + ACK_ENTRY_LEN * n + if n > 0 { SESSION_ID_LEN } else { 0 }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let arr: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(arr))
}

/// Offsets inside a reliable body (relative to its `ack_len` byte), validated against a length.
#[derive(Debug, Clone, Copy)]
struct BodyLayout {
    ack_len: usize,
    remote_sid: Option<usize>,
    message_id: Option<usize>,
    payload: usize,
}

impl BodyLayout {
    fn check(opcode: Opcode, body: &[u8]) -> Result<Self, WireError> {
        let ack_len_byte = *body.first().ok_or(WireError::Truncated)?;
        let ack_len = usize::from(ack_len_byte);
        if ack_len > MAX_ACKS {
            return Err(WireError::TooManyAcks(ack_len_byte));
        }
        let mut at = 1 + ACK_ENTRY_LEN * ack_len;
        let remote_sid = (ack_len > 0).then_some(at);
        if ack_len > 0 {
            at += SESSION_ID_LEN;
        }
        let message_id = opcode.has_message_id().then_some(at);
        if opcode.has_message_id() {
            at += MESSAGE_ID_LEN;
        }
        if body.len() < at {
            return Err(WireError::Truncated);
        }
        Ok(BodyLayout {
            ack_len,
            remote_sid,
            message_id,
            payload: at,
        })
    }
}

/// A checked view of a plain control packet in a byte buffer.
///
/// After [`ControlPacketView::new_checked`] succeeded no accessor can panic.
#[derive(Debug, Clone)]
pub struct ControlPacketView<T: AsRef<[u8]>> {
    buffer: T,
    opcode: Opcode,
    key_id: KeyId,
    layout: BodyLayout,
}

impl<T: AsRef<[u8]>> ControlPacketView<T> {
    /// Checks that `buffer` holds a complete plain control packet: a control opcode, a
    /// non-zero own session ID, at most 8 ACKs and all fixed fields present.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let bytes = buffer.as_ref();
        let first = *bytes.get(OPCODE_OFFSET).ok_or(WireError::Truncated)?;
        let (opcode, key_id) = parse_first_byte(first)?;
        if !opcode.is_control() {
            return Err(WireError::NotControl(opcode));
        }
        let sid = peek_session_id(bytes).ok_or(WireError::Truncated)?;
        if sid.is_zero() {
            return Err(WireError::ZeroSessionId);
        }
        let body = bytes.get(HEADER_LEN..).ok_or(WireError::Truncated)?;
        let layout = BodyLayout::check(opcode, body)?;
        Ok(Self {
            buffer,
            opcode,
            key_id,
            layout,
        })
    }

    fn body(&self) -> &[u8] {
        self.buffer.as_ref().get(HEADER_LEN..).unwrap_or(&[])
    }

    /// The opcode.
    pub fn opcode(&self) -> Opcode {
        self.opcode
    }

    /// The key ID.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The sender's own session ID.
    pub fn session_id(&self) -> SessionId {
        peek_session_id(self.buffer.as_ref()).unwrap_or(SessionId::ZERO)
    }

    /// Number of ACK entries.
    pub fn ack_len(&self) -> usize {
        self.layout.ack_len
    }

    /// ACK entry `i`, or `None` if `i >= ack_len()`.
    pub fn ack(&self, i: usize) -> Option<u32> {
        if i >= self.layout.ack_len {
            return None;
        }
        read_u32(self.body(), 1 + ACK_ENTRY_LEN * i)
    }

    /// The ACK entries.
    pub fn acks(&self) -> AckList {
        let mut list = AckList::new();
        for i in 0..self.layout.ack_len {
            if let Some(id) = self.ack(i) {
                list.push(id);
            }
        }
        list
    }

    /// The echoed remote session ID (present iff there are ACKs).
    pub fn remote_session_id(&self) -> Option<SessionId> {
        SessionId::from_slice(self.body().get(self.layout.remote_sid?..)?)
    }

    /// The message packet ID (absent for P_ACK_V1).
    pub fn message_id(&self) -> Option<u32> {
        read_u32(self.body(), self.layout.message_id?)
    }

    /// Everything after the fixed fields.
    pub fn payload(&self) -> &[u8] {
        self.body().get(self.layout.payload..).unwrap_or(&[])
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// A control packet: header fields plus the reliable body, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlPacket<'a> {
    /// Opcode (a control opcode).
    pub opcode: Opcode,
    /// Key ID.
    pub key_id: KeyId,
    /// The sender's own session ID (never zero on the wire).
    pub session_id: SessionId,
    /// Acknowledged message packet IDs of the peer.
    pub acks: AckList,
    /// The peer's session ID echoed back; must be `Some` iff `acks` is non-empty.
    pub remote_session_id: Option<SessionId>,
    /// Message packet ID; must be `Some` iff `opcode.has_message_id()`.
    pub message_id: Option<u32>,
    /// Payload: TLS bytes, early-negotiation TLVs (hard reset) or nothing.
    pub payload: &'a [u8],
}

impl<'a> ControlPacket<'a> {
    /// Parses the plain form: op/key ‖ own sid ‖ reliable body.
    ///
    /// Rejects non-control opcodes, a zero own session ID and more than 8 ACKs.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let view = ControlPacketView::new_checked(bytes)?;
        let payload = bytes
            .get(HEADER_LEN + view.layout.payload..)
            .ok_or(WireError::Truncated)?;
        Ok(ControlPacket {
            opcode: view.opcode(),
            key_id: view.key_id(),
            session_id: view.session_id(),
            acks: view.acks(),
            remote_session_id: view.remote_session_id(),
            message_id: view.message_id(),
            payload,
        })
    }

    /// Parses a reliable body (`ack_len ‖ …`) whose header fields came from elsewhere, e.g.
    /// from a tls-auth or tls-crypt wrapper.
    pub fn parse_body(
        opcode: Opcode,
        key_id: KeyId,
        session_id: SessionId,
        body: &'a [u8],
    ) -> Result<Self, WireError> {
        if !opcode.is_control() {
            return Err(WireError::NotControl(opcode));
        }
        if session_id.is_zero() {
            return Err(WireError::ZeroSessionId);
        }
        let layout = BodyLayout::check(opcode, body)?;
        let mut acks = AckList::new();
        for i in 0..layout.ack_len {
            if let Some(id) = read_u32(body, 1 + ACK_ENTRY_LEN * i) {
                acks.push(id);
            }
        }
        let remote_session_id = match layout.remote_sid {
            Some(at) => Some(
                SessionId::from_slice(body.get(at..).unwrap_or(&[])).ok_or(WireError::Truncated)?,
            ),
            None => None,
        };
        let message_id = match layout.message_id {
            Some(at) => Some(read_u32(body, at).ok_or(WireError::Truncated)?),
            None => None,
        };
        let payload = body.get(layout.payload..).ok_or(WireError::Truncated)?;
        Ok(ControlPacket {
            opcode,
            key_id,
            session_id,
            acks,
            remote_session_id,
            message_id,
            payload,
        })
    }

    /// The op/key byte.
    pub fn first_byte(&self) -> u8 {
        first_byte(self.opcode, self.key_id)
    }

    /// Length of the reliable body alone.
    pub fn body_len(&self) -> usize {
        self.acks.wire_len()
            + if self.opcode.has_message_id() {
                MESSAGE_ID_LEN
            } else {
                0
            }
            + self.payload.len()
    }

    /// Length of the plain form.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.body_len()
    }

    fn validate(&self) -> Result<(), WireError> {
        if !self.opcode.is_control() {
            return Err(WireError::NotControl(self.opcode));
        }
        if self.session_id.is_zero() {
            return Err(WireError::ZeroSessionId);
        }
        if self.acks.is_empty() != self.remote_session_id.is_none() {
            return Err(WireError::Inconsistent(
                "remote_session_id must be Some exactly when acks is non-empty",
            ));
        }
        if self.opcode.has_message_id() != self.message_id.is_some() {
            return Err(WireError::Inconsistent(
                "message_id must be Some for every control opcode except P_ACK_V1, None for P_ACK_V1",
            ));
        }
        Ok(())
    }

    /// Writes the reliable body only into the start of `out`; returns the bytes written
    /// (`body_len()`).
    pub fn emit_body(&self, out: &mut [u8]) -> Result<usize, WireError> {
        self.validate()?;
        let needed = self.body_len();
        let available = out.len();
        let out = out
            .get_mut(..needed)
            .ok_or(WireError::BufferTooSmall { needed, available })?;
        let mut w = Writer { out, at: 0 };
        w.put(&[self.acks.len() as u8]);
        for id in self.acks.iter() {
            w.put(&id.to_be_bytes());
        }
        if let Some(sid) = self.remote_session_id {
            w.put(&sid.0);
        }
        if let Some(mid) = self.message_id {
            w.put(&mid.to_be_bytes());
        }
        w.put(self.payload);
        Ok(needed)
    }

    /// Writes the plain form into the start of `out`; returns the bytes written
    /// (`buffer_len()`). Never panics; errors if `out` is too small or the fields are
    /// inconsistent (see the field docs).
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        self.validate()?;
        let needed = self.buffer_len();
        let available = out.len();
        let out = out
            .get_mut(..needed)
            .ok_or(WireError::BufferTooSmall { needed, available })?;
        let (head, body) = out.split_at_mut(HEADER_LEN);
        let mut w = Writer { out: head, at: 0 };
        w.put(&[self.first_byte()]);
        w.put(&self.session_id.0);
        self.emit_body(body)?;
        Ok(needed)
    }

    /// Appends the plain form to `out`.
    ///
    /// A packet that [`ControlPacket::emit`] would reject (inconsistent fields, zero session
    /// ID) appends nothing; use [`ControlPacket::try_emit_to_vec`] to see the error.
    pub fn emit_to_vec(&self, out: &mut Vec<u8>) {
        let _ = self.try_emit_to_vec(out);
    }

    /// Appends the plain form to `out`, or appends nothing and returns the error.
    pub fn try_emit_to_vec(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        self.validate()?;
        let start = out.len();
        out.resize(start + self.buffer_len(), 0);
        let res = match out.get_mut(start..) {
            Some(dst) => self.emit(dst).map(|_| ()),
            None => Err(WireError::Truncated),
        };
        if res.is_err() {
            out.truncate(start);
        }
        res
    }
}

/// Bounds-checked sequential writer into a slice of exactly the right size.
struct Writer<'b> {
    out: &'b mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.at + bytes.len();
        if let Some(dst) = self.out.get_mut(self.at..end) {
            dst.copy_from_slice(bytes);
        }
        self.at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn sid(s: &str) -> SessionId {
        SessionId::from_slice(&hex(s)).expect("8 bytes")
    }

    #[test]
    fn plain_hard_reset_client_v2() {
        // test-vectors.md §2.1
        let bytes = hex("38 6891923fa3103437 00 00000000");
        let p = ControlPacket::parse(&bytes).expect("parses");
        assert_eq!(p.opcode, Opcode::HardResetClientV2);
        assert_eq!(p.key_id, KeyId::ZERO);
        assert_eq!(p.session_id, sid("6891923fa3103437"));
        assert!(p.acks.is_empty());
        assert_eq!(p.remote_session_id, None);
        assert_eq!(p.message_id, Some(0));
        assert!(p.payload.is_empty());
        assert_eq!(p.buffer_len(), 14);
        let mut out = [0u8; 14];
        assert_eq!(p.emit(&mut out), Ok(14));
        assert_eq!(&out[..], &bytes[..]);
        assert_eq!(peek_session_id(&bytes), Some(sid("6891923fa3103437")));
    }

    #[test]
    fn ack_v1_three_acks() {
        // test-vectors.md §2.4 row 1
        let bytes = hex("28 aeb9afe1f01d79c8 03 00000000 00000001 00000002 dd85db535623b02e");
        let p = ControlPacket::parse(&bytes).expect("parses");
        assert_eq!(p.opcode, Opcode::AckV1);
        assert_eq!(p.session_id, sid("aeb9afe1f01d79c8"));
        assert_eq!(p.acks.as_slice(), &[0, 1, 2]);
        assert_eq!(p.remote_session_id, Some(sid("dd85db535623b02e")));
        assert_eq!(p.message_id, None);
        assert!(p.payload.is_empty());
        let mut v = Vec::new();
        p.emit_to_vec(&mut v);
        assert_eq!(v, bytes);
    }

    #[test]
    fn control_v1_piggybacked_ack() {
        // test-vectors.md §2.4 rows 2 and 3
        let bytes = hex("20 aeb9afe1f01d79c8 01 00000000 dd85db535623b02e 00000002");
        let p = ControlPacket::parse(&bytes).expect("parses");
        assert_eq!(p.acks.as_slice(), &[0]);
        assert_eq!(p.message_id, Some(2));

        let bytes = hex("20 7819bf2ebcd19a45 01 00000000 eafebfa4418ae31b 00000001 160301");
        let p = ControlPacket::parse(&bytes).expect("parses");
        assert_eq!(p.opcode, Opcode::ControlV1);
        assert_eq!(p.remote_session_id, Some(sid("eafebfa4418ae31b")));
        assert_eq!(p.message_id, Some(1));
        assert_eq!(p.payload, &[0x16, 0x03, 0x01]);
        let view = ControlPacketView::new_checked(&bytes[..]).expect("view");
        assert_eq!(view.ack(0), Some(0));
        assert_eq!(view.ack(1), None);
        assert_eq!(view.payload(), &[0x16, 0x03, 0x01]);
    }

    #[test]
    fn server_reset_decrypted_body() {
        // test-vectors.md §6: tls-crypt body of the server's HARD_RESET_SERVER_V2
        let body = hex("0100000000ce8ab0b78b3fa99b00000000");
        let p = ControlPacket::parse_body(
            Opcode::HardResetServerV2,
            KeyId::ZERO,
            sid("20e765907f037df2"),
            &body,
        )
        .expect("parses");
        assert_eq!(p.acks.as_slice(), &[0]);
        assert_eq!(p.remote_session_id, Some(sid("ce8ab0b78b3fa99b")));
        assert_eq!(p.message_id, Some(0));
        assert!(p.payload.is_empty());
        let mut out = vec![0u8; p.body_len()];
        assert_eq!(p.emit_body(&mut out), Ok(body.len()));
        assert_eq!(out, body);
        // and the client reset body of the same session
        let body = hex("0000000000");
        let p = ControlPacket::parse_body(
            Opcode::HardResetClientV2,
            KeyId::ZERO,
            sid("ce8ab0b78b3fa99b"),
            &body,
        )
        .expect("parses");
        assert_eq!(p.message_id, Some(0));
        assert_eq!(p.body_len(), 5);
    }

    #[test]
    fn wrapped_packets_peek_and_body() {
        // test-vectors.md §6: tls-crypt client reset; the session id is readable unwrapped
        let wrapped = hex(
            "38ce8ab0b78b3fa99b000000016b06d8528a2312b7490dffad30fd9b71c9cc9d00d89eb7644869f57bda3e1e834a4fc28749b67b9537",
        );
        assert_eq!(peek_session_id(&wrapped), Some(sid("ce8ab0b78b3fa99b")));
        // test-vectors.md §7: tls-auth server reset, body after the 9 + 20 + 8 byte header
        let pkt = hex(
            "40628d8ebf86a41e705b451557ee65818d407cb27982ec6b946d440ebe000000016b06d86b0100000000d8ef5aa1cde9b37900000000",
        );
        assert_eq!(peek_session_id(&pkt), Some(sid("628d8ebf86a41e70")));
        let (op, key) = parse_first_byte(pkt[0]).expect("opcode");
        let p = ControlPacket::parse_body(op, key, sid("628d8ebf86a41e70"), &pkt[37..])
            .expect("body parses");
        assert_eq!(p.opcode, Opcode::HardResetServerV2);
        assert_eq!(p.acks.as_slice(), &[0]);
        assert_eq!(p.remote_session_id, Some(sid("d8ef5aa1cde9b379")));
        assert_eq!(p.message_id, Some(0));
        // the tls-auth unit-test body (test-vectors.md §2.2): ack_len 0, message id 0
        let body = hex("00 00000000");
        let p = ControlPacket::parse_body(
            Opcode::HardResetClientV2,
            KeyId::ZERO,
            sid("de694c5c7bfba274"),
            &body,
        )
        .expect("body parses");
        assert_eq!((p.acks.len(), p.message_id), (0, Some(0)));
        assert_eq!(
            ControlPacket::parse_body(
                Opcode::ControlV1,
                KeyId::ZERO,
                SessionId::ZERO,
                &[0, 0, 0, 0, 1]
            ),
            Err(WireError::ZeroSessionId)
        );
        assert_eq!(
            ControlPacket::parse_body(Opcode::AckV1, KeyId::ZERO, sid("de694c5c7bfba274"), &[]),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn rejections() {
        // data opcode
        assert_eq!(
            ControlPacket::parse(&hex("48 6891923fa3103437 00 00000000")),
            Err(WireError::NotControl(Opcode::DataV2))
        );
        // zero session id
        assert_eq!(
            ControlPacket::parse(&hex("38 0000000000000000 00 00000000")),
            Err(WireError::ZeroSessionId)
        );
        // 9 acks
        let mut b = hex("28 aeb9afe1f01d79c8 09");
        b.extend_from_slice(&[0u8; 9 * 4 + 8]);
        assert_eq!(ControlPacket::parse(&b), Err(WireError::TooManyAcks(9)));
        // unknown opcode
        assert_eq!(
            ControlPacket::parse(&hex("00 6891923fa3103437 00 00000000")),
            Err(WireError::UnknownOpcode(0))
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = hex("20 7819bf2ebcd19a45 02 00000000 00000001 eafebfa4418ae31b 00000001");
        assert!(ControlPacket::parse(&bytes).is_ok());
        for n in 0..bytes.len() {
            assert_eq!(
                ControlPacket::parse(&bytes[..n]),
                Err(WireError::Truncated),
                "len {n}"
            );
        }
        assert_eq!(peek_session_id(&bytes[..8]), None);
    }

    #[test]
    fn emit_errors() {
        let mut acks = AckList::new();
        assert!(acks.push(3));
        let p = ControlPacket {
            opcode: Opcode::ControlV1,
            key_id: KeyId::ZERO,
            session_id: SessionId([1; 8]),
            acks,
            remote_session_id: None,
            message_id: Some(1),
            payload: b"x",
        };
        assert!(matches!(
            p.emit(&mut [0; 64]),
            Err(WireError::Inconsistent(_))
        ));
        let p = ControlPacket {
            remote_session_id: Some(SessionId([2; 8])),
            ..p
        };
        let n = p.buffer_len();
        assert_eq!(n, 9 + 1 + 4 + 8 + 4 + 1);
        assert_eq!(
            p.emit(&mut vec![0; n - 1]),
            Err(WireError::BufferTooSmall {
                needed: n,
                available: n - 1
            })
        );
        let mut out = vec![0; n + 3];
        assert_eq!(p.emit(&mut out), Ok(n));
        assert_eq!(ControlPacket::parse(&out[..n]), Ok(p));
        let ack_with_mid = ControlPacket {
            opcode: Opcode::AckV1,
            ..p
        };
        assert!(matches!(
            ack_with_mid.emit(&mut out),
            Err(WireError::Inconsistent(_))
        ));
        let mut v = vec![0xaa];
        assert!(ack_with_mid.try_emit_to_vec(&mut v).is_err());
        ack_with_mid.emit_to_vec(&mut v);
        assert_eq!(v, vec![0xaa]);
    }

    #[test]
    fn ack_list_capacity() {
        let mut l = AckList::new();
        for i in 0..8 {
            assert!(l.push(i));
        }
        assert!(l.is_full());
        assert!(!l.push(9));
        assert_eq!(l.len(), 8);
        assert!(l.contains(7));
        assert_eq!(l.wire_len(), 1 + 32 + 8);
        assert_eq!(AckList::from_slice(&[0; 9]), None);
        l.clear();
        assert!(l.is_empty());
        assert_eq!(ack_block_len(0), 1);
        assert_eq!(
            format!("{:?}", SessionId([0xab; 8])),
            "SessionId(abababababababab)"
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn packet_bytes() -> impl Strategy<Value = Vec<u8>> {
            (
                prop::sample::select(vec![3u8, 4, 5, 7, 8, 10, 11, 1, 2]),
                0u8..8,
                any::<[u8; 8]>().prop_filter("non-zero", |s| *s != [0; 8]),
                prop::collection::vec(any::<u32>(), 0..=8),
                any::<[u8; 8]>(),
                any::<u32>(),
                prop::collection::vec(any::<u8>(), 0..64),
            )
                .prop_map(|(op, key, sid, acks, rsid, mid, payload)| {
                    let mut b = vec![(op << 3) | key];
                    b.extend_from_slice(&sid);
                    b.push(acks.len() as u8);
                    for a in &acks {
                        b.extend_from_slice(&a.to_be_bytes());
                    }
                    if !acks.is_empty() {
                        b.extend_from_slice(&rsid);
                    }
                    if op != 5 {
                        b.extend_from_slice(&mid.to_be_bytes());
                    }
                    b.extend_from_slice(&payload);
                    b
                })
        }

        proptest! {
            #[test]
            fn parse_emit_identity(bytes in packet_bytes()) {
                let p = ControlPacket::parse(&bytes).expect("generated packets are valid");
                prop_assert_eq!(p.buffer_len(), bytes.len());
                let mut out = vec![0u8; p.buffer_len()];
                prop_assert_eq!(p.emit(&mut out), Ok(bytes.len()));
                prop_assert_eq!(&out, &bytes);
                prop_assert_eq!(ControlPacket::parse(&out), Ok(p));
            }

            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
                if let Ok(p) = ControlPacket::parse(&bytes) {
                    let mut out = vec![0u8; p.buffer_len()];
                    prop_assert_eq!(p.emit(&mut out), Ok(bytes.len()));
                    prop_assert_eq!(out, bytes);
                }
            }
        }
    }
}
