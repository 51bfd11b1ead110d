//! The dispatcher: claims due deliveries from the metadata store with a lease, sends each
//! (rendered in its subscription's format, signed), and records the attempt. Any number of
//! processes may run one against the same store: a claim takes only the oldest pending
//! delivery of each (subscription, repository) line, so lines are delivered in order, one
//! request at a time, and a process that dies leaves its claims to others when the lease ends.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use berth_storage::MetadataStore;
use berth_storage::metadata::events::unix_now_ms;
use berth_storage::metadata::{Claimed, Outcome, SubscriptionKind};
use hyper::header::{CONTENT_TYPE, RETRY_AFTER};
use tokio::task::{JoinHandle, JoinSet};

use super::{Events, payload, signature};
use crate::service::replication::copy::{CopyError, Replicator};

/// How often delivered and dead deliveries past their retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Starts the dispatcher of this process; `None` (logged) when no HTTP client can be built,
/// e.g. with no CA certificates on the machine. Events are still recorded then, for another
/// process or a restart to deliver. Deliveries owed to replication destinations (subscriptions
/// of kind replication) go to `replicator`; without one they wait for a process that has it.
pub fn spawn(
    meta: Arc<dyn MetadataStore>,
    events: Arc<Events>,
    replicator: Option<Arc<Replicator>>,
) -> Option<JoinHandle<()>> {
    let owner =
        format!("{}:{}:{}", super::host_name(), std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Berth-Webhooks/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .build();
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e,
                "webhook delivery is off in this process: no HTTP client (are CA certificates installed, \
                 e.g. /etc/ssl/certs/ca-certificates.crt?); events are still recorded");
            return None;
        }
    };
    tracing::info!(events.owner = %owner, events.concurrency = events.config.concurrency, "webhook dispatcher started");
    Some(tokio::spawn(run(Dispatcher { meta, events, client, owner: Arc::from(owner), replicator })))
}

#[derive(Clone)]
struct Dispatcher {
    meta: Arc<dyn MetadataStore>,
    events: Arc<Events>,
    client: reqwest::Client,
    owner: Arc<str>,
    replicator: Option<Arc<Replicator>>,
}

/// An attempt made, to be recorded.
struct Finished {
    id: i64,
    webhook: String,
    outcome: Outcome,
}

async fn run(d: Dispatcher) {
    let config = &d.events.config;
    let concurrency = config.concurrency.max(1);
    let lease_ms = i64::try_from(config.lease.as_millis()).unwrap_or(i64::MAX);
    let mut inflight: JoinSet<Finished> = JoinSet::new();
    let mut finished: Vec<Finished> = Vec::new();
    let mut last_prune: Option<Instant> = None;
    let mut failing_since: Option<Instant> = None;
    loop {
        // Every attempt that ended since the last turn, in one transaction, before claiming:
        // a line's next delivery is claimable only once its head is recorded.
        if !finished.is_empty() {
            d.record(std::mem::take(&mut finished)).await;
        }
        let free = concurrency - inflight.len().min(concurrency);
        if free > 0 {
            match d.meta.claim_deliveries(&d.owner, unix_now_ms(), lease_ms, free).await {
                Ok(claimed) => {
                    failing_since = None;
                    for c in claimed {
                        let d = d.clone();
                        inflight.spawn(async move { d.deliver(c).await });
                    }
                }
                Err(e) => {
                    // Logged once a minute while the store keeps failing.
                    if failing_since.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        tracing::warn!(error = %e, "webhook dispatcher cannot claim deliveries");
                        failing_since = Some(Instant::now());
                    }
                }
            }
        }
        if last_prune.is_none_or(|t| t.elapsed() > PRUNE_EVERY) {
            last_prune = Some(Instant::now());
            d.prune().await;
        }
        tokio::select! {
            Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                finished.extend(joined(done));
                while let Some(done) = inflight.try_join_next() {
                    finished.extend(joined(done));
                }
            }
            () = d.events.woken() => {}
            () = tokio::time::sleep(config.poll_interval) => {}
        }
    }
}

impl Dispatcher {
    /// Records attempts that ended, all in one transaction of the store.
    async fn record(&self, finished: Vec<Finished>) {
        let now = unix_now_ms();
        let batch: Vec<(i64, Outcome)> = finished.iter().map(|f| (f.id, f.outcome.clone())).collect();
        match self.meta.finish_deliveries(&self.owner, &batch, now).await {
            Ok(held) => {
                for (f, held) in finished.iter().zip(held) {
                    if !held {
                        tracing::warn!(webhook = %f.webhook, delivery.id = f.id,
                            "the delivery's lease ended before its attempt was recorded; another process may send it again");
                    }
                }
            }
            Err(e) => {
                for f in &finished {
                    tracing::warn!(webhook = %f.webhook, delivery.id = f.id, error = %e,
                        "could not record a webhook attempt; it will be sent again when the lease ends");
                }
            }
        }
    }

    /// Sends one delivery and says how it went (`record` stores that).
    async fn deliver(&self, claimed: Claimed) -> Finished {
        if claimed.subscription.kind == SubscriptionKind::Replication {
            return self.replicate(claimed).await;
        }
        let Claimed { delivery, subscription: sub } = claimed;
        let event = &delivery.event;
        let rendered = payload::render(sub.format, event, &self.events.context);
        let attempt = delivery.attempts + 1;
        let sent_at = unix_now_ms() / 1000;
        let secret = match super::sealing::open(&self.events.sealing, &sub.name, &sub.secret) {
            Ok(secret) => secret,
            Err(e) => {
                // Not sent unsigned: the attempt fails, is retried, and the log says why.
                tracing::error!(webhook = %sub.name, error = %e, "cannot sign the delivery");
                return self.failed_to_sign(&delivery, &sub, e);
            }
        };
        let mut request = self
            .client
            .post(&sub.url)
            .timeout(Duration::from_millis(sub.timeout_ms))
            .header(CONTENT_TYPE, rendered.content_type)
            .header(signature::HEADER, signature::sign(&secret, sent_at, &rendered.body))
            .header("berth-event-id", &event.id)
            .header("idempotency-key", &event.id)
            .header("berth-event-type", event.kind.as_str())
            .header("berth-delivery", delivery.id.to_string())
            .header("berth-delivery-attempt", attempt.to_string());
        for (k, v) in &sub.headers {
            request = request.header(k, v);
        }
        let started = Instant::now();
        let result = request.body(rendered.body).send().await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, error, retry_after) = match result {
            Ok(response) if response.status().is_success() => (Some(response.status().as_u16()), None, None),
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                (Some(status.as_u16()), Some(format!("the receiver answered {status}")), retry_after)
            }
            Err(e) => (None, Some(describe(&e, sub.timeout_ms)), None),
        };
        let now = unix_now_ms();
        let outcome = match error {
            None => Outcome::Delivered { status: status.unwrap_or(200), duration_ms },
            Some(error) if attempt >= sub.max_attempts => Outcome::Dead { status, error, duration_ms },
            Some(error) => {
                let delay = self.backoff(attempt, retry_after);
                let next_attempt_ms = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                Outcome::Retry { status, error, duration_ms, next_attempt_ms }
            }
        };
        let counters = &self.events.counters;
        let counter = match &outcome {
            Outcome::Delivered { .. } => &counters.delivered,
            Outcome::Retry { .. } => &counters.failed,
            Outcome::Dead { .. } => &counters.dead,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match &outcome {
            Outcome::Delivered { status, .. } => tracing::info!(webhook = %sub.name, delivery.id = delivery.id,
                event.id = %event.id, event.kind = %event.kind, repo.name = %event.repository, attempt, http.status = status,
                duration_ms, "webhook delivered"),
            Outcome::Retry { error, next_attempt_ms, .. } => tracing::warn!(webhook = %sub.name,
                delivery.id = delivery.id, event.id = %event.id, attempt, max_attempts = sub.max_attempts, error = %error,
                retry_in_ms = next_attempt_ms - now, "webhook delivery failed; will retry"),
            Outcome::Dead { error, .. } => tracing::error!(webhook = %sub.name, delivery.id = delivery.id,
                event.id = %event.id, attempt, error = %error,
                "webhook delivery failed for the last time: dead-lettered (berth deliveries replay to resend)"),
        }
        Finished { id: delivery.id, webhook: sub.name, outcome }
    }

    /// Copies the image of a delivery owed to a replication destination
    /// ([`crate::service::replication::copy`]), with the same retries and dead letters as a
    /// webhook, and records the status the outcome leaves.
    async fn replicate(&self, claimed: Claimed) -> Finished {
        let Claimed { delivery, subscription: sub } = claimed;
        let attempt = delivery.attempts + 1;
        let started = Instant::now();
        let result = match &self.replicator {
            Some(r) => self.renewing(delivery.id, r.replicate(&delivery, &sub)).await,
            None => Err(CopyError::Retry("this process does not replicate".into())),
        };
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let outcome = match result {
            Ok(()) => Outcome::Delivered { status: 200, duration_ms },
            Err(CopyError::Permanent(error)) => Outcome::Dead { status: None, error, duration_ms },
            Err(CopyError::Retry(error)) if attempt >= sub.max_attempts => {
                Outcome::Dead { status: None, error, duration_ms }
            }
            Err(CopyError::Retry(error)) => {
                let delay = self.backoff(attempt, None);
                let next_attempt_ms = unix_now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                Outcome::Retry { status: None, error, duration_ms, next_attempt_ms }
            }
        };
        let counters = &self.events.counters;
        let counter = match &outcome {
            Outcome::Delivered { .. } => &counters.delivered,
            Outcome::Retry { .. } => &counters.failed,
            Outcome::Dead { .. } => &counters.dead,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let event = &delivery.event;
        match &outcome {
            Outcome::Delivered { .. } => {}
            Outcome::Retry { error, next_attempt_ms, .. } => tracing::warn!(replication.destination = %sub.name,
                delivery.id = delivery.id, repo.name = %event.repository, manifest.digest = event.digest.as_deref().unwrap_or(""),
                attempt, max_attempts = sub.max_attempts, error = %error, retry_in_ms = next_attempt_ms - unix_now_ms(),
                "replication failed; will retry"),
            Outcome::Dead { error, .. } => tracing::error!(replication.destination = %sub.name,
                delivery.id = delivery.id, repo.name = %event.repository, manifest.digest = event.digest.as_deref().unwrap_or(""),
                attempt, error = %error, "replication failed for the last time: dead-lettered (berth deliveries replay to retry)"),
        }
        if let Some(r) = &self.replicator {
            r.finished(&delivery, &sub, &outcome).await;
        }
        Finished { id: delivery.id, webhook: sub.name, outcome }
    }

    /// Runs `work` while renewing this process's lease on delivery `id` every third of
    /// `events.lease`: a copy of a large image may take longer than a lease, and must not be
    /// started again meanwhile by another process (or this one). A process that stops stops
    /// renewing, and the delivery is claimable again when the lease ends.
    async fn renewing<T>(&self, id: i64, work: impl std::future::Future<Output = T>) -> T {
        let lease = self.events.config.lease;
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        let mut tick = tokio::time::interval((lease / 3).max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = tick.tick() => {
                    let now = unix_now_ms();
                    match self.meta.renew_delivery_lease(id, &self.owner, now, now.saturating_add(lease_ms)).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(delivery.id = id,
                            "the delivery's lease ended before it could be renewed; another process may copy it too"),
                        Err(e) => tracing::warn!(delivery.id = id, error = %e, "could not renew a delivery's lease"),
                    }
                }
            }
        }
    }

    /// The outcome of a delivery whose secret does not open (its key is missing from this
    /// process's ring): not sent, counted as a failed attempt, retried with backoff.
    fn failed_to_sign(
        &self,
        delivery: &berth_storage::metadata::Delivery,
        sub: &berth_storage::metadata::Subscription,
        error: String,
    ) -> Finished {
        let attempt = delivery.attempts + 1;
        let error = format!("not sent: {error}");
        let outcome = if attempt >= sub.max_attempts {
            self.events.counters.dead.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Outcome::Dead { status: None, error, duration_ms: 0 }
        } else {
            self.events.counters.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let delay = self.backoff(attempt, None);
            let next_attempt_ms = unix_now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
            Outcome::Retry { status: None, error, duration_ms: 0, next_attempt_ms }
        };
        Finished { id: delivery.id, webhook: sub.name.clone(), outcome }
    }

    /// The delay before attempt `attempt + 1`: `backoff_initial × 2^(attempt-1)` capped at
    /// `backoff_max`, drawn uniformly from its upper half (jitter, so that receivers coming
    /// back are not hit by every sender at once); at least what `Retry-After` asked for.
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let c = &self.events.config;
        let exp = c.backoff_initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(c.backoff_max);
        let half = exp / 2;
        let jitter = half.mul_f64(rand_unit());
        let delay = half + jitter;
        match retry_after {
            Some(r) => delay.max(r.min(c.backoff_max)),
            None => delay,
        }
    }

    async fn prune(&self) {
        let c = &self.events.config;
        let now = unix_now_ms();
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2);
        match self.meta.prune_events(now - ms(c.retention), now - ms(c.dead_retention)).await {
            Ok((0, 0)) => {}
            Ok((deliveries, events)) => tracing::info!(deliveries, events, "pruned old webhook deliveries and events"),
            Err(e) => tracing::warn!(error = %e, "pruning webhook deliveries failed"),
        }
    }
}

/// What a delivery task returned; a task that panicked is logged, and its delivery is sent
/// again when its lease ends.
fn joined(done: Result<Finished, tokio::task::JoinError>) -> Option<Finished> {
    done.map_err(
        |e| tracing::error!(error = %e, "a webhook delivery task failed; it is sent again when its lease ends"),
    )
    .ok()
}

/// A failed request in a few words (no URL: it may carry a token in its query).
fn describe(e: &reqwest::Error, timeout_ms: u64) -> String {
    if e.is_timeout() {
        return format!("no answer within the {timeout_ms} ms timeout");
    }
    let mut text = if e.is_connect() { "could not connect".to_owned() } else { "request failed".to_owned() };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `Retry-After` (RFC 9110 §10.2.3): whole seconds, or an HTTP-date, which counts from `now`
/// (a date already past asks for no wait). Anything else is ignored, as if the header were absent.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A uniform draw from [0, 1).
fn rand_unit() -> f64 {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    let n = u64::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]]);
    (n >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap_or(SystemTime::UNIX_EPOCH);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:51:07 GMT", now), Some(Duration::from_secs(90)));
        // The obsolete forms RFC 9110 still asks recipients to accept.
        assert_eq!(parse_retry_after("Sunday, 06-Nov-94 08:50:37 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Sun Nov  6 08:49:47 1994", now), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }
}
