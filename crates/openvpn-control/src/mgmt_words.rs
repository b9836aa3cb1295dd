//! Word-level parsing shared by the management interfaces of the server and the client: the
//! command line lexer and the argument forms both use (`log`/`state`/`echo` real-time flags,
//! numbers). Replies are complete `ERROR: …` lines without CRLF.

/// `on` / `off` / `all` / `on all` / `N` argument of `log`, `state`, `echo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Realtime {
    /// Show the current entry (`state` without argument).
    Current,
    /// Real-time on.
    On,
    /// Real-time off.
    Off,
    /// History.
    All,
    /// History, then real-time on.
    OnAll,
    /// The last N entries.
    Last(usize),
}

/// Splits a command line with the config-file lexer (quotes, backslash escapes).
pub fn words(line: &str) -> Result<Vec<String>, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(Vec::new());
    }
    let parsed = crate::options::parse_config(line)
        .map_err(|e| format!("ERROR: cannot parse command: {e}"))?;
    Ok(parsed
        .into_iter()
        .next()
        .map(|l| std::iter::once(l.name).chain(l.args).collect())
        .unwrap_or_default())
}

/// Word `i` as a number.
pub fn num<T: std::str::FromStr>(w: &[String], i: usize, cmd: &str) -> Result<T, String> {
    w.get(i)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("ERROR: {cmd}: bad or missing argument"))
}

/// The real-time argument after the command word (`default` when there is none).
pub fn realtime(w: &[String], default: Realtime) -> Result<Realtime, String> {
    let a: Vec<&str> = w.iter().skip(1).map(String::as_str).collect();
    Ok(match a.as_slice() {
        [] => default,
        ["on"] => Realtime::On,
        ["off"] => Realtime::Off,
        ["all"] => Realtime::All,
        ["on", "all"] | ["all", "on"] => Realtime::OnAll,
        [n] => Realtime::Last(
            n.parse()
                .map_err(|_| format!("ERROR: unknown parameter '{n}'"))?,
        ),
        _ => return Err("ERROR: too many parameters".into()),
    })
}
