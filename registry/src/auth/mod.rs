//! Who may do what, for the registry: sign-in (passwords, access keys, login tokens), the
//! token service's keys, and policy decisions for each request.
//!
//! A request is authorized from its parsed route, before its body is read
//! (`http::auth::authorize`): a Bearer token is checked against its `access` claim alone;
//! Basic credentials and anonymous callers are checked against the policies in the
//! metadata store. `berth_auth` holds the pure logic (tokens, policy evaluation); this
//! module loads records and passes them in.

pub mod admin;
mod bootstrap;
pub mod config;
pub mod download;
mod gate;
pub mod key_secrets;
mod signing;
pub mod throttle;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_auth::policy::{Arns, Context, Decision, Policies, PolicyDocument, Principal, Request, actions};
use berth_auth::token::{Claims, Jwks, ResourceActions, SigningKey, TokenUse, Verifier};
use berth_auth::{Access, Scope, credentials};
use berth_oci::RepoName;
use berth_storage::MetadataStore;
use berth_storage::metadata::{PolicyRecord, UserRecord, unix_now};
use sha2::Digest as _;

use crate::error::ApiError;
use config::AuthConfig;
pub use signing::SecretSealing;
use throttle::{Attempt, Secret, Throttle};

/// How far a token's times may be off before it is refused (clocks of replicas and clients).
const LEEWAY: Duration = Duration::from_secs(30);
/// How long a password verified with argon2 is remembered (so Basic credentials on every
/// request cost one hash, not one argon2 run).
const PASSWORD_MEMORY: Duration = Duration::from_secs(60);
/// The longest secret checked: passwords are at most 1024 characters (4 KiB of UTF-8),
/// login tokens well under that.
const MAX_SECRET: usize = 16 * 1024;

/// The answer when the argon2 gate is full (`sign_in` turns it into [`SignInError::Busy`]).
fn busy(_: gate::Busy) -> ApiError {
    ApiError::Unavailable("too many sign-ins are being checked at once; retry in a moment".into())
}

/// The registry's authentication and authorization state, shared by all requests.
pub struct Authority {
    pub config: AuthConfig,
    pub arns: Arns,
    signer: SigningKey,
    verifier: Verifier,
    jwks: Jwks,
    throttle: Throttle,
    passwords: PasswordMemory,
    verified: VerifiedTokens,
    argon2: gate::Argon2Gate,
    /// Seals access-key secrets (`key_secrets`), which Signature Version 4 needs back.
    sealing: SecretSealing,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("enabled", &self.config.enabled).field("kid", &self.signer.kid()).finish()
    }
}

/// Who is calling, as established from the request's credentials.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The access key signed in with, whose own policies also apply.
    pub access_key: Option<String>,
    /// A Bearer token's grant: then only this decides, no policy is read.
    pub grant: Option<Arc<Claims>>,
    /// The request's condition keys that do not depend on the resource.
    pub origin: Origin,
}

/// Where a request comes from.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub ip: IpAddr,
    pub secure: bool,
}

/// A successful sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    pub user: String,
    pub access_key: Option<String>,
    /// The user's stable id and credential generation at sign-in, which refresh and login
    /// tokens issued to it carry and which redeeming them checks are still current.
    pub user_id: String,
    pub generation: i64,
}

impl SignedIn {
    /// The subject of tokens issued to it: the access key when signed in with one (so a
    /// disabled key stops its tokens from being refreshed), else the user.
    pub fn subject(&self) -> &str {
        self.access_key.as_deref().unwrap_or(&self.user)
    }
}

/// Why a sign-in failed. The client learns only that it failed (or that it must wait).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInError {
    Failed,
    Throttled(Duration),
    /// Too many password checks in progress at once: not a failure of this caller's.
    Busy,
}

impl From<SignInError> for ApiError {
    fn from(e: SignInError) -> Self {
        match e {
            SignInError::Failed => ApiError::Unauthorized { message: "invalid credentials".into(), challenge: None },
            // Rounded up: a client retrying on the dot must find the back-off over.
            SignInError::Throttled(wait) => {
                ApiError::TooManyRequests { retry_after: (wait.as_secs_f64().ceil() as u64).max(1) }
            }
            SignInError::Busy => {
                ApiError::Unavailable("too many sign-ins are being checked at once; retry in a moment".into())
            }
        }
    }
}

impl Authority {
    /// Loads or creates the token signing key. The first administrator is
    /// [`Authority::create_first_admin`]'s, which only `serve` calls.
    pub async fn open(
        config: &AuthConfig,
        meta: &dyn MetadataStore,
        secrets: &SecretSealing,
    ) -> Result<Authority, String> {
        let keys = signing::load(config, meta, secrets).await?;
        let Some(signer) = keys.last() else { return Err("no token signing key".into()) };
        let signer = SigningKey::from_pkcs8_der(signer.pkcs8_der()).map_err(|e| e.to_string())?;
        let verifier = Verifier::new(config.token.issuer.clone(), &keys, LEEWAY);
        let jwks = Jwks { keys: keys.iter().map(SigningKey::public_jwk).collect() };
        let arns = Arns { partition: "aws".into(), region: config.region.clone(), account: config.account.clone() };
        let authority = Authority {
            config: config.clone(),
            arns,
            signer,
            verifier,
            jwks,
            throttle: Throttle::new(config.max_failed_logins, config.lockout),
            passwords: PasswordMemory::new(),
            verified: VerifiedTokens::default(),
            argon2: gate::Argon2Gate::per_core(),
            sealing: secrets.clone(),
        };
        Ok(authority)
    }

    /// On a registry with no users, creates `auth.admin_user` (its generated password written
    /// to `<data_dir>/admin-password`). Called by `serve` with authentication on, so a
    /// registry that runs without it has no administrator and no password file until the
    /// first start with it on.
    pub async fn create_first_admin(&self, meta: &dyn MetadataStore, data_dir: &std::path::Path) -> Result<(), String> {
        bootstrap::admin(self, meta, data_dir).await
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }

    pub fn service(&self) -> &str {
        &self.config.token.service
    }

    /// Checks a user name and secret: a password, an access key's secret (`user` is then the
    /// key id), or a login token (`user` is then `AWS`).
    pub async fn sign_in(
        &self,
        meta: &dyn MetadataStore,
        user: &str,
        secret: &str,
        ip: IpAddr,
    ) -> Result<SignedIn, SignInError> {
        let kind = if user == "AWS" || credentials::is_access_key_id(user) { Secret::Random } else { Secret::Password };
        // Decided before the secret is checked: a refused attempt costs no argon2 run and
        // is not a failure.
        let admission = match self.throttle.admit(Attempt::new(user, ip, kind), Instant::now()) {
            Ok(a) => a,
            Err(r) => {
                tracing::info!(auth.user = user, client.ip = %ip, auth.throttle.reason = r.reason.as_str(),
                    retry_after_s = r.wait.as_secs_f64().ceil() as u64, "sign-in refused: throttled");
                return Err(SignInError::Throttled(r.wait));
            }
        };
        match self.check_secret(meta, user, secret).await {
            Ok(Some(signed_in)) => {
                admission.succeeded(Instant::now());
                Ok(signed_in)
            }
            Ok(None) => {
                let known_good = admission.known_good();
                let backoffs = admission.failed(Instant::now());
                tracing::info!(auth.user = user, client.ip = %ip, auth.known_address = known_good, "sign-in failed");
                // One line per decision: the longest back-off, and every count that started one.
                if let Some(longest) = backoffs.iter().max_by_key(|b| b.wait) {
                    let counts = backoffs.iter().map(|b| b.reason.as_str()).collect::<Vec<_>>().join(",");
                    tracing::warn!(auth.user = user, client.ip = %ip, auth.throttle.reason = longest.reason.as_str(),
                        auth.throttle.counts = counts, auth.failures = longest.failures,
                        backoff_s = longest.wait.as_secs_f64(), "sign-in back-off started");
                }
                Err(SignInError::Failed)
            }
            Err(ApiError::Unavailable(_)) => {
                tracing::warn!(auth.user = user, client.ip = %ip, "sign-in refused: too many password checks at once");
                Err(SignInError::Busy)
            }
            Err(e) => {
                tracing::error!(error = %e, "sign-in could not be checked");
                Err(SignInError::Failed)
            }
        }
    }

    /// The throttle's counters, for `/metrics`.
    pub fn throttle_counts(&self) -> throttle::Counts {
        self.throttle.counts()
    }

    async fn check_secret(
        &self,
        meta: &dyn MetadataStore,
        user: &str,
        secret: &str,
    ) -> Result<Option<SignedIn>, ApiError> {
        // Longer than any password or token Berth issues: refused before any hashing, so a
        // megabyte of "password" costs nothing.
        if secret.len() > MAX_SECRET || user.len() > 256 {
            return Ok(None);
        }
        if user == "AWS" {
            let Ok(claims) = self.verifier.verify(secret, self.service(), TokenUse::Login, unix_now()) else {
                return Ok(None);
            };
            return self.redeem(meta, &claims).await;
        }
        if credentials::is_access_key_id(user) {
            let Some(key) = meta.access_key(user).await? else { return Ok(None) };
            if !credentials::verify_secret(secret, &key.secret_digest) || key.disabled {
                return Ok(None);
            }
            let Some(u) = self.enabled_user(meta, &key.user).await? else { return Ok(None) };
            // The secret is at hand: a key from before sealing becomes usable for SigV4.
            self.seal_at_sign_in(meta, &key, secret).await;
            return Ok(Some(SignedIn {
                user: key.user,
                access_key: Some(key.id),
                user_id: u.id,
                generation: u.generation,
            }));
        }
        let record = meta.user(user).await?;
        let Some(hash) = record.as_ref().and_then(|u| u.password_hash.clone()) else {
            // Unknown user, or one without a password: spend the same time as a real check.
            let secret = secret.to_owned();
            self.argon2.run(move || credentials::burn_password_check(&secret)).await.map_err(busy)?;
            return Ok(None);
        };
        let remembered = self.passwords.recall(user, secret, &hash);
        let ok = remembered || {
            let (secret, phc) = (secret.to_owned(), hash.clone());
            self.argon2.run(move || credentials::verify_password(&secret, &phc)).await.map_err(busy)?
        };
        if !ok {
            return Ok(None);
        }
        if !remembered {
            self.passwords.remember(user, secret, &hash);
        }
        Ok(record.filter(|u| !u.disabled).map(|u| SignedIn {
            user: user.to_owned(),
            access_key: None,
            user_id: u.id,
            generation: u.generation,
        }))
    }

    /// The sign-in a verified refresh or login token stands for: its subject (a user, or an
    /// access key and its user) still enabled, and the user the same one (`berth_uid`, not
    /// another created since under the same name) at the same credential generation
    /// (`berth_gen`: no password change, removal or disabling since). A token without
    /// these claims (issued before they existed) is refused.
    async fn redeem(&self, meta: &dyn MetadataStore, claims: &Claims) -> Result<Option<SignedIn>, ApiError> {
        let (Some(user_id), Some(generation)) = (claims.user_id.as_deref(), claims.generation) else {
            return Ok(None);
        };
        let Some(now) = self.subject_signed_in(meta, &claims.sub).await? else { return Ok(None) };
        if now.user_id != user_id || now.generation != generation {
            tracing::info!(auth.user = %now.user, token.use_ = %claims.use_, "revoked token refused");
            return Ok(None);
        }
        Ok(Some(now))
    }

    /// The sign-in a token's subject stands for, if that user (and key) is still enabled,
    /// with the user's current id and generation.
    async fn subject_signed_in(&self, meta: &dyn MetadataStore, subject: &str) -> Result<Option<SignedIn>, ApiError> {
        let (user, access_key) = if credentials::is_access_key_id(subject) {
            let Some(key) = meta.access_key(subject).await? else { return Ok(None) };
            if key.disabled {
                return Ok(None);
            }
            (key.user, Some(key.id))
        } else {
            (subject.to_owned(), None)
        };
        Ok(self.enabled_user(meta, &user).await?.map(|u| SignedIn {
            user,
            access_key,
            user_id: u.id,
            generation: u.generation,
        }))
    }

    async fn enabled_user(&self, meta: &dyn MetadataStore, user: &str) -> Result<Option<UserRecord>, ApiError> {
        Ok(meta.user(user).await?.filter(|u| !u.disabled))
    }

    /// A registry (Bearer) token's grant, when the token is valid. A client sends the same
    /// token with every request until it expires, so tokens already verified are kept (by a
    /// digest of their text, until their `exp`): an ECDSA verification costs more than the
    /// rest of a manifest request.
    pub fn verify_access_token(&self, token: &str) -> Result<Arc<Claims>, berth_auth::token::TokenError> {
        let now = unix_now();
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some(claims) = self.verified.recall(&key, now) {
            return Ok(claims);
        }
        let claims = Arc::new(self.verifier.verify(token, self.service(), TokenUse::Access, now)?);
        self.verified.remember(key, claims.clone(), now);
        Ok(claims)
    }

    /// The sign-in a refresh token stands for.
    pub async fn refresh(&self, meta: &dyn MetadataStore, token: &str) -> Result<SignedIn, ApiError> {
        let claims = self
            .verifier
            .verify(token, self.service(), TokenUse::Refresh, unix_now())
            .map_err(|e| ApiError::Unauthorized { message: format!("refresh token refused: {e}"), challenge: None })?;
        self.redeem(meta, &claims).await?.ok_or(ApiError::Unauthorized {
            message: "refresh token revoked: its user's password changed or was removed, or the user or access key \
                      was disabled or deleted since it was issued; sign in again"
                .into(),
            challenge: None,
        })
    }

    /// Signs a token of `use_` for `who` (anonymous: `None`).
    pub fn issue(
        &self,
        use_: TokenUse,
        who: Option<&SignedIn>,
        access: Vec<ResourceActions>,
    ) -> Result<(String, Claims), ApiError> {
        let ttl = match use_ {
            TokenUse::Access => self.config.token.ttl,
            TokenUse::Refresh => self.config.token.refresh_ttl,
            TokenUse::Login => self.config.token.login_ttl,
            TokenUse::Download => download::TTL,
        };
        let subject = who.map(SignedIn::subject).unwrap_or("");
        let mut claims =
            Claims::new(use_, self.config.token.issuer.clone(), subject, self.service(), unix_now(), ttl, access);
        // Long-lived tokens are bound to the user's current credentials, so that revoking
        // those (a password change, disabling, deleting) revokes them; registry tokens are
        // short and checked from their claims alone.
        if use_ != TokenUse::Access
            && let Some(w) = who
        {
            claims = claims.bound_to(w.user_id.clone(), w.generation);
        }
        let token = self.signer.sign(&claims).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok((token, claims))
    }

    /// The caller `who` as a policy principal.
    pub fn principal(who: Option<&SignedIn>) -> Principal {
        match who {
            Some(s) => Principal::User { name: s.user.clone() },
            None => Principal::Anonymous,
        }
    }

    /// Whether `caller` may have `access`.
    pub async fn permits(
        &self,
        meta: &dyn MetadataStore,
        caller: &Caller,
        access: &Access,
    ) -> Result<Permit, ApiError> {
        if let Some(claims) = &caller.grant {
            let grant = &claims.access;
            let covered = match access {
                Access::None => true,
                Access::Repository { name, action } => covers(grant, "repository", name.as_str(), action.as_str()),
                Access::Registry { action } => covers(grant, "registry", "catalog", action.as_str()),
            };
            return Ok(if covered { Permit::Allow } else { Permit::Deny(None) });
        }
        let (repo, scope_type, action) = match access {
            Access::None => {
                return Ok(if matches!(caller.principal, Principal::Anonymous) {
                    Permit::Deny(None)
                } else {
                    Permit::Allow
                });
            }
            Access::Repository { name, action } => (Some(name), "repository", action.as_str()),
            Access::Registry { action } => (None, "registry", action.as_str()),
        };
        let Some(ecr_actions) = actions::for_scope_action(scope_type, action) else {
            return Ok(Permit::Deny(None));
        };
        self.decide(meta, caller, repo, ecr_actions).await
    }

    /// Evaluates every action of `ecr_actions` on `repo` (or the registry); all must be allowed.
    pub async fn decide(
        &self,
        meta: &dyn MetadataStore,
        caller: &Caller,
        repo: Option<&RepoName>,
        ecr_actions: &[&str],
    ) -> Result<Permit, ApiError> {
        let loaded = self.load(meta, caller, repo).await?;
        Ok(loaded.check(self, caller, ecr_actions, &self.repository_arn(repo)))
    }

    /// Evaluates one action on an arbitrary resource ARN (the admin API: users, keys).
    pub async fn decide_on(
        &self,
        meta: &dyn MetadataStore,
        caller: &Caller,
        action: &str,
        resource: &str,
    ) -> Result<Permit, ApiError> {
        let loaded = self.load(meta, caller, None).await?;
        Ok(loaded.check(self, caller, &[action], resource))
    }

    /// A repository's ARN, or for registry-wide actions every repository's.
    fn repository_arn(&self, repo: Option<&RepoName>) -> String {
        self.arns.repository(repo.map(RepoName::as_str).unwrap_or("*"))
    }

    /// The policies that apply to `caller` on `repo`, read once and parsed, with the
    /// request's condition keys.
    async fn load(
        &self,
        meta: &dyn MetadataStore,
        caller: &Caller,
        repo: Option<&RepoName>,
    ) -> Result<Loaded, ApiError> {
        let (identity, resource, tags) = self.policy_set(meta, caller, repo).await?;
        Ok(Loaded { identity, resource, context: self.context(caller, &tags) })
    }

    /// The documents that apply, parsed. A stored document that no longer parses fails the
    /// request (closed) rather than being skipped: skipping a Deny would open access.
    async fn policy_set(
        &self,
        meta: &dyn MetadataStore,
        caller: &Caller,
        repo: Option<&RepoName>,
    ) -> Result<(Vec<PolicyDocument>, Vec<PolicyDocument>, std::collections::BTreeMap<String, String>), ApiError> {
        let user = match &caller.principal {
            Principal::User { name } => Some(name.as_str()),
            Principal::Anonymous => None,
        };
        let set = meta.policies_for_request(user, caller.access_key.as_deref(), repo).await?;
        let parse = |records: &[PolicyRecord]| -> Result<Vec<PolicyDocument>, ApiError> {
            records
                .iter()
                .map(|r| {
                    PolicyDocument::parse(&r.document, admin::kind_of(&r.target))
                        .map_err(|e| ApiError::Internal(format!("stored policy {:?} {}: {e}", r.target, r.name)))
                })
                .collect()
        };
        Ok((parse(&set.identity)?, parse(&set.resource)?, set.resource_tags))
    }

    /// The condition keys of a request.
    fn context(&self, caller: &Caller, tags: &std::collections::BTreeMap<String, String>) -> Context {
        let now = std::time::SystemTime::now();
        let mut c = Context::new()
            .with("aws:SourceIp", caller.origin.ip.to_string())
            .with("aws:CurrentTime", humantime::format_rfc3339_seconds(now).to_string())
            .with("aws:EpochTime", unix_now().to_string())
            .with("aws:SecureTransport", caller.origin.secure.to_string());
        match &caller.principal {
            Principal::User { name } => {
                c = c
                    .with("aws:username", name.clone())
                    .with("aws:userid", name.clone())
                    .with("aws:PrincipalArn", self.arns.user(name))
                    .with("aws:PrincipalType", "User");
            }
            Principal::Anonymous => c = c.with("aws:PrincipalType", "Anonymous"),
        }
        for (k, v) in tags {
            c = c.with(&format!("ecr:ResourceTag/{k}"), v.clone()).with(&format!("aws:ResourceTag/{k}"), v.clone());
        }
        c
    }

    /// What `who` is granted of `scopes`: for each, the actions every ECR action of which
    /// policy allows (a partial or empty grant is not an error). Scopes naming the same
    /// resource are merged.
    pub async fn grant(
        &self,
        meta: &dyn MetadataStore,
        who: Option<&SignedIn>,
        origin: Origin,
        scopes: &[Scope],
    ) -> Result<Vec<ResourceActions>, ApiError> {
        let caller = Caller {
            principal: Self::principal(who),
            access_key: who.and_then(|w| w.access_key.clone()),
            grant: None,
            origin,
        };
        let mut wanted: Vec<(String, String, Vec<String>)> = Vec::new();
        for s in scopes {
            match wanted.iter_mut().find(|(t, n, _)| *t == s.resource_type && *n == s.name) {
                Some((_, _, actions)) => actions.extend(s.actions.iter().cloned()),
                None => wanted.push((s.resource_type.clone(), s.name.clone(), s.actions.clone())),
            }
        }
        let mut granted = Vec::new();
        for (resource_type, name, mut requested) in wanted {
            requested.sort();
            requested.dedup();
            let repo = match resource_type.as_str() {
                "repository" => match name.parse::<RepoName>() {
                    Ok(r) => Some(r),
                    Err(_) => continue,
                },
                "registry" if name == "catalog" => None,
                _ => continue,
            };
            // One read of the policies per resource, however many actions were asked for.
            let loaded = self.load(meta, &caller, repo.as_ref()).await?;
            let arn = self.repository_arn(repo.as_ref());
            let mut actions_granted = Vec::new();
            for action in requested {
                let Some(ecr) = actions::for_scope_action(&resource_type, &action) else { continue };
                if loaded.check(self, &caller, ecr, &arn) == Permit::Allow {
                    actions_granted.push(action);
                }
            }
            if !actions_granted.is_empty() {
                granted.push(ResourceActions { resource_type, name, actions: actions_granted });
            }
        }
        Ok(granted)
    }
}

/// Parsed policies and condition keys for one caller and resource.
struct Loaded {
    identity: Vec<PolicyDocument>,
    resource: Vec<PolicyDocument>,
    context: Context,
}

impl Loaded {
    /// Allowed when every one of `ecr_actions` on `resource` is; the first explicit Deny is
    /// reported with its Sid.
    fn check(&self, auth: &Authority, caller: &Caller, ecr_actions: &[&str], resource: &str) -> Permit {
        let policies = Policies { identity: &self.identity, resource: &self.resource };
        for action in ecr_actions {
            let req = Request { principal: &caller.principal, action, resource, context: &self.context };
            match berth_auth::policy::evaluate(&policies, &req, &auth.arns) {
                Decision::Allow => {}
                Decision::ExplicitDeny { sid } => return Permit::Deny(Some(sid.unwrap_or_else(|| "(no Sid)".into()))),
                Decision::ImplicitDeny => return Permit::Deny(None),
            }
        }
        Permit::Allow
    }
}

/// Whether a token's grant covers `action` on a resource (`*` covers every action).
fn covers(grant: &[ResourceActions], resource_type: &str, name: &str, action: &str) -> bool {
    grant.iter().any(|g| {
        g.resource_type == resource_type && g.name == name && g.actions.iter().any(|a| a == action || a == "*")
    })
}

/// A decision, with the Sid of the statement that denied explicitly (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permit {
    Allow,
    Deny(Option<String>),
}

/// Passwords recently verified with argon2, kept as salted SHA-256 of (user, password,
/// stored hash): a changed password or hash no longer matches, and nothing in memory is
/// the password itself.
struct PasswordMemory {
    salt: [u8; 16],
    entries: Mutex<std::collections::HashMap<[u8; 32], Instant>>,
}

impl PasswordMemory {
    fn new() -> PasswordMemory {
        PasswordMemory { salt: *uuid::Uuid::new_v4().as_bytes(), entries: Mutex::new(Default::default()) }
    }

    fn key(&self, user: &str, password: &str, phc: &str) -> [u8; 32] {
        let mut h = sha2::Sha256::new();
        for part in [&self.salt[..], user.as_bytes(), &[0], password.as_bytes(), &[0], phc.as_bytes()] {
            h.update(part);
        }
        h.finalize().into()
    }

    fn recall(&self, user: &str, password: &str, phc: &str) -> bool {
        let key = self.key(user, password, phc);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(&key).is_some_and(|until| *until > Instant::now())
    }

    fn remember(&self, user: &str, password: &str, phc: &str) {
        let key = self.key(user, password, phc);
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= 10_000 {
            entries.retain(|_, until| *until > now);
        }
        entries.insert(key, now + PASSWORD_MEMORY);
    }
}

/// Registry tokens whose signature and claims were verified, until they expire. The key is
/// a SHA-256 of the whole token, so a token that differs in any byte is verified afresh.
#[derive(Default)]
struct VerifiedTokens {
    entries: Mutex<std::collections::HashMap<[u8; 32], Arc<Claims>>>,
}

impl VerifiedTokens {
    /// More entries than this and the expired ones are dropped; if that is not enough, all.
    const MAX: usize = 50_000;

    fn recall(&self, key: &[u8; 32], now: i64) -> Option<Arc<Claims>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // Expiry is checked on every use, with the verifier's leeway: a remembered token
        // stops working exactly when a fresh verification would refuse it.
        entries.get(key).filter(|c| c.exp + LEEWAY.as_secs() as i64 > now).cloned()
    }

    fn remember(&self, key: [u8; 32], claims: Arc<Claims>, now: i64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= Self::MAX {
            entries.retain(|_, c| c.exp + LEEWAY.as_secs() as i64 > now);
            if entries.len() >= Self::MAX {
                entries.clear();
            }
        }
        entries.insert(key, claims);
    }
}
