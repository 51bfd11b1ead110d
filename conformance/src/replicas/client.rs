//! The replicas as the workload sees them: N base URLs behind one pooled HTTP client (and
//! one without a pool, for racing chunks), every request addressed to one replica by
//! index, every answer captured with that index so a message can say which replica said
//! what. One [`Auth`] signs in for all replicas: tokens come from the realm the first
//! replica names and are used on every replica, as behind a load balancer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, Url};
use sha2::{Digest as _, Sha256};

use crate::auth::{Auth, Credentials};
use crate::check::{CaseResult, Failure};
use crate::content::ACCEPT_ALL_MANIFESTS;
use crate::ctx::Resp;
use crate::{ensure, wire};

/// `application/octet-stream`, the type of every blob body sent.
pub(crate) const OCTET_STREAM: &str = "application/octet-stream";

/// Request and byte counters for the summary.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) requests: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
}

/// N replicas of one registry.
#[derive(Debug)]
pub(crate) struct Replicas {
    http: reqwest::Client,
    /// A client that keeps no idle connection: for requests a registry may answer before
    /// reading their body (a racing chunk). A server may then close the connection, and a
    /// dead connection must not go back to the shared pool and fail an unrelated request.
    isolated: reqwest::Client,
    auth: Auth,
    /// Bounds every request.
    timeout: Duration,
    bases: Vec<Url>,
    pub(crate) stats: Stats,
}

/// What `GET` of a blob found on one replica, read to the end without keeping it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobRead {
    pub(crate) status: u16,
    pub(crate) len: u64,
    /// `sha256:<hex>` of the bytes received.
    pub(crate) digest: String,
}

impl Replicas {
    /// One client for all `bases`; `timeout` bounds every request. Signs in with
    /// `credentials` once [`Replicas::discover`] has learnt how.
    pub(crate) fn new(bases: &[Url], timeout: Duration, credentials: Option<Credentials>) -> CaseResult<Self> {
        ensure!(!bases.is_empty(), "no replica URL given");
        let client = |idle: usize| {
            reqwest::Client::builder()
                .no_proxy()
                .http1_only()
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(5))
                .timeout(timeout)
                .pool_max_idle_per_host(idle)
                .user_agent(concat!("berth-replicas/", env!("CARGO_PKG_VERSION")))
                .build()
        };
        let http = client(64)?;
        let auth = Auth::new(http.clone(), bases, credentials)?;
        Ok(Self { http, isolated: client(0)?, auth, timeout, bases: bases.to_vec(), stats: Stats::default() })
    }

    /// Signed requests some replica answered 401: how many, and the first few.
    pub(crate) fn auth_refusals(&self) -> (usize, Vec<String>) {
        self.auth.refusals()
    }

    /// Learns from replica 0 how the registry wants to be signed in to; returns a line
    /// saying how.
    pub(crate) async fn discover(&self) -> CaseResult<String> {
        self.auth.discover(self.base(0)?, self.timeout).await.map_err(|f| f.context(&self.label(0)))
    }

    /// How many replicas.
    pub(crate) fn count(&self) -> usize {
        self.bases.len()
    }

    /// `r<i> (<base URL>)`, how messages name a replica.
    pub(crate) fn label(&self, replica: usize) -> String {
        match self.bases.get(replica) {
            Some(base) => format!("r{replica} ({})", base.as_str().trim_end_matches('/')),
            None => format!("r{replica}"),
        }
    }

    fn base(&self, replica: usize) -> CaseResult<&Url> {
        self.bases.get(replica).ok_or_else(|| Failure::new(format!("no replica r{replica}")))
    }

    /// `base + path` on `replica`, where `path` starts with `/v2/` and may carry a query.
    pub(crate) fn url(&self, replica: usize, path: &str) -> CaseResult<Url> {
        let base = self.base(replica)?.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}{path}")).map_err(|e| Failure::new(format!("cannot build URL for {path}: {e}")))
    }

    /// The same endpoint as `url` (a resolved `Location`) on `replica`: the path from its
    /// `/v2/` on, and its query, under that replica's base URL. So a session opened on one
    /// replica is continued on another, whatever host or prefix the `Location` named.
    pub(crate) fn rebase(&self, replica: usize, url: &Url) -> CaseResult<Url> {
        let tail = v2_tail(url).ok_or_else(|| Failure::new(format!("{url} has no /v2/ path to send elsewhere")))?;
        self.url(replica, &tail)
    }

    /// A request builder for `method` on `replica`'s `path`.
    pub(crate) fn at(&self, replica: usize, method: Method, path: &str) -> CaseResult<RequestBuilder> {
        Ok(self.http.request(method, self.url(replica, path)?))
    }

    /// A request builder for an absolute `url`.
    pub(crate) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.http.request(method, url)
    }

    /// A request builder for an absolute `url`, sent on a connection of its own that is
    /// closed after the answer: for a request the registry may refuse before reading its
    /// body.
    pub(crate) fn request_isolated(&self, method: Method, url: Url) -> RequestBuilder {
        self.isolated.request(method, url)
    }

    /// Sends a request to `replica` and reads the whole answer. Errors name the replica.
    pub(crate) async fn send(&self, replica: usize, builder: RequestBuilder) -> CaseResult<Resp> {
        let (client, request) = builder.build_split();
        let request = request?;
        let method = request.method().clone();
        let url = request.url().clone();
        let sent = request.body().and_then(|b| b.as_bytes()).map_or(0, |b| b.len() as u64);
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_sent.fetch_add(sent, Ordering::Relaxed);
        let on = || format!("{} {} on {}", method, url.path(), self.label(replica));
        let response = self.auth.execute(&client, request).await.map_err(|f| f.context(&on()))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| Failure::from(e).context(&format!("{}: answered {status}, then the body broke off", on())))?;
        self.stats.bytes_read.fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok(Resp { method, url, status, headers, body })
    }

    /// `send`, then requires one of `statuses`; the failure names the replica.
    pub(crate) async fn expect(&self, replica: usize, builder: RequestBuilder, statuses: &[u16]) -> CaseResult<Resp> {
        let resp = self.send(replica, builder).await?;
        resp.expect_any(statuses).map_err(|f| f.context(&self.label(replica)))?;
        Ok(resp)
    }

    /// A blob body: `PATCH`/`PUT`/`POST` with `Content-Type: application/octet-stream` and
    /// an exact `Content-Length`.
    pub(crate) fn with_blob_body(builder: RequestBuilder, body: Bytes) -> RequestBuilder {
        let len = body.len();
        builder.header(CONTENT_TYPE, OCTET_STREAM).header(CONTENT_LENGTH, len).body(body)
    }

    /// `GET`/`HEAD /v2/<repo>/manifests/<reference>` on `replica`, accepting every type.
    pub(crate) async fn fetch_manifest(
        &self,
        replica: usize,
        method: Method,
        repo: &str,
        reference: &str,
    ) -> CaseResult<Resp> {
        let builder = self
            .at(replica, method, &format!("/v2/{repo}/manifests/{reference}"))?
            .header(ACCEPT, ACCEPT_ALL_MANIFESTS);
        self.send(replica, builder).await
    }

    /// `GET /v2/<repo>/blobs/<digest>` on `replica`, hashing the body as it streams in.
    pub(crate) async fn read_blob(&self, replica: usize, repo: &str, digest: &str) -> CaseResult<BlobRead> {
        let url = self.url(replica, &format!("/v2/{repo}/blobs/{digest}"))?;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let on = || format!("GET {} on {}", url.path(), self.label(replica));
        let request = self.http.get(url.clone()).build()?;
        let mut response = self.auth.execute(&self.http, request).await.map_err(|f| f.context(&on()))?;
        let status = response.status().as_u16();
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        while let Some(chunk) =
            response.chunk().await.map_err(|e| Failure::from(e).context(&format!("{}: body broke off", on())))?
        {
            len += chunk.len() as u64;
            hasher.update(&chunk);
        }
        self.stats.bytes_read.fetch_add(len, Ordering::Relaxed);
        Ok(BlobRead { status, len, digest: format!("sha256:{}", hex::encode(hasher.finalize())) })
    }

    /// Follows `Link: <…>; rel="next"` from `first` on `replica`, collecting the string
    /// array `key` of every page (`repositories` or `tags`). `None` when the first page is
    /// a 404 (an unknown repository).
    pub(crate) async fn list_all(&self, replica: usize, first: &str, key: &str) -> CaseResult<Option<Vec<String>>> {
        let mut url = self.url(replica, first)?;
        let mut entries = Vec::new();
        for page in 0.. {
            ensure!(page < 100_000, "{}: more than 100000 pages at {first}", self.label(replica));
            let resp = self.send(replica, self.request(Method::GET, url.clone())).await?;
            if page == 0 && resp.status == 404 {
                return Ok(None);
            }
            resp.expect(200).map_err(|f| f.context(&self.label(replica)))?;
            let body = resp.json().map_err(|f| f.context(&self.label(replica)))?;
            entries.extend(crate::ctx::string_list(&body[key], key).map_err(|f| f.context(&self.label(replica)))?);
            let Some(next) = resp.header("link").and_then(wire::parse_link_next) else { break };
            let next = wire::resolve_location(&resp.url, &next).map_err(Failure::new)?;
            // Pagination links are followed on the replica that gave them.
            url = self.rebase(replica, &next)?;
        }
        Ok(Some(entries))
    }
}

/// The part of `url` a replica serves: its path from `/v2/` on, and its query.
pub(crate) fn v2_tail(url: &Url) -> Option<String> {
    let path = url.path();
    let at = path.find("/v2/")?;
    Some(match url.query() {
        Some(query) => format!("{}?{query}", &path[at..]),
        None => path[at..].to_owned(),
    })
}

/// The upload offset a `Range: 0-<last>` header says the registry holds (`0-0` before the
/// first byte is ambiguous, so it is read as "nothing contradicts `want`" when `want` ≤ 1).
pub(crate) fn check_upload_range(resp: &Resp, want_offset: u64) -> CaseResult<()> {
    let Some(range) = resp.header("range") else {
        crate::fail!("{}: no `Range` header (want 0-{})", resp.what(), want_offset.saturating_sub(1));
    };
    let Some((first, last)) = wire::parse_upload_range(range) else {
        crate::fail!("{}: unreadable `Range: {range}`", resp.what());
    };
    let ok = first == 0 && (last + 1 == want_offset || (last == 0 && want_offset <= 1));
    ensure!(ok, "{}: `Range: {range}`, want 0-{} ({want_offset} bytes received)", resp.what(), want_offset.max(1) - 1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn rebase_keeps_path_from_v2_and_query() -> TestResult {
        let replicas = Replicas::new(
            &[Url::parse("http://127.0.0.1:5001")?, Url::parse("http://10.0.0.2:5002/prefix/")?],
            Duration::from_secs(1),
            None,
        )?;
        let location = Url::parse("http://127.0.0.1:5001/v2/a/b/blobs/uploads/123?_state=x&y=1")?;
        assert_eq!(
            replicas.rebase(1, &location)?.as_str(),
            "http://10.0.0.2:5002/prefix/v2/a/b/blobs/uploads/123?_state=x&y=1"
        );
        assert_eq!(replicas.rebase(0, &location)?.as_str(), location.as_str());
        let prefixed = Url::parse("http://cdn.example/registry/v2/x/blobs/uploads/9")?;
        assert_eq!(replicas.rebase(0, &prefixed)?.as_str(), "http://127.0.0.1:5001/v2/x/blobs/uploads/9");
        assert!(replicas.rebase(0, &Url::parse("http://h/upload/9")?).is_err());
        assert!(replicas.rebase(2, &location).is_err());
        assert_eq!(replicas.label(1), "r1 (http://10.0.0.2:5002/prefix)");
        Ok(())
    }

    #[test]
    fn upload_range_rules() -> TestResult {
        let resp = |range: Option<&str>| -> Result<Resp, Box<dyn std::error::Error>> {
            let mut headers = reqwest::header::HeaderMap::new();
            if let Some(r) = range {
                headers.insert("range", r.parse()?);
            }
            Ok(Resp {
                method: Method::PATCH,
                url: Url::parse("http://h/v2/a/blobs/uploads/1")?,
                status: 202,
                headers,
                body: Bytes::new(),
            })
        };
        assert!(check_upload_range(&resp(Some("0-99"))?, 100).is_ok());
        assert!(check_upload_range(&resp(Some("bytes=0-99"))?, 100).is_ok());
        assert!(check_upload_range(&resp(Some("0-0"))?, 0).is_ok());
        assert!(check_upload_range(&resp(Some("0-0"))?, 1).is_ok());
        assert!(check_upload_range(&resp(Some("0-98"))?, 100).is_err());
        assert!(check_upload_range(&resp(Some("1-99"))?, 100).is_err());
        assert!(check_upload_range(&resp(None)?, 100).is_err());
        Ok(())
    }
}
