//! The [`ControlWrap`] trait implemented by tls-auth and tls-crypt (`packets.md` §5).

use crate::error::CryptoError;
use crate::replay::ReplayId;

/// Length of `op/key ‖ own session id` at the start of every control packet.
pub(crate) const CONTROL_PREFIX: usize = 9;

/// Control-channel wrapping: turns a plain control packet
/// (`op/key ‖ own session id (8) ‖ reliable body`) into its wire form and back.
pub trait ControlWrap {
    /// Bytes the wire form adds to the plain packet.
    fn overhead(&self) -> usize;

    /// Writes the wire form of `plain` with the long-form packet id `replay` into `out`
    /// (cleared first). A `plain` shorter than 9 bytes is treated as all header, empty body.
    fn wrap(&self, plain: &[u8], replay: ReplayId, out: &mut Vec<u8>);

    /// Verifies (in constant time) and unwraps `wire` into `out` (cleared first; left empty on
    /// error). Returns the packet's replay id, which the caller must still run through its
    /// [`ReplayWindow`](crate::ReplayWindow).
    fn unwrap(&self, wire: &[u8], out: &mut Vec<u8>) -> Result<ReplayId, CryptoError>;
}
