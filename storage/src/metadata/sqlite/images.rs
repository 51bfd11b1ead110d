//! [`SqliteStore`]'s images and last pull times ([`Images`]).

use async_trait::async_trait;
use berth_oci::{Digest, RepoName};
use rusqlite::{Connection, params};

use super::{SqliteStore, repo_id};
use crate::error::Result;
use crate::metadata::images::{IMAGE_COLUMNS, ImageRow, ReferenceRow, assemble, distinct_pulls};
use crate::metadata::{ImageRecord, Images};

/// The images of repository `id`, or only the one of digest `only`: three queries in the
/// caller's read transaction.
fn read_images(c: &Connection, id: i64, only: Option<&str>) -> Result<Vec<ImageRecord>> {
    // Two texts rather than `?2 IS NULL OR ...`, so that one image is found by its key.
    let (filter, params): (&str, Vec<&dyn rusqlite::ToSql>) = match &only {
        Some(digest) => ("= ?2", vec![&id, digest]),
        None => ("IS NOT NULL", vec![&id]),
    };
    let params = params.as_slice();
    let rows = {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT {IMAGE_COLUMNS} FROM manifests m WHERE m.repository_id = ?1 AND m.digest {filter}"
        ))?;
        let rows = stmt.query_map(params, |r| {
            Ok(ImageRow {
                digest: r.get(0)?,
                media_type: r.get(1)?,
                artifact_type: r.get(2)?,
                size: r.get(3)?,
                created_at: r.get(4)?,
                last_pulled_at: r.get(5)?,
                subject: r.get(6)?,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let tags = {
        let mut stmt =
            c.prepare_cached(&format!("SELECT digest, name FROM tags WHERE repository_id = ?1 AND digest {filter}"))?;
        let rows = stmt.query_map(params, |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let references = {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT mr.manifest_digest, mr.child_digest, b.size FROM manifest_references mr \
             LEFT JOIN blobs b ON b.digest = mr.child_digest \
             WHERE mr.repository_id = ?1 AND mr.manifest_digest {filter}"
        ))?;
        let rows = stmt
            .query_map(params, |r| Ok(ReferenceRow { manifest: r.get(0)?, child: r.get(1)?, blob_size: r.get(2)? }))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    assemble(rows, tags, references)
}

#[async_trait]
impl Images for SqliteStore {
    async fn list_images(&self, repo: &RepoName) -> Result<Option<Vec<ImageRecord>>> {
        let repo = repo.clone();
        self.with_conn(move |c| {
            // One snapshot for the three queries.
            let tx = c.transaction()?;
            let Some(id) = repo_id(&tx, &repo)? else { return Ok(None) };
            let images = read_images(&tx, id, None)?;
            tx.finish()?;
            Ok(Some(images))
        })
        .await
    }

    async fn image(&self, repo: &RepoName, digest: &Digest) -> Result<Option<ImageRecord>> {
        let (repo, digest) = (repo.clone(), digest.to_string());
        self.with_conn(move |c| {
            let tx = c.transaction()?;
            let Some(id) = repo_id(&tx, &repo)? else { return Ok(None) };
            let image = read_images(&tx, id, Some(&digest))?.pop();
            tx.finish()?;
            Ok(image)
        })
        .await
    }

    async fn record_pulls(&self, pulls: &[(RepoName, Digest)], at: i64) -> Result<u64> {
        if pulls.is_empty() {
            return Ok(0);
        }
        let pulls = distinct_pulls(pulls);
        self.write(move |tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE manifests SET last_pulled_at = ?3 WHERE digest = ?2 \
                 AND repository_id = (SELECT id FROM repositories WHERE name = ?1) \
                 AND (last_pulled_at IS NULL OR last_pulled_at < ?3)",
            )?;
            let mut moved = 0u64;
            for (repo, digest) in &pulls {
                moved += stmt.execute(params![repo, digest, at])? as u64;
            }
            Ok(moved)
        })
        .await
    }
}
