//! [`PostgresStore`]'s users, access keys and the token signing keys ([`Identity`]).

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::PostgresStore;
use crate::error::Result;
use crate::metadata::sql::{ACCESS_KEY_COLUMNS, USER_COLUMNS};
use crate::metadata::{AccessKeyRecord, Identity, SigningKeyRecord, UserRecord};

fn user_record(row: &tokio_postgres::Row) -> Result<UserRecord> {
    Ok(UserRecord {
        name: row.try_get(0)?,
        password_hash: row.try_get(1)?,
        disabled: row.try_get(2)?,
        created_at: row.try_get(3)?,
        id: row.try_get(4)?,
        generation: row.try_get(5)?,
    })
}

fn access_key_record(row: &tokio_postgres::Row) -> Result<AccessKeyRecord> {
    Ok(AccessKeyRecord {
        id: row.try_get(0)?,
        user: row.try_get(1)?,
        secret_digest: row.try_get(2)?,
        disabled: row.try_get(3)?,
        created_at: row.try_get(4)?,
        secret_sealed: row.try_get(5)?,
    })
}

#[async_trait]
impl Identity for PostgresStore {
    async fn create_user(&self, user: &UserRecord) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING"
                ),
                &[&user.name, &user.password_hash, &user.disabled, &user.created_at, &user.id, &user.generation],
            )
            .await?;
        Ok(n > 0)
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1")).await?;
        client.query_opt(&stmt, &[&name]).await?.as_ref().map(user_record).transpose()
    }

    async fn users(&self) -> Result<Vec<UserRecord>> {
        let client = self.client().await?;
        let stmt =
            client.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name COLLATE \"C\"")).await?;
        client.query(&stmt, &[]).await?.iter().map(user_record).collect()
    }

    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool> {
        // Disabling moves the generation on, so tokens issued before stay refused after the
        // user is enabled again.
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE users SET disabled = $2, \
                 credential_generation = credential_generation + (CASE WHEN $2 THEN 1 ELSE 0 END) WHERE name = $1",
                &[&name, &disabled],
            )
            .await?;
        Ok(n > 0)
    }

    async fn set_user_password(&self, name: &str, password_hash: Option<&str>) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE users SET password_hash = $2, credential_generation = credential_generation + 1 WHERE name = $1",
                &[&name, &password_hash],
            )
            .await?;
        Ok(n > 0)
    }

    async fn delete_user(&self, name: &str) -> Result<bool> {
        transaction!(self, |tx| {
            // Locked for deletion first: a `create_access_key` or `put_policy` for this user
            // that holds its share lock commits before this goes on; one that comes later
            // waits, then finds the user gone.
            let locked = tx.query_opt("SELECT 1 FROM users WHERE name = $1 FOR UPDATE", &[&name]).await?;
            if locked.is_some() {
                // The keys' rows are locked by their deletion, after any `put_policy` on them
                // commits; the policies are deleted in a later statement, which sees its policy.
                let keys: Vec<String> = tx
                    .query("DELETE FROM access_keys WHERE user_name = $1 RETURNING id", &[&name])
                    .await?
                    .iter()
                    .map(|r| r.try_get(0))
                    .collect::<Result<_, _>>()?;
                tx.execute(
                    "DELETE FROM policies WHERE (target_kind = 'user' AND target = $1) \
                     OR (target_kind = 'access_key' AND target = ANY($2))",
                    &[&name, &keys],
                )
                .await?;
                tx.execute("DELETE FROM users WHERE name = $1", &[&name]).await?;
            }
            locked.is_some()
        })
    }

    async fn create_access_key(&self, key: &AccessKeyRecord) -> Result<bool> {
        transaction!(self, |tx| {
            // Shared-locked until commit: a `delete_user` waits for this key, then deletes it.
            let user = tx.query_opt("SELECT 1 FROM users WHERE name = $1 FOR KEY SHARE", &[&key.user]).await?;
            if user.is_none() {
                false
            } else {
                let n = tx
                    .execute(
                        &format!(
                            "INSERT INTO access_keys ({ACCESS_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
                             ON CONFLICT (id) DO NOTHING"
                        ),
                        &[&key.id, &key.user, &key.secret_digest, &key.disabled, &key.created_at, &key.secret_sealed],
                    )
                    .await?;
                n > 0
            }
        })
    }

    async fn access_key(&self, id: &str) -> Result<Option<AccessKeyRecord>> {
        let client = self.client().await?;
        let stmt =
            client.prepare_cached(&format!("SELECT {ACCESS_KEY_COLUMNS} FROM access_keys WHERE id = $1")).await?;
        client.query_opt(&stmt, &[&id]).await?.as_ref().map(access_key_record).transpose()
    }

    async fn access_keys(&self, user: Option<&str>) -> Result<Vec<AccessKeyRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {ACCESS_KEY_COLUMNS} FROM access_keys WHERE $1::text IS NULL OR user_name = $1 \
                 ORDER BY user_name COLLATE \"C\", id COLLATE \"C\""
            ))
            .await?;
        client.query(&stmt, &[&user]).await?.iter().map(access_key_record).collect()
    }

    async fn set_access_key_disabled(&self, id: &str, disabled: bool) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute("UPDATE access_keys SET disabled = $2 WHERE id = $1", &[&id, &disabled])
            .await?;
        Ok(n > 0)
    }

    async fn delete_access_key(&self, id: &str) -> Result<bool> {
        transaction!(self, |tx| {
            // The row's deletion waits for a `put_policy` holding its share lock; the policies'
            // deletion, a later statement, then sees that policy.
            let deleted = tx.execute("DELETE FROM access_keys WHERE id = $1", &[&id]).await?;
            if deleted > 0 {
                tx.execute("DELETE FROM policies WHERE target_kind = 'access_key' AND target = $1", &[&id]).await?;
            }
            deleted > 0
        })
    }

    async fn set_access_key_secret_sealed(
        &self,
        id: &str,
        expected: Option<&str>,
        sealed: Option<&str>,
    ) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE access_keys SET secret_sealed = $3 WHERE id = $1 AND secret_sealed IS NOT DISTINCT FROM $2",
                &[&id, &expected, &sealed],
            )
            .await?;
        Ok(n == 1)
    }

    async fn ensure_signing_key(&self, candidate: &SigningKeyRecord) -> Result<Vec<SigningKeyRecord>> {
        transaction!(self, |tx| {
            // Writers queue here; each later statement's snapshot sees what the one before
            // committed, so only the first inserts.
            tx.batch_execute("LOCK TABLE signing_keys IN EXCLUSIVE MODE").await?;
            tx.execute(
                "INSERT INTO signing_keys (kid, pkcs8, created_at) SELECT $1, $2, $3 \
                 WHERE NOT EXISTS (SELECT 1 FROM signing_keys)",
                &[&candidate.kid, &candidate.pkcs8, &candidate.created_at],
            )
            .await?;
            tx.query("SELECT kid, pkcs8, created_at FROM signing_keys ORDER BY created_at, kid COLLATE \"C\"", &[])
                .await?
                .iter()
                .map(|r| Ok(SigningKeyRecord { kid: r.try_get(0)?, pkcs8: r.try_get(1)?, created_at: r.try_get(2)? }))
                .collect::<Result<Vec<_>>>()?
        })
    }

    async fn reseal_signing_key(&self, kid: &str, expected: &[u8], sealed: &[u8]) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute("UPDATE signing_keys SET pkcs8 = $3 WHERE kid = $1 AND pkcs8 = $2", &[&kid, &expected, &sealed])
            .await?;
        Ok(n == 1)
    }
}
