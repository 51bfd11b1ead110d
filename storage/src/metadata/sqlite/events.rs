//! [`SqliteStore`]'s webhooks: subscriptions, the outbox and deliveries ([`Events`]).

use std::collections::BTreeMap;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, read_subscriptions};
use crate::error::{Error, Result};
use crate::metadata::sql::{DELIVERY_COLUMNS, SUBSCRIPTION_COLUMNS};
use crate::metadata::{
    Attempt, Claimed, Delivery, DeliveryColumns, DeliveryCounts, DeliveryFilter, DeliveryPhase, Event, Events, Outcome,
    OutcomeColumns, Subscription, SubscriptionSource, attempt_from_columns, event_from_payload, size_of, source_column,
    subscription_definition, unix_now,
};

/// Inserts or replaces `s` (with `source`), keeping `created_at` of one that exists;
/// `true` when created.
pub(super) fn upsert_subscription(
    tx: &rusqlite::Transaction<'_>,
    s: &Subscription,
    source: SubscriptionSource,
) -> Result<bool> {
    let s = Subscription { source, ..s.clone() };
    let existed = tx.query_row("SELECT 1 FROM subscriptions WHERE name = ?1", [&s.name], |_| Ok(())).optional()?;
    tx.execute(
        &format!(
            "INSERT INTO subscriptions ({SUBSCRIPTION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, enabled = excluded.enabled, \
             source = excluded.source"
        ),
        params![s.name, subscription_definition(&s)?, s.enabled, source_column(source), unix_now()],
    )?;
    Ok(existed.is_none())
}

fn delivery_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryColumns> {
    Ok(DeliveryColumns {
        id: r.get(0)?,
        subscription: r.get(1)?,
        state: r.get(2)?,
        attempts: r.get(3)?,
        next_attempt_ms: r.get(4)?,
        last_status: r.get(5)?,
        last_error: r.get(6)?,
        created_ms: r.get(7)?,
        updated_ms: r.get(8)?,
        event_seq: r.get(9)?,
        payload: r.get(10)?,
    })
}

/// The deliveries (`d`, joined with their events `e`) a [`DeliveryFilter`] takes, bound as
/// ?1 subscription, ?2 state (a [`DeliveryPhase`]: `retrying` is pending after a failed
/// attempt), ?3 repository, ?4 id, ?5 event id (NULL: any).
const DELIVERY_FILTER: &str = "(?1 IS NULL OR d.subscription = ?1) \
    AND (?2 IS NULL OR (CASE WHEN d.state = 'pending' AND d.attempts > 0 THEN 'retrying' ELSE d.state END) = ?2) \
    AND (?3 IS NULL OR d.repository = ?3) AND (?4 IS NULL OR d.id = ?4) AND (?5 IS NULL OR e.id = ?5)";

/// The filter's parameters, in the order of [`DELIVERY_FILTER`].
type FilterParams = (Option<String>, Option<&'static str>, Option<String>, Option<i64>, Option<String>);

fn filter_params(f: &DeliveryFilter) -> FilterParams {
    (f.subscription.clone(), f.state.map(DeliveryPhase::as_str), f.repository.clone(), f.id, f.event_id.clone())
}

/// A delivery is claimable (`d`, at ?1 now) when it is pending, due, not leased (or its lease
/// ran out), its subscription is enabled, and no earlier delivery of its line is pending.
/// Walks the pending deliveries in claim order and stops at the limit, each check an index
/// lookup: a claim costs what it takes, not the backlog (sqlite_v5.sql).
const CLAIMABLE: &str = "SELECT d.id FROM deliveries d INDEXED BY deliveries_pending \
    WHERE d.state = 'pending' AND d.next_attempt_ms <= ?1 \
    AND (d.lease_owner IS NULL OR d.lease_until_ms <= ?1) \
    AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.name = d.subscription AND s.enabled = 1) \
    AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.subscription = d.subscription \
    AND p.repository = d.repository AND p.state = 'pending' AND p.event_seq < d.event_seq) \
    ORDER BY d.event_seq, d.id LIMIT ?2";

#[async_trait]
impl Events for SqliteStore {
    async fn put_subscription(&self, s: &Subscription) -> Result<bool> {
        let s = s.clone();
        self.write(move |tx| upsert_subscription(tx, &s, s.source)).await
    }

    async fn delete_subscription(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        // Deliveries and their attempts go with it (ON DELETE CASCADE).
        self.write(move |tx| Ok(tx.execute("DELETE FROM subscriptions WHERE name = ?1", [name])? > 0)).await
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        self.with_conn(|c| read_subscriptions(c, "")).await
    }

    async fn sync_config_subscriptions(&self, subs: &[Subscription]) -> Result<()> {
        let subs = subs.to_vec();
        self.write(move |tx| {
            for s in &subs {
                let source: Option<String> = tx
                    .query_row("SELECT source FROM subscriptions WHERE name = ?1", [&s.name], |r| r.get(0))
                    .optional()?;
                if source.as_deref() == Some(source_column(SubscriptionSource::Api)) {
                    // Returning the error rolls back what this loop wrote so far.
                    return Err(Error::Conflict);
                }
                upsert_subscription(tx, s, SubscriptionSource::Config)?;
            }
            let names: Vec<&str> = subs.iter().map(|s| s.name.as_str()).collect();
            tx.execute(
                "DELETE FROM subscriptions WHERE source = 'config' AND name NOT IN (SELECT value FROM json_each(?1))",
                [serde_json::to_string(&names).unwrap_or_default()],
            )?;
            Ok(())
        })
        .await
    }

    async fn events(&self, after_seq: i64, limit: usize) -> Result<Vec<Event>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached("SELECT seq, payload FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
            let rows =
                stmt.query_map(params![after_seq, limit], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
            rows.map(|r| {
                let (seq, payload) = r?;
                event_from_payload(seq, &payload)
            })
            .collect()
        })
        .await
    }

    async fn claim_deliveries(&self, owner: &str, now_ms: i64, lease_ms: i64, limit: usize) -> Result<Vec<Claimed>> {
        let owner = owner.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // The dispatcher asks after every change and every poll, mostly to find nothing: a
        // read first, so that finding nothing never takes the single writer's lock.
        let any = self.with_conn(move |c| Ok(c.prepare_cached(CLAIMABLE)?.exists(params![now_ms, 1])?)).await?;
        if !any {
            return Ok(Vec::new());
        }
        // One writer at a time (BEGIN IMMEDIATE): what this finds claimable is still so when
        // it leases it.
        self.write(move |tx| {
            let ids: Vec<i64> = {
                let mut stmt = tx.prepare_cached(CLAIMABLE)?;
                let rows = stmt.query_map(params![now_ms, limit], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let until = now_ms.saturating_add(lease_ms);
            let subscriptions: BTreeMap<String, Subscription> =
                read_subscriptions(tx, "")?.into_iter().map(|s| (s.name.clone(), s)).collect();
            let mut lease =
                tx.prepare_cached("UPDATE deliveries SET lease_owner = ?2, lease_until_ms = ?3 WHERE id = ?1")?;
            let mut read = tx.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.id = ?1"
            ))?;
            let mut claimed = Vec::with_capacity(ids.len());
            for id in ids {
                lease.execute(params![id, owner, until])?;
                let delivery = read.query_row([id], delivery_from_row)?.into_delivery()?;
                let subscription = subscriptions
                    .get(&delivery.subscription)
                    .cloned()
                    .ok_or_else(|| Error::Corrupt(format!("delivery {id}: no subscription")))?;
                claimed.push(Claimed { delivery, subscription });
            }
            Ok(claimed)
        })
        .await
    }

    async fn renew_delivery_lease(&self, id: i64, owner: &str, now_ms: i64, until_ms: i64) -> Result<bool> {
        let owner = owner.to_owned();
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE deliveries SET lease_until_ms = ?4 WHERE id = ?1 AND state = 'pending' \
                 AND lease_owner = ?2 AND lease_until_ms > ?3",
                params![id, owner, now_ms, until_ms],
            )? > 0)
        })
        .await
    }

    async fn finish_deliveries(&self, owner: &str, finished: &[(i64, Outcome)], now_ms: i64) -> Result<Vec<bool>> {
        let (owner, finished) = (owner.to_owned(), finished.to_vec());
        self.write(move |tx| {
            finished.iter().map(|(id, outcome)| finish_one(tx, *id, &owner, outcome, now_ms)).collect()
        })
        .await
    }

    async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>> {
        let params = filter_params(filter);
        let limit = if filter.limit == 0 { -1 } else { i64::try_from(filter.limit).unwrap_or(i64::MAX) };
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq \
                 WHERE {DELIVERY_FILTER} ORDER BY d.id DESC LIMIT ?6"
            ))?;
            let rows =
                stmt.query_map(params![params.0, params.1, params.2, params.3, params.4, limit], delivery_from_row)?;
            rows.map(|r| r?.into_delivery()).collect()
        })
        .await
    }

    async fn delivery_attempts(&self, id: i64) -> Result<Vec<Attempt>> {
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT delivery, number, at_ms, status, error, duration_ms FROM delivery_attempts \
                 WHERE delivery = ?1 ORDER BY number",
            )?;
            let rows = stmt.query_map([id], |r| {
                Ok(attempt_from_columns(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn replay_deliveries(&self, filter: &DeliveryFilter, now_ms: i64) -> Result<u64> {
        let params = filter_params(filter);
        self.write(move |tx| {
            let n = tx.execute(
                &format!(
                    "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_ms = ?6, \
                     lease_owner = NULL, lease_until_ms = NULL, updated_ms = ?6 WHERE id IN \
                     (SELECT d.id FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE {DELIVERY_FILTER} \
                     AND NOT (d.state = 'pending' AND d.lease_owner IS NOT NULL AND d.lease_until_ms > ?6))"
                ),
                params![params.0, params.1, params.2, params.3, params.4, now_ms],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn purge_deliveries(&self, filter: &DeliveryFilter) -> Result<u64> {
        let params = filter_params(filter);
        self.write(move |tx| {
            // Attempts go with their deliveries (ON DELETE CASCADE).
            let n = tx.execute(
                &format!(
                    "DELETE FROM deliveries WHERE id IN \
                     (SELECT d.id FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE {DELIVERY_FILTER})"
                ),
                params![params.0, params.1, params.2, params.3, params.4],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn delivery_counts(&self) -> Result<Vec<DeliveryCounts>> {
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT s.name, \
                 COALESCE(SUM(d.state = 'pending' AND d.attempts = 0), 0), \
                 COALESCE(SUM(d.state = 'pending' AND d.attempts > 0), 0), \
                 COALESCE(SUM(d.state = 'delivered'), 0), COALESCE(SUM(d.state = 'dead'), 0) \
                 FROM subscriptions s LEFT JOIN deliveries d ON d.subscription = s.name \
                 GROUP BY s.name ORDER BY s.name",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(DeliveryCounts {
                    subscription: r.get(0)?,
                    pending: size_of(r.get(1)?),
                    retrying: size_of(r.get(2)?),
                    delivered: size_of(r.get(3)?),
                    dead: size_of(r.get(4)?),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn prune_events(&self, delivered_before_ms: i64, dead_before_ms: i64) -> Result<(u64, u64)> {
        self.write(move |tx| {
            let deliveries = tx.execute(
                "DELETE FROM deliveries WHERE (state = 'delivered' AND updated_ms < ?1) \
                 OR (state = 'dead' AND updated_ms < ?2)",
                params![delivered_before_ms, dead_before_ms],
            )?;
            let events = tx.execute(
                "DELETE FROM events WHERE created_ms < ?1 \
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = events.seq)",
                [delivered_before_ms],
            )?;
            Ok((deliveries as u64, events as u64))
        })
        .await
    }
}

/// Records one attempt of delivery `id` if `owner` holds it (`finish_delivery`).
fn finish_one(tx: &rusqlite::Transaction<'_>, id: i64, owner: &str, outcome: &Outcome, now_ms: i64) -> Result<bool> {
    let held = tx
        .prepare_cached("SELECT 1 FROM deliveries WHERE id = ?1 AND lease_owner = ?2 AND state = 'pending'")?
        .query_row(params![id, owner], |_| Ok(()))
        .optional()?;
    if held.is_none() {
        return Ok(false);
    }
    let o = OutcomeColumns::of(outcome);
    // Numbered after the log's last entry: a replay resets `attempts`, not the log.
    tx.prepare_cached(
        "INSERT INTO delivery_attempts (delivery, number, at_ms, status, error, duration_ms) \
         SELECT ?1, COALESCE(MAX(number), 0) + 1, ?2, ?3, ?4, ?5 FROM delivery_attempts WHERE delivery = ?1",
    )?
    .execute(params![id, now_ms, o.status, o.error, o.duration_ms])?;
    tx.prepare_cached(
        "UPDATE deliveries SET attempts = attempts + 1, state = ?2, \
         next_attempt_ms = COALESCE(?3, next_attempt_ms), last_status = ?4, last_error = ?5, \
         lease_owner = NULL, lease_until_ms = NULL, updated_ms = ?6 WHERE id = ?1",
    )?
    .execute(params![id, o.state.as_str(), o.next_attempt_ms, o.status, o.error, now_ms])?;
    Ok(true)
}
