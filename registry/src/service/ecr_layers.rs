//! What ECR's layer operations need beyond the upload and blob verbs: the availability of
//! several layers of a repository at once (`BatchCheckLayerAvailability`,
//! `GetDownloadUrlForLayer`).

use berth_oci::{Digest, RepoName};
use berth_storage::metadata::BlobEntry;

use super::Registry;
use crate::error::{ApiError, ApiResult};

impl Registry {
    /// What `repo` holds of each of `digests`, in order: `None` for a digest it does not link.
    /// Each entry found is read as [`Registry::blob_entry`] reads it (the client is told the
    /// layer is there, so the read counts for the garbage collector and clears its mark).
    /// `NameUnknown` when `repo` does not exist.
    pub async fn layer_entries(&self, repo: &RepoName, digests: &[Digest]) -> ApiResult<Vec<Option<BlobEntry>>> {
        if self.meta.repository_key(repo).await?.is_none() {
            return Err(ApiError::NameUnknown);
        }
        let mut entries = Vec::with_capacity(digests.len());
        for digest in digests {
            entries.push(match self.blob_entry(repo, digest).await {
                Ok(entry) => Some(entry),
                Err(ApiError::BlobUnknown) => None,
                Err(e) => return Err(e),
            });
        }
        Ok(entries)
    }
}
