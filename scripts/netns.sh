#!/usr/bin/env bash
# Usage: scripts/netns.sh up|down|status
#
# Two network namespaces for interop tests, joined by one veth pair:
#
#   ovrs-srv                                  ovrs-cli
#   ovrs-veth-s 10.77.0.1/24 fd77::1/64 <---> ovrs-veth-c 10.77.0.2/24 fd77::2/64
#
# Loopback is up in both, IPv6 duplicate address detection is off so the v6 addresses work at
# once. Only namespaces named ovrs-srv and ovrs-cli are ever created or deleted.
set -euo pipefail

SRV=ovrs-srv
CLI=ovrs-cli
VETH_SRV=ovrs-veth-s
VETH_CLI=ovrs-veth-c

log() { echo "netns: $*"; }
cmd() { log "+ $*"; "$@"; }
exists() { ip netns list | awk '{print $1}' | grep -qx -- "$1"; }

up() {
    if exists "$SRV" || exists "$CLI"; then
        log "ovrs-srv/ovrs-cli already present; run '$0 down' for a fresh start"
        return 0
    fi
    cmd ip netns add "$SRV"
    cmd ip netns add "$CLI"
    cmd ip -n "$SRV" link add "$VETH_SRV" type veth peer name "$VETH_CLI"
    cmd ip -n "$SRV" link set "$VETH_CLI" netns "$CLI"
    local ns
    for ns in "$SRV" "$CLI"; do
        cmd ip -n "$ns" link set lo up
        cmd ip netns exec "$ns" sysctl -q -w net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    done
    cmd ip -n "$SRV" addr add 10.77.0.1/24 dev "$VETH_SRV"
    cmd ip -n "$SRV" addr add fd77::1/64 dev "$VETH_SRV" nodad
    cmd ip -n "$CLI" addr add 10.77.0.2/24 dev "$VETH_CLI"
    cmd ip -n "$CLI" addr add fd77::2/64 dev "$VETH_CLI" nodad
    cmd ip -n "$SRV" link set "$VETH_SRV" up
    cmd ip -n "$CLI" link set "$VETH_CLI" up
}

down() {
    local ns pids
    for ns in "$CLI" "$SRV"; do
        if ! exists "$ns"; then
            continue
        fi
        pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ' || true)
        if [ -n "${pids// /}" ]; then
            log "warning: $ns still has processes ($pids); they are not ours to kill here"
        fi
        cmd ip netns del "$ns"
    done
}

status() {
    local ns
    for ns in "$SRV" "$CLI"; do
        if exists "$ns"; then
            log "$ns:"
            ip -n "$ns" -brief addr
        else
            log "$ns: absent"
        fi
    done
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
