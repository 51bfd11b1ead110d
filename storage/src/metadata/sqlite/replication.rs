//! [`SqliteStore`]'s replication configuration and statuses ([`Replication`]).

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::events::upsert_subscription;
use super::{SqliteStore, read_subscriptions};
use crate::error::{Error, Result};
use crate::metadata::{
    ReplicationRecord, ReplicationState, ReplicationStatus, Subscription, SubscriptionKind, SubscriptionSource,
    unix_now,
};

fn status_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, String, Option<String>, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

#[async_trait]
impl crate::metadata::Replication for SqliteStore {
    async fn replication_config(&self) -> Result<Option<ReplicationRecord>> {
        self.with_conn(|c| {
            Ok(c.query_row("SELECT document, source, updated_at FROM replication_config WHERE id = 1", [], |r| {
                Ok(ReplicationRecord { document: r.get(0)?, source: r.get(1)?, updated_at: r.get(2)? })
            })
            .optional()?)
        })
        .await
    }

    async fn put_replication_config(&self, document: &str, source: &str, destinations: &[Subscription]) -> Result<()> {
        let (document, source, destinations) = (document.to_owned(), source.to_owned(), destinations.to_vec());
        self.write(move |tx| {
            let existing = read_subscriptions(tx, "")?;
            for d in &destinations {
                if existing.iter().any(|s| s.name == d.name && s.kind != SubscriptionKind::Replication) {
                    // Returning the error rolls back the transaction.
                    return Err(Error::Conflict);
                }
                let d = Subscription { kind: SubscriptionKind::Replication, ..d.clone() };
                upsert_subscription(tx, &d, SubscriptionSource::Api)?;
            }
            for gone in existing
                .iter()
                .filter(|s| s.kind == SubscriptionKind::Replication && !destinations.iter().any(|d| d.name == s.name))
            {
                // Deliveries and their attempts go with it (ON DELETE CASCADE).
                tx.execute("DELETE FROM subscriptions WHERE name = ?1", [&gone.name])?;
                tx.execute("DELETE FROM replication_status WHERE destination = ?1", [&gone.name])?;
            }
            tx.execute(
                "INSERT INTO replication_config (id, document, source, updated_at) VALUES (1, ?1, ?2, ?3) \
                 ON CONFLICT (id) DO UPDATE SET document = excluded.document, source = excluded.source, \
                 updated_at = excluded.updated_at",
                params![document, source, unix_now()],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_replication_status(&self, s: &ReplicationStatus) -> Result<()> {
        let s = s.clone();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO replication_status (destination, repository, digest, state, reason, updated_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (repository, digest, destination) DO UPDATE SET \
                 state = excluded.state, reason = excluded.reason, updated_ms = excluded.updated_ms",
                params![s.destination, s.repository, s.digest, s.state.as_str(), s.reason, s.updated_ms],
            )?;
            Ok(())
        })
        .await
    }

    async fn replication_statuses(&self, repository: &str, digest: &str) -> Result<Vec<ReplicationStatus>> {
        let (repository, digest) = (repository.to_owned(), digest.to_owned());
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT destination, repository, digest, state, reason, updated_ms FROM replication_status \
                 WHERE repository = ?1 AND digest = ?2 ORDER BY destination",
            )?;
            let rows = stmt.query_map(params![repository, digest], status_from_row)?;
            rows.map(|r| {
                let (destination, repository, digest, state, reason, updated_ms) = r?;
                let state: ReplicationState = state.parse().map_err(Error::Corrupt)?;
                Ok(ReplicationStatus { destination, repository, digest, state, reason, updated_ms })
            })
            .collect()
        })
        .await
    }
}
