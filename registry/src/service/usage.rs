//! Usage and quotas: what repositories, keys and the registry hold (counters the metadata
//! store keeps), and the limits a push must stay within.
//!
//! A quota limits the bytes of linked blobs and the number of images (manifests) of one
//! repository, or of every repository under a prefix together (`team-a/*`; `*` for all).
//! Quotas come from the configuration (`quotas.limits`) and from the admin API, which are
//! stored; for the same scope the stored one wins, so an administrator can raise a limit
//! without a restart, and deleting it falls back to the configuration's. Every quota
//! covering a repository must hold.
//!
//! A push is refused (`403 DENIED`) before its bytes are stored where its size is known: a
//! monolithic upload that declares its `Content-Length`, a mount; else at commit (a chunked
//! upload, whose data is then discarded). A manifest that is new to its repository is refused
//! when the images would pass a limit. Checks read the counters and then write, so pushes
//! running at the same moment may together pass a limit by what they add at once.
//!
//! Warnings: after a push, each covering quota whose use reached `quotas.warning` percent of
//! a limit writes one `quota.warning` event, and none again until use has fallen below the
//! threshold (seen at a later push) and reached it anew.

use berth_oci::{Digest, RepoName};
use berth_storage::metadata::{
    Event, EventKind, Origin, Page, QuotaDimension, QuotaNotice, QuotaRecord, QuotaScope, RegistryUsage,
    RepositoryUsage, ScopeUsage,
};
use serde::Serialize;

use super::Registry;
use crate::error::{ApiError, ApiResult};

/// Where a quota in effect was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaSource {
    /// `quotas.limits` of this process's configuration.
    Config,
    /// The admin API or `berth quota` (the metadata store).
    Api,
}

/// A quota in effect, with its scope's current use.
#[derive(Debug, Clone, Serialize)]
pub struct QuotaView {
    pub scope: String,
    pub source: QuotaSource,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_images: Option<u64>,
    pub used_bytes: u64,
    pub used_images: u64,
    /// A quota of the configuration for the same scope that this one (from the API) hides.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub overrides_config: bool,
}

/// A repository's usage with the quotas that cover it.
#[derive(Debug, Clone, Serialize)]
pub struct RepositoryUsageView {
    #[serde(flatten)]
    pub usage: RepositoryUsage,
    pub quotas: Vec<QuotaView>,
}

/// `GET /api/v1/usage`: the registry's totals and one page of repositories.
#[derive(Debug, Clone, Serialize)]
pub struct UsageReport {
    #[serde(flatten)]
    pub registry: RegistryUsage,
    pub repositories_page: Vec<RepositoryUsage>,
    /// The name to pass as `last` for the next page, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The quotas covering the repository of one push.
#[derive(Debug, Clone, Default)]
pub struct Covering(Vec<QuotaRecord>);

impl Covering {
    /// Whether any of them limits `dimension`.
    fn limits(&self, dimension: QuotaDimension) -> bool {
        self.0.iter().any(|q| q.limit(dimension).is_some())
    }
}

/// `1.5 MiB (1572864 bytes)`: a size as people read it, with the exact count.
pub fn bytes_text(n: u64) -> String {
    format!("{} ({n} bytes)", human_bytes(n))
}

/// `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// The refusal of a push that would pass `quota` on `dimension`.
fn refusal(quota: &QuotaRecord, dimension: QuotaDimension, limit: u64, used: u64, adding: u64) -> ApiError {
    let scope = &quota.scope;
    let what = match scope {
        QuotaScope::Repository(_) => format!("quota of repository {scope}"),
        QuotaScope::Prefix(p) if p.is_empty() => "quota of the whole registry (*)".to_owned(),
        QuotaScope::Prefix(_) => format!("quota of {scope} (its repositories together)"),
    };
    let fix = "delete images (the garbage collector then reclaims their blobs) or ask an administrator to raise \
               the quota";
    ApiError::QuotaExceeded(match dimension {
        QuotaDimension::Bytes => format!(
            "the {what} allows {} of blobs; {} are in use and this blob adds {}: {fix}",
            bytes_text(limit),
            bytes_text(used),
            bytes_text(adding)
        ),
        QuotaDimension::Images => {
            format!(
                "the {what} allows {limit} images (manifests); {used} are in use and this push adds {adding}: {fix}"
            )
        }
    })
}

impl Registry {
    /// The quotas in effect, by scope: the stored ones and those of the configuration whose
    /// scope has none stored.
    pub async fn quotas_in_effect(&self) -> ApiResult<Vec<(QuotaRecord, QuotaSource, bool)>> {
        let stored = self.meta.quotas().await?;
        let mut all: Vec<(QuotaRecord, QuotaSource, bool)> = Vec::with_capacity(stored.len());
        for q in &self.settings.quotas {
            if !stored.iter().any(|s| s.scope == q.scope) {
                all.push((q.clone(), QuotaSource::Config, false));
            }
        }
        for q in stored {
            let hides = self.settings.quotas.iter().any(|c| c.scope == q.scope);
            all.push((q, QuotaSource::Api, hides));
        }
        all.sort_by_key(|q| q.0.scope.to_string());
        Ok(all)
    }

    /// The quotas that cover `repo`, read once per push and passed to its checks and its
    /// warnings. With none (the common case) they cost nothing more.
    pub async fn quotas_for(&self, repo: &RepoName) -> ApiResult<Covering> {
        let all = self.quotas_in_effect().await?;
        Ok(Covering(all.into_iter().filter(|(q, _, _)| q.scope.covers(repo)).map(|(q, _, _)| q).collect()))
    }

    /// Refuses adding `adding` of `dimension` to `repo` when a covering quota would be passed.
    async fn check_quota(
        &self,
        covering: &Covering,
        repo: &RepoName,
        dimension: QuotaDimension,
        adding: u64,
    ) -> ApiResult<()> {
        for quota in &covering.0 {
            let Some(limit) = quota.limit(dimension) else { continue };
            let used = self.meta.scope_usage(&quota.scope).await?.used(dimension);
            if used.saturating_add(adding) > limit {
                tracing::info!(repo.name = %repo, quota.scope = %quota.scope, quota.dimension = dimension.as_str(),
                    quota.limit = limit, quota.used = used, quota.adding = adding, "push refused by a quota");
                return Err(refusal(quota, dimension, limit, used, adding));
            }
        }
        Ok(())
    }

    /// Refuses linking blob `digest` of `size` bytes to `repo` when that would pass a quota; a
    /// blob the repository links already adds nothing.
    pub async fn check_blob_quota(
        &self,
        covering: &Covering,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> ApiResult<()> {
        if !covering.limits(QuotaDimension::Bytes) || size == 0 || self.meta.repo_blob(repo, digest).await?.is_some() {
            return Ok(());
        }
        self.check_quota(covering, repo, QuotaDimension::Bytes, size).await
    }

    /// Refuses storing manifest `digest` in `repo` when it is new there and one more image
    /// would pass a quota.
    pub async fn check_manifest_quota(&self, covering: &Covering, repo: &RepoName, digest: &Digest) -> ApiResult<()> {
        if !covering.limits(QuotaDimension::Images) {
            return Ok(());
        }
        let reference = berth_oci::Reference::Digest(digest.clone());
        if self.meta.get_manifest(repo, &reference).await?.is_some() {
            return Ok(());
        }
        self.check_quota(covering, repo, QuotaDimension::Images, 1).await
    }

    /// After a push to `repo`: raises the warnings of covering quotas whose use reached the
    /// threshold, and clears those whose use fell below it. A failure is logged, not returned:
    /// the push itself succeeded.
    pub async fn note_quota_use(&self, covering: &Covering, repo: &RepoName, origin: &Origin) {
        let threshold = self.settings.quota_warning;
        if threshold == 0 || covering.0.is_empty() {
            return;
        }
        if let Err(e) = self.warn_quotas(covering, repo, threshold, origin).await {
            tracing::warn!(repo.name = %repo, error = %e, "could not check the quotas' warning thresholds");
        }
    }

    async fn warn_quotas(&self, covering: &Covering, repo: &RepoName, threshold: u8, origin: &Origin) -> ApiResult<()> {
        for quota in &covering.0 {
            let usage = self.meta.scope_usage(&quota.scope).await?;
            for dimension in [QuotaDimension::Bytes, QuotaDimension::Images] {
                let Some(limit) = quota.limit(dimension) else { continue };
                self.warn_quota(repo, &quota.scope, dimension, limit, &usage, threshold, origin).await?;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn warn_quota(
        &self,
        repo: &RepoName,
        scope: &QuotaScope,
        dimension: QuotaDimension,
        limit: u64,
        usage: &ScopeUsage,
        threshold: u8,
        origin: &Origin,
    ) -> ApiResult<()> {
        let used = usage.used(dimension);
        let reached = u128::from(used) * 100 >= u128::from(limit) * u128::from(threshold);
        let standing = usage.warned.contains(&dimension);
        if reached && !standing {
            let mut event = Event::new(EventKind::QuotaWarning, repo.as_str(), origin);
            event.quota = Some(QuotaNotice {
                scope: scope.to_string(),
                dimension: dimension.as_str().to_owned(),
                limit,
                used,
                threshold,
            });
            if self.meta.raise_quota_warning(scope, dimension, &event).await? {
                self.events.wake();
                tracing::warn!(quota.scope = %scope, quota.dimension = dimension.as_str(), quota.limit = limit,
                    quota.used = used, quota.threshold = threshold, "a quota reached its warning threshold");
            }
        } else if !reached && standing {
            self.meta.clear_quota_warning(scope, dimension).await?;
        }
        Ok(())
    }

    /// Every quota in effect with its scope's use.
    pub async fn quota_views(&self) -> ApiResult<Vec<QuotaView>> {
        let mut views = Vec::new();
        for (quota, source, overrides_config) in self.quotas_in_effect().await? {
            views.push(self.quota_view(quota, source, overrides_config).await?);
        }
        Ok(views)
    }

    async fn quota_view(
        &self,
        quota: QuotaRecord,
        source: QuotaSource,
        overrides_config: bool,
    ) -> ApiResult<QuotaView> {
        let usage = self.meta.scope_usage(&quota.scope).await?;
        Ok(QuotaView {
            scope: quota.scope.to_string(),
            source,
            max_bytes: quota.max_bytes,
            max_images: quota.max_images,
            used_bytes: usage.bytes,
            used_images: usage.images,
            overrides_config,
        })
    }

    /// Sets the stored quota of `scope`; returns whether it is new, and the quota in effect.
    pub async fn put_quota(
        &self,
        scope: &QuotaScope,
        max_bytes: Option<u64>,
        max_images: Option<u64>,
    ) -> ApiResult<(bool, QuotaView)> {
        if max_bytes.is_none() && max_images.is_none() {
            return Err(ApiError::Invalid(format!(
                "a quota for {scope} must limit something: give max_bytes, max_images or both"
            )));
        }
        let record = QuotaRecord { scope: scope.clone(), max_bytes, max_images, updated_at: 0 };
        let created = self.meta.put_quota(&record).await?;
        tracing::info!(quota.scope = %scope, quota.max_bytes = ?max_bytes, quota.max_images = ?max_images, "quota set");
        let hides = self.settings.quotas.iter().any(|c| &c.scope == scope);
        Ok((created, self.quota_view(record, QuotaSource::Api, hides).await?))
    }

    /// Removes the stored quota of `scope` (one of the configuration for the same scope then
    /// applies again).
    pub async fn delete_quota(&self, scope: &QuotaScope) -> ApiResult<()> {
        if self.meta.delete_quota(scope).await? {
            tracing::info!(quota.scope = %scope, "quota deleted");
            return Ok(());
        }
        let hint = if self.settings.quotas.iter().any(|c| &c.scope == scope) {
            "; the quota of that scope comes from the configuration (quotas.limits): change it there"
        } else {
            ""
        };
        Err(ApiError::NotFound(format!("no quota of {scope} is set through the API{hint}")))
    }

    /// The registry's usage and one page of repositories (by name, after `last`).
    pub async fn usage_report(&self, last: Option<String>, n: usize) -> ApiResult<UsageReport> {
        let registry = self.meta.registry_usage().await?;
        let want = n.clamp(1, super::MAX_PAGE);
        let mut page = self.meta.repositories_usage(&Page { last, limit: want + 1 }).await?;
        let next = if page.len() > want {
            page.truncate(want);
            page.last().map(|r| r.repository.clone())
        } else {
            None
        };
        Ok(UsageReport { registry, repositories_page: page, next })
    }

    /// What `repo` holds, with the quotas covering it.
    pub async fn repository_usage(&self, repo: &RepoName) -> ApiResult<RepositoryUsageView> {
        let usage = self.meta.repository_usage(repo).await?.ok_or(ApiError::NameUnknown)?;
        let mut quotas = Vec::new();
        for (quota, source, hides) in self.quotas_in_effect().await? {
            if quota.scope.covers(repo) {
                quotas.push(self.quota_view(quota, source, hides).await?);
            }
        }
        Ok(RepositoryUsageView { usage, quotas })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_read_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(10 * 1024 * 1024), "10.0 MiB");
        assert_eq!(bytes_text(2048), "2.0 KiB (2048 bytes)");
    }

    #[test]
    fn a_refusal_names_the_quota_its_limit_and_the_use() {
        let q =
            QuotaRecord { scope: "team-a/*".parse().unwrap(), max_bytes: Some(1000), max_images: None, updated_at: 0 };
        let e = refusal(&q, QuotaDimension::Bytes, 1000, 900, 200).to_string();
        assert!(
            e.contains("team-a/*") && e.contains("1000 bytes") && e.contains("900 bytes") && e.contains("200 bytes"),
            "{e}"
        );
        let e = refusal(&q, QuotaDimension::Images, 5, 5, 1).to_string();
        assert!(e.contains("allows 5 images") && e.contains("5 are in use"), "{e}");
    }
}
