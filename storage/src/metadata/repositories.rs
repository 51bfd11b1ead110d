//! Repositories: their creation, keys, settings (tag mutability), listing and deletion (and
//! the store's liveness).

use async_trait::async_trait;
use berth_oci::RepoName;

use super::{Origin, Page};
use crate::error::Result;

/// What [`Repositories::delete_repository`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepositoryDeleted {
    Deleted,
    NotFound,
    /// Holds this many manifests and `force` was not given.
    NotEmpty {
        manifests: u64,
    },
}

/// A repository's tag mutability as stored: ECR's `imageTagMutability` name (`MUTABLE`,
/// `IMMUTABLE`, `IMMUTABLE_WITH_EXCLUSION`, `MUTABLE_WITH_EXCLUSION`) and its wildcard
/// exclusion filters. The registry checks both (`rules::mutability`) before storing them; the
/// store keeps them as text so that it needs no rule of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagMutabilitySetting {
    pub mode: String,
    pub exclusions: Vec<String>,
}

impl Default for TagMutabilitySetting {
    /// What a repository has until someone sets it: every tag may move.
    fn default() -> Self {
        TagMutabilitySetting { mode: "MUTABLE".into(), exclusions: Vec::new() }
    }
}

/// What [`Repositories::repository_settings`] reads: ECR's `DescribeRepositories` view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositorySettings {
    pub name: RepoName,
    /// Unix seconds.
    pub created_at: i64,
    /// The key name its blobs are sealed with; `None`: it stores plaintext.
    pub key: Option<String>,
    pub tag_mutability: TagMutabilitySetting,
}

/// Repositories: their creation, keys, listing and deletion (and the store's liveness).
#[async_trait]
pub trait Repositories: Send + Sync {
    /// Checks that the store answers.
    async fn ping(&self) -> Result<()>;
    /// The key name of `repo`: `None` when the repository does not exist, `Some(None)` when
    /// it stores plaintext.
    async fn repository_key(&self, repo: &RepoName) -> Result<Option<Option<String>>>;
    /// Creates `repo` with key `key` (`None`: plaintext) unless it exists; returns the key
    /// it has (fixed at creation). Event: `repository.create` when it was created.
    async fn create_repository(&self, repo: &RepoName, key: Option<&str>, origin: &Origin) -> Result<Option<String>>;
    /// Deletes `repo` with its tags, manifests, blob links, upload sessions, repository
    /// tags and repository policies; refused while it holds manifests unless `force`.
    /// Events: `repository.delete`.
    async fn delete_repository(&self, repo: &RepoName, force: bool, origin: &Origin) -> Result<RepositoryDeleted>;
    /// Gives a plaintext repository a key (encrypting an existing registry); `false` when it
    /// has one already.
    async fn set_repository_key(&self, repo: &RepoName, key: &str) -> Result<bool>;
    /// Every repository with its key name.
    async fn repository_keys(&self) -> Result<Vec<(RepoName, Option<String>)>>;
    /// Repository names in byte order.
    async fn list_repositories(&self, page: &Page) -> Result<Vec<String>>;
    /// The settings of `repo`; `None` when it does not exist.
    async fn repository_settings(&self, repo: &RepoName) -> Result<Option<RepositorySettings>>;
    /// Sets the tag mutability of `repo` (checked by the caller); `false` when it does not
    /// exist. A push deciding its tags under the old setting and committing after this is
    /// refused with [`Error::MutabilityChanged`](crate::Error::MutabilityChanged) (see
    /// [`NewManifest::mutability`](super::NewManifest::mutability)).
    async fn set_tag_mutability(&self, repo: &RepoName, mode: &str, exclusions: &[String]) -> Result<bool>;
}
