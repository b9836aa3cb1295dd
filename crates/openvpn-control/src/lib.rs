//! openvpn-control (work in progress).
