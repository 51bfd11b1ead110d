//! [`SqliteStore`]'s pull-through cache rules and tag checks ([`PullThrough`]).

use async_trait::async_trait;
use berth_oci::{RepoName, Tag};
use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::error::Result;
use crate::metadata::pull_through::RULE_COLUMNS;
use crate::metadata::{PullThrough, PullThroughRuleRecord, unix_now};

fn rule_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PullThroughRuleRecord> {
    Ok(PullThroughRuleRecord {
        prefix: r.get(0)?,
        upstream_url: r.get(1)?,
        upstream_prefix: r.get(2)?,
        credentials: r.get(3)?,
        refresh_seconds: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

fn read_rule(c: &rusqlite::Connection, prefix: &str) -> Result<Option<PullThroughRuleRecord>> {
    Ok(c.query_row(
        &format!("SELECT {RULE_COLUMNS} FROM pull_through_rules WHERE prefix = ?1"),
        [prefix],
        rule_from_row,
    )
    .optional()?)
}

#[async_trait]
impl PullThrough for SqliteStore {
    async fn create_pull_through_rule(&self, rule: &PullThroughRuleRecord) -> Result<bool> {
        let r = rule.clone();
        self.write(move |tx| {
            Ok(tx.execute(
                &format!(
                    "INSERT INTO pull_through_rules ({RULE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) \
                     ON CONFLICT (prefix) DO NOTHING"
                ),
                params![r.prefix, r.upstream_url, r.upstream_prefix, r.credentials, r.refresh_seconds, unix_now()],
            )? > 0)
        })
        .await
    }

    async fn pull_through_rule(&self, prefix: &str) -> Result<Option<PullThroughRuleRecord>> {
        let prefix = prefix.to_owned();
        self.with_conn(move |c| read_rule(c, &prefix)).await
    }

    async fn pull_through_rules(&self) -> Result<Vec<PullThroughRuleRecord>> {
        self.with_conn(move |c| {
            let mut stmt =
                c.prepare_cached(&format!("SELECT {RULE_COLUMNS} FROM pull_through_rules ORDER BY prefix"))?;
            let rows = stmt.query_map([], rule_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn update_pull_through_rule(&self, rule: &PullThroughRuleRecord) -> Result<bool> {
        let r = rule.clone();
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE pull_through_rules SET upstream_url = ?2, upstream_prefix = ?3, credentials = ?4, \
                 refresh_seconds = ?5, updated_at = ?6 WHERE prefix = ?1",
                params![r.prefix, r.upstream_url, r.upstream_prefix, r.credentials, r.refresh_seconds, unix_now()],
            )? > 0)
        })
        .await
    }

    async fn delete_pull_through_rule(&self, prefix: &str) -> Result<Option<PullThroughRuleRecord>> {
        let prefix = prefix.to_owned();
        self.write(move |tx| {
            let found = read_rule(tx, &prefix)?;
            if found.is_some() {
                tx.execute("DELETE FROM pull_through_rules WHERE prefix = ?1", [&prefix])?;
            }
            Ok(found)
        })
        .await
    }

    async fn tag_checked_at(&self, repo: &RepoName, tag: &Tag) -> Result<Option<i64>> {
        let (repo, tag) = (repo.as_str().to_owned(), tag.as_str().to_owned());
        self.with_conn(move |c| {
            Ok(c.query_row(
                "SELECT t.checked_at FROM pull_through_tag_checks t JOIN repositories r ON r.id = t.repository_id \
                 WHERE r.name = ?1 AND t.tag = ?2",
                params![repo, tag],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn set_tag_checked(&self, repo: &RepoName, tag: &Tag, at: i64) -> Result<()> {
        let (repo, tag) = (repo.as_str().to_owned(), tag.as_str().to_owned());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO pull_through_tag_checks (repository_id, tag, checked_at) \
                 SELECT id, ?2, ?3 FROM repositories WHERE name = ?1 \
                 ON CONFLICT (repository_id, tag) DO UPDATE SET checked_at = excluded.checked_at",
                params![repo, tag, at],
            )?;
            Ok(())
        })
        .await
    }
}
