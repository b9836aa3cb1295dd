//! Peer-info (`IV_*` / `UV_*` lines in the client's key-method-2 message).

/// IV_PROTO bit: can use P_DATA_V2 with a peer-id.
pub const IV_PROTO_DATA_V2: u32 = 1 << 1;
/// IV_PROTO bit: client sends PUSH_REQUEST; server may push without waiting.
pub const IV_PROTO_REQUEST_PUSH: u32 = 1 << 2;
/// IV_PROTO bit: RFC 5705 key derivation (`tls-ekm`).
pub const IV_PROTO_TLS_KEY_EXPORT: u32 = 1 << 3;
/// IV_PROTO bit: understands `AUTH_PENDING,timeout`.
pub const IV_PROTO_AUTH_PENDING_KW: u32 = 1 << 4;
/// IV_PROTO bit: P2P NCP.
pub const IV_PROTO_NCP_P2P: u32 = 1 << 5;
/// IV_PROTO bit: understands the pushed `dns` option.
pub const IV_PROTO_DNS_OPTION: u32 = 1 << 6;
/// IV_PROTO bit: understands `EXIT` and `protocol-flags`.
pub const IV_PROTO_CC_EXIT_NOTIFY: u32 = 1 << 7;
/// IV_PROTO bit: understands `AUTH_FAILED,TEMP`.
pub const IV_PROTO_AUTH_FAIL_TEMP: u32 = 1 << 8;
/// IV_PROTO bit: dynamic tls-crypt for renegotiations.
pub const IV_PROTO_DYN_TLS_CRYPT: u32 = 1 << 9;

/// Parsed peer-info: the `NAME=value` lines that pass OpenVPN's filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    vars: Vec<(String, String)>,
}

impl PeerInfo {
    /// Parses the peer-info string, keeping lines whose name is `[A-Za-z0-9_]+`, starts with
    /// `IV_` or `UV_` and fits in 255 characters.
    pub fn parse(text: &str) -> Self {
        let vars = text
            .split('\n')
            .filter_map(|line| {
                let line = line.trim_end_matches('\r');
                let (name, value) = line.split_once('=')?;
                let ok = (name.starts_with("IV_") || name.starts_with("UV_"))
                    && line.len() <= 255
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                ok.then(|| (name.to_owned(), value.to_owned()))
            })
            .collect();
        PeerInfo { vars }
    }

    /// Builds peer-info from variables, in order.
    pub fn from_vars(vars: Vec<(String, String)>) -> Self {
        PeerInfo { vars }
    }

    /// The value of a variable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All variables in order.
    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }

    /// `IV_PROTO` as a number (0 if absent or malformed).
    pub fn proto_bits(&self) -> u32 {
        self.get("IV_PROTO")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The client's data ciphers: `IV_CIPHERS`, or the two GCM ciphers for `IV_NCP>=2`.
    pub fn ciphers(&self) -> Vec<String> {
        if let Some(list) = self.get("IV_CIPHERS") {
            return list
                .split(':')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
        }
        let ncp: u32 = self.get("IV_NCP").and_then(|v| v.parse().ok()).unwrap_or(0);
        if ncp >= 2 {
            vec!["AES-256-GCM".into(), "AES-128-GCM".into()]
        } else {
            Vec::new()
        }
    }

    /// Renders `NAME=value\n` lines.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (n, v) in &self.vars {
            s.push_str(n);
            s.push('=');
            s.push_str(v);
            s.push('\n');
        }
        s
    }

    /// The value with whitespace, non-printables and `$ ( `` ` replaced by `_`, as passed to
    /// scripts.
    pub fn sanitized(value: &str) -> String {
        value
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() && !matches!(c, '$' | '(' | '`') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

/// Inputs for the peer-info an OpenVPN client announces.
#[derive(Clone, Debug)]
pub struct ClientPeerInfo {
    /// `IV_VER`.
    pub version: String,
    /// `IV_PLAT`.
    pub platform: String,
    /// `--data-ciphers` in preference order.
    pub ciphers: Vec<String>,
    /// `IV_PROTO` bits.
    pub proto: u32,
    /// `IV_MTU` (largest tun MTU the client can set).
    pub mtu: Option<u16>,
    /// Extra `IV_*`/`UV_*` variables from `setenv` (e.g. `IV_GUI_VER`).
    pub extra: Vec<(String, String)>,
    /// Announce `IV_LZ4`/`IV_LZ4v2`/`IV_LZO` (we decompress them: `allow-compression` is not
    /// `no` and no stub is configured) instead of the stubs only.
    pub decompresses: bool,
}

impl ClientPeerInfo {
    /// Builds the peer-info string in the order a 2.6 client uses.
    pub fn render(&self) -> String {
        let mut vars: Vec<(String, String)> = vec![
            ("IV_VER".into(), self.version.clone()),
            ("IV_PLAT".into(), self.platform.clone()),
            ("IV_TCPNL".into(), "1".into()),
        ];
        if let Some(mtu) = self.mtu {
            vars.push(("IV_MTU".into(), mtu.to_string()));
        }
        let has = |c: &str| self.ciphers.iter().any(|x| x.eq_ignore_ascii_case(c));
        if has("AES-128-GCM") && has("AES-256-GCM") {
            vars.push(("IV_NCP".into(), "2".into()));
        }
        vars.push(("IV_CIPHERS".into(), self.ciphers.join(":")));
        vars.push(("IV_PROTO".into(), self.proto.to_string()));
        for v in crate::compression::peer_info_vars(self.decompresses) {
            vars.push(((*v).into(), "1".into()));
        }
        for (n, v) in &self.extra {
            if (n.starts_with("IV_") || n.starts_with("UV_")) && !vars.iter().any(|(x, _)| x == n) {
                vars.push((n.clone(), v.clone()));
            }
        }
        PeerInfo::from_vars(vars).render()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const REAL_26: &str = "IV_VER=2.6.14\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU=1600\nIV_NCP=2\nIV_CIPHERS=AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\nIV_PROTO=990\nIV_LZO_STUB=1\nIV_COMP_STUB=1\nIV_COMP_STUBv2=1\n";

    #[test]
    fn parses_real_client_peer_info() {
        let p = PeerInfo::parse(REAL_26);
        assert_eq!(p.get("IV_VER"), Some("2.6.14"));
        assert_eq!(p.proto_bits(), 990);
        assert_eq!(
            p.ciphers(),
            vec!["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"]
        );
        assert_eq!(p.vars().len(), 10);
    }

    #[test]
    fn filters_bad_names() {
        let p = PeerInfo::parse("IV_OK=1\nFOO=2\nIV_B-AD=3\nUV_X=y z\n");
        assert_eq!(p.vars().len(), 2);
        assert_eq!(p.get("UV_X"), Some("y z"));
        assert_eq!(PeerInfo::sanitized("y z$(x)"), "y_z__x)");
    }

    #[test]
    fn ncp_fallback_from_iv_ncp() {
        assert_eq!(
            PeerInfo::parse("IV_NCP=2\n").ciphers(),
            vec!["AES-256-GCM", "AES-128-GCM"]
        );
        assert!(PeerInfo::parse("IV_VER=2.3\n").ciphers().is_empty());
    }

    #[test]
    fn client_peer_info_matches_26_order() {
        let c = ClientPeerInfo {
            version: "2.6.14".into(),
            platform: "linux".into(),
            ciphers: vec![
                "AES-256-GCM".into(),
                "AES-128-GCM".into(),
                "CHACHA20-POLY1305".into(),
            ],
            proto: 990,
            mtu: Some(1600),
            extra: vec![
                ("IV_GUI_VER".into(), "test_1.0".into()),
                ("HOME".into(), "x".into()),
            ],
            decompresses: false,
        };
        let s = c.render();
        assert!(s.starts_with(REAL_26), "{s}");
        assert!(s.ends_with("IV_GUI_VER=test_1.0\n"));
        assert!(!s.contains("HOME"));
        // A 2.6 client with allow-compression asym (comp.c's order, no LZO stub).
        let s = ClientPeerInfo {
            decompresses: true,
            ..c
        }
        .render();
        assert!(
            s.contains(
                "IV_PROTO=990\nIV_LZ4=1\nIV_LZ4v2=1\nIV_LZO=1\nIV_COMP_STUB=1\nIV_COMP_STUBv2=1\n"
            ),
            "{s}"
        );
    }
}
