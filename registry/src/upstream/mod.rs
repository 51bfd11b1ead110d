//! The one OCI client for other registries, used by pull-through (reads) and replication
//! (writes): the token flow, Basic, and ECR's `GetAuthorizationToken` ([`auth`]); manifests
//! and blobs checked against their digests on arrival ([`pull`]); blob uploads, mounts and
//! manifest pushes ([`push`]).
//!
//! Invariants:
//! - Nothing read from another registry is handed on as good before its digest is checked:
//!   a manifest is returned only once its bytes hash to the digest asked for (or, by tag, to
//!   the `Docker-Content-Digest` answered), and a blob's stream ends with an error item, never
//!   a clean end, when its bytes do not hash to the digest or their count differs.
//! - Everything another registry can make Berth hold is bounded: token answers (64 KiB),
//!   manifests (4 MiB), error bodies (64 KiB), the token cache (256 scopes), redirects (5),
//!   and every request's wait for an answer (`UpstreamConfig::timeout`); blobs are streamed.
//! - Credentials go only to the configured registry's origin, to a token realm over HTTPS
//!   (or on that same origin), and never on a redirect to another origin. They never appear
//!   in `Debug` output, errors or logs.

mod auth;
mod pull;
mod push;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use berth_oci::{Digest, Reference, RepoName};
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode, Url};

/// The largest manifest read from or pushed to another registry.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// The largest token-service or ECR answer read.
const MAX_AUTH_ANSWER_BYTES: usize = 64 << 10;
/// The most of an error body read, for its message.
const MAX_ERROR_BODY_BYTES: usize = 64 << 10;
/// The most redirects followed for a blob.
const MAX_REDIRECTS: usize = 5;

/// How to authenticate to a registry. Secrets never appear in `Debug` output.
#[derive(Clone)]
pub enum Credentials {
    Anonymous,
    /// Sent as Basic, or exchanged at a token realm.
    Basic {
        username: String,
        password: String,
    },
    /// An ECR (or Berth ECR API) upstream: `GetAuthorizationToken` signed with SigV4 at
    /// `endpoint` (default `https://api.ecr.<region>.amazonaws.com`), the token then used as
    /// Basic `AWS:<password>`.
    Ecr {
        access_key_id: String,
        secret_access_key: String,
        region: String,
        endpoint: Option<String>,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => {
                f.debug_struct("Basic").field("username", username).field("password", &"<redacted>").finish()
            }
            Credentials::Ecr { access_key_id, region, endpoint, .. } => f
                .debug_struct("Ecr")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"<redacted>")
                .field("region", region)
                .field("endpoint", endpoint)
                .finish(),
        }
    }
}

/// Where another registry is and how to reach it.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// `https://host[:port]` or `http://host[:port]`.
    pub url: String,
    pub credentials: Credentials,
    /// Extra CA certificates (PEM) trusted besides the system's, for a private registry.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// Per request: connecting and waiting for the answer's headers (and, while a body is
    /// sent or read, the longest stall).
    pub timeout: Duration,
}

/// A client of one registry. Cheap to clone; tokens are cached per scope until they expire.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    /// As configured, without a trailing `/`.
    url: String,
    /// The registry's origin with path `/`.
    base: Url,
    client: reqwest::Client,
    credentials: Credentials,
    timeout: Duration,
    auth: auth::AuthState,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream").field("url", &self.inner.url).field("credentials", &self.inner.credentials).finish()
    }
}

/// Why a call to another registry failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// 404 / `NAME_UNKNOWN` / `MANIFEST_UNKNOWN` / `BLOB_UNKNOWN`.
    #[error("not found upstream")]
    NotFound,
    /// 401/403 after authentication was tried: the credentials are wrong or not allowed.
    #[error("denied by the upstream registry: {0}")]
    Denied(String),
    /// Connection refused, timeout, 5xx, 429: try later (or serve what is cached).
    #[error("upstream registry unavailable: {0}")]
    Unavailable(String),
    /// A bad answer: digest or size mismatch, unparsable, or a configuration the client refuses.
    #[error("invalid answer from the upstream registry: {0}")]
    Invalid(String),
}

type Result<T, E = UpstreamError> = std::result::Result<T, E>;

/// What a `HEAD` of a manifest tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// A manifest whose bytes hash to `digest`.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

/// A blob body: `size` from `Content-Length`; `body` yields the bytes and ends with an error
/// item (`io::ErrorKind::InvalidData`) if they do not hash to the digest asked for or their
/// count differs from `size`. Nothing may be made visible before the stream ended cleanly.
pub struct BlobBody {
    pub size: u64,
    pub body: futures::stream::BoxStream<'static, std::io::Result<Bytes>>,
}

impl fmt::Debug for BlobBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobBody").field("size", &self.size).finish_non_exhaustive()
    }
}

impl Upstream {
    /// A client for `cfg.url`; refuses a URL that is not `http(s)://host[:port]` and CA
    /// certificates that do not parse.
    pub fn new(cfg: UpstreamConfig) -> Result<Upstream> {
        let base = base_url(&cfg.url)?;
        let mut builder = reqwest::Client::builder()
            // Redirects are followed by hand (blobs only), so credentials never follow them.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Berth/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(cfg.timeout)
            .read_timeout(cfg.timeout);
        if let Some(pem) = &cfg.ca_cert_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| UpstreamError::Invalid(format!("the CA certificates do not parse: {e}")))?;
            if certs.is_empty() {
                return Err(UpstreamError::Invalid("the CA certificate file holds no certificate".into()));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let client =
            builder.build().map_err(|e| UpstreamError::Invalid(format!("no HTTP client for the upstream: {e}")))?;
        Ok(Upstream {
            inner: Arc::new(Inner {
                url: cfg.url.trim_end_matches('/').to_owned(),
                base,
                client,
                credentials: cfg.credentials,
                timeout: cfg.timeout,
                auth: auth::AuthState::default(),
            }),
        })
    }

    /// The registry's URL as configured (without a trailing `/`).
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// `GET /v2/` with the credentials: `Ok` when they are accepted.
    pub async fn check(&self) -> Result<()> {
        let url = self.v2("")?;
        let resp = self.send(Method::GET, url, HeaderMap::new(), None, &[]).await?;
        if resp.status() == StatusCode::OK {
            return Ok(());
        }
        Err(refusal(resp).await)
    }

    /// `<base>/v2/<path>`.
    fn v2(&self, path: &str) -> Result<Url> {
        self.inner.base.join(&format!("v2/{path}")).map_err(|e| UpstreamError::Invalid(format!("URL: {e}")))
    }

    /// Whether `url` is on the configured registry's origin (scheme, host and port).
    fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.inner.base.origin()
    }

    /// Sends a request with the authorization the registry asked for, learning it from a 401
    /// and retrying once; the answer is returned whatever its status.
    async fn send(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Option<Bytes>,
        scopes: &[String],
    ) -> Result<Response> {
        let first = self.inner.auth.header(self, scopes, false).await?;
        let resp = self.once(method.clone(), url.clone(), headers.clone(), body.clone(), first.as_ref()).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        self.inner.auth.learn(resp.headers());
        let Some(second) = self.inner.auth.header(self, scopes, true).await? else {
            return Ok(resp);
        };
        self.once(method, url, headers, body, Some(&second)).await
    }

    /// One request, no retry: `Unavailable` when nothing answers within the timeout.
    async fn once(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Option<Bytes>,
        authorization: Option<&HeaderValue>,
    ) -> Result<Response> {
        let mut req = self.inner.client.request(method, url).headers(headers);
        if let Some(a) = authorization {
            req = req.header(AUTHORIZATION, a.clone());
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        self.timed(req.send()).await
    }

    /// `fut` (a request's send) within the timeout, its error as `Unavailable`.
    async fn timed(&self, fut: impl Future<Output = reqwest::Result<Response>>) -> Result<Response> {
        match tokio::time::timeout(self.inner.timeout, fut).await {
            Err(_) => {
                Err(UpstreamError::Unavailable(format!("no answer within {} ms", self.inner.timeout.as_millis())))
            }
            Ok(Err(e)) => Err(UpstreamError::Unavailable(describe(&e))),
            Ok(Ok(r)) => Ok(r),
        }
    }
}

/// The configured URL as an origin with path `/`.
fn base_url(url: &str) -> Result<Url> {
    let invalid = |why: &str| UpstreamError::Invalid(format!("upstream URL {url:?}: {why}"));
    let parsed = Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("must be http:// or https://"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("must not carry credentials (give them as credentials)"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || !matches!(parsed.path(), "" | "/") {
        return Err(invalid("must be scheme://host[:port] alone"));
    }
    let mut base = parsed;
    base.set_path("/");
    Ok(base)
}

/// A repository name, checked (so nothing but a name lands in a URL path).
fn repo_name(repo: &str) -> Result<RepoName> {
    repo.parse().map_err(|e| UpstreamError::Invalid(format!("repository name {repo:?}: {e}")))
}

/// A tag or digest, checked.
fn reference(reference: &str) -> Result<Reference> {
    reference.parse().map_err(|e| UpstreamError::Invalid(format!("reference {reference:?}: {e}")))
}

/// `repository:<repo>:pull`.
fn pull_scope(repo: &RepoName) -> String {
    format!("repository:{}:pull", repo.as_str())
}

/// `repository:<repo>:pull,push`.
fn push_scope(repo: &RepoName) -> String {
    format!("repository:{}:pull,push", repo.as_str())
}

/// A transport error, without its URL (a redirect's may carry a pre-signed query).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "request failed"
    };
    let mut msg = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    match e.url() {
        Some(url) => msg.replace(url.as_str(), "<url>"),
        None => msg,
    }
}

/// Reads at most `max` bytes of `resp`'s body (`Invalid` beyond), within the timeout.
async fn read_bounded(resp: Response, max: usize, timeout: Duration) -> Result<Bytes> {
    if let Some(n) = resp.content_length().filter(|n| *n > max as u64) {
        return Err(UpstreamError::Invalid(format!("an answer of {n} bytes, more than the {max} allowed")));
    }
    let read = async move {
        let mut resp = resp;
        let mut out = bytes::BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| UpstreamError::Unavailable(describe(&e)))? {
            if out.len() + chunk.len() > max {
                return Err(UpstreamError::Invalid(format!("an answer of more than the {max} bytes allowed")));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(UpstreamError::Unavailable(format!("the answer was not read within {} ms", timeout.as_millis()))),
    }
}

/// The error an unexpected answer stands for, with the registry's own error code and
/// message when its body has them.
async fn refusal(resp: Response) -> UpstreamError {
    let status = resp.status();
    if status == StatusCode::NOT_FOUND {
        return UpstreamError::NotFound;
    }
    let body = read_bounded(resp, MAX_ERROR_BODY_BYTES, Duration::from_secs(5)).await.unwrap_or_default();
    let detail = error_detail(&body);
    let msg = if detail.is_empty() { status.to_string() } else { format!("{status}: {detail}") };
    match status.as_u16() {
        401 | 403 => UpstreamError::Denied(msg),
        429 | 500..=599 => UpstreamError::Unavailable(msg),
        // A registry answering 400 `*_UNKNOWN` (some do for a missing blob or manifest).
        _ if detail.starts_with("NAME_UNKNOWN")
            || detail.starts_with("MANIFEST_UNKNOWN")
            || detail.starts_with("BLOB_UNKNOWN") =>
        {
            UpstreamError::NotFound
        }
        _ => UpstreamError::Invalid(msg),
    }
}

/// `CODE: message` of the first error in an OCI error body, in printable characters.
fn error_detail(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let Some(first) = v.get("errors").and_then(|e| e.get(0)) else { return String::new() };
    let code = first.get("code").and_then(|c| c.as_str()).unwrap_or_default();
    let message = first.get("message").and_then(|c| c.as_str()).unwrap_or_default();
    let text = if message.is_empty() { code.to_owned() } else { format!("{code}: {message}") };
    text.chars().take(300).map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// A header's value as text.
fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The `Content-Length` header (a HEAD's too), if it is a number.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, "content-length").and_then(|v| v.trim().parse().ok())
}

/// The `Docker-Content-Digest` header, if present: `Invalid` if it does not parse.
fn answered_digest(headers: &HeaderMap) -> Result<Option<Digest>> {
    match header_str(headers, "docker-content-digest") {
        None => Ok(None),
        Some(v) => {
            v.trim().parse().map(Some).map_err(|e| UpstreamError::Invalid(format!("Docker-Content-Digest {v:?}: {e}")))
        }
    }
}

/// A `Location` header resolved against the URL it answered.
fn location(resp: &Response) -> Result<Url> {
    let loc = header_str(resp.headers(), "location")
        .ok_or_else(|| UpstreamError::Invalid(format!("{} without a Location", resp.status())))?;
    resp.url().join(loc).map_err(|e| UpstreamError::Invalid(format!("Location: {e}")))
}
