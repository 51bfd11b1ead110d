//! [`PostgresStore`]'s pull-through cache rules and tag checks ([`PullThrough`]).

use async_trait::async_trait;
use berth_oci::{RepoName, Tag};

use super::PostgresStore;
use crate::error::Result;
use crate::metadata::pull_through::RULE_COLUMNS;
use crate::metadata::{PullThrough, PullThroughRuleRecord, unix_now};

fn rule_record(r: &tokio_postgres::Row) -> Result<PullThroughRuleRecord> {
    Ok(PullThroughRuleRecord {
        prefix: r.try_get(0)?,
        upstream_url: r.try_get(1)?,
        upstream_prefix: r.try_get(2)?,
        credentials: r.try_get(3)?,
        refresh_seconds: r.try_get(4)?,
        created_at: r.try_get(5)?,
        updated_at: r.try_get(6)?,
    })
}

#[async_trait]
impl PullThrough for PostgresStore {
    async fn create_pull_through_rule(&self, r: &PullThroughRuleRecord) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO pull_through_rules ({RULE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $6) \
                     ON CONFLICT (prefix) DO NOTHING"
                ),
                &[&r.prefix, &r.upstream_url, &r.upstream_prefix, &r.credentials, &r.refresh_seconds, &unix_now()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn pull_through_rule(&self, prefix: &str) -> Result<Option<PullThroughRuleRecord>> {
        let client = self.client().await?;
        let sql = format!("SELECT {RULE_COLUMNS} FROM pull_through_rules WHERE prefix = $1");
        client.query_opt(&sql, &[&prefix]).await?.as_ref().map(rule_record).transpose()
    }

    async fn pull_through_rules(&self) -> Result<Vec<PullThroughRuleRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!("SELECT {RULE_COLUMNS} FROM pull_through_rules ORDER BY prefix COLLATE \"C\""))
            .await?;
        client.query(&stmt, &[]).await?.iter().map(rule_record).collect()
    }

    async fn update_pull_through_rule(&self, r: &PullThroughRuleRecord) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE pull_through_rules SET upstream_url = $2, upstream_prefix = $3, credentials = $4, \
                 refresh_seconds = $5, updated_at = $6 WHERE prefix = $1",
                &[&r.prefix, &r.upstream_url, &r.upstream_prefix, &r.credentials, &r.refresh_seconds, &unix_now()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn delete_pull_through_rule(&self, prefix: &str) -> Result<Option<PullThroughRuleRecord>> {
        let client = self.client().await?;
        let sql = format!("DELETE FROM pull_through_rules WHERE prefix = $1 RETURNING {RULE_COLUMNS}");
        client.query_opt(&sql, &[&prefix]).await?.as_ref().map(rule_record).transpose()
    }

    async fn tag_checked_at(&self, repo: &RepoName, tag: &Tag) -> Result<Option<i64>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT t.checked_at FROM pull_through_tag_checks t JOIN repositories r ON r.id = t.repository_id \
                 WHERE r.name = $1 AND t.tag = $2",
                &[&repo.as_str(), &tag.as_str()],
            )
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn set_tag_checked(&self, repo: &RepoName, tag: &Tag, at: i64) -> Result<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO pull_through_tag_checks (repository_id, tag, checked_at) \
                 SELECT id, $2, $3 FROM repositories WHERE name = $1 \
                 ON CONFLICT (repository_id, tag) DO UPDATE SET checked_at = excluded.checked_at",
                &[&repo.as_str(), &tag.as_str(), &at],
            )
            .await?;
        Ok(())
    }
}
