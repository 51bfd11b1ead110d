//! ECR's layer operations over real HTTP (authentication off): a layer pushed in parts with
//! `InitiateLayerUpload`/`UploadLayerPart`/`CompleteLayerUpload`, fetched byte for byte with
//! its `GetDownloadUrlForLayer` URL and served to the OCI API; the parts' order and length,
//! the completion's refusals, `BatchCheckLayerAvailability`, and the download URL's
//! signature, expiry and binding to one repository and digest.

use base64::Engine as _;
use berth_auth::token::TokenUse;
use berth_oci::{Digest, RepoName};
use serde_json::{Value, json};

use crate::support::*;

const TARGET: &str = "AmazonEC2ContainerRegistry_V20150921.";

/// One ECR call: the status and the JSON answer.
async fn ecr(t: &TestServer, op: &str, input: Value) -> (u16, Value) {
    let r = t
        .client
        .post(t.url("/"))
        .header("x-amz-target", format!("{TARGET}{op}"))
        .header("content-type", "application/x-amz-json-1.1")
        .body(input.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{op} answered {status}: {text}")))
}

/// The exception an ECR call answered with.
fn kind(body: &Value) -> &str {
    body["__type"].as_str().unwrap_or_default()
}

async fn initiate(t: &TestServer, repo: &str) -> String {
    let (status, body) = ecr(t, "InitiateLayerUpload", json!({"repositoryName": repo})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["partSize"], 20 * 1024 * 1024);
    body["uploadId"].as_str().unwrap().to_owned()
}

async fn part(t: &TestServer, repo: &str, id: &str, first: u64, last: u64, bytes: &[u8]) -> (u16, Value) {
    let blob = base64::engine::general_purpose::STANDARD.encode(bytes);
    let input = json!({"repositoryName": repo, "uploadId": id, "partFirstByte": first, "partLastByte": last,
        "layerPartBlob": blob});
    ecr(t, "UploadLayerPart", input).await
}

async fn complete(t: &TestServer, repo: &str, id: &str, digest: &str) -> (u16, Value) {
    ecr(t, "CompleteLayerUpload", json!({"repositoryName": repo, "uploadId": id, "layerDigests": [digest]})).await
}

/// A layer pushed through ECR's operations in one part; its digest.
async fn push_layer(t: &TestServer, repo: &str, bytes: &[u8]) -> String {
    let id = initiate(t, repo).await;
    let (status, body) = part(t, repo, &id, 0, bytes.len() as u64 - 1, bytes).await;
    assert_eq!(status, 200, "{body}");
    let digest = sha256(bytes);
    let (status, body) = complete(t, repo, &id, &digest).await;
    assert_eq!(status, 200, "{body}");
    digest
}

async fn download_url(t: &TestServer, repo: &str, digest: &str) -> String {
    let (status, body) = ecr(t, "GetDownloadUrlForLayer", json!({"repositoryName": repo, "layerDigest": digest})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["layerDigest"], digest);
    body["downloadUrl"].as_str().unwrap().to_owned()
}

/// A GET of a download URL with no credentials: status and body.
async fn fetch(t: &TestServer, url: &str) -> (u16, Vec<u8>) {
    let r = t.client.get(url).send().await.unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

fn oci_message(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or_default();
    v["errors"][0]["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_layer_pushed_in_three_parts_downloads_and_makes_an_image() {
    let t = TestServer::start().await;
    let repo = "ecr/layers";
    let layer = data(300_001, 7);
    let id = initiate(&t, repo).await;
    let cuts = [0, 100_000, 200_000, layer.len()];
    for w in cuts.windows(2) {
        let (status, body) = part(&t, repo, &id, w[0] as u64, w[1] as u64 - 1, &layer[w[0]..w[1]]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["lastByteReceived"], w[1] as u64 - 1);
        assert_eq!(body["uploadId"], id);
        assert_eq!(body["repositoryName"], repo);
        assert!(body["registryId"].as_str().is_some_and(|r| r.len() == 12), "{body}");
    }
    let digest = sha256(&layer);
    let (status, body) = complete(&t, repo, &id, &digest).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["layerDigest"], digest);
    assert_eq!(body["uploadId"], id);

    let url = download_url(&t, repo, &digest).await;
    assert!(url.starts_with(&t.server.url()), "a URL on Berth itself: {url}");
    let (status, bytes) = fetch(&t, &url).await;
    assert_eq!(status, 200);
    assert!(bytes == layer, "the layer comes back byte for byte");
    let r = t.client.get(&url).header("range", "bytes=100-199").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &layer[100..200]);

    // The OCI API sees the layer: a manifest pushed over it is pulled with it.
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let config_digest = sha256(&config);
    let r = t
        .client
        .post(t.url(&format!("/v2/{repo}/blobs/uploads/?digest={config_digest}")))
        .body(config.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": layer.len()}]
    })
    .to_string();
    let r = t
        .client
        .put(t.url(&format!("/v2/{repo}/manifests/v1")))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let r = t.client.get(t.url(&format!("/v2/{repo}/manifests/v1"))).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), manifest);
    let r = t.client.get(t.url(&format!("/v2/{repo}/blobs/{digest}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == layer);
}

#[tokio::test]
async fn parts_must_follow_on_and_have_their_length() {
    let t = TestServer::start().await;
    let repo = "ecr/parts";
    let id = initiate(&t, repo).await;
    // Nothing received: a part that does not start at 0.
    let (status, body) = part(&t, repo, &id, 5, 9, b"hello").await;
    assert_eq!((status, kind(&body)), (400, "InvalidLayerPartException"), "{body}");
    assert!(body.get("lastValidByteReceived").is_none(), "no byte received yet: {body}");
    assert_eq!(body["uploadId"], id);
    let (status, body) = part(&t, repo, &id, 0, 9, b"0123456789").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["lastByteReceived"], 9);
    // A part again at 5: out of order, the upload says where it stands.
    let (status, body) = part(&t, repo, &id, 5, 9, b"56789").await;
    assert_eq!((status, kind(&body)), (400, "InvalidLayerPartException"), "{body}");
    assert_eq!(body["lastValidByteReceived"], 9);
    assert_eq!(body["repositoryName"], repo);
    assert!(body["message"].as_str().unwrap().contains("starts at 10"), "{body}");
    // The right start, the wrong length.
    let (status, body) = part(&t, repo, &id, 10, 20, b"abcde").await;
    assert_eq!((status, kind(&body)), (400, "InvalidLayerPartException"), "{body}");
    assert_eq!(body["lastValidByteReceived"], 9);
    assert!(body["message"].as_str().unwrap().contains("5 bytes"), "{body}");
    let (status, body) = part(&t, repo, &id, 10, 9, b"").await;
    assert_eq!((status, kind(&body)), (400, "InvalidLayerPartException"), "an empty part: {body}");
    // Nothing of the refused parts was kept.
    let (status, body) = part(&t, repo, &id, 10, 14, b"abcde").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = complete(&t, repo, &id, &sha256(b"0123456789abcde")).await;
    assert_eq!(status, 200, "{body}");

    // Not base64; negative positions; an upload that does not exist, or of another repository.
    let other = initiate(&t, repo).await;
    let bad = json!({"repositoryName": repo, "uploadId": other, "partFirstByte": 0, "partLastByte": 0,
        "layerPartBlob": "!!"});
    let (status, body) = ecr(&t, "UploadLayerPart", bad).await;
    assert_eq!((status, kind(&body)), (400, "InvalidParameterException"), "{body}");
    let unknown = "0b9f4d4e-8f4e-4d7a-9a51-5d1a3c7c2b10";
    let (status, body) = part(&t, repo, unknown, 0, 0, b"x").await;
    assert_eq!((status, kind(&body)), (400, "UploadNotFoundException"), "{body}");
    assert!(body["message"].as_str().unwrap().contains(unknown), "{body}");
    let (status, body) = part(&t, "ecr/other", &other, 0, 0, b"x").await;
    assert_eq!((status, kind(&body)), (400, "UploadNotFoundException"), "{body}");
    let (status, body) = complete(&t, repo, unknown, &sha256(b"x")).await;
    assert_eq!((status, kind(&body)), (400, "UploadNotFoundException"), "{body}");
    let (status, body) = ecr(
        &t,
        "UploadLayerPart",
        json!({"repositoryName": repo, "uploadId": other, "partFirstByte": -1, "partLastByte": 0, "layerPartBlob": "eA=="}),
    )
    .await;
    assert_eq!((status, kind(&body)), (400, "InvalidParameterException"), "{body}");
}

#[tokio::test]
async fn completing_refuses_a_wrong_digest_an_empty_upload_and_a_layer_the_repository_has() {
    let t = TestServer::start().await;
    let repo = "ecr/complete";
    // Empty: refused, and the upload stays to receive its parts.
    let id = initiate(&t, repo).await;
    let (status, body) = complete(&t, repo, &id, &sha256(b"layer")).await;
    assert_eq!((status, kind(&body)), (400, "EmptyUploadException"), "{body}");
    let (status, body) = part(&t, repo, &id, 0, 4, b"layer").await;
    assert_eq!(status, 200, "{body}");
    // The wrong digest: InvalidLayerException, and the upload is gone.
    let (status, body) = complete(&t, repo, &id, &sha256(b"other")).await;
    assert_eq!((status, kind(&body)), (400, "InvalidLayerException"), "{body}");
    let (status, body) = part(&t, repo, &id, 5, 5, b"x").await;
    assert_eq!((status, kind(&body)), (400, "UploadNotFoundException"), "{body}");
    // One digest, and a digest.
    let (status, body) = ecr(
        &t,
        "CompleteLayerUpload",
        json!({"repositoryName": repo, "uploadId": id, "layerDigests": [sha256(b"a"), sha256(b"b")]}),
    )
    .await;
    assert_eq!((status, kind(&body)), (400, "InvalidParameterException"), "{body}");
    let (status, body) = complete(&t, repo, &id, "sha256:xyz").await;
    assert_eq!((status, kind(&body)), (400, "InvalidParameterException"), "{body}");

    // A layer the repository has: LayerAlreadyExistsException, the second upload discarded.
    let digest = push_layer(&t, repo, b"layer").await;
    let again = initiate(&t, repo).await;
    let (status, body) = part(&t, repo, &again, 0, 4, b"layer").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = complete(&t, repo, &again, &digest).await;
    assert_eq!((status, kind(&body)), (400, "LayerAlreadyExistsException"), "{body}");
    let (status, body) = part(&t, repo, &again, 5, 5, b"x").await;
    assert_eq!((status, kind(&body)), (400, "UploadNotFoundException"), "{body}");
    // Another repository may complete the same layer: it is its own.
    assert_eq!(push_layer(&t, "ecr/complete2", b"layer").await, digest);
}

#[tokio::test]
async fn batch_check_reports_available_missing_and_malformed_digests() {
    let t = TestServer::start().await;
    let repo = "ecr/check";
    let here = push_layer(&t, repo, b"available layer").await;
    let missing = sha256(b"never pushed");
    let input = json!({"repositoryName": repo, "layerDigests": [here, missing, "sha256:not-hex"]});
    let (status, body) = ecr(&t, "BatchCheckLayerAvailability", input).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["layers"],
        json!([{"layerDigest": here, "layerAvailability": "AVAILABLE", "layerSize": b"available layer".len()}])
    );
    let failures = body["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2, "{body}");
    assert_eq!(
        (&failures[0]["layerDigest"], &failures[0]["failureCode"]),
        (&json!(missing), &json!("MissingLayerDigest"))
    );
    assert_eq!(
        (&failures[1]["layerDigest"], &failures[1]["failureCode"]),
        (&json!("sha256:not-hex"), &json!("InvalidLayerDigest")),
        "in the request's order"
    );
    assert!(failures.iter().all(|f| f["failureReason"].as_str().is_some_and(|r| !r.is_empty())));

    // A digest of another repository is missing here.
    let (status, body) =
        ecr(&t, "BatchCheckLayerAvailability", json!({"repositoryName": "ecr/elsewhere-none", "layerDigests": [here]}))
            .await;
    assert_eq!((status, kind(&body)), (400, "RepositoryNotFoundException"), "{body}");
    push_layer(&t, "ecr/elsewhere", b"another layer").await;
    let (status, body) =
        ecr(&t, "BatchCheckLayerAvailability", json!({"repositoryName": "ecr/elsewhere", "layerDigests": [here]}))
            .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["failures"][0]["failureCode"], "MissingLayerDigest");
    assert_eq!(body["layers"], json!([]));

    // ECR's bounds: 1 to 100 digests.
    let (status, body) =
        ecr(&t, "BatchCheckLayerAvailability", json!({"repositoryName": repo, "layerDigests": []})).await;
    assert_eq!((status, kind(&body)), (400, "InvalidParameterException"), "{body}");
    let many: Vec<String> = (0..101).map(|i| sha256(&[i as u8])).collect();
    let (status, body) =
        ecr(&t, "BatchCheckLayerAvailability", json!({"repositoryName": repo, "layerDigests": many})).await;
    assert_eq!((status, kind(&body)), (400, "InvalidParameterException"), "{body}");
    assert!(body["message"].as_str().unwrap().contains("layerDigests"), "{body}");
}

#[tokio::test]
async fn download_urls_are_signed_expire_and_fetch_only_their_layer() {
    let t = TestServer::start().await;
    let repo = "ecr/download";
    let a = push_layer(&t, repo, b"layer a").await;
    let b = push_layer(&t, repo, b"layer b").await;
    push_layer(&t, "ecr/download2", b"layer a").await;
    let url = download_url(&t, repo, &a).await;
    assert_eq!(fetch(&t, &url).await, (200, b"layer a".to_vec()));

    // Unknown layer and repository.
    let (status, body) =
        ecr(&t, "GetDownloadUrlForLayer", json!({"repositoryName": repo, "layerDigest": sha256(b"none")})).await;
    assert_eq!((status, kind(&body)), (400, "LayersNotFoundException"), "{body}");
    let (status, body) =
        ecr(&t, "GetDownloadUrlForLayer", json!({"repositoryName": "ecr/nothing", "layerDigest": a})).await;
    assert_eq!((status, kind(&body)), (400, "RepositoryNotFoundException"), "{body}");

    let (path, token) = url.split_once("?token=").unwrap();
    // Used for another digest, or another repository holding the same layer.
    let (status, body) = fetch(&t, &format!("{}?token={token}", path.replace(&a, &b))).await;
    assert_eq!(status, 403);
    assert!(oci_message(&body).contains("another repository or layer"), "{}", oci_message(&body));
    let (status, _) = fetch(&t, &format!("{}ecr/download2/{a}?token={token}", t.url("/_ecr/download/"))).await;
    assert_eq!(status, 403);
    // Tampered: a claim changed (the signature no longer holds), or the signature itself.
    let mut pieces: Vec<String> = token.split('.').map(str::to_owned).collect();
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&pieces[1]).unwrap();
    let forged = String::from_utf8(claims).unwrap().replace(&a, &b);
    pieces[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged);
    let (status, body) = fetch(&t, &format!("{}?token={}", path.replace(&a, &b), pieces.join("."))).await;
    assert_eq!(status, 403);
    assert!(oci_message(&body).contains("signature"), "{}", oci_message(&body));
    let mut flipped = token.to_owned();
    let last = flipped.pop().unwrap();
    flipped.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(fetch(&t, &format!("{path}?token={flipped}")).await.0, 403);
    // No token, or an oversized one.
    assert_eq!(fetch(&t, path).await.0, 403);
    assert_eq!(fetch(&t, &format!("{path}?token={}", "a".repeat(10_000))).await.0, 403);

    // Signed with the registry's key, but expired; or a token of another kind.
    let registry = t.server.app.registry().clone();
    let (r, d): (RepoName, Digest) = (repo.parse().unwrap(), a.parse().unwrap());
    let hour_ago = berth_storage::metadata::unix_now() - 3600;
    let expired = registry
        .auth
        .download_token(registry.meta.as_ref(), &r, &d, "", hour_ago, std::time::Duration::from_secs(1200))
        .await
        .unwrap();
    let (status, body) = fetch(&t, &format!("{path}?token={expired}")).await;
    assert_eq!(status, 403);
    assert!(oci_message(&body).contains("expired"), "{}", oci_message(&body));
    let (access, _) = registry.auth.issue(TokenUse::Access, None, Vec::new()).unwrap();
    let (status, body) = fetch(&t, &format!("{path}?token={access}")).await;
    assert_eq!(status, 403);
    assert!(oci_message(&body).contains("not a download token"), "{}", oci_message(&body));
    // And a download token is no bearer token.
    assert!(registry.auth.verify_access_token(token).is_err());

    // The URL still works after all that.
    assert_eq!(fetch(&t, &url).await, (200, b"layer a".to_vec()));
}

#[tokio::test]
async fn an_upload_to_a_repository_a_push_may_not_create_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.registry.create_on_push = false;
    let t = TestServer::start_with(dir, config).await;
    let (status, body) = ecr(&t, "InitiateLayerUpload", json!({"repositoryName": "ecr/absent"})).await;
    assert_eq!((status, kind(&body)), (400, "RepositoryNotFoundException"), "{body}");
    assert!(body["message"].as_str().unwrap().contains("'ecr/absent'"), "{body}");
    // Once the repository exists, the upload goes ahead.
    let (status, body) = ecr(&t, "CreateRepository", json!({"repositoryName": "ecr/absent"})).await;
    if status == 200 {
        push_layer(&t, "ecr/absent", b"now it exists").await;
    } else {
        // CreateRepository is another helper's part of issue 19: until it lands, the admin
        // API creates the repository.
        assert_eq!(kind(&body), "UnsupportedOperationException", "{body}");
        let r = t
            .client
            .post(t.url("/api/v1/repositories"))
            .body(json!({"repositoryName": "ecr/absent"}).to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text().await);
        push_layer(&t, "ecr/absent", b"now it exists").await;
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: eval \"$(bash .ci/postgres.sh start)\" (and S3: .ci/s3.sh), then cargo test -- --ignored"]
async fn on_replicas_parts_go_to_any_and_a_download_url_of_one_works_at_another() {
    let schema = crate::replicas::Schema::create().await;
    let blobs = tempfile::tempdir().unwrap();
    let mut rs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::replicas::replica_config(&schema, blobs.path(), &format!("replicas/{}", schema.name));
        config.data_dir = dir.path().to_owned();
        rs.push(TestServer::start_with(dir, config).await);
    }
    let repo = "ecr/replicated";
    let layer = data(250_000, 3);
    let id = initiate(&rs[0], repo).await;
    let cuts = [0, 100_000, 200_000, layer.len()];
    for (i, w) in cuts.windows(2).enumerate() {
        let (status, body) = part(&rs[i % 2], repo, &id, w[0] as u64, w[1] as u64 - 1, &layer[w[0]..w[1]]).await;
        assert_eq!(status, 200, "part {i}: {body}");
    }
    // A part sent again to the other replica is out of order there too.
    let (status, body) = part(&rs[1], repo, &id, 0, 99_999, &layer[..100_000]).await;
    assert_eq!((status, kind(&body)), (400, "InvalidLayerPartException"), "{body}");
    assert_eq!(body["lastValidByteReceived"], layer.len() - 1);
    let digest = sha256(&layer);
    let (status, body) = complete(&rs[1], repo, &id, &digest).await;
    assert_eq!(status, 200, "{body}");
    let url = download_url(&rs[0], repo, &digest).await;
    let elsewhere = url.replace(&rs[0].server.url(), &rs[1].server.url());
    assert_ne!(url, elsewhere);
    let (status, bytes) = fetch(&rs[1], &elsewhere).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert!(bytes == layer, "replica 1 serves replica 0's URL byte for byte");
    for r in rs {
        r.server.stop().await;
    }
    schema.drop().await;
}

#[tokio::test]
async fn with_authentication_on_a_download_url_needs_no_other_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.auth.enabled = true;
    config.auth.admin_password = Some("admin-password-for-ecr-layer-tests".to_owned().into());
    let t = TestServer::start_with(dir, config).await;
    let layer = b"a private layer".to_vec();
    let digest = sha256(&layer);
    let admin = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("admin:admin-password-for-ecr-layer-tests")
    );
    let r = t
        .client
        .post(t.url(&format!("/v2/ecr/private/blobs/uploads/?digest={digest}")))
        .header("authorization", &admin)
        .body(layer.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let anonymous = t.client.get(t.url(&format!("/v2/ecr/private/blobs/{digest}"))).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "the OCI API wants credentials");
    // The URL GetDownloadUrlForLayer gives (signed by this registry's key) is enough.
    let registry = t.server.app.registry().clone();
    let (r, d): (RepoName, Digest) = ("ecr/private".parse().unwrap(), digest.parse().unwrap());
    let token = registry
        .auth
        .download_token(
            registry.meta.as_ref(),
            &r,
            &d,
            "admin",
            berth_storage::metadata::unix_now(),
            std::time::Duration::from_secs(1200),
        )
        .await
        .unwrap();
    let url = format!("{}/_ecr/download/ecr/private/{digest}?token={token}", t.server.url());
    assert_eq!(fetch(&t, &url).await, (200, layer));
    // And is no bearer token for the OCI API.
    let r = t
        .client
        .get(t.url(&format!("/v2/ecr/private/blobs/{digest}")))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn each_layer_operation_is_decided_by_its_own_action_before_anything_changes() {
    let (t, admin) = crate::ecr_common::start().await;
    let repo = "ecr/guarded";
    // The administrator pushes a layer, signed, through all three upload operations.
    let (status, body) = admin.call("InitiateLayerUpload", &json!({"repositoryName": repo})).await;
    assert_eq!(status, 200, "{body}");
    let id = body["uploadId"].as_str().unwrap().to_owned();
    let blob = base64::engine::general_purpose::STANDARD.encode(b"guarded layer");
    let part_input = json!({"repositoryName": repo, "uploadId": id, "partFirstByte": 0, "partLastByte": 12,
        "layerPartBlob": blob});
    let digest = sha256(b"guarded layer");
    let complete_input = json!({"repositoryName": repo, "uploadId": id, "layerDigests": [digest]});

    // A puller may check and download, and not upload; a user with no policy may do nothing.
    let pull = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer"], "Resource": "*"}]});
    let puller = admin.for_user("puller", Some(pull)).await;
    let nobody = admin.for_user("nobody", None).await;
    for (client, op, input) in [
        (&puller, "InitiateLayerUpload", json!({"repositoryName": repo})),
        (&puller, "UploadLayerPart", part_input.clone()),
        (&nobody, "BatchCheckLayerAvailability", json!({"repositoryName": repo, "layerDigests": [digest]})),
        (&nobody, "GetDownloadUrlForLayer", json!({"repositoryName": repo, "layerDigest": digest})),
    ] {
        let (status, body) = client.call(op, &input).await;
        assert_eq!((status, kind(&body)), (403, "AccessDeniedException"), "{op}: {body}");
        let action = format!("ecr:{op}");
        assert!(body["message"].as_str().unwrap().contains(&action), "{op}: {body}");
    }
    // The refused part changed nothing: the upload still starts at byte 0.
    let (status, body) = admin.call("UploadLayerPart", &part_input).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = puller.call("CompleteLayerUpload", &complete_input).await;
    assert_eq!((status, kind(&body)), (403, "AccessDeniedException"), "{body}");
    let (status, body) = admin.call("CompleteLayerUpload", &complete_input).await;
    assert_eq!(status, 200, "the refused completion left the upload as it was: {body}");

    // The puller's own operations work, and its URL needs nothing more.
    let (status, body) =
        puller.call("BatchCheckLayerAvailability", &json!({"repositoryName": repo, "layerDigests": [digest]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["layers"][0]["layerAvailability"], "AVAILABLE");
    let (status, body) =
        puller.call("GetDownloadUrlForLayer", &json!({"repositoryName": repo, "layerDigest": digest})).await;
    assert_eq!(status, 200, "{body}");
    let url = body["downloadUrl"].as_str().unwrap().to_owned();
    assert_eq!(fetch(&t, &url).await, (200, b"guarded layer".to_vec()));

    // The URL is bound to the key that asked for it: disabling the key revokes it, as an S3
    // pre-signed URL dies with its access key; enabling the key again brings it back.
    let meta = t.server.app.registry().meta.clone();
    assert!(meta.set_access_key_disabled(&puller.key_id, true).await.unwrap());
    let (status, body) = fetch(&t, &url).await;
    assert_eq!(status, 403);
    assert!(oci_message(&body).contains("no longer valid"), "{}", oci_message(&body));
    assert!(meta.set_access_key_disabled(&puller.key_id, false).await.unwrap());
    assert_eq!(fetch(&t, &url).await.0, 200);
    // Disabling the user revokes it too.
    let r = admin
        .client
        .patch(format!("{}/api/v1/users/puller", admin.url))
        .header("authorization", crate::ecr_common::basic(&admin.key_id, &admin.secret))
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    assert_eq!(fetch(&t, &url).await.0, 403);
}
