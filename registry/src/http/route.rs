//! The registry's routes, parsed from the path. Repository names contain slashes, so the
//! path after `/v2/` is parsed from the right into a [`Route`]; the route yields the access
//! that authorization needs and a low-cardinality label for logs.

use berth_auth::{Access, Action};
use berth_oci::{Digest, Reference, RepoName, UploadId};
use hyper::Method;

use crate::error::ApiError;

/// Every endpoint under `/v2/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check.
    Base,
    Catalog,
    Tags {
        name: RepoName,
    },
    Manifest {
        name: RepoName,
        reference: Reference,
    },
    Blob {
        name: RepoName,
        digest: Digest,
    },
    /// `/v2/<name>/blobs/uploads/`: start an upload or mount.
    StartUpload {
        name: RepoName,
    },
    /// `/v2/<name>/blobs/uploads/<id>`: continue, finish, inspect or cancel an upload.
    Upload {
        name: RepoName,
        id: UploadId,
    },
    Referrers {
        name: RepoName,
        digest: Digest,
    },
}

impl Route {
    /// Parses a request path. `None` when it is not a registry path at all.
    ///
    /// A read (`GET`/`HEAD`) of a manifest or blob whose reference cannot exist (a tag or
    /// digest that does not parse) answers what a read of anything absent answers, 404
    /// `MANIFEST_UNKNOWN` / `BLOB_UNKNOWN`, as clients and the OCI conformance suite expect;
    /// writes keep the 400 that says what is wrong with the reference.
    pub fn parse(method: &Method, path: &str) -> Option<Result<Route, ApiError>> {
        let read = method == Method::GET || method == Method::HEAD;
        let rest = path.strip_prefix("/v2")?;
        if rest.is_empty() || rest == "/" {
            return Some(Ok(Route::Base));
        }
        let rest = rest.strip_prefix('/')?;
        if rest == "_catalog" {
            return Some(Ok(Route::Catalog));
        }
        let segs: Vec<&str> = rest.split('/').collect();
        let n = segs.len();
        let at = |i: usize| segs.get(i).copied().unwrap_or_default();
        let name = |upto: usize| -> Result<RepoName, ApiError> {
            segs[..upto].join("/").parse().map_err(|e: berth_oci::name::NameError| ApiError::NameInvalid(e.to_string()))
        };
        let digest = |s: &str| -> Result<Digest, ApiError> {
            s.parse().map_err(|e: berth_oci::digest::DigestError| ApiError::DigestInvalid(e.to_string()))
        };
        let route = if n >= 3 && at(n - 2) == "tags" && at(n - 1) == "list" {
            name(n - 2).map(|name| Route::Tags { name })
        } else if n >= 3 && at(n - 2) == "manifests" {
            name(n - 2).and_then(|name| {
                let reference = at(n - 1).parse().map_err(|e: berth_oci::name::NameError| match e {
                    _ if read => ApiError::ManifestUnknown,
                    berth_oci::name::NameError::Digest(d) => ApiError::DigestInvalid(d.to_string()),
                    other => ApiError::TagInvalid(other.to_string()),
                })?;
                Ok(Route::Manifest { name, reference })
            })
        } else if n >= 3 && at(n - 2) == "blobs" && at(n - 1) == "uploads" {
            name(n - 2).map(|name| Route::StartUpload { name })
        } else if n >= 4 && at(n - 3) == "blobs" && at(n - 2) == "uploads" && at(n - 1).is_empty() {
            name(n - 3).map(|name| Route::StartUpload { name })
        } else if n >= 4 && at(n - 3) == "blobs" && at(n - 2) == "uploads" {
            name(n - 3).and_then(|name| {
                let id = at(n - 1).parse().map_err(|_| ApiError::BlobUploadUnknown)?;
                Ok(Route::Upload { name, id })
            })
        } else if n >= 3 && at(n - 2) == "blobs" {
            name(n - 2).and_then(|name| {
                let digest = digest(at(n - 1)).map_err(|e| if read { ApiError::BlobUnknown } else { e })?;
                Ok(Route::Blob { name, digest })
            })
        } else if n >= 3 && at(n - 2) == "referrers" {
            name(n - 2).and_then(|name| Ok(Route::Referrers { name, digest: digest(at(n - 1))? }))
        } else {
            Err(ApiError::RouteUnknown)
        };
        Some(route)
    }

    /// A label for logs and metrics: one per endpoint, never a repository name.
    pub fn label(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Tags { .. } => "tags",
            Route::Manifest { .. } => "manifest",
            Route::Blob { .. } => "blob",
            Route::StartUpload { .. } => "upload_start",
            Route::Upload { .. } => "upload",
            Route::Referrers { .. } => "referrers",
        }
    }

    /// What the request needs to be allowed: decided from the route and method alone,
    /// before any body is read.
    pub fn access(&self, method: &Method) -> Access {
        let repo = |name: &RepoName, action| Access::Repository { name: name.clone(), action };
        let write = method == Method::PUT || method == Method::POST || method == Method::PATCH;
        match self {
            Route::Base => Access::None,
            Route::Catalog => Access::Registry { action: Action::Catalog },
            Route::Tags { name } | Route::Referrers { name, .. } => repo(name, Action::Pull),
            Route::Manifest { name, .. } | Route::Blob { name, .. } => match *method {
                Method::DELETE => repo(name, Action::Delete),
                _ if write => repo(name, Action::Push),
                _ => repo(name, Action::Pull),
            },
            Route::StartUpload { name } | Route::Upload { name, .. } => repo(name, Action::Push),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn ok(path: &str) -> Route {
        Route::parse(&Method::GET, path).unwrap().unwrap()
    }

    #[test]
    fn parses_every_endpoint() {
        assert_eq!(ok("/v2/"), Route::Base);
        assert_eq!(ok("/v2"), Route::Base);
        assert_eq!(ok("/v2/_catalog"), Route::Catalog);
        assert_eq!(ok("/v2/a/b/tags/list").label(), "tags");
        assert!(matches!(ok("/v2/a/manifests/latest"), Route::Manifest { reference: Reference::Tag(_), .. }));
        assert!(matches!(ok(&format!("/v2/a/manifests/{D}")), Route::Manifest { reference: Reference::Digest(_), .. }));
        assert!(
            matches!(ok(&format!("/v2/a/b/c/blobs/{D}")), Route::Blob { ref name, .. } if name.as_str() == "a/b/c")
        );
        assert!(matches!(ok("/v2/a/blobs/uploads/"), Route::StartUpload { .. }));
        assert!(matches!(ok("/v2/a/blobs/uploads"), Route::StartUpload { .. }));
        assert!(matches!(ok("/v2/a/blobs/uploads/abc-123"), Route::Upload { .. }));
        assert!(matches!(ok(&format!("/v2/a/referrers/{D}")), Route::Referrers { .. }));
        // Names that look like endpoint words still parse from the right.
        assert!(
            matches!(ok("/v2/blobs/manifests/manifests/x"), Route::Manifest { ref name, .. } if name.as_str() == "blobs/manifests")
        );
        assert!(matches!(ok("/v2/tags/list/tags/list"), Route::Tags { ref name } if name.as_str() == "tags/list"));
    }

    #[test]
    fn bad_parts_get_their_error() {
        let parse = |path: &str| Route::parse(&Method::PUT, path);
        assert!(parse("/healthz").is_none());
        assert!(matches!(parse("/v2/A/tags/list"), Some(Err(ApiError::NameInvalid(_)))));
        assert!(matches!(parse("/v2/a/blobs/sha256:xyz"), Some(Err(ApiError::DigestInvalid(_)))));
        assert!(matches!(parse("/v2/a/manifests/sha256:xyz"), Some(Err(ApiError::DigestInvalid(_)))));
        assert!(matches!(parse("/v2/a/manifests/-bad"), Some(Err(ApiError::TagInvalid(_)))));
        assert!(matches!(parse("/v2/a/blobs/uploads/../x"), Some(Err(_))));
        assert!(matches!(parse("/v2/a/unknown"), Some(Err(ApiError::RouteUnknown))));
        assert!(matches!(parse("/v2/a/blobs/uploads/a.b"), Some(Err(ApiError::BlobUploadUnknown))));
    }

    #[test]
    fn reads_of_references_that_cannot_exist_are_404() {
        let get = |path: &str| Route::parse(&Method::GET, path);
        let head = |path: &str| Route::parse(&Method::HEAD, path);
        assert!(matches!(get("/v2/a/manifests/.INVALID_MANIFEST_NAME"), Some(Err(ApiError::ManifestUnknown))));
        assert!(matches!(head("/v2/a/manifests/-bad"), Some(Err(ApiError::ManifestUnknown))));
        assert!(matches!(get("/v2/a/manifests/sha256:xyz"), Some(Err(ApiError::ManifestUnknown))));
        assert!(matches!(head("/v2/a/blobs/sha256:xyz"), Some(Err(ApiError::BlobUnknown))));
        // Writes still say what is wrong; a bad repository name is a bad name either way.
        assert!(matches!(Route::parse(&Method::DELETE, "/v2/a/manifests/-bad"), Some(Err(ApiError::TagInvalid(_)))));
        assert!(matches!(get("/v2/A/manifests/latest"), Some(Err(ApiError::NameInvalid(_)))));
    }

    #[test]
    fn access_follows_route_and_method() {
        let blob = ok(&format!("/v2/a/blobs/{D}"));
        assert_eq!(blob.access(&Method::GET).scope().unwrap().to_string(), "repository:a:pull");
        assert_eq!(blob.access(&Method::DELETE).scope().unwrap().to_string(), "repository:a:delete");
        assert_eq!(
            ok("/v2/a/blobs/uploads/").access(&Method::POST).scope().unwrap().to_string(),
            "repository:a:pull,push"
        );
        assert_eq!(ok("/v2/").access(&Method::GET), Access::None);
    }
}
