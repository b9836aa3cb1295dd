#!/usr/bin/env bash
# Usage: scripts/pki.sh OUTDIR
#
# Test PKI for interop runs, made with the openssl CLI and openvpn --genkey. Files that already
# exist are kept, so running it again is cheap.
#
#   ca.crt ca.key                EC P-256 CA
#   server.crt server.key        CN=server, EKU serverAuth, SAN DNS:server
#   server-rsa.crt server-rsa.key  the same with an RSA 3072 key (signing costs the server
#                                about 1.4 ms per handshake: `cargo xtask load --server-key rsa`)
#   client1.* client2.*          CN=clientN, EKU clientAuth
#   tc.key                       tls-crypt key
#   ta.key                       static key for tls-auth (direction 0 server, 1 client)
#   tc2-server.key               tls-crypt-v2 server key
#   tc2-client1.key tc2-client2.key   tls-crypt-v2 client keys made from tc2-server.key
set -euo pipefail

OPENVPN=${OPENVPN:-openvpn}
OUT=${1:?usage: $0 OUTDIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
umask 077

log() { echo "pki: $*"; }

ec_key() {
    [ -s "$1" ] && return 0
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:named_curve -out "$1"
}

# rsa_key FILE: an RSA 3072 private key unless FILE exists
rsa_key() {
    [ -s "$1" ] && return 0
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$1" 2>/dev/null
}

ec_key "$OUT/ca.key"
if [ ! -s "$OUT/ca.crt" ]; then
    openssl req -x509 -new -sha256 -days 3650 -key "$OUT/ca.key" -subj "/CN=ovrs-test-ca" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" \
        -out "$OUT/ca.crt"
    log "made ca.crt"
fi

# issue NAME EKU [KEYTYPE]: a CA-signed leaf certificate (KEYTYPE ec, the default, or rsa),
# remade if it does not verify against ca.crt
issue() {
    local name=$1 eku=$2 kind=${3:-ec} ext usage=digitalSignature,keyAgreement
    if [ "$kind" = rsa ]; then
        rsa_key "$OUT/$name.key"
        usage=digitalSignature,keyEncipherment
    else
        ec_key "$OUT/$name.key"
    fi
    if [ -s "$OUT/$name.crt" ] && openssl verify -CAfile "$OUT/ca.crt" "$OUT/$name.crt" >/dev/null 2>&1; then
        return 0
    fi
    ext=$(mktemp)
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,$usage"
        echo "extendedKeyUsage=$eku"
        echo "subjectKeyIdentifier=hash"
        echo "authorityKeyIdentifier=keyid,issuer"
        if [ "$eku" = serverAuth ]; then echo "subjectAltName=DNS:server"; fi
    } >"$ext"
    openssl req -new -key "$OUT/$name.key" -subj "/CN=$name" -out "$OUT/$name.csr"
    openssl x509 -req -sha256 -days 3650 -in "$OUT/$name.csr" \
        -CA "$OUT/ca.crt" -CAkey "$OUT/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
        -extfile "$ext" -out "$OUT/$name.crt" 2>/dev/null
    rm -f "$ext" "$OUT/$name.csr"
    log "made $name.crt ($eku)"
}

issue server serverAuth
issue server-rsa serverAuth rsa
issue client1 clientAuth
issue client2 clientAuth

# static KEYFILE GENKEY-ARGS...: an OpenVPN key file unless it exists
static() {
    local file=$1
    shift
    [ -s "$file" ] && return 0
    "$OPENVPN" "$@" "$file" >/dev/null
    log "made $(basename "$file")"
}

static "$OUT/tc.key" --genkey tls-crypt
static "$OUT/ta.key" --genkey secret
static "$OUT/tc2-server.key" --genkey tls-crypt-v2-server
for c in client1 client2; do
    static "$OUT/tc2-$c.key" --tls-crypt-v2 "$OUT/tc2-server.key" --genkey tls-crypt-v2-client
done

for c in server server-rsa client1 client2; do
    openssl verify -CAfile "$OUT/ca.crt" "$OUT/$c.crt" >/dev/null
done
log "ready: $OUT"
