//! replicas: pushes spread over the replicas of one registry, then every blob pulled back
//! from another replica than the one that took it (round robin). With one URL it measures
//! one replica; `berth-bench run --url A --peer-url B` spreads the clients over A and B.
//! `conformance/bench/replicas.sh` runs it on PostgreSQL + S3 (moto), with one replica and
//! with two.

use std::collections::HashMap;
use std::sync::Mutex;

use reqwest::Url;

use super::Cx;
use super::concurrency::{CpuMeter, delete_blobs, fan_out};
use crate::bench::metric::CeilingKind;
use crate::bench::{BenchError, Target, size_label};

/// Other replicas of the registry at a base URL, as `--peer-url` gave them. Keyed by the
/// base URL so that runs against different registries in one process do not mix.
static PEERS: Mutex<Option<HashMap<String, Vec<Url>>>> = Mutex::new(None);

/// Declares `peers` as other replicas of the registry at `base` (same storage, same
/// metadata): the `replicas` scenario spreads its clients over all of them.
pub fn set_peer_urls(base: &Url, peers: Vec<Url>) {
    let mut map = PEERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    map.get_or_insert_with(HashMap::new).insert(base.to_string(), peers);
}

fn peers_of(base: &Url) -> Vec<Url> {
    let map = PEERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    map.as_ref().and_then(|m| m.get(&base.to_string()).cloned()).unwrap_or_default()
}

/// `replica_blobs` fresh blobs pushed by `replica_clients` clients at once, blob `i` to
/// replica `i mod n`; then pulled, blob `i` from replica `(i + 1) mod n`. MB/s, p50/p99 per
/// request, and the CPU-s/GiB of the replica given with `--server-pid` (with two replicas,
/// that one's share only).
pub(crate) async fn replicas(cx: &mut Cx<'_>) -> Result<(), BenchError> {
    let mode = cx.noted_monolithic_mode().await?;
    let p = cx.params().extra.clone();
    let mut targets = vec![cx.target.clone()];
    for peer in peers_of(cx.target.base()) {
        targets.push(cx.target.at(peer.clone()).await.map_err(|e| e.context(&format!("replica {peer}")))?);
    }
    let n = targets.len();
    let repo = cx.repo("replicas");
    let what = format!(
        "{} × {}, {} clients, {n} replica{}",
        p.replica_blobs,
        size_label(p.replica_blob_size),
        p.replica_clients,
        if n == 1 { "" } else { "s" }
    );
    let payloads = cx.fresh_many(std::iter::repeat_n(p.replica_blob_size, p.replica_blobs)).await?;

    // Each client takes every `clients`-th blob, so `clients` requests are in flight.
    let clients = p.replica_clients.clamp(1, payloads.len().max(1));
    let by_client = |client: usize| -> Vec<usize> { (client..payloads.len()).step_by(clients).collect() };
    let meter = CpuMeter::start(cx.server_pid);
    let push = fan_out(clients, |client| {
        let work: Vec<_> =
            by_client(client).into_iter().map(|i| (targets[i % n].clone(), payloads[i].clone())).collect();
        let repo = repo.clone();
        async move {
            let mut bytes = 0;
            for (target, payload) in work {
                target.push_monolithic(&repo, &payload, mode).await?;
                bytes += payload.len();
            }
            Ok(bytes)
        }
    })
    .await;
    let name = format!("push {what}");
    cx.rec.load(&name, &push, Some(CeilingKind::Push));
    meter.record(cx, &name, push.bytes);

    let meter = CpuMeter::start(cx.server_pid);
    let pull = fan_out(clients, |client| {
        let work: Vec<(Target, String, u64)> = by_client(client)
            .into_iter()
            .map(|i| (targets[(i + 1) % n].clone(), payloads[i].digest().to_owned(), payloads[i].len()))
            .collect();
        let repo = repo.clone();
        async move {
            let mut bytes = 0;
            for (target, digest, len) in work {
                bytes += target.get_blob(&repo, &digest, None, len).await?;
            }
            Ok(bytes)
        }
    })
    .await;
    let name = format!("pull {what}");
    cx.rec.load(&name, &pull, Some(CeilingKind::Pull));
    meter.record(cx, &name, pull.bytes);
    cx.rec.note(format!(
        "replicas: each client pushes (then pulls) its blobs one after another; a blob is pulled from \
         another replica than took it when there are several; latencies are per client ({} blobs each)",
        p.replica_blobs.div_ceil(clients)
    ));
    delete_blobs(cx, &repo, payloads.iter().map(|b| b.digest().to_owned()).collect()).await;
    Ok(())
}
