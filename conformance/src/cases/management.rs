//! Content management: end-9 (delete manifests and tags) and end-10
//! (delete blobs). When a `--no-delete-*` flag says deletion is disabled,
//! each case expects the spec's refusal instead: 405 `UNSUPPORTED`, with
//! the content left in place.

use reqwest::Method;

use crate::check::CaseResult;
use crate::content::{self, OCI_MANIFEST};
use crate::ctx::{Ctx, Resp};
use crate::ensure_eq;

fn expect_refused(resp: &Resp) -> CaseResult {
    resp.expect_error(405, "UNSUPPORTED").map_err(|f| f.context("deletion is disabled"))
}

/// end-9: `DELETE manifests/<tag>` removes the tag only: the tag is gone
/// (404 `MANIFEST_UNKNOWN`, absent from the list), the digest still
/// resolves, other tags stay.
pub async fn end_9_delete_manifest_by_tag_untags(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let image = ctx.push_image(&repo, Some("doomed")).await?;
    ctx.push_manifest(&repo, "keep", OCI_MANIFEST, &image.manifest).await?;
    let resp = ctx.call(Method::DELETE, &format!("/v2/{repo}/manifests/doomed")).await?;
    if !ctx.flags().delete_manifests {
        expect_refused(&resp)?;
        return ctx.fetch_manifest(Method::HEAD, &repo, "doomed").await?.expect(200).map(|_| ());
    }
    resp.expect(202)?;
    ctx.fetch_manifest(Method::GET, &repo, "doomed")
        .await?
        .expect_error(404, "MANIFEST_UNKNOWN")
        .map_err(|f| f.context("the deleted tag"))?;
    let by_digest = ctx.fetch_manifest(Method::GET, &repo, &image.digest).await?;
    by_digest.expect(200).map_err(|f| f.context("untagging must keep the manifest"))?;
    by_digest.expect_body(&image.manifest)?;
    ctx.fetch_manifest(Method::HEAD, &repo, "keep").await?.expect(200).map_err(|f| f.context("the other tag"))?;
    ensure_eq!(ctx.tags(&repo).await?, vec!["keep".to_owned()], "tags after untag");
    Ok(())
}

/// end-9: `DELETE manifests/<digest>` → 202; the manifest is then 404
/// `MANIFEST_UNKNOWN` and its tags are gone from the list.
pub async fn end_9_delete_manifest_by_digest(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let doomed = ctx.push_image(&repo, Some("x")).await?;
    ctx.push_manifest(&repo, "y", OCI_MANIFEST, &doomed.manifest).await?;
    ctx.push_image(&repo, Some("other")).await?;
    let resp = ctx.call(Method::DELETE, &format!("/v2/{repo}/manifests/{}", doomed.digest)).await?;
    if !ctx.flags().delete_manifests {
        expect_refused(&resp)?;
        return ctx.fetch_manifest(Method::HEAD, &repo, &doomed.digest).await?.expect(200).map(|_| ());
    }
    resp.expect(202)?;
    ctx.fetch_manifest(Method::GET, &repo, &doomed.digest).await?.expect_error(404, "MANIFEST_UNKNOWN")?;
    ctx.fetch_manifest(Method::HEAD, &repo, &doomed.digest).await?.expect(404)?;
    for tag in ["x", "y"] {
        ctx.fetch_manifest(Method::GET, &repo, tag)
            .await?
            .expect_error(404, "MANIFEST_UNKNOWN")
            .map_err(|f| f.context(&format!("tag {tag} of the deleted manifest")))?;
    }
    ensure_eq!(ctx.tags(&repo).await?, vec!["other".to_owned()], "tags after delete");
    Ok(())
}

/// end-9: deleting a manifest the repository does not have → 404
/// `MANIFEST_UNKNOWN`.
pub async fn end_9_delete_unknown_manifest_is_404(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    ctx.push_image(&repo, Some("v1")).await?;
    let unknown = content::sha256(&ctx.bytes(64));
    let resp = ctx.call(Method::DELETE, &format!("/v2/{repo}/manifests/{unknown}")).await?;
    if !ctx.flags().delete_manifests {
        return expect_refused(&resp);
    }
    resp.expect_error(404, "MANIFEST_UNKNOWN")
}

/// end-10: `DELETE blobs/<digest>` → 202; the blob is then 404.
pub async fn end_10_delete_blob(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let data = ctx.bytes(800);
    let digest = ctx.push_blob(&repo, &data).await?;
    let path = format!("/v2/{repo}/blobs/{digest}");
    let resp = ctx.call(Method::DELETE, &path).await?;
    if !ctx.flags().delete_blobs {
        expect_refused(&resp)?;
        return ctx.call(Method::HEAD, &path).await?.expect(200).map(|_| ());
    }
    resp.expect(202)?;
    ctx.call(Method::GET, &path).await?.expect_error(404, "BLOB_UNKNOWN")?;
    ctx.call(Method::HEAD, &path).await?.expect(404)?;
    Ok(())
}

/// end-10: deleting a blob the repository does not have → 404
/// `BLOB_UNKNOWN`.
pub async fn end_10_delete_unknown_blob_is_404(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    ctx.push_blob(&repo, &ctx.bytes(100)).await?;
    let unknown = content::sha256(&ctx.bytes(64));
    let resp = ctx.call(Method::DELETE, &format!("/v2/{repo}/blobs/{unknown}")).await?;
    if !ctx.flags().delete_blobs {
        return expect_refused(&resp);
    }
    resp.expect_error(404, "BLOB_UNKNOWN")
}
