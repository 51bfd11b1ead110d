//! The blob-store suite, run against memory and local disk.

use berth_oci::{Algorithm, Digest, DigestHasher, UploadId};
use berth_storage::{BlobStore, ByteStream};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};

fn body(chunks: Vec<&'static [u8]>) -> ByteStream {
    stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c)))).boxed()
}

async fn read_all(store: &BlobStore, d: &Digest, range: Option<std::ops::Range<u64>>) -> Vec<u8> {
    let parts: Vec<Bytes> = store.read(d, range).await.unwrap().try_collect().await.unwrap();
    parts.concat()
}

fn upload_id() -> UploadId {
    uuid::Uuid::new_v4().to_string().parse().unwrap()
}

async fn suite(store: BlobStore) {
    store.check().await.unwrap();

    // Several parts, committed, read back whole and by range.
    let id = upload_id();
    let mut hasher = DigestHasher::new(Algorithm::Sha256);
    let a = store.stage_part(&id, 0, body(vec![b"hello ", b"big "]), &mut hasher).await.unwrap();
    let b = store.stage_part(&id, 1, body(vec![b"world"]), &mut hasher).await.unwrap();
    let empty = store.stage_part(&id, 2, body(vec![]), &mut hasher).await.unwrap();
    assert_eq!((a.len, b.len, empty.len), (10, 5, 0));
    assert!(empty.name.is_none());
    let digest = hasher.finish();
    assert_eq!(digest, Digest::sha256_of(b"hello big world"));
    assert_eq!(store.size(&digest).await.unwrap(), None, "not visible before commit");
    let parts = vec![a.name.unwrap(), b.name.unwrap()];
    store.commit_verified(&id, &parts, &digest).await.unwrap();
    assert_eq!(store.size(&digest).await.unwrap(), Some(15));
    assert_eq!(read_all(&store, &digest, None).await, b"hello big world");
    assert_eq!(read_all(&store, &digest, Some(6..9)).await, b"big");

    // The same content again: dedupes, stays readable, leaves nothing staged.
    let id2 = upload_id();
    let mut h2 = DigestHasher::new(Algorithm::Sha256);
    let p = store.stage_part(&id2, 0, body(vec![b"hello big world"]), &mut h2).await.unwrap();
    store.commit_verified(&id2, &[p.name.unwrap()], &h2.finish()).await.unwrap();
    assert_eq!(read_all(&store, &digest, None).await, b"hello big world");

    // A zero-byte blob.
    let id3 = upload_id();
    let empty_digest = Digest::sha256_of(b"");
    store.commit_verified(&id3, &[], &empty_digest).await.unwrap();
    assert_eq!(store.size(&empty_digest).await.unwrap(), Some(0));
    assert!(read_all(&store, &empty_digest, None).await.is_empty());

    // A failing body leaves no part behind and reports the body error.
    let id4 = upload_id();
    let failing: ByteStream =
        stream::iter(vec![Ok(Bytes::from_static(b"abc")), Err(std::io::Error::other("gone"))]).boxed();
    let mut h4 = DigestHasher::new(Algorithm::Sha256);
    let err = store.stage_part(&id4, 0, failing, &mut h4).await.unwrap_err();
    assert!(matches!(err, berth_storage::Error::Body(_)), "{err:?}");
    store.discard_upload(&id4).await.unwrap(); // as the session's cancel or expiry does

    // Discarding an upload removes its parts; reading a missing blob is NotFound.
    let id5 = upload_id();
    let mut h5 = DigestHasher::new(Algorithm::Sha256);
    store.stage_part(&id5, 0, body(vec![b"zzz"]), &mut h5).await.unwrap();
    store.discard_upload(&id5).await.unwrap();
    let missing = Digest::sha256_of(b"never stored");
    assert!(matches!(store.read(&missing, None).await, Err(berth_storage::Error::NotFound)));
}

#[tokio::test]
async fn blob_store_in_memory() {
    suite(BlobStore::in_memory()).await;
}

#[tokio::test]
async fn blob_store_on_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    suite(BlobStore::local(dir.path(), true).unwrap()).await;
    // Nothing left staged under uploads/ once every upload was committed or discarded.
    let uploads = dir.path().join("uploads");
    let leftovers: Vec<_> = std::fs::read_dir(&uploads).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}
