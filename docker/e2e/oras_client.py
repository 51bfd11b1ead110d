#!/usr/bin/env python3
"""Pushes or pulls one file as an OCI artifact with oras-py (PyPI `oras`), for run.sh.

  oras_client.py HOST TARGET push FILE
  oras_client.py HOST TARGET pull OUTDIR

Plain HTTP (`insecure=True`). Credentials come from ORAS_USER and ORAS_PASS when set.
ORAS_AUTH picks oras-py's auth backend:
  token (default)  answers a Bearer challenge with a token from the realm, asked for with
                   the credentials as Basic (or anonymously, without credentials);
  basic            sends the credentials as Basic on every request to /v2/.
oras-py 0.2.43's token backend keeps the first token it gets and offers it again for every
later challenge, whatever scope that asks for: a push (HEAD blob answered with a pull
challenge, then POST upload needing push) therefore fails against any registry that issues
tokens per scope. run.sh pushes with `basic` and pulls with `token`.
Exits non-zero on a failed push or pull and prints what the registry answered, so that a
refusal can be told from another failure.
"""
import os
import sys

import oras.client

host, target, mode, path = sys.argv[1:5]
backend = os.environ.get("ORAS_AUTH", "token")
c = oras.client.OrasClient(hostname=host, insecure=True, auth_backend=backend)
user, password = os.environ.get("ORAS_USER"), os.environ.get("ORAS_PASS")
if user and password:
    c.auth.set_basic_auth(user, password)  # what OrasClient.login does, minus docker-py
try:
    if mode == "push":
        os.chdir(os.path.dirname(os.path.abspath(path)))
        r = c.push(files=[os.path.basename(path)], target=target)
        if r.status_code != 201:
            print(f"push answered HTTP {r.status_code}: {r.text}")
            sys.exit(1)
    else:
        os.makedirs(path, exist_ok=True)
        print(c.pull(target=target, outdir=path))
except Exception as e:  # oras-py raises on most HTTP errors; show what the registry said
    resp = getattr(e, "response", None)
    detail = f" (HTTP {resp.status_code}: {resp.text})" if resp is not None else ""
    print(f"{mode} failed: {type(e).__name__}: {e}{detail}")
    sys.exit(1)
