//! Images as ECR's `DescribeImages` shows them: each manifest of a repository with its tags,
//! sizes, push and last pull times, subject and children; and the last pull times, written in
//! batches.
//!
//! `manifest_references` does not say whether a reference is a blob or a manifest: the
//! parent's kind does (an image manifest references only blobs, its config and layers; an
//! index only manifests), so both stores read every reference with the size of a blob of that
//! digest, if any, and [`assemble`] sorts them by the parent's media type.

use std::collections::BTreeMap;

use async_trait::async_trait;
use berth_oci::media::{ManifestKind, manifest_kind};
use berth_oci::{Digest, RepoName};

use super::{parse_digest, size_of};
use crate::error::Result;

/// One manifest of a repository with what describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    pub digest: Digest,
    pub media_type: String,
    pub artifact_type: Option<String>,
    /// The manifest's own size in bytes.
    pub size: u64,
    /// The sizes of the blobs it references (config and layers) added up; 0 for an index.
    pub blobs_size: u64,
    /// Its tags, sorted.
    pub tags: Vec<String>,
    /// When it was stored (manifests.created_at), unix seconds.
    pub pushed_at: i64,
    /// When it was last pulled (manifests.last_pulled_at), unix seconds; None: never.
    pub last_pulled_at: Option<i64>,
    /// The manifest it refers to (`subject`), for signatures, SBOMs, attestations.
    pub subject: Option<Digest>,
    /// The manifests it references (an index's children), sorted.
    pub children: Vec<Digest>,
}

/// Images and their last pull times.
#[async_trait]
pub trait Images: Send + Sync {
    /// Every manifest of `repo`, ordered by digest, with its tags, sizes and references;
    /// `None` when the repository does not exist. A fixed number of queries whatever the
    /// number of images, read in one snapshot.
    async fn list_images(&self, repo: &RepoName) -> Result<Option<Vec<ImageRecord>>>;
    /// One manifest of `repo` as [`Images::list_images`] describes it; `None` when it is not
    /// there (or the repository is not).
    async fn image(&self, repo: &RepoName, digest: &Digest) -> Result<Option<ImageRecord>>;
    /// Records that each manifest of `pulls` was pulled at `at` (unix seconds), in one write
    /// transaction: `last_pulled_at` becomes the later of what it was and `at`. Repositories
    /// and manifests that are not there (deleted since the pull) are skipped. Returns how
    /// many manifests' times moved.
    async fn record_pulls(&self, pulls: &[(RepoName, Digest)], at: i64) -> Result<u64>;
}

/// The columns of a manifest both stores read, in this order (`m` is manifests).
pub(crate) const IMAGE_COLUMNS: &str =
    "m.digest, m.media_type, m.artifact_type, m.size, m.created_at, m.last_pulled_at, m.subject";

/// A manifest's row: the columns of [`IMAGE_COLUMNS`].
pub(crate) struct ImageRow {
    pub digest: String,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub size: i64,
    pub created_at: i64,
    pub last_pulled_at: Option<i64>,
    pub subject: Option<String>,
}

/// A reference of a manifest: the manifest, the referenced digest, and the size of the blob
/// of that digest (`None` when there is no such blob: a child manifest).
pub(crate) struct ReferenceRow {
    pub manifest: String,
    pub child: String,
    pub blob_size: Option<i64>,
}

/// The records of `rows`, ordered by digest, with their tags (`(digest, tag)` pairs) and
/// references. Tags and references of manifests not in `rows` are ignored.
pub(crate) fn assemble(
    rows: Vec<ImageRow>,
    tags: Vec<(String, String)>,
    references: Vec<ReferenceRow>,
) -> Result<Vec<ImageRecord>> {
    struct Building {
        row: ImageRow,
        index: bool,
        tags: Vec<String>,
        blobs_size: u64,
        children: Vec<String>,
    }
    let mut images: BTreeMap<String, Building> = rows
        .into_iter()
        .map(|row| {
            let index = manifest_kind(&row.media_type) == Some(ManifestKind::Index);
            (row.digest.clone(), Building { row, index, tags: Vec::new(), blobs_size: 0, children: Vec::new() })
        })
        .collect();
    for (digest, tag) in tags {
        if let Some(image) = images.get_mut(&digest) {
            image.tags.push(tag);
        }
    }
    for reference in references {
        let Some(image) = images.get_mut(&reference.manifest) else { continue };
        if image.index {
            image.children.push(reference.child);
        } else {
            image.blobs_size = image.blobs_size.saturating_add(reference.blob_size.map(size_of).unwrap_or_default());
        }
    }
    images
        .into_values()
        .map(|mut b| {
            b.tags.sort();
            b.children.sort();
            Ok(ImageRecord {
                digest: parse_digest(b.row.digest)?,
                media_type: b.row.media_type,
                artifact_type: b.row.artifact_type,
                size: size_of(b.row.size),
                blobs_size: b.blobs_size,
                tags: b.tags,
                pushed_at: b.row.created_at,
                last_pulled_at: b.row.last_pulled_at,
                subject: b.row.subject.map(parse_digest).transpose()?,
                children: b.children.into_iter().map(parse_digest).collect::<Result<_>>()?,
            })
        })
        .collect()
}

/// `pulls` as `(repository, digest)` strings, each once, sorted (so that concurrent batches
/// take row locks in the same order).
pub(crate) fn distinct_pulls(pulls: &[(RepoName, Digest)]) -> Vec<(String, String)> {
    let set: std::collections::BTreeSet<(String, String)> =
        pulls.iter().map(|(r, d)| (r.as_str().to_owned(), d.to_string())).collect();
    set.into_iter().collect()
}
