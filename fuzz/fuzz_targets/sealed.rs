//! The encrypted segment reader: `open_stream` on arbitrary object bytes and records, with
//! a real data key (wrapped by the fixture KEK, as the metadata store holds it). It must
//! fail closed: an error, or exactly the plaintext of the range asked for, never a panic.
//! See `berth_fuzz::SealedInput` for the input format.
#![no_main]

use std::sync::LazyLock;

use berth_fuzz::{KEY_NAME, SealedInput, kek};
use berth_storage::crypt::record::blob_wrap_context;
use berth_storage::crypt::{Kek, Run, open_stream};
use bytes::Bytes;
use futures::executor::block_on;
use futures::{StreamExt, stream};
use libfuzzer_sys::fuzz_target;

static KEK: LazyLock<Kek> = LazyLock::new(kek);

fuzz_target!(|data: &[u8]| {
    let Some(input) = SealedInput::decode(data) else { return };
    let Ok(dek) = KEK.unwrap(input.wrapped, &blob_wrap_context(&input.digest, KEY_NAME)) else { return };
    let Ok(runs) = Run::decode(input.runs) else { return };
    let pieces: Vec<std::io::Result<Bytes>> =
        input.pieces().into_iter().map(|p| Ok(Bytes::copy_from_slice(p))).collect();
    let range = input.start..input.end;
    let mut out = open_stream(stream::iter(pieces).boxed(), dek, runs, input.digest.clone(), input.len, range.clone());
    let mut plain = Vec::new();
    let complete = block_on(async {
        while let Some(piece) = out.next().await {
            match piece {
                Ok(bytes) => plain.extend_from_slice(&bytes),
                Err(_) => return false,
            }
        }
        true
    });
    // Never more than the range; and a stream that ends without an error gave all of it.
    assert!(plain.len() as u64 <= range.end - range.start, "{} bytes for {range:?}", plain.len());
    if complete {
        assert_eq!(plain.len() as u64, range.end - range.start, "a short read of {range:?} ended without an error");
    }
});
