//! Registry-wide settings by name, each a JSON document kept as given: `scanning` (ECR's
//! registry scanning configuration). The registry checks a document before storing it; the
//! store only keeps it.

use async_trait::async_trait;

use crate::error::Result;

/// One stored registry setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySetting {
    pub name: String,
    /// The JSON document, as the caller stored it.
    pub value: String,
    /// Unix seconds of the last put.
    pub updated_at: i64,
}

/// Registry-wide settings (`registry_settings` rows).
#[async_trait]
pub trait RegistrySettings: Send + Sync {
    /// The setting `name`; `None` when it was never put.
    async fn registry_setting(&self, name: &str) -> Result<Option<RegistrySetting>>;
    /// Stores setting `name` (insert or replace), its time set to now.
    async fn put_registry_setting(&self, name: &str, value: &str) -> Result<()>;
}
