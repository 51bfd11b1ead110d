//! The admin API's usage and quota endpoints, each allowed by a `berth:` action (the
//! bootstrap administrator's `"Action": "*"` covers them):
//!
//! | endpoint | action, resource |
//! |---|---|
//! | `GET /api/v1/usage[?last=<name>&n=<count>]` | `berth:GetUsage` on the registry |
//! | `GET /api/v1/usage/<repository>` | `berth:GetUsage` on the repository |
//! | `GET /api/v1/quotas` | `berth:ListQuotas` on the registry |
//! | `PUT`, `DELETE /api/v1/quotas/<scope>` (`team-a/app`, `team-a/*`, `*`) | `berth:PutQuota`, `berth:DeleteQuota` on the registry |

use axum::Json;
use axum::response::{IntoResponse, Response};
use berth_oci::RepoName;
use berth_storage::metadata::QuotaScope;
use hyper::{Method, StatusCode};
use serde::Deserialize;

use super::admin::allow;
use super::webhooks::Call;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Usage,
    RepositoryUsage(RepoName),
    Quotas,
    Quota(QuotaScope),
}

/// The path after `/api/v1/`, split at `/`; `Err` for a usage or quota path whose name does
/// not parse.
pub fn parse(segs: &[&str]) -> Option<ApiResult<Target>> {
    Some(match segs {
        ["usage"] => Ok(Target::Usage),
        ["usage", name @ ..] => name
            .join("/")
            .parse()
            .map(Target::RepositoryUsage)
            .map_err(|e: berth_oci::name::NameError| ApiError::NameInvalid(e.to_string())),
        ["quotas"] => Ok(Target::Quotas),
        ["quotas", scope @ ..] => scope.join("/").parse().map(Target::Quota).map_err(ApiError::Invalid),
        _ => return None,
    })
}

/// `PUT /api/v1/quotas/<scope>`: a limit left out (or `null`) is no limit on that dimension.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaBody {
    #[serde(default, with = "crate::config::quota_size")]
    max_bytes: Option<u64>,
    #[serde(default)]
    max_images: Option<u64>,
}

fn ok<T: serde::Serialize>(status: StatusCode, value: T) -> ApiResult<Response> {
    Ok((status, Json(value)).into_response())
}

pub async fn handle(call: Call<'_>, method: &Method, target: Target) -> ApiResult<Response> {
    let reg = call.reg;
    let registry_arn = reg.auth.arns.registry();
    let allow = |action: &'static str, resource: String| allow(reg, call.caller, action, resource);
    match (method, target) {
        (&Method::GET, Target::Usage) => {
            allow("berth:GetUsage", registry_arn).await?;
            let last = call.query.iter().find(|(k, _)| k == "last").map(|(_, v)| v.clone());
            let n = match call.query.iter().find(|(k, _)| k == "n") {
                Some((_, v)) => {
                    v.parse().map_err(|_| ApiError::Invalid(format!("n={v:?}: give a number of repositories")))?
                }
                None => 100,
            };
            ok(StatusCode::OK, reg.usage_report(last, n).await?)
        }
        (&Method::GET, Target::RepositoryUsage(repo)) => {
            allow("berth:GetUsage", reg.auth.arns.repository(repo.as_str())).await?;
            ok(StatusCode::OK, reg.repository_usage(&repo).await?)
        }
        (&Method::GET, Target::Quotas) => {
            allow("berth:ListQuotas", registry_arn).await?;
            ok(StatusCode::OK, reg.quota_views().await?)
        }
        (&Method::PUT, Target::Quota(scope)) => {
            let body: QuotaBody =
                serde_json::from_slice(call.body).map_err(|e| ApiError::Invalid(format!("request body: {e}")))?;
            allow("berth:PutQuota", registry_arn).await?;
            let (created, view) = reg.put_quota(&scope, body.max_bytes, body.max_images).await?;
            ok(if created { StatusCode::CREATED } else { StatusCode::OK }, view)
        }
        (&Method::DELETE, Target::Quota(scope)) => {
            allow("berth:DeleteQuota", registry_arn).await?;
            reg.delete_quota(&scope).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (method, _) => Err(ApiError::Unsupported(format!("{method} is not a method of /api/v1/{}", call.path))),
    }
}
