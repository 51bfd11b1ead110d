//! The online garbage collector: [`Registry::collect`] runs while the registry serves.
//!
//! A run, holding the collector's lease (one at a time across replicas):
//! - (0) `dooms`: finishes what a run that died left doomed (its objects, then its rows);
//! - (a) `links`: marks the blob links no manifest of their repository references, created
//!   and seen before `now - gc.grace`; waits two flushes of the links seen
//!   ([`seen::FLUSH_INTERVAL`]); removes those still marked, still unseen, still unreferenced;
//! - (b) `blobs`: dooms the blobs no repository links (and no writer holds), deletes their
//!   objects (plaintext and every sealed copy) in batches, forgets their rows;
//! - (c) `copies`: the same for sealed copies for a key no repository linking the blob uses;
//! - (d) `unknown objects`: objects under `blobs/` and `sealed/` older than the grace that
//!   the metadata does not know (crash leftovers; plaintext ones doomed like (b));
//! - (e) `uploads`: stale upload sessions and orphaned upload data.
//!
//! `repository` limits (a) to one repository and (b), (c) to the digests it released, and
//! skips (d) and (e). A dry run counts what (0) to (e) would take and changes nothing.
//! Why this never deletes what a manifest or a client relies on: ARCHITECTURE.md, invariant 22.

pub mod hold;
pub mod seen;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use berth_oci::{Digest, RepoName};
use berth_storage::layout;
use berth_storage::metadata::events::unix_now_ms;
use berth_storage::metadata::{Doomed, Event, EventKind, GcCounts, GcRun, GcState, Origin, unix_now};
use futures::StreamExt;

use super::Registry;
use crate::error::{ApiError, ApiResult};

/// The shortest grace period configuration accepts: longer than any request may take, so a
/// blob acknowledged to a client is never collected before the client's manifest arrives.
pub const MIN_GRACE: Duration = Duration::from_secs(10 * 60);
/// The default `gc.grace`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);
/// Between marking links and removing them: two flushes of the links seen, and a margin.
pub const DEFAULT_MARK_WAIT: Duration = Duration::from_secs(12);

/// How long the lease lasts unless renewed, and how often the run renews it.
const LEASE_TTL: Duration = Duration::from_secs(60);
const LEASE_RENEW: Duration = Duration::from_secs(15);
/// Rows per metadata batch, and objects per delete batch (S3 `DeleteObjects` takes 1,000).
const BATCH: usize = 1000;
/// Links marked per statement.
const MARK_BATCH: usize = 10_000;
/// Runs `GET /api/v1/gc` and `berth gc status` show.
pub const RECENT_RUNS: usize = 20;

/// What a run should do.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcOptions {
    /// Count what each phase would take; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Only this repository's unreferenced links, and the blobs they released.
    #[serde(default)]
    pub repository: Option<RepoName>,
}

/// The collector's settings (from `gc.*`; tests may go below the minimum grace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcSettings {
    /// Links created or seen within this long are not collected.
    pub grace: Duration,
    /// Between marking links and removing them.
    pub mark_wait: Duration,
}

impl Default for GcSettings {
    fn default() -> Self {
        GcSettings { grace: DEFAULT_GRACE, mark_wait: DEFAULT_MARK_WAIT }
    }
}

/// A run in progress: its record, and whether the lease was lost.
struct Run<'a> {
    reg: &'a Registry,
    record: GcRun,
    options: &'a GcOptions,
    /// Unix seconds: links created or seen at or after this are young.
    cutoff: i64,
    lost: Arc<AtomicBool>,
}

impl Registry {
    /// Runs the collector once, now, if no other collector holds the lease
    /// ([`ApiError::Conflict`] otherwise). Returns the run's record, also kept for `berth
    /// gc status`; a completed run (not a dry one) writes a `gc.completed` event.
    pub async fn collect(&self, options: &GcOptions) -> ApiResult<GcRun> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let owner = format!("{}/{}", crate::events::host_name(), id);
        let started = Instant::now();
        let now = unix_now_ms();
        if let Err(held) = self.meta.acquire_gc_lease(&owner, now, lease_ms()).await? {
            return Err(ApiError::Conflict(format!(
                "another garbage collection is running (lease held by {} until {}); wait for it to end, then run again",
                held.owner,
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(held.expires_ms).unwrap_or_default())
                )
            )));
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renewal = spawn_renewal(self.meta.clone(), owner.clone(), lost.clone());
        let record = GcRun {
            id,
            started_ms: now,
            finished_ms: None,
            state: GcState::Running,
            dry_run: options.dry_run,
            repository: options.repository.as_ref().map(|r| r.to_string()),
            phase: "dooms".into(),
            counts: GcCounts::default(),
            duration_ms: 0,
            error: None,
        };
        let cutoff = unix_now() - i64::try_from(self.settings.gc.grace.as_secs()).unwrap_or(i64::MAX);
        let mut run = Run { reg: self, record, options, cutoff, lost };
        tracing::info!(gc.run = %run.record.id, gc.dry_run = options.dry_run, repo.name = ?run.record.repository,
            gc.grace = %humantime::format_duration(self.settings.gc.grace), "garbage collection started");
        let outcome = match self.meta.put_gc_run(&run.record).await {
            Ok(()) => run.phases().await,
            Err(e) => Err(e.into()),
        };
        renewal.abort();
        let mut record = run.record;
        record.finished_ms = Some(unix_now_ms());
        record.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let written = match &outcome {
            Ok(()) => {
                record.state = GcState::Completed;
                record.phase = "done".into();
                if record.dry_run {
                    self.meta.put_gc_run(&record).await
                } else {
                    self.meta.finish_gc_run(&record, &completed_event(&record)).await
                }
            }
            Err(e) => {
                record.state = GcState::Failed;
                record.error = Some(e.to_string());
                self.meta.put_gc_run(&record).await
            }
        };
        if let Err(e) = self.meta.release_gc_lease(&owner).await {
            tracing::warn!(error = %e, "could not release the garbage collector's lease; it expires on its own");
        }
        if record.state == GcState::Completed && !record.dry_run {
            self.events.wake();
        }
        let c = &record.counts;
        match &outcome {
            Ok(()) => tracing::info!(gc.run = %record.id, gc.dry_run = record.dry_run, gc.links = c.links,
                gc.blobs = c.blobs, gc.copies = c.copies, gc.unknown_objects = c.unknown_objects,
                gc.uploads = c.uploads, gc.bytes = c.bytes, gc.duration_ms = record.duration_ms,
                "garbage collection completed"),
            Err(e) => tracing::warn!(gc.run = %record.id, gc.phase = %record.phase, error = %e,
                "garbage collection failed; what it doomed is finished by the next run"),
        }
        written?;
        outcome.map(|()| record)
    }

    /// The most recent runs (newest first) and the lease, if held.
    pub async fn gc_status(&self) -> ApiResult<GcStatus> {
        let now = unix_now_ms();
        let lease = self.meta.gc_lease().await?.filter(|l| l.expires_ms > now);
        Ok(GcStatus { runs: self.meta.gc_runs(RECENT_RUNS).await?, lease })
    }
}

/// What `GET /api/v1/gc` and `berth gc status` show.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GcStatus {
    pub runs: Vec<GcRun>,
    /// Who is collecting now, if anyone.
    pub lease: Option<berth_storage::metadata::GcLease>,
}

fn lease_ms() -> i64 {
    i64::try_from(LEASE_TTL.as_millis()).unwrap_or(i64::MAX)
}

/// Renews the lease until aborted; sets `lost` when another owner has it.
fn spawn_renewal(
    meta: Arc<dyn berth_storage::MetadataStore>,
    owner: String,
    lost: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(LEASE_RENEW).await;
            match meta.renew_gc_lease(&owner, unix_now_ms(), lease_ms()).await {
                Ok(true) => {}
                Ok(false) => {
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "could not renew the garbage collector's lease"),
            }
        }
    })
}

/// The `gc.completed` event of a run.
fn completed_event(run: &GcRun) -> Event {
    let mut event = Event::new(EventKind::GcCompleted, run.repository.as_deref().unwrap_or(""), &Origin::default());
    event.size = Some(run.counts.bytes);
    event.gc = Some(berth_storage::metadata::events::GcSummary {
        run: run.id.clone(),
        counts: run.counts,
        duration_ms: run.duration_ms,
        repository: run.repository.clone(),
    });
    event
}

impl Run<'_> {
    async fn phases(&mut self) -> ApiResult<()> {
        if self.options.dry_run {
            self.preview().await?;
        } else {
            self.finish_dooms().await?;
            let released = self.links().await?;
            self.blobs(released.as_deref()).await?;
            self.copies(released.as_deref()).await?;
        }
        if self.options.repository.is_none() {
            self.unknown_objects().await?;
            self.uploads().await?;
        }
        Ok(())
    }

    /// Records the phase (progress for `berth gc status`) and logs it.
    async fn enter(&mut self, phase: &str) -> ApiResult<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(ApiError::Internal(
                "the garbage collector lost its lease (the metadata store was unreachable too long); run it again"
                    .into(),
            ));
        }
        self.record.phase = phase.to_owned();
        self.reg.meta.put_gc_run(&self.record).await?;
        let c = &self.record.counts;
        tracing::info!(gc.run = %self.record.id, gc.phase = phase, gc.links = c.links, gc.blobs = c.blobs,
            gc.copies = c.copies, gc.bytes = c.bytes, "garbage collection phase");
        Ok(())
    }

    /// Deletes the objects of `doomed`, then forgets their rows; counts them.
    async fn reclaim(&mut self, doomed: &[Doomed]) -> ApiResult<()> {
        if doomed.is_empty() {
            return Ok(());
        }
        if self.lost.load(Ordering::SeqCst) {
            return Err(ApiError::Internal("the garbage collector lost its lease; run it again".into()));
        }
        let mut paths = Vec::new();
        for d in doomed {
            if d.whole {
                paths.push(layout::blob(&d.digest));
            }
            paths.extend(d.copies.iter().map(|(_, object)| layout::sealed_blob(&d.digest, object)));
        }
        self.reg.blobs.delete_objects(paths).await?;
        self.reg.meta.forget_doomed(doomed).await?;
        let c = &mut self.record.counts;
        for d in doomed {
            let objects = d.copies.len() as u64 + u64::from(d.whole && d.plain);
            if d.whole {
                c.blobs += 1;
            } else {
                c.copies += d.copies.len() as u64;
            }
            c.bytes += d.size.saturating_mul(objects);
        }
        Ok(())
    }

    /// A dry run of (0) to (c): what the metadata says they would take now.
    async fn preview(&mut self) -> ApiResult<()> {
        self.enter("links").await?;
        let preview = self.reg.meta.gc_preview(self.cutoff, self.options.repository.as_ref()).await?;
        let c = &mut self.record.counts;
        c.links += preview.links;
        c.blobs += preview.blobs + preview.dooms;
        c.copies += preview.copies;
        c.bytes += preview.bytes;
        Ok(())
    }

    /// (0): what a run that died left doomed.
    async fn finish_dooms(&mut self) -> ApiResult<()> {
        loop {
            let doomed = self.reg.meta.doomed(BATCH).await?;
            if doomed.is_empty() {
                return Ok(());
            }
            tracing::info!(gc.run = %self.record.id, gc.dooms = doomed.len(), "finishing what an earlier run doomed");
            self.reclaim(&doomed).await?;
        }
    }

    /// (a): unreferenced links, marked, then removed after the wait. Returns the digests
    /// released, with `repository` (else `None`: phase (b) looks at every unlinked blob).
    async fn links(&mut self) -> ApiResult<Option<Vec<Digest>>> {
        self.enter("links").await?;
        let reg = self.reg;
        let repo = self.options.repository.as_ref();
        let mut marked = 0;
        loop {
            let n = reg.meta.mark_links(&self.record.id, self.cutoff, repo, MARK_BATCH).await?;
            marked += n;
            if n < MARK_BATCH as u64 {
                break;
            }
        }
        let mut released = Vec::new();
        if marked > 0 {
            self.enter("links: waiting").await?;
            tracing::info!(gc.run = %self.record.id, gc.marked = marked,
                gc.wait = %humantime::format_duration(reg.settings.gc.mark_wait), "links marked; waiting for reads in flight");
            tokio::time::sleep(reg.settings.gc.mark_wait).await;
            // This process's reads; other replicas flushed theirs during the wait.
            reg.seen.flush(reg.meta.as_ref()).await?;
            self.enter("links").await?;
            loop {
                let (removed, taken) = reg.meta.remove_marked_links(&self.record.id, self.cutoff, BATCH).await?;
                self.record.counts.links += removed.len() as u64;
                released.extend(removed.into_iter().map(|(d, _)| d));
                if taken < BATCH as u64 {
                    break;
                }
            }
        }
        released.sort();
        released.dedup();
        Ok(repo.map(|_| released))
    }

    /// (b): blobs no repository links.
    async fn blobs(&mut self, only: Option<&[Digest]>) -> ApiResult<()> {
        self.enter("blobs").await?;
        let reg = self.reg;
        match only {
            Some(digests) => {
                for chunk in digests.chunks(BATCH) {
                    let doomed = reg.meta.doom_blobs(&self.record.id, chunk, unix_now()).await?;
                    self.reclaim(&doomed).await?;
                }
            }
            None => {
                let mut after: Option<Digest> = None;
                loop {
                    let batch = reg.meta.unlinked_blobs(after.as_ref(), BATCH).await?;
                    let Some(last) = batch.last().cloned() else { break };
                    let doomed = reg.meta.doom_blobs(&self.record.id, &batch, unix_now()).await?;
                    self.reclaim(&doomed).await?;
                    after = Some(last);
                    if self.record.counts.blobs % 10_000 < doomed.len() as u64 {
                        self.enter("blobs").await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// (c): sealed copies for key names no repository linking the blob uses.
    async fn copies(&mut self, only: Option<&[Digest]>) -> ApiResult<()> {
        self.enter("copies").await?;
        let reg = self.reg;
        match only {
            Some(digests) => {
                for chunk in digests.chunks(BATCH) {
                    let doomed = reg.meta.doom_unused_copies(&self.record.id, Some(chunk), unix_now(), BATCH).await?;
                    self.reclaim(&doomed).await?;
                }
            }
            None => loop {
                let doomed = reg.meta.doom_unused_copies(&self.record.id, None, unix_now(), BATCH).await?;
                if doomed.is_empty() {
                    break;
                }
                self.reclaim(&doomed).await?;
            },
        }
        Ok(())
    }

    /// (d): objects under `blobs/` and `sealed/` older than the grace that no row knows.
    async fn unknown_objects(&mut self) -> ApiResult<()> {
        self.enter("unknown objects").await?;
        let reg = self.reg;
        for prefix in ["blobs", "sealed"] {
            let mut listing = reg.blobs.list_objects(prefix).chunks(BATCH);
            while let Some(chunk) = listing.next().await {
                let mut plain: Vec<(Digest, u64)> = Vec::new();
                let mut sealed: Vec<(Digest, String, u64)> = Vec::new();
                for entry in chunk {
                    let (path, size, modified) = entry?;
                    if modified >= self.cutoff {
                        continue;
                    }
                    match layout::parse_object(&path) {
                        Some((digest, None)) => plain.push((digest, size)),
                        Some((digest, Some(object))) => sealed.push((digest, object, size)),
                        None => {}
                    }
                }
                let digests: Vec<Digest> = plain.iter().map(|(d, _)| d.clone()).collect();
                let copies: Vec<(Digest, String)> = sealed.iter().map(|(d, o, _)| (d.clone(), o.clone())).collect();
                let (known, known_objects) = reg.meta.known_objects(&digests, &copies).await?;
                let unknown: Vec<(Digest, u64)> = plain.into_iter().filter(|(d, _)| !known.contains(d)).collect();
                let orphans: Vec<(Digest, String, u64)> =
                    sealed.into_iter().filter(|(_, o, _)| !known_objects.contains(o)).collect();
                if self.options.dry_run {
                    let c = &mut self.record.counts;
                    c.unknown_objects += (unknown.len() + orphans.len()) as u64;
                    c.bytes +=
                        unknown.iter().map(|(_, s)| s).sum::<u64>() + orphans.iter().map(|(_, _, s)| s).sum::<u64>();
                    continue;
                }
                if !unknown.is_empty() {
                    // Doomed like (b): a writer deduping against the object meanwhile holds it.
                    let digests: Vec<Digest> = unknown.iter().map(|(d, _)| d.clone()).collect();
                    let doomed = reg.meta.doom_blobs(&self.record.id, &digests, unix_now()).await?;
                    let doomed_digests: Vec<&Digest> = doomed.iter().map(|d| &d.digest).collect();
                    reg.blobs.delete_objects(doomed.iter().map(|d| layout::blob(&d.digest)).collect()).await?;
                    reg.meta.forget_doomed(&doomed).await?;
                    let c = &mut self.record.counts;
                    for (d, size) in &unknown {
                        if doomed_digests.contains(&d) {
                            c.unknown_objects += 1;
                            c.bytes += size;
                        }
                    }
                }
                if !orphans.is_empty() {
                    reg.blobs
                        .delete_objects(orphans.iter().map(|(d, o, _)| layout::sealed_blob(d, o)).collect())
                        .await?;
                    let c = &mut self.record.counts;
                    c.unknown_objects += orphans.len() as u64;
                    c.bytes += orphans.iter().map(|(_, _, s)| s).sum::<u64>();
                }
                for (d, o, _) in &orphans {
                    tracing::info!(blob.digest = %d, object = %o, "unknown sealed object deleted");
                }
            }
        }
        Ok(())
    }

    /// (e): stale upload sessions and orphaned upload data (the purge `berth serve` also
    /// runs every `uploads.purge_interval`).
    async fn uploads(&mut self) -> ApiResult<()> {
        self.enter("uploads").await?;
        let reg = self.reg;
        let n = if self.options.dry_run {
            let cutoff = unix_now() - i64::try_from(reg.settings.upload_max_age.as_secs()).unwrap_or(i64::MAX);
            reg.meta.stale_uploads(cutoff).await?.len()
        } else {
            reg.purge_stale_uploads().await?
        };
        self.record.counts.uploads += n as u64;
        Ok(())
    }
}
