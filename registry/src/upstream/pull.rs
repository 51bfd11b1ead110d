//! Reads: manifests (HEAD and GET, their bytes checked against the digest) and blobs (a
//! stream that ends in an error unless the bytes hash to the digest asked for).

use std::io;

use berth_oci::{Digest, DigestHasher, Reference, media};
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use reqwest::header::{ACCEPT, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};

use super::{
    BlobBody, MAX_MANIFEST_BYTES, MAX_REDIRECTS, Manifest, ManifestHead, Result, Upstream, UpstreamError,
    answered_digest, content_length, header_str, location, pull_scope, read_bounded, reference, refusal, repo_name,
};

/// `Accept` for manifests: every type Berth stores.
fn accept() -> HeaderMap {
    let mut h = HeaderMap::new();
    for t in media::MANIFEST_TYPES {
        h.append(ACCEPT, HeaderValue::from_static(t));
    }
    h
}

/// The media type of a manifest answer: its `Content-Type`, or when that says nothing
/// specific, the `mediaType` field of `bytes`.
fn media_type(headers: &HeaderMap, bytes: Option<&[u8]>) -> Option<String> {
    let ct = header_str(headers, "content-type").map(media::essence).unwrap_or_default();
    if !ct.is_empty() && ct != "application/json" && ct != "text/plain" && ct != "application/octet-stream" {
        return Some(ct.to_owned());
    }
    let v: serde_json::Value = serde_json::from_slice(bytes?).ok()?;
    v.get("mediaType").and_then(|m| m.as_str()).map(str::to_owned)
}

impl Upstream {
    /// `HEAD` a manifest by tag or digest.
    pub async fn head_manifest(&self, repo: &str, reference_: &str) -> Result<ManifestHead> {
        let name = repo_name(repo)?;
        let reference_ = reference(reference_)?;
        let url = self.v2(&format!("{}/manifests/{reference_}", name.as_str()))?;
        let resp = self.send(Method::HEAD, url, accept(), None, &[pull_scope(&name)]).await?;
        if resp.status() != StatusCode::OK {
            return Err(refusal(resp).await);
        }
        let headers = resp.headers();
        let answered = answered_digest(headers)?;
        let digest = match (&reference_, answered) {
            (Reference::Digest(d), Some(a)) if a != *d => {
                return Err(UpstreamError::Invalid(format!("asked for manifest {d}, the registry answered {a}")));
            }
            (Reference::Digest(d), _) => Some(d.clone()),
            (Reference::Tag(_), a) => a,
        };
        let size = content_length(headers);
        match (digest, media_type(headers, None), size) {
            (Some(digest), Some(media_type), Some(size)) => Ok(ManifestHead { digest, media_type, size }),
            // A registry that leaves something out of its HEAD: the manifest itself tells.
            _ => {
                let m = self.get_manifest(repo, &reference_.to_string()).await?;
                Ok(ManifestHead { digest: m.digest, media_type: m.media_type, size: m.bytes.len() as u64 })
            }
        }
    }

    /// `GET` a manifest (at most 4 MiB). By digest its bytes must hash to it; by tag the
    /// digest is the hash of the bytes, and `Docker-Content-Digest`, when present, must agree.
    pub async fn get_manifest(&self, repo: &str, reference_: &str) -> Result<Manifest> {
        let name = repo_name(repo)?;
        let reference_ = reference(reference_)?;
        let url = self.v2(&format!("{}/manifests/{reference_}", name.as_str()))?;
        let resp = self.send(Method::GET, url, accept(), None, &[pull_scope(&name)]).await?;
        if resp.status() != StatusCode::OK {
            return Err(refusal(resp).await);
        }
        let headers = resp.headers().clone();
        let answered = answered_digest(&headers)?;
        let bytes = read_bounded(resp, MAX_MANIFEST_BYTES, self.inner.timeout).await?;
        let digest = match (&reference_, answered) {
            (Reference::Digest(d), _) => {
                check_digest(d, &bytes)?;
                d.clone()
            }
            (Reference::Tag(_), Some(a)) => {
                check_digest(&a, &bytes)?;
                a
            }
            (Reference::Tag(_), None) => Digest::sha256_of(&bytes),
        };
        let media_type = media_type(&headers, Some(&bytes))
            .ok_or_else(|| UpstreamError::Invalid(format!("manifest {digest} has no media type")))?;
        Ok(Manifest { digest, media_type, bytes })
    }

    /// `GET` a blob, following redirects (to storage, e.g. pre-signed URLs: credentials only
    /// to the registry's own origin). The body is checked as it streams.
    pub async fn get_blob(&self, repo: &str, digest: &Digest) -> Result<BlobBody> {
        let name = repo_name(repo)?;
        let scopes = [pull_scope(&name)];
        let mut url = self.v2(&format!("{}/blobs/{digest}", name.as_str()))?;
        let mut resp = self.send(Method::GET, url.clone(), HeaderMap::new(), None, &scopes).await?;
        let mut hops = 0;
        while resp.status().is_redirection() && resp.status() != StatusCode::NOT_MODIFIED {
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(UpstreamError::Invalid(format!("more than {MAX_REDIRECTS} redirects for blob {digest}")));
            }
            url = location(&resp)?;
            resp = if self.same_origin(&url) {
                self.send(Method::GET, url.clone(), HeaderMap::new(), None, &scopes).await?
            } else {
                self.once(Method::GET, url.clone(), HeaderMap::new(), None, None).await?
            };
        }
        if resp.status() != StatusCode::OK {
            return Err(refusal(resp).await);
        }
        let size = content_length(resp.headers())
            .ok_or_else(|| UpstreamError::Invalid(format!("blob {digest} came without a Content-Length")))?;
        Ok(BlobBody { size, body: verified(resp, digest.clone(), size) })
    }
}

/// `Invalid` unless `bytes` hash to `digest`.
fn check_digest(digest: &Digest, bytes: &[u8]) -> Result<()> {
    let got = Digest::of(digest.algorithm(), bytes);
    if got == *digest {
        Ok(())
    } else {
        Err(UpstreamError::Invalid(format!("manifest {digest}: its bytes hash to {got}")))
    }
}

struct Checking {
    inner: BoxStream<'static, reqwest::Result<Bytes>>,
    hasher: DigestHasher,
    digest: Digest,
    size: u64,
    seen: u64,
}

/// `resp`'s body, ending with an `InvalidData` error unless exactly `size` bytes came and
/// they hash to `digest`.
fn verified(resp: Response, digest: Digest, size: u64) -> BoxStream<'static, io::Result<Bytes>> {
    let state = Checking {
        inner: resp.bytes_stream().boxed(),
        hasher: DigestHasher::new(digest.algorithm()),
        digest,
        size,
        seen: 0,
    };
    futures::stream::unfold(Some(state), |state| async move {
        let mut s = state?;
        match s.inner.next().await {
            Some(Ok(chunk)) => {
                s.seen += chunk.len() as u64;
                if s.seen > s.size {
                    let e = invalid(format!("blob {}: more than the {} bytes announced", s.digest, s.size));
                    return Some((Err(e), None));
                }
                s.hasher.update(&chunk);
                Some((Ok(chunk), Some(s)))
            }
            Some(Err(e)) => {
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, super::describe(&e));
                Some((Err(e), None))
            }
            None if s.seen != s.size => {
                let e = invalid(format!("blob {}: {} of the {} bytes announced", s.digest, s.seen, s.size));
                Some((Err(e), None))
            }
            None => {
                let got = s.hasher.finish();
                if got == s.digest {
                    None
                } else {
                    Some((Err(invalid(format!("blob {}: its bytes hash to {got}", s.digest))), None))
                }
            }
        }
    })
    .boxed()
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}
