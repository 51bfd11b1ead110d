//! Blobs on Amazon S3 and S3-compatible stores (MinIO, Ceph, R2, moto...).
//!
//! object_store's `AmazonS3` makes the plain requests (get, put, head, list, delete). What
//! it does not expose is here, on the same credentials and HTTP client settings:
//! - [`raw`]: multipart uploads driven by hand: `UploadPart`, ranged `UploadPartCopy`, a
//!   `CompleteMultipartUpload` with `If-None-Match: *` (create-if-absent), abort, and the
//!   listing of unfinished uploads (so a crash leaves nothing behind for long);
//! - [`writer`]: streams a body into an object in parts whose size grows with the object, so
//!   S3's limits (parts of 5 MiB at least, 10,000 at most) hold for any size;
//! - [`concat`]: makes one object of several, server-side, in copy ranges of at most 5 GiB.

pub mod concat;
pub mod raw;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{ClientOptions, HttpConnector, ReqwestConnector};
use object_store::prefix::PrefixStore;

use crate::error::{Error, Result};

/// S3's smallest part (every part of a multipart upload but the last).
pub const MIN_PART: u64 = 5 * 1024 * 1024;
/// S3's largest part, and the largest range one `UploadPartCopy` may copy.
pub const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
/// S3's most parts in one multipart upload.
pub const MAX_PARTS: usize = 10_000;

/// Where the blobs live and how to reach them. Unset credentials come from the environment
/// (`AWS_ACCESS_KEY_ID`, ...) or the usual AWS chain (web identity, ECS, instance metadata).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix, so that one bucket can hold several registries: `a/b` puts blobs under
    /// `a/b/blobs/...`.
    pub prefix: Option<String>,
    /// Default: `AWS_REGION`/`AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// For other S3-compatible stores: `https://minio.internal:9000`. `http://` is allowed.
    pub endpoint: Option<String>,
    /// Address the bucket as `<endpoint>/<bucket>` rather than `<bucket>.<endpoint>`.
    pub path_style: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = |s: &Option<String>| s.as_ref().map(|_| "***");
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &masked(&self.secret_access_key))
            .field("session_token", &masked(&self.session_token))
            .finish()
    }
}

/// An opened bucket: object_store for plain requests, [`raw::RawS3`] for the rest.
#[derive(Debug, Clone)]
pub struct S3 {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) raw: Arc<raw::RawS3>,
}

/// How long a read may see no byte before it fails. There is no limit on a whole request:
/// a multi-GiB blob streams for as long as it takes (object_store's default is 30 s in all).
const READ_IDLE: Duration = Duration::from_secs(120);
/// The same for the multipart requests: S3 may think for minutes, silent, over a large
/// `UploadPartCopy` or `CompleteMultipartUpload`.
const COPY_IDLE: Duration = Duration::from_secs(15 * 60);

fn client_options(idle: Duration) -> ClientOptions {
    ClientOptions::new().with_timeout_disabled().with_connect_timeout(Duration::from_secs(10)).with_read_timeout(idle)
}

/// Checks a key prefix: plain path segments, so that keys need no escaping anywhere.
fn check_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Settings(format!(
            "storage.s3.prefix {prefix:?}: use segments of letters, digits, '-', '_' and '.' separated by '/'"
        )))
    }
}

impl S3 {
    /// Opens the bucket. Makes no request: [`crate::BlobStore::check`] tells whether it answers.
    pub fn open(settings: &S3Settings) -> Result<S3> {
        if settings.bucket.is_empty() {
            return Err(Error::Settings("storage.s3.bucket is required".into()));
        }
        let prefix = settings.prefix.as_deref().map(|p| p.trim_matches('/')).filter(|p| !p.is_empty());
        if let Some(p) = prefix {
            check_prefix(p)?;
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_client_options(client_options(READ_IDLE))
            .with_bucket_name(&settings.bucket)
            .with_virtual_hosted_style_request(!settings.path_style);
        if let Some(region) = &settings.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
        }
        if let Some(key) = &settings.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &settings.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(token) = &settings.session_token {
            builder = builder.with_token(token);
        }
        let endpoint = builder
            .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
            .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint));
        let plain_http = endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));
        builder = builder.with_allow_http(plain_http);
        let region = builder.get_config_value(&AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
        let bucket = settings.bucket.clone();
        let bucket_endpoint = match (endpoint, settings.path_style) {
            (Some(e), false) => e.trim_end_matches('/').to_owned(),
            (Some(e), true) => format!("{}/{bucket}", e.trim_end_matches('/')),
            (None, false) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, true) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        let s3 = builder.build()?;
        let client = ReqwestConnector::default().connect(&client_options(COPY_IDLE).with_allow_http(plain_http))?;
        let raw = raw::RawS3::new(
            client,
            s3.credentials().clone(),
            region,
            bucket,
            bucket_endpoint,
            prefix.map(str::to_owned),
        );
        let store: Arc<dyn ObjectStore> = match prefix {
            Some(p) => Arc::new(PrefixStore::new(s3, p)),
            None => Arc::new(s3),
        };
        Ok(S3 { store, raw: Arc::new(raw) })
    }

    /// The object store for plain requests, with the prefix applied.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert!(check_prefix("registry").is_ok());
        assert!(check_prefix("a/b-c/d_e.f").is_ok());
        for bad in ["", "a//b", "../a", "a b", "a/./b", "ü"] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_are_masked() {
        let s = S3Settings {
            bucket: "b".into(),
            secret_access_key: Some("hunter2".into()),
            session_token: Some("tok".into()),
            ..Default::default()
        };
        let text = format!("{s:?}");
        assert!(!text.contains("hunter2") && !text.contains("tok\""), "{text}");
    }
}
