//! Image details and last pull times: pulls (a manifest `GET` by tag or digest, cache hits
//! included; not a `HEAD`) are noted in memory and written in one batch at the flush (or
//! when the server stops), never one write per pull; the admin API's listing in ECR's
//! `DescribeImages` shape (tags, sizes, an index's children, a referrer's subject, filters,
//! pages) behind `ecr:DescribeImages`; and `berth images list`.

use std::time::Duration;

use base64::Engine as _;
use berth_registry::config::Config;
use serde_json::{Value, json};

use crate::support::*;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A server whose pull times are written only when a test flushes them (or at stop): the
/// background flush would otherwise come every five seconds, at a moment the test does
/// not choose.
async fn start_with(dir: tempfile::TempDir, config: Config) -> TestServer {
    TestServer::start_tuned(dir, config, &|s| s.pull_flush = Duration::from_secs(3600)).await
}

async fn start() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    start_with(dir, config).await
}

fn now() -> i64 {
    berth_storage::metadata::unix_now()
}

/// Pushes `bytes` as a blob of `repo` (monolithic); its digest.
async fn push_blob(t: &TestServer, repo: &str, bytes: &[u8], auth: Option<&str>) -> String {
    let digest = sha256(bytes);
    let mut req = t.client.post(t.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"))).body(bytes.to_vec());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    digest
}

/// Pushes `manifest` to `repo:reference`; its digest.
async fn put_manifest(t: &TestServer, repo: &str, reference: &str, manifest: &Value, auth: Option<&str>) -> String {
    let body = manifest.to_string();
    let media_type = manifest["mediaType"].as_str().unwrap();
    let mut req = t
        .client
        .put(t.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", media_type)
        .body(body.clone());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    sha256(body.as_bytes())
}

/// An image of a config and layers of the given sizes (content from `seed`), pushed to
/// `repo:reference`: its digest, its manifest's size, and its config and layers added up.
async fn push_image(
    t: &TestServer,
    repo: &str,
    reference: &str,
    seed: u8,
    layers: &[usize],
    auth: Option<&str>,
) -> (String, usize, usize) {
    let config = format!("{{\"architecture\":\"seed-{seed}\"}}").into_bytes();
    let config_digest = push_blob(t, repo, &config, auth).await;
    let mut descriptors = Vec::new();
    for (i, size) in layers.iter().enumerate() {
        let layer = data(*size, seed.wrapping_mul(16).wrapping_add(i as u8));
        let digest = push_blob(t, repo, &layer, auth).await;
        descriptors.push(json!({"mediaType": LAYER, "digest": digest, "size": size}));
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config_digest, "size": config.len()},
        "layers": descriptors,
    });
    let digest = put_manifest(t, repo, reference, &manifest, auth).await;
    (digest, manifest.to_string().len(), config.len() + layers.iter().sum::<usize>())
}

async fn get(t: &TestServer, repo: &str, reference: &str) -> reqwest::Response {
    let r = t
        .client
        .get(t.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r
}

async fn head(t: &TestServer, repo: &str, reference: &str) {
    let r = t
        .client
        .head(t.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// `GET /api/v1/repositories/<repo>/images<query>`: the status and the body.
async fn describe(t: &TestServer, repo: &str, query: &str, auth: Option<&str>) -> (u16, Value) {
    let mut req = t.client.get(t.url(&format!("/api/v1/repositories/{repo}/images{query}")));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The listing's entry for `digest`.
async fn detail(t: &TestServer, repo: &str, digest: &str) -> Value {
    let (status, body) = describe(t, repo, "", None).await;
    assert_eq!(status, 200, "{body}");
    body["imageDetails"].as_array().unwrap().iter().find(|d| d["imageDigest"] == digest).unwrap().clone()
}

/// Pulls by tag (twice: the second is a manifest cache hit) and by digest are noted, each
/// manifest once, and nothing reaches the store until the flush, which writes them in one
/// batch with the flush's time.
#[tokio::test]
async fn pulls_by_tag_and_by_digest_are_recorded_at_the_flush_not_per_request() {
    let t = start().await;
    let registry = t.server.app.registry().clone();
    let (by_tag, _, _) = push_image(&t, "pulls/app", "v1", 1, &[100], None).await;
    let (by_digest, _, _) = push_image(&t, "pulls/app", "v2", 2, &[100], None).await;
    let (never, _, _) = push_image(&t, "pulls/app", "v3", 3, &[100], None).await;
    for d in [&by_tag, &by_digest, &never] {
        assert!(detail(&t, "pulls/app", d).await.get("lastRecordedPullTime").is_none(), "never pulled yet");
    }

    for _ in 0..3 {
        assert_eq!(get(&t, "pulls/app", "v1").await.headers()["docker-content-digest"], by_tag.as_str());
    }
    get(&t, "pulls/app", &by_digest).await;
    assert_eq!(registry.pulls.pending(), 2, "each pulled manifest noted once, however often pulled");
    for d in [&by_tag, &by_digest] {
        let entry = detail(&t, "pulls/app", d).await;
        assert!(entry.get("lastRecordedPullTime").is_none(), "written before the flush: {entry}");
    }

    let before = now();
    assert_eq!(registry.pulls.flush(registry.meta.as_ref()).await.unwrap(), 2, "one batch of two");
    let after = now();
    assert_eq!(registry.pulls.pending(), 0);
    for d in [&by_tag, &by_digest] {
        let at = detail(&t, "pulls/app", d).await["lastRecordedPullTime"].as_i64().expect("a number of seconds");
        assert!((before..=after).contains(&at), "{at} not in {before}..={after}");
    }
    assert!(detail(&t, "pulls/app", &never).await.get("lastRecordedPullTime").is_none(), "not pulled");
    assert_eq!(registry.pulls.flush(registry.meta.as_ref()).await.unwrap(), 0, "nothing new to write");
    t.server.stop().await;
}

/// A `HEAD` (a client checking what a tag points at) is no pull, by tag or by digest.
#[tokio::test]
async fn a_head_records_no_pull() {
    let t = start().await;
    let registry = t.server.app.registry().clone();
    let (digest, _, _) = push_image(&t, "pulls/head", "v1", 4, &[100], None).await;
    head(&t, "pulls/head", "v1").await;
    head(&t, "pulls/head", &digest).await;
    assert_eq!(registry.pulls.pending(), 0, "a HEAD noted as a pull");
    assert_eq!(registry.pulls.flush(registry.meta.as_ref()).await.unwrap(), 0);
    assert!(detail(&t, "pulls/head", &digest).await.get("lastRecordedPullTime").is_none());
    t.server.stop().await;
}

/// The pulls noted since the last flush are written when the server stops: a restarted
/// server lists them.
#[tokio::test]
async fn pull_times_are_written_when_the_server_stops() {
    let t = start().await;
    let (digest, _, _) = push_image(&t, "pulls/stop", "v1", 5, &[100], None).await;
    let before = now();
    get(&t, "pulls/stop", "v1").await;
    let TestServer { server, dir, .. } = t;
    server.stop().await;
    let after = now();
    let config = config_in(dir.path());
    let t = start_with(dir, config).await;
    let at = detail(&t, "pulls/stop", &digest).await["lastRecordedPullTime"].as_i64().expect("written at stop");
    assert!((before..=after).contains(&at), "{at} not in {before}..={after}");
    t.server.stop().await;
}

/// Two platform images, an index of both and a signature of the index: tags, sizes (an
/// index as large as its largest child), media types, the index's children, the
/// signature's subject; filtered by tag status; in pages; an unknown repository.
#[tokio::test]
async fn the_listing_shows_tags_sizes_children_and_subjects() {
    let t = start().await;
    let repo = "details/app";
    let before = now();
    let (amd64, amd64_len, amd64_blobs) = push_image(&t, repo, "amd64", 10, &[3_000, 40_000], None).await;
    let (arm64, arm64_len, arm64_blobs) = push_image(&t, repo, "arm64", 11, &[5_000], None).await;
    let platform = |d: &str, size: usize, arch: &str| json!({"mediaType": OCI_MANIFEST, "digest": d, "size": size, "platform": {"os": "linux", "architecture": arch}});
    let children = [platform(&amd64, amd64_len, "amd64"), platform(&arm64, arm64_len, "arm64")];
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children});
    let index_digest = put_manifest(&t, repo, "v1", &index, None).await;
    // The same index under a second tag.
    put_manifest(&t, repo, "latest", &index, None).await;
    let empty = b"{}";
    let empty_digest = push_blob(&t, repo, empty, None).await;
    let signature = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_digest, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_digest, "size": 2}],
        "subject": {"mediaType": OCI_INDEX, "digest": index_digest, "size": index.to_string().len()},
    });
    let by_digest = sha256(signature.to_string().as_bytes());
    let signature_digest = put_manifest(&t, repo, &by_digest, &signature, None).await;
    let after = now();

    let (status, body) = describe(&t, repo, "", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("nextToken").is_none(), "one page: {body}");
    let details = body["imageDetails"].as_array().unwrap();
    let digests: Vec<&str> = details.iter().map(|d| d["imageDigest"].as_str().unwrap()).collect();
    let mut sorted = vec![amd64.as_str(), arm64.as_str(), index_digest.as_str(), signature_digest.as_str()];
    sorted.sort();
    assert_eq!(digests, sorted, "every manifest, ordered by digest");
    let of = |d: &str| details.iter().find(|x| x["imageDigest"] == d).unwrap().clone();

    let image = of(&amd64);
    assert_eq!(image["repositoryName"], repo);
    assert_eq!(image["registryId"].as_str().map(str::len), Some(12), "the account: {image}");
    assert_eq!(image["imageTags"], json!(["amd64"]));
    assert_eq!(image["imageSizeInBytes"].as_u64(), Some(amd64_blobs as u64), "config and layers: {image}");
    assert_eq!(image["imageManifestMediaType"], OCI_MANIFEST);
    assert_eq!(image["artifactMediaType"], CONFIG, "the config's media type, as ECR reports it");
    assert_eq!(image["imageStatus"], "ACTIVE");
    let pushed = image["imagePushedAt"].as_i64().expect("epoch seconds, a number");
    assert!((before..=after).contains(&pushed), "{pushed} not in {before}..={after}");
    assert!(image.get("children").is_none() && image.get("subjectManifestDigest").is_none(), "{image}");

    let idx = of(&index_digest);
    assert_eq!(idx["imageTags"], json!(["latest", "v1"]), "sorted");
    assert_eq!(idx["imageManifestMediaType"], OCI_INDEX);
    assert_eq!(
        idx["imageSizeInBytes"].as_u64(),
        Some(amd64_blobs.max(arm64_blobs) as u64),
        "an index: its largest child, as ECR has a manifest list: {idx}"
    );
    let mut kids = vec![amd64.clone(), arm64.clone()];
    kids.sort();
    assert_eq!(idx["children"], json!(kids));
    assert!(idx.get("artifactMediaType").is_none(), "{idx}");

    let sig = of(&signature_digest);
    assert_eq!(sig["subjectManifestDigest"], index_digest.as_str(), "a referrer names its subject");
    assert_eq!(sig["artifactMediaType"], "application/vnd.dev.cosign.artifact.sig.v1+json");
    assert!(sig.get("imageTags").is_none(), "untagged: no imageTags, as ECR answers: {sig}");
    assert_eq!(sig["imageSizeInBytes"].as_u64(), Some(2), "the empty config and layer are one blob");

    // Filters and pages.
    let listed = |body: &Value| -> Vec<String> {
        body["imageDetails"].as_array().unwrap().iter().map(|d| d["imageDigest"].as_str().unwrap().to_owned()).collect()
    };
    let (_, untagged) = describe(&t, repo, "?tagStatus=UNTAGGED", None).await;
    assert_eq!(listed(&untagged), std::slice::from_ref(&signature_digest));
    let (_, tagged) = describe(&t, repo, "?tagStatus=TAGGED", None).await;
    assert_eq!(listed(&tagged).len(), 3);
    let (_, any) = describe(&t, repo, "?tagStatus=ANY", None).await;
    assert_eq!(listed(&any), digests);
    let (mut pages, mut token) = (Vec::new(), String::new());
    loop {
        let query =
            if token.is_empty() { "?maxResults=3".to_owned() } else { format!("?maxResults=3&nextToken={token}") };
        let (status, page) = describe(&t, repo, &query, None).await;
        assert_eq!(status, 200, "{page}");
        pages.extend(listed(&page));
        match page["nextToken"].as_str() {
            Some(next) => token = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(pages, digests, "pages of 3 list each image once");

    for (query, says) in [
        ("?tagStatus=tagged", "TAGGED, UNTAGGED or ANY"),
        ("?maxResults=0", "from 1 to 1000"),
        ("?maxResults=1001", "from 1 to 1000"),
    ] {
        let (status, body) = describe(&t, repo, query, None).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.to_string().contains(says), "{query}: {body}");
    }
    let (status, body) = describe(&t, "details/none", "", None).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.to_string().contains("NAME_UNKNOWN"), "{body}");
    t.server.stop().await;
}

fn basic(user: &str, secret: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}")))
}

/// The listing is `ecr:DescribeImages` on the repository: a puller without it is refused;
/// a user granted it on one repository lists that one only.
#[tokio::test]
async fn describing_images_needs_ecr_describe_images() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.auth.enabled = true;
    config.auth.admin_password = Some("admin-password-for-tests".to_owned().into());
    let t = start_with(dir, config).await;
    let admin = basic("admin", "admin-password-for-tests");
    push_image(&t, "secure/app", "v1", 20, &[100], Some(&admin)).await;
    push_image(&t, "secure/other", "v1", 21, &[100], Some(&admin)).await;
    let app_arn = t.server.app.registry().auth.arns.repository("secure/app");
    let users = [
        ("puller", json!(["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]), "*".to_owned()),
        ("describer", json!(["ecr:DescribeImages"]), app_arn),
    ];
    for (name, actions, resource) in users {
        let r = t
            .client
            .post(t.url("/api/v1/users"))
            .header("authorization", &admin)
            .body(json!({"name": name, "password": format!("{name}-password")}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        let policy = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resource}]});
        let r = t
            .client
            .put(t.url(&format!("/api/v1/users/{name}/policies/main")))
            .header("authorization", &admin)
            .body(policy.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }
    let puller = basic("puller", "puller-password");
    let describer = basic("describer", "describer-password");
    let (status, body) = describe(&t, "secure/app", "", Some(&puller)).await;
    assert_eq!(status, 403, "pull rights are not DescribeImages: {body}");
    assert!(body.to_string().contains("ecr:DescribeImages"), "the refusal names the action: {body}");
    let (status, body) = describe(&t, "secure/app", "", Some(&describer)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["imageDetails"].as_array().map(Vec::len), Some(1));
    let (status, _) = describe(&t, "secure/other", "", Some(&describer)).await;
    assert_eq!(status, 403, "granted on secure/app only");
    let (status, _) = describe(&t, "secure/app", "", None).await;
    assert_eq!(status, 401, "no credentials");
    t.server.stop().await;
}

/// `berth images list`: the table (TAGS, DIGEST, SIZE, PUSHED, LAST PULLED) and ECR's JSON,
/// on the stores of the data folder; a repository that is not there is named.
#[tokio::test]
async fn images_list_command() {
    let t = start().await;
    let (digest, _, blobs) = push_image(&t, "cli/app", "v1", 30, &[2_000], None).await;
    get(&t, "cli/app", "v1").await;
    let registry = t.server.app.registry().clone();
    registry.pulls.flush(registry.meta.as_ref()).await.unwrap();
    let berth = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .args(["--data-dir", t.dir.path().to_str().unwrap()])
            .env("BERTH_AUTH__ENABLED", "false")
            .env("BERTH_LOG__LEVEL", "warn")
            .env_remove("BERTH_CONFIG")
            .output()
            .unwrap()
    };
    let o = berth(&["images", "list", "--repository", "cli/app"]);
    assert!(o.status.success(), "{o:?}");
    let text = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let columns: Vec<&str> = lines[0].split("  ").filter(|c| !c.is_empty()).map(str::trim).collect();
    assert_eq!(columns, ["TAGS", "DIGEST", "SIZE", "PUSHED", "LAST PULLED"], "{text}");
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[1].starts_with("v1 ") && lines[1].contains(&digest), "{text}");
    assert!(!lines[1].ends_with("never"), "the flushed pull shows: {text}");

    let o = berth(&["images", "list", "--repository", "cli/app", "--json"]);
    assert!(o.status.success(), "{o:?}");
    let body: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(body["imageDetails"][0]["imageDigest"], digest.as_str());
    assert_eq!(body["imageDetails"][0]["imageSizeInBytes"].as_u64(), Some(blobs as u64));
    assert!(body["imageDetails"][0]["lastRecordedPullTime"].is_i64(), "{body}");

    let o = berth(&["images", "list", "--repository", "cli/none"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("no repository cli/none"), "{o:?}");
    let o = berth(&["images", "list", "--repository", "cli/app", "--tag-status", "tagged"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tag-status: tagStatus \"tagged\": give TAGGED"), "{o:?}");
    t.server.stop().await;
}
