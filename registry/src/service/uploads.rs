//! Upload sessions: start, append chunks, finish with a verified digest, cancel, purge.
//!
//! A session's state (offset, running hash, staged parts) is in the metadata store, so the
//! next chunk may arrive after a restart or at another replica. Chunks are appended with a
//! compare-and-swap on the offset: of two racing writers one wins, the other gets 416.

use berth_oci::{Algorithm, Digest, DigestHasher, RepoName, UploadId};
use berth_storage::crypt::format::{SEALED_SEGMENT, SEGMENT};
use berth_storage::crypt::record::{OpenUpload, blob_wrap_context};
use berth_storage::crypt::{Dek, Run, SealedBlob, Sealer, UploadSealing};
use berth_storage::metadata::{Origin, UploadQuota, UploadRecord, unix_now};
use berth_storage::{ByteStream, Inbound, Target, Written, layout};

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
    /// A range whose length does not fit in 64 bits (`0-18446744073709551615`) is no range:
    /// its length would wrap to 0 and pass for an empty chunk.
    pub fn parse(value: &str) -> Option<ChunkRange> {
        let v = value.trim();
        let v = v.strip_prefix("bytes").map(|r| r.trim_start_matches([' ', '='])).unwrap_or(v);
        let (a, b) = v.split_once('-')?;
        let (start, end): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        end.checked_sub(start)?.checked_add(1)?;
        Some(ChunkRange { start, end })
    }

    /// The number of bytes the range announces; `parse` made sure it fits.
    fn len(self) -> u64 {
        (self.end - self.start).saturating_add(1)
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
    /// The key name blobs pushed to `repo` are sealed with: the repository's, or for a
    /// repository not created yet the one its creation plan gives it (refused when pushes
    /// may not create it: [`Registry::plan_for_push`]). `None`: plaintext.
    pub async fn upload_key(&self, repo: &RepoName) -> ApiResult<Option<String>> {
        match self.meta.repository_key(repo).await? {
            Some(key) => Ok(key),
            None => Ok(self.plan_for_push(repo).await?.new.key),
        }
    }

    /// Creates `repo` unless it exists, with the settings of its creation plan, which must
    /// give it key `key` (the key the upload was prepared for); fails when the repository
    /// has, or would get, another key (it was created meanwhile, or a template changed), so a
    /// blob is never linked where it cannot be read. The client pushes again.
    pub(crate) async fn ensure_repository(&self, repo: &RepoName, key: Option<&str>, origin: &Origin) -> ApiResult<()> {
        // Read first: creating is a write transaction (an fsync on SQLite), needed once.
        let actual = match self.meta.repository_key(repo).await? {
            Some(actual) => actual,
            None => {
                let plan = self.plan_for_push(repo).await?;
                if plan.new.key.as_deref() != key {
                    return Err(ApiError::Internal(format!(
                        "repository {repo} would be created with key {:?}, the upload was prepared for {key:?} \
                         (a creation template changed); retry the push",
                        plan.new.key
                    )));
                }
                let created = self.meta.create_repository(repo, &plan.new, origin).await?;
                if created.created {
                    tracing::info!(repo.name = %repo, template = ?plan.template, "repository created by a push");
                }
                created.key
            }
        };
        // Also refused: a plaintext upload into a repository that got a key meanwhile
        // (`berth keys encrypt-existing`), whose plaintext may be deleted at any moment.
        if actual.as_deref() == key {
            Ok(())
        } else {
            Err(ApiError::Internal(format!(
                "repository {repo} uses key {actual:?}, the upload was prepared for {key:?}; retry the push"
            )))
        }
    }

    /// Opens a session hashing with `algorithm` for the principal of `origin`, within the
    /// bounds on open sessions (`uploads.max_open_per_*`).
    pub async fn start_upload(
        &self,
        repo: &RepoName,
        algorithm: Algorithm,
        origin: &Origin,
    ) -> ApiResult<UploadRecord> {
        let now = unix_now();
        let id: UploadId =
            uuid::Uuid::new_v4().to_string().parse().map_err(|e| ApiError::Internal(format!("upload id: {e}")))?;
        let hasher = DigestHasher::new(algorithm);
        let sealing = match self.upload_key(repo).await? {
            Some(name) => {
                let kek = self.crypt.active(self.meta.as_ref(), &name).await?;
                Some(UploadSealing::start(&kek, &name, &id, &hasher)?)
            }
            None => None,
        };
        let record = UploadRecord {
            id,
            repo: repo.clone(),
            offset: 0,
            hash_state: if sealing.is_some() { Vec::new() } else { hasher.save_state() },
            parts: Vec::new(),
            created_at: now,
            updated_at: now,
            sealing,
        };
        let quota = UploadQuota {
            principal: origin.actor.clone().unwrap_or_default(),
            per_repository: self.settings.uploads_per_repository,
            per_principal: self.settings.uploads_per_principal,
        };
        self.meta.create_upload(&record, &quota).await?;
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
        if self.blobs.appends_in_place(&up.parts) {
            return self.append_in_place(repo, id, range, body).await;
        }
        let open = self.open_sealing(&up).await?;
        let mut inbound = inbound_for(&up, open.as_ref())?;
        let staged = self.blobs.stage_part(id, &up.parts, body, &mut inbound).await?;
        if let Some(r) = range
            && staged.len != r.len()
        {
            if let Some(name) = &staged.name {
                self.blobs.discard_part(id, name).await?;
            }
            return Err(range_mismatch(r, staged.len));
        }
        if staged.len == 0 {
            return Ok(up);
        }
        let mut next = up.clone();
        next.offset += staged.len;
        if staged.replaces.is_some() {
            next.parts.pop();
        }
        next.parts.extend(staged.name.clone());
        next.updated_at = unix_now();
        advance_state(&mut next, &up, open.as_ref(), &inbound)?;
        if !self.meta.advance_upload(&next, up.offset, up.parts.len()).await? {
            // Another writer appended first: our bytes are not part of the upload.
            if let Some(name) = &staged.name {
                self.blobs.discard_part(id, name).await?;
            }
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

    /// [`Registry::append_chunk`] on the local disk: the chunk is appended to the session's
    /// one data file (`berth_storage::blob::UploadFile`). The file's lock is taken before
    /// the session is read and held past its compare-and-swap, so two writers at the same
    /// offset never interleave bytes: the second waits, then is answered 416 with the new offset. The file is first
    /// cut back to what the session vouches for (a writer may have died between its write
    /// and its compare-and-swap), and a chunk that is not recorded is cut off again.
    async fn append_in_place(
        &self,
        repo: &RepoName,
        id: &UploadId,
        range: Option<ChunkRange>,
        body: ByteStream,
    ) -> ApiResult<UploadRecord> {
        // Waits for a writer appending now: the session is then read as it left it.
        let Some(file) = self.blobs.lock_upload(id).await? else {
            // Another request has held the file for a long time (a slow body): this chunk is
            // refused as out of order, with the offset the session has now.
            return Err(out_of_order(&self.upload_status(repo, id).await?));
        };
        let up = self.upload_status(repo, id).await?;
        if range.is_some_and(|r| r.start != up.offset) || !self.blobs.appends_in_place(&up.parts) {
            return Err(out_of_order(&up));
        }
        let open = self.open_sealing(&up).await?;
        let mut inbound = inbound_for(&up, open.as_ref())?;
        let stored = match &open {
            Some(open) => sealed_segments(&up, open)? * SEALED_SEGMENT,
            None => up.offset,
        };
        file.cut_to(stored).await?;
        let appended = file.append(stored, body, &mut inbound).await?;
        if let Some(r) = range
            && appended.len != r.len()
        {
            file.cut_to(stored).await?;
            return Err(range_mismatch(r, appended.len));
        }
        if appended.len == 0 {
            return Ok(up);
        }
        let mut next = up.clone();
        next.offset += appended.len;
        if appended.written > 0 {
            next.parts = vec![layout::UPLOAD_DATA.to_owned()];
        }
        next.updated_at = unix_now();
        advance_state(&mut next, &up, open.as_ref(), &inbound)?;
        if !self.meta.advance_upload(&next, up.offset, up.parts.len()).await? {
            // Under the lock only a claim (commit, cancel, purge) moves the session: our
            // bytes are not part of the upload.
            file.cut_to(stored).await?;
            return Err(out_of_order(&self.upload_status(repo, id).await?));
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
        origin: &Origin,
    ) -> ApiResult<u64> {
        let up = self.append_chunk(repo, id, range, body).await?;
        // Held from before the session is claimed through the commit (which may find the
        // content stored: dedupe) and the link; a writer that waited too long for the
        // collector leaves the session as it was, to be finished again.
        self.with_hold(digest, async {
            // Claim the session: of two racing finishers only one proceeds.
            if !self.meta.delete_upload(id).await? {
                return Err(ApiError::BlobUploadUnknown);
            }
            // The size is known now: a push past a quota is refused before its bytes are committed.
            let covering = self.quotas_for(&up.repo).await;
            let result = match &covering {
                Ok(covering) => match self.check_blob_quota(covering, &up.repo, digest, up.offset).await {
                    Ok(()) => self.verify_and_commit(&up, digest, origin).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e.clone()),
            };
            if let (Ok(_), Ok(covering)) = (&result, &covering) {
                self.note_quota_use(covering, &up.repo, origin).await;
            }
            if result.is_err() {
                // The session is gone; leave nothing of it behind.
                if let Err(e) = self.blobs.discard_upload(id).await {
                    tracing::warn!(upload.id = %id, error = %e, "could not remove a failed upload's parts");
                }
            }
            result
        })
        .await
    }

    /// An encrypted session's state, opened with its KEK; `None` for a plaintext session.
    async fn open_sealing(&self, up: &UploadRecord) -> ApiResult<Option<OpenUpload>> {
        let Some(sealing) = &up.sealing else { return Ok(None) };
        let kek = self.crypt.kek(self.meta.as_ref(), &sealing.kek).await?;
        Ok(Some(sealing.open(&kek, &up.id, up.offset)?))
    }

    async fn verify_and_commit(&self, up: &UploadRecord, digest: &Digest, origin: &Origin) -> ApiResult<u64> {
        let Some(open) = self.open_sealing(up).await? else {
            let actual = match DigestHasher::restore_state(&up.hash_state) {
                Ok(h) if h.algorithm() == digest.algorithm() => h.finish(),
                _ => self.blobs.hash_parts(&up.id, &up.parts, up.offset, digest.algorithm()).await?,
            };
            check_digest(&actual, digest)?;
            self.ensure_repository(&up.repo, None, origin).await?;
            self.blobs.commit_upload(&up.id, &up.parts, up.offset, Target::Plain(digest.clone())).await?;
            self.meta.link_blob(&up.repo, digest, up.offset, true, None, origin).await?;
            self.events.wake();
            tracing::info!(repo.name = %up.repo, blob.digest = %digest, blob.size = up.offset, "blob committed");
            return Ok(up.offset);
        };
        if open.hasher.algorithm() != digest.algorithm() {
            return Err(ApiError::DigestInvalid(format!(
                "this upload was hashed with {}; an encrypted upload cannot be verified with {}",
                open.hasher.algorithm(),
                digest.algorithm()
            )));
        }
        check_digest(&open.hasher.clone().finish(), digest)?;
        let key_name = up.sealing.as_ref().map(|s| s.key_name.clone()).unwrap_or_default();
        self.ensure_repository(&up.repo, Some(&key_name), origin).await?;
        if self.meta.blob_copy(digest, &key_name).await?.is_some() {
            // Already sealed for this key: share it.
            self.blobs.discard_upload(&up.id).await?;
        } else {
            let object = layout::object_id();
            let sealer = Sealer::new(open.dek.clone(), sealed_segments(up, &open)?, &open.tail)?;
            let (trailer, last) = sealer.finish(digest)?;
            let mut runs = open.runs.clone();
            runs.push(last);
            let path = layout::sealed_blob(digest, &object);
            let stored = sealed_segments(up, &open)? * SEALED_SEGMENT;
            self.blobs.commit_upload(&up.id, &up.parts, stored, Target::Sealed { path, trailer }).await?;
            self.record_copy(digest, &key_name, object, up.offset, &open.dek, runs).await?;
        }
        self.meta.link_blob(&up.repo, digest, up.offset, false, None, origin).await?;
        self.events.wake();
        tracing::info!(repo.name = %up.repo, blob.digest = %digest, blob.size = up.offset, key.name = %key_name,
            "blob committed, encrypted");
        Ok(up.offset)
    }

    /// Records a sealed copy just written, its data key wrapped by the name's active KEK.
    /// When another copy for that key won a race, ours is deleted.
    pub(crate) async fn record_copy(
        &self,
        digest: &Digest,
        key_name: &str,
        object: String,
        size: u64,
        dek: &Dek,
        runs: Vec<Run>,
    ) -> ApiResult<()> {
        let kek = self.crypt.active(self.meta.as_ref(), key_name).await?;
        let wrapped = kek.wrap(dek, &blob_wrap_context(digest, key_name))?;
        let copy = SealedBlob { key_name: key_name.into(), object, size, kek: kek.id().into(), wrapped, runs };
        if !self.meta.add_blob_copy(digest, &copy).await? {
            self.blobs.delete_object(&layout::sealed_blob(digest, &copy.object)).await?;
        }
        Ok(())
    }

    /// A whole blob in one request (`POST ?digest=`): staged, verified and committed with no
    /// session record (a request that dies midway leaves a folder the purge removes). With
    /// its `declared` length (`Content-Length`) a push past a quota is refused before a byte
    /// is stored; without, once the body is in, before it is linked (the garbage collector
    /// reclaims what was stored).
    pub async fn monolithic_upload(
        &self,
        repo: &RepoName,
        digest: &Digest,
        declared: Option<u64>,
        body: ByteStream,
        origin: &Origin,
    ) -> ApiResult<u64> {
        let covering = self.quotas_for(repo).await?;
        if let Some(len) = declared {
            self.check_blob_quota(&covering, repo, digest, len).await?;
        }
        // Held through the write (which may find the content stored: dedupe) and the link.
        self.with_hold(digest, async {
            let key = self.upload_key(repo).await?;
            let len = self.write_blob(digest, body, key.as_deref()).await?;
            if declared != Some(len) {
                self.check_blob_quota(&covering, repo, digest, len).await?;
            }
            self.ensure_repository(repo, key.as_deref(), origin).await?;
            self.meta.link_blob(repo, digest, len, key.is_none(), None, origin).await?;
            self.events.wake();
            tracing::info!(repo.name = %repo, blob.digest = %digest, blob.size = len, "blob committed");
            self.note_quota_use(&covering, repo, origin).await;
            Ok(len)
        })
        .await
    }

    /// Stores `body` as blob `digest`, verified: plaintext, or sealed for key `key` (unless
    /// a copy for that key exists). Returns its length.
    pub(crate) async fn write_blob(&self, digest: &Digest, body: ByteStream, key: Option<&str>) -> ApiResult<u64> {
        let id: UploadId =
            uuid::Uuid::new_v4().to_string().parse().map_err(|e| ApiError::Internal(format!("upload id: {e}")))?;
        let Some(key) = key else {
            return match self.blobs.write_verified(&id, digest, body).await? {
                Written::Stored(len) => Ok(len),
                Written::Mismatch(actual) => check_digest(&actual, digest).map(|()| 0),
            };
        };
        let dek = Dek::generate()?;
        let object = layout::object_id();
        let sealing = (Sealer::new(dek.clone(), 0, &[])?, layout::sealed_blob(digest, &object));
        match self.blobs.write_verified_to(&id, digest, body, Some(sealing)).await? {
            (Written::Stored(len), runs) => {
                self.record_copy(digest, key, object, len, &dek, runs).await?;
                Ok(len)
            }
            (Written::Mismatch(actual), _) => check_digest(&actual, digest).map(|()| 0),
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

/// The chunk's body did not bring the bytes its `Content-Range` announced.
fn range_mismatch(r: ChunkRange, got: u64) -> ApiError {
    ApiError::SizeInvalid(format!(
        "Content-Range {}-{} announces {} bytes, the body had {got}",
        r.start,
        r.end,
        r.len()
    ))
}

fn check_digest(actual: &Digest, expected: &Digest) -> ApiResult<()> {
    if actual == expected {
        Ok(())
    } else {
        Err(ApiError::DigestInvalid(format!("the uploaded content has digest {actual}, not {expected}")))
    }
}

/// What passes a session's next chunk on to its parts: its hash state restored, and for an
/// encrypted session a sealer continuing after its sealed segments, with its tail.
fn inbound_for(up: &UploadRecord, open: Option<&OpenUpload>) -> ApiResult<Inbound> {
    Ok(match open {
        Some(open) => Inbound {
            hasher: open.hasher.clone(),
            sealer: Some(Sealer::new(open.dek.clone(), sealed_segments(up, open)?, &open.tail)?),
        },
        None => Inbound {
            hasher: DigestHasher::restore_state(&up.hash_state)
                .map_err(|e| ApiError::Internal(format!("upload {}: {e}", up.id)))?,
            sealer: None,
        },
    })
}

/// Records in `next` the hash state (and for an encrypted session, the runs and tail) that
/// `inbound` reached from session `up`.
fn advance_state(
    next: &mut UploadRecord,
    up: &UploadRecord,
    open: Option<&OpenUpload>,
    inbound: &Inbound,
) -> ApiResult<()> {
    match (open, &up.sealing, &inbound.sealer) {
        (Some(open), Some(sealing), Some(sealer)) => {
            let mut runs = open.runs.clone();
            runs.extend(sealer.run());
            next.sealing = Some(sealing.advanced(open, &up.id, next.offset, &inbound.hasher, &runs, sealer.tail())?);
        }
        _ => next.hash_state = inbound.hasher.save_state(),
    }
    Ok(())
}

/// How many segments of an encrypted upload are sealed in its parts: all bytes but the tail.
fn sealed_segments(up: &UploadRecord, open: &OpenUpload) -> ApiResult<u64> {
    let sealed = up.offset.checked_sub(open.tail.len() as u64).filter(|s| s % SEGMENT == 0);
    sealed
        .map(|s| s / SEGMENT)
        .ok_or_else(|| ApiError::Internal(format!("upload {}: inconsistent encryption state", up.id)))
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
        // A length that does not fit in 64 bits would wrap to 0 and pass for an empty chunk.
        assert_eq!(ChunkRange::parse("0-18446744073709551615"), None);
        assert_eq!(ChunkRange::parse("1-18446744073709551615").map(ChunkRange::len), Some(u64::MAX));
        assert_eq!(ChunkRange::parse("0-18446744073709551616"), None);
    }
}
