//! Deleting a whole repository (ECR's DeleteRepository).

use berth_oci::RepoName;
use berth_storage::metadata::{Origin, RepositoryDeleted};

use super::Registry;
use crate::error::{ApiError, ApiResult};

impl Registry {
    /// Deletes `repo` with its tags, manifests, blob links, uploads, policy and tags; while
    /// it holds manifests only with `force`. Blob bytes stay until garbage collection.
    pub async fn delete_repository(&self, repo: &RepoName, force: bool, origin: &Origin) -> ApiResult<()> {
        let result = self.meta.delete_repository(repo, force, origin).await;
        self.manifests.invalidate(repo);
        match result? {
            RepositoryDeleted::Deleted => {
                self.events.wake();
                tracing::info!(repo.name = %repo, force, "repository deleted");
                Ok(())
            }
            RepositoryDeleted::NotFound => Err(ApiError::NameUnknown),
            RepositoryDeleted::NotEmpty { manifests } => {
                Err(ApiError::RepositoryNotEmpty { repo: repo.clone(), manifests })
            }
        }
    }
}
