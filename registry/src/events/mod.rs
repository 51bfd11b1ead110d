//! Webhooks: what the registry tells subscribers about changes.
//!
//! The metadata store writes each change's events to its outbox and fans them out to the
//! matching subscriptions in the same transaction (`berth_storage::metadata::events`). This
//! module holds the rest: the settings and the validation of subscriptions (`config`), the
//! three payload formats (`payload`), the `Berth-Signature` header (`signature`), the
//! dispatcher that claims deliveries and sends them (`dispatch`), and the verbs the admin API
//! and the `berth webhooks` / `berth deliveries` commands share (`admin`).

pub mod admin;
pub mod config;
pub mod dispatch;
pub mod payload;
pub mod sealing;
pub mod signature;

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

pub use config::EventsConfig;

/// The registry's side of events: the settings, the dispatcher's wake-up, its counters.
#[derive(Debug)]
pub struct Events {
    pub config: EventsConfig,
    pub context: payload::Context,
    /// Poked after every change this process commits, so its deliveries leave at once
    /// rather than at the next poll.
    wake: Notify,
    pub counters: Counters,
    /// Seals and opens subscription secrets at rest ([`sealing`]).
    pub sealing: crate::auth::SecretSealing,
}

/// Attempts made by this process, by result (the `/metrics` counters).
#[derive(Debug, Default)]
pub struct Counters {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub dead: AtomicU64,
}

impl Counters {
    pub fn get(&self) -> (u64, u64, u64) {
        (self.delivered.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed), self.dead.load(Ordering::Relaxed))
    }
}

impl Events {
    /// `instance` names this process in payloads (host name and listen address).
    pub fn new(
        config: EventsConfig,
        sealing: crate::auth::SecretSealing,
        account: &str,
        region: &str,
        instance: &str,
        addr: &str,
    ) -> Events {
        let source = config.source.clone().unwrap_or_else(|| format!("/berth/{instance}"));
        let context = payload::Context {
            source,
            type_prefix: config.type_prefix.clone(),
            instance: instance.to_owned(),
            addr: addr.to_owned(),
            account: account.to_owned(),
            region: region.to_owned(),
        };
        Events { config, context, wake: Notify::new(), counters: Counters::default(), sealing }
    }

    /// Tells the dispatcher that new deliveries may be waiting.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }
}

/// This machine's name, for payloads and lease owners.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "berth".into())
}
