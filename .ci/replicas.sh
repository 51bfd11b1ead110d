#!/usr/bin/env bash
# Three Berth replicas sharing one PostgreSQL database and one S3 bucket, as behind a load
# balancer: the conformance suite against each replica, then a randomized cross-replica
# workload (berth-replicas) that spreads the chunks of one upload over replicas, pushes the
# same tag and blob from several at once, deletes, and checks that every replica reports
# the same state and that every blob's content matches its digest. Auth is on, with one admin
# password for all replicas (they share the users and the token signing key through the
# database): berth-replicas fetches every token from replica 1's token service and uses it on
# all replicas, and fails if any replica refuses one.
#
# Needs BERTH_TEST_POSTGRES_URL (.ci/postgres.sh) and BERTH_TEST_S3_ENDPOINT /
# BERTH_TEST_S3_BUCKET (.ci/s3.sh), target/release/berth, and target/debug/berth-conformance
# and berth-replicas. Stops exactly the replicas it started, by PID, and drops its schema.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BERTH_TEST_POSTGRES_URL:?start PostgreSQL with .ci/postgres.sh first}"
: "${BERTH_TEST_S3_ENDPOINT:?start the S3 server with .ci/s3.sh first}"
bucket=${BERTH_TEST_S3_BUCKET:-test}
replicas=${REPLICAS:-3}

tag="$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
schema="replicas_$tag"
psql -q -v ON_ERROR_STOP=1 "$BERTH_TEST_POSTGRES_URL" -c "CREATE SCHEMA $schema"
dir=$(mktemp -d /tmp/berth-replicas.XXXXXX)
pids=()
urls=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  psql -q "$BERTH_TEST_POSTGRES_URL" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

# One key for every replica: encryption at rest is on, and replicas must share its key.
BERTH_KEYS="default.1=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export BERTH_KEYS
# One admin password for every replica: the first to start creates the admin in the shared
# schema; the others find it there.
pw="$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"

port=5400
for i in $(seq 1 "$replicas"); do
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  mkdir -p "$dir/r$i"
  # The same settings on every replica; only the listener and the local folder differ.
  BERTH_METADATA__BACKEND=postgres \
  BERTH_METADATA__URL="${BERTH_TEST_POSTGRES_URL}?options=-csearch_path%3D${schema}" \
  BERTH_STORAGE__BACKEND=s3 \
  BERTH_STORAGE__S3__BUCKET="$bucket" \
  BERTH_STORAGE__S3__PREFIX="replicas/$tag" \
  BERTH_STORAGE__S3__ENDPOINT="$BERTH_TEST_S3_ENDPOINT" \
  BERTH_STORAGE__S3__PATH_STYLE=true \
  BERTH_STORAGE__S3__ACCESS_KEY_ID=berth-test \
  BERTH_STORAGE__S3__SECRET_ACCESS_KEY=berth-test-secret \
  BERTH_AUTH__ADMIN_PASSWORD="$pw" \
  BERTH_LOG__LEVEL=warn \
    target/release/berth serve --listen "127.0.0.1:$port" --data-dir "$dir/r$i" >"$dir/r$i.log" 2>&1 &
  pids+=($!)
  urls+=("http://127.0.0.1:$port")
  port=$((port + 1))
done

# Up means /v2/ answers at all: 401 (auth on) as well as 200.
up() { [[ "$(curl -s -o /dev/null -w '%{http_code}' "$1/v2/")" =~ ^(200|401)$ ]]; }
for i in "${!urls[@]}"; do
  for _ in $(seq 100); do
    up "${urls[$i]}" && break
    kill -0 "${pids[$i]}" 2>/dev/null || { cat "$dir/r$((i + 1)).log" >&2; exit 1; }
    sleep 0.1
  done
done

fail=0
for i in "${!urls[@]}"; do
  echo "conformance against replica $((i + 1)) of $replicas (${urls[$i]}, PostgreSQL + S3):"
  target/debug/berth-conformance --url "${urls[$i]}" --tag-param --namespace "replica$((i + 1))/$tag" \
    --username admin --password "$pw" | grep -E '^(FAIL|auth:)|passed, ' || fail=1
done

url_args=()
for u in "${urls[@]}"; do url_args+=(--url "$u"); done
echo "cross-replica workload:"
target/debug/berth-replicas "${url_args[@]}" --seed "${REPLICAS_SEED:-$RANDOM}" --ops "${REPLICAS_OPS:-200}" \
  --username admin --password "$pw" || fail=1

for i in "${!urls[@]}"; do
  if grep -q " ERROR " "$dir/r$((i + 1)).log"; then
    echo "replica $((i + 1)) logged errors:" >&2
    grep " ERROR " "$dir/r$((i + 1)).log" | head -n 20 >&2
    fail=1
  fi
done
exit "$fail"
