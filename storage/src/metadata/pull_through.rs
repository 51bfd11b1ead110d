//! Pull-through cache rules (ECR's `CreatePullThroughCacheRule`) and when each cached tag was
//! last checked against its upstream. The store keeps the rules as given (credentials already
//! sealed by the registry); what they mean (which rule covers a name, how to fetch) is the
//! registry's (`service::pull_through`).

use async_trait::async_trait;
use berth_oci::{RepoName, Tag};

use crate::error::Result;

/// One stored pull-through cache rule, validated by the caller.
#[derive(Clone, PartialEq, Eq)]
pub struct PullThroughRuleRecord {
    /// `ROOT` or a namespace without a trailing `/` (ECR's `ecrRepositoryPrefix`); unique.
    pub prefix: String,
    /// The upstream registry, `https://host[:port]` or `http://...`.
    pub upstream_url: String,
    /// The namespace upstream that `prefix` stands for (ECR's `upstreamRepositoryPrefix`);
    /// `None`: the names below `prefix` are the upstream names.
    pub upstream_prefix: Option<String>,
    /// The upstream credentials in the form the registry stored them (sealed under the key
    /// ring); `None`: anonymous.
    pub credentials: Option<String>,
    /// How long a cached tag is served before it is checked upstream again, in seconds.
    pub refresh_seconds: i64,
    /// Unix seconds; `create_pull_through_rule` sets both, `update_pull_through_rule` the second.
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for PullThroughRuleRecord {
    /// Without the credentials, sealed or not.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullThroughRuleRecord")
            .field("prefix", &self.prefix)
            .field("upstream_url", &self.upstream_url)
            .field("upstream_prefix", &self.upstream_prefix)
            .field("credentials", &self.credentials.as_ref().map(|_| "<sealed>"))
            .field("refresh_seconds", &self.refresh_seconds)
            .finish()
    }
}

/// Pull-through cache rules and tag freshness.
#[async_trait]
pub trait PullThrough: Send + Sync {
    /// Stores a new rule (its times set to now); `false` when one with its prefix exists
    /// (nothing is changed).
    async fn create_pull_through_rule(&self, rule: &PullThroughRuleRecord) -> Result<bool>;
    /// The rule with `prefix`.
    async fn pull_through_rule(&self, prefix: &str) -> Result<Option<PullThroughRuleRecord>>;
    /// Every rule, by prefix (byte order).
    async fn pull_through_rules(&self) -> Result<Vec<PullThroughRuleRecord>>;
    /// Replaces the settings of the rule with `rule.prefix` (its `created_at` kept,
    /// `updated_at` set to now); `false` when there is none.
    async fn update_pull_through_rule(&self, rule: &PullThroughRuleRecord) -> Result<bool>;
    /// Deletes the rule with `prefix`, returning it; `None` when there was none.
    async fn delete_pull_through_rule(&self, prefix: &str) -> Result<Option<PullThroughRuleRecord>>;
    /// When tag `tag` of `repo` was last found current upstream (Unix seconds); `None` when
    /// never (or the repository does not exist).
    async fn tag_checked_at(&self, repo: &RepoName, tag: &Tag) -> Result<Option<i64>>;
    /// Records that tag `tag` of `repo` was found current upstream at `at`; nothing when the
    /// repository does not exist. The record goes with the repository.
    async fn set_tag_checked(&self, repo: &RepoName, tag: &Tag, at: i64) -> Result<()>;
}

/// The columns of `pull_through_rules`, in [`PullThroughRuleRecord`]'s order.
pub(crate) const RULE_COLUMNS: &str =
    "prefix, upstream_url, upstream_prefix, credentials, refresh_seconds, created_at, updated_at";
