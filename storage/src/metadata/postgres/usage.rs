//! [`UsageStore`] on PostgreSQL: the counters of `postgres_v9.sql` read back (shards added
//! up), quota records.

use async_trait::async_trait;
use berth_oci::RepoName;

use super::{PostgresStore, db_limit, emit};
use crate::error::{Error, Result};
use crate::metadata::sql::{QUOTA_COLUMNS, REPOSITORY_USAGE};
use crate::metadata::usage::{
    KeyUsage, QuotaDimension, QuotaRecord, QuotaScope, RegistryUsage, RepositoryUsage, ScopeUsage, UsageStore,
};
use crate::metadata::{Event, Page, db_size, size_of, unix_now};

fn repository_usage_row(r: &tokio_postgres::Row) -> Result<RepositoryUsage> {
    Ok(RepositoryUsage {
        repository: r.try_get(0)?,
        bytes: size_of(r.try_get(1)?),
        blobs: size_of(r.try_get(2)?),
        manifests: size_of(r.try_get(3)?),
        tags: size_of(r.try_get(4)?),
    })
}

fn quota_record(r: &tokio_postgres::Row) -> Result<QuotaRecord> {
    let scope: String = r.try_get(0)?;
    Ok(QuotaRecord {
        scope: scope.parse().map_err(Error::Corrupt)?,
        max_bytes: r.try_get::<_, Option<i64>>(1)?.map(size_of),
        max_images: r.try_get::<_, Option<i64>>(2)?.map(size_of),
        updated_at: r.try_get(3)?,
    })
}

/// A sum read as bytes (`SUM` of BIGINT is NUMERIC in PostgreSQL: cast back in the query).
fn count(r: &tokio_postgres::Row, at: usize) -> Result<u64> {
    Ok(size_of(r.try_get(at)?))
}

#[async_trait]
impl UsageStore for PostgresStore {
    async fn repository_usage(&self, repo: &RepoName) -> Result<Option<RepositoryUsage>> {
        let client = self.client().await?;
        let row = client.query_opt(&format!("{REPOSITORY_USAGE} WHERE r.name = $1"), &[&repo.as_str()]).await?;
        row.as_ref().map(repository_usage_row).transpose()
    }

    async fn repositories_usage(&self, page: &Page) -> Result<Vec<RepositoryUsage>> {
        let client = self.client().await?;
        let stmt =
            client.prepare_cached(&format!("{REPOSITORY_USAGE} WHERE r.name > $1 ORDER BY r.name LIMIT $2")).await?;
        let last = page.last.clone().unwrap_or_default();
        client.query(&stmt, &[&last, &db_limit(page)]).await?.iter().map(repository_usage_row).collect()
    }

    async fn registry_usage(&self) -> Result<RegistryUsage> {
        let client = self.client().await?;
        let totals = client
            .query_one(
                "SELECT COUNT(*), COALESCE(SUM(bytes), 0)::BIGINT, COALESCE(SUM(blobs), 0)::BIGINT, \
                 COALESCE(SUM(manifests), 0)::BIGINT, COALESCE(SUM(tags), 0)::BIGINT FROM repository_usage",
                &[],
            )
            .await?;
        let stored = client
            .query_one("SELECT COALESCE(SUM(bytes), 0)::BIGINT, COALESCE(SUM(blobs), 0)::BIGINT FROM usage_totals", &[])
            .await?;
        let keys = client
            .query(
                "SELECT key_name, SUM(bytes)::BIGINT, SUM(copies)::BIGINT FROM key_usage GROUP BY key_name \
                 HAVING SUM(copies) <> 0 ORDER BY key_name",
                &[],
            )
            .await?
            .iter()
            .map(|r| Ok(KeyUsage { key: r.try_get(0)?, bytes: count(r, 1)?, copies: count(r, 2)? }))
            .collect::<Result<_>>()?;
        Ok(RegistryUsage {
            repositories: count(&totals, 0)?,
            bytes: count(&totals, 1)?,
            blobs: count(&totals, 2)?,
            manifests: count(&totals, 3)?,
            tags: count(&totals, 4)?,
            stored_bytes: count(&stored, 0)?,
            stored_blobs: count(&stored, 1)?,
            dedupe_ratio: 1.0,
            keys,
        }
        .with_ratio())
    }

    async fn scope_usage(&self, scope: &QuotaScope) -> Result<ScopeUsage> {
        let client = self.client().await?;
        let sums = "SELECT COALESCE(SUM(u.bytes), 0)::BIGINT, COALESCE(SUM(u.manifests), 0)::BIGINT \
                    FROM repositories r JOIN repository_usage u ON u.repository_id = r.id";
        let row = match scope {
            QuotaScope::Repository(repo) => {
                client.query_one(&format!("{sums} WHERE r.name = $1"), &[&repo.as_str()]).await?
            }
            QuotaScope::Prefix(prefix) => match QuotaScope::name_range(prefix) {
                (from, Some(to)) => {
                    client.query_one(&format!("{sums} WHERE r.name >= $1 AND r.name < $2"), &[&from, &to]).await?
                }
                (_, None) => client.query_one(sums, &[]).await?,
            },
        };
        let warned = client
            .query("SELECT dimension FROM quota_warnings WHERE scope = $1 ORDER BY dimension", &[&scope.to_string()])
            .await?
            .iter()
            .map(|r| QuotaDimension::parse(&r.try_get::<_, String>(0)?))
            .collect::<Result<_>>()?;
        Ok(ScopeUsage { bytes: count(&row, 0)?, images: count(&row, 1)?, warned })
    }

    async fn quotas(&self) -> Result<Vec<QuotaRecord>> {
        let client = self.client().await?;
        let rows = client.query(&format!("SELECT {QUOTA_COLUMNS} FROM quotas ORDER BY scope"), &[]).await?;
        rows.iter().map(quota_record).collect()
    }

    async fn put_quota(&self, quota: &QuotaRecord) -> Result<bool> {
        let client = self.client().await?;
        // `xmax = 0` only for a row this statement inserted (an updated row carries our xid).
        let row = client
            .query_one(
                "INSERT INTO quotas (scope, max_bytes, max_images, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (scope) DO UPDATE SET max_bytes = excluded.max_bytes, max_images = excluded.max_images, \
                 updated_at = excluded.updated_at RETURNING (xmax = 0)",
                &[&quota.scope.to_string(), &quota.max_bytes.map(db_size), &quota.max_images.map(db_size), &unix_now()],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    async fn delete_quota(&self, scope: &QuotaScope) -> Result<bool> {
        let scope = scope.to_string();
        transaction!(self, |tx| {
            tx.execute("DELETE FROM quota_warnings WHERE scope = $1", &[&scope]).await?;
            tx.execute("DELETE FROM quotas WHERE scope = $1", &[&scope]).await? > 0
        })
    }

    async fn raise_quota_warning(&self, scope: &QuotaScope, dimension: QuotaDimension, event: &Event) -> Result<bool> {
        let scope = scope.to_string();
        transaction!(self, |tx| {
            // Of processes raising the same warning at once, the insert lets one through.
            let raised = tx
                .execute(
                    "INSERT INTO quota_warnings (scope, dimension, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                    &[&scope, &dimension.as_str(), &unix_now()],
                )
                .await?
                > 0;
            if raised {
                emit(&tx, std::slice::from_ref(event)).await?;
            }
            raised
        })
    }

    async fn clear_quota_warning(&self, scope: &QuotaScope, dimension: QuotaDimension) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM quota_warnings WHERE scope = $1 AND dimension = $2",
                &[&scope.to_string(), &dimension.as_str()],
            )
            .await?;
        Ok(n > 0)
    }
}
