//! concurrency and memory: many clients at once, and what they cost the server.
//!
//! Also what the named-only scenarios ([`Scenario::EXTRA`]) share: their sizes
//! ([`ExtraParams`]), running one request per client at once ([`fan_out`]), server CPU
//! seconds per GiB moved ([`CpuMeter`]), and deleting what a round pushed ([`delete_blobs`]).

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde::Serialize;
use tokio::task::JoinSet;

use super::Cx;
use crate::bench::metric::{CeilingKind, LoadResult, Metric, Unit};
use crate::bench::{BenchError, GIB, KIB, MIB, Payload, Scenario, server, size_label};

/// Sizes and counts of the named-only scenarios. Every blob a round pushes is deleted by
/// the same round (`DELETE /v2/<name>/blobs/<digest>`), so what stays on disk is bounded by
/// one step's pushes until the registry collects (Berth: its collector; `compare`: the data
/// directory is removed when the scenario ends).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExtraParams {
    /// concurrency: the client counts, one step each.
    pub clients: Vec<usize>,
    /// concurrency: each client pushes one fresh blob of this size, all at once.
    pub push_size: u64,
    /// concurrency and memory: the blob every client GETs whole, all at once.
    pub pull_size: u64,
    /// memory: clients pulling at once, then pushing at once.
    pub memory_clients: usize,
    /// memory: the size of each concurrent push (64 × 1 GiB would need 64 GiB of disk;
    /// an upload's memory does not depend on its size).
    pub memory_push_size: u64,
    /// storm: pushers running back to back during the storm window, at most
    /// `storm_pushes_each` pushes of `storm_push_size` each.
    pub storm_pushers: usize,
    pub storm_pushes_each: usize,
    pub storm_push_size: u64,
    /// storm: connections doing manifest GETs by tag, back to back.
    pub storm_connections: usize,
    /// storm: how long the quiet GETs run, and how long pushers keep starting pushes.
    #[serde(serialize_with = "crate::bench::secs")]
    pub storm_quiet: Duration,
    #[serde(serialize_with = "crate::bench::secs")]
    pub storm_window: Duration,
    pub storm_max_requests: u64,
    /// tls: the blob pulled whole `tls_pulls` times per protocol, and `tls_pushes` fresh
    /// blobs pushed per protocol.
    pub tls_pull_size: u64,
    pub tls_pulls: usize,
    pub tls_push_size: u64,
    pub tls_pushes: usize,
    /// replicas: blobs pushed by `replica_clients` clients at once, spread over the replicas,
    /// then pulled back each from another replica. Small: moto (the S3 test server) keeps
    /// every object in memory and takes 50–150 MB/s.
    pub replica_clients: usize,
    pub replica_blobs: usize,
    pub replica_blob_size: u64,
}

impl ExtraParams {
    /// The published sizes: 16 and 64 clients, 64 MiB pushes, 1 GiB pulls; 64 × 256 MiB
    /// concurrent pushes; 8 pushers of 1 GiB for 20 s; 32 MiB blobs on S3.
    pub fn full() -> Self {
        Self {
            clients: vec![16, 64],
            push_size: 64 * MIB,
            pull_size: GIB,
            memory_clients: 64,
            memory_push_size: 256 * MIB,
            storm_pushers: 8,
            storm_pushes_each: 2,
            storm_push_size: GIB,
            storm_connections: 4,
            storm_quiet: Duration::from_secs(10),
            storm_window: Duration::from_secs(20),
            storm_max_requests: 5_000_000,
            tls_pull_size: GIB,
            tls_pulls: 3,
            tls_push_size: 256 * MIB,
            tls_pushes: 4,
            replica_clients: 16,
            replica_blobs: 16,
            replica_blob_size: 32 * MIB,
        }
    }

    /// Seconds in all: the same client counts with tiny blobs.
    pub fn quick() -> Self {
        Self {
            clients: vec![16, 64],
            push_size: 256 * KIB,
            pull_size: MIB,
            memory_clients: 64,
            memory_push_size: 256 * KIB,
            storm_pushers: 4,
            storm_pushes_each: 5,
            storm_push_size: MIB,
            storm_connections: 2,
            storm_quiet: Duration::from_millis(300),
            storm_window: Duration::from_millis(300),
            storm_max_requests: 100_000,
            tls_pull_size: MIB,
            tls_pulls: 2,
            tls_push_size: 256 * KIB,
            tls_pushes: 2,
            replica_clients: 4,
            replica_blobs: 8,
            replica_blob_size: 256 * KIB,
        }
    }

    /// The blob sizes `scenario` pushes (for the payload buffer).
    pub fn blob_sizes(&self, scenario: Scenario) -> Vec<u64> {
        match scenario {
            Scenario::Concurrency => vec![self.push_size, self.pull_size],
            Scenario::Memory => vec![self.pull_size, self.memory_push_size],
            Scenario::Storm => vec![self.storm_push_size],
            Scenario::Tls => vec![self.tls_pull_size, self.tls_push_size],
            Scenario::Replicas => vec![self.replica_blob_size],
            _ => vec![],
        }
    }
}

/// Starts `n` operations at once (one per client) and collects their latencies and bytes;
/// `elapsed` is from the first start to the last answer.
pub(crate) async fn fan_out<F, Fut>(n: usize, op: F) -> LoadResult
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<u64, BenchError>> + Send + 'static,
{
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let fut = op(i);
        tasks.spawn(async move {
            let t0 = Instant::now();
            fut.await.map(|bytes| (bytes, t0.elapsed()))
        });
    }
    let mut result = LoadResult::default();
    while let Some(joined) = tasks.join_next().await {
        let failure = match joined {
            Ok(Ok((bytes, latency))) => {
                result.latencies.push(latency);
                result.bytes += bytes;
                continue;
            }
            Ok(Err(err)) => err.to_string(),
            Err(err) => format!("task failed: {err}"),
        };
        result.failures += 1;
        result.first_failure.get_or_insert(failure);
    }
    result.elapsed = started.elapsed();
    result
}

/// The server's CPU time (user + system) across a timed section, per GiB moved.
pub(crate) struct CpuMeter {
    pid: Option<u32>,
    before: Option<f64>,
}

impl CpuMeter {
    pub(crate) fn start(pid: Option<u32>) -> Self {
        Self { pid, before: pid.and_then(server::cpu_secs) }
    }

    /// Records `<name> server CPU-s/GiB` (in seconds: lower is better) for `bytes` moved
    /// since [`CpuMeter::start`], or why it cannot.
    pub(crate) fn record(&self, cx: &mut Cx<'_>, name: &str, bytes: u64) {
        let metric = format!("{name} server CPU-s/GiB");
        let after = self.pid.and_then(server::cpu_secs);
        let value = match (self.pid, self.before, after) {
            (None, _, _) => Err("server PID unknown (run: give --server-pid)".to_owned()),
            (Some(pid), before, after) if before.is_none() || after.is_none() => {
                Err(format!("cannot read /proc/{pid}/stat"))
            }
            (_, Some(before), Some(after)) if bytes > 0 => Ok((after - before) / (bytes as f64 / GIB as f64)),
            _ => Err("nothing was moved".to_owned()),
        };
        cx.rec.metric(match value {
            Ok(v) => Metric::new(metric, Unit::Seconds, v),
            Err(reason) => Metric::unavailable(metric, Unit::Seconds, reason),
        });
    }
}

/// Deletes the blobs a round pushed (16 at a time). A registry that refuses deletes is
/// noted, not failed: the figures stand, and the note says what was left behind.
pub(crate) async fn delete_blobs(cx: &mut Cx<'_>, repo: &str, digests: Vec<String>) {
    let count = digests.len();
    let target = cx.target.clone();
    let failures: Vec<String> = futures::stream::iter(digests)
        .map(|digest| {
            let target = target.clone();
            async move { target.delete_blob(repo, &digest).await.err().map(|e| e.to_string()) }
        })
        .buffer_unordered(16)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    if let Some(first) = failures.first() {
        cx.rec.note(format!("{} of {count} pushed blobs in {repo} were not deleted, first: {first}", failures.len()));
    }
}

/// Pushes one fresh blob of `len` bytes as setup (untimed), for the clients to pull.
pub(crate) async fn setup_blob(cx: &mut Cx<'_>, repo: &str, len: u64) -> Result<Payload, BenchError> {
    let started = Instant::now();
    let mode = cx.monolithic_mode().await?;
    let blob = cx.fresh(len).await?;
    cx.target.push_monolithic(repo, &blob, mode).await.map_err(|e| e.context("setup"))?;
    cx.rec.add_setup(started.elapsed().as_secs_f64());
    Ok(blob)
}

/// `count` clients each push one fresh blob of `len` bytes, all at once: MB/s, p50/p99,
/// server CPU-s/GiB. Returns the digests pushed.
async fn push_step(cx: &mut Cx<'_>, repo: &str, name: &str, count: usize, len: u64) -> Result<Vec<String>, BenchError> {
    let mode = cx.monolithic_mode().await?;
    let payloads = cx.fresh_many(std::iter::repeat_n(len, count)).await?;
    let digests = payloads.iter().map(|p| p.digest().to_owned()).collect();
    let meter = CpuMeter::start(cx.server_pid);
    let result = fan_out(count, |i| {
        let (target, repo, payload) = (cx.target.clone(), repo.to_owned(), payloads[i].clone());
        async move { target.push_monolithic(&repo, &payload, mode).await.map(|()| payload.len()) }
    })
    .await;
    cx.rec.load(name, &result, Some(CeilingKind::Push));
    meter.record(cx, name, result.bytes);
    Ok(digests)
}

/// `count` clients each GET `blob` whole, all at once: MB/s, p50/p99, server CPU-s/GiB.
async fn pull_step(cx: &mut Cx<'_>, repo: &str, name: &str, count: usize, blob: &Payload) {
    let meter = CpuMeter::start(cx.server_pid);
    let result = fan_out(count, |_| {
        let (target, repo, digest, len) = (cx.target.clone(), repo.to_owned(), blob.digest().to_owned(), blob.len());
        async move { target.get_blob(&repo, &digest, None, len).await }
    })
    .await;
    cx.rec.load(name, &result, Some(CeilingKind::Pull));
    meter.record(cx, name, result.bytes);
}

/// For each client count: that many fresh pushes at once, then that many GETs of one
/// blob at once.
pub(crate) async fn concurrency(cx: &mut Cx<'_>) -> Result<(), BenchError> {
    cx.noted_monolithic_mode().await?;
    let params = cx.params().extra.clone();
    let repo = cx.repo("concurrency");
    let pull = setup_blob(cx, &repo, params.pull_size).await?;
    for &clients in &params.clients {
        let name = format!("push {clients} clients × {}", size_label(params.push_size));
        let pushed = push_step(cx, &repo, &name, clients, params.push_size).await;
        if let Ok(digests) = pushed {
            delete_blobs(cx, &repo, digests).await;
        }
        let name = format!("pull {clients} clients × {}", size_label(params.pull_size));
        pull_step(cx, &repo, &name, clients, &pull).await;
    }
    delete_blobs(cx, &repo, vec![pull.digest().to_owned()]).await;
    cx.rec.note("concurrency: each client one request; req/s = requests completed per second of the step");
    Ok(())
}

/// Resets the server's peak RSS before a step; `false` when the PID is not known. A reset
/// that is not allowed is noted (the peak then covers the server's life so far).
fn reset_peak(cx: &mut Cx<'_>) -> bool {
    let Some(pid) = cx.server_pid else {
        return false;
    };
    match server::reset_peak_rss(pid) {
        Ok(()) => true,
        Err(err) => {
            cx.rec.note(format!("{err}: the peak RSS covers the server's life so far"));
            true
        }
    }
}

/// Records the server's peak RSS since [`reset_peak`] as `name` (MiB).
fn record_peak(cx: &mut Cx<'_>, name: &str, known: bool) {
    let peak = cx.server_pid.filter(|_| known).and_then(server::peak_rss_kib);
    cx.rec.metric(match peak {
        Some(kib) => Metric::new(name, Unit::Mebibytes, kib as f64 / 1024.0),
        None => Metric::unavailable(name, Unit::Mebibytes, "server PID unknown (run: give --server-pid)"),
    });
}

/// Peak RSS while `memory_clients` clients GET one blob at once, then while as many push
/// fresh blobs at once.
pub(crate) async fn memory(cx: &mut Cx<'_>) -> Result<(), BenchError> {
    cx.noted_monolithic_mode().await?;
    let params = cx.params().extra.clone();
    let clients = params.memory_clients;
    let repo = cx.repo("memory");
    let pull = setup_blob(cx, &repo, params.pull_size).await?;

    let known = reset_peak(cx);
    let name = format!("pull {clients} clients × {}", size_label(params.pull_size));
    pull_step(cx, &repo, &name, clients, &pull).await;
    record_peak(cx, &format!("peak RSS, {name}"), known);
    delete_blobs(cx, &repo, vec![pull.digest().to_owned()]).await;

    let known = reset_peak(cx);
    let name = format!("push {clients} clients × {}", size_label(params.memory_push_size));
    let pushed = push_step(cx, &repo, &name, clients, params.memory_push_size).await?;
    record_peak(cx, &format!("peak RSS, {name}"), known);
    delete_blobs(cx, &repo, pushed).await;
    cx.rec.note("memory: peak RSS is VmHWM, reset (/proc/PID/clear_refs) before each step");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_extra_scenario_sizes_its_payload_buffer() {
        for params in [ExtraParams::full(), ExtraParams::quick()] {
            for scenario in Scenario::EXTRA {
                let sizes = params.blob_sizes(scenario);
                assert!(!sizes.is_empty() && sizes.iter().all(|&s| s > 0), "{scenario}: {sizes:?}");
            }
        }
        let full = crate::bench::Params::full();
        assert_eq!(full.largest_blob(&[Scenario::Memory]), GIB);
        assert_eq!(full.largest_blob(&[Scenario::Replicas]), 32 * MIB);
        assert_eq!(crate::bench::Params::quick().largest_blob(&Scenario::EXTRA), MIB);
    }

    #[tokio::test]
    async fn fan_out_runs_every_client_and_counts_failures() {
        let result =
            fan_out(
                6,
                |i| async move { if i % 3 == 0 { Err(BenchError::new(format!("client {i}"))) } else { Ok(10) } },
            )
            .await;
        assert_eq!(result.latencies.len(), 4);
        assert_eq!(result.bytes, 40);
        assert_eq!(result.failures, 2);
        assert!(result.first_failure.is_some_and(|f| f.starts_with("client ")));
    }
}
