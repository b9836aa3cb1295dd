//! The first byte of every OpenVPN packet: a 5-bit opcode and a 3-bit key ID.
//!
//! ```text
//!  bit:  7 6 5 4 3   2 1 0
//!       | opcode  | key_id |      first_byte = (opcode << 3) | key_id
//! ```

use crate::error::WireError;

/// Number of bits the opcode is shifted left by in the first byte.
pub const OPCODE_SHIFT: u8 = 3;
/// Mask of the key-ID bits in the first byte.
pub const KEY_ID_MASK: u8 = 0x07;

/// An OpenVPN packet opcode (`packets.md` §2).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Opcode {
    /// P_CONTROL_HARD_RESET_CLIENT_V1 (key-method 1, obsolete).
    HardResetClientV1 = 1,
    /// P_CONTROL_HARD_RESET_SERVER_V1 (key-method 1, obsolete).
    HardResetServerV1 = 2,
    /// P_CONTROL_SOFT_RESET_V1: start of a renegotiation.
    SoftResetV1 = 3,
    /// P_CONTROL_V1: carries TLS ciphertext.
    ControlV1 = 4,
    /// P_ACK_V1: acknowledgements only, no message ID, no payload.
    AckV1 = 5,
    /// P_DATA_V1: data packet without peer-id.
    DataV1 = 6,
    /// P_CONTROL_HARD_RESET_CLIENT_V2: first packet of a connection.
    HardResetClientV2 = 7,
    /// P_CONTROL_HARD_RESET_SERVER_V2: server's reply to a client hard reset.
    HardResetServerV2 = 8,
    /// P_DATA_V2: data packet with a 24-bit peer-id.
    DataV2 = 9,
    /// P_CONTROL_HARD_RESET_CLIENT_V3: client hard reset with tls-crypt-v2 WKc appended.
    HardResetClientV3 = 10,
    /// P_CONTROL_WKC_V1: like P_CONTROL_V1 with WKc appended (2.6 cookie handshake).
    ControlWkcV1 = 11,
}

impl Opcode {
    /// The opcode with numeric value `v` (1..=11), or `None`.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::HardResetClientV1,
            2 => Self::HardResetServerV1,
            3 => Self::SoftResetV1,
            4 => Self::ControlV1,
            5 => Self::AckV1,
            6 => Self::DataV1,
            7 => Self::HardResetClientV2,
            8 => Self::HardResetServerV2,
            9 => Self::DataV2,
            10 => Self::HardResetClientV3,
            11 => Self::ControlWkcV1,
            _ => return None,
        })
    }

    /// The numeric value of the opcode.
    pub fn value(self) -> u8 {
        self as u8
    }

    /// True for every control-channel opcode (everything except P_DATA_V1/V2).
    pub fn is_control(self) -> bool {
        !self.is_data()
    }

    /// True for P_DATA_V1 and P_DATA_V2.
    pub fn is_data(self) -> bool {
        matches!(self, Self::DataV1 | Self::DataV2)
    }

    /// True for control opcodes that carry a message packet ID (all except P_ACK_V1).
    pub fn has_message_id(self) -> bool {
        self.is_control() && self != Self::AckV1
    }

    /// True for the hard-reset opcodes (client/server, V1/V2/V3).
    pub fn is_hard_reset(self) -> bool {
        matches!(
            self,
            Self::HardResetClientV1
                | Self::HardResetServerV1
                | Self::HardResetClientV2
                | Self::HardResetServerV2
                | Self::HardResetClientV3
        )
    }

    /// True for the opcodes that carry a tls-crypt-v2 WKc after the wrapped packet (10, 11).
    pub fn has_wkc(self) -> bool {
        matches!(self, Self::HardResetClientV3 | Self::ControlWkcV1)
    }
}

/// A 3-bit key ID selecting the key state (TLS session generation), 0..=7.
///
/// Key ID 0 is used only by the first TLS session of a connection; renegotiations use 1..=7
/// and then wrap to 1 (`keys.md` §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct KeyId(u8);

impl KeyId {
    /// Key ID 0, used by the initial key state.
    pub const ZERO: KeyId = KeyId(0);

    /// The key ID `v`, or `None` if `v > 7`.
    pub fn new(v: u8) -> Option<Self> {
        (v <= KEY_ID_MASK).then_some(KeyId(v))
    }

    /// The numeric value 0..=7.
    pub fn value(self) -> u8 {
        self.0
    }

    /// The key ID of the next renegotiation: 0→1, …, 6→7, 7→1 (never back to 0).
    pub fn next(self) -> KeyId {
        if self.0 >= KEY_ID_MASK {
            KeyId(1)
        } else {
            KeyId(self.0 + 1)
        }
    }
}

/// The first byte of a packet with opcode `op` and key ID `key`.
pub fn first_byte(op: Opcode, key: KeyId) -> u8 {
    (op.value() << OPCODE_SHIFT) | key.value()
}

/// Splits a first byte into opcode and key ID; errors on an unknown opcode.
pub fn parse_first_byte(b: u8) -> Result<(Opcode, KeyId), WireError> {
    let op_bits = b >> OPCODE_SHIFT;
    let op = Opcode::from_u8(op_bits).ok_or(WireError::UnknownOpcode(op_bits))?;
    Ok((op, KeyId(b & KEY_ID_MASK)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_of_opcode_table() {
        let table: [(Opcode, u8); 11] = [
            (Opcode::HardResetClientV1, 0x08),
            (Opcode::HardResetServerV1, 0x10),
            (Opcode::SoftResetV1, 0x18),
            (Opcode::ControlV1, 0x20),
            (Opcode::AckV1, 0x28),
            (Opcode::DataV1, 0x30),
            (Opcode::HardResetClientV2, 0x38),
            (Opcode::HardResetServerV2, 0x40),
            (Opcode::DataV2, 0x48),
            (Opcode::HardResetClientV3, 0x50),
            (Opcode::ControlWkcV1, 0x58),
        ];
        for (op, byte) in table {
            assert_eq!(first_byte(op, KeyId::ZERO), byte);
            assert_eq!(parse_first_byte(byte), Ok((op, KeyId::ZERO)));
        }
    }

    #[test]
    fn key_id_in_low_bits() {
        let k5 = KeyId::new(5).expect("5 is a key id");
        assert_eq!(first_byte(Opcode::DataV2, k5), 0x4d);
        assert_eq!(parse_first_byte(0x4d), Ok((Opcode::DataV2, k5)));
        assert_eq!(parse_first_byte(0x1f), Ok((Opcode::SoftResetV1, KeyId(7))));
    }

    #[test]
    fn unknown_opcodes_rejected() {
        assert_eq!(parse_first_byte(0x00), Err(WireError::UnknownOpcode(0)));
        assert_eq!(parse_first_byte(0x07), Err(WireError::UnknownOpcode(0)));
        assert_eq!(parse_first_byte(0x60), Err(WireError::UnknownOpcode(12)));
        assert_eq!(parse_first_byte(0xff), Err(WireError::UnknownOpcode(31)));
        for b in 0..=255u8 {
            let _ = parse_first_byte(b);
        }
    }

    #[test]
    fn classification() {
        assert!(Opcode::AckV1.is_control() && !Opcode::AckV1.has_message_id());
        assert!(Opcode::ControlV1.has_message_id());
        assert!(Opcode::DataV1.is_data() && !Opcode::DataV1.is_control());
        assert!(!Opcode::DataV2.has_message_id());
        assert!(Opcode::HardResetClientV3.is_hard_reset());
        assert!(!Opcode::SoftResetV1.is_hard_reset());
        assert!(Opcode::ControlWkcV1.has_wkc() && !Opcode::ControlV1.has_wkc());
        for v in 0..=40u8 {
            if let Some(op) = Opcode::from_u8(v) {
                assert_eq!(op.value(), v);
            } else {
                assert!(v == 0 || v > 11);
            }
        }
    }

    #[test]
    fn key_id_wraps_to_one() {
        assert_eq!(KeyId::ZERO.next().value(), 1);
        assert_eq!(KeyId(6).next().value(), 7);
        assert_eq!(KeyId(7).next().value(), 1);
        assert_eq!(KeyId::new(8), None);
        assert_eq!(KeyId::new(7).map(KeyId::value), Some(7));
    }
}
