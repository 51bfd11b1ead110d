//! storm: the tail latency of manifest GET by tag, alone and during a storm of large
//! concurrent pushes (what a registry node sees when CI pushes images while clusters pull).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use reqwest::Method;
use tokio::task::JoinSet;

use super::concurrency::{CpuMeter, delete_blobs};
use super::{Cx, ImagePlan};
use crate::bench::metric::{CeilingKind, LoadResult, Metric, Unit};
use crate::bench::stats::LatencySummary;
use crate::bench::{BenchError, Target, load, size_label};

/// Manifest GETs by tag from `connections` tasks, back to back, until `stop` is set or
/// `max_requests` were issued. A task that sees 50 failures in a row stops early.
async fn gets_until(
    target: Target,
    repo: String,
    tag: String,
    connections: usize,
    stop: Arc<AtomicBool>,
    max_requests: u64,
) -> LoadResult {
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..connections.max(1) {
        let (target, repo, tag, stop, issued) =
            (target.clone(), repo.clone(), tag.clone(), Arc::clone(&stop), Arc::clone(&issued));
        tasks.spawn(async move {
            let mut part = LoadResult::default();
            let mut failures_in_a_row = 0;
            while !stop.load(Ordering::Relaxed)
                && failures_in_a_row < 50
                && issued.fetch_add(1, Ordering::Relaxed) < max_requests
            {
                let t0 = Instant::now();
                match target.get_manifest(&repo, &tag, Method::GET).await {
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
                total.first_failure = total.first_failure.or(part.first_failure);
            }
            Err(err) => {
                total.failures += 1;
                total.first_failure.get_or_insert_with(|| format!("GET task failed: {err}"));
            }
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// [`gets_until`] on a thread and a runtime of its own, with a client of its own: the
/// pushers share this process's runtime, and a GET waiting behind their tasks here would be
/// counted as the server's latency.
fn probe_on_own_thread(
    target: Target,
    repo: String,
    tag: String,
    connections: usize,
    stop: Arc<AtomicBool>,
    max_requests: u64,
) -> tokio::sync::oneshot::Receiver<Result<LoadResult, BenchError>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(async move {
                let own = target.at(target.base().clone()).await?;
                Ok(gets_until(own, repo, tag, connections, stop, max_requests).await)
            }),
            Err(e) => Err(BenchError::new(format!("no runtime for the GET thread: {e}"))),
        };
        let _ = tx.send(result);
    });
    rx
}

/// req/s, then p50, p99, p99.9 and max in ms, named `name …`.
fn record_tail(cx: &mut Cx<'_>, name: &str, result: &LoadResult) {
    cx.rec.load(name, result, None);
    match LatencySummary::from_durations(&result.latencies) {
        Some(s) => {
            cx.rec.metric(Metric::new(format!("{name} p99.9"), Unit::Millis, s.p999_ms));
            cx.rec.metric(Metric::new(format!("{name} max"), Unit::Millis, s.max_ms));
        }
        None => {
            for suffix in ["p99.9", "max"] {
                cx.rec.metric(Metric::unavailable(format!("{name} {suffix}"), Unit::Millis, "no request completed"));
            }
        }
    }
}

/// Quiet: manifest GETs by tag for `storm_quiet`. Storm: `storm_pushers` clients push fresh
/// `storm_push_size` blobs back to back (at most `storm_pushes_each` each, none started after
/// `storm_window`) while the same GETs run until the last push ends.
pub(crate) async fn storm(cx: &mut Cx<'_>) -> Result<(), BenchError> {
    let mode = cx.noted_monolithic_mode().await?;
    let p = cx.params().extra.clone();
    let repo = cx.repo("storm");
    let tag = "storm";
    let setup_started = Instant::now();
    let layer = cx.fresh(1024).await?;
    let plan = ImagePlan::new(vec![layer]);
    plan.push(cx.target, &repo, tag, mode).await.map_err(|e| e.context("storm setup"))?;
    let pushes = p.storm_pushers * p.storm_pushes_each;
    let payloads = cx.fresh_many(std::iter::repeat_n(p.storm_push_size, pushes)).await?;
    cx.rec.add_setup(setup_started.elapsed().as_secs_f64());

    let conns = p.storm_connections;
    let quiet = load(conns, p.storm_quiet, p.storm_max_requests, {
        let (target, repo) = (cx.target.clone(), repo.clone());
        move |_| {
            let (target, repo) = (target.clone(), repo.clone());
            async move { target.get_manifest(&repo, tag, Method::GET).await }
        }
    })
    .await;
    record_tail(cx, &format!("manifest GET c={conns}, quiet"), &quiet);

    let stop = Arc::new(AtomicBool::new(false));
    let gets = probe_on_own_thread(
        cx.target.clone(),
        repo.clone(),
        tag.to_owned(),
        conns,
        Arc::clone(&stop),
        p.storm_max_requests,
    );
    let meter = CpuMeter::start(cx.server_pid);
    let started = Instant::now();
    let window_end = started + p.storm_window;
    let mut pushers = JoinSet::new();
    for chunk in payloads.chunks(p.storm_pushes_each.max(1)) {
        let (target, repo, chunk) = (cx.target.clone(), repo.clone(), chunk.to_vec());
        pushers.spawn(async move {
            let mut pushed = Vec::new();
            for payload in chunk {
                if Instant::now() >= window_end {
                    break;
                }
                target.push_monolithic(&repo, &payload, mode).await?;
                pushed.push(payload);
            }
            Ok::<_, BenchError>(pushed)
        });
    }
    let mut pushed = Vec::new();
    let mut failure = None;
    while let Some(joined) = pushers.join_next().await {
        match joined {
            Ok(Ok(done)) => pushed.extend(done),
            Ok(Err(err)) => failure = failure.or(Some(err.to_string())),
            Err(err) => failure = failure.or(Some(format!("push task failed: {err}"))),
        }
    }
    let storm_secs = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let during = gets.await.map_err(|_| BenchError::new("the GET thread ended without an answer"))??;
    let bytes: u64 = pushed.iter().map(|b| b.len()).sum();

    let storm_name = format!("{} × {} pushes", p.storm_pushers, size_label(p.storm_push_size));
    record_tail(cx, &format!("manifest GET c={conns}, during {storm_name}"), &during);
    if let Some(err) = &failure {
        cx.rec.error(format!("{storm_name}: {err}"));
    }
    match crate::bench::stats::megabytes_per_sec(bytes, storm_secs.as_secs_f64()) {
        Some(rate) if failure.is_none() => cx.rec.metric(
            Metric::new(format!("storm: {storm_name}"), Unit::MegabytesPerSec, rate).with_ceiling(CeilingKind::Push),
        ),
        _ => cx.rec.metric(Metric::unavailable(
            format!("storm: {storm_name}"),
            Unit::MegabytesPerSec,
            failure.clone().unwrap_or_else(|| "nothing was pushed".to_owned()),
        )),
    }
    meter.record(cx, &format!("storm: {storm_name}"), bytes);
    cx.rec.note(format!(
        "storm: {} blobs of {} pushed in {:.1} s (none started after {:.1} s) while the GETs ran",
        pushed.len(),
        size_label(p.storm_push_size),
        storm_secs.as_secs_f64(),
        p.storm_window.as_secs_f64()
    ));
    // The storm's blobs go; the tiny image the GETs read (a 1 KiB layer, its config and
    // manifest) stays, as the other scenarios' setup does.
    delete_blobs(cx, &repo, pushed.iter().map(|b| b.digest().to_owned()).collect()).await;
    Ok(())
}
