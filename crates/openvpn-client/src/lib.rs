//! openvpn-client (work in progress).
