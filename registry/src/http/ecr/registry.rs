//! ECR's registry-wide operations: `DescribeRegistry` (with the replication configuration,
//! `replication.rs`) and the registry scanning configuration
//! (`PutRegistryScanningConfiguration`, `GetRegistryScanningConfiguration`), stored as given
//! in `registry_settings` (`service::ecr_repos`) and answered as stored: Berth does not scan
//! images. Each allowed by its own ECR action on the registry.

use serde::Deserialize;

use super::Ecr;
use super::error::EcrResult;
use super::wire::{input, output};
use crate::service::ecr_repos::{RegistryScanning, ScanningRule};

/// Serves `op` if it belongs to this group.
pub(super) async fn call(ecr: &Ecr<'_>, op: &str, body: &[u8]) -> Option<EcrResult> {
    Some(match op {
        "DescribeRegistry" => describe_registry(ecr, body).await,
        "PutRegistryScanningConfiguration" => put_scanning(ecr, body).await,
        "GetRegistryScanningConfiguration" => get_scanning(ecr, body).await,
        _ => return None,
    })
}

async fn describe_registry(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let _: serde_json::Map<String, serde_json::Value> = input(body)?;
    ecr.allow("ecr:DescribeRegistry", None).await?;
    let view = ecr.reg.replication().await.map_err(|e| ecr.api(e))?;
    output(&serde_json::json!({
        "registryId": ecr.account(),
        "replicationConfiguration": super::replication::configuration(&view),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutScanningIn {
    scan_type: Option<String>,
    rules: Option<Vec<ScanningRule>>,
}

async fn put_scanning(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: PutScanningIn = input(body)?;
    // ECR's members are both optional: an absent one is its default.
    let scanning = RegistryScanning {
        scan_type: i.scan_type.unwrap_or_else(|| RegistryScanning::default().scan_type),
        rules: i.rules.unwrap_or_default(),
    };
    scanning.check().map_err(|e| ecr.api(e))?;
    ecr.allow("ecr:PutRegistryScanningConfiguration", None).await?;
    let stored = ecr.reg.put_registry_scanning(&scanning).await.map_err(|e| ecr.api(e))?;
    output(&serde_json::json!({ "registryScanningConfiguration": stored }))
}

async fn get_scanning(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let _: serde_json::Map<String, serde_json::Value> = input(body)?;
    ecr.allow("ecr:GetRegistryScanningConfiguration", None).await?;
    let stored = ecr.reg.registry_scanning().await.map_err(|e| ecr.api(e))?;
    output(&serde_json::json!({ "registryId": ecr.account(), "scanningConfiguration": stored }))
}
