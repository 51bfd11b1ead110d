//! What the metadata store keeps about sealed content: a blob copy's wrapped data key and
//! runs ([`SealedBlob`]), and an upload session's encryption state ([`UploadSealing`]).

use berth_oci::{Digest, DigestHasher, UploadId};
use bytes::Bytes;

use super::format::PREFIX_LEN;
use super::{Dek, Kek};
use crate::error::{Error, Result};

/// Segments from `first` on (up to the next run) were sealed with nonces starting `prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub first: u64,
    pub prefix: [u8; PREFIX_LEN],
}

impl Run {
    /// A run starting at segment `first` with a fresh random prefix.
    pub fn fresh(first: u64) -> Result<Run> {
        let mut prefix = [0u8; PREFIX_LEN];
        super::fill_random(&mut prefix)?;
        Ok(Run { first, prefix })
    }

    const ENCODED: usize = 8 + PREFIX_LEN;

    /// Runs as stored: 15 bytes each (first segment, big-endian u64; prefix).
    pub fn encode(runs: &[Run]) -> Vec<u8> {
        let mut out = Vec::with_capacity(runs.len() * Run::ENCODED);
        for r in runs {
            out.extend_from_slice(&r.first.to_be_bytes());
            out.extend_from_slice(&r.prefix);
        }
        out
    }

    /// Reads what [`Run::encode`] wrote; runs must start at segment 0 and ascend.
    pub fn decode(bytes: &[u8]) -> Result<Vec<Run>> {
        if bytes.is_empty() || !bytes.len().is_multiple_of(Run::ENCODED) {
            return Err(Error::Tampered("the segment runs record is malformed".into()));
        }
        let runs: Vec<Run> = bytes
            .chunks_exact(Run::ENCODED)
            .map(|c| {
                let mut first = [0u8; 8];
                first.copy_from_slice(&c[..8]);
                let mut prefix = [0u8; PREFIX_LEN];
                prefix.copy_from_slice(&c[8..]);
                Run { first: u64::from_be_bytes(first), prefix }
            })
            .collect();
        if runs[0].first != 0 || runs.windows(2).any(|w| w[0].first >= w[1].first) {
            return Err(Error::Tampered("the segment runs are out of order".into()));
        }
        Ok(runs)
    }

    /// The prefix segment `index` was sealed with.
    pub fn prefix_of(runs: &[Run], index: u64) -> Result<&[u8; PREFIX_LEN]> {
        let at = runs.partition_point(|r| r.first <= index);
        at.checked_sub(1)
            .map(|i| &runs[i].prefix)
            .ok_or_else(|| Error::Tampered(format!("no run covers segment {index}")))
    }
}

/// One encrypted copy of a blob: the copy the repositories using key `key_name` share.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedBlob {
    /// The key (by name, stable across rotations) whose repositories read this copy.
    pub key_name: String,
    /// The object's id: its path is [`crate::layout::sealed_blob`].
    pub object: String,
    /// The plaintext length.
    pub size: u64,
    /// Id of the key-encryption key that wraps the data key.
    pub kek: String,
    /// The wrapped data key ([`blob_wrap_context`] as associated data).
    pub wrapped: Vec<u8>,
    pub runs: Vec<Run>,
}

impl std::fmt::Debug for SealedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedBlob")
            .field("key_name", &self.key_name)
            .field("object", &self.object)
            .field("size", &self.size)
            .field("kek", &self.kek)
            .field("runs", &self.runs.len())
            .finish_non_exhaustive()
    }
}

/// Associated data binding a blob copy's wrapped data key to its digest and key name.
pub fn blob_wrap_context(digest: &Digest, key_name: &str) -> Vec<u8> {
    format!("berth-dek/blob/{key_name}/{digest}").into_bytes()
}

fn upload_wrap_context(id: &UploadId) -> Vec<u8> {
    format!("berth-dek/upload/{id}").into_bytes()
}

fn upload_state_context(id: &UploadId, offset: u64) -> Vec<u8> {
    format!("berth-upload-state/{id}/{offset}").into_bytes()
}

impl SealedBlob {
    /// Unwraps this copy's data key with `kek` (which must be the one named in `kek`).
    pub fn data_key(&self, kek: &Kek, digest: &Digest) -> Result<Dek> {
        kek.unwrap(&self.wrapped, &blob_wrap_context(digest, &self.key_name))
    }
}

/// An encrypted upload's state, kept in the upload session (serialized by
/// [`UploadSealing::encode`]): everything but the data key itself is opaque without the KEK.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadSealing {
    pub key_name: String,
    pub kek: String,
    #[serde(with = "hex")]
    pub wrapped: Vec<u8>,
    /// Runs of the segments sealed so far (in the staged parts).
    #[serde(with = "hex")]
    pub runs: Vec<u8>,
    /// The running hash state and the held-back plaintext after the last full segment,
    /// sealed under the data key for the current offset.
    #[serde(with = "hex")]
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for UploadSealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadSealing")
            .field("key_name", &self.key_name)
            .field("kek", &self.kek)
            .finish_non_exhaustive()
    }
}

/// An encrypted upload's state, opened.
pub struct OpenUpload {
    pub dek: Dek,
    pub hasher: DigestHasher,
    pub runs: Vec<Run>,
    /// Plaintext received after the last sealed segment (at most one segment).
    pub tail: Bytes,
}

impl std::fmt::Debug for OpenUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenUpload")
            .field("runs", &self.runs.len())
            .field("tail", &self.tail.len())
            .finish_non_exhaustive()
    }
}

impl UploadSealing {
    /// A new upload's state: a fresh data key wrapped by `kek`.
    pub fn start(kek: &Kek, key_name: &str, id: &UploadId, hasher: &DigestHasher) -> Result<UploadSealing> {
        let dek = Dek::generate()?;
        let wrapped = kek.wrap(&dek, &upload_wrap_context(id))?;
        let mut s = UploadSealing {
            key_name: key_name.into(),
            kek: kek.id().into(),
            wrapped,
            runs: Vec::new(),
            secret: Vec::new(),
        };
        s.secret = seal_state(&dek, id, 0, hasher, &[])?;
        Ok(s)
    }

    /// Opens the state of upload `id` at `offset` bytes.
    pub fn open(&self, kek: &Kek, id: &UploadId, offset: u64) -> Result<OpenUpload> {
        let dek = kek.unwrap(&self.wrapped, &upload_wrap_context(id))?;
        let plain = dek.open_small(&self.secret, &upload_state_context(id, offset))?;
        let (len, rest) = plain.split_at_checked(4).ok_or_else(|| Error::Tampered("upload state".into()))?;
        let mut n = [0u8; 4];
        n.copy_from_slice(len);
        let (state, tail) = rest
            .split_at_checked(u32::from_be_bytes(n) as usize)
            .ok_or_else(|| Error::Tampered("upload state".into()))?;
        let hasher =
            DigestHasher::restore_state(state).map_err(|e| Error::Tampered(format!("upload hash state: {e}")))?;
        let runs = if self.runs.is_empty() { Vec::new() } else { Run::decode(&self.runs)? };
        Ok(OpenUpload { dek, hasher, runs, tail: Bytes::copy_from_slice(tail) })
    }

    /// The state after a chunk: `runs` and `tail` as they now stand at `offset`.
    pub fn advanced(
        &self,
        open: &OpenUpload,
        id: &UploadId,
        offset: u64,
        hasher: &DigestHasher,
        runs: &[Run],
        tail: &[u8],
    ) -> Result<UploadSealing> {
        Ok(UploadSealing {
            runs: Run::encode(runs),
            secret: seal_state(&open.dek, id, offset, hasher, tail)?,
            ..self.clone()
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<UploadSealing> {
        serde_json::from_slice(bytes).map_err(|e| Error::Corrupt(format!("upload encryption state: {e}")))
    }
}

fn seal_state(dek: &Dek, id: &UploadId, offset: u64, hasher: &DigestHasher, tail: &[u8]) -> Result<Vec<u8>> {
    let state = hasher.save_state();
    let mut plain = Vec::with_capacity(4 + state.len() + tail.len());
    plain.extend_from_slice(&(state.len() as u32).to_be_bytes());
    plain.extend_from_slice(&state);
    plain.extend_from_slice(tail);
    dek.seal_small(&plain, &upload_state_context(id, offset))
}

/// Hex in the session record. Through slices, not `hex::encode`/`hex::decode`: those go
/// character by character through iterators, and a sealed upload's state (its held-back
/// tail, up to a segment) is written and read again at every chunk.
mod hex {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let mut out = vec![0u8; v.len() * 2];
        ::hex::encode_to_slice(v, &mut out).map_err(serde::ser::Error::custom)?;
        s.serialize_str(std::str::from_utf8(&out).map_err(serde::ser::Error::custom)?)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        decode(s.as_bytes()).ok_or_else(|| serde::de::Error::custom("not an even number of hex digits"))
    }

    /// Each byte's value as a hex digit; 0xff for the others.
    const DIGITS: [u8; 256] = {
        let mut t = [0xffu8; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            t[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };

    /// Without a branch per digit: any digit that is not one sets a high bit in `bad`.
    pub(super) fn decode(text: &[u8]) -> Option<Vec<u8>> {
        if !text.len().is_multiple_of(2) {
            return None;
        }
        let mut bad = 0u8;
        let out = text
            .chunks_exact(2)
            .map(|pair| {
                let (high, low) = (DIGITS[pair[0] as usize], DIGITS[pair[1] as usize]);
                bad |= high | low;
                (high << 4) | (low & 0x0f)
            })
            .collect();
        (bad & 0xf0 == 0).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_records_keep_their_hex_form_and_refuse_bad_hex() {
        let record = UploadSealing {
            key_name: "default".into(),
            kek: "k1".into(),
            wrapped: vec![0x00, 0x7f, 0xff],
            runs: (0..=255u8).collect(),
            secret: (0..70_000u32).map(|i| (i * 7) as u8).collect(),
        };
        let text = String::from_utf8(record.encode()).unwrap();
        // The form records already stored have (written by `hex::encode`).
        assert!(text.contains(&format!("\"{}\"", ::hex::encode(&record.secret))));
        assert!(text.contains("\"007fff\""));
        assert_eq!(UploadSealing::decode(text.as_bytes()).unwrap(), record);
        assert_eq!(super::hex::decode(b"00Ff7a").unwrap(), vec![0x00, 0xff, 0x7a]);
        for bad in ["\"007ff\"", "\"007fzz\"", "\"007f0g\"", "\"007f \""] {
            let broken = text.replace("\"007fff\"", bad);
            assert!(UploadSealing::decode(broken.as_bytes()).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn runs_encode_and_find() {
        let runs =
            vec![Run { first: 0, prefix: [1; 7] }, Run { first: 5, prefix: [2; 7] }, Run { first: 9, prefix: [3; 7] }];
        let back = Run::decode(&Run::encode(&runs)).unwrap();
        assert_eq!(back, runs);
        assert_eq!(Run::prefix_of(&runs, 0).unwrap(), &[1; 7]);
        assert_eq!(Run::prefix_of(&runs, 4).unwrap(), &[1; 7]);
        assert_eq!(Run::prefix_of(&runs, 5).unwrap(), &[2; 7]);
        assert_eq!(Run::prefix_of(&runs, 1000).unwrap(), &[3; 7]);
        assert!(Run::decode(&[]).is_err());
        assert!(Run::decode(&Run::encode(&runs)[1..]).is_err());
        let bad = vec![Run { first: 0, prefix: [1; 7] }, Run { first: 0, prefix: [2; 7] }];
        assert!(Run::decode(&Run::encode(&bad)).is_err());
        assert!(Run::decode(&Run::encode(&[Run { first: 1, prefix: [1; 7] }])).is_err());
    }

    #[test]
    fn upload_state_round_trips_and_is_bound_to_its_offset() {
        let kek = Kek::from_raw("default.1", [9; 32]).unwrap();
        let id: UploadId = "u-1".parse().unwrap();
        let mut hasher = DigestHasher::new(berth_oci::Algorithm::Sha256);
        let s = UploadSealing::start(&kek, "default", &id, &hasher).unwrap();
        let s = UploadSealing::decode(&s.encode()).unwrap();
        let open = s.open(&kek, &id, 0).unwrap();
        assert!(open.tail.is_empty() && open.runs.is_empty());
        hasher.update(b"hello");
        let next = s.advanced(&open, &id, 5, &hasher, &[Run { first: 0, prefix: [4; 7] }], b"hello").unwrap();
        let again = next.open(&kek, &id, 5).unwrap();
        assert_eq!(&again.tail[..], b"hello");
        assert_eq!(again.hasher.finish(), Digest::sha256_of(b"hello"));
        // Replaying an old state for a newer offset, another upload's state, or another key: refused.
        assert!(next.open(&kek, &id, 0).is_err());
        assert!(next.open(&kek, &"u-2".parse().unwrap(), 5).is_err());
        assert!(next.open(&Kek::from_raw("default.1", [8; 32]).unwrap(), &id, 5).is_err());
        assert!(!format!("{next:?}").contains(&::hex::encode(&next.wrapped)));
    }
}
