//! Usage and quotas, as records: what each repository, each key and the registry hold, and
//! the limits set on repositories and prefixes.
//!
//! Usage is kept as counters that the database's triggers move with every row added or
//! removed (`sqlite_v8.sql`, `postgres_v9.sql`): a link, a manifest, a tag, a blob, a sealed
//! copy. So it is right whoever changes the rows (a push, a delete, a repository delete, the
//! garbage collector), and reading it costs a few rows, never a scan of the blobs.
//!
//! A quota is checked by the registry before it stores what would pass it; the store keeps
//! the quotas set through the admin API and which quotas are past their warning threshold,
//! so each crossing is reported once ([`UsageStore::raise_quota_warning`]).

use async_trait::async_trait;
use berth_oci::RepoName;
use serde::{Deserialize, Serialize};

use super::{Event, Page};
use crate::error::Result;

/// What one repository holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryUsage {
    pub repository: String,
    /// The sizes of the blobs it links, each once (shared layers count in every repository
    /// that links them).
    pub bytes: u64,
    pub blobs: u64,
    pub manifests: u64,
    pub tags: u64,
}

/// What is sealed for one key name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUsage {
    pub key: String,
    /// The plaintext sizes of the copies sealed for it.
    pub bytes: u64,
    pub copies: u64,
}

/// What the whole registry holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegistryUsage {
    pub repositories: u64,
    /// The sum over repositories of their bytes: what the registry would hold without
    /// deduplication.
    pub bytes: u64,
    /// Blob links, summed over repositories.
    pub blobs: u64,
    pub manifests: u64,
    pub tags: u64,
    /// The bytes of the distinct blobs stored, each once however many repositories link it.
    pub stored_bytes: u64,
    pub stored_blobs: u64,
    /// `bytes / stored_bytes` (1 when nothing is stored): how much deduplication saves.
    pub dedupe_ratio: f64,
    /// Per key name, by name.
    pub keys: Vec<KeyUsage>,
}

impl RegistryUsage {
    /// Fills in `dedupe_ratio` from the byte counts.
    pub fn with_ratio(mut self) -> RegistryUsage {
        self.dedupe_ratio = if self.stored_bytes == 0 { 1.0 } else { self.bytes as f64 / self.stored_bytes as f64 };
        self
    }
}

/// What a quota covers: one repository, or every repository under a prefix together.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QuotaScope {
    Repository(RepoName),
    /// The repositories whose names start with this (`team-a/`; empty: all of them),
    /// written `team-a/*` (`*`).
    Prefix(String),
}

impl QuotaScope {
    /// Whether a push to `repo` counts against this quota.
    pub fn covers(&self, repo: &RepoName) -> bool {
        match self {
            QuotaScope::Repository(r) => r == repo,
            QuotaScope::Prefix(p) => repo.as_str().starts_with(p.as_str()),
        }
    }

    /// For a prefix: the range of names it covers, `[prefix, end)` in byte order (`end`
    /// `None`: no upper bound). The prefix ends with `/` (or is empty), whose successor
    /// byte is `0`.
    pub fn name_range(prefix: &str) -> (String, Option<String>) {
        match prefix.strip_suffix('/') {
            Some(stem) => (prefix.to_owned(), Some(format!("{stem}0"))),
            None => (prefix.to_owned(), None),
        }
    }
}

impl std::fmt::Display for QuotaScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuotaScope::Repository(r) => f.write_str(r.as_str()),
            QuotaScope::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

impl std::str::FromStr for QuotaScope {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<QuotaScope, String> {
        let bad = |e: &dyn std::fmt::Display| {
            format!("quota scope {s:?}: {e}; give a repository name (team-a/app), a prefix (team-a/*) or * (all)")
        };
        if s == "*" {
            return Ok(QuotaScope::Prefix(String::new()));
        }
        match s.strip_suffix("/*") {
            Some(stem) => {
                stem.parse::<RepoName>().map_err(|e| bad(&e))?;
                Ok(QuotaScope::Prefix(format!("{stem}/")))
            }
            None if s.contains('*') => Err(bad(&"`*` may only end a prefix, as in team-a/*")),
            None => s.parse().map(QuotaScope::Repository).map_err(|e| bad(&e)),
        }
    }
}

impl Serialize for QuotaScope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for QuotaScope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<QuotaScope, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaDimension {
    /// Bytes of linked blobs.
    Bytes,
    /// Images: manifests (an index and each of its platform manifests count one each).
    Images,
}

impl QuotaDimension {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaDimension::Bytes => "bytes",
            QuotaDimension::Images => "images",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<QuotaDimension> {
        match s {
            "bytes" => Ok(QuotaDimension::Bytes),
            "images" => Ok(QuotaDimension::Images),
            other => Err(crate::Error::Corrupt(format!("quota dimension {other:?}"))),
        }
    }
}

/// A quota: at most `max_bytes` and `max_images` (`None`: no limit on that) in its scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRecord {
    pub scope: QuotaScope,
    pub max_bytes: Option<u64>,
    pub max_images: Option<u64>,
    /// Unix seconds of the last put (0 for a quota of the configuration).
    #[serde(default)]
    pub updated_at: i64,
}

impl QuotaRecord {
    pub fn limit(&self, dimension: QuotaDimension) -> Option<u64> {
        match dimension {
            QuotaDimension::Bytes => self.max_bytes,
            QuotaDimension::Images => self.max_images,
        }
    }
}

/// A scope's use, as quotas see it, and which of its dimensions have been warned about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeUsage {
    /// Bytes of linked blobs, summed over the scope's repositories.
    pub bytes: u64,
    /// Manifests, summed over the scope's repositories.
    pub images: u64,
    /// Dimensions with a warning standing (use at or past the threshold when last looked).
    pub warned: Vec<QuotaDimension>,
}

impl ScopeUsage {
    pub fn used(&self, dimension: QuotaDimension) -> u64 {
        match dimension {
            QuotaDimension::Bytes => self.bytes,
            QuotaDimension::Images => self.images,
        }
    }
}

/// Usage counters and quota records.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// What `repo` holds; `None` when there is no such repository.
    async fn repository_usage(&self, repo: &RepoName) -> Result<Option<RepositoryUsage>>;
    /// One page of every repository's usage, by name.
    async fn repositories_usage(&self, page: &Page) -> Result<Vec<RepositoryUsage>>;
    /// The registry's totals, per key and deduplicated.
    async fn registry_usage(&self) -> Result<RegistryUsage>;
    /// The use in `scope` (summed over its repositories) and its standing warnings.
    async fn scope_usage(&self, scope: &QuotaScope) -> Result<ScopeUsage>;

    /// The quotas set through the admin API, by scope.
    async fn quotas(&self) -> Result<Vec<QuotaRecord>>;
    /// Sets the quota of `quota.scope` (replacing one there); `true` when it is new.
    async fn put_quota(&self, quota: &QuotaRecord) -> Result<bool>;
    /// Removes the quota of `scope`; `false` when there was none.
    async fn delete_quota(&self, scope: &QuotaScope) -> Result<bool>;
    /// Records that `scope`'s use of `dimension` reached the warning threshold and writes
    /// `event` in the same transaction, unless a warning stands already: `false` then, and
    /// nothing written. So a crossing is reported once, by one process of several.
    async fn raise_quota_warning(&self, scope: &QuotaScope, dimension: QuotaDimension, event: &Event) -> Result<bool>;
    /// Removes the standing warning (use fell below the threshold), so that the next
    /// crossing warns again; `false` when none stood.
    async fn clear_quota_warning(&self, scope: &QuotaScope, dimension: QuotaDimension) -> Result<bool>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_print_and_cover() {
        let repo = |s: &str| s.parse::<RepoName>().unwrap();
        let prefix: QuotaScope = "team-a/*".parse().unwrap();
        assert_eq!(prefix, QuotaScope::Prefix("team-a/".into()));
        assert_eq!(prefix.to_string(), "team-a/*");
        assert!(prefix.covers(&repo("team-a/app")) && prefix.covers(&repo("team-a/x/y")));
        assert!(!prefix.covers(&repo("team-ab/app")) && !prefix.covers(&repo("team-a")));
        let all: QuotaScope = "*".parse().unwrap();
        assert_eq!(all.to_string(), "*");
        assert!(all.covers(&repo("anything")));
        let one: QuotaScope = "team-a/app".parse().unwrap();
        assert!(one.covers(&repo("team-a/app")) && !one.covers(&repo("team-a/app2")));
        for bad in ["team-a*", "Team/*", "a/*/b", "", "/*"] {
            let e = bad.parse::<QuotaScope>().unwrap_err();
            assert!(e.contains("team-a/*"), "{bad}: {e}");
        }
        assert_eq!(QuotaScope::name_range("team-a/"), ("team-a/".into(), Some("team-a0".into())));
        assert_eq!(QuotaScope::name_range(""), (String::new(), None));
    }

    #[test]
    fn dedupe_ratio() {
        let u = RegistryUsage { bytes: 300, stored_bytes: 100, ..Default::default() }.with_ratio();
        assert_eq!(u.dedupe_ratio, 3.0);
        assert_eq!(RegistryUsage::default().with_ratio().dedupe_ratio, 1.0);
    }
}
