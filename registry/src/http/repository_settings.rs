//! The admin API's repository settings, each allowed by its ECR action on the repository:
//!
//! | endpoint | action |
//! |---|---|
//! | `GET /api/v1/repositories/<name>/settings` | `ecr:DescribeRepositories` |
//! | `PUT /api/v1/repositories/<name>/tag-mutability` | `ecr:PutImageTagMutability` |
//!
//! The PUT body is ECR's `PutImageTagMutability` request without the repository:
//! `{"imageTagMutability": "IMMUTABLE_WITH_EXCLUSION", "imageTagMutabilityExclusionFilters":
//! [{"filterType": "WILDCARD", "filter": "latest"}]}`; both answer the settings
//! (`service::repository_settings::SettingsView`).

use axum::Json;
use axum::response::{IntoResponse, Response};
use berth_oci::RepoName;
use hyper::{Method, StatusCode};

use super::admin::allow;
use super::webhooks::Call;
use crate::error::{ApiError, ApiResult};
use crate::service::repository_settings::PutTagMutability;

#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Settings(RepoName),
    TagMutability(RepoName),
}

/// The path after `/api/v1/`, split at `/`; `Err` for a settings path whose name does not
/// parse.
pub fn parse(segs: &[&str]) -> Option<ApiResult<Target>> {
    let repo = |name: &[&str]| {
        name.join("/").parse().map_err(|e: berth_oci::name::NameError| ApiError::NameInvalid(e.to_string()))
    };
    Some(match segs {
        ["repositories", name @ .., "settings"] if !name.is_empty() => repo(name).map(Target::Settings),
        ["repositories", name @ .., "tag-mutability"] if !name.is_empty() => repo(name).map(Target::TagMutability),
        _ => return None,
    })
}

pub async fn handle(call: Call<'_>, method: &Method, target: Target) -> ApiResult<Response> {
    let reg = call.reg;
    let allow = |action: &'static str, repo: &RepoName| {
        allow(reg, call.caller, action, reg.auth.arns.repository(repo.as_str()))
    };
    match (method, target) {
        (&Method::GET, Target::Settings(repo)) => {
            allow("ecr:DescribeRepositories", &repo).await?;
            Ok((StatusCode::OK, Json(reg.repository_settings(&repo).await?)).into_response())
        }
        (&Method::PUT, Target::TagMutability(repo)) => {
            let request: PutTagMutability =
                serde_json::from_slice(call.body).map_err(|e| ApiError::Invalid(format!("request body: {e}")))?;
            allow("ecr:PutImageTagMutability", &repo).await?;
            let setting = request.checked()?;
            Ok((StatusCode::OK, Json(reg.put_tag_mutability(&repo, &setting).await?)).into_response())
        }
        (method, _) => Err(ApiError::Unsupported(format!("{method} is not a method of /api/v1/{}", call.path))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_settings_paths() {
        let parse = |p: &str| parse(&p.split('/').collect::<Vec<_>>());
        let repo = |s: &str| s.parse::<RepoName>().unwrap();
        assert_eq!(parse("repositories/team/app/settings").unwrap().unwrap(), Target::Settings(repo("team/app")));
        assert_eq!(parse("repositories/app/tag-mutability").unwrap().unwrap(), Target::TagMutability(repo("app")));
        assert!(matches!(parse("repositories/Bad/settings"), Some(Err(ApiError::NameInvalid(_)))));
        assert!(parse("repositories/settings").is_none());
        assert!(parse("repositories/app/policy").is_none());
    }
}
