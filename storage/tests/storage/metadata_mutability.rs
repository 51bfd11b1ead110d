//! Tag mutability ([`Repositories::repository_settings`], [`Repositories::set_tag_mutability`])
//! and the guard a push carries ([`TagGuard`]), part of the metadata suite: run against every
//! store. Each case works on repositories of its own.

use berth_oci::{Digest, Reference, RepoName, Tag};
use berth_storage::Error;
use berth_storage::MetadataStore;
use berth_storage::metadata::{NewManifest, Origin, Page, RequiredContent, TagGuard, TagMutabilitySetting};

const ANON: &Origin =
    &Origin { actor: None, request_id: None, addr: None, method: None, host: None, scheme: None, user_agent: None };

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

fn tags(list: &[&str]) -> Vec<Tag> {
    list.iter().map(|t| t.parse().unwrap()).collect()
}

fn setting(mode: &str, exclusions: &[&str]) -> TagMutabilitySetting {
    TagMutabilitySetting { mode: mode.into(), exclusions: exclusions.iter().map(|s| s.to_string()).collect() }
}

/// A manifest of `repo` referencing its one layer, to `tags`, guarded by `guard`.
fn manifest(r: &RepoName, body: &str, to: &[&str], guard: TagGuard) -> NewManifest {
    NewManifest {
        repo: r.clone(),
        digest: Digest::sha256_of(body.as_bytes()),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        artifact_type: None,
        content: body.as_bytes().to_vec(),
        subject: None,
        annotations: None,
        blobs: vec![RequiredContent { digest: Digest::sha256_of(b"mutability-layer"), size: 5 }],
        manifests: vec![],
        tags: tags(to),
        mutability: guard,
        references: Default::default(),
    }
}

async fn tag_names(store: &dyn MetadataStore, r: &RepoName) -> Vec<String> {
    store.list_tags(r, &Page { last: None, limit: 100 }).await.unwrap().unwrap()
}

async fn tagged(store: &dyn MetadataStore, r: &RepoName, tag: &str) -> Option<Digest> {
    store.get_manifest(r, &Reference::Tag(tag.parse().unwrap())).await.unwrap().map(|m| m.digest)
}

pub async fn suite(store: &dyn MetadataStore) {
    settings(store).await;
    guarded_pushes(store).await;
    racing_pushes_to_a_new_immutable_tag(store).await;
}

async fn settings(store: &dyn MetadataStore) {
    let r = repo("mutability/settings");
    assert_eq!(store.repository_settings(&r).await.unwrap(), None);
    assert!(!store.set_tag_mutability(&r, "IMMUTABLE", &[]).await.unwrap(), "no such repository");
    assert_eq!(store.repository_settings(&r).await.unwrap(), None, "and none was created");

    store.link_blob(&r, &Digest::sha256_of(b"mutability-layer"), 5, true, None, ANON).await.unwrap();
    let found = store.repository_settings(&r).await.unwrap().unwrap();
    assert_eq!((found.name.as_str(), found.key.as_deref()), ("mutability/settings", None));
    assert!(found.created_at > 1_700_000_000, "{found:?}");
    assert_eq!(found.tag_mutability, TagMutabilitySetting::default());
    assert_eq!(found.tag_mutability, setting("MUTABLE", &[]));

    let filters = ["latest".to_string(), "dev-*".to_string()];
    assert!(store.set_tag_mutability(&r, "IMMUTABLE_WITH_EXCLUSION", &filters).await.unwrap());
    let found = store.repository_settings(&r).await.unwrap().unwrap();
    assert_eq!(found.tag_mutability, setting("IMMUTABLE_WITH_EXCLUSION", &["latest", "dev-*"]));
    assert!(store.set_tag_mutability(&r, "MUTABLE", &[]).await.unwrap());
    assert_eq!(store.repository_settings(&r).await.unwrap().unwrap().tag_mutability, setting("MUTABLE", &[]));
    assert_eq!(
        store.delete_repository(&r, true, ANON).await.unwrap(),
        berth_storage::metadata::RepositoryDeleted::Deleted
    );
}

async fn guarded_pushes(store: &dyn MetadataStore) {
    let r = repo("mutability/guarded");
    store.link_blob(&r, &Digest::sha256_of(b"mutability-layer"), 5, true, None, ANON).await.unwrap();
    let first = manifest(&r, r#"{"m":1}"#, &["v1", "latest"], TagGuard::default());
    store.put_manifest(&first, ANON).await.unwrap();

    assert!(store.set_tag_mutability(&r, "IMMUTABLE", &[]).await.unwrap());
    let immutable = setting("IMMUTABLE", &[]);
    let guard = |held: &[&str]| TagGuard { setting: immutable.clone(), immutable: tags(held) };

    // Decided under the old setting: refused, nothing written.
    let second = manifest(&r, r#"{"m":2}"#, &["v1"], TagGuard::default());
    let err = store.put_manifest(&second, ANON).await.unwrap_err();
    assert!(matches!(err, Error::MutabilityChanged(ref name) if *name == r), "{err:?}");
    assert_eq!(store.get_manifest(&r, &Reference::Digest(second.digest.clone())).await.unwrap(), None);

    // Moving an immutable tag: refused with ECR's sentence, nothing written.
    let second = manifest(&r, r#"{"m":2}"#, &["v1"], guard(&["v1"]));
    let err = store.put_manifest(&second, ANON).await.unwrap_err();
    assert!(matches!(err, Error::TagImmutable { ref tag, .. } if tag.as_str() == "v1"), "{err:?}");
    assert_eq!(
        err.to_string(),
        "The image tag 'v1' already exists in the 'mutability/guarded' repository and cannot be overwritten because the repository is immutable."
    );
    assert_eq!(tagged(store, &r, "v1").await, Some(first.digest.clone()));
    assert_eq!(store.get_manifest(&r, &Reference::Digest(second.digest.clone())).await.unwrap(), None);

    // Several tags: all or nothing (the new tag is not created either).
    let both = manifest(&r, r#"{"m":2}"#, &["v2", "v1"], guard(&["v2", "v1"]));
    assert!(matches!(store.put_manifest(&both, ANON).await, Err(Error::TagImmutable { .. })));
    assert_eq!(tag_names(store, &r).await, ["latest", "v1"]);

    // The same manifest to the same tag again, and a new tag: fine.
    store.put_manifest(&manifest(&r, r#"{"m":1}"#, &["v1", "latest"], guard(&["v1", "latest"])), ANON).await.unwrap();
    store.put_manifest(&manifest(&r, r#"{"m":2}"#, &["v2"], guard(&["v2"])), ANON).await.unwrap();
    assert_eq!(tagged(store, &r, "v2").await, Some(second.digest.clone()));
    // A tag the caller found excluded moves.
    assert!(store.set_tag_mutability(&r, "IMMUTABLE_WITH_EXCLUSION", &["latest".into()]).await.unwrap());
    let excluded = TagGuard { setting: setting("IMMUTABLE_WITH_EXCLUSION", &["latest"]), immutable: vec![] };
    store.put_manifest(&manifest(&r, r#"{"m":2}"#, &["latest"], excluded), ANON).await.unwrap();
    assert_eq!(tagged(store, &r, "latest").await, Some(second.digest.clone()));

    // Deleting is not moving: a tag, then a manifest, go in an immutable repository.
    assert!(store.set_tag_mutability(&r, "IMMUTABLE", &[]).await.unwrap());
    assert!(store.delete_tag(&r, &"v1".parse().unwrap(), ANON).await.unwrap());
    assert!(store.delete_manifest(&r, &second.digest, ANON).await.unwrap());
    assert_eq!(tag_names(store, &r).await, Vec::<String>::new());
    // A push by digest moves no tag: no guard needed.
    store.put_manifest(&manifest(&r, r#"{"m":3}"#, &[], TagGuard::default()), ANON).await.unwrap();
    assert_eq!(
        store.delete_repository(&r, true, ANON).await.unwrap(),
        berth_storage::metadata::RepositoryDeleted::Deleted
    );
}

async fn racing_pushes_to_a_new_immutable_tag(store: &dyn MetadataStore) {
    let r = repo("mutability/race");
    store.link_blob(&r, &Digest::sha256_of(b"mutability-layer"), 5, true, None, ANON).await.unwrap();
    assert!(store.set_tag_mutability(&r, "IMMUTABLE", &[]).await.unwrap());
    let guard = TagGuard { setting: setting("IMMUTABLE", &[]), immutable: tags(&["release"]) };
    let pushes: Vec<NewManifest> =
        (0..8).map(|i| manifest(&r, &format!("{{\"race\":{i}}}"), &["release"], guard.clone())).collect();
    let results = futures::future::join_all(pushes.iter().map(|m| store.put_manifest(m, ANON))).await;
    let mut winners = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(()) => winners.push(i),
            Err(Error::TagImmutable { tag, .. }) => assert_eq!(tag.as_str(), "release"),
            Err(e) => panic!("push {i}: {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one push names the new immutable tag: {winners:?}");
    assert_eq!(tagged(store, &r, "release").await, Some(pushes[winners[0]].digest.clone()));
    for (i, m) in pushes.iter().enumerate().filter(|(i, _)| *i != winners[0]) {
        let stored = store.get_manifest(&r, &Reference::Digest(m.digest.clone())).await.unwrap();
        assert_eq!(stored, None, "the refused push {i} left its manifest");
    }
    assert_eq!(
        store.delete_repository(&r, true, ANON).await.unwrap(),
        berth_storage::metadata::RepositoryDeleted::Deleted
    );
}
