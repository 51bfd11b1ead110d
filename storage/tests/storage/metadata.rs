//! The metadata suite, run against every [`MetadataStore`] implementation.

use berth_oci::{Digest, Reference, RepoName, Tag, UploadId};
use berth_storage::metadata::{NewManifest, Page, RequiredContent, UploadRecord};
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
    store.link_blob(&a, &d, 4).await.unwrap();
    store.link_blob(&a, &d, 4).await.unwrap(); // idempotent
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
    store.link_blob(&r, &layer, 5).await.unwrap();
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
    store.link_blob(&r, &cfg, 3).await.unwrap();
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
        store.link_blob(&repo(name), &d, 1).await.unwrap();
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
    store.link_blob(&r, &layer, 10).await.unwrap();
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

async fn suite(store: &dyn MetadataStore) {
    store.ping().await.unwrap();
    blobs_and_links(store).await;
    manifests_tags_and_references(store).await;
    index_children_and_referrers(store).await;
    catalog(store).await;
    upload_sessions(store).await;
    concurrent_writers(store).await;
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
        assert_eq!(versions, 2, "each migration recorded once");
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
