//! Upload sessions: where a chunked upload stands, so that any process can continue it.

use async_trait::async_trait;
use berth_oci::{RepoName, UploadId};

use crate::crypt::UploadSealing;
use crate::error::Result;

/// Who opens an upload session, and how many open sessions a repository and a principal
/// may hold: a client that starts sessions and never finishes them holds rows (and staged
/// parts) until `uploads.max_age` removes them, so their number is bounded when one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadQuota {
    /// The signed-in principal's name; `""` for anonymous clients and authentication off.
    pub principal: String,
    pub per_repository: u64,
    pub per_principal: u64,
}

impl UploadQuota {
    /// Refuses a new session when `open_in_repo` or `open_by_principal` sessions are open.
    pub fn check(&self, open_in_repo: u64, open_by_principal: u64) -> Result<()> {
        if open_in_repo >= self.per_repository {
            return Err(crate::Error::Limit(format!(
                "the repository has {open_in_repo} upload sessions open, the most allowed \
                 (uploads.max_open_per_repository): finish or cancel some, or wait until idle ones expire"
            )));
        }
        if open_by_principal >= self.per_principal {
            return Err(crate::Error::Limit(format!(
                "you have {open_by_principal} upload sessions open, the most allowed \
                 (uploads.max_open_per_principal): finish or cancel some, or wait until idle ones expire"
            )));
        }
        Ok(())
    }
}

/// An upload session: where a chunked upload stands, so that any process can continue it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    pub id: UploadId,
    pub repo: RepoName,
    /// Bytes received so far; the next chunk must start here.
    pub offset: u64,
    /// The running digest state after `offset` bytes ([`berth_oci::DigestHasher::save_state`]).
    pub hash_state: Vec<u8>,
    /// Names of the staged parts, in order.
    pub parts: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last chunk; stale sessions are purged by this.
    pub updated_at: i64,
    /// For an encrypted upload: its data key, runs, and (sealed) hash state and tail; then
    /// `hash_state` is empty.
    pub sealing: Option<UploadSealing>,
}

/// Upload sessions: where a chunked upload stands, so that any process can continue it.
#[async_trait]
pub trait Uploads: Send + Sync {
    /// Opens a session for `quota.principal`, unless `upload.repo` or the principal already
    /// holds as many open sessions as `quota` allows ([`Error::Limit`](crate::Error::Limit)). Concurrent starts
    /// on PostgreSQL may pass the bound by as many as race.
    async fn create_upload(&self, upload: &UploadRecord, quota: &UploadQuota) -> Result<()>;
    async fn get_upload(&self, id: &UploadId) -> Result<Option<UploadRecord>>;
    /// Replaces the session's progress if it still stands at `expected_offset` with
    /// `expected_parts` parts; `false` when another writer got there first.
    ///
    /// Committed without waiting for the disk (SQLite `synchronous=NORMAL`, PostgreSQL
    /// `synchronous_commit = off`, for this transaction only): a crash of the machine may
    /// forget the last chunks' progress, never tear it, and the next synced commit carries it.
    /// Forgetting is harmless by design: the chunks' bytes are not synced either; the session
    /// then vouches for a shorter length, the data file (or part list) is cut back to it, and
    /// the client resumes from the offset it is given, as after a lost request. The commit of
    /// the upload syncs both.
    async fn advance_upload(&self, upload: &UploadRecord, expected_offset: u64, expected_parts: usize) -> Result<bool>;
    /// Ends a session; `false` when it was not there.
    async fn delete_upload(&self, id: &UploadId) -> Result<bool>;
    /// Sessions with no activity since `updated_before` (unix seconds).
    async fn stale_uploads(&self, updated_before: i64) -> Result<Vec<UploadRecord>>;
}
