//! The race that broke Distribution's garbage collector (distribution#3045): a collector
//! looping without pause while 8 clients push images whose layers they share, delete
//! manifests and whole repositories, push deleted images again and leave unreferenced blobs
//! behind, with a grace period of almost nothing, so the collector takes every link and blob
//! the moment nothing references it. On SQLite + the local disk, and on PostgreSQL + S3 with
//! two replicas whose collectors contend for the lease.
//!
//! What must hold (ARCHITECTURE.md, "GC never deletes what a manifest or a client relies
//! on"):
//! - during the run, every manifest a client was acknowledged (201) and has not deleted
//!   pulls, with every blob byte for byte as pushed (clients pull their own now and then);
//! - a client that meets the collector is refused in one of two ways, and pushes again:
//!   `MANIFEST_BLOB_UNKNOWN` on its manifest PUT (a link went between its check and its
//!   PUT), or a blob commit refused while the digest is doomed;
//! - afterwards every acknowledged, undeleted manifest pulls from every replica, before and
//!   after a final collection; after it, nothing unreferenced is left (`end_state`).
//!
//! Bounded by time and by count: [`RUN_FOR`] or [`OPS`] operations per client. The seed is
//! printed; `BERTH_TEST_GC_RACE_SEED=<n>` replays a run's choices and bytes (not its timing).

mod client;
mod end_state;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use berth_registry::config::{Config, RepositoryKeyRule};
use berth_registry::error::ApiError;
use berth_registry::service::gc::GcOptions;
use berth_registry::service::{Registry, Settings};
use futures::StreamExt;

use self::client::{Bounds, Client, Image, Stats, layer_pool, pull};
use self::end_state::{Db, Store};
use crate::support::*;

const CLIENTS: usize = 8;
const RUN_FOR: Duration = Duration::from_secs(20);
const OPS: usize = 400;
/// Layers shared by all clients.
const POOL: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_racing_pushes_deletes_and_repushes_keeps_every_acknowledged_image_on_sqlite_and_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    // Outside the data folder, which must be fresh for the first start to secure it.
    let keys = tempfile::tempdir().unwrap();
    two_keys(&mut config, &keys.path().join("keys"));
    let (db, store) = (Db::Sqlite(config.metadata_path()), Store::Disk(config.blob_dir()));
    let server = start(dir, config).await;
    let servers = vec![server];
    race(&servers, &db, &store).await;
    for s in servers {
        s.server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and S3: eval \"$(bash .ci/postgres.sh start)\"; eval \"$(bash .ci/s3.sh start)\", then cargo test -- --ignored"]
async fn gc_racing_pushes_deletes_and_repushes_keeps_every_acknowledged_image_on_postgres_and_s3_with_two_replicas() {
    let endpoint = std::env::var("BERTH_TEST_S3_ENDPOINT")
        .expect("BERTH_TEST_S3_ENDPOINT: eval \"$(bash .ci/s3.sh start)\" first");
    let schema = crate::replicas::Schema::create().await;
    let shared = tempfile::tempdir().unwrap();
    let prefix = format!("gcrace/{}", schema.name);
    let mut servers = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::replicas::replica_config(&schema, shared.path(), &prefix);
        config.data_dir = dir.path().to_owned();
        two_keys(&mut config, &shared.path().join("keys"));
        servers.push(start(dir, config).await);
    }
    let bucket = std::env::var("BERTH_TEST_S3_BUCKET").unwrap_or_else(|_| "test".into());
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&endpoint)
        .with_bucket_name(&bucket)
        .with_region("us-east-1")
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_access_key_id("berth-test")
        .with_secret_access_key("berth-test-secret")
        .build()
        .unwrap();
    let store = Store::S3(Box::new(object_store::prefix::PrefixStore::new(s3, prefix.as_str())));
    race(&servers, &Db::Postgres(schema.url.clone()), &store).await;
    for s in servers {
        s.server.stop().await;
    }
    store.delete_everything().await;
    schema.drop().await;
}

/// A registry whose only collectors are the test's (no schedule), with the racing settings.
async fn start(dir: tempfile::TempDir, mut config: Config) -> TestServer {
    config.gc.interval = Duration::ZERO;
    TestServer::start_tuned(dir, config, &racing).await
}

/// Odd clients' repositories use a second key, so some blobs have two sealed copies and lose
/// one when the last repository of that key lets go (the collector's phase c).
fn two_keys(config: &mut Config, key_dir: &std::path::Path) {
    let ring = berth_storage::crypt::KeyRing::load(Some(key_dir), None).unwrap();
    if !ring.all().iter().any(|k| k.name() == "team") {
        ring.generate("team").unwrap();
    }
    config.encryption.key_dir = Some(key_dir.to_owned());
    config.encryption.repositories = (1..CLIENTS)
        .step_by(2)
        .map(|i| RepositoryKeyRule { prefix: format!("gcrace/c{i}/"), key: "team".into() })
        .collect();
}

fn seed() -> u64 {
    match std::env::var("BERTH_TEST_GC_RACE_SEED") {
        Ok(s) => s.parse().expect("BERTH_TEST_GC_RACE_SEED is a number"),
        Err(_) => uuid::Uuid::new_v4().as_u64_pair().0,
    }
}

/// What one collector loop did.
#[derive(Debug, Default)]
struct Collected {
    runs: u64,
    /// Runs refused because the other replica's collector held the lease.
    contended: u64,
    links: u64,
    blobs: u64,
    copies: u64,
    errors: Vec<String>,
}

/// Collects again and again until `stop`; a run refused because the other replica's
/// collector holds the lease counts as contention.
async fn collector_loop(registry: Arc<Registry>, stop: Arc<AtomicBool>) -> Collected {
    let mut c = Collected::default();
    while !stop.load(Ordering::Relaxed) {
        match registry.collect(&GcOptions::default()).await {
            Ok(run) => {
                c.runs += 1;
                c.links += run.counts.links;
                c.blobs += run.counts.blobs;
                c.copies += run.counts.copies;
            }
            Err(ApiError::Conflict(_)) => {
                c.contended += 1;
                // Not a spin on the lease row while the other replica collects.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => c.errors.push(e.to_string()),
        }
    }
    c
}

/// The grace period of the race: none at all. A link no manifest references may go the
/// moment the collector sees it (protection 2 of the design, the grace, is then void by
/// construction); what must still hold comes from the other two: a manifest PUT and a link
/// removal serialize, and bytes are deleted only for a doomed digest no writer holds.
/// Marked links wait a second before removal, so reads during the wait clear marks.
fn racing(settings: &mut Settings) {
    settings.gc.grace = Duration::ZERO;
    settings.gc.mark_wait = Duration::from_secs(1);
}

async fn race(servers: &[TestServer], db: &Db, store: &Store) {
    let seed = seed();
    println!("gc race: seed {seed} (BERTH_TEST_GC_RACE_SEED={seed} replays its choices)");
    let urls: Vec<String> = servers.iter().map(|s| s.server.url()).collect();
    let pool = layer_pool(seed, POOL);
    let stop = Arc::new(AtomicBool::new(false));
    let collectors: Vec<_> =
        servers.iter().map(|s| tokio::spawn(collector_loop(s.server.app.registry().clone(), stop.clone()))).collect();
    let started = Instant::now();
    let bounds = Bounds { until: started + RUN_FOR, ops: OPS };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let mut c = Client::new(i, CLIENTS, urls.clone(), seed, pool.clone());
            tokio::spawn(async move {
                let result = c.run(bounds).await;
                (c, result)
            })
        })
        .collect();
    let mut errors = Vec::new();
    let mut live: Vec<Image> = Vec::new();
    let mut stats = Stats::default();
    for c in futures::future::join_all(clients).await {
        let (c, result) = c.unwrap();
        if let Err(e) = result {
            errors.push(e);
        }
        stats.add(&c.stats);
        live.extend(c.live);
    }
    let clients_took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut collected = Vec::new();
    for c in futures::future::join_all(collectors).await {
        collected.push(c.unwrap());
    }
    println!("gc race: seed {seed}, clients ran {clients_took:?}: {stats:?}");
    println!("gc race: collectors: {collected:?}");
    assert!(errors.is_empty(), "seed {seed}: a client met a wrong answer:\n{}", errors.join("\n"));
    let collector_errors: Vec<_> = collected.iter().flat_map(|c| c.errors.iter()).collect();
    assert!(collector_errors.is_empty(), "seed {seed}: a collector run failed: {collector_errors:#?}");
    // The race happened: collections ended during the run and took blobs from under the
    // clients (not a timing bound: a collector that never finished a run proves nothing).
    let (runs, blobs): (u64, u64) = collected.iter().fold((0, 0), |(r, b), c| (r + c.runs, b + c.blobs));
    assert!(runs > 0 && blobs > 0, "seed {seed}: the collectors reclaimed nothing during the race: {collected:?}");

    pull_all(&urls, &live).await.unwrap_or_else(|e| panic!("seed {seed}: after the race: {e}"));
    println!(
        "gc race: {} live images pull from {} replica(s); before the final collection: {}",
        live.len(),
        urls.len(),
        end_state::counts(db).await
    );
    // The clients' last reads stamp `seen_at` when the recorder flushes (every 5 s), and a link
    // seen in the cutoff's own second is young to the collector: flush every replica's
    // recorder now and let the (whole-second) cutoff pass, so the final collection owes us
    // every link no manifest references.
    for s in servers {
        let registry = s.server.app.registry();
        registry.seen.flush(registry.meta.as_ref()).await.unwrap_or_else(|e| panic!("seed {seed}: flush: {e}"));
    }
    end_state::wait_for_released_holds(db).await.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let last = servers[0].server.app.registry().collect(&GcOptions::default()).await;
    let last = last.unwrap_or_else(|e| panic!("seed {seed}: the final collection: {e}"));
    println!("gc race: the final collection: {last:?}");
    pull_all(&urls, &live).await.unwrap_or_else(|e| panic!("seed {seed}: after the final collection: {e}"));
    println!("gc race: after the final collection: {}", end_state::counts(db).await);
    let problems = end_state::problems(db, store).await;
    assert!(problems.is_empty(), "seed {seed}: after the final collection:\n{}", problems.join("\n"));
}

/// Pulls every image from every replica (16 at a time), each byte compared.
async fn pull_all(urls: &[String], images: &[Image]) -> Result<(), String> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let failures: Vec<String> = futures::stream::iter(urls.iter().flat_map(|u| images.iter().map(move |i| (u, i))))
        .map(|(url, image)| {
            let http = http.clone();
            async move { pull(&http, url, image).await.err() }
        })
        .buffer_unordered(16)
        .filter_map(|e| async move { e })
        .collect()
        .await;
    if failures.is_empty() { Ok(()) } else { Err(format!("{} failed pulls:\n{}", failures.len(), failures.join("\n"))) }
}
