//! The HTTP edge: the router, middleware, request parsing and response rendering. The only
//! module that knows axum and HTTP types.
//!
//! One catch-all handler serves `/v2/...`: [`route::Route::parse`] turns the path into a
//! route (parsed once, in the middleware), and [`dispatch`] matches route and method.

mod admin;
pub(crate) mod auth;
mod blobs;
mod drain;
pub mod ecr;
pub mod error;
pub mod headers;
mod health;
mod images;
mod lifecycle;
mod listing;
mod manifests;
mod metrics;
pub(crate) mod middleware;
mod pull_through;
pub mod ranges;
mod replication;
mod repository_settings;
pub mod route;
mod templates;
mod token;
mod uploads;
mod usage;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use berth_storage::ByteStream;
use berth_storage::metadata::Origin;
use futures::TryStreamExt;
use hyper::{HeaderMap, Method, StatusCode};

use crate::error::ApiError;
use crate::service::Registry;
use route::Route;

/// The registry's HTTP application.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/token", get(token::token).post(token::token))
        .route("/token/jwks.json", get(token::jwks))
        .route("/.well-known/jwks.json", get(token::jwks))
        .route("/api/v1/login-token", get(token::login_token).post(token::login_token))
        .route("/api/v1/{*path}", axum::routing::any(admin::admin))
        .route("/", axum::routing::post(ecr::handle))
        .route("/_ecr/download/{*layer}", get(ecr::download))
        .fallback(dispatch)
        .layer(axum::middleware::from_fn_with_state(registry.clone(), auth::authorize))
        .layer(axum::middleware::from_fn_with_state(registry.clone(), middleware::observe))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(middleware::panic_response))
        .with_state(registry)
}

/// Everything a handler may need from the request, besides the route.
pub(crate) struct Req {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Vec<(String, String)>,
    /// Who is calling, when authentication is on (left by `auth::authorize`).
    pub caller: Option<crate::auth::Caller>,
    /// Who and what request, for the events a change records.
    pub origin: Origin,
    /// The connection's zero-copy jobs, on plain HTTP (set by the server).
    pub zero_copy: Option<crate::zerocopy::Jobs>,
}

impl Req {
    /// The first value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of query parameter `key`, in order.
    pub fn params<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.query.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: impl hyper::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A request body as a stream of bytes for the storage layer.
pub(crate) fn body_stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map_err(std::io::Error::other))
}

/// The catch-all handler of `/v2/...`.
async fn dispatch(State(reg): State<Arc<Registry>>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let axum::http::request::Parts { method, uri, headers, mut extensions, .. } = parts;
    let Some(ParsedRoute(route)) = extensions.remove::<ParsedRoute>() else {
        return ApiError::RouteUnknown.into_response();
    };
    let route = match route {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let query = uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let caller = extensions.remove::<crate::auth::Caller>();
    let origin = event_origin(
        &method,
        &headers,
        caller.as_ref(),
        extensions.get::<middleware::RequestId>(),
        extensions.get::<middleware::ClientAddr>(),
        extensions.get::<middleware::Secure>(),
    );
    let zero_copy = extensions.remove::<crate::zerocopy::Jobs>();
    let req = Req { method, headers, query, caller, origin, zero_copy };
    let result = match (&req.method, route) {
        (&Method::GET | &Method::HEAD, Route::Base) => Ok(base()),
        (&Method::GET, Route::Catalog) => listing::catalog(&reg, &req).await,
        (&Method::GET, Route::Tags { name }) => listing::tags(&reg, &name, &req).await,
        (&Method::GET, Route::Referrers { name, digest }) => listing::referrers(&reg, &name, &digest, &req).await,
        (&Method::GET | &Method::HEAD, Route::Manifest { name, reference }) => {
            manifests::get(&reg, &name, &reference, &req).await
        }
        (&Method::PUT, Route::Manifest { name, reference }) => {
            manifests::put(&reg, &name, &reference, &req, body).await
        }
        (&Method::DELETE, Route::Manifest { name, reference }) => {
            manifests::delete(&reg, &name, &reference, &req).await
        }
        (&Method::GET | &Method::HEAD, Route::Blob { name, digest }) => blobs::get(&reg, &name, &digest, &req).await,
        (&Method::DELETE, Route::Blob { name, digest }) => blobs::delete(&reg, &name, &digest).await,
        (&Method::POST, Route::StartUpload { name }) => uploads::start(&reg, &name, &req, body).await,
        (&Method::GET, Route::Upload { name, id }) => uploads::status(&reg, &name, &id).await,
        (&Method::PATCH, Route::Upload { name, id }) => uploads::patch(&reg, &name, &id, &req, body).await,
        (&Method::PUT, Route::Upload { name, id }) => uploads::put(&reg, &name, &id, &req, body).await,
        (&Method::DELETE, Route::Upload { name, id }) => uploads::cancel(&reg, &name, &id).await,
        (method, route) => {
            Err(ApiError::Unsupported(format!("{method} is not a method of the {} endpoint", route.label())))
        }
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Who made a change and through which request, as its events record it.
pub(crate) fn event_origin(
    method: &Method,
    headers: &HeaderMap,
    caller: Option<&crate::auth::Caller>,
    request_id: Option<&middleware::RequestId>,
    client: Option<&middleware::ClientAddr>,
    secure: Option<&middleware::Secure>,
) -> Origin {
    let header = |name: hyper::header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    Origin {
        actor: caller.and_then(|c| match &c.principal {
            berth_auth::policy::Principal::User { name } => Some(name.clone()),
            berth_auth::policy::Principal::Anonymous => None,
        }),
        request_id: request_id.map(|r| r.0.clone()),
        addr: client.map(ToString::to_string),
        method: Some(method.to_string()),
        host: header(hyper::header::HOST),
        scheme: Some(if secure.is_some_and(|s| s.0) { "https" } else { "http" }.to_owned()),
        user_agent: header(hyper::header::USER_AGENT),
    }
}

/// The connection's peer address as a request extension (set by the server).
pub fn middleware_peer(addr: std::net::SocketAddr) -> middleware::PeerAddr {
    middleware::PeerAddr(addr)
}

/// Whether the connection is TLS, as a request extension (set by the server).
pub fn middleware_secure(tls: bool) -> middleware::Secure {
    middleware::Secure(tls)
}

/// The route of a request, parsed once by the middleware.
#[derive(Clone)]
pub(crate) struct ParsedRoute(pub Result<Route, ApiError>);

/// `GET /v2/`: the API version check.
fn base() -> Response {
    let mut r = (StatusCode::OK, [(hyper::header::CONTENT_TYPE, "application/json")], "{}").into_response();
    r.headers_mut().insert(headers::DOCKER_API_VERSION, hyper::header::HeaderValue::from_static("registry/2.0"));
    r
}
