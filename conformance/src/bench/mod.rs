//! `berth-bench`: a black-box HTTP load tool for container registries.
//!
//! It pushes and pulls through the distribution API like the suite does
//! (plain HTTP/1.1, no Berth crate linked), times what it does, and reports
//! throughput and latency per scenario. Everything is bounded: each loop by a
//! duration and a request count, each request by a timeout, each round by
//! [`Params::round_timeout`].
//!
//! Layout:
//! - [`Scenario`] and [`Params`] (here): what to run and how big. `full()` is
//!   the published benchmark, `quick()` the seconds-long smoke preset.
//! - [`Bench`] (here): runs one round of a scenario against one [`Target`],
//!   keeping per-registry setup in a [`TargetState`] so rounds reuse it.
//! - `scenarios/`: one module per family (blobs, manifests, image, listing).
//! - [`client`]: the distribution-API verbs ([`Target`]).
//! - [`payload`]: fresh, pre-hashed blob content ([`PayloadSource`]).
//! - [`metric`]: [`Metric`], [`ScenarioRun`], the [`Recorder`](metric::Recorder).
//! - [`stats`]: percentiles, medians, ratios.
//! - [`gc`]: `berth-bench gc`, Berth's garbage collector: blobs reclaimed per second, and
//!   its effect on concurrent push and pull.
//! - [`ceilings`]: this machine's SHA-256, AES-256-GCM, loopback and disk limits.
//! - [`server`]: starting and stopping Berth and Distribution processes, VmHWM.
//! - [`machine`]: CPU, memory, versions.
//! - [`report`]: `run` and `compare`, medians across rounds, tables, Markdown.
//!
//! Invariants:
//! - No scenario panics or aborts the run: failures are recorded as errors
//!   and the metric they spoil is reported "n/a" with the reason.
//! - Nothing dedupes: every pushed blob has a fresh 16-byte head.
//! - Client-side hashing is never inside a timed section.
//! - Only processes this tool started are ever signalled, by PID.

pub mod ceilings;
pub mod client;
mod error;
pub mod gc;
pub mod machine;
pub mod metric;
pub mod payload;
pub mod raw_get;
pub mod report;
mod scenarios;
pub mod server;
pub mod stats;

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};
use tokio::task::JoinSet;

pub use client::{MonolithicMode, Target};
pub use error::BenchError;
pub use metric::{CeilingKind, CpuUse, LoadResult, Metric, ScenarioRun, Unit};
pub use payload::{Payload, PayloadSource};
pub use scenarios::ExtraParams;
pub use scenarios::replicas::set_peer_urls;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// A benchmark scenario, selectable with `--scenario NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Monolithic, streamed-PATCH and multi-PATCH blob pushes (MB/s, CPU-s/GiB).
    BlobPush,
    /// Whole-blob GETs (MB/s, CPU-s/GiB) and random ranged reads of the largest blob.
    BlobPull,
    /// blob-pull again with one core busy: a CPU burner runs through every
    /// timed section.
    BlobPullBusy,
    /// Manifest GET and HEAD by tag at 1 and 64 connections (req/s, p50, p99).
    ManifestGet,
    /// Whole-image push then pull by concurrent clients (images/s, MB/s).
    Image,
    /// Pushes and pulls from 16 and 64 clients at once (aggregate MB/s, server CPU-s/GiB,
    /// p50/p99 per request). Not in [`Scenario::ALL`]: select it by name.
    Concurrency,
    /// Peak RSS of the server during 64 concurrent 1 GiB pulls, then 64 concurrent pushes.
    Memory,
    /// Manifest GET by tag (p50/p99/p99.9/max) alone, then during concurrent 1 GiB pushes.
    Storm,
    /// Pull and push over HTTPS versus plain HTTP on the same port (needs an https:// URL).
    Tls,
    /// Pushes and cross-replica pulls spread over the replicas given with `--peer-url`.
    Replicas,
    /// Catalog and tag listing over 10,000 repositories and 10,000 tags.
    Listing,
    /// Many concurrent monolithic pushes (aggregate MB/s).
    ConcurrentPush,
}

impl Scenario {
    /// Every scenario, in the order they run.
    pub const ALL: [Scenario; 7] = [
        Scenario::BlobPush,
        Scenario::BlobPull,
        Scenario::BlobPullBusy,
        Scenario::ManifestGet,
        Scenario::Image,
        Scenario::Listing,
        Scenario::ConcurrentPush,
    ];

    /// The scenarios that run only when named (`--scenario`): long, or needing a setup
    /// of their own (TLS, replicas). See `scenarios/{concurrency,storm,tls,replicas}.rs`.
    pub const EXTRA: [Scenario; 5] =
        [Scenario::Concurrency, Scenario::Memory, Scenario::Storm, Scenario::Tls, Scenario::Replicas];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::BlobPush => "blob-push",
            Self::BlobPull => "blob-pull",
            Self::BlobPullBusy => "blob-pull-busy",
            Self::ManifestGet => "manifest-get",
            Self::Image => "image",
            Self::Listing => "listing",
            Self::ConcurrentPush => "concurrent-push",
            Self::Concurrency => "concurrency",
            Self::Memory => "memory",
            Self::Storm => "storm",
            Self::Tls => "tls",
            Self::Replicas => "replicas",
        }
    }
}

impl Scenario {
    /// Whether `compare` starts fresh servers (fresh data directories) for
    /// every round of this scenario instead of once for all rounds: the
    /// scenarios that write GiBs per round, so that rounds × servers never
    /// pile up on the disk.
    pub fn fresh_servers_per_round(self) -> bool {
        matches!(self, Self::BlobPush | Self::ConcurrentPush)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().chain(Self::EXTRA).find(|sc| sc.name() == s.trim()).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().chain(&Self::EXTRA).map(|sc| sc.name()).collect();
            format!("unknown scenario {s:?} (known: {})", names.join(", "))
        })
    }
}

/// A blob size and how many times to move it per round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SizeRun {
    pub bytes: u64,
    pub iterations: usize,
}

fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// How big and how long each scenario is. Reported with the results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Params {
    /// `full` or `quick` (or `custom` once changed by hand).
    pub preset: String,
    /// blob-push: sizes, each pushed monolithic, as one streamed PATCH, and
    /// in parts of each of `part_sizes` smaller than the blob.
    pub push: Vec<SizeRun>,
    /// blob-push: PATCH sizes of multi-PATCH uploads (`Content-Range` parts).
    pub part_sizes: Vec<u64>,
    /// blob-pull: sizes fetched whole.
    pub pull: Vec<SizeRun>,
    /// blob-pull: the blob ranged reads pick from.
    pub range_blob: u64,
    /// blob-pull: bytes per ranged read.
    pub range_len: u64,
    #[serde(serialize_with = "secs")]
    pub range_duration: Duration,
    pub range_max_requests: u64,
    /// manifest-get: duration of each (method, concurrency) loop.
    #[serde(serialize_with = "secs")]
    pub manifest_duration: Duration,
    pub manifest_concurrency: Vec<usize>,
    pub manifest_max_requests: u64,
    /// image: concurrent clients, each pushing then pulling its own images.
    pub image_clients: usize,
    pub images_per_client: usize,
    pub image_layers: usize,
    pub image_layer_size: u64,
    /// listing: repositories created (one tiny blob each).
    pub listing_repos: usize,
    /// listing: tags on one repository (one manifest under many tags).
    pub listing_tags: usize,
    /// listing: `n` of paginated requests.
    pub listing_page: usize,
    /// listing: requests in flight during setup.
    pub listing_setup_concurrency: usize,
    /// listing: how many times each unpaginated request is repeated.
    pub listing_repeats: usize,
    /// listing: a walk through all pages must finish within this.
    #[serde(serialize_with = "secs")]
    pub listing_walk_deadline: Duration,
    /// concurrent-push: pushes in flight, and their size.
    pub concurrent_pushes: usize,
    pub concurrent_push_size: u64,
    /// concurrency, memory, storm, tls, replicas: their sizes and counts.
    pub extra: scenarios::ExtraParams,
    /// Any round of any scenario is cut off after this.
    #[serde(serialize_with = "secs")]
    pub round_timeout: Duration,
}

impl Params {
    /// The published benchmark (with 5 rounds of 3 servers, about 30 min on
    /// 2 cores): 1 MiB / 64 MiB / 512 MiB blobs, parts of 8, 32 and 64 MiB,
    /// 3 s loops, 10,000 repositories and tags, 32 × 64 MiB concurrent pushes.
    pub fn full() -> Self {
        Self {
            preset: "full".into(),
            push: vec![
                SizeRun { bytes: MIB, iterations: 10 },
                SizeRun { bytes: 64 * MIB, iterations: 3 },
                SizeRun { bytes: 512 * MIB, iterations: 1 },
            ],
            part_sizes: vec![8 * MIB, 32 * MIB, 64 * MIB],
            pull: vec![
                SizeRun { bytes: MIB, iterations: 50 },
                SizeRun { bytes: 64 * MIB, iterations: 5 },
                SizeRun { bytes: 512 * MIB, iterations: 3 },
            ],
            range_blob: 512 * MIB,
            range_len: MIB,
            range_duration: Duration::from_secs(3),
            range_max_requests: 100_000,
            manifest_duration: Duration::from_secs(3),
            manifest_concurrency: vec![1, 64],
            manifest_max_requests: 5_000_000,
            image_clients: 4,
            images_per_client: 5,
            image_layers: 10,
            image_layer_size: 2 * MIB,
            listing_repos: 10_000,
            listing_tags: 10_000,
            listing_page: 100,
            listing_setup_concurrency: 16,
            listing_repeats: 5,
            listing_walk_deadline: Duration::from_secs(300),
            concurrent_pushes: 32,
            concurrent_push_size: 64 * MIB,
            extra: scenarios::ExtraParams::full(),
            round_timeout: Duration::from_secs(900),
        }
    }

    /// Seconds in all: 64 KiB / 1 MiB blobs, 0.5 s loops, 100 repositories
    /// and tags paged by 10, 32 × 256 KiB concurrent pushes.
    pub fn quick() -> Self {
        Self {
            preset: "quick".into(),
            push: vec![SizeRun { bytes: 64 * KIB, iterations: 3 }, SizeRun { bytes: MIB, iterations: 2 }],
            part_sizes: vec![16 * KIB, 256 * KIB],
            pull: vec![SizeRun { bytes: 64 * KIB, iterations: 5 }, SizeRun { bytes: MIB, iterations: 3 }],
            range_blob: MIB,
            range_len: 64 * KIB,
            range_duration: Duration::from_millis(300),
            range_max_requests: 10_000,
            manifest_duration: Duration::from_millis(500),
            manifest_concurrency: vec![1, 64],
            manifest_max_requests: 1_000_000,
            image_clients: 4,
            images_per_client: 1,
            image_layers: 10,
            image_layer_size: 64 * KIB,
            listing_repos: 100,
            listing_tags: 100,
            listing_page: 10,
            listing_setup_concurrency: 16,
            listing_repeats: 2,
            listing_walk_deadline: Duration::from_secs(60),
            concurrent_pushes: 32,
            concurrent_push_size: 256 * KIB,
            extra: scenarios::ExtraParams::quick(),
            round_timeout: Duration::from_secs(120),
        }
    }

    /// The largest blob the selected scenarios push (the payload buffer size).
    pub fn largest_blob(&self, scenarios: &[Scenario]) -> u64 {
        let mut largest = 4 * KIB; // configs, manifests' layers, listing blobs
        for scenario in scenarios {
            let sizes: Vec<u64> = match scenario {
                Scenario::BlobPush => self.push.iter().map(|r| r.bytes).collect(),
                Scenario::BlobPull | Scenario::BlobPullBusy => {
                    self.pull.iter().map(|r| r.bytes).chain([self.range_blob]).collect()
                }
                Scenario::Image => vec![self.image_layer_size],
                Scenario::ConcurrentPush => vec![self.concurrent_push_size],
                Scenario::ManifestGet | Scenario::Listing => vec![],
                Scenario::Concurrency | Scenario::Memory | Scenario::Storm | Scenario::Tls | Scenario::Replicas => {
                    self.extra.blob_sizes(*scenario)
                }
            };
            largest = sizes.into_iter().fold(largest, u64::max);
        }
        largest
    }
}

/// `1 GiB`, `64 MiB`, `256 KiB`, `100 B`.
pub fn size_label(bytes: u64) -> String {
    match bytes {
        b if b >= GIB && b % GIB == 0 => format!("{} GiB", b / GIB),
        b if b >= MIB && b % MIB == 0 => format!("{} MiB", b / MIB),
        b if b >= KIB && b % KIB == 0 => format!("{} KiB", b / KIB),
        b => format!("{b} B"),
    }
}

/// What the benchmark keeps about one registry between rounds: the upload
/// mode it needs and the content the scenarios set up once (pull blobs, the
/// manifest, the listing repositories), so round 2 does not redo round 1's setup.
#[derive(Debug, Default)]
pub struct TargetState {
    mono: Option<MonolithicMode>,
    pull: Option<scenarios::blobs::PullSetup>,
    manifest: Option<scenarios::manifests::ManifestSetup>,
    listing: Option<scenarios::listing::ListingSetup>,
    reuse_listing: bool,
}

impl TargetState {
    /// Nothing set up yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Assume the listing repositories and tags already exist under the
    /// namespace (made by an earlier run against the same server).
    #[must_use]
    pub fn reuse_listing(mut self) -> Self {
        self.reuse_listing = true;
        self
    }
}

/// The scenarios' shared inputs: parameters, namespace, payload buffer.
#[derive(Debug)]
pub struct Bench {
    params: Params,
    namespace: String,
    source: Arc<PayloadSource>,
}

impl Bench {
    /// Draws the payload buffer for the selected scenarios (about 1 s per
    /// GiB). Everything is pushed under `namespace/…`.
    pub fn new(params: Params, scenarios: &[Scenario], namespace: impl Into<String>) -> Self {
        let capacity = usize::try_from(params.largest_blob(scenarios)).unwrap_or(usize::MAX);
        let namespace = namespace.into().trim_matches('/').to_owned();
        Self { source: Arc::new(PayloadSource::new(capacity)), params, namespace }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Runs round `round` of `scenario` against `target` (whose process is
    /// `server_pid`, if known: its CPU time is reported). Never fails: what
    /// went wrong is in the run's `errors`, including a round that ran past
    /// [`Params::round_timeout`].
    pub async fn run_round(
        &self,
        target: &Target,
        state: &mut TargetState,
        scenario: Scenario,
        round: usize,
        server_pid: Option<u32>,
    ) -> ScenarioRun {
        let started = Instant::now();
        let cpu_before = (server::own_cpu_secs(), server_pid.and_then(server::cpu_secs));
        let mut rec = metric::Recorder { server_pid, ..Default::default() };
        let timeout = self.params.round_timeout;
        let outcome = {
            let mut cx = scenarios::Cx { bench: self, target, state, rec: &mut rec, server_pid };
            tokio::time::timeout(timeout, scenarios::run(&mut cx, scenario)).await
        };
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(err)) => rec.error(err.to_string()),
            Err(_) => rec.error(format!("round cut off after {} s (round timeout)", timeout.as_secs())),
        }
        ScenarioRun {
            scenario,
            round,
            metrics: rec.metrics,
            errors: rec.errors,
            notes: rec.notes,
            setup_secs: rec.setup_secs,
            elapsed_secs: started.elapsed().as_secs_f64(),
            cpu: cpu_before.0.zip(server::own_cpu_secs()).map(|(before, after)| CpuUse {
                client_secs: after - before,
                server_secs: cpu_before.1.zip(server_pid.and_then(server::cpu_secs)).map(|(b, a)| a - b),
            }),
        }
    }
}

/// Runs `op` from `concurrency` tasks until `duration` has passed or
/// `max_requests` were issued, timing each call. `op(seq)` returns the bytes
/// it received. A task that sees 50 failures in a row stops early (a dead
/// server must not spin for the whole duration).
pub async fn load<F, Fut>(concurrency: usize, duration: Duration, max_requests: u64, op: F) -> LoadResult
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, BenchError>> + Send + 'static,
{
    let op = Arc::new(op);
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let op = Arc::clone(&op);
        let issued = Arc::clone(&issued);
        tasks.spawn(async move {
            let mut part = LoadResult::default();
            let mut failures_in_a_row = 0;
            while Instant::now() < deadline && failures_in_a_row < 50 {
                let seq = issued.fetch_add(1, Ordering::Relaxed);
                if seq >= max_requests {
                    break;
                }
                let t0 = Instant::now();
                match op(seq).await {
                    Ok(bytes) => {
                        part.latencies.push(t0.elapsed());
                        part.bytes += bytes;
                        failures_in_a_row = 0;
                    }
                    Err(err) => {
                        part.failures += 1;
                        failures_in_a_row += 1;
                        part.first_failure.get_or_insert_with(|| err.to_string());
                    }
                }
            }
            part
        });
    }
    let mut total = LoadResult::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(part) => {
                total.latencies.extend(part.latencies);
                total.bytes += part.bytes;
                total.failures += part.failures;
                if total.first_failure.is_none() {
                    total.first_failure = part.first_failure;
                }
            }
            Err(err) => {
                total.failures += 1;
                total.first_failure.get_or_insert_with(|| format!("load task failed: {err}"));
            }
        }
    }
    total.elapsed = started.elapsed();
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_round_trip() {
        for scenario in Scenario::ALL.into_iter().chain(Scenario::EXTRA) {
            assert_eq!(scenario.name().parse::<Scenario>(), Ok(scenario));
            let value = clap::ValueEnum::to_possible_value(&scenario).map(|v| v.get_name().to_owned());
            assert_eq!(value.as_deref(), Some(scenario.name()));
        }
        assert!("nope".parse::<Scenario>().is_err());
    }

    #[test]
    fn size_labels() {
        assert_eq!(size_label(GIB), "1 GiB");
        assert_eq!(size_label(64 * MIB), "64 MiB");
        assert_eq!(size_label(256 * KIB), "256 KiB");
        assert_eq!(size_label(1000), "1000 B");
        assert_eq!(size_label(MIB + 1), format!("{} B", MIB + 1));
    }

    #[test]
    fn payload_buffer_fits_the_selected_scenarios() {
        let full = Params::full();
        assert_eq!(full.largest_blob(&Scenario::ALL), 512 * MIB);
        assert_eq!(full.largest_blob(&[Scenario::Image]), 2 * MIB);
        assert_eq!(full.largest_blob(&[Scenario::Listing]), 4 * KIB);
        assert_eq!(Params::quick().largest_blob(&Scenario::ALL), MIB);
    }

    #[tokio::test]
    async fn load_stops_on_count_and_counts_failures() {
        let result = load(4, Duration::from_secs(30), 10, |seq| async move {
            if seq % 2 == 0 { Ok(100) } else { Err(BenchError::new("odd")) }
        })
        .await;
        assert_eq!(result.latencies.len(), 5);
        assert_eq!(result.failures, 5);
        assert_eq!(result.bytes, 500);
        assert_eq!(result.first_failure.as_deref(), Some("odd"));

        let result = load(2, Duration::from_secs(30), u64::MAX, |_| async { Err(BenchError::new("down")) }).await;
        assert_eq!(result.failures, 100, "each task gives up after 50 failures in a row");
    }
}
