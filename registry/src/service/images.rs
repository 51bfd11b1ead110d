//! A repository's images with their details (ECR's `DescribeImages`): tags, sizes, push and
//! last pull times, subject and children. The admin API, the CLI and (later) the ECR API and
//! the lifecycle evaluator read them through these calls.

use std::collections::HashMap;

use berth_oci::{Digest, RepoName};
use berth_storage::metadata::ImageRecord;
use serde::Serialize;

use super::Registry;
use crate::error::{ApiError, ApiResult};

/// ECR's `tagStatus` filter of `DescribeImages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TagStatus {
    /// Images with at least one tag.
    Tagged,
    /// Images without a tag.
    Untagged,
    #[default]
    Any,
}

impl std::str::FromStr for TagStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<TagStatus, String> {
        match s {
            "TAGGED" => Ok(TagStatus::Tagged),
            "UNTAGGED" => Ok(TagStatus::Untagged),
            "ANY" => Ok(TagStatus::Any),
            other => Err(format!("tagStatus {other:?}: give TAGGED, UNTAGGED or ANY")),
        }
    }
}

impl TagStatus {
    /// Whether `image` passes the filter.
    pub fn admits(self, image: &ImageRecord) -> bool {
        match self {
            TagStatus::Tagged => !image.tags.is_empty(),
            TagStatus::Untagged => image.tags.is_empty(),
            TagStatus::Any => true,
        }
    }
}

/// ECR's `imageSizeInBytes` of each of `images` (a repository's whole listing), in order: for
/// an image, its config and layers added up; for an index, as ECR documents for a manifest
/// list, the largest of its children's sizes (a child no longer in the repository counts as
/// 0). The manifest's own bytes are not counted (ECR counts only what it stores as layers).
pub fn image_sizes(images: &[ImageRecord]) -> Vec<u64> {
    let by_digest: HashMap<&Digest, &ImageRecord> = images.iter().map(|i| (&i.digest, i)).collect();
    images
        .iter()
        .map(|image| {
            if image.children.is_empty() {
                image.blobs_size
            } else {
                image.children.iter().filter_map(|c| by_digest.get(c)).map(|c| c.blobs_size).max().unwrap_or_default()
            }
        })
        .collect()
}

/// The most images one page lists when a page size is asked for (ECR's bound on
/// `maxResults`).
pub const MAX_RESULTS: usize = 1000;

/// Which images [`Registry::describe_images`] answers: ECR's `filter.tagStatus`,
/// `maxResults` (`None`: all) and `nextToken` (the last digest of the page before).
#[derive(Debug, Clone, Default)]
pub struct DescribeImages {
    pub tag_status: TagStatus,
    pub max_results: Option<usize>,
    pub next_token: Option<String>,
}

/// One image as ECR's `ImageDetail` has it (times in epoch seconds; what ECR leaves out when
/// absent is left out), and Berth's `children`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageDetail {
    pub registry_id: String,
    pub repository_name: String,
    pub image_digest: Digest,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub image_tags: Vec<String>,
    /// See [`image_sizes`].
    pub image_size_in_bytes: u64,
    pub image_pushed_at: i64,
    /// Absent: never pulled since it was pushed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_recorded_pull_time: Option<i64>,
    pub image_manifest_media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_media_type: Option<String>,
    /// The manifest a referrer (signature, SBOM, attestation) refers to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_manifest_digest: Option<Digest>,
    /// Berth has no archive tier: always `ACTIVE`.
    pub image_status: &'static str,
    /// Berth's, not ECR's: an index's manifests, sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Digest>,
}

/// ECR's `DescribeImages` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageDetails {
    pub image_details: Vec<ImageDetail>,
    /// The token of the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

impl Registry {
    /// The images of `repo` as ECR's `DescribeImages` answers, ordered by digest:
    /// `NAME_UNKNOWN` when there is no such repository. (Authorization, `ecr:DescribeImages`
    /// on the repository, is the adapter's.)
    pub async fn describe_images(&self, repo: &RepoName, ask: &DescribeImages) -> ApiResult<ImageDetails> {
        if ask.max_results.is_some_and(|n| !(1..=MAX_RESULTS).contains(&n)) {
            return Err(ApiError::Invalid(format!("maxResults: give a number from 1 to {MAX_RESULTS}")));
        }
        let images = self.images(repo).await?;
        let sizes = image_sizes(&images);
        let after = ask.next_token.as_deref();
        let mut listed = images
            .into_iter()
            .zip(sizes)
            .filter(|(image, _)| ask.tag_status.admits(image))
            .filter(|(image, _)| after.is_none_or(|token| image.digest.to_string().as_str() > token));
        let page: Vec<(ImageRecord, u64)> = listed.by_ref().take(ask.max_results.unwrap_or(usize::MAX)).collect();
        let next_token = match (page.last(), listed.next()) {
            (Some((last, _)), Some(_)) => Some(last.digest.to_string()),
            _ => None,
        };
        let image_details = page
            .into_iter()
            .map(|(image, size)| ImageDetail {
                registry_id: self.auth.arns.account.clone(),
                repository_name: repo.to_string(),
                image_digest: image.digest,
                image_tags: image.tags,
                image_size_in_bytes: size,
                image_pushed_at: image.pushed_at,
                last_recorded_pull_time: image.last_pulled_at,
                image_manifest_media_type: image.media_type,
                artifact_media_type: image.artifact_type,
                subject_manifest_digest: image.subject,
                image_status: "ACTIVE",
                children: image.children,
            })
            .collect();
        Ok(ImageDetails { image_details, next_token })
    }

    /// Every image of `repo`, ordered by digest; `NAME_UNKNOWN` when there is no such
    /// repository.
    pub async fn images(&self, repo: &RepoName) -> ApiResult<Vec<ImageRecord>> {
        self.meta.list_images(repo).await?.ok_or(ApiError::NameUnknown)
    }

    /// One image of `repo`; `MANIFEST_UNKNOWN` when it is not there.
    pub async fn image(&self, repo: &RepoName, digest: &Digest) -> ApiResult<ImageRecord> {
        self.meta.image(repo, digest).await?.ok_or(ApiError::ManifestUnknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seed: &str, blobs_size: u64, tags: &[&str], children: &[&Digest]) -> ImageRecord {
        ImageRecord {
            digest: Digest::sha256_of(seed.as_bytes()),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            artifact_type: None,
            size: 500,
            blobs_size,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            pushed_at: 0,
            last_pulled_at: None,
            subject: None,
            children: children.iter().map(|d| (*d).clone()).collect(),
        }
    }

    #[test]
    fn an_index_is_as_large_as_its_largest_child() {
        let small = record("small", 1_000, &[], &[]);
        let large = record("large", 9_000, &[], &[]);
        let gone = Digest::sha256_of(b"gone");
        let index = record("index", 0, &["v1"], &[&small.digest, &large.digest, &gone]);
        let orphan = record("orphan", 0, &[], &[&gone]);
        assert_eq!(image_sizes(&[small, index, large, orphan]), [1_000, 9_000, 9_000, 0]);
    }

    #[test]
    fn tag_status_filters_as_ecr() {
        let tagged = record("t", 1, &["v1"], &[]);
        let untagged = record("u", 1, &[], &[]);
        let admitted = |s: TagStatus| [&tagged, &untagged].map(|i| s.admits(i));
        assert_eq!(admitted("TAGGED".parse().unwrap()), [true, false]);
        assert_eq!(admitted("UNTAGGED".parse().unwrap()), [false, true]);
        assert_eq!(admitted("ANY".parse().unwrap()), [true, true]);
        assert_eq!(admitted(TagStatus::default()), [true, true]);
        let refused = "tagged".parse::<TagStatus>().unwrap_err();
        assert!(refused.contains("TAGGED, UNTAGGED or ANY"), "{refused}");
    }
}
