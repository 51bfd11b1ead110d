//! [`SqliteStore`]'s lifecycle policies ([`Lifecycle`]).

use async_trait::async_trait;
use berth_oci::{Digest, RepoName};
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, repo_id};
use crate::error::{Error, Result};
use crate::metadata::{
    Expired, Lifecycle, LifecyclePolicyRecord, LifecyclePreviewRecord, Origin, db_size, size_of, unix_now,
};

#[async_trait]
impl Lifecycle for SqliteStore {
    async fn put_lifecycle_policy(&self, repo: &RepoName, policy: &str) -> Result<()> {
        let (repo, policy) = (repo.clone(), policy.to_owned());
        self.write(move |tx| {
            let id = repo_id(tx, &repo)?.ok_or(Error::NotFound)?;
            tx.execute(
                "INSERT INTO lifecycle_policies (repository_id, policy, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (repository_id) DO UPDATE SET policy = excluded.policy, updated_at = excluded.updated_at",
                params![id, policy, unix_now()],
            )?;
            Ok(())
        })
        .await
    }

    async fn lifecycle_policy(&self, repo: &RepoName) -> Result<Option<LifecyclePolicyRecord>> {
        let repo = repo.clone();
        self.with_conn(move |c| {
            Ok(c.query_row(
                "SELECT l.policy, l.updated_at, l.last_evaluated_at, l.last_expired, l.last_kept \
                 FROM lifecycle_policies l \
                 JOIN repositories r ON r.id = l.repository_id WHERE r.name = ?1",
                [repo.as_str()],
                |r| {
                    Ok(LifecyclePolicyRecord {
                        policy: r.get(0)?,
                        updated_at: r.get(1)?,
                        last_evaluated_at: r.get(2)?,
                        last_expired: size_of(r.get(3)?),
                        last_kept: size_of(r.get(4)?),
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn delete_lifecycle_policy(&self, repo: &RepoName) -> Result<bool> {
        let repo = repo.clone();
        self.write(move |tx| {
            let Some(id) = repo_id(tx, &repo)? else { return Ok(false) };
            Ok(tx.execute("DELETE FROM lifecycle_policies WHERE repository_id = ?1", [id])? > 0)
        })
        .await
    }

    async fn lifecycle_repositories(&self) -> Result<Vec<RepoName>> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT r.name FROM lifecycle_policies l JOIN repositories r ON r.id = l.repository_id ORDER BY r.name",
            )?;
            let names = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
            names
                .into_iter()
                .map(|n| n.parse().map_err(|e| Error::Corrupt(format!("repository name {n:?}: {e}"))))
                .collect()
        })
        .await
    }

    async fn lifecycle_evaluated(&self, repo: &RepoName, at: i64, expired: u64, kept: u64) -> Result<()> {
        let repo = repo.clone();
        self.write(move |tx| {
            tx.execute(
                "UPDATE lifecycle_policies SET last_evaluated_at = ?2, last_expired = ?3, last_kept = ?4 \
                 WHERE repository_id = (SELECT id FROM repositories WHERE name = ?1)",
                params![repo.as_str(), at, db_size(expired), db_size(kept)],
            )?;
            Ok(())
        })
        .await
    }

    async fn put_lifecycle_preview(&self, repo: &RepoName, preview: &LifecyclePreviewRecord) -> Result<()> {
        let (repo, preview) = (repo.clone(), preview.clone());
        self.write(move |tx| {
            let id = repo_id(tx, &repo)?.ok_or(Error::NotFound)?;
            tx.execute(
                "INSERT INTO lifecycle_previews (repository_id, policy, result, started_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (repository_id) DO UPDATE SET policy = excluded.policy, result = excluded.result, \
                 started_at = excluded.started_at",
                params![id, preview.policy, preview.result, preview.started_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn lifecycle_preview(&self, repo: &RepoName) -> Result<Option<LifecyclePreviewRecord>> {
        let repo = repo.clone();
        self.with_conn(move |c| {
            Ok(c.query_row(
                "SELECT p.policy, p.result, p.started_at FROM lifecycle_previews p \
                 JOIN repositories r ON r.id = p.repository_id WHERE r.name = ?1",
                [repo.as_str()],
                |r| Ok(LifecyclePreviewRecord { policy: r.get(0)?, result: r.get(1)?, started_at: r.get(2)? }),
            )
            .optional()?)
        })
        .await
    }

    async fn expire_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        tags: &[String],
        origin: &Origin,
    ) -> Result<Expired> {
        let (repo, digest, expected, origin) = (repo.clone(), digest.clone(), tags.to_vec(), origin.clone());
        self.write(move |tx| super::manifests::remove_manifest(tx, &repo, &digest, Some(&expected), &origin)).await
    }
}
