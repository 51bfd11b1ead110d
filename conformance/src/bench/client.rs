//! The registry as the benchmark sees it: a handful of distribution-API verbs
//! over one pooled HTTP/1.1 client, each checking the status it gets and
//! turning anything else into a [`BenchError`].
//!
//! Bodies stream both ways: pushes send [`Payload`] segments without copying,
//! pulls count bytes as they arrive and keep none of them.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LINK, LOCATION, RANGE};
use reqwest::{Method, Response, Url};
use serde::Serialize;

use super::payload::Payload;
use super::{BenchError, raw_get};
use crate::auth::{Auth, Credentials};
use crate::content::ACCEPT_ALL_MANIFESTS;
use crate::wire;

const OCTET_STREAM: &str = "application/octet-stream";

/// How a registry takes a blob in one piece, learnt once per registry by
/// [`Target::probe_monolithic`] so a large body is never sent twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MonolithicMode {
    /// `POST ?digest=` with the body, answered 201 (end-4b).
    SinglePost,
    /// `POST` for a session, then `PUT ?digest=` with the body (end-4a): what
    /// registries that answer the single POST with 202 need.
    PostThenPut,
}

impl MonolithicMode {
    /// How reports name it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::SinglePost => "single POST ?digest= with the body (201)",
            Self::PostThenPut => "POST, then PUT ?digest= with the body (the registry answers a single POST with 202)",
        }
    }
}

/// One page of a paginated listing.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// The entries of the page (`repositories` or `tags`).
    pub entries: Vec<String>,
    /// Where the `Link: <…>; rel="next"` header points, resolved.
    pub next: Option<Url>,
}

/// A registry at a base URL, with its own connection pool, signed in the way the
/// registry asks (see [`Target::sign_in`]).
#[derive(Debug, Clone)]
pub struct Target {
    http: reqwest::Client,
    auth: Auth,
    base: Url,
    /// Kept to sign in to another address of the same registry ([`Target::at`]).
    credentials: Option<Credentials>,
}

/// Root certificates every [`Target`] made after [`trust_root_pem`] trusts, on top of the
/// system's: how `berth-bench run --ca-cert` reaches a registry whose certificate a private
/// CA signed (the `tls` scenario). Process-wide because only adding trust is possible here.
static EXTRA_ROOTS: std::sync::Mutex<Vec<reqwest::Certificate>> = std::sync::Mutex::new(Vec::new());

/// Trusts the PEM certificate(s) in `pem` as roots for every [`Target`] made from now on.
pub fn trust_root_pem(pem: &[u8]) -> Result<(), BenchError> {
    let certs = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|e| BenchError::new(format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(BenchError::new("no certificate in the PEM given"));
    }
    EXTRA_ROOTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(certs);
    Ok(())
}

/// Time allowed for a request moving `len` bytes: 30 s plus 5 MB/s, so a
/// stalled server fails the request instead of hanging the run.
fn transfer_timeout(len: u64) -> Duration {
    Duration::from_secs(30) + Duration::from_secs_f64(len as f64 / 5e6)
}

/// First 300 bytes of a body, for error messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).trim().to_owned();
    if text.is_empty() { "(empty body)".to_owned() } else { text }
}

impl Target {
    /// A client for the registry at `base` (plain HTTP/1.1, no proxy) that signs in with
    /// `credentials` once [`Target::sign_in`] has learnt how.
    pub fn new(base: Url, credentials: Option<Credentials>) -> Result<Self, BenchError> {
        let roots = EXTRA_ROOTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let http = reqwest::Client::builder()
            .tls_certs_merge(roots)
            .no_proxy()
            .http1_only()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("berth-bench/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let auth = Auth::new(http.clone(), std::slice::from_ref(&base), credentials.clone())?;
        Ok(Self { http, auth, base, credentials })
    }

    /// The same registry (same credentials) at another base URL: its plain-HTTP port, or
    /// another replica. Signed in before it is returned.
    pub async fn at(&self, base: Url) -> Result<Self, BenchError> {
        let other = Self::new(base, self.credentials.clone())?;
        other.sign_in().await?;
        Ok(other)
    }

    /// Learns from `GET /v2/` how the registry wants to be signed in to; returns a line
    /// saying how. Requests are signed in before they are sent (a streamed blob body cannot
    /// be sent twice), so this comes before any scenario.
    pub async fn sign_in(&self) -> Result<String, BenchError> {
        self.auth.discover(&self.base, Duration::from_secs(30)).await
    }

    /// Sends a request, signed in; a bodyless or in-memory one is retried once after a
    /// 401 with a new challenge.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Response, BenchError> {
        self.auth.execute(&self.http, request.build()?).await
    }

    /// The registry's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `base + path`, where `path` starts with `/v2/` and may carry a query.
    pub fn url(&self, path: &str) -> Result<Url, BenchError> {
        let base = self.base.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}{path}")).map_err(|e| BenchError::new(format!("cannot build URL for {path}: {e}")))
    }

    /// Returns the response if its status is one of `want`, else an error
    /// naming the request, the status and the start of the body.
    async fn expect(response: Response, method: &Method, want: &[u16]) -> Result<Response, BenchError> {
        let status = response.status().as_u16();
        if want.contains(&status) {
            return Ok(response);
        }
        let path = response.url().path().to_owned();
        let body = response.bytes().await.unwrap_or_default();
        Err(BenchError::new(format!("{method} {path}: want {want:?}, got {status}: {}", snippet(&body))))
    }

    /// Reads and drops the rest of a body so the connection goes back to the pool.
    async fn drain(response: Response) -> Result<(), BenchError> {
        response.bytes().await?;
        Ok(())
    }

    fn location(response: &Response) -> Result<Url, BenchError> {
        let value = response
            .headers()
            .get(LOCATION)
            .ok_or_else(|| BenchError::new(format!("{}: no Location header", response.url().path())))?;
        let value = value.to_str().map_err(|_| BenchError::new("Location is not text"))?;
        wire::resolve_location(response.url(), value).map_err(BenchError::new)
    }

    /// `GET /v2/`, not signed in: 200 (or 401, which also means "up").
    pub async fn ping(&self) -> Result<(), BenchError> {
        let response = self.http.get(self.url("/v2/")?).timeout(Duration::from_secs(2)).send().await?;
        let response = Self::expect(response, &Method::GET, &[200, 401]).await?;
        Self::drain(response).await
    }

    /// Pushes a small blob with a single `POST ?digest=` and learns from the
    /// answer which [`MonolithicMode`] this registry needs (the blob is
    /// completed either way).
    pub async fn probe_monolithic(&self, repo: &str, payload: &Payload) -> Result<MonolithicMode, BenchError> {
        let response = self.single_post(repo, payload).await?;
        let response = Self::expect(response, &Method::POST, &[201, 202]).await?;
        if response.status().as_u16() == 201 {
            Self::drain(response).await?;
            return Ok(MonolithicMode::SinglePost);
        }
        let location = Self::location(&response)?;
        Self::drain(response).await?;
        self.finish_upload(location, payload.digest(), Some(payload)).await?;
        Ok(MonolithicMode::PostThenPut)
    }

    async fn single_post(&self, repo: &str, payload: &Payload) -> Result<Response, BenchError> {
        let mut url = self.url(&format!("/v2/{repo}/blobs/uploads/"))?;
        url.query_pairs_mut().append_pair("digest", payload.digest());
        let request = self
            .http
            .post(url)
            .header(CONTENT_TYPE, OCTET_STREAM)
            .header(CONTENT_LENGTH, payload.len())
            .body(payload.body())
            .timeout(transfer_timeout(payload.len()));
        self.send(request).await
    }

    /// Pushes a whole blob in one request body (see [`MonolithicMode`]).
    pub async fn push_monolithic(&self, repo: &str, payload: &Payload, mode: MonolithicMode) -> Result<(), BenchError> {
        match mode {
            MonolithicMode::SinglePost => {
                let response = self.single_post(repo, payload).await?;
                let response = Self::expect(response, &Method::POST, &[201, 202]).await?;
                if response.status().as_u16() == 201 {
                    return Self::drain(response).await;
                }
                // The registry changed its mind; finishing the session keeps
                // the push correct (the body travels twice).
                let location = Self::location(&response)?;
                Self::drain(response).await?;
                self.finish_upload(location, payload.digest(), Some(payload)).await
            }
            MonolithicMode::PostThenPut => {
                let (location, _) = self.start_upload(repo).await?;
                self.finish_upload(location, payload.digest(), Some(payload)).await
            }
        }
    }

    /// Pushes a blob as a session: `POST`, one `PATCH` per `chunk` bytes with
    /// `Content-Range`, then a body-less `PUT ?digest=` (end-5, end-6).
    /// Honors a larger `OCI-Chunk-Min-Length` if the registry asks for one.
    pub async fn push_chunked(&self, repo: &str, payload: &Payload, chunk: u64) -> Result<(), BenchError> {
        let (mut location, min_chunk) = self.start_upload(repo).await?;
        let chunk = chunk.max(min_chunk).max(1);
        let mut start = 0;
        while start < payload.len() {
            let end = (start + chunk).min(payload.len());
            let request = self
                .http
                .patch(location)
                .header(CONTENT_TYPE, OCTET_STREAM)
                .header(CONTENT_LENGTH, end - start)
                .header(CONTENT_RANGE, wire::format_upload_range(start, end - 1))
                .body(payload.range_body(start, end))
                .timeout(transfer_timeout(end - start));
            let response = self.send(request).await?;
            let response = Self::expect(response, &Method::PATCH, &[202]).await?;
            location = Self::location(&response)?;
            Self::drain(response).await?;
            start = end;
        }
        self.finish_upload(location, payload.digest(), None).await
    }

    /// Pushes a blob the way docker does: `POST`, one `PATCH` streaming the
    /// whole body (chunked transfer encoding, no `Content-Range`), then a
    /// body-less `PUT ?digest=`.
    pub async fn push_streamed(&self, repo: &str, payload: &Payload) -> Result<(), BenchError> {
        let (location, _) = self.start_upload(repo).await?;
        let request = self
            .http
            .patch(location)
            .header(CONTENT_TYPE, OCTET_STREAM)
            .body(payload.stream_body())
            .timeout(transfer_timeout(payload.len()));
        let response = self.send(request).await?;
        let response = Self::expect(response, &Method::PATCH, &[202]).await?;
        let location = Self::location(&response)?;
        Self::drain(response).await?;
        self.finish_upload(location, payload.digest(), None).await
    }

    /// `POST /v2/<repo>/blobs/uploads/` → 202: the session URL and the
    /// registry's `OCI-Chunk-Min-Length` (0 if none).
    async fn start_upload(&self, repo: &str) -> Result<(Url, u64), BenchError> {
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"))?;
        let response = self.send(self.http.post(url).header(CONTENT_LENGTH, 0).timeout(transfer_timeout(0))).await?;
        let response = Self::expect(response, &Method::POST, &[202]).await?;
        let min_chunk = response
            .headers()
            .get("oci-chunk-min-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let location = Self::location(&response)?;
        Self::drain(response).await?;
        Ok((location, min_chunk))
    }

    /// `PUT <session>?digest=` with the remaining bytes (or none) → 201.
    async fn finish_upload(&self, mut location: Url, digest: &str, body: Option<&Payload>) -> Result<(), BenchError> {
        location.query_pairs_mut().append_pair("digest", digest);
        let request = self.http.put(location).header(CONTENT_TYPE, OCTET_STREAM);
        let request = match body {
            Some(payload) => request
                .header(CONTENT_LENGTH, payload.len())
                .body(payload.body())
                .timeout(transfer_timeout(payload.len())),
            None => request.header(CONTENT_LENGTH, 0).timeout(transfer_timeout(0)),
        };
        let response = Self::expect(self.send(request).await?, &Method::PUT, &[201]).await?;
        Self::drain(response).await
    }

    /// `HEAD /v2/<repo>/blobs/<digest>`: whether the blob is there.
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool, BenchError> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"))?;
        let response = self.send(self.http.head(url).timeout(transfer_timeout(0))).await?;
        let response = Self::expect(response, &Method::HEAD, &[200, 404]).await?;
        let found = response.status().as_u16() == 200;
        Self::drain(response).await?;
        Ok(found)
    }

    /// `GET /v2/<repo>/blobs/<digest>`, whole (200) or the inclusive byte
    /// `range` (206); reads the body to the end without keeping it and checks
    /// that `want_len` bytes came. Returns the byte count.
    pub async fn get_blob(
        &self,
        repo: &str,
        digest: &str,
        range: Option<(u64, u64)>,
        want_len: u64,
    ) -> Result<u64, BenchError> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"))?;
        let mut request = self.http.get(url).timeout(transfer_timeout(want_len));
        if let Some((first, last)) = range {
            request = request.header(RANGE, wire::ByteRange::Closed { first, last }.header());
        }
        let want_status: &[u16] = if range.is_some() { &[206] } else { &[200] };
        if self.base.scheme() == "http"
            && let Some(got) = self.get_blob_raw(request.try_clone(), want_status, want_len).await?
        {
            return Ok(got);
        }
        let mut response = Self::expect(self.send(request).await?, &Method::GET, want_status).await?;
        let mut got = 0u64;
        while let Some(chunk) = response.chunk().await? {
            got += chunk.len() as u64;
        }
        if got != want_len {
            return Err(BenchError::new(format!("GET blob {digest}: want {want_len} bytes, got {got}")));
        }
        Ok(got)
    }

    /// [`Target::get_blob`] over plain HTTP with [`raw_get`]: the bytes received; `None` when
    /// the answer is one the ordinary client should take (a 401 to sign in again, a redirect).
    async fn get_blob_raw(
        &self,
        request: Option<reqwest::RequestBuilder>,
        want_status: &[u16],
        want_len: u64,
    ) -> Result<Option<u64>, BenchError> {
        let Some(request) = request else { return Ok(None) };
        let mut request = request.build()?;
        self.auth.sign(&mut request).await?;
        let url = request.url();
        let (Some(host), Some(port)) = (url.host_str().map(str::to_owned), url.port_or_known_default()) else {
            return Ok(None);
        };
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
            .collect();
        let timeout = transfer_timeout(want_len);
        let answer = tokio::task::spawn_blocking(move || raw_get::get(&host, port, &path, &headers, timeout))
            .await
            .map_err(|e| BenchError::new(format!("raw GET task failed: {e}")))??;
        if answer.status == 401 || (300..400).contains(&answer.status) {
            return Ok(None);
        }
        if !want_status.contains(&answer.status) {
            return Err(BenchError::new(format!("GET blob: status {}, want {want_status:?}", answer.status)));
        }
        if answer.body_len != want_len {
            return Err(BenchError::new(format!("GET blob: want {want_len} bytes, got {}", answer.body_len)));
        }
        Ok(Some(answer.body_len))
    }

    /// `PUT /v2/<repo>/manifests/<reference>` → 201.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: Bytes,
    ) -> Result<(), BenchError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"))?;
        let len = body.len() as u64;
        let request = self.http.put(url).header(CONTENT_TYPE, media_type).body(body).timeout(transfer_timeout(len));
        let response = Self::expect(self.send(request).await?, &Method::PUT, &[201]).await?;
        Self::drain(response).await
    }

    /// `GET` (or `HEAD`) `/v2/<repo>/manifests/<reference>` → 200; returns
    /// the body length (0 for HEAD).
    pub async fn get_manifest(&self, repo: &str, reference: &str, method: Method) -> Result<u64, BenchError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"))?;
        let request =
            self.http.request(method.clone(), url).header(ACCEPT, ACCEPT_ALL_MANIFESTS).timeout(transfer_timeout(0));
        let response = Self::expect(self.send(request).await?, &method, &[200]).await?;
        Ok(response.bytes().await?.len() as u64)
    }

    /// `GET url` for a listing (`_catalog` or `tags/list`); `key` names the
    /// array to read (`repositories` or `tags`). A `null` array reads as empty.
    pub async fn list_page(&self, url: Url, key: &str) -> Result<ListPage, BenchError> {
        let response = self.send(self.http.get(url.clone()).timeout(Duration::from_secs(120))).await?;
        let response = Self::expect(response, &Method::GET, &[200]).await?;
        let next = match response.headers().get(LINK).and_then(|v| v.to_str().ok()).and_then(wire::parse_link_next) {
            Some(target) => Some(wire::resolve_location(&url, &target).map_err(BenchError::new)?),
            None => None,
        };
        let body: serde_json::Value = serde_json::from_slice(&response.bytes().await?)?;
        let entries = match body.get(key) {
            Some(serde_json::Value::Array(items)) => {
                items.iter().filter_map(|item| item.as_str().map(str::to_owned)).collect()
            }
            Some(serde_json::Value::Null) | None => Vec::new(),
            Some(other) => {
                return Err(BenchError::new(format!("GET {}: `{key}` is not an array: {other}", url.path())));
            }
        };
        Ok(ListPage { entries, next })
    }
    /// `DELETE /v2/<repo>/blobs/<digest>` → 202 (or 404 if it is gone already): what a
    /// scenario does with the blobs it pushed, on any registry that allows deletes.
    pub async fn delete_blob(&self, repo: &str, digest: &str) -> Result<(), BenchError> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"))?;
        let response = self.send(self.http.delete(url).timeout(transfer_timeout(0))).await?;
        let response = Self::expect(response, &Method::DELETE, &[202, 404]).await?;
        Self::drain(response).await
    }

    /// `DELETE /api/v1/repositories?name=<repo>&force=true` (Berth's admin API) → 204: the
    /// repository goes with its manifests and blob links; the bytes stay for the collector.
    pub async fn delete_repository(&self, repo: &str) -> Result<(), BenchError> {
        let mut url = self.url("/api/v1/repositories")?;
        url.query_pairs_mut().append_pair("name", repo).append_pair("force", "true");
        let response = self.send(self.http.delete(url).timeout(transfer_timeout(0))).await?;
        let response = Self::expect(response, &Method::DELETE, &[204]).await?;
        Self::drain(response).await
    }

    /// `POST /api/v1/gc` (Berth's admin API): one collection, run to its end before the
    /// answer, whose body (the run's record) is returned. `None` when another collector holds
    /// the lease (409).
    pub async fn collect(&self, timeout: Duration) -> Result<Option<serde_json::Value>, BenchError> {
        let url = self.url("/api/v1/gc")?;
        let body = serde_json::json!({"dry_run": false, "repository": null}).to_string();
        let request = self.http.post(url).header(CONTENT_TYPE, "application/json").body(body).timeout(timeout);
        let response = Self::expect(self.send(request).await?, &Method::POST, &[200, 409]).await?;
        let status = response.status().as_u16();
        let body = response.bytes().await?;
        if status == 409 {
            return Ok(None);
        }
        Ok(Some(serde_json::from_slice(&body)?))
    }
}
