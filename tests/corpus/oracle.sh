#!/usr/bin/env bash
# oracle.sh -- run the REAL OpenVPN 2.6 over every file of this corpus and
# print what it does with each, as expected.tsv (a header line, then):
#
#     role <TAB> file <TAB> ok|fail <TAB> note
#
# Usage (as root, with `openvpn` 2.6, `openssl`, `ip` and python3 installed;
# about 4 minutes for the whole corpus on 2 cores):
#     bash tests/corpus/oracle.sh > tests/corpus/expected.tsv
#     bash tests/corpus/oracle.sh client/nyr-client-block-outside-dns.ovpn
#         (named files only, with each materialised config and log on stderr)
#     CORPUS=dir bash copy-of-oracle.sh    # run a copy over the corpus in dir
#     MATERIALISE_TO=DIR bash tests/corpus/oracle.sh server/X.conf [client/Y.ovpn ...]
#         (materialise only: make the PKI, copy the fixture set -- ca.key included,
#         for callers that sign more certificates -- into DIR and write each named
#         file there as step 2 below makes it: DIR/config when one file is named,
#         else DIR/<its file name>, all from the same PKI; nothing is run, no root
#         needed; exit 0.  The interop harness's corpus-* cases use this.)
#
# What it does
# ------------
# 1. Makes a temporary test PKI (the fixture set, below) in a temp directory.
# 2. For each corpus file, copies the fixture set into a fresh run directory,
#    writes the config there with every @@MARKER@@ replaced by the PEM it
#    stands for, and with the lines `daemon`, `log`, `log-append`, `syslog`
#    blanked (there is no option to undo them from the command line, and the
#    oracle needs the log on stdout).  Nothing else in the file is changed.
#    `user`/`group` lines are kept: the corpus only names nobody/nogroup,
#    which exist on Debian/Ubuntu (a file naming a missing user or group
#    would fail here for that reason alone).
# 3. Runs, INSIDE A FRESH NETWORK NAMESPACE that has only `lo` up (so nothing
#    can reach anything but loopback in that namespace; names do not resolve:
#    the namespace gets its own resolv.conf pointing at 127.0.0.1):
#        openvpn --management 127.0.0.1 7505 --config FILE
#                --management-hold --management-query-passwords
#                --verb 3 --disable-dco --suppress-timestamps
#    --management is put on the command line BEFORE --config, so a config that
#    has its own `management` line keeps it (the driver then talks to that one,
#    TCP or unix socket; a password file given there is answered from it).
#    A small management driver (python, below) answers ">HOLD:" with
#    `hold release`, and ">PASSWORD:Need 'X' username/password" or
#    "... password" with `username "X" user` / `password "X" pass`
#    (`password "Private Key" testpass` for the key passphrase) (what a user
#    typing at the prompt would do; file-based auth-user-pass/askpass are read
#    from the files as usual).  The private key of client-enc.key has the
#    passphrase in pass.txt ("testpass").
# 4. Classifies, from openvpn's output:
#      ok   -- a line matching $OK_RE appeared.  These markers were chosen by
#              experiment: openvpn only gets there after all options were
#              parsed and checked and all files (certs, keys, CRL, DH, tls-auth/
#              crypt keys, pkcs12, capath, plugins, ipp/status files) were
#              loaded, i.e. in init_instance at link-socket / tun set-up time:
#                "Initialization Sequence Completed"  (servers, tun opened)
#                "TUN/TAP device ... opened"          (p2p, tun at start)
#                "UDP...link local" / "TCP...link local" / "Listening for
#                incoming TCP connection" / "Attempting to establish TCP
#                connection" / "RESOLVE: Cannot resolve host address"
#                "Could not determine IPv4/IPv6 protocol" is NOT a marker.
#              "Need hold release" alone is NOT enough: it is printed before
#              the certificates and keys are loaded.
#              ... and openvpn did not stop with "Exiting due to fatal error"
#              (an --up script refused by --script-security right after the
#              tun device opened is a fatal error of the real openvpn: fail).
#      fail -- otherwise.  The note is its first "Options error" line, else the
#              line before "Exiting due to fatal error", else its first line
#              with "ERROR"/"error"/"Cannot"/"failed"; leading time stamps are
#              cut, and "config:N" is the line number in the corpus file (the
#              materialised copy keeps the line numbers: removed lines are left
#              blank, and a marker's PEM lines all count as the marker's line).
#    The namespace is deleted afterwards; only the pids this script started are
#    ever signalled.
#
# The fixture set (file names the corpus refers to; all relative)
# ----------------------------------------------------------------
#   ca.crt            EC P-256 CA
#   server.crt/.key   EKU serverAuth + nsCertType server, CN=server
#   client.crt/.key   EKU clientAuth + nsCertType client, CN=client
#   client-enc.key    client.key encrypted (AES-256), passphrase in pass.txt
#   client.p12 server.p12  PKCS#12 of cert+key+CA, no password
#   dh.pem            RFC 7919 ffdhe2048 group
#   ta.key tc.key static.key   `openvpn --genkey secret`
#   tc2-server.key / tc2-client.key   tls-crypt-v2 server key and a client key
#   crl.pem           empty CRL signed by the CA;  crl-dir/ (empty directory,
#                     for `crl-verify crl-dir dir`)
#   capath/           the CA in OpenSSL hashed-directory form
#   auth.txt          "user\npass";  pass.txt "testpass";  proxy-auth.txt
#                     "proxyuser\nproxypass";  mgmt-pw.txt "mgmtpass"
#   ipp.txt (empty)   ccd/ (with one file, ccd/client)
#   executable no-op scripts: update-resolv-conf up.sh down.sh home.up
#     office.up client-connect.sh client-disconnect.sh learn-address.sh
#     checkpsw.sh auth-verify.sh tls-verify.sh route-up.sh ovpn-linkup
#     ovpn-linkdown
#
# Inline-block markers (one line each, replaced by the file's PEM):
#   @@CA@@ ca.crt   @@CERT@@ server.crt|client.crt (by role)
#   @@KEY@@ server.key|client.key   @@TA@@ ta.key   @@TC@@ tc.key
#   @@TC2@@ tc2-server.key|tc2-client.key   @@DH@@ dh.pem
#   @@CRL@@ crl.pem (inline <crl-verify>, as in PIA's profiles)
#   @@SECRET@@ static.key (inline <secret>)
set -u
export LC_ALL=C
HERE=${CORPUS:-$(cd "$(dirname "$0")" && pwd)}
OPENVPN=${OPENVPN:-openvpn}
TIMEOUT=${TIMEOUT:-10}
OK_RE='Initialization Sequence Completed|TUN/TAP device .* opened|(UDP|TCP)(v4|v6)?(_SERVER|_CLIENT)? link local|link local \(bound\)|Listening for incoming TCP connection|Attempting to establish TCP connection|RESOLVE: Cannot resolve host address'

# OURS=DIR: judge openvpn-rs instead: DIR/openvpn-server or DIR/openvpn-client with
# --check-config (parse, read every file, validate; nothing is opened on the network, so no
# namespace and no root are needed). The real openvpn is still used to make the keys.
OURS=${OURS:-}
MATERIALISE_TO=${MATERIALISE_TO:-}
if [ -z "$OURS" ] && [ -z "$MATERIALISE_TO" ]; then
    [ "$(id -u)" = 0 ] || { echo "oracle.sh: must run as root (ip netns)" >&2; exit 2; }
fi
command -v "$OPENVPN" >/dev/null || { echo "oracle.sh: no openvpn" >&2; exit 2; }

WORK=$(mktemp -d /tmp/ovpn-oracle.XXXXXX)
CUR_PID= CUR_NS=
cleanup() {
    [ -n "$CUR_PID" ] && kill -KILL "$CUR_PID" 2>/dev/null
    [ -n "$CUR_NS" ] && { ip netns del "$CUR_NS" 2>/dev/null; rm -rf "/etc/netns/$CUR_NS"; }
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
PKI=$WORK/pki
mkdir -p "$PKI"

make_pki() {
    cd "$PKI" || exit 2
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
    openssl req -x509 -new -key ca.key -subj "/CN=Test CA" -days 3650 -sha256 \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt 2>/dev/null
    local who eku ns
    for who in server client; do
        if [ $who = server ]; then eku=serverAuth; ns=server; else eku=clientAuth; ns=client; fi
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $who.key 2>/dev/null
        printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=%s\nnsCertType=%s\nsubjectAltName=DNS:%s\n' \
            $eku $ns $who > $who.ext
        openssl req -new -key $who.key -subj "/CN=$who" -out $who.csr 2>/dev/null
        openssl x509 -req -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
            -days 3650 -sha256 -extfile $who.ext -out $who.crt 2>/dev/null
        openssl pkcs12 -export -inkey $who.key -in $who.crt -certfile ca.crt \
            -passout pass: -out $who.p12 2>/dev/null
    done
    openssl pkey -in client.key -aes256 -passout pass:testpass -out client-enc.key 2>/dev/null
    # empty CRL
    printf '[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\ncrlnumber=crlnumber\ndefault_md=sha256\ndefault_crl_days=3650\n' > ca.cnf
    : > index.txt; echo 01 > crlnumber
    openssl ca -config ca.cnf -gencrl -keyfile ca.key -cert ca.crt -out crl.pem 2>/dev/null
    mkdir -p crl-dir capath ccd
    cp ca.crt capath/; openssl rehash capath 2>/dev/null || c_rehash capath >/dev/null 2>&1
    cat > dh.pem <<'EOF'
-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
EOF
    "$OPENVPN" --genkey secret ta.key >/dev/null 2>&1
    "$OPENVPN" --genkey secret tc.key >/dev/null 2>&1
    "$OPENVPN" --genkey secret static.key >/dev/null 2>&1
    "$OPENVPN" --genkey tls-crypt-v2-server tc2-server.key >/dev/null 2>&1
    "$OPENVPN" --tls-crypt-v2 tc2-server.key --genkey tls-crypt-v2-client tc2-client.key >/dev/null 2>&1
    printf 'user\npass\n' > auth.txt
    printf 'testpass\n' > pass.txt
    printf 'proxyuser\nproxypass\n' > proxy-auth.txt
    printf 'mgmtpass\n' > mgmt-pw.txt
    : > ipp.txt
    printf 'ifconfig-push 10.8.0.50 255.255.255.0\n' > ccd/client
    local s
    for s in update-resolv-conf up.sh down.sh home.up office.up client-connect.sh \
             client-disconnect.sh learn-address.sh checkpsw.sh auth-verify.sh \
             tls-verify.sh route-up.sh ovpn-linkup ovpn-linkdown; do
        printf '#!/bin/sh\nexit 0\n' > "$s"; chmod 755 "$s"
    done
    rm -f ./*.csr ./*.ext ca.srl index.txt* crlnumber* ca.cnf
    for s in ca.crt server.crt server.key client.crt client.key dh.pem ta.key tc.key \
             tc2-server.key tc2-client.key crl.pem static.key client.p12; do
        [ -s "$s" ] || { echo "oracle.sh: fixture $s was not made" >&2; exit 2; }
    done
    cd - >/dev/null || exit 2
}

# management driver: see the header.  argv: target logfile pid timeout
cat > "$WORK/driver.py" <<'EOF'
import os, re, socket, sys, time
target, logfile, pid, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
ok_re = re.compile(os.environ["OK_RE"])
pwfile = os.environ.get("MGMT_PW", "")
deadline = time.time() + timeout
def alive():
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
def marker():
    try:
        with open(logfile, errors="replace") as f:
            return ok_re.search(f.read()) is not None
    except OSError:
        return False
sock = None
while time.time() < deadline and alive() and sock is None:
    try:
        if target.startswith("unix:"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(target[5:])
        else:
            host, port = target.rsplit(":", 1)
            s = socket.create_connection((host, int(port)), timeout=1)
        s.setblocking(False)
        sock = s
    except OSError:
        time.sleep(0.1)
buf = b""
seen_at = None
while time.time() < deadline and alive():
    if seen_at is None and marker():
        seen_at = time.time()
    if seen_at is not None and time.time() - seen_at > 0.5:
        break
    if sock is not None:
        try:
            data = sock.recv(4096)
            if not data:
                sock = None
            buf += data
        except BlockingIOError:
            pass
        except OSError:
            sock = None
        while sock is not None:
            if buf.startswith(b"ENTER PASSWORD:"):
                buf = buf[len(b"ENTER PASSWORD:"):]
                sock.sendall(pwfile.encode() + b"\n")
                continue
            if b"\n" not in buf:
                break
            line, buf = buf.split(b"\n", 1)
            line = line.decode(errors="replace").strip()
            if line.startswith(">HOLD:"):
                sock.sendall(b"hold release\n")
            m = re.match(r">PASSWORD:Need '([^']*)' (username/password|password)", line)
            if m:
                what = m.group(1)
                if m.group(2) == "username/password":
                    sock.sendall(('username "%s" user\n' % what).encode())
                sock.sendall(('password "%s" pass\n' % what).encode()
                             if what != "Private Key" else
                             ('password "%s" testpass\n' % what).encode())
    time.sleep(0.05)
if sock is not None and alive():
    try:
        sock.sendall(b"signal SIGTERM\n")
    except OSError:
        pass
EOF

# materialise one corpus file into run dir $2 (role $3) as $2/${4:-config}
materialise() {
    local src=$1 dir=$2 role=$3 name=${4:-config}
    python3 - "$src" "$dir" "$role" "$name" <<'EOF'
import sys, os, re
src, d, role, name = sys.argv[1:5]
pem = lambda n: open(os.path.join(d, n)).read().rstrip("\n")
m = {"@@CA@@": "ca.crt", "@@CERT@@": role + ".crt", "@@KEY@@": role + ".key",
     "@@TA@@": "ta.key", "@@TC@@": "tc.key", "@@DH@@": "dh.pem", "@@CRL@@": "crl.pem",
     "@@TC2@@": "tc2-server.key" if role == "server" else "tc2-client.key",
     "@@SECRET@@": "static.key"}
raw = open(src, "rb").read().decode("utf-8", errors="surrogateescape")
out = []
linemap = []          # materialised line number -> line number in the corpus file
for n, line in enumerate(raw.splitlines(keepends=True), 1):
    body = line.rstrip("\r\n")
    nl = line[len(body):]
    key = body.strip()
    if key in m:
        lines = pem(m[key]).split("\n")
        out.append((nl or "\n").join(lines) + (nl or "\n"))
        linemap += [n] * len(lines)
        continue
    w = re.split(r"\s+", key.lstrip("-"), maxsplit=1)[0] if key else ""
    if w in ("daemon", "log", "log-append", "syslog"):
        line = nl          # blanked, so that line numbers stay those of the corpus file
    out.append(line)
    linemap.append(n)
open(os.path.join(d, name), "wb").write("".join(out).encode("utf-8", errors="surrogateescape"))
open(os.path.join(d, "linemap" if name == "config" else name + ".linemap"), "w").write(
    "\n".join(map(str, linemap)) + "\n")
EOF
}

# which management socket will the instance listen on?
mgmt_target() {
    python3 - "$1" <<'EOF'
import sys, re, shlex
tgt = "127.0.0.1:7505"; pw = ""
for line in open(sys.argv[1], errors="replace"):
    s = line.strip()
    if not s or s[0] in "#;": continue
    try: w = shlex.split(s, comments=False)
    except ValueError: w = s.split()
    if not w: continue
    w[0] = w[0].lstrip("-")
    if w[0] == "management" and len(w) >= 3:
        if w[2] == "unix":
            tgt = "unix:" + w[1]; pw = w[3] if len(w) > 3 else ""
        else:
            tgt = "%s:%s" % (w[1], w[2]); pw = w[3] if len(w) > 3 else ""
print(tgt); print(pw)
EOF
}

# classify one run: prints "ok" or "fail<TAB>note" (see the header)
classify() {
    OK_RE="$OK_RE" python3 - "$1" "$2" <<'EOF'
import os, re, sys
log, linemap = sys.argv[1], sys.argv[2]
ok_re = re.compile(os.environ["OK_RE"])
ts = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")
lines = [ts.sub("", l.rstrip("\r\n")) for l in open(log, errors="replace")]
try:
    lm = [int(x) for x in open(linemap).read().split()]
except OSError:
    lm = []
def fix(note):
    # "config:N" numbers are those of the materialised file; map them back
    def sub(m):
        n = int(m.group(1))
        return "config:%d" % (lm[n - 1] if 0 < n <= len(lm) else n)
    return re.sub(r"config:(\d+)", sub, note).replace("\t", " ")[:300]
fatal = [i for i, l in enumerate(lines) if l.startswith("Exiting due to fatal error")]
marker = any(ok_re.search(l) for l in lines)
if marker and not fatal:
    print("ok"); sys.exit()
note = next((l for l in lines if "Options error" in l), None)
if note is None and fatal:
    for l in reversed(lines[:fatal[0]]):
        if l.strip() and not l.startswith("MANAGEMENT:"):
            note = l; break
if note is None:
    note = next((l for l in lines if re.search(r"ERROR|FATAL|[Ee]rror|Cannot|failed", l)), None)
if note is None:
    rest = [l for l in lines if l.strip()]
    note = "no start-up marker before the time-out; last line: " + (rest[-1] if rest else "(no output)")
print("fail\t" + fix(note.strip()))
EOF
}

run_one() {
    local role=$1 file=$2 verbose=${3:-0}
    local name; name=$(basename "$file")
    local dir=$WORK/run/$role-$name
    mkdir -p "$dir"
    cp -a "$PKI/." "$dir/"
    materialise "$file" "$dir" "$role"
    if [ -n "$OURS" ]; then
        local out
        if out=$(cd "$dir" && "$OURS/openvpn-$role" --check-config --config config 2>&1); then
            printf '%s\t%s\tok\t\n' "$role" "$name"
        else
            printf '%s\t%s\tfail\t%s\n' "$role" "$name" \
                "$(printf '%s\n' "$out" | grep -m1 -E 'config refused|openvpn-(server|client):' | sed 's/^config refused: //')"
        fi
        if [ "$verbose" = 1 ]; then printf '%s\n' "$out" >&2; fi
        return 0
    fi
    local t pwf
    { read -r t; read -r pwf; } < <(mgmt_target "$dir/config")
    local mgmt_pw=""
    [ -n "$pwf" ] && [ -f "$dir/$pwf" ] && mgmt_pw=$(head -n1 "$dir/$pwf")
    local ns=ovpnoracle$$x$RANDOM
    CUR_NS=$ns
    ip netns add "$ns" || { printf '%s\t%s\tfail\toracle: could not create netns\n' "$role" "$name"; return; }
    mkdir -p "/etc/netns/$ns"; echo "nameserver 127.0.0.1" > "/etc/netns/$ns/resolv.conf"
    ip netns exec "$ns" ip link set lo up
    local log=$dir/openvpn.log
    ( cd "$dir" && exec ip netns exec "$ns" "$OPENVPN" --management 127.0.0.1 7505 \
        --config config --management-hold --management-query-passwords \
        --verb 3 --disable-dco --suppress-timestamps ) > "$log" 2>&1 < /dev/null &
    local pid=$!
    CUR_PID=$pid
    ( cd "$dir" && OK_RE="$OK_RE" MGMT_PW="$mgmt_pw" exec ip netns exec "$ns" \
        python3 "$WORK/driver.py" "$t" "$log" "$pid" "$TIMEOUT" ) >/dev/null 2>&1
    local i
    for i in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null; sleep 1; fi
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null; fi
    wait "$pid" 2>/dev/null
    CUR_PID=
    ip netns del "$ns" 2>/dev/null
    rm -rf "/etc/netns/$ns"
    CUR_NS=
    local verdict
    verdict=$(classify "$log" "$dir/linemap")
    case $verdict in
        ok) printf '%s\t%s\tok\t\n' "$role" "$name" ;;
        *)  printf '%s\t%s\t%s\n' "$role" "$name" "$verdict" ;;
    esac
    [ "$verbose" = 1 ] && { echo "----- $dir/config"; cat "$dir/config" | grep -v '^[A-Za-z0-9+/=]\{40,\}$'; echo "----- log"; cat "$log"; } >&2
}

make_pki
if [ -n "$MATERIALISE_TO" ]; then
    [ $# -gt 0 ] || { echo "oracle.sh: MATERIALISE_TO needs the corpus files to materialise" >&2; exit 2; }
    mkdir -p "$MATERIALISE_TO" && cp -a "$PKI/." "$MATERIALISE_TO/" || exit 2
    for a in "$@"; do
        f=$HERE/$a; [ -f "$f" ] || f=$a
        [ -f "$f" ] || { echo "oracle.sh: no corpus file $a" >&2; exit 2; }
        case $f in */server/*) r=server ;; *) r=client ;; esac
        if [ $# -eq 1 ]; then out=config; else out=$(basename "$f"); fi
        materialise "$f" "$MATERIALISE_TO" "$r" "$out" || exit 2
    done
    exit 0
fi
if [ $# -gt 0 ]; then
    for a in "$@"; do
        f=$HERE/$a; [ -f "$f" ] || f=$a
        case $f in */server/*) r=server ;; *) r=client ;; esac
        run_one "$r" "$f" 1
    done
    exit 0
fi
printf 'role\tfile\treal\tnote\n'
for role in server client; do
    for f in "$HERE/$role"/*; do
        [ -f "$f" ] || continue
        run_one "$role" "$f"
    done
done
