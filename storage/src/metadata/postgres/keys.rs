//! [`PostgresStore`]'s key-encryption keys, as records ([`Keys`]).

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::PostgresStore;
use crate::error::{Error, Result};
use crate::metadata::sql::KEY_COUNTS;
use crate::metadata::{KeyRecord, KeyState, Keys, RetireRefused, size_of, unix_now};

#[async_trait]
impl Keys for PostgresStore {
    async fn keys(&self, counts: bool) -> Result<Vec<KeyRecord>> {
        let client = self.client().await?;
        let counted = if counts { KEY_COUNTS } else { "0::bigint, 0::bigint" };
        let stmt = client
            .prepare_cached(&format!(
                "SELECT k.id, k.name, k.state, k.check_value, k.created_at, {counted} \
                 FROM keys k ORDER BY k.name COLLATE \"C\", k.created_at, k.id COLLATE \"C\""
            ))
            .await?;
        let rows = client.query(&stmt, &[]).await?;
        rows.iter()
            .map(|r| {
                Ok(KeyRecord {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    state: KeyState::parse(r.try_get(2)?)?,
                    check_value: r.try_get(3)?,
                    created_at: r.try_get(4)?,
                    blobs: size_of(r.try_get(5)?),
                    uploads: size_of(r.try_get(6)?),
                })
            })
            .collect()
    }

    async fn add_key(&self, key: &KeyRecord) -> Result<bool> {
        // Only an existing id is a conflict; a second active key of a name (the
        // keys_one_active index) is an error.
        let n = self
            .client()
            .await?
            .execute(
                "INSERT INTO keys (id, name, state, check_value, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (id) DO NOTHING",
                &[&key.id, &key.name, &key.state.as_str(), &key.check_value, &key.created_at],
            )
            .await?;
        Ok(n > 0)
    }

    async fn activate_key(&self, id: &str) -> Result<()> {
        transaction!(self, |tx| {
            // Every key of the name, locked in one order: a concurrent activation of the name
            // waits here, then (new statements, new snapshots) sees this one's result.
            let locked = tx
                .query(
                    "SELECT id FROM keys WHERE name = (SELECT name FROM keys WHERE id = $1) \
                     ORDER BY id COLLATE \"C\" FOR NO KEY UPDATE",
                    &[&id],
                )
                .await?;
            if locked.is_empty() {
                return Err(Error::NotFound);
            }
            let now = unix_now();
            // Two statements: a unique index is checked row by row, so the old active key must
            // be inactive before the new one becomes active.
            tx.execute(
                "UPDATE keys SET state = 'inactive', updated_at = $2 \
                 WHERE name = (SELECT name FROM keys WHERE id = $1) AND state = 'active' AND id <> $1",
                &[&id, &now],
            )
            .await?;
            tx.execute("UPDATE keys SET state = 'active', updated_at = $2 WHERE id = $1", &[&id, &now]).await?;
        })
    }

    async fn retire_key(&self, id: &str) -> Result<Result<(), RetireRefused>> {
        transaction!(self, |tx| {
            // Locked: an activation of this key waits for this retirement, or this one for it.
            let state = tx.query_opt("SELECT state FROM keys WHERE id = $1 FOR NO KEY UPDATE", &[&id]).await?;
            match state {
                None => Err(RetireRefused::Unknown(id.to_owned())),
                Some(row) if KeyState::parse(row.try_get(0)?)? == KeyState::Active => {
                    Err(RetireRefused::Active(id.to_owned()))
                }
                Some(_) => {
                    let counts = tx
                        .query_one(
                            "SELECT (SELECT COUNT(*) FROM blob_copies WHERE kek = $1), \
                             (SELECT COUNT(*) FROM uploads WHERE sealing_kek = $1)",
                            &[&id],
                        )
                        .await?;
                    let (blobs, uploads): (i64, i64) = (counts.try_get(0)?, counts.try_get(1)?);
                    if blobs + uploads > 0 {
                        Err(RetireRefused::InUse {
                            id: id.to_owned(),
                            blobs: size_of(blobs),
                            uploads: size_of(uploads),
                        })
                    } else {
                        tx.execute(
                            "UPDATE keys SET state = 'retired', updated_at = $2 WHERE id = $1",
                            &[&id, &unix_now()],
                        )
                        .await?;
                        Ok(())
                    }
                }
            }
        })
    }
}
