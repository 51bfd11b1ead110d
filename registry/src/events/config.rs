//! `[events]`: the dispatcher's settings and the webhooks defined in the configuration file,
//! and the one validation every subscription passes, wherever it comes from.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_storage::metadata::{EventKind, PayloadFormat, Subscription, SubscriptionSource};
use serde::{Deserialize, Serialize};

use crate::config::{Secret, duration_text};

/// `[events]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Whether this process delivers webhooks. Events are recorded either way; with
    /// replicas, any number of them may deliver (deliveries are claimed with leases).
    pub enabled: bool,
    /// How often the outbox is polled for work another process created.
    #[serde(with = "duration_text")]
    pub poll_interval: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// How long a claimed delivery is this process's; a process that dies mid-delivery
    /// leaves it to another (or to itself after a restart) once this has passed. Longer than
    /// any webhook's timeout.
    #[serde(with = "duration_text")]
    pub lease: Duration,
    /// The first retry's delay; each further one doubles it, with jitter, up to `backoff_max`.
    #[serde(with = "duration_text")]
    pub backoff_initial: Duration,
    #[serde(with = "duration_text")]
    pub backoff_max: Duration,
    /// Delivered deliveries (and their events) are kept this long for the delivery log.
    #[serde(with = "duration_text")]
    pub retention: Duration,
    /// Dead-lettered deliveries are kept this long unless replayed or purged first.
    #[serde(with = "duration_text")]
    pub dead_retention: Duration,
    /// CloudEvents `source`; default `/berth/<host name>`.
    pub source: Option<String>,
    /// CloudEvents `type` prefix: types read `<prefix>.manifest.push` and so on.
    pub type_prefix: String,
    /// `[[events.webhooks]]`: subscriptions kept in step with this file at every start.
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            enabled: true,
            poll_interval: Duration::from_secs(1),
            concurrency: 8,
            lease: Duration::from_secs(60),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            retention: Duration::from_secs(7 * 24 * 3600),
            dead_retention: Duration::from_secs(30 * 24 * 3600),
            source: None,
            type_prefix: "dev.berth".into(),
            webhooks: Vec::new(),
        }
    }
}

/// One `[[events.webhooks]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: String,
    pub url: String,
    pub secret: Secret,
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub repositories: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout", with = "duration_text")]
    pub timeout: Duration,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}

fn yes() -> bool {
    true
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
/// Shorter secrets are refused: the signature is only as strong as its key.
pub const MIN_SECRET_LEN: usize = 16;

/// A subscription as asked for (API body, CLI flags or config file), before validation.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    pub url: String,
    /// Absent on a replace: the current secret stays. Absent on a create: one is generated.
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub repositories: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A duration such as `5s` or `500ms`.
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

impl WebhookConfig {
    pub fn spec(&self) -> WebhookSpec {
        WebhookSpec {
            url: self.url.clone(),
            secret: Some(self.secret.expose().to_owned()),
            events: self.events.clone(),
            repositories: self.repositories.clone(),
            tags: self.tags.clone(),
            format: self.format.clone(),
            headers: self.headers.clone(),
            // The default is left unsaid, so that a short `events.lease` shortens it.
            timeout: (self.timeout != DEFAULT_TIMEOUT).then(|| humantime::format_duration(self.timeout).to_string()),
            max_attempts: Some(self.max_attempts),
            enabled: Some(self.enabled),
        }
    }
}

/// Request headers a subscription may not set: the ones each delivery sets itself.
const RESERVED_HEADERS: &[&str] =
    &["content-type", "content-length", "host", "user-agent", "idempotency-key", "transfer-encoding", "connection"];

/// Checks `spec` and makes it a subscription named `name`. `secret` is the secret to use
/// when the spec has none. `lease` bounds the timeout.
pub fn validate(
    name: &str,
    spec: &WebhookSpec,
    secret: String,
    source: SubscriptionSource,
    lease: Duration,
) -> Result<Subscription, String> {
    check_name(name)?;
    let url = reqwest::Url::parse(&spec.url)
        .map_err(|e| format!("url {:?}: must be an http:// or https:// URL with a host ({e})", spec.url))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!("url {:?}: must be an http:// or https:// URL with a host", spec.url));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("url: put credentials in `headers` (e.g. Authorization), not in the URL".into());
    }
    let secret = spec.secret.clone().unwrap_or(secret);
    if secret.len() < MIN_SECRET_LEN {
        return Err(format!("secret: at least {MIN_SECRET_LEN} characters"));
    }
    let format = match &spec.format {
        None => PayloadFormat::CloudEvents,
        Some(f) => f.parse::<PayloadFormat>()?,
    };
    let mut events = spec.events.iter().map(|e| e.parse::<EventKind>()).collect::<Result<Vec<_>, _>>()?;
    events.sort();
    events.dedup();
    let representable = crate::events::payload::representable(format);
    if events.is_empty() {
        if representable.len() < EventKind::ALL.len() {
            events = representable.to_vec();
        }
    } else if let Some(k) = events.iter().find(|k| !representable.contains(k)) {
        return Err(format!("the {} format has no {k} event (it has: {})", format.as_str(), names(representable)));
    }
    for p in spec.repositories.iter().chain(&spec.tags) {
        if p.is_empty() || p.len() > 256 {
            return Err(format!("pattern {p:?}: 1 to 256 characters"));
        }
    }
    for (k, v) in &spec.headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("header name {k:?}"))?;
        if RESERVED_HEADERS.contains(&name.as_str()) || name.as_str().starts_with("berth-") {
            return Err(format!("header {k}: set by every delivery, cannot be overridden"));
        }
        reqwest::header::HeaderValue::from_str(v)
            .map_err(|_| format!("header {k}: value is not a valid header value"))?;
    }
    let max_timeout = lease.saturating_sub(Duration::from_secs(1)).min(Duration::from_secs(300));
    let timeout = match &spec.timeout {
        None => DEFAULT_TIMEOUT.min(max_timeout),
        Some(t) => humantime::parse_duration(t)
            .map_err(|e| format!("timeout {t:?}: give a duration like 5s or 500ms ({e})"))?,
    };
    if timeout < Duration::from_millis(100) || timeout > max_timeout {
        return Err(format!(
            "timeout: from 100ms to {} (events.lease less a second)",
            humantime::format_duration(max_timeout)
        ));
    }
    let max_attempts = spec.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if !(1..=100).contains(&max_attempts) {
        return Err("max_attempts: from 1 to 100".into());
    }
    Ok(Subscription {
        name: name.to_owned(),
        url: url.to_string(),
        secret,
        events,
        repositories: spec.repositories.clone(),
        tags: spec.tags.clone(),
        format,
        headers: spec.headers.clone(),
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        max_attempts,
        enabled: spec.enabled.unwrap_or(true),
        source,
        created_at: 0,
        kind: berth_storage::metadata::SubscriptionKind::Webhook,
    })
}

pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!("webhook name {name:?}: 1 to 64 of A-Z a-z 0-9 . _ -"));
    }
    Ok(())
}

fn names(kinds: &[EventKind]) -> String {
    kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
}

/// The configuration file's webhooks as subscriptions.
pub fn from_config(c: &EventsConfig) -> Result<Vec<Subscription>, String> {
    let mut seen = std::collections::HashSet::new();
    c.webhooks
        .iter()
        .map(|w| {
            if !seen.insert(w.name.as_str()) {
                return Err(format!("events.webhooks: {} is defined twice", w.name));
            }
            validate(&w.name, &w.spec(), String::new(), SubscriptionSource::Config, c.lease)
                .map_err(|e| format!("events.webhooks {}: {e}", w.name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> WebhookSpec {
        WebhookSpec { url: url.into(), secret: Some("0123456789abcdef".into()), ..WebhookSpec::default() }
    }

    fn check(name: &str, s: &WebhookSpec) -> Result<Subscription, String> {
        validate(name, s, String::new(), SubscriptionSource::Api, Duration::from_secs(60))
    }

    #[test]
    fn defaults_and_refusals() {
        let ok = check("deploy", &spec("http://127.0.0.1:9000/hook")).unwrap();
        assert_eq!(
            (ok.format, ok.timeout_ms, ok.max_attempts, ok.enabled),
            (PayloadFormat::CloudEvents, 5000, 10, true)
        );
        assert!(ok.events.is_empty(), "cloudevents: every type");
        for (name, s, want) in [
            ("bad name", spec("http://h/"), "webhook name"),
            ("a", spec("ftp://h/"), "http:// or https://"),
            ("a", spec("not a url"), "url"),
            ("a", spec("http://u:p@h/"), "credentials"),
            ("a", WebhookSpec { secret: Some("short".into()), ..spec("http://h/") }, "at least 16"),
            ("a", WebhookSpec { events: vec!["manifest.pushed".into()], ..spec("http://h/") }, "unknown event type"),
            ("a", WebhookSpec { format: Some("xml".into()), ..spec("http://h/") }, "unknown payload format"),
            (
                "a",
                WebhookSpec { format: Some("ecr".into()), events: vec!["blob.push".into()], ..spec("http://h/") },
                "the ecr format has no blob.push",
            ),
            ("a", WebhookSpec { timeout: Some("10m".into()), ..spec("http://h/") }, "timeout"),
            ("a", WebhookSpec { timeout: Some("1ms".into()), ..spec("http://h/") }, "timeout"),
            ("a", WebhookSpec { max_attempts: Some(0), ..spec("http://h/") }, "max_attempts"),
            (
                "a",
                WebhookSpec { headers: [("Content-Type".to_string(), "x".to_string())].into(), ..spec("http://h/") },
                "cannot be overridden",
            ),
            (
                "a",
                WebhookSpec { headers: [("Berth-Signature".to_string(), "x".to_string())].into(), ..spec("http://h/") },
                "cannot be overridden",
            ),
        ] {
            let e = check(name, &s).unwrap_err();
            assert!(e.contains(want), "{e:?} should say {want:?}");
        }
    }

    #[test]
    fn formats_narrow_the_default_event_types() {
        let ecr = check("e", &WebhookSpec { format: Some("ecr".into()), ..spec("https://h/") }).unwrap();
        assert_eq!(ecr.events, vec![EventKind::ManifestPush, EventKind::ManifestDelete, EventKind::TagDelete]);
        let dist = check("d", &WebhookSpec { format: Some("distribution".into()), ..spec("https://h/") }).unwrap();
        assert!(!dist.events.contains(&EventKind::RepositoryCreate) && dist.events.contains(&EventKind::BlobMount));
    }
}
