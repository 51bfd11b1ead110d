//! The `[auth]` section of the configuration.

pub use berth_auth::ip::IpBlock;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Secret, duration_text};

/// Who may do what. On by default: a fresh registry answers only to the users it knows and
/// to what policies grant anonymous callers. See README "Authentication".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `false`: no authentication at all; anyone who reaches the listener may push, pull and
    /// delete (a warning says so at every start).
    pub enabled: bool,
    /// The user created, with full access, when the registry starts with no users.
    pub admin_user: String,
    /// Its password (`BERTH_AUTH__ADMIN_PASSWORD`). Unset: one is generated and written to
    /// `<data_dir>/admin-password` (mode 0600), never to the log.
    pub admin_password: Option<Secret>,
    /// The account id in ARNs (`arn:aws:ecr:<region>:<account>:repository/<name>`).
    pub account: String,
    /// The region in ARNs.
    pub region: String,
    pub token: TokenConfig,
    /// Failed sign-ins allowed per client address, per user from that address, and per
    /// user from addresses it has not signed in from, before sign-ins counted there must
    /// wait (a back-off that doubles with each further failure, from 1 s).
    pub max_failed_logins: u32,
    /// The longest back-off, and how long after its last failure (or back-off) a count is
    /// kept.
    #[serde(with = "duration_text")]
    pub lockout: Duration,
    /// TCP peers (addresses or CIDR blocks) whose `X-Forwarded-For` is believed: a load
    /// balancer in front of Berth. Empty: the TCP peer is the client.
    pub trusted_proxies: Vec<IpBlock>,
}

/// The built-in token service (Docker token spec).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// Where clients fetch tokens. Unset: `http(s)://<Host of the request>/token`, which is
    /// right unless a proxy rewrites the host or the scheme.
    pub realm: Option<String>,
    /// The `service` of challenges and the `aud` of tokens.
    pub service: String,
    /// The `iss` of tokens.
    pub issuer: String,
    /// Lifetime of registry tokens.
    #[serde(with = "duration_text")]
    pub ttl: Duration,
    /// Lifetime of refresh tokens (`offline_token=true`, what `docker login` keeps).
    #[serde(with = "duration_text")]
    pub refresh_ttl: Duration,
    /// Lifetime of login tokens (`docker login -u AWS -p <token>`, like ECR's).
    #[serde(with = "duration_text")]
    pub login_ttl: Duration,
    /// A PEM file with the ES256 private key to sign with. Unset: a key is generated on first
    /// start and kept in the metadata store, shared by replicas.
    pub signing_key_file: Option<PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: true,
            admin_user: "admin".into(),
            admin_password: None,
            account: "000000000000".into(),
            region: "local".into(),
            token: TokenConfig::default(),
            max_failed_logins: 10,
            lockout: Duration::from_secs(300),
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            realm: None,
            service: "berth".into(),
            issuer: "berth".into(),
            ttl: Duration::from_secs(300),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            login_ttl: Duration::from_secs(12 * 3600),
            signing_key_file: None,
        }
    }
}

impl AuthConfig {
    /// Checks what single keys cannot.
    pub fn validate(&self) -> Result<(), String> {
        berth_auth::credentials::check_user_name(&self.admin_user).map_err(|e| format!("auth.admin_user: {e}"))?;
        if self.account.is_empty() || !self.account.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("auth.account must be letters and digits, like 123456789012".into());
        }
        if self.region.is_empty() || !self.region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err("auth.region must be letters, digits and -".into());
        }
        if self.token.ttl < Duration::from_secs(60) {
            return Err("auth.token.ttl must be at least 60s (clients refresh at expiry)".into());
        }
        if let Some(realm) = &self.token.realm
            && !(realm.starts_with("https://") || realm.starts_with("http://"))
        {
            return Err("auth.token.realm must be an http:// or https:// URL".into());
        }
        if self.token.service.is_empty() || self.token.service.contains('"') {
            return Err("auth.token.service must be non-empty text without quotes".into());
        }
        if self.max_failed_logins == 0 {
            return Err("auth.max_failed_logins must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
    fn trusted_proxies_from_the_file_and_the_environment() {
        use crate::config::{Overrides, environment, load};
        figment::Jail::expect_with(|jail| {
            jail.create_file("berth.toml", "[auth]\ntrusted_proxies = [\"10.0.0.0/8\", \"fd00::1\"]\n")?;
            let c = load(Some(std::path::Path::new("berth.toml")), environment(), &Overrides::default()).unwrap();
            assert_eq!(c.auth.trusted_proxies, ["10.0.0.0/8".parse().unwrap(), "fd00::1".parse().unwrap()]);
            jail.set_env("BERTH_AUTH__TRUSTED_PROXIES", "[172.28.0.10, 192.168.0.0/16]");
            let c = load(None, environment(), &Overrides::default()).unwrap();
            assert_eq!(c.auth.trusted_proxies, ["172.28.0.10".parse().unwrap(), "192.168.0.0/16".parse().unwrap()]);
            jail.set_env("BERTH_AUTH__TRUSTED_PROXIES", "[nginx]");
            let err = load(None, environment(), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("not an IP address"), "{err}");
            Ok(())
        });
    }
}
