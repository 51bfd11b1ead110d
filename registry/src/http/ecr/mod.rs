//! ECR's own API: AWS JSON 1.1 over `POST /` on the registry's port, so `aws ecr`, boto3 and
//! the AWS SDKs work against Berth with `--endpoint-url`. A request names its operation in
//! `X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.<Operation>` and carries its input as
//! JSON; the answer is JSON (`application/x-amz-json-1.1`) or an error the SDKs parse
//! ([`error::EcrError`]).
//!
//! A request goes through these steps, each refusing before the next costs anything:
//! 1. the operation from `X-Amz-Target` (unknown: `UnknownOperationException`);
//! 2. with authentication on, the Signature Version 4 `Authorization` header is read and its
//!    access key looked up, before the body ([`signature::precheck`]);
//! 3. the body is read up to the operation's limit ([`body_limit`]);
//! 4. the signature is checked over the body ([`signature::check`]): the caller;
//! 5. the operation's module parses the input, asks the IAM evaluator for the operation's
//!    ECR action on its resource ([`Ecr::allow`]), and calls the service.
//!
//! One module per operation group; each has `call(ecr, operation, body)`, which answers
//! `None` for an operation it does not serve. An operation of ECR's model that no module
//! serves answers `UnsupportedOperationException` (see [`model::OPERATIONS`]).

mod auth_token;
pub mod error;
mod images;
mod layers;
mod lifecycle;
pub mod model;
mod policies;
mod pull_through;
mod registry;
mod replication;
mod repositories;
mod signature;
mod tags;
mod wire;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use berth_oci::RepoName;
use berth_storage::metadata::Origin;
use hyper::header::HeaderValue;

use crate::auth::{Caller, Permit};
use crate::error::ApiError;
use crate::service::Registry;
pub use error::{EcrError, EcrResult};
pub(crate) use layers::{DOWNLOAD_PATH, download};

/// The `X-Amz-Target` prefix of every ECR operation.
pub const TARGET_PREFIX: &str = "AmazonEC2ContainerRegistry_V20150921.";

/// The largest body an operation's input may have: an `UploadLayerPart` carries up to
/// 20 MiB of layer (ECR's limit) as base64 in JSON; a `PutImage` a manifest of up to 4 MiB,
/// escaped in a JSON string (at most ~2×, and some headroom); everything else is small JSON
/// (a policy document is at most 30 KiB).
pub fn body_limit(operation: &str) -> usize {
    match operation {
        "UploadLayerPart" => 28 * 1024 * 1024,
        "PutImage" => 12 * 1024 * 1024,
        _ => 1024 * 1024,
    }
}

/// One ECR request being served: the registry, who calls, and where from.
pub(crate) struct Ecr<'a> {
    pub reg: &'a Registry,
    /// The operation's name (`DescribeRepositories`).
    pub operation: &'a str,
    /// The signed-in caller; `None` with authentication off (then everything is allowed).
    pub caller: Option<Caller>,
    /// Who and which request, for the events a change records.
    pub origin: Origin,
    /// `http(s)://<Host>` as the client reached Berth: `proxyEndpoint`, download URLs.
    pub base_url: String,
}

impl Ecr<'_> {
    /// The registry id: the account of `auth.account`.
    pub fn account(&self) -> &str {
        &self.reg.auth.arns.account
    }

    /// Checks an input's optional `registryId`: this registry's account, or absent.
    pub fn registry_id(&self, given: Option<&str>) -> EcrResult<()> {
        match given {
            Some(id) if id != self.account() => Err(EcrError::invalid(format!(
                "registryId '{id}' is not this registry's; its id is '{}' (or leave registryId out)",
                self.account()
            ))),
            _ => Ok(()),
        }
    }

    /// The ARN of a repository of this registry.
    pub fn repository_arn(&self, repo: &str) -> String {
        self.reg.auth.arns.repository(repo)
    }

    /// Whether the caller may do `action` on `repo` (its repository policy and resource tags
    /// count), or with `None` on the registry. With authentication off, anything.
    pub async fn allow(&self, action: &str, repo: Option<&RepoName>) -> EcrResult<()> {
        let Some(caller) = &self.caller else { return Ok(()) };
        let auth = &self.reg.auth;
        let (permit, resource) = match repo {
            Some(r) => {
                (auth.decide(self.reg.meta.as_ref(), caller, Some(r), &[action]).await, self.repository_arn(r.as_str()))
            }
            None => {
                let arn = auth.arns.registry();
                (auth.decide_on(self.reg.meta.as_ref(), caller, action, &arn).await, arn)
            }
        };
        match permit.map_err(|e| self.api(e))? {
            Permit::Allow => Ok(()),
            Permit::Deny(sid) => {
                if let Some(sid) = sid {
                    tracing::info!(ecr.action = action, policy.sid = %sid, "denied by an explicit Deny");
                }
                Err(EcrError::denied(action, &resource))
            }
        }
    }

    /// The service's error as ECR names it.
    pub fn api(&self, e: ApiError) -> EcrError {
        EcrError::from_api(e, self.account())
    }

    /// `RepositoryNotFoundException` for `repo`.
    pub fn repository_not_found(&self, repo: &RepoName) -> EcrError {
        EcrError::repository_not_found(repo.as_str(), self.account())
    }
}

/// `POST /`: one ECR operation.
pub async fn handle(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    let request_id = req.extensions().get::<super::middleware::RequestId>().map(|r| r.0.clone());
    let mut response = serve(&reg, req).await.unwrap_or_else(|e| {
        let logged = super::error::LoggedError(format!("{}: {}", e.kind, e.message));
        let mut r = e.into_response();
        r.extensions_mut().insert(logged);
        r
    });
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert("x-amzn-requestid", id);
    }
    response
}

async fn serve(reg: &Registry, req: Request) -> EcrResult {
    let (parts, body) = req.into_parts();
    let Some(target) = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()) else {
        return Err(unread(
            body,
            EcrError::new("UnknownOperationException", "no X-Amz-Target header: name the ECR operation in it"),
        ));
    };
    let Some(operation) = target.strip_prefix(TARGET_PREFIX).filter(|op| model::OPERATIONS.contains(op)) else {
        let e = EcrError::new("UnknownOperationException", format!("{target} is not an operation of ECR's API"));
        return Err(unread(body, e));
    };
    let operation = operation.to_owned();
    tracing::Span::current().record("ecr.operation", operation.as_str());
    let origin = super::auth::origin(&parts.extensions);
    let pending = if reg.auth.enabled() {
        match signature::precheck(reg, &parts, origin).await {
            Ok(p) => Some(p),
            Err(e) => return Err(unread(body, e)),
        }
    } else {
        None
    };
    // Parts are buffered: how many at once is bounded before one is read.
    let _part = match layers::part_permit(&operation).await {
        Ok(p) => p,
        Err(e) => return Err(unread(body, e)),
    };
    let limit = body_limit(&operation);
    let read = axum::body::to_bytes(body, limit);
    let read = if _part.is_some() { layers::part_deadline(read, layers::PART_READ).await? } else { read.await };
    let body = read.map_err(|_| EcrError {
        status: hyper::StatusCode::PAYLOAD_TOO_LARGE,
        kind: "InvalidParameterException",
        message: format!("the request body of {operation} must be at most {limit} bytes"),
    })?;
    let caller = match pending {
        Some(p) => Some(signature::check(reg, p, &parts, &body)?),
        None => None,
    };
    let event_origin = super::event_origin(
        &parts.method,
        &parts.headers,
        caller.as_ref(),
        parts.extensions.get::<super::middleware::RequestId>(),
        parts.extensions.get::<super::middleware::ClientAddr>(),
        parts.extensions.get::<super::middleware::Secure>(),
    );
    let secure = parts.extensions.get::<super::middleware::Secure>().is_some_and(|s| s.0);
    let ecr = Ecr {
        reg,
        operation: &operation,
        caller,
        origin: event_origin,
        base_url: super::auth::base_url(&parts.headers, secure),
    };
    dispatch(&ecr, &body).await
}

/// The module that serves the operation.
async fn dispatch(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let op = ecr.operation;
    if let Some(r) = repositories::call(ecr, op, body).await {
        return r;
    }
    if let Some(r) = policies::call(ecr, op, body).await {
        return r;
    }
    if let Some(r) = tags::call(ecr, op, body).await {
        return r;
    }
    if let Some(r) = registry::call(ecr, op, body).await {
        return r;
    }
    if let Some(r) = replication::call(ecr, op, body).await {
        return r;
    }
    if let Some(r) = images::call(ecr, op, body).await {
        return r;
    }
    if let Some(r) = lifecycle::call(ecr, op, body).await {
        return r;
    }
    if let Some(r) = layers::call(ecr, op, body).await {
        return r;
    }
    if let Some(r) = auth_token::call(ecr, op, body).await {
        return r;
    }
    if let Some(r) = pull_through::call(ecr, op, body).await {
        return r;
    }
    Err(EcrError::unsupported(op, model::unsupported_reason(op)))
}

/// A refusal sent before the body was read: the body is drained in the background so a
/// client still sending gets the answer.
fn unread(body: Body, e: EcrError) -> EcrError {
    drop(super::drain::DrainOnDrop::wrap(body));
    e
}
