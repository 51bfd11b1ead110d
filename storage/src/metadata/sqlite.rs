//! [`SqliteStore`]: the metadata store in an embedded SQLite file (the zero-config default).
//!
//! A few connections in WAL mode (readers do not block the writer), each call run on the
//! blocking pool. Writes take the lock up front (`BEGIN IMMEDIATE`) so two writers never
//! deadlock upgrading a read lock. `synchronous=FULL`: a 201 means the record is on disk.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use berth_oci::{Digest, Reference, RepoName, Tag, UploadId};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::Semaphore;

use super::{
    AccessKeyRecord, Attempt, BlobEntry, Claimed, DELIVERY_COLUMNS, Delivery, DeliveryColumns, DeliveryCounts,
    DeliveryFilter, DeliveryPhase, Event, EventKind, KeyRecord, KeyState, ManifestRecord, MetadataStore, NewManifest,
    Origin, Outcome, OutcomeColumns, Page, PolicyRecord, PolicySet, PolicyTarget, Referrer, RepositoryDeleted,
    RetireRefused, SigningKeyRecord, Subscription, SubscriptionSource, UploadQuota, UploadRecord, UserRecord,
    attempt_from_columns, blob_linked, check_reference, db_size, event_from_payload, event_payload, manifest_deleted,
    manifest_pushed, parse_digest, repository_created, size_of, source_column, subscription_definition,
    subscription_from_columns, tag_deleted, unix_now,
};
use crate::crypt::{Run, SealedBlob, UploadSealing};
use crate::error::{Error, Result};

mod gc;

/// Connections kept open; bounds concurrent database work.
const POOL_SIZE: usize = 4;

/// Schema versions, applied in order, each once. Never edit a released entry: add one.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("sqlite_v1.sql")),
    (2, include_str!("sqlite_v2.sql")),
    (3, include_str!("sqlite_v3.sql")),
    (4, include_str!("sqlite_v4.sql")),
    (5, include_str!("sqlite_v5.sql")),
    (6, include_str!("sqlite_v6.sql")),
    (7, include_str!("sqlite_v7.sql")),
    (8, include_str!("sqlite_v8.sql")),
];

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: Arc<Pool>,
}

#[derive(Debug)]
struct Pool {
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::Corrupt(format!("{}: {e}", dir.display())))?;
            }
            let mut first = open_connection(&path)?;
            migrate(&mut first)?;
            let mut idle = vec![first];
            for _ in 1..POOL_SIZE {
                idle.push(open_connection(&path)?);
            }
            Ok(SqliteStore { pool: Arc::new(Pool { idle: Mutex::new(idle), permits: Semaphore::new(POOL_SIZE) }) })
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?
    }

    /// Opens the database file of a registry that exists, and brings its schema up to date;
    /// `None` (nothing written, nothing created) when there is no file at `path` or it holds
    /// no Berth schema. For the commands other than `serve`, which must not start a registry.
    pub async fn open_existing(path: &Path) -> Result<Option<SqliteStore>> {
        let owned = path.to_owned();
        let has_schema = tokio::task::spawn_blocking(move || -> Result<bool> {
            if !owned.is_file() {
                return Ok(false);
            }
            // Without SQLITE_OPEN_CREATE, and before any pragma: an empty file stays empty.
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = Connection::open_with_flags(&owned, flags)?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            let tables: i64 = conn.query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
                [],
                |r| r.get(0),
            )?;
            Ok(tables > 0)
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
        if !has_schema {
            return Ok(None);
        }
        SqliteStore::open(path).await.map(Some)
    }

    /// Runs `f` with a pooled connection on the blocking thread pool.
    async fn with_conn<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let _permit = self.pool.permits.acquire().await.map_err(|e| Error::Task(e.to_string()))?;
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool
                .idle
                .lock()
                .map_err(|e| Error::Task(e.to_string()))?
                .pop()
                .ok_or_else(|| Error::Task("connection pool is empty while a permit is held".into()))?;
            let result = f(&mut conn);
            if let Ok(mut idle) = pool.idle.lock() {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?
    }

    /// Runs `f` in a write transaction, committed when it returns `Ok`.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T> + Send + 'static,
    {
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    let current: i64 = tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))?;
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![version, unix_now()],
        )?;
        tracing::info!(schema.version = version, "metadata schema migrated");
    }
    tx.commit()?;
    Ok(())
}

fn repo_id(conn: &Connection, repo: &RepoName) -> Result<Option<i64>> {
    Ok(conn.query_row("SELECT id FROM repositories WHERE name = ?1", [repo.as_str()], |r| r.get(0)).optional()?)
}

/// The repository's id, creating the repository on first use; `true` when it was created.
fn ensure_repo(conn: &Connection, repo: &RepoName) -> Result<(i64, bool)> {
    let created = conn.execute(
        "INSERT INTO repositories (name, created_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
        params![repo.as_str(), unix_now()],
    )? > 0;
    Ok((repo_id(conn, repo)?.ok_or(Error::Conflict)?, created))
}

/// Writes `events` to the outbox, in order, and fans each out to one delivery per enabled
/// subscription it matches: the last step of every transaction that makes a change a webhook
/// reports, so the events commit with the change or not at all. (The write lock taken by
/// `BEGIN IMMEDIATE` makes `seq` order commit order.)
fn emit(tx: &rusqlite::Transaction<'_>, events: &[Event]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let subscriptions = read_subscriptions(tx, "WHERE enabled = 1")?;
    let mut insert_event = tx
        .prepare_cached("INSERT INTO events (id, kind, repository, created_ms, payload) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    let mut insert_delivery = tx.prepare_cached(
        "INSERT INTO deliveries (subscription, event_seq, repository, state, attempts, next_attempt_ms, \
         created_ms, updated_ms) VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4, ?4)",
    )?;
    for event in events {
        insert_event.execute(params![
            event.id,
            event.kind.as_str(),
            event.repository,
            event.time_ms,
            event_payload(event)?
        ])?;
        let seq = tx.last_insert_rowid();
        for s in subscriptions.iter().filter(|s| s.matches(event)) {
            insert_delivery.execute(params![s.name, seq, event.repository, event.time_ms])?;
        }
    }
    Ok(())
}

const SUBSCRIPTION_COLUMNS: &str = "name, definition, enabled, source, created_at";

/// Subscriptions (`filter`: a WHERE clause or empty), by name.
fn read_subscriptions(conn: &Connection, filter: &str) -> Result<Vec<Subscription>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions {filter} ORDER BY name"))?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, bool>(2)?, r.get::<_, String>(3)?, r.get(4)?))
    })?;
    rows.map(|r| {
        let (name, definition, enabled, source, created_at) = r?;
        subscription_from_columns(name, &definition, enabled, &source, created_at)
    })
    .collect()
}

/// Inserts or replaces `s` (with `source`), keeping `created_at` of one that exists;
/// `true` when created.
fn upsert_subscription(tx: &rusqlite::Transaction<'_>, s: &Subscription, source: SubscriptionSource) -> Result<bool> {
    let s = Subscription { source, ..s.clone() };
    let existed = tx.query_row("SELECT 1 FROM subscriptions WHERE name = ?1", [&s.name], |_| Ok(())).optional()?;
    tx.execute(
        &format!(
            "INSERT INTO subscriptions ({SUBSCRIPTION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, enabled = excluded.enabled, \
             source = excluded.source"
        ),
        params![s.name, subscription_definition(&s)?, s.enabled, source_column(source), unix_now()],
    )?;
    Ok(existed.is_none())
}

fn delivery_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryColumns> {
    Ok(DeliveryColumns {
        id: r.get(0)?,
        subscription: r.get(1)?,
        state: r.get(2)?,
        attempts: r.get(3)?,
        next_attempt_ms: r.get(4)?,
        last_status: r.get(5)?,
        last_error: r.get(6)?,
        created_ms: r.get(7)?,
        updated_ms: r.get(8)?,
        event_seq: r.get(9)?,
        payload: r.get(10)?,
    })
}

/// The deliveries (`d`, joined with their events `e`) a [`DeliveryFilter`] takes, bound as
/// ?1 subscription, ?2 state (a [`DeliveryPhase`]: `retrying` is pending after a failed
/// attempt), ?3 repository, ?4 id, ?5 event id (NULL: any).
const DELIVERY_FILTER: &str = "(?1 IS NULL OR d.subscription = ?1) \
    AND (?2 IS NULL OR (CASE WHEN d.state = 'pending' AND d.attempts > 0 THEN 'retrying' ELSE d.state END) = ?2) \
    AND (?3 IS NULL OR d.repository = ?3) AND (?4 IS NULL OR d.id = ?4) AND (?5 IS NULL OR e.id = ?5)";

/// The filter's parameters, in the order of [`DELIVERY_FILTER`].
type FilterParams = (Option<String>, Option<&'static str>, Option<String>, Option<i64>, Option<String>);

fn filter_params(f: &DeliveryFilter) -> FilterParams {
    (f.subscription.clone(), f.state.map(DeliveryPhase::as_str), f.repository.clone(), f.id, f.event_id.clone())
}

/// A delivery is claimable (`d`, at ?1 now) when it is pending, due, not leased (or its lease
/// ran out), its subscription is enabled, and no earlier delivery of its line is pending.
/// Walks the pending deliveries in claim order and stops at the limit, each check an index
/// lookup: a claim costs what it takes, not the backlog (sqlite_v5.sql).
const CLAIMABLE: &str = "SELECT d.id FROM deliveries d INDEXED BY deliveries_pending \
    WHERE d.state = 'pending' AND d.next_attempt_ms <= ?1 \
    AND (d.lease_owner IS NULL OR d.lease_until_ms <= ?1) \
    AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.name = d.subscription AND s.enabled = 1) \
    AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.subscription = d.subscription \
    AND p.repository = d.repository AND p.state = 'pending' AND p.event_seq < d.event_seq) \
    ORDER BY d.event_seq, d.id LIMIT ?2";

/// The columns of [`UPLOAD_COLUMNS`], as read.
type UploadRow = (String, String, i64, Vec<u8>, String, i64, i64, Option<String>);

fn upload_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UploadRow> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?, row.get(6)?, row.get(7)?))
}

fn upload_record(row: UploadRow) -> Result<UploadRecord> {
    let (id, repo, offset, hash_state, parts, created_at, updated_at, sealing) = row;
    let corrupt = |what: &str, e: &dyn std::fmt::Display| Error::Corrupt(format!("upload {id}: {what}: {e}"));
    Ok(UploadRecord {
        id: id.parse().map_err(|e| corrupt("id", &e))?,
        repo: repo.parse().map_err(|e| corrupt("repository", &e))?,
        offset: size_of(offset),
        hash_state,
        parts: serde_json::from_str(&parts).map_err(|e| corrupt("parts", &e))?,
        created_at,
        updated_at,
        sealing: sealing.map(|s| UploadSealing::decode(s.as_bytes())).transpose()?,
    })
}

const UPLOAD_COLUMNS: &str = "id, repository, byte_offset, hash_state, parts, created_at, updated_at, sealing";

fn sealing_text(u: &UploadRecord) -> (Option<String>, Option<String>) {
    match &u.sealing {
        Some(s) => (Some(String::from_utf8_lossy(&s.encode()).into_owned()), Some(s.kek.clone())),
        None => (None, None),
    }
}

type CopyRow = (String, String, i64, String, Vec<u8>, Vec<u8>);

fn copy_record(row: CopyRow) -> Result<SealedBlob> {
    let (key_name, object, size, kek, wrapped, runs) = row;
    Ok(SealedBlob { key_name, object, size: size_of(size), kek, wrapped, runs: Run::decode(&runs)? })
}

/// `c` is blob_copies, `b` blobs.
const COPY_COLUMNS: &str = "c.key_name, c.object, b.size, c.kek, c.wrapped, c.runs";

fn copy_from_row(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<CopyRow> {
    Ok((row.get(at)?, row.get(at + 1)?, row.get(at + 2)?, row.get(at + 3)?, row.get(at + 4)?, row.get(at + 5)?))
}

const USER_COLUMNS: &str = "name, password_hash, disabled, created_at, id, credential_generation";

fn user_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        name: row.get(0)?,
        password_hash: row.get(1)?,
        disabled: row.get(2)?,
        created_at: row.get(3)?,
        id: row.get(4)?,
        generation: row.get(5)?,
    })
}

const ACCESS_KEY_COLUMNS: &str = "id, user_name, secret_digest, disabled, created_at";

fn access_key_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AccessKeyRecord> {
    Ok(AccessKeyRecord {
        id: row.get(0)?,
        user: row.get(1)?,
        secret_digest: row.get(2)?,
        disabled: row.get(3)?,
        created_at: row.get(4)?,
    })
}

/// A policy's columns as read: target kind, target, name, document, updated_at.
type PolicyRow = (String, String, String, String, i64);

const POLICY_COLUMNS: &str = "target_kind, target, name, document, updated_at";

fn policy_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PolicyRow> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
}

fn policy_record(row: PolicyRow) -> Result<PolicyRecord> {
    let (kind, target, name, document, updated_at) = row;
    Ok(PolicyRecord { target: PolicyTarget::from_columns(&kind, target)?, name, document, updated_at })
}

/// Deletes the policies of `kind` attached to `target`.
fn delete_policies_of(tx: &rusqlite::Transaction<'_>, kind: &str, target: &str) -> Result<()> {
    tx.execute("DELETE FROM policies WHERE target_kind = ?1 AND target = ?2", params![kind, target])?;
    Ok(())
}

#[async_trait]
impl MetadataStore for SqliteStore {
    async fn ping(&self) -> Result<()> {
        self.with_conn(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map(|_| ())?)).await
    }

    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.with_conn(move |c| {
            let size: Option<i64> = c
                .query_row(
                    "SELECT b.size FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
                     JOIN blobs b ON b.digest = rb.digest WHERE r.name = ?1 AND rb.digest = ?2",
                    params![repo, digest],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(size.map(size_of))
        })
        .await
    }

    async fn any_blob(&self, digest: &Digest) -> Result<Option<u64>> {
        let digest = digest.to_string();
        self.with_conn(move |c| {
            let size: Option<i64> = c
                .query_row(
                    "SELECT b.size FROM blobs b WHERE b.digest = ?1 \
                     AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)",
                    [digest],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(size.map(size_of))
        })
        .await
    }

    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        plaintext: bool,
        from: Option<&RepoName>,
        origin: &Origin,
    ) -> Result<()> {
        let (repo, digest, from, origin) = (repo.clone(), digest.clone(), from.cloned(), origin.clone());
        self.write(move |tx| {
            let column = digest.to_string();
            // The collector is deleting this digest's objects: no link may point at them.
            if tx
                .query_row("SELECT 1 FROM gc_dooms WHERE digest = ?1", [&column], |r| r.get::<_, i64>(0))
                .optional()?
                .is_some()
            {
                return Err(Error::Doomed(digest.clone()));
            }
            let (id, created) = ensure_repo(tx, &repo)?;
            let now = unix_now();
            tx.execute(
                "INSERT INTO blobs (digest, size, created_at, plain) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (digest) DO UPDATE SET plain = MAX(plain, excluded.plain)",
                params![column, db_size(size), now, i64::from(plaintext)],
            )?;
            // Linking again tells the client again that the blob is there: seen now, unmarked.
            tx.execute(
                "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (repository_id, digest) DO UPDATE SET seen_at = excluded.created_at, gc_mark = NULL",
                params![id, column, now],
            )?;
            let mut events = Vec::with_capacity(2);
            if created {
                events.push(repository_created(&repo, &origin));
            }
            events.push(blob_linked(&repo, &digest, size, from.as_ref(), &origin));
            emit(tx, &events)
        })
        .await
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write(move |tx| {
            let n = tx.execute(
                "DELETE FROM repository_blobs WHERE digest = ?2 \
                 AND repository_id = (SELECT id FROM repositories WHERE name = ?1)",
                params![repo, digest],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn put_manifest(&self, m: &NewManifest, origin: &Origin) -> Result<()> {
        let (m, origin) = (m.clone(), origin.clone());
        self.write(move |tx| {
            let (id, created) = ensure_repo(tx, &m.repo)?;
            for required in &m.blobs {
                let size: Option<i64> = tx
                    .query_row(
                        "SELECT b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
                         WHERE rb.repository_id = ?1 AND rb.digest = ?2",
                        params![id, required.digest.to_string()],
                        |r| r.get(0),
                    )
                    .optional()?;
                check_reference(required, size.map(size_of))?;
            }
            for required in &m.manifests {
                let size: Option<i64> = tx
                    .query_row(
                        "SELECT size FROM manifests WHERE repository_id = ?1 AND digest = ?2",
                        params![id, required.digest.to_string()],
                        |r| r.get(0),
                    )
                    .optional()?;
                check_reference(required, size.map(size_of))?;
            }
            let now = unix_now();
            let digest = m.digest.to_string();
            let annotations = m.annotations.as_ref().map(|a| serde_json::to_string(a).unwrap_or_default());
            let inserted = tx.execute(
                "INSERT INTO manifests (repository_id, digest, media_type, artifact_type, size, content, subject, \
                 annotations, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
                params![
                    id,
                    digest,
                    m.media_type,
                    m.artifact_type,
                    db_size(m.content.len() as u64),
                    m.content,
                    m.subject.as_ref().map(|s| s.to_string()),
                    annotations,
                    now
                ],
            )?;
            if inserted > 0 {
                for child in m.blobs.iter().chain(&m.manifests) {
                    tx.execute(
                        "INSERT INTO manifest_references (repository_id, manifest_digest, child_digest) \
                         VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                        params![id, digest, child.digest.to_string()],
                    )?;
                }
            }
            for tag in &m.tags {
                tx.execute(
                    "INSERT INTO tags (repository_id, name, digest, updated_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest, \
                     updated_at = excluded.updated_at",
                    params![id, tag.as_str(), digest, now],
                )?;
            }
            let mut events = Vec::with_capacity(m.tags.len() + 1);
            if created {
                events.push(repository_created(&m.repo, &origin));
            }
            events.extend(manifest_pushed(&m, &origin));
            emit(tx, &events)
        })
        .await
    }

    async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>> {
        let repo = repo.to_string();
        let reference = reference.clone();
        self.with_conn(move |c| {
            let row: Option<(String, String, Vec<u8>)> = match &reference {
                Reference::Tag(tag) => c
                    .query_row(
                        "SELECT m.digest, m.media_type, m.content FROM tags t \
                         JOIN repositories r ON r.id = t.repository_id \
                         JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest \
                         WHERE r.name = ?1 AND t.name = ?2",
                        params![repo, tag.as_str()],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?,
                Reference::Digest(digest) => c
                    .query_row(
                        "SELECT m.digest, m.media_type, m.content FROM manifests m \
                         JOIN repositories r ON r.id = m.repository_id WHERE r.name = ?1 AND m.digest = ?2",
                        params![repo, digest.to_string()],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?,
            };
            row.map(|(digest, media_type, content)| {
                Ok(ManifestRecord { digest: parse_digest(digest)?, media_type, content })
            })
            .transpose()
        })
        .await
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest, origin: &Origin) -> Result<bool> {
        let (repo, digest, origin) = (repo.clone(), digest.clone(), origin.clone());
        self.write(move |tx| {
            let Some(id) = repo_id(tx, &repo)? else { return Ok(false) };
            let column = digest.to_string();
            let found: Option<(String, i64)> = tx
                .query_row(
                    "SELECT media_type, size FROM manifests WHERE repository_id = ?1 AND digest = ?2",
                    params![id, column],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((media_type, size)) = found else { return Ok(false) };
            let tags: Vec<String> = {
                let mut stmt =
                    tx.prepare_cached("SELECT name FROM tags WHERE repository_id = ?1 AND digest = ?2 ORDER BY name")?;
                let rows = stmt.query_map(params![id, column], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            // Tags and references go with the manifest (ON DELETE CASCADE).
            tx.execute("DELETE FROM manifests WHERE repository_id = ?1 AND digest = ?2", params![id, column])?;
            emit(tx, &manifest_deleted(&repo, &digest, &media_type, size_of(size), &tags, &origin))?;
            Ok(true)
        })
        .await
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag, origin: &Origin) -> Result<bool> {
        let (repo, tag, origin) = (repo.clone(), tag.to_string(), origin.clone());
        self.write(move |tx| {
            let Some(id) = repo_id(tx, &repo)? else { return Ok(false) };
            let deleted: Option<String> = tx
                .query_row(
                    "DELETE FROM tags WHERE repository_id = ?1 AND name = ?2 RETURNING digest",
                    params![id, tag],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(digest) = deleted else { return Ok(false) };
            let media_type: Option<String> = tx
                .query_row(
                    "SELECT media_type FROM manifests WHERE repository_id = ?1 AND digest = ?2",
                    params![id, digest],
                    |r| r.get(0),
                )
                .optional()?;
            emit(tx, &[tag_deleted(repo.as_str(), &tag, &digest, media_type, &origin)])?;
            Ok(true)
        })
        .await
    }

    async fn list_tags(&self, repo: &RepoName, page: &Page) -> Result<Option<Vec<String>>> {
        let (repo, page) = (repo.clone(), page.clone());
        self.with_conn(move |c| {
            let Some(id) = repo_id(c, &repo)? else { return Ok(None) };
            let mut stmt = c.prepare_cached(
                "SELECT name FROM tags WHERE repository_id = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
            )?;
            let rows =
                stmt.query_map(params![id, page.last.unwrap_or_default(), limit_of(page.limit)], |r| r.get(0))?;
            Ok(Some(rows.collect::<rusqlite::Result<Vec<String>>>()?))
        })
        .await
    }

    async fn list_repositories(&self, page: &Page) -> Result<Vec<String>> {
        let page = page.clone();
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached("SELECT name FROM repositories WHERE name > ?1 ORDER BY name LIMIT ?2")?;
            let rows = stmt.query_map(params![page.last.unwrap_or_default(), limit_of(page.limit)], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        page: &Page,
    ) -> Result<Vec<Referrer>> {
        let (repo, subject, filter) = (repo.to_string(), subject.to_string(), artifact_type.map(str::to_owned));
        let (last, limit) = (page.last.clone(), limit_of(page.limit));
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations FROM manifests m \
                 JOIN repositories r ON r.id = m.repository_id \
                 WHERE r.name = ?1 AND m.subject = ?2 AND (?3 IS NULL OR m.artifact_type = ?3) \
                 AND (?4 IS NULL OR (m.created_at, m.digest) > \
                      (SELECT p.created_at, p.digest FROM manifests p WHERE p.repository_id = r.id AND p.digest = ?4)) \
                 ORDER BY m.created_at, m.digest LIMIT ?5",
            )?;
            let rows = stmt.query_map(params![repo, subject, filter, last, limit], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (digest, media_type, size, artifact_type, annotations) = row?;
                let annotations = annotations
                    .map(|a| serde_json::from_str(&a).map_err(|e| Error::Corrupt(format!("annotations: {e}"))))
                    .transpose()?;
                out.push(Referrer {
                    digest: parse_digest(digest)?,
                    media_type,
                    size: size_of(size),
                    artifact_type,
                    annotations,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn create_upload(&self, u: &UploadRecord, quota: &UploadQuota) -> Result<()> {
        let (u, quota) = (u.clone(), quota.clone());
        self.write(move |tx| {
            let open_in_repo: i64 =
                tx.query_row("SELECT count(*) FROM uploads WHERE repository = ?1", [u.repo.as_str()], |r| r.get(0))?;
            let open_by_principal: i64 =
                tx.query_row("SELECT count(*) FROM uploads WHERE principal = ?1", [&quota.principal], |r| r.get(0))?;
            quota.check(size_of(open_in_repo), size_of(open_by_principal))?;
            tx.execute(
                "INSERT INTO uploads (id, repository, byte_offset, hash_state, parts, created_at, updated_at, \
                 sealing, sealing_kek, principal) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    u.id.as_str(),
                    u.repo.as_str(),
                    db_size(u.offset),
                    u.hash_state,
                    serde_json::to_string(&u.parts).unwrap_or_default(),
                    u.created_at,
                    u.updated_at,
                    sealing_text(&u).0,
                    sealing_text(&u).1,
                    quota.principal
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_upload(&self, id: &UploadId) -> Result<Option<UploadRecord>> {
        let id = id.to_string();
        self.with_conn(move |c| {
            let row = c
                .query_row(&format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = ?1"), [id], upload_from_row)
                .optional()?;
            row.map(upload_record).transpose()
        })
        .await
    }

    async fn advance_upload(&self, u: &UploadRecord, expected_offset: u64, expected_parts: usize) -> Result<bool> {
        let u = u.clone();
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE uploads SET byte_offset = ?2, hash_state = ?3, parts = ?4, updated_at = ?5, sealing = ?8, \
                 sealing_kek = ?9 WHERE id = ?1 AND byte_offset = ?6 AND json_array_length(parts) = ?7",
                params![
                    u.id.as_str(),
                    db_size(u.offset),
                    u.hash_state,
                    serde_json::to_string(&u.parts).unwrap_or_default(),
                    u.updated_at,
                    db_size(expected_offset),
                    expected_parts as i64,
                    sealing_text(&u).0,
                    sealing_text(&u).1
                ],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<bool> {
        let id = id.to_string();
        self.write(move |tx| Ok(tx.execute("DELETE FROM uploads WHERE id = ?1", [id])? > 0)).await
    }

    async fn stale_uploads(&self, updated_before: i64) -> Result<Vec<UploadRecord>> {
        self.with_conn(move |c| {
            let mut stmt =
                c.prepare_cached(&format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE updated_at < ?1 ORDER BY id"))?;
            let rows = stmt.query_map([updated_before], upload_from_row)?;
            rows.map(|r| upload_record(r?)).collect()
        })
        .await
    }

    async fn repo_blob_entry(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobEntry>> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.with_conn(move |c| {
            let row = c
                .query_row(
                    &format!(
                        "SELECT b.size, r.key_name, c.key_name IS NOT NULL, {COPY_COLUMNS}, rb.gc_mark IS NOT NULL \
                         FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
                         JOIN blobs b ON b.digest = rb.digest \
                         LEFT JOIN blob_copies c ON c.digest = rb.digest AND c.key_name = r.key_name \
                         WHERE r.name = ?1 AND rb.digest = ?2"
                    ),
                    params![repo, digest],
                    |r| {
                        let copy = if r.get::<_, bool>(2)? { Some(copy_from_row(r, 3)?) } else { None };
                        Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?, copy, r.get::<_, bool>(9)?))
                    },
                )
                .optional()?;
            row.map(|(size, key_name, copy, marked)| {
                Ok(BlobEntry { size: size_of(size), key_name, copy: copy.map(copy_record).transpose()?, marked })
            })
            .transpose()
        })
        .await
    }

    async fn repository_blobs(&self, repo: &RepoName) -> Result<Vec<(Digest, u64)>> {
        let repo = repo.to_string();
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT b.digest, b.size FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
                 JOIN blobs b ON b.digest = rb.digest WHERE r.name = ?1 ORDER BY b.digest",
            )?;
            let rows = stmt.query_map([repo], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            rows.map(|r| {
                let (d, size) = r?;
                Ok((parse_digest(d)?, size_of(size)))
            })
            .collect()
        })
        .await
    }

    async fn repository_key(&self, repo: &RepoName) -> Result<Option<Option<String>>> {
        let repo = repo.to_string();
        self.with_conn(move |c| {
            Ok(c.query_row("SELECT key_name FROM repositories WHERE name = ?1", [repo], |r| r.get(0)).optional()?)
        })
        .await
    }

    async fn create_repository(&self, repo: &RepoName, key: Option<&str>, origin: &Origin) -> Result<Option<String>> {
        let (repo, key, origin) = (repo.clone(), key.map(str::to_owned), origin.clone());
        self.write(move |tx| {
            let created = tx.execute(
                "INSERT INTO repositories (name, created_at, key_name) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
                params![repo.as_str(), unix_now(), key],
            )? > 0;
            let key = tx.query_row("SELECT key_name FROM repositories WHERE name = ?1", [repo.as_str()], |r| r.get(0))?;
            if created {
                emit(tx, &[repository_created(&repo, &origin)])?;
            }
            Ok(key)
        })
        .await
    }

    async fn delete_repository(&self, repo: &RepoName, force: bool, origin: &Origin) -> Result<RepositoryDeleted> {
        let (repo, origin) = (repo.clone(), origin.clone());
        self.write(move |tx| {
            let Some(id) = repo_id(tx, &repo)? else { return Ok(RepositoryDeleted::NotFound) };
            let manifests: i64 =
                tx.query_row("SELECT COUNT(*) FROM manifests WHERE repository_id = ?1", [id], |r| r.get(0))?;
            if manifests > 0 && !force {
                return Ok(RepositoryDeleted::NotEmpty { manifests: size_of(manifests) });
            }
            let name = repo.as_str();
            tx.execute("DELETE FROM tags WHERE repository_id = ?1", [id])?;
            // References go with their manifests (ON DELETE CASCADE).
            tx.execute("DELETE FROM manifests WHERE repository_id = ?1", [id])?;
            // The blobs themselves stay: collecting them is the garbage collector's job.
            tx.execute("DELETE FROM repository_blobs WHERE repository_id = ?1", [id])?;
            tx.execute("DELETE FROM uploads WHERE repository = ?1", [name])?;
            tx.execute("DELETE FROM repository_tags WHERE repository = ?1", [name])?;
            delete_policies_of(tx, "repository", name)?;
            tx.execute("DELETE FROM repositories WHERE id = ?1", [id])?;
            emit(tx, &[Event::new(EventKind::RepositoryDelete, name, &origin)])?;
            Ok(RepositoryDeleted::Deleted)
        })
        .await
    }

    async fn set_repository_key(&self, repo: &RepoName, key: &str) -> Result<bool> {
        let (repo, key) = (repo.to_string(), key.to_owned());
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE repositories SET key_name = ?2 WHERE name = ?1 AND key_name IS NULL",
                params![repo, key],
            )? > 0)
        })
        .await
    }

    async fn repository_keys(&self) -> Result<Vec<(RepoName, Option<String>)>> {
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached("SELECT name, key_name FROM repositories ORDER BY name")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)))?;
            rows.map(|r| {
                let (name, key) = r?;
                Ok((name.parse().map_err(|e| Error::Corrupt(format!("repository {name}: {e}")))?, key))
            })
            .collect()
        })
        .await
    }

    async fn blob_copy(&self, digest: &Digest, key_name: &str) -> Result<Option<SealedBlob>> {
        let (digest, key_name) = (digest.to_string(), key_name.to_owned());
        self.with_conn(move |c| {
            let row = c
                .query_row(
                    &format!(
                        "SELECT {COPY_COLUMNS} FROM blob_copies c JOIN blobs b ON b.digest = c.digest \
                         WHERE c.digest = ?1 AND c.key_name = ?2"
                    ),
                    params![digest, key_name],
                    |r| copy_from_row(r, 0),
                )
                .optional()?;
            row.map(copy_record).transpose()
        })
        .await
    }

    async fn add_blob_copy(&self, digest: &Digest, copy: &SealedBlob) -> Result<bool> {
        let (digest, copy) = (digest.to_string(), copy.clone());
        self.write(move |tx| {
            let now = unix_now();
            tx.execute(
                "INSERT INTO blobs (digest, size, created_at, plain) VALUES (?1, ?2, ?3, 0) ON CONFLICT (digest) DO NOTHING",
                params![digest, db_size(copy.size), now],
            )?;
            let n = tx.execute(
                "INSERT INTO blob_copies (digest, key_name, object, kek, wrapped, runs, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                params![digest, copy.key_name, copy.object, copy.kek, copy.wrapped, Run::encode(&copy.runs), now],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn copies_wrapped_by(&self, kek: &str, limit: usize) -> Result<Vec<(Digest, SealedBlob)>> {
        let kek = kek.to_owned();
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT c.digest, {COPY_COLUMNS} FROM blob_copies c JOIN blobs b ON b.digest = c.digest \
                 WHERE c.kek = ?1 ORDER BY c.digest, c.key_name LIMIT ?2"
            ))?;
            let rows =
                stmt.query_map(params![kek, limit as i64], |r| Ok((r.get::<_, String>(0)?, copy_from_row(r, 1)?)))?;
            rows.map(|r| {
                let (d, row) = r?;
                Ok((parse_digest(d)?, copy_record(row)?))
            })
            .collect()
        })
        .await
    }

    async fn rewrap_copy(
        &self,
        digest: &Digest,
        key_name: &str,
        old_kek: &str,
        new_kek: &str,
        wrapped: &[u8],
    ) -> Result<bool> {
        let args = (digest.to_string(), key_name.to_owned(), old_kek.to_owned(), new_kek.to_owned(), wrapped.to_vec());
        self.write(move |tx| {
            let (digest, key_name, old, new, wrapped) = args;
            Ok(tx.execute(
                "UPDATE blob_copies SET kek = ?4, wrapped = ?5 WHERE digest = ?1 AND key_name = ?2 AND kek = ?3",
                params![digest, key_name, old, new, wrapped],
            )? > 0)
        })
        .await
    }

    async fn redundant_plaintext(&self, limit: usize) -> Result<Vec<Digest>> {
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(&format!("SELECT b.digest FROM blobs b WHERE {REDUNDANT} LIMIT ?1"))?;
            let rows = stmt.query_map([limit as i64], |r| r.get::<_, String>(0))?;
            rows.map(|r| parse_digest(r?)).collect()
        })
        .await
    }

    async fn drop_plaintext(&self, digest: &Digest) -> Result<bool> {
        let digest = digest.to_string();
        self.write(move |tx| {
            Ok(tx.execute(&format!("UPDATE blobs AS b SET plain = 0 WHERE b.digest = ?1 AND {REDUNDANT}"), [digest])?
                > 0)
        })
        .await
    }

    async fn keys(&self, counts: bool) -> Result<Vec<KeyRecord>> {
        self.with_conn(move |c| {
            let counted = if counts {
                "(SELECT COUNT(*) FROM blob_copies c WHERE c.kek = k.id), \
                 (SELECT COUNT(*) FROM uploads u WHERE u.sealing_kek = k.id)"
            } else {
                "0, 0"
            };
            let mut stmt = c.prepare_cached(&format!(
                "SELECT k.id, k.name, k.state, k.check_value, k.created_at, {counted} \
                 FROM keys k ORDER BY k.name, k.created_at, k.id"
            ))?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })?;
            rows.map(|r| {
                let (id, name, state, check_value, created_at, blobs, uploads) = r?;
                Ok(KeyRecord {
                    id,
                    name,
                    state: KeyState::parse(&state)?,
                    check_value,
                    created_at,
                    blobs: size_of(blobs),
                    uploads: size_of(uploads),
                })
            })
            .collect()
        })
        .await
    }

    async fn add_key(&self, key: &KeyRecord) -> Result<bool> {
        let key = key.clone();
        self.write(move |tx| {
            Ok(tx.execute(
                "INSERT INTO keys (id, name, state, check_value, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5) \
                 ON CONFLICT (id) DO NOTHING",
                params![key.id, key.name, key.state.as_str(), key.check_value, key.created_at],
            )? > 0)
        })
        .await
    }

    async fn activate_key(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.write(move |tx| {
            let now = unix_now();
            let name: String = tx
                .query_row("SELECT name FROM keys WHERE id = ?1", [&id], |r| r.get(0))
                .optional()?
                .ok_or(Error::NotFound)?;
            tx.execute(
                "UPDATE keys SET state = 'inactive', updated_at = ?2 WHERE name = ?1 AND state = 'active'",
                params![name, now],
            )?;
            tx.execute("UPDATE keys SET state = 'active', updated_at = ?2 WHERE id = ?1", params![id, now])?;
            Ok(())
        })
        .await
    }

    async fn retire_key(&self, id: &str) -> Result<Result<(), RetireRefused>> {
        let id = id.to_owned();
        self.write(move |tx| {
            let state: Option<String> =
                tx.query_row("SELECT state FROM keys WHERE id = ?1", [&id], |r| r.get(0)).optional()?;
            let Some(state) = state else { return Ok(Err(RetireRefused::Unknown(id))) };
            if KeyState::parse(&state)? == KeyState::Active {
                return Ok(Err(RetireRefused::Active(id)));
            }
            let blobs: i64 = tx.query_row("SELECT COUNT(*) FROM blob_copies WHERE kek = ?1", [&id], |r| r.get(0))?;
            let uploads: i64 =
                tx.query_row("SELECT COUNT(*) FROM uploads WHERE sealing_kek = ?1", [&id], |r| r.get(0))?;
            if blobs + uploads > 0 {
                return Ok(Err(RetireRefused::InUse { id, blobs: size_of(blobs), uploads: size_of(uploads) }));
            }
            tx.execute("UPDATE keys SET state = 'retired', updated_at = ?2 WHERE id = ?1", params![id, unix_now()])?;
            Ok(Ok(()))
        })
        .await
    }

    async fn create_user(&self, user: &UserRecord) -> Result<bool> {
        let user = user.clone();
        self.write(move |tx| {
            Ok(tx.execute(
                &format!(
                    "INSERT INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (name) DO NOTHING"
                ),
                params![user.name, user.password_hash, user.disabled, user.created_at, user.id, user.generation],
            )? > 0)
        })
        .await
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        let name = name.to_owned();
        self.with_conn(move |c| {
            Ok(c.query_row(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"), [name], user_from_row)
                .optional()?)
        })
        .await
    }

    async fn users(&self) -> Result<Vec<UserRecord>> {
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))?;
            let rows = stmt.query_map([], user_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |tx| {
            // Disabling moves the generation on, so tokens issued before stay refused after
            // the user is enabled again.
            Ok(tx.execute(
                "UPDATE users SET disabled = ?2, \
                 credential_generation = credential_generation + (CASE WHEN ?2 THEN 1 ELSE 0 END) WHERE name = ?1",
                params![name, disabled],
            )? > 0)
        })
        .await
    }

    async fn set_user_password(&self, name: &str, password_hash: Option<&str>) -> Result<bool> {
        let (name, hash) = (name.to_owned(), password_hash.map(str::to_owned));
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE users SET password_hash = ?2, credential_generation = credential_generation + 1 WHERE name = ?1",
                params![name, hash],
            )? > 0)
        })
        .await
    }

    async fn delete_user(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |tx| {
            // The keys' policies first, while the keys still say whose they are.
            tx.execute(
                "DELETE FROM policies WHERE target_kind = 'access_key' \
                 AND target IN (SELECT id FROM access_keys WHERE user_name = ?1)",
                [&name],
            )?;
            tx.execute("DELETE FROM access_keys WHERE user_name = ?1", [&name])?;
            delete_policies_of(tx, "user", &name)?;
            Ok(tx.execute("DELETE FROM users WHERE name = ?1", [&name])? > 0)
        })
        .await
    }

    async fn create_access_key(&self, key: &AccessKeyRecord) -> Result<bool> {
        let key = key.clone();
        self.write(move |tx| {
            // Inserts nothing when the user is missing (instead of failing the foreign key) or
            // the id is taken.
            Ok(tx.execute(
                &format!(
                    "INSERT INTO access_keys ({ACCESS_KEY_COLUMNS}) SELECT ?1, name, ?3, ?4, ?5 FROM users \
                     WHERE name = ?2 ON CONFLICT (id) DO NOTHING"
                ),
                params![key.id, key.user, key.secret_digest, key.disabled, key.created_at],
            )? > 0)
        })
        .await
    }

    async fn access_key(&self, id: &str) -> Result<Option<AccessKeyRecord>> {
        let id = id.to_owned();
        self.with_conn(move |c| {
            Ok(c.query_row(
                &format!("SELECT {ACCESS_KEY_COLUMNS} FROM access_keys WHERE id = ?1"),
                [id],
                access_key_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn access_keys(&self, user: Option<&str>) -> Result<Vec<AccessKeyRecord>> {
        let user = user.map(str::to_owned);
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {ACCESS_KEY_COLUMNS} FROM access_keys WHERE ?1 IS NULL OR user_name = ?1 \
                 ORDER BY user_name, id"
            ))?;
            let rows = stmt.query_map([user], access_key_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn set_access_key_disabled(&self, id: &str, disabled: bool) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |tx| {
            Ok(tx.execute("UPDATE access_keys SET disabled = ?2 WHERE id = ?1", params![id, disabled])? > 0)
        })
        .await
    }

    async fn delete_access_key(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |tx| {
            if tx.execute("DELETE FROM access_keys WHERE id = ?1", [&id])? == 0 {
                return Ok(false);
            }
            delete_policies_of(tx, "access_key", &id)?;
            Ok(true)
        })
        .await
    }

    async fn put_policy(&self, target: &PolicyTarget, name: &str, document: &str) -> Result<bool> {
        let (target, name, document) = (target.clone(), name.to_owned(), document.to_owned());
        self.write(move |tx| {
            let owner = match &target {
                PolicyTarget::User(user) => Some(("SELECT 1 FROM users WHERE name = ?1", user)),
                PolicyTarget::AccessKey(id) => Some(("SELECT 1 FROM access_keys WHERE id = ?1", id)),
                PolicyTarget::Repository(_) | PolicyTarget::Registry => None,
            };
            if let Some((sql, key)) = owner
                && tx.query_row(sql, [key], |_| Ok(())).optional()?.is_none()
            {
                return Ok(false);
            }
            tx.execute(
                &format!(
                    "INSERT INTO policies ({POLICY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (target_kind, target, name) DO UPDATE SET document = excluded.document, \
                     updated_at = excluded.updated_at"
                ),
                params![target.kind(), target.column(), name, document, unix_now()],
            )?;
            Ok(true)
        })
        .await
    }

    async fn delete_policy(&self, target: &PolicyTarget, name: &str) -> Result<bool> {
        let (kind, column, name) = (target.kind(), target.column().to_owned(), name.to_owned());
        self.write(move |tx| {
            Ok(tx.execute(
                "DELETE FROM policies WHERE target_kind = ?1 AND target = ?2 AND name = ?3",
                params![kind, column, name],
            )? > 0)
        })
        .await
    }

    async fn policies(&self, target: &PolicyTarget) -> Result<Vec<PolicyRecord>> {
        let (kind, column) = (target.kind(), target.column().to_owned());
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {POLICY_COLUMNS} FROM policies WHERE target_kind = ?1 AND target = ?2 ORDER BY name"
            ))?;
            let rows = stmt.query_map(params![kind, column], policy_from_row)?;
            rows.map(|r| policy_record(r?)).collect()
        })
        .await
    }

    async fn policies_for_request(
        &self,
        user: Option<&str>,
        access_key: Option<&str>,
        repo: Option<&RepoName>,
    ) -> Result<PolicySet> {
        let args = (user.map(str::to_owned), access_key.map(str::to_owned), repo.map(|r| r.as_str().to_owned()));
        self.with_conn(move |c| {
            // One statement: one snapshot, with no transaction to open and close.
            let mut stmt = c.prepare_cached(POLICIES_FOR_REQUEST)?;
            let rows = stmt.query_map(params![args.0, args.1, args.2], policy_from_row)?;
            let mut set = PolicySet::default();
            for row in rows {
                let row = row?;
                if row.0 == "tag" {
                    set.resource_tags.insert(row.1, row.2);
                    continue;
                }
                set.add(policy_record(row)?);
            }
            set.sort();
            Ok(set)
        })
        .await
    }

    async fn repository_tags(&self, repo: &RepoName) -> Result<BTreeMap<String, String>> {
        let repo = repo.as_str().to_owned();
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached("SELECT key, value FROM repository_tags WHERE repository = ?1")?;
            let rows = stmt.query_map([repo], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn tag_repository(&self, repo: &RepoName, set: &BTreeMap<String, String>, remove: &[String]) -> Result<()> {
        let (repo, set, remove) = (repo.as_str().to_owned(), set.clone(), remove.to_vec());
        self.write(move |tx| {
            for (key, value) in &set {
                tx.execute(
                    "INSERT INTO repository_tags (repository, key, value) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (repository, key) DO UPDATE SET value = excluded.value",
                    params![repo, key, value],
                )?;
            }
            for key in &remove {
                tx.execute("DELETE FROM repository_tags WHERE repository = ?1 AND key = ?2", params![repo, key])?;
            }
            Ok(())
        })
        .await
    }

    async fn ensure_signing_key(&self, candidate: &SigningKeyRecord) -> Result<Vec<SigningKeyRecord>> {
        let candidate = candidate.clone();
        // The write lock (BEGIN IMMEDIATE) serializes racing callers: the first inserts, the
        // others find its key.
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO signing_keys (kid, pkcs8, created_at) SELECT ?1, ?2, ?3 \
                 WHERE NOT EXISTS (SELECT 1 FROM signing_keys)",
                params![candidate.kid, candidate.pkcs8, candidate.created_at],
            )?;
            let mut stmt =
                tx.prepare_cached("SELECT kid, pkcs8, created_at FROM signing_keys ORDER BY created_at, kid")?;
            let rows = stmt
                .query_map([], |r| Ok(SigningKeyRecord { kid: r.get(0)?, pkcs8: r.get(1)?, created_at: r.get(2)? }))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn reseal_signing_key(&self, kid: &str, expected: &[u8], sealed: &[u8]) -> Result<bool> {
        let (kid, expected, sealed) = (kid.to_owned(), expected.to_vec(), sealed.to_vec());
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE signing_keys SET pkcs8 = ?3 WHERE kid = ?1 AND pkcs8 = ?2",
                params![kid, expected, sealed],
            )? == 1)
        })
        .await
    }

    async fn put_subscription(&self, s: &Subscription) -> Result<bool> {
        let s = s.clone();
        self.write(move |tx| upsert_subscription(tx, &s, s.source)).await
    }

    async fn delete_subscription(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        // Deliveries and their attempts go with it (ON DELETE CASCADE).
        self.write(move |tx| Ok(tx.execute("DELETE FROM subscriptions WHERE name = ?1", [name])? > 0)).await
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        self.with_conn(|c| read_subscriptions(c, "")).await
    }

    async fn sync_config_subscriptions(&self, subs: &[Subscription]) -> Result<()> {
        let subs = subs.to_vec();
        self.write(move |tx| {
            for s in &subs {
                let source: Option<String> = tx
                    .query_row("SELECT source FROM subscriptions WHERE name = ?1", [&s.name], |r| r.get(0))
                    .optional()?;
                if source.as_deref() == Some(source_column(SubscriptionSource::Api)) {
                    // Returning the error rolls back what this loop wrote so far.
                    return Err(Error::Conflict);
                }
                upsert_subscription(tx, s, SubscriptionSource::Config)?;
            }
            let names: Vec<&str> = subs.iter().map(|s| s.name.as_str()).collect();
            tx.execute(
                "DELETE FROM subscriptions WHERE source = 'config' AND name NOT IN (SELECT value FROM json_each(?1))",
                [serde_json::to_string(&names).unwrap_or_default()],
            )?;
            Ok(())
        })
        .await
    }

    async fn events(&self, after_seq: i64, limit: usize) -> Result<Vec<Event>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached("SELECT seq, payload FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
            let rows =
                stmt.query_map(params![after_seq, limit], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
            rows.map(|r| {
                let (seq, payload) = r?;
                event_from_payload(seq, &payload)
            })
            .collect()
        })
        .await
    }

    async fn claim_deliveries(&self, owner: &str, now_ms: i64, lease_ms: i64, limit: usize) -> Result<Vec<Claimed>> {
        let owner = owner.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // The dispatcher asks after every change and every poll, mostly to find nothing: a
        // read first, so that finding nothing never takes the single writer's lock.
        let any = self.with_conn(move |c| Ok(c.prepare_cached(CLAIMABLE)?.exists(params![now_ms, 1])?)).await?;
        if !any {
            return Ok(Vec::new());
        }
        // One writer at a time (BEGIN IMMEDIATE): what this finds claimable is still so when
        // it leases it.
        self.write(move |tx| {
            let ids: Vec<i64> = {
                let mut stmt = tx.prepare_cached(CLAIMABLE)?;
                let rows = stmt.query_map(params![now_ms, limit], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let until = now_ms.saturating_add(lease_ms);
            let subscriptions: BTreeMap<String, Subscription> =
                read_subscriptions(tx, "")?.into_iter().map(|s| (s.name.clone(), s)).collect();
            let mut lease =
                tx.prepare_cached("UPDATE deliveries SET lease_owner = ?2, lease_until_ms = ?3 WHERE id = ?1")?;
            let mut read = tx.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.id = ?1"
            ))?;
            let mut claimed = Vec::with_capacity(ids.len());
            for id in ids {
                lease.execute(params![id, owner, until])?;
                let delivery = read.query_row([id], delivery_from_row)?.into_delivery()?;
                let subscription = subscriptions
                    .get(&delivery.subscription)
                    .cloned()
                    .ok_or_else(|| Error::Corrupt(format!("delivery {id}: no subscription")))?;
                claimed.push(Claimed { delivery, subscription });
            }
            Ok(claimed)
        })
        .await
    }

    async fn finish_deliveries(&self, owner: &str, finished: &[(i64, Outcome)], now_ms: i64) -> Result<Vec<bool>> {
        let (owner, finished) = (owner.to_owned(), finished.to_vec());
        self.write(move |tx| {
            finished.iter().map(|(id, outcome)| finish_one(tx, *id, &owner, outcome, now_ms)).collect()
        })
        .await
    }

    async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>> {
        let params = filter_params(filter);
        let limit = if filter.limit == 0 { -1 } else { i64::try_from(filter.limit).unwrap_or(i64::MAX) };
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq \
                 WHERE {DELIVERY_FILTER} ORDER BY d.id DESC LIMIT ?6"
            ))?;
            let rows =
                stmt.query_map(params![params.0, params.1, params.2, params.3, params.4, limit], delivery_from_row)?;
            rows.map(|r| r?.into_delivery()).collect()
        })
        .await
    }

    async fn delivery_attempts(&self, id: i64) -> Result<Vec<Attempt>> {
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT delivery, number, at_ms, status, error, duration_ms FROM delivery_attempts \
                 WHERE delivery = ?1 ORDER BY number",
            )?;
            let rows = stmt.query_map([id], |r| {
                Ok(attempt_from_columns(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn replay_deliveries(&self, filter: &DeliveryFilter, now_ms: i64) -> Result<u64> {
        let params = filter_params(filter);
        self.write(move |tx| {
            let n = tx.execute(
                &format!(
                    "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_ms = ?6, \
                     lease_owner = NULL, lease_until_ms = NULL, updated_ms = ?6 WHERE id IN \
                     (SELECT d.id FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE {DELIVERY_FILTER} \
                     AND NOT (d.state = 'pending' AND d.lease_owner IS NOT NULL AND d.lease_until_ms > ?6))"
                ),
                params![params.0, params.1, params.2, params.3, params.4, now_ms],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn purge_deliveries(&self, filter: &DeliveryFilter) -> Result<u64> {
        let params = filter_params(filter);
        self.write(move |tx| {
            // Attempts go with their deliveries (ON DELETE CASCADE).
            let n = tx.execute(
                &format!(
                    "DELETE FROM deliveries WHERE id IN \
                     (SELECT d.id FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE {DELIVERY_FILTER})"
                ),
                params![params.0, params.1, params.2, params.3, params.4],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn delivery_counts(&self) -> Result<Vec<DeliveryCounts>> {
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT s.name, \
                 COALESCE(SUM(d.state = 'pending' AND d.attempts = 0), 0), \
                 COALESCE(SUM(d.state = 'pending' AND d.attempts > 0), 0), \
                 COALESCE(SUM(d.state = 'delivered'), 0), COALESCE(SUM(d.state = 'dead'), 0) \
                 FROM subscriptions s LEFT JOIN deliveries d ON d.subscription = s.name \
                 GROUP BY s.name ORDER BY s.name",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(DeliveryCounts {
                    subscription: r.get(0)?,
                    pending: size_of(r.get(1)?),
                    retrying: size_of(r.get(2)?),
                    delivered: size_of(r.get(3)?),
                    dead: size_of(r.get(4)?),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn prune_events(&self, delivered_before_ms: i64, dead_before_ms: i64) -> Result<(u64, u64)> {
        self.write(move |tx| {
            let deliveries = tx.execute(
                "DELETE FROM deliveries WHERE (state = 'delivered' AND updated_ms < ?1) \
                 OR (state = 'dead' AND updated_ms < ?2)",
                params![delivered_before_ms, dead_before_ms],
            )?;
            let events = tx.execute(
                "DELETE FROM events WHERE created_ms < ?1 \
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = events.seq)",
                [delivered_before_ms],
            )?;
            Ok((deliveries as u64, events as u64))
        })
        .await
    }
}

/// The policies and tags one request needs, as policy rows: `?1` the user, `?2` the access
/// key, `?3` the repository (each may be NULL, which matches nothing). Tags come back as rows
/// of kind `tag` with the key in `target` and the value in `name`.
const POLICIES_FOR_REQUEST: &str = "SELECT target_kind, target, name, document, updated_at FROM policies \
    WHERE (target_kind = 'user' AND target = ?1) OR (target_kind = 'access_key' AND target = ?2) \
    OR (target_kind = 'repository' AND target = ?3) OR (target_kind = 'registry' AND target = '') \
    UNION ALL SELECT 'tag', key, value, '', 0 FROM repository_tags WHERE repository = ?3";

/// A blob (`b`) whose plaintext object exists and is needed by no repository: each one
/// linking it has a key and a sealed copy for that key.
const REDUNDANT: &str = "b.plain = 1 AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest) \
    AND NOT EXISTS (SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
    WHERE rb.digest = b.digest AND (r.key_name IS NULL OR NOT EXISTS \
    (SELECT 1 FROM blob_copies c WHERE c.digest = b.digest AND c.key_name = r.key_name)))";

/// Records one attempt of delivery `id` if `owner` holds it (`finish_delivery`).
fn finish_one(tx: &rusqlite::Transaction<'_>, id: i64, owner: &str, outcome: &Outcome, now_ms: i64) -> Result<bool> {
    let held = tx
        .prepare_cached("SELECT 1 FROM deliveries WHERE id = ?1 AND lease_owner = ?2 AND state = 'pending'")?
        .query_row(params![id, owner], |_| Ok(()))
        .optional()?;
    if held.is_none() {
        return Ok(false);
    }
    let o = OutcomeColumns::of(outcome);
    // Numbered after the log's last entry: a replay resets `attempts`, not the log.
    tx.prepare_cached(
        "INSERT INTO delivery_attempts (delivery, number, at_ms, status, error, duration_ms) \
         SELECT ?1, COALESCE(MAX(number), 0) + 1, ?2, ?3, ?4, ?5 FROM delivery_attempts WHERE delivery = ?1",
    )?
    .execute(params![id, now_ms, o.status, o.error, o.duration_ms])?;
    tx.prepare_cached(
        "UPDATE deliveries SET attempts = attempts + 1, state = ?2, \
         next_attempt_ms = COALESCE(?3, next_attempt_ms), last_status = ?4, last_error = ?5, \
         lease_owner = NULL, lease_until_ms = NULL, updated_ms = ?6 WHERE id = ?1",
    )?
    .execute(params![id, o.state.as_str(), o.next_attempt_ms, o.status, o.error, now_ms])?;
    Ok(true)
}

/// A page size as SQL wants it. `usize` past `i64::MAX` must not become negative, which
/// SQLite reads as "no limit".
fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
