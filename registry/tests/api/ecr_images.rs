//! ECR's image and lifecycle operations over real HTTP (`POST /` with `X-Amz-Target`), mostly
//! with authentication off: images pushed with the OCI API, then each operation's answer in
//! botocore's shapes and its errors by ECR's exception names; `BatchGetImage` is a pull
//! (byte-exact, its pull time recorded); `BatchDeleteImage` of an image's last tag deletes the
//! image; `PutImage` checks references and holds immutable tags; a lifecycle preview and the
//! run after it expire the same images. With authentication on (requests signed by
//! `ecr_common`), each operation is decided by its own ECR action.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const IMAGE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A registry whose pull times are written only when a test flushes them.
async fn start() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    TestServer::start_tuned(dir, config, &|s| s.pull_flush = Duration::from_secs(3600)).await
}

/// One ECR operation: the status and the JSON answer.
async fn ecr(t: &TestServer, op: &str, input: Value) -> (u16, Value) {
    let r = t
        .client
        .post(t.url("/"))
        .header("x-amz-target", format!("AmazonEC2ContainerRegistry_V20150921.{op}"))
        .header("content-type", "application/x-amz-json-1.1")
        .body(input.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    if status == 200 {
        assert_eq!(r.headers()["content-type"], "application/x-amz-json-1.1");
    }
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The answer of an operation that must succeed.
async fn ok(t: &TestServer, op: &str, input: Value) -> Value {
    let (status, body) = ecr(t, op, input).await;
    assert_eq!(status, 200, "{op}: {body}");
    body
}

/// The exception an operation that must fail answers, and its message.
async fn refused(t: &TestServer, op: &str, input: Value) -> (String, String) {
    let (status, body) = ecr(t, op, input).await;
    assert_eq!(status, 400, "{op}: {body}");
    (body["__type"].as_str().unwrap().to_owned(), body["message"].as_str().unwrap().to_owned())
}

async fn push_blob(t: &TestServer, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let r = t
        .client
        .post(t.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    digest
}

/// Pushes `body` (exactly these bytes) to `reference` (None: by its digest); its digest.
async fn push_bytes(t: &TestServer, repo: &str, reference: Option<&str>, media_type: &str, body: &str) -> String {
    let digest = sha256(body.as_bytes());
    let reference = reference.unwrap_or(&digest);
    let r = t
        .client
        .put(t.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", media_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    digest
}

/// An image manifest over a config of its own (from `seed`), its blobs pushed.
async fn image_manifest(t: &TestServer, repo: &str, seed: &str) -> Value {
    let config = format!("{{\"seed\":\"{seed}\"}}");
    let digest = push_blob(t, repo, config.as_bytes()).await;
    json!({
        "schemaVersion": 2,
        "mediaType": IMAGE,
        "config": {"mediaType": CONFIG, "digest": digest, "size": config.len()},
        "layers": [],
    })
}

/// An image pushed to `tag` (None: untagged); its digest and size.
async fn image(t: &TestServer, repo: &str, tag: Option<&str>, seed: &str) -> (String, usize) {
    let body = image_manifest(t, repo, seed).await.to_string();
    (push_bytes(t, repo, tag, IMAGE, &body).await, body.len())
}

async fn delete_repository(t: &TestServer, repo: &str) {
    let r = t.client.delete(t.url(&format!("/api/v1/repositories?name={repo}&force=true"))).send().await.unwrap();
    assert_eq!(r.status(), 204);
}

async fn manifest_status(t: &TestServer, repo: &str, reference: &str) -> u16 {
    let r = t
        .client
        .head(t.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", format!("{IMAGE}, {INDEX}"))
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

fn ids(answer: &Value) -> Vec<(String, Option<String>)> {
    answer["imageIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["imageDigest"].as_str().unwrap().to_owned(), i["imageTag"].as_str().map(str::to_owned)))
        .collect()
}

/// `ListImages`: one id per tag and an untagged image once, by `filter.tagStatus`, in pages
/// a `nextToken` walks (a forged one refused); `maxResults` bounded; an unknown repository.
#[tokio::test]
async fn list_images_answers_one_id_per_tag_in_pages() {
    let t = start().await;
    let repo = "ecr-images/list";
    let (a, _) = image(&t, repo, Some("v1"), "list-a").await;
    let body = image_manifest(&t, repo, "list-a").await.to_string();
    push_bytes(&t, repo, Some("v2"), IMAGE, &body).await;
    let (b, _) = image(&t, repo, None, "list-b").await;

    let all = ok(&t, "ListImages", json!({"repositoryName": repo})).await;
    let mut want = vec![(a.clone(), Some("v1".to_owned())), (a.clone(), Some("v2".to_owned())), (b.clone(), None)];
    want.sort();
    assert_eq!(ids(&all), want);
    assert!(all.get("nextToken").is_none(), "{all}");
    let tagged = ok(&t, "ListImages", json!({"repositoryName": repo, "filter": {"tagStatus": "TAGGED"}})).await;
    assert_eq!(ids(&tagged).len(), 2);
    let untagged = ok(&t, "ListImages", json!({"repositoryName": repo, "filter": {"tagStatus": "UNTAGGED"}})).await;
    assert_eq!(ids(&untagged), [(b.clone(), None)]);

    let mut walked = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut input = json!({"repositoryName": repo, "maxResults": 1});
        if let Some(t) = &token {
            input["nextToken"] = json!(t);
        }
        let page = ok(&t, "ListImages", input).await;
        walked.extend(ids(&page));
        match page["nextToken"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(walked, want, "the pages walk every id once");

    let forged = json!({"repositoryName": repo, "nextToken": "../../etc"});
    assert_eq!(refused(&t, "ListImages", forged).await.0, "InvalidParameterException");
    for n in [0, 1001] {
        let (kind, message) = refused(&t, "ListImages", json!({"repositoryName": repo, "maxResults": n})).await;
        assert_eq!(kind, "InvalidParameterException");
        assert!(message.contains("maxResults"), "{message}");
    }
    let (kind, message) =
        refused(&t, "ListImages", json!({"repositoryName": repo, "filter": {"tagStatus": "SOME"}})).await;
    assert_eq!(kind, "InvalidParameterException");
    assert!(message.contains("tagStatus"), "{message}");
    let (kind, message) = refused(&t, "ListImages", json!({"repositoryName": "ecr-images/none"})).await;
    assert_eq!(kind, "RepositoryNotFoundException");
    assert!(message.contains("'ecr-images/none'"), "{message}");
    delete_repository(&t, repo).await;
    t.server.stop().await;
}

/// `DescribeImages` by `imageIds` (an unknown one is `ImageNotFoundException`) or by
/// `filter`, with every detail botocore reads; `lastRecordedPullTime` absent until a pull
/// (a `BatchGetImage`) is flushed.
#[tokio::test]
async fn describe_images_by_ids_and_by_filter() {
    let t = start().await;
    let repo = "ecr-images/describe";
    let (a, _) = image(&t, repo, Some("v1"), "describe-a").await;
    let (b, _) = image(&t, repo, None, "describe-b").await;

    let answer = ok(&t, "DescribeImages", json!({"repositoryName": repo, "imageIds": [{"imageTag": "v1"}]})).await;
    let details = answer["imageDetails"].as_array().unwrap();
    assert_eq!(details.len(), 1, "{answer}");
    let d = &details[0];
    assert_eq!(d["registryId"].as_str().unwrap().len(), 12, "{d}");
    assert_eq!(d["repositoryName"], repo);
    assert_eq!(d["imageDigest"], a.as_str());
    assert_eq!(d["imageTags"], json!(["v1"]));
    assert_eq!(d["imageSizeInBytes"], "{\"seed\":\"describe-a\"}".len());
    assert!(d["imagePushedAt"].as_f64().unwrap() > 1.7e9, "epoch seconds: {d}");
    assert_eq!(d["imageManifestMediaType"], IMAGE);
    assert_eq!(d["artifactMediaType"], CONFIG);
    assert!(d.get("lastRecordedPullTime").is_none(), "never pulled: {d}");
    assert!(d.get("children").is_none(), "only the model's members: {d}");

    let got = ok(&t, "BatchGetImage", json!({"repositoryName": repo, "imageIds": [{"imageDigest": a}]})).await;
    assert_eq!(got["images"].as_array().unwrap().len(), 1, "{got}");
    t.server.app.registry().flush_pull_times().await;
    let answer = ok(&t, "DescribeImages", json!({"repositoryName": repo, "imageIds": [{"imageDigest": a}]})).await;
    assert!(answer["imageDetails"][0]["lastRecordedPullTime"].as_f64().is_some(), "{answer}");

    let untagged = ok(&t, "DescribeImages", json!({"repositoryName": repo, "filter": {"tagStatus": "UNTAGGED"}})).await;
    let digests: Vec<&str> =
        untagged["imageDetails"].as_array().unwrap().iter().map(|d| d["imageDigest"].as_str().unwrap()).collect();
    assert_eq!(digests, [b.as_str()]);
    let first = ok(&t, "DescribeImages", json!({"repositoryName": repo, "maxResults": 1})).await;
    let token = first["nextToken"].as_str().expect("a second page").to_owned();
    let second = ok(&t, "DescribeImages", json!({"repositoryName": repo, "maxResults": 1, "nextToken": token})).await;
    let both: BTreeSet<&str> =
        [&first, &second].iter().map(|p| p["imageDetails"][0]["imageDigest"].as_str().unwrap()).collect();
    assert_eq!(both, BTreeSet::from([a.as_str(), b.as_str()]));

    let (kind, message) =
        refused(&t, "DescribeImages", json!({"repositoryName": repo, "imageIds": [{"imageTag": "nope"}]})).await;
    assert_eq!(kind, "ImageNotFoundException");
    assert!(message.contains("imageTag:'nope'"), "{message}");
    let many: Vec<Value> = (0..101).map(|i| json!({"imageTag": format!("t{i}")})).collect();
    let (kind, message) = refused(&t, "DescribeImages", json!({"repositoryName": repo, "imageIds": many})).await;
    assert_eq!(kind, "InvalidParameterException");
    assert!(message.contains("imageIds"), "{message}");
    let both = json!({"repositoryName": repo, "imageIds": [{"imageTag": "v1"}], "maxResults": 5});
    assert_eq!(refused(&t, "DescribeImages", both).await.0, "InvalidParameterException");
    let forged = json!({"repositoryName": repo, "nextToken": "not-a-digest"});
    assert_eq!(refused(&t, "DescribeImages", forged).await.0, "InvalidParameterException");
    let missing = json!({"repositoryName": "ecr-images/none"});
    assert_eq!(refused(&t, "DescribeImages", missing).await.0, "RepositoryNotFoundException");
    delete_repository(&t, repo).await;
    t.server.stop().await;
}

/// `BatchGetImage`: the manifest byte for byte, by tag or digest; each failure by ECR's code;
/// a media type not in `acceptedMediaTypes` is no pull.
#[tokio::test]
async fn batch_get_image_answers_the_manifest_byte_for_byte() {
    let t = start().await;
    let repo = "ecr-images/get";
    let manifest = image_manifest(&t, repo, "get-a").await;
    // Pretty-printed: what is answered is what was pushed, not a re-serialization.
    let body = serde_json::to_string_pretty(&manifest).unwrap() + "\n";
    let a = push_bytes(&t, repo, Some("v1"), IMAGE, &body).await;
    let (other, _) = image(&t, repo, Some("other"), "get-b").await;

    let input = json!({
        "repositoryName": repo,
        "imageIds": [
            {"imageTag": "v1"},
            {"imageDigest": a},
            {"imageTag": "gone"},
            {"imageDigest": "sha256:not-hex"},
            {"imageTag": "-bad"},
            {},
            {"imageDigest": other, "imageTag": "v1"},
        ],
    });
    let got = ok(&t, "BatchGetImage", input).await;
    let images = got["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "{got}");
    for (image, tag) in images.iter().zip([Some("v1"), None]) {
        assert_eq!(image["imageManifest"].as_str().unwrap(), body, "byte-exact");
        assert_eq!(image["imageManifestMediaType"], IMAGE);
        assert_eq!(image["repositoryName"], repo);
        assert_eq!(image["imageId"]["imageDigest"], a.as_str());
        assert_eq!(image["imageId"]["imageTag"].as_str(), tag);
    }
    let codes: Vec<&str> =
        got["failures"].as_array().unwrap().iter().map(|f| f["failureCode"].as_str().unwrap()).collect();
    assert_eq!(
        codes,
        ["ImageNotFound", "InvalidImageDigest", "InvalidImageTag", "MissingDigestAndTag", "ImageTagDoesNotMatchDigest"]
    );
    assert_eq!(got["failures"][0]["imageId"], json!({"imageTag": "gone"}));

    t.server.app.registry().flush_pull_times().await;
    let described = ok(&t, "DescribeImages", json!({"repositoryName": repo})).await;
    for d in described["imageDetails"].as_array().unwrap() {
        let pulled = d.get("lastRecordedPullTime").is_some();
        assert_eq!(pulled, d["imageDigest"] == a.as_str(), "only what was answered is a pull: {d}");
    }

    let input = json!({"repositoryName": repo, "imageIds": [{"imageTag": "other"}], "acceptedMediaTypes": [DOCKER_V2]});
    let got = ok(&t, "BatchGetImage", input).await;
    // Berth converts nothing: the manifest as pushed, its own type named (as ECR answers one
    // it cannot convert), and a pull.
    assert_eq!(got["failures"], json!([]), "{got}");
    assert_eq!(got["images"][0]["imageManifestMediaType"], IMAGE, "{got}");
    assert_eq!(got["images"][0]["imageId"]["imageDigest"], other.as_str(), "{got}");
    t.server.app.registry().flush_pull_times().await;
    let described =
        ok(&t, "DescribeImages", json!({"repositoryName": repo, "imageIds": [{"imageDigest": other}]})).await;
    assert!(described["imageDetails"][0].get("lastRecordedPullTime").is_some(), "{described}");

    let none = json!({"repositoryName": repo, "imageIds": []});
    assert_eq!(refused(&t, "BatchGetImage", none).await.0, "InvalidParameterException");
    let empty_types = json!({"repositoryName": repo, "imageIds": [{"imageTag": "v1"}], "acceptedMediaTypes": []});
    assert_eq!(refused(&t, "BatchGetImage", empty_types).await.0, "InvalidParameterException");
    let missing = json!({"repositoryName": "ecr-images/none", "imageIds": [{"imageTag": "v1"}]});
    assert_eq!(refused(&t, "BatchGetImage", missing).await.0, "RepositoryNotFoundException");
    delete_repository(&t, repo).await;
    t.server.stop().await;
}

/// `BatchDeleteImage` as ECR: a tag goes alone while the image has another, and takes the
/// image with it when it was the last; a digest takes the image and its tags; a child of an
/// index is refused; unknown ids are failures.
#[tokio::test]
async fn batch_delete_image_deletes_the_image_with_its_last_tag() {
    let t = start().await;
    let repo = "ecr-images/delete";
    let (a, _) = image(&t, repo, Some("v1"), "delete-a").await;
    let body = image_manifest(&t, repo, "delete-a").await.to_string();
    push_bytes(&t, repo, Some("v2"), IMAGE, &body).await;
    let (b, _) = image(&t, repo, Some("b1"), "delete-b").await;
    let child = image(&t, repo, Some("arm"), "delete-child").await;
    let index = json!({"schemaVersion": 2, "mediaType": INDEX,
        "manifests": [{"mediaType": IMAGE, "digest": child.0, "size": child.1}]});
    let index_digest = push_bytes(&t, repo, Some("multi"), INDEX, &index.to_string()).await;

    // The last tag of an image an index lists: the tag goes, the image stays with the index.
    let answer = ok(&t, "BatchDeleteImage", json!({"repositoryName": repo, "imageIds": [{"imageTag": "arm"}]})).await;
    assert_eq!(ids(&answer), [(child.0.clone(), Some("arm".to_owned()))]);
    assert_eq!((manifest_status(&t, repo, "arm").await, manifest_status(&t, repo, &child.0).await), (404, 200));

    let answer = ok(&t, "BatchDeleteImage", json!({"repositoryName": repo, "imageIds": [{"imageTag": "v1"}]})).await;
    assert_eq!(ids(&answer), [(a.clone(), Some("v1".to_owned()))]);
    assert_eq!(answer["failures"], json!([]));
    assert_eq!(manifest_status(&t, repo, &a).await, 200, "v2 still names it");
    assert_eq!(manifest_status(&t, repo, "v1").await, 404);

    let answer = ok(&t, "BatchDeleteImage", json!({"repositoryName": repo, "imageIds": [{"imageTag": "v2"}]})).await;
    assert_eq!(ids(&answer), [(a.clone(), Some("v2".to_owned()))]);
    assert_eq!(manifest_status(&t, repo, &a).await, 404, "its last tag took the image");
    // The store's events: each tag's deletion, then the image's.
    let meta = t.server.app.registry().meta.clone();
    let events: Vec<(String, Option<String>)> = meta
        .events(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.repository == repo && e.digest.as_deref() == Some(a.as_str()))
        .filter(|e| matches!(e.kind.as_str(), "tag.delete" | "manifest.delete"))
        .map(|e| (e.kind.as_str().to_owned(), e.tag))
        .collect();
    assert_eq!(
        events,
        [
            ("tag.delete".to_owned(), Some("v1".to_owned())),
            ("tag.delete".to_owned(), Some("v2".to_owned())),
            ("manifest.delete".to_owned(), None)
        ]
    );
    let listed = ok(&t, "ListImages", json!({"repositoryName": repo})).await;
    assert!(ids(&listed).iter().all(|(d, _)| d != &a), "{listed}");

    let input = json!({"repositoryName": repo, "imageIds": [
        {"imageDigest": b},
        {"imageDigest": child.0},
        {"imageTag": "nope"},
        {"imageDigest": index_digest, "imageTag": "b1"},
    ]});
    let answer = ok(&t, "BatchDeleteImage", input).await;
    assert_eq!(ids(&answer), [(b.clone(), None)]);
    let codes: Vec<&str> =
        answer["failures"].as_array().unwrap().iter().map(|f| f["failureCode"].as_str().unwrap()).collect();
    assert_eq!(codes, ["ImageReferencedByManifestList", "ImageNotFound", "ImageNotFound"], "{answer}");
    assert_eq!((manifest_status(&t, repo, &b).await, manifest_status(&t, repo, "b1").await), (404, 404));
    assert_eq!(manifest_status(&t, repo, &child.0).await, 200, "listed by the index: kept");

    let answer = ok(&t, "BatchDeleteImage", json!({"repositoryName": repo, "imageIds": [{"imageTag": "multi"}]})).await;
    assert_eq!(ids(&answer), [(index_digest.clone(), Some("multi".to_owned()))]);
    assert_eq!(manifest_status(&t, repo, &index_digest).await, 404);
    let answer =
        ok(&t, "BatchDeleteImage", json!({"repositoryName": repo, "imageIds": [{"imageDigest": child.0}]})).await;
    assert_eq!(ids(&answer), [(child.0.clone(), None)], "no index lists it any more");

    let too_many: Vec<Value> = (0..101).map(|i| json!({"imageTag": format!("t{i}")})).collect();
    let input = json!({"repositoryName": repo, "imageIds": too_many});
    assert_eq!(refused(&t, "BatchDeleteImage", input).await.0, "InvalidParameterException");
    let missing = json!({"repositoryName": "ecr-images/none", "imageIds": [{"imageTag": "v1"}]});
    assert_eq!(refused(&t, "BatchDeleteImage", missing).await.0, "RepositoryNotFoundException");
    delete_repository(&t, repo).await;
    t.server.stop().await;
}

/// `PutImage`: a manifest push answering `image`; the same again is
/// `ImageAlreadyExistsException`; a wrong `imageDigest`, a missing layer or child image, and
/// a tag held immutable (`PutImageTagMutability`) are refused by ECR's names.
#[tokio::test]
async fn put_image_pushes_checks_references_and_holds_immutable_tags() {
    let t = start().await;
    let repo = "ecr-images/put";
    let manifest = image_manifest(&t, repo, "put-a").await.to_string();
    let digest = sha256(manifest.as_bytes());

    // The media type from the manifest's own mediaType.
    let put = ok(&t, "PutImage", json!({"repositoryName": repo, "imageManifest": manifest, "imageTag": "v1"})).await;
    let image = &put["image"];
    assert_eq!(image["imageId"], json!({"imageDigest": digest, "imageTag": "v1"}));
    assert_eq!(image["imageManifest"].as_str().unwrap(), manifest);
    assert_eq!(image["imageManifestMediaType"], IMAGE);
    assert_eq!(image["repositoryName"], repo);
    assert_eq!(manifest_status(&t, repo, "v1").await, 200);

    let again = json!({"repositoryName": repo, "imageManifest": manifest, "imageTag": "v1"});
    assert_eq!(refused(&t, "PutImage", again).await.0, "ImageAlreadyExistsException");
    let other_tag = json!({"repositoryName": repo, "imageManifest": manifest, "imageTag": "v2",
        "imageDigest": digest, "imageManifestMediaType": IMAGE});
    assert_eq!(ok(&t, "PutImage", other_tag).await["image"]["imageId"]["imageTag"], "v2");
    let wrong = json!({"repositoryName": repo, "imageManifest": manifest, "imageTag": "v3",
        "imageDigest": sha256(b"something else")});
    assert_eq!(refused(&t, "PutImage", wrong).await.0, "ImageDigestDoesNotMatchException");

    let layerless = json!({"schemaVersion": 2, "mediaType": IMAGE,
        "config": {"mediaType": CONFIG, "digest": sha256(b"never pushed"), "size": 12}, "layers": []});
    let input = json!({"repositoryName": repo, "imageManifest": layerless.to_string(), "imageTag": "nolayers"});
    assert_eq!(refused(&t, "PutImage", input).await.0, "LayersNotFoundException");
    let orphan_index = json!({"schemaVersion": 2, "mediaType": INDEX,
        "manifests": [{"mediaType": IMAGE, "digest": sha256(b"no such image"), "size": 100}]});
    let input = json!({"repositoryName": repo, "imageManifest": orphan_index.to_string(), "imageTag": "multi"});
    assert_eq!(refused(&t, "PutImage", input).await.0, "ReferencedImagesNotFoundException");
    assert_eq!(manifest_status(&t, repo, "multi").await, 404, "nothing stored");

    let set = ok(
        &t,
        "PutImageTagMutability",
        json!({"repositoryName": repo, "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
        "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "latest*"}]}),
    )
    .await;
    assert_eq!(set["repositoryName"], repo);
    assert_eq!(set["imageTagMutability"], "IMMUTABLE_WITH_EXCLUSION");
    assert_eq!(set["imageTagMutabilityExclusionFilters"], json!([{"filterType": "WILDCARD", "filter": "latest*"}]));
    assert_eq!(set["registryId"].as_str().unwrap().len(), 12);
    let moved = image_manifest(&t, repo, "put-b").await.to_string();
    let input = json!({"repositoryName": repo, "imageManifest": moved, "imageTag": "v1"});
    assert_eq!(refused(&t, "PutImage", input).await.0, "ImageTagAlreadyExistsException");
    assert_eq!(
        ok(&t, "BatchGetImage", json!({"repositoryName": repo, "imageIds": [{"imageTag": "v1"}]})).await["images"][0]["imageId"]
            ["imageDigest"],
        digest.as_str(),
        "v1 did not move"
    );
    let input = json!({"repositoryName": repo, "imageManifest": moved, "imageTag": "latest"});
    ok(&t, "PutImage", input).await;

    let (kind, message) =
        refused(&t, "PutImageTagMutability", json!({"repositoryName": repo, "imageTagMutability": "FROZEN"})).await;
    assert_eq!(kind, "InvalidParameterException");
    assert!(message.contains("imageTagMutability"), "{message}");
    let bad_filter = json!({"repositoryName": repo, "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
        "imageTagMutabilityExclusionFilters": [{"filterType": "REGEX", "filter": "x"}]});
    let (kind, message) = refused(&t, "PutImageTagMutability", bad_filter).await;
    assert_eq!(kind, "InvalidParameterException");
    assert!(message.contains("imageTagMutabilityExclusionFilters[0].filterType"), "{message}");
    let mutable = json!({"repositoryName": "ecr-images/none", "imageTagMutability": "MUTABLE"});
    assert_eq!(refused(&t, "PutImageTagMutability", mutable).await.0, "RepositoryNotFoundException");

    let huge = "x".repeat(4 * 1024 * 1024 + 1);
    let (kind, message) = refused(&t, "PutImage", json!({"repositoryName": repo, "imageManifest": huge})).await;
    assert_eq!(kind, "InvalidParameterException");
    assert!(message.contains("imageManifest"), "{message}");
    let missing = json!({"repositoryName": "ecr-images/none", "imageManifest": manifest, "imageTag": "v1"});
    assert_eq!(refused(&t, "PutImage", missing).await.0, "RepositoryNotFoundException");
    delete_repository(&t, repo).await;
    t.server.stop().await;
}

/// `ListImageReferrers`: the manifests whose subject is the digest, filtered by artifact
/// type, in pages.
#[tokio::test]
async fn list_image_referrers_by_artifact_type_in_pages() {
    let t = start().await;
    let repo = "ecr-images/referrers";
    let (subject, size) = image(&t, repo, Some("v1"), "ref-subject").await;
    let mut referrers = Vec::new();
    for (seed, kind) in [("ref-sig", "application/vnd.example.signature"), ("ref-sbom", "application/vnd.example.sbom")]
    {
        let mut m = image_manifest(&t, repo, seed).await;
        m["artifactType"] = json!(kind);
        m["subject"] = json!({"mediaType": IMAGE, "digest": subject, "size": size});
        m["annotations"] = json!({"org.example.seed": seed});
        referrers.push(push_bytes(&t, repo, None, IMAGE, &m.to_string()).await);
    }

    let all =
        ok(&t, "ListImageReferrers", json!({"repositoryName": repo, "subjectId": {"imageDigest": subject}})).await;
    let found: BTreeSet<&str> =
        all["referrers"].as_array().unwrap().iter().map(|r| r["digest"].as_str().unwrap()).collect();
    assert_eq!(found, referrers.iter().map(String::as_str).collect());
    let first = &all["referrers"][0];
    assert_eq!(first["mediaType"], IMAGE);
    assert_eq!(first["artifactStatus"], "ACTIVE");
    assert!(first["size"].as_u64().unwrap() > 0);
    assert!(first["annotations"]["org.example.seed"].is_string(), "{first}");

    let input = json!({"repositoryName": repo, "subjectId": {"imageDigest": subject},
        "filter": {"artifactTypes": ["application/vnd.example.sbom"]}});
    let sboms = ok(&t, "ListImageReferrers", input).await;
    assert_eq!(sboms["referrers"].as_array().unwrap().len(), 1);
    assert_eq!(sboms["referrers"][0]["digest"], referrers[1].as_str());

    let input = json!({"repositoryName": repo, "subjectId": {"imageDigest": subject}, "maxResults": 1});
    let page = ok(&t, "ListImageReferrers", input).await;
    assert_eq!(page["referrers"].as_array().unwrap().len(), 1);
    let token = page["nextToken"].as_str().expect("a second page");
    let input =
        json!({"repositoryName": repo, "subjectId": {"imageDigest": subject}, "maxResults": 1, "nextToken": token});
    let next = ok(&t, "ListImageReferrers", input).await;
    assert_eq!(next["referrers"].as_array().unwrap().len(), 1);
    assert_ne!(next["referrers"][0]["digest"], page["referrers"][0]["digest"]);
    assert!(next.get("nextToken").is_none(), "{next}");

    let input = json!({"repositoryName": repo, "subjectId": {"imageDigest": subject}, "maxResults": 51});
    assert_eq!(refused(&t, "ListImageReferrers", input).await.0, "InvalidParameterException");
    let input = json!({"repositoryName": repo, "subjectId": {"imageDigest": "v1"}});
    let (kind, message) = refused(&t, "ListImageReferrers", input).await;
    assert_eq!(kind, "InvalidParameterException");
    assert!(message.contains("subjectId.imageDigest"), "{message}");
    let input = json!({"repositoryName": repo});
    let (kind, message) = refused(&t, "ListImageReferrers", input).await;
    assert_eq!(kind, "InvalidParameterException");
    assert!(message.contains("subjectId"), "{message}");
    delete_repository(&t, repo).await;
    t.server.stop().await;
}

const DAY: i64 = 86_400;

/// Lifecycle: put (ECR's checks), get, a preview (of the stored policy or of a text given)
/// then a run that expires exactly the previewed images; `lastEvaluatedAt` after the run;
/// delete; the not-found exceptions.
#[tokio::test]
async fn lifecycle_preview_then_run_expire_the_same_images() {
    let t = start().await;
    let repo = "ecr-images/lifecycle";
    let (old_a, _) = image(&t, repo, None, "lc-old-a").await;
    let (old_b, _) = image(&t, repo, Some("old"), "lc-old-b").await;
    let (fresh, _) = image(&t, repo, None, "lc-fresh").await;
    let name: berth_oci::RepoName = repo.parse().unwrap();
    let pulls: Vec<_> = [&old_a, &old_b].iter().map(|d| (name.clone(), d.parse().unwrap())).collect();
    let meta = t.server.app.registry().meta.clone();
    meta.record_pulls(&pulls, berth_storage::metadata::unix_now() - 60 * DAY).await.unwrap();
    let policy = json!({"rules": [{"rulePriority": 3, "description": "pulled long ago",
        "selection": {"tagStatus": "any", "countType": "sinceImagePulled", "countUnit": "days", "countNumber": 30},
        "action": {"type": "expire"}}]})
    .to_string();

    let (kind, message) = refused(&t, "GetLifecyclePolicyPreview", json!({"repositoryName": repo})).await;
    assert_eq!(kind, "LifecyclePolicyPreviewNotFoundException", "{message}");
    assert_eq!(
        refused(&t, "GetLifecyclePolicy", json!({"repositoryName": repo})).await.0,
        "LifecyclePolicyNotFoundException"
    );
    let started = json!({"repositoryName": repo});
    assert_eq!(refused(&t, "StartLifecyclePolicyPreview", started).await.0, "LifecyclePolicyNotFoundException");
    let short = json!({"repositoryName": repo, "lifecyclePolicyText": "{\"rules\":[]}"});
    let (kind, message) = refused(&t, "PutLifecyclePolicy", short).await;
    assert_eq!(kind, "InvalidParameterException");
    assert!(message.contains("lifecyclePolicyText"), "{message}");
    let bad = json!({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 0}, "action": {"type": "expire"}}]}).to_string();
    let (kind, message) =
        refused(&t, "PutLifecyclePolicy", json!({"repositoryName": repo, "lifecyclePolicyText": bad})).await;
    assert_eq!(kind, "InvalidParameterException");
    assert!(message.contains("lifecyclePolicyText"), "{message}");

    let put = ok(&t, "PutLifecyclePolicy", json!({"repositoryName": repo, "lifecyclePolicyText": policy})).await;
    assert_eq!(put["lifecyclePolicyText"], policy.as_str());
    assert_eq!(put["repositoryName"], repo);
    assert_eq!(put["registryId"].as_str().unwrap().len(), 12);
    let got = ok(&t, "GetLifecyclePolicy", json!({"repositoryName": repo})).await;
    assert_eq!(got["lifecyclePolicyText"], policy.as_str());
    assert!(got.get("lastEvaluatedAt").is_none(), "never run: {got}");

    let started = ok(&t, "StartLifecyclePolicyPreview", json!({"repositoryName": repo})).await;
    assert_eq!(started["status"], "COMPLETE");
    assert_eq!(started["lifecyclePolicyText"], policy.as_str());
    let preview = ok(&t, "GetLifecyclePolicyPreview", json!({"repositoryName": repo})).await;
    assert_eq!(preview["status"], "COMPLETE");
    assert_eq!(preview["lifecyclePolicyText"], policy.as_str());
    assert_eq!(preview["summary"]["expiringImageTotalCount"], 2);
    let results = preview["previewResults"].as_array().unwrap();
    let previewed: BTreeSet<String> = results.iter().map(|r| r["imageDigest"].as_str().unwrap().to_owned()).collect();
    assert_eq!(previewed, BTreeSet::from([old_a.clone(), old_b.clone()]));
    for r in results {
        assert_eq!(r["action"], json!({"type": "EXPIRE"}));
        assert_eq!(r["appliedRulePriority"], 3);
        assert!(r["imagePushedAt"].as_f64().is_some(), "{r}");
    }
    let tagged =
        ok(&t, "GetLifecyclePolicyPreview", json!({"repositoryName": repo, "filter": {"tagStatus": "TAGGED"}})).await;
    assert_eq!(tagged["previewResults"].as_array().unwrap().len(), 1);
    assert_eq!(tagged["previewResults"][0]["imageTags"], json!(["old"]));
    let by_id = json!({"repositoryName": repo, "imageIds": [{"imageDigest": old_a}]});
    let by_id = ok(&t, "GetLifecyclePolicyPreview", by_id).await;
    assert_eq!(by_id["previewResults"].as_array().unwrap().len(), 1);
    let first = ok(&t, "GetLifecyclePolicyPreview", json!({"repositoryName": repo, "maxResults": 1})).await;
    let token = first["nextToken"].as_str().expect("a second page").to_owned();
    let second =
        ok(&t, "GetLifecyclePolicyPreview", json!({"repositoryName": repo, "maxResults": 1, "nextToken": token})).await;
    assert!(second.get("nextToken").is_none());
    assert_ne!(first["previewResults"][0]["imageDigest"], second["previewResults"][0]["imageDigest"]);
    let forged = json!({"repositoryName": repo, "nextToken": sha256(b"not in the preview")});
    assert_eq!(refused(&t, "GetLifecyclePolicyPreview", forged).await.0, "InvalidParameterException");

    // The run, through the admin API: exactly the previewed images go.
    let r = t.client.post(t.url(&format!("/api/v1/lifecycle/run?repository={repo}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let run: Value = r.json().await.unwrap();
    let expired: BTreeSet<String> = run["runs"][0]["expired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["imageDigest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(expired, previewed, "{run}");
    for d in &previewed {
        assert_eq!(manifest_status(&t, repo, d).await, 404);
    }
    assert_eq!(manifest_status(&t, repo, &fresh).await, 200);
    let got = ok(&t, "GetLifecyclePolicy", json!({"repositoryName": repo})).await;
    assert!(got["lastEvaluatedAt"].as_f64().is_some(), "{got}");

    // A preview of a text given does not need a stored policy's consent, and replaces the last.
    let keep_one = json!({"rules": [{"rulePriority": 1,
        "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 5},
        "action": {"type": "expire"}}]})
    .to_string();
    let started =
        ok(&t, "StartLifecyclePolicyPreview", json!({"repositoryName": repo, "lifecyclePolicyText": keep_one})).await;
    assert_eq!(started["lifecyclePolicyText"], keep_one.as_str());
    let preview = ok(&t, "GetLifecyclePolicyPreview", json!({"repositoryName": repo})).await;
    assert_eq!(preview["previewResults"], json!([]));
    assert_eq!(preview["summary"]["expiringImageTotalCount"], 0);

    let deleted = ok(&t, "DeleteLifecyclePolicy", json!({"repositoryName": repo})).await;
    assert_eq!(deleted["lifecyclePolicyText"], policy.as_str());
    assert!(deleted["lastEvaluatedAt"].as_f64().is_some());
    assert_eq!(
        refused(&t, "DeleteLifecyclePolicy", json!({"repositoryName": repo})).await.0,
        "LifecyclePolicyNotFoundException"
    );
    assert_eq!(
        refused(&t, "GetLifecyclePolicy", json!({"repositoryName": repo})).await.0,
        "LifecyclePolicyNotFoundException"
    );
    let missing = json!({"repositoryName": "ecr-images/none"});
    assert_eq!(refused(&t, "GetLifecyclePolicy", missing.clone()).await.0, "RepositoryNotFoundException");
    assert_eq!(refused(&t, "GetLifecyclePolicyPreview", missing).await.0, "RepositoryNotFoundException");
    delete_repository(&t, repo).await;
    t.server.stop().await;
}

/// With authentication on, each operation is decided by its own ECR action on the
/// repository: a user allowed to read images lists and pulls them, and is refused
/// (`AccessDeniedException`, 403) every change, which then does not happen; a user with no
/// policy is refused even the listing.
#[tokio::test]
async fn each_operation_is_allowed_by_its_own_action() {
    use crate::ecr_common::{ADMIN_PW, basic};
    let (t, admin) = crate::ecr_common::start().await;
    let repo = "ecr-images/denied";
    let config = b"{\"seed\":\"denied\"}";
    let r = t
        .client
        .post(t.url(&format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(config))))
        .header("authorization", basic("admin", ADMIN_PW))
        .body(config.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let manifest = json!({"schemaVersion": 2, "mediaType": IMAGE,
        "config": {"mediaType": CONFIG, "digest": sha256(config), "size": config.len()}, "layers": []})
    .to_string();
    let (status, body) =
        admin.call("PutImage", &json!({"repositoryName": repo, "imageManifest": manifest, "imageTag": "v1"})).await;
    assert_eq!(status, 200, "{body}");

    let reader = admin
        .for_user(
            "image-reader",
            Some(json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Action": ["ecr:ListImages", "ecr:DescribeImages", "ecr:BatchGetImage"], "Resource": "*"}]})),
        )
        .await;
    let ids = json!({"repositoryName": repo, "imageIds": [{"imageTag": "v1"}]});
    assert_eq!(reader.call("ListImages", &json!({"repositoryName": repo})).await.0, 200);
    assert_eq!(reader.call("DescribeImages", &ids).await.0, 200);
    let (status, got) = reader.call("BatchGetImage", &ids).await;
    assert_eq!((status, got["images"][0]["imageManifest"].as_str()), (200, Some(manifest.as_str())));

    let other = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": []}).to_string();
    let policy = json!({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "untagged",
        "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}}]})
    .to_string();
    let refused_ops = [
        ("BatchDeleteImage", ids.clone()),
        ("PutImage", json!({"repositoryName": repo, "imageManifest": other, "imageTag": "v2"})),
        ("PutImageTagMutability", json!({"repositoryName": repo, "imageTagMutability": "IMMUTABLE"})),
        ("PutLifecyclePolicy", json!({"repositoryName": repo, "lifecyclePolicyText": policy})),
        ("StartLifecyclePolicyPreview", json!({"repositoryName": repo, "lifecyclePolicyText": policy})),
        ("ListImageReferrers", json!({"repositoryName": repo, "subjectId": {"imageDigest": sha256(b"x")}})),
    ];
    for (op, input) in &refused_ops {
        let (status, body) = reader.call(op, input).await;
        assert_eq!((status, body["__type"].as_str()), (403, Some("AccessDeniedException")), "{op}: {body}");
        let action = format!("ecr:{op}");
        assert!(body["message"].as_str().unwrap().contains(&action), "{op}: {body}");
    }
    let (status, listed) = admin.call("ListImages", &json!({"repositoryName": repo})).await;
    assert_eq!(status, 200);
    assert_eq!(
        listed["imageIds"],
        json!([{"imageDigest": sha256(manifest.as_bytes()), "imageTag": "v1"}]),
        "unchanged"
    );
    assert_eq!(
        admin.call("GetLifecyclePolicy", &json!({"repositoryName": repo})).await.1["__type"],
        "LifecyclePolicyNotFoundException"
    );
    assert_eq!(
        admin.call("GetLifecyclePolicyPreview", &json!({"repositoryName": repo})).await.1["__type"],
        "LifecyclePolicyPreviewNotFoundException"
    );

    let nobody = admin.for_user("no-policy", None).await;
    let (status, body) = nobody.call("ListImages", &json!({"repositoryName": repo})).await;
    assert_eq!((status, body["__type"].as_str()), (403, Some("AccessDeniedException")), "{body}");
    let (status, _) = admin.call("BatchDeleteImage", &ids).await;
    assert_eq!(status, 200);
    let r = t
        .client
        .delete(t.url(&format!("/api/v1/repositories?name={repo}&force=true")))
        .header("authorization", basic("admin", ADMIN_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    t.server.stop().await;
}
