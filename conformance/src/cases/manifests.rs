//! Push, manifest side: end-7 (PUT by tag or digest, every manifest kind,
//! byte preservation, size limit, rejections) and end-7b (tag parameters).

use reqwest::Method;
use reqwest::Url;
use serde_json::{Value, json};

use crate::check::CaseResult;
use crate::content::{
    self, DOCKER_LIST, DOCKER_MANIFEST, DOCKER_SCHEMA1, EMPTY_JSON, EMPTY_JSON_DIGEST, OCI_CONFIG, OCI_INDEX,
    OCI_LAYER, OCI_MANIFEST,
};
use crate::ctx::{Ctx, Resp};
use crate::{ensure, ensure_eq};

/// 4 MiB: the size registries should accept and above which they answer 413.
const MANIFEST_LIMIT: usize = 4 * 1024 * 1024;

/// Checks a successful manifest PUT: 201, resolvable `Location`,
/// `Docker-Content-Digest` equal to the sha256 of the bytes sent.
fn expect_created(resp: &Resp, body: &[u8]) -> CaseResult {
    resp.expect(201)?;
    resp.location()?;
    resp.expect_digest_header(&content::sha256(body))
}

/// GETs `reference` and requires the exact bytes, type and digest.
async fn expect_manifest(ctx: &Ctx, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> CaseResult {
    let resp = ctx.fetch_manifest(Method::GET, repo, reference).await?;
    resp.expect(200)?;
    ensure_eq!(resp.require_header("content-type")?, media_type, "GET {reference} Content-Type");
    resp.expect_digest_header(&content::sha256(body))?;
    resp.expect_body(body)
}

/// Pushes a fresh layer and config, returning them.
async fn push_parts(ctx: &Ctx, repo: &str) -> CaseResult<(Vec<u8>, Vec<u8>)> {
    let layer = ctx.bytes(900);
    let config = content::image_config(&layer, &ctx.token(16));
    ctx.push_blob(repo, &layer).await?;
    ctx.push_blob(repo, &config).await?;
    Ok((config, layer))
}

/// end-7: OCI image manifest by tag → 201, then GET returns it.
pub async fn end_7_put_oci_manifest_by_tag(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let (config, layer) = push_parts(ctx, &repo).await?;
    let body = content::to_bytes(&content::oci_manifest(&config, &[&layer]));
    let resp = ctx.put_manifest(&repo, "v1", OCI_MANIFEST, &body).await?;
    expect_created(&resp, &body)?;
    expect_manifest(ctx, &repo, "v1", OCI_MANIFEST, &body).await
}

/// end-7: OCI image manifest by digest → 201, then GET returns it.
pub async fn end_7_put_oci_manifest_by_digest(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let (config, layer) = push_parts(ctx, &repo).await?;
    let body = content::to_bytes(&content::oci_manifest(&config, &[&layer]));
    let digest = content::sha256(&body);
    let resp = ctx.put_manifest(&repo, &digest, OCI_MANIFEST, &body).await?;
    expect_created(&resp, &body)?;
    expect_manifest(ctx, &repo, &digest, OCI_MANIFEST, &body).await
}

/// end-7: OCI image index whose children were pushed first.
pub async fn end_7_put_oci_index(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let amd64 = ctx.push_image(&repo, None).await?;
    let arm64 = ctx.push_image(&repo, None).await?;
    let body = content::to_bytes(&content::index(
        OCI_INDEX,
        &[(OCI_MANIFEST, &amd64.manifest, "amd64"), (OCI_MANIFEST, &arm64.manifest, "arm64")],
    ));
    let resp = ctx.put_manifest(&repo, "multi", OCI_INDEX, &body).await?;
    expect_created(&resp, &body)?;
    expect_manifest(ctx, &repo, "multi", OCI_INDEX, &body).await?;
    expect_manifest(ctx, &repo, &content::sha256(&body), OCI_INDEX, &body).await
}

async fn push_docker_manifest(ctx: &Ctx, repo: &str, reference: Option<&str>) -> CaseResult<Vec<u8>> {
    let (config, layer) = push_parts(ctx, repo).await?;
    let body = content::to_bytes(&content::docker_manifest(&config, &[&layer]));
    let digest = content::sha256(&body);
    let resp = ctx.put_manifest(repo, reference.unwrap_or(&digest), DOCKER_MANIFEST, &body).await?;
    expect_created(&resp, &body)?;
    Ok(body)
}

/// end-7: Docker image manifest v2 schema 2.
pub async fn end_7_put_docker_schema2_manifest(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let body = push_docker_manifest(ctx, &repo, Some("v2s2")).await?;
    expect_manifest(ctx, &repo, "v2s2", DOCKER_MANIFEST, &body).await
}

/// end-7: Docker manifest list whose children were pushed first.
pub async fn end_7_put_docker_manifest_list(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let a = push_docker_manifest(ctx, &repo, None).await?;
    let b = push_docker_manifest(ctx, &repo, None).await?;
    let body = content::to_bytes(&content::index(
        DOCKER_LIST,
        &[(DOCKER_MANIFEST, &a, "amd64"), (DOCKER_MANIFEST, &b, "arm64")],
    ));
    let resp = ctx.put_manifest(&repo, "list", DOCKER_LIST, &body).await?;
    expect_created(&resp, &body)?;
    expect_manifest(ctx, &repo, "list", DOCKER_LIST, &body).await
}

/// end-7: an artifact: `artifactType`, the 2-byte `{}` empty config
/// (`sha256:44136fa3…`), a custom layer type.
pub async fn end_7_put_artifact_manifest_with_empty_config(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let empty = ctx.push_blob(&repo, EMPTY_JSON).await?;
    ensure_eq!(empty.as_str(), EMPTY_JSON_DIGEST, "digest of the empty config");
    let payload = ctx.bytes(600);
    ctx.push_blob(&repo, &payload).await?;
    let body = content::to_bytes(&content::artifact_manifest(
        "application/vnd.berth.conformance.artifact",
        "application/vnd.berth.conformance.payload",
        &[&payload],
        None,
        Some(json!({ "org.opencontainers.image.title": "payload.bin" })),
    ));
    let resp = ctx.put_manifest(&repo, "artifact", OCI_MANIFEST, &body).await?;
    expect_created(&resp, &body)?;
    expect_manifest(ctx, &repo, "artifact", OCI_MANIFEST, &body).await?;
    let config = ctx.call(Method::GET, &format!("/v2/{repo}/blobs/{EMPTY_JSON_DIGEST}")).await?;
    config.expect(200)?;
    config.expect_body(EMPTY_JSON)
}

/// end-7: a manifest with odd whitespace, key order and line endings comes
/// back byte for byte, under the digest of those bytes.
pub async fn end_7_manifest_bytes_are_preserved(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let (config, layer) = push_parts(ctx, &repo).await?;
    let body = format!(
        "{{\n\t\"schemaVersion\" :  2 ,\r\n  \"mediaType\":\"{OCI_MANIFEST}\",\n\
         \"layers\": [ {{\"size\":{},\"digest\":\"{}\",   \"mediaType\":\"{OCI_LAYER}\"}} ],\n\
         \"config\"\t: {{ \"mediaType\": \"{OCI_CONFIG}\", \"size\": {}, \"digest\": \"{}\" }}\n}}\n\n",
        layer.len(),
        content::sha256(&layer),
        config.len(),
        content::sha256(&config),
    )
    .into_bytes();
    let digest = content::sha256(&body);
    let resp = ctx.put_manifest(&repo, "spaced", OCI_MANIFEST, &body).await?;
    expect_created(&resp, &body)?;
    expect_manifest(ctx, &repo, "spaced", OCI_MANIFEST, &body).await?;
    expect_manifest(ctx, &repo, &digest, OCI_MANIFEST, &body).await
}

/// end-7: pushing another manifest under an existing tag moves the tag; the
/// old manifest stays reachable by digest.
pub async fn end_7_retag_moves_the_tag(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let old = ctx.push_image(&repo, Some("moving")).await?;
    let new = ctx.push_image(&repo, Some("moving")).await?;
    expect_manifest(ctx, &repo, "moving", OCI_MANIFEST, &new.manifest).await?;
    expect_manifest(ctx, &repo, &old.digest, OCI_MANIFEST, &old.manifest).await
}

/// A descriptor of a manifest that was never pushed anywhere.
pub(crate) fn missing_subject(ctx: &Ctx) -> Value {
    content::descriptor(OCI_MANIFEST, &ctx.bytes(321))
}

/// end-7: a manifest whose `subject` does not exist must be accepted (the
/// spec's MUST, so referrers can be pushed before their subject).
pub async fn end_7_manifest_with_missing_subject_is_accepted(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    ctx.push_blob(&repo, EMPTY_JSON).await?;
    let payload = ctx.bytes(200);
    ctx.push_blob(&repo, &payload).await?;
    let body = content::to_bytes(&content::artifact_manifest(
        "application/vnd.berth.conformance.signature",
        "application/vnd.berth.conformance.payload",
        &[&payload],
        Some(missing_subject(ctx)),
        None,
    ));
    let digest = content::sha256(&body);
    let resp = ctx.put_manifest(&repo, &digest, OCI_MANIFEST, &body).await?;
    expect_created(&resp, &body)?;
    expect_manifest(ctx, &repo, &digest, OCI_MANIFEST, &body).await
}

/// A valid image manifest padded (through an annotation) to exactly `size`
/// bytes.
fn padded_manifest(config: &[u8], layer: &[u8], size: usize) -> Vec<u8> {
    let mut manifest = content::oci_manifest(config, &[layer]);
    if let Some(obj) = manifest.as_object_mut() {
        obj.insert("annotations".into(), json!({ "pad": "" }));
    }
    let base = content::to_bytes(&manifest).len();
    if let Some(obj) = manifest.as_object_mut() {
        obj.insert("annotations".into(), json!({ "pad": "x".repeat(size.saturating_sub(base)) }));
    }
    content::to_bytes(&manifest)
}

/// end-7: a manifest of more than 4 MiB → 413; one of exactly 4 MiB is
/// still accepted (the limit is inclusive).
pub async fn end_7_manifest_over_4mib_is_413(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let (config, layer) = push_parts(ctx, &repo).await?;
    let at_limit = padded_manifest(&config, &layer, MANIFEST_LIMIT);
    ensure_eq!(at_limit.len(), MANIFEST_LIMIT, "suite padding");
    let resp = ctx.put_manifest(&repo, "at-limit", OCI_MANIFEST, &at_limit).await?;
    resp.expect(201).map_err(|f| f.context("a manifest of exactly 4 MiB"))?;
    let over = padded_manifest(&config, &layer, MANIFEST_LIMIT + 1);
    let resp = ctx.put_manifest(&repo, "over-limit", OCI_MANIFEST, &over).await?;
    resp.expect(413).map_err(|f| f.context("a manifest of 4 MiB + 1 byte"))?;
    Ok(())
}

/// end-7: a layer the repository does not have → 400
/// `MANIFEST_BLOB_UNKNOWN`.
pub async fn end_7_missing_layer_is_400_manifest_blob_unknown(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let layer = ctx.bytes(700); // never pushed
    let config = content::image_config(&layer, &ctx.token(16));
    ctx.push_blob(&repo, &config).await?;
    let body = content::to_bytes(&content::oci_manifest(&config, &[&layer]));
    ctx.put_manifest(&repo, "broken", OCI_MANIFEST, &body).await?.expect_error(400, "MANIFEST_BLOB_UNKNOWN")?;
    ctx.fetch_manifest(Method::HEAD, &repo, "broken")
        .await?
        .expect(404)
        .map_err(|f| f.context("a rejected manifest must not be tagged"))?;
    Ok(())
}

/// end-7: Docker schema 1 (signed) manifests are refused with a 4xx error.
pub async fn end_7_docker_schema1_is_rejected(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let layer = ctx.bytes(300);
    let digest = ctx.push_blob(&repo, &layer).await?;
    let body = content::to_bytes(&json!({
        "schemaVersion": 1,
        "name": repo,
        "tag": "old",
        "architecture": "amd64",
        "fsLayers": [ { "blobSum": digest } ],
        "history": [ { "v1Compatibility": "{\"id\":\"0000\"}" } ],
        "signatures": [ {
            "header": { "alg": "ES256" },
            "signature": "AAAA",
            "protected": "AAAA"
        } ]
    }));
    let resp = ctx.put_manifest(&repo, "old", DOCKER_SCHEMA1, &body).await?;
    ensure!(
        (400..500).contains(&resp.status),
        "{}: want a 4xx refusal of schema 1, got {} ({})",
        resp.what(),
        resp.status,
        resp.body_excerpt()
    );
    let codes = resp.error_codes()?;
    ctx.note(format!("schema 1 refused with {} {codes:?}", resp.status));
    Ok(())
}

/// end-7: `PUT manifests/<digest>` whose body has another digest → 400
/// `DIGEST_INVALID`.
pub async fn end_7_digest_mismatch_is_400_digest_invalid(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let (config, layer) = push_parts(ctx, &repo).await?;
    let body = content::to_bytes(&content::oci_manifest(&config, &[&layer]));
    let wrong = content::sha256(&ctx.bytes(64));
    ctx.put_manifest(&repo, &wrong, OCI_MANIFEST, &body).await?.expect_error(400, "DIGEST_INVALID")
}

/// end-7: a body that is not JSON → 400 `MANIFEST_INVALID`.
pub async fn end_7_invalid_json_is_400_manifest_invalid(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    ctx.push_blob(&repo, &ctx.bytes(10)).await?;
    let body = format!("{{\"schemaVersion\": 2, \"mediaType\": \"{OCI_MANIFEST}\", \"config\": ");
    ctx.put_manifest(&repo, "bad", OCI_MANIFEST, body.as_bytes()).await?.expect_error(400, "MANIFEST_INVALID")
}

/// end-7b: `PUT manifests/<digest>?tag=a&tag=b` → 201, both tags resolve
/// to the digest.
pub async fn end_7b_tag_params_tag_the_digest(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let (config, layer) = push_parts(ctx, &repo).await?;
    let body = content::to_bytes(&content::oci_manifest(&config, &[&layer]));
    let digest = content::sha256(&body);
    let mut url: Url = ctx.url(&format!("/v2/{repo}/manifests/{digest}"))?;
    url.query_pairs_mut().append_pair("tag", "first").append_pair("tag", "second");
    let resp = ctx.send(ctx.request(Method::PUT, url).header("content-type", OCI_MANIFEST).body(body.clone())).await?;
    expect_created(&resp, &body)?;
    let oci_tags: Vec<&str> = resp.headers.get_all("oci-tag").iter().filter_map(|v| v.to_str().ok()).collect();
    if oci_tags.is_empty() {
        ctx.note("no OCI-Tag header");
    }
    for tag in ["first", "second"] {
        expect_manifest(ctx, &repo, tag, OCI_MANIFEST, &body).await?;
    }
    Ok(())
}
