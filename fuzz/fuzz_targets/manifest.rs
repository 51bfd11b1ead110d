//! Manifest and index parsing (`berth_oci::manifest::parse`), as a `PUT` of a manifest
//! reaches it: the request's `Content-Type` (picked by the first byte) and the body.
#![no_main]

use berth_oci::{manifest, media};
use libfuzzer_sys::fuzz_target;

/// Content types a client may send: none, each known type, generic ones, odd spellings.
const CONTENT_TYPES: [Option<&str>; 12] = [
    None,
    Some(media::OCI_MANIFEST),
    Some(media::OCI_INDEX),
    Some(media::DOCKER_MANIFEST),
    Some(media::DOCKER_MANIFEST_LIST),
    Some(media::DOCKER_SCHEMA1_SIGNED),
    Some("application/json"),
    Some(""),
    Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
    Some(" ;;"),
    Some("*/*"),
    Some(media::OCI_EMPTY),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let content_type = CONTENT_TYPES[usize::from(pick) % CONTENT_TYPES.len()];
    if let Ok(parsed) = manifest::parse(content_type, body) {
        // What the registry then relies on: an accepted manifest has a known kind, and
        // nothing it must find in the repository is an external (non-distributable) blob.
        assert_eq!(media::manifest_kind(&parsed.media_type), Some(parsed.kind));
        for d in parsed.blobs.iter().chain(&parsed.manifests) {
            let _ = d.is_external();
        }
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let essence = media::essence(text);
        assert!(!essence.contains(';'), "essence keeps no parameters");
        let _ = media::manifest_kind(essence);
        let _ = media::is_non_distributable(text);
    }
});
