//! [`PostgresStore`]'s images and last pull times ([`Images`]).

use async_trait::async_trait;
use berth_oci::{Digest, RepoName};
use deadpool_postgres::GenericClient;
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::ToSql;

use super::PostgresStore;
use crate::error::Result;
use crate::metadata::images::{IMAGE_COLUMNS, ImageRow, ReferenceRow, assemble, distinct_pulls};
use crate::metadata::{ImageRecord, Images};

impl PostgresStore {
    /// The images of `repo` (only the one of digest `only`, when given), or `None` when the
    /// repository does not exist: four queries in one read-only snapshot.
    async fn read_images(&self, repo: &RepoName, only: Option<String>) -> Result<Option<Vec<ImageRecord>>> {
        let mut client = self.client().await?;
        let tx =
            client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
        let Some(row) = tx.query_opt("SELECT id FROM repositories WHERE name = $1", &[&repo.as_str()]).await? else {
            return Ok(None);
        };
        let id: i64 = row.try_get(0)?;
        // Two texts rather than `$2 IS NULL OR ...`, so that one image is found by its key.
        let (filter, params): (&str, Vec<&(dyn ToSql + Sync)>) = match &only {
            Some(digest) => ("= $2", vec![&id, digest]),
            None => ("IS NOT NULL", vec![&id]),
        };
        let rows = tx
            .query(
                &format!("SELECT {IMAGE_COLUMNS} FROM manifests m WHERE m.repository_id = $1 AND m.digest {filter}"),
                &params,
            )
            .await?
            .iter()
            .map(|r| {
                Ok(ImageRow {
                    digest: r.try_get(0)?,
                    media_type: r.try_get(1)?,
                    artifact_type: r.try_get(2)?,
                    size: r.try_get(3)?,
                    created_at: r.try_get(4)?,
                    last_pulled_at: r.try_get(5)?,
                    subject: r.try_get(6)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let tags = tx
            .query(&format!("SELECT digest, name FROM tags WHERE repository_id = $1 AND digest {filter}"), &params)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<_>>>()?;
        let references = tx
            .query(
                &format!(
                    "SELECT mr.manifest_digest, mr.child_digest, b.size FROM manifest_references mr \
                     LEFT JOIN blobs b ON b.digest = mr.child_digest \
                     WHERE mr.repository_id = $1 AND mr.manifest_digest {filter}"
                ),
                &params,
            )
            .await?
            .iter()
            .map(|r| Ok(ReferenceRow { manifest: r.try_get(0)?, child: r.try_get(1)?, blob_size: r.try_get(2)? }))
            .collect::<Result<Vec<_>>>()?;
        tx.commit().await?;
        assemble(rows, tags, references).map(Some)
    }
}

#[async_trait]
impl Images for PostgresStore {
    async fn list_images(&self, repo: &RepoName) -> Result<Option<Vec<ImageRecord>>> {
        self.read_images(repo, None).await
    }

    async fn image(&self, repo: &RepoName, digest: &Digest) -> Result<Option<ImageRecord>> {
        Ok(self.read_images(repo, Some(digest.to_string())).await?.and_then(|mut found| found.pop()))
    }

    async fn record_pulls(&self, pulls: &[(RepoName, Digest)], at: i64) -> Result<u64> {
        if pulls.is_empty() {
            return Ok(0);
        }
        let (repos, digests): (Vec<String>, Vec<String>) = distinct_pulls(pulls).into_iter().unzip();
        transaction!(self, |tx| {
            // Rows are locked in key order, so that replicas flushing at once do not deadlock.
            tx.execute(
                "WITH pulled AS (SELECT m.repository_id, m.digest FROM unnest($1::text[], $2::text[]) AS p(name, digest) \
                 JOIN repositories r ON r.name = p.name \
                 JOIN manifests m ON m.repository_id = r.id AND m.digest = p.digest \
                 WHERE m.last_pulled_at IS NULL OR m.last_pulled_at < $3 \
                 ORDER BY m.repository_id, m.digest FOR NO KEY UPDATE OF m) \
                 UPDATE manifests m SET last_pulled_at = $3 FROM pulled \
                 WHERE m.repository_id = pulled.repository_id AND m.digest = pulled.digest \
                 AND (m.last_pulled_at IS NULL OR m.last_pulled_at < $3)",
                &[&repos, &digests, &at],
            )
            .await?
        })
    }
}
