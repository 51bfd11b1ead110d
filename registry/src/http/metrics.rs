//! `/metrics`: Prometheus text. The webhook deliveries by subscription and state (read from
//! the metadata store, so every replica reports the whole registry), and the attempts this
//! process made by result; sign-ins this process throttled and back-offs it started. Blob
//! integrity: pulls stopped and damage the scrub found, and the scrubs this process completed.

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
    (StatusCode::OK, [(CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// A Prometheus label value.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
