#!/usr/bin/env bash
# Berth (on its defaults, and with encryption off) against CNCF Distribution 2.8
# with berth-bench: installs Debian's docker-registry if missing, builds both
# release binaries, runs `compare` (full preset, 5 rounds, every scenario, unless
# you pass --quick, --rounds, --scenario or --variants) and leaves bench.txt,
# bench.json and bench.md in $OUT. bench.md is the BENCHMARKS.md table: median
# (min–max) per figure, CPU-s/GiB columns, the busy-core rows, the Goals table.
# Extra arguments go to `berth-bench compare`.
#
# Usage: conformance/bench/compare.sh [--quick] [--rounds N] [--scenario a,b] [--variants default,plaintext] ...
# Env:   OUT (default target/bench), DISTRIBUTION_BIN (default /usr/bin/docker-registry),
#        CARGO_TARGET_DIR (default target)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${OUT:-$ROOT/target/bench}"
DISTRIBUTION_BIN="${DISTRIBUTION_BIN:-/usr/bin/docker-registry}"

if [ ! -x "$DISTRIBUTION_BIN" ]; then
    echo "installing docker-registry (Debian package)..." >&2
    apt-get update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends docker-registry >/dev/null
fi

cd "$ROOT"
cargo build --release -q -p berth-conformance -p berth-registry
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
mkdir -p "$OUT"
set +e
"$BIN/berth-bench" compare \
    --berth-bin "$BIN/berth" \
    --distribution-bin "$DISTRIBUTION_BIN" \
    --json "$OUT/bench.json" --markdown "$OUT/bench.md" "$@" | tee "$OUT/bench.txt"
status=${PIPESTATUS[0]}
set -e
echo "results in $OUT (bench.txt, bench.json, bench.md)" >&2
exit "$status"
