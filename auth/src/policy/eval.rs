//! The decision: IAM's evaluation logic for one account.
//!
//! 1. A matching `Deny` statement in any document denies, whatever allows.
//! 2. Otherwise a matching `Allow` in the user's identity policies, or in a resource policy
//!    (repository or registry) whose `Principal` names the caller, allows. Everyone is in
//!    the registry's one account, so either kind alone is enough; there is no cross-account
//!    "both must allow".
//! 3. Otherwise the request is implicitly denied.
//!
//! A statement matches when its action, resource, principal and every condition match.

use super::context::Context;
use super::document::{PolicyDocument, PolicyKind};
use super::principal::{Arns, Principal};
use super::statement::{Effect, Statement};

/// One thing to decide.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub principal: &'a Principal,
    /// An ECR or IAM action, such as `ecr:BatchGetImage`.
    pub action: &'a str,
    /// The resource ARN: a repository ([`Arns::repository`]), the registry, or `*`.
    pub resource: &'a str,
    pub context: &'a Context,
}

/// The documents that apply to a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policies<'a> {
    /// The caller's identity policies (ignored for the anonymous principal, who has none).
    pub identity: &'a [PolicyDocument],
    /// The repository's policy and the registry policy.
    pub resource: &'a [PolicyDocument],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// A `Deny` statement matched; its Sid helps whoever reads the log find it.
    ExplicitDeny {
        sid: Option<String>,
    },
    /// Nothing allowed the request.
    ImplicitDeny,
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        *self == Decision::Allow
    }
}

pub fn evaluate(policies: &Policies<'_>, req: &Request<'_>, arns: &Arns) -> Decision {
    let mut allowed = false;
    // Each document is read by its own kind, not by the slice it came in, so a document
    // passed in the wrong slice cannot change what it means.
    for doc in policies.identity.iter().chain(policies.resource) {
        if doc.kind() == PolicyKind::Identity && !req.principal.is_authenticated() {
            // Identity policies are attached to users; the anonymous principal has none.
            continue;
        }
        for statement in doc.statements().iter().filter(|s| applies(s, req, arns)) {
            match statement.effect {
                Effect::Deny => return Decision::ExplicitDeny { sid: statement.sid.clone() },
                Effect::Allow => allowed = true,
            }
        }
    }
    if allowed { Decision::Allow } else { Decision::ImplicitDeny }
}

fn applies(s: &Statement, req: &Request<'_>, arns: &Arns) -> bool {
    let ctx = req.context;
    // Identity statements have no principal: they are about the user they are attached to.
    s.principals.as_ref().is_none_or(|p| p.matches(|id| id.matches(req.principal, arns)))
        && s.actions.matches(|a| a.matches(req.action, ctx, true))
        // No Resource (resource policies only): the repository the policy is attached to, or
        // for the registry policy every resource; the caller passes only those that apply.
        && s.resources.as_ref().is_none_or(|r| r.matches(|p| p.matches(req.resource, ctx, false)))
        && s.conditions.iter().all(|c| c.matches(ctx))
}
