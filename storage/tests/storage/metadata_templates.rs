//! Repository creation templates ([`Templates`](berth_storage::metadata::Templates)) and the
//! creation of a repository with its settings, part of the metadata suite: run against every
//! store. Each case works on its own prefixes and repositories and deletes what it made.

use berth_oci::RepoName;
use berth_storage::MetadataStore;
use berth_storage::metadata::{NewRepository, Origin, PolicyTarget, RESOURCE_POLICY, TemplateRecord};

const ANON: &Origin =
    &Origin { actor: None, request_id: None, addr: None, method: None, host: None, scheme: None, user_agent: None };

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

fn template(prefix: &str) -> TemplateRecord {
    TemplateRecord {
        prefix: prefix.into(),
        description: "team a".into(),
        tag_mutability: "IMMUTABLE_WITH_EXCLUSION".into(),
        tag_mutability_exclusions: vec!["latest".into(), "dev-*".into()],
        key_name: Some("team-a".into()),
        lifecycle_policy: Some(r#"{"rules":[]}"#.into()),
        repository_policy: None,
        resource_tags: vec![("team".into(), "a".into()), ("env".into(), "prod".into())],
        applied_for: vec!["CREATE_ON_PUSH".into()],
        created_at: 0,
        updated_at: 0,
    }
}

pub async fn suite(store: &dyn MetadataStore) {
    template_records(store).await;
    repositories_created_with_settings(store).await;
}

/// Create refuses a duplicate; get, list, update (keeping `created_at`) and delete.
async fn template_records(store: &dyn MetadataStore) {
    let t = template("tpl-suite/a");
    assert!(store.create_template(&t).await.unwrap());
    let mut other = template("tpl-suite/a");
    other.description = "another".into();
    assert!(!store.create_template(&other).await.unwrap(), "a duplicate prefix is refused");
    let got = store.template("tpl-suite/a").await.unwrap().unwrap();
    assert_eq!(got.description, "team a", "the refused duplicate changed nothing");
    assert_eq!(got.resource_tags, t.resource_tags, "tags keep their order");
    assert_eq!(got.tag_mutability_exclusions, t.tag_mutability_exclusions);
    assert_eq!(got.applied_for, t.applied_for);
    assert_eq!(got.key_name.as_deref(), Some("team-a"));
    assert!(got.created_at > 0 && got.created_at == got.updated_at);
    assert_eq!(TemplateRecord { created_at: 0, updated_at: 0, ..got.clone() }, t);

    let mut root = template("ROOT-tpl-suite");
    root.key_name = None;
    root.lifecycle_policy = None;
    root.resource_tags = vec![];
    root.applied_for = vec!["CREATE_ON_PUSH".into(), "REPLICATION".into()];
    assert!(store.create_template(&root).await.unwrap());
    let ours: Vec<String> =
        store.templates().await.unwrap().into_iter().map(|t| t.prefix).filter(|p| p.contains("tpl-suite")).collect();
    assert_eq!(ours, ["ROOT-tpl-suite", "tpl-suite/a"], "by prefix, in byte order");

    let mut changed = t.clone();
    changed.description = "changed".into();
    changed.key_name = None;
    changed.repository_policy = Some(r#"{"Version":"2012-10-17","Statement":[]}"#.into());
    changed.resource_tags = vec![];
    assert!(store.update_template(&changed).await.unwrap());
    let after = store.template("tpl-suite/a").await.unwrap().unwrap();
    assert_eq!(after.description, "changed");
    assert_eq!(after.key_name, None);
    assert_eq!(after.repository_policy, changed.repository_policy);
    assert!(after.resource_tags.is_empty());
    assert_eq!(after.created_at, got.created_at, "created_at is kept");
    assert!(after.updated_at >= got.updated_at);
    assert!(!store.update_template(&template("tpl-suite/none")).await.unwrap(), "no template to update");
    assert!(store.template("tpl-suite/none").await.unwrap().is_none());

    assert_eq!(store.delete_template("tpl-suite/a").await.unwrap().map(|t| t.description).as_deref(), Some("changed"));
    assert!(store.delete_template("tpl-suite/a").await.unwrap().is_none());
    assert!(store.delete_template("ROOT-tpl-suite").await.unwrap().is_some());
    assert!(store.template("tpl-suite/a").await.unwrap().is_none());
}

/// `create_repository` writes the repository with every setting in one go, only when it
/// creates it; a policy or tag stored under the name before creation is kept.
async fn repositories_created_with_settings(store: &dyn MetadataStore) {
    let r = repo("tpl-suite/created");
    let policy =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"ecr:BatchGetImage"}]}"#;
    let new = NewRepository {
        key: Some("team-a".into()),
        tag_mutability: "IMMUTABLE_WITH_EXCLUSION".into(),
        tag_mutability_exclusions: vec!["latest".into()],
        lifecycle_policy: Some(r#"{"rules":[]}"#.into()),
        repository_policy: Some(policy.into()),
        resource_tags: vec![("team".into(), "a".into()), ("cost".into(), "42".into())],
        scan_on_push: true,
    };
    assert!(store.repository_setup(&r).await.unwrap().is_none());
    let created = store.create_repository(&r, &new, ANON).await.unwrap();
    assert!(created.created);
    assert_eq!(created.key.as_deref(), Some("team-a"));
    let settings = store.repository_setup(&r).await.unwrap().unwrap();
    let mut want = new.clone();
    want.resource_tags.sort();
    assert_eq!(settings, want, "tags read back by key");
    assert_eq!(store.repository_key(&r).await.unwrap(), Some(Some("team-a".into())));
    let target = PolicyTarget::Repository(r.clone());
    let stored = store.policies(&target).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].name.as_str(), stored[0].document.as_str()), (RESOURCE_POLICY, policy));
    assert_eq!(store.repository_tags(&r).await.unwrap().get("cost").map(String::as_str), Some("42"));

    // Again: it exists, nothing changes.
    let again = store.create_repository(&r, &NewRepository::with_key(None), ANON).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.key.as_deref(), Some("team-a"));
    assert_eq!(store.repository_setup(&r).await.unwrap().unwrap(), want);

    // Set before the first push: the repository's own policy and tag win over the new ones.
    let early = repo("tpl-suite/early");
    let own = r#"{"Version":"2012-10-17","Statement":[]}"#;
    store.put_policy(&PolicyTarget::Repository(early.clone()), RESOURCE_POLICY, own).await.unwrap();
    let mut tags = std::collections::BTreeMap::new();
    tags.insert("team".to_owned(), "own".to_owned());
    store.tag_repository(&early, &tags, &[]).await.unwrap();
    assert!(store.create_repository(&early, &new, ANON).await.unwrap().created);
    let early_settings = store.repository_setup(&early).await.unwrap().unwrap();
    assert_eq!(early_settings.repository_policy.as_deref(), Some(own));
    assert_eq!(early_settings.resource_tags, [("cost".into(), "42".into()), ("team".into(), "own".into())]);

    // A plain repository: the defaults.
    let plain = repo("tpl-suite/plain");
    assert!(store.create_repository(&plain, &NewRepository::with_key(None), ANON).await.unwrap().created);
    assert_eq!(store.repository_setup(&plain).await.unwrap().unwrap(), NewRepository::with_key(None));

    // Deleting the repository takes its settings with it.
    for r in [&r, &early, &plain] {
        store.delete_repository(r, true, ANON).await.unwrap();
        assert!(store.repository_setup(r).await.unwrap().is_none());
        assert!(store.policies(&PolicyTarget::Repository(r.clone())).await.unwrap().is_empty());
        assert!(store.repository_tags(r).await.unwrap().is_empty());
    }
}
