//! The scenarios, one module per family, and what they share: the round
//! context [`Cx`] and image building.
//!
//! A scenario is an `async fn(&mut Cx) -> Result<(), BenchError>`. It records
//! metrics, errors and notes on `cx.rec` as it goes; returning an error ends
//! the round early (the error is recorded by the caller), which is for setup
//! that later steps cannot do without.

pub(crate) mod blobs;
pub(crate) mod concurrency;
pub(crate) mod image;
pub(crate) mod listing;
pub(crate) mod manifests;
pub(crate) mod replicas;
pub(crate) mod storm;
pub(crate) mod tls;

pub use concurrency::ExtraParams;

use bytes::Bytes;
use reqwest::Method;
use serde_json::json;

use super::metric::Recorder;
use super::{Bench, BenchError, MonolithicMode, Params, Payload, Scenario, Target, TargetState};
use crate::content::{OCI_CONFIG, OCI_LAYER, OCI_MANIFEST};

/// What a scenario round works with.
pub(crate) struct Cx<'a> {
    pub(crate) bench: &'a Bench,
    pub(crate) target: &'a Target,
    pub(crate) state: &'a mut TargetState,
    pub(crate) rec: &'a mut Recorder,
    /// The server's process, when known: its CPU time and peak RSS.
    pub(crate) server_pid: Option<u32>,
}

impl Cx<'_> {
    pub(crate) fn params(&self) -> &Params {
        &self.bench.params
    }

    /// `<namespace>/<suffix>`.
    pub(crate) fn repo(&self, suffix: &str) -> String {
        format!("{}/{suffix}", self.bench.namespace)
    }

    /// A fresh blob of `len` bytes, hashed on a blocking thread (never
    /// inside a timed section).
    pub(crate) async fn fresh(&self, len: u64) -> Result<Payload, BenchError> {
        let source = std::sync::Arc::clone(&self.bench.source);
        tokio::task::spawn_blocking(move || source.fresh(len))
            .await
            .map_err(|e| BenchError::new(format!("hashing task failed: {e}")))?
    }

    /// `lens.len()` fresh blobs, hashed in parallel.
    pub(crate) async fn fresh_many(&self, lens: impl IntoIterator<Item = u64>) -> Result<Vec<Payload>, BenchError> {
        futures::future::try_join_all(lens.into_iter().map(|len| self.fresh(len))).await
    }

    /// How this registry takes a monolithic upload, probed once with a
    /// small blob.
    pub(crate) async fn monolithic_mode(&mut self) -> Result<MonolithicMode, BenchError> {
        let mode = match self.state.mono {
            Some(mode) => mode,
            None => {
                let probe = self.fresh(1024).await?;
                let mode = self
                    .target
                    .probe_monolithic(&self.repo("probe"), &probe)
                    .await
                    .map_err(|e| e.context("probing monolithic upload"))?;
                self.state.mono = Some(mode);
                mode
            }
        };
        Ok(mode)
    }

    /// [`Cx::monolithic_mode`], noted in the round's report (for scenarios
    /// whose metrics include monolithic uploads).
    pub(crate) async fn noted_monolithic_mode(&mut self) -> Result<MonolithicMode, BenchError> {
        let mode = self.monolithic_mode().await?;
        self.rec.note(format!("monolithic upload: {}", mode.describe()));
        Ok(mode)
    }
}

/// Runs one round of `scenario`.
pub(crate) async fn run(cx: &mut Cx<'_>, scenario: Scenario) -> Result<(), BenchError> {
    match scenario {
        Scenario::BlobPush => blobs::push(cx).await,
        Scenario::BlobPull => blobs::pull(cx, false).await,
        Scenario::BlobPullBusy => blobs::pull(cx, true).await,
        Scenario::ConcurrentPush => blobs::concurrent_push(cx).await,
        Scenario::ManifestGet => manifests::manifest_get(cx).await,
        Scenario::Image => image::image(cx).await,
        Scenario::Listing => listing::listing(cx).await,
        Scenario::Concurrency => concurrency::concurrency(cx).await,
        Scenario::Memory => concurrency::memory(cx).await,
        Scenario::Storm => storm::storm(cx).await,
        Scenario::Tls => tls::tls(cx).await,
        Scenario::Replicas => replicas::replicas(cx).await,
    }
}

/// An OCI image ready to push: layers, a config naming them, the manifest.
#[derive(Debug, Clone)]
pub(crate) struct ImagePlan {
    pub(crate) layers: Vec<Payload>,
    pub(crate) config: Payload,
    pub(crate) manifest: Bytes,
}

fn descriptor(media_type: &str, blob: &Payload) -> serde_json::Value {
    json!({ "mediaType": media_type, "digest": blob.digest(), "size": blob.len() })
}

impl ImagePlan {
    pub(crate) fn new(layers: Vec<Payload>) -> Self {
        let diff_ids: Vec<&str> = layers.iter().map(Payload::digest).collect();
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": [ { "created_by": "berth-bench" } ],
        });
        let config = Payload::from_bytes(config.to_string().into_bytes());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, &config),
            "layers": layers.iter().map(|l| descriptor(OCI_LAYER, l)).collect::<Vec<_>>(),
        });
        Self { layers, config, manifest: Bytes::from(manifest.to_string().into_bytes()) }
    }

    /// Layers, config and manifest together.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.layers.iter().map(Payload::len).sum::<u64>() + self.config.len() + self.manifest.len() as u64
    }

    fn blobs(&self) -> impl Iterator<Item = &Payload> {
        self.layers.iter().chain(std::iter::once(&self.config))
    }

    /// Pushes like a client does: `HEAD` each blob, push the missing ones
    /// monolithically, then `PUT` the manifest under `tag`.
    pub(crate) async fn push(
        &self,
        target: &Target,
        repo: &str,
        tag: &str,
        mode: MonolithicMode,
    ) -> Result<(), BenchError> {
        for blob in self.blobs() {
            if !target.blob_exists(repo, blob.digest()).await? {
                target.push_monolithic(repo, blob, mode).await?;
            }
        }
        target.put_manifest(repo, tag, OCI_MANIFEST, self.manifest.clone()).await
    }

    /// Pulls like a client does: the manifest by tag, then every blob.
    /// Returns the bytes received.
    pub(crate) async fn pull(&self, target: &Target, repo: &str, tag: &str) -> Result<u64, BenchError> {
        let mut bytes = target.get_manifest(repo, tag, Method::GET).await?;
        for blob in self.blobs() {
            bytes += target.get_blob(repo, blob.digest(), None, blob.len()).await?;
        }
        Ok(bytes)
    }
}
