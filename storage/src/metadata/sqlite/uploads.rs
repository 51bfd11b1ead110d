//! [`SqliteStore`]'s upload sessions ([`Uploads`]).

use async_trait::async_trait;
use berth_oci::UploadId;
use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::crypt::UploadSealing;
use crate::error::{Error, Result};
use crate::metadata::sql::UPLOAD_COLUMNS;
use crate::metadata::{UploadQuota, UploadRecord, Uploads, db_size, size_of};

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

fn sealing_text(u: &UploadRecord) -> (Option<String>, Option<String>) {
    match &u.sealing {
        Some(s) => (Some(String::from_utf8_lossy(&s.encode()).into_owned()), Some(s.kek.clone())),
        None => (None, None),
    }
}

#[async_trait]
impl Uploads for SqliteStore {
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
        self.write_relaxed(move |tx| {
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
}
