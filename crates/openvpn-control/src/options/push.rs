//! `PUSH_REPLY` messages: reading them (client) and packing them (server).
//!
//! ```text
//! PUSH_REPLY,<option>,<option>,…[,push-continuation 2|1]
//! ```

use super::lexer::split_words;
use super::{Location, OptionError, OptionLine, OptionSource, excerpt};

/// The command word every reply starts with.
const PUSH_REPLY: &str = "PUSH_REPLY";
/// The option that marks a reply split over several messages.
const CONTINUATION: &str = "push-continuation";
/// Appended to every message but the last of a split reply.
const MORE_SUFFIX: &str = ",push-continuation 2";
/// Appended to the last message of a split reply.
const LAST_SUFFIX: &str = ",push-continuation 1";

/// Whether more `PUSH_REPLY` messages belong to the same reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Continuation {
    /// No `push-continuation`: the reply is complete in this message.
    #[default]
    None,
    /// `push-continuation 2`: more messages follow; keep collecting.
    More,
    /// `push-continuation 1`: this is the last message of a split reply.
    Last,
}

/// One parsed `PUSH_REPLY` message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PushReply {
    /// The options in the order received, without `push-continuation`.
    pub options: Vec<OptionLine>,
    /// The message's `push-continuation` marker.
    pub continuation: Continuation,
}

impl PushReply {
    /// Whether the reply is complete after this message (no more parts follow).
    pub fn is_complete(&self) -> bool {
        self.continuation != Continuation::More
    }
}

/// Parses one `PUSH_REPLY` control message (its text, without the NUL that
/// terminates it on the wire; trailing NULs, CRs and LFs are ignored).
///
/// The options are separated by `,`; each is split into words like a config
/// line (quotes and escapes work; blank options are skipped). A
/// `push-continuation 1|2` option is removed from the list and reported in
/// [`PushReply::continuation`]. The options get source
/// [`OptionSource::Push`] and line 0; errors name the option's 1-based index.
pub fn parse_push_reply(msg: &str) -> Result<PushReply, OptionError> {
    let msg = msg.trim_end_matches(['\0', '\r', '\n']);
    let not_reply = || OptionError::NotPushReply {
        start: excerpt(msg),
    };
    let rest = msg.strip_prefix(PUSH_REPLY).ok_or_else(not_reply)?;
    let mut reply = PushReply::default();
    if rest.is_empty() {
        return Ok(reply);
    }
    let body = rest.strip_prefix(',').ok_or_else(not_reply)?;
    for (i, text) in body.split(',').enumerate() {
        let location = Location::Push(i + 1);
        let mut words = split_words(text).map_err(|problem| OptionError::Syntax {
            location,
            text: excerpt(text.trim()),
            problem,
        })?;
        if words.is_empty() {
            continue;
        }
        let name = words.remove(0);
        if name == CONTINUATION {
            reply.continuation = match words.as_slice() {
                [n] if n == "2" => Continuation::More,
                [n] if n == "1" => Continuation::Last,
                _ => {
                    return Err(OptionError::BadContinuation {
                        location,
                        text: excerpt(text.trim()),
                    });
                }
            };
            continue;
        }
        reply.options.push(OptionLine {
            name,
            args: words,
            line: 0,
            source: OptionSource::Push,
        });
    }
    Ok(reply)
}

/// Packs formatted options (e.g. `route 10.0.0.0 255.0.0.0`, see
/// [`OptionLine::render`]) into `PUSH_REPLY` messages of at most `max_len`
/// bytes each (2.6 uses 1024, minus some reserve), keeping their order.
///
/// If everything fits, the result is one message without continuation.
/// Otherwise every message but the last ends with `,push-continuation 2` and
/// the last with `,push-continuation 1`; the budget counts that suffix. No
/// options give the single message `PUSH_REPLY`.
///
/// Errors: an option that is empty, contains `,` (the separator) or a
/// character that is not printable ASCII (a 2.6 client drops such a
/// message), or that cannot fit into a message of `max_len` bytes.
pub fn build_push_reply(options: &[String], max_len: usize) -> Result<Vec<String>, OptionError> {
    for option in options {
        check_pushable(option)?;
    }
    let single = PUSH_REPLY.len() + options.iter().map(|o| 1 + o.len()).sum::<usize>();
    if single <= max_len {
        let mut msg = String::with_capacity(single);
        msg.push_str(PUSH_REPLY);
        for option in options {
            msg.push(',');
            msg.push_str(option);
        }
        return Ok(vec![msg]);
    }

    // Several messages, each with room for its continuation suffix.
    let budget = max_len.saturating_sub(MORE_SUFFIX.len());
    let mut messages = Vec::new();
    let mut msg = String::from(PUSH_REPLY);
    for option in options {
        let needed = 1 + option.len();
        if PUSH_REPLY.len() + needed > budget {
            return Err(OptionError::PushOptionTooLong {
                option: excerpt(option),
                len: option.len(),
                max_len,
            });
        }
        if msg.len() + needed > budget {
            msg.push_str(MORE_SUFFIX);
            messages.push(std::mem::replace(&mut msg, String::from(PUSH_REPLY)));
        }
        msg.push(',');
        msg.push_str(option);
    }
    msg.push_str(LAST_SUFFIX);
    messages.push(msg);
    Ok(messages)
}

/// Checks that an option can travel inside a `PUSH_REPLY`.
fn check_pushable(option: &str) -> Result<(), OptionError> {
    let reason = if option.trim().is_empty() {
        "is empty; remove it"
    } else if option.contains(',') {
        "contains ',', which separates pushed options; split it into several options"
    } else if !option.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        "contains a character that is not printable ASCII, which makes OpenVPN 2.6 drop \
         the whole message; remove it"
    } else {
        return Ok(());
    };
    Err(OptionError::InvalidPushOption {
        option: excerpt(option),
        reason,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::quote_arg;
    use super::*;
    use proptest::prelude::*;

    /// The interop example of control-messages.md §3.1 (2.6.14 server).
    const INTEROP: &str = "PUSH_REPLY,topology subnet,route-gateway 10.8.0.1,\
        dhcp-option DNS 10.8.0.1,route 192.168.77.0 255.255.255.0,ping 2,ping-restart 10,\
        ifconfig 10.8.0.2 255.255.255.0,peer-id 0,cipher AES-256-GCM,\
        protocol-flags cc-exit tls-ekm dyn-tls-crypt,tun-mtu 1500";

    fn pairs(options: &[OptionLine]) -> Vec<(&str, Vec<&str>)> {
        options
            .iter()
            .map(|o| (o.name.as_str(), o.args.iter().map(String::as_str).collect()))
            .collect()
    }

    #[test]
    fn interop_reply() {
        let reply = parse_push_reply(INTEROP).expect("interop reply parses");
        assert_eq!(reply.continuation, Continuation::None);
        assert!(reply.is_complete());
        assert_eq!(
            pairs(&reply.options),
            [
                ("topology", vec!["subnet"]),
                ("route-gateway", vec!["10.8.0.1"]),
                ("dhcp-option", vec!["DNS", "10.8.0.1"]),
                ("route", vec!["192.168.77.0", "255.255.255.0"]),
                ("ping", vec!["2"]),
                ("ping-restart", vec!["10"]),
                ("ifconfig", vec!["10.8.0.2", "255.255.255.0"]),
                ("peer-id", vec!["0"]),
                ("cipher", vec!["AES-256-GCM"]),
                (
                    "protocol-flags",
                    vec!["cc-exit", "tls-ekm", "dyn-tls-crypt"]
                ),
                ("tun-mtu", vec!["1500"]),
            ]
        );
        assert!(
            reply
                .options
                .iter()
                .all(|o| o.source == OptionSource::Push && o.line == 0)
        );
        assert_eq!(
            super::super::describe_location(&reply.options[0]),
            "pushed option"
        );
        // The NUL terminator and a trailing newline do not matter.
        assert_eq!(parse_push_reply(&format!("{INTEROP}\n\0")), Ok(reply));
    }

    #[test]
    fn empty_reply_and_blank_options() {
        assert_eq!(parse_push_reply("PUSH_REPLY"), Ok(PushReply::default()));
        assert_eq!(parse_push_reply("PUSH_REPLY,"), Ok(PushReply::default()));
        let reply =
            parse_push_reply("PUSH_REPLY,,ping 2, ,# comment,ping-restart 10,").expect("parses");
        assert_eq!(
            pairs(&reply.options),
            [("ping", vec!["2"]), ("ping-restart", vec!["10"])]
        );
    }

    #[test]
    fn quotes_inside_pushed_options() {
        let reply = parse_push_reply(
            "PUSH_REPLY,echo \"hello world\",setenv-safe GUI 'a b',dhcp-option DOMAIN x\\ y",
        )
        .expect("parses");
        assert_eq!(
            pairs(&reply.options),
            [
                ("echo", vec!["hello world"]),
                ("setenv-safe", vec!["GUI", "a b"]),
                ("dhcp-option", vec!["DOMAIN", "x y"]),
            ]
        );
        let err = parse_push_reply("PUSH_REPLY,ping 2,echo \"oops").expect_err("open quote");
        assert_eq!(err.line(), None);
        assert!(
            err.to_string()
                .starts_with("pushed option 2: unterminated quote in 'echo \"oops'")
        );
    }

    #[test]
    fn continuation_is_reported_and_removed() {
        let more = parse_push_reply("PUSH_REPLY,route 10.1.0.0 255.255.0.0,push-continuation 2")
            .expect("parses");
        assert_eq!(more.continuation, Continuation::More);
        assert!(!more.is_complete());
        assert_eq!(
            pairs(&more.options),
            [("route", vec!["10.1.0.0", "255.255.0.0"])]
        );
        let last = parse_push_reply("PUSH_REPLY,ping 2,push-continuation 1").expect("parses");
        assert_eq!(last.continuation, Continuation::Last);
        assert!(last.is_complete());
        assert_eq!(pairs(&last.options), [("ping", vec!["2"])]);

        for bad in [
            "push-continuation 3",
            "push-continuation",
            "push-continuation 1 2",
        ] {
            let err = parse_push_reply(&format!("PUSH_REPLY,ping 2,{bad}")).expect_err(bad);
            assert!(matches!(
                err,
                OptionError::BadContinuation {
                    location: Location::Push(2),
                    ..
                }
            ));
            assert!(
                err.to_string().contains("use 'push-continuation 2'"),
                "{err}"
            );
        }
    }

    #[test]
    fn other_messages_are_rejected() {
        for msg in [
            "PUSH_REQUEST",
            "AUTH_FAILED,bad",
            "PUSH_REPLYX,ping 2",
            "push_reply,ping 2",
            "",
        ] {
            let err = parse_push_reply(msg).expect_err(msg);
            assert!(
                matches!(err, OptionError::NotPushReply { .. }),
                "{msg}: {err}"
            );
        }
        let err = parse_push_reply("AUTH_FAILED").expect_err("not a reply");
        assert_eq!(
            err.to_string(),
            "control message 'AUTH_FAILED' is not a PUSH_REPLY; it must start with 'PUSH_REPLY'"
        );
    }

    #[test]
    fn small_reply_is_one_message() {
        let options = vec!["ping 2".to_owned(), "ping-restart 10".to_owned()];
        assert_eq!(
            build_push_reply(&options, 1024),
            Ok(vec!["PUSH_REPLY,ping 2,ping-restart 10".to_owned()])
        );
        assert_eq!(
            build_push_reply(&[], 1024),
            Ok(vec!["PUSH_REPLY".to_owned()])
        );
        // Exactly max_len still fits in one message; one byte less needs three,
        // as each part must leave room for its 20-byte continuation suffix.
        let five = vec!["ping 2".to_owned(); 5];
        let exact = "PUSH_REPLY".len() + 5 * ",ping 2".len();
        assert_eq!(build_push_reply(&five, exact).map(|m| m.len()), Ok(1));
        assert_eq!(
            build_push_reply(&five, exact - 1),
            Ok(vec![
                "PUSH_REPLY,ping 2,ping 2,push-continuation 2".to_owned(),
                "PUSH_REPLY,ping 2,ping 2,push-continuation 2".to_owned(),
                "PUSH_REPLY,ping 2,push-continuation 1".to_owned(),
            ])
        );
    }

    #[test]
    fn forty_routes_split_and_parse_back() {
        let mut options: Vec<String> =
            vec!["topology subnet".into(), "route-gateway 10.8.0.1".into()];
        options.extend((0..40).map(|i| format!("route 10.{i}.0.0 255.255.0.0 vpn_gateway 100")));
        options.push("dhcp-option DOMAIN \"corp example\"".into());
        options.push("ifconfig 10.8.0.2 255.255.255.0".into());
        options.push("peer-id 0".into());
        let max_len = 400;

        let messages = build_push_reply(&options, max_len).expect("options fit");
        assert!(messages.len() >= 4, "{} messages", messages.len());
        let mut collected = Vec::new();
        for (i, msg) in messages.iter().enumerate() {
            assert!(msg.len() <= max_len, "message {i} has {} bytes", msg.len());
            let reply = parse_push_reply(msg).expect("built message parses");
            let last = i + 1 == messages.len();
            assert_eq!(
                reply.continuation,
                if last {
                    Continuation::Last
                } else {
                    Continuation::More
                }
            );
            assert_eq!(msg.ends_with(MORE_SUFFIX), !last);
            assert!(!reply.options.is_empty());
            collected.extend(reply.options);
        }
        let expected = options
            .iter()
            .map(|o| {
                let mut words = split_words(o).expect("option splits");
                let name = words.remove(0);
                OptionLine {
                    name,
                    args: words,
                    line: 0,
                    source: OptionSource::Push,
                }
            })
            .collect::<Vec<_>>();
        assert_eq!(collected, expected);
        assert_eq!(collected[42].args, ["DOMAIN", "corp example"]);

        // The 2.6 default size packs the same options into fewer messages.
        let messages = build_push_reply(&options, 1024).expect("options fit");
        assert!(messages.len() >= 2);
        assert!(messages.iter().all(|m| m.len() <= 1024));
    }

    #[test]
    fn unsendable_options_are_errors() {
        let long = format!("echo {}", "x".repeat(100));
        let err = build_push_reply(&[long.clone(), "ping 2".to_owned()], 64).expect_err("too long");
        assert!(matches!(
            err,
            OptionError::PushOptionTooLong {
                len: 105,
                max_len: 64,
                ..
            }
        ));
        assert!(
            err.to_string()
                .contains("shorten it or allow longer messages"),
            "{err}"
        );
        for (bad, fix) in [
            ("route 10.0.0.0,255.0.0.0", "split it"),
            ("", "remove it"),
            ("   ", "remove it"),
            ("echo caf\u{e9}", "not printable ASCII"),
            ("echo a\nb", "not printable ASCII"),
        ] {
            let err = build_push_reply(&[bad.to_owned()], 1024).expect_err(bad);
            assert!(err.to_string().contains(fix), "{bad:?}: {err}");
        }
        // Too small for even the command and one suffix.
        assert!(build_push_reply(&["ping 2".to_owned()], 5).is_err());
    }

    /// An argument a pushed option can carry: printable ASCII without ','.
    fn push_arg() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[ -+\\--~]{0,12}").expect("valid regex")
    }

    proptest! {
        #[test]
        fn rendered_options_round_trip_through_push_replies(
            options in proptest::collection::vec(
                ("[a-z][a-z0-9-]{0,15}", proptest::collection::vec(push_arg(), 0..5)),
                0..30,
            ),
            max_len in 60usize..1100,
        ) {
            let lines: Vec<OptionLine> = options
                .into_iter()
                .filter(|(name, _)| name != CONTINUATION)
                .map(|(name, args)| OptionLine { name, args, line: 0, source: OptionSource::Push })
                .collect();
            let rendered: Vec<String> = lines.iter().map(OptionLine::render).collect();
            prop_assume!(rendered.iter().all(|r| r.len() + 11 + MORE_SUFFIX.len() <= max_len));
            let messages = build_push_reply(&rendered, max_len).expect("every option fits");
            let mut collected = Vec::new();
            for msg in &messages {
                prop_assert!(msg.len() <= max_len);
                collected.extend(parse_push_reply(msg).expect("message parses").options);
            }
            prop_assert_eq!(collected, lines);
            // quote_arg alone is the inverse of word splitting.
            for arg in rendered.iter().flat_map(|r| split_words(r).unwrap_or_default()) {
                prop_assert_eq!(split_words(&quote_arg(&arg)), Ok(vec![arg.clone()]));
            }
        }
    }
}
