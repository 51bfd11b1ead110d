//! [`SqliteStore`]'s repository creation templates ([`Templates`]).

use async_trait::async_trait;
use berth_oci::RepoName;
use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::error::Result;
use crate::metadata::sql::TEMPLATE_COLUMNS;
use crate::metadata::templates::{TemplateColumns, json_list, list_from_column, tags_column};
use crate::metadata::{NewRepository, RESOURCE_POLICY, TemplateRecord, Templates, unix_now};

fn template_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TemplateColumns> {
    Ok(TemplateColumns {
        prefix: r.get(0)?,
        description: r.get(1)?,
        tag_mutability: r.get(2)?,
        tag_mutability_exclusions: r.get(3)?,
        key_name: r.get(4)?,
        lifecycle_policy: r.get(5)?,
        repository_policy: r.get(6)?,
        resource_tags: r.get(7)?,
        applied_for: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
    })
}

fn read_template(c: &rusqlite::Connection, prefix: &str) -> Result<Option<TemplateRecord>> {
    let row = c
        .query_row(
            &format!("SELECT {TEMPLATE_COLUMNS} FROM repository_templates WHERE prefix = ?1"),
            [prefix],
            template_from_row,
        )
        .optional()?;
    row.map(TemplateColumns::into_record).transpose()
}

#[async_trait]
impl Templates for SqliteStore {
    async fn create_template(&self, t: &TemplateRecord) -> Result<bool> {
        let t = t.clone();
        self.write(move |tx| {
            let now = unix_now();
            Ok(tx.execute(
                &format!(
                    "INSERT INTO repository_templates ({TEMPLATE_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10) ON CONFLICT (prefix) DO NOTHING"
                ),
                params![
                    t.prefix,
                    t.description,
                    t.tag_mutability,
                    json_list(&t.tag_mutability_exclusions),
                    t.key_name,
                    t.lifecycle_policy,
                    t.repository_policy,
                    tags_column(&t.resource_tags),
                    json_list(&t.applied_for),
                    now
                ],
            )? > 0)
        })
        .await
    }

    async fn template(&self, prefix: &str) -> Result<Option<TemplateRecord>> {
        let prefix = prefix.to_owned();
        self.with_conn(move |c| read_template(c, &prefix)).await
    }

    async fn templates(&self) -> Result<Vec<TemplateRecord>> {
        self.with_conn(move |c| {
            let mut stmt =
                c.prepare_cached(&format!("SELECT {TEMPLATE_COLUMNS} FROM repository_templates ORDER BY prefix"))?;
            let rows = stmt.query_map([], template_from_row)?;
            rows.map(|r| r?.into_record()).collect()
        })
        .await
    }

    async fn update_template(&self, t: &TemplateRecord) -> Result<bool> {
        let t = t.clone();
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE repository_templates SET description = ?2, tag_mutability = ?3, \
                 tag_mutability_exclusions = ?4, key_name = ?5, lifecycle_policy = ?6, repository_policy = ?7, \
                 resource_tags = ?8, applied_for = ?9, updated_at = ?10 WHERE prefix = ?1",
                params![
                    t.prefix,
                    t.description,
                    t.tag_mutability,
                    json_list(&t.tag_mutability_exclusions),
                    t.key_name,
                    t.lifecycle_policy,
                    t.repository_policy,
                    tags_column(&t.resource_tags),
                    json_list(&t.applied_for),
                    unix_now()
                ],
            )? > 0)
        })
        .await
    }

    async fn delete_template(&self, prefix: &str) -> Result<Option<TemplateRecord>> {
        let prefix = prefix.to_owned();
        self.write(move |tx| {
            let found = read_template(tx, &prefix)?;
            if found.is_some() {
                tx.execute("DELETE FROM repository_templates WHERE prefix = ?1", [&prefix])?;
            }
            Ok(found)
        })
        .await
    }

    async fn repository_setup(&self, repo: &RepoName) -> Result<Option<NewRepository>> {
        let repo = repo.as_str().to_owned();
        self.with_conn(move |c| {
            // One read transaction: one snapshot of the four tables.
            let tx = c.transaction()?;
            let row = tx
                .query_row(
                    "SELECT r.key_name, r.tag_mutability, r.tag_mutability_exclusions, l.policy, r.scan_on_push \
                     FROM repositories r LEFT JOIN lifecycle_policies l ON l.repository_id = r.id WHERE r.name = ?1",
                    [&repo],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()?;
            let Some((key, tag_mutability, exclusions, lifecycle_policy, scan_on_push)) = row else { return Ok(None) };
            let repository_policy = tx
                .query_row(
                    "SELECT document FROM policies WHERE target_kind = 'repository' AND target = ?1 AND name = ?2",
                    params![repo, RESOURCE_POLICY],
                    |r| r.get(0),
                )
                .optional()?;
            let mut stmt =
                tx.prepare_cached("SELECT key, value FROM repository_tags WHERE repository = ?1 ORDER BY key")?;
            let resource_tags =
                stmt.query_map([&repo], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
            drop(stmt);
            Ok(Some(NewRepository {
                key,
                tag_mutability,
                tag_mutability_exclusions: list_from_column(&format!("repository {repo} exclusions"), &exclusions)?,
                lifecycle_policy,
                repository_policy,
                resource_tags,
                scan_on_push,
            }))
        })
        .await
    }
}
