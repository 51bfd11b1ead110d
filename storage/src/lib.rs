//! Bytes and records at rest.
//!
//! - [`layout`]: the one place object paths are formed (the storage tree is drawn there).
//! - [`blob`]: [`BlobStore`], content-addressed blobs and staged upload parts over any
//!   [`object_store::ObjectStore`] (local disk, memory; S3 later).
//! - [`metadata`]: the [`MetadataStore`] trait (repositories, blob links, manifests, tags,
//!   upload sessions) and its implementations on SQLite and PostgreSQL.
//!
//! Invariants:
//! - No HTTP type appears here; request bodies arrive as streams of `Bytes`.
//! - A blob becomes visible at its content address only after its digest was verified, by an
//!   atomic create-if-absent; readers never see a partial blob.
//! - Bodies are streamed in bounded pieces, never buffered whole.

pub mod blob;
pub mod error;
pub mod layout;
pub mod metadata;

pub use blob::{BlobStore, ByteStream};
pub use error::{Error, Result};
pub use metadata::{MetadataStore, postgres::PostgresStore, sqlite::SqliteStore};
