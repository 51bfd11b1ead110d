//! Lifecycle policies (ECR's `PutLifecyclePolicy`, `GetLifecyclePolicy`,
//! `DeleteLifecyclePolicy`, `StartLifecyclePolicyPreview`) and their runs.
//!
//! A preview and a run compute the plan the same way, [`Registry::lifecycle_plan`]: the
//! repository's images read in one snapshot, given to the pure
//! [`rules::lifecycle::plan`](crate::rules::lifecycle::plan). A run then deletes what the plan
//! lists, in its order (an index before its children, a subject before its referrers), each
//! image by the store's conditional delete: only while its tags are those the plan saw and no
//! other manifest lists it, so a tag pushed onto an image meanwhile keeps it (counted as
//! skipped), and what goes with a skipped image stays with it. Deletions are the normal ones
//! (`tag.delete` and `manifest.delete` events, from actor `lifecycle`; the manifest cache
//! invalidated) and happen whatever `delete.manifests` says: the policy is the operator's.
//! Replicas may run at once: the conditional deletes keep that correct, and the scheduled runs
//! start at a random point of the first interval so that they seldom overlap.

use std::collections::BTreeSet;
use std::time::Duration;

use berth_oci::{Digest, RepoName};
use berth_storage::metadata::{Expired, LifecyclePolicyRecord, Origin, unix_now};

use super::Registry;
use crate::error::{ApiError, ApiResult};
use crate::rules::lifecycle::{Cause, Expiry, ImageFacts, Plan, Policy};

/// The actor of the events a lifecycle run writes.
pub const ACTOR: &str = "lifecycle";

/// What a run did in one repository.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub repository: Option<RepoName>,
    /// Deleted, in the order of the plan.
    pub expired: Vec<Expiry>,
    /// Planned but kept, with why.
    pub skipped: Vec<(Expiry, String)>,
    /// Planned but deleted meanwhile by someone else (another replica's run).
    pub already_deleted: usize,
    /// The policy could not be read or the run failed here (a run of every repository goes
    /// on with the next).
    pub error: Option<String>,
}

impl Registry {
    /// Stores the lifecycle policy of `repo` once it parses and passes ECR's checks.
    pub async fn put_lifecycle_policy(&self, repo: &RepoName, text: &str) -> ApiResult<LifecyclePolicyRecord> {
        Policy::parse(text).map_err(ApiError::Invalid)?;
        match self.meta.put_lifecycle_policy(repo, text).await {
            Err(berth_storage::Error::NotFound) => return Err(no_repository(repo)),
            other => other?,
        }
        tracing::info!(repo.name = %repo, "lifecycle policy set");
        self.lifecycle_policy(repo).await
    }

    /// The lifecycle policy of `repo`.
    pub async fn lifecycle_policy(&self, repo: &RepoName) -> ApiResult<LifecyclePolicyRecord> {
        match self.meta.lifecycle_policy(repo).await? {
            Some(record) => Ok(record),
            None => Err(self.no_policy(repo).await),
        }
    }

    /// Removes the lifecycle policy of `repo`, answering what it was (as ECR does).
    pub async fn delete_lifecycle_policy(&self, repo: &RepoName) -> ApiResult<LifecyclePolicyRecord> {
        let record = self.lifecycle_policy(repo).await?;
        if !self.meta.delete_lifecycle_policy(repo).await? {
            return Err(self.no_policy(repo).await);
        }
        tracing::info!(repo.name = %repo, "lifecycle policy deleted");
        Ok(record)
    }

    /// What the policy `text` (else the stored one) would expire in `repo` now; nothing
    /// changes.
    pub async fn preview_lifecycle(&self, repo: &RepoName, text: Option<&str>) -> ApiResult<Plan> {
        let policy = match text {
            Some(text) => Policy::parse(text).map_err(ApiError::Invalid)?,
            None => self.stored_policy(repo).await?,
        };
        self.lifecycle_plan(repo, &policy).await
    }

    /// The plan of `policy` for `repo` now: what both a preview and a run act on.
    pub async fn lifecycle_plan(&self, repo: &RepoName, policy: &Policy) -> ApiResult<Plan> {
        let images = self.meta.list_images(repo).await?.ok_or_else(|| no_repository(repo))?;
        let facts: Vec<ImageFacts> = images
            .into_iter()
            .map(|i| ImageFacts {
                digest: i.digest,
                tags: i.tags,
                pushed_at: i.pushed_at,
                last_pulled_at: i.last_pulled_at,
                subject: i.subject,
                children: i.children,
            })
            .collect();
        Ok(crate::rules::lifecycle::plan(policy, &facts, unix_now()))
    }

    /// Runs the policy of `repo`, or of every repository that has one.
    pub async fn run_lifecycle(&self, repo: Option<&RepoName>) -> ApiResult<Vec<RunReport>> {
        match repo {
            Some(repo) => {
                let policy = self.stored_policy(repo).await?;
                Ok(vec![self.run_policy(repo, &policy).await?])
            }
            None => {
                let mut reports = Vec::new();
                for repo in self.meta.lifecycle_repositories().await? {
                    let report = match self.stored_policy(&repo).await {
                        Ok(policy) => self.run_policy(&repo, &policy).await,
                        Err(e) => Err(e),
                    };
                    reports.push(report.unwrap_or_else(|e| {
                        tracing::warn!(repo.name = %repo, error = %e, "lifecycle policy not run");
                        RunReport { repository: Some(repo.clone()), error: Some(e.to_string()), ..RunReport::default() }
                    }));
                }
                Ok(reports)
            }
        }
    }

    /// Executes the plan of `policy` for `repo`.
    async fn run_policy(&self, repo: &RepoName, policy: &Policy) -> ApiResult<RunReport> {
        let plan = self.lifecycle_plan(repo, policy).await?;
        self.execute_lifecycle_plan(repo, plan).await
    }

    /// Deletes what `plan` (of [`Registry::lifecycle_plan`]) expires in `repo`, in its order;
    /// an image whose tags changed since the plan, or that a manifest pushed since lists, is
    /// kept, and what goes with it too.
    pub async fn execute_lifecycle_plan(&self, repo: &RepoName, plan: Plan) -> ApiResult<RunReport> {
        let origin = Origin::command(ACTOR);
        let mut report = RunReport { repository: Some(repo.clone()), ..RunReport::default() };
        // What stays although planned: what goes with it stays too.
        let mut kept: BTreeSet<Digest> = BTreeSet::new();
        for expiry in plan.expiring {
            if let Cause::ChildOf(parent) | Cause::ReferrerOf(parent) = &expiry.cause
                && kept.contains(parent)
            {
                kept.insert(expiry.digest.clone());
                let why = format!("{parent} was kept");
                report.skipped.push((expiry, why));
                continue;
            }
            let outcome = self.meta.expire_manifest(repo, &expiry.digest, &expiry.tags, &origin).await;
            self.manifests.invalidate(repo);
            match outcome? {
                Expired::Deleted => {
                    tracing::info!(repo.name = %repo, manifest.digest = %expiry.digest, lifecycle.cause = %expiry.cause,
                        "image expired by the lifecycle policy");
                    report.expired.push(expiry);
                }
                Expired::Gone => report.already_deleted += 1,
                Expired::TagsChanged => {
                    kept.insert(expiry.digest.clone());
                    report.skipped.push((expiry, "its tags changed since the plan".into()));
                }
                Expired::Referenced => {
                    kept.insert(expiry.digest.clone());
                    report.skipped.push((expiry, "another manifest lists it".into()));
                }
            }
        }
        if !report.expired.is_empty() {
            self.events.wake();
        }
        let kept = report.skipped.len() as u64;
        self.meta.lifecycle_evaluated(repo, unix_now(), report.expired.len() as u64, kept).await?;
        tracing::info!(repo.name = %repo, expired = report.expired.len(), skipped = report.skipped.len(),
            "lifecycle policy run");
        Ok(report)
    }

    /// Every repository with a policy, with what its last run did (`berth lifecycle status`).
    pub async fn lifecycle_status(&self) -> ApiResult<Vec<StatusView>> {
        let mut out = Vec::new();
        for repo in self.meta.lifecycle_repositories().await? {
            // Deleted since it was listed: not there any more.
            if let Some(record) = self.meta.lifecycle_policy(&repo).await? {
                out.push(StatusView {
                    repository_name: repo.to_string(),
                    last_evaluated_at: record.last_evaluated_at,
                    expired_image_count: record.last_expired,
                    kept_image_count: record.last_kept,
                });
            }
        }
        Ok(out)
    }

    async fn stored_policy(&self, repo: &RepoName) -> ApiResult<Policy> {
        let record = self.lifecycle_policy(repo).await?;
        // Checked when stored; one that no longer parses (a newer Berth's policy read by an
        // older one) expires nothing rather than something else.
        Policy::parse(&record.policy)
            .map_err(|e| ApiError::Internal(format!("the stored lifecycle policy of {repo} does not parse: {e}")))
    }

    /// Not found: the policy, or the repository itself.
    async fn no_policy(&self, repo: &RepoName) -> ApiError {
        match self.meta.repository_key(repo).await {
            Ok(None) => no_repository(repo),
            _ => ApiError::NotFound(format!("repository {repo} has no lifecycle policy")),
        }
    }
}

fn no_repository(repo: &RepoName) -> ApiError {
    ApiError::NotFound(format!("repository {repo} does not exist"))
}

/// Runs every repository's policy every `interval` (the first run at a random point of the
/// first interval, so replicas do not align), for as long as the runtime lives.
pub(crate) async fn schedule(registry: std::sync::Arc<Registry>, interval: Duration) {
    let first = interval.mul_f64((uuid::Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0);
    tokio::time::sleep(first).await;
    loop {
        if let Err(e) = registry.run_lifecycle(None).await {
            tracing::warn!(error = %e, "the lifecycle run could not finish; it runs again at the next interval");
        }
        tokio::time::sleep(interval).await;
    }
}

// The answers in ECR's shapes (GetLifecyclePolicy, GetLifecyclePolicyPreview), shared by the
// admin API and `berth lifecycle --json`.

/// A stored policy: `GetLifecyclePolicy`'s answer (also `PutLifecyclePolicy`'s and
/// `DeleteLifecyclePolicy`'s).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    pub repository_name: String,
    pub lifecycle_policy_text: String,
    /// Unix seconds of the last run; null: never run.
    pub last_evaluated_at: Option<i64>,
}

impl PolicyView {
    pub fn new(repo: &RepoName, record: LifecyclePolicyRecord) -> PolicyView {
        PolicyView {
            repository_name: repo.to_string(),
            lifecycle_policy_text: record.policy,
            last_evaluated_at: record.last_evaluated_at,
        }
    }
}

/// A repository's policy and its last run, for `berth lifecycle status`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    pub repository_name: String,
    /// Unix seconds of the last run; null: never run.
    pub last_evaluated_at: Option<i64>,
    /// What the last run expired, and kept although planned (an image re-tagged meanwhile).
    pub expired_image_count: u64,
    pub kept_image_count: u64,
}

/// One image a plan expires: ECR's `LifecyclePolicyPreviewResult` and Berth's
/// `lastRecordedPullTime` and `reason`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultView {
    pub image_tags: Vec<String>,
    pub image_digest: String,
    /// Unix seconds.
    pub image_pushed_at: i64,
    /// Unix seconds; null: never pulled.
    pub last_recorded_pull_time: Option<i64>,
    pub action: ActionView,
    /// The rule that expires it, or expires what it goes with.
    pub applied_rule_priority: u32,
    /// `rule <priority>`, `child of <index digest>` or `referrer of <subject digest>`.
    pub reason: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ActionView {
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// `GetLifecyclePolicyPreview`'s answer: what the policy would expire now.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewView {
    pub repository_name: String,
    pub lifecycle_policy_text: String,
    /// Always `COMPLETE`: Berth answers the preview at once.
    pub status: &'static str,
    pub preview_results: Vec<ResultView>,
    pub summary: SummaryView,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SummaryView {
    pub expiring_image_total_count: usize,
}

/// What a run did in one repository.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    pub repository_name: String,
    pub expired: Vec<ResultView>,
    /// Planned but kept; `reason` says why.
    pub skipped: Vec<ResultView>,
    /// Planned but deleted meanwhile by someone else (another replica's run).
    pub already_deleted: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The results of a plan, each with the priority of the rule it goes back to.
pub fn result_views(expiring: &[Expiry]) -> Vec<ResultView> {
    expiring.iter().map(|e| result_view(expiring, e, e.cause.to_string())).collect()
}

fn result_view(all: &[Expiry], e: &Expiry, reason: String) -> ResultView {
    ResultView {
        image_tags: e.tags.clone(),
        image_digest: e.digest.to_string(),
        image_pushed_at: e.pushed_at,
        last_recorded_pull_time: e.last_pulled_at,
        action: ActionView { kind: "EXPIRE" },
        applied_rule_priority: rule_of(all, e),
        reason,
    }
}

/// The rule an expiry goes back to, through the index or subject it goes with.
fn rule_of(all: &[Expiry], e: &Expiry) -> u32 {
    let mut cause = &e.cause;
    // Each step goes to an earlier entry of the plan, so this ends.
    for _ in 0..=all.len() {
        match cause {
            Cause::Rule(p) => return *p,
            Cause::ChildOf(d) | Cause::ReferrerOf(d) => match all.iter().find(|x| &x.digest == d) {
                Some(parent) => cause = &parent.cause,
                None => break,
            },
        }
    }
    0
}

impl PreviewView {
    pub fn new(repo: &RepoName, text: String, plan: &Plan) -> PreviewView {
        let preview_results = result_views(&plan.expiring);
        PreviewView {
            repository_name: repo.to_string(),
            lifecycle_policy_text: text,
            status: "COMPLETE",
            summary: SummaryView { expiring_image_total_count: preview_results.len() },
            preview_results,
        }
    }
}

impl RunView {
    pub fn new(report: &RunReport) -> RunView {
        let all: Vec<Expiry> =
            report.expired.iter().cloned().chain(report.skipped.iter().map(|(e, _)| e.clone())).collect();
        RunView {
            repository_name: report.repository.as_ref().map(|r| r.to_string()).unwrap_or_default(),
            expired: report.expired.iter().map(|e| result_view(&all, e, e.cause.to_string())).collect(),
            skipped: report
                .skipped
                .iter()
                .map(|(e, why)| result_view(&all, e, format!("{} (kept: {why})", e.cause)))
                .collect(),
            already_deleted: report.already_deleted,
            error: report.error.clone(),
        }
    }
}

impl Registry {
    /// The preview in ECR's shape: of `text`, else of the stored policy.
    pub async fn lifecycle_preview_view(&self, repo: &RepoName, text: Option<String>) -> ApiResult<PreviewView> {
        let text = match text {
            Some(text) => text,
            None => self.lifecycle_policy(repo).await?.policy,
        };
        let plan = self.preview_lifecycle(repo, Some(&text)).await?;
        Ok(PreviewView::new(repo, text, &plan))
    }
}
