//! Blobs: their links to repositories, and their sealed copies.

use async_trait::async_trait;
use berth_oci::{Digest, RepoName};

use super::Origin;
use crate::crypt::SealedBlob;
use crate::error::Result;

/// What a repository holds of a blob: its size, and the encrypted copy for the repository's
/// key (none when the repository stores plaintext, or the blob predates its encryption).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    pub size: u64,
    pub key_name: Option<String>,
    pub copy: Option<SealedBlob>,
    /// A garbage-collector run marked the link for removal: before a client is told the blob
    /// is there, the mark must be cleared ([`super::GcStore::unmark_link`]).
    pub marked: bool,
}

/// Blobs: their links to repositories, and their sealed copies.
#[async_trait]
pub trait Blobs: Send + Sync {
    /// The size of `digest` when it is linked to `repo`.
    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>>;
    /// The size of `digest` when any repository links it.
    async fn any_blob(&self, digest: &Digest) -> Result<Option<u64>>;
    /// Records that blob `digest` (stored, verified) is readable in `repo`; creates the
    /// repository on first use (with no key: see [`Repositories::create_repository`](super::Repositories::create_repository)).
    /// `plaintext`: the content was stored unencrypted at the blob's plain address.
    /// Events: `blob.push`, or `blob.mount` when `from` is the repository it was mounted
    /// from (after `repository.create` when the repository is new).
    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        plaintext: bool,
        from: Option<&RepoName>,
        origin: &Origin,
    ) -> Result<()>;
    /// The size of `digest` in `repo`, with the repository's key and its sealed copy.
    async fn repo_blob_entry(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobEntry>>;
    /// Every blob linked to `repo`, with its size.
    async fn repository_blobs(&self, repo: &RepoName) -> Result<Vec<(Digest, u64)>>;
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
    /// Removes the link; `false` when there was none.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;
}
