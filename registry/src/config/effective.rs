//! What `berth config` prints: the configuration in effect, with the values that are derived
//! when unset (`storage.path`, `metadata.path`, `encryption.key_dir`, `auth.token.realm`)
//! filled in, and for each key the source its value came from.

use std::path::Path;

use figment::Figment;
use figment::providers::Env;
use serde_json::Value;

use super::{Config, ConfigError, MetadataBackend, Overrides, StorageBackend};

/// Where a value in effect came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The TOML file at this path.
    File(String),
    /// This environment variable.
    Environment(String),
    /// This command-line flag.
    Flag(&'static str),
    /// Unset, so derived from other keys (how, in words).
    Derived(&'static str),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "file {path}"),
            Origin::Environment(name) => write!(f, "environment {name}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
            Origin::Derived(how) => write!(f, "derived: {how}"),
        }
    }
}

/// The configuration in effect.
#[derive(Debug)]
pub struct Effective {
    pub config: Config,
    /// Every key (sections joined by `.`; lists and tables of values are one key) with its
    /// value in effect and where that came from, in the order of the configuration.
    pub keys: Vec<(String, Value, Origin)>,
}

impl Effective {
    /// The configuration as JSON, derived values filled in (secrets shown as `***`).
    pub fn to_json(&self) -> Value {
        let mut json = serde_json::to_value(&self.config).unwrap_or(Value::Null);
        for (key, value, origin) in &self.keys {
            if let (Origin::Derived(_), Some(slot)) = (origin, json.pointer_mut(&format!("/{}", key.replace('.', "/"))))
            {
                *slot = value.clone();
            }
        }
        json
    }
}

/// Loads the configuration as [`super::load`] does and says where each value came from.
pub fn effective(file: Option<&Path>, env: Env, overrides: &Overrides) -> Result<Effective, ConfigError> {
    let figment = super::sources(file, env, overrides)?;
    let config = super::extract(&figment)?;
    let json = serde_json::to_value(&config).map_err(|e| ConfigError(format!("cannot show the configuration: {e}")))?;
    let mut leaves = Vec::new();
    flatten("", &json, &mut leaves);
    let keys = leaves
        .into_iter()
        .map(|(key, value)| match derived(&config, &key) {
            Some((value, how)) if is_unset(&figment, &key) => (key, value, Origin::Derived(how)),
            _ => {
                let origin = origin(&figment, overrides, &key);
                (key, value, origin)
            }
        })
        .collect();
    Ok(Effective { config, keys })
}

/// Every leaf of `value` with its dotted path: objects are descended into, anything else
/// (a list included) is one leaf.
fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) if !map.is_empty() || prefix.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        _ => out.push((prefix.to_owned(), value.clone())),
    }
}

fn is_unset(figment: &Figment, key: &str) -> bool {
    figment.find_value(key).map(|v| v.to_empty().is_some()).unwrap_or(true)
}

/// The value a key has in effect when unset, and how it is derived.
fn derived(config: &Config, key: &str) -> Option<(Value, &'static str)> {
    let path = |p: &Path| Value::String(p.display().to_string());
    match key {
        "storage.path" if config.storage.backend == StorageBackend::Filesystem => {
            Some((path(&config.blob_dir()), "<data_dir>/blobs"))
        }
        "metadata.path" if config.metadata.backend == MetadataBackend::Sqlite => {
            Some((path(&config.metadata_path()), "<data_dir>/metadata.db"))
        }
        "encryption.key_dir" => Some((path(&config.key_dir()), "<data_dir>/keys")),
        "events.source" => {
            Some((Value::String(format!("/berth/{}", crate::events::host_name())), "/berth/<host name>"))
        }
        "storage.s3.region" if config.storage.backend == StorageBackend::S3 => Some((
            Value::String(
                std::env::var("AWS_REGION")
                    .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|_| "us-east-1".into()),
            ),
            "AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1",
        )),
        "auth.token.realm" => {
            Some((Value::String("http(s)://<Host>/token".into()), "each request's Host header and scheme"))
        }
        _ => None,
    }
}

fn origin(figment: &Figment, overrides: &Overrides, key: &str) -> Origin {
    match key {
        "listen" if overrides.listen.is_some() => return Origin::Flag("--listen"),
        "data_dir" if overrides.data_dir.is_some() => return Origin::Flag("--data-dir"),
        _ => {}
    }
    let Some(metadata) = figment.find_metadata(key) else { return Origin::Default };
    match &metadata.source {
        Some(figment::Source::File(path)) => Origin::File(path.display().to_string()),
        _ if metadata.name.contains("environment") => {
            Origin::Environment(format!("BERTH_{}", key.to_ascii_uppercase().replace('.', "__")))
        }
        _ => Origin::Default,
    }
}
