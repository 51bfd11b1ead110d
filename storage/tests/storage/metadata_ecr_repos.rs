//! What ECR's repository operations read and write beyond tag mutability: a page of
//! repositories with their settings ([`Repositories::repository_settings_page`],
//! [`Repositories::repository_settings_of`]), `scanOnPush`
//! ([`Repositories::set_scan_on_push`]) and registry-wide settings ([`RegistrySettings`]).
//! Part of the metadata suite: run against every store. Works on repositories of its own.

use berth_oci::RepoName;
use berth_storage::MetadataStore;
use berth_storage::metadata::{NewRepository, Origin, Page, RepositoryDeleted};

const ANON: &Origin =
    &Origin { actor: None, request_id: None, addr: None, method: None, host: None, scheme: None, user_agent: None };

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

pub async fn suite(store: &dyn MetadataStore) {
    pages_of_settings(store).await;
    scan_on_push(store).await;
    registry_settings(store).await;
}

async fn pages_of_settings(store: &dyn MetadataStore) {
    let names = [repo("ecr-repos/c"), repo("ecr-repos/a"), repo("ecr-repos/b/x")];
    for (i, r) in names.iter().enumerate() {
        let mut new = NewRepository::with_key((i == 1).then(|| "team-a".to_owned()));
        new.scan_on_push = i == 2;
        if i == 0 {
            new.tag_mutability = "IMMUTABLE_WITH_EXCLUSION".into();
            new.tag_mutability_exclusions = vec!["latest".into()];
        }
        assert!(store.create_repository(r, &new, ANON).await.unwrap().created);
    }
    let page = |last: &str, limit| Page { last: Some(last.into()), limit };
    let first = store.repository_settings_page(&page("ecr-repos/", 2)).await.unwrap();
    let first_names: Vec<&str> = first.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(first_names, ["ecr-repos/a", "ecr-repos/b/x"], "byte order, two of them");
    assert_eq!(first[0].key.as_deref(), Some("team-a"));
    assert!(!first[0].scan_on_push);
    assert!(first[1].scan_on_push);
    assert_eq!(first[1].key, None);
    let second = store.repository_settings_page(&page("ecr-repos/b/x", 2)).await.unwrap();
    assert_eq!(second[0].name.as_str(), "ecr-repos/c");
    assert_eq!(second[0].tag_mutability.mode, "IMMUTABLE_WITH_EXCLUSION");
    assert_eq!(second[0].tag_mutability.exclusions, ["latest"]);
    // Each read the same as one repository's settings.
    for s in first.iter().chain(&second[..1]) {
        assert_eq!(store.repository_settings(&s.name).await.unwrap().as_ref(), Some(s));
    }

    // By name: those that exist, in byte order, each once.
    let asked = [repo("ecr-repos/c"), repo("ecr-repos/missing"), repo("ecr-repos/a"), repo("ecr-repos/c")];
    let found = store.repository_settings_of(&asked).await.unwrap();
    let found_names: Vec<&str> = found.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(found_names, ["ecr-repos/a", "ecr-repos/c"]);
    assert_eq!(found[0], first[0]);
    assert!(store.repository_settings_of(&[]).await.unwrap().is_empty());

    for r in &names {
        assert_eq!(store.delete_repository(r, true, ANON).await.unwrap(), RepositoryDeleted::Deleted);
    }
    assert!(store.repository_settings_of(&asked).await.unwrap().is_empty());
}

async fn scan_on_push(store: &dyn MetadataStore) {
    let r = repo("ecr-repos/scan");
    assert!(!store.set_scan_on_push(&r, true).await.unwrap(), "no such repository");
    assert_eq!(store.repository_settings(&r).await.unwrap(), None, "and none was created");
    assert!(store.create_repository(&r, &NewRepository::with_key(None), ANON).await.unwrap().created);
    assert!(!store.repository_settings(&r).await.unwrap().unwrap().scan_on_push, "off unless given");
    assert!(store.set_scan_on_push(&r, true).await.unwrap());
    assert!(store.repository_settings(&r).await.unwrap().unwrap().scan_on_push);
    assert!(store.repository_setup(&r).await.unwrap().unwrap().scan_on_push);
    assert!(store.set_scan_on_push(&r, false).await.unwrap());
    assert!(!store.repository_settings(&r).await.unwrap().unwrap().scan_on_push);
    assert_eq!(store.delete_repository(&r, false, ANON).await.unwrap(), RepositoryDeleted::Deleted);
}

async fn registry_settings(store: &dyn MetadataStore) {
    let name = "ecr-repos-suite";
    assert_eq!(store.registry_setting(name).await.unwrap(), None);
    store.put_registry_setting(name, r#"{"scanType":"BASIC","rules":[]}"#).await.unwrap();
    let first = store.registry_setting(name).await.unwrap().unwrap();
    assert_eq!((first.name.as_str(), first.value.as_str()), (name, r#"{"scanType":"BASIC","rules":[]}"#));
    assert!(first.updated_at > 1_700_000_000, "{first:?}");
    store.put_registry_setting(name, r#"{"scanType":"ENHANCED"}"#).await.unwrap();
    let second = store.registry_setting(name).await.unwrap().unwrap();
    assert_eq!(second.value, r#"{"scanType":"ENHANCED"}"#, "replaced");
    assert!(second.updated_at >= first.updated_at);
    assert_eq!(store.registry_setting("ecr-repos-other").await.unwrap(), None, "settings are by name");
}
