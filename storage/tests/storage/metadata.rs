//! The metadata suite, run against every [`MetadataStore`] implementation.

use berth_oci::{Algorithm, Digest, DigestHasher, Reference, RepoName, Tag, UploadId};
use berth_storage::crypt::{Kek, Run, SealedBlob, UploadSealing};
use std::collections::BTreeMap;

use berth_storage::metadata::events::unix_now_ms;
use berth_storage::metadata::prelude::*;
use berth_storage::metadata::{
    AccessKeyRecord, BlobEntry, Claimed, CreatedRepository, Delivery, DeliveryCounts, DeliveryFilter, DeliveryPhase,
    DeliveryState, Event, EventKind, KeyRecord, KeyState, NewManifest, NewRepository, Origin, Outcome, Page,
    PayloadFormat, PolicyRecord, PolicySet, PolicyTarget, RESOURCE_POLICY, ReplicationState, ReplicationStatus,
    RepositoryDeleted, RequiredContent, RetireRefused, SigningKeyRecord, Subscription, SubscriptionKind,
    SubscriptionSource, UploadQuota, UploadRecord, UserRecord,
};
use berth_storage::{Error, PostgresStore, SqliteStore};

/// The origin of changes whose events a test does not look at.
const ANON: &Origin =
    &Origin { actor: None, request_id: None, addr: None, method: None, host: None, scheme: None, user_agent: None };

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}
/// A repository to create with key `key` and no other setting.
fn keyed(key: Option<&str>) -> NewRepository {
    NewRepository::with_key(key.map(str::to_owned))
}
fn tag(s: &str) -> Tag {
    s.parse().unwrap()
}
/// Upload sessions without a bound, for tests about something else.
const UNBOUNDED: UploadQuota =
    UploadQuota { principal: String::new(), per_repository: u64::MAX, per_principal: u64::MAX };

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
        mutability: Default::default(),
        references: Default::default(),
    }
}

async fn blobs_and_links(store: &dyn MetadataStore) {
    let (a, b) = (repo("suite/a"), repo("suite/b"));
    let d = Digest::sha256_of(b"blob");
    assert_eq!(store.repo_blob(&a, &d).await.unwrap(), None);
    assert_eq!(store.any_blob(&d).await.unwrap(), None);
    store.link_blob(&a, &d, 4, true, None, ANON).await.unwrap();
    store.link_blob(&a, &d, 4, true, None, ANON).await.unwrap(); // idempotent
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
    let err = store.put_manifest(&manifest(&r, body, need.clone(), &["latest"]), ANON).await.unwrap_err();
    assert!(matches!(err, Error::MissingReference(ref d) if *d == layer), "{err:?}");
    assert!(store.get_manifest(&r, &Reference::Tag(tag("latest"))).await.unwrap().is_none());

    // A size that disagrees with the stored blob is refused.
    store.link_blob(&r, &layer, 5, true, None, ANON).await.unwrap();
    let wrong = vec![RequiredContent { digest: layer.clone(), size: 6 }];
    assert!(matches!(
        store.put_manifest(&manifest(&r, body, wrong, &[]), ANON).await,
        Err(Error::ReferenceSize { .. })
    ));

    let m = manifest(&r, body, need.clone(), &["latest", "v1"]);
    store.put_manifest(&m, ANON).await.unwrap();
    store.put_manifest(&m, ANON).await.unwrap(); // pushing again is fine
    let by_tag = store.get_manifest(&r, &Reference::Tag(tag("latest"))).await.unwrap().unwrap();
    assert_eq!(by_tag.content, body.as_bytes(), "byte-exact");
    assert_eq!(by_tag.digest, m.digest);
    let by_digest = store.get_manifest(&r, &Reference::Digest(m.digest.clone())).await.unwrap().unwrap();
    assert_eq!(by_digest, by_tag);

    // Moving a tag.
    let body2 = r#"{"v": 2}"#;
    let m2 = manifest(&r, body2, need, &["latest"]);
    store.put_manifest(&m2, ANON).await.unwrap();
    let moved = store.get_manifest(&r, &Reference::Tag(tag("latest"))).await.unwrap().unwrap();
    assert_eq!(moved.digest, m2.digest);

    // Tags sorted bytewise, paginated.
    store
        .put_manifest(
            &manifest(&r, body, vec![RequiredContent { digest: layer.clone(), size: 5 }], &["B", "a", "_z"]),
            ANON,
        )
        .await
        .unwrap();
    let all = store.list_tags(&r, &page(None, 100)).await.unwrap().unwrap();
    assert_eq!(all, ["B", "_z", "a", "latest", "v1"]);
    assert_eq!(store.list_tags(&r, &page(Some("_z"), 2)).await.unwrap().unwrap(), ["a", "latest"]);
    assert_eq!(store.list_tags(&repo("suite/none"), &page(None, 10)).await.unwrap(), None);

    // Untag leaves the manifest; deleting the manifest takes its tags.
    assert!(store.delete_tag(&r, &tag("v1"), ANON).await.unwrap());
    assert!(!store.delete_tag(&r, &tag("v1"), ANON).await.unwrap());
    assert!(store.get_manifest(&r, &Reference::Digest(m.digest.clone())).await.unwrap().is_some());
    assert!(store.delete_manifest(&r, &m.digest, ANON).await.unwrap());
    assert!(!store.delete_manifest(&r, &m.digest, ANON).await.unwrap());
    assert_eq!(store.list_tags(&r, &page(None, 100)).await.unwrap().unwrap(), ["latest"]);
}

async fn index_children_and_referrers(store: &dyn MetadataStore) {
    let r = repo("suite/idx");
    let cfg = Digest::sha256_of(b"cfg");
    store.link_blob(&r, &cfg, 3, true, None, ANON).await.unwrap();
    let child = manifest(&r, r#"{"child":1}"#, vec![RequiredContent { digest: cfg.clone(), size: 3 }], &[]);
    let child_size = child.content.len() as u64;

    let mut index = manifest(&r, r#"{"index":1}"#, vec![], &["multi"]);
    index.media_type = "application/vnd.oci.image.index.v1+json".into();
    index.manifests = vec![RequiredContent { digest: child.digest.clone(), size: child_size }];
    assert!(matches!(store.put_manifest(&index, ANON).await, Err(Error::MissingReference(_))));
    store.put_manifest(&child, ANON).await.unwrap();
    store.put_manifest(&index, ANON).await.unwrap();

    // Referrers: a manifest whose subject does not exist yet is fine.
    let mut sig = manifest(&r, r#"{"sig":1}"#, vec![RequiredContent { digest: cfg.clone(), size: 3 }], &[]);
    sig.subject = Some(child.digest.clone());
    sig.artifact_type = Some("application/x.sig".into());
    sig.annotations = Some([("k".to_string(), "v".to_string())].into());
    let mut sbom = manifest(&r, r#"{"sbom":1}"#, vec![RequiredContent { digest: cfg, size: 3 }], &[]);
    sbom.subject = Some(child.digest.clone());
    sbom.artifact_type = Some("application/x.sbom".into());
    store.put_manifest(&sig, ANON).await.unwrap();
    store.put_manifest(&sbom, ANON).await.unwrap();
    let every = Page { last: None, limit: 100 };
    let all = store.referrers(&r, &child.digest, None, &every).await.unwrap();
    assert_eq!(all.len(), 2);
    // Pages: at most `limit`, then the ones after `last`, in push order.
    let first = store.referrers(&r, &child.digest, None, &Page { last: None, limit: 1 }).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].digest, all[0].digest);
    let after = Page { last: Some(all[0].digest.to_string()), limit: 10 };
    let rest = store.referrers(&r, &child.digest, None, &after).await.unwrap();
    assert_eq!(rest.iter().map(|x| &x.digest).collect::<Vec<_>>(), vec![&all[1].digest]);
    let past_end = Page { last: Some(all[1].digest.to_string()), limit: 10 };
    assert!(store.referrers(&r, &child.digest, None, &past_end).await.unwrap().is_empty());
    let huge = Page { last: None, limit: usize::MAX };
    assert_eq!(store.referrers(&r, &child.digest, None, &huge).await.unwrap().len(), 2);
    let sigs = store.referrers(&r, &child.digest, Some("application/x.sig"), &every).await.unwrap();
    assert_eq!(sigs.len(), 1);
    assert_eq!(sigs[0].digest, sig.digest);
    assert_eq!(sigs[0].annotations.as_ref().unwrap()["k"], "v");
    assert_eq!(sigs[0].size, sig.content.len() as u64);
    store.delete_manifest(&r, &sig.digest, ANON).await.unwrap();
    assert_eq!(store.referrers(&r, &child.digest, None, &every).await.unwrap().len(), 1);
    assert!(store.referrers(&repo("suite/other"), &child.digest, None, &every).await.unwrap().is_empty());
}

async fn catalog(store: &dyn MetadataStore) {
    let d = Digest::sha256_of(b"x");
    for name in ["cat/b", "cat/a", "cat/c/d"] {
        store.link_blob(&repo(name), &d, 1, true, None, ANON).await.unwrap();
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
    store.create_upload(&u, &UNBOUNDED).await.unwrap();
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
/// Open sessions are bounded per repository and per principal when one starts; finishing
/// (deleting) one makes room again.
async fn upload_quotas(store: &dyn MetadataStore) {
    let session = |r: &str| UploadRecord {
        id: uuid::Uuid::new_v4().to_string().parse().unwrap(),
        repo: repo(r),
        offset: 0,
        hash_state: vec![],
        parts: vec![],
        created_at: 1,
        updated_at: 1,
        sealing: None,
    };
    let quota = |who: &str| UploadQuota { principal: who.into(), per_repository: 3, per_principal: 4 };
    let mut alice = Vec::new();
    for _ in 0..3 {
        let u = session("quota/a");
        store.create_upload(&u, &quota("quota-alice")).await.unwrap();
        alice.push(u);
    }
    // The repository is full, for anyone.
    let err = store.create_upload(&session("quota/a"), &quota("quota-bob")).await.unwrap_err();
    assert!(matches!(&err, Error::Limit(m) if m.contains("max_open_per_repository")), "{err:?}");
    // Alice may open one more elsewhere, then she is full everywhere.
    store.create_upload(&session("quota/b"), &quota("quota-alice")).await.unwrap();
    let err = store.create_upload(&session("quota/c"), &quota("quota-alice")).await.unwrap_err();
    assert!(matches!(&err, Error::Limit(m) if m.contains("max_open_per_principal")), "{err:?}");
    store.create_upload(&session("quota/c"), &quota("quota-bob")).await.unwrap();
    // A finished session makes room.
    assert!(store.delete_upload(&alice[0].id).await.unwrap());
    store.create_upload(&session("quota/a"), &quota("quota-alice")).await.unwrap();
}

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
    store.create_upload(&start, &UNBOUNDED).await.unwrap();
    let attempts: Vec<UploadRecord> = (0..16u64)
        .map(|i| UploadRecord { offset: 10 + i, parts: vec![format!("000000-{i}")], ..start.clone() })
        .collect();
    let won = futures::future::join_all(attempts.iter().map(|u| store.advance_upload(u, 0, 0))).await;
    let winners: Vec<_> = won.into_iter().enumerate().filter(|(_, w)| *w.as_ref().unwrap()).map(|(i, _)| i).collect();
    assert_eq!(winners.len(), 1, "exactly one writer at offset 0 wins: {winners:?}");
    assert_eq!(store.get_upload(&id).await.unwrap().unwrap(), attempts[winners[0]]);

    let r = repo("race/tags");
    let layer = Digest::sha256_of(b"race-layer");
    store.link_blob(&r, &layer, 10, true, None, ANON).await.unwrap();
    let need = vec![RequiredContent { digest: layer, size: 10 }];
    let pushes: Vec<NewManifest> =
        (0..8).map(|i| manifest(&r, &format!("{{\"race\":{i}}}"), need.clone(), &["latest", "stable"])).collect();
    let same: Vec<NewManifest> = (0..8).map(|_| manifest(&r, r#"{"same":1}"#, need.clone(), &["same"])).collect();
    let results = futures::future::join_all(pushes.iter().chain(&same).map(|m| store.put_manifest(m, ANON))).await;
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
    assert_eq!(store.create_repository(&enc, &keyed(Some("alpha")), ANON).await.unwrap().key, alpha);
    assert_eq!(
        store.create_repository(&enc, &keyed(Some("beta")), ANON).await.unwrap().key,
        alpha,
        "fixed at creation"
    );
    assert_eq!(store.create_repository(&enc, &keyed(None), ANON).await.unwrap().key, alpha);
    assert_eq!(store.repository_key(&enc).await.unwrap(), Some(alpha.clone()));
    assert_eq!(store.create_repository(&plain, &keyed(None), ANON).await.unwrap().key, None);
    assert_eq!(
        store.create_repository(&plain, &keyed(Some("alpha")), ANON).await.unwrap().key,
        None,
        "plaintext stays plaintext"
    );
    assert_eq!(store.repository_key(&plain).await.unwrap(), Some(None));

    // A repository made by its first link has no key; it can be given one, once.
    store.link_blob(&late, &Digest::sha256_of(b"rk"), 2, true, None, ANON).await.unwrap();
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
    let news: Vec<NewRepository> = names.iter().map(|k| keyed(Some(k.as_str()))).collect();
    let got = futures::future::join_all(news.iter().map(|new| store.create_repository(&race, new, ANON))).await;
    let got: Vec<CreatedRepository> = got.into_iter().map(Result::unwrap).collect();
    let winner = store.repository_key(&race).await.unwrap().unwrap();
    assert!(winner.as_ref().is_some_and(|w| names.contains(w)));
    assert!(got.iter().all(|c| c.key == winner), "{got:?}");
    assert_eq!(got.iter().filter(|c| c.created).count(), 1, "one creator: {got:?}");

    // Racing key assignments: exactly one wins.
    let plain_race = repo("rk/plain-race");
    store.create_repository(&plain_race, &keyed(None), ANON).await.unwrap();
    let won = futures::future::join_all(names.iter().map(|k| store.set_repository_key(&plain_race, k))).await;
    assert_eq!(won.into_iter().filter(|w| *w.as_ref().unwrap()).count(), 1);
}

/// Sealed copies: one per key name, read through the repository's key.
async fn blob_copies(store: &dyn MetadataStore) {
    let d = Digest::sha256_of(b"copies");
    let (enc, other, plain, nocopy) = (repo("bc/enc"), repo("bc/other"), repo("bc/plain"), repo("bc/nocopy"));
    store.create_repository(&enc, &keyed(Some("ka")), ANON).await.unwrap();
    store.create_repository(&other, &keyed(Some("kb")), ANON).await.unwrap();
    store.create_repository(&plain, &keyed(None), ANON).await.unwrap();
    store.create_repository(&nocopy, &keyed(Some("kc")), ANON).await.unwrap();

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

    store.link_blob(&enc, &d, 6, false, None, ANON).await.unwrap();
    store.link_blob(&plain, &d, 6, true, None, ANON).await.unwrap();
    store.link_blob(&nocopy, &d, 6, false, None, ANON).await.unwrap();
    let entry = |key: Option<&str>, copy: Option<SealedBlob>| BlobEntry {
        size: 6,
        key_name: key.map(Into::into),
        copy,
        marked: false,
    };
    assert_eq!(store.repo_blob_entry(&enc, &d).await.unwrap(), Some(entry(Some("ka"), Some(a))));
    assert_eq!(store.repo_blob_entry(&plain, &d).await.unwrap(), Some(entry(None, None)), "plaintext repository");
    assert_eq!(store.repo_blob_entry(&nocopy, &d).await.unwrap(), Some(entry(Some("kc"), None)), "no copy yet");
    assert_eq!(store.repo_blob_entry(&other, &d).await.unwrap(), None, "not linked there");
    assert_eq!(store.repo_blob(&enc, &d).await.unwrap(), Some(6));

    // Every blob linked to a repository, in digest order.
    let e = Digest::sha256_of(b"copies-2");
    store.link_blob(&enc, &e, 8, false, None, ANON).await.unwrap();
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
    store.create_upload(&upload, &UNBOUNDED).await.unwrap();
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
    store.link_blob(&pa, &d, 5, true, None, ANON).await.unwrap();
    store.link_blob(&pa, &e, 5, true, None, ANON).await.unwrap();
    store.link_blob(&pb, &e, 5, true, None, ANON).await.unwrap();
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
    store.link_blob(&pa, &d, 5, false, None, ANON).await.unwrap();
    assert!(!redundant().await.contains(&d));
    let pc = repo("pt/c");
    store.link_blob(&pc, &d, 5, true, None, ANON).await.unwrap();
    store.link_blob(&pa, &d, 5, false, None, ANON).await.unwrap();
    assert!(!redundant().await.contains(&d));
    assert!(!store.drop_plaintext(&d).await.unwrap());
    assert!(store.set_repository_key(&pc, "pk").await.unwrap());
    assert!(redundant().await.contains(&d), "flagged again, and redundant again");
    assert!(store.drop_plaintext(&d).await.unwrap());

    // A blob known only through its copy has no plaintext object.
    let f = Digest::sha256_of(b"pt-3");
    store.add_blob_copy(&f, &sealed("pk", "pk.1", 5, "pf")).await.unwrap();
    store.link_blob(&pa, &f, 5, false, None, ANON).await.unwrap();
    assert!(!redundant().await.contains(&f));
    assert!(!store.drop_plaintext(&f).await.unwrap());

    // A blob no repository links is not redundant here (collecting it is someone else's job).
    let g = Digest::sha256_of(b"pt-4");
    store.link_blob(&pa, &g, 5, true, None, ANON).await.unwrap();
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
        store.link_blob(&pa, &h, 5, true, None, ANON).await.unwrap();
        store.add_blob_copy(&h, &sealed("pk", "pk.1", 5, "ph")).await.unwrap();
        let late = repo(&format!("pt/late-{i}"));
        let (linked, dropped) =
            futures::future::join(store.link_blob(&late, &h, 5, true, None, ANON), store.drop_plaintext(&h)).await;
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
    store.create_upload(&u, &UNBOUNDED).await.unwrap();
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
        id: user_id(name),
        name: name.into(),
        password_hash: Some(format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${name}")),
        disabled: false,
        created_at: 50,
        generation: 0,
    }
}

/// A user id unique to `seed`, of the shape the registry makes (`AIDA` and 16 characters).
fn user_id(seed: &str) -> String {
    format!("AIDA{}", hex_digest(seed)[..16].to_uppercase())
}

fn access_key(id: &str, user: &str) -> AccessKeyRecord {
    AccessKeyRecord {
        id: id.into(),
        user: user.into(),
        secret_digest: hex_digest(id),
        disabled: false,
        created_at: 60,
        secret_sealed: None,
    }
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

    // Each revocation of credentials moves the user's generation on, and nothing else does.
    let generation = |name: &'static str| async move { store.user(name).await.unwrap().unwrap().generation };
    assert_eq!(generation("au/alice").await, 0);
    assert!(store.set_user_disabled("au/alice", true).await.unwrap());
    assert!(store.user("au/alice").await.unwrap().unwrap().disabled);
    assert_eq!(generation("au/alice").await, 1, "disabling revokes");
    assert!(!store.user("au/bob").await.unwrap().unwrap().disabled, "only that user");
    assert!(store.set_user_disabled("au/alice", false).await.unwrap());
    assert!(!store.user("au/alice").await.unwrap().unwrap().disabled);
    assert_eq!(generation("au/alice").await, 1, "enabling again does not bring old tokens back");
    assert!(!store.set_user_disabled("au/none", true).await.unwrap());

    assert!(store.set_user_password("au/alice", Some("$argon2id$new")).await.unwrap());
    assert_eq!(store.user("au/alice").await.unwrap().unwrap().password_hash.as_deref(), Some("$argon2id$new"));
    assert_eq!(generation("au/alice").await, 2, "a new password revokes");
    assert!(store.set_user_password("au/alice", None).await.unwrap(), "access keys only");
    assert_eq!(store.user("au/alice").await.unwrap().unwrap().password_hash, None);
    assert_eq!(generation("au/alice").await, 3, "removing the password revokes");
    assert!(!store.set_user_password("au/none", Some("$argon2id$x")).await.unwrap());
    assert!(store.user("au/none").await.unwrap().is_none(), "not created by the attempt");
    assert_eq!(generation("au/bob").await, 0, "only that user");
    assert_eq!(store.user("au/alice").await.unwrap().unwrap().id, alice.id, "the id never changes");

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

    // A new user of the same name starts with nothing, under its own id.
    let again = UserRecord { id: user_id("au/alice again"), ..alice.clone() };
    assert!(store.create_user(&again).await.unwrap());
    assert_eq!(store.user("au/alice").await.unwrap(), Some(again));
    assert!(store.access_keys(Some("au/alice")).await.unwrap().is_empty());
    assert!(store.access_key("AU-ALICE-1").await.unwrap().is_none(), "its old key is not revived");
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

/// A key's sealed secret: stored at creation, or set later once (a compare-and-set on the
/// value expected, `None` for not sealed yet), replaced under a new KEK, cleared.
async fn access_key_sealed_secrets(store: &dyn MetadataStore) {
    assert!(store.create_user(&user("as/u")).await.unwrap());
    let sealed = AccessKeyRecord { secret_sealed: Some("sealed:v1:AAAA".into()), ..access_key("AS-SEALED", "as/u") };
    assert!(store.create_access_key(&sealed).await.unwrap());
    assert_eq!(store.access_key("AS-SEALED").await.unwrap(), Some(sealed.clone()));
    assert!(store.create_access_key(&access_key("AS-OLD", "as/u")).await.unwrap());
    assert_eq!(store.access_key("AS-OLD").await.unwrap().unwrap().secret_sealed, None);

    // Sealing an old key at its first sign-in: two racing writers, one wins.
    let (a, b) = tokio::join!(
        store.set_access_key_secret_sealed("AS-OLD", None, Some("sealed:v1:A")),
        store.set_access_key_secret_sealed("AS-OLD", None, Some("sealed:v1:B")),
    );
    assert_eq!([a.unwrap(), b.unwrap()].iter().filter(|won| **won).count(), 1, "exactly one seals it");
    let now = store.access_key("AS-OLD").await.unwrap().unwrap().secret_sealed.unwrap();
    assert!(now == "sealed:v1:A" || now == "sealed:v1:B");
    // Under a new KEK: only from the value read.
    assert!(!store.set_access_key_secret_sealed("AS-OLD", Some("sealed:v1:other"), Some("sealed:v1:C")).await.unwrap());
    assert!(!store.set_access_key_secret_sealed("AS-OLD", None, Some("sealed:v1:C")).await.unwrap());
    assert!(store.set_access_key_secret_sealed("AS-OLD", Some(&now), Some("sealed:v1:C")).await.unwrap());
    assert_eq!(store.access_key("AS-OLD").await.unwrap().unwrap().secret_sealed.as_deref(), Some("sealed:v1:C"));
    // Cleared; a missing key is not an error, just no change.
    assert!(store.set_access_key_secret_sealed("AS-OLD", Some("sealed:v1:C"), None).await.unwrap());
    assert_eq!(store.access_key("AS-OLD").await.unwrap().unwrap().secret_sealed, None);
    assert!(!store.set_access_key_secret_sealed("AS-NONE", None, Some("x")).await.unwrap());
    // The other key and its listing are untouched; the listing carries the sealed form.
    let listed = store.access_keys(Some("as/u")).await.unwrap();
    assert_eq!(listed.iter().find(|k| k.id == "AS-SEALED"), Some(&sealed));
    assert!(store.delete_user("as/u").await.unwrap());
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

    // Re-sealing is a compare-and-swap on the stored bytes: of two racing starts one wins.
    let kid = got[0][0].kid.clone();
    let old = got[0][0].pkcs8.clone();
    assert!(!store.reseal_signing_key(&kid, b"not what is stored", b"x").await.unwrap());
    let (a, b) = futures::future::join(
        store.reseal_signing_key(&kid, &old, b"sealed-a"),
        store.reseal_signing_key(&kid, &old, b"sealed-b"),
    )
    .await;
    assert!(a.unwrap() ^ b.unwrap(), "exactly one reseal wins");
    let now = store.ensure_signing_key(&late).await.unwrap();
    assert!(now[0].pkcs8 == b"sealed-a" || now[0].pkcs8 == b"sealed-b");
    assert_eq!(now[0].kid, kid);
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
    upload_quotas(store).await;
    concurrent_writers(store).await;
    repository_key_names(store).await;
    blob_copies(store).await;
    rewrapping(store).await;
    key_records(store).await;
    redundant_plaintext(store).await;
    sealed_upload_sessions(store).await;
    users(store).await;
    access_keys(store).await;
    access_key_sealed_secrets(store).await;
    policies(store).await;
    policies_for_request(store).await;
    repository_tags(store).await;
    signing_keys(store).await;
    user_deletion_races(store).await;
    events_of_each_change(store).await;
    subscription_records(store).await;
    fan_out_filters(store).await;
    claim_order_and_leases(store).await;
    claim_races(store).await;
    delivery_admin(store).await;
    config_subscriptions(store).await;
    repository_deletion(store).await;
    repository_deletion_races(store).await;
    events_feed_has_no_gaps(store).await;
    pruning(store).await;
    crate::usage::counters(store).await;
    crate::usage::quotas(store).await;
    crate::metadata_gc::suite(store).await;
    crate::metadata_mutability::suite(store).await;
    crate::metadata_images::suite(store).await;
    crate::metadata_lifecycle::suite(store).await;
    crate::metadata_templates::suite(store).await;
    crate::metadata_ecr_repos::suite(store).await;
    crate::metadata_pull_through::suite(store).await;
    replication_records(store).await;
    // Last: its claims lease whatever other cases left pending.
    lease_renewal(store).await;
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

/// `open_existing` opens only a database that holds the schema: a missing file is not
/// created, an empty one (or another program's database) is left as it was.
#[tokio::test]
async fn sqlite_open_existing_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("meta.db");
    assert!(SqliteStore::open_existing(&path).await.unwrap().is_none());
    assert!(!dir.path().join("sub").exists());

    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(&path, b"").unwrap();
    assert!(SqliteStore::open_existing(&path).await.unwrap().is_none());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    assert_eq!(std::fs::read_dir(dir.path().join("sub")).unwrap().count(), 1, "no -wal or -shm left");

    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other).unwrap().execute_batch("CREATE TABLE notes (text TEXT)").unwrap();
    assert!(SqliteStore::open_existing(&other).await.unwrap().is_none());

    let store = SqliteStore::open(&path).await.unwrap();
    assert!(store.add_key(&key_record("k.1", KeyState::Active)).await.unwrap());
    drop(store);
    let again = SqliteStore::open_existing(&path).await.unwrap().expect("the database made by open");
    assert_eq!(again.keys(false).await.unwrap().len(), 1);
}

/// Users made before user ids and credential generations existed (schema v5) get an id
/// each, all different, and generation 0.
#[tokio::test]
async fn sqlite_users_from_before_v6_get_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
            .unwrap();
        let old = [
            include_str!("../../src/metadata/sqlite_v1.sql"),
            include_str!("../../src/metadata/sqlite_v2.sql"),
            include_str!("../../src/metadata/sqlite_v3.sql"),
            include_str!("../../src/metadata/sqlite_v4.sql"),
            include_str!("../../src/metadata/sqlite_v5.sql"),
        ];
        for (version, sql) in (1..).zip(old) {
            conn.execute_batch(sql).unwrap();
            conn.execute("INSERT INTO schema_migrations VALUES (?1, 0)", [version]).unwrap();
        }
        for name in ["old/a", "old/b", "old/c"] {
            conn.execute(
                "INSERT INTO users (name, password_hash, disabled, created_at) VALUES (?1, NULL, 0, 5)",
                [name],
            )
            .unwrap();
        }
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let users = store.users().await.unwrap();
    assert_eq!(users.len(), 3);
    for u in &users {
        assert_eq!(u.generation, 0, "{u:?}");
        assert_eq!(u.id.len(), 20, "{u:?}");
        assert!(u.id.starts_with("AIDA") && u.id[4..].bytes().all(|b| b.is_ascii_alphanumeric()), "{u:?}");
        assert_eq!(u.id, u.id.to_uppercase(), "{u:?}");
    }
    let mut ids: Vec<_> = users.iter().map(|u| u.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "every user its own id");
}

/// As [`sqlite_users_from_before_v6_get_ids`], on PostgreSQL (schema v6 to v7), in a fresh
/// schema of the database at `BERTH_TEST_POSTGRES_URL`.
#[tokio::test]
#[ignore = "needs PostgreSQL: eval \"$(.ci/postgres.sh start)\", then cargo test -- --ignored (.ci/run does)"]
async fn postgres_users_from_before_v7_get_ids() {
    let url = std::env::var("BERTH_TEST_POSTGRES_URL").expect("BERTH_TEST_POSTGRES_URL (.ci/postgres.sh start)");
    let schema = format!("berth_test_{}", uuid::Uuid::new_v4().simple());
    let separator = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{separator}options=-csearch_path%3D{schema}");
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    admin.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let run = tokio::spawn(async move {
        let (c, conn) = tokio_postgres::connect(&scoped, tokio_postgres::NoTls).await.unwrap();
        let conn = tokio::spawn(conn);
        c.batch_execute("CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .await
            .unwrap();
        let old = [
            include_str!("../../src/metadata/postgres_v1.sql"),
            include_str!("../../src/metadata/postgres_v2.sql"),
            include_str!("../../src/metadata/postgres_v3.sql"),
            include_str!("../../src/metadata/postgres_v4.sql"),
            include_str!("../../src/metadata/postgres_v5.sql"),
            include_str!("../../src/metadata/postgres_v6.sql"),
        ];
        for (version, sql) in (1i64..).zip(old) {
            c.batch_execute(sql).await.unwrap();
            c.execute("INSERT INTO schema_migrations VALUES ($1, 0)", &[&version]).await.unwrap();
        }
        for name in ["old/a", "old/b", "old/c"] {
            c.execute(
                "INSERT INTO users (name, password_hash, disabled, created_at) VALUES ($1, NULL, false, 5)",
                &[&name],
            )
            .await
            .unwrap();
        }
        drop(c);
        conn.await.unwrap().unwrap();

        let store = PostgresStore::open(&scoped).await.unwrap();
        let users = store.users().await.unwrap();
        assert_eq!(users.len(), 3);
        for u in &users {
            assert_eq!(u.generation, 0, "{u:?}");
            assert_eq!(u.id.len(), 20, "{u:?}");
            assert!(u.id.starts_with("AIDA") && u.id[4..].bytes().all(|b| b.is_ascii_alphanumeric()), "{u:?}");
            assert_eq!(u.id, u.id.to_uppercase(), "{u:?}");
        }
        let mut ids: Vec<_> = users.iter().map(|u| u.id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 3, "every user its own id");
    })
    .await;
    admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
    drop(admin);
    connection.await.unwrap().unwrap();
    if let Err(e) = run {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// `open_existing` on a database without the Berth schema writes nothing into it; after
/// `open` made the schema, it opens.
#[tokio::test]
#[ignore = "needs PostgreSQL: eval \"$(.ci/postgres.sh start)\", then cargo test -- --ignored (.ci/run does)"]
async fn postgres_open_existing_creates_nothing() {
    let url = std::env::var("BERTH_TEST_POSTGRES_URL").expect("BERTH_TEST_POSTGRES_URL (.ci/postgres.sh start)");
    let schema = format!("berth_test_{}", uuid::Uuid::new_v4().simple());
    let separator = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{separator}options=-csearch_path%3D{schema}");
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    admin.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let tables = "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1";
    let before: i64 = admin.query_one(tables, &[&schema]).await.unwrap().get(0);
    let refused = PostgresStore::open_existing(&scoped).await.map(|s| s.is_none());
    let after: i64 = admin.query_one(tables, &[&schema]).await.unwrap().get(0);
    let made = PostgresStore::open(&scoped).await.map(drop);
    let opened = PostgresStore::open_existing(&scoped).await.map(|s| s.is_some());
    admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
    drop(admin);
    connection.await.unwrap().unwrap();
    assert!(refused.unwrap(), "a database without the schema is no registry");
    assert_eq!((before, after), (0, 0), "open_existing wrote tables");
    made.unwrap();
    assert!(opened.unwrap(), "the schema made by open is found");
}

/// Runs the suite in a fresh schema of the database at `BERTH_TEST_POSTGRES_URL`
/// (`.ci/postgres.sh` starts one), dropped at the end, so runs never collide.
#[tokio::test]
#[ignore = "needs PostgreSQL: eval \"$(bash .ci/postgres.sh start)\", then cargo test -- --ignored"]
async fn metadata_on_postgres() {
    let url = std::env::var("BERTH_TEST_POSTGRES_URL")
        .expect("BERTH_TEST_POSTGRES_URL: run eval \"$(bash .ci/postgres.sh start)\" first");
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
        assert_eq!(versions, 15, "each migration recorded once");
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

// Webhooks: the outbox, subscriptions and deliveries. Each test below deletes the
// subscriptions it made, so the next one starts with no deliveries in the store (claims take
// deliveries of every subscription).

/// The seq of the newest event (0 when there is none).
async fn last_seq(store: &dyn MetadataStore) -> i64 {
    let mut after = 0;
    loop {
        match store.events(after, 1000).await.unwrap().last() {
            Some(e) => after = e.seq,
            None => return after,
        }
    }
}

/// The events after `*after` (which moves to the newest) in repositories starting with `prefix`.
async fn new_events(store: &dyn MetadataStore, after: &mut i64, prefix: &str) -> Vec<Event> {
    let all = store.events(*after, 1_000_000).await.unwrap();
    if let Some(e) = all.last() {
        *after = e.seq;
    }
    all.into_iter().filter(|e| e.repository.starts_with(prefix)).collect()
}

/// Each event's kind, repository and tag.
fn kinds(events: &[Event]) -> Vec<(EventKind, &str, Option<&str>)> {
    events.iter().map(|e| (e.kind, e.repository.as_str(), e.tag.as_deref())).collect()
}

fn hook(name: &str, repositories: &[&str]) -> Subscription {
    Subscription {
        name: name.into(),
        url: format!("http://127.0.0.1:9/{name}"),
        secret: format!("secret-{name}"),
        events: vec![],
        repositories: repositories.iter().map(|r| r.to_string()).collect(),
        tags: vec![],
        format: PayloadFormat::CloudEvents,
        headers: BTreeMap::new(),
        timeout_ms: 1000,
        max_attempts: 5,
        enabled: true,
        source: SubscriptionSource::Api,
        created_at: 0,
        kind: SubscriptionKind::Webhook,
    }
}

/// The deliveries of one subscription, oldest first.
async fn deliveries_of(store: &dyn MetadataStore, subscription: &str) -> Vec<Delivery> {
    let filter = DeliveryFilter { subscription: Some(subscription.into()), ..DeliveryFilter::default() };
    let mut all = store.deliveries(&filter).await.unwrap();
    all.reverse();
    all
}

/// What a claim returned: (subscription, event id) of each.
fn claimed_events(claimed: &[Claimed]) -> Vec<(String, String)> {
    claimed.iter().map(|c| (c.delivery.subscription.clone(), c.delivery.event.id.clone())).collect()
}

fn pair(subscription: &str, event: &Event) -> (String, String) {
    (subscription.to_string(), event.id.clone())
}

/// The delivery of `event` to `subscription`.
async fn delivery_of(store: &dyn MetadataStore, subscription: &str, event: &Event) -> Delivery {
    let filter = DeliveryFilter {
        subscription: Some(subscription.into()),
        event_id: Some(event.id.clone()),
        ..DeliveryFilter::default()
    };
    let mut found = store.deliveries(&filter).await.unwrap();
    assert_eq!(found.len(), 1, "{subscription} {event:?}");
    found.remove(0)
}

fn delivered(status: u16) -> Outcome {
    Outcome::Delivered { status, duration_ms: 7 }
}

/// Every change a webhook reports writes its events, with their fields, in the order made;
/// refused and absent changes write none.
async fn events_of_each_change(store: &dyn MetadataStore) {
    let origin = Origin {
        actor: Some("alice".into()),
        request_id: Some("req-1".into()),
        addr: Some("10.0.0.1:5000".into()),
        method: Some("PUT".into()),
        host: Some("registry.test".into()),
        scheme: Some("https".into()),
        user_agent: Some("docker/27".into()),
    };
    let mut at = last_seq(store).await;
    let (app, src) = (repo("ev/app"), repo("ev/src"));

    // create_repository: an event when it creates, none when the repository exists.
    store.create_repository(&app, &keyed(None), &origin).await.unwrap();
    store.create_repository(&app, &keyed(Some("k")), &origin).await.unwrap();
    let ev = new_events(store, &mut at, "ev/").await;
    assert_eq!(kinds(&ev), [(EventKind::RepositoryCreate, "ev/app", None)]);
    assert_eq!(ev[0].origin, origin);
    assert!(ev[0].seq > 0 && ev[0].time_ms > 0);
    assert!(uuid::Uuid::parse_str(&ev[0].id).is_ok(), "{}", ev[0].id);

    // link_blob: repository.create first when new; blob.push every time; blob.mount with its source.
    let d = Digest::sha256_of(b"ev-layer");
    store.link_blob(&src, &d, 8, true, None, &origin).await.unwrap();
    store.link_blob(&src, &d, 8, true, None, &origin).await.unwrap();
    store.link_blob(&app, &d, 8, true, Some(&src), &origin).await.unwrap();
    let ev = new_events(store, &mut at, "ev/").await;
    assert_eq!(
        kinds(&ev),
        [
            (EventKind::RepositoryCreate, "ev/src", None),
            (EventKind::BlobPush, "ev/src", None),
            (EventKind::BlobPush, "ev/src", None),
            (EventKind::BlobMount, "ev/app", None),
        ]
    );
    assert!(ev.windows(2).all(|w| w[0].seq < w[1].seq), "seq increases");
    assert_eq!((ev[1].digest.clone(), ev[1].size, ev[1].media_type.clone()), (Some(d.to_string()), Some(8), None));
    assert_eq!(ev[1].from_repository, None);
    assert_eq!((ev[3].digest.clone(), ev[3].size), (Some(d.to_string()), Some(8)));
    assert_eq!(ev[3].from_repository.as_deref(), Some("ev/src"));
    assert!(ev.iter().all(|e| e.origin == origin));
    let ids: std::collections::BTreeSet<&str> = ev.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), ev.len(), "ids are unique");

    // A refused push writes nothing, not even the repository it would have created.
    let fresh = repo("ev/fresh");
    let missing = vec![RequiredContent { digest: Digest::sha256_of(b"ev-missing"), size: 1 }];
    let refused = manifest(&fresh, r#"{"ev":0}"#, missing, &["latest"]);
    assert!(matches!(store.put_manifest(&refused, &origin).await, Err(Error::MissingReference(_))));
    let wrong = manifest(&app, r#"{"ev":0}"#, vec![RequiredContent { digest: d.clone(), size: 9 }], &["latest"]);
    assert!(matches!(store.put_manifest(&wrong, &origin).await, Err(Error::ReferenceSize { .. })));
    assert_eq!(store.repository_key(&fresh).await.unwrap(), None);
    assert!(new_events(store, &mut at, "ev/").await.is_empty());

    // put_manifest: one manifest.push per tag in order, again when pushed again; one
    // without a tag when there are none.
    let need = vec![RequiredContent { digest: d.clone(), size: 8 }];
    let m = manifest(&app, r#"{"ev":1}"#, need.clone(), &["v1", "latest"]);
    store.put_manifest(&m, &origin).await.unwrap();
    store.put_manifest(&m, &origin).await.unwrap();
    let untagged = manifest(&app, r#"{"ev":2}"#, need.clone(), &[]);
    store.put_manifest(&untagged, &origin).await.unwrap();
    let ev = new_events(store, &mut at, "ev/").await;
    let push = EventKind::ManifestPush;
    assert_eq!(
        kinds(&ev),
        [
            (push, "ev/app", Some("v1")),
            (push, "ev/app", Some("latest")),
            (push, "ev/app", Some("v1")),
            (push, "ev/app", Some("latest")),
            (push, "ev/app", None),
        ]
    );
    for e in &ev[..4] {
        assert_eq!(e.digest.as_deref(), Some(m.digest.to_string().as_str()));
        assert_eq!(e.media_type.as_deref(), Some(m.media_type.as_str()));
        assert_eq!(e.artifact_type, m.artifact_type);
        assert_eq!(e.size, Some(m.content.len() as u64));
        assert_eq!(e.from_repository, None);
    }
    assert_eq!(ev[4].digest, Some(untagged.digest.to_string()));

    // Into a new repository: repository.create first.
    let other = repo("ev/other");
    store.put_manifest(&manifest(&other, r#"{"ev":3}"#, vec![], &["x"]), &origin).await.unwrap();
    let ev = new_events(store, &mut at, "ev/").await;
    assert_eq!(kinds(&ev), [(EventKind::RepositoryCreate, "ev/other", None), (push, "ev/other", Some("x"))]);

    // delete_tag: tag.delete with the manifest it pointed at; nothing when absent.
    assert!(!store.delete_tag(&app, &tag("absent"), &origin).await.unwrap());
    assert!(!store.delete_tag(&repo("ev/none"), &tag("v1"), &origin).await.unwrap());
    assert!(new_events(store, &mut at, "ev/").await.is_empty());
    assert!(store.delete_tag(&app, &tag("v1"), &origin).await.unwrap());
    let ev = new_events(store, &mut at, "ev/").await;
    assert_eq!(kinds(&ev), [(EventKind::TagDelete, "ev/app", Some("v1"))]);
    assert_eq!(ev[0].digest, Some(m.digest.to_string()));
    assert_eq!(ev[0].media_type.as_deref(), Some(m.media_type.as_str()));
    assert_eq!(ev[0].origin, origin);

    // delete_manifest: a tag.delete per tag that went with it (by name), then manifest.delete.
    store.put_manifest(&manifest(&app, r#"{"ev":1}"#, need, &["zeta", "Alpha"]), ANON).await.unwrap();
    new_events(store, &mut at, "ev/").await;
    assert!(store.delete_manifest(&app, &m.digest, &origin).await.unwrap());
    let ev = new_events(store, &mut at, "ev/").await;
    assert_eq!(
        kinds(&ev),
        [
            (EventKind::TagDelete, "ev/app", Some("Alpha")),
            (EventKind::TagDelete, "ev/app", Some("latest")),
            (EventKind::TagDelete, "ev/app", Some("zeta")),
            (EventKind::ManifestDelete, "ev/app", None),
        ]
    );
    assert!(ev.iter().all(|e| e.digest == Some(m.digest.to_string()) && e.origin == origin));
    assert_eq!(ev[3].media_type.as_deref(), Some(m.media_type.as_str()));
    assert_eq!(ev[3].size, Some(m.content.len() as u64));
    assert!(!store.delete_manifest(&app, &m.digest, &origin).await.unwrap());
    assert!(!store.delete_manifest(&repo("ev/none"), &m.digest, &origin).await.unwrap());
    assert!(new_events(store, &mut at, "ev/").await.is_empty(), "nothing for what was not there");

    // Untagged manifest: manifest.delete alone.
    assert!(store.delete_manifest(&app, &untagged.digest, &origin).await.unwrap());
    let ev = new_events(store, &mut at, "ev/").await;
    assert_eq!(kinds(&ev), [(EventKind::ManifestDelete, "ev/app", None)]);

    // Paged oldest first.
    let from = last_seq(store).await;
    for i in 0..3 {
        store
            .link_blob(&app, &Digest::sha256_of(format!("ev-page-{i}").as_bytes()), 1, true, None, ANON)
            .await
            .unwrap();
    }
    let first = store.events(from, 2).await.unwrap();
    assert_eq!(first.len(), 2);
    let rest = store.events(first[1].seq, 10).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert!(first[0].seq < first[1].seq && first[1].seq < rest[0].seq);
}

/// Subscriptions: upserted by name (keeping when they were created), listed by name, deleted.
async fn subscription_records(store: &dyn MetadataStore) {
    let mut b = hook("sr-b", &["x/*"]);
    b.events = vec![EventKind::ManifestPush, EventKind::TagDelete];
    b.tags = vec!["v*".into()];
    b.format = PayloadFormat::Distribution;
    b.headers = tags_of(&[("X-Team", "a"), ("Authorization", "Bearer t")]);
    b.created_at = 5;
    assert!(store.put_subscription(&b).await.unwrap(), "created");
    let ours = |all: Vec<Subscription>| all.into_iter().filter(|s| s.name.starts_with("sr-")).collect::<Vec<_>>();
    let stored = ours(store.subscriptions().await.unwrap());
    assert_eq!(stored.len(), 1);
    let created_at = stored[0].created_at;
    assert!(created_at > 1_600_000_000, "set by the store, in seconds: {created_at}");
    assert_eq!(stored[0], Subscription { created_at, ..b.clone() });

    let changed = Subscription { url: "https://hooks.test/b".into(), enabled: false, max_attempts: 9, ..b.clone() };
    assert!(!store.put_subscription(&changed).await.unwrap(), "replaced");
    let stored = ours(store.subscriptions().await.unwrap());
    assert_eq!(stored, [Subscription { created_at, ..changed }], "created_at kept");

    assert!(store.put_subscription(&hook("sr-a", &[])).await.unwrap());
    assert!(store.put_subscription(&hook("sr-C", &[])).await.unwrap());
    let names: Vec<String> = ours(store.subscriptions().await.unwrap()).into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["sr-C", "sr-a", "sr-b"], "by bytes");

    for name in ["sr-a", "sr-b", "sr-C"] {
        assert!(store.delete_subscription(name).await.unwrap());
        assert!(!store.delete_subscription(name).await.unwrap(), "already gone");
    }
    assert!(ours(store.subscriptions().await.unwrap()).is_empty());
}

/// Each event goes to the enabled subscriptions it matches (types, repository and tag globs),
/// as one pending delivery each, in the transaction that writes it.
async fn fan_out_filters(store: &dyn MetadataStore) {
    let mut pushes = hook("fo-pushes", &["fo/*"]);
    pushes.events = vec![EventKind::ManifestPush];
    let team = hook("fo-team", &["fo/team/*", "elsewhere/*"]);
    let mut tagged = hook("fo-tagged", &["fo/*"]);
    tagged.tags = vec!["v*".into(), "rc?".into()];
    let off = Subscription { enabled: false, ..hook("fo-off", &["fo/*"]) };
    for s in [&hook("fo-all", &["fo/*"]), &pushes, &team, &tagged, &off] {
        assert!(store.put_subscription(s).await.unwrap());
    }
    let mut at = last_seq(store).await;

    let (app, other) = (repo("fo/team/app"), repo("fo/other"));
    let d = Digest::sha256_of(b"fo-layer");
    store.link_blob(&app, &d, 3, true, None, ANON).await.unwrap();
    let need = vec![RequiredContent { digest: d.clone(), size: 3 }];
    store.put_manifest(&manifest(&app, r#"{"fo":1}"#, need, &["v1", "latest", "rc1"]), ANON).await.unwrap();
    store.put_manifest(&manifest(&other, r#"{"fo":2}"#, vec![], &[]), ANON).await.unwrap();
    let missing = vec![RequiredContent { digest: Digest::sha256_of(b"fo-missing"), size: 1 }];
    assert!(store.put_manifest(&manifest(&app, r#"{"fo":3}"#, missing, &["v2"]), ANON).await.is_err());
    store.link_blob(&repo("nofo/x"), &d, 3, true, None, ANON).await.unwrap();
    let ev = new_events(store, &mut at, "fo/").await;
    assert_eq!(ev.len(), 7, "{:?}", kinds(&ev));

    let got = |deliveries: Vec<Delivery>| deliveries.into_iter().map(|d| d.event).collect::<Vec<_>>();
    assert_eq!(got(deliveries_of(store, "fo-all").await), ev, "everything, in order, the events as written");
    assert_eq!(
        got(deliveries_of(store, "fo-pushes").await),
        [ev[2].clone(), ev[3].clone(), ev[4].clone(), ev[6].clone()]
    );
    assert_eq!(got(deliveries_of(store, "fo-team").await), ev[..5].to_vec(), "fo/team/* only");
    assert_eq!(got(deliveries_of(store, "fo-tagged").await), [ev[2].clone(), ev[4].clone()], "v1 and rc1");
    assert!(deliveries_of(store, "fo-off").await.is_empty(), "disabled");

    for d in deliveries_of(store, "fo-all").await {
        assert_eq!(d.state, DeliveryState::Pending);
        assert_eq!((d.attempts, d.last_status, d.last_error.clone()), (0, None, None));
        assert_eq!(d.next_attempt_ms, d.event.time_ms, "due at once");
        assert!(d.created_ms > 0 && d.updated_ms == d.created_ms);
    }

    // A subscription created after an event does not get it; it gets the next ones.
    assert!(store.put_subscription(&hook("fo-late", &["fo/*"])).await.unwrap());
    assert!(deliveries_of(store, "fo-late").await.is_empty());
    assert!(store.delete_tag(&app, &tag("latest"), ANON).await.unwrap());
    let late = deliveries_of(store, "fo-late").await;
    assert_eq!(
        kinds(&late.iter().map(|d| d.event.clone()).collect::<Vec<_>>()),
        [(EventKind::TagDelete, "fo/team/app", Some("latest"))]
    );

    let counts: Vec<DeliveryCounts> =
        store.delivery_counts().await.unwrap().into_iter().filter(|c| c.subscription.starts_with("fo-")).collect();
    let pending: Vec<(&str, u64)> = counts.iter().map(|c| (c.subscription.as_str(), c.pending)).collect();
    assert_eq!(
        pending,
        [("fo-all", 8), ("fo-late", 1), ("fo-off", 0), ("fo-pushes", 4), ("fo-tagged", 2), ("fo-team", 6)]
    );

    // Deleting a subscription takes its deliveries.
    for name in ["fo-all", "fo-pushes", "fo-team", "fo-tagged", "fo-off", "fo-late"] {
        assert!(store.delete_subscription(name).await.unwrap());
        assert!(deliveries_of(store, name).await.is_empty());
    }
}

/// Claims: each (subscription, repository) line in event order, one delivery in flight at a
/// time; other lines in parallel; leases that run out; finishing only by the holder.
async fn claim_order_and_leases(store: &dyn MetadataStore) {
    let (one, two) = (repo("cl/one"), repo("cl/two"));
    store.create_repository(&one, &keyed(None), ANON).await.unwrap();
    store.create_repository(&two, &keyed(None), ANON).await.unwrap();
    let a = hook("cl-a", &["cl/*"]);
    let b = hook("cl-b", &["cl/one"]);
    store.put_subscription(&a).await.unwrap();
    store.put_subscription(&b).await.unwrap();
    let mut at = last_seq(store).await;
    for (r, seed) in [(&one, "cl-1"), (&one, "cl-2"), (&two, "cl-3")] {
        store.link_blob(r, &Digest::sha256_of(seed.as_bytes()), 1, true, None, ANON).await.unwrap();
    }
    let ev = new_events(store, &mut at, "cl/").await;
    let (e1, e2, e3) = (&ev[0], &ev[1], &ev[2]);
    let t = unix_now_ms() + 1000;

    // The head of each line, oldest first; the subscription comes along.
    let claimed = store.claim_deliveries("w1", t, 30_000, 10).await.unwrap();
    assert_eq!(claimed_events(&claimed), [pair("cl-a", e1), pair("cl-b", e1), pair("cl-a", e3)]);
    let stored = store.subscriptions().await.unwrap();
    for c in &claimed {
        assert_eq!(Some(&c.subscription), stored.iter().find(|s| s.name == c.delivery.subscription));
        assert_eq!(c.delivery.state, DeliveryState::Pending);
    }
    let (a1, b1, a3) = (claimed[0].delivery.id, claimed[1].delivery.id, claimed[2].delivery.id);

    // In flight: nothing more for anyone, the same owner included.
    assert!(store.claim_deliveries("w1", t, 30_000, 10).await.unwrap().is_empty());
    assert!(store.claim_deliveries("w2", t, 30_000, 10).await.unwrap().is_empty());

    // Only the holder finishes, once.
    assert!(!store.finish_delivery(a1, "w2", &delivered(200), t).await.unwrap());
    assert!(store.delivery_attempts(a1).await.unwrap().is_empty(), "nothing written");
    assert!(store.finish_delivery(a1, "w1", &delivered(200), t + 1).await.unwrap());
    assert!(!store.finish_delivery(a1, "w1", &delivered(200), t + 2).await.unwrap(), "the lease is released");

    // The next of that line only; cl-b's line still waits for its head.
    let claimed = store.claim_deliveries("w2", t, 30_000, 10).await.unwrap();
    assert_eq!(claimed_events(&claimed), [pair("cl-a", e2)]);
    let a2 = claimed[0].delivery.id;

    // A retry due later blocks its line until then.
    let retry =
        Outcome::Retry { status: Some(503), error: "unavailable".into(), duration_ms: 5, next_attempt_ms: t + 60_000 };
    assert!(store.finish_delivery(b1, "w1", &retry, t + 3).await.unwrap());
    assert!(store.claim_deliveries("w1", t + 4, 30_000, 10).await.unwrap().is_empty());
    let b1_row = delivery_of(store, "cl-b", e1).await;
    assert_eq!((b1_row.state, b1_row.attempts, b1_row.next_attempt_ms), (DeliveryState::Pending, 1, t + 60_000));
    assert_eq!((b1_row.last_status, b1_row.last_error.as_deref()), (Some(503), Some("unavailable")));

    // Leases that ran out are claimed again (by anyone, the holder too).
    let claimed = store.claim_deliveries("w2", t + 30_000, 100_000, 10).await.unwrap();
    assert_eq!(claimed_events(&claimed), [pair("cl-a", e2), pair("cl-a", e3)]);
    assert!(!store.finish_delivery(a3, "w1", &delivered(200), t + 30_001).await.unwrap(), "w1 lost it");
    let dead = Outcome::Dead { status: None, error: "connection refused".into(), duration_ms: 3 };
    // A batch records, in one transaction, each attempt whose delivery its owner holds, and
    // answers for each in the order given (a1 was finished before: not held, not logged).
    let held = store.finish_deliveries("w2", &[(a3, dead.clone()), (a1, delivered(201))], t + 30_002).await.unwrap();
    assert_eq!(held, [true, false]);
    assert_eq!(store.delivery_attempts(a1).await.unwrap().len(), 1);

    // The retry, once due.
    let claimed = store.claim_deliveries("w1", t + 60_000, 30_000, 10).await.unwrap();
    assert_eq!(claimed_events(&claimed), [pair("cl-b", e1)]);
    assert!(store.finish_delivery(b1, "w1", &delivered(204), t + 60_001).await.unwrap());
    let claimed = store.claim_deliveries("w1", t + 60_002, 30_000, 10).await.unwrap();
    assert_eq!(claimed_events(&claimed), [pair("cl-b", e2)]);
    assert!(store.finish_delivery(claimed[0].delivery.id, "w1", &delivered(200), t + 60_003).await.unwrap());
    assert!(store.finish_delivery(a2, "w2", &delivered(200), t + 60_004).await.unwrap());
    assert!(store.claim_deliveries("w1", t + 60_005, 30_000, 10).await.unwrap().is_empty());

    // What each delivery ended as, and its log.
    let b1_row = delivery_of(store, "cl-b", e1).await;
    assert_eq!((b1_row.state, b1_row.attempts, b1_row.last_status), (DeliveryState::Delivered, 2, Some(204)));
    assert_eq!(b1_row.last_error, None);
    assert_eq!(b1_row.updated_ms, t + 60_001);
    let log = store.delivery_attempts(b1).await.unwrap();
    let log: Vec<_> =
        log.iter().map(|a| (a.delivery, a.number, a.at_ms, a.status, a.error.as_deref(), a.duration_ms)).collect();
    assert_eq!(log, [(b1, 1, t + 3, Some(503), Some("unavailable"), 5), (b1, 2, t + 60_001, Some(204), None, 7)]);
    let a3_row = delivery_of(store, "cl-a", e3).await;
    assert_eq!((a3_row.state, a3_row.attempts, a3_row.last_status), (DeliveryState::Dead, 1, None));
    assert_eq!(a3_row.last_error.as_deref(), Some("connection refused"));

    // A disabled subscription's deliveries wait (its lines do not block others).
    store.link_blob(&one, &Digest::sha256_of(b"cl-4"), 1, true, None, ANON).await.unwrap();
    let e4 = new_events(store, &mut at, "cl/").await.remove(0);
    store.put_subscription(&Subscription { enabled: false, ..b.clone() }).await.unwrap();
    let t = unix_now_ms() + 1000;
    let claimed = store.claim_deliveries("w1", t, 30_000, 10).await.unwrap();
    assert_eq!(claimed_events(&claimed), [pair("cl-a", &e4)]);
    store.put_subscription(&b).await.unwrap();
    let claimed = store.claim_deliveries("w1", t, 30_000, 10).await.unwrap();
    assert_eq!(claimed_events(&claimed), [pair("cl-b", &e4)]);

    // A limit.
    for seed in ["cl-5", "cl-6"] {
        store.link_blob(&two, &Digest::sha256_of(seed.as_bytes()), 1, true, None, ANON).await.unwrap();
    }
    store
        .purge_deliveries(&DeliveryFilter { state: Some(DeliveryPhase::Pending), ..DeliveryFilter::default() })
        .await
        .unwrap();
    store.link_blob(&one, &Digest::sha256_of(b"cl-7"), 1, true, None, ANON).await.unwrap();
    store.link_blob(&two, &Digest::sha256_of(b"cl-8"), 1, true, None, ANON).await.unwrap();
    assert_eq!(store.claim_deliveries("w1", t + 1, 30_000, 1).await.unwrap().len(), 1);
    assert_eq!(store.claim_deliveries("w1", t + 1, 30_000, 10).await.unwrap().len(), 2, "the other two lines");

    for name in ["cl-a", "cl-b"] {
        assert!(store.delete_subscription(name).await.unwrap());
    }
}

/// Owners racing for deliveries never get the same one, and each line is still delivered
/// in order, once each.
async fn claim_races(store: &dyn MetadataStore) {
    store.put_subscription(&hook("race-hook", &["clr/*"])).await.unwrap();
    store.put_subscription(&hook("race-hook-2", &["clr/r1*"])).await.unwrap();
    let mut at = last_seq(store).await;
    let repos: Vec<RepoName> = (0..12).map(|i| repo(&format!("clr/r{i}"))).collect();
    for round in 0..3 {
        let links = repos.iter().map(|r| {
            let d = Digest::sha256_of(format!("{r}-{round}").as_bytes());
            async move { store.link_blob(r, &d, 1, true, None, ANON).await.unwrap() }
        });
        futures::future::join_all(links).await;
    }
    let events = new_events(store, &mut at, "clr/").await;
    let seq_of: BTreeMap<String, i64> = events.iter().map(|e| (e.id.clone(), e.seq)).collect();
    let total = deliveries_of(store, "race-hook").await.len() + deliveries_of(store, "race-hook-2").await.len();
    assert_eq!(total, 12 * 4 + 3 * 4, "repository.create and three blob.push per repository");

    let t = unix_now_ms() + 1000;
    let mut delivered_in_order: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..50 {
        let claims = (0..8).map(|task| {
            let owner = if task % 2 == 0 { "owner-a" } else { "owner-b" };
            async move { (owner, store.claim_deliveries(owner, t + round, 600_000, 5).await.unwrap()) }
        });
        let results = futures::future::join_all(claims).await;
        let mut this_round = std::collections::BTreeSet::new();
        let mut lines = std::collections::BTreeSet::new();
        for (_, claimed) in &results {
            for c in claimed {
                assert!(this_round.insert(c.delivery.id), "delivery {} claimed twice", c.delivery.id);
                assert!(seen.insert(c.delivery.id), "delivery {} claimed again after it was delivered", c.delivery.id);
                let line = (c.delivery.subscription.clone(), c.delivery.event.repository.clone());
                assert!(lines.insert(line.clone()), "two deliveries of {line:?} in flight");
            }
        }
        if this_round.is_empty() {
            break;
        }
        for (owner, claimed) in results {
            for c in claimed {
                let line = (c.delivery.subscription.clone(), c.delivery.event.repository.clone());
                delivered_in_order.entry(line).or_default().push(seq_of[&c.delivery.event.id]);
                assert!(store.finish_delivery(c.delivery.id, owner, &delivered(200), t + round).await.unwrap());
            }
        }
    }
    assert_eq!(seen.len(), total, "every delivery claimed once");
    assert_eq!(delivered_in_order.len(), 12 + 3);
    for (line, seqs) in &delivered_in_order {
        assert_eq!(seqs.len(), 4, "{line:?}");
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{line:?} out of order: {seqs:?}");
    }
    for name in ["race-hook", "race-hook-2"] {
        assert!(
            deliveries_of(store, name).await.iter().all(|d| d.state == DeliveryState::Delivered && d.attempts == 1)
        );
        assert!(store.delete_subscription(name).await.unwrap());
    }
}

/// Listing by every filter, counts per state, replay and purge.
async fn delivery_admin(store: &dyn MetadataStore) {
    let (one, two) = (repo("ad/one"), repo("ad/two"));
    store.create_repository(&one, &keyed(None), ANON).await.unwrap();
    store.create_repository(&two, &keyed(None), ANON).await.unwrap();
    for s in [hook("ad-a", &["ad/*"]), hook("ad-b", &["ad/one"]), hook("ad-z", &["nothing/*"])] {
        store.put_subscription(&s).await.unwrap();
    }
    let mut at = last_seq(store).await;
    for (r, seed) in [(&one, "ad-1"), (&two, "ad-2"), (&one, "ad-3")] {
        store.link_blob(r, &Digest::sha256_of(seed.as_bytes()), 1, true, None, ANON).await.unwrap();
    }
    let ev = new_events(store, &mut at, "ad/").await;
    let (e1, e2, e3) = (&ev[0], &ev[1], &ev[2]);
    let list = |filter: DeliveryFilter| async move {
        let found = store.deliveries(&filter).await.unwrap();
        found.iter().map(|d| (d.subscription.clone(), d.event.id.clone())).collect::<Vec<_>>()
    };
    let all = DeliveryFilter::default();
    let by_sub = |s: &str| DeliveryFilter { subscription: Some(s.into()), ..DeliveryFilter::default() };

    // Newest first, by every filter.
    assert_eq!(
        list(all.clone()).await,
        [pair("ad-b", e3), pair("ad-a", e3), pair("ad-a", e2), pair("ad-b", e1), pair("ad-a", e1)]
    );
    assert_eq!(list(by_sub("ad-a")).await, [pair("ad-a", e3), pair("ad-a", e2), pair("ad-a", e1)]);
    assert_eq!(list(DeliveryFilter { limit: 2, ..by_sub("ad-a") }).await, [pair("ad-a", e3), pair("ad-a", e2)]);
    assert_eq!(list(DeliveryFilter { limit: 1, ..all.clone() }).await, [pair("ad-b", e3)]);
    let in_two = DeliveryFilter { repository: Some("ad/two".into()), ..all.clone() };
    assert_eq!(list(in_two).await, [pair("ad-a", e2)]);
    let of_e1 = DeliveryFilter { event_id: Some(e1.id.clone()), ..all.clone() };
    assert_eq!(list(of_e1.clone()).await, [pair("ad-b", e1), pair("ad-a", e1)]);
    let a_e2 = delivery_of(store, "ad-a", e2).await.id;
    assert_eq!(list(DeliveryFilter { id: Some(a_e2), ..all.clone() }).await, [pair("ad-a", e2)]);
    assert!(list(DeliveryFilter { id: Some(-1), ..all.clone() }).await.is_empty());
    assert!(list(DeliveryFilter { state: Some(DeliveryPhase::Delivered), ..all.clone() }).await.is_empty());
    assert!(
        list(DeliveryFilter { repository: Some("ad/one".into()), subscription: Some("ad-z".into()), ..all.clone() })
            .await
            .is_empty()
    );

    // One delivered, one dead, one retrying.
    let t = unix_now_ms() + 1000;
    let claimed = store.claim_deliveries("w", t, 30_000, 10).await.unwrap();
    assert_eq!(claimed_events(&claimed), [pair("ad-a", e1), pair("ad-b", e1), pair("ad-a", e2)]);
    let (a1, b1) = (claimed[0].delivery.id, claimed[1].delivery.id);
    assert!(store.finish_delivery(a1, "w", &delivered(200), t).await.unwrap());
    let dead = Outcome::Dead { status: Some(410), error: "gone".into(), duration_ms: 1 };
    assert!(store.finish_delivery(b1, "w", &dead, t).await.unwrap());
    let retry = Outcome::Retry { status: Some(500), error: "oops".into(), duration_ms: 1, next_attempt_ms: t + 5000 };
    assert!(store.finish_delivery(a_e2, "w", &retry, t).await.unwrap());

    let counts: Vec<DeliveryCounts> =
        store.delivery_counts().await.unwrap().into_iter().filter(|c| c.subscription.starts_with("ad-")).collect();
    let count = |s: &str, pending, retrying, delivered, dead| DeliveryCounts {
        subscription: s.into(),
        pending,
        retrying,
        delivered,
        dead,
    };
    assert_eq!(counts, [count("ad-a", 1, 1, 1, 0), count("ad-b", 1, 0, 0, 1), count("ad-z", 0, 0, 0, 0)]);
    assert_eq!(list(DeliveryFilter { state: Some(DeliveryPhase::Dead), ..all.clone() }).await, [pair("ad-b", e1)]);
    // The states as the counts name them: pending is what no attempt failed yet.
    let pending_a = DeliveryFilter { state: Some(DeliveryPhase::Pending), ..by_sub("ad-a") };
    assert_eq!(list(pending_a).await, [pair("ad-a", e3)]);
    let retrying = DeliveryFilter { state: Some(DeliveryPhase::Retrying), ..all.clone() };
    assert_eq!(list(retrying.clone()).await, [pair("ad-a", e2)]);
    let listed = store.deliveries(&retrying).await.unwrap();
    assert_eq!(listed.iter().map(DeliveryPhase::of).collect::<Vec<_>>(), [DeliveryPhase::Retrying]);

    // Replay: pending again from the first attempt, due now, the last error kept; the log goes on.
    let dead_ones = DeliveryFilter { state: Some(DeliveryPhase::Dead), limit: 1, ..all.clone() };
    assert_eq!(store.replay_deliveries(&dead_ones, t + 10).await.unwrap(), 1);
    let b1_row = delivery_of(store, "ad-b", e1).await;
    assert_eq!((b1_row.state, b1_row.attempts, b1_row.next_attempt_ms), (DeliveryState::Pending, 0, t + 10));
    assert_eq!(b1_row.last_error.as_deref(), Some("gone"));
    // (ad-a's line in ad/one moved on to e3 once e1 was delivered.)
    let claimed = store.claim_deliveries("w", t + 10, 30_000, 10).await.unwrap();
    assert_eq!(claimed_events(&claimed), [pair("ad-b", e1), pair("ad-a", e3)]);
    assert!(store.finish_delivery(claimed[1].delivery.id, "w", &delivered(200), t + 10).await.unwrap());
    // A delivery in flight (a live lease) is not replayed: it is never sent twice at once.
    assert_eq!(store.replay_deliveries(&DeliveryFilter { id: Some(b1), ..all.clone() }, t + 11).await.unwrap(), 0);
    assert!(store.finish_delivery(b1, "w", &delivered(200), t + 12).await.unwrap());
    // Once delivered it can be replayed, and another owner sends it again.
    assert_eq!(store.replay_deliveries(&DeliveryFilter { id: Some(b1), ..all.clone() }, t + 12).await.unwrap(), 1);
    let claimed = store.claim_deliveries("w2", t + 12, 30_000, 10).await.unwrap();
    assert_eq!(claimed_events(&claimed), [pair("ad-b", e1)]);
    assert!(store.finish_delivery(b1, "w2", &delivered(202), t + 13).await.unwrap());
    let numbers: Vec<u32> = store.delivery_attempts(b1).await.unwrap().iter().map(|a| a.number).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(delivery_of(store, "ad-b", e1).await.attempts, 1, "counted since the replay");

    // Replaying a delivered head puts its line back in order: it goes again before the next.
    assert_eq!(store.replay_deliveries(&of_e1, t + 20).await.unwrap(), 2);
    let claimed = store.claim_deliveries("w", t + 20, 30_000, 10).await.unwrap();
    assert_eq!(claimed_events(&claimed), [pair("ad-a", e1), pair("ad-b", e1)]);

    // Purge: the deliveries and their attempts.
    assert_eq!(store.purge_deliveries(&by_sub("ad-b")).await.unwrap(), 2);
    assert!(list(by_sub("ad-b")).await.is_empty());
    assert!(store.delivery_attempts(b1).await.unwrap().is_empty());
    assert_eq!(store.purge_deliveries(&DeliveryFilter { id: Some(a_e2), ..all.clone() }).await.unwrap(), 1);
    assert_eq!(list(by_sub("ad-a")).await, [pair("ad-a", e3), pair("ad-a", e1)]);
    assert_eq!(store.purge_deliveries(&by_sub("ad-b")).await.unwrap(), 0);
    let counts: Vec<DeliveryCounts> =
        store.delivery_counts().await.unwrap().into_iter().filter(|c| c.subscription.starts_with("ad-")).collect();
    assert_eq!(counts, [count("ad-a", 1, 0, 1, 0), count("ad-b", 0, 0, 0, 0), count("ad-z", 0, 0, 0, 0)]);

    for name in ["ad-a", "ad-b", "ad-z"] {
        assert!(store.delete_subscription(name).await.unwrap());
    }
}

/// The configuration's subscriptions are replaced as a whole; `api` ones are never touched.
async fn config_subscriptions(store: &dyn MetadataStore) {
    let ours = |all: Vec<Subscription>| {
        all.into_iter().filter(|s| s.name.starts_with("cfg-")).map(|s| (s.name.clone(), s)).collect::<BTreeMap<_, _>>()
    };
    let api = hook("cfg-api", &[]);
    assert!(store.put_subscription(&api).await.unwrap());
    let (one, two) = (hook("cfg-one", &["cfg/*"]), hook("cfg-two", &[]));
    store.sync_config_subscriptions(&[one.clone(), two.clone()]).await.unwrap();
    let now = ours(store.subscriptions().await.unwrap());
    assert_eq!(now.keys().collect::<Vec<_>>(), ["cfg-api", "cfg-one", "cfg-two"]);
    assert_eq!(now["cfg-api"].source, SubscriptionSource::Api);
    assert_eq!(now["cfg-one"].source, SubscriptionSource::Config, "forced");
    assert_eq!(now["cfg-one"].url, one.url);
    let (api_created, one_created) = (now["cfg-api"].created_at, now["cfg-one"].created_at);

    // A config subscription's deliveries go when it does.
    store.link_blob(&repo("cfg/x"), &Digest::sha256_of(b"cfg"), 1, true, None, ANON).await.unwrap();
    assert_eq!(deliveries_of(store, "cfg-one").await.len(), 2);

    // Changed and added ones are upserted, vanished ones deleted.
    let one_changed = Subscription { url: "https://hooks.test/one".into(), ..one.clone() };
    let three = hook("cfg-three", &[]);
    store.sync_config_subscriptions(&[three.clone(), one_changed.clone()]).await.unwrap();
    let now = ours(store.subscriptions().await.unwrap());
    assert_eq!(now.keys().collect::<Vec<_>>(), ["cfg-api", "cfg-one", "cfg-three"]);
    assert_eq!(now["cfg-one"].url, "https://hooks.test/one");
    assert_eq!(now["cfg-one"].created_at, one_created, "kept");
    assert_eq!(deliveries_of(store, "cfg-one").await.len(), 2, "kept with it");
    assert_eq!(now["cfg-api"], Subscription { created_at: api_created, ..api.clone() });

    // A name an api subscription holds: refused, and nothing changes.
    let before = ours(store.subscriptions().await.unwrap());
    let clash = Subscription { url: "https://hooks.test/clash".into(), ..hook("cfg-api", &[]) };
    let three_changed = Subscription { url: "https://hooks.test/three".into(), ..three.clone() };
    let err = store.sync_config_subscriptions(&[three_changed, clash]).await.unwrap_err();
    assert!(matches!(err, Error::Conflict), "{err:?}");
    assert_eq!(ours(store.subscriptions().await.unwrap()), before);

    // Nothing configured: only the api one is left.
    store.sync_config_subscriptions(&[]).await.unwrap();
    assert_eq!(ours(store.subscriptions().await.unwrap()).keys().collect::<Vec<_>>(), ["cfg-api"]);
    assert!(deliveries_of(store, "cfg-one").await.is_empty());
    assert!(store.delete_subscription("cfg-api").await.unwrap());
}

/// Deleting a repository: refused while it holds manifests unless forced; takes its tags,
/// manifests, blob links, uploads, repository tags and policy, leaves the blobs and every
/// other repository; reports repository.delete.
async fn repository_deletion(store: &dyn MetadataStore) {
    let origin = Origin::command("berth admin");
    let (r, keep) = (repo("rd/app"), repo("rd/keep"));
    let d = Digest::sha256_of(b"rd-layer");
    store.link_blob(&r, &d, 4, true, None, ANON).await.unwrap();
    store.link_blob(&keep, &d, 4, true, None, ANON).await.unwrap();
    let copy = sealed("rdk", "rdk.1", 4, "rd-obj");
    store.add_blob_copy(&d, &copy).await.unwrap();
    let need = vec![RequiredContent { digest: d.clone(), size: 4 }];
    let m = manifest(&r, r#"{"rd":1}"#, need.clone(), &["v1", "latest"]);
    store.put_manifest(&m, ANON).await.unwrap();
    store.put_manifest(&manifest(&keep, r#"{"rd":1}"#, need, &["v1"]), ANON).await.unwrap();
    let upload = |r: &RepoName| UploadRecord {
        id: uuid::Uuid::new_v4().to_string().parse().unwrap(),
        repo: r.clone(),
        offset: 0,
        hash_state: vec![],
        parts: vec![],
        created_at: 1,
        updated_at: 1,
        sealing: None,
    };
    let (up, up_keep) = (upload(&r), upload(&keep));
    store.create_upload(&up, &UNBOUNDED).await.unwrap();
    store.create_upload(&up_keep, &UNBOUNDED).await.unwrap();
    store.tag_repository(&r, &tags_of(&[("team", "a")]), &[]).await.unwrap();
    store.tag_repository(&keep, &tags_of(&[("team", "b")]), &[]).await.unwrap();
    for target in [repo_target("rd/app"), repo_target("rd/keep")] {
        assert!(store.put_policy(&target, RESOURCE_POLICY, "{}").await.unwrap());
    }
    let mut at = last_seq(store).await;

    assert_eq!(store.delete_repository(&repo("rd/none"), true, &origin).await.unwrap(), RepositoryDeleted::NotFound);
    assert_eq!(
        store.delete_repository(&r, false, &origin).await.unwrap(),
        RepositoryDeleted::NotEmpty { manifests: 1 }
    );
    assert_eq!(store.list_tags(&r, &page(None, 10)).await.unwrap().unwrap(), ["latest", "v1"], "nothing changed");
    assert!(store.get_upload(&up.id).await.unwrap().is_some());
    assert!(new_events(store, &mut at, "rd/").await.is_empty());

    assert_eq!(store.delete_repository(&r, true, &origin).await.unwrap(), RepositoryDeleted::Deleted);
    let ev = new_events(store, &mut at, "rd/").await;
    assert_eq!(kinds(&ev), [(EventKind::RepositoryDelete, "rd/app", None)]);
    assert_eq!(ev[0].origin, origin);
    assert_eq!(store.repository_key(&r).await.unwrap(), None);
    assert_eq!(store.list_tags(&r, &page(None, 10)).await.unwrap(), None);
    assert!(store.get_manifest(&r, &Reference::Digest(m.digest.clone())).await.unwrap().is_none());
    assert!(store.get_manifest(&r, &Reference::Tag(tag("v1"))).await.unwrap().is_none());
    assert_eq!(store.repo_blob(&r, &d).await.unwrap(), None);
    assert!(store.repository_blobs(&r).await.unwrap().is_empty());
    assert!(store.get_upload(&up.id).await.unwrap().is_none());
    assert!(store.repository_tags(&r).await.unwrap().is_empty());
    assert!(store.policies(&repo_target("rd/app")).await.unwrap().is_empty());
    assert!(!store.list_repositories(&page(Some("rd/"), 100)).await.unwrap().contains(&"rd/app".to_string()));

    // The blob stays, and every other repository as it was.
    assert_eq!(store.blob_copy(&d, "rdk").await.unwrap(), Some(copy));
    assert_eq!(store.any_blob(&d).await.unwrap(), Some(4));
    assert_eq!(store.repo_blob(&keep, &d).await.unwrap(), Some(4));
    assert_eq!(store.list_tags(&keep, &page(None, 10)).await.unwrap().unwrap(), ["v1"]);
    assert!(store.get_upload(&up_keep.id).await.unwrap().is_some());
    assert_eq!(store.repository_tags(&keep).await.unwrap(), tags_of(&[("team", "b")]));
    assert_eq!(store.policies(&repo_target("rd/keep")).await.unwrap().len(), 1);

    assert_eq!(store.delete_repository(&r, true, &origin).await.unwrap(), RepositoryDeleted::NotFound);
    // An empty repository needs no force.
    let empty = repo("rd/empty");
    store.create_repository(&empty, &keyed(None), ANON).await.unwrap();
    assert_eq!(store.delete_repository(&empty, false, &origin).await.unwrap(), RepositoryDeleted::Deleted);

    // Pushing again creates it again.
    new_events(store, &mut at, "rd/").await;
    store.link_blob(&r, &d, 4, true, None, ANON).await.unwrap();
    let ev = new_events(store, &mut at, "rd/").await;
    assert_eq!(kinds(&ev), [(EventKind::RepositoryCreate, "rd/app", None), (EventKind::BlobPush, "rd/app", None)]);
    assert_eq!(store.list_tags(&r, &page(None, 10)).await.unwrap(), Some(vec![]));
}

/// A push racing a deletion of its repository commits either before it (and is deleted with
/// it) or after it (and creates the repository again, with its own repository.create).
async fn repository_deletion_races(store: &dyn MetadataStore) {
    let mut at = last_seq(store).await;
    let base = Digest::sha256_of(b"rdr-base");
    for i in 0..10 {
        let r = repo(&format!("rdr/r{i}"));
        store.link_blob(&r, &base, 1, true, None, ANON).await.unwrap();
        store.put_manifest(&manifest(&r, &format!("{{\"rdr\":{i}}}"), vec![], &["old"]), ANON).await.unwrap();
        new_events(store, &mut at, "rdr/").await;

        let d = Digest::sha256_of(format!("rdr-{i}").as_bytes());
        let pushed = manifest(&r, &format!("{{\"rdr-new\":{i}}}"), vec![], &["new"]);
        let (deleted, linked, put) = futures::join!(
            store.delete_repository(&r, true, ANON),
            store.link_blob(&r, &d, 1, true, None, ANON),
            store.put_manifest(&pushed, ANON),
        );
        assert_eq!(deleted.unwrap(), RepositoryDeleted::Deleted);
        linked.unwrap();
        put.unwrap();

        let ev: Vec<Event> = new_events(store, &mut at, "rdr/").await;
        let position =
            |kind: EventKind, tag: Option<&str>| ev.iter().position(|e| e.kind == kind && e.tag.as_deref() == tag);
        let deletion = position(EventKind::RepositoryDelete, None).unwrap();
        let link = position(EventKind::BlobPush, None).unwrap();
        let push = position(EventKind::ManifestPush, Some("new")).unwrap();
        // What committed after the deletion is there, and began by creating the repository.
        assert_eq!(store.repo_blob(&r, &d).await.unwrap().is_some(), link > deletion, "{:?}", kinds(&ev));
        let found = store.get_manifest(&r, &Reference::Tag(tag("new"))).await.unwrap();
        assert_eq!(found.is_some(), push > deletion, "{:?}", kinds(&ev));
        assert!(store.get_manifest(&r, &Reference::Tag(tag("old"))).await.unwrap().is_none());
        let after: Vec<EventKind> = ev[deletion + 1..].iter().map(|e| e.kind).collect();
        if after.is_empty() {
            assert_eq!(store.repository_key(&r).await.unwrap(), None);
        } else {
            assert_eq!(after[0], EventKind::RepositoryCreate, "{:?}", kinds(&ev));
            assert_eq!(after.iter().filter(|k| **k == EventKind::RepositoryCreate).count(), 1);
        }
        let before = &ev[..deletion];
        assert!(before.iter().all(|e| e.kind != EventKind::RepositoryCreate), "{:?}", kinds(&ev));
    }
}

/// A reader tailing `events(after)` while writers in other repositories commit sees every
/// event: nothing commits behind its cursor (a `seq` lower than one already read).
async fn events_feed_has_no_gaps(store: &dyn MetadataStore) {
    const WRITERS: usize = 8;
    const PUSHES: usize = 25;
    let start = last_seq(store).await;
    let done = std::sync::atomic::AtomicUsize::new(0);
    let writers = futures::future::join_all((0..WRITERS).map(|w| {
        let done = &done;
        async move {
            let r = repo(&format!("feed/w{w}"));
            for i in 0..PUSHES {
                let m = manifest(&r, &format!("{{\"feed\":[{w},{i}]}}"), vec![], &["t"]);
                store.put_manifest(&m, ANON).await.unwrap();
            }
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }));
    let reader = async {
        let mut seen = Vec::new();
        let mut after = start;
        loop {
            let finished = done.load(std::sync::atomic::Ordering::SeqCst) == WRITERS;
            let batch = store.events(after, 1000).await.unwrap();
            if let Some(e) = batch.last() {
                after = e.seq;
            }
            seen.extend(batch.into_iter().filter(|e| e.repository.starts_with("feed/")).map(|e| e.seq));
            if finished {
                return seen;
            }
            tokio::task::yield_now().await;
        }
    };
    let (_, seen) = futures::join!(writers, reader);
    let all: Vec<i64> = store
        .events(start, 1_000_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.repository.starts_with("feed/"))
        .map(|e| e.seq)
        .collect();
    // A repository.create and a manifest.push per writer's first push, a manifest.push after.
    assert_eq!(all.len(), WRITERS * (PUSHES + 1));
    assert_eq!(seen, all, "the tailing reader missed events that committed behind its cursor");
}

/// Housekeeping: finished deliveries past their keep time go, then events nothing needs.
async fn pruning(store: &dyn MetadataStore) {
    store.put_subscription(&hook("pr-hook", &["prn/*"])).await.unwrap();
    let mut at = last_seq(store).await;
    let (a, b) = (repo("prn/a"), repo("prn/b"));
    store.link_blob(&a, &Digest::sha256_of(b"prn-1"), 1, true, None, ANON).await.unwrap();
    store.link_blob(&b, &Digest::sha256_of(b"prn-2"), 1, true, None, ANON).await.unwrap();
    let ev = new_events(store, &mut at, "prn/").await;
    assert_eq!(ev.len(), 4);
    let (a_create, a_push, b_create, b_push) = (&ev[0], &ev[1], &ev[2], &ev[3]);

    let t = unix_now_ms() + 1000;
    let claimed = store.claim_deliveries("w", t, 30_000, 10).await.unwrap();
    assert_eq!(claimed_events(&claimed), [pair("pr-hook", a_create), pair("pr-hook", b_create)]);
    assert!(store.finish_delivery(claimed[0].delivery.id, "w", &delivered(200), t).await.unwrap());
    let dead = Outcome::Dead { status: Some(500), error: "no".into(), duration_ms: 1 };
    assert!(store.finish_delivery(claimed[1].delivery.id, "w", &dead, t).await.unwrap());
    let claimed = store.claim_deliveries("w", t, 30_000, 10).await.unwrap();
    assert_eq!(claimed_events(&claimed), [pair("pr-hook", a_push), pair("pr-hook", b_push)]);
    assert!(store.finish_delivery(claimed[0].delivery.id, "w", &delivered(200), t + 10_000).await.unwrap());
    let events_now =
        || async { store.events(0, 1_000_000).await.unwrap().into_iter().map(|e| e.id).collect::<Vec<_>>() };

    // Delivered before t + 5000: a_create's delivery; then its event, and every older event
    // no delivery needs (the rest of the suite's). The dead one (updated at t) is kept: dead
    // ones before t only.
    let (deliveries, events) = store.prune_events(t + 5000, t).await.unwrap();
    assert_eq!(deliveries, 1);
    assert!(events >= 1, "{events}");
    let left = events_now().await;
    assert!(!left.contains(&a_create.id));
    for e in [a_push, b_create, b_push] {
        assert!(left.contains(&e.id), "{e:?} is still needed");
    }
    assert_eq!(store.prune_events(t + 5000, t).await.unwrap(), (0, 0), "nothing more");

    let (deliveries, events) = store.prune_events(t + 20_000, t + 1).await.unwrap();
    assert_eq!((deliveries, events), (2, 2), "a_push delivered, b_create dead");
    assert_eq!(events_now().await, std::slice::from_ref(&b_push.id), "only the pending one's event is left");
    assert_eq!(deliveries_of(store, "pr-hook").await.len(), 1);

    // Once nothing needs even the newest event, it goes too, and seq never goes back.
    assert!(store.delete_subscription("pr-hook").await.unwrap());
    assert_eq!(store.prune_events(t + 20_000, t + 20_000).await.unwrap(), (0, 1));
    assert!(store.events(0, 10).await.unwrap().is_empty());
    store.link_blob(&a, &Digest::sha256_of(b"prn-3"), 1, true, None, ANON).await.unwrap();
    let next = store.events(0, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert!(next[0].seq > b_push.seq, "{} after {}", next[0].seq, b_push.seq);
}

/// The replication configuration and its destinations (subscriptions of kind replication)
/// are written together; a destination receives the pushes it matches in the push's
/// transaction like any subscription; statuses are per image and destination, and go with
/// their destination.
async fn replication_records(store: &dyn MetadataStore) {
    assert_eq!(store.replication_config().await.unwrap(), None);
    let destination = |name: &str, repositories: &[&str]| {
        let mut s = hook(name, repositories);
        s.events = vec![EventKind::ManifestPush];
        s
    };
    // A webhook's name is not a destination's: refused, nothing written.
    assert!(store.put_subscription(&hook("repl-hook", &["repl/*"])).await.unwrap());
    let clash = store.put_replication_config(r#"{"rules":[]}"#, "api", &[destination("repl-hook", &[])]).await;
    assert!(matches!(clash, Err(Error::Conflict)), "{clash:?}");
    assert_eq!(store.replication_config().await.unwrap(), None, "nothing written");
    let hook_now = store.subscriptions().await.unwrap().into_iter().find(|s| s.name == "repl-hook").unwrap();
    assert_eq!(hook_now.kind, SubscriptionKind::Webhook);

    let (a, b) = (destination("repl-a", &["repl/prod*"]), destination("repl-b", &["repl/other*"]));
    store.put_replication_config(r#"{"rules":[1]}"#, "config", &[a.clone(), b.clone()]).await.unwrap();
    let stored = store.replication_config().await.unwrap().unwrap();
    assert_eq!((stored.document.as_str(), stored.source.as_str()), (r#"{"rules":[1]}"#, "config"));
    assert!(stored.updated_at > 1_700_000_000);
    let subs: Vec<Subscription> =
        store.subscriptions().await.unwrap().into_iter().filter(|s| s.name.starts_with("repl-")).collect();
    let shown: Vec<(&str, SubscriptionKind, SubscriptionSource)> =
        subs.iter().map(|s| (s.name.as_str(), s.kind, s.source)).collect();
    assert_eq!(
        shown,
        [
            ("repl-a", SubscriptionKind::Replication, SubscriptionSource::Api),
            ("repl-b", SubscriptionKind::Replication, SubscriptionSource::Api),
            ("repl-hook", SubscriptionKind::Webhook, SubscriptionSource::Api),
        ]
    );
    let a_created = subs[0].created_at;

    // A push to repl/prod/app is owed to repl-a (and the webhook), not to repl-b.
    let app = repo("repl/prod/app");
    store.put_manifest(&manifest(&app, r#"{"repl":1}"#, vec![], &["v1"]), ANON).await.unwrap();
    let owed = deliveries_of(store, "repl-a").await;
    assert_eq!(owed.len(), 1);
    assert_eq!((owed[0].event.kind, owed[0].event.tag.as_deref()), (EventKind::ManifestPush, Some("v1")));
    assert!(deliveries_of(store, "repl-b").await.is_empty());
    let digest = owed[0].event.digest.clone().unwrap();

    let status = |destination: &str, state, reason: Option<&str>| ReplicationStatus {
        destination: destination.into(),
        repository: app.to_string(),
        digest: digest.clone(),
        state,
        reason: reason.map(str::to_owned),
        updated_ms: 1_000,
    };
    assert!(store.replication_statuses(app.as_str(), &digest).await.unwrap().is_empty());
    store.set_replication_status(&status("repl-b", ReplicationState::Pending, None)).await.unwrap();
    store.set_replication_status(&status("repl-a", ReplicationState::InProgress, Some("refused"))).await.unwrap();
    store.set_replication_status(&status("repl-a", ReplicationState::Complete, None)).await.unwrap();
    assert_eq!(
        store.replication_statuses(app.as_str(), &digest).await.unwrap(),
        [status("repl-a", ReplicationState::Complete, None), status("repl-b", ReplicationState::Pending, None)],
        "replaced per destination, by destination"
    );
    assert!(store.replication_statuses(app.as_str(), "sha256:other").await.unwrap().is_empty());

    // Without repl-b: it goes with its statuses; repl-a keeps its deliveries and created_at.
    let a2 = Subscription { url: "http://127.0.0.1:9/moved".into(), ..a.clone() };
    store.put_replication_config(r#"{"rules":[2]}"#, "api", &[a2]).await.unwrap();
    let subs: Vec<Subscription> =
        store.subscriptions().await.unwrap().into_iter().filter(|s| s.name.starts_with("repl-")).collect();
    assert_eq!(subs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["repl-a", "repl-hook"]);
    assert_eq!((subs[0].url.as_str(), subs[0].created_at), ("http://127.0.0.1:9/moved", a_created));
    assert_eq!(deliveries_of(store, "repl-a").await.len(), 1, "deliveries kept");
    assert_eq!(
        store.replication_statuses(app.as_str(), &digest).await.unwrap(),
        [status("repl-a", ReplicationState::Complete, None)]
    );
    assert_eq!(store.replication_config().await.unwrap().unwrap().source, "api");

    // None left: the webhook stays.
    store.put_replication_config(r#"{"rules":[]}"#, "api", &[]).await.unwrap();
    let names: Vec<String> = store
        .subscriptions()
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.name.starts_with("repl-"))
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["repl-hook"]);
    assert!(store.delete_subscription("repl-hook").await.unwrap());
    assert_eq!(store.delete_repository(&app, true, ANON).await.unwrap(), RepositoryDeleted::Deleted);
}

/// Only the holder renews a delivery's lease, and only while it holds it; renewed, the
/// delivery stays in flight past the end of its first lease, and is claimable after the new one.
async fn lease_renewal(store: &dyn MetadataStore) {
    let r = repo("lr/one");
    store.put_subscription(&hook("lr-a", &["lr/*"])).await.unwrap();
    store.link_blob(&r, &Digest::sha256_of(b"lr-1"), 1, true, None, ANON).await.unwrap();
    let t = unix_now_ms() + 1000;
    let claimed: Vec<Claimed> = store
        .claim_deliveries("w1", t, 30_000, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.delivery.subscription == "lr-a")
        .collect();
    assert_eq!(claimed.len(), 1);
    let id = claimed[0].delivery.id;
    assert!(!store.renew_delivery_lease(id, "w2", t, t + 60_000).await.unwrap(), "not the holder");
    assert!(!store.renew_delivery_lease(id, "w1", t + 30_000, t + 90_000).await.unwrap(), "already run out");
    assert!(store.renew_delivery_lease(id, "w1", t + 1, t + 60_000).await.unwrap());
    let mine = |cs: Vec<Claimed>| cs.iter().any(|c| c.delivery.id == id);
    assert!(!mine(store.claim_deliveries("w2", t + 40_000, 30_000, 100).await.unwrap()), "still in flight");
    assert!(mine(store.claim_deliveries("w2", t + 61_000, 30_000, 100).await.unwrap()), "claimable after");
    assert!(store.delete_subscription("lr-a").await.unwrap());
}
