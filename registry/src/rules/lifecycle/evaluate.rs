//! What a lifecycle policy expires among a repository's images, as ECR decides it:
//!
//! - rules apply in priority order (lowest `rulePriority` first); each image is claimed by
//!   the first rule whose selection it matches, which keeps or expires it; lower rules never
//!   see it (so an image is expired by exactly one rule or none);
//! - `imageCountMoreThan` N: of the rule's images, newest pushed first, the first N stay and
//!   the rest expire; `sinceImagePushed` N: those pushed more than N days ago expire;
//!   `sinceImagePulled` N (Berth's extension): those last pulled (never pulled: pushed) more
//!   than N days ago expire.
//!
//! Berth's additions, for what ECR does not hold as separate images:
//! - a manifest referenced by an index in the repository (its child) is no candidate while
//!   the index lives; when the index expires, its untagged children that no surviving
//!   manifest references expire with it ("child of <index>");
//! - a manifest with a `subject` (a signature, an SBOM: a referrer) is never a candidate on
//!   its own, and expires with its subject ("referrer of <subject>").

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use berth_oci::Digest;
use serde::Serialize;

use super::policy::{CountType, Policy};

const DAY: i64 = 86_400;

/// What the evaluation needs to know of one image (a manifest of the repository).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    pub digest: Digest,
    /// Its tags, sorted.
    pub tags: Vec<String>,
    /// Unix seconds.
    pub pushed_at: i64,
    /// Unix seconds; None: never pulled.
    pub last_pulled_at: Option<i64>,
    /// The manifest it refers to, when it is a referrer.
    pub subject: Option<Digest>,
    /// The manifests it lists, when it is an index.
    pub children: Vec<Digest>,
}

/// Why an image expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Expired by the rule of this `rulePriority`.
    Rule(u32),
    /// A child of this index, which expires.
    ChildOf(Digest),
    /// A referrer of this manifest, which expires.
    ReferrerOf(Digest),
}

impl Cause {
    /// The rule's priority, when a rule expired the image.
    pub fn rule_priority(&self) -> Option<u32> {
        match self {
            Cause::Rule(p) => Some(*p),
            _ => None,
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Rule(p) => write!(f, "rule {p}"),
            Cause::ChildOf(d) => write!(f, "child of {d}"),
            Cause::ReferrerOf(d) => write!(f, "referrer of {d}"),
        }
    }
}

/// One image the plan expires, with what the plan saw of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    pub digest: Digest,
    /// Its tags when the plan was made: a run deletes it only if they are still the same.
    pub tags: Vec<String>,
    pub pushed_at: i64,
    pub last_pulled_at: Option<i64>,
    pub cause: Cause,
}

/// What a policy expires, in the order a run deletes it: the rules' expiries by rule
/// priority, each rule's oldest pushed first, then what goes with them (an index before its
/// children, a subject before its referrers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub expiring: Vec<Expiry>,
}

impl Plan {
    pub fn digests(&self) -> Vec<&Digest> {
        self.expiring.iter().map(|e| &e.digest).collect()
    }
}

/// What `policy` expires among `images` at `now` (unix seconds).
pub fn plan(policy: &Policy, images: &[ImageFacts], now: i64) -> Plan {
    let by_digest: BTreeMap<&Digest, &ImageFacts> = images.iter().map(|i| (&i.digest, i)).collect();
    // Who lists each present child, and who refers to each subject: read once, so that what
    // goes with an expiry is found without a pass over every image.
    let mut parents: BTreeMap<&Digest, Vec<&Digest>> = BTreeMap::new();
    let mut referrers: BTreeMap<&Digest, Vec<&ImageFacts>> = BTreeMap::new();
    for image in images {
        for child in image.children.iter().filter(|c| by_digest.contains_key(c)) {
            parents.entry(child).or_default().push(&image.digest);
        }
        if let Some(subject) = &image.subject {
            referrers.entry(subject).or_default().push(image);
        }
    }
    for list in referrers.values_mut() {
        list.sort_by(|a, b| a.pushed_at.cmp(&b.pushed_at).then_with(|| a.digest.cmp(&b.digest)));
    }
    let mut unclaimed: Vec<&ImageFacts> =
        images.iter().filter(|i| i.subject.is_none() && !parents.contains_key(&i.digest)).collect();

    let mut expiring: Vec<Expiry> = Vec::new();
    let mut expired: BTreeSet<&Digest> = BTreeSet::new();
    let expire = |image: &ImageFacts, cause: Cause| Expiry {
        digest: image.digest.clone(),
        tags: image.tags.clone(),
        pushed_at: image.pushed_at,
        last_pulled_at: image.last_pulled_at,
        cause,
    };
    for rule in &policy.rules {
        let (mut mine, rest): (Vec<&ImageFacts>, Vec<&ImageFacts>) =
            unclaimed.into_iter().partition(|i| rule.tags.selects(&i.tags));
        unclaimed = rest;
        // Newest first; equal push times by digest, so the plan never depends on input order.
        mine.sort_by(|a, b| b.pushed_at.cmp(&a.pushed_at).then_with(|| a.digest.cmp(&b.digest)));
        let doomed: Vec<&ImageFacts> = match rule.count {
            CountType::ImageCountMoreThan(n) => mine.into_iter().skip(n as usize).collect(),
            CountType::SinceImagePushed { days } => {
                mine.into_iter().filter(|i| now - i.pushed_at > i64::from(days) * DAY).collect()
            }
            CountType::SinceImagePulled { days } => mine
                .into_iter()
                .filter(|i| now - i.last_pulled_at.unwrap_or(i.pushed_at) > i64::from(days) * DAY)
                .collect(),
        };
        // Oldest first, as ECR expires.
        for image in doomed.into_iter().rev() {
            expired.insert(&image.digest);
            expiring.push(expire(image, Cause::Rule(rule.priority)));
        }
    }

    // What goes with the expired: until nothing more changes, children no survivor lists and
    // that have no tag of their own, and referrers of whatever expires.
    let mut i = 0;
    while i < expiring.len() {
        let gone = expiring[i].digest.clone();
        let image = by_digest[&gone];
        for child in &image.children {
            let Some(c) = by_digest.get(child) else { continue };
            if expired.contains(child) || !c.tags.is_empty() {
                continue;
            }
            let still_listed = parents.get(child).is_some_and(|ps| ps.iter().any(|p| !expired.contains(p)));
            if !still_listed {
                expired.insert(&c.digest);
                expiring.push(expire(c, Cause::ChildOf(gone.clone())));
            }
        }
        for r in referrers.get(&gone).map(Vec::as_slice).unwrap_or_default() {
            if expired.insert(&r.digest) {
                expiring.push(expire(r, Cause::ReferrerOf(gone.clone())));
            }
        }
        i += 1;
    }
    Plan { expiring }
}

#[cfg(test)]
mod tests {
    use super::super::policy::Policy;
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn digest(name: &str) -> Digest {
        berth_oci::Digest::sha256_of(name.as_bytes())
    }

    fn image(name: &str, tags: &[&str], days_ago: i64) -> ImageFacts {
        ImageFacts {
            digest: digest(name),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            pushed_at: NOW - days_ago * DAY,
            last_pulled_at: None,
            subject: None,
            children: vec![],
        }
    }

    /// The names of the images `text` expires, in plan order, with their causes.
    fn run(text: &str, images: &[(&str, ImageFacts)]) -> Vec<(String, String)> {
        let policy = Policy::parse(text).unwrap();
        let facts: Vec<ImageFacts> = images.iter().map(|(_, i)| i.clone()).collect();
        let name_of = |d: &Digest| images.iter().find(|(_, i)| &i.digest == d).unwrap().0.to_string();
        plan(&policy, &facts, NOW)
            .expiring
            .iter()
            .map(|e| {
                let cause = match &e.cause {
                    Cause::Rule(p) => format!("rule {p}"),
                    Cause::ChildOf(d) => format!("child of {}", name_of(d)),
                    Cause::ReferrerOf(d) => format!("referrer of {}", name_of(d)),
                };
                (name_of(&e.digest), cause)
            })
            .collect()
    }

    fn names(expired: &[(String, String)]) -> Vec<&str> {
        expired.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn tagged_rule(priority: u32, list: &str, entries: &[&str], count: &str) -> String {
        let entries: Vec<String> = entries.iter().map(|e| format!("{e:?}")).collect();
        format!(
            r#"{{"rulePriority":{priority},"description":"Rule {priority}","selection":{{"tagStatus":"tagged","{list}":[{}],{count}}},"action":{{"type":"expire"}}}}"#,
            entries.join(",")
        )
    }

    fn policy(rules: &[String]) -> String {
        format!(r#"{{"rules":[{}]}}"#, rules.join(","))
    }

    const KEEP_ONE: &str = r#""countType":"imageCountMoreThan","countNumber":1"#;

    // The AWS docs' "Filtering on multiple rules", example A: rule 1 keeps one `prod` image,
    // rule 2 one `beta` image; A (the older prod) expires, B is rule 1's and stays.
    #[test]
    fn aws_multiple_rules_example_a() {
        let images = [
            ("A", image("A", &["beta-1", "prod-1"], 10)),
            ("B", image("B", &["beta-2", "prod-2"], 9)),
            ("C", image("C", &["beta-3"], 8)),
        ];
        let text = policy(&[
            tagged_rule(1, "tagPrefixList", &["prod"], KEEP_ONE),
            tagged_rule(2, "tagPrefixList", &["beta"], KEEP_ONE),
        ]);
        assert_eq!(names(&run(&text, &images)), ["A"]);
        assert_eq!(run(&text, &images)[0].1, "rule 1");
    }

    // Example B: the same images with the priorities swapped; rule 1 (`beta`) sees all three
    // and expires A and B; rule 2 sees nothing.
    #[test]
    fn aws_multiple_rules_example_b() {
        let images = [
            ("A", image("A", &["beta-1", "prod-1"], 10)),
            ("B", image("B", &["beta-2", "prod-2"], 9)),
            ("C", image("C", &["beta-3"], 8)),
        ];
        let text = policy(&[
            tagged_rule(1, "tagPrefixList", &["beta"], KEEP_ONE),
            tagged_rule(2, "tagPrefixList", &["prod"], KEEP_ONE),
        ]);
        let got = run(&text, &images);
        assert_eq!(names(&got), ["A", "B"], "oldest first");
        assert!(got.iter().all(|(_, cause)| cause == "rule 1"));
    }

    // "Filtering on multiple tags in a single rule", example A: only images with both an
    // `alpha` and a `beta` tag are selected (C and F); C is older than five days.
    #[test]
    fn aws_multiple_tags_example_a() {
        let images = [
            ("A", image("A", &["alpha-1"], 12)),
            ("B", image("B", &["beta-1"], 11)),
            ("C", image("C", &["alpha-2", "beta-2"], 10)),
            ("D", image("D", &["alpha-3"], 4)),
            ("E", image("E", &["beta-3"], 3)),
            ("F", image("F", &["alpha-4", "beta-4"], 2)),
        ];
        let five_days = r#""countType":"sinceImagePushed","countNumber":5,"countUnit":"days""#;
        let text = policy(&[tagged_rule(1, "tagPrefixList", &["alpha", "beta"], five_days)]);
        assert_eq!(names(&run(&text, &images)), ["C"]);
        // The same with patterns.
        let text = policy(&[tagged_rule(1, "tagPatternList", &["alpha*", "beta*"], five_days)]);
        assert_eq!(names(&run(&text, &images)), ["C"]);
    }

    // Example B: tags are not exclusive; all three have alpha and beta, the newest stays.
    #[test]
    fn aws_multiple_tags_example_b() {
        let images = [
            ("A", image("A", &["alpha-1", "beta-1", "gamma-1"], 10)),
            ("B", image("B", &["alpha-2", "beta-2"], 9)),
            ("C", image("C", &["alpha-3", "beta-3", "gamma-2"], 8)),
        ];
        let text = policy(&[tagged_rule(1, "tagPrefixList", &["alpha", "beta"], KEEP_ONE)]);
        assert_eq!(names(&run(&text, &images)), ["A", "B"]);
    }

    // "Filtering on image age" and "on image count": untagged images.
    #[test]
    fn aws_untagged_examples() {
        let images = [
            ("old", image("old", &[], 20)),
            ("fortnight", image("fortnight", &[], 14)),
            ("new", image("new", &[], 1)),
            ("tagged", image("tagged", &["v1"], 30)),
        ];
        let age = r#"{"rules":[{"rulePriority":1,"description":"Expire images older than 14 days","selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":14},"action":{"type":"expire"}}]}"#;
        // Exactly 14 days is not more than 14 days.
        assert_eq!(names(&run(age, &images)), ["old"]);
        let count = r#"{"rules":[{"rulePriority":1,"description":"Keep only one untagged image, expire all others","selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;
        assert_eq!(names(&run(count, &images)), ["old", "fortnight"]);
    }

    #[test]
    fn a_higher_rule_keeps_what_it_claims_from_lower_rules() {
        // Rule 1 claims every `release` image and keeps the newest 10; rule 2 (`any`) keeps one
        // image of what is left, so the releases survive it.
        let images = [
            ("r1", image("r1", &["release-1"], 30)),
            ("r2", image("r2", &["release-2"], 20)),
            ("dev1", image("dev1", &["dev-1"], 10)),
            ("dev2", image("dev2", &["dev-2"], 5)),
            ("untagged", image("untagged", &[], 1)),
        ];
        let text = policy(&[
            tagged_rule(1, "tagPatternList", &["release-*"], r#""countType":"imageCountMoreThan","countNumber":10"#),
            r#"{"rulePriority":2,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}"#.into(),
        ]);
        assert_eq!(run(&text, &images), [("dev1".into(), "rule 2".into()), ("dev2".into(), "rule 2".into())]);
    }

    #[test]
    fn since_image_pulled_counts_from_the_last_pull_or_the_push() {
        let mut pulled_recently = image("pulled_recently", &["a"], 100);
        pulled_recently.last_pulled_at = Some(NOW - 2 * DAY);
        let mut pulled_long_ago = image("pulled_long_ago", &["b"], 100);
        pulled_long_ago.last_pulled_at = Some(NOW - 40 * DAY);
        let images = [
            ("pulled_recently", pulled_recently),
            ("pulled_long_ago", pulled_long_ago),
            ("never_pulled_old", image("never_pulled_old", &["c"], 31)),
            ("never_pulled_new", image("never_pulled_new", &["d"], 29)),
        ];
        let text = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"sinceImagePulled","countUnit":"days","countNumber":30},"action":{"type":"expire"}}]}"#;
        // Oldest pushed first.
        assert_eq!(names(&run(text, &images)), ["pulled_long_ago", "never_pulled_old"]);
    }

    #[test]
    fn index_children_are_no_candidates_and_go_with_their_index() {
        let mut index = image("index", &["v1"], 50);
        let mut shared_index = image("shared_index", &["v2"], 1);
        let amd64 = image("amd64", &[], 50);
        let arm64 = image("arm64", &[], 50);
        let tagged_child = image("tagged_child", &["amd64-v1"], 50);
        index.children = vec![amd64.digest.clone(), arm64.digest.clone(), tagged_child.digest.clone()];
        // arm64 is listed by a newer index too, which stays.
        shared_index.children = vec![arm64.digest.clone()];
        let images = [
            ("index", index),
            ("shared_index", shared_index),
            ("amd64", amd64),
            ("arm64", arm64),
            ("tagged_child", tagged_child),
            ("loose", image("loose", &[], 40)),
        ];
        // An untagged rule sees only `loose`: the children are not candidates.
        let untagged = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":7},"action":{"type":"expire"}}]}"#;
        assert_eq!(names(&run(untagged, &images)), ["loose"]);
        // The tagged_child carries an `amd64-v1` tag, but a child is no candidate either.
        let any = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;
        assert_eq!(
            run(any, &images),
            [
                ("index".into(), "rule 1".into()),
                ("loose".into(), "rule 1".into()),
                ("amd64".into(), "child of index".into()),
            ]
        );
    }

    #[test]
    fn a_child_of_two_expiring_indexes_goes_once_after_both() {
        let shared = image("shared", &[], 9);
        let mut first = image("first", &["a"], 9);
        first.children = vec![shared.digest.clone()];
        let mut second = image("second", &["b"], 8);
        second.children = vec![shared.digest.clone()];
        let images = [("first", first), ("second", second), ("shared", shared), ("new", image("new", &["c"], 1))];
        let text = policy(&[tagged_rule(1, "tagPatternList", &["*"], KEEP_ONE)]);
        assert_eq!(
            run(&text, &images),
            [
                ("first".into(), "rule 1".into()),
                ("second".into(), "rule 1".into()),
                ("shared".into(), "child of first".into()),
            ]
        );
    }

    #[test]
    fn nested_indexes_cascade() {
        let leaf = image("leaf", &[], 9);
        let mut inner = image("inner", &[], 9);
        inner.children = vec![leaf.digest.clone()];
        let mut outer = image("outer", &["old"], 9);
        outer.children = vec![inner.digest.clone()];
        let images = [("outer", outer), ("inner", inner), ("leaf", leaf), ("new", image("new", &["new"], 1))];
        let text = policy(&[tagged_rule(1, "tagPatternList", &["*"], KEEP_ONE)]);
        assert_eq!(
            run(&text, &images),
            [
                ("outer".into(), "rule 1".into()),
                ("inner".into(), "child of outer".into()),
                ("leaf".into(), "child of inner".into()),
            ]
        );
    }

    #[test]
    fn referrers_are_no_candidates_and_go_with_their_subject() {
        let old = image("old", &["v1"], 30);
        let new = image("new", &["v2"], 1);
        let mut sig_old = image("sig_old", &[], 30);
        sig_old.subject = Some(old.digest.clone());
        let mut sig_new = image("sig_new", &[], 1);
        sig_new.subject = Some(new.digest.clone());
        let mut sig_of_sig = image("sig_of_sig", &[], 30);
        sig_of_sig.subject = Some(sig_old.digest.clone());
        // A tagged referrer (the referrers tag schema) goes with its subject too.
        let mut sbom = image("sbom", &["sha256-old"], 29);
        sbom.subject = Some(old.digest.clone());
        let mut orphan = image("orphan", &[], 60);
        orphan.subject = Some(digest("absent"));
        let images = [
            ("old", old),
            ("new", new),
            ("sig_old", sig_old),
            ("sig_new", sig_new),
            ("sig_of_sig", sig_of_sig),
            ("sbom", sbom),
            ("orphan", orphan),
        ];
        let any = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;
        assert_eq!(
            run(any, &images),
            [
                ("old".into(), "rule 1".into()),
                ("sig_old".into(), "referrer of old".into()),
                ("sbom".into(), "referrer of old".into()),
                ("sig_of_sig".into(), "referrer of sig_old".into()),
            ]
        );
    }

    #[test]
    fn the_plan_does_not_depend_on_the_order_of_images() {
        let images: Vec<ImageFacts> = (0..6).map(|i| image(&format!("i{i}"), &[], 10 - (i % 3))).collect();
        let policy = Policy::parse(r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":2},"action":{"type":"expire"}}]}"#).unwrap();
        let forward = plan(&policy, &images, NOW);
        let mut reversed = images.clone();
        reversed.reverse();
        assert_eq!(forward, plan(&policy, &reversed, NOW));
        assert_eq!(forward.expiring.len(), 4);
    }
}
