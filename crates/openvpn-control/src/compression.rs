//! `allow-compression` and the `compress` / `comp-lzo` options, both roles, with OpenVPN
//! 2.6's meaning — except that openvpn-rs never compresses (VORACLE): where 2.6 would
//! compress (`allow-compression yes`), we decompress what the peer sends and send the
//! algorithm's uncompressed form, which every compressing peer accepts.
//!
//! ```text
//!  compress/comp-lzo words ──framing_for──▶ CompressionFraming (stub, or one that decompresses)
//!  allow-compression ──AllowCompression::set / check_compress──▶ config errors as 2.6 gives them
//!  both ──AllowCompression::effective──▶ no | asym | yes ──allows(framing)──▶ refuse a push?
//! ```
//!
//! 2.6 (`options.c`, `comp.c`, the manual's `--allow-compression`):
//! * `no`: stub framings only; a pushed real algorithm fails the connection ("server pushed
//!   compression settings that are not allowed"); with it, a configured real algorithm is a
//!   configuration error. The default — unless the config has a `compress`/`comp-lzo` line
//!   other than `comp-lzo no`, then the default is `asym`.
//! * `asym`: decompress what the peer sends, never compress.
//! * `yes`: also compress (we do not: one notice says so).
//! * After `allow-compression no`, another mode is an error.

use openvpn_wire::CompressionFraming;

/// `allow-compression no|asym|yes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AllowCompression {
    /// Refuse real compression (stub framings only).
    #[default]
    No,
    /// Decompress what the peer compresses; never compress.
    Asym,
    /// OpenVPN also compresses; openvpn-rs decompresses only, like `asym`.
    Yes,
}

impl AllowCompression {
    /// Parses the argument of `allow-compression`.
    pub fn parse(arg: &str) -> Option<Self> {
        match arg {
            "no" => Some(AllowCompression::No),
            "asym" => Some(AllowCompression::Asym),
            "yes" => Some(AllowCompression::Yes),
            _ => None,
        }
    }

    /// The option's word.
    pub fn as_str(self) -> &'static str {
        match self {
            AllowCompression::No => "no",
            AllowCompression::Asym => "asym",
            AllowCompression::Yes => "yes",
        }
    }

    /// A new `allow-compression` line after `previous` (`None`: the first), with `configured`
    /// the framing of the config's `compress`/`comp-lzo` line so far. Errors as 2.6 does:
    /// `no` with a real algorithm configured, or a mode other than `no` after `no`.
    pub fn set(
        previous: Option<Self>,
        new: Self,
        configured: Option<CompressionFraming>,
    ) -> Result<Self, String> {
        if previous == Some(AllowCompression::No) && new != AllowCompression::No {
            return Err(format!(
                "cannot set allow-compression to '{}' after it was set to 'no'",
                new.as_str()
            ));
        }
        if new == AllowCompression::No {
            check_compress(Some(new), configured.unwrap_or_default())?;
        }
        Ok(new)
    }

    /// The mode in force: the configured one, else 2.6's default for the config's
    /// `compress`/`comp-lzo` line (`None`: there is none): `no` without one or with
    /// `comp-lzo no` (`LzoStub`), `asym` with any other (stubs and `migrate` included).
    pub fn effective(explicit: Option<Self>, configured: Option<CompressionFraming>) -> Self {
        match (explicit, configured) {
            (Some(mode), _) => mode,
            (None, None | Some(CompressionFraming::LzoStub)) => AllowCompression::No,
            (None, Some(_)) => AllowCompression::Asym,
        }
    }

    /// Whether `framing` may be used (configured or pushed): `no` allows stubs only.
    pub fn allows(self, framing: CompressionFraming) -> bool {
        self != AllowCompression::No || framing.decompresses().is_none()
    }
}

/// Checks a `compress`/`comp-lzo` line of `framing` against an earlier
/// `allow-compression` line (`allow`).
pub fn check_compress(
    allow: Option<AllowCompression>,
    framing: CompressionFraming,
) -> Result<(), String> {
    match allow {
        Some(a) if !a.allows(framing) => Err(
            "'allow-compression no' conflicts with enabling compression: remove one of them \
             ('compress stub-v2' or 'comp-lzo no' keep the framing without compression)"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// The framing of a pushed (or configured) `compress` / `comp-lzo` option (its words, the
/// name first). Real algorithms get the framing that decompresses them; `compress migrate`
/// (a server's choice per client) and unknown algorithms are [`CompressionFraming::None`].
pub fn framing_for(option: &[String]) -> CompressionFraming {
    use CompressionFraming as F;
    let arg = option.get(1).map(String::as_str);
    match option.first().map(String::as_str) {
        Some("comp-lzo") => match arg {
            Some("no") => F::LzoStub,
            None | Some("yes" | "adaptive") => F::Lzo,
            Some(_) => F::None,
        },
        Some("compress") => match arg {
            None | Some("stub") => F::Stub,
            Some("stub-v2") => F::StubV2,
            Some("lzo") => F::Lzo,
            Some("lz4") => F::Lz4,
            Some("lz4-v2") => F::Lz4V2,
            _ => F::None,
        },
        _ => F::None,
    }
}

/// The peer-info compression variables a 2.6 client sends (`comp.c`): the real algorithms
/// only where it decompresses them (`allow-compression` not `no`, and no stub configured).
pub fn peer_info_vars(advertise_algorithms: bool) -> &'static [&'static str] {
    if advertise_algorithms {
        &[
            "IV_LZ4",
            "IV_LZ4v2",
            "IV_LZO",
            "IV_COMP_STUB",
            "IV_COMP_STUBv2",
        ]
    } else {
        &["IV_LZO_STUB", "IV_COMP_STUB", "IV_COMP_STUBv2"]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CompressionFraming as F;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn options_map_to_framings() {
        for (text, f) in [
            ("comp-lzo", F::Lzo),
            ("comp-lzo yes", F::Lzo),
            ("comp-lzo adaptive", F::Lzo),
            ("comp-lzo no", F::LzoStub),
            ("comp-lzo maybe", F::None),
            ("compress", F::Stub),
            ("compress stub", F::Stub),
            ("compress stub-v2", F::StubV2),
            ("compress lzo", F::Lzo),
            ("compress lz4", F::Lz4),
            ("compress lz4-v2", F::Lz4V2),
            ("compress migrate", F::None),
            ("compress zstd", F::None),
        ] {
            assert_eq!(framing_for(&words(text)), f, "{text}");
        }
    }

    #[test]
    fn defaults_and_conflicts_as_in_2_6() {
        use AllowCompression as A;
        assert_eq!(A::effective(None, None), A::No);
        assert_eq!(A::effective(None, Some(F::LzoStub)), A::No);
        assert_eq!(A::effective(None, Some(F::Lzo)), A::Asym);
        assert_eq!(A::effective(None, Some(F::StubV2)), A::Asym);
        assert_eq!(A::effective(Some(A::Yes), None), A::Yes);
        assert!(!A::No.allows(F::Lz4V2));
        assert!(A::No.allows(F::StubV2));
        assert!(A::Asym.allows(F::Lzo));
        assert_eq!(A::set(None, A::No, Some(F::StubV2)), Ok(A::No));
        assert!(A::set(None, A::No, Some(F::Lz4)).is_err());
        assert!(A::set(Some(A::No), A::Yes, None).is_err());
        assert_eq!(A::set(Some(A::Yes), A::Asym, None), Ok(A::Asym));
        assert!(check_compress(Some(A::No), F::Lzo).is_err());
        assert!(check_compress(Some(A::No), F::LzoStub).is_ok());
        assert!(check_compress(None, F::Lzo).is_ok());
        assert_eq!(A::parse("asym"), Some(A::Asym));
        assert_eq!(A::parse("maybe"), None);
    }
}
