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

/// A repository to create, with the settings it starts with (from a creation template, the
/// configuration, or the caller of ECR's `CreateRepository`), all written in the transaction
/// that creates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRepository {
    /// The key name its blobs are sealed with; `None`: plaintext. Fixed at creation.
    pub key: Option<String>,
    /// ECR's `imageTagMutability` name (validated by the caller) and its exclusion filters.
    pub tag_mutability: String,
    pub tag_mutability_exclusions: Vec<String>,
    /// Its lifecycle policy JSON (a `lifecycle_policies` row).
    pub lifecycle_policy: Option<String>,
    /// Its repository policy JSON (the repository's [`RESOURCE_POLICY`](super::RESOURCE_POLICY)).
    pub repository_policy: Option<String>,
    /// Its resource tags (`repository_tags` rows).
    pub resource_tags: Vec<(String, String)>,
    /// ECR's `imageScanningConfiguration.scanOnPush`, kept as given (Berth scans nothing).
    pub scan_on_push: bool,
}

impl NewRepository {
    /// A repository with key `key` and nothing else set (`MUTABLE`, no policies, no tags).
    pub fn with_key(key: Option<String>) -> NewRepository {
        NewRepository {
            key,
            tag_mutability: "MUTABLE".into(),
            tag_mutability_exclusions: Vec::new(),
            lifecycle_policy: None,
            repository_policy: None,
            resource_tags: Vec::new(),
            scan_on_push: false,
        }
    }
}

/// What [`Repositories::create_repository`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedRepository {
    /// The key name the repository has (its own when it existed: fixed at creation).
    pub key: Option<String>,
    /// `false`: it existed, and nothing was written.
    pub created: bool,
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
    /// ECR's `imageScanningConfiguration.scanOnPush`, as last set.
    pub scan_on_push: bool,
}

/// Repositories: their creation, keys, listing and deletion (and the store's liveness).
#[async_trait]
pub trait Repositories: Send + Sync {
    /// Checks that the store answers.
    async fn ping(&self) -> Result<()>;
    /// The key name of `repo`: `None` when the repository does not exist, `Some(None)` when
    /// it stores plaintext.
    async fn repository_key(&self, repo: &RepoName) -> Result<Option<Option<String>>>;
    /// Creates `repo` with its settings `new` unless it exists: the `repositories` row (key,
    /// tag mutability), its lifecycle policy, repository policy and resource tags, in one
    /// transaction. A repository policy or resource tag already stored under its name (set
    /// before the first push) is kept: the setting made for this repository wins over the
    /// template's. Returns the key it has (fixed at creation) and whether it was created.
    /// Event: `repository.create` when it was created.
    async fn create_repository(
        &self,
        repo: &RepoName,
        new: &NewRepository,
        origin: &Origin,
    ) -> Result<CreatedRepository>;
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
    /// The settings of the repositories named after `page.last`, in byte order, at most
    /// `page.limit` of them: one query, whatever the page's size (ECR's
    /// `DescribeRepositories` over every repository).
    async fn repository_settings_page(&self, page: &Page) -> Result<Vec<RepositorySettings>>;
    /// The settings of those of `repos` that exist, in byte order of their names: one query
    /// (ECR's `DescribeRepositories` with `repositoryNames`, at most 100).
    async fn repository_settings_of(&self, repos: &[RepoName]) -> Result<Vec<RepositorySettings>>;
    /// Sets ECR's `scanOnPush` of `repo`; `false` when it does not exist.
    async fn set_scan_on_push(&self, repo: &RepoName, scan_on_push: bool) -> Result<bool>;
    /// Sets the tag mutability of `repo` (checked by the caller); `false` when it does not
    /// exist. A push deciding its tags under the old setting and committing after this is
    /// refused with [`Error::MutabilityChanged`](crate::Error::MutabilityChanged) (see
    /// [`NewManifest::mutability`](super::NewManifest::mutability)).
    async fn set_tag_mutability(&self, repo: &RepoName, mode: &str, exclusions: &[String]) -> Result<bool>;
}
