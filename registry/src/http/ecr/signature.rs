//! Signature Version 4 on ECR requests (service `ecr`, region `auth.region`): who signed,
//! checked in two steps so that nothing is read for a request no key could have signed.
//!
//! [`precheck`], before the body: the `Authorization` header's shape, the date and clock
//! skew, the credential scope, then the access key (it exists, it and its user are enabled,
//! its sealed secret opens). [`check`], after the body: the signature over the request and
//! the body. A wrong signature and an unknown or disabled key count as failed sign-ins in the
//! sign-in throttle, as wrong Basic secrets do; a throttled client gets `ThrottlingException`.
//! Errors are AWS's: `MissingAuthenticationTokenException`, `IncompleteSignatureException`,
//! `UnrecognizedClientException`, `InvalidSignatureException`.
//!
//! A signed request may be sent again unchanged within the 15 minutes of skew allowed (AWS
//! accepts that too); any change to a signed header or the body fails the signature.

use axum::http::request::Parts;
use berth_auth::policy::Principal;
use berth_auth::sigv4::{self, Authorization, SigV4Error};
use hyper::StatusCode;
use hyper::header::{AUTHORIZATION, HOST};

use super::error::{EcrError, EcrResult};
use crate::auth::key_secrets::{KeyRefused, SigV4Key};
use crate::auth::throttle::Admission;
use crate::auth::{Caller, Origin};
use crate::service::Registry;

/// The service name in ECR's credential scope.
pub const SERVICE: &str = "ecr";

/// What [`precheck`] learned from the headers, for [`check`] once the body is read.
pub(super) struct Pending<'r> {
    origin: Origin,
    authorization: Authorization,
    /// The request's time as signed (`X-Amz-Date`).
    amz_date: String,
    key: SigV4Key,
    /// The attempt's place in the sign-in throttle until the signature is decided.
    admission: Admission<'r>,
}

fn forbidden(kind: &'static str, message: impl Into<String>) -> EcrError {
    EcrError { status: StatusCode::FORBIDDEN, kind, message: message.into() }
}

/// AWS's answer to each signature error.
fn signature_error(e: SigV4Error) -> EcrError {
    match e {
        SigV4Error::Incomplete(m) => EcrError::new("IncompleteSignatureException", m),
        e @ (SigV4Error::Expired { .. }
        | SigV4Error::NotYetCurrent { .. }
        | SigV4Error::ScopeDate { .. }
        | SigV4Error::Region { .. }
        | SigV4Error::Service { .. }
        | SigV4Error::ContentSha256
        | SigV4Error::Mismatch { .. }) => forbidden("InvalidSignatureException", e.to_string()),
    }
}

/// The request's headers as text pairs (a value that is not visible ASCII is left out: if it
/// is signed, the signature check names it as missing), with `host` from the URI when the
/// request has no Host header (HTTP/2).
fn header_pairs(parts: &Parts) -> Vec<(&str, &str)> {
    let mut pairs: Vec<(&str, &str)> =
        parts.headers.iter().filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v))).collect();
    if !parts.headers.contains_key(HOST)
        && let Some(authority) = parts.uri.authority()
    {
        pairs.push(("host", authority.as_str()));
    }
    pairs
}

/// Before the body is read: the `Authorization` header's shape, the date, the scope, the key.
pub(super) async fn precheck<'r>(reg: &'r Registry, parts: &Parts, origin: Origin) -> EcrResult<Pending<'r>> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Err(forbidden("MissingAuthenticationTokenException", "Missing Authentication Token"));
    };
    let value = value
        .to_str()
        .map_err(|_| EcrError::new("IncompleteSignatureException", "the Authorization header is not text"))?;
    if !sigv4::is_sigv4(value) {
        return Err(EcrError::new(
            "IncompleteSignatureException",
            "ECR's API takes requests signed with Signature Version 4 (AWS4-HMAC-SHA256) by an access key: give \
             the AWS CLI or SDK the key's id and secret (aws_access_key_id, aws_secret_access_key from `berth admin \
             key create`) and the registry's region. Basic and Bearer credentials are for the registry's /v2/ API \
             (docker login)",
        ));
    }
    let authorization = Authorization::parse(value).map_err(signature_error)?;
    let auth = &reg.auth;
    let key_id = authorization.access_key_id.clone();
    let admission = auth.admit_signature(&key_id, origin.ip).map_err(|wait| {
        EcrError::new(
            "ThrottlingException",
            format!(
                "too many failed sign-ins from this address; retry in {} s",
                (wait.as_secs_f64().ceil() as u64).max(1)
            ),
        )
    })?;
    // Not counted as failures: a client whose clock or region is wrong guesses nothing.
    let amz_date = authorization
        .check_headers(&header_pairs(parts), &auth.config.region, SERVICE, std::time::SystemTime::now())
        .map_err(signature_error)?;
    let key = match auth.signing_key(reg.meta.as_ref(), &key_id).await {
        Ok(Ok(key)) => key,
        Ok(Err(refused)) => {
            let message = refused.message(&key_id);
            if refused == KeyRefused::Unrecognized {
                auth.signature_failed(admission, &key_id, origin.ip, "unknown or disabled access key");
            }
            return Err(forbidden("UnrecognizedClientException", message));
        }
        Err(e) => return Err(EcrError::from_api(e, &auth.arns.account)),
    };
    Ok(Pending { origin, authorization, amz_date, key, admission })
}

/// The signature over the request and its body: the caller it stands for.
pub(super) fn check(reg: &Registry, pending: Pending<'_>, parts: &Parts, body: &[u8]) -> EcrResult<Caller> {
    let Pending { origin, authorization, amz_date, key, admission } = pending;
    let headers = header_pairs(parts);
    let request = sigv4::Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &headers,
        body,
    };
    if let Err(e) = authorization.verify(&request, &amz_date, &key.secret) {
        reg.auth.signature_failed(admission, &key.id, origin.ip, "signature mismatch");
        return Err(signature_error(e));
    }
    admission.succeeded(std::time::Instant::now());
    Ok(Caller { principal: Principal::User { name: key.user.name }, access_key: Some(key.id), grant: None, origin })
}
