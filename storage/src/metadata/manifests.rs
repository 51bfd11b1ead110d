//! Manifests and tags, the referrers of a manifest, and the feed of their changes.

use std::collections::BTreeMap;

use async_trait::async_trait;
use berth_oci::{Digest, Reference, RepoName, Tag};

use super::{Origin, Page};
use crate::error::Result;

/// A stored manifest, byte-exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    pub content: Vec<u8>,
}

/// A reference from a manifest to content that must be in the same repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredContent {
    pub digest: Digest,
    pub size: u64,
}

/// Everything [`Manifests::put_manifest`] records, in one transaction.
#[derive(Debug, Clone)]
pub struct NewManifest {
    pub repo: RepoName,
    pub digest: Digest,
    pub media_type: String,
    /// Reported by the referrers API: `artifactType`, else the config's media type.
    pub artifact_type: Option<String>,
    pub content: Vec<u8>,
    pub subject: Option<Digest>,
    pub annotations: Option<BTreeMap<String, String>>,
    /// Blobs that must be linked to the repository, with their sizes.
    pub blobs: Vec<RequiredContent>,
    /// Manifests that must be in the repository, with their sizes.
    pub manifests: Vec<RequiredContent>,
    /// Tags to point at this manifest.
    pub tags: Vec<Tag>,
    /// Which of `tags` may not move, and the repository setting that says so.
    pub mutability: TagGuard,
    /// Whether `blobs` and `manifests` must be in the repository already.
    pub references: ReferenceCheck,
}

/// Whether a manifest's references must be in its repository when it is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReferenceCheck {
    /// Every blob and child manifest must be there, with its size (a push:
    /// `MANIFEST_BLOB_UNKNOWN` otherwise).
    #[default]
    Present,
    /// The references are recorded but may arrive later: a pull-through cache stores a
    /// manifest it fetched from another registry (digest verified) before the content it
    /// references, which it fetches when a client asks for it.
    Fetched,
}

/// What keeps a push from moving an immutable tag. The caller reads the repository's tag
/// mutability ([`Repositories::repository_settings`](super::Repositories::repository_settings)),
/// decides which tags it holds immutable (the registry's `rules::mutability`; the store has
/// no rule of its own) and passes both. In the transaction that writes the tags the store
/// then checks that (1) the repository's setting is still `setting`, else
/// [`Error::MutabilityChanged`](crate::Error::MutabilityChanged) (decide again and retry),
/// and (2) no tag of `immutable` names another manifest, else
/// [`Error::TagImmutable`](crate::Error::TagImmutable) and nothing of the push is written. So
/// of two pushes of different manifests to one new immutable tag exactly one wins, and a
/// setting change is never overtaken by a push decided under the old setting.
///
/// The default (the default setting, nothing immutable) is right for a repository whose
/// setting is the default, and refused (`MutabilityChanged`) for any other: a caller that
/// does not read the setting cannot move an immutable tag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagGuard {
    /// The repository's setting as the caller read it (the default for a repository that
    /// did not exist: one created by this push has no tag to protect).
    pub setting: super::TagMutabilitySetting,
    /// The tags of the push that may not be moved to another manifest (pushing the manifest
    /// they name again is fine).
    pub immutable: Vec<Tag>,
}

/// A manifest that names another as its `subject`, as the referrers API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A change to manifests or tags, made by this process or another sharing the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Something in this repository's manifests or tags changed.
    Repository(RepoName),
    /// Anything may have changed (the feed was interrupted, or fell behind).
    Unknown,
}

/// The rule both stores apply to a manifest's reference: present in the repository, with
/// the size the descriptor declares.
pub(crate) fn check_reference(required: &RequiredContent, size: Option<u64>) -> Result<()> {
    use crate::error::Error;
    match size {
        None => Err(Error::MissingReference(required.digest.clone())),
        Some(actual) if actual != required.size => {
            Err(Error::ReferenceSize { digest: required.digest.clone(), declared: required.size, actual })
        }
        Some(_) => Ok(()),
    }
}

/// Manifests and tags, the referrers of a manifest, and the feed of their changes.
#[async_trait]
pub trait Manifests: Send + Sync {
    /// A feed of the changes other processes make, for caches to follow. `None` when no
    /// other process writes to this store (an embedded database).
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }
    /// Stores a manifest, after checking in the same transaction that everything it
    /// references is in the repository; moves its tags. Pushing the same manifest again is
    /// not an error. Events: one `manifest.push` per tag in `manifest.tags` (one without a
    /// tag when there are none), after `repository.create` when the repository is new.
    async fn put_manifest(&self, manifest: &NewManifest, origin: &Origin) -> Result<()>;
    async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>>;
    /// Deletes a manifest and every tag pointing at it; `false` when it was not there.
    /// Events: a `tag.delete` per tag that went with it, then `manifest.delete`.
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest, origin: &Origin) -> Result<bool>;
    /// Removes one tag, leaving the manifest; `false` when the tag was not there.
    /// Event: `tag.delete` (with the digest it pointed at).
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag, origin: &Origin) -> Result<bool>;
    /// Tags of `repo` in byte order; `None` when the repository does not exist.
    async fn list_tags(&self, repo: &RepoName, page: &Page) -> Result<Option<Vec<String>>>;
    /// Manifests of `repo` whose subject is `subject`, optionally of one artifact type, in
    /// the order they were pushed: one page, the referrers after the one whose digest is
    /// `page.last` (none when that one is gone), at most `page.limit`.
    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        page: &Page,
    ) -> Result<Vec<Referrer>>;
}
