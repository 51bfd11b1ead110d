//! Pull-through cache rules and tag checks ([`PullThrough`](berth_storage::metadata::PullThrough)),
//! part of the metadata suite: run against every store. Each case works on its own prefixes
//! and repositories and deletes what it made.

use berth_oci::{Digest, RepoName, Tag};
use berth_storage::MetadataStore;
use berth_storage::metadata::{
    NewManifest, NewRepository, Origin, PullThroughRuleRecord, ReferenceCheck, RequiredContent,
};

const ANON: &Origin =
    &Origin { actor: None, request_id: None, addr: None, method: None, host: None, scheme: None, user_agent: None };

fn rule(prefix: &str) -> PullThroughRuleRecord {
    PullThroughRuleRecord {
        prefix: prefix.into(),
        upstream_url: "https://registry-1.docker.io".into(),
        upstream_prefix: Some("library".into()),
        credentials: Some("sealed:v1:AAAA".into()),
        refresh_seconds: 86_400,
        created_at: 0,
        updated_at: 0,
    }
}

pub async fn suite(store: &dyn MetadataStore) {
    rule_records(store).await;
    tag_checks(store).await;
    manifests_fetched_before_their_content(store).await;
}

/// Create refuses a duplicate; get, list, update (keeping `created_at`) and delete; the
/// credentials never show in Debug.
async fn rule_records(store: &dyn MetadataStore) {
    let r = rule("ptc-suite/hub");
    assert!(store.create_pull_through_rule(&r).await.unwrap());
    assert!(!store.create_pull_through_rule(&rule("ptc-suite/hub")).await.unwrap(), "a duplicate prefix");
    let stored = store.pull_through_rule("ptc-suite/hub").await.unwrap().unwrap();
    assert_eq!((stored.upstream_url.as_str(), stored.refresh_seconds), ("https://registry-1.docker.io", 86_400));
    assert_eq!(stored.credentials.as_deref(), Some("sealed:v1:AAAA"));
    assert!(stored.created_at > 0 && stored.updated_at == stored.created_at);
    assert!(!format!("{stored:?}").contains("AAAA"), "credentials stay out of Debug");
    assert!(store.create_pull_through_rule(&rule("ptc-suite/ghcr")).await.unwrap());
    let listed: Vec<String> = store
        .pull_through_rules()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.prefix)
        .filter(|p| p.starts_with("ptc-suite/"))
        .collect();
    assert_eq!(listed, ["ptc-suite/ghcr", "ptc-suite/hub"]);

    let changed = PullThroughRuleRecord { upstream_prefix: None, credentials: None, refresh_seconds: 60, ..r.clone() };
    assert!(store.update_pull_through_rule(&changed).await.unwrap());
    let stored = store.pull_through_rule("ptc-suite/hub").await.unwrap().unwrap();
    assert_eq!((stored.upstream_prefix, stored.credentials, stored.refresh_seconds), (None, None, 60));
    assert!(!store.update_pull_through_rule(&rule("ptc-suite/none")).await.unwrap());

    let deleted = store.delete_pull_through_rule("ptc-suite/hub").await.unwrap().unwrap();
    assert_eq!(deleted.refresh_seconds, 60);
    assert!(store.delete_pull_through_rule("ptc-suite/hub").await.unwrap().is_none());
    assert!(store.pull_through_rule("ptc-suite/hub").await.unwrap().is_none());
    store.delete_pull_through_rule("ptc-suite/ghcr").await.unwrap().unwrap();
}

/// A tag's check time: absent, set, moved; nothing for a missing repository; gone with the
/// repository.
async fn tag_checks(store: &dyn MetadataStore) {
    let repo: RepoName = "ptc-suite/checks/alpine".parse().unwrap();
    let tag: Tag = "3.20".parse().unwrap();
    store.set_tag_checked(&repo, &tag, 100).await.unwrap();
    assert_eq!(store.tag_checked_at(&repo, &tag).await.unwrap(), None, "no repository, no record");
    store.create_repository(&repo, &NewRepository::with_key(None), ANON).await.unwrap();
    assert_eq!(store.tag_checked_at(&repo, &tag).await.unwrap(), None);
    store.set_tag_checked(&repo, &tag, 100).await.unwrap();
    assert_eq!(store.tag_checked_at(&repo, &tag).await.unwrap(), Some(100));
    store.set_tag_checked(&repo, &tag, 250).await.unwrap();
    assert_eq!(store.tag_checked_at(&repo, &tag).await.unwrap(), Some(250));
    assert_eq!(store.tag_checked_at(&repo, &"other".parse().unwrap()).await.unwrap(), None);
    store.delete_repository(&repo, true, ANON).await.unwrap();
    store.create_repository(&repo, &NewRepository::with_key(None), ANON).await.unwrap();
    assert_eq!(store.tag_checked_at(&repo, &tag).await.unwrap(), None, "went with the repository");
    store.delete_repository(&repo, true, ANON).await.unwrap();
}

/// A manifest stored with `ReferenceCheck::Fetched` may name content the repository does not
/// hold yet (a push may not), and its references are recorded all the same.
async fn manifests_fetched_before_their_content(store: &dyn MetadataStore) {
    let repo: RepoName = "ptc-suite/fetched/app".parse().unwrap();
    store.create_repository(&repo, &NewRepository::with_key(None), ANON).await.unwrap();
    let body = r#"{"ptc":"fetched"}"#;
    let layer = Digest::sha256_of(b"not here yet");
    let m = NewManifest {
        repo: repo.clone(),
        digest: Digest::sha256_of(body.as_bytes()),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        artifact_type: None,
        content: body.as_bytes().to_vec(),
        subject: None,
        annotations: None,
        blobs: vec![RequiredContent { digest: layer.clone(), size: 12 }],
        manifests: vec![],
        tags: vec!["v1".parse().unwrap()],
        mutability: Default::default(),
        references: ReferenceCheck::Present,
    };
    let refused = store.put_manifest(&m, ANON).await;
    assert!(matches!(refused, Err(berth_storage::Error::MissingReference(_))), "{refused:?}");
    let fetched = NewManifest { references: ReferenceCheck::Fetched, ..m.clone() };
    store.put_manifest(&fetched, ANON).await.unwrap();
    let read = store.get_manifest(&repo, &"v1".parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(read.digest, m.digest);
    store.delete_repository(&repo, true, ANON).await.unwrap();
}
