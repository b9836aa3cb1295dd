//! Which event a module is called for, and sets of them.

use std::fmt;

/// An event OpenVPN calls modules for (the plug-in "type"). The discriminant is the number
/// on the wire of the ABI; a module asks for a kind by setting bit `1 << number` in its mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum PluginKind {
    /// The tun device is configured (as the `up` script).
    Up = 0,
    /// The tun device is going away (as the `down` script).
    Down = 1,
    /// Routes are installed (as `route-up`).
    RouteUp = 2,
    /// The peer's address changed (as `ipchange`).
    IpChange = 3,
    /// One certificate of the peer's chain, once per depth (as `tls-verify`).
    TlsVerify = 4,
    /// Username and password to check (as `auth-user-pass-verify`); may be deferred.
    AuthUserPassVerify = 5,
    /// A client is connecting; `argv[1]` names a file for config directives (as
    /// `client-connect`).
    ClientConnect = 6,
    /// A client has gone (as `client-disconnect`).
    ClientDisconnect = 7,
    /// A tunnel address was added, updated or deleted (as `learn-address`).
    LearnAddress = 8,
    /// A client is connecting; config directives come back in the returned list under the
    /// name `config`.
    ClientConnectV2 = 9,
    /// The TLS handshake and authentication of a key finished.
    TlsFinal = 10,
    /// Routes are about to be removed (as `route-pre-down`).
    RoutePredown = 12,
    /// Asks a module that deferred [`PluginKind::ClientConnect`] for its result.
    ClientConnectDefer = 13,
    /// Asks a module that deferred [`PluginKind::ClientConnectV2`] for its returned list.
    ClientConnectDeferV2 = 14,
}

impl PluginKind {
    /// Every kind, in numeric order.
    pub const ALL: [PluginKind; 14] = [
        PluginKind::Up,
        PluginKind::Down,
        PluginKind::RouteUp,
        PluginKind::IpChange,
        PluginKind::TlsVerify,
        PluginKind::AuthUserPassVerify,
        PluginKind::ClientConnect,
        PluginKind::ClientDisconnect,
        PluginKind::LearnAddress,
        PluginKind::ClientConnectV2,
        PluginKind::TlsFinal,
        PluginKind::RoutePredown,
        PluginKind::ClientConnectDefer,
        PluginKind::ClientConnectDeferV2,
    ];

    /// The number the ABI uses for this kind.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The kind with ABI number `code`, if we know it.
    pub fn from_code(code: i32) -> Option<PluginKind> {
        PluginKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// This kind's bit in a [`TypeMask`].
    pub fn bit(self) -> u32 {
        1 << self.code()
    }

    /// OpenVPN's log name of the kind (`PLUGIN_UP`, `PLUGIN_AUTH_USER_PASS_VERIFY`, …).
    pub fn name(self) -> &'static str {
        match self {
            PluginKind::Up => "PLUGIN_UP",
            PluginKind::Down => "PLUGIN_DOWN",
            PluginKind::RouteUp => "PLUGIN_ROUTE_UP",
            PluginKind::IpChange => "PLUGIN_IPCHANGE",
            PluginKind::TlsVerify => "PLUGIN_TLS_VERIFY",
            PluginKind::AuthUserPassVerify => "PLUGIN_AUTH_USER_PASS_VERIFY",
            PluginKind::ClientConnect => "PLUGIN_CLIENT_CONNECT",
            PluginKind::ClientDisconnect => "PLUGIN_CLIENT_DISCONNECT",
            PluginKind::LearnAddress => "PLUGIN_LEARN_ADDRESS",
            PluginKind::ClientConnectV2 => "PLUGIN_CLIENT_CONNECT_V2",
            PluginKind::TlsFinal => "PLUGIN_TLS_FINAL",
            PluginKind::RoutePredown => "PLUGIN_ROUTE_PREDOWN",
            PluginKind::ClientConnectDefer => "PLUGIN_CLIENT_CONNECT_DEFER",
            PluginKind::ClientConnectDeferV2 => "PLUGIN_CLIENT_CONNECT_DEFER_V2",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`PluginKind`]s as the ABI's bit mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TypeMask(pub u32);

impl TypeMask {
    /// Every kind we can call.
    pub const ALL: TypeMask = {
        let mut bits = 0;
        let mut i = 0;
        while i < PluginKind::ALL.len() {
            bits |= 1 << PluginKind::ALL[i] as u32;
            i += 1;
        }
        TypeMask(bits)
    };

    /// The set of `kinds`.
    pub fn of(kinds: &[PluginKind]) -> TypeMask {
        TypeMask(kinds.iter().fold(0, |m, k| m | k.bit()))
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: PluginKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// The kinds in the set that we know, in numeric order.
    pub fn kinds(self) -> impl Iterator<Item = PluginKind> {
        PluginKind::ALL
            .into_iter()
            .filter(move |k| self.contains(*k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_the_abi_ones() {
        assert_eq!(PluginKind::Up.code(), 0);
        assert_eq!(PluginKind::AuthUserPassVerify.bit(), 1 << 5);
        assert_eq!(PluginKind::ClientConnectV2.code(), 9);
        assert_eq!(PluginKind::RoutePredown.code(), 12);
        assert_eq!(PluginKind::from_code(11), None, "ENABLE_PF is gone in 2.6");
        assert_eq!(
            PluginKind::from_code(14),
            Some(PluginKind::ClientConnectDeferV2)
        );
        assert_eq!(TypeMask::ALL.0, 0x7fff & !(1 << 11));
        let m = TypeMask::of(&[PluginKind::Up, PluginKind::Down]);
        assert_eq!(m.0, 3);
        assert_eq!(
            m.kinds().collect::<Vec<_>>(),
            [PluginKind::Up, PluginKind::Down]
        );
    }
}
