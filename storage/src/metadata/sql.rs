//! SQL text both dialects write alike, shared by the SQLite and PostgreSQL stores.
//!
//! Only what is the same letter for letter: the stores differ in placeholders (`?1` / `$1`),
//! booleans, integer casts and locking clauses, and no query is bent to be shared. Each
//! column list is read back by both stores' row readers in this order.

/// The schema version a database is at (0 before the first migration).
pub(crate) const SCHEMA_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM schema_migrations";

/// An upload session's columns (`uploads`).
pub(crate) const UPLOAD_COLUMNS: &str =
    "id, repository, byte_offset, hash_state, parts, created_at, updated_at, sealing";

/// A blob copy's columns: `c` is blob_copies, `b` blobs.
pub(crate) const COPY_COLUMNS: &str = "c.key_name, c.object, b.size, c.kek, c.wrapped, c.runs";

/// How many blob copies and upload sessions each key (`k`) wraps, as two columns.
pub(crate) const KEY_COUNTS: &str = "(SELECT COUNT(*) FROM blob_copies c WHERE c.kek = k.id), \
    (SELECT COUNT(*) FROM uploads u WHERE u.sealing_kek = k.id)";

/// A user's columns (`users`).
pub(crate) const USER_COLUMNS: &str = "name, password_hash, disabled, created_at, id, credential_generation";

/// An access key's columns (`access_keys`).
pub(crate) const ACCESS_KEY_COLUMNS: &str = "id, user_name, secret_digest, disabled, created_at, secret_sealed";

/// A policy's columns (`policies`).
pub(crate) const POLICY_COLUMNS: &str = "target_kind, target, name, document, updated_at";

/// A webhook subscription's columns (`subscriptions`).
pub(crate) const SUBSCRIPTION_COLUMNS: &str = "name, definition, enabled, source, created_at";

/// `d` is deliveries, `e` events: the columns of [`DeliveryColumns`](super::DeliveryColumns), in order.
pub(crate) const DELIVERY_COLUMNS: &str = "d.id, d.subscription, d.state, d.attempts, d.next_attempt_ms, \
    d.last_status, d.last_error, d.created_ms, d.updated_ms, e.seq, e.payload";

/// Each repository's name and usage counters (`r` is repositories, `u` repository_usage),
/// for a `WHERE` to follow.
pub(crate) const REPOSITORY_USAGE: &str = "SELECT r.name, u.bytes, u.blobs, u.manifests, u.tags \
    FROM repositories r JOIN repository_usage u ON u.repository_id = r.id";

/// A quota's columns (`quotas`).
pub(crate) const QUOTA_COLUMNS: &str = "scope, max_bytes, max_images, updated_at";
/// A garbage collection run's columns (`gc_runs`).
pub(crate) const GC_RUN_COLUMNS: &str = "id, started_ms, finished_ms, state, dry_run, repository, phase, links, blobs, \
    copies, unknown_objects, uploads, bytes, duration_ms, error";

/// A repository creation template's columns (`repository_templates`), read back by
/// [`TemplateColumns`](super::templates::TemplateColumns) in this order.
pub(crate) const TEMPLATE_COLUMNS: &str = "prefix, description, tag_mutability, tag_mutability_exclusions, key_name, \
    lifecycle_policy, repository_policy, resource_tags, applied_for, created_at, updated_at";
