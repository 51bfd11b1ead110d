//! Replication to other registries (README "Replication"): ECR's replication configuration
//! (rules of destinations and `PREFIX_MATCH` repository filters, registry-wide), with
//! destinations that are registries by URL and credentials rather than AWS regions.
//!
//! Each destination is a subscription of kind replication in the events outbox
//! (`berth_storage::metadata::events`): a manifest push matching one of its rules is owed to
//! it in the push's own transaction, and the webhook dispatcher, when it claims such a
//! delivery, hands it to [`copy`], which copies the image (blobs, children, the manifest by
//! digest, referrers, then the tag). So replication is at least once, in order per
//! repository, with the dispatcher's leases, backoff, dead letters, replay and delivery log
//! (`berth deliveries ... --webhook replication.<name>`). Deletions are not replicated.
//!
//! The configuration comes from `[replication]` in the configuration file (then it is
//! replaced at every start and not editable through the API), or from the admin API, the
//! CLI and ECR's `PutReplicationConfiguration`. Credentials are sealed at rest like webhook
//! secrets ([`crate::events::sealing`]), inside each destination's subscription; the stored
//! document and every view leave them out.

pub mod copy;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use berth_oci::{Digest, Reference, RepoName};
use berth_storage::metadata::events::unix_now_ms;
use berth_storage::metadata::{
    DeliveryFilter, DeliveryState, EventKind, PayloadFormat, ReplicationState, Subscription, SubscriptionKind,
    SubscriptionSource,
};
use serde::{Deserialize, Serialize};

use super::Registry;
use crate::config::Secret;
use crate::error::{ApiError, ApiResult};

/// Subscriptions of destinations are named `replication.<destination>`.
pub const SUBSCRIPTION_PREFIX: &str = "replication.";
/// A destination's `registry_id` when none is given (ECR's shape wants 12 digits).
pub const DEFAULT_REGISTRY_ID: &str = "000000000000";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
/// ECR's bounds.
const MAX_RULES: usize = 10;
const MAX_DESTINATIONS: usize = 100;
const MAX_FILTERS: usize = 100;

/// `[replication]`, and the body of `PUT /api/v1/replication` (`berth replication put`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// `[[replication.destinations]]`: the registries images are copied to.
    pub destinations: Vec<DestinationSpec>,
    /// `[[replication.rules]]`: which repositories go to which destinations.
    pub rules: Vec<Rule>,
}

impl ReplicationConfig {
    pub fn is_empty(&self) -> bool {
        self.destinations.is_empty() && self.rules.is_empty()
    }
}

/// One destination as given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    /// `[0-9a-z-]{2,25}`: ECR's `region` shape, as which ECR's API shows it.
    pub name: String,
    /// `https://host[:port]` or `http://host[:port]`.
    pub url: String,
    /// The 12 digits ECR's API shows as the destination's `registryId`; default 000000000000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_id: Option<String>,
    /// Basic credentials (sent as Basic, or exchanged at the destination's token service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Omitted on a put through the API: the stored password of the same user is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// An ECR destination (or another Berth through its ECR API): access keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecr: Option<EcrCredentialsSpec>,
    /// CA certificates (PEM) to trust for the destination, besides the system's: a file...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_file: Option<PathBuf>,
    /// ... or the PEM text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_pem: Option<String>,
    /// Per request to the destination (connect and headers); e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Attempts before an image's copy is dead-lettered (FAILED); default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

/// ECR access keys for a destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcrCredentialsSpec {
    pub access_key_id: String,
    /// Omitted on a put through the API: the stored secret of the same key is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<Secret>,
    pub region: String,
    /// Default `https://api.ecr.<region>.amazonaws.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// One rule: ECR's `ReplicationRule`, its destinations by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub destinations: Vec<String>,
    /// None: every repository.
    #[serde(default)]
    pub repository_filters: Vec<RepositoryFilter>,
}

/// ECR's `RepositoryFilter`: repositories whose name starts with `filter`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryFilter {
    pub filter: String,
    #[serde(default = "prefix_match")]
    pub filter_type: String,
}

fn prefix_match() -> String {
    PREFIX_MATCH.to_owned()
}

pub const PREFIX_MATCH: &str = "PREFIX_MATCH";

/// A destination as stored and shown: everything but its secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    pub name: String,
    pub url: String,
    pub registry_id: String,
    /// `anonymous`, `basic` or `ecr`.
    pub auth: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecr_access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecr_region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecr_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_pem: Option<String>,
    pub timeout_ms: u64,
    pub max_attempts: u32,
}

/// The stored configuration (`replication_config.document`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReplication {
    pub destinations: Vec<Destination>,
    pub rules: Vec<Rule>,
}

/// The configuration as the admin API and the CLI show it.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicationView {
    /// `config` (the configuration file's `[replication]`), `api`, or `none`.
    pub source: String,
    pub destinations: Vec<Destination>,
    pub rules: Vec<Rule>,
}

/// What a destination's subscription holds, sealed, as its secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "auth", rename_all = "lowercase")]
pub enum SealedCredentials {
    Anonymous,
    Basic { username: String, password: String },
    Ecr { access_key_id: String, secret_access_key: String, region: String, endpoint: Option<String> },
}

impl std::fmt::Debug for SealedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealedCredentials::Anonymous => f.write_str("Anonymous"),
            SealedCredentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            SealedCredentials::Ecr { access_key_id, .. } => write!(f, "Ecr({access_key_id}, ***)"),
        }
    }
}

/// One image's status at one destination, as the admin API, the CLI and ECR's
/// `DescribeImageReplicationStatus` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusView {
    pub destination: String,
    pub registry_id: String,
    /// PENDING, IN_PROGRESS, COMPLETE or FAILED.
    pub status: ReplicationState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix milliseconds of the last change (0 when only a delivery says so).
    pub updated_ms: i64,
}

/// The status of one image at every destination it is owed to.
#[derive(Debug, Clone, Serialize)]
pub struct ImageStatus {
    pub repository: String,
    pub digest: String,
    pub statuses: Vec<StatusView>,
}

/// `[0-9a-z-]{2,25}`.
fn check_destination_name(name: &str) -> Result<(), String> {
    let ok = (2..=25).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-');
    if ok { Ok(()) } else { Err(format!("destination name {name:?}: 2 to 25 of a-z, 0-9 and -")) }
}

/// ECR's `RepositoryFilterValue`: 2 to 256 characters matching
/// `^(?:[a-z0-9]+(?:[._-][a-z0-9]*)*/)*[a-z0-9]*(?:[._-][a-z0-9]*)*$`: components of
/// `a-z0-9._-` separated by `/`, each but the last starting with a letter or digit (so a
/// trailing `/` is allowed: `prod/`).
fn check_filter(f: &RepositoryFilter) -> Result<(), String> {
    if f.filter_type != PREFIX_MATCH {
        return Err(format!("filter_type {:?}: only PREFIX_MATCH is supported", f.filter_type));
    }
    let v = &f.filter;
    let bad = || {
        format!(
            "filter {v:?}: 2 to 256 of a-z, 0-9, '.', '_', '-' and '/', each part before a '/' starting with a \
             letter or digit"
        )
    };
    if !(2..=256).contains(&v.len()) {
        return Err(bad());
    }
    let parts: Vec<&str> = v.split('/').collect();
    let allowed = |p: &str| p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    let starts = |p: &str| p.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let last = parts.len() - 1;
    let ok = parts.iter().enumerate().all(|(i, p)| allowed(p) && (i == last || starts(p)));
    if ok { Ok(()) } else { Err(bad()) }
}

fn check_url(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("url {url:?}: must be an http:// or https:// URL with a host ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("url {url:?}: must be an http:// or https:// URL with a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("url: put credentials in username/password, not in the URL".into());
    }
    if parsed.path() != "/" || parsed.query().is_some() {
        return Err(format!("url {url:?}: the registry's address only (no path or query)"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// The subscription name of destination `name`.
pub fn subscription_name(name: &str) -> String {
    format!("{SUBSCRIPTION_PREFIX}{name}")
}

/// Checks `spec` and makes it the stored document and each destination's credentials.
/// `keep` gives the credentials stored for a destination, for a spec that omits a secret.
fn validate(
    spec: &ReplicationConfig,
    keep: &BTreeMap<String, SealedCredentials>,
) -> Result<(StoredReplication, Vec<SealedCredentials>), String> {
    if spec.rules.len() > MAX_RULES {
        return Err(format!("at most {MAX_RULES} rules"));
    }
    let mut destinations = Vec::new();
    let mut credentials = Vec::new();
    for d in &spec.destinations {
        check_destination_name(&d.name)?;
        if destinations.iter().any(|x: &Destination| x.name == d.name) {
            return Err(format!("destination {}: named twice", d.name));
        }
        let at = |e: String| format!("destination {}: {e}", d.name);
        let url = check_url(&d.url).map_err(at)?;
        let registry_id = d.registry_id.clone().unwrap_or_else(|| DEFAULT_REGISTRY_ID.to_owned());
        if registry_id.len() != 12 || !registry_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(at(format!("registry_id {registry_id:?}: 12 digits")));
        }
        let kept = keep.get(&d.name);
        let creds = match (&d.username, &d.password, &d.ecr) {
            (None, None, None) => SealedCredentials::Anonymous,
            (Some(_), _, Some(_)) => return Err(at("username and ecr: one kind of credentials".into())),
            (None, Some(_), _) => return Err(at("password without a username".into())),
            (Some(u), Some(p), None) => {
                SealedCredentials::Basic { username: u.clone(), password: p.expose().to_owned() }
            }
            (Some(u), None, None) => match kept {
                Some(SealedCredentials::Basic { username, password }) if username == u => {
                    SealedCredentials::Basic { username: u.clone(), password: password.clone() }
                }
                _ => return Err(at(format!("username {u:?} without a password"))),
            },
            (None, None, Some(e)) => {
                if e.access_key_id.is_empty() || e.region.is_empty() {
                    return Err(at("ecr: access_key_id and region are required".into()));
                }
                if let Some(endpoint) = &e.endpoint {
                    check_url(endpoint).map_err(|m| at(format!("ecr.endpoint: {m}")))?;
                }
                let secret = match (&e.secret_access_key, kept) {
                    (Some(s), _) => s.expose().to_owned(),
                    (None, Some(SealedCredentials::Ecr { access_key_id, secret_access_key, .. }))
                        if *access_key_id == e.access_key_id =>
                    {
                        secret_access_key.clone()
                    }
                    (None, _) => return Err(at("ecr: secret_access_key is required".into())),
                };
                SealedCredentials::Ecr {
                    access_key_id: e.access_key_id.clone(),
                    secret_access_key: secret,
                    region: e.region.clone(),
                    endpoint: e.endpoint.clone(),
                }
            }
        };
        let ca_cert_pem = match (&d.ca_cert_file, &d.ca_cert_pem) {
            (Some(_), Some(_)) => return Err(at("ca_cert_file or ca_cert_pem, not both".into())),
            (Some(path), None) => {
                Some(std::fs::read_to_string(path).map_err(|e| at(format!("ca_cert_file {}: {e}", path.display())))?)
            }
            (None, pem) => pem.clone(),
        };
        if let Some(pem) = &ca_cert_pem
            && !pem.contains("-----BEGIN CERTIFICATE-----")
        {
            return Err(at("the CA certificates are not PEM (no BEGIN CERTIFICATE)".into()));
        }
        let timeout = match &d.timeout {
            None => DEFAULT_TIMEOUT,
            Some(t) => humantime::parse_duration(t).map_err(|e| at(format!("timeout {t:?}: {e}")))?,
        };
        if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&timeout) {
            return Err(at("timeout: from 1s to 10m".into()));
        }
        let max_attempts = d.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if !(1..=100).contains(&max_attempts) {
            return Err(at("max_attempts: from 1 to 100".into()));
        }
        let (auth, username, ecr_access_key_id, ecr_region, ecr_endpoint) = match &creds {
            SealedCredentials::Anonymous => ("anonymous", None, None, None, None),
            SealedCredentials::Basic { username, .. } => ("basic", Some(username.clone()), None, None, None),
            SealedCredentials::Ecr { access_key_id, region, endpoint, .. } => {
                ("ecr", None, Some(access_key_id.clone()), Some(region.clone()), endpoint.clone())
            }
        };
        destinations.push(Destination {
            name: d.name.clone(),
            url,
            registry_id,
            auth: auth.to_owned(),
            username,
            ecr_access_key_id,
            ecr_region,
            ecr_endpoint,
            ca_cert_pem,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            max_attempts,
        });
        credentials.push(creds);
    }
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = |e: String| format!("rule {}: {e}", i + 1);
        if rule.destinations.len() > MAX_DESTINATIONS {
            return Err(at(format!("at most {MAX_DESTINATIONS} destinations")));
        }
        if rule.repository_filters.len() > MAX_FILTERS {
            return Err(at(format!("at most {MAX_FILTERS} repository filters")));
        }
        for name in &rule.destinations {
            if !destinations.iter().any(|d| &d.name == name) {
                return Err(at(format!("no destination named {name:?}")));
            }
        }
        for f in &rule.repository_filters {
            check_filter(f).map_err(at)?;
        }
    }
    Ok((StoredReplication { destinations, rules: spec.rules.clone() }, credentials))
}

/// The repository patterns of destination `name` (the subscription's `repositories`, each
/// `<prefix>*`; empty: every repository) and whether any rule names it.
fn patterns_of(rules: &[Rule], name: &str) -> (Vec<String>, bool) {
    let mut patterns = Vec::new();
    let mut named = false;
    for rule in rules.iter().filter(|r| r.destinations.iter().any(|d| d == name)) {
        if rule.repository_filters.is_empty() {
            return (Vec::new(), true);
        }
        named = true;
        patterns.extend(rule.repository_filters.iter().map(|f| format!("{}*", f.filter)));
    }
    patterns.sort();
    patterns.dedup();
    (patterns, named)
}

/// Whether `repository` is replicated to destination `name` by `rules`.
pub fn replicates(rules: &[Rule], name: &str, repository: &str) -> bool {
    rules.iter().filter(|r| r.destinations.iter().any(|d| d == name)).any(|r| {
        r.repository_filters.is_empty() || r.repository_filters.iter().any(|f| repository.starts_with(&f.filter))
    })
}

impl Registry {
    /// The stored configuration and where it came from.
    async fn stored_replication(&self) -> ApiResult<(StoredReplication, String)> {
        match self.meta.replication_config().await? {
            None => Ok((StoredReplication::default(), "none".into())),
            Some(r) => {
                let doc = serde_json::from_str(&r.document)
                    .map_err(|e| ApiError::Internal(format!("the stored replication configuration: {e}")))?;
                Ok((doc, r.source))
            }
        }
    }

    /// The replication configuration, without secrets.
    pub async fn replication(&self) -> ApiResult<ReplicationView> {
        let (doc, source) = self.stored_replication().await?;
        Ok(ReplicationView { source, destinations: doc.destinations, rules: doc.rules })
    }

    /// The credentials stored for each destination, by name.
    async fn stored_credentials(&self) -> ApiResult<BTreeMap<String, SealedCredentials>> {
        let mut out = BTreeMap::new();
        for s in self.meta.subscriptions().await? {
            if s.kind != SubscriptionKind::Replication {
                continue;
            }
            let Some(name) = s.name.strip_prefix(SUBSCRIPTION_PREFIX) else { continue };
            out.insert(name.to_owned(), self.destination_credentials(&s).map_err(ApiError::Internal)?);
        }
        Ok(out)
    }

    /// Opens the sealed credentials of a destination's subscription.
    pub fn destination_credentials(&self, sub: &Subscription) -> Result<SealedCredentials, String> {
        let json = crate::events::sealing::open(&self.events.sealing, &sub.name, &sub.secret)?;
        serde_json::from_str(&json).map_err(|_| format!("the credentials of {} are not readable", sub.name))
    }

    /// Replaces the replication configuration through the admin API or the CLI; refused
    /// while the configuration file defines it.
    pub async fn put_replication(&self, spec: &ReplicationConfig) -> ApiResult<ReplicationView> {
        self.refuse_if_configured().await?;
        let keep = self.stored_credentials().await?;
        let (doc, creds) = validate(spec, &keep).map_err(ApiError::Invalid)?;
        self.store_replication(&doc, &creds, SubscriptionSource::Api).await?;
        self.replication().await
    }

    /// Replaces the rules only, keeping the destinations (ECR's `PutReplicationConfiguration`,
    /// whose destinations are named by `region` = destination name).
    pub async fn put_replication_rules(&self, rules: Vec<Rule>) -> ApiResult<ReplicationView> {
        self.refuse_if_configured().await?;
        let (doc, _) = self.stored_replication().await?;
        let keep = self.stored_credentials().await?;
        let mut creds = Vec::new();
        for d in &doc.destinations {
            creds.push(
                keep.get(&d.name)
                    .cloned()
                    .ok_or_else(|| ApiError::Internal(format!("destination {} has no stored credentials", d.name)))?,
            );
        }
        let next = StoredReplication { destinations: doc.destinations, rules };
        // The same checks as a whole put.
        for (i, rule) in next.rules.iter().enumerate() {
            if i >= MAX_RULES {
                return Err(ApiError::Invalid(format!("at most {MAX_RULES} rules")));
            }
            for name in &rule.destinations {
                if !next.destinations.iter().any(|d| &d.name == name) {
                    return Err(ApiError::Invalid(format!(
                        "rule {}: no destination named {name:?} (define it with `berth replication put` or \
                         PUT /api/v1/replication)",
                        i + 1
                    )));
                }
            }
            for f in &rule.repository_filters {
                check_filter(f).map_err(|e| ApiError::Invalid(format!("rule {}: {e}", i + 1)))?;
            }
        }
        self.store_replication(&next, &creds, SubscriptionSource::Api).await?;
        self.replication().await
    }

    async fn refuse_if_configured(&self) -> ApiResult<()> {
        if self.meta.replication_config().await?.is_some_and(|r| r.source == "config") {
            return Err(ApiError::Conflict(
                "replication is defined in the configuration file ([replication]); change it there".into(),
            ));
        }
        Ok(())
    }

    /// Makes `[replication]` of the configuration file the stored configuration (at every
    /// start). An empty section leaves an API-made configuration alone, and clears one the
    /// file made before.
    pub async fn sync_replication_config(&self, config: &ReplicationConfig) -> Result<(), String> {
        let stored = self.meta.replication_config().await.map_err(|e| e.to_string())?;
        if config.is_empty() {
            if stored.is_some_and(|r| r.source == "config") {
                let empty = StoredReplication::default();
                self.store_replication(&empty, &[], SubscriptionSource::Api).await.map_err(|e| e.to_string())?;
                tracing::info!("replication configuration cleared: [replication] was removed from the file");
            }
            return Ok(());
        }
        let (doc, creds) = validate(config, &BTreeMap::new()).map_err(|e| format!("replication: {e}"))?;
        self.store_replication(&doc, &creds, SubscriptionSource::Config).await.map_err(|e| e.to_string())
    }

    /// Stores `doc` with one subscription per destination (its credentials sealed).
    async fn store_replication(
        &self,
        doc: &StoredReplication,
        creds: &[SealedCredentials],
        source: SubscriptionSource,
    ) -> ApiResult<()> {
        let mut subs = Vec::new();
        for (d, c) in doc.destinations.iter().zip(creds) {
            let name = subscription_name(&d.name);
            let json = serde_json::to_string(c).map_err(|e| ApiError::Internal(e.to_string()))?;
            let secret =
                crate::events::sealing::seal(&self.events.sealing, &name, &json).map_err(ApiError::Internal)?;
            let (repositories, named) = patterns_of(&doc.rules, &d.name);
            subs.push(Subscription {
                name,
                url: d.url.clone(),
                secret,
                events: vec![EventKind::ManifestPush],
                repositories,
                tags: Vec::new(),
                format: PayloadFormat::CloudEvents,
                headers: BTreeMap::new(),
                timeout_ms: d.timeout_ms,
                max_attempts: d.max_attempts,
                // A destination no rule names gets nothing.
                enabled: named,
                source: SubscriptionSource::Api,
                created_at: 0,
                kind: SubscriptionKind::Replication,
            });
        }
        let document = serde_json::to_string(doc).map_err(|e| ApiError::Internal(e.to_string()))?;
        let source = match source {
            SubscriptionSource::Config => "config",
            SubscriptionSource::Api => "api",
        };
        self.meta.put_replication_config(&document, source, &subs).await.map_err(|e| match e {
            berth_storage::Error::Conflict => ApiError::Conflict(
                "a webhook is named like a destination's subscription (replication.<name>); rename one of them".into(),
            ),
            e => e.into(),
        })?;
        tracing::info!(
            replication.source = source,
            replication.destinations = doc.destinations.len(),
            replication.rules = doc.rules.len(),
            "replication configuration stored"
        );
        Ok(())
    }

    /// The status of one image (by tag or digest) at every destination that has one: what
    /// the copier recorded, else what its delivery says (PENDING before the first attempt).
    pub async fn image_replication_status(&self, repo: &RepoName, reference: &Reference) -> ApiResult<ImageStatus> {
        if self.meta.repository_key(repo).await?.is_none() {
            return Err(ApiError::NameUnknown);
        }
        let digest: Digest = self.get_manifest(repo, reference).await?.digest.clone();
        let (doc, _) = self.stored_replication().await?;
        let recorded = self.meta.replication_statuses(repo.as_str(), &digest.to_string()).await?;
        let mut statuses = Vec::new();
        for d in &doc.destinations {
            let registry_id = d.registry_id.clone();
            if let Some(r) = recorded.iter().find(|r| r.destination == d.name) {
                statuses.push(StatusView {
                    destination: d.name.clone(),
                    registry_id,
                    status: r.state,
                    reason: r.reason.clone(),
                    updated_ms: r.updated_ms,
                });
                continue;
            }
            let filter = DeliveryFilter {
                subscription: Some(subscription_name(&d.name)),
                repository: Some(repo.to_string()),
                limit: 1000,
                ..DeliveryFilter::default()
            };
            let want = digest.to_string();
            let newest =
                self.meta.deliveries(&filter).await?.into_iter().find(|x| x.event.digest.as_ref() == Some(&want));
            if let Some(x) = newest {
                let (status, reason) = match x.state {
                    DeliveryState::Pending if x.attempts == 0 => (ReplicationState::Pending, None),
                    DeliveryState::Pending => (ReplicationState::InProgress, x.last_error.clone()),
                    DeliveryState::Delivered => (ReplicationState::Complete, None),
                    DeliveryState::Dead => (ReplicationState::Failed, x.last_error.clone()),
                };
                statuses.push(StatusView {
                    destination: d.name.clone(),
                    registry_id,
                    status,
                    reason,
                    updated_ms: x.updated_ms,
                });
            }
        }
        Ok(ImageStatus { repository: repo.to_string(), digest: digest.to_string(), statuses })
    }

    /// Records where an image stands at a destination (the copier's transitions).
    pub(crate) async fn note_replication(
        &self,
        destination: &str,
        repository: &str,
        digest: &str,
        state: ReplicationState,
        reason: Option<String>,
    ) {
        let status = berth_storage::metadata::ReplicationStatus {
            destination: destination.to_owned(),
            repository: repository.to_owned(),
            digest: digest.to_owned(),
            state,
            reason,
            updated_ms: unix_now_ms(),
        };
        if let Err(e) = self.meta.set_replication_status(&status).await {
            tracing::warn!(replication.destination = destination, repo.name = repository, manifest.digest = digest,
                error = %e, "could not record a replication status");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(name: &str) -> DestinationSpec {
        DestinationSpec {
            name: name.into(),
            url: "https://b.example.com:5000".into(),
            registry_id: None,
            username: Some("robot".into()),
            password: Some(Secret::from("pw".to_owned())),
            ecr: None,
            ca_cert_file: None,
            ca_cert_pem: None,
            timeout: None,
            max_attempts: None,
        }
    }

    fn rule(dests: &[&str], filters: &[&str]) -> Rule {
        Rule {
            destinations: dests.iter().map(|d| d.to_string()).collect(),
            repository_filters: filters
                .iter()
                .map(|f| RepositoryFilter { filter: f.to_string(), filter_type: PREFIX_MATCH.into() })
                .collect(),
        }
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let ok = ReplicationConfig {
            destinations: vec![dest("dr")],
            rules: vec![rule(&["dr"], &["prod/", "team/app-", "a.b/c_d", "x_"])],
        };
        let (doc, creds) = validate(&ok, &BTreeMap::new()).unwrap();
        assert_eq!(doc.destinations[0].url, "https://b.example.com:5000");
        assert_eq!(doc.destinations[0].registry_id, DEFAULT_REGISTRY_ID);
        assert_eq!((doc.destinations[0].auth.as_str(), doc.destinations[0].timeout_ms), ("basic", 30_000));
        assert_eq!(creds, [SealedCredentials::Basic { username: "robot".into(), password: "pw".into() }]);
        assert!(!serde_json::to_string(&doc).unwrap().contains("pw"), "no secret in the stored document");
        for (spec, want) in [
            (ReplicationConfig { destinations: vec![dest("DR")], rules: vec![] }, "destination name \"DR\""),
            (ReplicationConfig { destinations: vec![dest("dr"), dest("dr")], rules: vec![] }, "named twice"),
            (
                ReplicationConfig { destinations: vec![dest("dr")], rules: vec![rule(&["other"], &[])] },
                "no destination",
            ),
            (
                ReplicationConfig { destinations: vec![dest("dr")], rules: vec![rule(&["dr"], &["/x"])] },
                "filter \"/x\"",
            ),
            (ReplicationConfig { destinations: vec![dest("dr")], rules: vec![rule(&["dr"], &["Prod"])] }, "filter"),
            (ReplicationConfig { destinations: vec![dest("dr")], rules: vec![rule(&["dr"], &["a/_b/c"])] }, "filter"),
            (ReplicationConfig { destinations: vec![dest("dr")], rules: vec![rule(&["dr"], &["a//b"])] }, "filter"),
            (
                ReplicationConfig {
                    destinations: vec![DestinationSpec { url: "ftp://x".into(), ..dest("dr") }],
                    rules: vec![],
                },
                "http:// or https://",
            ),
            (
                ReplicationConfig {
                    destinations: vec![DestinationSpec { url: "https://x/v2/".into(), ..dest("dr") }],
                    rules: vec![],
                },
                "no path",
            ),
            (
                ReplicationConfig {
                    destinations: vec![DestinationSpec { password: None, ..dest("dr") }],
                    rules: vec![],
                },
                "without a password",
            ),
            (
                ReplicationConfig {
                    destinations: vec![DestinationSpec { registry_id: Some("12".into()), ..dest("dr") }],
                    rules: vec![],
                },
                "12 digits",
            ),
        ] {
            let e = validate(&spec, &BTreeMap::new()).unwrap_err();
            assert!(e.contains(want), "{e:?} should say {want:?}");
        }
        let mut bad_type = rule(&["dr"], &["prod"]);
        bad_type.repository_filters[0].filter_type = "EXACT".into();
        let e =
            validate(&ReplicationConfig { destinations: vec![dest("dr")], rules: vec![bad_type] }, &BTreeMap::new())
                .unwrap_err();
        assert!(e.contains("only PREFIX_MATCH"), "{e}");
    }

    #[test]
    fn an_omitted_password_keeps_the_stored_one_of_the_same_user() {
        let keep = BTreeMap::from([(
            "dr".to_owned(),
            SealedCredentials::Basic { username: "robot".into(), password: "old".into() },
        )]);
        let spec =
            ReplicationConfig { destinations: vec![DestinationSpec { password: None, ..dest("dr") }], rules: vec![] };
        let (_, creds) = validate(&spec, &keep).unwrap();
        assert_eq!(creds, [SealedCredentials::Basic { username: "robot".into(), password: "old".into() }]);
        let other = DestinationSpec { username: Some("else".into()), password: None, ..dest("dr") };
        assert!(validate(&ReplicationConfig { destinations: vec![other], rules: vec![] }, &keep).is_err());
    }

    #[test]
    fn patterns_per_destination() {
        let rules = vec![rule(&["a", "b"], &["prod/", "release"]), rule(&["b"], &[]), rule(&["a"], &["prod/"])];
        assert_eq!(patterns_of(&rules, "a"), (vec!["prod/*".to_owned(), "release*".to_owned()], true));
        assert_eq!(patterns_of(&rules, "b"), (vec![], true), "a rule without filters takes everything");
        assert_eq!(patterns_of(&rules, "c"), (vec![], false), "named by no rule");
        assert!(replicates(&rules, "a", "prod/app") && replicates(&rules, "a", "releases/x"));
        assert!(!replicates(&rules, "a", "dev/app") && replicates(&rules, "b", "dev/app"));
        assert!(!replicates(&rules, "c", "prod/app"));
    }

    #[test]
    fn credentials_never_in_debug_output() {
        let c = SealedCredentials::Basic { username: "robot".into(), password: "hunter2".into() };
        assert!(!format!("{c:?}").contains("hunter2"));
        let c = SealedCredentials::Ecr {
            access_key_id: "AKIA".into(),
            secret_access_key: "s3cr3t".into(),
            region: "us-east-1".into(),
            endpoint: None,
        };
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let spec = dest("dr");
        assert!(!format!("{spec:?}").contains("\"pw\""));
    }
}
