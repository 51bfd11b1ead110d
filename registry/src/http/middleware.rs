//! Request id, the route parsed once, and one structured log line per request.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::header::{CONTENT_LENGTH, HeaderValue, TRANSFER_ENCODING};
use tracing::Instrument;

use super::ParsedRoute;
use super::error::LoggedError;
use super::headers::REQUEST_ID;
use super::route::Route;
use crate::error::ApiError;

/// The client's address, inserted by the server for each connection.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Whether the connection is TLS (inserted by the server for each connection): the
/// `aws:SecureTransport` condition key, and the scheme of the token realm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secure(pub bool);

/// The request's id, as logged and returned in `X-Request-Id` (a request extension).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A request id from the client is kept when it is short and printable; else one is made.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

fn header_u64(h: &hyper::HeaderMap, name: hyper::header::HeaderName) -> Option<u64> {
    h.get(name)?.to_str().ok()?.parse().ok()
}

pub async fn observe(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&req);
    let method = req.method().clone();
    let parsed = Route::parse(req.uri().path());
    let (route, access) = match &parsed {
        Some(Ok(r)) => (r.label(), r.access(&method).scope().map(|s| s.to_string())),
        Some(Err(_)) => ("invalid", None),
        None => match req.uri().path() {
            "/healthz" => ("healthz", None),
            "/readyz" => ("readyz", None),
            "/metrics" => ("metrics", None),
            "/token" => ("token", None),
            "/token/jwks.json" | "/.well-known/jwks.json" => ("jwks", None),
            "/api/v1/login-token" => ("login_token", None),
            p if p.starts_with("/api/v1/") => ("admin", None),
            _ => ("unknown", None),
        },
    };
    let client = req.extensions().get::<PeerAddr>().map(|p| p.0.to_string()).unwrap_or_default();
    let bytes_in = header_u64(req.headers(), CONTENT_LENGTH);
    if let Some(p) = parsed {
        req.extensions_mut().insert(ParsedRoute(p));
    }
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request.id = %id, http.method = %method, http.route = route);
    let req = req.map(super::drain::DrainOnDrop::wrap);
    let mut response = match transfer_codings(req.headers()) {
        Ok(()) => next.run(req).instrument(span.clone()).await,
        Err(e) => e.into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    let status = response.status().as_u16();
    let bytes_out = header_u64(response.headers(), CONTENT_LENGTH);
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let error = response.extensions().get::<LoggedError>().map(|e| e.0.as_str());
    let _entered = span.enter();
    if status >= 500 {
        tracing::error!(http.status = status, client.addr = %client, auth.scope = access, bytes.r#in = bytes_in,
            bytes.out = bytes_out, duration_ms, error, "request failed");
    } else {
        tracing::info!(http.status = status, client.addr = %client, auth.scope = access, bytes.r#in = bytes_in,
            bytes.out = bytes_out, duration_ms, error, "request");
    }
    response
}

/// Refuses a body in any transfer coding but a single `chunked`. hyper decodes `chunked`
/// when it is the last coding and leaves the others in the header for the application
/// (RFC 9112 6.1: a server that does not understand a coding answers 501); reading such a
/// body as plain bytes would store the still-encoded data.
fn transfer_codings(headers: &hyper::HeaderMap) -> Result<(), ApiError> {
    let mut chunked = 0;
    for value in headers.get_all(TRANSFER_ENCODING) {
        let text = value.to_str().map_err(|_| ApiError::TransferCodingUnsupported("(not text)".into()))?;
        for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let name = coding.split(';').next().unwrap_or(coding).trim();
            if name.eq_ignore_ascii_case("chunked") && chunked == 0 {
                chunked += 1;
            } else {
                return Err(ApiError::TransferCodingUnsupported(name.chars().take(64).collect()));
            }
        }
    }
    Ok(())
}

/// A handler panicked: answer 500 in the spec's format (the panic is logged by tracing).
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!(panic = %what, "handler panicked");
    ApiError::Internal(format!("panic: {what}")).into_response()
}
