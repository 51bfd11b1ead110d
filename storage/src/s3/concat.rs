//! [`concat`]: one object made of several, server-side (no byte passes through Berth).
//!
//! Each source is copied with ranged `UploadPartCopy` parts of at most 5 GiB (a source is
//! split evenly, so no range but the last is under S3's 5 MiB minimum). When the ranges
//! outnumber S3's 10,000 parts, consecutive sources are first joined into intermediate
//! objects, then those into the target.

use std::ops::Range;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::raw::{Completed, CompletedPart};
use super::{MAX_PART, MAX_PARTS, MIN_PART, S3};
use crate::error::{Error, Result};

/// Copy requests in flight per concatenation.
const COPY_CONCURRENCY: usize = 4;

/// The copy ranges of one source of `size` bytes: as few as fit [`MAX_PART`], of even size.
fn ranges_of(size: u64) -> Vec<Range<u64>> {
    let count = size.div_ceil(MAX_PART).max(1);
    let step = size.div_ceil(count);
    (0..count).map(|i| (i * step)..((i + 1) * step).min(size)).filter(|r| !r.is_empty()).collect()
}

/// Groups consecutive sources so that each group needs at most `max_parts` copy ranges.
fn groups(sources: &[(Path, u64)], max_parts: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut count) = (0, 0);
    for (i, (_, size)) in sources.iter().enumerate() {
        let n = ranges_of(*size).len();
        if count + n > max_parts && i > start {
            out.push(start..i);
            (start, count) = (i, 0);
        }
        count += n;
    }
    if start < sources.len() {
        out.push(start..sources.len());
    }
    out
}

/// Makes `target` the concatenation of `sources` (path, size), in order. Every source but
/// the last must hold at least 5 MiB. With `if_absent`, an existing `target` wins.
/// Intermediate objects, when needed, are written under `scratch` and removed.
pub fn concat<'a>(
    s3: &'a S3,
    sources: &'a [(Path, u64)],
    target: &'a Path,
    if_absent: bool,
    scratch: &'a Path,
) -> BoxFuture<'a, Result<Completed>> {
    concat_within(s3, sources, target, if_absent, scratch, MAX_PARTS)
}

/// [`concat`] with at most `max_parts` parts per multipart upload (tests lower it).
fn concat_within<'a>(
    s3: &'a S3,
    sources: &'a [(Path, u64)],
    target: &'a Path,
    if_absent: bool,
    scratch: &'a Path,
    max_parts: usize,
) -> BoxFuture<'a, Result<Completed>> {
    async move {
        if let Some((p, size)) = sources.split_last().and_then(|(_, rest)| rest.iter().find(|(_, s)| *s < MIN_PART)) {
            return Err(Error::Corrupt(format!("{p} has {size} bytes, under S3's smallest part")));
        }
        let groups = groups(sources, max_parts);
        if groups.len() <= 1 {
            return copy_all(s3, sources, target, if_absent).await;
        }
        let mut joined = Vec::with_capacity(groups.len());
        let outcome = async {
            for (i, group) in groups.into_iter().enumerate() {
                let path = scratch.clone().join(format!("concat-{i:05}").as_str());
                let size = sources[group.clone()].iter().map(|(_, s)| s).sum();
                concat_within(s3, &sources[group], &path, false, scratch, max_parts).await?;
                joined.push((path, size));
            }
            concat_within(s3, &joined, target, if_absent, scratch, max_parts).await
        }
        .await;
        for (path, _) in &joined {
            if let Err(e) = s3.store.delete(path).await {
                tracing::warn!(key = %path, error = %e, "could not remove an intermediate object");
            }
        }
        outcome
    }
    .boxed()
}

/// One multipart upload copying every range of every source.
async fn copy_all(s3: &S3, sources: &[(Path, u64)], target: &Path, if_absent: bool) -> Result<Completed> {
    let upload_id = s3.raw.create_multipart(target).await?;
    let jobs: Vec<(u32, Path, Range<u64>)> = sources
        .iter()
        .flat_map(|(path, size)| ranges_of(*size).into_iter().map(move |r| (path.clone(), r)))
        .enumerate()
        .map(|(i, (path, r))| (i as u32 + 1, path, r))
        .collect();
    let copy = |(number, source, range): (u32, Path, Range<u64>)| {
        let (raw, target, upload_id) = (s3.raw.clone(), target.clone(), upload_id.clone());
        async move { raw.upload_part_copy(&target, &upload_id, number, &source, range).await }
    };
    let copied: Result<Vec<CompletedPart>> =
        futures::stream::iter(jobs).map(copy).buffered(COPY_CONCURRENCY).try_collect().await;
    let outcome = match copied {
        Ok(parts) => s3.raw.complete(target, &upload_id, &parts, if_absent).await,
        Err(e) => Err(e),
    };
    if outcome.is_err()
        && let Err(e) = s3.raw.abort(target, &upload_id).await
    {
        tracing::warn!(key = %target, error = %e, "could not abort a failed multipart copy");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_source_within_limits() {
        for size in [1, MIN_PART, MAX_PART, MAX_PART + 1, 3 * MAX_PART + 7, 200 << 30] {
            let rs = ranges_of(size);
            assert_eq!(rs.first().map(|r| r.start), Some(0));
            assert_eq!(rs.last().map(|r| r.end), Some(size));
            assert!(rs.windows(2).all(|w| w[0].end == w[1].start));
            assert!(rs.iter().all(|r| r.end - r.start <= MAX_PART));
            if rs.len() > 1 {
                assert!(rs[..rs.len() - 1].iter().all(|r| r.end - r.start >= MIN_PART), "{size}");
            }
        }
        assert_eq!(ranges_of(200 << 30).len(), 40);
    }

    #[test]
    fn many_sources_are_grouped() {
        let sources: Vec<(Path, u64)> = (0..25_000).map(|i| (Path::from(format!("p{i}")), MIN_PART)).collect();
        let gs = groups(&sources, MAX_PARTS);
        assert_eq!(gs.len(), 3);
        assert_eq!(gs[0], 0..MAX_PARTS);
        assert_eq!(gs[2].end, 25_000);
        assert_eq!(groups(&sources[..3], MAX_PARTS).len(), 1);
    }

    /// The two-level join for real, on the S3 test server (`BERTH_TEST_S3_ENDPOINT`): five
    /// sources, at most two parts per upload.
    #[tokio::test]
    #[ignore = "needs S3: eval \"$(bash .ci/s3.sh start)\", then cargo test -- --ignored"]
    async fn grouped_join_on_s3() {
        use object_store::{ObjectStoreExt, PutPayload};
        let endpoint = std::env::var("BERTH_TEST_S3_ENDPOINT")
            .expect("BERTH_TEST_S3_ENDPOINT: run eval \"$(bash .ci/s3.sh start)\" first");
        let settings = super::super::S3Settings {
            bucket: std::env::var("BERTH_TEST_S3_BUCKET").unwrap_or_else(|_| "test".into()),
            prefix: Some(format!("concat-test/{}", uuid::Uuid::new_v4().simple())),
            endpoint: Some(endpoint),
            path_style: true,
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
            ..Default::default()
        };
        let s3 = S3::open(&settings).unwrap();
        let mut sources = Vec::new();
        let mut expected = Vec::new();
        for i in 0..5u8 {
            let size = if i == 4 { 1000 } else { MIN_PART as usize + i as usize };
            let data = vec![i; size];
            let path = Path::from(format!("src/{i}"));
            s3.store.put(&path, PutPayload::from(data.clone())).await.unwrap();
            expected.extend_from_slice(&data);
            sources.push((path, size as u64));
        }
        let target = Path::from("joined");
        let scratch = Path::from("scratch");
        let done = concat_within(&s3, &sources, &target, true, &scratch, 2).await.unwrap();
        assert_eq!(done, Completed::Created);
        let got = s3.store.get(&target).await.unwrap().bytes().await.unwrap();
        assert!(got == expected, "joined content differs");
        let again = concat_within(&s3, &sources, &target, true, &scratch, 2).await.unwrap();
        assert_eq!(again, Completed::AlreadyExists);
        let left: Vec<_> = s3.store.list(Some(&scratch)).try_collect().await.unwrap();
        assert!(left.is_empty(), "intermediates left: {left:?}");
    }
}
