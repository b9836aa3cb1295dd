//! Shared helpers for turning option lines into typed configuration, used by the server's and
//! the client's config loaders: one error type and the argument accessors, so both report
//! problems the same way (`config line 12: 'port': 'http' is not a valid number`).

use std::path::{Path, PathBuf};

use crate::options::{OptionError, OptionLine, describe_location};

/// Errors while loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// An option is wrong; the text names where and how to fix it.
    #[error("{0}")]
    Invalid(String),
    /// The option grammar failed.
    #[error(transparent)]
    Syntax(#[from] OptionError),
    /// A referenced file could not be read.
    #[error("{what}: cannot read '{path}': {source}")]
    Io {
        /// Which option.
        what: String,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// An error about option `o`, prefixed with its location and name.
pub fn invalid(o: &OptionLine, msg: impl std::fmt::Display) -> LoadError {
    LoadError::Invalid(format!("{}: '{}': {msg}", describe_location(o), o.name))
}

/// Argument `i` of `o`, or an error saying how many are needed.
pub fn arg(o: &OptionLine, i: usize) -> Result<&str, LoadError> {
    o.arg(i)
        .ok_or_else(|| invalid(o, format!("needs at least {} argument(s)", i + 1)))
}

/// Argument `i` of `o` parsed as a number.
pub fn number<T: std::str::FromStr>(o: &OptionLine, i: usize) -> Result<T, LoadError> {
    let a = arg(o, i)?;
    a.parse()
        .map_err(|_| invalid(o, format!("'{a}' is not a valid number")))
}

/// The text of a file-or-inline option (`ca file.crt` or `<ca>…</ca>`); relative paths are
/// resolved against `base`.
pub fn file_or_inline(o: &OptionLine, base: &Path) -> Result<String, LoadError> {
    if let Some(text) = o.inline_content() {
        return Ok(text.to_owned());
    }
    let path = base.join(arg(o, 0)?);
    std::fs::read_to_string(&path).map_err(|source| LoadError::Io {
        what: format!("{} '{}'", describe_location(o), o.name),
        path,
        source,
    })
}

/// The option lines of a run and the directory relative paths start from (the working
/// directory, or `.` without a file): `--cd DIR` lines given before `--config FILE` on the
/// command line first (OpenVPN changes directory while it reads its arguments, so FILE and
/// the paths in it are read from DIR), then the file's lines, then the other command-line
/// options.
pub fn config_lines(
    file: Option<&Path>,
    mut cli: Vec<OptionLine>,
) -> Result<(Vec<OptionLine>, PathBuf), LoadError> {
    let Some(path) = file else {
        return Ok((cli, PathBuf::from(".")));
    };
    let base = std::env::current_dir().unwrap_or_default();
    let at = cli.iter().position(|l| l.name == "config").unwrap_or(0);
    let mut lines: Vec<OptionLine> = Vec::new();
    let mut i = 0;
    cli.retain(|l| {
        let early = i < at && l.name == "cd";
        i += 1;
        if early {
            lines.push(l.clone());
        }
        !early
    });
    let dir = lines
        .iter()
        .filter_map(|l| l.arg(0))
        .fold(base.clone(), |d, a| d.join(a));
    lines.extend(read_config_file(&dir.join(path))?);
    lines.extend(cli);
    Ok((lines, base))
}

/// `data-ciphers A:B:…` (`ncp-ciphers`): every name must be a cipher this implementation has.
pub fn cipher_list(o: &OptionLine) -> Result<Vec<String>, LoadError> {
    let list: Vec<String> = arg(o, 0)?
        .split(':')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    for cipher in &list {
        if openvpn_crypto::CipherKind::from_name(cipher).is_none() {
            return Err(invalid(
                o,
                format!(
                    "cipher '{cipher}' is not supported (use AES-256-GCM, AES-128-GCM, CHACHA20-POLY1305, AES-256-CBC …)"
                ),
            ));
        }
    }
    Ok(list)
}

/// `data-ciphers-fallback NAME` / `cipher NAME`: the cipher for peers that do not negotiate
/// (NCP). `cipher` naming one this implementation lacks (typically OpenVPN's old default
/// `BF-CBC`, which OpenSSL 3 lacks too) is accepted as OpenVPN 2.6 accepts it: the answer is
/// `Ok(Err(note))` — only a peer that cannot negotiate would need it.
pub fn fallback_cipher(o: &OptionLine) -> Result<Result<String, String>, LoadError> {
    let name = arg(o, 0)?;
    if openvpn_crypto::CipherKind::from_name(name).is_some() {
        return Ok(Ok(name.to_owned()));
    }
    if o.name == "cipher" {
        return Ok(Err(format!(
            "{}: 'cipher {name}' is not available; it would only be used with a peer that does not negotiate its data cipher (NCP), and such a peer cannot connect",
            describe_location(o)
        )));
    }
    Err(invalid(o, format!("cipher '{name}' is not supported")))
}

/// `dev-node PATH`: the tun clone device. On Linux that is `/dev/net/tun`, which is accepted
/// (it is what is opened anyway); another path is refused.
pub fn dev_node(o: &OptionLine) -> Result<(), LoadError> {
    match arg(o, 0)? {
        "/dev/net/tun" => Ok(()),
        other => Err(invalid(
            o,
            format!("'{other}': only the Linux clone device /dev/net/tun is supported"),
        )),
    }
}

/// `auth DIGEST`.
pub fn digest(o: &OptionLine) -> Result<String, LoadError> {
    let d = arg(o, 0)?;
    if openvpn_crypto::DigestKind::from_name(d).is_none() {
        return Err(invalid(
            o,
            format!("digest '{d}' is not supported (SHA1, SHA256, SHA512)"),
        ));
    }
    Ok(d.to_owned())
}

/// Reads and parses a config file.
pub fn read_config_file(path: &Path) -> Result<Vec<OptionLine>, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        what: "config".into(),
        path: path.to_owned(),
        source,
    })?;
    Ok(crate::options::parse_config(&text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_node_is_the_linux_clone_device() {
        let lines =
            crate::options::parse_config("dev-node /dev/net/tun\ndev-node /dev/tun1\n").unwrap();
        assert!(dev_node(&lines[0]).is_ok());
        let e = dev_node(&lines[1]).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("/dev/net/tun"), "{e}");
    }

    #[test]
    fn errors_name_line_and_option() {
        let lines = crate::options::parse_config("port http\nca /nonexistent/ca.crt\n").unwrap();
        let e = number::<u16>(&lines[0], 0).unwrap_err().to_string();
        assert_eq!(e, "config line 1: 'port': 'http' is not a valid number");
        let e = arg(&lines[0], 1).unwrap_err().to_string();
        assert!(e.contains("needs at least 2 argument(s)"), "{e}");
        let e = file_or_inline(&lines[1], Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("config line 2 'ca'") && e.contains("/nonexistent/ca.crt"),
            "{e}"
        );
    }

    /// `--cd DIR --config FILE`: FILE is read from DIR and its relative paths start there
    /// (the `cd` line comes first); a `--cd` after `--config` stays in its place.
    #[test]
    fn cd_before_config_on_the_command_line_comes_first() {
        let dir = std::env::temp_dir().join(format!("ovrs-config-lines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.conf"), "verb 4\n").unwrap();
        let cli = crate::options::parse_cli_args(
            [
                "--cd",
                dir.to_str().unwrap(),
                "--config",
                "a.conf",
                "--cd",
                "/",
                "--verb",
                "5",
            ]
            .map(String::from),
        )
        .unwrap();
        let (lines, base) = config_lines(Some(Path::new("a.conf")), cli).unwrap();
        let names: Vec<(&str, Option<&str>)> =
            lines.iter().map(|l| (l.name.as_str(), l.arg(0))).collect();
        assert_eq!(
            names,
            [
                ("cd", dir.to_str()),
                ("verb", Some("4")),
                ("config", Some("a.conf")),
                ("cd", Some("/")),
                ("verb", Some("5")),
            ]
        );
        assert_eq!(base, std::env::current_dir().unwrap());
        // Without --cd the file is read from the working directory.
        let cli =
            crate::options::parse_cli_args(["--config".to_owned(), "a.conf".to_owned()]).unwrap();
        assert!(config_lines(Some(Path::new("a.conf")), cli).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
