//! Pushing, reading and deleting manifests; tags, the catalog and referrers.

use berth_oci::manifest::{self, MAX_MANIFEST_BYTES};
use berth_oci::{Digest, Reference, RepoName, Tag};
use berth_storage::metadata::{ManifestRecord, NewManifest, Origin, Page, Referrer, RequiredContent};

use std::sync::Arc;

use super::cache::Manifest;
use super::{MAX_PAGE, Registry};
use crate::error::{ApiError, ApiResult};

/// What a manifest push recorded.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub digest: Digest,
    pub subject: Option<Digest>,
    pub tags: Vec<Tag>,
}

/// One page of a listing and whether more entries follow.
#[derive(Debug, Clone)]
pub struct Listing {
    pub entries: Vec<String>,
    pub more: bool,
}

impl Registry {
    /// Validates and stores a manifest pushed to `reference`, tagging it with the reference's
    /// tag (if any) and `extra_tags` (end-7b `?tag=`).
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Vec<u8>,
        extra_tags: Vec<Tag>,
        origin: &Origin,
    ) -> ApiResult<Pushed> {
        if body.len() > MAX_MANIFEST_BYTES {
            return Err(ApiError::ManifestTooLarge { limit: MAX_MANIFEST_BYTES });
        }
        let parsed = manifest::parse(content_type, &body).map_err(|e| ApiError::ManifestInvalid(e.to_string()))?;
        let digest = match reference {
            Reference::Digest(expected) => {
                let actual = Digest::of(expected.algorithm(), &body);
                if &actual != expected {
                    return Err(ApiError::DigestInvalid(format!("the manifest has digest {actual}, not {expected}")));
                }
                actual
            }
            Reference::Tag(_) => Digest::sha256_of(&body),
        };
        let mut tags = extra_tags;
        if let Reference::Tag(t) = reference {
            tags.insert(0, t.clone());
        }
        let mut seen = std::collections::HashSet::new();
        tags.retain(|t| seen.insert(t.clone()));
        let required = |ds: &[manifest::Descriptor]| -> Vec<RequiredContent> {
            ds.iter().map(|d| RequiredContent { digest: d.digest.clone(), size: d.size }).collect()
        };
        let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
        let mut record = NewManifest {
            repo: repo.clone(),
            digest: digest.clone(),
            media_type: parsed.media_type.clone(),
            artifact_type: parsed.artifact_type.clone(),
            content: body,
            subject: subject.clone(),
            annotations: parsed.annotations.clone(),
            blobs: required(&parsed.blobs),
            manifests: required(&parsed.manifests),
            tags: tags.clone(),
            mutability: Default::default(),
            references: Default::default(),
        };
        let covering = self.quotas_for(repo).await?;
        self.check_manifest_quota(&covering, repo, &digest).await?;
        let references_nothing = record.blobs.is_empty() && record.manifests.is_empty();
        // A manifest that references content needs a repository holding it; one referencing
        // nothing may be the repository's first content, created here with its plan. With
        // `registry.create_on_push` off, a push to a missing repository is refused by name.
        if (references_nothing || !self.settings.create_on_push) && self.meta.repository_key(repo).await?.is_none() {
            let plan = self.plan_for_push(repo).await?;
            if references_nothing && self.meta.create_repository(repo, &plan.new, origin).await?.created {
                tracing::info!(repo.name = %repo, template = ?plan.template, "repository created by a push");
            }
        }
        let stored = self.put_guarded(&mut record, origin).await;
        self.manifests.invalidate(repo);
        stored?;
        self.events.wake();
        tracing::info!(repo.name = %repo, manifest.digest = %digest, manifest.media_type = %parsed.media_type,
            manifest.tags = ?tags.iter().map(Tag::as_str).collect::<Vec<_>>(), "manifest pushed");
        self.note_quota_use(&covering, repo, origin).await;
        Ok(Pushed { digest, subject, tags })
    }

    /// Stores `record` with the guard of its tags (`service::repository_settings`), deciding
    /// again when the repository's tag mutability changed in between (a few times at most:
    /// the setting changes at an administrator's pace).
    pub(crate) async fn put_guarded(&self, record: &mut NewManifest, origin: &Origin) -> ApiResult<()> {
        let mut attempt = 1;
        loop {
            record.mutability = self.tag_guard(&record.repo, &record.tags).await?;
            match self.meta.put_manifest(record, origin).await {
                Err(berth_storage::Error::MutabilityChanged(_)) if attempt < 3 => attempt += 1,
                other => return Ok(other?),
            }
        }
    }

    pub async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> ApiResult<Arc<Manifest>> {
        let seen = match self.manifests.get(repo, reference) {
            Ok(hit) => return Ok(hit),
            Err(generation) => generation,
        };
        let record = self.meta.get_manifest(repo, reference).await?.ok_or(ApiError::ManifestUnknown)?;
        let ManifestRecord { digest, media_type, content } = record;
        let manifest = Arc::new(Manifest { digest, media_type, content: content.into() });
        self.manifests.insert(repo, reference, seen, manifest.clone());
        Ok(manifest)
    }

    /// Deletes a manifest (by digest, with its tags) or a tag (by tag, leaving the manifest).
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference, origin: &Origin) -> ApiResult<()> {
        if !self.settings.delete_manifests {
            return Err(ApiError::Unsupported("manifest deletion is disabled on this registry".into()));
        }
        let deleted = match reference {
            Reference::Digest(d) => self.meta.delete_manifest(repo, d, origin).await,
            Reference::Tag(t) => self.meta.delete_tag(repo, t, origin).await,
        };
        self.manifests.invalidate(repo);
        let deleted = deleted?;
        if deleted {
            self.events.wake();
            tracing::info!(repo.name = %repo, manifest.reference = %reference, "manifest deleted");
            Ok(())
        } else {
            Err(ApiError::ManifestUnknown)
        }
    }

    /// Tags of `repo`, sorted, one page.
    pub async fn tags(&self, repo: &RepoName, last: Option<String>, n: Option<usize>) -> ApiResult<Listing> {
        let (page, want) = page(last, n);
        let entries = self.meta.list_tags(repo, &page).await?.ok_or(ApiError::NameUnknown)?;
        Ok(listing(entries, want))
    }

    /// Repository names, sorted, one page.
    pub async fn catalog(&self, last: Option<String>, n: Option<usize>) -> ApiResult<Listing> {
        let (page, want) = page(last, n);
        Ok(listing(self.meta.list_repositories(&page).await?, want))
    }

    /// One page of the referrers of `subject`: at most [`REFERRERS_PAGE`], those after the
    /// referrer `last`; `more` when another page follows.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        last: Option<String>,
    ) -> ApiResult<(Vec<Referrer>, bool)> {
        let page = Page { last, limit: REFERRERS_PAGE + 1 };
        let mut found = self.meta.referrers(repo, subject, artifact_type, &page).await?;
        let more = found.len() > REFERRERS_PAGE;
        found.truncate(REFERRERS_PAGE);
        Ok((found, more))
    }
}

/// The most referrers one answer lists; more are on the pages its `Link` leads to. Each
/// descriptor may carry up to a manifest's worth of annotations, so the answer is also cut
/// by size (`http::listing`).
pub const REFERRERS_PAGE: usize = 1_000;

/// Asks the store for one entry more than wanted, to learn whether another page follows.
fn page(last: Option<String>, n: Option<usize>) -> (Page, usize) {
    let want = n.unwrap_or(MAX_PAGE).min(MAX_PAGE);
    (Page { last, limit: want + 1 }, want)
}

fn listing(mut entries: Vec<String>, want: usize) -> Listing {
    let more = entries.len() > want;
    entries.truncate(want);
    Listing { entries, more }
}
