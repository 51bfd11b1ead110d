//! blob-push, blob-pull and concurrent-push: bytes in and out of the blob store.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::Cx;
use crate::bench::metric::{CeilingKind, CpuSnapshot, Metric, Timed, Unit};
use crate::bench::payload::SplitMix64;
use crate::bench::server::CpuBurner;
use crate::bench::{BenchError, Payload, load, size_label, stats};

/// Blobs pushed once per registry for the pull scenario.
#[derive(Debug, Clone)]
pub(crate) struct PullSetup {
    repo: String,
    blobs: Vec<Payload>,
}

impl PullSetup {
    fn blob(&self, len: u64) -> Result<&Payload, BenchError> {
        self.blobs
            .iter()
            .find(|b| b.len() == len)
            .ok_or_else(|| BenchError::new(format!("no {} blob was set up", size_label(len))))
    }
}

/// How a blob-push metric pushed its blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushKind {
    /// `POST`, one `PUT ?digest=` with the body (or one `POST ?digest=`).
    Monolithic,
    /// docker: `POST`, one streamed `PATCH` (no `Content-Range`), `PUT ?digest=`.
    Streamed,
    /// `POST`, one `PATCH` per part of this many bytes with `Content-Range`, `PUT ?digest=`.
    Parts(u64),
}

/// The metric name of pushes of `kind` of `bytes`-sized blobs, e.g.
/// `monolithic 512 MiB`, `streamed PATCH 512 MiB`, `8 MiB parts 512 MiB`.
pub(crate) fn push_metric(kind: PushKind, bytes: u64) -> String {
    match kind {
        PushKind::Monolithic => format!("monolithic {}", size_label(bytes)),
        PushKind::Streamed => format!("streamed PATCH {}", size_label(bytes)),
        PushKind::Parts(part) => format!("{} parts {}", size_label(part), size_label(bytes)),
    }
}

/// The metric name of whole-blob GETs of `bytes`-sized blobs.
pub(crate) fn pull_metric(bytes: u64) -> String {
    format!("GET {}", size_label(bytes))
}

/// Each size pushed `iterations` times monolithically, as one streamed
/// PATCH, and in parts of each part size smaller than the blob; every push a
/// fresh blob. Each metric comes with server CPU per GiB pushed.
pub(crate) async fn push(cx: &mut Cx<'_>) -> Result<(), BenchError> {
    let mode = cx.noted_monolithic_mode().await?;
    let repo = cx.repo("push");
    cx.rec
        .note("streamed PATCH: POST, one PATCH with the whole body (chunked encoding, no Content-Range), PUT ?digest=");
    cx.rec.note("N parts: POST, one PATCH per N bytes with Content-Range, PUT ?digest=");
    for run in cx.params().push.clone() {
        let mut kinds = vec![PushKind::Monolithic, PushKind::Streamed];
        kinds.extend(cx.params().part_sizes.iter().filter(|&&p| p < run.bytes).map(|&p| PushKind::Parts(p)));
        for kind in kinds {
            let name = push_metric(kind, run.bytes);
            let mut timed = Timed::default();
            let mut failure = None;
            for _ in 0..run.iterations {
                let payload = cx.fresh(run.bytes).await?;
                let cpu = CpuSnapshot::take(cx.rec.server_pid);
                let started = Instant::now();
                let pushed = match kind {
                    PushKind::Monolithic => cx.target.push_monolithic(&repo, &payload, mode).await,
                    PushKind::Streamed => cx.target.push_streamed(&repo, &payload).await,
                    PushKind::Parts(part) => cx.target.push_chunked(&repo, &payload, part).await,
                };
                let elapsed = started.elapsed();
                match pushed {
                    Ok(()) => {
                        timed.add_cpu(cpu.spent());
                        timed.add(payload.len(), elapsed);
                    }
                    Err(err) => {
                        failure = Some(err);
                        break;
                    }
                }
            }
            cx.rec.throughput(&name, &timed, failure, CeilingKind::Push);
        }
    }
    Ok(())
}

/// Whole-blob GETs of each size, then random ranged reads of the range blob
/// on one connection; each with server CPU per GiB served. With `busy`, a
/// CPU burner ([`CpuBurner`]) spins through each timed loop.
pub(crate) async fn pull(cx: &mut Cx<'_>, busy: bool) -> Result<(), BenchError> {
    if cx.state.pull.is_none() {
        let started = Instant::now();
        let mode = cx.monolithic_mode().await?;
        let repo = cx.repo("pull");
        let mut sizes: Vec<u64> = cx.params().pull.iter().map(|r| r.bytes).collect();
        sizes.push(cx.params().range_blob);
        sizes.sort_unstable();
        sizes.dedup();
        let mut blobs = Vec::new();
        for size in sizes {
            let payload = cx.fresh(size).await?;
            cx.target.push_monolithic(&repo, &payload, mode).await.map_err(|e| e.context("pull setup"))?;
            blobs.push(payload);
        }
        cx.rec.add_setup(started.elapsed().as_secs_f64());
        cx.state.pull = Some(PullSetup { repo, blobs });
    }
    let Some(setup) = cx.state.pull.clone() else {
        return Err(BenchError::new("pull setup missing"));
    };
    if busy {
        cx.rec.note("one core busy: a `sh` busy loop (a child process, killed by PID) runs through each timed loop");
    }
    let burner = || if busy { CpuBurner::start().map(Some) } else { Ok(None) };

    for run in cx.params().pull.clone() {
        let name = pull_metric(run.bytes);
        let blob = setup.blob(run.bytes)?;
        let mut timed = Timed::default();
        let mut failure = None;
        let burning = burner()?;
        for _ in 0..run.iterations {
            let cpu = CpuSnapshot::take(cx.rec.server_pid);
            let started = Instant::now();
            match cx.target.get_blob(&setup.repo, blob.digest(), None, blob.len()).await {
                Ok(bytes) => {
                    let elapsed = started.elapsed();
                    timed.add_cpu(cpu.spent());
                    timed.add(bytes, elapsed);
                }
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        drop(burning);
        cx.rec.throughput(&name, &timed, failure, CeilingKind::Pull);
    }

    let params = cx.params().clone();
    let name = format!("range {} of {}", size_label(params.range_len), size_label(params.range_blob));
    let big = setup.blob(params.range_blob)?;
    if params.range_len == 0 || params.range_len > big.len() {
        return Err(BenchError::new(format!("{name}: the range does not fit the blob")));
    }
    let span = big.len() - params.range_len + 1;
    let seed = SplitMix64::from_entropy().next_u64();
    let (target, repo, digest, len) =
        (cx.target.clone(), setup.repo.clone(), big.digest().to_owned(), params.range_len);
    let burning = burner()?;
    let cpu = CpuSnapshot::take(cx.rec.server_pid);
    let result = load(1, params.range_duration, params.range_max_requests, move |seq| {
        let first = SplitMix64::new(seed ^ seq.wrapping_mul(0x2545_F491_4F6C_DD1D)).below(span);
        let (target, repo, digest) = (target.clone(), repo.clone(), digest.clone());
        async move { target.get_blob(&repo, &digest, Some((first, first + len - 1)), len).await }
    })
    .await;
    let spent = cpu.spent();
    drop(burning);
    cx.rec.load(&name, &result, Some(CeilingKind::Pull));
    if result.failures == 0 {
        cx.rec.cpu_per_gib(&name, result.bytes, spent);
    }
    Ok(())
}

/// `concurrent_pushes` monolithic pushes of fresh blobs, all in flight at
/// once: aggregate MB/s from the first request to the last answer.
pub(crate) async fn concurrent_push(cx: &mut Cx<'_>) -> Result<(), BenchError> {
    let mode = cx.noted_monolithic_mode().await?;
    let repo = cx.repo("concurrent");
    let (count, size) = (cx.params().concurrent_pushes, cx.params().concurrent_push_size);
    let name = format!("{count} × {} in parallel", size_label(size));
    let payloads = cx.fresh_many(std::iter::repeat_n(size, count)).await?;

    let cpu = CpuSnapshot::take(cx.rec.server_pid);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for payload in payloads {
        let (target, repo) = (cx.target.clone(), repo.clone());
        tasks.spawn(async move {
            let t0 = Instant::now();
            target.push_monolithic(&repo, &payload, mode).await.map(|()| (payload.len(), t0.elapsed()))
        });
    }
    let mut bytes = 0;
    let mut per_push = Vec::new();
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((len, elapsed))) => {
                bytes += len;
                per_push.extend(stats::megabytes_per_sec(len, elapsed.as_secs_f64()));
            }
            Ok(Err(err)) => failures.push(err.to_string()),
            Err(err) => failures.push(format!("push task failed: {err}")),
        }
    }
    let elapsed: Duration = started.elapsed();
    let spent = cpu.spent();
    if let Some(first) = failures.first() {
        cx.rec.error(format!("{name}: {} of {count} pushes failed, first: {first}", failures.len()));
        cx.rec.metric(Metric::unavailable(&name, Unit::MegabytesPerSec, format!("failed: {first}")));
        return Ok(());
    }
    match stats::megabytes_per_sec(bytes, elapsed.as_secs_f64()) {
        Some(rate) => cx.rec.metric(
            Metric::new(&name, Unit::MegabytesPerSec, rate).with_samples(per_push).with_ceiling(CeilingKind::Push),
        ),
        None => cx.rec.metric(Metric::unavailable(&name, Unit::MegabytesPerSec, "nothing was measured")),
    }
    cx.rec.cpu_per_gib(&name, bytes, spent);
    Ok(())
}
