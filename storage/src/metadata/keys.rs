//! Key-encryption keys, as records: ids and states, never material.

use async_trait::async_trait;

use crate::error::Result;

/// A key-encryption key as the metadata store knows it: its id and state, never material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// `<name>.<version>`.
    pub id: String,
    pub name: String,
    pub state: KeyState,
    /// [`crate::crypt::Kek::check_value`] of the material first used under this id.
    pub check_value: String,
    pub created_at: i64,
    /// Blob copies whose data key it wraps (filled in by [`Keys::keys`] on request).
    pub blobs: u64,
    /// Upload sessions whose data key it wraps (filled in by [`Keys::keys`] on request).
    pub uploads: u64,
}

/// Where a key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Wraps the data keys of new blobs of its name (one per name).
    Active,
    /// Superseded; still unwraps what it wrapped until rotation re-wraps it all.
    Inactive,
    /// Wraps nothing any more; its material may be destroyed.
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Inactive => "inactive",
            KeyState::Retired => "retired",
        }
    }

    pub fn parse(s: &str) -> Result<KeyState> {
        match s {
            "active" => Ok(KeyState::Active),
            "inactive" => Ok(KeyState::Inactive),
            "retired" => Ok(KeyState::Retired),
            other => Err(crate::Error::Corrupt(format!("key state {other:?}"))),
        }
    }
}

/// Why a key cannot be retired.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetireRefused {
    #[error("no key {0} is recorded")]
    Unknown(String),
    #[error("key {0} is active: rotate to a new version first")]
    Active(String),
    #[error("key {id} still wraps the data keys of {blobs} blobs and {uploads} uploads: rotate first")]
    InUse { id: String, blobs: u64, uploads: u64 },
}

/// Key-encryption keys, as records: ids and states, never material.
#[async_trait]
pub trait Keys: Send + Sync {
    /// Every key recorded; with `counts`, how many blobs and uploads each wraps (a scan of
    /// the copies: for listings, not request paths; without, both read 0).
    async fn keys(&self, counts: bool) -> Result<Vec<KeyRecord>>;
    /// Records a new key (state as given); `false` when the id exists.
    async fn add_key(&self, key: &KeyRecord) -> Result<bool>;
    /// Makes `id` the active key of its name; the previously active one becomes inactive.
    async fn activate_key(&self, id: &str) -> Result<()>;
    /// Marks `id` retired, if it is inactive and wraps nothing.
    async fn retire_key(&self, id: &str) -> Result<Result<(), RetireRefused>>;
}
