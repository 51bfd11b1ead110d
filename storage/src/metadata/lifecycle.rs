//! Lifecycle policies: a repository's policy text (ECR's `PutLifecyclePolicy`), when it was
//! last run, and the conditional deletion a run makes.

use async_trait::async_trait;
use berth_oci::{Digest, RepoName};

use super::Origin;
use crate::error::Result;

/// A repository's stored lifecycle policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecyclePolicyRecord {
    /// The policy as the caller gave it (checked by the caller before it is stored).
    pub policy: String,
    /// Unix seconds of the last put.
    pub updated_at: i64,
    /// Unix seconds of the last run that evaluated it (ECR's `lastEvaluatedAt`); None: never.
    pub last_evaluated_at: Option<i64>,
    /// What that run expired, and kept although planned (0 before the first run).
    pub last_expired: u64,
    pub last_kept: u64,
}

/// A repository's last lifecycle policy preview (ECR's `StartLifecyclePolicyPreview`), kept
/// until the next one replaces it or the repository goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecyclePreviewRecord {
    /// The policy text previewed.
    pub policy: String,
    /// What the preview found, as JSON in the caller's shape (the store does not read it).
    pub result: String,
    /// Unix seconds of the start.
    pub started_at: i64,
}

/// What [`Lifecycle::expire_manifest`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// The manifest and its tags are gone.
    Deleted,
    /// The manifest (or its repository) was not there any more.
    Gone,
    /// Its tags are no longer those the plan saw (a tag was pushed onto it or moved away):
    /// nothing was deleted.
    TagsChanged,
    /// Another manifest of the repository lists it (an index pushed since the plan): nothing
    /// was deleted.
    Referenced,
}

/// Lifecycle policies and the deletions their runs make.
#[async_trait]
pub trait Lifecycle: Send + Sync {
    /// Stores (insert or replace) the policy of `repo`; [`crate::Error::NotFound`] when the
    /// repository does not exist (a policy belongs to a repository and goes with it).
    async fn put_lifecycle_policy(&self, repo: &RepoName, policy: &str) -> Result<()>;
    /// The policy of `repo`; None when it has none (or does not exist).
    async fn lifecycle_policy(&self, repo: &RepoName) -> Result<Option<LifecyclePolicyRecord>>;
    /// Removes the policy of `repo`; false when it had none.
    async fn delete_lifecycle_policy(&self, repo: &RepoName) -> Result<bool>;
    /// The repositories that have a policy, by name.
    async fn lifecycle_repositories(&self) -> Result<Vec<RepoName>>;
    /// Records that a run evaluated the policy of `repo` at `at` (unix seconds), expiring
    /// `expired` images and keeping `kept` it had planned to expire; nothing when the policy
    /// is gone.
    async fn lifecycle_evaluated(&self, repo: &RepoName, at: i64, expired: u64, kept: u64) -> Result<()>;
    /// Stores (insert or replace) the preview of `repo`: one per repository, so what a caller
    /// can make Berth hold is bounded by the repositories; [`crate::Error::NotFound`] when
    /// the repository does not exist (a preview goes with its repository).
    async fn put_lifecycle_preview(&self, repo: &RepoName, preview: &LifecyclePreviewRecord) -> Result<()>;
    /// The last preview of `repo`; None when none was started (or it does not exist).
    async fn lifecycle_preview(&self, repo: &RepoName) -> Result<Option<LifecyclePreviewRecord>>;
    /// Deletes the manifest `digest` of `repo` with its tags, as
    /// [`Manifests::delete_manifest`](super::Manifests::delete_manifest) does (same events,
    /// from `origin`), but only when its tags are exactly `tags` (sorted) in the same
    /// transaction, and no other manifest of the repository lists it: a tag pushed onto it,
    /// or an index listing it, since a plan saw it keeps it. A run deletes an index before
    /// its children, so a child the plan expires is listed by nothing by then.
    async fn expire_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        tags: &[String],
        origin: &Origin,
    ) -> Result<Expired>;
}
