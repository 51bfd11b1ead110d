#!/usr/bin/env python3
"""Checks Berth's ECR answers against ECR's own model (botocore's service-2.json).

    walk_model.py RECORD.jsonl [--probe]
    walk_model.py --self-test      # the walker finds each kind of mistake in made-up answers

RECORD.jsonl holds raw answers, one JSON object a line, as ecr_scenario.py records them
(botocore's `after-call` event): {"operation", "status", "content_type", "body", "client"}.

For every answer:
- 200: the body is a JSON object checked recursively against the operation's output shape:
  every member known to the shape, required members present, the types right (strings and
  enum values, lengths and patterns; integer/long; double; boolean; timestamps as epoch-second
  numbers; lists, maps, structures; blobs as base64), and nothing extra; the content type is
  application/x-amz-json-1.1.
- an error: `__type` names the exception; an exception of ECR's model must be one the
  operation declares (else typed SDKs, such as the Rust one, see an "unhandled" error), and
  its body is checked against the exception's shape; the exceptions AWS's services share
  (AccessDeniedException, UnsupportedOperationException, ...) are accepted for any operation.

With --probe (the endpoint and credentials from the environment: ECR_ENDPOINT,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION), every operation of the model
that no answer exercised with a 200 is called with a minimal input made from its input shape:
it must answer UnsupportedOperationException (an operation Berth does not serve) or a valid
result. An error means Berth serves it and no answer of the scenario shows its output: a
failure naming the operation, so that new operations get into the scenario. Its answers are
checked as above.

Prints one line per problem and `N passed, N failed` (one count per checked answer and per
probed operation); exits 1 when anything failed.
"""

import base64
import datetime
import json
import os
import re
import sys

import botocore.session
from botocore.config import Config

JSON_1_1 = "application/x-amz-json-1.1"

# Errors every AWS JSON service may answer, not modelled per operation: botocore raises a
# plain ClientError with the code; the Rust SDK's `.code()` gives it.
COMMON_ERRORS = {
    "AccessDeniedException",
    "UnsupportedOperationException",
    "UnknownOperationException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "IncompleteSignature",
    "IncompleteSignatureException",
    "MissingAuthenticationTokenException",
    "SignatureDoesNotMatch",
    "ThrottlingException",
    "RequestExpired",
    "ServiceUnavailable",
    "InternalFailure",
}


# Operations Berth serves with a refusal by design, each with the errors of ECR's model that
# are that refusal: Berth stores the scanning configuration but scans nothing, so a scan
# cannot be started and has no findings (no invented results). An answer of the scenario
# with one of these errors accounts for the operation as a valid result would.
REFUSED_BY_DESIGN = {
    "StartImageScan": {"ValidationException"},
    "DescribeImageScanFindings": {"ValidationException", "ScanNotFoundException"},
}


def model():
    return botocore.session.get_session().get_service_model("ecr")


class Walker:
    def __init__(self, service):
        self.service = service
        self.problems = []
        self.passed = 0
        self.failed = 0

    # -- values against shapes ---------------------------------------------------------

    def value(self, shape, v, path, out):
        t = shape.type_name
        if v is None:
            out.append(f"{path}: null (leave the member out instead)")
            return
        if t == "structure":
            if not isinstance(v, dict):
                return out.append(f"{path}: expected a structure ({shape.name}), got {type(v).__name__}")
            for k in sorted(set(v) - set(shape.members)):
                out.append(f"{path}.{k}: not a member of {shape.name} (members: {', '.join(shape.members)})")
            for k in shape.required_members:
                if k not in v:
                    out.append(f"{path}.{k}: required by {shape.name}, missing")
            for k, member in shape.members.items():
                if k in v:
                    self.value(member, v[k], f"{path}.{k}", out)
        elif t == "list":
            if not isinstance(v, list):
                return out.append(f"{path}: expected a list ({shape.name}), got {type(v).__name__}")
            self.bounds(shape, len(v), path, "items", out)
            for i, item in enumerate(v):
                self.value(shape.member, item, f"{path}[{i}]", out)
        elif t == "map":
            if not isinstance(v, dict):
                return out.append(f"{path}: expected a map ({shape.name}), got {type(v).__name__}")
            self.bounds(shape, len(v), path, "entries", out)
            for k, item in v.items():
                self.value(shape.key, k, f"{path}<key {k!r}>", out)
                self.value(shape.value, item, f"{path}[{k!r}]", out)
        elif t == "string":
            if not isinstance(v, str):
                return out.append(f"{path}: expected a string ({shape.name}), got {type(v).__name__} {v!r:.60}")
            if shape.enum and v not in shape.enum:
                out.append(f"{path}: {v!r} is not a value of {shape.name} ({', '.join(shape.enum)})")
            self.bounds(shape, len(v), path, "characters", out)
            pattern = shape.metadata.get("pattern")
            if pattern:
                try:
                    ok = re.search(pattern, v) is not None
                except re.error:
                    ok = True  # an ECMAScript pattern Python cannot read: not checked
                if not ok:
                    out.append(f"{path}: {v!r:.80} does not match {shape.name}'s pattern {pattern}")
        elif t in ("integer", "long"):
            if isinstance(v, bool) or not isinstance(v, int):
                return out.append(f"{path}: expected {'an' if t == 'integer' else 'a'} {t} ({shape.name}), got {type(v).__name__} {v!r:.60}")
            self.range(shape, v, path, out)
        elif t in ("double", "float"):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return out.append(f"{path}: expected a {t} ({shape.name}), got {type(v).__name__} {v!r:.60}")
            self.range(shape, v, path, out)
        elif t == "boolean":
            if not isinstance(v, bool):
                out.append(f"{path}: expected a boolean ({shape.name}), got {type(v).__name__} {v!r:.60}")
        elif t == "timestamp":
            # awsJson: epoch seconds, a number (botocore would also read a string; the Rust
            # SDK reads only the number).
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                out.append(f"{path}: expected a timestamp as epoch seconds, got {type(v).__name__} {v!r:.60}")
            elif not 946684800 <= v <= 4102444800:
                out.append(f"{path}: timestamp {v} is not between 2000 and 2100 (milliseconds?)")
        elif t == "blob":
            if not isinstance(v, str):
                return out.append(f"{path}: expected a blob as base64, got {type(v).__name__}")
            try:
                base64.b64decode(v, validate=True)
            except ValueError:
                out.append(f"{path}: not base64")
        else:
            out.append(f"{path}: shape type {t} unknown to the walker")

    def bounds(self, shape, n, path, unit, out):
        lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
        if lo is not None and n < lo:
            out.append(f"{path}: {n} {unit}, {shape.name} needs at least {lo}")
        if hi is not None and n > hi:
            out.append(f"{path}: {n} {unit}, {shape.name} allows at most {hi}")

    def range(self, shape, v, path, out):
        lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
        if lo is not None and v < lo:
            out.append(f"{path}: {v} is below {shape.name}'s minimum {lo}")
        if hi is not None and v > hi:
            out.append(f"{path}: {v} is above {shape.name}'s maximum {hi}")

    # -- one recorded answer -----------------------------------------------------------

    def answer(self, rec):
        """The problems of one recorded answer (an empty list: it is right)."""
        op_name = rec["operation"]
        out = []
        if op_name not in self.service.operation_names:
            return [f"{op_name} is not an operation of ECR's model"]
        op = self.service.operation_model(op_name)
        content_type = (rec.get("content_type") or "").split(";")[0].strip()
        try:
            body = json.loads(rec["body"]) if rec["body"].strip() else None
        except ValueError as e:
            return [f"{op_name}: the body is not JSON ({e}): {rec['body'][:200]!r}"]
        if content_type != JSON_1_1:
            out.append(f"{op_name}: Content-Type {content_type!r}, expected {JSON_1_1}")
        status = rec["status"]
        if 200 <= status < 300:
            if not isinstance(body, dict):
                return out + [f"{op_name}: a {status} answer must be a JSON object, got {rec['body'][:200]!r}"]
            if op.output_shape is None:
                if body:
                    out.append(f"{op_name}: the model has no output, the answer has members {sorted(body)}")
            else:
                self.value(op.output_shape, body, op_name, out)
            return out
        if not isinstance(body, dict) or not isinstance(body.get("__type"), str):
            return out + [f"{op_name}: error {status} without a JSON __type: {rec['body'][:200]!r}"]
        kind = body["__type"].split("#")[-1]
        declared = {s.name for s in op.error_shapes}
        if kind in COMMON_ERRORS:
            extra = sorted(set(body) - {"__type", "message", "Message"})
            if extra:
                out.append(f"{op_name} {kind}: members {extra} beyond __type and message")
        elif kind in declared:
            error_shape = self.service.shape_for(kind)
            fields = {k: v for k, v in body.items() if k != "__type"}
            self.value(error_shape, fields, f"{op_name} {kind}", out)
            code = error_shape.metadata.get("error", {}).get("httpStatusCode")
            if code and code != status:
                out.append(f"{op_name} {kind}: status {status}, the model says {code}")
        elif kind in self.service.shape_names and self.service.shape_for(kind).metadata.get("exception"):
            out.append(
                f"{op_name}: answered {kind}, which the model does not declare for it "
                f"(declared: {', '.join(sorted(declared))}); typed SDKs see an unhandled error"
            )
        else:
            out.append(f"{op_name}: answered {kind!r}, an error name neither ECR's model nor AWS's common errors have")
        if not isinstance(body.get("message", ""), str):
            out.append(f"{op_name} {kind}: message is not a string")
        if status < 400:
            out.append(f"{op_name} {kind}: an error with status {status}")
        return out

    def record(self, rec, label):
        problems = self.answer(rec)
        if problems:
            self.failed += 1
            for p in problems:
                print(f"FAIL {label}: {p}")
        else:
            self.passed += 1
        return not problems

    # -- minimal inputs, for the probe -------------------------------------------------

    def minimal(self, shape, name, account, region):
        t = shape.type_name
        if t == "structure":
            return {k: self.minimal(shape.members[k], k, account, region) for k in shape.required_members}
        if t == "list":
            return [self.minimal(shape.member, name, account, region) for _ in range(max(1, shape.metadata.get("min", 1)))]
        if t == "map":
            return {}
        if t == "string":
            if shape.enum:
                return shape.enum[0]
            lname = name.lower()
            if "digest" in lname:
                return "sha256:" + "0" * 64
            if lname.endswith("arn"):
                return f"arn:aws:ecr:{region}:{account}:repository/walker/probe"
            if "repositoryname" in lname:
                return "walker/probe"
            if lname == "registryid":
                return account
            if "uploadid" in lname:
                return "00000000-0000-0000-0000-000000000000"
            if "policytext" in lname or lname.endswith("manifest"):
                return "{}"
            value = "walker-probe"
            lo = shape.metadata.get("min", 0)
            return value + "x" * max(0, lo - len(value))
        if t in ("integer", "long"):
            return max(0, shape.metadata.get("min", 0))
        if t in ("double", "float"):
            return 0.0
        if t == "boolean":
            return False
        if t == "timestamp":
            return datetime.datetime.now(datetime.timezone.utc)
        if t == "blob":
            return b"x"
        raise ValueError(f"no minimal value for {t}")

    def probe(self, exercised, records_out):
        endpoint = os.environ["ECR_ENDPOINT"]
        region = os.environ.get("AWS_DEFAULT_REGION", "local")
        account = os.environ.get("ECR_ACCOUNT", "000000000000")
        session = botocore.session.get_session()
        client = session.create_client(
            "ecr",
            region_name=region,
            endpoint_url=endpoint,
            config=Config(parameter_validation=False, retries={"max_attempts": 1}),
        )
        seen = []

        def after_call(http_response, model, **_):
            seen.append(
                {
                    "operation": model.name,
                    "status": http_response.status_code,
                    "content_type": http_response.headers.get("content-type", ""),
                    "body": http_response.content.decode("utf-8", "replace"),
                    "client": "walker",
                }
            )

        client.meta.events.register("after-call.ecr", after_call)
        not_served = []
        for op_name in sorted(self.service.operation_names):
            if op_name in exercised:
                continue
            op = self.service.operation_model(op_name)
            params = self.minimal(op.input_shape, "", account, region) if op.input_shape else {}
            seen.clear()
            try:
                client._make_api_call(op_name, params)
            except Exception as e:  # the error is in the recorded answer
                if not seen:
                    self.failed += 1
                    print(f"FAIL probe {op_name}: no answer ({type(e).__name__}: {e})")
                    continue
            rec = seen[-1]
            records_out.append(rec)
            problems = self.answer(rec)
            kind = None
            try:
                kind = json.loads(rec["body"]).get("__type")
            except (ValueError, AttributeError):
                pass
            if kind == "UnsupportedOperationException" and not problems:
                not_served.append(op_name)
                self.passed += 1
                continue
            if 200 <= rec["status"] < 300 and not problems:
                exercised.add(op_name)  # a valid answer to the minimal input
                self.passed += 1
                continue
            self.failed += 1
            for p in problems:
                print(f"FAIL probe {op_name}: {p}")
            if kind in COMMON_ERRORS and kind != "UnsupportedOperationException":
                print(f"FAIL probe {op_name}: answered {rec['status']} {kind}, so whether Berth serves it is unknown")
            elif kind != "UnsupportedOperationException":
                print(
                    f"FAIL probe {op_name}: Berth serves it (answered {rec['status']} {kind or 'a result'}) "
                    "and no answer of the scenario exercised it (its step failed, or ecr_scenario.py lacks it)"
                )
        return not_served


def self_test():
    """The walker catches each kind of mistake (so a walk that finds nothing means something)."""
    w = Walker(model())

    def rec(op, body, status=200, content_type=JSON_1_1):
        return {"operation": op, "status": status, "content_type": content_type, "body": json.dumps(body)}

    repo = {"repositoryName": "team/app", "repositoryArn": "arn:aws:ecr:local:000000000000:repository/team/app",
            "registryId": "000000000000", "createdAt": 1764864000, "imageTagMutability": "MUTABLE",
            "imageScanningConfiguration": {"scanOnPush": False}}
    cases = [
        ("a right answer", rec("DescribeRepositories", {"repositories": [repo]}), None),
        ("a member the shape lacks", rec("DescribeRepositories", {"repositories": [dict(repo, name="x")]}), "not a member"),
        ("a timestamp as text", rec("DescribeRepositories", {"repositories": [dict(repo, createdAt="2025-12-04T00:00:00Z")]}), "epoch seconds"),
        ("a timestamp in milliseconds", rec("DescribeRepositories", {"repositories": [dict(repo, createdAt=1764864000000)]}), "milliseconds"),
        ("a value outside the enum", rec("DescribeRepositories", {"repositories": [dict(repo, imageTagMutability="mutable")]}), "not a value"),
        ("a boolean as text", rec("DescribeRepositories", {"repositories": [dict(repo, imageScanningConfiguration={"scanOnPush": "false"})]}), "expected a boolean"),
        ("a long as text", rec("DescribeImages", {"imageDetails": [{"imageSizeInBytes": "12"}]}), "expected a long"),
        ("null", rec("DescribeImages", {"imageDetails": [{"imageTags": None}]}), "null"),
        ("a list as an object", rec("ListImages", {"imageIds": {"imageTag": "v1"}}), "expected a list"),
        ("a required member missing", rec("ListImageReferrers", {"referrers": [{"digest": "sha256:" + "0" * 64, "size": 1}]}), "required"),
        ("a name too long", rec("DescribeRepositories", {"repositories": [dict(repo, repositoryName="a" * 300)]}), "at most"),
        ("the wrong content type", rec("DescribeRegistry", {"registryId": "000000000000"}, content_type="application/json"), "Content-Type"),
        ("an error the operation does not declare", rec("ListImages", {"__type": "ImageNotFoundException", "message": "x"}, 400), "does not declare"),
        ("an error name nobody has", rec("ListImages", {"__type": "NoSuchThing", "message": "x"}, 400), "neither"),
        ("an error without __type", rec("ListImages", {"message": "x"}, 400), "__type"),
        ("a declared error", rec("ListImages", {"__type": "RepositoryNotFoundException", "message": "x"}, 400), None),
        ("AccessDeniedException", rec("ListImages", {"__type": "AccessDeniedException", "message": "x"}, 403), None),
    ]
    bad = 0
    for name, r, expect in cases:
        problems = w.answer(r)
        caught = any(expect in p for p in problems) if expect else not problems
        if not caught:
            bad += 1
            print(f"FAIL walk_model self-test, {name}: expected {expect or 'no problem'}, got {problems}")
    print(f"walk_model self-test: {len(cases) - bad} of {len(cases)} cases as expected")
    return bad == 0


def main(argv):
    if argv[1:] == ["--self-test"]:
        return 0 if self_test() else 1
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    path, probe = argv[1], "--probe" in argv[2:]
    service = model()
    w = Walker(service)
    records = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    exercised = set()
    refused = set()
    for i, rec in enumerate(records):
        if not w.record(rec, f"{rec.get('client', '?')} #{i} {rec['operation']} {rec['status']}"):
            continue
        if 200 <= rec["status"] < 300:
            exercised.add(rec["operation"])
        elif rec["operation"] in REFUSED_BY_DESIGN:
            kind = json.loads(rec["body"]).get("__type", "").split("#")[-1]
            if kind in REFUSED_BY_DESIGN[rec["operation"]]:
                refused.add(rec["operation"])
    print(f"walk_model: {len(records)} recorded answers; operations answered with a valid result: {len(exercised)}")
    print("  " + " ".join(sorted(exercised)))
    if refused:
        print(f"walk_model: refused by design, as the model allows: {' '.join(sorted(refused))}")
    exercised |= refused
    if probe:
        probed = []
        not_served = w.probe(exercised, probed)
        print(f"walk_model: probed {len(probed)} operations; UnsupportedOperationException (not served): {len(not_served)}")
        print("  " + " ".join(not_served))
        missing = set(service.operation_names) - exercised - set(not_served)
        if missing:
            print(f"walk_model: neither exercised nor unsupported: {' '.join(sorted(missing))}")
    print(f"{w.passed} passed, {w.failed} failed")
    return 0 if w.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
