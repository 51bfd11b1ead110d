//! Who is asking ([`Principal`]), the ARNs that name principals and resources ([`Arns`]),
//! and the `Principal` element of resource policies.
//!
//! Berth has one account: its users are IAM users of it, and a request without credentials
//! is the anonymous principal. A resource policy names principals as `"*"` (everyone,
//! anonymous included), the account (its root ARN or bare 12-digit id: every authenticated
//! user of the account) or a user ARN. Wildcards inside principal ARNs are refused at parse
//! time, as IAM does, because `arn:aws:iam::*:user/*` reads like "any user" but IAM would
//! never match it.

/// The identity behind a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// No credentials: only statements with `Principal: "*"` can grant it anything.
    Anonymous,
    User {
        name: String,
    },
}

impl Principal {
    /// The principal's ARN; the anonymous principal has none.
    pub fn arn(&self, arns: &Arns) -> Option<String> {
        match self {
            Principal::Anonymous => None,
            Principal::User { name } => Some(arns.user(name)),
        }
    }

    pub fn is_authenticated(&self) -> bool {
        matches!(self, Principal::User { .. })
    }
}

/// The parts that every ARN Berth forms shares: the registry's partition, region and account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arns {
    /// `aws` unless Berth poses as another partition (`aws-cn`, ...).
    pub partition: String,
    pub region: String,
    /// Twelve digits, as in AWS, so that policies written for ECR carry over.
    pub account: String,
}

impl Arns {
    /// ARNs in the `aws` partition.
    pub fn new(region: impl Into<String>, account: impl Into<String>) -> Arns {
        Arns { partition: "aws".into(), region: region.into(), account: account.into() }
    }

    /// `arn:aws:ecr:<region>:<account>:repository/<name>`.
    pub fn repository(&self, name: &str) -> String {
        format!("arn:{}:ecr:{}:{}:repository/{name}", self.partition, self.region, self.account)
    }

    /// `arn:aws:ecr:<region>:<account>:registry`: the resource of registry-wide actions
    /// that concern no repository (listing the catalog, the registry policy).
    pub fn registry(&self) -> String {
        format!("arn:{}:ecr:{}:{}:registry", self.partition, self.region, self.account)
    }

    /// `arn:aws:iam::<account>:user/<name>`.
    pub fn user(&self, name: &str) -> String {
        format!("arn:{}:iam::{}:user/{name}", self.partition, self.account)
    }

    /// `arn:aws:iam::<account>:root`: the account as a principal.
    pub fn root(&self) -> String {
        format!("arn:{}:iam::{}:root", self.partition, self.account)
    }
}

/// One principal named in a resource policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PrincipalId {
    Everyone,
    /// Every authenticated user of the account. `partition` is `None` for a bare account id.
    Account {
        partition: Option<String>,
        account: String,
    },
    /// One user, by full ARN.
    User(String),
}

impl PrincipalId {
    pub(crate) fn parse(value: &str) -> Result<PrincipalId, String> {
        if value == "*" {
            return Ok(PrincipalId::Everyone);
        }
        if value.contains(['*', '?']) {
            return Err(format!("wildcards are not allowed in principals, only \"*\" alone: {value:?}"));
        }
        if is_account_id(value) {
            return Ok(PrincipalId::Account { partition: None, account: value.to_owned() });
        }
        let bad = || format!("principal must be \"*\", an account id, or an IAM root or user ARN: {value:?}");
        let parts: Vec<&str> = value.splitn(6, ':').collect();
        let [arn, partition, "iam", "", account, resource] = parts[..] else { return Err(bad()) };
        if arn != "arn" || partition.is_empty() || !is_account_id(account) {
            return Err(bad());
        }
        match resource {
            "root" => Ok(PrincipalId::Account { partition: Some(partition.to_owned()), account: account.to_owned() }),
            user if user.strip_prefix("user/").is_some_and(|n| !n.is_empty() && !n.ends_with('/')) => {
                Ok(PrincipalId::User(value.to_owned()))
            }
            _ => Err(bad()),
        }
    }

    pub(crate) fn matches(&self, principal: &Principal, arns: &Arns) -> bool {
        match self {
            PrincipalId::Everyone => true,
            PrincipalId::Account { partition, account } => {
                principal.is_authenticated()
                    && *account == arns.account
                    && partition.as_ref().is_none_or(|p| *p == arns.partition)
            }
            PrincipalId::User(arn) => principal.arn(arns).is_some_and(|own| own == *arn),
        }
    }
}

fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_arns() {
        let arns = Arns::new("us-west-2", "123456789012");
        assert_eq!(arns.repository("a/b"), "arn:aws:ecr:us-west-2:123456789012:repository/a/b");
        assert_eq!(arns.registry(), "arn:aws:ecr:us-west-2:123456789012:registry");
        assert_eq!(arns.user("alice"), "arn:aws:iam::123456789012:user/alice");
        assert_eq!(arns.root(), "arn:aws:iam::123456789012:root");
        assert_eq!(Principal::Anonymous.arn(&arns), None);
    }

    #[test]
    fn matches_principals() {
        let arns = Arns::new("us-west-2", "123456789012");
        let alice = Principal::User { name: "alice".into() };
        let bob = Principal::User { name: "bob".into() };
        let anon = Principal::Anonymous;
        let cases: &[(&str, &Principal, bool)] = &[
            ("*", &anon, true),
            ("*", &alice, true),
            ("123456789012", &alice, true),
            ("123456789012", &anon, false),
            ("arn:aws:iam::123456789012:root", &bob, true),
            ("arn:aws:iam::123456789012:root", &anon, false),
            ("arn:aws:iam::210987654321:root", &alice, false),
            ("arn:aws-cn:iam::123456789012:root", &alice, false),
            ("arn:aws:iam::123456789012:user/alice", &alice, true),
            ("arn:aws:iam::123456789012:user/alice", &bob, false),
            ("arn:aws:iam::123456789012:user/alice", &anon, false),
        ];
        for (spec, who, want) in cases {
            assert_eq!(PrincipalId::parse(spec).unwrap().matches(who, &arns), *want, "{spec} vs {who:?}");
        }
    }

    #[test]
    fn rejects_wildcards_and_non_principals() {
        for bad in [
            "arn:aws:iam::*:root",
            "arn:aws:iam::123456789012:user/*",
            "12345678901",
            "arn:aws:ecr:us-west-2:123456789012:repository/a",
            "arn:aws:iam::123456789012:user/",
            "alice",
        ] {
            assert!(PrincipalId::parse(bad).is_err(), "{bad}");
        }
    }
}
