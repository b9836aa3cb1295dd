//! openvpn-tun (work in progress).
