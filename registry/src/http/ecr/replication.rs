//! ECR's replication operations over Berth's replication (`service::replication`):
//! `PutReplicationConfiguration` (the rules; ECR's destinations are `{region, registryId}`,
//! here `region` names a destination defined through the admin API, the CLI or the
//! configuration file, and `registryId` must be that destination's) and
//! `DescribeImageReplicationStatus` (PENDING shows as IN_PROGRESS, ECR having no pending
//! state; `failureCode` carries the reason). `DescribeRegistry` answers the configuration
//! (`registry.rs`, through [`configuration`]).

use serde::Deserialize;

use super::Ecr;
use super::error::{EcrError, EcrResult};
use super::images::ImageId;
use super::wire::{input, output, repository_name};
use crate::service::replication::{ReplicationView, RepositoryFilter, Rule};
use berth_oci::Reference;
use berth_storage::metadata::ReplicationState;

/// Serves `op` if it belongs to this group.
pub(super) async fn call(ecr: &Ecr<'_>, op: &str, body: &[u8]) -> Option<EcrResult> {
    Some(match op {
        "PutReplicationConfiguration" => put(ecr, body).await,
        "DescribeImageReplicationStatus" => describe_status(ecr, body).await,
        _ => return None,
    })
}

/// The configuration in ECR's shape (`ReplicationConfiguration`).
pub(super) fn configuration(view: &ReplicationView) -> serde_json::Value {
    let registry_id = |name: &str| {
        view.destinations.iter().find(|d| d.name == name).map(|d| d.registry_id.clone()).unwrap_or_default()
    };
    let rules: Vec<serde_json::Value> = view
        .rules
        .iter()
        .map(|r| {
            let destinations: Vec<serde_json::Value> = r
                .destinations
                .iter()
                .map(|d| serde_json::json!({ "region": d, "registryId": registry_id(d) }))
                .collect();
            let mut rule = serde_json::json!({ "destinations": destinations });
            if !r.repository_filters.is_empty() {
                let filters: Vec<serde_json::Value> = r
                    .repository_filters
                    .iter()
                    .map(|f| serde_json::json!({ "filter": f.filter, "filterType": f.filter_type }))
                    .collect();
                rule["repositoryFilters"] = serde_json::Value::Array(filters);
            }
            rule
        })
        .collect();
    serde_json::json!({ "rules": rules })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutIn {
    replication_configuration: ConfigurationIn,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigurationIn {
    rules: Vec<RuleIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleIn {
    destinations: Vec<DestinationIn>,
    #[serde(default)]
    repository_filters: Option<Vec<FilterIn>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DestinationIn {
    region: String,
    registry_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterIn {
    filter: String,
    filter_type: String,
}

async fn put(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: PutIn = input(body)?;
    ecr.allow("ecr:PutReplicationConfiguration", None).await?;
    let current = ecr.reg.replication().await.map_err(|e| ecr.api(e))?;
    let mut rules = Vec::new();
    for r in i.replication_configuration.rules {
        let mut destinations = Vec::new();
        for d in r.destinations {
            match current.destinations.iter().find(|x| x.name == d.region) {
                None => {
                    return Err(EcrError::invalid(format!(
                        "destination region '{}': no replication destination of that name; define it first \
                         (berth replication put, PUT /api/v1/replication or [replication] in the configuration)",
                        d.region
                    )));
                }
                Some(x) if x.registry_id != d.registry_id => {
                    return Err(EcrError::invalid(format!(
                        "destination '{}' has registryId '{}', not '{}'",
                        d.region, x.registry_id, d.registry_id
                    )));
                }
                Some(_) => destinations.push(d.region),
            }
        }
        let repository_filters = r
            .repository_filters
            .unwrap_or_default()
            .into_iter()
            .map(|f| RepositoryFilter { filter: f.filter, filter_type: f.filter_type })
            .collect();
        rules.push(Rule { destinations, repository_filters });
    }
    let view = ecr.reg.put_replication_rules(rules).await.map_err(|e| ecr.api(e))?;
    output(&serde_json::json!({ "replicationConfiguration": configuration(&view) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusIn {
    repository_name: String,
    image_id: ImageId,
    registry_id: Option<String>,
}

async fn describe_status(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: StatusIn = input(body)?;
    ecr.registry_id(i.registry_id.as_deref())?;
    let repo = repository_name("repositoryName", &i.repository_name)?;
    let reference: Reference = match (&i.image_id.image_digest, &i.image_id.image_tag) {
        (Some(d), _) => Reference::Digest(
            d.parse().map_err(|e| EcrError::invalid(format!("imageDigest '{d}' is not a digest ({e})")))?,
        ),
        (None, Some(t)) => {
            Reference::Tag(t.parse().map_err(|e| EcrError::invalid(format!("imageTag '{t}' is not a tag ({e})")))?)
        }
        (None, None) => return Err(EcrError::invalid("imageId: give imageDigest or imageTag")),
    };
    ecr.allow("ecr:DescribeImageReplicationStatus", Some(&repo)).await?;
    let status = ecr.reg.image_replication_status(&repo, &reference).await.map_err(|e| match e {
        crate::error::ApiError::NameUnknown => ecr.repository_not_found(&repo),
        e => ecr.api(e),
    })?;
    let statuses: Vec<serde_json::Value> = status
        .statuses
        .iter()
        .map(|s| {
            let state = match s.status {
                ReplicationState::Pending | ReplicationState::InProgress => "IN_PROGRESS",
                ReplicationState::Complete => "COMPLETE",
                ReplicationState::Failed => "FAILED",
            };
            let mut v = serde_json::json!({ "region": s.destination, "registryId": s.registry_id, "status": state });
            if let (ReplicationState::Failed, Some(reason)) = (s.status, &s.reason) {
                v["failureCode"] = serde_json::Value::String(reason.clone());
            }
            v
        })
        .collect();
    let mut image_id = serde_json::json!({ "imageDigest": status.digest });
    if let Some(t) = &i.image_id.image_tag {
        image_id["imageTag"] = serde_json::Value::String(t.clone());
    }
    output(&serde_json::json!({
        "repositoryName": status.repository,
        "imageId": image_id,
        "replicationStatuses": statuses,
    }))
}
