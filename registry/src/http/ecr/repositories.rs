//! ECR's repository operations: `CreateRepository`, `DescribeRepositories`,
//! `DeleteRepository`, the repository creation templates (`Create`/`Describe`/`Update`/
//! `DeleteRepositoryCreationTemplate`), and a repository's scanning settings
//! (`PutImageScanningConfiguration`, `BatchGetRepositoryScanningConfiguration`; `StartImageScan`
//! and `DescribeImageScanFindings` answer that Berth does not scan images). Each is a thin call
//! into the services the admin API uses (`service::templates`, `service::repositories`,
//! `service::ecr_repos`), allowed by its own ECR action on the repository (templates: on the
//! registry) before anything changes.
//!
//! How a repository's encryption is shown (`encryptionConfiguration`): sealed with the
//! registry's default key (`encryption.default_key`): `AES256`; sealed with another Berth key:
//! `KMS` with `kmsKey` = `arn:aws:kms:<region>:<account>:key/<name>` (the name is what
//! `berth keys list` shows); plaintext (encryption off when it was created): no
//! `encryptionConfiguration` at all, since ECR's types are all encryption.

use base64::Engine as _;
use berth_oci::RepoName;
use berth_storage::metadata::RepositorySettings;
use serde::{Deserialize, Serialize};

use super::Ecr;
use super::error::{EcrError, EcrResult};
use super::wire::{self, epoch, input, output};
use crate::auth::Permit;
use crate::error::ApiError;
use crate::rules::templates::{self as template_rules, AppliedFor};
use crate::service::repository_settings::{ExclusionFilter, WILDCARD};
use crate::service::templates::{
    CreateRepositoryInput, EncryptionConfiguration, ImageScanningConfiguration, ResourceTag, TemplateInput,
    TemplateSource, TemplateView,
};

/// `DescribeRepositories`' page size when `maxResults` is not given (ECR's).
const DEFAULT_PAGE: usize = 100;
/// The most `repositoryNames` one `DescribeRepositories` may name (ECR's).
const MAX_NAMES: usize = 100;
/// The most `repositoryNames` one `BatchGetRepositoryScanningConfiguration` may name (ECR's).
const MAX_SCANNING_NAMES: usize = 25;

/// Serves `op` if it belongs to this group.
pub(super) async fn call(ecr: &Ecr<'_>, op: &str, body: &[u8]) -> Option<EcrResult> {
    Some(match op {
        "CreateRepository" => create_repository(ecr, body).await,
        "DescribeRepositories" => describe_repositories(ecr, body).await,
        "DeleteRepository" => delete_repository(ecr, body).await,
        "CreateRepositoryCreationTemplate" => create_template(ecr, body).await,
        "DescribeRepositoryCreationTemplates" => describe_templates(ecr, body).await,
        "UpdateRepositoryCreationTemplate" => update_template(ecr, body).await,
        "DeleteRepositoryCreationTemplate" => delete_template(ecr, body).await,
        "PutImageScanningConfiguration" => put_scanning(ecr, body).await,
        "BatchGetRepositoryScanningConfiguration" => batch_get_scanning(ecr, body).await,
        "StartImageScan" | "DescribeImageScanFindings" => no_scans(ecr, body).await,
        _ => return None,
    })
}

// ---- shapes shared by this group's files -------------------------------------------------

/// ECR's `EncryptionConfiguration` as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EncryptionOut {
    encryption_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kms_key: Option<String>,
}

/// ECR's `Repository`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RepositoryOut {
    repository_arn: String,
    registry_id: String,
    repository_name: String,
    repository_uri: String,
    created_at: f64,
    image_tag_mutability: String,
    /// ECR's list has at least one entry: left out when there is none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    image_tag_mutability_exclusion_filters: Vec<ExclusionFilter>,
    image_scanning_configuration: ImageScanningConfiguration,
    /// Left out for a plaintext repository (see the module's documentation).
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption_configuration: Option<EncryptionOut>,
}

/// ECR's `Tag`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct TagOut {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "Value")]
    pub value: String,
}

impl Ecr<'_> {
    /// The KMS-style ARN Berth answers for its key `name`; `kmsKey` accepts it back.
    pub(super) fn kms_arn(&self, name: &str) -> String {
        let a = &self.reg.auth.arns;
        format!("arn:{}:kms:{}:{}:key/{name}", a.partition, a.region, a.account)
    }

    /// How a repository sealed with `key` (`None`: plaintext) is shown.
    pub(super) fn encryption(&self, key: Option<&str>) -> Option<EncryptionOut> {
        let key = key?;
        Some(if key == self.reg.crypt.default_key {
            EncryptionOut { encryption_type: "AES256", kms_key: None }
        } else {
            EncryptionOut { encryption_type: "KMS", kms_key: Some(self.kms_arn(key)) }
        })
    }

    /// ECR's `Repository` of stored settings.
    pub(super) fn repository(&self, s: RepositorySettings) -> RepositoryOut {
        let host = self.base_url.split_once("://").map_or(self.base_url.as_str(), |(_, host)| host);
        RepositoryOut {
            repository_arn: self.repository_arn(s.name.as_str()),
            registry_id: self.account().to_owned(),
            repository_uri: format!("{host}/{}", s.name),
            repository_name: s.name.to_string(),
            created_at: epoch(s.created_at),
            image_tag_mutability: s.tag_mutability.mode,
            image_tag_mutability_exclusion_filters: s
                .tag_mutability
                .exclusions
                .into_iter()
                .map(|filter| ExclusionFilter { filter_type: WILDCARD.into(), filter })
                .collect(),
            image_scanning_configuration: ImageScanningConfiguration { scan_on_push: s.scan_on_push },
            encryption_configuration: self.encryption(s.key.as_deref()),
        }
    }

    /// The settings of `repo`, or `RepositoryNotFoundException`.
    pub(super) async fn settings(&self, repo: &RepoName) -> EcrResult<RepositorySettings> {
        let found = self.reg.repository_settings_of(std::slice::from_ref(repo)).await.map_err(|e| self.api(e))?;
        found.into_iter().next().ok_or_else(|| self.repository_not_found(repo))
    }

    /// Whether the caller may do `action` on every repository (`repository/*`): an operation
    /// that lists them all, as the OCI catalog is allowed.
    async fn allow_every_repository(&self, action: &str) -> EcrResult<()> {
        let Some(caller) = &self.caller else { return Ok(()) };
        let permit = self.reg.auth.decide(self.reg.meta.as_ref(), caller, None, &[action]).await;
        match permit.map_err(|e| self.api(e))? {
            Permit::Allow => Ok(()),
            Permit::Deny(_) => Err(EcrError::denied(action, &self.repository_arn("*"))),
        }
    }
}

/// Tags as ECR checks them: more than 50 is `TooManyTagsException`, a bad key or value
/// `InvalidTagParameterException`.
pub(super) fn check_tags(tags: &[(String, String)]) -> EcrResult<()> {
    if tags.len() > template_rules::MAX_RESOURCE_TAGS {
        return Err(EcrError::new(
            "TooManyTagsException",
            format!(
                "{} tags: a repository takes at most {} (the tags it has count)",
                tags.len(),
                template_rules::MAX_RESOURCE_TAGS
            ),
        ));
    }
    template_rules::resource_tags(tags).map_err(|e| EcrError::new("InvalidTagParameterException", e))
}

/// An opaque `nextToken`: the place a listing stopped (`kind` names the listing), which
/// carries no authority (every page is allowed on its own) and is checked when it comes back.
pub(super) fn page_token(kind: &str, last: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{kind}\n{last}"))
}

/// Where a listing goes on from, read from its `nextToken`; anything but a token of `kind`
/// is `InvalidParameterException`.
pub(super) fn page_after(kind: &str, token: &str) -> EcrResult<String> {
    let bad = || EcrError::invalid("nextToken is not one this operation answered: start again without it");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (k, last) = text.split_once('\n').ok_or_else(bad)?;
    if k != kind {
        return Err(bad());
    }
    Ok(last.to_owned())
}

// ---- repositories ------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateRepositoryIn {
    registry_id: Option<String>,
    repository_name: String,
    tags: Option<Vec<ResourceTag>>,
    image_tag_mutability: Option<String>,
    image_tag_mutability_exclusion_filters: Option<Vec<crate::service::templates::ExclusionFilter>>,
    image_scanning_configuration: Option<ImageScanningConfiguration>,
    encryption_configuration: Option<EncryptionConfiguration>,
}

async fn create_repository(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: CreateRepositoryIn = input(body)?;
    ecr.registry_id(i.registry_id.as_deref())?;
    let repo = wire::repository_name("repositoryName", &i.repository_name)?;
    if let Some(tags) = &i.tags {
        check_tags(&tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect::<Vec<_>>())?;
    }
    ecr.allow("ecr:CreateRepository", Some(&repo)).await?;
    if i.tags.as_ref().is_some_and(|t| !t.is_empty()) {
        ecr.allow("ecr:TagResource", Some(&repo)).await?;
    }
    let service_input = CreateRepositoryInput {
        repository_name: repo.to_string(),
        registry_id: None,
        image_tag_mutability: i.image_tag_mutability,
        image_tag_mutability_exclusion_filters: i.image_tag_mutability_exclusion_filters,
        encryption_configuration: i.encryption_configuration,
        tags: i.tags,
        image_scanning_configuration: i.image_scanning_configuration,
    };
    match ecr.reg.create_repository(&service_input, &ecr.origin).await {
        Ok(_) => {}
        Err(ApiError::Conflict(_)) => {
            return Err(EcrError::new(
                "RepositoryAlreadyExistsException",
                format!("The repository with name '{repo}' already exists in the registry with id '{}'", ecr.account()),
            ));
        }
        Err(e) => return Err(ecr.api(e)),
    }
    let settings = ecr.settings(&repo).await?;
    output(&serde_json::json!({ "repository": ecr.repository(settings) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeRepositoriesIn {
    registry_id: Option<String>,
    repository_names: Option<Vec<String>>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DescribeRepositoriesOut {
    repositories: Vec<RepositoryOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

async fn describe_repositories(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: DescribeRepositoriesIn = input(body)?;
    ecr.registry_id(i.registry_id.as_deref())?;
    const ACTION: &str = "ecr:DescribeRepositories";
    let Some(names) = i.repository_names else {
        let limit = wire::max_results(i.max_results, 1000)?.unwrap_or(DEFAULT_PAGE);
        let after = i.next_token.as_deref().map(|t| page_after("repositories", t)).transpose()?;
        ecr.allow_every_repository(ACTION).await?;
        let mut page = ecr.reg.repository_settings_page(after.as_deref(), limit + 1).await.map_err(|e| ecr.api(e))?;
        let next_token = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|s| page_token("repositories", s.name.as_str()))
        } else {
            None
        };
        let repositories = page.into_iter().map(|s| ecr.repository(s)).collect();
        return output(&DescribeRepositoriesOut { repositories, next_token });
    };
    if i.next_token.is_some() || i.max_results.is_some() {
        return Err(EcrError::invalid(
            "nextToken and maxResults cannot be used with repositoryNames: leave them out, or leave \
             repositoryNames out to page through every repository",
        ));
    }
    if names.is_empty() || names.len() > MAX_NAMES {
        return Err(EcrError::invalid(format!("repositoryNames must name 1 to {MAX_NAMES} repositories")));
    }
    let mut repos: Vec<RepoName> = Vec::with_capacity(names.len());
    for name in &names {
        let repo = wire::repository_name("repositoryNames", name)?;
        if !repos.contains(&repo) {
            repos.push(repo);
        }
    }
    for repo in &repos {
        ecr.allow(ACTION, Some(repo)).await?;
    }
    let found = ecr.reg.repository_settings_of(&repos).await.map_err(|e| ecr.api(e))?;
    let mut by_name: std::collections::HashMap<String, RepositorySettings> =
        found.into_iter().map(|s| (s.name.to_string(), s)).collect();
    let mut repositories = Vec::with_capacity(repos.len());
    for repo in &repos {
        let settings = by_name.remove(repo.as_str()).ok_or_else(|| ecr.repository_not_found(repo))?;
        repositories.push(ecr.repository(settings));
    }
    output(&DescribeRepositoriesOut { repositories, next_token: None })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteRepositoryIn {
    registry_id: Option<String>,
    repository_name: String,
    #[serde(default)]
    force: bool,
}

async fn delete_repository(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: DeleteRepositoryIn = input(body)?;
    ecr.registry_id(i.registry_id.as_deref())?;
    let repo = wire::repository_name("repositoryName", &i.repository_name)?;
    ecr.allow("ecr:DeleteRepository", Some(&repo)).await?;
    let settings = ecr.settings(&repo).await?;
    ecr.reg.delete_repository(&repo, i.force, &ecr.origin).await.map_err(|e| match e {
        ApiError::NameUnknown => ecr.repository_not_found(&repo),
        e => ecr.api(e),
    })?;
    output(&serde_json::json!({ "repository": ecr.repository(settings) }))
}

// ---- repository creation templates -------------------------------------------------------

/// The input of `Create`/`UpdateRepositoryCreationTemplate` (unknown fields ignored, as ECR does).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TemplateIn {
    prefix: String,
    description: Option<String>,
    encryption_configuration: Option<EncryptionConfiguration>,
    resource_tags: Option<Vec<ResourceTag>>,
    image_tag_mutability: Option<String>,
    image_tag_mutability_exclusion_filters: Option<Vec<crate::service::templates::ExclusionFilter>>,
    repository_policy: Option<String>,
    lifecycle_policy: Option<String>,
    applied_for: Option<Vec<String>>,
    custom_role_arn: Option<String>,
}

impl TemplateIn {
    fn into_service(self) -> EcrResult<TemplateInput> {
        if let Some(tags) = &self.resource_tags {
            check_tags(&tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect::<Vec<_>>())?;
        }
        Ok(TemplateInput {
            prefix: Some(self.prefix),
            description: self.description,
            encryption_configuration: self.encryption_configuration,
            resource_tags: self.resource_tags,
            image_tag_mutability: self.image_tag_mutability,
            image_tag_mutability_exclusion_filters: self.image_tag_mutability_exclusion_filters,
            repository_policy: self.repository_policy,
            lifecycle_policy: self.lifecycle_policy,
            applied_for: self.applied_for,
            custom_role_arn: self.custom_role_arn,
        })
    }
}

/// ECR's `RepositoryCreationTemplate`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TemplateOut {
    prefix: String,
    description: String,
    encryption_configuration: EncryptionOut,
    resource_tags: Vec<TagOut>,
    image_tag_mutability: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    image_tag_mutability_exclusion_filters: Vec<crate::service::templates::ExclusionFilter>,
    #[serde(skip_serializing_if = "Option::is_none")]
    repository_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lifecycle_policy: Option<String>,
    applied_for: Vec<AppliedFor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<f64>,
}

impl Ecr<'_> {
    /// A template as ECR shows it: a named key as its KMS-style ARN; no `customRoleArn`
    /// (Berth creates repositories itself and refuses one).
    fn template(&self, t: TemplateView) -> TemplateOut {
        let enc = t.encryption_configuration;
        let encryption_configuration = match (enc.encryption_type.as_str(), enc.kms_key) {
            ("KMS", Some(name)) => EncryptionOut { encryption_type: "KMS", kms_key: Some(self.kms_arn(&name)) },
            _ => EncryptionOut { encryption_type: "AES256", kms_key: None },
        };
        TemplateOut {
            prefix: t.prefix,
            description: t.description,
            encryption_configuration,
            resource_tags: t.resource_tags.into_iter().map(|r| TagOut { key: r.key, value: r.value }).collect(),
            image_tag_mutability: t.image_tag_mutability,
            image_tag_mutability_exclusion_filters: t.image_tag_mutability_exclusion_filters,
            repository_policy: t.repository_policy,
            lifecycle_policy: t.lifecycle_policy,
            applied_for: t.applied_for,
            created_at: t.created_at.map(epoch),
            updated_at: t.updated_at.map(epoch),
        }
    }

    fn template_answer(&self, t: TemplateView) -> EcrResult {
        output(&serde_json::json!({ "registryId": self.account(), "repositoryCreationTemplate": self.template(t) }))
    }

    /// The template service's refusals in ECR's names.
    fn template_error(&self, e: ApiError) -> EcrError {
        match e {
            ApiError::NotFound(m) => EcrError::new("TemplateNotFoundException", m),
            e => self.api(e),
        }
    }
}

async fn create_template(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: TemplateIn = input(body)?;
    let i = i.into_service()?;
    ecr.allow("ecr:CreateRepositoryCreationTemplate", None).await?;
    match ecr.reg.create_template(&i).await {
        Ok(t) => ecr.template_answer(t),
        Err(ApiError::Conflict(m)) => Err(EcrError::new("TemplateAlreadyExistsException", m)),
        Err(e) => Err(ecr.template_error(e)),
    }
}

async fn update_template(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: TemplateIn = input(body)?;
    let prefix = i.prefix.clone();
    let i = i.into_service()?;
    ecr.allow("ecr:UpdateRepositoryCreationTemplate", None).await?;
    let t = ecr.reg.update_template(&prefix, &i).await.map_err(|e| ecr.template_error(e))?;
    ecr.template_answer(t)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrefixIn {
    prefix: String,
}

async fn delete_template(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: PrefixIn = input(body)?;
    ecr.allow("ecr:DeleteRepositoryCreationTemplate", None).await?;
    let t = ecr.reg.delete_template(&i.prefix).await.map_err(|e| ecr.template_error(e))?;
    ecr.template_answer(t)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeTemplatesIn {
    prefixes: Option<Vec<String>>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

/// A template's place in `DescribeRepositoryCreationTemplates`: by prefix, a stored template
/// before a configuration rule with the same prefix.
fn template_key(t: &TemplateView) -> String {
    let rank = match t.source {
        TemplateSource::Api => '0',
        TemplateSource::Config => '1',
    };
    format!("{}\n{rank}", t.prefix)
}

async fn describe_templates(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: DescribeTemplatesIn = input(body)?;
    let limit = wire::max_results(i.max_results, 1000)?.unwrap_or(DEFAULT_PAGE);
    let after = i.next_token.as_deref().map(|t| page_after("templates", t)).transpose()?;
    let wanted = match &i.prefixes {
        None => None,
        Some(list) => Some(
            list.iter()
                .map(|p| p.parse::<template_rules::Prefix>().map(|p| p.as_str().to_owned()))
                .collect::<Result<std::collections::BTreeSet<String>, String>>()
                .map_err(|e| EcrError::invalid(format!("prefixes: {e}")))?,
        ),
    };
    ecr.allow("ecr:DescribeRepositoryCreationTemplates", None).await?;
    // Templates are few (one per prefix) and read whole; a page is cut from them.
    let mut all: Vec<(String, TemplateView)> = ecr
        .reg
        .templates()
        .await
        .map_err(|e| ecr.api(e))?
        .into_iter()
        .filter(|t| wanted.as_ref().is_none_or(|w| w.contains(&t.prefix)))
        .map(|t| (template_key(&t), t))
        .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let next_token = (all.len() > limit).then(|| page_token("templates", &all[limit - 1].0));
    all.truncate(limit);
    let templates: Vec<TemplateOut> = all.into_iter().map(|(_, t)| ecr.template(t)).collect();
    let mut answer = serde_json::json!({ "registryId": ecr.account(), "repositoryCreationTemplates": templates });
    if let Some(token) = next_token {
        answer["nextToken"] = token.into();
    }
    output(&answer)
}

// ---- scanning ----------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutScanningIn {
    registry_id: Option<String>,
    repository_name: String,
    image_scanning_configuration: ImageScanningConfiguration,
}

async fn put_scanning(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: PutScanningIn = input(body)?;
    ecr.registry_id(i.registry_id.as_deref())?;
    let repo = wire::repository_name("repositoryName", &i.repository_name)?;
    ecr.allow("ecr:PutImageScanningConfiguration", Some(&repo)).await?;
    let scan_on_push = i.image_scanning_configuration.scan_on_push;
    ecr.reg.put_scan_on_push(&repo, scan_on_push).await.map_err(|e| match e {
        ApiError::NotFound(_) => ecr.repository_not_found(&repo),
        e => ecr.api(e),
    })?;
    output(&serde_json::json!({
        "registryId": ecr.account(),
        "repositoryName": repo.as_str(),
        "imageScanningConfiguration": { "scanOnPush": scan_on_push },
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchGetScanningIn {
    repository_names: Vec<String>,
}

async fn batch_get_scanning(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: BatchGetScanningIn = input(body)?;
    if i.repository_names.is_empty() || i.repository_names.len() > MAX_SCANNING_NAMES {
        return Err(EcrError::invalid(format!("repositoryNames must name 1 to {MAX_SCANNING_NAMES} repositories")));
    }
    let mut repos: Vec<RepoName> = Vec::with_capacity(i.repository_names.len());
    for name in &i.repository_names {
        let repo = wire::repository_name("repositoryNames", name)?;
        if !repos.contains(&repo) {
            repos.push(repo);
        }
    }
    for repo in &repos {
        ecr.allow("ecr:BatchGetRepositoryScanningConfiguration", Some(repo)).await?;
    }
    let found = ecr.reg.repository_settings_of(&repos).await.map_err(|e| ecr.api(e))?;
    let mut configurations = Vec::new();
    let mut failures = Vec::new();
    for repo in &repos {
        match found.iter().find(|s| s.name == *repo) {
            // What is stored: the repository's scanOnPush. No registry rule is applied to it,
            // since nothing is scanned.
            Some(s) => configurations.push(serde_json::json!({
                "repositoryArn": ecr.repository_arn(repo.as_str()),
                "repositoryName": repo.as_str(),
                "scanOnPush": s.scan_on_push,
                "scanFrequency": if s.scan_on_push { "SCAN_ON_PUSH" } else { "MANUAL" },
                "appliedScanFilters": [],
            })),
            None => failures.push(serde_json::json!({
                "repositoryName": repo.as_str(),
                "failureCode": "REPOSITORY_NOT_FOUND",
                "failureReason": format!("The repository with name '{repo}' does not exist in the registry with id '{}'", ecr.account()),
            })),
        }
    }
    output(&serde_json::json!({ "scanningConfigurations": configurations, "failures": failures }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageScanIn {
    registry_id: Option<String>,
    repository_name: String,
    #[allow(dead_code)]
    image_id: serde_json::Value,
}

/// `StartImageScan` and `DescribeImageScanFindings`: allowed and checked like any request,
/// then `ValidationException` (an error both have in ECR's model), since Berth does not scan
/// images and has no findings to show.
async fn no_scans(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: ImageScanIn = input(body)?;
    ecr.registry_id(i.registry_id.as_deref())?;
    let repo = wire::repository_name("repositoryName", &i.repository_name)?;
    ecr.allow(&format!("ecr:{}", ecr.operation), Some(&repo)).await?;
    ecr.settings(&repo).await?;
    Err(EcrError::new(
        "ValidationException",
        format!(
            "Berth does not scan images, so {} has nothing to do: there are no scans and no findings. \
             imageScanningConfiguration.scanOnPush and the registry scanning configuration are stored and \
             answered as given, and start no scan",
            ecr.operation
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_come_back_only_to_their_listing() {
        let t = page_token("repositories", "team/app");
        assert_eq!(page_after("repositories", &t).unwrap(), "team/app");
        assert_eq!(page_after("templates", &t).unwrap_err().kind, "InvalidParameterException");
        for forged in ["", "!!", "dGVhbS9hcHA", "team/app"] {
            assert_eq!(page_after("repositories", forged).unwrap_err().kind, "InvalidParameterException", "{forged}");
        }
    }

    #[test]
    fn tags_get_ecrs_exceptions() {
        let many: Vec<(String, String)> = (0..51).map(|i| (format!("k{i}"), "v".into())).collect();
        assert_eq!(check_tags(&many).unwrap_err().kind, "TooManyTagsException");
        assert!(check_tags(&many[..50]).is_ok());
        let bad = [("".to_string(), "v".to_string())];
        assert_eq!(check_tags(&bad).unwrap_err().kind, "InvalidTagParameterException");
        let long = [("k".to_string(), "v".repeat(257))];
        assert_eq!(check_tags(&long).unwrap_err().kind, "InvalidTagParameterException");
    }
}
