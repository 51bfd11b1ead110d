#!/usr/bin/env bash
# A throw-away PostgreSQL server for the metadata tests, started by hand (no systemd, no
# cluster manager) on 127.0.0.1 with its own data folder and unix-socket folder under /tmp.
# TLS is on (`ssl = on`) with a CA and certificates made at start (openssl), as managed
# PostgreSQL has it: the server's certificate names localhost and 127.0.0.1; plain
# connections are still accepted (`sslmode=disable` works).
#
#   eval "$(.ci/postgres.sh start)"   # installs postgresql and openssl if missing, starts, prints exports:
#                                     #   BERTH_TEST_POSTGRES_URL  postgres://berth:berth@127.0.0.1:PORT/berth_test
#                                     #   BERTH_TEST_POSTGRES_CA   the CA (PEM) that signed the server's
#                                     #                            certificate: ?sslmode=verify-full&sslrootcert=$BERTH_TEST_POSTGRES_CA
#                                     #   BERTH_TEST_POSTGRES_CLIENT_CERT, BERTH_TEST_POSTGRES_CLIENT_KEY
#                                     #                            a client certificate (PEM) for the role
#                                     #                            berth_cert, which signs in with it alone
#                                     #                            (pg_hba `cert`): ?sslcert=..&sslkey=..
#                                     #   BERTH_TEST_POSTGRES_DIR  the folder to pass to `stop`
#                                     #   BERTH_TEST_POSTGRES_PID  the server's PID file
#   .ci/postgres.sh stop "$BERTH_TEST_POSTGRES_DIR"   # stops exactly that server, removes DIR
#
# Only the export lines go to stdout; progress goes to stderr. The database's default
# collation is linguistic (ICU) when available, so the tests prove Berth sorts by bytes
# on its own (COLLATE "C") rather than by luck of the server's locale.
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }
die() { log "$*"; exit 1; }

pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

# Runs a command as the postgres user when we are root (the server refuses to run as root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install_postgres() {
  if pg_bin >/dev/null && command -v openssl >/dev/null; then return; fi
  [ "$(id -u)" = 0 ] || die "postgresql or openssl is not installed and installing them needs root"
  log "installing postgresql and openssl"
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
    postgresql openssl >&2
  pg_bin >/dev/null || die "postgresql installed but no initdb under /usr/lib/postgresql/*/bin"
}

# A CA, a server certificate it signs (for localhost and 127.0.0.1) and a client certificate
# for the role berth_cert, in $1, valid for two days. EC P-256 keys: quick to make.
make_certificates() {
  local tls=$1
  mkdir -p "$tls"
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  openssl req -x509 "${ec[@]}" -keyout "$tls/ca.key" -out "$tls/ca.pem" -days 2 \
    -subj "/CN=Berth test PostgreSQL CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  sign() { # NAME SUBJECT EXTENSIONS
    openssl req "${ec[@]}" -keyout "$tls/$1.key" -out "$tls/$1.csr" -subj "$2" 2>/dev/null
    printf '%b' "$3" >"$tls/$1.ext"
    openssl x509 -req -in "$tls/$1.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial -days 2 \
      -extfile "$tls/$1.ext" -out "$tls/$1.pem" 2>/dev/null
  }
  sign server "/CN=localhost" \
    'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n'
  sign client "/CN=berth_cert" \
    'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n'
  chmod 600 "$tls"/*.key
  [ -s "$tls/server.pem" ] && [ -s "$tls/client.pem" ] || die "openssl did not make the certificates in $tls"
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
  install_postgres
  local bin dir port
  bin=$(pg_bin)
  dir=${1:-$(mktemp -d /tmp/berth-pg.XXXXXX)}
  mkdir -p "$dir/sock"
  touch "$dir/.berth-postgres"
  make_certificates "$dir/tls"
  if [ "$(id -u)" = 0 ]; then chown -R postgres: "$dir"; fi

  # A linguistic default collation where the server supports ICU; plain C.UTF-8 otherwise.
  local init=(--auth-local=trust --auth-host=scram-sha-256 -U postgres -E UTF8)
  if ! as_pg "$bin/initdb" -D "$dir/data" "${init[@]}" --locale-provider=icu --icu-locale=en-US \
      --locale=C.UTF-8 >"$dir/initdb.log" 2>&1; then
    rm -rf "$dir/data"
    as_pg "$bin/initdb" -D "$dir/data" "${init[@]}" --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  fi

  # The role berth_cert signs in with its client certificate alone, over TLS; every other role
  # as initdb set it up (password, TLS or not).
  { echo "hostssl berth_test berth_cert 127.0.0.1/32 cert"; cat "$dir/data/pg_hba.conf"; } >"$dir/pg_hba.conf"
  cat "$dir/pg_hba.conf" >"$dir/data/pg_hba.conf"
  local ssl="-c ssl=on -c ssl_cert_file=$dir/tls/server.pem -c ssl_key_file=$dir/tls/server.key -c ssl_ca_file=$dir/tls/ca.pem"

  # First free port from 55432; if another process takes it meanwhile, start fails: try the next.
  local started=""
  for port in $(seq 55432 55531); do
    port_in_use "$port" && continue
    # fsync off: a throw-away server for tests, never for data anyone keeps.
    if as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -o \
        "-c listen_addresses=127.0.0.1 -p $port -k $dir/sock $ssl -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >&2; then
      started=$port
      break
    fi
    log "could not start on port $port; trying the next"
  done
  [ -n "$started" ] || { tail -n 20 "$dir/server.log" >&2 || true; die "server did not start"; }
  port=$started

  local deadline=$((SECONDS + 60))
  until "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; do
    [ "$SECONDS" -lt "$deadline" ] || die "server on port $port not ready after 60s"
    sleep 0.2
  done

  as_pg "$bin/psql" -q -h "$dir/sock" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 >&2 <<'SQL'
CREATE ROLE berth LOGIN PASSWORD 'berth';
CREATE DATABASE berth_test OWNER berth;
CREATE ROLE berth_cert LOGIN;
SQL
  log "PostgreSQL ready on 127.0.0.1:$port (data in $dir)"
  echo "export BERTH_TEST_POSTGRES_URL=postgres://berth:berth@127.0.0.1:$port/berth_test"
  echo "export BERTH_TEST_POSTGRES_CA=$dir/tls/ca.pem"
  echo "export BERTH_TEST_POSTGRES_CLIENT_CERT=$dir/tls/client.pem"
  echo "export BERTH_TEST_POSTGRES_CLIENT_KEY=$dir/tls/client.key"
  echo "export BERTH_TEST_POSTGRES_DIR=$dir"
  echo "export BERTH_TEST_POSTGRES_PID=$dir/data/postmaster.pid"
}

stop() {
  local dir=${1:?usage: postgres.sh stop DIR}
  [ -f "$dir/.berth-postgres" ] || die "$dir was not made by postgres.sh start"
  local bin
  bin=$(pg_bin) || die "postgresql is not installed"
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_pg "$bin/pg_ctl" -D "$dir/data" stop -m fast -w -t 60 >&2
  fi
  rm -rf "$dir"
  log "stopped and removed $dir"
}

case "${1:-start}" in
  start) shift || true; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) die "usage: postgres.sh start [DIR] | stop DIR" ;;
esac
