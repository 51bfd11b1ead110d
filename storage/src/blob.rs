//! [`BlobStore`]: content-addressed blobs and staged upload parts over an object store.

use std::ops::Range;
use std::sync::Arc;

use berth_oci::{Digest, DigestHasher, UploadId};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::memory::InMemory;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart,
};

use crate::crypt::{Dek, SealedBlob, Sealer, format, open_file, open_stream};
use crate::error::{Error, Result};
use crate::layout;
use crate::s3::writer::PartWriter;
use crate::s3::{MIN_PART, S3, S3Settings, concat::concat, raw::Completed};
use crate::verify::verify_stream;

#[path = "local_append.rs"]
mod local_append;
pub use local_append::{Appended, UploadFile};

/// A stream of body bytes coming in (a request body) or going out (a blob read).
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Size of the pieces written to a remote object store while a part streams in: the bound
/// on memory held per upload (times [`WRITE_CONCURRENCY`] + 1).
const WRITE_CHUNK: usize = 8 * 1024 * 1024;
/// The same for the local disk, where small pieces cost nothing and keep many concurrent
/// uploads within a few MiB each.
const LOCAL_WRITE_CHUNK: usize = 1024 * 1024;
/// Size of the pieces a local blob is read in.
const READ_CHUNK: u64 = 1024 * 1024;
/// Pieces of one local read in flight: the next is read while the last is being sent.
const READ_AHEAD: usize = 2;
/// Pieces of one part in flight to the object store at once.
const WRITE_CONCURRENCY: usize = 2;

/// Blobs and upload parts, over any [`ObjectStore`].
#[derive(Clone, Debug)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// Where upload parts are staged. On the local disk: the same folder without fsync.
    /// Parts are temporary, and the digest check at commit catches any damage to them, so
    /// only the committed blob needs to be durable.
    staging: Arc<dyn ObjectStore>,
    /// The root folder when the store is the local disk: object stores have no folders, but
    /// a disk does, and an upload's emptied folder must not be left behind.
    pub(crate) local_root: Option<std::path::PathBuf>,
    /// fsync local files before a write is acknowledged.
    fsync: bool,
    /// Piece size of streamed writes ([`WRITE_CHUNK`] or [`LOCAL_WRITE_CHUNK`]).
    write_chunk: usize,
    /// Set when the store is S3: parts are written, joined and committed with S3's own
    /// multipart requests (see [`crate::s3`]).
    s3: Option<S3>,
}

/// How [`BlobStore::write_verified`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// The blob is stored (now or already); this many bytes came in.
    Stored(u64),
    /// The body's digest was this one, not the expected one; nothing was kept.
    Mismatch(Digest),
}

/// What happens to body bytes on their way in: always hashed (the plaintext), and sealed
/// into segments when the blob is encrypted.
#[derive(Debug)]
pub struct Inbound {
    pub hasher: DigestHasher,
    pub sealer: Option<Sealer>,
}

impl Inbound {
    /// Bytes stored as they come, hashed with `algorithm`.
    pub fn plain(algorithm: berth_oci::Algorithm) -> Inbound {
        Inbound { hasher: DigestHasher::new(algorithm), sealer: None }
    }

    /// Hashes `chunk`; returns the bytes to store (the chunk, or the segments it completed).
    fn take(&mut self, chunk: Bytes) -> Result<Bytes> {
        self.hasher.update(&chunk);
        match &mut self.sealer {
            None => Ok(chunk),
            Some(s) => s.push(&chunk),
        }
    }
}

/// Where a verified blob is committed.
#[derive(Debug, Clone)]
pub enum Target {
    /// Plaintext at its content address, create-if-absent (identical content is shared).
    Plain(Digest),
    /// An encrypted copy at a fresh path ([`layout::sealed_blob`]); `trailer` is its final
    /// segment, appended after the staged parts.
    Sealed { path: object_store::path::Path, trailer: Bytes },
}

/// A part written by [`BlobStore::stage_part`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedPart {
    /// The part's name under the upload's folder; `None` when nothing was written (an
    /// empty body, or one whose bytes are all held back to be sealed later).
    pub name: Option<String>,
    /// Bytes the body brought (plaintext).
    pub len: u64,
    /// The upload's last part, when the new part starts with a copy of it (on S3, a part
    /// under 5 MiB is joined with the next one, since only the last part of a multipart
    /// copy may be that small). The new part takes its place in the list.
    pub replaces: Option<String>,
}

/// Streams `range` of a local file: positioned reads of [`READ_CHUNK`] straight into fresh
/// buffers on the blocking pool, [`READ_AHEAD`] at a time. (object_store's own file stream
/// reads 8 KiB per blocking-pool hop; `tokio::fs::File` copies through a second buffer.)
fn read_file_range(file: std::fs::File, range: Range<u64>) -> ByteStream {
    use std::os::unix::fs::FileExt;
    let file = Arc::new(file);
    let pieces =
        (range.start..range.end).step_by(READ_CHUNK as usize).map(move |at| (at, (range.end - at).min(READ_CHUNK)));
    futures::stream::iter(pieces)
        .map(move |(at, len)| {
            let file = file.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; len as usize];
                    file.read_exact_at(&mut buf, at)?;
                    Ok(Bytes::from(buf))
                })
                .await
                .map_err(std::io::Error::other)?
            }
        })
        .buffered(READ_AHEAD)
        .boxed()
}

impl BlobStore {
    pub fn new(store: Arc<dyn ObjectStore>) -> BlobStore {
        BlobStore { staging: store.clone(), store, local_root: None, fsync: false, write_chunk: WRITE_CHUNK, s3: None }
    }

    /// Blobs in an S3 bucket (or an S3-compatible store).
    pub fn s3(settings: &S3Settings) -> Result<BlobStore> {
        let s3 = S3::open(settings)?;
        Ok(BlobStore { s3: Some(s3.clone()), ..BlobStore::new(s3.store()) })
    }

    /// Blobs in a directory on the local disk, created if missing. `fsync` makes every
    /// committed blob durable before it is acknowledged.
    pub fn local(dir: &std::path::Path, fsync: bool) -> Result<BlobStore> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Corrupt(format!("cannot create {}: {e}", dir.display())))?;
        // No automatic cleanup: it removes emptied parent folders (`uploads/` itself) while
        // other requests create theirs inside; each upload removes its own folder instead.
        let local = || object_store::local::LocalFileSystem::new_with_prefix(dir);
        Ok(BlobStore {
            store: Arc::new(local()?.with_fsync(fsync)),
            staging: Arc::new(local()?),
            local_root: Some(dir.to_owned()),
            fsync,
            write_chunk: LOCAL_WRITE_CHUNK,
            s3: None,
        })
    }

    /// Blobs in memory, for tests.
    pub fn in_memory() -> BlobStore {
        BlobStore { write_chunk: LOCAL_WRITE_CHUNK, ..BlobStore::new(Arc::new(InMemory::new())) }
    }

    /// Where `object` is, for an operator: the file on the local disk, else the object's key
    /// (under the bucket's prefix).
    pub fn location(&self, object: &object_store::path::Path) -> String {
        match &self.local_root {
            Some(root) => root.join(object.as_ref()).display().to_string(),
            None => object.to_string(),
        }
    }

    /// Checks that the object store answers (a missing probe object is an answer).
    pub async fn check(&self) -> Result<()> {
        match self.store.head(&layout::probe()).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The size of a committed blob, or `None` when its content is not stored.
    pub async fn size(&self, digest: &Digest) -> Result<Option<u64>> {
        match self.store.head(&layout::blob(digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Streams a committed blob, or the non-empty `range` of it. A whole read (`range` is
    /// `None`) is checked against `digest` as it streams ([`verify_stream`]): its last piece
    /// is held back until the digest matches, and replaced by an error when it does not. A
    /// range is served as stored: checking it would cost reading the whole blob (the scrub
    /// finds damage there).
    pub async fn read(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<ByteStream> {
        let whole = range.is_none();
        let (_, stream) = self.read_object(digest, range).await?;
        Ok(if whole { verify_stream(stream, digest.clone()) } else { stream })
    }

    /// The stored object of a plaintext blob, whole and unchecked, with its size: for the
    /// scrub, which hashes it itself to say what is wrong.
    pub async fn read_stored(&self, digest: &Digest) -> Result<(u64, ByteStream)> {
        self.read_object(digest, None).await
    }

    /// The stored bytes of a plaintext blob's object, or of `range` of it, unchecked, and
    /// the object's size.
    async fn read_object(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<(u64, ByteStream)> {
        let options = GetOptions { range: range.map(GetRange::Bounded), ..Default::default() };
        let result = match self.store.get_opts(&layout::blob(digest), options).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Err(Error::NotFound),
            Err(e) => return Err(e.into()),
        };
        let size = result.meta.size;
        let stream = match result.payload {
            // object_store reads local files in 8 KiB pieces, one blocking-pool hop each;
            // larger reads keep a pull near disk and loopback speed.
            object_store::GetResultPayload::File(file, _) => read_file_range(file, result.range),
            object_store::GetResultPayload::Stream(s) => s.map_err(std::io::Error::other).boxed(),
        };
        Ok((size, stream))
    }

    /// Streams the plaintext of an encrypted copy of `digest`, or the non-empty `range` of
    /// it, opening only the segments the range touches.
    pub async fn read_sealed(
        &self,
        digest: &Digest,
        copy: &SealedBlob,
        dek: Dek,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream> {
        let range = range.unwrap_or(0..copy.size);
        let (_, bytes) = format::cipher_span(&range, copy.size);
        let path = layout::sealed_blob(digest, &copy.object);
        let options = GetOptions { range: Some(GetRange::Bounded(bytes)), ..Default::default() };
        let result = match self.store.get_opts(&path, options).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Err(Error::NotFound),
            Err(e) => return Err(e.into()),
        };
        let (runs, size) = (copy.runs.clone(), copy.size);
        Ok(match result.payload {
            // A local file: large positioned reads opened in place, ahead of the socket.
            object_store::GetResultPayload::File(file, _) => {
                open_file(file, result.meta.size, dek, runs, digest.clone(), size, range)
            }
            object_store::GetResultPayload::Stream(s) => {
                open_stream(s.map_err(std::io::Error::other).boxed(), dek, runs, digest.clone(), size, range)
            }
        })
    }

    /// Removes an encrypted copy's object (a redundant one, or one re-encrypted elsewhere).
    pub async fn delete_object(&self, path: &object_store::path::Path) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes `paths`, in batches: S3 `DeleteObjects` (1,000 keys per request), parallel
    /// unlinks on the local disk. Objects already gone count as deleted. On the local disk
    /// the emptied folder of a sealed blob's copies goes too. Returns how many it deleted.
    pub async fn delete_objects(&self, paths: Vec<object_store::path::Path>) -> Result<u64> {
        let folders: Vec<std::path::PathBuf> = match &self.local_root {
            Some(root) => paths
                .iter()
                .filter(|p| p.as_ref().starts_with("sealed/"))
                .filter_map(|p| root.join(p.as_ref()).parent().map(std::path::Path::to_path_buf))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            None => Vec::new(),
        };
        let mut deleted = 0;
        let stream = futures::stream::iter(paths.into_iter().map(Ok)).boxed();
        let mut results = self.store.delete_stream(stream);
        while let Some(r) = results.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                Err(e) => return Err(e.into()),
            }
        }
        for folder in folders {
            // Only when empty: another copy of the blob may live there.
            let _ = tokio::fs::remove_dir(folder).await;
        }
        Ok(deleted)
    }

    /// Every object under `prefix` (`blobs` or `sealed`), with its size and the time (unix
    /// seconds) it was last modified: the collector's view of what is stored.
    pub fn list_objects(&self, prefix: &str) -> BoxStream<'static, Result<(object_store::path::Path, u64, i64)>> {
        self.store
            .list(Some(&object_store::path::Path::from(prefix)))
            .map(|m| m.map(|m| (m.location, m.size, m.last_modified.timestamp())).map_err(Error::from))
            .boxed()
    }

    /// Writes `body` as the next part of upload `id`, whose parts so far are `parts`, passing
    /// every byte through `inbound` on the way. Nothing is created when nothing is to be
    /// stored. On error the partial part is removed.
    pub async fn stage_part(
        &self,
        id: &UploadId,
        parts: &[String],
        body: ByteStream,
        inbound: &mut Inbound,
    ) -> Result<StagedPart> {
        if let Some(s3) = &self.s3 {
            return self.stage_part_s3(s3, id, parts, body, inbound).await;
        }
        let mut body = body;
        let mut writer: Option<(String, WriteMultipart)> = None;
        let mut len = 0u64;
        let outcome: Result<()> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(Error::Body)?;
                len += chunk.len() as u64;
                let chunk = inbound.take(chunk)?;
                if chunk.is_empty() {
                    continue;
                }
                if writer.is_none() {
                    let name = layout::part_name(parts.len());
                    let upload = self.staging.put_multipart(&layout::upload_part(id, &name)).await?;
                    writer = Some((name, WriteMultipart::new_with_chunk_size(upload, self.write_chunk)));
                }
                if let Some((_, w)) = writer.as_mut() {
                    w.wait_for_capacity(WRITE_CONCURRENCY).await?;
                    w.put(chunk);
                }
            }
            Ok(())
        }
        .await;
        match (outcome, writer) {
            (Ok(()), None) => Ok(StagedPart { name: None, len, replaces: None }),
            (Ok(()), Some((name, w))) => {
                w.finish().await?;
                Ok(StagedPart { name: Some(name), len, replaces: None })
            }
            (Err(e), Some((_, w))) => {
                if let Err(abort) = w.abort().await {
                    tracing::warn!(upload.id = %id, error = %abort, "could not abort a failed part");
                }
                Err(e)
            }
            (Err(e), None) => Err(e),
        }
    }

    /// [`BlobStore::stage_part`] on S3: when the last part is under S3's smallest part, the
    /// new part begins with a copy of it and replaces it, so that every part but the last
    /// can be a range of the final multipart copy.
    async fn stage_part_s3(
        &self,
        s3: &S3,
        id: &UploadId,
        parts: &[String],
        mut body: ByteStream,
        inbound: &mut Inbound,
    ) -> Result<StagedPart> {
        let mut writer: Option<(String, PartWriter)> = None;
        let mut replaces = None;
        let mut len = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(Error::Body)?;
            len += chunk.len() as u64;
            let chunk = inbound.take(chunk)?;
            if chunk.is_empty() {
                continue;
            }
            if writer.is_none() {
                let mut index = parts.len();
                let mut head = None;
                if let Some(last) = parts.last() {
                    let path = layout::upload_part(id, last);
                    if self.staging.head(&path).await?.size < MIN_PART {
                        head = Some(self.staging.get(&path).await?.bytes().await?);
                        replaces = Some(last.clone());
                        index -= 1;
                    }
                }
                let name = layout::part_name(index);
                let mut w = PartWriter::new(s3, layout::upload_part(id, &name));
                if let Some(head) = head {
                    w.write(head).await?;
                }
                writer = Some((name, w));
            }
            if let Some((_, w)) = writer.as_mut() {
                w.write(chunk).await?;
            }
        }
        // An error above drops the writer, which aborts its multipart upload.
        match writer {
            None => Ok(StagedPart { name: None, len, replaces: None }),
            Some((name, w)) => {
                w.finish(false).await?;
                Ok(StagedPart { name: Some(name), len, replaces })
            }
        }
    }

    /// Streams `body` into blob `digest` in one go as plaintext, verifying it: see
    /// [`BlobStore::write_verified_to`].
    pub async fn write_verified(&self, id: &UploadId, digest: &Digest, body: ByteStream) -> Result<Written> {
        Ok(self.write_verified_to(id, digest, body, None).await?.0)
    }

    /// Streams `body` into blob `digest` in one go, verifying it: the content is stored only
    /// if its digest matches. With `sealing` (a sealer and the new copy's path) it is sealed
    /// on the way, and the runs it was sealed in are returned. On S3 the body goes straight
    /// to its key as a multipart upload, completed only on a match; elsewhere it is staged
    /// under `id` and renamed.
    pub async fn write_verified_to(
        &self,
        id: &UploadId,
        digest: &Digest,
        mut body: ByteStream,
        sealing: Option<(Sealer, object_store::path::Path)>,
    ) -> Result<(Written, Vec<crate::crypt::Run>)> {
        let (sealer, path) = match sealing {
            Some((s, p)) => (Some(s), Some(p)),
            None => (None, None),
        };
        let mut inbound = Inbound { hasher: DigestHasher::new(digest.algorithm()), sealer };
        let Some(s3) = &self.s3 else {
            let outcome = match self.stage_part(id, &[], body, &mut inbound).await {
                Ok(staged) => {
                    let Inbound { hasher, sealer } = inbound;
                    match hasher.finish() {
                        actual if &actual == digest => {
                            let parts: Vec<String> = staged.name.into_iter().collect();
                            match finish_sealing(sealer, path, digest) {
                                Ok((target, runs)) => {
                                    self.commit(id, &parts, target).await.map(|()| (Written::Stored(staged.len), runs))
                                }
                                Err(e) => Err(e),
                            }
                        }
                        actual => Ok((Written::Mismatch(actual), Vec::new())),
                    }
                }
                Err(e) => Err(e),
            };
            if !matches!(outcome, Ok((Written::Stored(_), _)))
                && let Err(e) = self.discard_upload(id).await
            {
                tracing::warn!(upload.id = %id, error = %e, "could not remove a failed upload's parts");
            }
            return outcome;
        };
        let plain = path.is_none();
        let mut writer = PartWriter::new(s3, path.clone().unwrap_or_else(|| layout::blob(digest)));
        let mut len = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(Error::Body)?;
            len += chunk.len() as u64;
            let out = inbound.take(chunk)?;
            if !out.is_empty() {
                writer.write(out).await?;
            }
        }
        let Inbound { hasher, sealer } = inbound;
        match hasher.finish() {
            actual if &actual == digest => {
                let (target, runs) = finish_sealing(sealer, path, digest)?;
                if let Target::Sealed { trailer, .. } = target {
                    writer.write(trailer).await?;
                }
                writer.finish(plain).await?;
                Ok((Written::Stored(len), runs))
            }
            // Dropping the writer aborts its multipart upload.
            actual => Ok((Written::Mismatch(actual), Vec::new())),
        }
    }

    /// Makes the upload's parts, in order, the content of blob `digest` (plaintext): see
    /// [`BlobStore::commit`].
    pub async fn commit_verified(&self, id: &UploadId, parts: &[String], digest: &Digest) -> Result<()> {
        self.commit(id, parts, Target::Plain(digest.clone())).await
    }

    /// Makes the upload's parts, in order (then the trailer of a sealed target), the content
    /// of `target`. The caller must have verified the digest of exactly these bytes. The
    /// object appears atomically; a plaintext blob is created only if absent (when identical
    /// content is already stored, ours is dropped). The upload's staged files are removed.
    pub async fn commit(&self, id: &UploadId, parts: &[String], target: Target) -> Result<()> {
        let (target, trailer) = match target {
            Target::Plain(digest) => (layout::blob(&digest), Bytes::new()),
            Target::Sealed { path, trailer } => (path, trailer),
        };
        let mut parts = parts.to_vec();
        if !trailer.is_empty() && self.s3.is_some() {
            self.stage_trailer_s3(id, &mut parts, trailer.clone()).await?;
        }
        let source = match parts.as_slice() {
            [] => {
                let create = PutOptions { mode: PutMode::Create, ..Default::default() };
                return match self.store.put_opts(&target, PutPayload::from_bytes(trailer), create).await {
                    Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => self.discard_upload(id).await,
                    Err(e) => Err(e.into()),
                };
            }
            parts if self.s3.is_some() => {
                self.commit_s3(id, parts, &target).await?;
                return self.discard_upload(id).await;
            }
            [only] if self.local_root.is_some() => layout::upload_part(id, only),
            many => self.assemble(id, many, trailer.clone()).await?,
        };
        if let (Some(root), [_]) = (&self.local_root, parts.as_slice())
            && !trailer.is_empty()
        {
            // The one staged part is ours alone: the final segment is appended to it.
            let file = root.join(source.as_ref());
            let trailer = trailer.clone();
            tokio::task::spawn_blocking(move || {
                use std::io::Write;
                std::fs::OpenOptions::new().append(true).open(file)?.write_all(&trailer)
            })
            .await
            .map_err(|e| Error::Task(e.to_string()))?
            .map_err(Error::Io)?;
        }
        self.make_durable(&source).await?;
        match self.store.rename_if_not_exists(&source, &target).await {
            Ok(()) | Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.discard_upload(id).await
    }

    /// Adds a sealed blob's final segment to its parts on S3: joined into the last part when
    /// that is under S3's smallest part (only the last part of a multipart copy may be),
    /// else as a part of its own.
    async fn stage_trailer_s3(&self, id: &UploadId, parts: &mut Vec<String>, trailer: Bytes) -> Result<()> {
        let mut body = trailer;
        if let Some(last) = parts.last() {
            let path = layout::upload_part(id, last);
            if self.staging.head(&path).await?.size < MIN_PART {
                let mut joined = self.staging.get(&path).await?.bytes().await?.to_vec();
                joined.extend_from_slice(&body);
                body = Bytes::from(joined);
                parts.pop();
            }
        }
        let name = layout::part_name(parts.len());
        self.staging.put(&layout::upload_part(id, &name), PutPayload::from_bytes(body)).await?;
        parts.push(name);
        Ok(())
    }

    /// Joins an upload's parts into `target` on S3, server-side, create-if-absent.
    async fn commit_s3(&self, id: &UploadId, parts: &[String], target: &object_store::path::Path) -> Result<()> {
        let Some(s3) = &self.s3 else { return Err(Error::Settings("not an S3 store".into())) };
        let mut sizes = std::collections::HashMap::new();
        let mut listing = self.staging.list(Some(&layout::upload_dir(id)));
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            sizes.insert(meta.location, meta.size);
        }
        let sources = parts
            .iter()
            .map(|p| {
                let path = layout::upload_part(id, p);
                let size = sizes.get(&path).copied().ok_or_else(|| Error::Corrupt(format!("{path} is missing")))?;
                Ok((path, size))
            })
            .collect::<Result<Vec<_>>>()?;
        match concat(s3, &sources, target, true, &layout::upload_dir(id)).await? {
            Completed::Created | Completed::AlreadyExists => Ok(()),
        }
    }

    /// Aborts every multipart upload Berth started before `cutoff` (unix seconds) and never
    /// finished: what a crashed process leaves behind on S3, invisible to object listings.
    /// Returns how many. Other stores have no such uploads.
    pub async fn abort_stale_multipart(&self, cutoff: i64) -> Result<usize> {
        let Some(s3) = &self.s3 else { return Ok(0) };
        let mut aborted = 0;
        for folder in ["uploads", "blobs"] {
            for up in s3.raw.list_multipart(&object_store::path::Path::from(folder)).await? {
                if up.initiated < cutoff {
                    s3.raw.abort(&up.path, &up.upload_id).await?;
                    tracing::info!(key = %up.path, "stale multipart upload aborted");
                    aborted += 1;
                }
            }
        }
        Ok(aborted)
    }

    /// Flushes a staged local file to disk before it becomes a blob (the rename then makes
    /// its folder entry durable). Remote stores are durable on write.
    async fn make_durable(&self, staged: &object_store::path::Path) -> Result<()> {
        let (Some(root), true) = (&self.local_root, self.fsync) else { return Ok(()) };
        let file = root.join(staged.as_ref());
        tokio::task::spawn_blocking(move || std::fs::File::open(file)?.sync_all())
            .await
            .map_err(|e| Error::Task(e.to_string()))?
            .map_err(Error::Io)
    }

    /// Concatenates several parts into one object, streaming.
    async fn assemble(&self, id: &UploadId, parts: &[String], trailer: Bytes) -> Result<object_store::path::Path> {
        let path = layout::upload_assembled(id);
        if let Some(root) = &self.local_root {
            // On a local disk the kernel copies file to file (copy_file_range), no bytes
            // pass through this process.
            let files: Vec<_> = parts.iter().map(|p| root.join(layout::upload_part(id, p).as_ref())).collect();
            let target = root.join(path.as_ref());
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                use std::io::Write;
                let mut out = std::fs::File::create(&target)?;
                for f in &files {
                    std::io::copy(&mut std::fs::File::open(f)?, &mut out)?;
                }
                out.write_all(&trailer)
            })
            .await
            .map_err(|e| Error::Task(e.to_string()))?
            .map_err(Error::Io)?;
            return Ok(path);
        }
        let mut w = WriteMultipart::new_with_chunk_size(self.staging.put_multipart(&path).await?, self.write_chunk);
        let copied: Result<()> = async {
            for part in parts {
                let mut s = self.staging.get(&layout::upload_part(id, part)).await?.into_stream();
                while let Some(chunk) = s.next().await {
                    w.wait_for_capacity(WRITE_CONCURRENCY).await?;
                    w.put(chunk?);
                }
            }
            if !trailer.is_empty() {
                w.put(trailer);
            }
            Ok(())
        }
        .await;
        match copied {
            Ok(()) => {
                w.finish().await?;
                Ok(path)
            }
            Err(e) => {
                let _ = w.abort().await;
                Err(e)
            }
        }
    }

    /// Removes everything upload `id` staged. Missing files are fine.
    pub async fn discard_upload(&self, id: &UploadId) -> Result<()> {
        let prefix = layout::upload_dir(id);
        let paths = self.staging.list(Some(&prefix)).map_ok(|meta| meta.location).boxed();
        let mut deleted = self.staging.delete_stream(paths);
        while let Some(r) = deleted.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(root) = &self.local_root {
            match tokio::fs::remove_dir(root.join(prefix.as_ref())).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(upload.id = %id, error = %e, "could not remove an upload folder"),
            }
        }
        Ok(())
    }

    /// Every upload folder in the store, with the time (unix seconds) of its newest file: the
    /// purge uses it to find folders whose request died before it could clean up.
    pub async fn upload_folders(&self) -> Result<Vec<(UploadId, i64)>> {
        let mut newest: std::collections::BTreeMap<String, i64> = Default::default();
        let mut listing = self.staging.list(Some(&object_store::path::Path::from("uploads")));
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            let mut parts = meta.location.parts();
            let (Some(_), Some(id)) = (parts.next(), parts.next()) else { continue };
            let t = meta.last_modified.timestamp();
            let e = newest.entry(id.as_ref().to_owned()).or_insert(t);
            *e = (*e).max(t);
        }
        Ok(newest.into_iter().filter_map(|(id, t)| Some((id.parse().ok()?, t))).collect())
    }

    /// Removes a staged part that lost a race or belongs to a failed request.
    pub async fn discard_part(&self, id: &UploadId, name: &str) -> Result<()> {
        match self.staging.delete(&layout::upload_part(id, name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The commit target for a verified blob, and the runs of a sealed one.
fn finish_sealing(
    sealer: Option<Sealer>,
    path: Option<object_store::path::Path>,
    digest: &Digest,
) -> Result<(Target, Vec<crate::crypt::Run>)> {
    match (sealer, path) {
        (Some(sealer), Some(path)) => {
            let mut runs: Vec<_> = sealer.run().into_iter().collect();
            let (trailer, last) = sealer.finish(digest)?;
            runs.push(last);
            Ok((Target::Sealed { path, trailer }, runs))
        }
        _ => Ok((Target::Plain(digest.clone()), Vec::new())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::verify::{IntegrityFailure, drain};

    /// Whole reads of a local blob are checked; ranges are served as stored.
    #[tokio::test]
    async fn whole_reads_verify_and_ranges_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::local(dir.path(), false).unwrap();
        let content: Vec<u8> = (0..(2 * READ_CHUNK as usize + 1000)).map(|i| (i % 253) as u8).collect();
        let digest = Digest::sha256_of(&content);
        let id: UploadId = "verify-1".parse().unwrap();
        let body = futures::stream::iter(vec![Ok(Bytes::from(content.clone()))]).boxed();
        assert_eq!(store.write_verified(&id, &digest, body).await.unwrap(), Written::Stored(content.len() as u64));
        let (got, err) = drain(store.read(&digest, None).await.unwrap()).await;
        assert!(err.is_none() && got == content);

        let file = dir.path().join(layout::blob(&digest).as_ref());
        let mut damaged = content.clone();
        damaged[10] ^= 0x40;
        std::fs::write(&file, &damaged).unwrap();

        // The whole read: the first pieces go out, the last is withheld.
        let (got, err) = drain(store.read(&digest, None).await.unwrap()).await;
        assert!(err.is_some_and(|e| IntegrityFailure::is(&e)));
        assert_eq!(got.len(), 2 * READ_CHUNK as usize);
        // A range is not checked: it is served as stored (the scrub finds this).
        let (got, err) = drain(store.read(&digest, Some(5..20)).await.unwrap()).await;
        assert!(err.is_none());
        assert_eq!(got, damaged[5..20]);
        // Nor is a range that happens to cover the whole object: whoever asks for the whole
        // blob as a range must read it whole (the registry does).
        let (got, _) = drain(store.read(&digest, Some(0..content.len() as u64)).await.unwrap()).await;
        assert_eq!(got, damaged);
        // The scrub's view: the stored object as it is, with its size.
        let (size, stream) = store.read_stored(&digest).await.unwrap();
        assert_eq!(size, content.len() as u64);
        assert_eq!(drain(stream).await.0, damaged);

        std::fs::write(&file, &content).unwrap();
        let (got, err) = drain(store.read(&digest, None).await.unwrap()).await;
        assert!(err.is_none() && got == content);
    }
}
