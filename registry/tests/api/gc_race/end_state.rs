//! What must hold once the clients stopped and a final collection ran, read straight from
//! the metadata database and the object store (not through the collector's own queries):
//! nothing unreferenced is left, and nothing referenced lost its bytes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;

/// The metadata database, opened by the test on its own connection.
pub enum Db {
    Sqlite(PathBuf),
    /// A URL whose `search_path` is the test's schema.
    Postgres(String),
}

impl Db {
    /// Every row of `sql`, each column read as text.
    async fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        match self {
            Db::Sqlite(path) => {
                let c =
                    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
                let mut stmt = c.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let n = stmt.column_count();
                stmt.query_map([], |r| (0..n).map(|i| r.get::<_, String>(i)).collect::<Result<Vec<_>, _>>())
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
            Db::Postgres(url) => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
                let task = tokio::spawn(connection);
                let rows = client.query(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
                let out =
                    rows.iter().map(|r| (0..r.len()).map(|i| r.get::<_, String>(i)).collect()).collect::<Vec<_>>();
                drop(client);
                let _ = task.await;
                out
            }
        }
    }

    /// The blobs whose plaintext object the database says exists.
    fn plain_blobs(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "SELECT digest FROM blobs WHERE plain = 1",
            Db::Postgres(_) => "SELECT digest FROM blobs WHERE plain",
        }
    }
}

/// The object store, listed by the test on its own client.
pub enum Store {
    Disk(PathBuf),
    S3(Box<dyn ObjectStore>),
}

impl Store {
    /// Every object under `blobs/` and `sealed/`, as a path relative to the store's root.
    async fn objects(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self {
            Store::Disk(root) => {
                for top in ["blobs", "sealed"] {
                    walk(root, &root.join(top), &mut out);
                }
            }
            Store::S3(store) => {
                for top in ["blobs", "sealed"] {
                    let prefix = object_store::path::Path::from(top);
                    let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
                    out.extend(listed.into_iter().map(|m| m.location.to_string()));
                }
            }
        }
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries {
        let e = e.unwrap();
        let path = e.path();
        if e.file_type().unwrap().is_dir() {
            walk(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        }
    }
}

/// At most this many examples per finding.
const SHOWN: usize = 10;

fn finding(out: &mut Vec<String>, what: &str, items: Vec<String>) {
    if !items.is_empty() {
        let shown: Vec<_> = items.iter().take(SHOWN).cloned().collect();
        out.push(format!("{} {what}: {}", items.len(), shown.join(", ")));
    }
}

fn first(rows: Vec<Vec<String>>) -> Vec<String> {
    rows.into_iter().map(|mut r| r.swap_remove(0)).collect()
}

/// What is wrong with the end state, one sentence per kind of problem; empty when clean.
pub async fn problems(db: &Db, store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    let unreferenced_links = first(
        db.rows(
            "SELECT r.name || '@' || rb.digest FROM repository_blobs rb \
             JOIN repositories r ON r.id = rb.repository_id \
             WHERE NOT EXISTS (SELECT 1 FROM manifest_references mr \
                WHERE mr.repository_id = rb.repository_id AND mr.child_digest = rb.digest) \
             ORDER BY 1",
        )
        .await,
    );
    finding(&mut out, "links no manifest of their repository references", unreferenced_links);
    let unlinked_blobs = first(
        db.rows(
            "SELECT b.digest FROM blobs b \
             WHERE NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest) ORDER BY 1",
        )
        .await,
    );
    finding(&mut out, "blob rows no repository links", unlinked_blobs);
    let stray_copies = first(
        db.rows(
            "SELECT c.digest || ' (key ' || c.key_name || ')' FROM blob_copies c \
             WHERE NOT EXISTS (SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
                WHERE rb.digest = c.digest AND r.key_name = c.key_name) ORDER BY 1",
        )
        .await,
    );
    finding(&mut out, "sealed copies for a key no repository linking the blob uses", stray_copies);
    finding(&mut out, "digests still doomed", first(db.rows("SELECT digest FROM gc_dooms ORDER BY 1").await));
    finding(&mut out, "holds not released", first(db.rows("SELECT digest FROM gc_holds ORDER BY 1").await));

    // Objects against rows, both ways: an object without a row is garbage; a row without its
    // object is a blob the collector (or anything else) lost.
    let plain: BTreeSet<String> = first(db.rows(db.plain_blobs()).await).into_iter().collect();
    let copies: BTreeSet<String> = db
        .rows("SELECT digest, object FROM blob_copies")
        .await
        .into_iter()
        .map(|r| sealed_path(&r[0], &r[1]))
        .collect();
    let mut plain_objects = BTreeSet::new();
    let mut sealed_objects = BTreeSet::new();
    let mut strange = Vec::new();
    for object in store.objects().await {
        let parts: Vec<&str> = object.split('/').collect();
        match parts.as_slice() {
            ["blobs", alg, _, hex] => {
                plain_objects.insert(format!("{alg}:{hex}"));
            }
            ["sealed", ..] => {
                sealed_objects.insert(object.clone());
            }
            _ => strange.push(object.clone()),
        }
    }
    finding(&mut out, "objects of no known shape under blobs/ or sealed/", strange);
    finding(&mut out, "plaintext objects without a blob row", plain_objects.difference(&plain).cloned().collect());
    finding(&mut out, "sealed objects without a copy row", sealed_objects.difference(&copies).cloned().collect());
    finding(&mut out, "blob rows whose plaintext object is gone", plain.difference(&plain_objects).cloned().collect());
    finding(&mut out, "copy rows whose sealed object is gone", copies.difference(&sealed_objects).cloned().collect());
    out
}

/// `sealed/<alg>/<hex[0..2]>/<hex>/<object>`: the layout of `berth_storage::layout`, spelled
/// out here so that a change of it shows.
fn sealed_path(digest: &str, object: &str) -> String {
    let (alg, hex) = digest.split_once(':').unwrap();
    format!("sealed/{alg}/{}/{hex}/{object}", &hex[..2])
}

/// Waits (polling, 60 s at most) until no writer holds a digest: holds are released in the
/// registry's batched flush, every few seconds after their writer finished, and the final
/// collection must not meet one (it would leave that blob for the next run).
pub async fn wait_for_released_holds(db: &Db) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let held = first(db.rows("SELECT digest FROM gc_holds ORDER BY 1").await);
        if held.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("{} holds still there a minute after the clients stopped: {held:?}", held.len()));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// How much is stored, for the summary.
pub async fn counts(db: &Db) -> String {
    let n = |table: &str| format!("SELECT CAST(COUNT(*) AS TEXT) FROM {table}");
    let mut parts = Vec::new();
    for table in ["repositories", "manifests", "repository_blobs", "blobs", "blob_copies"] {
        let rows = first(db.rows(&n(table)).await);
        parts.push(format!("{table} {}", rows[0]));
    }
    parts.join(", ")
}

impl Store {
    /// Deletes every object the test left in the bucket's prefix (the disk's are in a
    /// temporary folder that goes by itself).
    pub async fn delete_everything(&self) {
        if let Store::S3(store) = self {
            let all = store.list(None).map_ok(|m| m.location).boxed();
            let deleted: Vec<_> = store.delete_stream(all).try_collect().await.unwrap();
            println!("gc race: deleted the {} objects left in the bucket's prefix", deleted.len());
        }
    }
}
