//! openvpn-wire (work in progress).
