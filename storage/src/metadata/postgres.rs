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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_postgres::AsyncMessage;

use crate::metadata::Change;

use async_trait::async_trait;
use berth_oci::{Digest, Reference, RepoName, Tag, UploadId};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;

use super::postgres_tls::PgTls;
use super::postgres_url::{self, ConnectSettings};

use super::{
    AccessKeyRecord, Attempt, BlobEntry, Claimed, DELIVERY_COLUMNS, Delivery, DeliveryColumns, DeliveryCounts,
    DeliveryFilter, DeliveryPhase, Event, EventKind, KeyRecord, KeyState, ManifestRecord, MetadataStore, NewManifest,
    Origin, Outcome, OutcomeColumns, Page, PolicyRecord, PolicySet, PolicyTarget, Referrer, RepositoryDeleted,
    RequiredContent, RetireRefused, SigningKeyRecord, Subscription, SubscriptionSource, UploadQuota, UploadRecord,
    UserRecord, attempt_from_columns, blob_linked, check_reference, db_size, event_from_payload, event_payload,
    manifest_deleted, manifest_pushed, parse_digest, repository_created, size_of, source_column,
    subscription_definition, subscription_from_columns, tag_deleted, unix_now,
};
use crate::crypt::{Run, SealedBlob, UploadSealing};
use crate::error::{Causes, Error, Result};

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
];

/// The advisory lock class (the first key of the two-key form) that event writers take per
/// repository ("beve" in ASCII); the second key is the hash of the repository's name.
const EVENTS_LOCK: i32 = 0x6265_7665;

/// The advisory lock (single-key form, "berth-ev" in ASCII) that event writers hold shared
/// from taking a `seq` to commit, and a read of the feed takes exclusively: see the module's
/// notes on locking.
const FEED_LOCK: i64 = 0x6265_7274_682d_6576;

/// The channel on which manifest and tag changes are announced (see postgres_v2.sql).
const CHANGES_CHANNEL: &str = "berth_manifests";

/// The metadata store on a PostgreSQL server. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// For the listener's own connection, with the pool's TLS settings.
    config: tokio_postgres::Config,
    tls: PgTls,
    /// Announces changes once the listener runs ([`MetadataStore::changes`]).
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
            let result: Result<_> = async {
                let mut client = $store.pool.get().await.map_err(pool_error)?;
                let $tx = client.transaction().await?;
                let out = $body;
                $tx.commit().await?;
                Ok(out)
            }
            .await;
            match result {
                Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                    tracing::debug!(error = %e, attempt, "metadata transaction retried");
                    attempt += 1;
                }
                other => break other,
            }
        }
    }};
}

mod gc;

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
        let current: i64 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await?.get(0);
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

/// Listens on [`CHANGES_CHANNEL`] over a connection of its own and passes each change on,
/// reconnecting when the connection drops. After every (re)connection it sends
/// [`Change::Unknown`]: what happened while nobody listened is lost. It stops when no one
/// subscribes any more.
async fn listen(config: tokio_postgres::Config, tls: PgTls, tx: broadcast::Sender<Change>) {
    let mut backoff = Duration::from_millis(100);
    while tx.receiver_count() > 0 {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                // The connection must be driven (polled for messages) while LISTEN runs.
                let statement = format!("LISTEN {CHANGES_CHANNEL}");
                let ok = {
                    let mut listening = std::pin::pin!(client.batch_execute(&statement));
                    loop {
                        tokio::select! {
                            r = &mut listening => break r.is_ok(),
                            m = messages.next() => if !matches!(m, Some(Ok(_))) { break false },
                        }
                    }
                };
                if ok {
                    backoff = Duration::from_millis(100);
                    let _ = tx.send(Change::Unknown);
                    tracing::debug!("listening for metadata changes");
                    loop {
                        match tokio::time::timeout(Duration::from_secs(30), messages.next()).await {
                            Ok(Some(Ok(AsyncMessage::Notification(n)))) => {
                                let change = n.payload().parse().map_or(Change::Unknown, Change::Repository);
                                let _ = tx.send(change);
                            }
                            Ok(Some(Ok(_))) => {}
                            Ok(Some(Err(e))) => {
                                tracing::warn!(error = %Causes(&e), "PostgreSQL listener connection failed; reconnecting");
                                break;
                            }
                            Ok(None) => break,
                            Err(_) if tx.receiver_count() == 0 => return,
                            Err(_) => {}
                        }
                    }
                }
                let _ = tx.send(Change::Unknown);
            }
            Err(e) => tracing::warn!(error = %Causes(&e), "PostgreSQL listener cannot connect; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
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

const SUBSCRIPTION_COLUMNS: &str = "name, definition, enabled, source, created_at";

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

/// Inserts or replaces `s` with `source`, keeping an existing one's `created_at`: `Some(true)`
/// when created, `Some(false)` when replaced, `None` (and nothing written) when `keep_api`
/// and the name belongs to an `api` subscription.
async fn upsert_subscription(
    tx: &impl GenericClient,
    s: &Subscription,
    source: SubscriptionSource,
    keep_api: bool,
) -> Result<Option<bool>> {
    let s = Subscription { source, ..s.clone() };
    let definition = subscription_definition(&s)?;
    for _ in 0..ATTEMPTS {
        let existing = tx.query_opt("SELECT source FROM subscriptions WHERE name = $1 FOR UPDATE", &[&s.name]).await?;
        match existing {
            Some(row) => {
                if keep_api && row.try_get::<_, &str>(0)? == source_column(SubscriptionSource::Api) {
                    return Ok(None);
                }
                tx.execute(
                    "UPDATE subscriptions SET definition = $2, enabled = $3, source = $4 WHERE name = $1",
                    &[&s.name, &definition, &s.enabled, &source_column(source)],
                )
                .await?;
                return Ok(Some(false));
            }
            None => {
                // A racing insert of the same name commits first: then it is there to replace.
                let n = tx
                    .execute(
                        &format!(
                            "INSERT INTO subscriptions ({SUBSCRIPTION_COLUMNS}) VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (name) DO NOTHING"
                        ),
                        &[&s.name, &definition, &s.enabled, &source_column(source), &unix_now()],
                    )
                    .await?;
                if n > 0 {
                    return Ok(Some(true));
                }
            }
        }
    }
    Err(Error::Conflict)
}

fn delivery_columns(r: &tokio_postgres::Row) -> Result<DeliveryColumns> {
    Ok(DeliveryColumns {
        id: r.try_get(0)?,
        subscription: r.try_get(1)?,
        state: r.try_get(2)?,
        attempts: i64::from(r.try_get::<_, i32>(3)?),
        next_attempt_ms: r.try_get(4)?,
        last_status: r.try_get::<_, Option<i32>>(5)?.map(i64::from),
        last_error: r.try_get(6)?,
        created_ms: r.try_get(7)?,
        updated_ms: r.try_get(8)?,
        event_seq: r.try_get(9)?,
        payload: r.try_get(10)?,
    })
}

/// The deliveries (`d`, joined with their events `e`) a [`DeliveryFilter`] takes, bound as
/// $1 subscription, $2 state (a [`DeliveryPhase`]: `retrying` is pending after a failed
/// attempt), $3 repository, $4 id, $5 event id (NULL: any).
const DELIVERY_FILTER: &str = "($1::text IS NULL OR d.subscription = $1) \
    AND ($2::text IS NULL OR (CASE WHEN d.state = 'pending' AND d.attempts > 0 THEN 'retrying' ELSE d.state END) = $2) \
    AND ($3::text IS NULL OR d.repository = $3) AND ($4::bigint IS NULL OR d.id = $4) \
    AND ($5::text IS NULL OR e.id = $5)";

/// The filter's parameters, in the order of [`DELIVERY_FILTER`].
type FilterParams<'a> = (Option<&'a str>, Option<&'static str>, Option<&'a str>, Option<i64>, Option<&'a str>);

fn filter_params(f: &DeliveryFilter) -> FilterParams<'_> {
    (
        f.subscription.as_deref(),
        f.state.map(DeliveryPhase::as_str),
        f.repository.as_deref(),
        f.id,
        f.event_id.as_deref(),
    )
}

/// A delivery `d` is claimable at $1 (now) when it is pending, due, not leased (or its lease
/// ran out), its subscription is enabled, and no earlier delivery of its line (subscription,
/// repository) is pending.
const CLAIMABLE: &str = "d.state = 'pending' AND d.next_attempt_ms <= $1 \
    AND (d.lease_owner IS NULL OR d.lease_until_ms <= $1) \
    AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.name = d.subscription AND s.enabled) \
    AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.subscription = d.subscription \
    AND p.repository = d.repository AND p.state = 'pending' AND p.event_seq < d.event_seq)";

fn db_limit(page: &Page) -> i64 {
    i64::try_from(page.limit).unwrap_or(i64::MAX)
}

const UPLOAD_COLUMNS: &str = "id, repository, byte_offset, hash_state, parts, created_at, updated_at, sealing";

fn upload_record(row: &tokio_postgres::Row) -> Result<UploadRecord> {
    let id: String = row.try_get(0)?;
    let repo: String = row.try_get(1)?;
    let corrupt = |what: &str, e: &dyn std::fmt::Display| Error::Corrupt(format!("upload {id}: {what}: {e}"));
    Ok(UploadRecord {
        id: id.parse().map_err(|e| corrupt("id", &e))?,
        repo: repo.parse().map_err(|e| corrupt("repository", &e))?,
        offset: size_of(row.try_get(2)?),
        hash_state: row.try_get(3)?,
        parts: row.try_get(4)?,
        created_at: row.try_get(5)?,
        updated_at: row.try_get(6)?,
        sealing: row.try_get::<_, Option<&str>>(7)?.map(|s| UploadSealing::decode(s.as_bytes())).transpose()?,
    })
}

/// An upload's `sealing` (JSON) and `sealing_kek` columns.
fn sealing_columns(u: &UploadRecord) -> (Option<String>, Option<&str>) {
    match &u.sealing {
        Some(s) => (Some(String::from_utf8_lossy(&s.encode()).into_owned()), Some(s.kek.as_str())),
        None => (None, None),
    }
}

/// A blob copy's columns: `c` is blob_copies, `b` blobs.
const COPY_COLUMNS: &str = "c.key_name, c.object, b.size, c.kek, c.wrapped, c.runs";

/// The copy read from [`COPY_COLUMNS`] starting at column `at`.
fn copy_record(row: &tokio_postgres::Row, at: usize) -> Result<SealedBlob> {
    Ok(SealedBlob {
        key_name: row.try_get(at)?,
        object: row.try_get(at + 1)?,
        size: size_of(row.try_get(at + 2)?),
        kek: row.try_get(at + 3)?,
        wrapped: row.try_get(at + 4)?,
        runs: Run::decode(row.try_get(at + 5)?)?,
    })
}

/// A blob (`b`) whose plaintext object exists and is needed by no repository: each one
/// linking it has a key and a sealed copy for that key (as in SQLite).
const REDUNDANT: &str = "b.plain AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest) \
    AND NOT EXISTS (SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
    WHERE rb.digest = b.digest AND (r.key_name IS NULL OR NOT EXISTS \
    (SELECT 1 FROM blob_copies c WHERE c.digest = b.digest AND c.key_name = r.key_name)))";

/// A listing's `limit` as a SQL integer.
fn db_count(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Checks every reference against the sizes found (digest → size), in the manifest's order,
/// so the error names the first one missing, as SQLite does.
fn check_references(required: &[RequiredContent], found: &[tokio_postgres::Row]) -> Result<()> {
    for r in required {
        let digest = r.digest.to_string();
        let mut size = None;
        for row in found {
            if row.try_get::<_, &str>(0)? == digest {
                size = Some(size_of(row.try_get(1)?));
            }
        }
        check_reference(r, size)?;
    }
    Ok(())
}

fn digests(required: &[RequiredContent]) -> Vec<String> {
    required.iter().map(|r| r.digest.to_string()).collect()
}

const USER_COLUMNS: &str = "name, password_hash, disabled, created_at, id, credential_generation";

fn user_record(row: &tokio_postgres::Row) -> Result<UserRecord> {
    Ok(UserRecord {
        name: row.try_get(0)?,
        password_hash: row.try_get(1)?,
        disabled: row.try_get(2)?,
        created_at: row.try_get(3)?,
        id: row.try_get(4)?,
        generation: row.try_get(5)?,
    })
}

const ACCESS_KEY_COLUMNS: &str = "id, user_name, secret_digest, disabled, created_at";

fn access_key_record(row: &tokio_postgres::Row) -> Result<AccessKeyRecord> {
    Ok(AccessKeyRecord {
        id: row.try_get(0)?,
        user: row.try_get(1)?,
        secret_digest: row.try_get(2)?,
        disabled: row.try_get(3)?,
        created_at: row.try_get(4)?,
    })
}

const POLICY_COLUMNS: &str = "target_kind, target, name, document, updated_at";

fn policy_record(row: &tokio_postgres::Row) -> Result<PolicyRecord> {
    Ok(PolicyRecord {
        target: PolicyTarget::from_columns(row.try_get(0)?, row.try_get(1)?)?,
        name: row.try_get(2)?,
        document: row.try_get(3)?,
        updated_at: row.try_get(4)?,
    })
}

/// The policies and tags one request needs, as policy rows: `$1` the user, `$2` the access
/// key, `$3` the repository (each may be NULL, which matches nothing). Tags come back as rows
/// of kind `tag` with the key in `target` and the value in `name`.
const POLICIES_FOR_REQUEST: &str = "SELECT target_kind, target, name, document, updated_at FROM policies \
    WHERE (target_kind = 'user' AND target = $1::text) OR (target_kind = 'access_key' AND target = $2::text) \
    OR (target_kind = 'repository' AND target = $3::text) OR (target_kind = 'registry' AND target = '') \
    UNION ALL SELECT 'tag', key, value, '', 0::bigint FROM repository_tags WHERE repository = $3::text";

#[async_trait]
impl MetadataStore for PostgresStore {
    fn changes(&self) -> Option<broadcast::Receiver<Change>> {
        let mut started = false;
        let tx = self.changes.get_or_init(|| {
            started = true;
            broadcast::channel(1024).0
        });
        let rx = tx.subscribe();
        if started {
            tokio::spawn(listen(self.config.clone(), self.tls.clone(), tx.clone()));
        }
        Some(rx)
    }

    async fn ping(&self) -> Result<()> {
        self.client().await?.query_one("SELECT 1", &[]).await?;
        Ok(())
    }

    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT b.size FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
                 JOIN blobs b ON b.digest = rb.digest WHERE r.name = $1 AND rb.digest = $2",
            )
            .await?;
        let row = client.query_opt(&stmt, &[&repo.as_str(), &digest.to_string()]).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?.map(size_of))
    }

    async fn any_blob(&self, digest: &Digest) -> Result<Option<u64>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT b.size FROM blobs b WHERE b.digest = $1 \
                 AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)",
            )
            .await?;
        let row = client.query_opt(&stmt, &[&digest.to_string()]).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?.map(size_of))
    }

    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        plaintext: bool,
        from: Option<&RepoName>,
        origin: &Origin,
    ) -> Result<()> {
        let column = digest.to_string();
        transaction!(self, |tx| {
            // The digest's lock orders this link with the collector's doom: the doom waits and
            // then sees the link, or this waits and then sees the doom.
            gc::lock_digests(&tx, std::slice::from_ref(&column)).await?;
            if gc::doomed_now(&tx, &column).await? {
                return Err(Error::Doomed(digest.clone()));
            }
            let (id, created) = ensure_repo(&tx, repo).await?;
            let now = unix_now();
            // Once flagged, plaintext stays flagged until `drop_plaintext`. DO UPDATE locks the
            // row even when its WHERE leaves it unchanged: a concurrent `drop_plaintext` waits
            // for this link to commit, then sees it.
            tx.execute(
                "INSERT INTO blobs (digest, size, created_at, plain) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (digest) DO UPDATE SET plain = true WHERE excluded.plain AND NOT blobs.plain",
                &[&column, &db_size(size), &now, &plaintext],
            )
            .await?;
            // Linking again tells the client again that the blob is there: seen now, unmarked.
            tx.execute(
                "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (repository_id, digest) DO UPDATE SET seen_at = excluded.created_at, gc_mark = NULL",
                &[&id, &column, &now],
            )
            .await?;
            let mut events = Vec::with_capacity(2);
            if created {
                events.push(repository_created(repo, origin));
            }
            events.push(blob_linked(repo, digest, size, from, origin));
            emit(&tx, &events).await?;
        })
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM repository_blobs WHERE digest = $2 \
                 AND repository_id = (SELECT id FROM repositories WHERE name = $1)",
                &[&repo.as_str(), &digest.to_string()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn put_manifest(&self, m: &NewManifest, origin: &Origin) -> Result<()> {
        let digest = m.digest.to_string();
        let annotations = m.annotations.as_ref().map(|a| serde_json::to_string(a).unwrap_or_default());
        let subject = m.subject.as_ref().map(|s| s.to_string());
        let size = db_size(m.content.len() as u64);
        let children: Vec<String> = m.blobs.iter().chain(&m.manifests).map(|c| c.digest.to_string()).collect();
        // Sorted: concurrent pushes lock shared tags in the same order, so they cannot deadlock.
        let tags: Vec<&str> = m.tags.iter().map(Tag::as_str).collect::<BTreeSet<_>>().into_iter().collect();
        transaction!(self, |tx| {
            let (id, created) = ensure_repo(&tx, &m.repo).await?;
            // The checks hold until commit: the rows stay locked against unlink and delete.
            if !m.blobs.is_empty() {
                let found = tx
                    .query(
                        "SELECT rb.digest, b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
                         WHERE rb.repository_id = $1 AND rb.digest = ANY($2) FOR KEY SHARE OF rb",
                        &[&id, &digests(&m.blobs)],
                    )
                    .await?;
                check_references(&m.blobs, &found)?;
            }
            if !m.manifests.is_empty() {
                let found = tx
                    .query(
                        "SELECT digest, size FROM manifests WHERE repository_id = $1 AND digest = ANY($2) \
                         FOR KEY SHARE",
                        &[&id, &digests(&m.manifests)],
                    )
                    .await?;
                check_references(&m.manifests, &found)?;
            }
            let now = unix_now();
            let mut attempt = 0;
            loop {
                let inserted = tx
                    .execute(
                        "INSERT INTO manifests (repository_id, digest, media_type, artifact_type, size, content, \
                         subject, annotations, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                         ON CONFLICT DO NOTHING",
                        &[
                            &id,
                            &digest,
                            &m.media_type,
                            &m.artifact_type,
                            &size,
                            &m.content,
                            &subject,
                            &annotations,
                            &now,
                        ],
                    )
                    .await?;
                if inserted > 0 {
                    tx.execute(
                        "INSERT INTO manifest_references (repository_id, manifest_digest, child_digest) \
                         SELECT $1, $2, unnest($3::text[]) ON CONFLICT DO NOTHING",
                        &[&id, &digest, &children],
                    )
                    .await?;
                    break;
                }
                // Already there: keep it there until commit (a racing delete waits), unless a
                // delete committed in between, in which case insert it again.
                let kept = tx
                    .query_opt(
                        "SELECT 1 FROM manifests WHERE repository_id = $1 AND digest = $2 FOR KEY SHARE",
                        &[&id, &digest],
                    )
                    .await?;
                attempt += 1;
                if kept.is_some() {
                    break;
                }
                if attempt >= ATTEMPTS {
                    return Err(Error::Conflict);
                }
            }
            if !tags.is_empty() {
                tx.execute(
                    "INSERT INTO tags (repository_id, name, digest, updated_at) \
                     SELECT $1, unnest($2::text[]), $3, $4 \
                     ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest, \
                     updated_at = excluded.updated_at",
                    &[&id, &tags, &digest, &now],
                )
                .await?;
            }
            let mut events = Vec::with_capacity(m.tags.len() + 1);
            if created {
                events.push(repository_created(&m.repo, origin));
            }
            events.extend(manifest_pushed(m, origin));
            emit(&tx, &events).await?;
        })
    }

    async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>> {
        let client = self.client().await?;
        let row = match reference {
            Reference::Tag(tag) => {
                let stmt = client
                    .prepare_cached(
                        "SELECT m.digest, m.media_type, m.content FROM tags t \
                         JOIN repositories r ON r.id = t.repository_id \
                         JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest \
                         WHERE r.name = $1 AND t.name = $2",
                    )
                    .await?;
                client.query_opt(&stmt, &[&repo.as_str(), &tag.as_str()]).await?
            }
            Reference::Digest(digest) => {
                let stmt = client
                    .prepare_cached(
                        "SELECT m.digest, m.media_type, m.content FROM manifests m \
                         JOIN repositories r ON r.id = m.repository_id WHERE r.name = $1 AND m.digest = $2",
                    )
                    .await?;
                client.query_opt(&stmt, &[&repo.as_str(), &digest.to_string()]).await?
            }
        };
        row.map(|r| {
            Ok(ManifestRecord {
                digest: parse_digest(r.try_get(0)?)?,
                media_type: r.try_get(1)?,
                content: r.try_get(2)?,
            })
        })
        .transpose()
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest, origin: &Origin) -> Result<bool> {
        let column = digest.to_string();
        transaction!(self, |tx| {
            // The manifest first: a push that would point a tag at it (which share-locks it
            // through the tag's foreign key, or keeps it when it exists) waits for this
            // deletion, or this one for the push.
            let found = tx
                .query_opt(
                    "SELECT m.repository_id, m.media_type, m.size FROM manifests m \
                     JOIN repositories r ON r.id = m.repository_id WHERE r.name = $1 AND m.digest = $2 \
                     FOR UPDATE OF m",
                    &[&repo.as_str(), &column],
                )
                .await?;
            match found {
                None => false,
                Some(row) => {
                    let (id, media_type, size): (i64, String, i64) =
                        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                    // Locked too: a push moving one of them elsewhere commits first, and then
                    // the tag is no longer this manifest's (re-checked on the new row).
                    let tags: Vec<String> = tx
                        .query(
                            "SELECT name FROM tags WHERE repository_id = $1 AND digest = $2 \
                             ORDER BY name COLLATE \"C\" FOR UPDATE",
                            &[&id, &column],
                        )
                        .await?
                        .iter()
                        .map(|r| r.try_get(0))
                        .collect::<Result<_, _>>()?;
                    // Tags and references go with the manifest (ON DELETE CASCADE).
                    tx.execute("DELETE FROM manifests WHERE repository_id = $1 AND digest = $2", &[&id, &column])
                        .await?;
                    emit(&tx, &manifest_deleted(repo, digest, &media_type, size_of(size), &tags, origin)).await?;
                    true
                }
            }
        })
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag, origin: &Origin) -> Result<bool> {
        transaction!(self, |tx| {
            let deleted = tx
                .query_opt(
                    "DELETE FROM tags t USING repositories r WHERE r.id = t.repository_id AND r.name = $1 \
                     AND t.name = $2 RETURNING t.digest, (SELECT m.media_type FROM manifests m \
                     WHERE m.repository_id = t.repository_id AND m.digest = t.digest)",
                    &[&repo.as_str(), &tag.as_str()],
                )
                .await?;
            match deleted {
                None => false,
                Some(row) => {
                    let digest: String = row.try_get(0)?;
                    let event = tag_deleted(repo.as_str(), tag.as_str(), &digest, row.try_get(1)?, origin);
                    emit(&tx, &[event]).await?;
                    true
                }
            }
        })
    }

    async fn list_tags(&self, repo: &RepoName, page: &Page) -> Result<Option<Vec<String>>> {
        // One statement (one snapshot): no row when the repository does not exist, one row with
        // a NULL name when it has no tags on this page.
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT t.name FROM repositories r LEFT JOIN LATERAL \
                 (SELECT name FROM tags WHERE repository_id = r.id AND name > $2 ORDER BY name COLLATE \"C\" LIMIT $3) t \
                 ON true WHERE r.name = $1",
            )
            .await?;
        let rows =
            client.query(&stmt, &[&repo.as_str(), &page.last.as_deref().unwrap_or_default(), &db_limit(page)]).await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut names = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(name) = row.try_get::<_, Option<String>>(0)? {
                names.push(name);
            }
        }
        Ok(Some(names))
    }

    async fn list_repositories(&self, page: &Page) -> Result<Vec<String>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT name FROM repositories WHERE name > $1 ORDER BY name COLLATE \"C\" LIMIT $2")
            .await?;
        let rows = client.query(&stmt, &[&page.last.as_deref().unwrap_or_default(), &db_limit(page)]).await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        page: &Page,
    ) -> Result<Vec<Referrer>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations FROM manifests m \
                 JOIN repositories r ON r.id = m.repository_id \
                 WHERE r.name = $1 AND m.subject = $2 AND ($3::text IS NULL OR m.artifact_type = $3) \
                 AND ($4::text IS NULL OR (m.created_at, m.digest COLLATE \"C\") > \
                      (SELECT p.created_at, p.digest COLLATE \"C\" FROM manifests p \
                       WHERE p.repository_id = r.id AND p.digest = $4)) \
                 ORDER BY m.created_at, m.digest COLLATE \"C\" LIMIT $5",
            )
            .await?;
        let rows = client
            .query(&stmt, &[&repo.as_str(), &subject.to_string(), &artifact_type, &page.last, &db_limit(page)])
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let annotations = row
                .try_get::<_, Option<String>>(4)?
                .map(|a| serde_json::from_str(&a).map_err(|e| Error::Corrupt(format!("annotations: {e}"))))
                .transpose()?;
            out.push(Referrer {
                digest: parse_digest(row.try_get(0)?)?,
                media_type: row.try_get(1)?,
                size: size_of(row.try_get(2)?),
                artifact_type: row.try_get(3)?,
                annotations,
            });
        }
        Ok(out)
    }

    async fn create_upload(&self, u: &UploadRecord, quota: &UploadQuota) -> Result<()> {
        let (sealing, sealing_kek) = sealing_columns(u);
        let client = self.client().await?;
        let counts = client
            .query_one(
                "SELECT (SELECT count(*) FROM uploads WHERE repository = $1), \
                        (SELECT count(*) FROM uploads WHERE principal = $2)",
                &[&u.repo.as_str(), &quota.principal],
            )
            .await?;
        quota.check(size_of(counts.try_get(0)?), size_of(counts.try_get(1)?))?;
        client
            .execute(
                "INSERT INTO uploads (id, repository, byte_offset, hash_state, parts, created_at, updated_at, \
                 sealing, sealing_kek, principal) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    &u.id.as_str(),
                    &u.repo.as_str(),
                    &db_size(u.offset),
                    &u.hash_state,
                    &u.parts,
                    &u.created_at,
                    &u.updated_at,
                    &sealing,
                    &sealing_kek,
                    &quota.principal,
                ],
            )
            .await?;
        Ok(())
    }

    async fn get_upload(&self, id: &UploadId) -> Result<Option<UploadRecord>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = $1")).await?;
        let row = client.query_opt(&stmt, &[&id.as_str()]).await?;
        row.as_ref().map(upload_record).transpose()
    }

    async fn advance_upload(&self, u: &UploadRecord, expected_offset: u64, expected_parts: usize) -> Result<bool> {
        // A racing writer blocks on this row's lock, then re-checks the WHERE on the row the
        // winner left, and updates nothing.
        let (sealing, sealing_kek) = sealing_columns(u);
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE uploads SET byte_offset = $2, hash_state = $3, parts = $4, updated_at = $5, sealing = $8, \
                 sealing_kek = $9 WHERE id = $1 AND byte_offset = $6 AND cardinality(parts)::bigint = $7",
            )
            .await?;
        let n = client
            .execute(
                &stmt,
                &[
                    &u.id.as_str(),
                    &db_size(u.offset),
                    &u.hash_state,
                    &u.parts,
                    &u.updated_at,
                    &db_size(expected_offset),
                    &i64::try_from(expected_parts).unwrap_or(i64::MAX),
                    &sealing,
                    &sealing_kek,
                ],
            )
            .await?;
        Ok(n > 0)
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<bool> {
        let n = self.client().await?.execute("DELETE FROM uploads WHERE id = $1", &[&id.as_str()]).await?;
        Ok(n > 0)
    }

    async fn stale_uploads(&self, updated_before: i64) -> Result<Vec<UploadRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE updated_at < $1 ORDER BY id COLLATE \"C\""
            ))
            .await?;
        client.query(&stmt, &[&updated_before]).await?.iter().map(upload_record).collect()
    }

    async fn repo_blob_entry(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobEntry>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT b.size, r.key_name, c.key_name IS NOT NULL, {COPY_COLUMNS}, rb.gc_mark IS NOT NULL \
                 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
                 JOIN blobs b ON b.digest = rb.digest \
                 LEFT JOIN blob_copies c ON c.digest = rb.digest AND c.key_name = r.key_name \
                 WHERE r.name = $1 AND rb.digest = $2"
            ))
            .await?;
        let row = client.query_opt(&stmt, &[&repo.as_str(), &digest.to_string()]).await?;
        row.map(|r| {
            let copy = if r.try_get(2)? { Some(copy_record(&r, 3)?) } else { None };
            Ok(BlobEntry { size: size_of(r.try_get(0)?), key_name: r.try_get(1)?, copy, marked: r.try_get(9)? })
        })
        .transpose()
    }

    async fn repository_blobs(&self, repo: &RepoName) -> Result<Vec<(Digest, u64)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT b.digest, b.size FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
                 JOIN blobs b ON b.digest = rb.digest WHERE r.name = $1 ORDER BY b.digest COLLATE \"C\"",
            )
            .await?;
        let rows = client.query(&stmt, &[&repo.as_str()]).await?;
        rows.iter().map(|r| Ok((parse_digest(r.try_get(0)?)?, size_of(r.try_get(1)?)))).collect()
    }

    async fn repository_key(&self, repo: &RepoName) -> Result<Option<Option<String>>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached("SELECT key_name FROM repositories WHERE name = $1").await?;
        let row = client.query_opt(&stmt, &[&repo.as_str()]).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn create_repository(&self, repo: &RepoName, key: Option<&str>, origin: &Origin) -> Result<Option<String>> {
        transaction!(self, |tx| {
            let mut found = None;
            for _ in 0..ATTEMPTS {
                let inserted = tx
                    .query_opt(
                        "INSERT INTO repositories (name, created_at, key_name) VALUES ($1, $2, $3) \
                         ON CONFLICT (name) DO NOTHING RETURNING key_name",
                        &[&repo.as_str(), &unix_now(), &key],
                    )
                    .await?;
                if let Some(row) = inserted {
                    emit(&tx, &[repository_created(repo, origin)]).await?;
                    found = Some(row.try_get::<_, Option<String>>(0)?);
                    break;
                }
                // Another transaction created it and committed (ON CONFLICT waited for it); this
                // new statement's snapshot sees it, unless a deletion committed meanwhile.
                let existing =
                    tx.query_opt("SELECT key_name FROM repositories WHERE name = $1", &[&repo.as_str()]).await?;
                if let Some(row) = existing {
                    found = Some(row.try_get(0)?);
                    break;
                }
            }
            found.ok_or(Error::Conflict)?
        })
    }

    async fn delete_repository(&self, repo: &RepoName, force: bool, origin: &Origin) -> Result<RepositoryDeleted> {
        let name = repo.as_str();
        transaction!(self, |tx| {
            // Locked for deletion first: a push holding the row's share lock (`ensure_repo`)
            // commits before this goes on, and what it wrote is deleted below (new statements,
            // new snapshots); a push that comes later waits, then finds the row gone and
            // creates the repository anew.
            let locked = tx.query_opt("SELECT id FROM repositories WHERE name = $1 FOR UPDATE", &[&name]).await?;
            match locked {
                None => RepositoryDeleted::NotFound,
                Some(row) => {
                    let id: i64 = row.try_get(0)?;
                    let manifests: i64 = tx
                        .query_one("SELECT count(*) FROM manifests WHERE repository_id = $1", &[&id])
                        .await?
                        .try_get(0)?;
                    if manifests > 0 && !force {
                        RepositoryDeleted::NotEmpty { manifests: size_of(manifests) }
                    } else {
                        tx.execute("DELETE FROM tags WHERE repository_id = $1", &[&id]).await?;
                        // References go with their manifests (ON DELETE CASCADE).
                        tx.execute("DELETE FROM manifests WHERE repository_id = $1", &[&id]).await?;
                        // The blobs themselves stay: collecting them is the garbage collector's job.
                        tx.execute("DELETE FROM repository_blobs WHERE repository_id = $1", &[&id]).await?;
                        tx.execute("DELETE FROM uploads WHERE repository = $1", &[&name]).await?;
                        tx.execute("DELETE FROM repository_tags WHERE repository = $1", &[&name]).await?;
                        tx.execute("DELETE FROM policies WHERE target_kind = 'repository' AND target = $1", &[&name])
                            .await?;
                        tx.execute("DELETE FROM repositories WHERE id = $1", &[&id]).await?;
                        emit(&tx, &[Event::new(EventKind::RepositoryDelete, name, origin)]).await?;
                        RepositoryDeleted::Deleted
                    }
                }
            }
        })
    }

    async fn set_repository_key(&self, repo: &RepoName, key: &str) -> Result<bool> {
        // A racing setter waits for this row's lock, re-checks `key_name IS NULL`, and loses.
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE repositories SET key_name = $2 WHERE name = $1 AND key_name IS NULL",
                &[&repo.as_str(), &key],
            )
            .await?;
        Ok(n > 0)
    }

    async fn repository_keys(&self) -> Result<Vec<(RepoName, Option<String>)>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached("SELECT name, key_name FROM repositories ORDER BY name COLLATE \"C\"").await?;
        let rows = client.query(&stmt, &[]).await?;
        rows.iter()
            .map(|r| {
                let name: &str = r.try_get(0)?;
                let repo = name.parse().map_err(|e| Error::Corrupt(format!("repository {name}: {e}")))?;
                Ok((repo, r.try_get(1)?))
            })
            .collect()
    }

    async fn blob_copy(&self, digest: &Digest, key_name: &str) -> Result<Option<SealedBlob>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {COPY_COLUMNS} FROM blob_copies c JOIN blobs b ON b.digest = c.digest \
                 WHERE c.digest = $1 AND c.key_name = $2"
            ))
            .await?;
        let row = client.query_opt(&stmt, &[&digest.to_string(), &key_name]).await?;
        row.map(|r| copy_record(&r, 0)).transpose()
    }

    async fn add_blob_copy(&self, digest: &Digest, copy: &SealedBlob) -> Result<bool> {
        let digest = digest.to_string();
        let runs = Run::encode(&copy.runs);
        transaction!(self, |tx| {
            let now = unix_now();
            // A blob first known through its copy has no plaintext object.
            tx.execute(
                "INSERT INTO blobs (digest, size, created_at, plain) VALUES ($1, $2, $3, false) \
                 ON CONFLICT (digest) DO NOTHING",
                &[&digest, &db_size(copy.size), &now],
            )
            .await?;
            // Of racing writers of the same copy, the first to commit records it; the others
            // wait for it here and insert nothing.
            let n = tx
                .execute(
                    "INSERT INTO blob_copies (digest, key_name, object, kek, wrapped, runs, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (digest, key_name) DO NOTHING",
                    &[&digest, &copy.key_name, &copy.object, &copy.kek, &copy.wrapped, &runs, &now],
                )
                .await?;
            n > 0
        })
    }

    async fn copies_wrapped_by(&self, kek: &str, limit: usize) -> Result<Vec<(Digest, SealedBlob)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT c.digest, {COPY_COLUMNS} FROM blob_copies c JOIN blobs b ON b.digest = c.digest \
                 WHERE c.kek = $1 ORDER BY c.digest COLLATE \"C\", c.key_name COLLATE \"C\" LIMIT $2"
            ))
            .await?;
        let rows = client.query(&stmt, &[&kek, &db_count(limit)]).await?;
        rows.iter().map(|r| Ok((parse_digest(r.try_get(0)?)?, copy_record(r, 1)?))).collect()
    }

    async fn rewrap_copy(
        &self,
        digest: &Digest,
        key_name: &str,
        old_kek: &str,
        new_kek: &str,
        wrapped: &[u8],
    ) -> Result<bool> {
        // A racing rewrap waits for this row's lock, re-checks `kek = old`, and loses.
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE blob_copies SET kek = $4, wrapped = $5 WHERE digest = $1 AND key_name = $2 AND kek = $3",
                &[&digest.to_string(), &key_name, &old_kek, &new_kek, &wrapped],
            )
            .await?;
        Ok(n > 0)
    }

    async fn redundant_plaintext(&self, limit: usize) -> Result<Vec<Digest>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&format!("SELECT b.digest FROM blobs b WHERE {REDUNDANT} LIMIT $1")).await?;
        let rows = client.query(&stmt, &[&db_count(limit)]).await?;
        rows.iter().map(|r| parse_digest(r.try_get(0)?)).collect()
    }

    async fn drop_plaintext(&self, digest: &Digest) -> Result<bool> {
        let digest = digest.to_string();
        transaction!(self, |tx| {
            // First the blob's row lock, which a `link_blob` of this digest holds until it
            // commits; then the check, in a new statement whose snapshot sees that link.
            let locked =
                tx.query_opt("SELECT plain FROM blobs WHERE digest = $1 FOR NO KEY UPDATE", &[&digest]).await?;
            match locked {
                Some(row) if row.try_get::<_, bool>(0)? => {
                    let n = tx
                        .execute(
                            &format!("UPDATE blobs b SET plain = false WHERE b.digest = $1 AND {REDUNDANT}"),
                            &[&digest],
                        )
                        .await?;
                    n > 0
                }
                _ => false,
            }
        })
    }

    async fn keys(&self, counts: bool) -> Result<Vec<KeyRecord>> {
        let client = self.client().await?;
        let counted = if counts {
            "(SELECT COUNT(*) FROM blob_copies c WHERE c.kek = k.id), \
             (SELECT COUNT(*) FROM uploads u WHERE u.sealing_kek = k.id)"
        } else {
            "0::bigint, 0::bigint"
        };
        let stmt = client
            .prepare_cached(&format!(
                "SELECT k.id, k.name, k.state, k.check_value, k.created_at, {counted} \
                 FROM keys k ORDER BY k.name COLLATE \"C\", k.created_at, k.id COLLATE \"C\""
            ))
            .await?;
        let rows = client.query(&stmt, &[]).await?;
        rows.iter()
            .map(|r| {
                Ok(KeyRecord {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    state: KeyState::parse(r.try_get(2)?)?,
                    check_value: r.try_get(3)?,
                    created_at: r.try_get(4)?,
                    blobs: size_of(r.try_get(5)?),
                    uploads: size_of(r.try_get(6)?),
                })
            })
            .collect()
    }

    async fn add_key(&self, key: &KeyRecord) -> Result<bool> {
        // Only an existing id is a conflict; a second active key of a name (the
        // keys_one_active index) is an error.
        let n = self
            .client()
            .await?
            .execute(
                "INSERT INTO keys (id, name, state, check_value, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (id) DO NOTHING",
                &[&key.id, &key.name, &key.state.as_str(), &key.check_value, &key.created_at],
            )
            .await?;
        Ok(n > 0)
    }

    async fn activate_key(&self, id: &str) -> Result<()> {
        transaction!(self, |tx| {
            // Every key of the name, locked in one order: a concurrent activation of the name
            // waits here, then (new statements, new snapshots) sees this one's result.
            let locked = tx
                .query(
                    "SELECT id FROM keys WHERE name = (SELECT name FROM keys WHERE id = $1) \
                     ORDER BY id COLLATE \"C\" FOR NO KEY UPDATE",
                    &[&id],
                )
                .await?;
            if locked.is_empty() {
                return Err(Error::NotFound);
            }
            let now = unix_now();
            // Two statements: a unique index is checked row by row, so the old active key must
            // be inactive before the new one becomes active.
            tx.execute(
                "UPDATE keys SET state = 'inactive', updated_at = $2 \
                 WHERE name = (SELECT name FROM keys WHERE id = $1) AND state = 'active' AND id <> $1",
                &[&id, &now],
            )
            .await?;
            tx.execute("UPDATE keys SET state = 'active', updated_at = $2 WHERE id = $1", &[&id, &now]).await?;
        })
    }

    async fn retire_key(&self, id: &str) -> Result<Result<(), RetireRefused>> {
        transaction!(self, |tx| {
            // Locked: an activation of this key waits for this retirement, or this one for it.
            let state = tx.query_opt("SELECT state FROM keys WHERE id = $1 FOR NO KEY UPDATE", &[&id]).await?;
            match state {
                None => Err(RetireRefused::Unknown(id.to_owned())),
                Some(row) if KeyState::parse(row.try_get(0)?)? == KeyState::Active => {
                    Err(RetireRefused::Active(id.to_owned()))
                }
                Some(_) => {
                    let counts = tx
                        .query_one(
                            "SELECT (SELECT COUNT(*) FROM blob_copies WHERE kek = $1), \
                             (SELECT COUNT(*) FROM uploads WHERE sealing_kek = $1)",
                            &[&id],
                        )
                        .await?;
                    let (blobs, uploads): (i64, i64) = (counts.try_get(0)?, counts.try_get(1)?);
                    if blobs + uploads > 0 {
                        Err(RetireRefused::InUse {
                            id: id.to_owned(),
                            blobs: size_of(blobs),
                            uploads: size_of(uploads),
                        })
                    } else {
                        tx.execute(
                            "UPDATE keys SET state = 'retired', updated_at = $2 WHERE id = $1",
                            &[&id, &unix_now()],
                        )
                        .await?;
                        Ok(())
                    }
                }
            }
        })
    }

    async fn create_user(&self, user: &UserRecord) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING"
                ),
                &[&user.name, &user.password_hash, &user.disabled, &user.created_at, &user.id, &user.generation],
            )
            .await?;
        Ok(n > 0)
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1")).await?;
        client.query_opt(&stmt, &[&name]).await?.as_ref().map(user_record).transpose()
    }

    async fn users(&self) -> Result<Vec<UserRecord>> {
        let client = self.client().await?;
        let stmt =
            client.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name COLLATE \"C\"")).await?;
        client.query(&stmt, &[]).await?.iter().map(user_record).collect()
    }

    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool> {
        // Disabling moves the generation on, so tokens issued before stay refused after the
        // user is enabled again.
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE users SET disabled = $2, \
                 credential_generation = credential_generation + (CASE WHEN $2 THEN 1 ELSE 0 END) WHERE name = $1",
                &[&name, &disabled],
            )
            .await?;
        Ok(n > 0)
    }

    async fn set_user_password(&self, name: &str, password_hash: Option<&str>) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE users SET password_hash = $2, credential_generation = credential_generation + 1 WHERE name = $1",
                &[&name, &password_hash],
            )
            .await?;
        Ok(n > 0)
    }

    async fn delete_user(&self, name: &str) -> Result<bool> {
        transaction!(self, |tx| {
            // Locked for deletion first: a `create_access_key` or `put_policy` for this user
            // that holds its share lock commits before this goes on; one that comes later
            // waits, then finds the user gone.
            let locked = tx.query_opt("SELECT 1 FROM users WHERE name = $1 FOR UPDATE", &[&name]).await?;
            if locked.is_some() {
                // The keys' rows are locked by their deletion, after any `put_policy` on them
                // commits; the policies are deleted in a later statement, which sees its policy.
                let keys: Vec<String> = tx
                    .query("DELETE FROM access_keys WHERE user_name = $1 RETURNING id", &[&name])
                    .await?
                    .iter()
                    .map(|r| r.try_get(0))
                    .collect::<Result<_, _>>()?;
                tx.execute(
                    "DELETE FROM policies WHERE (target_kind = 'user' AND target = $1) \
                     OR (target_kind = 'access_key' AND target = ANY($2))",
                    &[&name, &keys],
                )
                .await?;
                tx.execute("DELETE FROM users WHERE name = $1", &[&name]).await?;
            }
            locked.is_some()
        })
    }

    async fn create_access_key(&self, key: &AccessKeyRecord) -> Result<bool> {
        transaction!(self, |tx| {
            // Shared-locked until commit: a `delete_user` waits for this key, then deletes it.
            let user = tx.query_opt("SELECT 1 FROM users WHERE name = $1 FOR KEY SHARE", &[&key.user]).await?;
            if user.is_none() {
                false
            } else {
                let n = tx
                    .execute(
                        &format!(
                            "INSERT INTO access_keys ({ACCESS_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (id) DO NOTHING"
                        ),
                        &[&key.id, &key.user, &key.secret_digest, &key.disabled, &key.created_at],
                    )
                    .await?;
                n > 0
            }
        })
    }

    async fn access_key(&self, id: &str) -> Result<Option<AccessKeyRecord>> {
        let client = self.client().await?;
        let stmt =
            client.prepare_cached(&format!("SELECT {ACCESS_KEY_COLUMNS} FROM access_keys WHERE id = $1")).await?;
        client.query_opt(&stmt, &[&id]).await?.as_ref().map(access_key_record).transpose()
    }

    async fn access_keys(&self, user: Option<&str>) -> Result<Vec<AccessKeyRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {ACCESS_KEY_COLUMNS} FROM access_keys WHERE $1::text IS NULL OR user_name = $1 \
                 ORDER BY user_name COLLATE \"C\", id COLLATE \"C\""
            ))
            .await?;
        client.query(&stmt, &[&user]).await?.iter().map(access_key_record).collect()
    }

    async fn set_access_key_disabled(&self, id: &str, disabled: bool) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute("UPDATE access_keys SET disabled = $2 WHERE id = $1", &[&id, &disabled])
            .await?;
        Ok(n > 0)
    }

    async fn delete_access_key(&self, id: &str) -> Result<bool> {
        transaction!(self, |tx| {
            // The row's deletion waits for a `put_policy` holding its share lock; the policies'
            // deletion, a later statement, then sees that policy.
            let deleted = tx.execute("DELETE FROM access_keys WHERE id = $1", &[&id]).await?;
            if deleted > 0 {
                tx.execute("DELETE FROM policies WHERE target_kind = 'access_key' AND target = $1", &[&id]).await?;
            }
            deleted > 0
        })
    }

    async fn put_policy(&self, target: &PolicyTarget, name: &str, document: &str) -> Result<bool> {
        let owner = match target {
            PolicyTarget::User(user) => Some(("SELECT 1 FROM users WHERE name = $1 FOR KEY SHARE", user)),
            PolicyTarget::AccessKey(id) => Some(("SELECT 1 FROM access_keys WHERE id = $1 FOR KEY SHARE", id)),
            PolicyTarget::Repository(_) | PolicyTarget::Registry => None,
        };
        transaction!(self, |tx| {
            // The owner stays locked until commit: its deletion waits, then deletes this policy.
            let owned = match owner {
                Some((sql, key)) => tx.query_opt(sql, &[key]).await?.is_some(),
                None => true,
            };
            if owned {
                tx.execute(
                    &format!(
                        "INSERT INTO policies ({POLICY_COLUMNS}) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (target_kind, target, name) DO UPDATE SET document = excluded.document, \
                         updated_at = excluded.updated_at"
                    ),
                    &[&target.kind(), &target.column(), &name, &document, &unix_now()],
                )
                .await?;
            }
            owned
        })
    }

    async fn delete_policy(&self, target: &PolicyTarget, name: &str) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM policies WHERE target_kind = $1 AND target = $2 AND name = $3",
                &[&target.kind(), &target.column(), &name],
            )
            .await?;
        Ok(n > 0)
    }

    async fn policies(&self, target: &PolicyTarget) -> Result<Vec<PolicyRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {POLICY_COLUMNS} FROM policies WHERE target_kind = $1 AND target = $2 \
                 ORDER BY name COLLATE \"C\""
            ))
            .await?;
        client.query(&stmt, &[&target.kind(), &target.column()]).await?.iter().map(policy_record).collect()
    }

    async fn policies_for_request(
        &self,
        user: Option<&str>,
        access_key: Option<&str>,
        repo: Option<&RepoName>,
    ) -> Result<PolicySet> {
        // One statement: one round trip and one snapshot.
        let client = self.client().await?;
        let stmt = client.prepare_cached(POLICIES_FOR_REQUEST).await?;
        let rows = client.query(&stmt, &[&user, &access_key, &repo.map(RepoName::as_str)]).await?;
        let mut set = PolicySet::default();
        for row in &rows {
            if row.try_get::<_, &str>(0)? == "tag" {
                set.resource_tags.insert(row.try_get(1)?, row.try_get(2)?);
                continue;
            }
            set.add(policy_record(row)?);
        }
        set.sort();
        Ok(set)
    }

    async fn repository_tags(&self, repo: &RepoName) -> Result<BTreeMap<String, String>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached("SELECT key, value FROM repository_tags WHERE repository = $1").await?;
        let rows = client.query(&stmt, &[&repo.as_str()]).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    async fn tag_repository(&self, repo: &RepoName, set: &BTreeMap<String, String>, remove: &[String]) -> Result<()> {
        // Keys in sorted order (a BTreeMap's), so two edits of the same keys lock them in the
        // same order.
        let keys: Vec<&str> = set.keys().map(String::as_str).collect();
        let values: Vec<&str> = set.values().map(String::as_str).collect();
        transaction!(self, |tx| {
            if !keys.is_empty() {
                tx.execute(
                    "INSERT INTO repository_tags (repository, key, value) \
                     SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS t (k, v) \
                     ON CONFLICT (repository, key) DO UPDATE SET value = excluded.value",
                    &[&repo.as_str(), &keys, &values],
                )
                .await?;
            }
            if !remove.is_empty() {
                tx.execute(
                    "DELETE FROM repository_tags WHERE repository = $1 AND key = ANY($2)",
                    &[&repo.as_str(), &remove],
                )
                .await?;
            }
        })
    }

    async fn ensure_signing_key(&self, candidate: &SigningKeyRecord) -> Result<Vec<SigningKeyRecord>> {
        transaction!(self, |tx| {
            // Writers queue here; each later statement's snapshot sees what the one before
            // committed, so only the first inserts.
            tx.batch_execute("LOCK TABLE signing_keys IN EXCLUSIVE MODE").await?;
            tx.execute(
                "INSERT INTO signing_keys (kid, pkcs8, created_at) SELECT $1, $2, $3 \
                 WHERE NOT EXISTS (SELECT 1 FROM signing_keys)",
                &[&candidate.kid, &candidate.pkcs8, &candidate.created_at],
            )
            .await?;
            tx.query("SELECT kid, pkcs8, created_at FROM signing_keys ORDER BY created_at, kid COLLATE \"C\"", &[])
                .await?
                .iter()
                .map(|r| Ok(SigningKeyRecord { kid: r.try_get(0)?, pkcs8: r.try_get(1)?, created_at: r.try_get(2)? }))
                .collect::<Result<Vec<_>>>()?
        })
    }

    async fn reseal_signing_key(&self, kid: &str, expected: &[u8], sealed: &[u8]) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute("UPDATE signing_keys SET pkcs8 = $3 WHERE kid = $1 AND pkcs8 = $2", &[&kid, &expected, &sealed])
            .await?;
        Ok(n == 1)
    }

    async fn put_subscription(&self, s: &Subscription) -> Result<bool> {
        transaction!(self, |tx| upsert_subscription(&tx, s, s.source, false).await?.unwrap_or_default())
    }

    async fn delete_subscription(&self, name: &str) -> Result<bool> {
        // Deliveries and their attempts go with it (ON DELETE CASCADE), after any transaction
        // that is fanning an event out to it commits (it holds the row's share lock).
        let n = self.client().await?.execute("DELETE FROM subscriptions WHERE name = $1", &[&name]).await?;
        Ok(n > 0)
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        read_subscriptions(&self.client().await?, "").await
    }

    async fn sync_config_subscriptions(&self, subs: &[Subscription]) -> Result<()> {
        // By name (the last of a name wins), so replicas syncing at once lock rows in one order.
        let by_name: BTreeMap<&str, &Subscription> = subs.iter().map(|s| (s.name.as_str(), s)).collect();
        let names: Vec<&str> = by_name.keys().copied().collect();
        transaction!(self, |tx| {
            for s in by_name.values() {
                if upsert_subscription(&tx, s, SubscriptionSource::Config, true).await?.is_none() {
                    // Dropping the transaction rolls back what this loop wrote so far.
                    return Err(Error::Conflict);
                }
            }
            tx.execute("DELETE FROM subscriptions WHERE source = 'config' AND NOT (name = ANY($1))", &[&names]).await?;
        })
    }

    async fn events(&self, after_seq: i64, limit: usize) -> Result<Vec<Event>> {
        // Exclusively: every transaction that took a `seq` has ended when this holds it, and
        // none takes one until it is released, so nothing commits later behind what this reads.
        let rows = transaction!(self, |tx| {
            tx.query("SELECT pg_advisory_xact_lock($1)", &[&FEED_LOCK]).await?;
            let stmt =
                tx.prepare_cached("SELECT seq, payload FROM events WHERE seq > $1 ORDER BY seq LIMIT $2").await?;
            tx.query(&stmt, &[&after_seq, &db_count(limit)]).await?
        })?;
        rows.iter().map(|r| event_from_payload(r.try_get(0)?, r.try_get(1)?)).collect()
    }

    async fn claim_deliveries(&self, owner: &str, now_ms: i64, lease_ms: i64, limit: usize) -> Result<Vec<Claimed>> {
        let until = now_ms.saturating_add(lease_ms);
        transaction!(self, |tx| {
            // Candidates, locked; rows another claimer holds are skipped rather than waited for.
            let candidates: Vec<i64> = tx
                .query(
                    &format!(
                        "SELECT d.id FROM deliveries d WHERE {CLAIMABLE} ORDER BY d.event_seq, d.id LIMIT $2 \
                         FOR UPDATE OF d SKIP LOCKED"
                    ),
                    &[&now_ms, &db_count(limit)],
                )
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            if candidates.is_empty() {
                Vec::new()
            } else {
                // Checked again in a new statement, whose snapshot sees what committed while the
                // candidates were being found (another owner's lease, a finished head): only
                // what is still claimable is leased.
                let leased: Vec<i64> = tx
                    .query(
                        &format!(
                            "UPDATE deliveries d SET lease_owner = $3, lease_until_ms = $4 \
                             WHERE d.id = ANY($2) AND {CLAIMABLE} RETURNING d.id"
                        ),
                        &[&now_ms, &candidates, &owner, &until],
                    )
                    .await?
                    .iter()
                    .map(|r| r.try_get(0))
                    .collect::<Result<_, _>>()?;
                let rows = tx
                    .query(
                        &format!(
                            "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq \
                             WHERE d.id = ANY($1) ORDER BY d.event_seq, d.id"
                        ),
                        &[&leased],
                    )
                    .await?;
                let subscriptions: BTreeMap<String, Subscription> =
                    read_subscriptions(&tx, "").await?.into_iter().map(|s| (s.name.clone(), s)).collect();
                let mut claimed = Vec::with_capacity(rows.len());
                for row in &rows {
                    let delivery = delivery_columns(row)?.into_delivery()?;
                    let subscription = subscriptions.get(&delivery.subscription).cloned().ok_or_else(|| {
                        Error::Corrupt(format!("delivery {}: no subscription {}", delivery.id, delivery.subscription))
                    })?;
                    claimed.push(Claimed { delivery, subscription });
                }
                claimed
            }
        })
    }

    async fn finish_deliveries(&self, owner: &str, finished: &[(i64, Outcome)], now_ms: i64) -> Result<Vec<bool>> {
        // In id order, so that two batches never lock the same rows in opposite orders.
        let mut order: Vec<usize> = (0..finished.len()).collect();
        order.sort_by_key(|&i| finished[i].0);
        transaction!(self, |tx| {
            let held_stmt = tx
                .prepare_cached(
                    "SELECT 1 FROM deliveries WHERE id = $1 AND lease_owner = $2 AND state = 'pending' FOR UPDATE",
                )
                .await?;
            let log = tx
                .prepare_cached(
                    "INSERT INTO delivery_attempts (delivery, number, at_ms, status, error, duration_ms) \
                     SELECT $1, COALESCE(MAX(number), 0) + 1, $2, $3, $4, $5 FROM delivery_attempts \
                     WHERE delivery = $1",
                )
                .await?;
            let apply = tx
                .prepare_cached(
                    "UPDATE deliveries SET attempts = attempts + 1, state = $2, \
                     next_attempt_ms = COALESCE($3, next_attempt_ms), last_status = $4, last_error = $5, \
                     lease_owner = NULL, lease_until_ms = NULL, updated_ms = $6 WHERE id = $1",
                )
                .await?;
            let mut held = vec![false; finished.len()];
            for &i in &order {
                let (id, outcome) = &finished[i];
                // Locked: a claim by another owner after the lease ran out, a replay or a purge
                // either committed before (and this finds the lease gone) or waits for this.
                if tx.query_opt(&held_stmt, &[id, &owner]).await?.is_none() {
                    continue;
                }
                let o = OutcomeColumns::of(outcome);
                // Numbered after the log's last entry: a replay resets `attempts`, not the log.
                tx.execute(&log, &[id, &now_ms, &o.status, &o.error, &o.duration_ms]).await?;
                tx.execute(&apply, &[id, &o.state.as_str(), &o.next_attempt_ms, &o.status, &o.error, &now_ms]).await?;
                held[i] = true;
            }
            held
        })
    }

    async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>> {
        let p = filter_params(filter);
        let limit = (filter.limit > 0).then(|| db_count(filter.limit));
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq \
                 WHERE {DELIVERY_FILTER} ORDER BY d.id DESC LIMIT $6"
            ))
            .await?;
        let rows = client.query(&stmt, &[&p.0, &p.1, &p.2, &p.3, &p.4, &limit]).await?;
        rows.iter().map(|r| delivery_columns(r)?.into_delivery()).collect()
    }

    async fn delivery_attempts(&self, id: i64) -> Result<Vec<Attempt>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT delivery, number, at_ms, status, error, duration_ms FROM delivery_attempts \
                 WHERE delivery = $1 ORDER BY number",
            )
            .await?;
        let rows = client.query(&stmt, &[&id]).await?;
        rows.iter()
            .map(|r| {
                Ok(attempt_from_columns(
                    r.try_get(0)?,
                    i64::from(r.try_get::<_, i32>(1)?),
                    r.try_get(2)?,
                    r.try_get::<_, Option<i32>>(3)?.map(i64::from),
                    r.try_get(4)?,
                    r.try_get(5)?,
                ))
            })
            .collect()
    }

    async fn replay_deliveries(&self, filter: &DeliveryFilter, now_ms: i64) -> Result<u64> {
        let p = filter_params(filter);
        let n = self
            .client()
            .await?
            .execute(
                &format!(
                    "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_ms = $6, \
                     lease_owner = NULL, lease_until_ms = NULL, updated_ms = $6 WHERE id IN \
                     (SELECT d.id FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE {DELIVERY_FILTER} \
                     AND NOT (d.state = 'pending' AND d.lease_owner IS NOT NULL AND d.lease_until_ms > $6))"
                ),
                &[&p.0, &p.1, &p.2, &p.3, &p.4, &now_ms],
            )
            .await?;
        Ok(n)
    }

    async fn purge_deliveries(&self, filter: &DeliveryFilter) -> Result<u64> {
        let p = filter_params(filter);
        // Attempts go with their deliveries (ON DELETE CASCADE).
        let n = self
            .client()
            .await?
            .execute(
                &format!(
                    "DELETE FROM deliveries WHERE id IN \
                     (SELECT d.id FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE {DELIVERY_FILTER})"
                ),
                &[&p.0, &p.1, &p.2, &p.3, &p.4],
            )
            .await?;
        Ok(n)
    }

    async fn delivery_counts(&self) -> Result<Vec<DeliveryCounts>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT s.name, \
                 count(d.id) FILTER (WHERE d.state = 'pending' AND d.attempts = 0), \
                 count(d.id) FILTER (WHERE d.state = 'pending' AND d.attempts > 0), \
                 count(d.id) FILTER (WHERE d.state = 'delivered'), count(d.id) FILTER (WHERE d.state = 'dead') \
                 FROM subscriptions s LEFT JOIN deliveries d ON d.subscription = s.name \
                 GROUP BY s.name ORDER BY s.name COLLATE \"C\"",
            )
            .await?;
        let rows = client.query(&stmt, &[]).await?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryCounts {
                    subscription: r.try_get(0)?,
                    pending: size_of(r.try_get(1)?),
                    retrying: size_of(r.try_get(2)?),
                    delivered: size_of(r.try_get(3)?),
                    dead: size_of(r.try_get(4)?),
                })
            })
            .collect()
    }

    async fn prune_events(&self, delivered_before_ms: i64, dead_before_ms: i64) -> Result<(u64, u64)> {
        transaction!(self, |tx| {
            let deliveries = tx
                .execute(
                    "DELETE FROM deliveries WHERE (state = 'delivered' AND updated_ms < $1) \
                     OR (state = 'dead' AND updated_ms < $2)",
                    &[&delivered_before_ms, &dead_before_ms],
                )
                .await?;
            // An event's deliveries are written with it, so one that no delivery references
            // now never will be.
            let events = tx
                .execute(
                    "DELETE FROM events e WHERE e.created_ms < $1 \
                     AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq)",
                    &[&delivered_before_ms],
                )
                .await?;
            (deliveries, events)
        })
    }
}
