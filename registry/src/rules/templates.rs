//! ECR's repository creation templates: which template gives a new repository its settings.
//!
//! A template's prefix is `ROOT` or a namespace (`prod`, `prod/team`), with ECR's grammar
//! (`CreateRepositoryCreationTemplate`'s `Prefix`: components of lowercase letters and digits
//! joined by `.`, `_`, `__` or dashes, separated by `/`, at most 256 characters); a trailing
//! `/` is accepted and normalized away, as ECR "assumes a `/` at the end of the prefix".
//!
//! Matching follows ECR's documentation: "a prefix of `prod` would apply to all repositories
//! beginning with `prod/`". So `prod` matches `prod/app` and `prod/a/b`, not `production/app`,
//! and not the repository `prod` itself (whose name does not begin with `prod/`; `ROOT` or a
//! shorter prefix covers it). Of the templates applied for the way a repository is being
//! created (`appliedFor`), the one with the longest matching prefix wins; `ROOT` matches every
//! name and ranks last.
//!
//! Berth's configuration rules (`[[encryption.repositories]]`, which predate templates) are
//! templates that set only the key: [`config_rule_matches`] keeps their text matching, and
//! [`config_rule_wins`] ranks them against stored templates by prefix length, the stored
//! template winning a tie.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The prefix of the template that applies to every repository no other template covers.
pub const ROOT: &str = "ROOT";
/// ECR's limits on a template's fields.
pub const MAX_PREFIX: usize = 256;
pub const MAX_DESCRIPTION: usize = 256;
pub const MAX_RESOURCE_TAGS: usize = 50;
pub const MAX_TAG_KEY: usize = 128;
pub const MAX_TAG_VALUE: usize = 256;
pub const MAX_REPOSITORY_POLICY: usize = 10_240;
pub const MAX_LIFECYCLE_POLICY: usize = super::lifecycle::MAX_POLICY_CHARS;

/// A template's prefix, normalized: `ROOT`, or a namespace without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Prefix {
    Root,
    Namespace(String),
}

impl Prefix {
    pub fn as_str(&self) -> &str {
        match self {
            Prefix::Root => ROOT,
            Prefix::Namespace(ns) => ns,
        }
    }

    /// Whether a repository named `repo` is created under this prefix.
    pub fn matches(&self, repo: &str) -> bool {
        match self {
            Prefix::Root => true,
            Prefix::Namespace(ns) => repo.strip_prefix(ns.as_str()).is_some_and(|rest| rest.starts_with('/')),
        }
    }

    /// How specific the prefix is: longer wins, `ROOT` is 0 (below every namespace).
    pub fn rank(&self) -> usize {
        match self {
            Prefix::Root => 0,
            Prefix::Namespace(ns) => ns.len() + 1,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Prefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Prefix, String> {
        let explain = || {
            format!(
                "prefix {s:?} must be ROOT or a namespace such as prod or prod/team: parts of lowercase letters \
                 and digits joined by '.', '_', '__' or '-', separated by '/', at most {MAX_PREFIX} characters"
            )
        };
        if s == ROOT {
            return Ok(Prefix::Root);
        }
        if s.is_empty() || s.len() > MAX_PREFIX {
            return Err(explain());
        }
        let ns = s.strip_suffix('/').unwrap_or(s);
        if ns.is_empty() || !ns.split('/').all(component) {
            return Err(explain());
        }
        Ok(Prefix::Namespace(ns.to_owned()))
    }
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else { return false };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Between runs of letters and digits: one '.', one or two '_', or any number of '-'.
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || (!sep.is_empty() && sep.bytes().all(|b| b == b'-'));
        if !ok {
            return false;
        }
    }
    true
}

/// ECR's `appliedFor`: the ways of creating a repository a template applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AppliedFor {
    /// A push (blob upload, mount, manifest) to a repository that does not exist.
    CreateOnPush,
    /// A pull through a cache rule (not in Berth yet).
    PullThroughCache,
    /// Replication from another registry (not in Berth yet).
    Replication,
}

impl AppliedFor {
    pub const ALL: [AppliedFor; 3] = [AppliedFor::CreateOnPush, AppliedFor::PullThroughCache, AppliedFor::Replication];

    pub fn as_str(self) -> &'static str {
        match self {
            AppliedFor::CreateOnPush => "CREATE_ON_PUSH",
            AppliedFor::PullThroughCache => "PULL_THROUGH_CACHE",
            AppliedFor::Replication => "REPLICATION",
        }
    }
}

impl fmt::Display for AppliedFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AppliedFor {
    type Err = String;

    fn from_str(s: &str) -> Result<AppliedFor, String> {
        AppliedFor::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("appliedFor {s:?} is not one of CREATE_ON_PUSH, PULL_THROUGH_CACHE, REPLICATION"))
    }
}

/// A template's `appliedFor` checked: at least one way (a template applied for nothing would
/// never be used), each once, in a stable order.
pub fn applied_for(given: &[String]) -> Result<Vec<AppliedFor>, String> {
    if given.is_empty() {
        return Err("appliedFor must name at least one of CREATE_ON_PUSH, PULL_THROUGH_CACHE, REPLICATION".into());
    }
    let mut out = given.iter().map(|s| s.parse()).collect::<Result<Vec<AppliedFor>, String>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// Resource tags checked with ECR's limits: at most 50, keys 1-128 characters not starting
/// with `aws:`, values up to 256, each key once.
pub fn resource_tags(tags: &[(String, String)]) -> Result<(), String> {
    if tags.len() > MAX_RESOURCE_TAGS {
        return Err(format!("{} tags given, a repository takes at most {MAX_RESOURCE_TAGS}", tags.len()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > MAX_TAG_KEY || k.starts_with("aws:") {
            return Err(format!("tag key {k:?} must be 1 to {MAX_TAG_KEY} characters, not starting with aws:"));
        }
        if v.chars().count() > MAX_TAG_VALUE {
            return Err(format!("the value of tag {k:?} is longer than {MAX_TAG_VALUE} characters"));
        }
        if !seen.insert(k.as_str()) {
            return Err(format!("tag key {k:?} is given twice"));
        }
    }
    Ok(())
}

/// A description checked against ECR's limit.
pub fn description(text: &str) -> Result<(), String> {
    if text.chars().count() > MAX_DESCRIPTION {
        return Err(format!("the description is longer than {MAX_DESCRIPTION} characters"));
    }
    Ok(())
}

/// The template that gives a repository named `repo`, created in way `way`, its settings:
/// of those whose `appliedFor` names `way` and whose prefix matches, the longest prefix
/// (`ROOT` last). `parts` says what each item's prefix and `appliedFor` are.
pub fn select<'a, T>(
    templates: &'a [T],
    repo: &str,
    way: AppliedFor,
    parts: impl Fn(&T) -> (&Prefix, &[AppliedFor]),
) -> Option<&'a T> {
    templates
        .iter()
        .filter(|t| {
            let (prefix, applied) = parts(t);
            applied.contains(&way) && prefix.matches(repo)
        })
        .max_by_key(|t| parts(t).0.rank())
}

/// Whether a configuration rule `[[encryption.repositories]]` with `prefix` matches `repo`:
/// as text, as it did before templates (`team-a/` matches `team-a/app`; `team` matches
/// `team-a/app` too).
pub fn config_rule_matches(prefix: &str, repo: &str) -> bool {
    repo.starts_with(prefix)
}

/// Whether the configuration rule matched (its `prefix`, the first matching rule in file
/// order, as before) wins over the stored template matched (`stored`): the longer prefix wins,
/// a rule's prefix counted without its trailing `/`, so `team-a/` ties with the template
/// `team-a`, and a tie goes to the stored template (set through the API, like a quota).
pub fn config_rule_wins(stored: Option<&Prefix>, rule_prefix: &str) -> bool {
    let trimmed = rule_prefix.trim_end_matches('/');
    let rule_rank = if trimmed.is_empty() { 0 } else { trimmed.len() + 1 };
    match stored {
        None => true,
        Some(p) => rule_rank > p.rank(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_follow_ecr_grammar() {
        let cases: &[(&str, Option<&str>)] = &[
            ("ROOT", Some("ROOT")),
            ("prod", Some("prod")),
            ("prod/", Some("prod")),
            ("prod/team", Some("prod/team")),
            ("prod/team/", Some("prod/team")),
            ("a.b_c__d---e/f0", Some("a.b_c__d---e/f0")),
            ("ecr-public", Some("ecr-public")),
            ("", None),
            ("/", None),
            ("root", Some("root")),
            ("Prod", None),
            ("prod//team", None),
            ("/prod", None),
            ("prod//", None),
            ("a___b", None),
            ("a..b", None),
            ("a.-b", None),
            ("-a", None),
            ("a-", None),
            ("prod/*", None),
            ("prod team", None),
        ];
        for (given, want) in cases {
            let got = given.parse::<Prefix>();
            assert_eq!(got.as_ref().ok().map(Prefix::as_str), *want, "{given:?}: {got:?}");
        }
        assert!("x".repeat(256).parse::<Prefix>().is_ok());
        assert!("x".repeat(257).parse::<Prefix>().unwrap_err().contains("256"));
        assert!("Prod".parse::<Prefix>().unwrap_err().contains("ROOT or a namespace"));
    }

    #[test]
    fn a_prefix_matches_its_namespace_only() {
        let cases = [
            ("prod", "prod/app", true),
            ("prod", "prod/a/b", true),
            ("prod", "production/app", false),
            ("prod", "prod", false),
            ("prod", "other/prod/app", false),
            ("prod/team", "prod/team/app", true),
            ("prod/team", "prod/teamx/app", false),
            ("prod/team", "prod/app", false),
            ("ROOT", "anything", true),
            ("ROOT", "a/b/c", true),
        ];
        for (p, repo, want) in cases {
            assert_eq!(prefix(p).matches(repo), want, "{p} vs {repo}");
        }
    }

    #[test]
    fn the_longest_applicable_prefix_wins_root_last() {
        use AppliedFor::*;
        let templates = vec![
            (prefix("ROOT"), vec![CreateOnPush]),
            (prefix("prod"), vec![CreateOnPush, Replication]),
            (prefix("prod/team"), vec![CreateOnPush]),
            (prefix("prod/team/app"), vec![PullThroughCache]),
            (prefix("cache"), vec![PullThroughCache]),
        ];
        let pick = |repo: &str, way| {
            select(&templates, repo, way, |(p, a)| (p, a.as_slice())).map(|(p, _)| p.as_str().to_owned())
        };
        let cases = [
            ("prod/team/app", CreateOnPush, Some("prod/team")),
            ("prod/team/app/x", PullThroughCache, Some("prod/team/app")),
            ("prod/team/app/x", CreateOnPush, Some("prod/team")),
            ("prod/other", CreateOnPush, Some("prod")),
            ("prod/other", Replication, Some("prod")),
            ("production/app", CreateOnPush, Some("ROOT")),
            ("prod", CreateOnPush, Some("ROOT")),
            ("app", CreateOnPush, Some("ROOT")),
            ("app", Replication, None),
            ("cache/x", PullThroughCache, Some("cache")),
            ("cache/x", CreateOnPush, Some("ROOT")),
        ];
        for (repo, way, want) in cases {
            assert_eq!(pick(repo, way).as_deref(), want, "{repo} {way}");
        }
        let none: Vec<(Prefix, Vec<AppliedFor>)> = Vec::new();
        assert!(select(&none, "a", CreateOnPush, |(p, a)| (p, a.as_slice())).is_none());
    }

    #[test]
    fn applied_for_values() {
        assert_eq!(
            applied_for(&["REPLICATION".into(), "CREATE_ON_PUSH".into(), "REPLICATION".into()]).unwrap(),
            vec![AppliedFor::CreateOnPush, AppliedFor::Replication]
        );
        assert!(applied_for(&[]).unwrap_err().contains("at least one"));
        assert!(applied_for(&["create_on_push".into()]).unwrap_err().contains("CREATE_ON_PUSH"));
        assert_eq!(serde_json::to_string(&AppliedFor::PullThroughCache).unwrap(), "\"PULL_THROUGH_CACHE\"");
    }

    #[test]
    fn resource_tag_limits() {
        let tag = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        type Tags = Vec<(String, String)>;
        let cases: Vec<(Tags, Option<&str>)> = vec![
            (vec![], None),
            (vec![tag("team", "a"), tag("env", "")], None),
            (vec![tag(&"k".repeat(128), &"v".repeat(256))], None),
            (vec![tag("", "v")], Some("1 to 128")),
            (vec![tag(&"k".repeat(129), "v")], Some("1 to 128")),
            (vec![tag("aws:x", "v")], Some("aws:")),
            (vec![tag("k", &"v".repeat(257))], Some("256")),
            (vec![tag("k", "1"), tag("k", "2")], Some("twice")),
            ((0..51).map(|i| tag(&format!("k{i}"), "v")).collect(), Some("at most 50")),
        ];
        for (tags, want) in cases {
            match (resource_tags(&tags), want) {
                (Ok(()), None) => {}
                (Err(e), Some(w)) => assert!(e.contains(w), "{e}"),
                (got, want) => panic!("{tags:?}: {got:?}, wanted {want:?}"),
            }
        }
        assert!(description(&"d".repeat(256)).is_ok());
        assert!(description(&"d".repeat(257)).is_err());
    }

    #[test]
    fn configuration_rules_rank_by_prefix_length() {
        assert!(config_rule_matches("team-a/", "team-a/app"));
        assert!(!config_rule_matches("team-a/", "team-a"));
        assert!(config_rule_matches("team", "team-a/app"), "text matching, as before templates");
        let cases = [
            (None, "team-a/", true),
            (Some("ROOT"), "team-a/", true),
            (Some("ROOT"), "", false),
            (Some("team-a"), "team-a/", false),
            (Some("team-a"), "team-a/x/", true),
            (Some("team-a/x"), "team-a/", false),
            (Some("team"), "team-a/", true),
        ];
        for (stored, rule, want) in cases {
            let stored = stored.map(prefix);
            assert_eq!(config_rule_wins(stored.as_ref(), rule), want, "{stored:?} vs {rule:?}");
        }
    }
}
