//! What ECR's repository and registry operations need beyond the other services: pages of
//! repositories with their settings (`DescribeRepositories`), `scanOnPush`
//! (`PutImageScanningConfiguration`), and the registry scanning configuration
//! (`PutRegistryScanningConfiguration`), stored as given: Berth does not scan images, and
//! says so rather than invent findings.

use berth_oci::RepoName;
use berth_storage::metadata::{Page, RepositorySettings};
use serde::{Deserialize, Serialize};

use super::Registry;
use crate::error::{ApiError, ApiResult};

/// The `registry_settings` name of the registry scanning configuration.
pub const SCANNING: &str = "scanning";

/// ECR's limits on a registry scanning configuration.
pub const MAX_SCANNING_RULES: usize = 2;
pub const MAX_SCANNING_FILTERS: usize = 100;
pub const MAX_SCANNING_FILTER: usize = 255;

/// ECR's `RegistryScanningConfiguration`: kept as given, answered as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryScanning {
    pub scan_type: String,
    pub rules: Vec<ScanningRule>,
}

/// ECR's `RegistryScanningRule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanningRule {
    pub scan_frequency: String,
    pub repository_filters: Vec<ScanningFilter>,
}

/// ECR's `ScanningRepositoryFilter`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanningFilter {
    pub filter: String,
    pub filter_type: String,
}

impl Default for RegistryScanning {
    /// What ECR answers for a registry that never set one: basic scanning, no rules.
    fn default() -> Self {
        RegistryScanning { scan_type: "BASIC".into(), rules: Vec::new() }
    }
}

impl RegistryScanning {
    /// Checks the configuration as ECR's model does; the message names the field at fault.
    pub fn check(&self) -> ApiResult<()> {
        let invalid = |m: String| Err(ApiError::Invalid(m));
        if !["BASIC", "ENHANCED"].contains(&self.scan_type.as_str()) {
            return invalid(format!("scanType {:?} must be BASIC or ENHANCED", self.scan_type));
        }
        if self.rules.len() > MAX_SCANNING_RULES {
            return invalid(format!("rules: {} given, at most {MAX_SCANNING_RULES}", self.rules.len()));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if !["SCAN_ON_PUSH", "CONTINUOUS_SCAN", "MANUAL"].contains(&rule.scan_frequency.as_str()) {
                return invalid(format!(
                    "rules[{i}].scanFrequency {:?} must be SCAN_ON_PUSH, CONTINUOUS_SCAN or MANUAL",
                    rule.scan_frequency
                ));
            }
            if rule.repository_filters.len() > MAX_SCANNING_FILTERS {
                return invalid(format!(
                    "rules[{i}].repositoryFilters: {} given, at most {MAX_SCANNING_FILTERS}",
                    rule.repository_filters.len()
                ));
            }
            for (j, f) in rule.repository_filters.iter().enumerate() {
                let at = format!("rules[{i}].repositoryFilters[{j}]");
                if f.filter_type != "WILDCARD" {
                    return invalid(format!("{at}.filterType {:?}: the only filter type is WILDCARD", f.filter_type));
                }
                if !scanning_filter(&f.filter) {
                    return invalid(format!(
                        "{at}.filter {:?} must be 1 to {MAX_SCANNING_FILTER} of lowercase letters, digits, '*' \
                         and the separators '.', '_', '-', '/' (not first, not doubled, not last)",
                        f.filter
                    ));
                }
            }
        }
        Ok(())
    }
}

/// ECR's `ScanningRepositoryFilterValue`: `^[a-z0-9*](?:[._\-/a-z0-9*]?[a-z0-9*]+)*$`, 1–255.
fn scanning_filter(f: &str) -> bool {
    let word = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'*';
    let bytes = f.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_SCANNING_FILTER || !word(bytes[0]) || !word(bytes[bytes.len() - 1]) {
        return false;
    }
    // Every byte a word byte or a separator, and no two separators side by side.
    bytes.iter().all(|&b| word(b) || b"._-/".contains(&b)) && bytes.windows(2).all(|w| word(w[0]) || word(w[1]))
}

fn no_repository(repo: &RepoName) -> ApiError {
    ApiError::NotFound(format!("repository {repo} does not exist"))
}

impl Registry {
    /// The settings of the repositories named after `last`, in byte order, at most `limit`:
    /// one read, whatever the page's size.
    pub async fn repository_settings_page(
        &self,
        last: Option<&str>,
        limit: usize,
    ) -> ApiResult<Vec<RepositorySettings>> {
        let page = Page { last: last.map(str::to_owned), limit: limit.min(super::MAX_PAGE) };
        Ok(self.meta.repository_settings_page(&page).await?)
    }

    /// The settings of those of `repos` that exist, in byte order: one read.
    pub async fn repository_settings_of(&self, repos: &[RepoName]) -> ApiResult<Vec<RepositorySettings>> {
        Ok(self.meta.repository_settings_of(repos).await?)
    }

    /// ECR's `PutImageScanningConfiguration`: stores `scanOnPush` (Berth scans nothing).
    pub async fn put_scan_on_push(&self, repo: &RepoName, scan_on_push: bool) -> ApiResult<()> {
        if !self.meta.set_scan_on_push(repo, scan_on_push).await? {
            return Err(no_repository(repo));
        }
        tracing::info!(repo.name = %repo, scan_on_push, "scan on push set (stored only: Berth does not scan)");
        Ok(())
    }

    /// The registry scanning configuration as stored, or ECR's default when none was put.
    pub async fn registry_scanning(&self) -> ApiResult<RegistryScanning> {
        match self.meta.registry_setting(SCANNING).await? {
            None => Ok(RegistryScanning::default()),
            Some(s) => serde_json::from_str(&s.value)
                .map_err(|e| ApiError::Internal(format!("stored registry setting {SCANNING}: {e}"))),
        }
    }

    /// ECR's `PutRegistryScanningConfiguration`: checked, then stored as given.
    pub async fn put_registry_scanning(&self, scanning: &RegistryScanning) -> ApiResult<RegistryScanning> {
        scanning.check()?;
        let text = serde_json::to_string(scanning).map_err(|e| ApiError::Internal(e.to_string()))?;
        self.meta.put_registry_setting(SCANNING, &text).await?;
        tracing::info!(scan.type = %scanning.scan_type, "registry scanning configuration stored (Berth does not scan)");
        Ok(scanning.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(scan_type: &str, frequency: &str, filters: &[&str]) -> RegistryScanning {
        RegistryScanning {
            scan_type: scan_type.into(),
            rules: vec![ScanningRule {
                scan_frequency: frequency.into(),
                repository_filters: filters
                    .iter()
                    .map(|f| ScanningFilter { filter: (*f).into(), filter_type: "WILDCARD".into() })
                    .collect(),
            }],
        }
    }

    #[test]
    fn scanning_configurations_are_checked_as_ecr_does() {
        assert!(config("BASIC", "SCAN_ON_PUSH", &["*"]).check().is_ok());
        assert!(config("ENHANCED", "CONTINUOUS_SCAN", &["prod/*", "team-a*", "a.b_c"]).check().is_ok());
        assert!(RegistryScanning::default().check().is_ok());
        let message = |c: RegistryScanning| c.check().unwrap_err().to_string();
        assert!(message(config("DEEP", "MANUAL", &[])).contains("scanType \"DEEP\""));
        assert!(message(config("BASIC", "HOURLY", &[])).contains("rules[0].scanFrequency"));
        for bad in ["", "Prod", "-a", "a-", "a--b", "a//b", &"a".repeat(256)] {
            assert!(
                message(config("BASIC", "MANUAL", &[bad])).contains("rules[0].repositoryFilters[0].filter"),
                "{bad}"
            );
        }
        let mut regex = config("BASIC", "MANUAL", &["a"]);
        regex.rules[0].repository_filters[0].filter_type = "REGEX".into();
        assert!(message(regex).contains("filterType"));
        let mut three = config("BASIC", "MANUAL", &[]);
        three.rules = vec![three.rules[0].clone(); 3];
        assert!(message(three).contains("at most 2"));
        let many: Vec<String> = (0..101).map(|i| format!("r{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(message(config("BASIC", "MANUAL", &many)).contains("at most 100"));
    }
}
