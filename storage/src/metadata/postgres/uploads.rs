//! [`PostgresStore`]'s upload sessions ([`Uploads`]).

use async_trait::async_trait;
use berth_oci::UploadId;
use deadpool_postgres::GenericClient;

use super::PostgresStore;
use crate::crypt::UploadSealing;
use crate::error::{Error, Result};
use crate::metadata::sql::UPLOAD_COLUMNS;
use crate::metadata::{UploadQuota, UploadRecord, Uploads, db_size, size_of};

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
        sealing: row.try_get::<_, Option<&str>>(7)?.map(|s| UploadSealing::decode(s.as_bytes())).transpose()?,
    })
}

/// An upload's `sealing` (JSON) and `sealing_kek` columns.
fn sealing_columns(u: &UploadRecord) -> (Option<String>, Option<&str>) {
    match &u.sealing {
        Some(s) => (Some(String::from_utf8_lossy(&s.encode()).into_owned()), Some(s.kek.as_str())),
        None => (None, None),
    }
}

#[async_trait]
impl Uploads for PostgresStore {
    async fn create_upload(&self, u: &UploadRecord, quota: &UploadQuota) -> Result<()> {
        let (sealing, sealing_kek) = sealing_columns(u);
        let client = self.client().await?;
        let counts = client
            .query_one(
                "SELECT (SELECT count(*) FROM uploads WHERE repository = $1), \
                        (SELECT count(*) FROM uploads WHERE principal = $2)",
                &[&u.repo.as_str(), &quota.principal],
            )
            .await?;
        quota.check(size_of(counts.try_get(0)?), size_of(counts.try_get(1)?))?;
        client
            .execute(
                "INSERT INTO uploads (id, repository, byte_offset, hash_state, parts, created_at, updated_at, \
                 sealing, sealing_kek, principal) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    &u.id.as_str(),
                    &u.repo.as_str(),
                    &db_size(u.offset),
                    &u.hash_state,
                    &u.parts,
                    &u.created_at,
                    &u.updated_at,
                    &sealing,
                    &sealing_kek,
                    &quota.principal,
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
        // winner left, and updates nothing. The commit does not wait for the WAL flush
        // (`synchronous_commit = off` for this transaction only): a crash of the database
        // machine may forget the progress, never tear it (see the trait).
        let (sealing, sealing_kek) = sealing_columns(u);
        transaction!(self, |tx| {
            tx.batch_execute("SET LOCAL synchronous_commit = off").await?;
            let stmt = tx
                .prepare_cached(
                    "UPDATE uploads SET byte_offset = $2, hash_state = $3, parts = $4, updated_at = $5, sealing = $8, \
                     sealing_kek = $9 WHERE id = $1 AND byte_offset = $6 AND cardinality(parts)::bigint = $7",
                )
                .await?;
            tx.execute(
                &stmt,
                &[
                    &u.id.as_str(),
                    &db_size(u.offset),
                    &u.hash_state,
                    &u.parts,
                    &u.updated_at,
                    &db_size(expected_offset),
                    &i64::try_from(expected_parts).unwrap_or(i64::MAX),
                    &sealing,
                    &sealing_kek,
                ],
            )
            .await?
                > 0
        })
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
