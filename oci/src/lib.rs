//! Protocol vocabulary of the OCI distribution spec, shared by every other Berth crate.
//!
//! Layout:
//! - [`digest`]: [`Digest`] (`sha256:<hex>` / `sha512:<hex>`) and the resumable [`DigestHasher`].
//! - [`name`]: [`RepoName`], [`Tag`], [`Reference`] and [`UploadId`], each valid by construction.
//! - [`media`]: the manifest media types Berth understands.
//! - [`manifest`]: parsing and validating pushed manifests into [`manifest::ParsedManifest`].
//! - [`error`]: the spec's error codes ([`ErrorCode`]).
//!
//! Invariants: this crate does no I/O, is not async and knows nothing of HTTP. A value of a
//! protocol type is valid by construction: parse at the edge (`FromStr`), pass types inward.

pub mod digest;
pub mod error;
pub mod manifest;
pub mod media;
pub mod name;

pub use digest::{Algorithm, Digest, DigestHasher};
pub use error::ErrorCode;
pub use name::{Reference, RepoName, Tag, UploadId};
