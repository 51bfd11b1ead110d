//! A repository's settings as ECR's `DescribeRepositories` shows them, ECR's
//! `PutImageTagMutability`, and the guard every manifest push carries so that it cannot move
//! a tag the repository holds immutable.
//!
//! Where the check sits: the setting is read and the tags it holds immutable decided here
//! (`rules::mutability`), outside the store's transaction; the store then checks, in the
//! transaction that writes the tags, that the setting is still the one read and that no
//! immutable tag names another manifest ([`TagGuard`]). A setting changed in between makes
//! the store refuse, and the push is decided again under the new one.

use berth_oci::{RepoName, Tag};
use berth_storage::metadata::{RepositorySettings, TagGuard, TagMutabilitySetting};
use serde::{Deserialize, Serialize};

use super::Registry;
use crate::error::{ApiError, ApiResult};
use crate::rules::mutability::{Mode, TagMutability};

/// ECR's only kind of exclusion filter.
pub const WILDCARD: &str = "WILDCARD";

/// One of ECR's `imageTagMutabilityExclusionFilters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExclusionFilter {
    pub filter_type: String,
    pub filter: String,
}

/// ECR's `PutImageTagMutability` request, without the repository (named by the path, or by
/// the ECR adapter's `repositoryName`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutTagMutability {
    pub image_tag_mutability: String,
    #[serde(default)]
    pub image_tag_mutability_exclusion_filters: Vec<ExclusionFilter>,
}

impl PutTagMutability {
    /// Checks the request as ECR does; the message names the field at fault.
    pub fn checked(self) -> ApiResult<TagMutability> {
        let mode: Mode = self.image_tag_mutability.parse().map_err(ApiError::Invalid)?;
        let mut exclusions = Vec::with_capacity(self.image_tag_mutability_exclusion_filters.len());
        for (i, f) in self.image_tag_mutability_exclusion_filters.into_iter().enumerate() {
            if f.filter_type != WILDCARD {
                return Err(ApiError::Invalid(format!(
                    "imageTagMutabilityExclusionFilters[{i}].filterType {:?} is not supported: use {WILDCARD:?}",
                    f.filter_type
                )));
            }
            exclusions.push(f.filter);
        }
        TagMutability::new(mode, exclusions).map_err(ApiError::Invalid)
    }
}

/// How a repository's blobs are stored (ECR's `encryptionConfiguration`): sealed with
/// AES-256-GCM under a key name, or plaintext (`encryptionType` `NONE`, which ECR does not
/// have).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionView {
    pub encryption_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
}

/// A repository's settings, in `DescribeRepositories`' words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsView {
    pub repository_name: String,
    /// Unix seconds (ECR's JSON timestamps are epoch seconds).
    pub created_at: i64,
    pub image_tag_mutability: String,
    pub image_tag_mutability_exclusion_filters: Vec<ExclusionFilter>,
    pub encryption_configuration: EncryptionView,
}

impl From<RepositorySettings> for SettingsView {
    fn from(s: RepositorySettings) -> SettingsView {
        SettingsView {
            repository_name: s.name.to_string(),
            created_at: s.created_at,
            image_tag_mutability: s.tag_mutability.mode,
            image_tag_mutability_exclusion_filters: s
                .tag_mutability
                .exclusions
                .into_iter()
                .map(|filter| ExclusionFilter { filter_type: WILDCARD.into(), filter })
                .collect(),
            encryption_configuration: match s.key {
                Some(name) => EncryptionView { encryption_type: "AES256", key_name: Some(name) },
                None => EncryptionView { encryption_type: "NONE", key_name: None },
            },
        }
    }
}

/// The rule of a stored setting (checked when it was stored).
fn rule_of(repo: &RepoName, s: &TagMutabilitySetting) -> ApiResult<TagMutability> {
    let mode: Mode = s.mode.parse().map_err(|e| ApiError::Internal(format!("repository {repo}: {e}")))?;
    Ok(TagMutability { mode, exclusions: s.exclusions.clone() })
}

fn no_repository(repo: &RepoName) -> ApiError {
    ApiError::NotFound(format!("repository {repo} does not exist"))
}

impl Registry {
    /// `DescribeRepositories` for one repository.
    pub async fn repository_settings(&self, repo: &RepoName) -> ApiResult<SettingsView> {
        let settings = self.meta.repository_settings(repo).await?.ok_or_else(|| no_repository(repo))?;
        Ok(settings.into())
    }

    /// `PutImageTagMutability`: applies to pushes from now on (tags already moved stay where
    /// they are); answers the settings as they are now.
    pub async fn put_tag_mutability(&self, repo: &RepoName, setting: &TagMutability) -> ApiResult<SettingsView> {
        if !self.meta.set_tag_mutability(repo, setting.mode.as_str(), &setting.exclusions).await? {
            return Err(no_repository(repo));
        }
        tracing::info!(repo.name = %repo, tag_mutability = %setting.mode,
            tag_mutability.exclusions = ?setting.exclusions, "tag mutability set");
        self.repository_settings(repo).await
    }

    /// The guard of a push of `tags` to `repo`: the repository's setting now and the tags it
    /// holds immutable. No tags: nothing to guard (the store checks nothing).
    pub(crate) async fn tag_guard(&self, repo: &RepoName, tags: &[Tag]) -> ApiResult<TagGuard> {
        if tags.is_empty() {
            return Ok(TagGuard::default());
        }
        let Some(settings) = self.meta.repository_settings(repo).await? else {
            // A repository this push creates has no tag to protect.
            return Ok(TagGuard::default());
        };
        let rule = rule_of(repo, &settings.tag_mutability)?;
        let immutable = tags.iter().filter(|t| rule.is_immutable(t.as_str())).cloned().collect();
        Ok(TagGuard { setting: settings.tag_mutability, immutable })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> ApiResult<TagMutability> {
        serde_json::from_value::<PutTagMutability>(json).map_err(|e| ApiError::Invalid(e.to_string()))?.checked()
    }

    #[test]
    fn put_requests_are_checked_as_ecr_does() {
        let ok = request(serde_json::json!({"imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
            "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "latest"}]}))
        .unwrap();
        assert_eq!(ok, TagMutability { mode: Mode::ImmutableWithExclusion, exclusions: vec!["latest".into()] });
        assert_eq!(request(serde_json::json!({"imageTagMutability": "IMMUTABLE"})).unwrap().mode, Mode::Immutable);
        let message = |json| request(json).unwrap_err().to_string();
        assert!(message(serde_json::json!({"imageTagMutability": "FROZEN"})).contains("IMMUTABLE_WITH_EXCLUSION"));
        assert!(
            message(serde_json::json!({"imageTagMutability": "MUTABLE_WITH_EXCLUSION",
                "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "v*"},
                {"filterType": "REGEX", "filter": "v.*"}]}))
            .contains("imageTagMutabilityExclusionFilters[1].filterType \"REGEX\"")
        );
        assert!(
            message(serde_json::json!({"imageTagMutability": "IMMUTABLE_WITH_EXCLUSION"})).contains("at least one")
        );
    }

    #[test]
    fn settings_read_as_describe_repositories_shows_them() {
        let view: SettingsView = RepositorySettings {
            name: "team/app".parse().unwrap(),
            created_at: 1_700_000_000,
            key: Some("payments".into()),
            tag_mutability: TagMutabilitySetting {
                mode: "MUTABLE_WITH_EXCLUSION".into(),
                exclusions: vec!["v*".into()],
            },
            scan_on_push: false,
        }
        .into();
        assert_eq!(
            serde_json::to_value(&view).unwrap(),
            serde_json::json!({"repositoryName": "team/app", "createdAt": 1_700_000_000,
                "imageTagMutability": "MUTABLE_WITH_EXCLUSION",
                "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "v*"}],
                "encryptionConfiguration": {"encryptionType": "AES256", "keyName": "payments"}})
        );
    }
}
