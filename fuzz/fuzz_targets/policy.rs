//! IAM policy documents: `PolicyDocument::parse` for each `PolicyKind`, then `evaluate` of
//! a request (action, resource, principal, condition keys) built from the same input; see
//! `berth_fuzz::PolicyInput` for the format.
#![no_main]

use berth_auth::policy::{Arns, Context, Policies, PolicyDocument, PolicyKind, Principal, Request, evaluate};
use berth_fuzz::PolicyInput;
use libfuzzer_sys::fuzz_target;

/// Denies everything to everyone: an explicit Deny wins over any Allow, so no input may
/// turn a request allowed once this document applies.
const DENY_ALL: &str =
    r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Principal":"*","Action":"*","Resource":"*"}}"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let input = PolicyInput::decode(text);
    let arns = Arns::new("us-west-2", "123456789012");
    let (mut identity, mut resource) = (Vec::new(), Vec::new());
    for kind in [PolicyKind::Identity, PolicyKind::Repository, PolicyKind::Registry] {
        match PolicyDocument::parse(input.document, kind) {
            Ok(doc) if kind == PolicyKind::Identity => identity.push(doc),
            Ok(doc) => resource.push(doc),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    let principal =
        if input.user.is_empty() { Principal::Anonymous } else { Principal::User { name: input.user.to_owned() } };
    let resource_arn =
        if input.repository == "<registry>" { arns.registry() } else { arns.repository(input.repository) };
    let mut context = Context::new();
    if let Some(arn) = principal.arn(&arns) {
        context.set("aws:username", input.user);
        context.set("aws:PrincipalArn", arn);
    }
    for (key, _) in &input.context {
        let values = input.context.iter().filter(|(k, _)| k == key).map(|(_, v)| *v);
        context.set_values(key, values);
    }
    let req = Request { principal: &principal, action: input.action, resource: &resource_arn, context: &context };
    let decision = evaluate(&Policies { identity: &identity, resource: &resource }, &req, &arns);
    // Pure: the same inputs give the same decision.
    assert_eq!(decision, evaluate(&Policies { identity: &identity, resource: &resource }, &req, &arns));

    let Ok(deny) = PolicyDocument::parse(DENY_ALL, PolicyKind::Registry) else { panic!("DENY_ALL does not parse") };
    resource.push(deny);
    let decision = evaluate(&Policies { identity: &identity, resource: &resource }, &req, &arns);
    assert!(!decision.is_allowed(), "allowed despite an explicit Deny of everything");
});
