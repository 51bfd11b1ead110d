//! ECR's errors as the AWS SDKs parse them in the awsJson 1.1 protocol: a status and a body
//! `{"__type": "<ExceptionName>", "message": "..."}`; botocore raises the exception class the
//! `__type` names (`client.exceptions.RepositoryNotFoundException`). One table,
//! [`EcrError::from_api`], maps the service's [`ApiError`] to ECR's names; an operation whose
//! errors mean something more specific (an unknown manifest in `BatchDeleteImage` is a
//! per-image failure) says so where it calls the service.

use axum::response::{IntoResponse, Response};
use hyper::StatusCode;
use hyper::header::{CONTENT_TYPE, HeaderValue};

use crate::error::{ApiError, Override};

/// The media type of every awsJson 1.1 answer.
pub const JSON_1_1: &str = "application/x-amz-json-1.1";

/// One ECR error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrError {
    pub status: StatusCode,
    /// The exception's name as botocore's model has it (`RepositoryNotFoundException`).
    pub kind: &'static str,
    pub message: String,
}

pub type EcrResult<T = Response> = Result<T, EcrError>;

impl EcrError {
    /// A client error (400) of kind `kind`.
    pub fn new(kind: &'static str, message: impl Into<String>) -> EcrError {
        EcrError { status: StatusCode::BAD_REQUEST, kind, message: message.into() }
    }

    /// `InvalidParameterException`: the request names something wrongly.
    pub fn invalid(message: impl Into<String>) -> EcrError {
        EcrError::new("InvalidParameterException", message)
    }

    /// `AccessDeniedException` (403): the policies do not allow `action` on `resource`.
    pub fn denied(action: &str, resource: &str) -> EcrError {
        EcrError {
            status: StatusCode::FORBIDDEN,
            kind: "AccessDeniedException",
            message: format!("not authorized to perform {action} on resource {resource}"),
        }
    }

    /// `RepositoryNotFoundException`, in ECR's sentence.
    pub fn repository_not_found(repo: &str, account: &str) -> EcrError {
        EcrError::new(
            "RepositoryNotFoundException",
            format!("The repository with name '{repo}' does not exist in the registry with id '{account}'"),
        )
    }

    /// An operation of ECR's model that Berth does not serve.
    pub fn unsupported(operation: &str, why: &str) -> EcrError {
        EcrError::new("UnsupportedOperationException", format!("Berth does not serve ECR's {operation}: {why}"))
    }

    /// The service's error as ECR names it. `account` is the registry id for messages.
    pub fn from_api(e: ApiError, account: &str) -> EcrError {
        let message = e.to_string();
        let (status, kind) = match &e {
            ApiError::NameUnknown => return EcrError::repository_not_found("?", account).with_message(message),
            ApiError::NotCreatedOnPush(_) => (StatusCode::BAD_REQUEST, "RepositoryNotFoundException"),
            ApiError::ManifestUnknown => (StatusCode::BAD_REQUEST, "ImageNotFoundException"),
            ApiError::BlobUnknown => (StatusCode::BAD_REQUEST, "LayersNotFoundException"),
            ApiError::BlobUploadUnknown => (StatusCode::BAD_REQUEST, "UploadNotFoundException"),
            ApiError::BlobUploadInvalid(_) => (StatusCode::BAD_REQUEST, "InvalidLayerException"),
            ApiError::DigestInvalid(_) => (StatusCode::BAD_REQUEST, "InvalidLayerException"),
            ApiError::ManifestBlobUnknown(_) => (StatusCode::BAD_REQUEST, "LayersNotFoundException"),
            ApiError::ManifestInvalid(_) | ApiError::ManifestTooLarge { .. } => {
                (StatusCode::BAD_REQUEST, "InvalidParameterException")
            }
            ApiError::TagImmutable { .. } => (StatusCode::BAD_REQUEST, "ImageTagAlreadyExistsException"),
            ApiError::RepositoryNotEmpty { .. } => (StatusCode::BAD_REQUEST, "RepositoryNotEmptyException"),
            ApiError::ChunkOutOfOrder { .. } | ApiError::RangeNotSatisfiable { .. } => {
                (StatusCode::BAD_REQUEST, "InvalidLayerPartException")
            }
            ApiError::QuotaExceeded(_) | ApiError::LimitReached(_) => {
                (StatusCode::BAD_REQUEST, "LimitExceededException")
            }
            ApiError::TooManyRequests { .. } => (StatusCode::BAD_REQUEST, "ThrottlingException"),
            ApiError::Unauthorized { .. } => (StatusCode::FORBIDDEN, "UnrecognizedClientException"),
            ApiError::Denied { .. } => (StatusCode::FORBIDDEN, "AccessDeniedException"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ServerException"),
            ApiError::Upstream(_) => (StatusCode::BAD_GATEWAY, "ServerException"),
            ApiError::Internal(_) => {
                tracing::error!(error = %message, "internal error in an ECR call");
                return EcrError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    kind: "ServerException",
                    message: "internal error; the registry's log has the detail".into(),
                };
            }
            ApiError::Unsupported(_) | ApiError::TransferCodingUnsupported(_) | ApiError::RouteUnknown => {
                (StatusCode::BAD_REQUEST, "UnsupportedOperationException")
            }
            ApiError::NotFound(_) => (StatusCode::BAD_REQUEST, "ValidationException"),
            ApiError::Conflict(_) => (StatusCode::BAD_REQUEST, "ValidationException"),
            ApiError::NameInvalid(_)
            | ApiError::SizeInvalid(_)
            | ApiError::TagInvalid(_)
            | ApiError::PaginationInvalid(_)
            | ApiError::Invalid(_)
            | ApiError::ImagesUnresolved(_) => (StatusCode::BAD_REQUEST, "InvalidParameterException"),
        };
        EcrError { status, kind, message: with_hint(message, e.hint()) }
    }

    fn with_message(mut self, message: String) -> EcrError {
        self.message = message;
        self
    }
}

/// `message` with the switch that overrides the refusal, as an ECR request sets it.
fn with_hint(message: String, hint: Option<Override>) -> String {
    match hint {
        None => message,
        Some(Override::Force) => format!("{message} (set force to true)"),
        Some(Override::KeepForeign) => message,
    }
}

impl IntoResponse for EcrError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "__type": self.kind, "message": self.message });
        let mut r = (self.status, body.to_string()).into_response();
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(JSON_1_1));
        // botocore also reads the kind from this header when a proxy rewrites the body.
        if let Ok(v) = HeaderValue::from_str(self.kind) {
            r.headers_mut().insert("x-amzn-errortype", v);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_error_is_the_body_botocore_parses() {
        let e = EcrError::repository_not_found("team/app", "123456789012");
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()[CONTENT_TYPE], JSON_1_1);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["__type"], "RepositoryNotFoundException");
        assert!(v["message"].as_str().unwrap().contains("'team/app'"));
    }

    #[test]
    fn the_services_errors_get_ecrs_names() {
        let tag = EcrError::from_api(
            ApiError::TagImmutable { repo: "a/b".parse().unwrap(), tag: "v1".parse().unwrap() },
            "1",
        );
        assert_eq!(tag.kind, "ImageTagAlreadyExistsException");
        assert_eq!(EcrError::from_api(ApiError::ManifestUnknown, "1").kind, "ImageNotFoundException");
        let internal = EcrError::from_api(ApiError::Internal("disk on fire".into()), "1");
        assert_eq!(internal.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!internal.message.contains("disk"), "the detail is logged, not sent");
    }
}
