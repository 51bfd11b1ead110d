//! The sealed object's shape: where each segment lies, which segments a plaintext range
//! needs, and how one segment is sealed and opened.
//!
//! ```text
//! plaintext  |<-- SEGMENT -->|<-- SEGMENT -->|<- rest ->|
//! object     | ct 0  | tag 0 | ct 1  | tag 1 | ct 2 | tag 2 |
//! nonce i    = prefix(run of i) ‖ i as u32 BE ‖ (1 if i is the last segment else 0)
//! AAD i      = the blob's digest for the last segment, empty for the others
//! ```
//! A blob of `n` bytes has `max(1, ceil(n / SEGMENT))` segments; an empty blob is one empty
//! final segment (its tag alone), so even "nothing" is authenticated.

use std::ops::Range;

use aws_lc_rs::aead::{Aad, LessSafeKey, NONCE_LEN, Nonce, Tag};

use crate::error::{Error, Result};

/// Plaintext bytes per segment.
pub const SEGMENT: u64 = 64 * 1024;
/// Bytes of a GCM tag, stored after each segment's ciphertext.
pub const TAG: usize = 16;
/// Bytes of a sealed full segment in the object.
pub const SEALED_SEGMENT: u64 = SEGMENT + TAG as u64;
/// Bytes of the random part of a segment nonce.
pub const PREFIX_LEN: usize = 7;

/// How many segments a blob of `len` bytes has.
pub fn segments(len: u64) -> u64 {
    len.div_ceil(SEGMENT).max(1)
}

/// The size of the sealed object holding `len` plaintext bytes.
pub fn sealed_len(len: u64) -> u64 {
    len + segments(len) * TAG as u64
}

/// The plaintext length of a sealed object of `sealed` bytes, when that size is possible.
pub fn plain_len(sealed: u64) -> Option<u64> {
    let full = sealed / SEALED_SEGMENT;
    let rest = sealed % SEALED_SEGMENT;
    match rest {
        0 if full > 0 => Some(full * SEGMENT),
        // An empty final segment exists only as the whole of an empty blob.
        r if r > TAG as u64 || (r == TAG as u64 && full == 0) => Some(full * SEGMENT + r - TAG as u64),
        _ => None,
    }
}

/// The segments `range` of a `len`-byte blob touches (an empty or whole read of an empty
/// blob touches its one segment), and the bytes of the object that hold them.
pub fn cipher_span(range: &Range<u64>, len: u64) -> (Range<u64>, Range<u64>) {
    let last_segment = segments(len) - 1;
    let first = (range.start / SEGMENT).min(last_segment);
    let last = if range.end > range.start { ((range.end - 1) / SEGMENT).min(last_segment) } else { first };
    let bytes = first * SEALED_SEGMENT..((last + 1) * SEALED_SEGMENT).min(sealed_len(len));
    (first..last + 1, bytes)
}

/// The nonce of segment `index`.
pub fn nonce(prefix: &[u8; PREFIX_LEN], index: u64, last: bool) -> Result<Nonce> {
    let index =
        u32::try_from(index).map_err(|_| Error::Tampered(format!("segment {index} is past the format's limit")))?;
    let mut n = [0u8; NONCE_LEN];
    n[..PREFIX_LEN].copy_from_slice(prefix);
    n[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&index.to_be_bytes());
    n[NONCE_LEN - 1] = u8::from(last);
    Ok(Nonce::assume_unique_for_key(n))
}

/// Encrypts `buf` (one segment's plaintext) in place and returns its tag.
pub fn seal_segment(key: &LessSafeKey, nonce: Nonce, aad: &[u8], buf: &mut [u8]) -> Result<Tag> {
    key.seal_in_place_separate_tag(nonce, Aad::from(aad), buf)
        .map_err(|_| Error::Key("sealing a segment failed".into()))
}

/// Decrypts `buf` (one segment's ciphertext followed by its tag) in place; the plaintext is
/// the first `buf.len() - TAG` bytes. Fails when anything about the segment is wrong.
pub fn open_segment(key: &LessSafeKey, nonce: Nonce, aad: &[u8], buf: &mut [u8]) -> Result<usize> {
    key.open_in_place(nonce, Aad::from(aad), buf).map(|p| p.len()).map_err(|_| Error::Tampered(String::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(segments(0), 1);
        assert_eq!(segments(1), 1);
        assert_eq!(segments(SEGMENT), 1);
        assert_eq!(segments(SEGMENT + 1), 2);
        assert_eq!(sealed_len(0), 16);
        assert_eq!(sealed_len(SEGMENT), SEALED_SEGMENT);
        assert_eq!(sealed_len(2 * SEGMENT + 5), 2 * SEALED_SEGMENT + 5 + 16);
        for n in [0, 1, 15, 16, 17, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT, 3 * SEGMENT + 7] {
            assert_eq!(plain_len(sealed_len(n)), Some(n), "{n}");
        }
        assert_eq!(plain_len(0), None);
        assert_eq!(plain_len(15), None);
        assert_eq!(plain_len(SEALED_SEGMENT + 3), None);
    }

    #[test]
    fn spans() {
        let len = 3 * SEGMENT + 100;
        assert_eq!(cipher_span(&(0..len), len), (0..4, 0..sealed_len(len)));
        assert_eq!(cipher_span(&(0..1), len), (0..1, 0..SEALED_SEGMENT));
        assert_eq!(cipher_span(&(SEGMENT - 1..SEGMENT + 1), len), (0..2, 0..2 * SEALED_SEGMENT));
        assert_eq!(cipher_span(&(SEGMENT..2 * SEGMENT), len), (1..2, SEALED_SEGMENT..2 * SEALED_SEGMENT));
        assert_eq!(cipher_span(&(len - 1..len), len), (3..4, 3 * SEALED_SEGMENT..sealed_len(len)));
        assert_eq!(cipher_span(&(0..0), 0), (0..1, 0..16));
        // Exactly full segments: the last one is full and final.
        assert_eq!(
            cipher_span(&(2 * SEGMENT..3 * SEGMENT), 3 * SEGMENT),
            (2..3, 2 * SEALED_SEGMENT..3 * SEALED_SEGMENT)
        );
    }

    #[test]
    fn nonces_differ_by_index_and_flag() {
        let p = [7u8; PREFIX_LEN];
        let a = nonce(&p, 1, false).unwrap();
        let b = nonce(&p, 1, true).unwrap();
        let c = nonce(&p, 2, false).unwrap();
        assert_ne!(a.as_ref(), b.as_ref());
        assert_ne!(a.as_ref(), c.as_ref());
        assert_eq!(&a.as_ref()[7..11], &1u32.to_be_bytes());
        assert!(nonce(&p, 1 << 32, false).is_err());
    }
}
