//! The admin API's lifecycle policy endpoints, in ECR's shapes, each allowed by its ECR
//! action (a run by Berth's own):
//!
//! | endpoint | action, resource |
//! |---|---|
//! | `PUT`, `GET`, `DELETE /api/v1/repositories/<name>/lifecycle-policy` | `ecr:PutLifecyclePolicy`, `ecr:GetLifecyclePolicy`, `ecr:DeleteLifecyclePolicy` on the repository |
//! | `POST /api/v1/repositories/<name>/lifecycle-policy/preview` | `ecr:StartLifecyclePolicyPreview` on the repository |
//! | `POST /api/v1/lifecycle/run?repository=<name>` | `berth:RunLifecyclePolicy` on the repository |
//! | `POST /api/v1/lifecycle/run` (every repository with a policy) | `berth:RunLifecyclePolicy` on the registry |
//!
//! `PUT` takes `{"lifecyclePolicyText": "<policy JSON as a string>"}` and answers, as `GET`
//! and `DELETE` do, `{"repositoryName", "lifecyclePolicyText", "lastEvaluatedAt"}`. The
//! preview takes an optional `{"lifecyclePolicyText"}` (else the stored policy) and answers
//! `GetLifecyclePolicyPreview`'s results at once.

use axum::Json;
use axum::response::{IntoResponse, Response};
use berth_oci::RepoName;
use hyper::{Method, StatusCode};
use serde::Deserialize;

use super::admin::allow;
use super::webhooks::Call;
use crate::error::{ApiError, ApiResult};
use crate::service::lifecycle::{PolicyView, RunView};

#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Policy(RepoName),
    Preview(RepoName),
    Run,
}

/// The path after `/api/v1/`, split at `/`; `Err` for a lifecycle path whose repository
/// name does not parse.
pub fn parse(segs: &[&str]) -> Option<ApiResult<Target>> {
    let repo = |parts: &[&str]| -> ApiResult<RepoName> {
        parts.join("/").parse().map_err(|e: berth_oci::name::NameError| ApiError::NameInvalid(e.to_string()))
    };
    Some(match segs {
        ["repositories", name @ .., "lifecycle-policy"] if !name.is_empty() => repo(name).map(Target::Policy),
        ["repositories", name @ .., "lifecycle-policy", "preview"] if !name.is_empty() => {
            repo(name).map(Target::Preview)
        }
        ["lifecycle", "run"] => Ok(Target::Run),
        _ => return None,
    })
}

/// `PutLifecyclePolicy`'s and `StartLifecyclePolicyPreview`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PolicyBody {
    lifecycle_policy_text: String,
}

fn policy_body(body: &[u8], required: bool) -> ApiResult<Option<String>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        if required {
            return Err(ApiError::Invalid(
                "the body must be {\"lifecyclePolicyText\": \"<the policy JSON, as a string>\"}".into(),
            ));
        }
        return Ok(None);
    }
    let parsed: PolicyBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::Invalid(format!(
            "request body: {e}; it must be {{\"lifecyclePolicyText\": \"<the policy JSON, as a string>\"}}"
        ))
    })?;
    Ok(Some(parsed.lifecycle_policy_text))
}

fn ok<T: serde::Serialize>(value: T) -> ApiResult<Response> {
    Ok((StatusCode::OK, Json(value)).into_response())
}

pub async fn handle(call: Call<'_>, method: &Method, target: Target) -> ApiResult<Response> {
    let reg = call.reg;
    let arns = &reg.auth.arns;
    let allow = |action: &'static str, resource: String| allow(reg, call.caller, action, resource);
    match (method, target) {
        (&Method::PUT, Target::Policy(repo)) => {
            let text = policy_body(call.body, true)?.unwrap_or_default();
            allow("ecr:PutLifecyclePolicy", arns.repository(repo.as_str())).await?;
            ok(PolicyView::new(&repo, reg.put_lifecycle_policy(&repo, &text).await?))
        }
        (&Method::GET, Target::Policy(repo)) => {
            allow("ecr:GetLifecyclePolicy", arns.repository(repo.as_str())).await?;
            ok(PolicyView::new(&repo, reg.lifecycle_policy(&repo).await?))
        }
        (&Method::DELETE, Target::Policy(repo)) => {
            allow("ecr:DeleteLifecyclePolicy", arns.repository(repo.as_str())).await?;
            ok(PolicyView::new(&repo, reg.delete_lifecycle_policy(&repo).await?))
        }
        (&Method::POST, Target::Preview(repo)) => {
            let text = policy_body(call.body, false)?;
            allow("ecr:StartLifecyclePolicyPreview", arns.repository(repo.as_str())).await?;
            ok(reg.lifecycle_preview_view(&repo, text).await?)
        }
        (&Method::POST, Target::Run) => {
            let repo = match call.query.iter().find(|(k, _)| k == "repository") {
                Some((_, name)) => Some(name.parse::<RepoName>().map_err(|e: berth_oci::name::NameError| {
                    ApiError::NameInvalid(format!("repository {name:?}: {e}"))
                })?),
                None => None,
            };
            let resource = match &repo {
                Some(r) => arns.repository(r.as_str()),
                None => arns.registry(),
            };
            allow("berth:RunLifecyclePolicy", resource).await?;
            let reports = reg.run_lifecycle(repo.as_ref()).await?;
            ok(serde_json::json!({ "runs": reports.iter().map(RunView::new).collect::<Vec<_>>() }))
        }
        (method, _) => Err(ApiError::Unsupported(format!("{method} is not a method of /api/v1/{}", call.path))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lifecycle_paths() {
        let parsed = |p: &str| parse(&p.split('/').collect::<Vec<_>>()).map(|r| r.map_err(|e| e.to_string()));
        assert_eq!(
            parsed("repositories/team/app/lifecycle-policy"),
            Some(Ok(Target::Policy("team/app".parse().unwrap())))
        );
        assert_eq!(
            parsed("repositories/app/lifecycle-policy/preview"),
            Some(Ok(Target::Preview("app".parse().unwrap())))
        );
        assert_eq!(parsed("lifecycle/run"), Some(Ok(Target::Run)));
        assert!(matches!(parsed("repositories/Bad/lifecycle-policy"), Some(Err(_))));
        assert_eq!(parsed("repositories/lifecycle-policy"), None);
        assert_eq!(parsed("repositories/app/policy"), None);
    }
}
