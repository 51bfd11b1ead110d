"""Records every raw ECR answer a botocore client gets, for walk_model.py.

botocore's `after-call` event carries the HTTP response before parsing: its status, headers
and body bytes, exactly as Berth sent them. Each answer is one JSON line in the file
$ECR_RECORD: {"operation", "status", "content_type", "body", "client"}.

Also an awscli plugin (`[plugins] ecr_record = ecr_record` in the AWS config file, this
folder on PYTHONPATH), so that `aws ecr ...` answers are recorded the same way.
"""

import json
import os


def handler(path, client):
    def after_call(http_response, model, **_):
        rec = {
            "operation": model.name,
            "status": http_response.status_code,
            "content_type": http_response.headers.get("content-type", ""),
            "body": http_response.content.decode("utf-8", "replace"),
            "client": client,
        }
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")

    return after_call


def register(emitter, path, client):
    emitter.register("after-call.ecr", handler(path, client), unique_id=f"ecr-record-{client}")


def awscli_initialize(cli):
    path = os.environ.get("ECR_RECORD")
    if path:
        register(cli, path, "awscli")
