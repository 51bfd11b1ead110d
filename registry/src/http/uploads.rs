//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (start, monolithic, mount) and
//! `GET`/`PATCH`/`PUT`/`DELETE /v2/<name>/blobs/uploads/<id>`.

use axum::response::{IntoResponse, Response};
use berth_oci::{Algorithm, Digest, RepoName, UploadId};
use hyper::StatusCode;
use hyper::header::{CONTENT_LENGTH, CONTENT_RANGE, LOCATION};

use axum::body::Body;

use super::headers::{DOCKER_CONTENT_DIGEST, set, upload_progress};
use super::{Req, body_stream};
use crate::error::{ApiError, ApiResult};
use crate::service::uploads::{ChunkRange, out_of_order};
use crate::service::{Registry, upload_location};

fn parse_digest(value: &str) -> ApiResult<Digest> {
    value.parse().map_err(|e: berth_oci::digest::DigestError| ApiError::DigestInvalid(e.to_string()))
}

/// `Content-Range` of a chunk, if the request has one. One that cannot be read is a 416
/// that tells the client where the upload stands, as for a chunk out of order.
async fn chunk_range(reg: &Registry, name: &RepoName, id: &UploadId, req: &Req) -> ApiResult<Option<ChunkRange>> {
    match req.header(CONTENT_RANGE) {
        None => Ok(None),
        Some(v) => match ChunkRange::parse(v) {
            Some(r) => Ok(Some(r)),
            None => Err(out_of_order(&reg.upload_status(name, id).await?)),
        },
    }
}

/// `201 Created` for a blob now readable at its URL.
fn created(name: &RepoName, digest: &Digest) -> Response {
    let mut r = StatusCode::CREATED.into_response();
    let h = r.headers_mut();
    set(h, LOCATION, &format!("/v2/{name}/blobs/{digest}"));
    set(h, DOCKER_CONTENT_DIGEST, &digest.to_string());
    set(h, CONTENT_LENGTH, "0");
    r
}

fn in_progress(status: StatusCode, name: &RepoName, id: &UploadId, offset: u64) -> Response {
    let mut r = status.into_response();
    upload_progress(r.headers_mut(), &upload_location(name, id), id.as_str(), offset);
    set(r.headers_mut(), CONTENT_LENGTH, "0");
    r
}

pub async fn start(reg: &Registry, name: &RepoName, req: &Req, body: Body) -> ApiResult<Response> {
    if let Some(mount) = req.param("mount") {
        let digest = parse_digest(mount)?;
        // A `from` that is not a repository name simply cannot be mounted from.
        // Nor can one the caller may not pull from: then the client uploads (202), as the
        // spec allows, and learns nothing about the source.
        if let Some(from) = req.param("from").and_then(|f| f.parse::<RepoName>().ok())
            && super::auth::also_permits(
                reg,
                req.caller.as_ref(),
                &berth_auth::Access::Repository { name: from.clone(), action: berth_auth::Action::Pull },
            )
            .await?
            && reg.mount_blob(name, &digest, &from, &req.origin).await?.is_some()
        {
            return Ok(created(name, &digest));
        }
    }
    let algorithm = match req.param("digest-algorithm") {
        None => None,
        Some(a) => Some(a.parse::<Algorithm>().map_err(|e| ApiError::DigestInvalid(e.to_string()))?),
    };
    if let Some(d) = req.param("digest") {
        // Monolithic upload: the whole blob is this request's body.
        let digest = parse_digest(d)?;
        let declared = req.header(CONTENT_LENGTH).and_then(|v| v.parse().ok());
        reg.monolithic_upload(name, &digest, declared, body_stream(body), &req.origin).await?;
        return Ok(created(name, &digest));
    }
    let up = reg.start_upload(name, algorithm.unwrap_or(Algorithm::Sha256), &req.origin).await?;
    Ok(in_progress(StatusCode::ACCEPTED, name, &up.id, up.offset))
}

pub async fn status(reg: &Registry, name: &RepoName, id: &UploadId) -> ApiResult<Response> {
    let up = reg.upload_status(name, id).await?;
    Ok(in_progress(StatusCode::NO_CONTENT, name, id, up.offset))
}

pub async fn patch(reg: &Registry, name: &RepoName, id: &UploadId, req: &Req, body: Body) -> ApiResult<Response> {
    let range = chunk_range(reg, name, id, req).await?;
    let up = reg.append_chunk(name, id, range, body_stream(body)).await?;
    Ok(in_progress(StatusCode::ACCEPTED, name, id, up.offset))
}

pub async fn put(reg: &Registry, name: &RepoName, id: &UploadId, req: &Req, body: Body) -> ApiResult<Response> {
    let digest = parse_digest(
        req.param("digest").ok_or_else(|| ApiError::DigestInvalid("the digest query parameter is required".into()))?,
    )?;
    let range = chunk_range(reg, name, id, req).await?;
    reg.finish_upload(name, id, range, body_stream(body), &digest, &req.origin).await?;
    Ok(created(name, &digest))
}

pub async fn cancel(reg: &Registry, name: &RepoName, id: &UploadId) -> ApiResult<Response> {
    reg.cancel_upload(name, id).await?;
    let mut r = StatusCode::NO_CONTENT.into_response();
    set(r.headers_mut(), CONTENT_LENGTH, "0");
    Ok(r)
}
