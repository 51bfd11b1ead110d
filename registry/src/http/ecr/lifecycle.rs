//! ECR's lifecycle policy operations: `PutLifecyclePolicy`, `GetLifecyclePolicy`,
//! `DeleteLifecyclePolicy`, `StartLifecyclePolicyPreview`, `GetLifecyclePolicyPreview`, each
//! allowed by its own ECR action on the repository. A preview is computed when it starts, as
//! a run computes its plan (`service::lifecycle`), and stored as the repository's last one
//! (`service::ecr_images`), so its status is `COMPLETE` from the start and
//! `GetLifecyclePolicyPreview` pages through what was found then.

use serde::{Deserialize, Serialize};

use super::error::EcrError;
use super::images::{ImageId, MAX_IMAGE_IDS, Wanted, existing, image_ids, wanted};
use super::wire::{epoch, input, max_results, output, repository_name};
use super::{Ecr, EcrResult};
use crate::error::ApiError;
use crate::service::ecr_images::PreviewResult;
use crate::service::images::TagStatus;

/// Serves `op` if it belongs to this group.
pub(super) async fn call(ecr: &Ecr<'_>, op: &str, body: &[u8]) -> Option<EcrResult> {
    Some(match op {
        "PutLifecyclePolicy" => put_policy(ecr, body).await,
        "GetLifecyclePolicy" => policy(ecr, body, false).await,
        "DeleteLifecyclePolicy" => policy(ecr, body, true).await,
        "StartLifecyclePolicyPreview" => start_preview(ecr, body).await,
        "GetLifecyclePolicyPreview" => get_preview(ecr, body).await,
        _ => return None,
    })
}

/// ECR's bounds on `lifecyclePolicyText`.
const MIN_POLICY: usize = 100;
const MAX_POLICY: usize = 30_720;

fn policy_text(text: &str) -> EcrResult<()> {
    if !(MIN_POLICY..=MAX_POLICY).contains(&text.len()) {
        return Err(EcrError::invalid(format!(
            "lifecyclePolicyText has {} characters; ECR's limits are {MIN_POLICY} to {MAX_POLICY}",
            text.len()
        )));
    }
    Ok(())
}

fn policy_not_found(ecr: &Ecr<'_>, repo: &berth_oci::RepoName) -> EcrError {
    EcrError::new(
        "LifecyclePolicyNotFoundException",
        format!(
            "Lifecycle policy does not exist for the repository with name '{repo}' in the registry with id '{}'",
            ecr.account()
        ),
    )
}

/// The service's error: an invalid policy as `InvalidParameterException` naming the field.
fn api(ecr: &Ecr<'_>, repo: &berth_oci::RepoName, e: ApiError) -> EcrError {
    match e {
        ApiError::NotFound(_) => policy_not_found(ecr, repo),
        ApiError::NameUnknown => ecr.repository_not_found(repo),
        ApiError::Invalid(m) => EcrError::invalid(format!("lifecyclePolicyText: {m}")),
        e => ecr.api(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PolicyInput {
    registry_id: Option<String>,
    repository_name: String,
    lifecycle_policy_text: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PolicyOutput {
    registry_id: String,
    repository_name: String,
    lifecycle_policy_text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_evaluated_at: Option<f64>,
    /// `StartLifecyclePolicyPreview`'s only.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
}

/// `PutLifecyclePolicy`: stored once it passes ECR's checks.
async fn put_policy(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let input: PolicyInput = input(body)?;
    ecr.registry_id(input.registry_id.as_deref())?;
    let repo = repository_name("repositoryName", &input.repository_name)?;
    let Some(text) = input.lifecycle_policy_text else {
        return Err(EcrError::invalid("lifecyclePolicyText is required: the policy JSON, as a string"));
    };
    policy_text(&text)?;
    ecr.allow("ecr:PutLifecyclePolicy", Some(&repo)).await?;
    existing(ecr, &repo).await?;
    let record = ecr.reg.put_lifecycle_policy(&repo, &text).await.map_err(|e| match e {
        // The repository was checked; a NotFound now is the repository gone in between.
        ApiError::NotFound(_) => ecr.repository_not_found(&repo),
        e => api(ecr, &repo, e),
    })?;
    output(&PolicyOutput {
        registry_id: ecr.account().to_owned(),
        repository_name: repo.to_string(),
        lifecycle_policy_text: record.policy,
        last_evaluated_at: None,
        status: None,
    })
}

/// `GetLifecyclePolicy`, and `DeleteLifecyclePolicy` (which answers what it deleted).
async fn policy(ecr: &Ecr<'_>, body: &[u8], delete: bool) -> EcrResult {
    let input: PolicyInput = input(body)?;
    ecr.registry_id(input.registry_id.as_deref())?;
    let repo = repository_name("repositoryName", &input.repository_name)?;
    let action = if delete { "ecr:DeleteLifecyclePolicy" } else { "ecr:GetLifecyclePolicy" };
    ecr.allow(action, Some(&repo)).await?;
    existing(ecr, &repo).await?;
    let record =
        if delete { ecr.reg.delete_lifecycle_policy(&repo).await } else { ecr.reg.lifecycle_policy(&repo).await }
            .map_err(|e| api(ecr, &repo, e))?;
    output(&PolicyOutput {
        registry_id: ecr.account().to_owned(),
        repository_name: repo.to_string(),
        lifecycle_policy_text: record.policy,
        last_evaluated_at: record.last_evaluated_at.map(epoch),
        status: None,
    })
}

/// `StartLifecyclePolicyPreview`: the plan of the text given (else of the stored policy),
/// computed now and kept as the repository's last preview.
async fn start_preview(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let input: PolicyInput = input(body)?;
    ecr.registry_id(input.registry_id.as_deref())?;
    let repo = repository_name("repositoryName", &input.repository_name)?;
    if let Some(text) = &input.lifecycle_policy_text {
        policy_text(text)?;
    }
    ecr.allow("ecr:StartLifecyclePolicyPreview", Some(&repo)).await?;
    existing(ecr, &repo).await?;
    let preview =
        ecr.reg.start_lifecycle_preview(&repo, input.lifecycle_policy_text).await.map_err(|e| api(ecr, &repo, e))?;
    output(&PolicyOutput {
        registry_id: ecr.account().to_owned(),
        repository_name: repo.to_string(),
        lifecycle_policy_text: preview.policy,
        last_evaluated_at: None,
        status: Some("COMPLETE"),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PreviewFilter {
    tag_status: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetPreviewInput {
    registry_id: Option<String>,
    repository_name: String,
    image_ids: Option<Vec<ImageId>>,
    next_token: Option<String>,
    max_results: Option<i64>,
    #[serde(default)]
    filter: PreviewFilter,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ActionOut {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ResultOut {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    image_tags: Vec<String>,
    image_digest: String,
    image_pushed_at: f64,
    action: ActionOut,
    applied_rule_priority: u32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SummaryOut {
    expiring_image_total_count: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GetPreviewOutput {
    registry_id: String,
    repository_name: String,
    lifecycle_policy_text: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
    preview_results: Vec<ResultOut>,
    summary: SummaryOut,
}

/// The page `GetLifecyclePolicyPreview` answers when no `maxResults` is given (ECR's).
const PREVIEW_PAGE: usize = 100;

/// `GetLifecyclePolicyPreview`: the last preview's results, in the order a run deletes,
/// filtered by `imageIds` or `filter.tagStatus`, in pages; the summary counts them all.
async fn get_preview(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let input: GetPreviewInput = input(body)?;
    ecr.registry_id(input.registry_id.as_deref())?;
    let repo = repository_name("repositoryName", &input.repository_name)?;
    let max = max_results(input.max_results, 100)?;
    let status: TagStatus = match input.filter.tag_status.as_deref() {
        None => TagStatus::Any,
        Some(s) => s.parse().map_err(|e: String| EcrError::invalid(format!("filter.{e}")))?,
    };
    let named: Option<Vec<Wanted>> = match &input.image_ids {
        None => None,
        Some(ids) => {
            image_ids(ids)?;
            debug_assert!(ids.len() <= MAX_IMAGE_IDS);
            if max.is_some() || input.next_token.is_some() {
                return Err(EcrError::invalid(
                    "maxResults and nextToken cannot be used with imageIds: give one or the other",
                ));
            }
            Some(
                ids.iter()
                    .map(|id| wanted(id).map_err(|f| EcrError::invalid(f.failure_reason)))
                    .collect::<Result<_, _>>()?,
            )
        }
    };
    if let Some(t) = &input.next_token
        && t.parse::<berth_oci::Digest>().is_err()
    {
        return Err(EcrError::invalid("nextToken is not one this operation gave; start again without it"));
    }
    ecr.allow("ecr:GetLifecyclePolicyPreview", Some(&repo)).await?;
    existing(ecr, &repo).await?;
    let Some(preview) = ecr.reg.lifecycle_preview(&repo).await.map_err(|e| api(ecr, &repo, e))? else {
        return Err(EcrError::new(
            "LifecyclePolicyPreviewNotFoundException",
            format!(
                "There is no lifecycle policy preview for the repository with name '{repo}' in the registry with id '{}'; \
                 start one with StartLifecyclePolicyPreview",
                ecr.account()
            ),
        ));
    };
    let total = preview.results.len();
    let admitted = |r: &PreviewResult| {
        let tag_ok = match status {
            TagStatus::Tagged => !r.image_tags.is_empty(),
            TagStatus::Untagged => r.image_tags.is_empty(),
            TagStatus::Any => true,
        };
        let named_ok = named.as_ref().is_none_or(|ws| {
            let digest = r.image_digest.parse::<berth_oci::Digest>().ok();
            ws.iter().any(|w| digest.as_ref().is_some_and(|d| w.matches(d, &r.image_tags)))
        });
        tag_ok && named_ok
    };
    let listed: Vec<&PreviewResult> = preview.results.iter().filter(|r| admitted(r)).collect();
    let start = match &input.next_token {
        None => 0,
        Some(t) => match listed.iter().position(|r| &r.image_digest == t) {
            Some(i) => i + 1,
            // Not an entry of this preview: a forged token, or a preview started since.
            None => {
                return Err(EcrError::invalid(
                    "nextToken is not one this operation gave for the current preview; start again without it",
                ));
            }
        },
    };
    let page = if named.is_some() { listed.len() } else { max.unwrap_or(PREVIEW_PAGE) };
    let end = (start + page).min(listed.len());
    let next_token = (end < listed.len()).then(|| listed[end - 1].image_digest.clone());
    let preview_results = listed[start..end]
        .iter()
        .map(|r| ResultOut {
            image_tags: r.image_tags.clone(),
            image_digest: r.image_digest.clone(),
            image_pushed_at: epoch(r.image_pushed_at),
            action: ActionOut { kind: "EXPIRE" },
            applied_rule_priority: r.applied_rule_priority,
        })
        .collect();
    output(&GetPreviewOutput {
        registry_id: ecr.account().to_owned(),
        repository_name: repo.to_string(),
        lifecycle_policy_text: preview.policy,
        status: "COMPLETE",
        next_token,
        preview_results,
        summary: SummaryOut { expiring_image_total_count: total },
    })
}
