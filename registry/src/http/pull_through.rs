//! The admin API's pull-through cache rules, each allowed by its ECR action on the registry:
//!
//! | endpoint | action |
//! |---|---|
//! | `GET /api/v1/pull-through-rules` | `ecr:DescribePullThroughCacheRules` |
//! | `POST /api/v1/pull-through-rules` | `ecr:CreatePullThroughCacheRule` |
//! | `GET /api/v1/pull-through-rules/<prefix>` | `ecr:DescribePullThroughCacheRules` |
//! | `PUT /api/v1/pull-through-rules/<prefix>` | `ecr:UpdatePullThroughCacheRule` |
//! | `DELETE /api/v1/pull-through-rules/<prefix>` | `ecr:DeletePullThroughCacheRule` |
//! | `POST /api/v1/pull-through-rules/<prefix>/validate` | `ecr:ValidatePullThroughCacheRule` |
//!
//! Bodies are [`RuleInput`]; answers `{"rule": RuleView}` (never the credentials).

use axum::Json;
use axum::response::{IntoResponse, Response};
use hyper::{Method, StatusCode};

use super::admin::allow;
use super::webhooks::Call;
use crate::error::{ApiError, ApiResult};
use crate::service::pull_through::{Rule, RuleInput};

#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Rules,
    /// The prefix as written in the path (`ROOT`, `hub`, `team/cache`).
    Rule(String),
    /// `POST …/<prefix>/validate`.
    Validate(String),
}

/// The path after `/api/v1/`, split at `/`.
pub fn parse(segs: &[&str]) -> Option<Target> {
    match segs {
        ["pull-through-rules"] => Some(Target::Rules),
        ["pull-through-rules", prefix @ .., "validate"] if !prefix.is_empty() => {
            Some(Target::Validate(prefix.join("/")))
        }
        ["pull-through-rules", prefix @ ..] if !prefix.is_empty() => Some(Target::Rule(prefix.join("/"))),
        _ => None,
    }
}

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::Invalid(format!("request body: {e}")))
}

fn rule(status: StatusCode, r: &Rule) -> ApiResult<Response> {
    Ok((status, Json(serde_json::json!({ "rule": r.view() }))).into_response())
}

pub async fn handle(call: Call<'_>, method: &Method, target: Target) -> ApiResult<Response> {
    let reg = call.reg;
    let registry_arn = reg.auth.arns.registry();
    let allow = |action: &'static str| allow(reg, call.caller, action, registry_arn.clone());
    match (method, target) {
        (&Method::GET, Target::Rules) => {
            allow("ecr:DescribePullThroughCacheRules").await?;
            let rules: Vec<_> = reg.pull_through_rules().await?.iter().map(Rule::view).collect();
            Ok(Json(serde_json::json!({ "rules": rules })).into_response())
        }
        (&Method::POST, Target::Rules) => {
            let input: RuleInput = body(call.body)?;
            allow("ecr:CreatePullThroughCacheRule").await?;
            rule(StatusCode::CREATED, &reg.create_pull_through_rule(&input).await?)
        }
        (&Method::GET, Target::Rule(prefix)) => {
            allow("ecr:DescribePullThroughCacheRules").await?;
            rule(StatusCode::OK, &reg.pull_through_rule(&prefix).await?)
        }
        (&Method::PUT, Target::Rule(prefix)) => {
            let input: RuleInput = body(call.body)?;
            allow("ecr:UpdatePullThroughCacheRule").await?;
            rule(StatusCode::OK, &reg.update_pull_through_rule(&prefix, &input).await?)
        }
        (&Method::DELETE, Target::Rule(prefix)) => {
            allow("ecr:DeletePullThroughCacheRule").await?;
            rule(StatusCode::OK, &reg.delete_pull_through_rule(&prefix).await?)
        }
        (&Method::POST, Target::Validate(prefix)) => {
            allow("ecr:ValidatePullThroughCacheRule").await?;
            let (r, outcome) = reg.validate_pull_through_rule(&prefix).await?;
            let failure = outcome.err();
            Ok(Json(serde_json::json!({ "rule": r.view(), "valid": failure.is_none(), "failure": failure }))
                .into_response())
        }
        (method, _) => Err(ApiError::Unsupported(format!("{method} is not a method of /api/v1/{}", call.path))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rule_paths() {
        assert_eq!(parse(&["pull-through-rules"]), Some(Target::Rules));
        assert_eq!(parse(&["pull-through-rules", "ROOT"]), Some(Target::Rule("ROOT".into())));
        assert_eq!(parse(&["pull-through-rules", "a", "b"]), Some(Target::Rule("a/b".into())));
        assert_eq!(parse(&["pull-through-rules", "hub", "validate"]), Some(Target::Validate("hub".into())));
        assert_eq!(parse(&["pull-through-rules", "validate"]), Some(Target::Rule("validate".into())));
        assert_eq!(parse(&["templates"]), None);
    }
}
