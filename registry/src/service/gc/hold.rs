//! Holds: a writer that may dedupe against stored bytes (an upload's commit, a monolithic
//! push, a mount, sharing a sealed copy) holds the digest from before it looks at what is
//! stored until its link is written. The collector dooms no held digest; a writer that finds
//! the digest doomed waits until the collector is done with it, then stores the content
//! afresh (its staged data is untouched meanwhile).

use std::future::Future;
use std::time::{Duration, Instant};

use berth_oci::Digest;
use berth_storage::metadata::unix_now;

use crate::error::{ApiError, ApiResult};
use crate::service::Registry;

/// How long a writer waits for the collector to finish a doomed digest.
const DOOM_WAIT: Duration = Duration::from_secs(60);
/// How often it looks.
const DOOM_POLL: Duration = Duration::from_millis(200);

impl Registry {
    /// Runs `write` (which links `digest`) while holding `digest`, waiting first for the
    /// collector if it is deleting the digest's objects. The hold is released whatever
    /// `write` returns.
    pub(crate) async fn with_hold<T>(
        &self,
        digest: &Digest,
        write: impl Future<Output = ApiResult<T>>,
    ) -> ApiResult<T> {
        let id = uuid::Uuid::new_v4().to_string();
        let deadline = Instant::now() + DOOM_WAIT;
        while !self.meta.hold_blob(&id, digest, unix_now()).await? {
            if Instant::now() >= deadline {
                return Err(ApiError::Unavailable(format!(
                    "blob {digest} is still being garbage-collected after {} s; push it again later",
                    DOOM_WAIT.as_secs()
                )));
            }
            tracing::debug!(blob.digest = %digest, "waiting for the garbage collector to finish this blob");
            tokio::time::sleep(DOOM_POLL).await;
        }
        // Released with the next batch of reads (`gc::seen`) when `write` ends or is dropped
        // (a client gone mid-request); were the process to die first, the hold dies on its
        // own (holds older than six hours are ignored).
        let _release = Release { seen: &self.seen, id: Some(id) };
        write.await
    }
}

/// Releases a hold when dropped.
struct Release<'a> {
    seen: &'a super::seen::SeenLinks,
    id: Option<String>,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.seen.release(id);
        }
    }
}
