//! The sealed segment format, through the public API only: sealing as an upload does (a
//! plaintext cut into requests of arbitrary chunks, one [`Sealer`] per request, the tail
//! carried between them), opening whole and by range, and refusing every tampered object
//! without ever yielding a wrong byte.

use std::io;
use std::ops::Range;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use berth_oci::Digest;
use berth_storage::ByteStream;
use berth_storage::crypt::format::{PREFIX_LEN, SEALED_SEGMENT, cipher_span, nonce, plain_len, sealed_len, segments};
use berth_storage::crypt::open::SPAN_SEGMENTS;
use berth_storage::crypt::record::blob_wrap_context;
use berth_storage::crypt::{Dek, Kek, Run, SEGMENT, SealedBlob, Sealer, TAG, open_file, open_stream};
use bytes::Bytes;
use futures::executor::block_on;
use futures::{StreamExt, stream};

const S: usize = SEGMENT as usize;
const SS: usize = SEALED_SEGMENT as usize;
const MIB: usize = 1 << 20;

/// Deterministic bytes (xorshift64*), different for every seed.
fn plaintext(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// How a plaintext arrives: requests, each a list of chunk lengths.
type Plan = Vec<Vec<usize>>;

/// `len` bytes cut into chunks of `chunk` bytes (the last shorter).
fn cut(len: usize, chunk: usize) -> Vec<usize> {
    let mut out = vec![chunk; len / chunk];
    if !len.is_multiple_of(chunk) {
        out.push(len % chunk);
    }
    out
}

/// Requests of `request` bytes (the last shorter), each in chunks of `chunk` bytes.
fn requests(len: usize, request: usize, chunk: usize) -> Plan {
    cut(len, request).into_iter().map(|r| cut(r, chunk)).collect()
}

/// `plan` with an empty request before every request and an empty chunk around every chunk list.
fn with_empties(plan: Plan) -> Plan {
    let mut out = vec![vec![]];
    for r in plan {
        let mut chunks = vec![0];
        chunks.extend(r);
        chunks.push(0);
        out.push(chunks);
        out.push(vec![]);
    }
    out
}

/// Requests and chunks of pseudo-random sizes, often right at or next to segment boundaries.
fn random_plan(len: usize, seed: u64) -> Plan {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = |bound: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % bound as u64) as usize
    };
    let sizes = [0, 1, 7, S - 1, S, S + 1, 2 * S];
    let mut plan = Vec::new();
    let mut left = len;
    while left > 0 {
        let request = if next(2) == 0 { sizes[next(sizes.len())] } else { next(3 * S) }.min(left);
        let mut chunks = Vec::new();
        let mut r = request;
        while r > 0 {
            let c = if next(2) == 0 { sizes[next(sizes.len())] } else { next(S) }.min(r);
            chunks.push(c);
            r -= c;
        }
        plan.push(chunks);
        left -= request;
    }
    plan
}

/// The chunkings every size is sealed with, named for failure messages.
fn plans(n: usize) -> Vec<(String, Plan)> {
    let mut plans = vec![
        ("one chunk".to_string(), vec![vec![n]]),
        ("7-byte chunks".into(), vec![cut(n, 7)]),
        ("4099-byte chunks".into(), vec![cut(n, 4099)]),
        ("segment-sized chunks".into(), vec![cut(n, S)]),
        ("requests of one segment".into(), requests(n, S, S)),
        ("requests of two segments in 4099-byte chunks".into(), requests(n, 2 * S, 4099)),
        ("requests of SEGMENT+1 in 1000-byte chunks".into(), requests(n, S + 1, 1000)),
        ("requests of SEGMENT-1 in segment-sized chunks".into(), requests(n, S - 1, S)),
        ("requests of 100000 in 7-byte chunks".into(), requests(n, 100_000, 7)),
        ("empty requests and chunks around 4099-byte chunks".into(), with_empties(requests(n, S, 4099))),
        ("no requests at all".into(), if n == 0 { vec![] } else { vec![vec![n]] }),
    ];
    for seed in 1..=4 {
        plans.push((format!("random plan {seed}"), random_plan(n, seed)));
    }
    plans
}

/// Seals `plain` as an upload would, following `plan`: one [`Sealer`] per request, carrying
/// the next segment and the held-back tail from request to request, and a last `Sealer` that
/// only finishes. Checks the sealer's invariants on the way. Returns the object and its runs.
fn seal_with(dek: &Dek, plain: &[u8], digest: &Digest, plan: &Plan) -> (Vec<u8>, Vec<Run>) {
    let mut object = Vec::new();
    let mut runs: Vec<Run> = Vec::new();
    let mut next = 0u64;
    let mut tail = Vec::new();
    let mut at = 0usize;
    for request in plan {
        let mut sealer = Sealer::new(dek.clone(), next, &tail).unwrap();
        assert_eq!(sealer.next_segment(), next);
        assert_eq!(sealer.tail(), &tail[..]);
        assert_eq!(sealer.run(), None, "a sealer that sealed nothing has no run");
        for &len in request {
            let out = sealer.push(&plain[at..at + len]).unwrap();
            at += len;
            assert_eq!(out.len() % SS, 0, "push returns whole sealed segments");
            object.extend_from_slice(&out);
            assert_eq!(object.len() as u64, sealer.next_segment() * SEALED_SEGMENT);
            assert_eq!(sealer.next_segment() as usize * S + sealer.tail().len(), at, "nothing lost, nothing doubled");
            if at > 0 {
                assert!((1..=S).contains(&sealer.tail().len()), "the last 1..=SEGMENT bytes are held back");
            }
            assert_eq!(sealer.tail(), &plain[at - sealer.tail().len()..at]);
        }
        match sealer.run() {
            Some(run) => {
                assert_eq!(run.first, next);
                assert!(sealer.next_segment() > next);
                runs.push(run);
            }
            None => assert_eq!(sealer.next_segment(), next),
        }
        next = sealer.next_segment();
        tail = sealer.tail().to_vec();
    }
    assert_eq!(at, plain.len());
    let (last, run) = Sealer::new(dek.clone(), next, &tail).unwrap().finish(digest).unwrap();
    assert_eq!(run.first, next, "the final segment is a run of its own");
    assert_eq!(last.len(), tail.len() + TAG);
    object.extend_from_slice(&last);
    runs.push(run);
    (object, runs)
}

/// A sealed blob with everything a reader needs.
struct Blob {
    plain: Vec<u8>,
    digest: Digest,
    dek: Dek,
    object: Vec<u8>,
    runs: Vec<Run>,
}

impl Blob {
    fn seal(dek: &Dek, plain: Vec<u8>, plan: &Plan) -> Blob {
        let digest = Digest::sha256_of(&plain);
        let (object, runs) = seal_with(dek, &plain, &digest, plan);
        Blob { plain, digest, dek: dek.clone(), object, runs }
    }

    fn len(&self) -> u64 {
        self.plain.len() as u64
    }

    /// The object bytes [`cipher_span`] names for `range`, as much of them as `object` has.
    fn span<'a>(&self, object: &'a [u8], range: &Range<u64>) -> &'a [u8] {
        let (_, bytes) = cipher_span(range, self.len());
        let end = (bytes.end as usize).min(object.len());
        &object[(bytes.start as usize).min(end)..end]
    }

    /// Opens `ciphertext` (delivered in pieces of `piece` bytes) as `range` of this blob.
    fn open(&self, ciphertext: &[u8], range: Range<u64>, piece: usize) -> (Vec<u8>, Option<io::Error>) {
        self.open_as(ciphertext, &self.dek, &self.runs, &self.digest, self.len(), range, piece)
    }

    /// Opens `ciphertext` as `range` of a blob described by the other arguments.
    #[allow(clippy::too_many_arguments)]
    fn open_as(
        &self,
        ciphertext: &[u8],
        dek: &Dek,
        runs: &[Run],
        digest: &Digest,
        len: u64,
        range: Range<u64>,
        piece: usize,
    ) -> (Vec<u8>, Option<io::Error>) {
        let pieces: Vec<io::Result<Bytes>> =
            ciphertext.chunks(piece.max(1)).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        drain(open_stream(stream::iter(pieces).boxed(), dek.clone(), runs.to_vec(), digest.clone(), len, range))
    }

    /// Reads `range` exactly as a ranged GET would, and checks it.
    fn read_ok(&self, range: Range<u64>, piece: usize) {
        let (out, err) = self.open(self.span(&self.object, &range), range.clone(), piece);
        if let Some(e) = err {
            panic!("n={} range {range:?} piece {piece}: {e}", self.len());
        }
        let want = &self.plain[range.start as usize..range.end as usize];
        assert!(out == want, "n={} range {range:?} piece {piece}: wrong plaintext ({} bytes)", self.len(), out.len());
    }

    /// The sealed bytes of segment `i` in `object`.
    fn segment(&self, i: usize) -> Range<usize> {
        i * SS..((i + 1) * SS).min(self.object.len())
    }
}

/// What a reader is given: a data key, the record (runs, digest, length) and the object.
#[derive(Clone)]
struct Reading {
    dek: Dek,
    runs: Vec<Run>,
    digest: Digest,
    len: u64,
    object: Vec<u8>,
}

/// Everything `stream` yields up to its first error, and that error. After an error the
/// stream must end.
fn drain(mut stream: ByteStream) -> (Vec<u8>, Option<io::Error>) {
    block_on(async {
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => {
                    assert!(stream.next().await.is_none(), "the stream goes on after an error");
                    return (out, Some(e));
                }
            }
        }
        (out, None)
    })
}

/// Checks that a read was refused, and that what it yielded first is the plaintext's start.
/// Returns how many bytes it yielded.
fn refused(what: &str, (out, err): (Vec<u8>, Option<io::Error>), plain: &[u8]) -> usize {
    let Some(err) = err else { panic!("{what}: opened without an error, {} bytes", out.len()) };
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}: {err}");
    assert!(out.len() <= plain.len() && out == plain[..out.len()], "{what}: yielded bytes that are not the plaintext");
    out.len()
}

fn flip(object: &[u8], at: usize) -> Vec<u8> {
    let mut o = object.to_vec();
    o[at] ^= 0x10;
    o
}

/// Piece sizes tampered objects are delivered in.
const TAMPER_PIECES: [usize; 4] = [1000, SS, SS + 1, usize::MAX];

/// The raw bytes of a data key, recovered through the public API: wrapped by a KEK whose
/// material the test knows, then unwrapped by hand (`nonce ‖ sealed key ‖ tag`, associated
/// data `<kek id>|<context>`).
fn raw_dek(dek: &Dek) -> [u8; 32] {
    let material = [0x5a; 32];
    let kek = Kek::from_raw("spec.1", material).unwrap();
    let wrapped = kek.wrap(dek, b"ctx").unwrap();
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &material).unwrap());
    let (n, body) = wrapped.split_at(NONCE_LEN);
    let mut body = body.to_vec();
    let raw =
        key.open_in_place(Nonce::try_assume_unique_for_key(n).unwrap(), Aad::from(b"spec.1|ctx"), &mut body).unwrap();
    raw.try_into().unwrap()
}

fn spec_nonce(prefix: &[u8; PREFIX_LEN], index: u64, last: bool) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..PREFIX_LEN].copy_from_slice(prefix);
    n[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&u32::try_from(index).unwrap().to_be_bytes());
    n[NONCE_LEN - 1] = u8::from(last);
    n
}

const SIZES: [usize; 10] = [0, 1, S - 1, S, S + 1, 2 * S - 1, 2 * S, 2 * S + 1, 5 * S + 17, MIB + 3];

#[test]
fn round_trips_for_every_size_and_chunking() {
    let dek = Dek::generate().unwrap();
    for (i, n) in SIZES.into_iter().enumerate() {
        let plain = plaintext(n, i as u64 + 1);
        for (name, plan) in plans(n) {
            let blob = Blob::seal(&dek, plain.clone(), &plan);
            assert_eq!(blob.object.len() as u64, sealed_len(n as u64), "n={n}, {name}");
            assert_eq!(plain_len(blob.object.len() as u64), Some(n as u64), "n={n}, {name}");
            let stored = Run::encode(&blob.runs);
            assert_eq!(Run::decode(&stored).unwrap(), blob.runs, "n={n}, {name}");
            for piece in [blob.object.len().max(1), 4093, SS] {
                let (out, err) = blob.open(&blob.object, 0..n as u64, piece);
                assert!(err.is_none(), "n={n}, {name}, piece {piece}: {err:?}");
                assert!(out == plain, "n={n}, {name}, piece {piece}: wrong plaintext");
            }
        }
    }
}

#[test]
fn format_follows_the_documented_layout() {
    let dek = Dek::generate().unwrap();
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &raw_dek(&dek)).unwrap());
    for (i, n) in SIZES.into_iter().enumerate() {
        let blob = Blob::seal(&dek, plaintext(n, 100 + i as u64), &random_plan(n, i as u64 + 7));
        let count = segments(n as u64);
        assert_eq!(blob.object.len(), (count as usize - 1) * SS + (n - (count as usize - 1) * S) + TAG);
        for index in 0..count {
            let last = index == count - 1;
            let prefix = Run::prefix_of(&blob.runs, index).unwrap();
            let n_bytes = spec_nonce(prefix, index, last);
            assert_eq!(nonce(prefix, index, last).unwrap().as_ref(), &n_bytes);
            let aad = if last { blob.digest.to_string().into_bytes() } else { Vec::new() };
            let mut sealed = blob.object[blob.segment(index as usize)].to_vec();
            let opened = key
                .open_in_place(Nonce::assume_unique_for_key(n_bytes), Aad::from(aad), &mut sealed)
                .unwrap_or_else(|_| panic!("n={n}: segment {index} does not open by the spec"));
            let from = index as usize * S;
            assert!(opened == &blob.plain[from..from + opened.len()], "n={n}: segment {index}");
        }
    }

    // And the other way: an object built by hand from the spec, with runs of every shape, opens.
    let plain = plaintext(4 * S + 9, 42);
    let digest = Digest::sha256_of(&plain);
    let runs = vec![
        Run { first: 0, prefix: [1; PREFIX_LEN] },
        Run { first: 2, prefix: [2; PREFIX_LEN] },
        Run { first: 3, prefix: [3; PREFIX_LEN] },
        Run { first: 4, prefix: [4; PREFIX_LEN] },
    ];
    let mut object = Vec::new();
    for (index, seg) in plain.chunks(S).enumerate() {
        let last = index == 4;
        let mut buf = seg.to_vec();
        let aad = if last { digest.to_string().into_bytes() } else { Vec::new() };
        let prefix = Run::prefix_of(&runs, index as u64).unwrap();
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(spec_nonce(prefix, index as u64, last)),
                Aad::from(aad),
                &mut buf,
            )
            .unwrap();
        object.extend_from_slice(&buf);
        object.extend_from_slice(tag.as_ref());
    }
    let blob = Blob { plain, digest, dek, object, runs };
    blob.read_ok(0..blob.len(), 5000);
    blob.read_ok(2 * SEGMENT - 3..3 * SEGMENT + 4, 5000);
}

#[test]
fn ranged_reads_at_and_around_segment_boundaries() {
    let dek = Dek::generate().unwrap();
    for (i, n) in [0, 1, S - 1, S, S + 1, 2 * S - 1, 2 * S, 2 * S + 1, 3 * S + 5, MIB + 3].into_iter().enumerate() {
        // Sealed in several runs, so ranges cross runs as well as segments.
        let blob = Blob::seal(&dek, plaintext(n, 200 + i as u64), &requests(n, S + 1, 4099));
        let n = n as u64;
        let s = SEGMENT;
        let mut offsets: Vec<u64> = [
            0,
            1,
            s - 1,
            s,
            s + 1,
            2 * s - 1,
            2 * s,
            2 * s + 1,
            n / 2,
            n.saturating_sub(s + 1),
            n.saturating_sub(1),
            n,
        ]
        .into_iter()
        .filter(|o| *o <= n)
        .collect();
        offsets.sort_unstable();
        offsets.dedup();
        let mut pieces = vec![1000, SS, MIB];
        if n <= SEGMENT + 1 {
            pieces.push(1);
        }
        for (a, &start) in offsets.iter().enumerate() {
            for &end in &offsets[a..] {
                for &piece in &pieces {
                    blob.read_ok(start..end, piece);
                }
            }
        }
    }
}

#[test]
fn a_tampered_object_is_refused_and_never_yields_a_wrong_byte() {
    let dek = Dek::generate().unwrap();
    let n = 3 * S + 100; // four segments, the last one short
    let plan = requests(n, S + 1, 4099);
    let blob = Blob::seal(&dek, plaintext(n, 300), &plan);
    let same_dek = Blob::seal(&dek, plaintext(n, 301), &plan);
    let other_dek = Blob::seal(&Dek::generate().unwrap(), plaintext(n, 302), &plan);
    assert!(blob.runs.len() > 2, "sealed in several runs");
    let o = &blob.object;
    let all = 0..blob.len();
    let last = 3;

    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("bit flipped in the first segment", flip(o, 5)),
        ("bit flipped in a middle segment", flip(o, 2 * SS + 100)),
        ("bit flipped in the last segment", flip(o, 3 * SS + 7)),
        ("bit flipped in the first segment's tag", flip(o, SS - 1)),
        ("bit flipped in a middle segment's tag", flip(o, 2 * SS - TAG)),
        ("bit flipped in the last segment's tag", flip(o, o.len() - 1)),
        ("final segment dropped", o[..3 * SS].to_vec()),
        ("cut in the middle of a segment", o[..SS + 100].to_vec()),
        ("cut in the last segment's tag", o[..o.len() - 1].to_vec()),
        ("cut to nothing", Vec::new()),
        ("one byte appended", [o.as_slice(), &[0]].concat()),
        ("a tag's worth appended", [o.as_slice(), &[0; TAG]].concat()),
        ("a segment appended", [o.as_slice(), &o[blob.segment(0)]].concat()),
        ("the final segment appended again", [o.as_slice(), &o[blob.segment(last)]].concat()),
    ]
    .into_iter()
    .map(|(what, object)| (what.to_string(), object))
    .collect();
    let mut swapped = o.clone();
    swapped[blob.segment(0)].copy_from_slice(&o[blob.segment(1)]);
    swapped[blob.segment(1)].copy_from_slice(&o[blob.segment(0)]);
    cases.push(("first two segments swapped".into(), swapped));
    let mut swapped = o.clone();
    swapped[blob.segment(1)].copy_from_slice(&o[blob.segment(2)]);
    swapped[blob.segment(2)].copy_from_slice(&o[blob.segment(1)]);
    cases.push(("middle segments swapped".into(), swapped));
    let mut repeated = o.clone();
    repeated[blob.segment(2)].copy_from_slice(&o[blob.segment(1)]);
    cases.push(("a segment repeated in place of the next".into(), repeated));
    for (other, name) in [(&same_dek, "same"), (&other_dek, "another")] {
        for i in [0, 1, last] {
            let mut mixed = o.clone();
            mixed[blob.segment(i)].copy_from_slice(&other.object[other.segment(i)]);
            cases.push((format!("segment {i} taken from a blob sealed with the {name} data key"), mixed));
        }
    }

    for (what, object) in &cases {
        for piece in TAMPER_PIECES {
            let got = blob.open(object, all.clone(), piece);
            refused(&format!("{what} (pieces of {piece})"), got, &blob.plain);
        }
    }

    // Damage before the range's first segment yields nothing.
    for piece in TAMPER_PIECES {
        assert_eq!(refused("first segment", blob.open(&flip(o, 5), all.clone(), piece), &blob.plain), 0);
        let mut swapped = o.clone();
        swapped[blob.segment(0)].copy_from_slice(&o[blob.segment(1)]);
        swapped[blob.segment(1)].copy_from_slice(&o[blob.segment(0)]);
        assert_eq!(refused("swap", blob.open(&swapped, all.clone(), piece), &blob.plain), 0);
    }

    // A ranged read checks the segments it touches: damage inside them is refused...
    let tampered = flip(o, 2 * SS + 100);
    for range in [2 * SEGMENT..2 * SEGMENT + 1, SEGMENT + 5..2 * SEGMENT + 5, 2 * SEGMENT + 99..blob.len()] {
        for piece in TAMPER_PIECES {
            let got = blob.open(blob.span(&tampered, &range), range.clone(), piece);
            let want = &blob.plain[range.start as usize..range.end as usize];
            refused(&format!("range {range:?}, piece {piece}"), got, want);
        }
    }
    // ...and damage outside them is not read at all.
    let range = 5..SEGMENT + 5;
    let (out, err) = blob.open(blob.span(&tampered, &range), range.clone(), 1000);
    assert!(err.is_none() && out == blob.plain[5..S + 5]);
}

#[test]
fn a_tampered_record_is_refused() {
    let dek = Dek::generate().unwrap();
    let n = 3 * S + 100;
    let plan = requests(n, S + 1, 4099);
    let blob = Blob::seal(&dek, plaintext(n, 400), &plan);
    let other = Blob::seal(&dek, plaintext(n, 401), &plan);
    let o = &blob.object;
    let all = 0..blob.len();
    let (len, digest, runs) = (blob.len(), &blob.digest, &blob.runs);
    assert_eq!(runs.first().map(|r| r.first), Some(0));
    let k = runs.len() - 1;

    let base = Reading { dek: dek.clone(), runs: runs.clone(), digest: digest.clone(), len, object: o.clone() };
    let with_runs = |edit: &dyn Fn(&mut Vec<Run>)| {
        let mut r = runs.clone();
        edit(&mut r);
        Reading { runs: r, ..base.clone() }
    };
    let mut cases: Vec<(&str, Reading)> = vec![
        ("wrong data key", Reading { dek: Dek::generate().unwrap(), ..base.clone() }),
        ("another blob's digest", Reading { digest: other.digest.clone(), ..base.clone() }),
        ("a digest of nothing", Reading { digest: Digest::sha256_of(b""), ..base.clone() }),
        ("first run's prefix altered", with_runs(&|r| r[0].prefix[3] ^= 1)),
        ("second run's prefix altered", with_runs(&|r| r[1].prefix[0] ^= 1)),
        ("final run's prefix altered", with_runs(&|r| r[k].prefix[6] ^= 1)),
        ("no runs", with_runs(&|r| r.clear())),
        ("final run missing", with_runs(&|r| r.truncate(k))),
        ("first run missing", with_runs(&|r| *r = r[1..].to_vec())),
        ("a middle run missing", with_runs(&|r| *r = [&r[..1], &r[2..]].concat())),
        ("a run's first segment moved", with_runs(&|r| r[1].first += 1)),
        ("another blob's runs", Reading { runs: other.runs.clone(), ..base.clone() }),
        // The object cut back to whole segments, and the length claimed to match: the segment
        // now read as the final one was not sealed as final.
        (
            "cut to three segments, read as 3 segments",
            Reading { len: 3 * SEGMENT, object: o[..3 * SS].to_vec(), ..base.clone() },
        ),
        ("cut to one segment, read as 1 segment", Reading { len: SEGMENT, object: o[..SS].to_vec(), ..base.clone() }),
        ("read as one byte longer", Reading { len: len + 1, ..base.clone() }),
        ("read as one byte shorter", Reading { len: len - 1, ..base.clone() }),
    ];
    // The final segment and its run both taken from another blob under the same data key:
    // the nonce then matches, so only the digest bound to the final segment refuses it.
    let mut mixed = o.clone();
    mixed[blob.segment(3)].copy_from_slice(&other.object[other.segment(3)]);
    let last_run = other.runs[other.runs.len() - 1];
    assert_eq!(last_run.first, 3);
    let mut r = runs.clone();
    r[k] = last_run;
    cases.push(("final segment and run from another blob", Reading { runs: r, object: mixed, ..base.clone() }));

    for (what, c) in &cases {
        for piece in TAMPER_PIECES {
            let range = 0..c.len;
            let (_, bytes) = cipher_span(&range, c.len);
            let span = &c.object[bytes.start as usize..(bytes.end as usize).min(c.object.len())];
            let got = blob.open_as(span, &c.dek, &c.runs, &c.digest, c.len, range, piece);
            refused(&format!("{what} (pieces of {piece})"), got, &blob.plain);
        }
    }

    // The digest binds the final segment only: a wrong one lets no byte of it through.
    for piece in TAMPER_PIECES {
        let got = blob.open_as(o, &dek, runs, &other.digest, len, all.clone(), piece);
        assert!(refused("wrong digest", got, &blob.plain) <= 3 * S);
    }
    // A wrong key yields nothing.
    for piece in TAMPER_PIECES {
        let got = blob.open_as(o, &Dek::generate().unwrap(), runs, digest, len, all.clone(), piece);
        assert_eq!(refused("wrong key", got, &blob.plain), 0);
    }
}

#[test]
fn an_empty_blob_is_authenticated_too() {
    let dek = Dek::generate().unwrap();
    let blob = Blob::seal(&dek, Vec::new(), &vec![]);
    assert_eq!(blob.object.len(), TAG);
    blob.read_ok(0..0, 1);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("tag flipped", flip(&blob.object, 0)),
        ("nothing stored", Vec::new()),
        ("tag cut", blob.object[..TAG - 1].to_vec()),
        ("byte appended", [blob.object.as_slice(), &[0]].concat()),
    ];
    for (what, object) in &cases {
        refused(what, blob.open(object, 0..0, 7), &[]);
    }
    let other = Digest::sha256_of(b"x");
    refused("wrong digest", blob.open_as(&blob.object, &dek, &blob.runs, &other, 0, 0..0, 7), &[]);
    let again = Blob::seal(&dek, Vec::new(), &vec![vec![0]]);
    assert_ne!(again.object, blob.object, "a fresh prefix every time");
    refused("another empty blob's tag", blob.open(&again.object, 0..0, 7), &[]);
}

#[test]
fn a_failing_source_ends_the_stream_with_its_error() {
    let dek = Dek::generate().unwrap();
    let blob = Blob::seal(&dek, plaintext(2 * S + 3, 500), &vec![vec![2 * S + 3]]);
    let pieces: Vec<io::Result<Bytes>> =
        vec![Ok(Bytes::copy_from_slice(&blob.object[..SS])), Err(io::Error::other("connection reset"))];
    let s = open_stream(
        stream::iter(pieces).boxed(),
        dek,
        blob.runs.clone(),
        blob.digest.clone(),
        blob.len(),
        0..blob.len(),
    );
    let (out, err) = drain(s);
    assert_eq!(err.map(|e| e.to_string()).as_deref(), Some("connection reset"));
    assert!(out == blob.plain[..S]);
}

#[test]
fn ciphertext_shared_with_others_is_read_not_written() {
    let dek = Dek::generate().unwrap();
    let blob = Blob::seal(&dek, plaintext(3 * S + 7, 550), &vec![vec![3 * S + 7]]);
    let object = Bytes::from(blob.object.clone());
    for piece in [1000, SS, SS + 1, object.len()] {
        // Slices of one buffer, and whole buffers the caller also holds.
        let slices: Vec<Bytes> =
            (0..object.len()).step_by(piece).map(|at| object.slice(at..(at + piece).min(object.len()))).collect();
        let held = slices.iter().map(|b| Bytes::copy_from_slice(b)).collect::<Vec<_>>();
        for pieces in [slices, held.clone()] {
            let s = stream::iter(pieces.into_iter().map(Ok)).boxed();
            let (out, err) =
                drain(open_stream(s, dek.clone(), blob.runs.clone(), blob.digest.clone(), blob.len(), 0..blob.len()));
            assert!(err.is_none() && out == blob.plain, "piece {piece}");
        }
        assert!(object == blob.object && held.concat() == blob.object, "piece {piece}: a shared buffer was altered");
    }
}

#[test]
fn the_sealer_holds_back_the_tail_and_every_request_gets_fresh_nonces() {
    let dek = Dek::generate().unwrap();
    let plain = plaintext(3 * S, 600);
    let mut sealer = Sealer::new(dek.clone(), 0, &[]).unwrap();
    assert!(sealer.push(&plain[..S]).unwrap().is_empty(), "a whole segment may be the last");
    assert_eq!(sealer.tail().len(), S);
    assert!(sealer.push(&[]).unwrap().is_empty());
    assert_eq!(sealer.push(&plain[S..S + 1]).unwrap().len(), SS);
    assert_eq!((sealer.next_segment(), sealer.tail().len()), (1, 1));
    assert_eq!(sealer.push(&plain[S + 1..]).unwrap().len(), SS);
    assert_eq!((sealer.next_segment(), sealer.tail()), (2, &plain[2 * S..]));
    assert!(Sealer::new(dek.clone(), 0, &plain[..S + 1]).is_err(), "a tail longer than a segment");

    // The same plaintext sealed twice under one data key (two racing writers of one upload):
    // no segment repeats, every run has its own prefix.
    let plan = requests(plain.len(), S, 4099);
    let digest = Digest::sha256_of(&plain);
    let (a, runs_a) = seal_with(&dek, &plain, &digest, &plan);
    let (b, runs_b) = seal_with(&dek, &plain, &digest, &plan);
    for i in 0..3 {
        assert_ne!(a[i * SS..(i + 1) * SS], b[i * SS..(i + 1) * SS], "segment {i}");
    }
    let mut prefixes: Vec<_> = runs_a.iter().chain(&runs_b).map(|r| r.prefix).collect();
    let count = prefixes.len();
    prefixes.sort_unstable();
    prefixes.dedup();
    assert_eq!(prefixes.len(), count);
}

#[test]
fn a_blob_copy_data_key_unwraps_only_with_its_kek_digest_and_key_name() {
    let kek = Kek::from_raw("default.1", [1; 32]).unwrap();
    let dek = Dek::generate().unwrap();
    let blob = Blob::seal(&dek, plaintext(S + 10, 700), &vec![vec![S + 10]]);
    let wrapped = kek.wrap(&dek, &blob_wrap_context(&blob.digest, "default")).unwrap();
    let record = SealedBlob {
        key_name: "default".into(),
        object: "o-1".into(),
        size: blob.len(),
        kek: kek.id().into(),
        wrapped,
        runs: blob.runs.clone(),
    };
    let unwrapped = record.data_key(&kek, &blob.digest).unwrap();
    let (out, err) =
        blob.open_as(&blob.object, &unwrapped, &record.runs, &blob.digest, record.size, 0..record.size, SS);
    assert!(err.is_none() && out == blob.plain, "the unwrapped key opens the blob");

    let other_material = Kek::from_raw("default.1", [2; 32]).unwrap();
    assert!(record.data_key(&other_material, &blob.digest).is_err(), "another KEK's material");
    let other_id = Kek::from_raw("default.2", [1; 32]).unwrap();
    assert!(record.data_key(&other_id, &blob.digest).is_err(), "the same material under another id");
    assert!(record.data_key(&kek, &Digest::sha256_of(b"other")).is_err(), "another digest");
    let renamed = SealedBlob { key_name: "team-a".into(), ..record.clone() };
    assert!(renamed.data_key(&kek, &blob.digest).is_err(), "another key name");
    let mut cut = record.clone();
    cut.wrapped.pop();
    assert!(cut.data_key(&kek, &blob.digest).is_err(), "a cut wrapped key");
    let mut flipped = record;
    flipped.wrapped[20] ^= 1;
    assert!(flipped.data_key(&kek, &blob.digest).is_err(), "an altered wrapped key");
}

#[test]
fn sizes_and_spans_agree() {
    for n in (0..3 * SEGMENT + 40).step_by(13).chain([SEGMENT, 2 * SEGMENT, 3 * SEGMENT]) {
        assert_eq!(plain_len(sealed_len(n)), Some(n), "{n}");
        let all = cipher_span(&(0..n), n);
        assert_eq!(all, (0..segments(n), 0..sealed_len(n)), "{n}");
    }
    for (range, len) in [(0..1, 5 * SEGMENT), (SEGMENT..SEGMENT, 5 * SEGMENT), (5 * SEGMENT..5 * SEGMENT, 5 * SEGMENT)]
    {
        let (segs, bytes) = cipher_span(&range, len);
        assert!(!segs.is_empty());
        assert_eq!(bytes.start, segs.start * SEALED_SEGMENT);
    }
}

/// Every sealed size `plain_len` accepts should be one `sealed_len` produces: its doc says it
/// answers "when that size is possible".
#[test]
fn plain_len_accepts_only_possible_sizes() {
    for sealed in 0..4 * SEALED_SEGMENT + 40 {
        if let Some(n) = plain_len(sealed) {
            assert_eq!(
                sealed_len(n),
                sealed,
                "plain_len({sealed}) = Some({n}), but {n} bytes seal to {}",
                sealed_len(n)
            );
        }
    }
}

/// Opens `object` (stored as a local file) as `range` of `blob` with [`open_file`], as a local
/// read does, and returns what it yielded (each piece kept as handed out) and its error.
fn open_from_file(blob: &Blob, object: &[u8], range: Range<u64>) -> (Vec<Bytes>, Option<io::Error>) {
    let mut file = tempfile::tempfile().unwrap();
    io::Write::write_all(&mut file, object).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
    rt.block_on(async {
        let mut s = open_file(
            file,
            object.len() as u64,
            blob.dek.clone(),
            blob.runs.clone(),
            blob.digest.clone(),
            blob.len(),
            range,
        );
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.push(b),
                Err(e) => {
                    assert!(s.next().await.is_none(), "the stream goes on after an error");
                    return (out, Some(e));
                }
            }
        }
        (out, None)
    })
}

fn joined((pieces, err): (Vec<Bytes>, Option<io::Error>)) -> (Vec<u8>, Option<io::Error>) {
    (pieces.concat(), err)
}

#[test]
fn file_reads_open_every_size_and_range_across_their_spans() {
    let dek = Dek::generate().unwrap();
    let span = SPAN_SEGMENTS as usize * S;
    let sizes = [0, 1, S - 1, S, S + 1, span - 1, span, span + 1, 2 * span, 2 * span + S + 17, 3 * S];
    for (i, n) in sizes.into_iter().enumerate() {
        let blob = Blob::seal(&dek, plaintext(n, 900 + i as u64), &requests(n, 3 * S + 5, 70_000));
        let len = n as u64;
        let mut ranges: Vec<Range<u64>> = std::iter::once(0..len).collect();
        let (s, sp) = (SEGMENT, SPAN_SEGMENTS * SEGMENT);
        for r in [
            0..1,
            s - 1..s + 1,
            s..2 * s,
            sp - 5..sp + 5,
            sp..sp + 1,
            sp - 1..sp,
            1..2 * sp + 3,
            sp + 7..2 * sp - 7,
            2 * sp - 1..2 * sp + s + 1,
            len.saturating_sub(1)..len,
            len / 2..len,
        ] {
            if r.start < r.end && r.end <= len {
                ranges.push(r);
            }
        }
        for range in ranges {
            // Only the segments the range touches are given: the rest of the file is garbage.
            let (_, bytes) = cipher_span(&range, len);
            let mut object = vec![0xee; blob.object.len()];
            object[bytes.start as usize..bytes.end as usize]
                .copy_from_slice(&blob.object[bytes.start as usize..bytes.end as usize]);
            let (pieces, err) = open_from_file(&blob, &object, range.clone());
            assert!(err.is_none(), "n={n} range {range:?}: {err:?}");
            assert!(pieces.iter().all(|p| !p.is_empty() && p.len() <= S), "n={n}: one view per segment at most");
            let got = pieces.concat();
            assert!(
                got == blob.plain[range.start as usize..range.end as usize],
                "n={n} range {range:?}: wrong plaintext"
            );
        }
    }
}

#[test]
fn file_reads_hand_out_views_that_outlive_the_read() {
    // Many spans, all views held until the end: no buffer is reused while a view of it lives.
    let dek = Dek::generate().unwrap();
    let n = 5 * SPAN_SEGMENTS as usize * S + 123;
    let blob = Blob::seal(&dek, plaintext(n, 950), &vec![vec![n]]);
    let (pieces, err) = open_from_file(&blob, &blob.object, 0..blob.len());
    assert!(err.is_none());
    assert_eq!(pieces.len(), segments(blob.len()) as usize);
    assert!(pieces.concat() == blob.plain);
}

#[test]
fn a_tampered_file_is_refused_at_the_damaged_segment() {
    let dek = Dek::generate().unwrap();
    let span = SPAN_SEGMENTS as usize;
    let n = 3 * span * S + 100; // three full spans and a short segment
    let blob = Blob::seal(&dek, plaintext(n, 960), &requests(n, 5 * S + 3, 65_000));
    let o = &blob.object;
    let all = 0..blob.len();
    let last = segments(blob.len()) as usize - 1;
    // Damage in segment `i` yields exactly the spans before its span, then the error: the
    // first span's damage is an error before any byte (an error status, not a cut body).
    for i in [0, 1, span / 2, span - 1, span, span + 3, 2 * span + 1, last] {
        for at in [blob.segment(i).start + 3, blob.segment(i).end - 1] {
            let got = joined(open_from_file(&blob, &flip(o, at), all.clone()));
            assert_eq!(refused(&format!("segment {i} flipped at {at}"), got, &blob.plain), (i - i % span) * S);
        }
    }
    let mut swapped = o.clone();
    swapped[blob.segment(span + 1)].copy_from_slice(&o[blob.segment(span + 2)]);
    swapped[blob.segment(span + 2)].copy_from_slice(&o[blob.segment(span + 1)]);
    assert_eq!(refused("swap", joined(open_from_file(&blob, &swapped, all.clone())), &blob.plain), span * S);
    // Cut inside a span, at a span's end, inside the last segment (a span of its own); extended.
    for (what, object, before) in [
        ("cut mid-segment", o[..(span + 2) * SS + 5].to_vec(), span),
        ("cut at a span's end", o[..span * SS].to_vec(), span),
        ("cut in the last tag", o[..o.len() - 1].to_vec(), last),
        ("a byte appended", [o.as_slice(), &[0]].concat(), last),
        ("a segment appended", [o.as_slice(), &o[blob.segment(0)]].concat(), last),
    ] {
        assert_eq!(
            refused(what, joined(open_from_file(&blob, &object, all.clone())), &blob.plain),
            before * S,
            "{what}"
        );
    }
    // A range reads only its segments: damage in the middle of a span outside the range is
    // not read, damage inside it is refused.
    let tampered = flip(o, blob.segment(span + 5).start + 10);
    let range = (span as u64 + 6) * SEGMENT + 3..(2 * span as u64 + 1) * SEGMENT;
    let (out, err) = joined(open_from_file(&blob, &tampered, range.clone()));
    assert!(err.is_none() && out == blob.plain[range.start as usize..range.end as usize]);
    let range = (span as u64 + 5) * SEGMENT - 3..(span as u64 + 6) * SEGMENT;
    let got = joined(open_from_file(&blob, &tampered, range.clone()));
    assert_eq!(refused("range over the damage", got, &blob.plain[range.start as usize..range.end as usize]), 0);
    // A wrong key yields nothing.
    let other = Blob { dek: Dek::generate().unwrap(), ..Blob::seal(&dek, blob.plain.clone(), &vec![vec![n]]) };
    assert_eq!(refused("wrong key", joined(open_from_file(&other, &other.object, all)), &blob.plain), 0);
}

#[test]
fn an_empty_file_blob_is_authenticated_too() {
    let dek = Dek::generate().unwrap();
    let blob = Blob::seal(&dek, Vec::new(), &vec![]);
    let (pieces, err) = open_from_file(&blob, &blob.object, 0..0);
    assert!(err.is_none() && pieces.is_empty());
    for (what, object) in [
        ("tag flipped", flip(&blob.object, 0)),
        ("nothing stored", Vec::new()),
        ("byte appended", [blob.object.as_slice(), &[0]].concat()),
    ] {
        refused(what, joined(open_from_file(&blob, &object, 0..0)), &[]);
    }
}
