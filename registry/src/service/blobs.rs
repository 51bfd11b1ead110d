//! Reading, mounting and deleting blobs of a repository.

use std::ops::Range;

use berth_oci::{Digest, RepoName};
use berth_storage::ByteStream;
use berth_storage::metadata::{BlobEntry, Origin};
use futures::StreamExt;

use super::Registry;
use crate::error::{ApiError, ApiResult};

impl Registry {
    /// The size of `digest` in `repo`.
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> ApiResult<u64> {
        self.meta.repo_blob(repo, digest).await?.ok_or(ApiError::BlobUnknown)
    }

    /// What `repo` holds of `digest`: size, key, sealed copy. For an answer that tells a
    /// client the blob is there (a HEAD or GET): the read is recorded for the garbage
    /// collector (in a batch), and a link the collector marked is unmarked first, so the
    /// collector keeps it ([`super::gc`]).
    pub async fn blob_entry(&self, repo: &RepoName, digest: &Digest) -> ApiResult<BlobEntry> {
        let entry = self.meta.repo_blob_entry(repo, digest).await?.ok_or(ApiError::BlobUnknown)?;
        self.seen_link(repo, digest, &entry).await?;
        Ok(entry)
    }

    /// Records that a client is told `digest` is in `repo`: batched, or at once when the
    /// collector marked the link (`BlobUnknown` when the collector removed it first).
    async fn seen_link(&self, repo: &RepoName, digest: &Digest, entry: &BlobEntry) -> ApiResult<()> {
        if entry.marked {
            if !self.meta.unmark_link(repo, digest, berth_storage::metadata::unix_now()).await? {
                return Err(ApiError::BlobUnknown);
            }
            tracing::debug!(repo.name = %repo, blob.digest = %digest, "a link the garbage collector marked was read: kept");
        } else {
            self.seen.record(repo, digest);
        }
        Ok(())
    }

    /// The blob's bytes (plaintext), or the non-empty `range` of them. A sealed copy whose
    /// first segment does not open is an error here; a later one ends the stream.
    ///
    /// Plaintext is served as stored, unless `storage.verify_reads` is on: then whole reads
    /// are checked against the digest (the last piece is held back until it matches), and
    /// so is a range that covers the whole blob. Its digest was verified when it was stored,
    /// clients verify what they pull, and the scrub finds damage at rest. Integrity failures
    /// are counted. With `zero_copy` (a plain-HTTP connection's jobs), verification off and
    /// the blob's file on the local disk, the stream is placeholders that the connection
    /// sends from the file ([`crate::zerocopy`]); nothing else may consume that stream.
    pub async fn open_blob(
        &self,
        digest: &Digest,
        entry: &BlobEntry,
        range: Option<Range<u64>>,
        zero_copy: Option<&crate::zerocopy::Jobs>,
    ) -> ApiResult<ByteStream> {
        let range = range.filter(|r| r.start > 0 || r.end < entry.size);
        let verify = self.settings.verify_reads;
        let stream = match &entry.copy {
            Some(copy) => {
                let kek = self.crypt.kek(self.meta.as_ref(), &copy.kek).await?;
                let dek = copy.data_key(&kek, digest).map_err(|e| {
                    tracing::error!(blob.digest = %digest, key.id = %copy.kek, error = %e, "a blob's data key does not unwrap");
                    ApiError::from(e)
                })?;
                self.blobs.read_sealed(digest, copy, dek, range).await
            }
            None => match zero_copy.filter(|_| !verify) {
                Some(jobs) => match self.blobs.open_local(digest).await {
                    Ok(Some(local)) => return self.zero_copy_body(digest, entry, local, range, jobs),
                    Ok(None) => self.blobs.read_stored(digest).await.map(|(_, s)| s),
                    Err(e) => Err(e),
                },
                None if verify || range.is_some() => self.blobs.read(digest, range).await,
                None => self.blobs.read_stored(digest).await.map(|(_, s)| s),
            },
        };
        let mut stream = match stream {
            Ok(s) => self.integrity.counting(s),
            Err(berth_storage::Error::NotFound) => return Err(missing(digest)),
            Err(e) => return Err(e.into()),
        };
        // The first piece is read before the answer starts, so that a blob that fails at once
        // (tampered, wrong key) gets an error status rather than a cut connection.
        match stream.next().await {
            None => Ok(futures::stream::empty().boxed()),
            Some(Err(e)) => Err(ApiError::Internal(e.to_string())),
            Some(Ok(first)) => Ok(futures::stream::once(async move { Ok(first) }).chain(stream).boxed()),
        }
    }

    /// The zero-copy body of `range` of a plaintext blob's open file. The file was opened and
    /// its length checked before the answer starts (as the first piece of a read is): a file
    /// of another length than recorded is damaged, an error status and an integrity failure.
    fn zero_copy_body(
        &self,
        digest: &Digest,
        entry: &BlobEntry,
        local: berth_storage::LocalBlob,
        range: Option<Range<u64>>,
        jobs: &crate::zerocopy::Jobs,
    ) -> ApiResult<ByteStream> {
        if local.len != entry.size {
            self.integrity.read_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(blob.digest = %digest, blob.size = entry.size, file.size = local.len,
                "a blob's file has another length than recorded");
            return Err(ApiError::Internal(format!(
                "blob {digest}: {} bytes stored, {} recorded",
                local.len, entry.size
            )));
        }
        Ok(crate::zerocopy::file_body(local.file, range.unwrap_or(0..entry.size), jobs))
    }
    /// Links `digest` from `from` into `repo` when `from` has it. `None` when it cannot be
    /// mounted (the client then uploads it). Between repositories with different keys the
    /// content is re-encrypted for the target's key (or decrypted for a plaintext one).
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: &RepoName,
        origin: &Origin,
    ) -> ApiResult<Option<u64>> {
        // Held from before the source is read until the link is written: the collector
        // cannot doom the blob in between.
        self.with_hold(digest, self.mount_held(repo, digest, from, origin)).await
    }

    async fn mount_held(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: &RepoName,
        origin: &Origin,
    ) -> ApiResult<Option<u64>> {
        let Some(source) = self.meta.repo_blob_entry(from, digest).await? else { return Ok(None) };
        match self.seen_link(from, digest, &source).await {
            Err(ApiError::BlobUnknown) => return Ok(None),
            other => other?,
        }
        let size = source.size;
        let covering = self.quotas_for(repo).await?;
        self.check_blob_quota(&covering, repo, digest, size).await?;
        let key = self.upload_key(repo).await?;
        let shared = match (&key, &source.copy) {
            // The source's content is what the target reads: a copy for the same key, or
            // plaintext for a plaintext target (or one whose key predates the blob).
            (Some(k), Some(copy)) if &copy.key_name == k => Some(false),
            (Some(k), _) if self.meta.blob_copy(digest, k).await?.is_some() => Some(false),
            (None, None) if self.blobs.size(digest).await?.is_some() => Some(true),
            (None, Some(_)) if self.blobs.size(digest).await?.is_some() => Some(true),
            _ => None,
        };
        let plaintext = match shared {
            Some(plaintext) => plaintext,
            None => {
                let content = match self.open_blob(digest, &source, None, None).await {
                    Ok(s) => s,
                    Err(ApiError::BlobUnknown) => return Ok(None),
                    Err(e) => return Err(e),
                };
                self.write_blob(digest, content, key.as_deref()).await?;
                tracing::info!(repo.name = %repo, blob.digest = %digest, mount.from = %from, key.name = ?key,
                    "blob re-encrypted for the mount");
                key.is_none()
            }
        };
        self.ensure_repository(repo, key.as_deref(), origin).await?;
        self.meta.link_blob(repo, digest, size, plaintext, Some(from), origin).await?;
        self.events.wake();
        tracing::info!(repo.name = %repo, blob.digest = %digest, mount.from = %from, "blob mounted");
        self.note_quota_use(&covering, repo, origin).await;
        Ok(Some(size))
    }

    /// Removes `digest` from `repo`. Its bytes stay until garbage collection finds them
    /// unreferenced everywhere.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> ApiResult<()> {
        if !self.settings.delete_blobs {
            return Err(ApiError::Unsupported("blob deletion is disabled on this registry".into()));
        }
        if self.meta.unlink_blob(repo, digest).await? { Ok(()) } else { Err(ApiError::BlobUnknown) }
    }
}

/// A blob linked in the metadata but missing at rest: an operator must know.
fn missing(digest: &Digest) -> ApiError {
    tracing::error!(blob.digest = %digest, "blob is linked but its content is missing");
    ApiError::BlobUnknown
}
