#!/usr/bin/env bash
# End-to-end: real clients (docker, podman, buildah, skopeo, ctr, oras) push to and pull
# from a running Berth, and Berth's own container image runs inside dockerd.
#
#   docker/e2e/run.sh     # builds nothing: runs target/release/berth, or $E2E_BERTH_BIN
#
# (Its own variables are E2E_*: Berth reads every BERTH_* variable as configuration.)
#
# Installs what it needs (Debian packages, oras from PyPI), starts dockerd and a standalone
# containerd on private sockets and data roots under a scratch folder, builds test images
# from local files with fresh random content, runs every check with a deadline, prints one
# PASS/FAIL line per check and `N passed, N failed`, and stops exactly what it started.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export E2E_BERTH_BIN=${E2E_BERTH_BIN:-$ROOT/target/release/berth}
export LAB=${E2E_LAB:-$(mktemp -d /tmp/berth-e2e.XXXXXX)}
# Deadline of a step that talks to the registry: well under the 10 s a hanging TLS probe
# answer would cost a client, so a stall fails the step.
export STEP=${E2E_STEP_SECONDS:-6}
LARGE_MIB=${E2E_LARGE_MIB:-512}
PASSED=0
FAILED=0
STARTED_PIDS=()

log() { printf '%s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------
# Bookkeeping: checks and the processes this script started.

# check NAME DEADLINE_SECONDS COMMAND...: runs COMMAND (a function of this script) with a
# deadline; its output goes to $LAB/steps/NAME.log and is shown when it fails.
check() {
  local name=$1 deadline=$2
  shift 2
  local out="$LAB/steps/$name.log" start end rc
  start=$(date +%s.%N)
  timeout --kill-after=5 "$deadline" bash -c "$(declare -f); $*" >"$out" 2>&1
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
  python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing: ${need[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${need[@]}" >/dev/null
  fi
  local venv=$ROOT/target/e2e-venv
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import oras' 2>/dev/null; then
    log "installing oras (PyPI) into $venv"
    python3 -m venv "$venv" && "$venv/bin/pip" install -q 'oras==0.2.43'
  fi
  export ORAS_PY=$venv/bin/python
}

# ---------------------------------------------------------------------------------------
# Daemons, each on private sockets and data roots under $LAB.

start_berth() {
  export PORT
  PORT=$(free_port 5100)
  export R=127.0.0.1:$PORT
  mkdir -p "$LAB/berth"
  start_bg berth "$E2E_BERTH_BIN" serve --listen "$R" --data-dir "$LAB/berth"
  export E2E_BERTH_PID
  E2E_BERTH_PID=$(cat "$LAB/berth.pid")
  wait_for 10 curl -sf "http://$R/v2/"
}

start_dockerd() {
  mkdir -p "$LAB/docker"
  start_bg dockerd /usr/sbin/dockerd --data-root "$LAB/docker/data" --exec-root "$LAB/docker/exec" \
    --pidfile "$LAB/docker/dockerd.pid" -H "unix://$LAB/docker/docker.sock" --storage-driver=overlay2 \
    --iptables=false --ip6tables=false --ip-masq=false --bridge=none
  export DOCKER_HOST=unix://$LAB/docker/docker.sock DOCKER_CONFIG=$LAB/docker/cli
  wait_for 60 docker info
}

start_containerd() {
  mkdir -p "$LAB/containerd"
  cat >"$LAB/containerd/config.toml" <<EOF
version = 2
root = "$LAB/containerd/root"
state = "$LAB/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$LAB/containerd/containerd.sock"
EOF
  start_bg containerd containerd --config "$LAB/containerd/config.toml"
  export CTR_SOCK=$LAB/containerd/containerd.sock
  wait_for 30 ctr -a "$CTR_SOCK" version
}

setup_podman() {
  mkdir -p "$LAB/podman"
  # No CAP_SYS_RESOURCE here: podman's default rlimits cannot be set, so pin them.
  printf '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n' >"$LAB/podman/containers.conf"
  printf '[[registry]]\nlocation = "%s"\ninsecure = true\n' "$R" >"$LAB/podman/registries.conf"
  printf '[storage]\ndriver = "vfs"\ngraphroot = "%s/podman/root"\nrunroot = "%s/podman/run"\n' "$LAB" "$LAB" >"$LAB/podman/storage.conf"
  echo '{"auths":{}}' >"$LAB/podman/auth.json"
  export CONTAINERS_CONF=$LAB/podman/containers.conf CONTAINERS_REGISTRIES_CONF=$LAB/podman/registries.conf
  export CONTAINERS_STORAGE_CONF=$LAB/podman/storage.conf REGISTRY_AUTH_FILE=$LAB/podman/auth.json
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
  cat >"$LAB/ctx/Dockerfile" <<EOF
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && echo built-$RUN_ID > /built.txt"]
COPY random.bin /data/random.bin
CMD ["/bin/sh"]
EOF
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

api() { curl -sf "http://$R$1"; }
manifest_type() { curl -sfI -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json' "http://$R/v2/$1/manifests/$2" | tr -d '\r' | awk -F': ' 'tolower($1)=="content-type"{print $2}'; }
manifest_digest() { curl -sfI -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json' "http://$R/v2/$1/manifests/$2" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}'; }
mounts() { grep -c 'blob mounted' "$LAB/berth.log"; }
expect_eq() { [ "$1" = "$2" ] || { echo "expected [$2], got [$1]"; return 1; }; }
layout_manifest_digest() { jq -r '.manifests[0].digest' "$1/index.json"; }

# ---------------------------------------------------------------------------------------
# The checks, client by client.

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
  check skopeo_push_oci "$STEP" "skopeo copy ${flags[*]} oci:$LAB/oci-one:1 $dst:1 && expect_eq \"\$(manifest_type e2e/skopeo 1)\" application/vnd.oci.image.manifest.v1+json && expect_eq \"\$(manifest_digest e2e/skopeo 1)\" \"\$(layout_manifest_digest $LAB/oci-one)\""
  check skopeo_push_v2s2 "$STEP" "skopeo copy ${flags[*]} --format v2s2 oci:$LAB/oci-two:1 $dst:v2s2 && expect_eq \"\$(manifest_type e2e/skopeo v2s2)\" application/vnd.docker.distribution.manifest.v2+json"
  check skopeo_pull_back_byte_identical "$STEP" "skopeo copy ${flags[*]} $dst:1 oci:$LAB/pulled-one:1 && for b in $LAB/oci-one/blobs/sha256/*; do cmp \$b $LAB/pulled-one/blobs/sha256/\$(basename \$b) || exit 1; done"
  check skopeo_inspect_and_list_tags "$STEP" "skopeo inspect --tls-verify=false $dst:1 | jq -e '.Layers|length==1' && expect_eq \"\$(skopeo list-tags --tls-verify=false $dst | jq -c .Tags)\" '[\"1\",\"v2s2\"]'"
  check skopeo_pull_by_digest "$STEP" "d=\$(manifest_digest e2e/skopeo 1) && skopeo copy ${flags[*]} $dst@\$d dir:$LAB/pulled-by-digest && test -s $LAB/pulled-by-digest/manifest.json"
  check skopeo_delete_manifest "$STEP" "d=\$(manifest_digest e2e/skopeo v2s2) && skopeo delete --tls-verify=false $dst:v2s2 && expect_eq \"\$(skopeo list-tags --tls-verify=false $dst | jq -c .Tags)\" '[\"1\"]' && ! curl -sf -o /dev/null http://$R/v2/e2e/skopeo/manifests/\$d"
  check skopeo_push_index_all "$STEP" "skopeo copy ${flags[*]} --all oci:$LAB/oci-multi:1 docker://$R/e2e/multi:1 && expect_eq \"\$(manifest_type e2e/multi 1)\" application/vnd.oci.image.index.v1+json && expect_eq \"\$(manifest_digest e2e/multi 1)\" \"\$(layout_manifest_digest $LAB/oci-multi)\""
  check skopeo_override_arch_arm64 "$STEP" "expect_eq \"\$(skopeo --override-arch arm64 inspect --tls-verify=false docker://$R/e2e/multi:1 | jq -r .Architecture)\" arm64"
  check skopeo_cross_repo_mount "$STEP" "before=\$(mounts) && skopeo copy ${flags[*]} $dst:1 docker://$R/e2e/skopeo-copy:1 && [ \$(mounts) -gt \$before ]"
  check skopeo_pull_all_platforms_back "$STEP" "skopeo copy ${flags[*]} --all docker://$R/e2e/multi:1 oci:$LAB/pulled-multi:1 && expect_eq \"\$(layout_manifest_digest $LAB/pulled-multi)\" \"\$(layout_manifest_digest $LAB/oci-multi)\""
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
  check buildah_from_scratch_push "$STEP" "c=\$(buildah from scratch) && buildah copy \$c /bin/busybox /bin/busybox >/dev/null && buildah run --network=none \$c -- /bin/busybox sh -c '/bin/busybox --install -s /bin; echo buildah-$RUN_ID > /b.txt' && buildah config --cmd /bin/sh \$c && buildah commit -q \$c $R/e2e/buildah:1 >/dev/null && buildah push -q $R/e2e/buildah:1 && api /v2/e2e/buildah/tags/list | jq -e '.tags==[\"1\"]'"
  check buildah_pull_back_and_run "$STEP" "buildah rmi -f $R/e2e/buildah:1 >/dev/null && buildah pull -q $R/e2e/buildah:1 >/dev/null && c=\$(buildah from $R/e2e/buildah:1) && expect_eq \"\$(buildah run --network=none \$c -- cat /b.txt)\" buildah-$RUN_ID"
}

ctr_checks() {
  local ctr=(ctr -a "$CTR_SOCK")
  check ctr_pull "$STEP" "${ctr[*]} images pull --plain-http $R/e2e/podman:1 >/dev/null"
  check ctr_run_pulled_image "$STEP" "expect_eq \"\$(${ctr[*]} run --rm $R/e2e/podman:1 e2e-$RUN_ID cat /built.txt)\" built-$RUN_ID"
  check ctr_push "$STEP" "${ctr[*]} images tag $R/e2e/podman:1 $R/e2e/ctr:1 >/dev/null && ${ctr[*]} images push --plain-http $R/e2e/ctr:1 >/dev/null && expect_eq \"\$(manifest_digest e2e/ctr 1)\" \"\$(manifest_digest e2e/podman 1)\""
  check ctr_pull_all_platforms "$STEP" "${ctr[*]} images pull --plain-http --all-platforms $R/e2e/multi:1 >/dev/null && ${ctr[*]} content ls | grep -c . >/dev/null"
  check ctr_pull_by_digest "$STEP" "d=\$(manifest_digest e2e/ctr 1) && ${ctr[*]} images pull --plain-http $R/e2e/ctr@\$d >/dev/null"
}

oras_checks() {
  cat >"$LAB/oras_client.py" <<'EOF'
import os, sys
import oras.client
host, target, mode, path = sys.argv[1:5]
c = oras.client.OrasClient(hostname=host, insecure=True)
if mode == "push":
    os.chdir(os.path.dirname(path))
    r = c.push(files=[os.path.basename(path)], target=target)
    sys.exit(0 if r.status_code == 201 else 1)
else:
    os.makedirs(path, exist_ok=True)
    print(c.pull(target=target, outdir=path))
EOF
  echo "artifact $RUN_ID" >"$LAB/artifact.txt"
  check oras_push_artifact "$STEP" "$ORAS_PY $LAB/oras_client.py $R $R/e2e/oras:1 push $LAB/artifact.txt && api /v2/e2e/oras/manifests/1 | jq -e '.layers[0].annotations[\"org.opencontainers.image.title\"]==\"artifact.txt\"'"
  check oras_pull_artifact_identical "$STEP" "$ORAS_PY $LAB/oras_client.py $R $R/e2e/oras:1 pull $LAB/oras-pulled && cmp $LAB/artifact.txt $LAB/oras-pulled/artifact.txt"
}

large_layer_checks() {
  local big=$((LARGE_MIB / 4 + 30)) # seconds: generous for a slow disk, still bounded
  check skopeo_large_layer_push "$big" "skopeo copy --dest-tls-verify=false oci:$LAB/oci-large:1 docker://$R/e2e/large:1 && expect_eq \"\$(manifest_digest e2e/large 1)\" \"\$(layout_manifest_digest $LAB/oci-large)\""
  check skopeo_large_layer_pull_identical "$big" "skopeo copy --src-tls-verify=false docker://$R/e2e/large:1 oci:$LAB/pulled-large:1 && d=\$(jq -r '.layers[0].digest' $LAB/pulled-large/blobs/sha256/\$(layout_manifest_digest $LAB/pulled-large | cut -d: -f2)) && expect_eq \"sha256:\$(sha256sum $LAB/pulled-large/blobs/sha256/\${d#sha256:} | cut -d' ' -f1)\" \"\$d\""
  rm -rf "$LAB/pulled-large"
  check podman_large_layer_push_chunked "$big" "skopeo copy --dest-tls-verify=false oci:$LAB/oci-large:1 containers-storage:$R/e2e/large-podman:1 >/dev/null && podman push -q $R/e2e/large-podman:1 && api /v2/e2e/large-podman/tags/list | jq -e '.tags==[\"1\"]'"
  check oras_large_artifact "$big" "tar -xOf $LAB/large.tar ./data/large.bin > $LAB/large.bin && $ORAS_PY $LAB/oras_client.py $R $R/e2e/oras-large:1 push $LAB/large.bin && $ORAS_PY $LAB/oras_client.py $R $R/e2e/oras-large:1 pull $LAB/oras-large && cmp $LAB/large.bin $LAB/oras-large/large.bin; rc=\$?; rm -f $LAB/large.bin $LAB/oras-large/large.bin; exit \$rc"
  local hwm_kib
  hwm_kib=$(awk '/VmHWM/{print $2}' "/proc/$E2E_BERTH_PID/status")
  echo "berth peak RSS after ${LARGE_MIB} MiB layers: $((hwm_kib / 1024)) MiB"
  check berth_peak_rss_stays_bounded 2 "[ $hwm_kib -lt $((256 * 1024)) ] || { echo 'peak RSS ${hwm_kib} KiB'; false; }"
}

# Berth's own image, from local files: the release binary, the libraries it links and a
# non-root user, on `FROM scratch`; run in dockerd, pushed to from the host.
berth_image_checks() {
  local ctx=$LAB/image
  mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/etc" "$ctx/data"
  cp "$E2E_BERTH_BIN" "$ctx/rootfs/usr/local/bin/berth"
  for lib in $(ldd "$E2E_BERTH_BIN" | awk '/=>/{print $3} /ld-linux/{print $1}'); do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/rootfs$lib"
  done
  echo "berth:x:10001:10001:berth:/var/lib/berth:/sbin/nologin" >"$ctx/rootfs/etc/passwd"
  echo "berth:x:10001:" >"$ctx/rootfs/etc/group"
  cp "$ROOT/docker/Dockerfile.local" "$ctx/Dockerfile"
  export IMAGE_PORT
  IMAGE_PORT=$(free_port $((PORT + 1)))
  check berth_image_build_from_local_files 60 "DOCKER_BUILDKIT=0 docker build -q -t berth:e2e $ctx"
  check berth_image_runs_as_non_root "$STEP" "docker rm -f berth-in-docker >/dev/null 2>&1; docker run -d --name berth-in-docker --network=host -e BERTH_LISTEN=127.0.0.1:$IMAGE_PORT --health-interval 1s berth:e2e >/dev/null && { wait_for 5 curl -sf http://127.0.0.1:$IMAGE_PORT/v2/ || { docker logs berth-in-docker; false; }; } && expect_eq \"\$(docker exec berth-in-docker berth health)\" healthy && expect_eq \"\$(awk '/^Uid/{print \$2}' /proc/\$(docker inspect -f '{{.State.Pid}}' berth-in-docker)/status)\" 10001"
  check berth_image_healthcheck_healthy 15 "until [ \"\$(docker inspect -f '{{.State.Health.Status}}' berth-in-docker)\" = healthy ]; do sleep 0.5; done"
  check berth_image_push_pull_from_host "$STEP" "skopeo copy --dest-tls-verify=false oci:$LAB/oci-two:1 docker://127.0.0.1:$IMAGE_PORT/e2e/in-docker:1 && skopeo copy --src-tls-verify=false docker://127.0.0.1:$IMAGE_PORT/e2e/in-docker:1 oci:$LAB/pulled-in-docker:1 && expect_eq \"\$(layout_manifest_digest $LAB/pulled-in-docker)\" \"\$(layout_manifest_digest $LAB/oci-two)\""
  docker rm -f berth-in-docker >/dev/null 2>&1
}

server_health_checks() {
  check berth_answered_no_5xx 2 "! grep -E 'http.status=5[0-9][0-9]' $LAB/berth.log"
  check berth_catalog_lists_e2e_repos "$STEP" "api '/v2/_catalog?n=1000' | jq -e '[.repositories[]|select(startswith(\"e2e/\"))]|length>=15' || api '/v2/_catalog?n=1000'"
}

# ---------------------------------------------------------------------------------------

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
  # The index goes first: docker, podman and ctr pull it by platform.
  skopeo_checks
  docker_checks
  podman_checks
  buildah_checks
  ctr_checks
  oras_checks
  make_large_layer
  large_layer_checks
  berth_image_checks
  server_health_checks
  FINISHED=1
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ]
}

main "$@"
