//! What ECR's image and lifecycle operations need beyond the OCI verbs: `BatchDeleteImage`'s
//! tag semantics (a tag's removal takes the image with it when it was its last tag), and
//! `StartLifecyclePolicyPreview`'s
//! stored preview, which `GetLifecyclePolicyPreview` reads back.

use berth_oci::{Digest, Reference, RepoName, Tag};
use berth_storage::metadata::{Expired, LifecyclePreviewRecord, Origin, unix_now};
use serde::{Deserialize, Serialize};

use super::Registry;
use crate::error::{ApiError, ApiResult};

/// What [`Registry::untag_image`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untagged {
    /// The tag; the image keeps its other tags, or is listed by an index, so it stays.
    Tag,
    /// The tag, and the image it named, which had no other tag.
    TagAndImage,
}

/// One image a stored preview expires: ECR's `LifecyclePolicyPreviewResult`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewResult {
    pub image_tags: Vec<String>,
    pub image_digest: String,
    /// Unix seconds.
    pub image_pushed_at: i64,
    /// The rule the expiry goes back to (through the index or subject it goes with).
    pub applied_rule_priority: u32,
}

/// A repository's last preview as stored: the policy previewed and what it expires, in the
/// order a run would delete it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPreview {
    pub policy: String,
    pub started_at: i64,
    pub results: Vec<PreviewResult>,
}

impl Registry {
    /// ECR's `BatchDeleteImage` of a tag: removes `tag` from `repo`, and the image it named
    /// when that was its last tag and no other manifest lists it (as a lifecycle run deletes:
    /// the store's conditional delete, so a tag pushed onto the image in between keeps it).
    /// `MANIFEST_UNKNOWN` when there is no such tag; else the digest the tag named. Events (`tag.delete`, then
    /// `manifest.delete`) and usage follow from the store's deletions, from `origin`.
    pub async fn untag_image(&self, repo: &RepoName, tag: &Tag, origin: &Origin) -> ApiResult<(Digest, Untagged)> {
        if !self.settings.delete_manifests {
            return Err(ApiError::Unsupported("manifest deletion is disabled on this registry".into()));
        }
        let record = self.meta.get_manifest(repo, &Reference::Tag(tag.clone())).await?;
        let digest = record.ok_or(ApiError::ManifestUnknown)?.digest;
        // If the tag moved in between, the tag is still what goes; the image it named before is
        // then deleted only if nothing names it any more, which the conditional delete checks.
        let deleted = self.meta.delete_tag(repo, tag, origin).await;
        self.manifests.invalidate(repo);
        if !deleted? {
            return Err(ApiError::ManifestUnknown);
        }
        let expired = self.meta.expire_manifest(repo, &digest, &[], origin).await;
        self.manifests.invalidate(repo);
        self.events.wake();
        let untagged = match expired? {
            Expired::Deleted => Untagged::TagAndImage,
            Expired::Gone | Expired::TagsChanged | Expired::Referenced => Untagged::Tag,
        };
        tracing::info!(repo.name = %repo, manifest.tag = %tag, manifest.digest = %digest,
            image.deleted = untagged == Untagged::TagAndImage, "tag deleted");
        Ok((digest, untagged))
    }

    /// ECR's `StartLifecyclePolicyPreview`: the plan of `text` (else of the stored policy) for
    /// `repo` now, computed as a run computes it ([`Registry::preview_lifecycle`]), stored as
    /// the repository's last preview (replacing the one before) and answered.
    pub async fn start_lifecycle_preview(&self, repo: &RepoName, text: Option<String>) -> ApiResult<StoredPreview> {
        let policy = match text {
            Some(text) => text,
            None => self.lifecycle_policy(repo).await?.policy,
        };
        let plan = self.preview_lifecycle(repo, Some(&policy)).await?;
        let results: Vec<PreviewResult> = super::lifecycle::result_views(&plan.expiring)
            .into_iter()
            .map(|v| PreviewResult {
                image_tags: v.image_tags,
                image_digest: v.image_digest,
                image_pushed_at: v.image_pushed_at,
                applied_rule_priority: v.applied_rule_priority,
            })
            .collect();
        let result = serde_json::to_string(&results).map_err(|e| ApiError::Internal(e.to_string()))?;
        let preview = StoredPreview { policy, started_at: unix_now(), results };
        let record = LifecyclePreviewRecord { policy: preview.policy.clone(), result, started_at: preview.started_at };
        match self.meta.put_lifecycle_preview(repo, &record).await {
            Err(berth_storage::Error::NotFound) => return Err(ApiError::NameUnknown),
            other => other?,
        }
        tracing::info!(repo.name = %repo, expiring = preview.results.len(), "lifecycle policy preview stored");
        Ok(preview)
    }

    /// The last preview of `repo`; `None` when none was started. (Whether the repository
    /// exists is the caller's to ask first.)
    pub async fn lifecycle_preview(&self, repo: &RepoName) -> ApiResult<Option<StoredPreview>> {
        let Some(record) = self.meta.lifecycle_preview(repo).await? else { return Ok(None) };
        let results = serde_json::from_str(&record.result)
            .map_err(|e| ApiError::Internal(format!("the stored lifecycle preview of {repo} does not parse: {e}")))?;
        Ok(Some(StoredPreview { policy: record.policy, started_at: record.started_at, results }))
    }
}
