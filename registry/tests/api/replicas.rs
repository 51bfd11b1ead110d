//! Replicas: several registries sharing one PostgreSQL database and one blob store (S3 when
//! `BERTH_TEST_S3_ENDPOINT` is set, else a shared folder), as behind a load balancer.
//! Ignored unless asked for: they need PostgreSQL (`BERTH_TEST_POSTGRES_URL`; CI starts it
//! and S3, then runs `cargo test -- --ignored`).

use std::time::{Duration, Instant};

use berth_registry::config::{Config, MetadataBackend, S3Config, StorageBackend};

use crate::support::*;

/// A fresh schema in the test database, dropped when the test ends.
pub(crate) struct Schema {
    pub(crate) name: String,
    pub(crate) url: String,
    admin: tokio_postgres::Client,
}

impl Schema {
    pub(crate) async fn create() -> Schema {
        let url = std::env::var("BERTH_TEST_POSTGRES_URL")
            .expect("BERTH_TEST_POSTGRES_URL: run eval \"$(bash .ci/postgres.sh start)\" first");
        let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let name = format!("replicas_{}", uuid::Uuid::new_v4().simple());
        admin.batch_execute(&format!("CREATE SCHEMA {name}")).await.unwrap();
        let separator = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{separator}options=-csearch_path%3D{name}");
        Schema { name, url, admin }
    }

    pub(crate) async fn drop(self) {
        self.admin.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name)).await.unwrap();
    }
}

/// The configuration every replica shares; `blobs` is the shared folder when there is no S3.
pub(crate) fn replica_config(schema: &Schema, blobs: &std::path::Path, prefix: &str) -> Config {
    let mut c = Config::default();
    c.auth.enabled = false;
    // Replicas share one key ring folder (in production: the same BERTH_KEYS or key files).
    let keys = blobs.join("keys");
    if !keys.join("default.1.key").exists() {
        berth_storage::crypt::KeyRing::load(Some(&keys), None).unwrap().generate("default").unwrap();
    }
    c.encryption.key_dir = Some(keys);
    c.metadata.backend = MetadataBackend::Postgres;
    c.metadata.url = Some(schema.url.clone().try_into().unwrap());
    match std::env::var("BERTH_TEST_S3_ENDPOINT") {
        Ok(endpoint) => {
            c.storage.backend = StorageBackend::S3;
            c.storage.s3 = S3Config {
                bucket: Some(std::env::var("BERTH_TEST_S3_BUCKET").unwrap_or_else(|_| "test".into())),
                prefix: Some(prefix.to_owned()),
                endpoint: Some(endpoint),
                path_style: true,
                access_key_id: Some("berth-test".into()),
                secret_access_key: Some("berth-test-secret".to_owned().into()),
                ..Default::default()
            };
        }
        Err(_) => c.storage.path = Some(blobs.to_owned()),
    }
    c
}

async fn replicas(schema: &Schema, blobs: &std::path::Path, n: usize) -> Vec<TestServer> {
    let prefix = format!("replicas/{}", schema.name);
    let mut out = Vec::new();
    for _ in 0..n {
        let dir = tempfile::tempdir().unwrap();
        let mut config = replica_config(schema, blobs, &prefix);
        config.data_dir = dir.path().to_owned();
        out.push(TestServer::start_with(dir, config).await);
    }
    out
}

#[tokio::test]
#[ignore = "needs PostgreSQL: eval \"$(bash .ci/postgres.sh start)\" (and S3: .ci/s3.sh), then cargo test -- --ignored"]
async fn an_upload_moves_between_replicas_and_survives_a_restart() {
    let schema = Schema::create().await;
    let blobs = tempfile::tempdir().unwrap();
    let mut rs = replicas(&schema, blobs.path(), 3).await;
    // Chunks under S3's 5 MiB part minimum and over it, each on another replica.
    let blob = data((3 << 20) + (3 << 20) + 100 + (6 << 20) + 1, 7);
    let cuts = [0, 3 << 20, 6 << 20, (6 << 20) + 100, (12 << 20) + 100, blob.len()];
    let location = rs[0].start_upload("replicas/moving").await;
    let path = location.trim_start_matches(&rs[0].server.url()).to_owned();
    for (i, w) in cuts.windows(2).enumerate() {
        if i == 2 {
            // Restart replica 1 between two chunks: the session lives on in PostgreSQL.
            let old = rs.remove(1);
            let dir = old.dir;
            old.server.stop().await;
            let mut config = replica_config(&schema, blobs.path(), &format!("replicas/{}", schema.name));
            config.data_dir = dir.path().to_owned();
            rs.insert(1, TestServer::start_with(dir, config).await);
        }
        let r = &rs[i % 3];
        let resp = r
            .client
            .patch(r.url(&path))
            .header("Content-Range", format!("{}-{}", w[0], w[1] - 1))
            .body(blob[w[0]..w[1]].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "chunk {i} on replica {}: {:?}", i % 3, resp.text().await);
        assert_eq!(resp.headers()["range"], format!("0-{}", w[1] - 1).as_str());
    }
    let digest = sha256(&blob);
    let r = &rs[1];
    let separator = if path.contains('?') { '&' } else { '?' };
    let resp = r.client.put(format!("{}{separator}digest={digest}", r.url(&path))).send().await.unwrap();
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
    for r in &rs {
        let got = r.client.get(r.url(&format!("/v2/replicas/moving/blobs/{digest}"))).send().await.unwrap();
        assert_eq!(got.status(), 200);
        assert!(got.bytes().await.unwrap().as_ref() == blob.as_slice(), "content differs on {}", r.server.url());
    }
    for r in rs {
        r.server.stop().await;
    }
    schema.drop().await;
}

async fn manifest_digest(t: &TestServer, repo: &str, reference: &str) -> Option<String> {
    let r = t.client.get(t.url(&format!("/v2/{repo}/manifests/{reference}"))).send().await.unwrap();
    (r.status() == 200).then(|| r.headers()["docker-content-digest"].to_str().unwrap().to_owned())
}

/// Polls `check` until it holds or `limit` passes; returns how long it took.
async fn within(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test]
#[ignore = "needs PostgreSQL: eval \"$(bash .ci/postgres.sh start)\" (and S3: .ci/s3.sh), then cargo test -- --ignored"]
async fn cached_manifests_follow_changes_made_on_another_replica() {
    let schema = Schema::create().await;
    let blobs = tempfile::tempdir().unwrap();
    let rs = replicas(&schema, blobs.path(), 2).await;
    let (a, b) = (&rs[0], &rs[1]);
    let repo = "replicas/cache";
    let v1 = push_manifest(a, repo, "latest", "1").await.0;
    // B reads (and caches) the tag and the digest.
    assert_eq!(manifest_digest(b, repo, "latest").await.as_deref(), Some(v1.as_str()));
    assert_eq!(manifest_digest(b, repo, &v1).await.as_deref(), Some(v1.as_str()));

    // A moves the tag: B follows long before its cache entry would expire.
    let v2 = push_manifest(a, repo, "latest", "2").await.0;
    let moved =
        within(Duration::from_secs(5), async || manifest_digest(b, repo, "latest").await.as_deref() == Some(&v2)).await;
    assert!(moved.is_some(), "B still serves the old tag");

    // A deletes v1: B stops serving it (the digest entry's backstop expiry is 60 s).
    let r = a.client.delete(a.url(&format!("/v2/{repo}/manifests/{v1}"))).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let gone = within(Duration::from_secs(5), async || manifest_digest(b, repo, &v1).await.is_none()).await;
    assert!(gone.is_some(), "B still serves a manifest deleted on A");
    println!("tag move seen after {moved:?}, delete after {gone:?}");
    for r in rs {
        r.server.stop().await;
    }
    schema.drop().await;
}

/// A webhook receiver recording every event it accepts (answering 200 after a short pause,
/// so deliveries overlap between replicas).
async fn receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let record = record.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                record.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
#[ignore = "needs PostgreSQL: eval \"$(bash .ci/postgres.sh start)\" (and S3: .ci/s3.sh), then cargo test -- --ignored"]
async fn replicas_share_webhook_deliveries_without_sending_twice() {
    let schema = Schema::create().await;
    let blobs = tempfile::tempdir().unwrap();
    let rs = replicas(&schema, blobs.path(), 3).await;
    let (url, seen) = receiver().await;
    let hook = serde_json::json!({"url": url, "secret": "replica-secret-0123456789", "events": ["manifest.push"]});
    let r = rs[0].client.put(rs[0].url("/api/v1/webhooks/all")).json(&hook).send().await.unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    // Three repositories, ten tags each, pushed in turn through the three replicas.
    let repos = ["replicas/hooks-a", "replicas/hooks-b", "replicas/hooks-c"];
    let mut pushed = 0u8;
    for round in 0..10u8 {
        for (i, repo) in repos.iter().enumerate() {
            let t = &rs[(usize::from(round) + i) % rs.len()];
            push_manifest(t, repo, &format!("t{round:02}"), &(round * 3 + i as u8).to_string()).await;
            pushed += 1;
        }
    }
    let all = within(Duration::from_secs(30), async || seen.lock().unwrap().len() >= usize::from(pushed)).await;
    // A little longer, to catch a late duplicate.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen = seen.lock().unwrap().clone();
    assert!(all.is_some(), "{} of {pushed} events arrived", seen.len());
    let mut ids: Vec<&str> = seen.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let received = ids.len();
    ids.dedup();
    assert_eq!(received, ids.len(), "an event was delivered twice in the normal case");
    assert_eq!(ids.len(), usize::from(pushed));
    for repo in repos {
        let tags: Vec<&str> = seen
            .iter()
            .filter(|e| e["data"]["repository"] == repo)
            .map(|e| e["data"]["tag"].as_str().unwrap())
            .collect();
        let mut sorted = tags.clone();
        sorted.sort_unstable();
        assert_eq!(tags, sorted, "{repo}: events out of order");
    }
    println!("{pushed} events delivered once each, in order per repository, in {all:?}");
    for r in rs {
        r.server.stop().await;
    }
    schema.drop().await;
}

/// A quota set through one replica's admin API applies at once on the others (it is in the
/// shared database), usage reads the same everywhere, and pushes through both replicas that
/// cross the warning threshold together write one `quota.warning`.
#[tokio::test]
#[ignore = "needs PostgreSQL: eval \"$(bash .ci/postgres.sh start)\" (and S3: .ci/s3.sh), then cargo test -- --ignored"]
async fn a_quota_set_on_one_replica_holds_on_all_and_warns_once() {
    let schema = Schema::create().await;
    let blobs = tempfile::tempdir().unwrap();
    let rs = replicas(&schema, blobs.path(), 2).await;
    let push = |t: &TestServer, repo: &str, body: Vec<u8>| {
        let url = t.url(&format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(&body)));
        t.client.post(url).body(body).send()
    };
    let r =
        rs[0].client.put(rs[0].url("/api/v1/quotas/shared/*")).body(r#"{"max_bytes": 10000}"#).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(push(&rs[1], "shared/a", data(4000, 1)).await.unwrap().status(), 201);
    let refused = push(&rs[1], "shared/b", data(7000, 2)).await.unwrap();
    assert_eq!(refused.status(), 403, "the quota set on replica 0 holds on replica 1");

    // 8 pushes of 500 bytes at once, through both replicas: 8000 bytes, 80 % (the default
    // threshold) reached by whichever commits last.
    let pushes = (0..8u8).map(|i| push(&rs[usize::from(i % 2)], "shared/c", data(500, 10 + i)));
    for r in futures::future::join_all(pushes).await {
        assert_eq!(r.unwrap().status(), 201);
    }
    for t in &rs {
        let usage: serde_json::Value = t.client.get(t.url("/api/v1/usage")).send().await.unwrap().json().await.unwrap();
        assert_eq!((usage["bytes"].as_u64(), usage["repositories"].as_u64()), (Some(8000), Some(2)), "{usage}");
    }
    let events: serde_json::Value =
        rs[0].client.get(rs[0].url("/api/v1/events?after=0&limit=1000")).send().await.unwrap().json().await.unwrap();
    let warnings: Vec<&serde_json::Value> =
        events["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "quota.warning").collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0]["quota"]["used"], 8000);
    for r in rs {
        r.server.stop().await;
    }
}

/// Garbage collection across replicas: an image deleted on one replica is collected by
/// another (its objects gone from the shared store, S3 `DeleteObjects` when S3 is set), a
/// replica that finds the lease held is refused, and the kept image still pulls everywhere.
#[tokio::test]
#[ignore = "needs PostgreSQL: eval \"$(bash .ci/postgres.sh start)\" (and S3: .ci/s3.sh), then cargo test -- --ignored"]
async fn garbage_collected_across_replicas() {
    let schema = Schema::create().await;
    let blobs = tempfile::tempdir().unwrap();
    let prefix = format!("replicas/{}", schema.name);
    let mut servers = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let mut config = replica_config(&schema, blobs.path(), &prefix);
        config.data_dir = dir.path().to_owned();
        config.gc.interval = Duration::ZERO;
        servers.push(
            TestServer::start_tuned(dir, config, &|s| {
                s.gc.grace = Duration::ZERO;
                s.gc.mark_wait = Duration::from_millis(200);
            })
            .await,
        );
    }
    let (a, b) = (&servers[0], &servers[1]);
    let (old, _) = push_manifest(a, "gc/shared", "old", "gc-old").await;
    let (_, _) = push_manifest(a, "gc/shared", "new", "gc-new").await;
    let old_config = sha256(br#"{"seed":"gc-old"}"#);
    let r = a.client.delete(a.url(&format!("/v2/gc/shared/manifests/{old}"))).send().await.unwrap();
    assert_eq!(r.status(), 202);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // A's pushes released their holds in its next batch (within 5 s): write it now.
    let a_registry = a.server.app.registry();
    a_registry.seen.flush(a_registry.meta.as_ref()).await.unwrap();

    // B collects; A is refused while B holds the lease.
    let b_registry = b.server.app.registry().clone();
    let run =
        tokio::spawn(
            async move { b_registry.collect(&berth_registry::service::gc::GcOptions::default()).await.unwrap() },
        );
    let meta = a.server.app.registry().meta.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while meta.gc_lease().await.unwrap().is_none() && !run.is_finished() {
        assert!(Instant::now() < deadline, "the collector never took the lease");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !run.is_finished() {
        let refused = a.server.app.registry().collect(&Default::default()).await;
        assert!(matches!(refused, Err(berth_registry::error::ApiError::Conflict(_))), "{refused:?}");
    }
    let run = run.await.unwrap();
    assert_eq!((run.counts.links, run.counts.blobs), (1, 1), "{run:?}");

    let d: berth_oci::Digest = old_config.parse().unwrap();
    let stored = |s: &TestServer| {
        let registry = s.server.app.registry().clone();
        let d = d.clone();
        async move {
            use futures::StreamExt;
            let plain = registry.blobs.size(&d).await.unwrap().is_some();
            let sealed: Vec<_> = registry.blobs.list_objects("sealed").collect().await;
            let sealed = sealed
                .into_iter()
                .map(Result::unwrap)
                .any(|(p, _, _)| berth_storage::layout::parse_object(&p).is_some_and(|(digest, _)| digest == d));
            plain || sealed
        }
    };
    assert!(!stored(a).await && !stored(b).await, "the deleted image's config is gone from the shared store");
    for s in &servers {
        let r = s.client.head(s.url(&format!("/v2/gc/shared/blobs/{old_config}"))).send().await.unwrap();
        assert_eq!(r.status(), 404);
        let r = s.client.get(s.url("/v2/gc/shared/manifests/new")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let new_config = sha256(br#"{"seed":"gc-new"}"#);
    let r = b.client.get(b.url(&format!("/v2/gc/shared/blobs/{new_config}"))).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), br#"{"seed":"gc-new"}"#);
    for s in servers {
        s.server.stop().await;
    }
    schema.drop().await;
}
