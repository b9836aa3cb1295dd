//! The `status` file in OpenVPN's formats (version 1, 2 and 3), so existing exporters and
//! monitors can read it.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::core::ServerCore;

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC (OpenVPN prints local time; servers usually run in UTC).
pub fn format_time(t: SystemTime) -> String {
    let secs = unix(t);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One connected client as the status file shows it (owned, so that workers can hand
/// their rows to the one writing the file).
#[derive(Clone, Debug)]
pub struct ClientRow {
    common_name: String,
    real_address: String,
    v4: Option<String>,
    v6: Option<String>,
    rx_bytes: u64,
    tx_bytes: u64,
    since: SystemTime,
    username: String,
    cid: u64,
    peer_id: u32,
    cipher: &'static str,
    last_ref: SystemTime,
}

/// The rows of `core`'s connected clients.
pub fn rows(core: &ServerCore) -> Vec<ClientRow> {
    core.clients()
        .filter(|c| c.established)
        .map(|c| {
            let (rx_bytes, tx_bytes) = c.link_bytes();
            let leased = c.lease.is_some();
            ClientRow {
                common_name: c.common_name.clone().unwrap_or_else(|| "UNDEF".into()),
                real_address: c.addr.to_string(),
                v4: c.v4().filter(|_| leased).map(|a| a.to_string()),
                v6: c.v6().filter(|_| leased).map(|a| a.to_string()),
                rx_bytes,
                tx_bytes,
                since: c.since,
                username: c.username.clone().unwrap_or_else(|| "UNDEF".into()),
                cid: c.cid(),
                peer_id: c.wire_peer_id,
                cipher: c.cipher_name(),
                last_ref: c.last_ref,
            }
        })
        .collect()
}

/// Renders the status text from client rows (of one core or of every worker).
pub fn render_rows(version: u8, rows: &[ClientRow]) -> String {
    let now = SystemTime::now();
    let mut s = String::new();
    let title = format!("openvpn-rs {} (openvpn-server)", env!("CARGO_PKG_VERSION"));
    if version == 1 {
        let _ = writeln!(s, "OpenVPN CLIENT LIST");
        let _ = writeln!(s, "Updated,{}", format_time(now));
        let _ = writeln!(
            s,
            "Common Name,Real Address,Bytes Received,Bytes Sent,Connected Since"
        );
        for c in rows {
            let _ = writeln!(
                s,
                "{},{},{},{},{}",
                c.common_name,
                c.real_address,
                c.rx_bytes,
                c.tx_bytes,
                format_time(c.since)
            );
        }
        let _ = writeln!(s, "ROUTING TABLE");
        let _ = writeln!(s, "Virtual Address,Common Name,Real Address,Last Ref");
        for c in rows {
            for a in c.v4.iter().chain(&c.v6) {
                let _ = writeln!(
                    s,
                    "{a},{},{},{}",
                    c.common_name,
                    c.real_address,
                    format_time(c.last_ref)
                );
            }
        }
        let _ = writeln!(s, "GLOBAL STATS");
        let _ = writeln!(s, "Max bcast/mcast queue length,0");
        let _ = writeln!(s, "END");
        return s;
    }
    let sep = if version == 3 { '\t' } else { ',' };
    let line = |s: &mut String, fields: &[String]| {
        let _ = writeln!(s, "{}", fields.join(&sep.to_string()));
    };
    line(&mut s, &["TITLE".into(), title]);
    line(
        &mut s,
        &["TIME".into(), format_time(now), unix(now).to_string()],
    );
    line(
        &mut s,
        &[
            "HEADER",
            "CLIENT_LIST",
            "Common Name",
            "Real Address",
            "Virtual Address",
            "Virtual IPv6 Address",
            "Bytes Received",
            "Bytes Sent",
            "Connected Since",
            "Connected Since (time_t)",
            "Username",
            "Client ID",
            "Peer ID",
            "Data Channel Cipher",
        ]
        .map(String::from),
    );
    for c in rows {
        line(
            &mut s,
            &[
                "CLIENT_LIST".into(),
                c.common_name.clone(),
                c.real_address.clone(),
                c.v4.clone().unwrap_or_default(),
                c.v6.clone().unwrap_or_default(),
                c.rx_bytes.to_string(),
                c.tx_bytes.to_string(),
                format_time(c.since),
                unix(c.since).to_string(),
                c.username.clone(),
                // The CID that client-kill / client-auth take (tools read it from here).
                c.cid.to_string(),
                c.peer_id.to_string(),
                c.cipher.to_string(),
            ],
        );
    }
    line(
        &mut s,
        &[
            "HEADER",
            "ROUTING_TABLE",
            "Virtual Address",
            "Common Name",
            "Real Address",
            "Last Ref",
            "Last Ref (time_t)",
        ]
        .map(String::from),
    );
    for c in rows {
        for a in c.v4.iter().chain(&c.v6) {
            line(
                &mut s,
                &[
                    "ROUTING_TABLE".into(),
                    a.clone(),
                    c.common_name.clone(),
                    c.real_address.clone(),
                    format_time(c.last_ref),
                    unix(c.last_ref).to_string(),
                ],
            );
        }
    }
    line(
        &mut s,
        &[
            "GLOBAL_STATS".into(),
            "Max bcast/mcast queue length".into(),
            "0".into(),
        ],
    );
    line(
        &mut s,
        &["GLOBAL_STATS".into(), "dco_enabled".into(), "0".into()],
    );
    line(&mut s, &["END".into()]);
    s
}

/// Writes status text atomically (through a temporary file).
pub fn write_text(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp-ovrs");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format() {
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01 00:00:00");
        assert_eq!(
            format_time(UNIX_EPOCH + std::time::Duration::from_secs(1_764_082_800)),
            "2025-11-25 15:00:00"
        );
    }
}
