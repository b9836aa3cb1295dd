//! The load generator behind `ovrs-loadgen` and `cargo xtask load`: many clients of our client
//! library against one OpenVPN server, from one process.
//!
//! Every client is a full [`openvpn_client::connect`] on the caller's tokio runtime: its own UDP
//! socket, TLS handshake, data-channel keys and keepalive, with an in-memory tun
//! ([`MemoryTun`]) instead of a kernel device. [`run`] connects them (at most
//! [`Load::concurrency`] handshakes in flight), pings [`Load::target`] through every tunnel,
//! holds them, pings again, and samples the server's memory and CPU from `/proc` when given its
//! pid.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openvpn_client::{ClientConfig, Command, MemoryTunBuilder, VpnEvent};
use openvpn_tun::{MemoryTun, MemoryTunHandle};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// What to run.
#[derive(Debug, Clone)]
pub struct Load {
    /// Concurrent clients.
    pub clients: usize,
    /// Handshakes in flight at most.
    pub concurrency: usize,
    /// The address every client pings through its tunnel (the server's tunnel address).
    pub target: Ipv4Addr,
    /// The server process to sample (`/proc/PID`), if it runs on this machine.
    pub server_pid: Option<u32>,
    /// How long the clients are held between the two ping rounds.
    pub hold: Duration,
    /// How long one client may take to connect.
    pub timeout: Duration,
    /// Pause between the connect phase and the first ping round.
    pub settle: Duration,
}

impl Default for Load {
    fn default() -> Self {
        Load {
            clients: 100,
            concurrency: 50,
            target: Ipv4Addr::new(10, 8, 0, 1),
            server_pid: None,
            hold: Duration::from_secs(15),
            timeout: Duration::from_secs(120),
            settle: Duration::from_secs(2),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Clients that reached `Connected`.
    pub connected: usize,
    /// Clients whose ping was answered in round 1 (after connect).
    pub ping1_ok: usize,
    /// Clients whose ping was answered in round 2 (after the hold).
    pub ping2_ok: usize,
    /// `Reconnecting` events over all clients.
    pub reconnects: u64,
    /// Every number as a flat JSON object (what `cargo xtask load` reads).
    pub json: String,
}

/// Resident memory and CPU time of a process at one moment.
#[derive(Debug, Clone, Default)]
struct Sample {
    /// `VmRSS`, KiB.
    rss_kib: u64,
    /// `VmHWM` (peak RSS so far), KiB.
    hwm_kib: u64,
    /// utime + stime of all threads (also exited ones), seconds; clock-tick resolution.
    cpu_s: f64,
    /// Run time of each live thread (`/proc/PID/task/TID/schedstat`), nanoseconds.
    threads: Vec<(u32, u64)>,
}

impl Sample {
    /// CPU seconds from `self` to `later`: nanosecond thread run times when no thread of
    /// `self` has exited meanwhile (its time would be lost), else the clock ticks.
    fn cpu_until(&self, later: &Sample) -> f64 {
        let all_alive = self
            .threads
            .iter()
            .all(|(tid, _)| later.threads.iter().any(|(t, _)| t == tid));
        if all_alive && !later.threads.is_empty() {
            let before: u64 = self.threads.iter().map(|t| t.1).sum();
            let after: u64 = later.threads.iter().map(|t| t.1).sum();
            after.saturating_sub(before) as f64 / 1e9
        } else {
            later.cpu_s - self.cpu_s
        }
    }
}

/// Reads `/proc/<pid>/status`, `stat` and `task/*/schedstat` (`pid` may be `self`); zeros
/// if the process is gone.
fn sample(pid: &str, clk_tck: f64) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // after "comm)" the fields start at 3 (state); utime and stime are 14 and 15
            let rest = stat.rsplit_once(") ")?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
            Some(get(11)? + get(12)?)
        })
        .unwrap_or(0);
    let mut threads = Vec::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for e in dir.flatten() {
            let Some(tid) = e.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let ns = std::fs::read_to_string(e.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok());
            if let Some(ns) = ns {
                threads.push((tid, ns));
            }
        }
    }
    Sample {
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
        cpu_s: ticks as f64 / clk_tck,
        threads,
    }
}

/// `getconf CLK_TCK` (100 if that fails).
fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// RFC 1071 Internet checksum.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let word = u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 ICMP echo request with valid header and ICMP checksums (the kernel checks both).
fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16) -> Vec<u8> {
    const PAYLOAD: &[u8; 16] = b"ovrs-loadgen-png";
    let total = 20 + 8 + PAYLOAD.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[8] = 64; // TTL
    p[9] = 1; // ICMP
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20] = 8; // echo request
    p[24..26].copy_from_slice(&id.to_be_bytes());
    p[26..28].copy_from_slice(&seq.to_be_bytes());
    p[28..].copy_from_slice(PAYLOAD);
    let c = checksum(&p[20..]);
    p[22..24].copy_from_slice(&c.to_be_bytes());
    p
}

/// Whether `pkt` is the echo reply from `from` to `(id, seq)`.
fn is_echo_reply(pkt: &[u8], from: Ipv4Addr, id: u16, seq: u16) -> bool {
    if pkt.len() < 28 || pkt[0] >> 4 != 4 || pkt[9] != 1 {
        return false;
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let Some(icmp) = pkt.get(ihl..ihl + 8) else {
        return false;
    };
    pkt[12..16] == from.octets()
        && icmp[0] == 0
        && icmp[4..6] == id.to_be_bytes()
        && icmp[6..8] == seq.to_be_bytes()
}

/// A request to one running client.
enum Cmd {
    /// Ping the target through the tunnel; the answer is the RTT (None: no reply).
    Ping {
        seq: u16,
        reply: oneshot::Sender<Option<Duration>>,
    },
}

/// How one client's connect ended.
struct Connected {
    index: usize,
    /// Time from start to `Connected`, or why it failed.
    result: Result<Duration, String>,
}

/// What all clients share.
struct Common {
    cfg: ClientConfig,
    target: Ipv4Addr,
    timeout: Duration,
    done: mpsc::UnboundedSender<Connected>,
    reconnects: AtomicU64,
}

/// One client: connect, report, then answer ping commands until `cmds` closes.
async fn client(
    index: usize,
    common: Arc<Common>,
    permit: tokio::sync::OwnedSemaphorePermit,
    mut cmds: mpsc::Receiver<Cmd>,
) {
    let (target, timeout, done) = (common.target, common.timeout, &common.done);
    let (tun, mut app) = MemoryTun::pair(8);
    let mut handle = openvpn_client::connect(common.cfg.clone(), MemoryTunBuilder::new(tun));
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let addr = loop {
        match tokio::time::timeout_at(deadline, handle.events.recv()).await {
            Err(_) => break Err(format!("not connected after {} s", timeout.as_secs())),
            Ok(None) => break Err("client stopped".to_owned()),
            Ok(Some(VpnEvent::Connected { settings, .. })) => match settings.ipv4 {
                Some((a, _)) => break Ok(a),
                None => break Err("connected without an IPv4 address".to_owned()),
            },
            Ok(Some(VpnEvent::AuthFailed { reason })) => {
                break Err(format!("AUTH_FAILED {reason}"));
            }
            Ok(Some(VpnEvent::Reconnecting { .. })) => {
                common.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some(_)) => {}
        }
    };
    drop(permit);
    let elapsed = started.elapsed();
    let addr = match addr {
        Ok(a) => {
            let _ = done.send(Connected {
                index,
                result: Ok(elapsed),
            });
            a
        }
        Err(e) => {
            let _ = done.send(Connected {
                index,
                result: Err(e),
            });
            handle.command(Command::Disconnect);
            return;
        }
    };
    let id = (index & 0xffff) as u16;
    loop {
        tokio::select! {
            ev = handle.events.recv() => match ev {
                None => break,
                Some(VpnEvent::Reconnecting { .. }) => {
                    common.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                Some(_) => {}
            },
            cmd = cmds.recv() => match cmd {
                None => break,
                Some(Cmd::Ping { seq, reply }) => {
                    let _ = reply.send(ping(&mut app, addr, target, id, seq).await);
                }
            },
        }
    }
    handle.command(Command::Disconnect);
    let _ = tokio::time::timeout(Duration::from_secs(2), handle.wait()).await;
}

/// One echo through the tunnel; the RTT, or None after 2 s without the reply.
async fn ping(
    app: &mut MemoryTunHandle,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    id: u16,
    seq: u16,
) -> Option<Duration> {
    // stale replies of an earlier try
    while app.try_written().is_some() {}
    let sent = Instant::now();
    app.inject(icmp_echo(src, dst, id, seq)).await.ok()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let pkt = tokio::time::timeout_at(deadline, app.written())
            .await
            .ok()??;
        if is_echo_reply(&pkt, dst, id, seq) {
            return Some(sent.elapsed());
        }
    }
}

/// Result of one ping round.
#[derive(Debug, Default)]
struct PingRound {
    ok: usize,
    ok_first_try: usize,
    rtts_ms: Vec<f64>,
    seconds: f64,
}

/// Every connected client pings the target (64 at a time), up to 3 tries each.
async fn ping_round(clients: &[mpsc::Sender<Cmd>], round: u16) -> PingRound {
    let started = Instant::now();
    let sem = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::with_capacity(clients.len());
    for tx in clients {
        let tx = tx.clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.ok()?;
            for attempt in 0..3u16 {
                let (reply, rx) = oneshot::channel();
                let seq = round * 8 + attempt;
                tx.send(Cmd::Ping { seq, reply }).await.ok()?;
                if let Some(rtt) = rx.await.ok().flatten() {
                    return Some((attempt, rtt));
                }
            }
            None
        }));
    }
    let mut r = PingRound::default();
    for t in tasks {
        if let Ok(Some((attempt, rtt))) = t.await {
            r.ok += 1;
            if attempt == 0 {
                r.ok_first_try += 1;
            }
            r.rtts_ms.push(rtt.as_secs_f64() * 1e3);
        }
    }
    r.seconds = started.elapsed().as_secs_f64();
    r
}

fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() - 1) as f64 * p).round() as usize;
    s[i.min(s.len() - 1)]
}

/// A JSON number (NaN/inf as null).
fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.6}")
    } else {
        "null".into()
    }
}

/// Runs the load: connect, ping, hold, ping; the clients are stopped when it returns.
pub async fn run(args: &Load, cfg: ClientConfig) -> Outcome {
    let clk = clk_tck();
    let server_pid = args.server_pid.map(|p| p.to_string());
    let server = |clk| {
        server_pid
            .as_deref()
            .map_or_else(Sample::default, |p| sample(p, clk))
    };
    let n = args.clients;
    let s0 = server(clk);
    let g0 = sample("self", clk);
    eprintln!(
        "loadgen: {n} clients, {} handshakes in flight at most; server RSS {} KiB",
        args.concurrency, s0.rss_kib
    );

    // Connect phase.
    let sem = Arc::new(Semaphore::new(args.concurrency));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let common = Arc::new(Common {
        cfg,
        target: args.target,
        timeout: args.timeout,
        done: done_tx,
        reconnects: AtomicU64::new(0),
    });
    let mut senders: Vec<Option<mpsc::Sender<Cmd>>> = Vec::with_capacity(n);
    let t0 = Instant::now();
    let mut results: Vec<Option<Result<Duration, String>>> = vec![None; n];
    let mut reported = 0usize;
    let mut connected = 0usize;
    let mut last_connected = t0;
    let mut last_progress = t0;
    let mut record = |c: Connected,
                      reported: &mut usize,
                      connected: &mut usize,
                      last_connected: &mut Instant| {
        *reported += 1;
        if c.result.is_ok() {
            *connected += 1;
            *last_connected = Instant::now();
        }
        results[c.index] = Some(c.result);
    };
    let mut started = 0usize;
    for index in 0..n {
        // A server that answers nobody: stop after one full window of failures instead of
        // timing out every client in turn.
        if connected == 0 && reported >= args.concurrency.min(n) {
            eprintln!("loadgen: the first {reported} clients all failed; not starting the rest");
            break;
        }
        // Start the next client once a handshake slot is free; collect finished ones meanwhile.
        let permit = loop {
            tokio::select! {
                p = sem.clone().acquire_owned() => break p.ok(),
                Some(c) = done_rx.recv() => {
                    record(c, &mut reported, &mut connected, &mut last_connected);
                }
            }
        };
        let Some(permit) = permit else {
            break; // the semaphore is never closed
        };
        let (tx, rx) = mpsc::channel(1);
        senders.push(Some(tx));
        tokio::spawn(client(index, common.clone(), permit, rx));
        started += 1;
        if last_progress.elapsed() >= Duration::from_secs(2) {
            last_progress = Instant::now();
            eprintln!(
                "loadgen: {:.1} s: started {}, connected {connected}, failed {}",
                t0.elapsed().as_secs_f64(),
                index + 1,
                reported - connected
            );
        }
    }
    while reported < started {
        let Some(c) = done_rx.recv().await else { break };
        record(c, &mut reported, &mut connected, &mut last_connected);
    }
    let s1 = server(clk);
    let g1 = sample("self", clk);
    let connect_s = last_connected.duration_since(t0).as_secs_f64();
    let failed: Vec<String> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Some(Err(e)) => Some(format!("client {i}: {e}")),
            None => Some(format!("client {i}: not started")),
            Some(Ok(_)) => None,
        })
        .collect();
    let hs_ms: Vec<f64> = results
        .iter()
        .filter_map(|r| r.as_ref()?.as_ref().ok())
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    eprintln!(
        "loadgen: connected {connected}/{n} in {connect_s:.2} s ({:.1} handshakes/s); \
         server RSS {} KiB (+{} KiB), server CPU {:.2} s, loadgen CPU {:.2} s",
        connected as f64 / connect_s,
        s1.rss_kib,
        s1.rss_kib.saturating_sub(s0.rss_kib),
        s0.cpu_until(&s1),
        g0.cpu_until(&g1)
    );
    for f in failed.iter().take(5) {
        eprintln!("loadgen: {f}");
    }
    let live: Vec<mpsc::Sender<Cmd>> = senders
        .iter()
        .zip(&results)
        .filter(|(_, r)| matches!(r, Some(Ok(_))))
        .filter_map(|(s, _)| s.clone())
        .collect();
    // Failed clients have stopped; drop their senders.
    senders.clear();

    tokio::time::sleep(args.settle).await;
    let s_settled = server(clk);
    let p1 = ping_round(&live, 1).await;
    eprintln!(
        "loadgen: ping round 1: {}/{} replied ({} on the first try) in {:.2} s, median RTT {:.2} ms",
        p1.ok,
        live.len(),
        p1.ok_first_try,
        p1.seconds,
        percentile(&p1.rtts_ms, 0.5)
    );
    eprintln!("loadgen: holding {} s", args.hold.as_secs());
    let s_before_hold = server(clk);
    tokio::time::sleep(args.hold).await;
    let s_after_hold = server(clk);
    let p2 = ping_round(&live, 2).await;
    let s2 = server(clk);
    let g2 = sample("self", clk);
    eprintln!(
        "loadgen: ping round 2 (after the hold): {}/{} replied; server RSS {} KiB; \
         reconnects {}",
        p2.ok,
        live.len(),
        s2.rss_kib,
        common.reconnects.load(Ordering::Relaxed)
    );

    let mut j = String::from("{\n");
    let mut field = |k: &str, v: String| {
        let _ = writeln!(j, "  \"{k}\": {v},");
    };
    field("clients", n.to_string());
    field("concurrency", args.concurrency.to_string());
    field("connected", connected.to_string());
    field("failed", (n - connected).to_string());
    field("connect_seconds", num(connect_s));
    field("handshakes_per_s", num(connected as f64 / connect_s));
    field("handshake_ms_p50", num(percentile(&hs_ms, 0.5)));
    field("handshake_ms_p95", num(percentile(&hs_ms, 0.95)));
    field("handshake_ms_max", num(percentile(&hs_ms, 1.0)));
    field("server_rss_kib_before", s0.rss_kib.to_string());
    field("server_rss_kib_connected", s1.rss_kib.to_string());
    field("server_rss_kib_settled", s_settled.rss_kib.to_string());
    field("server_rss_kib_after_hold", s2.rss_kib.to_string());
    field("server_rss_kib_peak", s2.hwm_kib.to_string());
    field("server_cpu_s_connect", num(s0.cpu_until(&s1)));
    field(
        "server_cpu_s_hold",
        num(s_before_hold.cpu_until(&s_after_hold)),
    );
    field("hold_seconds", args.hold.as_secs().to_string());
    field("loadgen_cpu_s_connect", num(g0.cpu_until(&g1)));
    field("loadgen_cpu_s_total", num(g0.cpu_until(&g2)));
    field("loadgen_rss_kib", g2.rss_kib.to_string());
    field("ping1_ok", p1.ok.to_string());
    field("ping1_ok_first_try", p1.ok_first_try.to_string());
    field("ping1_rtt_ms_p50", num(percentile(&p1.rtts_ms, 0.5)));
    field("ping1_rtt_ms_p95", num(percentile(&p1.rtts_ms, 0.95)));
    field("ping2_ok", p2.ok.to_string());
    field("ping2_ok_first_try", p2.ok_first_try.to_string());
    field(
        "reconnects",
        common.reconnects.load(Ordering::Relaxed).to_string(),
    );
    let errs: Vec<String> = failed
        .iter()
        .take(10)
        .map(|e| format!("\"{}\"", e.replace(['"', '\\'], "'")))
        .collect();
    let _ = writeln!(j, "  \"errors\": [{}]\n}}", errs.join(", "));
    drop(live);
    tokio::time::sleep(Duration::from_millis(500)).await;
    Outcome {
        connected,
        ping1_ok: p1.ok,
        ping2_ok: p2.ok,
        reconnects: common.reconnects.load(Ordering::Relaxed),
        json: j,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_checksums_verify() {
        let p = icmp_echo(Ipv4Addr::new(10, 8, 0, 2), Ipv4Addr::new(10, 8, 0, 1), 7, 3);
        assert_eq!(checksum(&p[..20]), 0, "IPv4 header checksum");
        assert_eq!(checksum(&p[20..]), 0, "ICMP checksum");
        // the reply: swap addresses, type 0
        let mut r = p.clone();
        r[12..16].copy_from_slice(&[10, 8, 0, 1]);
        r[16..20].copy_from_slice(&[10, 8, 0, 2]);
        r[20] = 0;
        assert!(is_echo_reply(&r, Ipv4Addr::new(10, 8, 0, 1), 7, 3));
        assert!(!is_echo_reply(&r, Ipv4Addr::new(10, 8, 0, 1), 7, 4));
        assert!(!is_echo_reply(&p, Ipv4Addr::new(10, 8, 0, 1), 7, 3));
        assert!(!is_echo_reply(&r[..20], Ipv4Addr::new(10, 8, 0, 1), 7, 3));
    }

    #[test]
    fn cpu_from_threads_unless_one_exited() {
        let at = |cpu_s, threads: &[(u32, u64)]| Sample {
            cpu_s,
            threads: threads.to_vec(),
            ..Sample::default()
        };
        let a = at(1.0, &[(1, 1_000_000_000), (2, 500_000_000)]);
        let b = at(
            1.5,
            &[(1, 1_200_000_000), (2, 600_000_000), (3, 100_000_000)],
        );
        assert!((a.cpu_until(&b) - 0.4).abs() < 1e-9);
        let gone = at(1.5, &[(1, 1_200_000_000)]);
        assert!((a.cpu_until(&gone) - 0.5).abs() < 1e-9);
        let me = sample("self", clk_tck());
        assert!(me.rss_kib > 0 && !me.threads.is_empty());
    }
}
