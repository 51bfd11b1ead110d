//! The sealed segments of a byte range in, the plaintext of that range out: [`open_file`]
//! for a local file (large positioned reads opened in place on the blocking pool, ahead of
//! the socket), [`open_stream`] for a stream of object bytes (a remote store).

use std::ops::Range;
use std::sync::{Arc, Mutex};

use aws_lc_rs::aead::Aad;
use berth_oci::Digest;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::format::{SEALED_SEGMENT, SEGMENT, TAG, cipher_span, nonce, sealed_len, segments};
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

/// Segments one positioned read of [`open_file`] covers: 16 sealed segments, 1 MiB of
/// plaintext and its tags.
pub const SPAN_SEGMENTS: u64 = 16;
/// Spans of one [`open_file`] read and opened ahead of the one being sent.
const SPANS_AHEAD: usize = 2;
/// Span buffers one read keeps for reuse once everything handed out of them is dropped:
/// the ones in flight and the one being sent.
const SPANS_KEPT: usize = SPANS_AHEAD + 1;

/// Opens `range` of a `len`-byte blob `digest` sealed in `file` (a local object of `stored`
/// bytes), and yields exactly its plaintext. It reads [`SPAN_SEGMENTS`] segments at a time
/// with one positioned read into a buffer it owns, opens each segment in place, and hands
/// out the plaintext of each segment as a view of that buffer (no copy, no allocation per
/// segment); reading and opening run on the blocking pool, [`SPANS_AHEAD`] spans ahead of
/// the consumer, and a few buffers are reused, so one read holds a few MiB at most.
///
/// It fails closed as [`open_stream`] does: only the segments `range` touches are read, and
/// a segment that does not open (altered, moved, from another blob, wrong key), or a file
/// that ends early or runs past the blob's end, ends the stream with an error (logged) in
/// place of its whole span: nothing of that span is yielded, so damage in the first span
/// is an error before any byte.
pub fn open_file(
    file: std::fs::File,
    stored: u64,
    dek: Dek,
    runs: Vec<Run>,
    digest: Digest,
    len: u64,
    range: Range<u64>,
) -> ByteStream {
    let (segs, _) = cipher_span(&range, len);
    let reader = Arc::new(FileOpener {
        file,
        stored,
        dek,
        runs,
        final_aad: digest.to_string().into_bytes(),
        digest,
        len,
        range,
        kept: Arc::new(Kept(Mutex::new(Vec::with_capacity(SPANS_KEPT)))),
    });
    let end = segs.end;
    let spans = (segs.start..end).step_by(SPAN_SEGMENTS as usize).map(move |s| s..(s + SPAN_SEGMENTS).min(end));
    futures::stream::iter(spans)
        .map(move |span| {
            let reader = reader.clone();
            async move {
                tokio::task::spawn_blocking(move || reader.open_span(span))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            }
        })
        .buffered(SPANS_AHEAD)
        .scan(false, |failed, opened: std::io::Result<Vec<Bytes>>| {
            if *failed {
                return futures::future::ready(None);
            }
            *failed = opened.is_err();
            futures::future::ready(Some(futures::stream::iter(match opened {
                Ok(views) => views.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })))
        })
        .flatten()
        .boxed()
}

/// What [`open_file`] needs to open one span, shared by the blocking-pool tasks.
struct FileOpener {
    file: std::fs::File,
    /// The object's size on disk.
    stored: u64,
    dek: Dek,
    runs: Vec<Run>,
    digest: Digest,
    final_aad: Vec<u8>,
    /// The blob's plaintext length.
    len: u64,
    /// The plaintext range to yield.
    range: Range<u64>,
    kept: Arc<Kept>,
}

/// Span buffers waiting to be reused.
struct Kept(Mutex<Vec<Vec<u8>>>);

impl Kept {
    /// A buffer of `n` bytes: a kept one when there is one (zeroed only where it grows).
    fn take(&self, n: usize) -> Vec<u8> {
        let mut buf = self.0.lock().ok().and_then(|mut kept| kept.pop()).unwrap_or_default();
        buf.resize(n, 0);
        buf
    }

    /// Keeps `buf` for a later span, unless enough are kept.
    fn put(&self, buf: Vec<u8>) {
        if let Ok(mut kept) = self.0.lock()
            && kept.len() < SPANS_KEPT
        {
            kept.push(buf);
        }
    }
}

/// One span's buffer, the owner of the views handed out of it: when the last view is
/// dropped, the buffer goes back to the read's [`Kept`] buffers.
struct SpanBuf {
    buf: Vec<u8>,
    kept: Arc<Kept>,
}

impl AsRef<[u8]> for SpanBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for SpanBuf {
    fn drop(&mut self) {
        self.kept.put(std::mem::take(&mut self.buf));
    }
}

impl FileOpener {
    /// Reads segments `span` with one positioned read and opens them in place: the plaintext
    /// views of the range's part of them, or the error of the first one that fails.
    fn open_span(&self, span: Range<u64>) -> std::io::Result<Vec<Bytes>> {
        let last = segments(self.len) - 1;
        let sealed = sealed_len(self.len);
        let start = span.start * SEALED_SEGMENT;
        let end = (span.end * SEALED_SEGMENT).min(sealed);
        let mut buf = self.kept.take((end - start) as usize);
        let got = read_at_most(&self.file, &mut buf, start)?;
        // (offset in `buf`, plaintext offset in the blob, plaintext length) per opened segment.
        let mut opened = Vec::with_capacity((span.end - span.start) as usize);
        let mut at = 0;
        for index in span {
            let size = if index == last { (sealed - index * SEALED_SEGMENT) as usize } else { SEALED_SEGMENT as usize };
            let opens = if got - at < size {
                Err(self.fail("the stored object ends early (truncated)"))
            } else if index == last && self.stored > sealed {
                Err(self.fail("the stored object is longer than its record says"))
            } else {
                self.open_segment(index, index == last, &mut buf[at..at + size])
            };
            if let Err(e) = opens {
                self.kept.put(buf);
                return Err(e);
            }
            opened.push((at, index * SEGMENT, size - TAG));
            at += size;
        }
        let whole = Bytes::from_owner(SpanBuf { buf, kept: self.kept.clone() });
        Ok(opened
            .into_iter()
            .filter_map(|(at, plain_at, plain_len)| {
                let from = self.range.start.max(plain_at);
                let to = self.range.end.min(plain_at + plain_len as u64);
                (from < to).then(|| whole.slice(at + (from - plain_at) as usize..at + (to - plain_at) as usize))
            })
            .collect())
    }

    /// Opens segment `index` (ciphertext and tag, `sealed`) in place: its plaintext is then
    /// the first `sealed.len() - TAG` bytes.
    fn open_segment(&self, index: u64, last: bool, sealed: &mut [u8]) -> std::io::Result<()> {
        let prefix = *super::Run::prefix_of(&self.runs, index).map_err(|e| self.fail(&e.to_string()))?;
        let nonce = nonce(&prefix, index, last).map_err(|e| self.fail(&e.to_string()))?;
        let aad = if last { Aad::from(self.final_aad.as_slice()) } else { Aad::from(&[][..]) };
        match self.dek.aead().open_in_place(nonce, aad, sealed) {
            Ok(_) => Ok(()),
            Err(_) => {
                Err(self.fail(&format!("segment {index} does not open: altered, moved, or sealed with another key")))
            }
        }
    }

    fn fail(&self, what: &str) -> std::io::Error {
        crate::verify::IntegrityFailure::report(&self.digest, format!("sealed copy: {what}"))
    }
}

/// Reads from `at` until `buf` is full or the file ends; returns the bytes read.
fn read_at_most(file: &std::fs::File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
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
