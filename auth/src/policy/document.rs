//! Policy documents: the IAM JSON grammar, checked when a policy is stored.
//!
//! A [`PolicyDocument`] keeps the text it was parsed from, byte for byte, because that is
//! what `GetRepositoryPolicy` must return, and the parsed statements that evaluation uses.
//! Every refusal is a [`PolicyError`] naming the statement at fault (index and Sid), since a
//! policy of thirty statements is hard to fix from "invalid policy".

use std::collections::HashSet;
use std::fmt;

use serde_json::Value as Json;

use super::statement::Statement;

/// The largest document accepted, in bytes.
pub const MAX_POLICY_SIZE: usize = 20 * 1024;

/// The policy language version with policy variables.
pub(crate) const VERSION_2012: &str = "2012-10-17";
const VERSION_2008: &str = "2008-10-17";

/// Where a policy is attached, which decides what its statements must and may say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// Attached to a user: no `Principal` (it is the user), `Resource` required.
    Identity,
    /// Attached to one repository: `Principal` required, `Resource` optional (the
    /// repository itself when absent).
    Repository,
    /// The registry policy: `Principal` required, `Resource` optional (every resource).
    Registry,
}

/// A refused policy document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", Location(*.statement, .sid.as_deref()))]
pub struct PolicyError {
    /// The 0-based index of the statement at fault; `None` for the document as a whole.
    pub statement: Option<usize>,
    pub sid: Option<String>,
    pub message: String,
}

impl PolicyError {
    fn document(message: impl Into<String>) -> PolicyError {
        PolicyError { statement: None, sid: None, message: message.into() }
    }
}

/// The `Statement[1] (Sid "DenyPush"): ` prefix of a message.
struct Location<'a>(Option<usize>, Option<&'a str>);

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location(Some(i), Some(sid)) => write!(f, "Statement[{i}] (Sid {sid:?}): "),
            Location(Some(i), None) => write!(f, "Statement[{i}]: "),
            Location(None, _) => Ok(()),
        }
    }
}

/// A parsed, checked policy.
#[derive(Debug, Clone)]
pub struct PolicyDocument {
    text: String,
    kind: PolicyKind,
    version: Option<String>,
    id: Option<String>,
    statements: Vec<Statement>,
}

impl PolicyDocument {
    pub fn parse(json: &str, kind: PolicyKind) -> Result<PolicyDocument, PolicyError> {
        if json.len() > MAX_POLICY_SIZE {
            return Err(PolicyError::document(format!(
                "the policy is {} bytes; at most {MAX_POLICY_SIZE} are allowed",
                json.len()
            )));
        }
        let value: Json =
            serde_json::from_str(json).map_err(|e| PolicyError::document(format!("invalid JSON: {e}")))?;
        let Json::Object(top) = value else { return Err(PolicyError::document("a policy must be a JSON object")) };
        if let Some(unknown) = top.keys().find(|k| !["Version", "Id", "Statement"].contains(&k.as_str())) {
            return Err(PolicyError::document(format!("unknown element {unknown:?}")));
        }
        let version = match top.get("Version") {
            None => None,
            Some(Json::String(v)) if v == VERSION_2012 || v == VERSION_2008 => Some(v.clone()),
            Some(_) => {
                return Err(PolicyError::document(format!("Version must be {VERSION_2012:?} or {VERSION_2008:?}")));
            }
        };
        let id = match top.get("Id") {
            None => None,
            Some(Json::String(id)) => Some(id.clone()),
            Some(_) => return Err(PolicyError::document("Id must be a string")),
        };
        let raw = match top.get("Statement") {
            Some(Json::Array(list)) if !list.is_empty() => list.iter().collect(),
            Some(one @ Json::Object(_)) => vec![one],
            Some(_) => return Err(PolicyError::document("Statement must be an object or a non-empty array")),
            None => return Err(PolicyError::document("Statement is required")),
        };

        // Variables are a 2012-10-17 feature: in older documents `${x}` is literal text.
        let variables = version.as_deref() == Some(VERSION_2012);
        let mut statements = Vec::with_capacity(raw.len());
        let mut sids = HashSet::new();
        for (i, json) in raw.into_iter().enumerate() {
            let sid = json.get("Sid").and_then(Json::as_str).map(str::to_owned);
            let at = |message: String| PolicyError { statement: Some(i), sid: sid.clone(), message };
            let statement = Statement::parse(json, kind, variables).map_err(at)?;
            if let Some(sid) = &statement.sid
                && !sids.insert(sid.clone())
            {
                return Err(at(format!("duplicate Sid {sid:?}")));
            }
            statements.push(statement);
        }
        Ok(PolicyDocument { text: json.to_owned(), kind, version, id, statements })
    }

    /// The document exactly as it was given.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    /// `None` when the document has no `Version` (IAM then reads it as 2008-10-17).
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    pub(crate) fn statements(&self) -> &[Statement] {
        &self.statements
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The examples of the ECR documentation, and a few more shapes.
    #[test]
    fn parses_good_documents() {
        let cases: &[(PolicyKind, &str, usize)] = &[
            // Cross-account push.
            (
                PolicyKind::Repository,
                r#"{"Version":"2012-10-17","Statement":[{"Sid":"AllowCrossAccountPush","Effect":"Allow",
                "Principal":{"AWS":"arn:aws:iam::123456789012:root"},
                "Action":["ecr:BatchCheckLayerAvailability","ecr:CompleteLayerUpload","ecr:InitiateLayerUpload",
                          "ecr:PutImage","ecr:UploadLayerPart"]}]}"#,
                1,
            ),
            // Deny everyone pulls.
            (
                PolicyKind::Repository,
                r#"{"Version":"2008-10-17","Statement":[{"Sid":"DenyPull","Effect":"Deny","Principal":"*",
                "Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer"]}]}"#,
                1,
            ),
            // IP restriction.
            (
                PolicyKind::Repository,
                r#"{"Version":"2012-10-17","Statement":[{"Sid":"IPRestriction","Effect":"Deny","Principal":"*",
                "Action":"ecr:*","Condition":{"NotIpAddress":{"aws:SourceIp":"54.240.143.0/24"}}}]}"#,
                1,
            ),
            // Registry policy for replication.
            (
                PolicyKind::Registry,
                r#"{"Version":"2012-10-17","Statement":[{"Sid":"ReplicationAccessCrossAccount","Effect":"Allow",
                "Principal":{"AWS":"arn:aws:iam::123456789012:root"},
                "Action":["ecr:CreateRepository","ecr:ReplicateImage"],
                "Resource":"arn:aws:ecr:us-west-2:123456789012:repository/prod-*"}]}"#,
                1,
            ),
            // One statement as an object, no Version, NotAction/NotResource, any typed operands.
            (
                PolicyKind::Identity,
                r#"{"Statement":{"Effect":"Allow","NotAction":"iam:*","NotResource":["arn:aws:ecr:*:*:repository/secret"],
                "Condition":{"Bool":{"aws:SecureTransport":true},"NumericLessThan":{"n":[1, "2.5"]},
                "DateGreaterThan":{"aws:CurrentTime":["2026-01-01", 1767225600, "2026-01-01T00:00:00Z"]},
                "IpAddress":{"aws:SourceIp":["10.0.0.0/8","2001:db8::/32","::1"]},"BinaryEquals":{"k":"aGk="},
                "Null":{"aws:username":"false"},"ForAllValues:StringLikeIfExists":{"aws:TagKeys":"team-*"}}}}"#,
                1,
            ),
            (
                PolicyKind::Identity,
                r#"{"Version":"2012-10-17","Id":"x","Statement":[
                {"Sid":"Own","Effect":"Allow","Action":["ecr:batchgetimage","ECR:Get*","berth:Anything"],
                 "Resource":"arn:aws:ecr:us-west-2:123456789012:repository/${aws:username}/*"},
                {"Effect":"Allow","Action":["iam:*AccessKey*","*"],"Resource":"*"}]}"#,
                2,
            ),
        ];
        for (kind, json, statements) in cases {
            let doc = PolicyDocument::parse(json, *kind).unwrap_or_else(|e| panic!("{e}\n{json}"));
            assert_eq!(doc.statements().len(), *statements);
            assert_eq!(doc.text(), *json);
            assert_eq!(doc.kind(), *kind);
        }
    }

    #[test]
    fn refuses_bad_documents_pointing_at_the_statement() {
        use PolicyKind::{Identity as I, Registry as G, Repository as R};
        let allow = r#"{"Effect":"Allow","Principal":"*","Action":"ecr:BatchGetImage"}"#;
        let wrap = |statements: &str| format!(r#"{{"Version":"2012-10-17","Statement":[{statements}]}}"#);
        let big = wrap(&vec![allow; 400].join(","));
        let cases: Vec<(PolicyKind, String, Option<usize>, &str)> = vec![
            (R, "{\"Statement\": [".into(), None, "invalid JSON: EOF while parsing a list at line 1 column 15"),
            (
                R,
                r#"{"Version":"2012-10-18","Statement":[]}"#.into(),
                None,
                r#"Version must be "2012-10-17" or "2008-10-17""#,
            ),
            (R, r#"{"Version":"2012-10-17","Statement":[]}"#.into(), None, "non-empty"),
            (R, r#"{"Version":"2012-10-17"}"#.into(), None, "Statement is required"),
            (R, r#"{"Statement":[], "Extra":1}"#.into(), None, "unknown element \"Extra\""),
            (R, big, None, "at most 20480"),
            (
                R,
                wrap(&format!(r#"{allow},{{"Effect":"Allow","Principal":"*","Action":"ecr:BatchGetImages"}}"#)),
                Some(1),
                "ecr:BatchGetImages is not an ECR action (did you mean ecr:BatchGetImage?)",
            ),
            (
                R,
                wrap(&format!(
                    r#"{allow},{{"Sid":"DenyPush","Effect":"Deny","Principal":"*","Action":"ecr:PutImage",
                "Condition":{{"StringEqual":{{"aws:username":"a"}}}}}}"#
                )),
                Some(1),
                r#"Statement[1] (Sid "DenyPush"): unknown condition operator "StringEqual" (did you mean StringEquals?)"#,
            ),
            (R, wrap(r#"{"Effect":"Allow","Principal":"*","Action":"ecr:Frob*"}"#), Some(0), "matches no action"),
            (
                R,
                wrap(r#"{"Effect":"Allow","Principal":"*","Action":"s3:GetObject"}"#),
                Some(0),
                "unknown service \"s3\"",
            ),
            (
                R,
                wrap(r#"{"Effect":"Allow","Principal":"*","Action":"iam:CreateRole"}"#),
                Some(0),
                "not one of the IAM actions",
            ),
            (
                R,
                wrap(r#"{"Effect":"Allow","Principal":"*","Action":"BatchGetImage"}"#),
                Some(0),
                "expected service:Name",
            ),
            (R, wrap(r#"{"Effect":"Allow","Principal":"*","Action":[]}"#), Some(0), "non-empty array"),
            (R, wrap(r#"{"Effect":"Allow","Principal":"*"}"#), Some(0), "Action or NotAction is required"),
            (
                R,
                wrap(r#"{"Effect":"Allow","Principal":"*","Action":"ecr:*","NotAction":"ecr:PutImage"}"#),
                Some(0),
                "cannot both",
            ),
            (R, wrap(r#"{"Effect":"allow","Principal":"*","Action":"ecr:*"}"#), Some(0), "Effect must be"),
            (R, wrap(r#"{"Principal":"*","Action":"ecr:*"}"#), Some(0), "Effect is required"),
            (
                R,
                wrap(r#"{"Effect":"Allow","Principal":"*","Action":"ecr:*","Resources":"*"}"#),
                Some(0),
                "unknown element \"Resources\"",
            ),
            (R, wrap(r#"{"Effect":"Allow","Action":"ecr:*"}"#), Some(0), "repository policy needs Principal"),
            (G, wrap(r#"{"Effect":"Allow","Action":"ecr:*"}"#), Some(0), "registry policy needs Principal"),
            (
                I,
                wrap(r#"{"Effect":"Allow","Principal":"*","Action":"ecr:*","Resource":"*"}"#),
                Some(0),
                "identity policy cannot",
            ),
            (I, wrap(r#"{"Effect":"Allow","Action":"ecr:*"}"#), Some(0), "needs Resource or NotResource"),
            (I, wrap(r#"{"Effect":"Allow","Action":"ecr:*","Resource":"repository/a"}"#), Some(0), "\"*\" or an ARN"),
            (
                R,
                wrap(r#"{"Effect":"Allow","Principal":{"Service":"ecr.amazonaws.com"},"Action":"ecr:*"}"#),
                Some(0),
                "unsupported principal type \"Service\"",
            ),
            (
                R,
                wrap(r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:user/*"},"Action":"ecr:*"}"#),
                Some(0),
                "wildcards are not allowed",
            ),
            (
                R,
                wrap(r#"{"Effect":"Allow","Principal":"arn:aws:iam::123456789012:root","Action":"ecr:*"}"#),
                Some(0),
                "Principal must be",
            ),
            (
                R,
                wrap(&format!(r#"{{"Sid":"A",{}, {{"Sid":"A",{}"#, &allow[1..], &allow[1..])),
                Some(1),
                "duplicate Sid \"A\"",
            ),
            (
                R,
                wrap(
                    r#"{"Effect":"Allow","Principal":"*","Action":"ecr:*","Condition":{"DateLessThan":{"aws:CurrentTime":"soon"}}}"#,
                ),
                Some(0),
                r#"DateLessThan "aws:CurrentTime": "soon" is not a date"#,
            ),
            (
                R,
                wrap(
                    r#"{"Effect":"Allow","Principal":"*","Action":"ecr:*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/40"}}}"#,
                ),
                Some(0),
                "not an IP address or CIDR block",
            ),
            (
                R,
                wrap(
                    r#"{"Effect":"Allow","Principal":"*","Action":"ecr:*","Condition":{"Bool":{"aws:SecureTransport":"yes"}}}"#,
                ),
                Some(0),
                "not true or false",
            ),
            (
                R,
                wrap(
                    r#"{"Effect":"Allow","Principal":"*","Action":"ecr:*","Condition":{"NumericEquals":{"n":"five"}}}"#,
                ),
                Some(0),
                "not a number",
            ),
            (
                R,
                wrap(r#"{"Effect":"Allow","Principal":"*","Action":"ecr:*","Condition":{"StringEquals":{"k":[]}}}"#),
                Some(0),
                "non-empty array",
            ),
            (
                R,
                wrap(
                    r#"{"Effect":"Allow","Principal":"*","Action":"ecr:*","Condition":{"StringEquals":{"k":"${aws:username"}}}"#,
                ),
                Some(0),
                "unterminated policy variable",
            ),
        ];
        for (kind, json, statement, fragment) in cases {
            let err = PolicyDocument::parse(&json, kind).err().unwrap_or_else(|| panic!("accepted: {json}"));
            assert_eq!(err.statement, statement, "{err}");
            assert!(err.to_string().contains(fragment), "{err:?} lacks {fragment:?}");
        }
    }

    #[test]
    fn error_messages_name_the_statement() {
        let e = PolicyError { statement: Some(0), sid: None, message: "m".into() };
        assert_eq!(e.to_string(), "Statement[0]: m");
        let e = PolicyError { statement: Some(1), sid: Some("DenyPush".into()), message: "m".into() };
        assert_eq!(e.to_string(), "Statement[1] (Sid \"DenyPush\"): m");
        assert_eq!(PolicyError::document("m").to_string(), "m");
    }
}
