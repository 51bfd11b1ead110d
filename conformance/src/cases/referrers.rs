//! Referrers: `OCI-Subject` on push (end-7), the referrers list (end-12a)
//! and its `artifactType` filter (end-12b). Skipped with `--no-referrers`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::check::CaseResult;
use crate::content::{self, EMPTY_JSON, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST};
use crate::ctx::Ctx;
use crate::wire;
use crate::{ensure, ensure_eq, fail};

const SBOM_TYPE: &str = "application/vnd.berth.conformance.sbom";
const SIG_CONFIG_TYPE: &str = "application/vnd.berth.conformance.signature.config+json";

/// A referrer the suite pushed, as the referrers list must describe it.
#[derive(Debug, Clone)]
struct Expected {
    digest: String,
    size: usize,
    artifact_type: &'static str,
    annotations: Value,
}

/// Pushes two referrers of `subject` into `repo`:
/// - an artifact with `artifactType` = [`SBOM_TYPE`] and the empty config;
/// - an image manifest without `artifactType` whose config type is
///   [`SIG_CONFIG_TYPE`], which the list must report as its artifactType.
///
/// Requires 201 for both; `OCI-Subject` is checked by its own case.
async fn push_referrers(ctx: &Ctx, repo: &str, subject: &Value) -> CaseResult<[Expected; 2]> {
    ctx.push_blob(repo, EMPTY_JSON).await?;
    let payload = ctx.bytes(256);
    ctx.push_blob(repo, &payload).await?;

    let sbom_annotations = json!({
        "org.opencontainers.image.created": "2026-01-01T00:00:00Z",
        "com.example.kind": "sbom",
    });
    let sbom = content::to_bytes(&content::artifact_manifest(
        SBOM_TYPE,
        "application/spdx+json",
        &[&payload],
        Some(subject.clone()),
        Some(sbom_annotations.clone()),
    ));

    let sig_config = content::to_bytes(&json!({ "signer": ctx.token(12) }));
    ctx.push_blob(repo, &sig_config).await?;
    let sig_annotations = json!({ "com.example.kind": "signature" });
    let sig = content::to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": content::descriptor(SIG_CONFIG_TYPE, &sig_config),
        "layers": [ content::descriptor("application/octet-stream", &payload) ],
        "subject": subject,
        "annotations": sig_annotations,
    }));

    let mut out = Vec::new();
    for (body, artifact_type, annotations) in
        [(sbom, SBOM_TYPE, sbom_annotations), (sig, SIG_CONFIG_TYPE, sig_annotations)]
    {
        let digest = content::sha256(&body);
        ctx.push_manifest(repo, &digest, OCI_MANIFEST, &body).await?;
        out.push(Expected { digest, size: body.len(), artifact_type, annotations });
    }
    match <[Expected; 2]>::try_from(out) {
        Ok(pair) => Ok(pair),
        Err(_) => fail!("suite bug: expected two referrers"),
    }
}

/// Fetches every page of `GET /v2/<repo>/referrers/<digest>[?query]` and
/// returns the descriptors, checking the index envelope on each page.
async fn referrers(ctx: &Ctx, repo: &str, digest: &str, query: &str) -> CaseResult<(Vec<Value>, Vec<String>)> {
    let mut url = Some(ctx.url(&format!("/v2/{repo}/referrers/{digest}{query}"))?);
    let mut descriptors = Vec::new();
    let mut filters = Vec::new();
    let mut pages = 0;
    while let Some(next) = url.take() {
        pages += 1;
        ensure!(pages <= 10, "referrers Link never ends");
        let resp = ctx.send(ctx.request(Method::GET, next)).await?;
        resp.expect(200)?;
        ensure_eq!(resp.require_header("content-type")?, OCI_INDEX, "{}: Content-Type", resp.what());
        if let Some(applied) = resp.header("oci-filters-applied") {
            filters.extend(applied.split(',').map(|s| s.trim().to_owned()));
        }
        let body = resp.json()?;
        ensure_eq!(body["schemaVersion"], json!(2), "{}: schemaVersion", resp.what());
        ensure_eq!(body["mediaType"], json!(OCI_INDEX), "{}: mediaType", resp.what());
        let Some(list) = body["manifests"].as_array() else {
            fail!("{}: `manifests` is not a list: {}", resp.what(), resp.body_excerpt());
        };
        descriptors.extend(list.iter().cloned());
        if let Some(link) = resp.header("link") {
            let Some(target) = wire::parse_link_next(link) else {
                fail!("{}: Link {link:?} has no rel=\"next\"", resp.what());
            };
            url = Some(wire::resolve_location(&resp.url, &target).map_err(crate::Failure::new)?);
        }
    }
    Ok((descriptors, filters))
}

/// Requires `descriptors` to be exactly `want` (any order), each with the
/// right mediaType, size, artifactType and annotations.
fn expect_descriptors(descriptors: &[Value], want: &[&Expected]) -> CaseResult {
    let mut got: Vec<String> =
        descriptors.iter().map(|d| d["digest"].as_str().unwrap_or("<no digest>").to_owned()).collect();
    got.sort();
    let mut wanted: Vec<String> = want.iter().map(|e| e.digest.clone()).collect();
    wanted.sort();
    ensure_eq!(got, wanted, "referrer digests");
    for expected in want {
        let Some(d) = descriptors.iter().find(|d| d["digest"].as_str() == Some(expected.digest.as_str())) else {
            fail!("referrer {} missing", expected.digest);
        };
        ensure_eq!(d["mediaType"], json!(OCI_MANIFEST), "{} mediaType", expected.digest);
        ensure_eq!(d["size"], json!(expected.size), "{} size", expected.digest);
        ensure_eq!(d["artifactType"], json!(expected.artifact_type), "{} artifactType", expected.digest);
        ensure_eq!(d["annotations"], expected.annotations, "{} annotations", expected.digest);
    }
    Ok(())
}

/// end-7: pushing a manifest with a `subject` answers `OCI-Subject:
/// <subject digest>`, whether or not the subject exists yet.
pub async fn end_7_push_with_subject_returns_oci_subject(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let subject = ctx.push_image(&repo, Some("subject")).await?;
    let missing = super::manifests::missing_subject(ctx);
    ctx.push_blob(&repo, EMPTY_JSON).await?;
    for (which, descriptor) in [("existing", subject.descriptor()), ("missing", missing)] {
        let body = content::to_bytes(&content::artifact_manifest(
            SBOM_TYPE,
            OCI_EMPTY,
            &[EMPTY_JSON],
            Some(descriptor.clone()),
            None,
        ));
        let digest = content::sha256(&body);
        let resp = ctx.push_manifest(&repo, &digest, OCI_MANIFEST, &body).await?;
        let header = resp.require_header("oci-subject")?;
        ensure_eq!(Some(header), descriptor["digest"].as_str(), "OCI-Subject for an {which} subject");
    }
    Ok(())
}

/// end-12a: the list is an OCI index of every referrer, with mediaType,
/// digest, size, artifactType (manifest's, else config's) and annotations.
pub async fn end_12a_referrers_lists_descriptors(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let subject = ctx.push_image(&repo, Some("subject")).await?;
    let [sbom, sig] = push_referrers(ctx, &repo, &subject.descriptor()).await?;
    let (descriptors, _) = referrers(ctx, &repo, &subject.digest, "").await?;
    expect_descriptors(&descriptors, &[&sbom, &sig])
}

/// end-12a: referrers pushed before their subject exists are listed under
/// the subject's digest.
pub async fn end_12a_referrers_listed_before_subject_exists(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let subject = super::manifests::missing_subject(ctx);
    let [sbom, sig] = push_referrers(ctx, &repo, &subject).await?;
    let Some(subject_digest) = subject["digest"].as_str() else {
        fail!("suite bug: subject without digest");
    };
    let (descriptors, _) = referrers(ctx, &repo, subject_digest, "").await?;
    expect_descriptors(&descriptors, &[&sbom, &sig])
}

/// end-12a: a digest nothing refers to has an empty list: 200 with
/// `manifests: []`, not 404.
pub async fn end_12a_referrers_of_unknown_digest_is_empty(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    ctx.push_image(&repo, Some("v1")).await?;
    let unknown = content::sha256(&ctx.bytes(64));
    let (descriptors, _) = referrers(ctx, &repo, &unknown, "").await?;
    ensure!(descriptors.is_empty(), "an unknown digest has referrers: {}", Value::from(descriptors.clone()));
    Ok(())
}

/// end-12b: `?artifactType=` returns only matching referrers and says so
/// with `OCI-Filters-Applied: artifactType`.
pub async fn end_12b_referrers_artifact_type_filter(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let subject = ctx.push_image(&repo, Some("subject")).await?;
    let [sbom, sig] = push_referrers(ctx, &repo, &subject.descriptor()).await?;
    for (wanted, artifact_type) in [(&sbom, SBOM_TYPE), (&sig, SIG_CONFIG_TYPE)] {
        let mut url = ctx.url("/")?;
        url.query_pairs_mut().append_pair("artifactType", artifact_type);
        let query = format!("?{}", url.query().unwrap_or_default());
        let (descriptors, filters) = referrers(ctx, &repo, &subject.digest, &query).await?;
        ensure!(
            filters.iter().any(|f| f == "artifactType"),
            "?artifactType={artifact_type}: no `OCI-Filters-Applied: artifactType` (got {filters:?})"
        );
        expect_descriptors(&descriptors, &[wanted])
            .map_err(|f| f.context(&format!("?artifactType={artifact_type}")))?;
    }
    let (descriptors, _) = referrers(ctx, &repo, &subject.digest, "?artifactType=application%2Fx.none").await?;
    ensure!(descriptors.is_empty(), "a filter matching nothing returned {}", Value::from(descriptors.clone()));
    Ok(())
}

/// end-12a: a deleted referrer leaves the list.
pub async fn end_12a_deleted_referrer_disappears(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let subject = ctx.push_image(&repo, Some("subject")).await?;
    let [sbom, sig] = push_referrers(ctx, &repo, &subject.descriptor()).await?;
    ctx.call(Method::DELETE, &format!("/v2/{repo}/manifests/{}", sbom.digest)).await?.expect(202)?;
    let (descriptors, _) = referrers(ctx, &repo, &subject.digest, "").await?;
    expect_descriptors(&descriptors, &[&sig]).map_err(|f| f.context("after deleting the sbom"))?;
    let tags = ctx.tags(&repo).await?;
    ensure!(tags.contains(&"subject".to_owned()), "deleting a referrer removed the subject's tag: {tags:?}");
    Ok(())
}

/// end-12a, registries without the referrers API (`--no-referrers`): the
/// endpoint answers 404, which is how clients detect that they must fall
/// back to the referrers tag schema. A manifest with `subject` is still
/// accepted.
pub async fn end_12a_referrers_unsupported_is_404(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let subject = ctx.push_image(&repo, Some("subject")).await?;
    ctx.push_blob(&repo, EMPTY_JSON).await?;
    let body = content::to_bytes(&content::artifact_manifest(
        SBOM_TYPE,
        OCI_EMPTY,
        &[EMPTY_JSON],
        Some(subject.descriptor()),
        None,
    ));
    let digest = content::sha256(&body);
    ctx.push_manifest(&repo, &digest, OCI_MANIFEST, &body).await?;
    ctx.call(Method::GET, &format!("/v2/{repo}/referrers/{}", subject.digest))
        .await?
        .expect(404)
        .map_err(|f| f.context("referrers API declared unsupported"))?;
    Ok(())
}
