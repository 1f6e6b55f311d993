#!/usr/bin/env bash
# demo.sh — alm in one command: three hosts (network namespaces on a private
# bridge), an almd on each, and unmodified iperf 2 multicast from h1 to h2 and
# h3 across the Pastry/Scribe overlay.
#
#   sudo scripts/demo.sh
#
# As root it installs iperf (and iproute2) only if missing, builds almd
# (cargo build --release -p alm-mio), runs the demo and removes everything it
# created. Without root it says so and runs the overlay simulator instead:
#   cargo run --release -p alm-sim -- pastry --nodes 2000 --lookups 5000 --seed 1
#
# Nothing leaves the namespaces it creates: underlay 10.77.0.0/24 on a bridge
# in its own namespace, TAP addresses 172.16.0.0/20, group 239.1.2.3.

set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root" || exit 1

say() { printf '\n== %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh: not running as root, so no network namespaces or TAP devices can be created."
    echo "demo.sh: for the multicast demo run: sudo $0"
    echo "demo.sh: running the overlay simulator instead (no privileges needed):"
    echo "  cargo run --release -p alm-sim -- pastry --nodes 2000 --lookups 5000 --seed 1"
    exec cargo run --release -p alm-sim -- pastry --nodes 2000 --lookups 5000 --seed 1
fi

if ! command -v iperf >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then
    say "installing missing tools (iperf 2, iproute2)"
    pkgs=()
    command -v iperf >/dev/null 2>&1 || pkgs+=(iperf)
    command -v ip >/dev/null 2>&1 || pkgs+=(iproute2)
    if ! { apt-get install -y "${pkgs[@]}" || { apt-get update && apt-get install -y "${pkgs[@]}"; }; }; then
        echo "demo.sh: could not install ${pkgs[*]}: install them and rerun" >&2
        exit 1
    fi
fi
if [ ! -c /dev/net/tun ]; then
    echo "demo.sh: /dev/net/tun is missing: load the tun module (modprobe tun) or run the container with --device /dev/net/tun" >&2
    exit 1
fi

say "building almd (cargo build --release -p alm-mio)"
cargo build --release -p alm-mio || exit 1
ALMD="${CARGO_TARGET_DIR:-$root/target}/release/almd"

export NETNS_TAG="almdemo$$"
# shellcheck source=scripts/netns-lib.sh
. "$here/netns-lib.sh"
netns_require_root || exit 1
work="$(mktemp -d /tmp/alm-demo.XXXXXX)" || exit 1
cleanup() {
    netns_cleanup
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

GROUP=239.1.2.3

# nsx I CMD... & — run CMD in host I so that $! is CMD's own pid.
nsx() {
    local i="$1"
    shift
    exec ip netns exec "$(netns_name "$i")" "$@"
}

say "creating 3 hosts: h1 10.77.0.1, h2 10.77.0.2, h3 10.77.0.3 (namespaces $NETNS_TAG-*)"
netns_setup 3 || exit 1

for i in 1 2 3; do
    bs=()
    [ "$i" -ne 1 ] && bs=(--bootstrap 10.77.0.1:4000)
    echo "h$i: almd run --listen 10.77.0.$i:4000 --tap alm0 --control $work/h$i.sock ${bs[*]}"
    nsx "$i" "$ALMD" run --listen "10.77.0.$i:4000" --tap alm0 \
        --control "$work/h$i.sock" "${bs[@]}" >"$work/almd$i.log" 2>&1 &
    if [ "$i" -eq 1 ]; then
        for _ in $(seq 1 50); do
            [ -S "$work/h1.sock" ] && break
            sleep 0.1
        done
    fi
done

say "waiting for the overlay to form"
for i in 1 2 3; do
    joined=no
    for _ in $(seq 1 100); do
        if "$ALMD" status --control "$work/h$i.sock" --json 2>/dev/null | grep -q '"joined":true'; then
            joined=yes
            break
        fi
        sleep 0.1
    done
    if [ "$joined" != yes ]; then
        echo "demo.sh: h$i did not join the overlay; its log:" >&2
        tail -n 20 "$work/almd$i.log" >&2
        exit 1
    fi
    echo "h$i joined"
done

say "waiting for the TAP addresses (each almd claims one of 172.16.0.0/20 in the overlay)"
for i in 1 2 3; do
    addr=""
    for _ in $(seq 1 200); do
        addr="$("$ALMD" status --control "$work/h$i.sock" --json 2>/dev/null |
            grep -oE '"address":\{[^}]*"state":"held"' | grep -oE '"addr":"[0-9.]+"' | cut -d'"' -f4)"
        [ -n "$addr" ] && break
        sleep 0.1
    done
    if [ -z "$addr" ]; then
        echo "demo.sh: h$i got no TAP address in 20 s; its log:" >&2
        tail -n 20 "$work/almd$i.log" >&2
        exit 1
    fi
    echo "h$i: alm0 is $addr/20"
done
sleep 1

say "receivers: iperf -s -u -B $GROUP%alm0 -p 5001 -i 1 -e   (on h2 and h3)"
for i in 2 3; do
    nsx "$i" iperf -s -u -B "$GROUP%alm0" -p 5001 -i 1 -e >"$work/iperf-h$i.log" 2>&1 &
done
sleep 2

say "sender on h1: iperf -c $GROUP%alm0 -u -p 5001 -b 20M -l 1024 -T 8 -t 5 -i 1 -e"
netns_exec 1 iperf -c "$GROUP%alm0" -u -p 5001 -b 20M -l 1024 -T 8 -t 5 -i 1 -e |
    grep -E 'sec|Sent' | tail -n 3
sleep 1

say "what the receivers got (interval, transfer, rate, jitter, lost/total, latency)"
for i in 2 3; do
    line="$(grep -E '[0-9]+/ *[0-9]+ +\(' "$work/iperf-h$i.log" | grep -E ' 0\.0+-' | tail -n 1)"
    echo "h$i: ${line:-no final report (see $work/iperf-h$i.log)}"
done

say "almd groups (the overlay's directory of active groups, asked on h1)"
"$ALMD" groups --control "$work/h1.sock"

say "almd status"
for i in 1 2 3; do
    json="$("$ALMD" status --control "$work/h$i.sock" --json)"
    if command -v python3 >/dev/null 2>&1; then
        printf '%s' "$json" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("h%s: node %s listen %s joined %s, leaf set %d, routing table %d" % (
    sys.argv[1], s["node_id"][:8], s["listen"], s["joined"], len(s["leaf_set"]),
    s["routing_table_size"]))
for g in s["groups"]:
    print("    group %s: %s, member %s, %d children, in %d pkts, out %d pkts" % (
        g["group"], g["role"], g["member"], len(g["children"]), g["packets_in"],
        g["packets_out"]))
m = s.get("middleware_stats") or {}
print("    TAP: %d frames in, %d out; published %d" % (
    m.get("tap_frames_in", 0), m.get("tap_frames_out", 0), m.get("published", 0)))
' "$i"
    else
        echo "h$i:"
        "$ALMD" status --control "$work/h$i.sock" | sed 's/^/    /' | head -n 40
    fi
done

say "done: cleaning up (namespaces, almd processes, $work)"
