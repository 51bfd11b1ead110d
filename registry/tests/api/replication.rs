//! Replication to other registries (README "Replication"): Berth A copies what is pushed to
//! it to Berth B (token authentication on) or to CNCF Distribution, driven by the events
//! outbox. The destination down during pushes (everything arrives, in order), A stopped
//! mid-copy (the copy resumes after the restart, nothing partial is tagged at B), a
//! multi-arch index with a signature (arrives whole), status transitions with a dead letter
//! and its replay, the configuration's checks, and ECR's operations.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_registry::app::RunningServer;
use berth_registry::config::Config;
use berth_registry::events::EventsConfig;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{TestServer, config_in, data, sha256};

const B_PASSWORD: &str = "admin-password-for-replication-tests";
const WAIT: Duration = Duration::from_secs(30);
const LEASE: Duration = Duration::from_secs(2);
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

// ---------------------------------------------------------------------------------------
// Helpers.

fn events_config() -> EventsConfig {
    EventsConfig {
        poll_interval: Duration::from_millis(200),
        backoff_initial: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        lease: LEASE,
        ..EventsConfig::default()
    }
}

/// Registry A: authentication off, short event timings.
fn a_config(dir: &std::path::Path) -> Config {
    Config { events: events_config(), ..config_in(dir) }
}

/// Registry B: authentication on (token flow), its administrator's password known.
fn b_config(dir: &std::path::Path) -> Config {
    let mut c = config_in(dir);
    c.auth.enabled = true;
    c.auth.admin_password = Some(B_PASSWORD.to_owned().into());
    c
}

async fn start_a() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let config = a_config(dir.path());
    TestServer::start_with(dir, config).await
}

async fn start_b() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let config = b_config(dir.path());
    TestServer::start_with(dir, config).await
}

/// Starts a registry on `addr` (a port used before, by a server stopped since) with the
/// configuration `config` makes for `dir`.
async fn start_on(addr: SocketAddr, dir: tempfile::TempDir, config: fn(&std::path::Path) -> Config) -> TestServer {
    let listener = TcpListener::bind(addr).await.unwrap();
    let server = RunningServer::start(listener, &config(dir.path())).await.unwrap();
    TestServer { server, client: reqwest::Client::new(), dir }
}

/// Whether anything answers at `addr`.
async fn answers(addr: SocketAddr) -> bool {
    reqwest::get(format!("http://{addr}/v2/")).await.is_ok()
}

fn addr_of(t: &TestServer) -> SocketAddr {
    t.server.url().trim_start_matches("http://").parse().unwrap()
}

fn basic_b() -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("admin:{B_PASSWORD}")))
}

async fn send_json(r: reqwest::RequestBuilder) -> (u16, Value) {
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, value)
}

async fn eventually<T>(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(why) if start.elapsed() > limit => panic!("timed out after {limit:?} waiting for {what}: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The configuration replicating `filters` (prefixes) of A to `url` as B's administrator.
fn replicate_to(url: &str, filters: &[&str], extra: Value) -> Value {
    let mut destination = json!({ "name": "site-b", "url": url, "username": "admin", "password": B_PASSWORD });
    if let (Some(d), Some(e)) = (destination.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    let filters: Vec<Value> = filters.iter().map(|f| json!({ "filter": f, "filter_type": "PREFIX_MATCH" })).collect();
    json!({ "destinations": [destination], "rules": [{ "destinations": ["site-b"], "repository_filters": filters }] })
}

async fn put_replication(t: &TestServer, config: &Value) -> (u16, Value) {
    send_json(t.client.put(t.url("/api/v1/replication")).json(config)).await
}

async fn configure(t: &TestServer, config: &Value) {
    let (status, body) = put_replication(t, config).await;
    assert_eq!(status, 200, "{body}");
}

/// Pushes `bytes` as a blob of `repo` on `t` (monolithic), with `auth` if given.
async fn put_blob(t: &TestServer, auth: Option<&str>, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let mut r = t.client.post(t.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"))).body(bytes.to_vec());
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    digest
}

async fn put_manifest(t: &TestServer, repo: &str, reference: &str, media_type: &str, body: &Value) -> String {
    let bytes = body.to_string();
    let r = t
        .client
        .put(t.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", media_type)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    sha256(bytes.as_bytes())
}

/// An image (config + one layer of `layer_len` bytes) pushed by digest, or by `tag`; its
/// manifest's digest.
async fn push_image(t: &TestServer, repo: &str, tag: Option<&str>, seed: u8, layer_len: usize) -> String {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}").into_bytes();
    let layer = data(layer_len, seed);
    let config_digest = put_blob(t, None, repo, &config).await;
    let layer_digest = put_blob(t, None, repo, &layer).await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len() }],
    });
    let digest = sha256(manifest.to_string().as_bytes());
    put_manifest(t, repo, tag.unwrap_or(&digest), MANIFEST, &manifest).await
}

/// What B answers for a manifest of `repo`: status, digest header, body.
async fn b_manifest(b: &TestServer, repo: &str, reference: &str) -> (u16, Option<String>, Vec<u8>) {
    let r = b
        .client
        .get(b.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("authorization", basic_b())
        .header("accept", format!("{MANIFEST}, {INDEX}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let digest = r.headers().get("docker-content-digest").map(|v| v.to_str().unwrap().to_owned());
    (status, digest, r.bytes().await.unwrap().to_vec())
}

async fn b_has_blob(b: &TestServer, repo: &str, digest: &str) -> bool {
    let r = b
        .client
        .head(b.url(&format!("/v2/{repo}/blobs/{digest}")))
        .header("authorization", basic_b())
        .send()
        .await
        .unwrap();
    r.status() == 200
}

/// Waits until B serves `repo:reference` as `digest`.
async fn arrives(b: &TestServer, repo: &str, reference: &str, digest: &str) {
    eventually(&format!("{repo}:{reference} at B"), WAIT, async || {
        let (status, got, _) = b_manifest(b, repo, reference).await;
        if status == 200 && got.as_deref() == Some(digest) { Ok(()) } else { Err(format!("{status} {got:?}")) }
    })
    .await;
}

/// The status of `repo@reference` at destination `b`, as the admin API shows it.
async fn status_at_b(a: &TestServer, repo: &str, reference: &str) -> Option<Value> {
    let url = a.url(&format!("/api/v1/replication/status?repository={repo}&reference={reference}"));
    let (status, body) = send_json(a.client.get(url)).await;
    assert_eq!(status, 200, "{body}");
    body["statuses"].as_array().unwrap().iter().find(|s| s["destination"] == "site-b").cloned()
}

async fn wait_status(a: &TestServer, repo: &str, reference: &str, want: &str) -> Value {
    eventually(&format!("{repo}@{reference} to be {want} at site-b"), WAIT, async || {
        match status_at_b(a, repo, reference).await {
            Some(s) if s["status"] == want => Ok(s),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// A TCP forwarder to `target` that, while `hold` is set, holds every blob upload's PUT
/// (never forwards it, keeps the connection open): a copy stuck mid-way.
struct Gate {
    addr: SocketAddr,
    hold: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Gate {
    async fn start(target: SocketAddr) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (hold, held) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicUsize::new(0)));
        let (h, n) = (hold.clone(), held.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (h, n) = (h.clone(), n.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let down = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(len) = cr.read(&mut buf).await {
                        if len == 0 {
                            break;
                        }
                        let chunk = &buf[..len];
                        let is_blob_put =
                            chunk.starts_with(b"PUT ") && chunk.windows(15).any(|w| w == b"/blobs/uploads/");
                        if is_blob_put && h.load(Ordering::SeqCst) {
                            n.fetch_add(1, Ordering::SeqCst);
                            // Held: nothing more goes through on this connection.
                            std::future::pending::<()>().await;
                        }
                        if sw.write_all(chunk).await.is_err() {
                            break;
                        }
                    }
                    down.abort();
                });
            }
        });
        Gate { addr, hold, held, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------
// Tests.

/// Berth A → Berth B with token authentication: a push matching the rule arrives whole
/// (blobs, manifest by digest, tag), one that does not stays home; the status is COMPLETE;
/// the credentials are never shown, and not in A's files in the clear.
#[tokio::test]
async fn berth_to_berth_with_token_auth() {
    let (a, b) = (start_a().await, start_b().await);
    configure(&a, &replicate_to(&b.server.url(), &["prod/"], json!({}))).await;
    let (status, shown) = send_json(a.client.get(a.url("/api/v1/replication"))).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["source"], "api");
    assert_eq!(shown["destinations"][0]["auth"], "basic");
    assert_eq!(shown["destinations"][0]["username"], "admin");
    assert!(!shown.to_string().contains(B_PASSWORD), "no password in the view: {shown}");

    let digest = push_image(&a, "prod/app", Some("v1"), 1, 300_000).await;
    let other = push_image(&a, "dev/app", Some("v1"), 2, 1000).await;
    arrives(&b, "prod/app", "v1", &digest).await;
    let (_, _, body) = b_manifest(&b, "prod/app", &digest).await;
    let manifest: Value = serde_json::from_slice(&body).unwrap();
    for blob in [&manifest["config"]["digest"], &manifest["layers"][0]["digest"]] {
        assert!(b_has_blob(&b, "prod/app", blob.as_str().unwrap()).await, "{blob} at B");
    }
    let s = wait_status(&a, "prod/app", "v1", "COMPLETE").await;
    assert_eq!(s["registry_id"], "000000000000");
    assert!(s.get("reason").is_none(), "{s}");
    // By digest too; dev/app matches no rule: not copied, no status.
    assert_eq!(status_at_b(&a, "prod/app", &digest).await.unwrap()["status"], "COMPLETE");
    assert_eq!(status_at_b(&a, "dev/app", &other).await, None);
    assert_eq!(b_manifest(&b, "dev/app", "v1").await.0, 404);

    // The copy is a delivery of subscription replication.site-b, in the delivery log.
    // (The status is written as the copy ends, the delivery recorded just after.)
    eventually("the delivery to be recorded delivered", WAIT, async || {
        let url = a.url("/api/v1/deliveries?subscription=replication.site-b");
        let (status, list) = send_json(a.client.get(url)).await;
        assert_eq!(status, 200, "{list}");
        let states: Vec<&Value> = list["deliveries"].as_array().unwrap().iter().map(|d| &d["state"]).collect();
        if states == [&json!("delivered")] { Ok(()) } else { Err(list.to_string()) }
    })
    .await;

    // It is not a webhook: not listed, not editable as one.
    let (_, hooks) = send_json(a.client.get(a.url("/api/v1/webhooks"))).await;
    assert!(!hooks.to_string().contains("replication.site-b"), "{hooks}");
    let (status, body) = send_json(a.client.delete(a.url("/api/v1/webhooks/replication.site-b"))).await;
    assert_eq!(status, 409, "{body}");

    // The password is sealed at rest: in no file of A's data folder.
    let mut stack = vec![a.dir.path().to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                let found = bytes.windows(B_PASSWORD.len()).any(|w| w == B_PASSWORD.as_bytes());
                assert!(!found, "the destination's password is in {} in the clear", path.display());
            }
        }
    }
    a.server.stop().await;
    b.server.stop().await;
}

/// B down while A takes pushes; B back: everything arrives, and the tag moved twice ends
/// where it was moved last (the pushes are copied in order).
#[tokio::test]
async fn destination_down_then_up_everything_arrives() {
    let a = start_a().await;
    let b = start_b().await;
    let b_addr = addr_of(&b);
    configure(&a, &replicate_to(&b.server.url(), &["prod/"], json!({ "max_attempts": 100 }))).await;
    let TestServer { server, dir: b_dir, .. } = b;
    server.stop().await;

    let first = push_image(&a, "prod/down", Some("v1"), 11, 50_000).await;
    let second = push_image(&a, "prod/down", Some("v2"), 12, 50_000).await;
    // `latest` moves: to the first, then to the second.
    let latest_first = push_image(&a, "prod/down", Some("latest"), 11, 50_000).await;
    assert_eq!(latest_first, first);
    let latest = push_image(&a, "prod/down", Some("latest"), 12, 50_000).await;
    assert_eq!(latest, second);
    let s = eventually("a failed attempt to show", WAIT, async || match status_at_b(&a, "prod/down", "v1").await {
        Some(s) if s["status"] == "IN_PROGRESS" && s["reason"].is_string() => Ok(s),
        other => Err(format!("{other:?}")),
    })
    .await;
    assert!(!s["reason"].as_str().unwrap().is_empty(), "{s}");
    assert!(!answers(b_addr).await, "B is down");

    let b = start_on(b_addr, b_dir, b_config).await;
    arrives(&b, "prod/down", "v1", &first).await;
    arrives(&b, "prod/down", "v2", &second).await;
    // Every delivery done: then `latest` is where the last push put it.
    eventually("every delivery to be delivered", WAIT, async || {
        let (_, list) = send_json(a.client.get(a.url("/api/v1/deliveries?subscription=replication.site-b"))).await;
        let states: Vec<&Value> = list["deliveries"].as_array().unwrap().iter().map(|d| &d["state"]).collect();
        if states.len() == 4 && states.iter().all(|s| *s == "delivered") { Ok(()) } else { Err(format!("{states:?}")) }
    })
    .await;
    assert_eq!(b_manifest(&b, "prod/down", "latest").await.1.as_deref(), Some(latest.as_str()));
    assert_eq!(wait_status(&a, "prod/down", "v1", "COMPLETE").await["status"], "COMPLETE");
    a.server.stop().await;
    b.server.stop().await;
}

/// A stopped while the layer is on its way to B (the upload held by a gate): meanwhile the
/// copy keeps its lease (it is not started twice), nothing is tagged at B; restarted, A
/// resumes the copy once the lease ends, and the image arrives.
#[tokio::test]
async fn a_stopped_mid_copy_resumes_and_tags_nothing_partial() {
    let b = start_b().await;
    let gate = Gate::start(addr_of(&b)).await;
    // A's data folder outlives its first process (the TestServer keeps an unused one).
    let a_dir = tempfile::tempdir().unwrap();
    let a = TestServer::start_with(tempfile::tempdir().unwrap(), a_config(a_dir.path())).await;
    configure(&a, &replicate_to(&gate.url(), &["prod/"], json!({}))).await;

    let digest = push_image(&a, "prod/held", Some("v1"), 21, 2_000_000).await;
    eventually("the layer's upload to be held", WAIT, async || {
        if gate.held.load(Ordering::SeqCst) > 0 { Ok(()) } else { Err("not yet".into()) }
    })
    .await;
    assert_eq!(status_at_b(&a, "prod/held", "v1").await.unwrap()["status"], "IN_PROGRESS");
    // A copy outlasting its lease keeps it (renewed): it is not started a second time.
    tokio::time::sleep(LEASE * 2 + Duration::from_secs(1)).await;
    assert_eq!(gate.held.load(Ordering::SeqCst), 1, "the copy was started again while in flight");
    a.server.stop().await;
    // Nothing partial is visible at B: no tag, no manifest.
    assert_eq!(b_manifest(&b, "prod/held", "v1").await.0, 404);
    assert_eq!(b_manifest(&b, "prod/held", &digest).await.0, 404);

    gate.hold.store(false, Ordering::SeqCst);
    let a = TestServer::start_with(tempfile::tempdir().unwrap(), a_config(a_dir.path())).await;
    arrives(&b, "prod/held", "v1", &digest).await;
    wait_status(&a, "prod/held", "v1", "COMPLETE").await;
    a.server.stop().await;
    b.server.stop().await;
    drop(a_dir);
}

/// A multi-arch index (two platforms) with a signature whose subject is the index: at B the
/// children, the index, its tag and the signature (listed by B's referrers API).
#[tokio::test]
async fn multi_arch_index_with_a_signature_arrives_whole() {
    let (a, b) = (start_a().await, start_b().await);
    configure(&a, &replicate_to(&b.server.url(), &["prod/"], json!({}))).await;
    let repo = "prod/multi";
    let amd = push_image(&a, repo, None, 31, 20_000).await;
    let arm = push_image(&a, repo, None, 32, 20_000).await;
    let child = |digest: &str, arch: &str| json!({ "mediaType": MANIFEST, "digest": digest, "size": 0, "platform": { "architecture": arch, "os": "linux" } });
    // The children's sizes, as the index must give them.
    let mut children = vec![child(&amd, "amd64"), child(&arm, "arm64")];
    for c in &mut children {
        let r = a
            .client
            .get(a.url(&format!("/v2/{repo}/manifests/{}", c["digest"].as_str().unwrap())))
            .header("accept", MANIFEST)
            .send()
            .await
            .unwrap();
        c["size"] = json!(r.bytes().await.unwrap().len());
    }
    let index = json!({ "schemaVersion": 2, "mediaType": INDEX, "manifests": children });
    let index_digest = put_manifest(&a, repo, "v1", INDEX, &index).await;
    let index_size = index.to_string().len();
    let empty = put_blob(&a, None, repo, b"{}").await;
    let payload = br#"{"critical":{"identity":{"docker-reference":"prod/multi"}}}"#;
    let payload_digest = put_blob(&a, None, repo, payload).await;
    let signature = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2 },
        "layers": [{ "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": payload_digest, "size": payload.len() }],
        "subject": { "mediaType": INDEX, "digest": index_digest, "size": index_size },
    });
    let signature_digest = sha256(signature.to_string().as_bytes());
    put_manifest(&a, repo, &signature_digest, MANIFEST, &signature).await;

    arrives(&b, repo, "v1", &index_digest).await;
    for d in [&amd, &arm, &signature_digest] {
        arrives(&b, repo, d, d).await;
    }
    assert!(b_has_blob(&b, repo, &payload_digest).await);
    let r = b
        .client
        .get(b.url(&format!("/v2/{repo}/referrers/{index_digest}")))
        .header("authorization", basic_b())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let referrers: Value = r.json().await.unwrap();
    let listed: Vec<&str> =
        referrers["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap()).collect();
    assert_eq!(listed, [signature_digest.as_str()], "{referrers}");
    for d in [&index_digest, &amd, &arm, &signature_digest] {
        wait_status(&a, repo, d, "COMPLETE").await;
    }
    a.server.stop().await;
    b.server.stop().await;
}

/// PENDING before any attempt (A not delivering), IN_PROGRESS with the reason after a
/// failed one, FAILED (dead-lettered) after the last, COMPLETE after a replay with B up.
#[tokio::test]
async fn status_transitions_through_a_dead_letter_and_its_replay() {
    let b = start_b().await;
    let b_addr = addr_of(&b);
    let a_dir = tempfile::tempdir().unwrap();
    let quiet =
        |dir: &std::path::Path| Config { events: EventsConfig { enabled: false, ..events_config() }, ..a_config(dir) };
    let a = TestServer::start_with(tempfile::tempdir().unwrap(), quiet(a_dir.path())).await;
    configure(&a, &replicate_to(&b.server.url(), &["prod/"], json!({ "max_attempts": 2 }))).await;
    let digest = push_image(&a, "prod/states", Some("v1"), 41, 1000).await;
    let s = status_at_b(&a, "prod/states", "v1").await.unwrap();
    assert_eq!(s["status"], "PENDING", "{s}");
    let TestServer { server, .. } = a;
    server.stop().await;
    let TestServer { server, dir: b_dir, .. } = b;
    server.stop().await;

    // Delivering, with B down and a slow second attempt: IN_PROGRESS with a reason, then FAILED.
    let slow = |dir: &std::path::Path| Config {
        events: EventsConfig {
            backoff_initial: Duration::from_secs(4),
            backoff_max: Duration::from_secs(4),
            ..events_config()
        },
        ..a_config(dir)
    };
    let a = TestServer::start_with(tempfile::tempdir().unwrap(), slow(a_dir.path())).await;
    eventually("IN_PROGRESS with the failure's reason", WAIT, async || {
        match status_at_b(&a, "prod/states", "v1").await {
            Some(s) if s["status"] == "IN_PROGRESS" && s["reason"].as_str().is_some_and(|r| !r.is_empty()) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let s = wait_status(&a, "prod/states", "v1", "FAILED").await;
    assert!(s["reason"].as_str().is_some_and(|r| !r.is_empty()), "{s}");
    eventually("the delivery to be dead-lettered", WAIT, async || {
        let url = a.url("/api/v1/deliveries?subscription=replication.site-b&state=dead");
        let (_, dead) = send_json(a.client.get(url)).await;
        if dead["deliveries"].as_array().is_some_and(|d| d.len() == 1) { Ok(()) } else { Err(dead.to_string()) }
    })
    .await;

    let b = start_on(b_addr, b_dir, b_config).await;
    let (status, body) =
        send_json(a.client.post(a.url("/api/v1/deliveries/replay?subscription=replication.site-b&state=dead"))).await;
    assert_eq!((status, &body), (200, &json!({ "replayed": 1 })));
    arrives(&b, "prod/states", "v1", &digest).await;
    let s = wait_status(&a, "prod/states", "v1", "COMPLETE").await;
    assert!(s.get("reason").is_none(), "{s}");
    a.server.stop().await;
    b.server.stop().await;
    drop(a_dir);
}

/// Bad configurations are refused with what is wrong and change nothing; a configuration
/// file's [replication] is stored at start and is read-only through the API.
#[tokio::test]
async fn configuration_checks_and_the_file_wins() {
    let a = start_a().await;
    let good = replicate_to("https://b.example.com", &["prod/"], json!({}));
    configure(&a, &good).await;
    for (bad, says) in [
        (replicate_to("ftp://b.example.com", &["prod/"], json!({})), "http:// or https://"),
        (replicate_to("https://b.example.com", &["Prod"], json!({})), "filter \"Prod\""),
        (json!({ "destinations": [], "rules": [{ "destinations": ["nope"] }] }), "no destination named \"nope\""),
        (json!({ "destinations": [{ "name": "site-b", "url": "https://x", "extra": 1 }] }), "unknown field"),
    ] {
        let (status, body) = put_replication(&a, &bad).await;
        assert_eq!(status, 400, "{bad} -> {body}");
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{body} should say {says:?}");
    }
    let (_, shown) = send_json(a.client.get(a.url("/api/v1/replication"))).await;
    assert_eq!(shown["destinations"][0]["url"], "https://b.example.com", "unchanged: {shown}");
    // Without the password: the stored one of the same user is kept.
    let mut again = good.clone();
    again["destinations"][0].as_object_mut().unwrap().remove("password");
    configure(&a, &again).await;
    a.server.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let mut config = a_config(dir.path());
    config.replication =
        serde_json::from_value(replicate_to("https://c.example.com", &["release/"], json!({}))).unwrap();
    let t = TestServer::start_with(dir, config).await;
    let (_, shown) = send_json(t.client.get(t.url("/api/v1/replication"))).await;
    assert_eq!(shown["source"], "config", "{shown}");
    assert_eq!(shown["rules"][0]["repository_filters"][0]["filter"], "release/");
    let (status, body) = put_replication(&t, &good).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("[replication]"), "{body}");
    t.server.stop().await;
}

/// ECR's operations: PutReplicationConfiguration names destinations by region (their name)
/// and registryId, DescribeRegistry answers the rules, DescribeImageReplicationStatus the
/// status of an image (PENDING as IN_PROGRESS; FAILED with its failureCode).
#[tokio::test]
async fn ecr_operations() {
    let (a, ecr) = crate::ecr_common::start().await;
    let admin = crate::ecr_common::basic("admin", crate::ecr_common::ADMIN_PW);
    let config = json!({
        "destinations": [{ "name": "dr-site", "url": "http://127.0.0.1:9", "registry_id": "123456789012" }],
        "rules": [],
    });
    let r =
        a.client.put(a.url("/api/v1/replication")).header("authorization", &admin).json(&config).send().await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);

    let rules = json!({ "rules": [{
        "destinations": [{ "region": "dr-site", "registryId": "123456789012" }],
        "repositoryFilters": [{ "filter": "prod", "filterType": "PREFIX_MATCH" }],
    }] });
    let (status, body) = ecr.call("PutReplicationConfiguration", &json!({ "replicationConfiguration": rules })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "replicationConfiguration": rules }));
    let (status, body) = ecr.call("DescribeRegistry", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["replicationConfiguration"], rules);

    let unknown = json!({ "rules": [{ "destinations": [{ "region": "elsewhere", "registryId": "123456789012" }] }] });
    let (status, body) = ecr.call("PutReplicationConfiguration", &json!({ "replicationConfiguration": unknown })).await;
    assert_eq!((status, body["__type"].as_str()), (400, Some("InvalidParameterException")), "{body}");
    let wrong_id = json!({ "rules": [{ "destinations": [{ "region": "dr-site", "registryId": "000000000001" }] }] });
    let (status, body) =
        ecr.call("PutReplicationConfiguration", &json!({ "replicationConfiguration": wrong_id })).await;
    assert_eq!((status, body["__type"].as_str()), (400, Some("InvalidParameterException")), "{body}");

    // An image pushed to prod/app: owed to dr-site (nothing delivers to port 9).
    let config_blob = put_blob(&a, Some(&admin), "prod/app", b"{}").await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_blob, "size": 2 },
        "layers": [],
    });
    let r = a
        .client
        .put(a.url("/v2/prod/app/manifests/v1"))
        .header("authorization", &admin)
        .header("content-type", MANIFEST)
        .body(manifest.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let image = sha256(manifest.to_string().as_bytes());
    let (status, body) = ecr
        .call(
            "DescribeImageReplicationStatus",
            &json!({ "repositoryName": "prod/app", "imageId": { "imageTag": "v1" } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["repositoryName"], "prod/app");
    assert_eq!(body["imageId"], json!({ "imageDigest": image, "imageTag": "v1" }));
    let statuses = body["replicationStatuses"].as_array().unwrap();
    assert_eq!(statuses.len(), 1, "{body}");
    assert_eq!((&statuses[0]["region"], &statuses[0]["registryId"]), (&json!("dr-site"), &json!("123456789012")));
    assert!(matches!(statuses[0]["status"].as_str(), Some("IN_PROGRESS" | "FAILED")), "{body}");

    let (status, body) = ecr
        .call(
            "DescribeImageReplicationStatus",
            &json!({ "repositoryName": "prod/none", "imageId": { "imageTag": "v1" } }),
        )
        .await;
    assert_eq!((status, body["__type"].as_str()), (400, Some("RepositoryNotFoundException")), "{body}");
    let (status, body) = ecr
        .call(
            "DescribeImageReplicationStatus",
            &json!({ "repositoryName": "prod/app", "imageId": { "imageTag": "v9" } }),
        )
        .await;
    assert_eq!((status, body["__type"].as_str()), (400, Some("ImageNotFoundException")), "{body}");
    a.server.stop().await;
}

/// Berth A → CNCF Distribution (anonymous): a multi-arch index arrives whole.
#[tokio::test]
#[ignore = "needs docker-registry (Debian package docker-registry: /usr/bin/docker-registry)"]
async fn berth_to_distribution() {
    let dist_dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = dist_dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dist_dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut dist = std::process::Command::new("/usr/bin/docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker-registry");
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    eventually("Distribution to answer", WAIT, async || {
        client.get(format!("{url}/v2/")).send().await.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;

    let a = start_a().await;
    let config = json!({
        "destinations": [{ "name": "dist", "url": url }],
        "rules": [{ "destinations": ["dist"], "repository_filters": [{ "filter": "prod/" }] }],
    });
    configure(&a, &config).await;
    let amd = push_image(&a, "prod/dist", None, 51, 100_000).await;
    let arm = push_image(&a, "prod/dist", None, 52, 100_000).await;
    let mut children = Vec::new();
    for (d, arch) in [(&amd, "amd64"), (&arm, "arm64")] {
        let r = a
            .client
            .get(a.url(&format!("/v2/prod/dist/manifests/{d}")))
            .header("accept", MANIFEST)
            .send()
            .await
            .unwrap();
        let size = r.bytes().await.unwrap().len();
        children.push(json!({ "mediaType": MANIFEST, "digest": d, "size": size, "platform": { "architecture": arch, "os": "linux" } }));
    }
    let index = json!({ "schemaVersion": 2, "mediaType": INDEX, "manifests": children });
    let index_digest = put_manifest(&a, "prod/dist", "v1", INDEX, &index).await;
    let got = eventually("the index at Distribution", WAIT, async || {
        let r = client
            .get(format!("{url}/v2/prod/dist/manifests/v1"))
            .header("accept", INDEX)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let digest = r.headers().get("docker-content-digest").map(|v| v.to_str().unwrap_or("").to_owned());
        if r.status() == 200 { Ok(digest) } else { Err(r.status().to_string()) }
    })
    .await;
    assert_eq!(got.as_deref(), Some(index_digest.as_str()));
    for d in [&amd, &arm] {
        let r =
            client.get(format!("{url}/v2/prod/dist/manifests/{d}")).header("accept", MANIFEST).send().await.unwrap();
        assert_eq!(r.status(), 200, "{d} at Distribution");
    }
    a.server.stop().await;
    let _ = dist.kill();
    let _ = dist.wait();
}

/// B's events for `repo` (its outbox, read as its administrator): (kind, digest, from).
async fn b_events(b: &TestServer, repo: &str) -> Vec<(String, String, String)> {
    let url = b.url("/api/v1/events?after=0&limit=1000");
    let (status, body) = send_json(b.client.get(url).header("authorization", basic_b())).await;
    assert_eq!(status, 200, "{body}");
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["repository"] == repo)
        .map(|e| (text(&e["kind"]), text(&e["digest"]), text(&e["from_repository"])))
        .collect()
}

/// A blob B has in the repository is not sent again; one this process pushed to another
/// repository of B is mounted there, not uploaded.
#[tokio::test]
async fn blobs_at_the_destination_are_skipped_or_mounted() {
    let (a, b) = (start_a().await, start_b().await);
    configure(&a, &replicate_to(&b.server.url(), &["prod/"], json!({}))).await;
    let one = push_image(&a, "prod/one", Some("v1"), 61, 100_000).await;
    arrives(&b, "prod/one", "v1", &one).await;
    let layer = sha256(&data(100_000, 61));

    // The same layer under another config, in another repository: mounted from prod/one.
    let config = br#"{"architecture":"arm64","os":"linux"}"#;
    let config_digest = put_blob(&a, None, "prod/two", config).await;
    a.client.post(a.url(&format!("/v2/prod/two/blobs/uploads/?mount={layer}&from=prod/one"))).send().await.unwrap();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 100_000 }],
    });
    let two = put_manifest(&a, "prod/two", "v1", MANIFEST, &manifest).await;
    arrives(&b, "prod/two", "v1", &two).await;
    let events = b_events(&b, "prod/two").await;
    let of = |digest: &str| {
        events.iter().filter(|(_, d, _)| d == digest).map(|(k, _, f)| (k.as_str(), f.as_str())).collect::<Vec<_>>()
    };
    assert_eq!(of(&layer), [("blob.mount", "prod/one")], "{events:?}");
    assert_eq!(of(&config_digest), [("blob.push", "")], "{events:?}");

    // Another tag of an image B has: no blob is sent again.
    let before = b_events(&b, "prod/one").await;
    let again = push_image(&a, "prod/one", Some("v2"), 61, 100_000).await;
    assert_eq!(again, one);
    arrives(&b, "prod/one", "v2", &one).await;
    let after = b_events(&b, "prod/one").await;
    let blobs = |e: &[(String, String, String)]| e.iter().filter(|(k, _, _)| k.starts_with("blob.")).count();
    assert_eq!(blobs(&after), blobs(&before), "{after:?}");
    a.server.stop().await;
    b.server.stop().await;
}

/// `berth replication put`, `show` and `status` on a registry's data folder.
#[tokio::test]
async fn cli_puts_shows_and_tells_the_status() {
    let dir = tempfile::tempdir().unwrap();
    let quiet = Config { events: EventsConfig { enabled: false, ..events_config() }, ..config_in(dir.path()) };
    let t = TestServer::start_with(tempfile::tempdir().unwrap(), quiet.clone()).await;
    t.server.stop().await;
    let berth = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .args(["--data-dir", dir.path().to_str().unwrap()])
            .env("BERTH_AUTH__ENABLED", "false")
            .env("BERTH_LOG__LEVEL", "warn")
            .env_remove("BERTH_CONFIG")
            .output()
            .unwrap()
    };
    let file = dir.path().join("replication.json");
    std::fs::write(&file, replicate_to("https://b.example.com", &["prod/"], json!({})).to_string()).unwrap();
    let o = berth(&["replication", "put", file.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "replication configuration stored: 1 destination(s), 1 rule(s)\n");
    let o = berth(&["replication", "show"]);
    assert!(o.status.success(), "{o:?}");
    let shown: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(shown["destinations"][0]["name"], "site-b");
    assert!(!String::from_utf8_lossy(&o.stdout).contains(B_PASSWORD));

    std::fs::write(&file, r#"{"rules": [{"destinations": ["nowhere"]}]}"#).unwrap();
    let o = berth(&["replication", "put", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("no destination named \"nowhere\""), "{o:?}");

    // An image pushed while nothing delivers: PENDING.
    let t = TestServer::start_with(tempfile::tempdir().unwrap(), quiet).await;
    let digest = push_image(&t, "prod/cli", Some("v1"), 71, 1000).await;
    t.server.stop().await;
    let o = berth(&["replication", "status", "prod/cli", "v1"]);
    assert!(o.status.success(), "{o:?}");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.starts_with(&format!("prod/cli@{digest}\n")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("site-b") && l.contains("PENDING")), "{text}");
    let o = berth(&["replication", "status", "prod/cli", "v1", "--json"]);
    let status: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(status["statuses"][0]["status"], "PENDING", "{status}");
}
