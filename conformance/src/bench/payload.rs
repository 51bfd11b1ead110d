//! Blob content for the benchmark: fresh on every push, cheap to make.
//!
//! One buffer of random bytes is drawn once, as large as the biggest blob of
//! the run. A blob of `len` bytes is a fresh 16-byte head (a run nonce and a
//! counter) followed by bytes `16..len` of that buffer, shared, never copied.
//! So no two pushes carry the same digest (nothing dedupes, in this run or
//! against an earlier one), yet making a 1 GiB blob costs only its hashing,
//! which [`PayloadSource::fresh`] does before any request is timed: hashing is
//! the client's work, not the server's.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::BenchError;

/// How many leading bytes of each blob are unique to it.
pub const HEAD_LEN: usize = 16;

/// SplitMix64: a tiny, fast, seedable generator. Good enough to fill buffers
/// with incompressible bytes and to pick range offsets; not for secrets.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator seeded from a fresh v4 UUID.
    pub fn from_entropy() -> Self {
        let (hi, lo) = uuid::Uuid::new_v4().as_u64_pair();
        Self(hi ^ lo.rotate_left(17))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (0 when `bound` is 0). The modulo bias is
    /// irrelevant for picking offsets.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 { 0 } else { self.next_u64() % bound }
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// Hands out fresh blobs of up to [`capacity`](Self::capacity) bytes.
#[derive(Debug)]
pub struct PayloadSource {
    data: Bytes,
    nonce: u64,
    counter: AtomicU64,
}

impl PayloadSource {
    /// Draws `capacity` random bytes (about 1 s per GiB in a release build).
    pub fn new(capacity: usize) -> Self {
        let mut rng = SplitMix64::from_entropy();
        let mut data = vec![0; capacity];
        rng.fill(&mut data);
        Self { data: Bytes::from(data), nonce: rng.next_u64(), counter: AtomicU64::new(0) }
    }

    /// The largest blob this source can make.
    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    /// A blob of `len` bytes no other call returns, already hashed.
    pub fn fresh(&self, len: u64) -> Result<Payload, BenchError> {
        let len = usize::try_from(len).map_err(|_| BenchError::new(format!("blob of {len} bytes is too large")))?;
        if len > self.data.len() {
            return Err(BenchError::new(format!(
                "blob of {len} bytes is larger than the payload buffer ({} bytes)",
                self.data.len()
            )));
        }
        let count = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut head = [0u8; HEAD_LEN];
        head[..8].copy_from_slice(&self.nonce.to_le_bytes());
        head[8..].copy_from_slice(&count.to_le_bytes());
        let head_len = len.min(HEAD_LEN);
        let head = Bytes::copy_from_slice(&head[..head_len]);
        let tail = self.data.slice(head_len..len);
        Ok(Payload::from_parts(head, tail))
    }
}

/// A blob: its bytes (a unique head and a shared tail) and its digest.
#[derive(Debug, Clone)]
pub struct Payload {
    head: Bytes,
    tail: Bytes,
    digest: String,
}

impl Payload {
    /// A blob of exactly these bytes (configs, manifests).
    pub fn from_bytes(data: impl Into<Bytes>) -> Self {
        Self::from_parts(Bytes::new(), data.into())
    }

    fn from_parts(head: Bytes, tail: Bytes) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(&head);
        hasher.update(&tail);
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        Self { head, tail, digest }
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        (self.head.len() + self.tail.len()) as u64
    }

    /// Whether the blob is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `sha256:<hex>` of the bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The bytes in `start..end` as zero-copy segments (empty ones left out).
    pub fn segments(&self, start: u64, end: u64) -> Vec<Bytes> {
        let end = end.min(self.len());
        let start = start.min(end);
        let (start, end) = (start as usize, end as usize);
        let head_len = self.head.len();
        let mut out = Vec::with_capacity(2);
        if start < head_len {
            out.push(self.head.slice(start..end.min(head_len)));
        }
        if end > head_len {
            out.push(self.tail.slice(start.max(head_len) - head_len..end - head_len));
        }
        out.retain(|b| !b.is_empty());
        out
    }

    /// The whole blob as a request body. Senders set `Content-Length`
    /// themselves: a body made of two segments has no size of its own.
    pub fn body(&self) -> reqwest::Body {
        self.range_body(0, self.len())
    }

    /// The whole blob as a stream of unknown length (sent with
    /// `Transfer-Encoding: chunked`, as docker sends its one PATCH).
    pub fn stream_body(&self) -> reqwest::Body {
        let segments = self.segments(0, self.len());
        reqwest::Body::wrap_stream(futures::stream::iter(segments.into_iter().map(Ok::<_, std::io::Error>)))
    }

    /// Bytes `start..end` as a request body (see [`Payload::body`]).
    pub fn range_body(&self, start: u64, end: u64) -> reqwest::Body {
        let mut segments = self.segments(start, end);
        match segments.len() {
            0 => reqwest::Body::from(Bytes::new()),
            1 => reqwest::Body::from(segments.remove(0)),
            _ => reqwest::Body::wrap_stream(futures::stream::iter(segments.into_iter().map(Ok::<_, std::io::Error>))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn concat(segments: &[Bytes]) -> Vec<u8> {
        segments.iter().flat_map(|b| b.iter().copied()).collect()
    }

    #[test]
    fn fresh_payloads_differ_and_hash_what_they_hold() -> Result<(), BenchError> {
        let source = PayloadSource::new(4096);
        let a = source.fresh(4096)?;
        let b = source.fresh(4096)?;
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.len(), 4096);
        let bytes = concat(&a.segments(0, a.len()));
        assert_eq!(bytes.len(), 4096);
        assert_eq!(a.digest(), crate::content::sha256(&bytes));
        // Same tail, different head.
        assert_eq!(bytes[HEAD_LEN..], concat(&b.segments(0, b.len()))[HEAD_LEN..]);
        Ok(())
    }

    #[test]
    fn tiny_and_oversized_payloads() -> Result<(), BenchError> {
        let source = PayloadSource::new(64);
        let tiny = source.fresh(5)?;
        assert_eq!(tiny.len(), 5);
        assert_eq!(tiny.digest(), crate::content::sha256(&concat(&tiny.segments(0, 5))));
        let empty = source.fresh(0)?;
        assert!(empty.is_empty());
        assert_eq!(empty.digest(), crate::content::ZERO_BYTES_DIGEST);
        assert!(source.fresh(65).is_err());
        Ok(())
    }

    #[test]
    fn segments_cover_any_range_exactly() -> Result<(), BenchError> {
        let source = PayloadSource::new(100);
        let p = source.fresh(100)?;
        let all = concat(&p.segments(0, 100));
        for (start, end) in [(0, 16), (0, 10), (10, 20), (16, 100), (20, 30), (99, 100), (50, 50), (90, 500)] {
            let got = concat(&p.segments(start, end));
            let want = &all[start as usize..(end as usize).min(100)];
            assert_eq!(got, want, "{start}..{end}");
        }
        assert!(p.segments(50, 50).is_empty());
        assert_eq!(Payload::from_bytes(b"{}".to_vec()).digest(), crate::content::EMPTY_JSON_DIGEST);
        Ok(())
    }

    #[test]
    fn splitmix_is_deterministic_and_bounded() {
        let mut a = SplitMix64::new(1);
        let mut b = SplitMix64::new(1);
        assert_eq!(a.next_u64(), b.next_u64());
        assert_ne!(a.next_u64(), a.next_u64());
        assert!((0..1000).all(|_| a.below(7) < 7));
        assert_eq!(a.below(0), 0);
        let mut buf = [0u8; 13];
        a.fill(&mut buf);
        assert!(buf.iter().any(|&x| x != 0));
    }
}
