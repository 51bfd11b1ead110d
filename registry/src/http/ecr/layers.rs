//! ECR's layer operations: `BatchCheckLayerAvailability`, `InitiateLayerUpload`,
//! `UploadLayerPart`, `CompleteLayerUpload` and `GetDownloadUrlForLayer`, over the same upload
//! sessions and blob reads as the OCI API (`service::uploads`, `service::blobs`), and the
//! download URL they hand out ([`download`], served at `/_ecr/download/<repository>/<digest>`).
//!
//! - An upload is a session of the service (`start_upload`): the bounds on open sessions,
//!   the quotas and the repository's creation plan apply as to an OCI push. A repository that
//!   does not exist is created at `CompleteLayerUpload` when a push may create it
//!   (`registry.create_on_push`, or a creation template that covers it, as ECR's own
//!   `CREATE_ON_PUSH` templates do); otherwise `InitiateLayerUpload` answers
//!   `RepositoryNotFoundException`, as ECR does.
//! - A part is appended with the compare-and-swap on the session's offset: one that does not
//!   start where the upload stands is an `InvalidLayerPartException` telling where it stands
//!   (`lastValidByteReceived`). The part arrives base64 in the JSON body, so it is buffered
//!   (≤ 20 MiB decoded, ECR's limit); how many parts are buffered at once is bounded
//!   ([`part_permit`], taken before the body is read).
//! - A download URL is signed with the registry's token key ([`crate::auth`]'s download
//!   tokens), bound to the repository and digest, and expires ([`DOWNLOAD_TTL`]).

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use berth_auth::policy::actions;
use berth_oci::{Algorithm, Digest, RepoName, UploadId};
use berth_storage::metadata::unix_now;
use hyper::StatusCode;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::JSON_1_1;
use super::wire::{input, output, repository_name};
use super::{Ecr, EcrError, EcrResult};
use crate::error::ApiError;
use crate::service::Registry;
use crate::service::uploads::ChunkRange;

/// ECR's largest layer part (`LayerPartBlob`'s `max`), and the part size Berth asks for.
pub const MAX_PART: u64 = 20 * 1024 * 1024;
/// The most `layerDigests` of `BatchCheckLayerAvailability` (ECR's `max`).
const MAX_BATCH: usize = 100;
/// The longest entry of `layerDigests` (ECR's `BatchedOperationLayerDigest` `max`).
const MAX_BATCH_DIGEST: usize = 1000;
/// How long a download URL is valid.
pub use crate::auth::download::TTL as DOWNLOAD_TTL;
/// The path download URLs are served under.
pub const DOWNLOAD_PATH: &str = "/_ecr/download/";
/// How long an `UploadLayerPart` waits for a buffer before `ThrottlingException`.
const PART_WAIT: Duration = Duration::from_secs(5);

/// Serves `op` if it belongs to this group.
pub(super) async fn call(ecr: &Ecr<'_>, op: &str, body: &[u8]) -> Option<EcrResult> {
    Some(match op {
        "BatchCheckLayerAvailability" => batch_check(ecr, body).await,
        "InitiateLayerUpload" => initiate(ecr, body).await,
        "UploadLayerPart" => upload_part(ecr, body).await,
        "CompleteLayerUpload" => complete(ecr, body).await,
        "GetDownloadUrlForLayer" => download_url(ecr, body).await,
        _ => return None,
    })
}

/// How many `UploadLayerPart` bodies may be buffered at once in this process: two per core,
/// at least 2 and at most 16. Each costs at most the body (28 MiB, [`super::body_limit`]) and
/// the decoded part (20 MiB).
fn parts_in_flight() -> &'static Arc<Semaphore> {
    static PARTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    PARTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Arc::new(Semaphore::new((2 * cores).clamp(2, 16)))
    })
}

/// For `UploadLayerPart`, a place among the bodies buffered at once, taken before its body is
/// read (which must arrive within [`PART_READ`]) and held until it is answered; a request
/// that waits [`PART_WAIT`] for one gets `ThrottlingException` (which the SDKs retry). `None`
/// for every other operation.
pub(super) async fn part_permit(operation: &str) -> EcrResult<Option<OwnedSemaphorePermit>> {
    if operation != "UploadLayerPart" {
        return Ok(None);
    }
    acquire(parts_in_flight(), PART_WAIT).await.map(Some)
}

/// How long a part's body may take to arrive once it holds its place (28 MiB in 5 minutes is
/// about 100 KiB/s): a client trickling bytes does not keep a place for ever.
pub(super) const PART_READ: Duration = Duration::from_secs(300);

/// `read` (a part's body), or `RequestTimeoutException` (408, which the SDKs retry) when it
/// takes longer than `limit`.
pub(super) async fn part_deadline<T>(read: impl Future<Output = T>, limit: Duration) -> EcrResult<T> {
    tokio::time::timeout(limit, read).await.map_err(|_| EcrError {
        status: StatusCode::REQUEST_TIMEOUT,
        kind: "RequestTimeoutException",
        message: format!(
            "the layer part did not arrive within {} s; send it again (or in smaller parts on a slow link)",
            limit.as_secs()
        ),
    })
}

async fn acquire(parts: &Arc<Semaphore>, wait: Duration) -> EcrResult<OwnedSemaphorePermit> {
    match tokio::time::timeout(wait, parts.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(EcrError::new(
            "ThrottlingException",
            "too many layer parts are being received at once; send this part again in a moment",
        )),
    }
}

// ---- BatchCheckLayerAvailability

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchCheckInput {
    #[serde(default)]
    registry_id: Option<String>,
    repository_name: String,
    layer_digests: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Layer {
    layer_digest: String,
    layer_availability: &'static str,
    layer_size: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LayerFailure {
    layer_digest: String,
    failure_code: &'static str,
    failure_reason: String,
}

#[derive(Serialize)]
struct BatchCheckOutput {
    layers: Vec<Layer>,
    failures: Vec<LayerFailure>,
}

async fn batch_check(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: BatchCheckInput = input(body)?;
    ecr.registry_id(i.registry_id.as_deref())?;
    let repo = repository_name("repositoryName", &i.repository_name)?;
    if i.layer_digests.is_empty() || i.layer_digests.len() > MAX_BATCH {
        return Err(EcrError::invalid(format!(
            "layerDigests has {} entries; it takes 1 to {MAX_BATCH}",
            i.layer_digests.len()
        )));
    }
    if let Some(long) = i.layer_digests.iter().position(|d| d.len() > MAX_BATCH_DIGEST) {
        return Err(EcrError::invalid(format!("layerDigests[{long}] is longer than {MAX_BATCH_DIGEST} characters")));
    }
    ecr.allow(actions::BATCH_CHECK_LAYER_AVAILABILITY, Some(&repo)).await?;
    // Failures are listed in the order of the request, whichever check found them.
    let mut failures: Vec<(usize, LayerFailure)> = Vec::new();
    let mut valid = Vec::new();
    for (at, given) in i.layer_digests.iter().enumerate() {
        match given.parse::<Digest>() {
            Ok(d) => valid.push((at, d)),
            Err(e) => failures.push((
                at,
                LayerFailure {
                    layer_digest: given.clone(),
                    failure_code: "InvalidLayerDigest",
                    failure_reason: format!("'{given}' is not a digest ({e})"),
                },
            )),
        }
    }
    let digests: Vec<Digest> = valid.iter().map(|(_, d)| d.clone()).collect();
    let entries = match ecr.reg.layer_entries(&repo, &digests).await {
        Err(ApiError::NameUnknown) => return Err(ecr.repository_not_found(&repo)),
        other => other.map_err(|e| ecr.api(e))?,
    };
    let mut layers = Vec::new();
    for ((at, digest), entry) in valid.into_iter().zip(entries) {
        match entry {
            Some(entry) => layers.push(Layer {
                layer_digest: digest.to_string(),
                layer_availability: "AVAILABLE",
                layer_size: entry.size,
            }),
            None => failures.push((
                at,
                LayerFailure {
                    layer_digest: digest.to_string(),
                    failure_code: "MissingLayerDigest",
                    failure_reason: format!("the layer {digest} is not in the repository '{repo}'"),
                },
            )),
        }
    }
    failures.sort_by_key(|(at, _)| *at);
    let failures = failures.into_iter().map(|(_, f)| f).collect();
    output(&BatchCheckOutput { layers, failures })
}

// ---- InitiateLayerUpload

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RepositoryInput {
    #[serde(default)]
    registry_id: Option<String>,
    repository_name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InitiateOutput {
    upload_id: String,
    part_size: u64,
}

async fn initiate(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: RepositoryInput = input(body)?;
    ecr.registry_id(i.registry_id.as_deref())?;
    let repo = repository_name("repositoryName", &i.repository_name)?;
    ecr.allow(actions::INITIATE_LAYER_UPLOAD, Some(&repo)).await?;
    let up =
        ecr.reg.start_upload(&repo, Algorithm::Sha256, &ecr.origin).await.map_err(|e| not_found_as(ecr, &repo, e))?;
    output(&InitiateOutput { upload_id: up.id.to_string(), part_size: MAX_PART })
}

/// The service's error, with an unknown repository (or one a push may not create) named as
/// ECR names it.
fn not_found_as(ecr: &Ecr<'_>, repo: &RepoName, e: ApiError) -> EcrError {
    match e {
        ApiError::NameUnknown => ecr.repository_not_found(repo),
        ApiError::NotCreatedOnPush(_) => {
            let mut err = ecr.repository_not_found(repo);
            err.message = format!("{} ({e})", err.message);
            err
        }
        other => ecr.api(other),
    }
}

// ---- UploadLayerPart

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UploadPartInput<'a> {
    #[serde(default)]
    registry_id: Option<String>,
    repository_name: String,
    upload_id: String,
    part_first_byte: i64,
    part_last_byte: i64,
    /// Borrowed from the body when it has no escapes (base64 has none): the body is not
    /// copied again.
    #[serde(borrow)]
    layer_part_blob: Cow<'a, str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UploadPartOutput {
    registry_id: String,
    repository_name: String,
    upload_id: String,
    last_byte_received: u64,
}

/// The service's error about upload `id`, an unknown one named as ECR names it.
fn upload_error(ecr: &Ecr<'_>, repo: &RepoName, id: &UploadId, e: ApiError) -> EcrError {
    match e {
        ApiError::BlobUploadUnknown => EcrError::new(
            "UploadNotFoundException",
            format!(
                "there is no upload '{id}' in the repository '{repo}' (completed, discarded, expired or never \
                 started); start one with InitiateLayerUpload"
            ),
        ),
        other => not_found_as(ecr, repo, other),
    }
}

fn upload_id(value: &str) -> EcrResult<UploadId> {
    value.parse().map_err(|_| EcrError::invalid(format!("uploadId '{value}' is not an upload id")))
}

/// `InvalidLayerPartException` with the members ECR's model gives it; `offset` is how many
/// bytes the upload holds (`lastValidByteReceived` is the last one's position, absent when
/// it holds none).
fn invalid_part(ecr: &Ecr<'_>, repo: &RepoName, id: &UploadId, offset: u64, message: String) -> Response {
    let mut body = serde_json::json!({
        "__type": "InvalidLayerPartException",
        "message": &message,
        "registryId": ecr.account(),
        "repositoryName": repo.as_str(),
        "uploadId": id.as_str(),
    });
    if let Some(last) = offset.checked_sub(1) {
        body["lastValidByteReceived"] = last.into();
    }
    let mut r = (StatusCode::BAD_REQUEST, body.to_string()).into_response();
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(JSON_1_1));
    r.headers_mut().insert("x-amzn-errortype", HeaderValue::from_static("InvalidLayerPartException"));
    // The request's log line says why, as for the errors `handle` renders.
    r.extensions_mut().insert(crate::http::error::LoggedError(format!("InvalidLayerPartException: {message}")));
    r
}

async fn upload_part(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: UploadPartInput = input(body)?;
    ecr.registry_id(i.registry_id.as_deref())?;
    let repo = repository_name("repositoryName", &i.repository_name)?;
    let id = upload_id(&i.upload_id)?;
    let (Ok(first), Ok(last)) = (u64::try_from(i.part_first_byte), u64::try_from(i.part_last_byte)) else {
        return Err(EcrError::invalid("partFirstByte and partLastByte must be at least 0"));
    };
    // base64 of at most MAX_PART bytes, checked before anything is decoded.
    if i.layer_part_blob.len() as u64 > MAX_PART.div_ceil(3) * 4 {
        return Err(EcrError::invalid(format!("layerPartBlob must be at most {MAX_PART} bytes")));
    }
    ecr.allow(actions::UPLOAD_LAYER_PART, Some(&repo)).await?;
    let up = ecr.reg.upload_status(&repo, &id).await.map_err(|e| upload_error(ecr, &repo, &id, e))?;
    let part = base64::engine::general_purpose::STANDARD
        .decode(i.layer_part_blob.as_bytes())
        .map_err(|e| EcrError::invalid(format!("layerPartBlob is not base64: {e}")))?;
    drop(i.layer_part_blob);
    let len = part.len() as u64;
    if last < first || last - first + 1 != len {
        return Ok(invalid_part(
            ecr,
            &repo,
            &id,
            up.offset,
            format!(
                "partFirstByte {first} to partLastByte {last} is not the length of layerPartBlob ({len} bytes); \
                 partLastByte is partFirstByte + length - 1"
            ),
        ));
    }
    if first != up.offset {
        return Ok(out_of_order(ecr, &repo, &id, up.offset, first));
    }
    let stream: berth_storage::ByteStream =
        Box::pin(futures::stream::once(async move { Ok(bytes::Bytes::from(part)) }));
    let range = ChunkRange { start: first, end: last };
    match ecr.reg.append_chunk(&repo, &id, Some(range), stream).await {
        Ok(next) => output(&UploadPartOutput {
            registry_id: ecr.account().to_owned(),
            repository_name: repo.to_string(),
            upload_id: id.to_string(),
            last_byte_received: next.offset.saturating_sub(1),
        }),
        // Another part was appended first.
        Err(ApiError::ChunkOutOfOrder { offset, .. }) => Ok(out_of_order(ecr, &repo, &id, offset, first)),
        Err(e) => Err(upload_error(ecr, &repo, &id, e)),
    }
}

fn out_of_order(ecr: &Ecr<'_>, repo: &RepoName, id: &UploadId, offset: u64, first: u64) -> Response {
    invalid_part(
        ecr,
        repo,
        id,
        offset,
        format!("partFirstByte is {first}, but the upload holds {offset} bytes: the next part starts at {offset}"),
    )
}

// ---- CompleteLayerUpload

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CompleteInput {
    #[serde(default)]
    registry_id: Option<String>,
    repository_name: String,
    upload_id: String,
    layer_digests: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CompleteOutput {
    registry_id: String,
    repository_name: String,
    upload_id: String,
    layer_digest: String,
}

async fn complete(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: CompleteInput = input(body)?;
    ecr.registry_id(i.registry_id.as_deref())?;
    let repo = repository_name("repositoryName", &i.repository_name)?;
    let id = upload_id(&i.upload_id)?;
    let [given] = i.layer_digests.as_slice() else {
        return Err(EcrError::invalid(format!(
            "layerDigests has {} entries; an upload is one layer: give its one digest",
            i.layer_digests.len()
        )));
    };
    let digest: Digest =
        given.parse().map_err(|e| EcrError::invalid(format!("layerDigests[0] '{given}' is not a digest ({e})")))?;
    ecr.allow(actions::COMPLETE_LAYER_UPLOAD, Some(&repo)).await?;
    let up = ecr.reg.upload_status(&repo, &id).await.map_err(|e| upload_error(ecr, &repo, &id, e))?;
    if up.offset == 0 {
        return Err(EcrError::new(
            "EmptyUploadException",
            format!("the upload {id} has no layer parts; send them with UploadLayerPart first"),
        ));
    }
    // ECR refuses to complete a layer the repository has; the upload is discarded. Read as a
    // client is told a blob is there (the garbage collector's mark is cleared).
    match ecr.reg.blob_entry(&repo, &digest).await {
        Ok(_) => {
            match ecr.reg.cancel_upload(&repo, &id).await {
                Ok(()) | Err(ApiError::BlobUploadUnknown) => {}
                Err(e) => return Err(ecr.api(e)),
            }
            return Err(EcrError::new(
                "LayerAlreadyExistsException",
                format!("the layer {digest} already exists in the repository '{repo}'; the upload {id} was discarded"),
            ));
        }
        Err(ApiError::BlobUnknown) => {}
        Err(e) => return Err(ecr.api(e)),
    }
    let empty: berth_storage::ByteStream = Box::pin(futures::stream::empty());
    ecr.reg
        .finish_upload(&repo, &id, None, empty, &digest, &ecr.origin)
        .await
        .map_err(|e| upload_error(ecr, &repo, &id, e))?;
    output(&CompleteOutput {
        registry_id: ecr.account().to_owned(),
        repository_name: repo.to_string(),
        upload_id: id.to_string(),
        layer_digest: digest.to_string(),
    })
}

// ---- GetDownloadUrlForLayer

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DownloadUrlInput {
    #[serde(default)]
    registry_id: Option<String>,
    repository_name: String,
    layer_digest: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DownloadUrlOutput {
    download_url: String,
    layer_digest: String,
}

async fn download_url(ecr: &Ecr<'_>, body: &[u8]) -> EcrResult {
    let i: DownloadUrlInput = input(body)?;
    ecr.registry_id(i.registry_id.as_deref())?;
    let repo = repository_name("repositoryName", &i.repository_name)?;
    let digest: Digest = i
        .layer_digest
        .parse()
        .map_err(|e| EcrError::invalid(format!("layerDigest '{}' is not a digest ({e})", i.layer_digest)))?;
    ecr.allow(actions::GET_DOWNLOAD_URL_FOR_LAYER, Some(&repo)).await?;
    let entries = ecr.reg.layer_entries(&repo, std::slice::from_ref(&digest)).await;
    match entries {
        Err(ApiError::NameUnknown) => return Err(ecr.repository_not_found(&repo)),
        Err(e) => return Err(ecr.api(e)),
        Ok(found) if found.iter().all(Option::is_none) => {
            return Err(EcrError::new(
                "LayersNotFoundException",
                format!("the layer {digest} is not in the repository '{repo}'"),
            ));
        }
        Ok(_) => {}
    }
    // Bound to the access key that signed the request (its user's, with authentication off
    // nobody's): revoking the key or the user revokes the URL.
    let subject = match &ecr.caller {
        Some(c) => c.access_key.clone().or_else(|| ecr.origin.actor.clone()).unwrap_or_default(),
        None => String::new(),
    };
    let token = ecr
        .reg
        .auth
        .download_token(ecr.reg.meta.as_ref(), &repo, &digest, &subject, unix_now(), DOWNLOAD_TTL)
        .await
        .map_err(|e| ecr.api(e))?;
    output(&DownloadUrlOutput {
        download_url: download_location(&ecr.base_url, &repo, &digest, &token),
        layer_digest: digest.to_string(),
    })
}

/// The download URL of `digest` in `repo` with its signature.
pub fn download_location(base_url: &str, repo: &RepoName, digest: &Digest, token: &str) -> String {
    format!("{base_url}{DOWNLOAD_PATH}{repo}/{digest}?token={token}")
}

/// `GET /_ecr/download/<repository>/<digest>?token=…`: a download URL, used with no other
/// credentials. The signature is checked before anything is read; then the blob is served as
/// `GET /v2/<repository>/blobs/<digest>` serves it (`Range`, digest check, the read counted
/// for the garbage collector). Refused (403, with the reason) when expired, not signed by
/// this registry's key, or issued for another repository or digest.
pub async fn download(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    serve_download(&reg, parts).await.unwrap_or_else(IntoResponse::into_response)
}

async fn serve_download(reg: &Arc<Registry>, parts: axum::http::request::Parts) -> Result<Response, ApiError> {
    let path = parts.uri.path().strip_prefix(DOWNLOAD_PATH).unwrap_or_default();
    let Some((repo, digest)) = path.rsplit_once('/') else {
        return Err(ApiError::Invalid(format!(
            "a download URL's path is {DOWNLOAD_PATH}<repository>/<digest>; ask GetDownloadUrlForLayer for one"
        )));
    };
    let repo: RepoName = repo.parse().map_err(|e: berth_oci::name::NameError| ApiError::NameInvalid(e.to_string()))?;
    let digest: Digest = digest.parse().map_err(|e| ApiError::DigestInvalid(format!("{e}")))?;
    let query = parts.uri.query().unwrap_or_default();
    if query.len() > crate::auth::download::MAX_DOWNLOAD_TOKEN + 64 {
        return Err(crate::auth::download::DownloadRefused::Invalid("the query is too long".into()).into());
    }
    let token = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned());
    let Some(token) = token else {
        return Err(ApiError::Denied {
            message: "a download URL carries its signature in ?token=; ask GetDownloadUrlForLayer for one".into(),
            challenge: None,
        });
    };
    reg.auth.verify_download(reg.meta.as_ref(), &token, &repo, &digest, unix_now()).await?;
    let req = super::super::Req {
        method: parts.method,
        headers: parts.headers,
        query: Vec::new(),
        caller: None,
        origin: Default::default(),
        zero_copy: parts.extensions.get::<crate::zerocopy::Jobs>().cloned(),
    };
    super::super::blobs::get(reg, &repo, &digest, &req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_part_beyond_the_buffers_is_throttled() {
        let parts = Arc::new(Semaphore::new(1));
        let held = acquire(&parts, Duration::ZERO).await.unwrap();
        let e = acquire(&parts, Duration::ZERO).await.unwrap_err();
        assert_eq!(e.kind, "ThrottlingException");
        drop(held);
        assert!(acquire(&parts, Duration::ZERO).await.is_ok(), "a freed buffer is taken again");
        assert!(part_permit("InitiateLayerUpload").await.unwrap().is_none(), "only parts take a buffer");
    }

    #[tokio::test]
    async fn a_part_that_does_not_arrive_gives_its_place_up() {
        let e = part_deadline(std::future::pending::<()>(), Duration::ZERO).await.unwrap_err();
        assert_eq!((e.status, e.kind), (StatusCode::REQUEST_TIMEOUT, "RequestTimeoutException"));
        assert_eq!(part_deadline(async { 7 }, Duration::from_secs(60)).await.unwrap(), 7);
    }

    #[test]
    fn a_part_input_borrows_its_blob() {
        let body =
            br#"{"repositoryName":"a/b","uploadId":"u","partFirstByte":0,"partLastByte":2,"layerPartBlob":"YWJj"}"#;
        let i: UploadPartInput = input(body).unwrap();
        assert!(matches!(i.layer_part_blob, Cow::Borrowed("YWJj")));
        let e =
            input::<UploadPartInput>(br#"{"repositoryName":"a/b","uploadId":"u","partFirstByte":0}"#).err().unwrap();
        assert_eq!(e.kind, "InvalidParameterException");
        assert!(e.message.contains("partLastByte"), "{}", e.message);
        let e =
            input::<UploadPartInput>(br#"{"repositoryName":"a/b","uploadId":"u","partFirstByte":"x"}"#).err().unwrap();
        assert!(e.message.starts_with("partFirstByte"), "{}", e.message);
    }
}
