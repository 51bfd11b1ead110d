#!/usr/bin/env bash
# Berth against CNCF Distribution 2.8 with berth-bench: installs Debian's
# docker-registry if missing, builds both release binaries, runs `compare`
# (full preset unless you pass --quick) and leaves bench.txt, bench.json and
# bench.md in $OUT. Extra arguments go to `berth-bench compare`.
#
# Usage: conformance/bench/compare.sh [--quick] [--rounds N] [--scenario a,b] ...
# Env:   OUT (default target/bench), DISTRIBUTION_BIN (default /usr/bin/docker-registry)
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
mkdir -p "$OUT"
set +e
target/release/berth-bench compare \
    --berth-bin target/release/berth \
    --distribution-bin "$DISTRIBUTION_BIN" \
    --json "$OUT/bench.json" --markdown "$OUT/bench.md" "$@" | tee "$OUT/bench.txt"
status=${PIPESTATUS[0]}
set -e
echo "results in $OUT (bench.txt, bench.json, bench.md)" >&2
exit "$status"
