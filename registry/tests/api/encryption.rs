//! Encryption at rest through the HTTP API: nothing in plaintext on disk, per-repository
//! keys and mounts between them, tampering fails closed, rotation while pulls run,
//! encrypting a registry that ran without encryption.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use berth_registry::config::RepositoryKeyRule;
use berth_storage::crypt::SEGMENT;

use crate::support::*;

/// Bytes that say where they are, so a plaintext copy at rest can be searched for.
fn marked(len: usize, seed: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(format!("BERTH-PLAINTEXT-MARKER-{seed}-{i:012}|").as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn sealed_objects(dir: &Path) -> Vec<PathBuf> {
    files_under(&dir.join("blobs").join("sealed"))
}

async fn push(t: &TestServer, repo: &str, blob: &[u8]) -> String {
    let digest = sha256(blob);
    let r = t
        .client
        .post(t.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
        .body(blob.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    digest
}

/// A chunked push, in PATCHes of the given sizes.
async fn push_chunked(t: &TestServer, repo: &str, blob: &[u8], sizes: &[usize]) -> String {
    let mut location = t.start_upload(repo).await;
    let mut at = 0;
    for &n in sizes {
        let chunk = &blob[at..at + n];
        let r = t
            .client
            .patch(&location)
            .header("Content-Range", format!("{at}-{}", at + n - 1))
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{:?}", r.text().await);
        location = t.url(r.headers()["location"].to_str().unwrap());
        at += n;
    }
    let digest = sha256(blob);
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = t.client.put(format!("{location}{sep}digest={digest}")).body(blob[at..].to_vec()).send().await.unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    digest
}

async fn pull(t: &TestServer, repo: &str, digest: &str, range: Option<(u64, u64)>) -> reqwest::Response {
    let mut req = t.client.get(t.url(&format!("/v2/{repo}/blobs/{digest}")));
    if let Some((a, b)) = range {
        req = req.header("Range", format!("bytes={a}-{b}"));
    }
    req.send().await.unwrap()
}

async fn pull_ok(t: &TestServer, repo: &str, digest: &str) -> Vec<u8> {
    let r = pull(t, repo, digest, None).await;
    assert_eq!(r.status(), 200);
    r.bytes().await.map_err(|e| format!("{e:?}")).unwrap().to_vec()
}

#[tokio::test]
async fn blobs_are_sealed_at_rest_and_read_back_whole_and_in_ranges() {
    let t = TestServer::start().await;
    let seg = SEGMENT as usize;
    let small = marked(100, 1);
    let big = marked(3 * seg + 12_345, 2);
    let exact = marked(2 * seg, 3);
    let d_small = push(&t, "sealed/a", &small).await;
    let d_big = push_chunked(&t, "sealed/a", &big, &[100, 70_000, 1, seg, 2 * seg - 70_101]).await;
    let d_exact = push_chunked(&t, "sealed/a", &exact, &[seg]).await;
    let d_empty = push(&t, "sealed/a", b"").await;

    assert_eq!(pull_ok(&t, "sealed/a", &d_small).await, small);
    assert_eq!(pull_ok(&t, "sealed/a", &d_big).await, big);
    assert_eq!(pull_ok(&t, "sealed/a", &d_exact).await, exact);
    assert!(pull_ok(&t, "sealed/a", &d_empty).await.is_empty());
    let len = big.len() as u64;
    for (a, b) in
        [(0, 0), (seg as u64 - 1, seg as u64), (seg as u64, 2 * seg as u64 - 1), (len - 1, len - 1), (5, len - 1)]
    {
        let r = pull(&t, "sealed/a", &d_big, Some((a, b))).await;
        assert_eq!(r.status(), 206);
        assert_eq!(r.bytes().await.unwrap().as_ref(), &big[a as usize..=b as usize], "range {a}-{b}");
    }

    // Nothing readable at rest: no plaintext object, no file containing the marker.
    let dir = t.dir.path().to_owned();
    assert!(files_under(&dir.join("blobs").join("blobs")).is_empty(), "no plaintext blob objects");
    assert_eq!(sealed_objects(&dir).len(), 4);
    for f in files_under(&dir) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!bytes.windows(22).any(|w| w == b"BERTH-PLAINTEXT-MARKER"), "plaintext found in {}", f.display());
    }
    let key = dir.join("keys").join("default.1.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "generated key is private");
    t.server.stop().await;
}

#[tokio::test]
async fn repositories_with_different_keys_keep_separate_copies_and_mounts_reencrypt() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.encryption.repositories = vec![RepositoryKeyRule { prefix: "team-a/".into(), key: "team-a".into() }];
    let t = TestServer::start_with(dir, config).await;
    let registry = t.server.app.registry().clone();
    // A repository whose key does not exist cannot take pushes.
    let r = t.client.post(t.url("/v2/team-a/app/blobs/uploads/")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(registry.create_key("team-a").await.unwrap(), "team-a.1");

    let blob = marked(200_000, 4);
    let d = push(&t, "team-a/app", &blob).await;
    push(&t, "team-a/app", &blob).await; // again: nothing new
    push(&t, "team-b/app", &blob).await;
    let root = t.dir.path().to_owned();
    assert_eq!(sealed_objects(&root).len(), 2, "one copy per key");

    // Same key: the mount shares the copy.
    let mount = |to: &str, from: &str| t.url(&format!("/v2/{to}/blobs/uploads/?mount={d}&from={from}"));
    let r = t.client.post(mount("team-a/other", "team-a/app")).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(sealed_objects(&root).len(), 2);
    // Another key with its own copy already: shared too.
    let r = t.client.post(mount("team-c/x", "team-a/app")).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(sealed_objects(&root).len(), 2);

    // A blob only team-a has, mounted into a default-key repository: re-encrypted.
    let only_a = marked(150_000, 5);
    let d2 = push(&t, "team-a/app", &only_a).await;
    assert_eq!(sealed_objects(&root).len(), 3);
    let r =
        t.client.post(t.url(&format!("/v2/plain/x/blobs/uploads/?mount={d2}&from=team-a/app"))).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(sealed_objects(&root).len(), 4, "a copy for the default key");
    assert_eq!(pull_ok(&t, "plain/x", &d2).await, only_a);
    assert_eq!(pull_ok(&t, "team-a/other", &d).await, blob);
    assert_eq!(pull_ok(&t, "team-c/x", &d).await, blob);

    let keys = registry.list_keys().await.unwrap();
    let count = |id: &str| keys.iter().find(|k| k.id == id).map(|k| k.blobs);
    assert_eq!(count("team-a.1"), Some(2));
    assert_eq!(count("default.1"), Some(2));
    t.server.stop().await;
}

/// Damage an object on disk with `f`, check how reads fail, and undo it.
fn with_damaged(path: &Path, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let original = std::fs::read(path).unwrap();
    let mut damaged = original.clone();
    f(&mut damaged);
    std::fs::write(path, &damaged).unwrap();
    original
}

/// A GET fails with a status, or the connection breaks (before the answer, or in the body):
/// never wrong bytes.
async fn read_fails(t: &TestServer, repo: &str, digest: &str, expected: &[u8]) {
    let Ok(r) = t.client.get(t.url(&format!("/v2/{repo}/blobs/{digest}"))).send().await else { return };
    if r.status() != 200 {
        assert_eq!(r.status(), 500);
        return;
    }
    if let Ok(body) = r.bytes().await {
        panic!("a damaged blob was served whole ({} bytes, equal: {})", body.len(), body.as_ref() == expected)
    }
}

#[tokio::test]
async fn tampered_truncated_and_swapped_objects_fail_closed() {
    let t = TestServer::start().await;
    let seg = SEGMENT as usize;
    let a = marked(3 * seg + 10, 6);
    let b = marked(3 * seg + 10, 7);
    let da = push(&t, "tamper/a", &a).await;
    let db = push(&t, "tamper/a", &b).await;
    let root = t.dir.path().to_owned();
    let object = |digest: &str| {
        let hex = digest.trim_start_matches("sha256:");
        let dir = root.join("blobs").join("sealed").join("sha256").join(&hex[..2]).join(hex);
        files_under(&dir).pop().unwrap()
    };
    let (pa, pb) = (object(&da), object(&db));

    // A flipped bit in the first segment: an error status, before any byte.
    let original = with_damaged(&pa, |d| d[10] ^= 1);
    let r = pull(&t, "tamper/a", &da, None).await;
    assert_eq!(r.status(), 500);
    std::fs::write(&pa, &original).unwrap();
    assert_eq!(pull_ok(&t, "tamper/a", &da).await, a);

    // In the last segment: the body breaks; a range before it is still served.
    let last = original.len() - 20;
    with_damaged(&pa, |d| d[last] ^= 0x80);
    read_fails(&t, "tamper/a", &da, &a).await;
    let r = pull(&t, "tamper/a", &da, Some((0, 99))).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), &a[..100]);
    std::fs::write(&pa, &original).unwrap();

    // A flipped tag, a truncated object (whole segments or mid-segment), an object cut to nothing.
    for damage in [
        Box::new(|d: &mut Vec<u8>| d[seg + 3] ^= 4) as Box<dyn FnOnce(&mut Vec<u8>)>,
        Box::new(|d: &mut Vec<u8>| d.truncate(3 * (seg + 16))),
        Box::new(|d: &mut Vec<u8>| d.truncate(2 * (seg + 16) + 5)),
        Box::new(|d: &mut Vec<u8>| d.truncate(0)),
    ] {
        with_damaged(&pa, damage);
        read_fails(&t, "tamper/a", &da, &a).await;
        std::fs::write(&pa, &original).unwrap();
    }

    // Segments swapped within the blob, and with the other blob; whole objects swapped.
    let ob = std::fs::read(&pb).unwrap();
    let s = seg + 16;
    with_damaged(&pa, |d| {
        let (x, y) = (d[s..2 * s].to_vec(), d[2 * s..3 * s].to_vec());
        d[s..2 * s].copy_from_slice(&y);
        d[2 * s..3 * s].copy_from_slice(&x);
    });
    read_fails(&t, "tamper/a", &da, &a).await;
    std::fs::write(&pa, &original).unwrap();
    with_damaged(&pa, |d| d[s..2 * s].copy_from_slice(&ob[s..2 * s]));
    read_fails(&t, "tamper/a", &da, &a).await;
    std::fs::write(&pa, &ob).unwrap();
    std::fs::write(&pb, &original).unwrap();
    read_fails(&t, "tamper/a", &da, &a).await;
    read_fails(&t, "tamper/a", &db, &b).await;
    std::fs::write(&pa, &original).unwrap();
    std::fs::write(&pb, &ob).unwrap();
    assert_eq!(pull_ok(&t, "tamper/a", &da).await, a);
    assert_eq!(pull_ok(&t, "tamper/a", &db).await, b);
    t.server.stop().await;
}

#[tokio::test]
async fn a_key_file_with_other_material_is_refused() {
    let t = TestServer::start().await;
    let blob = marked(1000, 8);
    push(&t, "wrong/key", &blob).await;
    let TestServer { server, dir, .. } = t;
    server.stop().await;
    let key = dir.path().join("keys").join("default.1.key");
    std::fs::write(&key, format!("{}\n", "11".repeat(32))).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = berth_registry::app::RunningServer::start(listener, &config_in(dir.path())).await.unwrap_err();
    assert!(err.to_string().contains("wrong key material"), "{err}");
}

#[tokio::test]
async fn rotation_rewraps_every_data_key_while_pulls_run() {
    let t = Arc::new(TestServer::start().await);
    let registry = t.server.app.registry().clone();
    let mut blobs = Vec::new();
    for i in 0..20u8 {
        let blob = marked(10_000 + usize::from(i) * 7_000, i);
        let d = push(&t, "rotate/me", &blob).await;
        blobs.push((d, blob));
    }
    let blobs = Arc::new(blobs);
    let stop = Arc::new(AtomicBool::new(false));
    let pulled = Arc::new(AtomicU64::new(0));
    let mut pullers = Vec::new();
    for w in 0..4 {
        let (t, blobs, stop, pulled) = (t.clone(), blobs.clone(), stop.clone(), pulled.clone());
        pullers.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let (d, blob) = &blobs[i % blobs.len()];
                assert_eq!(&pull_ok(&t, "rotate/me", d).await, blob);
                pulled.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rotation = registry.rotate_key("default", Duration::ZERO, &|_| {}).await.unwrap();
    assert_eq!((rotation.to.as_str(), rotation.rewrapped), ("default.2", 20));
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for p in pullers {
        p.await.unwrap();
    }
    assert!(pulled.load(Ordering::Relaxed) > 20);

    let keys = registry.list_keys().await.unwrap();
    let state = |id: &str| keys.iter().find(|k| k.id == id).map(|k| (k.state.clone(), k.blobs));
    assert_eq!(state("default.1"), Some(("inactive".into(), 0)));
    assert_eq!(state("default.2"), Some(("active".into(), 20)));
    assert!(registry.retire_key("default.2").await.is_err(), "the active key cannot be retired");
    registry.retire_key("default.1").await.unwrap();
    // New pushes use the new version; the old material is no longer needed for anything.
    let fresh = marked(5000, 99);
    let d = push(&t, "rotate/me", &fresh).await;
    std::fs::remove_file(t.dir.path().join("keys").join("default.1.key")).unwrap();
    for (d, blob) in blobs.iter() {
        assert_eq!(&pull_ok(&t, "rotate/me", d).await, blob);
    }
    assert_eq!(pull_ok(&t, "rotate/me", &d).await, fresh);
}

#[tokio::test]
async fn a_registry_that_ran_without_encryption_is_encrypted_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.encryption.enabled = false;
    let t = TestServer::start_with(dir, config).await;
    let one = marked(300_000, 10);
    let two = marked(10, 11);
    let d1 = push(&t, "old/one", &one).await;
    let d2 = push(&t, "old/two", &two).await;
    push(&t, "old/two", &one).await;
    let root = t.dir.path().to_owned();
    assert_eq!(files_under(&root.join("blobs").join("blobs")).len(), 2);
    assert!(sealed_objects(&root).is_empty());
    let TestServer { server, dir, .. } = t;
    server.stop().await;

    let t = TestServer::start_with(dir, config_in(&root)).await;
    // Still plaintext repositories: readable as they were.
    assert_eq!(pull_ok(&t, "old/one", &d1).await, one);
    let registry = t.server.app.registry().clone();
    let seen = std::sync::Mutex::new(Vec::new());
    let done = registry
        .encrypt_existing(&|repo, blobs, _| seen.lock().unwrap().push((repo.to_string(), blobs)))
        .await
        .unwrap();
    assert_eq!((done.repositories, done.blobs, done.plaintext_removed), (2, 2, 2), "one copy of the shared blob");
    assert_eq!(seen.lock().unwrap().len(), 2, "progress after every blob");
    assert!(files_under(&root.join("blobs").join("blobs")).is_empty(), "plaintext removed");
    assert_eq!(sealed_objects(&root).len(), 2);
    assert_eq!(pull_ok(&t, "old/one", &d1).await, one);
    assert_eq!(pull_ok(&t, "old/two", &d2).await, two);
    assert_eq!(pull_ok(&t, "old/two", &d1).await, one);
    // Again: nothing left to do.
    let again = registry.encrypt_existing(&|_, _, _| {}).await.unwrap();
    assert_eq!((again.repositories, again.blobs, again.plaintext_removed), (0, 0, 0));
    t.server.stop().await;
}
