//! [`PartWriter`]: streams a body of unknown length into one S3 object.
//!
//! A body that fits in one part is a single `PutObject`. A longer one becomes a multipart
//! upload whose part size grows with the object ([`part_size`]): 8 MiB parts for the first
//! 16 GiB, then 16, 32, 64 and 128 MiB, so 10,000 parts hold 496 GiB, while memory stays at
//! most [`IN_FLIGHT`] + 1 parts. Dropping an unfinished writer aborts its multipart upload.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

use super::raw::{Completed, CompletedPart, RawS3};
use super::{MAX_PARTS, S3};
use crate::error::{Error, Result};

/// Parts uploading at once per writer.
const IN_FLIGHT: usize = 2;
/// The first part size, doubled every [`PARTS_PER_SIZE`] parts.
const FIRST_PART: usize = 8 * 1024 * 1024;
const PARTS_PER_SIZE: usize = 2000;

/// The size of part `index` (0-based). Every size is at least S3's 5 MiB minimum.
pub fn part_size(index: usize) -> usize {
    FIRST_PART << (index / PARTS_PER_SIZE).min(4)
}

/// The most one writer can hold: [`MAX_PARTS`] parts of [`part_size`].
pub fn max_object_size() -> u64 {
    (0..MAX_PARTS).map(|i| part_size(i) as u64).sum()
}

/// One object being written. Call [`PartWriter::finish`] to make it visible; anything else
/// (an error, a drop) leaves no object.
pub struct PartWriter {
    store: Arc<dyn ObjectStore>,
    raw: Arc<RawS3>,
    path: Path,
    upload_id: Option<String>,
    buf: BytesMut,
    parts: Vec<CompletedPart>,
    in_flight: VecDeque<tokio::task::JoinHandle<Result<CompletedPart>>>,
    len: u64,
    finished: bool,
}

impl PartWriter {
    pub fn new(s3: &S3, path: Path) -> PartWriter {
        PartWriter {
            store: s3.store.clone(),
            raw: s3.raw.clone(),
            path,
            upload_id: None,
            buf: BytesMut::new(),
            parts: Vec::new(),
            in_flight: VecDeque::new(),
            len: 0,
            finished: false,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn next_index(&self) -> usize {
        self.parts.len() + self.in_flight.len()
    }

    /// Appends `data`, uploading every part that fills up.
    pub async fn write(&mut self, mut data: Bytes) -> Result<()> {
        self.len += data.len() as u64;
        while !data.is_empty() {
            let want = part_size(self.next_index());
            if self.buf.capacity() < want {
                self.buf.reserve(want - self.buf.len());
            }
            let take = (want - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data.split_to(take));
            if self.buf.len() == want {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    /// Uploads the buffer as the next part, waiting while [`IN_FLIGHT`] parts are pending.
    async fn send_part(&mut self) -> Result<()> {
        let index = self.next_index();
        if index >= MAX_PARTS {
            return Err(Error::S3(format!(
                "{}: one request body can hold at most {} bytes on S3",
                self.path,
                max_object_size()
            )));
        }
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = self.raw.create_multipart(&self.path).await?;
                self.upload_id = Some(id.clone());
                id
            }
        };
        while self.in_flight.len() >= IN_FLIGHT {
            self.collect_one().await?;
        }
        let data = self.buf.split().freeze();
        let (raw, path) = (self.raw.clone(), self.path.clone());
        let number = index as u32 + 1;
        self.in_flight.push_back(tokio::spawn(async move { raw.upload_part(&path, &upload_id, number, data).await }));
        Ok(())
    }

    async fn collect_one(&mut self) -> Result<()> {
        if let Some(task) = self.in_flight.pop_front() {
            let part = task.await.map_err(|e| Error::Task(e.to_string()))??;
            self.parts.push(part);
        }
        Ok(())
    }

    /// Makes the object visible. With `if_absent`, an object already at the path wins and
    /// ours is dropped ([`Completed::AlreadyExists`]).
    pub async fn finish(mut self, if_absent: bool) -> Result<Completed> {
        let mode = if if_absent { PutMode::Create } else { PutMode::Overwrite };
        if self.upload_id.is_none() {
            self.finished = true;
            let payload = PutPayload::from_bytes(self.buf.split().freeze());
            return match self.store.put_opts(&self.path, payload, PutOptions { mode, ..Default::default() }).await {
                Ok(_) => Ok(Completed::Created),
                Err(object_store::Error::AlreadyExists { .. }) if if_absent => Ok(Completed::AlreadyExists),
                Err(e) => Err(e.into()),
            };
        }
        if !self.buf.is_empty() {
            self.send_part().await?;
        }
        while !self.in_flight.is_empty() {
            self.collect_one().await?;
        }
        let upload_id = self.upload_id.clone().unwrap_or_default();
        let completed = self.raw.complete(&self.path, &upload_id, &self.parts, if_absent).await?;
        self.finished = true;
        Ok(completed)
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let Some(upload_id) = self.upload_id.take() else { return };
        for task in &self.in_flight {
            task.abort();
        }
        let (raw, path) = (self.raw.clone(), self.path.clone());
        // Drop cannot wait; the abort runs on its own. Should it fail, the purge finds the
        // upload by listing (see `BlobStore::abort_stale_multipart`).
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = raw.abort(&path, &upload_id).await {
                    tracing::warn!(key = %path, error = %e, "could not abort an unfinished multipart upload");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_hold_a_200_gib_layer() {
        assert_eq!(part_size(0), 8 << 20);
        assert_eq!(part_size(1999), 8 << 20);
        assert_eq!(part_size(2000), 16 << 20);
        assert_eq!(part_size(MAX_PARTS - 1), 128 << 20);
        assert!((0..MAX_PARTS).all(|i| part_size(i) as u64 >= super::super::MIN_PART));
        assert!(max_object_size() > 200 << 30, "{}", max_object_size());
    }
}
