//! Encryption at rest: envelope encryption of blobs, sealed in fixed-size segments.
//!
//! - A blob copy has its own random 256-bit data key ([`Dek`]). Its content is cut into
//!   segments of [`SEGMENT`] plaintext bytes (the last may be shorter, or empty for an empty
//!   blob), each sealed with AES-256-GCM and stored as ciphertext followed by its 16-byte tag.
//!   The object holds nothing else: no header, so a segment's place in the object is
//!   `index * (SEGMENT + TAG)`, and a `Range` read fetches and opens only the segments it
//!   touches ([`format`]).
//! - Segment nonces are `prefix (7 bytes) ‖ index (u32, big-endian) ‖ last (1 byte)`. The
//!   prefix is random per *run*: the segments one request sealed (a chunk of an upload). A
//!   blob lists its runs (`first segment index → prefix`), so no two segments ever share a
//!   nonce, even when two racing writers seal the same index of one upload. The index binds
//!   order, the last flag binds the end: reordered, dropped, truncated or extended segment
//!   lists fail to open. The final segment also binds the blob's digest as associated data.
//! - The data key is wrapped (AES-256-GCM) by a key-encryption key ([`keyring::Kek`]), with
//!   the digest and key name as associated data, and stored in the metadata store with the
//!   runs ([`SealedBlob`]), never in the object. Rotating a KEK re-wraps data keys only.
//! - While an upload is in progress its data key, runs, running hash state and the last,
//!   not yet sealed segment (held back until the end is known) live in the upload session,
//!   the last two sealed under the data key ([`UploadSealing`]).
//! - Small secrets the metadata store keeps (the token signing key) are sealed the same way,
//!   a data key each, wrapped by a KEK ([`secret`]).

pub mod format;
pub mod keyring;
pub mod open;
pub mod record;
pub mod seal;
pub mod secret;

pub use format::{SEGMENT, TAG};
pub use keyring::{Kek, KeyRing};
pub use open::{open_file, open_stream};
pub use record::{Run, SealedBlob, UploadSealing};
pub use seal::Sealer;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::error::{Error, Result};

/// Bytes of a key (data key or key-encryption key).
pub const KEY_LEN: usize = 32;

/// A blob copy's data key. Never printed, never stored unwrapped.
#[derive(Clone)]
pub struct Dek {
    key: std::sync::Arc<LessSafeKey>,
    raw: [u8; KEY_LEN],
}

impl std::fmt::Debug for Dek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dek(..)")
    }
}

impl Dek {
    /// A fresh random data key.
    pub fn generate() -> Result<Dek> {
        let mut raw = [0u8; KEY_LEN];
        fill_random(&mut raw)?;
        Dek::from_raw(raw)
    }

    pub(crate) fn from_raw(raw: [u8; KEY_LEN]) -> Result<Dek> {
        Ok(Dek { key: std::sync::Arc::new(aead_key(&raw)?), raw })
    }

    pub(crate) fn raw(&self) -> &[u8; KEY_LEN] {
        &self.raw
    }

    pub(crate) fn aead(&self) -> &LessSafeKey {
        &self.key
    }

    /// Seals `plain` under a random nonce: `nonce ‖ ciphertext ‖ tag`. For small secrets
    /// (an upload's held-back tail and hash state), never for segments.
    pub fn seal_small(&self, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        seal_random_nonce(&self.key, plain, aad)
    }

    /// Opens what [`Dek::seal_small`] sealed.
    pub fn open_small(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        open_random_nonce(&self.key, sealed, aad)
    }
}

pub(crate) fn aead_key(raw: &[u8; KEY_LEN]) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, raw)
        .map(LessSafeKey::new)
        .map_err(|_| Error::Key("AES-256-GCM rejected the key".into()))
}

/// Fills `buf` from the system's secure random source.
pub fn fill_random(buf: &mut [u8]) -> Result<()> {
    aws_lc_rs::rand::fill(buf).map_err(|_| Error::Key("the system random source failed".into()))
}

pub(crate) fn seal_random_nonce(key: &LessSafeKey, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + TAG);
    out.extend_from_slice(&nonce);
    let mut body = plain.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
        .map_err(|_| Error::Key("sealing failed".into()))?;
    out.extend_from_slice(&body);
    Ok(out)
}

pub(crate) fn open_random_nonce(key: &LessSafeKey, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() < NONCE_LEN + TAG {
        return Err(Error::Tampered("a sealed value is too short".into()));
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Error::Tampered("bad nonce".into()))?;
    let mut body = body.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(aad), &mut body)
        .map_err(|_| Error::Tampered("a sealed value does not open with its key".into()))?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_round_trip_and_bind_their_context() {
        let dek = Dek::generate().unwrap();
        let sealed = dek.seal_small(b"tail bytes", b"ctx-1").unwrap();
        assert_eq!(dek.open_small(&sealed, b"ctx-1").unwrap(), b"tail bytes");
        assert!(dek.open_small(&sealed, b"ctx-2").is_err());
        let other = Dek::generate().unwrap();
        assert!(other.open_small(&sealed, b"ctx-1").is_err());
        let mut flipped = sealed.clone();
        flipped[NONCE_LEN] ^= 1;
        assert!(dek.open_small(&flipped, b"ctx-1").is_err());
        assert!(dek.open_small(&sealed[..10], b"ctx-1").is_err());
        assert_eq!(format!("{dek:?}"), "Dek(..)");
    }
}
