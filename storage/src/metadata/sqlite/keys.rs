//! [`SqliteStore`]'s key-encryption keys, as records ([`Keys`]).

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::error::{Error, Result};
use crate::metadata::sql::KEY_COUNTS;
use crate::metadata::{KeyRecord, KeyState, Keys, RetireRefused, size_of, unix_now};

#[async_trait]
impl Keys for SqliteStore {
    async fn keys(&self, counts: bool) -> Result<Vec<KeyRecord>> {
        self.with_conn(move |c| {
            let counted = if counts { KEY_COUNTS } else { "0, 0" };
            let mut stmt = c.prepare_cached(&format!(
                "SELECT k.id, k.name, k.state, k.check_value, k.created_at, {counted} \
                 FROM keys k ORDER BY k.name, k.created_at, k.id"
            ))?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })?;
            rows.map(|r| {
                let (id, name, state, check_value, created_at, blobs, uploads) = r?;
                Ok(KeyRecord {
                    id,
                    name,
                    state: KeyState::parse(&state)?,
                    check_value,
                    created_at,
                    blobs: size_of(blobs),
                    uploads: size_of(uploads),
                })
            })
            .collect()
        })
        .await
    }

    async fn add_key(&self, key: &KeyRecord) -> Result<bool> {
        let key = key.clone();
        self.write(move |tx| {
            Ok(tx.execute(
                "INSERT INTO keys (id, name, state, check_value, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5) \
                 ON CONFLICT (id) DO NOTHING",
                params![key.id, key.name, key.state.as_str(), key.check_value, key.created_at],
            )? > 0)
        })
        .await
    }

    async fn activate_key(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.write(move |tx| {
            let now = unix_now();
            let name: String = tx
                .query_row("SELECT name FROM keys WHERE id = ?1", [&id], |r| r.get(0))
                .optional()?
                .ok_or(Error::NotFound)?;
            tx.execute(
                "UPDATE keys SET state = 'inactive', updated_at = ?2 WHERE name = ?1 AND state = 'active'",
                params![name, now],
            )?;
            tx.execute("UPDATE keys SET state = 'active', updated_at = ?2 WHERE id = ?1", params![id, now])?;
            Ok(())
        })
        .await
    }

    async fn retire_key(&self, id: &str) -> Result<Result<(), RetireRefused>> {
        let id = id.to_owned();
        self.write(move |tx| {
            let state: Option<String> =
                tx.query_row("SELECT state FROM keys WHERE id = ?1", [&id], |r| r.get(0)).optional()?;
            let Some(state) = state else { return Ok(Err(RetireRefused::Unknown(id))) };
            if KeyState::parse(&state)? == KeyState::Active {
                return Ok(Err(RetireRefused::Active(id)));
            }
            let blobs: i64 = tx.query_row("SELECT COUNT(*) FROM blob_copies WHERE kek = ?1", [&id], |r| r.get(0))?;
            let uploads: i64 =
                tx.query_row("SELECT COUNT(*) FROM uploads WHERE sealing_kek = ?1", [&id], |r| r.get(0))?;
            if blobs + uploads > 0 {
                return Ok(Err(RetireRefused::InUse { id, blobs: size_of(blobs), uploads: size_of(uploads) }));
            }
            tx.execute("UPDATE keys SET state = 'retired', updated_at = ?2 WHERE id = ?1", params![id, unix_now()])?;
            Ok(Ok(()))
        })
        .await
    }
}
