//! The admin API's replication configuration and statuses (README "Replication"), each
//! allowed by its ECR action:
//!
//! | endpoint | action, resource |
//! |---|---|
//! | `GET /api/v1/replication` | `ecr:DescribeRegistry` on the registry |
//! | `PUT /api/v1/replication` | `ecr:PutReplicationConfiguration` on the registry |
//! | `GET /api/v1/replication/status?repository=<name>&reference=<tag or digest>` | `ecr:DescribeImageReplicationStatus` on the repository |
//!
//! Credentials are accepted in a put and never shown. The copies themselves are deliveries
//! (`/api/v1/deliveries?subscription=replication.<destination>`): listed, replayed and purged
//! there like a webhook's.

use axum::Json;
use axum::response::{IntoResponse, Response};
use berth_oci::{Reference, RepoName};
use hyper::Method;

use super::admin::allow;
use super::webhooks::Call;
use crate::error::{ApiError, ApiResult};
use crate::service::replication::ReplicationConfig;

#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Configuration,
    Status,
}

/// The path after `/api/v1/`, split at `/`.
pub fn parse(segs: &[&str]) -> Option<Target> {
    match segs {
        ["replication"] => Some(Target::Configuration),
        ["replication", "status"] => Some(Target::Status),
        _ => None,
    }
}

pub async fn handle(call: Call<'_>, method: &Method, target: Target) -> ApiResult<Response> {
    let reg = call.reg;
    match (method, target) {
        (&Method::GET, Target::Configuration) => {
            allow(reg, call.caller, "ecr:DescribeRegistry", reg.auth.arns.registry()).await?;
            Ok(Json(reg.replication().await?).into_response())
        }
        (&Method::PUT, Target::Configuration) => {
            let spec: ReplicationConfig =
                serde_json::from_slice(call.body).map_err(|e| ApiError::Invalid(format!("request body: {e}")))?;
            allow(reg, call.caller, "ecr:PutReplicationConfiguration", reg.auth.arns.registry()).await?;
            Ok(Json(reg.put_replication(&spec).await?).into_response())
        }
        (&Method::GET, Target::Status) => {
            let get = |k: &str| call.query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            let name = get("repository").ok_or_else(|| ApiError::Invalid("repository: required".into()))?;
            let repo: RepoName = name
                .parse()
                .map_err(|e: berth_oci::name::NameError| ApiError::NameInvalid(format!("repository {name:?}: {e}")))?;
            let reference = get("reference").ok_or_else(|| ApiError::Invalid("reference: required".into()))?;
            let reference: Reference = reference
                .parse()
                .map_err(|e| ApiError::Invalid(format!("reference {reference:?}: a tag or a digest ({e})")))?;
            for (k, _) in call.query {
                if !matches!(k.as_str(), "repository" | "reference") {
                    return Err(ApiError::Invalid(format!("unknown parameter {k:?}")));
                }
            }
            allow(reg, call.caller, "ecr:DescribeImageReplicationStatus", reg.auth.arns.repository(repo.as_str()))
                .await?;
            Ok(Json(reg.image_replication_status(&repo, &reference).await?).into_response())
        }
        (method, _) => Err(ApiError::Unsupported(format!("{method} is not a method of /api/v1/{}", call.path))),
    }
}
