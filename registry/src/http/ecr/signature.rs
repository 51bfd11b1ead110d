//! Signature Version 4 on ECR requests (service `ecr`, region `auth.region`): who signed,
//! checked in two steps so that nothing is read for a request no key could have signed.

use axum::http::request::Parts;

use super::error::{EcrError, EcrResult};
use crate::auth::{Caller, Origin};
use crate::service::Registry;

/// What [`precheck`] learned from the headers, for [`check`] once the body is read.
pub(super) struct Pending {
    origin: Origin,
}

/// Before the body is read: the `Authorization` header's shape, the access key, the date.
pub(super) async fn precheck(reg: &Registry, parts: &Parts, origin: Origin) -> EcrResult<Pending> {
    let _ = (reg, parts);
    Ok(Pending { origin })
}

/// The signature over the request and its body: the caller it stands for.
pub(super) fn check(reg: &Registry, pending: Pending, parts: &Parts, body: &[u8]) -> EcrResult<Caller> {
    let _ = (reg, parts, body, pending.origin);
    Err(EcrError {
        status: hyper::StatusCode::FORBIDDEN,
        kind: "MissingAuthenticationTokenException",
        message: "Signature Version 4 is not checked yet".into(),
    })
}
