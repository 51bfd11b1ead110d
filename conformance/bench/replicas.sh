#!/usr/bin/env bash
# Throughput of pushes and pulls on Berth with PostgreSQL metadata and S3 blobs (moto), with one
# replica and with two (clients spread over both; each blob pulled from the other replica than
# the one that took it): berth-bench's `replicas` scenario, run twice.
#
#   conformance/bench/replicas.sh [berth-bench run options, e.g. --quick or --rounds 3]
#
# Starts PostgreSQL (.ci/postgres.sh) and moto (.ci/s3.sh) unless BERTH_TEST_POSTGRES_URL and
# BERTH_TEST_S3_ENDPOINT are already set, then two replicas (target/release/berth) configured
# as .ci/replicas.sh does (a fresh schema, a fresh S3 prefix, one encryption key, auth off);
# prints the figures; stops exactly what it started (replicas by PID, the servers with their
# scripts' `stop`) and drops the schema. moto keeps every object in memory and writes at
# 50–150 MB/s: the figures measure Berth over moto, not Berth's ceiling, and the sizes are small
# (16 × 32 MiB a run; --quick: 8 × 256 KiB). Needs target/release/{berth,berth-bench}
# (cargo build --release -p berth-registry -p berth-conformance). Output in $OUT
# (default target/bench/replicas-{1,2}.{json,md}).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${CARGO_TARGET_DIR:-target}/release
[ -x "$bin/berth" ] && [ -x "$bin/berth-bench" ] || {
  echo "replicas.sh: build first: cargo build --release -p berth-registry -p berth-conformance" >&2
  exit 2
}
out=${OUT:-${CARGO_TARGET_DIR:-target}/bench}
mkdir -p "$out"

pg_dir="" s3_dir="" dir="" schema="" pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$schema" ]; then
    psql -q "$BERTH_TEST_POSTGRES_URL" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  fi
  [ -n "$dir" ] && rm -rf "$dir"
  [ -n "$s3_dir" ] && bash .ci/s3.sh stop "$s3_dir" || true
  [ -n "$pg_dir" ] && bash .ci/postgres.sh stop "$pg_dir" || true
}
trap cleanup EXIT

if [ -z "${BERTH_TEST_POSTGRES_URL:-}" ]; then
  eval "$(bash .ci/postgres.sh start)"
  pg_dir=$BERTH_TEST_POSTGRES_DIR
fi
if [ -z "${BERTH_TEST_S3_ENDPOINT:-}" ]; then
  eval "$(bash .ci/s3.sh start)"
  s3_dir=$BERTH_TEST_S3_DIR
fi
bucket=${BERTH_TEST_S3_BUCKET:-test}

tag="$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
schema="bench_$tag"
psql -q -v ON_ERROR_STOP=1 "$BERTH_TEST_POSTGRES_URL" -c "CREATE SCHEMA $schema"
dir=$(mktemp -d /tmp/berth-bench-replicas.XXXXXX)
# One key for both replicas: encryption at rest is on (the default), and they must share it.
BERTH_KEYS="default.1=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export BERTH_KEYS

urls=()
port=5500
for i in 1 2; do
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  mkdir -p "$dir/r$i"
  BERTH_METADATA__BACKEND=postgres \
  BERTH_METADATA__URL="${BERTH_TEST_POSTGRES_URL}?options=-csearch_path%3D${schema}" \
  BERTH_STORAGE__BACKEND=s3 \
  BERTH_STORAGE__S3__BUCKET="$bucket" \
  BERTH_STORAGE__S3__PREFIX="bench/$tag" \
  BERTH_STORAGE__S3__ENDPOINT="$BERTH_TEST_S3_ENDPOINT" \
  BERTH_STORAGE__S3__PATH_STYLE=true \
  BERTH_STORAGE__S3__ACCESS_KEY_ID=berth-test \
  BERTH_STORAGE__S3__SECRET_ACCESS_KEY=berth-test-secret \
  BERTH_AUTH__ENABLED=false \
  BERTH_LOG__LEVEL=warn \
    "$bin/berth" serve --listen "127.0.0.1:$port" --data-dir "$dir/r$i" >"$dir/r$i.log" 2>&1 &
  pids+=($!)
  urls+=("http://127.0.0.1:$port")
  port=$((port + 1))
done

for i in 0 1; do
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "${urls[$i]}/v2/")" = 200 ] && break
    kill -0 "${pids[$i]}" 2>/dev/null || { cat "$dir/r$((i + 1)).log" >&2; exit 1; }
    sleep 0.1
  done
done

fail=0
echo "== one replica (${urls[0]}), PostgreSQL + S3 (moto)"
"$bin/berth-bench" run --url "${urls[0]}" --server-pid "${pids[0]}" --scenario replicas \
  --namespace "one/$tag" --json "$out/replicas-1.json" --markdown "$out/replicas-1.md" "$@" || fail=1
echo "== two replicas (${urls[0]}, ${urls[1]}), PostgreSQL + S3 (moto); CPU is replica 1's share"
"$bin/berth-bench" run --url "${urls[0]}" --peer-url "${urls[1]}" --server-pid "${pids[0]}" --scenario replicas \
  --namespace "two/$tag" --json "$out/replicas-2.json" --markdown "$out/replicas-2.md" "$@" || fail=1
for i in 1 2; do
  if grep -q " ERROR " "$dir/r$i.log"; then
    echo "replica $i logged errors:" >&2
    grep " ERROR " "$dir/r$i.log" | head -n 20 >&2
    fail=1
  fi
done
exit "$fail"
