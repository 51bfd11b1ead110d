//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`, with `Range` support.

use std::ops::Range;
use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use berth_oci::{Digest, RepoName};
use hyper::header::{ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, RANGE};
use hyper::{Method, StatusCode};

use super::Req;
use super::headers::{DOCKER_CONTENT_DIGEST, set};
use crate::error::{ApiError, ApiResult};
use crate::service::Registry;
use crate::service::pull_through::fetch::{BlobFetch, Requester};

/// The part of a blob of `size` bytes that a `Range` header asks for.
/// `Ok(None)`: serve the whole blob (no header, or one this server ignores: other units,
/// several ranges, bad syntax, as RFC 9110 allows). `Err`: 416.
pub fn requested_range(header: Option<&str>, size: u64) -> ApiResult<Option<Range<u64>>> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else { return Ok(None) };
    let (a, b) = (a.trim(), b.trim());
    let unsatisfiable = Err(ApiError::RangeNotSatisfiable { size });
    let range = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(first), Ok(last)) if a.bytes().all(|c| c.is_ascii_digit()) => {
            if first > last {
                return Ok(None);
            }
            if first >= size {
                return unsatisfiable;
            }
            first..last.min(size - 1) + 1
        }
        (Ok(first), Err(_)) if b.is_empty() => {
            if first >= size {
                return unsatisfiable;
            }
            first..size
        }
        (Err(_), Ok(suffix)) if a.is_empty() => {
            if suffix == 0 || size == 0 {
                return unsatisfiable;
            }
            size.saturating_sub(suffix)..size
        }
        _ => return Ok(None),
    };
    Ok(Some(range))
}

pub async fn get(reg: &Arc<Registry>, name: &RepoName, digest: &Digest, req: &Req) -> ApiResult<Response> {
    let entry = match reg.blob_entry(name, digest).await {
        Ok(entry) => entry,
        // Not here: a pull-through cache rule may cover the repository.
        Err(ApiError::BlobUnknown) => {
            let who = Requester { caller: req.caller.as_ref(), origin: &req.origin };
            let whole_get = req.method == Method::GET && req.header(RANGE).is_none();
            match reg.pull_through_blob(name, digest, &who, whole_get).await? {
                None => return Err(ApiError::BlobUnknown),
                Some(BlobFetch::Streaming { size, body }) => {
                    let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
                    blob_headers(&mut response, digest, size);
                    return Ok(response);
                }
                Some(BlobFetch::Stored) => reg.blob_entry(name, digest).await?,
            }
        }
        Err(e) => return Err(e),
    };
    let size = entry.size;
    let range = requested_range(req.header(RANGE), size)?;
    let (status, span) = match &range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.clone()),
        None => (StatusCode::OK, 0..size),
    };
    let body = if req.method == Method::HEAD || span.is_empty() {
        Body::empty()
    } else {
        // Content-Length is set below: never chunked, as zero-copy placeholders need.
        Body::from_stream(reg.open_blob(digest, &entry, range.clone(), req.zero_copy.as_ref()).await?)
    };
    let mut response = (status, body).into_response();
    blob_headers(&mut response, digest, span.end - span.start);
    if range.is_some() {
        set(response.headers_mut(), CONTENT_RANGE, &format!("bytes {}-{}/{size}", span.start, span.end - 1));
    }
    Ok(response)
}

/// The headers of a blob answer of `len` bytes.
fn blob_headers(response: &mut Response, digest: &Digest, len: u64) {
    let h = response.headers_mut();
    set(h, CONTENT_LENGTH, &len.to_string());
    set(h, CONTENT_TYPE, "application/octet-stream");
    set(h, DOCKER_CONTENT_DIGEST, &digest.to_string());
    set(h, ACCEPT_RANGES, "bytes");
    set(h, ETAG, &format!("\"{digest}\""));
    set(h, CACHE_CONTROL, "max-age=31536000");
}

pub async fn delete(reg: &Registry, name: &RepoName, digest: &Digest) -> ApiResult<Response> {
    reg.delete_blob(name, digest).await?;
    Ok(accepted())
}

/// `202 Accepted` with an empty body.
pub fn accepted() -> Response {
    let mut r = StatusCode::ACCEPTED.into_response();
    set(r.headers_mut(), CONTENT_LENGTH, "0");
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a `Range` header should give: `Err(())` stands for 416.
    type Expected = Result<Option<Range<u64>>, ()>;

    #[test]
    fn ranges() {
        let table: [(&str, u64, Expected); 14] = [
            ("bytes=0-9", 100, Ok(Some(0..10))),
            ("bytes=90-200", 100, Ok(Some(90..100))),
            ("bytes=10-", 100, Ok(Some(10..100))),
            ("bytes=-10", 100, Ok(Some(90..100))),
            ("bytes=-500", 100, Ok(Some(0..100))),
            ("bytes=100-", 100, Err(())),
            ("bytes=100-200", 100, Err(())),
            ("bytes=-0", 100, Err(())),
            ("bytes=0-0", 0, Err(())),
            ("bytes=5-1", 100, Ok(None)),
            ("bytes=0-1,5-6", 100, Ok(None)),
            ("items=0-1", 100, Ok(None)),
            ("bytes=x-1", 100, Ok(None)),
            ("bytes=+1-2", 100, Ok(None)),
        ];
        for (h, size, want) in table {
            let got = requested_range(Some(h), size).map_err(|_| ());
            assert_eq!(got, want, "{h} of {size}");
        }
        assert_eq!(requested_range(None, 5).unwrap(), None);
    }
}
