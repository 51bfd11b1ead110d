//! listing: `_catalog` and `tags/list` over many repositories and tags, whole
//! and page by page through `Link`.
//!
//! Setup (once per registry, not timed in any metric but reported): one tiny
//! blob per repository, and one manifest pushed under every tag of one
//! repository. Where a registry does not paginate (Distribution 2.x ignores
//! `n` on tags), the paginated metrics are "n/a" with the reason.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use reqwest::Url;

use super::{Cx, ImagePlan};
use crate::bench::metric::{Metric, Unit};
use crate::bench::{BenchError, Target, stats};
use crate::content::OCI_MANIFEST;

/// What the setup made (or, with `--reuse-listing`, what it assumes is there).
#[derive(Debug, Clone)]
pub(crate) struct ListingSetup {
    /// Every listing repository's name starts with this.
    repo_prefix: String,
    repos: usize,
    tag_repo: String,
    tags: usize,
}

fn repo_name(prefix: &str, i: usize) -> String {
    format!("{prefix}r{i:05}")
}

fn tag_name(i: usize) -> String {
    format!("t{i:05}")
}

/// Runs `count` operations `op(i)` with `concurrency` in flight; returns the
/// failures (count, first message) and the elapsed time.
async fn bounded<F, Fut>(count: usize, concurrency: usize, op: F) -> (usize, Option<String>, Duration)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), BenchError>>,
{
    let started = Instant::now();
    let (failures, first) = futures::stream::iter(0..count)
        .map(op)
        .buffer_unordered(concurrency.max(1))
        .fold((0, None), |(n, first): (usize, Option<String>), result| async move {
            match result {
                Ok(()) => (n, first),
                Err(err) => (n + 1, first.or_else(|| Some(err.to_string()))),
            }
        })
        .await;
    (failures, first, started.elapsed())
}

async fn setup(cx: &mut Cx<'_>) -> Result<ListingSetup, BenchError> {
    let p = cx.params().clone();
    let setup = ListingSetup {
        repo_prefix: format!("{}/", cx.repo("listing")),
        repos: p.listing_repos,
        tag_repo: cx.repo("listing-tags"),
        tags: p.listing_tags,
    };
    if cx.state.reuse_listing {
        cx.rec.note("setup skipped: reusing repositories and tags made by an earlier run (--reuse-listing)");
        return Ok(setup);
    }
    let mode = cx.noted_monolithic_mode().await?;

    let (source, target, prefix) = (cx.bench.source.clone(), cx.target.clone(), setup.repo_prefix.clone());
    let (failures, first, elapsed) = bounded(setup.repos, p.listing_setup_concurrency, |i| {
        let (source, target, repo) = (source.clone(), target.clone(), repo_name(&prefix, i));
        async move {
            let blob = source.fresh(64)?;
            target.push_monolithic(&repo, &blob, mode).await
        }
    })
    .await;
    cx.rec.add_setup(elapsed.as_secs_f64());
    if let Some(first) = first {
        return Err(BenchError::new(format!(
            "setup: {failures} of {} repository pushes failed, first: {first}",
            setup.repos
        )));
    }
    if let Some(rate) = stats::per_sec(setup.repos as u64, elapsed.as_secs_f64()) {
        cx.rec.metric(Metric::new(format!("setup: {} repositories", setup.repos), Unit::ItemsPerSec, rate));
    }

    let started = Instant::now();
    let plan = ImagePlan::new(vec![cx.fresh(1024).await?]);
    plan.push(cx.target, &setup.tag_repo, &tag_name(0), mode).await.map_err(|e| e.context("setup: tagged image"))?;
    let (target, repo, manifest) = (cx.target.clone(), setup.tag_repo.clone(), plan.manifest.clone());
    let (failures, first, _) = bounded(setup.tags.saturating_sub(1), p.listing_setup_concurrency, |i| {
        let (target, repo, manifest) = (target.clone(), repo.clone(), manifest.clone());
        async move { target.put_manifest(&repo, &tag_name(i + 1), OCI_MANIFEST, manifest).await }
    })
    .await;
    let elapsed = started.elapsed();
    cx.rec.add_setup(elapsed.as_secs_f64());
    if let Some(first) = first {
        return Err(BenchError::new(format!("setup: {failures} of {} tag pushes failed, first: {first}", setup.tags)));
    }
    if let Some(rate) = stats::per_sec(setup.tags as u64, elapsed.as_secs_f64()) {
        cx.rec.metric(Metric::new(format!("setup: {} tags", setup.tags), Unit::ItemsPerSec, rate));
    }
    Ok(setup)
}

/// A walk through every page of a listing.
#[derive(Debug, Default)]
struct Walk {
    page_ms: Vec<f64>,
    entries: Vec<String>,
    first_page_len: usize,
    elapsed: Duration,
}

/// Follows `Link: rel="next"` from `first` until a page has none. Bounded by
/// `deadline` and `max_pages`; a `Link` that makes no progress is an error.
async fn walk(
    target: &Target,
    first: Url,
    key: &str,
    deadline: Duration,
    max_pages: usize,
) -> Result<Walk, BenchError> {
    let started = Instant::now();
    let mut walk = Walk::default();
    let mut next = Some(first);
    while let Some(url) = next.take() {
        if started.elapsed() > deadline {
            return Err(BenchError::new(format!(
                "walk unfinished after {} s ({} pages)",
                deadline.as_secs(),
                walk.page_ms.len()
            )));
        }
        if walk.page_ms.len() >= max_pages {
            return Err(BenchError::new(format!("walk still going after {max_pages} pages")));
        }
        let t0 = Instant::now();
        let page = target.list_page(url.clone(), key).await?;
        walk.page_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        if walk.page_ms.len() == 1 {
            walk.first_page_len = page.entries.len();
        }
        if page.next.is_some() && (page.entries.is_empty() || page.next.as_ref() == Some(&url)) {
            return Err(BenchError::new(format!("{}: a Link that makes no progress", url.path())));
        }
        walk.entries.extend(page.entries);
        next = page.next;
    }
    walk.elapsed = started.elapsed();
    Ok(walk)
}

/// Records a walk's page p50/p99 and total time under `name`, or n/a.
fn record_walk(cx: &mut Cx<'_>, name: &str, walk: Result<&Walk, String>) {
    let metrics = [format!("{name} page p50"), format!("{name} page p99"), format!("{name} walk")];
    let walk = match walk {
        Ok(walk) => walk,
        Err(reason) => {
            for (metric, unit) in metrics.into_iter().zip([Unit::Millis, Unit::Millis, Unit::Seconds]) {
                cx.rec.metric(Metric::unavailable(metric, unit, reason.clone()));
            }
            return;
        }
    };
    let mut sorted = walk.page_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let [p50, p99, total] = metrics;
    if let (Some(a), Some(b)) = (stats::percentile(&sorted, 50.0), stats::percentile(&sorted, 99.0)) {
        cx.rec.metric(Metric::new(p50, Unit::Millis, a).with_samples(walk.page_ms.clone()));
        cx.rec.metric(Metric::new(p99, Unit::Millis, b));
    }
    cx.rec.metric(Metric::new(total, Unit::Seconds, walk.elapsed.as_secs_f64()));
    cx.rec.note(format!("{name}: {} pages, {} entries", walk.page_ms.len(), walk.entries.len()));
}

/// Repeats one unpaginated GET; returns (latencies in ms, entries of the last
/// answer, whether it carried a Link).
async fn repeat_get(
    target: &Target,
    url: &Url,
    key: &str,
    times: usize,
) -> Result<(Vec<f64>, usize, bool), BenchError> {
    let mut ms = Vec::new();
    let (mut entries, mut link) = (0, false);
    for _ in 0..times.max(1) {
        let t0 = Instant::now();
        let page = target.list_page(url.clone(), key).await?;
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
        entries = page.entries.len();
        link = page.next.is_some();
    }
    Ok((ms, entries, link))
}

pub(crate) async fn listing(cx: &mut Cx<'_>) -> Result<(), BenchError> {
    if cx.state.listing.is_none() {
        let setup = setup(cx).await?;
        cx.state.listing = Some(setup);
    }
    let Some(setup) = cx.state.listing.clone() else {
        return Err(BenchError::new("listing setup missing"));
    };
    let p = cx.params().clone();
    let n = p.listing_page;
    let max_pages = (setup.repos.max(setup.tags) / n.max(1) + 1) * 4 + 100;

    // Catalog, page by page.
    let name = format!("catalog ?n={n}");
    let url = cx.target.url(&format!("/v2/_catalog?n={n}"))?;
    match walk(cx.target, url, "repositories", p.listing_walk_deadline, max_pages).await {
        Ok(w) => {
            let seen = w.entries.iter().filter(|e| e.starts_with(&setup.repo_prefix)).count();
            if seen != setup.repos {
                cx.rec.error(format!("{name}: the walk listed {seen} of the {} repositories", setup.repos));
            }
            if w.first_page_len > n {
                cx.rec.note(format!("{name}: the first page held {} entries (n ignored)", w.first_page_len));
            }
            record_walk(cx, &name, Ok(&w));
        }
        Err(err) => {
            cx.rec.error(format!("{name}: {err}"));
            record_walk(cx, &name, Err(format!("failed: {err}")));
        }
    }

    // Catalog without n: whatever the registry gives.
    let name = "catalog (no n)";
    let url = cx.target.url("/v2/_catalog")?;
    match repeat_get(cx.target, &url, "repositories", p.listing_repeats).await {
        Ok((ms, entries, link)) => {
            if let Some(median) = stats::median(&ms) {
                cx.rec.metric(Metric::new(name, Unit::Millis, median).with_samples(ms));
            }
            let more = if link { ", with a Link to more" } else { "" };
            cx.rec.note(format!("{name}: answered {entries} entries{more}"));
        }
        Err(err) => {
            cx.rec.error(format!("{name}: {err}"));
            cx.rec.metric(Metric::unavailable(name, Unit::Millis, format!("failed: {err}")));
        }
    }

    // Tags without n: the whole list, in as many pages as the registry needs.
    let name = format!("tags/list (no n) of {}", setup.tags);
    let url = cx.target.url(&format!("/v2/{}/tags/list", setup.tag_repo))?;
    match repeat_get(cx.target, &url, "tags", p.listing_repeats).await {
        Ok((ms, entries, link)) => {
            if let Some(median) = stats::median(&ms) {
                cx.rec.metric(Metric::new(&name, Unit::Millis, median).with_samples(ms));
            }
            if entries != setup.tags && !link {
                cx.rec.error(format!("{name}: answered {entries} tags and no Link"));
            } else if link {
                cx.rec.note(format!("{name}: answered the first {entries}, with a Link to more"));
            }
        }
        Err(err) => {
            cx.rec.error(format!("{name}: {err}"));
            cx.rec.metric(Metric::unavailable(&name, Unit::Millis, format!("failed: {err}")));
        }
    }

    // Tags, page by page.
    let name = format!("tags/list ?n={n}");
    let url = cx.target.url(&format!("/v2/{}/tags/list?n={n}", setup.tag_repo))?;
    match walk(cx.target, url, "tags", p.listing_walk_deadline, max_pages).await {
        Ok(w) if w.first_page_len > n => {
            let reason = format!(
                "no tag pagination: ?n={n} answered {} tags{}",
                w.first_page_len,
                if w.page_ms.len() == 1 { " and no Link" } else { "" }
            );
            record_walk(cx, &name, Err(reason));
        }
        Ok(w) => {
            if w.entries.len() != setup.tags {
                cx.rec.error(format!("{name}: the walk listed {} of the {} tags", w.entries.len(), setup.tags));
            }
            record_walk(cx, &name, Ok(&w));
        }
        Err(err) => {
            cx.rec.error(format!("{name}: {err}"));
            record_walk(cx, &name, Err(format!("failed: {err}")));
        }
    }
    Ok(())
}
