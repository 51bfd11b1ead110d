//! Layer download URLs (ECR's `GetDownloadUrlForLayer`): like ECR's pre-signed S3 URL, a URL
//! that fetches one layer with no further credentials until it expires. Its signature is a
//! token of the registry's signing key ([`TokenUse::Download`]), so every replica verifies it
//! with the keys it already trusts (rotation included) and no new secret is kept; its use
//! keeps it apart from every other token: a download token is no bearer token, and a bearer,
//! refresh or login token opens no download.
//!
//! The token's `access` names exactly one blob of one repository (type [`BLOB`], name
//! `<repository>@<digest>`, action [`DOWNLOAD`]); the URL's path names them again, and both
//! must agree.

use std::time::Duration;

use berth_auth::token::{Claims, ResourceActions, TokenError, TokenUse};
use berth_oci::{Digest, RepoName};

use super::Authority;
use crate::error::ApiError;

/// How long a download URL is valid. ECR does not document its pre-signed URLs' lifetime;
/// this is long enough for a client to start the download after asking (a download that has
/// started is not cut when the URL expires), short enough that a leaked URL is soon useless.
pub const TTL: Duration = Duration::from_secs(20 * 60);

/// The `access` entry's resource type in a download token.
pub const BLOB: &str = "blob";
/// The `access` entry's one action in a download token.
pub const DOWNLOAD: &str = "download";

/// The longest download token looked at: one is well under 2 KiB (a 256-character
/// repository name, a digest and the signature).
pub const MAX_DOWNLOAD_TOKEN: usize = 4 * 1024;

/// Why a download URL was refused, in words for the client that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadRefused {
    Expired,
    /// Not signed by a trusted key, malformed, or another kind of token.
    Invalid(String),
    /// Valid, but for another repository or digest than the URL's path names.
    OtherLayer,
}

impl std::fmt::Display for DownloadRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownloadRefused::Expired => {
                f.write_str("this download URL has expired; ask for a new one with GetDownloadUrlForLayer")
            }
            DownloadRefused::Invalid(why) => write!(f, "this download URL's signature is not valid ({why})"),
            DownloadRefused::OtherLayer => {
                f.write_str("this download URL was issued for another repository or layer than the one its path names")
            }
        }
    }
}

impl From<DownloadRefused> for ApiError {
    fn from(e: DownloadRefused) -> Self {
        ApiError::Denied { message: e.to_string(), challenge: None }
    }
}

/// The `access` entry a download token for `digest` in `repo` carries.
fn grant(repo: &RepoName, digest: &Digest) -> ResourceActions {
    ResourceActions { resource_type: BLOB.into(), name: format!("{repo}@{digest}"), actions: vec![DOWNLOAD.into()] }
}

impl Authority {
    /// A download token for `digest` in `repo`, issued at `now` (Unix seconds) for `ttl`, on
    /// behalf of `subject` (the user who asked; `""` when anonymous or authentication is off).
    pub fn download_token(
        &self,
        repo: &RepoName,
        digest: &Digest,
        subject: &str,
        now: i64,
        ttl: Duration,
    ) -> Result<String, ApiError> {
        let claims = Claims::new(
            TokenUse::Download,
            self.config.token.issuer.clone(),
            subject,
            self.service(),
            now,
            ttl,
            vec![grant(repo, digest)],
        );
        self.signer.sign(&claims).map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// Checks a download token against the repository and digest of the URL's path, at
    /// `now`. The signature is verified before any claim is read (the verifier's order).
    pub fn verify_download(
        &self,
        token: &str,
        repo: &RepoName,
        digest: &Digest,
        now: i64,
    ) -> Result<(), DownloadRefused> {
        if token.len() > MAX_DOWNLOAD_TOKEN {
            return Err(DownloadRefused::Invalid("the token is too long".into()));
        }
        let claims = self.verifier.verify(token, self.service(), TokenUse::Download, now).map_err(|e| match e {
            TokenError::Expired => DownloadRefused::Expired,
            other => DownloadRefused::Invalid(other.to_string()),
        })?;
        if claims.access == [grant(repo, digest)] { Ok(()) } else { Err(DownloadRefused::OtherLayer) }
    }
}
