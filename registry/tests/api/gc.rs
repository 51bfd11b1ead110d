//! Online garbage collection (README "Garbage collection"; ARCHITECTURE.md invariant 12):
//! what a run reclaims, and what it must keep while clients push and pull.

use std::time::Duration;

use berth_registry::service::gc::GcOptions;
use serde_json::Value;

use crate::support::*;

/// A registry whose collector takes links as soon as they are a second old, and waits
/// `mark_wait` between marking and removing them.
async fn collecting(mark_wait: Duration) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    TestServer::start_tuned(dir, config, &move |s| {
        s.gc.grace = Duration::ZERO;
        s.gc.mark_wait = mark_wait;
    })
    .await
}

/// Link ages are kept in whole seconds: wait until what was just written is older than a
/// grace of zero.
async fn age() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

/// The file of a plaintext blob in the test's data folder.
fn plain_file(t: &TestServer, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    t.dir.path().join("blobs/blobs/sha256").join(&hex[..2]).join(hex)
}

/// The folder of a blob's sealed copies.
fn sealed_dir(t: &TestServer, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    t.dir.path().join("blobs/sealed/sha256").join(&hex[..2]).join(hex)
}

/// Whether any object of the blob is on disk: plaintext, or a sealed copy.
fn stored(t: &TestServer, digest: &str) -> bool {
    plain_file(t, digest).exists() || std::fs::read_dir(sealed_dir(t, digest)).is_ok_and(|mut d| d.next().is_some())
}

/// Polls the running collection's recorded phase until it has marked links and waits.
async fn marks_made(t: &TestServer) {
    let meta = t.server.app.registry().meta.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let runs = meta.gc_runs(1).await.unwrap();
        if runs.first().is_some_and(|r| r.phase == "links: waiting") {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the run never reached its wait: {runs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run_gc(t: &TestServer, body: Value) -> reqwest::Response {
    t.client.post(t.url("/api/v1/gc")).json(&body).send().await.unwrap()
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

fn image(config: &str, config_len: usize, layers: &[(&str, usize)]) -> String {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_len},
        "layers": layers.iter().map(|(d, n)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n})).collect::<Vec<_>>(),
    })
    .to_string()
}

async fn put_manifest(t: &TestServer, repo: &str, reference: &str, body: &str) -> reqwest::Response {
    t.client
        .put(t.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// An image deleted by digest: its blobs' links go in phase (a), the blobs and their bytes
/// in phase (b); another image's blobs stay, and so does a blob they share.
#[tokio::test]
async fn deleted_image_blobs_are_reclaimed() {
    let t = collecting(Duration::from_millis(200)).await;
    let layer = data(70_000, 1);
    let shared = data(50_000, 2);
    let (layer_d, shared_d) = (push_blob(&t, "gc/app", &layer).await, push_blob(&t, "gc/app", &shared).await);
    let config = br#"{"gc":"old"}"#;
    let config_d = push_blob(&t, "gc/app", config).await;
    let old = image(&config_d, config.len(), &[(&layer_d, layer.len()), (&shared_d, shared.len())]);
    assert_eq!(put_manifest(&t, "gc/app", "old", &old).await.status(), 201);
    let config2 = br#"{"gc":"new"}"#;
    let config2_d = push_blob(&t, "gc/app", config2).await;
    let new = image(&config2_d, config2.len(), &[(&shared_d, shared.len())]);
    assert_eq!(put_manifest(&t, "gc/app", "new", &new).await.status(), 201);
    let r = t.client.delete(t.url(&format!("/v2/gc/app/manifests/{}", sha256(old.as_bytes())))).send().await.unwrap();
    assert_eq!(r.status(), 202);
    age().await;

    let r = run_gc(&t, serde_json::json!({})).await;
    assert_eq!(r.status(), 200);
    let run: Value = r.json().await.unwrap();
    assert_eq!(run["state"], "completed", "{run}");
    assert_eq!((run["links"].as_u64(), run["blobs"].as_u64()), (Some(2), Some(2)), "{run}");
    assert_eq!(run["bytes"].as_u64(), Some((layer.len() + config.len()) as u64), "{run}");
    for gone in [&layer_d, &config_d] {
        assert!(!stored(&t, gone), "{gone} still on disk");
        let r = t.client.head(t.url(&format!("/v2/gc/app/blobs/{gone}"))).send().await.unwrap();
        assert_eq!(r.status(), 404);
    }
    for kept in [&shared_d, &config2_d] {
        assert!(stored(&t, kept), "{kept} was deleted");
    }
    let pulled = t.client.get(t.url(&format!("/v2/gc/app/blobs/{shared_d}"))).send().await.unwrap();
    assert_eq!(pulled.bytes().await.unwrap().as_ref(), &shared[..]);

    // Pushed again after it was collected: stored afresh.
    assert_eq!(push_blob(&t, "gc/app", &layer).await, layer_d);
    assert!(stored(&t, &layer_d));

    // The status lists the run, newest first.
    let status: Value = t.client.get(t.url("/api/v1/gc")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["runs"][0]["id"], run["id"], "{status}");
    assert!(status["lease"].is_null(), "{status}");
    t.server.stop().await;
}

/// Without a grace period the collector would take a blob pushed a moment ago whose
/// manifest is still on its way; with one, it keeps it.
#[tokio::test]
async fn young_links_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let t = TestServer::start_tuned(dir, config, &|s| s.gc.mark_wait = Duration::from_millis(100)).await;
    let bytes = data(10_000, 3);
    let digest = push_blob(&t, "gc/young", &bytes).await;
    let run: Value = run_gc(&t, serde_json::json!({})).await.json().await.unwrap();
    assert_eq!((run["links"].as_u64(), run["blobs"].as_u64()), (Some(0), Some(0)), "{run}");
    assert!(stored(&t, &digest));
    let r = t.client.head(t.url(&format!("/v2/gc/young/blobs/{digest}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    t.server.stop().await;
}

/// A HEAD answered while the collector waits between marking and removing keeps the link
/// (the read clears the mark before it answers), and the blob's bytes with it.
#[tokio::test]
async fn head_during_the_mark_wait_keeps_the_link() {
    let t = collecting(Duration::from_secs(3)).await;
    let bytes = data(20_000, 4);
    let digest = push_blob(&t, "gc/read", &bytes).await;
    age().await;
    let registry = t.server.app.registry().clone();
    let run = tokio::spawn(async move { registry.collect(&GcOptions::default()).await });
    let meta = t.server.app.registry().meta.clone();
    marks_made(&t).await;
    let r = t.client.head(t.url(&format!("/v2/gc/read/blobs/{digest}"))).send().await.unwrap();
    assert_eq!(r.status(), 200, "the link is there when the HEAD is answered");
    // Unmarked before the answer, not at the next flush of reads (which another replica's
    // read would wait for).
    let repo = "gc/read".parse().unwrap();
    let entry = meta.repo_blob_entry(&repo, &digest.parse().unwrap()).await.unwrap().unwrap();
    assert!(!entry.marked, "the read cleared the collector's mark");
    let run = run.await.unwrap().unwrap();
    assert_eq!((run.counts.links, run.counts.blobs), (0, 0), "{run:?}");
    assert!(stored(&t, &digest));
    let r = t.client.get(t.url(&format!("/v2/gc/read/blobs/{digest}"))).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[..]);
    t.server.stop().await;
}

/// A second collector is refused while one holds the lease: 409, naming the holder.
#[tokio::test]
async fn a_second_collector_gets_409() {
    let t = collecting(Duration::from_millis(100)).await;
    let meta = t.server.app.registry().meta.clone();
    let now = berth_storage::metadata::events::unix_now_ms();
    meta.acquire_gc_lease("replica-2/run", now, 60_000).await.unwrap().unwrap();
    let r = run_gc(&t, serde_json::json!({"dry_run": true})).await;
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "CONFLICT", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("replica-2/run"), "{body}");
    let status: Value = t.client.get(t.url("/api/v1/gc")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["lease"]["owner"], "replica-2/run", "{status}");
    meta.release_gc_lease("replica-2/run").await.unwrap();
    assert_eq!(run_gc(&t, serde_json::json!({"dry_run": true})).await.status(), 200);
    t.server.stop().await;
}

/// A manifest pushed while the collector has marked a blob's link (the race of
/// distribution#3045): the push commits and the link is kept, or the push is refused with
/// MANIFEST_BLOB_UNKNOWN. Never a manifest whose blob is gone.
#[tokio::test]
async fn manifest_put_racing_the_collector() {
    let t = collecting(Duration::from_secs(2)).await;
    let layer = data(30_000, 5);
    let layer_d = push_blob(&t, "gc/race", &layer).await;
    let config = br#"{"gc":"race"}"#;
    let config_d = push_blob(&t, "gc/race", config).await;
    age().await;
    let registry = t.server.app.registry().clone();
    let run = tokio::spawn(async move { registry.collect(&GcOptions::default()).await });
    marks_made(&t).await;
    // Marked, not yet removed: the push wins, and the collector's later check sees it.
    let body = image(&config_d, config.len(), &[(&layer_d, layer.len())]);
    assert_eq!(put_manifest(&t, "gc/race", "v1", &body).await.status(), 201);
    let run = run.await.unwrap().unwrap();
    assert_eq!((run.counts.links, run.counts.blobs), (0, 0), "{run:?}");
    for d in [&layer_d, &config_d] {
        let r = t.client.get(t.url(&format!("/v2/gc/race/blobs/{d}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "{d}");
    }

    // Removed first: the push that comes after is refused, and no manifest is stored.
    let other = data(30_000, 6);
    let other_d = push_blob(&t, "gc/race", &other).await;
    age().await;
    let run = t.server.app.registry().collect(&GcOptions::default()).await.unwrap();
    assert_eq!((run.counts.links, run.counts.blobs), (1, 1), "{run:?}");
    let late = image(&config_d, config.len(), &[(&other_d, other.len())]);
    let r = put_manifest(&t, "gc/race", "v2", &late).await;
    assert_eq!(r.status(), 400);
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN", "{error}");
    let r = t.client.get(t.url("/v2/gc/race/manifests/v2")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // Racing for real, a few times: whatever wins, a stored manifest pulls whole.
    for round in 0..4u8 {
        let blob = data(20_000, 10 + round);
        let d = push_blob(&t, "gc/race", &blob).await;
        age().await;
        let registry = t.server.app.registry().clone();
        let gc = tokio::spawn(async move { registry.collect(&GcOptions::default()).await });
        tokio::time::sleep(Duration::from_millis(u64::from(round) * 700)).await;
        let body = image(&config_d, config.len(), &[(&d, blob.len())]);
        let tag = format!("r{round}");
        let status = put_manifest(&t, "gc/race", &tag, &body).await.status();
        gc.await.unwrap().unwrap();
        let pulled = t.client.get(t.url(&format!("/v2/gc/race/manifests/{tag}"))).send().await.unwrap();
        match status.as_u16() {
            201 => {
                assert_eq!(pulled.status(), 200);
                let r = t.client.get(t.url(&format!("/v2/gc/race/blobs/{d}"))).send().await.unwrap();
                assert_eq!(r.bytes().await.unwrap().as_ref(), &blob[..], "round {round}: a stored manifest's blob");
            }
            400 => assert_eq!(pulled.status(), 404, "round {round}: a refused manifest is not stored"),
            other => panic!("round {round}: manifest PUT answered {other}"),
        }
    }
    t.server.stop().await;
}

/// A dry run counts what a run would take and changes nothing.
#[tokio::test]
async fn dry_run_changes_nothing() {
    let t = collecting(Duration::from_millis(100)).await;
    let bytes = data(40_000, 7);
    let digest = push_blob(&t, "gc/dry", &bytes).await;
    age().await;
    let run: Value = run_gc(&t, serde_json::json!({"dry_run": true})).await.json().await.unwrap();
    assert_eq!(run["dry_run"], true, "{run}");
    assert_eq!((run["links"].as_u64(), run["blobs"].as_u64()), (Some(1), Some(1)), "{run}");
    assert_eq!(run["bytes"].as_u64(), Some(bytes.len() as u64), "{run}");
    assert!(stored(&t, &digest));
    let r = t.client.head(t.url(&format!("/v2/gc/dry/blobs/{digest}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let entry = t
        .server
        .app
        .registry()
        .meta
        .repo_blob_entry(&"gc/dry".parse().unwrap(), &digest.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!entry.marked, "a dry run marks nothing");
    t.server.stop().await;
}

/// `repository` limits the run to one repository's links and the blobs they release.
#[tokio::test]
async fn one_repository() {
    let t = collecting(Duration::from_millis(100)).await;
    let (a, b, shared) = (data(10_000, 8), data(10_000, 9), data(10_000, 10));
    let a_d = push_blob(&t, "gc/one", &a).await;
    let b_d = push_blob(&t, "gc/two", &b).await;
    let shared_d = push_blob(&t, "gc/one", &shared).await;
    assert_eq!(push_blob(&t, "gc/two", &shared).await, shared_d);
    age().await;
    let run: Value = run_gc(&t, serde_json::json!({"repository": "gc/one"})).await.json().await.unwrap();
    assert_eq!(run["repository"], "gc/one", "{run}");
    assert_eq!((run["links"].as_u64(), run["blobs"].as_u64()), (Some(2), Some(1)), "{run}");
    assert!(!stored(&t, &a_d), "released by gc/one alone");
    assert!(stored(&t, &shared_d), "still linked by gc/two");
    assert!(stored(&t, &b_d), "gc/two was not looked at");
    let r = t.client.head(t.url(&format!("/v2/gc/two/blobs/{b_d}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = run_gc(&t, serde_json::json!({"repository": "Not/Valid"})).await;
    assert_eq!(r.status(), 400);
    t.server.stop().await;
}

/// Objects the metadata does not know (what a crash leaves) are swept once older than the
/// grace period; younger ones are kept (a write may be about to record them).
#[tokio::test]
async fn unknown_objects_older_than_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.encryption.enabled = false;
    let t = TestServer::start_tuned(dir, config, &|s| s.gc.mark_wait = Duration::from_millis(100)).await;
    let known = push_blob(&t, "gc/known", &data(5_000, 11)).await;
    let old_plain = sha256(b"left by a crash, long ago");
    let young_plain = sha256(b"left a moment ago");
    let old_sealed = sealed_dir(&t, &known).join("0123456789abcdef0123456789abcdef");
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(3 * 3600);
    for (path, old) in
        [(plain_file(&t, &old_plain), true), (plain_file(&t, &young_plain), false), (old_sealed.clone(), true)]
    {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"stray").unwrap();
        if old {
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(long_ago).unwrap();
        }
    }
    // Even a known blob's old file is left alone.
    std::fs::File::options().write(true).open(plain_file(&t, &known)).unwrap().set_modified(long_ago).unwrap();

    let dry: Value = run_gc(&t, serde_json::json!({"dry_run": true})).await.json().await.unwrap();
    assert_eq!(dry["unknown_objects"].as_u64(), Some(2), "{dry}");
    assert!(plain_file(&t, &old_plain).exists());
    let run: Value = run_gc(&t, serde_json::json!({})).await.json().await.unwrap();
    assert_eq!(run["unknown_objects"].as_u64(), Some(2), "{run}");
    assert_eq!(run["bytes"].as_u64(), Some(10), "{run}");
    assert!(!plain_file(&t, &old_plain).exists() && !old_sealed.exists(), "old unknown objects swept");
    assert!(plain_file(&t, &young_plain).exists(), "a young one is kept");
    assert!(plain_file(&t, &known).exists(), "a known blob is kept");
    let r = t.client.get(t.url(&format!("/v2/gc/known/blobs/{known}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    t.server.stop().await;
}

/// A push of content the collector is deleting waits until the collector is done with it,
/// then stores it afresh: the acknowledged blob is whole.
#[tokio::test]
async fn a_push_waits_for_a_doomed_digest() {
    let t = collecting(Duration::from_millis(100)).await;
    let bytes = data(25_000, 12);
    let digest = push_blob(&t, "gc/wait", &bytes).await;
    let r = t.client.delete(t.url(&format!("/v2/gc/wait/blobs/{digest}"))).send().await.unwrap();
    assert_eq!(r.status(), 202);
    // The collector dooms it (phase b), as a run would, once the push's hold is released
    // (with the next batch of reads).
    let registry = t.server.app.registry().clone();
    registry.seen.flush(registry.meta.as_ref()).await.unwrap();
    let d: berth_oci::Digest = digest.parse().unwrap();
    let now = berth_storage::metadata::unix_now();
    let doomed = registry.meta.doom_blobs("test-run", std::slice::from_ref(&d), now).await.unwrap();
    assert_eq!(doomed.len(), 1);

    let client = t.client.clone();
    let url = t.url(&format!("/v2/gc/wait/blobs/uploads/?digest={digest}"));
    let body = bytes.clone();
    let push = tokio::spawn(async move { client.post(url).body(body).send().await.unwrap().status() });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!push.is_finished(), "the push went ahead while the digest was doomed");

    // The collector deletes the objects, then forgets the rows.
    let mut paths = vec![berth_storage::layout::blob(&d)];
    paths.extend(doomed[0].copies.iter().map(|(_, o)| berth_storage::layout::sealed_blob(&d, o)));
    registry.blobs.delete_objects(paths).await.unwrap();
    assert!(!stored(&t, &digest));
    registry.meta.forget_doomed(&doomed).await.unwrap();

    assert_eq!(push.await.unwrap(), 201);
    assert!(stored(&t, &digest), "stored afresh");
    let r = t.client.get(t.url(&format!("/v2/gc/wait/blobs/{digest}"))).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[..]);
    t.server.stop().await;
}

/// A hold released in the seconds before the server stops is written as it stops: else its
/// row stays live until it expires (hours) and keeps the collector off the digest.
#[tokio::test]
async fn holds_released_just_before_a_stop_are_written() {
    let t = collecting(Duration::from_millis(10)).await;
    let digest = push_blob(&t, "gc/stop", b"held until the push was acknowledged").await;
    let r = t.client.delete(t.url("/api/v1/repositories?name=gc/stop&force=true")).send().await.unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let meta = t.server.app.registry().meta.clone();
    // Within the seen recorder's 5 s: its release is still in memory.
    t.server.stop().await;
    let digest: berth_oci::Digest = digest.parse().unwrap();
    let doomed =
        meta.doom_blobs("test", std::slice::from_ref(&digest), berth_storage::metadata::unix_now()).await.unwrap();
    assert_eq!(doomed.len(), 1, "the upload's hold was released at the stop, so its unlinked blob may be doomed");
}
