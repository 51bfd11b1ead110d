#!/usr/bin/env bash
# ECR's own API through the real clients (docker/ecr/): boto3 and the `aws ecr` CLI from PyPI
# (pinned) run ecr_scenario.py against target/release/berth with authentication on, and
# walk_model.py checks every answer they recorded against botocore's model of ECR, then probes
# each operation no answer exercised (it must be UnsupportedOperationException).
#
#   bash .ci/ecr.sh                 # needs target/release/berth (or ECR_BERTH_BIN)
#
# Berth gets a temporary data folder and a port on 127.0.0.1; the bootstrap administrator's
# generated password (<data>/admin-password, as the README says) proves it is up; `berth admin
# key create admin` gives the scenario its credentials, and a second user `ecr-reader`, whose
# policy denies ecr:CreateRepository, its AccessDeniedException. The region is the registry's
# `auth.region` (from `berth config`). Stops the server by its PID, removes the folder, prints
# its time; bounded (ECR_SECONDS, default 600, for the scenario and the walker each).
#
# The virtualenv is cached in .ecrvenv at the repository root (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

BOTO3_VERSION=1.44.8
BOTOCORE_VERSION=1.44.8
AWSCLI_VERSION=1.46.3
VENV=$PWD/.ecrvenv
BIN=${ECR_BERTH_BIN:-$PWD/target/release/berth}
SECONDS_EACH=${ECR_SECONDS:-600}
started=$(date +%s)

log() { echo "ecr.sh: $*" >&2; }
die() { log "$*"; exit 1; }

install_clients() {
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
  if [ -x "$VENV/bin/aws" ] &&
    [ "$("$VENV/bin/python" -c 'import boto3, botocore, awscli; print(boto3.__version__, botocore.__version__, awscli.__version__)' 2>/dev/null)" = \
      "$BOTO3_VERSION $BOTOCORE_VERSION $AWSCLI_VERSION" ]; then
    return
  fi
  log "installing boto3 $BOTO3_VERSION, botocore $BOTOCORE_VERSION, awscli $AWSCLI_VERSION into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q "boto3==$BOTO3_VERSION" "botocore==$BOTOCORE_VERSION" "awscli==$AWSCLI_VERSION" >&2
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

[ -x "$BIN" ] || die "no Berth binary at $BIN (cargo build --release -p berth-registry)"
install_clients

dir=$(mktemp -d /tmp/berth-ecr.XXXXXX)
pid=""
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  if [ "${ECR_KEEP:-0}" = 1 ]; then log "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT

# Berth reads every BERTH_* variable as configuration: none from the caller. `env` execs the
# binary, so a background `berth serve`'s $! is the server's own PID.
unset_berth=()
for name in $(env | grep -o '^BERTH_[A-Z0-9_]*'); do unset_berth+=(-u "$name"); done
berth() { env "${unset_berth[@]}" "$BIN" "$@"; }

data=$dir/data
port=""
for p in $(seq 59150 59250); do
  port_in_use "$p" && continue
  env "${unset_berth[@]}" "$BIN" serve --listen "127.0.0.1:$p" --data-dir "$data" >"$dir/berth.log" 2>&1 &
  pid=$!
  deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
    if [ -s "$data/admin-password" ] &&
      [ "$(curl -s -o /dev/null -w '%{http_code}' -u "admin:$(cat "$data/admin-password")" "http://127.0.0.1:$p/v2/")" = 200 ]; then
      port=$p
      break
    fi
    sleep 0.1
  done
  [ -n "$port" ] && break
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
  rm -rf "$data"
  log "Berth did not start on port $p; trying the next"
done
[ -n "$port" ] || { tail -n 20 "$dir/berth.log" >&2 || true; die "Berth did not start"; }
log "Berth (pid $pid) on 127.0.0.1:$port, data in $data"

config=$(berth config --data-dir "$data" --listen "127.0.0.1:$port")
region=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["auth"]["region"])' <<<"$config")
account=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["auth"]["account"])' <<<"$config")
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }

admin_key=$(berth admin key create admin --json --data-dir "$data")
berth admin user create ecr-reader --no-password --data-dir "$data" >/dev/null
cat >"$dir/reader.json" <<'JSON'
{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": ["ecr:Describe*", "ecr:List*", "ecr:BatchGetImage", "ecr:GetAuthorizationToken"], "Resource": "*"},
  {"Effect": "Deny", "Action": "ecr:CreateRepository", "Resource": "*"}]}
JSON
berth admin policy put --user ecr-reader --name reader "$dir/reader.json" --data-dir "$data" >/dev/null
reader_key=$(berth admin key create ecr-reader --json --data-dir "$data")

export ECR_ENDPOINT=http://127.0.0.1:$port ECR_ACCOUNT=$account ECR_RECORD=$dir/answers.jsonl
export AWS_DEFAULT_REGION=$region AWS_EC2_METADATA_DISABLED=true
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY ECR_DENIED_KEY_ID ECR_DENIED_SECRET
AWS_ACCESS_KEY_ID=$(json_field id <<<"$admin_key")
AWS_SECRET_ACCESS_KEY=$(json_field secret <<<"$admin_key")
ECR_DENIED_KEY_ID=$(json_field id <<<"$reader_key")
ECR_DENIED_SECRET=$(json_field secret <<<"$reader_key")
unset AWS_PROFILE AWS_SESSION_TOKEN

status=0
"$VENV/bin/python" docker/ecr/walk_model.py --self-test || status=1
log "scenario (boto3 $BOTO3_VERSION, awscli $AWSCLI_VERSION)"
timeout --kill-after=10 "$SECONDS_EACH" "$VENV/bin/python" docker/ecr/ecr_scenario.py || status=1
log "model walk (botocore $BOTOCORE_VERSION's ECR model)"
timeout --kill-after=10 "$SECONDS_EACH" "$VENV/bin/python" docker/ecr/walk_model.py "$ECR_RECORD" --probe || status=1
if grep -qE 'http.status=5[0-9][0-9]' "$dir/berth.log"; then
  log "Berth answered 5xx:"
  grep -E 'http.status=5[0-9][0-9]' "$dir/berth.log" | tail -n 5 >&2
  status=1
fi
[ "$status" = 0 ] || { log "failed; Berth's log:"; tail -n 30 "$dir/berth.log" >&2; }
log "done in $(($(date +%s) - started)) s"
exit "$status"
