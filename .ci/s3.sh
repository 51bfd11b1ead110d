#!/usr/bin/env bash
# A throw-away S3 server for the storage and replica tests: moto (PyPI `moto[s3]`, pinned),
# on 127.0.0.1, in a virtualenv under the given folder. moto keeps objects in memory and
# checks neither signatures nor credentials, but it gets what Berth depends on right:
# atomic If-None-Match on PUT and on CompleteMultipartUpload, UploadPartCopy with ranges,
# EntityTooSmall for parts under 5 MiB (../shared/reference/platform.md compares servers).
#
#   eval "$(.ci/s3.sh start)"   # installs moto if missing, starts it, creates bucket `test`:
#                               #   BERTH_TEST_S3_ENDPOINT  http://127.0.0.1:PORT
#                               #   BERTH_TEST_S3_BUCKET    test
#                               #   BERTH_TEST_S3_DIR       the folder to pass to `stop`
#   .ci/s3.sh stop "$BERTH_TEST_S3_DIR"   # stops exactly that server, removes DIR
#
# The virtualenv is cached in .s3venv at the repository root (git-ignored). Only the export
# lines go to stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

MOTO_VERSION=5.2.5
VENV=$PWD/.s3venv

log() { echo "s3.sh: $*" >&2; }
die() { log "$*"; exit 1; }

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

install_moto() {
  local need=()
  command -v curl >/dev/null || need+=(curl ca-certificates)
  python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3 python3-venv)
  if [ "${#need[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "${need[*]} missing and installing needs root"
    log "installing ${need[*]}"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
      "${need[@]}" >&2
  fi
  if [ -x "$VENV/bin/moto_server" ] && "$VENV/bin/pip" show moto 2>/dev/null | grep -q "^Version: $MOTO_VERSION$"; then
    return
  fi
  log "installing moto $MOTO_VERSION into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q "moto[s3]==$MOTO_VERSION" "flask==3.1.3" "flask-cors==6.0.5" >&2
}

start() {
  install_moto
  local dir port started=""
  dir=${1:-$(mktemp -d /tmp/berth-s3.XXXXXX)}
  mkdir -p "$dir"
  touch "$dir/.berth-s3"
  for port in $(seq 59002 59101); do
    port_in_use "$port" && continue
    "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 &
    echo $! >"$dir/moto.pid"
    local deadline=$((SECONDS + 30))
    while kill -0 "$(cat "$dir/moto.pid")" 2>/dev/null; do
      if curl -sf -o /dev/null "http://127.0.0.1:$port/"; then started=$port; break; fi
      [ "$SECONDS" -lt "$deadline" ] || break
      sleep 0.1
    done
    [ -n "$started" ] && break
    kill "$(cat "$dir/moto.pid")" 2>/dev/null || true
    log "could not start on port $port; trying the next"
  done
  [ -n "$started" ] || { tail -n 20 "$dir/moto.log" >&2 || true; die "moto did not start"; }
  curl -sf -o /dev/null -X PUT "http://127.0.0.1:$started/test" || die "could not create bucket test"
  log "moto ready on 127.0.0.1:$started (log in $dir/moto.log)"
  echo "export BERTH_TEST_S3_ENDPOINT=http://127.0.0.1:$started"
  echo "export BERTH_TEST_S3_BUCKET=test"
  echo "export BERTH_TEST_S3_DIR=$dir"
}

stop() {
  local dir=${1:?usage: s3.sh stop DIR}
  [ -f "$dir/.berth-s3" ] || die "$dir was not made by s3.sh start"
  if [ -f "$dir/moto.pid" ]; then
    local pid
    pid=$(cat "$dir/moto.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$dir"
  log "stopped and removed $dir"
}

case "${1:-start}" in
  start) shift || true; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) die "usage: s3.sh start [DIR] | stop DIR" ;;
esac
