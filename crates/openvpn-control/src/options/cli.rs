//! The command line: `--name arg … --other arg …`.

use super::{OptionError, OptionLine, OptionSource};

/// Parses command-line arguments (without the program name) into options.
///
/// Each word starting with `--` starts a new option; the words after it that
/// do not start with `--` are its arguments, taken as they are (the shell has
/// already done the quoting). As in OpenVPN, a single word without `--` is
/// short for `--config <word>` (`openvpn client.ovpn`); otherwise a word
/// without `--` where an option should start is an error that names it.
/// No arguments at all give no options.
pub fn parse_cli_args<I: IntoIterator<Item = String>>(
    args: I,
) -> Result<Vec<OptionLine>, OptionError> {
    let args: Vec<String> = args.into_iter().collect();
    let option = |name: String, args: Vec<String>| OptionLine {
        name,
        args,
        line: 0,
        source: OptionSource::CommandLine,
    };

    match args.as_slice() {
        [only] if !only.starts_with("--") => {
            return Ok(vec![option("config".to_owned(), vec![only.clone()])]);
        }
        _ => {}
    }

    let mut options: Vec<OptionLine> = Vec::new();
    for arg in args {
        if let Some(name) = arg.strip_prefix("--") {
            if name.is_empty() {
                return Err(OptionError::EmptyOptionName);
            }
            options.push(option(name.to_owned(), Vec::new()));
        } else if let Some(current) = options.last_mut() {
            current.args.push(arg);
        } else {
            return Err(OptionError::MissingDashes {
                arg: super::excerpt(&arg),
            });
        }
    }
    Ok(options)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Vec<OptionLine>, OptionError> {
        parse_cli_args(args.iter().map(|a| (*a).to_owned()))
    }

    fn pairs(options: &[OptionLine]) -> Vec<(&str, Vec<&str>)> {
        options
            .iter()
            .map(|o| (o.name.as_str(), o.args.iter().map(String::as_str).collect()))
            .collect()
    }

    #[test]
    fn options_and_their_arguments() {
        let options = cli(&[
            "--client",
            "--remote",
            "vpn.example.com",
            "1194",
            "--setenv",
            "IV_GUI_VER",
            "my gui 1.0",
            "--verb",
            "-1",
            "--auth-user-pass",
        ])
        .expect("command line parses");
        assert_eq!(
            pairs(&options),
            [
                ("client", vec![]),
                ("remote", vec!["vpn.example.com", "1194"]),
                ("setenv", vec!["IV_GUI_VER", "my gui 1.0"]),
                ("verb", vec!["-1"]),
                ("auth-user-pass", vec![]),
            ]
        );
        assert!(
            options
                .iter()
                .all(|o| o.source == OptionSource::CommandLine && o.line == 0)
        );
        assert_eq!(super::super::describe_location(&options[0]), "command line");
    }

    #[test]
    fn arguments_are_not_requoted() {
        let options = cli(&["--ca", "C:\\certs\\ca.crt", "--x", "\"q\"", "#c"]).expect("parses");
        assert_eq!(
            pairs(&options),
            [
                ("ca", vec!["C:\\certs\\ca.crt"]),
                ("x", vec!["\"q\"", "#c"])
            ]
        );
    }

    #[test]
    fn single_config_file_shorthand() {
        let options = cli(&["client.ovpn"]).expect("parses");
        assert_eq!(pairs(&options), [("config", vec!["client.ovpn"])]);
    }

    #[test]
    fn empty_command_line() {
        assert_eq!(cli(&[]), Ok(Vec::new()));
    }

    #[test]
    fn bare_leading_word_is_an_error() {
        let err = cli(&["remote", "vpn.example.com"]).expect_err("missing --");
        assert_eq!(
            err,
            OptionError::MissingDashes {
                arg: "remote".to_owned()
            }
        );
        assert_eq!(
            err.to_string(),
            "command line: 'remote' is not an option; options start with '--' \
             (did you mean '--remote'?)"
        );
        assert_eq!(err.line(), None);
    }

    #[test]
    fn bare_double_dash_is_an_error() {
        let err = cli(&["--verb", "3", "--"]).expect_err("empty name");
        assert_eq!(err, OptionError::EmptyOptionName);
    }
}
