//! Content digests (`algorithm:hex`) and the hasher that produces them.
//!
//! Berth accepts the two algorithms the spec registers, `sha256` (the default) and `sha512`.
//! The hasher's running state can be saved and restored ([`DigestHasher::save_state`]), so a
//! chunked upload can continue in another process without re-reading what came before.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest as _, Sha256, Sha512};

/// A digest algorithm Berth can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex-encoded value.
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

impl FromStr for Algorithm {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other if is_algorithm_grammar(other) => Err(DigestError::UnsupportedAlgorithm(other.into())),
            _ => Err(DigestError::Malformed),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a digest Berth can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest is not of the form algorithm:hex")]
    Malformed,
    #[error("digest algorithm {0:?} is not supported (use sha256 or sha512)")]
    UnsupportedAlgorithm(String),
    #[error("digest value must be {expected} lower-case hex characters")]
    BadEncoding { expected: usize },
}

/// A validated content digest, e.g. `sha256:e3b0c442...`. Displayed in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded part after the colon.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest of `bytes` under `algorithm`.
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = DigestHasher::new(algorithm);
        h.update(bytes);
        h.finish()
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, bytes)
    }
}

/// `algorithm` per the spec grammar: `[a-z0-9]+([+._-][a-z0-9]+)*`.
fn is_algorithm_grammar(s: &str) -> bool {
    !s.is_empty()
        && s.split(['+', '.', '_', '-'])
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, hex) = s.split_once(':').ok_or(DigestError::Malformed)?;
        let algorithm: Algorithm = alg.parse()?;
        let well_formed =
            hex.len() == algorithm.hex_len() && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !well_formed {
            return Err(DigestError::BadEncoding { expected: algorithm.hex_len() });
        }
        Ok(Digest { algorithm, hex: hex.to_owned() })
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl fmt::Debug for DigestHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DigestHasher({})", self.algorithm())
    }
}

/// A running hash of one of the supported algorithms.
#[derive(Clone)]
pub enum DigestHasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

/// Tag stored in front of a saved state, so a format change after an upgrade is detected
/// (the byte layout is an implementation detail of the `digest` crate).
const STATE_FORMAT_SHA256: &[u8] = b"sha2-0.11/sha256/v1:";
const STATE_FORMAT_SHA512: &[u8] = b"sha2-0.11/sha512/v1:";

/// A saved hasher state could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("saved hash state is not readable by this version")]
pub struct StateError;

impl DigestHasher {
    pub fn new(algorithm: Algorithm) -> DigestHasher {
        match algorithm {
            Algorithm::Sha256 => DigestHasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => DigestHasher::Sha512(Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            DigestHasher::Sha256(_) => Algorithm::Sha256,
            DigestHasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            DigestHasher::Sha256(h) => h.update(bytes),
            DigestHasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, out) = match self {
            DigestHasher::Sha256(h) => (Algorithm::Sha256, h.finalize().to_vec()),
            DigestHasher::Sha512(h) => (Algorithm::Sha512, h.finalize().to_vec()),
        };
        Digest { algorithm, hex: hex::encode(out) }
    }

    /// The running state as bytes (about 100 bytes), to persist with an upload session.
    pub fn save_state(&self) -> Vec<u8> {
        let (tag, state) = match self {
            DigestHasher::Sha256(h) => (STATE_FORMAT_SHA256, h.serialize().to_vec()),
            DigestHasher::Sha512(h) => (STATE_FORMAT_SHA512, h.serialize().to_vec()),
        };
        [tag, state.as_slice()].concat()
    }

    /// Restores a state written by [`DigestHasher::save_state`].
    pub fn restore_state(bytes: &[u8]) -> Result<DigestHasher, StateError> {
        if let Some(rest) = bytes.strip_prefix(STATE_FORMAT_SHA256) {
            check_hashed_len(rest, 32, 8, 64)?;
            let st = SerializedState::<Sha256>::try_from(rest).map_err(|_| StateError)?;
            return Sha256::deserialize(&st).map(DigestHasher::Sha256).map_err(|_| StateError);
        }
        if let Some(rest) = bytes.strip_prefix(STATE_FORMAT_SHA512) {
            check_hashed_len(rest, 64, 16, 128)?;
            let st = SerializedState::<Sha512>::try_from(rest).map_err(|_| StateError)?;
            return Sha512::deserialize(&st).map(DigestHasher::Sha512).map_err(|_| StateError);
        }
        Err(StateError)
    }
}

/// Most bytes a restored state may claim to have hashed: far beyond any upload, and low
/// enough that continuing and finishing it cannot overflow the message bit length that
/// sha2 computes unchecked (its states carry whatever block count they are given).
const MAX_HASHED_LEN: u128 = 1 << 60;

/// Refuses a saved sha2 state whose block count (`width` bytes little-endian, after the
/// `words` bytes of chaining state; blocks of `block` bytes) says more than
/// [`MAX_HASHED_LEN`] bytes were hashed. SHA-256: 32, 8, 64; SHA-512: 64, 16, 128.
fn check_hashed_len(state: &[u8], words: usize, width: usize, block: u128) -> Result<(), StateError> {
    let count = state.get(words..words + width).ok_or(StateError)?;
    let mut le = [0u8; 16];
    le[..width].copy_from_slice(count);
    let blocks = u128::from_le_bytes(le);
    if blocks.checked_mul(block).is_none_or(|len| len > MAX_HASHED_LEN) {
        return Err(StateError);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_displays_canonical_digests() {
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY_SHA256);
        assert_eq!(Digest::sha256_of(b""), d);
    }

    #[test]
    fn rejects_bad_digests() {
        let table = [
            ("", DigestError::Malformed),
            ("sha256", DigestError::Malformed),
            ("SHA256:abc", DigestError::Malformed),
            ("md5:d41d8cd98f00b204e9800998ecf8427e", DigestError::UnsupportedAlgorithm("md5".into())),
            ("sha256:abc", DigestError::BadEncoding { expected: 64 }),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                DigestError::BadEncoding { expected: 64 },
            ),
            ("sha512:00", DigestError::BadEncoding { expected: 128 }),
        ];
        for (input, want) in table {
            assert_eq!(input.parse::<Digest>().unwrap_err(), want, "{input:?}");
        }
    }

    #[test]
    fn sha512_digest_of_known_value() {
        let d = Digest::of(Algorithm::Sha512, b"abc");
        assert!(d.hex().starts_with("ddaf35a193617aba"));
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn saved_state_resumes_to_the_same_digest() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let data: Vec<u8> = (0..100_003u32).map(|i| (i % 251) as u8).collect();
            let whole = Digest::of(alg, &data);
            let mut h = DigestHasher::new(alg);
            h.update(&data[..33_337]);
            let saved = h.save_state();
            let mut resumed = DigestHasher::restore_state(&saved).unwrap();
            resumed.update(&data[33_337..]);
            assert_eq!(resumed.finish(), whole);
        }
    }

    #[test]
    fn corrupt_state_is_refused_not_panicked() {
        let h = DigestHasher::new(Algorithm::Sha256);
        let mut saved = h.save_state();
        assert!(DigestHasher::restore_state(&saved[..saved.len() - 1]).is_err());
        let last = saved.len() - 1;
        saved[last] = 0xff; // buffer position byte out of range
        let _ = DigestHasher::restore_state(&saved); // must not panic
        assert!(DigestHasher::restore_state(b"garbage").is_err());
    }

    /// Found by the `names` fuzz target: a saved state claiming ~2^56 hashed blocks was
    /// restored, and finishing it overflowed the message bit length inside sha2 (a panic
    /// with overflow checks, a wrong digest without).
    #[test]
    fn state_claiming_an_impossible_length_is_refused() {
        for (alg, core_state) in [(Algorithm::Sha256, 32), (Algorithm::Sha512, 64)] {
            let saved = DigestHasher::new(alg).save_state();
            let tag = saved.iter().position(|&b| b == b':').unwrap() + 1;
            let at = tag + core_state;
            for blocks in [1u64 << 56, u64::MAX] {
                let mut bad = saved.clone();
                bad[at..at + 8].copy_from_slice(&blocks.to_le_bytes());
                assert_eq!(DigestHasher::restore_state(&bad).err(), Some(StateError), "{alg} with {blocks} blocks");
            }
            // The exact input the fuzzer found.
            let mut found = DigestHasher::new(Algorithm::Sha256).save_state();
            found[tag + 32..tag + 40].copy_from_slice(&[0, 0, 0, 0, 0, 0xf9, 0xff, 0]);
            assert_eq!(DigestHasher::restore_state(&found).err(), Some(StateError));
            // A long but possible upload still resumes.
            let mut fine = saved.clone();
            fine[at..at + 8].copy_from_slice(&(1u64 << 30).to_le_bytes());
            let mut h = DigestHasher::restore_state(&fine).unwrap();
            h.update(b"more");
            let _ = h.finish();
        }
    }
}
