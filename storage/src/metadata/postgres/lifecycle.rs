//! [`PostgresStore`]'s lifecycle policies ([`Lifecycle`]).

use async_trait::async_trait;
use berth_oci::{Digest, RepoName};
use deadpool_postgres::GenericClient;

use super::PostgresStore;
use crate::error::{Error, Result};
use crate::metadata::{
    Expired, Lifecycle, LifecyclePolicyRecord, LifecyclePreviewRecord, Origin, db_size, size_of, unix_now,
};

#[async_trait]
impl Lifecycle for PostgresStore {
    async fn put_lifecycle_policy(&self, repo: &RepoName, policy: &str) -> Result<()> {
        transaction!(self, |tx| {
            // The repository row stays share-locked until commit: its deletion waits, then
            // deletes this policy with it.
            let row = tx
                .query_opt("SELECT id FROM repositories WHERE name = $1 FOR KEY SHARE", &[&repo.as_str()])
                .await?
                .ok_or(Error::NotFound)?;
            let id: i64 = row.try_get(0)?;
            tx.execute(
                "INSERT INTO lifecycle_policies (repository_id, policy, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (repository_id) DO UPDATE SET policy = excluded.policy, updated_at = excluded.updated_at",
                &[&id, &policy, &unix_now()],
            )
            .await?;
        })
    }

    async fn lifecycle_policy(&self, repo: &RepoName) -> Result<Option<LifecyclePolicyRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT l.policy, l.updated_at, l.last_evaluated_at, l.last_expired, l.last_kept \
                 FROM lifecycle_policies l \
                 JOIN repositories r ON r.id = l.repository_id WHERE r.name = $1",
                &[&repo.as_str()],
            )
            .await?;
        row.map(|r| {
            Ok(LifecyclePolicyRecord {
                policy: r.try_get(0)?,
                updated_at: r.try_get(1)?,
                last_evaluated_at: r.try_get(2)?,
                last_expired: size_of(r.try_get(3)?),
                last_kept: size_of(r.try_get(4)?),
            })
        })
        .transpose()
    }

    async fn delete_lifecycle_policy(&self, repo: &RepoName) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM lifecycle_policies l USING repositories r WHERE r.id = l.repository_id AND r.name = $1",
                &[&repo.as_str()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn lifecycle_repositories(&self) -> Result<Vec<RepoName>> {
        let client = self.client().await?;
        client
            .query(
                "SELECT r.name FROM lifecycle_policies l JOIN repositories r ON r.id = l.repository_id \
                 ORDER BY r.name COLLATE \"C\"",
                &[],
            )
            .await?
            .iter()
            .map(|r| {
                let name: String = r.try_get(0)?;
                name.parse().map_err(|e| Error::Corrupt(format!("repository name {name:?}: {e}")))
            })
            .collect()
    }

    async fn lifecycle_evaluated(&self, repo: &RepoName, at: i64, expired: u64, kept: u64) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE lifecycle_policies l SET last_evaluated_at = $2, last_expired = $3, last_kept = $4 \
                 FROM repositories r WHERE r.id = l.repository_id AND r.name = $1",
                &[&repo.as_str(), &at, &db_size(expired), &db_size(kept)],
            )
            .await?;
        Ok(())
    }

    async fn put_lifecycle_preview(&self, repo: &RepoName, preview: &LifecyclePreviewRecord) -> Result<()> {
        transaction!(self, |tx| {
            // As a policy: the repository row is share-locked until commit, so its deletion
            // waits and then deletes this preview with it.
            let row = tx
                .query_opt("SELECT id FROM repositories WHERE name = $1 FOR KEY SHARE", &[&repo.as_str()])
                .await?
                .ok_or(Error::NotFound)?;
            let id: i64 = row.try_get(0)?;
            tx.execute(
                "INSERT INTO lifecycle_previews (repository_id, policy, result, started_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (repository_id) DO UPDATE SET policy = excluded.policy, result = excluded.result, \
                 started_at = excluded.started_at",
                &[&id, &preview.policy, &preview.result, &preview.started_at],
            )
            .await?;
        })
    }

    async fn lifecycle_preview(&self, repo: &RepoName) -> Result<Option<LifecyclePreviewRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT p.policy, p.result, p.started_at FROM lifecycle_previews p \
                 JOIN repositories r ON r.id = p.repository_id WHERE r.name = $1",
                &[&repo.as_str()],
            )
            .await?;
        row.map(|r| {
            Ok(LifecyclePreviewRecord { policy: r.try_get(0)?, result: r.try_get(1)?, started_at: r.try_get(2)? })
        })
        .transpose()
    }

    async fn expire_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        tags: &[String],
        origin: &Origin,
    ) -> Result<Expired> {
        transaction!(self, |tx| super::manifests::remove_manifest(&tx, repo, digest, Some(tags), origin).await?)
    }
}
