//! Authorization of `/v2/` requests, from the route parsed by `middleware::observe` and
//! before any handler reads the body; and the reading of credentials from headers, shared
//! with the token service and the admin API.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use berth_auth::Access;
use hyper::HeaderMap;
use hyper::header::{AUTHORIZATION, HOST};

use super::ParsedRoute;
use super::middleware::{ClientAddr, PeerAddr, Secure, client_addr};
use crate::auth::{Authority, Caller, Origin, Permit, SignedIn};
use crate::error::ApiError;
use crate::service::Registry;

/// Credentials as a request carries them.
pub(crate) enum Credentials {
    None,
    Basic { user: String, secret: String },
    Bearer(String),
}

/// Reads the `Authorization` header. A malformed one is an error, not anonymity: a client
/// that sent credentials expects them to count.
pub(crate) fn credentials(headers: &HeaderMap) -> Result<Credentials, ApiError> {
    let Some(value) = headers.get(AUTHORIZATION) else { return Ok(Credentials::None) };
    let bad = |why: &str| ApiError::Unauthorized { message: format!("Authorization header: {why}"), challenge: None };
    let value = value.to_str().map_err(|_| bad("not text"))?.trim();
    let (scheme, rest) = value.split_once(' ').ok_or_else(|| bad("expected Basic or Bearer"))?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded =
            base64::engine::general_purpose::STANDARD.decode(rest).map_err(|_| bad("Basic value is not base64"))?;
        let text = String::from_utf8(decoded).map_err(|_| bad("Basic value is not UTF-8"))?;
        let (user, secret) = text.split_once(':').ok_or_else(|| bad("Basic value is not user:password"))?;
        Ok(Credentials::Basic { user: user.to_owned(), secret: secret.to_owned() })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Ok(Credentials::Bearer(rest.to_owned()))
    } else {
        Err(bad("expected Basic or Bearer"))
    }
}

/// The client's address (as `middleware::observe` worked it out) and transport.
pub(crate) fn origin(req_ext: &axum::http::Extensions) -> Origin {
    let ip = match req_ext.get::<ClientAddr>() {
        Some(c) => c.ip,
        // Not through the middleware: the peer itself, no proxy trusted.
        None => client_addr(req_ext.get::<PeerAddr>().map(|p| p.0), &HeaderMap::new(), &[]).ip,
    };
    let secure = req_ext.get::<Secure>().is_some_and(|s| s.0);
    Origin { ip, secure }
}

/// Signs in with Basic credentials, if any; `Ok(None)` for none.
pub(crate) async fn sign_in(reg: &Registry, headers: &HeaderMap, origin: Origin) -> Result<Option<SignedIn>, ApiError> {
    match credentials(headers)? {
        Credentials::None => Ok(None),
        Credentials::Basic { user, secret } => {
            Ok(Some(reg.auth.sign_in(reg.meta.as_ref(), &user, &secret, origin.ip).await?))
        }
        Credentials::Bearer(_) => Err(ApiError::Unauthorized {
            message: "this endpoint takes Basic credentials (a user and password, or an access key)".into(),
            challenge: Some(format!("Basic realm=\"{}\"", reg.auth.service())),
        }),
    }
}

/// Where clients fetch tokens: configured, or this server's own `/token` as the client
/// reached it.
pub(crate) fn realm(auth: &Authority, headers: &HeaderMap, secure: bool) -> String {
    if let Some(r) = &auth.config.token.realm {
        return r.clone();
    }
    format!("{}/token", base_url(headers, secure))
}

/// `http(s)://<Host>` of the request (a Host that is not a plain host[:port] is ignored).
pub(crate) fn base_url(headers: &HeaderMap, secure: bool) -> String {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b)))
        .unwrap_or("localhost");
    format!("{}://{host}", if secure { "https" } else { "http" })
}

/// The `WWW-Authenticate` value sending a client to the token service.
fn challenge(realm: &str, service: &str, access: &Access, error: Option<&str>) -> String {
    let mut c = format!("Bearer realm=\"{realm}\",service=\"{service}\"");
    if let Some(scope) = access.scope() {
        c.push_str(&format!(",scope=\"{scope}\""));
    }
    if let Some(e) = error {
        c.push_str(&format!(",error=\"{e}\""));
    }
    c
}

/// The middleware: decides each `/v2/` request from its route and credentials, and leaves
/// the [`Caller`] for handlers that need a second decision (a mount reads its source).
pub async fn authorize(State(reg): State<Arc<Registry>>, mut req: Request, next: Next) -> Response {
    if !reg.auth.enabled() {
        return next.run(req).await;
    }
    let access = match req.extensions().get::<ParsedRoute>() {
        Some(ParsedRoute(Ok(route))) => route.access(req.method()),
        // Not a registry path (token service, admin API, health: they decide themselves),
        // or a path that does not parse (its error names only the syntax).
        _ => return next.run(req).await,
    };
    let origin = origin(req.extensions());
    match decide(&reg, req.headers(), origin, &access).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

async fn decide(reg: &Registry, headers: &HeaderMap, origin: Origin, access: &Access) -> Result<Caller, ApiError> {
    let auth = &reg.auth;
    let realm = || realm(auth, headers, origin.secure);
    let creds =
        credentials(headers).map_err(|e| with_challenge(e, challenge(&realm(), auth.service(), access, None)))?;
    let caller = match creds {
        Credentials::Bearer(token) => {
            let claims = auth.verify_access_token(&token).map_err(|e| ApiError::Unauthorized {
                message: format!("token refused: {e}"),
                challenge: Some(challenge(&realm(), auth.service(), access, Some("invalid_token"))),
            })?;
            let principal = if claims.sub.is_empty() {
                berth_auth::policy::Principal::Anonymous
            } else {
                berth_auth::policy::Principal::User { name: claims.sub.clone() }
            };
            Caller { principal, access_key: None, grant: Some(claims), origin }
        }
        Credentials::Basic { user, secret } => {
            let signed_in = auth
                .sign_in(reg.meta.as_ref(), &user, &secret, origin.ip)
                .await
                .map_err(|e| with_challenge(ApiError::from(e), challenge(&realm(), auth.service(), access, None)))?;
            Caller {
                principal: Authority::principal(Some(&signed_in)),
                access_key: signed_in.access_key,
                grant: None,
                origin,
            }
        }
        Credentials::None => Caller { principal: Authority::principal(None), access_key: None, grant: None, origin },
    };
    match auth.permits(reg.meta.as_ref(), &caller, access).await? {
        Permit::Allow => Ok(caller),
        Permit::Deny(sid) => {
            let scope = access.scope().map(|s| s.to_string()).unwrap_or_default();
            if let Some(sid) = &sid {
                tracing::info!(auth.scope = %scope, policy.sid = %sid, "denied by an explicit Deny");
            }
            Err(match (&caller.grant, &caller.principal) {
                // A token without the scope: send the client for one that has it.
                (Some(_), _) => ApiError::Denied {
                    message: format!("requested access to the resource is denied ({scope})"),
                    challenge: Some(challenge(&realm(), auth.service(), access, Some("insufficient_scope"))),
                },
                (None, berth_auth::policy::Principal::Anonymous) => ApiError::Unauthorized {
                    message: "authentication required".into(),
                    challenge: Some(challenge(&realm(), auth.service(), access, None)),
                },
                (None, berth_auth::policy::Principal::User { .. }) => ApiError::Denied {
                    message: format!("requested access to the resource is denied ({scope})"),
                    challenge: None,
                },
            })
        }
    }
}

/// A sign-in failure on a registry path carries the Bearer challenge, so clients that sent
/// Basic credentials learn where tokens come from.
fn with_challenge(e: ApiError, c: String) -> ApiError {
    match e {
        ApiError::Unauthorized { message, .. } => ApiError::Unauthorized { message, challenge: Some(c) },
        other => other,
    }
}

/// Whether the caller of a request may also have `access` (a mount's source). With auth
/// off, or without a caller, everything is allowed.
pub(crate) async fn also_permits(reg: &Registry, caller: Option<&Caller>, access: &Access) -> Result<bool, ApiError> {
    match caller {
        Some(c) if reg.auth.enabled() => Ok(reg.auth.permits(reg.meta.as_ref(), c, access).await? == Permit::Allow),
        _ => Ok(true),
    }
}
