//! [`Scenario::ServerOps`] cases: our server's operational features (auth scripts, deferred
//! auth, auth-gen-token, client-connect, client-config-dir, ifconfig-pool-persist, the
//! management interface) against the real OpenVPN 2.6 client.
//!
//! Every file a case needs (scripts, ccd, token secret, the management agent) is written into
//! the case directory; the scripts log what they saw there, and the checks read those logs.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::{
    CLIENT_NS, CLIENT_WAIT, CLIENT2_NS, CaseDir, ConfArgs, Env, PING_TARGETS, Procs, Role,
    SERVER_NS, SERVER_WAIT, Waited, output, pause, ping_ok, ping_result, ping_run, ping_start,
    set_mode, stop, write_conf,
};
use crate::cases::{Case, Ops};

const AUTH_LOG: &str = "auth-calls.log";

fn script(dir: &Path, name: &str, body: &str) -> Result<String> {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}"))?;
    set_mode(&path, 0o755)?;
    Ok(path.display().to_string())
}

/// The via-file auth script: logs each call, accepts alice/right.
fn auth_script(dir: &Path) -> Result<Vec<String>> {
    let d = dir.display();
    let s = script(
        dir,
        "auth.sh",
        &format!(
            "{{ read -r user; read -r pass; }} < \"$1\"\n\
             echo \"$user $session_state\" >> {d}/{AUTH_LOG}\n\
             [ \"$user\" = alice ] && [ \"$pass\" = right ]\n"
        ),
    )?;
    Ok(vec![
        "script-security 2".into(),
        format!("auth-user-pass-verify {s} via-file"),
    ])
}

fn user_pass(dir: &Path) -> Result<Vec<String>> {
    let file = dir.join("user-pass.txt");
    fs::write(&file, "alice\nright\n")?;
    set_mode(&file, 0o600)?;
    Ok(vec![format!("auth-user-pass {}", file.display())])
}

/// Config lines (and files) for a case.
pub(super) fn extra(ops: Ops, role: Role, dir: &Path) -> Result<Vec<String>> {
    let d = dir.display();
    if role == Role::Client {
        return match ops {
            Ops::DeferredAuth | Ops::TokenReneg | Ops::TokenSecondServer => user_pass(dir),
            // The real client's own management interface, for the GUI script; held until the
            // GUI is there (as openvpn-gui does), so it cannot miss the challenge.
            Ops::CrText => Ok(vec![
                format!("management {d}/cli-mgmt.sock unix"),
                "management-hold".into(),
                "setenv IV_SSO crtext".into(),
            ]),
            _ => Ok(Vec::new()),
        };
    }
    Ok(match ops {
        Ops::DeferredAuth => {
            let s = script(
                dir,
                "auth-deferred.sh",
                &format!(
                    "{{ read -r user; read -r pass; }} < \"$1\"\n\
                     echo \"$user\" >> {d}/{AUTH_LOG}\n\
                     printf '30\\nwebauth\\nOPEN_URL:https://example.invalid/login\\n' > \"$auth_pending_file\"\n\
                     ctl=\"$auth_control_file\"\n\
                     ( sleep 2; date +%s.%N > {d}/deferred-decided\n\
                       if [ \"$user\" = alice ] && [ \"$pass\" = right ]; then echo 1; else echo 0; fi > \"$ctl\" ) >/dev/null 2>&1 &\n\
                     exit 2\n"
                ),
            )?;
            vec![
                "script-security 2".into(),
                format!("auth-user-pass-verify {s} via-file"),
            ]
        }
        Ops::TokenReneg => {
            let mut v = auth_script(dir)?;
            v.extend(["auth-gen-token 0 60".into(), "reneg-sec 5".into()]);
            v
        }
        Ops::TokenSecondServer => {
            let secret = dir.join("auth-token.key");
            let b64 = output(Command::new("openssl").args(["rand", "-base64", "48"]))?;
            fs::write(
                &secret,
                format!(
                    "-----BEGIN OpenVPN auth-token server key-----\n{}\n-----END OpenVPN auth-token server key-----\n",
                    b64.trim()
                ),
            )?;
            let mut v = auth_script(dir)?;
            v.extend([
                "auth-gen-token 0 60".into(),
                format!("auth-gen-token-secret {}", secret.display()),
                "explicit-exit-notify 1".into(),
            ]);
            v
        }
        Ops::ClientConnect => {
            let s = script(
                dir,
                "client-connect.sh",
                &format!(
                    "echo \"IV_GUI_VER=$IV_GUI_VER IV_PLAT=$IV_PLAT\" >> {d}/client-connect.log\n\
                     [ \"$IV_PLAT\" = linux ] && [ -n \"$IV_GUI_VER\" ] || exit 1\n\
                     echo 'push \"route 10.99.0.0 255.255.0.0\"' > \"$1\"\n"
                ),
            )?;
            vec!["script-security 2".into(), format!("client-connect {s}")]
        }
        Ops::CcdFixedAddress => {
            let ccd = dir.join("ccd");
            fs::create_dir_all(&ccd)?;
            // A fixed v4 and v6 address; one of the server's pushed routes removed, another
            // kept, one added.
            fs::write(
                ccd.join("client1"),
                "ifconfig-push 10.8.0.50 255.255.255.0\n\
                 ifconfig-ipv6-push fd08::50/64\n\
                 push-remove \"route 10.55.\"\n\
                 push \"route 10.56.0.0 255.255.0.0\"\n",
            )?;
            vec![
                "push \"route 10.55.0.0 255.255.0.0\"".into(),
                "push \"route 10.57.0.0 255.255.0.0\"".into(),
                format!("client-config-dir {}", ccd.display()),
                format!("status {d}/status.txt 1"),
                "status-version 2".into(),
            ]
        }
        Ops::PoolPersist => {
            fs::write(dir.join("ipp.txt"), "other,10.8.0.2\n")?;
            vec![
                format!("ifconfig-pool-persist {d}/ipp.txt 1"),
                "explicit-exit-notify 1".into(),
            ]
        }
        Ops::CryptV2Verify(accept) => {
            let s = script(
                dir,
                "tc2-verify.sh",
                &format!(
                    "echo \"type=$metadata_type script=$script_type bytes=$(wc -c < \"$metadata_file\")\" >> {d}/tc2-verify.log\nexit {}\n",
                    if accept { 0 } else { 1 }
                ),
            )?;
            vec![
                "script-security 2".into(),
                format!("tls-crypt-v2-verify {s}"),
            ]
        }
        Ops::PortShare => vec!["port-share 127.0.0.1 8443".into()],
        Ops::Chroot => {
            let jail = dir.join("jail");
            fs::create_dir_all(&jail)?;
            vec![
                format!("chroot {}", jail.display()),
                "user nobody".into(),
                "group nogroup".into(),
            ]
        }
        Ops::OsSignals => vec![
            "user nobody".into(),
            "group nogroup".into(),
            "persist-tun".into(),
            "persist-key".into(),
        ],
        Ops::PrivDropFiles => {
            // Only root may write here; the unprivileged server keeps what it opened before.
            let ro = dir.join("root-only");
            fs::create_dir_all(&ro)?;
            fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
            let r = ro.display();
            vec![
                format!("management {r}/mgmt.sock unix"),
                format!("status {r}/status.log 1"),
                format!("ifconfig-pool-persist {r}/ipp.txt 1"),
                "user nobody".into(),
                "group nogroup".into(),
            ]
        }
        Ops::Management | Ops::CrText => vec![
            format!("management {d}/mgmt.sock unix"),
            "management-client-auth".into(),
        ],
        Ops::Monitor => vec![format!("management {d}/mgmt.sock unix")],
        Ops::CrlHup => {
            openssl_ca(dir, &["-gencrl", "-out", &format!("{d}/crl.pem")])?;
            vec![format!("crl-verify {d}/crl.pem"), "reneg-sec 10".into()]
        }
    })
}

/// Runs `openssl ca` with a minimal CA config in `dir/ca` over the interop PKI's CA.
fn openssl_ca(dir: &Path, args: &[&str]) -> Result<String> {
    let pki = dir.parent().context("case dir has no parent")?.join("pki");
    let ca = dir.join("ca");
    if !ca.exists() {
        fs::create_dir_all(&ca)?;
        fs::write(ca.join("index.txt"), "")?;
        fs::write(ca.join("crlnumber"), "01\n")?;
        fs::write(
            ca.join("ca.cnf"),
            format!(
                "[ ca ]\ndefault_ca = ovrs\n[ ovrs ]\ndatabase = {c}/index.txt\n\
                 new_certs_dir = {c}\ncertificate = {p}/ca.crt\nprivate_key = {p}/ca.key\n\
                 default_md = sha256\ndefault_crl_days = 30\ncrlnumber = {c}/crlnumber\n\
                 policy = any\n[ any ]\ncommonName = supplied\n",
                c = ca.display(),
                p = pki.display()
            ),
        )?;
    }
    let cnf = ca.join("ca.cnf");
    output(
        Command::new("openssl")
            .arg("ca")
            .arg("-config")
            .arg(&cnf)
            .args(args),
    )
}

/// Processes started before the client (management agent, GUI script); killed on drop.
pub(super) struct Agent(Vec<Child>);

impl Drop for Agent {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A Python management-socket client: `imports`, then the shared prelude (connect to the
/// Unix socket `argv[1]`, retrying every 0.1 s up to `tries` times; log every line to
/// `argv[2]`; `send(cmd)` writes and logs a command), then `body`.
macro_rules! mgmt_script {
    ($imports:literal, $tries:literal, $body:literal) => {
        concat!(
            "\nimport ",
            $imports,
            "\npath, out = sys.argv[1], sys.argv[2]
log = open(out, \"a\", buffering=1)
s = None
for _ in range(",
            $tries,
            "):
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        break
    except OSError:
        s = None
        time.sleep(0.1)
if s is None:
    log.write(\"cannot connect\\n\")
    sys.exit(1)
f = s.makefile(\"rw\", buffering=1, newline=\"\\n\")
def send(cmd):
    log.write(\"> \" + cmd + \"\\n\")
    f.write(cmd + \"\\n\")
    f.flush()
",
            $body
        )
    };
}

const AGENT: &str = mgmt_script!(
    "re, socket, sys, time",
    150,
    r#"connects = 0
established = 0
for line in f:
    line = line.rstrip("\r\n")
    log.write(line + "\n")
    m = re.match(r">CLIENT:(CONNECT|REAUTH),(\d+),(\d+)", line)
    if m:
        kind, cid, kid = m.groups()
        if kind == "CONNECT":
            connects += 1
        if kind == "CONNECT" and connects == 1:
            send('client-deny %s %s "first attempt" "denied by the interop agent"' % (cid, kid))
        elif kind == "CONNECT":
            send("client-auth %s %s" % (cid, kid))
            send('push "route 10.98.0.0 255.255.0.0"')
            send("END")
        else:
            send("client-auth-nt %s %s" % (cid, kid))
        continue
    m = re.match(r">CLIENT:ESTABLISHED,(\d+)", line)
    if m:
        established += 1
        if established == 1:
            send("status 3")
            time.sleep(3)
            send("client-kill %s" % m.group(1))
"#
);

/// The server-side agent of the CR_TEXT case: every CONNECT gets a CR_TEXT challenge; a
/// CR_RESPONSE whose base64 decodes to 123456 is approved, any other denied.
const AGENT_CR: &str = mgmt_script!(
    "base64, re, socket, sys, time",
    150,
    r#"for line in f:
    line = line.rstrip("\r\n")
    log.write(line + "\n")
    m = re.match(r">CLIENT:CONNECT,(\d+),(\d+)$", line)
    if m:
        send('client-pending-auth %s %s "CR_TEXT:R,E:Enter your OTP" 60' % m.groups())
        continue
    m = re.match(r">CLIENT:REAUTH,(\d+),(\d+)$", line)
    if m:
        send("client-auth-nt %s %s" % m.groups())
        continue
    m = re.match(r">CLIENT:CR_RESPONSE,(\d+),(\d+),(\S*)$", line)
    if m:
        cid, kid, b64 = m.groups()
        try:
            answer = base64.b64decode(b64).decode()
        except Exception:
            answer = None
        log.write("decoded response: %r\n" % answer)
        if answer == "123456":
            send("client-auth-nt %s %s" % (cid, kid))
        else:
            send('client-deny %s %s "wrong OTP" "wrong one-time password"' % (cid, kid))
"#
);

/// A GUI on the real client's management socket: answers `>INFOMSG:CR_TEXT:` with
/// `cr-response base64("123456")`.
const GUI_CR: &str = mgmt_script!(
    "base64, socket, sys, time",
    300,
    r#"send("state on")
send("hold release")
for line in f:
    line = line.rstrip("\r\n")
    log.write(line + "\n")
    if line.startswith(">INFOMSG:CR_TEXT:"):
        send("cr-response " + base64.b64encode(b"123456").decode())
"#
);

/// Polls a server's management interface the way openvpn-monitor does and checks every
/// line it parses; prints a JSON summary, exits 1 with the reason on the first mismatch.
const MONITOR: &str = r#"
import ipaddress, json, re, socket, sys

def fail(msg):
    print("MONITOR-FAIL: " + msg)
    sys.exit(1)

s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
buf = b""

def recv_until(done):
    global buf
    while not done(buf):
        chunk = s.recv(4096)
        if not chunk:
            fail("connection closed; got %r" % buf)
        buf += chunk
    data, buf = buf, b""
    return data.decode()

def command(cmd, done):
    s.sendall((cmd + "\n").encode())
    data = recv_until(done)
    # The tool drops real-time >INFO lines, then works on CRLF lines.
    data = re.sub(">INFO.*\r\n", "", data)
    body = data[:-2] if data.endswith("\r\n") else fail("%s: reply not CRLF-terminated: %r" % (cmd, data))
    for line in body.split("\r\n"):
        if "\r" in line or "\n" in line:
            fail("%s: bare CR/LF in %r" % (cmd, line))
    return body.split("\r\n")

greeting = recv_until(lambda b: b"\r\n" in b)
if not greeting.startswith(">INFO:OpenVPN Management Interface Version "):
    fail("greeting %r" % greeting)
end = lambda b: b.endswith(b"\nEND\r\n")
out = {}

lines = command("version", end)
rel = [l for l in lines if l.startswith("OpenVPN")]
if not rel:
    fail("no 'OpenVPN Version:' line: %r" % lines)
release = rel[0].replace("OpenVPN Version: ", "")
ver = release.split(" ")[1]
if not re.fullmatch(r"\d+\.\d+\.\d+", ver):
    fail("version word %r is not semver (%r)" % (ver, release))
out["version"] = ver
if not any(re.fullmatch(r"Management Version: \d+", l) for l in lines):
    fail("no Management Version line: %r" % lines)

lines = command("state", end)
st = [l.split(",") for l in lines if not (l.startswith(">") or l.startswith("END"))]
if len(st) != 1:
    fail("state: %r" % lines)
p = st[0]
int(p[0])
if p[1] != "CONNECTED" or p[2] != "SUCCESS":
    fail("state fields %r" % p)
ipaddress.ip_address(p[3])
if p[4]:
    fail("server state has a remote address: %r" % p)
if len(p) > 8 and p[8]:
    ipaddress.ip_address(p[8])
out["state"] = p[1:4]

lines = command("load-stats", lambda b: b.endswith(b"\r\n"))
m = re.fullmatch(r"SUCCESS: nclients=(\d+),bytesin=(\d+),bytesout=(\d+)", lines[-1])
if not m:
    fail("load-stats %r" % lines)
nclients, bytesin, bytesout = map(int, m.groups())
out["load_stats"] = [nclients, bytesin, bytesout]

lines = command("status 3", end)
section, clients, routes = None, [], []
for line in lines:
    f = line.split("\t")
    if f[0] == "END":
        break
    if f[0] in ("TITLE", "TIME") or f[0].startswith("GLOBAL"):
        continue
    if f[0] == "HEADER":
        section = f[1]
        if section == "CLIENT_LIST" and f[2:14] != ["Common Name", "Real Address", "Virtual Address", "Virtual IPv6 Address", "Bytes Received", "Bytes Sent", "Connected Since", "Connected Since (time_t)", "Username", "Client ID", "Peer ID", "Data Channel Cipher"]:
            fail("CLIENT_LIST header %r" % f)
        if section == "ROUTING_TABLE" and f[2:] != ["Virtual Address", "Common Name", "Real Address", "Last Ref", "Last Ref (time_t)"]:
            fail("ROUTING_TABLE header %r" % f)
        continue
    if section == "CLIENT_LIST" and f[0] == "CLIENT_LIST":
        if len(f) < 13:
            fail("short CLIENT_LIST %r" % f)
        remote = f[2]
        host, port = (remote.rsplit(":", 1) if remote.count(":") == 1 else (remote, ""))
        ipaddress.ip_address(host)
        if port:
            int(port)
        ipaddress.ip_address(f[3])
        if f[4]:
            ipaddress.ip_address(f[4])
        int(f[5]); int(f[6]); int(f[8]); int(f[10]); int(f[11])
        clients.append({"cn": f[1], "remote": remote, "v4": f[3], "v6": f[4], "rx": int(f[5]), "tx": int(f[6]), "user": f[9], "cid": int(f[10]), "peer_id": int(f[11]), "cipher": f[12] if len(f) > 12 else ""})
    elif section == "ROUTING_TABLE" and f[0] == "ROUTING_TABLE":
        ipaddress.ip_address(f[1])
        int(f[5])
        routes.append(f[1])
    else:
        fail("unexpected status line %r" % line)
if len(clients) != nclients or nclients < 1:
    fail("load-stats nclients=%d, status 3 lists %d" % (nclients, len(clients)))
if not all(c["v4"] in routes for c in clients):
    fail("a client's address is not in ROUTING_TABLE: %r %r" % (clients, routes))
out["clients"] = clients
out["routes"] = routes
# Its "disconnect" button: client-kill with the Client ID from status 3 (2.4 and later).
lines = command("client-kill %d" % clients[0]["cid"], lambda b: b.endswith(b"\r\n"))
if lines[-1] != "SUCCESS: client-kill command succeeded":
    fail("client-kill %d: %r" % (clients[0]["cid"], lines))
out["client_kill"] = lines[-1]
s.sendall(b"quit\n")
print("MONITOR-OK " + json.dumps(out))
"#;

fn python(script: &Path, args: &[&Path]) -> Result<Child> {
    Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start python3 {}", script.display()))
}

/// Starts what must run before the client connects.
pub(super) fn before_client(case: &Case, cd: &CaseDir) -> Result<Option<Agent>> {
    let crate::cases::Scenario::ServerOps(ops @ (Ops::Management | Ops::CrText)) = case.scenario
    else {
        return Ok(None);
    };
    let py = cd.dir.join("agent.py");
    fs::write(&py, if ops == Ops::CrText { AGENT_CR } else { AGENT })?;
    // Killed on drop, also when the second one fails to start.
    let mut agent = Agent(vec![python(
        &py,
        &[&cd.dir.join("mgmt.sock"), &cd.dir.join("agent.log")],
    )?]);
    if ops == Ops::CrText {
        let gui = cd.dir.join("gui.py");
        fs::write(&gui, GUI_CR)?;
        agent.0.push(python(
            &gui,
            &[&cd.dir.join("cli-mgmt.sock"), &cd.dir.join("gui.log")],
        )?);
    }
    Ok(Some(agent))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

fn auth_calls(cd: &CaseDir) -> Vec<String> {
    read(&cd.dir.join(AUTH_LOG))
        .lines()
        .map(str::to_owned)
        .collect()
}

fn ping_until_ok(cd: &CaseDir, procs: &Procs, secs: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ping_run(&cd.dir, CLIENT_NS, PING_TARGETS[0], 1, "1")?.all_ok() {
        ensure!(
            Instant::now() < deadline,
            "no ping through the tunnel within {secs}s\n{}",
            procs.tails()
        );
    }
    Ok(())
}

fn client_v4(procs: &Procs) -> Result<String> {
    let text = output(Command::new("ip").args(["-n", CLIENT_NS, "-4", "-o", "addr"]))?;
    text.split_whitespace()
        .filter_map(|w| w.strip_suffix("/24"))
        .find(|a| a.starts_with("10.8.0."))
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "no 10.8.0.x/24 address in ovrs-cli:\n{text}\n{}",
                procs.tails()
            )
        })
}

/// Restarts the server on the same config (`graceful`: SIGTERM, else SIGKILL); returns the
/// new server's index. The old log is kept as `server-before-restart.log`.
fn restart_server(
    env: &Env,
    case: &Case,
    cd: &CaseDir,
    procs: &mut Procs,
    server: usize,
    graceful: bool,
    between: &dyn Fn() -> Result<()>,
) -> Result<usize> {
    if graceful {
        stop(procs.0.get_mut(server).context("no server")?);
    } else {
        procs.kill(server)?;
    }
    between()?;
    let log = cd.server_conf.with_extension("log");
    if log.exists() {
        fs::rename(&log, cd.dir.join("server-before-restart.log"))?;
    }
    let again = procs.start(
        env,
        case.server,
        Role::Server,
        "server (second instance)",
        SERVER_NS,
        &cd.server_conf,
    )?;
    match procs.wait_init(again, SERVER_WAIT)? {
        Waited::Init => Ok(again),
        other => bail!("restarted server {other}\n{}", procs.tails()),
    }
}

/// The checks after the client connected and pinged.
pub(super) fn run(
    ops: Ops,
    env: &Env,
    case: &Case,
    cd: &CaseDir,
    procs: &mut Procs,
    server: usize,
    client: usize,
) -> Result<()> {
    match ops {
        Ops::DeferredAuth => {
            // The decision file is written just before `1`: connected ⇒ it exists.
            ensure!(
                cd.dir.join("deferred-decided").exists(),
                "the client connected before the deferred decision\n{}",
                procs.tails()
            );
            ensure!(
                auth_calls(cd).len() == 1,
                "auth script calls: {:?}",
                auth_calls(cd)
            );
            // The client heard AUTH_PENDING and the OPEN_URL while the decision was pending.
            for want in [
                "AUTH_PENDING received",
                "Info command was pushed by server ('OPEN_URL:https://example.invalid/login')",
            ] {
                ensure!(
                    procs.count(client, want)? >= 1,
                    "client log lacks {want:?}\n{}",
                    procs.tails()
                );
            }
        }
        Ops::TokenReneg => {
            let r = ping_run(&cd.dir, CLIENT_NS, PING_TARGETS[0], 24, "0.5")?;
            println!("interop: ping across token renegotiations: {}", r.summary());
            ensure!(
                r.received + 1 >= r.sent,
                "pings lost: {}\n{}",
                r.summary(),
                procs.tails()
            );
            let renegs = procs.count(server, "authenticated by auth-token")?;
            println!("interop: {renegs} renegotiation(s) authenticated by the token");
            ensure!(
                renegs >= 2,
                "fewer than 2 token renegotiations\n{}",
                procs.tails()
            );
            let calls = auth_calls(cd);
            ensure!(
                calls.len() == 1,
                "auth script ran {} times: {calls:?}",
                calls.len()
            );
        }
        Ops::TokenSecondServer => {
            let again = restart_server(env, case, cd, procs, server, true, &|| Ok(()))?;
            procs.wait_inits(client, 2, Duration::from_secs(40), |_| Ok(()))?;
            ping_until_ok(cd, procs, 20)?;
            ensure!(
                procs.count(again, "authenticated by auth-token")? >= 1,
                "the second server did not authenticate the token\n{}",
                procs.tails()
            );
            let calls = auth_calls(cd);
            ensure!(
                calls.len() == 1,
                "auth script ran {} times: {calls:?}",
                calls.len()
            );
        }
        Ops::ClientConnect => {
            let log = read(&cd.dir.join("client-connect.log"));
            println!("interop: client-connect saw: {}", log.trim());
            ensure!(
                log.contains("IV_GUI_VER=ovrs-interop-gui-1.0 IV_PLAT=linux"),
                "client-connect env: {log}"
            );
            let routes = output(Command::new("ip").args(["-n", CLIENT_NS, "route"]))?;
            ensure!(
                routes.contains("10.99.0.0/16"),
                "pushed route missing in ovrs-cli:\n{routes}"
            );
        }
        Ops::CcdFixedAddress => {
            let a = client_v4(procs)?;
            ensure!(a == "10.8.0.50", "client address {a}, wanted 10.8.0.50");
            let v6 = output(Command::new("ip").args(["-n", CLIENT_NS, "-6", "-o", "addr"]))?;
            ensure!(
                v6.contains("fd08::50/64"),
                "ifconfig-ipv6-push: no fd08::50/64 in ovrs-cli:\n{v6}\n{}",
                procs.tails()
            );
            ping_ok(&cd.dir, CLIENT_NS, "fd08::1", procs)?;
            let routes = output(Command::new("ip").args(["-n", CLIENT_NS, "route"]))?;
            for (net, wanted) in [
                ("10.55.0.0/16", false),
                ("10.56.0.0/16", true),
                ("10.57.0.0/16", true),
            ] {
                ensure!(
                    routes.contains(net) == wanted,
                    "route {net} should {}be there (push-remove / push in ccd):\n{routes}",
                    if wanted { "" } else { "not " }
                );
            }
            println!(
                "interop: ccd: 10.8.0.50 and fd08::50/64 (pinging fd08::1), push-remove dropped 10.55/16, push added 10.56/16, 10.57/16 kept"
            );
            // The status file (rewritten every second) shows the fixed address too.
            let status = cd.dir.join("status.txt");
            let deadline = Instant::now() + Duration::from_secs(5);
            while !read(&status)
                .lines()
                .any(|l| l.starts_with("CLIENT_LIST,client1,") && l.contains(",10.8.0.50,"))
            {
                ensure!(
                    Instant::now() < deadline,
                    "status file lacks client1 at 10.8.0.50:\n{}",
                    read(&status)
                );
                pause(Duration::from_millis(300))?;
            }
        }
        Ops::PoolPersist => {
            let a = client_v4(procs)?;
            ensure!(a == "10.8.0.3", "client address {a}, wanted 10.8.0.3");
            let ipp = cd.dir.join("ipp.txt");
            let deadline = Instant::now() + Duration::from_secs(5);
            while !read(&ipp).contains("client1,10.8.0.3") {
                ensure!(Instant::now() < deadline, "ipp.txt: {}", read(&ipp));
                pause(Duration::from_millis(200))?;
            }
            // Without "other", 10.8.0.2 is free: only persistence gives client1 .3 again.
            restart_server(env, case, cd, procs, server, true, &|| {
                let text = read(&ipp);
                ensure!(
                    text.contains("client1,10.8.0.3"),
                    "ipp.txt after shutdown: {text}"
                );
                let kept: String = text
                    .lines()
                    .filter(|l| !l.starts_with("other,"))
                    .map(|l| format!("{l}\n"))
                    .collect();
                fs::write(&ipp, kept)?;
                Ok(())
            })?;
            procs.wait_inits(client, 2, Duration::from_secs(40), |_| Ok(()))?;
            ping_until_ok(cd, procs, 20)?;
            let a = client_v4(procs)?;
            ensure!(a == "10.8.0.3", "after the restart the client got {a}");
        }
        Ops::CrlHup => crl_hup(env, case, cd, procs, server)?,
        Ops::CryptV2Verify(_) => {
            let log = read(&cd.dir.join("tc2-verify.log"));
            ensure!(
                log.contains("script=tls-crypt-v2-verify") && log.contains("type="),
                "tls-crypt-v2-verify log: {log}"
            );
        }
        Ops::PortShare => {
            // The "web server" in ovrs-srv on loopback; a plain request from ovrs-cli to the
            // OpenVPN port must reach it.
            let mut web = Command::new("ip")
                .args(["netns", "exec", SERVER_NS, "python3", "-c"])
                .arg(
                    "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                     s.bind(('127.0.0.1', 8443)); s.listen(1)\nc, _ = s.accept(); c.recv(100)\n\
                     c.sendall(b'HTTP/1.0 200 shared\\r\\n\\r\\n'); c.close()",
                )
                .spawn()
                .context("python3 web stand-in")?;
            pause(Duration::from_millis(500))?;
            let reply = output(
                Command::new("ip")
                    .args(["netns", "exec", CLIENT_NS, "python3", "-c"])
                    .arg(
                        "import socket\nc=socket.create_connection(('10.77.0.1', 1194), timeout=10)\n\
                         c.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); print(c.recv(100).decode())",
                    ),
            );
            let _ = web.kill();
            let _ = web.wait();
            let reply = reply?;
            ensure!(reply.contains("200 shared"), "port-share reply: {reply}");
        }
        Ops::Chroot => {
            let pid = procs.pid(server)?;
            let root = fs::read_link(format!("/proc/{pid}/root"))
                .context("cannot read the server's /proc/PID/root")?;
            let jail = fs::canonicalize(cd.dir.join("jail"))?;
            ensure!(
                root == jail,
                "the server's root is {}, not {}",
                root.display(),
                jail.display()
            );
        }
        Ops::OsSignals => {
            let pid = procs.pid(server)?.to_string();
            output(Command::new("kill").args(["-USR2", &pid]))?;
            output(Command::new("kill").args(["-USR1", &pid]))?;
            println!("interop: SIGUSR2, then SIGUSR1 to the server");
            procs.wait_inits(client, 2, Duration::from_secs(40), |_| Ok(()))?;
            ping_until_ok(cd, procs, 20)?;
            ensure!(
                procs.count(server, "SIGUSR1 received")? == 1,
                "the server did not log SIGUSR1\n{}",
                procs.tails()
            );
        }
        Ops::PrivDropFiles => {
            let ro = cd.dir.join("root-only");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let status = read(&ro.join("status.log"));
                let ipp = read(&ro.join("ipp.txt"));
                if status.contains("client1") && ipp.contains("client1,") {
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "files not updated after the privilege drop:\nstatus.log: {status}\nipp.txt: {ipp}"
                );
                pause(Duration::from_millis(200))?;
            }
            let mut s = std::os::unix::net::UnixStream::connect(ro.join("mgmt.sock"))
                .context("management socket after the privilege drop")?;
            use std::io::{Read as _, Write as _};
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"pid\r\nquit\r\n")?;
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            ensure!(text.contains("SUCCESS: pid="), "management answer: {text}");
        }
        Ops::Monitor => {
            let py = cd.dir.join("monitor.py");
            fs::write(&py, MONITOR)?;
            let out = Command::new("python3")
                .arg(&py)
                .arg(cd.dir.join("mgmt.sock"))
                .output()
                .context("cannot run python3 (the monitor-style poll)")?;
            let text = String::from_utf8_lossy(&out.stdout);
            println!("interop: {}", text.trim());
            ensure!(
                out.status.success() && text.contains("MONITOR-OK"),
                "monitor-style poll failed: {text}{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                procs.tails()
            );
            // The poll ended with client-kill: the client restarts and comes back.
            procs.wait_inits(client, 2, Duration::from_secs(40), |_| Ok(()))?;
            ping_until_ok(cd, procs, 20)?;
        }
        Ops::CrText => {
            let agent = read(&cd.dir.join("agent.log"));
            let gui = read(&cd.dir.join("gui.log"));
            for (log, name, want) in [
                (&gui, "GUI", ">INFOMSG:CR_TEXT:R,E:Enter your OTP"),
                (&gui, "GUI", "> cr-response MTIzNDU2"),
                (&agent, "agent", "> client-pending-auth "),
                (&agent, "agent", ">CLIENT:CR_RESPONSE,"),
                (&agent, "agent", ",MTIzNDU2"),
                (&agent, "agent", "decoded response: '123456'"),
                (&agent, "agent", "> client-auth-nt "),
            ] {
                ensure!(
                    log.contains(want),
                    "{name} log lacks {want:?}:\nagent:\n{agent}\ngui:\n{gui}\n{}",
                    procs.tails()
                );
            }
            let line = agent
                .lines()
                .find(|l| l.starts_with(">CLIENT:CR_RESPONSE,"))
                .unwrap_or_default();
            println!("interop: server management saw {line}");
        }
        Ops::Management => {
            procs.wait_inits(client, 2, Duration::from_secs(40), |_| Ok(()))?;
            ping_until_ok(cd, procs, 20)?;
            let routes = output(Command::new("ip").args(["-n", CLIENT_NS, "route"]))?;
            ensure!(
                routes.contains("10.98.0.0/16"),
                "the route from client-auth's config block is missing:\n{routes}"
            );
            let agent = read(&cd.dir.join("agent.log"));
            for want in [
                "> client-deny",
                "> client-auth ",
                "CLIENT_LIST\tclient1",
                "> client-kill",
            ] {
                ensure!(agent.contains(want), "agent log lacks {want:?}:\n{agent}");
            }
        }
    }
    for target in PING_TARGETS {
        ping_ok(&cd.dir, CLIENT_NS, target, procs)?;
    }
    Ok(())
}

/// Client2 joins; during a continuous ping from client1, client2 is revoked and the server
/// reloads (SIGHUP): client2 loses its tunnel at its next renegotiation, client1 loses nothing.
fn crl_hup(env: &Env, case: &Case, cd: &CaseDir, procs: &mut Procs, server: usize) -> Result<()> {
    let conf2 = cd.dir.join("client2.conf");
    let args = ConfArgs {
        remote: Some("10.77.1.1"),
        dev: Some("ovrs-tun-c2"),
        cert: Some("client2"),
        ..ConfArgs::default()
    };
    write_conf(env, case, Role::Client, &conf2, &args, &[])?;
    let c2 = procs.start(
        env,
        case.client,
        Role::Client,
        "client2",
        CLIENT2_NS,
        &conf2,
    )?;
    match procs.wait_init(c2, CLIENT_WAIT)? {
        Waited::Init => {}
        other => bail!("client2 {other}\n{}", procs.tails()),
    }
    ping_ok(&cd.dir, CLIENT2_NS, PING_TARGETS[0], procs)?;
    let long = ping_start(&cd.dir, CLIENT_NS, PING_TARGETS[0], 50, "0.5")?;
    let pki = cd.dir.parent().context("no parent")?.join("pki");
    openssl_ca(
        &cd.dir,
        &["-revoke", &pki.join("client2.crt").display().to_string()],
    )?;
    openssl_ca(
        &cd.dir,
        &[
            "-gencrl",
            "-out",
            &cd.dir.join("crl.pem").display().to_string(),
        ],
    )?;
    let pid = procs.pid(server)?.to_string();
    output(Command::new("kill").args(["-HUP", &pid]))?;
    println!("interop: client2 revoked, SIGHUP to the server");
    // Within two renegotiation periods client2's renegotiation must be refused (its old key
    // lives on until it expires, as in the in-memory reload test).
    let deadline = Instant::now() + Duration::from_secs(22);
    let mut cut = false;
    while Instant::now() < deadline {
        let refused = procs.texts(server)?.iter().any(|t| {
            t.lines()
                .any(|l| l.contains("(client2): renegotiation of key") && l.contains("failed"))
        });
        if refused {
            cut = true;
            break;
        }
        pause(Duration::from_millis(500))?;
    }
    let r = ping_result(long)?;
    println!("interop: client1 across the reload: {}", r.summary());
    ensure!(
        cut,
        "client2 renegotiated after revocation and SIGHUP\n{}",
        procs.tails()
    );
    ensure!(
        procs
            .texts(server)?
            .iter()
            .all(|t| !t.contains("(client1): renegotiation of key")),
        "client1's renegotiation failed\n{}",
        procs.tails()
    );
    ensure!(
        r.sent >= 50 && r.received == r.sent,
        "client1 lost pings across the reload: {}\n{}",
        r.summary(),
        procs.tails()
    );
    ensure!(
        procs.count(server, "configuration reloaded")? >= 1,
        "the server did not reload\n{}",
        procs.tails()
    );
    Ok(())
}
