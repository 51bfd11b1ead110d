#!/usr/bin/env bash
# A throw-away PostgreSQL server for the metadata tests, started by hand (no systemd, no
# cluster manager) on 127.0.0.1 with its own data folder and unix-socket folder under /tmp.
#
#   eval "$(.ci/postgres.sh start)"   # installs postgresql if missing, starts, prints exports:
#                                     #   BERTH_TEST_POSTGRES_URL  postgres://berth:berth@127.0.0.1:PORT/berth_test
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
  if pg_bin >/dev/null; then return; fi
  [ "$(id -u)" = 0 ] || die "postgresql is not installed and installing it needs root"
  log "installing postgresql"
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends postgresql >&2
  pg_bin >/dev/null || die "postgresql installed but no initdb under /usr/lib/postgresql/*/bin"
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
  if [ "$(id -u)" = 0 ]; then chown -R postgres: "$dir"; fi

  # A linguistic default collation where the server supports ICU; plain C.UTF-8 otherwise.
  local init=(--auth-local=trust --auth-host=scram-sha-256 -U postgres -E UTF8)
  if ! as_pg "$bin/initdb" -D "$dir/data" "${init[@]}" --locale-provider=icu --icu-locale=en-US \
      --locale=C.UTF-8 >"$dir/initdb.log" 2>&1; then
    rm -rf "$dir/data"
    as_pg "$bin/initdb" -D "$dir/data" "${init[@]}" --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  fi

  # First free port from 55432; if another process takes it meanwhile, start fails: try the next.
  local started=""
  for port in $(seq 55432 55531); do
    port_in_use "$port" && continue
    # fsync off: a throw-away server for tests, never for data anyone keeps.
    if as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -o \
        "-c listen_addresses=127.0.0.1 -p $port -k $dir/sock -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
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
SQL
  log "PostgreSQL ready on 127.0.0.1:$port (data in $dir)"
  echo "export BERTH_TEST_POSTGRES_URL=postgres://berth:berth@127.0.0.1:$port/berth_test"
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
