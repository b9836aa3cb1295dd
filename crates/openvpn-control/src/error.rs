//! The crate's error type.

/// Errors of the control channel.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A configuration value is unusable; the text names it and the fix.
    #[error("{0}")]
    Config(String),
    /// TLS failed (handshake, certificate, record).
    #[error("TLS error: {0}")]
    Tls(String),
    /// Wrapping keys could not be set up.
    #[error("crypto: {0}")]
    Crypto(#[from] openvpn_crypto::CryptoError),
    /// The peer violated the protocol in a way that ends the key state.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An option could not be parsed.
    #[error(transparent)]
    Option(#[from] crate::options::OptionError),
}
