#!/usr/bin/env bash
# Usage: scripts/ovpn-conf.sh server|client OUTFILE PKIDIR [options]
#
# Writes an OpenVPN 2.6 config for the interop namespaces (see netns.sh). The same file is fed
# to the real openvpn and to our binaries. It has no 'daemon' and no 'management' line: the
# caller runs the process in the background itself. Runtime files go next to OUTFILE, named
# after it: NAME.pid (writepid) and NAME.log (log), where NAME is OUTFILE without '.conf'.
#
# Options:
#   --proto udp|tcp|udp6|tcp6                 transport (default udp); *6 uses fd77::1
#   --tls tls-crypt|tls-auth|tls-crypt-v2|none   control-channel wrapping (default tls-crypt)
#   --cipher LIST                             data-ciphers, ':'-separated (default AES-256-GCM)
#   --port N                                  (default 1194)
#   --dev NAME                                tun name (default ovrs-tun-s / ovrs-tun-c)
#   --cert NAME                               client certificate in PKIDIR (default client1)
#   --remote HOST                             client: server address or name (default 10.77.0.1,
#                                             fd77::1 for udp6/tcp6)
#   --verb N                                  (default 4)
#   --server-ipv6 NET|none                    server: the tunnel's IPv6 network (default
#                                             fd08::/64); none = an IPv4-only tunnel
#   --extra 'option args'                     extra line, repeatable
set -euo pipefail

die() { echo "ovpn-conf: $*" >&2; exit 2; }

[ $# -ge 3 ] || die "usage: $0 server|client OUTFILE PKIDIR [--proto P] [--tls T] [--cipher C] [--port N] [--dev D] [--cert C] [--remote H] [--verb N] [--server-ipv6 NET|none] [--extra LINE]..."
ROLE=$1 OUTFILE=$2 PKI=$3
shift 3
case "$ROLE" in server|client) ;; *) die "role must be server or client, not '$ROLE'" ;; esac
[ -d "$PKI" ] || die "PKI directory '$PKI' does not exist (make it with scripts/pki.sh)"
PKI=$(cd "$PKI" && pwd)

PROTO=udp TLS=tls-crypt CIPHERS=AES-256-GCM PORT=1194 DEV="" CERT=client1 REMOTE="" VERB=4
SERVER_IPV6=fd08::/64
EXTRA=()
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || die "option $1 needs a value"
    case "$1" in
        --proto) PROTO=$2 ;;
        --tls) TLS=$2 ;;
        --cipher) CIPHERS=$2 ;;
        --port) PORT=$2 ;;
        --dev) DEV=$2 ;;
        --cert) CERT=$2 ;;
        --remote) REMOTE=$2 ;;
        --verb) VERB=$2 ;;
        --server-ipv6) SERVER_IPV6=$2 ;;
        --extra) EXTRA+=("$2") ;;
        *) die "unknown option '$1'" ;;
    esac
    shift 2
done

if [ -z "$DEV" ]; then
    if [ "$ROLE" = server ]; then DEV=ovrs-tun-s; else DEV=ovrs-tun-c; fi
fi
[ ${#DEV} -le 15 ] || die "--dev '$DEV' is longer than 15 characters"

case "$PROTO" in
    udp | udp6) WIRE=$PROTO ;;
    tcp | tcp6) if [ "$ROLE" = server ]; then WIRE=$PROTO-server; else WIRE=$PROTO-client; fi ;;
    *) die "--proto '$PROTO' is not one of udp, tcp, udp6, tcp6" ;;
esac
case "$PROTO" in *6) SERVER_ADDR=fd77::1 ;; *) SERVER_ADDR=10.77.0.1 ;; esac
if [ -n "$REMOTE" ]; then SERVER_ADDR=$REMOTE; fi

case "$TLS" in
    tls-crypt) WRAP="tls-crypt $PKI/tc.key" ;;
    tls-auth)
        if [ "$ROLE" = server ]; then WRAP="tls-auth $PKI/ta.key 0"; else WRAP="tls-auth $PKI/ta.key 1"; fi ;;
    tls-crypt-v2)
        if [ "$ROLE" = server ]; then WRAP="tls-crypt-v2 $PKI/tc2-server.key"; else WRAP="tls-crypt-v2 $PKI/tc2-$CERT.key"; fi ;;
    none) WRAP="# no control-channel wrapping" ;;
    *) die "--tls '$TLS' is not one of tls-crypt, tls-auth, tls-crypt-v2, none" ;;
esac

mkdir -p "$(dirname "$OUTFILE")"
DIR=$(cd "$(dirname "$OUTFILE")" && pwd)
NAME=$(basename "$OUTFILE" .conf)

{
    echo "# written by scripts/ovpn-conf.sh $ROLE (proto=$PROTO tls=$TLS ciphers=$CIPHERS)"
    if [ "$ROLE" = server ]; then
        echo "mode server"
        echo "tls-server"
        echo "dev $DEV"
        echo "dev-type tun"
        echo "topology subnet"
        echo "proto $WIRE"
        echo "port $PORT"
        echo "server 10.8.0.0 255.255.255.0"
        if [ "$SERVER_IPV6" != none ]; then echo "server-ipv6 $SERVER_IPV6"; fi
        echo "keepalive 10 60"
        echo "disable-dco"
        echo "ca $PKI/ca.crt"
        echo "cert $PKI/server.crt"
        echo "key $PKI/server.key"
        echo "dh none"
    else
        echo "client"
        echo "dev $DEV"
        echo "dev-type tun"
        echo "proto $WIRE"
        echo "remote $SERVER_ADDR $PORT"
        echo "nobind"
        echo "disable-dco"
        echo "ca $PKI/ca.crt"
        echo "cert $PKI/$CERT.crt"
        echo "key $PKI/$CERT.key"
        echo "remote-cert-tls server"
    fi
    echo "data-ciphers $CIPHERS"
    echo "$WRAP"
    echo "writepid $DIR/$NAME.pid"
    echo "log $DIR/$NAME.log"
    echo "verb $VERB"
    for line in ${EXTRA[@]+"${EXTRA[@]}"}; do echo "$line"; done
} >"$OUTFILE"
echo "ovpn-conf: wrote $OUTFILE"
