//! Uploads in parts on the local disk, appended in place.
//!
//! A session on the local disk keeps one data file ([`layout::upload_data`]). Each chunk is
//! written at the length the session vouches for while it is hashed (and sealed), and the
//! session then advances with its compare-and-swap; the commit cuts the file to that length,
//! appends a sealed blob's final segment, syncs it once and renames it to its address. No
//! byte is copied at commit, and the parts are not synced one by one (the digest check, and
//! for sealed uploads AES-GCM, catch damage; the one sync makes the blob durable before a
//! 201).
//!
//! The session, not the file, says how much of the file is the upload: plaintext, its
//! offset; sealed, its sealed segments ([`crate::crypt::format::SEALED_SEGMENT`] each; the
//! held-back tail is in the session). The file may be longer: a writer killed between its
//! write and its compare-and-swap, or one whose body failed, left bytes no session recorded.
//! Every writer therefore cuts the file back to the vouched-for length before it appends,
//! and the commit does too.
//!
//! Writers exclude one another with an exclusive `flock(2)` on the data file, taken before
//! the session is read and held until after its compare-and-swap, so two chunks at the same
//! offset never interleave their bytes: the second writer waits for the lock (polling, so
//! no blocking-pool thread is held, for at most a minute), then reads the session the first
//! moved on and is answered 416 with its new offset, as a loser of the compare-and-swap
//! would be. The commit waits for
//! the lock: the session is claimed by then, so a writer still holding it fails its
//! compare-and-swap and cuts its bytes back, and a writer that gets the lock later finds no
//! session. `flock` holds between processes on a local filesystem too.
//!
//! Sessions an older Berth started (one file per chunk, listed in `parts`) keep that shape
//! to the end: [`BlobStore::stage_part`] and the concatenation at commit.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use berth_oci::{Algorithm, Digest, DigestHasher, UploadId};
use bytes::Bytes;
use futures::StreamExt;
use object_store::ObjectStoreExt;

use super::{BlobStore, ByteStream, Inbound, Target};
use crate::error::{Error, Result};
use crate::layout;

/// How long a writer waits for another holding an upload's data file before it gives up.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
/// The first and the longest pause between attempts to take the lock.
const LOCK_POLL_MIN: std::time::Duration = std::time::Duration::from_millis(2);
const LOCK_POLL_MAX: std::time::Duration = std::time::Duration::from_millis(100);

/// An upload's data file, opened and locked against other writers until dropped.
#[derive(Debug)]
pub struct UploadFile {
    file: Arc<File>,
    /// Bytes per write: the bound on what one append holds in memory (twice this).
    piece: usize,
}

/// What [`UploadFile::append`] took in and wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Bytes the body brought (plaintext).
    pub len: u64,
    /// Bytes written to the file (sealed segments when the upload is encrypted).
    pub written: u64,
}

/// Cuts `file` back to `len` bytes; an error when it holds fewer.
fn cut_back(file: &File, len: u64) -> std::io::Result<()> {
    let has = file.metadata()?.len();
    if has < len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("an upload's data file holds {has} bytes, its session recorded {len}"),
        ));
    }
    if has > len { file.set_len(len) } else { Ok(()) }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Task(e.to_string()))?.map_err(Error::Io)
}

impl BlobStore {
    /// Whether chunks of a session whose staged parts are `parts` are appended in place to
    /// its data file: on the local disk, for sessions with no part yet or with the data file.
    /// Elsewhere (memory, S3) and for sessions an older Berth started with one file per
    /// chunk, each chunk is a part of its own ([`BlobStore::stage_part`]).
    pub fn appends_in_place(&self, parts: &[String]) -> bool {
        self.local_root.is_some()
            && self.s3.is_none()
            && match parts {
                [] => true,
                [one] => one == layout::UPLOAD_DATA,
                _ => false,
            }
    }

    /// The data file of upload `id` on the local disk, created if missing, locked for the
    /// caller; `None` when another writer holds it (the caller answers as to a lost race).
    pub async fn try_lock_upload(&self, id: &UploadId) -> Result<Option<UploadFile>> {
        self.open_upload_file(id).await
    }

    /// [`BlobStore::try_lock_upload`], waiting for a writer holding the lock to finish: a
    /// writer that then reads the session sees where the other left it. The wait polls (no
    /// blocking-pool thread is held, so writers queued on one upload cannot starve the pool
    /// every file operation needs) and gives up after [`LOCK_WAIT`]: `None`.
    pub async fn lock_upload(&self, id: &UploadId) -> Result<Option<UploadFile>> {
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        let mut pause = LOCK_POLL_MIN;
        loop {
            if let Some(file) = self.open_upload_file(id).await? {
                return Ok(Some(file));
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Ok(None);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LOCK_POLL_MAX);
        }
    }

    async fn open_upload_file(&self, id: &UploadId) -> Result<Option<UploadFile>> {
        let path = self.upload_data_file(id)?;
        let piece = self.write_chunk;
        blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
            match file.try_lock() {
                Ok(()) => Ok(Some(UploadFile { file: Arc::new(file), piece })),
                Err(TryLockError::WouldBlock) => Ok(None),
                Err(TryLockError::Error(e)) => Err(e),
            }
        })
        .await
    }

    fn upload_data_file(&self, id: &UploadId) -> Result<PathBuf> {
        match &self.local_root {
            Some(root) => Ok(root.join(layout::upload_data(id).as_ref())),
            None => Err(Error::Settings("uploads append in place only on the local disk".into())),
        }
    }

    /// Hashes the first `len` bytes of the upload's parts afresh with `algorithm`: used
    /// when the running state cannot serve (the client asked for another algorithm at the
    /// end, or the saved state is unreadable). Bytes past `len` (a data file may hold some
    /// no session recorded) are not the upload's.
    pub async fn hash_parts(&self, id: &UploadId, parts: &[String], len: u64, algorithm: Algorithm) -> Result<Digest> {
        let mut hasher = DigestHasher::new(algorithm);
        let mut left = len;
        for part in parts {
            let mut s = self.staging.get(&layout::upload_part(id, part)).await?.into_stream();
            while let Some(chunk) = s.next().await {
                let chunk = chunk?;
                let take = (chunk.len() as u64).min(left) as usize;
                hasher.update(&chunk[..take]);
                left -= take as u64;
            }
        }
        if left > 0 {
            return Err(Error::Corrupt(format!("upload {id}: its parts hold {} bytes, not {len}", len - left)));
        }
        Ok(hasher.finish())
    }

    /// Commits an upload's staged bytes to `target`; the caller verified their digest.
    /// `stored` is how many bytes of its parts the session vouches for (see
    /// [`BlobStore::commit`] for the rest). On the local disk, a session's data file is cut
    /// to `stored`, the final segment of a sealed target appended, synced once and renamed
    /// to `target` (a plaintext blob only if absent); elsewhere, and for sessions of one file
    /// per chunk, the parts are joined as [`BlobStore::commit`] does.
    pub async fn commit_upload(&self, id: &UploadId, parts: &[String], stored: u64, target: Target) -> Result<()> {
        if !(self.local_root.is_some() && self.s3.is_none() && parts.len() == 1 && parts[0] == layout::UPLOAD_DATA) {
            return self.commit(id, parts, target).await;
        }
        let (target, trailer) = match target {
            Target::Plain(digest) => (layout::blob(&digest), Bytes::new()),
            Target::Sealed { path, trailer } => (path, trailer),
        };
        // Waits for a writer still appending: the session is claimed, so its
        // compare-and-swap fails and it cuts its bytes back; later ones find no session.
        let Some(locked) = self.lock_upload(id).await? else {
            return Err(Error::Task(format!(
                "upload {id}: another request held its data file for over {} s",
                LOCK_WAIT.as_secs()
            )));
        };
        let file = locked.file.clone();
        let fsync = self.fsync;
        blocking(move || {
            cut_back(&file, stored)?;
            file.write_all_at(&trailer, stored)?;
            if fsync {
                file.sync_all()?;
            }
            Ok(())
        })
        .await?;
        match self.store.rename_if_not_exists(&layout::upload_data(id), &target).await {
            Ok(()) | Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.discard_upload(id).await
    }
}

impl UploadFile {
    /// Cuts the file back to `len` bytes, what the session vouches for: bytes past it were
    /// written by a writer that never recorded them.
    /// A file shorter than `len` lost bytes the session recorded (its hash state covers
    /// them): it is an error, never extended, so no blob is committed with bytes it did not
    /// receive.
    pub async fn cut_to(&self, len: u64) -> Result<()> {
        let file = self.file.clone();
        blocking(move || cut_back(&file, len)).await
    }

    /// Writes `body` at `at` (the vouched-for length, the file cut back to it), passing every
    /// byte through `inbound`. Pieces of the file's write size go to the blocking pool, one
    /// written while the next comes in. On error the file is cut back to `at`.
    pub async fn append(&self, at: u64, mut body: ByteStream, inbound: &mut Inbound) -> Result<Appended> {
        let mut len = 0u64;
        let mut pos = at;
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batched = 0usize;
        let mut in_flight: Option<tokio::task::JoinHandle<std::io::Result<()>>> = None;
        let outcome: Result<()> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(Error::Body)?;
                len += chunk.len() as u64;
                let out = inbound.take(chunk)?;
                if out.is_empty() {
                    continue;
                }
                batched += out.len();
                batch.push(out);
                if batched >= self.piece {
                    if let Some(write) = in_flight.take() {
                        write.await.map_err(|e| Error::Task(e.to_string()))?.map_err(Error::Io)?;
                    }
                    in_flight = Some(self.write(pos, std::mem::take(&mut batch)));
                    pos += batched as u64;
                    batched = 0;
                }
            }
            if let Some(write) = in_flight.take() {
                write.await.map_err(|e| Error::Task(e.to_string()))?.map_err(Error::Io)?;
            }
            if batched > 0 {
                self.write(pos, std::mem::take(&mut batch))
                    .await
                    .map_err(|e| Error::Task(e.to_string()))?
                    .map_err(Error::Io)?;
                pos += batched as u64;
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => Ok(Appended { len, written: pos - at }),
            Err(e) => {
                // A write still running would land after the cut.
                if let Some(write) = in_flight.take() {
                    let _ = write.await;
                }
                if let Err(cut) = self.cut_to(at).await {
                    tracing::warn!(error = %cut, "could not cut a failed chunk off an upload's data file");
                }
                Err(e)
            }
        }
    }

    fn write(&self, at: u64, pieces: Vec<Bytes>) -> tokio::task::JoinHandle<std::io::Result<()>> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            let mut at = at;
            for piece in pieces {
                file.write_all_at(&piece, at)?;
                at += piece.len() as u64;
            }
            Ok(())
        })
    }
}
