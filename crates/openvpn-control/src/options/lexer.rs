//! Splitting one line into words, and quoting a word so it splits back.
//!
//! The rules are listed in the module documentation of [`super`].

use super::SyntaxProblem;

/// Whitespace as C's `isspace` sees it in the "C" locale.
pub(super) fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0B' | '\x0C')
}

/// Where the word splitter is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between words.
    Between,
    /// Inside an unquoted word.
    Bare,
    /// Inside `"…"`.
    Double,
    /// Inside `'…'`.
    Single,
}

/// Splits one line (or one pushed option) into words, dropping a comment.
///
/// An empty result means the line is blank or a comment.
pub(super) fn split_words(line: &str) -> Result<Vec<String>, SyntaxProblem> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut state = State::Between;
    let mut chars = line.chars().peekable();

    while let Some(c) = chars.next() {
        if c == '\0' {
            return Err(SyntaxProblem::NulByte);
        }
        match state {
            State::Between => match c {
                c if is_space(c) => {}
                '#' | ';' => break,
                '"' => state = State::Double,
                '\'' => state = State::Single,
                '\\' => {
                    // OpenVPN checks for a comment before it looks at the
                    // escape, so `\#` between words still starts a comment.
                    if matches!(chars.peek(), Some('#' | ';')) {
                        break;
                    }
                    let escaped = unescape(chars.next())?;
                    // An escaped blank between words stores nothing (OpenVPN).
                    if !is_space(escaped) {
                        word.push(escaped);
                        state = State::Bare;
                    }
                }
                c => {
                    word.push(c);
                    state = State::Bare;
                }
            },
            State::Bare => match c {
                c if is_space(c) => {
                    words.push(std::mem::take(&mut word));
                    state = State::Between;
                }
                '\\' => word.push(unescape(chars.next())?),
                c => word.push(c),
            },
            State::Double => match c {
                '"' => {
                    words.push(std::mem::take(&mut word));
                    state = State::Between;
                }
                '\\' => word.push(unescape(chars.next())?),
                c => word.push(c),
            },
            State::Single => match c {
                '\'' => {
                    words.push(std::mem::take(&mut word));
                    state = State::Between;
                }
                c => word.push(c),
            },
        }
    }

    match state {
        State::Double => Err(SyntaxProblem::UnterminatedDoubleQuote),
        State::Single => Err(SyntaxProblem::UnterminatedSingleQuote),
        State::Bare => {
            words.push(word);
            Ok(words)
        }
        State::Between => Ok(words),
    }
}

/// The character after a backslash, if it is one OpenVPN lets you escape.
fn unescape(next: Option<char>) -> Result<char, SyntaxProblem> {
    match next {
        None => Err(SyntaxProblem::TrailingBackslash),
        Some('\0') => Err(SyntaxProblem::NulByte),
        Some(c) if c == '\\' || c == '"' || is_space(c) => Ok(c),
        Some(c) => Err(SyntaxProblem::BadEscape(c)),
    }
}

/// Quotes one argument so that the option parsers read it back unchanged.
///
/// Plain words are returned as they are (`10.8.0.1`, `AES-256-GCM`); anything
/// that is empty, contains whitespace, a quote or a backslash, or starts with
/// a comment character is put in double quotes, with `\` and `"` escaped:
/// `my gui 1.0` → `"my gui 1.0"`, `C:\x` → `"C:\\x"`.
///
/// A quoted argument may still contain CR or LF, which a config file cannot
/// hold on one line, and a NUL, which no source can hold.
pub fn quote_arg(arg: &str) -> String {
    let plain = !arg.is_empty()
        && !arg.starts_with(['#', ';'])
        && !arg
            .chars()
            .any(|c| is_space(c) || matches!(c, '"' | '\'' | '\\'));
    if plain {
        return arg.to_owned();
    }
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('"');
    for c in arg.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        split_words(line).expect("line should split")
    }

    #[test]
    fn splits_on_whitespace() {
        assert_eq!(
            words("remote  vpn.example.com\t1194 udp \x0B\x0C"),
            ["remote", "vpn.example.com", "1194", "udp"]
        );
        assert!(words("   ").is_empty());
        assert!(words("").is_empty());
    }

    #[test]
    fn comments_start_only_at_a_word() {
        assert!(words("# comment").is_empty());
        assert!(words("  ; comment").is_empty());
        assert_eq!(words("verb 3 # trailing"), ["verb", "3"]);
        assert_eq!(words("verb 3 ;trailing"), ["verb", "3"]);
        assert_eq!(words("auth-user-pass a#b"), ["auth-user-pass", "a#b"]);
        assert_eq!(words("x \"#not a comment\""), ["x", "#not a comment"]);
        assert_eq!(words("x '; not either'"), ["x", "; not either"]);
        // As OpenVPN: an escaped comment character at a word start is a comment.
        assert_eq!(words("x \\#y"), ["x"]);
    }

    #[test]
    fn double_quotes_and_escapes() {
        assert_eq!(
            words("setenv IV_GUI_VER \"my gui 1.0\""),
            ["setenv", "IV_GUI_VER", "my gui 1.0"]
        );
        assert_eq!(words(r#"a "say \"hi\"" b"#), ["a", "say \"hi\"", "b"]);
        assert_eq!(words(r#"a "C:\\dir\\f""#), ["a", r"C:\dir\f"]);
        assert_eq!(words(r"a C:\\dir\\f"), ["a", r"C:\dir\f"]);
        assert_eq!(words(r"a with\ space"), ["a", "with space"]);
        assert_eq!(words(r#"a \"x"#), ["a", "\"x"]);
        assert_eq!(words(r#"a "x\ y""#), ["a", "x y"]);
        assert_eq!(words("a \"\" b"), ["a", "", "b"]);
        // A closing quote ends the word; a quote inside a bare word is literal.
        assert_eq!(words("\"ab\"cd"), ["ab", "cd"]);
        assert_eq!(words("ab\"cd e"), ["ab\"cd", "e"]);
        assert_eq!(words("it's"), ["it's"]);
        // An escaped blank between words stores nothing (OpenVPN).
        assert_eq!(words(r"a \ b"), ["a", "b"]);
    }

    #[test]
    fn single_quotes_are_literal() {
        assert_eq!(
            words(r"x 'single quoted \ literal'"),
            ["x", r"single quoted \ literal"]
        );
        assert_eq!(words(r"x 'C:\dir' y"), ["x", r"C:\dir", "y"]);
        assert_eq!(words(r#"x 'a "b" c'"#), ["x", "a \"b\" c"]);
    }

    #[test]
    fn errors() {
        assert_eq!(
            split_words("remote \"x"),
            Err(SyntaxProblem::UnterminatedDoubleQuote)
        );
        assert_eq!(
            split_words("remote 'x"),
            Err(SyntaxProblem::UnterminatedSingleQuote)
        );
        assert_eq!(
            split_words(r"ca C:\dir\ca.crt"),
            Err(SyntaxProblem::BadEscape('d'))
        );
        assert_eq!(split_words(r#"x "\n""#), Err(SyntaxProblem::BadEscape('n')));
        assert_eq!(split_words(r"x \'"), Err(SyntaxProblem::BadEscape('\'')));
        assert_eq!(split_words("x y\\"), Err(SyntaxProblem::TrailingBackslash));
        assert_eq!(split_words("x \\"), Err(SyntaxProblem::TrailingBackslash));
        assert_eq!(split_words("x\0y"), Err(SyntaxProblem::NulByte));
        assert_eq!(split_words("x \\\0"), Err(SyntaxProblem::NulByte));
    }

    #[test]
    fn quote_arg_quotes_only_when_needed() {
        assert_eq!(quote_arg("10.8.0.1"), "10.8.0.1");
        assert_eq!(quote_arg("a#b"), "a#b");
        assert_eq!(quote_arg(""), "\"\"");
        assert_eq!(quote_arg("my gui 1.0"), "\"my gui 1.0\"");
        assert_eq!(quote_arg("#x"), "\"#x\"");
        assert_eq!(quote_arg(";x"), "\";x\"");
        assert_eq!(quote_arg(r"C:\x"), r#""C:\\x""#);
        assert_eq!(quote_arg("say \"hi\""), r#""say \"hi\"""#);
        assert_eq!(quote_arg("it's"), "\"it's\"");
        for arg in ["", "a b", "#x", r"C:\x", "\"", "'", "a'b\"c\\d e\tf"] {
            assert_eq!(words(&quote_arg(arg)), [arg], "round trip of {arg:?}");
        }
    }
}
