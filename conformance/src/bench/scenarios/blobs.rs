//! blob-push, blob-pull and concurrent-push: bytes in and out of the blob store.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::Cx;
use crate::bench::metric::{CeilingKind, Metric, Timed, Unit};
use crate::bench::payload::SplitMix64;
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

/// Each size pushed `iterations` times monolithically, then as many times in
/// `chunk_size` PATCHes, every push a fresh blob.
pub(crate) async fn push(cx: &mut Cx<'_>) -> Result<(), BenchError> {
    let mode = cx.noted_monolithic_mode().await?;
    let repo = cx.repo("push");
    let chunk = cx.params().chunk_size;
    cx.rec.note(format!("chunked upload: POST, PATCH {} chunks with Content-Range, PUT ?digest=", size_label(chunk)));
    for run in cx.params().push.clone() {
        for chunked in [false, true] {
            let name = format!("{} {}", if chunked { "chunked" } else { "monolithic" }, size_label(run.bytes));
            let mut timed = Timed::default();
            let mut failure = None;
            for _ in 0..run.iterations {
                let payload = cx.fresh(run.bytes).await?;
                let started = Instant::now();
                let pushed = if chunked {
                    cx.target.push_chunked(&repo, &payload, chunk).await
                } else {
                    cx.target.push_monolithic(&repo, &payload, mode).await
                };
                match pushed {
                    Ok(()) => timed.add(payload.len(), started.elapsed()),
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
/// on one connection.
pub(crate) async fn pull(cx: &mut Cx<'_>) -> Result<(), BenchError> {
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

    for run in cx.params().pull.clone() {
        let name = format!("GET {}", size_label(run.bytes));
        let blob = setup.blob(run.bytes)?;
        let mut timed = Timed::default();
        let mut failure = None;
        for _ in 0..run.iterations {
            let started = Instant::now();
            match cx.target.get_blob(&setup.repo, blob.digest(), None, blob.len()).await {
                Ok(bytes) => timed.add(bytes, started.elapsed()),
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
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
    let result = load(1, params.range_duration, params.range_max_requests, move |seq| {
        let first = SplitMix64::new(seed ^ seq.wrapping_mul(0x2545_F491_4F6C_DD1D)).below(span);
        let (target, repo, digest) = (target.clone(), repo.clone(), digest.clone());
        async move { target.get_blob(&repo, &digest, Some((first, first + len - 1)), len).await }
    })
    .await;
    cx.rec.load(&name, &result, Some(CeilingKind::Pull));
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
    Ok(())
}
