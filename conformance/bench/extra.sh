#!/usr/bin/env bash
# The issue's "also measure" scenarios, each against a fresh registry process started here
# (a fresh data directory, removed after; peak RSS and CPU from its PID):
#   concurrency, memory, storm  on Berth (defaults: encrypted, fsync) and on CNCF Distribution;
#   tls                         on Berth serving HTTPS and plain HTTP on one port, with a CA and
#                               a certificate for 127.0.0.1 made here with openssl.
# (PostgreSQL + S3 replicas: conformance/bench/replicas.sh.)
#
#   conformance/bench/extra.sh [berth-bench run options, e.g. --quick or --rounds 3]
#
# SCENARIOS="concurrency memory storm tls" and REGISTRIES="berth distribution" choose;
# DATA_DIR (default: the temp dir) is where the data directories go: the full sizes write up to
# 16 GiB in one scenario (memory: 64 × 256 MiB pushes; storm: up to 16 × 1 GiB). Needs
# target/release/{berth,berth-bench}; Distribution is /usr/bin/docker-registry (Debian's
# docker-registry package). Output in $OUT (default target/bench/extra-*.{json,md}).
# Stops exactly the servers it started, by PID.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${CARGO_TARGET_DIR:-target}/release
[ -x "$bin/berth" ] && [ -x "$bin/berth-bench" ] || {
  echo "extra.sh: build first: cargo build --release -p berth-registry -p berth-conformance" >&2
  exit 2
}
out=${OUT:-${CARGO_TARGET_DIR:-target}/bench}
mkdir -p "$out"
scenarios=${SCENARIOS:-concurrency memory storm tls}
registries=${REGISTRIES:-berth distribution}
data_root=${DATA_DIR:-${TMPDIR:-/tmp}}

pid="" dir=""
stop_server() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
  fi
  if [ -n "$dir" ]; then rm -rf "$dir"; dir=""; fi
}
trap stop_server EXIT

free_port() {
  local port=$((20000 + RANDOM % 20000))
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  echo "$port"
}

wait_up() { # URL [curl options]
  local url=$1
  shift
  for _ in $(seq 300); do
    [ "$(curl -s "$@" -o /dev/null -w '%{http_code}' "$url/v2/")" = 200 ] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "extra.sh: the server did not come up; its log:" >&2
  tail -n 30 "$dir/server.log" >&2 || true
  return 1
}

# Berth as compare starts it: auth off (Distribution runs without), warnings only; no BERTH_*
# from the caller's environment.
start_berth() { # PORT [extra env...]
  local port=$1
  shift
  env $(env | grep -o '^BERTH_[^=]*' | sed 's/^/-u /') -u RUST_LOG \
    BERTH_AUTH__ENABLED=false BERTH_LOG__LEVEL=warn "$@" \
    "$bin/berth" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" >"$dir/server.log" 2>&1 &
  pid=$!
}

start_distribution() { # PORT
  local port=$1
  cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
  env $(env | grep -o '^REGISTRY_[^=]*' | sed 's/^/-u /') \
    /usr/bin/docker-registry serve "$dir/config.yml" >"$dir/server.log" 2>&1 &
  pid=$!
}

# A CA and a server certificate for 127.0.0.1 and localhost (EC P-256), valid two days.
make_certificates() { # DIR
  local tls=$1 ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  mkdir -p "$tls"
  openssl req -x509 "${ec[@]}" -keyout "$tls/ca.key" -out "$tls/ca.pem" -days 2 -subj "/CN=berth-bench CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl req "${ec[@]}" -keyout "$tls/key.pem" -out "$tls/server.csr" -subj "/CN=127.0.0.1" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    >"$tls/server.ext"
  openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial -days 2 \
    -extfile "$tls/server.ext" -out "$tls/cert.pem" 2>/dev/null
  chmod 600 "$tls"/*.key "$tls/key.pem"
}

fail=0
for scenario in $scenarios; do
  for registry in $registries; do
    if [ "$scenario" = tls ] && [ "$registry" != berth ]; then continue; fi
    dir=$(mktemp -d "$data_root/berth-bench-extra.XXXXXX")
    chmod 700 "$dir"
    port=$(free_port)
    url="http://127.0.0.1:$port"
    args=()
    case "$registry" in
      berth)
        if [ "$scenario" = tls ]; then
          make_certificates "$dir/tls"
          start_berth "$port" BERTH_TLS__CERT_FILE="$dir/tls/cert.pem" BERTH_TLS__KEY_FILE="$dir/tls/key.pem"
          url="https://127.0.0.1:$port"
          args=(--ca-cert "$dir/tls/ca.pem")
          wait_up "$url" --cacert "$dir/tls/ca.pem" || { fail=1; stop_server; continue; }
        else
          start_berth "$port"
          wait_up "$url" || { fail=1; stop_server; continue; }
        fi
        ;;
      distribution)
        start_distribution "$port"
        wait_up "$url" || { fail=1; stop_server; continue; }
        ;;
      *) echo "extra.sh: unknown registry $registry" >&2; exit 2 ;;
    esac
    echo "== $scenario on $registry ($url, pid $pid)"
    sync
    "$bin/berth-bench" run --url "$url" --server-pid "$pid" --scenario "$scenario" --namespace "extra/$scenario" \
      "${args[@]}" --json "$out/extra-$scenario-$registry.json" --markdown "$out/extra-$scenario-$registry.md" "$@" \
      || fail=1
    stop_server
  done
done
exit "$fail"
