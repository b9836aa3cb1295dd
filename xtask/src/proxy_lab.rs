//! The proxy cases ([`Scenario::Proxy`]): a small HTTP `CONNECT` / SOCKS5 proxy (Python) in
//! ovrs-srv at 10.77.0.1 is the only way to the server. The client's remote is a name nobody
//! resolves (`vpn.proxied`, TCP: the proxy gets the name) or an address nobody answers
//! (10.77.0.3, UDP: the relay header carries it); the proxy sends both to 10.77.0.1:1194.
//! It requires username/password (`Proxy-Authorization: Basic`, RFC 1929) and logs each
//! tunnel. Real against real proves the proxy script; then our client.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};

use super::{Bg, CaseDir, Role, SERVER_NS, SPARE_ADDR};
use crate::cases::{Case, Proto, ProxyKind, Scenario};

/// The remote of a TCP proxy case (never resolved by the client).
pub(super) const PROXIED_NAME: &str = "vpn.proxied";
const PROXY_ADDR: &str = "10.77.0.1";
const LOG: &str = "proxy.log";

/// The remote the client's profile names.
pub(super) fn remote(case: &Case) -> Option<&'static str> {
    match (case.scenario, case.proto) {
        (Scenario::Proxy(_), Proto::Udp) => Some(SPARE_ADDR),
        (Scenario::Proxy(_), _) => Some(PROXIED_NAME),
        _ => None,
    }
}

/// The client's proxy lines (and the authfile they name, written into `dir`).
pub(super) fn extra(kind: ProxyKind, role: Role, dir: &Path) -> Result<Vec<String>> {
    if role == Role::Server {
        return Ok(Vec::new());
    }
    let auth = dir.join("proxy-auth.txt");
    fs::write(&auth, "puser\nppass\n")?;
    Ok(vec![match kind {
        ProxyKind::Http => format!("http-proxy {PROXY_ADDR} 3128 {} basic", auth.display()),
        ProxyKind::Socks => format!("socks-proxy {PROXY_ADDR} 1080 {}", auth.display()),
    }])
}

/// Starts the proxy in ovrs-srv and waits until it listens; stopped when dropped.
pub(super) fn before_client(case: &Case, cd: &CaseDir) -> Result<Option<Bg>> {
    let Scenario::Proxy(kind) = case.scenario else {
        return Ok(None);
    };
    let py = cd.dir.join("proxy.py");
    fs::write(&py, PROXY)?;
    let log = cd.dir.join(LOG);
    let (mode, port) = match kind {
        ProxyKind::Http => ("http", "3128"),
        ProxyKind::Socks => ("socks", "1080"),
    };
    let target = remote(case).unwrap_or(PROXIED_NAME);
    let bg = Bg::start(
        Command::new("ip")
            .args(["netns", "exec", SERVER_NS, "python3"])
            .arg(&py)
            .args([
                mode,
                PROXY_ADDR,
                port,
                target,
                &format!("{PROXY_ADDR}:1194"),
            ])
            .arg(&log),
        &cd.dir.join("proxy.out"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("LISTENING")
    {
        if Instant::now() >= deadline {
            bail!(
                "the lab proxy did not start: {}",
                fs::read_to_string(cd.dir.join("proxy.out")).unwrap_or_default()
            );
        }
        sleep(Duration::from_millis(50));
    }
    Ok(Some(bg))
}

/// After the pings: the proxy carried the tunnel and refused nothing.
pub(super) fn check(cd: &CaseDir) -> Result<()> {
    let log = fs::read_to_string(cd.dir.join(LOG)).unwrap_or_default();
    println!("interop: proxy log:\n{}", log.trim_end());
    ensure!(
        log.contains("TUNNEL") || log.contains("UDP first datagram"),
        "the proxy carried no tunnel:\n{log}"
    );
    ensure!(
        !log.contains("REFUSED") && !log.contains("BAD-"),
        "the proxy refused a request:\n{log}"
    );
    Ok(())
}

/// `proxy.py http|socks LISTEN_ADDR PORT TARGET UPSTREAM_ADDR:PORT LOG`.
const PROXY: &str = r#"import base64, select, socket, sys, threading
mode, host, port, name, upstream, log = sys.argv[1:7]
up_host, up_port = upstream.rsplit(":", 1)
up = (up_host, int(up_port))
out = open(log, "a", buffering=1)
def say(s): out.write(s + "\n")
AUTH = "Basic " + base64.b64encode(b"puser:ppass").decode()

def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d: break
            b.sendall(d)
    except OSError: pass
    for s in (a, b):
        try: s.shutdown(socket.SHUT_RDWR)
        except OSError: pass

def splice(c):
    u = socket.create_connection(up)
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    pipe(u, c)

def exact(c, n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d: raise EOFError
        b += d
    return b

def http(c):
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        if len(head) > 8192: return
        head += exact(c, 1)
    lines = head.decode("latin-1").split("\r\n")
    if lines[0].split(" ")[:2] != ["CONNECT", name + ":1194"]:
        say("BAD-REQUEST " + lines[0])
        c.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        return
    auth = [l.split(":", 1)[1].strip() for l in lines[1:] if l.lower().startswith("proxy-authorization:")]
    if auth != [AUTH]:
        say("REFUSED 407 (no Basic puser)")
        c.sendall(b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="lab"\r\nContent-Length: 0\r\n\r\n')
        return
    c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    say("TUNNEL http: " + lines[0])
    splice(c)

def socks(c):
    ver, n = exact(c, 2)
    if 2 not in exact(c, n):
        say("REFUSED no username/password method")
        c.sendall(b"\x05\xff")
        return
    c.sendall(b"\x05\x02")
    _, ul = exact(c, 2)
    user = exact(c, ul)
    pw = exact(c, exact(c, 1)[0])
    if (user, pw) != (b"puser", b"ppass"):
        say("REFUSED credentials")
        c.sendall(b"\x01\x01")
        return
    c.sendall(b"\x01\x00")
    _, cmd, _, atyp = exact(c, 4)
    if atyp == 1: addr = socket.inet_ntoa(exact(c, 4))
    elif atyp == 3: addr = exact(c, exact(c, 1)[0]).decode()
    else: addr = socket.inet_ntop(socket.AF_INET6, exact(c, 16))
    dport = int.from_bytes(exact(c, 2), "big")
    if cmd == 1:
        if (addr, dport) != (name, 1194):
            say("BAD-CONNECT %s:%d" % (addr, dport))
            c.sendall(b"\x05\x02\x00\x01" + bytes(6))
            return
        c.sendall(b"\x05\x00\x00\x01" + bytes(6))
        say("TUNNEL socks CONNECT %s:%d" % (addr, dport))
        splice(c)
        return
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.bind((host, 0))
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect(up)
    c.sendall(b"\x05\x00\x00\x01" + socket.inet_aton(host) + r.getsockname()[1].to_bytes(2, "big"))
    say("UDP-ASSOCIATE relay %s:%d" % r.getsockname())
    header = b"\x00\x00\x00\x01" + socket.inet_aton(name) + (1194).to_bytes(2, "big")
    client, count = None, 0
    while True:
        ready = select.select([c, r, u], [], [])[0]
        if c in ready and not c.recv(1):
            say("UDP-END after %d datagrams" % count)
            return
        if r in ready:
            d, client = r.recvfrom(65536)
            if d[:10] != header:
                say("BAD-DATAGRAM header %r" % d[:10])
                continue
            u.send(d[10:])
            count += 1
            if count == 1: say("UDP first datagram for %s:1194" % name)
        if u in ready:
            d = u.recv(65536)
            if client: r.sendto(header + d, client)

def serve(c):
    try: (http if mode == "http" else socks)(c)
    except (EOFError, OSError) as e: say("closed: %r" % e)
    finally: c.close()

l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((host, int(port)))
l.listen(8)
say("LISTENING %s %s:%s" % (mode, host, port))
while True:
    c, _ = l.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;
