//! [`PostgresStore`]: the metadata store in PostgreSQL, shared by several Berth replicas.
//!
//! The same tables as SQLite (`postgres_v1.sql`, `postgres_v3.sql`, `postgres_v4.sql`,
//! `postgres_v5.sql`, `postgres_v7.sql`), reached through a pool of
//! `tokio-postgres` connections (`deadpool-postgres`). Names, tags and digests are
//! `COLLATE "C"`, so listings sort and paginate by bytes exactly as SQLite does.
//!
//! # Concurrency
//!
//! Transactions run at PostgreSQL's default READ COMMITTED level, and each check that must
//! still hold at commit takes a row lock, so that concurrent writers on any number of
//! replicas end as if they had run one after another:
//!
//! - Single-statement writes are atomic on their own. `advance_upload` is one
//!   `UPDATE .. WHERE byte_offset = $expected`: a second writer waits for the first's row
//!   lock, then re-evaluates the `WHERE` on the new row and updates nothing (it lost).
//! - Creating rows that may already exist is `INSERT .. ON CONFLICT`, which waits for an
//!   in-flight insert of the same key instead of failing.
//! - `put_manifest` locks what it checked (`FOR KEY SHARE` on the repository's blob links,
//!   child manifests and, when it was already there, the manifest itself) so that a
//!   concurrent `unlink_blob` or `delete_manifest` waits for the push to commit rather than
//!   slipping in between the check and the commit. Tags are upserted in sorted order, so two
//!   pushes moving the same tags take their locks in the same order; the last to commit
//!   wins, as in a serial run.
//! - `set_repository_key` (only from NULL) and `rewrap_copy` (only from the old KEK) are
//!   single conditional `UPDATE`s, like `advance_upload`; `create_repository`,
//!   `add_blob_copy` and `add_key` are `INSERT .. ON CONFLICT DO NOTHING`, so of racing
//!   writers exactly one creates and the others report what is there.
//! - `drop_plaintext` and `link_blob` serialize on the blob's row: the link's upsert
//!   (`ON CONFLICT DO UPDATE`, which locks the row even when it changes nothing) and the
//!   drop's `FOR NO KEY UPDATE`, taken before it checks redundancy in a new statement (a new
//!   snapshot, which sees a link that committed while it waited). The check cannot be the
//!   `UPDATE`'s own `WHERE`: an `UPDATE` that waited for a row lock re-checks its `WHERE` on
//!   the new row, but its subqueries keep the statement's snapshot and would miss the new
//!   link. A new link is the only change that makes a redundant plaintext object needed
//!   again (keys are only ever given to plaintext repositories, copies only ever added).
//! - `activate_key` locks every key of the name (in id order) and `retire_key` the key's row
//!   before reading states: concurrent activations run one after another instead of failing
//!   the one-active-per-name index, and a retirement never overwrites an activation it did
//!   not see.
//! - No policy outlives its user or access key. `put_policy` for a user or key, and
//!   `create_access_key`, take `FOR KEY SHARE` on the owner's row before writing; deleting the
//!   owner locks that row for deletion first (waiting for those writers to commit), then
//!   deletes what hangs off it in new statements, whose snapshots see what they wrote. A
//!   writer that waited instead finds the row gone and writes nothing. The shared lock does
//!   not conflict with disabling or a password change.
//! - `ensure_signing_key` locks `signing_keys` (EXCLUSIVE: readers pass, writers queue) before
//!   it checks for a key, so of replicas starting at once the first records its candidate and
//!   the others, checking after it committed, find it.
//! - `delete_repository` locks the repository's row `FOR UPDATE` before it counts and deletes;
//!   `link_blob` and `put_manifest` hold it `FOR KEY SHARE` (`ensure_repo`) from their start to
//!   their commit. So a push either commits first (and the deletion, in later statements, sees
//!   and deletes what it wrote) or waits, finds the row gone, and creates the repository anew
//!   (with its own `repository.create`). `delete_manifest` locks the manifest `FOR UPDATE`, then
//!   its tags: a push pointing a tag at it waits (the tag's foreign key share-locks it), one
//!   moving a tag away commits first and the tag is no longer listed as deleted with it.
//! - Events (`emit`) are the last statements of the transaction that makes the change: the
//!   matching subscriptions are share-locked (a concurrent `delete_subscription` waits, then
//!   takes these deliveries with it), then an advisory lock per repository is held until
//!   commit, so events of one repository commit in `seq` order and a later one is never
//!   delivered before an earlier one still in flight. Across repositories `seq` may commit
//!   out of order; so that the feed (`events(after)`) never shows a later event before an
//!   earlier one commits, writers also hold a shared advisory lock (`FEED_LOCK`) from their
//!   `seq` to their commit, and a feed read takes it exclusively first: it waits for every
//!   transaction that holds a `seq` to end, and no new one is handed out until it has read.
//!   Writers never wait for each other on it, only (briefly) for a feed read.
//! - `claim_deliveries` locks its candidates `FOR UPDATE SKIP LOCKED` (replicas claiming at
//!   once split the work instead of queueing), then leases them with an `UPDATE` that checks
//!   every condition again in a new snapshot, so a delivery another owner leased or finished
//!   meanwhile is left alone: no two owners ever hold one delivery. `finish_delivery` locks
//!   the delivery before it checks the lease.
//!
//! SERIALIZABLE would give the same outcomes with less reasoning, but would abort and retry
//! pushes that merely read the same rows (every push of a popular base layer), and all
//! readers would pay for predicate locks. Deadlocks and serialization failures are still
//! retried (a few times, whole transaction) in case a future change introduces one.
//!
//! # Migrations
//!
//! Run at [`PostgresStore::open`] in one transaction that first takes a transaction-scoped
//! advisory lock, so replicas starting at once apply each version exactly once: the others
//! wait, then find nothing left to do. DDL in PostgreSQL is transactional, so a failed
//! migration leaves no half-made schema.
//!
//! # Files
//!
//! Each domain of the store is implemented in a file of its own (`postgres/<domain>.rs`, after
//! the domain traits of [`super`]); this module keeps the store, its pool, the migrations and
//! the helpers several domains share.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use berth_oci::RepoName;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio::sync::broadcast;
use tokio_postgres::error::SqlState;

use super::postgres_tls::PgTls;
use super::postgres_url::ConnectSettings;
use super::{Event, Page, Subscription, event_payload, postgres_url, subscription_from_columns, unix_now};
use crate::error::{Error, Result};
use crate::metadata::Change;
use crate::metadata::sql::{SCHEMA_VERSION, SUBSCRIPTION_COLUMNS};

/// Connections per process; bounds concurrent database work (and the server's connection
/// count: replicas × this).
const POOL_SIZE: usize = 16;

/// How long a request waits for a free connection or a new one before failing.
const POOL_TIMEOUT: Duration = Duration::from_secs(30);

/// Used when the URL does not say `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts of one transaction when PostgreSQL reports a deadlock or serialization failure.
const ATTEMPTS: u32 = 5;

/// The advisory lock that serializes migrations across replicas ("berth-md" in ASCII).
const MIGRATION_LOCK: i64 = 0x6265_7274_682d_6d64;

/// Schema versions, applied in order, each once. Never edit a released entry: add one.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("postgres_v1.sql")),
    (2, include_str!("postgres_v2.sql")),
    (3, include_str!("postgres_v3.sql")),
    (4, include_str!("postgres_v4.sql")),
    (5, include_str!("postgres_v5.sql")),
    (6, include_str!("postgres_v6.sql")),
    (7, include_str!("postgres_v7.sql")),
    (8, include_str!("postgres_v8.sql")),
    (9, include_str!("postgres_v9.sql")),
    (10, include_str!("postgres_v10.sql")),
    (11, include_str!("postgres_v11.sql")),
    (12, include_str!("postgres_v12.sql")),
    (13, include_str!("postgres_v13.sql")),
    (14, include_str!("postgres_v14.sql")),
    (15, include_str!("postgres_v15.sql")),
];

/// The advisory lock class (the first key of the two-key form) that event writers take per
/// repository ("beve" in ASCII); the second key is the hash of the repository's name.
const EVENTS_LOCK: i32 = 0x6265_7665;

/// The advisory lock (single-key form, "berth-ev" in ASCII) that event writers hold shared
/// from taking a `seq` to commit, and a read of the feed takes exclusively: see the module's
/// notes on locking.
const FEED_LOCK: i64 = 0x6265_7274_682d_6576;

/// The metadata store on a PostgreSQL server. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// For the listener's own connection, with the pool's TLS settings.
    config: tokio_postgres::Config,
    tls: PgTls,
    /// Announces changes once the listener runs ([`Manifests::changes`](super::Manifests::changes)).
    changes: Arc<OnceLock<broadcast::Sender<Change>>>,
}

impl std::fmt::Debug for PostgresStore {
    // The pool's configuration holds the password; show only what is harmless.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresStore").field("max_size", &status.max_size).field("size", &status.size).finish()
    }
}

fn pool_error(e: PoolError) -> Error {
    match e {
        PoolError::Backend(e) => Error::Postgres(e),
        other => Error::Task(format!("PostgreSQL connection pool: {other}")),
    }
}

/// Whether running the transaction again may succeed.
fn retryable(e: &Error) -> bool {
    let Error::Postgres(e) = e else { return false };
    matches!(e.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED)
}

/// Runs `$body` (which uses the open transaction `$tx`) and commits, retrying the whole
/// transaction on a deadlock or serialization failure. A macro rather than a function taking
/// a closure, so the body may borrow its arguments and the future stays `Send`.
macro_rules! transaction {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut attempt = 1;
        loop {
            let result: $crate::error::Result<_> = async {
                let mut client = $store.pool.get().await.map_err($crate::metadata::postgres::pool_error)?;
                let $tx = client.transaction().await?;
                let out = $body;
                $tx.commit().await?;
                Ok(out)
            }
            .await;
            match result {
                Err(e) if attempt < $crate::metadata::postgres::ATTEMPTS && $crate::metadata::postgres::retryable(&e) => {
                    tracing::debug!(error = %e, attempt, "metadata transaction retried");
                    attempt += 1;
                }
                other => break other,
            }
        }
    }};
}

// After `transaction!`, which they use.
mod blobs;
mod events;
mod gc;
mod identity;
mod images;
mod keys;
mod lifecycle;
mod manifests;
mod policies;
mod pull_through;
mod registry_settings;
mod replication;
mod repositories;
mod templates;
mod uploads;
mod usage;

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`, with any parameter
    /// tokio-postgres takes, e.g. `?options=-csearch_path%3Dberth` for a schema, and libpq's
    /// `sslmode`, `sslrootcert`, `sslcert`, `sslkey`: see [`postgres_url`]) and brings the
    /// schema up to date.
    pub async fn open(url: &str) -> Result<PostgresStore> {
        let store = PostgresStore::open_unmigrated(url)?;
        store.migrate().await?;
        Ok(store)
    }

    /// The pool for `url` (its TLS files read, see [`postgres_url`]); no connection is made yet.
    fn open_unmigrated(url: &str) -> Result<PostgresStore> {
        let ConnectSettings { mut config, tls } = postgres_url::parse(url)?;
        let tls = PgTls::new(&tls)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("berth");
        }
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|e| Error::Task(format!("PostgreSQL connection pool: {e}")))?;
        Ok(PostgresStore { pool, config, tls, changes: Default::default() })
    }

    /// Connects to `url` and brings the schema up to date, if the database holds a Berth
    /// schema already; `None` (nothing created) when it does not. For the commands other than
    /// `serve`, which must not start a registry in a database that was named by mistake.
    pub async fn open_existing(url: &str) -> Result<Option<PostgresStore>> {
        let store = PostgresStore::open_unmigrated(url)?;
        let client = store.client().await?;
        // `to_regclass` follows the `search_path`, as the migrations do.
        let found: bool = client.query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[]).await?.get(0);
        drop(client);
        if !found {
            return Ok(None);
        }
        store.migrate().await?;
        Ok(Some(store))
    }

    async fn migrate(&self) -> Result<()> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
        // Without the notice "relation schema_migrations already exists, skipping" that every
        // start (and every `berth` command) would otherwise log.
        tx.batch_execute("SET LOCAL client_min_messages = warning").await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .await?;
        let current: i64 = tx.query_one(SCHEMA_VERSION, &[]).await?.get(0);
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            tx.batch_execute(sql).await?;
            tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)", &[version, &unix_now()])
                .await?;
            tracing::info!(schema.version = version, "metadata schema migrated");
        }
        tx.commit().await?;
        Ok(())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }
}

/// The repository's id, creating the repository on first use; `true` when it was created.
///
/// An existing repository's row is share-locked (`FOR KEY SHARE`) until commit: a
/// `delete_repository` (which locks it `FOR UPDATE`) waits for this transaction and then
/// deletes what it wrote, or this one waits for the deletion, finds the row gone, and creates
/// the repository anew.
async fn ensure_repo(tx: &impl GenericClient, repo: &RepoName) -> Result<(i64, bool)> {
    for _ in 0..ATTEMPTS {
        let inserted = tx
            .query_opt(
                "INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING id",
                &[&repo.as_str(), &unix_now()],
            )
            .await?;
        if let Some(row) = inserted {
            return Ok((row.try_get(0)?, true));
        }
        // Another transaction inserted it and committed (ON CONFLICT waited for it); this new
        // statement's snapshot sees it, unless a deletion committed meanwhile: then again.
        let row = tx.query_opt("SELECT id FROM repositories WHERE name = $1 FOR KEY SHARE", &[&repo.as_str()]).await?;
        if let Some(row) = row {
            return Ok((row.try_get(0)?, false));
        }
    }
    Err(Error::Conflict)
}

/// Writes `events` to the outbox, in order, and fans each out to one delivery per enabled
/// subscription it matches: the last step of every transaction that makes a change a webhook
/// reports, so the events commit with the change or not at all.
///
/// The subscriptions that matched are share-locked until commit (as the deliveries' foreign
/// key would lock them), so a concurrent deletion either waits and takes these deliveries
/// with it, or commits first and gets none. Then a transaction-scoped advisory lock per
/// repository, held until commit, makes `seq` order commit order within each repository: a
/// later event of a repository never becomes visible (and deliverable) before an earlier one;
/// and `FEED_LOCK` shared, so that a read of the feed waits for this commit. Taken last,
/// after the change's own row locks, so they serialize only these inserts and the commit, and
/// no transaction waits for a row lock while holding them.
async fn emit(tx: &impl GenericClient, events: &[Event]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let subscriptions = read_subscriptions(tx, "WHERE enabled").await?;
    let matched: Vec<Vec<&str>> = events
        .iter()
        .map(|e| subscriptions.iter().filter(|s| s.matches(e)).map(|s| s.name.as_str()).collect())
        .collect();
    let wanted: BTreeSet<&str> = matched.iter().flatten().copied().collect();
    let alive: BTreeSet<String> = if wanted.is_empty() {
        BTreeSet::new()
    } else {
        let wanted: Vec<&str> = wanted.into_iter().collect();
        let stmt = tx
            .prepare_cached(
                "SELECT name FROM subscriptions WHERE name = ANY($1) AND enabled ORDER BY name COLLATE \"C\" \
                 FOR KEY SHARE",
            )
            .await?;
        tx.query(&stmt, &[&wanted]).await?.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?
    };
    let repositories: BTreeSet<&str> = events.iter().map(|e| e.repository.as_str()).collect();
    let lock = tx.prepare_cached("SELECT pg_advisory_xact_lock($1, hashtext($2))").await?;
    for repository in repositories {
        tx.query(&lock, &[&EVENTS_LOCK, &repository]).await?;
    }
    tx.query("SELECT pg_advisory_xact_lock_shared($1)", &[&FEED_LOCK]).await?;
    let insert_event = tx
        .prepare_cached(
            "INSERT INTO events (id, kind, repository, created_ms, payload) VALUES ($1, $2, $3, $4, $5) RETURNING seq",
        )
        .await?;
    let insert_deliveries = tx
        .prepare_cached(
            "INSERT INTO deliveries (subscription, event_seq, repository, state, attempts, next_attempt_ms, \
             created_ms, updated_ms) SELECT unnest($1::text[]), $2, $3, 'pending', 0, $4, $4, $4",
        )
        .await?;
    for (event, names) in events.iter().zip(matched) {
        let row = tx
            .query_one(
                &insert_event,
                &[&event.id, &event.kind.as_str(), &event.repository, &event.time_ms, &event_payload(event)?],
            )
            .await?;
        let seq: i64 = row.try_get(0)?;
        let names: Vec<&str> = names.into_iter().filter(|n| alive.contains(*n)).collect();
        if !names.is_empty() {
            tx.execute(&insert_deliveries, &[&names, &seq, &event.repository, &event.time_ms]).await?;
        }
    }
    Ok(())
}

/// Subscriptions (`filter`: a WHERE clause or empty), by name.
async fn read_subscriptions(tx: &impl GenericClient, filter: &str) -> Result<Vec<Subscription>> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions {filter} ORDER BY name COLLATE \"C\""
        ))
        .await?;
    tx.query(&stmt, &[])
        .await?
        .iter()
        .map(|r| subscription_from_columns(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?))
        .collect()
}

fn db_limit(page: &Page) -> i64 {
    i64::try_from(page.limit).unwrap_or(i64::MAX)
}

/// A listing's `limit` as a SQL integer.
fn db_count(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
