//! Corpus files started for real ([`Scenario::CorpusServer`], [`Scenario::CorpusClient`]):
//! a file of `tests/corpus/`, materialised by `tests/corpus/oracle.sh` (`MATERIALISE_TO=` the
//! case directory: the fixture PKI, every `@@MARKER@@` replaced, the `daemon`, `log`,
//! `log-append` and `syslog` lines blanked so the log comes on stdout, nothing else changed),
//! run in the namespaces against the real OpenVPN 2.6 on the other side.
//!
//! ```text
//! corpus-server-<stem>   ovrs-srv: OUR openvpn-server --config config   (cwd: the case dir;
//!                                  the corpus file as the oracle runs it)
//!                        ovrs-cli: openvpn --config real-client.conf    (written to match it:
//!                                  fixture client cert, the server's proto/port, the matching
//!                                  tls-auth (opposite direction) / tls-crypt / tls-crypt-v2
//!                                  client key, its auth, cipher lines and compression line,
//!                                  remote-cert-tls server, disable-dco)
//! corpus-client-<stem>   ovrs-srv: openvpn --config <server file> --disable-dco  (the matching
//!                                  corpus server config, same PKI)
//!                        ovrs-cli: OUR openvpn-client --config client.ovpn  (the corpus profile;
//!                                  only its `remote` lines now name the lab server)
//! both:                  wait for "Initialization Sequence Completed" on both sides, then ping
//!                        the server's tunnel address (the .1 of its `server` line, and of
//!                        `server-ipv6` if it has one) from ovrs-cli; stop both by pid.
//! ```
//!
//! What the harness adds so the files run unchanged in the lab:
//! - A profile that pins the server's name (`verify-x509-name NAME name`, as installers write
//!   it) gets a server whose server.crt is re-signed by the fixture CA with CN=NAME.
//! - A server config with `local 127.0.0.1` (Nyr's installer writes the public address there;
//!   the corpus has loopback) listens on ovrs-srv's loopback: for the case, an nftables DNAT in
//!   ovrs-srv (table `ovrs_corpus`, `route_localnet` on ovrs-veth-s) forwards 10.77.0.1:PORT
//!   to it.
//! - Our client applies pushed DNS: ovrs-cli gets its own resolv.conf for the case
//!   (/etc/netns/ovrs-cli/resolv.conf, which `ip netns exec` mounts over /etc/resolv.conf), so
//!   nothing reaches the host's; it must be byte for byte the same once our client is gone.
//!
//! A child module of `interop`, so it uses the harness's private helpers directly.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;

/// The server side of the veth pair (netns.sh).
const SERVER_VETH: &str = "ovrs-veth-s";
const RESOLV: &str = "/etc/netns/ovrs-cli/resolv.conf";
const RESOLV_TEXT: &str = "# ovrs-cli resolv.conf, written by the interop harness (corpus cases)\n\
                           nameserver 192.0.2.53\n";

pub(super) fn run(env: &Env, case: &Case, cd: &CaseDir) -> Result<()> {
    match case.scenario {
        Scenario::CorpusServer(file) => ours_server(env, case, cd, file),
        Scenario::CorpusClient { profile, server } => ours_client(env, case, cd, profile, server),
        other => bail!("corpus_lab::run called for {other:?}"),
    }
}

/// Our server on the corpus file, the real 2.6 client on a profile that matches it.
fn ours_server(env: &Env, case: &Case, cd: &CaseDir, file: &str) -> Result<()> {
    ensure!(
        case.server == Impl::Ours && case.client == Impl::Real,
        "corpus-server cases run our server against the real client"
    );
    materialise(env, &cd.dir, &[&format!("server/{file}")])?;
    let text = fs::read_to_string(cd.dir.join("config"))?;
    let facts = ServerFacts::parse(&text).with_context(|| format!("server/{file}"))?;
    println!("interop: server/{file}: {facts:?}");
    let profile = facts.real_client_profile(case.name, file);
    fs::write(cd.dir.join("real-client.conf"), &profile)?;
    println!(
        "interop: real-client.conf (the real 2.6 client's profile):\n    {}",
        profile
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n    ")
    );

    let _dnat = facts.loopback_dnat()?;
    let mut procs = Procs(Vec::new());
    let server = start_in(
        &mut procs,
        env,
        (Impl::Ours, Role::Server),
        "server",
        SERVER_NS,
        &cd.dir,
        &["--config", "config"],
    )?;
    match procs.wait_init(server, SERVER_WAIT)? {
        Waited::Init => {}
        other => bail!("our server {other}\n{}", procs.tails()),
    }
    let client = start_in(
        &mut procs,
        env,
        (Impl::Real, Role::Client),
        "client",
        CLIENT_NS,
        &cd.dir,
        &["--config", "real-client.conf"],
    )?;
    match procs.wait_init(client, CLIENT_WAIT)? {
        Waited::Init => {}
        other => bail!("the real client {other}\n{}", procs.tails()),
    }
    for target in facts.ping_targets() {
        ping_ok(&cd.dir, CLIENT_NS, &target, &procs)?;
    }
    procs.check_logs(&[(server, case.server_log_has), (client, case.client_log_has)])
}

/// Our client on the corpus profile (its `remote` lines rewritten), the real 2.6 server on the
/// matching corpus server config.
fn ours_client(env: &Env, case: &Case, cd: &CaseDir, profile: &str, server: &str) -> Result<()> {
    ensure!(
        case.server == Impl::Real && case.client == Impl::Ours,
        "corpus-client cases run our client against the real server"
    );
    materialise(
        env,
        &cd.dir,
        &[&format!("server/{server}"), &format!("client/{profile}")],
    )?;
    let server_text = fs::read_to_string(cd.dir.join(server))?;
    let facts = ServerFacts::parse(&server_text).with_context(|| format!("server/{server}"))?;
    let client_text = fs::read_to_string(cd.dir.join(profile))?;
    let (rewritten, changed) = rewrite_remotes(&client_text, &facts)?;
    fs::write(cd.dir.join("client.ovpn"), &rewritten)?;
    for (old, new) in &changed {
        println!("interop: client/{profile}: `{old}` -> `{new}` (the only change; client.ovpn)");
    }
    if let Some(name) = pinned_server_name(&client_text)? {
        ensure!(
            !directives(&server_text)
                .iter()
                .any(|d| d[0] == "cert" && d.get(1).is_some_and(|f| f == INLINE)),
            "client/{profile} pins the server name {name}, but server/{server} has its certificate inline"
        );
        sign_server_cert(&cd.dir, &name)?;
        println!(
            "interop: server.crt re-signed by the fixture CA with CN={name} (client/{profile} has verify-x509-name {name} name)"
        );
    }

    let _dnat = facts.loopback_dnat()?;
    let resolv = ResolvConf::new()?;
    let mut procs = Procs(Vec::new());
    let real = start_in(
        &mut procs,
        env,
        (Impl::Real, Role::Server),
        "server",
        SERVER_NS,
        &cd.dir,
        &["--config", server, "--disable-dco"],
    )?;
    match procs.wait_init(real, SERVER_WAIT)? {
        Waited::Init => {}
        other => bail!("the real server {other}\n{}", procs.tails()),
    }
    let ours = start_in(
        &mut procs,
        env,
        (Impl::Ours, Role::Client),
        "client",
        CLIENT_NS,
        &cd.dir,
        &["--config", "client.ovpn"],
    )?;
    match procs.wait_init(ours, CLIENT_WAIT)? {
        Waited::Init => {}
        other => bail!("our client {other}\n{}", procs.tails()),
    }
    for target in facts.ping_targets() {
        ping_ok(&cd.dir, CLIENT_NS, &target, &procs)?;
    }
    procs.check_logs(&[(real, case.server_log_has), (ours, case.client_log_has)])?;
    let tails = procs.tails();
    // SIGTERM both, the last started (ours) first; it restores resolv.conf on its way out.
    drop(procs);
    resolv.check_restored(&tails)
}

/// `MATERIALISE_TO=dir bash tests/corpus/oracle.sh files...`.
fn materialise(env: &Env, dir: &Path, files: &[&str]) -> Result<()> {
    let mut cmd = Command::new("bash");
    cmd.arg(env.root.join("tests/corpus/oracle.sh"))
        .args(files)
        .env("MATERIALISE_TO", dir)
        .current_dir(&env.root);
    output(&mut cmd)?;
    println!(
        "interop: materialised {} into {} (oracle.sh, MATERIALISE_TO)",
        files.join(" and "),
        dir.display()
    );
    Ok(())
}

/// Starts `program args...` in `ns` with `dir` as its working directory (the corpus files
/// name their keys, status and ipp files relative to it); output in `dir/<label>.out`.
fn start_in(
    procs: &mut Procs,
    env: &Env,
    (which, role): (Impl, Role),
    label: &'static str,
    ns: &str,
    dir: &Path,
    args: &[&str],
) -> Result<usize> {
    let program = match (which, role) {
        (Impl::Real, _) => PathBuf::from("openvpn"),
        (Impl::Ours, Role::Server) => env
            .ours
            .0
            .clone()
            .context("case needs target/release/openvpn-server")?,
        (Impl::Ours, Role::Client) => env
            .ours
            .1
            .clone()
            .context("case needs target/release/openvpn-client")?,
    };
    let out_path = dir.join(format!("{label}.out"));
    let out =
        File::create(&out_path).with_context(|| format!("cannot create {}", out_path.display()))?;
    let mut cmd = Command::new("ip");
    if (which, role) == (Impl::Ours, Role::Client) {
        // This case's own route/DNS journals (see Procs::start).
        let run_dir = dir.join("run");
        fs::create_dir_all(&run_dir)?;
        cmd.env("OPENVPN_RS_RUN_DIR", run_dir);
    }
    cmd.args(["netns", "exec", ns])
        .arg(&program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let shown = crate::show(&cmd);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    println!(
        "interop: {label} pid {} (cwd {}): {shown}",
        child.id(),
        dir.display()
    );
    procs.0.push(Proc {
        label,
        child,
        logs: [dir.join(format!("{label}.log")), out_path],
    });
    Ok(procs.0.len() - 1)
}

// ---- reading the configs ----

/// How an inline block `<tag>…</tag>` shows in [`directives`]: OpenVPN's own spelling.
const INLINE: &str = "[[INLINE]]";

/// The directives of a config, as OpenVPN splits them: one per line, words separated by
/// blanks, "double" and 'single' quotes, a `#` or `;` word ends the line, a leading `--` is
/// dropped; an inline block `<tag>…</tag>` is `tag [[INLINE]]`.
fn directives(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut in_block: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(tag) = &in_block {
            if line == format!("</{tag}>") {
                in_block = None;
            }
            continue;
        }
        if let Some(tag) = line.strip_prefix('<').and_then(|l| l.strip_suffix('>'))
            && !tag.starts_with('/')
        {
            out.push(vec![tag.to_owned(), INLINE.to_owned()]);
            in_block = Some(tag.to_owned());
            continue;
        }
        let mut words = split_words(line);
        if let Some(first) = words.first_mut() {
            *first = first.trim_start_matches("--").to_owned();
            out.push(words);
        }
    }
    out
}

fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some('"') if c == '\\' => {
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            Some(_) => word.push(c),
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            None if !in_word && (c == '#' || c == ';') => break,
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                in_word = true;
            }
            None => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// What a corpus server config says that its client has to match, and where to reach it.
#[derive(Debug)]
struct ServerFacts {
    /// `proto` as written (default udp).
    proto: String,
    port: u16,
    local: Option<String>,
    /// tun or tap (`dev-type`, else from the `dev` name).
    dev_type: String,
    /// The client's control-channel wrapping line, if the server wraps.
    wrap: Option<String>,
    /// `auth`, `cipher`, `data-ciphers`/`ncp-ciphers`, `data-ciphers-fallback`, `comp-lzo`,
    /// `compress`, `allow-compression` lines, as the server has them.
    copied: Vec<String>,
    /// The .1 of `server NET MASK`.
    tunnel4: Ipv4Addr,
    /// The ::1 of `server-ipv6 NET/LEN`.
    tunnel6: Option<Ipv6Addr>,
}

impl ServerFacts {
    fn parse(text: &str) -> Result<ServerFacts> {
        let mut f = ServerFacts {
            proto: "udp".into(),
            port: 1194,
            local: None,
            dev_type: String::new(),
            wrap: None,
            copied: Vec::new(),
            tunnel4: Ipv4Addr::UNSPECIFIED,
            tunnel6: None,
        };
        let mut tunnel4 = None;
        let mut dev = String::new();
        let mut tls_auth: Option<(String, Option<String>)> = None;
        let mut key_direction = None;
        for d in directives(text) {
            let arg = |i: usize| d.get(i).cloned().unwrap_or_default();
            match d[0].as_str() {
                "proto" => f.proto = arg(1),
                "port" | "lport" => f.port = arg(1).parse().context("port")?,
                "local" => f.local = Some(arg(1)),
                "dev" => dev = arg(1),
                "dev-type" => f.dev_type = arg(1),
                "server" => {
                    let net: Ipv4Addr = arg(1).parse().context("server NET")?;
                    tunnel4 = Some(Ipv4Addr::from(u32::from(net) + 1));
                }
                // The explicit form of `server`: the server's own tunnel address.
                "ifconfig" if tunnel4.is_none() => {
                    tunnel4 = Some(arg(1).parse().context("ifconfig LOCAL")?);
                }
                "server-ipv6" => {
                    let net = arg(1);
                    let net: Ipv6Addr = net
                        .split('/')
                        .next()
                        .unwrap_or_default()
                        .parse()
                        .context("server-ipv6 NET")?;
                    f.tunnel6 = Some(Ipv6Addr::from(u128::from(net) + 1));
                }
                "tls-auth" => {
                    let file = if arg(1) == INLINE {
                        "ta.key".into()
                    } else {
                        arg(1)
                    };
                    tls_auth = Some((file, d.get(2).cloned()));
                }
                "key-direction" => key_direction = Some(arg(1)),
                "tls-crypt" => {
                    let file = if arg(1) == INLINE {
                        "tc.key".into()
                    } else {
                        arg(1)
                    };
                    f.wrap = Some(format!("tls-crypt {file}"));
                }
                // The server key cannot serve a client: the fixture client key, made from it.
                "tls-crypt-v2" => f.wrap = Some("tls-crypt-v2 tc2-client.key".into()),
                "auth"
                | "cipher"
                | "data-ciphers"
                | "ncp-ciphers"
                | "data-ciphers-fallback"
                | "comp-lzo"
                | "compress"
                | "allow-compression" => f.copied.push(d.join(" ")),
                _ => {}
            }
        }
        if let Some((file, dir)) = tls_auth {
            // The client's direction is the opposite of the server's; none stays none.
            let client_dir = match dir.or(key_direction).as_deref() {
                Some("0") => " 1",
                Some("1") => " 0",
                _ => "",
            };
            f.wrap = Some(format!("tls-auth {file}{client_dir}"));
        }
        f.tunnel4 = tunnel4.context(
            "no `server NET MASK` (or `ifconfig`) line: only server-mode configs are run by these cases",
        )?;
        if f.dev_type.is_empty() {
            f.dev_type = if dev.starts_with("tap") { "tap" } else { "tun" }.into();
        }
        Ok(f)
    }

    /// The client's `proto`, and the lab address of the server for it.
    fn client_proto(&self) -> Result<(&'static str, &'static str)> {
        Ok(match self.proto.as_str() {
            "udp" | "udp4" => ("udp", "10.77.0.1"),
            "udp6" => ("udp6", "fd77::1"),
            "tcp" | "tcp-server" | "tcp4" | "tcp4-server" => ("tcp-client", "10.77.0.1"),
            "tcp6" | "tcp6-server" => ("tcp6-client", "fd77::1"),
            other => bail!("proto {other} is not a server's"),
        })
    }

    /// The real 2.6 client's profile (fixture files, relative to the case directory).
    fn real_client_profile(&self, case: &str, file: &str) -> String {
        let (proto, addr) = self.client_proto().unwrap_or(("udp", "10.77.0.1"));
        let mut p = format!(
            "# {case}: the real OpenVPN 2.6 client, written by the interop harness to match\n\
             # server/{file} (its proto, port, wrapping, auth, cipher and compression lines).\n\
             client\n\
             dev {}\n\
             proto {proto}\n\
             remote {addr} {}\n\
             nobind\n\
             ca ca.crt\n\
             cert client.crt\n\
             key client.key\n\
             remote-cert-tls server\n",
            self.dev_type, self.port
        );
        for line in self.wrap.iter().chain(&self.copied) {
            p.push_str(line);
            p.push('\n');
        }
        p.push_str("disable-dco\nverb 3\n");
        p
    }

    fn ping_targets(&self) -> Vec<String> {
        let mut t = vec![self.tunnel4.to_string()];
        t.extend(self.tunnel6.map(|a| a.to_string()));
        t
    }

    /// `local 127.x.y.z`: forward 10.77.0.1:PORT to it for the case (see the module text).
    fn loopback_dnat(&self) -> Result<Option<LoopbackDnat>> {
        let Some(local) = &self.local else {
            return Ok(None);
        };
        let addr: Ipv4Addr = match local.parse() {
            Ok(a) => a,
            Err(_) => bail!("local {local}: only a loopback IPv4 `local` is forwarded to"),
        };
        ensure!(
            addr.is_loopback() && !self.proto.contains('6'),
            "local {local} (proto {}): the lab cannot reach it",
            self.proto
        );
        let l4 = if self.proto.starts_with("tcp") {
            "tcp"
        } else {
            "udp"
        };
        LoopbackDnat::add(l4, self.port, &addr).map(Some)
    }
}

/// Rewrites the host of every `remote HOST [PORT] [PROTO]` line to the lab server; returns the
/// new text and the (old, new) lines. Fails when the profile cannot reach `server`.
fn rewrite_remotes(text: &str, server: &ServerFacts) -> Result<(String, Vec<(String, String)>)> {
    let (server_proto, addr) = server.client_proto()?;
    let mut profile_proto = "udp".to_owned();
    let mut profile_port = 1194;
    for d in directives(text) {
        match d[0].as_str() {
            "proto" => profile_proto = d.get(1).cloned().unwrap_or_default(),
            "port" | "rport" => profile_port = d.get(1).and_then(|p| p.parse().ok()).unwrap_or(0),
            _ => {}
        }
    }
    let mut out = String::new();
    let mut changed = Vec::new();
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let ending = &line[body.len()..];
        let words = split_words(body);
        if words.first().map(|w| w.trim_start_matches("--")) != Some("remote") {
            out.push_str(line);
            continue;
        }
        let port: u16 = match words.get(2) {
            Some(p) => p.parse().with_context(|| format!("`{body}`: port"))?,
            None => profile_port,
        };
        let proto = words.get(3).map_or(profile_proto.as_str(), String::as_str);
        let tcp = |p: &str| p.starts_with("tcp");
        ensure!(
            port == server.port && tcp(proto) == tcp(server_proto),
            "`{body}` ({proto} port {port}) does not reach the server ({} port {}): pair the \
             profile with another server",
            server.proto,
            server.port
        );
        let mut new = vec!["remote".to_owned(), addr.to_owned()];
        new.extend(words.iter().skip(2).cloned());
        let new = new.join(" ");
        out.push_str(&new);
        out.push_str(ending);
        changed.push((body.to_owned(), new));
    }
    ensure!(!changed.is_empty(), "the profile has no remote line");
    Ok((out, changed))
}

/// `verify-x509-name NAME name`: the CN the profile wants of the server.
fn pinned_server_name(text: &str) -> Result<Option<String>> {
    for d in directives(text) {
        if d[0] == "verify-x509-name" {
            let kind = d.get(2).map_or("subject", String::as_str);
            ensure!(
                kind == "name",
                "verify-x509-name … {kind}: only the `name` form is given a matching server"
            );
            return Ok(d.get(1).cloned());
        }
    }
    Ok(None)
}

/// Re-signs `dir/server.crt` (same key, same extensions as oracle.sh's) with CN=`cn`.
fn sign_server_cert(dir: &Path, cn: &str) -> Result<()> {
    fs::write(
        dir.join("server-cn.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\n\
         extendedKeyUsage=serverAuth\nnsCertType=server\nsubjectAltName=DNS:server\n",
    )?;
    let openssl = |args: &[&str]| output(Command::new("openssl").args(args).current_dir(dir));
    openssl(&[
        "req",
        "-new",
        "-key",
        "server.key",
        "-subj",
        &format!("/CN={cn}"),
        "-out",
        "server-cn.csr",
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server-cn.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3650",
        "-sha256",
        "-extfile",
        "server-cn.ext",
        "-out",
        "server.crt",
    ])?;
    Ok(())
}

// ---- what the lab lends the files ----

/// An nftables DNAT in ovrs-srv from 10.77.0.1:PORT to a loopback `local`, with
/// `route_localnet` on ovrs-veth-s; both undone when dropped.
struct LoopbackDnat;

impl LoopbackDnat {
    const TABLE: &'static str = "ovrs_corpus";

    fn add(l4: &str, port: u16, to: &Ipv4Addr) -> Result<LoopbackDnat> {
        which("nft").context("nft is needed (apt-get install nftables)")?;
        let nft = |cmd: &str| {
            output(
                Command::new("ip")
                    .args(["netns", "exec", SERVER_NS, "nft"])
                    .arg(cmd),
            )
        };
        let guard = LoopbackDnat;
        set_route_localnet(true)?;
        nft(&format!("add table ip {}", Self::TABLE))?;
        nft(&format!(
            "add chain ip {} prerouting {{ type nat hook prerouting priority dstnat ; }}",
            Self::TABLE
        ))?;
        nft(&format!(
            "add rule ip {} prerouting iifname \"{SERVER_VETH}\" ip daddr 10.77.0.1 {l4} dport \
             {port} dnat to {to}:{port}",
            Self::TABLE
        ))?;
        println!(
            "interop: the server listens on {to} (its `local` line): {SERVER_NS} forwards \
             10.77.0.1:{port}/{l4} to {to}:{port} (nftables DNAT, route_localnet on {SERVER_VETH})"
        );
        Ok(guard)
    }
}

fn set_route_localnet(on: bool) -> Result<()> {
    output(Command::new("ip").args([
        "netns",
        "exec",
        SERVER_NS,
        "sysctl",
        "-q",
        "-w",
        &format!(
            "net.ipv4.conf.{SERVER_VETH}.route_localnet={}",
            u8::from(on)
        ),
    ]))
    .map(drop)
}

impl Drop for LoopbackDnat {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "exec", SERVER_NS, "nft"])
            .arg(format!("delete table ip {}", Self::TABLE))
            .status();
        let _ = set_route_localnet(false);
    }
}

/// ovrs-cli's own resolv.conf for the case (see the module text); removed when dropped.
struct ResolvConf {
    made_dir: bool,
}

impl ResolvConf {
    fn new() -> Result<ResolvConf> {
        let path = Path::new(RESOLV);
        ensure!(
            !path.exists(),
            "{RESOLV} exists already: another case's, left alone"
        );
        let dir = path.parent().context("resolv.conf path")?;
        let made_dir = !dir.exists();
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let guard = ResolvConf { made_dir };
        fs::write(path, RESOLV_TEXT).with_context(|| format!("cannot write {RESOLV}"))?;
        Ok(guard)
    }

    /// Fails unless our client (stopped by now) left ovrs-cli's resolv.conf as it was.
    fn check_restored(&self, tails: &str) -> Result<()> {
        let now = fs::read_to_string(RESOLV).unwrap_or_default();
        ensure!(
            now == RESOLV_TEXT,
            "ovrs-cli's resolv.conf was not restored after our client stopped:\n{now}\n{tails}"
        );
        println!("interop: ovrs-cli's resolv.conf is byte for byte what it was before our client");
        Ok(())
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = fs::remove_file(RESOLV);
        if self.made_dir
            && let Some(dir) = Path::new(RESOLV).parent()
        {
            let _ = fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_follow_openvpn_quoting_comments_and_inline_blocks() {
        let text = "--proto udp\nkey server.key  # private\n; comment\npush \"route 10.0.0.0 255.0.0.0\"\n\
                    <tls-auth>\n-----BEGIN x-----\nremote junk\n</tls-auth>\nkey-direction 0\n";
        let d = directives(text);
        assert_eq!(d[0], ["proto", "udp"]);
        assert_eq!(d[1], ["key", "server.key"]);
        assert_eq!(d[2], ["push", "route 10.0.0.0 255.0.0.0"]);
        assert_eq!(d[3], ["tls-auth", INLINE]);
        assert_eq!(d[4], ["key-direction", "0"]);
        assert_eq!(d.len(), 5);
    }

    #[test]
    fn server_facts_give_a_matching_client() {
        let f = ServerFacts::parse(
            "local 127.0.0.1\nport 443\nproto tcp\ndev tun0\ntls-auth ta.key\nkey-direction 0\n\
             auth SHA512\ncipher AES-256-CBC\ncomp-lzo no\nserver 192.168.255.0 255.255.255.0\n\
             server-ipv6 fddd:1194:1194:1194::/64\n",
        )
        .expect("parses");
        assert_eq!(f.wrap.as_deref(), Some("tls-auth ta.key 1"));
        assert_eq!(
            f.ping_targets(),
            ["192.168.255.1", "fddd:1194:1194:1194::1"]
        );
        let p = f.real_client_profile("c", "x.conf");
        for want in [
            "proto tcp-client\n",
            "remote 10.77.0.1 443\n",
            "auth SHA512\n",
            "comp-lzo no\n",
            "dev tun\n",
        ] {
            assert!(p.contains(want), "{want:?} in\n{p}");
        }
        let (text, changed) =
            rewrite_remotes("client\r\nremote vpn.example.test 443 tcp\r\n", &f).expect("ok");
        assert_eq!(text, "client\r\nremote 10.77.0.1 443 tcp\r\n");
        assert_eq!(changed.len(), 1);
        assert!(rewrite_remotes("proto udp\nremote x 443\n", &f).is_err());
        assert!(ServerFacts::parse("dev tun\n").is_err());
    }
}
