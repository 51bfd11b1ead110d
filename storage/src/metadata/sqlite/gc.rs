//! [`GcStore`] on SQLite. Every write is one `BEGIN IMMEDIATE` transaction and SQLite has a
//! single writer, so a check and the write that depends on it can never be split by another
//! writer: link removal against a manifest push, a doom against a hold or a link.

use std::collections::BTreeSet;

use async_trait::async_trait;
use berth_oci::{Digest, RepoName};
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, emit, limit_of};
use crate::error::Result;
use crate::metadata::gc::{
    Doomed, GcLease, GcPreview, GcRun, GcState, GcStore, HOLD_TTL_SECS, Millis, candidate_condition, keys_column,
    keys_from_column,
};
use crate::metadata::sql::GC_RUN_COLUMNS as RUN_COLUMNS;
use crate::metadata::{Event, db_size, parse_digest, size_of};

/// The lease row's name (one collector per store).
const LEASE: &str = "gc";

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(GcRun, String)> {
    let count = |i: usize| r.get::<_, i64>(i).map(size_of);
    Ok((
        GcRun {
            id: r.get(0)?,
            started_ms: r.get(1)?,
            finished_ms: r.get(2)?,
            state: GcState::Running,
            dry_run: r.get(4)?,
            repository: r.get(5)?,
            phase: r.get(6)?,
            counts: crate::metadata::gc::GcCounts {
                links: count(7)?,
                blobs: count(8)?,
                copies: count(9)?,
                unknown_objects: count(10)?,
                uploads: count(11)?,
                bytes: count(12)?,
            },
            duration_ms: count(13)?,
            error: r.get(14)?,
        },
        r.get(3)?,
    ))
}

fn put_run(tx: &rusqlite::Transaction<'_>, run: &GcRun) -> Result<()> {
    let c = &run.counts;
    tx.execute(
        &format!(
            "INSERT INTO gc_runs ({RUN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
             ON CONFLICT (id) DO UPDATE SET finished_ms = excluded.finished_ms, state = excluded.state, \
             phase = excluded.phase, links = excluded.links, blobs = excluded.blobs, copies = excluded.copies, \
             unknown_objects = excluded.unknown_objects, uploads = excluded.uploads, bytes = excluded.bytes, \
             duration_ms = excluded.duration_ms, error = excluded.error"
        ),
        params![
            run.id,
            run.started_ms,
            run.finished_ms,
            run.state.as_str(),
            run.dry_run,
            run.repository,
            run.phase,
            db_size(c.links),
            db_size(c.blobs),
            db_size(c.copies),
            db_size(c.unknown_objects),
            db_size(c.uploads),
            db_size(c.bytes),
            db_size(run.duration_ms),
            run.error,
        ],
    )?;
    Ok(())
}

/// What is to be deleted for a doom just read: (digest, kind, keys).
fn doomed_of(conn: &rusqlite::Connection, digest: String, kind: &str, keys: &str) -> Result<Doomed> {
    let row: Option<(i64, bool)> = conn
        .query_row("SELECT size, plain FROM blobs WHERE digest = ?1", [&digest], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let whole = kind == "blob";
    let wanted: BTreeSet<String> = keys_from_column(keys)?.into_iter().collect();
    let mut stmt =
        conn.prepare_cached("SELECT key_name, object FROM blob_copies WHERE digest = ?1 ORDER BY key_name")?;
    let copies = stmt
        .query_map([&digest], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .filter(|(key, _)| whole || wanted.contains(key))
        .collect();
    let (size, plain) = row.map(|(s, p)| (size_of(s), p)).unwrap_or_default();
    Ok(Doomed { digest: parse_digest(digest)?, whole, size, plain, copies })
}

/// Whether a live hold is on `digest`.
const HELD: &str = "EXISTS (SELECT 1 FROM gc_holds h WHERE h.digest = b_digest AND h.created_at > ?3)";

/// The copies of `digest` whose key name no repository linking it uses.
const UNUSED_COPIES: &str = "SELECT c.key_name FROM blob_copies c WHERE c.digest = ?1 AND NOT EXISTS (\
    SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
    WHERE rb.digest = c.digest AND r.key_name = c.key_name) ORDER BY c.key_name";

#[async_trait]
impl GcStore for SqliteStore {
    async fn record_seen(&self, links: &[(RepoName, Digest)], now: i64) -> Result<()> {
        if links.is_empty() {
            return Ok(());
        }
        let links: Vec<(String, String)> = links.iter().map(|(r, d)| (r.to_string(), d.to_string())).collect();
        self.write(move |tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE repository_blobs SET seen_at = ?3 WHERE digest = ?2 \
                 AND repository_id = (SELECT id FROM repositories WHERE name = ?1) AND seen_at < ?3",
            )?;
            for (repo, digest) in &links {
                stmt.execute(params![repo, digest, now])?;
            }
            Ok(())
        })
        .await
    }

    async fn unmark_link(&self, repo: &RepoName, digest: &Digest, now: i64) -> Result<bool> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE repository_blobs SET gc_mark = NULL, seen_at = MAX(seen_at, ?3) WHERE digest = ?2 \
                 AND repository_id = (SELECT id FROM repositories WHERE name = ?1)",
                params![repo, digest, now],
            )? > 0)
        })
        .await
    }

    async fn hold_blob(&self, id: &str, digest: &Digest, now: i64) -> Result<bool> {
        let (id, digest) = (id.to_owned(), digest.to_string());
        self.write(move |tx| {
            let doomed: Option<i64> =
                tx.query_row("SELECT 1 FROM gc_dooms WHERE digest = ?1", [&digest], |r| r.get(0)).optional()?;
            if doomed.is_some() {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO gc_holds (id, digest, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO NOTHING",
                params![id, digest, now],
            )?;
            Ok(true)
        })
        .await
    }

    async fn release_holds(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids.to_vec();
        self.write(move |tx| {
            let mut stmt = tx.prepare_cached("DELETE FROM gc_holds WHERE id = ?1")?;
            for id in &ids {
                stmt.execute([id])?;
            }
            Ok(())
        })
        .await
    }

    async fn is_doomed(&self, digest: &Digest) -> Result<bool> {
        let digest = digest.to_string();
        self.with_conn(move |c| {
            Ok(c.query_row("SELECT 1 FROM gc_dooms WHERE digest = ?1", [digest], |r| r.get::<_, i64>(0))
                .optional()?
                .is_some())
        })
        .await
    }

    async fn acquire_gc_lease(&self, owner: &str, now: Millis, ttl_ms: i64) -> Result<Result<(), GcLease>> {
        let owner = owner.to_owned();
        self.write(move |tx| {
            let n = tx.execute(
                "INSERT INTO gc_lease (name, owner, acquired_ms, expires_ms) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, acquired_ms = excluded.acquired_ms, \
                 expires_ms = excluded.expires_ms WHERE gc_lease.expires_ms <= ?3 OR gc_lease.owner = ?2",
                params![LEASE, owner, now, now + ttl_ms],
            )?;
            if n == 0 {
                let held = tx.query_row(
                    "SELECT owner, acquired_ms, expires_ms FROM gc_lease WHERE name = ?1",
                    [LEASE],
                    |r| Ok(GcLease { owner: r.get(0)?, acquired_ms: r.get(1)?, expires_ms: r.get(2)? }),
                )?;
                return Ok(Err(held));
            }
            tx.execute("UPDATE gc_runs SET state = 'interrupted', finished_ms = ?1 WHERE state = 'running'", [now])?;
            Ok(Ok(()))
        })
        .await
    }

    async fn renew_gc_lease(&self, owner: &str, now: Millis, ttl_ms: i64) -> Result<bool> {
        let owner = owner.to_owned();
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE gc_lease SET expires_ms = ?3 WHERE name = ?1 AND owner = ?2",
                params![LEASE, owner, now + ttl_ms],
            )? > 0)
        })
        .await
    }

    async fn release_gc_lease(&self, owner: &str) -> Result<()> {
        let owner = owner.to_owned();
        self.write(move |tx| {
            tx.execute("DELETE FROM gc_lease WHERE name = ?1 AND owner = ?2", params![LEASE, owner])?;
            Ok(())
        })
        .await
    }

    async fn gc_lease(&self) -> Result<Option<GcLease>> {
        self.with_conn(move |c| {
            Ok(c.query_row("SELECT owner, acquired_ms, expires_ms FROM gc_lease WHERE name = ?1", [LEASE], |r| {
                Ok(GcLease { owner: r.get(0)?, acquired_ms: r.get(1)?, expires_ms: r.get(2)? })
            })
            .optional()?)
        })
        .await
    }

    async fn put_gc_run(&self, run: &GcRun) -> Result<()> {
        let run = run.clone();
        self.write(move |tx| put_run(tx, &run)).await
    }

    async fn finish_gc_run(&self, run: &GcRun, event: &Event) -> Result<()> {
        let (run, event) = (run.clone(), event.clone());
        self.write(move |tx| {
            put_run(tx, &run)?;
            emit(tx, &[event])
        })
        .await
    }

    async fn gc_runs(&self, limit: usize) -> Result<Vec<GcRun>> {
        self.with_conn(move |c| {
            let mut stmt =
                c.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM gc_runs ORDER BY started_ms DESC, id LIMIT ?1"))?;
            let rows = stmt.query_map([limit_of(limit)], run_from_row)?;
            rows.map(|r| {
                let (mut run, state) = r?;
                run.state = GcState::parse(&state)?;
                Ok(run)
            })
            .collect()
        })
        .await
    }

    async fn mark_links(&self, run: &str, cutoff: i64, repo: Option<&RepoName>, limit: usize) -> Result<u64> {
        let (run, repo) = (run.to_owned(), repo.map(|r| r.to_string()));
        self.write(move |tx| {
            let condition = candidate_condition("?2", Some("?3"));
            let condition = if repo.is_some() { condition } else { candidate_condition("?2", None) };
            let n = tx.execute(
                &format!(
                    "UPDATE repository_blobs SET gc_mark = ?1 WHERE (repository_id, digest) IN (\
                     SELECT rb.repository_id, rb.digest FROM repository_blobs rb \
                     WHERE (rb.gc_mark IS NULL OR rb.gc_mark <> ?1) AND {condition} LIMIT ?4)"
                ),
                params![run, cutoff, repo.unwrap_or_default(), limit_of(limit)],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn remove_marked_links(&self, run: &str, cutoff: i64, limit: usize) -> Result<(Vec<(Digest, u64)>, u64)> {
        let run = run.to_owned();
        self.write(move |tx| {
            let taken: Vec<(i64, String)> = {
                let mut stmt = tx
                    .prepare_cached("SELECT repository_id, digest FROM repository_blobs WHERE gc_mark = ?1 LIMIT ?2")?;
                stmt.query_map(params![run, limit_of(limit)], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?
            };
            let condition = candidate_condition("?3", None);
            let mut removed = Vec::new();
            for (repo_id, digest) in &taken {
                let n = tx.execute(
                    &format!(
                        "DELETE FROM repository_blobs AS rb WHERE rb.repository_id = ?1 AND rb.digest = ?2 \
                         AND rb.gc_mark = ?4 AND {condition}"
                    ),
                    params![repo_id, digest, cutoff, run],
                )?;
                match n {
                    1.. => {
                        let size: i64 =
                            tx.query_row("SELECT size FROM blobs WHERE digest = ?1", [digest], |r| r.get(0))?;
                        removed.push((parse_digest(digest.clone())?, size_of(size)));
                    }
                    0 => {
                        tx.execute(
                            "UPDATE repository_blobs SET gc_mark = NULL WHERE repository_id = ?1 AND digest = ?2",
                            params![repo_id, digest],
                        )?;
                    }
                }
            }
            Ok((removed, taken.len() as u64))
        })
        .await
    }

    async fn unlinked_blobs(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<Digest>> {
        let after = after.map(|d| d.to_string()).unwrap_or_default();
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT b.digest FROM blobs b WHERE b.digest > ?1 \
                 AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest) \
                 AND NOT EXISTS (SELECT 1 FROM gc_dooms d WHERE d.digest = b.digest) ORDER BY b.digest LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit_of(limit)], |r| r.get::<_, String>(0))?;
            rows.map(|r| parse_digest(r?)).collect()
        })
        .await
    }

    async fn doom_blobs(&self, run: &str, digests: &[Digest], now: i64) -> Result<Vec<Doomed>> {
        let (run, digests) = (run.to_owned(), digests.iter().map(|d| d.to_string()).collect::<Vec<_>>());
        self.write(move |tx| {
            tx.execute("DELETE FROM gc_holds WHERE created_at <= ?1", [now - HOLD_TTL_SECS])?;
            let held = HELD.replace("b_digest", "?1");
            let mut doomed = Vec::new();
            for digest in digests {
                let n = tx.execute(
                    &format!(
                        "INSERT INTO gc_dooms (digest, kind, keys, run_id, created_at) SELECT ?1, 'blob', '[]', ?2, ?4 \
                         WHERE NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = ?1) AND NOT {held} \
                         ON CONFLICT (digest) DO NOTHING"
                    ),
                    params![digest, run, now - HOLD_TTL_SECS, now],
                )?;
                if n > 0 {
                    doomed.push(doomed_of(tx, digest, "blob", "[]")?);
                }
            }
            Ok(doomed)
        })
        .await
    }

    async fn doom_unused_copies(
        &self,
        run: &str,
        digests: Option<&[Digest]>,
        now: i64,
        limit: usize,
    ) -> Result<Vec<Doomed>> {
        let run = run.to_owned();
        let only: Option<Vec<String>> = digests.map(|ds| ds.iter().map(|d| d.to_string()).collect());
        self.write(move |tx| {
            let candidates: Vec<String> = match &only {
                Some(only) => only.clone(),
                None => {
                    let mut stmt = tx.prepare_cached(
                        "SELECT DISTINCT c.digest FROM blob_copies c \
                         WHERE EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = c.digest) \
                         AND NOT EXISTS (SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
                         WHERE rb.digest = c.digest AND r.key_name = c.key_name) \
                         AND NOT EXISTS (SELECT 1 FROM gc_dooms d WHERE d.digest = c.digest) ORDER BY c.digest LIMIT ?1",
                    )?;
                    stmt.query_map([limit_of(limit)], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?
                }
            };
            let held = HELD.replace("b_digest", "?1");
            let mut doomed = Vec::new();
            for digest in candidates.into_iter().take(limit) {
                let linked: Option<i64> = tx
                    .query_row("SELECT 1 FROM repository_blobs WHERE digest = ?1 LIMIT 1", [&digest], |r| r.get(0))
                    .optional()?;
                let live: bool =
                    tx.query_row(&format!("SELECT {held}"), params![digest, 0, now - HOLD_TTL_SECS], |r| r.get(0))?;
                if linked.is_none() || live {
                    continue;
                }
                let keys: Vec<String> = {
                    let mut stmt = tx.prepare_cached(UNUSED_COPIES)?;
                    stmt.query_map([&digest], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?
                };
                if keys.is_empty() {
                    continue;
                }
                let column = keys_column(&keys);
                let n = tx.execute(
                    "INSERT INTO gc_dooms (digest, kind, keys, run_id, created_at) VALUES (?1, 'copies', ?2, ?3, ?4) \
                     ON CONFLICT (digest) DO NOTHING",
                    params![digest, column, run, now],
                )?;
                if n > 0 {
                    doomed.push(doomed_of(tx, digest, "copies", &column)?);
                }
            }
            Ok(doomed)
        })
        .await
    }

    async fn doomed(&self, limit: usize) -> Result<Vec<Doomed>> {
        self.with_conn(move |c| {
            let rows: Vec<(String, String, String)> = {
                let mut stmt = c.prepare_cached("SELECT digest, kind, keys FROM gc_dooms ORDER BY digest LIMIT ?1")?;
                stmt.query_map([limit_of(limit)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<_>>()?
            };
            rows.into_iter().map(|(digest, kind, keys)| doomed_of(c, digest, &kind, &keys)).collect()
        })
        .await
    }

    async fn forget_doomed(&self, doomed: &[Doomed]) -> Result<u64> {
        let doomed = doomed.to_vec();
        self.write(move |tx| {
            let mut forgotten = 0;
            for d in &doomed {
                let digest = d.digest.to_string();
                if d.whole {
                    tx.execute("DELETE FROM blob_copies WHERE digest = ?1", [&digest])?;
                    tx.execute(
                        "DELETE FROM blobs WHERE digest = ?1 \
                         AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = ?1)",
                        [&digest],
                    )?;
                } else {
                    for (key, object) in &d.copies {
                        tx.execute(
                            "DELETE FROM blob_copies WHERE digest = ?1 AND key_name = ?2 AND object = ?3",
                            params![digest, key, object],
                        )?;
                    }
                }
                forgotten += tx.execute("DELETE FROM gc_dooms WHERE digest = ?1", [&digest])? as u64;
            }
            Ok(forgotten)
        })
        .await
    }

    async fn known_objects(
        &self,
        digests: &[Digest],
        copies: &[(Digest, String)],
    ) -> Result<(Vec<Digest>, Vec<String>)> {
        let (digests, copies) = (digests.to_vec(), copies.to_vec());
        self.with_conn(move |c| {
            let mut known_digests = Vec::new();
            {
                let mut stmt = c.prepare_cached("SELECT 1 FROM blobs WHERE digest = ?1")?;
                for d in digests {
                    if stmt.query_row([d.to_string()], |r| r.get::<_, i64>(0)).optional()?.is_some() {
                        known_digests.push(d);
                    }
                }
            }
            let mut known_objects = Vec::new();
            {
                let mut stmt = c.prepare_cached("SELECT 1 FROM blob_copies WHERE digest = ?1 AND object = ?2")?;
                for (d, o) in copies {
                    if stmt.query_row(params![d.to_string(), o], |r| r.get::<_, i64>(0)).optional()?.is_some() {
                        known_objects.push(o);
                    }
                }
            }
            Ok((known_digests, known_objects))
        })
        .await
    }

    async fn gc_preview(&self, cutoff: i64, repo: Option<&RepoName>) -> Result<GcPreview> {
        let repo = repo.map(|r| r.to_string());
        self.with_conn(move |c| {
            let candidate = candidate_condition("?1", repo.as_ref().map(|_| "?2"));
            let repo = repo.unwrap_or_default();
            let dooms: i64 = c.query_row("SELECT COUNT(*) FROM gc_dooms", [], |r| r.get(0))?;
            let links: i64 = c.query_row(
                &format!("SELECT COUNT(*) FROM repository_blobs rb WHERE {candidate} AND ?2 = ?2"),
                params![cutoff, repo],
                |r| r.get(0),
            )?;
            let scope = if repo.is_empty() {
                String::new()
            } else {
                format!("AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest AND {candidate})")
            };
            let (blobs, bytes): (i64, i64) = c.query_row(
                &format!(
                    "SELECT COUNT(*), COALESCE(SUM(b.size * (b.plain + (SELECT COUNT(*) FROM blob_copies c \
                     WHERE c.digest = b.digest))), 0) FROM blobs b WHERE NOT EXISTS (SELECT 1 FROM repository_blobs rb \
                     WHERE rb.digest = b.digest AND NOT ({candidate})) {scope} AND ?2 = ?2"
                ),
                params![cutoff, repo],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let copies: i64 = c.query_row(
                "SELECT COUNT(*) FROM blob_copies c \
                 WHERE EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = c.digest) \
                 AND NOT EXISTS (SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
                 WHERE rb.digest = c.digest AND r.key_name = c.key_name)",
                [],
                |r| r.get(0),
            )?;
            Ok(GcPreview {
                dooms: size_of(dooms),
                links: size_of(links),
                blobs: size_of(blobs),
                copies: size_of(copies),
                bytes: size_of(bytes),
            })
        })
        .await
    }
}
