//! Control-channel text messages (`PUSH_REQUEST`, `AUTH_FAILED`, `RESTART`, …).

/// A parsed control-channel message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage<'a> {
    /// `PUSH_REQUEST`.
    PushRequest,
    /// `PUSH_REPLY[,…]` — the whole message, for [`crate::options::parse_push_reply`].
    PushReply(&'a str),
    /// `AUTH_FAILED[,reason]`.
    AuthFailed(Option<&'a str>),
    /// `AUTH_PENDING[,timeout N]`.
    AuthPending(Option<u32>),
    /// `INFO_PRE,…`.
    InfoPre(&'a str),
    /// `INFO,…`.
    Info(&'a str),
    /// `CR_RESPONSE,base64`.
    CrResponse(&'a str),
    /// `RESTART[,[flags]text]`.
    Restart {
        /// `P`: keep the cached credentials.
        keep_credentials: bool,
        /// `N`: advance to the next server.
        next_server: bool,
        /// Text for the user.
        text: Option<&'a str>,
    },
    /// `HALT[,text]`.
    Halt(Option<&'a str>),
    /// `EXIT`.
    Exit,
    /// Anything else (logged and ignored).
    Unknown(&'a str),
}

fn after_comma<'a>(msg: &'a str, prefix: &str) -> Option<Option<&'a str>> {
    let rest = msg.strip_prefix(prefix)?;
    if rest.is_empty() {
        return Some(None);
    }
    rest.strip_prefix(',').map(Some)
}

impl<'a> ControlMessage<'a> {
    /// Parses one message (without its NUL terminator). Prefixes are tested longest first
    /// (`INFO_PRE` before `INFO`).
    pub fn parse(msg: &'a str) -> Self {
        if msg == "PUSH_REQUEST" {
            return ControlMessage::PushRequest;
        }
        if msg.starts_with("PUSH_REPLY") {
            return ControlMessage::PushReply(msg);
        }
        if let Some(r) = after_comma(msg, "AUTH_FAILED") {
            return ControlMessage::AuthFailed(r);
        }
        if let Some(r) = after_comma(msg, "AUTH_PENDING") {
            let t = r
                .and_then(|s| s.trim().strip_prefix("timeout"))
                .and_then(|s| s.trim().parse().ok());
            return ControlMessage::AuthPending(t);
        }
        if let Some(Some(r)) = after_comma(msg, "INFO_PRE") {
            return ControlMessage::InfoPre(r);
        }
        if let Some(Some(r)) = after_comma(msg, "INFO") {
            return ControlMessage::Info(r);
        }
        if let Some(Some(r)) = after_comma(msg, "CR_RESPONSE") {
            return ControlMessage::CrResponse(r);
        }
        if let Some(r) = after_comma(msg, "RESTART") {
            let (mut keep, mut next, mut text) = (false, false, r);
            if let Some(t) = r.and_then(|t| t.strip_prefix('[')) {
                if let Some((flags, rest)) = t.split_once(']') {
                    keep = flags.contains('P');
                    next = flags.contains('N');
                    text = Some(rest).filter(|s| !s.is_empty());
                }
            }
            return ControlMessage::Restart {
                keep_credentials: keep,
                next_server: next,
                text,
            };
        }
        if let Some(r) = after_comma(msg, "HALT") {
            return ControlMessage::Halt(r);
        }
        if msg == "EXIT" {
            return ControlMessage::Exit;
        }
        ControlMessage::Unknown(msg)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_catalogue() {
        assert_eq!(
            ControlMessage::parse("PUSH_REQUEST"),
            ControlMessage::PushRequest
        );
        assert_eq!(
            ControlMessage::parse("AUTH_FAILED"),
            ControlMessage::AuthFailed(None)
        );
        assert_eq!(
            ControlMessage::parse("AUTH_FAILED,bad pw"),
            ControlMessage::AuthFailed(Some("bad pw"))
        );
        assert_eq!(
            ControlMessage::parse("AUTH_PENDING,timeout 60"),
            ControlMessage::AuthPending(Some(60))
        );
        assert_eq!(
            ControlMessage::parse("INFO_PRE,WEB_AUTH::x"),
            ControlMessage::InfoPre("WEB_AUTH::x")
        );
        assert_eq!(
            ControlMessage::parse("INFO,hello"),
            ControlMessage::Info("hello")
        );
        assert_eq!(
            ControlMessage::parse("RESTART,[PN]bye"),
            ControlMessage::Restart {
                keep_credentials: true,
                next_server: true,
                text: Some("bye")
            }
        );
        assert_eq!(
            ControlMessage::parse("RESTART"),
            ControlMessage::Restart {
                keep_credentials: false,
                next_server: false,
                text: None
            }
        );
        assert_eq!(
            ControlMessage::parse("HALT,stop"),
            ControlMessage::Halt(Some("stop"))
        );
        assert_eq!(ControlMessage::parse("EXIT"), ControlMessage::Exit);
        assert_eq!(
            ControlMessage::parse("AUTH_FAILEDX"),
            ControlMessage::Unknown("AUTH_FAILEDX")
        );
        assert!(matches!(
            ControlMessage::parse("PUSH_REPLY,ping 10"),
            ControlMessage::PushReply(_)
        ));
    }
}
