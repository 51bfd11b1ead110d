//! The metadata store: every record of what the registry holds, apart from blob bytes.
//!
//! [`MetadataStore`] is the combination of small traits, one per domain, each in its own
//! file with its records, and implemented per backend in a file of the same name
//! (`sqlite/<domain>.rs`, `postgres/<domain>.rs`):
//!
//! - [`Repositories`] (`repositories.rs`): repositories, their keys, settings (tag
//!   mutability), listing and deletion;
//! - [`Blobs`] (`blobs.rs`): blob links to repositories and sealed copies;
//! - [`Manifests`] (`manifests.rs`): manifests, tags, referrers and the change feed;
//! - [`Uploads`] (`uploads.rs`): upload sessions;
//! - [`Keys`] (`keys.rs`): key-encryption keys, as records;
//! - [`Identity`] (`identity.rs`): users, access keys and the token signing keys;
//! - [`Policies`] (`policies.rs`): policy documents and repository tags;
//! - [`Events`] (`events.rs`): the webhooks' outbox, subscriptions, deliveries and attempts;
//! - [`GcStore`] (`gc.rs`): the garbage collector's records: links seen and marked, holds,
//!   doomed digests, the collector's lease and its runs.
//! - [`UsageStore`] (`usage.rs`): usage counters (kept by the database's triggers as rows
//!   come and go) and quotas.
//! - [`Images`] (`images.rs`): each manifest with its tags, sizes, references, push and last
//!   pull times (ECR's image details); last pull times written in batches.
//! - [`Lifecycle`] (`lifecycle.rs`): repositories' lifecycle policies, their last previews,
//!   and the conditional deletion a lifecycle run makes (only when the image's tags are still
//!   those planned).
//! - [`Templates`] (`templates.rs`): repository creation templates.
//! - [`PullThrough`] (`pull_through.rs`): pull-through cache rules and when each cached tag
//!   was last checked upstream.
//! - [`RegistrySettings`] (`registry_settings.rs`): registry-wide settings by name, each a
//!   JSON document kept as given (ECR's registry scanning configuration).
//! - [`Replication`] (`replication.rs`): the replication configuration (its destinations are
//!   subscriptions of kind replication) and each image's status at each destination.
//!
//! Two implementations run against the same test suite (`storage/tests/storage/metadata.rs`):
//! [`sqlite::SqliteStore`] (an embedded file, one process) and [`postgres::PostgresStore`] (a
//! server shared by replicas). Every method is one transaction. Callers bring every domain's
//! methods into scope with `use berth_storage::metadata::prelude::*`.
//!
//! Besides the registry's content, the store keeps what authentication and authorization
//! read: users, access keys (their secrets only as digests), policy documents attached to a
//! user, an access key, a repository or the whole registry, repository tags (the condition
//! keys of resource policies), and the token service's signing keys.
//!
//! And the webhooks' records ([`events`]): the outbox, to which each change a webhook reports
//! writes its [`Event`]s in the transaction that makes it (fanned out there to one delivery
//! per matching subscription), the subscriptions, the deliveries and their attempts.

mod blobs;
pub mod events;
pub mod gc;
mod identity;
mod images;
mod keys;
mod lifecycle;
mod manifests;
mod policies;
pub mod postgres;
pub mod postgres_tls;
pub mod postgres_url;
mod pull_through;
mod registry_settings;
mod replication;
mod repositories;
mod sql;
pub mod sqlite;
mod templates;
mod uploads;
mod usage;

use berth_oci::{Digest, RepoName, Tag};

use crate::error::Result;
pub use blobs::{BlobEntry, Blobs};
pub use events::{
    Attempt, Claimed, Delivery, DeliveryCounts, DeliveryFilter, DeliveryPhase, DeliveryState, Event, EventKind, Events,
    Origin, Outcome, PayloadFormat, QuotaNotice, Subscription, SubscriptionKind, SubscriptionSource,
};
pub use gc::{Doomed, GcCounts, GcLease, GcPreview, GcRun, GcState, GcStore};
pub use identity::{AccessKeyRecord, Identity, SigningKeyRecord, UserRecord};
pub use images::{ImageRecord, Images};
pub use keys::{KeyRecord, KeyState, Keys, RetireRefused};
pub use lifecycle::{Expired, Lifecycle, LifecyclePolicyRecord, LifecyclePreviewRecord};
pub(crate) use manifests::check_reference;
pub use manifests::{
    Change, ManifestRecord, Manifests, NewManifest, ReferenceCheck, Referrer, RequiredContent, TagGuard,
};
pub use policies::{Policies, PolicyRecord, PolicySet, PolicyTarget, RESOURCE_POLICY};
pub use pull_through::{PullThrough, PullThroughRuleRecord};
pub use registry_settings::{RegistrySetting, RegistrySettings};
pub use replication::{Replication, ReplicationRecord, ReplicationState, ReplicationStatus};
pub use repositories::{
    CreatedRepository, NewRepository, Repositories, RepositoryDeleted, RepositorySettings, TagMutabilitySetting,
};
pub use templates::{TemplateRecord, Templates};
pub use uploads::{UploadQuota, UploadRecord, Uploads};
pub use usage::{
    KeyUsage, QuotaDimension, QuotaRecord, QuotaScope, RegistryUsage, RepositoryUsage, ScopeUsage, UsageStore,
};

/// Every domain trait, for callers of a [`MetadataStore`]: `use berth_storage::metadata::prelude::*;`
/// brings all their methods into scope. The domain traits come in unnamed (`as _`), so that
/// they never clash with a caller's own names (`Events`, `Policies`, ...); name them from
/// [`crate::metadata`] where needed.
pub mod prelude {
    pub use super::MetadataStore;
    pub use super::{
        Blobs as _, Events as _, GcStore as _, Identity as _, Images as _, Keys as _, Lifecycle as _, Manifests as _,
        Policies as _, PullThrough as _, RegistrySettings as _, Replication as _, Repositories as _, Templates as _,
        Uploads as _, UsageStore as _,
    };
}

/// The registry's records: every domain's trait. Implementations must make each method
/// atomic. Implemented for every type that implements all the domains.
pub trait MetadataStore:
    Repositories
    + Blobs
    + Manifests
    + Uploads
    + Keys
    + Identity
    + Policies
    + Events
    + GcStore
    + UsageStore
    + Templates
    + Images
    + Lifecycle
    + RegistrySettings
    + PullThrough
    + Replication
    + std::fmt::Debug
{
}

impl<T> MetadataStore for T where
    T: Repositories
        + Blobs
        + Manifests
        + Uploads
        + Keys
        + Identity
        + Policies
        + Events
        + GcStore
        + UsageStore
        + Templates
        + Images
        + Lifecycle
        + RegistrySettings
        + PullThrough
        + Replication
        + std::fmt::Debug
        + ?Sized
{
}

/// One page of a sorted listing: the entries after `last`, at most `limit` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub last: Option<String>,
    pub limit: usize,
}

/// A digest read back from the database; a bad one means the stored data is corrupt.
pub(crate) fn parse_digest(s: String) -> Result<Digest> {
    s.parse().map_err(|e| crate::error::Error::Corrupt(format!("stored digest {s:?}: {e}")))
}

/// A size column (SQL integers are signed) as bytes.
pub(crate) fn size_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or_default()
}

/// Bytes as a size column.
pub(crate) fn db_size(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Seconds since the Unix epoch, as stored in records.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

// What both stores share of webhook records: the JSON they keep, the events each change
// reports, and how an attempt's outcome lands in a delivery's columns.

/// An event as its `payload` column (`seq` is the column's; the JSON carries 0).
pub(crate) fn event_payload(event: &Event) -> Result<String> {
    serde_json::to_string(&Event { seq: 0, ..event.clone() })
        .map_err(|e| crate::Error::Corrupt(format!("event {}: {e}", event.id)))
}

/// An event read back from its `seq` and `payload` columns.
pub(crate) fn event_from_payload(seq: i64, payload: &str) -> Result<Event> {
    let mut event: Event =
        serde_json::from_str(payload).map_err(|e| crate::Error::Corrupt(format!("event {seq}: {e}")))?;
    event.seq = seq;
    Ok(event)
}

/// A subscription's `definition` column: everything but what has a column of its own.
pub(crate) fn subscription_definition(s: &Subscription) -> Result<String> {
    serde_json::to_string(s).map_err(|e| crate::Error::Corrupt(format!("subscription {}: {e}", s.name)))
}

/// A subscription read back from its columns (which win over the JSON).
pub(crate) fn subscription_from_columns(
    name: String,
    definition: &str,
    enabled: bool,
    source: &str,
    created_at: i64,
) -> Result<Subscription> {
    let mut s: Subscription =
        serde_json::from_str(definition).map_err(|e| crate::Error::Corrupt(format!("subscription {name}: {e}")))?;
    s.source = source_from_column(source)?;
    s.name = name;
    s.enabled = enabled;
    s.created_at = created_at;
    Ok(s)
}

/// The `source` column.
pub(crate) fn source_column(source: SubscriptionSource) -> &'static str {
    match source {
        SubscriptionSource::Api => "api",
        SubscriptionSource::Config => "config",
    }
}

fn source_from_column(s: &str) -> Result<SubscriptionSource> {
    match s {
        "api" => Ok(SubscriptionSource::Api),
        "config" => Ok(SubscriptionSource::Config),
        other => Err(crate::Error::Corrupt(format!("subscription source {other:?}"))),
    }
}

/// A delivery's `state` column read back.
pub(crate) fn delivery_state(s: &str) -> Result<DeliveryState> {
    s.parse().map_err(crate::Error::Corrupt)
}

/// A delivery's columns as read (both stores select them in this order, then the event's
/// `seq` and `payload`): id, subscription, state, attempts, next_attempt_ms, last_status,
/// last_error, created_ms, updated_ms.
pub(crate) struct DeliveryColumns {
    pub id: i64,
    pub subscription: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub event_seq: i64,
    pub payload: String,
}

impl DeliveryColumns {
    pub(crate) fn into_delivery(self) -> Result<Delivery> {
        Ok(Delivery {
            id: self.id,
            subscription: self.subscription,
            event: event_from_payload(self.event_seq, &self.payload)?,
            state: delivery_state(&self.state)?,
            attempts: u32::try_from(self.attempts).unwrap_or_default(),
            next_attempt_ms: self.next_attempt_ms,
            last_status: self.last_status.and_then(|s| u16::try_from(s).ok()),
            last_error: self.last_error,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
        })
    }
}

/// An attempt's outcome as the columns it writes: the delivery's new state, its next
/// attempt (when retried), and the attempt's status, error and duration.
pub(crate) struct OutcomeColumns<'a> {
    pub state: DeliveryState,
    pub next_attempt_ms: Option<i64>,
    pub status: Option<i32>,
    pub error: Option<&'a str>,
    pub duration_ms: i64,
}

impl<'a> OutcomeColumns<'a> {
    pub(crate) fn of(outcome: &'a Outcome) -> OutcomeColumns<'a> {
        let duration = |d: &u64| i64::try_from(*d).unwrap_or(i64::MAX);
        match outcome {
            Outcome::Delivered { status, duration_ms } => OutcomeColumns {
                state: DeliveryState::Delivered,
                next_attempt_ms: None,
                status: Some(i32::from(*status)),
                error: None,
                duration_ms: duration(duration_ms),
            },
            Outcome::Retry { status, error, duration_ms, next_attempt_ms } => OutcomeColumns {
                state: DeliveryState::Pending,
                next_attempt_ms: Some(*next_attempt_ms),
                status: status.map(i32::from),
                error: Some(error),
                duration_ms: duration(duration_ms),
            },
            Outcome::Dead { status, error, duration_ms } => OutcomeColumns {
                state: DeliveryState::Dead,
                next_attempt_ms: None,
                status: status.map(i32::from),
                error: Some(error),
                duration_ms: duration(duration_ms),
            },
        }
    }
}

/// An attempt read back: delivery, number, at_ms, status, error, duration_ms.
pub(crate) fn attempt_from_columns(
    delivery: i64,
    number: i64,
    at_ms: i64,
    status: Option<i64>,
    error: Option<String>,
    duration_ms: i64,
) -> Attempt {
    Attempt {
        delivery,
        number: u32::try_from(number).unwrap_or_default(),
        at_ms,
        status: status.and_then(|s| u16::try_from(s).ok()),
        error,
        duration_ms: u64::try_from(duration_ms).unwrap_or_default(),
    }
}

/// The event of a new repository.
pub(crate) fn repository_created(repo: &RepoName, origin: &Origin) -> Event {
    Event::new(EventKind::RepositoryCreate, repo.as_str(), origin)
}

/// The event of a blob linked to `repo`: pushed, or mounted `from` another repository.
pub(crate) fn blob_linked(
    repo: &RepoName,
    digest: &Digest,
    size: u64,
    from: Option<&RepoName>,
    origin: &Origin,
) -> Event {
    let kind = if from.is_some() { EventKind::BlobMount } else { EventKind::BlobPush };
    let mut event = Event::new(kind, repo.as_str(), origin);
    event.digest = Some(digest.to_string());
    event.size = Some(size);
    event.from_repository = from.map(|r| r.as_str().to_owned());
    event
}

/// The events of a stored manifest: one per tag it moved (each tag once, in the order
/// given), or one without a tag.
pub(crate) fn manifest_pushed(m: &NewManifest, origin: &Origin) -> Vec<Event> {
    let event = |tag: Option<&Tag>| {
        let mut event = Event::new(EventKind::ManifestPush, m.repo.as_str(), origin);
        event.digest = Some(m.digest.to_string());
        event.media_type = Some(m.media_type.clone());
        event.artifact_type = m.artifact_type.clone();
        event.size = Some(m.content.len() as u64);
        event.tag = tag.map(|t| t.as_str().to_owned());
        event
    };
    if m.tags.is_empty() {
        return vec![event(None)];
    }
    let mut seen = std::collections::BTreeSet::new();
    m.tags.iter().filter(|t| seen.insert(t.as_str())).map(|t| event(Some(t))).collect()
}

/// The event of a deleted tag, with the manifest it pointed at.
pub(crate) fn tag_deleted(repo: &str, tag: &str, digest: &str, media_type: Option<String>, origin: &Origin) -> Event {
    let mut event = Event::new(EventKind::TagDelete, repo, origin);
    event.tag = Some(tag.to_owned());
    event.digest = Some(digest.to_owned());
    event.media_type = media_type;
    event
}

/// The events of a deleted manifest: its tags' (sorted as given), then its own.
pub(crate) fn manifest_deleted(
    repo: &RepoName,
    digest: &Digest,
    media_type: &str,
    size: u64,
    tags: &[String],
    origin: &Origin,
) -> Vec<Event> {
    let digest = digest.to_string();
    let mut events: Vec<Event> =
        tags.iter().map(|t| tag_deleted(repo.as_str(), t, &digest, Some(media_type.to_owned()), origin)).collect();
    let mut event = Event::new(EventKind::ManifestDelete, repo.as_str(), origin);
    event.digest = Some(digest);
    event.media_type = Some(media_type.to_owned());
    event.size = Some(size);
    events.push(event);
    events
}
