//! The `[pull_through]` section of berth.toml: cache rules given by configuration. They win
//! over a stored rule with the same prefix, as other configured settings do.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Secret;
use crate::rules::templates::Prefix;

/// Pull-through cache rules (README "Pull-through cache").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PullThroughConfig {
    /// `[[pull_through.rules]]`: one per repository prefix.
    pub rules: Vec<RuleConfig>,
}

/// One configured rule. Secrets (`password`, `aws_secret_access_key`) show as `***` in
/// `berth config` and never in logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// `ROOT` (every repository no other rule covers: what Docker's `registry-mirrors` sends,
    /// `library/alpine`) or a namespace such as `hub` (then `hub/library/alpine`).
    pub prefix: String,
    /// The upstream registry: `https://registry-1.docker.io` (or `http://` for a registry
    /// on a trusted network).
    pub upstream: String,
    /// The namespace upstream that `prefix` stands for: with `upstream_prefix = "library"`,
    /// `hub/alpine` is fetched as `library/alpine`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_prefix: Option<String>,
    /// Basic credentials upstream (also used at its token realm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// An ECR upstream (or another Berth's ECR API): access keys for GetAuthorizationToken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_secret_access_key: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_region: Option<String>,
    /// The ECR API endpoint; default `https://api.ecr.<region>.amazonaws.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecr_endpoint: Option<String>,
    /// A PEM file of certificate authorities to trust for the upstream, besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// How long a cached tag is served before it is checked upstream again (a HEAD);
    /// content by digest is never checked again.
    #[serde(default = "default_refresh", with = "crate::config::duration_text")]
    pub refresh: Duration,
}

/// ECR's: the upstream is checked at most once every 24 hours.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(24 * 3600);

fn default_refresh() -> Duration {
    DEFAULT_REFRESH
}

impl PullThroughConfig {
    /// Each rule's fields, and no prefix twice.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for r in &self.rules {
            let spec = r.spec().map_err(|e| format!("pull_through.rules prefix {:?}: {e}", r.prefix))?;
            if !seen.insert(spec.prefix.clone()) {
                return Err(format!("pull_through.rules: prefix {} is given twice", spec.prefix));
            }
        }
        Ok(())
    }
}

impl RuleConfig {
    /// The rule, checked as a stored one is.
    pub fn spec(&self) -> Result<super::RuleSpec, String> {
        let credentials = super::Credentials::from_parts(super::CredentialParts {
            username: self.username.clone(),
            password: self.password.as_ref().map(|s| s.expose().to_owned()),
            aws_access_key_id: self.aws_access_key_id.clone(),
            aws_secret_access_key: self.aws_secret_access_key.as_ref().map(|s| s.expose().to_owned()),
            aws_region: self.aws_region.clone(),
            ecr_endpoint: self.ecr_endpoint.clone(),
        })?;
        let ca_cert_pem = match &self.ca_file {
            Some(path) => {
                Some(std::fs::read(path).map_err(|e| format!("ca_file {}: cannot be read: {e}", path.display()))?)
            }
            None => None,
        };
        super::RuleSpec::new(
            self.prefix.parse::<Prefix>()?,
            &self.upstream,
            self.upstream_prefix.as_deref(),
            credentials,
            self.refresh,
            ca_cert_pem,
        )
    }
}
