//! Which key a repository's blobs are sealed with, and the key-encryption keys behind it.
//!
//! A repository's key name is fixed when it is created (by its creation template or a
//! configuration rule, see `service::templates`, or the registry's default key; none when
//! encryption is off). Each name has one active KEK
//! version in the metadata store, shared by all replicas; this process caches it briefly.
//! Material comes from the key ring; the first time this process uses a KEK its check value
//! is compared with the one recorded, so different material under a known id is refused.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_storage::MetadataStore;
use berth_storage::crypt::{Kek, KeyRing};
use berth_storage::metadata::{KeyRecord, KeyState, unix_now};

use crate::error::{ApiError, ApiResult};

/// How long a name's active KEK is cached. `berth keys rotate` waits longer than this
/// before re-wrapping, so no replica wraps with the old version after the re-wrap began.
pub const ACTIVE_KEY_TTL: Duration = Duration::from_secs(5);

/// The encryption settings and key state of one process.
#[derive(Debug)]
pub struct Encryption {
    pub ring: Arc<KeyRing>,
    /// New repositories are encrypted.
    pub enabled: bool,
    pub default_key: String,
    /// `[[encryption.repositories]]`: `(prefix, key name)`, first match wins; configuration
    /// templates, ranked against the stored ones by `service::templates`.
    pub rules: Vec<(String, String)>,
    active: Mutex<HashMap<String, (Arc<Kek>, Instant)>>,
    verified: Mutex<HashSet<String>>,
}

impl Encryption {
    pub fn new(ring: Arc<KeyRing>, enabled: bool, default_key: String, rules: Vec<(String, String)>) -> Encryption {
        Encryption { ring, enabled, default_key, rules, active: Default::default(), verified: Default::default() }
    }

    /// KEK `id`, checked against its record the first time.
    pub async fn kek(&self, meta: &dyn MetadataStore, id: &str) -> ApiResult<Arc<Kek>> {
        let kek = self.ring.get(id).map_err(|e| {
            tracing::error!(key.id = id, error = %e, "a key-encryption key is missing");
            ApiError::Internal(e.to_string())
        })?;
        if self.verified.lock().map(|v| v.contains(id)).unwrap_or(false) {
            return Ok(kek);
        }
        let recorded = meta.keys(false).await?.into_iter().find(|k| k.id == id);
        match recorded {
            Some(rec) if rec.check_value != kek.check_value()? => {
                tracing::error!(key.id = id, "key material differs from the material this key id was first used with");
                Err(ApiError::Internal(format!("key {id}: wrong key material (check value mismatch)")))
            }
            _ => {
                if let Ok(mut v) = self.verified.lock() {
                    v.insert(id.to_owned());
                }
                Ok(kek)
            }
        }
    }

    /// The active KEK of key `name`. When the name has none recorded yet, the newest version
    /// of it in the key ring is recorded and made active.
    pub async fn active(&self, meta: &dyn MetadataStore, name: &str) -> ApiResult<Arc<Kek>> {
        if let Some((kek, at)) = self.active.lock().ok().and_then(|a| a.get(name).cloned())
            && at.elapsed() < ACTIVE_KEY_TTL
        {
            return Ok(kek);
        }
        let keys = meta.keys(false).await?;
        let id = match keys.iter().find(|k| k.name == name && k.state == KeyState::Active) {
            Some(k) => k.id.clone(),
            None => adopt(meta, &self.ring, name, &keys).await?.id().to_owned(),
        };
        let kek = self.kek(meta, &id).await?;
        if let Ok(mut a) = self.active.lock() {
            a.insert(name.to_owned(), (kek.clone(), Instant::now()));
        }
        Ok(kek)
    }

    /// Forgets cached active keys (after a rotation in this process).
    pub fn forget_active(&self) {
        if let Ok(mut a) = self.active.lock() {
            a.clear();
        }
    }
}

/// Records the newest version of `name` in the ring and makes it active. Fails when the
/// ring holds no version of it, or only versions older than one already recorded.
async fn adopt(meta: &dyn MetadataStore, ring: &KeyRing, name: &str, keys: &[KeyRecord]) -> ApiResult<Arc<Kek>> {
    let newest = ring.all().into_iter().filter(|k| k.name() == name).max_by_key(|k| k.version());
    let Some(kek) = newest else {
        return Err(ApiError::Internal(format!(
            "no key named {name:?}: create one (`berth keys create {name}`) or add {name}.1 to the key ring"
        )));
    };
    if keys.iter().any(|k| k.name == name && k.id == kek.id() && k.state == KeyState::Retired) {
        return Err(ApiError::Internal(format!("key {} is retired; rotate {name} to a new version", kek.id())));
    }
    record(meta, &kek, KeyState::Inactive).await?;
    meta.activate_key(kek.id()).await?;
    tracing::info!(key.id = kek.id(), key.source = %kek.source(), "key-encryption key recorded and active");
    Ok(kek)
}

/// Records `kek` (if new) with its check value.
pub async fn record(meta: &dyn MetadataStore, kek: &Kek, state: KeyState) -> ApiResult<()> {
    let rec = KeyRecord {
        id: kek.id().into(),
        name: kek.name().into(),
        state,
        check_value: kek.check_value()?,
        created_at: unix_now(),
        blobs: 0,
        uploads: 0,
    };
    meta.add_key(&rec).await?;
    Ok(())
}
