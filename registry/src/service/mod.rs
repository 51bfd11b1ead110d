//! The service layer: registry verbs over the blob store and the metadata store. No HTTP
//! types here; errors are [`ApiError`](crate::error::ApiError)s.

pub mod blobs;
pub mod cache;
pub mod ecr_images;
pub mod ecr_layers;
pub mod ecr_repos;
pub mod encryption;
pub mod gc;
pub mod images;
pub mod keys;
pub mod lifecycle;
pub mod manifests;
pub mod pull_through;
pub mod pulls;
pub mod replication;
pub mod repositories;
pub mod repository_settings;
pub mod scrub;
pub mod taskdef;
pub mod templates;
pub mod uploads;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use berth_oci::{RepoName, UploadId};
use berth_storage::{BlobStore, MetadataStore};

/// Behaviour switches taken from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub delete_manifests: bool,
    pub delete_blobs: bool,
    pub upload_max_age: Duration,
    /// `uploads.max_open_per_repository` and `uploads.max_open_per_principal`.
    pub uploads_per_repository: u64,
    pub uploads_per_principal: u64,
    /// `quotas.limits`: the quotas of the configuration (stored ones win per scope).
    pub quotas: Vec<berth_storage::metadata::QuotaRecord>,
    /// `quotas.warning`: percent of a limit at which `quota.warning` is written; 0: never.
    pub quota_warning: u8,
    /// `gc.grace` and the wait between marking and removing links.
    pub gc: gc::GcSettings,
    /// `registry.create_on_push`: a push may create a repository no template covers.
    pub create_on_push: bool,
    /// How often the last pull times noted are written (`service::pulls`; tests lengthen it
    /// to flush by hand).
    pub pull_flush: Duration,
    /// `storage.verify_reads`: whole plaintext reads hashed, and no zero copy.
    pub verify_reads: bool,
}

/// Everything a request needs: the stores, the settings and the manifest cache. Shared by
/// all requests (behind an `Arc`).
#[derive(Debug)]
pub struct Registry {
    pub blobs: BlobStore,
    pub meta: Arc<dyn MetadataStore>,
    pub settings: Settings,
    pub manifests: cache::ManifestCache,
    pub crypt: encryption::Encryption,
    pub auth: crate::auth::Authority,
    pub events: Arc<crate::events::Events>,
    /// Names clients use for this registry (config `hosts`).
    pub hosts: Vec<String>,
    /// Pulls stopped by an integrity failure, and what the scrubs found (`/metrics`).
    pub integrity: Arc<scrub::IntegrityCounters>,
    /// Blob links clients were told about since the last flush (`service::gc::seen`).
    pub seen: Arc<gc::seen::SeenLinks>,
    /// Manifests pulled since the last flush of their pull times (`service::pulls`).
    pub pulls: Arc<pulls::PullTimes>,
    /// Pull-through cache rules, clients, fetches in flight and recent misses.
    pub pull_through: pull_through::PullThroughCache,
}

/// The URL path of an upload session, as given in `Location`.
pub fn upload_location(repo: &RepoName, id: &UploadId) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

/// A page limit for listings: what the client asked, capped.
pub const MAX_PAGE: usize = 10_000;
