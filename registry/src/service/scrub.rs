//! The scrub: every stored blob read back and checked against its digest, at a bounded
//! rate, and the damage reported (never repaired: what to do with a damaged blob, push it
//! again or restore it from a backup, is an operator's decision).
//!
//! What is checked is what a pull would read: for each repository, each linked blob's
//! sealed copy for the repository's key, else its plaintext object. Each object is read
//! once however many repositories link it. A plaintext object is hashed and its size
//! compared with the recorded one; a sealed copy is opened segment by segment (as a pull
//! opens it) and its plaintext hashed as well.
//!
//! Run by `berth scrub` and, every `scrub.interval`, inside `berth serve`. Each replica
//! sharing the stores scrubs on its own schedule (no lease): several replicas mean several
//! reads per interval, so set `scrub.interval = "off"` on all but one of them.
//!
//! [`IntegrityCounters`] also counts the pulls stopped because their bytes did not check.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_oci::{Digest, RepoName};
use berth_storage::ByteStream;
use berth_storage::layout;
use berth_storage::metadata::BlobEntry;
use berth_storage::verify::{IntegrityFailure, PipelinedHasher};
use futures::StreamExt;
use serde::Serialize;

use super::Registry;
use crate::error::{ApiError, ApiResult};

/// How often a running scrub logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

/// What to scrub, and how fast.
#[derive(Debug, Clone, Default)]
pub struct ScrubOptions {
    /// Only this repository's blobs (default: every repository's).
    pub repository: Option<RepoName>,
    /// Bytes per second at most; 0: as fast as the store and one core allow.
    pub rate: u64,
}

/// What a scrub found.
#[derive(Debug, Default, Serialize)]
pub struct ScrubReport {
    /// Repositories whose blobs were looked at.
    pub repositories: u64,
    /// Stored objects checked (plaintext objects and sealed copies).
    pub objects: u64,
    /// Bytes read from them.
    pub bytes: u64,
    pub seconds: f64,
    pub damaged: Vec<Damage>,
}

/// One stored object that is not what its digest says.
#[derive(Debug, Clone, Serialize)]
pub struct Damage {
    pub digest: String,
    /// The repositories (of those scrubbed) that link the blob and read this object.
    pub repositories: Vec<String>,
    /// `plaintext`, or `sealed for key <name>`.
    pub copy: String,
    /// The file on the local disk, or the object's key in the bucket.
    pub object: String,
    pub problem: Problem,
}

/// What is wrong with a stored object.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// Linked in the metadata, absent from the store.
    Missing,
    /// The object's length is not the blob's recorded size.
    Size { recorded: u64, stored: u64 },
    /// The bytes hash to another digest.
    Content { actual: String },
    /// A sealed copy does not open (a segment altered, moved, cut short, or foreign).
    Sealed { error: String },
    /// A sealed copy's data key cannot be had (its key-encryption key is missing or wrong).
    Key { error: String },
    /// The store failed to read the object (an I/O error of the disk, for example).
    Unreadable { error: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing => write!(f, "missing from the store"),
            Problem::Size { recorded, stored } => write!(f, "{stored} bytes stored, {recorded} recorded"),
            Problem::Content { actual } => write!(f, "content hashes to {actual}"),
            Problem::Sealed { error } => write!(f, "does not open: {error}"),
            Problem::Key { error } => write!(f, "data key unavailable: {error}"),
            Problem::Unreadable { error } => write!(f, "unreadable: {error}"),
        }
    }
}

/// Integrity figures of this process, for `/metrics`.
#[derive(Debug, Default)]
pub struct IntegrityCounters {
    /// Pulls stopped because the bytes did not check (plaintext or sealed).
    pub read_failures: AtomicU64,
    /// Damaged objects found by scrubs (each time one is found).
    pub scrub_damage: AtomicU64,
    pub scrubs_completed: AtomicU64,
    pub scrub_bytes: AtomicU64,
    /// Damaged objects found by the last completed scrub.
    pub last_scrub_damaged: AtomicU64,
    /// When the last scrub completed (unix seconds; 0: none yet).
    pub last_scrub_completed: AtomicU64,
}

impl IntegrityCounters {
    /// Appends the Prometheus text of these figures to `out`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.push_str("# HELP berth_blob_integrity_failures_total Stored blob bytes found not to match their digest by this process: pulls stopped (source=read) and damaged objects found by the scrub (source=scrub).\n");
        out.push_str("# TYPE berth_blob_integrity_failures_total counter\n");
        let _ = writeln!(out, "berth_blob_integrity_failures_total{{source=\"read\"}} {}", get(&self.read_failures));
        let _ = writeln!(out, "berth_blob_integrity_failures_total{{source=\"scrub\"}} {}", get(&self.scrub_damage));
        out.push_str("# HELP berth_scrubs_completed_total Scrubs this process completed.\n");
        out.push_str("# TYPE berth_scrubs_completed_total counter\n");
        let _ = writeln!(out, "berth_scrubs_completed_total {}", get(&self.scrubs_completed));
        out.push_str("# HELP berth_scrub_read_bytes_total Bytes this process's scrubs read.\n");
        out.push_str("# TYPE berth_scrub_read_bytes_total counter\n");
        let _ = writeln!(out, "berth_scrub_read_bytes_total {}", get(&self.scrub_bytes));
        out.push_str(
            "# HELP berth_scrub_damaged_objects Damaged objects found by this process's last completed scrub.\n",
        );
        out.push_str("# TYPE berth_scrub_damaged_objects gauge\n");
        let _ = writeln!(out, "berth_scrub_damaged_objects {}", get(&self.last_scrub_damaged));
        out.push_str("# HELP berth_scrub_last_completed_timestamp_seconds When this process last completed a scrub (0: never).\n");
        out.push_str("# TYPE berth_scrub_last_completed_timestamp_seconds gauge\n");
        let _ = writeln!(out, "berth_scrub_last_completed_timestamp_seconds {}", get(&self.last_scrub_completed));
    }

    /// Counts the read errors of `stream` that are integrity failures.
    pub fn counting(self: &Arc<Self>, stream: ByteStream) -> ByteStream {
        let counters = self.clone();
        stream
            .inspect(move |piece| {
                if let Err(e) = piece
                    && IntegrityFailure::is(e)
                {
                    counters.read_failures.fetch_add(1, Ordering::Relaxed);
                }
            })
            .boxed()
    }
}

/// Which stored object a repository reads for a blob.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ObjectId {
    digest: Digest,
    /// The sealed copy's object id; `None`: the plaintext object.
    sealed: Option<String>,
}

/// Keeps a scrub under its rate.
struct Pace {
    start: Instant,
    rate: u64,
    bytes: u64,
}

impl Pace {
    async fn read(&mut self, n: u64) {
        self.bytes += n;
        if self.rate > 0 {
            let due = self.start + Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

/// The outcome of reading one object through.
enum Read {
    /// Bytes yielded, and their digest.
    Done { len: u64, actual: Digest },
    /// The stream failed with this error.
    Failed(std::io::Error),
}

impl Registry {
    /// Reads back every stored blob (of `options.repository`, or of every repository) and
    /// reports the damage; changes nothing. Damage is logged (error) and counted as found.
    /// Fails only when the stores cannot be read at all.
    pub async fn scrub(&self, options: &ScrubOptions) -> ApiResult<ScrubReport> {
        let started = Instant::now();
        let repositories = match &options.repository {
            Some(repo) => match self.meta.repository_key(repo).await? {
                Some(key) => vec![(repo.clone(), key)],
                None => return Err(ApiError::NameUnknown),
            },
            None => self.meta.repository_keys().await?,
        };
        let mut report = ScrubReport::default();
        let mut pace = Pace { start: started, rate: options.rate, bytes: 0 };
        // Each object is read once; a damaged one remembers its entry in the report so that
        // other repositories linking it are added there.
        let mut seen: HashMap<ObjectId, Option<usize>> = HashMap::new();
        let mut logged = Instant::now();
        tracing::info!(repositories = repositories.len(), scrub.rate = options.rate, "scrub started");
        for (repo, _) in &repositories {
            report.repositories += 1;
            for (digest, _) in self.meta.repository_blobs(repo).await? {
                // Unlinked since the listing: nothing to check.
                let Some(entry) = self.meta.repo_blob_entry(repo, &digest).await? else { continue };
                let id = ObjectId { digest: digest.clone(), sealed: entry.copy.as_ref().map(|c| c.object.clone()) };
                if let Some(found) = seen.get(&id) {
                    if let Some(i) = found {
                        report.damaged[*i].repositories.push(repo.to_string());
                    }
                    continue;
                }
                let problem = self.check_object(&digest, &entry, &mut pace).await?;
                report.objects += 1;
                let damage = problem.map(|problem| {
                    let (copy, object) = match &entry.copy {
                        Some(c) => (format!("sealed for key {}", c.key_name), layout::sealed_blob(&digest, &c.object)),
                        None => ("plaintext".to_owned(), layout::blob(&digest)),
                    };
                    let damage = Damage {
                        digest: digest.to_string(),
                        repositories: vec![repo.to_string()],
                        copy,
                        object: self.blobs.location(&object),
                        problem,
                    };
                    tracing::error!(blob.digest = %digest, repo.name = %repo, blob.copy = %damage.copy,
                        blob.object = %damage.object, error = %damage.problem, "scrub: stored blob is damaged");
                    self.integrity.scrub_damage.fetch_add(1, Ordering::Relaxed);
                    report.damaged.push(damage);
                    report.damaged.len() - 1
                });
                seen.insert(id, damage);
                if logged.elapsed() >= PROGRESS_EVERY {
                    logged = Instant::now();
                    tracing::info!(
                        repositories = report.repositories,
                        objects = report.objects,
                        bytes = pace.bytes,
                        damaged = report.damaged.len(),
                        "scrub progress"
                    );
                }
            }
        }
        report.bytes = pace.bytes;
        report.seconds = started.elapsed().as_secs_f64();
        let c = &self.integrity;
        c.scrubs_completed.fetch_add(1, Ordering::Relaxed);
        c.last_scrub_damaged.store(report.damaged.len() as u64, Ordering::Relaxed);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs());
        c.last_scrub_completed.store(now.unwrap_or_default(), Ordering::Relaxed);
        let summary = format!(
            "{} repositories, {} objects, {} bytes in {:.1} s",
            report.repositories, report.objects, report.bytes, report.seconds
        );
        if report.damaged.is_empty() {
            tracing::info!(scrub.summary = %summary, "scrub finished: no damage");
        } else {
            tracing::error!(scrub.summary = %summary, damaged = report.damaged.len(), "scrub finished: damage found");
        }
        Ok(report)
    }

    /// Checks the object `entry` reads for `digest`: `None` when it is sound.
    async fn check_object(&self, digest: &Digest, entry: &BlobEntry, pace: &mut Pace) -> ApiResult<Option<Problem>> {
        let Some(copy) = &entry.copy else {
            let (stored, stream) = match self.blobs.read_stored(digest).await {
                Ok(s) => s,
                Err(berth_storage::Error::NotFound) => return Ok(Some(Problem::Missing)),
                Err(e) => return self.unreadable(e.to_string()).await,
            };
            return match self.read_through(stream, digest, pace).await {
                Read::Failed(e) => self.unreadable(e.to_string()).await,
                Read::Done { .. } if stored != entry.size => Ok(Some(Problem::Size { recorded: entry.size, stored })),
                Read::Done { actual, .. } if &actual != digest => {
                    Ok(Some(Problem::Content { actual: actual.to_string() }))
                }
                Read::Done { .. } => Ok(None),
            };
        };
        let dek = match self.crypt.kek(self.meta.as_ref(), &copy.kek).await {
            Ok(kek) => match copy.data_key(&kek, digest) {
                Ok(dek) => dek,
                Err(e) => return Ok(Some(Problem::Key { error: e.to_string() })),
            },
            Err(e) => return Ok(Some(Problem::Key { error: e.to_string() })),
        };
        let stream = match self.blobs.read_sealed(digest, copy, dek, None).await {
            Ok(s) => s,
            Err(berth_storage::Error::NotFound) => return Ok(Some(Problem::Missing)),
            Err(e) => return self.unreadable(e.to_string()).await,
        };
        match self.read_through(stream, digest, pace).await {
            Read::Failed(e) if IntegrityFailure::is(&e) => Ok(Some(Problem::Sealed { error: e.to_string() })),
            Read::Failed(e) => self.unreadable(e.to_string()).await,
            Read::Done { len, .. } if len != entry.size => {
                Ok(Some(Problem::Size { recorded: entry.size, stored: len }))
            }
            Read::Done { actual, .. } if &actual != digest => Ok(Some(Problem::Content { actual: actual.to_string() })),
            Read::Done { .. } => Ok(None),
        }
    }

    /// An object that cannot be read is damage, unless the whole store stopped answering:
    /// then the scrub stops rather than report every blob.
    async fn unreadable(&self, error: String) -> ApiResult<Option<Problem>> {
        match self.blobs.check().await {
            Ok(()) => Ok(Some(Problem::Unreadable { error })),
            Err(e) => Err(ApiError::from(e)),
        }
    }

    /// Reads `stream` to its end at the scrub's pace, hashing it with `digest`'s algorithm.
    async fn read_through(&self, mut stream: ByteStream, digest: &Digest, pace: &mut Pace) -> Read {
        let mut hasher = PipelinedHasher::new(digest.algorithm());
        let mut len = 0u64;
        while let Some(piece) = stream.next().await {
            let piece = match piece {
                Ok(p) => p,
                Err(e) => return Read::Failed(e),
            };
            let n = piece.len() as u64;
            len += n;
            self.integrity.scrub_bytes.fetch_add(n, Ordering::Relaxed);
            if let Err(e) = hasher.update(piece).await {
                return Read::Failed(e);
            }
            pace.read(n).await;
        }
        match hasher.finish().await {
            Ok(actual) => Read::Done { len, actual },
            Err(e) => Read::Failed(e),
        }
    }
}
