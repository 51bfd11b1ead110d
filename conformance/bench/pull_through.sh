#!/usr/bin/env bash
# conformance/bench/pull_through.sh: needs target/release/berth; ports 5391-5392 free; writes 4.3 GiB under $TMPDIR, removed at exit.
# 16 clients pulling one cold 256 MiB layer through a pull-through rule (release berth, loopback).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BERTH_BIN:-target/release/berth}
W=$(mktemp -d "${TMPDIR:-/tmp}/pt_bench.XXXX")
trap 'kill $UPID $CPID 2>/dev/null || true; wait 2>/dev/null; rm -rf "$W"' EXIT
export BERTH_AUTH__ENABLED=false BERTH_LOG__LEVEL=info
head -c $((256*1024*1024)) /dev/urandom > "$W/layer"
D=sha256:$(sha256sum "$W/layer" | cut -d' ' -f1)
"$BIN" serve --listen 127.0.0.1:5391 --data-dir "$W/up" > "$W/up.log" 2>&1 & UPID=$!
cat > "$W/cache.toml" <<T
[[pull_through.rules]]
prefix = "hub"
upstream = "http://127.0.0.1:5391"
T
"$BIN" serve --listen 127.0.0.1:5392 --data-dir "$W/cache" --config "$W/cache.toml" > "$W/cache.log" 2>&1 & CPID=$!
for p in 5391 5392; do for i in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:$p/v2/ && break; sleep 0.1; done; done
curl -sf -X POST --data-binary @"$W/layer" "http://127.0.0.1:5391/v2/library/big/blobs/uploads/?digest=$D" -o /dev/null
run() {
  for i in $(seq 16); do
    curl -s -o "$W/out.$i" -w "%{http_code} %{time_starttransfer} %{time_total} %{size_download}\n" \
      "http://127.0.0.1:5392/v2/hub/library/big/blobs/$D" &
  done
  wait
}
echo "cold (code first-byte-s total-s bytes):"; start=$(date +%s.%N); run | sort -k3 -n; end=$(date +%s.%N)
echo "cold wall: $(echo "$end - $start" | bc) s for 16 x 256 MiB"
ok=0; for i in $(seq 16); do [ "sha256:$(sha256sum "$W/out.$i" | cut -d' ' -f1)" = "$D" ] && ok=$((ok+1)); done; echo "cold bodies right: $ok/16"
echo "upstream GET blob request lines: $(grep -c "http.method=GET http.route=\"blob\"" "$W/up.log" || true)"; grep "http.method=GET" "$W/up.log" | tail -2 | cut -c1-300 || true
echo "warm:"; start=$(date +%s.%N); run | sort -k3 -n | sed -n '1p;$p'; end=$(date +%s.%N)
echo "warm wall: $(echo "$end - $start" | bc) s for 16 x 256 MiB"
