//! The key-method-2 message, sent once in each direction as TLS application data
//! (`keys.md` §2).
//!
//! ```text
//! | 00 00 00 00 | 02 | [pre_master 48, client only] | random1 32 | random2 32 |
//! | options str | username str | password str | peer-info str |
//! str = u16 len ‖ bytes ‖ 00   (len counts the NUL; an empty string is just 00 00)
//! ```

use core::fmt;

use crate::error::WireError;

/// Offset of the key-method byte.
pub const KEY_METHOD_OFFSET: usize = 4;
/// Offset of the first random field (pre_master for a client, random1 for a server).
pub const RANDOM_OFFSET: usize = 5;
/// The key-method value.
pub const KEY_METHOD_2: u8 = 2;
/// Length of `pre_master`.
pub const PRE_MASTER_LEN: usize = 48;
/// Length of `random1` and of `random2`.
pub const RANDOM_LEN: usize = 32;
/// Largest options string accepted, in bytes including its NUL (2.6 `OPTION_LINE_SIZE`).
pub const MAX_OPTIONS_LEN: usize = 512;
/// Largest string content [`KeyMethod2::emit`] writes (a u16 length also counts the NUL).
pub const MAX_STRING_LEN: usize = u16::MAX as usize - 1;

/// A key-method-2 message.
///
/// `Debug` redacts the password and the random material.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct KeyMethod2 {
    /// The 48-byte pre-master secret; `Some` only in the client's message.
    pub pre_master: Option<[u8; 48]>,
    /// First random block.
    pub random1: [u8; 32],
    /// Second random block.
    pub random2: [u8; 32],
    /// Options (OCC) string, e.g. `V4,dev-type tun,…,tls-client`.
    pub options: String,
    /// Username (empty if unused).
    pub username: String,
    /// Password or auth-token (empty if unused).
    pub password: String,
    /// Peer-info: `IV_…=…` lines separated by `\n` (empty if absent).
    pub peer_info: String,
}

impl fmt::Debug for KeyMethod2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMethod2")
            .field("from_client", &self.pre_master.is_some())
            .field("options", &self.options)
            .field("username", &self.username)
            .field(
                "password",
                &if self.password.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("peer_info", &self.peer_info)
            .finish_non_exhaustive()
    }
}

/// Reads `N` bytes at `*at`, advancing it.
fn take<'a>(bytes: &'a [u8], at: &mut usize, n: usize) -> Result<&'a [u8], WireError> {
    let end = at.checked_add(n).ok_or(WireError::Truncated)?;
    let s = bytes.get(*at..end).ok_or(WireError::Truncated)?;
    *at = end;
    Ok(s)
}

fn take_array<const N: usize>(bytes: &[u8], at: &mut usize) -> Result<[u8; N], WireError> {
    take(bytes, at, N)?
        .try_into()
        .map_err(|_| WireError::Truncated)
}

/// Reads one length-prefixed string; returns its content (before the forced final NUL and
/// any earlier NUL). `max` bounds the length field.
fn take_string<'a>(
    bytes: &'a [u8],
    at: &mut usize,
    max: Option<usize>,
) -> Result<&'a [u8], WireError> {
    let [a, b] = take_array::<2>(bytes, at)?;
    let len = usize::from(u16::from_be_bytes([a, b]));
    if let Some(max) = max {
        if len > max {
            return Err(WireError::OptionsTooLong(len));
        }
    }
    let raw = take(bytes, at, len)?;
    // 2.6 forces the last byte to NUL and then reads a C string.
    let body = raw.get(..len.saturating_sub(1)).unwrap_or(&[]);
    let end = body.iter().position(|&c| c == 0).unwrap_or(body.len());
    Ok(body.get(..end).unwrap_or(&[]))
}

/// An optional trailing string: absent (input ends exactly here) reads as empty.
fn take_optional_string<'a>(bytes: &'a [u8], at: &mut usize) -> Result<&'a [u8], WireError> {
    if *at >= bytes.len() {
        return Ok(&[]);
    }
    take_string(bytes, at, None)
}

/// The bytes [`KeyMethod2::emit`] writes for a string's content: up to the first NUL, at most
/// [`MAX_STRING_LEN`] bytes.
fn wire_content(s: &str) -> &[u8] {
    let b = s.as_bytes();
    let end = b
        .iter()
        .position(|&c| c == 0)
        .unwrap_or(b.len())
        .min(MAX_STRING_LEN);
    b.get(..end).unwrap_or(&[])
}

fn string_wire_len(s: &str) -> usize {
    match wire_content(s).len() {
        0 => 2,
        n => 2 + n + 1,
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    let c = wire_content(s);
    if c.is_empty() {
        out.extend_from_slice(&[0, 0]);
        return;
    }
    let len = u16::try_from(c.len() + 1).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(c);
    out.push(0);
}

impl KeyMethod2 {
    /// Parses a message from the start of `bytes`; returns it and the bytes consumed.
    ///
    /// `from_client` selects the client form (with `pre_master`). Accepts `00 00` and
    /// `00 01 00` as empty strings; if the input ends right after the options string (or
    /// after the username, or the password) the missing strings are empty. Returns
    /// [`WireError::Truncated`] when the input ends inside a field (more TLS plaintext is
    /// needed), [`WireError::OptionsTooLong`] for an options string over 512 bytes,
    /// [`WireError::BadKeyMethod`] unless the low 4 bits of byte 4 are 2, and
    /// [`WireError::InvalidUtf8`] for a username or password that is not UTF-8. Invalid
    /// UTF-8 in the options and peer-info strings is replaced (they are informational).
    pub fn parse(bytes: &[u8], from_client: bool) -> Result<(Self, usize), WireError> {
        let mut at = 0;
        take(bytes, &mut at, KEY_METHOD_OFFSET)?; // literal zero u32, ignored
        let [method] = take_array::<1>(bytes, &mut at)?;
        if method & 0x0f != KEY_METHOD_2 {
            return Err(WireError::BadKeyMethod(method));
        }
        let pre_master = if from_client {
            Some(take_array::<PRE_MASTER_LEN>(bytes, &mut at)?)
        } else {
            None
        };
        let random1 = take_array::<RANDOM_LEN>(bytes, &mut at)?;
        let random2 = take_array::<RANDOM_LEN>(bytes, &mut at)?;
        let options = take_string(bytes, &mut at, Some(MAX_OPTIONS_LEN))?;
        let username = take_optional_string(bytes, &mut at)?;
        let password = take_optional_string(bytes, &mut at)?;
        let peer_info = take_optional_string(bytes, &mut at)?;
        let msg = KeyMethod2 {
            pre_master,
            random1,
            random2,
            options: String::from_utf8_lossy(options).into_owned(),
            username: String::from_utf8(username.to_vec())
                .map_err(|_| WireError::InvalidUtf8("username"))?,
            password: String::from_utf8(password.to_vec())
                .map_err(|_| WireError::InvalidUtf8("password"))?,
            peer_info: String::from_utf8_lossy(peer_info).into_owned(),
        };
        Ok((msg, at))
    }

    /// True for the client form (with `pre_master`).
    pub fn is_from_client(&self) -> bool {
        self.pre_master.is_some()
    }

    /// Length of the emitted message.
    pub fn buffer_len(&self) -> usize {
        RANDOM_OFFSET
            + if self.pre_master.is_some() {
                PRE_MASTER_LEN
            } else {
                0
            }
            + 2 * RANDOM_LEN
            + string_wire_len(&self.options)
            + string_wire_len(&self.username)
            + string_wire_len(&self.password)
            + string_wire_len(&self.peer_info)
    }

    /// Appends the message to `out` in 2.6's encoding (empty strings as `00 00`; the client
    /// form iff `pre_master` is `Some`). Each string is written up to its first NUL and at
    /// most [`MAX_STRING_LEN`] bytes. Keeping the options string within 512 bytes and the
    /// whole message within 2048 bytes (one TLS record) is the caller's job.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.reserve(self.buffer_len());
        out.extend_from_slice(&[0, 0, 0, 0, KEY_METHOD_2]);
        if let Some(pm) = &self.pre_master {
            out.extend_from_slice(pm);
        }
        out.extend_from_slice(&self.random1);
        out.extend_from_slice(&self.random2);
        put_string(out, &self.options);
        put_string(out, &self.username);
        put_string(out, &self.password);
        put_string(out, &self.peer_info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn arr<const N: usize>(s: &str) -> [u8; N] {
        hex(s).try_into().expect("length")
    }

    const CLIENT_OPTIONS: &str = "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,key-method 2,tls-client";
    const SERVER_OPTIONS: &str = "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,key-method 2,tls-server";

    #[test]
    fn server_message_bytes() {
        // keys.md §2.2 interop: options string, then 00 00 00 00 00 00; randoms from §6.
        let r1 = "c0823af7c75dec7b67da4b313391a0e2568af297ddd3d23368a3ad3bbb16bc4c";
        let r2 = "b6dd278304d351a826ff1003843b1dfd683466e198f1c956f44da7b9815e3a12";
        let mut bytes = hex(&format!("00000000 02 {r1} {r2}"));
        bytes.extend_from_slice(&((SERVER_OPTIONS.len() + 1) as u16).to_be_bytes());
        bytes.extend_from_slice(SERVER_OPTIONS.as_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes.len(), 69 + 2 + SERVER_OPTIONS.len() + 1 + 6);

        let (m, used) = KeyMethod2::parse(&bytes, false).expect("parses");
        assert_eq!(used, bytes.len());
        assert_eq!(m.pre_master, None);
        assert_eq!(m.random1, arr::<32>(r1));
        assert_eq!(m.random2, arr::<32>(r2));
        assert_eq!(m.options, SERVER_OPTIONS);
        assert!(m.username.is_empty() && m.password.is_empty() && m.peer_info.is_empty());
        let mut out = Vec::new();
        m.emit(&mut out);
        assert_eq!(out, bytes);
        assert_eq!(m.buffer_len(), bytes.len());
    }

    #[test]
    fn client_message_round_trip() {
        // randoms of test-vectors.md §6
        let m = KeyMethod2 {
            pre_master: Some(arr::<48>(
                "87a325212e5b0976bec2338e45241e8d59e673e113ccf0fcb0cb349013ea98a0105969fa26168b42bcddf8e9163c4c75",
            )),
            random1: arr::<32>("da796b1cb2546ddba2fd6452c365e5d0b823dfc30593570dc5ccc750a8b009d7"),
            random2: arr::<32>("08712dff57d40bc7c1d9523c7f87e5575d793b2ca5cd089c50f591507bf5c41a"),
            options: CLIENT_OPTIONS.into(),
            username: "alice".into(),
            password: "s3cret".into(),
            peer_info:
                "IV_VER=2.6.14\nIV_PLAT=linux\nIV_PROTO=6\nIV_CIPHERS=AES-256-GCM:AES-128-GCM\n"
                    .into(),
        };
        let mut out = vec![0xee]; // emit appends
        m.emit(&mut out);
        assert_eq!(out[0], 0xee);
        let bytes = &out[1..];
        assert_eq!(bytes.len(), m.buffer_len());
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 2]);
        assert_eq!(&bytes[5..9], &[0x87, 0xa3, 0x25, 0x21]);
        assert_eq!(
            &bytes[117..119],
            &(CLIENT_OPTIONS.len() as u16 + 1).to_be_bytes()
        );
        // username "alice" right after the options string
        let u = 119 + CLIENT_OPTIONS.len() + 1;
        assert_eq!(&bytes[u..u + 8], &[0, 6, b'a', b'l', b'i', b'c', b'e', 0]);
        let (back, used) = KeyMethod2::parse(bytes, true).expect("parses");
        assert_eq!(used, bytes.len());
        assert_eq!(back, m);
        assert!(!format!("{back:?}").contains("s3cret"));
        // trailing bytes are not consumed
        let mut more = bytes.to_vec();
        more.extend_from_slice(b"PUSH_REQUEST");
        assert_eq!(KeyMethod2::parse(&more, true).map(|r| r.1), Ok(bytes.len()));
        // every prefix that ends inside a field is Truncated, string boundaries parse
        for n in 0..bytes.len() {
            if let Ok((p, used)) = KeyMethod2::parse(&bytes[..n], true) {
                assert_eq!(used, n);
                assert_eq!(p.options, CLIENT_OPTIONS);
            } else {
                assert_eq!(
                    KeyMethod2::parse(&bytes[..n], true),
                    Err(WireError::Truncated),
                    "len {n}"
                );
            }
        }
    }

    #[test]
    fn lenient_strings() {
        let mut bytes = vec![0, 0, 0, 0, 0x02];
        bytes.extend_from_slice(&[1; 64]);
        bytes.extend_from_slice(&[0, 3, b'V', b'4', 0]); // options
        bytes.extend_from_slice(&[0, 1, 0]); // username as 00 01 00
        let (m, used) = KeyMethod2::parse(&bytes, false).expect("parses");
        assert_eq!(used, bytes.len());
        assert_eq!(m.options, "V4");
        assert_eq!(m.username, "");
        assert_eq!(m.password, "");
        // missing NUL: 2.6 overwrites the last byte with NUL
        let mut b2 = bytes[..69].to_vec();
        b2.extend_from_slice(&[0, 3, b'V', b'4', b'X']);
        assert_eq!(
            KeyMethod2::parse(&b2, false).map(|r| r.0.options),
            Ok("V4".into())
        );
    }

    #[test]
    fn rejections() {
        let mut bytes = vec![0, 0, 0, 0, 0x01];
        bytes.extend_from_slice(&[1; 64]);
        bytes.extend_from_slice(&[0, 0]);
        assert_eq!(
            KeyMethod2::parse(&bytes, false),
            Err(WireError::BadKeyMethod(1))
        );
        bytes[4] = 0xf2; // high bits are reserved flags
        assert!(KeyMethod2::parse(&bytes, false).is_ok());
        let n = bytes.len();
        bytes[n - 2..].copy_from_slice(&513u16.to_be_bytes());
        assert_eq!(
            KeyMethod2::parse(&bytes, false),
            Err(WireError::OptionsTooLong(513))
        );
        bytes[n - 2..].copy_from_slice(&[0, 0]);
        bytes.extend_from_slice(&[0, 2, 0xff, 0]);
        assert_eq!(
            KeyMethod2::parse(&bytes, false),
            Err(WireError::InvalidUtf8("username"))
        );
        assert_eq!(KeyMethod2::parse(&[], true), Err(WireError::Truncated));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn text(max: usize) -> impl Strategy<Value = String> {
            proptest::string::string_regex(&format!("[^\\x00]{{0,{max}}}")).expect("regex")
        }

        proptest! {
            #[test]
            fn emit_parse_identity(
                client in any::<bool>(),
                pm in any::<[u8; 32]>(),
                r1 in any::<[u8; 32]>(),
                r2 in any::<[u8; 32]>(),
                options in text(100), username in text(20), password in text(20), peer_info in text(100),
            ) {
                let mut pre = [0u8; 48];
                pre[..32].copy_from_slice(&pm);
                let m = KeyMethod2 {
                    pre_master: client.then_some(pre),
                    random1: r1, random2: r2, options, username, password, peer_info,
                };
                let mut out = Vec::new();
                m.emit(&mut out);
                prop_assert_eq!(out.len(), m.buffer_len());
                let (back, used) = KeyMethod2::parse(&out, client).expect("own output parses");
                prop_assert_eq!(used, out.len());
                prop_assert_eq!(back, m);
            }

            #[test]
            fn garbage_never_panics(client in any::<bool>(), bytes in prop::collection::vec(any::<u8>(), 0..200)) {
                if let Ok((m, used)) = KeyMethod2::parse(&bytes, client) {
                    prop_assert!(used <= bytes.len());
                    let mut out = Vec::new();
                    m.emit(&mut out);
                    let (again, _) = KeyMethod2::parse(&out, client).expect("re-parses");
                    prop_assert_eq!(again, m);
                }
            }
        }
    }
}
