//! What a token says: the registered JWT claims the Docker token spec requires, the spec's
//! `access` list, Berth's `berth_use`, which keeps tokens for different purposes apart, and
//! for long-lived tokens `berth_uid` and `berth_gen`, which tie them to one user's current
//! credentials.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Scope;

/// The claims of a Berth token. Times are Unix seconds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Claims {
    /// Who issued the token; verifiers trust exactly one issuer.
    pub iss: String,
    /// The principal; `""` for an anonymous token, as the token spec says.
    pub sub: String,
    /// The registry `service` the token is for, so it cannot be replayed at another.
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    /// A random id, for a replay cache if one is ever kept.
    pub jti: String,
    /// What was granted: the intersection of what was asked for and what policy allows.
    #[serde(default)]
    pub access: Vec<ResourceActions>,
    /// What the token is for; a token for one use is refused for any other.
    #[serde(rename = "berth_use")]
    pub use_: TokenUse,
    /// The user's stable id (`AIDA…`), in refresh and login tokens: redeeming one checks
    /// that the user of that name is still this one, not another created since under the
    /// same name. Absent from access tokens.
    #[serde(rename = "berth_uid", default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The user's credential generation when the token was issued, in refresh and login
    /// tokens: a password change or removal, or disabling the user, moves it on, and a
    /// token of an older generation is refused. Absent from access tokens.
    #[serde(rename = "berth_gen", default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

impl Claims {
    /// Claims valid from `now` for `ttl`, with a fresh random `jti`.
    pub fn new(
        use_: TokenUse,
        issuer: impl Into<String>,
        subject: impl Into<String>,
        audience: impl Into<String>,
        now: i64,
        ttl: Duration,
        access: Vec<ResourceActions>,
    ) -> Claims {
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        Claims {
            iss: issuer.into(),
            sub: subject.into(),
            aud: audience.into(),
            exp: now.saturating_add(ttl),
            nbf: now,
            iat: now,
            jti: hex::encode(crate::credentials::random_bytes::<16>()),
            access,
            use_,
            user_id: None,
            generation: None,
        }
    }

    /// These claims bound to a user's id and credential generation (refresh and login
    /// tokens), so that redeeming them can check both are still current.
    pub fn bound_to(self, user_id: impl Into<String>, generation: i64) -> Claims {
        Claims { user_id: Some(user_id.into()), generation: Some(generation), ..self }
    }
}

/// One entry of the token spec's `access` claim: actions granted on one resource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResourceActions {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub resource_type: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl From<Scope> for ResourceActions {
    fn from(scope: Scope) -> Self {
        ResourceActions { resource_type: scope.resource_type, name: scope.name, actions: scope.actions }
    }
}

/// What a token is for. Written as `berth_use` in the claims.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum TokenUse {
    /// A bearer token on the registry (`Authorization: Bearer`).
    Access,
    /// An `offline_token` refresh token: accepted only by the token endpoint.
    Refresh,
    /// An ECR-style 12 h login password (`docker login -u AWS -p <token>`).
    Login,
    /// A layer download URL's signature (ECR's `GetDownloadUrlForLayer`): its `access`
    /// names the one blob of one repository it may fetch, and nothing else accepts it.
    Download,
}

impl TokenUse {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenUse::Access => "access",
            TokenUse::Refresh => "refresh",
            TokenUse::Login => "login",
            TokenUse::Download => "download",
        }
    }
}

impl fmt::Display for TokenUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
