//! [`PostgresStore`]'s repository creation templates ([`Templates`]).

use async_trait::async_trait;
use berth_oci::RepoName;

use super::PostgresStore;
use crate::error::Result;
use crate::metadata::sql::TEMPLATE_COLUMNS;
use crate::metadata::templates::{TemplateColumns, json_list, list_from_column, tags_column, tags_from_column};
use crate::metadata::{NewRepository, RESOURCE_POLICY, TemplateRecord, Templates, unix_now};

fn template_record(r: &tokio_postgres::Row) -> Result<TemplateRecord> {
    TemplateColumns {
        prefix: r.try_get(0)?,
        description: r.try_get(1)?,
        tag_mutability: r.try_get(2)?,
        tag_mutability_exclusions: r.try_get(3)?,
        key_name: r.try_get(4)?,
        lifecycle_policy: r.try_get(5)?,
        repository_policy: r.try_get(6)?,
        resource_tags: r.try_get(7)?,
        applied_for: r.try_get(8)?,
        created_at: r.try_get(9)?,
        updated_at: r.try_get(10)?,
    }
    .into_record()
}

#[async_trait]
impl Templates for PostgresStore {
    async fn create_template(&self, t: &TemplateRecord) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO repository_templates ({TEMPLATE_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) ON CONFLICT (prefix) DO NOTHING"
                ),
                &[
                    &t.prefix,
                    &t.description,
                    &t.tag_mutability,
                    &json_list(&t.tag_mutability_exclusions),
                    &t.key_name,
                    &t.lifecycle_policy,
                    &t.repository_policy,
                    &tags_column(&t.resource_tags),
                    &json_list(&t.applied_for),
                    &unix_now(),
                ],
            )
            .await?;
        Ok(n > 0)
    }

    async fn template(&self, prefix: &str) -> Result<Option<TemplateRecord>> {
        let client = self.client().await?;
        let sql = format!("SELECT {TEMPLATE_COLUMNS} FROM repository_templates WHERE prefix = $1");
        client.query_opt(&sql, &[&prefix]).await?.as_ref().map(template_record).transpose()
    }

    async fn templates(&self) -> Result<Vec<TemplateRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {TEMPLATE_COLUMNS} FROM repository_templates ORDER BY prefix COLLATE \"C\""
            ))
            .await?;
        client.query(&stmt, &[]).await?.iter().map(template_record).collect()
    }

    async fn update_template(&self, t: &TemplateRecord) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE repository_templates SET description = $2, tag_mutability = $3, \
                 tag_mutability_exclusions = $4, key_name = $5, lifecycle_policy = $6, repository_policy = $7, \
                 resource_tags = $8, applied_for = $9, updated_at = $10 WHERE prefix = $1",
                &[
                    &t.prefix,
                    &t.description,
                    &t.tag_mutability,
                    &json_list(&t.tag_mutability_exclusions),
                    &t.key_name,
                    &t.lifecycle_policy,
                    &t.repository_policy,
                    &tags_column(&t.resource_tags),
                    &json_list(&t.applied_for),
                    &unix_now(),
                ],
            )
            .await?;
        Ok(n > 0)
    }

    async fn delete_template(&self, prefix: &str) -> Result<Option<TemplateRecord>> {
        let client = self.client().await?;
        let sql = format!("DELETE FROM repository_templates WHERE prefix = $1 RETURNING {TEMPLATE_COLUMNS}");
        client.query_opt(&sql, &[&prefix]).await?.as_ref().map(template_record).transpose()
    }

    async fn repository_setup(&self, repo: &RepoName) -> Result<Option<NewRepository>> {
        let client = self.client().await?;
        // One statement: one snapshot of the four tables.
        let row = client
            .query_opt(
                "SELECT r.key_name, r.tag_mutability, r.tag_mutability_exclusions, l.policy, \
                 (SELECT p.document FROM policies p WHERE p.target_kind = 'repository' AND p.target = r.name \
                  AND p.name = $2), \
                 COALESCE((SELECT json_agg(json_build_object('Key', t.key, 'Value', t.value) ORDER BY t.key COLLATE \"C\") \
                  FROM repository_tags t WHERE t.repository = r.name)::text, '[]'), r.scan_on_push \
                 FROM repositories r LEFT JOIN lifecycle_policies l ON l.repository_id = r.id WHERE r.name = $1",
                &[&repo.as_str(), &RESOURCE_POLICY],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let what = |column: &str| format!("repository {repo} {column}");
        Ok(Some(NewRepository {
            key: row.try_get(0)?,
            tag_mutability: row.try_get(1)?,
            tag_mutability_exclusions: list_from_column(&what("exclusions"), row.try_get(2)?)?,
            lifecycle_policy: row.try_get(3)?,
            repository_policy: row.try_get(4)?,
            resource_tags: tags_from_column(&what("tags"), row.try_get(5)?)?,
            scan_on_push: row.try_get(6)?,
        }))
    }
}
