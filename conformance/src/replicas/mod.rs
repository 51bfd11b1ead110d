//! `berth-replicas`: do N replicas of one registry (one metadata database, one blob store,
//! several URLs) behave as one registry?
//!
//! A seeded, randomized workload sends every request to a replica drawn from the seed:
//! chunked uploads whose `POST`, `PATCH`es and `PUT` land on different replicas (the
//! `Location` of each answer followed on the next), monolithic pushes, the same blob
//! pushed through several replicas at once, different manifests pushed to one tag at
//! once, deletes of tags, manifests and blobs (some racing a push), and two `PATCH`es
//! racing for the same offset of one upload. Then, after a settle time for caches, every
//! replica is read back: tag lists, tags, manifests by digest, blobs (streamed and hashed)
//! and the catalog must be identical on all replicas and match what the workload did.
//!
//! Black box over HTTP only, so it runs against any registry's replicas; with one URL
//! (or the same URL twice) it checks one registry's consistency under concurrency.
//!
//! Layout:
//! - `rng`: the seeded generator; each operation draws from its own stream, so a seed
//!   replays the same requests and bytes whatever the interleaving.
//! - `client`: the replicas behind one HTTP client, answers captured with their replica.
//! - `workload`: the operations, each checking its answers and stating a claim.
//! - `model`: claims, facts and their alternatives (one per serial order of a race).
//! - `verify`: reading everything back from every replica and comparing.
//!
//! Invariants:
//! - Operations never share content or tags, so each operation's claim is exact on its
//!   own; races are staged inside one operation, with every serial order as an
//!   alternative, never assuming which request won.
//! - Nothing panics: every wrong answer becomes a sentence naming the replica (`r1
//!   (http://…)`) and what it said.
//! - Bounded: `ops` operations, `concurrency` at a time, each within `timeout`.

mod client;
mod model;
mod rng;
mod verify;
mod workload;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::{Method, Url};

pub use rng::Rng;
pub use workload::{OpKind, plan};

use crate::auth::Credentials;
use crate::check::{CaseResult, Failure};
use client::Replicas;
use model::Model;
use workload::Env;

/// How large the workload's blobs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sizes {
    /// Largest blob of monolithic pushes and ordinary chunked uploads.
    pub max_blob: u64,
    /// Size range of the large chunked uploads (a quarter of them), so that many small
    /// chunks add up to several 5 MiB parts; `None` for none.
    pub large_blobs: Option<(u64, u64)>,
    /// Largest chunk of a chunked upload.
    pub max_chunk: u64,
    /// Largest image layer.
    pub max_layer: u64,
}

impl Sizes {
    /// Blobs up to 6 MiB, chunked ones up to 20 MiB, chunks up to 6 MiB.
    pub fn full() -> Self {
        Self { max_blob: 6 << 20, large_blobs: Some((12 << 20, 20 << 20)), max_chunk: 6 << 20, max_layer: 1 << 20 }
    }

    /// Kilobytes only: smoke runs that finish in seconds.
    pub fn small() -> Self {
        Self { max_blob: 256 << 10, large_blobs: None, max_chunk: 64 << 10, max_layer: 16 << 10 }
    }
}

/// Everything [`run`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The replicas' base URLs (a path prefix is kept). The same URL may appear twice.
    pub urls: Vec<Url>,
    /// Seeds every choice and every byte; printed so that a failure can be replayed.
    pub seed: u64,
    /// Operations in the workload.
    pub ops: usize,
    /// Operations running at once.
    pub concurrency: usize,
    /// Prefix of every repository created. Default `replicas/<random>`, so runs never meet.
    pub namespace: String,
    /// Wait between the workload and the checks: replicas may cache tag lookups briefly.
    pub settle: Duration,
    /// Upper bound for one operation, requests included.
    pub timeout: Duration,
    /// Blob sizes.
    pub sizes: Sizes,
    /// Who to sign in as when the registry asks.
    pub credentials: Option<Credentials>,
}

impl Config {
    /// Defaults: a random seed, 200 operations, 8 at once, a fresh namespace, 3 s settle
    /// time, 120 s per operation, [`Sizes::full`], no credentials.
    pub fn new(urls: Vec<Url>) -> Self {
        let token = uuid::Uuid::new_v4().simple().to_string();
        Self {
            urls,
            seed: Rng::entropy_seed(),
            ops: 200,
            concurrency: 8,
            namespace: format!("replicas/{}", &token[..12]),
            settle: Duration::from_secs(3),
            timeout: Duration::from_secs(120),
            sizes: Sizes::full(),
            credentials: None,
        }
    }
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The seed the run used.
    pub seed: u64,
    /// Every line printed, in order: phases and inconsistencies.
    pub lines: Vec<String>,
    /// Every inconsistency: a sentence naming the replica and what it said.
    pub inconsistencies: Vec<String>,
    /// Allowed alternatives the registry took, with how often.
    pub notes: Vec<String>,
}

impl Report {
    /// No inconsistency.
    pub fn passed(&self) -> bool {
        self.inconsistencies.is_empty()
    }

    /// The final line.
    pub fn summary(&self) -> String {
        if self.passed() {
            format!("OK: the replicas agree with each other and with the workload (seed {})", self.seed)
        } else {
            format!(
                "FAILED: {} inconsistencies (seed {}; replay with --seed {})",
                self.inconsistencies.len(),
                self.seed,
                self.seed
            )
        }
    }
}

/// Collects the report and passes every line to the caller as it comes.
pub(crate) struct Reporter<'a> {
    report: Report,
    progress: &'a mut (dyn FnMut(&str) + Send),
}

impl Reporter<'_> {
    pub(crate) fn phase(&mut self, line: String) {
        (self.progress)(&line);
        self.report.lines.push(line);
    }

    pub(crate) fn inconsistency(&mut self, what: String) {
        let line = format!("INCONSISTENT {what}");
        (self.progress)(&line);
        self.report.lines.push(line);
        self.report.inconsistencies.push(what);
    }
}

/// The shared repositories the operations pick from (nested names on purpose).
fn repositories(namespace: &str) -> Vec<String> {
    ["app", "base/image", "team/svc", "tools"].iter().map(|r| format!("{namespace}/{r}")).collect()
}

/// Runs the workload and the checks. `progress` gets every line as it is printed. An
/// error means the run could not start (a replica unreachable, a bad configuration);
/// inconsistencies are in the [`Report`].
pub async fn run(config: &Config, progress: &mut (dyn FnMut(&str) + Send)) -> CaseResult<Report> {
    if config.ops == 0 || config.concurrency == 0 {
        return Err(Failure::new("--ops and --concurrency must be at least 1"));
    }
    let replicas = Replicas::new(&config.urls, config.timeout, config.credentials.clone())?;
    let mut out = Reporter { report: Report { seed: config.seed, ..Report::default() }, progress };
    let names: Vec<String> = (0..replicas.count()).map(|i| replicas.label(i)).collect();
    out.phase(format!(
        "berth-replicas: seed {}, {} replicas [{}], namespace {}, {} operations, {} at once, settle {} s",
        config.seed,
        replicas.count(),
        names.join(", "),
        config.namespace,
        config.ops,
        config.concurrency,
        config.settle.as_secs_f64()
    ));

    let auth = replicas.discover().await?;
    for replica in 0..replicas.count() {
        let resp = replicas.send(replica, replicas.at(replica, Method::GET, "/v2/")?).await?;
        if resp.status != 200 {
            return Err(Failure::new(format!(
                "{}: GET /v2/ answered {} ({}) when signed in{}",
                replicas.label(replica),
                resp.status,
                resp.body_excerpt(),
                if config.credentials.is_none() { "; does the registry need --username/--password?" } else { "" }
            )));
        }
    }
    out.phase(format!("reach: GET /v2/ answered 200 on all {} replicas ({auth})", replicas.count()));

    let kinds = plan(config.seed, config.ops);
    let mut counts: BTreeMap<OpKind, usize> = BTreeMap::new();
    for kind in &kinds {
        *counts.entry(*kind).or_default() += 1;
    }
    let described: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    out.phase(format!("plan: {} operations: {}", kinds.len(), described.join(", ")));

    let model = workload(config, &replicas, &kinds, &mut out).await;

    tokio::time::sleep(config.settle).await;
    out.phase(format!("settle: waited {} s for replica caches", config.settle.as_secs_f64()));

    verify::verify(&replicas, &model, config.concurrency, &mut out).await;

    // Every token comes from the realm replica 0 names and is used on every replica; the
    // client retries a refused one with a fresh token, so a replica that refuses another's
    // tokens would pass unnoticed if refusals were not counted here.
    let (refused, examples) = replicas.auth_refusals();
    if refused == 0 && config.credentials.is_some() {
        out.phase("auth: no signed request was refused on any replica".to_owned());
    }
    if refused > 0 {
        out.inconsistency(format!(
            "{refused} signed requests were refused with 401 (a token must work on every replica until it expires): {}",
            examples.join("; ")
        ));
    }

    let mut notes: BTreeMap<String, usize> = BTreeMap::new();
    for note in std::mem::take(&mut out.report.notes) {
        *notes.entry(note).or_default() += 1;
    }
    out.report.notes = notes.into_iter().map(|(note, n)| format!("{note} (×{n})")).collect();
    for note in out.report.notes.clone() {
        out.phase(format!("note: {note}"));
    }
    let summary = out.report.summary();
    out.phase(summary);
    Ok(out.report)
}

/// Runs every operation, `concurrency` at once; returns what they claim.
async fn workload(config: &Config, replicas: &Replicas, kinds: &[OpKind], out: &mut Reporter<'_>) -> Model {
    let started = Instant::now();
    let repos = repositories(&config.namespace);
    let env = Env { replicas, sizes: &config.sizes, repos: &repos, namespace: &config.namespace };
    let env = &env;
    let mut results = futures::stream::iter(kinds.iter().copied().enumerate())
        .map(|(index, kind)| async move {
            let result = tokio::time::timeout(config.timeout, workload::run_op(env, config.seed, index, kind)).await;
            (index, kind, result)
        })
        .buffer_unordered(config.concurrency);
    let mut model = Model::default();
    while let Some((index, kind, result)) = results.next().await {
        match result {
            Ok(Ok(outcome)) => {
                model.repos.extend(outcome.repos);
                model.blob_sizes.extend(outcome.blobs);
                model.manifests.extend(outcome.manifests);
                out.report.notes.extend(outcome.notes);
                model.claims.push((index, kind.name(), outcome.claim));
            }
            Ok(Err(failure)) => {
                model.failed_ops.insert(index);
                out.inconsistency(format!("op {index} {kind}: {failure}"));
            }
            Err(_) => {
                model.failed_ops.insert(index);
                out.inconsistency(format!("op {index} {kind}: did not finish within {} s", config.timeout.as_secs()));
            }
        }
    }
    // Failed operations may have created repositories too; their listings must still agree.
    for (index, _) in kinds.iter().enumerate().filter(|(i, _)| model.failed_ops.contains(i)) {
        model.repos.insert(format!("{}/fresh/o{index}", config.namespace));
    }
    model.repos.extend(repos.iter().cloned());
    model.claims.sort_by_key(|(index, _, _)| *index);
    let stats = &replicas.stats;
    out.phase(format!(
        "workload: {} operations in {:.1} s, {} requests, {:.1} MiB sent, {:.1} MiB received, {} failed",
        kinds.len(),
        started.elapsed().as_secs_f64(),
        stats.requests.load(Ordering::Relaxed),
        stats.bytes_sent.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
        stats.bytes_read.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
        model.failed_ops.len()
    ));
    model
}
