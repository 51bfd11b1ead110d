//! One statement of a policy document, parsed and checked: its effect, the actions,
//! resources and principals it names, and its conditions.
//!
//! Checking happens here, once, when a policy is stored, so that a mistake is reported to
//! whoever wrote it instead of quietly granting or denying nothing at request time: unknown
//! elements, unknown services and actions, an ECR action with a typo, wildcards in
//! principals, operands of the wrong type. Errors are plain messages; the document adds the
//! statement's index and Sid.

use serde_json::{Map, Value as Json};

use super::actions::{ECR, IAM, suggest};
use super::condition::{Condition, parse_block};
use super::context::Context;
use super::document::PolicyKind;
use super::pattern::{Pattern, Syntax};
use super::principal::PrincipalId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    Allow,
    Deny,
}

/// A list element with its `Not` form: `Action`/`NotAction`, `Resource`/`NotResource`,
/// `Principal`/`NotPrincipal`. The `Not` form matches whatever the list does not.
#[derive(Debug, Clone)]
pub(crate) struct Listed<T> {
    pub not: bool,
    pub items: Vec<T>,
}

impl<T> Listed<T> {
    pub(crate) fn matches(&self, item_matches: impl Fn(&T) -> bool) -> bool {
        self.items.iter().any(item_matches) != self.not
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    pub actions: Listed<Pattern>,
    /// `None`: no `Resource` element, which resource policies may omit (every resource).
    pub resources: Option<Listed<Pattern>>,
    /// `None` in identity policies, which apply to the user they are attached to.
    pub principals: Option<Listed<PrincipalId>>,
    /// All must hold.
    pub conditions: Vec<Condition>,
}

const ELEMENTS: &[&str] =
    &["Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Principal", "NotPrincipal", "Condition"];

impl Statement {
    /// `variables`: whether `${...}` policy variables are recognised (Version 2012-10-17).
    pub(crate) fn parse(json: &Json, kind: PolicyKind, variables: bool) -> Result<Statement, String> {
        let Json::Object(element) = json else { return Err("a statement must be a JSON object".into()) };
        if let Some(unknown) = element.keys().find(|k| !ELEMENTS.contains(&k.as_str())) {
            return Err(format!("unknown element {unknown:?}"));
        }
        let sid = match element.get("Sid") {
            None => None,
            Some(Json::String(sid)) => Some(sid.clone()),
            Some(_) => return Err("Sid must be a string".into()),
        };
        let effect = match element.get("Effect").and_then(Json::as_str) {
            Some("Allow") => Effect::Allow,
            Some("Deny") => Effect::Deny,
            None if !element.contains_key("Effect") => return Err("Effect is required".into()),
            _ => return Err("Effect must be \"Allow\" or \"Deny\"".into()),
        };

        let (not, value) = either(element, "Action", "NotAction")?.ok_or("Action or NotAction is required")?;
        let actions =
            Listed { not, items: strings(value, "Action")?.into_iter().map(action).collect::<Result<_, _>>()? };

        let resources = match either(element, "Resource", "NotResource")? {
            None => None,
            Some((not, value)) => {
                let items = strings(value, "Resource")?.into_iter().map(|r| resource(r, variables));
                Some(Listed { not, items: items.collect::<Result<_, _>>()? })
            }
        };

        let principals = match either(element, "Principal", "NotPrincipal")? {
            None => None,
            Some((not, value)) => Some(Listed { not, items: principals(value)? }),
        };

        match kind {
            PolicyKind::Identity if principals.is_some() => {
                return Err("an identity policy cannot name a Principal or NotPrincipal".into());
            }
            PolicyKind::Identity if resources.is_none() => {
                return Err("an identity policy needs Resource or NotResource".into());
            }
            PolicyKind::Repository | PolicyKind::Registry if principals.is_none() => {
                let which = if kind == PolicyKind::Repository { "a repository" } else { "a registry" };
                return Err(format!("{which} policy needs Principal or NotPrincipal"));
            }
            _ => {}
        }

        let conditions = element.get("Condition").map(|c| parse_block(c, variables)).transpose()?.unwrap_or_default();
        Ok(Statement { sid, effect, actions, resources, principals, conditions })
    }
}

/// The element or its `Not` form: at most one of the two may be present.
fn either<'a>(element: &'a Map<String, Json>, name: &str, not: &str) -> Result<Option<(bool, &'a Json)>, String> {
    match (element.get(name), element.get(not)) {
        (Some(_), Some(_)) => Err(format!("{name} and {not} cannot both be present")),
        (Some(value), None) => Ok(Some((false, value))),
        (None, Some(value)) => Ok(Some((true, value))),
        (None, None) => Ok(None),
    }
}

/// A string, or a non-empty array of strings.
fn strings<'a>(value: &'a Json, element: &str) -> Result<Vec<&'a str>, String> {
    let items = match value {
        Json::String(s) => Some(vec![s.as_str()]),
        Json::Array(items) if !items.is_empty() => items.iter().map(Json::as_str).collect(),
        _ => None,
    };
    items.ok_or_else(|| format!("{element} must be a string or a non-empty array of strings"))
}

fn action(name: &str) -> Result<Pattern, String> {
    let pattern = Pattern::parse(name, Syntax { wildcards: true, variables: false })?;
    if name == "*" {
        return Ok(pattern);
    }
    let Some((service, operation)) = name.split_once(':') else {
        return Err(format!("{name:?} is not an action: expected service:Name"));
    };
    if operation.is_empty() || !operation.chars().all(|c| c.is_ascii_alphanumeric() || c == '*' || c == '?') {
        return Err(format!("{name:?} is not an action: expected service:Name"));
    }
    let (known, what): (&[&'static str], &str) = match service.to_ascii_lowercase().as_str() {
        "ecr" => (ECR, "an ECR action"),
        "iam" => (IAM, "one of the IAM actions Berth implements"),
        // Berth's own actions are not catalogued yet; any name is accepted.
        "berth" => return Ok(pattern),
        _ => return Err(format!("unknown service {service:?} in action {name:?} (Berth knows ecr, iam and berth)")),
    };
    if pattern.has_wildcards() {
        // A wildcard that matches nothing is as much a typo as a misspelt name.
        let empty = Context::new();
        if !known.iter().any(|k| pattern.matches(k, &empty, true)) {
            return Err(format!("{name} matches no action: it is not {what}"));
        }
    } else if !known.iter().any(|k| k.eq_ignore_ascii_case(name)) {
        let hint = suggest(name, known).map(|s| format!(" (did you mean {s}?)")).unwrap_or_default();
        return Err(format!("{name} is not {what}{hint}"));
    }
    Ok(pattern)
}

fn resource(arn: &str, variables: bool) -> Result<Pattern, String> {
    if arn != "*" && !(arn.starts_with("arn:") && arn.splitn(6, ':').count() == 6) {
        return Err(format!("Resource must be \"*\" or an ARN: {arn:?}"));
    }
    Pattern::parse(arn, Syntax { wildcards: true, variables })
}

fn principals(value: &Json) -> Result<Vec<PrincipalId>, String> {
    match value {
        Json::String(s) if s == "*" => Ok(vec![PrincipalId::Everyone]),
        Json::Object(types) => {
            if let Some(other) = types.keys().find(|k| *k != "AWS") {
                return Err(format!("unsupported principal type {other:?}: Berth has only \"AWS\" principals"));
            }
            let aws = types.get("AWS").ok_or("Principal must name \"AWS\" principals")?;
            strings(aws, "Principal \"AWS\"")?.into_iter().map(PrincipalId::parse).collect()
        }
        _ => Err("Principal must be \"*\" or {\"AWS\": ...}".into()),
    }
}
