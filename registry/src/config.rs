//! Configuration: built-in defaults, then a TOML file, then `BERTH_*` environment variables,
//! then command-line flags, each overriding the one before. Unknown keys are an error.
//!
//! Environment variables name keys with `__` between sections: `BERTH_LISTEN`,
//! `BERTH_DATA_DIR`, `BERTH_UPLOADS__MAX_AGE`, `BERTH_DELETE__BLOBS`, `BERTH_METADATA__URL`,
//! `BERTH_STORAGE__S3__BUCKET`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

mod effective;
mod quotas;
pub use effective::{Effective, Origin, effective};
pub use quotas::{QuotaRule, QuotasConfig, byte_size as quota_size};

/// Everything Berth can be told. See README.md for the reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the registry's HTTP listener.
    pub listen: SocketAddr,
    /// Everything Berth keeps on the local disk lives under here by default.
    pub data_dir: PathBuf,
    pub storage: StorageConfig,
    pub metadata: MetadataConfig,
    pub uploads: UploadsConfig,
    pub delete: DeleteConfig,
    pub encryption: EncryptionConfig,
    pub tls: TlsConfig,
    pub auth: crate::auth::config::AuthConfig,
    pub events: crate::events::EventsConfig,
    /// Names clients use for this registry (`host` or `host:port`), besides the `Host` of
    /// a request: image references on these hosts are this registry's (task definitions).
    pub hosts: Vec<String>,
    pub log: LogConfig,
    pub scrub: ScrubConfig,
    pub gc: GcConfig,
    pub server: ServerConfig,
    pub quotas: QuotasConfig,
    pub lifecycle: LifecycleConfig,
    pub registry: RegistryConfig,
    pub pull_through: crate::service::pull_through::PullThroughConfig,
    /// `[replication]`: destinations and rules (README "Replication").
    pub replication: crate::service::replication::ReplicationConfig,
}

/// The scheduled runs of repositories' lifecycle policies (README "Lifecycle policies").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// Time between runs of every repository's policy; zero (`"off"`, `"0s"`) turns the
    /// schedule off (`berth lifecycle run` and `POST /api/v1/lifecycle/run` still work). The
    /// first run starts at a random point within the first interval, so replicas do not align.
    #[serde(with = "duration_or_off")]
    pub interval: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig { interval: Duration::from_secs(3600) }
    }
}

/// How repositories come to be (README "Repository creation templates").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// A push to a repository that does not exist creates it. With `false`, only a push
    /// matching a repository creation template applied for `CREATE_ON_PUSH` (or a rule of
    /// `[[encryption.repositories]]`) creates one; others get `NAME_UNKNOWN`, as in ECR.
    pub create_on_push: bool,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig { create_on_push: true }
    }
}

/// The scheduled garbage collection of `berth serve` (README "Garbage collection").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcConfig {
    /// Time between runs; zero (`"off"`, `"0s"`) turns the schedule off (`berth gc run` and
    /// `POST /api/v1/gc` still work). The first run starts at a random point within the
    /// first interval, so replicas do not align.
    #[serde(with = "duration_or_off")]
    pub interval: Duration,
    /// Blob links created, or read by a client, within this long are never collected: the
    /// time a client has between pushing a blob (or finding it there) and pushing the
    /// manifest that references it. At least 10 minutes.
    #[serde(with = "duration_text")]
    pub grace: Duration,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig { interval: Duration::from_secs(3600), grace: crate::service::gc::DEFAULT_GRACE }
    }
}

impl GcConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let min = crate::service::gc::MIN_GRACE;
        if self.grace < min {
            return Err(ConfigError(format!(
                "gc.grace must be at least {} (longer than any push takes), e.g. \"1h\"",
                humantime::format_duration(min)
            )));
        }
        Ok(())
    }
}

/// The scheduled scrub of `berth serve`: every stored blob re-read and checked against its
/// digest (sealed copies opened), damage logged and counted, never repaired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrubConfig {
    /// Time between scrubs; zero (`"off"`, `"0s"`) turns the schedule off. The first scrub
    /// starts at a random point within the first interval, so a process restarted more often
    /// than the interval still scrubs about once per interval, and replicas do not align.
    #[serde(with = "duration_or_off")]
    pub interval: Duration,
    /// Bytes per second a scheduled scrub reads at most (`0`: no limit), so that it stays
    /// cheap next to the pulls it shares the disk and CPU with. `berth scrub` takes `--rate`.
    #[serde(with = "byte_rate")]
    pub rate: u64,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        ScrubConfig { interval: Duration::from_secs(7 * 24 * 3600), rate: 50 * 1024 * 1024 }
    }
}

/// What one client, or all of them together, may make the server hold before a request is
/// authenticated: connections, and the bytes and time of request heads (see README "Limits").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Open connections in all; beyond it the oldest connection that has not sent a complete
    /// request yet is closed to make room, or the new one is when there is none. Also lowered
    /// at start to fit the process's open-file limit.
    pub max_connections: usize,
    /// Open connections from one client address, so that one client cannot take them all;
    /// beyond it that address's oldest connection with no complete request yet is closed
    /// (or the new one when there is none). Behind a proxy every client has the proxy's
    /// address: raise it to `max_connections` there.
    pub max_connections_per_address: usize,
    /// How long a connection has to send a complete request head: from accept for the first
    /// request (TLS handshake included), from the end of the previous response for the next.
    #[serde(with = "duration_text")]
    pub header_timeout: Duration,
    /// Largest request head (request line and headers); beyond it the answer is 431.
    pub max_header_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 4096,
            max_connections_per_address: 1024,
            header_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
        }
    }
}

impl ServerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 || self.max_connections_per_address == 0 {
            return Err(ConfigError(
                "server.max_connections and server.max_connections_per_address must be at least 1".into(),
            ));
        }
        if self.header_timeout.is_zero() {
            return Err(ConfigError("server.header_timeout must be longer than zero, e.g. \"30s\"".into()));
        }
        // Below this, ordinary clients (a bearer token alone is ~1 KiB) would get 431.
        if self.max_header_bytes < 8 * 1024 {
            return Err(ConfigError("server.max_header_bytes must be at least 8192".into()));
        }
        Ok(())
    }
}

/// HTTPS on the same listener as plain HTTP. Docker refuses plain HTTP from any registry
/// not on loopback, so this is what makes Berth usable over a network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. Set together with `key_file`, or neither.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1) of the leaf certificate.
    pub key_file: Option<PathBuf>,
    /// Who may still speak plain HTTP once TLS is configured (without TLS, everyone may).
    pub plain_http: PlainHttp,
    /// How often the two files are checked for a change (modification time, length);
    /// a changed pair is loaded without a restart, as on SIGHUP.
    #[serde(with = "duration_text")]
    pub reload_interval: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            plain_http: PlainHttp::Loopback,
            reload_interval: Duration::from_secs(10),
        }
    }
}

/// Which peers get plain HTTP when TLS is configured; the others are told to use HTTPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlainHttp {
    /// Loopback peers only: local tools and health checks keep working without certificates.
    Loopback,
    /// Anyone, e.g. a TLS-terminating proxy on another host in front of Berth.
    Any,
    /// Nobody: HTTPS only.
    Never,
}

/// Encryption at rest. Key material never appears here: it is read from files in
/// `key_dir` (`<id>.key`, 64 hex digits) and from the `BERTH_KEYS` environment variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncryptionConfig {
    /// New repositories encrypt their blobs (existing ones keep what they were created with).
    pub enabled: bool,
    /// The key name of new repositories whose creation template names none (`AES256`) and
    /// that no rule below matches.
    pub default_key: String,
    /// Folder of key files; default `<data_dir>/keys`. On first start with no key for
    /// `default_key`, one is generated here (single-process setups only).
    pub key_dir: Option<PathBuf>,
    /// Keys by repository name prefix, checked in order, fixed when a repository is created:
    /// configuration templates that set only the key (`service::templates` ranks them
    /// against the stored repository creation templates).
    pub repositories: Vec<RepositoryKeyRule>,
}

/// New repositories whose name starts with `prefix` use key `key`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryKeyRule {
    pub prefix: String,
    pub key: String,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        EncryptionConfig { enabled: true, default_key: "default".into(), key_dir: None, repositories: Vec::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    /// Folder for the `filesystem` backend; default `<data_dir>/blobs`.
    pub path: Option<PathBuf>,
    /// fsync blob files and folders before acknowledging a write.
    pub fsync: bool,
    /// Hash every whole read of a plaintext blob against its digest as it streams, holding
    /// the last piece back until it matches. Off by default: each digest was verified when
    /// the blob was stored, clients verify what they pull, and the scrub finds damage at
    /// rest. On, plaintext pulls also leave the zero-copy path ([`crate::zerocopy`]).
    pub verify_reads: bool,
    /// The bucket, for the `s3` backend.
    pub s3: S3Config,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Filesystem,
    /// Blobs in process memory: lost on exit. For tests and experiments.
    Memory,
    /// An S3 bucket (AWS, or any S3-compatible store), shared by every replica.
    S3,
}

/// Where the `s3` backend keeps blobs. Credentials left unset come from `AWS_*` variables
/// or the usual AWS chain (web identity, ECS task role, instance metadata).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub bucket: Option<String>,
    /// Key prefix inside the bucket, e.g. `registry/prod`.
    pub prefix: Option<String>,
    /// Default: `AWS_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// For S3-compatible stores: `https://minio.internal:9000` (`http://` allowed).
    pub endpoint: Option<String>,
    /// `<endpoint>/<bucket>` addressing instead of `<bucket>.<endpoint>`; most
    /// S3-compatible servers want this.
    pub path_style: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
}

impl S3Config {
    /// The storage crate's settings. Never log the result's secrets.
    pub fn settings(&self) -> berth_storage::s3::S3Settings {
        berth_storage::s3::S3Settings {
            bucket: self.bucket.clone().unwrap_or_default(),
            prefix: self.prefix.clone(),
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            path_style: self.path_style,
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.as_ref().map(|s| s.expose().to_owned()),
            session_token: self.session_token.as_ref().map(|s| s.expose().to_owned()),
        }
    }

    /// `s3://bucket/prefix`, for messages.
    pub fn location(&self) -> String {
        let bucket = self.bucket.as_deref().unwrap_or("");
        match &self.prefix {
            Some(p) => format!("s3://{bucket}/{}", p.trim_matches('/')),
            None => format!("s3://{bucket}"),
        }
    }
}

/// A secret such as an S3 secret key: shown (`Debug`, `Display`, serialized as
/// `berth config` does) as `***`; only [`Secret::expose`] gives the text.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for use. Never log this.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    pub backend: MetadataBackend,
    /// SQLite database file; default `<data_dir>/metadata.db`.
    pub path: Option<PathBuf>,
    /// PostgreSQL connection URL, required by the `postgres` backend.
    pub url: Option<DatabaseUrl>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetadataBackend {
    /// An embedded file: one process, no other service needed.
    Sqlite,
    /// A PostgreSQL server shared by every replica.
    Postgres,
}

/// A database URL such as `postgres://user:password@host:5432/berth`. It holds a secret, so
/// it shows itself (`Debug`, `Display`, and when serialized, as `berth config` does) with the
/// password replaced by `***`; only [`DatabaseUrl::expose`] gives the real text.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL with its password, for connecting. Never log this.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with the password (in the user part, or a `password=` parameter) masked.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return "***".into() };
        let rest = &url[scheme_end..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let authority = match authority.rfind('@') {
            Some(at) => match authority[..at].find(':') {
                Some(colon) => format!("{}:***{}", &authority[..colon], &authority[at..]),
                None => authority.to_owned(),
            },
            None => authority.to_owned(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let params: Vec<String> = query
                    .split('&')
                    .map(|p| match p.split_once('=') {
                        // `password`, and libpq's `sslpassword` (refused later, but printed first).
                        Some((k, _)) if k.to_ascii_lowercase().ends_with("password") => format!("{k}=***"),
                        _ => p.to_owned(),
                    })
                    .collect();
                format!("{path}?{}", params.join("&"))
            }
            None => tail.to_owned(),
        };
        format!("{}{authority}{tail}", &url[..scheme_end])
    }
}

impl TryFrom<String> for DatabaseUrl {
    type Error = String;

    fn try_from(url: String) -> Result<Self, Self::Error> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseUrl(url))
        } else {
            Err("metadata.url must start with postgres:// or postgresql://".into())
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadsConfig {
    /// An upload session with no activity for this long is cancelled and its data removed.
    #[serde(with = "duration_text")]
    pub max_age: Duration,
    /// How often stale sessions are looked for.
    #[serde(with = "duration_text")]
    pub purge_interval: Duration,
    /// Open sessions one repository may have; one more is refused (429) until some finish,
    /// are cancelled or expire. Bounds what clients that never finish can make Berth hold.
    pub max_open_per_repository: u64,
    /// Open sessions one principal may have (anonymous clients, and everyone with
    /// authentication off, count as one).
    pub max_open_per_principal: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeleteConfig {
    /// Allow `DELETE /v2/<name>/manifests/<reference>` (else 405 UNSUPPORTED).
    pub manifests: bool,
    /// Allow `DELETE /v2/<name>/blobs/<digest>` (else 405 UNSUPPORTED).
    pub blobs: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `berth_registry=debug,info`; `RUST_LOG` wins.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            data_dir: PathBuf::from("berth-data"),
            storage: StorageConfig::default(),
            metadata: MetadataConfig::default(),
            uploads: UploadsConfig::default(),
            delete: DeleteConfig::default(),
            encryption: EncryptionConfig::default(),
            tls: TlsConfig::default(),
            auth: Default::default(),
            events: Default::default(),
            hosts: Vec::new(),
            log: LogConfig::default(),
            scrub: ScrubConfig::default(),
            gc: GcConfig::default(),
            server: ServerConfig::default(),
            quotas: QuotasConfig::default(),
            lifecycle: LifecycleConfig::default(),
            registry: RegistryConfig::default(),
            pull_through: Default::default(),
            replication: Default::default(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::Filesystem,
            path: None,
            fsync: true,
            verify_reads: false,
            s3: S3Config::default(),
        }
    }
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig { backend: MetadataBackend::Sqlite, path: None, url: None }
    }
}

impl Default for UploadsConfig {
    fn default() -> Self {
        UploadsConfig {
            max_age: Duration::from_secs(24 * 3600),
            purge_interval: Duration::from_secs(600),
            max_open_per_repository: 1_000,
            max_open_per_principal: 5_000,
        }
    }
}

impl Default for DeleteConfig {
    fn default() -> Self {
        DeleteConfig { manifests: true, blobs: true }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".into() }
    }
}

impl Config {
    /// The blob folder in effect.
    pub fn blob_dir(&self) -> PathBuf {
        self.storage.path.clone().unwrap_or_else(|| self.data_dir.join("blobs"))
    }

    /// The SQLite file in effect.
    pub fn key_dir(&self) -> PathBuf {
        self.encryption.key_dir.clone().unwrap_or_else(|| self.data_dir.join("keys"))
    }

    pub fn metadata_path(&self) -> PathBuf {
        self.metadata.path.clone().unwrap_or_else(|| self.data_dir.join("metadata.db"))
    }
}

/// Values given on the command line, which override every other source.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

/// Configuration could not be loaded; the message names the key and the source.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

/// Loads the configuration from its sources, in order of precedence.
pub fn load(file: Option<&Path>, env: Env, overrides: &Overrides) -> Result<Config, ConfigError> {
    extract(&sources(file, env, overrides)?)
}

/// The sources merged, in order of precedence, not yet checked.
fn sources(file: Option<&Path>, env: Env, overrides: &Overrides) -> Result<Figment, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(file) = file {
        if !file.is_file() {
            return Err(ConfigError(format!("config file {} does not exist", file.display())));
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    Ok(figment.merge(env).merge(Serialized::defaults(overrides)))
}

/// The configuration of merged sources, checked.
fn extract(figment: &Figment) -> Result<Config, ConfigError> {
    let config: Config = figment.extract().map_err(|e| {
        let mut msg = String::new();
        for err in e {
            if !msg.is_empty() {
                msg.push_str("; ");
            }
            msg.push_str(&err.to_string());
        }
        ConfigError(msg)
    })?;
    config.validate()?;
    Ok(config)
}

impl Config {
    /// Checks what single keys cannot: settings that only make sense together.
    fn validate(&self) -> Result<(), ConfigError> {
        self.tls.validate()?;
        self.server.validate()?;
        self.quotas.validate()?;
        self.gc.validate()?;
        self.pull_through.validate().map_err(ConfigError)?;
        self.auth.validate().map_err(ConfigError)?;
        let enc = &self.encryption;
        for key in std::iter::once(&enc.default_key).chain(enc.repositories.iter().map(|r| &r.key)) {
            if !berth_storage::crypt::keyring::valid_name(key) {
                return Err(ConfigError(format!("encryption: {key:?} is not a key name (1-63 of a-z, 0-9, -)")));
            }
        }
        let s3 = &self.storage.s3;
        match self.storage.backend {
            StorageBackend::S3 if s3.bucket.as_deref().unwrap_or("").is_empty() => {
                return Err(ConfigError("storage.s3.bucket is required with storage.backend = \"s3\"".into()));
            }
            StorageBackend::S3 if self.storage.path.is_some() => {
                return Err(ConfigError("storage.path is for the filesystem backend; s3 uses storage.s3.*".into()));
            }
            StorageBackend::Filesystem | StorageBackend::Memory if *s3 != S3Config::default() => {
                return Err(ConfigError("storage.s3.* is for the s3 backend; set storage.backend = \"s3\"".into()));
            }
            _ => {}
        }
        match (self.metadata.backend, &self.metadata.url, &self.metadata.path) {
            (MetadataBackend::Postgres, None, _) => Err(ConfigError(
                "metadata.url is required with metadata.backend = \"postgres\" (postgres://user:password@host:port/database)"
                    .into(),
            )),
            (MetadataBackend::Postgres, Some(_), Some(_)) => {
                Err(ConfigError("metadata.path is for the sqlite backend; postgres uses metadata.url".into()))
            }
            (MetadataBackend::Sqlite, Some(_), _) => {
                Err(ConfigError("metadata.url is for the postgres backend; set metadata.backend = \"postgres\"".into()))
            }
            (MetadataBackend::Postgres, Some(_), None) | (MetadataBackend::Sqlite, None, _) => Ok(()),
        }
    }
}

impl TlsConfig {
    /// Both files or neither; a reload interval the poll can use.
    fn validate(&self) -> Result<(), ConfigError> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => {
                return Err(ConfigError("tls.cert_file is set but tls.key_file is not: set both".into()));
            }
            (None, Some(_)) => {
                return Err(ConfigError("tls.key_file is set but tls.cert_file is not: set both".into()));
            }
            (None, None) if self.plain_http == PlainHttp::Never => {
                return Err(ConfigError(
                    "tls.plain_http = \"never\" needs tls.cert_file and tls.key_file (nothing could be served)".into(),
                ));
            }
            (Some(_), Some(_)) | (None, None) => {}
        }
        if self.reload_interval.is_zero() {
            return Err(ConfigError("tls.reload_interval must be longer than zero, e.g. \"10s\"".into()));
        }
        Ok(())
    }
}

/// Variables starting with `BERTH_` that are not configuration keys: `BERTH_CONFIG` names the
/// file and `BERTH_KEYS` holds key material (read by the key ring, never part of the
/// configuration).
pub const NOT_KEYS: [&str; 2] = ["BERTH_CONFIG", "BERTH_KEYS"];

/// Prefixes of the project's own variables that are not configuration keys either: the test
/// harness (`BERTH_TEST_POSTGRES_URL`, exported for a whole CI run), CI (`BERTH_CI_KEEP_DEBUG`)
/// and the conformance and benchmark tools (`BERTH_CONFORMANCE_URL`), so a registry started
/// in the same environment does not reject them. Every other `BERTH_*` variable must name a
/// key: a misspelt one stops startup.
pub const NOT_KEY_PREFIXES: [&str; 4] = ["BERTH_TEST_", "BERTH_CI_", "BERTH_CONFORMANCE_", "BERTH_BENCH_"];

/// Whether an environment variable is a configuration key (`BERTH_*` and not one of
/// [`NOT_KEYS`] or [`NOT_KEY_PREFIXES`]).
pub fn is_key_variable(name: &str) -> bool {
    name.starts_with("BERTH_")
        && !NOT_KEYS.contains(&name)
        && !NOT_KEY_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// The `BERTH_*` environment provider: every variable [`is_key_variable`] accepts.
pub fn environment() -> Env {
    Env::prefixed("BERTH_")
        .split("__")
        .filter(|key| is_key_variable(&format!("BERTH_{}", key.as_str().to_ascii_uppercase())))
}

/// Durations written as text: `90s`, `10m`, `24h`, `1h 30m`.
pub(crate) mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration like 90s, 10m or 24h: {e}")))
    }
}

/// A duration as [`duration_text`], where `"off"` (or any zero duration) means never.
pub(crate) mod duration_or_off {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.is_zero() { s.serialize_str("off") } else { super::duration_text::serialize(d, s) }
    }

    /// `0` may come as a number (`BERTH_SCRUB__INTERVAL=0`, or `interval = 0` in TOML).
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Number(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = match Given::deserialize(d)? {
            Given::Number(0) => return Ok(Duration::ZERO),
            Given::Number(n) => return Err(serde::de::Error::custom(format!("{n} needs a unit, like {n}h or {n}d"))),
            Given::Text(t) => t,
        };
        if matches!(text.trim(), "off" | "0") {
            return Ok(Duration::ZERO);
        }
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not a duration like 12h or 7d, nor \"off\": {e}"))
        })
    }
}

/// Bytes per second, as `scrub.rate` takes them: `52428800`, `50MiB`, `200MB/s`.
pub fn parse_byte_rate(text: &str) -> Option<u64> {
    byte_rate::parse(text)
}

/// A size in bytes: a number, or with a unit (`10GiB`, `200MB`, `2TiB`).
pub fn parse_byte_size(text: &str) -> Option<u64> {
    quotas::parse_size(text)
}

/// Bytes per second: a number, or text with a unit (`50MiB`, `200MB`, `1GiB/s`).
pub(crate) mod byte_rate {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(rate: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*rate)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Number(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Given::deserialize(d)? {
            Given::Number(n) => Ok(n),
            Given::Text(t) => parse(&t).ok_or_else(|| {
                serde::de::Error::custom(format!("{t:?} is not a rate in bytes per second like 52428800 or 50MiB"))
            }),
        }
    }

    pub fn parse(text: &str) -> Option<u64> {
        let t = text.trim();
        let t = t.strip_suffix("/s").unwrap_or(t).trim_end();
        let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (number, unit) = t.split_at(digits);
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "KB" => 1000,
            "M" | "MB" => 1000 * 1000,
            "G" | "GB" => 1000 * 1000 * 1000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => return None,
        };
        number.parse::<u64>().ok()?.checked_mul(scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error type
    fn lifecycle_interval() {
        assert_eq!(Config::default().lifecycle.interval, Duration::from_secs(3600));
        figment::Jail::expect_with(|jail| {
            jail.create_file("berth.toml", "[lifecycle]\ninterval = \"off\"\n")?;
            let c = load(Some(Path::new("berth.toml")), environment(), &Overrides::default()).unwrap();
            assert!(c.lifecycle.interval.is_zero());
            jail.set_env("BERTH_LIFECYCLE__INTERVAL", "6h");
            let c = load(Some(Path::new("berth.toml")), environment(), &Overrides::default()).unwrap();
            assert_eq!(c.lifecycle.interval, Duration::from_secs(6 * 3600));
            jail.set_env("BERTH_LIFECYCLE__INTERVAL", "0");
            assert!(load(None, environment(), &Overrides::default()).unwrap().lifecycle.interval.is_zero());
            jail.set_env("BERTH_LIFECYCLE__INTERVAL", "hourly");
            assert!(load(None, environment(), &Overrides::default()).is_err());
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
    fn scrub_interval_and_rate() {
        assert_eq!(byte_rate::parse("50MiB"), Some(50 << 20));
        assert_eq!(byte_rate::parse("200 MB/s"), Some(200_000_000));
        assert_eq!(byte_rate::parse("1024"), Some(1024));
        assert_eq!(byte_rate::parse("0"), Some(0));
        for bad in ["", "MiB", "5 parsecs", "-1", "99999999999999999999GiB"] {
            assert_eq!(byte_rate::parse(bad), None, "{bad}");
        }
        figment::Jail::expect_with(|jail| {
            jail.create_file("berth.toml", "[scrub]\ninterval = \"off\"\nrate = \"10MiB\"\n")?;
            let c = load(Some(Path::new("berth.toml")), environment(), &Overrides::default()).unwrap();
            assert_eq!(c.scrub, ScrubConfig { interval: Duration::ZERO, rate: 10 << 20 });
            jail.set_env("BERTH_SCRUB__INTERVAL", "12h");
            jail.set_env("BERTH_SCRUB__RATE", "1000");
            let c = load(Some(Path::new("berth.toml")), environment(), &Overrides::default()).unwrap();
            assert_eq!(c.scrub, ScrubConfig { interval: Duration::from_secs(12 * 3600), rate: 1000 });
            jail.set_env("BERTH_SCRUB__INTERVAL", "0");
            assert!(load(None, environment(), &Overrides::default()).unwrap().scrub.interval.is_zero());
            jail.set_env("BERTH_SCRUB__INTERVAL", "weekly");
            assert!(load(None, environment(), &Overrides::default()).is_err());
            Ok(())
        });
        let json = serde_json::to_value(ScrubConfig { interval: Duration::ZERO, rate: 5 }).unwrap();
        assert_eq!(json, serde_json::json!({"interval": "off", "rate": 5}));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
    fn gc_interval_and_grace() {
        figment::Jail::expect_with(|jail| {
            let c = load(None, environment(), &Overrides::default()).unwrap();
            assert_eq!(c.gc, GcConfig { interval: Duration::from_secs(3600), grace: Duration::from_secs(3600) });
            jail.create_file("berth.toml", "[gc]\ninterval = \"off\"\ngrace = \"2h\"\n")?;
            let c = load(Some(Path::new("berth.toml")), environment(), &Overrides::default()).unwrap();
            assert_eq!(c.gc, GcConfig { interval: Duration::ZERO, grace: Duration::from_secs(7200) });
            jail.set_env("BERTH_GC__GRACE", "5m");
            let e = load(None, environment(), &Overrides::default()).unwrap_err().to_string();
            assert!(e.contains("gc.grace must be at least 10m"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn defaults_need_nothing() {
        let c = load(None, Env::prefixed("BERTH_TEST_UNSET_"), &Overrides::default()).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.metadata_path(), PathBuf::from("berth-data/metadata.db"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
    fn environment_overrides_file_and_unknown_variables_fail() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("berth.toml", "listen = \"127.0.0.1:6000\"\n")?;
            jail.set_env("BERTH_LISTEN", "127.0.0.1:7000");
            jail.set_env("BERTH_UPLOADS__MAX_AGE", "30m");
            jail.set_env("BERTH_CONFIG", "ignored.toml");
            jail.set_env("BERTH_TEST_POSTGRES_URL", "postgres://ignored/by-the-registry");
            let c = load(Some(Path::new("berth.toml")), environment(), &Overrides::default()).unwrap();
            assert_eq!(c.listen.port(), 7000);
            assert_eq!(c.uploads.max_age, Duration::from_secs(1800));
            jail.set_env("BERTH_LISTN", "127.0.0.1:1");
            let err = load(None, environment(), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("listn"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
    fn the_projects_own_variables_are_not_keys() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BERTH_CI_KEEP_DEBUG", "1");
            jail.set_env("BERTH_CONFORMANCE_URL", "http://127.0.0.1:5000");
            jail.set_env("BERTH_BENCH_ROUNDS", "3");
            jail.set_env("BERTH_KEYS", "default.1=00");
            jail.set_env("BERTH_TEST_S3_BUCKET", "test");
            jail.set_env("BERTH_LOG__LEVEL", "debug");
            let c = load(None, environment(), &Overrides::default()).unwrap();
            assert_eq!(c.log.level, "debug");
            // A near miss of a real prefix is a key, and unknown.
            jail.set_env("BERTH_CIS", "1");
            let err = load(None, environment(), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("cis"), "{err}");
            Ok(())
        });
        assert!(is_key_variable("BERTH_LISTEN") && is_key_variable("BERTH_STORAGE__S3__BUCKET"));
        assert!(!is_key_variable("BERTH_CONFIG") && !is_key_variable("BERTH_CI_KEEP_DEBUG"));
        assert!(!is_key_variable("PATH") && !is_key_variable("BERTH_TEST_POSTGRES_URL"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
    fn effective_values_say_where_they_came_from() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("berth.toml", "[uploads]\nmax_age = \"2h\"\n[metadata]\npath = \"/db/berth.db\"\n")?;
            jail.set_env("BERTH_LOG__LEVEL", "debug");
            let overrides = Overrides { data_dir: Some("/srv/berth".into()), ..Default::default() };
            let e = effective(Some(Path::new("berth.toml")), environment(), &overrides).unwrap();
            let find = |key: &str| e.keys.iter().find(|(k, ..)| k == key).cloned().unwrap();
            assert_eq!(find("uploads.max_age").2, Origin::File("berth.toml".into()));
            assert_eq!(find("log.level").2, Origin::Environment("BERTH_LOG__LEVEL".into()));
            assert_eq!(find("data_dir").2, Origin::Flag("--data-dir"));
            assert_eq!(find("listen").2, Origin::Default);
            assert_eq!(find("metadata.path").1, serde_json::json!("/db/berth.db"), "set: not derived");
            let (_, blobs, origin) = find("storage.path");
            assert_eq!((blobs, origin), (serde_json::json!("/srv/berth/blobs"), Origin::Derived("<data_dir>/blobs")));
            assert_eq!(find("encryption.key_dir").1, serde_json::json!("/srv/berth/keys"));
            assert!(matches!(find("auth.token.realm").2, Origin::Derived(_)));
            let json = e.to_json();
            assert_eq!(json["storage"]["path"], "/srv/berth/blobs");
            assert_eq!(json["uploads"]["max_age"], "2h");
            // Every key once, and the JSON holds exactly the keys listed.
            let mut names: Vec<_> = e.keys.iter().map(|(k, ..)| k.clone()).collect();
            let count = names.len();
            names.dedup();
            assert_eq!(names.len(), count);
            Ok(())
        });
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("berth.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:6000\"\n[uploads]\nmax_age = \"2h\"\n[delete]\nblobs = false\n")
            .unwrap();
        let overrides = Overrides { data_dir: Some("/srv/berth".into()), ..Default::default() };
        let c = load(Some(&file), Env::prefixed("BERTH_TEST_UNSET_"), &overrides).unwrap();
        assert_eq!(c.listen.port(), 6000);
        assert_eq!(c.uploads.max_age, Duration::from_secs(7200));
        assert!(!c.delete.blobs && c.delete.manifests);
        assert_eq!(c.data_dir, PathBuf::from("/srv/berth"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
    fn postgres_metadata_needs_a_url_and_never_shows_its_password() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BERTH_METADATA__BACKEND", "postgres");
            let err = load(None, environment(), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("metadata.url is required"), "{err}");

            jail.set_env("BERTH_METADATA__URL", "postgres://berth:s3cret@db.internal:5432/berth?password=s3cret");
            let c = load(None, environment(), &Overrides::default()).unwrap();
            assert_eq!(c.metadata.backend, MetadataBackend::Postgres);
            let url = c.metadata.url.as_ref().unwrap();
            assert_eq!(url.expose(), "postgres://berth:s3cret@db.internal:5432/berth?password=s3cret");
            assert_eq!(url.to_string(), "postgres://berth:***@db.internal:5432/berth?password=***");
            for shown in [format!("{c:?}"), serde_json::to_string(&c).unwrap()] {
                assert!(!shown.contains("s3cret") && shown.contains("db.internal"), "{shown}");
            }

            jail.set_env("BERTH_METADATA__URL", "mysql://x@y/z");
            let err = load(None, environment(), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("postgres://"), "{err}");

            jail.set_env("BERTH_METADATA__URL", "postgres://db/berth");
            jail.set_env("BERTH_METADATA__BACKEND", "sqlite");
            let err = load(None, environment(), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("metadata.url is for the postgres backend"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
    fn s3_storage_needs_a_bucket_and_never_shows_its_secret() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BERTH_STORAGE__BACKEND", "s3");
            let err = load(None, environment(), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("storage.s3.bucket is required"), "{err}");

            jail.create_file(
                "berth.toml",
                r#"
                [storage]
                backend = "s3"
                [storage.s3]
                bucket = "images"
                prefix = "prod"
                endpoint = "http://127.0.0.1:9000"
                path_style = true
                access_key_id = "AKIA1"
                "#,
            )?;
            jail.set_env("BERTH_STORAGE__S3__SECRET_ACCESS_KEY", "wJalrXUtn");
            let c = load(Some(Path::new("berth.toml")), environment(), &Overrides::default()).unwrap();
            assert_eq!(c.storage.backend, StorageBackend::S3);
            let settings = c.storage.s3.settings();
            assert_eq!(settings.bucket, "images");
            assert_eq!(settings.secret_access_key.as_deref(), Some("wJalrXUtn"));
            assert!(settings.path_style);
            assert_eq!(c.storage.s3.location(), "s3://images/prod");
            for shown in [format!("{c:?}"), serde_json::to_string(&c).unwrap(), format!("{settings:?}")] {
                assert!(!shown.contains("wJalrXUtn") && shown.contains("images"), "{shown}");
            }

            jail.set_env("BERTH_STORAGE__BACKEND", "filesystem");
            let err = load(Some(Path::new("berth.toml")), environment(), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("storage.s3.* is for the s3 backend"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn redaction_handles_urls_without_a_password() {
        for (url, shown) in [
            ("postgres://db/berth", "postgres://db/berth"),
            ("postgres://user@db/berth", "postgres://user@db/berth"),
            ("postgresql://u:p%40ss@db:5432", "postgresql://u:***@db:5432"),
            ("postgres://u:p@ss@db/x", "postgres://u:***@db/x"),
            (
                "postgres://db/x?sslmode=verify-full&sslrootcert=/ca.pem&password=pw&sslpassword=kp",
                "postgres://db/x?sslmode=verify-full&sslrootcert=/ca.pem&password=***&sslpassword=***",
            ),
        ] {
            assert_eq!(DatabaseUrl::try_from(url.to_string()).unwrap().redacted(), shown);
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
    fn tls_files_come_in_pairs() {
        figment::Jail::expect_with(|jail| {
            let c = load(None, environment(), &Overrides::default()).unwrap();
            assert_eq!(c.tls, TlsConfig::default());
            assert_eq!(c.tls.plain_http, PlainHttp::Loopback);

            jail.set_env("BERTH_TLS__CERT_FILE", "/etc/berth/cert.pem");
            let err = load(None, environment(), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("tls.key_file is not"), "{err}");

            jail.set_env("BERTH_TLS__KEY_FILE", "/etc/berth/key.pem");
            jail.set_env("BERTH_TLS__PLAIN_HTTP", "never");
            jail.set_env("BERTH_TLS__RELOAD_INTERVAL", "2m");
            let c = load(None, environment(), &Overrides::default()).unwrap();
            assert_eq!(c.tls.key_file.as_deref(), Some(Path::new("/etc/berth/key.pem")));
            assert_eq!(c.tls.plain_http, PlainHttp::Never);
            assert_eq!(c.tls.reload_interval, Duration::from_secs(120));

            jail.set_env("BERTH_TLS__RELOAD_INTERVAL", "0s");
            let err = load(None, environment(), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("tls.reload_interval"), "{err}");

            jail.set_env("BERTH_TLS__RELOAD_INTERVAL", "10s");
            jail.set_env("BERTH_TLS__PLAIN_HTTP", "sometimes");
            let err = load(None, environment(), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("sometimes"), "{err}");

            jail.clear_env();
            jail.set_env("BERTH_TLS__PLAIN_HTTP", "never");
            let err = load(None, environment(), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("needs tls.cert_file"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("berth.toml");
        std::fs::write(&file, "[delete]\nmanifest = true\n").unwrap();
        let err = load(Some(&file), Env::prefixed("BERTH_TEST_UNSET_"), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("manifest"), "{err}");
        std::fs::write(&file, "[uploads]\nmax_age = \"soon\"\n").unwrap();
        let err = load(Some(&file), Env::prefixed("BERTH_TEST_UNSET_"), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
        let missing = load(Some(&dir.path().join("nope.toml")), Env::prefixed("X_"), &Overrides::default());
        assert!(missing.is_err());
    }

    #[test]
    fn server_limits_load_and_refuse_what_cannot_work() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("berth.toml");
        let env = || Env::prefixed("BERTH_TEST_UNSET_");
        std::fs::write(&file, "[server]\nmax_connections = 100\nheader_timeout = \"5s\"\n").unwrap();
        let c = load(Some(&file), env(), &Overrides::default()).unwrap();
        assert_eq!((c.server.max_connections, c.server.header_timeout), (100, Duration::from_secs(5)));
        assert_eq!(c.server.max_header_bytes, 64 * 1024);
        for bad in ["max_header_bytes = 1024", "max_connections = 0", "header_timeout = \"0s\""] {
            std::fs::write(&file, format!("[server]\n{bad}\n")).unwrap();
            let err = load(Some(&file), env(), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("server."), "{bad}: {err}");
        }
    }
}
