//! The lifecycle policy document, as ECR writes it (`PutLifecyclePolicy`'s
//! `lifecyclePolicyText`), parsed and checked as ECR checks it. Unknown fields and values are
//! refused, so a policy never silently means less than its author wrote.
//!
//! ```json
//! {"rules": [{"rulePriority": 1, "description": "Expire untagged images older than 14 days",
//!   "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed",
//!                 "countUnit": "days", "countNumber": 14},
//!   "action": {"type": "expire"}}]}
//! ```
//!
//! Berth's extension: `countType` `sinceImagePulled` (with `countUnit` `days`) expires images
//! last pulled more than `countNumber` days ago (never pulled: counted from the push).

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::rules::wildcard;

/// The longest policy text ECR accepts, in characters.
pub const MAX_POLICY_CHARS: usize = 30_720;
/// The most `*` wildcards one `tagPatternList` entry may have (ECR's limit).
pub const MAX_STARS: usize = 4;

/// A checked policy; its rules in the order they apply (lowest `rulePriority` first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<Rule>,
}

/// One rule: which images it selects and how many of them it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `rulePriority`: unique in the policy, at least 1; lower applies first.
    pub priority: u32,
    pub description: Option<String>,
    pub tags: TagSelection,
    pub count: CountType,
}

/// `tagStatus` with its lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagSelection {
    /// `tagged` with `tagPrefixList`: every prefix must start one of the image's tags.
    Prefixes(Vec<String>),
    /// `tagged` with `tagPatternList`: every pattern must match one of the image's tags.
    Patterns(Vec<String>),
    /// `untagged`: images without tags.
    Untagged,
    /// `any`: every image.
    Any,
}

/// `countType` with `countNumber` (and `countUnit` `days` for the time-based ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountType {
    /// `imageCountMoreThan`: keep the newest N (by push time) of the rule's images.
    ImageCountMoreThan(u32),
    /// `sinceImagePushed`: expire images pushed more than N days ago.
    SinceImagePushed { days: u32 },
    /// `sinceImagePulled` (Berth's extension): expire images last pulled (or, never pulled,
    /// pushed) more than N days ago.
    SinceImagePulled { days: u32 },
}

// The document as written; checked into a [`Policy`] by [`Policy::parse`].

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRule {
    rule_priority: i64,
    #[serde(default)]
    description: Option<String>,
    selection: RawSelection,
    action: RawAction,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSelection {
    tag_status: String,
    #[serde(default)]
    tag_prefix_list: Option<Vec<String>>,
    #[serde(default)]
    tag_pattern_list: Option<Vec<String>>,
    // ECR's archive tier: named here only to refuse it with a message saying so.
    #[serde(default)]
    storage_class: Option<serde_json::Value>,
    count_type: String,
    #[serde(default)]
    count_unit: Option<String>,
    count_number: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAction {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    target_storage_class: Option<serde_json::Value>,
}

impl Policy {
    /// Parses and checks `lifecyclePolicyText`; the error names the rule at fault (by its
    /// `rulePriority`) and what to change.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let chars = text.chars().count();
        if chars > MAX_POLICY_CHARS {
            return Err(format!("the lifecycle policy is {chars} characters long; the limit is {MAX_POLICY_CHARS}"));
        }
        let raw: RawPolicy =
            serde_json::from_str(text).map_err(|e| format!("the lifecycle policy is not valid: {e}"))?;
        if raw.rules.is_empty() {
            return Err("the lifecycle policy has no rules; give it at least one".into());
        }
        let mut rules = Vec::with_capacity(raw.rules.len());
        for r in raw.rules {
            rules.push(Rule::check(r)?);
        }
        rules.sort_by_key(|r| r.priority);
        for pair in rules.windows(2) {
            if pair[0].priority == pair[1].priority {
                return Err(format!(
                    "two rules have rulePriority {}; each rule needs a unique rulePriority",
                    pair[0].priority
                ));
            }
        }
        let last = rules.last().map(|r| r.priority).unwrap_or_default();
        for rule in &rules {
            if rule.tags == TagSelection::Any && rule.priority != last {
                return Err(format!(
                    "rule {}: tagStatus \"any\" must be in the rule with the highest rulePriority (here {last})",
                    rule.priority
                ));
            }
        }
        let untagged: Vec<u32> =
            rules.iter().filter(|r| r.tags == TagSelection::Untagged).map(|r| r.priority).collect();
        if let [first, second, ..] = untagged[..] {
            return Err(format!(
                "rules {first} and {second} both select untagged images; only one rule may have tagStatus \"untagged\""
            ));
        }
        // ECR: "the set of rules must contain a unique set of tag prefixes" (and patterns).
        for (i, a) in rules.iter().enumerate() {
            for b in &rules[i + 1..] {
                let same = match (&a.tags, &b.tags) {
                    (TagSelection::Prefixes(x), TagSelection::Prefixes(y))
                    | (TagSelection::Patterns(x), TagSelection::Patterns(y)) => {
                        x.iter().collect::<BTreeSet<_>>() == y.iter().collect::<BTreeSet<_>>()
                    }
                    _ => false,
                };
                if same {
                    return Err(format!(
                        "rules {} and {} select the same tags; give each tagged rule its own tag list",
                        a.priority, b.priority
                    ));
                }
            }
        }
        Ok(Policy { rules })
    }
}

impl Rule {
    fn check(r: RawRule) -> Result<Rule, String> {
        let p = r.rule_priority;
        let priority = u32::try_from(p)
            .ok()
            .filter(|&p| p >= 1)
            .ok_or_else(|| format!("rule {p}: rulePriority must be a positive integer"))?;
        let s = r.selection;
        if s.storage_class.is_some() {
            return Err(format!(
                "rule {p}: selection.storageClass is not supported (Berth has no archive storage class); remove it"
            ));
        }
        match r.action.kind.as_str() {
            "expire" => {}
            "transition" => {
                return Err(format!(
                    "rule {p}: action type \"transition\" is not supported (Berth has no archive storage class); use \"expire\""
                ));
            }
            other => return Err(format!("rule {p}: action type {other:?} is not supported; use \"expire\"")),
        }
        if r.action.target_storage_class.is_some() {
            return Err(format!("rule {p}: action.targetStorageClass is not supported; remove it"));
        }
        let lists = (s.tag_prefix_list, s.tag_pattern_list);
        let tags = match s.tag_status.as_str() {
            "tagged" => match lists {
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "rule {p}: tagStatus \"tagged\" takes tagPrefixList or tagPatternList, not both"
                    ));
                }
                (Some(prefixes), None) => {
                    check_list(p, "tagPrefixList", &prefixes)?;
                    TagSelection::Prefixes(prefixes)
                }
                (None, Some(patterns)) => {
                    check_list(p, "tagPatternList", &patterns)?;
                    for pattern in &patterns {
                        if wildcard::stars(pattern) > MAX_STARS {
                            return Err(format!(
                                "rule {p}: tagPatternList entry {pattern:?} has {} wildcards; at most {MAX_STARS} are allowed",
                                wildcard::stars(pattern)
                            ));
                        }
                    }
                    TagSelection::Patterns(patterns)
                }
                (None, None) => {
                    return Err(format!("rule {p}: tagStatus \"tagged\" needs a tagPrefixList or a tagPatternList"));
                }
            },
            status @ ("untagged" | "any") => {
                if lists.0.is_some() || lists.1.is_some() {
                    return Err(format!(
                        "rule {p}: tagStatus {status:?} takes no tagPrefixList or tagPatternList (use \"tagged\" to select by tag)"
                    ));
                }
                if status == "any" { TagSelection::Any } else { TagSelection::Untagged }
            }
            other => {
                return Err(format!("rule {p}: tagStatus {other:?} is not one of \"tagged\", \"untagged\", \"any\""));
            }
        };
        let n = u32::try_from(s.count_number)
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| format!("rule {p}: countNumber must be a positive integer (0 is not accepted)"))?;
        let timed = |days: u32| -> Result<u32, String> {
            match s.count_unit.as_deref() {
                Some("days") => Ok(days),
                Some(other) => Err(format!("rule {p}: countUnit {other:?} is not supported; use \"days\"")),
                None => Err(format!("rule {p}: countType {:?} needs countUnit \"days\"", s.count_type)),
            }
        };
        let count = match s.count_type.as_str() {
            "imageCountMoreThan" => {
                if s.count_unit.is_some() {
                    return Err(format!(
                        "rule {p}: countUnit is only for sinceImagePushed and sinceImagePulled; remove it"
                    ));
                }
                CountType::ImageCountMoreThan(n)
            }
            "sinceImagePushed" => CountType::SinceImagePushed { days: timed(n)? },
            "sinceImagePulled" => CountType::SinceImagePulled { days: timed(n)? },
            "sinceImageTransitioned" => {
                return Err(format!(
                    "rule {p}: countType \"sinceImageTransitioned\" is not supported (Berth has no archive storage class)"
                ));
            }
            other => {
                return Err(format!(
                    "rule {p}: countType {other:?} is not one of \"imageCountMoreThan\", \"sinceImagePushed\", \"sinceImagePulled\""
                ));
            }
        };
        Ok(Rule { priority, description: r.description, tags, count })
    }
}

fn check_list(p: i64, name: &str, list: &[String]) -> Result<(), String> {
    if list.is_empty() {
        return Err(format!("rule {p}: {name} is empty; give at least one entry"));
    }
    if list.iter().any(String::is_empty) {
        return Err(format!("rule {p}: {name} has an empty entry; remove it"));
    }
    Ok(())
}

impl TagSelection {
    /// Whether an image with these tags is selected.
    pub fn selects(&self, tags: &[String]) -> bool {
        match self {
            TagSelection::Any => true,
            TagSelection::Untagged => tags.is_empty(),
            TagSelection::Prefixes(prefixes) => prefixes.iter().all(|p| tags.iter().any(|t| t.starts_with(p.as_str()))),
            TagSelection::Patterns(patterns) => patterns.iter().all(|p| tags.iter().any(|t| wildcard::matches(p, t))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(priority: i64, selection: &str) -> String {
        format!(r#"{{"rulePriority":{priority},"selection":{selection},"action":{{"type":"expire"}}}}"#)
    }

    fn policy(rules: &[String]) -> String {
        format!(r#"{{"rules":[{}]}}"#, rules.join(","))
    }

    #[test]
    fn the_aws_examples_parse() {
        let age = r#"{"rules":[{"rulePriority":1,"description":"Expire images older than 14 days",
            "selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":14},
            "action":{"type":"expire"}}]}"#;
        let p = Policy::parse(age).unwrap();
        assert_eq!(p.rules[0].tags, TagSelection::Untagged);
        assert_eq!(p.rules[0].count, CountType::SinceImagePushed { days: 14 });
        assert_eq!(p.rules[0].description.as_deref(), Some("Expire images older than 14 days"));

        let count = r#"{"rules":[{"rulePriority":1,"description":"Keep only one untagged image, expire all others",
            "selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},
            "action":{"type":"expire"}}]}"#;
        assert_eq!(Policy::parse(count).unwrap().rules[0].count, CountType::ImageCountMoreThan(1));

        let patterns = policy(&[rule(
            1,
            r#"{"tagStatus":"tagged","tagPatternList":["prod*"],"countType":"sinceImagePushed","countUnit":"days","countNumber":14}"#,
        )]);
        assert_eq!(Policy::parse(&patterns).unwrap().rules[0].tags, TagSelection::Patterns(vec!["prod*".into()]));

        let pulled = policy(&[rule(
            1,
            r#"{"tagStatus":"any","countType":"sinceImagePulled","countUnit":"days","countNumber":90}"#,
        )]);
        assert_eq!(Policy::parse(&pulled).unwrap().rules[0].count, CountType::SinceImagePulled { days: 90 });
    }

    #[test]
    fn rules_are_ordered_by_priority_whatever_order_they_are_written_in() {
        let text = policy(&[
            rule(10, r#"{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":5}"#),
            rule(2, r#"{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1}"#),
            rule(7, r#"{"tagStatus":"tagged","tagPrefixList":["v"],"countType":"imageCountMoreThan","countNumber":3}"#),
        ]);
        let p = Policy::parse(&text).unwrap();
        assert_eq!(p.rules.iter().map(|r| r.priority).collect::<Vec<_>>(), [2, 7, 10]);
    }

    #[test]
    fn bad_policies_are_refused_naming_the_rule_and_the_fix() {
        let untagged = r#"{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1}"#;
        let any = r#"{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1}"#;
        let cases: Vec<(String, &str)> = vec![
            ("{}".into(), "missing field `rules`"),
            (r#"{"rules":[]}"#.into(), "no rules"),
            (r#"{"rules":[],"extra":1}"#.into(), "unknown field `extra`"),
            (policy(&[rule(1, untagged), rule(1, r#"{"tagStatus":"tagged","tagPrefixList":["a"],"countType":"imageCountMoreThan","countNumber":1}"#)]), "two rules have rulePriority 1"),
            (policy(&[rule(0, untagged)]), "rule 0: rulePriority must be a positive integer"),
            (policy(&[rule(1, any), rule(2, r#"{"tagStatus":"tagged","tagPrefixList":["a"],"countType":"imageCountMoreThan","countNumber":1}"#)]), "rule 1: tagStatus \"any\" must be in the rule with the highest rulePriority"),
            (policy(&[rule(3, r#"{"tagStatus":"tagged","countType":"imageCountMoreThan","countNumber":1}"#)]), "rule 3: tagStatus \"tagged\" needs a tagPrefixList or a tagPatternList"),
            (policy(&[rule(3, r#"{"tagStatus":"tagged","tagPrefixList":["a"],"tagPatternList":["a*"],"countType":"imageCountMoreThan","countNumber":1}"#)]), "rule 3: tagStatus \"tagged\" takes tagPrefixList or tagPatternList, not both"),
            (policy(&[rule(3, r#"{"tagStatus":"tagged","tagPrefixList":[],"countType":"imageCountMoreThan","countNumber":1}"#)]), "rule 3: tagPrefixList is empty"),
            (policy(&[rule(3, r#"{"tagStatus":"tagged","tagPrefixList":[""],"countType":"imageCountMoreThan","countNumber":1}"#)]), "rule 3: tagPrefixList has an empty entry"),
            (policy(&[rule(4, r#"{"tagStatus":"untagged","tagPrefixList":["a"],"countType":"imageCountMoreThan","countNumber":1}"#)]), "rule 4: tagStatus \"untagged\" takes no tagPrefixList or tagPatternList"),
            (policy(&[rule(4, r#"{"tagStatus":"any","tagPatternList":["a*"],"countType":"imageCountMoreThan","countNumber":1}"#)]), "rule 4: tagStatus \"any\" takes no tagPrefixList"),
            (policy(&[rule(5, r#"{"tagStatus":"tagged","tagPatternList":["*a*b*c*d*"],"countType":"imageCountMoreThan","countNumber":1}"#)]), "rule 5: tagPatternList entry \"*a*b*c*d*\" has 5 wildcards; at most 4"),
            (policy(&[rule(6, r#"{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":0}"#)]), "rule 6: countNumber must be a positive integer (0 is not accepted)"),
            (policy(&[rule(6, r#"{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":-3}"#)]), "rule 6: countNumber must be a positive integer"),
            (policy(&[rule(7, r#"{"tagStatus":"untagged","countType":"imageCountMoreThan","countUnit":"days","countNumber":1}"#)]), "rule 7: countUnit is only for sinceImagePushed and sinceImagePulled"),
            (policy(&[rule(7, r#"{"tagStatus":"untagged","countType":"sinceImagePushed","countNumber":1}"#)]), "rule 7: countType \"sinceImagePushed\" needs countUnit \"days\""),
            (policy(&[rule(7, r#"{"tagStatus":"untagged","countType":"sinceImagePulled","countNumber":1}"#)]), "rule 7: countType \"sinceImagePulled\" needs countUnit \"days\""),
            (policy(&[rule(7, r#"{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"hours","countNumber":1}"#)]), "rule 7: countUnit \"hours\" is not supported; use \"days\""),
            (policy(&[rule(8, r#"{"tagStatus":"Tagged","tagPrefixList":["a"],"countType":"imageCountMoreThan","countNumber":1}"#)]), "rule 8: tagStatus \"Tagged\" is not one of"),
            (policy(&[rule(8, r#"{"tagStatus":"untagged","countType":"imageCountLessThan","countNumber":1}"#)]), "rule 8: countType \"imageCountLessThan\" is not one of"),
            (policy(&[rule(8, r#"{"tagStatus":"untagged","countType":"sinceImageTransitioned","countUnit":"days","countNumber":1}"#)]), "rule 8: countType \"sinceImageTransitioned\" is not supported"),
            (policy(&[rule(8, r#"{"tagStatus":"untagged","storageClass":"archive","countType":"imageCountMoreThan","countNumber":1}"#)]), "rule 8: selection.storageClass is not supported"),
            (policy(&[rule(8, r#"{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1,"tagList":["a"]}"#)]), "unknown field `tagList`"),
            (policy(&[rule(1, untagged), rule(2, r#"{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":3}"#)]), "rules 1 and 2 both select untagged images"),
            (policy(&[rule(1, r#"{"tagStatus":"tagged","tagPrefixList":["a","b"],"countType":"imageCountMoreThan","countNumber":1}"#), rule(2, r#"{"tagStatus":"tagged","tagPrefixList":["b","a"],"countType":"sinceImagePushed","countUnit":"days","countNumber":3}"#)]), "rules 1 and 2 select the same tags"),
            (r#"{"rules":[{"rulePriority":9,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"transition","targetStorageClass":"archive"}}]}"#.into(), "rule 9: action type \"transition\" is not supported"),
            (r#"{"rules":[{"rulePriority":9,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"delete"}}]}"#.into(), "rule 9: action type \"delete\" is not supported; use \"expire\""),
            (r#"{"rules":[{"rulePriority":9,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1}}]}"#.into(), "missing field `action`"),
            ("not json".into(), "the lifecycle policy is not valid"),
        ];
        for (text, want) in cases {
            let err = Policy::parse(&text).expect_err(&text);
            assert!(err.contains(want), "{text}\n  gave {err:?}\n  want {want:?}");
        }
    }

    #[test]
    fn four_wildcards_are_allowed_as_in_the_aws_docs() {
        let ok = policy(&[rule(
            1,
            r#"{"tagStatus":"tagged","tagPatternList":["*test*1*2*3","test*1*2*3*"],"countType":"imageCountMoreThan","countNumber":1}"#,
        )]);
        assert!(Policy::parse(&ok).is_ok());
        let bad = policy(&[rule(
            1,
            r#"{"tagStatus":"tagged","tagPatternList":["test*1*2*3*4*5*6"],"countType":"imageCountMoreThan","countNumber":1}"#,
        )]);
        assert!(Policy::parse(&bad).unwrap_err().contains("6 wildcards"));
    }

    #[test]
    fn the_length_limit_counts_characters() {
        let base = policy(&[rule(1, r#"{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1}"#)]);
        let at_limit = format!("{base}{}", " ".repeat(MAX_POLICY_CHARS - base.len()));
        assert!(Policy::parse(&at_limit).is_ok());
        let over = format!("{at_limit} ");
        assert!(Policy::parse(&over).unwrap_err().contains("30721 characters long; the limit is 30720"));
    }

    #[test]
    fn prefixes_and_patterns_must_all_match_some_tag() {
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let both = TagSelection::Prefixes(vec!["alpha".into(), "beta".into()]);
        assert!(both.selects(&tags(&["alpha-2", "beta-2"])));
        assert!(!both.selects(&tags(&["alpha-1"])));
        assert!(!both.selects(&[]));
        let pat = TagSelection::Patterns(vec!["prod*".into(), "*-rc".into()]);
        assert!(pat.selects(&tags(&["prod1", "2.0-rc"])));
        assert!(!pat.selects(&tags(&["prod1-rc1"])));
        assert!(pat.selects(&tags(&["prod1-rc"])));
        assert!(TagSelection::Untagged.selects(&[]));
        assert!(!TagSelection::Untagged.selects(&tags(&["a"])));
        assert!(TagSelection::Any.selects(&[]) && TagSelection::Any.selects(&tags(&["a"])));
    }
}
