#!/usr/bin/env python3
"""A small deployer that stands in for a container scheduler (like ECS) in front of Berth.

    deployer.py --registry http://127.0.0.1:5000 --username admin --taskdef web.json \\
                --listen 127.0.0.1:8787 [--cleanup]

It reads an ECS-style task definition, has Berth pin every image to a digest
(POST /api/v1/task-definitions/resolve), runs `desiredCount` tasks with the local docker
CLI, subscribes to Berth's webhooks (PUT /api/v1/webhooks/<name>) and, when a signed
`dev.berth.manifest.push` CloudEvent says that the tag a container was defined with moved,
rolls the service onto the new digest within minimumHealthyPercent / maximumPercent, as
ECS's rolling update does. GET /status on the listener reports what runs.

Python 3 standard library only. See README.md next to this file.
"""
import argparse
import base64
import hashlib
import hmac
import json
import logging
import math
import os
import queue
import re
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("deployer")

PUSH_EVENT = "dev.berth.manifest.push"
SIGNATURE_TOLERANCE = 300  # seconds between the signature's timestamp and now
MAX_BODY = 1 << 20
SEEN_IDS = 10000  # event ids remembered for deduplication
DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
LABEL_FAMILY = "berth.deployer.family"
LABEL_DIGEST = "berth.deployer.digest"
LABEL_CONTAINER = "berth.deployer.container"


class ConfigError(Exception):
    """A task definition or an option that cannot work; the message says why."""


class DockerError(Exception):
    pass


# ---------------------------------------------------------------------------------------
# Image references and the task definition.

class Ref:
    """host[:port]/repo[:tag][@digest]; `name` is everything before the tag."""

    def __init__(self, text):
        self.text = text
        rest, self.digest = text, None
        if "@" in rest:
            rest, self.digest = rest.split("@", 1)
            if not DIGEST_RE.match(self.digest):
                raise ConfigError(f"image {text!r}: {self.digest!r} is not a digest")
        self.tag = None
        slash, colon = rest.rfind("/"), rest.rfind(":")
        if colon > slash:
            rest, self.tag = rest[:colon], rest[colon + 1:]
        first, _, after = rest.partition("/")
        if after and ("." in first or ":" in first or first == "localhost"):
            self.host, self.repo = first, after
        else:
            self.host, self.repo = None, rest
        if not REPO_RE.match(self.repo) or (self.tag is not None and not TAG_RE.match(self.tag)):
            raise ConfigError(f"image {text!r} is not an image reference")
        if self.tag is None and self.digest is None:
            self.tag = "latest"
        self.name = f"{self.host}/{self.repo}" if self.host else self.repo

    def pinned(self, digest):
        return f"{self.name}@{digest}"

    def __str__(self):
        return self.text


def _int(value, what, low=None):
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be an integer, not {value!r}")
    if low is not None and n < low:
        raise ConfigError(f"{what} must be at least {low}, not {n}")
    return n


class Spec:
    """What to run: one container definition, the service settings and their bounds."""

    def __init__(self, doc, path):
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: a task definition is a JSON object")
        if isinstance(doc.get("taskDefinition"), dict):  # `aws ecs describe-task-definition`
            doc = dict(doc["taskDefinition"], **{k: v for k, v in doc.items() if k != "taskDefinition"})
        self.doc = doc
        self.family = doc.get("family")
        if not isinstance(self.family, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$", self.family):
            raise ConfigError(f"{path}: `family` must be a name of letters, digits, '_', '.' and '-' (a container name prefix)")
        defs = doc.get("containerDefinitions")
        if not isinstance(defs, list) or not defs:
            raise ConfigError(f"{path}: `containerDefinitions` must list one container")
        if len(defs) != 1:
            raise ConfigError(f"{path}: this deployer runs exactly one container per task; "
                              f"`containerDefinitions` has {len(defs)}")
        c = defs[0]
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c["name"]:
            raise ConfigError(f"{path}: containerDefinitions[0] needs a `name`")
        if not isinstance(c.get("image"), str):
            raise ConfigError(f"{path}: container {c['name']!r} needs an `image`")
        self.container = c
        self.name = c["name"]
        self.original = Ref(c["image"])
        for key in ("command", "entryPoint"):
            v = c.get(key)
            if v is not None and not (isinstance(v, list) and all(isinstance(a, str) for a in v)):
                raise ConfigError(f"{path}: container {self.name!r}: `{key}` must be a list of strings")
        env = c.get("environment") or []
        if not isinstance(env, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in env):
            raise ConfigError(f"{path}: container {self.name!r}: `environment` must be a list of {{name, value}}")
        self.environment = [(e["name"], "" if e.get("value") is None else str(e["value"])) for e in env]
        self.health = self._health(c.get("healthCheck"), path)
        self.stop_timeout = _int(c.get("stopTimeout", 30), "stopTimeout", 0)
        self.network = doc.get("networkMode")
        if self.network in (None, "bridge", "default"):
            self.network = None
        elif self.network == "awsvpc":
            raise ConfigError(f"{path}: networkMode awsvpc is not supported (use bridge, host or none)")

        svc = doc.get("service") if isinstance(doc.get("service"), dict) else {}

        def setting(key, default):
            return svc[key] if key in svc else doc.get(key, default)

        self.desired = _int(setting("desiredCount", 1), "desiredCount", 0)
        dc = setting("deploymentConfiguration", None) or {}
        if not isinstance(dc, dict):
            raise ConfigError(f"{path}: `deploymentConfiguration` must be an object")
        self.min_pct = _int(dc.get("minimumHealthyPercent", 100), "minimumHealthyPercent", 0)
        self.max_pct = _int(dc.get("maximumPercent", 200), "maximumPercent", 100)
        if self.min_pct > 100:
            raise ConfigError(f"minimumHealthyPercent must be at most 100, not {self.min_pct}")
        n = self.desired
        self.min_healthy = math.ceil(n * self.min_pct / 100)
        self.max_total = math.floor(n * self.max_pct / 100)
        if n > 0 and self.max_total <= n and self.min_healthy >= n:
            raise ConfigError(
                f"a rolling update cannot make progress: with desiredCount {n}, "
                f"maximumPercent {self.max_pct} allows at most {self.max_total} tasks (no room to start a new one "
                f"before an old one stops) and minimumHealthyPercent {self.min_pct} requires {self.min_healthy} "
                f"healthy (no old one may stop first); raise maximumPercent or lower minimumHealthyPercent")

    @staticmethod
    def _health(hc, path):
        if hc is None:
            return None
        cmd = hc.get("command") if isinstance(hc, dict) else None
        if not isinstance(cmd, list) or len(cmd) < 2 or cmd[0] not in ("CMD-SHELL", "CMD"):
            raise ConfigError(f'{path}: healthCheck.command must be ["CMD-SHELL", "..."] or ["CMD", "exe", ...]')
        shell = cmd[1] if cmd[0] == "CMD-SHELL" else shlex.join(cmd[1:])
        return {
            "cmd": shell,
            # ECS defaults: interval 30 s, timeout 5 s, retries 3, startPeriod 0 (off).
            "interval": _int(hc.get("interval", 30), "healthCheck.interval", 1),
            "timeout": _int(hc.get("timeout", 5), "healthCheck.timeout", 1),
            "retries": _int(hc.get("retries", 3), "healthCheck.retries", 1),
            "startPeriod": _int(hc.get("startPeriod", 0), "healthCheck.startPeriod", 0),
        }


def load_spec(path):
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}")
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not JSON: {e}")
    return Spec(doc, path)


# ---------------------------------------------------------------------------------------
# Webhook signatures.

def sign(secret, timestamp, body):
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(header, body, keys, now=None, tolerance=SIGNATURE_TOLERANCE):
    """(True, "") when `Berth-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]` signs `body` with one of
    `keys` within `tolerance` seconds of now; else (False, why)."""
    if not header:
        return False, "no Berth-Signature header"
    t, candidates = None, []
    for part in header.split(","):
        k, sep, v = part.strip().partition("=")
        if not sep:
            continue
        if k == "t":
            t = v.strip()
        elif k == "v1":
            candidates.append(v.strip().lower())
    if t is None or not t.isdigit():
        return False, "no timestamp in Berth-Signature"
    if not candidates:
        return False, "no v1 signature in Berth-Signature"
    now = time.time() if now is None else now
    if abs(now - int(t)) > tolerance:
        return False, f"timestamp {t} is {int(now - int(t))} s from now (more than {tolerance} s)"
    ok = False
    for key in keys:
        expected = sign(key, t, body)
        for c in candidates:
            # No early exit: every comparison is made, in constant time.
            ok |= hmac.compare_digest(expected, c)
    return (True, "") if ok else (False, "signature does not match")


# ---------------------------------------------------------------------------------------
# Registry calls.

class Registry:
    def __init__(self, url, username, password):
        self.url = url.rstrip("/")
        self.auth = None
        if username:
            self.auth = "Basic " + base64.b64encode(f"{username}:{password or ''}".encode()).decode()

    def call(self, method, path, body=None):
        """(status, parsed JSON or raw text)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json")
        if self.auth:
            req.add_header("Authorization", self.auth)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        except (urllib.error.URLError, OSError) as e:
            raise ConfigError(f"{method} {self.url}{path}: {getattr(e, 'reason', e)}")
        text = raw.decode("utf-8", "replace")
        try:
            return status, json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            return status, text


def error_lines(answer):
    """The messages of a `{"errors": [...]}` answer, one line each."""
    if isinstance(answer, dict) and isinstance(answer.get("errors"), list):
        out = []
        for e in answer["errors"]:
            if not isinstance(e, dict):
                out.append(str(e))
                continue
            line = f"{e.get('code', 'ERROR')}: {e.get('message', '')}"
            if e.get("detail") not in (None, {}, ""):
                line += f" ({json.dumps(e['detail'], sort_keys=True)})"
            out.append(line)
        return out
    return [str(answer)[:500]]


# ---------------------------------------------------------------------------------------
# Docker.

class Docker:
    def __init__(self, binary="docker"):
        self.binary = binary

    def run(self, args, timeout=120, ok_codes=(0,)):
        try:
            p = subprocess.run([self.binary] + args, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DockerError(f"docker {args[0]}: no answer within {timeout} s")
        except OSError as e:
            raise DockerError(f"cannot run {self.binary}: {e.strerror}")
        if p.returncode not in ok_codes:
            raise DockerError(f"docker {' '.join(args[:2])}: {(p.stderr or p.stdout).strip()}")
        return p

    def inspect(self, ids):
        """{id: State} for the containers that exist."""
        if not ids:
            return {}
        # Exit 1 when some are gone: what exists is still printed.
        p = self.run(["inspect", "--type", "container"] + list(ids), ok_codes=(0, 1))
        try:
            found = json.loads(p.stdout or "[]")
        except json.JSONDecodeError:
            raise DockerError(f"docker inspect: {p.stderr.strip()}")
        return {c["Id"]: c for c in found}

    def family(self, family):
        p = self.run(["ps", "-a", "-q", "--no-trunc", "--filter", f"label={LABEL_FAMILY}={family}"])
        return p.stdout.split()

    def remove(self, cid, stop_timeout):
        self.run(["stop", "-t", str(stop_timeout), cid], timeout=stop_timeout + 60, ok_codes=(0, 1))
        self.run(["rm", "-f", "-v", cid], ok_codes=(0, 1))


class Task:
    def __init__(self, cid, name, digest, image, started):
        self.id, self.name, self.digest, self.image = cid, name, digest, image
        self.started = started  # time.monotonic() when it was started (or adopted)
        self.running, self.healthy, self.health, self.exit_code = True, False, "", None

    def view(self):
        return {"container": self.name, "id": self.id[:12], "image": self.image, "digest": self.digest,
                "running": self.running, "healthy": self.healthy, "health": self.health}


# ---------------------------------------------------------------------------------------
# The service.

class Deployer:
    def __init__(self, args, spec, keys, registry, docker):
        self.args, self.spec, self.keys, self.registry, self.docker = args, spec, keys, registry, docker
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.events = queue.Queue()
        self.seen = OrderedDict()
        self.tasks = []
        self.digest = spec.original.digest  # the digest the service runs (its target)
        self.counters = {"events_received": 0, "events_applied": 0, "events_ignored": 0,
                         "events_duplicate": 0, "events_refused": 0, "rollouts": 0, "rollouts_failed": 0}
        self.last_event_id = None
        self.rolling = False
        self.ready = False
        self.exit_code = 0
        self.subscribed = False

    # --- status -----------------------------------------------------------------------
    def status(self):
        s = self.spec
        with self.lock:
            out = {"family": s.family,
                   "deployed": {s.name: s.original.pinned(self.digest)} if self.digest else {},
                   "original": {s.name: s.original.text},
                   "tasks": [t.view() for t in self.tasks],
                   "desiredCount": s.desired, "minimumHealthyPercent": s.min_pct, "maximumPercent": s.max_pct,
                   "last_event_id": self.last_event_id, "rolling": self.rolling, "ready": self.ready}
            out.update(self.counters)
        return out

    def shutdown(self):
        self.stop.set()
        self.events.put(None)  # wakes the worker

    def count(self, key, n=1):
        with self.lock:
            self.counters[key] += n

    # --- start-up ---------------------------------------------------------------------
    def subscribe(self):
        s = self.spec
        url = self.args.advertise or f"http://{self.args.listen_addr}/events"
        body = {"url": url, "secret": self.keys[0], "events": ["manifest.push"],
                "repositories": [s.original.repo], "format": "cloudevents", "timeout": "5s"}
        status, answer = self.registry.call("PUT", f"/api/v1/webhooks/{self.args.name}", body)
        if status not in (200, 201):
            raise ConfigError(f"subscribing to webhooks (PUT /api/v1/webhooks/{self.args.name}) failed with "
                              f"{status}: " + "; ".join(error_lines(answer)))
        self.subscribed = True
        log.info("subscribed webhook %r: manifest.push of %s to %s (%s)", self.args.name, s.original.repo, url,
                 "created" if status == 201 else "updated")

    def unsubscribe(self):
        try:
            status, answer = self.registry.call("DELETE", f"/api/v1/webhooks/{self.args.name}")
        except ConfigError as e:
            log.warning("unsubscribing webhook %r: %s", self.args.name, e)
            return
        if status in (200, 202, 204, 404):
            log.info("unsubscribed webhook %r (%d)", self.args.name, status)
        else:
            log.warning("unsubscribing webhook %r: %d %s", self.args.name, status, "; ".join(error_lines(answer)))

    def resolve(self):
        s = self.spec
        if s.original.digest:
            log.info("container %s is pinned by digest in the task definition (%s): not resolving",
                     s.name, s.original.text)
            return
        if not self.registry:
            raise ConfigError(f"{s.original.text} is not pinned by digest: --registry is needed to resolve it")
        status, answer = self.registry.call("POST", "/api/v1/task-definitions/resolve", s.doc)
        if status != 200:
            raise ConfigError(f"resolving the task definition failed with {status}:\n  "
                              + "\n  ".join(error_lines(answer)))
        try:
            c = answer["containerDefinitions"][0]
            pinned = Ref(c["image"])
        except (TypeError, KeyError, IndexError, ConfigError) as e:
            raise ConfigError(f"the resolve endpoint answered something else than a task definition: {e}")
        if c.get("name") != s.name or not pinned.digest or pinned.name != s.original.name:
            raise ConfigError(f"the resolve endpoint answered {c.get('name')!r} = {c.get('image')!r} "
                              f"for {s.name!r} = {s.original.text!r}")
        self.digest = pinned.digest
        log.info("resolved %s to %s", s.original.text, pinned.text)

    def adopt(self):
        """Containers of this family left running by an earlier deployer become tasks."""
        ids = self.docker.family(self.spec.family)
        for cid, c in self.docker.inspect(ids).items():
            labels = c.get("Config", {}).get("Labels") or {}
            name = c.get("Name", "").lstrip("/")
            if not c.get("State", {}).get("Running"):
                log.info("removing stopped container %s of family %s", name, self.spec.family)
                self.docker.remove(cid, 0)
                continue
            t = Task(cid, name, labels.get(LABEL_DIGEST, ""), c.get("Config", {}).get("Image", ""), time.monotonic())
            self.tasks.append(t)
            log.info("adopted running container %s (%s)", name, t.digest)

    # --- tasks ------------------------------------------------------------------------
    def refresh(self):
        """Reads every task's state from docker; drops tasks whose container is gone."""
        states = self.docker.inspect([t.id for t in self.tasks])
        with self.lock:
            for t in list(self.tasks):
                c = states.get(t.id)
                if c is None:
                    log.info("container %s is gone", t.name)
                    self.tasks.remove(t)
                    continue
                st = c.get("State", {})
                t.running = bool(st.get("Running"))
                t.exit_code = st.get("ExitCode")
                t.health = (st.get("Health") or {}).get("Status", "") if self.spec.health else ""
                t.healthy = t.running and (t.health == "healthy" if self.spec.health else True)

    def start_task(self, digest):
        s, c = self.spec, self.spec.container
        image = s.original.pinned(digest)
        name = f"{s.family}-{secrets.token_hex(4)}"
        args = ["run", "-d", "--name", name, "--label", f"{LABEL_FAMILY}={s.family}",
                "--label", f"{LABEL_DIGEST}={digest}", "--label", f"{LABEL_CONTAINER}={s.name}"]
        for k, v in s.environment:
            args += ["-e", f"{k}={v}"]
        if s.network:
            args += ["--network", s.network]
        if s.health:
            h = s.health
            args += ["--health-cmd", h["cmd"], "--health-interval", f"{h['interval']}s",
                     "--health-timeout", f"{h['timeout']}s", "--health-retries", str(h["retries"])]
            if h["startPeriod"]:
                args += ["--health-start-period", f"{h['startPeriod']}s"]
        extra = []
        if c.get("entryPoint"):
            args += ["--entrypoint", c["entryPoint"][0]]
            extra = c["entryPoint"][1:]
        args.append(image)
        args += extra + list(c.get("command") or [])
        cid = self.docker.run(args, timeout=300).stdout.strip()
        t = Task(cid, name, digest, image, time.monotonic())
        with self.lock:
            self.tasks.append(t)
        log.info("started task %s on %s", name, digest)
        return t

    def stop_tasks(self, tasks, why):
        if not tasks:
            return
        for t in tasks:
            log.info("stopping task %s on %s (%s)", t.name, t.digest, why)

        def one(t):
            try:
                self.docker.remove(t.id, self.spec.stop_timeout)
            except DockerError as e:
                log.warning("stopping %s: %s", t.name, e)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(one, tasks))
        with self.lock:
            for t in tasks:
                if t in self.tasks:
                    self.tasks.remove(t)

    # --- the rolling update -----------------------------------------------------------
    def converge(self, digest):
        """Rolls the service onto `digest` within the bounds: starts new tasks while old + new
        stay <= maxTotal, stops old ones while healthy tasks stay >= minHealthy, until
        desiredCount new tasks are healthy and no old one is left. False when a new task
        does not become healthy within --task-timeout (the unhealthy new tasks are removed,
        the remaining old ones kept) or when the deployer is stopping."""
        s = self.spec
        n, min_healthy, max_total = s.desired, s.min_healthy, s.max_total
        begun = time.monotonic()
        mine = set()  # ids of the tasks this call started
        with self.lock:
            self.rolling = True
        try:
            while True:
                if self.stop.is_set():
                    log.info("stopping: rollout to %s interrupted", digest)
                    return False
                self.refresh()
                changed = False
                now = time.monotonic()
                with self.lock:
                    tasks = list(self.tasks)
                exited = [t for t in tasks if not t.running]
                new = [t for t in tasks if t.digest == digest and t.running]
                old = [t for t in tasks if t.digest != digest and t.running]
                # Late: not healthy within --task-timeout, or docker already says unhealthy
                # (its retries are spent; it does not say so during the start period).
                late = [t for t in new if not t.healthy and (t.health == "unhealthy" or
                                                              now - max(t.started, begun) > self.args.task_timeout)]
                failed_new = [t for t in exited if t.id in mine]
                if late or failed_new:
                    for t in failed_new:
                        log.error("task %s on %s exited (code %s) before it was healthy", t.name, digest, t.exit_code)
                    for t in late:
                        log.error("task %s on %s is not healthy after %d s (%s)", t.name, digest,
                                  now - max(t.started, begun), t.health or "not running")
                        self.log_health(t)
                    self.stop_tasks(failed_new + [t for t in new if not t.healthy], "not healthy")
                    return False
                if exited:
                    for t in exited:
                        log.info("task %s on %s exited (code %s)", t.name, t.digest, t.exit_code)
                    self.stop_tasks(exited, "exited")
                    continue
                healthy = sum(t.healthy for t in new + old)
                new_healthy = [t for t in new if t.healthy]
                if not old and len(new_healthy) >= n:
                    extra = sorted(new, key=lambda t: (t.healthy, -t.started))[:len(new) - n]
                    self.stop_tasks(extra, f"more than desiredCount {n}")
                    return True
                # Stop old tasks, unhealthy ones first, while the healthy stay >= minHealthy.
                to_stop, h = [], healthy
                for t in sorted(old, key=lambda t: t.healthy):
                    if not t.healthy:
                        to_stop.append(t)
                    elif h - 1 >= min_healthy:
                        to_stop.append(t)
                        h -= 1
                if to_stop:
                    log.info("rolling: %d old, %d new (%d healthy), %d healthy in all, bounds %d..%d: stopping %d old",
                             len(old), len(new), len(new_healthy), healthy, min_healthy, max_total, len(to_stop))
                    self.stop_tasks(to_stop, "replaced")
                    changed = True
                total = len(old) + len(new) - len(to_stop)
                starts = min(n - len(new), max_total - total)
                if starts > 0:
                    log.info("rolling: %d old, %d new, bounds %d..%d: starting %d new on %s",
                             len(old) - len(to_stop), len(new), min_healthy, max_total, starts, digest)
                    for _ in range(starts):
                        try:
                            mine.add(self.start_task(digest).id)
                        except DockerError as e:
                            log.error("starting a task on %s: %s", digest, e)
                            self.stop_tasks([t for t in new if not t.healthy], "rollout failed")
                            return False
                    changed = True
                if not changed:
                    self.stop.wait(0.25)
        finally:
            with self.lock:
                self.rolling = False

    def log_health(self, t):
        try:
            c = self.docker.inspect([t.id]).get(t.id, {})
            probes = ((c.get("State") or {}).get("Health") or {}).get("Log") or []
            if probes:
                p = probes[-1]
                log.error("last health check of %s: exit %s: %s", t.name, p.get("ExitCode"),
                          (p.get("Output") or "").strip()[:300])
        except DockerError:
            pass

    def pull(self, digest):
        image = self.spec.original.pinned(digest)
        try:
            self.docker.run(["pull", "-q", image], timeout=600)
            return True
        except DockerError as e:
            log.error("pulling %s: %s", image, e)
            return False

    def rollout(self, digest, event_id):
        """Moves the service onto `digest`; on failure back onto the digest it ran."""
        previous = self.digest
        log.info("event %s: rolling %s from %s to %s", event_id, self.spec.name, previous, digest)
        if not self.pull(digest):
            self.count("rollouts_failed")
            log.error("rollout to %s abandoned: the image cannot be pulled; the service stays on %s", digest, previous)
            return
        with self.lock:
            self.digest = digest
        if self.converge(digest):
            self.count("rollouts")
            log.info("rollout done: %d tasks on %s", self.spec.desired, digest)
            return
        if self.stop.is_set():
            return
        self.count("rollouts_failed")
        log.error("rollout to %s failed; rolling back to %s", digest, previous)
        with self.lock:
            self.digest = previous
        if self.converge(previous):
            log.info("rolled back: %d tasks on %s", self.spec.desired, previous)
        elif not self.stop.is_set():
            log.error("rolling back to %s failed too; will retry", previous)

    # --- events -----------------------------------------------------------------------
    def accept(self, event):
        """Called by the HTTP handler with a verified event: deduplicates and queues it.
        True when it is new."""
        eid = event["id"]
        with self.lock:
            if eid in self.seen:
                self.counters["events_duplicate"] += 1
                return False
            self.seen[eid] = True
            while len(self.seen) > SEEN_IDS:
                self.seen.popitem(last=False)
            self.counters["events_received"] += 1
            self.last_event_id = eid
        self.events.put(event)
        return True

    def classify(self, event, current):
        """The new digest this event asks for, or (None, why it is ignored)."""
        s = self.spec
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        if event.get("type") != PUSH_EVENT:
            return None, f"type {event.get('type')!r}"
        repo, tag, digest = data.get("repository"), data.get("tag"), data.get("digest")
        if not tag:
            return None, f"push of {repo}@{digest} without a tag"
        if s.original.digest:
            return None, f"{repo}:{tag}: container {s.name} is pinned by digest in the task definition"
        if repo != s.original.repo or tag != s.original.tag:
            return None, f"{repo}:{tag} is not {s.original.repo}:{s.original.tag}"
        if not isinstance(digest, str) or not DIGEST_RE.match(digest):
            return None, f"{repo}:{tag}: {digest!r} is not a digest"
        if digest == current:
            return None, f"{repo}:{tag} is already at {digest}"
        return digest, ""

    def handle(self, batch):
        """Events in arrival order: the last one that moves the tag wins, earlier ones in
        the same batch are superseded (counted as ignored)."""
        with self.lock:
            current = self.digest
        target, winner = current, None
        for ev in batch:
            digest, why = self.classify(ev, target)
            if digest is None:
                log.info("event %s ignored: %s", ev["id"], why)
                self.count("events_ignored")
                continue
            if winner is not None:
                log.info("event %s superseded by %s", winner["id"], ev["id"])
                self.count("events_ignored")
            winner, target = ev, digest
        if winner is None:
            return
        if target == current:
            log.info("event %s ignored: the service already runs %s", winner["id"], target)
            self.count("events_ignored")
            return
        self.count("events_applied")
        self.rollout(target, winner["id"])

    def maintain(self):
        """Between events: replaces tasks that exited or vanished."""
        try:
            self.refresh()
        except DockerError as e:
            log.warning("reading task states: %s", e)
            return
        with self.lock:
            tasks = list(self.tasks)
            digest = self.digest
        running = [t for t in tasks if t.running and t.digest == digest]
        if len(running) != self.spec.desired or len(running) != len(tasks):
            log.info("service has %d running tasks on %s for desiredCount %d: reconciling",
                     len(running), digest, self.spec.desired)
            if not self.converge(digest) and not self.stop.is_set():
                log.error("could not restore %d tasks on %s; will retry", self.spec.desired, digest)

    def work(self):
        try:
            if not self.pull(self.digest):
                raise DockerError(f"cannot pull {self.spec.original.pinned(self.digest)}")
            if not self.converge(self.digest):
                if not self.stop.is_set():
                    log.error("initial deployment of %s failed", self.spec.original.pinned(self.digest))
                    self.exit_code = 1
                    self.shutdown()
                return
            log.info("service %s running: %d tasks on %s", self.spec.family, self.spec.desired, self.digest)
            with self.lock:
                self.ready = True
            while not self.stop.is_set():
                try:
                    batch = [self.events.get(timeout=self.args.maintain_interval)]
                except queue.Empty:
                    batch = []
                while True:
                    try:
                        batch.append(self.events.get_nowait())
                    except queue.Empty:
                        break
                batch = [ev for ev in batch if ev is not None]
                if self.stop.is_set():
                    break
                try:
                    self.handle(batch) if batch else self.maintain()
                except DockerError as e:  # docker hiccups; the next round retries
                    log.error("docker: %s", e)
                    with self.lock:
                        self.rolling = False
        except DockerError as e:
            log.error("%s", e)
            self.exit_code = 1
            self.shutdown()
        except Exception as e:  # the worker must not die silently
            log.exception("worker failed: %s", e)
            self.exit_code = 1
            self.shutdown()

    def cleanup(self):
        ids = set(self.docker.family(self.spec.family))
        with self.lock:
            ids |= {t.id for t in self.tasks}
            self.tasks = []
        log.info("--cleanup: removing %d containers of family %s", len(ids), self.spec.family)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda cid: self.docker.remove(cid, min(self.spec.stop_timeout, 10)), ids))


# ---------------------------------------------------------------------------------------
# HTTP: POST /events (webhooks), GET /status.

class Handler(BaseHTTPRequestHandler):
    server_version = "berth-deployer"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # decisions are logged, requests are not
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.split("?")[0] == "/status":
            self.reply(200, self.server.deployer.status())
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        d = self.server.deployer
        if self.path.split("?")[0] != "/events":
            self.reply(404, {"error": "not found"})
            return
        body = self.read_body()
        if body is None:
            self.close_connection = True
            self.reply(413, {"error": f"body missing or larger than {MAX_BODY} bytes"})
            return
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        ok, why = verify_signature(self.headers.get("Berth-Signature"), body, d.keys)
        if not ok:
            d.count("events_refused")
            log.warning("refused a webhook request from %s: %s", peer, why)
            self.reply(401, {"error": "bad signature"})
            return
        event = self.parse(body)
        if isinstance(event, str):
            log.warning("refused a signed webhook request from %s: %s", peer, event)
            self.reply(400, {"error": event})
            return
        if d.accept(event):
            data = event.get("data") if isinstance(event.get("data"), dict) else {}
            log.info("event %s received: %s %s:%s %s", event["id"], event.get("type"), data.get("repository"),
                     data.get("tag"), data.get("digest"))
            self.reply(200, {"accepted": event["id"]})
        else:
            log.info("event %s received again: duplicate ignored", event["id"])
            self.reply(200, {"duplicate": event["id"]})

    def read_body(self):
        """The raw body (Content-Length or chunked), or None when too large or malformed."""
        try:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = b""
                while True:
                    size = int(self.rfile.readline(100).split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline(1000).strip():  # trailers
                            pass
                        return body
                    if len(body) + size > MAX_BODY:
                        return None
                    body += self.rfile.read(size)
                    self.rfile.readline(10)
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return None
        return self.rfile.read(length) if 0 <= length <= MAX_BODY else None

    def parse(self, body):
        """The CloudEvent (structured mode; binary mode with ce-* headers also works), or why not."""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "body is not JSON"
        if ctype == "application/cloudevents+json" or (isinstance(payload, dict) and "specversion" in payload
                                                       and not self.headers.get("ce-specversion")):
            event = payload
        elif self.headers.get("ce-specversion"):
            event = {k[3:].lower(): v for k, v in self.headers.items() if k.lower().startswith("ce-")}
            event["data"] = payload
        else:
            return f"not a CloudEvent (Content-Type {ctype or 'missing'})"
        if not isinstance(event, dict) or event.get("specversion") != "1.0":
            return "not a CloudEvents 1.0 event"
        if not isinstance(event.get("id"), str) or not event["id"]:
            return "event without an id"
        header_id = self.headers.get("Berth-Event-Id")
        if header_id and header_id != event["id"]:
            return f"Berth-Event-Id {header_id!r} differs from the event id {event['id']!r}"
        return event


# ---------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--registry", help="Berth's base URL, e.g. http://127.0.0.1:5000")
    p.add_argument("--username", help="Berth user (Basic credentials)")
    p.add_argument("--password", default=os.environ.get("DEPLOYER_PASSWORD"),
                   help="its password or access-key secret (default $DEPLOYER_PASSWORD)")
    p.add_argument("--taskdef", required=True, help="the task definition (JSON)")
    p.add_argument("--listen", default="127.0.0.1:8787", help="HOST:PORT for /events and /status (port 0: any)")
    p.add_argument("--advertise", help="the webhook URL given to Berth (default http://<listen>/events)")
    p.add_argument("--secret", action="append",
                   help="webhook signing secret; repeat to accept several while rotating (the first is "
                        "subscribed with). Default $DEPLOYER_SECRET, or a generated one when subscribing")
    p.add_argument("--name", help="webhook subscription name (default deployer-<family>)")
    p.add_argument("--no-subscribe", action="store_true", help="do not subscribe (configured elsewhere)")
    p.add_argument("--cleanup", action="store_true",
                   help="on exit remove the family's containers (and the subscription this deployer made)")
    p.add_argument("--task-timeout", type=float, default=120,
                   help="seconds a new task has to become healthy (default 120)")
    p.add_argument("--maintain-interval", type=float, default=5,
                   help="seconds between checks that every task still runs (default 5)")
    p.add_argument("--docker", default="docker", help="the docker CLI (default: docker on PATH)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s.%(msecs)03dZ deployer: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")
    logging.Formatter.converter = time.gmtime
    try:
        spec = load_spec(args.taskdef)
        args.name = args.name or f"deployer-{spec.family}"
        keys = args.secret or ([os.environ["DEPLOYER_SECRET"]] if os.environ.get("DEPLOYER_SECRET") else [])
        if not keys:
            if args.no_subscribe:
                raise ConfigError("--no-subscribe needs the subscription's secret (--secret or $DEPLOYER_SECRET)")
            keys = [secrets.token_hex(32)]
            log.info("generated a webhook secret (not shown)")
        if (not args.no_subscribe or not spec.original.digest) and not args.registry:
            raise ConfigError("--registry is needed (to subscribe and to resolve tags)")
        registry = Registry(args.registry, args.username, args.password) if args.registry else None
        host, _, port = args.listen.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--listen {args.listen!r}: expected HOST:PORT")
        docker = Docker(args.docker)
        try:
            docker.run(["version", "--format", "{{.Server.Version}}"], timeout=30)
        except DockerError as e:
            raise ConfigError(f"docker does not answer: {e}")
    except ConfigError as e:
        log.error("%s", e)
        return 2

    d = Deployer(args, spec, keys, registry, docker)
    try:
        server = ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)
    except OSError as e:
        log.error("cannot listen on %s: %s", args.listen, e.strerror)
        return 2
    server.daemon_threads = True
    server.deployer = d
    bound = server.server_address
    args.listen_addr = f"{host}:{bound[1]}"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    log.info("listening on http://%s (POST /events, GET /status); family %s, container %s = %s, desiredCount %d, "
             "minimumHealthyPercent %d (>= %d healthy), maximumPercent %d (<= %d tasks)",
             args.listen_addr, spec.family, spec.name, spec.original.text, spec.desired, spec.min_pct,
             spec.min_healthy, spec.max_pct, spec.max_total)

    def on_signal(signum, _frame):
        log.info("%s: stopping", signal.Signals(signum).name)
        d.shutdown()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    worker = None
    try:
        # Subscribe before resolving: a push between the two is then delivered, not lost.
        if not args.no_subscribe:
            d.subscribe()
        d.resolve()
        d.adopt()
        if not d.stop.is_set():
            worker = threading.Thread(target=d.work, name="worker")
            worker.start()
        while not d.stop.wait(1):
            pass
    except ConfigError as e:
        log.error("%s", e)
        d.exit_code = 2
        d.shutdown()
    except DockerError as e:
        log.error("%s", e)
        d.exit_code = 1
        d.shutdown()
    server.shutdown()
    server.server_close()
    log.info("stopped listening")
    if worker:
        worker.join()
    if args.cleanup:
        try:
            d.cleanup()
        except DockerError as e:
            log.error("cleanup: %s", e)
            d.exit_code = d.exit_code or 1
        if d.subscribed:
            d.unsubscribe()
    log.info("exit %d", d.exit_code)
    return d.exit_code


if __name__ == "__main__":
    sys.exit(main())
