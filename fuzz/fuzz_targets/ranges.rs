//! The byte-range headers: `Range` on a blob read (`requested_range`) and `Content-Range`
//! on a chunk upload (`ChunkRange::parse`). Input: the blob size (8 bytes, big-endian),
//! then the header value.
#![no_main]

use berth_fuzz::ranges_decode;
use berth_registry::http::ranges::{ChunkRange, requested_range};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((size, header)) = ranges_decode(data) else { return };
    // A range to serve lies inside the blob and is not empty; anything else is the whole
    // blob (`None`) or a 416.
    if let Ok(Some(r)) = requested_range(Some(header), size) {
        assert!(r.start < r.end && r.end <= size, "Range {header:?} on {size} bytes gave {r:?}");
    }
    let _ = requested_range(None, size);
    // A chunk's range is ordered; the upload handler checks its start against the offset.
    if let Some(r) = ChunkRange::parse(header) {
        assert!(r.start <= r.end, "Content-Range {header:?} gave {}-{}", r.start, r.end);
    }
});
