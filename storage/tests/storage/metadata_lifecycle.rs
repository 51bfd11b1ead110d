//! Lifecycle policies and the conditional deletion of a lifecycle run
//! ([`Lifecycle`](berth_storage::metadata::Lifecycle)), part of the metadata suite: run against
//! every store. Each case works on repositories of its own and deletes them at the end.

use berth_oci::{Digest, RepoName, Tag};
use berth_storage::metadata::{
    EventKind, Expired, LifecyclePreviewRecord, NewManifest, NewRepository, Origin, RepositoryDeleted, RequiredContent,
};
use berth_storage::{Error, MetadataStore};

const ANON: &Origin =
    &Origin { actor: None, request_id: None, addr: None, method: None, host: None, scheme: None, user_agent: None };

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

pub async fn suite(store: &dyn MetadataStore) {
    policies(store).await;
    conditional_expiry(store).await;
    previews(store).await;
}

/// A preview needs its repository, is replaced by the next one, and goes with its repository.
async fn previews(store: &dyn MetadataStore) {
    let r = repo("lifecycle/previews");
    let first = LifecyclePreviewRecord { policy: POLICY.into(), result: "[1]".into(), started_at: 1_000 };
    assert!(matches!(store.put_lifecycle_preview(&r, &first).await, Err(Error::NotFound)), "no repository");
    assert_eq!(store.lifecycle_preview(&r).await.unwrap(), None);

    store.create_repository(&r, &NewRepository::with_key(None), ANON).await.unwrap();
    assert_eq!(store.lifecycle_preview(&r).await.unwrap(), None, "none started");
    store.put_lifecycle_preview(&r, &first).await.unwrap();
    assert_eq!(store.lifecycle_preview(&r).await.unwrap(), Some(first.clone()), "as written");
    let second = LifecyclePreviewRecord { policy: "other".into(), result: "[]".into(), started_at: 2_000 };
    store.put_lifecycle_preview(&r, &second).await.unwrap();
    assert_eq!(store.lifecycle_preview(&r).await.unwrap(), Some(second), "replaced");

    assert_eq!(store.delete_repository(&r, true, ANON).await.unwrap(), RepositoryDeleted::Deleted);
    store.create_repository(&r, &NewRepository::with_key(None), ANON).await.unwrap();
    assert_eq!(store.lifecycle_preview(&r).await.unwrap(), None, "went with its repository");
    assert_eq!(store.delete_repository(&r, true, ANON).await.unwrap(), RepositoryDeleted::Deleted);
}

const POLICY: &str = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;

/// Put (insert, replace), get, list, evaluated, delete; a policy needs its repository and goes
/// with it.
async fn policies(store: &dyn MetadataStore) {
    let (a, b) = (repo("lifecycle/policies-a"), repo("lifecycle/policies-b"));
    let missing = repo("lifecycle/policies-none");
    assert!(matches!(store.put_lifecycle_policy(&missing, POLICY).await, Err(Error::NotFound)), "no repository");
    assert_eq!(store.lifecycle_policy(&missing).await.unwrap(), None);
    assert!(!store.delete_lifecycle_policy(&missing).await.unwrap());

    for r in [&a, &b] {
        store.create_repository(r, &NewRepository::with_key(None), ANON).await.unwrap();
    }
    assert_eq!(store.lifecycle_policy(&a).await.unwrap(), None, "none yet");
    store.put_lifecycle_policy(&b, "first").await.unwrap();
    store.put_lifecycle_policy(&a, POLICY).await.unwrap();
    let got = store.lifecycle_policy(&a).await.unwrap().unwrap();
    assert_eq!(got.policy, POLICY, "as written");
    assert_eq!((got.last_evaluated_at, got.last_expired, got.last_kept), (None, 0, 0), "never run");
    assert!(got.updated_at > 0);
    store.put_lifecycle_policy(&b, "second").await.unwrap();
    assert_eq!(store.lifecycle_policy(&b).await.unwrap().unwrap().policy, "second", "replaced");
    let listed: Vec<RepoName> = store
        .lifecycle_repositories()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.as_str().starts_with("lifecycle/policies"))
        .collect();
    assert_eq!(listed, [a.clone(), b.clone()], "by name");

    store.lifecycle_evaluated(&a, 1_234, 5, 2).await.unwrap();
    let got = store.lifecycle_policy(&a).await.unwrap().unwrap();
    assert_eq!((got.last_evaluated_at, got.last_expired, got.last_kept), (Some(1_234), 5, 2));
    store.put_lifecycle_policy(&a, POLICY).await.unwrap();
    let got = store.lifecycle_policy(&a).await.unwrap().unwrap();
    assert_eq!(got.last_evaluated_at, Some(1_234), "a new policy text keeps the record of the last run");
    store.lifecycle_evaluated(&missing, 1_234, 0, 0).await.unwrap();

    assert!(store.delete_lifecycle_policy(&a).await.unwrap());
    assert!(!store.delete_lifecycle_policy(&a).await.unwrap(), "already gone");
    assert_eq!(store.lifecycle_policy(&a).await.unwrap(), None);

    // The policy goes with its repository; a repository of the same name starts without one.
    assert_eq!(store.delete_repository(&b, true, ANON).await.unwrap(), RepositoryDeleted::Deleted);
    store.create_repository(&b, &NewRepository::with_key(None), ANON).await.unwrap();
    assert_eq!(store.lifecycle_policy(&b).await.unwrap(), None);
    assert!(!store.lifecycle_repositories().await.unwrap().contains(&b));
    for r in [&a, &b] {
        assert_eq!(store.delete_repository(r, true, ANON).await.unwrap(), RepositoryDeleted::Deleted);
    }
}

/// The manifest goes, with its tags and their events, only while its tags are those given.
async fn conditional_expiry(store: &dyn MetadataStore) {
    let r = repo("lifecycle/expiry");
    let config = Digest::sha256_of(b"lifecycle-config");
    store.link_blob(&r, &config, 10, true, None, ANON).await.unwrap();
    let manifest = |body: &str, tags: &[&str]| NewManifest {
        repo: r.clone(),
        digest: Digest::sha256_of(body.as_bytes()),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        artifact_type: None,
        content: body.as_bytes().to_vec(),
        subject: None,
        annotations: None,
        blobs: vec![RequiredContent { digest: config.clone(), size: 10 }],
        manifests: vec![],
        tags: tags.iter().map(|t| t.parse::<Tag>().unwrap()).collect(),
        mutability: Default::default(),
        references: Default::default(),
    };
    let old = manifest(r#"{"lifecycle":"old"}"#, &["v1", "a"]);
    let retagged = manifest(r#"{"lifecycle":"retagged"}"#, &[]);
    for m in [&old, &retagged] {
        store.put_manifest(m, ANON).await.unwrap();
    }
    let lifecycle = Origin::command("lifecycle");
    // A tag pushed onto the untagged one since the plan: it stays, tag and all.
    store.put_manifest(&NewManifest { tags: vec!["late".parse().unwrap()], ..retagged.clone() }, ANON).await.unwrap();
    assert_eq!(store.expire_manifest(&r, &retagged.digest, &[], &lifecycle).await.unwrap(), Expired::TagsChanged);
    assert!(store.image(&r, &retagged.digest).await.unwrap().is_some());
    // Tags given in another set than the manifest's (one missing) keep it too.
    let v1_only = ["v1".to_string()];
    assert_eq!(store.expire_manifest(&r, &old.digest, &v1_only, &lifecycle).await.unwrap(), Expired::TagsChanged);

    // The tags as they are (sorted): gone, with a tag.delete per tag then manifest.delete,
    // from the origin given.
    let exact = ["a".to_string(), "v1".to_string()];
    let mut after = 0;
    while let Some(e) = store.events(after, 1000).await.unwrap().last() {
        after = e.seq;
    }
    assert_eq!(store.expire_manifest(&r, &old.digest, &exact, &lifecycle).await.unwrap(), Expired::Deleted);
    assert!(store.image(&r, &old.digest).await.unwrap().is_none());
    let events: Vec<_> =
        store.events(after, 1000).await.unwrap().into_iter().filter(|e| e.repository == r.as_str()).collect();
    let kinds: Vec<(EventKind, Option<&str>)> = events.iter().map(|e| (e.kind, e.tag.as_deref())).collect();
    assert_eq!(
        kinds,
        [(EventKind::TagDelete, Some("a")), (EventKind::TagDelete, Some("v1")), (EventKind::ManifestDelete, None)]
    );
    assert!(events.iter().all(|e| e.origin.actor.as_deref() == Some("lifecycle")), "{events:?}");
    assert!(events.iter().all(|e| e.digest.as_deref() == Some(old.digest.to_string().as_str())));

    // A manifest an index lists stays while the index does (an index pushed since the plan).
    let child = manifest(r#"{"lifecycle":"child"}"#, &[]);
    store.put_manifest(&child, ANON).await.unwrap();
    let index_body = r#"{"lifecycle":"index"}"#;
    let index = NewManifest {
        digest: Digest::sha256_of(index_body.as_bytes()),
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        content: index_body.as_bytes().to_vec(),
        blobs: vec![],
        manifests: vec![RequiredContent { digest: child.digest.clone(), size: child.content.len() as u64 }],
        ..manifest(index_body, &[])
    };
    store.put_manifest(&index, ANON).await.unwrap();
    assert_eq!(store.expire_manifest(&r, &child.digest, &[], &lifecycle).await.unwrap(), Expired::Referenced);
    assert_eq!(store.expire_manifest(&r, &index.digest, &[], &lifecycle).await.unwrap(), Expired::Deleted);
    assert_eq!(store.expire_manifest(&r, &child.digest, &[], &lifecycle).await.unwrap(), Expired::Deleted);

    // Again: gone; and in a repository that is not there.
    assert_eq!(store.expire_manifest(&r, &old.digest, &exact, &lifecycle).await.unwrap(), Expired::Gone);
    let none = repo("lifecycle/expiry-none");
    assert_eq!(store.expire_manifest(&none, &old.digest, &[], &lifecycle).await.unwrap(), Expired::Gone);

    assert_eq!(store.delete_repository(&r, true, ANON).await.unwrap(), RepositoryDeleted::Deleted);
}
