//! openvpn-server (work in progress).
