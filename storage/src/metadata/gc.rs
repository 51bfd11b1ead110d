//! The garbage collector's records ([`GcStore`]): when links were last seen and which a run
//! marked, holds on digests a writer is about to dedupe against, doomed digests whose
//! objects are being deleted, the one-collector lease, and the runs.
//!
//! The three protections (ARCHITECTURE.md, invariant 22) meet here:
//! - a link is removed only while no manifest of its repository references the digest,
//!   re-checked after the link is locked (SQLite: the single writer; PostgreSQL: `FOR UPDATE`
//!   then a later statement, whose snapshot sees a manifest that committed meanwhile);
//! - only links created and seen before the cutoff are marked, and only those still marked
//!   and still unseen are removed; a read of a marked link clears the mark first;
//! - objects are deleted only for doomed digests, doomed only with no link and no live hold;
//!   `link_blob` refuses a doomed digest, and [`GcStore::hold_blob`] tells a writer to wait.

use async_trait::async_trait;
use berth_oci::{Digest, RepoName};
use serde::{Deserialize, Serialize};

use super::Event;
use crate::error::Result;

/// A hold older than this is dead (its writer died without releasing it) and ignored.
pub const HOLD_TTL_SECS: i64 = 6 * 3600;

/// Unix milliseconds.
pub type Millis = i64;

/// What the collector is deleting for one doomed digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doomed {
    pub digest: Digest,
    /// The blob goes whole: its plaintext object (if any), every copy, its rows. Otherwise
    /// only `copies` go (copies for key names no repository linking the blob uses).
    pub whole: bool,
    /// The blob's size from its row (0 when the metadata has no row: an unknown object).
    pub size: u64,
    /// The row says a plaintext object exists.
    pub plain: bool,
    /// The copies to delete: (key name, object id).
    pub copies: Vec<(String, String)>,
}

/// Who holds the collector's lease, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcLease {
    pub owner: String,
    pub acquired_ms: Millis,
    pub expires_ms: Millis,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GcState {
    Running,
    Completed,
    Failed,
    /// Its process died (or lost the lease) before it ended; the next run finished its work.
    Interrupted,
}

impl GcState {
    pub fn as_str(self) -> &'static str {
        match self {
            GcState::Running => "running",
            GcState::Completed => "completed",
            GcState::Failed => "failed",
            GcState::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Result<GcState> {
        match s {
            "running" => Ok(GcState::Running),
            "completed" => Ok(GcState::Completed),
            "failed" => Ok(GcState::Failed),
            "interrupted" => Ok(GcState::Interrupted),
            other => Err(crate::Error::Corrupt(format!("gc run state {other:?}"))),
        }
    }
}

/// What a run reclaimed (or, dry, would reclaim).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcCounts {
    /// Blob links no manifest referenced, removed.
    pub links: u64,
    /// Blobs no repository linked, deleted with every object they had.
    pub blobs: u64,
    /// Sealed copies for key names no repository linking the blob uses, deleted.
    pub copies: u64,
    /// Objects the metadata did not know (crash leftovers), deleted.
    pub unknown_objects: u64,
    /// Stale upload sessions and orphaned upload data, purged.
    pub uploads: u64,
    /// Bytes of the objects deleted.
    pub bytes: u64,
}

/// One run of the collector, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRun {
    pub id: String,
    pub started_ms: Millis,
    pub finished_ms: Option<Millis>,
    pub state: GcState,
    pub dry_run: bool,
    /// `--repository`: the run looked at this repository's links only.
    pub repository: Option<String>,
    /// The phase it is in, or ended in: `dooms`, `links`, `links: waiting`, `blobs`,
    /// `copies`, `unknown objects`, `uploads`, `done`.
    pub phase: String,
    #[serde(flatten)]
    pub counts: GcCounts,
    pub duration_ms: u64,
    /// Why it failed.
    pub error: Option<String>,
}

/// What a dry run counts from the metadata alone (phases 0 to c).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcPreview {
    pub dooms: u64,
    pub links: u64,
    pub blobs: u64,
    pub copies: u64,
    pub bytes: u64,
}

/// The collector's side of the metadata store.
#[async_trait]
pub trait GcStore: Send + Sync {
    // What requests write.

    /// Records that clients were told these links exist (a batch of HEADs, GETs and mounts
    /// since the last call): their `seen_at` becomes `now` (unix seconds). Links that are
    /// gone are skipped.
    async fn record_seen(&self, links: &[(RepoName, Digest)], now: i64) -> Result<()>;
    /// Clears the collector's mark on a link a client is about to be told about (and records
    /// it seen at `now`); `false` when the link is gone (the collector removed it first).
    async fn unmark_link(&self, repo: &RepoName, digest: &Digest, now: i64) -> Result<bool>;
    /// Holds `digest` for a writer about to dedupe against its stored bytes, under `id`:
    /// `false` (nothing held) while the digest is doomed; the writer waits and asks again.
    async fn hold_blob(&self, id: &str, digest: &Digest, now: i64) -> Result<bool>;
    /// Releases holds (after their writers' links are written, or they gave up); in
    /// batches: a hold released late only keeps the collector off a digest a little longer.
    async fn release_holds(&self, ids: &[String]) -> Result<()>;
    /// Whether `digest` is doomed (a writer waiting for the collector polls this).
    async fn is_doomed(&self, digest: &Digest) -> Result<bool>;

    // The one collector at a time.

    /// Takes the lease for `owner` until `now + ttl` if it is free or expired (or `owner`'s);
    /// else the holder. Taking it marks runs left `running` as `interrupted`.
    async fn acquire_gc_lease(&self, owner: &str, now: Millis, ttl_ms: i64) -> Result<Result<(), GcLease>>;
    /// Extends `owner`'s lease; `false` when it is no longer `owner`'s.
    async fn renew_gc_lease(&self, owner: &str, now: Millis, ttl_ms: i64) -> Result<bool>;
    async fn release_gc_lease(&self, owner: &str) -> Result<()>;
    /// The lease, if anyone holds one (possibly expired).
    async fn gc_lease(&self) -> Result<Option<GcLease>>;

    // Runs.

    /// Inserts or replaces a run's record (its progress).
    async fn put_gc_run(&self, run: &GcRun) -> Result<()>;
    /// Records a run's end and writes `event` (`gc.completed`) in the same transaction.
    async fn finish_gc_run(&self, run: &GcRun, event: &Event) -> Result<()>;
    /// The most recent runs, newest first.
    async fn gc_runs(&self, limit: usize) -> Result<Vec<GcRun>>;

    // Phase (a): unreferenced links.

    /// Marks with `run` up to `limit` links (of `repo`, or all) that no manifest of their
    /// repository references, created and seen before `cutoff` (unix seconds). Returns how
    /// many it marked; fewer than `limit` means none is left.
    async fn mark_links(&self, run: &str, cutoff: i64, repo: Option<&RepoName>, limit: usize) -> Result<u64>;
    /// Takes up to `limit` links marked by `run`, locks them, and removes those still
    /// marked, seen before `cutoff` and referenced by no manifest (checked after the lock);
    /// the mark of the others is cleared. Returns the removed links' digests (with sizes) and
    /// how many links it took; `taken < limit` means none is left.
    async fn remove_marked_links(&self, run: &str, cutoff: i64, limit: usize) -> Result<(Vec<(Digest, u64)>, u64)>;

    // Phases (0), (b), (c), (d): doomed digests.

    /// Up to `limit` digests after `after` (in byte order) that have a blob row and no link,
    /// and are not doomed.
    async fn unlinked_blobs(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<Digest>>;
    /// Dooms those of `digests` that have no link and no live hold (held since `now -
    /// HOLD_TTL_SECS`), for `run`; returns what is to be deleted for each doomed one.
    async fn doom_blobs(&self, run: &str, digests: &[Digest], now: i64) -> Result<Vec<Doomed>>;
    /// Dooms up to `limit` linked digests (of `digests`, or any) that have copies for key
    /// names no repository linking them uses, and no live hold; returns those copies.
    async fn doom_unused_copies(
        &self,
        run: &str,
        digests: Option<&[Digest]>,
        now: i64,
        limit: usize,
    ) -> Result<Vec<Doomed>>;
    /// Up to `limit` doomed digests (left by any run) with what is to be deleted for each.
    async fn doomed(&self, limit: usize) -> Result<Vec<Doomed>>;
    /// After their objects are deleted: removes the doomed digests' rows (the blob, its
    /// copies and the doom for a whole blob; the listed copies and the doom otherwise), in
    /// one transaction. Returns how many dooms it removed.
    async fn forget_doomed(&self, doomed: &[Doomed]) -> Result<u64>;
    /// Of `digests`, those that have a blob row; of `copies` (a digest and a copy's object
    /// id), the object ids a copy row names. For phase (d), which deletes only objects the
    /// metadata does not know.
    async fn known_objects(
        &self,
        digests: &[Digest],
        copies: &[(Digest, String)],
    ) -> Result<(Vec<Digest>, Vec<String>)>;

    /// What phases 0 to c would take now (a dry run): dooms left, links, blobs and copies.
    async fn gc_preview(&self, cutoff: i64, repo: Option<&RepoName>) -> Result<GcPreview>;
}

/// The condition that makes `rb` (a `repository_blobs` row) a candidate of phase (a), with
/// `$cutoff` and `$repo` placeholders the stores replace with their own.
pub(crate) fn candidate_condition(cutoff: &str, repo: Option<&str>) -> String {
    let repo = repo
        .map(|p| format!(" AND rb.repository_id = (SELECT id FROM repositories WHERE name = {p})"))
        .unwrap_or_default();
    format!(
        "rb.created_at < {cutoff} AND rb.seen_at < {cutoff}{repo} AND NOT EXISTS (SELECT 1 FROM manifest_references mr \
         WHERE mr.repository_id = rb.repository_id AND mr.child_digest = rb.digest)"
    )
}

/// A doom's `keys` column: the key names of the copies it deletes.
pub(crate) fn keys_column(keys: &[String]) -> String {
    serde_json::to_string(keys).unwrap_or_else(|_| "[]".into())
}

/// A doom's `keys` column read back.
pub(crate) fn keys_from_column(s: &str) -> Result<Vec<String>> {
    serde_json::from_str(s).map_err(|e| crate::Error::Corrupt(format!("gc doom keys {s:?}: {e}")))
}
