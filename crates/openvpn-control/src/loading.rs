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
}
