//! [`BlobStore::open_local`]: a plaintext blob's file on the local disk, opened for a reader
//! that sends it itself (the registry's zero-copy pulls: `sendfile(2)` from this file to a
//! socket). Nothing here reads or checks the content.

use std::fs::File;

use berth_oci::Digest;

use crate::BlobStore;
use crate::error::{Error, Result};
use crate::layout;

/// A committed plaintext blob's file, open, and its length on disk.
#[derive(Debug)]
pub struct LocalBlob {
    pub file: File,
    /// The file's length now (a damaged file may differ from the recorded size).
    pub len: u64,
}

impl BlobStore {
    /// The file of plaintext blob `digest`, open for reading, when blobs are on the local
    /// disk; `Ok(None)` on other stores (S3, memory), whose reads go through
    /// [`BlobStore::read`]. [`Error::NotFound`] when the file is missing. Opened on the
    /// blocking pool, as every local file access is.
    pub async fn open_local(&self, digest: &Digest) -> Result<Option<LocalBlob>> {
        let Some(root) = &self.local_root else { return Ok(None) };
        let path = root.join(layout::blob(digest).as_ref());
        let opened = tokio::task::spawn_blocking(move || -> std::io::Result<LocalBlob> {
            let file = File::open(&path)?;
            let len = file.metadata()?.len();
            Ok(LocalBlob { file, len })
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        match opened {
            Ok(blob) => Ok(Some(blob)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound),
            Err(e) => Err(Error::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn opens_a_committed_blob_on_disk_and_nothing_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::local(dir.path(), false).unwrap();
        let content = b"zero copy".to_vec();
        let digest = Digest::sha256_of(&content);
        let path = dir.path().join(layout::blob(&digest).as_ref());
        assert!(matches!(store.open_local(&digest).await, Err(Error::NotFound)));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &content).unwrap();
        let blob = store.open_local(&digest).await.unwrap().unwrap();
        assert_eq!(blob.len, content.len() as u64);
        let mut read = Vec::new();
        std::io::Read::read_to_end(&mut &blob.file, &mut read).unwrap();
        assert_eq!(read, content);
        assert!(BlobStore::in_memory().open_local(&digest).await.unwrap().is_none());
    }
}
