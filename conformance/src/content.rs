//! Content the suite pushes: random bytes, digests, and manifest documents.
//!
//! Every run draws fresh bytes from a seed taken from a v4 UUID, so no blob
//! or manifest of one run equals one of an earlier run, and nothing is found
//! "already there" by accident through deduplication. The bytes are an
//! expansion `sha256(seed || counter)`, which needs no RNG crate.

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256, Sha512};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The OCI empty descriptor's media type (config of artifacts).
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Docker image manifest v2 schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker container config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker schema 1 (signed), which registries should refuse nowadays.
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The 2-byte `{}` blob every artifact shares as its config.
pub const EMPTY_JSON: &[u8] = b"{}";
/// Its digest, as written in the image-spec.
pub const EMPTY_JSON_DIGEST: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
/// Digest of zero bytes.
pub const ZERO_BYTES_DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Every manifest media type, sent as `Accept` so content negotiation never
/// turns a GET into a conversion.
pub const ACCEPT_ALL_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v1+prettyjws, \
     application/vnd.docker.distribution.manifest.v1+json, */*";

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// `sha512:<hex>` of `data`.
pub fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(data)))
}

/// Deterministic expansion of a random seed into as many bytes as asked.
#[derive(Debug, Clone)]
pub struct RandomSource {
    seed: [u8; 16],
    counter: u64,
}

impl RandomSource {
    /// A source seeded from a fresh v4 UUID.
    pub fn new() -> Self {
        Self::from_seed(*uuid::Uuid::new_v4().as_bytes())
    }

    /// A source with a fixed seed (tests).
    pub fn from_seed(seed: [u8; 16]) -> Self {
        Self { seed, counter: 0 }
    }

    /// `len` fresh bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let mut hasher = Sha256::new();
            hasher.update(self.seed);
            hasher.update(self.counter.to_le_bytes());
            self.counter += 1;
            let block = hasher.finalize();
            let take = (len - out.len()).min(block.len());
            out.extend_from_slice(&block[..take]);
        }
        out
    }

    /// A fresh lowercase hex token of `len` characters (names, tags).
    pub fn token(&mut self, len: usize) -> String {
        let mut s = hex::encode(self.bytes(len.div_ceil(2)));
        s.truncate(len);
        s
    }
}

impl Default for RandomSource {
    fn default() -> Self {
        Self::new()
    }
}

/// A descriptor as it appears in manifests and indexes.
pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({
        "mediaType": media_type,
        "digest": sha256(data),
        "size": data.len(),
    })
}

/// A config blob for an image whose single layer is `layer` (the diff id is
/// just the layer digest; registries do not look inside layers).
pub fn image_config(layer: &[u8], note: &str) -> Vec<u8> {
    to_bytes(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [sha256(layer)] },
        "history": [ { "created_by": "berth-conformance", "comment": note } ],
    }))
}

/// An OCI image manifest over `config` and `layers` (by their bytes).
pub fn oci_manifest(config: &[u8], layers: &[&[u8]]) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": layers.iter().map(|l| descriptor(OCI_LAYER, l)).collect::<Vec<_>>(),
    })
}

/// A Docker v2 schema 2 manifest over `config` and `layers`.
pub fn docker_manifest(config: &[u8], layers: &[&[u8]]) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, config),
        "layers": layers.iter().map(|l| descriptor(DOCKER_LAYER, l)).collect::<Vec<_>>(),
    })
}

/// An index (OCI or Docker list, by `media_type`) of `children`, each a
/// `(media type, manifest bytes, architecture)`.
pub fn index(media_type: &str, children: &[(&str, &[u8], &str)]) -> Value {
    let manifests: Vec<Value> = children
        .iter()
        .map(|(child_type, body, arch)| {
            let mut d = descriptor(child_type, body);
            if let Some(obj) = d.as_object_mut() {
                obj.insert("platform".into(), json!({ "architecture": arch, "os": "linux" }));
            }
            d
        })
        .collect();
    json!({ "schemaVersion": 2, "mediaType": media_type, "manifests": manifests })
}

/// An artifact manifest: `artifactType`, the empty config, `blobs` as layers
/// of `blob_type`, optional `subject` descriptor and annotations.
pub fn artifact_manifest(
    artifact_type: &str,
    blob_type: &str,
    blobs: &[&[u8]],
    subject: Option<Value>,
    annotations: Option<Value>,
) -> Value {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": descriptor(OCI_EMPTY, EMPTY_JSON),
        "layers": blobs.iter().map(|b| descriptor(blob_type, b)).collect::<Vec<_>>(),
    });
    if let Some(obj) = m.as_object_mut() {
        if let Some(subject) = subject {
            obj.insert("subject".into(), subject);
        }
        if let Some(annotations) = annotations {
            obj.insert("annotations".into(), annotations);
        }
    }
    m
}

/// Serializes a JSON value compactly (`serde_json` cannot fail on `Value`).
pub fn to_bytes(value: &Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        assert_eq!(sha256(EMPTY_JSON), EMPTY_JSON_DIGEST);
        assert_eq!(sha256(b""), ZERO_BYTES_DIGEST);
        assert!(sha512(b"").starts_with("sha512:cf83e1357eefb8bd"));
        assert_eq!(sha512(b"x").len(), "sha512:".len() + 128);
    }

    #[test]
    fn random_source_is_deterministic_per_seed_and_fresh_per_run() {
        let mut a = RandomSource::from_seed([7; 16]);
        let mut b = RandomSource::from_seed([7; 16]);
        assert_eq!(a.bytes(100), b.bytes(100));
        assert_ne!(a.bytes(32), a.bytes(32));
        assert_eq!(a.bytes(0).len(), 0);
        assert_eq!(a.bytes(33).len(), 33);
        let mut fresh1 = RandomSource::new();
        let mut fresh2 = RandomSource::new();
        assert_ne!(fresh1.bytes(32), fresh2.bytes(32));
    }

    #[test]
    fn tokens_are_lowercase_hex_of_the_asked_length() {
        let mut r = RandomSource::from_seed([1; 16]);
        for len in [1, 7, 12] {
            let t = r.token(len);
            assert_eq!(t.len(), len);
            assert!(t.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        }
    }

    #[test]
    fn artifact_manifest_uses_the_empty_config() {
        let m = artifact_manifest("application/x.t", "application/x.b", &[b"abc"], None, None);
        assert_eq!(m["config"]["digest"], EMPTY_JSON_DIGEST);
        assert_eq!(m["config"]["size"], 2);
        assert_eq!(m["artifactType"], "application/x.t");
        assert!(m.get("subject").is_none());
    }
}
