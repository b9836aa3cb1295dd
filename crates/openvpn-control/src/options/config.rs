//! Config files: one option per line, plus inline blocks (`<ca>` … `</ca>`).

use super::lexer::split_words;
use super::{INLINE_MARKER, Location, OptionError, OptionLine, OptionSource, excerpt};

/// The block whose content holds further options rather than a file's text.
const CONNECTION: &str = "connection";

/// Parses a whole config file (`server.conf`, `client.ovpn`).
///
/// * One option per line; blank lines and comments (`#`, `;`) are skipped.
///   A leading `--` on the option name is removed (`--dev tun` = `dev tun`).
/// * Words are split as described in the [module documentation](super).
/// * A line holding only `<tag>` opens an inline block which runs to the line
///   `</tag>`; it becomes the option `tag` with the arguments
///   [`INLINE_MARKER`] and the block's lines, each ending with `\n`, with
///   source [`OptionSource::Inline`] and the line of the opening tag. Any tag
///   name is accepted. A `<connection>` block's options are read with
///   [`OptionLine::connection_options`] or [`parse_connection_block`].
/// * A UTF-8 byte-order mark at the start is skipped; CRLF line ends are
///   accepted; lines may be of any length; a NUL byte is an error.
pub fn parse_config(text: &str) -> Result<Vec<OptionLine>, OptionError> {
    parse_lines(text.strip_prefix('\u{FEFF}').unwrap_or(text), 0)
}

/// Parses the text of an inline `<connection>` block (the second argument of
/// the `connection` option) like a config file. Line numbers count from the
/// first line of the block; [`OptionLine::connection_options`] gives numbers
/// in the enclosing file instead.
pub fn parse_connection_block(raw: &str) -> Result<Vec<OptionLine>, OptionError> {
    parse_lines(raw, 0)
}

/// Parses config text whose first line is line `first_line + 1` of its file.
pub(super) fn parse_lines(text: &str, first_line: usize) -> Result<Vec<OptionLine>, OptionError> {
    let mut lines = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (first_line + i + 1, l.strip_suffix('\r').unwrap_or(l)));
    let mut options = Vec::new();

    while let Some((number, line)) = lines.next() {
        let mut words = split_words(line).map_err(|problem| OptionError::Syntax {
            location: Location::ConfigLine(number),
            text: excerpt(line.trim()),
            problem,
        })?;
        if words.is_empty() {
            continue;
        }
        let mut name = words.remove(0);
        if name.len() >= 3 && name.starts_with("--") {
            name.drain(..2);
        }

        if let Some(tag) = closing_tag(&name) {
            return Err(OptionError::StrayClosingTag {
                found: format!("</{tag}>"),
                line: number,
            });
        }
        let Some(tag) = opening_tag(&name) else {
            options.push(OptionLine {
                name,
                args: words,
                line: number,
                source: OptionSource::File,
            });
            continue;
        };
        if !words.is_empty() {
            return Err(OptionError::TagNotAlone {
                tag: name.clone(),
                text: excerpt(line.trim()),
                line: number,
            });
        }
        let content = read_block(tag, number, &mut lines)?;
        options.push(OptionLine {
            name: tag.to_owned(),
            args: vec![INLINE_MARKER.to_owned(), content],
            line: number,
            source: OptionSource::Inline,
        });
    }
    Ok(options)
}

/// The tag of `<tag>`, if the word is an opening tag.
fn opening_tag(word: &str) -> Option<&str> {
    let tag = word.strip_prefix('<')?.strip_suffix('>')?;
    (!tag.is_empty() && !tag.starts_with('/')).then_some(tag)
}

/// The tag of `</tag>`, if the word is a closing tag.
fn closing_tag(word: &str) -> Option<&str> {
    let tag = word.strip_prefix("</")?.strip_suffix('>')?;
    (!tag.is_empty()).then_some(tag)
}

/// Reads the lines of the block `<tag>` opened on line `open_line`, up to and
/// including its closing tag, and returns its content.
fn read_block<'a>(
    tag: &str,
    open_line: usize,
    lines: &mut impl Iterator<Item = (usize, &'a str)>,
) -> Result<String, OptionError> {
    let close = format!("</{tag}>");
    let mut content = String::new();
    for (number, line) in lines {
        if line.contains('\0') {
            return Err(OptionError::Syntax {
                location: Location::ConfigLine(number),
                text: excerpt(line.trim()),
                problem: super::SyntaxProblem::NulByte,
            });
        }
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix(close.as_str()) {
            let rest = rest.trim_start();
            if rest.is_empty() || rest.starts_with(['#', ';']) {
                return Ok(content);
            }
            return Err(OptionError::TagNotAlone {
                tag: close,
                text: excerpt(trimmed),
                line: number,
            });
        }
        // Blocks do not nest, except that a <connection> block may hold
        // inline blocks of its own; those are checked when it is parsed.
        let other_close = if tag == CONNECTION {
            None
        } else {
            closing_tag(trimmed)
        };
        if let Some(found) = other_close {
            return Err(OptionError::MismatchedClosingTag {
                tag: tag.to_owned(),
                open_line,
                found: format!("</{found}>"),
                line: number,
            });
        }
        content.push_str(line);
        content.push('\n');
    }
    Err(OptionError::UnterminatedBlock {
        tag: tag.to_owned(),
        line: open_line,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::SyntaxProblem;
    use super::*;
    use proptest::prelude::*;

    /// `(name, args)` of every option, for compact comparisons.
    fn pairs(options: &[OptionLine]) -> Vec<(String, Vec<String>)> {
        options
            .iter()
            .map(|o| (o.name.clone(), o.args.clone()))
            .collect()
    }

    fn opt(name: &str, args: &[&str]) -> (String, Vec<String>) {
        (
            name.to_owned(),
            args.iter().map(|a| (*a).to_owned()).collect(),
        )
    }

    const CA: &str =
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUXk0=\n-----END CERTIFICATE-----\n";

    const SERVER_CONF: &str = r#"# OpenVPN 2.6 server
;local 0.0.0.0
port 1194
proto udp
dev tun   # routed tunnel

ca /etc/openvpn/server/ca.crt
cert /etc/openvpn/server/server.crt
key /etc/openvpn/server/server.key  ; keep this secret
dh none
tls-crypt /etc/openvpn/server/tc.key
topology subnet
server 10.8.0.0 255.255.255.0
ifconfig-pool-persist /var/lib/openvpn/ipp.txt
push "route 192.168.77.0 255.255.255.0"
push "dhcp-option DNS 10.8.0.1"
push "redirect-gateway def1 bypass-dhcp"
    ; indented comment
keepalive 2 10
data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305
user nobody
group nogroup
persist-key
persist-tun
status /var/log/openvpn/status.log
verb 3
explicit-exit-notify 1
"#;

    #[test]
    fn server_conf() {
        let options = parse_config(SERVER_CONF).expect("server.conf parses");
        assert_eq!(options.len(), 23);
        assert_eq!(
            pairs(&options[..4]),
            [
                opt("port", &["1194"]),
                opt("proto", &["udp"]),
                opt("dev", &["tun"]),
                opt("ca", &["/etc/openvpn/server/ca.crt"]),
            ]
        );
        assert_eq!(options[0].line, 3);
        assert_eq!(options[2].line, 5);
        assert_eq!(options[5].name, "key");
        assert_eq!(options[5].args, ["/etc/openvpn/server/server.key"]);
        let push: Vec<_> = options.iter().filter(|o| o.name == "push").collect();
        assert_eq!(push.len(), 3);
        assert_eq!(push[0].args, ["route 192.168.77.0 255.255.255.0"]);
        assert_eq!(push[0].line, 15);
        assert_eq!(push[2].args, ["redirect-gateway def1 bypass-dhcp"]);
        let keepalive = options
            .iter()
            .find(|o| o.name == "keepalive")
            .expect("keepalive");
        assert_eq!(keepalive.args, ["2", "10"]);
        assert_eq!(keepalive.line, 19);
        assert!(options.iter().all(|o| o.source == OptionSource::File));
        assert_eq!(options.last().map(|o| o.line), Some(27));
    }

    fn client_ovpn() -> String {
        format!(
            "# client profile\n\
             client\n\
             --dev tun\n\
             proto udp\n\
             remote vpn.example.com 1194 # primary\n\
             remote \"backup host.example.com\" 1194\n\
             ; resolv-retry infinite\n\
             nobind\n\
             auth-user-pass \"/path with space/x\"\n\
             setenv IV_GUI_VER \"my gui 1.0\"\n\
             setenv FORWARD_COMPATIBLE 1\n\
             verify-x509-name 'CN=server, O=Example \\ Inc' subject\n\
             remote-cert-tls server\n\
             <ca>\n{CA}</ca>\n\
             <cert>\n\
             # a comment inside a block is content\n\
             -----BEGIN CERTIFICATE-----\n\
             MIIBcert\n\
             -----END CERTIFICATE-----\n\
             </cert>\n\
             \x20 <key>\n\
             -----BEGIN PRIVATE KEY-----\n\
             MIIkey\n\
             -----END PRIVATE KEY-----\n\
             \x20 </key>   # end of key\n\
             <tls-crypt>\n\
             #\n\
             # 2048 bit OpenVPN static key\n\
             #\n\
             -----BEGIN OpenVPN Static key V1-----\n\
             0123456789abcdef\n\
             -----END OpenVPN Static key V1-----\n\
             </tls-crypt>\n\
             verb 3\n"
        )
    }

    #[test]
    fn client_ovpn_with_inline_blocks() {
        let text = client_ovpn();
        let options = parse_config(&text).expect("client.ovpn parses");
        let names: Vec<_> = options.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "client",
                "dev",
                "proto",
                "remote",
                "remote",
                "nobind",
                "auth-user-pass",
                "setenv",
                "setenv",
                "verify-x509-name",
                "remote-cert-tls",
                "ca",
                "cert",
                "key",
                "tls-crypt",
                "verb",
            ]
        );
        assert_eq!(options[1].args, ["tun"]);
        assert_eq!(options[3].args, ["vpn.example.com", "1194"]);
        assert_eq!(options[4].args, ["backup host.example.com", "1194"]);
        assert_eq!(options[6].args, ["/path with space/x"]);
        assert_eq!(options[7].args, ["IV_GUI_VER", "my gui 1.0"]);
        assert_eq!(options[9].args, [r"CN=server, O=Example \ Inc", "subject"]);

        let ca = &options[11];
        assert!(ca.is_inline());
        assert_eq!(ca.source, OptionSource::Inline);
        assert_eq!(ca.line, 14);
        assert_eq!(ca.args, [INLINE_MARKER, CA]);
        assert_eq!(ca.inline_content(), Some(CA));
        let cert = &options[12];
        assert_eq!(cert.line, 19);
        assert_eq!(
            cert.inline_content(),
            Some(
                "# a comment inside a block is content\n-----BEGIN CERTIFICATE-----\n\
                 MIIBcert\n-----END CERTIFICATE-----\n"
            )
        );
        let key = &options[13];
        assert_eq!(key.line, 25);
        assert!(
            key.inline_content()
                .is_some_and(|k| k.starts_with("-----BEGIN PRIVATE KEY"))
        );
        let tls_crypt = &options[14];
        assert_eq!(tls_crypt.line, 30);
        assert!(
            tls_crypt
                .inline_content()
                .is_some_and(|k| k.starts_with("#\n# 2048 bit"))
        );
        assert_eq!(options[15].line, 38);

        // Rendering and parsing again gives the same options.
        let rendered: Vec<_> = options.iter().map(OptionLine::render).collect();
        let again = parse_config(&rendered.join("\n")).expect("rendered profile parses");
        assert_eq!(pairs(&again), pairs(&options));
    }

    #[test]
    fn crlf_and_bom() {
        let text = format!(
            "\u{FEFF}client\r\ndev tun\r\n<ca>\r\n{}</ca>\r\nverb 3\r\n",
            CA.replace('\n', "\r\n")
        );
        let options = parse_config(&text).expect("CRLF profile parses");
        assert_eq!(
            pairs(&options),
            [
                opt("client", &[]),
                opt("dev", &["tun"]),
                opt("ca", &[INLINE_MARKER, CA]),
                opt("verb", &["3"]),
            ]
        );
        assert_eq!(options[3].line, 8);
        // A BOM later in the file is not skipped.
        let options = parse_config("dev tun\n\u{FEFF}verb 3").expect("parses");
        assert_eq!(options[1].name, "\u{FEFF}verb");
    }

    #[test]
    fn long_lines_are_fine() {
        let long = "x".repeat(5000);
        let options = parse_config(&format!("setenv LONG {long}\n")).expect("long line parses");
        assert_eq!(options[0].args[1], long);
    }

    #[test]
    fn unterminated_quote_names_the_line() {
        let err = parse_config("client\n\nremote \"x\nverb 3\n").expect_err("unterminated quote");
        assert_eq!(err.line(), Some(3));
        assert_eq!(
            err.to_string(),
            "config line 3: unterminated quote in 'remote \"x'; \
             add the closing \" (a literal quote is written \\\")"
        );
        let err = parse_config("a\r\nremote 'x\r\n").expect_err("unterminated single quote");
        assert_eq!(err.line(), Some(2));
        assert!(matches!(
            err,
            OptionError::Syntax {
                problem: SyntaxProblem::UnterminatedSingleQuote,
                ..
            }
        ));
    }

    #[test]
    fn windows_path_without_double_backslash_is_caught() {
        let err = parse_config("ca C:\\certs\\ca.crt\n").expect_err("bad escape");
        assert_eq!(err.line(), Some(1));
        let text = err.to_string();
        assert!(
            text.starts_with("config line 1: unknown escape '\\c' in 'ca C:\\certs\\ca.crt';"),
            "{text}"
        );
        assert!(text.contains("write a literal backslash as \\\\"), "{text}");
    }

    #[test]
    fn nul_byte_is_an_error() {
        let err = parse_config("dev tun\nverb\u{0}3\n").expect_err("NUL");
        assert_eq!(err.line(), Some(2));
        assert!(err.to_string().contains("NUL byte in 'verb\\03'"), "{err}");
        let err = parse_config("<ca>\nab\u{0}\n</ca>\n").expect_err("NUL in block");
        assert_eq!(err.line(), Some(2));
    }

    #[test]
    fn unterminated_block_names_the_opening_line() {
        let err = parse_config("client\n<ca>\nAAAA\n").expect_err("no </ca>");
        assert_eq!(
            err,
            OptionError::UnterminatedBlock {
                tag: "ca".to_owned(),
                line: 2
            }
        );
        assert_eq!(
            err.to_string(),
            "config line 2: <ca> is never closed; add a line '</ca>' after its content"
        );
    }

    #[test]
    fn mismatched_closing_tag() {
        let err = parse_config("<ca>\nAAAA\n</cert>\n").expect_err("wrong closing tag");
        assert_eq!(err.line(), Some(3));
        assert_eq!(
            err.to_string(),
            "config line 3: '</cert>' does not close <ca> opened on line 1; \
             close that block with '</ca>' first"
        );
        let err = parse_config("verb 3\n</ca>\n").expect_err("stray closing tag");
        assert_eq!(
            err,
            OptionError::StrayClosingTag {
                found: "</ca>".to_owned(),
                line: 2
            }
        );
        let err = parse_config("<ca> extra\n</ca>\n").expect_err("tag with text");
        assert_eq!(err.line(), Some(1));
        let err = parse_config("<ca>\nA\n</ca> extra\n").expect_err("closing tag with text");
        assert_eq!(err.line(), Some(3));
    }

    #[test]
    fn empty_block() {
        let options = parse_config("<secret>\n</secret>\n").expect("empty block parses");
        assert_eq!(options[0].args, [INLINE_MARKER, ""]);
    }

    #[test]
    fn connection_blocks() {
        let text = "client\n\
                    <connection>\n\
                    remote a.example.com 1194 udp\n\
                    # comment\n\
                    </connection>\n\
                    <connection>\n\
                    remote b.example.com 443 tcp-client\n\
                    http-proxy proxy.example.com 8080\n\
                    <http-proxy-user-pass>\n\
                    user\n\
                    pass\n\
                    </http-proxy-user-pass>\n\
                    connect-retry \"5\n\
                    </connection>\n";
        let options = parse_config(text).expect("profile parses");
        assert_eq!(options.len(), 3);
        let first = &options[1];
        assert_eq!(first.name, "connection");
        assert_eq!(first.line, 2);
        assert_eq!(
            first.args,
            [INLINE_MARKER, "remote a.example.com 1194 udp\n# comment\n"]
        );
        let inner = first.connection_options().expect("first block parses");
        assert_eq!(
            pairs(&inner),
            [opt("remote", &["a.example.com", "1194", "udp"])]
        );
        assert_eq!(inner[0].line, 3);
        let raw = first.inline_content().expect("inline");
        let relative = parse_connection_block(raw).expect("raw block parses");
        assert_eq!(relative[0].line, 1);

        // Errors inside the second block name the line in the file.
        let err = options[2]
            .connection_options()
            .expect_err("bad quote inside");
        assert_eq!(err.line(), Some(13));
        let fixed = options[2].args[1].replace("\"5", "5");
        let inner = parse_connection_block(&fixed).expect("fixed block parses");
        assert_eq!(inner.len(), 4);
        assert_eq!(inner[2].name, "http-proxy-user-pass");
        assert_eq!(inner[2].inline_content(), Some("user\npass\n"));

        let err = options[0].connection_options().expect_err("not a block");
        assert_eq!(
            err.to_string(),
            "config line 1: 'client' is not an inline <connection> block"
        );
    }

    #[test]
    fn double_dash_is_stripped_from_names_only() {
        let options = parse_config("--verb --3\n-- x\n").expect("parses");
        assert_eq!(pairs(&options), [opt("verb", &["--3"]), opt("--", &["x"])]);
    }

    proptest! {
        #[test]
        fn rendered_options_round_trip_through_config_files(
            options in proptest::collection::vec(
                (
                    "[a-z][a-z0-9-]{0,15}",
                    proptest::collection::vec("[^\r\n\u{0}]{0,12}", 0..5),
                ),
                0..20,
            ),
        ) {
            let lines: Vec<OptionLine> = options
                .into_iter()
                .enumerate()
                .map(|(i, (name, args))| OptionLine {
                    name,
                    args,
                    line: i + 1,
                    source: OptionSource::File,
                })
                .collect();
            let text: Vec<String> = lines.iter().map(OptionLine::render).collect();
            prop_assert_eq!(parse_config(&text.join("\r\n")), Ok(lines));
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse_config(&text);
        }
    }
}
