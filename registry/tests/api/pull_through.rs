//! The pull-through cache (README "Pull-through cache"): a cache registry whose rules point
//! at an upstream registry on loopback, another Berth (in-process; with token auth in one
//! test) or CNCF Distribution (`#[ignore]`d: it needs the docker-registry package). Between
//! cache and upstream sits a [`Proxy`] written here, which counts the requests the upstream
//! gets, and can answer 503 (the upstream is down) or corrupt a blob on its way.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use berth_registry::service::pull_through::RuleConfig;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::ecr_common::{self, ADMIN_PW, basic};
use crate::support::*;

/// A counting, breakable proxy in front of an upstream registry.
struct Proxy {
    url: String,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    counts: Mutex<HashMap<(String, String), usize>>,
    down: AtomicBool,
    corrupt: Mutex<HashSet<String>>,
    /// Blobs with this digest stop after their first [`HOLD_AFTER`] bytes until the test adds
    /// a permit.
    hold: Mutex<Option<(String, Arc<tokio::sync::Semaphore>)>>,
}

/// Where a held blob stops.
const HOLD_AFTER: usize = 1024 * 1024;

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            counts: Mutex::default(),
            down: AtomicBool::new(false),
            corrupt: Mutex::default(),
            hold: Mutex::default(),
        });
        let app = axum::Router::new().fallback(forward).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Proxy { url: format!("http://{addr}"), state, task }
    }

    /// Requests the upstream got with `method` on `path`.
    fn count(&self, method: &str, path: &str) -> usize {
        self.state.counts.lock().unwrap().get(&(method.to_owned(), path.to_owned())).copied().unwrap_or(0)
    }

    fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Blobs with this digest reach the cache with their first byte changed.
    fn corrupt(&self, digest: &str) {
        self.state.corrupt.lock().unwrap().insert(digest.to_owned());
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(s): State<Arc<ProxyState>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let path_and_query = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_else(|| path.clone());
    *s.counts.lock().unwrap().entry((method.to_string(), path.clone())).or_default() += 1;
    if s.down.load(Ordering::SeqCst) {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down for the test").into_response();
    }
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024 * 1024).await.unwrap();
    let mut out = s.client.request(method, format!("{}{path_and_query}", s.upstream)).body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            out = out.header(name, value);
        }
    }
    let answer = match out.send().await {
        Ok(a) => a,
        Err(e) => return (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let corrupt = s.corrupt.lock().unwrap().iter().any(|d| path.ends_with(&format!("/blobs/{d}")));
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if name != "transfer-encoding" && name != "connection" {
            response = response.header(name.as_str(), value.as_bytes());
        }
    }
    let gate = s.hold.lock().unwrap().clone().filter(|(d, _)| path.ends_with(&format!("/blobs/{d}"))).map(|(_, g)| g);
    let mut passed = 0usize;
    let held = answer.bytes_stream().then(move |piece| {
        let before = passed;
        passed += piece.as_ref().map(|b| b.len()).unwrap_or(0);
        let gate = gate.clone().filter(|_| before >= HOLD_AFTER);
        async move {
            if let Some(g) = gate {
                g.acquire().await.unwrap().forget();
                g.add_permits(1);
            }
            piece
        }
    });
    let mut first = true;
    let stream = held.map(move |piece| {
        piece.map(|b| {
            if corrupt && first && !b.is_empty() {
                first = false;
                let mut v = b.to_vec();
                v[0] ^= 0xff;
                bytes::Bytes::from(v)
            } else {
                b
            }
        })
    });
    response.body(Body::from_stream(stream)).unwrap()
}

/// A rule for `prefix` → `upstream`, no credentials, `refresh`.
fn rule(prefix: &str, upstream: &str, refresh: Duration) -> RuleConfig {
    RuleConfig {
        prefix: prefix.into(),
        upstream: upstream.into(),
        upstream_prefix: None,
        username: None,
        password: None,
        aws_access_key_id: None,
        aws_secret_access_key: None,
        aws_region: None,
        ecr_endpoint: None,
        ca_file: None,
        refresh,
    }
}

/// A cache registry (authentication off) with `rules` configured.
async fn cache_with(rules: Vec<RuleConfig>) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.pull_through.rules = rules;
    TestServer::start_with(dir, config).await
}

/// An image pushed to `t`: its manifest (digest, bytes), config and layer digests.
struct Image {
    digest: String,
    manifest: String,
    config: String,
    layer: String,
}

async fn push_blob(t: &TestServer, repo: &str, bytes: &[u8], auth: Option<&str>) -> String {
    let digest = sha256(bytes);
    let mut r = t.client.post(t.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"))).body(bytes.to_vec());
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    digest
}

async fn push_image(t: &TestServer, repo: &str, tag: &str, layer: &[u8], auth: Option<&str>) -> Image {
    let config_bytes = format!("{{\"layer\":\"{}\"}}", sha256(layer)).into_bytes();
    let config = push_blob(t, repo, &config_bytes, auth).await;
    let layer_digest = push_blob(t, repo, layer, auth).await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_bytes.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}]
    })
    .to_string();
    let mut r = t
        .client
        .put(t.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone());
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    Image { digest: sha256(manifest.as_bytes()), manifest, config, layer: layer_digest }
}

/// GET `path` on `t`: status, `Docker-Content-Digest`, body (`None` when the body broke off).
async fn get(t: &TestServer, path: &str) -> (u16, String, Option<Vec<u8>>) {
    let r = t
        .client
        .get(t.url(path))
        .header("accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let digest = r.headers().get("docker-content-digest").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, digest, r.bytes().await.ok().map(|b| b.to_vec()))
}

/// The whole image through the cache: manifest, config and layer, each checked.
async fn pull_image(cache: &TestServer, repo: &str, reference: &str, image: &Image, layer: &[u8]) {
    let (status, digest, body) = get(cache, &format!("/v2/{repo}/manifests/{reference}")).await;
    assert_eq!((status, digest.as_str()), (200, image.digest.as_str()));
    assert_eq!(body.unwrap(), image.manifest.as_bytes());
    let (status, _, body) = get(cache, &format!("/v2/{repo}/blobs/{}", image.config)).await;
    assert_eq!(status, 200);
    assert_eq!(sha256(&body.unwrap()), image.config);
    let (status, _, body) = get(cache, &format!("/v2/{repo}/blobs/{}", image.layer)).await;
    assert_eq!(status, 200);
    assert_eq!(body.unwrap(), layer);
}

#[tokio::test]
async fn a_miss_is_fetched_then_served_from_the_cache_also_when_the_upstream_is_gone() {
    let upstream = TestServer::start().await;
    let layer = data(3 * 1024 * 1024 + 17, 1);
    let image = push_image(&upstream, "library/alpine", "3.20", &layer, None).await;
    let proxy = Proxy::start(&upstream.server.url()).await;
    let cache = cache_with(vec![
        rule("hub", &proxy.url, Duration::from_secs(24 * 3600)),
        rule("fresh", &proxy.url, Duration::from_secs(1)),
    ])
    .await;

    pull_image(&cache, "hub/library/alpine", "3.20", &image, &layer).await;
    let manifest_path = "/v2/library/alpine/manifests/3.20";
    let layer_path = format!("/v2/library/alpine/blobs/{}", image.layer);
    assert_eq!((proxy.count("GET", manifest_path), proxy.count("GET", &layer_path)), (1, 1));
    // A hit: nothing more upstream (the tag is within its refresh; digests never re-checked).
    pull_image(&cache, "hub/library/alpine", "3.20", &image, &layer).await;
    pull_image(&cache, "hub/library/alpine", &image.digest, &image, &layer).await;
    assert_eq!((proxy.count("GET", manifest_path), proxy.count("GET", &layer_path)), (1, 1));
    assert_eq!(proxy.count("HEAD", manifest_path), 0);
    // Cached content is ordinary content: listed, counted in usage, sealed at rest.
    let catalog: Value = cache.client.get(cache.url("/v2/_catalog")).send().await.unwrap().json().await.unwrap();
    assert!(catalog["repositories"].as_array().unwrap().contains(&json!("hub/library/alpine")), "{catalog}");
    let usage: Value =
        cache.client.get(cache.url("/api/v1/usage/hub/library/alpine")).send().await.unwrap().json().await.unwrap();
    assert_eq!((usage["blobs"].as_u64(), usage["manifests"].as_u64()), (Some(2), Some(1)), "{usage}");
    assert!(usage["bytes"].as_u64().unwrap() > layer.len() as u64, "{usage}");
    assert!(!holds_file_with(cache.dir.path(), &layer), "the layer is stored in plaintext");

    // A tag due for its re-check while the upstream answers 503: served as cached (stale-if-error).
    pull_image(&cache, "fresh/library/alpine", "3.20", &image, &layer).await;
    proxy.set_down(true);
    let heads = proxy.count("HEAD", manifest_path);
    // The rule's refresh (1 s) must pass for the tag to be due.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    pull_image(&cache, "fresh/library/alpine", "3.20", &image, &layer).await;
    assert!(proxy.count("HEAD", manifest_path) > heads, "the tag was checked upstream");

    // The upstream stopped altogether: everything cached is still served.
    drop(proxy);
    upstream.server.stop().await;
    pull_image(&cache, "hub/library/alpine", "3.20", &image, &layer).await;
    pull_image(&cache, "fresh/library/alpine", "3.20", &image, &layer).await;
    // What was never fetched is not there: 502 with the reason, not a hang.
    let (status, _, body) = get(&cache, "/v2/hub/library/busybox/manifests/latest").await;
    assert_eq!(status, 502, "{:?}", body.map(String::from_utf8));
}

#[tokio::test]
async fn a_tag_moved_upstream_is_seen_once_its_refresh_has_passed() {
    let upstream = TestServer::start().await;
    let proxy = Proxy::start(&upstream.server.url()).await;
    let cache = cache_with(vec![]).await;
    let admin = |m: reqwest::Method, path: &str| cache.client.request(m, cache.url(&format!("/api/v1/{path}")));
    let r = admin(reqwest::Method::POST, "pull-through-rules")
        .json(&json!({"prefix": "mirror", "upstream": proxy.url, "refresh": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);

    let one = push_image(&upstream, "team/app", "stable", b"layer one", None).await;
    pull_image(&cache, "mirror/team/app", "stable", &one, b"layer one").await;
    let two = push_image(&upstream, "team/app", "stable", b"layer two", None).await;
    // Within the refresh (1 h) the cached tag is served without asking upstream.
    let (_, digest, _) = get(&cache, "/v2/mirror/team/app/manifests/stable").await;
    assert_eq!(digest, one.digest);
    assert_eq!(proxy.count("HEAD", "/v2/team/app/manifests/stable"), 0);

    let r = admin(reqwest::Method::PUT, "pull-through-rules/mirror")
        .json(&json!({"upstream": proxy.url, "refresh": "1s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, digest, _) = get(&cache, "/v2/mirror/team/app/manifests/stable").await;
        assert_eq!(status, 200);
        if digest == two.digest {
            break;
        }
        assert_eq!(digest, one.digest);
        assert!(tokio::time::Instant::now() < deadline, "the moved tag was never seen");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pull_image(&cache, "mirror/team/app", "stable", &two, b"layer two").await;
    // The old image stays cached by digest.
    pull_image(&cache, "mirror/team/app", &one.digest, &one, b"layer one").await;
    assert!(proxy.count("HEAD", "/v2/team/app/manifests/stable") >= 1);
}

#[tokio::test]
async fn an_upstream_404_is_a_404_remembered_briefly() {
    let upstream = TestServer::start().await;
    let proxy = Proxy::start(&upstream.server.url()).await;
    let cache = cache_with(vec![rule("hub", &proxy.url, Duration::from_secs(3600))]).await;
    for _ in 0..3 {
        let (status, _, body) = get(&cache, "/v2/hub/library/nothing/manifests/latest").await;
        assert_eq!(status, 404);
        let body: Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN");
    }
    assert_eq!(proxy.count("GET", "/v2/library/nothing/manifests/latest"), 1, "the miss was remembered");
    let missing = sha256(b"never pushed");
    for _ in 0..3 {
        let (status, _, _) = get(&cache, &format!("/v2/hub/library/nothing/blobs/{missing}")).await;
        assert_eq!(status, 404);
    }
    assert_eq!(proxy.count("GET", &format!("/v2/library/nothing/blobs/{missing}")), 1);
    // A name no rule covers is not looked up anywhere.
    let (status, _, _) = get(&cache, "/v2/elsewhere/app/manifests/latest").await;
    assert_eq!(status, 404);
    assert_eq!(proxy.count("GET", "/v2/app/manifests/latest"), 0);
}

#[tokio::test]
async fn a_blob_that_does_not_match_its_digest_upstream_never_becomes_visible() {
    let upstream = TestServer::start().await;
    let layer = data(2 * 1024 * 1024, 2);
    let image = push_image(&upstream, "library/bad", "1", &layer, None).await;
    let proxy = Proxy::start(&upstream.server.url()).await;
    proxy.corrupt(&image.layer);
    let cache = cache_with(vec![rule("hub", &proxy.url, Duration::from_secs(3600))]).await;
    let path = format!("/v2/hub/library/bad/blobs/{}", image.layer);
    let (status, _, body) = get(&cache, &path).await;
    // The client never gets the whole corrupt body: an error, or a body cut short.
    assert!(
        status != 200 || body.as_ref().is_none_or(|b| b.len() < layer.len()),
        "status {status}, {} bytes",
        body.map(|b| b.len()).unwrap_or(0)
    );
    // Nothing was stored: with the upstream down, the cache has nothing to serve.
    proxy.set_down(true);
    let r = cache.client.head(cache.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 502);
    // Once the upstream answers right, the blob is fetched and served whole.
    proxy.set_down(false);
    proxy.state.corrupt.lock().unwrap().clear();
    let (status, _, body) = get(&cache, &path).await;
    assert_eq!(status, 200);
    assert_eq!(body.unwrap(), layer);
}

#[tokio::test]
async fn sixteen_pulls_of_one_cold_blob_make_one_upstream_fetch() {
    let upstream = TestServer::start().await;
    let layer = Arc::new(data(16 * 1024 * 1024, 3));
    let digest = push_blob(&upstream, "library/big", &layer, None).await;
    let proxy = Proxy::start(&upstream.server.url()).await;
    let cache = Arc::new(cache_with(vec![rule("hub", &proxy.url, Duration::from_secs(3600))]).await);
    let pulls: Vec<_> = (0..16)
        .map(|_| {
            let (cache, digest, layer) = (cache.clone(), digest.clone(), layer.clone());
            tokio::spawn(async move {
                let (status, _, body) = get(&cache, &format!("/v2/hub/library/big/blobs/{digest}")).await;
                assert_eq!(status, 200);
                assert!(body.unwrap() == *layer, "the bytes differ");
            })
        })
        .collect();
    for p in pulls {
        p.await.unwrap();
    }
    assert_eq!(proxy.count("GET", &format!("/v2/library/big/blobs/{digest}")), 1);
}

#[tokio::test]
async fn a_root_rule_serves_docker_mirror_names_from_an_upstream_with_token_auth() {
    // The upstream: a Berth with authentication on (token flow); the rule carries its
    // administrator's credentials, stored sealed.
    let (upstream, _) = ecr_common::start().await;
    let auth = basic("admin", ADMIN_PW);
    let layer = data(100_000, 4);
    let image = push_image(&upstream, "library/alpine", "3.20", &layer, Some(&auth)).await;
    let cache = cache_with(vec![]).await;
    let r = cache
        .client
        .post(cache.url("/api/v1/pull-through-rules"))
        .json(&json!({"prefix": "ROOT", "upstream": upstream.server.url(), "username": "admin", "password": ADMIN_PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["rule"]["credentials"], "basic");
    assert!(!view.to_string().contains(ADMIN_PW), "{view}");
    let r = cache.client.post(cache.url("/api/v1/pull-through-rules/ROOT/validate")).send().await.unwrap();
    let valid: Value = r.json().await.unwrap();
    assert_eq!(valid["valid"], true, "{valid}");

    pull_image(&cache, "library/alpine", "3.20", &image, &layer).await;
    // The credentials are sealed at rest: not in the metadata database's file.
    let db = std::fs::read(cache.dir.path().join("metadata.db")).unwrap();
    assert!(!db.windows(ADMIN_PW.len()).any(|w| w == ADMIN_PW.as_bytes()), "the password is in the database");

    // Wrong credentials: validation says so, and a miss answers 502 with the reason.
    let r = cache
        .client
        .put(cache.url("/api/v1/pull-through-rules/ROOT"))
        .json(&json!({"upstream": upstream.server.url(), "username": "admin", "password": "wrong-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = cache.client.post(cache.url("/api/v1/pull-through-rules/ROOT/validate")).send().await.unwrap();
    let valid: Value = r.json().await.unwrap();
    assert_eq!(valid["valid"], false, "{valid}");
    assert!(valid["failure"].as_str().unwrap().len() > 5);
    let (status, _, _) = get(&cache, "/v2/library/busybox/manifests/latest").await;
    assert_eq!(status, 502);
    // What is cached is still served.
    pull_image(&cache, "library/alpine", "3.20", &image, &layer).await;
}

#[tokio::test]
async fn rules_are_managed_by_the_admin_api_and_the_ecr_api() {
    let (cache, ecr) = ecr_common::start().await;
    let admin = |m: reqwest::Method, path: &str| {
        cache.client.request(m, cache.url(&format!("/api/v1/{path}"))).header("authorization", basic("admin", ADMIN_PW))
    };
    // Bad input: a clear error, nothing stored.
    for (body, needle) in [
        (json!({"prefix": "Hub!", "upstream": "https://r.example"}), "prefix"),
        (json!({"prefix": "hub", "upstream": "r.example"}), "https://host"),
        (json!({"prefix": "hub", "upstream": "https://r.example", "username": "u"}), "together"),
        (json!({"prefix": "hub", "upstream": "https://r.example", "refresh": "soon"}), "refresh"),
    ] {
        let r = admin(reqwest::Method::POST, "pull-through-rules").json(&body).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains(needle), "{needle}");
    }
    let (status, out) = ecr
        .call(
            "CreatePullThroughCacheRule",
            &json!({"ecrRepositoryPrefix": "hub", "upstreamRegistryUrl": "registry-1.docker.io"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["upstreamRegistryUrl"], "https://registry-1.docker.io");
    assert_eq!(out["upstreamRegistry"], "docker-hub");
    let (status, out) = ecr
        .call("CreatePullThroughCacheRule", &json!({"ecrRepositoryPrefix": "hub", "upstreamRegistryUrl": "quay.io"}))
        .await;
    assert_eq!((status, out["__type"].as_str()), (400, Some("PullThroughCacheRuleAlreadyExistsException")));
    let (status, out) = ecr
        .call(
            "CreatePullThroughCacheRule",
            &json!({"ecrRepositoryPrefix": "ghcr", "upstreamRegistryUrl": "ghcr.io",
                    "credentialArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:ecr-pullthroughcache/ghcr"}),
        )
        .await;
    assert_eq!((status, out["__type"].as_str()), (400, Some("InvalidParameterException")), "{out}");
    let r = admin(reqwest::Method::POST, "pull-through-rules")
        .json(&json!({"prefix": "ghcr", "upstream": "https://ghcr.io", "username": "bot", "password": "ghp_secret_token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (status, out) = ecr.call("DescribePullThroughCacheRules", &json!({})).await;
    assert_eq!(status, 200, "{out}");
    let prefixes: Vec<&str> = out["pullThroughCacheRules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ecrRepositoryPrefix"].as_str().unwrap())
        .collect();
    assert_eq!(prefixes, ["ghcr", "hub"]);
    assert!(!out.to_string().contains("ghp_secret_token"));
    let (status, out) = ecr.call("DescribePullThroughCacheRules", &json!({"maxResults": 1})).await;
    assert_eq!((status, out["pullThroughCacheRules"].as_array().unwrap().len()), (200, 1));
    let (status, out) =
        ecr.call("DescribePullThroughCacheRules", &json!({"nextToken": out["nextToken"].as_str().unwrap()})).await;
    assert_eq!((status, out["pullThroughCacheRules"][0]["ecrRepositoryPrefix"].as_str()), (200, Some("hub")));
    let listed: Value = admin(reqwest::Method::GET, "pull-through-rules").send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["rules"][0]["username"], "bot");
    assert!(!listed.to_string().contains("ghp_secret_token"));
    // No internet here: the upstream cannot be reached, and validation says so.
    let (status, out) = ecr.call("ValidatePullThroughCacheRule", &json!({"ecrRepositoryPrefix": "hub"})).await;
    assert_eq!((status, out["isValid"].as_bool()), (200, Some(false)), "{out}");
    let (status, out) = ecr.call("UpdatePullThroughCacheRule", &json!({"ecrRepositoryPrefix": "hub"})).await;
    assert_eq!(status, 200, "{out}");
    let (status, out) = ecr.call("DeletePullThroughCacheRule", &json!({"ecrRepositoryPrefix": "hub"})).await;
    assert_eq!((status, out["ecrRepositoryPrefix"].as_str()), (200, Some("hub")), "{out}");
    let (status, out) = ecr.call("DeletePullThroughCacheRule", &json!({"ecrRepositoryPrefix": "hub"})).await;
    assert_eq!((status, out["__type"].as_str()), (400, Some("PullThroughCacheRuleNotFoundException")));
    // Each operation is its own action: a user without them is denied.
    let reader = ecr
        .for_user(
            "reader",
            Some(json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ecr:DescribePullThroughCacheRules", "Resource": "*"}]})),
        )
        .await;
    let (status, _) = reader.call("DescribePullThroughCacheRules", &json!({})).await;
    assert_eq!(status, 200);
    let (status, out) = reader
        .call("CreatePullThroughCacheRule", &json!({"ecrRepositoryPrefix": "quay", "upstreamRegistryUrl": "quay.io"}))
        .await;
    assert_eq!((status, out["__type"].as_str()), (403, Some("AccessDeniedException")), "{out}");
}

#[tokio::test]
async fn importing_needs_batch_import_upstream_image_and_pulling_the_cache_does_not() {
    let upstream = TestServer::start().await;
    let image = push_image(&upstream, "library/alpine", "1", b"a small layer", None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = ecr_common::auth_config(dir.path());
    config.pull_through.rules = vec![rule("hub", &upstream.server.url(), Duration::from_secs(3600))];
    let (cache, ecr) = ecr_common::start_with(dir, config).await;
    let pull_only = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
        "Resource": "*"}]});
    ecr.for_user("puller", Some(pull_only)).await;
    let r = cache
        .client
        .patch(format!("{}/api/v1/users/puller", cache.server.url()))
        .header("authorization", basic("admin", ADMIN_PW))
        .json(&json!({"password": "puller-password-1234"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let as_user = |user: &str, pw: &str, path: &str| {
        cache
            .client
            .get(cache.url(path))
            .header("authorization", basic(user, pw))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
    };
    let path = "/v2/hub/library/alpine/manifests/1";
    let r = as_user("puller", "puller-password-1234", path).send().await.unwrap();
    assert_eq!(r.status(), 403, "a miss needs ecr:BatchImportUpstreamImage");
    let r = as_user("admin", ADMIN_PW, path).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = as_user("puller", "puller-password-1234", path).send().await.unwrap();
    assert_eq!(r.status(), 200, "what is cached is pulled with the pull actions alone");
    assert_eq!(r.headers()["docker-content-digest"].to_str().unwrap(), image.digest);
}

#[tokio::test]
async fn a_cold_blob_reaches_the_client_while_the_upstream_is_still_sending_it() {
    let upstream = TestServer::start().await;
    let layer = data(4 * 1024 * 1024, 5);
    let digest = push_blob(&upstream, "library/slow", &layer, None).await;
    let proxy = Proxy::start(&upstream.server.url()).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    *proxy.state.hold.lock().unwrap() = Some((digest.clone(), gate.clone()));
    let cache = cache_with(vec![rule("hub", &proxy.url, Duration::from_secs(3600))]).await;
    let r = cache.client.get(cache.url(&format!("/v2/hub/library/slow/blobs/{digest}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.content_length(), Some(layer.len() as u64));
    let mut body = r.bytes_stream();
    let mut got = Vec::new();
    // The upstream has sent at most its first MiB and a bit: the client gets bytes now (a
    // cache that waited for the whole blob would give none until the gate opens).
    let early = tokio::time::timeout(Duration::from_secs(60), async {
        while got.len() < HOLD_AFTER / 2 {
            got.extend_from_slice(&body.next().await.unwrap().unwrap());
        }
    })
    .await;
    assert!(early.is_ok(), "no byte reached the client while the upstream was still sending");
    assert!(got.len() < layer.len(), "the client had the whole blob before the upstream sent it");
    gate.add_permits(1);
    while let Some(piece) = body.next().await {
        got.extend_from_slice(&piece.unwrap());
    }
    assert!(got == layer, "the bytes differ");
    // And it was stored: served with the upstream down.
    proxy.set_down(true);
    let (status, _, body) = get(&cache, &format!("/v2/hub/library/slow/blobs/{digest}")).await;
    assert_eq!(status, 200);
    assert!(body.unwrap() == layer);
}

#[tokio::test]
async fn an_index_is_cached_and_its_children_fetched_when_asked_for() {
    let upstream = TestServer::start().await;
    let amd = push_image(&upstream, "library/multi", "amd64", b"amd64 layer", None).await;
    let arm = push_image(&upstream, "library/multi", "arm64", b"arm64 layer", None).await;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd.digest,
             "size": amd.manifest.len(), "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm.digest,
             "size": arm.manifest.len(), "platform": {"architecture": "arm64", "os": "linux"}}
        ]
    })
    .to_string();
    let r = upstream
        .client
        .put(upstream.url("/v2/library/multi/manifests/latest"))
        .header("content-type", "application/vnd.oci.image.index.v1+json")
        .body(index.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let proxy = Proxy::start(&upstream.server.url()).await;
    let cache = cache_with(vec![rule("hub", &proxy.url, Duration::from_secs(3600))]).await;
    let (status, digest, body) = get(&cache, "/v2/hub/library/multi/manifests/latest").await;
    assert_eq!((status, digest), (200, sha256(index.as_bytes())));
    assert_eq!(body.unwrap(), index.as_bytes());
    // Only the index so far; a child comes when a client asks for it.
    assert_eq!(proxy.count("GET", &format!("/v2/library/multi/manifests/{}", arm.digest)), 0);
    pull_image(&cache, "hub/library/multi", &arm.digest, &arm, b"arm64 layer").await;
    assert_eq!(proxy.count("GET", &format!("/v2/library/multi/manifests/{}", arm.digest)), 1);
    assert_eq!(proxy.count("GET", &format!("/v2/library/multi/manifests/{}", amd.digest)), 0);
}

/// CNCF Distribution (`docker-registry`) on a loopback port with htpasswd users, its data and
/// config in a temporary folder. Stopped (by its PID) on drop.
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

async fn distribution(user: &str, password: &str) -> Distribution {
    let dir = tempfile::tempdir().unwrap();
    // Distribution binds the address itself: a port the OS just gave out and released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = std::process::Command::new("htpasswd").args(["-nbB", user, password]).output().unwrap();
    assert!(out.status.success(), "htpasswd: {}", String::from_utf8_lossy(&out.stderr));
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, out.stdout).unwrap();
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n\
         auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
        dir.path().join("data").display(),
        htpasswd.display()
    );
    let config_path = dir.path().join("config.yml");
    std::fs::write(&config_path, config).unwrap();
    let child = std::process::Command::new("/usr/bin/docker-registry")
        .arg("serve")
        .arg(&config_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let d = Distribution { child, url: format!("http://127.0.0.1:{port}"), _dir: dir };
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while client.get(format!("{}/v2/", d.url)).send().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "docker-registry did not answer within a minute");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d
}

/// A blob pushed to `base` in two requests (POST, then PUT `?digest=`), as every registry takes it.
async fn push_blob_to(client: &reqwest::Client, base: &str, auth: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let r = client.post(format!("{base}/v2/{repo}/blobs/uploads/")).header("authorization", auth).send().await.unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let location = if location.starts_with('/') { format!("{base}{location}") } else { location };
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = client
        .put(format!("{location}{sep}digest={digest}"))
        .header("authorization", auth)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    digest
}

#[tokio::test]
#[ignore = "needs docker-registry and htpasswd (apt-get install docker-registry apache2-utils)"]
async fn distribution_with_htpasswd_as_the_upstream() {
    let d = distribution("alice", "alice-password").await;
    let client = reqwest::Client::new();
    let auth = basic("alice", "alice-password");
    let layer = data(5 * 1024 * 1024, 6);
    let config_bytes = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let config = push_blob_to(&client, &d.url, &auth, "library/app", &config_bytes).await;
    let layer_digest = push_blob_to(&client, &d.url, &auth, "library/app", &layer).await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_bytes.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}]
    })
    .to_string();
    let r = client
        .put(format!("{}/v2/library/app/manifests/v1", d.url))
        .header("authorization", &auth)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let image = Image { digest: sha256(manifest.as_bytes()), manifest, config, layer: layer_digest };

    let mut r = rule("dist", &d.url, Duration::from_secs(3600));
    r.username = Some("alice".into());
    r.password = Some(String::from("alice-password").into());
    let cache = Arc::new(cache_with(vec![r]).await);
    // Eight clients at once on the cold image.
    let pulls: Vec<_> = (0..8)
        .map(|_| {
            let cache = cache.clone();
            let image = clone_image(&image);
            let layer = layer.clone();
            tokio::spawn(async move { pull_image(&cache, "dist/library/app", "v1", &image, &layer).await })
        })
        .collect();
    for p in pulls {
        p.await.unwrap();
    }
    drop(d);
    pull_image(&cache, "dist/library/app", "v1", &image, &layer).await;
}

fn clone_image(i: &Image) -> Image {
    Image { digest: i.digest.clone(), manifest: i.manifest.clone(), config: i.config.clone(), layer: i.layer.clone() }
}

/// `berth ARGS --data-dir DIR` (authentication off), `stdin` on its input.
fn berth_in(dir: &std::path::Path, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .args(["--data-dir", dir.to_str().unwrap()])
        .env("BERTH_AUTH__ENABLED", "false")
        .env("BERTH_LOG__LEVEL", "warn")
        .env_remove("BERTH_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn the_cli_manages_rules_that_the_running_server_uses() {
    let upstream = TestServer::start().await;
    let image = push_image(&upstream, "library/alpine", "3", b"cli layer", None).await;
    let cache = cache_with(vec![]).await;
    let dir = cache.dir.path();
    let upstream_url = upstream.server.url();
    let o = berth_in(
        dir,
        &["pull-through", "create", "hub", "--upstream", &upstream_url, "--username", "bot", "--password-stdin"],
        "cli-secret-password\n",
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1);
    let o = berth_in(dir, &["pull-through", "list", "--json"], "");
    let listed: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(listed["rules"][0]["prefix"], "hub");
    assert_eq!(listed["rules"][0]["credentials"], "basic");
    let all = format!("{o:?}");
    assert!(!all.contains("cli-secret-password"), "{all}");
    // Mistakes are named in the command's terms; nothing changes.
    let o = berth_in(dir, &["pull-through", "create", "ghcr", "--upstream", "https://ghcr.io", "--username", "u"], "");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--password-stdin"), "{o:?}");
    let o = berth_in(dir, &["pull-through", "create", "ghcr", "--upstream", "ghcr.io"], "");
    assert!(String::from_utf8_lossy(&o.stderr).contains("https://host"), "{o:?}");
    // The running server uses the rule the command stored (its stored rules are re-read
    // within seconds), and with Berth's upstream ignoring credentials, the pull works.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, digest, _) = get(&cache, "/v2/hub/library/alpine/manifests/3").await;
        if status == 200 {
            assert_eq!(digest, image.digest);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the server never used the rule");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let o = berth_in(dir, &["pull-through", "delete", "hub"], "");
    assert!(o.status.success(), "{o:?}");
    let o = berth_in(dir, &["pull-through", "get", "hub"], "");
    assert_eq!(o.status.code(), Some(1));
}

/// Whether some file under `dir` has exactly `content`.
fn holds_file_with(dir: &std::path::Path, content: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().flatten().any(|e| {
        let path = e.path();
        if path.is_dir() {
            holds_file_with(&path, content)
        } else {
            std::fs::metadata(&path).is_ok_and(|m| m.len() == content.len() as u64)
                && std::fs::read(&path).is_ok_and(|b| b == content)
        }
    })
}
