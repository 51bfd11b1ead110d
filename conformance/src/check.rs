//! How a case says "this is wrong" without panicking.
//!
//! A case is an `async fn(&Ctx) -> CaseResult`. Every assertion returns a
//! [`Failure`] through `?` or one of the macros below, so a wrong answer from
//! the registry ends the case with a sentence instead of unwinding, and the
//! workspace's `unwrap_used`/`expect_used` lints hold in the suite too.

use std::fmt;

/// Why a case failed: one human sentence, printed after `FAIL name:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(String);

impl Failure {
    /// A failure with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// The message, for reports.
    pub fn message(&self) -> &str {
        &self.0
    }

    /// Prefixes the message with what the case was doing, so a failure deep in
    /// a helper still says which step broke.
    #[must_use]
    pub fn context(self, step: &str) -> Self {
        Self(format!("{step}: {}", self.0))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

impl From<reqwest::Error> for Failure {
    fn from(err: reqwest::Error) -> Self {
        // The chain matters: "error sending request" alone hides "connection refused".
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(inner) = source {
            message.push_str(": ");
            message.push_str(&inner.to_string());
            source = inner.source();
        }
        Self(message)
    }
}

impl From<serde_json::Error> for Failure {
    fn from(err: serde_json::Error) -> Self {
        Self(format!("invalid JSON: {err}"))
    }
}

impl From<std::io::Error> for Failure {
    fn from(err: std::io::Error) -> Self {
        Self(format!("I/O error: {err}"))
    }
}

/// The result of one case (or one step of it).
pub type CaseResult<T = ()> = Result<T, Failure>;

/// Returns a [`Failure`] with a formatted message from the enclosing function.
#[macro_export]
macro_rules! fail {
    ($($fmt:tt)+) => {
        return Err($crate::check::Failure::new(format!($($fmt)+)))
    };
}

/// `ensure!(cond, "message {}", args)`: fails the case unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            $crate::fail!($($fmt)+);
        }
    };
}

/// `ensure_eq!(got, want, "what")`: fails with both values shown.
#[macro_export]
macro_rules! ensure_eq {
    ($got:expr, $want:expr, $($fmt:tt)+) => {{
        let got = &$got;
        let want = &$want;
        if got != want {
            return Err($crate::check::Failure::new(format!(
                "{}: got {:?}, want {:?}",
                format!($($fmt)+),
                got,
                want
            )));
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positive(n: i32) -> CaseResult<i32> {
        ensure!(n > 0, "{n} is not positive");
        Ok(n)
    }

    fn equal(a: &str, b: &str) -> CaseResult {
        ensure_eq!(a, b, "header");
        Ok(())
    }

    #[test]
    fn ensure_returns_a_failure_instead_of_panicking() {
        assert_eq!(positive(3), Ok(3));
        assert_eq!(positive(-1), Err(Failure::new("-1 is not positive")));
    }

    #[test]
    fn ensure_eq_shows_both_sides() {
        assert_eq!(equal("a", "a"), Ok(()));
        assert_eq!(equal("a", "b").map_err(|f| f.to_string()), Err("header: got \"a\", want \"b\"".to_owned()));
    }

    #[test]
    fn context_prefixes_the_step() {
        let f = Failure::new("404").context("pushing config");
        assert_eq!(f.message(), "pushing config: 404");
    }
}
