//! ECR's image operations: `ListImages`, `DescribeImages`, `BatchGetImage`,
//! `BatchDeleteImage`, `PutImage`, `PutImageTagMutability`, `ListImageReferrers`. Each parses
//! its input (every list checked against ECR's maximum), is allowed by its own ECR action on
//! the repository, and calls the service verbs the OCI and admin APIs use: a `BatchGetImage`
//! is a pull (its pull time noted as a manifest `GET`'s), a `PutImage` is a manifest push
//! (references checked, tag immutability held), a `BatchDeleteImage` of a tag removes the
//! tag and the image with its last tag (`service::ecr_images`).
//!
//! Pages: a `nextToken` is the position after the last entry of the page before, in the
//! listing's own order (a digest, or a digest and a tag); a token that is not one is
//! refused (`InvalidParameterException`), never trusted.

use std::collections::{BTreeMap, HashSet};

use berth_auth::policy::actions;
use berth_oci::manifest::{self, MAX_MANIFEST_BYTES};
use berth_oci::{Digest, Reference, RepoName, Tag};
use serde::{Deserialize, Serialize};

use super::error::EcrError;
use super::wire::{epoch, input, max_results, output, repository_name};
use super::{Ecr, EcrResult};
use crate::error::ApiError;
use crate::service::ecr_images::Untagged;
use crate::service::images::{DescribeImages, TagStatus};
use crate::service::repository_settings::PutTagMutability;

/// Serves `op` if it belongs to this group.
pub(super) async fn call(ecr: &Ecr<'_>, op: &str, body: &[u8]) -> Option<EcrResult> {
    Some(match op {
        "ListImages" => list_images(ecr, body).await,
        "DescribeImages" => describe_images(ecr, body).await,
        "BatchGetImage" => batch_get_image(ecr, body).await,
        "BatchDeleteImage" => batch_delete_image(ecr, body).await,
        "PutImage" => put_image(ecr, body).await,
        "PutImageTagMutability" => put_image_tag_mutability(ecr, body).await,
        "ListImageReferrers" => list_image_referrers(ecr, body).await,
        _ => return None,
    })
}

/// ECR's bound on an `imageIds` list.
pub(super) const MAX_IMAGE_IDS: usize = 100;
/// The page `ListImages` and `DescribeImages` answer when no `maxResults` is given (ECR's).
const DEFAULT_PAGE: usize = 100;

/// ECR's `ImageIdentifier`, as given and as answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ImageId {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_tag: Option<String>,
}

impl ImageId {
    fn of(digest: &Digest, tag: Option<&str>) -> ImageId {
        ImageId { image_digest: Some(digest.to_string()), image_tag: tag.map(str::to_owned) }
    }

    /// As ECR writes an id in its messages.
    fn describe(&self) -> String {
        let quoted = |v: &Option<String>| v.as_deref().map_or("null".to_owned(), |s| format!("'{s}'"));
        format!("{{imageDigest:{}, imageTag:{}}}", quoted(&self.image_digest), quoted(&self.image_tag))
    }
}

/// An image id that parses: what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Wanted {
    Digest(Digest),
    Tag(Tag),
    /// Both given: the tag must name that digest.
    Both(Digest, Tag),
}

impl Wanted {
    /// Whether the image of `digest` and `tags` is the one named.
    pub(super) fn matches(&self, digest: &Digest, tags: &[String]) -> bool {
        let tagged = |t: &Tag| tags.iter().any(|x| x == t.as_str());
        match self {
            Wanted::Digest(d) => digest == d,
            Wanted::Tag(t) => tagged(t),
            Wanted::Both(d, t) => digest == d && tagged(t),
        }
    }
}

/// One entry of a batch's `failures`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Failure {
    pub image_id: ImageId,
    pub failure_code: &'static str,
    pub failure_reason: String,
}

impl Failure {
    fn new(id: &ImageId, code: &'static str, reason: impl Into<String>) -> Failure {
        Failure { image_id: id.clone(), failure_code: code, failure_reason: reason.into() }
    }

    fn not_found(id: &ImageId) -> Failure {
        Failure::new(id, "ImageNotFound", "Requested image not found")
    }
}

/// What an id names, or its failure (ECR's codes).
pub(super) fn wanted(id: &ImageId) -> Result<Wanted, Failure> {
    let digest = match &id.image_digest {
        None => None,
        Some(d) => Some(d.parse::<Digest>().map_err(|e| {
            Failure::new(
                id,
                "InvalidImageDigest",
                format!("imageDigest '{d}' is not a digest ({e}); give <algorithm>:<hex>"),
            )
        })?),
    };
    let tag = match &id.image_tag {
        None => None,
        Some(t) => Some(t.parse::<Tag>().map_err(|e| {
            Failure::new(id, "InvalidImageTag", format!("imageTag '{t}' is not a tag ({e}); tags are 1 to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'"))
        })?),
    };
    match (digest, tag) {
        (Some(d), Some(t)) => Ok(Wanted::Both(d, t)),
        (Some(d), None) => Ok(Wanted::Digest(d)),
        (None, Some(t)) => Ok(Wanted::Tag(t)),
        (None, None) => Err(Failure::new(id, "MissingDigestAndTag", "give imageDigest, imageTag or both")),
    }
}

/// `imageIds` checked against ECR's bounds (1 to 100).
pub(super) fn image_ids(ids: &[ImageId]) -> EcrResult<()> {
    if ids.is_empty() || ids.len() > MAX_IMAGE_IDS {
        return Err(EcrError::invalid(format!(
            "imageIds has {} entries; give 1 to {MAX_IMAGE_IDS} (split the request)",
            ids.len()
        )));
    }
    Ok(())
}

/// `ImageNotFoundException` for `id` in `repo`, in ECR's sentence.
pub(super) fn image_not_found(ecr: &Ecr<'_>, id: &ImageId, repo: &RepoName) -> EcrError {
    EcrError::new(
        "ImageNotFoundException",
        format!(
            "The image with imageId {} does not exist within the repository with name '{repo}' in the registry with id '{}'",
            id.describe(),
            ecr.account()
        ),
    )
}

/// The repository exists (the service's calls answer an empty listing or "manifest unknown"
/// for a repository that does not, where ECR says `RepositoryNotFoundException`).
pub(super) async fn existing(ecr: &Ecr<'_>, repo: &RepoName) -> EcrResult<()> {
    match ecr.reg.repository_settings(repo).await {
        Ok(_) => Ok(()),
        Err(ApiError::NotFound(_) | ApiError::NameUnknown) => Err(ecr.repository_not_found(repo)),
        Err(e) => Err(ecr.api(e)),
    }
}

/// The service's error for `repo`: a missing repository by its name.
fn api_for(ecr: &Ecr<'_>, repo: &RepoName, e: ApiError) -> EcrError {
    match e {
        ApiError::NameUnknown => ecr.repository_not_found(repo),
        e => ecr.api(e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TagStatusFilter {
    #[serde(default)]
    tag_status: Option<String>,
    /// Berth has one storage class: every image is `ACTIVE`.
    #[serde(default)]
    image_status: Option<String>,
}

impl TagStatusFilter {
    fn tag_status(&self) -> EcrResult<TagStatus> {
        self.tag_status
            .as_deref()
            .map_or(Ok(TagStatus::Any), |s| s.parse().map_err(|e: String| EcrError::invalid(format!("filter.{e}"))))
    }

    /// Whether the `imageStatus` filter admits Berth's images (all `ACTIVE`).
    fn admits_active(&self) -> EcrResult<bool> {
        match self.image_status.as_deref() {
            None | Some("ACTIVE" | "ANY") => Ok(true),
            Some("ARCHIVED" | "ACTIVATING") => Ok(false),
            Some(other) => Err(EcrError::invalid(format!(
                "filter.imageStatus {other:?}: give ACTIVE, ARCHIVED, ACTIVATING or ANY"
            ))),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListImagesInput {
    registry_id: Option<String>,
    repository_name: String,
    next_token: Option<String>,
    max_results: Option<i64>,
    #[serde(default)]
    filter: TagStatusFilter,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListImagesOutput {
    image_ids: Vec<ImageId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

/// `ListImages`: one id per tag, an untagged image once, ordered by digest then tag.
async fn list_images(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let input: ListImagesInput = input(body)?;
    ecr.registry_id(input.registry_id.as_deref())?;
    let repo = repository_name("repositoryName", &input.repository_name)?;
    let page = max_results(input.max_results, 1000)?.unwrap_or(DEFAULT_PAGE);
    let status = input.filter.tag_status()?;
    let active = input.filter.admits_active()?;
    // The position after which this page starts: a digest and a tag ("" for an untagged one).
    let after = match &input.next_token {
        None => None,
        Some(token) => Some(
            list_token(token)
                .ok_or_else(|| EcrError::invalid("nextToken is not one this operation gave; start again without it"))?,
        ),
    };
    ecr.allow(actions::LIST_IMAGES, Some(&repo)).await?;
    let images = ecr.reg.images(&repo).await.map_err(|e| api_for(ecr, &repo, e))?;
    let mut entries: Vec<(String, String)> = Vec::new();
    for image in images.iter().filter(|i| active && status.admits(i)) {
        let digest = image.digest.to_string();
        if image.tags.is_empty() {
            entries.push((digest, String::new()));
        } else {
            let mut tags = image.tags.clone();
            tags.sort();
            entries.extend(tags.into_iter().map(|t| (digest.clone(), t)));
        }
    }
    entries.sort();
    let mut listed = entries.into_iter().filter(|e| after.as_ref().is_none_or(|a| e > a));
    let page: Vec<(String, String)> = listed.by_ref().take(page).collect();
    let next_token = match (page.last(), listed.next()) {
        (Some((d, t)), Some(_)) => Some(format!("{d} {t}")),
        _ => None,
    };
    let image_ids = page
        .into_iter()
        .map(|(d, t)| ImageId { image_digest: Some(d), image_tag: (!t.is_empty()).then_some(t) })
        .collect();
    output(&ListImagesOutput { image_ids, next_token })
}

/// A `ListImages` token: `<digest> <tag>` (the tag empty for an untagged image).
fn list_token(token: &str) -> Option<(String, String)> {
    let (digest, tag) = token.split_once(' ')?;
    digest.parse::<Digest>().ok()?;
    if !tag.is_empty() {
        tag.parse::<Tag>().ok()?;
    }
    Some((digest.to_owned(), tag.to_owned()))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeImagesInput {
    registry_id: Option<String>,
    repository_name: String,
    image_ids: Option<Vec<ImageId>>,
    next_token: Option<String>,
    max_results: Option<i64>,
    filter: Option<TagStatusFilter>,
}

/// ECR's `ImageDetail`: the service's, without Berth's own fields.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageDetailOut {
    registry_id: String,
    repository_name: String,
    image_digest: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    image_tags: Vec<String>,
    image_size_in_bytes: u64,
    image_pushed_at: f64,
    image_manifest_media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_media_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_recorded_pull_time: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject_manifest_digest: Option<String>,
    image_status: &'static str,
}

impl From<crate::service::images::ImageDetail> for ImageDetailOut {
    fn from(d: crate::service::images::ImageDetail) -> ImageDetailOut {
        ImageDetailOut {
            registry_id: d.registry_id,
            repository_name: d.repository_name,
            image_digest: d.image_digest.to_string(),
            image_tags: d.image_tags,
            image_size_in_bytes: d.image_size_in_bytes,
            image_pushed_at: epoch(d.image_pushed_at),
            image_manifest_media_type: d.image_manifest_media_type,
            artifact_media_type: d.artifact_media_type,
            last_recorded_pull_time: d.last_recorded_pull_time.map(epoch),
            subject_manifest_digest: d.subject_manifest_digest.map(|s| s.to_string()),
            image_status: d.image_status,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DescribeImagesOutput {
    image_details: Vec<ImageDetailOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

/// `DescribeImages`: the images named by `imageIds` (an unknown one is
/// `ImageNotFoundException`, as ECR answers), or a page of those `filter` admits.
async fn describe_images(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let input: DescribeImagesInput = input(body)?;
    ecr.registry_id(input.registry_id.as_deref())?;
    let repo = repository_name("repositoryName", &input.repository_name)?;
    let max = max_results(input.max_results, 1000)?;
    let filter = input.filter.unwrap_or_default();
    let tag_status = filter.tag_status()?;
    let active = filter.admits_active()?;
    let next_token = match input.next_token {
        Some(t) if t.parse::<Digest>().is_err() => {
            return Err(EcrError::invalid("nextToken is not one this operation gave; start again without it"));
        }
        other => other,
    };
    let ids = match input.image_ids {
        None => None,
        Some(ids) => {
            image_ids(&ids)?;
            if max.is_some() || next_token.is_some() {
                return Err(EcrError::invalid(
                    "maxResults and nextToken cannot be used with imageIds: give one or the other",
                ));
            }
            let mut named = Vec::with_capacity(ids.len());
            for id in ids {
                let w = wanted(&id).map_err(|f| EcrError::invalid(f.failure_reason))?;
                named.push((id, w));
            }
            Some(named)
        }
    };
    ecr.allow(actions::DESCRIBE_IMAGES, Some(&repo)).await?;
    let (details, next_token) = match ids {
        Some(named) => {
            let all =
                ecr.reg.describe_images(&repo, &DescribeImages::default()).await.map_err(|e| api_for(ecr, &repo, e))?;
            let mut seen = HashSet::new();
            let mut details = Vec::new();
            for (id, w) in &named {
                let Some(d) = all.image_details.iter().find(|d| w.matches(&d.image_digest, &d.image_tags)) else {
                    return Err(image_not_found(ecr, id, &repo));
                };
                if seen.insert(d.image_digest.clone()) {
                    details.push(d.clone());
                }
            }
            (details, None)
        }
        None if !active => {
            existing(ecr, &repo).await?;
            (Vec::new(), None)
        }
        None => {
            let ask = DescribeImages { tag_status, max_results: Some(max.unwrap_or(DEFAULT_PAGE)), next_token };
            let page = ecr.reg.describe_images(&repo, &ask).await.map_err(|e| api_for(ecr, &repo, e))?;
            (page.image_details, page.next_token)
        }
    };
    output(&DescribeImagesOutput { image_details: details.into_iter().map(Into::into).collect(), next_token })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchGetImageInput {
    registry_id: Option<String>,
    repository_name: String,
    image_ids: Vec<ImageId>,
    accepted_media_types: Option<Vec<String>>,
}

/// ECR's `Image`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageOut {
    registry_id: String,
    repository_name: String,
    image_id: ImageId,
    image_manifest: String,
    image_manifest_media_type: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchGetImageOutput {
    images: Vec<ImageOut>,
    failures: Vec<Failure>,
}

/// `BatchGetImage`: each image's manifest, byte for byte; a pull of each (its pull time noted).
/// `acceptedMediaTypes` is what ECR may convert a manifest to; Berth converts nothing, so a
/// manifest is answered as pushed, whatever is accepted, as ECR answers one it cannot convert
/// (the caller decides what to do with another type: `imageManifestMediaType` says it).
async fn batch_get_image(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let input: BatchGetImageInput = input(body)?;
    ecr.registry_id(input.registry_id.as_deref())?;
    let repo = repository_name("repositoryName", &input.repository_name)?;
    image_ids(&input.image_ids)?;
    let accepted = input.accepted_media_types.unwrap_or_default();
    if accepted.len() > 100 || input_had_empty_list(body) {
        return Err(EcrError::invalid(format!(
            "acceptedMediaTypes has {} entries; give 1 to 100, or leave it out to accept any",
            accepted.len()
        )));
    }
    ecr.allow(actions::BATCH_GET_IMAGE, Some(&repo)).await?;
    existing(ecr, &repo).await?;
    let mut images = Vec::new();
    let mut failures = Vec::new();
    for id in &input.image_ids {
        let w = match wanted(id) {
            Ok(w) => w,
            Err(f) => {
                failures.push(f);
                continue;
            }
        };
        let reference = match &w {
            Wanted::Digest(d) | Wanted::Both(d, _) => Reference::Digest(d.clone()),
            Wanted::Tag(t) => Reference::Tag(t.clone()),
        };
        if let Wanted::Both(d, t) = &w {
            // The tag must name the digest; what is answered is then read by the digest.
            match ecr.reg.get_manifest(&repo, &Reference::Tag(t.clone())).await {
                Ok(m) if &m.digest != d => {
                    failures.push(Failure::new(id, "ImageTagDoesNotMatchDigest", "the tag names another digest"));
                    continue;
                }
                Ok(_) => {}
                Err(ApiError::ManifestUnknown) => {
                    failures.push(Failure::not_found(id));
                    continue;
                }
                Err(e) => return Err(api_for(ecr, &repo, e)),
            }
        }
        match ecr.reg.pull_manifest(&repo, &reference).await {
            Ok(m) => {
                let Ok(text) = String::from_utf8(m.content.to_vec()) else {
                    // Manifests are JSON, so UTF-8; one that is not cannot be a JSON string.
                    failures.push(Failure::new(id, "ImageInaccessible", "the manifest is not UTF-8 text"));
                    continue;
                };
                let tag = match &w {
                    Wanted::Tag(t) | Wanted::Both(_, t) => Some(t.as_str()),
                    Wanted::Digest(_) => None,
                };
                images.push(ImageOut {
                    registry_id: ecr.account().to_owned(),
                    repository_name: repo.to_string(),
                    image_id: ImageId::of(&m.digest, tag),
                    image_manifest: text,
                    image_manifest_media_type: m.media_type.clone(),
                });
            }
            Err(ApiError::ManifestUnknown) => failures.push(Failure::not_found(id)),
            Err(e) => return Err(api_for(ecr, &repo, e)),
        }
    }
    output(&BatchGetImageOutput { images, failures })
}

/// Whether the input's `acceptedMediaTypes` is an empty list (ECR's minimum is 1).
fn input_had_empty_list(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("acceptedMediaTypes").and_then(|a| a.as_array().map(Vec::is_empty)))
        .unwrap_or(false)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchDeleteImageInput {
    registry_id: Option<String>,
    repository_name: String,
    image_ids: Vec<ImageId>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchDeleteImageOutput {
    image_ids: Vec<ImageId>,
    failures: Vec<Failure>,
}

/// `BatchDeleteImage`, as ECR: a digest deletes the image with its tags (not while an index
/// of the repository lists it: `ImageReferencedByManifestList`); a tag removes the tag, and
/// the image with its last tag; a digest with a tag removes the tag when it names that
/// digest. Authorized once for the request.
async fn batch_delete_image(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let input: BatchDeleteImageInput = input(body)?;
    ecr.registry_id(input.registry_id.as_deref())?;
    let repo = repository_name("repositoryName", &input.repository_name)?;
    image_ids(&input.image_ids)?;
    ecr.allow(actions::BATCH_DELETE_IMAGE, Some(&repo)).await?;
    let images = ecr.reg.images(&repo).await.map_err(|e| api_for(ecr, &repo, e))?;
    let mut deleted: HashSet<Digest> = HashSet::new();
    let mut image_ids = Vec::new();
    let mut failures = Vec::new();
    for id in &input.image_ids {
        let w = match wanted(id) {
            Ok(w) => w,
            Err(f) => {
                failures.push(f);
                continue;
            }
        };
        match w {
            Wanted::Digest(d) => {
                let listed_by = images.iter().find(|i| !deleted.contains(&i.digest) && i.children.contains(&d));
                if let Some(index) = listed_by {
                    failures.push(Failure::new(
                        id,
                        "ImageReferencedByManifestList",
                        format!("the image is listed by the index {}; delete that first", index.digest),
                    ));
                    continue;
                }
                match ecr.reg.delete_manifest(&repo, &Reference::Digest(d.clone()), &ecr.origin).await {
                    Ok(()) => {
                        image_ids.push(ImageId::of(&d, None));
                        deleted.insert(d);
                    }
                    Err(ApiError::ManifestUnknown) => failures.push(Failure::not_found(id)),
                    Err(e) => return Err(api_for(ecr, &repo, e)),
                }
            }
            Wanted::Tag(t) | Wanted::Both(_, t) => {
                let named = match ecr.reg.get_manifest(&repo, &Reference::Tag(t.clone())).await {
                    Ok(m) => m.digest.clone(),
                    Err(ApiError::ManifestUnknown) => {
                        failures.push(Failure::not_found(id));
                        continue;
                    }
                    Err(e) => return Err(api_for(ecr, &repo, e)),
                };
                if let Some(d) = &id.image_digest
                    && d != &named.to_string()
                {
                    failures.push(Failure::new(id, "ImageTagDoesNotMatchDigest", "the tag names another digest"));
                    continue;
                }
                match ecr.reg.untag_image(&repo, &t, &ecr.origin).await {
                    Ok((digest, untagged)) => {
                        if untagged == Untagged::TagAndImage {
                            deleted.insert(digest.clone());
                        }
                        image_ids.push(ImageId::of(&digest, Some(t.as_str())));
                    }
                    Err(ApiError::ManifestUnknown) => failures.push(Failure::not_found(id)),
                    Err(e) => return Err(api_for(ecr, &repo, e)),
                }
            }
        }
    }
    output(&BatchDeleteImageOutput { image_ids, failures })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutImageInput {
    registry_id: Option<String>,
    repository_name: String,
    image_manifest: String,
    image_manifest_media_type: Option<String>,
    image_tag: Option<String>,
    image_digest: Option<String>,
}

#[derive(Debug, Serialize)]
struct PutImageOutput {
    image: ImageOut,
}

/// `PutImage`: a manifest push (its references must be in the repository; an immutable tag
/// is not moved). The same manifest under the same tag again is `ImageAlreadyExistsException`,
/// as ECR answers.
async fn put_image(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let input: PutImageInput = input(body)?;
    ecr.registry_id(input.registry_id.as_deref())?;
    let repo = repository_name("repositoryName", &input.repository_name)?;
    let bytes = input.image_manifest.into_bytes();
    if bytes.is_empty() || bytes.len() > MAX_MANIFEST_BYTES {
        return Err(EcrError::invalid(format!(
            "imageManifest has {} bytes; give 1 to {MAX_MANIFEST_BYTES}",
            bytes.len()
        )));
    }
    let tag = match &input.image_tag {
        None => None,
        Some(t) => Some(t.parse::<Tag>().map_err(|e| {
            EcrError::invalid(format!("imageTag '{t}' is not a tag ({e}); tags are 1 to 128 of [A-Za-z0-9_.-]"))
        })?),
    };
    let given =
        match &input.image_digest {
            None => None,
            Some(d) => Some(d.parse::<Digest>().map_err(|e| {
                EcrError::invalid(format!("imageDigest '{d}' is not a digest ({e}); give sha256:<hex>"))
            })?),
        };
    let content_type = input.image_manifest_media_type.as_deref();
    let parsed = manifest::parse(content_type, &bytes)
        .map_err(|e| EcrError::invalid(format!("imageManifest is not a manifest Berth accepts: {e}")))?;
    let digest = match &given {
        Some(d) => {
            let actual = Digest::of(d.algorithm(), &bytes);
            if &actual != d {
                return Err(EcrError::new(
                    "ImageDigestDoesNotMatchException",
                    format!("imageDigest is {d}, but the manifest's digest is {actual}"),
                ));
            }
            actual
        }
        None => Digest::sha256_of(&bytes),
    };
    ecr.allow(actions::PUT_IMAGE, Some(&repo)).await?;
    existing(ecr, &repo).await?;
    // The same manifest under the same name again changes nothing: ECR refuses it.
    let current = match &tag {
        Some(t) => Reference::Tag(t.clone()),
        None => Reference::Digest(digest.clone()),
    };
    match ecr.reg.get_manifest(&repo, &current).await {
        Ok(m) if m.digest == digest => {
            let named = tag.as_ref().map_or(String::new(), |t| format!(" and tag '{t}'"));
            return Err(EcrError::new(
                "ImageAlreadyExistsException",
                format!("Image with digest '{digest}'{named} already exists in the repository with name '{repo}'"),
            ));
        }
        Ok(_) | Err(ApiError::ManifestUnknown) => {}
        Err(e) => return Err(api_for(ecr, &repo, e)),
    }
    let (reference, extra) = match (&given, &tag) {
        (Some(d), Some(t)) => (Reference::Digest(d.clone()), vec![t.clone()]),
        (None, Some(t)) => (Reference::Tag(t.clone()), Vec::new()),
        (_, None) => (Reference::Digest(digest.clone()), Vec::new()),
    };
    let pushed = ecr.reg.put_manifest(&repo, &reference, content_type, bytes.clone(), extra, &ecr.origin).await;
    match pushed {
        Ok(_) => {}
        Err(ApiError::ManifestBlobUnknown(missing)) => {
            return Err(if parsed.manifests.iter().any(|m| m.digest == missing) {
                EcrError::new(
                    "ReferencedImagesNotFoundException",
                    format!(
                        "the manifest lists {missing}, which is not an image of repository '{repo}'; push it first"
                    ),
                )
            } else {
                EcrError::new(
                    "LayersNotFoundException",
                    format!(
                        "the manifest references {missing}, which is not a layer of repository '{repo}'; upload it first"
                    ),
                )
            });
        }
        Err(e) => return Err(api_for(ecr, &repo, e)),
    }
    let image_manifest = String::from_utf8(bytes).map_err(|_| EcrError::invalid("imageManifest is not UTF-8"))?;
    output(&PutImageOutput {
        image: ImageOut {
            registry_id: ecr.account().to_owned(),
            repository_name: repo.to_string(),
            image_id: ImageId::of(&digest, tag.as_ref().map(Tag::as_str)),
            image_manifest,
            image_manifest_media_type: parsed.media_type,
        },
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutImageTagMutabilityInput {
    registry_id: Option<String>,
    repository_name: String,
    image_tag_mutability: String,
    image_tag_mutability_exclusion_filters: Option<Vec<crate::service::repository_settings::ExclusionFilter>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PutImageTagMutabilityOutput {
    registry_id: String,
    repository_name: String,
    image_tag_mutability: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    image_tag_mutability_exclusion_filters: Vec<crate::service::repository_settings::ExclusionFilter>,
}

/// `PutImageTagMutability`: the repository's setting, from the next push on.
async fn put_image_tag_mutability(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let input: PutImageTagMutabilityInput = input(body)?;
    ecr.registry_id(input.registry_id.as_deref())?;
    let repo = repository_name("repositoryName", &input.repository_name)?;
    let filters = input.image_tag_mutability_exclusion_filters.unwrap_or_default();
    if filters.len() > 5 {
        return Err(EcrError::invalid(format!(
            "imageTagMutabilityExclusionFilters has {} entries; give at most 5",
            filters.len()
        )));
    }
    let setting = PutTagMutability {
        image_tag_mutability: input.image_tag_mutability,
        image_tag_mutability_exclusion_filters: filters,
    }
    .checked()
    .map_err(|e| ecr.api(e))?;
    ecr.allow("ecr:PutImageTagMutability", Some(&repo)).await?;
    let view = match ecr.reg.put_tag_mutability(&repo, &setting).await {
        Ok(v) => v,
        Err(ApiError::NotFound(_) | ApiError::NameUnknown) => return Err(ecr.repository_not_found(&repo)),
        Err(e) => return Err(ecr.api(e)),
    };
    output(&PutImageTagMutabilityOutput {
        registry_id: ecr.account().to_owned(),
        repository_name: view.repository_name,
        image_tag_mutability: view.image_tag_mutability,
        image_tag_mutability_exclusion_filters: view.image_tag_mutability_exclusion_filters,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubjectId {
    image_digest: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReferrersFilter {
    #[serde(default)]
    artifact_types: Vec<String>,
    artifact_status: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListImageReferrersInput {
    registry_id: Option<String>,
    repository_name: String,
    subject_id: SubjectId,
    #[serde(default)]
    filter: ReferrersFilter,
    next_token: Option<String>,
    max_results: Option<i64>,
}

/// ECR's `ImageReferrer`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReferrerOut {
    digest: String,
    media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
    artifact_status: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListImageReferrersOutput {
    referrers: Vec<ReferrerOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

/// The most annotation bytes one `ListImageReferrers` page carries: each referrer may have up
/// to a manifest's worth, so a page of 50 is also cut by size (the rest on the next page).
const REFERRERS_PAGE_BYTES: usize = MAX_MANIFEST_BYTES;

/// `ListImageReferrers`: the manifests whose `subject` is the digest, oldest first, filtered
/// by artifact type; pages of `maxResults` (at most 50).
async fn list_image_referrers(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let input: ListImageReferrersInput = input(body)?;
    ecr.registry_id(input.registry_id.as_deref())?;
    let repo = repository_name("repositoryName", &input.repository_name)?;
    let subject: Digest = input.subject_id.image_digest.parse().map_err(|e| {
        EcrError::invalid(format!("subjectId.imageDigest '{}' is not a digest ({e})", input.subject_id.image_digest))
    })?;
    let want = max_results(input.max_results, 50)?.unwrap_or(50);
    let types = input.filter.artifact_types;
    if types.len() > 5 || types.iter().any(|t| t.is_empty() || t.len() > 255) {
        return Err(EcrError::invalid("filter.artifactTypes: give at most 5, each 1 to 255 characters"));
    }
    let active = match input.filter.artifact_status.as_deref() {
        None | Some("ACTIVE" | "ANY") => true,
        Some("ARCHIVED" | "ACTIVATING") => false,
        Some(other) => {
            return Err(EcrError::invalid(format!(
                "filter.artifactStatus {other:?}: give ACTIVE, ARCHIVED, ACTIVATING or ANY"
            )));
        }
    };
    let mut last = match input.next_token {
        Some(t) if t.parse::<Digest>().is_err() => {
            return Err(EcrError::invalid("nextToken is not one this operation gave; start again without it"));
        }
        other => other,
    };
    ecr.allow("ecr:ListImageReferrers", Some(&repo)).await?;
    existing(ecr, &repo).await?;
    let one_type = (types.len() == 1).then(|| types[0].as_str());
    let mut referrers = Vec::new();
    let mut bytes = 0usize;
    let mut next_token = None;
    if !active {
        // Berth has no archive: nothing is ARCHIVED or ACTIVATING.
        return output(&ListImageReferrersOutput { referrers, next_token });
    }
    'pages: loop {
        let (found, more) =
            ecr.reg.referrers(&repo, &subject, one_type, last.clone()).await.map_err(|e| api_for(ecr, &repo, e))?;
        let Some(tail) = found.last() else { break };
        let tail = tail.digest.to_string();
        for r in found {
            let admitted = types.is_empty() || r.artifact_type.as_ref().is_some_and(|t| types.contains(t));
            if !admitted {
                continue;
            }
            let size: usize = r.annotations.iter().flatten().map(|(k, v)| k.len() + v.len()).sum();
            if referrers.len() == want || (!referrers.is_empty() && bytes + size > REFERRERS_PAGE_BYTES) {
                next_token = referrers.last().map(|r: &ReferrerOut| r.digest.clone());
                break 'pages;
            }
            bytes += size;
            referrers.push(ReferrerOut {
                digest: r.digest.to_string(),
                media_type: r.media_type,
                artifact_type: r.artifact_type,
                size: r.size,
                annotations: r.annotations,
                artifact_status: "ACTIVE",
            });
        }
        if !more {
            break;
        }
        last = Some(tail);
    }
    output(&ListImageReferrersOutput { referrers, next_token })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(digest: Option<&str>, tag: Option<&str>) -> ImageId {
        ImageId { image_digest: digest.map(str::to_owned), image_tag: tag.map(str::to_owned) }
    }

    #[test]
    fn image_ids_fail_with_ecrs_codes() {
        let d = Digest::sha256_of(b"x").to_string();
        assert_eq!(wanted(&id(None, None)).unwrap_err().failure_code, "MissingDigestAndTag");
        assert_eq!(wanted(&id(Some("sha256:zz"), None)).unwrap_err().failure_code, "InvalidImageDigest");
        assert_eq!(wanted(&id(None, Some("-bad"))).unwrap_err().failure_code, "InvalidImageTag");
        assert!(matches!(wanted(&id(Some(&d), Some("v1"))), Ok(Wanted::Both(_, _))));
        assert!(matches!(wanted(&id(None, Some("v1"))), Ok(Wanted::Tag(_))));
        assert_eq!(id(None, Some("v1")).describe(), "{imageDigest:null, imageTag:'v1'}");
        assert!(image_ids(&[]).is_err());
        assert!(image_ids(&vec![id(None, Some("v1")); 101]).is_err());
        assert!(image_ids(&vec![id(None, Some("v1")); 100]).is_ok());
    }

    #[test]
    fn list_tokens_are_checked_not_trusted() {
        let d = Digest::sha256_of(b"x").to_string();
        assert_eq!(list_token(&format!("{d} v1")), Some((d.clone(), "v1".into())));
        assert_eq!(list_token(&format!("{d} ")), Some((d.clone(), String::new())));
        assert_eq!(list_token("sha256:nothex v1"), None);
        assert_eq!(list_token(&d), None);
        assert_eq!(list_token(&format!("{d} -bad")), None);
    }
}
