//! `GET /v2/<name>/tags/list`, `GET /v2/_catalog` and `GET /v2/<name>/referrers/<digest>`.

use axum::Json;
use axum::response::{IntoResponse, Response};
use berth_oci::{Digest, RepoName, media};
use hyper::StatusCode;
use hyper::header::{CONTENT_TYPE, LINK};

use super::Req;
use super::headers::{OCI_FILTERS_APPLIED, set};
use crate::error::{ApiError, ApiResult};
use crate::service::Registry;
use crate::service::manifests::Listing;

/// `n` and `last` of a paginated listing.
fn pagination(req: &Req) -> ApiResult<(Option<usize>, Option<String>)> {
    let n = match req.param("n") {
        None | Some("") => None,
        Some(v) => Some(
            v.parse::<usize>()
                .map_err(|_| ApiError::PaginationInvalid(format!("n must be a non-negative integer, not {v:?}")))?,
        ),
    };
    Ok((n, req.param("last").filter(|l| !l.is_empty()).map(str::to_owned)))
}

/// `Link: <path?n=..&last=..>; rel="next"` when another page follows.
fn with_next_link(mut r: Response, path: &str, listing: &Listing, n: Option<usize>) -> Response {
    if let (true, Some(last)) = (listing.more, listing.entries.last()) {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(n) = n {
            query.append_pair("n", &n.to_string());
        }
        query.append_pair("last", last);
        set(r.headers_mut(), LINK, &format!("<{path}?{}>; rel=\"next\"", query.finish()));
    }
    r
}

pub async fn tags(reg: &Registry, name: &RepoName, req: &Req) -> ApiResult<Response> {
    let (n, last) = pagination(req)?;
    let listing = reg.tags(name, last, n).await?;
    let body = Json(serde_json::json!({ "name": name.as_str(), "tags": listing.entries }));
    Ok(with_next_link(body.into_response(), &format!("/v2/{name}/tags/list"), &listing, n))
}

pub async fn catalog(reg: &Registry, req: &Req) -> ApiResult<Response> {
    let (n, last) = pagination(req)?;
    let listing = reg.catalog(last, n).await?;
    let body = Json(serde_json::json!({ "repositories": listing.entries }));
    Ok(with_next_link(body.into_response(), "/v2/_catalog", &listing, n))
}

/// The largest referrers answer, in bytes: clients read an image index up to the size of a
/// manifest (4 MiB). Past it, the answer ends and its `Link` leads on.
const MAX_REFERRERS_BYTES: usize = berth_oci::manifest::MAX_MANIFEST_BYTES;

pub async fn referrers(reg: &Registry, name: &RepoName, subject: &Digest, req: &Req) -> ApiResult<Response> {
    let filter = req.param("artifactType").filter(|t| !t.is_empty());
    let last = req.param("last").filter(|l| !l.is_empty()).map(str::to_owned);
    let (found, mut more) = reg.referrers(name, subject, filter, last).await?;
    let mut manifests: Vec<serde_json::Value> = Vec::with_capacity(found.len());
    let mut bytes = 0;
    let mut last_listed = None;
    for m in found {
        let mut d = serde_json::json!({ "mediaType": m.media_type, "digest": m.digest.to_string(), "size": m.size });
        if let Some(t) = m.artifact_type {
            d["artifactType"] = t.into();
        }
        if let Some(a) = m.annotations {
            d["annotations"] = serde_json::json!(a);
        }
        // The first descriptor always goes: a page must make progress.
        bytes += d.to_string().len() + 1;
        if bytes > MAX_REFERRERS_BYTES && !manifests.is_empty() {
            more = true;
            break;
        }
        last_listed = Some(m.digest);
        manifests.push(d);
    }
    let body = serde_json::json!({ "schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests });
    let mut r = (StatusCode::OK, body.to_string()).into_response();
    set(r.headers_mut(), CONTENT_TYPE, media::OCI_INDEX);
    if filter.is_some() {
        set(r.headers_mut(), OCI_FILTERS_APPLIED, "artifactType");
    }
    if let (true, Some(last)) = (more, last_listed) {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(t) = filter {
            query.append_pair("artifactType", t);
        }
        query.append_pair("last", &last.to_string());
        set(r.headers_mut(), LINK, &format!("</v2/{name}/referrers/{subject}?{}>; rel=\"next\"", query.finish()));
    }
    Ok(r)
}
