//! [`PostgresStore`]'s policies and repository tags ([`Policies`]).

use std::collections::BTreeMap;

use async_trait::async_trait;
use berth_oci::RepoName;
use deadpool_postgres::GenericClient;

use super::PostgresStore;
use crate::error::Result;
use crate::metadata::sql::POLICY_COLUMNS;
use crate::metadata::{Policies, PolicyRecord, PolicySet, PolicyTarget, unix_now};

fn policy_record(row: &tokio_postgres::Row) -> Result<PolicyRecord> {
    Ok(PolicyRecord {
        target: PolicyTarget::from_columns(row.try_get(0)?, row.try_get(1)?)?,
        name: row.try_get(2)?,
        document: row.try_get(3)?,
        updated_at: row.try_get(4)?,
    })
}

/// The policies and tags one request needs, as policy rows: `$1` the user, `$2` the access
/// key, `$3` the repository (each may be NULL, which matches nothing). Tags come back as rows
/// of kind `tag` with the key in `target` and the value in `name`.
const POLICIES_FOR_REQUEST: &str = "SELECT target_kind, target, name, document, updated_at FROM policies \
    WHERE (target_kind = 'user' AND target = $1::text) OR (target_kind = 'access_key' AND target = $2::text) \
    OR (target_kind = 'repository' AND target = $3::text) OR (target_kind = 'registry' AND target = '') \
    UNION ALL SELECT 'tag', key, value, '', 0::bigint FROM repository_tags WHERE repository = $3::text";

#[async_trait]
impl Policies for PostgresStore {
    async fn put_policy(&self, target: &PolicyTarget, name: &str, document: &str) -> Result<bool> {
        let owner = match target {
            PolicyTarget::User(user) => Some(("SELECT 1 FROM users WHERE name = $1 FOR KEY SHARE", user)),
            PolicyTarget::AccessKey(id) => Some(("SELECT 1 FROM access_keys WHERE id = $1 FOR KEY SHARE", id)),
            PolicyTarget::Repository(_) | PolicyTarget::Registry => None,
        };
        transaction!(self, |tx| {
            // The owner stays locked until commit: its deletion waits, then deletes this policy.
            let owned = match owner {
                Some((sql, key)) => tx.query_opt(sql, &[key]).await?.is_some(),
                None => true,
            };
            if owned {
                tx.execute(
                    &format!(
                        "INSERT INTO policies ({POLICY_COLUMNS}) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (target_kind, target, name) DO UPDATE SET document = excluded.document, \
                         updated_at = excluded.updated_at"
                    ),
                    &[&target.kind(), &target.column(), &name, &document, &unix_now()],
                )
                .await?;
            }
            owned
        })
    }

    async fn delete_policy(&self, target: &PolicyTarget, name: &str) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM policies WHERE target_kind = $1 AND target = $2 AND name = $3",
                &[&target.kind(), &target.column(), &name],
            )
            .await?;
        Ok(n > 0)
    }

    async fn policies(&self, target: &PolicyTarget) -> Result<Vec<PolicyRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {POLICY_COLUMNS} FROM policies WHERE target_kind = $1 AND target = $2 \
                 ORDER BY name COLLATE \"C\""
            ))
            .await?;
        client.query(&stmt, &[&target.kind(), &target.column()]).await?.iter().map(policy_record).collect()
    }

    async fn policies_for_request(
        &self,
        user: Option<&str>,
        access_key: Option<&str>,
        repo: Option<&RepoName>,
    ) -> Result<PolicySet> {
        // One statement: one round trip and one snapshot.
        let client = self.client().await?;
        let stmt = client.prepare_cached(POLICIES_FOR_REQUEST).await?;
        let rows = client.query(&stmt, &[&user, &access_key, &repo.map(RepoName::as_str)]).await?;
        let mut set = PolicySet::default();
        for row in &rows {
            if row.try_get::<_, &str>(0)? == "tag" {
                set.resource_tags.insert(row.try_get(1)?, row.try_get(2)?);
                continue;
            }
            set.add(policy_record(row)?);
        }
        set.sort();
        Ok(set)
    }

    async fn repository_tags(&self, repo: &RepoName) -> Result<BTreeMap<String, String>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached("SELECT key, value FROM repository_tags WHERE repository = $1").await?;
        let rows = client.query(&stmt, &[&repo.as_str()]).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    async fn tag_repository(&self, repo: &RepoName, set: &BTreeMap<String, String>, remove: &[String]) -> Result<()> {
        // Keys in sorted order (a BTreeMap's), so two edits of the same keys lock them in the
        // same order.
        let keys: Vec<&str> = set.keys().map(String::as_str).collect();
        let values: Vec<&str> = set.values().map(String::as_str).collect();
        transaction!(self, |tx| {
            if !keys.is_empty() {
                tx.execute(
                    "INSERT INTO repository_tags (repository, key, value) \
                     SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS t (k, v) \
                     ON CONFLICT (repository, key) DO UPDATE SET value = excluded.value",
                    &[&repo.as_str(), &keys, &values],
                )
                .await?;
            }
            if !remove.is_empty() {
                tx.execute(
                    "DELETE FROM repository_tags WHERE repository = $1 AND key = ANY($2)",
                    &[&repo.as_str(), &remove],
                )
                .await?;
            }
        })
    }
}
