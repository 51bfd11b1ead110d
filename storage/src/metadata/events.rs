//! Events and their delivery, as records: the outbox, webhook subscriptions, deliveries and
//! the attempts log.
//!
//! Every change a webhook reports is written as an [`Event`] by the same metadata transaction
//! that makes the change, and fanned out in that transaction to one [`Delivery`] per enabled
//! [`Subscription`] it matches. A dispatcher (in the registry) claims deliveries with a lease,
//! sends them, and records each attempt. So a crash can neither lose an event nor report a
//! change that did not commit.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventKind {
    /// A manifest was pushed; one event per tag it moved (or one without a tag).
    #[serde(rename = "manifest.push")]
    ManifestPush,
    /// A manifest was deleted by digest (its tags went with it).
    #[serde(rename = "manifest.delete")]
    ManifestDelete,
    /// A tag was deleted; the manifest stays.
    #[serde(rename = "tag.delete")]
    TagDelete,
    /// A blob upload completed.
    #[serde(rename = "blob.push")]
    BlobPush,
    /// A blob was mounted from another repository.
    #[serde(rename = "blob.mount")]
    BlobMount,
    #[serde(rename = "repository.create")]
    RepositoryCreate,
    #[serde(rename = "repository.delete")]
    RepositoryDelete,
    /// A quota's use reached its warning threshold (`quotas.warning`); once per crossing.
    #[serde(rename = "quota.warning")]
    QuotaWarning,
    /// A garbage collection run completed; the event carries its summary (`gc`). Its
    /// repository is the one the run was limited to, else empty.
    #[serde(rename = "gc.completed")]
    GcCompleted,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::ManifestPush,
        EventKind::ManifestDelete,
        EventKind::TagDelete,
        EventKind::BlobPush,
        EventKind::BlobMount,
        EventKind::RepositoryCreate,
        EventKind::RepositoryDelete,
        EventKind::QuotaWarning,
        EventKind::GcCompleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ManifestPush => "manifest.push",
            EventKind::ManifestDelete => "manifest.delete",
            EventKind::TagDelete => "tag.delete",
            EventKind::BlobPush => "blob.push",
            EventKind::BlobMount => "blob.mount",
            EventKind::RepositoryCreate => "repository.create",
            EventKind::RepositoryDelete => "repository.delete",
            EventKind::QuotaWarning => "quota.warning",
            EventKind::GcCompleted => "gc.completed",
        }
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<EventKind, String> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let all: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown event type {s:?} (known: {})", all.join(", "))
        })
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who made a change and through which request. Every field is optional: a change made by
/// a command (`berth admin …`) has no request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The signed-in principal's name (`None` when anonymous or with authentication off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The request id (`X-Request-Id`), as the registry logged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The client's address (`ip:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The `Host` the client asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `https` when the request came over TLS, else `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

impl Origin {
    /// A change made by a command rather than a request, e.g. `Origin::command("berth admin")`.
    pub fn command(actor: &str) -> Origin {
        Origin { actor: Some(actor.to_owned()), ..Origin::default() }
    }
}

/// One outbox entry. Stored as JSON beside a few indexed columns; `seq` is the store's
/// insertion order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Assigned by the store: increasing in insertion order.
    #[serde(default)]
    pub seq: i64,
    /// A UUID (v4), unique per event: consumers' idempotency key.
    pub id: String,
    /// Unix milliseconds.
    pub time_ms: i64,
    pub kind: EventKind,
    pub repository: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The tag moved (manifest.push) or deleted (tag.delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Bytes of the manifest or blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// blob.mount: where the blob came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_repository: Option<String>,
    /// quota.warning: which quota, its limit and the use that reached the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaNotice>,
    #[serde(default)]
    pub origin: Origin,
    /// gc.completed: what the run reclaimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc: Option<GcSummary>,
}

/// The summary a `gc.completed` event carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcSummary {
    /// The run's id (`berth gc status` lists it).
    pub run: String,
    #[serde(flatten)]
    pub counts: super::gc::GcCounts,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

impl Event {
    /// A new event of `kind` in `repository`, stamped now with a fresh id; the caller fills
    /// in the rest.
    pub fn new(kind: EventKind, repository: &str, origin: &Origin) -> Event {
        Event {
            seq: 0,
            id: uuid::Uuid::new_v4().to_string(),
            time_ms: unix_now_ms(),
            kind,
            repository: repository.to_owned(),
            digest: None,
            media_type: None,
            artifact_type: None,
            tag: None,
            size: None,
            from_repository: None,
            quota: None,
            origin: origin.clone(),
            gc: None,
        }
    }
}

/// What a `quota.warning` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaNotice {
    /// The quota's scope as written: `team-a/app`, `team-a/*`, `*`.
    pub scope: String,
    /// `bytes` or `images`.
    pub dimension: String,
    pub limit: u64,
    pub used: u64,
    /// The threshold crossed, in percent of the limit.
    pub threshold: u8,
}

/// How a subscription's requests are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PayloadFormat {
    /// CloudEvents 1.0, structured JSON (`application/cloudevents+json`).
    #[default]
    #[serde(rename = "cloudevents")]
    CloudEvents,
    /// The CNCF Distribution notification envelope
    /// (`application/vnd.docker.distribution.events.v2+json`).
    #[serde(rename = "distribution")]
    Distribution,
    /// Amazon EventBridge's "ECR Image Action" event.
    #[serde(rename = "ecr")]
    Ecr,
}

impl PayloadFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadFormat::CloudEvents => "cloudevents",
            PayloadFormat::Distribution => "distribution",
            PayloadFormat::Ecr => "ecr",
        }
    }
}

impl std::str::FromStr for PayloadFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<PayloadFormat, String> {
        match s {
            "cloudevents" => Ok(PayloadFormat::CloudEvents),
            "distribution" => Ok(PayloadFormat::Distribution),
            "ecr" => Ok(PayloadFormat::Ecr),
            other => Err(format!("unknown payload format {other:?} (known: cloudevents, distribution, ecr)")),
        }
    }
}

/// Where a subscription was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SubscriptionSource {
    /// The admin API or `berth webhooks`.
    #[default]
    #[serde(rename = "api")]
    Api,
    /// The configuration file: replaced at every start, not editable through the API.
    #[serde(rename = "config")]
    Config,
}

/// What a subscription's deliveries do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SubscriptionKind {
    /// A webhook: each delivery is an HTTP request to `url`.
    #[default]
    #[serde(rename = "webhook")]
    Webhook,
    /// A replication destination: each delivery copies the pushed image to the registry at
    /// `url` (the registry's `service::replication`); `secret` holds its sealed credentials.
    /// Managed only by the replication configuration, never as a webhook.
    #[serde(rename = "replication")]
    Replication,
}

/// A webhook subscription, or a replication destination ([`SubscriptionKind`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Unique; `[A-Za-z0-9._-]{1,64}`.
    pub name: String,
    pub url: String,
    /// The HMAC-SHA256 key of the `Berth-Signature` header.
    pub secret: String,
    /// Event types to send; empty = all.
    #[serde(default)]
    pub events: Vec<EventKind>,
    /// Repository name patterns (`*` any run of characters, `?` one); empty = all.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Tag patterns; empty = all events. When set, only events with a matching tag are sent.
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub format: PayloadFormat,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Per-attempt timeout.
    pub timeout_ms: u64,
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: u32,
    pub enabled: bool,
    #[serde(default)]
    pub source: SubscriptionSource,
    /// Unix seconds; set by the store on first insert.
    #[serde(default)]
    pub created_at: i64,
    /// Absent in definitions stored before replication: a webhook.
    #[serde(default)]
    pub kind: SubscriptionKind,
}

impl Subscription {
    /// Whether `event` is for this subscription (ignores `enabled`).
    pub fn matches(&self, event: &Event) -> bool {
        if !self.events.is_empty() && !self.events.contains(&event.kind) {
            return false;
        }
        if !self.repositories.is_empty() && !self.repositories.iter().any(|p| glob_match(p, &event.repository)) {
            return false;
        }
        if !self.tags.is_empty() {
            let Some(tag) = &event.tag else { return false };
            if !self.tags.iter().any(|p| glob_match(p, tag)) {
                return false;
            }
        }
        true
    }
}

/// `pattern` against `text`: `*` matches any run of characters (`/` included), `?` exactly
/// one, everything else itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and how much text it has swallowed so far.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeliveryState {
    /// Not yet delivered: waiting for its turn, its next attempt, or in flight.
    #[serde(rename = "pending")]
    Pending,
    #[serde(rename = "delivered")]
    Delivered,
    /// Out of attempts; kept until replayed or purged.
    #[serde(rename = "dead")]
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }
}

impl std::str::FromStr for DeliveryState {
    type Err = String;

    fn from_str(s: &str) -> Result<DeliveryState, String> {
        match s {
            "pending" => Ok(DeliveryState::Pending),
            "delivered" => Ok(DeliveryState::Delivered),
            "dead" => Ok(DeliveryState::Dead),
            other => Err(format!("unknown delivery state {other:?} (known: pending, delivered, dead)")),
        }
    }
}

/// Where a delivery stands as every view shows it (`berth webhooks list`, `berth deliveries`,
/// `/metrics`, the delivery filters): the stored [`DeliveryState`] with `pending` split by
/// whether an attempt failed already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryPhase {
    /// Waiting for its first attempt (or in flight).
    Pending,
    /// Pending after at least one failed attempt.
    Retrying,
    Delivered,
    Dead,
}

impl DeliveryPhase {
    pub const ALL: [DeliveryPhase; 4] =
        [DeliveryPhase::Pending, DeliveryPhase::Retrying, DeliveryPhase::Delivered, DeliveryPhase::Dead];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryPhase::Pending => "pending",
            DeliveryPhase::Retrying => "retrying",
            DeliveryPhase::Delivered => "delivered",
            DeliveryPhase::Dead => "dead",
        }
    }

    pub fn of(d: &Delivery) -> DeliveryPhase {
        match d.state {
            DeliveryState::Pending if d.attempts > 0 => DeliveryPhase::Retrying,
            DeliveryState::Pending => DeliveryPhase::Pending,
            DeliveryState::Delivered => DeliveryPhase::Delivered,
            DeliveryState::Dead => DeliveryPhase::Dead,
        }
    }
}

impl std::str::FromStr for DeliveryPhase {
    type Err = String;

    fn from_str(s: &str) -> Result<DeliveryPhase, String> {
        DeliveryPhase::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            let all: Vec<&str> = DeliveryPhase::ALL.iter().map(|p| p.as_str()).collect();
            format!("unknown delivery state {s:?} (known: {})", all.join(", "))
        })
    }
}

/// One event owed to one subscription. Shown (serialized) with its `state` as the views
/// name it, a [`DeliveryPhase`], so a listing filtered on `retrying` says `retrying`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub subscription: String,
    pub event: Event,
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// Unix milliseconds before which it is not tried again.
    pub next_attempt_ms: i64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl Serialize for Delivery {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            id: i64,
            subscription: &'a str,
            event: &'a Event,
            state: DeliveryPhase,
            attempts: u32,
            next_attempt_ms: i64,
            last_status: Option<u16>,
            last_error: &'a Option<String>,
            created_ms: i64,
            updated_ms: i64,
        }
        Shown {
            id: self.id,
            subscription: &self.subscription,
            event: &self.event,
            state: DeliveryPhase::of(self),
            attempts: self.attempts,
            next_attempt_ms: self.next_attempt_ms,
            last_status: self.last_status,
            last_error: &self.last_error,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
        }
        .serialize(serializer)
    }
}

/// One try at a delivery, as the delivery log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub delivery: i64,
    /// 1 for the first try.
    pub number: u32,
    pub at_ms: i64,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    /// What went wrong (connection refused, timeout, a non-2xx status…), when it did.
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// How an attempt ended, as the dispatcher reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        status: u16,
        duration_ms: u64,
    },
    /// Failed; try again at `next_attempt_ms`.
    Retry {
        status: Option<u16>,
        error: String,
        duration_ms: u64,
        next_attempt_ms: i64,
    },
    /// Failed for the last time: dead-lettered.
    Dead {
        status: Option<u16>,
        error: String,
        duration_ms: u64,
    },
}

/// A delivery the dispatcher has claimed, with what it needs to send it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: Delivery,
    pub subscription: Subscription,
}

/// Which deliveries a listing, replay or purge takes. Unset fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub subscription: Option<String>,
    /// As the views name it: `pending` is only what no attempt failed yet.
    pub state: Option<DeliveryPhase>,
    pub repository: Option<String>,
    /// One delivery by id.
    pub id: Option<i64>,
    /// The deliveries of one event (by its UUID).
    pub event_id: Option<String>,
    /// Listings only: at most this many, newest first (0 = no limit).
    pub limit: usize,
}

/// Deliveries per state for one subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryCounts {
    pub subscription: String,
    /// Waiting for their first attempt (or in flight).
    pub pending: u64,
    /// Pending after at least one failed attempt.
    pub retrying: u64,
    pub delivered: u64,
    pub dead: u64,
}

/// Unix milliseconds, now.
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Webhooks: subscriptions, the outbox and deliveries, as the metadata store keeps them.
#[async_trait]
pub trait Events: Send + Sync {
    /// Creates or replaces the subscription named `s.name` (keeping its `created_at` and
    /// deliveries); `true` when created.
    async fn put_subscription(&self, s: &Subscription) -> Result<bool>;
    /// Deletes a subscription with its deliveries and their attempts; `false` when absent.
    async fn delete_subscription(&self, name: &str) -> Result<bool>;
    /// Every subscription, by name.
    async fn subscriptions(&self) -> Result<Vec<Subscription>>;
    /// Makes the `config`-sourced subscriptions exactly `subs` (each with source `Config`):
    /// upserts them, deletes the other `config` ones. `api` subscriptions are untouched; a
    /// name already used by an `api` subscription is an error (`Error::Conflict`).
    async fn sync_config_subscriptions(&self, subs: &[Subscription]) -> Result<()>;
    /// Outbox events with `seq > after_seq`, oldest first, at most `limit`. A feed: no event
    /// with a lower `seq` than one returned ever commits later.
    async fn events(&self, after_seq: i64, limit: usize) -> Result<Vec<Event>>;
    /// Claims up to `limit` deliveries for `owner` until `now_ms + lease_ms`: each pending,
    /// due (`next_attempt_ms <= now_ms`), not leased (or its lease expired; a live lease of
    /// `owner` itself means in flight too), of an enabled subscription, and the oldest pending
    /// delivery (by event `seq`) of its subscription and repository, so that each
    /// (subscription, repository) line is delivered in order and by one owner at a time (an
    /// unfinished head holds up its line). Oldest first.
    async fn claim_deliveries(&self, owner: &str, now_ms: i64, lease_ms: i64, limit: usize) -> Result<Vec<Claimed>>;
    /// Extends the lease `owner` holds on delivery `id` (pending, leased to `owner`, the lease
    /// not yet run out at `now_ms`) to `until_ms`: for an attempt that takes longer than a
    /// lease (a replication copy of a large image). `false` (and nothing written) when
    /// `owner` no longer holds it.
    async fn renew_delivery_lease(&self, id: i64, owner: &str, now_ms: i64, until_ms: i64) -> Result<bool>;
    /// Records one attempt of a delivery `owner` holds: appends it to the delivery log
    /// (numbered after the log's last entry, which a replay keeps), counts it, applies the
    /// outcome, releases the lease. `false` (and nothing written) when `owner` no longer
    /// holds it.
    async fn finish_delivery(&self, id: i64, owner: &str, outcome: &Outcome, now_ms: i64) -> Result<bool> {
        let held = self.finish_deliveries(owner, &[(id, outcome.clone())], now_ms).await?;
        Ok(held.first().copied().unwrap_or(false))
    }
    /// `finish_delivery` for each of `finished` (delivery id, outcome), in one transaction:
    /// the attempts that ended together cost one commit. `held[i]` is `finish_delivery`'s
    /// answer for `finished[i]`.
    async fn finish_deliveries(&self, owner: &str, finished: &[(i64, Outcome)], now_ms: i64) -> Result<Vec<bool>>;
    /// Deliveries matching `filter`, newest first.
    async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>>;
    /// The attempts of one delivery, oldest first.
    async fn delivery_attempts(&self, id: i64) -> Result<Vec<Attempt>>;
    /// Sends the matching deliveries again: pending, attempts reset to 0, due at `now_ms`,
    /// lease cleared. A delivery in flight (pending under a live lease) is left alone, so a
    /// replay never sends one twice at once. Returns how many.
    async fn replay_deliveries(&self, filter: &DeliveryFilter, now_ms: i64) -> Result<u64>;
    /// Deletes the matching deliveries (with their attempts). Returns how many.
    async fn purge_deliveries(&self, filter: &DeliveryFilter) -> Result<u64>;
    /// Deliveries per state, per subscription (every subscription listed, zeros included).
    async fn delivery_counts(&self) -> Result<Vec<DeliveryCounts>>;
    /// Housekeeping: deletes delivered deliveries last updated before `delivered_before_ms`,
    /// dead ones before `dead_before_ms`, then events older than `delivered_before_ms`
    /// that no delivery needs. Returns the deliveries and events deleted.
    async fn prune_events(&self, delivered_before_ms: i64, dead_before_ms: i64) -> Result<(u64, u64)>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("*", "", true),
            ("*", "a/b/c", true),
            ("team/*", "team/app", true),
            ("team/*", "team/app/web", true),
            ("team/*", "teams/app", false),
            ("v?", "v1", true),
            ("v?", "v10", false),
            ("v*-rc", "v1.2-rc", true),
            ("v*-rc", "v1.2-rc1", false),
            ("*a*b", "xxaxxb", true),
            ("*a*b", "xxaxxbx", false),
            ("latest", "latest", true),
            ("latest", "latest2", false),
            ("", "", true),
            ("", "a", false),
        ] {
            assert_eq!(glob_match(p, t), want, "{p:?} vs {t:?}");
        }
    }

    /// Each stored state and attempt count shows as the views name it, in the listing's
    /// JSON too, and every name parses back.
    #[test]
    fn delivery_phases() {
        let delivery = |state, attempts| Delivery {
            id: 1,
            subscription: "s".into(),
            event: Event::new(EventKind::BlobPush, "team/app", &Origin::default()),
            state,
            attempts,
            next_attempt_ms: 0,
            last_status: None,
            last_error: None,
            created_ms: 0,
            updated_ms: 0,
        };
        for (state, attempts, shown) in [
            (DeliveryState::Pending, 0, DeliveryPhase::Pending),
            (DeliveryState::Pending, 2, DeliveryPhase::Retrying),
            (DeliveryState::Delivered, 1, DeliveryPhase::Delivered),
            (DeliveryState::Dead, 3, DeliveryPhase::Dead),
        ] {
            let d = delivery(state, attempts);
            assert_eq!(DeliveryPhase::of(&d), shown);
            let json = serde_json::to_value(&d).unwrap();
            assert_eq!(json["state"], shown.as_str(), "{json}");
            assert_eq!(json["attempts"], attempts);
            assert_eq!(shown.as_str().parse::<DeliveryPhase>(), Ok(shown));
        }
        assert_eq!(
            "waiting".parse::<DeliveryPhase>(),
            Err("unknown delivery state \"waiting\" (known: pending, retrying, delivered, dead)".to_owned())
        );
    }

    fn sub() -> Subscription {
        Subscription {
            name: "s".into(),
            url: "http://127.0.0.1:9/".into(),
            secret: "k".into(),
            events: vec![],
            repositories: vec![],
            tags: vec![],
            format: PayloadFormat::CloudEvents,
            headers: BTreeMap::new(),
            timeout_ms: 1000,
            max_attempts: 3,
            enabled: true,
            source: SubscriptionSource::Api,
            created_at: 0,
            kind: SubscriptionKind::Webhook,
        }
    }

    #[test]
    fn filters() {
        let mut push = Event::new(EventKind::ManifestPush, "team/app", &Origin::default());
        push.tag = Some("v1".into());
        let blob = Event::new(EventKind::BlobPush, "team/app", &Origin::default());
        let mut s = sub();
        assert!(s.matches(&push) && s.matches(&blob));
        s.events = vec![EventKind::ManifestPush];
        assert!(s.matches(&push) && !s.matches(&blob));
        s.repositories = vec!["other/*".into(), "team/*".into()];
        assert!(s.matches(&push));
        s.repositories = vec!["other/*".into()];
        assert!(!s.matches(&push));
        s.repositories = vec![];
        s.events = vec![];
        s.tags = vec!["v*".into()];
        assert!(s.matches(&push), "tag matches");
        assert!(!s.matches(&blob), "an event without a tag does not match a tag filter");
        s.tags = vec!["latest".into()];
        assert!(!s.matches(&push));
    }

    #[test]
    fn names_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>(), Ok(k));
            assert_eq!(serde_json::to_value(k).ok(), Some(serde_json::Value::String(k.as_str().into())));
        }
        assert!("manifest.pushed".parse::<EventKind>().is_err());
        for f in [PayloadFormat::CloudEvents, PayloadFormat::Distribution, PayloadFormat::Ecr] {
            assert_eq!(f.as_str().parse::<PayloadFormat>(), Ok(f));
        }
    }
}
