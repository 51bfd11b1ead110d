//! The copier: what the dispatcher does with a delivery owed to a destination. It copies the
//! pushed image to the destination registry with the one OCI client (`crate::upstream`), in
//! an order that never shows a partial image there:
//!
//! 1. each blob the manifest references, unless the destination has it (`has_blob`), mounted
//!    from another of its repositories when this process pushed it there before, else
//!    streamed from the blob store (never buffered whole);
//! 2. for an index, each child manifest first, the same way;
//! 3. the manifest by digest;
//! 4. the manifest's referrers (signatures, SBOMs...) after their subject, the same way;
//! 5. the tag, last.
//!
//! A manifest the destination has already (HEAD by digest) is not copied again, so an
//! attempt that follows a failed or interrupted one resumes where it stopped. Any failure
//! fails the attempt (the dispatcher retries it with backoff, then dead-letters it); a
//! manifest deleted here before its copy fails it for good, as there is nothing to copy
//! (deletions are not replicated).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use berth_oci::{Digest, Reference, RepoName};
use berth_storage::metadata::{Delivery, Outcome, ReplicationState, Subscription};
use futures::future::BoxFuture;

use super::{SUBSCRIPTION_PREFIX, SealedCredentials};
use crate::error::ApiError;
use crate::service::Registry;
use crate::upstream::{Credentials, Upstream, UpstreamConfig, UpstreamError};

/// How deep referrers of referrers (and children of indexes) are followed.
const MAX_DEPTH: usize = 4;
/// The blobs remembered per process for mounts at destinations.
const MAX_MOUNT_HINTS: usize = 10_000;

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyError {
    /// Try again later (the destination down, refusing, a local read failing...).
    Retry(String),
    /// Trying again cannot help: dead-letter it now.
    Permanent(String),
}

impl CopyError {
    pub fn message(&self) -> &str {
        match self {
            CopyError::Retry(m) | CopyError::Permanent(m) => m,
        }
    }
}

fn remote(what: &str, e: UpstreamError) -> CopyError {
    CopyError::Retry(format!("{what}: {e}"))
}

fn local(what: &str, e: ApiError) -> CopyError {
    CopyError::Retry(format!("{what}: {e}"))
}

/// The copier of one process: the registry, a client per destination (kept while its URL
/// and credentials stay, so tokens are reused), and where blobs were pushed at destinations.
pub struct Replicator {
    registry: Arc<Registry>,
    clients: Mutex<HashMap<String, (String, Upstream)>>,
    mounts: Mutex<HashMap<(String, Digest), String>>,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator").finish_non_exhaustive()
    }
}

/// One attempt's context.
struct Attempt<'a> {
    dest: &'a Upstream,
    destination: &'a str,
    repo: &'a RepoName,
    /// Manifests handled in this attempt.
    done: HashSet<Digest>,
}

impl Replicator {
    pub fn new(registry: Arc<Registry>) -> Replicator {
        Replicator { registry, clients: Mutex::default(), mounts: Mutex::default() }
    }

    /// The client for `sub`'s destination, with the CA certificates of its stored definition.
    async fn client(&self, sub: &Subscription) -> Result<Upstream, CopyError> {
        let name = sub.name.strip_prefix(SUBSCRIPTION_PREFIX).unwrap_or(&sub.name);
        let view = self.registry.replication().await.map_err(|e| local("reading the configuration", e))?;
        let ca_cert_pem = view.destinations.iter().find(|d| d.name == name).and_then(|d| d.ca_cert_pem.clone());
        let fingerprint = format!("{}\n{}\n{}", sub.url, sub.secret, ca_cert_pem.as_deref().unwrap_or(""));
        if let Ok(clients) = self.clients.lock()
            && let Some((f, c)) = clients.get(&sub.name)
            && *f == fingerprint
        {
            return Ok(c.clone());
        }
        let creds = self.registry.destination_credentials(sub).map_err(CopyError::Retry)?;
        let credentials = match creds {
            SealedCredentials::Anonymous => Credentials::Anonymous,
            SealedCredentials::Basic { username, password } => Credentials::Basic { username, password },
            SealedCredentials::Ecr { access_key_id, secret_access_key, region, endpoint } => {
                Credentials::Ecr { access_key_id, secret_access_key, region, endpoint }
            }
        };
        let config = UpstreamConfig {
            url: sub.url.clone(),
            credentials,
            ca_cert_pem: ca_cert_pem.map(String::into_bytes),
            timeout: std::time::Duration::from_millis(sub.timeout_ms),
        };
        let client = Upstream::new(config).map_err(|e| CopyError::Retry(format!("the destination's client: {e}")))?;
        if let Ok(mut clients) = self.clients.lock() {
            clients.insert(sub.name.clone(), (fingerprint, client.clone()));
        }
        Ok(client)
    }

    /// Copies the image of `delivery` to `sub`'s destination.
    pub async fn replicate(&self, delivery: &Delivery, sub: &Subscription) -> Result<(), CopyError> {
        let event = &delivery.event;
        let destination = sub.name.strip_prefix(SUBSCRIPTION_PREFIX).unwrap_or(&sub.name);
        let repo: RepoName = event
            .repository
            .parse()
            .map_err(|e| CopyError::Permanent(format!("repository {:?}: {e}", event.repository)))?;
        let Some(digest) = event.digest.as_deref() else {
            return Err(CopyError::Permanent("the event names no manifest".into()));
        };
        let digest: Digest =
            digest.parse().map_err(|e| CopyError::Permanent(format!("the event's digest {digest:?}: {e}")))?;
        // In progress, with the last attempt's failure (if any) until this one ends.
        let last_error = delivery.last_error.clone();
        self.registry
            .note_replication(destination, repo.as_str(), &digest.to_string(), ReplicationState::InProgress, last_error)
            .await;
        let dest = self.client(sub).await?;
        let mut attempt = Attempt { dest: &dest, destination, repo: &repo, done: HashSet::new() };
        let media_type = self.copy_manifest(&mut attempt, digest.clone(), 0).await?;
        if let Some(tag) = &event.tag {
            // The tag last, and only to a manifest the destination now holds whole. (A tag
            // moved again since is moved again by that push's own delivery, in order.)
            let manifest = self.read_manifest(&repo, &digest).await?;
            dest.put_manifest(repo.as_str(), tag, &media_type, manifest.content.clone())
                .await
                .map_err(|e| remote(&format!("tagging {tag}"), e))?;
        }
        for d in &attempt.done {
            self.registry
                .note_replication(destination, repo.as_str(), &d.to_string(), ReplicationState::Complete, None)
                .await;
        }
        tracing::info!(replication.destination = destination, repo.name = %repo, manifest.digest = %digest,
            manifest.tag = event.tag.as_deref().unwrap_or(""), manifests = attempt.done.len(), "image replicated");
        Ok(())
    }

    /// Records the status an attempt's outcome leaves (the dispatcher calls it).
    pub async fn finished(&self, delivery: &Delivery, sub: &Subscription, outcome: &Outcome) {
        let destination = sub.name.strip_prefix(SUBSCRIPTION_PREFIX).unwrap_or(&sub.name);
        let Some(digest) = &delivery.event.digest else { return };
        let (state, reason) = match outcome {
            Outcome::Delivered { .. } => return,
            Outcome::Retry { error, .. } => (ReplicationState::InProgress, Some(error.clone())),
            Outcome::Dead { error, .. } => (ReplicationState::Failed, Some(error.clone())),
        };
        self.registry.note_replication(destination, &delivery.event.repository, digest, state, reason).await;
    }

    async fn read_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Arc<crate::service::cache::Manifest>, CopyError> {
        match self.registry.get_manifest(repo, &Reference::Digest(digest.clone())).await {
            Ok(m) => Ok(m),
            Err(ApiError::ManifestUnknown | ApiError::NameUnknown) => Err(CopyError::Permanent(format!(
                "manifest {digest} is no longer in {repo} (deleted before it was replicated)"
            ))),
            Err(e) => Err(local(&format!("reading manifest {digest}"), e)),
        }
    }

    /// Copies manifest `digest` (its blobs, its children first) unless the destination has
    /// it, then its referrers. Returns its media type.
    fn copy_manifest<'a>(
        &'a self,
        a: &'a mut Attempt<'_>,
        digest: Digest,
        depth: usize,
    ) -> BoxFuture<'a, Result<String, CopyError>> {
        Box::pin(async move {
            let manifest = self.read_manifest(a.repo, &digest).await?;
            let media_type = manifest.media_type.clone();
            if !a.done.insert(digest.clone()) {
                return Ok(media_type);
            }
            let there = match a.dest.head_manifest(a.repo.as_str(), &digest.to_string()).await {
                Ok(_) => true,
                Err(UpstreamError::NotFound) => false,
                Err(e) => return Err(remote(&format!("checking manifest {digest}"), e)),
            };
            if !there {
                let parsed = berth_oci::manifest::parse(Some(&media_type), &manifest.content)
                    .map_err(|e| CopyError::Permanent(format!("manifest {digest}: {e}")))?;
                for child in &parsed.manifests {
                    if depth >= MAX_DEPTH {
                        return Err(CopyError::Permanent(format!("manifest {digest}: nested too deep")));
                    }
                    self.copy_manifest(a, child.digest.clone(), depth + 1).await?;
                }
                for blob in &parsed.blobs {
                    self.copy_blob(a, &blob.digest).await?;
                }
                a.dest
                    .put_manifest(a.repo.as_str(), &digest.to_string(), &media_type, manifest.content.clone())
                    .await
                    .map_err(|e| remote(&format!("pushing manifest {digest}"), e))?;
            }
            if depth < MAX_DEPTH {
                let mut last = None;
                loop {
                    let (page, more) = self
                        .registry
                        .referrers(a.repo, &digest, None, last.clone())
                        .await
                        .map_err(|e| local(&format!("listing the referrers of {digest}"), e))?;
                    last = page.last().map(|r| r.digest.to_string());
                    for r in page {
                        self.copy_manifest(a, r.digest, depth + 1).await?;
                    }
                    if !more || last.is_none() {
                        break;
                    }
                }
            }
            Ok(media_type)
        })
    }

    /// Copies one blob unless the destination has it: mounted when this process pushed it
    /// to another repository there, else streamed from the blob store.
    async fn copy_blob(&self, a: &Attempt<'_>, digest: &Digest) -> Result<(), CopyError> {
        let repo = a.repo.as_str();
        if a.dest.has_blob(repo, digest).await.map_err(|e| remote(&format!("checking blob {digest}"), e))? {
            return Ok(());
        }
        let key = (a.destination.to_owned(), digest.clone());
        let from = self.mounts.lock().ok().and_then(|m| m.get(&key).cloned()).filter(|f| f != repo);
        if let Some(from) = from {
            match a.dest.mount_blob(repo, digest, &from).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(blob.digest = %digest, error = %e, "mount at the destination failed; pushing")
                }
            }
        }
        let entry = self
            .registry
            .meta
            .repo_blob_entry(a.repo, digest)
            .await
            .map_err(|e| local(&format!("reading blob {digest}"), e.into()))?
            .ok_or_else(|| CopyError::Permanent(format!("blob {digest} is no longer in {repo}")))?;
        let body = self
            .registry
            .open_blob(digest, &entry, None, None)
            .await
            .map_err(|e| local(&format!("reading blob {digest}"), e))?;
        a.dest
            .push_blob(repo, digest, entry.size, body)
            .await
            .map_err(|e| remote(&format!("pushing blob {digest}"), e))?;
        if let Ok(mut m) = self.mounts.lock() {
            if m.len() >= MAX_MOUNT_HINTS {
                m.clear();
            }
            m.insert(key, repo.to_owned());
        }
        Ok(())
    }
}
