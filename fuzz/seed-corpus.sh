#!/usr/bin/env bash
# Writes seed inputs into fuzz/corpus/<target>/ (git-ignored). Idempotent:
# seeds are named by content, so re-running adds nothing new.
#
#   frame_parse  the Ethernet frames captured from a Linux 6.18 TAP
#                (../shared/fixtures/tap-frames-linux-6.18.hex, one per line)
#   pastry_wire  one hand-encoded message of each Pastry type (see
#                core/src/wire/pastry.rs for the layouts)
#   node_inputs  nothing: its input is a structured event sequence that the
#                fuzzer grows quickly on its own
#
# Usage: fuzz/seed-corpus.sh   (from anywhere; needs only bash and sha1sum)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fixtures="${ALM_FIXTURES:-$here/../../shared/fixtures}"

# Write the bytes of hex string $2 to directory $1, named by their hash.
put() {
    local dir="$1" hex="$2" tmp
    mkdir -p "$dir"
    tmp="$(mktemp)"
    printf '%b' "$(sed 's/../\\x&/g' <<<"$hex")" >"$tmp"
    mv "$tmp" "$dir/$(sha1sum "$tmp" | cut -c1-16)"
}

# --- frame_parse -----------------------------------------------------------
frames="$fixtures/tap-frames-linux-6.18.hex"
if [[ -r "$frames" ]]; then
    n=0
    while read -r line; do
        line="${line//[[:space:]]/}"
        [[ -z "$line" ]] && continue
        put "$here/corpus/frame_parse" "$line"
        n=$((n + 1))
    done <"$frames"
    echo "frame_parse: $n frames from $frames"
else
    echo "frame_parse: $frames not found, no frame seeds (set ALM_FIXTURES)" >&2
fi

# --- pastry_wire -----------------------------------------------------------
# Common header: version ($v, core/src/wire/mod.rs VERSION), type, 16-byte
# sender id.
v=03
sender=000102030405060708090a0b0c0d0e0f
# A handle: 16-byte id, family 04, 10.0.0.1, port 4000 (0fa0).
handle=f0e0d0c0b0a090807060504030201000040a0000010fa0
# The same with family 06, [fd00::1]:4000.
handle6=1111111111111111111111111111111106fd0000000000000000000000000000010fa0
pw="$here/corpus/pastry_wire"
# Route: hop id, key, hops, service 1 (lookup), origin, payload "hello".
put "$pw" "${v}01${sender}00000000000000077fffffffffffffffffffffffffffffff0301${handle}68656c6c6f"
# Route: a join (service 0) with an IPv6 origin and the one-byte row payload.
put "$pw" "${v}01${sender}0000000000000001000000000000000000000000000000010000${handle6}00"
# RouteAck
put "$pw" "${v}02${sender}ffffffffffffffff"
# State: join final|rows, rtt 1234, two table entries, one leaf, no neighbours.
put "$pw" "${v}03${sender}03000004d202${handle}${handle6}01${handle}00"
# Announce, rtt unknown
put "$pw" "${v}04${sender}ffffffff"
# Ping token 5, active, rtt unknown; Pong token 6, no flags, no report bound
put "$pw" "${v}05${sender}000000000000000501ffffffff"
put "$pw" "${v}06${sender}000000000000000600ffffffff"
# LeafSetRequest; RowRequest row 3
put "$pw" "${v}07${sender}"
put "$pw" "${v}08${sender}03"
echo "pastry_wire: $(ls "$pw" | wc -l) messages"
