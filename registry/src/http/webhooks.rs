//! The admin API's webhooks, deliveries, outbox and task-definition endpoints. Each is
//! allowed by a `berth:` action on the registry's ARN (the bootstrap administrator's
//! `"Action": "*"` covers them); pinning a task definition needs pull on each repository.
//!
//! | endpoint | action |
//! |---|---|
//! | `GET /api/v1/webhooks`, `GET /api/v1/webhooks/<name>` | `berth:ListWebhooks` |
//! | `PUT`, `DELETE /api/v1/webhooks/<name>` | `berth:PutWebhook`, `berth:DeleteWebhook` |
//! | `GET /api/v1/webhooks/<name>/deliveries`, `GET /api/v1/deliveries[?…]`, `GET /api/v1/deliveries/<id>` | `berth:ListDeliveries` |
//! | `POST /api/v1/deliveries/replay?…`, `POST /api/v1/deliveries/purge?…` | `berth:ReplayDeliveries`, `berth:PurgeDeliveries` |
//! | `GET /api/v1/events?after=<seq>&limit=<n>` | `berth:ListEvents` |
//! | `POST /api/v1/task-definitions/resolve[?foreign=keep]` | pull (`ecr:BatchGetImage`, `ecr:GetDownloadUrlForLayer`) per repository |

use axum::Json;
use axum::response::{IntoResponse, Response};
use hyper::{Method, StatusCode};

use super::admin::allow;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::events::admin::{Webhooks, filter_from};
use crate::events::config::WebhookSpec;
use crate::service::Registry;

#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Webhooks,
    Webhook(String),
    WebhookDeliveries(String),
    Deliveries,
    Delivery(i64),
    Replay,
    Purge,
    Events,
    ResolveTaskDefinition,
}

/// The path after `/api/v1/`, split at `/`.
pub fn parse(segs: &[&str]) -> Option<Target> {
    Some(match segs {
        ["webhooks"] => Target::Webhooks,
        ["webhooks", name] => Target::Webhook((*name).to_owned()),
        ["webhooks", name, "deliveries"] => Target::WebhookDeliveries((*name).to_owned()),
        ["deliveries"] => Target::Deliveries,
        ["deliveries", "replay"] => Target::Replay,
        ["deliveries", "purge"] => Target::Purge,
        ["deliveries", id] => Target::Delivery(id.parse().ok()?),
        ["events"] => Target::Events,
        ["task-definitions", "resolve"] => Target::ResolveTaskDefinition,
        _ => return None,
    })
}

pub struct Call<'a> {
    pub reg: &'a Registry,
    pub caller: Option<&'a Caller>,
    pub query: &'a [(String, String)],
    pub body: &'a [u8],
    /// The request's `Host`: image references on it are this registry's.
    pub host: Option<&'a str>,
    /// The path after `/api/v1/`, for messages.
    pub path: &'a str,
}

fn ok<T: serde::Serialize>(status: StatusCode, value: T) -> ApiResult<Response> {
    Ok((status, Json(value)).into_response())
}

pub async fn handle(call: Call<'_>, method: &Method, target: Target) -> ApiResult<Response> {
    let reg = call.reg;
    let hooks = Webhooks { meta: reg.meta.as_ref(), config: &reg.events.config, sealing: &reg.events.sealing };
    let registry_arn = reg.auth.arns.registry();
    let allow = |action: &'static str| allow(reg, call.caller, action, registry_arn.clone());
    match (method, target) {
        (&Method::GET, Target::Webhooks) => {
            allow("berth:ListWebhooks").await?;
            ok(StatusCode::OK, serde_json::json!({ "webhooks": hooks.list().await? }))
        }
        (&Method::GET, Target::Webhook(name)) => {
            allow("berth:ListWebhooks").await?;
            ok(StatusCode::OK, hooks.get(&name).await?)
        }
        (&Method::PUT, Target::Webhook(name)) => {
            let spec: WebhookSpec =
                serde_json::from_slice(call.body).map_err(|e| ApiError::Invalid(format!("request body: {e}")))?;
            allow("berth:PutWebhook").await?;
            let (created, view) = hooks.put(&name, &spec).await?;
            ok(if created { StatusCode::CREATED } else { StatusCode::OK }, view)
        }
        (&Method::DELETE, Target::Webhook(name)) => {
            allow("berth:DeleteWebhook").await?;
            hooks.delete(&name).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (&Method::GET, Target::WebhookDeliveries(name)) => {
            allow("berth:ListDeliveries").await?;
            hooks.get(&name).await?;
            let mut filter = filter_from(call.query)?;
            filter.subscription = Some(name);
            ok(StatusCode::OK, serde_json::json!({ "deliveries": hooks.deliveries(&filter).await? }))
        }
        (&Method::GET, Target::Deliveries) => {
            allow("berth:ListDeliveries").await?;
            ok(StatusCode::OK, serde_json::json!({ "deliveries": hooks.deliveries(&filter_from(call.query)?).await? }))
        }
        (&Method::GET, Target::Delivery(id)) => {
            allow("berth:ListDeliveries").await?;
            ok(StatusCode::OK, hooks.delivery(id).await?)
        }
        (&Method::POST, Target::Replay) => {
            allow("berth:ReplayDeliveries").await?;
            let n = hooks.replay(&filter_from(call.query)?).await?;
            reg.events.wake();
            ok(StatusCode::OK, serde_json::json!({ "replayed": n }))
        }
        (&Method::POST, Target::Purge) => {
            allow("berth:PurgeDeliveries").await?;
            ok(StatusCode::OK, serde_json::json!({ "purged": hooks.purge(&filter_from(call.query)?).await? }))
        }
        (&Method::GET, Target::Events) => {
            allow("berth:ListEvents").await?;
            let mut after = 0i64;
            let mut limit = 100usize;
            for (k, v) in call.query {
                match k.as_str() {
                    "after" => after = v.parse().map_err(|_| ApiError::Invalid(format!("after {v:?}")))?,
                    "limit" => limit = v.parse().map_err(|_| ApiError::Invalid(format!("limit {v:?}")))?,
                    other => return Err(ApiError::Invalid(format!("unknown parameter {other:?}"))),
                }
            }
            ok(StatusCode::OK, serde_json::json!({ "events": reg.meta.events(after, limit.min(1000)).await? }))
        }
        (&Method::POST, Target::ResolveTaskDefinition) => {
            let doc: serde_json::Value = serde_json::from_slice(call.body)
                .map_err(|e| ApiError::Invalid(format!("the task definition is not JSON: {e}")))?;
            let keep_foreign = call.query.iter().any(|(k, v)| k == "foreign" && v == "keep");
            let mut hosts = reg.hosts.clone();
            hosts.extend(call.host.map(str::to_owned));
            ok(StatusCode::OK, reg.pin_task_definition(doc, &hosts, keep_foreign, call.caller).await?)
        }
        (method, _) => Err(ApiError::Unsupported(format!("{method} is not a method of /api/v1/{}", call.path))),
    }
}
