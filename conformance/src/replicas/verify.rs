//! After the workload and the settle time: read everything back from every replica and
//! compare.
//!
//! Each item (blob, manifest, tag) is read on every replica; the replicas must agree on it
//! and serve correct bytes, and what they agree on must satisfy every operation's claim.
//! Listings (`tags/list` per repository, `_catalog`) must be identical across replicas and
//! match what the tags themselves say.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use reqwest::Method;

use super::Reporter;
use super::client::Replicas;
use super::model::{Item, Model, Seen, short};
use crate::check::CaseResult;
use crate::content;
use crate::wire;

/// Tags and catalog entries asked for per page, small enough that pagination is exercised.
const PAGE: usize = 25;

/// What one replica said about one item, and what was wrong with how it said it.
#[derive(Debug)]
struct Observation {
    seen: Seen,
    problems: Vec<String>,
}

impl Observation {
    fn new(seen: Seen) -> Self {
        Self { seen, problems: Vec::new() }
    }
}

/// Runs every check; each problem goes to `out` as an inconsistency.
pub(crate) async fn verify(r: &Replicas, model: &Model, concurrency: usize, out: &mut Reporter<'_>) {
    let listed = verify_tag_lists(r, model, out).await;

    // Every item a claim names, plus every tag a replica listed.
    let mut items = model.items();
    let claimed_tags: BTreeSet<Item> = items.iter().filter(|i| matches!(i, Item::Tag { .. })).cloned().collect();
    let listed_tags: BTreeSet<Item> = listed
        .iter()
        .flat_map(|(repo, per_replica)| {
            per_replica.iter().flatten().map(move |tag| Item::Tag { repo: repo.clone(), tag: tag.clone() })
        })
        .collect();
    for item in listed_tags {
        if let Item::Tag { tag, .. } = &item
            && !claimed_tags.contains(&item)
        {
            match Model::tag_owner(tag) {
                Some(op) if model.failed_ops.contains(&op) => {}
                _ => out.inconsistency(format!("{item}: listed, but no operation of this run left it there")),
            }
        }
        items.insert(item);
    }

    let observed = observe_all(r, model, &items, concurrency).await;
    let owner: BTreeMap<&Item, String> = model
        .claims
        .iter()
        .flat_map(|(index, kind, claim)| claim.items().map(move |item| (item, format!(" (op {index} {kind})"))))
        .collect();
    let mut agreed: BTreeMap<Item, Seen> = BTreeMap::new();
    let (mut tags, mut manifests, mut blobs, mut blob_bytes, mut problems) = (0, 0, 0, 0u64, 0);
    for (item, per_replica) in &observed {
        match item {
            Item::Tag { .. } => tags += 1,
            Item::Manifest { .. } => manifests += 1,
            Item::Blob { digest, .. } => {
                blobs += 1;
                if per_replica.iter().any(|o| o.seen == Seen::Present) {
                    blob_bytes += model.blob_sizes.get(digest).copied().unwrap_or(0) * r.count() as u64;
                }
            }
        }
        for (replica, o) in per_replica.iter().enumerate() {
            for p in &o.problems {
                problems += 1;
                let op = owner.get(item).map_or("", String::as_str);
                out.inconsistency(format!("{item}{op}: {}: {p}", r.label(replica)));
            }
        }
        let views: Vec<&Seen> = per_replica.iter().map(|o| &o.seen).collect();
        if let Some(first) = views.first()
            && views.iter().all(|v| v == first)
        {
            agreed.insert(item.clone(), (*first).clone());
        } else {
            problems += 1;
            let op = owner.get(item).map_or("", String::as_str);
            out.inconsistency(format!("{item}{op}: replicas disagree: {}", disagreement(r, &views)));
        }
        // A listing and a lookup on the same replica must tell the same story.
        if let Item::Tag { repo, tag } = item {
            for (replica, o) in per_replica.iter().enumerate() {
                let in_list = listed.get(repo).and_then(|l| l.get(replica)).is_some_and(|l| l.contains(tag));
                let resolves = matches!(o.seen, Seen::Points(_));
                if in_list != resolves {
                    problems += 1;
                    out.inconsistency(format!(
                        "{item}: {} {} it in tags/list but the tag lookup says {}",
                        r.label(replica),
                        if in_list { "lists" } else { "does not list" },
                        o.seen
                    ));
                }
            }
        }
    }
    out.phase(format!(
        "verify content: {tags} tags (HEAD+GET), {manifests} manifests by digest, {blobs} blobs ({:.1} MiB streamed \
         and hashed) on {} replicas: {}",
        blob_bytes as f64 / (1 << 20) as f64,
        r.count(),
        verdict(problems)
    ));

    let mut wrong = 0;
    let mut orders: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (index, kind, claim) in &model.claims {
        match claim.check(&agreed) {
            Ok(Some(order)) => *orders.entry((kind, order)).or_default() += 1,
            Ok(None) => {}
            Err(why) => {
                wrong += 1;
                out.inconsistency(format!("op {index} {kind}: {why}"));
            }
        }
    }
    let races: Vec<String> = orders.iter().map(|((kind, order), n)| format!("{kind} {n}× {order}")).collect();
    out.phase(format!(
        "verify model: {} operations' outcomes, races resolved as [{}]: {}",
        model.claims.len(),
        races.join(", "),
        verdict(wrong)
    ));

    verify_catalog(r, &agreed, out).await;
}

fn verdict(problems: usize) -> String {
    if problems == 0 { "ok".to_owned() } else { format!("{problems} problems") }
}

/// `r0, r2 say X; r1 says Y`.
fn disagreement(r: &Replicas, views: &[&Seen]) -> String {
    let mut groups: BTreeMap<&Seen, Vec<String>> = BTreeMap::new();
    for (replica, seen) in views.iter().enumerate() {
        groups.entry(seen).or_default().push(r.label(replica));
    }
    groups
        .iter()
        .map(|(seen, who)| format!("{} {} {seen}", who.join(", "), if who.len() == 1 { "says" } else { "say" }))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `GET /v2/<repo>/tags/list` (paginated) of every repository on every replica: identical
/// and sorted. Returns each repository's list per replica (an unknown repository lists
/// nothing).
async fn verify_tag_lists(r: &Replicas, model: &Model, out: &mut Reporter<'_>) -> BTreeMap<String, Vec<Vec<String>>> {
    let mut lists = BTreeMap::new();
    let mut problems = 0;
    let mut total = 0;
    for repo in &model.repos {
        let mut per_replica: Vec<Option<Vec<String>>> = Vec::new();
        for replica in 0..r.count() {
            match r.list_all(replica, &format!("/v2/{repo}/tags/list?n={PAGE}"), "tags").await {
                Ok(list) => per_replica.push(list),
                Err(e) => {
                    problems += 1;
                    out.inconsistency(format!("tags/list of {repo}: {e}"));
                    per_replica.push(None);
                }
            }
        }
        for (replica, list) in per_replica.iter().enumerate() {
            if let Some(list) = list
                && !wire::is_lexically_sorted(list)
            {
                problems += 1;
                out.inconsistency(format!("tags/list of {repo}: {} lists tags out of order", r.label(replica)));
            }
        }
        if per_replica.windows(2).any(|w| w[0] != w[1]) {
            problems += 1;
            let described: Vec<String> = per_replica
                .iter()
                .enumerate()
                .map(|(replica, l)| format!("{} says {}", r.label(replica), describe_list(l.as_deref())))
                .collect();
            out.inconsistency(format!("tags/list of {repo}: replicas disagree: {}", described.join("; ")));
        }
        total += per_replica.first().and_then(|l| l.as_ref()).map_or(0, Vec::len);
        lists.insert(repo.clone(), per_replica.into_iter().map(Option::unwrap_or_default).collect());
    }
    out.phase(format!(
        "verify tags/list: {} repositories, {total} tags, paginated by {PAGE}, on {} replicas: {}",
        model.repos.len(),
        r.count(),
        verdict(problems)
    ));
    lists
}

fn describe_list(list: Option<&[String]>) -> String {
    match list {
        None => "404 (no such repository)".to_owned(),
        Some(l) if l.len() <= 12 => format!("{l:?}"),
        Some(l) => format!("{} tags, {:?} … {:?}", l.len(), &l[..6], &l[l.len() - 6..]),
    }
}

/// `GET /v2/_catalog` (paginated) on every replica: identical; every repository with a
/// tag is in it.
async fn verify_catalog(r: &Replicas, agreed: &BTreeMap<Item, Seen>, out: &mut Reporter<'_>) {
    let mut problems = 0;
    let mut catalogs = Vec::new();
    for replica in 0..r.count() {
        match r.list_all(replica, &format!("/v2/_catalog?n={PAGE}"), "repositories").await {
            Ok(Some(list)) => catalogs.push(list),
            Ok(None) => {
                problems += 1;
                out.inconsistency(format!("_catalog: {} answered 404", r.label(replica)));
                catalogs.push(Vec::new());
            }
            Err(e) => {
                problems += 1;
                out.inconsistency(format!("_catalog: {e}"));
                catalogs.push(Vec::new());
            }
        }
    }
    let first: BTreeSet<&String> = catalogs.first().map(|c| c.iter().collect()).unwrap_or_default();
    for (replica, catalog) in catalogs.iter().enumerate().skip(1) {
        if catalogs.first() == Some(catalog) {
            continue;
        }
        problems += 1;
        let this: BTreeSet<&String> = catalog.iter().collect();
        let only_first: Vec<&&String> = first.difference(&this).take(10).collect();
        let only_this: Vec<&&String> = this.difference(&first).take(10).collect();
        out.inconsistency(format!(
            "_catalog: {} lists {} repositories, {} lists {}; only in the first: {only_first:?}; only in the second: \
             {only_this:?}{}",
            r.label(0),
            first.len(),
            r.label(replica),
            catalog.len(),
            if only_first.is_empty() && only_this.is_empty() { " (same names, other order or duplicates)" } else { "" }
        ));
    }
    for (replica, catalog) in catalogs.iter().enumerate() {
        if !wire::is_lexically_sorted(catalog) {
            problems += 1;
            out.inconsistency(format!("_catalog: {} lists repositories out of order", r.label(replica)));
        }
    }
    let tagged: BTreeSet<&String> = agreed
        .iter()
        .filter_map(|(item, seen)| match (item, seen) {
            (Item::Tag { repo, .. }, Seen::Points(_)) => Some(repo),
            _ => None,
        })
        .collect();
    for repo in tagged {
        if !first.contains(repo) {
            problems += 1;
            out.inconsistency(format!("_catalog: {repo} has tags but {} does not list it", r.label(0)));
        }
    }
    out.phase(format!(
        "verify catalog: {} repositories, paginated by {PAGE}, on {} replicas: {}",
        first.len(),
        r.count(),
        verdict(problems)
    ));
}

/// Reads every item on every replica, `concurrency` items at once.
async fn observe_all(
    r: &Replicas,
    model: &Model,
    items: &BTreeSet<Item>,
    concurrency: usize,
) -> BTreeMap<Item, Vec<Observation>> {
    futures::stream::iter(items.iter())
        .map(|item| async move {
            let mut per_replica = Vec::with_capacity(r.count());
            for replica in 0..r.count() {
                let observed = match item {
                    Item::Blob { repo, digest } => observe_blob(r, model, replica, repo, digest).await,
                    Item::Manifest { repo, digest } => observe_manifest(r, model, replica, repo, digest).await,
                    Item::Tag { repo, tag } => observe_tag(r, model, replica, repo, tag).await,
                };
                per_replica.push(observed.unwrap_or_else(|e| Observation {
                    seen: Seen::Status(0),
                    problems: vec![format!("no answer: {e}")],
                }));
            }
            (item.clone(), per_replica)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}

fn seen_of_status(status: u16) -> Seen {
    match status {
        404 => Seen::Absent,
        status => Seen::Status(status),
    }
}

/// `HEAD` then (when 200) a streamed, hashed `GET`.
async fn observe_blob(
    r: &Replicas,
    model: &Model,
    replica: usize,
    repo: &str,
    digest: &str,
) -> CaseResult<Observation> {
    let head = r.send(replica, r.at(replica, Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"))?).await?;
    if head.status != 200 {
        return Ok(Observation::new(seen_of_status(head.status)));
    }
    let mut o = Observation::new(Seen::Present);
    let want = model.blob_sizes.get(digest).copied();
    let head_len = head.header("content-length").and_then(|v| v.parse::<u64>().ok());
    if head_len != want {
        o.problems.push(format!("HEAD says Content-Length {head_len:?}, the blob has {want:?} bytes"));
    }
    let got = r.read_blob(replica, repo, digest).await?;
    if got.status != 200 {
        o.problems.push(format!("HEAD answered 200 but GET answered {}", got.status));
    } else if got.digest != digest || Some(got.len) != want {
        o.problems.push(format!(
            "GET served {} bytes hashing to {}, want {want:?} bytes hashing to {}",
            got.len,
            short(&got.digest),
            short(digest)
        ));
    }
    Ok(o)
}

/// `GET` and `HEAD` by digest: the pushed bytes, type and digest.
async fn observe_manifest(
    r: &Replicas,
    model: &Model,
    replica: usize,
    repo: &str,
    digest: &str,
) -> CaseResult<Observation> {
    let get = r.fetch_manifest(replica, Method::GET, repo, digest).await?;
    let head = r.fetch_manifest(replica, Method::HEAD, repo, digest).await?;
    let mut o = Observation::new(if get.status == 200 { Seen::Present } else { seen_of_status(get.status) });
    if head.status != get.status {
        o.problems.push(format!("GET answered {} but HEAD answered {}", get.status, head.status));
    }
    if get.status == 200 {
        o.problems.extend(manifest_problems(model, &get, &head, Some(digest)));
    }
    Ok(o)
}

/// `GET` and `HEAD` by tag: which digest, and correct bytes for it.
async fn observe_tag(r: &Replicas, model: &Model, replica: usize, repo: &str, tag: &str) -> CaseResult<Observation> {
    let get = r.fetch_manifest(replica, Method::GET, repo, tag).await?;
    let head = r.fetch_manifest(replica, Method::HEAD, repo, tag).await?;
    let seen = match get.status {
        200 => Seen::Points(content::sha256(&get.body)),
        status => seen_of_status(status),
    };
    let mut o = Observation::new(seen);
    if head.status != get.status {
        o.problems.push(format!("GET answered {} but HEAD answered {}", get.status, head.status));
    }
    if get.status == 200 {
        o.problems.extend(manifest_problems(model, &get, &head, None));
    }
    Ok(o)
}

/// What is wrong with a manifest served by `get` and `head` (`want`: the digest asked for).
fn manifest_problems(model: &Model, get: &crate::Resp, head: &crate::Resp, want: Option<&str>) -> Vec<String> {
    let mut problems = Vec::new();
    let actual = content::sha256(&get.body);
    let header = get.header("docker-content-digest");
    match header {
        Some(h) if h == actual => {}
        Some(h) => problems.push(format!("GET: Docker-Content-Digest {h} but the bytes hash to {actual}")),
        None => problems.push("GET: no Docker-Content-Digest".to_owned()),
    }
    if let Some(want) = want
        && actual != want
    {
        problems.push(format!("GET by digest {} served bytes hashing to {}", short(want), short(&actual)));
    }
    if head.status == 200 {
        if head.header("docker-content-digest") != header {
            problems.push(format!(
                "HEAD says Docker-Content-Digest {:?}, GET says {header:?}",
                head.header("docker-content-digest")
            ));
        }
        let len = head.header("content-length").and_then(|v| v.parse::<usize>().ok());
        if len != Some(get.body.len()) {
            problems.push(format!("HEAD says Content-Length {len:?}, GET served {} bytes", get.body.len()));
        }
    }
    match model.manifests.get(&actual) {
        None => problems.push(format!("serves a manifest ({}) this run never pushed", short(&actual))),
        Some(pushed) => {
            let ctype = get.header("content-type");
            if ctype != Some(pushed.media_type.as_str()) {
                problems.push(format!("GET: Content-Type {ctype:?}, pushed as {}", pushed.media_type));
            }
        }
    }
    problems
}
