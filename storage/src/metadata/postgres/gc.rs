//! [`GcStore`] on PostgreSQL, at READ COMMITTED like the rest of the store.
//!
//! - Link removal and manifest pushes serialize on the link's row: `put_manifest` reads each
//!   required link `FOR KEY SHARE` until it commits; [`GcStore::remove_marked_links`] locks
//!   its batch `FOR UPDATE` in one statement and re-checks "still marked, still unseen, no
//!   manifest references it" in a later statement, whose snapshot sees a push that committed
//!   while it waited. A push that waited for the removal finds no link and fails.
//! - Holds, links and dooms of a digest serialize on a transaction-scoped advisory lock per
//!   digest ([`lock_digests`], taken in key order so two transactions never deadlock), each
//!   checking the others in a statement after the lock.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use berth_oci::{Digest, RepoName};
use deadpool_postgres::GenericClient;

use super::{PostgresStore, db_count, emit};
use crate::error::Result;
use crate::metadata::gc::{
    Doomed, GcCounts, GcLease, GcPreview, GcRun, GcState, GcStore, HOLD_TTL_SECS, Millis, candidate_condition,
    keys_column, keys_from_column,
};
use crate::metadata::sql::GC_RUN_COLUMNS as RUN_COLUMNS;
use crate::metadata::{Event, db_size, parse_digest, size_of};

/// The advisory lock class of digests ("bgcd" in ASCII); the second key is the first 32 bits
/// of the digest's hex.
const DIGEST_LOCK: i32 = 0x6267_6364;

/// The lease row's name (one collector per database).
const LEASE: &str = "gc";

/// The lock key of a digest: its first 32 bits (digests are uniformly distributed).
fn lock_key(digest: &str) -> i32 {
    let hex = digest.split_once(':').map(|(_, h)| h).unwrap_or(digest);
    u32::from_str_radix(hex.get(..8).unwrap_or("0"), 16).unwrap_or_default() as i32
}

/// Takes the advisory lock of each digest until the transaction ends, in key order.
pub(super) async fn lock_digests(tx: &impl GenericClient, digests: &[String]) -> Result<()> {
    let keys: Vec<i32> = digests.iter().map(|d| lock_key(d)).collect::<BTreeSet<_>>().into_iter().collect();
    if keys.is_empty() {
        return Ok(());
    }
    // The inner query sorts; the aggregate consumes its rows (and takes the locks) in order.
    tx.query_one(
        "SELECT count(pg_advisory_xact_lock($1, k)) FROM (SELECT k FROM unnest($2::int4[]) k ORDER BY k) s",
        &[&DIGEST_LOCK, &keys],
    )
    .await?;
    Ok(())
}

/// Whether `digest` is doomed, read after its lock was taken.
pub(super) async fn doomed_now(tx: &impl GenericClient, digest: &str) -> Result<bool> {
    Ok(tx.query_opt("SELECT 1 FROM gc_dooms WHERE digest = $1", &[&digest]).await?.is_some())
}

fn run_record(r: &tokio_postgres::Row) -> Result<GcRun> {
    let count = |i: usize| r.try_get::<_, i64>(i).map(size_of);
    Ok(GcRun {
        id: r.try_get(0)?,
        started_ms: r.try_get(1)?,
        finished_ms: r.try_get(2)?,
        state: GcState::parse(r.try_get(3)?)?,
        dry_run: r.try_get(4)?,
        repository: r.try_get(5)?,
        phase: r.try_get(6)?,
        counts: GcCounts {
            links: count(7)?,
            blobs: count(8)?,
            copies: count(9)?,
            unknown_objects: count(10)?,
            uploads: count(11)?,
            bytes: count(12)?,
        },
        duration_ms: count(13)?,
        error: r.try_get(14)?,
    })
}

async fn put_run(tx: &impl GenericClient, run: &GcRun) -> Result<()> {
    let c = &run.counts;
    tx.execute(
        &format!(
            "INSERT INTO gc_runs ({RUN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (id) DO UPDATE SET finished_ms = excluded.finished_ms, state = excluded.state, \
             phase = excluded.phase, links = excluded.links, blobs = excluded.blobs, copies = excluded.copies, \
             unknown_objects = excluded.unknown_objects, uploads = excluded.uploads, bytes = excluded.bytes, \
             duration_ms = excluded.duration_ms, error = excluded.error"
        ),
        &[
            &run.id,
            &run.started_ms,
            &run.finished_ms,
            &run.state.as_str(),
            &run.dry_run,
            &run.repository,
            &run.phase,
            &db_size(c.links),
            &db_size(c.blobs),
            &db_size(c.copies),
            &db_size(c.unknown_objects),
            &db_size(c.uploads),
            &db_size(c.bytes),
            &db_size(run.duration_ms),
            &run.error,
        ],
    )
    .await?;
    Ok(())
}

/// What is to be deleted for each doom: `dooms` are (digest, whole, keys of the copies).
async fn doomed_of(tx: &impl GenericClient, dooms: Vec<(String, bool, Vec<String>)>) -> Result<Vec<Doomed>> {
    if dooms.is_empty() {
        return Ok(Vec::new());
    }
    let digests: Vec<&str> = dooms.iter().map(|(d, _, _)| d.as_str()).collect();
    let sizes: BTreeMap<String, (i64, bool)> = tx
        .query("SELECT digest, size, plain FROM blobs WHERE digest = ANY($1)", &[&digests])
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?))))
        .collect::<Result<_>>()?;
    let mut copies: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for r in tx
        .query(
            "SELECT digest, key_name, object FROM blob_copies WHERE digest = ANY($1) ORDER BY digest, key_name",
            &[&digests],
        )
        .await?
    {
        copies.entry(r.try_get(0)?).or_default().push((r.try_get(1)?, r.try_get(2)?));
    }
    dooms
        .into_iter()
        .map(|(digest, whole, keys)| {
            let (size, plain) = sizes.get(&digest).map(|(s, p)| (size_of(*s), *p)).unwrap_or_default();
            let copies = copies
                .remove(&digest)
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| whole || keys.contains(k))
                .collect();
            Ok(Doomed { digest: parse_digest(digest)?, whole, size, plain, copies })
        })
        .collect()
}

/// A live hold on `$digest` (`$cutoff`: holds older are dead).
fn held(digest: &str, cutoff: &str) -> String {
    format!("EXISTS (SELECT 1 FROM gc_holds h WHERE h.digest = {digest} AND h.created_at > {cutoff})")
}

/// Blob copies whose key name no repository linking the blob uses (`c` is blob_copies).
const UNUSED_COPY: &str = "EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = c.digest) \
    AND NOT EXISTS (SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
    WHERE rb.digest = c.digest AND r.key_name = c.key_name)";

#[async_trait]
impl GcStore for PostgresStore {
    async fn record_seen(&self, links: &[(RepoName, Digest)], now: i64) -> Result<()> {
        if links.is_empty() {
            return Ok(());
        }
        let repos: Vec<&str> = links.iter().map(|(r, _)| r.as_str()).collect();
        let digests: Vec<String> = links.iter().map(|(_, d)| d.to_string()).collect();
        self.client()
            .await?
            .execute(
                "UPDATE repository_blobs rb SET seen_at = $3 FROM repositories r, \
                 unnest($1::text[], $2::text[]) AS s(name, digest) \
                 WHERE r.name = s.name AND rb.repository_id = r.id AND rb.digest = s.digest AND rb.seen_at < $3",
                &[&repos, &digests, &now],
            )
            .await?;
        Ok(())
    }

    async fn unmark_link(&self, repo: &RepoName, digest: &Digest, now: i64) -> Result<bool> {
        // Waits for a collector holding the row; after its removal, nothing matches.
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE repository_blobs SET gc_mark = NULL, seen_at = GREATEST(seen_at, $3) WHERE digest = $2 \
                 AND repository_id = (SELECT id FROM repositories WHERE name = $1)",
                &[&repo.as_str(), &digest.to_string(), &now],
            )
            .await?;
        Ok(n > 0)
    }

    async fn hold_blob(&self, id: &str, digest: &Digest, now: i64) -> Result<bool> {
        let digest = digest.to_string();
        transaction!(self, |tx| {
            lock_digests(&tx, std::slice::from_ref(&digest)).await?;
            if doomed_now(&tx, &digest).await? {
                false
            } else {
                tx.execute(
                    "INSERT INTO gc_holds (id, digest, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
                    &[&id, &digest, &now],
                )
                .await?;
                true
            }
        })
    }

    async fn release_holds(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.client().await?.execute("DELETE FROM gc_holds WHERE id = ANY($1)", &[&ids]).await?;
        Ok(())
    }

    async fn is_doomed(&self, digest: &Digest) -> Result<bool> {
        let client = self.client().await?;
        doomed_now(&client, &digest.to_string()).await
    }

    async fn acquire_gc_lease(&self, owner: &str, now: Millis, ttl_ms: i64) -> Result<Result<(), GcLease>> {
        transaction!(self, |tx| {
            let taken = tx
                .query_opt(
                    "INSERT INTO gc_lease (name, owner, acquired_ms, expires_ms) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, acquired_ms = excluded.acquired_ms, \
                     expires_ms = excluded.expires_ms WHERE gc_lease.expires_ms <= $3 OR gc_lease.owner = $2 \
                     RETURNING owner",
                    &[&LEASE, &owner, &now, &(now + ttl_ms)],
                )
                .await?;
            if taken.is_some() {
                tx.execute(
                    "UPDATE gc_runs SET state = 'interrupted', finished_ms = $1 WHERE state = 'running'",
                    &[&now],
                )
                .await?;
                Ok(())
            } else {
                let r = tx
                    .query_one("SELECT owner, acquired_ms, expires_ms FROM gc_lease WHERE name = $1", &[&LEASE])
                    .await?;
                Err(GcLease { owner: r.try_get(0)?, acquired_ms: r.try_get(1)?, expires_ms: r.try_get(2)? })
            }
        })
    }

    async fn renew_gc_lease(&self, owner: &str, now: Millis, ttl_ms: i64) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE gc_lease SET expires_ms = $3 WHERE name = $1 AND owner = $2",
                &[&LEASE, &owner, &(now + ttl_ms)],
            )
            .await?;
        Ok(n > 0)
    }

    async fn release_gc_lease(&self, owner: &str) -> Result<()> {
        self.client().await?.execute("DELETE FROM gc_lease WHERE name = $1 AND owner = $2", &[&LEASE, &owner]).await?;
        Ok(())
    }

    async fn gc_lease(&self) -> Result<Option<GcLease>> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT owner, acquired_ms, expires_ms FROM gc_lease WHERE name = $1", &[&LEASE])
            .await?;
        row.map(|r| Ok(GcLease { owner: r.try_get(0)?, acquired_ms: r.try_get(1)?, expires_ms: r.try_get(2)? }))
            .transpose()
    }

    async fn put_gc_run(&self, run: &GcRun) -> Result<()> {
        let client = self.client().await?;
        put_run(&client, run).await
    }

    async fn finish_gc_run(&self, run: &GcRun, event: &Event) -> Result<()> {
        transaction!(self, |tx| {
            put_run(&tx, run).await?;
            emit(&tx, std::slice::from_ref(event)).await?;
        })
    }

    async fn gc_runs(&self, limit: usize) -> Result<Vec<GcRun>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {RUN_COLUMNS} FROM gc_runs ORDER BY started_ms DESC, id LIMIT $1"),
                &[&db_count(limit)],
            )
            .await?;
        rows.iter().map(run_record).collect()
    }

    async fn mark_links(&self, run: &str, cutoff: i64, repo: Option<&RepoName>, limit: usize) -> Result<u64> {
        let repo = repo.map(|r| r.as_str()).unwrap_or_default();
        let condition = candidate_condition("$2", Some("$3"));
        let scope =
            if repo.is_empty() { candidate_condition("$2", None) + " AND $3::text = $3::text" } else { condition };
        let n = self
            .client()
            .await?
            .execute(
                &format!(
                    "UPDATE repository_blobs t SET gc_mark = $1 FROM (SELECT rb.repository_id, rb.digest \
                     FROM repository_blobs rb WHERE (rb.gc_mark IS NULL OR rb.gc_mark <> $1) AND {scope} LIMIT $4) s \
                     WHERE t.repository_id = s.repository_id AND t.digest = s.digest"
                ),
                &[&run, &cutoff, &repo, &db_count(limit)],
            )
            .await?;
        Ok(n)
    }

    async fn remove_marked_links(&self, run: &str, cutoff: i64, limit: usize) -> Result<(Vec<(Digest, u64)>, u64)> {
        let condition = candidate_condition("$4", None);
        transaction!(self, |tx| {
            // One statement locks the batch (waiting for pushes that share-locked a link);
            // a row whose mark was cleared while it waited drops out here.
            let taken = tx
                .query(
                    "SELECT repository_id, digest FROM repository_blobs WHERE gc_mark = $1 \
                     ORDER BY repository_id, digest LIMIT $2 FOR UPDATE",
                    &[&run, &db_count(limit)],
                )
                .await?;
            let ids: Vec<i64> = taken.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
            let digests: Vec<String> = taken.iter().map(|r| r.try_get(1)).collect::<Result<_, _>>()?;
            // A later statement, a fresh snapshot: sees the manifests that committed meanwhile.
            let removed = tx
                .query(
                    &format!(
                        "DELETE FROM repository_blobs rb USING unnest($1::int8[], $2::text[]) AS s(id, digest) \
                         WHERE rb.repository_id = s.id AND rb.digest = s.digest AND rb.gc_mark = $3 AND {condition} \
                         RETURNING rb.digest, (SELECT size FROM blobs b WHERE b.digest = rb.digest)"
                    ),
                    &[&ids, &digests, &run, &cutoff],
                )
                .await?;
            tx.execute(
                "UPDATE repository_blobs rb SET gc_mark = NULL FROM unnest($1::int8[], $2::text[]) AS s(id, digest) \
                 WHERE rb.repository_id = s.id AND rb.digest = s.digest AND rb.gc_mark = $3",
                &[&ids, &digests, &run],
            )
            .await?;
            let removed = removed
                .iter()
                .map(|r| Ok((parse_digest(r.try_get(0)?)?, r.try_get::<_, Option<i64>>(1)?.map(size_of).unwrap_or(0))))
                .collect::<Result<Vec<_>>>()?;
            (removed, taken.len() as u64)
        })
    }

    async fn unlinked_blobs(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<Digest>> {
        let after = after.map(|d| d.to_string()).unwrap_or_default();
        let rows = self
            .client()
            .await?
            .query(
                "SELECT b.digest FROM blobs b WHERE b.digest > $1 \
                 AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest) \
                 AND NOT EXISTS (SELECT 1 FROM gc_dooms d WHERE d.digest = b.digest) ORDER BY b.digest LIMIT $2",
                &[&after, &db_count(limit)],
            )
            .await?;
        rows.iter().map(|r| parse_digest(r.try_get(0)?)).collect()
    }

    async fn doom_blobs(&self, run: &str, digests: &[Digest], now: i64) -> Result<Vec<Doomed>> {
        let digests: Vec<String> = digests.iter().map(|d| d.to_string()).collect();
        let held = held("s.digest", "$3");
        transaction!(self, |tx| {
            tx.execute("DELETE FROM gc_holds WHERE created_at <= $1", &[&(now - HOLD_TTL_SECS)]).await?;
            lock_digests(&tx, &digests).await?;
            // After the locks: a hold or link that committed before is seen here.
            let rows = tx
                .query(
                    &format!(
                        "INSERT INTO gc_dooms (digest, kind, keys, run_id, created_at) \
                         SELECT s.digest, 'blob', '[]', $2, $4 FROM unnest($1::text[]) AS s(digest) \
                         WHERE NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = s.digest) \
                         AND NOT {held} ON CONFLICT (digest) DO NOTHING RETURNING digest"
                    ),
                    &[&digests, &run, &(now - HOLD_TTL_SECS), &now],
                )
                .await?;
            let doomed = rows.iter().map(|r| Ok((r.try_get(0)?, true, Vec::new()))).collect::<Result<Vec<_>>>()?;
            doomed_of(&tx, doomed).await?
        })
    }

    async fn doom_unused_copies(
        &self,
        run: &str,
        digests: Option<&[Digest]>,
        now: i64,
        limit: usize,
    ) -> Result<Vec<Doomed>> {
        let candidates: Vec<String> = match digests {
            Some(ds) => ds.iter().take(limit).map(|d| d.to_string()).collect(),
            None => {
                let rows = self
                    .client()
                    .await?
                    .query(
                        &format!(
                            "SELECT DISTINCT c.digest FROM blob_copies c WHERE {UNUSED_COPY} \
                             AND NOT EXISTS (SELECT 1 FROM gc_dooms d WHERE d.digest = c.digest) \
                             ORDER BY c.digest LIMIT $1"
                        ),
                        &[&db_count(limit)],
                    )
                    .await?;
                rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?
            }
        };
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let held = held("$1", "$2");
        transaction!(self, |tx| {
            lock_digests(&tx, &candidates).await?;
            let mut dooms = Vec::new();
            for digest in &candidates {
                let live: bool =
                    tx.query_one(&format!("SELECT {held}"), &[digest, &(now - HOLD_TTL_SECS)]).await?.try_get(0)?;
                if live {
                    continue;
                }
                let keys: Vec<String> = tx
                    .query(
                        &format!(
                            "SELECT c.key_name FROM blob_copies c WHERE c.digest = $1 AND {UNUSED_COPY} \
                             ORDER BY c.key_name"
                        ),
                        &[digest],
                    )
                    .await?
                    .iter()
                    .map(|r| r.try_get(0))
                    .collect::<Result<_, _>>()?;
                if keys.is_empty() {
                    continue;
                }
                let n = tx
                    .execute(
                        "INSERT INTO gc_dooms (digest, kind, keys, run_id, created_at) VALUES ($1, 'copies', $2, $3, $4) \
                         ON CONFLICT (digest) DO NOTHING",
                        &[digest, &keys_column(&keys), &run, &now],
                    )
                    .await?;
                if n > 0 {
                    dooms.push((digest.clone(), false, keys));
                }
            }
            doomed_of(&tx, dooms).await?
        })
    }

    async fn doomed(&self, limit: usize) -> Result<Vec<Doomed>> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT digest, kind, keys FROM gc_dooms ORDER BY digest LIMIT $1", &[&db_count(limit)])
            .await?;
        let dooms = rows
            .iter()
            .map(|r| {
                let kind: String = r.try_get(1)?;
                Ok((r.try_get(0)?, kind == "blob", keys_from_column(r.try_get(2)?)?))
            })
            .collect::<Result<Vec<_>>>()?;
        doomed_of(&client, dooms).await
    }

    async fn forget_doomed(&self, doomed: &[Doomed]) -> Result<u64> {
        let whole: Vec<String> = doomed.iter().filter(|d| d.whole).map(|d| d.digest.to_string()).collect();
        let all: Vec<String> = doomed.iter().map(|d| d.digest.to_string()).collect();
        let (copy_digests, copy_objects): (Vec<String>, Vec<String>) = doomed
            .iter()
            .filter(|d| !d.whole)
            .flat_map(|d| d.copies.iter().map(|(_, o)| (d.digest.to_string(), o.clone())))
            .unzip();
        transaction!(self, |tx| {
            tx.execute("DELETE FROM blob_copies WHERE digest = ANY($1)", &[&whole]).await?;
            tx.execute(
                "DELETE FROM blobs b WHERE b.digest = ANY($1) \
                 AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)",
                &[&whole],
            )
            .await?;
            tx.execute(
                "DELETE FROM blob_copies c USING unnest($1::text[], $2::text[]) AS s(digest, object) \
                 WHERE c.digest = s.digest AND c.object = s.object",
                &[&copy_digests, &copy_objects],
            )
            .await?;
            tx.execute("DELETE FROM gc_dooms WHERE digest = ANY($1)", &[&all]).await?
        })
    }

    async fn known_objects(
        &self,
        digests: &[Digest],
        copies: &[(Digest, String)],
    ) -> Result<(Vec<Digest>, Vec<String>)> {
        let client = self.client().await?;
        let digests: Vec<String> = digests.iter().map(|d| d.to_string()).collect();
        let known = client.query("SELECT digest FROM blobs WHERE digest = ANY($1)", &[&digests]).await?;
        let known = known.iter().map(|r| parse_digest(r.try_get(0)?)).collect::<Result<Vec<_>>>()?;
        let (cd, co): (Vec<String>, Vec<&str>) = copies.iter().map(|(d, o)| (d.to_string(), o.as_str())).unzip();
        let objects = client
            .query(
                "SELECT c.object FROM blob_copies c JOIN unnest($1::text[], $2::text[]) AS s(digest, object) \
                 ON c.digest = s.digest AND c.object = s.object",
                &[&cd, &co],
            )
            .await?;
        let objects = objects.iter().map(|r| r.try_get(0)).collect::<Result<Vec<String>, _>>()?;
        Ok((known, objects))
    }

    async fn gc_preview(&self, cutoff: i64, repo: Option<&RepoName>) -> Result<GcPreview> {
        let repo = repo.map(|r| r.as_str()).unwrap_or_default();
        let candidate =
            if repo.is_empty() { candidate_condition("$1", None) } else { candidate_condition("$1", Some("$2")) };
        let scope = if repo.is_empty() {
            String::new()
        } else {
            format!("AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest AND {candidate})")
        };
        let client = self.client().await?;
        let dooms: i64 = client.query_one("SELECT COUNT(*) FROM gc_dooms", &[]).await?.try_get(0)?;
        let links: i64 = client
            .query_one(
                &format!("SELECT COUNT(*) FROM repository_blobs rb WHERE {candidate} AND $2::text = $2::text"),
                &[&cutoff, &repo],
            )
            .await?
            .try_get(0)?;
        let row = client
            .query_one(
                &format!(
                    "SELECT COUNT(*), COALESCE(SUM(b.size * ((CASE WHEN b.plain THEN 1 ELSE 0 END) + \
                     (SELECT COUNT(*) FROM blob_copies c WHERE c.digest = b.digest))), 0)::int8 FROM blobs b \
                     WHERE NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest AND NOT ({candidate})) \
                     {scope} AND $2::text = $2::text"
                ),
                &[&cutoff, &repo],
            )
            .await?;
        let (blobs, bytes): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        let copies: i64 = client
            .query_one(&format!("SELECT COUNT(*) FROM blob_copies c WHERE {UNUSED_COPY}"), &[])
            .await?
            .try_get(0)?;
        Ok(GcPreview {
            dooms: size_of(dooms),
            links: size_of(links),
            blobs: size_of(blobs),
            copies: size_of(copies),
            bytes: size_of(bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lock_keys_come_from_the_digest() {
        let d = berth_oci::Digest::sha256_of(b"");
        assert_eq!(super::lock_key(&d.to_string()), 0xe3b0_c442_u32 as i32);
    }
}
