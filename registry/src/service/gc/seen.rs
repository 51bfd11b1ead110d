//! What clients were told exists: links answered by a HEAD, a GET or a mount, recorded in
//! memory and written to the store in one batch every [`FLUSH_INTERVAL`], so that a busy
//! registry does not write once per pull. The collector removes only links seen before its
//! cutoff; it waits at least two flush intervals between marking and removing, so a read
//! answered before the marks is in the store by then (a read of a marked link clears the
//! mark itself, synchronously: [`crate::service::Registry::blob_entry`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use berth_oci::{Digest, RepoName};
use berth_storage::MetadataStore;
use berth_storage::metadata::unix_now;

/// How often the links seen are written to the store.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// The links seen since the last flush, and the holds released since (written with them:
/// a hold released late only keeps the collector off its digest a few seconds longer, and a
/// push costs one write less).
#[derive(Debug, Default)]
pub struct SeenLinks {
    pending: Mutex<HashSet<(RepoName, Digest)>>,
    released: Mutex<Vec<String>>,
}

impl SeenLinks {
    /// Notes that a client was told `digest` is in `repo`. No I/O.
    pub fn record(&self, repo: &RepoName, digest: &Digest) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert((repo.clone(), digest.clone()));
        }
    }

    /// Notes that hold `id` may go ([`crate::service::Registry::with_hold`]). No I/O.
    pub fn release(&self, id: String) {
        if let Ok(mut released) = self.released.lock() {
            released.push(id);
        }
    }

    /// Writes the released holds, in one batch; kept for the next flush on failure.
    async fn flush_released(&self, meta: &dyn MetadataStore) -> berth_storage::Result<()> {
        let ids: Vec<String> = match self.released.lock() {
            Ok(mut released) => std::mem::take(&mut *released),
            Err(_) => return Ok(()),
        };
        if let Err(e) = meta.release_holds(&ids).await {
            if let Ok(mut released) = self.released.lock() {
                released.extend(ids);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Writes what was recorded to the store, in one batch. What fails to be written is kept
    /// for the next flush.
    pub async fn flush(&self, meta: &dyn MetadataStore) -> berth_storage::Result<usize> {
        self.flush_released(meta).await?;
        let batch: Vec<(RepoName, Digest)> = match self.pending.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => return Ok(0),
        };
        if batch.is_empty() {
            return Ok(0);
        }
        match meta.record_seen(&batch, unix_now()).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                if let Ok(mut pending) = self.pending.lock() {
                    pending.extend(batch);
                }
                Err(e)
            }
        }
    }
}

/// Flushes `seen` every [`FLUSH_INTERVAL`] until the registry holding it is gone.
pub fn spawn_flusher(seen: Weak<SeenLinks>, meta: Arc<dyn MetadataStore>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(seen) = seen.upgrade() else { return };
            if let Err(e) = seen.flush(meta.as_ref()).await {
                tracing::warn!(error = %e, "could not record the blob links clients read; retrying at the next flush");
            }
        }
    })
}
