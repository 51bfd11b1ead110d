//! The randomized workload: operations that spread each push, delete and race over the
//! replicas, check every answer on the way, and state what they leave behind as a
//! [`Claim`].
//!
//! An operation works on fresh content and tags of its own (`o<index>-…`), in one of a few
//! shared repositories (or a fresh one), so operations running at once stress the same
//! repositories without making each other's outcome uncertain. Races are staged inside one
//! operation, where the possible serial orders are known.
//!
//! Checked during the workload (strictly, because a replica set must give it at once):
//! statuses, `Location` on every upload step (followed on another replica), `Range` after
//! every chunk, `Docker-Content-Digest` on pushes, and read-after-write of immutable
//! content on another replica (a blob by `HEAD`, a manifest by digest). Tags and deletes
//! are only read after the settle time, in [`super::verify`].

use std::fmt;

use bytes::Bytes;
use futures::future::{join, join_all};
use reqwest::Method;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use serde_json::json;

use super::Sizes;
use super::client::{Replicas, check_upload_range};
use super::model::{Alternative, Claim, Fact, PushedManifest, short};
use super::rng::Rng;
use crate::check::CaseResult;
use crate::content::{self, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST};
use crate::ctx::{Resp, with_digest};
use crate::{ensure, fail, wire};

/// The smallest blob pushed. Below this, two operations could draw the same bytes (there
/// are only 256 one-byte blobs) and one's "deleted" would be the other's "pushed".
const MIN_BLOB: u64 = 16;

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// POST on one replica, PATCHes with `Content-Range` on others, PUT `?digest=` (maybe
    /// with the last chunk) on another; some blobs 12–20 MiB in many small chunks.
    ChunkedUpload,
    /// `POST ?digest=` with the body, or POST then PUT with the whole body elsewhere.
    Monolithic,
    /// The same bytes pushed by 2–4 requests at once through different replicas.
    SameBlobRace,
    /// An image (config, layers, manifest) pushed across replicas, tagged 0–2 times.
    Image,
    /// 2–4 different manifests pushed to the same tag at once through different replicas.
    TagRace,
    /// An image tagged twice; one tag deleted through another replica.
    DeleteTag,
    /// An image deleted by digest through another replica.
    DeleteManifest,
    /// A blob deleted through another replica.
    DeleteBlob,
    /// A tag deleted while another manifest is pushed to it.
    DeleteTagRace,
    /// A manifest deleted by digest while it is pushed again under a second tag.
    DeleteManifestRace,
    /// A blob deleted while the same bytes are pushed again.
    DeleteBlobRace,
    /// Two PATCHes at the same offset of one upload, through two replicas at once.
    ChunkRace,
}

impl OpKind {
    /// Every kind, in the order the first operations of a run cover them.
    pub const ALL: [OpKind; 12] = [
        Self::ChunkedUpload,
        Self::Monolithic,
        Self::SameBlobRace,
        Self::Image,
        Self::TagRace,
        Self::DeleteTag,
        Self::DeleteManifest,
        Self::DeleteBlob,
        Self::DeleteTagRace,
        Self::DeleteManifestRace,
        Self::DeleteBlobRace,
        Self::ChunkRace,
    ];

    /// The name used in output.
    pub fn name(self) -> &'static str {
        match self {
            Self::ChunkedUpload => "chunked-upload",
            Self::Monolithic => "monolithic",
            Self::SameBlobRace => "same-blob-race",
            Self::Image => "image",
            Self::TagRace => "tag-race",
            Self::DeleteTag => "delete-tag",
            Self::DeleteManifest => "delete-manifest",
            Self::DeleteBlob => "delete-blob",
            Self::DeleteTagRace => "delete-tag-race",
            Self::DeleteManifestRace => "delete-manifest-race",
            Self::DeleteBlobRace => "delete-blob-race",
            Self::ChunkRace => "chunk-race",
        }
    }

    /// Relative frequency after the first round.
    fn weight(self) -> u64 {
        match self {
            Self::ChunkedUpload => 5,
            Self::Monolithic => 4,
            Self::Image => 3,
            Self::SameBlobRace | Self::TagRace | Self::ChunkRace => 2,
            Self::DeleteTag
            | Self::DeleteManifest
            | Self::DeleteBlob
            | Self::DeleteTagRace
            | Self::DeleteManifestRace
            | Self::DeleteBlobRace => 1,
        }
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kinds of the run's `ops` operations: every kind once, then drawn by weight.
pub fn plan(seed: u64, ops: usize) -> Vec<OpKind> {
    let mut rng = Rng::stream(seed, u64::MAX);
    let total: u64 = OpKind::ALL.iter().map(|k| k.weight()).sum();
    (0..ops)
        .map(|i| {
            if let Some(kind) = OpKind::ALL.get(i) {
                return *kind;
            }
            let mut pick = rng.below(total);
            for kind in OpKind::ALL {
                if pick < kind.weight() {
                    return kind;
                }
                pick -= kind.weight();
            }
            OpKind::ChunkedUpload
        })
        .collect()
}

/// What a finished operation leaves behind and tells the summary.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) claim: Claim,
    pub(crate) manifests: Vec<(String, PushedManifest)>,
    pub(crate) blobs: Vec<(String, u64)>,
    pub(crate) repos: Vec<String>,
    /// Allowed alternatives the registry took (printed once at the end).
    pub(crate) notes: Vec<String>,
}

/// What every operation shares.
#[derive(Debug)]
pub(crate) struct Env<'a> {
    pub(crate) replicas: &'a Replicas,
    pub(crate) sizes: &'a Sizes,
    /// The shared repositories operations pick from.
    pub(crate) repos: &'a [String],
    pub(crate) namespace: &'a str,
}

/// Runs operation `index` of kind `kind`, drawing from its own stream of the run's seed.
pub(crate) async fn run_op(env: &Env<'_>, seed: u64, index: usize, kind: OpKind) -> CaseResult<Outcome> {
    let mut op = Op { env, index, rng: Rng::stream(seed, index as u64), out: Outcome::default() };
    match kind {
        OpKind::ChunkedUpload => op.chunked_upload().await?,
        OpKind::Monolithic => op.monolithic().await?,
        OpKind::SameBlobRace => op.same_blob_race().await?,
        OpKind::Image => op.image().await?,
        OpKind::TagRace => op.tag_race().await?,
        OpKind::DeleteTag => op.delete_tag().await?,
        OpKind::DeleteManifest => op.delete_manifest().await?,
        OpKind::DeleteBlob => op.delete_blob().await?,
        OpKind::DeleteTagRace => op.delete_tag_race().await?,
        OpKind::DeleteManifestRace => op.delete_manifest_race().await?,
        OpKind::DeleteBlobRace => op.delete_blob_race().await?,
        OpKind::ChunkRace => op.chunk_race().await?,
    }
    Ok(op.out)
}

/// Blob bytes and their digest.
#[derive(Debug, Clone)]
struct Blob {
    data: Bytes,
    digest: String,
}

impl Blob {
    fn new(data: Bytes) -> Self {
        let digest = content::sha256(&data);
        Self { data, digest }
    }

    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn describe(&self) -> String {
        format!("blob {} ({} bytes)", short(&self.digest), self.len())
    }
}

/// An image: its blobs (config first) and its manifest.
#[derive(Debug, Clone)]
struct Image {
    blobs: Vec<Blob>,
    manifest: PushedManifest,
    digest: String,
}

/// How one blob travels, replica by replica.
#[derive(Debug, Clone)]
enum Flow {
    /// `POST ?digest=` with the body on `post`; a 202 (the registry fell back to a session)
    /// is completed with the body by `PUT` on `put`.
    SinglePost { post: usize, put: usize },
    /// `POST` on `post`, then `PUT ?digest=` with the whole body on `put`.
    PostPut { post: usize, put: usize },
    /// A session across replicas.
    Chunked(ChunkedFlow),
}

#[derive(Debug, Clone)]
struct ChunkedFlow {
    post: usize,
    /// `(length, replica)` of each chunk, in order; they add up to the blob.
    chunks: Vec<(u64, usize)>,
    /// The last chunk travels in the `PUT` instead of a `PATCH`.
    last_in_put: bool,
    put: usize,
    /// `GET` the session status on this replica after this many PATCHes.
    probe: Option<(usize, usize)>,
}

impl Flow {
    /// The replica the blob was committed through.
    fn last_replica(&self) -> usize {
        match self {
            Self::SinglePost { post, .. } => *post,
            Self::PostPut { put, .. } => *put,
            Self::Chunked(c) => c.put,
        }
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SinglePost { post, .. } => write!(f, "single POST ?digest= on r{post}"),
            Self::PostPut { post, put } => write!(f, "POST on r{post}, PUT with the body on r{put}"),
            Self::Chunked(c) => {
                let chunks: Vec<String> = c.chunks.iter().map(|(len, r)| format!("{len}@r{r}")).collect();
                write!(
                    f,
                    "chunked: POST on r{}, chunks [{}]{}, PUT on r{}",
                    c.post,
                    chunks.join(" "),
                    if c.last_in_put { " (last in the PUT)" } else { "" },
                    c.put
                )
            }
        }
    }
}

/// Chunk lengths for a blob of `total` bytes: mostly 256 KiB to `max_chunk`, some a few
/// bytes or kilobytes, so that small parts next to large ones come up often (the S3
/// backend coalesces parts under 5 MiB). At most 40 drawn; the rest in `max_chunk` pieces.
fn plan_chunks(rng: &mut Rng, total: u64, max_chunk: u64) -> Vec<u64> {
    let max_chunk = max_chunk.max(1);
    let mid = (256 << 10).min(max_chunk);
    let mut chunks = Vec::new();
    let mut left = total;
    while left > 0 {
        let len = if chunks.len() >= 40 {
            max_chunk
        } else {
            match rng.below(10) {
                0 => rng.between(1, 64.min(max_chunk)),
                1..=3 => rng.log_between(1, mid),
                _ => rng.log_between(mid, max_chunk),
            }
        };
        let len = len.clamp(1, left);
        chunks.push(len);
        left -= len;
    }
    chunks
}

/// Merges neighbouring chunks until each but the last is at least `min` bytes (a
/// registry's `OCI-Chunk-Min-Length`); a merged chunk goes where its first part would.
fn coalesce(chunks: &[(u64, usize)], min: u64) -> Vec<(u64, usize)> {
    let mut out: Vec<(u64, usize)> = Vec::new();
    for &(len, replica) in chunks {
        match out.last_mut() {
            Some(last) if last.0 < min => last.0 += len,
            _ => out.push((len, replica)),
        }
    }
    out
}

/// A `Location` resolved against the request that returned it.
fn location(r: &Replicas, replica: usize, resp: &Resp) -> CaseResult<reqwest::Url> {
    resp.location().map_err(|f| f.context(&r.label(replica)))
}

/// A 201 for a blob: `Location` required, `Docker-Content-Digest` (if sent) the digest.
fn check_blob_created(r: &Replicas, replica: usize, resp: &Resp, digest: &str) -> CaseResult<()> {
    let label = r.label(replica);
    resp.require_header("location").map_err(|f| f.context(&label))?;
    if let Some(got) = resp.header("docker-content-digest") {
        ensure!(got == digest, "{label}: {}: Docker-Content-Digest {got}, want {digest}", resp.what());
    }
    Ok(())
}

/// `OCI-Chunk-Min-Length` of a POST answer (0 when absent).
fn chunk_min(resp: &Resp) -> u64 {
    resp.header("oci-chunk-min-length").and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// `POST /v2/<repo>/blobs/uploads/` on `replica` → 202; the resolved session URL and the
/// minimum chunk length.
async fn start_upload(r: &Replicas, replica: usize, repo: &str) -> CaseResult<(reqwest::Url, u64)> {
    let builder = r.at(replica, Method::POST, &format!("/v2/{repo}/blobs/uploads/"))?.header(CONTENT_LENGTH, "0");
    let resp = r.expect(replica, builder, &[202]).await?;
    Ok((location(r, replica, &resp)?, chunk_min(&resp)))
}

/// `PUT <session on replica>?digest=` with `body` → 201.
async fn finish_upload(
    r: &Replicas,
    replica: usize,
    session: &reqwest::Url,
    blob: &Blob,
    body: Bytes,
) -> CaseResult<()> {
    let url = with_digest(&r.rebase(replica, session)?, &blob.digest);
    let resp = r.expect(replica, Replicas::with_blob_body(r.request(Method::PUT, url), body), &[201]).await?;
    check_blob_created(r, replica, &resp, &blob.digest)
}

/// `PATCH` of `body` at `offset` to the session, sent to `replica` → the answer, unchecked.
async fn patch(r: &Replicas, replica: usize, session: &reqwest::Url, offset: u64, body: Bytes) -> CaseResult<Resp> {
    let request = r.request(Method::PATCH, r.rebase(replica, session)?);
    r.send(replica, chunk(request, offset, body)).await
}

/// [`patch`] on a connection of its own: a racing chunk may be refused before its body is
/// read, after which the registry may close the connection.
async fn racing_patch(
    r: &Replicas,
    replica: usize,
    session: &reqwest::Url,
    offset: u64,
    body: Bytes,
) -> CaseResult<Resp> {
    let request = r.request_isolated(Method::PATCH, r.rebase(replica, session)?);
    r.send(replica, chunk(request, offset, body))
        .await
        .map_err(|f| f.context(&format!("a racing PATCH at offset {offset} got no HTTP answer (want 202 or 416)")))
}

/// A chunk of `body` at `offset`: `Content-Range: <first>-<last>`, exact `Content-Length`.
fn chunk(request: reqwest::RequestBuilder, offset: u64, body: Bytes) -> reqwest::RequestBuilder {
    let last = offset + body.len() as u64 - 1;
    Replicas::with_blob_body(request, body).header(CONTENT_RANGE, wire::format_upload_range(offset, last))
}

/// A 202 to a PATCH: `Range` says `offset` bytes are in, `Location` says where to go next.
fn accepted_chunk(r: &Replicas, replica: usize, resp: &Resp, offset: u64) -> CaseResult<reqwest::Url> {
    resp.expect(202).map_err(|f| f.context(&r.label(replica)))?;
    check_upload_range(resp, offset).map_err(|f| f.context(&r.label(replica)))?;
    location(r, replica, resp)
}

/// Pushes `blob` to `repo` along `flow`, checking every step.
async fn push_blob(r: &Replicas, repo: &str, blob: &Blob, flow: &Flow) -> CaseResult<()> {
    let result = match flow {
        Flow::SinglePost { post, put } => {
            let mut url = r.url(*post, &format!("/v2/{repo}/blobs/uploads/"))?;
            url.query_pairs_mut().append_pair("digest", &blob.digest);
            let builder = Replicas::with_blob_body(r.request(Method::POST, url), blob.data.clone());
            let resp = r.expect(*post, builder, &[201, 202]).await?;
            if resp.status == 201 {
                check_blob_created(r, *post, &resp, &blob.digest)
            } else {
                // The registry fell back to a session (allowed): send the body again.
                let session = location(r, *post, &resp)?;
                finish_upload(r, *put, &session, blob, blob.data.clone()).await
            }
        }
        Flow::PostPut { post, put } => {
            let (session, _) = start_upload(r, *post, repo).await?;
            finish_upload(r, *put, &session, blob, blob.data.clone()).await
        }
        Flow::Chunked(c) => push_chunked(r, repo, blob, c).await,
    };
    result.map_err(|f| f.context(&format!("pushing {} to {repo} ({flow})", blob.describe())))
}

async fn push_chunked(r: &Replicas, repo: &str, blob: &Blob, flow: &ChunkedFlow) -> CaseResult<()> {
    let (mut session, min) = start_upload(r, flow.post, repo).await?;
    let mut chunks = coalesce(&flow.chunks, min);
    let last = if flow.last_in_put { chunks.pop() } else { None };
    let mut offset = 0u64;
    for (k, (len, replica)) in chunks.iter().enumerate() {
        let body = blob.data.slice(offset as usize..(offset + len) as usize);
        let resp = patch(r, *replica, &session, offset, body).await?;
        offset += len;
        session = accepted_chunk(r, *replica, &resp, offset)?;
        if let Some((after, probe)) = flow.probe
            && after == k + 1
        {
            // end-13: the session's state, read through yet another replica.
            let resp = r.expect(probe, r.request(Method::GET, r.rebase(probe, &session)?), &[204]).await?;
            check_upload_range(&resp, offset).map_err(|f| f.context(&r.label(probe)))?;
            if resp.header("location").is_some() {
                session = location(r, probe, &resp)?;
            }
        }
    }
    let rest = blob.data.slice(offset as usize..);
    ensure!(rest.len() as u64 == last.map_or(0, |(len, _)| len), "internal: chunk plan does not add up");
    finish_upload(r, flow.put, &session, blob, rest).await
}

/// `HEAD` of a just-pushed blob on `replica`: 200 with its size (read-after-write).
async fn head_blob(r: &Replicas, replica: usize, repo: &str, blob: &Blob) -> CaseResult<()> {
    let builder = r.at(replica, Method::HEAD, &format!("/v2/{repo}/blobs/{}", blob.digest))?;
    let resp = r.expect(replica, builder, &[200]).await.map_err(|f| f.context("reading a pushed blob back"))?;
    let len = resp.header("content-length").and_then(|v| v.parse::<u64>().ok());
    ensure!(
        len == Some(blob.len()),
        "{}: {}: Content-Length {len:?} for a blob of {} bytes pushed just before",
        r.label(replica),
        resp.what(),
        blob.len()
    );
    Ok(())
}

/// `PUT /v2/<repo>/manifests/<reference>` on `replica` → the answer, unchecked.
async fn send_manifest(
    r: &Replicas,
    replica: usize,
    repo: &str,
    reference: &str,
    m: &PushedManifest,
) -> CaseResult<Resp> {
    let builder = r
        .at(replica, Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))?
        .header(CONTENT_TYPE, m.media_type.as_str())
        .body(m.bytes.clone());
    r.send(replica, builder).await
}

/// A 201 for a manifest: `Location`, and `Docker-Content-Digest` (if sent) the digest.
fn check_manifest_created(r: &Replicas, replica: usize, resp: &Resp, digest: &str) -> CaseResult<()> {
    let label = r.label(replica);
    resp.expect(201).map_err(|f| f.context(&label))?;
    resp.require_header("location").map_err(|f| f.context(&label))?;
    if let Some(got) = resp.header("docker-content-digest") {
        ensure!(got == digest, "{label}: {}: Docker-Content-Digest {got}, want {digest}", resp.what());
    }
    Ok(())
}

async fn push_manifest(r: &Replicas, replica: usize, repo: &str, reference: &str, image: &Image) -> CaseResult<()> {
    let resp = send_manifest(r, replica, repo, reference, &image.manifest).await?;
    check_manifest_created(r, replica, &resp, &image.digest)
}

/// `GET` by digest of a just-pushed manifest on `replica`: 200, the same bytes.
async fn get_manifest_back(r: &Replicas, replica: usize, repo: &str, image: &Image) -> CaseResult<()> {
    let resp = r.fetch_manifest(replica, Method::GET, repo, &image.digest).await?;
    let label = r.label(replica);
    resp.expect(200).map_err(|f| f.context(&format!("{label}: reading a pushed manifest back by digest")))?;
    resp.expect_body(&image.manifest.bytes).map_err(|f| f.context(&label))?;
    if let Some(got) = resp.header("docker-content-digest") {
        ensure!(got == image.digest, "{label}: {}: Docker-Content-Digest {got}, want {}", resp.what(), image.digest);
    }
    Ok(())
}

/// `DELETE path` on `replica` → the answer, unchecked.
async fn delete(r: &Replicas, replica: usize, path: &str) -> CaseResult<Resp> {
    r.send(replica, r.at(replica, Method::DELETE, path)?).await
}

/// One operation in progress.
struct Op<'a> {
    env: &'a Env<'a>,
    index: usize,
    rng: Rng,
    out: Outcome,
}

impl<'a> Op<'a> {
    fn r(&self) -> &'a Replicas {
        self.env.replicas
    }

    fn replica(&mut self) -> usize {
        self.rng.index(self.r().count())
    }

    /// A replica other than `not` (when there is one).
    fn other(&mut self, not: usize) -> usize {
        let n = self.r().count();
        if n < 2 { 0 } else { (not + 1 + self.rng.index(n - 1)) % n }
    }

    /// The `k`-th of several replicas starting at `first`: racing requests spread out.
    fn spread(&self, first: usize, k: usize) -> usize {
        (first + k) % self.r().count().max(1)
    }

    /// One of the shared repositories, or now and then a fresh one.
    fn repo(&mut self) -> String {
        let repo = if self.rng.chance(10) || self.env.repos.is_empty() {
            format!("{}/fresh/o{}", self.env.namespace, self.index)
        } else {
            let at = self.rng.index(self.env.repos.len());
            self.env.repos.get(at).cloned().unwrap_or_else(|| format!("{}/fresh/o{}", self.env.namespace, self.index))
        };
        if !self.out.repos.contains(&repo) {
            self.out.repos.push(repo.clone());
        }
        repo
    }

    /// This operation's tag `o<index>-<suffix>`.
    fn tag(&self, suffix: &str) -> String {
        format!("o{}-{suffix}", self.index)
    }

    fn blob(&mut self, size: u64) -> Blob {
        Blob::new(self.rng.bytes(size.max(MIN_BLOB)))
    }

    /// An ordinary blob size: [`MIN_BLOB`] to `max_blob`, spread over magnitudes.
    fn ordinary_size(&mut self) -> u64 {
        self.rng.log_between(MIN_BLOB, self.env.sizes.max_blob)
    }

    /// A chunked blob's size: a quarter of them large (12–20 MiB by default).
    fn chunked_size(&mut self) -> u64 {
        match self.env.sizes.large_blobs {
            Some((low, high)) if self.rng.chance(25) => self.rng.between(low, high),
            _ => self.ordinary_size(),
        }
    }

    fn chunked_flow(&mut self, size: u64, first: usize) -> ChunkedFlow {
        let lengths = plan_chunks(&mut self.rng, size, self.env.sizes.max_chunk);
        let mut at = first;
        let mut chunks = Vec::with_capacity(lengths.len());
        for len in lengths {
            at = self.other(at);
            chunks.push((len, at));
        }
        let last_in_put = self.rng.chance(50);
        let put = self.other(at);
        let probe = if chunks.len() > 1 && self.rng.chance(30) {
            let after = 1 + self.rng.index(chunks.len() - 1);
            Some((after, self.replica()))
        } else {
            None
        };
        ChunkedFlow { post: first, chunks, last_in_put, put, probe }
    }

    /// A random way to push a blob of `size` bytes, starting on `first`.
    fn flow(&mut self, size: u64, first: usize) -> Flow {
        match self.rng.below(10) {
            0..=2 => Flow::SinglePost { post: first, put: self.other(first) },
            3..=5 => Flow::PostPut { post: first, put: self.other(first) },
            _ => Flow::Chunked(self.chunked_flow(size, first)),
        }
    }

    fn record_blob(&mut self, blob: &Blob) {
        self.out.blobs.push((blob.digest.clone(), blob.len()));
    }

    /// A fresh OCI image of 1–3 small layers.
    fn new_image(&mut self) -> Image {
        let layers: Vec<Blob> = (0..self.rng.between(1, 3))
            .map(|_| {
                let size = self.rng.log_between(MIN_BLOB, self.env.sizes.max_layer);
                self.blob(size)
            })
            .collect();
        let config = content::to_bytes(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>() },
            "history": [ { "created_by": "berth-replicas", "comment": format!("op {}", self.index) } ],
        }));
        let config = Blob::new(Bytes::from(config));
        let manifest = content::to_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": content::descriptor(OCI_CONFIG, &config.data),
            "layers": layers.iter().map(|l| content::descriptor(OCI_LAYER, &l.data)).collect::<Vec<_>>(),
        }));
        let digest = content::sha256(&manifest);
        let mut blobs = vec![config];
        blobs.extend(layers);
        Image {
            blobs,
            manifest: PushedManifest { media_type: OCI_MANIFEST.to_owned(), bytes: Bytes::from(manifest) },
            digest,
        }
    }

    /// Pushes the image's blobs at once, each along its own flow; records them as present.
    async fn push_image_blobs(&mut self, repo: &str, image: &Image) -> CaseResult<()> {
        let flows: Vec<Flow> = image
            .blobs
            .iter()
            .map(|b| {
                let first = self.replica();
                self.flow(b.len(), first)
            })
            .collect();
        let r = self.r();
        let results = join_all(image.blobs.iter().zip(&flows).map(|(b, f)| push_blob(r, repo, b, f))).await;
        results.into_iter().collect::<CaseResult<Vec<()>>>()?;
        for b in &image.blobs {
            self.record_blob(b);
            self.out.claim.common.push(Fact::blob(repo, &b.digest, true));
        }
        Ok(())
    }

    fn record_manifest(&mut self, image: &Image) {
        self.out.manifests.push((image.digest.clone(), image.manifest.clone()));
    }

    // ---- the operations ------------------------------------------------------------

    async fn chunked_upload(&mut self) -> CaseResult<()> {
        let repo = self.repo();
        let size = self.chunked_size();
        let blob = self.blob(size);
        let first = self.replica();
        let flow = Flow::Chunked(self.chunked_flow(blob.len(), first));
        push_blob(self.r(), &repo, &blob, &flow).await?;
        let reader = self.other(flow.last_replica());
        head_blob(self.r(), reader, &repo, &blob).await?;
        self.record_blob(&blob);
        self.out.claim.common.push(Fact::blob(&repo, &blob.digest, true));
        Ok(())
    }

    async fn monolithic(&mut self) -> CaseResult<()> {
        let repo = self.repo();
        let size = self.ordinary_size();
        let blob = self.blob(size);
        let first = self.replica();
        let flow = if self.rng.chance(50) {
            Flow::SinglePost { post: first, put: self.other(first) }
        } else {
            Flow::PostPut { post: first, put: self.other(first) }
        };
        push_blob(self.r(), &repo, &blob, &flow).await?;
        let reader = self.other(flow.last_replica());
        head_blob(self.r(), reader, &repo, &blob).await?;
        self.record_blob(&blob);
        self.out.claim.common.push(Fact::blob(&repo, &blob.digest, true));
        Ok(())
    }

    async fn same_blob_race(&mut self) -> CaseResult<()> {
        let size = self.chunked_size();
        let blob = self.blob(size);
        let pushers = self.rng.between(2, 4) as usize;
        let shared_repo = self.repo();
        let spread_repos = self.rng.chance(30);
        let first = self.replica();
        let mut plan = Vec::with_capacity(pushers);
        for k in 0..pushers {
            let repo = if spread_repos { self.repo() } else { shared_repo.clone() };
            let start = self.spread(first, k);
            plan.push((repo, self.flow(blob.len(), start)));
        }
        let r = self.r();
        let results = join_all(plan.iter().map(|(repo, flow)| push_blob(r, repo, &blob, flow))).await;
        let failures: Vec<String> = results.into_iter().filter_map(Result::err).map(|f| f.to_string()).collect();
        ensure!(
            failures.is_empty(),
            "{} pushes of the same bytes at once, {} failed: {}",
            pushers,
            failures.len(),
            failures.join("; ")
        );
        let mut repos: Vec<String> = plan.iter().map(|(repo, _)| repo.clone()).collect();
        repos.sort();
        repos.dedup();
        for repo in &repos {
            let reader = self.replica();
            head_blob(self.r(), reader, repo, &blob).await?;
            self.record_blob(&blob);
            self.out.claim.common.push(Fact::blob(repo, &blob.digest, true));
        }
        Ok(())
    }

    async fn image(&mut self) -> CaseResult<()> {
        let repo = self.repo();
        let image = self.new_image();
        self.push_image_blobs(&repo, &image).await?;
        let tags: Vec<String> = match self.rng.below(5) {
            0 => Vec::new(),
            1 | 2 => vec![self.tag("a")],
            _ => vec![self.tag("a"), self.tag("b")],
        };
        let mut at = self.replica();
        if tags.is_empty() {
            push_manifest(self.r(), at, &repo, &image.digest, &image).await?;
        }
        for tag in &tags {
            push_manifest(self.r(), at, &repo, tag, &image).await?;
            at = self.other(at);
        }
        let reader = self.other(at);
        get_manifest_back(self.r(), reader, &repo, &image).await?;
        self.record_manifest(&image);
        self.out.claim.common.push(Fact::manifest(&repo, &image.digest, true));
        for tag in &tags {
            self.out.claim.common.push(Fact::tag(&repo, tag, Some(&image.digest)));
        }
        Ok(())
    }

    async fn tag_race(&mut self) -> CaseResult<()> {
        let repo = self.repo();
        let tag = self.tag("race");
        let pushers = self.rng.between(2, 4) as usize;
        let images: Vec<Image> = (0..pushers).map(|_| self.new_image()).collect();
        for image in &images {
            self.push_image_blobs(&repo, image).await?;
        }
        let first = self.replica();
        let r = self.r();
        let puts = images.iter().enumerate().map(|(k, image)| {
            let replica = self.spread(first, k);
            let (repo, tag) = (&repo, &tag);
            async move { push_manifest(r, replica, repo, tag, image).await }
        });
        let failures: Vec<String> =
            join_all(puts).await.into_iter().filter_map(Result::err).map(|f| f.to_string()).collect();
        ensure!(
            failures.is_empty(),
            "{pushers} manifests pushed to tag {tag} at once, {} failed: {}",
            failures.len(),
            failures.join("; ")
        );
        for image in &images {
            let reader = self.replica();
            get_manifest_back(self.r(), reader, &repo, image).await?;
            self.record_manifest(image);
            self.out.claim.common.push(Fact::manifest(&repo, &image.digest, true));
        }
        self.out.claim.alternatives = images
            .iter()
            .map(|image| Alternative::new("one push last", vec![Fact::tag(&repo, &tag, Some(&image.digest))]))
            .collect();
        Ok(())
    }

    async fn delete_tag(&mut self) -> CaseResult<()> {
        let repo = self.repo();
        let image = self.new_image();
        self.push_image_blobs(&repo, &image).await?;
        let (gone, kept) = (self.tag("gone"), self.tag("kept"));
        let at = self.replica();
        push_manifest(self.r(), at, &repo, &gone, &image).await?;
        let at = self.other(at);
        push_manifest(self.r(), at, &repo, &kept, &image).await?;
        let at = self.other(at);
        let resp = delete(self.r(), at, &format!("/v2/{repo}/manifests/{gone}")).await?;
        resp.expect(202).map_err(|f| f.context(&format!("{}: deleting tag {gone}", self.r().label(at))))?;
        self.record_manifest(&image);
        self.out.claim.common.extend([
            Fact::manifest(&repo, &image.digest, true),
            Fact::tag(&repo, &gone, None),
            Fact::tag(&repo, &kept, Some(&image.digest)),
        ]);
        Ok(())
    }

    async fn delete_manifest(&mut self) -> CaseResult<()> {
        let repo = self.repo();
        let image = self.new_image();
        self.push_image_blobs(&repo, &image).await?;
        let tag = self.tag("a");
        let at = self.replica();
        push_manifest(self.r(), at, &repo, &tag, &image).await?;
        // A pull before the delete, as clients do: a replica that caches what it served
        // must still forget it once the manifest is deleted elsewhere.
        let reader = self.other(at);
        get_manifest_back(self.r(), reader, &repo, &image).await?;
        let at = self.other(reader);
        let resp = delete(self.r(), at, &format!("/v2/{repo}/manifests/{}", image.digest)).await?;
        resp.expect(202).map_err(|f| f.context(&format!("{}: deleting manifest by digest", self.r().label(at))))?;
        self.record_manifest(&image);
        self.out.claim.common.extend([Fact::manifest(&repo, &image.digest, false), Fact::tag(&repo, &tag, None)]);
        Ok(())
    }

    async fn delete_blob(&mut self) -> CaseResult<()> {
        let repo = self.repo();
        let size = self.ordinary_size();
        let blob = self.blob(size);
        let first = self.replica();
        let flow = self.flow(blob.len(), first);
        push_blob(self.r(), &repo, &blob, &flow).await?;
        let reader = self.other(flow.last_replica());
        head_blob(self.r(), reader, &repo, &blob).await?;
        let at = self.other(reader);
        let resp = delete(self.r(), at, &format!("/v2/{repo}/blobs/{}", blob.digest)).await?;
        resp.expect(202).map_err(|f| f.context(&format!("{}: deleting a blob", self.r().label(at))))?;
        self.record_blob(&blob);
        self.out.claim.common.push(Fact::blob(&repo, &blob.digest, false));
        Ok(())
    }

    async fn delete_tag_race(&mut self) -> CaseResult<()> {
        let repo = self.repo();
        let (old, new) = (self.new_image(), self.new_image());
        self.push_image_blobs(&repo, &old).await?;
        self.push_image_blobs(&repo, &new).await?;
        let tag = self.tag("t");
        let at = self.replica();
        push_manifest(self.r(), at, &repo, &tag, &old).await?;
        let pusher = self.replica();
        let deleter = self.other(pusher);
        let r = self.r();
        let (pushed, deleted) = join(
            send_manifest(r, pusher, &repo, &tag, &new.manifest),
            delete(r, deleter, &format!("/v2/{repo}/manifests/{tag}")),
        )
        .await;
        let (pushed, deleted) = (pushed?, deleted?);
        // Either order finds the tag there: the delete removes the old or the new target.
        check_manifest_created(r, pusher, &pushed, &new.digest)
            .map_err(|f| f.context(&format!("pushing to tag {tag} while it is deleted")))?;
        deleted
            .expect(202)
            .map_err(|f| f.context(&format!("{}: deleting tag {tag} while it is pushed to", r.label(deleter))))?;
        self.record_manifest(&old);
        self.record_manifest(&new);
        self.out
            .claim
            .common
            .extend([Fact::manifest(&repo, &old.digest, true), Fact::manifest(&repo, &new.digest, true)]);
        self.out.claim.alternatives = vec![
            Alternative::new("delete→push", vec![Fact::tag(&repo, &tag, Some(&new.digest))]),
            Alternative::new("push→delete", vec![Fact::tag(&repo, &tag, None)]),
        ];
        Ok(())
    }

    async fn delete_manifest_race(&mut self) -> CaseResult<()> {
        let repo = self.repo();
        let image = self.new_image();
        self.push_image_blobs(&repo, &image).await?;
        let (first_tag, second_tag) = (self.tag("a"), self.tag("b"));
        let at = self.replica();
        push_manifest(self.r(), at, &repo, &first_tag, &image).await?;
        let pusher = self.replica();
        let deleter = self.other(pusher);
        let r = self.r();
        let (pushed, deleted) = join(
            send_manifest(r, pusher, &repo, &second_tag, &image.manifest),
            delete(r, deleter, &format!("/v2/{repo}/manifests/{}", image.digest)),
        )
        .await;
        let (pushed, deleted) = (pushed?, deleted?);
        check_manifest_created(r, pusher, &pushed, &image.digest)
            .map_err(|f| f.context(&format!("pushing the manifest again as {second_tag} while it is deleted")))?;
        deleted.expect(202).map_err(|f| {
            f.context(&format!("{}: deleting the manifest by digest while it is pushed again", r.label(deleter)))
        })?;
        self.record_manifest(&image);
        self.out.claim.common.push(Fact::tag(&repo, &first_tag, None));
        self.out.claim.alternatives = vec![
            // The push brings the manifest back, under the second tag only.
            Alternative::new(
                "delete→push",
                vec![Fact::manifest(&repo, &image.digest, true), Fact::tag(&repo, &second_tag, Some(&image.digest))],
            ),
            // The delete takes the manifest and both tags.
            Alternative::new(
                "push→delete",
                vec![Fact::manifest(&repo, &image.digest, false), Fact::tag(&repo, &second_tag, None)],
            ),
        ];
        Ok(())
    }

    async fn delete_blob_race(&mut self) -> CaseResult<()> {
        let repo = self.repo();
        let size = self.ordinary_size();
        let blob = self.blob(size);
        let first = self.replica();
        let flow = self.flow(blob.len(), first);
        push_blob(self.r(), &repo, &blob, &flow).await?;
        let reader = self.other(flow.last_replica());
        head_blob(self.r(), reader, &repo, &blob).await?;
        let pusher = self.replica();
        let again = self.flow(blob.len(), pusher);
        let deleter = self.other(pusher);
        let r = self.r();
        let (pushed, deleted) =
            join(push_blob(r, &repo, &blob, &again), delete(r, deleter, &format!("/v2/{repo}/blobs/{}", blob.digest)))
                .await;
        pushed.map_err(|f| f.context("pushing a blob again while it is deleted"))?;
        deleted?
            .expect(202)
            .map_err(|f| f.context(&format!("{}: deleting a blob while it is pushed again", r.label(deleter))))?;
        self.record_blob(&blob);
        self.out.claim.alternatives = vec![
            Alternative::new("delete→push", vec![Fact::blob(&repo, &blob.digest, true)]),
            Alternative::new("push→delete", vec![Fact::blob(&repo, &blob.digest, false)]),
        ];
        Ok(())
    }

    async fn chunk_race(&mut self) -> CaseResult<()> {
        let repo = self.repo();
        let max = self.env.sizes.max_chunk;
        let prefix = if self.rng.chance(70) { self.rng.log_between(1, max) } else { 0 };
        let prefix = self.rng.bytes(prefix);
        // Each racing chunk is unique on its own, so neither outcome can equal other content.
        let (len_x, len_y) = if self.rng.chance(50) {
            let len = self.rng.log_between(MIN_BLOB, max);
            (len, len)
        } else {
            (self.rng.log_between(MIN_BLOB, max), self.rng.log_between(MIN_BLOB, max))
        };
        let (x, y) = (self.rng.bytes(len_x), self.rng.bytes(len_y));
        let rest = if self.rng.chance(60) { self.rng.log_between(1, max) } else { 0 };
        let rest = self.rng.bytes(rest);
        let rest_in_put = self.rng.chance(50);
        let r = self.r();

        let post = self.replica();
        let (mut session, _) = start_upload(r, post, &repo).await?;
        let offset = prefix.len() as u64;
        if offset > 0 {
            let at = self.other(post);
            let resp = patch(r, at, &session, 0, prefix.clone()).await?;
            session = accepted_chunk(r, at, &resp, offset)?;
        }
        let racer_x = self.replica();
        let racer_y = self.other(racer_x);
        let (rx, ry) = join(
            racing_patch(r, racer_x, &session, offset, x.clone()),
            racing_patch(r, racer_y, &session, offset, y.clone()),
        )
        .await;
        let (rx, ry) = (rx?, ry?);
        let describe = |resp: &Resp, replica: usize| format!("{} answered {}", r.label(replica), resp.status);
        let (winner_at, winner_resp, winner, loser_at, loser_resp, loser) = match (rx.status, ry.status) {
            (202, 202) => fail!(
                "two PATCHes at offset {offset} of one upload were both accepted ({}; {}): one must lose (416)",
                describe(&rx, racer_x),
                describe(&ry, racer_y)
            ),
            (202, _) => (racer_x, &rx, &x, racer_y, &ry, &y),
            (_, 202) => (racer_y, &ry, &y, racer_x, &rx, &x),
            _ => fail!(
                "two PATCHes at offset {offset} of one upload: neither was accepted ({}: {}; {}: {})",
                describe(&rx, racer_x),
                rx.body_excerpt(),
                describe(&ry, racer_y),
                ry.body_excerpt()
            ),
        };
        let winner_end = offset + winner.len() as u64;
        session = accepted_chunk(r, winner_at, winner_resp, winner_end)
            .map_err(|f| f.context("the PATCH that won the race"))?;
        if loser_resp.status == 416 {
            if loser_resp.header("range").is_some() {
                check_upload_range(loser_resp, winner_end).map_err(|f| {
                    f.context(&format!("{}: the 416 to the PATCH that lost the race", r.label(loser_at)))
                })?;
            }
        } else {
            ensure!(
                loser_resp.status < 500,
                "{}: the PATCH that lost the race answered {} ({})",
                r.label(loser_at),
                loser_resp.status,
                loser_resp.body_excerpt()
            );
            // Allowed if the session still stands where the winner left it.
            let probe = self.replica();
            let resp = r.expect(probe, r.request(Method::GET, r.rebase(probe, &session)?), &[204]).await?;
            check_upload_range(&resp, winner_end).map_err(|f| {
                f.context(&format!("after the losing PATCH answered {} on {}", loser_resp.status, r.label(loser_at)))
            })?;
            self.out.notes.push(format!("the PATCH that lost a chunk race answered {} (not 416)", loser_resp.status));
        }

        let joined =
            |middle: &Bytes| Blob::new(Bytes::from([prefix.as_ref(), middle.as_ref(), rest.as_ref()].concat()));
        let blob = joined(winner);
        // What the upload would hold had the loser's bytes been kept: never a blob.
        let lost = joined(loser);
        let mut upto = winner_end;
        if !rest.is_empty() && !rest_in_put {
            let at = self.other(winner_at);
            let resp = patch(r, at, &session, upto, rest.clone()).await?;
            upto += rest.len() as u64;
            session = accepted_chunk(r, at, &resp, upto)?;
        }
        let put = self.other(winner_at);
        finish_upload(r, put, &session, &blob, blob.data.slice(upto as usize..)).await?;
        let reader = self.other(put);
        head_blob(r, reader, &repo, &blob).await?;
        self.record_blob(&blob);
        self.record_blob(&lost);
        self.out.claim.common.extend([Fact::blob(&repo, &blob.digest, true), Fact::blob(&repo, &lost.digest, false)]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_round_covers_every_kind_and_the_plan_replays() {
        let plan1 = plan(7, 40);
        assert_eq!(plan1.len(), 40);
        assert_eq!(&plan1[..OpKind::ALL.len()], &OpKind::ALL);
        assert_eq!(plan1, plan(7, 40));
        assert_ne!(plan(7, 200), plan(8, 200));
        assert!(plan(1, 3).len() == 3);
    }

    #[test]
    fn chunk_plans_add_up_and_stay_bounded() {
        let mut rng = Rng::new(3);
        for total in [1u64, 2, 63, 4096, 1 << 20, 6 << 20, 20 << 20] {
            let chunks = plan_chunks(&mut rng, total, 6 << 20);
            assert_eq!(chunks.iter().sum::<u64>(), total);
            assert!(chunks.iter().all(|&c| (1..=6 << 20).contains(&c)), "{chunks:?}");
        }
        let big = plan_chunks(&mut rng, 20 << 20, 6 << 20);
        assert!(big.len() <= 44, "{} chunks", big.len());
    }

    #[test]
    fn coalescing_honors_a_minimum_chunk_length() {
        let chunks = [(3, 0), (4, 1), (10, 0), (1, 1), (2, 0)];
        assert_eq!(coalesce(&chunks, 0), chunks.to_vec());
        assert_eq!(coalesce(&chunks, 5), vec![(7, 0), (10, 0), (3, 1)]);
        assert_eq!(coalesce(&chunks, 100), vec![(20, 0)]);
    }
}
