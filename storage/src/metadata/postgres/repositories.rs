//! [`PostgresStore`]'s repositories: their creation, keys, settings, listing and deletion ([`Repositories`]).

use async_trait::async_trait;
use berth_oci::RepoName;
use deadpool_postgres::GenericClient;

use super::{ATTEMPTS, PostgresStore, db_limit, emit};
use crate::error::{Error, Result};
use crate::metadata::sql::POLICY_COLUMNS;
use crate::metadata::templates::json_list;
use crate::metadata::{
    CreatedRepository, Event, EventKind, NewRepository, Origin, Page, RESOURCE_POLICY, Repositories, RepositoryDeleted,
    RepositorySettings, TagMutabilitySetting, repository_created, size_of, unix_now,
};

/// The columns [`settings_of`] reads, in its order.
const SETTINGS_COLUMNS: &str = "name, created_at, key_name, tag_mutability, tag_mutability_exclusions, scan_on_push";

/// A repository's settings from a row of [`SETTINGS_COLUMNS`].
fn settings_of(row: &tokio_postgres::Row) -> Result<RepositorySettings> {
    let name: &str = row.try_get(0)?;
    Ok(RepositorySettings {
        name: name.parse().map_err(|e| Error::Corrupt(format!("repository {name}: {e}")))?,
        created_at: row.try_get(1)?,
        key: row.try_get(2)?,
        tag_mutability: setting_of(row.try_get(3)?, row.try_get(4)?)?,
        scan_on_push: row.try_get(5)?,
    })
}

/// A repository's tag mutability from its two columns.
pub(super) fn setting_of(mode: String, exclusions: &str) -> Result<TagMutabilitySetting> {
    let exclusions = serde_json::from_str(exclusions)
        .map_err(|e| Error::Corrupt(format!("tag mutability exclusions {exclusions:?}: {e}")))?;
    Ok(TagMutabilitySetting { mode, exclusions })
}

#[async_trait]
impl Repositories for PostgresStore {
    async fn ping(&self) -> Result<()> {
        self.client().await?.query_one("SELECT 1", &[]).await?;
        Ok(())
    }

    async fn list_repositories(&self, page: &Page) -> Result<Vec<String>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT name FROM repositories WHERE name > $1 ORDER BY name COLLATE \"C\" LIMIT $2")
            .await?;
        let rows = client.query(&stmt, &[&page.last.as_deref().unwrap_or_default(), &db_limit(page)]).await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    async fn repository_key(&self, repo: &RepoName) -> Result<Option<Option<String>>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached("SELECT key_name FROM repositories WHERE name = $1").await?;
        let row = client.query_opt(&stmt, &[&repo.as_str()]).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn create_repository(
        &self,
        repo: &RepoName,
        new: &NewRepository,
        origin: &Origin,
    ) -> Result<CreatedRepository> {
        let exclusions = json_list(&new.tag_mutability_exclusions);
        transaction!(self, |tx| {
            let mut found = None;
            for _ in 0..ATTEMPTS {
                let now = unix_now();
                let inserted = tx
                    .query_opt(
                        "INSERT INTO repositories (name, created_at, key_name, tag_mutability, \
                         tag_mutability_exclusions, scan_on_push) VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (name) DO NOTHING RETURNING id, key_name",
                        &[&repo.as_str(), &now, &new.key, &new.tag_mutability, &exclusions, &new.scan_on_push],
                    )
                    .await?;
                if let Some(row) = inserted {
                    write_settings(&tx, row.try_get(0)?, repo, new, now).await?;
                    emit(&tx, &[repository_created(repo, origin)]).await?;
                    found = Some(CreatedRepository { key: row.try_get(1)?, created: true });
                    break;
                }
                // Another transaction created it and committed (ON CONFLICT waited for it); this
                // new statement's snapshot sees it, unless a deletion committed meanwhile.
                let existing =
                    tx.query_opt("SELECT key_name FROM repositories WHERE name = $1", &[&repo.as_str()]).await?;
                if let Some(row) = existing {
                    found = Some(CreatedRepository { key: row.try_get(0)?, created: false });
                    break;
                }
            }
            found.ok_or(Error::Conflict)?
        })
    }

    async fn delete_repository(&self, repo: &RepoName, force: bool, origin: &Origin) -> Result<RepositoryDeleted> {
        let name = repo.as_str();
        transaction!(self, |tx| {
            // Locked for deletion first: a push holding the row's share lock (`ensure_repo`)
            // commits before this goes on, and what it wrote is deleted below (new statements,
            // new snapshots); a push that comes later waits, then finds the row gone and
            // creates the repository anew.
            let locked = tx.query_opt("SELECT id FROM repositories WHERE name = $1 FOR UPDATE", &[&name]).await?;
            match locked {
                None => RepositoryDeleted::NotFound,
                Some(row) => {
                    let id: i64 = row.try_get(0)?;
                    let manifests: i64 = tx
                        .query_one("SELECT count(*) FROM manifests WHERE repository_id = $1", &[&id])
                        .await?
                        .try_get(0)?;
                    if manifests > 0 && !force {
                        RepositoryDeleted::NotEmpty { manifests: size_of(manifests) }
                    } else {
                        tx.execute("DELETE FROM tags WHERE repository_id = $1", &[&id]).await?;
                        // References go with their manifests (ON DELETE CASCADE).
                        tx.execute("DELETE FROM manifests WHERE repository_id = $1", &[&id]).await?;
                        // The blobs themselves stay: collecting them is the garbage collector's job.
                        tx.execute("DELETE FROM repository_blobs WHERE repository_id = $1", &[&id]).await?;
                        tx.execute("DELETE FROM uploads WHERE repository = $1", &[&name]).await?;
                        tx.execute("DELETE FROM repository_tags WHERE repository = $1", &[&name]).await?;
                        tx.execute("DELETE FROM policies WHERE target_kind = 'repository' AND target = $1", &[&name])
                            .await?;
                        tx.execute("DELETE FROM repositories WHERE id = $1", &[&id]).await?;
                        emit(&tx, &[Event::new(EventKind::RepositoryDelete, name, origin)]).await?;
                        RepositoryDeleted::Deleted
                    }
                }
            }
        })
    }

    async fn set_repository_key(&self, repo: &RepoName, key: &str) -> Result<bool> {
        // A racing setter waits for this row's lock, re-checks `key_name IS NULL`, and loses.
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE repositories SET key_name = $2 WHERE name = $1 AND key_name IS NULL",
                &[&repo.as_str(), &key],
            )
            .await?;
        Ok(n > 0)
    }

    async fn repository_keys(&self) -> Result<Vec<(RepoName, Option<String>)>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached("SELECT name, key_name FROM repositories ORDER BY name COLLATE \"C\"").await?;
        let rows = client.query(&stmt, &[]).await?;
        rows.iter()
            .map(|r| {
                let name: &str = r.try_get(0)?;
                let repo = name.parse().map_err(|e| Error::Corrupt(format!("repository {name}: {e}")))?;
                Ok((repo, r.try_get(1)?))
            })
            .collect()
    }

    async fn repository_settings(&self, repo: &RepoName) -> Result<Option<RepositorySettings>> {
        let client = self.client().await?;
        let stmt =
            client.prepare_cached(&format!("SELECT {SETTINGS_COLUMNS} FROM repositories WHERE name = $1")).await?;
        let row = client.query_opt(&stmt, &[&repo.as_str()]).await?;
        row.as_ref().map(settings_of).transpose()
    }

    async fn repository_settings_page(&self, page: &Page) -> Result<Vec<RepositorySettings>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {SETTINGS_COLUMNS} FROM repositories WHERE name > $1 ORDER BY name COLLATE \"C\" LIMIT $2"
            ))
            .await?;
        let rows = client.query(&stmt, &[&page.last.as_deref().unwrap_or_default(), &db_limit(page)]).await?;
        rows.iter().map(settings_of).collect()
    }

    async fn repository_settings_of(&self, repos: &[RepoName]) -> Result<Vec<RepositorySettings>> {
        let names: Vec<&str> = repos.iter().map(RepoName::as_str).collect();
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {SETTINGS_COLUMNS} FROM repositories WHERE name = ANY($1) ORDER BY name COLLATE \"C\""
            ))
            .await?;
        let rows = client.query(&stmt, &[&names]).await?;
        rows.iter().map(settings_of).collect()
    }

    async fn set_scan_on_push(&self, repo: &RepoName, scan_on_push: bool) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute("UPDATE repositories SET scan_on_push = $2 WHERE name = $1", &[&repo.as_str(), &scan_on_push])
            .await?;
        Ok(n > 0)
    }

    async fn set_tag_mutability(&self, repo: &RepoName, mode: &str, exclusions: &[String]) -> Result<bool> {
        let exclusions = serde_json::to_string(exclusions).map_err(|e| Error::Corrupt(e.to_string()))?;
        // Waits for pushes holding the row's share lock (they decided under the old setting).
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE repositories SET tag_mutability = $2, tag_mutability_exclusions = $3 WHERE name = $1",
                &[&repo.as_str(), &mode, &exclusions],
            )
            .await?;
        Ok(n > 0)
    }
}

/// A new repository's settings beyond its row: its lifecycle policy, and its repository policy
/// and resource tags unless some were stored under its name before it existed.
async fn write_settings(
    tx: &impl GenericClient,
    id: i64,
    repo: &RepoName,
    new: &NewRepository,
    now: i64,
) -> Result<()> {
    if let Some(policy) = &new.lifecycle_policy {
        tx.execute(
            "INSERT INTO lifecycle_policies (repository_id, policy, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (repository_id) DO NOTHING",
            &[&id, policy, &now],
        )
        .await?;
    }
    if let Some(document) = &new.repository_policy {
        tx.execute(
            &format!(
                "INSERT INTO policies ({POLICY_COLUMNS}) VALUES ('repository', $1, $2, $3, $4) \
                 ON CONFLICT (target_kind, target, name) DO NOTHING"
            ),
            &[&repo.as_str(), &RESOURCE_POLICY, document, &now],
        )
        .await?;
    }
    for (key, value) in &new.resource_tags {
        tx.execute(
            "INSERT INTO repository_tags (repository, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (repository, key) DO NOTHING",
            &[&repo.as_str(), key, value],
        )
        .await?;
    }
    Ok(())
}
