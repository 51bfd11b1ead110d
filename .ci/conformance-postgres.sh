#!/usr/bin/env bash
# The conformance suite against Berth with its metadata in PostgreSQL: starts
# target/release/berth on a free loopback port with `metadata.backend = postgres` in a fresh
# schema of the database at $BERTH_TEST_POSTGRES_URL (see .ci/postgres.sh), over TLS checked
# as managed databases want it (`sslmode=verify-full`, the test server's CA in `sslrootcert`),
# with auth on and a random admin password, runs target/debug/berth-conformance against it
# signed in as that admin (the whole suite through tokens, plus the auth cases), checks that
# every connection Berth holds is encrypted, stops that Berth by its PID and drops the schema.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BERTH_TEST_POSTGRES_URL:?start PostgreSQL with .ci/postgres.sh first}"
: "${BERTH_TEST_POSTGRES_CA:?start PostgreSQL with .ci/postgres.sh first (it exports the CA file)}"

schema="conformance_$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
psql -q -v ON_ERROR_STOP=1 "$BERTH_TEST_POSTGRES_URL" -c "CREATE SCHEMA $schema"
dir=$(mktemp -d /tmp/berth-conformance-pg.XXXXXX)
port=5300
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
pw="$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"

BERTH_AUTH__ADMIN_PASSWORD="$pw" \
BERTH_KEYS="default.1=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
BERTH_METADATA__BACKEND=postgres \
BERTH_METADATA__URL="${BERTH_TEST_POSTGRES_URL}?options=-csearch_path%3D${schema}&sslmode=verify-full&sslrootcert=${BERTH_TEST_POSTGRES_CA}" \
BERTH_LOG__LEVEL=warn \
  target/release/berth serve --listen "127.0.0.1:$port" --data-dir "$dir" >"$dir/berth.log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  psql -q "$BERTH_TEST_POSTGRES_URL" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

# Up means /v2/ answers at all: 401 (auth on) as well as 200.
up() { [[ "$(curl -s -o /dev/null -w '%{http_code}' "$1/v2/")" =~ ^(200|401)$ ]]; }
for _ in $(seq 100); do
  up "http://127.0.0.1:$port" && break
  kill -0 "$pid" 2>/dev/null || { cat "$dir/berth.log" >&2; exit 1; }
  sleep 0.1
done
echo "conformance against Berth with PostgreSQL metadata (schema $schema):"
target/debug/berth-conformance --url "http://127.0.0.1:$port" --tag-param --namespace "pg/$schema" \
  --username admin --password "$pw" | grep -E '^(FAIL|auth:)|passed, '
# Berth's connections (application_name "berth": the pool's and the listener's) all over TLS.
tls=$(psql -qtA -v ON_ERROR_STOP=1 "$BERTH_TEST_POSTGRES_URL" -c \
  "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) FROM pg_stat_activity a
   JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'berth' AND a.usename = current_user")
echo "Berth's PostgreSQL connections over TLS (verify-full) | plain: $tls"
[[ "$tls" =~ ^[1-9][0-9]*\|0$ ]] || { echo "some of Berth's connections to PostgreSQL are not encrypted" >&2; exit 1; }
