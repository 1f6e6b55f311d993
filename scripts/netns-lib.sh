#!/usr/bin/env bash
# netns-lib.sh — throw-away test networks of network namespaces, for alm's
# end-to-end tests and the demo.
#
# Source it:   . scripts/netns-lib.sh
#              netns_require_root && netns_require_tools ip iperf || exit 1
#              netns_trap_cleanup              # cleanup on EXIT/INT/TERM/HUP
#              netns_setup 3                   # hosts 1..3
#              netns_exec 1 ping -c1 "$(netns_addr 2)"
#              netns_cleanup                   # idempotent; also run by the trap
# Or run it:   scripts/netns-lib.sh selftest [N]   (root; creates, pings, cleans up)
#              scripts/netns-lib.sh cleanup TAG    (remove a crashed run's namespaces)
#
# Topology: one "switch" namespace holding a Linux bridge br0, and N host
# namespaces, each joined to the bridge by a veth pair (eth0 in the host,
# vhI in the switch). Underlay addresses are 10.77.0.I/24 on eth0. Loopback is
# up with multicast on in every host. All interfaces are created inside the
# namespaces; nothing is added to, or routed through, the caller's own
# network namespace.
#
# Names: every namespace is "$NETNS_TAG-<something>", hosts "$NETNS_TAG-alm-hI",
# the switch "$NETNS_TAG-alm-sw". NETNS_TAG defaults to "almt<pid>", so two runs
# never collide; set it before netns_setup to choose your own.

# Not `set -e` here: this file is sourced into the caller's shell.

NETNS_TAG="${NETNS_TAG:-almt$$}"
NETNS_SUBNET_PREFIX="10.77.0"
NETNS_PREFIX_LEN=24
NETNS_COUNT=0
_NETNS_CLEANING=0

_netns_err() { printf 'netns-lib: %s\n' "$*" >&2; }

# netns_require_root — fail with a clear message unless running as root.
netns_require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        _netns_err "must run as root (creating network namespaces needs CAP_SYS_ADMIN and CAP_NET_ADMIN): rerun with sudo"
        return 1
    fi
    if ! ip netns list >/dev/null 2>&1; then
        _netns_err "'ip netns' does not work here: the kernel or container does not allow network namespaces"
        return 1
    fi
}

# netns_require_tools TOOL... — fail with an install hint for each missing tool.
netns_require_tools() {
    local missing=0 tool pkg
    for tool in "$@"; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            case "$tool" in
                ip | bridge) pkg=iproute2 ;;
                iperf) pkg="iperf (iperf 2; iperf3 has no multicast)" ;;
                ping) pkg=iputils-ping ;;
                *) pkg="$tool" ;;
            esac
            _netns_err "required tool '$tool' is not installed: install it with apt-get install -y ${pkg%% *} (package: $pkg)"
            missing=1
        fi
    done
    return "$missing"
}

# netns_name I — name of host I's namespace; netns_switch — the switch's.
netns_name() { printf '%s-alm-h%s\n' "$NETNS_TAG" "$1"; }
netns_switch() { printf '%s-alm-sw\n' "$NETNS_TAG"; }

# netns_addr I — underlay IPv4 address of host I (no prefix length).
netns_addr() { printf '%s.%s\n' "$NETNS_SUBNET_PREFIX" "$1"; }

# netns_exec I CMD... — run CMD inside host I's namespace.
netns_exec() {
    local i="$1"
    shift
    ip netns exec "$(netns_name "$i")" "$@"
}

# netns_list — the namespaces of this run (by tag), one per line.
netns_list() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -F -- "$NETNS_TAG-" |
        while read -r ns; do
            case "$ns" in "$NETNS_TAG"-*) printf '%s\n' "$ns" ;; esac
        done
}

# netns_setup N — create the switch and hosts 1..N. Undoes itself on failure.
netns_setup() {
    local n="${1:-}" i ns sw
    case "$n" in
        '' | *[!0-9]*)
            _netns_err "netns_setup needs a host count, e.g. netns_setup 3"
            return 1
            ;;
    esac
    if [ "$n" -lt 1 ] || [ "$n" -gt 250 ]; then
        _netns_err "netns_setup: $n hosts is out of range: use 1 to 250 (addresses $NETNS_SUBNET_PREFIX.1-250)"
        return 1
    fi
    case "$NETNS_TAG" in
        '' | *[!A-Za-z0-9_.-]*)
            _netns_err "NETNS_TAG '$NETNS_TAG' must be non-empty letters, digits, '.', '_' or '-'"
            return 1
            ;;
    esac
    if [ -n "$(netns_list)" ]; then
        _netns_err "namespaces tagged '$NETNS_TAG' already exist: run netns_cleanup first or set another NETNS_TAG"
        return 1
    fi
    sw="$(netns_switch)"
    {
        ip netns add "$sw" &&
            ip -n "$sw" link set lo up &&
            ip -n "$sw" link add br0 type bridge stp_state 0 mcast_snooping 0 &&
            ip -n "$sw" link set br0 up
    } || {
        _netns_err "creating switch namespace $sw failed"
        netns_cleanup
        return 1
    }
    for i in $(seq 1 "$n"); do
        ns="$(netns_name "$i")"
        {
            ip netns add "$ns" &&
                ip -n "$ns" link set lo up &&
                ip -n "$ns" link set lo multicast on &&
                ip -n "$sw" link add "vh$i" type veth peer name eth0 netns "$ns" &&
                ip -n "$sw" link set "vh$i" master br0 &&
                ip -n "$sw" link set "vh$i" up &&
                ip -n "$ns" link set eth0 multicast on &&
                ip -n "$ns" addr add "$(netns_addr "$i")/$NETNS_PREFIX_LEN" dev eth0 &&
                ip -n "$ns" link set eth0 up
        } || {
            _netns_err "creating host namespace $ns failed"
            netns_cleanup
            return 1
        }
    done
    NETNS_COUNT="$n"
}

# netns_lo_multicast I — let multicast apps in host I talk over loopback
# (route 224.0.0.0/4 via lo with a source). Do not combine with almd's TAP in
# the same host: both want the 224.0.0.0/4 route.
netns_lo_multicast() {
    ip -n "$(netns_name "$1")" route replace 224.0.0.0/4 dev lo src 127.0.0.1
}

# netns_ping I J — true if host I reaches host J (one ping, 2 s timeout).
netns_ping() {
    netns_exec "$1" ping -q -c 1 -W 2 "$(netns_addr "$2")" >/dev/null 2>&1
}

# netns_cleanup — kill what runs in this run's namespaces and delete them.
# Idempotent, safe to call from a trap, never fails.
netns_cleanup() {
    [ "$_NETNS_CLEANING" = 1 ] && return 0
    _NETNS_CLEANING=1
    local ns pids
    for ns in $(netns_list); do
        pids="$(ip netns pids "$ns" 2>/dev/null)"
        if [ -n "$pids" ]; then
            # shellcheck disable=SC2086 # one pid per word
            kill -TERM $pids 2>/dev/null || true
        fi
    done
    for ns in $(netns_list); do
        local tries=0
        while [ -n "$(ip netns pids "$ns" 2>/dev/null)" ] && [ "$tries" -lt 20 ]; do
            sleep 0.1
            tries=$((tries + 1))
        done
        pids="$(ip netns pids "$ns" 2>/dev/null)"
        if [ -n "$pids" ]; then
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null || true
        fi
        ip netns del "$ns" 2>/dev/null || true
    done
    NETNS_COUNT=0
    _NETNS_CLEANING=0
    return 0
}

# netns_trap_cleanup — run netns_cleanup on EXIT, INT, TERM and HUP.
netns_trap_cleanup() {
    trap 'netns_cleanup' EXIT
    trap 'netns_cleanup; trap - INT; kill -INT "$BASHPID"' INT
    trap 'netns_cleanup; exit 143' TERM
    trap 'netns_cleanup; exit 129' HUP
}

# --- run directly -----------------------------------------------------------
_netns_selftest() {
    local n="${1:-3}" i j fails=0
    netns_require_root || return 1
    netns_require_tools ip ping || return 1
    netns_trap_cleanup
    netns_setup "$n" || return 1
    echo "created: $(netns_list | tr '\n' ' ')"
    for i in $(seq 1 "$n"); do
        for j in $(seq 1 "$n"); do
            [ "$i" = "$j" ] && continue
            if netns_ping "$i" "$j"; then
                echo "h$i -> h$j ($(netns_addr "$j")): ok"
            else
                echo "h$i -> h$j ($(netns_addr "$j")): FAILED"
                fails=$((fails + 1))
            fi
        done
        if [ "$(netns_exec "$i" cat /sys/class/net/lo/operstate)" = "unknown" ] &&
            netns_exec "$i" ip link show lo | grep -q 'MULTICAST.*UP\|UP.*MULTICAST'; then
            echo "h$i lo: up, multicast"
        else
            echo "h$i lo: NOT up+multicast"
            fails=$((fails + 1))
        fi
    done
    netns_cleanup
    if [ -n "$(netns_list)" ]; then
        echo "cleanup left namespaces behind"
        fails=$((fails + 1))
    fi
    [ "$fails" -eq 0 ] && echo "selftest: ok" || echo "selftest: $fails failure(s)"
    [ "$fails" -eq 0 ]
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    case "${1:-}" in
        selftest)
            shift
            _netns_selftest "$@"
            exit $?
            ;;
        cleanup)
            [ -n "${2:-}" ] || { _netns_err "usage: $0 cleanup TAG"; exit 2; }
            NETNS_TAG="$2"
            netns_cleanup
            exit 0
            ;;
        *)
            echo "usage: . $0 (then call netns_* functions), or $0 selftest [N], or $0 cleanup TAG" >&2
            exit 2
            ;;
    esac
fi
