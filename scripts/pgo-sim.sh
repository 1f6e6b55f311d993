#!/usr/bin/env bash
# Build the simulator with profile-guided optimisation.
#
#   scripts/pgo-sim.sh            # prints the path of the optimised alm-sim
#
# Profile-guided builds lay out and inline code by what a real run does:
# the engine and the simulator are one long chain of small, data-dependent
# branches, and a profile cuts their instruction count by about a fifth
# (see BENCHMARKS.md). The steps:
#   1. build `alm-sim` (profile `sim`: fat LTO, one codegen unit) with
#      instrumentation, into target/pgo/gen;
#   2. run it on training workloads that are *not* the benchmark (other
#      sizes and seeds, every topology and subcommand), writing raw
#      profiles into target/pgo/raw;
#   3. merge them with the toolchain's llvm-profdata (rustup component
#      `llvm-tools`, added if missing);
#   4. build `alm-sim` again with the merged profile, into target/pgo/use.
# The result behaves exactly like the ordinary build: the same seed gives
# the same report byte for byte (wall time and memory aside).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '%s\n' "$*" >&2; }

sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$sysroot/lib/rustlib/$host/bin/llvm-profdata"
if [[ ! -x $profdata ]]; then
    say "pgo-sim: adding the rustup component llvm-tools (for llvm-profdata)"
    rustup component add llvm-tools >&2 || {
        say "pgo-sim: cannot install llvm-tools; without llvm-profdata there is no profile-guided build."
        say "         Use the ordinary build: cargo build --profile sim -p alm-sim"
        exit 1
    }
fi

dir=$PWD/target/pgo
rm -rf "$dir/raw" "$dir/merged.profdata"
mkdir -p "$dir/raw"
flags=${RUSTFLAGS:-}

say "pgo-sim: 1/4 instrumented build"
RUSTFLAGS="$flags -Cprofile-generate=$dir/raw" CARGO_TARGET_DIR="$dir/gen" \
    cargo build --quiet --profile sim -p alm-sim
gen=$dir/gen/sim/alm-sim

say "pgo-sim: 2/4 training runs"
"$gen" pastry --nodes 20000 --lookups 40000 --seed 7 --json >/dev/null
"$gen" pastry --nodes 3000 --lookups 3000 --seed 8 --fail-fraction 0.1 --json >/dev/null
"$gen" pastry --nodes 3000 --lookups 3000 --seed 9 --topology transit-stub --json >/dev/null
"$gen" scribe --nodes 2000 --seed 10 --json >/dev/null
"$gen" mgmt --nodes 300 --seed 11 --json >/dev/null

say "pgo-sim: 3/4 merging profiles"
"$profdata" merge -o "$dir/merged.profdata" "$dir/raw"

say "pgo-sim: 4/4 optimised build"
RUSTFLAGS="$flags -Cprofile-use=$dir/merged.profdata" CARGO_TARGET_DIR="$dir/use" \
    cargo build --quiet --profile sim -p alm-sim
echo "$dir/use/sim/alm-sim"
