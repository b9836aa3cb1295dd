#!/usr/bin/env bash
# Remakes the fixtures of openvpn-control's keyfile tests (src/tls_options.rs, src/keyfile.rs)
# with the openssl CLI (OpenSSL 3; -legacy needs its legacy provider):
#   bash crates/openvpn-control/tests/data/keyfile/make.sh
#
#   ca.crt                    EC P-256 CA (valid 100 years)
#   server.crt/.key           CN=server, EKU serverAuth; server.p12: no password
#   client.crt/.key           CN=client, EKU clientAuth
#   client.p12                no password, OpenSSL 3's default (PBES2: PBKDF2-SHA256 +
#                             AES-256-CBC, MAC SHA-256), with the CA (as `-passout pass:`)
#   client-legacy.p12         no password, OpenSSL 1.1's algorithms (-legacy: certificates
#                             RC2-40, key 3DES, MAC SHA-1)
#   client-pw.p12             password "testpass", OpenSSL 3's default
#   client-plain.p12          nothing encrypted, no MAC (-keypbe NONE -certpbe NONE -nomac)
#   client-legacy-pw.p12      password "testpass", -legacy
#   client-enc.key            client.key as PKCS#8 PBES2 AES-256 (openssl pkey -aes256)
#   client-trad.key           client.key in the traditional PEM form, AES-256-CBC
#                             (Proc-Type: 4,ENCRYPTED)
#   client-trad-des3.key      the same with DES-EDE3-CBC
#   client-sec1.key           client.key in the traditional form, not encrypted
#   pass.txt                  "testpass"
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/ca.key"
openssl req -x509 -new -key "$tmp/ca.key" -subj "/CN=Keyfile Test CA" -days 36500 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt
for who in server client; do
    if [ $who = server ]; then eku=serverAuth; else eku=clientAuth; fi
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $who.key
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=%s\nsubjectAltName=DNS:%s\n' \
        $eku $who > "$tmp/$who.ext"
    openssl req -new -key $who.key -subj "/CN=$who" -out "$tmp/$who.csr"
    openssl x509 -req -in "$tmp/$who.csr" -CA ca.crt -CAkey "$tmp/ca.key" -CAcreateserial \
        -CAserial "$tmp/ca.srl" -days 36500 -sha256 -extfile "$tmp/$who.ext" -out $who.crt
done
p12() { openssl pkcs12 -export -inkey client.key -in client.crt -certfile ca.crt "$@"; }
openssl pkcs12 -export -inkey server.key -in server.crt -certfile ca.crt -passout pass: -out server.p12
p12 -passout pass: -out client.p12
p12 -legacy -passout pass: -out client-legacy.p12
p12 -passout pass:testpass -out client-pw.p12
p12 -keypbe NONE -certpbe NONE -nomac -passout pass: -out client-plain.p12
p12 -legacy -passout pass:testpass -out client-legacy-pw.p12
openssl pkey -in client.key -aes256 -passout pass:testpass -out client-enc.key
openssl pkey -in client.key -traditional -out client-sec1.key
openssl pkey -in client.key -traditional -aes256 -passout pass:testpass -out client-trad.key
openssl pkey -in client.key -traditional -des3 -passout pass:testpass -out client-trad-des3.key
printf 'testpass\n' > pass.txt
