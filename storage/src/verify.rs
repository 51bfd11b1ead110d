//! Checking content against its digest while it streams out.
//!
//! [`verify_stream`] passes a whole blob through, hashing it, and holds back its last piece
//! until the digest checks: bytes that do not hash to the digest never reach a reader whole
//! (the plaintext counterpart of `crypt::open`, which checks each sealed segment).
//! [`PipelinedHasher`] hashes large pieces on the blocking pool while the previous piece is
//! being sent, so a pull costs the hash once, not the hash plus the send in series.
//! [`IntegrityFailure`] is the error both paths end a read with.

use berth_oci::{Algorithm, Digest, DigestHasher};
use bytes::Bytes;
use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::blob::ByteStream;

/// Pieces at least this large are hashed on the blocking pool (about 30 µs of SHA-256 and
/// more); smaller ones cost less than the hop and are hashed in place.
const OFFLOAD: usize = 64 * 1024;

/// Stored bytes that are not what their digest says: the error a read ends with (inside a
/// `std::io::Error` of kind `InvalidData`; see [`IntegrityFailure::is`]).
#[derive(Debug, thiserror::Error)]
#[error("blob {digest} failed its integrity check: {what}")]
pub struct IntegrityFailure {
    pub digest: Digest,
    pub what: String,
}

impl IntegrityFailure {
    /// Logs the failure (once per read, at error level, naming the blob) and wraps it.
    pub fn report(digest: &Digest, what: impl Into<String>) -> std::io::Error {
        let what = what.into();
        tracing::error!(blob.digest = %digest, error = %what, "blob failed its integrity check; the read was stopped");
        std::io::Error::new(std::io::ErrorKind::InvalidData, IntegrityFailure { digest: digest.clone(), what })
    }

    /// Whether a read error is an integrity failure (rather than the store or disk failing).
    pub fn is(e: &std::io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<IntegrityFailure>())
    }
}

/// A running hash whose large updates run on the blocking pool, one at a time, in order:
/// [`PipelinedHasher::update`] returns as soon as the piece is handed over, so the caller
/// sends it while it is hashed.
#[derive(Debug)]
pub struct PipelinedHasher {
    state: HasherState,
}

#[derive(Debug)]
enum HasherState {
    /// Boxed: the state moves in and out of the hashing task at each piece.
    Idle(Box<DigestHasher>),
    Busy(JoinHandle<Box<DigestHasher>>),
    /// A hashing task failed (it panicked, or the runtime is shutting down).
    Lost,
}

impl PipelinedHasher {
    pub fn new(algorithm: Algorithm) -> PipelinedHasher {
        PipelinedHasher { state: HasherState::Idle(Box::new(DigestHasher::new(algorithm))) }
    }

    /// Waits for the previous piece to be hashed, then starts on `piece`.
    pub async fn update(&mut self, piece: Bytes) -> std::io::Result<()> {
        let mut hasher = self.settle().await?;
        if piece.len() < OFFLOAD {
            hasher.update(&piece);
            self.state = HasherState::Idle(hasher);
        } else {
            self.state = HasherState::Busy(tokio::task::spawn_blocking(move || {
                hasher.update(&piece);
                hasher
            }));
        }
        Ok(())
    }

    /// The digest of everything given to [`PipelinedHasher::update`].
    pub async fn finish(mut self) -> std::io::Result<Digest> {
        Ok(self.settle().await?.finish())
    }

    async fn settle(&mut self) -> std::io::Result<Box<DigestHasher>> {
        match std::mem::replace(&mut self.state, HasherState::Lost) {
            HasherState::Idle(h) => Ok(h),
            HasherState::Busy(task) => task.await.map_err(std::io::Error::other),
            HasherState::Lost => Err(std::io::Error::other("the blob's hash was lost to a failed task")),
        }
    }
}

/// Streams `input`, the whole content of blob `digest`, checking it: every piece but the
/// last is passed on as soon as it is handed to the hasher; the last is held back until
/// the digest of everything is known, and replaced by an [`IntegrityFailure`] (logged) when
/// it does not match. A reader therefore gets either all of the right bytes, or fewer bytes
/// than it asked for and an error: never the whole of wrong content.
pub fn verify_stream(input: ByteStream, digest: Digest) -> ByteStream {
    let state = Verifying { hasher: Some(PipelinedHasher::new(digest.algorithm())), input, held: None, digest };
    futures::stream::unfold(state, |mut s| async move {
        let hasher = s.hasher.as_mut()?;
        loop {
            match s.input.next().await {
                Some(Ok(piece)) if piece.is_empty() => continue,
                Some(Ok(piece)) => {
                    // A new piece means the held one is not the last: hash it and send it.
                    let Some(previous) = s.held.replace(piece) else { continue };
                    if let Err(e) = hasher.update(previous.clone()).await {
                        s.hasher = None;
                        return Some((Err(e), s));
                    }
                    return Some((Ok(previous), s));
                }
                Some(Err(e)) => {
                    s.hasher = None;
                    return Some((Err(e), s));
                }
                None => {
                    let hasher = s.hasher.take()?;
                    let last = s.held.take();
                    let checked = check(hasher, last.clone(), &s.digest).await;
                    return match (checked, last) {
                        (Ok(()), Some(last)) => Some((Ok(last), s)),
                        (Ok(()), None) => None,
                        (Err(e), _) => Some((Err(e), s)),
                    };
                }
            }
        }
    })
    .boxed()
}

struct Verifying {
    /// `None` once the stream has ended (with the last piece or an error).
    hasher: Option<PipelinedHasher>,
    input: ByteStream,
    held: Option<Bytes>,
    digest: Digest,
}

async fn check(mut hasher: PipelinedHasher, last: Option<Bytes>, digest: &Digest) -> std::io::Result<()> {
    if let Some(last) = last {
        hasher.update(last).await?;
    }
    let actual = hasher.finish().await?;
    if &actual == digest {
        Ok(())
    } else {
        Err(IntegrityFailure::report(digest, format!("the stored content hashes to {actual}")))
    }
}

/// What a reader gets: the bytes before the stream ended, and whether it ended in error
/// (tests of this module and of `blob`).
#[cfg(test)]
pub(crate) async fn drain(mut s: ByteStream) -> (Vec<u8>, Option<std::io::Error>) {
    let mut got = Vec::new();
    while let Some(piece) = s.next().await {
        match piece {
            Ok(p) => got.extend_from_slice(&p),
            Err(e) => return (got, Some(e)),
        }
    }
    (got, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(content: &[u8], size: usize) -> ByteStream {
        let owned: Vec<std::io::Result<Bytes>> = content.chunks(size).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        futures::stream::iter(owned).boxed()
    }

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn matching_content_passes_whole_in_any_piece_size() {
        for (len, size) in [(0, 1), (1, 1), (1000, 7), (300_000, 65_536), (3 << 20, 1 << 20), (200_000, 200_000)] {
            let c = content(len);
            let (got, err) = drain(verify_stream(pieces(&c, size), Digest::sha256_of(&c))).await;
            assert!(err.is_none(), "{len}/{size}: {err:?}");
            assert_eq!(got, c, "{len}/{size}");
        }
        let c = content(5000);
        let d512 = Digest::of(Algorithm::Sha512, &c);
        let (got, err) = drain(verify_stream(pieces(&c, 999), d512)).await;
        assert!(err.is_none());
        assert_eq!(got, c);
    }

    #[tokio::test]
    async fn a_flipped_byte_withholds_the_last_piece() {
        let c = content(3 << 20);
        let digest = Digest::sha256_of(&c);
        for at in [0, (1 << 20) + 5, c.len() - 1] {
            let mut damaged = c.clone();
            damaged[at] ^= 1;
            let (got, err) = drain(verify_stream(pieces(&damaged, 1 << 20), digest.clone())).await;
            let err = err.expect("the read must end in an error");
            assert!(IntegrityFailure::is(&err), "{err}");
            assert!(err.to_string().contains(&digest.to_string()), "{err}");
            // Everything but the last piece was passed on; the last never was.
            assert_eq!(got.len(), 2 << 20, "damage at {at}");
            assert_eq!(got[..], damaged[..2 << 20]);
        }
        // A blob of one piece: nothing at all comes out.
        let small = content(1000);
        let (got, err) = drain(verify_stream(pieces(&small[..999], 1000), Digest::sha256_of(&small))).await;
        assert!(got.is_empty() && err.is_some_and(|e| IntegrityFailure::is(&e)));
    }

    #[tokio::test]
    async fn truncated_and_extended_content_fail() {
        let c = content(10_000);
        let digest = Digest::sha256_of(&c);
        let (got, err) = drain(verify_stream(pieces(&c[..9_000], 1000), digest.clone())).await;
        assert!(got.len() < 9_000 && err.is_some_and(|e| IntegrityFailure::is(&e)));
        let mut longer = c.clone();
        longer.push(0);
        let (got, err) = drain(verify_stream(pieces(&longer, 1000), digest.clone())).await;
        assert!(got.len() < longer.len() && err.is_some_and(|e| IntegrityFailure::is(&e)));
        let (got, err) = drain(verify_stream(pieces(&[], 1), digest)).await;
        assert!(got.is_empty() && err.is_some_and(|e| IntegrityFailure::is(&e)));
    }

    #[tokio::test]
    async fn a_failing_input_ends_the_stream_with_its_error() {
        let c = content(4000);
        let input = futures::stream::iter(vec![
            Ok(Bytes::copy_from_slice(&c[..1000])),
            Ok(Bytes::copy_from_slice(&c[1000..2000])),
            Err(std::io::Error::other("disk on fire")),
        ])
        .boxed();
        let (got, err) = drain(verify_stream(input, Digest::sha256_of(&c))).await;
        let err = err.unwrap();
        assert!(!IntegrityFailure::is(&err) && err.to_string().contains("disk on fire"));
        assert_eq!(got, c[..1000]);
    }

    #[tokio::test]
    async fn pipelined_hasher_matches_a_plain_hash() {
        let c = content(1 << 20);
        let mut h = PipelinedHasher::new(Algorithm::Sha256);
        for piece in [&c[..10], &c[10..100_000], &c[100_000..100_001], &c[100_001..]] {
            h.update(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        assert_eq!(h.finish().await.unwrap(), Digest::sha256_of(&c));
    }
}
