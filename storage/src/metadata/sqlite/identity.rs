//! [`SqliteStore`]'s users, access keys and the token signing keys ([`Identity`]).

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, delete_policies_of};
use crate::error::Result;
use crate::metadata::sql::{ACCESS_KEY_COLUMNS, USER_COLUMNS};
use crate::metadata::{AccessKeyRecord, Identity, SigningKeyRecord, UserRecord};

fn user_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        name: row.get(0)?,
        password_hash: row.get(1)?,
        disabled: row.get(2)?,
        created_at: row.get(3)?,
        id: row.get(4)?,
        generation: row.get(5)?,
    })
}

fn access_key_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AccessKeyRecord> {
    Ok(AccessKeyRecord {
        id: row.get(0)?,
        user: row.get(1)?,
        secret_digest: row.get(2)?,
        disabled: row.get(3)?,
        created_at: row.get(4)?,
        secret_sealed: row.get(5)?,
    })
}

#[async_trait]
impl Identity for SqliteStore {
    async fn create_user(&self, user: &UserRecord) -> Result<bool> {
        let user = user.clone();
        self.write(move |tx| {
            Ok(tx.execute(
                &format!(
                    "INSERT INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (name) DO NOTHING"
                ),
                params![user.name, user.password_hash, user.disabled, user.created_at, user.id, user.generation],
            )? > 0)
        })
        .await
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        let name = name.to_owned();
        self.with_conn(move |c| {
            Ok(c.query_row(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"), [name], user_from_row)
                .optional()?)
        })
        .await
    }

    async fn users(&self) -> Result<Vec<UserRecord>> {
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))?;
            let rows = stmt.query_map([], user_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |tx| {
            // Disabling moves the generation on, so tokens issued before stay refused after
            // the user is enabled again.
            Ok(tx.execute(
                "UPDATE users SET disabled = ?2, \
                 credential_generation = credential_generation + (CASE WHEN ?2 THEN 1 ELSE 0 END) WHERE name = ?1",
                params![name, disabled],
            )? > 0)
        })
        .await
    }

    async fn set_user_password(&self, name: &str, password_hash: Option<&str>) -> Result<bool> {
        let (name, hash) = (name.to_owned(), password_hash.map(str::to_owned));
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE users SET password_hash = ?2, credential_generation = credential_generation + 1 WHERE name = ?1",
                params![name, hash],
            )? > 0)
        })
        .await
    }

    async fn delete_user(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |tx| {
            // The keys' policies first, while the keys still say whose they are.
            tx.execute(
                "DELETE FROM policies WHERE target_kind = 'access_key' \
                 AND target IN (SELECT id FROM access_keys WHERE user_name = ?1)",
                [&name],
            )?;
            tx.execute("DELETE FROM access_keys WHERE user_name = ?1", [&name])?;
            delete_policies_of(tx, "user", &name)?;
            Ok(tx.execute("DELETE FROM users WHERE name = ?1", [&name])? > 0)
        })
        .await
    }

    async fn create_access_key(&self, key: &AccessKeyRecord) -> Result<bool> {
        let key = key.clone();
        self.write(move |tx| {
            // Inserts nothing when the user is missing (instead of failing the foreign key) or
            // the id is taken.
            Ok(tx.execute(
                &format!(
                    "INSERT INTO access_keys ({ACCESS_KEY_COLUMNS}) SELECT ?1, name, ?3, ?4, ?5, ?6 FROM users \
                     WHERE name = ?2 ON CONFLICT (id) DO NOTHING"
                ),
                params![key.id, key.user, key.secret_digest, key.disabled, key.created_at, key.secret_sealed],
            )? > 0)
        })
        .await
    }

    async fn access_key(&self, id: &str) -> Result<Option<AccessKeyRecord>> {
        let id = id.to_owned();
        self.with_conn(move |c| {
            Ok(c.query_row(
                &format!("SELECT {ACCESS_KEY_COLUMNS} FROM access_keys WHERE id = ?1"),
                [id],
                access_key_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn access_keys(&self, user: Option<&str>) -> Result<Vec<AccessKeyRecord>> {
        let user = user.map(str::to_owned);
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {ACCESS_KEY_COLUMNS} FROM access_keys WHERE ?1 IS NULL OR user_name = ?1 \
                 ORDER BY user_name, id"
            ))?;
            let rows = stmt.query_map([user], access_key_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn set_access_key_disabled(&self, id: &str, disabled: bool) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |tx| {
            Ok(tx.execute("UPDATE access_keys SET disabled = ?2 WHERE id = ?1", params![id, disabled])? > 0)
        })
        .await
    }

    async fn delete_access_key(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |tx| {
            if tx.execute("DELETE FROM access_keys WHERE id = ?1", [&id])? == 0 {
                return Ok(false);
            }
            delete_policies_of(tx, "access_key", &id)?;
            Ok(true)
        })
        .await
    }

    async fn set_access_key_secret_sealed(
        &self,
        id: &str,
        expected: Option<&str>,
        sealed: Option<&str>,
    ) -> Result<bool> {
        let (id, expected, sealed) = (id.to_owned(), expected.map(str::to_owned), sealed.map(str::to_owned));
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE access_keys SET secret_sealed = ?3 WHERE id = ?1 AND secret_sealed IS ?2",
                params![id, expected, sealed],
            )? == 1)
        })
        .await
    }

    async fn ensure_signing_key(&self, candidate: &SigningKeyRecord) -> Result<Vec<SigningKeyRecord>> {
        let candidate = candidate.clone();
        // The write lock (BEGIN IMMEDIATE) serializes racing callers: the first inserts, the
        // others find its key.
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO signing_keys (kid, pkcs8, created_at) SELECT ?1, ?2, ?3 \
                 WHERE NOT EXISTS (SELECT 1 FROM signing_keys)",
                params![candidate.kid, candidate.pkcs8, candidate.created_at],
            )?;
            let mut stmt =
                tx.prepare_cached("SELECT kid, pkcs8, created_at FROM signing_keys ORDER BY created_at, kid")?;
            let rows = stmt
                .query_map([], |r| Ok(SigningKeyRecord { kid: r.get(0)?, pkcs8: r.get(1)?, created_at: r.get(2)? }))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn reseal_signing_key(&self, kid: &str, expected: &[u8], sealed: &[u8]) -> Result<bool> {
        let (kid, expected, sealed) = (kid.to_owned(), expected.to_vec(), sealed.to_vec());
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE signing_keys SET pkcs8 = ?3 WHERE kid = ?1 AND pkcs8 = ?2",
                params![kid, expected, sealed],
            )? == 1)
        })
        .await
    }
}
