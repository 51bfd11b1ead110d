//! Each image's last pull time: the manifests answered to a `GET` (by tag or by digest,
//! from the cache or the store; a `HEAD` is no pull), noted in memory and written to the
//! store in one batch every [`FLUSH_INTERVAL`] (the blob links' cadence, `gc::seen`) and when
//! the server stops, so that a busy registry does not write once per pull. A pull time is
//! the time of the flush that writes it: up to one interval late. Each process keeps its
//! own batch; replicas write theirs independently, and a later time always wins.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use berth_oci::{Digest, Reference, RepoName};
use berth_storage::MetadataStore;
use berth_storage::metadata::unix_now;

use super::Registry;
use super::cache::Manifest;
pub use super::gc::seen::FLUSH_INTERVAL;
use crate::error::ApiResult;

/// The manifests pulled since the last flush.
#[derive(Debug, Default)]
pub struct PullTimes {
    pending: Mutex<HashSet<(RepoName, Digest)>>,
}

impl PullTimes {
    /// Notes that `digest` in `repo` was pulled. No I/O.
    pub fn record(&self, repo: &RepoName, digest: &Digest) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert((repo.clone(), digest.clone()));
        }
    }

    /// How many manifests wait for the next flush.
    pub fn pending(&self) -> usize {
        self.pending.lock().map(|p| p.len()).unwrap_or_default()
    }

    /// Writes the pulls noted since the last flush to the store, in one batch, with the time
    /// of now; returns how many manifests it named. What fails to be written is kept for the
    /// next flush.
    pub async fn flush(&self, meta: &dyn MetadataStore) -> berth_storage::Result<usize> {
        let batch: Vec<(RepoName, Digest)> = match self.pending.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => return Ok(0),
        };
        if batch.is_empty() {
            return Ok(0);
        }
        match meta.record_pulls(&batch, unix_now()).await {
            Ok(_) => Ok(batch.len()),
            Err(e) => {
                if let Ok(mut pending) = self.pending.lock() {
                    pending.extend(batch);
                }
                Err(e)
            }
        }
    }
}

/// Flushes `pulls` every `interval` ([`FLUSH_INTERVAL`] but in tests), the first time one
/// interval from now, until the registry holding it is gone.
pub fn spawn_flusher(
    pulls: Weak<PullTimes>,
    meta: Arc<dyn MetadataStore>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(pulls) = pulls.upgrade() else { return };
            if let Err(e) = pulls.flush(meta.as_ref()).await {
                tracing::warn!(error = %e, "could not record the images' last pull times; retrying at the next flush");
            }
        }
    })
}

impl Registry {
    /// A manifest `GET` (by tag or digest): [`Registry::get_manifest`], and its pull noted
    /// for the next flush. A `HEAD` is no pull: it calls `get_manifest` alone.
    pub async fn pull_manifest(&self, repo: &RepoName, reference: &Reference) -> ApiResult<Arc<Manifest>> {
        let manifest = self.get_manifest(repo, reference).await?;
        self.pulls.record(repo, &manifest.digest);
        Ok(manifest)
    }

    /// Writes the pull times noted and not yet flushed: when the server stops, so that the
    /// last seconds' pulls are not lost. Logs a failure (nothing is left to retry it).
    pub async fn flush_pull_times(&self) {
        match self.pulls.flush(self.meta.as_ref()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(images = n, "last pull times written"),
            Err(e) => tracing::warn!(error = %e, "could not record the images' last pull times at shutdown"),
        }
    }

    /// What the server writes as it stops: the last pull times, and the garbage collector's
    /// batched notes (links clients read, holds released), so that a hold released in the
    /// last seconds does not keep the collector off its digest until the hold expires.
    pub async fn flush_at_stop(&self) {
        self.flush_pull_times().await;
        match self.seen.flush(self.meta.as_ref()).await {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not record the blob links read and holds released at shutdown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(repo: &str, seed: &str) -> (RepoName, Digest) {
        (repo.parse().unwrap(), Digest::sha256_of(seed.as_bytes()))
    }

    /// Pulls of the same manifest are one entry until the flush; others are their own.
    #[test]
    fn records_each_manifest_once() {
        let pulls = PullTimes::default();
        let (a, d1) = pair("team/a", "one");
        let (b, d2) = pair("team/b", "two");
        for _ in 0..1000 {
            pulls.record(&a, &d1);
        }
        pulls.record(&a, &d2);
        pulls.record(&b, &d1);
        assert_eq!(pulls.pending(), 3);
    }
}
