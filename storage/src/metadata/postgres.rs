//! [`PostgresStore`]: the metadata store in PostgreSQL, shared by several Berth replicas.
//!
//! The same tables as SQLite (`postgres_v1.sql`), reached through a pool of
//! `tokio-postgres` connections (`deadpool-postgres`). Names, tags and digests are
//! `COLLATE "C"`, so listings sort and paginate by bytes exactly as SQLite does.
//!
//! # Concurrency
//!
//! Transactions run at PostgreSQL's default READ COMMITTED level, and each check that must
//! still hold at commit takes a row lock, so that concurrent writers on any number of
//! replicas end as if they had run one after another:
//!
//! - Single-statement writes are atomic on their own. `advance_upload` is one
//!   `UPDATE .. WHERE byte_offset = $expected`: a second writer waits for the first's row
//!   lock, then re-evaluates the `WHERE` on the new row and updates nothing (it lost).
//! - Creating rows that may already exist is `INSERT .. ON CONFLICT`, which waits for an
//!   in-flight insert of the same key instead of failing.
//! - `put_manifest` locks what it checked (`FOR KEY SHARE` on the repository's blob links,
//!   child manifests and, when it was already there, the manifest itself) so that a
//!   concurrent `unlink_blob` or `delete_manifest` waits for the push to commit rather than
//!   slipping in between the check and the commit. Tags are upserted in sorted order, so two
//!   pushes moving the same tags take their locks in the same order; the last to commit
//!   wins, as in a serial run.
//!
//! SERIALIZABLE would give the same outcomes with less reasoning, but would abort and retry
//! pushes that merely read the same rows (every push of a popular base layer), and all
//! readers would pay for predicate locks. Deadlocks and serialization failures are still
//! retried (a few times, whole transaction) in case a future change introduces one.
//!
//! # Migrations
//!
//! Run at [`PostgresStore::open`] in one transaction that first takes a transaction-scoped
//! advisory lock, so replicas starting at once apply each version exactly once: the others
//! wait, then find nothing left to do. DDL in PostgreSQL is transactional, so a failed
//! migration leaves no half-made schema.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_postgres::AsyncMessage;

use crate::metadata::Change;

use async_trait::async_trait;
use berth_oci::{Digest, Reference, RepoName, Tag, UploadId};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use super::{
    ManifestRecord, MetadataStore, NewManifest, Page, Referrer, RequiredContent, UploadRecord, check_reference,
    db_size, parse_digest, size_of, unix_now,
};
use crate::error::{Error, Result};

/// Connections per process; bounds concurrent database work (and the server's connection
/// count: replicas × this).
const POOL_SIZE: usize = 16;

/// How long a request waits for a free connection or a new one before failing.
const POOL_TIMEOUT: Duration = Duration::from_secs(30);

/// Used when the URL does not say `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts of one transaction when PostgreSQL reports a deadlock or serialization failure.
const ATTEMPTS: u32 = 5;

/// The advisory lock that serializes migrations across replicas ("berth-md" in ASCII).
const MIGRATION_LOCK: i64 = 0x6265_7274_682d_6d64;

/// Schema versions, applied in order, each once. Never edit a released entry: add one.
const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("postgres_v1.sql")), (2, include_str!("postgres_v2.sql"))];

/// The channel on which manifest and tag changes are announced (see postgres_v2.sql).
const CHANGES_CHANNEL: &str = "berth_manifests";

/// The metadata store on a PostgreSQL server. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// For the listener's own connection.
    config: tokio_postgres::Config,
    /// Announces changes once the listener runs ([`MetadataStore::changes`]).
    changes: Arc<OnceLock<broadcast::Sender<Change>>>,
}

impl std::fmt::Debug for PostgresStore {
    // The pool's configuration holds the password; show only what is harmless.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresStore").field("max_size", &status.max_size).field("size", &status.size).finish()
    }
}

fn pool_error(e: PoolError) -> Error {
    match e {
        PoolError::Backend(e) => Error::Postgres(e),
        other => Error::Task(format!("PostgreSQL connection pool: {other}")),
    }
}

/// Whether running the transaction again may succeed.
fn retryable(e: &Error) -> bool {
    let Error::Postgres(e) = e else { return false };
    matches!(e.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED)
}

/// Runs `$body` (which uses the open transaction `$tx`) and commits, retrying the whole
/// transaction on a deadlock or serialization failure. A macro rather than a function taking
/// a closure, so the body may borrow its arguments and the future stays `Send`.
macro_rules! transaction {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut attempt = 1;
        loop {
            let result: Result<_> = async {
                let mut client = $store.pool.get().await.map_err(pool_error)?;
                let $tx = client.transaction().await?;
                let out = $body;
                $tx.commit().await?;
                Ok(out)
            }
            .await;
            match result {
                Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                    tracing::debug!(error = %e, attempt, "metadata transaction retried");
                    attempt += 1;
                }
                other => break other,
            }
        }
    }};
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`, or any form
    /// `tokio_postgres::Config` parses, e.g. `?options=-csearch_path%3Dberth` for a schema)
    /// and brings the schema up to date.
    pub async fn open(url: &str) -> Result<PostgresStore> {
        let mut config = tokio_postgres::Config::from_str(url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("berth");
        }
        let manager =
            Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|e| Error::Task(format!("PostgreSQL connection pool: {e}")))?;
        let store = PostgresStore { pool, config, changes: Default::default() };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .await?;
        let current: i64 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await?.get(0);
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            tx.batch_execute(sql).await?;
            tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)", &[version, &unix_now()])
                .await?;
            tracing::info!(schema.version = version, "metadata schema migrated");
        }
        tx.commit().await?;
        Ok(())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }
}

/// Listens on [`CHANGES_CHANNEL`] over a connection of its own and passes each change on,
/// reconnecting when the connection drops. After every (re)connection it sends
/// [`Change::Unknown`]: what happened while nobody listened is lost. It stops when no one
/// subscribes any more.
async fn listen(config: tokio_postgres::Config, tx: broadcast::Sender<Change>) {
    let mut backoff = Duration::from_millis(100);
    while tx.receiver_count() > 0 {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                // The connection must be driven (polled for messages) while LISTEN runs.
                let statement = format!("LISTEN {CHANGES_CHANNEL}");
                let ok = {
                    let mut listening = std::pin::pin!(client.batch_execute(&statement));
                    loop {
                        tokio::select! {
                            r = &mut listening => break r.is_ok(),
                            m = messages.next() => if !matches!(m, Some(Ok(_))) { break false },
                        }
                    }
                };
                if ok {
                    backoff = Duration::from_millis(100);
                    let _ = tx.send(Change::Unknown);
                    tracing::debug!("listening for metadata changes");
                    loop {
                        match tokio::time::timeout(Duration::from_secs(30), messages.next()).await {
                            Ok(Some(Ok(AsyncMessage::Notification(n)))) => {
                                let change = n.payload().parse().map_or(Change::Unknown, Change::Repository);
                                let _ = tx.send(change);
                            }
                            Ok(Some(Ok(_))) => {}
                            Ok(Some(Err(e))) => {
                                tracing::warn!(error = %e, "PostgreSQL listener connection failed; reconnecting");
                                break;
                            }
                            Ok(None) => break,
                            Err(_) if tx.receiver_count() == 0 => return,
                            Err(_) => {}
                        }
                    }
                }
                let _ = tx.send(Change::Unknown);
            }
            Err(e) => tracing::warn!(error = %e, "PostgreSQL listener cannot connect; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// The repository's id, creating the repository on first use.
async fn ensure_repo(tx: &impl GenericClient, repo: &RepoName) -> Result<i64> {
    let inserted = tx
        .query_opt(
            "INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING id",
            &[&repo.as_str(), &unix_now()],
        )
        .await?;
    if let Some(row) = inserted {
        return Ok(row.try_get(0)?);
    }
    // Another transaction inserted it and committed (ON CONFLICT waited for it); this new
    // statement's snapshot sees it.
    let row = tx.query_opt("SELECT id FROM repositories WHERE name = $1", &[&repo.as_str()]).await?;
    row.map(|r| r.try_get(0)).transpose()?.ok_or(Error::Conflict)
}

fn db_limit(page: &Page) -> i64 {
    i64::try_from(page.limit).unwrap_or(i64::MAX)
}

const UPLOAD_COLUMNS: &str = "id, repository, byte_offset, hash_state, parts, created_at, updated_at";

fn upload_record(row: &tokio_postgres::Row) -> Result<UploadRecord> {
    let id: String = row.try_get(0)?;
    let repo: String = row.try_get(1)?;
    let corrupt = |what: &str, e: &dyn std::fmt::Display| Error::Corrupt(format!("upload {id}: {what}: {e}"));
    Ok(UploadRecord {
        id: id.parse().map_err(|e| corrupt("id", &e))?,
        repo: repo.parse().map_err(|e| corrupt("repository", &e))?,
        offset: size_of(row.try_get(2)?),
        hash_state: row.try_get(3)?,
        parts: row.try_get(4)?,
        created_at: row.try_get(5)?,
        updated_at: row.try_get(6)?,
    })
}

/// Checks every reference against the sizes found (digest → size), in the manifest's order,
/// so the error names the first one missing, as SQLite does.
fn check_references(required: &[RequiredContent], found: &[tokio_postgres::Row]) -> Result<()> {
    for r in required {
        let digest = r.digest.to_string();
        let mut size = None;
        for row in found {
            if row.try_get::<_, &str>(0)? == digest {
                size = Some(size_of(row.try_get(1)?));
            }
        }
        check_reference(r, size)?;
    }
    Ok(())
}

fn digests(required: &[RequiredContent]) -> Vec<String> {
    required.iter().map(|r| r.digest.to_string()).collect()
}

#[async_trait]
impl MetadataStore for PostgresStore {
    fn changes(&self) -> Option<broadcast::Receiver<Change>> {
        let mut started = false;
        let tx = self.changes.get_or_init(|| {
            started = true;
            broadcast::channel(1024).0
        });
        let rx = tx.subscribe();
        if started {
            tokio::spawn(listen(self.config.clone(), tx.clone()));
        }
        Some(rx)
    }

    async fn ping(&self) -> Result<()> {
        self.client().await?.query_one("SELECT 1", &[]).await?;
        Ok(())
    }

    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT b.size FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
                 JOIN blobs b ON b.digest = rb.digest WHERE r.name = $1 AND rb.digest = $2",
            )
            .await?;
        let row = client.query_opt(&stmt, &[&repo.as_str(), &digest.to_string()]).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?.map(size_of))
    }

    async fn any_blob(&self, digest: &Digest) -> Result<Option<u64>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT b.size FROM blobs b WHERE b.digest = $1 \
                 AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)",
            )
            .await?;
        let row = client.query_opt(&stmt, &[&digest.to_string()]).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?.map(size_of))
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()> {
        let digest = digest.to_string();
        transaction!(self, |tx| {
            let id = ensure_repo(&tx, repo).await?;
            let now = unix_now();
            tx.execute(
                "INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3) ON CONFLICT (digest) DO NOTHING",
                &[&digest, &db_size(size), &now],
            )
            .await?;
            tx.execute(
                "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                &[&id, &digest, &now],
            )
            .await?;
        })
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM repository_blobs WHERE digest = $2 \
                 AND repository_id = (SELECT id FROM repositories WHERE name = $1)",
                &[&repo.as_str(), &digest.to_string()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn put_manifest(&self, m: &NewManifest) -> Result<()> {
        let digest = m.digest.to_string();
        let annotations = m.annotations.as_ref().map(|a| serde_json::to_string(a).unwrap_or_default());
        let subject = m.subject.as_ref().map(|s| s.to_string());
        let size = db_size(m.content.len() as u64);
        let children: Vec<String> = m.blobs.iter().chain(&m.manifests).map(|c| c.digest.to_string()).collect();
        // Sorted: concurrent pushes lock shared tags in the same order, so they cannot deadlock.
        let tags: Vec<&str> = m.tags.iter().map(Tag::as_str).collect::<BTreeSet<_>>().into_iter().collect();
        transaction!(self, |tx| {
            let id = ensure_repo(&tx, &m.repo).await?;
            // The checks hold until commit: the rows stay locked against unlink and delete.
            if !m.blobs.is_empty() {
                let found = tx
                    .query(
                        "SELECT rb.digest, b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
                         WHERE rb.repository_id = $1 AND rb.digest = ANY($2) FOR KEY SHARE OF rb",
                        &[&id, &digests(&m.blobs)],
                    )
                    .await?;
                check_references(&m.blobs, &found)?;
            }
            if !m.manifests.is_empty() {
                let found = tx
                    .query(
                        "SELECT digest, size FROM manifests WHERE repository_id = $1 AND digest = ANY($2) \
                         FOR KEY SHARE",
                        &[&id, &digests(&m.manifests)],
                    )
                    .await?;
                check_references(&m.manifests, &found)?;
            }
            let now = unix_now();
            let mut attempt = 0;
            loop {
                let inserted = tx
                    .execute(
                        "INSERT INTO manifests (repository_id, digest, media_type, artifact_type, size, content, \
                         subject, annotations, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                         ON CONFLICT DO NOTHING",
                        &[
                            &id,
                            &digest,
                            &m.media_type,
                            &m.artifact_type,
                            &size,
                            &m.content,
                            &subject,
                            &annotations,
                            &now,
                        ],
                    )
                    .await?;
                if inserted > 0 {
                    tx.execute(
                        "INSERT INTO manifest_references (repository_id, manifest_digest, child_digest) \
                         SELECT $1, $2, unnest($3::text[]) ON CONFLICT DO NOTHING",
                        &[&id, &digest, &children],
                    )
                    .await?;
                    break;
                }
                // Already there: keep it there until commit (a racing delete waits), unless a
                // delete committed in between, in which case insert it again.
                let kept = tx
                    .query_opt(
                        "SELECT 1 FROM manifests WHERE repository_id = $1 AND digest = $2 FOR KEY SHARE",
                        &[&id, &digest],
                    )
                    .await?;
                attempt += 1;
                if kept.is_some() {
                    break;
                }
                if attempt >= ATTEMPTS {
                    return Err(Error::Conflict);
                }
            }
            if !tags.is_empty() {
                tx.execute(
                    "INSERT INTO tags (repository_id, name, digest, updated_at) \
                     SELECT $1, unnest($2::text[]), $3, $4 \
                     ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest, \
                     updated_at = excluded.updated_at",
                    &[&id, &tags, &digest, &now],
                )
                .await?;
            }
        })
    }

    async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>> {
        let client = self.client().await?;
        let row = match reference {
            Reference::Tag(tag) => {
                let stmt = client
                    .prepare_cached(
                        "SELECT m.digest, m.media_type, m.content FROM tags t \
                         JOIN repositories r ON r.id = t.repository_id \
                         JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest \
                         WHERE r.name = $1 AND t.name = $2",
                    )
                    .await?;
                client.query_opt(&stmt, &[&repo.as_str(), &tag.as_str()]).await?
            }
            Reference::Digest(digest) => {
                let stmt = client
                    .prepare_cached(
                        "SELECT m.digest, m.media_type, m.content FROM manifests m \
                         JOIN repositories r ON r.id = m.repository_id WHERE r.name = $1 AND m.digest = $2",
                    )
                    .await?;
                client.query_opt(&stmt, &[&repo.as_str(), &digest.to_string()]).await?
            }
        };
        row.map(|r| {
            Ok(ManifestRecord {
                digest: parse_digest(r.try_get(0)?)?,
                media_type: r.try_get(1)?,
                content: r.try_get(2)?,
            })
        })
        .transpose()
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        // Tags and references go with the manifest (ON DELETE CASCADE), in the same statement.
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM manifests WHERE digest = $2 \
                 AND repository_id = (SELECT id FROM repositories WHERE name = $1)",
                &[&repo.as_str(), &digest.to_string()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM tags WHERE name = $2 AND repository_id = (SELECT id FROM repositories WHERE name = $1)",
                &[&repo.as_str(), &tag.as_str()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn list_tags(&self, repo: &RepoName, page: &Page) -> Result<Option<Vec<String>>> {
        // One statement (one snapshot): no row when the repository does not exist, one row with
        // a NULL name when it has no tags on this page.
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT t.name FROM repositories r LEFT JOIN LATERAL \
                 (SELECT name FROM tags WHERE repository_id = r.id AND name > $2 ORDER BY name COLLATE \"C\" LIMIT $3) t \
                 ON true WHERE r.name = $1",
            )
            .await?;
        let rows =
            client.query(&stmt, &[&repo.as_str(), &page.last.as_deref().unwrap_or_default(), &db_limit(page)]).await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut names = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(name) = row.try_get::<_, Option<String>>(0)? {
                names.push(name);
            }
        }
        Ok(Some(names))
    }

    async fn list_repositories(&self, page: &Page) -> Result<Vec<String>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT name FROM repositories WHERE name > $1 ORDER BY name COLLATE \"C\" LIMIT $2")
            .await?;
        let rows = client.query(&stmt, &[&page.last.as_deref().unwrap_or_default(), &db_limit(page)]).await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Referrer>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations FROM manifests m \
                 JOIN repositories r ON r.id = m.repository_id \
                 WHERE r.name = $1 AND m.subject = $2 AND ($3::text IS NULL OR m.artifact_type = $3) \
                 ORDER BY m.created_at, m.digest COLLATE \"C\"",
            )
            .await?;
        let rows = client.query(&stmt, &[&repo.as_str(), &subject.to_string(), &artifact_type]).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let annotations = row
                .try_get::<_, Option<String>>(4)?
                .map(|a| serde_json::from_str(&a).map_err(|e| Error::Corrupt(format!("annotations: {e}"))))
                .transpose()?;
            out.push(Referrer {
                digest: parse_digest(row.try_get(0)?)?,
                media_type: row.try_get(1)?,
                size: size_of(row.try_get(2)?),
                artifact_type: row.try_get(3)?,
                annotations,
            });
        }
        Ok(out)
    }

    async fn create_upload(&self, u: &UploadRecord) -> Result<()> {
        self.client()
            .await?
            .execute(
                &format!("INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
                &[
                    &u.id.as_str(),
                    &u.repo.as_str(),
                    &db_size(u.offset),
                    &u.hash_state,
                    &u.parts,
                    &u.created_at,
                    &u.updated_at,
                ],
            )
            .await?;
        Ok(())
    }

    async fn get_upload(&self, id: &UploadId) -> Result<Option<UploadRecord>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = $1")).await?;
        let row = client.query_opt(&stmt, &[&id.as_str()]).await?;
        row.as_ref().map(upload_record).transpose()
    }

    async fn advance_upload(&self, u: &UploadRecord, expected_offset: u64, expected_parts: usize) -> Result<bool> {
        // A racing writer blocks on this row's lock, then re-checks the WHERE on the row the
        // winner left, and updates nothing.
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE uploads SET byte_offset = $2, hash_state = $3, parts = $4, updated_at = $5 \
                 WHERE id = $1 AND byte_offset = $6 AND cardinality(parts)::bigint = $7",
            )
            .await?;
        let n = client
            .execute(
                &stmt,
                &[
                    &u.id.as_str(),
                    &db_size(u.offset),
                    &u.hash_state,
                    &u.parts,
                    &u.updated_at,
                    &db_size(expected_offset),
                    &i64::try_from(expected_parts).unwrap_or(i64::MAX),
                ],
            )
            .await?;
        Ok(n > 0)
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<bool> {
        let n = self.client().await?.execute("DELETE FROM uploads WHERE id = $1", &[&id.as_str()]).await?;
        Ok(n > 0)
    }

    async fn stale_uploads(&self, updated_before: i64) -> Result<Vec<UploadRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE updated_at < $1 ORDER BY id COLLATE \"C\""
            ))
            .await?;
        client.query(&stmt, &[&updated_before]).await?.iter().map(upload_record).collect()
    }
}
