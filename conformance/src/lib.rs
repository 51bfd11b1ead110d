//! Berth's conformance suite: a black-box HTTP client that checks a running
//! registry against the OCI distribution-spec (v1.1 plus the `main` branch's
//! end-4c, end-7b and end-14) and the Docker Registry HTTP API v2 habits
//! clients rely on.
//!
//! It knows nothing of Berth's crates: point it at any URL
//! ([`SuiteConfig::new`]), call [`run`], read the [`Report`]. The binary
//! `berth-conformance` does exactly that from the command line.
//!
//! Layout:
//! - [`config`]: what to test and which optional features to expect.
//! - [`auth`]: signing in the way real clients do (Basic, or Docker token auth with tokens
//!   cached per scope), shared by the suite, `berth-replicas` and `berth-bench`.
//! - `cases/`: the cases, one module per workflow group (pull, push,
//!   content discovery, content management, referrers, errors, auth), each named
//!   after the spec's endpoint id (`end_5_out_of_order_chunk_is_416`); the auth
//!   cases (`auth_<n>_…`) run only with credentials.
//! - [`ctx`]: the per-case client ([`Ctx`]), captured responses ([`Resp`])
//!   and push helpers.
//! - [`check`]: [`Failure`] and the `ensure!`/`ensure_eq!`/`fail!` macros.
//! - [`wire`]: pure header helpers (Link, Range, Content-Range, Location).
//! - [`content`]: random bytes, digests, manifest builders.
//! - [`bench`](mod@bench): `berth-bench`, the load tool (scenarios, ceilings, compare
//!   mode against CNCF Distribution), built on the same wire helpers.
//! - [`replicas`]: `berth-replicas`, a seeded randomized workload spread over several
//!   replicas of one registry, then a check that they all agree with each other and with
//!   what the workload did.
//!
//! Invariants:
//! - No case panics: every check returns a [`Failure`] with a sentence.
//! - No case shares a repository with another: each works under
//!   `<namespace>/<case name>`, with fresh random content, so cases can be
//!   filtered and reordered and never dedupe against an earlier run.
//! - No case can hang the run: each has a timeout (default 30 s).

pub mod auth;
pub mod bench;
pub mod check;
pub mod config;
pub mod content;
pub mod ctx;
pub mod replicas;
pub mod report;
pub mod wire;

mod cases;

pub use cases::{CaseInfo, list, run_with_progress};
pub use check::{CaseResult, Failure};
pub use config::{Flags, SuiteConfig};
pub use ctx::{Ctx, Resp};
pub use report::{CaseReport, Group, Report, Skipped};
pub use reqwest::Url;

/// Runs every selected case, one after another, and reports each.
pub async fn run(config: &SuiteConfig) -> Report {
    cases::run(config).await
}
