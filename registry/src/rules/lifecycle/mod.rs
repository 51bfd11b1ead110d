//! ECR lifecycle policies: the policy grammar and its checks ([`policy`]), and what a policy
//! expires among a repository's images ([`evaluate`]). Preview and run both call
//! [`evaluate::plan`], so a preview shows exactly what a run at the same moment deletes.

pub mod evaluate;
pub mod policy;

pub use evaluate::{Cause, Expiry, ImageFacts, Plan, plan};
pub use policy::{CountType, MAX_POLICY_CHARS, MAX_STARS, Policy, Rule, TagSelection};
