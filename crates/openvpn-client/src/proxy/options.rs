//! The proxy options: `http-proxy`, `http-proxy-option`, `http-proxy-user-pass`,
//! `socks-proxy`, per scope (the profile, or a `<connection>` block), checked as OpenVPN 2.6
//! checks them.

use std::path::{Path, PathBuf};

use openvpn_control::loading::{LoadError, arg, file_or_inline, invalid, number};
use openvpn_control::options::OptionLine;

use super::{HttpAuth, HttpProxy, Proxy, SocksProxy};
use crate::config::{Family, Proto, Remote};

/// The proxy options of one scope (the profile, or one `<connection>` block, which starts
/// from the profile's lines above it, as OpenVPN's defaulting works), checked line by line.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProxyLines {
    http: Option<(OptionLine, HttpLine)>,
    socks: Option<(OptionLine, SocksProxy)>,
    /// The first `http-proxy-option` / `http-proxy-user-pass` line (for its error).
    http_extra: Option<OptionLine>,
    version: Option<String>,
    agent: Option<String>,
    headers: Vec<(String, String)>,
    /// `<http-proxy-user-pass>` / `http-proxy-user-pass FILE` (wins over the authfile).
    user_pass: Option<(String, String)>,
}

/// An `http-proxy` line before its credentials are read.
#[derive(Clone, Debug)]
struct HttpLine {
    host: String,
    port: u16,
    auth: HttpAuth,
    /// The authfile (read at the end, only if no `http-proxy-user-pass` replaces it).
    authfile: Option<PathBuf>,
}

/// Username on the first line, password on the second (what OpenVPN reads).
fn user_pass(text: &str, o: &OptionLine, what: &str) -> Result<(String, String), LoadError> {
    let mut it = text.lines().map(str::trim_end).filter(|l| !l.is_empty());
    match (it.next(), it.next()) {
        (Some(u), Some(p)) => Ok((u.to_owned(), p.to_owned())),
        _ => Err(invalid(
            o,
            format!("{what}: put the username on line 1 and the password on line 2"),
        )),
    }
}

fn no_prompt(o: &OptionLine) -> LoadError {
    invalid(
        o,
        "'stdin' (asking for the proxy password on the terminal) is not supported: give a file with the username and password",
    )
}

fn one_line(o: &OptionLine, s: &str) -> Result<String, LoadError> {
    if s.contains(['\r', '\n']) {
        return Err(invalid(o, "the value must be one line"));
    }
    Ok(s.to_owned())
}

impl ProxyLines {
    /// Takes one proxy option line (`http-proxy`, `http-proxy-option`,
    /// `http-proxy-user-pass`, `socks-proxy`); relative paths from `base`.
    pub(crate) fn add(&mut self, o: &OptionLine, base: &Path) -> Result<(), LoadError> {
        match o.name.as_str() {
            "http-proxy" => {
                let host = arg(o, 0)?.to_owned();
                if o.arg(1).is_none() {
                    return Err(invalid(
                        o,
                        "no port: http-proxy HOST PORT [AUTHFILE|auto|auto-nct] [AUTH-METHOD]",
                    ));
                }
                let port = number(o, 1)?;
                let (mut auth, authfile) = match o.arg(2) {
                    None => (HttpAuth::None, None),
                    Some("auto") => (
                        HttpAuth::Auto {
                            no_cleartext: false,
                        },
                        None,
                    ),
                    Some("auto-nct") => (HttpAuth::Auto { no_cleartext: true }, None),
                    Some("stdin") => return Err(no_prompt(o)),
                    Some(f) => (HttpAuth::Basic, Some(base.join(f))),
                };
                match o.arg(3) {
                    None | Some("basic") => {}
                    Some("none") => {
                        if auth == HttpAuth::Basic {
                            auth = HttpAuth::None;
                        }
                    }
                    Some(m @ ("ntlm" | "ntlm2")) => {
                        return Err(invalid(
                            o,
                            format!("'{m}' proxy authentication is not supported: use basic"),
                        ));
                    }
                    Some(m) => {
                        return Err(invalid(
                            o,
                            format!(
                                "unknown HTTP proxy authentication method '{m}': use none or basic"
                            ),
                        ));
                    }
                }
                self.http = Some((
                    o.clone(),
                    HttpLine {
                        host,
                        port,
                        auth,
                        authfile,
                    },
                ));
            }
            "http-proxy-option" => {
                self.http_extra.get_or_insert_with(|| o.clone());
                let bad = || invalid(o, "use VERSION V, AGENT STRING or CUSTOM-HEADER NAME VALUE");
                match (o.arg(0), o.args.len()) {
                    (Some("VERSION"), 2) => self.version = Some(one_line(o, arg(o, 1)?)?),
                    (Some("AGENT"), 2) => self.agent = Some(one_line(o, arg(o, 1)?)?),
                    (Some("CUSTOM-HEADER"), 2 | 3) => {
                        let name = arg(o, 1)?;
                        if name.is_empty()
                            || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
                        {
                            return Err(invalid(o, format!("'{name}' is not a header name")));
                        }
                        let value = o.arg(2).unwrap_or_default();
                        self.headers.push((name.to_owned(), one_line(o, value)?));
                    }
                    _ => return Err(bad()),
                }
            }
            "http-proxy-user-pass" => {
                self.http_extra.get_or_insert_with(|| o.clone());
                if o.inline_content().is_none() && o.arg(0) == Some("stdin") {
                    return Err(no_prompt(o));
                }
                let text = file_or_inline(o, base)?;
                self.user_pass = Some(user_pass(&text, o, "http-proxy-user-pass")?);
            }
            "socks-proxy" => {
                let host = arg(o, 0)?.to_owned();
                let port = if o.arg(1).is_some() {
                    number(o, 1)?
                } else {
                    1080
                };
                let credentials = match o.arg(2) {
                    None => None,
                    Some("stdin") => return Err(no_prompt(o)),
                    Some(f) => {
                        let path = base.join(f);
                        let text = std::fs::read_to_string(&path).map_err(|e| {
                            invalid(
                                o,
                                format!("cannot read the authfile {}: {e}", path.display()),
                            )
                        })?;
                        let up = user_pass(&text, o, "the authfile")?;
                        if up.0.len() > 255 || up.1.len() > 255 {
                            return Err(invalid(
                                o,
                                "SOCKS5 usernames and passwords are at most 255 bytes",
                            ));
                        }
                        Some(up)
                    }
                };
                self.socks = Some((
                    o.clone(),
                    SocksProxy {
                        host,
                        port,
                        credentials,
                    },
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// The scope's proxy, with the line that named it.
    pub(crate) fn finish(&self) -> Result<Option<(OptionLine, Proxy)>, LoadError> {
        match (&self.http, &self.socks) {
            (Some(_), Some((o, _))) => Err(invalid(
                o,
                "'http-proxy' and 'socks-proxy' cannot both be used for one connection",
            )),
            (None, Some((o, p))) => {
                if let Some(x) = &self.http_extra {
                    return Err(invalid(x, "needs 'http-proxy HOST PORT'"));
                }
                Ok(Some((o.clone(), Proxy::Socks(p.clone()))))
            }
            (None, None) => match &self.http_extra {
                Some(x) => Err(invalid(x, "needs 'http-proxy HOST PORT'")),
                None => Ok(None),
            },
            (Some((o, h)), None) => {
                let credentials = match (&self.user_pass, &h.authfile) {
                    (Some(up), _) => Some(up.clone()),
                    (None, Some(path)) => {
                        let text = std::fs::read_to_string(path).map_err(|e| {
                            invalid(
                                o,
                                format!("cannot read the authfile {}: {e}", path.display()),
                            )
                        })?;
                        Some(user_pass(&text, o, "the authfile")?)
                    }
                    (None, None) => None,
                };
                Ok(Some((
                    o.clone(),
                    Proxy::Http(HttpProxy {
                        host: h.host.clone(),
                        port: h.port,
                        auth: h.auth,
                        credentials,
                        version: self.version.clone().unwrap_or_else(|| "1.0".into()),
                        agent: self.agent.clone(),
                        headers: self.headers.clone(),
                    }),
                )))
            }
        }
    }
}

/// Puts `proxy` in front of `remote`: an HTTP proxy needs TCP (OpenVPN refuses it with UDP
/// too); SOCKS with dual-stack UDP reaches the server over IPv4, as OpenVPN 2.6 does.
pub(crate) fn apply(
    mut remote: Remote,
    proxy: Option<&(OptionLine, Proxy)>,
    notices: &mut Vec<String>,
) -> Result<Remote, LoadError> {
    let Some((o, p)) = proxy else {
        return Ok(remote);
    };
    match (p, remote.proto) {
        (Proxy::Http(_), Proto::Udp) => {
            return Err(invalid(
                o,
                format!(
                    "an HTTP proxy carries TCP only, and remote {} uses UDP: add 'proto tcp-client' (or use socks-proxy)",
                    remote.host
                ),
            ));
        }
        (Proxy::Socks(_), Proto::Udp) if remote.family == Family::Any => {
            remote.family = Family::V4;
            let note = "socks-proxy with proto udp: the server is reached over IPv4 (OpenVPN 2.6 forces IPv4 for UDP through SOCKS too)";
            if !notices.iter().any(|n| n == note) {
                notices.push(note.into());
            }
        }
        _ => {}
    }
    remote.proxy = Some(p.clone());
    Ok(remote)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ClientConfig;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    /// A profile with `extra` lines; `proxy-auth.txt` in its directory holds `puser`/`ppass`.
    fn prof(extra: &str) -> Result<ClientConfig, LoadError> {
        // A directory per call: the tests run in parallel.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ovpn-rs-proxy-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("proxy-auth.txt"), "puser\nppass\n").unwrap();
        let c = ClientConfig::from_ovpn(
            &format!("client\ndev tun\nremote vpn.example 443\n<ca>\n{CA}</ca>\n{extra}"),
            &dir,
        );
        let _ = std::fs::remove_dir_all(&dir);
        c
    }

    fn http_of(c: &ClientConfig, i: usize) -> HttpProxy {
        match &c.remotes[i].proxy {
            Some(Proxy::Http(h)) => h.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn http_proxy_options() {
        let c = prof(
            "proto tcp-client\nhttp-proxy proxy.example 3128 proxy-auth.txt\n\
             http-proxy-option VERSION 1.1\nhttp-proxy-option AGENT OpenVPN\n\
             http-proxy-option CUSTOM-HEADER Host vpn.example.test\nhttp-proxy-retry\n",
        )
        .unwrap();
        let h = http_of(&c, 0);
        assert_eq!(
            (h.host.as_str(), h.port, h.auth),
            ("proxy.example", 3128, HttpAuth::Basic)
        );
        assert_eq!(h.credentials, Some(("puser".into(), "ppass".into())));
        assert_eq!(
            (h.version.as_str(), h.agent.as_deref()),
            ("1.1", Some("OpenVPN"))
        );
        assert_eq!(
            h.headers,
            [("Host".to_owned(), "vpn.example.test".to_owned())]
        );
        // No authfile: no authentication; `none`; `auto` with the inline credentials, which
        // also replace an authfile.
        let c = prof("proto tcp\nhttp-proxy p 8080\n").unwrap();
        assert_eq!(
            (http_of(&c, 0).auth, http_of(&c, 0).credentials),
            (HttpAuth::None, None)
        );
        let c = prof("proto tcp\nhttp-proxy p 8080 proxy-auth.txt none\n").unwrap();
        assert_eq!(http_of(&c, 0).auth, HttpAuth::None);
        let c = prof("proto tcp\nhttp-proxy p 8080 auto-nct\n<http-proxy-user-pass>\niu\nip\n</http-proxy-user-pass>\n").unwrap();
        assert_eq!(http_of(&c, 0).auth, HttpAuth::Auto { no_cleartext: true });
        assert_eq!(http_of(&c, 0).credentials, Some(("iu".into(), "ip".into())));
        let c = prof("proto tcp\nhttp-proxy p 8080 missing.txt basic\n<http-proxy-user-pass>\niu\nip\n</http-proxy-user-pass>\n").unwrap();
        assert_eq!(http_of(&c, 0).credentials, Some(("iu".into(), "ip".into())));
    }

    #[test]
    fn proxy_errors_are_openvpns() {
        // The profile's first extra line is line 6.
        for (extra, want) in [
            ("http-proxy p 3128\n", "carries TCP only"),
            (
                "proto tcp\nremote b 1194 udp\nhttp-proxy p 3128\n",
                "remote b uses UDP",
            ),
            ("proto tcp\nhttp-proxy p\n", "no port"),
            ("proto tcp\nhttp-proxy p 3128 stdin\n", "stdin"),
            (
                "proto tcp\nhttp-proxy p 3128 proxy-auth.txt ntlm2\n",
                "'ntlm2' proxy authentication is not supported",
            ),
            (
                "proto tcp\nhttp-proxy p 3128 proxy-auth.txt digest\n",
                "unknown HTTP proxy authentication method",
            ),
            (
                "proto tcp\nhttp-proxy p 3128 nofile.txt\n",
                "cannot read the authfile",
            ),
            (
                "proto tcp\nhttp-proxy-option VERSION 1.1\n",
                "needs 'http-proxy HOST PORT'",
            ),
            (
                "proto tcp\nhttp-proxy p 3128\nhttp-proxy-option X-Other v\n",
                "CUSTOM-HEADER",
            ),
            (
                "proto tcp\nhttp-proxy p 3128\nhttp-proxy-option AGENT\n",
                "AGENT",
            ),
            (
                "proto tcp\nhttp-proxy p 3128\nsocks-proxy s\n",
                "cannot both be used",
            ),
            ("socks-proxy s 1080 stdin\n", "stdin"),
        ] {
            let e = prof(extra).expect_err(extra).to_string();
            assert!(
                e.contains(want) && e.contains("config line"),
                "{extra:?}: {e}"
            );
        }
    }

    #[test]
    fn connection_blocks_take_the_proxy_lines_above_them() {
        let c = prof(
            "proto tcp\n<connection>\nremote a 443\n</connection>\n\
             http-proxy p 3128\n\
             <connection>\nremote b 443\nhttp-proxy-option AGENT X\n</connection>\n\
             <connection>\nremote c 443\nsocks-proxy s 1081\n</connection>\n",
        )
        .unwrap_err();
        // The third block has the profile's http-proxy and its own socks-proxy.
        assert!(c.to_string().contains("cannot both be used"), "{c}");
        let c = prof(
            "proto tcp\n<connection>\nremote a 443\n</connection>\n\
             http-proxy p 3128\n\
             <connection>\nremote b 443\nhttp-proxy-option AGENT X\nhttp-proxy-retry\n</connection>\n\
             <connection>\nremote c 1194 udp\nsocks-proxy-retry\n</connection>\n",
        );
        // An HTTP proxy reaches the UDP block too, as in OpenVPN.
        assert!(c.unwrap_err().to_string().contains("remote c uses UDP"));
        let c = prof(
            "proto tcp\n<connection>\nremote a 443\n</connection>\n\
             http-proxy p 3128\n\
             <connection>\nremote b 443\nhttp-proxy-option AGENT X\n</connection>\n",
        )
        .unwrap();
        let hosts: Vec<_> = c.remotes.iter().map(|r| r.host.as_str()).collect();
        assert_eq!(hosts, ["vpn.example", "a", "b"]);
        assert!(c.remotes[1].proxy.is_none(), "a block above the proxy line");
        assert_eq!(http_of(&c, 0).agent, None);
        assert_eq!(http_of(&c, 2).agent.as_deref(), Some("X"));
    }

    #[test]
    fn socks_proxy_options() {
        let c = prof("socks-proxy 127.0.0.1\n").unwrap();
        assert_eq!(
            c.remotes[0].proxy,
            Some(Proxy::Socks(SocksProxy {
                host: "127.0.0.1".into(),
                port: 1080,
                credentials: None
            }))
        );
        // UDP through SOCKS goes over IPv4 (as OpenVPN 2.6 forces it), with a notice.
        assert_eq!(c.remotes[0].family, Family::V4);
        assert!(
            c.notices.iter().any(|n| n.contains("IPv4")),
            "{:?}",
            c.notices
        );
        let c = prof("proto tcp6\nsocks-proxy s 9150 proxy-auth.txt\n").unwrap();
        let Some(Proxy::Socks(p)) = &c.remotes[0].proxy else {
            panic!()
        };
        assert_eq!(p.credentials, Some(("puser".into(), "ppass".into())));
        assert_eq!(c.remotes[0].family, Family::V6);
    }

    #[test]
    fn passtos_and_inactive() {
        let c = prof("passtos\ninactive 120 10000000\n").unwrap();
        assert!(c.passtos);
        assert_eq!(c.inactive, Some((Duration::from_secs(120), 10_000_000)));
        assert_eq!(
            prof("inactive 30\n").unwrap().inactive,
            Some((Duration::from_secs(30), 0))
        );
        assert_eq!(prof("inactive 0\n").unwrap().inactive, None);
        assert!(prof("inactive x\n").is_err());
    }
}
