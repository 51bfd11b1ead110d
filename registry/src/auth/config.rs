//! The `[auth]` section of the configuration.

use std::net::IpAddr;
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

/// An address block (`10.0.0.0/8`, `fd00::/8`); a bare address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpBlock {
    net: IpAddr,
    prefix: u8,
}

impl IpBlock {
    /// Whether `ip` is in the block; IPv4 clients of a dual-stack socket (`::ffff:a.b.c.d`)
    /// count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, addr, bits) = match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => (u128::from(u32::from(n)), u128::from(u32::from(a)), 32),
            (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        shift >= bits || net >> shift == addr >> shift
    }
}

impl std::str::FromStr for IpBlock {
    type Err = String;

    fn from_str(s: &str) -> Result<IpBlock, String> {
        let bad = || format!("{s:?} is not an IP address or CIDR block like 10.0.0.0/8");
        let (addr, prefix) = s.trim().split_once('/').map_or((s.trim(), None), |(a, p)| (a, Some(p)));
        let net = addr.parse::<IpAddr>().map_err(|_| bad())?.to_canonical();
        let bits = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|p| *p <= bits).ok_or_else(bad)?
            }
            Some(_) => return Err(bad()),
        };
        Ok(IpBlock { net, prefix })
    }
}

impl TryFrom<String> for IpBlock {
    type Error = String;

    fn try_from(s: String) -> Result<IpBlock, String> {
        s.parse()
    }
}

impl From<IpBlock> for String {
    fn from(b: IpBlock) -> String {
        b.to_string()
    }
}

impl std::fmt::Display for IpBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
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
    use super::*;

    #[test]
    fn ip_blocks_parse_and_contain() {
        let cases = [
            ("10.0.0.0/8", "10.200.1.1", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("10.0.0.5", "10.0.0.5", true),
            ("10.0.0.5", "10.0.0.6", false),
            ("10.0.0.5", "::ffff:10.0.0.5", true),
            ("0.0.0.0/0", "192.0.2.1", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("2001:db8::/32", "2001:db8:1::1", true),
            ("::1", "::1", true),
            ("::/0", "2001:db8::1", true),
        ];
        for (block, ip, want) in cases {
            let b: IpBlock = block.parse().unwrap();
            assert_eq!(b.contains(ip.parse().unwrap()), want, "{ip} in {block}");
        }
        for bad in ["", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/x", "nginx", "::/129", "10.0.0.0/-1"] {
            assert!(bad.parse::<IpBlock>().is_err(), "{bad}");
        }
        let b: IpBlock = "10.1.0.0/16".parse().unwrap();
        assert_eq!(b.to_string(), "10.1.0.0/16");
    }

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
