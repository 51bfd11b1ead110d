//! tls: pull and push over HTTPS versus plain HTTP on the same registry.
//!
//! Berth serves both on one port (`tls.*`, plain HTTP kept for loopback by default), so the
//! scenario is given the `https://` URL and reaches plain HTTP at the same address with
//! `http://`. A registry that serves plain HTTP elsewhere (or not at all) reports the plain
//! figures as n/a with the error. Trust for a private CA: `berth-bench run --ca-cert FILE`.

use std::time::Instant;

use super::Cx;
use super::concurrency::{CpuMeter, delete_blobs};
use crate::bench::metric::{CeilingKind, Metric, Timed, Unit};
use crate::bench::{BenchError, Target, size_label};

/// Pulls `tls_pull_size` whole `tls_pulls` times and pushes `tls_pushes` fresh blobs of
/// `tls_push_size`, one at a time, over each protocol: MB/s and server CPU-s/GiB.
async fn measure(cx: &mut Cx<'_>, target: &Target, label: &str, repo: &str) -> Result<Vec<String>, BenchError> {
    let mode = cx.monolithic_mode().await?;
    let p = cx.params().extra.clone();
    let pull = cx.fresh(p.tls_pull_size).await?;
    let started = Instant::now();
    target.push_monolithic(repo, &pull, mode).await.map_err(|e| e.context(&format!("{label} setup")))?;
    cx.rec.add_setup(started.elapsed().as_secs_f64());
    let mut pushed = vec![pull.digest().to_owned()];

    let name = format!("{label} pull {}", size_label(p.tls_pull_size));
    let (mut timed, mut failure) = (Timed::default(), None);
    let meter = CpuMeter::start(cx.server_pid);
    for _ in 0..p.tls_pulls {
        let t0 = Instant::now();
        match target.get_blob(repo, pull.digest(), None, pull.len()).await {
            Ok(bytes) => timed.add(bytes, t0.elapsed()),
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    cx.rec.throughput(&name, &timed, failure, CeilingKind::Pull);
    meter.record(cx, &name, timed.bytes);

    let name = format!("{label} push {}", size_label(p.tls_push_size));
    let payloads = cx.fresh_many(std::iter::repeat_n(p.tls_push_size, p.tls_pushes)).await?;
    let (mut timed, mut failure) = (Timed::default(), None);
    let meter = CpuMeter::start(cx.server_pid);
    for payload in &payloads {
        let t0 = Instant::now();
        match target.push_monolithic(repo, payload, mode).await {
            Ok(()) => {
                timed.add(payload.len(), t0.elapsed());
                pushed.push(payload.digest().to_owned());
            }
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    cx.rec.throughput(&name, &timed, failure, CeilingKind::Push);
    meter.record(cx, &name, timed.bytes);
    Ok(pushed)
}

/// HTTPS first, then plain HTTP at the same address.
pub(crate) async fn tls(cx: &mut Cx<'_>) -> Result<(), BenchError> {
    cx.noted_monolithic_mode().await?;
    let base = cx.target.base().clone();
    if base.scheme() != "https" {
        let reason = format!("needs an https:// URL (got {base}); Berth serves HTTPS and plain HTTP on one port");
        cx.rec.error(format!("tls: {reason}"));
        let p = cx.params().extra.clone();
        for label in ["https", "http"] {
            for name in [
                format!("{label} pull {}", size_label(p.tls_pull_size)),
                format!("{label} push {}", size_label(p.tls_push_size)),
            ] {
                cx.rec.metric(Metric::unavailable(name, Unit::MegabytesPerSec, reason.clone()));
            }
        }
        return Ok(());
    }
    let repo = cx.repo("tls");
    let https = cx.target.clone();
    let digests = measure(cx, &https, "https", &repo).await?;
    delete_blobs(cx, &repo, digests).await;

    let mut plain_base = base.clone();
    if plain_base.set_scheme("http").is_err() {
        return Err(BenchError::new(format!("cannot make a plain-HTTP URL of {base}")));
    }
    let plain = cx.target.at(plain_base).await.map_err(|e| e.context("plain HTTP at the same address"))?;
    let digests = measure(cx, &plain, "http", &repo).await?;
    delete_blobs(cx, &repo, digests).await;
    cx.rec.note("tls: one request at a time; HTTPS is TLS 1.3 or 1.2 as negotiated by rustls (client) and the server");
    Ok(())
}
