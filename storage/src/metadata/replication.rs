//! Replication to other registries, as records: the registry-wide replication configuration
//! (a JSON document the registry checks before storing) and the status of each image at each
//! destination.
//!
//! A destination is also a [`Subscription`] of kind [`SubscriptionKind::Replication`]: every
//! matching manifest push is fanned out to it by the outbox in the push's own transaction
//! ([`super::events`]), and the registry's dispatcher copies the image when it claims the
//! delivery. So replication has the webhooks' order per repository, leases, backoff, dead
//! letters, replay and delivery log. Storing the configuration replaces those subscriptions
//! in the same transaction.
//!
//! [`SubscriptionKind::Replication`]: super::SubscriptionKind::Replication

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::Subscription;
use crate::error::Result;

/// The stored replication configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationRecord {
    /// The configuration as JSON, as the registry stored it (credentials are not in it: they
    /// are in the destinations' subscriptions, sealed).
    pub document: String,
    /// `config` (the configuration file's `[replication]`, replaced at every start) or `api`.
    pub source: String,
    /// Unix seconds of the last put.
    pub updated_at: i64,
}

/// Where an image stands at one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReplicationState {
    /// Owed, no attempt made yet.
    Pending,
    /// Being copied, or waiting to be tried again after a failed attempt.
    InProgress,
    Complete,
    /// Out of attempts (a dead letter; a replay tries again).
    Failed,
}

impl ReplicationState {
    pub const ALL: [ReplicationState; 4] =
        [ReplicationState::Pending, ReplicationState::InProgress, ReplicationState::Complete, ReplicationState::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            ReplicationState::Pending => "PENDING",
            ReplicationState::InProgress => "IN_PROGRESS",
            ReplicationState::Complete => "COMPLETE",
            ReplicationState::Failed => "FAILED",
        }
    }
}

impl std::str::FromStr for ReplicationState {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<ReplicationState, String> {
        ReplicationState::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown replication status {s:?} (known: PENDING, IN_PROGRESS, COMPLETE, FAILED)"))
    }
}

/// The status of one image (a manifest, by digest) at one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicationStatus {
    /// The destination's name.
    pub destination: String,
    pub repository: String,
    pub digest: String,
    pub state: ReplicationState,
    /// Why the last attempt failed (`IN_PROGRESS` after a failure, `FAILED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix milliseconds of the last change.
    pub updated_ms: i64,
}

/// The replication configuration and statuses (`replication_config`, `replication_status`).
#[async_trait]
pub trait Replication: Send + Sync {
    /// The stored configuration; `None` when none was ever put.
    async fn replication_config(&self) -> Result<Option<ReplicationRecord>>;
    /// Stores `document` (from `source`) and, in the same transaction, makes the
    /// subscriptions of kind replication exactly `destinations` (each upserted with its kind
    /// set to replication and source `api`, keeping its `created_at` and deliveries; the
    /// others deleted with their deliveries and statuses). A destination's name already
    /// used by a webhook is `Error::Conflict`, and nothing is written.
    async fn put_replication_config(&self, document: &str, source: &str, destinations: &[Subscription]) -> Result<()>;
    /// Records `status` (insert or replace, per destination, repository and digest).
    async fn set_replication_status(&self, status: &ReplicationStatus) -> Result<()>;
    /// The statuses of `digest` in `repository`, by destination.
    async fn replication_statuses(&self, repository: &str, digest: &str) -> Result<Vec<ReplicationStatus>>;
}
