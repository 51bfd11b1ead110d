//! The token service (Docker token spec): `GET /token` with optional Basic credentials and
//! repeated `scope` parameters, `POST /token` with the OAuth2 form (`grant_type=password`
//! or `refresh_token`); the public keys at `/token/jwks.json` (and
//! `/.well-known/jwks.json`); and ECR-style login tokens at `/api/v1/login-token`.
//!
//! A token grants the intersection of what was asked and what policy allows; a partial or
//! empty grant is not an error here (the registry refuses what the token lacks).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use berth_auth::Scope;
const GET_AUTHORIZATION_TOKEN: &str = "ecr:GetAuthorizationToken";
use berth_auth::token::{ResourceActions, TokenUse};
use hyper::Method;
use hyper::header::{CACHE_CONTROL, HeaderValue};

use super::auth::{Credentials, base_url, credentials, origin, sign_in};
use crate::auth::{Authority, Caller, Permit, SignedIn};
use crate::error::{ApiError, ApiResult};
use crate::service::Registry;

/// The largest OAuth2 form accepted.
const FORM_LIMIT: usize = 64 * 1024;

pub async fn token(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    let result = match *req.method() {
        Method::GET => get(&reg, req).await,
        Method::POST => post(&reg, req).await,
        _ => Err(ApiError::Unsupported("the token endpoint takes GET or POST".into())),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn enabled(reg: &Registry) -> ApiResult<()> {
    if reg.auth.enabled() {
        Ok(())
    } else {
        Err(ApiError::NotFound("authentication is off (auth.enabled = false): no tokens are needed".into()))
    }
}

/// The `service` asked for must be this registry's (tokens are bound to it by `aud`).
fn check_service(reg: &Registry, service: Option<&str>) -> ApiResult<()> {
    match service {
        Some(s) if s != reg.auth.service() => {
            Err(ApiError::Invalid(format!("service {s:?} is not this registry's ({:?})", reg.auth.service())))
        }
        _ => Ok(()),
    }
}

/// The most resources (repositories, the catalog) one token request may name. Clients ask
/// for one to a few (a push with mounts names its sources too). Each resource costs a
/// policy read to grant and about 430 bytes of token, and a token must stay under the
/// verifier's limit (`MAX_TOKEN_LEN`, 16 KiB) to be usable: 32 names of 255 characters
/// with every action make about 14 KiB.
pub const MAX_SCOPE_RESOURCES: usize = 32;

/// Scopes as clients send them; ones that do not parse are ignored, like ones not granted.
/// More than [`MAX_SCOPE_RESOURCES`] distinct resources are refused before any password is
/// checked, with an error that says how many may be asked for.
fn parse_scopes<'a>(values: impl Iterator<Item = &'a str>) -> ApiResult<Vec<Scope>> {
    let scopes: Vec<Scope> =
        values.flat_map(|v| v.split(' ')).filter(|s| !s.is_empty()).filter_map(|s| s.parse().ok()).collect();
    let mut resources: Vec<(&str, &str)> = scopes.iter().map(|s| (s.resource_type.as_str(), s.name.as_str())).collect();
    resources.sort_unstable();
    resources.dedup();
    if resources.len() > MAX_SCOPE_RESOURCES {
        return Err(ApiError::Invalid(format!(
            "a token request may name at most {MAX_SCOPE_RESOURCES} resources, this one names {}: \
             ask for the repositories of one operation per token",
            resources.len()
        )));
    }
    Ok(scopes)
}

async fn get(reg: &Registry, req: Request) -> ApiResult<Response> {
    enabled(reg)?;
    let (req, _) = req.into_parts();
    let query: Vec<(String, String)> =
        req.uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let param = |k: &str| query.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    check_service(reg, param("service"))?;
    let origin = origin(&req.extensions);
    let scopes = parse_scopes(query.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.as_str()))?;
    let who = sign_in(reg, &req.headers, origin).await?;
    let offline = param("offline_token") == Some("true") && who.is_some();
    answer(reg, who.as_ref(), origin, &scopes, offline, false).await
}

async fn post(reg: &Registry, req: Request) -> ApiResult<Response> {
    enabled(reg)?;
    let origin = origin(req.extensions());
    let body = axum::body::to_bytes(req.into_body(), FORM_LIMIT)
        .await
        .map_err(|_| ApiError::Invalid(format!("the form must be under {FORM_LIMIT} bytes")))?;
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    check_service(reg, field("service"))?;
    if field("client_id").is_none_or(str::is_empty) {
        return Err(ApiError::Invalid("client_id is required".into()));
    }
    let scopes = parse_scopes(form.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.as_str()))?;
    let who = match field("grant_type") {
        Some("password") => {
            let (Some(user), Some(password)) = (field("username"), field("password")) else {
                return Err(ApiError::Invalid("grant_type=password needs username and password".into()));
            };
            reg.auth.sign_in(reg.meta.as_ref(), user, password, origin.ip).await?
        }
        Some("refresh_token") => {
            let token = field("refresh_token").ok_or_else(|| ApiError::Invalid("refresh_token is required".into()))?;
            reg.auth.refresh(reg.meta.as_ref(), token).await?
        }
        Some(other) => {
            return Err(ApiError::Invalid(format!("grant_type {other:?} is not supported (password, refresh_token)")));
        }
        None => return Err(ApiError::Invalid("grant_type is required".into())),
    };
    let offline = field("access_type") == Some("offline");
    answer(reg, Some(&who), origin, &scopes, offline, true).await
}

/// Issues the token (and a refresh token when asked) and renders the answer.
async fn answer(
    reg: &Registry,
    who: Option<&SignedIn>,
    origin: crate::auth::Origin,
    scopes: &[Scope],
    offline: bool,
    oauth: bool,
) -> ApiResult<Response> {
    let granted = reg.auth.grant(reg.meta.as_ref(), who, origin, scopes).await?;
    let scope_text = granted.iter().map(scope_string).collect::<Vec<_>>().join(" ");
    let (token, claims) = reg.auth.issue(TokenUse::Access, who, granted)?;
    tracing::info!(auth.user = who.map(|w| w.user.as_str()).unwrap_or(""), token.scope = %scope_text, "token issued");
    let mut body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": claims.exp - claims.iat,
        "issued_at": humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(claims.iat.max(0) as u64)).to_string(),
    });
    if oauth {
        body["scope"] = serde_json::Value::String(scope_text);
    }
    if offline && let Some(w) = who {
        let (refresh, _) = reg.auth.issue(TokenUse::Refresh, Some(w), Vec::new())?;
        body["refresh_token"] = serde_json::Value::String(refresh);
    }
    Ok(no_store(Json(body).into_response()))
}

fn scope_string(g: &ResourceActions) -> String {
    format!("{}:{}:{}", g.resource_type, g.name, g.actions.join(","))
}

/// Tokens must not be kept by caches on the way.
fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /token/jwks.json`: the public keys tokens are signed with, for anyone verifying them.
pub async fn jwks(State(reg): State<Arc<Registry>>) -> Response {
    Json(serde_json::to_value(reg.auth.jwks()).unwrap_or_default()).into_response()
}

/// `GET|POST /api/v1/login-token`: like ECR's GetAuthorizationToken, a password for
/// `docker login -u AWS`, valid `auth.token.login_ttl` (12 h). Needs
/// `ecr:GetAuthorizationToken`.
pub async fn login_token(State(reg): State<Arc<Registry>>, req: Request<Body>) -> Response {
    let (req, _) = req.into_parts();
    let result = async {
        enabled(&reg)?;
        let origin = origin(&req.extensions);
        if matches!(credentials(&req.headers)?, Credentials::None) {
            return Err(ApiError::Unauthorized {
                message: "sign in with Basic credentials (a user and password, or an access key)".into(),
                challenge: Some(format!("Basic realm=\"{}\"", reg.auth.service())),
            });
        }
        let who = sign_in(&reg, &req.headers, origin).await?.ok_or(ApiError::Internal("no sign-in".into()))?;
        let caller = Caller {
            principal: Authority::principal(Some(&who)),
            access_key: who.access_key.clone(),
            grant: None,
            origin,
        };
        if let Permit::Deny(_) = reg.auth.decide_on(reg.meta.as_ref(), &caller, GET_AUTHORIZATION_TOKEN, "*").await? {
            return Err(ApiError::Denied {
                message: format!("{} is not allowed", GET_AUTHORIZATION_TOKEN),
                challenge: None,
            });
        }
        let (token, claims) = reg.auth.issue(TokenUse::Login, Some(&who), Vec::new())?;
        let expires = std::time::UNIX_EPOCH + std::time::Duration::from_secs(claims.exp.max(0) as u64);
        Ok(no_store(
            Json(serde_json::json!({
                "authorizationToken": base64::engine::general_purpose::STANDARD.encode(format!("AWS:{token}")),
                "username": "AWS",
                "password": token,
                "expiresAt": humantime::format_rfc3339_seconds(expires).to_string(),
                "proxyEndpoint": base_url(&req.headers, origin.secure),
            }))
            .into_response(),
        ))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
