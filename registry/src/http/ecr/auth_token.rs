//! `GetAuthorizationToken`: a password for `docker login -u AWS`, as ECR gives one
//! (`aws ecr get-login-password`). The token is the login token `/api/v1/login-token` issues:
//! valid `auth.token.login_ttl` (12 hours, as ECR's), bound to the caller's user and access
//! key, so disabling or deleting either (or changing the user's password) revokes it.

use base64::Engine as _;
use berth_auth::token::TokenUse;
use serde::Deserialize;

use super::{Ecr, EcrError, EcrResult, wire};

/// ECR's action for this operation.
const GET_AUTHORIZATION_TOKEN: &str = "ecr:GetAuthorizationToken";
/// ECR's most `registryIds` in one request.
const MAX_REGISTRY_IDS: usize = 10;

/// Serves `op` if it belongs to this group.
pub(super) async fn call(ecr: &Ecr<'_>, op: &str, body: &[u8]) -> Option<EcrResult> {
    match op {
        "GetAuthorizationToken" => Some(get_authorization_token(ecr, body).await),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Input {
    #[serde(default)]
    registry_ids: Option<Vec<String>>,
}

async fn get_authorization_token(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let input: Input = wire::input(body)?;
    if let Some(ids) = &input.registry_ids {
        if ids.is_empty() || ids.len() > MAX_REGISTRY_IDS {
            return Err(EcrError::invalid(format!(
                "registryIds must list 1 to {MAX_REGISTRY_IDS} registry ids (or be left out), not {}",
                ids.len()
            )));
        }
        for id in ids {
            ecr.registry_id(Some(id))?;
        }
    }
    ecr.allow(GET_AUTHORIZATION_TOKEN, None).await?;
    let reg = ecr.reg;
    // With authentication on, the token is bound to who signed (re-read now, so a key or user
    // disabled since the signature was checked gets nothing). With it off, the token carries
    // no user and would sign in nobody once authentication is switched on.
    let who = match &ecr.caller {
        Some(caller) => Some(
            reg.auth
                .signed_in_as(reg.meta.as_ref(), caller)
                .await
                .map_err(|e| ecr.api(e))?
                .ok_or_else(|| EcrError::denied(GET_AUTHORIZATION_TOKEN, &reg.auth.arns.registry()))?,
        ),
        None => None,
    };
    let (token, claims) = reg.auth.issue(TokenUse::Login, who.as_ref(), Vec::new()).map_err(|e| ecr.api(e))?;
    tracing::info!(
        auth.user = who.as_ref().map(|w| w.user.as_str()).unwrap_or(""),
        auth.access_key = who.as_ref().and_then(|w| w.access_key.as_deref()).unwrap_or(""),
        "login token issued (GetAuthorizationToken)"
    );
    wire::output(&serde_json::json!({
        "authorizationData": [{
            "authorizationToken": base64::engine::general_purpose::STANDARD.encode(format!("AWS:{token}")),
            "expiresAt": wire::epoch(claims.exp),
            "proxyEndpoint": ecr.base_url,
        }]
    }))
}
