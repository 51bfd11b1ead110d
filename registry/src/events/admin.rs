//! The verbs over subscriptions and deliveries that the admin API (`/api/v1/webhooks`,
//! `/api/v1/deliveries`) and the `berth webhooks` / `berth deliveries` commands share, with
//! the same validation. A subscription's secret is shown once, when Berth generated it.

use std::collections::BTreeMap;

use berth_storage::MetadataStore;
use berth_storage::metadata::events::unix_now_ms;
use berth_storage::metadata::{
    Attempt, Delivery, DeliveryCounts, DeliveryFilter, Subscription, SubscriptionKind, SubscriptionSource,
};
use serde::Serialize;

use super::config::{EventsConfig, WebhookSpec, check_name, validate};
use crate::error::{ApiError, ApiResult};

/// A subscription as shown: everything but its secret.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookView {
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    pub repositories: Vec<String>,
    pub tags: Vec<String>,
    pub format: String,
    pub headers: BTreeMap<String, String>,
    pub timeout: String,
    pub max_attempts: u32,
    pub enabled: bool,
    pub source: SubscriptionSource,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<DeliveryCounts>,
    /// Only in the answer that generated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl WebhookView {
    fn of(s: &Subscription, counts: Option<DeliveryCounts>) -> WebhookView {
        WebhookView {
            name: s.name.clone(),
            url: s.url.clone(),
            events: s.events.iter().map(|k| k.as_str().to_owned()).collect(),
            repositories: s.repositories.clone(),
            tags: s.tags.clone(),
            format: s.format.as_str().to_owned(),
            headers: s.headers.clone(),
            timeout: humantime::format_duration(std::time::Duration::from_millis(s.timeout_ms)).to_string(),
            max_attempts: s.max_attempts,
            enabled: s.enabled,
            source: s.source,
            created_at: s.created_at,
            deliveries: counts,
            secret: None,
        }
    }
}

/// One delivery with its attempts.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    #[serde(flatten)]
    pub delivery: Delivery,
    pub attempts_log: Vec<Attempt>,
}

pub struct Webhooks<'a> {
    pub meta: &'a dyn MetadataStore,
    pub config: &'a EventsConfig,
    /// Secrets are stored sealed ([`super::sealing`]).
    pub sealing: &'a crate::auth::SecretSealing,
}

impl Webhooks<'_> {
    pub async fn list(&self) -> ApiResult<Vec<WebhookView>> {
        let mut counts: BTreeMap<String, DeliveryCounts> =
            self.meta.delivery_counts().await?.into_iter().map(|c| (c.subscription.clone(), c)).collect();
        Ok(self
            .meta
            .subscriptions()
            .await?
            .iter()
            // Replication destinations are shown by `berth replication`, not as webhooks.
            .filter(|s| s.kind == SubscriptionKind::Webhook)
            .map(|s| WebhookView::of(s, counts.remove(&s.name)))
            .collect())
    }

    pub async fn get(&self, name: &str) -> ApiResult<WebhookView> {
        self.list().await?.into_iter().find(|w| w.name == name).ok_or_else(|| no_webhook(name))
    }

    /// Creates or replaces `name`. Returns whether it was created, and its view (with the
    /// secret when Berth generated it).
    pub async fn put(&self, name: &str, spec: &WebhookSpec) -> ApiResult<(bool, WebhookView)> {
        check_name(name).map_err(ApiError::Invalid)?;
        let existing = self.meta.subscriptions().await?.into_iter().find(|s| s.name == name);
        if existing.as_ref().is_some_and(|s| s.kind == SubscriptionKind::Replication) {
            return Err(replication_destination(name));
        }
        if existing.as_ref().is_some_and(|s| s.source == SubscriptionSource::Config) {
            return Err(ApiError::Conflict(format!(
                "webhook {name} is defined in the configuration file (events.webhooks); change it there"
            )));
        }
        let generated = match (&spec.secret, &existing) {
            (Some(_), _) => None,
            (None, Some(s)) => {
                Some((super::sealing::open(self.sealing, name, &s.secret).map_err(ApiError::Internal)?, false))
            }
            (None, None) => Some((new_secret(), true)),
        };
        let fallback = generated.as_ref().map(|(s, _)| s.clone()).unwrap_or_default();
        let mut sub =
            validate(name, spec, fallback, SubscriptionSource::Api, self.config.lease).map_err(ApiError::Invalid)?;
        sub.secret = super::sealing::seal(self.sealing, name, &sub.secret).map_err(ApiError::Internal)?;
        let created = self.meta.put_subscription(&sub).await?;
        tracing::info!(webhook = %name, webhook.url = %sub.url, created, "webhook saved");
        let mut view = self.get(name).await?;
        if let Some((secret, true)) = generated {
            view.secret = Some(secret);
        }
        Ok((created, view))
    }

    pub async fn delete(&self, name: &str) -> ApiResult<()> {
        let existing = self.meta.subscriptions().await?.into_iter().find(|s| s.name == name);
        match existing {
            None => Err(no_webhook(name)),
            Some(s) if s.kind == SubscriptionKind::Replication => Err(replication_destination(name)),
            Some(s) if s.source == SubscriptionSource::Config => Err(ApiError::Conflict(format!(
                "webhook {name} is defined in the configuration file (events.webhooks); remove it there"
            ))),
            Some(_) => {
                self.meta.delete_subscription(name).await?;
                tracing::info!(webhook = %name, "webhook deleted with its deliveries");
                Ok(())
            }
        }
    }

    pub async fn deliveries(&self, filter: &DeliveryFilter) -> ApiResult<Vec<Delivery>> {
        Ok(self.meta.deliveries(filter).await?)
    }

    pub async fn delivery(&self, id: i64) -> ApiResult<DeliveryView> {
        let filter = DeliveryFilter { id: Some(id), ..DeliveryFilter::default() };
        let delivery = self.meta.deliveries(&filter).await?.into_iter().next().ok_or_else(|| {
            ApiError::NotFound(format!("no delivery {id} (delivered ones are pruned after events.retention)"))
        })?;
        Ok(DeliveryView { attempts_log: self.meta.delivery_attempts(id).await?, delivery })
    }

    /// Sends the selected deliveries again. A filter selecting nothing in particular is
    /// refused: replaying every delivery ever kept is rarely what was meant.
    pub async fn replay(&self, filter: &DeliveryFilter) -> ApiResult<u64> {
        require_selector(filter, "replay")?;
        let n = self.meta.replay_deliveries(filter, unix_now_ms()).await?;
        tracing::info!(deliveries = n, filter = ?filter, "webhook deliveries replayed");
        Ok(n)
    }

    pub async fn purge(&self, filter: &DeliveryFilter) -> ApiResult<u64> {
        require_selector(filter, "purge")?;
        let n = self.meta.purge_deliveries(filter).await?;
        tracing::info!(deliveries = n, filter = ?filter, "webhook deliveries purged");
        Ok(n)
    }
}

fn require_selector(f: &DeliveryFilter, verb: &str) -> ApiResult<()> {
    if f.subscription.is_none() && f.state.is_none() && f.repository.is_none() && f.id.is_none() && f.event_id.is_none()
    {
        return Err(ApiError::Invalid(format!(
            "{verb}: say which deliveries (a subscription, a state, a repository, a delivery id or an event id)"
        )));
    }
    Ok(())
}

fn replication_destination(name: &str) -> ApiError {
    ApiError::Conflict(format!(
        "{name} is a replication destination, not a webhook; change it with `berth replication` (/api/v1/replication)"
    ))
}

fn no_webhook(name: &str) -> ApiError {
    ApiError::NotFound(format!("no webhook {name}"))
}

/// 256 random bits, hex.
fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    match aws_lc_rs::rand::fill(&mut bytes) {
        Ok(()) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        Err(_) => format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()),
    }
}

/// Parses a delivery filter from query-style pairs (`subscription`, `state`, `repository`,
/// `id`, `event`, `limit`).
pub fn filter_from(pairs: &[(String, String)]) -> ApiResult<DeliveryFilter> {
    let mut f = DeliveryFilter { limit: 100, ..DeliveryFilter::default() };
    for (k, v) in pairs {
        match k.as_str() {
            "subscription" | "webhook" => f.subscription = Some(v.clone()),
            "state" => f.state = Some(v.parse().map_err(ApiError::Invalid)?),
            "repository" => f.repository = Some(v.clone()),
            "id" => f.id = Some(v.parse().map_err(|_| ApiError::Invalid(format!("id {v:?} is not a number")))?),
            "event" => f.event_id = Some(v.clone()),
            "limit" => {
                f.limit = v.parse().map_err(|_| ApiError::Invalid(format!("limit {v:?} is not a number")))?;
            }
            other => return Err(ApiError::Invalid(format!("unknown parameter {other:?}"))),
        }
    }
    Ok(f)
}
