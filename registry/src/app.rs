//! Assembling a running registry from its configuration.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use berth_storage::metadata::Change;
use berth_storage::{BlobStore, MetadataStore, PostgresStore, SqliteStore};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

use berth_storage::crypt::keyring::KeySource;
use berth_storage::crypt::{Kek, KeyRing};
use berth_storage::metadata::KeyState;

use crate::config::{Config, MetadataBackend, StorageBackend};
use crate::service::encryption::Encryption;
use crate::service::{Registry, Settings};

/// The registry could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("blob storage at {path}: {source}")]
    Storage { path: String, source: berth_storage::Error },
    /// `path` is the SQLite file, or the PostgreSQL URL with its password masked. The cause is
    /// in the message and not a `source` (named `cause`), so `{:#}` does not print it twice.
    #[error("metadata database at {path}: {cause}")]
    Metadata { path: String, cause: berth_storage::Error },
    #[error("metadata.url is required with metadata.backend = \"postgres\"")]
    MissingMetadataUrl,
    #[error("encryption keys: {0}")]
    Keys(String),
    /// The data folder or database file is open to other users (the message says the fix).
    #[error("{0}")]
    DataDir(String),
    /// A command other than `serve` was pointed where no registry is; the message names the
    /// path or database it looked at and the flags that name another.
    #[error("{0}")]
    NoRegistry(String),
    #[error("authentication: {0}")]
    Auth(String),
    #[error("events: {0}")]
    Events(String),
    #[error("pull-through cache: {0}")]
    PullThrough(String),
    /// The certificate or key file named in the message.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// A registry ready to serve: its stores opened, its schema migrated.
#[derive(Debug, Clone)]
pub struct App {
    registry: Arc<Registry>,
}

/// Who opens the stores, which decides what opening may create and what it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// `berth serve`: a first start creates the data folder, the metadata database, the
    /// default key and (with authentication on) the administrator, and the start logs its
    /// warnings about the settings (authentication or encryption off, keys beside the data).
    Serve,
    /// Every other command: works on a registry that exists, creates none
    /// ([`StartError::NoRegistry`]), and logs only what goes wrong.
    Command,
}

impl App {
    /// Opens the registry for `berth serve`, creating it on a first start.
    pub async fn open(config: &Config) -> Result<App, StartError> {
        App::open_as(config, Opening::Serve, &|_| {}).await
    }

    /// [`App::open`], with `tune` adjusting the settings derived from `config` first: for
    /// tests and embedding, which may go where configuration may not (a GC grace period of
    /// seconds).
    pub async fn open_tuned(config: &Config, tune: &(dyn Fn(&mut Settings) + Sync)) -> Result<App, StartError> {
        App::open_as(config, Opening::Serve, tune).await
    }

    /// Opens the registry that `config` names, for a command other than `serve`: refused
    /// ([`StartError::NoRegistry`]), with nothing created, when it is not there.
    pub async fn open_existing(config: &Config) -> Result<App, StartError> {
        App::open_as(config, Opening::Command, &|_| {}).await
    }

    async fn open_as(
        config: &Config,
        opening: Opening,
        tune: &(dyn Fn(&mut Settings) + Sync),
    ) -> Result<App, StartError> {
        if opening == Opening::Command {
            if let Some(missing) = crate::data_dir::missing_registry(config) {
                return Err(StartError::NoRegistry(missing));
            }
            crate::data_dir::check_existing(config).map_err(StartError::DataDir)?;
        }
        // What can fail without creating anything comes first (the webhooks of the
        // configuration, the key ring, the remote stores), so a first start that cannot
        // succeed leaves no data folder behind.
        let mut subscriptions = crate::events::config::from_config(&config.events).map_err(StartError::Events)?;
        let ring = KeyRing::load(Some(&config.key_dir()), std::env::var("BERTH_KEYS").ok().as_deref())
            .map_err(|e| StartError::Keys(e.to_string()))?;
        let remote_blobs = match config.storage.backend {
            StorageBackend::S3 => Some(open_blobs(config, opening).await?),
            StorageBackend::Filesystem | StorageBackend::Memory => None,
        };
        let remote_meta = match config.metadata.backend {
            MetadataBackend::Postgres => Some(open_metadata(config, opening).await?),
            MetadataBackend::Sqlite => None,
        };
        if opening == Opening::Serve {
            crate::data_dir::secure(config).map_err(StartError::DataDir)?;
        }
        let meta = match remote_meta {
            Some(meta) => meta,
            None => open_metadata(config, opening).await?,
        };
        let blobs = match remote_blobs {
            Some(blobs) => blobs,
            None => open_blobs(config, opening).await?,
        };
        let serving = opening == Opening::Serve;
        let mut settings = Settings {
            delete_manifests: config.delete.manifests,
            delete_blobs: config.delete.blobs,
            upload_max_age: config.uploads.max_age,
            uploads_per_repository: config.uploads.max_open_per_repository,
            uploads_per_principal: config.uploads.max_open_per_principal,
            quotas: config.quotas.records(),
            quota_warning: config.quotas.warning,
            gc: crate::service::gc::GcSettings { grace: config.gc.grace, ..Default::default() },
            create_on_push: config.registry.create_on_push,
            pull_flush: crate::service::pulls::FLUSH_INTERVAL,
            verify_reads: config.storage.verify_reads,
        };
        tune(&mut settings);
        let enc = &config.encryption;
        let rules = enc.repositories.iter().map(|r| (r.prefix.clone(), r.key.clone())).collect();
        let crypt = Encryption::new(Arc::new(ring), enc.enabled, enc.default_key.clone(), rules);
        let sealing = prepare_default_key(&crypt, meta.as_ref(), config, opening).await?;
        let secrets = crate::auth::SecretSealing { ring: crypt.ring.clone(), kek: sealing };
        let auth =
            crate::auth::Authority::open(&config.auth, meta.as_ref(), &secrets).await.map_err(StartError::Auth)?;
        match (serving, config.auth.enabled) {
            // Only with authentication on: a registry run without it gets its administrator
            // (and password file) at the first start with it on.
            (true, true) => auth.create_first_admin(meta.as_ref(), &config.data_dir).await.map_err(StartError::Auth)?,
            (true, false) => tracing::warn!(listen = %config.listen,
                "authentication is off (auth.enabled = false): anyone who can reach the listener can push, pull and delete"),
            (false, _) => {}
        }
        for s in &mut subscriptions {
            s.secret = crate::events::sealing::seal(&secrets, &s.name, &s.secret).map_err(StartError::Events)?;
        }
        meta.sync_config_subscriptions(&subscriptions).await.map_err(|e| match e {
            berth_storage::Error::Conflict => StartError::Events(
                "a webhook of events.webhooks has the name of one created through the admin API; rename one of them"
                    .into(),
            ),
            e => StartError::Events(e.to_string()),
        })?;
        reseal_webhook_secrets(meta.as_ref(), &secrets).await;
        let events = Arc::new(crate::events::Events::new(
            config.events.clone(),
            secrets,
            &config.auth.account,
            &config.auth.region,
            &crate::events::host_name(),
            &config.listen.to_string(),
        ));
        let pull_through = crate::service::pull_through::PullThroughCache::new(&config.pull_through)
            .map_err(StartError::PullThrough)?;
        let registry = Arc::new(Registry {
            blobs,
            meta,
            settings,
            manifests: Default::default(),
            crypt,
            auth,
            events,
            hosts: config.hosts.clone(),
            integrity: Default::default(),
            seen: Default::default(),
            pulls: Default::default(),
            pull_through,
        });
        crate::service::gc::seen::spawn_flusher(Arc::downgrade(&registry.seen), registry.meta.clone());
        crate::service::pulls::spawn_flusher(
            Arc::downgrade(&registry.pulls),
            registry.meta.clone(),
            registry.settings.pull_flush,
        );
        registry.sync_replication_config(&config.replication).await.map_err(StartError::Events)?;
        if let Some(changes) = registry.meta.changes() {
            tokio::spawn(follow_changes(Arc::downgrade(&registry), changes));
        }
        Ok(App { registry })
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn router(&self) -> Router {
        crate::http::router(self.registry.clone())
    }

    /// Starts this process's webhook dispatcher, unless `events.enabled = false`.
    pub fn spawn_dispatcher(&self) -> Option<JoinHandle<()>> {
        let r = &self.registry;
        if !r.events.config.enabled {
            tracing::info!(
                "webhook delivery is off in this process (events.enabled = false); events are still recorded"
            );
            return None;
        }
        let replicator = std::sync::Arc::new(crate::service::replication::copy::Replicator::new(r.clone()));
        crate::events::dispatch::spawn(r.meta.clone(), r.events.clone(), Some(replicator))
    }

    /// Scrubs every `scrub.interval` (first at a random point within the first interval),
    /// at `scrub.rate`, for as long as the runtime lives; `None` when the schedule is off.
    pub fn spawn_scrub(&self, config: &crate::config::ScrubConfig) -> Option<JoinHandle<()>> {
        if config.interval.is_zero() {
            tracing::info!("the scheduled scrub is off (scrub.interval = \"off\")");
            return None;
        }
        let (interval, rate) = (config.interval, config.rate);
        // Uniform in [0, interval): a process that restarts more often than the interval
        // still scrubs about once per interval on average, and replicas do not align.
        let first = interval.mul_f64((uuid::Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0);
        let registry = self.registry.clone();
        tracing::info!(scrub.interval = %humantime::format_duration(interval), scrub.rate = rate,
            scrub.first_in = %humantime::format_duration(Duration::from_secs(first.as_secs())), "scrub scheduled");
        Some(tokio::spawn(async move {
            tokio::time::sleep(first).await;
            let options = crate::service::scrub::ScrubOptions { repository: None, rate };
            loop {
                if let Err(e) = registry.scrub(&options).await {
                    tracing::warn!(error = %e, "the scrub could not run to the end; it runs again at the next interval");
                }
                tokio::time::sleep(interval).await;
            }
        }))
    }

    /// Collects garbage every `gc.interval` (first at a random point within the first
    /// interval, so replicas do not align; a replica that finds another collecting skips
    /// its turn), for as long as the runtime lives; `None` when the schedule is off.
    pub fn spawn_gc(&self, config: &crate::config::GcConfig) -> Option<JoinHandle<()>> {
        if config.interval.is_zero() {
            tracing::info!("the scheduled garbage collection is off (gc.interval = \"off\")");
            return None;
        }
        let interval = config.interval;
        let first = interval.mul_f64((uuid::Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0);
        let registry = self.registry.clone();
        tracing::info!(gc.interval = %humantime::format_duration(interval),
            gc.grace = %humantime::format_duration(config.grace),
            gc.first_in = %humantime::format_duration(Duration::from_secs(first.as_secs())), "garbage collection scheduled");
        Some(tokio::spawn(async move {
            tokio::time::sleep(first).await;
            let options = crate::service::gc::GcOptions::default();
            loop {
                match registry.collect(&options).await {
                    Ok(_) => {}
                    Err(crate::error::ApiError::Conflict(m)) => {
                        tracing::info!("scheduled garbage collection skipped: {m}")
                    }
                    Err(e) => tracing::warn!(error = %e,
                        "the garbage collection could not run to the end; the next run finishes its work"),
                }
                tokio::time::sleep(interval).await;
            }
        }))
    }

    /// Runs every repository's lifecycle policy every `lifecycle.interval` (first at a random
    /// point within the first interval), for as long as the runtime lives; `None` when the
    /// schedule is off.
    pub fn spawn_lifecycle(&self, config: &crate::config::LifecycleConfig) -> Option<JoinHandle<()>> {
        if config.interval.is_zero() {
            tracing::info!("the scheduled lifecycle runs are off (lifecycle.interval = \"off\")");
            return None;
        }
        tracing::info!(lifecycle.interval = %humantime::format_duration(config.interval), "lifecycle runs scheduled");
        Some(tokio::spawn(crate::service::lifecycle::schedule(self.registry.clone(), config.interval)))
    }

    /// Purges stale upload sessions every `interval`, for as long as the runtime lives.
    pub fn spawn_maintenance(&self, interval: std::time::Duration) -> JoinHandle<()> {
        let registry = self.registry.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = registry.purge_stale_uploads().await {
                    tracing::warn!(error = %e, "purging stale uploads failed");
                }
            }
        })
    }
}

/// The blob store `config` names. Only `serve` creates a missing blob folder.
async fn open_blobs(config: &Config, opening: Opening) -> Result<BlobStore, StartError> {
    if opening == Opening::Command
        && let Some(missing) = crate::data_dir::missing_blobs(config)
    {
        return Err(StartError::NoRegistry(missing));
    }
    match config.storage.backend {
        StorageBackend::Filesystem => {
            let dir = config.blob_dir();
            BlobStore::local(&dir, config.storage.fsync)
                .map_err(|source| StartError::Storage { path: dir.display().to_string(), source })
        }
        StorageBackend::Memory => Ok(BlobStore::in_memory()),
        StorageBackend::S3 => {
            let s3 = &config.storage.s3;
            let store =
                BlobStore::s3(&s3.settings()).map_err(|source| StartError::Storage { path: s3.location(), source })?;
            store.check().await.map_err(|source| StartError::Storage { path: s3.location(), source })?;
            if opening == Opening::Serve {
                tracing::info!(storage = %s3.location(), endpoint = s3.endpoint.as_deref().unwrap_or("AWS"), "blobs in S3");
            }
            Ok(store)
        }
    }
}

/// The metadata store `config` names, its schema migrated. `serve` creates the database (or
/// the schema in PostgreSQL); a command opens only one that holds a Berth schema.
async fn open_metadata(config: &Config, opening: Opening) -> Result<Arc<dyn MetadataStore>, StartError> {
    let no_registry = || StartError::NoRegistry(crate::data_dir::not_a_registry(config));
    match config.metadata.backend {
        MetadataBackend::Sqlite => {
            let path = config.metadata_path();
            let failed = |cause| StartError::Metadata { path: path.display().to_string(), cause };
            let store = match opening {
                Opening::Serve => SqliteStore::open(&path).await.map_err(failed)?,
                Opening::Command => SqliteStore::open_existing(&path).await.map_err(failed)?.ok_or_else(no_registry)?,
            };
            Ok(Arc::new(store))
        }
        MetadataBackend::Postgres => {
            let url = config.metadata.url.as_ref().ok_or(StartError::MissingMetadataUrl)?;
            let failed = |cause| StartError::Metadata { path: url.redacted(), cause };
            let store = match opening {
                Opening::Serve => PostgresStore::open(url.expose()).await.map_err(failed)?,
                Opening::Command => {
                    PostgresStore::open_existing(url.expose()).await.map_err(failed)?.ok_or_else(no_registry)?
                }
            };
            if opening == Opening::Serve {
                tracing::info!(metadata.url = %url, "metadata in PostgreSQL");
            }
            Ok(Arc::new(store))
        }
    }
}

/// Seals the secrets of admin-API webhooks stored unsealed (by an earlier release) or under
/// a KEK that is no longer active. A failure is logged: the secret still signs as stored.
async fn reseal_webhook_secrets(meta: &dyn MetadataStore, secrets: &crate::auth::SecretSealing) {
    use berth_storage::metadata::SubscriptionSource;
    let subscriptions = match meta.subscriptions().await {
        Ok(s) => s,
        Err(e) => return tracing::warn!(error = %e, "could not read webhooks to seal their secrets"),
    };
    for mut s in subscriptions {
        if s.source != SubscriptionSource::Api || !crate::events::sealing::needs_reseal(secrets, &s.secret) {
            continue;
        }
        let sealed = crate::events::sealing::open(secrets, &s.name, &s.secret)
            .and_then(|plain| crate::events::sealing::seal(secrets, &s.name, &plain));
        let result = match sealed {
            Ok(sealed) => {
                s.secret = sealed;
                meta.put_subscription(&s).await.map(|_| ()).map_err(|e| e.to_string())
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                tracing::info!(webhook = %s.name, "sealed the webhook's secret under the active key-encryption key")
            }
            Err(e) => tracing::warn!(webhook = %s.name, error = %e, "could not seal the webhook's secret"),
        }
    }
}

/// Makes sure the default key exists (generating it on a single machine) and returns the
/// KEK that seals the secrets kept in the metadata store (the token signing key). With
/// encryption off a key is still made for that; only on PostgreSQL without a shared key
/// are secrets left unsealed, with a warning that names the fix. Replicas sharing PostgreSQL
/// must be given the same key: a key generated on one machine would be missing on the others.
/// The warnings about how the keys are kept are `serve`'s, said once per start: a command
/// that reads the keys changes nothing about where they are.
async fn prepare_default_key(
    crypt: &Encryption,
    meta: &dyn MetadataStore,
    config: &Config,
    opening: Opening,
) -> Result<Option<Arc<Kek>>, StartError> {
    let serving = opening == Opening::Serve;
    let name = &crypt.default_key;
    let keys = meta.keys(false).await.map_err(|e| StartError::Keys(e.to_string()))?;
    let recorded = keys.iter().any(|k| &k.name == name && k.state == KeyState::Active);
    let in_ring = crypt.ring.all().iter().any(|k| k.name() == name);
    let shared_key_fix = format!(
        "give every replica the same key (BERTH_KEYS={name}.1=<64 hex digits>, or a {name}.1.key file in \
         encryption.key_dir)"
    );
    if !recorded && !in_ring {
        if config.metadata.backend == MetadataBackend::Postgres {
            if crypt.enabled {
                return Err(StartError::Keys(format!(
                    "no key {name:?} for encryption at rest: {shared_key_fix}, or set encryption.enabled = false"
                )));
            }
            if serving {
                tracing::warn!(
                    "no key-encryption key: the token signing key is kept unsealed in PostgreSQL, so a copy \
                    of the database can sign tokens, and access-key secrets are not kept, so ECR's API \
                    (Signature Version 4) refuses every key; {shared_key_fix}"
                );
            }
            return Ok(None);
        }
        let kek = crypt.ring.generate(name).map_err(|e| StartError::Keys(e.to_string()))?;
        tracing::info!(key.id = kek.id(), key.source = %kek.source(), "generated a key-encryption key");
    }
    if serving && !crypt.enabled {
        tracing::warn!("encryption at rest is off (encryption.enabled = false): new repositories store plaintext");
    }
    let kek = match crypt.active(meta, name).await {
        Ok(kek) => kek,
        Err(e) if crypt.enabled => return Err(StartError::Keys(e.to_string())),
        Err(e) => {
            tracing::warn!(error = %e, "the key-encryption key is not usable: the token signing key stays as stored");
            return Ok(None);
        }
    };
    if let KeySource::File(path) = kek.source()
        && serving
        && path.starts_with(&config.data_dir)
    {
        tracing::warn!(key.id = kek.id(), key.file = %path.display(),
            "the key-encryption key is kept in the data directory, next to the data it protects; for production, \
             keep keys elsewhere (BERTH_KEYS, or encryption.key_dir on a secrets mount) and back them up apart from the data");
    }
    Ok(Some(kek))
}

/// A registry serving in the background, for tests and embedding.
#[derive(Debug)]
pub struct RunningServer {
    pub addr: SocketAddr,
    pub app: App,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
    maintenance: JoinHandle<()>,
    dispatcher: Option<JoinHandle<()>>,
    scrub: Option<JoinHandle<()>>,
    gc: Option<JoinHandle<()>>,
    /// The certificate in use when `tls` is configured, and the task polling its files.
    certs: Option<Arc<crate::tls::CertStore>>,
    tls_watch: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// Opens the registry described by `config` and serves it on `listener`, already bound
    /// by the caller (tests bind `127.0.0.1:0` and keep the listener).
    pub async fn start(listener: TcpListener, config: &Config) -> Result<RunningServer, StartError> {
        RunningServer::start_tuned(listener, config, &|_| {}).await
    }

    /// [`RunningServer::start`] with the settings adjusted by `tune` ([`App::open_tuned`]).
    pub async fn start_tuned(
        listener: TcpListener,
        config: &Config,
        tune: &(dyn Fn(&mut Settings) + Sync),
    ) -> Result<RunningServer, StartError> {
        // Certificate files first: a bad one stops startup before any store is opened.
        let tls = crate::tls::Tls::from_config(&config.tls)?;
        let app = App::open_tuned(config, tune).await?;
        let addr = listener.local_addr().map_err(|e| StartError::Storage {
            path: "listener".into(),
            source: berth_storage::Error::Corrupt(e.to_string()),
        })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let router = app.router();
        let certs = tls.as_ref().map(|t| t.certs().clone());
        let tls_watch = certs.as_ref().map(|c| c.watch(config.tls.reload_interval));
        let limits = crate::server::Limits::from_config(&config.server);
        let task = tokio::spawn(crate::server::serve(listener, router, tls, limits, async move {
            let _ = stopped.await;
        }));
        let maintenance = app.spawn_maintenance(config.uploads.purge_interval);
        let dispatcher = app.spawn_dispatcher();
        let scrub = app.spawn_scrub(&config.scrub);
        let gc = app.spawn_gc(&config.gc);
        Ok(RunningServer { addr, app, stop, task, maintenance, dispatcher, scrub, gc, certs, tls_watch })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://127.0.0.1:PORT`: the same port, for when `tls` is configured.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The certificate in use, when `tls` is configured (to reload it, or see what is served).
    pub fn certs(&self) -> Option<&Arc<crate::tls::CertStore>> {
        self.certs.as_ref()
    }

    /// Stops accepting, drains connections and waits for the server to end.
    pub async fn stop(self) {
        self.maintenance.abort();
        if let Some(d) = &self.dispatcher {
            d.abort();
        }
        if let Some(s) = &self.scrub {
            s.abort();
        }
        if let Some(g) = &self.gc {
            g.abort();
        }
        if let Some(watch) = &self.tls_watch {
            watch.abort();
        }
        let _ = self.stop.send(());
        let _ = self.task.await;
        self.app.registry.flush_at_stop().await;
    }
}

/// Drops cached manifests as other replicas change them, until the registry is gone.
async fn follow_changes(registry: std::sync::Weak<Registry>, mut changes: broadcast::Receiver<Change>) {
    loop {
        // Wake now and then to notice a registry that is gone, so the feed can stop.
        let change = tokio::time::timeout(std::time::Duration::from_secs(10), changes.recv()).await;
        let Some(registry) = registry.upgrade() else { return };
        let Ok(change) = change else { continue };
        match change {
            Ok(Change::Repository(repo)) => registry.manifests.invalidate(&repo),
            Ok(Change::Unknown) | Err(broadcast::error::RecvError::Lagged(_)) => registry.manifests.clear(),
            Err(broadcast::error::RecvError::Closed) => {
                registry.manifests.clear();
                return;
            }
        }
    }
}
