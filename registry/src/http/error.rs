//! The one table from [`ApiError`] to error code and HTTP status, and the JSON body. Codes
//! are the OCI spec's, and for the admin API's own failures `INVALID_REQUEST`, `CONFLICT`
//! and `NOT_FOUND`, in the same body shape.

use axum::response::{IntoResponse, Response};
use berth_oci::ErrorCode;
use hyper::StatusCode;
use hyper::header::{CONTENT_RANGE, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};

use crate::error::{ApiError, Override};

/// The code and status of each error. Exhaustive: a new variant must be placed here.
pub fn code_and_status(e: &ApiError) -> (&'static str, StatusCode) {
    let (code, status) = match e {
        ApiError::Invalid(_) => return ("INVALID_REQUEST", StatusCode::BAD_REQUEST),
        ApiError::Conflict(_) | ApiError::RepositoryNotEmpty { .. } => return ("CONFLICT", StatusCode::CONFLICT),
        ApiError::NotFound(_) => return ("NOT_FOUND", StatusCode::NOT_FOUND),
        // Each image is listed with its own code; the status is the worst kind among them.
        ApiError::ImagesUnresolved(list) => {
            let status = if list.iter().any(|u| matches!(u.code, "NAME_UNKNOWN" | "MANIFEST_UNKNOWN")) {
                StatusCode::NOT_FOUND
            } else if list.iter().all(|u| u.code == "DENIED") {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_REQUEST
            };
            return ("IMAGES_UNRESOLVED", status);
        }
        ApiError::Unauthorized { .. } => (ErrorCode::Unauthorized, StatusCode::UNAUTHORIZED),
        ApiError::Denied { challenge: Some(_), .. } => (ErrorCode::Denied, StatusCode::UNAUTHORIZED),
        ApiError::Denied { challenge: None, .. } => (ErrorCode::Denied, StatusCode::FORBIDDEN),
        ApiError::QuotaExceeded(_) => (ErrorCode::Denied, StatusCode::FORBIDDEN),
        ApiError::TooManyRequests { .. } => (ErrorCode::TooManyRequests, StatusCode::TOO_MANY_REQUESTS),
        ApiError::LimitReached(_) => (ErrorCode::TooManyRequests, StatusCode::TOO_MANY_REQUESTS),
        ApiError::BlobUnknown => (ErrorCode::BlobUnknown, StatusCode::NOT_FOUND),
        ApiError::BlobUploadUnknown => (ErrorCode::BlobUploadUnknown, StatusCode::NOT_FOUND),
        ApiError::BlobUploadInvalid(_) => (ErrorCode::BlobUploadInvalid, StatusCode::BAD_REQUEST),
        ApiError::DigestInvalid(_) => (ErrorCode::DigestInvalid, StatusCode::BAD_REQUEST),
        ApiError::ManifestBlobUnknown(_) => (ErrorCode::ManifestBlobUnknown, StatusCode::BAD_REQUEST),
        ApiError::ManifestInvalid(_) => (ErrorCode::ManifestInvalid, StatusCode::BAD_REQUEST),
        ApiError::ManifestUnknown => (ErrorCode::ManifestUnknown, StatusCode::NOT_FOUND),
        ApiError::ManifestTooLarge { .. } => (ErrorCode::SizeInvalid, StatusCode::PAYLOAD_TOO_LARGE),
        ApiError::NameInvalid(_) => (ErrorCode::NameInvalid, StatusCode::BAD_REQUEST),
        ApiError::NameUnknown => (ErrorCode::NameUnknown, StatusCode::NOT_FOUND),
        ApiError::NotCreatedOnPush(_) => (ErrorCode::NameUnknown, StatusCode::NOT_FOUND),
        ApiError::SizeInvalid(_) => (ErrorCode::SizeInvalid, StatusCode::BAD_REQUEST),
        ApiError::TagInvalid(_) | ApiError::TagImmutable { .. } => (ErrorCode::TagInvalid, StatusCode::BAD_REQUEST),
        ApiError::RangeNotSatisfiable { .. } => (ErrorCode::RangeInvalid, StatusCode::RANGE_NOT_SATISFIABLE),
        ApiError::ChunkOutOfOrder { .. } => (ErrorCode::RangeInvalid, StatusCode::RANGE_NOT_SATISFIABLE),
        ApiError::PaginationInvalid(_) => (ErrorCode::PaginationNumberInvalid, StatusCode::BAD_REQUEST),
        ApiError::Unsupported(_) => (ErrorCode::Unsupported, StatusCode::METHOD_NOT_ALLOWED),
        ApiError::RouteUnknown => (ErrorCode::Unsupported, StatusCode::NOT_FOUND),
        ApiError::Unavailable(_) => (ErrorCode::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
        ApiError::Upstream(_) => (ErrorCode::Unavailable, StatusCode::BAD_GATEWAY),
        ApiError::TransferCodingUnsupported(_) => (ErrorCode::Unsupported, StatusCode::NOT_IMPLEMENTED),
        ApiError::Internal(_) => (ErrorCode::Unknown, StatusCode::INTERNAL_SERVER_ERROR),
    };
    (code.as_str(), status)
}

/// `message` with the switch that overrides the refusal, as an HTTP caller sets it.
fn with_hint(message: String, hint: Option<Override>) -> String {
    match hint {
        None => message,
        Some(Override::Force) => format!("{message} (query parameter force=true)"),
        Some(Override::KeepForeign) => format!("{message}; query parameter foreign=keep leaves it as it is"),
    }
}

/// What the middleware logs about a failed request (set as a response extension, so each
/// error is logged once, where the request is logged).
#[derive(Debug, Clone)]
pub struct LoggedError(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, status) = code_and_status(&self);
        // Internal details stay in the log; the client gets the code's generic message.
        let message = match &self {
            ApiError::Internal(_) => ErrorCode::Unknown.default_message().to_owned(),
            other => with_hint(other.to_string(), other.hint()),
        };
        let detail = match &self {
            ApiError::ManifestBlobUnknown(d) => serde_json::json!({ "digest": d.to_string() }),
            _ => serde_json::Value::Null,
        };
        let mut entry = serde_json::json!({ "code": code, "message": message });
        if !detail.is_null() {
            entry["detail"] = detail;
        }
        let entries = match &self {
            ApiError::ImagesUnresolved(list) => list
                .iter()
                .map(|u| {
                    serde_json::json!({ "code": u.code, "message": with_hint(u.message.clone(), u.hint()),
                        "detail": { "container": u.container, "image": u.image } })
                })
                .collect(),
            _ => vec![entry],
        };
        let body = serde_json::json!({ "errors": entries }).to_string();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match &self {
            ApiError::RangeNotSatisfiable { size } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(CONTENT_RANGE, v);
                }
            }
            ApiError::ChunkOutOfOrder { offset, location, upload_id } => {
                super::headers::upload_progress(headers, location, upload_id, *offset);
            }
            ApiError::Unauthorized { challenge: Some(c), .. } | ApiError::Denied { challenge: Some(c), .. } => {
                if let Ok(v) = HeaderValue::from_str(c) {
                    headers.insert(WWW_AUTHENTICATE, v);
                }
            }
            ApiError::TooManyRequests { retry_after } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            _ => {}
        }
        response.extensions_mut().insert(LoggedError(self.to_string()));
        response
    }
}
