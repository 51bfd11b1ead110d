//! The client for other registries (`berth_registry::upstream`) against real registries:
//! Berth with token authentication in-process (the token flow and its scopes, Basic, ECR's
//! GetAuthorizationToken signed with SigV4, pulls, pushes, mounts, every error kind), a
//! registry that lies about digests (a small server here: no real registry can be made to),
//! blobs of 64 MiB streamed both ways through a throttling proxy (what the client buffered is
//! counted), and CNCF Distribution (`docker-registry`) with and without htpasswd.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_oci::Digest;
use berth_registry::upstream::{Credentials, Upstream, UpstreamConfig, UpstreamError};
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::ecr_common::{self, ADMIN_PW};
use crate::support::*;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn upstream(url: &str, credentials: Credentials) -> Upstream {
    Upstream::new(UpstreamConfig {
        url: url.to_owned(),
        credentials,
        ca_cert_pem: None,
        timeout: Duration::from_secs(10),
    })
    .unwrap()
}

fn basic_creds(user: &str, password: &str) -> Credentials {
    Credentials::Basic { username: user.to_owned(), password: password.to_owned() }
}

fn once(bytes: Vec<u8>) -> BoxStream<'static, io::Result<Bytes>> {
    futures::stream::iter([Ok(Bytes::from(bytes))]).boxed()
}

fn digest_of(bytes: &[u8]) -> Digest {
    Digest::sha256_of(bytes)
}

/// The whole body of a blob stream, or the error it ended with.
async fn read_all(mut body: BoxStream<'static, io::Result<Bytes>>) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// A one-layer image pushed through `up` to `repo:tag`: (manifest digest, manifest, layer).
async fn push_image(up: &Upstream, repo: &str, tag: &str, seed: u8) -> (Digest, Bytes, Vec<u8>) {
    let layer = data(70_000, seed);
    let layer_digest = digest_of(&layer);
    let config = format!("{{\"seed\":{seed}}}").into_bytes();
    let config_digest = digest_of(&config);
    assert!(!up.has_blob(repo, &layer_digest).await.unwrap());
    up.push_blob(repo, &layer_digest, layer.len() as u64, once(layer.clone())).await.unwrap();
    assert!(up.has_blob(repo, &layer_digest).await.unwrap());
    up.push_blob(repo, &config_digest, config.len() as u64, once(config.clone())).await.unwrap();
    let manifest = Bytes::from(
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest.to_string(), "size": layer.len()}],
        })
        .to_string(),
    );
    let digest = up.put_manifest(repo, tag, OCI_MANIFEST, manifest.clone()).await.unwrap();
    assert_eq!(digest, digest_of(&manifest));
    (digest, manifest, layer)
}

/// Reads `repo:tag` back through `up`: manifest by tag and digest, HEAD, and the layer.
async fn pull_image(up: &Upstream, repo: &str, tag: &str, expect: &(Digest, Bytes, Vec<u8>)) {
    let (digest, manifest, layer) = expect;
    let head = up.head_manifest(repo, tag).await.unwrap();
    assert_eq!((&head.digest, head.media_type.as_str(), head.size), (digest, OCI_MANIFEST, manifest.len() as u64));
    assert_eq!(up.head_manifest(repo, &digest.to_string()).await.unwrap(), head);
    for reference in [tag.to_owned(), digest.to_string()] {
        let m = up.get_manifest(repo, &reference).await.unwrap();
        assert_eq!((&m.digest, m.media_type.as_str(), &m.bytes), (digest, OCI_MANIFEST, manifest), "{reference}");
    }
    let blob = up.get_blob(repo, &digest_of(layer)).await.unwrap();
    assert_eq!(blob.size, layer.len() as u64);
    assert_eq!(&read_all(blob.body).await.unwrap(), layer);
}

#[tokio::test]
async fn token_flow_pushes_and_pulls_with_digests_checked() {
    let (t, _) = ecr_common::start().await;
    let url = t.server.url();
    let up = upstream(&url, basic_creds("admin", ADMIN_PW));
    assert_eq!(up.url(), url.trim_end_matches('/'));
    up.check().await.unwrap();
    let image = push_image(&up, "team/app", "v1", 1).await;
    pull_image(&up, "team/app", "v1", &image).await;
    // The same through a fresh client (a cold token cache), and by clones sharing one.
    let again = upstream(&format!("{url}/"), basic_creds("admin", ADMIN_PW));
    pull_image(&again.clone(), "team/app", "v1", &image).await;

    // Missing things are NotFound, whatever is missing.
    let absent = digest_of(b"absent");
    assert!(matches!(up.get_manifest("team/app", "v2").await, Err(UpstreamError::NotFound)));
    assert!(matches!(up.head_manifest("team/app", "v2").await, Err(UpstreamError::NotFound)));
    assert!(matches!(up.get_manifest("team/app", &absent.to_string()).await, Err(UpstreamError::NotFound)));
    assert!(matches!(up.get_blob("team/app", &absent).await, Err(UpstreamError::NotFound)));
    assert!(matches!(up.get_manifest("no/such/repo", "v1").await, Err(UpstreamError::NotFound)));
    assert!(!up.has_blob("team/app", &absent).await.unwrap());

    // A manifest pushed by digest; a digest that is not the bytes' is refused before sending.
    let m = Bytes::from(
        json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(b"{}").to_string(), "size": 2},
        "layers": []})
        .to_string(),
    );
    up.push_blob("team/app", &digest_of(b"{}"), 2, once(b"{}".to_vec())).await.unwrap();
    let d = up.put_manifest("team/app", &digest_of(&m).to_string(), OCI_MANIFEST, m.clone()).await.unwrap();
    assert_eq!(d, digest_of(&m));
    let wrong = up.put_manifest("team/app", &absent.to_string(), OCI_MANIFEST, m).await;
    assert!(matches!(wrong, Err(UpstreamError::Invalid(_))), "{wrong:?}");
    // A blob whose bytes are not its digest: the registry refuses it, nothing is stored.
    let r = up.push_blob("team/app", &absent, 5, once(b"other".to_vec())).await;
    assert!(matches!(r, Err(UpstreamError::Invalid(_))), "{r:?}");
    assert!(!up.has_blob("team/app", &absent).await.unwrap());
    // A stream shorter than the size given fails the upload.
    let layer = data(1000, 9);
    let r = up.push_blob("team/app", &digest_of(&layer), 2000, once(layer.clone())).await;
    assert!(r.is_err(), "{r:?}");
    assert!(!up.has_blob("team/app", &digest_of(&layer)).await.unwrap());

    // Names and references are checked before anything is sent.
    assert!(matches!(up.get_manifest("../etc", "v1").await, Err(UpstreamError::Invalid(_))));
    assert!(matches!(up.get_manifest("team/app", "v1/../x").await, Err(UpstreamError::Invalid(_))));
    t.server.stop().await;
}

#[tokio::test]
async fn scopes_follow_policy_and_mounts_ask_pull_on_their_source() {
    let (t, _) = ecr_common::start().await;
    let url = t.server.url();
    let admin = upstream(&url, basic_creds("admin", ADMIN_PW));
    let image = push_image(&admin, "src/app", "v1", 2).await;
    // `repl` may pull everything and push only to dst/*.
    let policy = json!({"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer","ecr:BatchCheckLayerAvailability"],"Resource":"*"},
        {"Effect":"Allow","Action":["ecr:PutImage","ecr:InitiateLayerUpload","ecr:UploadLayerPart","ecr:CompleteLayerUpload"],
         "Resource":"arn:aws:ecr:local:000000000000:repository/dst/*"}]});
    let admin_api = |path: &str, body: serde_json::Value, method: reqwest::Method| {
        t.client
            .request(method, format!("{url}/api/v1/{path}"))
            .header("authorization", ecr_common::basic("admin", ADMIN_PW))
            .body(body.to_string())
            .send()
    };
    let r = admin_api("users", json!({"name": "repl", "password": "repl-password-1"}), reqwest::Method::POST)
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let r = admin_api("users/repl/policies/main", policy, reqwest::Method::PUT).await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let repl = upstream(&url, basic_creds("repl", "repl-password-1"));
    repl.check().await.unwrap();
    pull_image(&repl, "src/app", "v1", &image).await;

    // A mount into dst/ from src/: pull on the source, push on the target.
    let layer = digest_of(&image.2);
    assert!(repl.mount_blob("dst/app", &layer, "src/app").await.unwrap());
    assert!(repl.has_blob("dst/app", &layer).await.unwrap());
    // A digest the source does not have: an upload opened instead, and cancelled.
    assert!(!repl.mount_blob("dst/app", &digest_of(b"nope"), "src/app").await.unwrap());
    // Pushing into src/ is denied after the token flow ran: the token grants pull only.
    let r = repl.push_blob("src/app", &digest_of(b"x"), 1, once(b"x".to_vec())).await;
    assert!(matches!(r, Err(UpstreamError::Denied(_))), "{r:?}");
    let r = repl.put_manifest("src/app", "v2", OCI_MANIFEST, image.1.clone()).await;
    assert!(matches!(r, Err(UpstreamError::Denied(_))), "{r:?}");
    // ... and a manifest into dst/ works once its blobs are there.
    let config = serde_json::from_slice::<serde_json::Value>(&image.1).unwrap()["config"]["digest"]
        .as_str()
        .unwrap()
        .parse::<Digest>()
        .unwrap();
    assert!(repl.mount_blob("dst/app", &config, "src/app").await.unwrap());
    assert_eq!(repl.put_manifest("dst/app", "v1", OCI_MANIFEST, image.1.clone()).await.unwrap(), image.0);
    pull_image(&admin, "dst/app", "v1", &image).await;
    t.server.stop().await;
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_denied() {
    let (t, _) = ecr_common::start().await;
    let url = t.server.url();
    let admin = upstream(&url, basic_creds("admin", ADMIN_PW));
    push_image(&admin, "team/app", "v1", 3).await;
    let wrong = upstream(&url, basic_creds("admin", "not-the-password"));
    let r = wrong.check().await;
    assert!(matches!(r, Err(UpstreamError::Denied(_))), "{r:?}");
    let r = wrong.get_manifest("team/app", "v1").await;
    assert!(matches!(r, Err(UpstreamError::Denied(_))), "{r:?}");
    // Anonymous: the registry gives an anonymous token that grants nothing here.
    let anonymous = upstream(&url, Credentials::Anonymous);
    let r = anonymous.get_manifest("team/app", "v1").await;
    assert!(matches!(r, Err(UpstreamError::Denied(_))), "{r:?}");
    let r = anonymous.push_blob("team/app", &digest_of(b"x"), 1, once(b"x".to_vec())).await;
    assert!(matches!(r, Err(UpstreamError::Denied(_))), "{r:?}");
    // Secrets stay out of Debug output and errors.
    let cfg = UpstreamConfig {
        url: url.clone(),
        credentials: basic_creds("admin", "not-the-password"),
        ca_cert_pem: None,
        timeout: Duration::from_secs(5),
    };
    let shown = format!("{cfg:?} {wrong:?} {:?}", wrong.check().await);
    assert!(!shown.contains("not-the-password"), "{shown}");
    let ecr = Credentials::Ecr {
        access_key_id: "BKIAX".into(),
        secret_access_key: "very-secret-key".into(),
        region: "local".into(),
        endpoint: None,
    };
    assert!(!format!("{ecr:?}").contains("very-secret-key"));
    t.server.stop().await;
}

#[tokio::test]
async fn a_registry_that_is_down_is_unavailable() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let up = upstream(&format!("http://{closed}"), basic_creds("u", "p"));
    let d = digest_of(b"x");
    assert!(matches!(up.check().await, Err(UpstreamError::Unavailable(_))));
    assert!(matches!(up.head_manifest("a/b", "v1").await, Err(UpstreamError::Unavailable(_))));
    assert!(matches!(up.get_manifest("a/b", "v1").await, Err(UpstreamError::Unavailable(_))));
    assert!(matches!(up.get_blob("a/b", &d).await, Err(UpstreamError::Unavailable(_))));
    assert!(matches!(up.has_blob("a/b", &d).await, Err(UpstreamError::Unavailable(_))));
    assert!(matches!(up.mount_blob("a/b", &d, "c/d").await, Err(UpstreamError::Unavailable(_))));
    assert!(matches!(up.push_blob("a/b", &d, 1, once(b"x".to_vec())).await, Err(UpstreamError::Unavailable(_))));
    let put = up.put_manifest("a/b", "v1", OCI_MANIFEST, Bytes::from_static(b"{}")).await;
    assert!(matches!(put, Err(UpstreamError::Unavailable(_))), "{put:?}");

    // A registry that accepts the connection and never answers: Unavailable after the timeout.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let up = Upstream::new(UpstreamConfig {
        url: format!("http://{addr}"),
        credentials: Credentials::Anonymous,
        ca_cert_pem: None,
        timeout: Duration::from_millis(300),
    })
    .unwrap();
    assert!(matches!(up.get_manifest("a/b", "v1").await, Err(UpstreamError::Unavailable(_))));
    hold.abort();

    // URLs that are not a registry's origin are refused at construction.
    for bad in ["ftp://h", "http://", "https://u:p@h", "https://h/v2/", "https://h?x=1", "not a url"] {
        let r = Upstream::new(UpstreamConfig {
            url: bad.into(),
            credentials: Credentials::Anonymous,
            ca_cert_pem: None,
            timeout: Duration::from_secs(1),
        });
        assert!(matches!(r, Err(UpstreamError::Invalid(_))), "{bad}");
    }
    let r = Upstream::new(UpstreamConfig {
        url: "https://h".into(),
        credentials: Credentials::Anonymous,
        ca_cert_pem: Some(b"not a certificate".to_vec()),
        timeout: Duration::from_secs(1),
    });
    assert!(matches!(r, Err(UpstreamError::Invalid(_))));
}

#[tokio::test]
async fn ecr_credentials_sign_get_authorization_token() {
    let (t, ecr) = ecr_common::start().await;
    let url = t.server.url();
    let creds = |secret: &str, region: &str| Credentials::Ecr {
        access_key_id: ecr.key_id.clone(),
        secret_access_key: secret.to_owned(),
        region: region.to_owned(),
        endpoint: Some(url.clone()),
    };
    let up = upstream(&url, creds(&ecr.secret, ecr_common::REGION));
    up.check().await.unwrap();
    let image = push_image(&up, "ecr/app", "v1", 4).await;
    pull_image(&up, "ecr/app", "v1", &image).await;

    for (secret, region) in [(format!("{}x", ecr.secret), ecr_common::REGION), (ecr.secret.clone(), "us-east-1")] {
        let bad = upstream(&url, creds(&secret, region));
        let r = bad.check().await;
        assert!(matches!(&r, Err(UpstreamError::Denied(m)) if m.contains("InvalidSignatureException")), "{r:?}");
        let r = bad.get_manifest("ecr/app", "v1").await;
        assert!(matches!(r, Err(UpstreamError::Denied(_))), "{r:?}");
    }
    // An ECR endpoint that is down: Unavailable, not Denied.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let down = upstream(
        &url,
        Credentials::Ecr {
            access_key_id: ecr.key_id.clone(),
            secret_access_key: ecr.secret.clone(),
            region: ecr_common::REGION.into(),
            endpoint: Some(format!("http://{closed}")),
        },
    );
    assert!(matches!(down.check().await, Err(UpstreamError::Unavailable(_))));
    t.server.stop().await;
}

/// A registry that lies: every answer's bytes differ from the digest it names.
async fn lying_registry() -> (String, tokio::task::JoinHandle<()>) {
    use axum::http::{HeaderMap, StatusCode, Uri};
    async fn answer(uri: Uri) -> (StatusCode, HeaderMap, Vec<u8>) {
        let path = uri.path().to_owned();
        let mut h = HeaderMap::new();
        let real = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#;
        if path == "/v2/" {
            return (StatusCode::OK, h, Vec::new());
        }
        if path.starts_with("/v2/lie/app/manifests/") {
            h.insert("content-type", OCI_MANIFEST.parse().unwrap());
            // The header names the digest of other bytes.
            h.insert("docker-content-digest", Digest::sha256_of(b"other").to_string().parse().unwrap());
            return (StatusCode::OK, h, real.to_vec());
        }
        if path.starts_with("/v2/big/app/manifests/") {
            h.insert("content-type", OCI_MANIFEST.parse().unwrap());
            return (StatusCode::OK, h, vec![b' '; (4 << 20) + 1]);
        }
        if path.starts_with("/v2/lie/app/blobs/") {
            return (StatusCode::OK, h, b"not the bytes asked for".to_vec());
        }
        if path.starts_with("/v2/busy/") {
            return (StatusCode::TOO_MANY_REQUESTS, h, Vec::new());
        }
        if path.starts_with("/v2/broken/") {
            return (StatusCode::BAD_GATEWAY, h, Vec::new());
        }
        (StatusCode::NOT_FOUND, h, br#"{"errors":[{"code":"NAME_UNKNOWN","message":"no"}]}"#.to_vec())
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(answer);
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, task)
}

#[tokio::test]
async fn answers_that_do_not_match_their_digest_are_invalid() {
    let (url, task) = lying_registry().await;
    let up = upstream(&url, Credentials::Anonymous);
    up.check().await.unwrap();
    // By tag: Docker-Content-Digest disagrees with the bytes.
    let r = up.get_manifest("lie/app", "v1").await;
    assert!(matches!(r, Err(UpstreamError::Invalid(_))), "{r:?}");
    // By digest: the bytes are not the digest asked for.
    let asked = digest_of(b"what was asked");
    let r = up.get_manifest("lie/app", &asked.to_string()).await;
    assert!(matches!(r, Err(UpstreamError::Invalid(_))), "{r:?}");
    // More than 4 MiB of manifest.
    let r = up.get_manifest("big/app", "v1").await;
    assert!(matches!(r, Err(UpstreamError::Invalid(_))), "{r:?}");
    // A blob: the stream yields what came, then ends in InvalidData, never cleanly.
    let blob = up.get_blob("lie/app", &asked).await.unwrap();
    let e = read_all(blob.body).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    // 429 and 5xx: try later.
    assert!(matches!(up.get_manifest("busy/app", "v1").await, Err(UpstreamError::Unavailable(_))));
    assert!(matches!(up.get_blob("broken/app", &asked).await, Err(UpstreamError::Unavailable(_))));
    assert!(matches!(up.get_manifest("gone/app", "v1").await, Err(UpstreamError::NotFound)));
    task.abort();
}

/// A registry with a token service of its own, for what the client sends where: every
/// `/v2/` request needs `Bearer tok`, the realm is `realm_host` (127.0.0.1: the registry's own
/// origin; localhost: another origin over plain HTTP), the token service wants Basic
/// `u:p` when any credentials come and records the scopes asked for, and blobs redirect to
/// storage on another origin that refuses requests carrying credentials.
struct TokenRegistry {
    url: String,
    scopes: Arc<std::sync::Mutex<Vec<Vec<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

const BLOB: &[u8] = b"bytes kept in storage";

async fn token_registry(realm_host: &str) -> TokenRegistry {
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode, Uri};
    #[derive(Clone)]
    struct S {
        realm: String,
        storage: String,
        scopes: Arc<std::sync::Mutex<Vec<Vec<String>>>>,
    }
    async fn answer(
        State(s): State<S>,
        uri: Uri,
        headers: HeaderMap,
        Query(q): Query<Vec<(String, String)>>,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let path = uri.path().to_owned();
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let mut h = HeaderMap::new();
        if path == "/token" {
            let basic = format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "u:p"));
            if !auth.is_empty() && auth != basic {
                return (StatusCode::UNAUTHORIZED, h, Vec::new());
            }
            let scopes: Vec<String> = q.into_iter().filter(|(k, _)| k == "scope").map(|(_, v)| v).collect();
            s.scopes.lock().unwrap().push(scopes);
            return (StatusCode::OK, h, br#"{"access_token":"tok","expires_in":300}"#.to_vec());
        }
        if path.starts_with("/storage/") {
            if !auth.is_empty() {
                return (StatusCode::FORBIDDEN, h, b"credentials sent to storage".to_vec());
            }
            return (StatusCode::OK, h, BLOB.to_vec());
        }
        if auth != "Bearer tok" {
            let challenge = format!("Bearer realm=\"{}\",service=\"test\"", s.realm);
            h.insert("www-authenticate", challenge.parse().unwrap());
            return (StatusCode::UNAUTHORIZED, h, Vec::new());
        }
        if path.contains("/blobs/uploads/") {
            return (StatusCode::CREATED, h, Vec::new());
        }
        if path.contains("/blobs/") {
            h.insert("location", format!("{}/storage/blob", s.storage).parse().unwrap());
            return (StatusCode::TEMPORARY_REDIRECT, h, Vec::new());
        }
        (StatusCode::OK, h, Vec::new())
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let scopes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let state = S {
        realm: format!("http://{realm_host}:{port}/token"),
        storage: format!("http://localhost:{port}"),
        scopes: scopes.clone(),
    };
    let app = axum::Router::new().fallback(answer).with_state(state);
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    TokenRegistry { url: format!("http://127.0.0.1:{port}"), scopes, task }
}

#[tokio::test]
async fn tokens_are_asked_per_scope_cached_and_credentials_stay_home() {
    let reg = token_registry("127.0.0.1").await;
    let up = upstream(&reg.url, basic_creds("u", "p"));
    let d = digest_of(BLOB);
    // One token per scope set, reused while it lives, shared by clones.
    let blob = up.get_blob("r/app", &d).await.unwrap();
    assert_eq!(read_all(blob.body).await.unwrap(), BLOB, "the redirect to storage was followed, without credentials");
    let blob = up.clone().get_blob("r/app", &d).await.unwrap();
    assert_eq!(read_all(blob.body).await.unwrap(), BLOB);
    assert!(up.has_blob("r/app", &d).await.unwrap());
    assert!(up.has_blob("r/app", &d).await.unwrap());
    assert!(up.mount_blob("r/app", &d, "s/lib").await.unwrap());
    up.check().await.unwrap();
    assert_eq!(
        *reg.scopes.lock().unwrap(),
        vec![
            vec!["repository:r/app:pull".to_owned()],
            vec!["repository:r/app:pull,push".to_owned()],
            vec!["repository:r/app:pull,push".to_owned(), "repository:s/lib:pull".to_owned()],
            vec![],
        ]
    );
    // Wrong credentials: the token service refuses them.
    let wrong = upstream(&reg.url, basic_creds("u", "wrong"));
    assert!(matches!(wrong.get_blob("r/app", &d).await, Err(UpstreamError::Denied(_))));
    // Eight requests at once on a cold client: one token request.
    let cold = upstream(&reg.url, basic_creds("u", "p"));
    cold.check().await.unwrap();
    let before = reg.scopes.lock().unwrap().len();
    let all = futures::future::join_all((0..8).map(|_| cold.has_blob("q/app", &d))).await;
    assert!(all.iter().all(|r| matches!(r, Ok(true))), "{all:?}");
    assert_eq!(reg.scopes.lock().unwrap()[before..], [vec!["repository:q/app:pull,push".to_owned()]]);
    reg.task.abort();

    // A realm on another host over plain HTTP gets no credentials; anonymous is fine there.
    let reg = token_registry("localhost").await;
    let r = upstream(&reg.url, basic_creds("u", "p")).check().await;
    assert!(matches!(&r, Err(UpstreamError::Invalid(m)) if m.contains("plain HTTP")), "{r:?}");
    assert!(reg.scopes.lock().unwrap().is_empty(), "the token service was not asked");
    upstream(&reg.url, Credentials::Anonymous).check().await.unwrap();
    assert_eq!(reg.scopes.lock().unwrap().len(), 1);
    reg.task.abort();
}

/// A TCP proxy to `target` that lets at most `allowance` bytes through in one direction
/// (client to server when `gate_uploads`, else server to client), counting them in `passed`.
struct Gate {
    allowance: AtomicU64,
    passed: AtomicU64,
    opened: tokio::sync::Notify,
}

async fn gated_proxy(target: std::net::SocketAddr, gate_uploads: bool, gate: Arc<Gate>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(target).await.unwrap();
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let (up_gate, down_gate) =
                if gate_uploads { (Some(gate.clone()), None) } else { (None, Some(gate.clone())) };
            tokio::spawn(copy(cr, sw, up_gate));
            tokio::spawn(copy(sr, cw, down_gate));
        }
    });
    format!("http://{addr}")
}

async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    gate: Option<Arc<Gate>>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let mut room = buf.len();
        if let Some(g) = &gate {
            loop {
                let opened = g.opened.notified();
                let left = g.allowance.load(Ordering::SeqCst).saturating_sub(g.passed.load(Ordering::SeqCst));
                if left > 0 {
                    room = room.min(usize::try_from(left).unwrap_or(usize::MAX));
                    break;
                }
                opened.await;
            }
        }
        let n = match from.read(&mut buf[..room]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        if let Some(g) = &gate {
            g.passed.fetch_add(n as u64, Ordering::SeqCst);
        }
    }
    let _ = to.shutdown().await;
}

/// Waits (polling; at most a minute, a failsafe) until `f` holds.
async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "waited a minute for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `counter` stops moving (the same value twice, 300 ms apart).
async fn settled(counter: &AtomicU64) -> u64 {
    let mut last = counter.load(Ordering::SeqCst);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = counter.load(Ordering::SeqCst);
        if now == last {
            return now;
        }
        last = now;
    }
}

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn blobs_of_64_mib_stream_both_ways_with_bounded_buffering() {
    let t = TestServer::start().await;
    let target = t.server.url().trim_start_matches("http://").trim_end_matches('/').parse().unwrap();
    // 64 MiB and 3 bytes: 64 times one MiB of data, then a tail; produced lazily, counted.
    let piece = Bytes::from(data(MIB as usize, 7));
    let tail = Bytes::from_static(b"end");
    let size = 64 * MIB + 3;
    let digest = {
        let mut h = berth_oci::DigestHasher::new(berth_oci::Algorithm::Sha256);
        for _ in 0..64 {
            h.update(&piece);
        }
        h.update(&tail);
        h.finish()
    };
    let produced = Arc::new(AtomicU64::new(0));
    let body = {
        let produced = produced.clone();
        futures::stream::iter((0..65).map(move |i| if i < 64 { piece.clone() } else { tail.clone() }))
            .map(move |b| {
                produced.fetch_add(b.len() as u64, Ordering::SeqCst);
                Ok(b)
            })
            .boxed()
    };

    // Push through a proxy that lets 16 MiB through, then holds: what the client took from
    // the stream beyond that is what it buffered (plus the sockets' buffers).
    let gate = Arc::new(Gate {
        allowance: AtomicU64::new(16 * MIB),
        passed: AtomicU64::new(0),
        opened: tokio::sync::Notify::new(),
    });
    let up = upstream(&gated_proxy(target, true, gate.clone()).await, Credentials::Anonymous);
    let push = {
        let up = up.clone();
        let digest = digest.clone();
        tokio::spawn(async move { up.push_blob("big/blob", &digest, size, body).await })
    };
    until("16 MiB through the proxy", || gate.passed.load(Ordering::SeqCst) >= 16 * MIB).await;
    let taken = settled(&produced).await;
    eprintln!("push: {} MiB taken from the stream while 16 MiB went through", taken / MIB);
    assert!(taken <= 40 * MIB, "the client took {taken} bytes while 16 MiB could pass: it buffers the body");
    gate.allowance.store(u64::MAX, Ordering::SeqCst);
    gate.opened.notify_waiters();
    push.await.unwrap().unwrap();
    assert_eq!(produced.load(Ordering::SeqCst), size);

    // Pull through a proxy that lets 16 MiB of the answer through: the client hands out
    // bytes before the rest could arrive, and the stream ends cleanly once all did.
    let gate = Arc::new(Gate {
        allowance: AtomicU64::new(16 * MIB),
        passed: AtomicU64::new(0),
        opened: tokio::sync::Notify::new(),
    });
    let up = upstream(&gated_proxy(target, false, gate.clone()).await, Credentials::Anonymous);
    let mut blob = up.get_blob("big/blob", &digest).await.unwrap();
    assert_eq!(blob.size, size);
    let mut got = 0u64;
    let mut largest = 0usize;
    while got < 8 * MIB {
        let chunk = blob.body.next().await.unwrap().unwrap();
        got += chunk.len() as u64;
        largest = largest.max(chunk.len());
    }
    assert!(gate.passed.load(Ordering::SeqCst) <= 16 * MIB);
    gate.allowance.store(u64::MAX, Ordering::SeqCst);
    gate.opened.notify_waiters();
    while let Some(chunk) = blob.body.next().await {
        let chunk = chunk.unwrap();
        got += chunk.len() as u64;
        largest = largest.max(chunk.len());
    }
    assert_eq!(got, size);
    assert!(largest as u64 <= 4 * MIB, "chunks of {largest} bytes");
    t.server.stop().await;
}

/// CNCF Distribution (`docker-registry`) on a loopback port, its data and config in a
/// temporary folder; with htpasswd when `users` are given. Stopped (by its PID) on drop.
struct Distribution {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn distribution(users: &[(&str, &str)]) -> Distribution {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.path().join("data").display()
    );
    if !users.is_empty() {
        let htpasswd = dir.path().join("htpasswd");
        let mut lines = String::new();
        for (user, password) in users {
            let out = std::process::Command::new("htpasswd").args(["-nbB", user, password]).output().unwrap();
            assert!(out.status.success(), "htpasswd: {}", String::from_utf8_lossy(&out.stderr));
            lines.push_str(String::from_utf8(out.stdout).unwrap().trim());
            lines.push('\n');
        }
        std::fs::write(&htpasswd, lines).unwrap();
        config.push_str(&format!("auth:\n  htpasswd:\n    realm: test\n    path: {}\n", htpasswd.display()));
    }
    let config_path = dir.path().join("config.yml");
    std::fs::write(&config_path, config).unwrap();
    let mut command = std::process::Command::new("/usr/bin/docker-registry");
    // It reads REGISTRY_* variables as configuration (podman's REGISTRY_AUTH_FILE would be
    // its `auth.file`).
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("REGISTRY_") {
            command.env_remove(name);
        }
    }
    let child = command
        .arg("serve")
        .arg(&config_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let d = Distribution { child, url: format!("http://127.0.0.1:{port}"), _dir: dir };
    let client = reqwest::Client::new();
    let v2 = format!("{}/v2/", d.url);
    until_async(|| {
        let sent = client.get(&v2).send();
        async move { sent.await.is_ok() }
    })
    .await;
    d
}

async fn until_async<F: Future<Output = bool>>(f: impl Fn() -> F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f().await {
        assert!(Instant::now() < deadline, "docker-registry did not answer within a minute");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
#[ignore = "needs docker-registry (apt-get install docker-registry)"]
async fn distribution_without_auth_round_trips_and_mounts() {
    let d = distribution(&[]).await;
    let up = upstream(&d.url, Credentials::Anonymous);
    up.check().await.unwrap();
    let image = push_image(&up, "library/app", "v1", 5).await;
    pull_image(&up, "library/app", "v1", &image).await;
    assert!(up.mount_blob("other/app", &digest_of(&image.2), "library/app").await.unwrap());
    assert!(up.has_blob("other/app", &digest_of(&image.2)).await.unwrap());
    assert!(!up.mount_blob("other/app", &digest_of(b"nope"), "library/app").await.unwrap());
    assert!(matches!(up.get_manifest("library/app", "v2").await, Err(UpstreamError::NotFound)));
    assert!(matches!(up.get_blob("library/app", &digest_of(b"nope")).await, Err(UpstreamError::NotFound)));
    let r = up.push_blob("library/app", &digest_of(b"nope"), 5, once(b"other".to_vec())).await;
    assert!(matches!(r, Err(UpstreamError::Invalid(_))), "{r:?}");
}

#[tokio::test]
#[ignore = "needs docker-registry and htpasswd (apt-get install docker-registry apache2-utils)"]
async fn distribution_with_htpasswd_takes_basic_and_denies_wrong_passwords() {
    let d = distribution(&[("alice", "alice-password")]).await;
    let up = upstream(&d.url, basic_creds("alice", "alice-password"));
    up.check().await.unwrap();
    let image = push_image(&up, "team/app", "v1", 6).await;
    pull_image(&up, "team/app", "v1", &image).await;
    for creds in [basic_creds("alice", "wrong"), basic_creds("bob", "alice-password"), Credentials::Anonymous] {
        let bad = upstream(&d.url, creds);
        assert!(matches!(bad.check().await, Err(UpstreamError::Denied(_))));
        let r = bad.get_manifest("team/app", "v1").await;
        assert!(matches!(r, Err(UpstreamError::Denied(_))), "{r:?}");
    }
}
