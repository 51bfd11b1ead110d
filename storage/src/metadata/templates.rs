//! Repository creation templates (ECR's `CreateRepositoryCreationTemplate`): the settings a
//! repository created under a prefix starts with. The store keeps them as given; what they
//! mean (the prefix grammar, which one applies) is the registry's (`rules::templates`).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use berth_oci::RepoName;

use super::NewRepository;
use crate::error::{Error, Result};

/// One stored template, validated by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRecord {
    /// `ROOT` or a namespace without a trailing `/`; unique.
    pub prefix: String,
    pub description: String,
    /// ECR's `imageTagMutability` name and its exclusion filters (wildcards).
    pub tag_mutability: String,
    pub tag_mutability_exclusions: Vec<String>,
    /// The key name new repositories get; `None`: the registry's default key.
    pub key_name: Option<String>,
    /// The lifecycle policy and repository policy JSON, as given.
    pub lifecycle_policy: Option<String>,
    pub repository_policy: Option<String>,
    /// Resource tags `(Key, Value)`, in the order given.
    pub resource_tags: Vec<(String, String)>,
    /// ECR's `appliedFor` names (`CREATE_ON_PUSH`, `PULL_THROUGH_CACHE`, `REPLICATION`).
    pub applied_for: Vec<String>,
    /// Unix seconds; `create_template` sets both, `update_template` the second.
    pub created_at: i64,
    pub updated_at: i64,
}

/// Repository creation templates.
#[async_trait]
pub trait Templates: Send + Sync {
    /// Stores a new template (its times set to now); `false` when one with its prefix exists
    /// (nothing is changed).
    async fn create_template(&self, template: &TemplateRecord) -> Result<bool>;
    /// The template with `prefix`.
    async fn template(&self, prefix: &str) -> Result<Option<TemplateRecord>>;
    /// Every template, by prefix (byte order).
    async fn templates(&self) -> Result<Vec<TemplateRecord>>;
    /// Replaces the settings of the template with `template.prefix` (its `created_at` kept,
    /// `updated_at` set to now); `false` when there is none.
    async fn update_template(&self, template: &TemplateRecord) -> Result<bool>;
    /// Deletes the template with `prefix`, returning it; `None` when there was none.
    async fn delete_template(&self, prefix: &str) -> Result<Option<TemplateRecord>>;
    /// The settings repository `repo` has now, in the shape it was created with (key, tag
    /// mutability, lifecycle policy, repository policy, resource tags by key); `None` when it
    /// does not exist. One snapshot.
    async fn repository_setup(&self, repo: &RepoName) -> Result<Option<NewRepository>>;
}

/// The `resource_tags` column: ECR's `[{"Key": .., "Value": ..}]`.
#[derive(Serialize, Deserialize)]
struct TagColumn {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Value")]
    value: String,
}

/// A list of strings as its JSON column.
pub(crate) fn json_list(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

/// Resource tags as their JSON column.
pub(crate) fn tags_column(tags: &[(String, String)]) -> String {
    let tags: Vec<TagColumn> =
        tags.iter().map(|(key, value)| TagColumn { key: key.clone(), value: value.clone() }).collect();
    serde_json::to_string(&tags).unwrap_or_else(|_| "[]".into())
}

/// A JSON list column read back.
pub(crate) fn list_from_column(what: &str, text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("{what} {text:?}: {e}")))
}

/// A `resource_tags` column read back.
pub(crate) fn tags_from_column(what: &str, text: &str) -> Result<Vec<(String, String)>> {
    let tags: Vec<TagColumn> =
        serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("{what} {text:?}: {e}")))?;
    Ok(tags.into_iter().map(|t| (t.key, t.value)).collect())
}

/// A template's columns as read, in [`TEMPLATE_COLUMNS`](super::sql::TEMPLATE_COLUMNS) order.
pub(crate) struct TemplateColumns {
    pub prefix: String,
    pub description: String,
    pub tag_mutability: String,
    pub tag_mutability_exclusions: String,
    pub key_name: Option<String>,
    pub lifecycle_policy: Option<String>,
    pub repository_policy: Option<String>,
    pub resource_tags: String,
    pub applied_for: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl TemplateColumns {
    pub(crate) fn into_record(self) -> Result<TemplateRecord> {
        let what = |column: &str| format!("template {} {column}", self.prefix);
        Ok(TemplateRecord {
            tag_mutability_exclusions: list_from_column(
                &what("tag_mutability_exclusions"),
                &self.tag_mutability_exclusions,
            )?,
            resource_tags: tags_from_column(&what("resource_tags"), &self.resource_tags)?,
            applied_for: list_from_column(&what("applied_for"), &self.applied_for)?,
            prefix: self.prefix,
            description: self.description,
            tag_mutability: self.tag_mutability,
            key_name: self.key_name,
            lifecycle_policy: self.lifecycle_policy,
            repository_policy: self.repository_policy,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}
