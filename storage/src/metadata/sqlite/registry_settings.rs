//! [`SqliteStore`]'s registry-wide settings ([`RegistrySettings`]).

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::error::Result;
use crate::metadata::{RegistrySetting, RegistrySettings, unix_now};

#[async_trait]
impl RegistrySettings for SqliteStore {
    async fn registry_setting(&self, name: &str) -> Result<Option<RegistrySetting>> {
        let name = name.to_owned();
        self.with_conn(move |c| {
            Ok(c.query_row("SELECT value, updated_at FROM registry_settings WHERE name = ?1", [&name], |r| {
                Ok(RegistrySetting { name: name.clone(), value: r.get(0)?, updated_at: r.get(1)? })
            })
            .optional()?)
        })
        .await
    }

    async fn put_registry_setting(&self, name: &str, value: &str) -> Result<()> {
        let (name, value) = (name.to_owned(), value.to_owned());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO registry_settings (name, value, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                params![name, value, unix_now()],
            )?;
            Ok(())
        })
        .await
    }
}
