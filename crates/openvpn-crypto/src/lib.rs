//! openvpn-crypto (work in progress).
