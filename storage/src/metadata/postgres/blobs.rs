//! [`PostgresStore`]'s blobs: links to repositories and sealed copies ([`Blobs`]).

use async_trait::async_trait;
use berth_oci::{Digest, RepoName};
use deadpool_postgres::GenericClient;

use super::{PostgresStore, db_count, emit, ensure_repo};
use crate::crypt::{Run, SealedBlob};
use crate::error::Result;
use crate::metadata::sql::COPY_COLUMNS;
use crate::metadata::{
    BlobEntry, Blobs, Origin, blob_linked, db_size, parse_digest, repository_created, size_of, unix_now,
};

/// The copy read from [`COPY_COLUMNS`] starting at column `at`.
fn copy_record(row: &tokio_postgres::Row, at: usize) -> Result<SealedBlob> {
    Ok(SealedBlob {
        key_name: row.try_get(at)?,
        object: row.try_get(at + 1)?,
        size: size_of(row.try_get(at + 2)?),
        kek: row.try_get(at + 3)?,
        wrapped: row.try_get(at + 4)?,
        runs: Run::decode(row.try_get(at + 5)?)?,
    })
}

/// A blob (`b`) whose plaintext object exists and is needed by no repository: each one
/// linking it has a key and a sealed copy for that key (as in SQLite).
const REDUNDANT: &str = "b.plain AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest) \
    AND NOT EXISTS (SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
    WHERE rb.digest = b.digest AND (r.key_name IS NULL OR NOT EXISTS \
    (SELECT 1 FROM blob_copies c WHERE c.digest = b.digest AND c.key_name = r.key_name)))";

#[async_trait]
impl Blobs for PostgresStore {
    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT b.size FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
                 JOIN blobs b ON b.digest = rb.digest WHERE r.name = $1 AND rb.digest = $2",
            )
            .await?;
        let row = client.query_opt(&stmt, &[&repo.as_str(), &digest.to_string()]).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?.map(size_of))
    }

    async fn any_blob(&self, digest: &Digest) -> Result<Option<u64>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT b.size FROM blobs b WHERE b.digest = $1 \
                 AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)",
            )
            .await?;
        let row = client.query_opt(&stmt, &[&digest.to_string()]).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?.map(size_of))
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
        let column = digest.to_string();
        transaction!(self, |tx| {
            // The digest's lock orders this link with the collector's doom: the doom waits and
            // then sees the link, or this waits and then sees the doom.
            super::gc::lock_digests(&tx, std::slice::from_ref(&column)).await?;
            if super::gc::doomed_now(&tx, &column).await? {
                return Err(crate::Error::Doomed(digest.clone()));
            }
            let (id, created) = ensure_repo(&tx, repo).await?;
            let now = unix_now();
            // Once flagged, plaintext stays flagged until `drop_plaintext`. DO UPDATE locks the
            // row even when its WHERE leaves it unchanged: a concurrent `drop_plaintext` waits
            // for this link to commit, then sees it.
            tx.execute(
                "INSERT INTO blobs (digest, size, created_at, plain) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (digest) DO UPDATE SET plain = true WHERE excluded.plain AND NOT blobs.plain",
                &[&column, &db_size(size), &now, &plaintext],
            )
            .await?;
            // Linking again tells the client again that the blob is there: seen now, unmarked.
            tx.execute(
                "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (repository_id, digest) DO UPDATE SET seen_at = excluded.created_at, gc_mark = NULL",
                &[&id, &column, &now],
            )
            .await?;
            let mut events = Vec::with_capacity(2);
            if created {
                events.push(repository_created(repo, origin));
            }
            events.push(blob_linked(repo, digest, size, from, origin));
            emit(&tx, &events).await?;
        })
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM repository_blobs WHERE digest = $2 \
                 AND repository_id = (SELECT id FROM repositories WHERE name = $1)",
                &[&repo.as_str(), &digest.to_string()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn repo_blob_entry(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobEntry>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT b.size, r.key_name, c.key_name IS NOT NULL, {COPY_COLUMNS}, rb.gc_mark IS NOT NULL \
                 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
                 JOIN blobs b ON b.digest = rb.digest \
                 LEFT JOIN blob_copies c ON c.digest = rb.digest AND c.key_name = r.key_name \
                 WHERE r.name = $1 AND rb.digest = $2"
            ))
            .await?;
        let row = client.query_opt(&stmt, &[&repo.as_str(), &digest.to_string()]).await?;
        row.map(|r| {
            let copy = if r.try_get(2)? { Some(copy_record(&r, 3)?) } else { None };
            Ok(BlobEntry { size: size_of(r.try_get(0)?), key_name: r.try_get(1)?, copy, marked: r.try_get(9)? })
        })
        .transpose()
    }

    async fn repository_blobs(&self, repo: &RepoName) -> Result<Vec<(Digest, u64)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT b.digest, b.size FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
                 JOIN blobs b ON b.digest = rb.digest WHERE r.name = $1 ORDER BY b.digest COLLATE \"C\"",
            )
            .await?;
        let rows = client.query(&stmt, &[&repo.as_str()]).await?;
        rows.iter().map(|r| Ok((parse_digest(r.try_get(0)?)?, size_of(r.try_get(1)?)))).collect()
    }

    async fn blob_copy(&self, digest: &Digest, key_name: &str) -> Result<Option<SealedBlob>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {COPY_COLUMNS} FROM blob_copies c JOIN blobs b ON b.digest = c.digest \
                 WHERE c.digest = $1 AND c.key_name = $2"
            ))
            .await?;
        let row = client.query_opt(&stmt, &[&digest.to_string(), &key_name]).await?;
        row.map(|r| copy_record(&r, 0)).transpose()
    }

    async fn add_blob_copy(&self, digest: &Digest, copy: &SealedBlob) -> Result<bool> {
        let digest = digest.to_string();
        let runs = Run::encode(&copy.runs);
        transaction!(self, |tx| {
            let now = unix_now();
            // A blob first known through its copy has no plaintext object.
            tx.execute(
                "INSERT INTO blobs (digest, size, created_at, plain) VALUES ($1, $2, $3, false) \
                 ON CONFLICT (digest) DO NOTHING",
                &[&digest, &db_size(copy.size), &now],
            )
            .await?;
            // Of racing writers of the same copy, the first to commit records it; the others
            // wait for it here and insert nothing.
            let n = tx
                .execute(
                    "INSERT INTO blob_copies (digest, key_name, object, kek, wrapped, runs, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (digest, key_name) DO NOTHING",
                    &[&digest, &copy.key_name, &copy.object, &copy.kek, &copy.wrapped, &runs, &now],
                )
                .await?;
            n > 0
        })
    }

    async fn copies_wrapped_by(&self, kek: &str, limit: usize) -> Result<Vec<(Digest, SealedBlob)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT c.digest, {COPY_COLUMNS} FROM blob_copies c JOIN blobs b ON b.digest = c.digest \
                 WHERE c.kek = $1 ORDER BY c.digest COLLATE \"C\", c.key_name COLLATE \"C\" LIMIT $2"
            ))
            .await?;
        let rows = client.query(&stmt, &[&kek, &db_count(limit)]).await?;
        rows.iter().map(|r| Ok((parse_digest(r.try_get(0)?)?, copy_record(r, 1)?))).collect()
    }

    async fn rewrap_copy(
        &self,
        digest: &Digest,
        key_name: &str,
        old_kek: &str,
        new_kek: &str,
        wrapped: &[u8],
    ) -> Result<bool> {
        // A racing rewrap waits for this row's lock, re-checks `kek = old`, and loses.
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE blob_copies SET kek = $4, wrapped = $5 WHERE digest = $1 AND key_name = $2 AND kek = $3",
                &[&digest.to_string(), &key_name, &old_kek, &new_kek, &wrapped],
            )
            .await?;
        Ok(n > 0)
    }

    async fn redundant_plaintext(&self, limit: usize) -> Result<Vec<Digest>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&format!("SELECT b.digest FROM blobs b WHERE {REDUNDANT} LIMIT $1")).await?;
        let rows = client.query(&stmt, &[&db_count(limit)]).await?;
        rows.iter().map(|r| parse_digest(r.try_get(0)?)).collect()
    }

    async fn drop_plaintext(&self, digest: &Digest) -> Result<bool> {
        let digest = digest.to_string();
        transaction!(self, |tx| {
            // First the blob's row lock, which a `link_blob` of this digest holds until it
            // commits; then the check, in a new statement whose snapshot sees that link.
            let locked =
                tx.query_opt("SELECT plain FROM blobs WHERE digest = $1 FOR NO KEY UPDATE", &[&digest]).await?;
            match locked {
                Some(row) if row.try_get::<_, bool>(0)? => {
                    let n = tx
                        .execute(
                            &format!("UPDATE blobs b SET plain = false WHERE b.digest = $1 AND {REDUNDANT}"),
                            &[&digest],
                        )
                        .await?;
                    n > 0
                }
                _ => false,
            }
        })
    }
}
