//! `/healthz` (the process answers) and `/readyz` (its stores answer too).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use hyper::StatusCode;

use crate::service::Registry;

pub async fn healthz() -> Response {
    (StatusCode::OK, Json(serde_json::json!({ "status": "ok" }))).into_response()
}

pub async fn readyz(State(reg): State<Arc<Registry>>) -> Response {
    let storage = reg.blobs.check().await.err().map(|e| e.to_string());
    let metadata = reg.meta.ping().await.err().map(|e| e.to_string());
    let ready = storage.is_none() && metadata.is_none();
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "unavailable" },
        "storage": storage.unwrap_or_else(|| "ok".into()),
        "metadata": metadata.unwrap_or_else(|| "ok".into()),
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}
