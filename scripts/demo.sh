#!/usr/bin/env bash
# Usage: sudo scripts/demo.sh [--keep]
#
# The main job in one command: builds the release binaries, creates two network namespaces
# (scripts/netns.sh), a PKI (scripts/pki.sh), starts OUR openvpn-server with an ordinary
# OpenVPN 2.6 server config, connects the REAL OpenVPN 2.6 client to it, pings the server
# through the tunnel over IPv4 and IPv6, then does the same with OUR openvpn-client. Cleans up
# (kills only the processes it started, deletes its namespaces) unless --keep is given.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/demo
KEEP=${1:-}
[ "$(id -u)" = 0 ] || { echo "demo: run as root (network namespaces and tun devices)"; exit 2; }
command -v openvpn >/dev/null || { echo "demo: install the real client first: apt-get install -y openvpn"; exit 2; }

say() { echo "demo: $*"; }
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    [ "$KEEP" = --keep ] || scripts/netns.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT

cargo build --release -q -p openvpn-server -p openvpn-client
mkdir -p "$OUT"
scripts/netns.sh down >/dev/null 2>&1 || true
scripts/netns.sh up >/dev/null
scripts/pki.sh "$OUT/pki" >/dev/null 2>&1
scripts/ovpn-conf.sh server "$OUT/server.conf" "$OUT/pki" --verb 3
scripts/ovpn-conf.sh client "$OUT/client1.conf" "$OUT/pki" --verb 3

wait_init() { # $1 log, $2 seconds
    for _ in $(seq 1 $(( $2 * 4 ))); do
        grep -q "Initialization Sequence Completed" "$1" 2>/dev/null && return 0
        sleep 0.25
    done
    echo "demo: no 'Initialization Sequence Completed' in $1:"; tail -n 20 "$1"; return 1
}
ping_both() {
    ip netns exec ovrs-cli ping -c 3 -i 0.3 -W 2 10.8.0.1
    ip netns exec ovrs-cli ping -6 -c 3 -i 0.3 -W 2 fd08::1
}

rm -f "$OUT"/*.log
say "starting openvpn-server (ours) on $OUT/server.conf"
ip netns exec ovrs-srv "$ROOT/target/release/openvpn-server" --config "$OUT/server.conf" &
PIDS+=($!)
wait_init "$OUT/server.log" 10

say "connecting the real OpenVPN 2.6 client"
ip netns exec ovrs-cli openvpn --config "$OUT/client1.conf" >/dev/null &
PIDS+=($!)
wait_init "$OUT/client1.log" 30
ping_both
kill "${PIDS[1]}"; wait "${PIDS[1]}" 2>/dev/null || true
unset 'PIDS[1]'
sleep 1

say "connecting openvpn-client (ours) with the same profile"
: > "$OUT/client1.log"
ip netns exec ovrs-cli "$ROOT/target/release/openvpn-client" --config "$OUT/client1.conf" &
PIDS+=($!)
wait_init "$OUT/client1.log" 30
ping_both
say "OK: real client and our client both reached our server over IPv4 and IPv6 (logs in $OUT)"
