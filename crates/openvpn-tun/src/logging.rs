//! Where both binaries' log lines go, as OpenVPN's `log`, `log-append`, `syslog`,
//! `errors-to-stderr`, `suppress-timestamps` and `verb` decide.
//!
//! ```text
//!  tracing events ─▶ EnvFilter(verb | OPENVPN_LOG) ─┬─▶ stdout, or the log file
//!                                                   ├─▶ syslog (/dev/log, facility daemon)
//!                                                   ├─▶ stderr, errors only (errors-to-stderr)
//!                                                   └─▶ the caller's layer (management log)
//! ```

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layered, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// The subscriber stack extra layers attach to.
pub type Base = Layered<EnvFilter, Registry>;

/// A layer the caller adds (e.g. the management interface's log cache).
pub type ExtraLayer = Box<dyn Layer<Base> + Send + Sync>;

/// The logging options of a config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// `verb` (0–11).
    pub verb: u8,
    /// `log FILE` / `log-append FILE` (true = append).
    pub file: Option<(PathBuf, bool)>,
    /// `syslog [NAME]`: the program name syslog lines carry.
    pub syslog: Option<String>,
    /// `errors-to-stderr`: errors also go to stderr while logging to a file or syslog.
    pub errors_to_stderr: bool,
    /// `suppress-timestamps`.
    pub suppress_timestamps: bool,
}

/// The default filter for a `verb` level (overridden by `OPENVPN_LOG`).
pub fn verb_filter(verb: u8, crate_name: &str) -> String {
    match verb {
        0 => "error".into(),
        1 => format!("warn,{crate_name}=info"),
        2..=3 => "info".into(),
        4 => "debug,rustls=info".into(),
        _ => "trace".into(),
    }
}

/// Installs the global subscriber. `crate_name` is the binary's crate (for `verb 1`).
pub fn init(opts: &LogOptions, crate_name: &str, extra: Option<ExtraLayer>) -> io::Result<()> {
    let filter = EnvFilter::try_from_env("OPENVPN_LOG")
        .unwrap_or_else(|_| verb_filter(opts.verb, crate_name).into());
    let mut layers: Vec<ExtraLayer> = Vec::new();
    let fmt = || tracing_subscriber::fmt::layer().with_target(false);
    let mut redirected = false;
    if let Some((path, append)) = &opts.file {
        let err =
            |e: io::Error| io::Error::new(e.kind(), format!("log file {}: {e}", path.display()));
        if !*append {
            // `log`: emptied once here; written in append mode below like `log-append`, so
            // that what other processes append (the client's guardian) is never overwritten.
            std::fs::File::create(path).map_err(err)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        let writer = Mutex::new(file);
        layers.push(if opts.suppress_timestamps {
            fmt()
                .without_time()
                .with_ansi(false)
                .with_writer(writer)
                .boxed()
        } else {
            fmt().with_ansi(false).with_writer(writer).boxed()
        });
        redirected = true;
    }
    if let Some(name) = &opts.syslog {
        match Syslog::connect(name) {
            Ok(s) => {
                layers.push(
                    fmt()
                        .without_time()
                        .with_level(false)
                        .with_ansi(false)
                        .with_writer(s)
                        .boxed(),
                );
                redirected = true;
            }
            Err(e) => eprintln!("syslog: cannot reach /dev/log ({e}); logging to stdout"),
        }
    }
    if !redirected {
        layers.push(if opts.suppress_timestamps {
            fmt().without_time().boxed()
        } else {
            fmt().boxed()
        });
    } else if opts.errors_to_stderr {
        layers.push(
            fmt()
                .with_writer(io::stderr)
                .with_filter(LevelFilter::ERROR)
                .boxed(),
        );
    }
    layers.extend(extra);
    tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init()
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Sends each formatted event as one datagram to the local syslog socket (RFC 3164 style,
/// facility `daemon`, severity from the event's level).
#[derive(Clone)]
pub struct Syslog {
    socket: Arc<UnixDatagram>,
    tag: Arc<str>,
}

impl Syslog {
    /// Connects to `/dev/log`; `name` is the program name each line carries.
    pub fn connect(name: &str) -> io::Result<Self> {
        Self::connect_to(std::path::Path::new("/dev/log"), name)
    }

    /// Connects to a syslog socket at `path` (for tests).
    pub fn connect_to(path: &std::path::Path, name: &str) -> io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(Syslog {
            socket: Arc::new(socket),
            tag: Arc::from(name),
        })
    }
}

/// One event's text, sent on drop.
pub struct SyslogLine {
    syslog: Syslog,
    severity: u8,
    text: Vec<u8>,
}

impl Write for SyslogLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.text);
        let text = text.trim_end();
        if text.is_empty() {
            return;
        }
        const DAEMON: u8 = 3;
        let line = format!(
            "<{}>{}[{}]: {text}",
            DAEMON * 8 + self.severity,
            self.syslog.tag,
            std::process::id()
        );
        // A full or missing syslog socket loses the line, as syslog(3) does.
        let _ = self.syslog.socket.send(line.as_bytes());
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine;

    fn make_writer(&'a self) -> Self::Writer {
        self.line(6)
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        let severity = match *meta.level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        self.line(severity)
    }
}

impl Syslog {
    fn line(&self, severity: u8) -> SyslogLine {
        SyslogLine {
            syslog: self.clone(),
            severity,
            text: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_lines_carry_priority_tag_and_pid() {
        let dir = std::env::temp_dir().join(format!("ovrs-syslog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let s = Syslog::connect_to(&path, "openvpn").unwrap();
        {
            let mut w = s.line(3);
            w.write_all(b"TLS Error: bad\n").unwrap();
        }
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        let got = String::from_utf8_lossy(&buf[..n]).to_string();
        assert_eq!(
            got,
            format!("<27>openvpn[{}]: TLS Error: bad", std::process::id())
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn verb_levels() {
        assert_eq!(verb_filter(0, "x"), "error");
        assert_eq!(verb_filter(1, "x"), "warn,x=info");
        assert_eq!(verb_filter(3, "x"), "info");
    }
}
