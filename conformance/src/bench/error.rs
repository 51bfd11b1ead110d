//! The benchmark's one error type: a sentence saying what broke and where.

use std::fmt;

/// Something the benchmark could not do: a request that failed or was
/// answered wrongly, a server that would not start, a file it could not write.
/// Scenarios record these in their report instead of panicking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchError(String);

impl BenchError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }

    /// Prefixes the message with the step that was running.
    #[must_use]
    pub fn context(self, step: &str) -> Self {
        Self(format!("{step}: {}", self.0))
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

impl From<reqwest::Error> for BenchError {
    fn from(err: reqwest::Error) -> Self {
        // "error sending request" alone hides "connection refused".
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

impl From<std::io::Error> for BenchError {
    fn from(err: std::io::Error) -> Self {
        Self(err.to_string())
    }
}

impl From<serde_json::Error> for BenchError {
    fn from(err: serde_json::Error) -> Self {
        Self(format!("invalid JSON: {err}"))
    }
}
