//! Uploads in parts on the local disk, appended in place to one data file: chunks appended
//! at the length a session vouches for, a crashed writer's unrecorded tail cut back, the
//! lock that keeps two writers apart, plaintext and sealed commits with no copy, and
//! sessions of one file per chunk (an older Berth's) still committing.

use berth_oci::{Algorithm, Digest, UploadId};
use berth_storage::blob::UploadFile;
use berth_storage::crypt::format::SEALED_SEGMENT;
use berth_storage::crypt::{Dek, SEGMENT, SealedBlob, Sealer};
use berth_storage::{BlobStore, ByteStream, Inbound, Target, layout};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};

fn body(chunks: Vec<Vec<u8>>) -> ByteStream {
    stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c)))).boxed()
}

/// Deterministic bytes that differ from block to block.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[i % 4] ^ seed).collect()
}

fn upload_id() -> UploadId {
    uuid::Uuid::new_v4().to_string().parse().unwrap()
}

fn data_file(dir: &std::path::Path, id: &UploadId) -> std::path::PathBuf {
    dir.join(layout::upload_data(id).as_ref())
}

async fn lock(store: &BlobStore, id: &UploadId) -> UploadFile {
    store.try_lock_upload(id).await.unwrap().expect("nobody else holds the lock")
}

async fn read_all(store: &BlobStore, d: &Digest) -> Vec<u8> {
    let parts: Vec<Bytes> = store.read(d, None).await.unwrap().try_collect().await.unwrap();
    parts.concat()
}

fn uploads_left(dir: &std::path::Path) -> Vec<std::fs::DirEntry> {
    std::fs::read_dir(dir.join("uploads")).map(|d| d.flatten().collect()).unwrap_or_default()
}

#[tokio::test]
async fn plaintext_chunks_append_in_place_and_commit_without_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path(), true).unwrap();
    let id = upload_id();
    assert!(store.appends_in_place(&[]));
    assert!(store.appends_in_place(&[layout::UPLOAD_DATA.to_owned()]));
    assert!(!store.appends_in_place(&[layout::part_name(0)]), "an older session keeps its part files");
    assert!(!BlobStore::in_memory().appends_in_place(&[]), "only the local disk appends in place");

    let blob = pattern(3 * 1024 * 1024 + 17, 1);
    let mut inbound = Inbound::plain(Algorithm::Sha256);
    let mut stored = 0u64;
    // Chunks of uneven sizes, each in a request of its own (its own lock), as PATCHes come.
    for piece in [&blob[..1_000_000], &blob[1_000_000..1_000_001], &blob[1_000_001..]] {
        let file = lock(&store, &id).await;
        file.cut_to(stored).await.unwrap();
        let chunks = piece.chunks(300_000).map(<[u8]>::to_vec).collect();
        let appended = file.append(stored, body(chunks), &mut inbound).await.unwrap();
        assert_eq!((appended.len, appended.written), (piece.len() as u64, piece.len() as u64));
        stored += appended.written;
    }
    assert_eq!(std::fs::read(data_file(dir.path(), &id)).unwrap(), blob, "one file, the chunks in order");
    let digest = inbound.hasher.finish();
    assert_eq!(digest, Digest::sha256_of(&blob));
    let parts = vec![layout::UPLOAD_DATA.to_owned()];
    assert_eq!(store.hash_parts(&id, &parts, stored, Algorithm::Sha512).await.unwrap(), sha512(&blob));
    store.commit_upload(&id, &parts, stored, Target::Plain(digest.clone())).await.unwrap();
    assert_eq!(read_all(&store, &digest).await, blob);
    assert!(uploads_left(dir.path()).is_empty(), "the upload's folder is gone");

    // The same content again: dedupes, leaves nothing behind.
    let id2 = upload_id();
    let file = lock(&store, &id2).await;
    let mut inbound = Inbound::plain(Algorithm::Sha256);
    file.append(0, body(vec![blob.clone()]), &mut inbound).await.unwrap();
    drop(file);
    store.commit_upload(&id2, &parts, blob.len() as u64, Target::Plain(digest.clone())).await.unwrap();
    assert_eq!(read_all(&store, &digest).await, blob);
    assert!(uploads_left(dir.path()).is_empty());
}

fn sha512(bytes: &[u8]) -> Digest {
    let mut h = berth_oci::DigestHasher::new(Algorithm::Sha512);
    h.update(bytes);
    h.finish()
}

#[tokio::test]
async fn a_tail_no_session_recorded_is_cut_back_by_the_next_writer_and_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path(), false).unwrap();
    let id = upload_id();
    let blob = pattern(2_500_000, 2);
    let (a, b) = blob.split_at(1_200_000);

    let mut inbound = Inbound::plain(Algorithm::Sha256);
    let file = lock(&store, &id).await;
    file.append(0, body(vec![a.to_vec()]), &mut inbound).await.unwrap();
    drop(file);
    // A writer killed between its write and its compare-and-swap: bytes nobody recorded.
    let mut lost = Inbound::plain(Algorithm::Sha256);
    let file = lock(&store, &id).await;
    file.append(a.len() as u64, body(vec![pattern(777_777, 9)]), &mut lost).await.unwrap();
    drop(file);
    assert_eq!(std::fs::metadata(data_file(dir.path(), &id)).unwrap().len(), a.len() as u64 + 777_777);

    // The next writer starts from what the session vouches for.
    let file = lock(&store, &id).await;
    file.cut_to(a.len() as u64).await.unwrap();
    file.append(a.len() as u64, body(vec![b.to_vec()]), &mut inbound).await.unwrap();
    drop(file);
    // And another unrecorded tail before the commit, which cuts it too.
    let file = lock(&store, &id).await;
    file.append(blob.len() as u64, body(vec![pattern(5, 7)]), &mut lost).await.unwrap();
    drop(file);

    let digest = inbound.hasher.finish();
    assert_eq!(digest, Digest::sha256_of(&blob));
    let parts = vec![layout::UPLOAD_DATA.to_owned()];
    assert_eq!(
        store.hash_parts(&id, &parts, blob.len() as u64, Algorithm::Sha256).await.unwrap(),
        digest,
        "a fresh hash reads only the recorded bytes"
    );
    store.commit_upload(&id, &parts, blob.len() as u64, Target::Plain(digest.clone())).await.unwrap();
    assert_eq!(read_all(&store, &digest).await, blob);
    assert!(uploads_left(dir.path()).is_empty());
}

#[tokio::test]
async fn a_failed_body_leaves_the_file_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path(), false).unwrap();
    let id = upload_id();
    let file = lock(&store, &id).await;
    let mut inbound = Inbound::plain(Algorithm::Sha256);
    file.append(0, body(vec![pattern(1000, 1)]), &mut inbound).await.unwrap();
    let failing: ByteStream = stream::iter(vec![
        Ok(Bytes::from(pattern(3 * 1024 * 1024, 2))),
        Err(std::io::Error::other("client went away")),
    ])
    .boxed();
    assert!(file.append(1000, failing, &mut Inbound::plain(Algorithm::Sha256)).await.is_err());
    assert_eq!(std::fs::read(data_file(dir.path(), &id)).unwrap(), pattern(1000, 1));
    drop(file);
    store.discard_upload(&id).await.unwrap();
    assert!(uploads_left(dir.path()).is_empty(), "a discarded upload leaves nothing");
}

#[tokio::test]
async fn one_writer_at_a_time_holds_the_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path(), false).unwrap();
    let id = upload_id();
    let first = lock(&store, &id).await;
    assert!(store.try_lock_upload(&id).await.unwrap().is_none(), "a second writer is refused, not queued");
    // Another upload's file is another lock.
    drop(lock(&store, &upload_id()).await);
    drop(first);
    drop(lock(&store, &id).await);
}

#[tokio::test]
async fn a_waiting_writer_takes_the_lock_when_the_holder_lets_go() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path(), false).unwrap();
    let id = upload_id();
    let first = lock(&store, &id).await;
    let waiter = {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move { store.lock_upload(&id).await.unwrap().is_some() })
    };
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "the second writer waits while the first holds the file");
    drop(first);
    assert!(waiter.await.unwrap(), "and takes the lock once it is let go");
}

#[tokio::test]
async fn a_data_file_shorter_than_its_session_is_an_error_never_filled_in() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path(), false).unwrap();
    let id = upload_id();
    let blob = pattern(2_000_000, 4);
    let mut inbound = Inbound::plain(Algorithm::Sha256);
    let file = lock(&store, &id).await;
    file.append(0, body(vec![blob.clone()]), &mut inbound).await.unwrap();
    drop(file);
    // Bytes the session recorded are lost (the file was cut behind Berth's back).
    let f = std::fs::OpenOptions::new().write(true).open(data_file(dir.path(), &id)).unwrap();
    f.set_len(1_000_000).unwrap();
    drop(f);
    let file = lock(&store, &id).await;
    assert!(file.cut_to(blob.len() as u64).await.is_err(), "a writer does not extend the file");
    drop(file);
    let digest = inbound.hasher.finish();
    let parts = vec![layout::UPLOAD_DATA.to_owned()];
    assert!(
        store.commit_upload(&id, &parts, blob.len() as u64, Target::Plain(digest.clone())).await.is_err(),
        "nor does the commit"
    );
    assert!(matches!(store.read(&digest, None).await, Err(berth_storage::Error::NotFound)), "no blob of zeros appears");
    store.discard_upload(&id).await.unwrap();
}

#[tokio::test]
async fn sealed_segments_append_in_place_and_commit_with_the_final_segment() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path(), true).unwrap();
    let id = upload_id();
    let dek = Dek::generate().unwrap();
    let blob = pattern(5 * SEGMENT as usize + 12_345, 3);
    let digest = Digest::sha256_of(&blob);

    // Requests as a session makes them: each a fresh Sealer continuing from the segments
    // sealed so far and the tail held back, and a file cut to those segments.
    let mut hasher = berth_oci::DigestHasher::new(Algorithm::Sha256);
    let (mut next, mut tail, mut runs) = (0u64, Vec::new(), Vec::new());
    let cuts = [0, 1000, 70_000, 70_001, 200_000, blob.len()];
    for w in cuts.windows(2) {
        let file = lock(&store, &id).await;
        let stored = next * SEALED_SEGMENT;
        file.cut_to(stored).await.unwrap();
        let mut inbound =
            Inbound { hasher: hasher.clone(), sealer: Some(Sealer::new(dek.clone(), next, &tail).unwrap()) };
        let appended = file.append(stored, body(vec![blob[w[0]..w[1]].to_vec()]), &mut inbound).await.unwrap();
        assert_eq!(appended.len as usize, w[1] - w[0]);
        let sealer = inbound.sealer.unwrap();
        assert_eq!(appended.written, (sealer.next_segment() - next) * SEALED_SEGMENT, "whole sealed segments");
        runs.extend(sealer.run());
        (next, tail, hasher) = (sealer.next_segment(), sealer.tail().to_vec(), inbound.hasher);
        // A writer that died after writing, before recording: garbage past the segments.
        file.append(next * SEALED_SEGMENT, body(vec![pattern(999, 8)]), &mut Inbound::plain(Algorithm::Sha256))
            .await
            .unwrap();
    }
    assert_eq!(hasher.finish(), digest);
    let (trailer, last) = Sealer::new(dek.clone(), next, &tail).unwrap().finish(&digest).unwrap();
    runs.push(last);
    let object = layout::object_id();
    let path = layout::sealed_blob(&digest, &object);
    let parts = vec![layout::UPLOAD_DATA.to_owned()];
    store
        .commit_upload(&id, &parts, next * SEALED_SEGMENT, Target::Sealed { path: path.clone(), trailer })
        .await
        .unwrap();
    assert!(uploads_left(dir.path()).is_empty());
    let on_disk = std::fs::read(dir.path().join(path.as_ref())).unwrap();
    assert!(!on_disk.windows(64).any(|w| blob.windows(64).next() == Some(w)), "no plaintext at rest");
    let copy = SealedBlob {
        key_name: "test".into(),
        object,
        size: blob.len() as u64,
        kek: String::new(),
        wrapped: Vec::new(),
        runs,
    };
    let read: Vec<Bytes> = store.read_sealed(&digest, &copy, dek, None).await.unwrap().try_collect().await.unwrap();
    assert_eq!(read.concat(), blob);
}

#[tokio::test]
async fn sessions_of_one_file_per_chunk_still_commit() {
    // An older Berth staged each chunk as a file of its own; such a session, continued and
    // finished by this one, keeps that shape and is joined at commit.
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path(), true).unwrap();
    let id = upload_id();
    let blob = pattern(1_500_000, 4);
    let mut inbound = Inbound::plain(Algorithm::Sha256);
    let mut parts = Vec::new();
    for piece in blob.chunks(600_000) {
        let staged = store.stage_part(&id, &parts, body(vec![piece.to_vec()]), &mut inbound).await.unwrap();
        parts.push(staged.name.unwrap());
    }
    assert_eq!(parts.len(), 3);
    assert!(!store.appends_in_place(&parts));
    let digest = inbound.hasher.finish();
    assert_eq!(store.hash_parts(&id, &parts, blob.len() as u64, Algorithm::Sha256).await.unwrap(), digest);
    store.commit_upload(&id, &parts, blob.len() as u64, Target::Plain(digest.clone())).await.unwrap();
    assert_eq!(read_all(&store, &digest).await, blob);
    assert!(uploads_left(dir.path()).is_empty());
}
