//! [`PostgresStore`]'s registry-wide settings ([`RegistrySettings`]).

use async_trait::async_trait;

use super::PostgresStore;
use crate::error::Result;
use crate::metadata::{RegistrySetting, RegistrySettings, unix_now};

#[async_trait]
impl RegistrySettings for PostgresStore {
    async fn registry_setting(&self, name: &str) -> Result<Option<RegistrySetting>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached("SELECT value, updated_at FROM registry_settings WHERE name = $1").await?;
        let row = client.query_opt(&stmt, &[&name]).await?;
        row.map(|r| Ok(RegistrySetting { name: name.to_owned(), value: r.try_get(0)?, updated_at: r.try_get(1)? }))
            .transpose()
    }

    async fn put_registry_setting(&self, name: &str, value: &str) -> Result<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO registry_settings (name, value, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                &[&name, &value, &unix_now()],
            )
            .await?;
        Ok(())
    }
}
