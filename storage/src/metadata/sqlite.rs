//! [`SqliteStore`]: the metadata store in an embedded SQLite file (the zero-config default).
//!
//! A few connections in WAL mode (readers do not block the writer), each call run on the
//! blocking pool. Writes take the lock up front (`BEGIN IMMEDIATE`) so two writers never
//! deadlock upgrading a read lock. `synchronous=FULL`: a 201 means the record is on disk.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use berth_oci::{Digest, Reference, RepoName, Tag, UploadId};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::Semaphore;

use super::{
    BlobEntry, KeyRecord, KeyState, ManifestRecord, MetadataStore, NewManifest, Page, Referrer, RetireRefused,
    UploadRecord, check_reference, db_size, parse_digest, size_of, unix_now,
};
use crate::crypt::{Run, SealedBlob, UploadSealing};
use crate::error::{Error, Result};

/// Connections kept open; bounds concurrent database work.
const POOL_SIZE: usize = 4;

/// Schema versions, applied in order, each once. Never edit a released entry: add one.
const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("sqlite_v1.sql")), (2, include_str!("sqlite_v2.sql"))];

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

fn ensure_repo(conn: &Connection, repo: &RepoName) -> Result<i64> {
    conn.execute(
        "INSERT INTO repositories (name, created_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
        params![repo.as_str(), unix_now()],
    )?;
    repo_id(conn, repo)?.ok_or(Error::Conflict)
}

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

    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64, plaintext: bool) -> Result<()> {
        let (repo, digest) = (repo.clone(), digest.to_string());
        self.write(move |tx| {
            let id = ensure_repo(tx, &repo)?;
            let now = unix_now();
            tx.execute(
                "INSERT INTO blobs (digest, size, created_at, plain) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (digest) DO UPDATE SET plain = MAX(plain, excluded.plain)",
                params![digest, db_size(size), now, i64::from(plaintext)],
            )?;
            tx.execute(
                "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT DO NOTHING",
                params![id, digest, now],
            )?;
            Ok(())
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

    async fn put_manifest(&self, m: &NewManifest) -> Result<()> {
        let m = m.clone();
        self.write(move |tx| {
            let id = ensure_repo(tx, &m.repo)?;
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
            Ok(())
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

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write(move |tx| {
            // Tags and references go with the manifest (ON DELETE CASCADE).
            let n = tx.execute(
                "DELETE FROM manifests WHERE digest = ?2 \
                 AND repository_id = (SELECT id FROM repositories WHERE name = ?1)",
                params![repo, digest],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        self.write(move |tx| {
            let n = tx.execute(
                "DELETE FROM tags WHERE name = ?2 AND repository_id = (SELECT id FROM repositories WHERE name = ?1)",
                params![repo, tag],
            )?;
            Ok(n > 0)
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
            let rows = stmt.query_map(params![id, page.last.unwrap_or_default(), page.limit as i64], |r| r.get(0))?;
            Ok(Some(rows.collect::<rusqlite::Result<Vec<String>>>()?))
        })
        .await
    }

    async fn list_repositories(&self, page: &Page) -> Result<Vec<String>> {
        let page = page.clone();
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached("SELECT name FROM repositories WHERE name > ?1 ORDER BY name LIMIT ?2")?;
            let rows = stmt.query_map(params![page.last.unwrap_or_default(), page.limit as i64], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Referrer>> {
        let (repo, subject, filter) = (repo.to_string(), subject.to_string(), artifact_type.map(str::to_owned));
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations FROM manifests m \
                 JOIN repositories r ON r.id = m.repository_id \
                 WHERE r.name = ?1 AND m.subject = ?2 AND (?3 IS NULL OR m.artifact_type = ?3) \
                 ORDER BY m.created_at, m.digest",
            )?;
            let rows = stmt.query_map(params![repo, subject, filter], |r| {
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

    async fn create_upload(&self, u: &UploadRecord) -> Result<()> {
        let u = u.clone();
        self.write(move |tx| {
            tx.execute(
                &format!(
                    "INSERT INTO uploads ({UPLOAD_COLUMNS}, sealing_kek) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                ),
                params![
                    u.id.as_str(),
                    u.repo.as_str(),
                    db_size(u.offset),
                    u.hash_state,
                    serde_json::to_string(&u.parts).unwrap_or_default(),
                    u.created_at,
                    u.updated_at,
                    sealing_text(&u).0,
                    sealing_text(&u).1
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
                        "SELECT b.size, r.key_name, c.key_name IS NOT NULL, {COPY_COLUMNS} \
                         FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
                         JOIN blobs b ON b.digest = rb.digest \
                         LEFT JOIN blob_copies c ON c.digest = rb.digest AND c.key_name = r.key_name \
                         WHERE r.name = ?1 AND rb.digest = ?2"
                    ),
                    params![repo, digest],
                    |r| {
                        let copy = if r.get::<_, bool>(2)? { Some(copy_from_row(r, 3)?) } else { None };
                        Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?, copy))
                    },
                )
                .optional()?;
            row.map(|(size, key_name, copy)| {
                Ok(BlobEntry { size: size_of(size), key_name, copy: copy.map(copy_record).transpose()? })
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

    async fn create_repository(&self, repo: &RepoName, key: Option<&str>) -> Result<Option<String>> {
        let (repo, key) = (repo.to_string(), key.map(str::to_owned));
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO repositories (name, created_at, key_name) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
                params![repo, unix_now(), key],
            )?;
            Ok(tx.query_row("SELECT key_name FROM repositories WHERE name = ?1", [repo], |r| r.get(0))?)
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
}

/// A blob (`b`) whose plaintext object exists and is needed by no repository: each one
/// linking it has a key and a sealed copy for that key.
const REDUNDANT: &str = "b.plain = 1 AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest) \
    AND NOT EXISTS (SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
    WHERE rb.digest = b.digest AND (r.key_name IS NULL OR NOT EXISTS \
    (SELECT 1 FROM blob_copies c WHERE c.digest = b.digest AND c.key_name = r.key_name)))";
