//! Pull: end-1 (API root), end-2 (blobs), end-3 (manifests).

use reqwest::Method;
use reqwest::header;

use crate::check::CaseResult;
use crate::content::{self, OCI_MANIFEST};
use crate::ctx::Ctx;
use crate::wire::{self, ByteRange, ContentRange};
use crate::{ensure, ensure_eq, fail};

/// Size of the blob the range cases read: not a power of two, several
/// sha256 blocks, small enough to compare in messages.
const BLOB_LEN: usize = 3001;

/// end-1: `GET /v2/` answers 200.
pub async fn end_1_api_version_check(ctx: &Ctx) -> CaseResult {
    let resp = ctx.call(Method::GET, "/v2/").await?;
    resp.expect(200)?;
    match resp.header("docker-distribution-api-version") {
        Some(v) => ensure_eq!(v, "registry/2.0", "Docker-Distribution-API-Version"),
        None => ctx.note("no Docker-Distribution-API-Version header (optional)"),
    }
    Ok(())
}

async fn pushed_blob(ctx: &Ctx) -> CaseResult<(String, String, Vec<u8>)> {
    let repo = ctx.repo();
    let data = ctx.bytes(BLOB_LEN);
    let digest = ctx.push_blob(&repo, &data).await?;
    Ok((repo, digest, data))
}

/// end-2: `GET` a blob returns its exact bytes and `Docker-Content-Digest`.
pub async fn end_2_blob_get_is_byte_exact_with_digest(ctx: &Ctx) -> CaseResult {
    let (repo, digest, data) = pushed_blob(ctx).await?;
    let resp = ctx.call(Method::GET, &format!("/v2/{repo}/blobs/{digest}")).await?;
    resp.expect(200)?;
    resp.expect_digest_header(&digest)?;
    resp.expect_body(&data)
}

/// end-2: `HEAD` a blob has `Content-Length` and `Docker-Content-Digest`
/// and no body.
pub async fn end_2_blob_head_has_length_and_digest(ctx: &Ctx) -> CaseResult {
    let (repo, digest, data) = pushed_blob(ctx).await?;
    let resp = ctx.call(Method::HEAD, &format!("/v2/{repo}/blobs/{digest}")).await?;
    resp.expect(200)?;
    resp.expect_digest_header(&digest)?;
    let length = resp.require_header("content-length")?;
    ensure_eq!(length, data.len().to_string(), "HEAD Content-Length");
    ensure!(resp.body.is_empty(), "HEAD answered with a body");
    Ok(())
}

/// end-2: a full `GET` says `Accept-Ranges: bytes`, so clients know they
/// may resume.
pub async fn end_2_blob_get_advertises_accept_ranges(ctx: &Ctx) -> CaseResult {
    let (repo, digest, _) = pushed_blob(ctx).await?;
    let resp = ctx.call(Method::GET, &format!("/v2/{repo}/blobs/{digest}")).await?;
    resp.expect(200)?;
    let accept = resp.require_header("accept-ranges")?;
    ensure_eq!(accept, "bytes", "Accept-Ranges");
    Ok(())
}

async fn range_case(ctx: &Ctx, range: ByteRange) -> CaseResult {
    let (repo, digest, data) = pushed_blob(ctx).await?;
    let total = data.len() as u64;
    let Some((first, last)) = range.resolve(total) else {
        fail!("suite bug: {range:?} is unsatisfiable for {total} bytes");
    };
    let resp = ctx
        .send(ctx.at(Method::GET, &format!("/v2/{repo}/blobs/{digest}"))?.header(header::RANGE, range.header()))
        .await?;
    resp.expect(206).map_err(|f| f.context(&format!("Range: {}", range.header())))?;
    let content_range = resp.require_header("content-range")?;
    ensure_eq!(
        wire::parse_content_range(content_range),
        Some(ContentRange::Satisfied { first, last, total: Some(total) }),
        "Content-Range {content_range:?}, want {:?}",
        wire::format_content_range(first, last, total)
    );
    let (first, last) = (first as usize, last as usize);
    resp.expect_body(&data[first..=last])
}

/// end-2: `Range: bytes=a-b` → 206 with that slice.
pub async fn end_2_blob_range_closed_is_206(ctx: &Ctx) -> CaseResult {
    range_case(ctx, ByteRange::Closed { first: 17, last: 1040 }).await
}

/// end-2: `Range: bytes=a-` → 206 from `a` to the end.
pub async fn end_2_blob_range_open_ended_is_206(ctx: &Ctx) -> CaseResult {
    range_case(ctx, ByteRange::From { first: 2000 }).await
}

/// end-2: `Range: bytes=-n` → 206 with the last `n` bytes.
pub async fn end_2_blob_range_suffix_is_206(ctx: &Ctx) -> CaseResult {
    range_case(ctx, ByteRange::Suffix { len: 77 }).await
}

/// end-2: a range starting past the end → 416 (RFC 9110 §15.5.17).
pub async fn end_2_blob_range_unsatisfiable_is_416(ctx: &Ctx) -> CaseResult {
    let (repo, digest, data) = pushed_blob(ctx).await?;
    let range = ByteRange::From { first: data.len() as u64 + 100 };
    let resp = ctx
        .send(ctx.at(Method::GET, &format!("/v2/{repo}/blobs/{digest}"))?.header(header::RANGE, range.header()))
        .await?;
    resp.expect(416).map_err(|f| f.context(&format!("Range: {}", range.header())))?;
    if let Some(content_range) = resp.header("content-range") {
        ensure_eq!(
            wire::parse_content_range(content_range),
            Some(ContentRange::Unsatisfied { total: data.len() as u64 }),
            "416 Content-Range {content_range:?}"
        );
    }
    Ok(())
}

/// end-2: an unknown blob → 404 `BLOB_UNKNOWN` (GET), 404 (HEAD).
pub async fn end_2_unknown_blob_is_404_blob_unknown(ctx: &Ctx) -> CaseResult {
    let (repo, _, _) = pushed_blob(ctx).await?;
    let unknown = content::sha256(&ctx.bytes(64));
    let path = format!("/v2/{repo}/blobs/{unknown}");
    ctx.call(Method::GET, &path).await?.expect_error(404, "BLOB_UNKNOWN")?;
    ctx.call(Method::HEAD, &path).await?.expect(404)?;
    Ok(())
}

async fn check_manifest_get(ctx: &Ctx, by_tag: bool) -> CaseResult {
    let repo = ctx.repo();
    let image = ctx.push_image(&repo, Some("v1")).await?;
    let reference = if by_tag { "v1" } else { image.digest.as_str() };
    let resp = ctx.fetch_manifest(Method::GET, &repo, reference).await?;
    resp.expect(200)?;
    ensure_eq!(resp.require_header("content-type")?, OCI_MANIFEST, "Content-Type");
    resp.expect_digest_header(&image.digest)?;
    resp.expect_body(&image.manifest)
}

/// end-3: `GET manifests/<tag>`: pushed type, digest header, exact bytes.
pub async fn end_3_manifest_get_by_tag(ctx: &Ctx) -> CaseResult {
    check_manifest_get(ctx, true).await
}

/// end-3: `GET manifests/<digest>`: pushed type, digest header, exact bytes.
pub async fn end_3_manifest_get_by_digest(ctx: &Ctx) -> CaseResult {
    check_manifest_get(ctx, false).await
}

/// end-3: `HEAD` by tag and by digest: type, digest, length, no body.
pub async fn end_3_manifest_head_by_tag_and_digest(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let image = ctx.push_image(&repo, Some("v1")).await?;
    for reference in ["v1", image.digest.as_str()] {
        let resp = ctx.fetch_manifest(Method::HEAD, &repo, reference).await?;
        resp.expect(200)?;
        ensure_eq!(resp.require_header("content-type")?, OCI_MANIFEST, "HEAD {reference} Content-Type");
        resp.expect_digest_header(&image.digest)?;
        ensure_eq!(
            resp.require_header("content-length")?,
            image.manifest.len().to_string(),
            "HEAD {reference} Content-Length"
        );
        ensure!(resp.body.is_empty(), "HEAD {reference} answered with a body");
    }
    Ok(())
}

/// end-3: unknown tag or digest in an existing repository → 404
/// `MANIFEST_UNKNOWN`.
pub async fn end_3_unknown_manifest_is_404_manifest_unknown(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    ctx.push_image(&repo, Some("v1")).await?;
    let unknown_tag = format!("missing-{}", ctx.token(8));
    let unknown_digest = content::sha256(&ctx.bytes(64));
    for reference in [unknown_tag.as_str(), unknown_digest.as_str()] {
        ctx.fetch_manifest(Method::GET, &repo, reference).await?.expect_error(404, "MANIFEST_UNKNOWN")?;
        ctx.fetch_manifest(Method::HEAD, &repo, reference).await?.expect(404)?;
    }
    Ok(())
}

/// end-3: a read of a reference that cannot exist (not a valid tag, not a valid digest) is a
/// read of something absent: 404 `MANIFEST_UNKNOWN`, as the OCI conformance suite checks with
/// `.INVALID_MANIFEST_NAME`. A write of such a tag is still refused as invalid (4xx).
pub async fn end_3_invalid_reference_read_is_404_manifest_unknown(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let image = ctx.push_image(&repo, Some("v1")).await?;
    for reference in [".INVALID_MANIFEST_NAME", "-leading-dash", "sha256:not-hex"] {
        ctx.fetch_manifest(Method::GET, &repo, reference).await?.expect_error(404, "MANIFEST_UNKNOWN")?;
        ctx.fetch_manifest(Method::HEAD, &repo, reference).await?.expect(404)?;
    }
    let resp = ctx.put_manifest(&repo, ".INVALID_MANIFEST_NAME", OCI_MANIFEST, &image.manifest).await?;
    ensure!(
        (400..500).contains(&resp.status) && resp.status != 404,
        "{}: a push to an invalid tag wants 400 TAG_INVALID, got {} ({})",
        resp.what(),
        resp.status,
        resp.body_excerpt()
    );
    Ok(())
}
