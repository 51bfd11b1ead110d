//! ECR's pull-through cache rule operations: `CreatePullThroughCacheRule`,
//! `DescribePullThroughCacheRules`, `UpdatePullThroughCacheRule`, `DeletePullThroughCacheRule`
//! and `ValidatePullThroughCacheRule`, each allowed by its own ECR action on the registry,
//! over the same service calls as the admin API (`service::pull_through`).
//!
//! ECR keeps upstream credentials in AWS Secrets Manager (`credentialArn`) and may assume a
//! role (`customRoleArn`); Berth has neither, so both are refused with the way Berth takes
//! credentials (the admin API, `berth pull-through`, berth.toml). Rules without credentials
//! (public upstreams) work as in ECR.

use serde::Deserialize;

use super::Ecr;
use super::error::{EcrError, EcrResult};
use super::wire::{epoch, input, max_results, output};
use crate::error::ApiError;
use crate::service::pull_through::{Rule, RuleInput, RuleSource};

/// Serves `op` if it belongs to this group.
pub(super) async fn call(ecr: &Ecr<'_>, op: &str, body: &[u8]) -> Option<EcrResult> {
    Some(match op {
        "CreatePullThroughCacheRule" => create(ecr, body).await,
        "DescribePullThroughCacheRules" => describe(ecr, body).await,
        "UpdatePullThroughCacheRule" => update(ecr, body).await,
        "DeletePullThroughCacheRule" => delete(ecr, body).await,
        "ValidatePullThroughCacheRule" => validate(ecr, body).await,
        _ => return None,
    })
}

/// ECR's `upstreamRegistry` names, from the upstream's host where it is a known one.
fn upstream_registry(url: &str) -> Option<&'static str> {
    let host = url.split("://").nth(1).unwrap_or(url).split(':').next().unwrap_or_default();
    Some(match host {
        "registry-1.docker.io" | "docker.io" | "index.docker.io" => "docker-hub",
        "ghcr.io" => "github-container-registry",
        "quay.io" => "quay",
        "registry.k8s.io" => "k8s",
        "public.ecr.aws" => "ecr-public",
        "registry.gitlab.com" => "gitlab-container-registry",
        "cgr.dev" => "chainguard",
        h if h.ends_with(".azurecr.io") => "azure-container-registry",
        h if h.contains(".dkr.ecr.") && h.ends_with(".amazonaws.com") => "ecr",
        _ => return None,
    })
}

const UPSTREAM_REGISTRIES: &[&str] = &[
    "ecr",
    "ecr-public",
    "quay",
    "k8s",
    "docker-hub",
    "github-container-registry",
    "azure-container-registry",
    "gitlab-container-registry",
    "chainguard",
];

/// One rule in ECR's `PullThroughCacheRule` shape (plus the operation's extra members).
fn rule_json(ecr: &Ecr<'_>, r: &Rule) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("ecrRepositoryPrefix".into(), r.spec.prefix.to_string().into());
    m.insert("upstreamRegistryUrl".into(), r.spec.upstream_url.clone().into());
    m.insert("registryId".into(), ecr.account().into());
    if let Some(up) = &r.spec.upstream_prefix {
        m.insert("upstreamRepositoryPrefix".into(), up.clone().into());
    }
    if let Some(kind) = upstream_registry(&r.spec.upstream_url) {
        m.insert("upstreamRegistry".into(), kind.into());
    }
    m
}

fn with(mut m: serde_json::Map<String, serde_json::Value>, key: &str, value: serde_json::Value) -> serde_json::Value {
    m.insert(key.into(), value);
    serde_json::Value::Object(m)
}

/// The rule errors in ECR's names.
fn api(ecr: &Ecr<'_>, e: ApiError) -> EcrError {
    match e {
        ApiError::NotFound(m) => EcrError::new("PullThroughCacheRuleNotFoundException", m),
        ApiError::Conflict(m) => EcrError::new("PullThroughCacheRuleAlreadyExistsException", m),
        ApiError::LimitReached(m) => EcrError::new("LimitExceededException", m),
        e => ecr.api(e),
    }
}

/// ECR's prefix length bounds (2–30).
fn prefix(field: &str, value: &str) -> EcrResult<String> {
    if value.len() < 2 || value.len() > 30 {
        return Err(EcrError::invalid(format!("{field} '{value}' must be 2 to 30 characters long")));
    }
    Ok(value.to_owned())
}

fn refuse_secrets(credential_arn: &Option<String>, custom_role_arn: &Option<String>) -> EcrResult<()> {
    if credential_arn.is_some() || custom_role_arn.is_some() {
        return Err(EcrError::invalid(
            "Berth has no Secrets Manager or IAM roles: leave credentialArn and customRoleArn out, and give the \
             upstream's credentials with `berth pull-through create --username ...`, the admin API \
             (/api/v1/pull-through-rules) or [[pull_through.rules]] in berth.toml",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateIn {
    ecr_repository_prefix: String,
    upstream_registry_url: String,
    registry_id: Option<String>,
    upstream_registry: Option<String>,
    credential_arn: Option<String>,
    custom_role_arn: Option<String>,
    upstream_repository_prefix: Option<String>,
}

async fn create(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: CreateIn = input(body)?;
    ecr.registry_id(i.registry_id.as_deref())?;
    let prefix = prefix("ecrRepositoryPrefix", &i.ecr_repository_prefix)?;
    refuse_secrets(&i.credential_arn, &i.custom_role_arn)?;
    if let Some(kind) = &i.upstream_registry
        && !UPSTREAM_REGISTRIES.contains(&kind.as_str())
    {
        return Err(EcrError::new(
            "UnsupportedUpstreamRegistryException",
            format!("upstreamRegistry '{kind}' is not one of {}", UPSTREAM_REGISTRIES.join(", ")),
        ));
    }
    // ECR's URLs are host names; Berth's carry the scheme. HTTPS when none is given.
    let url = &i.upstream_registry_url;
    let upstream = if url.contains("://") { url.clone() } else { format!("https://{url}") };
    let rule_in = RuleInput {
        prefix: Some(prefix),
        upstream,
        upstream_prefix: i.upstream_repository_prefix.clone(),
        ..RuleInput::default()
    };
    ecr.allow("ecr:CreatePullThroughCacheRule", None).await?;
    let r = ecr.reg.create_pull_through_rule(&rule_in).await.map_err(|e| api(ecr, e))?;
    output(&with(rule_json(ecr, &r), "createdAt", epoch(r.created_at).into()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeIn {
    registry_id: Option<String>,
    ecr_repository_prefixes: Option<Vec<String>>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

async fn describe(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: DescribeIn = input(body)?;
    ecr.registry_id(i.registry_id.as_deref())?;
    let limit = max_results(i.max_results, 1000)?.unwrap_or(100);
    ecr.allow("ecr:DescribePullThroughCacheRules", None).await?;
    let all = ecr.reg.pull_through_rules().await.map_err(|e| api(ecr, e))?;
    let rules: Vec<&Rule> = match &i.ecr_repository_prefixes {
        Some(wanted) => {
            let mut found = Vec::new();
            for w in wanted {
                let p = w.strip_suffix('/').unwrap_or(w);
                match all.iter().find(|r| r.spec.prefix.as_str() == p) {
                    Some(r) => found.push(r),
                    None => {
                        return Err(EcrError::new(
                            "PullThroughCacheRuleNotFoundException",
                            format!("there is no pull-through cache rule with prefix {w}"),
                        ));
                    }
                }
            }
            found
        }
        None => all.iter().collect(),
    };
    let after: Vec<&Rule> = match &i.next_token {
        Some(token) => rules.into_iter().filter(|r| r.spec.prefix.as_str() > token.as_str()).collect(),
        None => rules,
    };
    let page: Vec<serde_json::Value> = after
        .iter()
        .take(limit)
        .map(|r| {
            let m = with(rule_json(ecr, r), "createdAt", epoch(r.created_at).into());
            let serde_json::Value::Object(m) = m else { return m };
            with(m, "updatedAt", epoch(r.updated_at).into())
        })
        .collect();
    let mut answer = serde_json::json!({ "pullThroughCacheRules": page });
    if after.len() > limit
        && let Some(last) = after.get(limit - 1)
    {
        answer["nextToken"] = last.spec.prefix.to_string().into();
    }
    output(&answer)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateIn {
    registry_id: Option<String>,
    ecr_repository_prefix: String,
    credential_arn: Option<String>,
    custom_role_arn: Option<String>,
}

/// ECR's update changes only the credentials and the role, which Berth takes elsewhere: with
/// neither given it answers the rule as it is (a stored one; a configured one is refused).
async fn update(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: UpdateIn = input(body)?;
    ecr.registry_id(i.registry_id.as_deref())?;
    let prefix = prefix("ecrRepositoryPrefix", &i.ecr_repository_prefix)?;
    refuse_secrets(&i.credential_arn, &i.custom_role_arn)?;
    ecr.allow("ecr:UpdatePullThroughCacheRule", None).await?;
    let r = ecr.reg.pull_through_rule(&prefix).await.map_err(|e| api(ecr, e))?;
    if r.source == RuleSource::Config {
        return Err(EcrError::invalid(format!(
            "the pull-through cache rule {prefix} comes from the configuration (berth.toml): change it there"
        )));
    }
    let mut m = serde_json::Map::new();
    m.insert("ecrRepositoryPrefix".into(), r.spec.prefix.to_string().into());
    m.insert("registryId".into(), ecr.account().into());
    m.insert("updatedAt".into(), epoch(r.updated_at).into());
    if let Some(up) = &r.spec.upstream_prefix {
        m.insert("upstreamRepositoryPrefix".into(), up.clone().into());
    }
    output(&m)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrefixIn {
    registry_id: Option<String>,
    ecr_repository_prefix: String,
}

async fn delete(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: PrefixIn = input(body)?;
    ecr.registry_id(i.registry_id.as_deref())?;
    let prefix = prefix("ecrRepositoryPrefix", &i.ecr_repository_prefix)?;
    ecr.allow("ecr:DeletePullThroughCacheRule", None).await?;
    let r = ecr.reg.delete_pull_through_rule(&prefix).await.map_err(|e| api(ecr, e))?;
    let mut m = rule_json(ecr, &r);
    m.remove("upstreamRegistry");
    output(&with(m, "createdAt", epoch(r.created_at).into()))
}

async fn validate(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: PrefixIn = input(body)?;
    ecr.registry_id(i.registry_id.as_deref())?;
    let prefix = prefix("ecrRepositoryPrefix", &i.ecr_repository_prefix)?;
    ecr.allow("ecr:ValidatePullThroughCacheRule", None).await?;
    let (r, outcome) = ecr.reg.validate_pull_through_rule(&prefix).await.map_err(|e| api(ecr, e))?;
    let mut m = rule_json(ecr, &r);
    m.remove("upstreamRegistry");
    m.insert("isValid".into(), outcome.is_ok().into());
    if let Err(why) = outcome {
        m.insert("failure".into(), why.into());
    }
    output(&m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_registry_names() {
        assert_eq!(upstream_registry("https://registry-1.docker.io"), Some("docker-hub"));
        assert_eq!(upstream_registry("https://ghcr.io"), Some("github-container-registry"));
        assert_eq!(upstream_registry("https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"), Some("ecr"));
        assert_eq!(upstream_registry("http://127.0.0.1:5000"), None);
    }
}
