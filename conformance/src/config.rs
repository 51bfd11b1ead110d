//! What the suite is pointed at and which optional behaviours it expects.

use std::time::Duration;

use reqwest::Url;

use crate::auth::Credentials;

/// Everything [`crate::run`] needs. Build one with [`SuiteConfig::new`] and
/// flip the flags the registry under test documents.
#[derive(Debug, Clone)]
pub struct SuiteConfig {
    /// Where the registry listens, e.g. `http://127.0.0.1:5000`. A path
    /// prefix is kept (`http://h/prefix` → `http://h/prefix/v2/`).
    pub base_url: Url,
    /// Prefix of every repository the suite creates. Each case works in
    /// `<namespace>/<case name>[/...]`, so runs never collide and a run's
    /// leftovers are easy to find. Default `conformance/<random>`.
    pub namespace: String,
    /// Optional behaviours; see [`Flags`].
    pub flags: Flags,
    /// Only run cases whose name or group contains this substring.
    pub filter: Option<String>,
    /// Upper bound for one case, requests included, so a registry that
    /// stalls fails that case instead of hanging the run.
    pub case_timeout: Duration,
    /// Who to sign in as when the registry asks. Without them a registry that
    /// requires sign-in only gets anonymous token requests, and the auth cases
    /// are skipped.
    pub credentials: Option<Credentials>,
}

/// Optional parts of the spec. When a flag says a feature is off, the
/// cases for it either expect the spec's "not supported" answer (deletes:
/// 405 `UNSUPPORTED`; mounts: 202) or are skipped (referrers, tag params).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags {
    /// `DELETE /v2/<name>/manifests/<ref>` is enabled (end-9).
    pub delete_manifests: bool,
    /// `DELETE /v2/<name>/blobs/<digest>` is enabled (end-10).
    pub delete_blobs: bool,
    /// The referrers API and `OCI-Subject` are supported (end-12).
    pub referrers: bool,
    /// Cross-repository mount answers 201 when the source has the blob
    /// (end-11); off means a 202 fallback session is expected instead.
    pub cross_mount: bool,
    /// `PUT manifests/<digest>?tag=a&tag=b` is supported (end-7b).
    pub tag_param: bool,
    /// With credentials, the registry signs in with the Docker token protocol
    /// (a `Bearer` challenge naming a token service); off means Basic only,
    /// and the token cases are skipped.
    pub token_auth: bool,
}

impl Default for Flags {
    fn default() -> Self {
        Self {
            delete_manifests: true,
            delete_blobs: true,
            referrers: true,
            cross_mount: true,
            tag_param: false,
            token_auth: true,
        }
    }
}

impl SuiteConfig {
    /// A config for `base_url` with a fresh random namespace, default flags,
    /// no filter, a 30 s case timeout and no credentials.
    pub fn new(base_url: Url) -> Self {
        let token = uuid::Uuid::new_v4().simple().to_string();
        Self {
            base_url,
            namespace: format!("conformance/{}", &token[..12]),
            flags: Flags::default(),
            filter: None,
            case_timeout: Duration::from_secs(30),
            credentials: None,
        }
    }
}
