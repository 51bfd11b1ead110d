//! ECR's policy operations: a repository's policy (`SetRepositoryPolicy`,
//! `GetRepositoryPolicy`, `DeleteRepositoryPolicy`) and the registry's (`PutRegistryPolicy`,
//! `GetRegistryPolicy`, `DeleteRegistryPolicy`), through [`Admin`]: the admin API's policy
//! endpoints and these share every check (the parser's refusal names the statement at fault).
//! A policy is answered as the text stored.
//!
//! `SetRepositoryPolicy`'s `force` is accepted and changes nothing: Berth does not refuse a
//! policy that would lock its setter out (an administrator's identity policy can always set
//! another).

use berth_oci::RepoName;
use berth_storage::metadata::PolicyTarget;
use serde::Deserialize;

use super::Ecr;
use super::error::{EcrError, EcrResult};
use super::wire::{self, input, output};
use crate::auth::admin::Admin;
use crate::error::ApiError;
use crate::rules::templates::MAX_REPOSITORY_POLICY;

/// Serves `op` if it belongs to this group.
pub(super) async fn call(ecr: &Ecr<'_>, op: &str, body: &[u8]) -> Option<EcrResult> {
    Some(match op {
        "SetRepositoryPolicy" => set_repository_policy(ecr, body).await,
        "GetRepositoryPolicy" => repository_policy(ecr, body, false).await,
        "DeleteRepositoryPolicy" => repository_policy(ecr, body, true).await,
        "PutRegistryPolicy" => put_registry_policy(ecr, body).await,
        "GetRegistryPolicy" => registry_policy(ecr, body, false).await,
        "DeleteRegistryPolicy" => registry_policy(ecr, body, true).await,
        _ => return None,
    })
}

fn admin<'a>(ecr: &'a Ecr<'_>) -> Admin<'a> {
    Admin { meta: ecr.reg.meta.as_ref(), arns: &ecr.reg.auth.arns }
}

/// A policy text within ECR's limit (10,240 characters, both kinds).
fn check_length(text: &str) -> EcrResult<()> {
    if text.chars().count() > MAX_REPOSITORY_POLICY {
        return Err(EcrError::invalid(format!("policyText must be at most {MAX_REPOSITORY_POLICY} characters")));
    }
    Ok(())
}

/// The admin service's refusal to store a policy: the parser's message (naming the statement).
fn policy_error(ecr: &Ecr<'_>, e: ApiError) -> EcrError {
    match e {
        ApiError::Invalid(m) => EcrError::invalid(format!("policyText: {m}")),
        e => ecr.api(e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SetRepositoryPolicyIn {
    registry_id: Option<String>,
    repository_name: String,
    policy_text: String,
    #[serde(default)]
    #[allow(dead_code)]
    force: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RepositoryIn {
    registry_id: Option<String>,
    repository_name: String,
}

/// The answer of each repository policy operation.
fn repository_answer(ecr: &Ecr<'_>, repo: &RepoName, text: &str) -> EcrResult {
    output(&serde_json::json!({
        "registryId": ecr.account(),
        "repositoryName": repo.as_str(),
        "policyText": text,
    }))
}

async fn set_repository_policy(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: SetRepositoryPolicyIn = input(body)?;
    ecr.registry_id(i.registry_id.as_deref())?;
    let repo = wire::repository_name("repositoryName", &i.repository_name)?;
    check_length(&i.policy_text)?;
    ecr.allow("ecr:SetRepositoryPolicy", Some(&repo)).await?;
    // ECR's repository policies belong to repositories that exist (Berth's admin API may set
    // one before the first push).
    ecr.settings(&repo).await?;
    let target = PolicyTarget::Repository(repo.clone());
    admin(ecr).put_policy(&target, None, &i.policy_text).await.map_err(|e| policy_error(ecr, e))?;
    repository_answer(ecr, &repo, &i.policy_text)
}

async fn repository_policy(ecr: &Ecr<'_>, body: &[u8], delete: bool) -> EcrResult {
    let i: RepositoryIn = input(body)?;
    ecr.registry_id(i.registry_id.as_deref())?;
    let repo = wire::repository_name("repositoryName", &i.repository_name)?;
    let action = if delete { "ecr:DeleteRepositoryPolicy" } else { "ecr:GetRepositoryPolicy" };
    ecr.allow(action, Some(&repo)).await?;
    ecr.settings(&repo).await?;
    let target = PolicyTarget::Repository(repo.clone());
    let admin = admin(ecr);
    let not_found = || {
        EcrError::new(
            "RepositoryPolicyNotFoundException",
            format!(
                "Repository policy does not exist for the repository with name '{repo}' in the registry with id '{}'",
                ecr.account()
            ),
        )
    };
    let text = admin.policy_text(&target).await.map_err(|e| ecr.api(e))?.ok_or_else(not_found)?;
    if delete {
        admin.delete_policy(&target, None).await.map_err(|e| match e {
            ApiError::NotFound(_) => not_found(),
            e => ecr.api(e),
        })?;
    }
    repository_answer(ecr, &repo, &text)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutRegistryPolicyIn {
    policy_text: String,
}

fn registry_answer(ecr: &Ecr<'_>, text: &str) -> EcrResult {
    output(&serde_json::json!({ "registryId": ecr.account(), "policyText": text }))
}

async fn put_registry_policy(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: PutRegistryPolicyIn = input(body)?;
    check_length(&i.policy_text)?;
    ecr.allow("ecr:PutRegistryPolicy", None).await?;
    admin(ecr).put_policy(&PolicyTarget::Registry, None, &i.policy_text).await.map_err(|e| policy_error(ecr, e))?;
    registry_answer(ecr, &i.policy_text)
}

async fn registry_policy(ecr: &Ecr<'_>, body: &[u8], delete: bool) -> EcrResult {
    // No input members; a body that is not a JSON object is still refused.
    let _: serde_json::Map<String, serde_json::Value> = input(body)?;
    let action = if delete { "ecr:DeleteRegistryPolicy" } else { "ecr:GetRegistryPolicy" };
    ecr.allow(action, None).await?;
    let admin = admin(ecr);
    let not_found = || {
        EcrError::new(
            "RegistryPolicyNotFoundException",
            format!("Registry policy does not exist in the registry with id '{}'", ecr.account()),
        )
    };
    let text = admin.policy_text(&PolicyTarget::Registry).await.map_err(|e| ecr.api(e))?.ok_or_else(not_found)?;
    if delete {
        admin.delete_policy(&PolicyTarget::Registry, None).await.map_err(|e| match e {
            ApiError::NotFound(_) => not_found(),
            e => ecr.api(e),
        })?;
    }
    registry_answer(ecr, &text)
}
