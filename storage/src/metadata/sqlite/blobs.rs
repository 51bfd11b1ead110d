//! [`SqliteStore`]'s blobs: links to repositories and sealed copies ([`Blobs`]).

use async_trait::async_trait;
use berth_oci::{Digest, RepoName};
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, emit, ensure_repo};
use crate::crypt::{Run, SealedBlob};
use crate::error::Result;
use crate::metadata::sql::COPY_COLUMNS;
use crate::metadata::{
    BlobEntry, Blobs, Origin, blob_linked, db_size, parse_digest, repository_created, size_of, unix_now,
};

type CopyRow = (String, String, i64, String, Vec<u8>, Vec<u8>);

fn copy_record(row: CopyRow) -> Result<SealedBlob> {
    let (key_name, object, size, kek, wrapped, runs) = row;
    Ok(SealedBlob { key_name, object, size: size_of(size), kek, wrapped, runs: Run::decode(&runs)? })
}

fn copy_from_row(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<CopyRow> {
    Ok((row.get(at)?, row.get(at + 1)?, row.get(at + 2)?, row.get(at + 3)?, row.get(at + 4)?, row.get(at + 5)?))
}

#[async_trait]
impl Blobs for SqliteStore {
    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.with_conn(move |c| {
            let size: Option<i64> = c
                .query_row(
                    "SELECT b.size FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
                     JOIN blobs b ON b.digest = rb.digest WHERE r.name = ?1 AND rb.digest = ?2",
                    params![repo, digest],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(size.map(size_of))
        })
        .await
    }

    async fn any_blob(&self, digest: &Digest) -> Result<Option<u64>> {
        let digest = digest.to_string();
        self.with_conn(move |c| {
            let size: Option<i64> = c
                .query_row(
                    "SELECT b.size FROM blobs b WHERE b.digest = ?1 \
                     AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)",
                    [digest],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(size.map(size_of))
        })
        .await
    }

    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        plaintext: bool,
        from: Option<&RepoName>,
        origin: &Origin,
    ) -> Result<()> {
        let (repo, digest, from, origin) = (repo.clone(), digest.clone(), from.cloned(), origin.clone());
        self.write(move |tx| {
            let column = digest.to_string();
            // The collector is deleting this digest's objects: no link may point at them.
            let doomed: Option<i64> =
                tx.query_row("SELECT 1 FROM gc_dooms WHERE digest = ?1", [&column], |r| r.get(0)).optional()?;
            if doomed.is_some() {
                return Err(crate::Error::Doomed(digest.clone()));
            }
            let (id, created) = ensure_repo(tx, &repo)?;
            let now = unix_now();
            tx.execute(
                "INSERT INTO blobs (digest, size, created_at, plain) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (digest) DO UPDATE SET plain = MAX(plain, excluded.plain)",
                params![column, db_size(size), now, i64::from(plaintext)],
            )?;
            // Linking again tells the client again that the blob is there: seen now, unmarked.
            tx.execute(
                "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (repository_id, digest) DO UPDATE SET seen_at = excluded.created_at, gc_mark = NULL",
                params![id, column, now],
            )?;
            let mut events = Vec::with_capacity(2);
            if created {
                events.push(repository_created(&repo, &origin));
            }
            events.push(blob_linked(&repo, &digest, size, from.as_ref(), &origin));
            emit(tx, &events)
        })
        .await
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write(move |tx| {
            let n = tx.execute(
                "DELETE FROM repository_blobs WHERE digest = ?2 \
                 AND repository_id = (SELECT id FROM repositories WHERE name = ?1)",
                params![repo, digest],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn repo_blob_entry(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobEntry>> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.with_conn(move |c| {
            let row = c
                .query_row(
                    &format!(
                        "SELECT b.size, r.key_name, c.key_name IS NOT NULL, {COPY_COLUMNS}, rb.gc_mark IS NOT NULL \
                         FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
                         JOIN blobs b ON b.digest = rb.digest \
                         LEFT JOIN blob_copies c ON c.digest = rb.digest AND c.key_name = r.key_name \
                         WHERE r.name = ?1 AND rb.digest = ?2"
                    ),
                    params![repo, digest],
                    |r| {
                        let copy = if r.get::<_, bool>(2)? { Some(copy_from_row(r, 3)?) } else { None };
                        Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?, copy, r.get::<_, bool>(9)?))
                    },
                )
                .optional()?;
            row.map(|(size, key_name, copy, marked)| {
                Ok(BlobEntry { size: size_of(size), key_name, copy: copy.map(copy_record).transpose()?, marked })
            })
            .transpose()
        })
        .await
    }

    async fn repository_blobs(&self, repo: &RepoName) -> Result<Vec<(Digest, u64)>> {
        let repo = repo.to_string();
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT b.digest, b.size FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
                 JOIN blobs b ON b.digest = rb.digest WHERE r.name = ?1 ORDER BY b.digest",
            )?;
            let rows = stmt.query_map([repo], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            rows.map(|r| {
                let (d, size) = r?;
                Ok((parse_digest(d)?, size_of(size)))
            })
            .collect()
        })
        .await
    }

    async fn blob_copy(&self, digest: &Digest, key_name: &str) -> Result<Option<SealedBlob>> {
        let (digest, key_name) = (digest.to_string(), key_name.to_owned());
        self.with_conn(move |c| {
            let row = c
                .query_row(
                    &format!(
                        "SELECT {COPY_COLUMNS} FROM blob_copies c JOIN blobs b ON b.digest = c.digest \
                         WHERE c.digest = ?1 AND c.key_name = ?2"
                    ),
                    params![digest, key_name],
                    |r| copy_from_row(r, 0),
                )
                .optional()?;
            row.map(copy_record).transpose()
        })
        .await
    }

    async fn add_blob_copy(&self, digest: &Digest, copy: &SealedBlob) -> Result<bool> {
        let (digest, copy) = (digest.to_string(), copy.clone());
        self.write(move |tx| {
            let now = unix_now();
            tx.execute(
                "INSERT INTO blobs (digest, size, created_at, plain) VALUES (?1, ?2, ?3, 0) ON CONFLICT (digest) DO NOTHING",
                params![digest, db_size(copy.size), now],
            )?;
            let n = tx.execute(
                "INSERT INTO blob_copies (digest, key_name, object, kek, wrapped, runs, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                params![digest, copy.key_name, copy.object, copy.kek, copy.wrapped, Run::encode(&copy.runs), now],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn copies_wrapped_by(&self, kek: &str, limit: usize) -> Result<Vec<(Digest, SealedBlob)>> {
        let kek = kek.to_owned();
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT c.digest, {COPY_COLUMNS} FROM blob_copies c JOIN blobs b ON b.digest = c.digest \
                 WHERE c.kek = ?1 ORDER BY c.digest, c.key_name LIMIT ?2"
            ))?;
            let rows =
                stmt.query_map(params![kek, limit as i64], |r| Ok((r.get::<_, String>(0)?, copy_from_row(r, 1)?)))?;
            rows.map(|r| {
                let (d, row) = r?;
                Ok((parse_digest(d)?, copy_record(row)?))
            })
            .collect()
        })
        .await
    }

    async fn rewrap_copy(
        &self,
        digest: &Digest,
        key_name: &str,
        old_kek: &str,
        new_kek: &str,
        wrapped: &[u8],
    ) -> Result<bool> {
        let args = (digest.to_string(), key_name.to_owned(), old_kek.to_owned(), new_kek.to_owned(), wrapped.to_vec());
        self.write(move |tx| {
            let (digest, key_name, old, new, wrapped) = args;
            Ok(tx.execute(
                "UPDATE blob_copies SET kek = ?4, wrapped = ?5 WHERE digest = ?1 AND key_name = ?2 AND kek = ?3",
                params![digest, key_name, old, new, wrapped],
            )? > 0)
        })
        .await
    }

    async fn redundant_plaintext(&self, limit: usize) -> Result<Vec<Digest>> {
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(&format!("SELECT b.digest FROM blobs b WHERE {REDUNDANT} LIMIT ?1"))?;
            let rows = stmt.query_map([limit as i64], |r| r.get::<_, String>(0))?;
            rows.map(|r| parse_digest(r?)).collect()
        })
        .await
    }

    async fn drop_plaintext(&self, digest: &Digest) -> Result<bool> {
        let digest = digest.to_string();
        self.write(move |tx| {
            Ok(tx.execute(&format!("UPDATE blobs AS b SET plain = 0 WHERE b.digest = ?1 AND {REDUNDANT}"), [digest])?
                > 0)
        })
        .await
    }
}

/// A blob (`b`) whose plaintext object exists and is needed by no repository: each one
/// linking it has a key and a sealed copy for that key.
const REDUNDANT: &str = "b.plain = 1 AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest) \
    AND NOT EXISTS (SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
    WHERE rb.digest = b.digest AND (r.key_name IS NULL OR NOT EXISTS \
    (SELECT 1 FROM blob_copies c WHERE c.digest = b.digest AND c.key_name = r.key_name)))";
