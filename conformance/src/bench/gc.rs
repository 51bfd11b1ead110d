//! `berth-bench gc`: what Berth's garbage collector costs (issue 17). Berth only: it drives
//! the collector through the admin API (`POST /api/v1/gc`, which answers when the run has
//! ended, with the run's record).
//!
//! Two measurements, each round on a Berth started fresh for it (see `bin/berth-bench.rs`):
//! - **reclaim** ([`reclaim_round`]): `blobs` small unique blobs pushed (single `POST
//!   ?digest=`, 16 in flight) into repositories of `per_repository`, the repositories deleted
//!   (nothing links the blobs any more: no grace period applies), then one collection, timed
//!   from request to answer. Figures: blobs reclaimed per second, and the server's CPU
//!   seconds during the collection (`/proc/PID/stat`).
//! - **effect** ([`effect_round`]): whole images pushed, then pulled, by `effect_clients`
//!   clients at once (the `image` scenario's shape), on a registry that holds
//!   `effect_garbage` unreferenced blobs when the round starts, without or with a collector
//!   looping (one more client posting `POST /api/v1/gc` back to back, the first run
//!   reclaiming the garbage, the later ones scanning). Figures: images/s of each; the report
//!   gives the ratio with ÷ without.
//!
//! Seeding is setup: timed and reported, never part of a figure. Each round ends by
//! deleting its repositories and collecting, so the store holds nothing of it afterwards
//! (what matters on S3, where no temporary folder goes away by itself).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;

use super::scenarios::ImagePlan;
use super::server;
use super::{BenchError, MonolithicMode, PayloadSource, Target, stats};

/// Sizes and counts of both measurements.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GcParams {
    /// `full` or `quick`.
    pub preset: String,
    /// reclaim: unreferenced blobs made before the collection.
    pub blobs: usize,
    /// Blob sizes, bytes, spread evenly between these.
    pub blob_min: u64,
    pub blob_max: u64,
    /// Blobs per repository while seeding (each repository is deleted whole).
    pub per_repository: usize,
    /// Requests in flight while seeding.
    pub setup_concurrency: usize,
    /// effect: unreferenced blobs present when each round starts.
    pub effect_garbage: usize,
    pub effect_clients: usize,
    /// effect: images each client pushes, then pulls.
    pub effect_images: usize,
    pub effect_layers: usize,
    pub effect_layer_size: u64,
    /// effect: the looping collector's pause after each run (zero: back to back, the worst
    /// case; the default schedule is one run an hour).
    #[serde(serialize_with = "super::secs")]
    pub effect_pause: Duration,
    /// Longest wait for one collection's answer.
    #[serde(serialize_with = "super::secs")]
    pub collect_timeout: Duration,
}

impl GcParams {
    /// The published benchmark: 100,000 blobs; 20,000 of garbage under 4 clients × 30
    /// images of 10 × 256 KiB.
    pub fn full() -> Self {
        Self {
            preset: "full".into(),
            blobs: 100_000,
            blob_min: 100,
            blob_max: 1000,
            per_repository: 1000,
            setup_concurrency: 16,
            effect_garbage: 20_000,
            effect_clients: 4,
            effect_images: 30,
            effect_layers: 10,
            effect_layer_size: 256 << 10,
            effect_pause: Duration::ZERO,
            collect_timeout: Duration::from_secs(1800),
        }
    }

    /// Seconds in all, for smoke runs.
    pub fn quick() -> Self {
        Self {
            preset: "quick".into(),
            blobs: 300,
            per_repository: 50,
            effect_garbage: 100,
            effect_clients: 2,
            effect_images: 2,
            effect_layers: 3,
            effect_layer_size: 16 << 10,
            collect_timeout: Duration::from_secs(120),
            ..Self::full()
        }
    }

    /// The payload buffer the rounds need.
    pub fn largest_blob(&self) -> u64 {
        self.blob_max.max(self.effect_layer_size)
    }
}

/// How long after a push Berth may still hold its digest: writers' holds are released in the
/// registry's batched flush (every 5 s), and a collection skips held digests. The rounds wait
/// this long after pushing, before a collection that must take everything.
const HOLD_RELEASE: Duration = Duration::from_secs(6);

/// The 1-, 5- and 15-minute load averages, to read a round's figures against what else ran.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// What seeding made.
#[derive(Debug, Clone, Serialize)]
pub struct Seeded {
    pub blobs: usize,
    pub bytes: u64,
    pub repositories: usize,
    /// Pushing them, and deleting the repositories.
    pub push_secs: f64,
    pub delete_secs: f64,
}

/// Pushes `count` fresh blobs into repositories `<prefix>-<n>` of `per_repository` each,
/// then deletes those repositories: `count` blobs that nothing links.
pub async fn seed_garbage(
    target: &Target,
    source: &Arc<PayloadSource>,
    prefix: &str,
    count: usize,
    p: &GcParams,
) -> Result<Seeded, BenchError> {
    let per = p.per_repository.max(1);
    let spread = (p.blob_max - p.blob_min).max(1);
    let started = Instant::now();
    let pushed: Vec<Result<u64, BenchError>> = futures::stream::iter(0..count)
        .map(|i| {
            let (target, source) = (target.clone(), Arc::clone(source));
            let repo = format!("{prefix}-{}", i / per);
            let len = p.blob_min + (i as u64 * 7919) % spread;
            async move {
                let blob = source.fresh(len)?;
                target.push_monolithic(&repo, &blob, MonolithicMode::SinglePost).await?;
                Ok(len)
            }
        })
        .buffer_unordered(p.setup_concurrency.max(1))
        .collect()
        .await;
    let push_secs = started.elapsed().as_secs_f64();
    let mut bytes = 0;
    for r in pushed {
        bytes += r.map_err(|e| e.context("seeding unreferenced blobs"))?;
    }
    let repositories = count.div_ceil(per);
    let started = Instant::now();
    let deleted: Vec<Result<(), BenchError>> = futures::stream::iter(0..repositories)
        .map(|n| {
            let target = target.clone();
            let repo = format!("{prefix}-{n}");
            async move { target.delete_repository(&repo).await }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    for r in deleted {
        r.map_err(|e| e.context("deleting the seeded repositories"))?;
    }
    Ok(Seeded { blobs: count, bytes, repositories, push_secs, delete_secs: started.elapsed().as_secs_f64() })
}

/// A count from a run record: `run[key]`, or `run["counts"][key]`.
pub fn run_count(run: &serde_json::Value, key: &str) -> Option<u64> {
    run.get(key).or_else(|| run.get("counts").and_then(|c| c.get(key))).and_then(serde_json::Value::as_u64)
}

/// One reclaim round.
#[derive(Debug, Clone, Serialize)]
pub struct ReclaimRound {
    pub seeded: Seeded,
    /// From `POST /api/v1/gc` to its answer.
    pub collect_secs: f64,
    /// Blobs the run's record says it reclaimed.
    pub reclaimed: u64,
    pub blobs_per_sec: f64,
    /// The server's CPU time (user + system) during the collection, when its PID is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_before: Option<[f64; 3]>,
    /// The run's record, as the registry answered it.
    pub run: serde_json::Value,
}

/// Seeds `p.blobs` unreferenced blobs, then times one collection of them.
pub async fn reclaim_round(
    target: &Target,
    source: &Arc<PayloadSource>,
    namespace: &str,
    p: &GcParams,
    server_pid: Option<u32>,
) -> Result<ReclaimRound, BenchError> {
    let seeded = seed_garbage(target, source, &format!("{namespace}/garbage"), p.blobs, p).await?;
    // The seeding's holds are released, and its dirty pages written back, before the clock.
    tokio::time::sleep(HOLD_RELEASE).await;
    flush_page_cache().await;
    let load_before = load_average();
    let cpu_before = server_pid.and_then(server::cpu_secs);
    let started = Instant::now();
    let run = target
        .collect(p.collect_timeout)
        .await?
        .ok_or_else(|| BenchError::new("POST /api/v1/gc: 409, another collector holds the lease"))?;
    let collect_secs = started.elapsed().as_secs_f64();
    let server_cpu_secs = cpu_before.zip(server_pid.and_then(server::cpu_secs)).map(|(b, a)| a - b);
    let reclaimed = run_count(&run, "blobs")
        .ok_or_else(|| BenchError::new(format!("POST /api/v1/gc: no blob count in the run's record: {run}")))?;
    if reclaimed < p.blobs as u64 {
        return Err(BenchError::new(format!(
            "the collection reclaimed {reclaimed} of the {} unreferenced blobs: {run}",
            p.blobs
        )));
    }
    Ok(ReclaimRound {
        seeded,
        collect_secs,
        reclaimed,
        blobs_per_sec: stats::per_sec(reclaimed, collect_secs).unwrap_or(0.0),
        server_cpu_secs,
        load_before,
        run,
    })
}

/// One effect round.
#[derive(Debug, Clone, Serialize)]
pub struct EffectRound {
    pub with_collector: bool,
    pub garbage: Seeded,
    pub images: usize,
    pub push_images_per_sec: f64,
    pub push_mbps: f64,
    pub pull_images_per_sec: f64,
    pub pull_mbps: f64,
    /// Collections that ran (and ended) during push and pull, and the blobs they reclaimed.
    pub collections: u64,
    pub collected_blobs: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_before: Option<[f64; 3]>,
}

/// What a looping collector did.
#[derive(Debug, Default)]
struct Looped {
    runs: u64,
    blobs: u64,
    error: Option<String>,
}

/// Collects until `stop`, pausing `pause` after each run; a 409 (the lease is held) waits a
/// moment.
async fn collect_until(target: Target, stop: Arc<AtomicBool>, timeout: Duration, pause: Duration) -> Looped {
    let mut looped = Looped::default();
    while !stop.load(Ordering::Relaxed) {
        match target.collect(timeout).await {
            Ok(Some(run)) => {
                looped.runs += 1;
                looped.blobs += run_count(&run, "blobs").unwrap_or(0);
                let resume = Instant::now() + pause;
                while Instant::now() < resume && !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(50).min(pause)).await;
                }
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => {
                looped.error = Some(e.to_string());
                break;
            }
        }
    }
    looped
}

/// One client's repository and its (tag, image) pairs.
type ClientPlan = (String, Vec<(String, ImagePlan)>);

/// One effect figure of a round.
type Figure = fn(&EffectRound) -> f64;

/// Runs `work` for each client's images in parallel; returns (bytes, images).
async fn clients<F, Fut>(plans: &[ClientPlan], target: &Target, work: F) -> Result<(u64, usize), BenchError>
where
    F: Fn(Target, String, String, ImagePlan) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<u64, BenchError>> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for (repo, images) in plans {
        let (target, work, repo, images) = (target.clone(), work.clone(), repo.clone(), images.clone());
        tasks.spawn(async move {
            let mut bytes = 0;
            for (tag, plan) in &images {
                bytes += work(target.clone(), repo.clone(), tag.clone(), plan.clone()).await?;
            }
            Ok::<_, BenchError>((bytes, images.len()))
        });
    }
    let (mut bytes, mut images) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (b, n) = joined.map_err(|e| BenchError::new(format!("client task failed: {e}")))??;
        bytes += b;
        images += n;
    }
    Ok((bytes, images))
}

/// Seeds the garbage, then pushes and pulls the images, timed, with a collector looping
/// throughout when `with_collector`; then deletes what it pushed and collects.
pub async fn effect_round(
    target: &Target,
    source: &Arc<PayloadSource>,
    namespace: &str,
    p: &GcParams,
    with_collector: bool,
    server_pid: Option<u32>,
) -> Result<EffectRound, BenchError> {
    let garbage = seed_garbage(target, source, &format!("{namespace}/garbage"), p.effect_garbage, p).await?;
    let mut plans: Vec<ClientPlan> = Vec::new();
    for c in 0..p.effect_clients {
        let mut images = Vec::new();
        for i in 0..p.effect_images {
            let layers = (0..p.effect_layers).map(|_| source.fresh(p.effect_layer_size)).collect::<Result<_, _>>()?;
            images.push((format!("i{i}"), ImagePlan::new(layers)));
        }
        plans.push((format!("{namespace}/image-{c}"), images));
    }
    flush_page_cache().await;
    let load_before = load_average();
    let cpu_before = server_pid.and_then(server::cpu_secs);
    let stop = Arc::new(AtomicBool::new(false));
    let collector = with_collector
        .then(|| tokio::spawn(collect_until(target.clone(), Arc::clone(&stop), p.collect_timeout, p.effect_pause)));

    let started = Instant::now();
    let pushed = clients(&plans, target, |target, repo, tag, plan| async move {
        plan.push(&target, &repo, &tag, MonolithicMode::SinglePost).await.map(|()| plan.total_bytes())
    })
    .await;
    let push_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let pulled =
        clients(&plans, target, |target, repo, tag, plan| async move { plan.pull(&target, &repo, &tag).await }).await;
    let pull_secs = started.elapsed().as_secs_f64();

    stop.store(true, Ordering::Relaxed);
    let looped = match collector {
        Some(task) => task.await.map_err(|e| BenchError::new(format!("collector task failed: {e}")))?,
        None => Looped::default(),
    };
    let server_cpu_secs = cpu_before.zip(server_pid.and_then(server::cpu_secs)).map(|(b, a)| a - b);
    let ((push_bytes, images), (pull_bytes, _)) = (pushed?, pulled?);
    if let Some(e) = looped.error {
        return Err(BenchError::new(format!("the looping collector failed: {e}")));
    }
    for (repo, _) in &plans {
        target.delete_repository(repo).await?;
    }
    tokio::time::sleep(HOLD_RELEASE).await;
    target.collect(p.collect_timeout).await?;
    Ok(EffectRound {
        with_collector,
        garbage,
        images,
        push_images_per_sec: stats::per_sec(images as u64, push_secs).unwrap_or(0.0),
        push_mbps: stats::megabytes_per_sec(push_bytes, push_secs).unwrap_or(0.0),
        pull_images_per_sec: stats::per_sec(images as u64, pull_secs).unwrap_or(0.0),
        pull_mbps: stats::megabytes_per_sec(pull_bytes, pull_secs).unwrap_or(0.0),
        collections: looped.runs,
        collected_blobs: looped.blobs,
        server_cpu_secs,
        load_before,
    })
}

/// `sync`: what the seeding left in the page cache is written back before the clock starts.
async fn flush_page_cache() {
    let _ = tokio::process::Command::new("sync").status().await;
}

/// Everything `berth-bench gc` measured.
#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    pub machine: super::machine::Machine,
    pub berth: String,
    /// `local disk (DIR)` or `S3 (ENDPOINT, bucket B)`.
    pub storage: String,
    pub params: GcParams,
    pub reclaim: Vec<ReclaimRound>,
    pub effect: Vec<EffectRound>,
    pub errors: Vec<String>,
}

/// `min–max (median)`, or `n/a`.
fn spread(values: &[f64], digits: usize) -> String {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return "n/a".into();
    }
    v.sort_by(f64::total_cmp);
    let median = stats::median(&v).unwrap_or(v[0]);
    format!("{:.digits$}–{:.digits$} (median {:.digits$})", v[0], v[v.len() - 1], median)
}

impl GcReport {
    fn effect_values(&self, with: bool, f: impl Fn(&EffectRound) -> f64) -> Vec<f64> {
        self.effect.iter().filter(|r| r.with_collector == with).map(f).collect()
    }

    /// Median with ÷ median without, for one effect figure.
    fn effect_ratio(&self, f: impl Fn(&EffectRound) -> f64 + Copy) -> Option<f64> {
        stats::ratio(stats::median(&self.effect_values(true, f)), stats::median(&self.effect_values(false, f)))
    }

    /// How the collector ran in the effect rounds.
    fn looping(&self) -> String {
        match self.params.effect_pause {
            d if d.is_zero() => "collector looping back to back".into(),
            d => format!("collector looping, {} s pause", d.as_secs_f64()),
        }
    }

    /// The figures as Markdown rows (the text output is the same table).
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "Berth {} on {}; storage: {}; preset {}.\n\n| measurement | figure (min–max over rounds) |\n|---|---|\n",
            self.berth,
            self.machine.summary(),
            self.storage,
            self.params.preset
        );
        if !self.reclaim.is_empty() {
            let r = &self.reclaim;
            let cpu: Vec<f64> = r.iter().filter_map(|x| x.server_cpu_secs).collect();
            let cpu_per_k: Vec<f64> =
                r.iter().filter_map(|x| x.server_cpu_secs.map(|c| c * 1000.0 / x.reclaimed.max(1) as f64)).collect();
            out += &format!(
                "| reclaim {} unreferenced blobs: blobs/s ({} rounds) | {} |\n",
                self.params.blobs,
                r.len(),
                spread(&r.iter().map(|x| x.blobs_per_sec).collect::<Vec<_>>(), 0)
            );
            out += &format!(
                "| reclaim: collection wall time, s | {} |\n",
                spread(&r.iter().map(|x| x.collect_secs).collect::<Vec<_>>(), 2)
            );
            out += &format!("| reclaim: server CPU during the collection, s | {} |\n", spread(&cpu, 2));
            out += &format!("| reclaim: server CPU per 1,000 blobs, s | {} |\n", spread(&cpu_per_k, 3));
            out += &format!(
                "| seeding (setup, not a figure): pushes/s | {} |\n",
                spread(&r.iter().map(|x| x.seeded.blobs as f64 / x.seeded.push_secs).collect::<Vec<_>>(), 0)
            );
        }
        if !self.effect.is_empty() {
            let rows: [(&str, Figure); 4] = [
                ("push, images/s", |r| r.push_images_per_sec),
                ("push, MB/s", |r| r.push_mbps),
                ("pull, images/s", |r| r.pull_images_per_sec),
                ("pull, MB/s", |r| r.pull_mbps),
            ];
            for (name, f) in rows {
                out += &format!("| {name}, no collector | {} |\n", spread(&self.effect_values(false, f), 1));
                out += &format!("| {name}, {} | {} |\n", self.looping(), spread(&self.effect_values(true, f), 1));
                let ratio = self.effect_ratio(f).map_or("n/a".into(), |x| format!("{x:.3}"));
                out += &format!("| {name}: with ÷ without (medians) | {ratio} |\n");
            }
            let runs: Vec<f64> = self.effect_values(true, |r| r.collections as f64);
            out += &format!("| collections during a looping round | {} |\n", spread(&runs, 0));
        }
        if !self.errors.is_empty() {
            out += &format!("\nErrors:\n\n{}\n", self.errors.iter().map(|e| format!("- {e}\n")).collect::<String>());
        }
        out
    }
}
