//! ECR's resource tags: `TagResource`, `UntagResource`, `ListTagsForResource` on a repository
//! named by its ARN (`arn:aws:ecr:<region>:<account>:repository/<name>`, this registry's only),
//! through [`Admin`] as the admin API's tag endpoints, with ECR's limits: at most 50 tags on a
//! repository (`TooManyTagsException`), keys 1–128 characters not starting with `aws:`, values
//! up to 256 (`InvalidTagParameterException`). The tags are the `ecr:ResourceTag/<key>`
//! condition keys of policies.

use std::collections::BTreeMap;

use berth_oci::RepoName;
use serde::Deserialize;

use super::Ecr;
use super::error::{EcrError, EcrResult};
use super::repositories::{TagOut, check_tags};
use super::wire::{input, output, repository_name};
use crate::auth::admin::Admin;
use crate::rules::templates::MAX_TAG_KEY;

/// The most keys one `UntagResource` may name (ECR's tag limit).
const MAX_UNTAG_KEYS: usize = 50;

/// Serves `op` if it belongs to this group.
pub(super) async fn call(ecr: &Ecr<'_>, op: &str, body: &[u8]) -> Option<EcrResult> {
    Some(match op {
        "TagResource" => tag_resource(ecr, body).await,
        "UntagResource" => untag_resource(ecr, body).await,
        "ListTagsForResource" => list_tags(ecr, body).await,
        _ => return None,
    })
}

fn admin<'a>(ecr: &'a Ecr<'_>) -> Admin<'a> {
    Admin { meta: ecr.reg.meta.as_ref(), arns: &ecr.reg.auth.arns }
}

/// The repository a `resourceArn` names; anything but a repository ARN of this registry is
/// `InvalidParameterException`.
fn repository_of(ecr: &Ecr<'_>, arn: &str) -> EcrResult<RepoName> {
    let prefix = ecr.repository_arn("");
    let Some(name) = arn.strip_prefix(&prefix) else {
        return Err(EcrError::invalid(format!(
            "resourceArn '{arn}' is not a repository of this registry: give {prefix}<repository name>"
        )));
    };
    repository_name("resourceArn", name)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TagIn {
    resource_arn: String,
    tags: Vec<TagOut>,
}

async fn tag_resource(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: TagIn = input(body)?;
    let repo = repository_of(ecr, &i.resource_arn)?;
    let given: Vec<(String, String)> = i.tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect();
    check_tags(&given)?;
    ecr.allow("ecr:TagResource", Some(&repo)).await?;
    ecr.settings(&repo).await?;
    let admin = admin(ecr);
    let set: BTreeMap<String, String> = given.into_iter().collect();
    // The limit counts the tags the repository keeps with the new ones.
    let mut after = admin.repository_tags(&repo).await.map_err(|e| ecr.api(e))?;
    after.extend(set.clone());
    check_tags(&after.into_iter().collect::<Vec<_>>())?;
    admin.tag_repository(&repo, &set, &[]).await.map_err(|e| ecr.api(e))?;
    output(&serde_json::json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UntagIn {
    resource_arn: String,
    tag_keys: Vec<String>,
}

async fn untag_resource(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: UntagIn = input(body)?;
    let repo = repository_of(ecr, &i.resource_arn)?;
    if i.tag_keys.len() > MAX_UNTAG_KEYS {
        return Err(EcrError::new(
            "TooManyTagsException",
            format!("tagKeys: {} given, at most {MAX_UNTAG_KEYS}", i.tag_keys.len()),
        ));
    }
    if let Some(k) = i.tag_keys.iter().find(|k| k.is_empty() || k.chars().count() > MAX_TAG_KEY) {
        return Err(EcrError::new(
            "InvalidTagParameterException",
            format!("tag key {k:?} must be 1 to {MAX_TAG_KEY} characters"),
        ));
    }
    ecr.allow("ecr:UntagResource", Some(&repo)).await?;
    ecr.settings(&repo).await?;
    admin(ecr).tag_repository(&repo, &BTreeMap::new(), &i.tag_keys).await.map_err(|e| ecr.api(e))?;
    output(&serde_json::json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListTagsIn {
    resource_arn: String,
}

async fn list_tags(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: ListTagsIn = input(body)?;
    let repo = repository_of(ecr, &i.resource_arn)?;
    ecr.allow("ecr:ListTagsForResource", Some(&repo)).await?;
    ecr.settings(&repo).await?;
    let tags = admin(ecr).repository_tags(&repo).await.map_err(|e| ecr.api(e))?;
    let tags: Vec<TagOut> = tags.into_iter().map(|(key, value)| TagOut { key, value }).collect();
    output(&serde_json::json!({ "tags": tags }))
}
