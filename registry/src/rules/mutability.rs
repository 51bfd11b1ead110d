//! ECR's tag mutability: whether a tag of a repository may be moved to another image.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::wildcard;

/// The most exclusion filters a repository may have (ECR's limit).
pub const MAX_EXCLUSIONS: usize = 5;

/// ECR's `imageTagMutability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    /// Every tag may move (the default).
    #[default]
    Mutable,
    /// No tag may move.
    Immutable,
    /// No tag may move, except those matching an exclusion filter.
    ImmutableWithExclusion,
    /// Every tag may move, except those matching an exclusion filter.
    MutableWithExclusion,
}

impl Mode {
    pub const ALL: [Mode; 4] =
        [Mode::Mutable, Mode::Immutable, Mode::ImmutableWithExclusion, Mode::MutableWithExclusion];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Mutable => "MUTABLE",
            Mode::Immutable => "IMMUTABLE",
            Mode::ImmutableWithExclusion => "IMMUTABLE_WITH_EXCLUSION",
            Mode::MutableWithExclusion => "MUTABLE_WITH_EXCLUSION",
        }
    }

    fn takes_exclusions(self) -> bool {
        matches!(self, Mode::ImmutableWithExclusion | Mode::MutableWithExclusion)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        Mode::ALL.into_iter().find(|m| m.as_str() == s).ok_or_else(|| {
            let names: Vec<_> = Mode::ALL.iter().map(|m| m.as_str()).collect();
            format!("imageTagMutability {s:?} is not one of {}", names.join(", "))
        })
    }
}

/// A repository's (or a creation template's) tag mutability with its exclusion filters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TagMutability {
    pub mode: Mode,
    /// Wildcard filters (`*`), `^[0-9a-zA-Z._*-]{1,128}$`; only with a `*_WITH_EXCLUSION` mode.
    pub exclusions: Vec<String>,
}

impl TagMutability {
    /// Checks the setting as ECR does, with a message naming the fault.
    pub fn new(mode: Mode, exclusions: Vec<String>) -> Result<TagMutability, String> {
        if mode.takes_exclusions() {
            if exclusions.is_empty() {
                return Err(format!("imageTagMutability {mode} needs at least one exclusion filter"));
            }
        } else if !exclusions.is_empty() {
            return Err(format!(
                "imageTagMutability {mode} takes no exclusion filters (use IMMUTABLE_WITH_EXCLUSION or MUTABLE_WITH_EXCLUSION)"
            ));
        }
        if exclusions.len() > MAX_EXCLUSIONS {
            return Err(format!("{} exclusion filters given, at most {MAX_EXCLUSIONS} are allowed", exclusions.len()));
        }
        for f in &exclusions {
            let valid = (1..=128).contains(&f.len())
                && f.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'*' | b'-'));
            if !valid {
                return Err(format!(
                    "exclusion filter {f:?} must be 1 to 128 characters of letters, digits, '.', '_', '-' and the wildcard '*'"
                ));
            }
        }
        Ok(TagMutability { mode, exclusions })
    }

    /// Whether `tag`, once it names an image, may not be moved to another.
    pub fn is_immutable(&self, tag: &str) -> bool {
        let excluded = || self.exclusions.iter().any(|f| wildcard::matches(f, tag));
        match self.mode {
            Mode::Mutable => false,
            Mode::Immutable => true,
            Mode::ImmutableWithExclusion => !excluded(),
            Mode::MutableWithExclusion => excluded(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(mode: Mode, exclusions: &[&str]) -> TagMutability {
        TagMutability::new(mode, exclusions.iter().map(|s| s.to_string()).collect()).unwrap()
    }

    #[test]
    fn which_tags_may_not_move() {
        let cases = [
            (setting(Mode::Mutable, &[]), "v1", false),
            (setting(Mode::Immutable, &[]), "latest", true),
            (setting(Mode::ImmutableWithExclusion, &["latest", "dev-*"]), "latest", false),
            (setting(Mode::ImmutableWithExclusion, &["latest", "dev-*"]), "dev-42", false),
            (setting(Mode::ImmutableWithExclusion, &["latest", "dev-*"]), "v1.0", true),
            (setting(Mode::MutableWithExclusion, &["v*"]), "v1.0", true),
            (setting(Mode::MutableWithExclusion, &["v*"]), "latest", false),
        ];
        for (s, tag, want) in cases {
            assert_eq!(s.is_immutable(tag), want, "{s:?} {tag}");
        }
    }

    #[test]
    fn settings_are_checked_as_ecr_does() {
        assert!(TagMutability::new(Mode::Immutable, vec!["x".into()]).is_err());
        assert!(TagMutability::new(Mode::ImmutableWithExclusion, vec![]).is_err());
        let six = (0..6).map(|i| format!("t{i}")).collect();
        assert!(TagMutability::new(Mode::MutableWithExclusion, six).unwrap_err().contains("at most 5"));
        assert!(TagMutability::new(Mode::MutableWithExclusion, vec!["a/b".into()]).is_err());
        assert!(TagMutability::new(Mode::MutableWithExclusion, vec!["x".repeat(129)]).is_err());
        assert_eq!("IMMUTABLE_WITH_EXCLUSION".parse::<Mode>().unwrap(), Mode::ImmutableWithExclusion);
        assert!("immutable".parse::<Mode>().unwrap_err().contains("MUTABLE_WITH_EXCLUSION"));
        assert_eq!(serde_json::to_string(&Mode::MutableWithExclusion).unwrap(), "\"MUTABLE_WITH_EXCLUSION\"");
    }
}
