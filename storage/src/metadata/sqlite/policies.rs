//! [`SqliteStore`]'s policies and repository tags ([`Policies`]).

use std::collections::BTreeMap;

use async_trait::async_trait;
use berth_oci::RepoName;
use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::error::Result;
use crate::metadata::sql::POLICY_COLUMNS;
use crate::metadata::{Policies, PolicyRecord, PolicySet, PolicyTarget, unix_now};

/// A policy's columns as read: target kind, target, name, document, updated_at.
type PolicyRow = (String, String, String, String, i64);

fn policy_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PolicyRow> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
}

fn policy_record(row: PolicyRow) -> Result<PolicyRecord> {
    let (kind, target, name, document, updated_at) = row;
    Ok(PolicyRecord { target: PolicyTarget::from_columns(&kind, target)?, name, document, updated_at })
}

#[async_trait]
impl Policies for SqliteStore {
    async fn put_policy(&self, target: &PolicyTarget, name: &str, document: &str) -> Result<bool> {
        let (target, name, document) = (target.clone(), name.to_owned(), document.to_owned());
        self.write(move |tx| {
            let owner = match &target {
                PolicyTarget::User(user) => Some(("SELECT 1 FROM users WHERE name = ?1", user)),
                PolicyTarget::AccessKey(id) => Some(("SELECT 1 FROM access_keys WHERE id = ?1", id)),
                PolicyTarget::Repository(_) | PolicyTarget::Registry => None,
            };
            if let Some((sql, key)) = owner
                && tx.query_row(sql, [key], |_| Ok(())).optional()?.is_none()
            {
                return Ok(false);
            }
            tx.execute(
                &format!(
                    "INSERT INTO policies ({POLICY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (target_kind, target, name) DO UPDATE SET document = excluded.document, \
                     updated_at = excluded.updated_at"
                ),
                params![target.kind(), target.column(), name, document, unix_now()],
            )?;
            Ok(true)
        })
        .await
    }

    async fn delete_policy(&self, target: &PolicyTarget, name: &str) -> Result<bool> {
        let (kind, column, name) = (target.kind(), target.column().to_owned(), name.to_owned());
        self.write(move |tx| {
            Ok(tx.execute(
                "DELETE FROM policies WHERE target_kind = ?1 AND target = ?2 AND name = ?3",
                params![kind, column, name],
            )? > 0)
        })
        .await
    }

    async fn policies(&self, target: &PolicyTarget) -> Result<Vec<PolicyRecord>> {
        let (kind, column) = (target.kind(), target.column().to_owned());
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {POLICY_COLUMNS} FROM policies WHERE target_kind = ?1 AND target = ?2 ORDER BY name"
            ))?;
            let rows = stmt.query_map(params![kind, column], policy_from_row)?;
            rows.map(|r| policy_record(r?)).collect()
        })
        .await
    }

    async fn policies_for_request(
        &self,
        user: Option<&str>,
        access_key: Option<&str>,
        repo: Option<&RepoName>,
    ) -> Result<PolicySet> {
        let args = (user.map(str::to_owned), access_key.map(str::to_owned), repo.map(|r| r.as_str().to_owned()));
        self.with_conn(move |c| {
            // One statement: one snapshot, with no transaction to open and close.
            let mut stmt = c.prepare_cached(POLICIES_FOR_REQUEST)?;
            let rows = stmt.query_map(params![args.0, args.1, args.2], policy_from_row)?;
            let mut set = PolicySet::default();
            for row in rows {
                let row = row?;
                if row.0 == "tag" {
                    set.resource_tags.insert(row.1, row.2);
                    continue;
                }
                set.add(policy_record(row)?);
            }
            set.sort();
            Ok(set)
        })
        .await
    }

    async fn repository_tags(&self, repo: &RepoName) -> Result<BTreeMap<String, String>> {
        let repo = repo.as_str().to_owned();
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached("SELECT key, value FROM repository_tags WHERE repository = ?1")?;
            let rows = stmt.query_map([repo], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn tag_repository(&self, repo: &RepoName, set: &BTreeMap<String, String>, remove: &[String]) -> Result<()> {
        let (repo, set, remove) = (repo.as_str().to_owned(), set.clone(), remove.to_vec());
        self.write(move |tx| {
            for (key, value) in &set {
                tx.execute(
                    "INSERT INTO repository_tags (repository, key, value) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (repository, key) DO UPDATE SET value = excluded.value",
                    params![repo, key, value],
                )?;
            }
            for key in &remove {
                tx.execute("DELETE FROM repository_tags WHERE repository = ?1 AND key = ?2", params![repo, key])?;
            }
            Ok(())
        })
        .await
    }
}

/// The policies and tags one request needs, as policy rows: `?1` the user, `?2` the access
/// key, `?3` the repository (each may be NULL, which matches nothing). Tags come back as rows
/// of kind `tag` with the key in `target` and the value in `name`.
const POLICIES_FOR_REQUEST: &str = "SELECT target_kind, target, name, document, updated_at FROM policies \
    WHERE (target_kind = 'user' AND target = ?1) OR (target_kind = 'access_key' AND target = ?2) \
    OR (target_kind = 'repository' AND target = ?3) OR (target_kind = 'registry' AND target = '') \
    UNION ALL SELECT 'tag', key, value, '', 0 FROM repository_tags WHERE repository = ?3";
