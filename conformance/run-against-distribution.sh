#!/usr/bin/env bash
# Runs berth-conformance against CNCF Distribution (Debian's docker-registry
# 2.8.x) started here on 127.0.0.1:5000 with throw-away storage.
#
# Informational: exits 0 even when Distribution fails cases (it lacks
# several features the suite checks); exits non-zero only if the registry
# cannot be installed or started, or the suite cannot be built.
#
# Usage: conformance/run-against-distribution.sh [extra berth-conformance args]
# Env:   ADDR (default 127.0.0.1:5000), JSON (report path, optional)
set -euo pipefail

ADDR="${ADDR:-127.0.0.1:5000}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

if ! command -v docker-registry >/dev/null 2>&1 && [ ! -x /usr/bin/docker-registry ]; then
    echo "installing docker-registry (Debian package)..." >&2
    apt-get update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends docker-registry >/dev/null
fi
REGISTRY_BIN="$(command -v docker-registry || echo /usr/bin/docker-registry)"

WORK="$(mktemp -d -t berth-distribution.XXXXXX)"
REGISTRY_PID=""
cleanup() {
    # Stop only the registry this script started, by its PID.
    if [ -n "$REGISTRY_PID" ] && kill -0 "$REGISTRY_PID" 2>/dev/null; then
        kill "$REGISTRY_PID" 2>/dev/null || true
        wait "$REGISTRY_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/data
  delete:
    enabled: true
http:
  addr: $ADDR
EOF

if curl -fsS -o /dev/null "http://$ADDR/v2/" 2>/dev/null; then
    echo "something already answers on $ADDR; pick a free address with ADDR=127.0.0.1:<port>" >&2
    exit 1
fi

"$REGISTRY_BIN" serve "$WORK/config.yml" >"$WORK/registry.log" 2>&1 &
REGISTRY_PID=$!

# Wait for readiness with a deadline (no fixed sleep).
deadline=$((SECONDS + 20))
until curl -fsS "http://$ADDR/v2/" >/dev/null 2>&1; do
    if ! kill -0 "$REGISTRY_PID" 2>/dev/null; then
        echo "docker-registry exited; log:" >&2
        cat "$WORK/registry.log" >&2
        exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "docker-registry not ready on $ADDR after 20 s" >&2
        exit 1
    fi
    sleep 0.2
done
echo "Distribution $("$REGISTRY_BIN" --version 2>/dev/null | awk '{print $NF}') on http://$ADDR (pid $REGISTRY_PID)" >&2

cd "$ROOT"
cargo build -q -p berth-conformance

json_args=()
if [ -n "${JSON:-}" ]; then
    json_args=(--json "$JSON")
fi

# Distribution 2.8 has no referrers API: --no-referrers would skip those
# cases; they are run anyway so the report shows the gap.
set +e
cargo run -q -p berth-conformance -- --url "http://$ADDR" "${json_args[@]}" "$@" \
    | tee "$WORK/results.txt"
set -e

echo
echo "Distribution failed (informational):"
grep '^FAIL ' "$WORK/results.txt" | sed 's/^FAIL /  /' || echo "  nothing"
echo
tail -n 1 "$WORK/results.txt"
exit 0
