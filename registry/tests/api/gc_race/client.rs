//! One of the racing clients: pushes images whose layers other clients push too, deletes
//! manifests and whole repositories, pushes deleted images again, leaves unreferenced blobs
//! behind, and pulls what it holds, each request to a replica of its choosing.
//!
//! Each client owns its repositories (`gcrace/c<id>/r<n>`), so what it was acknowledged and
//! has not deleted is known exactly: [`Client::live`]. Its blobs are shared with the others
//! by content (the layer pool), which is where the collector races the pushes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::sha256;

/// How a refusal reads when the collector deleted a blob between a client's check and its
/// manifest PUT: the client pushes the missing blobs again.
const MANIFEST_BLOB_UNKNOWN: &str = "MANIFEST_BLOB_UNKNOWN";

/// Attempts of one manifest PUT (each after re-pushing what went missing) and of one blob
/// push refused during a doom. A healthy registry needs a few at most.
const MANIFEST_ATTEMPTS: usize = 20;
const BLOB_ATTEMPTS: usize = 10;

pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// A small deterministic generator (xorshift64*), one per client, seeded from the test's seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

#[derive(Clone)]
pub struct Blob {
    pub digest: String,
    pub bytes: Arc<[u8]>,
}

impl Blob {
    pub fn new(bytes: Vec<u8>) -> Blob {
        Blob { digest: sha256(&bytes), bytes: bytes.into() }
    }
}

/// The layers every client draws from: the same digests pushed to many repositories.
pub fn layer_pool(seed: u64, count: usize) -> Arc<Vec<Blob>> {
    let mut rng = Rng::new(seed ^ 0x5eed_1a7e);
    Arc::new((0..count).map(|i| Blob::new(rng.bytes(1024 + (i * 4099) % (48 << 10)))).collect())
}

/// An image as pushed: its repository, tag, manifest bytes and blobs (config first).
#[derive(Clone)]
pub struct Image {
    pub repo: String,
    pub tag: String,
    pub digest: String,
    pub manifest: Arc<[u8]>,
    pub blobs: Vec<Blob>,
}

impl Image {
    fn new(repo: String, tag: String, config: Blob, layers: Vec<Blob>) -> Image {
        let descriptor = |media_type: &str, b: &Blob| serde_json::json!({"mediaType": media_type, "digest": b.digest, "size": b.bytes.len()});
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
            "layers": layers.iter().map(|l| descriptor("application/vnd.oci.image.layer.v1.tar+gzip", l)).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes();
        let mut blobs = vec![config];
        blobs.extend(layers);
        Image { repo, tag, digest: sha256(&manifest), manifest: manifest.into(), blobs }
    }
}

/// What a client did, for the test's summary (and to show the race really happened).
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub images_pushed: u64,
    pub images_repushed: u64,
    pub blobs_pushed: u64,
    pub blobs_skipped: u64,
    pub manifest_blob_unknown: u64,
    pub blob_refusals: u64,
    pub manifests_deleted: u64,
    pub repositories_deleted: u64,
    pub orphans_pushed: u64,
    pub orphans_deleted: u64,
    pub pulls: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.images_pushed += o.images_pushed;
        self.images_repushed += o.images_repushed;
        self.blobs_pushed += o.blobs_pushed;
        self.blobs_skipped += o.blobs_skipped;
        self.manifest_blob_unknown += o.manifest_blob_unknown;
        self.blob_refusals += o.blob_refusals;
        self.manifests_deleted += o.manifests_deleted;
        self.repositories_deleted += o.repositories_deleted;
        self.orphans_pushed += o.orphans_pushed;
        self.orphans_deleted += o.orphans_deleted;
        self.pulls += o.pulls;
    }
}

/// How long one client runs: until `until` or after `ops` operations, whichever is first.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub until: Instant,
    pub ops: usize,
}

/// How the registry answered a blob push.
enum Pushed {
    Done,
    /// Refused because the collector was deleting that digest; push it again.
    Refused,
}

pub struct Client {
    pub id: usize,
    pub clients: usize,
    urls: Vec<String>,
    http: reqwest::Client,
    rng: Rng,
    pool: Arc<Vec<Blob>>,
    /// Acknowledged (201) and not deleted since.
    pub live: Vec<Image>,
    /// Deleted; pushed again now and then (the same manifest, the same layers).
    deleted: Vec<Image>,
    /// Blobs pushed with no manifest referencing them: the collector's to take.
    orphans: Vec<(String, Blob)>,
    counter: u64,
    pub stats: Stats,
}

/// A request's answer, read whole.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: bytes::Bytes,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body[..self.body.len().min(600)]).into_owned()
    }
}

impl Client {
    pub fn new(id: usize, clients: usize, urls: Vec<String>, seed: u64, pool: Arc<Vec<Blob>>) -> Client {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(180)).build().unwrap();
        Client {
            id,
            clients,
            urls,
            http,
            rng: Rng::new(seed.wrapping_add(id as u64 * 7919)),
            pool,
            live: Vec::new(),
            deleted: Vec::new(),
            orphans: Vec::new(),
            counter: 0,
            stats: Stats::default(),
        }
    }

    fn repo(&mut self) -> String {
        format!("gcrace/c{}/r{}", self.id, self.rng.below(3))
    }

    /// A replica, drawn per request.
    fn url(&mut self, path: &str) -> String {
        let i = self.rng.below(self.urls.len());
        format!("{}{path}", self.urls[i])
    }

    async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> Result<Answer, String> {
        let resp = req.send().await.map_err(|e| format!("client {}: {what}: {e}", self.id))?;
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        let body = resp.bytes().await.map_err(|e| format!("client {}: {what}: reading the body: {e}", self.id))?;
        Ok(Answer { status, headers, body })
    }

    fn unexpected(&self, what: &str, a: &Answer) -> String {
        format!("client {}: {what}: unexpected {} {}", self.id, a.status, a.text())
    }

    /// Runs operations until `bounds` says stop; the first wrong answer ends the client with
    /// a sentence saying what it asked and what it got.
    pub async fn run(&mut self, bounds: Bounds) -> Result<(), String> {
        for _ in 0..bounds.ops {
            if Instant::now() >= bounds.until {
                break;
            }
            match self.rng.below(100) {
                0..40 => self.push_new_image().await?,
                40..52 => self.repush_deleted_image().await?,
                52..66 => self.delete_manifest().await?,
                66..70 => self.delete_repository().await?,
                70..78 => self.push_orphans().await?,
                78..82 => self.delete_orphan().await?,
                _ => self.pull_one().await?,
            }
        }
        Ok(())
    }

    async fn push_new_image(&mut self) -> Result<(), String> {
        self.counter += 1;
        let repo = self.repo();
        let config = Blob::new(format!("{{\"client\":{},\"image\":{}}}", self.id, self.counter).into_bytes());
        let mut layers: Vec<Blob> = Vec::new();
        for _ in 0..2 + self.rng.below(3) {
            let l = self.pool[self.rng.below(self.pool.len())].clone();
            if !layers.iter().any(|x| x.digest == l.digest) {
                layers.push(l);
            }
        }
        if self.rng.below(2) == 0 {
            let len = 512 + self.rng.below(16 << 10);
            layers.push(Blob::new(self.rng.bytes(len)));
        }
        let tag = format!("v{}", self.counter % 4);
        let image = Image::new(repo, tag, config, layers);
        self.push_image(&image).await?;
        self.stats.images_pushed += 1;
        self.live.push(image);
        Ok(())
    }

    async fn repush_deleted_image(&mut self) -> Result<(), String> {
        if self.deleted.is_empty() {
            return self.push_new_image().await;
        }
        let image = self.deleted.swap_remove(self.rng.below(self.deleted.len()));
        self.push_image(&image).await?;
        self.stats.images_repushed += 1;
        self.live.push(image);
        Ok(())
    }

    async fn delete_manifest(&mut self) -> Result<(), String> {
        if self.live.is_empty() {
            return Ok(());
        }
        let image = self.live.swap_remove(self.rng.below(self.live.len()));
        let url = self.url(&format!("/v2/{}/manifests/{}", image.repo, image.digest));
        let a = self.send("DELETE manifest", self.http.delete(url)).await?;
        if a.status != 202 {
            return Err(self.unexpected(&format!("DELETE {}@{}", image.repo, image.digest), &a));
        }
        // The same manifest may be live twice in one repository (pushed again while held):
        // one delete removes it for both.
        let gone: Vec<Image> = {
            let (gone, keep) = self.live.drain(..).partition(|i| i.repo == image.repo && i.digest == image.digest);
            self.live = keep;
            gone
        };
        self.stats.manifests_deleted += 1;
        self.remember_deleted(image);
        for i in gone {
            self.remember_deleted(i);
        }
        Ok(())
    }

    async fn delete_repository(&mut self) -> Result<(), String> {
        let repo = self.repo();
        let url = self.url(&format!("/api/v1/repositories?name={repo}&force=true"));
        let a = self.send("DELETE repository", self.http.delete(url)).await?;
        match a.status {
            204 => self.stats.repositories_deleted += 1,
            // Never pushed to, or emptied and deleted already.
            404 => {}
            _ => return Err(self.unexpected(&format!("DELETE repository {repo}"), &a)),
        }
        let (gone, keep): (Vec<Image>, Vec<Image>) = self.live.drain(..).partition(|i| i.repo == repo);
        self.live = keep;
        self.orphans.retain(|(r, _)| *r != repo);
        for i in gone {
            self.remember_deleted(i);
        }
        Ok(())
    }

    fn remember_deleted(&mut self, image: Image) {
        if self.deleted.len() >= 32 {
            self.deleted.swap_remove(self.rng.below(self.deleted.len()));
        }
        self.deleted.push(image);
    }

    /// Blobs nothing references: some new, some from the pool (a link the collector may
    /// take while another repository still needs the bytes).
    async fn push_orphans(&mut self) -> Result<(), String> {
        let repo = self.repo();
        for _ in 0..1 + self.rng.below(3) {
            let blob = if self.rng.below(2) == 0 {
                let len = 256 + self.rng.below(8 << 10);
                Blob::new(self.rng.bytes(len))
            } else {
                self.pool[self.rng.below(self.pool.len())].clone()
            };
            self.push_blob(&repo, &blob).await?;
            self.stats.orphans_pushed += 1;
            self.orphans.push((repo.clone(), blob));
        }
        Ok(())
    }

    /// `DELETE /v2/<name>/blobs/<digest>` of an unreferenced blob: the link goes at once.
    async fn delete_orphan(&mut self) -> Result<(), String> {
        if self.orphans.is_empty() {
            return Ok(());
        }
        let (repo, blob) = self.orphans.swap_remove(self.rng.below(self.orphans.len()));
        // Not if a live image of that repository uses it: that would break the image.
        if self.live.iter().any(|i| i.repo == repo && i.blobs.iter().any(|b| b.digest == blob.digest)) {
            return Ok(());
        }
        let url = self.url(&format!("/v2/{repo}/blobs/{}", blob.digest));
        let a = self.send("DELETE blob", self.http.delete(url)).await?;
        match a.status {
            202 => self.stats.orphans_deleted += 1,
            // The collector took the link first (it was unreferenced).
            404 => {}
            _ => return Err(self.unexpected(&format!("DELETE blob {repo}@{}", blob.digest), &a)),
        }
        Ok(())
    }

    async fn pull_one(&mut self) -> Result<(), String> {
        if self.live.is_empty() {
            return Ok(());
        }
        let image = self.live[self.rng.below(self.live.len())].clone();
        let url = self.url("");
        pull(&self.http, &url, &image).await.map_err(|e| format!("client {}: during the run: {e}", self.id))?;
        self.stats.pulls += 1;
        Ok(())
    }

    /// Pushes the blobs the repository lacks, then the manifest; a `MANIFEST_BLOB_UNKNOWN`
    /// (the collector took a link between the check and the PUT) means: push again.
    pub async fn push_image(&mut self, image: &Image) -> Result<(), String> {
        for _ in 0..MANIFEST_ATTEMPTS {
            for blob in &image.blobs {
                let url = self.url(&format!("/v2/{}/blobs/{}", image.repo, blob.digest));
                let a = self.send("HEAD blob", self.http.head(url)).await?;
                match a.status {
                    200 => self.stats.blobs_skipped += 1,
                    404 => self.push_blob(&image.repo, blob).await?,
                    _ => return Err(self.unexpected(&format!("HEAD {}@{}", image.repo, blob.digest), &a)),
                }
            }
            let url = self.url(&format!("/v2/{}/manifests/{}", image.repo, image.tag));
            let req = self.http.put(url).header("content-type", MANIFEST_TYPE).body(image.manifest.to_vec());
            let a = self.send("PUT manifest", req).await?;
            match a.status {
                201 => {
                    let digest = a.headers.get("docker-content-digest").and_then(|v| v.to_str().ok());
                    if digest != Some(image.digest.as_str()) {
                        return Err(format!("client {}: PUT manifest answered digest {digest:?}", self.id));
                    }
                    return Ok(());
                }
                400 if a.text().contains(MANIFEST_BLOB_UNKNOWN) => self.stats.manifest_blob_unknown += 1,
                _ => return Err(self.unexpected(&format!("PUT {}:{}", image.repo, image.tag), &a)),
            }
        }
        Err(format!("client {}: {}@{} refused {MANIFEST_ATTEMPTS} times", self.id, image.repo, image.digest))
    }

    /// Pushes one blob by one of the four ways a client may, again when a push is refused
    /// while the collector deletes that digest.
    async fn push_blob(&mut self, repo: &str, blob: &Blob) -> Result<(), String> {
        for _ in 0..BLOB_ATTEMPTS {
            let pushed = match self.rng.below(4) {
                0 => self.push_monolithic(repo, blob).await?,
                1 => self.push_post_put(repo, blob).await?,
                2 => self.push_chunked(repo, blob).await?,
                _ => self.push_mount(repo, blob).await?,
            };
            match pushed {
                Pushed::Done => {
                    self.stats.blobs_pushed += 1;
                    return Ok(());
                }
                Pushed::Refused => self.stats.blob_refusals += 1,
            }
        }
        Err(format!("client {}: pushing {repo}@{} was refused {BLOB_ATTEMPTS} times", self.id, blob.digest))
    }

    /// The answer to the request that commits a blob.
    fn committed(&self, what: &str, a: &Answer) -> Result<Pushed, String> {
        match a.status {
            201 => Ok(Pushed::Done),
            _ if refused_during_doom(a) => Ok(Pushed::Refused),
            _ => Err(self.unexpected(what, a)),
        }
    }

    async fn push_monolithic(&mut self, repo: &str, blob: &Blob) -> Result<Pushed, String> {
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/?digest={}", blob.digest));
        let a = self.send("POST ?digest=", self.http.post(url).body(blob.bytes.to_vec())).await?;
        self.committed(&format!("POST {repo} ?digest={}", blob.digest), &a)
    }

    async fn start_upload(&mut self, repo: &str) -> Result<String, String> {
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let a = self.send("POST upload", self.http.post(url)).await?;
        if a.status != 202 {
            return Err(self.unexpected(&format!("POST {repo} upload"), &a));
        }
        location(&a).ok_or_else(|| format!("client {}: POST upload without a Location", self.id))
    }

    async fn finish_upload(&mut self, location: &str, blob: &Blob, body: Vec<u8>) -> Result<Pushed, String> {
        let separator = if location.contains('?') { '&' } else { '?' };
        let url = self.url(&format!("{location}{separator}digest={}", blob.digest));
        let a = self.send("PUT upload", self.http.put(url).body(body)).await?;
        self.committed(&format!("PUT {location} digest={}", blob.digest), &a)
    }

    async fn push_post_put(&mut self, repo: &str, blob: &Blob) -> Result<Pushed, String> {
        let location = self.start_upload(repo).await?;
        self.finish_upload(&location, blob, blob.bytes.to_vec()).await
    }

    async fn push_chunked(&mut self, repo: &str, blob: &Blob) -> Result<Pushed, String> {
        let mut location = self.start_upload(repo).await?;
        let cut = blob.bytes.len() / 2;
        for (start, end) in [(0, cut), (cut, blob.bytes.len())] {
            let url = self.url(&location);
            let req = self
                .http
                .patch(url)
                .header("content-range", format!("{start}-{}", end - 1))
                .header("content-type", "application/octet-stream")
                .body(blob.bytes[start..end].to_vec());
            let a = self.send("PATCH upload", req).await?;
            if a.status != 202 {
                return Err(self.unexpected(&format!("PATCH {location} {start}-{end}"), &a));
            }
            location = location_of(&a).unwrap_or(location);
        }
        self.finish_upload(&location, blob, Vec::new()).await
    }

    /// A cross-repository mount from another client's repository: 201 if it holds the blob,
    /// else 202 and an upload to finish.
    async fn push_mount(&mut self, repo: &str, blob: &Blob) -> Result<Pushed, String> {
        let from = format!("gcrace/c{}/r{}", self.rng.below(self.clients), self.rng.below(3));
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/?mount={}&from={from}", blob.digest));
        let a = self.send("POST ?mount=", self.http.post(url)).await?;
        match a.status {
            201 => Ok(Pushed::Done),
            202 => {
                let location =
                    location(&a).ok_or_else(|| format!("client {}: mount 202 without a Location", self.id))?;
                self.finish_upload(&location, blob, blob.bytes.to_vec()).await
            }
            _ if refused_during_doom(&a) => Ok(Pushed::Refused),
            _ => Err(self.unexpected(&format!("POST {repo} ?mount={}&from={from}", blob.digest), &a)),
        }
    }
}

fn location_of(a: &Answer) -> Option<String> {
    location(a)
}

/// The path of a `Location` header (absolute URLs lose their origin: the next request may
/// go to another replica).
fn location(a: &Answer) -> Option<String> {
    let l = a.headers.get("location")?.to_str().ok()?;
    Some(match l.find("/v2/") {
        Some(i) => l[i..].to_owned(),
        None => l.to_owned(),
    })
}

/// A blob commit refused because the collector was deleting that digest when it came (and
/// did not finish within the writer's bounded wait): the client pushes again.
fn refused_during_doom(a: &Answer) -> bool {
    a.status == 503
}

/// Pulls `image` from `base` (a replica's URL): the manifest by digest and every blob, each
/// byte for byte as pushed.
pub async fn pull(http: &reqwest::Client, base: &str, image: &Image) -> Result<(), String> {
    let url = format!("{base}/v2/{}/manifests/{}", image.repo, image.digest);
    let resp = http.get(&url).header("accept", MANIFEST_TYPE).send().await.map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
    if status != 200 || body.as_ref() != image.manifest.as_ref() {
        return Err(format!(
            "acknowledged manifest {}@{} does not pull from {base}: {status} {}",
            image.repo,
            image.digest,
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    for blob in &image.blobs {
        let url = format!("{base}/v2/{}/blobs/{}", image.repo, blob.digest);
        let resp = http.get(&url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        let body = resp.bytes().await;
        match body {
            Ok(body) if status == 200 && body.as_ref() == blob.bytes.as_ref() => {}
            Ok(body) => {
                return Err(format!(
                    "blob {} of acknowledged manifest {}@{} from {base}: {status}, {} bytes ({} pushed){}",
                    blob.digest,
                    image.repo,
                    image.digest,
                    body.len(),
                    blob.bytes.len(),
                    if status == 200 { ", content differs" } else { "" }
                ));
            }
            Err(e) => {
                return Err(format!(
                    "blob {} of acknowledged manifest {}@{} from {base}: {status}, the body broke off: {e}",
                    blob.digest, image.repo, image.digest
                ));
            }
        }
    }
    Ok(())
}
