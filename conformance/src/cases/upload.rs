//! Push, blob side: end-4a/4b/4c (start), end-5 (PATCH), end-6 (PUT),
//! end-11 (mount), end-13 (status), end-14 (cancel).

use bytes::Bytes;
use reqwest::header;
use reqwest::{Body, Method, Url};

use crate::check::CaseResult;
use crate::content;
use crate::ctx::{Ctx, Resp, with_digest};
use crate::wire;
use crate::{ensure, ensure_eq, fail};

const OCTET_STREAM: &str = "application/octet-stream";

/// Reads the blob back and compares it byte for byte.
async fn expect_blob(ctx: &Ctx, repo: &str, digest: &str, data: &[u8]) -> CaseResult {
    let resp = ctx.call(Method::GET, &format!("/v2/{repo}/blobs/{digest}")).await?;
    resp.expect(200).map_err(|f| f.context("reading the blob back"))?;
    resp.expect_body(data)
}

/// A `201` that commits a blob: `Location`, the digest header, and the bytes read back.
async fn expect_committed(ctx: &Ctx, resp: &Resp, repo: &str, digest: &str, data: &[u8]) -> CaseResult {
    resp.expect(201)?;
    resp.location()?;
    resp.expect_digest_header(digest)?;
    expect_blob(ctx, repo, digest, data).await
}

/// Completes a session with a body-less `PUT ?digest=`.
async fn finish(ctx: &Ctx, session: &Url, digest: &str) -> CaseResult<Resp> {
    let resp =
        ctx.send(ctx.request(Method::PUT, with_digest(session, digest)).header(header::CONTENT_LENGTH, "0")).await?;
    resp.expect(201).map_err(|f| f.context("completing the upload"))?;
    Ok(resp)
}

/// `PATCH` one chunk with `Content-Range`; requires 202 and returns the
/// next session URL after checking `Range: 0-<last>`.
async fn patch_chunk(ctx: &Ctx, session: &Url, chunk: &[u8], first: u64) -> CaseResult<Url> {
    let last = first + chunk.len() as u64 - 1;
    let resp = ctx
        .send(
            ctx.request(Method::PATCH, session.clone())
                .header(header::CONTENT_TYPE, OCTET_STREAM)
                .header(header::CONTENT_RANGE, wire::format_upload_range(first, last))
                .header(header::CONTENT_LENGTH, chunk.len().to_string())
                .body(chunk.to_vec()),
        )
        .await?;
    resp.expect(202)?;
    expect_upload_range(&resp, last)?;
    resp.location()
}

/// Requires `Range: 0-<last>` (or the legacy `bytes=0-<last>`).
fn expect_upload_range(resp: &Resp, last: u64) -> CaseResult {
    let range = resp.require_header("range")?;
    ensure_eq!(wire::parse_upload_range(range), Some((0, last)), "{}: Range {range:?}", resp.what());
    Ok(())
}

/// A chunk size that honours `OCI-Chunk-Min-Length` if the registry sets it.
fn chunk_len(start: &Resp, wanted: usize) -> usize {
    start
        .header("oci-chunk-min-length")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(wanted, |min| min.max(wanted))
}

async fn post_upload(ctx: &Ctx, repo: &str) -> CaseResult<Resp> {
    let resp = ctx
        .send(ctx.at(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))?.header(header::CONTENT_LENGTH, "0"))
        .await?;
    resp.expect(202)?;
    Ok(resp)
}

/// end-4a: `POST` → 202 + `Location`, then one `PUT ?digest=` with the
/// whole blob → 201 + `Location` + `Docker-Content-Digest`.
pub async fn end_4a_post_then_single_put(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let data = ctx.bytes(2048 + 5);
    let digest = content::sha256(&data);
    let session = post_upload(ctx, &repo).await?.location()?;
    let resp = ctx
        .send(
            ctx.request(Method::PUT, with_digest(&session, &digest))
                .header(header::CONTENT_TYPE, OCTET_STREAM)
                .body(data.clone()),
        )
        .await?;
    expect_committed(ctx, &resp, &repo, &digest, &data).await
}

/// end-4b: `POST ?digest=` with the body. 201 is the single-request form;
/// the spec lets a registry answer 202 instead, after which the client
/// uploads through the session as usual. Both pass; the note says which.
pub async fn end_4b_single_post_monolithic_upload(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let data = ctx.bytes(1500);
    let digest = content::sha256(&data);
    let mut url = ctx.url(&format!("/v2/{repo}/blobs/uploads/"))?;
    url.query_pairs_mut().append_pair("digest", &digest);
    let resp =
        ctx.send(ctx.request(Method::POST, url).header(header::CONTENT_TYPE, OCTET_STREAM).body(data.clone())).await?;
    match resp.expect_any(&[201, 202])? {
        201 => {
            ctx.note("single-POST upload answered 201");
            resp.location()?;
            resp.expect_digest_header(&digest)?;
        }
        _ => {
            ctx.note("single-POST upload answered 202 (fallback to a session, allowed)");
            let session = resp.location()?;
            let put = ctx
                .send(
                    ctx.request(Method::PUT, with_digest(&session, &digest))
                        .header(header::CONTENT_TYPE, OCTET_STREAM)
                        .body(data.clone()),
                )
                .await?;
            put.expect(201).map_err(|f| f.context("completing the fallback session"))?;
        }
    }
    expect_blob(ctx, &repo, &digest, &data).await
}

/// end-4c: `POST ?digest-algorithm=sha512`, upload, complete with a
/// `sha512:` digest; the blob is then readable under that digest.
pub async fn end_4c_sha512_upload(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let data = ctx.bytes(1800);
    let digest = content::sha512(&data);
    let mut url = ctx.url(&format!("/v2/{repo}/blobs/uploads/"))?;
    url.query_pairs_mut().append_pair("digest-algorithm", "sha512");
    let start = ctx.send(ctx.request(Method::POST, url).header(header::CONTENT_LENGTH, "0")).await?;
    start.expect(202)?;
    let session = start.location()?;
    let resp = ctx
        .send(
            ctx.request(Method::PUT, with_digest(&session, &digest))
                .header(header::CONTENT_TYPE, OCTET_STREAM)
                .body(data.clone()),
        )
        .await?;
    resp.expect(201)?;
    match resp.header("docker-content-digest") {
        Some(d) if d == digest => {}
        Some(d) => ctx.note(format!("PUT answered Docker-Content-Digest {d} (canonical form)")),
        None => fail!("{}: no Docker-Content-Digest", resp.what()),
    }
    let head = ctx.call(Method::HEAD, &format!("/v2/{repo}/blobs/{digest}")).await?;
    head.expect(200)?;
    ensure_eq!(head.require_header("content-length")?, data.len().to_string(), "HEAD Content-Length");
    expect_blob(ctx, &repo, &digest, &data).await
}

/// end-4: a zero-byte blob can be pushed and pulled.
pub async fn end_4_zero_byte_blob_push_and_pull(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let digest = ctx.push_blob(&repo, b"").await?;
    ensure_eq!(digest.as_str(), content::ZERO_BYTES_DIGEST, "suite digest");
    let path = format!("/v2/{repo}/blobs/{digest}");
    let head = ctx.call(Method::HEAD, &path).await?;
    head.expect(200)?;
    head.expect_digest_header(&digest)?;
    ensure_eq!(head.require_header("content-length")?, "0", "HEAD Content-Length");
    let get = ctx.call(Method::GET, &path).await?;
    get.expect(200)?;
    get.expect_body(b"")
}

/// end-5: chunks with `Content-Range` and `Content-Length` → 202 with
/// `Location` and `Range: 0-<end>` each; a body-less `PUT` completes.
pub async fn end_5_chunked_upload_with_content_range(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let start = post_upload(ctx, &repo).await?;
    let len = chunk_len(&start, 2000);
    let data = ctx.bytes(2 * len + 1000);
    let digest = content::sha256(&data);
    let mut session = start.location()?;
    let mut offset = 0usize;
    for chunk in data.chunks(len) {
        session = patch_chunk(ctx, &session, chunk, offset as u64)
            .await
            .map_err(|f| f.context(&format!("chunk at {offset}")))?;
        offset += chunk.len();
    }
    finish(ctx, &session, &digest).await?;
    expect_blob(ctx, &repo, &digest, &data).await
}

/// end-5: a chunk that does not start where the last one ended → 416; the
/// session survives and resumes from the last valid range.
pub async fn end_5_out_of_order_chunk_is_416(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let start = post_upload(ctx, &repo).await?;
    let len = chunk_len(&start, 1024);
    let data = ctx.bytes(2 * len);
    let digest = content::sha256(&data);
    let (first, second) = data.split_at(len);
    let session = patch_chunk(ctx, &start.location()?, first, 0).await?;
    // Skip ahead by 10 bytes: the registry has `len` bytes, not `len + 10`.
    let skip = (len + 10) as u64;
    let resp = ctx
        .send(
            ctx.request(Method::PATCH, session.clone())
                .header(header::CONTENT_TYPE, OCTET_STREAM)
                .header(header::CONTENT_RANGE, wire::format_upload_range(skip, skip + second.len() as u64 - 1))
                .header(header::CONTENT_LENGTH, second.len().to_string())
                .body(second.to_vec()),
        )
        .await?;
    resp.expect(416)?;
    match resp.header("range") {
        Some(_) => expect_upload_range(&resp, len as u64 - 1)?,
        None => ctx.note("416 carried no Range header"),
    }
    let session = patch_chunk(ctx, &session, second, len as u64).await.map_err(|f| f.context("resuming after 416"))?;
    finish(ctx, &session, &digest).await?;
    expect_blob(ctx, &repo, &digest, &data).await
}

/// end-5: a `Content-Range` that is not `<first>-<last>` → 416.
pub async fn end_5_invalid_content_range_is_416(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let session = post_upload(ctx, &repo).await?.location()?;
    let chunk = ctx.bytes(100);
    let resp = ctx
        .send(
            ctx.request(Method::PATCH, session)
                .header(header::CONTENT_TYPE, OCTET_STREAM)
                .header(header::CONTENT_RANGE, "abc-xyz")
                .header(header::CONTENT_LENGTH, "100")
                .body(chunk),
        )
        .await?;
    resp.expect(416)?;
    Ok(())
}

/// end-5: a `Content-Range` whose length does not fit in 64 bits, on an empty `PATCH`, is
/// not a range (a registry computing `end - start + 1` unchecked sees 0 bytes announced and
/// 0 sent, and answers 202) → 416; so is a bound past 2^64.
pub async fn end_5_overflowing_content_range_is_416(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let session = post_upload(ctx, &repo).await?.location()?;
    for range in ["0-18446744073709551615", "0-18446744073709551616", "18446744073709551615-0"] {
        let resp = ctx
            .send(
                ctx.request(Method::PATCH, session.clone())
                    .header(header::CONTENT_TYPE, OCTET_STREAM)
                    .header(header::CONTENT_RANGE, range)
                    .header(header::CONTENT_LENGTH, "0")
                    .body(Vec::new()),
            )
            .await?;
        resp.expect(416).map_err(|f| f.context(&format!("Content-Range: {range}")))?;
    }
    Ok(())
}

/// end-5 (streamed): one `PATCH` with the whole blob and no
/// `Content-Range`, then a body-less `PUT`. Not in the spec's endpoint
/// table but used by clients and the OCI conformance suite.
pub async fn end_5_streamed_patch_without_content_range(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let data = ctx.bytes(4000);
    let digest = content::sha256(&data);
    let session = post_upload(ctx, &repo).await?.location()?;
    let resp = ctx
        .send(ctx.request(Method::PATCH, session).header(header::CONTENT_TYPE, OCTET_STREAM).body(data.clone()))
        .await?;
    resp.expect(202)?;
    expect_upload_range(&resp, data.len() as u64 - 1)?;
    finish(ctx, &resp.location()?, &digest).await?;
    expect_blob(ctx, &repo, &digest, &data).await
}

/// end-5: a `PATCH` whose body is sent with `Transfer-Encoding: chunked`
/// (no `Content-Length`), as streaming clients do.
pub async fn end_5_transfer_encoding_chunked_patch(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let data = ctx.bytes(5000);
    let digest = content::sha256(&data);
    let session = post_upload(ctx, &repo).await?.location()?;
    let pieces: Vec<Result<Bytes, std::io::Error>> = data.chunks(700).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    // A stream body has no known length, so the client must use chunked
    // transfer coding: exactly what this case is about.
    let body = Body::wrap_stream(futures::stream::iter(pieces));
    let request = ctx.request(Method::PATCH, session).header(header::CONTENT_TYPE, OCTET_STREAM).body(body);
    let resp = ctx.send(request).await?;
    resp.expect(202)?;
    expect_upload_range(&resp, data.len() as u64 - 1)?;
    finish(ctx, &resp.location()?, &digest).await?;
    expect_blob(ctx, &repo, &digest, &data).await
}

/// end-6: the final chunk travels in the `PUT` itself.
pub async fn end_6_put_carries_final_chunk(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let start = post_upload(ctx, &repo).await?;
    let len = chunk_len(&start, 1500);
    let data = ctx.bytes(len + 700);
    let digest = content::sha256(&data);
    let (first, last) = data.split_at(len);
    let session = patch_chunk(ctx, &start.location()?, first, 0).await?;
    let resp = ctx
        .send(
            ctx.request(Method::PUT, with_digest(&session, &digest))
                .header(header::CONTENT_TYPE, OCTET_STREAM)
                .header(header::CONTENT_RANGE, wire::format_upload_range(len as u64, data.len() as u64 - 1))
                .header(header::CONTENT_LENGTH, last.len().to_string())
                .body(last.to_vec()),
        )
        .await?;
    expect_committed(ctx, &resp, &repo, &digest, &data).await
}

/// end-6: completing with a digest the bytes do not have → 400
/// `DIGEST_INVALID`, and nothing is stored under that digest.
pub async fn end_6_put_wrong_digest_is_400_digest_invalid(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let data = ctx.bytes(1000);
    let wrong = content::sha256(&ctx.bytes(1000));
    let session = post_upload(ctx, &repo).await?.location()?;
    let resp = ctx
        .send(
            ctx.request(Method::PUT, with_digest(&session, &wrong))
                .header(header::CONTENT_TYPE, OCTET_STREAM)
                .body(data),
        )
        .await?;
    resp.expect_error(400, "DIGEST_INVALID")?;
    ctx.call(Method::HEAD, &format!("/v2/{repo}/blobs/{wrong}"))
        .await?
        .expect(404)
        .map_err(|f| f.context("the wrong digest must not be stored"))?;
    Ok(())
}

/// end-13: `GET` on the session → 204 with `Location` and `Range`.
pub async fn end_13_upload_status_is_204_with_range(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let start = post_upload(ctx, &repo).await?;
    let len = chunk_len(&start, 1234);
    let chunk = ctx.bytes(len);
    let session = patch_chunk(ctx, &start.location()?, &chunk, 0).await?;
    let resp = ctx.send(ctx.request(Method::GET, session)).await?;
    resp.expect(204)?;
    resp.location()?;
    expect_upload_range(&resp, len as u64 - 1)?;
    ensure!(resp.body.is_empty(), "204 answered with a body");
    Ok(())
}

/// end-14: `DELETE` on the session → 204; the session is then gone (404
/// `BLOB_UPLOAD_UNKNOWN`).
pub async fn end_14_cancel_upload_is_204_then_404(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let start = post_upload(ctx, &repo).await?;
    let len = chunk_len(&start, 512);
    let chunk = ctx.bytes(len);
    let session = patch_chunk(ctx, &start.location()?, &chunk, 0).await?;
    ctx.send(ctx.request(Method::DELETE, session.clone())).await?.expect(204)?;
    ctx.send(ctx.request(Method::GET, session)).await?.expect_error(404, "BLOB_UPLOAD_UNKNOWN")
}

fn mount_url(ctx: &Ctx, target: &str, digest: &str, from: &str) -> CaseResult<Url> {
    let mut url = ctx.url(&format!("/v2/{target}/blobs/uploads/"))?;
    url.query_pairs_mut().append_pair("mount", digest).append_pair("from", from);
    Ok(url)
}

/// end-11: mounting a blob the source repository has → 201 + `Location`,
/// and the blob is readable in the target. With mounts disabled
/// (`--no-cross-mount`) a 202 session is expected instead.
pub async fn end_11_mount_from_repo_with_blob_is_201(ctx: &Ctx) -> CaseResult {
    let source = ctx.repo_with("source");
    let target = ctx.repo_with("target");
    let data = ctx.bytes(2222);
    let digest = ctx.push_blob(&source, &data).await?;
    let resp = ctx
        .send(ctx.request(Method::POST, mount_url(ctx, &target, &digest, &source)?).header(header::CONTENT_LENGTH, "0"))
        .await?;
    if ctx.flags().cross_mount {
        resp.expect(201)?;
        resp.location()?;
        if let Some(d) = resp.header("docker-content-digest") {
            ensure_eq!(d, digest.as_str(), "mount Docker-Content-Digest");
        }
    } else {
        resp.expect(202)?;
        let put = ctx
            .send(
                ctx.request(Method::PUT, with_digest(&resp.location()?, &digest))
                    .header(header::CONTENT_TYPE, OCTET_STREAM)
                    .body(data.clone()),
            )
            .await?;
        put.expect(201)?;
    }
    expect_blob(ctx, &target, &digest, &data).await
}

/// end-11: mounting from a repository that lacks the blob falls back to a
/// normal session (202 + `Location`) that can be completed.
pub async fn end_11_mount_from_repo_without_blob_is_202(ctx: &Ctx) -> CaseResult {
    let source = ctx.repo_with("source");
    let target = ctx.repo_with("target");
    // The source exists but holds other content.
    ctx.push_blob(&source, &ctx.bytes(300)).await?;
    let data = ctx.bytes(1111);
    let digest = content::sha256(&data);
    let resp = ctx
        .send(ctx.request(Method::POST, mount_url(ctx, &target, &digest, &source)?).header(header::CONTENT_LENGTH, "0"))
        .await?;
    resp.expect(202)?;
    let put = ctx
        .send(
            ctx.request(Method::PUT, with_digest(&resp.location()?, &digest))
                .header(header::CONTENT_TYPE, OCTET_STREAM)
                .body(data.clone()),
        )
        .await?;
    put.expect(201).map_err(|f| f.context("completing the fallback session"))?;
    expect_blob(ctx, &target, &digest, &data).await
}
