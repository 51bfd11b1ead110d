//! The admin API's repository creation templates and ECR's `CreateRepository`, each allowed
//! by its ECR action:
//!
//! | endpoint | action, resource |
//! |---|---|
//! | `POST /api/v1/repositories` (ECR `CreateRepository` body) | `ecr:CreateRepository` on the repository (+ `ecr:TagResource` with `tags`) |
//! | `GET /api/v1/templates` | `ecr:DescribeRepositoryCreationTemplates` on the registry |
//! | `POST /api/v1/templates` | `ecr:CreateRepositoryCreationTemplate` on the registry |
//! | `GET /api/v1/templates/<prefix>` | `ecr:DescribeRepositoryCreationTemplates` on the registry |
//! | `PUT /api/v1/templates/<prefix>` | `ecr:UpdateRepositoryCreationTemplate` on the registry |
//! | `DELETE /api/v1/templates/<prefix>` | `ecr:DeleteRepositoryCreationTemplate` on the registry |
//!
//! Bodies and answers have ECR's shapes (`repositoryCreationTemplate`, `repository`).

use axum::Json;
use axum::response::{IntoResponse, Response};
use berth_storage::metadata::Origin;
use hyper::{Method, StatusCode};

use super::admin::allow;
use super::webhooks::Call;
use crate::error::{ApiError, ApiResult};
use crate::service::templates::{CreateRepositoryInput, TemplateInput};

#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Templates,
    /// The prefix as written in the path (`ROOT`, `prod/team`).
    Template(String),
}

/// The path after `/api/v1/`, split at `/`.
pub fn parse(segs: &[&str]) -> Option<Target> {
    match segs {
        ["templates"] => Some(Target::Templates),
        ["templates", prefix @ ..] if !prefix.is_empty() => Some(Target::Template(prefix.join("/"))),
        _ => None,
    }
}

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::Invalid(format!("request body: {e}")))
}

/// ECR's answer to one template: `{"repositoryCreationTemplate": {...}}`.
fn template<T: serde::Serialize>(status: StatusCode, t: T) -> ApiResult<Response> {
    Ok((status, Json(serde_json::json!({ "repositoryCreationTemplate": t }))).into_response())
}

pub async fn handle(call: Call<'_>, method: &Method, target: Target) -> ApiResult<Response> {
    let reg = call.reg;
    let registry_arn = reg.auth.arns.registry();
    let allow = |action: &'static str| allow(reg, call.caller, action, registry_arn.clone());
    match (method, target) {
        (&Method::GET, Target::Templates) => {
            allow("ecr:DescribeRepositoryCreationTemplates").await?;
            let templates = reg.templates().await?;
            Ok(Json(serde_json::json!({ "repositoryCreationTemplates": templates })).into_response())
        }
        (&Method::POST, Target::Templates) => {
            let input: TemplateInput = body(call.body)?;
            allow("ecr:CreateRepositoryCreationTemplate").await?;
            template(StatusCode::CREATED, reg.create_template(&input).await?)
        }
        (&Method::GET, Target::Template(prefix)) => {
            allow("ecr:DescribeRepositoryCreationTemplates").await?;
            template(StatusCode::OK, reg.template(&prefix).await?)
        }
        (&Method::PUT, Target::Template(prefix)) => {
            let input: TemplateInput = body(call.body)?;
            allow("ecr:UpdateRepositoryCreationTemplate").await?;
            template(StatusCode::OK, reg.update_template(&prefix, &input).await?)
        }
        (&Method::DELETE, Target::Template(prefix)) => {
            allow("ecr:DeleteRepositoryCreationTemplate").await?;
            template(StatusCode::OK, reg.delete_template(&prefix).await?)
        }
        (method, _) => Err(ApiError::Unsupported(format!("{method} is not a method of /api/v1/{}", call.path))),
    }
}

/// `POST /api/v1/repositories`: ECR's `CreateRepository`.
pub async fn create_repository(call: Call<'_>, origin: &Origin) -> ApiResult<Response> {
    let reg = call.reg;
    let input: CreateRepositoryInput = body(call.body)?;
    let arn = reg.auth.arns.repository(&input.repository_name);
    allow(reg, call.caller, "ecr:CreateRepository", arn.clone()).await?;
    if input.tags.as_ref().is_some_and(|t| !t.is_empty()) {
        allow(reg, call.caller, "ecr:TagResource", arn).await?;
    }
    let repository = reg.create_repository(&input, origin).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "repository": repository }))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_template_paths() {
        assert_eq!(parse(&["templates"]), Some(Target::Templates));
        assert_eq!(parse(&["templates", "ROOT"]), Some(Target::Template("ROOT".into())));
        assert_eq!(parse(&["templates", "prod", "team"]), Some(Target::Template("prod/team".into())));
        assert_eq!(parse(&["usage"]), None);
    }
}
