#!/usr/bin/env python3
"""ECR's own API through the real clients: boto3 and the `aws ecr` CLI against a running Berth.

    ECR_ENDPOINT=http://127.0.0.1:5000 AWS_DEFAULT_REGION=local \\
    AWS_ACCESS_KEY_ID=BKIA... AWS_SECRET_ACCESS_KEY=... \\
    ECR_DENIED_KEY_ID=BKIA... ECR_DENIED_SECRET=... \\
    ECR_RECORD=answers.jsonl python3 ecr_scenario.py

The first key may do everything (the `admin` user's access key); the second belongs to a user
whose policy denies ecr:CreateRepository (and allows the reads): its CreateRepository must be
AccessDeniedException. Optional: ECR_DOCKER=1/0 (push with docker too; default: when `docker
info` answers), ECR_AWS (the `aws` command; default the one beside this Python), ECR_PREFIX
(repository name prefix; default a random `ecr-ci/<hex>`).

Each step is one check, printed PASS or FAIL with the reason, and later steps go on when one
fails (those that need what it made fail saying so). Every raw answer is recorded in
$ECR_RECORD (ecr_record.py) for walk_model.py. Deletes what it created. Ends with
`N passed, N failed`; exits 1 when anything failed.
"""

import base64
import datetime
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

import boto3
import botocore.config
from botocore.exceptions import ClientError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ecr_record  # noqa: E402

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MIB = 1024 * 1024


class Missing(Exception):
    """A step needs what an earlier, failed step should have made."""


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(name, content):
    """A gzip'd tar holding one file: a real image layer."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


def manifest(config, layers, subject=None, artifact_type=None):
    m = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256(l), "size": len(l)} for l in layers],
    }
    if artifact_type:
        m["artifactType"] = artifact_type
    if subject:
        m["subject"] = subject
    return json.dumps(m, indent=2).encode()


def error_code(e):
    return e.response.get("Error", {}).get("Code")


def expect_error(code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        assert error_code(e) == code, f"expected {code}, got {error_code(e)}: {e}"
        return e
    raise AssertionError(f"expected {code}, the call succeeded")


def json_equal(a, b):
    return json.loads(a) == json.loads(b)


class Scenario:
    def __init__(self):
        self.endpoint = os.environ["ECR_ENDPOINT"].rstrip("/")
        self.region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "local"
        self.record = os.environ["ECR_RECORD"]
        self.prefix = os.environ.get("ECR_PREFIX") or "ecr-ci/" + os.urandom(4).hex()
        self.registry = urllib.parse.urlparse(self.endpoint).netloc
        self.passed = 0
        self.failed = 0
        self.state = {}
        self.created = []  # repositories to remove at the end
        self.ecr = self.client(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"], "boto3")
        self.denied = self.client(os.environ["ECR_DENIED_KEY_ID"], os.environ["ECR_DENIED_SECRET"], "boto3-denied")
        self.work = tempfile.mkdtemp(prefix="ecr-scenario.")

    def client(self, key_id, secret, label, validate=True):
        session = boto3.session.Session(
            aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=self.region
        )
        c = session.client(
            "ecr",
            endpoint_url=self.endpoint,
            config=botocore.config.Config(
                retries={"max_attempts": 1}, connect_timeout=5, read_timeout=60, parameter_validation=validate
            ),
        )
        ecr_record.register(c.meta.events, self.record, label)
        return c

    def need(self, key):
        if key not in self.state:
            raise Missing(f"needs {key}, which an earlier step did not produce")
        return self.state[key]

    def check(self, name, fn):
        start = time.monotonic()
        try:
            fn()
        except Missing as e:
            self.failed += 1
            print(f"FAIL {name}: {e}")
        except Exception as e:  # any failure is this check's, reported with its cause
            self.failed += 1
            print(f"FAIL {name} ({time.monotonic() - start:.2f}s): {type(e).__name__}: {e}")
            if not isinstance(e, (AssertionError, ClientError)):
                traceback.print_exc(limit=3, file=sys.stdout)
        else:
            self.passed += 1
            print(f"PASS {name} ({time.monotonic() - start:.2f}s)")
        sys.stdout.flush()

    # -- repositories ------------------------------------------------------------------

    def create_repository(self):
        name = f"{self.prefix}/app"
        r = self.ecr.create_repository(
            repositoryName=name,
            tags=[{"Key": "team", "Value": "ci"}, {"Key": "stage", "Value": "test"}],
            imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
            imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "latest"}],
            imageScanningConfiguration={"scanOnPush": True},
            encryptionConfiguration={"encryptionType": "AES256"},
        )["repository"]
        self.created.append(name)
        self.state["repo"] = name
        assert r["repositoryName"] == name, r
        assert r["repositoryArn"] == f"arn:aws:ecr:{self.region}:{r['registryId']}:repository/{name}", r
        assert r["repositoryUri"] == f"{self.registry}/{name}", r
        assert r["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION", r
        assert r["imageTagMutabilityExclusionFilters"] == [{"filterType": "WILDCARD", "filter": "latest"}], r
        assert r["imageScanningConfiguration"] == {"scanOnPush": True}, r
        assert isinstance(r["createdAt"], datetime.datetime), r
        self.state["account"] = r["registryId"]
        self.state["arn"] = r["repositoryArn"]

    def create_repository_again(self):
        repo = self.need("repo")
        try:
            self.ecr.create_repository(repositoryName=repo)
        except self.ecr.exceptions.RepositoryAlreadyExistsException:
            return
        raise AssertionError("a second CreateRepository of the same name succeeded")

    def describe_repositories(self):
        repo = self.need("repo")
        r = self.ecr.describe_repositories(repositoryNames=[repo])["repositories"]
        assert [x["repositoryName"] for x in r] == [repo], r
        assert r[0]["imageScanningConfiguration"]["scanOnPush"] is True, r
        # Pagination: one more repository, pages of one.
        other = f"{self.prefix}/other"
        self.ecr.create_repository(repositoryName=other)
        self.created.append(other)
        names = []
        pages = self.ecr.get_paginator("describe_repositories").paginate(PaginationConfig={"PageSize": 1})
        for page in pages:
            assert len(page["repositories"]) <= 1, page
            names += [x["repositoryName"] for x in page["repositories"]]
        assert {repo, other} <= set(names), names
        assert len(names) == len(set(names)), f"a repository on two pages: {names}"

    def repository_not_found(self):
        try:
            self.ecr.describe_repositories(repositoryNames=[f"{self.prefix}/does-not-exist"])
        except self.ecr.exceptions.RepositoryNotFoundException as e:
            assert "does-not-exist" in str(e), e
            return
        raise AssertionError("DescribeRepositories of an unknown repository succeeded")

    def access_denied(self):
        # The second user may read (its DescribeRepositories goes through, so its signature
        # is good) and is denied creating.
        self.denied.describe_repositories()
        e = expect_error("AccessDeniedException", self.denied.create_repository, repositoryName=f"{self.prefix}/denied")
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 403, e.response
        expect_error("RepositoryNotFoundException", self.ecr.describe_repositories, repositoryNames=[f"{self.prefix}/denied"])

    def bad_signature(self):
        c = self.client(os.environ["AWS_ACCESS_KEY_ID"], "not-the-secret", "boto3-bad-secret")
        try:
            c.describe_repositories()
        except ClientError as e:
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 403), e.response
            assert error_code(e) in ("InvalidSignatureException", "SignatureDoesNotMatch", "UnrecognizedClientException"), e
            return
        raise AssertionError("a request signed with the wrong secret succeeded")

    def tags(self):
        arn = self.need("arn")
        tags = self.ecr.list_tags_for_resource(resourceArn=arn)["tags"]
        assert sorted((t["Key"], t["Value"]) for t in tags) == [("stage", "test"), ("team", "ci")], tags
        self.ecr.tag_resource(resourceArn=arn, tags=[{"Key": "owner", "Value": "scenario"}])
        self.ecr.untag_resource(resourceArn=arn, tagKeys=["stage"])
        tags = self.ecr.list_tags_for_resource(resourceArn=arn)["tags"]
        assert sorted((t["Key"], t["Value"]) for t in tags) == [("owner", "scenario"), ("team", "ci")], tags

    def repository_policy(self):
        repo = self.need("repo")
        policy = json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "CiPull",
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{self.need('account')}:root"},
                        "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                    }
                ],
            }
        )
        r = self.ecr.set_repository_policy(repositoryName=repo, policyText=policy)
        assert r["repositoryName"] == repo and json_equal(r["policyText"], policy), r
        r = self.ecr.get_repository_policy(repositoryName=repo)
        assert r["repositoryName"] == repo and r["registryId"] == self.need("account"), r
        assert json_equal(r["policyText"], policy), r
        expect_error("InvalidParameterException", self.ecr.set_repository_policy, repositoryName=repo, policyText="{not json")

    def lifecycle_policy(self):
        repo = self.need("repo")
        policy = json.dumps(
            {
                "rules": [
                    {
                        "rulePriority": 1,
                        "description": "keep one untagged image",
                        "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1},
                        "action": {"type": "expire"},
                    }
                ]
            }
        )
        r = self.ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=policy)
        assert r["repositoryName"] == repo and json_equal(r["lifecyclePolicyText"], policy), r
        r = self.ecr.get_lifecycle_policy(repositoryName=repo)
        assert json_equal(r["lifecyclePolicyText"], policy), r
        assert "lastEvaluatedAt" not in r or isinstance(r["lastEvaluatedAt"], datetime.datetime), r
        self.state["lifecycle"] = policy
        bad = json.dumps({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "tagged"}, "action": {"type": "expire"}}]})
        expect_error("InvalidParameterException", self.ecr.put_lifecycle_policy, repositoryName=repo, lifecyclePolicyText=bad)

    # -- layers and images -------------------------------------------------------------

    def upload_layer(self, repo, blob, part_size):
        digest = sha256(blob)
        up = self.ecr.initiate_layer_upload(repositoryName=repo)
        assert up["uploadId"] and up["partSize"] > 0, up
        first = 0
        while first < len(blob):
            part = blob[first : first + part_size]
            r = self.ecr.upload_layer_part(
                repositoryName=repo,
                uploadId=up["uploadId"],
                partFirstByte=first,
                partLastByte=first + len(part) - 1,
                layerPartBlob=part,
            )
            assert r["uploadId"] == up["uploadId"] and r["lastByteReceived"] == first + len(part) - 1, r
            first += len(part)
        r = self.ecr.complete_layer_upload(repositoryName=repo, uploadId=up["uploadId"], layerDigests=[digest])
        assert r["layerDigest"] == digest and r["repositoryName"] == repo, r
        return digest

    def push_through_layer_operations(self):
        repo = self.need("repo")
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        small = layer_tar("hello.txt", b"hello from ecr_scenario " + os.urandom(8).hex().encode())
        # More than one part: ECR's parts are at least 5 MiB but the last.
        big = layer_tar("random.bin", os.urandom(5 * MIB + 4096))
        digests = [sha256(b) for b in (config, small, big)]
        r = self.ecr.batch_check_layer_availability(repositoryName=repo, layerDigests=digests)
        unavailable = {l["layerDigest"] for l in r["layers"] if l["layerAvailability"] == "UNAVAILABLE"}
        missing = {f["layerDigest"] for f in r["failures"] if f["failureCode"] == "MissingLayerDigest"}
        assert unavailable | missing == set(digests), r
        self.upload_layer(repo, config, 5 * MIB)
        self.upload_layer(repo, small, 5 * MIB)
        self.upload_layer(repo, big, 5 * MIB)
        r = self.ecr.batch_check_layer_availability(repositoryName=repo, layerDigests=digests)
        assert r["failures"] == [], r
        assert {(l["layerDigest"], l["layerAvailability"], l["layerSize"]) for l in r["layers"]} == {
            (sha256(b), "AVAILABLE", len(b)) for b in (config, small, big)
        }, r
        body = manifest(config, [small, big])
        r = self.ecr.put_image(repositoryName=repo, imageManifest=body.decode(), imageManifestMediaType=OCI_MANIFEST, imageTag="v1")
        image = r["image"]
        assert image["imageId"] == {"imageDigest": sha256(body), "imageTag": "v1"}, image
        assert image["imageManifest"] == body.decode() and image["repositoryName"] == repo, image
        self.state.update(config=config, small=small, big=big, v1=body, v1_digest=sha256(body))
        # The same manifest again under a mutable tag; `latest` is excluded from immutability.
        self.ecr.put_image(repositoryName=repo, imageManifest=body.decode(), imageTag="latest")

    def put_image_errors(self):
        repo = self.need("repo")
        other = manifest(self.need("config"), [self.need("small")])
        try:
            self.ecr.put_image(repositoryName=repo, imageManifest=other.decode(), imageManifestMediaType=OCI_MANIFEST, imageTag="v1")
        except self.ecr.exceptions.ImageTagAlreadyExistsException:
            pass
        else:
            raise AssertionError("an immutable tag was moved to another image")
        missing = manifest(self.need("config"), [layer_tar("never-uploaded", os.urandom(32))])
        try:
            self.ecr.put_image(repositoryName=repo, imageManifest=missing.decode(), imageTag="broken")
        except self.ecr.exceptions.LayersNotFoundException:
            pass
        else:
            raise AssertionError("a manifest naming a layer never uploaded was accepted")
        expect_error(
            "ImageDigestDoesNotMatchException",
            self.ecr.put_image,
            repositoryName=repo,
            imageManifest=other.decode(),
            imageDigest="sha256:" + "0" * 64,
        )

    def push_untagged_and_referrer(self):
        """Two untagged images (the lifecycle rule keeps one) and a referrer of v1."""
        repo = self.need("repo")
        config = self.need("config")
        untagged = []
        for i in range(2):
            body = manifest(config, [self.need("small")], artifact_type=f"application/vnd.example.untagged{i}")
            r = self.ecr.put_image(repositoryName=repo, imageManifest=body.decode(), imageManifestMediaType=OCI_MANIFEST)
            assert r["image"]["imageId"]["imageDigest"] == sha256(body), r
            assert "imageTag" not in r["image"]["imageId"], r
            untagged.append(sha256(body))
            time.sleep(1.1)  # distinct push times (whole seconds), so the lifecycle order is known
        self.state["untagged"] = untagged
        subject = {"mediaType": OCI_MANIFEST, "digest": self.need("v1_digest"), "size": len(self.need("v1"))}
        sbom = manifest(config, [], subject=subject, artifact_type="application/vnd.example.sbom")
        self.ecr.put_image(repositoryName=repo, imageManifest=sbom.decode(), imageManifestMediaType=OCI_MANIFEST)
        self.state["referrer"] = sha256(sbom)

    def docker_push(self):
        repo = self.need("repo")
        token = self.ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
        user, password = base64.b64decode(token).decode().split(":", 1)
        config = os.path.join(self.work, "docker")
        os.makedirs(config, exist_ok=True)
        env = dict(os.environ, DOCKER_CONFIG=config)
        run = lambda *args, **kw: subprocess.run(args, env=env, check=True, capture_output=True, timeout=60, **kw)
        run("docker", "login", "--username", user, "--password-stdin", self.registry, input=password.encode())
        tar = os.path.join(self.work, "rootfs.tar")
        with tarfile.open(tar, "w") as t:
            data = f"docker push {os.urandom(8).hex()}\n".encode()
            info = tarfile.TarInfo("docker.txt")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        ref = f"{self.registry}/{repo}:docker"
        run("docker", "import", tar, ref)
        out = run("docker", "push", ref).stdout.decode()
        digest = [w for w in out.split() if w.startswith("sha256:")]
        assert digest, out
        self.state["docker_digest"] = digest[-1]
        run("docker", "rmi", ref)
        run("docker", "pull", ref)
        run("docker", "rmi", ref)

    def list_images(self):
        repo = self.need("repo")
        ids = []
        for page in self.ecr.get_paginator("list_images").paginate(repositoryName=repo, PaginationConfig={"PageSize": 1}):
            assert len(page["imageIds"]) <= 1, page
            ids += page["imageIds"]
        tagged = {(i["imageTag"], i["imageDigest"]) for i in ids if "imageTag" in i}
        assert ("v1", self.need("v1_digest")) in tagged and ("latest", self.need("v1_digest")) in tagged, ids
        untagged = {i["imageDigest"] for i in self.ecr.list_images(repositoryName=repo, filter={"tagStatus": "UNTAGGED"})["imageIds"]}
        assert set(self.need("untagged")) <= untagged and self.need("v1_digest") not in untagged, untagged
        only_tagged = self.ecr.list_images(repositoryName=repo, filter={"tagStatus": "TAGGED"})["imageIds"]
        assert all("imageTag" in i for i in only_tagged), only_tagged
        if "docker_digest" in self.state:
            assert ("docker", self.state["docker_digest"]) in tagged, f"docker's push is not listed: {ids}"

    def describe_images(self):
        repo = self.need("repo")
        d = self.ecr.describe_images(repositoryName=repo, imageIds=[{"imageTag": "v1"}])["imageDetails"]
        assert len(d) == 1, d
        d = d[0]
        assert d["imageDigest"] == self.need("v1_digest") and sorted(d["imageTags"]) == ["latest", "v1"], d
        assert d["repositoryName"] == repo and d["registryId"] == self.need("account"), d
        assert d["imageManifestMediaType"] == OCI_MANIFEST and d["artifactMediaType"] == OCI_CONFIG, d
        # ECR's size: the layers' compressed sizes (the manifest and config are not counted).
        assert d["imageSizeInBytes"] >= len(self.need("small")) + len(self.need("big")), d
        assert isinstance(d["imagePushedAt"], datetime.datetime), d
        age = datetime.datetime.now(datetime.timezone.utc) - d["imagePushedAt"]
        assert abs(age.total_seconds()) < 600, d
        pages = self.ecr.get_paginator("describe_images").paginate(repositoryName=repo, PaginationConfig={"PageSize": 2})
        digests = [x["imageDigest"] for p in pages for x in p["imageDetails"]]
        assert len(digests) == len(set(digests)) and set(self.need("untagged")) <= set(digests), digests
        untagged = self.ecr.describe_images(repositoryName=repo, filter={"tagStatus": "UNTAGGED"})["imageDetails"]
        assert all("imageTags" not in x or x["imageTags"] == [] for x in untagged), untagged

    def image_not_found(self):
        repo = self.need("repo")
        try:
            self.ecr.describe_images(repositoryName=repo, imageIds=[{"imageTag": "no-such-tag"}])
        except self.ecr.exceptions.ImageNotFoundException:
            return
        raise AssertionError("DescribeImages of an unknown tag succeeded")

    def batch_get_image(self):
        repo = self.need("repo")
        r = self.ecr.batch_get_image(
            repositoryName=repo,
            imageIds=[{"imageTag": "v1"}, {"imageTag": "no-such-tag"}],
            acceptedMediaTypes=[OCI_MANIFEST],
        )
        assert len(r["images"]) == 1, r
        image = r["images"][0]
        assert image["imageManifest"] == self.need("v1").decode(), "the manifest comes back byte for byte"
        assert image["imageId"]["imageDigest"] == self.need("v1_digest") and image["imageManifestMediaType"] == OCI_MANIFEST, image
        assert [(f["imageId"], f["failureCode"]) for f in r["failures"]] == [({"imageTag": "no-such-tag"}, "ImageNotFound")], r

    def download_url(self):
        repo = self.need("repo")
        big = self.need("big")
        r = self.ecr.get_download_url_for_layer(repositoryName=repo, layerDigest=sha256(big))
        assert r["layerDigest"] == sha256(big), r
        url = r["downloadUrl"]
        assert url.startswith(self.endpoint + "/"), url
        # No credentials: the URL itself is the permission.
        with urllib.request.urlopen(url, timeout=30) as answer:
            data = answer.read()
        assert sha256(data) == sha256(big), "the downloaded bytes have another digest"
        # Bound to its digest: the same URL naming another layer is refused.
        forged = url.replace(sha256(big).split(":")[1], sha256(self.need("small")).split(":")[1])
        assert forged != url, url
        try:
            urllib.request.urlopen(forged, timeout=30).read()
        except urllib.error.HTTPError as e:
            assert 400 <= e.code < 500, e
        else:
            raise AssertionError(f"a download URL edited to name another layer worked: {forged}")
        expect_error(
            "LayersNotFoundException", self.ecr.get_download_url_for_layer, repositoryName=repo, layerDigest="sha256:" + "1" * 64
        )

    def referrers(self):
        repo = self.need("repo")
        r = self.ecr.list_image_referrers(repositoryName=repo, subjectId={"imageDigest": self.need("v1_digest")})
        assert [x["digest"] for x in r["referrers"]] == [self.need("referrer")], r
        assert r["referrers"][0]["artifactType"] == "application/vnd.example.sbom", r

    def lifecycle_preview(self):
        repo = self.need("repo")
        self.need("lifecycle")
        r = self.ecr.start_lifecycle_policy_preview(repositoryName=repo)
        assert r["status"] in ("IN_PROGRESS", "COMPLETE"), r
        deadline = time.monotonic() + 30
        while True:
            r = self.ecr.get_lifecycle_policy_preview(repositoryName=repo)
            if r["status"] != "IN_PROGRESS" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r["status"] == "COMPLETE", r
        expiring = [x["imageDigest"] for x in r["previewResults"]]
        # Keep one untagged image: the older of the two goes.
        assert self.need("untagged")[0] in expiring and self.need("untagged")[1] not in expiring, r
        assert self.need("v1_digest") not in expiring, r
        assert r["summary"]["expiringImageTotalCount"] == len(expiring), r
        assert all(x["action"]["type"] == "EXPIRE" and x["appliedRulePriority"] == 1 for x in r["previewResults"]), r
        # The preview changed nothing.
        self.ecr.describe_images(repositoryName=repo, imageIds=[{"imageDigest": d} for d in self.need("untagged")])

    def tag_mutability_and_scanning(self):
        repo = self.need("repo")
        r = self.ecr.put_image_tag_mutability(repositoryName=repo, imageTagMutability="MUTABLE")
        assert r["imageTagMutability"] == "MUTABLE" and r["repositoryName"] == repo, r
        r = self.ecr.put_image_scanning_configuration(repositoryName=repo, imageScanningConfiguration={"scanOnPush": False})
        assert r["imageScanningConfiguration"] == {"scanOnPush": False}, r
        r = self.ecr.batch_get_repository_scanning_configuration(repositoryNames=[repo])
        assert [(c["repositoryName"], c["scanOnPush"]) for c in r["scanningConfigurations"]] == [(repo, False)], r
        d = self.ecr.describe_repositories(repositoryNames=[repo])["repositories"][0]
        assert d["imageTagMutability"] == "MUTABLE" and d["imageScanningConfiguration"]["scanOnPush"] is False, d

    def bounds_and_forged_tokens(self):
        """ECR's maximums are checked, and a pagination token the client made up is refused.
        botocore would stop these before sending them: this client does not validate."""
        repo = self.need("repo")
        raw = self.client(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"], "boto3-unvalidated", validate=False)
        digest = "sha256:" + "4" * 64
        cases = [
            ("DescribeRepositories maxResults 1001", raw.describe_repositories, {"maxResults": 1001}),
            ("DescribeRepositories maxResults 0", raw.describe_repositories, {"maxResults": 0}),
            ("DescribeRepositories 101 repositoryNames", raw.describe_repositories, {"repositoryNames": [f"{self.prefix}/r{i}" for i in range(101)]}),
            ("ListImages maxResults 1001", raw.list_images, {"repositoryName": repo, "maxResults": 1001}),
            ("BatchGetImage 101 imageIds", raw.batch_get_image, {"repositoryName": repo, "imageIds": [{"imageTag": f"t{i}"} for i in range(101)]}),
            ("BatchDeleteImage 101 imageIds", raw.batch_delete_image, {"repositoryName": repo, "imageIds": [{"imageTag": f"t{i}"} for i in range(101)]}),
            ("BatchCheckLayerAvailability 101 layerDigests", raw.batch_check_layer_availability, {"repositoryName": repo, "layerDigests": [digest] * 101}),
            ("DescribeImages 101 imageIds", raw.describe_images, {"repositoryName": repo, "imageIds": [{"imageTag": f"t{i}"} for i in range(101)]}),
            ("DescribeRepositories forged nextToken", raw.describe_repositories, {"nextToken": "forged-token"}),
            ("ListImages forged nextToken", raw.list_images, {"repositoryName": repo, "nextToken": "forged-token"}),
            ("DescribeImages forged nextToken", raw.describe_images, {"repositoryName": repo, "nextToken": "forged-token"}),
        ]
        wrong = []
        for name, call, params in cases:
            try:
                call(**params)
                wrong.append(f"{name}: accepted")
            except ClientError as e:
                if error_code(e) != "InvalidParameterException":
                    wrong.append(f"{name}: {error_code(e)} ({e}), expected InvalidParameterException")
        assert not wrong, "; ".join(wrong)

    def image_scans_refused(self):
        """Berth stores the scanning configuration and scans nothing: a scan is refused, and
        there are no findings (never invented ones)."""
        repo = self.need("repo")
        image = {"imageTag": "v1"}
        e = expect_error("ValidationException", self.ecr.start_image_scan, repositoryName=repo, imageId=image)
        assert "scan" in str(e).lower(), e
        try:
            self.ecr.describe_image_scan_findings(repositoryName=repo, imageId=image)
        except (self.ecr.exceptions.ValidationException, self.ecr.exceptions.ScanNotFoundException):
            pass
        else:
            raise AssertionError("DescribeImageScanFindings answered findings, and Berth scans nothing")

    def batch_delete_image(self):
        repo = self.need("repo")
        r = self.ecr.batch_delete_image(
            repositoryName=repo, imageIds=[{"imageDigest": self.need("untagged")[0]}, {"imageDigest": "sha256:" + "2" * 64}]
        )
        assert r["imageIds"] == [{"imageDigest": self.need("untagged")[0]}], r
        assert [(f["imageId"]["imageDigest"], f["failureCode"]) for f in r["failures"]] == [("sha256:" + "2" * 64, "ImageNotFound")], r
        # A tag: only the tag goes while another tag holds the image.
        r = self.ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageTag": "latest"}])
        assert r["failures"] == [] and r["imageIds"][0]["imageTag"] == "latest", r
        left = self.ecr.describe_images(repositoryName=repo, imageIds=[{"imageTag": "v1"}])["imageDetails"][0]
        assert left["imageTags"] == ["v1"], left

    def delete_policies(self):
        repo = self.need("repo")
        r = self.ecr.delete_lifecycle_policy(repositoryName=repo)
        assert r["repositoryName"] == repo and json_equal(r["lifecyclePolicyText"], self.need("lifecycle")), r
        try:
            self.ecr.get_lifecycle_policy(repositoryName=repo)
        except self.ecr.exceptions.LifecyclePolicyNotFoundException:
            pass
        else:
            raise AssertionError("GetLifecyclePolicy after DeleteLifecyclePolicy succeeded")
        r = self.ecr.delete_repository_policy(repositoryName=repo)
        assert r["repositoryName"] == repo, r
        try:
            self.ecr.get_repository_policy(repositoryName=repo)
        except self.ecr.exceptions.RepositoryPolicyNotFoundException:
            pass
        else:
            raise AssertionError("GetRepositoryPolicy after DeleteRepositoryPolicy succeeded")

    # -- the registry --------------------------------------------------------------------

    def authorization_token(self):
        data = self.ecr.get_authorization_token()["authorizationData"]
        assert len(data) == 1, data
        user, password = base64.b64decode(data[0]["authorizationToken"]).decode().split(":", 1)
        assert user == "AWS" and password, data
        assert data[0]["proxyEndpoint"] == self.endpoint, data
        assert data[0]["expiresAt"] > datetime.datetime.now(datetime.timezone.utc), data
        # The password signs in to the registry's own API (Basic, as `docker login` sends it).
        req = urllib.request.Request(self.endpoint + "/v2/", headers={"Authorization": "Basic " + base64.b64encode(f"AWS:{password}".encode()).decode()})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200, r.status

    def registry_and_policy(self):
        r = self.ecr.describe_registry()
        assert r["registryId"] == self.need("account"), r
        policy = json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "CiReadAll",
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{self.need('account')}:root"},
                        "Action": ["ecr:DescribeRepositories"],
                        "Resource": f"arn:aws:ecr:{self.region}:{self.need('account')}:repository/*",
                    }
                ],
            }
        )
        r = self.ecr.put_registry_policy(policyText=policy)
        assert r["registryId"] == self.need("account") and json_equal(r["policyText"], policy), r
        r = self.ecr.get_registry_policy()
        assert json_equal(r["policyText"], policy), r
        r = self.ecr.delete_registry_policy()
        assert json_equal(r["policyText"], policy), r
        try:
            self.ecr.get_registry_policy()
        except self.ecr.exceptions.RegistryPolicyNotFoundException:
            pass
        else:
            raise AssertionError("GetRegistryPolicy after DeleteRegistryPolicy succeeded")

    def registry_scanning(self):
        rules = [{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": "ecr-ci/*", "filterType": "WILDCARD"}]}]
        r = self.ecr.put_registry_scanning_configuration(scanType="BASIC", rules=rules)
        assert r["registryScanningConfiguration"]["scanType"] == "BASIC", r
        r = self.ecr.get_registry_scanning_configuration()
        assert r["scanningConfiguration"]["rules"] == rules, r

    def replication(self):
        """ECR's replication operations over Berth's replication: with no destination defined
        (they are defined through Berth's admin API), empty rules, and an image with no status."""
        r = self.ecr.put_replication_configuration(replicationConfiguration={"rules": []})
        assert r["replicationConfiguration"] == {"rules": []}, r
        r = self.ecr.describe_registry()
        assert r["replicationConfiguration"] == {"rules": []}, r
        repo, digest = self.need("repo"), self.need("v1_digest")
        r = self.ecr.describe_image_replication_status(repositoryName=repo, imageId={"imageDigest": digest})
        assert r["repositoryName"] == repo and r["imageId"]["imageDigest"] == digest, r
        assert r["replicationStatuses"] == [], r
        expect_error(
            "ImageNotFoundException",
            self.ecr.describe_image_replication_status,
            repositoryName=repo,
            imageId={"imageTag": "no-such-tag"},
        )
        unknown = {"rules": [{"destinations": [{"region": "nowhere", "registryId": self.need("account")}]}]}
        expect_error("InvalidParameterException", self.ecr.put_replication_configuration, replicationConfiguration=unknown)

    def creation_templates(self):
        prefix = f"{self.prefix}/tpl"
        r = self.ecr.create_repository_creation_template(
            prefix=prefix,
            description="scenario",
            appliedFor=["CREATE_ON_PUSH"],
            imageTagMutability="IMMUTABLE",
            resourceTags=[{"Key": "from", "Value": "template"}],
        )["repositoryCreationTemplate"]
        assert r["prefix"] == prefix and r["imageTagMutability"] == "IMMUTABLE" and r["appliedFor"] == ["CREATE_ON_PUSH"], r
        r = self.ecr.describe_repository_creation_templates(prefixes=[prefix])["repositoryCreationTemplates"]
        assert [t["prefix"] for t in r] == [prefix], r
        r = self.ecr.update_repository_creation_template(prefix=prefix, description="updated")["repositoryCreationTemplate"]
        assert r["description"] == "updated", r
        r = self.ecr.delete_repository_creation_template(prefix=prefix)["repositoryCreationTemplate"]
        assert r["prefix"] == prefix, r
        expect_error("TemplateNotFoundException", self.ecr.delete_repository_creation_template, prefix=prefix)

    def pull_through_rules(self):
        # ECR's prefixes are at most 30 characters. No internet here: the upstream is a closed
        # port on loopback, so validation answers isValid false (with the reason).
        prefix = f"ptc-{os.getpid() % 100000}"
        url = "http://127.0.0.1:9"
        r = self.ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=prefix, upstreamRegistryUrl=url)
        assert r["ecrRepositoryPrefix"] == prefix and r["upstreamRegistryUrl"] == url, r
        expect_error(
            "PullThroughCacheRuleAlreadyExistsException",
            self.ecr.create_pull_through_cache_rule,
            ecrRepositoryPrefix=prefix,
            upstreamRegistryUrl=url,
        )
        r = self.ecr.describe_pull_through_cache_rules(ecrRepositoryPrefixes=[prefix])["pullThroughCacheRules"]
        assert [x["ecrRepositoryPrefix"] for x in r] == [prefix], r
        r = self.ecr.update_pull_through_cache_rule(ecrRepositoryPrefix=prefix)
        assert r["ecrRepositoryPrefix"] == prefix, r
        r = self.ecr.validate_pull_through_cache_rule(ecrRepositoryPrefix=prefix)
        assert r["isValid"] is False and r["failure"], r
        r = self.ecr.delete_pull_through_cache_rule(ecrRepositoryPrefix=prefix)
        assert r["ecrRepositoryPrefix"] == prefix, r
        expect_error(
            "PullThroughCacheRuleNotFoundException", self.ecr.delete_pull_through_cache_rule, ecrRepositoryPrefix=prefix
        )

    def delete_repository(self):
        repo = self.need("repo")
        try:
            self.ecr.delete_repository(repositoryName=repo)
        except self.ecr.exceptions.RepositoryNotEmptyException:
            pass
        else:
            raise AssertionError("DeleteRepository of a repository with images, without force, succeeded")
        r = self.ecr.delete_repository(repositoryName=repo, force=True)["repository"]
        assert r["repositoryName"] == repo, r
        self.created.remove(repo)
        expect_error("RepositoryNotFoundException", self.ecr.list_images, repositoryName=repo)

    # -- the aws CLI -----------------------------------------------------------------------

    def aws(self, *args, parse=True):
        cli = os.environ.get("ECR_AWS") or os.path.join(os.path.dirname(sys.executable), "aws")
        config = os.path.join(self.work, "aws-config")
        if not os.path.exists(config):
            with open(config, "w") as f:
                f.write("[plugins]\necr_record = ecr_record\n")
        env = dict(
            os.environ,
            AWS_CONFIG_FILE=config,
            AWS_SHARED_CREDENTIALS_FILE=os.path.join(self.work, "no-credentials"),
            PYTHONPATH=os.path.dirname(os.path.abspath(__file__)),
            AWS_PAGER="",
        )
        cmd = [cli, "ecr", *args, "--endpoint-url", self.endpoint, "--region", self.region]
        if parse:
            cmd += ["--output", "json"]
        p = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
        if p.returncode != 0:
            raise AssertionError(f"aws ecr {args[0]} exited {p.returncode}: {p.stderr.decode()[-600:]}")
        out = p.stdout.decode()
        return json.loads(out) if parse and out.strip() else out

    def cli(self):
        repo = f"{self.prefix}/cli"
        r = self.aws(
            "create-repository",
            "--repository-name",
            repo,
            "--image-scanning-configuration",
            "scanOnPush=true",
            "--tags",
            "Key=team,Value=ci",
        )
        self.created.append(repo)
        assert r["repository"]["repositoryName"] == repo, r
        r = self.aws("describe-repositories", "--repository-names", repo)
        assert [x["repositoryName"] for x in r["repositories"]] == [repo], r
        policy = os.path.join(self.work, "lifecycle.json")
        with open(policy, "w") as f:
            f.write(json.dumps({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 5}, "action": {"type": "expire"}}]}))
        r = self.aws("put-lifecycle-policy", "--repository-name", repo, "--lifecycle-policy-text", f"file://{policy}")
        assert r["repositoryName"] == repo, r
        r = self.aws("get-lifecycle-policy", "--repository-name", repo)
        assert json.loads(r["lifecyclePolicyText"])["rules"][0]["selection"]["countNumber"] == 5, r
        password = self.aws("get-login-password", parse=False).strip()
        req = urllib.request.Request(self.endpoint + "/v2/", headers={"Authorization": "Basic " + base64.b64encode(f"AWS:{password}".encode()).decode()})
        with urllib.request.urlopen(req, timeout=10) as answer:
            assert answer.status == 200
        # A push through the CLI's layer commands (blobs from files), then the image.
        config = json.dumps({"architecture": "amd64", "os": "linux", "cli": os.urandom(4).hex()}).encode()
        layer = layer_tar("cli.txt", os.urandom(2048))
        for blob in (config, layer):
            path = os.path.join(self.work, "blob")
            with open(path, "wb") as f:
                f.write(blob)
            up = self.aws("initiate-layer-upload", "--repository-name", repo)
            self.aws(
                "upload-layer-part",
                "--repository-name", repo,
                "--upload-id", up["uploadId"],
                "--part-first-byte", "0",
                "--part-last-byte", str(len(blob) - 1),
                "--layer-part-blob", f"fileb://{path}",
            )
            r = self.aws("complete-layer-upload", "--repository-name", repo, "--upload-id", up["uploadId"], "--layer-digests", sha256(blob))
            assert r["layerDigest"] == sha256(blob), r
        body = manifest(config, [layer])
        path = os.path.join(self.work, "manifest.json")
        with open(path, "wb") as f:
            f.write(body)
        r = self.aws("put-image", "--repository-name", repo, "--image-tag", "cli", "--image-manifest", f"file://{path}")
        assert r["image"]["imageId"]["imageDigest"] == sha256(body), r
        r = self.aws("describe-images", "--repository-name", repo)
        assert [(d["imageDigest"], d["imageTags"]) for d in r["imageDetails"]] == [(sha256(body), ["cli"])], r
        r = self.aws("batch-delete-image", "--repository-name", repo, "--image-ids", "imageTag=cli")
        assert r["imageIds"][0]["imageDigest"] == sha256(body) and r["failures"] == [], r
        r = self.aws("delete-repository", "--repository-name", repo, "--force")
        assert r["repository"]["repositoryName"] == repo, r
        self.created.remove(repo)

    # ----------------------------------------------------------------------------------

    def use_docker(self):
        want = os.environ.get("ECR_DOCKER")
        if want is not None:
            return want == "1"
        if not shutil.which("docker"):
            return False
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0

    def run(self):
        c = self.check
        c("boto3_get_authorization_token", self.authorization_token)
        c("boto3_create_repository_tags_mutability_scan_on_push", self.create_repository)
        c("boto3_create_repository_again_already_exists", self.create_repository_again)
        c("boto3_describe_repositories_by_name_and_paginated", self.describe_repositories)
        c("boto3_repository_not_found_exception", self.repository_not_found)
        c("boto3_access_denied_for_a_denying_policy", self.access_denied)
        c("boto3_wrong_secret_refused", self.bad_signature)
        c("boto3_tags_list_tag_untag", self.tags)
        c("boto3_set_get_repository_policy", self.repository_policy)
        c("boto3_put_get_lifecycle_policy", self.lifecycle_policy)
        c("boto3_push_through_layer_operations_and_put_image", self.push_through_layer_operations)
        c("boto3_put_image_errors", self.put_image_errors)
        c("boto3_push_untagged_images_and_a_referrer", self.push_untagged_and_referrer)
        if self.use_docker():
            c("docker_login_with_authorization_token_push_pull", self.docker_push)
        else:
            print("skip docker_login_with_authorization_token_push_pull: no docker daemon (the e2e group ecr pushes with docker)")
        c("boto3_list_images_filtered_and_paginated", self.list_images)
        c("boto3_describe_images", self.describe_images)
        c("boto3_image_not_found_exception", self.image_not_found)
        c("boto3_batch_get_image", self.batch_get_image)
        c("boto3_download_url_without_credentials", self.download_url)
        c("boto3_list_image_referrers", self.referrers)
        c("boto3_lifecycle_policy_preview", self.lifecycle_preview)
        c("boto3_tag_mutability_and_scanning_configuration", self.tag_mutability_and_scanning)
        c("boto3_maximums_checked_and_forged_tokens_refused", self.bounds_and_forged_tokens)
        c("boto3_image_scans_refused_berth_does_not_scan", self.image_scans_refused)
        c("boto3_batch_delete_image_with_failures", self.batch_delete_image)
        c("boto3_delete_lifecycle_and_repository_policies", self.delete_policies)
        c("boto3_describe_registry_and_registry_policy", self.registry_and_policy)
        c("boto3_registry_scanning_configuration", self.registry_scanning)
        c("boto3_replication", self.replication)
        c("boto3_repository_creation_templates", self.creation_templates)
        c("boto3_pull_through_cache_rules", self.pull_through_rules)
        c("boto3_delete_repository_force", self.delete_repository)
        c("awscli_create_describe_lifecycle_login_push_describe_delete", self.cli)
        for repo in list(self.created):
            try:
                self.ecr.delete_repository(repositoryName=repo, force=True)
            except ClientError as e:
                print(f"cleanup: {repo}: {e}")
        shutil.rmtree(self.work, ignore_errors=True)
        print(f"{self.passed} passed, {self.failed} failed")
        return 0 if self.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(Scenario().run())
