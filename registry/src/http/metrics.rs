//! `/metrics`: Prometheus text. The webhook deliveries by subscription and state (read from
//! the metadata store, so every replica reports the whole registry), and the attempts this
//! process made by result; sign-ins this process throttled and back-offs it started. Blob
//! integrity: pulls stopped and damage the scrub found, and the scrubs this process completed.
//! Usage: registry totals, per key and per quota (never per repository: see [`usage`]).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use hyper::StatusCode;
use hyper::header::CONTENT_TYPE;

use crate::auth::throttle::Reason;
use crate::service::Registry;

pub async fn metrics(State(reg): State<Arc<Registry>>) -> Response {
    let mut out = String::new();
    let counts = match reg.meta.delivery_counts().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot count webhook deliveries");
            return (StatusCode::SERVICE_UNAVAILABLE, format!("# metadata store unavailable: {e}\n")).into_response();
        }
    };
    out.push_str("# HELP berth_webhook_deliveries Webhook deliveries by subscription and state (pending: not yet tried; retrying: pending after a failed attempt).\n");
    out.push_str("# TYPE berth_webhook_deliveries gauge\n");
    for c in &counts {
        let name = escape(&c.subscription);
        for (state, n) in
            [("pending", c.pending), ("retrying", c.retrying), ("delivered", c.delivered), ("dead", c.dead)]
        {
            let _ = writeln!(out, "berth_webhook_deliveries{{subscription=\"{name}\",state=\"{state}\"}} {n}");
        }
    }
    let (delivered, failed, dead) = reg.events.counters.get();
    out.push_str("# HELP berth_webhook_attempts_total Webhook delivery attempts made by this process, by result.\n");
    out.push_str("# TYPE berth_webhook_attempts_total counter\n");
    for (result, n) in [("delivered", delivered), ("failed", failed), ("dead_lettered", dead)] {
        let _ = writeln!(out, "berth_webhook_attempts_total{{result=\"{result}\"}} {n}");
    }
    let throttle = reg.auth.throttle_counts();
    out.push_str("# HELP berth_auth_throttled_total Sign-ins this process refused before checking their secret, by the count that refused them.\n");
    out.push_str("# TYPE berth_auth_throttled_total counter\n");
    for (reason, n) in Reason::ALL.iter().zip(throttle.refused) {
        let _ = writeln!(out, "berth_auth_throttled_total{{reason=\"{}\"}} {n}", reason.as_str());
    }
    out.push_str("# HELP berth_auth_backoffs_total Sign-in back-offs (lockouts) this process started after failed sign-ins, by count.\n");
    out.push_str("# TYPE berth_auth_backoffs_total counter\n");
    for (reason, n) in Reason::ALL.iter().zip(throttle.backoffs) {
        let _ = writeln!(out, "berth_auth_backoffs_total{{reason=\"{}\"}} {n}", reason.as_str());
    }
    reg.integrity.render(&mut out);
    if let Err(e) = usage(&reg, &mut out).await {
        tracing::warn!(error = %e, "metrics: cannot read usage");
        return (StatusCode::SERVICE_UNAVAILABLE, format!("# metadata store unavailable: {e}\n")).into_response();
    }
    (StatusCode::OK, [(CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Usage as gauges, read from the metadata store's counters (a few rows, no scan), so every
/// replica reports the whole registry. Registry totals, per key name and per quota: sets an
/// operator chooses and keeps small. Not per repository: one series per repository would
/// grow without bound as repositories are created (`GET /api/v1/usage` lists them).
async fn usage(reg: &Registry, out: &mut String) -> crate::error::ApiResult<()> {
    let u = reg.meta.registry_usage().await?;
    let gauges: [(&str, &str, f64); 8] = [
        ("berth_repositories", "Repositories.", u.repositories as f64),
        (
            "berth_usage_bytes",
            "Bytes of blobs linked, summed over repositories (shared blobs count in each).",
            u.bytes as f64,
        ),
        ("berth_usage_blob_links", "Blob links, summed over repositories.", u.blobs as f64),
        ("berth_usage_manifests", "Manifests, summed over repositories.", u.manifests as f64),
        ("berth_usage_tags", "Tags, summed over repositories.", u.tags as f64),
        ("berth_stored_bytes", "Bytes of the distinct blobs stored, each once (deduplicated).", u.stored_bytes as f64),
        ("berth_stored_blobs", "Distinct blobs stored.", u.stored_blobs as f64),
        ("berth_dedupe_ratio", "berth_usage_bytes / berth_stored_bytes: what deduplication saves.", u.dedupe_ratio),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    }
    out.push_str("# HELP berth_key_bytes Bytes (plaintext sizes) of the copies sealed for each key name.\n");
    out.push_str("# TYPE berth_key_bytes gauge\n");
    for k in &u.keys {
        let _ = writeln!(out, "berth_key_bytes{{key=\"{}\"}} {}", escape(&k.key), k.bytes);
    }
    out.push_str("# HELP berth_key_copies Copies sealed for each key name.\n# TYPE berth_key_copies gauge\n");
    for k in &u.keys {
        let _ = writeln!(out, "berth_key_copies{{key=\"{}\"}} {}", escape(&k.key), k.copies);
    }
    let quotas = reg.quota_views().await?;
    out.push_str("# HELP berth_quota_limit Each quota's limit, by scope and dimension (bytes, images).\n");
    out.push_str("# TYPE berth_quota_limit gauge\n");
    for q in &quotas {
        for (dimension, limit) in [("bytes", q.max_bytes), ("images", q.max_images)] {
            if let Some(limit) = limit {
                let _ = writeln!(
                    out,
                    "berth_quota_limit{{scope=\"{}\",dimension=\"{dimension}\"}} {limit}",
                    escape(&q.scope)
                );
            }
        }
    }
    out.push_str("# HELP berth_quota_used Each quota's use, by scope and dimension (bytes, images).\n");
    out.push_str("# TYPE berth_quota_used gauge\n");
    for q in &quotas {
        for (dimension, limit, used) in [("bytes", q.max_bytes, q.used_bytes), ("images", q.max_images, q.used_images)]
        {
            if limit.is_some() {
                let _ = writeln!(
                    out,
                    "berth_quota_used{{scope=\"{}\",dimension=\"{dimension}\"}} {used}",
                    escape(&q.scope)
                );
            }
        }
    }
    Ok(())
}

/// A Prometheus label value.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
