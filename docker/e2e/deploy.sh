# End-to-end checks of the deployer (docker/deployer/deployer.py) against Berth: task
# definitions pinned to digests by Berth, tasks run in dockerd, a push to the tag they were
# defined with delivered as a signed CloudEvent webhook and rolled out within
# minimumHealthyPercent / maximumPercent. Sourced by run.sh (group `deploy`); uses its
# helpers (check, start_bg, wait_for, free_port, sk, docker, admin_api) and what it set up:
# Berth at $R with the admin's password, dockerd ($DOCKER_HOST), docker and skopeo signed in.

# Two busybox images that differ in /etc/version (v1 and v2), a third for the unrelated
# pushes (other), and one whose health check fails (sick: no /etc/version); each runs a
# command that stays up until SIGTERM.
make_deploy_content() {
  local d=$LAB/deploy v r
  mkdir -p "$d"
  for v in v1 v2 other sick; do
    r=$d/root-$v
    mkdir -p "$r/bin" "$r/etc"
    cp /bin/busybox "$r/bin/busybox"
    for a in sh sleep cat test; do ln -sf busybox "$r/bin/$a"; done
    [ "$v" = sick ] || echo "$v $RUN_ID" >"$r/etc/version"
    printf '#!/bin/sh\ntrap "exit 0" TERM\nwhile :; do sleep 1; done\n' >"$r/bin/serve"
    chmod +x "$r/bin/serve"
    tar -C "$r" -cf "$d/$v.tar" .
    python3 "$HERE/make_oci.py" image "$d/oci-$v" --tag 1 --gzip --layer "$d/$v.tar" --cmd /bin/serve >"$d/$v.digest" || return 1
  done
  export DEPLOY_SECRET DEPLOY_PORT DEPLOY_URL V1_DIGEST V2_DIGEST
  DEPLOY_SECRET=whsec-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  DEPLOY_PORT=$(free_port $((PORT + 30)))
  DEPLOY_URL=http://127.0.0.1:$DEPLOY_PORT
  V1_DIGEST=$(cat "$d/v1.digest")
  V2_DIGEST=$(cat "$d/v2.digest")
  # desiredCount 2, at least 50 % healthy (1), at most 100 % (2): every new task waits for
  # an old one to stop first, so the minimum is what the rollout leans on.
  cat >"$d/web.json" <<EOT
{"family": "web", "networkMode": "none",
 "containerDefinitions": [{"name": "web", "image": "$R/e2e/deploy:live",
   "environment": [{"name": "E2E_RUN", "value": "$RUN_ID"}],
   "healthCheck": {"command": ["CMD-SHELL", "test -f /etc/version"], "interval": 1, "timeout": 2, "retries": 2},
   "stopTimeout": 5}],
 "desiredCount": 2,
 "deploymentConfiguration": {"minimumHealthyPercent": 50, "maximumPercent": 100}}
EOT
  cat >"$d/nope.json" <<EOT
{"family": "nope", "containerDefinitions": [{"name": "nope", "image": "$R/e2e/nope:missing"}]}
EOT
  cat >"$d/stuck.json" <<EOT
{"family": "stuck", "containerDefinitions": [{"name": "stuck", "image": "$R/e2e/deploy@$V1_DIGEST"}],
 "service": {"desiredCount": 2, "deploymentConfiguration": {"minimumHealthyPercent": 100, "maximumPercent": 100}}}
EOT
}

deployer_status() { curl -sf "$DEPLOY_URL/status"; }
# The deployer's log, shown when a check fails.
deployer_log_tail() { echo "--- deployer log:"; tail -n 25 "$LAB/deployer.log"; }
# The family's running containers as "id image" lines, sorted.
web_containers() {
  docker ps -q --no-trunc --filter label=berth.deployer.family=web --filter status=running |
    xargs -r docker inspect -f '{{.Id}} {{.Config.Image}}' | sort
}
# tasks_on DIGEST: /status shows desiredCount healthy tasks on DIGEST and no rollout.
tasks_on() {
  deployer_status | jq -e --arg d "$1" '(.rolling|not) and .ready and (.tasks|length)==2 and all(.tasks[]; .digest==$d and .healthy)'
}
# signed_post SECRET TIMESTAMP BODY-FILE: POSTs a CloudEvent to the deployer signed as Berth
# signs (HMAC-SHA256 over "<t>.<body>"); prints the status code.
signed_post() {
  local sig
  sig=$(python3 -c 'import hmac,hashlib,sys; print(hmac.new(sys.argv[1].encode(), sys.argv[2].encode()+b"."+open(sys.argv[3],"rb").read(), hashlib.sha256).hexdigest())' "$1" "$2" "$3")
  curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/cloudevents+json' \
    -H "Berth-Signature: t=$2,v1=$sig" -H "Berth-Event-Id: $(jq -r .id "$3")" --data-binary "@$3" "$DEPLOY_URL/events"
}

c_deploy_push_v1() {
  sk copy --dest-tls-verify=false "oci:$LAB/deploy/oci-v1:1" "docker://$R/e2e/deploy:live" || return 1
  expect_eq "$(manifest_digest e2e/deploy live)" "$V1_DIGEST"
}

c_deploy_taskdef_resolve_pins_digest() {
  local out
  out=$(admin_api POST /task-definitions/resolve "$LAB/deploy/web.json") || { echo "$out"; return 1; }
  echo "$out"
  jq -e --arg img "$R/e2e/deploy@$V1_DIGEST" '.containerDefinitions[0].image == $img and .family == "web"' <<<"$out"
}

c_deploy_taskdef_resolve_unknown_image() {
  local out code
  out=$(curl -s -w '\n%{http_code}' -u "admin:$ADMIN_PW" -H 'content-type: application/json' \
    --data-binary "@$LAB/deploy/nope.json" "http://$R/api/v1/task-definitions/resolve")
  echo "$out"
  code=$(tail -n1 <<<"$out")
  [[ $code == 4?? ]] || { echo "expected 4xx, got $code"; return 1; }
  sed '$d' <<<"$out" | jq -e '[.errors[] | (.message + " " + (.detail|tostring))] | any(contains("e2e/nope"))'
}

c_deploy_deployer_refuses_unknown_image() {
  local rc why
  DEPLOYER_PASSWORD=$ADMIN_PW python3 "$ROOT/docker/deployer/deployer.py" --registry "http://$R" --username admin \
    --taskdef "$LAB/deploy/nope.json" --listen 127.0.0.1:0 --no-subscribe --secret "$DEPLOY_SECRET" 2>"$LAB/deploy/nope.log"
  rc=$?
  cat "$LAB/deploy/nope.log"
  expect_eq "$rc" 2 || return 1
  # Refused by the resolve endpoint (not for the credentials), naming the image.
  why=$(sed -n '/resolving the task definition failed with 4/,$p' "$LAB/deploy/nope.log")
  [ -n "$why" ] && ! grep -q 'failed with 40[13]' <<<"$why" && grep -q "e2e/nope" <<<"$why" &&
    [ -z "$(docker ps -aq --filter label=berth.deployer.family=nope)" ]
}

c_deploy_unprogressable_bounds_refused() {
  local rc
  python3 "$ROOT/docker/deployer/deployer.py" --taskdef "$LAB/deploy/stuck.json" --listen 127.0.0.1:0 \
    --no-subscribe --secret "$DEPLOY_SECRET" 2>"$LAB/deploy/stuck.log"
  rc=$?
  cat "$LAB/deploy/stuck.log"
  expect_eq "$rc" 2 && grep -q "cannot make progress" "$LAB/deploy/stuck.log" && [ -z "$(docker ps -aq --filter label=berth.deployer.family=stuck)" ]
}

c_deploy_initial_v1_running() {
  wait_for 40 tasks_on "$V1_DIGEST" || { deployer_status; deployer_log_tail; return 1; }
  local c
  c=$(web_containers)
  echo "$c"
  expect_eq "$(wc -l <<<"$c")" 2 && expect_eq "$(awk '{print $2}' <<<"$c" | sort -u)" "$R/e2e/deploy@$V1_DIGEST" || return 1
  deployer_status | jq -e '.deployed.web == "'"$R/e2e/deploy@$V1_DIGEST"'" and .events_applied == 0'
}

c_deploy_rollout_to_v2() {
  local samples=$LAB/deploy/samples sampler
  : >"$samples"
  # Every ~100 ms: how many of the family's containers run, and how many are healthy.
  (while :; do
    docker ps --filter label=berth.deployer.family=web --filter status=running --format '{{.Status}}' |
      awk '{n++} /\(healthy\)/{h++} END{print n+0, h+0}' >>"$samples"
    sleep 0.1
  done) &
  sampler=$!
  trap 'kill $sampler 2>/dev/null' EXIT
  sleep 0.5
  sk copy --dest-tls-verify=false "oci:$LAB/deploy/oci-v2:1" "docker://$R/e2e/deploy:live" || return 1
  expect_eq "$(manifest_digest e2e/deploy live)" "$V2_DIGEST" || return 1
  wait_for 60 tasks_on "$V2_DIGEST" || { deployer_status; deployer_log_tail; return 1; }
  sleep 0.3
  kill $sampler
  local c
  c=$(web_containers)
  echo "$c"
  expect_eq "$(wc -l <<<"$c")" 2 && expect_eq "$(awk '{print $2}' <<<"$c" | sort -u)" "$R/e2e/deploy@$V2_DIGEST" || return 1
  deployer_status | jq -e '.deployed.web == "'"$R/e2e/deploy@$V2_DIGEST"'" and .events_applied == 1 and .rollouts == 1' || return 1
  web_containers >"$LAB/deploy/after-v2"
}

c_deploy_min_healthy_kept() {
  local samples=$LAB/deploy/samples
  echo "$(wc -l <"$samples") samples (running healthy):"
  uniq -c "$samples"
  [ "$(wc -l <"$samples")" -ge 10 ] || { echo "too few samples"; return 1; }
  # Never fewer than minHealthy = ceil(2 * 50 %) = 1 healthy (nor running), never more than
  # maxTotal = 2 running.
  local min_running max_running min_healthy
  min_running=$(awk 'NR==1||$1<m{m=$1} END{print m}' "$samples")
  max_running=$(awk '$1>m{m=$1} END{print m}' "$samples")
  min_healthy=$(awk 'NR==1||$2<m{m=$2} END{print m}' "$samples")
  echo "running: min $min_running, max $max_running; healthy: min $min_healthy"
  [ "$min_running" -ge 1 ] && [ "$max_running" -le 2 ] && [ "$min_healthy" -ge 1 ]
}

c_deploy_unrelated_tag_ignored() {
  local before received ignored
  before=$(deployer_status) || return 1
  received=$(jq .events_received <<<"$before")
  ignored=$(jq .events_ignored <<<"$before")
  sk copy --dest-tls-verify=false "oci:$LAB/deploy/oci-other:1" "docker://$R/e2e/deploy:other" &&
    sk copy --dest-tls-verify=false "oci:$LAB/deploy/oci-other:1" "docker://$R/e2e/unrelated:live" || return 1
  # The push of e2e/deploy:other arrives and is ignored; e2e/unrelated is outside the
  # subscription's repositories, so it may never arrive: give it a few seconds.
  wait_for 20 eval "deployer_status | jq -e '.events_received > $received and .events_ignored > $ignored'" ||
    { deployer_status; deployer_log_tail; return 1; }
  sleep 3
  deployer_status | jq -e '(.rolling|not) and .rollouts == 1 and .events_applied == 1 and .deployed.web == "'"$R/e2e/deploy@$V2_DIGEST"'"' || return 1
  expect_eq "$(web_containers)" "$(cat "$LAB/deploy/after-v2")" && grep -q 'e2e/deploy:other' "$LAB/deployer.log"
}

c_deploy_unhealthy_rollout_rolled_back() {
  local before
  before=$(deployer_status) || return 1
  # An image without /etc/version: its health check fails, docker reports it unhealthy, the
  # rollout fails and the service goes back to v2, within the same bounds.
  sk copy --dest-tls-verify=false "oci:$LAB/deploy/oci-sick:1" "docker://$R/e2e/deploy:live" || return 1
  wait_for 60 eval "deployer_status | jq -e '.rollouts_failed == 1' && tasks_on $V2_DIGEST" || { deployer_status; deployer_log_tail; return 1; }
  deployer_status | jq -e --argjson b "$before" '.rollouts == $b.rollouts and .events_applied == $b.events_applied + 1 and
    .deployed.web == "'"$R/e2e/deploy@$V2_DIGEST"'"' || return 1
  local c
  c=$(web_containers)
  echo "$c"
  expect_eq "$(wc -l <<<"$c")" 2 && expect_eq "$(awk '{print $2}' <<<"$c" | sort -u)" "$R/e2e/deploy@$V2_DIGEST" || return 1
  grep -q 'failed; rolling back to' "$LAB/deployer.log" && grep -q 'rolled back: 2 tasks' "$LAB/deployer.log"
}

c_deploy_bad_signature_refused() {
  local ev=$LAB/deploy/forged.json now refused
  now=$(date +%s)
  refused=$(deployer_status | jq .events_refused)
  # A push of the tag the service follows, to a digest nobody has: were it accepted, the
  # deployer would try to roll onto it.
  jq -n --arg r "e2e/deploy" --arg now "$now" '{specversion: "1.0", id: ("forged-" + $now), source: "/berth/e2e",
    type: "dev.berth.manifest.push", subject: "e2e/deploy:live", datacontenttype: "application/json",
    data: {repository: $r, tag: "live", digest: ("sha256:" + ("0" * 64)), mediaType: "application/vnd.oci.image.manifest.v1+json"}}' >"$ev"
  expect_eq "$(signed_post wrong-secret "$now" "$ev")" 401 || return 1
  # The right secret, but 400 s old: a replay.
  expect_eq "$(signed_post "$DEPLOY_SECRET" $((now - 400)) "$ev")" 401 || return 1
  expect_eq "$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/cloudevents+json' --data-binary "@$ev" "$DEPLOY_URL/events")" 401 || return 1
  expect_eq "$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/cloudevents+json' -H "Berth-Signature: t=$now,v1=$(printf '0%.0s' {1..64})" --data-binary "@$ev" "$DEPLOY_URL/events")" 401 || return 1
  deployer_status | jq -e ".events_refused == $refused + 4 and .rollouts == 1 and .rollouts_failed == 1 and (.rolling|not)" || return 1
  grep -q 'refused a webhook request' "$LAB/deployer.log"
}

c_deploy_duplicate_event_counted_once() {
  local ev=$LAB/deploy/dup.json now before
  now=$(date +%s)
  before=$(deployer_status) || return 1
  jq -n --arg now "$now" '{specversion: "1.0", id: ("dup-" + $now), source: "/berth/e2e", type: "dev.berth.manifest.push",
    subject: "e2e/elsewhere:1", data: {repository: "e2e/elsewhere", tag: "1", digest: ("sha256:" + ("1" * 64))}}' >"$ev"
  expect_eq "$(signed_post "$DEPLOY_SECRET" "$now" "$ev")" 200 && expect_eq "$(signed_post "$DEPLOY_SECRET" "$now" "$ev")" 200 || return 1
  deployer_status | jq -e --argjson b "$before" '.events_received == $b.events_received + 1 and .events_duplicate == $b.events_duplicate + 1'
}

c_deploy_sigterm_cleanup() {
  local pid
  pid=$(cat "$LAB/deployer.pid")
  kill -TERM "$pid" || return 1
  # (Until run.sh reaps it, the exited deployer is a zombie: kill -0 would still succeed.)
  alive() { local s; s=$(ps -o stat= -p "$1") && [[ $s != Z* ]]; }
  for _ in $(seq 200); do alive "$pid" || break; sleep 0.1; done
  alive "$pid" && { echo "deployer $pid still runs"; return 1; }
  deployer_log_tail
  expect_eq "$(docker ps -aq --filter label=berth.deployer.family=web | wc -l)" 0 && grep -q 'exit 0$' "$LAB/deployer.log"
}

deploy_checks() {
  make_deploy_content || { log "could not make the deploy images"; return; }
  check deploy_push_v1 "$STEP" c_deploy_push_v1
  check deploy_taskdef_resolve_pins_digest "$STEP" c_deploy_taskdef_resolve_pins_digest
  check deploy_taskdef_resolve_unknown_image "$STEP" c_deploy_taskdef_resolve_unknown_image
  check deploy_deployer_refuses_unknown_image 20 c_deploy_deployer_refuses_unknown_image
  check deploy_unprogressable_bounds_refused 10 c_deploy_unprogressable_bounds_refused
  # The deployer pulls with docker's sign-in (the admin's, in $LAB/docker/cli).
  start_bg deployer env DOCKER_CONFIG="$LAB/docker/cli" DEPLOYER_PASSWORD="$ADMIN_PW" DEPLOYER_SECRET="$DEPLOY_SECRET" \
    python3 "$ROOT/docker/deployer/deployer.py" --registry "http://$R" --username admin --taskdef "$LAB/deploy/web.json" \
    --listen "127.0.0.1:$DEPLOY_PORT" --task-timeout 30 --cleanup
  check deploy_initial_v1_running 45 c_deploy_initial_v1_running
  check deploy_rollout_to_v2 90 c_deploy_rollout_to_v2
  check deploy_min_healthy_kept 2 c_deploy_min_healthy_kept
  check deploy_unrelated_tag_ignored 40 c_deploy_unrelated_tag_ignored
  check deploy_unhealthy_rollout_rolled_back 75 c_deploy_unhealthy_rollout_rolled_back
  check deploy_bad_signature_refused "$STEP" c_deploy_bad_signature_refused
  check deploy_duplicate_event_counted_once "$STEP" c_deploy_duplicate_event_counted_once
  check deploy_sigterm_cleanup 30 c_deploy_sigterm_cleanup
}
