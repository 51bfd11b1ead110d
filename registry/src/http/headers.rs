//! Header names of the registry protocol and helpers that set groups of them.

use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue, LOCATION, RANGE};

pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
pub const DOCKER_API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
pub const OCI_TAG: HeaderName = HeaderName::from_static("oci-tag");
pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Sets a header from text that may contain bytes a header cannot carry (then it is left out).
pub fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// `Location`, `Range: 0-<last byte>` and `Docker-Upload-UUID` of an upload session.
pub fn upload_progress(headers: &mut HeaderMap, location: &str, upload_id: &str, offset: u64) {
    set(headers, LOCATION, location);
    // Distribution and clients use `0-0` for an empty upload.
    set(headers, RANGE, &format!("0-{}", offset.saturating_sub(1)));
    set(headers, DOCKER_UPLOAD_UUID, upload_id);
}
