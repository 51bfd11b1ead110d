//! What they may do: policy documents, and the repository tags their conditions read.

use std::collections::BTreeMap;

use async_trait::async_trait;
use berth_oci::RepoName;

use crate::error::Result;

/// What a policy is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyTarget {
    /// An identity policy of a user; applies to every request the user makes.
    User(String),
    /// An identity policy of one access key; applies to requests signed with it.
    AccessKey(String),
    /// A resource policy of a repository (which need not exist yet).
    Repository(RepoName),
    /// The resource policy of the whole registry.
    Registry,
}

impl PolicyTarget {
    /// The `target_kind` column: which namespace [`PolicyTarget::column`] is in.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            PolicyTarget::User(_) => "user",
            PolicyTarget::AccessKey(_) => "access_key",
            PolicyTarget::Repository(_) => "repository",
            PolicyTarget::Registry => "registry",
        }
    }

    /// The `target` column: the user's name, the key's id, the repository's name, or empty
    /// for the registry (part of the primary key, so never NULL).
    pub(crate) fn column(&self) -> &str {
        match self {
            PolicyTarget::User(name) | PolicyTarget::AccessKey(name) => name,
            PolicyTarget::Repository(repo) => repo.as_str(),
            PolicyTarget::Registry => "",
        }
    }

    /// The target read back from its two columns; anything else means the data is corrupt.
    pub(crate) fn from_columns(kind: &str, target: String) -> Result<PolicyTarget> {
        match kind {
            "user" => Ok(PolicyTarget::User(target)),
            "access_key" => Ok(PolicyTarget::AccessKey(target)),
            "repository" => target
                .parse()
                .map(PolicyTarget::Repository)
                .map_err(|e| crate::Error::Corrupt(format!("policy target repository {target:?}: {e}"))),
            "registry" => Ok(PolicyTarget::Registry),
            other => Err(crate::Error::Corrupt(format!("policy target kind {other:?}"))),
        }
    }

    /// The order [`PolicySet`] lists policies in: users before keys, the repository before
    /// the registry, each by name.
    fn rank(&self) -> u8 {
        match self {
            PolicyTarget::User(_) => 0,
            PolicyTarget::AccessKey(_) => 1,
            PolicyTarget::Repository(_) => 2,
            PolicyTarget::Registry => 3,
        }
    }
}

/// The name of a repository's or the registry's policy: each holds one, as in ECR
/// (`SetRepositoryPolicy`, `PutRegistryPolicy`), while users and keys may hold several.
pub const RESOURCE_POLICY: &str = "policy";

/// A stored policy document (validated by the caller before it is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRecord {
    /// What it is attached to: decides whether it is an identity or a resource policy.
    pub target: PolicyTarget,
    /// Unique per target; [`RESOURCE_POLICY`] for repositories and the registry.
    pub name: String,
    /// The policy JSON as the caller stored it, so it reads back as written.
    pub document: String,
    /// Unix seconds of the last put; shown in listings.
    pub updated_at: i64,
}

/// Everything the evaluation of one request needs, read in one go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySet {
    /// The user's and the access key's inline policies (the user's first, each by name).
    pub identity: Vec<PolicyRecord>,
    /// The repository's policy and the registry policy (in that order).
    pub resource: Vec<PolicyRecord>,
    /// The repository's tags (ecr:ResourceTag/<key> condition keys).
    pub resource_tags: BTreeMap<String, String>,
}

impl PolicySet {
    /// Files a policy read back from either store under identity or resource.
    pub(crate) fn add(&mut self, policy: PolicyRecord) {
        match policy.target {
            PolicyTarget::User(_) | PolicyTarget::AccessKey(_) => self.identity.push(policy),
            PolicyTarget::Repository(_) | PolicyTarget::Registry => self.resource.push(policy),
        }
    }

    /// Puts the policies in the documented order, whatever order the database returned.
    pub(crate) fn sort(&mut self) {
        for list in [&mut self.identity, &mut self.resource] {
            list.sort_by(|a, b| (a.target.rank(), &a.name).cmp(&(b.target.rank(), &b.name)));
        }
    }
}

/// What they may do: policy documents, and the repository tags their conditions read.
#[async_trait]
pub trait Policies: Send + Sync {
    /// Stores (insert or replace) a policy; for a User/AccessKey target, false when the
    /// user/key does not exist, so no policy outlives its owner. Repository targets need not
    /// exist yet (a policy may be set before the first push). Repositories and the registry
    /// hold one policy each, by convention named [`RESOURCE_POLICY`]; the store does not
    /// enforce it, and [`Policies::policies_for_request`] returns whatever is attached.
    async fn put_policy(&self, target: &PolicyTarget, name: &str, document: &str) -> Result<bool>;
    /// Removes one policy; false when there was none.
    async fn delete_policy(&self, target: &PolicyTarget, name: &str) -> Result<bool>;
    /// Policies attached to one target, by name.
    async fn policies(&self, target: &PolicyTarget) -> Result<Vec<PolicyRecord>>;
    /// One read for a request: inline policies of `user` and `access_key` (either may be
    /// None: anonymous, or a password login), the policy of `repo` (when Some) and the
    /// registry policy, and `repo`'s tags. Cheap: it runs on every request that carries
    /// credentials, so it is one statement (one round trip, one snapshot) in both stores.
    async fn policies_for_request(
        &self,
        user: Option<&str>,
        access_key: Option<&str>,
        repo: Option<&RepoName>,
    ) -> Result<PolicySet>;
    /// Repository tags (ECR's TagResource), by key. Kept by name, not by repository row, so
    /// a repository may be tagged before its first push.
    async fn repository_tags(&self, repo: &RepoName) -> Result<BTreeMap<String, String>>;
    /// Sets `set` and then removes `remove` in one transaction (a key in both ends removed),
    /// so a policy condition never sees half an edit.
    async fn tag_repository(&self, repo: &RepoName, set: &BTreeMap<String, String>, remove: &[String]) -> Result<()>;
}
