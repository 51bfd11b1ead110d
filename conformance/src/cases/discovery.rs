//! Content discovery: end-8a/8b (tags list and pagination) and the
//! `_catalog` listing every client uses although the spec only reserves it.

use reqwest::Method;
use reqwest::Url;
use serde_json::Value;

use crate::check::CaseResult;
use crate::content::OCI_MANIFEST;
use crate::ctx::{Ctx, Resp, string_list};
use crate::wire;
use crate::{ensure, ensure_eq, fail};

/// Tags whose byte order differs from case-insensitive or numeric order.
const AWKWARD_TAGS: [&str; 9] = ["b", "a.0", "Z9", "10", "a", "_x", "9", "A", "a-1"];

/// Pushes one image and tags it with every tag in `tags`.
async fn push_tags(ctx: &Ctx, repo: &str, tags: &[&str]) -> CaseResult {
    let image = ctx.push_image(repo, None).await?;
    for tag in tags {
        ctx.push_manifest(repo, tag, OCI_MANIFEST, &image.manifest).await?;
    }
    Ok(())
}

fn sorted(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

/// One page of a list endpoint: its items and the next page's URL.
struct Page {
    items: Vec<String>,
    next: Option<Url>,
}

fn read_page(resp: &Resp, field: &str) -> CaseResult<Page> {
    resp.expect(200)?;
    let body = resp.json()?;
    let items = string_list(&body[field], field)?;
    let next = match resp.header("link") {
        None => None,
        Some(link) => {
            let Some(target) = wire::parse_link_next(link) else {
                fail!("{}: Link {link:?} has no rel=\"next\"", resp.what());
            };
            Some(
                wire::resolve_location(&resp.url, &target)
                    .map_err(|e| crate::Failure::new(format!("{}: Link: {e}", resp.what())))?,
            )
        }
    };
    Ok(Page { items, next })
}

/// Follows `Link` from `first` for at most `max_pages`, requiring each page
/// to hold at most `n` items; returns all items.
async fn walk(ctx: &Ctx, first: Url, field: &str, n: usize, max_pages: usize) -> CaseResult<Vec<String>> {
    let mut all = Vec::new();
    let mut next = Some(first);
    let mut pages = 0;
    while let Some(url) = next {
        pages += 1;
        ensure!(pages <= max_pages, "more than {max_pages} pages: Link never ends");
        let resp = ctx.send(ctx.request(Method::GET, url)).await?;
        let page = read_page(&resp, field)?;
        ensure!(page.items.len() <= n, "{}: {} items on a page of n={n}", resp.what(), page.items.len());
        all.extend(page.items);
        next = page.next;
    }
    Ok(all)
}

/// end-8a: the tags list holds every tag, in lexical (byte) order.
pub async fn end_8a_tags_list_is_lexically_sorted(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    push_tags(ctx, &repo, &AWKWARD_TAGS).await?;
    let tags = ctx.tags(&repo).await?;
    ensure!(wire::is_lexically_sorted(&tags), "tags are not in lexical order: {tags:?}");
    ensure_eq!(tags, sorted(&AWKWARD_TAGS), "tags list");
    Ok(())
}

const PAGED: [&str; 5] = ["p0", "p1", "p2", "p3", "p4"];

/// end-8b: `?n=2` returns two tags and a `Link: <…>; rel="next"` that,
/// followed, yields the rest in order.
pub async fn end_8b_tags_pagination_follows_link(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    push_tags(ctx, &repo, &PAGED).await?;
    let first = ctx.url(&format!("/v2/{repo}/tags/list?n=2"))?;
    let resp = ctx.send(ctx.request(Method::GET, first.clone())).await?;
    let page = read_page(&resp, "tags")?;
    ensure_eq!(page.items, sorted(&PAGED[..2]), "first page of n=2");
    ensure!(page.next.is_some(), "{}: no Link header although more tags exist", resp.what());
    let all = walk(ctx, first, "tags", 2, 6).await?;
    ensure_eq!(all, sorted(&PAGED), "tags collected through Link");
    Ok(())
}

/// end-8b: `?n=2&last=p1` starts after `p1`.
pub async fn end_8b_tags_last_starts_after_the_tag(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    push_tags(ctx, &repo, &PAGED).await?;
    let resp = ctx.call(Method::GET, &format!("/v2/{repo}/tags/list?n=2&last=p1")).await?;
    let page = read_page(&resp, "tags")?;
    ensure_eq!(page.items, sorted(&["p2", "p3"]), "n=2&last=p1");
    let resp = ctx.call(Method::GET, &format!("/v2/{repo}/tags/list?n=10&last=p3")).await?;
    let page = read_page(&resp, "tags")?;
    ensure_eq!(page.items, sorted(&["p4"]), "n=10&last=p3");
    ensure!(page.next.is_none(), "{}: Link on the last page", resp.what());
    Ok(())
}

/// end-8b: `?n=0` → 200 with an empty list and no `Link`.
pub async fn end_8b_tags_n_zero_is_empty(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    push_tags(ctx, &repo, &["only"]).await?;
    let resp = ctx.call(Method::GET, &format!("/v2/{repo}/tags/list?n=0")).await?;
    resp.expect(200)?;
    let body = resp.json()?;
    match &body["tags"] {
        Value::Array(tags) => ensure!(tags.is_empty(), "n=0 returned tags {}", body["tags"]),
        Value::Null => ctx.note("n=0 answered `tags: null` rather than []"),
        other => fail!("n=0: `tags` is {other}"),
    }
    ensure!(resp.header("link").is_none(), "n=0 answered with a Link header");
    Ok(())
}

/// end-8: tags of a repository that does not exist → 404 `NAME_UNKNOWN`.
pub async fn end_8_tags_of_unknown_repo_is_404_name_unknown(ctx: &Ctx) -> CaseResult {
    ctx.call(Method::GET, &format!("/v2/{}/tags/list", ctx.repo())).await?.expect_error(404, "NAME_UNKNOWN")
}

/// Pushes `<repo>/a`, `/b`, `/c` (out of order) and returns their names.
async fn push_catalog_repos(ctx: &Ctx) -> CaseResult<Vec<String>> {
    for suffix in ["c", "a", "b"] {
        ctx.push_image(&ctx.repo_with(suffix), Some("v1")).await?;
    }
    Ok(["a", "b", "c"].iter().map(|s| ctx.repo_with(s)).collect())
}

fn catalog_after(ctx: &Ctx, n: usize, last: &str) -> CaseResult<Url> {
    let mut url = ctx.url("/v2/_catalog")?;
    url.query_pairs_mut().append_pair("n", &n.to_string()).append_pair("last", last);
    Ok(url)
}

/// `_catalog`: lists the pushed repositories in lexical order. Only this
/// case's repositories sort between `<namespace>/<case>` and the next
/// case, so `last=<namespace>/<case>&n=3` must return exactly them.
pub async fn catalog_lists_pushed_repos_sorted(ctx: &Ctx) -> CaseResult {
    let repos = push_catalog_repos(ctx).await?;
    let resp = ctx.call(Method::GET, "/v2/_catalog").await?;
    let page = read_page(&resp, "repositories")?;
    ensure!(wire::is_lexically_sorted(&page.items), "_catalog is not in lexical order");
    let resp = ctx.send(ctx.request(Method::GET, catalog_after(ctx, 3, &ctx.repo())?)).await?;
    let page = read_page(&resp, "repositories")?;
    ensure_eq!(page.items, repos, "{}", resp.what());
    Ok(())
}

/// `_catalog?n=2`: two repositories and a `Link` to the next page.
pub async fn catalog_pagination_follows_link(ctx: &Ctx) -> CaseResult {
    let repos = push_catalog_repos(ctx).await?;
    let resp = ctx.send(ctx.request(Method::GET, catalog_after(ctx, 2, &ctx.repo())?)).await?;
    let page = read_page(&resp, "repositories")?;
    ensure_eq!(page.items, repos[..2].to_vec(), "{}", resp.what());
    let Some(next) = page.next else {
        fail!("{}: no Link header although more repositories exist", resp.what());
    };
    let resp = ctx.send(ctx.request(Method::GET, next)).await?;
    let page = read_page(&resp, "repositories")?;
    ensure!(page.items.len() <= 2, "{}: more than n=2 items", resp.what());
    ensure_eq!(page.items.first(), Some(&repos[2]), "first repository of the next page ({})", resp.what());
    Ok(())
}
