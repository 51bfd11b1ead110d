//! The admin API's image details, in the shape of ECR's `DescribeImages` answer
//! ([`crate::service::images::ImageDetails`]), allowed by its ECR action:
//!
//! | endpoint | action, resource |
//! |---|---|
//! | `GET /api/v1/repositories/<name>/images[?tagStatus=TAGGED\|UNTAGGED\|ANY][&maxResults=<1..1000>][&nextToken=<token>]` | `ecr:DescribeImages` on the repository |
//!
//! Times are epoch seconds as JSON numbers (how ECR's SDKs read timestamps in its awsJson
//! protocol); `lastRecordedPullTime` is absent for an image never pulled, `imageTags` for an
//! untagged one. `subjectManifestDigest` is ECR's, for a referrer; `children` (an index's
//! manifests) is Berth's.

use axum::Json;
use axum::response::{IntoResponse, Response};
use berth_auth::policy::actions;
use berth_oci::RepoName;
use hyper::{Method, StatusCode};

use super::admin::allow;
use super::webhooks::Call;
use crate::error::{ApiError, ApiResult};
use crate::service::images::{DescribeImages, MAX_RESULTS};

fn query<'q>(call: &Call<'q>, name: &str) -> Option<&'q str> {
    call.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `GET /api/v1/repositories/<name>/images`.
pub async fn handle(call: Call<'_>, method: &Method, repo: RepoName) -> ApiResult<Response> {
    let reg = call.reg;
    if method != Method::GET {
        return Err(ApiError::Unsupported(format!("{method} is not a method of /api/v1/{} (GET)", call.path)));
    }
    let tag_status = query(&call, "tagStatus").map(str::parse).transpose().map_err(ApiError::Invalid)?;
    let max_results = query(&call, "maxResults")
        .map(|v| {
            v.parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_RESULTS).contains(n))
                .ok_or_else(|| ApiError::Invalid(format!("maxResults={v:?}: give a number from 1 to {MAX_RESULTS}")))
        })
        .transpose()?;
    let ask = DescribeImages {
        tag_status: tag_status.unwrap_or_default(),
        max_results,
        next_token: query(&call, "nextToken").map(str::to_owned),
    };
    allow(reg, call.caller, actions::DESCRIBE_IMAGES, reg.auth.arns.repository(repo.as_str())).await?;
    Ok((StatusCode::OK, Json(reg.describe_images(&repo, &ask).await?)).into_response())
}
