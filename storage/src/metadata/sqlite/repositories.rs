//! [`SqliteStore`]'s repositories: their creation, keys, settings, listing and deletion ([`Repositories`]).

use async_trait::async_trait;
use berth_oci::RepoName;
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, delete_policies_of, emit, limit_of, repo_id};
use crate::error::{Error, Result};
use crate::metadata::sql::POLICY_COLUMNS;
use crate::metadata::templates::json_list;
use crate::metadata::{
    CreatedRepository, Event, EventKind, NewRepository, Origin, Page, RESOURCE_POLICY, Repositories, RepositoryDeleted,
    RepositorySettings, TagMutabilitySetting, repository_created, size_of, unix_now,
};

/// The tag mutability of the repository with row id `id`.
pub(super) fn tag_mutability(conn: &rusqlite::Connection, id: i64) -> Result<TagMutabilitySetting> {
    let (mode, exclusions): (String, String) = conn.query_row(
        "SELECT tag_mutability, tag_mutability_exclusions FROM repositories WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    setting_of(mode, &exclusions)
}

/// The columns [`settings_row`] reads, in its order.
const SETTINGS_COLUMNS: &str = "name, created_at, key_name, tag_mutability, tag_mutability_exclusions, scan_on_push";

/// A repository's settings from a row of [`SETTINGS_COLUMNS`].
fn settings_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, i64, Option<String>, String, String, bool)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn settings_of(row: (String, i64, Option<String>, String, String, bool)) -> Result<RepositorySettings> {
    let (name, created_at, key, mode, exclusions, scan_on_push) = row;
    let name = name.parse().map_err(|e| Error::Corrupt(format!("repository {name}: {e}")))?;
    Ok(RepositorySettings { name, created_at, key, tag_mutability: setting_of(mode, &exclusions)?, scan_on_push })
}

fn setting_of(mode: String, exclusions: &str) -> Result<TagMutabilitySetting> {
    let exclusions = serde_json::from_str(exclusions)
        .map_err(|e| Error::Corrupt(format!("tag mutability exclusions {exclusions:?}: {e}")))?;
    Ok(TagMutabilitySetting { mode, exclusions })
}

#[async_trait]
impl Repositories for SqliteStore {
    async fn ping(&self) -> Result<()> {
        self.with_conn(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map(|_| ())?)).await
    }

    async fn list_repositories(&self, page: &Page) -> Result<Vec<String>> {
        let page = page.clone();
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached("SELECT name FROM repositories WHERE name > ?1 ORDER BY name LIMIT ?2")?;
            let rows = stmt.query_map(params![page.last.unwrap_or_default(), limit_of(page.limit)], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
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

    async fn create_repository(
        &self,
        repo: &RepoName,
        new: &NewRepository,
        origin: &Origin,
    ) -> Result<CreatedRepository> {
        let (repo, new, origin) = (repo.clone(), new.clone(), origin.clone());
        self.write(move |tx| {
            let now = unix_now();
            let created = tx.execute(
                "INSERT INTO repositories (name, created_at, key_name, tag_mutability, tag_mutability_exclusions, \
                 scan_on_push) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (name) DO NOTHING",
                params![
                    repo.as_str(),
                    now,
                    new.key,
                    new.tag_mutability,
                    json_list(&new.tag_mutability_exclusions),
                    new.scan_on_push
                ],
            )? > 0;
            let (id, key): (i64, Option<String>) =
                tx.query_row("SELECT id, key_name FROM repositories WHERE name = ?1", [repo.as_str()], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            if created {
                write_settings(tx, id, &repo, &new, now)?;
                emit(tx, &[repository_created(&repo, &origin)])?;
            }
            Ok(CreatedRepository { key, created })
        })
        .await
    }

    async fn delete_repository(&self, repo: &RepoName, force: bool, origin: &Origin) -> Result<RepositoryDeleted> {
        let (repo, origin) = (repo.clone(), origin.clone());
        self.write(move |tx| {
            let Some(id) = repo_id(tx, &repo)? else { return Ok(RepositoryDeleted::NotFound) };
            let manifests: i64 =
                tx.query_row("SELECT COUNT(*) FROM manifests WHERE repository_id = ?1", [id], |r| r.get(0))?;
            if manifests > 0 && !force {
                return Ok(RepositoryDeleted::NotEmpty { manifests: size_of(manifests) });
            }
            let name = repo.as_str();
            tx.execute("DELETE FROM tags WHERE repository_id = ?1", [id])?;
            // References go with their manifests (ON DELETE CASCADE).
            tx.execute("DELETE FROM manifests WHERE repository_id = ?1", [id])?;
            // The blobs themselves stay: collecting them is the garbage collector's job.
            tx.execute("DELETE FROM repository_blobs WHERE repository_id = ?1", [id])?;
            tx.execute("DELETE FROM uploads WHERE repository = ?1", [name])?;
            tx.execute("DELETE FROM repository_tags WHERE repository = ?1", [name])?;
            delete_policies_of(tx, "repository", name)?;
            tx.execute("DELETE FROM repositories WHERE id = ?1", [id])?;
            emit(tx, &[Event::new(EventKind::RepositoryDelete, name, &origin)])?;
            Ok(RepositoryDeleted::Deleted)
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

    async fn repository_settings(&self, repo: &RepoName) -> Result<Option<RepositorySettings>> {
        let repo = repo.clone();
        self.with_conn(move |c| {
            let row = c
                .query_row(
                    &format!("SELECT {SETTINGS_COLUMNS} FROM repositories WHERE name = ?1"),
                    [repo.as_str()],
                    settings_row,
                )
                .optional()?;
            row.map(settings_of).transpose()
        })
        .await
    }

    async fn repository_settings_page(&self, page: &Page) -> Result<Vec<RepositorySettings>> {
        let page = page.clone();
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {SETTINGS_COLUMNS} FROM repositories WHERE name > ?1 ORDER BY name LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![page.last.unwrap_or_default(), limit_of(page.limit)], settings_row)?;
            rows.map(|r| settings_of(r?)).collect()
        })
        .await
    }

    async fn repository_settings_of(&self, repos: &[RepoName]) -> Result<Vec<RepositorySettings>> {
        let names = serde_json::to_string(&repos.iter().map(RepoName::as_str).collect::<Vec<_>>())
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {SETTINGS_COLUMNS} FROM repositories WHERE name IN (SELECT value FROM json_each(?1)) \
                 ORDER BY name"
            ))?;
            let rows = stmt.query_map([names], settings_row)?;
            rows.map(|r| settings_of(r?)).collect()
        })
        .await
    }

    async fn set_scan_on_push(&self, repo: &RepoName, scan_on_push: bool) -> Result<bool> {
        let repo = repo.to_string();
        self.write(move |tx| {
            Ok(tx.execute("UPDATE repositories SET scan_on_push = ?2 WHERE name = ?1", params![repo, scan_on_push])?
                > 0)
        })
        .await
    }

    async fn set_tag_mutability(&self, repo: &RepoName, mode: &str, exclusions: &[String]) -> Result<bool> {
        let (repo, mode) = (repo.to_string(), mode.to_owned());
        let exclusions = serde_json::to_string(exclusions).map_err(|e| Error::Corrupt(e.to_string()))?;
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE repositories SET tag_mutability = ?2, tag_mutability_exclusions = ?3 WHERE name = ?1",
                params![repo, mode, exclusions],
            )? > 0)
        })
        .await
    }
}

/// A new repository's settings beyond its row: its lifecycle policy, and its repository policy
/// and resource tags unless some were stored under its name before it existed.
fn write_settings(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    repo: &RepoName,
    new: &NewRepository,
    now: i64,
) -> Result<()> {
    if let Some(policy) = &new.lifecycle_policy {
        tx.execute(
            "INSERT INTO lifecycle_policies (repository_id, policy, updated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (repository_id) DO NOTHING",
            params![id, policy, now],
        )?;
    }
    if let Some(document) = &new.repository_policy {
        tx.execute(
            &format!(
                "INSERT INTO policies ({POLICY_COLUMNS}) VALUES ('repository', ?1, ?2, ?3, ?4) \
                 ON CONFLICT (target_kind, target, name) DO NOTHING"
            ),
            params![repo.as_str(), RESOURCE_POLICY, document, now],
        )?;
    }
    for (key, value) in &new.resource_tags {
        tx.execute(
            "INSERT INTO repository_tags (repository, key, value) VALUES (?1, ?2, ?3) \
             ON CONFLICT (repository, key) DO NOTHING",
            params![repo.as_str(), key, value],
        )?;
    }
    Ok(())
}
