#!/usr/bin/env bash
# e2e.sh SCENARIO — end-to-end tests of almd with real multicast applications
# on throw-away network namespaces (scripts/netns-lib.sh). Run as root.
#
# Scenarios:
#   a  iperf 2 multicast through the overlay: h1 sends 50 Mbit/s for 5 s,
#      h2 and h3 receive (-T 8).
#   b  leave: h3's receiver stops; time until h3's status has no group left.
#   c  kill -9 of an interior tree node (4 hosts; h4 is given the group's
#      topic id as node id so it is the root): receivers' longest gap.
#   d  two groups isolated: h2 listens to 239.1.2.3, h3 to 239.1.2.4, h1
#      sends to both; h3 must get only .4.
#   e  malformed traffic: random datagrams blasted at h2's overlay port
#      while a 20 Mbit/s stream runs; almd must stay up and deliver.
#   perf RATE  one overlay hop (2 hosts), iperf -b RATE -l 1024 for 5 s.
#   auto  5 hosts with --tap alm0 and no --tap-addr: each allocates its TAP
#      address in the overlay; the addresses (status and kernel) are
#      reported; h2 and h3 join 239.1.2.9 and h4's `almd groups` must list it.
#   socat  another unmodified application: 3 hosts with --tap alm0 (auto
#      addresses); on h2 two socat receivers of 239.1.2.7:5002 and one of
#      239.1.2.8:5002, on h3 one of 239.1.2.7; a socat sender on h1 sends
#      numbered lines to 239.1.2.7 with TTL 3 through its TAP. Reports the
#      distinct lines each receiver got.
#   mgen  MGEN 5 (numbered UDP messages): 3 hosts with --tap alm0 (auto
#      addresses), h3 given 239.1.2.12's topic id as node id (so it is that
#      group's root); mgen receivers on h2 (239.1.2.11:5011 and
#      239.1.2.12:5012) and h3 (239.1.2.11 only, listening on both ports);
#      mgen on h1 sends 300 messages/s of 512 bytes to each group for 5 s
#      (TTL 8, INTERFACE alm0). From the MGEN logs: distinct sequence numbers
#      sent per group and received per (host, group), loss, senders' source
#      addresses, one-way delay; h3's almd status for the group it forwards
#      but did not join.
#   ffmpeg  a VLC-style stream: 3 hosts (auto addresses); ffmpeg on h1 sends
#      5 s of testsrc 320x240@25 as MPEG-2 video in MPEG-TS to
#      udp://239.1.2.13:5013 (ttl=8, localaddr = h1's TAP address,
#      pkt_size=1316, -re); ffmpeg on h2 joins on its TAP (localaddr),
#      decodes the video and keeps a copy of the stream; it ends 5 s after
#      the last datagram (udp timeout). Reports frames sent, decoded live and
#      counted by ffprobe in the received copy.
#
# Output: human-readable progress on stderr; on stdout exactly one line
#   E2E_JSON {...}        the measurements (the Rust test asserts on them)
# or
#   E2E_SKIP reason       (exit 77) when not root / no /dev/net/tun / no iperf
#                         (or no socat, mgen, ffmpeg for those scenarios).
# Exit 0 when the scenario ran (pass/fail is for the caller to judge from the
# numbers), 1 when the setup failed.
#
# Environment: ALMD, ALM_PROBE (binaries; default: release build in
# $CARGO_TARGET_DIR or ./target), E2E_TAG (namespace tag; default e2e<pid>),
# E2E_DIR (logs; default /tmp/alm-e2e-<tag>, kept when E2E_KEEP=1).
# Runs are serialized with flock on /tmp/alm-e2e.lock.

set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

scenario="${1:-}"
case "$scenario" in
    a | b | c | d | e | perf | auto | socat | mgen | ffmpeg) ;;
    *)
        echo "usage: $0 a|b|c|d|e|perf|auto|socat|mgen|ffmpeg [RATE]" >&2
        exit 2
        ;;
esac

skip() {
    echo "E2E_SKIP $*"
    exit 77
}
[ "$(id -u)" -eq 0 ] || skip "not root (network namespaces and TAP devices need root)"
[ -c /dev/net/tun ] || skip "no /dev/net/tun"
command -v iperf >/dev/null 2>&1 || skip "iperf (iperf 2) is not installed: apt-get install -y iperf"
command -v ip >/dev/null 2>&1 || skip "ip (iproute2) is not installed"
command -v python3 >/dev/null 2>&1 || skip "python3 is not installed (used to read almd's status JSON)"
command -v flock >/dev/null 2>&1 || skip "flock (util-linux) is not installed"
ip netns list >/dev/null 2>&1 || skip "ip netns does not work here"
case "$scenario" in
socat) command -v socat >/dev/null 2>&1 || skip "socat is not installed: apt-get install -y socat" ;;
mgen) command -v mgen >/dev/null 2>&1 || skip "mgen is not installed: apt-get install -y mgen" ;;
ffmpeg)
    for t in ffmpeg ffprobe; do
        command -v "$t" >/dev/null 2>&1 || skip "$t is not installed: apt-get install -y ffmpeg"
    done
    ;;
esac

target="${CARGO_TARGET_DIR:-$root/target}"
ALMD="${ALMD:-$target/release/almd}"
ALM_PROBE="${ALM_PROBE:-$target/release/alm-probe}"
for b in "$ALMD" "$ALM_PROBE"; do
    [ -x "$b" ] || {
        echo "e2e: $b is missing: build with cargo build --release -p alm-mio" >&2
        exit 1
    }
done

export NETNS_TAG="${E2E_TAG:-e2e$$}"
D="${E2E_DIR:-/tmp/alm-e2e-$NETNS_TAG}"
mkdir -p "$D" || exit 1
# shellcheck source=scripts/netns-lib.sh
. "$here/netns-lib.sh"

# One scenario at a time on this machine (they share addresses and ports).
exec 9>/tmp/alm-e2e.lock
flock -w 300 9 || {
    echo "e2e: another e2e run holds /tmp/alm-e2e.lock" >&2
    exit 1
}

cleanup() {
    netns_cleanup
    if [ "${E2E_KEEP:-0}" != 1 ]; then rm -rf "$D"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf 'e2e[%s]: %s\n' "$scenario" "$*" >&2; }
die() {
    log "FAILED SETUP: $*"
    for f in "$D"/almd*.log; do
        [ -f "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }
    done
    exit 1
}

GROUP=239.1.2.3
GROUP2=239.1.2.4
PORT=5001
declare -A ALMD_PID

# nsx I CMD... — like netns_exec, but for `nsx ... &`: the subshell execs
# `ip netns exec`, which execs CMD, so $! is CMD's own pid (signals reach it).
nsx() {
    local i="$1"
    shift
    exec ip netns exec "$(netns_name "$i")" "$@"
}

# start_almd I [extra almd args...]
start_almd() {
    local i="$1"
    shift
    local bs=()
    [ "$i" -ne 1 ] && bs=(--bootstrap "$(netns_addr 1):4000")
    nsx "$i" "$ALMD" run --listen "$(netns_addr "$i"):4000" --tap alm0 \
        --tap-addr "172.16.0.$i/20" --control "$D/h$i.sock" "${bs[@]}" "$@" \
        >"$D/almd$i.log" 2>&1 &
    ALMD_PID[$i]=$!
}

# start_almd_auto I: like start_almd, with the TAP address allocated in the
# overlay. With ALMD_WILDCARD=1, hosts other than h1 listen on 0.0.0.0:4000
# and advertise their underlay address (--advertise). NODE_ID_<I>, if set,
# is host I's node id.
start_almd_auto() {
    local i="$1"
    local bs=() id=() listen=(--listen "$(netns_addr "$i"):4000") v="NODE_ID_$i"
    [ -n "${!v:-}" ] && id=(--node-id "${!v}")
    [ "$i" -ne 1 ] && bs=(--bootstrap "$(netns_addr 1):4000")
    [ "$i" -ne 1 ] && [ "${ALMD_WILDCARD:-0}" = 1 ] &&
        listen=(--listen 0.0.0.0:4000 --advertise "$(netns_addr "$i"):4000")
    nsx "$i" "$ALMD" run "${listen[@]}" --tap alm0 \
        --control "$D/h$i.sock" "${bs[@]}" "${id[@]}" >"$D/almd$i.log" 2>&1 &
    ALMD_PID[$i]=$!
}

status() { "$ALMD" status --control "$D/h$1.sock" --json 2>/dev/null; }

# wait_tap_addr I: prints host I's allocated TAP address once it is held and
# the TAP exists (20 s), or nothing.
wait_tap_addr() {
    for _ in $(seq 1 200); do
        status "$1" >"$D/st$1.json"
        if [ "$(json_get "$D/st$1.json" "(s['address'] or {}).get('state')")" = held ] &&
            [ "$(json_get "$D/st$1.json" "s['tap'] is not None")" = True ]; then
            json_get "$D/st$1.json" "s['address']['addr']"
            return 0
        fi
        sleep 0.1
    done
}

# wait_taps N: the TAP addresses of hosts 1..N, allocated in the overlay,
# into the array `taps` (h1's at index 0); dies if one is missing.
wait_taps() {
    local i a
    taps=()
    for i in $(seq 1 "$1"); do
        a="$(wait_tap_addr "$i")"
        [ -n "$a" ] || die "h$i has no TAP address after 20 s"
        taps+=("$a")
    done
    log "TAP addresses: ${taps[*]} after $(elapsed) s"
}

# start_overlay_auto N: hosts 1..N with start_almd_auto, all joined.
start_overlay_auto() {
    local n="$1" i
    netns_setup "$n" || die "netns_setup $n"
    for i in $(seq 1 "$n"); do
        start_almd_auto "$i"
        if [ "$i" -eq 1 ]; then
            for _ in $(seq 1 50); do
                [ -S "$D/h1.sock" ] && break
                sleep 0.1
            done
        fi
    done
    wait_joined $(seq 1 "$n")
}

# json_get FILE|- PY_EXPR: evaluate a Python expression over the JSON `s`.
json_get() {
    local code="import json,sys; s=json.load(sys.stdin); print($2)"
    if [ "$1" = - ]; then python3 -c "$code"; else python3 -c "$code" <"$1"; fi
}

wait_joined() { # wait_joined I... (10 s)
    local i t
    for i in "$@"; do
        for t in $(seq 1 100); do
            status "$i" | grep -q '"joined":true' && break
            sleep 0.1
        done
        status "$i" | grep -q '"joined":true' || die "h$i did not join in 10 s"
    done
}

# start_overlay N [per-host extra args via NODE_ID_<i>]
start_overlay() {
    local n="$1" i extra
    netns_setup "$n" || die "netns_setup $n"
    for i in $(seq 1 "$n"); do
        extra=()
        local v="NODE_ID_$i"
        [ -n "${!v:-}" ] && extra=(--node-id "${!v}")
        start_almd "$i" "${extra[@]}"
        if [ "$i" -eq 1 ]; then
            for _ in $(seq 1 50); do
                [ -S "$D/h1.sock" ] && break
                sleep 0.1
            done
        fi
    done
    wait_joined $(seq 1 "$n")
    # Let leaf sets settle (every node hears of every other).
    sleep 1
}

iperf_recv() { # iperf_recv I GROUP LOGNAME
    nsx "$1" iperf -s -u -B "$2%alm0" -p "$PORT" -i 1 -e >"$D/$3.log" 2>&1 &
    echo $!
}

iperf_send() { # iperf_send I GROUP RATE SECONDS LOGNAME
    netns_exec "$1" iperf -c "$2%alm0" -u -p "$PORT" -b "$3" -l 1024 -T 8 -t "$4" -i 1 -e \
        >"$D/$5.log" 2>&1
}

# wait_group_member I GROUP: until I's status lists GROUP as a tree member (10 s).
wait_member() {
    local t
    for t in $(seq 1 100); do
        status "$1" >"$D/st.json"
        [ "$(json_get "$D/st.json" "any(g['group']=='$2' and g['member'] and g['role']!='joining' for g in s['groups'])")" = True ] && return 0
        sleep 0.1
    done
    die "h$1 did not join the tree of $2 in 10 s"
}

# iperf_summary LOG -> the receiver's whole-stream report line, if written:
# its interval starts at 0 and ends past 1.5 s, so the first one-second
# interval report ("0.0000-1.0000 sec") is not taken for it.
iperf_summary() {
    grep -E '[0-9]+/ *[0-9]+ +\(' "$1" |
        awk '{ for (i = 1; i < NF; i++) if ($(i + 1) == "sec") { split($i, t, "-");
               if (t[1] + 0 == 0 && t[2] + 0 > 1.5) print; break } }' | tail -n 1
}

# iperf_final LOG -> JSON {lost,total,jitter_ms,mbps} from the final report
# line. The server writes it once it has seen the client's end-of-stream
# datagrams, which can be a moment after the client exits: wait up to 5 s.
iperf_final() {
    local line t
    for t in $(seq 1 50); do
        line="$(iperf_summary "$1")"
        [ -n "$line" ] && break
        sleep 0.1
    done
    if [ -z "$line" ]; then
        echo 'null'
        return
    fi
    printf '%s\n' "$line" >&2
    python3 - "$line" <<'EOF'
import json, re, sys
line = sys.argv[1]
m = re.search(r'([\d.]+) ms +(\d+)/ *(\d+) +\(', line)
r = re.search(r'([\d.]+) ([KMG]?)bits/sec', line)
scale = {'': 1e-6, 'K': 1e-3, 'M': 1.0, 'G': 1e3}
print(json.dumps({
    'lost': int(m.group(2)) if m else None,
    'total': int(m.group(3)) if m else None,
    'jitter_ms': float(m.group(1)) if m else None,
    'mbps': round(float(r.group(1)) * scale[r.group(2)], 2) if r else None,
}))
EOF
}

iperf_sent() { grep -oE 'Sent [0-9]+ datagrams' "$1" | grep -oE '[0-9]+' | tail -n 1; }

alive() { kill -0 "${ALMD_PID[$1]}" 2>/dev/null && echo true || echo false; }

t0=$(date +%s.%N)
elapsed() { python3 -c "import time; print(round(time.time()-$t0,1))"; }

case "$scenario" in
a)
    start_overlay 3
    iperf_recv 2 "$GROUP" r2 >/dev/null
    iperf_recv 3 "$GROUP" r3 >/dev/null
    wait_member 2 "$GROUP"
    wait_member 3 "$GROUP"
    log "sending 50 Mbit/s for 5 s"
    iperf_send 1 "$GROUP" 50M 5 s
    sleep 1
    r2="$(iperf_final "$D/r2.log")"
    r3="$(iperf_final "$D/r3.log")"
    echo "E2E_JSON {\"scenario\":\"a\",\"sent\":$(iperf_sent "$D/s.log"),\"receivers\":{\"h2\":$r2,\"h3\":$r3},\"alive\":[$(alive 1),$(alive 2),$(alive 3)],\"seconds\":$(elapsed)}"
    ;;
b)
    # h1 is the group's root (node id = topic id), so h2 and h3 are leaves.
    NODE_ID_1="$("$ALM_PROBE" topic "$GROUP")"
    start_overlay 3
    iperf_recv 2 "$GROUP" r2 >/dev/null
    p3="$(iperf_recv 3 "$GROUP" r3)"
    wait_member 2 "$GROUP"
    wait_member 3 "$GROUP"
    iperf_send 1 "$GROUP" 5M 2 s
    h3_id="$(status 3 | json_get - "s['node_id']")"
    kill -TERM "$p3"
    t_kill=$(date +%s%N)
    pruned_ms=null
    for _ in $(seq 1 100); do
        status 3 >"$D/st3.json"
        if [ "$(json_get "$D/st3.json" "any(g['group']=='$GROUP' for g in s['groups'])")" = False ]; then
            pruned_ms=$((($(date +%s%N) - t_kill) / 1000000))
            break
        fi
        sleep 0.1
    done
    log "h3's group gone after ${pruned_ms} ms"
    # Does any node still list h3 as a child? (the LEAVE reached the parent)
    sleep 0.5
    still_child=false
    for i in 1 2; do
        status "$i" >"$D/st$i.json"
        [ "$(json_get "$D/st$i.json" "any(c['id']=='$h3_id' for g in s['groups'] for c in g['children'])")" = True ] && still_child=true
    done
    h2_member="$(json_get "$D/st2.json" "any(g['group']=='$GROUP' and g['member'] for g in s['groups'])" | tr 'TF' 'tf')"
    echo "E2E_JSON {\"scenario\":\"b\",\"pruned_ms\":$pruned_ms,\"h3_still_child\":$still_child,\"h2_still_member\":$h2_member,\"alive\":[$(alive 1),$(alive 2),$(alive 3)],\"seconds\":$(elapsed)}"
    ;;
c)
    # h4 is the group's root: an interior node between sender h1 and the
    # receivers h2, h3 (which the status JSON must confirm).
    NODE_ID_4="$("$ALM_PROBE" topic "$GROUP")"
    start_overlay 4
    probes=()
    t_probe=$(date +%s%N)
    for i in 2 3; do
        nsx "$i" "$ALM_PROBE" recv --group "$GROUP" --iface "172.16.0.$i" --port "$PORT" \
            --duration 19 >"$D/p$i.json" 2>"$D/p$i.err" &
        probes+=($!)
    done
    wait_member 2 "$GROUP"
    wait_member 3 "$GROUP"
    iperf_send 1 "$GROUP" 10M 16 s &
    sender=$!
    sleep 4
    # The interior node: neither sender (h1) nor a receiver (h2, h3), and
    # with children on the group's tree according to its status JSON.
    victim=""
    children=0
    for i in 1 2 3 4; do
        status "$i" >"$D/st$i.json"
    done
    for i in 4; do
        n="$(json_get "$D/st$i.json" "sum(len(g['children']) for g in s['groups'] if g['group'] in ('$GROUP', None))")"
        if [ "${n:-0}" -gt 0 ]; then
            victim=$i
            children=$n
        fi
    done
    [ -n "$victim" ] || die "no interior tree node found in status JSON"
    log "killing almd on h$victim (interior node, $children children) with SIGKILL"
    kill -KILL "${ALMD_PID[$victim]}"
    { wait "${ALMD_PID[$victim]}"; } 2>/dev/null
    t_kill_ms=$((($(date +%s%N) - t_probe) / 1000000))
    wait "$sender"
    wait "${probes[@]}"
    p2="$(cat "$D/p2.json")"
    p3="$(cat "$D/p3.json")"
    for i in 1 2 3; do status "$i" >"$D/st$i.json"; done
    new_root="$(for i in 1 2 3; do json_get "$D/st$i.json" "'h$i' if any(g['role']=='root' for g in s['groups']) else ''"; done | tr -d '\n')"
    echo "E2E_JSON {\"scenario\":\"c\",\"victim\":\"h$victim\",\"victim_children\":$children,\"kill_at_ms\":$t_kill_ms,\"new_root\":\"$new_root\",\"sent\":$(iperf_sent "$D/s.log"),\"receivers\":{\"h2\":$p2,\"h3\":$p3},\"alive\":[$(alive 1),$(alive 2),$(alive 3)],\"seconds\":$(elapsed)}"
    ;;
d)
    NODE_ID_1="$("$ALM_PROBE" topic "$GROUP")"
    start_overlay 3
    iperf_recv 2 "$GROUP" r2 >/dev/null
    nsx 3 "$ALM_PROBE" recv --group "$GROUP2" --iface 172.16.0.3 --port "$PORT" \
        --duration 8 >"$D/p3.json" 2>"$D/p3.err" &
    probe=$!
    wait_member 2 "$GROUP"
    wait_member 3 "$GROUP2"
    iperf_send 1 "$GROUP" 20M 4 s &
    s1=$!
    iperf_send 1 "$GROUP2" 1M 4 s2
    wait "$s1"
    wait "$probe"
    status 3 >"$D/st3.json"
    topic3="$("$ALM_PROBE" topic "$GROUP")"
    h3_on_tree3="$(json_get "$D/st3.json" "any(g['topic']=='$topic3' for g in s['groups'])" | tr 'TF' 'tf')"
    h3_tap_out="$(json_get "$D/st3.json" "s['runtime_stats']['tap_tx_frames']")"
    h3_not_sub="$(json_get "$D/st3.json" "s['middleware_stats']['not_subscribed']")"
    r2="$(iperf_final "$D/r2.log")"
    echo "E2E_JSON {\"scenario\":\"d\",\"sent_g1\":$(iperf_sent "$D/s.log"),\"sent_g2\":$(iperf_sent "$D/s2.log"),\"h2_g1\":$r2,\"h3_g2\":$(cat "$D/p3.json"),\"h3_on_g1_tree\":$h3_on_tree3,\"h3_tap_frames_out\":$h3_tap_out,\"h3_not_subscribed\":$h3_not_sub,\"alive\":[$(alive 1),$(alive 2),$(alive 3)],\"seconds\":$(elapsed)}"
    ;;
e)
    # h4 runs no almd: it is the attacker.
    netns_setup 4 || die "netns_setup 4"
    for i in 1 2 3; do
        start_almd "$i"
        [ "$i" -eq 1 ] && sleep 0.3
    done
    wait_joined 1 2 3
    sleep 1
    iperf_recv 2 "$GROUP" r2 >/dev/null
    iperf_recv 3 "$GROUP" r3 >/dev/null
    wait_member 2 "$GROUP"
    wait_member 3 "$GROUP"
    nsx 4 "$ALM_PROBE" blast --to "$(netns_addr 2):4000" --rate 5000 --duration 6 \
        --seed "$$" >"$D/blast.json" 2>&1 &
    blaster=$!
    iperf_send 1 "$GROUP" 20M 6 s
    wait "$blaster"
    sleep 1
    h2_up=$(alive 2)
    status 2 >"$D/st2.json" || h2_up=false
    decode_errors="$(json_get "$D/st2.json" "s['node_stats']['decode_errors']" 2>/dev/null || echo null)"
    r2="$(iperf_final "$D/r2.log")"
    r3="$(iperf_final "$D/r3.log")"
    echo "E2E_JSON {\"scenario\":\"e\",\"blast\":$(cat "$D/blast.json"),\"h2_alive\":$h2_up,\"h2_decode_errors\":$decode_errors,\"sent\":$(iperf_sent "$D/s.log"),\"receivers\":{\"h2\":$r2,\"h3\":$r3},\"alive\":[$(alive 1),$(alive 2),$(alive 3)],\"seconds\":$(elapsed)}"
    ;;
perf)
    rate="${2:-155M}"
    start_overlay 2
    iperf_recv 2 "$GROUP" r2 >/dev/null
    wait_member 2 "$GROUP"
    log "one hop, $rate for 5 s"
    iperf_send 1 "$GROUP" "$rate" 5 s
    sleep 1
    status 2 >"$D/st2.json"
    status 1 >"$D/st1.json"
    r2="$(iperf_final "$D/r2.log")"
    rcvbuf_errors="$(netns_exec 2 awk '/^Udp: [0-9]/ {print $6}' /proc/net/snmp)"
    echo "E2E_JSON {\"scenario\":\"perf\",\"rate\":\"$rate\",\"sent\":$(iperf_sent "$D/s.log"),\"receivers\":{\"h2\":$r2},\"h2_app_rcvbuf_errors\":$rcvbuf_errors,\"h2_tap_tx_frames\":$(json_get "$D/st2.json" "s['runtime_stats']['tap_tx_frames']"),\"h2_delivered\":$(json_get "$D/st2.json" "sum(g['delivered'] for g in s['groups'] if g['group']=='$GROUP')"),\"h1_udp_tx\":$(json_get "$D/st1.json" "s['runtime_stats']['udp_tx_datagrams']"),\"seconds\":$(elapsed)}"
    ;;
auto)
    AGROUP=239.1.2.9
    start_overlay_auto 5
    # Allocation: a claim and two confirmations (~5 s) once joined.
    addrs=()
    for i in 1 2 3 4 5; do
        a="$(wait_tap_addr "$i")"
        if [ -n "$a" ]; then a="\"$a\""; else
            a=null
            log "h$i has no address after 20 s"
        fi
        addrs+=("$a")
    done
    log "addresses: ${addrs[*]} after $(elapsed) s"
    kaddrs=()
    for i in 1 2 3 4 5; do
        k="$(netns_exec "$i" ip -4 -o addr show dev alm0 2>/dev/null | awk '{print $4}' | head -n 1)"
        kaddrs+=("\"$k\"")
    done
    iperf_recv 2 "$AGROUP" r2 >/dev/null
    iperf_recv 3 "$AGROUP" r3 >/dev/null
    wait_member 2 "$AGROUP"
    wait_member 3 "$AGROUP"
    listed=false
    for _ in $(seq 1 50); do
        "$ALMD" groups --control "$D/h4.sock" --json >"$D/g4.json" 2>"$D/g4.err"
        if [ "$(json_get "$D/g4.json" "any(g['group']=='$AGROUP' for g in s['groups'])" 2>/dev/null)" = True ]; then
            listed=true
            break
        fi
        sleep 0.2
    done
    log "h4's groups: $(cat "$D/g4.json" "$D/g4.err" 2>/dev/null | head -c 400)"
    "$ALMD" groups --control "$D/h4.sock" >&2 || true
    g4="$(cat "$D/g4.json" 2>/dev/null)"
    [ -n "$g4" ] || g4=null
    join() {
        local IFS=,
        echo "$*"
    }
    echo "E2E_JSON {\"scenario\":\"auto\",\"addresses\":[$(join "${addrs[@]}")],\"kernel_addresses\":[$(join "${kaddrs[@]}")],\"group_listed\":$listed,\"h4_groups\":$g4,\"alive\":[$(alive 1),$(alive 2),$(alive 3),$(alive 4),$(alive 5)],\"seconds\":$(elapsed)}"
    ;;
socat)
    SGROUP=239.1.2.7
    OGROUP=239.1.2.8
    SPORT=5002
    N=200
    # h2 and h3 also try --listen 0.0.0.0:4000 --advertise 10.77.0.I:4000.
    ALMD_WILDCARD=1 start_overlay_auto 3
    wait_taps 3
    # What the overlay learned: h1's leaf set names h2 and h3 by their
    # advertised addresses, never 0.0.0.0.
    status 1 >"$D/st1.json"
    h1_leaf_addrs="$(json_get "$D/st1.json" "json.dumps(sorted(set(h['addr'] for h in s['leaf_set'])))")"
    h2_listen="$(json_get "$D/st2.json" "s['listen']")"
    h2_advertise="$(json_get "$D/st2.json" "s['advertise']")"
    log "h2 listens on $h2_listen, advertises $h2_advertise; h1's leaf set: $h1_leaf_addrs"
    # socat_recv I GROUP NAME: a socat receiver bound to GROUP:SPORT (so it
    # only gets that group's datagrams), member through alm0, SO_REUSEADDR
    # so several share the port on one host.
    socat_recv() {
        nsx "$1" socat -u \
            "UDP4-RECV:$SPORT,bind=$2,reuseaddr,ip-add-membership=$2:alm0" - \
            >"$D/$3.txt" 2>"$D/$3.err" &
    }
    socat_recv 2 "$SGROUP" r2a
    socat_recv 2 "$SGROUP" r2b
    socat_recv 2 "$OGROUP" r2o
    socat_recv 3 "$SGROUP" r3
    wait_member 2 "$SGROUP"
    wait_member 3 "$SGROUP"
    wait_member 2 "$OGROUP"
    log "sending $N lines to $SGROUP:$SPORT from h1 (TTL 3, via ${taps[0]})"
    # One line per write (paced), so one datagram per line.
    for n in $(seq 1 "$N"); do
        printf 'alm-socat %d\n' "$n"
        sleep 0.005
    done | netns_exec 1 socat -u - \
        "UDP4-DATAGRAM:$SGROUP:$SPORT,ip-multicast-ttl=3,ip-multicast-if=${taps[0]}" \
        2>"$D/s.err" || log "sender: $(cat "$D/s.err")"
    sleep 1
    got() { grep -aE '^alm-socat [0-9]+$' "$D/$1.txt" 2>/dev/null | sort -u | wc -l; }
    junk() { grep -cavE '^alm-socat [0-9]+$' "$D/$1.txt" 2>/dev/null || true; }
    status 2 >"$D/st2.json"
    h2_other_delivered="$(json_get "$D/st2.json" "sum(g['delivered'] for g in s['groups'] if g['group']=='$OGROUP')")"
    h2_delivered="$(json_get "$D/st2.json" "sum(g['delivered'] for g in s['groups'] if g['group']=='$SGROUP')")"
    log "lines: h2 $(got r2a) + $(got r2b), h3 $(got r3), h2 other group $(got r2o)"
    echo "E2E_JSON {\"scenario\":\"socat\",\"sent\":$N,\"taps\":[\"${taps[0]}\",\"${taps[1]}\",\"${taps[2]}\"],\"receivers\":{\"h2a\":$(got r2a),\"h2b\":$(got r2b),\"h3\":$(got r3)},\"other_group\":$(got r2o),\"other_group_bytes\":$(stat -c %s "$D/r2o.txt"),\"junk_lines\":$(($(junk r2a) + $(junk r2b) + $(junk r3))),\"h2_delivered\":$h2_delivered,\"h2_other_delivered\":$h2_other_delivered,\"h2_listen\":\"$h2_listen\",\"h2_advertise\":\"$h2_advertise\",\"h1_leaf_addrs\":$h1_leaf_addrs,\"alive\":[$(alive 1),$(alive 2),$(alive 3)],\"seconds\":$(elapsed)}"
    ;;
mgen)
    # MGEN 5: flows of numbered UDP messages; receivers log a RECV event
    # with the sequence number of each message.
    G1=239.1.2.11
    P1=5011
    G2=239.1.2.12
    P2=5012
    RATE=300 # messages/s per flow
    SECS=5
    # h3 is G2's root (node id = G2's topic id): all G2 traffic passes
    # through h3's almd, which must not deliver it into h3's TAP.
    NODE_ID_3="$("$ALM_PROBE" topic "$G2")"
    start_overlay_auto 3
    wait_taps 3
    # h2 joins both groups; h3 joins only G1 but listens on both ports, so a
    # G2 message that reached h3's sockets would be logged.
    printf '0.0 LISTEN UDP %s,%s\n0.0 JOIN %s INTERFACE alm0 PORT %s\n0.0 JOIN %s INTERFACE alm0 PORT %s\n' \
        "$P1" "$P2" "$G1" "$P1" "$G2" "$P2" >"$D/r2.mgn"
    printf '0.0 LISTEN UDP %s,%s\n0.0 JOIN %s INTERFACE alm0 PORT %s\n' \
        "$P1" "$P2" "$G1" "$P1" >"$D/r3.mgn"
    # One flow per group, each on its own socket (SRC port) with TTL 8 and
    # multicast interface alm0; SEND events logged (txlog).
    {
        printf '0.0 ON 1 UDP SRC 5111 DST %s/%s PERIODIC [%s 512] TTL 8 INTERFACE alm0\n' "$G1" "$P1" "$RATE"
        printf '0.0 ON 2 UDP SRC 5112 DST %s/%s PERIODIC [%s 512] TTL 8 INTERFACE alm0\n' "$G2" "$P2" "$RATE"
        printf '%s.0 OFF 1\n%s.0 OFF 2\n' "$SECS" "$SECS"
    } >"$D/s.mgn"
    declare -A MGEN_PID
    for i in 2 3; do
        nsx "$i" mgen ipv4 input "$D/r$i.mgn" output "$D/r$i.drc" flush >"$D/r$i.err" 2>&1 &
        MGEN_PID[$i]=$!
    done
    wait_member 2 "$G1"
    wait_member 2 "$G2"
    wait_member 3 "$G1"
    log "mgen on h1: $RATE msg/s to each of $G1:$P1 and $G2:$P2 for $SECS s (TTL 8, INTERFACE alm0)"
    netns_exec 1 timeout $((SECS + 10)) mgen ipv4 input "$D/s.mgn" output "$D/s.drc" txlog \
        >"$D/s.err" 2>&1 || log "mgen sender: $(tail -n 3 "$D/s.err")"
    sleep 1
    # Before the receivers leave (and their groups with them).
    for i in 2 3; do status "$i" >"$D/st$i.json"; done
    for i in 2 3; do
        kill -TERM "${MGEN_PID[$i]}" 2>/dev/null
        wait "${MGEN_PID[$i]}" 2>/dev/null
    done
    topic2="$NODE_ID_3"
    h3_g2="$(json_get "$D/st3.json" "json.dumps(next(({k: g[k] for k in ('role', 'member', 'local_listeners', 'delivered', 'packets_in', 'packets_out')} for g in s['groups'] if g['topic']=='$topic2'), None))")"
    h3_not_sub="$(json_get "$D/st3.json" "s['middleware_stats']['not_subscribed']")"
    h3_tap_out="$(json_get "$D/st3.json" "s['middleware_stats']['tap_frames_out']")"
    h2_delivered="$(json_get "$D/st2.json" "json.dumps({g['group']: g['delivered'] for g in s['groups']})")"
    # Distinct sequence numbers sent per group (SEND) and received per
    # (host, group) (RECV, by the destination named in the message).
    counts="$(python3 - "$D" "$G1" "$G2" <<'PY'
import json, re, sys
d, g1, g2 = sys.argv[1:4]
joined = {'h2': [g1, g2], 'h3': [g1]}
ev = re.compile(r'^(\d+):(\d+):([\d.]+) (SEND|RECV) proto>UDP flow>\d+ seq>(\d+) '
                r'(?:src>([\d.]+)/\d+ |srcPort>\d+ )?dst>([\d.]+)/\d+(?: sent>(\d+):(\d+):([\d.]+))?')
def secs(h, m, s):
    return int(h) * 3600 + int(m) * 60 + float(s)
def parse(path, kind):
    seqs, srcs, delays = {g1: set(), g2: set()}, set(), []
    try:
        lines = open(path, errors='replace').readlines()
    except OSError:
        lines = []
    for line in lines:
        m = ev.match(line)
        if not m or m.group(4) != kind:
            continue
        seqs.setdefault(m.group(7), set()).add(int(m.group(5)))
        if m.group(6):
            srcs.add(m.group(6))
        if m.group(8):  # one clock: sender and receivers share this machine
            delays.append((secs(*m.group(1, 2, 3)) - secs(*m.group(8, 9, 10))) % 86400 * 1000)
    return seqs, srcs, sorted(delays)
sent, _, _ = parse(f'{d}/s.drc', 'SEND')
res = {'sent': {g: len(sent[g]) for g in (g1, g2)}, 'joined': joined,
       'receivers': {}, 'sources': {}, 'delay_ms': {}}
for h in ('h2', 'h3'):
    got, srcs, delays = parse(f'{d}/r{h[1]}.drc', 'RECV')
    res['sources'][h] = sorted(srcs)
    res['delay_ms'][h] = {
        'median': round(delays[len(delays) // 2], 2),
        'p99': round(delays[int(len(delays) * 0.99)], 2),
        'max': round(delays[-1], 2),
    } if delays else None
    res['receivers'][h] = {
        g: {
            'received': len(got[g]),
            'loss_pct': round(100.0 * len(sent[g] - got[g]) / len(sent[g]), 2)
            if sent[g] and g in joined[h] else None,
            'not_sent': len(got[g] - sent[g]),
        }
        for g in (g1, g2)
    }
print(json.dumps(res))
PY
)"
    log "counts: $counts"
    rerr="$(cat "$D/r2.drc" "$D/r3.drc" 2>/dev/null | grep -c ' RERR ' || true)"
    echo "E2E_JSON {\"scenario\":\"mgen\",\"groups\":[\"$G1\",\"$G2\"],\"rate\":$RATE,\"send_seconds\":$SECS,\"counts\":$counts,\"rerr\":$rerr,\"h3_g2_tree\":$h3_g2,\"h3_not_subscribed\":$h3_not_sub,\"h3_tap_frames_out\":$h3_tap_out,\"h2_delivered\":$h2_delivered,\"taps\":[\"${taps[0]}\",\"${taps[1]}\",\"${taps[2]}\"],\"alive\":[$(alive 1),$(alive 2),$(alive 3)],\"seconds\":$(elapsed)}"
    ;;
ffmpeg)
    # A VLC-style stream: MPEG-2 video in MPEG-TS over UDP multicast.
    FG=239.1.2.13
    FP=5013
    SECS=5
    FPS=25
    RX_TIMEOUT=5 # s of silence after which the receiver's input ends
    # h3 runs almd with no application: the group's tree may pass through it.
    start_overlay_auto 3
    wait_taps 3
    # Receiver on h2: joins on its TAP (localaddr), decodes the video
    # (-f null, progress in r.progress) and keeps the stream (-c copy).
    nsx 2 ffmpeg -hide_banner -nostdin -loglevel info -progress "$D/r.progress" \
        -analyzeduration 1000000 -i "udp://$FG:$FP?localaddr=${taps[1]}&reuse=1&timeout=${RX_TIMEOUT}000000&overrun_nonfatal=1" \
        -map 0:v:0 -f null - -map 0 -c copy -f mpegts -y "$D/recv.ts" >"$D/r.err" 2>&1 &
    rx=$!
    wait_member 2 "$FG"
    log "ffmpeg on h1: ${SECS} s of testsrc 320x240@$FPS, mpeg2video 1 Mbit/s, MPEG-TS to $FG:$FP (ttl 8, localaddr ${taps[0]})"
    netns_exec 1 timeout $((SECS + 15)) ffmpeg -hide_banner -nostdin -loglevel info \
        -progress "$D/s.progress" -re -f lavfi -i "testsrc=size=320x240:rate=$FPS" -t "$SECS" \
        -c:v mpeg2video -b:v 1M -f mpegts \
        "udp://$FG:$FP?ttl=8&localaddr=${taps[0]}&pkt_size=1316" >"$D/s.err" 2>&1 ||
        log "ffmpeg sender: $(tail -n 3 "$D/s.err")"
    sleep 0.5
    # Before the receiver leaves (and its group with it).
    status 2 >"$D/st2.json"
    h2_delivered="$(json_get "$D/st2.json" "sum(g['delivered'] for g in s['groups'] if g['group']=='$FG')")"
    for i in 1 3; do status "$i" >"$D/st$i.json"; done
    ftopic="$("$ALM_PROBE" topic "$FG")"
    root="$(for i in 1 2 3; do json_get "$D/st$i.json" "'h$i' if any(g['topic']=='$ftopic' and g['role']=='root' for g in s['groups']) else ''"; done | tr -d '\n')"
    # The receiver ends by itself RX_TIMEOUT s after the last datagram (udp
    # timeout: its input then reports an I/O error, which ffmpeg treats as
    # the end of the stream).
    # A SIGINT would not do: ffmpeg only sees it between packets, and a
    # second one also aborts writing the outputs.
    for _ in $(seq 1 150); do
        kill -0 "$rx" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$rx" 2>/dev/null && log "ffmpeg receiver still running 15 s after the stream: killed"
    wait "$rx" 2>/dev/null
    progress_frames() { grep -oE '^frame=[0-9]+' "$1" 2>/dev/null | tail -n 1 | cut -d= -f2; }
    sent="$(progress_frames "$D/s.progress")"
    decoded="$(progress_frames "$D/r.progress")"
    probed="$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames \
        -of default=nw=1:nk=1 "$D/recv.ts" 2>/dev/null | head -n 1)"
    # Decoder / demuxer complaints about the received stream.
    stream_errors="$(grep -ciE 'continuity check failed|error while decoding|corrupt|invalid' "$D/r.err" || true)"
    sent_bytes="$(grep -oE '^total_size=[0-9]+' "$D/s.progress" 2>/dev/null | tail -n 1 | cut -d= -f2)"
    log "frames: sent ${sent:-?}, decoded live ${decoded:-?}, ffprobe of the received TS ${probed:-?}; $stream_errors stream errors; h2's almd delivered $h2_delivered datagrams; tree root ${root:-?}"
    echo "E2E_JSON {\"scenario\":\"ffmpeg\",\"group\":\"$FG\",\"sent_frames\":${sent:-null},\"sent_ts_bytes\":${sent_bytes:-null},\"decoded_frames\":${decoded:-null},\"probed_frames\":${probed:-null},\"recv_ts_bytes\":$(stat -c %s "$D/recv.ts" 2>/dev/null || echo 0),\"stream_errors\":$stream_errors,\"h2_delivered\":$h2_delivered,\"root\":\"$root\",\"taps\":[\"${taps[0]}\",\"${taps[1]}\",\"${taps[2]}\"],\"alive\":[$(alive 1),$(alive 2),$(alive 3)],\"seconds\":$(elapsed)}"
    ;;
esac
exit 0
