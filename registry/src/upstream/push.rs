//! Writes (replication): whether a blob is there, cross-repository mounts, monolithic blob
//! uploads streamed with bounded memory, manifest pushes.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use berth_oci::{Digest, Reference};
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode, Url};

use super::{
    MAX_MANIFEST_BYTES, Result, Upstream, UpstreamError, answered_digest, describe, location, pull_scope, push_scope,
    reference, refusal, repo_name,
};

impl Upstream {
    /// Whether the registry has `digest` in `repo` (`HEAD` the blob: 200, or a redirect to
    /// its storage).
    pub async fn has_blob(&self, repo: &str, digest: &Digest) -> Result<bool> {
        let name = repo_name(repo)?;
        let url = self.v2(&format!("{}/blobs/{digest}", name.as_str()))?;
        let resp = self.send(Method::HEAD, url, HeaderMap::new(), None, &[push_scope(&name)]).await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            // Distribution on S3 (and Berth with pre-signed URLs) redirects a HEAD of a blob it
            // has to its storage.
            s if s.is_redirection() && s != StatusCode::NOT_MODIFIED => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(refusal(resp).await),
        }
    }

    /// Mounts `digest` from repository `from` into `repo`: `Ok(true)` when mounted (201),
    /// `Ok(false)` when the registry opened an upload instead (that upload is cancelled).
    pub async fn mount_blob(&self, repo: &str, digest: &Digest, from: &str) -> Result<bool> {
        let name = repo_name(repo)?;
        let from = repo_name(from)?;
        let mut url = self.v2(&format!("{}/blobs/uploads/", name.as_str()))?;
        url.query_pairs_mut().append_pair("mount", &digest.to_string()).append_pair("from", from.as_str());
        let scopes = [push_scope(&name), pull_scope(&from)];
        let resp = self.send(Method::POST, url, empty_body(), Some(Bytes::new()), &scopes).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                let upload = location(&resp)?;
                self.cancel_upload(upload, &scopes).await;
                Ok(false)
            }
            _ => Err(refusal(resp).await),
        }
    }

    /// Uploads a blob: `POST` a session, then one streamed `PUT ?digest=` with
    /// `Content-Length: size`. Memory stays bounded: `body` is read as the socket takes it.
    /// A stream yielding more or fewer than `size` bytes fails the upload.
    pub async fn push_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        body: BoxStream<'static, io::Result<Bytes>>,
    ) -> Result<()> {
        let name = repo_name(repo)?;
        let scopes = [push_scope(&name)];
        let url = self.v2(&format!("{}/blobs/uploads/", name.as_str()))?;
        let resp = self.send(Method::POST, url, empty_body(), Some(Bytes::new()), &scopes).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(refusal(resp).await);
        }
        let upload = location(&resp)?;
        let mut put_url = upload.clone();
        put_url.query_pairs_mut().append_pair("digest", &digest.to_string());
        // The session's own token (the POST just used it); no retry: the body is a stream.
        let authorization =
            if self.same_origin(&put_url) { self.inner.auth.header(self, &scopes, false).await? } else { None };
        let progress = Arc::new(AtomicU64::new(0));
        let mut req = self
            .inner
            .client
            .put(put_url)
            .header(CONTENT_LENGTH, size)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(counted(body, size, progress.clone())));
        if let Some(a) = authorization {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        let resp = match self.unless_stalled(req.send(), &progress).await {
            Ok(r) => r,
            Err(e) => {
                self.cancel_upload(upload, &scopes).await;
                return Err(e);
            }
        };
        if resp.status() != StatusCode::CREATED {
            let e = refusal(resp).await;
            self.cancel_upload(upload, &scopes).await;
            return Err(e);
        }
        match answered_digest(resp.headers())? {
            Some(a) if a != *digest => {
                Err(UpstreamError::Invalid(format!("pushed blob {digest}, the registry answered {a}")))
            }
            _ => Ok(()),
        }
    }

    /// `PUT` a manifest by tag or digest: the digest the registry answered (or, when it
    /// answered none, that of the bytes); `Invalid` if it disagrees with the bytes.
    pub async fn put_manifest(&self, repo: &str, reference_: &str, media_type: &str, bytes: Bytes) -> Result<Digest> {
        let name = repo_name(repo)?;
        let reference_ = reference(reference_)?;
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(UpstreamError::Invalid(format!(
                "a manifest of {} bytes, more than the {MAX_MANIFEST_BYTES} allowed",
                bytes.len()
            )));
        }
        let content_type = HeaderValue::from_str(media_type)
            .map_err(|_| UpstreamError::Invalid(format!("media type {media_type:?} is not header text")))?;
        let ours = match &reference_ {
            Reference::Digest(d) => Digest::of(d.algorithm(), &bytes),
            Reference::Tag(_) => Digest::sha256_of(&bytes),
        };
        if let Reference::Digest(d) = &reference_
            && *d != ours
        {
            return Err(UpstreamError::Invalid(format!("the manifest's bytes hash to {ours}, not {d}")));
        }
        let url = self.v2(&format!("{}/manifests/{reference_}", name.as_str()))?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, content_type);
        let resp = self.send(Method::PUT, url, headers, Some(bytes.clone()), &[push_scope(&name)]).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(refusal(resp).await);
        }
        match answered_digest(resp.headers())? {
            None => Ok(ours),
            Some(a) if Digest::of(a.algorithm(), &bytes) == a => Ok(a),
            Some(a) => Err(UpstreamError::Invalid(format!("pushed manifest {ours}, the registry answered {a}"))),
        }
    }

    /// Cancels an upload session, best effort (it expires anyway).
    async fn cancel_upload(&self, upload: Url, scopes: &[String]) {
        let sent = if self.same_origin(&upload) {
            self.send(Method::DELETE, upload, HeaderMap::new(), None, scopes).await
        } else {
            self.once(Method::DELETE, upload, HeaderMap::new(), None, None).await
        };
        if let Err(e) = sent {
            tracing::debug!(upstream = %self.inner.url, error = %e, "an upload session was not cancelled");
        }
    }

    /// `send` (a streamed upload) until it answers, `Unavailable` when for a whole timeout
    /// period no byte of the body was taken and no answer came.
    async fn unless_stalled(
        &self,
        send: impl Future<Output = reqwest::Result<Response>>,
        progress: &AtomicU64,
    ) -> Result<Response> {
        let period = self.inner.timeout;
        tokio::pin!(send);
        let mut last = progress.load(Ordering::Relaxed);
        loop {
            tokio::select! {
                r = &mut send => return r.map_err(|e| UpstreamError::Unavailable(describe(&e))),
                () = tokio::time::sleep(period) => {
                    let now = progress.load(Ordering::Relaxed);
                    if now == last {
                        return Err(UpstreamError::Unavailable(format!(
                            "the upload stalled: nothing taken and no answer for {} ms",
                            period.as_millis()
                        )));
                    }
                    last = now;
                }
            }
        }
    }
}

/// An empty body's headers.
fn empty_body() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    h
}

/// `body`, counting what was taken into `progress`, ending in an error if it yields more
/// or fewer than `size` bytes.
fn counted(
    body: BoxStream<'static, io::Result<Bytes>>,
    size: u64,
    progress: Arc<AtomicU64>,
) -> BoxStream<'static, io::Result<Bytes>> {
    futures::stream::unfold(Some((body, 0u64)), move |state| {
        let progress = progress.clone();
        async move {
            let (mut body, seen) = state?;
            match body.next().await {
                Some(Ok(chunk)) => {
                    let seen = seen + chunk.len() as u64;
                    progress.store(seen, Ordering::Relaxed);
                    if seen > size {
                        let e = io::Error::new(io::ErrorKind::InvalidData, format!("more than the {size} bytes given"));
                        return Some((Err(e), None));
                    }
                    Some((Ok(chunk), Some((body, seen))))
                }
                Some(Err(e)) => Some((Err(e), None)),
                None if seen != size => {
                    let e = io::Error::new(io::ErrorKind::InvalidData, format!("{seen} of the {size} bytes given"));
                    Some((Err(e), None))
                }
                None => None,
            }
        }
    })
    .boxed()
}
