//! What the replicas should hold once the workload is over.
//!
//! Every operation works on content and tags of its own (fresh bytes, tags named
//! `o<op>-…`), so operations never constrain one another and each can state its own
//! outcome. That outcome is a [`Claim`]: a list of alternative worlds, one per serial
//! order its racing requests could have taken, each a list of [`Fact`]s. A push racing a
//! delete of the same tag has two alternatives (tag moved / tag gone); a push with no race
//! has one. Verification reads every item the claims name on every replica, requires the
//! replicas to agree, and then requires what they agree on to be one of the alternatives.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bytes::Bytes;

/// Something a replica holds or not.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Item {
    /// Blob `digest`, readable in `repo`.
    Blob { repo: String, digest: String },
    /// Manifest `digest`, readable by digest in `repo`.
    Manifest { repo: String, digest: String },
    /// Tag `tag` of `repo`.
    Tag { repo: String, tag: String },
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Blob { repo, digest } => write!(f, "blob {repo}@{}", short(digest)),
            Self::Manifest { repo, digest } => write!(f, "manifest {repo}@{}", short(digest)),
            Self::Tag { repo, tag } => write!(f, "tag {repo}:{tag}"),
        }
    }
}

/// What a replica says about an [`Item`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Seen {
    /// 404.
    Absent,
    /// 200 (for a blob or manifest: with the right bytes; errors in them are reported apart).
    Present,
    /// The tag resolves to this digest.
    Points(String),
    /// Neither 200 nor 404: the status.
    Status(u16),
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absent => f.write_str("absent (404)"),
            Self::Present => f.write_str("present"),
            Self::Points(digest) => write!(f, "→ {}", short(digest)),
            Self::Status(status) => write!(f, "answered {status}"),
        }
    }
}

/// `sha256:0123456789ab…`, for messages.
pub(crate) fn short(digest: &str) -> String {
    match digest.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}…", &hex[..12]),
        _ => digest.to_owned(),
    }
}

/// One expected state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fact {
    pub(crate) item: Item,
    pub(crate) want: Seen,
}

impl Fact {
    pub(crate) fn blob(repo: &str, digest: &str, present: bool) -> Self {
        let item = Item::Blob { repo: repo.to_owned(), digest: digest.to_owned() };
        Self { item, want: if present { Seen::Present } else { Seen::Absent } }
    }

    pub(crate) fn manifest(repo: &str, digest: &str, present: bool) -> Self {
        let item = Item::Manifest { repo: repo.to_owned(), digest: digest.to_owned() };
        Self { item, want: if present { Seen::Present } else { Seen::Absent } }
    }

    pub(crate) fn tag(repo: &str, tag: &str, target: Option<&str>) -> Self {
        let item = Item::Tag { repo: repo.to_owned(), tag: tag.to_owned() };
        Self { item, want: target.map_or(Seen::Absent, |d| Seen::Points(d.to_owned())) }
    }
}

impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.item, self.want)
    }
}

/// One serial order of a race and the facts it leads to.
#[derive(Debug, Clone)]
pub(crate) struct Alternative {
    /// How the summary names this order, e.g. `delete→push`.
    pub(crate) order: &'static str,
    pub(crate) facts: Vec<Fact>,
}

impl Alternative {
    pub(crate) fn new(order: &'static str, facts: Vec<Fact>) -> Self {
        Self { order, facts }
    }
}

/// What one operation left behind: the facts true whatever the order of its racing
/// requests (`common`), and one alternative per serial order that could have happened.
#[derive(Debug, Clone, Default)]
pub(crate) struct Claim {
    pub(crate) common: Vec<Fact>,
    /// Empty means "no race": `common` alone.
    pub(crate) alternatives: Vec<Alternative>,
}

impl Claim {
    /// Every item the claim names.
    pub(crate) fn items(&self) -> impl Iterator<Item = &Item> {
        self.common.iter().chain(self.alternatives.iter().flat_map(|a| &a.facts)).map(|f| &f.item)
    }

    /// Checks `seen` (what all replicas agree on) against the claim: the serial order that
    /// happened (`None` without a race, or when an item is in disagreement), or a sentence.
    /// Items missing from `seen` (the replicas disagreed; reported already) are skipped.
    pub(crate) fn check(&self, seen: &BTreeMap<Item, Seen>) -> Result<Option<&'static str>, String> {
        let holds = |fact: &Fact| seen.get(&fact.item).is_none_or(|s| *s == fact.want);
        let wrong: Vec<String> = self
            .common
            .iter()
            .filter(|f| !holds(f))
            .map(|f| format!("{}: want {}, replicas agree on {}", f.item, f.want, seen_of(seen, &f.item)))
            .collect();
        if !wrong.is_empty() {
            return Err(wrong.join("; "));
        }
        if self.alternatives.is_empty() {
            return Ok(None);
        }
        let judged = |alt: &Alternative| alt.facts.iter().all(|f| seen.contains_key(&f.item));
        if let Some(alt) = self.alternatives.iter().find(|alt| alt.facts.iter().all(holds)) {
            return Ok(judged(alt).then_some(alt.order));
        }
        let mut items: BTreeSet<&Item> = BTreeSet::new();
        items.extend(self.alternatives.iter().flat_map(|a| &a.facts).map(|f| &f.item));
        let got: Vec<String> = items.iter().map(|i| format!("{i} {}", seen_of(seen, i))).collect();
        let wanted: Vec<String> = self
            .alternatives
            .iter()
            .map(|alt| {
                let facts: Vec<String> = alt.facts.iter().map(Fact::to_string).collect();
                format!("{} {{{}}}", alt.order, facts.join(", "))
            })
            .collect();
        Err(format!(
            "replicas agree on {{{}}}, which is no serial outcome of the race; possible: {}",
            got.join(", "),
            wanted.join(" or ")
        ))
    }
}

fn seen_of(seen: &BTreeMap<Item, Seen>, item: &Item) -> String {
    seen.get(item).map_or_else(|| "(disagreement)".to_owned(), Seen::to_string)
}

/// A manifest as pushed: verification compares what replicas serve with these bytes.
#[derive(Debug, Clone)]
pub(crate) struct PushedManifest {
    pub(crate) media_type: String,
    pub(crate) bytes: Bytes,
}

/// The expectations of a whole run.
#[derive(Debug, Default)]
pub(crate) struct Model {
    /// One per operation that finished, with its index and kind name.
    pub(crate) claims: Vec<(usize, &'static str, Claim)>,
    /// Every manifest pushed, by digest.
    pub(crate) manifests: BTreeMap<String, PushedManifest>,
    /// The size of every blob pushed, by digest.
    pub(crate) blob_sizes: BTreeMap<String, u64>,
    /// Every repository an operation pushed to.
    pub(crate) repos: BTreeSet<String>,
    /// Operations that failed: their tags and content may be in any state.
    pub(crate) failed_ops: BTreeSet<usize>,
}

impl Model {
    /// Every item named by a claim, each once.
    pub(crate) fn items(&self) -> BTreeSet<Item> {
        self.claims.iter().flat_map(|(_, _, c)| c.items().cloned()).collect()
    }

    /// Whether a tag seen in a listing belongs to an operation of this run (`o<op>-…`)
    /// that claimed it, or that failed (its tags may be anywhere).
    pub(crate) fn tag_owner(tag: &str) -> Option<usize> {
        tag.strip_prefix('o')?.split_once('-')?.0.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(pairs: &[(&Fact, Seen)]) -> BTreeMap<Item, Seen> {
        pairs.iter().map(|(f, s)| (f.item.clone(), s.clone())).collect()
    }

    #[test]
    fn a_claim_without_race_wants_every_fact() {
        let m = Fact::manifest("r", "sha256:aa", true);
        let t = Fact::tag("r", "o1-a", Some("sha256:aa"));
        let claim = Claim { common: vec![m.clone(), t.clone()], alternatives: vec![] };
        assert_eq!(claim.check(&seen(&[(&m, Seen::Present), (&t, Seen::Points("sha256:aa".into()))])), Ok(None));
        let err = claim.check(&seen(&[(&m, Seen::Present), (&t, Seen::Absent)])).unwrap_err();
        assert!(err.contains("tag r:o1-a"), "{err}");
        // An item the replicas disagreed on is not judged twice.
        assert_eq!(claim.check(&seen(&[(&m, Seen::Present)])), Ok(None));
    }

    #[test]
    fn a_race_accepts_either_serial_order_but_not_a_mix() {
        // DELETE manifests/<d> racing PUT manifests/o2-b (same manifest).
        let delete_first = vec![Fact::manifest("r", "sha256:m", true), Fact::tag("r", "o2-b", Some("sha256:m"))];
        let push_first = vec![Fact::manifest("r", "sha256:m", false), Fact::tag("r", "o2-b", None)];
        let alternatives =
            vec![Alternative::new("delete→push", delete_first), Alternative::new("push→delete", push_first)];
        let claim = Claim { common: vec![Fact::tag("r", "o2-a", None)], alternatives };
        let (m, b, a) =
            (Fact::manifest("r", "sha256:m", true), Fact::tag("r", "o2-b", None), Fact::tag("r", "o2-a", None));
        let world = |ms: Seen, bs: Seen| seen(&[(&m, ms), (&b, bs), (&a, Seen::Absent)]);
        assert_eq!(claim.check(&world(Seen::Present, Seen::Points("sha256:m".into()))), Ok(Some("delete→push")));
        assert_eq!(claim.check(&world(Seen::Absent, Seen::Absent)), Ok(Some("push→delete")));
        let err = claim.check(&world(Seen::Present, Seen::Absent)).unwrap_err();
        assert!(err.contains("no serial outcome"), "{err}");
        assert!(claim.check(&world(Seen::Absent, Seen::Points("sha256:m".into()))).is_err());
    }

    #[test]
    fn tag_owners() {
        assert_eq!(Model::tag_owner("o17-a"), Some(17));
        assert_eq!(Model::tag_owner("o17-race"), Some(17));
        assert_eq!(Model::tag_owner("latest"), None);
        assert_eq!(Model::tag_owner("ox-1"), None);
    }

    #[test]
    fn short_digests() {
        assert_eq!(short("sha256:0123456789abcdef"), "sha256:0123456789ab…");
        assert_eq!(short("sha256:ab"), "sha256:ab");
    }
}
