//! Parsing and validating pushed manifests.
//!
//! Berth stores manifests byte-exact; parsing only extracts what the registry must check or
//! index: the blobs and child manifests a manifest references, its `subject` and the
//! `artifactType` reported by the referrers API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::media::{self, ManifestKind};

/// Largest manifest Berth accepts (the spec asks registries to take at least 4 MB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// The most blobs and child manifests one manifest may reference: ECR's limit on layers per
/// image (4,200). Each reference is checked against the repository and recorded when the
/// manifest is pushed, so a 4 MiB body of tiny descriptors (about 25,000) must not make one
/// push that much work.
pub const MAX_REFERENCES: usize = 4_200;

/// Why a manifest was refused. All map to `MANIFEST_INVALID`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error(
        "Docker schema 1 manifests are not supported; push schema 2 or OCI (e.g. `docker push` from Docker 1.10 or later)"
    )]
    Schema1,
    #[error("manifest media type {0:?} is not supported")]
    UnsupportedMediaType(String),
    #[error("manifest mediaType {body:?} does not match Content-Type {header:?}")]
    MediaTypeMismatch { header: String, body: String },
    #[error("manifest has no media type: set mediaType or the Content-Type header")]
    MissingMediaType,
    #[error("schemaVersion must be 2")]
    SchemaVersion,
    #[error("{0}")]
    Invalid(String),
}

/// A content descriptor as it appears in manifests and indexes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(rename = "artifactType", default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

impl Descriptor {
    /// Content that lives elsewhere (foreign / non-distributable layers) need not be pushed.
    pub fn is_external(&self) -> bool {
        media::is_non_distributable(&self.media_type) || !self.urls.is_empty()
    }
}

/// The fields Berth reads from any manifest; unknown fields are kept in the stored bytes.
#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// What the registry needs to know about a manifest it is about to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedManifest {
    pub media_type: String,
    pub kind: ManifestKind,
    /// `artifactType`, else the config's media type (what the referrers API reports).
    pub artifact_type: Option<String>,
    /// Blobs (config and layers) that must already be in the repository.
    pub blobs: Vec<Descriptor>,
    /// Child manifests (of an index) that must already be in the repository.
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to; it need not exist yet.
    pub subject: Option<Descriptor>,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Content types that say nothing about the manifest; the body's `mediaType` decides.
fn is_generic_content_type(ct: &str) -> bool {
    matches!(ct, "" | "application/json" | "application/octet-stream" | "*/*")
}

/// Parses and validates a manifest pushed with `content_type` (the request's header, if any).
pub fn parse(content_type: Option<&str>, bytes: &[u8]) -> Result<ParsedManifest, ManifestError> {
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
    let header = content_type.map(media::essence).filter(|ct| !is_generic_content_type(ct));
    let is_schema1 = |t: &str| t == media::DOCKER_SCHEMA1 || t == media::DOCKER_SCHEMA1_SIGNED;
    if raw.schema_version == Some(1)
        || header.is_some_and(is_schema1)
        || raw.media_type.as_deref().is_some_and(is_schema1)
    {
        return Err(ManifestError::Schema1);
    }
    let media_type = match (header, raw.media_type.as_deref()) {
        (Some(h), Some(b)) if h != b => {
            return Err(ManifestError::MediaTypeMismatch { header: h.into(), body: b.into() });
        }
        (_, Some(b)) => b.to_owned(),
        (Some(h), None) => h.to_owned(),
        (None, None) => return Err(ManifestError::MissingMediaType),
    };
    let kind =
        media::manifest_kind(&media_type).ok_or_else(|| ManifestError::UnsupportedMediaType(media_type.clone()))?;
    if raw.schema_version != Some(2) {
        return Err(ManifestError::SchemaVersion);
    }
    let parsed = match kind {
        ManifestKind::Image => {
            if raw.manifests.is_some() {
                return Err(ManifestError::Invalid(format!("{media_type} must not have a manifests field")));
            }
            let config = raw.config.ok_or_else(|| ManifestError::Invalid("image manifest has no config".into()))?;
            let layers = raw.layers.ok_or_else(|| ManifestError::Invalid("image manifest has no layers".into()))?;
            let artifact_type = raw.artifact_type.clone().or_else(|| Some(config.media_type.clone()));
            let mut blobs = Vec::with_capacity(layers.len() + 1);
            blobs.push(config);
            blobs.extend(layers.into_iter().filter(|l| !l.is_external()));
            ParsedManifest {
                media_type,
                kind,
                artifact_type,
                blobs,
                manifests: Vec::new(),
                subject: raw.subject,
                annotations: raw.annotations,
            }
        }
        ManifestKind::Index => {
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(ManifestError::Invalid(format!("{media_type} must not have config or layers")));
            }
            let manifests =
                raw.manifests.ok_or_else(|| ManifestError::Invalid("index has no manifests field".into()))?;
            ParsedManifest {
                media_type,
                kind,
                artifact_type: raw.artifact_type,
                blobs: Vec::new(),
                manifests,
                subject: raw.subject,
                annotations: raw.annotations,
            }
        }
    };
    let references = parsed.blobs.len() + parsed.manifests.len();
    if references > MAX_REFERENCES {
        return Err(ManifestError::Invalid(format!(
            "the manifest references {references} blobs and manifests; at most {MAX_REFERENCES} are accepted"
        )));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn image(media_type: &str, extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media_type}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D2}","size":5}}]{extra}}}"#
        )
    }

    #[test]
    fn fan_out_is_bounded() {
        let layer = format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D2}","size":5}}"#);
        let body = |layers: usize| {
            let layers = vec![layer.as_str(); layers].join(",");
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},"layers":[{layers}]}}"#,
                media::OCI_MANIFEST
            )
        };
        assert!(parse(None, body(MAX_REFERENCES - 1).as_bytes()).is_ok());
        let err = parse(None, body(MAX_REFERENCES).as_bytes()).unwrap_err();
        assert!(err.to_string().contains("at most 4200"), "{err}");
    }

    #[test]
    fn oci_image_manifest() {
        let m = parse(Some(media::OCI_MANIFEST), image(media::OCI_MANIFEST, "").as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(m.artifact_type.as_deref(), Some("application/vnd.oci.image.config.v1+json"));
        assert!(m.subject.is_none());
    }

    #[test]
    fn artifact_type_and_subject() {
        let extra = format!(
            r#","artifactType":"application/x.sig","subject":{{"mediaType":"{}","digest":"{D1}","size":9}}"#,
            media::OCI_MANIFEST
        );
        let m = parse(None, image(media::OCI_MANIFEST, &extra).as_bytes()).unwrap();
        assert_eq!(m.artifact_type.as_deref(), Some("application/x.sig"));
        assert_eq!(m.subject.unwrap().digest.to_string(), D1);
    }

    #[test]
    fn index_lists_children() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{D1}","size":3,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            media::OCI_INDEX,
            media::OCI_MANIFEST
        );
        let m = parse(Some(media::OCI_INDEX), body.as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(m.manifests.len(), 1);
        assert!(m.artifact_type.is_none());
    }

    #[test]
    fn docker_schema2_from_header_only() {
        let body = image(media::DOCKER_MANIFEST, "");
        let m = parse(Some("application/vnd.docker.distribution.manifest.v2+json"), body.as_bytes()).unwrap();
        assert_eq!(m.media_type, media::DOCKER_MANIFEST);
    }

    #[test]
    fn foreign_layers_need_not_exist() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"a/b","digest":"{D1}","size":2}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{D2}","size":5,"urls":["https://example.com/l"]}}]}}"#,
            media::DOCKER_MANIFEST
        );
        let m = parse(None, body.as_bytes()).unwrap();
        assert_eq!(m.blobs.len(), 1);
    }

    #[test]
    fn refusals() {
        let schema1 = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        assert_eq!(parse(Some(media::DOCKER_SCHEMA1_SIGNED), schema1.as_bytes()), Err(ManifestError::Schema1));
        assert_eq!(parse(None, schema1.as_bytes()), Err(ManifestError::Schema1));
        assert!(matches!(parse(None, b"{not json"), Err(ManifestError::Json(_))));
        assert!(matches!(parse(None, b"[]"), Err(ManifestError::Json(_))));
        assert!(matches!(
            parse(Some(media::OCI_INDEX), image(media::OCI_MANIFEST, "").as_bytes()),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        let no_type = r#"{"schemaVersion":2,"layers":[]}"#;
        assert_eq!(parse(None, no_type.as_bytes()), Err(ManifestError::MissingMediaType));
        assert!(matches!(
            parse(Some("application/x.unknown"), br#"{"schemaVersion":2}"#),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
        let bad_digest = image(media::OCI_MANIFEST, "").replace(D2, "sha256:zz");
        assert!(matches!(parse(None, bad_digest.as_bytes()), Err(ManifestError::Json(_))));
        let negative = image(media::OCI_MANIFEST, "").replace("\"size\":5", "\"size\":-5");
        assert!(matches!(parse(None, negative.as_bytes()), Err(ManifestError::Json(_))));
        let no_layers = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"a/b","digest":"{D1}","size":2}}}}"#,
            media::OCI_MANIFEST
        );
        assert!(matches!(parse(None, no_layers.as_bytes()), Err(ManifestError::Invalid(_))));
    }
}
