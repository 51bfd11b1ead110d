//! The metadata store: every record of what the registry holds, apart from blob bytes.
//!
//! One small trait, [`MetadataStore`], with registry verbs, and two implementations run
//! against the same test suite (`storage/tests/storage/metadata.rs`): [`sqlite::SqliteStore`]
//! (an embedded file, one process) and [`postgres::PostgresStore`] (a server shared by
//! replicas). Every method is one transaction.

pub mod postgres;
pub mod sqlite;

use std::collections::BTreeMap;

use async_trait::async_trait;
use berth_oci::{Digest, Reference, RepoName, Tag, UploadId};

use crate::error::Result;

/// A stored manifest, byte-exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    pub content: Vec<u8>,
}

/// A reference from a manifest to content that must be in the same repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredContent {
    pub digest: Digest,
    pub size: u64,
}

/// Everything [`MetadataStore::put_manifest`] records, in one transaction.
#[derive(Debug, Clone)]
pub struct NewManifest {
    pub repo: RepoName,
    pub digest: Digest,
    pub media_type: String,
    /// Reported by the referrers API: `artifactType`, else the config's media type.
    pub artifact_type: Option<String>,
    pub content: Vec<u8>,
    pub subject: Option<Digest>,
    pub annotations: Option<BTreeMap<String, String>>,
    /// Blobs that must be linked to the repository, with their sizes.
    pub blobs: Vec<RequiredContent>,
    /// Manifests that must be in the repository, with their sizes.
    pub manifests: Vec<RequiredContent>,
    /// Tags to point at this manifest.
    pub tags: Vec<Tag>,
}

/// A manifest that names another as its `subject`, as the referrers API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// One page of a sorted listing: the entries after `last`, at most `limit` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub last: Option<String>,
    pub limit: usize,
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
}

/// A change to manifests or tags, made by this process or another sharing the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Something in this repository's manifests or tags changed.
    Repository(RepoName),
    /// Anything may have changed (the feed was interrupted, or fell behind).
    Unknown,
}

/// The registry's records. Implementations must make each method atomic.
#[async_trait]
pub trait MetadataStore: Send + Sync + std::fmt::Debug {
    /// A feed of the changes other processes make, for caches to follow. `None` when no
    /// other process writes to this store (an embedded database).
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }

    /// Checks that the store answers.
    async fn ping(&self) -> Result<()>;

    /// The size of `digest` when it is linked to `repo`.
    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>>;
    /// The size of `digest` when any repository links it.
    async fn any_blob(&self, digest: &Digest) -> Result<Option<u64>>;
    /// Records that blob `digest` (stored, verified) is readable in `repo`; creates the
    /// repository on first use.
    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()>;
    /// Removes the link; `false` when there was none.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;

    /// Stores a manifest, after checking in the same transaction that everything it
    /// references is in the repository; moves its tags. Pushing the same manifest again is
    /// not an error.
    async fn put_manifest(&self, manifest: &NewManifest) -> Result<()>;
    async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>>;
    /// Deletes a manifest and every tag pointing at it; `false` when it was not there.
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;
    /// Removes one tag, leaving the manifest; `false` when the tag was not there.
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool>;
    /// Tags of `repo` in byte order; `None` when the repository does not exist.
    async fn list_tags(&self, repo: &RepoName, page: &Page) -> Result<Option<Vec<String>>>;
    /// Repository names in byte order.
    async fn list_repositories(&self, page: &Page) -> Result<Vec<String>>;
    /// Manifests of `repo` whose subject is `subject`, optionally of one artifact type.
    async fn referrers(&self, repo: &RepoName, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Referrer>>;

    async fn create_upload(&self, upload: &UploadRecord) -> Result<()>;
    async fn get_upload(&self, id: &UploadId) -> Result<Option<UploadRecord>>;
    /// Replaces the session's progress if it still stands at `expected_offset` with
    /// `expected_parts` parts; `false` when another writer got there first.
    async fn advance_upload(&self, upload: &UploadRecord, expected_offset: u64, expected_parts: usize) -> Result<bool>;
    /// Ends a session; `false` when it was not there.
    async fn delete_upload(&self, id: &UploadId) -> Result<bool>;
    /// Sessions with no activity since `updated_before` (unix seconds).
    async fn stale_uploads(&self, updated_before: i64) -> Result<Vec<UploadRecord>>;
}

/// A digest read back from the database; a bad one means the stored data is corrupt.
pub(crate) fn parse_digest(s: String) -> Result<Digest> {
    s.parse().map_err(|e| crate::error::Error::Corrupt(format!("stored digest {s:?}: {e}")))
}

/// A size column (SQL integers are signed) as bytes.
pub(crate) fn size_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or_default()
}

/// Bytes as a size column.
pub(crate) fn db_size(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The rule both stores apply to a manifest's reference: present in the repository, with
/// the size the descriptor declares.
pub(crate) fn check_reference(required: &RequiredContent, size: Option<u64>) -> Result<()> {
    use crate::error::Error;
    match size {
        None => Err(Error::MissingReference(required.digest.clone())),
        Some(actual) if actual != required.size => {
            Err(Error::ReferenceSize { digest: required.digest.clone(), declared: required.size, actual })
        }
        Some(_) => Ok(()),
    }
}

/// Seconds since the Unix epoch, as stored in records.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}
