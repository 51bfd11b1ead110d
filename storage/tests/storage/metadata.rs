//! The metadata suite, run against every [`MetadataStore`] implementation.

use berth_oci::{Algorithm, Digest, DigestHasher, Reference, RepoName, Tag, UploadId};
use berth_storage::crypt::{Kek, Run, SealedBlob, UploadSealing};
use std::collections::BTreeMap;

use berth_storage::metadata::{
    AccessKeyRecord, BlobEntry, KeyRecord, KeyState, NewManifest, Page, PolicyRecord, PolicySet, PolicyTarget,
    RESOURCE_POLICY, RequiredContent, RetireRefused, SigningKeyRecord, UploadRecord, UserRecord,
};
use berth_storage::{Error, MetadataStore, PostgresStore, SqliteStore};

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}
fn tag(s: &str) -> Tag {
    s.parse().unwrap()
}
fn page(last: Option<&str>, limit: usize) -> Page {
    Page { last: last.map(str::to_owned), limit }
}

fn manifest(r: &RepoName, body: &str, blobs: Vec<RequiredContent>, tags: &[&str]) -> NewManifest {
    NewManifest {
        repo: r.clone(),
        digest: Digest::sha256_of(body.as_bytes()),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        artifact_type: Some("application/vnd.oci.image.config.v1+json".into()),
        content: body.as_bytes().to_vec(),
        subject: None,
        annotations: None,
        blobs,
        manifests: vec![],
        tags: tags.iter().map(|t| tag(t)).collect(),
    }
}

async fn blobs_and_links(store: &dyn MetadataStore) {
    let (a, b) = (repo("suite/a"), repo("suite/b"));
    let d = Digest::sha256_of(b"blob");
    assert_eq!(store.repo_blob(&a, &d).await.unwrap(), None);
    assert_eq!(store.any_blob(&d).await.unwrap(), None);
    store.link_blob(&a, &d, 4, true).await.unwrap();
    store.link_blob(&a, &d, 4, true).await.unwrap(); // idempotent
    assert_eq!(store.repo_blob(&a, &d).await.unwrap(), Some(4));
    assert_eq!(store.repo_blob(&b, &d).await.unwrap(), None, "links are per repository");
    assert_eq!(store.any_blob(&d).await.unwrap(), Some(4));
    assert!(store.unlink_blob(&a, &d).await.unwrap());
    assert!(!store.unlink_blob(&a, &d).await.unwrap());
    assert_eq!(store.repo_blob(&a, &d).await.unwrap(), None);
}

async fn manifests_tags_and_references(store: &dyn MetadataStore) {
    let r = repo("suite/m");
    let layer = Digest::sha256_of(b"layer");
    let body = r#"{"v": 1}"#;
    let need = vec![RequiredContent { digest: layer.clone(), size: 5 }];

    // A missing reference refuses the whole manifest.
    let err = store.put_manifest(&manifest(&r, body, need.clone(), &["latest"])).await.unwrap_err();
    assert!(matches!(err, Error::MissingReference(ref d) if *d == layer), "{err:?}");
    assert!(store.get_manifest(&r, &Reference::Tag(tag("latest"))).await.unwrap().is_none());

    // A size that disagrees with the stored blob is refused.
    store.link_blob(&r, &layer, 5, true).await.unwrap();
    let wrong = vec![RequiredContent { digest: layer.clone(), size: 6 }];
    assert!(matches!(store.put_manifest(&manifest(&r, body, wrong, &[])).await, Err(Error::ReferenceSize { .. })));

    let m = manifest(&r, body, need.clone(), &["latest", "v1"]);
    store.put_manifest(&m).await.unwrap();
    store.put_manifest(&m).await.unwrap(); // pushing again is fine
    let by_tag = store.get_manifest(&r, &Reference::Tag(tag("latest"))).await.unwrap().unwrap();
    assert_eq!(by_tag.content, body.as_bytes(), "byte-exact");
    assert_eq!(by_tag.digest, m.digest);
    let by_digest = store.get_manifest(&r, &Reference::Digest(m.digest.clone())).await.unwrap().unwrap();
    assert_eq!(by_digest, by_tag);

    // Moving a tag.
    let body2 = r#"{"v": 2}"#;
    let m2 = manifest(&r, body2, need, &["latest"]);
    store.put_manifest(&m2).await.unwrap();
    let moved = store.get_manifest(&r, &Reference::Tag(tag("latest"))).await.unwrap().unwrap();
    assert_eq!(moved.digest, m2.digest);

    // Tags sorted bytewise, paginated.
    store
        .put_manifest(&manifest(&r, body, vec![RequiredContent { digest: layer.clone(), size: 5 }], &["B", "a", "_z"]))
        .await
        .unwrap();
    let all = store.list_tags(&r, &page(None, 100)).await.unwrap().unwrap();
    assert_eq!(all, ["B", "_z", "a", "latest", "v1"]);
    assert_eq!(store.list_tags(&r, &page(Some("_z"), 2)).await.unwrap().unwrap(), ["a", "latest"]);
    assert_eq!(store.list_tags(&repo("suite/none"), &page(None, 10)).await.unwrap(), None);

    // Untag leaves the manifest; deleting the manifest takes its tags.
    assert!(store.delete_tag(&r, &tag("v1")).await.unwrap());
    assert!(!store.delete_tag(&r, &tag("v1")).await.unwrap());
    assert!(store.get_manifest(&r, &Reference::Digest(m.digest.clone())).await.unwrap().is_some());
    assert!(store.delete_manifest(&r, &m.digest).await.unwrap());
    assert!(!store.delete_manifest(&r, &m.digest).await.unwrap());
    assert_eq!(store.list_tags(&r, &page(None, 100)).await.unwrap().unwrap(), ["latest"]);
}

async fn index_children_and_referrers(store: &dyn MetadataStore) {
    let r = repo("suite/idx");
    let cfg = Digest::sha256_of(b"cfg");
    store.link_blob(&r, &cfg, 3, true).await.unwrap();
    let child = manifest(&r, r#"{"child":1}"#, vec![RequiredContent { digest: cfg.clone(), size: 3 }], &[]);
    let child_size = child.content.len() as u64;

    let mut index = manifest(&r, r#"{"index":1}"#, vec![], &["multi"]);
    index.media_type = "application/vnd.oci.image.index.v1+json".into();
    index.manifests = vec![RequiredContent { digest: child.digest.clone(), size: child_size }];
    assert!(matches!(store.put_manifest(&index).await, Err(Error::MissingReference(_))));
    store.put_manifest(&child).await.unwrap();
    store.put_manifest(&index).await.unwrap();

    // Referrers: a manifest whose subject does not exist yet is fine.
    let mut sig = manifest(&r, r#"{"sig":1}"#, vec![RequiredContent { digest: cfg.clone(), size: 3 }], &[]);
    sig.subject = Some(child.digest.clone());
    sig.artifact_type = Some("application/x.sig".into());
    sig.annotations = Some([("k".to_string(), "v".to_string())].into());
    let mut sbom = manifest(&r, r#"{"sbom":1}"#, vec![RequiredContent { digest: cfg, size: 3 }], &[]);
    sbom.subject = Some(child.digest.clone());
    sbom.artifact_type = Some("application/x.sbom".into());
    store.put_manifest(&sig).await.unwrap();
    store.put_manifest(&sbom).await.unwrap();
    let all = store.referrers(&r, &child.digest, None).await.unwrap();
    assert_eq!(all.len(), 2);
    let sigs = store.referrers(&r, &child.digest, Some("application/x.sig")).await.unwrap();
    assert_eq!(sigs.len(), 1);
    assert_eq!(sigs[0].digest, sig.digest);
    assert_eq!(sigs[0].annotations.as_ref().unwrap()["k"], "v");
    assert_eq!(sigs[0].size, sig.content.len() as u64);
    store.delete_manifest(&r, &sig.digest).await.unwrap();
    assert_eq!(store.referrers(&r, &child.digest, None).await.unwrap().len(), 1);
    assert!(store.referrers(&repo("suite/other"), &child.digest, None).await.unwrap().is_empty());
}

async fn catalog(store: &dyn MetadataStore) {
    let d = Digest::sha256_of(b"x");
    for name in ["cat/b", "cat/a", "cat/c/d"] {
        store.link_blob(&repo(name), &d, 1, true).await.unwrap();
    }
    let names = store.list_repositories(&page(Some("cat/"), 10)).await.unwrap();
    let ours: Vec<_> = names.iter().filter(|n| n.starts_with("cat/")).collect();
    assert_eq!(ours, ["cat/a", "cat/b", "cat/c/d"]);
    assert_eq!(store.list_repositories(&page(Some("cat/a"), 1)).await.unwrap(), ["cat/b"]);
}

async fn upload_sessions(store: &dyn MetadataStore) {
    let id: UploadId = uuid::Uuid::new_v4().to_string().parse().unwrap();
    let mut u = UploadRecord {
        id: id.clone(),
        repo: repo("suite/up"),
        offset: 0,
        hash_state: vec![1, 2, 3],
        parts: vec![],
        created_at: 100,
        updated_at: 100,
        sealing: None,
    };
    store.create_upload(&u).await.unwrap();
    assert_eq!(store.get_upload(&id).await.unwrap().unwrap(), u);

    // Compare-and-swap on the offset: exactly one of two writers at the same offset wins.
    let mut first = u.clone();
    first.offset = 10;
    first.parts = vec!["000000-a".into()];
    first.updated_at = 200;
    let mut second = u.clone();
    second.offset = 7;
    second.parts = vec!["000000-b".into()];
    assert!(store.advance_upload(&first, 0, 0).await.unwrap());
    assert!(!store.advance_upload(&second, 0, 0).await.unwrap());
    u = store.get_upload(&id).await.unwrap().unwrap();
    assert_eq!(u, first);

    assert_eq!(store.stale_uploads(150).await.unwrap(), vec![]);
    assert_eq!(store.stale_uploads(201).await.unwrap().len(), 1);
    assert!(store.delete_upload(&id).await.unwrap());
    assert!(!store.delete_upload(&id).await.unwrap());
    assert!(store.get_upload(&id).await.unwrap().is_none());
}

/// Racing writers end as in some serial order: one of many chunks at the same offset wins;
/// many pushes moving one tag leave it on one of the pushed manifests; identical pushes all
/// succeed.
async fn concurrent_writers(store: &dyn MetadataStore) {
    let id: UploadId = uuid::Uuid::new_v4().to_string().parse().unwrap();
    let start = UploadRecord {
        id: id.clone(),
        repo: repo("race/up"),
        offset: 0,
        hash_state: vec![],
        parts: vec![],
        created_at: 1,
        updated_at: 1,
        sealing: None,
    };
    store.create_upload(&start).await.unwrap();
    let attempts: Vec<UploadRecord> = (0..16u64)
        .map(|i| UploadRecord { offset: 10 + i, parts: vec![format!("000000-{i}")], ..start.clone() })
        .collect();
    let won = futures::future::join_all(attempts.iter().map(|u| store.advance_upload(u, 0, 0))).await;
    let winners: Vec<_> = won.into_iter().enumerate().filter(|(_, w)| *w.as_ref().unwrap()).map(|(i, _)| i).collect();
    assert_eq!(winners.len(), 1, "exactly one writer at offset 0 wins: {winners:?}");
    assert_eq!(store.get_upload(&id).await.unwrap().unwrap(), attempts[winners[0]]);

    let r = repo("race/tags");
    let layer = Digest::sha256_of(b"race-layer");
    store.link_blob(&r, &layer, 10, true).await.unwrap();
    let need = vec![RequiredContent { digest: layer, size: 10 }];
    let pushes: Vec<NewManifest> =
        (0..8).map(|i| manifest(&r, &format!("{{\"race\":{i}}}"), need.clone(), &["latest", "stable"])).collect();
    let same: Vec<NewManifest> = (0..8).map(|_| manifest(&r, r#"{"same":1}"#, need.clone(), &["same"])).collect();
    let results = futures::future::join_all(pushes.iter().chain(&same).map(|m| store.put_manifest(m))).await;
    for result in results {
        result.unwrap();
    }
    let latest = store.get_manifest(&r, &Reference::Tag(tag("latest"))).await.unwrap().unwrap();
    let stable = store.get_manifest(&r, &Reference::Tag(tag("stable"))).await.unwrap().unwrap();
    assert!(pushes.iter().any(|m| m.digest == latest.digest));
    assert_eq!(latest, stable, "both tags moved by the same (last) push");
    assert_eq!(store.get_manifest(&r, &Reference::Tag(tag("same"))).await.unwrap().unwrap().digest, same[0].digest);
}

fn sealed(key_name: &str, kek: &str, size: u64, object: &str) -> SealedBlob {
    SealedBlob {
        key_name: key_name.into(),
        object: object.into(),
        size,
        kek: kek.into(),
        wrapped: vec![7; 40],
        runs: vec![Run { first: 0, prefix: [3; 7] }, Run { first: 4, prefix: [5; 7] }],
    }
}

fn key_record(id: &str, state: KeyState) -> KeyRecord {
    let name = id.split('.').next().unwrap_or_default();
    KeyRecord {
        id: id.into(),
        name: name.into(),
        state,
        check_value: format!("cv-{id}"),
        created_at: 10,
        blobs: 0,
        uploads: 0,
    }
}

/// The key records whose name is `name`, in the store's order.
async fn keys_named(store: &dyn MetadataStore, name: &str) -> Vec<KeyRecord> {
    store.keys(true).await.unwrap().into_iter().filter(|k| k.name == name).collect()
}

/// A repository's key is fixed at creation; a plaintext one may be given a key once.
async fn repository_key_names(store: &dyn MetadataStore) {
    let (enc, plain, late) = (repo("rk/enc"), repo("rk/plain"), repo("rk/late"));
    let alpha = Some("alpha".to_string());
    assert_eq!(store.repository_key(&enc).await.unwrap(), None, "no repository yet");
    assert_eq!(store.create_repository(&enc, Some("alpha")).await.unwrap(), alpha);
    assert_eq!(store.create_repository(&enc, Some("beta")).await.unwrap(), alpha, "fixed at creation");
    assert_eq!(store.create_repository(&enc, None).await.unwrap(), alpha);
    assert_eq!(store.repository_key(&enc).await.unwrap(), Some(alpha.clone()));
    assert_eq!(store.create_repository(&plain, None).await.unwrap(), None);
    assert_eq!(store.create_repository(&plain, Some("alpha")).await.unwrap(), None, "plaintext stays plaintext");
    assert_eq!(store.repository_key(&plain).await.unwrap(), Some(None));

    // A repository made by its first link has no key; it can be given one, once.
    store.link_blob(&late, &Digest::sha256_of(b"rk"), 2, true).await.unwrap();
    assert_eq!(store.repository_key(&late).await.unwrap(), Some(None));
    assert!(store.set_repository_key(&late, "alpha").await.unwrap());
    assert!(!store.set_repository_key(&late, "beta").await.unwrap(), "only from no key");
    assert!(!store.set_repository_key(&enc, "beta").await.unwrap());
    assert!(!store.set_repository_key(&repo("rk/none"), "alpha").await.unwrap(), "no such repository");
    assert_eq!(store.repository_key(&late).await.unwrap(), Some(alpha.clone()));
    assert_eq!(store.repository_key(&repo("rk/none")).await.unwrap(), None, "not created by the attempt");

    let ours: Vec<_> =
        store.repository_keys().await.unwrap().into_iter().filter(|(r, _)| r.as_str().starts_with("rk/")).collect();
    assert_eq!(ours, [(enc, alpha.clone()), (late, alpha), (plain, None)]);

    // Racing creations with different keys: one wins, and every caller is told its key.
    let race = repo("rk/race");
    let names: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
    let got = futures::future::join_all(names.iter().map(|k| store.create_repository(&race, Some(k)))).await;
    let got: Vec<Option<String>> = got.into_iter().map(Result::unwrap).collect();
    let winner = store.repository_key(&race).await.unwrap().unwrap();
    assert!(winner.as_ref().is_some_and(|w| names.contains(w)));
    assert!(got.iter().all(|k| *k == winner), "{got:?}");

    // Racing key assignments: exactly one wins.
    let plain_race = repo("rk/plain-race");
    store.create_repository(&plain_race, None).await.unwrap();
    let won = futures::future::join_all(names.iter().map(|k| store.set_repository_key(&plain_race, k))).await;
    assert_eq!(won.into_iter().filter(|w| *w.as_ref().unwrap()).count(), 1);
}

/// Sealed copies: one per key name, read through the repository's key.
async fn blob_copies(store: &dyn MetadataStore) {
    let d = Digest::sha256_of(b"copies");
    let (enc, other, plain, nocopy) = (repo("bc/enc"), repo("bc/other"), repo("bc/plain"), repo("bc/nocopy"));
    store.create_repository(&enc, Some("ka")).await.unwrap();
    store.create_repository(&other, Some("kb")).await.unwrap();
    store.create_repository(&plain, None).await.unwrap();
    store.create_repository(&nocopy, Some("kc")).await.unwrap();

    assert_eq!(store.blob_copy(&d, "ka").await.unwrap(), None);
    let a = sealed("ka", "ka.1", 6, "obj-a");
    assert!(store.add_blob_copy(&d, &a).await.unwrap());
    assert!(!store.add_blob_copy(&d, &sealed("ka", "ka.1", 6, "obj-a2")).await.unwrap(), "one copy per key name");
    assert_eq!(store.blob_copy(&d, "ka").await.unwrap(), Some(a.clone()), "the first copy stays");
    let b = sealed("kb", "kb.1", 6, "obj-b");
    assert!(store.add_blob_copy(&d, &b).await.unwrap(), "another key name has its own copy");
    assert_eq!(store.blob_copy(&d, "kb").await.unwrap(), Some(b));
    assert_eq!(store.blob_copy(&d, "kc").await.unwrap(), None);

    // A copy alone links the blob nowhere.
    assert_eq!(store.any_blob(&d).await.unwrap(), None);
    assert_eq!(store.repo_blob_entry(&enc, &d).await.unwrap(), None);

    store.link_blob(&enc, &d, 6, false).await.unwrap();
    store.link_blob(&plain, &d, 6, true).await.unwrap();
    store.link_blob(&nocopy, &d, 6, false).await.unwrap();
    let entry =
        |key: Option<&str>, copy: Option<SealedBlob>| BlobEntry { size: 6, key_name: key.map(Into::into), copy };
    assert_eq!(store.repo_blob_entry(&enc, &d).await.unwrap(), Some(entry(Some("ka"), Some(a))));
    assert_eq!(store.repo_blob_entry(&plain, &d).await.unwrap(), Some(entry(None, None)), "plaintext repository");
    assert_eq!(store.repo_blob_entry(&nocopy, &d).await.unwrap(), Some(entry(Some("kc"), None)), "no copy yet");
    assert_eq!(store.repo_blob_entry(&other, &d).await.unwrap(), None, "not linked there");
    assert_eq!(store.repo_blob(&enc, &d).await.unwrap(), Some(6));

    // Every blob linked to a repository, in digest order.
    let e = Digest::sha256_of(b"copies-2");
    store.link_blob(&enc, &e, 8, false).await.unwrap();
    let mut want = vec![(d.clone(), 6), (e, 8)];
    want.sort_by_key(|(digest, _)| digest.to_string());
    assert_eq!(store.repository_blobs(&enc).await.unwrap(), want);
    assert_eq!(store.repository_blobs(&other).await.unwrap(), []);
    assert_eq!(store.repository_blobs(&repo("bc/none")).await.unwrap(), []);

    // Racing copies for one key name: exactly one is recorded, and it is the one that won.
    let f = Digest::sha256_of(b"copies-race");
    let copies: Vec<SealedBlob> = (0..8).map(|i| sealed("ka", "ka.1", 3, &format!("obj-{i}"))).collect();
    let won = futures::future::join_all(copies.iter().map(|c| store.add_blob_copy(&f, c))).await;
    let winners: Vec<usize> =
        won.into_iter().enumerate().filter(|(_, w)| *w.as_ref().unwrap()).map(|(i, _)| i).collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(store.blob_copy(&f, "ka").await.unwrap().as_ref(), Some(&copies[winners[0]]));
}

/// Rotation: finding the copies a KEK wraps and re-wrapping each, compare-and-swap on the old KEK.
async fn rewrapping(store: &dyn MetadataStore) {
    let mut ds: Vec<Digest> = (0..3).map(|i| Digest::sha256_of(format!("rewrap-{i}").as_bytes())).collect();
    ds.sort_by_key(Digest::to_string);
    store.add_blob_copy(&ds[0], &sealed("rw", "rw.1", 1, "o0")).await.unwrap();
    store.add_blob_copy(&ds[1], &sealed("rw", "rw.1", 1, "o1")).await.unwrap();
    store.add_blob_copy(&ds[2], &sealed("rw", "rw.2", 1, "o2")).await.unwrap();
    store.add_blob_copy(&ds[2], &sealed("rw-other", "rw.1", 1, "o3")).await.unwrap();

    let wrapped = store.copies_wrapped_by("rw.1", 10).await.unwrap();
    let listed: Vec<_> = wrapped.iter().map(|(d, c)| (d.clone(), c.object.as_str())).collect();
    assert_eq!(listed, [(ds[0].clone(), "o0"), (ds[1].clone(), "o1"), (ds[2].clone(), "o3")]);
    assert_eq!(wrapped[0].1, sealed("rw", "rw.1", 1, "o0"));
    assert_eq!(store.copies_wrapped_by("rw.1", 2).await.unwrap().len(), 2, "limited");
    assert_eq!(store.copies_wrapped_by("rw.9", 10).await.unwrap(), []);

    assert!(store.rewrap_copy(&ds[0], "rw", "rw.1", "rw.2", &[9; 40]).await.unwrap());
    assert!(!store.rewrap_copy(&ds[0], "rw", "rw.1", "rw.3", &[8; 40]).await.unwrap(), "rw.1 no longer wraps it");
    assert!(!store.rewrap_copy(&ds[0], "nope", "rw.2", "rw.3", &[8; 40]).await.unwrap(), "no such copy");
    let copy = store.blob_copy(&ds[0], "rw").await.unwrap().unwrap();
    assert_eq!(copy, SealedBlob { kek: "rw.2".into(), wrapped: vec![9; 40], ..sealed("rw", "rw.1", 1, "o0") });
    let left: Vec<_> = store.copies_wrapped_by("rw.1", 10).await.unwrap().into_iter().map(|(d, _)| d).collect();
    assert_eq!(left, [ds[1].clone(), ds[2].clone()]);
    assert_eq!(store.copies_wrapped_by("rw.2", 10).await.unwrap().len(), 2);

    // Racing rewraps of one copy from the same old KEK: exactly one applies.
    let news: Vec<String> = (0..8).map(|i| format!("rw.race{i}")).collect();
    let won =
        futures::future::join_all(news.iter().map(|n| store.rewrap_copy(&ds[1], "rw", "rw.1", n, &[1; 40]))).await;
    assert_eq!(won.into_iter().filter(|w| *w.as_ref().unwrap()).count(), 1);
}

/// Key records: one active per name, counts of what each wraps, and when retiring is refused.
async fn key_records(store: &dyn MetadataStore) {
    assert!(store.add_key(&key_record("x.1", KeyState::Active)).await.unwrap());
    assert!(!store.add_key(&key_record("x.1", KeyState::Inactive)).await.unwrap(), "the id exists");
    assert!(store.add_key(&key_record("x.2", KeyState::Inactive)).await.unwrap());
    assert!(store.add_key(&key_record("y.1", KeyState::Active)).await.unwrap(), "another name has its own");
    let x = keys_named(store, "x").await;
    assert_eq!(x, [key_record("x.1", KeyState::Active), key_record("x.2", KeyState::Inactive)]);

    store.activate_key("x.2").await.unwrap();
    let states = |keys: Vec<KeyRecord>| keys.into_iter().map(|k| (k.id, k.state)).collect::<Vec<_>>();
    assert_eq!(
        states(keys_named(store, "x").await),
        [("x.1".into(), KeyState::Inactive), ("x.2".into(), KeyState::Active)]
    );
    assert_eq!(states(keys_named(store, "y").await), [("y.1".into(), KeyState::Active)], "other names untouched");
    store.activate_key("x.2").await.unwrap(); // idempotent
    assert_eq!(keys_named(store, "x").await.iter().filter(|k| k.state == KeyState::Active).count(), 1);
    assert!(matches!(store.activate_key("x.9").await, Err(Error::NotFound)));

    // What a key wraps: blob copies, and upload sessions (by their sealing's KEK).
    let (d1, d2) = (Digest::sha256_of(b"keys-1"), Digest::sha256_of(b"keys-2"));
    store.add_blob_copy(&d1, &sealed("x", "x.1", 1, "k1")).await.unwrap();
    store.add_blob_copy(&d2, &sealed("x", "x.1", 1, "k2")).await.unwrap();
    let id: UploadId = uuid::Uuid::new_v4().to_string().parse().unwrap();
    let kek = Kek::from_raw("x.1", [1; 32]).unwrap();
    let sealing = UploadSealing::start(&kek, "x", &id, &DigestHasher::new(Algorithm::Sha256)).unwrap();
    let upload = UploadRecord {
        id: id.clone(),
        repo: repo("keys/up"),
        offset: 0,
        hash_state: vec![],
        parts: vec![],
        created_at: 1,
        updated_at: 1,
        sealing: Some(sealing.clone()),
    };
    store.create_upload(&upload).await.unwrap();
    let x = keys_named(store, "x").await;
    assert_eq!((x[0].id.as_str(), x[0].blobs, x[0].uploads), ("x.1", 2, 1));
    assert_eq!((x[1].id.as_str(), x[1].blobs, x[1].uploads), ("x.2", 0, 0));

    assert_eq!(store.retire_key("x.9").await.unwrap(), Err(RetireRefused::Unknown("x.9".into())));
    assert_eq!(store.retire_key("x.2").await.unwrap(), Err(RetireRefused::Active("x.2".into())));
    assert_eq!(
        store.retire_key("x.1").await.unwrap(),
        Err(RetireRefused::InUse { id: "x.1".into(), blobs: 2, uploads: 1 })
    );

    // Rotated: the copies re-wrapped, the upload's sealing moved to the new KEK.
    for d in [&d1, &d2] {
        assert!(store.rewrap_copy(d, "x", "x.1", "x.2", &[2; 40]).await.unwrap());
    }
    assert_eq!(
        store.retire_key("x.1").await.unwrap(),
        Err(RetireRefused::InUse { id: "x.1".into(), blobs: 0, uploads: 1 })
    );
    let moved =
        UploadRecord { updated_at: 2, sealing: Some(UploadSealing { kek: "x.2".into(), ..sealing }), ..upload.clone() };
    assert!(store.advance_upload(&moved, 0, 0).await.unwrap());
    assert_eq!(store.retire_key("x.1").await.unwrap(), Ok(()));
    let x = keys_named(store, "x").await;
    assert_eq!((x[0].id.as_str(), x[0].state, x[0].blobs, x[0].uploads), ("x.1", KeyState::Retired, 0, 0));
    assert_eq!((x[1].id.as_str(), x[1].state, x[1].blobs, x[1].uploads), ("x.2", KeyState::Active, 2, 1));
    assert!(store.delete_upload(&id).await.unwrap());
    assert_eq!(keys_named(store, "x").await[1].uploads, 0);

    // Racing activations of one name (and retirements of its keys): all succeed, and exactly
    // one key of the name ends active.
    for i in 0..8 {
        assert!(store.add_key(&key_record(&format!("z.{i}"), KeyState::Inactive)).await.unwrap());
    }
    let ids: Vec<String> = (0..8).map(|i| format!("z.{i}")).collect();
    let activations = futures::future::join_all(ids.iter().map(|id| store.activate_key(id)));
    let retirements = futures::future::join_all(ids.iter().map(|id| store.retire_key(id)));
    let (activated, retired) = futures::future::join(activations, retirements).await;
    for a in activated {
        a.unwrap();
    }
    for r in retired {
        assert!(matches!(r.unwrap(), Ok(()) | Err(RetireRefused::Active(_))));
    }
    // In any serial order, a retirement never replaces the active key (it refuses it), so one
    // stays active: a retirement that overwrote an activation it did not see would leave none.
    let z = keys_named(store, "z").await;
    assert_eq!(z.iter().filter(|k| k.state == KeyState::Active).count(), 1, "{z:?}");
}

/// Plaintext objects become redundant once every repository linking the blob reads a sealed copy.
async fn redundant_plaintext(store: &dyn MetadataStore) {
    let (pa, pb) = (repo("pt/a"), repo("pt/b"));
    let (d, e) = (Digest::sha256_of(b"pt-1"), Digest::sha256_of(b"pt-2"));
    store.link_blob(&pa, &d, 5, true).await.unwrap();
    store.link_blob(&pa, &e, 5, true).await.unwrap();
    store.link_blob(&pb, &e, 5, true).await.unwrap();
    let redundant = || async { store.redundant_plaintext(10_000).await.unwrap() };
    assert!(!redundant().await.contains(&d));

    // A key alone is not enough: the repository needs its copy.
    assert!(store.set_repository_key(&pa, "pk").await.unwrap());
    assert!(!redundant().await.contains(&d));
    assert!(!store.drop_plaintext(&d).await.unwrap());
    store.add_blob_copy(&d, &sealed("pk", "pk.1", 5, "pd")).await.unwrap();
    store.add_blob_copy(&e, &sealed("pk", "pk.1", 5, "pe")).await.unwrap();
    let now = redundant().await;
    assert!(now.contains(&d), "{now:?}");
    assert!(!now.contains(&e), "still linked from a plaintext repository");
    assert!(!store.drop_plaintext(&e).await.unwrap());
    assert_eq!(store.redundant_plaintext(1).await.unwrap().len(), 1, "limited");

    assert!(store.drop_plaintext(&d).await.unwrap());
    assert!(!store.drop_plaintext(&d).await.unwrap(), "already gone");
    assert!(!redundant().await.contains(&d));
    // The blob itself stays readable through its copy.
    assert_eq!(store.repo_blob_entry(&pa, &d).await.unwrap().unwrap().copy.unwrap().object, "pd");

    // Linking without plaintext leaves it dropped; a link that stored plaintext flags it again
    // (and it stays flagged, whatever links follow), needed while a plaintext repository links it.
    store.link_blob(&pa, &d, 5, false).await.unwrap();
    assert!(!redundant().await.contains(&d));
    let pc = repo("pt/c");
    store.link_blob(&pc, &d, 5, true).await.unwrap();
    store.link_blob(&pa, &d, 5, false).await.unwrap();
    assert!(!redundant().await.contains(&d));
    assert!(!store.drop_plaintext(&d).await.unwrap());
    assert!(store.set_repository_key(&pc, "pk").await.unwrap());
    assert!(redundant().await.contains(&d), "flagged again, and redundant again");
    assert!(store.drop_plaintext(&d).await.unwrap());

    // A blob known only through its copy has no plaintext object.
    let f = Digest::sha256_of(b"pt-3");
    store.add_blob_copy(&f, &sealed("pk", "pk.1", 5, "pf")).await.unwrap();
    store.link_blob(&pa, &f, 5, false).await.unwrap();
    assert!(!redundant().await.contains(&f));
    assert!(!store.drop_plaintext(&f).await.unwrap());

    // A blob no repository links is not redundant here (collecting it is someone else's job).
    let g = Digest::sha256_of(b"pt-4");
    store.link_blob(&pa, &g, 5, true).await.unwrap();
    store.add_blob_copy(&g, &sealed("pk", "pk.1", 5, "pg")).await.unwrap();
    assert!(redundant().await.contains(&g));
    store.unlink_blob(&pa, &g).await.unwrap();
    assert!(!redundant().await.contains(&g));
    assert!(!store.drop_plaintext(&g).await.unwrap());
    assert!(!store.drop_plaintext(&Digest::sha256_of(b"pt-none")).await.unwrap(), "unknown blob");

    // Racing links from a plaintext repository and drops: when the drop commits first, the link
    // flags the plaintext again; when the link does, the drop sees it and changes nothing.
    for i in 0..10 {
        let h = Digest::sha256_of(format!("pt-race-{i}").as_bytes());
        store.link_blob(&pa, &h, 5, true).await.unwrap();
        store.add_blob_copy(&h, &sealed("pk", "pk.1", 5, "ph")).await.unwrap();
        let late = repo(&format!("pt/late-{i}"));
        let (linked, dropped) =
            futures::future::join(store.link_blob(&late, &h, 5, true), store.drop_plaintext(&h)).await;
        linked.unwrap();
        dropped.unwrap();
        assert!(!redundant().await.contains(&h), "needed by {late}");
        assert!(!store.drop_plaintext(&h).await.unwrap());
        // In either order the plaintext is flagged at the end: once the late repository reads
        // the copy too, it is redundant (a drop that missed the link would have cleared it).
        assert!(store.set_repository_key(&late, "pk").await.unwrap());
        assert!(store.drop_plaintext(&h).await.unwrap(), "the plaintext flag survived the race");
    }
}

/// An encrypted upload's sealing state goes through create, get, advance and the stale listing byte-exact.
async fn sealed_upload_sessions(store: &dyn MetadataStore) {
    let id: UploadId = uuid::Uuid::new_v4().to_string().parse().unwrap();
    let kek = Kek::from_raw("su.1", [4; 32]).unwrap();
    let mut hasher = DigestHasher::new(Algorithm::Sha256);
    let sealing = UploadSealing::start(&kek, "su", &id, &hasher).unwrap();
    let u = UploadRecord {
        id: id.clone(),
        repo: repo("suite/sealed-up"),
        offset: 0,
        hash_state: vec![],
        parts: vec![],
        created_at: 300,
        updated_at: 300,
        sealing: Some(sealing.clone()),
    };
    store.create_upload(&u).await.unwrap();
    let back = store.get_upload(&id).await.unwrap().unwrap();
    assert_eq!(back, u);
    let open = back.sealing.as_ref().unwrap().open(&kek, &id, 0).unwrap();

    hasher.update(b"hello");
    let next = sealing.advanced(&open, &id, 5, &hasher, &[Run { first: 0, prefix: [4; 7] }], b"hello").unwrap();
    let advanced =
        UploadRecord { offset: 5, parts: vec!["000000-a".into()], updated_at: 400, sealing: Some(next), ..u.clone() };
    assert!(store.advance_upload(&advanced, 0, 0).await.unwrap());
    assert!(!store.advance_upload(&u, 0, 0).await.unwrap(), "compare-and-swap as before");
    let back = store.get_upload(&id).await.unwrap().unwrap();
    assert_eq!(back, advanced);
    let reopened = back.sealing.as_ref().unwrap().open(&kek, &id, 5).unwrap();
    assert_eq!(&reopened.tail[..], b"hello");

    let stale = store.stale_uploads(401).await.unwrap();
    assert_eq!(stale.iter().find(|s| s.id == id), Some(&advanced));

    // Back to no sealing (a plaintext session) clears it.
    let plain =
        UploadRecord { offset: 6, parts: vec!["000000-a".into(), "000001-b".into()], sealing: None, ..advanced };
    assert!(store.advance_upload(&plain, 5, 1).await.unwrap());
    assert_eq!(store.get_upload(&id).await.unwrap().unwrap(), plain);
    assert!(store.delete_upload(&id).await.unwrap());
}

fn user(name: &str) -> UserRecord {
    UserRecord {
        name: name.into(),
        password_hash: Some(format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${name}")),
        disabled: false,
        created_at: 50,
    }
}

fn access_key(id: &str, user: &str) -> AccessKeyRecord {
    AccessKeyRecord { id: id.into(), user: user.into(), secret_digest: hex_digest(id), disabled: false, created_at: 60 }
}

/// A stand-in for the SHA-256 hex of a key's secret.
fn hex_digest(seed: &str) -> String {
    Digest::sha256_of(seed.as_bytes()).to_string().trim_start_matches("sha256:").to_owned()
}

/// What a policy says and where it is, without its timestamp.
fn docs(policies: &[PolicyRecord]) -> Vec<(PolicyTarget, &str, &str)> {
    policies.iter().map(|p| (p.target.clone(), p.name.as_str(), p.document.as_str())).collect()
}

fn user_target(name: &str) -> PolicyTarget {
    PolicyTarget::User(name.into())
}

fn key_target(id: &str) -> PolicyTarget {
    PolicyTarget::AccessKey(id.into())
}

fn repo_target(name: &str) -> PolicyTarget {
    PolicyTarget::Repository(repo(name))
}

fn tags_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Users: created once, disabled, re-passworded, listed by bytes, deleted with everything
/// hanging off them.
async fn users(store: &dyn MetadataStore) {
    let (alice, bob, zed) = (user("au/alice"), user("au/bob"), user("au/Zed"));
    for u in [&bob, &alice, &zed] {
        assert!(store.create_user(u).await.unwrap());
    }
    assert!(!store.create_user(&UserRecord { password_hash: None, ..alice.clone() }).await.unwrap(), "name taken");
    assert_eq!(store.user("au/alice").await.unwrap(), Some(alice.clone()), "the first one stays");
    assert_eq!(store.user("au/none").await.unwrap(), None);
    let ours = |all: Vec<UserRecord>| all.into_iter().filter(|u| u.name.starts_with("au/")).collect::<Vec<_>>();
    assert_eq!(ours(store.users().await.unwrap()), [zed.clone(), alice.clone(), bob.clone()], "by bytes");
    assert!(!format!("{alice:?}").contains("argon2"), "a password hash never reaches a log line");

    assert!(store.set_user_disabled("au/alice", true).await.unwrap());
    assert!(store.user("au/alice").await.unwrap().unwrap().disabled);
    assert!(!store.user("au/bob").await.unwrap().unwrap().disabled, "only that user");
    assert!(store.set_user_disabled("au/alice", false).await.unwrap());
    assert!(!store.user("au/alice").await.unwrap().unwrap().disabled);
    assert!(!store.set_user_disabled("au/none", true).await.unwrap());

    assert!(store.set_user_password("au/alice", Some("$argon2id$new")).await.unwrap());
    assert_eq!(store.user("au/alice").await.unwrap().unwrap().password_hash.as_deref(), Some("$argon2id$new"));
    assert!(store.set_user_password("au/alice", None).await.unwrap(), "access keys only");
    assert_eq!(store.user("au/alice").await.unwrap().unwrap().password_hash, None);
    assert!(!store.set_user_password("au/none", Some("$argon2id$x")).await.unwrap());
    assert!(store.user("au/none").await.unwrap().is_none(), "not created by the attempt");

    // Deleting a user takes its keys and its and its keys' policies, and nobody else's.
    let (ka, kb) = (access_key("AU-ALICE-1", "au/alice"), access_key("AU-BOB-1", "au/bob"));
    assert!(store.create_access_key(&ka).await.unwrap());
    assert!(store.create_access_key(&kb).await.unwrap());
    for target in [user_target("au/alice"), key_target("AU-ALICE-1"), user_target("au/bob"), key_target("AU-BOB-1")] {
        assert!(store.put_policy(&target, "inline", "{}").await.unwrap());
    }
    assert!(store.delete_user("au/alice").await.unwrap());
    assert!(!store.delete_user("au/alice").await.unwrap(), "already gone");
    assert!(store.user("au/alice").await.unwrap().is_none());
    assert!(store.access_key("AU-ALICE-1").await.unwrap().is_none());
    assert!(store.access_keys(Some("au/alice")).await.unwrap().is_empty());
    assert!(store.policies(&user_target("au/alice")).await.unwrap().is_empty());
    assert!(store.policies(&key_target("AU-ALICE-1")).await.unwrap().is_empty());
    assert_eq!(store.access_key("AU-BOB-1").await.unwrap(), Some(kb));
    assert_eq!(store.policies(&user_target("au/bob")).await.unwrap().len(), 1);
    assert_eq!(store.policies(&key_target("AU-BOB-1")).await.unwrap().len(), 1);

    // A new user of the same name starts with nothing.
    assert!(store.create_user(&alice).await.unwrap());
    assert!(store.access_keys(Some("au/alice")).await.unwrap().is_empty());
    assert!(store.policies(&user_target("au/alice")).await.unwrap().is_empty());
    assert!(!store.put_policy(&key_target("AU-ALICE-1"), "inline", "{}").await.unwrap(), "its old key is gone");
}

/// Access keys: only for an existing user, unique ids, listed by user then id.
async fn access_keys(store: &dyn MetadataStore) {
    assert!(!store.create_access_key(&access_key("AK-NOBODY", "ak/nobody")).await.unwrap(), "no such user");
    assert!(store.access_key("AK-NOBODY").await.unwrap().is_none());
    for name in ["ak/b", "ak/a"] {
        assert!(store.create_user(&user(name)).await.unwrap());
    }
    let keys = [access_key("AK-B2", "ak/a"), access_key("AK-A1", "ak/b"), access_key("AK-A2", "ak/a")];
    for k in &keys {
        assert!(store.create_access_key(k).await.unwrap());
    }
    assert!(!store.create_access_key(&access_key("AK-A1", "ak/a")).await.unwrap(), "the id is taken");
    assert_eq!(store.access_key("AK-A1").await.unwrap().unwrap().user, "ak/b", "the first one stays");
    assert_eq!(store.access_key("AK-B2").await.unwrap(), Some(keys[0].clone()));

    let ids = |all: Vec<AccessKeyRecord>| {
        all.into_iter().filter(|k| k.id.starts_with("AK-")).map(|k| (k.user, k.id)).collect::<Vec<_>>()
    };
    let pair = |u: &str, id: &str| (u.to_string(), id.to_string());
    assert_eq!(ids(store.access_keys(Some("ak/a")).await.unwrap()), [pair("ak/a", "AK-A2"), pair("ak/a", "AK-B2")]);
    assert_eq!(
        ids(store.access_keys(None).await.unwrap()),
        [pair("ak/a", "AK-A2"), pair("ak/a", "AK-B2"), pair("ak/b", "AK-A1")],
        "by user, then id"
    );
    assert!(store.access_keys(Some("ak/none")).await.unwrap().is_empty());

    assert!(store.set_access_key_disabled("AK-A2", true).await.unwrap());
    assert!(store.access_key("AK-A2").await.unwrap().unwrap().disabled);
    assert!(!store.access_key("AK-B2").await.unwrap().unwrap().disabled, "only that key");
    assert!(store.set_access_key_disabled("AK-A2", false).await.unwrap());
    assert!(!store.access_key("AK-A2").await.unwrap().unwrap().disabled);
    assert!(!store.set_access_key_disabled("AK-NONE", true).await.unwrap());

    // Deleting a key takes its policies; its user and the user's policies stay.
    assert!(store.put_policy(&key_target("AK-A2"), "narrow", "{}").await.unwrap());
    assert!(store.put_policy(&key_target("AK-B2"), "narrow", "{}").await.unwrap());
    assert!(store.put_policy(&user_target("ak/a"), "wide", "{}").await.unwrap());
    assert!(store.delete_access_key("AK-A2").await.unwrap());
    assert!(!store.delete_access_key("AK-A2").await.unwrap());
    assert!(store.access_key("AK-A2").await.unwrap().is_none());
    assert!(store.policies(&key_target("AK-A2")).await.unwrap().is_empty());
    assert_eq!(store.policies(&key_target("AK-B2")).await.unwrap().len(), 1);
    assert_eq!(store.policies(&user_target("ak/a")).await.unwrap().len(), 1);
    assert_eq!(ids(store.access_keys(Some("ak/a")).await.unwrap()), [pair("ak/a", "AK-B2")]);
    // The id may be used again, and starts with no policies.
    assert!(store.create_access_key(&access_key("AK-A2", "ak/b")).await.unwrap());
    assert!(store.policies(&key_target("AK-A2")).await.unwrap().is_empty());
}

/// Policies on every kind of target: stored, replaced, listed by name, deleted.
async fn policies(store: &dyn MetadataStore) {
    assert!(!store.put_policy(&user_target("po/nobody"), "p", "{}").await.unwrap(), "no such user");
    assert!(!store.put_policy(&key_target("PO-NONE"), "p", "{}").await.unwrap(), "no such key");
    assert!(store.policies(&user_target("po/nobody")).await.unwrap().is_empty());
    assert!(store.policies(&key_target("PO-NONE")).await.unwrap().is_empty());

    assert!(store.create_user(&user("po/u")).await.unwrap());
    assert!(store.create_access_key(&access_key("PO-K", "po/u")).await.unwrap());
    let later = repo("po/not-pushed-yet");
    let targets =
        [user_target("po/u"), key_target("PO-K"), PolicyTarget::Repository(later.clone()), PolicyTarget::Registry];
    for target in &targets {
        let name = match target {
            PolicyTarget::User(_) | PolicyTarget::AccessKey(_) => "second",
            PolicyTarget::Repository(_) | PolicyTarget::Registry => RESOURCE_POLICY,
        };
        assert!(store.put_policy(target, name, r#"{"v":1}"#).await.unwrap(), "{target:?}");
        assert!(store.put_policy(target, name, r#"{"v":2}"#).await.unwrap(), "replaced: {target:?}");
        let stored = store.policies(target).await.unwrap();
        assert_eq!(docs(&stored), [(target.clone(), name, r#"{"v":2}"#)]);
        assert!(stored[0].updated_at > 0);
    }
    assert_eq!(store.repository_key(&later).await.unwrap(), None, "the policy does not create the repository");

    // Several per user or key, by name (bytes); each target's list is its own.
    assert!(store.put_policy(&user_target("po/u"), "First", r#"{"f":1}"#).await.unwrap());
    assert!(store.put_policy(&user_target("po/u"), "first", r#"{"f":2}"#).await.unwrap());
    let u = user_target("po/u");
    assert_eq!(
        docs(&store.policies(&u).await.unwrap()),
        [(u.clone(), "First", r#"{"f":1}"#), (u.clone(), "first", r#"{"f":2}"#), (u.clone(), "second", r#"{"v":2}"#)]
    );
    assert_eq!(store.policies(&key_target("PO-K")).await.unwrap().len(), 1);
    assert!(store.policies(&repo_target("po/not-pushed")).await.unwrap().is_empty(), "exact names only");

    for target in &targets {
        let all = store.policies(target).await.unwrap();
        for p in &all {
            assert!(store.delete_policy(target, &p.name).await.unwrap());
            assert!(!store.delete_policy(target, &p.name).await.unwrap(), "already gone");
        }
        assert!(store.policies(target).await.unwrap().is_empty());
    }
    assert!(!store.delete_policy(&user_target("po/nobody"), "p").await.unwrap());
    assert!(store.user("po/u").await.unwrap().is_some(), "deleting policies leaves their owner");
}

/// One read gives a request exactly its identity's policies, its repository's and the
/// registry's, and the repository's tags: never another user's, key's or repository's.
async fn policies_for_request(store: &dyn MetadataStore) {
    for name in ["pr/alice", "pr/bob", "pr/shadow"] {
        assert!(store.create_user(&user(name)).await.unwrap());
    }
    assert!(store.create_access_key(&access_key("PR-ALICE", "pr/alice")).await.unwrap());
    assert!(store.create_access_key(&access_key("PR-BOB", "pr/bob")).await.unwrap());
    let puts = [
        (user_target("pr/alice"), "a2"),
        (user_target("pr/alice"), "a1"),
        (user_target("pr/bob"), "b1"),
        (user_target("pr/shadow"), "s1"),
        (key_target("PR-ALICE"), "ka"),
        (key_target("PR-BOB"), "kb"),
        (repo_target("pr/one"), RESOURCE_POLICY),
        (repo_target("pr/one/sub"), RESOURCE_POLICY),
        (repo_target("pr/two"), RESOURCE_POLICY),
        (PolicyTarget::Registry, RESOURCE_POLICY),
    ];
    for (target, name) in &puts {
        let document = format!("{target:?}/{name}");
        assert!(store.put_policy(target, name, &document).await.unwrap());
    }
    let one_tags = tags_of(&[("team", "a"), ("env", "prod")]);
    store.tag_repository(&repo("pr/one"), &one_tags, &[]).await.unwrap();
    store.tag_repository(&repo("pr/one/sub"), &tags_of(&[("team", "sub")]), &[]).await.unwrap();
    store.tag_repository(&repo("pr/two"), &tags_of(&[("team", "b")]), &[]).await.unwrap();

    // The expected set, from (target, name) pairs: documents are "<target>/<name>".
    let expect = |identity: &[(PolicyTarget, &str)], resource: &[(PolicyTarget, &str)], tags: &BTreeMap<_, _>| {
        let names = |list: &[(PolicyTarget, &str)]| {
            list.iter().map(|(t, n)| (t.clone(), n.to_string(), format!("{t:?}/{n}"))).collect::<Vec<_>>()
        };
        (names(identity), names(resource), tags.clone())
    };
    let got = |set: PolicySet| {
        let list = |l: &[PolicyRecord]| {
            l.iter().map(|p| (p.target.clone(), p.name.clone(), p.document.clone())).collect::<Vec<_>>()
        };
        (list(&set.identity), list(&set.resource), set.resource_tags)
    };
    let ask = |u: Option<&'static str>, k: Option<&'static str>, r: Option<&'static str>| async move {
        got(store.policies_for_request(u, k, r.map(repo).as_ref()).await.unwrap())
    };
    let (alice, bob) = (user_target("pr/alice"), user_target("pr/bob"));
    let (alice_key, bob_key) = (key_target("PR-ALICE"), key_target("PR-BOB"));
    let (one, two, registry) = (repo_target("pr/one"), repo_target("pr/two"), PolicyTarget::Registry);
    let none = BTreeMap::new();

    // A password login: the user's policies (by name), the repository's and the registry's.
    assert_eq!(
        ask(Some("pr/alice"), None, Some("pr/one")).await,
        expect(
            &[(alice.clone(), "a1"), (alice.clone(), "a2")],
            &[(one.clone(), RESOURCE_POLICY), (registry.clone(), RESOURCE_POLICY)],
            &one_tags
        )
    );
    // A key alone: only the key's policies.
    assert_eq!(
        ask(None, Some("PR-ALICE"), Some("pr/one")).await,
        expect(
            &[(alice_key.clone(), "ka")],
            &[(one.clone(), RESOURCE_POLICY), (registry.clone(), RESOURCE_POLICY)],
            &one_tags
        )
    );
    // A key with its user: the user's first, then the key's.
    assert_eq!(
        ask(Some("pr/alice"), Some("PR-ALICE"), Some("pr/two")).await,
        expect(
            &[(alice.clone(), "a1"), (alice.clone(), "a2"), (alice_key.clone(), "ka")],
            &[(two.clone(), RESOURCE_POLICY), (registry.clone(), RESOURCE_POLICY)],
            &tags_of(&[("team", "b")])
        )
    );
    assert_eq!(
        ask(Some("pr/bob"), Some("PR-BOB"), Some("pr/one")).await,
        expect(
            &[(bob.clone(), "b1"), (bob_key.clone(), "kb")],
            &[(one.clone(), RESOURCE_POLICY), (registry.clone(), RESOURCE_POLICY)],
            &one_tags
        )
    );
    // Anonymous: resource policies only.
    assert_eq!(
        ask(None, None, Some("pr/one")).await,
        expect(&[], &[(one.clone(), RESOURCE_POLICY), (registry.clone(), RESOURCE_POLICY)], &one_tags)
    );
    // No repository (the catalog, say): the registry policy, no tags.
    assert_eq!(
        ask(Some("pr/bob"), None, None).await,
        expect(&[(bob.clone(), "b1")], &[(registry.clone(), RESOURCE_POLICY)], &none)
    );
    // A repository with neither policy nor tags, and identities with no policies.
    assert_eq!(ask(None, None, Some("pr/none")).await, expect(&[], &[(registry.clone(), RESOURCE_POLICY)], &none));
    assert_eq!(
        ask(Some("pr/nobody"), Some("PR-NONE"), None).await,
        expect(&[], &[(registry.clone(), RESOURCE_POLICY)], &none)
    );
    // Kinds are separate namespaces: a key id spelled like a user's name is not that user.
    assert_eq!(ask(None, Some("pr/shadow"), None).await, expect(&[], &[(registry.clone(), RESOURCE_POLICY)], &none));

    // Without a registry policy, only the repository's.
    assert!(store.delete_policy(&registry, RESOURCE_POLICY).await.unwrap());
    assert_eq!(
        ask(Some("pr/alice"), None, Some("pr/one")).await,
        expect(&[(alice.clone(), "a1"), (alice, "a2")], &[(one, RESOURCE_POLICY)], &one_tags)
    );
    assert_eq!(ask(None, None, None).await, expect(&[], &[], &none));
}

/// Repository tags: set and removed together, per repository, for repositories not pushed yet too.
async fn repository_tags(store: &dyn MetadataStore) {
    let (r, other) = (repo("rt/one"), repo("rt/other"));
    assert!(store.repository_tags(&r).await.unwrap().is_empty());
    store.tag_repository(&r, &tags_of(&[("team", "a"), ("env", "dev")]), &[]).await.unwrap();
    store.tag_repository(&other, &tags_of(&[("team", "z")]), &[]).await.unwrap();
    assert_eq!(store.repository_tags(&r).await.unwrap(), tags_of(&[("env", "dev"), ("team", "a")]));
    assert_eq!(store.repository_key(&r).await.unwrap(), None, "tagging does not create the repository");

    // Set and remove in one call; removing what is not there is fine.
    store
        .tag_repository(&r, &tags_of(&[("env", "prod"), ("cost", "1")]), &["team".into(), "absent".into()])
        .await
        .unwrap();
    assert_eq!(store.repository_tags(&r).await.unwrap(), tags_of(&[("cost", "1"), ("env", "prod")]));
    // A key both set and removed ends removed.
    store.tag_repository(&r, &tags_of(&[("cost", "2"), ("new", "x")]), &["cost".into()]).await.unwrap();
    assert_eq!(store.repository_tags(&r).await.unwrap(), tags_of(&[("env", "prod"), ("new", "x")]));
    store.tag_repository(&r, &BTreeMap::new(), &[]).await.unwrap();
    assert_eq!(store.repository_tags(&r).await.unwrap().len(), 2, "an empty edit changes nothing");
    assert_eq!(store.repository_tags(&other).await.unwrap(), tags_of(&[("team", "z")]), "per repository");
    store.tag_repository(&r, &BTreeMap::new(), &["env".into(), "new".into()]).await.unwrap();
    assert!(store.repository_tags(&r).await.unwrap().is_empty());
}

/// Replicas starting at once each offer a signing key; all end up with the same one.
async fn signing_keys(store: &dyn MetadataStore) {
    let candidates: Vec<SigningKeyRecord> = (0..8u8)
        .map(|i| SigningKeyRecord { kid: format!("kid-{i}"), pkcs8: vec![i; 138], created_at: 1000 + i64::from(i) })
        .collect();
    assert!(!format!("{:?}", candidates[3]).contains("3, 3"), "key material never reaches a log line");
    let got = futures::future::join_all(candidates.iter().map(|c| store.ensure_signing_key(c))).await;
    let got: Vec<Vec<SigningKeyRecord>> = got.into_iter().map(Result::unwrap).collect();
    assert_eq!(got[0].len(), 1, "{:?}", got[0]);
    assert!(candidates.contains(&got[0][0]), "one of the candidates, byte-exact");
    assert!(got.iter().all(|keys| *keys == got[0]), "every caller is told the same key");

    // Later starts keep it.
    let late = SigningKeyRecord { kid: "kid-late".into(), pkcs8: vec![9; 138], created_at: 1 };
    assert_eq!(store.ensure_signing_key(&late).await.unwrap(), got[0]);
}

/// Deleting a user while its policies and keys are being written leaves nothing behind, in
/// whatever order the writes land.
async fn user_deletion_races(store: &dyn MetadataStore) {
    for i in 0..10 {
        let name = format!("race-u/{i}");
        let (old_key, new_key) = (format!("RACE-{i}-OLD"), format!("RACE-{i}-NEW"));
        assert!(store.create_user(&user(&name)).await.unwrap());
        assert!(store.create_access_key(&access_key(&old_key, &name)).await.unwrap());
        let (on_user, on_key, key) = (user_target(&name), key_target(&old_key), access_key(&new_key, &name));
        let (deleted, user_policy, key_policy, created) = futures::join!(
            store.delete_user(&name),
            store.put_policy(&on_user, "p", "{}"),
            store.put_policy(&on_key, "p", "{}"),
            store.create_access_key(&key),
        );
        assert!(deleted.unwrap());
        user_policy.unwrap();
        key_policy.unwrap();
        created.unwrap();
        assert!(store.user(&name).await.unwrap().is_none());
        assert!(store.access_keys(Some(&name)).await.unwrap().is_empty());
        assert!(store.access_key(&new_key).await.unwrap().is_none(), "a key created first went with its user");
        for target in [user_target(&name), key_target(&old_key), key_target(&new_key)] {
            assert!(store.policies(&target).await.unwrap().is_empty(), "{target:?} outlived its owner");
        }
    }
}

async fn suite(store: &dyn MetadataStore) {
    store.ping().await.unwrap();
    blobs_and_links(store).await;
    manifests_tags_and_references(store).await;
    index_children_and_referrers(store).await;
    catalog(store).await;
    upload_sessions(store).await;
    concurrent_writers(store).await;
    repository_key_names(store).await;
    blob_copies(store).await;
    rewrapping(store).await;
    key_records(store).await;
    redundant_plaintext(store).await;
    sealed_upload_sessions(store).await;
    users(store).await;
    access_keys(store).await;
    policies(store).await;
    policies_for_request(store).await;
    repository_tags(store).await;
    signing_keys(store).await;
    user_deletion_races(store).await;
}

#[tokio::test]
async fn metadata_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    suite(&SqliteStore::open(&path).await.unwrap()).await;
    // Reopening runs no migration twice and keeps the records.
    let again = SqliteStore::open(&path).await.unwrap();
    assert!(again.any_blob(&Digest::sha256_of(b"x")).await.unwrap().is_some());
}

/// Runs the suite in a fresh schema of the database at `BERTH_TEST_POSTGRES_URL`
/// (`.ci/postgres.sh` starts one), dropped at the end, so runs never collide.
#[tokio::test]
async fn metadata_on_postgres() {
    let Ok(url) = std::env::var("BERTH_TEST_POSTGRES_URL") else {
        println!("metadata_on_postgres skipped: set BERTH_TEST_POSTGRES_URL (.ci/postgres.sh starts a server)");
        return;
    };
    let schema = format!("berth_test_{}", uuid::Uuid::new_v4().simple());
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    admin.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();

    // The store finds its tables through `search_path`, set in the URL like any option.
    let separator = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{separator}options=-csearch_path%3D{schema}");
    let run = tokio::spawn(async move {
        // Replicas starting at once: the migration runs exactly once, the others wait.
        let stores = futures::future::try_join_all((0..4).map(|_| PostgresStore::open(&scoped))).await.unwrap();
        suite(&stores[0]).await;
        // Reopening runs no migration twice and keeps the records.
        let again = PostgresStore::open(&scoped).await.unwrap();
        assert!(again.any_blob(&Digest::sha256_of(b"x")).await.unwrap().is_some());
        let versions: i64 = {
            let (c, conn) = tokio_postgres::connect(&scoped, tokio_postgres::NoTls).await.unwrap();
            let conn = tokio::spawn(conn);
            let n = c.query_one("SELECT count(*) FROM schema_migrations", &[]).await.unwrap().get(0);
            drop(c);
            conn.await.unwrap().unwrap();
            n
        };
        assert_eq!(versions, 4, "each migration recorded once");
    })
    .await;

    // Dropped whether or not the suite passed.
    admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
    drop(admin);
    connection.await.unwrap().unwrap();
    if let Err(e) = run {
        std::panic::resume_unwind(e.into_panic());
    }
}
