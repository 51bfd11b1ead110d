//! [`PostgresStore`]'s webhooks: subscriptions, the outbox and deliveries ([`Events`]).

use std::collections::BTreeMap;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::{ATTEMPTS, FEED_LOCK, PostgresStore, db_count, read_subscriptions};
use crate::error::{Error, Result};
use crate::metadata::sql::{DELIVERY_COLUMNS, SUBSCRIPTION_COLUMNS};
use crate::metadata::{
    Attempt, Claimed, Delivery, DeliveryColumns, DeliveryCounts, DeliveryFilter, DeliveryPhase, Event, Events, Outcome,
    OutcomeColumns, Subscription, SubscriptionSource, attempt_from_columns, event_from_payload, size_of, source_column,
    subscription_definition, unix_now,
};

/// Inserts or replaces `s` with `source`, keeping an existing one's `created_at`: `Some(true)`
/// when created, `Some(false)` when replaced, `None` (and nothing written) when `keep_api`
/// and the name belongs to an `api` subscription.
pub(super) async fn upsert_subscription(
    tx: &impl GenericClient,
    s: &Subscription,
    source: SubscriptionSource,
    keep_api: bool,
) -> Result<Option<bool>> {
    let s = Subscription { source, ..s.clone() };
    let definition = subscription_definition(&s)?;
    for _ in 0..ATTEMPTS {
        let existing = tx.query_opt("SELECT source FROM subscriptions WHERE name = $1 FOR UPDATE", &[&s.name]).await?;
        match existing {
            Some(row) => {
                if keep_api && row.try_get::<_, &str>(0)? == source_column(SubscriptionSource::Api) {
                    return Ok(None);
                }
                tx.execute(
                    "UPDATE subscriptions SET definition = $2, enabled = $3, source = $4 WHERE name = $1",
                    &[&s.name, &definition, &s.enabled, &source_column(source)],
                )
                .await?;
                return Ok(Some(false));
            }
            None => {
                // A racing insert of the same name commits first: then it is there to replace.
                let n = tx
                    .execute(
                        &format!(
                            "INSERT INTO subscriptions ({SUBSCRIPTION_COLUMNS}) VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (name) DO NOTHING"
                        ),
                        &[&s.name, &definition, &s.enabled, &source_column(source), &unix_now()],
                    )
                    .await?;
                if n > 0 {
                    return Ok(Some(true));
                }
            }
        }
    }
    Err(Error::Conflict)
}

fn delivery_columns(r: &tokio_postgres::Row) -> Result<DeliveryColumns> {
    Ok(DeliveryColumns {
        id: r.try_get(0)?,
        subscription: r.try_get(1)?,
        state: r.try_get(2)?,
        attempts: i64::from(r.try_get::<_, i32>(3)?),
        next_attempt_ms: r.try_get(4)?,
        last_status: r.try_get::<_, Option<i32>>(5)?.map(i64::from),
        last_error: r.try_get(6)?,
        created_ms: r.try_get(7)?,
        updated_ms: r.try_get(8)?,
        event_seq: r.try_get(9)?,
        payload: r.try_get(10)?,
    })
}

/// The deliveries (`d`, joined with their events `e`) a [`DeliveryFilter`] takes, bound as
/// $1 subscription, $2 state (a [`DeliveryPhase`]: `retrying` is pending after a failed
/// attempt), $3 repository, $4 id, $5 event id (NULL: any).
const DELIVERY_FILTER: &str = "($1::text IS NULL OR d.subscription = $1) \
    AND ($2::text IS NULL OR (CASE WHEN d.state = 'pending' AND d.attempts > 0 THEN 'retrying' ELSE d.state END) = $2) \
    AND ($3::text IS NULL OR d.repository = $3) AND ($4::bigint IS NULL OR d.id = $4) \
    AND ($5::text IS NULL OR e.id = $5)";

/// The filter's parameters, in the order of [`DELIVERY_FILTER`].
type FilterParams<'a> = (Option<&'a str>, Option<&'static str>, Option<&'a str>, Option<i64>, Option<&'a str>);

fn filter_params(f: &DeliveryFilter) -> FilterParams<'_> {
    (
        f.subscription.as_deref(),
        f.state.map(DeliveryPhase::as_str),
        f.repository.as_deref(),
        f.id,
        f.event_id.as_deref(),
    )
}

/// A delivery `d` is claimable at $1 (now) when it is pending, due, not leased (or its lease
/// ran out), its subscription is enabled, and no earlier delivery of its line (subscription,
/// repository) is pending.
const CLAIMABLE: &str = "d.state = 'pending' AND d.next_attempt_ms <= $1 \
    AND (d.lease_owner IS NULL OR d.lease_until_ms <= $1) \
    AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.name = d.subscription AND s.enabled) \
    AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.subscription = d.subscription \
    AND p.repository = d.repository AND p.state = 'pending' AND p.event_seq < d.event_seq)";

#[async_trait]
impl Events for PostgresStore {
    async fn put_subscription(&self, s: &Subscription) -> Result<bool> {
        transaction!(self, |tx| upsert_subscription(&tx, s, s.source, false).await?.unwrap_or_default())
    }

    async fn delete_subscription(&self, name: &str) -> Result<bool> {
        // Deliveries and their attempts go with it (ON DELETE CASCADE), after any transaction
        // that is fanning an event out to it commits (it holds the row's share lock).
        let n = self.client().await?.execute("DELETE FROM subscriptions WHERE name = $1", &[&name]).await?;
        Ok(n > 0)
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        read_subscriptions(&self.client().await?, "").await
    }

    async fn sync_config_subscriptions(&self, subs: &[Subscription]) -> Result<()> {
        // By name (the last of a name wins), so replicas syncing at once lock rows in one order.
        let by_name: BTreeMap<&str, &Subscription> = subs.iter().map(|s| (s.name.as_str(), s)).collect();
        let names: Vec<&str> = by_name.keys().copied().collect();
        transaction!(self, |tx| {
            for s in by_name.values() {
                if upsert_subscription(&tx, s, SubscriptionSource::Config, true).await?.is_none() {
                    // Dropping the transaction rolls back what this loop wrote so far.
                    return Err(Error::Conflict);
                }
            }
            tx.execute("DELETE FROM subscriptions WHERE source = 'config' AND NOT (name = ANY($1))", &[&names]).await?;
        })
    }

    async fn events(&self, after_seq: i64, limit: usize) -> Result<Vec<Event>> {
        // Exclusively: every transaction that took a `seq` has ended when this holds it, and
        // none takes one until it is released, so nothing commits later behind what this reads.
        let rows = transaction!(self, |tx| {
            tx.query("SELECT pg_advisory_xact_lock($1)", &[&FEED_LOCK]).await?;
            let stmt =
                tx.prepare_cached("SELECT seq, payload FROM events WHERE seq > $1 ORDER BY seq LIMIT $2").await?;
            tx.query(&stmt, &[&after_seq, &db_count(limit)]).await?
        })?;
        rows.iter().map(|r| event_from_payload(r.try_get(0)?, r.try_get(1)?)).collect()
    }

    async fn claim_deliveries(&self, owner: &str, now_ms: i64, lease_ms: i64, limit: usize) -> Result<Vec<Claimed>> {
        let until = now_ms.saturating_add(lease_ms);
        transaction!(self, |tx| {
            // Candidates, locked; rows another claimer holds are skipped rather than waited for.
            let candidates: Vec<i64> = tx
                .query(
                    &format!(
                        "SELECT d.id FROM deliveries d WHERE {CLAIMABLE} ORDER BY d.event_seq, d.id LIMIT $2 \
                         FOR UPDATE OF d SKIP LOCKED"
                    ),
                    &[&now_ms, &db_count(limit)],
                )
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            if candidates.is_empty() {
                Vec::new()
            } else {
                // Checked again in a new statement, whose snapshot sees what committed while the
                // candidates were being found (another owner's lease, a finished head): only
                // what is still claimable is leased.
                let leased: Vec<i64> = tx
                    .query(
                        &format!(
                            "UPDATE deliveries d SET lease_owner = $3, lease_until_ms = $4 \
                             WHERE d.id = ANY($2) AND {CLAIMABLE} RETURNING d.id"
                        ),
                        &[&now_ms, &candidates, &owner, &until],
                    )
                    .await?
                    .iter()
                    .map(|r| r.try_get(0))
                    .collect::<Result<_, _>>()?;
                let rows = tx
                    .query(
                        &format!(
                            "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq \
                             WHERE d.id = ANY($1) ORDER BY d.event_seq, d.id"
                        ),
                        &[&leased],
                    )
                    .await?;
                let subscriptions: BTreeMap<String, Subscription> =
                    read_subscriptions(&tx, "").await?.into_iter().map(|s| (s.name.clone(), s)).collect();
                let mut claimed = Vec::with_capacity(rows.len());
                for row in &rows {
                    let delivery = delivery_columns(row)?.into_delivery()?;
                    let subscription = subscriptions.get(&delivery.subscription).cloned().ok_or_else(|| {
                        Error::Corrupt(format!("delivery {}: no subscription {}", delivery.id, delivery.subscription))
                    })?;
                    claimed.push(Claimed { delivery, subscription });
                }
                claimed
            }
        })
    }

    async fn renew_delivery_lease(&self, id: i64, owner: &str, now_ms: i64, until_ms: i64) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE deliveries SET lease_until_ms = $4 WHERE id = $1 AND state = 'pending' \
                 AND lease_owner = $2 AND lease_until_ms > $3",
                &[&id, &owner, &now_ms, &until_ms],
            )
            .await?;
        Ok(n > 0)
    }

    async fn finish_deliveries(&self, owner: &str, finished: &[(i64, Outcome)], now_ms: i64) -> Result<Vec<bool>> {
        // In id order, so that two batches never lock the same rows in opposite orders.
        let mut order: Vec<usize> = (0..finished.len()).collect();
        order.sort_by_key(|&i| finished[i].0);
        transaction!(self, |tx| {
            let held_stmt = tx
                .prepare_cached(
                    "SELECT 1 FROM deliveries WHERE id = $1 AND lease_owner = $2 AND state = 'pending' FOR UPDATE",
                )
                .await?;
            let log = tx
                .prepare_cached(
                    "INSERT INTO delivery_attempts (delivery, number, at_ms, status, error, duration_ms) \
                     SELECT $1, COALESCE(MAX(number), 0) + 1, $2, $3, $4, $5 FROM delivery_attempts \
                     WHERE delivery = $1",
                )
                .await?;
            let apply = tx
                .prepare_cached(
                    "UPDATE deliveries SET attempts = attempts + 1, state = $2, \
                     next_attempt_ms = COALESCE($3, next_attempt_ms), last_status = $4, last_error = $5, \
                     lease_owner = NULL, lease_until_ms = NULL, updated_ms = $6 WHERE id = $1",
                )
                .await?;
            let mut held = vec![false; finished.len()];
            for &i in &order {
                let (id, outcome) = &finished[i];
                // Locked: a claim by another owner after the lease ran out, a replay or a purge
                // either committed before (and this finds the lease gone) or waits for this.
                if tx.query_opt(&held_stmt, &[id, &owner]).await?.is_none() {
                    continue;
                }
                let o = OutcomeColumns::of(outcome);
                // Numbered after the log's last entry: a replay resets `attempts`, not the log.
                tx.execute(&log, &[id, &now_ms, &o.status, &o.error, &o.duration_ms]).await?;
                tx.execute(&apply, &[id, &o.state.as_str(), &o.next_attempt_ms, &o.status, &o.error, &now_ms]).await?;
                held[i] = true;
            }
            held
        })
    }

    async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>> {
        let p = filter_params(filter);
        let limit = (filter.limit > 0).then(|| db_count(filter.limit));
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq \
                 WHERE {DELIVERY_FILTER} ORDER BY d.id DESC LIMIT $6"
            ))
            .await?;
        let rows = client.query(&stmt, &[&p.0, &p.1, &p.2, &p.3, &p.4, &limit]).await?;
        rows.iter().map(|r| delivery_columns(r)?.into_delivery()).collect()
    }

    async fn delivery_attempts(&self, id: i64) -> Result<Vec<Attempt>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT delivery, number, at_ms, status, error, duration_ms FROM delivery_attempts \
                 WHERE delivery = $1 ORDER BY number",
            )
            .await?;
        let rows = client.query(&stmt, &[&id]).await?;
        rows.iter()
            .map(|r| {
                Ok(attempt_from_columns(
                    r.try_get(0)?,
                    i64::from(r.try_get::<_, i32>(1)?),
                    r.try_get(2)?,
                    r.try_get::<_, Option<i32>>(3)?.map(i64::from),
                    r.try_get(4)?,
                    r.try_get(5)?,
                ))
            })
            .collect()
    }

    async fn replay_deliveries(&self, filter: &DeliveryFilter, now_ms: i64) -> Result<u64> {
        let p = filter_params(filter);
        let n = self
            .client()
            .await?
            .execute(
                &format!(
                    "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_ms = $6, \
                     lease_owner = NULL, lease_until_ms = NULL, updated_ms = $6 WHERE id IN \
                     (SELECT d.id FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE {DELIVERY_FILTER} \
                     AND NOT (d.state = 'pending' AND d.lease_owner IS NOT NULL AND d.lease_until_ms > $6))"
                ),
                &[&p.0, &p.1, &p.2, &p.3, &p.4, &now_ms],
            )
            .await?;
        Ok(n)
    }

    async fn purge_deliveries(&self, filter: &DeliveryFilter) -> Result<u64> {
        let p = filter_params(filter);
        // Attempts go with their deliveries (ON DELETE CASCADE).
        let n = self
            .client()
            .await?
            .execute(
                &format!(
                    "DELETE FROM deliveries WHERE id IN \
                     (SELECT d.id FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE {DELIVERY_FILTER})"
                ),
                &[&p.0, &p.1, &p.2, &p.3, &p.4],
            )
            .await?;
        Ok(n)
    }

    async fn delivery_counts(&self) -> Result<Vec<DeliveryCounts>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT s.name, \
                 count(d.id) FILTER (WHERE d.state = 'pending' AND d.attempts = 0), \
                 count(d.id) FILTER (WHERE d.state = 'pending' AND d.attempts > 0), \
                 count(d.id) FILTER (WHERE d.state = 'delivered'), count(d.id) FILTER (WHERE d.state = 'dead') \
                 FROM subscriptions s LEFT JOIN deliveries d ON d.subscription = s.name \
                 GROUP BY s.name ORDER BY s.name COLLATE \"C\"",
            )
            .await?;
        let rows = client.query(&stmt, &[]).await?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryCounts {
                    subscription: r.try_get(0)?,
                    pending: size_of(r.try_get(1)?),
                    retrying: size_of(r.try_get(2)?),
                    delivered: size_of(r.try_get(3)?),
                    dead: size_of(r.try_get(4)?),
                })
            })
            .collect()
    }

    async fn prune_events(&self, delivered_before_ms: i64, dead_before_ms: i64) -> Result<(u64, u64)> {
        transaction!(self, |tx| {
            let deliveries = tx
                .execute(
                    "DELETE FROM deliveries WHERE (state = 'delivered' AND updated_ms < $1) \
                     OR (state = 'dead' AND updated_ms < $2)",
                    &[&delivered_before_ms, &dead_before_ms],
                )
                .await?;
            // An event's deliveries are written with it, so one that no delivery references
            // now never will be.
            let events = tx
                .execute(
                    "DELETE FROM events e WHERE e.created_ms < $1 \
                     AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq)",
                    &[&delivered_before_ms],
                )
                .await?;
            (deliveries, events)
        })
    }
}
