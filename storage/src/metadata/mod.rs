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

use crate::crypt::{SealedBlob, UploadSealing};
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
    /// For an encrypted upload: its data key, runs, and (sealed) hash state and tail; then
    /// `hash_state` is empty.
    pub sealing: Option<UploadSealing>,
}

/// A key-encryption key as the metadata store knows it: its id and state, never material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// `<name>.<version>`.
    pub id: String,
    pub name: String,
    pub state: KeyState,
    /// [`crate::crypt::Kek::check_value`] of the material first used under this id.
    pub check_value: String,
    pub created_at: i64,
    /// Blob copies whose data key it wraps (filled in by [`MetadataStore::keys`] on request).
    pub blobs: u64,
    /// Upload sessions whose data key it wraps (filled in by [`MetadataStore::keys`] on request).
    pub uploads: u64,
}

/// Where a key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Wraps the data keys of new blobs of its name (one per name).
    Active,
    /// Superseded; still unwraps what it wrapped until rotation re-wraps it all.
    Inactive,
    /// Wraps nothing any more; its material may be destroyed.
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Inactive => "inactive",
            KeyState::Retired => "retired",
        }
    }

    pub fn parse(s: &str) -> Result<KeyState> {
        match s {
            "active" => Ok(KeyState::Active),
            "inactive" => Ok(KeyState::Inactive),
            "retired" => Ok(KeyState::Retired),
            other => Err(crate::Error::Corrupt(format!("key state {other:?}"))),
        }
    }
}

/// What a repository holds of a blob: its size, and the encrypted copy for the repository's
/// key (none when the repository stores plaintext, or the blob predates its encryption).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    pub size: u64,
    pub key_name: Option<String>,
    pub copy: Option<SealedBlob>,
}

/// Why a key cannot be retired.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetireRefused {
    #[error("no key {0} is recorded")]
    Unknown(String),
    #[error("key {0} is active: rotate to a new version first")]
    Active(String),
    #[error("key {id} still wraps the data keys of {blobs} blobs and {uploads} uploads: rotate first")]
    InUse { id: String, blobs: u64, uploads: u64 },
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
    /// repository on first use (with no key: see [`MetadataStore::create_repository`]).
    /// `plaintext`: the content was stored unencrypted at the blob's plain address.
    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64, plaintext: bool) -> Result<()>;
    /// The size of `digest` in `repo`, with the repository's key and its sealed copy.
    async fn repo_blob_entry(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobEntry>>;
    /// Every blob linked to `repo`, with its size.
    async fn repository_blobs(&self, repo: &RepoName) -> Result<Vec<(Digest, u64)>>;

    /// The key name of `repo`: `None` when the repository does not exist, `Some(None)` when
    /// it stores plaintext.
    async fn repository_key(&self, repo: &RepoName) -> Result<Option<Option<String>>>;
    /// Creates `repo` with key `key` (`None`: plaintext) unless it exists; returns the key
    /// it has (fixed at creation).
    async fn create_repository(&self, repo: &RepoName, key: Option<&str>) -> Result<Option<String>>;
    /// Gives a plaintext repository a key (encrypting an existing registry); `false` when it
    /// has one already.
    async fn set_repository_key(&self, repo: &RepoName, key: &str) -> Result<bool>;
    /// Every repository with its key name.
    async fn repository_keys(&self) -> Result<Vec<(RepoName, Option<String>)>>;

    /// The copy of `digest` sealed for key `key_name`.
    async fn blob_copy(&self, digest: &Digest, key_name: &str) -> Result<Option<SealedBlob>>;
    /// Records a sealed copy of a verified blob (and the blob); `false` when a copy for that
    /// key already exists (the caller's object is then redundant).
    async fn add_blob_copy(&self, digest: &Digest, copy: &SealedBlob) -> Result<bool>;
    /// Up to `limit` copies whose data key `kek` wraps.
    async fn copies_wrapped_by(&self, kek: &str, limit: usize) -> Result<Vec<(Digest, SealedBlob)>>;
    /// Replaces a copy's wrapped key if `old_kek` still wraps it; `false` otherwise.
    async fn rewrap_copy(
        &self,
        digest: &Digest,
        key_name: &str,
        old_kek: &str,
        new_kek: &str,
        wrapped: &[u8],
    ) -> Result<bool>;
    /// Blobs whose plaintext object is no longer needed: every repository linking them has a
    /// key and a sealed copy for it.
    async fn redundant_plaintext(&self, limit: usize) -> Result<Vec<Digest>>;
    /// Records that the plaintext object of `digest` is gone, if it is still redundant.
    async fn drop_plaintext(&self, digest: &Digest) -> Result<bool>;

    /// Every key recorded; with `counts`, how many blobs and uploads each wraps (a scan of
    /// the copies: for listings, not request paths; without, both read 0).
    async fn keys(&self, counts: bool) -> Result<Vec<KeyRecord>>;
    /// Records a new key (state as given); `false` when the id exists.
    async fn add_key(&self, key: &KeyRecord) -> Result<bool>;
    /// Makes `id` the active key of its name; the previously active one becomes inactive.
    async fn activate_key(&self, id: &str) -> Result<()>;
    /// Marks `id` retired, if it is inactive and wraps nothing.
    async fn retire_key(&self, id: &str) -> Result<Result<(), RetireRefused>>;
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
