//! IAM-style policies: who may do what to which repository, in the grammar of AWS IAM and
//! ECR so that policies written for ECR carry over.
//!
//! Three kinds of document ([`PolicyKind`]): identity policies attached to users, repository
//! policies attached to a repository, and the registry policy. [`PolicyDocument::parse`]
//! checks a document when it is stored; [`evaluate`] decides one [`Request`] (a principal,
//! an ECR action, a resource ARN and the request's condition keys in a [`Context`]) against
//! the documents that apply. [`actions`] names the actions and maps Docker token scopes
//! (`pull`, `push`) onto them.
//!
//! Layout: `document` (the top level and errors), `statement` (elements of a statement),
//! `condition` (operators and operands), `pattern` (wildcards and policy variables),
//! `principal` (principals and ARNs), `context`, `eval`, `actions`; `tests` holds the
//! evaluation tables.
//!
//! Invariants:
//! - Pure: no I/O, no clock. The caller puts the time, the client address and the tags in
//!   the context, so the same inputs always give the same decision.
//! - A policy that parses is fully checked: evaluation never meets a malformed operand and
//!   so has no error path. Anything it does not understand at request time (a request value
//!   of the wrong type, a missing policy variable) matches nothing.
//! - An explicit Deny anywhere wins; without a matching Allow the answer is no.

pub mod actions;
mod condition;
mod context;
mod document;
mod eval;
mod pattern;
mod principal;
mod statement;

#[cfg(test)]
mod tests;

pub use context::Context;
pub use document::{MAX_POLICY_SIZE, PolicyDocument, PolicyError, PolicyKind};
pub use eval::{Decision, Policies, Request, evaluate};
pub use principal::{Arns, Principal};
