//! [`ApiError`]: every way a registry request can fail, in protocol terms.
//!
//! The service layer returns these; `http::error` is the one table that turns each into an
//! OCI error code, an HTTP status and the JSON body.

use berth_oci::Digest;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("blob unknown to registry")]
    BlobUnknown,
    #[error("blob upload unknown to registry")]
    BlobUploadUnknown,
    #[error("blob upload invalid: {0}")]
    BlobUploadInvalid(String),
    #[error("{0}")]
    DigestInvalid(String),
    #[error("manifest references {0}, which is not in this repository")]
    ManifestBlobUnknown(Digest),
    #[error("{0}")]
    ManifestInvalid(String),
    #[error("manifest unknown to registry")]
    ManifestUnknown,
    #[error("manifest is larger than the {limit} bytes allowed")]
    ManifestTooLarge { limit: usize },
    #[error("{0}")]
    NameInvalid(String),
    #[error("repository name not known to registry")]
    NameUnknown,
    /// A push to a repository that does not exist, which this registry does not create
    /// (`registry.create_on_push = false` and no template covers it); the message says how.
    #[error("{0}")]
    NotCreatedOnPush(String),
    #[error("{0}")]
    SizeInvalid(String),
    #[error("{0}")]
    TagInvalid(String),
    /// A push that would move a tag the repository holds immutable (ECR's sentence, which
    /// docker shows as it is).
    #[error(
        "The image tag '{tag}' already exists in the '{repo}' repository and cannot be overwritten because the repository is immutable."
    )]
    TagImmutable { repo: berth_oci::RepoName, tag: berth_oci::Tag },
    /// A blob `Range` that does not overlap the blob.
    #[error("requested range is not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    /// A chunk that does not start where the upload stands (the client must resume).
    #[error("chunk must start at byte {offset} of the upload")]
    ChunkOutOfOrder { offset: u64, location: String, upload_id: String },
    #[error("{0}")]
    PaginationInvalid(String),
    /// Switched off by configuration, or not a method of this endpoint.
    #[error("{0}")]
    Unsupported(String),
    #[error("no such endpoint")]
    RouteUnknown,
    /// No credentials, or wrong ones: `challenge` is the `WWW-Authenticate` value to send.
    #[error("{message}")]
    Unauthorized { message: String, challenge: Option<String> },
    /// Credentials are fine but do not allow this. With a challenge (a Bearer token that
    /// lacks the scope) the answer is 401 so the client fetches a token for it; else 403.
    #[error("{message}")]
    Denied { message: String, challenge: Option<String> },
    /// Too many failed sign-ins from this address or for this user.
    #[error("too many failed sign-ins: retry in {retry_after} s")]
    TooManyRequests { retry_after: u64 },
    /// A bound on what one client or repository may hold was reached (open upload
    /// sessions); the message names the bound and what to do.
    #[error("{0}")]
    LimitReached(String),
    /// A push that would pass a quota; the message names the quota, its limit and the use.
    #[error("{0}")]
    QuotaExceeded(String),
    /// A request to the token service or the admin API that makes no sense.
    #[error("{0}")]
    Invalid(String),
    /// The admin API: it exists already.
    #[error("{0}")]
    Conflict(String),
    /// A repository delete without `force` while the repository holds manifests. The fix is
    /// a switch each front end names in its own terms (`force=true`, `--force`), so the
    /// message here names none: see [`ApiError::hint`].
    #[error("repository {repo} holds {manifests} manifest(s): delete them first, or delete the repository with them")]
    RepositoryNotEmpty { repo: berth_oci::RepoName, manifests: u64 },
    /// The admin API: no such user, key or policy.
    #[error("{0}")]
    NotFound(String),
    /// Task definition images that do not pin, each with its own code.
    #[error("{} image(s) could not be pinned: {}", .0.len(), .0.iter().map(|u| u.message.as_str()).collect::<Vec<_>>().join("; "))]
    ImagesUnresolved(Vec<crate::service::taskdef::Unresolved>),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A pull-through cache could not get what was asked from its upstream registry, and
    /// holds nothing to serve instead (the message says why: down, refused, wrong answer).
    #[error("upstream registry: {0}")]
    Upstream(String),
    /// A request body in a transfer coding other than `chunked` (hyper undoes `chunked`
    /// only and passes the others on, e.g. the `gzip` of `gzip, chunked`).
    #[error("transfer coding {0:?} is not supported; only chunked is")]
    TransferCodingUnsupported(String),
    /// A bug or a failure of something underneath; the detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<berth_storage::Error> for ApiError {
    fn from(e: berth_storage::Error) -> Self {
        use berth_storage::Error as S;
        match e {
            S::MissingReference(d) => ApiError::ManifestBlobUnknown(d),
            S::ReferenceSize { digest, declared, actual } => ApiError::ManifestInvalid(format!(
                "descriptor of {digest} says {declared} bytes, but the blob has {actual}"
            )),
            S::Body(e) => ApiError::BlobUploadInvalid(format!("request body could not be read: {e}")),
            S::Limit(message) => ApiError::LimitReached(message),
            S::TagImmutable { repo, tag } => ApiError::TagImmutable { repo, tag },
            // The service decides again a few times first.
            S::MutabilityChanged(repo) => ApiError::Unavailable(format!(
                "the tag mutability of repository {repo} keeps changing during this push; push again"
            )),
            // Writers wait for the collector before linking; this is the backstop.
            S::Doomed(d) => {
                ApiError::Unavailable(format!("blob {d} is being garbage-collected; push it again in a minute"))
            }
            S::NotFound
            | S::Conflict
            | S::Corrupt(_)
            | S::Io(_)
            | S::ObjectStore(_)
            | S::S3(_)
            | S::Settings(_)
            | S::Database(_)
            | S::Postgres(_)
            | S::PostgresSettings(_)
            | S::Task(_)
            | S::Key(_)
            | S::Tampered(_) => ApiError::Internal(e.to_string()),
        }
    }
}

/// A switch that overrides a refusal: the HTTP API and the `berth` command each name it
/// in their own terms (`force=true` / `--force`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Override {
    /// Delete a repository with the manifests it holds.
    Force,
    /// Leave task-definition images on other registries as they are.
    KeepForeign,
}

impl ApiError {
    /// The switch that would have made this request succeed, if there is one (for task
    /// definitions, each image has its own: [`crate::service::taskdef::Unresolved::hint`]).
    pub fn hint(&self) -> Option<Override> {
        match self {
            ApiError::RepositoryNotEmpty { .. } => Some(Override::Force),
            _ => None,
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
