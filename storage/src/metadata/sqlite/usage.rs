//! [`UsageStore`] on SQLite: the counters of `sqlite_v8.sql` read back, quota records.

use async_trait::async_trait;
use berth_oci::RepoName;
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, emit, limit_of};
use crate::error::{Error, Result};
use crate::metadata::sql::{QUOTA_COLUMNS, REPOSITORY_USAGE};
use crate::metadata::usage::{
    KeyUsage, QuotaDimension, QuotaRecord, QuotaScope, RegistryUsage, RepositoryUsage, ScopeUsage, UsageStore,
};
use crate::metadata::{Event, Page, db_size, size_of, unix_now};

fn repository_usage_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RepositoryUsage> {
    Ok(RepositoryUsage {
        repository: r.get(0)?,
        bytes: size_of(r.get(1)?),
        blobs: size_of(r.get(2)?),
        manifests: size_of(r.get(3)?),
        tags: size_of(r.get(4)?),
    })
}

fn quota_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, Option<i64>, Option<i64>, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

pub(crate) fn quota_record(row: (String, Option<i64>, Option<i64>, i64)) -> Result<QuotaRecord> {
    let (scope, max_bytes, max_images, updated_at) = row;
    Ok(QuotaRecord {
        scope: scope.parse().map_err(Error::Corrupt)?,
        max_bytes: max_bytes.map(size_of),
        max_images: max_images.map(size_of),
        updated_at,
    })
}

#[async_trait]
impl UsageStore for SqliteStore {
    async fn repository_usage(&self, repo: &RepoName) -> Result<Option<RepositoryUsage>> {
        let repo = repo.to_string();
        self.with_conn(move |c| {
            Ok(c.query_row(&format!("{REPOSITORY_USAGE} WHERE r.name = ?1"), [repo], repository_usage_row)
                .optional()?)
        })
        .await
    }

    async fn repositories_usage(&self, page: &Page) -> Result<Vec<RepositoryUsage>> {
        let page = page.clone();
        self.with_conn(move |c| {
            let mut stmt =
                c.prepare_cached(&format!("{REPOSITORY_USAGE} WHERE r.name > ?1 ORDER BY r.name LIMIT ?2"))?;
            let rows =
                stmt.query_map(params![page.last.unwrap_or_default(), limit_of(page.limit)], repository_usage_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn registry_usage(&self) -> Result<RegistryUsage> {
        self.with_conn(move |c| {
            let (repositories, bytes, blobs, manifests, tags) = c.query_row(
                "SELECT COUNT(*), COALESCE(SUM(bytes), 0), COALESCE(SUM(blobs), 0), COALESCE(SUM(manifests), 0), \
                 COALESCE(SUM(tags), 0) FROM repository_usage",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )?;
            let (stored_bytes, stored_blobs) =
                c.query_row("SELECT COALESCE(SUM(bytes), 0), COALESCE(SUM(blobs), 0) FROM usage_totals", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            let mut stmt = c.prepare_cached(
                "SELECT key_name, SUM(bytes), SUM(copies) FROM key_usage GROUP BY key_name \
                 HAVING SUM(copies) <> 0 ORDER BY key_name",
            )?;
            let keys = stmt
                .query_map([], |r| {
                    Ok(KeyUsage { key: r.get(0)?, bytes: size_of(r.get(1)?), copies: size_of(r.get(2)?) })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(RegistryUsage {
                repositories: size_of(repositories),
                bytes: size_of(bytes),
                blobs: size_of(blobs),
                manifests: size_of(manifests),
                tags: size_of(tags),
                stored_bytes: size_of(stored_bytes),
                stored_blobs: size_of(stored_blobs),
                dedupe_ratio: 1.0,
                keys,
            }
            .with_ratio())
        })
        .await
    }

    async fn scope_usage(&self, scope: &QuotaScope) -> Result<ScopeUsage> {
        let scope = scope.clone();
        self.with_conn(move |c| {
            let sums = "SELECT COALESCE(SUM(u.bytes), 0), COALESCE(SUM(u.manifests), 0) \
                        FROM repositories r JOIN repository_usage u ON u.repository_id = r.id";
            let read = |r: &rusqlite::Row<'_>| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?));
            let (bytes, images) = match &scope {
                QuotaScope::Repository(repo) => {
                    c.query_row(&format!("{sums} WHERE r.name = ?1"), [repo.as_str()], read)?
                }
                QuotaScope::Prefix(prefix) => match QuotaScope::name_range(prefix) {
                    (from, Some(to)) => {
                        c.query_row(&format!("{sums} WHERE r.name >= ?1 AND r.name < ?2"), params![from, to], read)?
                    }
                    (_, None) => c.query_row(sums, [], read)?,
                },
            };
            let mut stmt =
                c.prepare_cached("SELECT dimension FROM quota_warnings WHERE scope = ?1 ORDER BY dimension")?;
            let warned = stmt
                .query_map([scope.to_string()], |r| r.get::<_, String>(0))?
                .map(|d| QuotaDimension::parse(&d?))
                .collect::<Result<_>>()?;
            Ok(ScopeUsage { bytes: size_of(bytes), images: size_of(images), warned })
        })
        .await
    }

    async fn quotas(&self) -> Result<Vec<QuotaRecord>> {
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(&format!("SELECT {QUOTA_COLUMNS} FROM quotas ORDER BY scope"))?;
            let rows = stmt.query_map([], quota_row)?;
            rows.map(|r| quota_record(r?)).collect()
        })
        .await
    }

    async fn put_quota(&self, quota: &QuotaRecord) -> Result<bool> {
        let quota = quota.clone();
        self.write(move |tx| {
            let scope = quota.scope.to_string();
            let existed: bool =
                tx.query_row("SELECT COUNT(*) > 0 FROM quotas WHERE scope = ?1", [&scope], |r| r.get(0))?;
            tx.execute(
                "INSERT INTO quotas (scope, max_bytes, max_images, updated_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (scope) DO UPDATE SET max_bytes = excluded.max_bytes, max_images = excluded.max_images, \
                 updated_at = excluded.updated_at",
                params![scope, quota.max_bytes.map(db_size), quota.max_images.map(db_size), unix_now()],
            )?;
            Ok(!existed)
        })
        .await
    }

    async fn delete_quota(&self, scope: &QuotaScope) -> Result<bool> {
        let scope = scope.to_string();
        self.write(move |tx| {
            tx.execute("DELETE FROM quota_warnings WHERE scope = ?1", [&scope])?;
            Ok(tx.execute("DELETE FROM quotas WHERE scope = ?1", [&scope])? > 0)
        })
        .await
    }

    async fn raise_quota_warning(&self, scope: &QuotaScope, dimension: QuotaDimension, event: &Event) -> Result<bool> {
        let (scope, event) = (scope.to_string(), event.clone());
        self.write(move |tx| {
            let raised = tx.execute(
                "INSERT INTO quota_warnings (scope, dimension, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![scope, dimension.as_str(), unix_now()],
            )? > 0;
            if raised {
                emit(tx, &[event])?;
            }
            Ok(raised)
        })
        .await
    }

    async fn clear_quota_warning(&self, scope: &QuotaScope, dimension: QuotaDimension) -> Result<bool> {
        let scope = scope.to_string();
        self.write(move |tx| {
            Ok(tx.execute(
                "DELETE FROM quota_warnings WHERE scope = ?1 AND dimension = ?2",
                params![scope, dimension.as_str()],
            )? > 0)
        })
        .await
    }
}
