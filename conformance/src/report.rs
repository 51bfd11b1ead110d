//! The outcome of a run, one entry per case.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// The spec's workflow categories, plus `errors` for error-code checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// end-1, end-2, end-3.
    Pull,
    /// end-4 … end-7, end-11, end-13, end-14.
    Push,
    /// end-8 and `_catalog`.
    ContentDiscovery,
    /// end-9, end-10.
    ContentManagement,
    /// end-12.
    Referrers,
    /// Error envelopes and codes, robustness.
    Errors,
    /// Signing in: the challenge and the token service (Docker token protocol).
    Auth,
}

impl Group {
    /// The snake_case name used in reports and `--filter`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Push => "push",
            Self::ContentDiscovery => "content_discovery",
            Self::ContentManagement => "content_management",
            Self::Referrers => "referrers",
            Self::Errors => "errors",
            Self::Auth => "auth",
        }
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One case that ran.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    /// Spec-derived name, e.g. `end_5_out_of_order_chunk_is_416`.
    pub name: &'static str,
    /// Workflow category.
    pub group: Group,
    /// Whether every check held.
    pub passed: bool,
    /// Why it failed (`None` when it passed).
    pub failure: Option<String>,
    /// Which of the spec's allowed alternatives the registry chose (e.g.
    /// "answered 202 to a single-POST upload"): not failures, but worth
    /// knowing.
    pub notes: Vec<String>,
    /// Wall time of the case.
    #[serde(rename = "duration_ms", serialize_with = "as_millis")]
    pub duration: Duration,
}

/// A case that did not run because a flag turned its feature off.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// Case name.
    pub name: &'static str,
    /// Which flag turned it off.
    pub reason: &'static str,
}

/// Everything one run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The registry URL tested.
    pub base_url: String,
    /// The repository prefix used.
    pub namespace: String,
    /// How the run signed in, as learnt from `GET /v2/` (e.g. `token auth: realm …`).
    pub auth: String,
    /// Cases in the order they ran.
    pub cases: Vec<CaseReport>,
    /// Cases left out by flags (not counted as passed or failed).
    pub skipped: Vec<Skipped>,
}

impl Report {
    /// How many cases passed.
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.passed).count()
    }

    /// How many cases failed.
    pub fn failed(&self) -> usize {
        self.cases.iter().filter(|c| !c.passed).count()
    }

    /// The closing line: `N passed, N failed`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }
}

impl CaseReport {
    /// The one-line verdict: `PASS name` / `FAIL name: reason`, with notes
    /// in parentheses.
    pub fn line(&self) -> String {
        let mut line = match &self.failure {
            None => format!("PASS {}", self.name),
            Some(reason) => format!("FAIL {}: {}", self.name, reason),
        };
        if !self.notes.is_empty() {
            line.push_str(&format!(" ({})", self.notes.join("; ")));
        }
        line
    }
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &'static str, failure: Option<&str>) -> CaseReport {
        CaseReport {
            name,
            group: Group::Push,
            passed: failure.is_none(),
            failure: failure.map(str::to_owned),
            notes: Vec::new(),
            duration: Duration::from_millis(3),
        }
    }

    #[test]
    fn counts_and_summary() {
        let report = Report {
            base_url: "http://x".into(),
            namespace: "n".into(),
            auth: String::new(),
            cases: vec![case("a", None), case("b", Some("boom")), case("c", None)],
            skipped: Vec::new(),
        };
        assert_eq!(report.passed(), 2);
        assert_eq!(report.failed(), 1);
        assert_eq!(report.summary(), "2 passed, 1 failed");
        assert_eq!(report.cases[1].line(), "FAIL b: boom");
    }

    #[test]
    fn notes_follow_the_verdict() {
        let mut c = case("x", None);
        c.notes.push("answered 202".into());
        assert_eq!(c.line(), "PASS x (answered 202)");
    }
}
