//! [`open_stream`]: the sealed segments of a byte range in, the plaintext of that range out.

use std::ops::Range;

use aws_lc_rs::aead::Aad;
use berth_oci::Digest;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::format::{SEALED_SEGMENT, SEGMENT, cipher_span, nonce, sealed_len, segments};
use super::{Dek, Run};
use crate::blob::ByteStream;

/// Opens `ciphertext`, which must be the object bytes [`cipher_span`] names for `range` of
/// a `len`-byte blob `digest`, and yields exactly the plaintext of `range`. Any segment
/// that does not open (altered, moved, from another blob, cut short, wrong key) ends the
/// stream with an error before a byte of it is yielded, and is logged.
pub fn open_stream(
    ciphertext: ByteStream,
    dek: Dek,
    runs: Vec<Run>,
    digest: Digest,
    len: u64,
    range: Range<u64>,
) -> ByteStream {
    let (segs, bytes) = cipher_span(&range, len);
    let opener = Opener {
        dek,
        runs,
        final_aad: digest.to_string().into_bytes(),
        digest,
        last: segments(len) - 1,
        final_size: (sealed_len(len) - (segments(len) - 1) * SEALED_SEGMENT) as usize,
        next: segs.start,
        skip: (range.start - segs.start * SEGMENT) as usize,
        remaining: range.end - range.start,
        cipher_left: bytes.end - bytes.start,
        pending: BytesMut::new(),
        failed: false,
    };
    futures::stream::unfold((ciphertext, opener), |(mut input, mut opener)| async move {
        if opener.failed {
            return None;
        }
        loop {
            match input.next().await {
                Some(Ok(piece)) => match opener.feed(piece) {
                    Ok(out) if out.is_empty() => continue,
                    Ok(out) => return Some((Ok(out), (input, opener))),
                    Err(e) => {
                        opener.failed = true;
                        return Some((Err(e), (input, opener)));
                    }
                },
                Some(Err(e)) => {
                    opener.failed = true;
                    return Some((Err(e), (input, opener)));
                }
                None if opener.remaining == 0 && opener.cipher_left == 0 && opener.pending.is_empty() => return None,
                None => {
                    opener.failed = true;
                    let e = opener.fail("the stored object ends early (truncated)");
                    return Some((Err(e), (input, opener)));
                }
            }
        }
    })
    .flat_map(|r: std::io::Result<Vec<Bytes>>| match r {
        Ok(pieces) => futures::stream::iter(pieces.into_iter().map(Ok).collect::<Vec<_>>()),
        Err(e) => futures::stream::iter(vec![Err(e)]),
    })
    .boxed()
}

struct Opener {
    dek: Dek,
    runs: Vec<Run>,
    digest: Digest,
    final_aad: Vec<u8>,
    /// Index of the blob's last segment and its sealed size.
    last: u64,
    final_size: usize,
    /// Index of the segment the pending bytes belong to.
    next: u64,
    /// Plaintext bytes of the first opened segment that precede the range.
    skip: usize,
    /// Plaintext bytes of the range not yet yielded.
    remaining: u64,
    /// Ciphertext bytes still expected.
    cipher_left: u64,
    pending: BytesMut,
    failed: bool,
}

impl Opener {
    fn segment_size(&self) -> usize {
        if self.next == self.last { self.final_size } else { SEALED_SEGMENT as usize }
    }

    /// Opens the segments `piece` completes, in place: the plaintext of each is moved down
    /// over the tags before it (no copy of the piece, no zeroed buffers). Returns the
    /// plaintext pieces, trimmed to the range.
    fn feed(&mut self, piece: Bytes) -> std::io::Result<Vec<Bytes>> {
        if piece.len() as u64 > self.cipher_left {
            return Err(self.fail("the stored object is longer than its record says"));
        }
        self.cipher_left -= piece.len() as u64;
        let mut out = Vec::with_capacity(2);
        let mut piece = piece.try_into_mut().unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        if !self.pending.is_empty() {
            let want = self.segment_size() - self.pending.len();
            let head = piece.split_to(want.min(piece.len()));
            self.pending.extend_from_slice(&head);
            if self.pending.len() == self.segment_size() {
                let mut sealed = std::mem::take(&mut self.pending);
                let n = self.open_at(&mut sealed, 0, 0)?;
                sealed.truncate(n);
                out.push(sealed.freeze());
            }
        }
        let (mut read, mut write) = (0, 0);
        while piece.len() - read >= self.segment_size() && self.next <= self.last {
            let size = self.segment_size();
            write += self.open_at(&mut piece[..read + size], read, write)?;
            read += size;
        }
        self.pending.extend_from_slice(&piece[read..]);
        piece.truncate(write);
        out.push(piece.freeze());
        let mut trimmed = Vec::with_capacity(out.len());
        for mut p in out {
            if self.skip > 0 {
                let skip = self.skip.min(p.len());
                p = p.slice(skip..);
                self.skip -= skip;
            }
            if p.len() as u64 > self.remaining {
                p.truncate(self.remaining as usize);
            }
            self.remaining -= p.len() as u64;
            if !p.is_empty() {
                trimmed.push(p);
            }
        }
        Ok(trimmed)
    }

    /// Opens the segment at `buf[read..]` (which ends where the segment ends) and moves its
    /// plaintext to `buf[write..]`. Returns the plaintext length.
    fn open_at(&mut self, buf: &mut [u8], read: usize, write: usize) -> std::io::Result<usize> {
        let index = self.next;
        let last = index == self.last;
        let prefix = *super::Run::prefix_of(&self.runs, index).map_err(|e| self.fail(&e.to_string()))?;
        let nonce = nonce(&prefix, index, last).map_err(|e| self.fail(&e.to_string()))?;
        let aad = if last { Aad::from(self.final_aad.as_slice()) } else { Aad::from(&[][..]) };
        match self.dek.aead().open_within(nonce, aad, &mut buf[write..], read - write..) {
            Ok(plain) => {
                self.next += 1;
                Ok(plain.len())
            }
            Err(_) => {
                Err(self.fail(&format!("segment {index} does not open: altered, moved, or sealed with another key")))
            }
        }
    }

    fn fail(&self, what: &str) -> std::io::Error {
        crate::verify::IntegrityFailure::report(&self.digest, format!("sealed copy: {what}"))
    }
}
