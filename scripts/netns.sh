#!/usr/bin/env bash
# Usage: scripts/netns.sh up|down|status
#
# Three network namespaces for interop tests, the server's joined to each client's by a veth
# pair:
#
#   ovrs-srv                                     ovrs-cli
#   ovrs-veth-s  10.77.0.1/24 fd77::1/64   <---> ovrs-veth-c  10.77.0.2/24 fd77::2/64
#                                                ovrs-cli2 (a second client host)
#   ovrs-veth-s2 10.77.1.1/24 fd77:1::1/64 <---> ovrs-veth-c2 10.77.1.2/24 fd77:1::2/64
#
# Loopback is up in all, IPv6 duplicate address detection is off so the v6 addresses work at
# once. Only namespaces named ovrs-srv, ovrs-cli and ovrs-cli2 are ever created or deleted.
# `down` also removes /etc/netns/ovrs-*/ (per-namespace files such as a hosts file that
# `ip netns exec` bind-mounts over /etc/hosts; interop cases may create them).
set -euo pipefail

SRV=ovrs-srv
CLI=ovrs-cli
CLI2=ovrs-cli2
VETH_SRV=ovrs-veth-s
VETH_CLI=ovrs-veth-c
VETH_SRV2=ovrs-veth-s2
VETH_CLI2=ovrs-veth-c2

log() { echo "netns: $*"; }
cmd() { log "+ $*"; "$@"; }
exists() { ip netns list | awk '{print $1}' | grep -qx -- "$1"; }

up() {
    if exists "$SRV" || exists "$CLI" || exists "$CLI2"; then
        log "ovrs-srv/ovrs-cli/ovrs-cli2 already present; run '$0 down' for a fresh start"
        return 0
    fi
    cmd ip netns add "$SRV"
    cmd ip netns add "$CLI"
    cmd ip netns add "$CLI2"
    cmd ip -n "$SRV" link add "$VETH_SRV" type veth peer name "$VETH_CLI"
    cmd ip -n "$SRV" link set "$VETH_CLI" netns "$CLI"
    cmd ip -n "$SRV" link add "$VETH_SRV2" type veth peer name "$VETH_CLI2"
    cmd ip -n "$SRV" link set "$VETH_CLI2" netns "$CLI2"
    local ns
    for ns in "$SRV" "$CLI" "$CLI2"; do
        cmd ip -n "$ns" link set lo up
        cmd ip netns exec "$ns" sysctl -q -w net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    done
    cmd ip -n "$SRV" addr add 10.77.0.1/24 dev "$VETH_SRV"
    cmd ip -n "$SRV" addr add fd77::1/64 dev "$VETH_SRV" nodad
    cmd ip -n "$CLI" addr add 10.77.0.2/24 dev "$VETH_CLI"
    cmd ip -n "$CLI" addr add fd77::2/64 dev "$VETH_CLI" nodad
    cmd ip -n "$SRV" addr add 10.77.1.1/24 dev "$VETH_SRV2"
    cmd ip -n "$SRV" addr add fd77:1::1/64 dev "$VETH_SRV2" nodad
    cmd ip -n "$CLI2" addr add 10.77.1.2/24 dev "$VETH_CLI2"
    cmd ip -n "$CLI2" addr add fd77:1::2/64 dev "$VETH_CLI2" nodad
    cmd ip -n "$SRV" link set "$VETH_SRV" up
    cmd ip -n "$CLI" link set "$VETH_CLI" up
    cmd ip -n "$SRV" link set "$VETH_SRV2" up
    cmd ip -n "$CLI2" link set "$VETH_CLI2" up
}

down() {
    local ns pids
    for ns in "$CLI2" "$CLI" "$SRV"; do
        if [ -d "/etc/netns/$ns" ]; then
            cmd rm -rf -- "/etc/netns/$ns"
        fi
        if ! exists "$ns"; then
            continue
        fi
        pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ' || true)
        if [ -n "${pids// /}" ]; then
            log "warning: $ns still has processes ($pids); they are not ours to kill here"
        fi
        cmd ip netns del "$ns"
    done
    if [ -d /etc/netns ]; then rmdir --ignore-fail-on-non-empty /etc/netns; fi
}

status() {
    local ns
    for ns in "$SRV" "$CLI" "$CLI2"; do
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
