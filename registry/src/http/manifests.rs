//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use berth_oci::manifest::MAX_MANIFEST_BYTES;
use berth_oci::{Reference, RepoName, Tag};
use futures::StreamExt;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, LOCATION};
use hyper::{Method, StatusCode};

use super::Req;
use super::blobs::accepted;
use super::headers::{DOCKER_CONTENT_DIGEST, OCI_SUBJECT, OCI_TAG, set};
use crate::error::{ApiError, ApiResult};
use crate::service::Registry;
use crate::service::pull_through::fetch::Requester;

pub async fn get(reg: &Registry, name: &RepoName, reference: &Reference, req: &Req) -> ApiResult<Response> {
    let who = Requester { caller: req.caller.as_ref(), origin: &req.origin };
    let m = match reg.pull_through_manifest(name, reference, &who).await? {
        Some(m) => {
            if req.method != Method::HEAD {
                reg.pulls.record(name, &m.digest);
            }
            m
        }
        None if req.method == Method::HEAD => reg.get_manifest(name, reference).await?,
        None => reg.pull_manifest(name, reference).await?,
    };
    let len = m.content.len();
    let body = if req.method == Method::HEAD { Body::empty() } else { Body::from(m.content.clone()) };
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    set(h, CONTENT_TYPE, &m.media_type);
    set(h, CONTENT_LENGTH, &len.to_string());
    set(h, DOCKER_CONTENT_DIGEST, &m.digest.to_string());
    set(h, ETAG, &format!("\"{}\"", m.digest));
    Ok(r)
}

/// How much of an oversized manifest body is read and dropped before answering 413, so the
/// client, still sending, reads the answer instead of a broken pipe.
const OVERSIZE_DRAIN: u64 = 16 * 1024 * 1024;

/// Reads at most [`MAX_MANIFEST_BYTES`] of the body; more is 413.
async fn read_capped(body: Body, declared: Option<u64>) -> ApiResult<Vec<u8>> {
    let too_large = ApiError::ManifestTooLarge { limit: MAX_MANIFEST_BYTES };
    let cap = MAX_MANIFEST_BYTES as u64;
    if declared.is_some_and(|n| n > cap + OVERSIZE_DRAIN) {
        return Err(too_large);
    }
    let mut stream = body.into_data_stream();
    let mut buf = Vec::with_capacity(declared.map_or(8 * 1024, |n| n.min(cap) as usize));
    let mut seen = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::ManifestInvalid(format!("request body could not be read: {e}")))?;
        seen += chunk.len() as u64;
        if seen > cap + OVERSIZE_DRAIN {
            break;
        }
        if seen <= cap {
            buf.extend_from_slice(&chunk);
        }
    }
    if seen > cap { Err(too_large) } else { Ok(buf) }
}

pub async fn put(reg: &Registry, name: &RepoName, reference: &Reference, req: &Req, body: Body) -> ApiResult<Response> {
    let extra_tags = req
        .params("tag")
        .map(|t| t.parse::<Tag>().map_err(|e| ApiError::TagInvalid(format!("tag {t:?}: {e}"))))
        .collect::<ApiResult<Vec<_>>>()?;
    let announce_tags = !extra_tags.is_empty();
    let content_type = req.header(CONTENT_TYPE).map(str::to_owned);
    let declared = req.header(CONTENT_LENGTH).and_then(|v| v.parse().ok());
    let body = read_capped(body, declared).await?;
    let pushed = reg.put_manifest(name, reference, content_type.as_deref(), body, extra_tags, &req.origin).await?;
    let mut r = StatusCode::CREATED.into_response();
    let h = r.headers_mut();
    set(h, LOCATION, &format!("/v2/{name}/manifests/{}", pushed.digest));
    set(h, DOCKER_CONTENT_DIGEST, &pushed.digest.to_string());
    set(h, CONTENT_LENGTH, "0");
    if let Some(subject) = &pushed.subject {
        set(h, OCI_SUBJECT, &subject.to_string());
    }
    if announce_tags {
        for tag in &pushed.tags {
            if let Ok(v) = tag.as_str().parse() {
                h.append(OCI_TAG, v);
            }
        }
    }
    Ok(r)
}

pub async fn delete(reg: &Registry, name: &RepoName, reference: &Reference, req: &Req) -> ApiResult<Response> {
    reg.delete_manifest(name, reference, &req.origin).await?;
    Ok(accepted())
}
