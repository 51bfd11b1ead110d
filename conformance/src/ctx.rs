//! The per-case view of the registry: an HTTP client that records what it
//! saw, a captured response type with assertion helpers, and the few
//! multi-request steps (push a blob, push an image) most cases start with.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, RequestBuilder, Url};
use serde_json::Value;

use crate::auth::{Auth, Credentials};
use crate::check::{CaseResult, Failure};
use crate::config::Flags;
use crate::content::{self, ACCEPT_ALL_MANIFESTS, OCI_MANIFEST, RandomSource};
use crate::wire;
use crate::{ensure, ensure_eq, fail};

/// State shared by all cases of one run.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) http: reqwest::Client,
    /// Signs every request to a registry path in, the way the registry asked.
    pub(crate) auth: Auth,
    pub(crate) base: Url,
    pub(crate) namespace: String,
    pub(crate) flags: Flags,
    pub(crate) rng: Arc<Mutex<RandomSource>>,
    /// Every 5xx answer seen in the run, as `METHOD path -> status`, for
    /// the "nothing ever answered 5xx" case that runs last.
    pub(crate) server_errors: Arc<Mutex<Vec<String>>>,
}

/// What a case gets: the registry, the flags, fresh content, and a place
/// for notes.
#[derive(Debug)]
pub struct Ctx {
    shared: Shared,
    case: &'static str,
    notes: Mutex<Vec<String>>,
}

/// A response, read to the end, with the request it answered.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Request method.
    pub method: Method,
    /// Request URL.
    pub url: Url,
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body (empty for HEAD).
    pub body: Bytes,
}

/// An image the suite pushed: its manifest bytes and what they reference.
#[derive(Debug, Clone)]
pub struct Image {
    /// The exact manifest bytes sent.
    pub manifest: Vec<u8>,
    /// `sha256` of `manifest`.
    pub digest: String,
    /// The config blob.
    pub config: Vec<u8>,
    /// The single layer blob.
    pub layer: Vec<u8>,
}

impl Image {
    /// The descriptor other manifests use to point at this one.
    pub fn descriptor(&self) -> Value {
        content::descriptor(OCI_MANIFEST, &self.manifest)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these simple values inconsistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ctx {
    pub(crate) fn new(shared: Shared, case: &'static str) -> Self {
        Self { shared, case, notes: Mutex::new(Vec::new()) }
    }

    pub(crate) fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.notes))
    }

    /// The run's flags.
    pub fn flags(&self) -> Flags {
        self.shared.flags
    }

    /// The registry's base URL.
    pub fn base(&self) -> &Url {
        &self.shared.base
    }

    /// The credentials the run signs in with, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.shared.auth.credentials()
    }

    /// This case's own repository: `<namespace>/<case name>`.
    pub fn repo(&self) -> String {
        format!("{}/{}", self.shared.namespace, self.case)
    }

    /// Another repository of this case: `<namespace>/<case name>/<suffix>`.
    pub fn repo_with(&self, suffix: &str) -> String {
        format!("{}/{}/{}", self.shared.namespace, self.case, suffix)
    }

    /// Records which allowed alternative the registry chose.
    pub fn note(&self, note: impl Into<String>) {
        lock(&self.notes).push(note.into());
    }

    /// `len` fresh random bytes.
    pub fn bytes(&self, len: usize) -> Vec<u8> {
        lock(&self.shared.rng).bytes(len)
    }

    /// A fresh lowercase hex token.
    pub fn token(&self, len: usize) -> String {
        lock(&self.shared.rng).token(len)
    }

    /// `base + path`, where `path` starts with `/v2/` and may carry a query.
    pub fn url(&self, path: &str) -> CaseResult<Url> {
        let base = self.shared.base.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}{path}")).map_err(|e| Failure::new(format!("cannot build URL for {path}: {e}")))
    }

    /// A request builder for `url` (no headers added).
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.shared.http.request(method, url)
    }

    /// A request builder for `base + path`.
    pub fn at(&self, method: Method, path: &str) -> CaseResult<RequestBuilder> {
        Ok(self.request(method, self.url(path)?))
    }

    /// Sends a request and reads the whole answer. A request to a registry
    /// path is signed in first (unless it carries its own `Authorization`).
    pub async fn send(&self, builder: RequestBuilder) -> CaseResult<Resp> {
        self.send_signed(builder, true).await
    }

    /// Sends a request as built, never signed in: for the cases that check
    /// what an anonymous client gets.
    pub async fn send_anonymous(&self, builder: RequestBuilder) -> CaseResult<Resp> {
        self.send_signed(builder, false).await
    }

    async fn send_signed(&self, builder: RequestBuilder, sign_in: bool) -> CaseResult<Resp> {
        let request = builder.build()?;
        let method = request.method().clone();
        let url = request.url().clone();
        let response = if sign_in {
            self.shared.auth.execute(&self.shared.http, request).await
        } else {
            self.shared.http.execute(request).await.map_err(Failure::from)
        };
        let response = response.map_err(|f| f.context(&format!("{method} {}", url.path())))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| {
            // Keep the status: "answered 416, then the body broke off" is a
            // different bug from "did not answer".
            Failure::from(e)
                .context(&format!("{method} {}: answered {status}, then reading the body failed", url.path()))
        })?;
        if status >= 500 {
            lock(&self.shared.server_errors).push(format!(
                "{method} {} -> {status} (case {})",
                path_and_query(&url),
                self.case
            ));
        }
        Ok(Resp { method, url, status, headers, body })
    }

    /// `send(at(method, path))` for requests without body or headers.
    pub async fn call(&self, method: Method, path: &str) -> CaseResult<Resp> {
        self.send(self.at(method, path)?).await
    }

    pub(crate) fn server_errors(&self) -> Vec<String> {
        lock(&self.shared.server_errors).clone()
    }

    /// Signed requests of the run answered 401 (then retried): how many, the first few.
    pub(crate) fn auth_refusals(&self) -> (usize, Vec<String>) {
        self.shared.auth.refusals()
    }

    // ---- multi-request steps -------------------------------------------

    /// `POST /v2/<repo>/blobs/uploads/` → 202; returns the session URL.
    pub async fn start_upload(&self, repo: &str) -> CaseResult<Url> {
        let resp = self
            .send(self.at(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))?.header(header::CONTENT_LENGTH, "0"))
            .await?;
        resp.expect(202)?;
        resp.location()
    }

    /// Pushes `data` as a blob of `repo` (POST, then one PUT with the whole
    /// body: the flow every registry supports). Returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> CaseResult<String> {
        let digest = content::sha256(data);
        let session = self.start_upload(repo).await.map_err(|f| f.context("starting blob upload"))?;
        let resp = self
            .send(
                self.request(Method::PUT, with_digest(&session, &digest))
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(data.to_vec()),
            )
            .await?;
        resp.expect(201).map_err(|f| f.context("completing blob upload"))?;
        Ok(digest)
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with `media_type`; no
    /// expectation on the answer.
    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> CaseResult<Resp> {
        self.send(
            self.at(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))?
                .header(header::CONTENT_TYPE, media_type)
                .body(body.to_vec()),
        )
        .await
    }

    /// Like [`Ctx::put_manifest`] but requires 201.
    pub async fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> CaseResult<Resp> {
        let resp = self.put_manifest(repo, reference, media_type, body).await?;
        resp.expect(201).map_err(|f| f.context(&format!("pushing manifest {reference}")))?;
        Ok(resp)
    }

    /// `GET`/`HEAD /v2/<repo>/manifests/<reference>` accepting every type.
    pub async fn fetch_manifest(&self, method: Method, repo: &str, reference: &str) -> CaseResult<Resp> {
        self.send(
            self.at(method, &format!("/v2/{repo}/manifests/{reference}"))?.header(header::ACCEPT, ACCEPT_ALL_MANIFESTS),
        )
        .await
    }

    /// Pushes a fresh one-layer OCI image into `repo` under `reference` (a
    /// tag, or `None` to push by digest).
    pub async fn push_image(&self, repo: &str, reference: Option<&str>) -> CaseResult<Image> {
        let layer = self.bytes(1024 + 512);
        let config = content::image_config(&layer, &self.token(16));
        self.push_blob(repo, &layer).await.map_err(|f| f.context("pushing layer"))?;
        self.push_blob(repo, &config).await.map_err(|f| f.context("pushing config"))?;
        let manifest = content::to_bytes(&content::oci_manifest(&config, &[&layer]));
        let digest = content::sha256(&manifest);
        self.push_manifest(repo, reference.unwrap_or(&digest), OCI_MANIFEST, &manifest).await?;
        Ok(Image { manifest, digest, config, layer })
    }

    /// `GET /v2/<repo>/tags/list` → 200; returns the tags (a `null` list
    /// reads as empty).
    pub async fn tags(&self, repo: &str) -> CaseResult<Vec<String>> {
        let resp = self.call(Method::GET, &format!("/v2/{repo}/tags/list")).await?;
        resp.expect(200)?;
        let body = resp.json()?;
        ensure_eq!(body["name"], Value::from(repo), "tags list `name`");
        string_list(&body["tags"], "tags")
    }
}

/// Reads a JSON array of strings (`null` as empty).
pub fn string_list(value: &Value, what: &str) -> CaseResult<Vec<String>> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| Failure::new(format!("`{what}` holds a non-string: {v}")))
            })
            .collect(),
        other => fail!("`{what}` is not a list: {other}"),
    }
}

/// `url` with `digest=<digest>` appended to its query (the upload session
/// URL may already carry state in its query).
pub fn with_digest(url: &Url, digest: &str) -> Url {
    let mut url = url.clone();
    url.query_pairs_mut().append_pair("digest", digest);
    url
}

/// `path?query` for messages. Opaque server state in the query (keys that
/// start with `_`, like Distribution's signed `_state`) is elided: it says
/// nothing to a reader and makes lines unreadable.
fn path_and_query(url: &Url) -> String {
    let Some(query) = url.query() else {
        return url.path().to_owned();
    };
    let shown: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.starts_with('_') => format!("{key}=…"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{}?{}", url.path(), shown.join("&"))
}

impl Resp {
    /// `METHOD /path?query`, for messages.
    pub fn what(&self) -> String {
        format!("{} {}", self.method, path_and_query(&self.url))
    }

    /// A header as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A header that must be present.
    pub fn require_header(&self, name: &str) -> CaseResult<&str> {
        self.header(name).ok_or_else(|| Failure::new(format!("{}: no `{name}` header", self.what())))
    }

    /// A short, printable excerpt of the body for failure messages.
    pub fn body_excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        if text.is_empty() {
            return "empty body".to_owned();
        }
        let mut short: String = text.chars().take(200).collect();
        if short.len() < text.len() {
            short.push('…');
        }
        short.replace('\n', " ")
    }

    /// Requires exactly `status`.
    pub fn expect(&self, status: u16) -> CaseResult<&Self> {
        ensure!(self.status == status, "{}: want {status}, got {} ({})", self.what(), self.status, self.body_excerpt());
        Ok(self)
    }

    /// Requires one of `statuses`; returns the one it got.
    pub fn expect_any(&self, statuses: &[u16]) -> CaseResult<u16> {
        ensure!(
            statuses.contains(&self.status),
            "{}: want one of {statuses:?}, got {} ({})",
            self.what(),
            self.status,
            self.body_excerpt()
        );
        Ok(self.status)
    }

    /// The body as JSON.
    pub fn json(&self) -> CaseResult<Value> {
        serde_json::from_slice(&self.body).map_err(|e| Failure::new(format!("{}: body is not JSON ({e})", self.what())))
    }

    /// Validates the spec's error envelope
    /// `{"errors":[{"code":"UPPER_CASE","message":"..."}, ...]}` and returns
    /// the codes. `message` is required here although the spec makes it
    /// optional: every registry sends one and clients print it.
    pub fn error_codes(&self) -> CaseResult<Vec<String>> {
        let body = self.json()?;
        let Some(errors) = body.get("errors").and_then(Value::as_array) else {
            fail!("{}: error body has no `errors` list: {}", self.what(), self.body_excerpt());
        };
        ensure!(!errors.is_empty(), "{}: error body has an empty `errors` list", self.what());
        let mut codes = Vec::new();
        for error in errors {
            let Some(code) = error.get("code").and_then(Value::as_str) else {
                fail!("{}: error without a string `code`: {error}", self.what());
            };
            ensure!(
                !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{}: error code {code:?} is not [A-Z_]+",
                self.what()
            );
            ensure!(
                error.get("message").is_some_and(Value::is_string),
                "{}: error {code} has no string `message`",
                self.what()
            );
            codes.push(code.to_owned());
        }
        Ok(codes)
    }

    /// Requires `status` and an error envelope containing `code`.
    pub fn expect_error(&self, status: u16, code: &str) -> CaseResult<()> {
        self.expect(status)?;
        if self.method == Method::HEAD {
            // HEAD answers carry no body to read a code from.
            return Ok(());
        }
        let codes = self.error_codes()?;
        ensure!(codes.iter().any(|c| c == code), "{}: want error code {code}, got {codes:?}", self.what());
        Ok(())
    }

    /// The `Location` header resolved against this request's URL.
    pub fn location(&self) -> CaseResult<Url> {
        let location = self.require_header("location")?;
        wire::resolve_location(&self.url, location).map_err(|e| Failure::new(format!("{}: {e}", self.what())))
    }

    /// Requires `Docker-Content-Digest: <digest>`.
    pub fn expect_digest_header(&self, digest: &str) -> CaseResult<()> {
        let got = self.require_header("docker-content-digest")?;
        ensure_eq!(got, digest, "{}: Docker-Content-Digest", self.what());
        Ok(())
    }

    /// Requires the body to equal `want` byte for byte.
    pub fn expect_body(&self, want: &[u8]) -> CaseResult<()> {
        if self.body.as_ref() == want {
            return Ok(());
        }
        let first_diff =
            self.body.iter().zip(want).position(|(a, b)| a != b).unwrap_or(self.body.len().min(want.len()));
        fail!(
            "{}: body differs from what was pushed ({} bytes, want {}; first difference at byte {first_diff})",
            self.what(),
            self.body.len(),
            want.len()
        )
    }
}
