//! The option grammar: config files, command lines and PUSH_REPLY never panic, and what
//! parses renders back to text that parses to the same options.
//!
//! ```text
//! byte 0 % 3: 0 config file, 1 PUSH_REPLY (the prefix is added when missing), 2 command
//! line (words split at NUL / LF); the rest is the text (lossy UTF-8)
//! ```

use openvpn_control::options::{
    OptionLine, build_push_reply, parse_cli_args, parse_config, parse_push_reply,
};

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 3 {
        0 => config(&text),
        1 => push(&text),
        _ => cli(&text),
    }
}

/// Name and arguments: what a round trip must keep (line numbers may shift).
fn words(o: &OptionLine) -> (String, Vec<String>) {
    (o.name.clone(), o.args.clone())
}

/// Whether `render` promises a config-file round trip for this option (see its docs: no
/// CR/LF/NUL in words, no name a config file reads differently).
fn renders_on_one_line(o: &OptionLine) -> bool {
    let n = &o.name;
    let reread = (n.len() >= 3 && n.starts_with("--")) || (n.starts_with('<') && n.ends_with('>'));
    o.is_inline()
        || (!reread
            && !std::iter::once(n)
                .chain(&o.args)
                .any(|w| w.contains(['\r', '\n', '\0'])))
}

fn config(text: &str) {
    let Ok(options) = parse_config(text) else {
        return;
    };
    for o in &options {
        let _ = o.connection_options();
        if !renders_on_one_line(o) {
            continue;
        }
        let rendered = o.render();
        let again = parse_config(&rendered)
            .unwrap_or_else(|e| panic!("{o:?} renders as {rendered:?}, which fails: {e}"));
        assert_eq!(
            again.iter().map(words).collect::<Vec<_>>(),
            vec![words(o)],
            "config round trip of {rendered:?}"
        );
    }
}

fn push(text: &str) {
    let msg = if text.starts_with("PUSH_REPLY") {
        text.to_owned()
    } else {
        format!("PUSH_REPLY,{text}")
    };
    let Ok(reply) = parse_push_reply(&msg) else {
        return;
    };
    let _ = reply.is_complete();
    let rendered: Vec<String> = reply.options.iter().map(OptionLine::render).collect();
    // Options that build_push_reply accepts must come back unchanged.
    let Ok(messages) = build_push_reply(&rendered, 1024) else {
        return;
    };
    let mut back = vec![];
    for m in &messages {
        assert!(m.len() <= 1024, "PUSH_REPLY part of {} bytes", m.len());
        let part =
            parse_push_reply(m).unwrap_or_else(|e| panic!("built {m:?} does not parse: {e}"));
        back.extend(part.options);
    }
    assert_eq!(
        back.iter().map(words).collect::<Vec<_>>(),
        reply.options.iter().map(words).collect::<Vec<_>>(),
        "push round trip via {messages:?}"
    );
}

fn cli(text: &str) {
    let args: Vec<String> = text.split(['\0', '\n']).map(str::to_owned).collect();
    let Ok(options) = parse_cli_args(args.clone()) else {
        return;
    };
    if options.len() == 1 && args.len() == 1 && !args[0].starts_with("--") {
        assert_eq!(options[0].name, "config");
        return;
    }
    // Re-joining `--name args…` gives the same options.
    let mut again = vec![];
    for o in &options {
        again.push(format!("--{}", o.name));
        again.extend(o.args.iter().cloned());
    }
    let back = parse_cli_args(again.clone())
        .unwrap_or_else(|e| panic!("{again:?} fails to parse again: {e}"));
    assert_eq!(back, options, "command line round trip of {again:?}");
}
