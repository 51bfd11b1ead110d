//! AES-256-GCM over Berth's segment format, three ways: Berth's own [`Sealer`] and
//! [`open_stream`] (aws-lc-rs underneath, with their buffering and stream plumbing), the same
//! segment loop written directly on aws-lc-rs, and the same loop on RustCrypto's aes-gcm 0.11.
//! Each seals and opens the same plaintext in 64 KiB segments with the same nonce layout
//! (`prefix ‖ index u32 BE ‖ last`, the blob digest as the final segment's associated data);
//! the aes-gcm object is checked to be byte-identical to Berth's before anything is timed.
//!
//! ```text
//! cargo run --release -p berth-storage --example aead_segments [MiB [push KiB]]
//! ```
//! Defaults: 256 MiB, pushed into the `Sealer` and fed to `open_stream` in 1024 KiB pieces.
//! Figures are MB/s (10^6 plaintext bytes per second), best of 3. Berth's seal is timed as an
//! upload streams (each push's output dropped before the next) and, once, keeping the whole
//! object (fresh memory for every push); its open from pieces it owns (as a storage read hands
//! them over) and from slices of one shared buffer.

use std::error::Error;
use std::time::{Duration, Instant};

use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use berth_oci::Digest;
use berth_storage::crypt::format::{PREFIX_LEN, sealed_len, segments};
use berth_storage::crypt::{Dek, Kek, Run, SEGMENT, Sealer, TAG, fill_random, open_stream};
use bytes::Bytes;
use futures::executor::block_on;
use futures::{StreamExt, stream};

type Res<T> = Result<T, Box<dyn Error>>;

const SEG: usize = SEGMENT as usize;
const ROUNDS: usize = 3;

fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(256);
    let piece: usize = args.next().map(|a| a.parse::<usize>()).transpose()?.unwrap_or(1024) * 1024;
    let len = mib << 20;

    let mut plain = vec![0u8; len];
    fill_random(&mut plain)?;
    let digest = Digest::sha256_of(&plain);
    let dek = Dek::generate()?;
    let raw = raw_key(&dek)?;
    println!(
        "{mib} MiB in {} segments of {} KiB, pieces of {} KiB, best of {ROUNDS} (MB/s = 10^6 plaintext bytes/s)",
        segments(len as u64),
        SEG / 1024,
        piece / 1024
    );

    // Berth: Sealer and open_stream. Timed as an upload streams: each push's output goes on
    // (here: dropped) before the next; the object opened is kept from one more, untimed seal.
    let seal_time = best(|| berth_seal(&dek, &plain, &digest, piece, |_| ()).map(drop))?;
    let mut parts = Vec::with_capacity(len / piece + 2);
    let start = Instant::now();
    let runs = berth_seal(&dek, &plain, &digest, piece, |b| parts.push(b))?;
    let seal_kept_time = start.elapsed();
    let object: Bytes = parts.concat().into();
    if object.len() as u64 != sealed_len(len as u64) || runs.len() != 1 + usize::from(len > SEG) {
        return Err("Berth's sealer made an object of an unexpected shape".into());
    }
    // Opened from pieces the stream owns (as a storage read delivers them, so they can be
    // opened in place), and from slices of one shared buffer (which cannot).
    berth_open(owned_pieces(&object, piece), &dek, &runs, &digest, len, Some(&plain))?;
    let (mut open_time, mut open_shared_time) = (Duration::MAX, Duration::MAX);
    for _ in 0..ROUNDS {
        let owned = owned_pieces(&object, piece);
        open_time = open_time.min(berth_open(owned, &dek, &runs, &digest, len, None)?);
        let shared = (0..object.len()).step_by(piece).map(|at| object.slice(at..(at + piece).min(object.len())));
        open_shared_time = open_shared_time.min(berth_open(shared.collect(), &dek, &runs, &digest, len, None)?);
    }

    // The same loop on aws-lc-rs directly, and on aes-gcm; both with Berth's run prefixes, so
    // their objects must be Berth's, byte for byte.
    let lc = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &raw)?);
    let rc = Aes256Gcm::new(&Key::<Aes256Gcm>::from(raw));
    let mut out = vec![0u8; object.len()];
    let mut back = vec![0u8; len];
    let results = [
        measure("aws-lc-rs 1.19.0 loop", &lc, lc_seal, lc_open, &plain, &object, &runs, &digest, &mut out, &mut back)?,
        measure("aes-gcm 0.11.1 loop", &rc, rc_seal, rc_open, &plain, &object, &runs, &digest, &mut out, &mut back)?,
    ];

    let rate = |d: Duration| len as f64 / d.as_secs_f64() / 1e6;
    println!("{:<32} {:>10} {:>10}", "", "seal MB/s", "open MB/s");
    println!("{:<32} {:>10.0} {:>10.0}", "Berth Sealer/open_stream", rate(seal_time), rate(open_time));
    println!(
        "{:<32} {:>10.0} {:>10.0}",
        "  (kept object / shared pieces)",
        rate(seal_kept_time),
        rate(open_shared_time)
    );
    for (name, seal, open) in results {
        println!("{name:<32} {:>10.0} {:>10.0}", rate(seal), rate(open));
    }
    Ok(())
}

/// The shortest of [`ROUNDS`] runs of `f`.
fn best(mut f: impl FnMut() -> Res<()>) -> Res<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        f()?;
        best = best.min(start.elapsed());
    }
    Ok(best)
}

/// A data key's raw bytes, through the public API: wrapped by a KEK whose material is known
/// here, then unwrapped by hand (`nonce ‖ sealed key ‖ tag`, associated data `<id>|<context>`).
fn raw_key(dek: &Dek) -> Res<[u8; 32]> {
    let material = [0x5a; 32];
    let wrapped = Kek::from_raw("bench.1", material)?.wrap(dek, b"bench")?;
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &material)?);
    let (nonce, body) = wrapped.split_at(NONCE_LEN);
    let mut body = body.to_vec();
    let raw = key.open_in_place(Nonce::try_assume_unique_for_key(nonce)?, Aad::from(b"bench.1|bench"), &mut body)?;
    Ok(<[u8; 32]>::try_from(&raw[..])?)
}

/// Seals `plain` as one upload request would: pushed in `piece`-byte chunks, then finished;
/// every piece of the object goes to `sink`. Returns the runs.
fn berth_seal(dek: &Dek, plain: &[u8], digest: &Digest, piece: usize, mut sink: impl FnMut(Bytes)) -> Res<Vec<Run>> {
    let mut sealer = Sealer::new(dek.clone(), 0, &[])?;
    for chunk in plain.chunks(piece) {
        sink(sealer.push(chunk)?);
    }
    let mut runs: Vec<Run> = sealer.run().into_iter().collect();
    let (last, run) = sealer.finish(digest)?;
    sink(last);
    runs.push(run);
    Ok(runs)
}

/// `object` cut into `piece`-byte pieces, each in a buffer of its own.
fn owned_pieces(object: &[u8], piece: usize) -> Vec<Bytes> {
    object.chunks(piece).map(Bytes::copy_from_slice).collect()
}

/// Opens the whole object from `pieces`; checks it against `plain` if given. Returns the
/// time from the first piece handed over to the last plaintext byte.
fn berth_open(
    pieces: Vec<Bytes>,
    dek: &Dek,
    runs: &[Run],
    digest: &Digest,
    len: usize,
    plain: Option<&[u8]>,
) -> Res<Duration> {
    let start = Instant::now();
    let pieces = stream::iter(pieces.into_iter().map(Ok)).boxed();
    let mut out = open_stream(pieces, dek.clone(), runs.to_vec(), digest.clone(), len as u64, 0..len as u64);
    block_on(async {
        let mut at = 0;
        while let Some(part) = out.next().await {
            let part = part?;
            if let Some(plain) = plain
                && plain.get(at..at + part.len()) != Some(&part[..])
            {
                return Err("open_stream yielded the wrong plaintext".into());
            }
            at += part.len();
        }
        if at == len { Ok(start.elapsed()) } else { Err("open_stream yielded too little".into()) }
    })
}

fn segment_nonce(runs: &[Run], index: usize, last: bool) -> Res<[u8; NONCE_LEN]> {
    let mut n = [0u8; NONCE_LEN];
    n[..PREFIX_LEN].copy_from_slice(Run::prefix_of(runs, index as u64)?);
    n[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&u32::try_from(index)?.to_be_bytes());
    n[NONCE_LEN - 1] = u8::from(last);
    Ok(n)
}

/// Seals `plain` into `out` (its sealed size) segment by segment.
type SealFn<K> = fn(&K, &[u8], &mut [u8], &[Run], &[u8]) -> Res<()>;
/// Opens `sealed` into `out` (its plaintext size) segment by segment.
type OpenFn<K> = fn(&K, &[u8], &mut [u8], &[Run], &[u8]) -> Res<()>;

/// Calls `f(index, last, plaintext range, sealed range)` for every segment of a `len`-byte blob.
fn each_segment(
    len: usize,
    mut f: impl FnMut(usize, bool, std::ops::Range<usize>, std::ops::Range<usize>) -> Res<()>,
) -> Res<()> {
    let count = segments(len as u64) as usize;
    for i in 0..count {
        let p = i * SEG..((i + 1) * SEG).min(len);
        let c = i * (SEG + TAG)..i * (SEG + TAG) + p.len() + TAG;
        f(i, i == count - 1, p, c)?;
    }
    Ok(())
}

fn lc_seal(key: &LessSafeKey, plain: &[u8], out: &mut [u8], runs: &[Run], final_aad: &[u8]) -> Res<()> {
    each_segment(plain.len(), |i, last, p, c| {
        let (ct, tag) = out[c].split_at_mut(p.len());
        let aad = Aad::from(if last { final_aad } else { &[][..] });
        let nonce = Nonce::assume_unique_for_key(segment_nonce(runs, i, last)?);
        key.seal_out_of_place_scatter(nonce, aad, &plain[p], ct, &[], tag)?;
        Ok(())
    })
}

fn lc_open(key: &LessSafeKey, sealed: &[u8], out: &mut [u8], runs: &[Run], final_aad: &[u8]) -> Res<()> {
    each_segment(out.len(), |i, last, p, c| {
        let (ct, tag) = sealed[c].split_at(p.len());
        let aad = Aad::from(if last { final_aad } else { &[][..] });
        let nonce = Nonce::assume_unique_for_key(segment_nonce(runs, i, last)?);
        key.open_separate_gather(nonce, aad, ct, tag, &mut out[p])?;
        Ok(())
    })
}

fn rc_seal(key: &Aes256Gcm, plain: &[u8], out: &mut [u8], runs: &[Run], final_aad: &[u8]) -> Res<()> {
    each_segment(plain.len(), |i, last, p, c| {
        let (ct, tag) = out[c].split_at_mut(p.len());
        let aad = if last { final_aad } else { &[][..] };
        let nonce = aes_gcm::Nonce::from(segment_nonce(runs, i, last)?);
        let buf = InOutBuf::new(&plain[p], ct).map_err(|_| "segment buffers differ in length")?;
        tag.copy_from_slice(&key.encrypt_inout_detached(&nonce, aad, buf)?);
        Ok(())
    })
}

fn rc_open(key: &Aes256Gcm, sealed: &[u8], out: &mut [u8], runs: &[Run], final_aad: &[u8]) -> Res<()> {
    each_segment(out.len(), |i, last, p, c| {
        let (ct, tag) = sealed[c].split_at(p.len());
        let aad = if last { final_aad } else { &[][..] };
        let nonce = aes_gcm::Nonce::from(segment_nonce(runs, i, last)?);
        let buf = InOutBuf::new(ct, &mut out[p]).map_err(|_| "segment buffers differ in length")?;
        key.decrypt_inout_detached(&nonce, aad, buf, &aes_gcm::Tag::try_from(tag)?)?;
        Ok(())
    })
}

/// Times `seal` and `open` and checks that they make Berth's object and get the plaintext back.
#[allow(clippy::too_many_arguments)]
fn measure<K>(
    name: &'static str,
    key: &K,
    seal: SealFn<K>,
    open: OpenFn<K>,
    plain: &[u8],
    object: &[u8],
    runs: &[Run],
    digest: &Digest,
    out: &mut [u8],
    back: &mut [u8],
) -> Res<(&'static str, Duration, Duration)> {
    let aad = digest.to_string().into_bytes();
    out.fill(0);
    back.fill(0);
    let sealing = best(|| seal(key, plain, out, runs, &aad))?;
    if out != object {
        return Err(format!("{name}: the object differs from Berth's").into());
    }
    let opening = best(|| open(key, object, back, runs, &aad))?;
    if back != plain {
        return Err(format!("{name}: opened the wrong plaintext").into());
    }
    Ok((name, sealing, opening))
}
