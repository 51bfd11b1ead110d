//! [`PostgresStore`]'s replication configuration and statuses ([`Replication`]).

use async_trait::async_trait;

use super::events::upsert_subscription;
use super::{PostgresStore, read_subscriptions};
use crate::error::{Error, Result};
use crate::metadata::{
    ReplicationRecord, ReplicationState, ReplicationStatus, Subscription, SubscriptionKind, SubscriptionSource,
    unix_now,
};

#[async_trait]
impl crate::metadata::Replication for PostgresStore {
    async fn replication_config(&self) -> Result<Option<ReplicationRecord>> {
        let client = self.client().await?;
        let row =
            client.query_opt("SELECT document, source, updated_at FROM replication_config WHERE id = 1", &[]).await?;
        row.map(|r| Ok(ReplicationRecord { document: r.try_get(0)?, source: r.try_get(1)?, updated_at: r.try_get(2)? }))
            .transpose()
    }

    async fn put_replication_config(&self, document: &str, source: &str, destinations: &[Subscription]) -> Result<()> {
        let mut sorted: Vec<&Subscription> = destinations.iter().collect();
        // By name, so that writers racing lock rows in one order.
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        transaction!(self, |tx| {
            // One writer of the configuration at a time: the row is locked (or, on the very
            // first put, the insert below conflicts and the transaction is retried).
            tx.query_opt("SELECT 1 FROM replication_config WHERE id = 1 FOR UPDATE", &[]).await?;
            let existing = read_subscriptions(&tx, "").await?;
            for d in &sorted {
                if existing.iter().any(|s| s.name == d.name && s.kind != SubscriptionKind::Replication) {
                    return Err(Error::Conflict);
                }
                let d = Subscription { kind: SubscriptionKind::Replication, ..(*d).clone() };
                if upsert_subscription(&tx, &d, SubscriptionSource::Api, false).await?.is_none() {
                    return Err(Error::Conflict);
                }
            }
            for gone in existing
                .iter()
                .filter(|s| s.kind == SubscriptionKind::Replication && !sorted.iter().any(|d| d.name == s.name))
            {
                tx.execute("DELETE FROM subscriptions WHERE name = $1", &[&gone.name]).await?;
                tx.execute("DELETE FROM replication_status WHERE destination = $1", &[&gone.name]).await?;
            }
            tx.execute(
                "INSERT INTO replication_config (id, document, source, updated_at) VALUES (1, $1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET document = excluded.document, source = excluded.source, \
                 updated_at = excluded.updated_at",
                &[&document, &source, &unix_now()],
            )
            .await?;
        })
    }

    async fn set_replication_status(&self, s: &ReplicationStatus) -> Result<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO replication_status (destination, repository, digest, state, reason, updated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (repository, digest, destination) DO UPDATE SET \
                 state = excluded.state, reason = excluded.reason, updated_ms = excluded.updated_ms",
                &[&s.destination, &s.repository, &s.digest, &s.state.as_str(), &s.reason, &s.updated_ms],
            )
            .await?;
        Ok(())
    }

    async fn replication_statuses(&self, repository: &str, digest: &str) -> Result<Vec<ReplicationStatus>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT destination, repository, digest, state, reason, updated_ms FROM replication_status \
                 WHERE repository = $1 AND digest = $2 ORDER BY destination",
            )
            .await?;
        client
            .query(&stmt, &[&repository, &digest])
            .await?
            .iter()
            .map(|r| {
                let state: ReplicationState = r.try_get::<_, &str>(3)?.parse().map_err(Error::Corrupt)?;
                Ok(ReplicationStatus {
                    destination: r.try_get(0)?,
                    repository: r.try_get(1)?,
                    digest: r.try_get(2)?,
                    state,
                    reason: r.try_get(4)?,
                    updated_ms: r.try_get(5)?,
                })
            })
            .collect()
    }
}
