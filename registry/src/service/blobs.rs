//! Reading, mounting and deleting blobs of a repository.

use std::ops::Range;

use berth_oci::{Digest, RepoName};
use berth_storage::ByteStream;

use super::Registry;
use crate::error::{ApiError, ApiResult};

impl Registry {
    /// The size of `digest` in `repo`.
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> ApiResult<u64> {
        self.meta.repo_blob(repo, digest).await?.ok_or(ApiError::BlobUnknown)
    }

    /// The blob's bytes, or the non-empty `range` of them.
    pub async fn open_blob(&self, digest: &Digest, range: Option<Range<u64>>) -> ApiResult<ByteStream> {
        match self.blobs.read(digest, range).await {
            Ok(s) => Ok(s),
            Err(berth_storage::Error::NotFound) => {
                // Linked in the metadata but missing at rest: an operator must know.
                tracing::error!(blob.digest = %digest, "blob is linked but its content is missing");
                Err(ApiError::BlobUnknown)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Links `digest` from `from` into `repo` when `from` has it. `None` when it cannot be
    /// mounted (the client then uploads it).
    pub async fn mount_blob(&self, repo: &RepoName, digest: &Digest, from: &RepoName) -> ApiResult<Option<u64>> {
        let Some(size) = self.meta.repo_blob(from, digest).await? else { return Ok(None) };
        if self.blobs.size(digest).await?.is_none() {
            return Ok(None);
        }
        self.meta.link_blob(repo, digest, size).await?;
        tracing::info!(repo.name = %repo, blob.digest = %digest, mount.from = %from, "blob mounted");
        Ok(Some(size))
    }

    /// Removes `digest` from `repo`. Its bytes stay until garbage collection finds them
    /// unreferenced everywhere.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> ApiResult<()> {
        if !self.settings.delete_blobs {
            return Err(ApiError::Unsupported("blob deletion is disabled on this registry".into()));
        }
        if self.meta.unlink_blob(repo, digest).await? { Ok(()) } else { Err(ApiError::BlobUnknown) }
    }
}
