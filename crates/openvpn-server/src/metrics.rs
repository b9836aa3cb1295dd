//! Prometheus metrics (`metrics-listen IP:PORT`, ours): `GET /metrics` in the text exposition
//! format, served by a tiny HTTP/1.0 responder on plain tokio TCP.
//!
//! ```text
//!  scraper ─▶ TCP accept ─▶ read request head ─▶ CoreRequest::Metrics ─▶ runtime loop ─▶ render(core)
//! ```

use std::fmt::Write as _;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::core::{ServerCore, ServerStats};
use crate::management::{CoreRequest, Request};

/// Escapes a label value.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Name, type, help and accessor of a per-client metric.
type PerClient = (
    &'static str,
    &'static str,
    &'static str,
    fn(&openvpn_control::dataplane::DataStats) -> u64,
);

fn family(s: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(s, "# HELP {name} {help}");
    let _ = writeln!(s, "# TYPE {name} {kind}");
}

/// One connected client's figures (owned, so that workers can hand them over).
#[derive(Clone, Debug)]
pub struct ClientSample {
    common_name: String,
    peer_id: u32,
    since: std::time::SystemTime,
    data: openvpn_control::dataplane::DataStats,
}

/// A core's counters and connected clients.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    stats: ServerStats,
    clients: Vec<ClientSample>,
}

impl Sample {
    /// What `core` has to show.
    pub fn of(core: &ServerCore) -> Sample {
        Sample {
            stats: core.stats(),
            clients: core
                .clients()
                .filter(|c| c.established)
                .map(|c| ClientSample {
                    common_name: c.common_name.clone().unwrap_or_else(|| "UNDEF".into()),
                    peer_id: c.wire_peer_id,
                    since: c.since,
                    data: c.data_stats(),
                })
                .collect(),
        }
    }

    /// Adds another worker's sample (counters summed, clients appended).
    pub fn merge(mut self, other: Sample) -> Sample {
        let (a, b) = (&mut self.stats, other.stats);
        a.unknown_peer += b.unknown_peer;
        a.bad_data += b.bad_data;
        a.no_route += b.no_route;
        a.spoofed_source += b.spoofed_source;
        a.gate_drops += b.gate_drops;
        a.gate_replies += b.gate_replies;
        a.handshakes += b.handshakes;
        a.floats += b.floats;
        a.auth_failures += b.auth_failures;
        self.clients.extend(other.clients);
        self
    }
}

/// Renders the metrics text of a sample (one core's or every worker's, merged).
pub fn render_sample(sample: &Sample) -> String {
    let st = sample.stats;
    let mut s = String::new();
    for (name, help, v) in [
        (
            "openvpn_server_unknown_peer_packets_total",
            "Data packets with an unknown peer-id or from an unknown address.",
            st.unknown_peer,
        ),
        (
            "openvpn_server_bad_data_packets_total",
            "Data packets that failed authentication or replay checks.",
            st.bad_data,
        ),
        (
            "openvpn_server_no_route_packets_total",
            "Tun packets with no client route.",
            st.no_route,
        ),
        (
            "openvpn_server_spoofed_source_packets_total",
            "Packets from a client with a source address it does not own.",
            st.spoofed_source,
        ),
        (
            "openvpn_server_gate_drops_total",
            "Packets dropped by the cookie gate (or while held).",
            st.gate_drops,
        ),
        (
            "openvpn_server_gate_replies_total",
            "Stateless cookie replies sent.",
            st.gate_replies,
        ),
        (
            "openvpn_server_handshakes_total",
            "Handshakes completed (clients connected).",
            st.handshakes,
        ),
        (
            "openvpn_server_floats_total",
            "Client address changes accepted.",
            st.floats,
        ),
        (
            "openvpn_server_auth_failures_total",
            "Clients rejected by scripts or the management interface.",
            st.auth_failures,
        ),
    ] {
        family(&mut s, name, "counter", help);
        let _ = writeln!(s, "{name} {v}");
    }
    let clients = &sample.clients;
    family(
        &mut s,
        "openvpn_server_clients_connected",
        "gauge",
        "Clients connected.",
    );
    let _ = writeln!(s, "openvpn_server_clients_connected {}", clients.len());
    let per_client: [PerClient; 4] = [
        (
            "openvpn_client_received_bytes_total",
            "counter",
            "Plaintext bytes received from the client.",
            |d| d.rx_bytes,
        ),
        (
            "openvpn_client_sent_bytes_total",
            "counter",
            "Plaintext bytes sent to the client.",
            |d| d.tx_bytes,
        ),
        (
            "openvpn_client_received_packets_total",
            "counter",
            "Data packets received from the client.",
            |d| d.rx_packets,
        ),
        (
            "openvpn_client_sent_packets_total",
            "counter",
            "Data packets sent to the client.",
            |d| d.tx_packets,
        ),
    ];
    let labels = |c: &ClientSample| {
        format!(
            "common_name=\"{}\",peer_id=\"{}\"",
            escape_label(&c.common_name),
            c.peer_id
        )
    };
    for (name, kind, help, get) in per_client {
        family(&mut s, name, kind, help);
        for c in clients {
            let _ = writeln!(s, "{name}{{{}}} {}", labels(c), get(&c.data));
        }
    }
    family(
        &mut s,
        "openvpn_client_dropped_packets_total",
        "counter",
        "Data packets from the client dropped, by reason.",
    );
    for c in clients {
        let d = c.data;
        for (reason, v) in [
            ("no_key", d.no_key),
            ("bad_auth", d.bad_auth),
            ("replay", d.replay),
            ("bad_framing", d.bad_framing),
        ] {
            let _ = writeln!(
                s,
                "openvpn_client_dropped_packets_total{{{},reason=\"{reason}\"}} {v}",
                labels(c)
            );
        }
    }
    family(
        &mut s,
        "openvpn_client_connected_since_seconds",
        "gauge",
        "Unix time the client connected.",
    );
    for c in clients {
        let t = c
            .since
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let _ = writeln!(
            s,
            "openvpn_client_connected_since_seconds{{{}}} {t}",
            labels(c)
        );
    }
    s
}

/// Serves `GET /metrics` until the request channel closes.
pub async fn serve(listener: TcpListener, requests: mpsc::Sender<Request>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if requests.is_closed() {
            return;
        }
        let requests = requests.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n")
                    && !head.windows(2).any(|w| w == b"\n\n")
                {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                    if head.len() > 8192 {
                        return;
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let mut first = text.lines().next().unwrap_or("").split_whitespace();
                let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
                let path = path.split('?').next().unwrap_or("");
                let (status, body) = if method != "GET" && method != "HEAD" {
                    ("405 Method Not Allowed", "method not allowed\n".to_owned())
                } else if path == "/metrics" {
                    let (tx, rx) = oneshot::channel();
                    if requests.send((CoreRequest::Metrics, tx)).await.is_err() {
                        return;
                    }
                    match rx.await {
                        Ok(b) => ("200 OK", b),
                        Err(_) => return,
                    }
                } else {
                    ("404 Not Found", "try /metrics\n".to_owned())
                };
                let resp = format!(
                    "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    body.len(),
                    if method == "HEAD" { "" } else { body.as_str() }
                );
                let _ = stream.write_all(resp.as_bytes()).await;
                let _ = stream.shutdown().await;
            })
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_escaping() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
