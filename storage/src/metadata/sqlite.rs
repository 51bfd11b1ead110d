//! [`SqliteStore`]: the metadata store in an embedded SQLite file (the zero-config default).
//!
//! A few connections in WAL mode (readers do not block the writer), each call run on the
//! blocking pool. Writes take the lock up front (`BEGIN IMMEDIATE`) so two writers never
//! deadlock upgrading a read lock. `synchronous=FULL`: a 201 means the record is on disk.
//!
//! Each domain of the store is implemented in a file of its own (`sqlite/<domain>.rs`, after
//! the domain traits of [`super`]); this module keeps the store, its pool, the migrations and
//! the helpers several domains share.

mod blobs;
mod events;
mod gc;
mod identity;
mod images;
mod keys;
mod lifecycle;
mod manifests;
mod policies;
mod pull_through;
mod registry_settings;
mod replication;
mod repositories;
mod templates;
mod uploads;
mod usage;

use std::path::Path;
use std::sync::{Arc, Mutex};

use berth_oci::RepoName;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::Semaphore;

use super::{Event, Subscription, event_payload, subscription_from_columns, unix_now};
use crate::error::{Error, Result};
use crate::metadata::sql::{SCHEMA_VERSION, SUBSCRIPTION_COLUMNS};

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
    (9, include_str!("sqlite_v9.sql")),
    (10, include_str!("sqlite_v10.sql")),
    (11, include_str!("sqlite_v11.sql")),
    (12, include_str!("sqlite_v12.sql")),
    (13, include_str!("sqlite_v13.sql")),
    (14, include_str!("sqlite_v14.sql")),
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
    let current: i64 = tx.query_row(SCHEMA_VERSION, [], |r| r.get(0))?;
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

/// Deletes the policies of `kind` attached to `target`.
fn delete_policies_of(tx: &rusqlite::Transaction<'_>, kind: &str, target: &str) -> Result<()> {
    tx.execute("DELETE FROM policies WHERE target_kind = ?1 AND target = ?2", params![kind, target])?;
    Ok(())
}

/// A page size as SQL wants it. `usize` past `i64::MAX` must not become negative, which
/// SQLite reads as "no limit".
fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
