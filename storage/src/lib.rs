//! Bytes and records at rest.
//!
//! - [`layout`]: the one place object paths are formed (the storage tree is drawn there).
//! - [`blob`]: [`BlobStore`], content-addressed blobs and staged upload parts over any
//!   [`object_store::ObjectStore`] (local disk, memory, S3).
//! - [`s3`]: what S3 needs beyond object_store: multipart parts sized to S3's limits,
//!   server-side joins of staged parts, conditional completion, cleanup of unfinished uploads.
//! - [`crypt`]: encryption at rest: segment format, sealing and opening streams, the key
//!   ring of key-encryption keys, and the records kept about sealed content.
//! - [`metadata`]: the [`MetadataStore`] trait (repositories, blob links, manifests, tags,
//!   upload sessions) and its implementations on SQLite and PostgreSQL (over TLS as the URL's
//!   libpq `sslmode` asks: `metadata::postgres_url`, `metadata::postgres_tls`).
//! - [`verify`]: whole plaintext reads checked against their digest as they stream, the
//!   last piece held back until it checks.
//! - [`local_read`]: `BlobStore::open_local`, a plaintext blob's file on the local disk for a
//!   reader that sends it itself (zero-copy pulls).
//!
//! Invariants:
//! - No HTTP type appears here; request bodies arrive as streams of `Bytes`.
//! - A blob becomes visible at its content address only after its digest was verified, by an
//!   atomic create-if-absent; readers never see a partial blob.
//! - Bodies are streamed in bounded pieces, never buffered whole.
//! - A whole read (`read`, `read_sealed`) never yields all of a blob's bytes unless they hash
//!   to its digest (plaintext) or every segment opened (sealed). `read_stored`, ranges of
//!   plaintext and `open_local` give the bytes as stored, unchecked.

pub mod blob;
pub mod crypt;
pub mod error;
pub mod layout;
pub mod local_read;
pub mod metadata;
pub mod s3;
pub mod verify;

pub use blob::{BlobStore, ByteStream, Inbound, Target, Written};
pub use error::{Error, Result};
pub use local_read::LocalBlob;
pub use metadata::{MetadataStore, postgres::PostgresStore, sqlite::SqliteStore};
pub use verify::IntegrityFailure;
