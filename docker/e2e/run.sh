#!/usr/bin/env bash
# End-to-end: real clients (docker, podman, buildah, skopeo, ctr, oras) sign in to, push to
# and pull from a running Berth with authentication on, over plain HTTP on loopback and over
# verified HTTPS, and Berth's own container image runs inside dockerd.
#
#   docker/e2e/run.sh     # builds nothing: runs target/release/berth, or $E2E_BERTH_BIN
#
# Options (environment; its own variables are E2E_*: Berth reads every BERTH_* variable as
# configuration):
#   E2E_BERTH_BIN      the Berth binary (default target/release/berth)
#   E2E_LAB            scratch folder (default a new /tmp/berth-e2e.XXXXXX)
#   E2E_STEP_SECONDS   deadline of a check that talks to the registry (default 6)
#   E2E_LARGE_MIB      size of the large random layer (default 512)
#   E2E_KEEP=1         keep the scratch folder even when everything passed
#   E2E_ONLY="auth tls ..."  run only these groups of checks (skopeo docker podman buildah
#                      ctr oras auth ecr tls immutable pullthrough replication large image
#                      deploy health); the sign-ins always run.
#                      Groups use content earlier ones pushed: for quick local iterations.
#   E2E_HOST_IP        a non-loopback address of this machine for docker's verified-TLS
#                      checks (default: the first global IPv4 address)
#
# Installs what it needs (Debian packages, oras from PyPI), starts Berth with a random admin
# password, dockerd and a standalone containerd on private sockets and data roots under a
# scratch folder, builds test images from local files with fresh random content, signs every
# client in, runs every check with a deadline, prints one PASS/FAIL line per check and
# `N passed, N failed`, and stops exactly what it started. The TLS checks make a fresh CA in
# the scratch folder and put its certificate in /etc/docker/certs.d/<host>:<port>/ (root),
# removed again at the end.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export HERE ROOT
export E2E_BERTH_BIN=${E2E_BERTH_BIN:-$ROOT/target/release/berth}
export LAB=${E2E_LAB:-$(mktemp -d /tmp/berth-e2e.XXXXXX)}
# Deadline of a step that talks to the registry: well under the 10 s a hanging TLS probe
# answer would cost a client, so a stall fails the step.
export STEP=${E2E_STEP_SECONDS:-6}
LARGE_MIB=${E2E_LARGE_MIB:-512}
# The admin's password, new every run; Berth gets it as BERTH_AUTH__ADMIN_PASSWORD.
export ADMIN_PW
ADMIN_PW=pw-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
# What a refusal by the registry says, as each client words it (checked case-insensitively):
# an `unauthorized`/`denied` error, a 401/403 status, or docker's "no basic auth credentials".
export AUTH_REFUSAL='unauthorized|denied: |access to the resource is denied|authentication required|insufficient_scope|401 Unauthorized|403 Forbidden|no basic auth credentials'
# What a client that does not trust the server's certificate says.
export TLS_REFUSAL='x509: certificate signed by unknown authority|certificate verify failed|unknown authority'
PASSED=0
FAILED=0
STARTED_PIDS=()
CERTS_D_MADE=()

log() { printf '%s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------
# Bookkeeping: checks and the processes this script started.

# check NAME DEADLINE_SECONDS COMMAND...: runs COMMAND (a function of this script) with a
# deadline; its output goes to $LAB/steps/NAME.log and is shown when it fails. pipefail:
# `curl -f … | jq -e …` must fail when curl does (jq -e passes on empty input).
check() {
  local name=$1 deadline=$2
  shift 2
  local out="$LAB/steps/$name.log" start end rc
  start=$(date +%s.%N)
  timeout --kill-after=5 "$deadline" bash -o pipefail -c "$(declare -f); $*" >"$out" 2>&1
  rc=$?
  end=$(date +%s.%N)
  local took
  took=$(printf '%.2f' "$(echo "$end - $start" | bc)")
  if [ $rc -eq 0 ]; then
    PASSED=$((PASSED + 1))
    echo "PASS $name (${took}s)"
  else
    FAILED=$((FAILED + 1))
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
      echo "FAIL $name: no answer within ${deadline}s"
    else
      echo "FAIL $name (exit $rc, ${took}s):"
    fi
    tail -n 15 "$out" | sed 's/^/    /'
  fi
}

start_bg() { # start_bg NAME COMMAND...: runs in the background, remembers the PID
  local name=$1
  shift
  "$@" >"$LAB/$name.log" 2>&1 &
  STARTED_PIDS+=($!)
  echo $! >"$LAB/$name.pid"
}

stop_all() {
  [ -n "${DOCKER_HOST:-}" ] && docker rm -f berth-in-docker >/dev/null 2>&1
  local i
  for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
    kill "${STARTED_PIDS[i]}" 2>/dev/null
  done
  for pid in "${STARTED_PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  done
  # The CA this run put in docker's trust folders, and the folders it had to make.
  for ((i = ${#CERTS_D_MADE[@]} - 1; i >= 0; i--)); do
    rm -f "${CERTS_D_MADE[i]}/ca.crt"
    rmdir "${CERTS_D_MADE[i]}" 2>/dev/null
  done
  # dockerd leaves its network-namespace bind mount behind; release what is under $LAB.
  findmnt -rn -o TARGET | grep "^$LAB/" | sort -r | xargs -r umount -l 2>/dev/null
  if [ "${FINISHED:-0}" = 1 ] && [ "$FAILED" -eq 0 ] && [ -z "${E2E_KEEP:-}" ]; then
    rm -rf "$LAB"
  else
    log "kept for inspection: $LAB (step logs in $LAB/steps)"
  fi
}
trap stop_all EXIT

wait_for() { # wait_for SECONDS COMMAND...: polls until COMMAND succeeds
  local deadline=$(($(date +%s) + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$deadline" ] && return 1
    sleep 0.1
  done
}

free_port() { # the first port from $1 that nothing listens on
  local p=$1
  while ss -ltn "sport = :$p" | grep -q LISTEN; do p=$((p + 1)); done
  echo "$p"
}

# ---------------------------------------------------------------------------------------
# Installs.

install_clients() {
  local need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v skopeo >/dev/null || need+=(skopeo)
  command -v podman >/dev/null || need+=(podman)
  command -v buildah >/dev/null || need+=(buildah)
  [ -x /bin/busybox ] || need+=(busybox-static)
  command -v jq >/dev/null || need+=(jq)
  command -v bc >/dev/null || need+=(bc)
  command -v ss >/dev/null || need+=(iproute2)
  command -v curl >/dev/null || need+=(curl)
  command -v findmnt >/dev/null || need+=(util-linux)
  [ -x /usr/bin/docker-registry ] || need+=(docker-registry)
  command -v htpasswd >/dev/null || need+=(apache2-utils)
  command -v openssl >/dev/null || need+=(openssl)
  python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing: ${need[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${need[@]}" >/dev/null
  fi
  local venv=$ROOT/target/e2e-venv
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import oras' 2>/dev/null ||
    [ "$("$venv/bin/python" -c 'import awscli, botocore; print(awscli.__version__, botocore.__version__)' 2>/dev/null)" != "1.46.3 1.44.8" ]; then
    log "installing oras and the aws CLI (PyPI) into $venv"
    python3 -m venv "$venv" && "$venv/bin/pip" install -q 'oras==0.2.43' 'awscli==1.46.3' 'botocore==1.44.8'
  fi
  export ORAS_PY=$venv/bin/python AWS_CLI=$venv/bin/aws
}

# ---------------------------------------------------------------------------------------
# Daemons, each on private sockets and data roots under $LAB.

start_berth() {
  export PORT
  PORT=$(free_port 5100)
  export R=127.0.0.1:$PORT
  mkdir -p "$LAB/berth"
  start_bg berth env BERTH_AUTH__ADMIN_PASSWORD="$ADMIN_PW" "$E2E_BERTH_BIN" serve --listen "$R" --data-dir "$LAB/berth"
  export E2E_BERTH_PID
  E2E_BERTH_PID=$(cat "$LAB/berth.pid")
  wait_for 10 curl -sf -u "admin:$ADMIN_PW" "http://$R/v2/"
}

start_dockerd() {
  mkdir -p "$LAB/docker"
  start_bg dockerd /usr/sbin/dockerd --data-root "$LAB/docker/data" --exec-root "$LAB/docker/exec" \
    --pidfile "$LAB/docker/dockerd.pid" -H "unix://$LAB/docker/docker.sock" --storage-driver=overlay2 \
    --iptables=false --ip6tables=false --ip-masq=false --bridge=none
  export DOCKER_HOST=unix://$LAB/docker/docker.sock
  wait_for 60 docker info
}

start_containerd() {
  mkdir -p "$LAB/containerd"
  cat >"$LAB/containerd/config.toml" <<EOT
version = 2
root = "$LAB/containerd/root"
state = "$LAB/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$LAB/containerd/containerd.sock"
EOT
  start_bg containerd containerd --config "$LAB/containerd/config.toml"
  export CTR_SOCK=$LAB/containerd/containerd.sock
  wait_for 30 ctr -a "$CTR_SOCK" version
}

setup_podman() {
  mkdir -p "$LAB/podman" "$LAB/skopeo" "$LAB/buildah"
  # No CAP_SYS_RESOURCE here: podman's default rlimits cannot be set, so pin them.
  printf '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n' >"$LAB/podman/containers.conf"
  printf '[[registry]]\nlocation = "%s"\ninsecure = true\n' "$R" >"$LAB/podman/registries.conf"
  printf '[storage]\ndriver = "vfs"\ngraphroot = "%s/podman/root"\nrunroot = "%s/podman/run"\n' "$LAB" "$LAB" >"$LAB/podman/storage.conf"
  # One credentials file per client, each written by that client's own `login`: podman's
  # is the default (REGISTRY_AUTH_FILE), skopeo and buildah are given theirs with --authfile.
  echo '{"auths":{}}' >"$LAB/podman/auth.json"
  export CONTAINERS_CONF=$LAB/podman/containers.conf CONTAINERS_REGISTRIES_CONF=$LAB/podman/registries.conf
  export CONTAINERS_STORAGE_CONF=$LAB/podman/storage.conf REGISTRY_AUTH_FILE=$LAB/podman/auth.json
  export SKOPEO_AUTH=$LAB/skopeo/auth.json BUILDAH_AUTH=$LAB/buildah/auth.json
  # containers/image remembers blobs by host:port across runs; start with no memory.
  export XDG_CACHE_HOME=$LAB/cache
  rm -f /var/lib/containers/cache/blob-info-cache-v1.boltdb
}

# ---------------------------------------------------------------------------------------
# Test content, made from local files, fresh every run.

make_content() {
  export RUN_ID
  RUN_ID=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
  local root=$LAB/rootfs
  mkdir -p "$root/bin" "$root/etc"
  cp /bin/busybox "$root/bin/busybox"
  for a in sh cat echo ls id sha256sum; do ln -sf busybox "$root/bin/$a"; done
  echo "motd $RUN_ID" >"$root/etc/motd"
  tar -C "$root" -cf "$LAB/rootfs.tar" .
  # A second layer with random bytes, and an arm64 placeholder (a file, not runnable here).
  mkdir -p "$LAB/extra/data" "$LAB/arm/etc"
  head -c 300000 /dev/urandom >"$LAB/extra/data/random.bin"
  (cd "$LAB/extra" && sha256sum data/random.bin >data/random.sha256)
  tar -C "$LAB/extra" -cf "$LAB/extra.tar" .
  echo "arm64 $RUN_ID" >"$LAB/arm/etc/arch"
  tar -C "$LAB/arm" -cf "$LAB/arm.tar" .
  python3 "$HERE/make_oci.py" image "$LAB/oci-one" --tag 1 --gzip --layer "$LAB/rootfs.tar" --cmd /bin/sh >/dev/null
  python3 "$HERE/make_oci.py" image "$LAB/oci-two" --tag 1 --gzip --layer "$LAB/rootfs.tar" --layer "$LAB/extra.tar" --cmd /bin/sh >/dev/null
  python3 "$HERE/make_oci.py" image "$LAB/oci-arm" --tag 1 --gzip --arch arm64 --layer "$LAB/arm.tar" >/dev/null
  python3 "$HERE/make_oci.py" index "$LAB/oci-multi" --tag 1 --image "amd64=$LAB/oci-two:1" --image "arm64=$LAB/oci-arm:1" >/dev/null
  # Build contexts for docker/podman builds: several layers, random content.
  mkdir -p "$LAB/ctx"
  cp /bin/busybox "$LAB/ctx/busybox"
  cp "$LAB/extra/data/random.bin" "$LAB/ctx/random.bin"
  cat >"$LAB/ctx/Dockerfile" <<EOT
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && echo built-$RUN_ID > /built.txt"]
COPY random.bin /data/random.bin
CMD ["/bin/sh"]
EOT
  echo "artifact $RUN_ID" >"$LAB/artifact.txt"
  # Small images of their own for the auth and TLS checks, so that every pull there
  # downloads a blob nobody has yet: one layer holding /<name>.txt.
  local t
  for t in login readonly public private ecr ecr-http deny gone tls; do
    mkdir -p "$LAB/tiny/$t"
    echo "$t $RUN_ID" >"$LAB/tiny/$t/$t.txt"
    tar -C "$LAB/tiny/$t" -cf "$LAB/tiny/$t.tar" "$t.txt"
    python3 "$HERE/make_oci.py" image "$LAB/oci-$t" --tag 1 --gzip --layer "$LAB/tiny/$t.tar" >/dev/null
  done
}

# Users, passwords and policy documents of the auth checks.
make_auth_fixtures() {
  local a=$LAB/auth
  mkdir -p "$a"
  export READER_PW GONE_PW
  READER_PW=rd-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
  GONE_PW=gn-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
  printf '{"name": "reader", "password": "%s"}\n' "$READER_PW" >"$a/reader.json"
  printf '{"name": "gone", "password": "%s"}\n' "$GONE_PW" >"$a/gone.json"
  echo '{"disabled": true}' >"$a/disable.json"
  cat >"$a/readonly.json" <<'EOT'
{"Version": "2012-10-17", "Statement": [{"Sid": "ReadOnly", "Effect": "Allow",
  "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"], "Resource": "*"}]}
EOT
  cat >"$a/public.json" <<'EOT'
{"Version": "2012-10-17", "Statement": [{"Sid": "AnonymousPull", "Effect": "Allow", "Principal": "*",
  "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]}]}
EOT
  cat >"$a/deny-push.json" <<'EOT'
{"Version": "2012-10-17", "Statement": [{"Sid": "NoPush", "Effect": "Deny", "Principal": "*",
  "Action": "ecr:PutImage"}]}
EOT
}

make_large_layer() {
  mkdir -p "$LAB/large/data"
  head -c $((LARGE_MIB * 1024 * 1024)) /dev/urandom >"$LAB/large/data/large.bin"
  tar -C "$LAB/large" -cf "$LAB/large.tar" .
  rm -rf "$LAB/large"
  python3 "$HERE/make_oci.py" image "$LAB/oci-large" --tag 1 --gzip --layer "$LAB/large.tar" >/dev/null
}

# ---------------------------------------------------------------------------------------
# Helpers the checks use (they run in `bash -c` with this script's functions declared).

ACCEPT='application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json'
export ACCEPT
# Berth's API as the admin (Basic credentials straight on /v2/, as with ECR).
api() { curl -sf -u "admin:$ADMIN_PW" "http://$R$1"; }
status_of() { curl -s -o /dev/null -w '%{http_code}' -u "admin:$ADMIN_PW" "http://$R$1"; }
manifest_header() { curl -sfI -u "admin:$ADMIN_PW" -H "Accept: $ACCEPT" "http://$R/v2/$1/manifests/$2" | tr -d '\r' | awk -F': ' -v h="$3" 'tolower($1)==h{print $2}'; }
manifest_type() { manifest_header "$1" "$2" content-type; }
manifest_digest() { manifest_header "$1" "$2" docker-content-digest; }
mounts() { grep -c 'blob mounted' "$LAB/berth.log"; }
expect_eq() { [ "$1" = "$2" ] || { echo "expected [$2], got [$1]"; return 1; }; }
layout_manifest_digest() { jq -r '.manifests[0].digest' "$1/index.json"; }
# The admin HTTP API (/api/v1/) as the admin: admin_api METHOD PATH [JSON-FILE].
admin_api() {
  local args=(-sS --fail-with-body -u "admin:$ADMIN_PW" -X "$1" "http://$R/api/v1$2")
  [ -n "${3:-}" ] && args+=(-H 'content-type: application/json' --data-binary "@$3")
  curl "${args[@]}" || return
  echo
}
# docker's CLI config (the admin's `docker login`) is $LAB/docker/cli. It is given to each
# docker command rather than exported as DOCKER_CONFIG: containers/image (podman, skopeo,
# buildah) reads $DOCKER_CONFIG/config.json too, and would use docker's sign-in (podman
# login even refuses: "auth file contains an Identity token").
docker() { DOCKER_CONFIG=${DOCKER_CONFIG:-$LAB/docker/cli} command docker "$@"; }
# dk WHO ARGS...: docker with the CLI config (credentials) of WHO, in $LAB/docker/cli-WHO.
dk() {
  local who=$1
  shift
  mkdir -p "$LAB/docker/cli-$who"
  DOCKER_CONFIG=$LAB/docker/cli-$who docker "$@"
}
# skopeo, podman, buildah and oras as the admin, each with its own sign-in.
sk() { skopeo "$1" --authfile "$SKOPEO_AUTH" "${@:2}"; }
oras_as() { # oras_as BACKEND USER PASSWORD ARGS...: oras_client.py ("" "": no credentials)
  ORAS_AUTH=$1 ORAS_USER=$2 ORAS_PASS=$3 "$ORAS_PY" "$HERE/oras_client.py" "${@:4}"
}
# oras-py pushes with Basic credentials on /v2/ and pulls with a Bearer token: its token
# backend cannot push to a registry that issues tokens per scope (see oras_client.py).
oras_push() { oras_as basic admin "$ADMIN_PW" "$@"; }
oras_pull() { oras_as token admin "$ADMIN_PW" "$@"; }
push_as_admin() { # push_as_admin NAME: the tiny image oci-NAME to $R/e2e/NAME:1, with skopeo
  sk copy --dest-tls-verify=false "oci:$LAB/oci-$1:1" "docker://$R/e2e/$1:1"
}
# refused PATTERN COMMAND...: passes when COMMAND fails AND what it printed matches PATTERN
# (an extended regex, case-insensitive), so that an unrelated failure does not count.
refused() {
  local pattern=$1 out rc
  shift
  out=$("$@" 2>&1)
  rc=$?
  printf '%s\n' "$out"
  if [ "$rc" -eq 0 ]; then
    echo "REFUSAL EXPECTED, but it succeeded: $*"
    return 1
  fi
  if ! grep -Eiq -- "$pattern" <<<"$out"; then
    echo "FAILED (exit $rc) BUT NOT AS A REFUSAL (/$pattern/): $*"
    return 1
  fi
  echo "-> refused as expected (exit $rc)"
}

# ---------------------------------------------------------------------------------------
# Sign-ins: every client logs in before the other checks (they all need it).

c_auth_v2_requires_authentication() {
  local h
  h=$(curl -s -o /dev/null -D - "http://$R/v2/" | tr -d '\r')
  echo "$h"
  grep -q '^HTTP/1.1 401' <<<"$h" && grep -Eqi "^www-authenticate: Bearer realm=\"http://$R/token\",service=\"berth\"" <<<"$h" || return 1
  # On a repository the challenge names the scope the client must ask for.
  h=$(curl -s -o /dev/null -D - "http://$R/v2/e2e/login/manifests/1" | tr -d '\r')
  echo "$h"
  grep -q '^HTTP/1.1 401' <<<"$h" && grep -Eqi 'scope="repository:e2e/login:pull"' <<<"$h"
}

c_auth_docker_login_wrong_password_refused() {
  refused "$AUTH_REFUSAL" dk wrong login -u admin --password-stdin "$R" <<<"wrong-$ADMIN_PW" || return 1
  ! jq -e --arg r "$R" '.auths[$r]' "$LAB/docker/cli-wrong/config.json" 2>/dev/null
}

c_auth_docker_login_token_flow() {
  docker login -u admin --password-stdin "$R" <<<"$ADMIN_PW" || return 1
  # The daemon fetched a token with offline_token=true; the CLI keeps the refresh token it
  # got (identitytoken) instead of the password, and later requests trade it for tokens.
  jq -e --arg r "$R" '.auths[$r].identitytoken | length > 20' "$LAB/docker/cli/config.json" || { cat "$LAB/docker/cli/config.json"; return 1; }
  docker import "$LAB/tiny/login.tar" "$R/e2e/login:1" >/dev/null || return 1
  local id
  id=$(docker image inspect -f '{{.Id}}' "$R/e2e/login:1")
  docker push -q "$R/e2e/login:1" && docker rmi -f "$R/e2e/login:1" >/dev/null && docker pull -q "$R/e2e/login:1" || return 1
  expect_eq "$(docker image inspect -f '{{.Id}}' "$R/e2e/login:1")" "$id" && grep -q 'token issued auth.user="admin"' "$LAB/berth.log"
}

c_auth_podman_login() {
  podman login -u admin --password-stdin "$R" <<<"$ADMIN_PW" && jq -e --arg r "$R" '.auths[$r].auth | length > 0' "$REGISTRY_AUTH_FILE"
}

c_auth_skopeo_login() {
  skopeo login --tls-verify=false --authfile "$SKOPEO_AUTH" -u admin --password-stdin "$R" <<<"$ADMIN_PW" || return 1
  jq -e --arg r "$R" '.auths[$r].auth | length > 0' "$SKOPEO_AUTH" || return 1
  sk inspect --tls-verify=false "docker://$R/e2e/login:1" | jq -e '.Layers|length==1' || return 1
  refused "$AUTH_REFUSAL" skopeo inspect --tls-verify=false --no-creds "docker://$R/e2e/login:1"
}

c_auth_buildah_login() {
  buildah login --tls-verify=false --authfile "$BUILDAH_AUTH" -u admin --password-stdin "$R" <<<"$ADMIN_PW" && jq -e --arg r "$R" '.auths[$r].auth | length > 0' "$BUILDAH_AUTH"
}

login_checks() {
  check auth_v2_requires_authentication "$STEP" c_auth_v2_requires_authentication
  check auth_docker_login_wrong_password_refused "$STEP" c_auth_docker_login_wrong_password_refused
  check auth_docker_login_token_flow "$STEP" c_auth_docker_login_token_flow
  check auth_podman_login "$STEP" c_auth_podman_login
  check auth_skopeo_login "$STEP" c_auth_skopeo_login
  check auth_buildah_login "$STEP" c_auth_buildah_login
  # ctr and oras-py sign in per command (ctr --user, oras credentials): without, refused.
  check auth_ctr_without_credentials_refused "$STEP" "refused \"\$AUTH_REFUSAL\" ctr -a $CTR_SOCK images pull --plain-http $R/e2e/login:1"
  check auth_oras_without_credentials_refused "$STEP" "refused \"\$AUTH_REFUSAL\" oras_as token '' '' $R $R/e2e/oras-anonymous:1 push $LAB/artifact.txt"
}

# ---------------------------------------------------------------------------------------
# The checks, client by client (each signed in as the admin above).

docker_checks() {
  local img=$R/e2e/docker
  check docker_import_image 30 "docker import -c 'CMD [\"/bin/sh\"]' $LAB/rootfs.tar $img:1 >/dev/null"
  check docker_push_v2s2 "$STEP" "docker push $img:1 | tee $LAB/docker-push.txt && expect_eq \"\$(manifest_type e2e/docker 1)\" application/vnd.docker.distribution.manifest.v2+json"
  check docker_pull_back_same_image "$STEP" "id=\$(docker image inspect -f '{{.Id}}' $img:1) && docker rmi $img:1 >/dev/null && docker pull -q $img:1 && expect_eq \"\$(docker image inspect -f '{{.Id}}' $img:1)\" \"\$id\""
  check docker_run_pulled_image "$STEP" "expect_eq \"\$(docker run --rm --network=none $img:1 cat /etc/motd)\" \"motd $RUN_ID\""
  check docker_pull_by_digest "$STEP" "d=\$(manifest_digest e2e/docker 1) && docker pull -q $img@\$d && docker run --rm --network=none $img@\$d cat /etc/motd | grep -q $RUN_ID"
  check docker_build_multilayer_push 60 "DOCKER_BUILDKIT=0 docker build -q -t $R/e2e/dbuild:1 $LAB/ctx && docker push $R/e2e/dbuild:1 && expect_eq \"\$(api /v2/e2e/dbuild/manifests/1 | jq '.layers|length')\" 3"
  check docker_cross_repo_mount "$STEP" "before=\$(mounts) && docker tag $R/e2e/dbuild:1 $R/e2e/dbuild-copy:1 && docker push $R/e2e/dbuild-copy:1 && [ \$(mounts) -gt \$before ]"
  check docker_tags_list "$STEP" "docker tag $img:1 $img:2 && docker push -q $img:2 && expect_eq \"\$(api /v2/e2e/docker/tags/list | jq -c .tags)\" '[\"1\",\"2\"]'"
  check docker_multiplatform_pull_arm64 "$STEP" "docker pull -q --platform linux/arm64 $R/e2e/multi:1 && expect_eq \"\$(docker image inspect -f '{{.Architecture}}' $R/e2e/multi:1)\" arm64"
  check docker_multiplatform_pull_amd64_and_run "$STEP" "docker rmi $R/e2e/multi:1 >/dev/null; docker pull -q --platform linux/amd64 $R/e2e/multi:1 && docker run --rm --network=none $R/e2e/multi:1 sh -c 'cd / && sha256sum -c data/random.sha256'"
  check docker_manifest_inspect_cli "$STEP" "docker manifest inspect --insecure $R/e2e/multi:1 | jq -e '.manifests|length==2'"
}

skopeo_checks() {
  local dst=docker://$R/e2e/skopeo
  local flags=(--dest-tls-verify=false --src-tls-verify=false)
  check skopeo_push_oci "$STEP" "sk copy ${flags[*]} oci:$LAB/oci-one:1 $dst:1 && expect_eq \"\$(manifest_type e2e/skopeo 1)\" application/vnd.oci.image.manifest.v1+json && expect_eq \"\$(manifest_digest e2e/skopeo 1)\" \"\$(layout_manifest_digest $LAB/oci-one)\""
  check skopeo_push_v2s2 "$STEP" "sk copy ${flags[*]} --format v2s2 oci:$LAB/oci-two:1 $dst:v2s2 && expect_eq \"\$(manifest_type e2e/skopeo v2s2)\" application/vnd.docker.distribution.manifest.v2+json"
  check skopeo_pull_back_byte_identical "$STEP" "sk copy ${flags[*]} $dst:1 oci:$LAB/pulled-one:1 && for b in $LAB/oci-one/blobs/sha256/*; do cmp \$b $LAB/pulled-one/blobs/sha256/\$(basename \$b) || exit 1; done"
  check skopeo_inspect_and_list_tags "$STEP" "sk inspect --tls-verify=false $dst:1 | jq -e '.Layers|length==1' && expect_eq \"\$(sk list-tags --tls-verify=false $dst | jq -c .Tags)\" '[\"1\",\"v2s2\"]'"
  check skopeo_pull_by_digest "$STEP" "d=\$(manifest_digest e2e/skopeo 1) && sk copy ${flags[*]} $dst@\$d dir:$LAB/pulled-by-digest && test -s $LAB/pulled-by-digest/manifest.json"
  check skopeo_delete_manifest "$STEP" "d=\$(manifest_digest e2e/skopeo v2s2) && sk delete --tls-verify=false $dst:v2s2 && expect_eq \"\$(sk list-tags --tls-verify=false $dst | jq -c .Tags)\" '[\"1\"]' && expect_eq \"\$(status_of /v2/e2e/skopeo/manifests/\$d)\" 404"
  check skopeo_push_index_all "$STEP" "sk copy ${flags[*]} --all oci:$LAB/oci-multi:1 docker://$R/e2e/multi:1 && expect_eq \"\$(manifest_type e2e/multi 1)\" application/vnd.oci.image.index.v1+json && expect_eq \"\$(manifest_digest e2e/multi 1)\" \"\$(layout_manifest_digest $LAB/oci-multi)\""
  check skopeo_override_arch_arm64 "$STEP" "expect_eq \"\$(skopeo --override-arch arm64 inspect --authfile $SKOPEO_AUTH --tls-verify=false docker://$R/e2e/multi:1 | jq -r .Architecture)\" arm64"
  check skopeo_cross_repo_mount "$STEP" "before=\$(mounts) && sk copy ${flags[*]} $dst:1 docker://$R/e2e/skopeo-copy:1 && [ \$(mounts) -gt \$before ]"
  check skopeo_pull_all_platforms_back "$STEP" "sk copy ${flags[*]} --all docker://$R/e2e/multi:1 oci:$LAB/pulled-multi:1 && expect_eq \"\$(layout_manifest_digest $LAB/pulled-multi)\" \"\$(layout_manifest_digest $LAB/oci-multi)\""
}

podman_checks() {
  check podman_build_multilayer 60 "podman build -q --network=none -t $R/e2e/podman:1 $LAB/ctx"
  check podman_push_oci "$STEP" "podman push -q $R/e2e/podman:1 && expect_eq \"\$(manifest_type e2e/podman 1)\" application/vnd.oci.image.manifest.v1+json"
  check podman_push_v2s2 "$STEP" "podman push -q --format v2s2 $R/e2e/podman:1 $R/e2e/podman:v2s2 && expect_eq \"\$(manifest_type e2e/podman v2s2)\" application/vnd.docker.distribution.manifest.v2+json"
  check podman_pull_back_and_run "$STEP" "podman rmi -f $R/e2e/podman:1 >/dev/null && podman pull -q $R/e2e/podman:1 >/dev/null && expect_eq \"\$(podman run --rm --network=none $R/e2e/podman:1 cat /built.txt)\" built-$RUN_ID"
  check podman_pull_by_digest "$STEP" "d=\$(manifest_digest e2e/podman 1) && podman pull -q $R/e2e/podman@\$d >/dev/null"
  check podman_pull_arch_arm64 "$STEP" "podman pull -q --arch arm64 $R/e2e/multi:1 >/dev/null && expect_eq \"\$(podman image inspect --format '{{.Architecture}}' $R/e2e/multi:1)\" arm64"
  check podman_manifest_push_all "$STEP" "podman manifest create $R/e2e/podlist:1 >/dev/null && podman manifest add $R/e2e/podlist:1 docker://$R/e2e/podman:1 >/dev/null && podman manifest add --arch arm64 $R/e2e/podlist:1 docker://$R/e2e/multi:1 >/dev/null && podman manifest push --all $R/e2e/podlist:1 docker://$R/e2e/podlist:1 && api /v2/e2e/podlist/manifests/1 | jq -e '.manifests|length==2'"
  check podman_cross_repo_mount "$STEP" "before=\$(mounts) && podman push -q $R/e2e/podman:1 $R/e2e/podman-copy:1 && [ \$(mounts) -gt \$before ]"
}

buildah_checks() {
  local a="--authfile $BUILDAH_AUTH"
  check buildah_from_scratch_push "$STEP" "c=\$(buildah from scratch) && buildah copy \$c /bin/busybox /bin/busybox >/dev/null && buildah run --network=none \$c -- /bin/busybox sh -c '/bin/busybox --install -s /bin; echo buildah-$RUN_ID > /b.txt' && buildah config --cmd /bin/sh \$c && buildah commit -q \$c $R/e2e/buildah:1 >/dev/null && buildah push -q $a $R/e2e/buildah:1 && api /v2/e2e/buildah/tags/list | jq -e '.tags==[\"1\"]'"
  check buildah_pull_back_and_run "$STEP" "buildah rmi -f $R/e2e/buildah:1 >/dev/null && buildah pull -q $a $R/e2e/buildah:1 >/dev/null && c=\$(buildah from $a $R/e2e/buildah:1) && expect_eq \"\$(buildah run --network=none \$c -- cat /b.txt)\" buildah-$RUN_ID"
}

ctr_checks() {
  local ctr=(ctr -a "$CTR_SOCK")
  local u="--plain-http --user admin:$ADMIN_PW"
  check ctr_pull "$STEP" "${ctr[*]} images pull $u $R/e2e/podman:1 >/dev/null"
  check ctr_run_pulled_image "$STEP" "expect_eq \"\$(${ctr[*]} run --rm $R/e2e/podman:1 e2e-$RUN_ID cat /built.txt)\" built-$RUN_ID"
  check ctr_push "$STEP" "${ctr[*]} images tag $R/e2e/podman:1 $R/e2e/ctr:1 >/dev/null && ${ctr[*]} images push $u $R/e2e/ctr:1 >/dev/null && expect_eq \"\$(manifest_digest e2e/ctr 1)\" \"\$(manifest_digest e2e/podman 1)\""
  check ctr_pull_all_platforms "$STEP" "${ctr[*]} images pull $u --all-platforms $R/e2e/multi:1 >/dev/null && ${ctr[*]} content ls | grep -c . >/dev/null"
  check ctr_pull_by_digest "$STEP" "d=\$(manifest_digest e2e/ctr 1) && ${ctr[*]} images pull $u $R/e2e/ctr@\$d >/dev/null"
}

oras_checks() {
  check oras_push_artifact "$STEP" "oras_push $R $R/e2e/oras:1 push $LAB/artifact.txt && api /v2/e2e/oras/manifests/1 | jq -e '.layers[0].annotations[\"org.opencontainers.image.title\"]==\"artifact.txt\"'"
  check oras_pull_artifact_identical "$STEP" "oras_pull $R $R/e2e/oras:1 pull $LAB/oras-pulled && cmp $LAB/artifact.txt $LAB/oras-pulled/artifact.txt"
}

# ---------------------------------------------------------------------------------------
# Authentication and authorization with real clients: identities, tokens and policies.

c_auth_unauthenticated_push_refused() {
  dk logout login -u admin --password-stdin "$R" <<<"$ADMIN_PW" && dk logout logout "$R" || return 1
  if jq -e --arg r "$R" '.auths[$r]' "$LAB/docker/cli-logout/config.json"; then echo "still signed in after logout"; return 1; fi
  docker tag "$R/e2e/login:1" "$R/e2e/anonymous-push:1" || return 1
  refused "$AUTH_REFUSAL" dk logout push "$R/e2e/anonymous-push:1" || return 1
  expect_eq "$(status_of /v2/e2e/anonymous-push/manifests/1)" 404
}

c_auth_readonly_user_pull_ok_push_denied() {
  admin_api POST /users "$LAB/auth/reader.json" && admin_api PUT /users/reader/policies/readonly "$LAB/auth/readonly.json" || return 1
  push_as_admin readonly || return 1
  dk reader login -u reader --password-stdin "$R" <<<"$READER_PW" || return 1
  dk reader pull -q "$R/e2e/readonly:1" || return 1
  docker tag "$R/e2e/readonly:1" "$R/e2e/readonly:by-reader" || return 1
  refused "$AUTH_REFUSAL" dk reader push "$R/e2e/readonly:by-reader" || return 1
  expect_eq "$(status_of /v2/e2e/readonly/manifests/by-reader)" 404
}

c_auth_access_key_login() {
  local key id secret
  key=$(admin_api POST /users/admin/access-keys) || { echo "$key"; return 1; }
  id=$(jq -r .id <<<"$key")
  secret=$(jq -r .secret <<<"$key")
  echo "access key $id"
  dk key login -u "$id" --password-stdin "$R" <<<"$secret" || return 1
  docker tag "$R/e2e/login:1" "$R/e2e/by-access-key:1" && dk key push -q "$R/e2e/by-access-key:1" || return 1
  expect_eq "$(status_of /v2/e2e/by-access-key/manifests/1)" 200
}

c_auth_ecr_login_token() {
  local token
  # Like `aws ecr get-login-password | docker login -u AWS --password-stdin`.
  token=$("$E2E_BERTH_BIN" login-token --user admin --data-dir "$LAB/berth" 2>"$LAB/login-token.stderr") || { cat "$LAB/login-token.stderr"; return 1; }
  # Its standard output is the password and nothing else: it is piped into docker login.
  if ! [[ $token =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$ ]]; then
    echo "berth login-token printed more than a token on standard output:"
    echo "$token"
    return 1
  fi
  push_as_admin ecr || return 1
  dk ecr login -u AWS --password-stdin "$R" <<<"$token" && dk ecr pull -q "$R/e2e/ecr:1"
}

c_auth_ecr_login_token_http() {
  local answer token
  push_as_admin ecr-http || return 1
  answer=$(api /api/v1/login-token) || return 1
  token=$(jq -r .password <<<"$answer")
  # authorizationToken is base64("AWS:<password>"), as ECR's GetAuthorizationToken gives it.
  expect_eq "$(jq -r .authorizationToken <<<"$answer" | base64 -d)" "AWS:$token" || return 1
  skopeo inspect --tls-verify=false --creds "AWS:$token" "docker://$R/e2e/ecr-http:1" | jq -e '.Layers|length==1'
}

c_auth_anonymous_pull_by_repository_policy() {
  push_as_admin public && push_as_admin private || return 1
  admin_api PUT /repositories/e2e/public/policy "$LAB/auth/public.json" || return 1
  # No credentials at all: an empty CLI config, skopeo --no-creds.
  dk anonymous pull -q "$R/e2e/public:1" || return 1
  refused "$AUTH_REFUSAL" dk anonymous pull "$R/e2e/private:1" || return 1
  skopeo inspect --tls-verify=false --no-creds "docker://$R/e2e/public:1" | jq -e '.Layers|length==1' || return 1
  refused "$AUTH_REFUSAL" skopeo inspect --tls-verify=false --no-creds "docker://$R/e2e/private:1" || return 1
  # The policy allows pulling, not pushing.
  refused "$AUTH_REFUSAL" skopeo copy --dest-tls-verify=false --dest-no-creds "oci:$LAB/oci-private:1" "docker://$R/e2e/public:2" || return 1
  expect_eq "$(status_of /v2/e2e/public/manifests/2)" 404
}

c_auth_repository_policy_deny_beats_allow() {
  push_as_admin deny || return 1
  admin_api PUT /repositories/e2e/deny/policy "$LAB/auth/deny-push.json" || return 1
  # The admin's identity policy allows everything; the repository's Deny wins over it.
  docker tag "$R/e2e/login:1" "$R/e2e/deny:2" || return 1
  refused "$AUTH_REFUSAL" docker push "$R/e2e/deny:2" || return 1
  refused "$AUTH_REFUSAL" sk copy --dest-tls-verify=false "oci:$LAB/oci-login:1" "docker://$R/e2e/deny:3" || return 1
  # Only ecr:PutImage is denied: pulling still works.
  sk inspect --tls-verify=false "docker://$R/e2e/deny:1" | jq -e '.Layers|length==1' || return 1
  expect_eq "$(api /v2/e2e/deny/tags/list | jq -c .tags)" '["1"]'
}

c_auth_disabled_user_refused() {
  admin_api POST /users "$LAB/auth/gone.json" && admin_api PUT /users/gone/policies/readonly "$LAB/auth/readonly.json" || return 1
  push_as_admin gone || return 1
  dk gone login -u gone --password-stdin "$R" <<<"$GONE_PW" || return 1
  admin_api PATCH /users/gone "$LAB/auth/disable.json" | jq -e '.disabled == true' || return 1
  # Neither a new sign-in nor the refresh token docker kept from before gets a token.
  refused "$AUTH_REFUSAL" dk gone-again login -u gone --password-stdin "$R" <<<"$GONE_PW" || return 1
  refused "$AUTH_REFUSAL" dk gone pull "$R/e2e/gone:1"
}

auth_checks() {
  check auth_unauthenticated_push_refused "$STEP" c_auth_unauthenticated_push_refused
  check auth_readonly_user_pull_ok_push_denied "$STEP" c_auth_readonly_user_pull_ok_push_denied
  check auth_access_key_login "$STEP" c_auth_access_key_login
  check auth_ecr_login_token "$STEP" c_auth_ecr_login_token
  check auth_ecr_login_token_http "$STEP" c_auth_ecr_login_token_http
  check auth_anonymous_pull_by_repository_policy "$STEP" c_auth_anonymous_pull_by_repository_policy
  check auth_repository_policy_deny_beats_allow "$STEP" c_auth_repository_policy_deny_beats_allow
  check auth_disabled_user_refused "$STEP" c_auth_disabled_user_refused
}

# ---------------------------------------------------------------------------------------
# ECR's own API with the aws CLI (`aws ecr ... --endpoint-url`), signed with an access key from
# `berth admin key create`: the README's worked example. get-login-password signs docker in;
# what docker pushed is what describe-images shows.

ecr() { "$AWS_CLI" ecr "$@" --endpoint-url "http://$R" --region "$ECR_REGION" --output json; }

c_ecr_create_repository() {
  ecr create-repository --repository-name e2e/ecr-cli --image-scanning-configuration scanOnPush=true |
    jq -e '.repository.repositoryName == "e2e/ecr-cli" and .repository.imageScanningConfiguration.scanOnPush'
}

c_ecr_get_login_password_docker_login() {
  ecr get-login-password >"$LAB/ecr-password" && [ -s "$LAB/ecr-password" ] || return 1
  dk ecr-cli login --username AWS --password-stdin "$R" <"$LAB/ecr-password"
}

c_ecr_docker_push_pull() {
  local id
  dk ecr-cli import "$LAB/tiny/ecr.tar" "$R/e2e/ecr-cli:1" >/dev/null && dk ecr-cli push -q "$R/e2e/ecr-cli:1" || return 1
  id=$(dk ecr-cli image inspect -f '{{.Id}}' "$R/e2e/ecr-cli:1") || return 1
  dk ecr-cli rmi "$R/e2e/ecr-cli:1" >/dev/null && dk ecr-cli pull -q "$R/e2e/ecr-cli:1" || return 1
  expect_eq "$(dk ecr-cli image inspect -f '{{.Id}}' "$R/e2e/ecr-cli:1")" "$id"
}

c_ecr_describe_images_shows_the_pushed_digest() {
  local digest
  digest=$(manifest_digest e2e/ecr-cli 1) && [ -n "$digest" ] || return 1
  ecr describe-images --repository-name e2e/ecr-cli --image-ids imageTag=1 | tee "$LAB/ecr-describe.json" |
    jq -e --arg d "$digest" '.imageDetails | length == 1 and .[0].imageDigest == $d and .[0].imageTags == ["1"] and .[0].imageSizeInBytes > 0'
}

c_ecr_delete_repository_force() {
  ecr delete-repository --repository-name e2e/ecr-cli --force | jq -e '.repository.repositoryName == "e2e/ecr-cli"' || return 1
  expect_eq "$(status_of /v2/e2e/ecr-cli/tags/list)" 404
}

ecr_checks() {
  local key
  key=$("$E2E_BERTH_BIN" admin key create admin --json --data-dir "$LAB/berth" 2>"$LAB/ecr-key.stderr") || { cat "$LAB/ecr-key.stderr" >&2; }
  export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY ECR_REGION
  AWS_ACCESS_KEY_ID=$(jq -r .id <<<"$key")
  AWS_SECRET_ACCESS_KEY=$(jq -r .secret <<<"$key")
  ECR_REGION=$(env -u BERTH_AUTH__ADMIN_PASSWORD "$E2E_BERTH_BIN" config --data-dir "$LAB/berth" | jq -r .auth.region)
  export AWS_CONFIG_FILE=$LAB/aws-config AWS_SHARED_CREDENTIALS_FILE=$LAB/aws-credentials AWS_EC2_METADATA_DISABLED=true
  check ecr_create_repository "$STEP" c_ecr_create_repository
  check ecr_get_login_password_docker_login "$STEP" c_ecr_get_login_password_docker_login
  check ecr_docker_push_pull 20 c_ecr_docker_push_pull
  check ecr_describe_images_shows_the_pushed_digest "$STEP" c_ecr_describe_images_shows_the_pushed_digest
  check ecr_delete_repository_force "$STEP" c_ecr_delete_repository_force
}

# ---------------------------------------------------------------------------------------
# Tag immutability (ECR's imageTagMutability), set with curl through the admin API: docker
# and skopeo pushing another image to an existing tag are refused, and what they print
# carries ECR's sentence; the same image pushed again, a new tag and a delete go through.

export IMMUTABLE_REFUSAL="The image tag '(d1|s1)' already exists in the 'e2e/immutable' repository and cannot be overwritten because the repository is immutable"

c_immutable_set_through_the_admin_api() {
  docker tag "$R/e2e/login:1" "$R/e2e/immutable:d1" && docker push -q "$R/e2e/immutable:d1" || return 1
  sk copy --dest-tls-verify=false "oci:$LAB/oci-one:1" "docker://$R/e2e/immutable:s1" || return 1
  manifest_digest e2e/immutable d1 >"$LAB/immutable-d1" && manifest_digest e2e/immutable s1 >"$LAB/immutable-s1" || return 1
  echo '{"imageTagMutability": "IMMUTABLE"}' >"$LAB/immutable.json"
  admin_api PUT /repositories/e2e/immutable/tag-mutability "$LAB/immutable.json" | jq -e '.imageTagMutability == "IMMUTABLE"' || return 1
  admin_api GET /repositories/e2e/immutable/settings | jq -e '.repositoryName == "e2e/immutable" and .imageTagMutability == "IMMUTABLE"'
}

c_immutable_docker_push_of_another_image_refused() {
  docker import -c 'LABEL e2e=another-image' "$LAB/tiny/login.tar" "$R/e2e/immutable:d1" >/dev/null || return 1
  refused "$IMMUTABLE_REFUSAL" docker push "$R/e2e/immutable:d1" || return 1
  expect_eq "$(manifest_digest e2e/immutable d1)" "$(cat "$LAB/immutable-d1")"
}

c_immutable_docker_same_image_again() {
  docker tag "$R/e2e/login:1" "$R/e2e/immutable:d1" && docker push "$R/e2e/immutable:d1" || return 1
  expect_eq "$(manifest_digest e2e/immutable d1)" "$(cat "$LAB/immutable-d1")"
}

c_immutable_skopeo_copy_of_another_image_refused() {
  refused "$IMMUTABLE_REFUSAL" sk copy --dest-tls-verify=false "oci:$LAB/oci-two:1" "docker://$R/e2e/immutable:s1" || return 1
  expect_eq "$(manifest_digest e2e/immutable s1)" "$(cat "$LAB/immutable-s1")"
}

c_immutable_skopeo_same_image_again_new_tag_and_delete() {
  sk copy --dest-tls-verify=false "oci:$LAB/oci-one:1" "docker://$R/e2e/immutable:s1" || return 1
  expect_eq "$(manifest_digest e2e/immutable s1)" "$(cat "$LAB/immutable-s1")" || return 1
  # A tag that does not exist yet may be created; deleting is allowed (as in ECR).
  sk copy --dest-tls-verify=false "oci:$LAB/oci-two:1" "docker://$R/e2e/immutable:s2" || return 1
  sk delete --tls-verify=false "docker://$R/e2e/immutable:s2" || return 1
  expect_eq "$(api /v2/e2e/immutable/tags/list | jq -c .tags)" '["d1","s1"]'
}

immutable_checks() {
  check immutable_set_through_the_admin_api "$STEP" c_immutable_set_through_the_admin_api
  check immutable_docker_push_of_another_image_refused "$STEP" c_immutable_docker_push_of_another_image_refused
  check immutable_docker_same_image_again "$STEP" c_immutable_docker_same_image_again
  check immutable_skopeo_copy_of_another_image_refused "$STEP" c_immutable_skopeo_copy_of_another_image_refused
  check immutable_skopeo_same_image_again_new_tag_and_delete "$STEP" c_immutable_skopeo_same_image_again_new_tag_and_delete
}

# ---------------------------------------------------------------------------------------
# TLS: a second Berth with a certificate from a CA made for this run, and clients that
# verify it. docker 20.10 treats every registry whose host resolves into 127.0.0.0/8 as
# insecure (`localhost` included): it then skips verification and never reads certs.d, so
# docker is pointed at a non-loopback address of this machine, where it must verify.
# Berth refuses plain HTTP from there (tls.plain_http = loopback), so nothing falls back.

make_tls_material() {
  local d=$LAB/tls san="DNS:localhost,IP:127.0.0.1"
  mkdir -p "$d/trust" "$d/wrong"
  [ -n "$HOST_IP" ] && san="$san,IP:$HOST_IP"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=Berth e2e CA $RUN_ID" \
    -addext keyUsage=critical,keyCertSign,cRLSign -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null &&
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=Another CA $RUN_ID" \
      -addext keyUsage=critical,keyCertSign,cRLSign -keyout "$d/wrong/ca.key" -out "$d/wrong/ca.crt" 2>/dev/null &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
      -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null &&
    printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' "$san" >"$d/server.ext" &&
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
      -extfile "$d/server.ext" -out "$d/server.crt" 2>/dev/null &&
    cp "$d/ca.crt" "$d/trust/ca.crt" && rm -f "$d/wrong/ca.key"
}

start_tls_berth() {
  export HOST_IP=${E2E_HOST_IP-$(ip -4 -o addr show scope global 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')}
  export TLS=$LAB/tls TLS_PORT
  make_tls_material || return 1
  TLS_PORT=$(free_port $((PORT + 20)))
  # Loopback for skopeo, podman and curl (localhost), the host's address for docker and ctr.
  export TLS_R=localhost:$TLS_PORT TLS_R_HOST=${HOST_IP:-127.0.0.1}:$TLS_PORT
  export CERTS_D=/etc/docker/certs.d/$TLS_R_HOST
  local listen=127.0.0.1:$TLS_PORT
  [ -n "$HOST_IP" ] && listen=0.0.0.0:$TLS_PORT
  mkdir -p "$LAB/berth-tls"
  start_bg berth-tls env BERTH_AUTH__ADMIN_PASSWORD="$ADMIN_PW" BERTH_TLS__CERT_FILE="$TLS/server.crt" \
    BERTH_TLS__KEY_FILE="$TLS/server.key" "$E2E_BERTH_BIN" serve --listen "$listen" --data-dir "$LAB/berth-tls"
  # docker's trust folder for that address; removed by stop_all.
  [ -d /etc/docker/certs.d ] || CERTS_D_MADE+=(/etc/docker/certs.d)
  [ -d "$CERTS_D" ] || CERTS_D_MADE+=("$CERTS_D")
  mkdir -p "$CERTS_D"
  wait_for 10 curl -sf --cacert "$TLS/ca.crt" -u "admin:$ADMIN_PW" "https://$TLS_R/v2/"
}

c_tls_berth_serves_https() {
  curl -sS --fail-with-body --cacert "$TLS/ca.crt" -u "admin:$ADMIN_PW" "https://$TLS_R/v2/" || return 1
  local h
  h=$(curl -sS --cacert "$TLS/ca.crt" -o /dev/null -D - "https://$TLS_R/v2/" | tr -d '\r')
  echo "$h"
  grep -Eqi "^www-authenticate: Bearer realm=\"https://$TLS_R/token\"" <<<"$h" || return 1
  grep -q 'TLS certificate loaded' "$LAB/berth-tls.log"
}

c_tls_plain_http_loopback_only() {
  # Plain HTTP still answers loopback peers (the default, tls.plain_http = loopback) ...
  expect_eq "$(curl -s -o /dev/null -w '%{http_code}' -u "admin:$ADMIN_PW" "http://127.0.0.1:$TLS_PORT/v2/")" 200 || return 1
  [ -n "$HOST_IP" ] || { echo "no non-loopback address: skipped the refusal half"; return 0; }
  # ... and nobody else: 400 with a hint to use https.
  local answer
  answer=$(curl -s -w '\n%{http_code}' "http://$HOST_IP:$TLS_PORT/v2/")
  echo "$answer"
  expect_eq "$(tail -n1 <<<"$answer")" 400 && grep -qi 'https' <<<"$answer"
}

need_host_ip() {
  [ -n "$HOST_IP" ] && return 0
  echo "this machine has no non-loopback IPv4 address (set E2E_HOST_IP): docker treats 127.0.0.0/8 as insecure and would not verify the certificate"
  return 1
}

c_tls_docker_wrong_ca_refused() {
  need_host_ip || return 1
  cp "$TLS/wrong/ca.crt" "$CERTS_D/ca.crt" || return 1
  refused "$TLS_REFUSAL" dk tls login -u admin --password-stdin "$TLS_R_HOST" <<<"$ADMIN_PW"
}

c_tls_docker_login_push_pull() {
  need_host_ip || return 1
  cp "$TLS/ca.crt" "$CERTS_D/ca.crt" || return 1
  dk tls login -u admin --password-stdin "$TLS_R_HOST" <<<"$ADMIN_PW" || return 1
  local img=$TLS_R_HOST/e2e/tls-docker:1 id
  docker import "$LAB/tiny/tls.tar" "$img" >/dev/null || return 1
  id=$(docker image inspect -f '{{.Id}}' "$img")
  dk tls push -q "$img" && docker rmi -f "$img" >/dev/null && dk tls pull -q "$img" || return 1
  expect_eq "$(docker image inspect -f '{{.Id}}' "$img")" "$id"
}

c_tls_skopeo_verified_copy() {
  local a=(--authfile "$SKOPEO_AUTH")
  skopeo login "${a[@]}" --cert-dir "$TLS/trust" -u admin --password-stdin "$TLS_R" <<<"$ADMIN_PW" || return 1
  skopeo copy "${a[@]}" --dest-tls-verify=true --dest-cert-dir "$TLS/trust" "oci:$LAB/oci-one:1" "docker://$TLS_R/e2e/tls-skopeo:1" || return 1
  skopeo copy "${a[@]}" --src-tls-verify=true --src-cert-dir "$TLS/trust" "docker://$TLS_R/e2e/tls-skopeo:1" "oci:$LAB/pulled-tls:1" || return 1
  expect_eq "$(layout_manifest_digest "$LAB/pulled-tls")" "$(layout_manifest_digest "$LAB/oci-one")"
}

c_tls_skopeo_wrong_ca_refused() {
  refused "$TLS_REFUSAL" skopeo inspect --authfile "$SKOPEO_AUTH" --tls-verify=true --cert-dir "$TLS/wrong" "docker://$TLS_R/e2e/tls-skopeo:1"
}

c_tls_podman_cert_dir() {
  podman login --cert-dir "$TLS/trust" -u admin --password-stdin "$TLS_R" <<<"$ADMIN_PW" || return 1
  podman pull -q --cert-dir "$TLS/trust" "$TLS_R/e2e/tls-skopeo:1" >/dev/null || return 1
  podman push -q --cert-dir "$TLS/trust" "$TLS_R/e2e/tls-skopeo:1" "$TLS_R/e2e/tls-podman:1" || return 1
  expect_eq "$(curl -sf --cacert "$TLS/ca.crt" -u "admin:$ADMIN_PW" "https://$TLS_R/v2/e2e/tls-podman/tags/list" | jq -c .tags)" '["1"]'
}

c_tls_ctr_pull_with_ca() {
  ctr -a "$CTR_SOCK" images pull --tlscacert "$TLS/ca.crt" --user "admin:$ADMIN_PW" "$TLS_R_HOST/e2e/tls-skopeo:1" >/dev/null || return 1
  refused "$TLS_REFUSAL" ctr -a "$CTR_SOCK" images pull --tlscacert "$TLS/wrong/ca.crt" --user "admin:$ADMIN_PW" "$TLS_R_HOST/e2e/tls-podman:1"
}

tls_checks() {
  start_tls_berth || { log "the TLS Berth did not start"; tail -20 "$LAB/berth-tls.log" >&2; }
  check tls_berth_serves_https "$STEP" c_tls_berth_serves_https
  check tls_plain_http_loopback_only "$STEP" c_tls_plain_http_loopback_only
  check tls_docker_wrong_ca_refused "$STEP" c_tls_docker_wrong_ca_refused
  check tls_docker_login_push_pull "$STEP" c_tls_docker_login_push_pull
  check tls_skopeo_verified_copy "$STEP" c_tls_skopeo_verified_copy
  check tls_skopeo_wrong_ca_refused "$STEP" c_tls_skopeo_wrong_ca_refused
  check tls_podman_cert_dir "$STEP" c_tls_podman_cert_dir
  check tls_ctr_pull_with_ca "$STEP" c_tls_ctr_pull_with_ca
}

# ---------------------------------------------------------------------------------------

large_layer_checks() {
  local big=$((LARGE_MIB / 4 + 30)) # seconds: generous for a slow disk, still bounded
  check skopeo_large_layer_push "$big" "sk copy --dest-tls-verify=false oci:$LAB/oci-large:1 docker://$R/e2e/large:1 && expect_eq \"\$(manifest_digest e2e/large 1)\" \"\$(layout_manifest_digest $LAB/oci-large)\""
  check skopeo_large_layer_pull_identical "$big" "sk copy --src-tls-verify=false docker://$R/e2e/large:1 oci:$LAB/pulled-large:1 && d=\$(jq -r '.layers[0].digest' $LAB/pulled-large/blobs/sha256/\$(layout_manifest_digest $LAB/pulled-large | cut -d: -f2)) && expect_eq \"sha256:\$(sha256sum $LAB/pulled-large/blobs/sha256/\${d#sha256:} | cut -d' ' -f1)\" \"\$d\""
  rm -rf "$LAB/pulled-large"
  check podman_large_layer_push_chunked "$big" "skopeo copy oci:$LAB/oci-large:1 containers-storage:$R/e2e/large-podman:1 >/dev/null && podman push -q $R/e2e/large-podman:1 && api /v2/e2e/large-podman/tags/list | jq -e '.tags==[\"1\"]'"
  check oras_large_artifact "$big" "tar -xOf $LAB/large.tar ./data/large.bin > $LAB/large.bin && oras_push $R $R/e2e/oras-large:1 push $LAB/large.bin && oras_pull $R $R/e2e/oras-large:1 pull $LAB/oras-large && cmp $LAB/large.bin $LAB/oras-large/large.bin; rc=\$?; rm -f $LAB/large.bin $LAB/oras-large/large.bin; exit \$rc"
  local hwm_kib
  hwm_kib=$(awk '/VmHWM/{print $2}' "/proc/$E2E_BERTH_PID/status")
  echo "berth peak RSS after ${LARGE_MIB} MiB layers: $((hwm_kib / 1024)) MiB"
  check berth_peak_rss_stays_bounded 2 "[ $hwm_kib -lt $((256 * 1024)) ] || { echo 'peak RSS ${hwm_kib} KiB'; false; }"
}

# Berth's own image, from local files: the release binary, the libraries it links and a
# non-root user, on `FROM scratch`; run in dockerd, pushed to from the host. It starts the
# way a user's first `docker run` does: no password given, so it generates the admin's into
# its volume (/var/lib/berth/admin-password), and the host signs in with that.
c_berth_image_runs_as_non_root() {
  docker rm -f berth-in-docker >/dev/null 2>&1
  docker run -d --name berth-in-docker --network=host -e "BERTH_LISTEN=127.0.0.1:$IMAGE_PORT" --health-interval 1s berth:e2e >/dev/null || return 1
  # Up, and authentication on by default: /v2/ answers 401 without credentials.
  wait_for 5 eval "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$IMAGE_PORT/v2/)\" = 401 ]" || { docker logs berth-in-docker; return 1; }
  expect_eq "$(docker exec berth-in-docker berth health)" healthy &&
    expect_eq "$(awk '/^Uid/{print $2}' "/proc/$(docker inspect -f '{{.State.Pid}}' berth-in-docker)/status")" 10001
}

# The image is FROM scratch (no cat, no stat): its files are read through /proc/<pid>/root.
image_file() { echo "/proc/$(docker inspect -f '{{.State.Pid}}' berth-in-docker)/root$1"; }

c_berth_image_generated_admin_password() {
  local f pw
  f=$(image_file /var/lib/berth/admin-password)
  pw=$(cat "$f") && [ -n "$pw" ] || { echo "no generated password in the volume"; docker logs berth-in-docker; return 1; }
  expect_eq "$(stat -c '%a %u' "$f")" '600 10001' &&
    expect_eq "$(curl -s -o /dev/null -w '%{http_code}' -u "admin:$pw" "http://127.0.0.1:$IMAGE_PORT/v2/")" 200
}

c_berth_image_push_pull_from_host() {
  local pw
  pw=$(cat "$(image_file /var/lib/berth/admin-password)") || return 1
  skopeo copy --dest-tls-verify=false --dest-creds "admin:$pw" "oci:$LAB/oci-two:1" "docker://127.0.0.1:$IMAGE_PORT/e2e/in-docker:1" &&
    skopeo copy --src-tls-verify=false --src-creds "admin:$pw" "docker://127.0.0.1:$IMAGE_PORT/e2e/in-docker:1" "oci:$LAB/pulled-in-docker:1" &&
    expect_eq "$(layout_manifest_digest "$LAB/pulled-in-docker")" "$(layout_manifest_digest "$LAB/oci-two")"
}

berth_image_checks() {
  local ctx=$LAB/image
  mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/etc" "$ctx/data"
  cp "$E2E_BERTH_BIN" "$ctx/rootfs/usr/local/bin/berth"
  for lib in $(ldd "$E2E_BERTH_BIN" | awk '/=>/{print $3} /ld-linux/{print $1}'); do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/rootfs$lib"
  done
  echo "berth:x:10001:10001:berth:/var/lib/berth:/sbin/nologin" >"$ctx/rootfs/etc/passwd"
  # CA certificates, for webhooks over HTTPS.
  mkdir -p "$ctx/rootfs/etc/ssl/certs"
  cp -L /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/"
  echo "berth:x:10001:" >"$ctx/rootfs/etc/group"
  cp "$ROOT/docker/Dockerfile.local" "$ctx/Dockerfile"
  export IMAGE_PORT
  IMAGE_PORT=$(free_port $((PORT + 1)))
  check berth_image_build_from_local_files 60 "DOCKER_BUILDKIT=0 docker build -q -t berth:e2e $ctx"
  check berth_image_runs_as_non_root "$STEP" c_berth_image_runs_as_non_root
  check berth_image_generated_admin_password "$STEP" c_berth_image_generated_admin_password
  check berth_image_healthcheck_healthy 15 "until [ \"\$(docker inspect -f '{{.State.Health.Status}}' berth-in-docker)\" = healthy ]; do sleep 0.5; done"
  check berth_image_push_pull_from_host "$STEP" c_berth_image_push_pull_from_host
  docker rm -f berth-in-docker >/dev/null 2>&1
}

server_health_checks() {
  check berth_answered_no_5xx 2 "! grep -hE 'http.status=5[0-9][0-9]' $LAB/berth.log $LAB/berth-tls.log"
  check berth_catalog_lists_e2e_repos "$STEP" "api '/v2/_catalog?n=1000' | jq -e '[.repositories[]|select(startswith(\"e2e/\"))]|length>=15' || api '/v2/_catalog?n=1000'"
}

# ---------------------------------------------------------------------------------------
# Beyond one registry (issue 21): a pull-through cache of CNCF Distribution (htpasswd), and
# replication to a second Berth (token authentication) and to Distribution, with docker,
# podman and containerd. Each registry runs on loopback with its own data under $LAB and is
# stopped (by its PID) with the rest; an outage is made by stopping one and starting it again.

rand_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# start_distribution NAME PORT-FROM USER PASSWORD: Distribution with htpasswd (bcrypt) at
# $LAB/NAME; sets DIST_ADDR. Run again with the same NAME, it starts on the same port and data.
start_distribution() {
  local name=$1 dir=$LAB/$1 port
  if [ -f "$dir/config.yml" ]; then
    port=$(awk '/addr:/{split($2, a, ":"); print a[2]}' "$dir/config.yml")
  else
    port=$(free_port "$2")
    mkdir -p "$dir/data"
    htpasswd -Bbn "$3" "$4" >"$dir/htpasswd" || return 1
    cat >"$dir/config.yml" <<EOT
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
auth:
  htpasswd:
    realm: $name
    path: $dir/htpasswd
EOT
  fi
  # Distribution reads REGISTRY_* variables as configuration: podman's REGISTRY_AUTH_FILE
  # (exported above) would be its `auth.file`.
  local unset=()
  for v in $(compgen -e | grep '^REGISTRY_'); do unset+=(-u "$v"); done
  start_bg "$name" env "${unset[@]}" /usr/bin/docker-registry serve "$dir/config.yml"
  DIST_ADDR=127.0.0.1:$port
  wait_for 10 eval "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://$DIST_ADDR/v2/)\" = 401 ]"
}

# stop_started NAME: stops a daemon start_bg started, by the PID it recorded.
stop_started() {
  local pid
  pid=$(cat "$LAB/$1.pid") || return 1
  kill "$pid" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
}

# The digest of NAME:REF at Distribution ADDR as USER:PASSWORD (an empty answer when absent).
dist_digest() { curl -sfI -u "$2" -H "Accept: $ACCEPT" "http://$1/v2/$3/manifests/$4" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}'; }

# A runnable image of its own for CLIENT: busybox plus a layer holding /pt-CLIENT.txt.
make_client_image() {
  mkdir -p "$LAB/tiny/$1"
  echo "$1 $RUN_ID" >"$LAB/tiny/$1/$1.txt"
  tar -C "$LAB/tiny/$1" -cf "$LAB/tiny/$1.tar" "$1.txt"
  python3 "$HERE/make_oci.py" image "$LAB/oci-$1" --tag 1 --gzip --layer "$LAB/rootfs.tar" --layer "$LAB/tiny/$1.tar" --cmd /bin/sh >/dev/null
}

# --- pull-through ---

# Upstream images (library/<name>), pushed with skopeo as the upstream's user.
c_pullthrough_seed_upstream() {
  local c f=(--dest-tls-verify=false --dest-creds "upstream:$UP_PW")
  for c in pt-docker pt-podman pt-ctr pt-root; do
    skopeo copy "${f[@]}" "oci:$LAB/oci-$c:1" "docker://$UP/library/$c:1" || return 1
  done
  skopeo copy "${f[@]}" --all "oci:$LAB/oci-multi:1" "docker://$UP/library/pt-multi:1" &&
    skopeo copy "${f[@]}" "oci:$LAB/oci-one:1" "docker://$UP/library/pt-moving:1"
}

c_pullthrough_rule_create() {
  jq -n --arg up "http://$UP" --arg pw "$UP_PW" \
    '{prefix: "e2e-hub", upstream: $up, username: "upstream", password: $pw, refresh: "2s"}' >"$LAB/pt-rule.json"
  admin_api POST /pull-through-rules "$LAB/pt-rule.json" | tee "$LAB/pt-rule-answer.json" || return 1
  # The answer and the listing never show the password.
  ! grep -q "$UP_PW" "$LAB/pt-rule-answer.json" && admin_api GET /pull-through-rules | tee /dev/stderr | jq -e '.rules[]|select(.prefix=="e2e-hub")' >/dev/null &&
    ! admin_api GET /pull-through-rules | grep -q "$UP_PW"
}

c_pullthrough_rule_validate() {
  admin_api POST /pull-through-rules/e2e-hub/validate | tee /dev/stderr | jq -e '.valid == true'
}

# A miss pulled by the client: the same manifest digest as upstream, the image runs.
c_pullthrough_docker_pull_and_run() {
  docker pull -q "$R/e2e-hub/library/pt-docker:1" || return 1
  expect_eq "$(docker run --rm --network=none "$R/e2e-hub/library/pt-docker:1" cat /pt-docker.txt)" "pt-docker $RUN_ID" &&
    expect_eq "$(manifest_digest e2e-hub/library/pt-docker 1)" "$(dist_digest "$UP" "upstream:$UP_PW" library/pt-docker 1)"
}

c_pullthrough_podman_pull_and_run() {
  podman pull -q "$R/e2e-hub/library/pt-podman:1" >/dev/null || return 1
  expect_eq "$(podman run --rm --network=none "$R/e2e-hub/library/pt-podman:1" cat /pt-podman.txt)" "pt-podman $RUN_ID" &&
    expect_eq "$(manifest_digest e2e-hub/library/pt-podman 1)" "$(dist_digest "$UP" "upstream:$UP_PW" library/pt-podman 1)"
}

c_pullthrough_ctr_pull_and_run() {
  local ctr=(ctr -a "$CTR_SOCK") u=(--plain-http --user "admin:$ADMIN_PW")
  "${ctr[@]}" images pull "${u[@]}" "$R/e2e-hub/library/pt-ctr:1" >/dev/null || return 1
  expect_eq "$("${ctr[@]}" run --rm "$R/e2e-hub/library/pt-ctr:1" "pt-$RUN_ID" cat /pt-ctr.txt)" "pt-ctr $RUN_ID"
}

# An index: its children are fetched when the client asks for them, all of them here.
c_pullthrough_ctr_pull_index_all_platforms() {
  local ctr=(ctr -a "$CTR_SOCK") u=(--plain-http --user "admin:$ADMIN_PW")
  "${ctr[@]}" images pull "${u[@]}" --all-platforms "$R/e2e-hub/library/pt-multi:1" >/dev/null || return 1
  expect_eq "$(manifest_digest e2e-hub/library/pt-multi 1)" "$(dist_digest "$UP" "upstream:$UP_PW" library/pt-multi 1)" &&
    curl -sf -u "admin:$ADMIN_PW" -H "Accept: $ACCEPT" "http://$R/v2/e2e-hub/library/pt-multi/manifests/1" | jq -r '.manifests[].digest' | while read -r d; do
      expect_eq "$(status_of "/v2/e2e-hub/library/pt-multi/manifests/$d")" 200 || exit 1
    done
}

c_pullthrough_missing_image_not_found() {
  refused 'not found|manifest unknown|name unknown|404' docker pull "$R/e2e-hub/library/absent-$RUN_ID:1" &&
    expect_eq "$(status_of "/v2/e2e-hub/library/absent-$RUN_ID/manifests/1")" 404
}

# A tag moved upstream is seen once the rule's refresh (2 s) has passed.
c_pullthrough_tag_moved_upstream_seen_after_refresh() {
  docker pull -q "$R/e2e-hub/library/pt-moving:1" >/dev/null || return 1
  expect_eq "$(manifest_digest e2e-hub/library/pt-moving 1)" "$(layout_manifest_digest "$LAB/oci-one")" || return 1
  skopeo copy --dest-tls-verify=false --dest-creds "upstream:$UP_PW" "oci:$LAB/oci-two:1" "docker://$UP/library/pt-moving:1" || return 1
  sleep 3
  docker pull -q "$R/e2e-hub/library/pt-moving:1" >/dev/null || return 1
  expect_eq "$(manifest_digest e2e-hub/library/pt-moving 1)" "$(layout_manifest_digest "$LAB/oci-two")" &&
    docker run --rm --network=none "$R/e2e-hub/library/pt-moving:1" sh -c 'cd / && sha256sum -c data/random.sha256'
}

# Docker's registry-mirrors: a dockerd of its own with `--registry-mirror http://<berth>` pulls
# `pt-root:1` (docker.io/library/pt-root) through a ROOT rule. Docker sends a mirror no
# credentials of its own, so a registry policy lets anyone pull and import library/* for the
# check; the rule and the policy are removed again at its end (a ROOT rule covers every name).
c_pullthrough_docker_registry_mirror_root_rule() {
  local rc=0 md=(env DOCKER_HOST="$MIRROR_DOCKER_HOST" DOCKER_CONFIG="$LAB/docker/cli-mirror")
  jq -n --arg up "http://$UP" --arg pw "$UP_PW" '{prefix: "ROOT", upstream: $up, username: "upstream", password: $pw}' >"$LAB/pt-root-rule.json"
  cat >"$LAB/pt-root-policy.json" <<'EOT'
{"Version": "2012-10-17", "Statement": [{"Sid": "MirrorPulls", "Effect": "Allow", "Principal": "*",
  "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchImportUpstreamImage", "ecr:CreateRepository"],
  "Resource": "arn:aws:ecr:*:*:repository/library/*"}]}
EOT
  if [ "$(status_of /api/v1/registry/policy)" != 404 ]; then echo "a registry policy is set already; not replacing it"; return 1; fi
  admin_api POST /pull-through-rules "$LAB/pt-root-rule.json" && admin_api PUT /registry/policy "$LAB/pt-root-policy.json" || rc=1
  if [ $rc = 0 ]; then
    "${md[@]}" docker pull -q pt-root:1 &&
      expect_eq "$("${md[@]}" docker run --rm --network=none pt-root:1 cat /pt-root.txt)" "pt-root $RUN_ID" &&
      expect_eq "$(manifest_digest library/pt-root 1)" "$(dist_digest "$UP" "upstream:$UP_PW" library/pt-root 1)" || rc=1
  fi
  admin_api DELETE /registry/policy
  admin_api DELETE /pull-through-rules/ROOT
  return $rc
}

# The upstream stopped: what was pulled is served from the cache to fresh clients.
c_pullthrough_served_from_cache_with_upstream_down() {
  local ctr=(ctr -a "$CTR_SOCK") u=(--plain-http --user "admin:$ADMIN_PW")
  if curl -s -o /dev/null "http://$UP/v2/"; then echo "the upstream still answers"; return 1; fi
  docker rmi -f "$R/e2e-hub/library/pt-docker:1" >/dev/null && docker pull -q "$R/e2e-hub/library/pt-docker:1" || return 1
  expect_eq "$(docker run --rm --network=none "$R/e2e-hub/library/pt-docker:1" cat /pt-docker.txt)" "pt-docker $RUN_ID" || return 1
  podman rmi -f "$R/e2e-hub/library/pt-podman:1" >/dev/null && podman pull -q "$R/e2e-hub/library/pt-podman:1" >/dev/null || return 1
  "${ctr[@]}" images rm "$R/e2e-hub/library/pt-ctr:1" >/dev/null && "${ctr[@]}" content prune references >/dev/null 2>&1
  "${ctr[@]}" images pull "${u[@]}" "$R/e2e-hub/library/pt-ctr:1" >/dev/null || return 1
  # The tag's refresh is due (stale-if-error): still served.
  sleep 3
  docker rmi -f "$R/e2e-hub/library/pt-moving:1" >/dev/null && docker pull -q "$R/e2e-hub/library/pt-moving:1" >/dev/null
}

start_dockerd_mirror() {
  local d=$LAB/docker-mirror
  mkdir -p "$d"
  start_bg dockerd-mirror /usr/sbin/dockerd --data-root "$d/data" --exec-root "$d/exec" \
    --pidfile "$d/dockerd.pid" -H "unix://$d/docker.sock" --storage-driver=overlay2 \
    --iptables=false --ip6tables=false --ip-masq=false --bridge=none --registry-mirror "http://$R"
  export MIRROR_DOCKER_HOST=unix://$d/docker.sock
  wait_for 60 env DOCKER_HOST="$MIRROR_DOCKER_HOST" docker info
}

pullthrough_checks() {
  export UP UP_PW
  UP_PW=up-$(rand_hex 12)
  local c
  for c in pt-docker pt-podman pt-ctr pt-root; do make_client_image "$c"; done
  start_distribution dist-up 5300 upstream "$UP_PW" || { check pullthrough_upstream_started 1 false; return; }
  UP=$DIST_ADDR
  check pullthrough_seed_upstream 60 c_pullthrough_seed_upstream
  check pullthrough_rule_create "$STEP" c_pullthrough_rule_create
  check pullthrough_rule_validate "$STEP" c_pullthrough_rule_validate
  check pullthrough_docker_pull_and_run 30 c_pullthrough_docker_pull_and_run
  check pullthrough_podman_pull_and_run 30 c_pullthrough_podman_pull_and_run
  check pullthrough_ctr_pull_and_run 30 c_pullthrough_ctr_pull_and_run
  check pullthrough_ctr_pull_index_all_platforms 30 c_pullthrough_ctr_pull_index_all_platforms
  check pullthrough_missing_image_not_found "$STEP" c_pullthrough_missing_image_not_found
  check pullthrough_tag_moved_upstream_seen_after_refresh 30 c_pullthrough_tag_moved_upstream_seen_after_refresh
  if start_dockerd_mirror; then
    check pullthrough_docker_registry_mirror_root_rule 60 c_pullthrough_docker_registry_mirror_root_rule
  else
    check pullthrough_dockerd_with_registry_mirror_started 1 "tail -20 $LAB/dockerd-mirror.log; false"
  fi
  stop_started dist-up
  check pullthrough_served_from_cache_with_upstream_down 60 c_pullthrough_served_from_cache_with_upstream_down
}

# --- replication ---

start_berth_b() {
  export B B_PW
  B_PW=pwb-$(rand_hex 12)
  B=127.0.0.1:$(free_port $((PORT + 40)))
  mkdir -p "$LAB/berth-b"
  start_bg berth-b env BERTH_AUTH__ADMIN_PASSWORD="$B_PW" "$E2E_BERTH_BIN" serve --listen "$B" --data-dir "$LAB/berth-b"
  wait_for 10 curl -sf -u "admin:$B_PW" "http://$B/v2/"
}

# at_b NAME REF / at_dst NAME REF: the manifest digest at each destination (empty: absent).
at_b() { curl -sfI -u "admin:$B_PW" -H "Accept: $ACCEPT" "http://$B/v2/$1/manifests/$2" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}'; }
at_dst() { dist_digest "$DST" "replica:$DST_PW" "$1" "$2"; }
# arrives NAME REF DIGEST: waits until both destinations have NAME:REF at DIGEST.
arrives() { wait_for "${4:-50}" eval "[ \"\$(at_b $1 $2)\" = $3 ] && [ \"\$(at_dst $1 $2)\" = $3 ]"; }

c_replication_configure() {
  jq -n --arg b "http://$B" --arg bpw "$B_PW" --arg d "http://$DST" --arg dpw "$DST_PW" '{
    destinations: [
      {name: "berth-b", url: $b, username: "admin", password: $bpw, timeout: "5s"},
      {name: "dist", url: $d, username: "replica", password: $dpw, timeout: "5s"}],
    rules: [{destinations: ["berth-b", "dist"], repository_filters: [{filter: "e2e-prod/", filter_type: "PREFIX_MATCH"}]}]}' >"$LAB/replication.json"
  admin_api PUT /replication "$LAB/replication.json" | tee "$LAB/replication-answer.json" || return 1
  ! grep -qE "$B_PW|$DST_PW" "$LAB/replication-answer.json" && ! admin_api GET /replication | grep -qE "$B_PW|$DST_PW"
}

# docker pushes to Berth; the image arrives at Berth B and at Distribution, same digest.
c_replication_docker_push_arrives() {
  docker import -c 'CMD ["/bin/sh"]' "$LAB/rootfs.tar" "$R/e2e-prod/app:1" >/dev/null && docker push -q "$R/e2e-prod/app:1" || return 1
  local d
  d=$(manifest_digest e2e-prod/app 1)
  echo "pushed $d"
  arrives e2e-prod/app 1 "$d" || { echo "at B: [$(at_b e2e-prod/app 1)], at Distribution: [$(at_dst e2e-prod/app 1)]"; return 1; }
}

c_replication_docker_pulls_from_berth_b() {
  dk b login -u admin --password-stdin "$B" <<<"$B_PW" || return 1
  dk b pull -q "$B/e2e-prod/app:1" >/dev/null &&
    expect_eq "$(dk b run --rm --network=none "$B/e2e-prod/app:1" cat /etc/motd)" "motd $RUN_ID"
}

c_replication_podman_pulls_from_berth_b() {
  podman login --tls-verify=false -u admin --password-stdin "$B" <<<"$B_PW" || return 1
  podman pull -q --tls-verify=false "$B/e2e-prod/app:1" >/dev/null &&
    expect_eq "$(podman run --rm --network=none "$B/e2e-prod/app:1" cat /etc/motd)" "motd $RUN_ID"
}

c_replication_ctr_pulls_from_distribution() {
  ctr -a "$CTR_SOCK" images pull --plain-http --user "replica:$DST_PW" "$DST/e2e-prod/app:1" >/dev/null &&
    expect_eq "$(ctr -a "$CTR_SOCK" run --rm "$DST/e2e-prod/app:1" "repl-$RUN_ID" cat /etc/motd)" "motd $RUN_ID"
}

# A multi-platform index (podman's manifest list) arrives whole: every child, then the index.
c_replication_index_arrives_whole() {
  skopeo copy --all --dest-tls-verify=false --authfile "$SKOPEO_AUTH" "oci:$LAB/oci-multi:1" "docker://$R/e2e-prod/multi:1" || return 1
  local d c
  # The index as Berth holds it (skopeo may recompress what its blob cache knows).
  d=$(manifest_digest e2e-prod/multi 1)
  arrives e2e-prod/multi 1 "$d" || { echo "at B: [$(at_b e2e-prod/multi 1)], at Distribution: [$(at_dst e2e-prod/multi 1)]"; return 1; }
  for c in $(curl -sf -u "admin:$ADMIN_PW" -H "Accept: $ACCEPT" "http://$R/v2/e2e-prod/multi/manifests/1" | jq -r '.manifests[].digest'); do
    expect_eq "$(at_b e2e-prod/multi "$c")" "$c" && expect_eq "$(at_dst e2e-prod/multi "$c")" "$c" || return 1
  done
  ctr -a "$CTR_SOCK" images pull --plain-http --user "admin:$B_PW" --all-platforms "$B/e2e-prod/multi:1" >/dev/null &&
    podman pull -q --tls-verify=false --arch arm64 "$DST/e2e-prod/multi:1" --creds "replica:$DST_PW" >/dev/null
}

# Repositories no rule names stay home (checked after a later matching push arrived).
c_replication_unmatched_repositories_not_copied() {
  docker tag "$R/e2e-prod/app:1" "$R/e2e-dev/app:1" && docker push -q "$R/e2e-dev/app:1" || return 1
  docker tag "$R/e2e-prod/app:1" "$R/e2e-prod/app:after-dev" && docker push -q "$R/e2e-prod/app:after-dev" || return 1
  arrives e2e-prod/app after-dev "$(manifest_digest e2e-prod/app 1)" || return 1
  expect_eq "$(curl -s -o /dev/null -w '%{http_code}' -u "admin:$B_PW" "http://$B/v2/e2e-dev/app/manifests/1")" 404 &&
    [ -z "$(at_dst e2e-dev/app 1)" ]
}

c_replication_status_complete() {
  local s
  s=$(admin_api GET "/replication/status?repository=e2e-prod/app&reference=1") || return 1
  echo "$s"
  jq -e '(.statuses | length) == 2 and all(.statuses[]; .status == "COMPLETE")' <<<"$s"
}

# Distribution stopped during a push: Berth B gets it at once, Distribution once it is back.
c_replication_push_while_destination_down() {
  if curl -s -o /dev/null "http://$DST/v2/"; then echo "Distribution still answers"; return 1; fi
  docker import -c 'CMD ["/bin/sh"]' "$LAB/tiny/login.tar" "$R/e2e-prod/late:1" >/dev/null && docker push -q "$R/e2e-prod/late:1" || return 1
  local d
  d=$(manifest_digest e2e-prod/late 1)
  wait_for 50 eval "[ \"\$(at_b e2e-prod/late 1)\" = $d ]" || { echo "not at B"; return 1; }
  admin_api GET "/replication/status?repository=e2e-prod/late&reference=1"
}

c_replication_arrives_after_destination_is_back() {
  local d
  d=$(manifest_digest e2e-prod/late 1)
  arrives e2e-prod/late 1 "$d" 110 || { echo "at Distribution: [$(at_dst e2e-prod/late 1)]"; admin_api GET "/replication/status?repository=e2e-prod/late&reference=1"; return 1; }
}

replication_checks() {
  export DST DST_PW
  DST_PW=dst-$(rand_hex 12)
  start_berth_b || { check replication_berth_b_started 1 false; return; }
  start_distribution dist-dst 5320 replica "$DST_PW" || { check replication_distribution_started 1 false; return; }
  DST=$DIST_ADDR
  check replication_configure "$STEP" c_replication_configure
  check replication_docker_push_arrives 60 c_replication_docker_push_arrives
  check replication_docker_pulls_from_berth_b 30 c_replication_docker_pulls_from_berth_b
  check replication_podman_pulls_from_berth_b 30 c_replication_podman_pulls_from_berth_b
  check replication_ctr_pulls_from_distribution 30 c_replication_ctr_pulls_from_distribution
  check replication_index_arrives_whole 90 c_replication_index_arrives_whole
  check replication_unmatched_repositories_not_copied 60 c_replication_unmatched_repositories_not_copied
  check replication_status_complete "$STEP" c_replication_status_complete
  stop_started dist-dst
  check replication_push_while_destination_down 60 c_replication_push_while_destination_down
  start_distribution dist-dst || { check replication_distribution_restarted 1 false; return; }
  check replication_arrives_after_destination_is_back 120 c_replication_arrives_after_destination_is_back
}

# The deployer (docker/deployer/): task definitions, webhooks and rolling updates.
source "$HERE/deploy.sh"

# ---------------------------------------------------------------------------------------

group() { # group NAME FUNCTION: runs FUNCTION unless E2E_ONLY leaves NAME out
  [ -z "${E2E_ONLY:-}" ] || [[ " $E2E_ONLY " == *" $1 "* ]] || return 0
  "$2"
}

main() {
  [ -x "$E2E_BERTH_BIN" ] || { log "no Berth binary at $E2E_BERTH_BIN (cargo build --release)"; exit 2; }
  mkdir -p "$LAB/steps"
  log "scratch folder: $LAB"
  install_clients
  start_berth || { log "Berth did not start"; cat "$LAB/berth.log" >&2; exit 1; }
  start_dockerd || { log "dockerd did not start"; tail -20 "$LAB/dockerd.log" >&2; exit 1; }
  start_containerd || { log "containerd did not start"; tail -20 "$LAB/containerd.log" >&2; exit 1; }
  setup_podman
  make_content
  make_auth_fixtures
  login_checks
  # The index goes first: docker, podman and ctr pull it by platform.
  group skopeo skopeo_checks
  group docker docker_checks
  group podman podman_checks
  group buildah buildah_checks
  group ctr ctr_checks
  group oras oras_checks
  group auth auth_checks
  group ecr ecr_checks
  group immutable immutable_checks
  group pullthrough pullthrough_checks
  group replication replication_checks
  group tls tls_checks
  if [ -z "${E2E_ONLY:-}" ] || [[ " $E2E_ONLY " == *" large "* ]]; then
    make_large_layer
    large_layer_checks
  fi
  group image berth_image_checks
  group deploy deploy_checks
  group health server_health_checks
  FINISHED=1
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ]
}

main "$@"
