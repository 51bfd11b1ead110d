//! The pull-through cache: repositories under a rule's prefix are filled from another
//! registry when a client asks for what Berth does not have.
//!
//! - [`config`]: `[[pull_through.rules]]` in berth.toml.
//! - this module: a rule ([`RuleSpec`]), its credentials (sealed at rest under the key ring
//!   like webhook secrets), and rule management shared by the admin API, the CLI and ECR's
//!   `Create/Describe/Update/Delete/ValidatePullThroughCacheRule`.
//! - [`flight`]: the coalescing of concurrent fetches of one thing into one upstream request,
//!   and the brief memory of upstream 404s; both bounded.
//! - [`fetch`]: the miss path: a manifest or blob asked for in a repository under a rule and
//!   not held (or a tag due for its re-check) is fetched upstream, verified, stored, served.
//!
//! Cached content is ordinary content once stored: the repository is created through the
//! creation templates applied for `PULL_THROUGH_CACHE`, blobs are sealed with its key,
//! counted in usage, subject to quotas, lifecycle and GC. Invariant 11: nothing fetched
//! becomes visible before its digest is verified; coalesced fetches share one request.

pub mod config;
pub mod fetch;
pub mod flight;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use berth_oci::RepoName;
use berth_storage::crypt::secret;
use berth_storage::metadata::{PullThroughRuleRecord, unix_now};
use serde::{Deserialize, Serialize};

use super::Registry;
use crate::auth::SecretSealing;
use crate::error::{ApiError, ApiResult};
use crate::rules::templates::Prefix;
use crate::upstream::{self, Upstream, UpstreamConfig};

pub use config::{PullThroughConfig, RuleConfig};

/// The most rules the metadata store may hold (ECR's quota is 50 per registry).
pub const MAX_RULES: usize = 100;
/// The shortest `refresh`: a tag is never checked upstream more often than this.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Each request to an upstream: connect and headers (a body streams as long as it takes).
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the stored rules are trusted before they are read again (a replica sees another
/// replica's change within this; its own at once).
const RULES_TTL: Duration = Duration::from_secs(5);

/// Upstream credentials. Never in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Credentials {
    Anonymous,
    Basic { username: String, password: String },
    Ecr { access_key_id: String, secret_access_key: String, region: String, endpoint: Option<String> },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username:?}, ***)"),
            Credentials::Ecr { access_key_id, region, .. } => write!(f, "Ecr({access_key_id:?}, {region:?}, ***)"),
        }
    }
}

/// The credential fields as an input gives them (configuration, admin API).
#[derive(Default, Clone)]
pub struct CredentialParts {
    pub username: Option<String>,
    pub password: Option<String>,
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<String>,
    pub aws_region: Option<String>,
    pub ecr_endpoint: Option<String>,
}

impl Credentials {
    /// Basic (`username` + `password`), ECR (`aws_access_key_id` + `aws_secret_access_key` +
    /// `aws_region`), or none; any other combination is refused with what is missing.
    pub fn from_parts(p: CredentialParts) -> Result<Credentials, String> {
        let basic = p.username.is_some() || p.password.is_some();
        let ecr = p.aws_access_key_id.is_some()
            || p.aws_secret_access_key.is_some()
            || p.aws_region.is_some()
            || p.ecr_endpoint.is_some();
        match (basic, ecr) {
            (true, true) => {
                Err("give either username and password, or the aws_* keys of an ECR upstream, not both".into())
            }
            (true, false) => match (p.username, p.password) {
                (Some(username), Some(password)) if !username.is_empty() && !password.is_empty() => {
                    Ok(Credentials::Basic { username, password })
                }
                _ => Err("username and password go together, neither empty".into()),
            },
            (false, true) => match (p.aws_access_key_id, p.aws_secret_access_key, p.aws_region) {
                (Some(access_key_id), Some(secret_access_key), Some(region))
                    if !access_key_id.is_empty() && !secret_access_key.is_empty() && !region.is_empty() =>
                {
                    if let Some(e) = &p.ecr_endpoint {
                        check_url("ecr_endpoint", e)?;
                    }
                    Ok(Credentials::Ecr { access_key_id, secret_access_key, region, endpoint: p.ecr_endpoint })
                }
                _ => Err("an ECR upstream needs aws_access_key_id, aws_secret_access_key and aws_region".into()),
            },
            (false, false) => Ok(Credentials::Anonymous),
        }
    }

    /// `none`, `basic` or `ecr`, for views.
    pub fn kind(&self) -> &'static str {
        match self {
            Credentials::Anonymous => "none",
            Credentials::Basic { .. } => "basic",
            Credentials::Ecr { .. } => "ecr",
        }
    }

    fn for_client(&self) -> upstream::Credentials {
        match self.clone() {
            Credentials::Anonymous => upstream::Credentials::Anonymous,
            Credentials::Basic { username, password } => upstream::Credentials::Basic { username, password },
            Credentials::Ecr { access_key_id, secret_access_key, region, endpoint } => {
                upstream::Credentials::Ecr { access_key_id, secret_access_key, region, endpoint }
            }
        }
    }
}

fn check_url(what: &str, url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', '@', ' ']) => Ok(()),
        _ => Err(format!(
            "{what} {url:?} must be https://host[:port] or http://host[:port], with no path (e.g. https://registry-1.docker.io)"
        )),
    }
}

/// A rule, checked: where names under `prefix` come from.
#[derive(Clone, PartialEq)]
pub struct RuleSpec {
    pub prefix: Prefix,
    /// `https://host[:port]` (or `http://`), no trailing `/`.
    pub upstream_url: String,
    pub upstream_prefix: Option<String>,
    pub credentials: Credentials,
    pub refresh: Duration,
    /// Certificate authorities to trust for the upstream (configured rules only).
    pub ca_cert_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for RuleSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSpec")
            .field("prefix", &self.prefix)
            .field("upstream_url", &self.upstream_url)
            .field("upstream_prefix", &self.upstream_prefix)
            .field("credentials", &self.credentials)
            .field("refresh", &self.refresh)
            .finish()
    }
}

impl RuleSpec {
    pub fn new(
        prefix: Prefix,
        upstream_url: &str,
        upstream_prefix: Option<&str>,
        credentials: Credentials,
        refresh: Duration,
        ca_cert_pem: Option<Vec<u8>>,
    ) -> Result<RuleSpec, String> {
        let upstream_url = upstream_url.trim_end_matches('/');
        check_url("upstream", upstream_url)?;
        let upstream_prefix = match upstream_prefix {
            None | Some("") => None,
            Some(p) => match p.parse::<Prefix>() {
                Ok(Prefix::Namespace(ns)) => Some(ns),
                Ok(Prefix::Root) => None,
                Err(e) => return Err(format!("upstream_prefix: {e}")),
            },
        };
        if refresh < MIN_REFRESH {
            return Err(format!("refresh must be at least {}", humantime::format_duration(MIN_REFRESH)));
        }
        Ok(RuleSpec {
            prefix,
            upstream_url: upstream_url.to_owned(),
            upstream_prefix,
            credentials,
            refresh,
            ca_cert_pem,
        })
    }

    /// The upstream name of `repo`, which this rule covers.
    pub fn upstream_name(&self, repo: &RepoName) -> String {
        let rest = match &self.prefix {
            Prefix::Root => repo.as_str(),
            Prefix::Namespace(ns) => repo.as_str().get(ns.len() + 1..).unwrap_or_default(),
        };
        match &self.upstream_prefix {
            Some(up) => format!("{up}/{rest}"),
            None => rest.to_owned(),
        }
    }
}

/// Where a rule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleSource {
    Config,
    Api,
}

/// A rule in effect.
#[derive(Debug, Clone)]
pub struct Rule {
    pub spec: RuleSpec,
    pub source: RuleSource,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A rule as the admin API and the CLI show it: never its secrets.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleView {
    pub prefix: String,
    pub upstream: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_prefix: Option<String>,
    /// `none`, `basic` or `ecr`.
    pub credentials: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_access_key_id: Option<String>,
    pub refresh: String,
    pub refresh_seconds: u64,
    pub source: RuleSource,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Rule {
    pub fn view(&self) -> RuleView {
        let s = &self.spec;
        RuleView {
            prefix: s.prefix.to_string(),
            upstream: s.upstream_url.clone(),
            upstream_prefix: s.upstream_prefix.clone(),
            credentials: s.credentials.kind(),
            username: match &s.credentials {
                Credentials::Basic { username, .. } => Some(username.clone()),
                _ => None,
            },
            aws_access_key_id: match &s.credentials {
                Credentials::Ecr { access_key_id, .. } => Some(access_key_id.clone()),
                _ => None,
            },
            refresh: humantime::format_duration(s.refresh).to_string(),
            refresh_seconds: s.refresh.as_secs(),
            source: self.source,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// A rule as the admin API, the CLI and the ECR API give it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    /// Required on create; on update it must be the rule's (or absent).
    #[serde(default)]
    pub prefix: Option<String>,
    pub upstream: String,
    #[serde(default)]
    pub upstream_prefix: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub aws_access_key_id: Option<String>,
    #[serde(default)]
    pub aws_secret_access_key: Option<String>,
    #[serde(default)]
    pub aws_region: Option<String>,
    #[serde(default)]
    pub ecr_endpoint: Option<String>,
    /// A duration such as `24h` or `90s`; default 24h.
    #[serde(default)]
    pub refresh: Option<String>,
}

impl RuleInput {
    fn spec(&self, prefix: Prefix) -> ApiResult<RuleSpec> {
        let credentials = Credentials::from_parts(CredentialParts {
            username: self.username.clone(),
            password: self.password.clone(),
            aws_access_key_id: self.aws_access_key_id.clone(),
            aws_secret_access_key: self.aws_secret_access_key.clone(),
            aws_region: self.aws_region.clone(),
            ecr_endpoint: self.ecr_endpoint.clone(),
        })
        .map_err(ApiError::Invalid)?;
        let refresh = match &self.refresh {
            Some(text) => humantime::parse_duration(text).map_err(|e| {
                ApiError::Invalid(format!("refresh {text:?} is not a duration like 90s, 10m or 24h: {e}"))
            })?,
            None => config::DEFAULT_REFRESH,
        };
        RuleSpec::new(prefix, &self.upstream, self.upstream_prefix.as_deref(), credentials, refresh, None)
            .map_err(ApiError::Invalid)
    }
}

/// The stored form of a rule's credentials: JSON sealed under the active KEK, bound to the
/// rule's prefix (`sealed:v1:<base64>`); plain JSON only when no KEK exists (encryption at
/// rest off), as webhook secrets are kept.
const SEALED: &str = "sealed:v1:";

fn sealing_context(prefix: &str) -> Vec<u8> {
    format!("berth/pull-through-credentials/{prefix}").into_bytes()
}

fn seal_credentials(sealing: &SecretSealing, prefix: &str, c: &Credentials) -> ApiResult<Option<String>> {
    if *c == Credentials::Anonymous {
        return Ok(None);
    }
    let json = serde_json::to_string(c).map_err(|e| ApiError::Internal(format!("credentials: {e}")))?;
    match &sealing.kek {
        Some(kek) => secret::seal(kek, json.as_bytes(), &sealing_context(prefix))
            .map(|sealed| Some(format!("{SEALED}{}", STANDARD.encode(sealed))))
            .map_err(|e| ApiError::Internal(format!("sealing the credentials of pull-through rule {prefix}: {e}"))),
        None => Ok(Some(json)),
    }
}

fn open_credentials(sealing: &SecretSealing, prefix: &str, stored: Option<&str>) -> ApiResult<Credentials> {
    let Some(stored) = stored else { return Ok(Credentials::Anonymous) };
    let json = match stored.strip_prefix(SEALED) {
        Some(b64) => {
            let sealed = STANDARD.decode(b64).map_err(|_| {
                ApiError::Internal(format!("the sealed credentials of pull-through rule {prefix} are malformed"))
            })?;
            let plain = secret::open(&sealing.ring, &sealed, &sealing_context(prefix)).map_err(|e| {
                ApiError::Internal(format!("the credentials of pull-through rule {prefix} do not open: {e}"))
            })?;
            String::from_utf8(plain).map_err(|_| {
                ApiError::Internal(format!("the credentials of pull-through rule {prefix} are not text"))
            })?
        }
        None => stored.to_owned(),
    };
    serde_json::from_str(&json)
        .map_err(|_| ApiError::Internal(format!("the credentials of pull-through rule {prefix} do not parse")))
}

/// What the pull-through cache keeps in memory, all bounded: the configured rules, the
/// stored ones read at most every few seconds, one client per rule, the fetches in flight
/// and the recent upstream 404s.
pub struct PullThroughCache {
    configured: Vec<Rule>,
    stored: Mutex<Option<(Instant, std::sync::Arc<Vec<Rule>>)>>,
    /// One client per prefix, with the rule it was made for (a changed rule gets a new one);
    /// at most one per rule in effect.
    clients: Mutex<HashMap<String, (RuleSpec, Upstream)>>,
    pub(crate) flights: flight::Flights,
    pub(crate) misses: flight::Misses,
}

impl std::fmt::Debug for PullThroughCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullThroughCache").field("configured", &self.configured.len()).finish()
    }
}

impl PullThroughCache {
    /// The cache with the configured rules (already validated by the configuration).
    pub fn new(config: &PullThroughConfig) -> Result<PullThroughCache, String> {
        let now = unix_now();
        let configured = config
            .rules
            .iter()
            .map(|r| {
                Ok(Rule {
                    spec: r.spec().map_err(|e| format!("pull_through.rules prefix {:?}: {e}", r.prefix))?,
                    source: RuleSource::Config,
                    created_at: now,
                    updated_at: now,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(PullThroughCache {
            configured,
            stored: Mutex::new(None),
            clients: Mutex::new(HashMap::new()),
            flights: flight::Flights::new(flight::MAX_FLIGHTS),
            misses: flight::Misses::new(flight::MAX_MISSES, flight::MISS_TTL),
        })
    }

    fn forget_stored(&self) {
        *self.stored.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The client for `spec`, made once per rule version.
    pub(crate) fn client(&self, spec: &RuleSpec) -> ApiResult<Upstream> {
        let key = spec.prefix.to_string();
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((made_for, client)) = clients.get(&key)
            && made_for == spec
        {
            return Ok(client.clone());
        }
        let client = Upstream::new(UpstreamConfig {
            url: spec.upstream_url.clone(),
            credentials: spec.credentials.for_client(),
            ca_cert_pem: spec.ca_cert_pem.clone(),
            timeout: UPSTREAM_TIMEOUT,
        })
        .map_err(|e| ApiError::Internal(format!("the client for upstream {}: {e}", spec.upstream_url)))?;
        // Bounded: one per rule in effect; a burst of changed rules just starts over.
        if clients.len() > MAX_RULES * 2 {
            clients.clear();
        }
        clients.insert(key, (spec.clone(), client.clone()));
        Ok(client)
    }
}

impl Registry {
    /// Every rule in effect: the configured ones, and the stored ones whose prefix no
    /// configured rule has; by prefix.
    pub async fn pull_through_rules(&self) -> ApiResult<Vec<Rule>> {
        let stored = self.stored_pull_through_rules().await?;
        let cache = &self.pull_through;
        let mut all: Vec<Rule> = cache.configured.clone();
        all.extend(stored.iter().filter(|s| !cache.configured.iter().any(|c| c.spec.prefix == s.spec.prefix)).cloned());
        all.sort_by(|a, b| a.spec.prefix.as_str().cmp(b.spec.prefix.as_str()));
        Ok(all)
    }

    async fn stored_pull_through_rules(&self) -> ApiResult<std::sync::Arc<Vec<Rule>>> {
        let cache = &self.pull_through;
        if let Some((at, rules)) = cache.stored.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
            && at.elapsed() < RULES_TTL
        {
            return Ok(rules.clone());
        }
        let sealing = self.auth.sealing();
        let mut rules = Vec::new();
        for r in self.meta.pull_through_rules().await? {
            match stored_rule(sealing, &r) {
                Ok(rule) => rules.push(rule),
                // One bad record must not stop the others: it is logged and skipped (it can
                // be deleted and created again).
                Err(e) => {
                    tracing::error!(pull_through.prefix = %r.prefix, error = %e, "a stored pull-through rule is unusable")
                }
            }
        }
        let rules = std::sync::Arc::new(rules);
        *cache.stored.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), rules.clone()));
        Ok(rules)
    }

    /// The rule covering `repo`: the longest matching prefix, `ROOT` last.
    pub async fn pull_through_rule_for(&self, repo: &RepoName) -> ApiResult<Option<Rule>> {
        let cache = &self.pull_through;
        // Read at most every few seconds (RULES_TTL), so a pull costs no query for them.
        let stored = self.stored_pull_through_rules().await?;
        if cache.configured.is_empty() && stored.is_empty() {
            return Ok(None);
        }
        let best = cache
            .configured
            .iter()
            .chain(stored.iter().filter(|s| !cache.configured.iter().any(|c| c.spec.prefix == s.spec.prefix)))
            .filter(|r| r.spec.prefix.matches(repo.as_str()))
            .max_by_key(|r| r.spec.prefix.rank());
        Ok(best.cloned())
    }

    /// The rule with exactly `prefix`.
    pub async fn pull_through_rule(&self, prefix: &str) -> ApiResult<Rule> {
        let prefix = parse_prefix(prefix)?;
        self.pull_through_rules()
            .await?
            .into_iter()
            .find(|r| r.spec.prefix == prefix)
            .ok_or_else(|| rule_not_found(&prefix))
    }

    /// Stores a new rule; refused when one with the prefix exists (stored or configured).
    pub async fn create_pull_through_rule(&self, input: &RuleInput) -> ApiResult<Rule> {
        let prefix = parse_prefix(input.prefix.as_deref().unwrap_or_default())?;
        let spec = input.spec(prefix.clone())?;
        if self.pull_through.configured.iter().any(|c| c.spec.prefix == prefix) {
            return Err(ApiError::Conflict(format!(
                "a pull-through cache rule with prefix {prefix} exists in the configuration (berth.toml)"
            )));
        }
        if self.meta.pull_through_rules().await?.len() >= MAX_RULES {
            return Err(ApiError::LimitReached(format!(
                "this registry holds at most {MAX_RULES} pull-through cache rules; delete one first"
            )));
        }
        let record = self.rule_record(&spec)?;
        if !self.meta.create_pull_through_rule(&record).await? {
            return Err(ApiError::Conflict(format!("a pull-through cache rule with prefix {prefix} already exists")));
        }
        self.pull_through.forget_stored();
        tracing::info!(pull_through.prefix = %prefix, upstream.url = %spec.upstream_url, "pull-through cache rule created");
        self.pull_through_rule(prefix.as_str()).await
    }

    /// Replaces a stored rule's settings (not a configured one's).
    pub async fn update_pull_through_rule(&self, prefix: &str, input: &RuleInput) -> ApiResult<Rule> {
        let prefix = parse_prefix(prefix)?;
        if let Some(given) = &input.prefix
            && parse_prefix(given)? != prefix
        {
            return Err(ApiError::Invalid(format!("prefix {given:?} is not the rule's ({prefix})")));
        }
        self.refuse_configured(&prefix)?;
        let spec = input.spec(prefix.clone())?;
        let record = self.rule_record(&spec)?;
        if !self.meta.update_pull_through_rule(&record).await? {
            return Err(rule_not_found(&prefix));
        }
        self.pull_through.forget_stored();
        tracing::info!(pull_through.prefix = %prefix, upstream.url = %spec.upstream_url, "pull-through cache rule updated");
        self.pull_through_rule(prefix.as_str()).await
    }

    /// Deletes a stored rule; the repositories it filled stay, as ordinary repositories.
    pub async fn delete_pull_through_rule(&self, prefix: &str) -> ApiResult<Rule> {
        let prefix = parse_prefix(prefix)?;
        self.refuse_configured(&prefix)?;
        let deleted =
            self.meta.delete_pull_through_rule(prefix.as_str()).await?.ok_or_else(|| rule_not_found(&prefix))?;
        self.pull_through.forget_stored();
        tracing::info!(pull_through.prefix = %prefix, "pull-through cache rule deleted");
        stored_rule(self.auth.sealing(), &deleted)
    }

    /// Whether the rule's upstream accepts its credentials (`GET /v2/`): `Err` with the
    /// reason when not.
    pub async fn validate_pull_through_rule(&self, prefix: &str) -> ApiResult<(Rule, Result<(), String>)> {
        let rule = self.pull_through_rule(prefix).await?;
        let client = self.pull_through.client(&rule.spec)?;
        let outcome = client.check().await.map_err(|e| e.to_string());
        Ok((rule, outcome))
    }

    fn refuse_configured(&self, prefix: &Prefix) -> ApiResult<()> {
        if self.pull_through.configured.iter().any(|c| &c.spec.prefix == prefix) {
            return Err(ApiError::Invalid(format!(
                "the pull-through cache rule {prefix} comes from the configuration (berth.toml): change it there"
            )));
        }
        Ok(())
    }

    fn rule_record(&self, spec: &RuleSpec) -> ApiResult<PullThroughRuleRecord> {
        let prefix = spec.prefix.to_string();
        Ok(PullThroughRuleRecord {
            credentials: seal_credentials(self.auth.sealing(), &prefix, &spec.credentials)?,
            prefix,
            upstream_url: spec.upstream_url.clone(),
            upstream_prefix: spec.upstream_prefix.clone(),
            refresh_seconds: i64::try_from(spec.refresh.as_secs()).unwrap_or(i64::MAX),
            created_at: 0,
            updated_at: 0,
        })
    }
}

fn stored_rule(sealing: &SecretSealing, r: &PullThroughRuleRecord) -> ApiResult<Rule> {
    let prefix: Prefix = r.prefix.parse().map_err(ApiError::Internal)?;
    let credentials = open_credentials(sealing, &r.prefix, r.credentials.as_deref())?;
    let refresh = Duration::from_secs(u64::try_from(r.refresh_seconds).unwrap_or(0)).max(MIN_REFRESH);
    let spec = RuleSpec::new(prefix, &r.upstream_url, r.upstream_prefix.as_deref(), credentials, refresh, None)
        .map_err(ApiError::Internal)?;
    Ok(Rule { spec, source: RuleSource::Api, created_at: r.created_at, updated_at: r.updated_at })
}

fn parse_prefix(text: &str) -> ApiResult<Prefix> {
    text.parse::<Prefix>().map_err(ApiError::Invalid)
}

fn rule_not_found(prefix: &Prefix) -> ApiError {
    ApiError::NotFound(format!("there is no pull-through cache rule with prefix {prefix}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_storage::crypt::{Kek, KeyRing};
    use std::sync::Arc;

    fn spec(prefix: &str, upstream_prefix: Option<&str>) -> RuleSpec {
        RuleSpec::new(
            prefix.parse().unwrap(),
            "https://registry-1.docker.io/",
            upstream_prefix,
            Credentials::Anonymous,
            Duration::from_secs(60),
            None,
        )
        .unwrap()
    }

    #[test]
    fn upstream_names() {
        let repo = |s: &str| s.parse::<RepoName>().unwrap();
        assert_eq!(spec("hub", None).upstream_name(&repo("hub/library/alpine")), "library/alpine");
        assert_eq!(spec("hub", Some("library")).upstream_name(&repo("hub/alpine")), "library/alpine");
        assert_eq!(spec("ROOT", None).upstream_name(&repo("library/alpine")), "library/alpine");
        assert_eq!(spec("a/b", Some("x/")).upstream_name(&repo("a/b/c/d")), "x/c/d");
        assert_eq!(spec("hub", None).upstream_url, "https://registry-1.docker.io");
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        let bad = |url: &str| {
            RuleSpec::new(Prefix::Root, url, None, Credentials::Anonymous, Duration::from_secs(60), None).unwrap_err()
        };
        assert!(bad("registry-1.docker.io").contains("https://host"));
        assert!(bad("https://host/path").contains("no path"));
        assert!(bad("ftp://host").contains("https://host"));
        let short = RuleSpec::new(Prefix::Root, "https://h", None, Credentials::Anonymous, Duration::ZERO, None);
        assert!(short.unwrap_err().contains("refresh"));
        let half = Credentials::from_parts(CredentialParts { username: Some("u".into()), ..Default::default() });
        assert!(half.unwrap_err().contains("together"));
        let both = Credentials::from_parts(CredentialParts {
            username: Some("u".into()),
            password: Some("p".into()),
            aws_region: Some("r".into()),
            ..Default::default()
        });
        assert!(both.unwrap_err().contains("not both"));
    }

    #[test]
    fn credentials_are_sealed_bound_to_the_prefix_and_never_shown() {
        let ring = Arc::new(KeyRing::empty());
        ring.insert(Kek::from_raw("default.1", [7; 32]).unwrap());
        let sealing = SecretSealing { ring: ring.clone(), kek: Some(ring.get("default.1").unwrap()) };
        let c = Credentials::Basic { username: "bot".into(), password: "hunter2-secret".into() };
        let stored = seal_credentials(&sealing, "hub", &c).unwrap().unwrap();
        assert!(stored.starts_with(SEALED) && !stored.contains("hunter2"));
        assert_eq!(open_credentials(&sealing, "hub", Some(&stored)).unwrap(), c);
        assert!(open_credentials(&sealing, "ghcr", Some(&stored)).is_err(), "bound to its rule");
        assert_eq!(seal_credentials(&sealing, "hub", &Credentials::Anonymous).unwrap(), None);
        assert!(!format!("{c:?}").contains("hunter2"));
        let rule = Rule {
            spec: RuleSpec { credentials: c, ..spec("hub", None) },
            source: RuleSource::Api,
            created_at: 0,
            updated_at: 0,
        };
        assert!(!format!("{rule:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&rule.view()).unwrap().contains("hunter2"));
    }
}
