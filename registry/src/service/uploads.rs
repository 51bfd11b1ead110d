//! Upload sessions: start, append chunks, finish with a verified digest, cancel, purge.
//!
//! A session's state (offset, running hash, staged parts) is in the metadata store, so the
//! next chunk may arrive after a restart or at another replica. Chunks are appended with a
//! compare-and-swap on the offset: of two racing writers one wins, the other gets 416.

use berth_oci::{Algorithm, Digest, DigestHasher, RepoName, UploadId};
use berth_storage::metadata::{UploadRecord, unix_now};
use berth_storage::{ByteStream, Written};

use super::{Registry, upload_location};
use crate::error::{ApiError, ApiResult};

/// The inclusive byte range a chunk claims (`Content-Range: <start>-<end>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    pub start: u64,
    pub end: u64,
}

impl ChunkRange {
    /// Parses `start-end`, also accepting the `bytes ` / `bytes=` prefix some clients send.
    pub fn parse(value: &str) -> Option<ChunkRange> {
        let v = value.trim();
        let v = v.strip_prefix("bytes").map(|r| r.trim_start_matches([' ', '='])).unwrap_or(v);
        let (a, b) = v.split_once('-')?;
        let (start, end) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        (start <= end).then_some(ChunkRange { start, end })
    }

    fn len(self) -> u64 {
        self.end - self.start + 1
    }
}

/// The 416 answer that tells the client where the upload stands.
pub fn out_of_order(up: &UploadRecord) -> ApiError {
    ApiError::ChunkOutOfOrder {
        offset: up.offset,
        location: upload_location(&up.repo, &up.id),
        upload_id: up.id.to_string(),
    }
}

impl Registry {
    /// Opens a session hashing with `algorithm`.
    pub async fn start_upload(&self, repo: &RepoName, algorithm: Algorithm) -> ApiResult<UploadRecord> {
        let now = unix_now();
        let id: UploadId =
            uuid::Uuid::new_v4().to_string().parse().map_err(|e| ApiError::Internal(format!("upload id: {e}")))?;
        let record = UploadRecord {
            id,
            repo: repo.clone(),
            offset: 0,
            hash_state: DigestHasher::new(algorithm).save_state(),
            parts: Vec::new(),
            created_at: now,
            updated_at: now,
        };
        self.meta.create_upload(&record).await?;
        Ok(record)
    }

    /// The session `id` of `repo`.
    pub async fn upload_status(&self, repo: &RepoName, id: &UploadId) -> ApiResult<UploadRecord> {
        match self.meta.get_upload(id).await? {
            Some(up) if &up.repo == repo => Ok(up),
            _ => Err(ApiError::BlobUploadUnknown),
        }
    }

    /// Appends `body` to the session. With a `range`, the chunk must start at the current
    /// offset and be exactly that long.
    pub async fn append_chunk(
        &self,
        repo: &RepoName,
        id: &UploadId,
        range: Option<ChunkRange>,
        body: ByteStream,
    ) -> ApiResult<UploadRecord> {
        let up = self.upload_status(repo, id).await?;
        if range.is_some_and(|r| r.start != up.offset) {
            return Err(out_of_order(&up));
        }
        let mut hasher =
            DigestHasher::restore_state(&up.hash_state).map_err(|e| ApiError::Internal(format!("upload {id}: {e}")))?;
        let staged = self.blobs.stage_part(id, &up.parts, body, &mut hasher).await?;
        if let Some(r) = range
            && staged.len != r.len()
        {
            if let Some(name) = &staged.name {
                self.blobs.discard_part(id, name).await?;
            }
            return Err(ApiError::SizeInvalid(format!(
                "Content-Range {}-{} announces {} bytes, the body had {}",
                r.start,
                r.end,
                r.len(),
                staged.len
            )));
        }
        let Some(name) = staged.name else { return Ok(up) };
        let mut next = up.clone();
        next.offset += staged.len;
        if staged.replaces.is_some() {
            next.parts.pop();
        }
        next.parts.push(name.clone());
        next.hash_state = hasher.save_state();
        next.updated_at = unix_now();
        if !self.meta.advance_upload(&next, up.offset, up.parts.len()).await? {
            // Another writer appended first: our bytes are not part of the upload.
            self.blobs.discard_part(id, &name).await?;
            let current = self.upload_status(repo, id).await?;
            return Err(out_of_order(&current));
        }
        if let Some(old) = &staged.replaces
            && let Err(e) = self.blobs.discard_part(id, old).await
        {
            // It is no longer listed in the session; the upload's folder goes at commit.
            tracing::warn!(upload.id = %id, error = %e, "could not remove a part that was joined into the next");
        }
        Ok(next)
    }

    /// Appends the last chunk (possibly empty), verifies the whole upload against `digest`
    /// and commits the blob to `repo`. Returns the blob's size.
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        range: Option<ChunkRange>,
        body: ByteStream,
        digest: &Digest,
    ) -> ApiResult<u64> {
        let up = self.append_chunk(repo, id, range, body).await?;
        // Claim the session: of two racing finishers only one proceeds.
        if !self.meta.delete_upload(id).await? {
            return Err(ApiError::BlobUploadUnknown);
        }
        let result = self.verify_and_commit(&up, digest).await;
        if result.is_err() {
            // The session is gone; leave nothing of it behind.
            if let Err(e) = self.blobs.discard_upload(id).await {
                tracing::warn!(upload.id = %id, error = %e, "could not remove a failed upload's parts");
            }
        }
        result
    }

    async fn verify_and_commit(&self, up: &UploadRecord, digest: &Digest) -> ApiResult<u64> {
        let actual = match DigestHasher::restore_state(&up.hash_state) {
            Ok(h) if h.algorithm() == digest.algorithm() => h.finish(),
            _ => self.blobs.hash_parts(&up.id, &up.parts, digest.algorithm()).await?,
        };
        if &actual != digest {
            return Err(ApiError::DigestInvalid(format!("the uploaded content has digest {actual}, not {digest}")));
        }
        self.blobs.commit_verified(&up.id, &up.parts, digest).await?;
        self.meta.link_blob(&up.repo, digest, up.offset).await?;
        tracing::info!(repo.name = %up.repo, blob.digest = %digest, blob.size = up.offset, "blob committed");
        Ok(up.offset)
    }

    /// A whole blob in one request (`POST ?digest=`): staged, verified and committed with no
    /// session record (a request that dies midway leaves a folder the purge removes).
    pub async fn monolithic_upload(&self, repo: &RepoName, digest: &Digest, body: ByteStream) -> ApiResult<u64> {
        let id: UploadId =
            uuid::Uuid::new_v4().to_string().parse().map_err(|e| ApiError::Internal(format!("upload id: {e}")))?;
        match self.blobs.write_verified(&id, digest, body).await? {
            Written::Stored(len) => {
                self.meta.link_blob(repo, digest, len).await?;
                tracing::info!(repo.name = %repo, blob.digest = %digest, blob.size = len, "blob committed");
                Ok(len)
            }
            Written::Mismatch(actual) => {
                Err(ApiError::DigestInvalid(format!("the uploaded content has digest {actual}, not {digest}")))
            }
        }
    }

    /// Cancels a session and removes what it staged.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &UploadId) -> ApiResult<()> {
        self.upload_status(repo, id).await?;
        if !self.meta.delete_upload(id).await? {
            return Err(ApiError::BlobUploadUnknown);
        }
        self.blobs.discard_upload(id).await?;
        Ok(())
    }

    /// Cancels every session idle for longer than the configured age, and removes upload
    /// folders left with no session and unfinished S3 multipart uploads (a request or a
    /// process that died midway). Returns how many.
    pub async fn purge_stale_uploads(&self) -> ApiResult<usize> {
        let cutoff = unix_now() - self.settings.upload_max_age.as_secs() as i64;
        let mut purged = 0;
        for up in self.meta.stale_uploads(cutoff).await? {
            if self.meta.delete_upload(&up.id).await? {
                self.blobs.discard_upload(&up.id).await?;
                purged += 1;
                tracing::info!(upload.id = %up.id, repo.name = %up.repo, upload.offset = up.offset, "stale upload purged");
            }
        }
        purged += self.blobs.abort_stale_multipart(cutoff).await?;
        for (id, newest) in self.blobs.upload_folders().await? {
            if newest < cutoff && self.meta.get_upload(&id).await?.is_none() {
                self.blobs.discard_upload(&id).await?;
                purged += 1;
                tracing::info!(upload.id = %id, "orphaned upload data purged");
            }
        }
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_ranges() {
        assert_eq!(ChunkRange::parse("0-99"), Some(ChunkRange { start: 0, end: 99 }));
        assert_eq!(ChunkRange::parse("bytes 5-9"), Some(ChunkRange { start: 5, end: 9 }));
        assert_eq!(ChunkRange::parse("bytes=5-9"), Some(ChunkRange { start: 5, end: 9 }));
        assert_eq!(ChunkRange::parse("9-5"), None);
        assert_eq!(ChunkRange::parse("x-5"), None);
        assert_eq!(ChunkRange::parse("5"), None);
        assert_eq!(ChunkRange::parse("0-0").map(ChunkRange::len), Some(1));
    }
}
