//! Repository creation templates (ECR's `*RepositoryCreationTemplate` operations), ECR's
//! `CreateRepository`, and the settings every new repository starts with.
//!
//! Every place a repository comes to be asks [`Registry::creation_plan`] for its settings:
//! a push (upload start, monolithic upload, mount, manifest) through
//! [`Registry::plan_for_push`], which also refuses when `registry.create_on_push` is off and
//! nothing covers the name, and `CreateRepository`, whose explicit fields win over the plan.
//! The plan is the one template that applies (`rules::templates`): the stored template with
//! the longest matching prefix applied for the way of creation, or the first matching rule of
//! `[[encryption.repositories]]` (a configuration template setting only the key) when its
//! prefix is longer. Templates are read when a repository is new only, so they are not cached.
//!
//! The key a push's bytes are sealed with is chosen when the upload starts
//! ([`Registry::upload_key`]); the repository is created at commit with the plan in effect
//! then, and when that plan's key differs (a template changed in between) the commit is
//! refused and the client pushes again, so a repository never holds blobs sealed for a key
//! other than its own.

use berth_auth::policy::{PolicyDocument, PolicyKind};
use berth_oci::RepoName;
use berth_storage::metadata::{NewRepository, Origin, TemplateRecord, unix_now};
use serde::{Deserialize, Serialize};

use super::Registry;
use crate::error::{ApiError, ApiResult};
use crate::rules::mutability::{Mode, TagMutability};
use crate::rules::templates::{self as rules, AppliedFor, Prefix};

/// ECR's `encryptionConfiguration`: `AES256` is the registry's default key
/// (`encryption.default_key`); `KMS` names a Berth key in `kmsKey` (`berth keys list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncryptionConfiguration {
    pub encryption_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key: Option<String>,
}

/// ECR's resource tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceTag {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "Value", default)]
    pub value: String,
}

/// ECR's `imageTagMutabilityExclusionFilters` entry (`filterType` is always `WILDCARD`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExclusionFilter {
    pub filter_type: String,
    pub filter: String,
}

/// Where a template comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateSource {
    /// Stored through the admin API or `berth templates put`.
    Api,
    /// A rule of `[[encryption.repositories]]`: only the key set; changed in the file.
    Config,
}

/// A template as ECR describes it (`RepositoryCreationTemplate`), with its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateView {
    pub prefix: String,
    pub description: String,
    pub encryption_configuration: EncryptionConfiguration,
    pub resource_tags: Vec<ResourceTag>,
    pub image_tag_mutability: String,
    pub image_tag_mutability_exclusion_filters: Vec<ExclusionFilter>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle_policy: Option<String>,
    pub applied_for: Vec<AppliedFor>,
    /// Unix seconds; none for a configuration rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
    pub source: TemplateSource,
}

/// The body of `CreateRepositoryCreationTemplate` / `UpdateRepositoryCreationTemplate`. On
/// an update, a field left out keeps its value; an empty policy text removes the policy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateInput {
    pub prefix: Option<String>,
    pub description: Option<String>,
    pub encryption_configuration: Option<EncryptionConfiguration>,
    pub resource_tags: Option<Vec<ResourceTag>>,
    pub image_tag_mutability: Option<String>,
    pub image_tag_mutability_exclusion_filters: Option<Vec<ExclusionFilter>>,
    pub repository_policy: Option<String>,
    pub lifecycle_policy: Option<String>,
    pub applied_for: Option<Vec<String>>,
    /// ECR's role for creating repositories: Berth creates them itself, so only absent or empty.
    pub custom_role_arn: Option<String>,
}

/// The body of ECR's `CreateRepository`. Fields left out come from the template a push to
/// the name would use.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRepositoryInput {
    pub repository_name: String,
    /// Accepted for ECR clients; this registry is the only one.
    pub registry_id: Option<String>,
    pub image_tag_mutability: Option<String>,
    pub image_tag_mutability_exclusion_filters: Option<Vec<ExclusionFilter>>,
    pub encryption_configuration: Option<EncryptionConfiguration>,
    pub tags: Option<Vec<ResourceTag>>,
    /// ECR's `imageScanningConfiguration`: `scanOnPush` is stored and answered (Berth does
    /// not scan images).
    pub image_scanning_configuration: Option<ImageScanningConfiguration>,
}

/// ECR's `imageScanningConfiguration`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageScanningConfiguration {
    #[serde(default)]
    pub scan_on_push: bool,
}

/// ECR's `Repository`, as `CreateRepository` answers.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryView {
    pub repository_arn: String,
    pub repository_name: String,
    pub created_at: i64,
    pub image_tag_mutability: String,
    pub image_tag_mutability_exclusion_filters: Vec<ExclusionFilter>,
    /// The key the repository's blobs are sealed with; absent for a plaintext repository
    /// (every `encryptionType` of ECR's means encryption).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_configuration: Option<EncryptionConfiguration>,
}

/// The settings a new repository gets, and the template they come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub new: NewRepository,
    /// The prefix and source of the template applied; `None`: no template, the defaults.
    pub template: Option<(String, TemplateSource)>,
}

/// Checks a lifecycle policy's text as `PutLifecyclePolicy` does (`rules::lifecycle`), so a
/// template never gives a repository a policy that could not be put on it.
pub fn validate_lifecycle_policy(text: &str) -> Result<(), String> {
    crate::rules::lifecycle::Policy::parse(text).map(|_| ())
}

/// A repository policy's text checked by the parser `PUT /api/v1/repositories/<name>/policy` uses.
fn validate_repository_policy(text: &str) -> Result<(), String> {
    if text.len() > rules::MAX_REPOSITORY_POLICY {
        return Err(format!("the repository policy is longer than {} characters", rules::MAX_REPOSITORY_POLICY));
    }
    PolicyDocument::parse(text, PolicyKind::Repository).map(|_| ()).map_err(|e| format!("repository policy: {e}"))
}

fn invalid(message: String) -> ApiError {
    ApiError::Invalid(message)
}

/// Exclusion filters as ECR writes them, checked to be wildcards.
fn filters_of(filters: &[ExclusionFilter]) -> ApiResult<Vec<String>> {
    filters
        .iter()
        .map(|f| {
            if f.filter_type == "WILDCARD" {
                Ok(f.filter.clone())
            } else {
                Err(invalid(format!("filterType {:?}: the only filter type is WILDCARD", f.filter_type)))
            }
        })
        .collect()
}

fn filters_view(filters: &[String]) -> Vec<ExclusionFilter> {
    filters.iter().map(|f| ExclusionFilter { filter_type: "WILDCARD".into(), filter: f.clone() }).collect()
}

/// A tag mutability with its filters, checked as ECR does.
fn mutability(mode: &str, filters: Vec<String>) -> ApiResult<TagMutability> {
    let mode: Mode = mode.parse().map_err(invalid)?;
    TagMutability::new(mode, filters).map_err(invalid)
}

fn tags_of(tags: &[ResourceTag]) -> ApiResult<Vec<(String, String)>> {
    let tags: Vec<(String, String)> = tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect();
    rules::resource_tags(&tags).map_err(invalid)?;
    Ok(tags)
}

fn tags_view(tags: &[(String, String)]) -> Vec<ResourceTag> {
    tags.iter().map(|(key, value)| ResourceTag { key: key.clone(), value: value.clone() }).collect()
}

fn encryption_view(key: Option<&str>) -> EncryptionConfiguration {
    match key {
        None => EncryptionConfiguration { encryption_type: "AES256".into(), kms_key: None },
        Some(k) => EncryptionConfiguration { encryption_type: "KMS".into(), kms_key: Some(k.to_owned()) },
    }
}

/// The Berth key name an ECR `kmsKey` names: the key name itself, or the last segment of a
/// KMS-style ARN (`arn:aws:kms:<region>:<account>:key/<name>`), as Berth answers it.
pub fn kms_key_name(given: &str) -> &str {
    if given.starts_with("arn:") { given.rsplit(['/', ':']).next().unwrap_or(given) } else { given }
}

/// `Some(text)`, or `None` for an empty text (ECR's policies may be given as "").
fn policy_text(text: &str) -> Option<String> {
    if text.trim().is_empty() { None } else { Some(text.to_owned()) }
}

fn view(t: &TemplateRecord) -> TemplateView {
    TemplateView {
        prefix: t.prefix.clone(),
        description: t.description.clone(),
        encryption_configuration: encryption_view(t.key_name.as_deref()),
        resource_tags: tags_view(&t.resource_tags),
        image_tag_mutability: t.tag_mutability.clone(),
        image_tag_mutability_exclusion_filters: filters_view(&t.tag_mutability_exclusions),
        repository_policy: t.repository_policy.clone(),
        lifecycle_policy: t.lifecycle_policy.clone(),
        applied_for: t.applied_for.iter().filter_map(|a| a.parse().ok()).collect(),
        created_at: Some(t.created_at),
        updated_at: Some(t.updated_at),
        source: TemplateSource::Api,
    }
}

fn no_template(prefix: &str) -> ApiError {
    ApiError::NotFound(format!("no repository creation template has the prefix {prefix}"))
}

fn parse_prefix(prefix: &str) -> ApiResult<Prefix> {
    prefix.parse().map_err(invalid)
}

/// A stored template read back as rules use it (prefix and `appliedFor` parsed).
struct Stored {
    prefix: Prefix,
    applied_for: Vec<AppliedFor>,
    record: TemplateRecord,
}

impl Registry {
    /// Every template: the stored ones by prefix, then the configuration's rules in file order.
    pub async fn templates(&self) -> ApiResult<Vec<TemplateView>> {
        let mut out: Vec<TemplateView> = self.meta.templates().await?.iter().map(view).collect();
        out.extend(self.config_templates());
        Ok(out)
    }

    /// The template with `prefix` (normalized): the stored one, else a configuration rule's.
    pub async fn template(&self, prefix: &str) -> ApiResult<TemplateView> {
        let prefix = parse_prefix(prefix)?;
        if let Some(t) = self.meta.template(prefix.as_str()).await? {
            return Ok(view(&t));
        }
        self.config_templates()
            .into_iter()
            .find(|t| t.prefix == prefix.as_str())
            .ok_or_else(|| no_template(prefix.as_str()))
    }

    /// `CreateRepositoryCreationTemplate`: refused when a stored template has the prefix.
    pub async fn create_template(&self, input: &TemplateInput) -> ApiResult<TemplateView> {
        let prefix =
            input.prefix.as_deref().ok_or_else(|| invalid("prefix is required (ROOT or a namespace)".into()))?;
        let prefix = parse_prefix(prefix)?;
        if input.applied_for.is_none() {
            return Err(invalid("appliedFor is required, e.g. [\"CREATE_ON_PUSH\"]".into()));
        }
        let empty = TemplateRecord {
            prefix: prefix.as_str().to_owned(),
            description: String::new(),
            tag_mutability: Mode::Mutable.as_str().into(),
            tag_mutability_exclusions: Vec::new(),
            key_name: None,
            lifecycle_policy: None,
            repository_policy: None,
            resource_tags: Vec::new(),
            applied_for: Vec::new(),
            created_at: 0,
            updated_at: 0,
        };
        let record = self.merge(empty, input).await?;
        if !self.meta.create_template(&record).await? {
            return Err(ApiError::Conflict(format!(
                "a repository creation template with the prefix {prefix} exists already: update it, or delete it first"
            )));
        }
        tracing::info!(template.prefix = %prefix, "repository creation template created");
        self.template(prefix.as_str()).await
    }

    /// `UpdateRepositoryCreationTemplate`: the fields given replace the stored ones.
    pub async fn update_template(&self, prefix: &str, input: &TemplateInput) -> ApiResult<TemplateView> {
        let prefix = self.same_prefix(prefix, input)?;
        let current = match self.meta.template(prefix.as_str()).await? {
            Some(t) => t,
            None => return Err(self.not_stored(&prefix)),
        };
        let record = self.merge(current, input).await?;
        if !self.meta.update_template(&record).await? {
            return Err(no_template(prefix.as_str()));
        }
        tracing::info!(template.prefix = %prefix, "repository creation template updated");
        self.template(prefix.as_str()).await
    }

    /// Creates the template, or updates it when one with the prefix is stored; `true` when
    /// it was created (`berth templates put`).
    pub async fn put_template(&self, input: &TemplateInput) -> ApiResult<(bool, TemplateView)> {
        let prefix =
            input.prefix.as_deref().ok_or_else(|| invalid("prefix is required (ROOT or a namespace)".into()))?;
        let prefix = parse_prefix(prefix)?;
        if self.meta.template(prefix.as_str()).await?.is_some() {
            return Ok((false, self.update_template(prefix.as_str(), input).await?));
        }
        Ok((true, self.create_template(input).await?))
    }

    /// `DeleteRepositoryCreationTemplate`: returns the template deleted. Repositories created
    /// with it keep their settings.
    pub async fn delete_template(&self, prefix: &str) -> ApiResult<TemplateView> {
        let prefix = parse_prefix(prefix)?;
        match self.meta.delete_template(prefix.as_str()).await? {
            Some(t) => {
                tracing::info!(template.prefix = %prefix, "repository creation template deleted");
                Ok(view(&t))
            }
            None => Err(self.not_stored(&prefix)),
        }
    }

    /// The settings a repository named `repo` gets when created in way `way`: from the
    /// template that applies, else the defaults (the default key, `MUTABLE`, nothing else).
    pub async fn creation_plan(&self, repo: &RepoName, way: AppliedFor) -> ApiResult<Plan> {
        let stored = self.stored_templates().await?;
        let best = rules::select(&stored, repo.as_str(), way, |t| (&t.prefix, t.applied_for.as_slice()));
        // The first matching configuration rule, as before templates: it applies to every
        // way of creating a repository.
        let rule = self.crypt.rules.iter().find(|(prefix, _)| rules::config_rule_matches(prefix, repo.as_str()));
        let key_of = |name: Option<&str>| -> Option<String> {
            self.crypt.enabled.then(|| name.unwrap_or(&self.crypt.default_key).to_owned())
        };
        match (best, rule) {
            (best, Some((prefix, key))) if rules::config_rule_wins(best.map(|b| &b.prefix), prefix) => Ok(Plan {
                new: NewRepository::with_key(key_of(Some(key))),
                template: Some((prefix.trim_end_matches('/').to_owned(), TemplateSource::Config)),
            }),
            (Some(t), _) => {
                let r = &t.record;
                let new = NewRepository {
                    key: key_of(r.key_name.as_deref()),
                    tag_mutability: r.tag_mutability.clone(),
                    tag_mutability_exclusions: r.tag_mutability_exclusions.clone(),
                    lifecycle_policy: r.lifecycle_policy.clone(),
                    repository_policy: r.repository_policy.clone(),
                    resource_tags: r.resource_tags.clone(),
                    // ECR's templates have no scanning setting.
                    scan_on_push: false,
                };
                Ok(Plan { new, template: Some((r.prefix.clone(), TemplateSource::Api)) })
            }
            (None, _) => Ok(Plan { new: NewRepository::with_key(key_of(None)), template: None }),
        }
    }

    /// The plan of a push to `repo`, which does not exist: refused with `NAME_UNKNOWN` when
    /// pushes create no repositories (`registry.create_on_push = false`) and no template
    /// applied for `CREATE_ON_PUSH` covers the name.
    pub async fn plan_for_push(&self, repo: &RepoName) -> ApiResult<Plan> {
        let plan = self.creation_plan(repo, AppliedFor::CreateOnPush).await?;
        if plan.template.is_none() && !self.settings.create_on_push {
            return Err(ApiError::NotCreatedOnPush(format!(
                "repository {repo} does not exist, and this registry creates repositories on push only under a \
                 repository creation template applied for CREATE_ON_PUSH: create the repository first \
                 (CreateRepository), or a template whose prefix covers it"
            )));
        }
        Ok(plan)
    }

    /// ECR's `CreateRepository`: the fields given win, the others come from the template a
    /// push to the name would use. Refused (conflict) when the repository exists.
    pub async fn create_repository(&self, input: &CreateRepositoryInput, origin: &Origin) -> ApiResult<RepositoryView> {
        let name = &input.repository_name;
        let repo: RepoName = name
            .parse()
            .map_err(|e: berth_oci::name::NameError| ApiError::NameInvalid(format!("repositoryName {name:?}: {e}")))?;
        let mut new = self.creation_plan(&repo, AppliedFor::CreateOnPush).await?.new;
        match (&input.image_tag_mutability, &input.image_tag_mutability_exclusion_filters) {
            (Some(mode), filters) => {
                let filters = filters_of(filters.as_deref().unwrap_or_default())?;
                let m = mutability(mode, filters)?;
                new.tag_mutability = m.mode.as_str().into();
                new.tag_mutability_exclusions = m.exclusions;
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "imageTagMutabilityExclusionFilters needs imageTagMutability (IMMUTABLE_WITH_EXCLUSION or \
                     MUTABLE_WITH_EXCLUSION)"
                        .into(),
                ));
            }
            (None, None) => {}
        }
        if let Some(enc) = &input.encryption_configuration {
            if !self.crypt.enabled {
                // Asked for encryption that this registry would not give: say so rather than
                // create a plaintext repository the caller believes sealed.
                return Err(invalid(format!(
                    "encryptionConfiguration {}: encryption at rest is off on this registry (encryption.enabled = \
                     false), so its repositories store plaintext; leave encryptionConfiguration out",
                    enc.encryption_type
                )));
            }
            new.key = match self.key_of(enc).await? {
                Some(k) => Some(k),
                None => self.crypt.enabled.then(|| self.crypt.default_key.clone()),
            };
        }
        if let Some(tags) = &input.tags {
            new.resource_tags = tags_of(tags)?;
        }
        if let Some(scanning) = &input.image_scanning_configuration {
            new.scan_on_push = scanning.scan_on_push;
        }
        let created = self.meta.create_repository(&repo, &new, origin).await?;
        if !created.created {
            return Err(ApiError::Conflict(format!("the repository with name {repo} already exists in the registry")));
        }
        self.events.wake();
        tracing::info!(repo.name = %repo, key.name = ?new.key, "repository created");
        Ok(RepositoryView {
            repository_arn: self.auth.arns.repository(repo.as_str()),
            repository_name: repo.to_string(),
            created_at: unix_now(),
            image_tag_mutability: new.tag_mutability.clone(),
            image_tag_mutability_exclusion_filters: filters_view(&new.tag_mutability_exclusions),
            encryption_configuration: new
                .key
                .as_ref()
                .map(|k| EncryptionConfiguration { encryption_type: "KMS".into(), kms_key: Some(k.clone()) }),
        })
    }

    /// The stored templates, parsed; one that no longer parses is skipped with a warning
    /// (it cannot have been stored through the checks).
    async fn stored_templates(&self) -> ApiResult<Vec<Stored>> {
        let mut out = Vec::new();
        for record in self.meta.templates().await? {
            let parsed =
                record.prefix.parse::<Prefix>().and_then(|p| Ok((p, rules::applied_for(&record.applied_for)?)));
            match parsed {
                Ok((prefix, applied_for)) => out.push(Stored { prefix, applied_for, record }),
                Err(e) => tracing::warn!(template.prefix = %record.prefix, error = %e, "stored template skipped"),
            }
        }
        Ok(out)
    }

    /// The rules of `[[encryption.repositories]]` shown as templates.
    fn config_templates(&self) -> Vec<TemplateView> {
        self.crypt
            .rules
            .iter()
            .map(|(prefix, key)| TemplateView {
                prefix: prefix.trim_end_matches('/').to_owned(),
                description: format!(
                    "[[encryption.repositories]] prefix = {prefix:?}: names starting with it get key {key}"
                ),
                encryption_configuration: encryption_view(Some(key)),
                resource_tags: Vec::new(),
                image_tag_mutability: Mode::Mutable.as_str().into(),
                image_tag_mutability_exclusion_filters: Vec::new(),
                repository_policy: None,
                lifecycle_policy: None,
                applied_for: AppliedFor::ALL.to_vec(),
                created_at: None,
                updated_at: None,
                source: TemplateSource::Config,
            })
            .collect()
    }

    /// Refusal for a prefix with no stored template, pointing at the configuration when a
    /// rule there has it.
    fn not_stored(&self, prefix: &Prefix) -> ApiError {
        if self.crypt.rules.iter().any(|(p, _)| p.trim_end_matches('/') == prefix.as_str()) {
            return ApiError::Conflict(format!(
                "the template {prefix} is a rule of [[encryption.repositories]] in the configuration: change it there"
            ));
        }
        no_template(prefix.as_str())
    }

    /// The prefix of an update: the addressed one; a body naming another is refused.
    fn same_prefix(&self, prefix: &str, input: &TemplateInput) -> ApiResult<Prefix> {
        let prefix = parse_prefix(prefix)?;
        if let Some(given) = &input.prefix
            && parse_prefix(given)? != prefix
        {
            return Err(invalid(format!("the body's prefix {given} is not the template's, {prefix}")));
        }
        Ok(prefix)
    }

    /// `current` with the fields `input` gives, every field checked.
    async fn merge(&self, mut t: TemplateRecord, input: &TemplateInput) -> ApiResult<TemplateRecord> {
        if input.custom_role_arn.as_deref().is_some_and(|r| !r.is_empty()) {
            return Err(invalid(
                "customRoleArn: Berth creates repositories itself and assumes no role; leave it out".into(),
            ));
        }
        if let Some(d) = &input.description {
            rules::description(d).map_err(invalid)?;
            t.description = d.clone();
        }
        if let Some(enc) = &input.encryption_configuration {
            t.key_name = self.key_of(enc).await?;
        }
        if let Some(tags) = &input.resource_tags {
            t.resource_tags = tags_of(tags)?;
        }
        let mode = input.image_tag_mutability.clone().unwrap_or_else(|| t.tag_mutability.clone());
        let filters = match &input.image_tag_mutability_exclusion_filters {
            Some(f) => filters_of(f)?,
            // A mode that takes no filters given alone drops the old ones.
            None if input.image_tag_mutability.is_some() => Vec::new(),
            None => t.tag_mutability_exclusions.clone(),
        };
        let m = mutability(&mode, filters)?;
        t.tag_mutability = m.mode.as_str().into();
        t.tag_mutability_exclusions = m.exclusions;
        if let Some(p) = &input.repository_policy {
            if let Some(text) = policy_text(p) {
                validate_repository_policy(&text).map_err(invalid)?;
            }
            t.repository_policy = policy_text(p);
        }
        if let Some(p) = &input.lifecycle_policy {
            if let Some(text) = policy_text(p) {
                validate_lifecycle_policy(&text).map_err(invalid)?;
            }
            t.lifecycle_policy = policy_text(p);
        }
        if let Some(a) = &input.applied_for {
            t.applied_for = rules::applied_for(a).map_err(invalid)?.iter().map(|a| a.as_str().to_owned()).collect();
        }
        Ok(t)
    }

    /// The key name of an `encryptionConfiguration`: `None` for `AES256` and for `KMS` without
    /// `kmsKey` (the registry's default key, as ECR's AWS managed key), the named key for `KMS`
    /// with `kmsKey` (a key name, or a KMS-style ARN whose last segment names it), which must
    /// be a key Berth knows. `KMS_DSSE` (two layers) is refused: Berth seals once.
    async fn key_of(&self, enc: &EncryptionConfiguration) -> ApiResult<Option<String>> {
        match enc.encryption_type.as_str() {
            "AES256" if enc.kms_key.as_deref().unwrap_or_default().is_empty() => Ok(None),
            "AES256" => {
                Err(invalid("kmsKey goes with encryptionType KMS; AES256 uses the registry's default key".into()))
            }
            "KMS" => {
                // As ECR's KMS without a key is its AWS managed key: the registry's default key.
                let Some(given) = enc.kms_key.as_deref().filter(|k| !k.is_empty()) else { return Ok(None) };
                let name = kms_key_name(given);
                if !self.crypt.enabled {
                    return Err(invalid(format!(
                        "kmsKey {name}: encryption is off on this registry (encryption.enabled = false), new \
                         repositories are not encrypted"
                    )));
                }
                let known = berth_storage::crypt::keyring::valid_name(name)
                    && (self.crypt.ring.all().iter().any(|k| k.name() == name)
                        || self.meta.keys(false).await?.iter().any(|k| k.name == name));
                if !known {
                    return Err(invalid(format!(
                        "kmsKey {name:?} is not a key of this registry: create it first (berth keys create {name}) \
                         or name one that berth keys list shows"
                    )));
                }
                Ok(Some(name.to_owned()))
            }
            "KMS_DSSE" => Err(invalid(
                "encryptionType KMS_DSSE: Berth seals each blob once (AES-256-GCM under one of its keys), there is no \
                 second layer; use AES256 (the registry's default key) or KMS with kmsKey naming a Berth key"
                    .into(),
            )),
            other => Err(invalid(format!("encryptionType {other:?}: use AES256 (the default key) or KMS with kmsKey"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_policy_shape() {
        let cases = [
            (
                r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#,
                true,
            ),
            (r#"{"rules":[]}"#, false),
            (r#"{"rules":[{"rulePriority":1}]}"#, false),
            (r#"{"rules":{}}"#, false),
            (r#"[]"#, false),
            (r#"{"rule":[]}"#, false),
            ("not json", false),
        ];
        for (text, ok) in cases {
            assert_eq!(validate_lifecycle_policy(text).is_ok(), ok, "{text}");
        }
        let long = format!(r#"{{"rules":[],"x":"{}"}}"#, "a".repeat(30_720));
        assert!(validate_lifecycle_policy(&long).unwrap_err().contains("30720"));
    }

    #[test]
    fn repository_policies_are_parsed() {
        let pull =
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"ecr:BatchGetImage"}]}"#;
        assert!(validate_repository_policy(pull).is_ok());
        assert!(validate_repository_policy(&pull.replace("BatchGetImage", "BatchGetImages")).is_err());
        assert!(validate_repository_policy(r#"{"Statement":[{"Effect":"Maybe"}]}"#).is_err());
        assert!(validate_repository_policy("{").is_err());
    }

    #[test]
    fn encryption_shapes() {
        assert_eq!(
            serde_json::to_value(encryption_view(Some("team-a"))).unwrap(),
            serde_json::json!({"encryptionType": "KMS", "kmsKey": "team-a"})
        );
        assert_eq!(
            serde_json::to_value(encryption_view(None)).unwrap(),
            serde_json::json!({"encryptionType": "AES256"})
        );
        assert!(filters_of(&[ExclusionFilter { filter_type: "REGEX".into(), filter: "x".into() }]).is_err());
        assert_eq!(kms_key_name("team-a"), "team-a");
        assert_eq!(kms_key_name("arn:aws:kms:us-east-1:123456789012:key/team-a"), "team-a");
        assert_eq!(kms_key_name("arn:aws:kms:us-east-1:123456789012:alias/team-a"), "team-a");
    }
}
