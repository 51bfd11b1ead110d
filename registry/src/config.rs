//! Configuration: built-in defaults, then a TOML file, then `BERTH_*` environment variables,
//! then command-line flags, each overriding the one before. Unknown keys are an error.
//!
//! Environment variables name keys with `__` between sections: `BERTH_LISTEN`,
//! `BERTH_DATA_DIR`, `BERTH_UPLOADS__MAX_AGE`, `BERTH_DELETE__BLOBS`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

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
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    /// Folder for the `filesystem` backend; default `<data_dir>/blobs`.
    pub path: Option<PathBuf>,
    /// fsync blob files and folders before acknowledging a write.
    pub fsync: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Filesystem,
    /// Blobs in process memory: lost on exit. For tests and experiments.
    Memory,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    pub backend: MetadataBackend,
    /// SQLite database file; default `<data_dir>/metadata.db`.
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetadataBackend {
    Sqlite,
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
            log: LogConfig::default(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { backend: StorageBackend::Filesystem, path: None, fsync: true }
    }
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig { backend: MetadataBackend::Sqlite, path: None }
    }
}

impl Default for UploadsConfig {
    fn default() -> Self {
        UploadsConfig { max_age: Duration::from_secs(24 * 3600), purge_interval: Duration::from_secs(600) }
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
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(file) = file {
        if !file.is_file() {
            return Err(ConfigError(format!("config file {} does not exist", file.display())));
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    figment = figment.merge(env).merge(Serialized::defaults(overrides));
    figment.extract().map_err(|e| {
        let mut msg = String::new();
        for err in e {
            if !msg.is_empty() {
                msg.push_str("; ");
            }
            msg.push_str(&err.to_string());
        }
        ConfigError(msg)
    })
}

/// The `BERTH_*` environment provider (`BERTH_CONFIG` names the file and is not a key).
pub fn environment() -> Env {
    Env::prefixed("BERTH_").split("__").ignore(&["config"])
}

/// Durations written as text: `90s`, `10m`, `24h`, `1h 30m`.
mod duration_text {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
