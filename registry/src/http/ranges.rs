//! The byte-range header parsers, in one public place so that the fuzz targets (`fuzz/`)
//! reach them without making the route modules public: `Range` on blob reads (a 416 or the
//! span to serve) and `Content-Range` on chunk uploads. The parsers live beside their
//! handlers; this module only re-exports them.

pub use super::blobs::requested_range;
pub use crate::service::uploads::ChunkRange;
