//! The blob-store suite, run against memory, local disk and S3 (when
//! `BERTH_TEST_S3_ENDPOINT` and `BERTH_TEST_S3_BUCKET` name a server, as CI's moto does;
//! each run works under a fresh key prefix).

use berth_oci::{Algorithm, Digest, UploadId};
use berth_storage::s3::S3Settings;
use berth_storage::{BlobStore, ByteStream, Inbound, Written};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};

fn body(chunks: Vec<&'static [u8]>) -> ByteStream {
    stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c)))).boxed()
}

async fn read_all(store: &BlobStore, d: &Digest, range: Option<std::ops::Range<u64>>) -> Vec<u8> {
    let parts: Vec<Bytes> = store.read(d, range).await.unwrap().try_collect().await.unwrap();
    parts.concat()
}

fn owned_body(chunks: Vec<Vec<u8>>) -> ByteStream {
    stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c)))).boxed()
}

/// Deterministic bytes that differ from block to block.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[i % 4] ^ seed).collect()
}

fn upload_id() -> UploadId {
    uuid::Uuid::new_v4().to_string().parse().unwrap()
}

async fn suite(store: BlobStore) {
    store.check().await.unwrap();

    // Several parts, committed, read back whole and by range.
    let id = upload_id();
    let mut hasher = Inbound::plain(Algorithm::Sha256);
    let mut parts = Vec::new();
    let a = stage(&store, &id, &mut parts, body(vec![b"hello ", b"big "]), &mut hasher).await;
    let b = stage(&store, &id, &mut parts, body(vec![b"world"]), &mut hasher).await;
    let empty = stage(&store, &id, &mut parts, body(vec![]), &mut hasher).await;
    assert_eq!((a, b, empty), (10, 5, 0));
    let digest = hasher.hasher.finish();
    assert_eq!(digest, Digest::sha256_of(b"hello big world"));
    assert_eq!(store.size(&digest).await.unwrap(), None, "not visible before commit");
    store.commit_verified(&id, &parts, &digest).await.unwrap();
    assert_eq!(store.size(&digest).await.unwrap(), Some(15));
    assert_eq!(read_all(&store, &digest, None).await, b"hello big world");
    assert_eq!(read_all(&store, &digest, Some(6..9)).await, b"big");

    // The same content again: dedupes, stays readable, leaves nothing staged.
    let id2 = upload_id();
    let mut h2 = Inbound::plain(Algorithm::Sha256);
    let p = store.stage_part(&id2, &[], body(vec![b"hello big world"]), &mut h2).await.unwrap();
    store.commit_verified(&id2, &[p.name.unwrap()], &h2.hasher.finish()).await.unwrap();
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
    let mut h4 = Inbound::plain(Algorithm::Sha256);
    let err = store.stage_part(&id4, &[], failing, &mut h4).await.unwrap_err();
    assert!(matches!(err, berth_storage::Error::Body(_)), "{err:?}");
    store.discard_upload(&id4).await.unwrap(); // as the session's cancel or expiry does

    // Discarding an upload removes its parts; reading a missing blob is NotFound.
    let id5 = upload_id();
    let mut h5 = Inbound::plain(Algorithm::Sha256);
    store.stage_part(&id5, &[], body(vec![b"zzz"]), &mut h5).await.unwrap();
    store.discard_upload(&id5).await.unwrap();
    let missing = Digest::sha256_of(b"never stored");
    assert!(matches!(store.read(&missing, None).await, Err(berth_storage::Error::NotFound)));

    // Small chunks and large ones mixed (on S3 the small ones are joined into parts of at
    // least 5 MiB; a 9 MiB body becomes a multipart upload of its own).
    let id6 = upload_id();
    let mut h6 = Inbound::plain(Algorithm::Sha256);
    let mut parts6 = Vec::new();
    let sizes = [3 << 20, 3 << 20, 100, 9 << 20, 1, 2 << 20];
    let mut expected = Vec::new();
    for (i, size) in sizes.into_iter().enumerate() {
        let data = pattern(size, i as u8);
        expected.extend_from_slice(&data);
        let chunks: Vec<Vec<u8>> = data.chunks(700_000).map(<[u8]>::to_vec).collect();
        assert_eq!(stage(&store, &id6, &mut parts6, owned_body(chunks), &mut h6).await, size as u64);
    }
    let d6 = h6.hasher.finish();
    assert_eq!(d6, Digest::sha256_of(&expected));
    store.commit_verified(&id6, &parts6, &d6).await.unwrap();
    assert_eq!(store.size(&d6).await.unwrap(), Some(expected.len() as u64));
    assert!(read_all(&store, &d6, None).await == expected, "content differs");
    let r = (6 << 20) - 5..(6 << 20) + 200;
    assert!(read_all(&store, &d6, Some(r.clone())).await == expected[r.start as usize..r.end as usize]);

    // One request straight to the blob: verified, deduplicated, nothing kept on a mismatch.
    let big = pattern(11 << 20, 7);
    let d7 = Digest::sha256_of(&big);
    let chunks: Vec<Vec<u8>> = big.chunks(1 << 20).map(<[u8]>::to_vec).collect();
    let w = store.write_verified(&upload_id(), &d7, owned_body(chunks.clone())).await.unwrap();
    assert_eq!(w, Written::Stored(big.len() as u64));
    assert!(read_all(&store, &d7, None).await == big);
    let again = store.write_verified(&upload_id(), &d7, owned_body(chunks)).await.unwrap();
    assert_eq!(again, Written::Stored(big.len() as u64), "an identical blob again is fine");
    let wrong = Digest::sha256_of(b"something else");
    let m = store.write_verified(&upload_id(), &wrong, owned_body(vec![b"not that".to_vec()])).await.unwrap();
    assert_eq!(m, Written::Mismatch(Digest::sha256_of(b"not that")));
    assert_eq!(store.size(&wrong).await.unwrap(), None);
    let big_wrong = store.write_verified(&upload_id(), &wrong, owned_body(vec![pattern(9 << 20, 1)])).await.unwrap();
    assert!(matches!(big_wrong, Written::Mismatch(_)));
    assert_eq!(store.size(&wrong).await.unwrap(), None);
    let empty_blob = store.write_verified(&upload_id(), &empty_digest, owned_body(vec![])).await.unwrap();
    assert_eq!(empty_blob, Written::Stored(0));

    // Two uploads of the same content committed at once: both succeed, one copy is kept.
    let twin = pattern(6 << 20, 9);
    let d8 = Digest::sha256_of(&twin);
    let commit_twin = |seed: usize| {
        let store = store.clone();
        let twin = twin.clone();
        let d8 = d8.clone();
        async move {
            let id = upload_id();
            let mut h = Inbound::plain(Algorithm::Sha256);
            let (a, b) = twin.split_at(seed << 20);
            let mut parts = Vec::new();
            stage(&store, &id, &mut parts, owned_body(vec![a.to_vec()]), &mut h).await;
            stage(&store, &id, &mut parts, owned_body(vec![b.to_vec()]), &mut h).await;
            assert_eq!(h.hasher.finish(), d8);
            store.commit_verified(&id, &parts, &d8).await
        }
    };
    let (x, y) = tokio::join!(commit_twin(1), commit_twin(5));
    x.unwrap();
    y.unwrap();
    assert!(read_all(&store, &d8, None).await == twin);

    // A body that fails after a multipart upload began leaves nothing behind either.
    let id9 = upload_id();
    let failing: ByteStream =
        stream::iter(vec![Ok(Bytes::from(pattern(9 << 20, 3))), Err(std::io::Error::other("gone"))]).boxed();
    let err = store.stage_part(&id9, &[], failing, &mut Inbound::plain(Algorithm::Sha256)).await.unwrap_err();
    assert!(matches!(err, berth_storage::Error::Body(_)), "{err:?}");
    store.discard_upload(&id9).await.unwrap();

    // Nothing staged is left: no upload folder, no unfinished multipart upload (aborts of
    // dropped writers run in the background, so give them a moment).
    assert_eq!(store.upload_folders().await.unwrap(), vec![]);
    let mut pending = usize::MAX;
    for _ in 0..50 {
        pending = store.abort_stale_multipart(i64::MAX).await.unwrap();
        if pending == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(pending, 0, "unfinished multipart uploads were left");
}

/// Stages `body` as the next part of `id`, keeping `parts` as the upload session does.
async fn stage(
    store: &BlobStore,
    id: &UploadId,
    parts: &mut Vec<String>,
    body: ByteStream,
    hasher: &mut Inbound,
) -> u64 {
    let staged = store.stage_part(id, parts, body, hasher).await.unwrap();
    if let Some(name) = staged.name {
        if let Some(old) = staged.replaces {
            assert_eq!(parts.pop(), Some(old.clone()));
            store.discard_part(id, &old).await.unwrap();
        }
        parts.push(name);
    }
    staged.len
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

/// The S3 test server from the environment, under a fresh prefix.
pub fn s3_settings() -> S3Settings {
    let endpoint = std::env::var("BERTH_TEST_S3_ENDPOINT")
        .expect("BERTH_TEST_S3_ENDPOINT: run eval \"$(bash .ci/s3.sh start)\" first");
    S3Settings {
        bucket: std::env::var("BERTH_TEST_S3_BUCKET").unwrap_or_else(|_| "test".into()),
        prefix: Some(format!("storage-suite/{}", uuid::Uuid::new_v4().simple())),
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint),
        path_style: true,
        access_key_id: Some("berth-test".into()),
        secret_access_key: Some("berth-test-secret".into()),
        session_token: None,
    }
}

#[tokio::test]
#[ignore = "needs S3: eval \"$(bash .ci/s3.sh start)\", then cargo test -- --ignored"]
async fn blob_store_on_s3() {
    let settings = s3_settings();
    let store = BlobStore::s3(&settings).unwrap();
    suite(store.clone()).await;

    // A process that dies mid-upload leaves an unfinished multipart upload, which object
    // listings do not show. The purge finds and aborts it.
    let s3 = berth_storage::s3::S3::open(&settings).unwrap();
    let mut writer =
        berth_storage::s3::writer::PartWriter::new(&s3, object_store::path::Path::from("uploads/dead/part"));
    writer.write(Bytes::from(pattern(9 << 20, 5))).await.unwrap();
    std::mem::forget(writer); // as a crash would: no abort runs
    assert_eq!(store.abort_stale_multipart(0).await.unwrap(), 0, "younger than the cutoff: kept");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert_eq!(store.abort_stale_multipart(now + 60).await.unwrap(), 1);
    assert_eq!(store.abort_stale_multipart(now + 60).await.unwrap(), 0);
}
