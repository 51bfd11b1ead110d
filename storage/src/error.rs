//! The storage crate's error type.

/// What can go wrong at rest. The registry maps each variant to a protocol error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object or record does not exist.
    #[error("not found")]
    NotFound,
    /// A manifest references content that is not in the repository.
    #[error("manifest references {0}, which is not in the repository")]
    MissingReference(berth_oci::Digest),
    /// A referenced blob's size differs from what the manifest says.
    #[error("manifest says {digest} has {declared} bytes, the repository has {actual}")]
    ReferenceSize { digest: berth_oci::Digest, declared: u64, actual: u64 },
    /// The request body failed while it was being read (client went away, timeout...).
    #[error("request body: {0}")]
    Body(#[source] std::io::Error),
    /// A push would move a tag its repository holds immutable to another manifest (ECR's
    /// words, as docker shows them).
    #[error(
        "The image tag '{tag}' already exists in the '{repo}' repository and cannot be overwritten because the repository is immutable."
    )]
    TagImmutable { repo: berth_oci::RepoName, tag: berth_oci::Tag },
    /// A push decided which tags may move under a tag mutability setting that changed before
    /// it was written; the caller reads the setting again and retries.
    #[error("the tag mutability of repository {0} changed during the push")]
    MutabilityChanged(berth_oci::RepoName),
    /// A concurrent change won; the caller's view is stale.
    #[error("conflicting concurrent change")]
    Conflict,
    /// The garbage collector is deleting this digest's objects: nothing may link it until it
    /// is done (then the writer stores the content afresh).
    #[error("blob {0} is being garbage-collected")]
    Doomed(berth_oci::Digest),
    /// A bound on what one client may hold was reached (open upload sessions...); the
    /// message names the bound and what to do.
    #[error("{0}")]
    Limit(String),
    /// Stored data is not what it should be.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    #[error("local file: {0}")]
    Io(#[source] std::io::Error),
    /// An S3 request Berth makes itself (multipart copy, listing multipart uploads) failed.
    #[error("S3: {0}")]
    S3(String),
    /// A key is missing, malformed or unusable.
    #[error("encryption key: {0}")]
    Key(String),
    /// Sealed data does not open: altered, truncated, moved, or the wrong key.
    #[error("sealed data failed its integrity check: {0}")]
    Tampered(String),
    /// The storage settings cannot work.
    #[error("storage settings: {0}")]
    Settings(String),
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("metadata database: {0}")]
    Database(#[from] rusqlite::Error),
    /// Shown with its causes (tokio-postgres keeps them out of its `Display`: "db error",
    /// "error performing TLS handshake"), so it is not also a `source`.
    #[error("metadata database: {}", Causes(.0))]
    Postgres(tokio_postgres::Error),
    /// `metadata.url` cannot work as given (a bad `sslmode`, a CA file that is not there); the
    /// message names the parameter and the fix.
    #[error("metadata database URL: {0}")]
    PostgresSettings(String),
    #[error("metadata store task failed: {0}")]
    Task(String),
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Postgres(e)
    }
}

/// An error followed by its chain of sources, `: `-separated.
pub struct Causes<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
