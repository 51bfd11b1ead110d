//! The miss path: what a client asks for in a repository under a rule, and Berth does not
//! have (or, for a tag, has not checked upstream within the rule's `refresh`).
//!
//! - A manifest by digest that is held is served as it is: digests never change. A tag that
//!   is held and was checked within `refresh` too. A tag due for its check is checked with a
//!   HEAD upstream: the same digest is served (and the check time recorded); another is
//!   fetched by that digest and the tag moved. A manifest not held is fetched (a GET), its
//!   digest verified, and stored with its references recorded but not required
//!   (`ReferenceCheck::Fetched`): the blobs and child manifests of an index are fetched when
//!   a client asks for them, each by this same path.
//! - A blob not held is fetched upstream and streamed to the client *while* it is stored
//!   (a tee with a bounded channel to each side): the client gets bytes as they arrive,
//!   except the last piece, which is held back until the whole blob is verified and stored
//!   (so a client never receives a complete body that Berth refused). The blob becomes
//!   visible (linked) only when its digest matched (invariant 11). A client that goes away
//!   does not stop the fetch: the store completes for the others.
//! - Concurrent requests for one thing make one upstream request ([`super::flight`]);
//!   followers wait for the leader, then read from storage.
//! - Upstream down, 5xx, refusing the credentials or answering nonsense: what is cached is
//!   served (stale-if-error, logged); with nothing cached the client gets 502. Upstream 404:
//!   404 (a cached tag is still served, logged), remembered for a short while.
//! - Importing is a policy decision of its own: `ecr:BatchImportUpstreamImage` (and
//!   `ecr:CreateRepository` when the repository is created) for the caller, besides the pull
//!   the route already required. A caller who may pull but not import gets what is cached.

use std::sync::Arc;

use berth_oci::manifest;
use berth_oci::{Digest, Reference, RepoName, Tag};
use berth_storage::ByteStream;
use berth_storage::metadata::{NewManifest, Origin, ReferenceCheck, RequiredContent, unix_now};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::Rule;
use super::flight::{Joined, Landed};
use crate::auth::{Caller, Permit};
use crate::error::{ApiError, ApiResult};
use crate::rules::templates::AppliedFor;
use crate::service::Registry;
use crate::service::cache::Manifest;
use crate::upstream::{BlobBody, UpstreamError};

/// Pieces in each direction of the tee: what it holds in memory per blob in flight (pieces
/// are what the upstream connection yields, typically 8–64 KiB).
const TEE_DEPTH: usize = 8;
/// How long the tee waits for the upstream's next piece, or for the leading client to take
/// one, before it gives up on that side: a stalled upstream fails the fetch; a stalled client
/// is let go (its transfer cut) and the store goes on for the others, so neither holds a flight
/// and its followers for longer.
const STALL: std::time::Duration = std::time::Duration::from_secs(30);
/// How often a request joins a flight whose leader went away before it leads one itself.
const MAX_JOINS: u32 = 3;

/// Who asks, for the policy decision and the events.
pub struct Requester<'a> {
    /// The signed-in caller; `None` with authentication off.
    pub caller: Option<&'a Caller>,
    pub origin: &'a Origin,
}

/// A blob fetched for a client.
pub enum BlobFetch {
    /// Streaming from upstream while it is stored: `size` bytes (the upstream's length).
    Streaming { size: u64, body: ByteStream },
    /// Stored now, by this request or the one it followed: read it from storage.
    Stored,
}

impl Registry {
    /// A manifest `GET`/`HEAD` of `repo`: `None` when no pull-through rule covers `repo` (the
    /// ordinary path answers), else the manifest, fetched if need be.
    pub async fn pull_through_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        who: &Requester<'_>,
    ) -> ApiResult<Option<Arc<Manifest>>> {
        let Some(rule) = self.pull_through_rule_for(repo).await? else { return Ok(None) };
        let (local, current) = self.cached_manifest(&rule, repo, reference).await?;
        if current {
            return Ok(local);
        }
        let key = format!("manifest {repo}:{reference}");
        if local.is_none() && self.pull_through.misses.recent(&key) {
            return Err(ApiError::ManifestUnknown);
        }
        if let Err(e) = self.check_import(repo, who).await {
            // May pull, may not import: what is cached is served as it is.
            return local.map(Some).ok_or(e);
        }
        let mut joins = 0;
        let outcome = loop {
            joins += 1;
            let leader = match self.pull_through.flights.join(key.clone()) {
                Joined::Busy => break Err(busy()),
                Joined::Follower(f) => match f.wait().await {
                    Landed::Abandoned if joins < MAX_JOINS => continue,
                    landed => break followed(landed, ApiError::ManifestUnknown),
                },
                Joined::Leader(leader) => leader,
            };
            // A flight that ended between the look above and the join may have stored it.
            let outcome = match self.cached_manifest(&rule, repo, reference).await {
                Ok((_, true)) => Ok(()),
                Ok((_, false)) => {
                    let have = local.as_ref().map(|m| m.digest.clone());
                    self.fetch_manifest(&rule, repo, reference, have.as_ref(), who.origin).await
                }
                Err(e) => Err(e),
            };
            leader.land(landed(&outcome));
            break outcome;
        };
        match (outcome, local) {
            (Ok(()), _) => self.get_manifest(repo, reference).await.map(Some),
            (Err(ApiError::ManifestUnknown), None) => {
                self.pull_through.misses.remember(key);
                Err(ApiError::ManifestUnknown)
            }
            (Err(e), Some(m)) => {
                tracing::warn!(repo.name = %repo, manifest.reference = %reference, upstream.url = %rule.spec.upstream_url,
                    error = %e, "the upstream could not confirm a cached tag: served as cached");
                Ok(Some(m))
            }
            (Err(e), None) => Err(e),
        }
    }

    /// What `repo` holds for `reference`, and whether it may be served without asking
    /// upstream (held by digest, or a tag checked within the rule's refresh).
    async fn cached_manifest(
        &self,
        rule: &Rule,
        repo: &RepoName,
        reference: &Reference,
    ) -> ApiResult<(Option<Arc<Manifest>>, bool)> {
        let local = match self.get_manifest(repo, reference).await {
            Ok(m) => m,
            Err(ApiError::ManifestUnknown) => return Ok((None, false)),
            Err(e) => return Err(e),
        };
        let current = match reference {
            Reference::Digest(_) => true,
            Reference::Tag(tag) => {
                let refresh = i64::try_from(rule.spec.refresh.as_secs()).unwrap_or(i64::MAX);
                let checked = self.meta.tag_checked_at(repo, tag).await?;
                checked.is_some_and(|at| unix_now().saturating_sub(at) < refresh)
            }
        };
        Ok((Some(local), current))
    }

    /// The one upstream exchange for a manifest: a tag held (`have`) is checked with a HEAD
    /// and fetched only when it moved; anything else is fetched.
    async fn fetch_manifest(
        &self,
        rule: &Rule,
        repo: &RepoName,
        reference: &Reference,
        have: Option<&Digest>,
        origin: &Origin,
    ) -> ApiResult<()> {
        let client = self.pull_through.client(&rule.spec)?;
        let name = rule.spec.upstream_name(repo);
        let unknown = || ApiError::ManifestUnknown;
        let fetched = match (reference, have) {
            (Reference::Tag(tag), Some(have)) => {
                let head = client.head_manifest(&name, tag.as_str()).await.map_err(|e| failure(e, unknown()))?;
                if &head.digest == have {
                    self.meta.set_tag_checked(repo, tag, unix_now()).await?;
                    tracing::debug!(repo.name = %repo, manifest.tag = %tag, "a cached tag is current upstream");
                    return Ok(());
                }
                client.get_manifest(&name, &head.digest.to_string()).await.map_err(|e| failure(e, unknown()))?
            }
            _ => client.get_manifest(&name, &reference.to_string()).await.map_err(|e| failure(e, unknown()))?,
        };
        if let Reference::Digest(asked) = reference
            && &fetched.digest != asked
        {
            return Err(ApiError::Upstream(format!("the upstream answered manifest {} for {asked}", fetched.digest)));
        }
        let tag = match reference {
            Reference::Tag(t) => Some(t.clone()),
            Reference::Digest(_) => None,
        };
        self.store_fetched_manifest(repo, &fetched.digest, &fetched.media_type, fetched.bytes, tag.as_ref(), origin)
            .await?;
        if let Some(tag) = &tag {
            self.meta.set_tag_checked(repo, tag, unix_now()).await?;
        }
        tracing::info!(repo.name = %repo, manifest.reference = %reference, manifest.digest = %fetched.digest,
            upstream.url = %rule.spec.upstream_url, upstream.name = %name, "manifest fetched from upstream and cached");
        Ok(())
    }

    /// Stores a manifest fetched (digest verified by the client) as an ordinary manifest of
    /// `repo`, which is created if need be; its references may follow later.
    async fn store_fetched_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
        bytes: Bytes,
        tag: Option<&Tag>,
        origin: &Origin,
    ) -> ApiResult<()> {
        let parsed = manifest::parse(Some(media_type), &bytes)
            .map_err(|e| ApiError::Upstream(format!("the upstream's manifest {digest} does not parse: {e}")))?;
        self.ensure_cache_repository(repo, origin).await?;
        let covering = self.quotas_for(repo).await?;
        self.check_manifest_quota(&covering, repo, digest).await?;
        let required = |ds: &[manifest::Descriptor]| -> Vec<RequiredContent> {
            ds.iter().map(|d| RequiredContent { digest: d.digest.clone(), size: d.size }).collect()
        };
        let mut record = NewManifest {
            repo: repo.clone(),
            digest: digest.clone(),
            media_type: parsed.media_type.clone(),
            artifact_type: parsed.artifact_type.clone(),
            content: bytes.to_vec(),
            subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
            annotations: parsed.annotations.clone(),
            blobs: required(&parsed.blobs),
            manifests: required(&parsed.manifests),
            tags: tag.into_iter().cloned().collect(),
            mutability: Default::default(),
            references: ReferenceCheck::Fetched,
        };
        let stored = self.put_guarded(&mut record, origin).await;
        self.manifests.invalidate(repo);
        stored?;
        self.events.wake();
        self.note_quota_use(&covering, repo, origin).await;
        Ok(())
    }

    /// Creates `repo` for the cache, unless it exists, with the plan of the creation
    /// templates applied for `PULL_THROUGH_CACHE`.
    async fn ensure_cache_repository(&self, repo: &RepoName, origin: &Origin) -> ApiResult<()> {
        if self.meta.repository_key(repo).await?.is_some() {
            return Ok(());
        }
        let plan = self.creation_plan(repo, AppliedFor::PullThroughCache).await?;
        if self.meta.create_repository(repo, &plan.new, origin).await?.created {
            self.events.wake();
            tracing::info!(repo.name = %repo, template = ?plan.template, "repository created by the pull-through cache");
        }
        Ok(())
    }

    /// Whether the caller may import into `repo`: `ecr:BatchImportUpstreamImage`, and
    /// `ecr:CreateRepository` when the repository does not exist yet.
    async fn check_import(&self, repo: &RepoName, who: &Requester<'_>) -> ApiResult<()> {
        if !self.auth.enabled() {
            return Ok(());
        }
        // With authentication on, every request through the OCI routes has a caller (maybe
        // anonymous); one without (a signed download URL) may read, never import.
        let Some(caller) = who.caller else {
            return Err(ApiError::Denied {
                message: format!("{repo} is not cached, and this request cannot fetch it from the upstream registry"),
                challenge: None,
            });
        };
        let mut actions = vec![berth_auth::policy::actions::BATCH_IMPORT_UPSTREAM_IMAGE];
        if self.meta.repository_key(repo).await?.is_none() {
            actions.push("ecr:CreateRepository");
        }
        match self.auth.decide(self.meta.as_ref(), caller, Some(repo), &actions).await? {
            Permit::Allow => Ok(()),
            Permit::Deny(sid) => {
                tracing::info!(repo.name = %repo, policy.sid = ?sid, "pull-through import denied");
                Err(ApiError::Denied {
                    message: format!(
                        "{repo} is not cached, and fetching it from the upstream registry needs {} on it",
                        actions.join(" and ")
                    ),
                    challenge: None,
                })
            }
        }
    }

    /// A blob `GET`/`HEAD` of `repo` that it does not hold: `None` when no pull-through rule
    /// covers `repo`. With `stream` (a whole-blob GET) the leader's client gets the bytes as
    /// they arrive; otherwise the answer waits until the blob is stored.
    pub async fn pull_through_blob(
        self: &Arc<Self>,
        repo: &RepoName,
        digest: &Digest,
        who: &Requester<'_>,
        stream: bool,
    ) -> ApiResult<Option<BlobFetch>> {
        let Some(rule) = self.pull_through_rule_for(repo).await? else { return Ok(None) };
        let key = format!("blob {repo}@{digest}");
        if self.pull_through.misses.recent(&key) {
            return Err(ApiError::BlobUnknown);
        }
        self.check_import(repo, who).await?;
        let mut joins = 0;
        let leader = loop {
            joins += 1;
            match self.pull_through.flights.join(key.clone()) {
                Joined::Busy => return Err(busy()),
                Joined::Follower(f) => match f.wait().await {
                    Landed::Abandoned if joins < MAX_JOINS => continue,
                    landed => return followed(landed, ApiError::BlobUnknown).map(|()| Some(BlobFetch::Stored)),
                },
                Joined::Leader(leader) => {
                    // A flight that ended between the client's miss and the join stored it.
                    if self.meta.repo_blob(repo, digest).await?.is_some() {
                        leader.land(Landed::Done);
                        return Ok(Some(BlobFetch::Stored));
                    }
                    break leader;
                }
            }
        };
        let name = rule.spec.upstream_name(repo);
        let started = async {
            let client = self.pull_through.client(&rule.spec)?;
            let body = client.get_blob(&name, digest).await.map_err(|e| failure(e, ApiError::BlobUnknown))?;
            self.ensure_cache_repository(repo, who.origin).await?;
            Ok::<_, ApiError>(body)
        };
        let body = match started.await {
            Ok(body) => body,
            Err(e) => {
                leader.land(landed(&Err(e.clone())));
                if matches!(e, ApiError::BlobUnknown) {
                    self.pull_through.misses.remember(key);
                }
                return Err(e);
            }
        };
        tracing::info!(repo.name = %repo, blob.digest = %digest, blob.size = body.size,
            upstream.url = %rule.spec.upstream_url, upstream.name = %name, "blob fetched from upstream");
        let size = body.size;
        let (client_tx, client_rx) = mpsc::channel(TEE_DEPTH);
        let (done_tx, done_rx) = oneshot::channel();
        let tee = Tee {
            reg: self.clone(),
            repo: repo.clone(),
            digest: digest.clone(),
            origin: who.origin.clone(),
            upstream: body,
            client: stream.then_some(client_tx),
        };
        tokio::spawn(async move {
            let outcome = tee.run().await;
            leader.land(outcome.clone());
            let _ = done_tx.send(outcome);
        });
        if stream {
            let body =
                futures::stream::unfold(client_rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
            return Ok(Some(BlobFetch::Streaming { size, body: body.boxed() }));
        }
        let outcome = done_rx.await.unwrap_or(Landed::Abandoned);
        followed(outcome, ApiError::BlobUnknown).map(|()| Some(BlobFetch::Stored))
    }
}

/// One blob from upstream into storage and, if wanted, to a client at the same time.
struct Tee {
    reg: Arc<Registry>,
    repo: RepoName,
    digest: Digest,
    origin: Origin,
    upstream: BlobBody,
    client: Option<mpsc::Sender<std::io::Result<Bytes>>>,
}

impl Tee {
    async fn run(self) -> Landed {
        let Tee { reg, repo, digest, origin, upstream, mut client } = self;
        let size = upstream.size;
        let (store_tx, store_rx) = mpsc::channel::<std::io::Result<Bytes>>(TEE_DEPTH);
        let store_body: ByteStream =
            futures::stream::unfold(store_rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }).boxed();
        let storing = {
            let (reg, repo, digest, origin) = (reg.clone(), repo.clone(), digest.clone(), origin.clone());
            tokio::spawn(async move { reg.monolithic_upload(&repo, &digest, Some(size), store_body, &origin).await })
        };
        // The last piece is held back from the client until the blob is stored.
        let mut held: Option<Bytes> = None;
        let mut failed: Option<String> = None;
        let mut body = upstream.body;
        loop {
            let item = match tokio::time::timeout(STALL, body.next()).await {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no byte from the upstream in {} s", STALL.as_secs()),
                )),
            };
            match item {
                Ok(piece) => {
                    if store_tx.send(Ok(piece.clone())).await.is_err() {
                        // The store ended early: its error is the outcome.
                        break;
                    }
                    if let Some(previous) = held.replace(piece) {
                        send(&mut client, Ok(previous)).await;
                    }
                }
                Err(e) => {
                    let why = format!("the upstream's blob {digest}: {e}");
                    let _ = store_tx.send(Err(std::io::Error::new(e.kind(), why.clone()))).await;
                    failed = Some(why);
                    break;
                }
            }
        }
        drop(store_tx);
        let stored = storing.await;
        let outcome = match (failed, stored) {
            (Some(why), _) => Landed::Failed(why),
            (None, Ok(Ok(_))) => Landed::Done,
            (None, Ok(Err(e))) => Landed::Failed(e.to_string()),
            (None, Err(e)) => Landed::Failed(format!("storing the blob: {e}")),
        };
        match &outcome {
            Landed::Done => {
                if let Some(last) = held {
                    send(&mut client, Ok(last)).await;
                }
                tracing::info!(repo.name = %repo, blob.digest = %digest, blob.size = size, "blob cached from upstream");
            }
            Landed::NotFound | Landed::Failed(_) | Landed::Abandoned => {
                let why = match &outcome {
                    Landed::Failed(why) => why.clone(),
                    _ => "not found upstream".into(),
                };
                tracing::warn!(repo.name = %repo, blob.digest = %digest, error = %why,
                    "a blob from upstream was not stored (nothing of it is visible)");
                send(&mut client, Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why))).await;
            }
        }
        outcome
    }
}

/// Passes an item to the client unless it went away or stalls (then the fetch goes on
/// without it).
async fn send(client: &mut Option<mpsc::Sender<std::io::Result<Bytes>>>, item: std::io::Result<Bytes>) {
    if let Some(tx) = client {
        match tokio::time::timeout(STALL, tx.send(item)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => *client = None,
            Err(_) => {
                tracing::info!("a client stalled on a blob fetched from upstream: let go, the fetch goes on");
                *client = None;
            }
        }
    }
}

/// An upstream failure as the client learns it: `unknown` for a 404.
fn failure(e: UpstreamError, unknown: ApiError) -> ApiError {
    match e {
        UpstreamError::NotFound => unknown,
        UpstreamError::Denied(m) => {
            ApiError::Upstream(format!("the upstream registry refused the pull-through rule's credentials: {m}"))
        }
        UpstreamError::Unavailable(m) => ApiError::Upstream(format!("the upstream registry is unavailable: {m}")),
        UpstreamError::Invalid(m) => ApiError::Upstream(format!("the upstream registry answered wrongly: {m}")),
    }
}

/// How a fetch ended, for its followers.
fn landed(outcome: &ApiResult<()>) -> Landed {
    match outcome {
        Ok(()) => Landed::Done,
        Err(ApiError::ManifestUnknown | ApiError::BlobUnknown) => Landed::NotFound,
        Err(e) => Landed::Failed(e.to_string()),
    }
}

/// A follower's view of the leader's outcome.
fn followed(outcome: Landed, unknown: ApiError) -> ApiResult<()> {
    match outcome {
        Landed::Done => Ok(()),
        Landed::NotFound => Err(unknown),
        Landed::Failed(why) => Err(ApiError::Upstream(why)),
        Landed::Abandoned => Err(ApiError::Upstream("the fetch was abandoned by the request that led it".into())),
    }
}

fn busy() -> ApiError {
    ApiError::Upstream(format!(
        "{} fetches from upstream registries are in flight, the most this registry makes at once; retry shortly",
        super::flight::MAX_FLIGHTS
    ))
}
