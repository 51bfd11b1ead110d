//! What a client may make Berth hold or do in one request is bounded: scopes per token
//! request, open upload sessions per repository and per principal, references per manifest,
//! and the size of a referrers answer. Each bound answers with an error that names it (or,
//! for listings, a `Link` to the rest) instead of growing without end.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::*;

const ADMIN_PW: &str = "admin-password-for-bounds";

fn basic(user: &str, secret: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}")))
}

async fn error_code(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    let e = &body["errors"][0];
    (status, e["code"].as_str().unwrap_or_default().to_owned(), e["message"].as_str().unwrap_or_default().to_owned())
}

/// Before: the token service took any number of scopes, policy-checked each, and issued a
/// token (104 KB for a few hundred) that its own verifier then refused as too long.
#[tokio::test]
async fn token_requests_name_a_bounded_number_of_resources() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config_in(dir.path());
    c.auth.enabled = true;
    c.auth.admin_password = Some(ADMIN_PW.to_owned().into());
    let t = TestServer::start_with(dir, c).await;
    let long = |i: usize| format!("{:0>250}/{i:02}", "n");
    let token_url = |n: usize| {
        let mut url = reqwest::Url::parse(&t.url("/token")).unwrap();
        url.query_pairs_mut().append_pair("service", "berth");
        for i in 0..n {
            url.query_pairs_mut().append_pair("scope", &format!("repository:{}:pull,push,delete", long(i)));
        }
        url
    };
    // One too many: refused up front, saying how many may be asked for.
    let r = t.client.get(token_url(33)).header("authorization", basic("admin", ADMIN_PW)).send().await.unwrap();
    let (status, _, message) = error_code(r).await;
    assert_eq!(status, 400);
    assert!(message.contains("at most 32 resources"), "{message}");
    // The most allowed, with the longest names and every action: the token is usable.
    let r = t.client.get(token_url(32)).header("authorization", basic("admin", ADMIN_PW)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    assert_eq!(token.split('.').nth(1).map(|p| p.len() > 8_000), Some(true), "the grant is in the token");
    let r = t.client.get(t.url(&format!("/v2/{}/tags/list", long(31)))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(error_code(r).await.1, "NAME_UNKNOWN", "the token verifies and grants");
}

/// Before: every `POST .../blobs/uploads/` made a session row that stayed for
/// `uploads.max_age` (24 h), without bound.
#[tokio::test]
async fn open_upload_sessions_are_bounded_per_repository_and_principal() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config_in(dir.path());
    c.uploads.max_open_per_repository = 3;
    c.uploads.max_open_per_principal = 5;
    let t = TestServer::start_with(dir, c).await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(t.start_upload("bounds/a").await);
    }
    let r = t.client.post(t.url("/v2/bounds/a/blobs/uploads/")).send().await.unwrap();
    let (status, code, message) = error_code(r).await;
    assert_eq!((status, code.as_str()), (429, "TOOMANYREQUESTS"));
    assert!(message.contains("uploads.max_open_per_repository"), "{message}");
    // Monolithic pushes hold no session and still work.
    let blob = data(100, 1);
    let r = t
        .client
        .post(t.url(&format!("/v2/bounds/a/blobs/uploads/?digest={}", sha256(&blob))))
        .body(blob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // A cancelled session makes room.
    assert_eq!(t.client.delete(&sessions[0]).send().await.unwrap().status(), 204);
    t.start_upload("bounds/a").await;
    // With authentication off everyone is one (anonymous) principal: 3 + 2 elsewhere, then full.
    t.start_upload("bounds/b").await;
    t.start_upload("bounds/c").await;
    let r = t.client.post(t.url("/v2/bounds/d/blobs/uploads/")).send().await.unwrap();
    let (status, _, message) = error_code(r).await;
    assert_eq!(status, 429);
    assert!(message.contains("principal"), "{message}");
}

fn manifest_with_layers(config: &str, config_len: usize, layers: usize) -> String {
    let layer = json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "size": 1,
        "digest": "sha256:2222222222222222222222222222222222222222222222222222222222222222"});
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_len},
        "layers": vec![layer; layers],
    })
    .to_string()
}

/// Before: a 4 MiB manifest of about 25,000 tiny descriptors was checked reference by
/// reference in one metadata transaction.
#[tokio::test]
async fn manifest_fan_out_is_bounded() {
    let t = TestServer::start().await;
    let config = b"{}".to_vec();
    let digest = sha256(&config);
    let r = t
        .client
        .post(t.url(&format!("/v2/bounds/fan/blobs/uploads/?digest={digest}")))
        .body(config.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let put = |body: String| {
        t.client
            .put(t.url("/v2/bounds/fan/manifests/wide"))
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(body)
            .send()
    };
    let (status, code, message) = error_code(put(manifest_with_layers(&digest, 2, 4_200)).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "MANIFEST_INVALID"), "{message}");
    assert!(message.contains("at most 4200"), "{message}");
    // Under the bound, the layers are checked as usual (they are not in the repository).
    let (_, code, _) = error_code(put(manifest_with_layers(&digest, 2, 3)).await.unwrap()).await;
    assert_eq!(code, "MANIFEST_BLOB_UNKNOWN");
}

/// Before: the referrers answer listed every referrer with its annotations, so a subject
/// with many annotated referrers made an answer of any size. Now an answer stops at 4 MiB
/// and its `Link` leads to the rest.
#[tokio::test]
async fn referrers_answers_are_bounded_and_paged() {
    let t = TestServer::start().await;
    let repo = "bounds/refs";
    let (subject, subject_len) = push_manifest(&t, repo, "v1", "subject").await;
    let config = b"{}".to_vec();
    let config_digest = sha256(&config);
    let r = t
        .client
        .post(t.url(&format!("/v2/{repo}/blobs/uploads/?digest={config_digest}")))
        .body(config)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut pushed = Vec::new();
    for i in 0..6 {
        let note = format!("{i}{}", "a".repeat(1_000_000));
        let body = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/x.note",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config_digest, "size": 2},
            "layers": [],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": subject_len},
            "annotations": {"note": note},
        })
        .to_string();
        let digest = sha256(body.as_bytes());
        let r = t
            .client
            .put(t.url(&format!("/v2/{repo}/manifests/{digest}")))
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        pushed.push(digest);
    }
    let mut next = Some(format!("/v2/{repo}/referrers/{subject}"));
    let (mut seen, mut pages) = (Vec::new(), 0);
    while let Some(path) = next.take() {
        let r = t.client.get(t.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        next = r.headers().get("link").map(|l| {
            let l = l.to_str().unwrap();
            l[l.find('<').unwrap() + 1..l.find('>').unwrap()].to_owned()
        });
        let body = r.bytes().await.unwrap();
        assert!(body.len() <= 4 * 1024 * 1024, "a page of {} bytes", body.len());
        let index: Value = serde_json::from_slice(&body).unwrap();
        seen.extend(index["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap().to_owned()));
        pages += 1;
        assert!(pages <= 6, "the Link chain ends");
    }
    assert!(pages >= 2, "six 1 MB referrers do not fit one answer");
    // Every referrer once (the order is push time in seconds, then digest).
    let (mut seen, mut pushed) = (seen, pushed);
    seen.sort();
    pushed.sort();
    assert_eq!(seen, pushed, "every referrer once");
}
