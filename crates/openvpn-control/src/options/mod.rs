//! The OpenVPN option grammar: config files, command lines and pushed options.
//!
//! This module only turns text into words; it does not know what any option
//! means. Each source yields a list of [`OptionLine`]s — a name, its arguments
//! and where it came from — for the modules that interpret them.
//!
//! ```text
//!  client.ovpn text ──parse_config──────┐
//!  argv            ──parse_cli_args─────┼──> Vec<OptionLine> ──> option interpretation
//!  "PUSH_REPLY,…"  ──parse_push_reply───┘        │
//!                                                 └─ render / quote_arg ──> text again
//!  ["route …", …]  ──build_push_reply──> ["PUSH_REPLY,…,push-continuation 2", …]
//! ```
//!
//! The word rules follow OpenVPN 2.6 (`parse_line` in its `options.c`):
//!
//! * words are separated by ASCII whitespace (space, tab, CR, LF, VT, FF);
//! * a word starting with `#` or `;` starts a comment that runs to the end of
//!   the line (a `#` inside a word or inside quotes is an ordinary character);
//! * `"…"` groups a word; inside it and in unquoted words a backslash escapes
//!   exactly `\\`, `\"` and a whitespace character — any other escape is an
//!   error, as in OpenVPN, so that Windows paths like `C:\dir` are caught;
//! * `'…'` groups a word literally (no escapes at all);
//! * a quote in the middle of an unquoted word is an ordinary character, and a
//!   closing quote always ends the word (`"ab"cd` is two words);
//! * `""` is an empty argument.
//!
//! Two corner cases are kept as OpenVPN has them: an escaped `#`/`;` at the
//! start of a word still starts a comment, and an escaped whitespace character
//! *between* words is dropped. [`quote_arg`] never produces either form.

pub mod catalog;
mod check;
mod cli;
mod config;
mod lexer;
mod push;

use std::fmt;

pub use check::check_config;
pub use cli::parse_cli_args;
pub use config::{parse_config, parse_connection_block};
pub use lexer::quote_arg;
pub use push::{Continuation, PushReply, build_push_reply, parse_push_reply};

/// The first argument of an option whose value was given as an inline block
/// (`<ca>` … `</ca>`); the second argument then holds the block's text.
pub const INLINE_MARKER: &str = "[[INLINE]]";

/// Where an [`OptionLine`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OptionSource {
    /// An ordinary line of a config file (or of a `<connection>` block).
    File,
    /// The command line (`--name arg …`).
    CommandLine,
    /// A `PUSH_REPLY` from the server.
    Push,
    /// An inline block (`<tag>` … `</tag>`) of a config file.
    Inline,
}

/// One option: a name and its arguments, with its origin for error messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OptionLine {
    /// The option name without a leading `--` (e.g. `remote`).
    pub name: String,
    /// The arguments after the name, unquoted. For an inline block these are
    /// [`INLINE_MARKER`] and the block's text (lines joined by `\n`, each
    /// ending with `\n`).
    pub args: Vec<String>,
    /// The 1-based line in the config file (for an inline block: the line of
    /// its opening tag); 0 for command-line and pushed options.
    pub line: usize,
    /// Where the option came from.
    pub source: OptionSource,
}

impl OptionLine {
    /// The `i`-th argument (0-based, the name is not an argument), if present.
    pub fn arg(&self, i: usize) -> Option<&str> {
        self.args.get(i).map(String::as_str)
    }

    /// Checks that the option has between `min` and `max` arguments
    /// (inclusive; use `usize::MAX` for "no upper limit").
    pub fn expect_args(&self, min: usize, max: usize) -> Result<(), OptionError> {
        let found = self.args.len();
        if (min..=max).contains(&found) {
            return Ok(());
        }
        Err(OptionError::WrongArgCount {
            location: Location::of(self),
            name: self.name.clone(),
            min,
            max,
            found,
        })
    }

    /// Whether the value was given as an inline block (`<ca>` … `</ca>`).
    pub fn is_inline(&self) -> bool {
        self.source == OptionSource::Inline && self.arg(0) == Some(INLINE_MARKER)
    }

    /// The text of an inline block, if this option is one.
    pub fn inline_content(&self) -> Option<&str> {
        if self.is_inline() { self.arg(1) } else { None }
    }

    /// The options inside an inline `<connection>` block, with line numbers
    /// counted in the enclosing file.
    pub fn connection_options(&self) -> Result<Vec<OptionLine>, OptionError> {
        match self.inline_content() {
            Some(raw) if self.name == "connection" => config::parse_lines(raw, self.line),
            _ => Err(OptionError::NotConnectionBlock {
                location: Location::of(self),
                name: self.name.clone(),
            }),
        }
    }

    /// Formats the option so that parsing the result gives it back.
    ///
    /// An ordinary option becomes one line, `name arg1 "arg 2"` (arguments
    /// quoted with [`quote_arg`]); an inline block becomes the multi-line
    /// `<name>\n…</name>` form. No trailing newline is added after the last
    /// line. Arguments containing CR or LF cannot be written on one line and
    /// do not survive a config-file round trip; nor do names that a config file
    /// reads as something else whatever the quoting, as OpenVPN does: a name
    /// starting with `--` (3+ characters: the file strips the dashes, a
    /// `PUSH_REPLY` does not) and a name of the form `<tag>` or `</tag>`.
    pub fn render(&self) -> String {
        if let Some(content) = self.inline_content() {
            let newline = if content.is_empty() || content.ends_with('\n') {
                ""
            } else {
                "\n"
            };
            return format!("<{0}>\n{content}{newline}</{0}>", self.name);
        }
        let mut out = quote_arg(&self.name);
        for arg in &self.args {
            out.push(' ');
            out.push_str(&quote_arg(arg));
        }
        out
    }
}

impl fmt::Display for OptionLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// Describes where an option came from, for error messages in other modules:
/// `config line 12`, `command line` or `pushed option`.
pub fn describe_location(line: &OptionLine) -> String {
    Location::of(line).to_string()
}

/// Where an error was found. Displays as `config line 12`, `command line`,
/// `pushed option 3` (or `pushed option` when the index is unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    /// A 1-based line of a config file (0 when unknown).
    ConfigLine(usize),
    /// The command line.
    CommandLine,
    /// A pushed option: its 1-based index in the `PUSH_REPLY` (0 when unknown).
    Push(usize),
}

impl Location {
    /// The location of an option.
    pub fn of(line: &OptionLine) -> Self {
        match line.source {
            OptionSource::File | OptionSource::Inline => Self::ConfigLine(line.line),
            OptionSource::CommandLine => Self::CommandLine,
            OptionSource::Push => Self::Push(line.line),
        }
    }

    /// The config-file line, if this is one.
    pub fn line(self) -> Option<usize> {
        match self {
            Self::ConfigLine(n) if n > 0 => Some(n),
            _ => None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ConfigLine(0) => f.write_str("config"),
            Self::ConfigLine(n) => write!(f, "config line {n}"),
            Self::CommandLine => f.write_str("command line"),
            Self::Push(0) => f.write_str("pushed option"),
            Self::Push(n) => write!(f, "pushed option {n}"),
        }
    }
}

/// Why a line could not be split into words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SyntaxProblem {
    /// A `"` was opened but not closed on the same line.
    UnterminatedDoubleQuote,
    /// A `'` was opened but not closed on the same line.
    UnterminatedSingleQuote,
    /// A backslash before a character other than `\`, `"` or whitespace.
    BadEscape(char),
    /// The line ends with a backslash.
    TrailingBackslash,
    /// The text contains a NUL byte.
    NulByte,
}

impl SyntaxProblem {
    /// How to fix the problem, for the error message.
    pub fn fix(self) -> &'static str {
        match self {
            Self::UnterminatedDoubleQuote => "add the closing \" (a literal quote is written \\\")",
            Self::UnterminatedSingleQuote => {
                "add the closing ' (or use double quotes, in which \\\" is a literal quote)"
            }
            Self::BadEscape(_) => {
                "only \\\\, \\\" and \\<space> are escapes; write a literal backslash as \\\\ \
                 (e.g. \"C:\\\\dir\\\\file\") or quote the word with single quotes"
            }
            Self::TrailingBackslash => "remove it or write a literal backslash as \\\\",
            Self::NulByte => "remove it (is the file binary or UTF-16?)",
        }
    }
}

impl fmt::Display for SyntaxProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::UnterminatedDoubleQuote => f.write_str("unterminated quote"),
            Self::UnterminatedSingleQuote => f.write_str("unterminated single quote"),
            Self::BadEscape(c) => write!(f, "unknown escape '\\{}'", c.escape_debug()),
            Self::TrailingBackslash => f.write_str("backslash at the end of the line"),
            Self::NulByte => f.write_str("NUL byte"),
        }
    }
}

/// Everything that can go wrong while reading or writing options. Each message
/// names the place (`config line 12`, `command line`, `pushed option 3`) and
/// the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionError {
    /// A line could not be split into words.
    #[error("{location}: {problem} in '{text}'; {}", .problem.fix())]
    Syntax {
        /// Where the line is.
        location: Location,
        /// The offending line (shortened and escaped for display).
        text: String,
        /// What is wrong with it.
        problem: SyntaxProblem,
    },
    /// An inline block `<tag>` has no closing `</tag>`.
    #[error("config line {line}: <{tag}> is never closed; add a line '</{tag}>' after its content")]
    UnterminatedBlock {
        /// The block's tag name (e.g. `ca`).
        tag: String,
        /// The line of the opening tag.
        line: usize,
    },
    /// A closing tag inside a block does not match the block's opening tag.
    #[error(
        "config line {line}: '{found}' does not close <{tag}> opened on line {open_line}; \
         close that block with '</{tag}>' first"
    )]
    MismatchedClosingTag {
        /// The open block's tag name.
        tag: String,
        /// The line of the opening tag.
        open_line: usize,
        /// The closing tag found instead (e.g. `</cert>`).
        found: String,
        /// The line of the wrong closing tag.
        line: usize,
    },
    /// A closing tag outside any block.
    #[error(
        "config line {line}: '{found}' closes a block that was never opened; remove it or add the opening tag"
    )]
    StrayClosingTag {
        /// The closing tag (e.g. `</ca>`).
        found: String,
        /// Its line.
        line: usize,
    },
    /// An opening or closing tag shares its line with other text.
    #[error(
        "config line {line}: '{tag}' must be alone on its line, found '{text}'; put the block's content on the following lines"
    )]
    TagNotAlone {
        /// The tag (e.g. `<ca>`).
        tag: String,
        /// The whole line (shortened for display).
        text: String,
        /// Its line.
        line: usize,
    },
    /// [`OptionLine::connection_options`] was called on something else.
    #[error("{location}: '{name}' is not an inline <connection> block")]
    NotConnectionBlock {
        /// Where the option is.
        location: Location,
        /// Its name.
        name: String,
    },
    /// An option has the wrong number of arguments.
    #[error("{location}: '{name}' takes {}, found {found}", arity(*.min, *.max))]
    WrongArgCount {
        /// Where the option is.
        location: Location,
        /// The option name.
        name: String,
        /// The minimum number of arguments.
        min: usize,
        /// The maximum number of arguments (`usize::MAX`: unlimited).
        max: usize,
        /// The number of arguments given.
        found: usize,
    },
    /// A command-line word that should be an option does not start with `--`.
    #[error(
        "command line: '{arg}' is not an option; options start with '--' (did you mean '--{arg}'?)"
    )]
    MissingDashes {
        /// The word.
        arg: String,
    },
    /// A bare `--` on the command line.
    #[error("command line: '--' has no option name; write '--name' or remove it")]
    EmptyOptionName,
    /// The control message is not a `PUSH_REPLY`.
    #[error("control message '{start}' is not a PUSH_REPLY; it must start with 'PUSH_REPLY'")]
    NotPushReply {
        /// The start of the message (shortened and escaped for display).
        start: String,
    },
    /// A `push-continuation` option other than `push-continuation 1|2`.
    #[error(
        "{location}: '{text}' is not a valid continuation; use 'push-continuation 2' \
         (more parts follow) or 'push-continuation 1' (last part)"
    )]
    BadContinuation {
        /// Where it is.
        location: Location,
        /// The option as received (shortened and escaped for display).
        text: String,
    },
    /// An option given to [`build_push_reply`] cannot be sent.
    #[error("push option '{option}' {reason}")]
    InvalidPushOption {
        /// The option (shortened and escaped for display).
        option: String,
        /// What is wrong and how to fix it.
        reason: &'static str,
    },
    /// An option given to [`build_push_reply`] does not fit into one message.
    #[error(
        "push option '{option}' ({len} bytes) does not fit into a PUSH_REPLY of at most \
         {max_len} bytes; shorten it or allow longer messages"
    )]
    PushOptionTooLong {
        /// The option (shortened for display).
        option: String,
        /// Its length in bytes.
        len: usize,
        /// The message size limit.
        max_len: usize,
    },
}

impl OptionError {
    /// The 1-based config-file line the error is about, when there is one.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Syntax { location, .. }
            | Self::NotConnectionBlock { location, .. }
            | Self::WrongArgCount { location, .. } => location.line(),
            Self::UnterminatedBlock { line, .. }
            | Self::MismatchedClosingTag { line, .. }
            | Self::StrayClosingTag { line, .. }
            | Self::TagNotAlone { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// "exactly 1 argument", "1 to 4 arguments", "at least 2 arguments", "no arguments".
fn arity(min: usize, max: usize) -> String {
    let noun = |n: usize| if n == 1 { "argument" } else { "arguments" };
    match (min, max) {
        (0, 0) => "no arguments".to_owned(),
        (min, usize::MAX) => format!("at least {min} {}", noun(min)),
        (min, max) if min == max => format!("exactly {min} {}", noun(min)),
        (0, max) => format!("at most {max} {}", noun(max)),
        (min, max) => format!("{min} to {max} arguments"),
    }
}

/// A piece of user text made safe and short for an error message.
fn excerpt(text: &str) -> String {
    const MAX_CHARS: usize = 80;
    let mut out = String::new();
    for c in text.chars().take(MAX_CHARS) {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    if text.chars().nth(MAX_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn line(name: &str, args: &[&str], source: OptionSource, n: usize) -> OptionLine {
        OptionLine {
            name: name.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            line: n,
            source,
        }
    }

    #[test]
    fn locations_describe_the_source() {
        assert_eq!(
            describe_location(&line("dev", &["tun"], OptionSource::File, 12)),
            "config line 12"
        );
        assert_eq!(
            describe_location(&line("ca", &[INLINE_MARKER, ""], OptionSource::Inline, 3)),
            "config line 3"
        );
        assert_eq!(
            describe_location(&line("verb", &["3"], OptionSource::CommandLine, 0)),
            "command line"
        );
        assert_eq!(
            describe_location(&line("ping", &["2"], OptionSource::Push, 0)),
            "pushed option"
        );
    }

    #[test]
    fn expect_args_names_option_line_and_count() {
        let opt = line("route", &["a", "b", "c", "d", "e"], OptionSource::File, 12);
        assert_eq!(opt.expect_args(1, 5), Ok(()));
        let err = opt.expect_args(1, 4).expect_err("too many args");
        assert_eq!(err.line(), Some(12));
        assert_eq!(
            err.to_string(),
            "config line 12: 'route' takes 1 to 4 arguments, found 5"
        );
        let err = opt.expect_args(0, 0).expect_err("flag");
        assert!(
            err.to_string()
                .ends_with("'route' takes no arguments, found 5")
        );
        let err = opt.expect_args(1, 1).expect_err("exactly one");
        assert!(
            err.to_string()
                .ends_with("takes exactly 1 argument, found 5")
        );
        let err = opt.expect_args(6, usize::MAX).expect_err("at least");
        assert!(
            err.to_string()
                .ends_with("takes at least 6 arguments, found 5")
        );
        let pushed = line("ping", &[], OptionSource::Push, 0);
        let err = pushed.expect_args(1, 1).expect_err("missing");
        assert_eq!(err.line(), None);
        assert_eq!(
            err.to_string(),
            "pushed option: 'ping' takes exactly 1 argument, found 0"
        );
    }

    #[test]
    fn render_quotes_args_and_writes_blocks() {
        let opt = line(
            "setenv",
            &["IV_GUI_VER", "my gui 1.0"],
            OptionSource::File,
            1,
        );
        assert_eq!(opt.render(), "setenv IV_GUI_VER \"my gui 1.0\"");
        assert_eq!(opt.arg(1), Some("my gui 1.0"));
        assert_eq!(opt.arg(2), None);
        assert!(!opt.is_inline());
        let ca = line("ca", &[INLINE_MARKER, "A\nB\n"], OptionSource::Inline, 4);
        assert!(ca.is_inline());
        assert_eq!(ca.render(), "<ca>\nA\nB\n</ca>");
        assert_eq!(ca.to_string(), ca.render());
    }

    #[test]
    fn excerpt_escapes_and_shortens() {
        assert_eq!(excerpt("a\0b\\c"), "a\\0b\\c");
        let long = "x".repeat(100);
        assert_eq!(excerpt(&long).chars().count(), 81);
    }
}
