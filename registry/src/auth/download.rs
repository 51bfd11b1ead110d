//! Layer download URLs (ECR's `GetDownloadUrlForLayer`): like ECR's pre-signed S3 URL, a URL
//! that fetches one layer with no further credentials until it expires. Its signature is a
//! token of the registry's signing key ([`TokenUse::Download`]), so every replica verifies it
//! with the keys it already trusts (rotation included) and no new secret is kept; its use
//! keeps it apart from every other token: a download token is no bearer token, and a bearer,
//! refresh or login token opens no download.
//!
//! The token's `access` names exactly one blob of one repository (type [`BLOB`], name
//! `<repository>@<digest>`, action [`DOWNLOAD`]); the URL's path names them again, and both
//! must agree. Like an S3 pre-signed URL, which dies with the access key that signed it, a
//! download token is bound to the credentials that asked for it (the access key, or the user,
//! with the user's stable id and credential generation, as login tokens are): disabling or
//! deleting the key or the user, or changing the user's password, revokes the URLs it was
//! given (invariant 15).

use std::time::Duration;

use berth_auth::token::{Claims, ResourceActions, TokenError, TokenUse};
use berth_oci::{Digest, RepoName};

use berth_storage::MetadataStore;

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
    /// The credentials that asked for it were revoked since (or it was issued while
    /// authentication was off, and it is on now).
    Revoked,
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
            DownloadRefused::Revoked => f.write_str(
                "the credentials this download URL was issued to are no longer valid (disabled, deleted or changed); \
                 ask for a new one with GetDownloadUrlForLayer",
            ),
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
    /// behalf of `subject` (the access key or user who asked; `""` with authentication off),
    /// bound to that subject's current credentials.
    pub async fn download_token(
        &self,
        meta: &dyn MetadataStore,
        repo: &RepoName,
        digest: &Digest,
        subject: &str,
        now: i64,
        ttl: Duration,
    ) -> Result<String, ApiError> {
        let mut claims = Claims::new(
            TokenUse::Download,
            self.config.token.issuer.clone(),
            subject,
            self.service(),
            now,
            ttl,
            vec![grant(repo, digest)],
        );
        if !subject.is_empty() {
            let Some(who) = self.subject_signed_in(meta, subject).await? else {
                return Err(DownloadRefused::Revoked.into());
            };
            claims = claims.bound_to(who.user_id, who.generation);
        }
        self.signer.sign(&claims).map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// Checks a download token against the repository and digest of the URL's path, at
    /// `now`. The signature is verified before any claim is read (the verifier's order); with
    /// authentication on, the credentials it was issued to must still be those of an enabled
    /// user (and key), at the same generation.
    pub async fn verify_download(
        &self,
        meta: &dyn MetadataStore,
        token: &str,
        repo: &RepoName,
        digest: &Digest,
        now: i64,
    ) -> Result<(), ApiError> {
        if token.len() > MAX_DOWNLOAD_TOKEN {
            return Err(DownloadRefused::Invalid("the token is too long".into()).into());
        }
        let claims = self.verifier.verify(token, self.service(), TokenUse::Download, now).map_err(|e| match e {
            TokenError::Expired => DownloadRefused::Expired,
            other => DownloadRefused::Invalid(other.to_string()),
        })?;
        if claims.access != [grant(repo, digest)] {
            return Err(DownloadRefused::OtherLayer.into());
        }
        if self.enabled() && self.redeem(meta, &claims).await?.is_none() {
            return Err(DownloadRefused::Revoked.into());
        }
        Ok(())
    }
}
