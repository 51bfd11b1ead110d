//! Usage counters and quota records, on every metadata store: the counters follow every
//! change made through the store, and every row deleted by any statement (as the garbage
//! collector deletes them), and a migration fills them in from the rows already there.
//! "Right" means equal to a recount of the rows themselves.

use berth_oci::{Digest, RepoName, Tag};
use berth_storage::crypt::{Run, SealedBlob};
use berth_storage::metadata::{
    EventKind, KeyUsage, NewManifest, Origin, Page, QuotaDimension, QuotaRecord, QuotaScope, RegistryUsage,
    RepositoryUsage, RequiredContent,
};
use berth_storage::{MetadataStore, PostgresStore, SqliteStore};

const ANON: &Origin =
    &Origin { actor: None, request_id: None, addr: None, method: None, host: None, scheme: None, user_agent: None };

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

fn blob(seed: &str) -> Digest {
    Digest::sha256_of(seed.as_bytes())
}

fn manifest(r: &RepoName, body: &str, blobs: &[(&Digest, u64)], tags: &[&str]) -> NewManifest {
    NewManifest {
        repo: r.clone(),
        digest: Digest::sha256_of(body.as_bytes()),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        artifact_type: None,
        content: body.as_bytes().to_vec(),
        subject: None,
        annotations: None,
        blobs: blobs.iter().map(|(d, size)| RequiredContent { digest: (*d).clone(), size: *size }).collect(),
        manifests: vec![],
        tags: tags.iter().map(|t| t.parse::<Tag>().unwrap()).collect(),
        mutability: Default::default(),
        references: Default::default(),
    }
}

fn sealed(key_name: &str, size: u64, object: &str) -> SealedBlob {
    SealedBlob {
        key_name: key_name.into(),
        object: object.into(),
        size,
        kek: format!("{key_name}.1"),
        wrapped: vec![7; 40],
        runs: vec![Run { first: 0, prefix: [3; 7] }],
    }
}

async fn usage_of(store: &dyn MetadataStore, name: &str) -> (u64, u64, u64, u64) {
    let u = store.repository_usage(&repo(name)).await.unwrap().unwrap_or_default();
    (u.bytes, u.blobs, u.manifests, u.tags)
}

fn key_bytes(u: &RegistryUsage, key: &str) -> (u64, u64) {
    u.keys.iter().find(|k| k.key == key).map_or((0, 0), |k| (k.bytes, k.copies))
}

/// The counters through every kind of change the store makes; totals as differences, since
/// the suite's store holds what other tests wrote.
pub async fn counters(store: &dyn MetadataStore) {
    let (a, b) = (repo("usage-suite/a"), repo("usage-suite/b"));
    let (d1, d2, d3) = (blob("usage-1"), blob("usage-2"), blob("usage-3"));
    let before = store.registry_usage().await.unwrap();
    assert_eq!(store.repository_usage(&a).await.unwrap(), None, "no repository, no usage");

    store.link_blob(&a, &d1, 100, true, None, ANON).await.unwrap();
    store.link_blob(&a, &d1, 100, true, None, ANON).await.unwrap(); // again: nothing new
    store.link_blob(&b, &d1, 100, true, Some(&a), ANON).await.unwrap();
    store.link_blob(&a, &d2, 50, true, None, ANON).await.unwrap();
    assert_eq!(usage_of(store, "usage-suite/a").await, (150, 2, 0, 0));
    assert_eq!(usage_of(store, "usage-suite/b").await, (100, 1, 0, 0));
    let now = store.registry_usage().await.unwrap();
    assert_eq!(now.repositories - before.repositories, 2);
    assert_eq!(now.bytes - before.bytes, 250, "the shared blob counts in both repositories");
    assert_eq!(now.blobs - before.blobs, 3);
    assert_eq!(now.stored_bytes - before.stored_bytes, 150, "and is stored once");
    assert_eq!(now.stored_blobs - before.stored_blobs, 2);
    assert!(now.dedupe_ratio >= 1.0, "{now:?}");

    // Manifests and tags; moving a tag changes no count.
    let m1 = manifest(&a, "usage-m1", &[(&d1, 100), (&d2, 50)], &["one", "two"]);
    store.put_manifest(&m1, ANON).await.unwrap();
    store.put_manifest(&m1, ANON).await.unwrap(); // again
    assert_eq!(usage_of(store, "usage-suite/a").await, (150, 2, 1, 2));
    let m2 = manifest(&a, "usage-m2", &[(&d1, 100)], &["two", "three"]);
    store.put_manifest(&m2, ANON).await.unwrap();
    assert_eq!(usage_of(store, "usage-suite/a").await, (150, 2, 2, 3));
    assert!(store.delete_tag(&a, &"three".parse().unwrap(), ANON).await.unwrap());
    assert_eq!(usage_of(store, "usage-suite/a").await, (150, 2, 2, 2));
    assert!(store.delete_manifest(&a, &m1.digest, ANON).await.unwrap());
    assert_eq!(usage_of(store, "usage-suite/a").await, (150, 2, 1, 1), "its tag went with it");
    assert!(store.unlink_blob(&a, &d2).await.unwrap());
    assert_eq!(usage_of(store, "usage-suite/a").await, (100, 1, 1, 1));
    assert!(!store.unlink_blob(&a, &d2).await.unwrap());
    assert_eq!(usage_of(store, "usage-suite/a").await, (100, 1, 1, 1), "a link removed twice counts once");

    // Sealed copies, per key name; a second copy for a key is not recorded, nor counted.
    let keys_before = store.registry_usage().await.unwrap();
    assert!(store.add_blob_copy(&d3, &sealed("usage-ka", 30, "o1")).await.unwrap());
    assert!(!store.add_blob_copy(&d3, &sealed("usage-ka", 30, "o2")).await.unwrap());
    assert!(store.add_blob_copy(&d1, &sealed("usage-ka", 100, "o3")).await.unwrap());
    assert!(store.add_blob_copy(&d1, &sealed("usage-kb", 100, "o4")).await.unwrap());
    let keys = store.registry_usage().await.unwrap();
    assert_eq!(key_bytes(&keys, "usage-ka"), (130, 2));
    assert_eq!(key_bytes(&keys, "usage-kb"), (100, 1));
    assert_eq!(keys.stored_bytes - keys_before.stored_bytes, 30, "a copy of a new blob stores it");

    // Paging through repositories by name.
    let page = store.repositories_usage(&Page { last: Some("usage-suite/".into()), limit: 1 }).await.unwrap();
    assert_eq!(page.iter().map(|u| u.repository.as_str()).collect::<Vec<_>>(), ["usage-suite/a"]);
    let page = store.repositories_usage(&Page { last: Some("usage-suite/a".into()), limit: 5 }).await.unwrap();
    assert_eq!(page.first().map(|u| u.repository.as_str()), Some("usage-suite/b"));

    // A repository deleted takes its usage with it.
    let total = store.registry_usage().await.unwrap();
    store.delete_repository(&a, true, ANON).await.unwrap();
    let after = store.registry_usage().await.unwrap();
    assert_eq!(store.repository_usage(&a).await.unwrap(), None);
    assert_eq!(total.repositories - after.repositories, 1);
    assert_eq!(total.bytes - after.bytes, 100);
    assert_eq!(total.manifests - after.manifests, 1);
    assert_eq!(total.tags - after.tags, 1);
    assert_eq!(after.stored_bytes, total.stored_bytes, "blobs stay until collected");
    store.delete_repository(&b, true, ANON).await.unwrap();
}

/// Quota records, the use of a scope, and warnings raised once per crossing.
pub async fn quotas(store: &dyn MetadataStore) {
    let prefix: QuotaScope = "quota-suite/*".parse().unwrap();
    let one: QuotaScope = "quota-suite/a".parse().unwrap();
    let q = |scope: &QuotaScope, bytes: Option<u64>, images: Option<u64>| QuotaRecord {
        scope: scope.clone(),
        max_bytes: bytes,
        max_images: images,
        updated_at: 0,
    };
    assert!(store.quotas().await.unwrap().iter().all(|r| r.scope != prefix));
    assert!(store.put_quota(&q(&prefix, Some(1000), None)).await.unwrap(), "new");
    assert!(!store.put_quota(&q(&prefix, Some(2000), Some(3))).await.unwrap(), "replaced");
    assert!(store.put_quota(&q(&one, None, Some(1))).await.unwrap());
    let listed: Vec<QuotaRecord> =
        store.quotas().await.unwrap().into_iter().filter(|r| r.scope.to_string().starts_with("quota-suite/")).collect();
    assert_eq!(listed.len(), 2);
    assert_eq!((&listed[0].scope, listed[0].max_bytes, listed[0].max_images), (&prefix, Some(2000), Some(3)));
    assert_eq!((&listed[1].scope, listed[1].max_bytes, listed[1].max_images), (&one, None, Some(1)));
    assert!(listed[0].updated_at > 0);

    // A prefix sums its repositories, and no others (`quota-suite0` sorts right after `quota-suite/`).
    let (a, b, outside) = (repo("quota-suite/a"), repo("quota-suite/b/c"), repo("quota-suite0"));
    store.link_blob(&a, &blob("q1"), 10, true, None, ANON).await.unwrap();
    store.link_blob(&b, &blob("q2"), 20, true, None, ANON).await.unwrap();
    store.link_blob(&outside, &blob("q3"), 40, true, None, ANON).await.unwrap();
    store.put_manifest(&manifest(&a, "q-m", &[(&blob("q1"), 10)], &["t"]), ANON).await.unwrap();
    let used = store.scope_usage(&prefix).await.unwrap();
    assert_eq!((used.bytes, used.images, used.warned.len()), (30, 1, 0));
    let used = store.scope_usage(&one).await.unwrap();
    assert_eq!((used.bytes, used.images), (10, 1));
    let all = store.scope_usage(&"*".parse().unwrap()).await.unwrap();
    assert!(all.bytes >= 70, "{all:?}");
    assert_eq!(store.scope_usage(&"quota-suite/none".parse().unwrap()).await.unwrap().bytes, 0);

    // Warnings: the first raise writes its event, later ones nothing, until cleared.
    let mut after = last_seq(store).await;
    let mut event = berth_storage::metadata::Event::new(EventKind::QuotaWarning, "quota-suite/a", ANON);
    event.quota = Some(berth_storage::metadata::QuotaNotice {
        scope: prefix.to_string(),
        dimension: "bytes".into(),
        limit: 2000,
        used: 1900,
        threshold: 80,
    });
    assert!(store.raise_quota_warning(&prefix, QuotaDimension::Bytes, &event).await.unwrap());
    let mut again = event.clone();
    again.id = uuid::Uuid::new_v4().to_string();
    assert!(!store.raise_quota_warning(&prefix, QuotaDimension::Bytes, &again).await.unwrap());
    let written: Vec<_> = store.events(after, 100).await.unwrap();
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!((written[0].kind, written[0].quota.as_ref()), (EventKind::QuotaWarning, event.quota.as_ref()));
    after = written[0].seq;
    assert_eq!(store.scope_usage(&prefix).await.unwrap().warned, [QuotaDimension::Bytes]);
    assert!(store.clear_quota_warning(&prefix, QuotaDimension::Bytes).await.unwrap());
    assert!(!store.clear_quota_warning(&prefix, QuotaDimension::Bytes).await.unwrap());
    assert!(store.scope_usage(&prefix).await.unwrap().warned.is_empty());
    assert!(store.raise_quota_warning(&prefix, QuotaDimension::Bytes, &again).await.unwrap(), "a new crossing");
    assert_eq!(store.events(after, 100).await.unwrap().len(), 1);

    // Deleting a quota removes its warnings with it.
    assert!(store.delete_quota(&prefix).await.unwrap());
    assert!(!store.delete_quota(&prefix).await.unwrap());
    assert!(store.scope_usage(&prefix).await.unwrap().warned.is_empty());
    assert!(store.delete_quota(&one).await.unwrap());
    for r in [&a, &b, &outside] {
        store.delete_repository(r, true, ANON).await.unwrap();
    }
}

async fn last_seq(store: &dyn MetadataStore) -> i64 {
    let mut after = 0;
    loop {
        match store.events(after, 1000).await.unwrap().last() {
            Some(e) => after = e.seq,
            None => return after,
        }
    }
}

/// A database reached by SQL, beside the store: to delete rows as the garbage collector may,
/// and to recount what the counters should say.
enum Raw {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

/// What the rows themselves say: per repository, the distinct blobs, per key.
#[derive(Debug, PartialEq)]
struct Truth {
    repositories: Vec<RepositoryUsage>,
    stored: (u64, u64),
    keys: Vec<KeyUsage>,
}

const TRUTH_REPOSITORIES: &str = "SELECT r.name, \
    CAST(COALESCE((SELECT SUM(b.size) FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
                   WHERE rb.repository_id = r.id), 0) AS BIGINT), \
    (SELECT COUNT(*) FROM repository_blobs rb WHERE rb.repository_id = r.id), \
    (SELECT COUNT(*) FROM manifests m WHERE m.repository_id = r.id), \
    (SELECT COUNT(*) FROM tags t WHERE t.repository_id = r.id) \
    FROM repositories r ORDER BY r.name";
const TRUTH_STORED: &str = "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT), COUNT(*) FROM blobs";
const TRUTH_KEYS: &str = "SELECT c.key_name, CAST(SUM(b.size) AS BIGINT), COUNT(*) FROM blob_copies c \
    JOIN blobs b ON b.digest = c.digest GROUP BY c.key_name ORDER BY c.key_name";

impl Raw {
    async fn exec(&self, sql: &str) {
        match self {
            Raw::Sqlite(c) => c.execute_batch(sql).unwrap(),
            Raw::Postgres(c) => c.batch_execute(sql).await.unwrap(),
        }
    }

    async fn truth(&self) -> Truth {
        let n = |v: i64| u64::try_from(v).unwrap();
        match self {
            Raw::Sqlite(c) => {
                let mut s = c.prepare(TRUTH_REPOSITORIES).unwrap();
                let repositories = s
                    .query_map([], |r| {
                        Ok(RepositoryUsage {
                            repository: r.get(0)?,
                            bytes: n(r.get(1)?),
                            blobs: n(r.get(2)?),
                            manifests: n(r.get(3)?),
                            tags: n(r.get(4)?),
                        })
                    })
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                let stored = c.query_row(TRUTH_STORED, [], |r| Ok((n(r.get(0)?), n(r.get(1)?)))).unwrap();
                let mut s = c.prepare(TRUTH_KEYS).unwrap();
                let keys = s
                    .query_map([], |r| Ok(KeyUsage { key: r.get(0)?, bytes: n(r.get(1)?), copies: n(r.get(2)?) }))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                Truth { repositories, stored, keys }
            }
            Raw::Postgres(c) => {
                let repositories = c
                    .query(TRUTH_REPOSITORIES, &[])
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| RepositoryUsage {
                        repository: r.get(0),
                        bytes: n(r.get(1)),
                        blobs: n(r.get(2)),
                        manifests: n(r.get(3)),
                        tags: n(r.get(4)),
                    })
                    .collect();
                let row = c.query_one(TRUTH_STORED, &[]).await.unwrap();
                let stored = (n(row.get(0)), n(row.get(1)));
                let keys = c
                    .query(TRUTH_KEYS, &[])
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| KeyUsage { key: r.get(0), bytes: n(r.get(1)), copies: n(r.get(2)) })
                    .collect();
                Truth { repositories, stored, keys }
            }
        }
    }
}

/// What the store's counters say, in [`Truth`]'s shape.
async fn counted(store: &dyn MetadataStore) -> Truth {
    let repositories = store.repositories_usage(&Page { last: None, limit: 10_000 }).await.unwrap();
    let u = store.registry_usage().await.unwrap();
    Truth { repositories, stored: (u.stored_bytes, u.stored_blobs), keys: u.keys }
}

/// Fills a fresh store: three repositories sharing blobs, manifests, tags, copies for two keys.
async fn fill(store: &dyn MetadataStore) {
    let rs = [repo("gc/a"), repo("gc/b"), repo("other")];
    let ds: Vec<Digest> = (0..6).map(|i| blob(&format!("gc-{i}"))).collect();
    for (i, d) in ds.iter().enumerate() {
        let size = 10 * (i as u64 + 1);
        for r in rs.iter().take(3 - i % 3) {
            store.link_blob(r, d, size, true, None, ANON).await.unwrap();
        }
        if i % 2 == 0 {
            store.add_blob_copy(d, &sealed("ka", size, &format!("ka-{i}"))).await.unwrap();
        }
        if i < 2 {
            store.add_blob_copy(d, &sealed("kb", size, &format!("kb-{i}"))).await.unwrap();
        }
    }
    for r in &rs {
        for m in 0..3 {
            let tags: Vec<String> = (0..m).map(|t| format!("t{m}-{t}")).collect();
            let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
            let body = format!("{r}-{m}");
            store.put_manifest(&manifest(r, &body, &[(&ds[0], 10)], &tags), ANON).await.unwrap();
        }
    }
}

/// Rows deleted by statements of every shape the garbage collector (or an operator) may use,
/// many rows at a time: after each, the counters equal a recount.
async fn deletes_move_the_counters(store: &dyn MetadataStore, raw: &Raw) {
    fill(store).await;
    let truth = raw.truth().await;
    assert_eq!(truth.repositories.len(), 3);
    assert!(truth.keys.len() == 2 && truth.stored.1 == 6, "{truth:?}");
    assert_eq!(counted(store).await, truth);
    for sql in [
        // Tags of several manifests, then manifests (their references and tags cascade).
        "DELETE FROM tags WHERE name LIKE 't2-%'",
        "DELETE FROM manifests WHERE repository_id = (SELECT id FROM repositories WHERE name = 'gc/b')",
        // Links of several repositories in one statement (the collector's unreferenced links).
        "DELETE FROM repository_blobs WHERE digest NOT IN (SELECT child_digest FROM manifest_references)",
        // Copies of one key, then blobs no link or copy refers to (the collector's phases c and b).
        "DELETE FROM blob_copies WHERE key_name = 'kb'",
        "DELETE FROM blobs WHERE digest NOT IN (SELECT digest FROM repository_blobs) \
         AND digest NOT IN (SELECT digest FROM blob_copies)",
        // A whole repository: everything of it cascades.
        "DELETE FROM tags WHERE repository_id = (SELECT id FROM repositories WHERE name = 'other'); \
         DELETE FROM manifests WHERE repository_id = (SELECT id FROM repositories WHERE name = 'other'); \
         DELETE FROM repositories WHERE name = 'other'",
        "DELETE FROM blob_copies",
        "DELETE FROM repository_blobs",
        "DELETE FROM blobs",
    ] {
        raw.exec(sql).await;
        let truth = raw.truth().await;
        assert_eq!(counted(store).await, truth, "after {sql}");
    }
    let end = store.registry_usage().await.unwrap();
    assert_eq!((end.bytes, end.blobs, end.stored_bytes, end.stored_blobs, end.keys.len()), (0, 0, 0, 0, 0));
}

#[tokio::test]
async fn sqlite_usage_follows_rows_deleted_by_any_statement() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA foreign_keys=ON").unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    deletes_move_the_counters(&store, &Raw::Sqlite(conn)).await;
}

/// A database of schema v7 with content: the migration's backfill makes the counters equal
/// a recount, and they move from there.
#[tokio::test]
async fn sqlite_usage_is_filled_in_by_the_migration() {
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
            include_str!("../../src/metadata/sqlite_v6.sql"),
            include_str!("../../src/metadata/sqlite_v7.sql"),
        ];
        for (version, sql) in (1..).zip(old) {
            conn.execute_batch(sql).unwrap();
            conn.execute("INSERT INTO schema_migrations VALUES (?1, 0)", [version]).unwrap();
        }
        conn.execute_batch(OLD_ROWS).unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA foreign_keys=ON").unwrap();
    let raw = Raw::Sqlite(conn);
    backfilled(&store, &raw).await;
}

/// Rows of a registry from before usage was counted (the same SQL on both databases).
const OLD_ROWS: &str = "
    INSERT INTO repositories (name, created_at) VALUES ('old/a', 1), ('old/b', 1), ('old/empty', 1);
    INSERT INTO blobs (digest, size, created_at) VALUES ('sha256:01', 100, 1), ('sha256:02', 50, 1), ('sha256:03', 7, 1);
    INSERT INTO repository_blobs (repository_id, digest, created_at)
        SELECT r.id, b.digest, 1 FROM repositories r, blobs b WHERE r.name = 'old/a';
    INSERT INTO repository_blobs (repository_id, digest, created_at)
        SELECT r.id, 'sha256:01', 1 FROM repositories r WHERE r.name = 'old/b';
    INSERT INTO manifests (repository_id, digest, media_type, size, content, created_at)
        SELECT r.id, 'sha256:m1', 'application/vnd.oci.image.manifest.v1+json', 2, X'7B7D', 1
        FROM repositories r WHERE r.name = 'old/a';
    INSERT INTO tags (repository_id, name, digest, updated_at)
        SELECT r.id, 'latest', 'sha256:m1', 1 FROM repositories r WHERE r.name = 'old/a';
    INSERT INTO blob_copies (digest, key_name, object, kek, wrapped, runs, created_at)
        VALUES ('sha256:02', 'old', 'o', 'old.1', X'00', X'00', 1);
";

async fn backfilled(store: &dyn MetadataStore, raw: &Raw) {
    let truth = raw.truth().await;
    assert_eq!(truth.repositories.len(), 3, "{truth:?}");
    assert_eq!(truth.stored, (157, 3));
    assert_eq!(counted(store).await, truth);
    let u = store.repository_usage(&repo("old/a")).await.unwrap().unwrap();
    assert_eq!((u.bytes, u.blobs, u.manifests, u.tags), (157, 3, 1, 1));
    // And they move from there.
    store.link_blob(&repo("old/b"), &blob("new"), 5, true, None, ANON).await.unwrap();
    raw.exec("DELETE FROM blob_copies").await;
    assert_eq!(counted(store).await, raw.truth().await);
}

/// A fresh schema of the database at `BERTH_TEST_POSTGRES_URL`, dropped after `test` ran.
async fn in_postgres_schema<F, Fut>(test: F)
where
    F: FnOnce(String, tokio_postgres::Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::FutureExt;
    let url = std::env::var("BERTH_TEST_POSTGRES_URL")
        .expect("BERTH_TEST_POSTGRES_URL: run eval \"$(bash .ci/postgres.sh start)\" first");
    let schema = format!("berth_test_{}", uuid::Uuid::new_v4().simple());
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    admin.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let separator = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{separator}options=-csearch_path%3D{schema}");
    let run = std::panic::AssertUnwindSafe(async move {
        let (client, conn) = tokio_postgres::connect(&scoped, tokio_postgres::NoTls).await.unwrap();
        let conn = tokio::spawn(conn);
        test(scoped, client).await;
        conn.abort();
    })
    .catch_unwind()
    .await;
    admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
    drop(admin);
    connection.await.unwrap().unwrap();
    if let Err(panic) = run {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: eval \"$(bash .ci/postgres.sh start)\", then cargo test -- --ignored"]
async fn postgres_usage_follows_rows_deleted_by_any_statement() {
    in_postgres_schema(|url, client| async move {
        let store = PostgresStore::open(&url).await.unwrap();
        deletes_move_the_counters(&store, &Raw::Postgres(client)).await;
    })
    .await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: eval \"$(bash .ci/postgres.sh start)\", then cargo test -- --ignored"]
async fn postgres_usage_is_filled_in_by_the_migration() {
    in_postgres_schema(|url, client| async move {
        client
            .batch_execute("CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .await
            .unwrap();
        let old = [
            include_str!("../../src/metadata/postgres_v1.sql"),
            include_str!("../../src/metadata/postgres_v2.sql"),
            include_str!("../../src/metadata/postgres_v3.sql"),
            include_str!("../../src/metadata/postgres_v4.sql"),
            include_str!("../../src/metadata/postgres_v5.sql"),
            include_str!("../../src/metadata/postgres_v6.sql"),
            include_str!("../../src/metadata/postgres_v7.sql"),
            include_str!("../../src/metadata/postgres_v8.sql"),
        ];
        for (version, sql) in (1i64..).zip(old) {
            client.batch_execute(sql).await.unwrap();
            client.execute("INSERT INTO schema_migrations VALUES ($1, 0)", &[&version]).await.unwrap();
        }
        client
            .batch_execute(&OLD_ROWS.replace("X'7B7D'", "'\\x7b7d'::bytea").replace("X'00'", "'\\x00'::bytea"))
            .await
            .unwrap();
        let store = PostgresStore::open(&url).await.unwrap();
        backfilled(&store, &Raw::Postgres(client)).await;
    })
    .await;
}
