//! [`Sealer`]: plaintext in, sealed segments out, as a body streams in.

use aws_lc_rs::aead::Aad;
use berth_oci::Digest;
use bytes::{Bytes, BytesMut};

use super::format::{SEGMENT, TAG, nonce};
use super::{Dek, Run};
use crate::error::{Error, Result};

const SEG: usize = SEGMENT as usize;

/// Seals a stream of plaintext into segments. The last 1..=[`SEGMENT`] bytes received are
/// always held back ([`Sealer::tail`]): until the end is known, no segment can be sealed as
/// the last one. Each `Sealer` seals one run, with a fresh nonce prefix.
pub struct Sealer {
    dek: Dek,
    run: Run,
    /// Segments sealed by this sealer.
    sealed: u64,
    /// Received, not yet sealed: at most one segment.
    pending: BytesMut,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("first", &self.run.first).field("sealed", &self.sealed).finish_non_exhaustive()
    }
}

impl Sealer {
    /// Continues a blob whose first `first_segment` segments are sealed, with `tail` the
    /// bytes received after them.
    pub fn new(dek: Dek, first_segment: u64, tail: &[u8]) -> Result<Sealer> {
        if tail.len() > SEG {
            return Err(Error::Tampered("an upload's held-back tail is longer than a segment".into()));
        }
        let mut pending = BytesMut::with_capacity(SEG);
        pending.extend_from_slice(tail);
        Ok(Sealer { dek, run: Run::fresh(first_segment)?, sealed: 0, pending })
    }

    /// Adds `chunk`; returns the segments it completed, sealed (possibly nothing).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes> {
        let mut rest = chunk;
        if !self.pending.is_empty() && self.pending.len() < SEG {
            let take = (SEG - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
        }
        if rest.is_empty() {
            return Ok(Bytes::new());
        }
        // More follows, so what is pending (a whole segment by now) is not the last.
        let direct = (rest.len() - 1) / SEG;
        let from_pending = usize::from(!self.pending.is_empty());
        let mut out = BytesMut::zeroed((direct + from_pending) * (SEG + TAG));
        let mut at = 0;
        if from_pending == 1 {
            let pending = std::mem::take(&mut self.pending);
            self.seal_into(&pending, &mut out[..SEG + TAG])?;
            self.pending = pending;
            self.pending.clear();
            at = SEG + TAG;
        }
        for segment in rest[..direct * SEG].chunks_exact(SEG) {
            self.seal_into(segment, &mut out[at..at + SEG + TAG])?;
            at += SEG + TAG;
        }
        self.pending.extend_from_slice(&rest[direct * SEG..]);
        Ok(out.freeze())
    }

    fn seal_into(&mut self, plain: &[u8], out: &mut [u8]) -> Result<()> {
        let index = self.run.first + self.sealed;
        let (ct, tag) = out.split_at_mut(plain.len());
        self.dek
            .aead()
            .seal_out_of_place_scatter(nonce(&self.run.prefix, index, false)?, Aad::empty(), plain, ct, &[], tag)
            .map_err(|_| Error::Key("sealing a segment failed".into()))?;
        self.sealed += 1;
        Ok(())
    }

    /// The run of the segments sealed so far, if any were.
    pub fn run(&self) -> Option<Run> {
        (self.sealed > 0).then_some(self.run)
    }

    /// The index of the first segment not sealed yet.
    pub fn next_segment(&self) -> u64 {
        self.run.first + self.sealed
    }

    /// The bytes held back (the next segment's start).
    pub fn tail(&self) -> &[u8] {
        &self.pending
    }

    /// Seals what is held back as the final segment of blob `digest`. Returns it and its
    /// run (a run of its own, with a fresh prefix).
    pub fn finish(self, digest: &Digest) -> Result<(Bytes, Run)> {
        let run = Run::fresh(self.next_segment())?;
        let mut out = BytesMut::zeroed(self.pending.len() + TAG);
        let (ct, tag) = out.split_at_mut(self.pending.len());
        self.dek
            .aead()
            .seal_out_of_place_scatter(
                nonce(&run.prefix, run.first, true)?,
                Aad::from(digest.to_string().into_bytes()),
                &self.pending,
                ct,
                &[],
                tag,
            )
            .map_err(|_| Error::Key("sealing the last segment failed".into()))?;
        Ok((out.freeze(), run))
    }
}
