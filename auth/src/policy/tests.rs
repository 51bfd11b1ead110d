//! Evaluation tables: whole documents and requests in, decisions out.

#![allow(clippy::unwrap_used)]

use super::actions::{BATCH_DELETE_IMAGE, BATCH_GET_IMAGE, GET_DOWNLOAD_URL_FOR_LAYER, PULL, PUSH, PUT_IMAGE};
use super::*;

const ACCOUNT: &str = "123456789012";

fn arns() -> Arns {
    Arns::new("us-west-2", ACCOUNT)
}

fn wrap(version: &str, statements: &str) -> String {
    format!(r#"{{"Version":"{version}","Statement":[{statements}]}}"#)
}

fn parse(kind: PolicyKind, statements: &str) -> PolicyDocument {
    let json =
        if statements.starts_with("{\"Version\"") { statements.to_owned() } else { wrap("2012-10-17", statements) };
    PolicyDocument::parse(&json, kind).unwrap_or_else(|e| panic!("{e}\n{json}"))
}

/// Condition keys and their values.
type Extra = &'static [(&'static str, &'static [&'static str])];

/// The context the registry builds for a user, plus `extra`.
fn context(who: Option<&str>, extra: Extra) -> Context {
    let mut ctx = Context::new();
    if let Some(name) = who {
        ctx.set("aws:username", name);
        ctx.set("aws:PrincipalArn", arns().user(name));
    }
    for (key, values) in extra {
        ctx.set_values(key, values.iter().copied());
    }
    ctx
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Allow,
    Deny(Option<&'static str>),
    Implicit,
}

struct Row {
    name: &'static str,
    identity: &'static [&'static str],
    repository: &'static [&'static str],
    registry: &'static [&'static str],
    /// `None`: anonymous.
    who: Option<&'static str>,
    action: &'static str,
    /// A repository name, or `<registry>`.
    on: &'static str,
    ctx: Extra,
    want: Want,
}

const ROW: Row = Row {
    name: "",
    identity: &[],
    repository: &[],
    registry: &[],
    who: Some("alice"),
    action: BATCH_GET_IMAGE,
    on: "app",
    ctx: &[],
    want: Want::Implicit,
};

fn decide(row: &Row) -> Decision {
    let identity: Vec<_> = row.identity.iter().map(|s| parse(PolicyKind::Identity, s)).collect();
    let mut resource: Vec<_> = row.repository.iter().map(|s| parse(PolicyKind::Repository, s)).collect();
    resource.extend(row.registry.iter().map(|s| parse(PolicyKind::Registry, s)));
    let principal = row.who.map_or(Principal::Anonymous, |name| Principal::User { name: name.into() });
    let resource_arn = if row.on == "<registry>" { arns().registry() } else { arns().repository(row.on) };
    let ctx = context(row.who, row.ctx);
    let req = Request { principal: &principal, action: row.action, resource: &resource_arn, context: &ctx };
    evaluate(&Policies { identity: &identity, resource: &resource }, &req, &arns())
}

const ALLOW_ALL: &str = r#"{"Effect":"Allow","Action":"ecr:*","Resource":"*"}"#;
const READ_ONLY: &str = r#"{"Sid":"ReadOnly","Effect":"Allow","Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer",
    "ecr:DescribeRepositories","ecr:ListImages"],"Resource":"arn:aws:ecr:us-west-2:123456789012:repository/*"}"#;
const ACCOUNT_PULL: &str = r#"{"Sid":"AccountPull","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},
    "Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer"]}"#;
const PUBLIC_PULL: &str = r#"{"Sid":"Public","Effect":"Allow","Principal":"*","Action":"ecr:BatchGetImage"}"#;
const DENY_PULL_EVERYONE: &str =
    r#"{"Sid":"DenyPull","Effect":"Deny","Principal":"*","Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer"]}"#;
const DENY_PUSH: &str = r#"{"Sid":"DenyPush","Effect":"Deny","Principal":{"AWS":"123456789012"},
    "Action":["ecr:PutImage","ecr:InitiateLayerUpload","ecr:UploadLayerPart","ecr:CompleteLayerUpload"]}"#;
const IP_RESTRICTION: &str = r#"{"Sid":"IPRestriction","Effect":"Deny","Principal":"*","Action":"ecr:*",
    "Condition":{"NotIpAddress":{"aws:SourceIp":["54.240.143.0/24","2001:db8::/32"]}}}"#;
const OWN_REPOS: &str = r#"{"Sid":"Own","Effect":"Allow","Action":"ecr:*",
    "Resource":"arn:aws:ecr:us-west-2:123456789012:repository/${aws:username}/*"}"#;
const OWN_REPOS_2008: &str = r#"{"Version":"2008-10-17","Statement":{"Effect":"Allow","Action":"ecr:*",
    "Resource":"arn:aws:ecr:us-west-2:123456789012:repository/${aws:username}/*"}}"#;
const REPLICATION: &str = r#"{"Sid":"Replication","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},
    "Action":["ecr:CreateRepository","ecr:ReplicateImage"],"Resource":"arn:aws:ecr:us-west-2:123456789012:repository/prod-*"}"#;

#[test]
fn decides_requests() {
    use Want::{Allow, Deny};
    let rows = [
        Row { name: "nothing allows: implicit deny", ..ROW },
        Row { name: "identity allow", identity: &[ALLOW_ALL], want: Allow, ..ROW },
        Row { name: "identity policies do not apply to anonymous", identity: &[ALLOW_ALL], who: None, ..ROW },
        Row { name: "repository policy alone grants the account", repository: &[ACCOUNT_PULL], want: Allow, ..ROW },
        Row { name: "account principal excludes anonymous", repository: &[ACCOUNT_PULL], who: None, ..ROW },
        Row {
            name: "repository policy grants only its actions",
            repository: &[ACCOUNT_PULL],
            action: PUT_IMAGE,
            ..ROW
        },
        Row {
            name: "user principal grants that user",
            repository: &[
                r#"{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::123456789012:user/alice"]},"Action":"ecr:*"}"#,
            ],
            want: Allow,
            ..ROW
        },
        Row {
            name: "user principal excludes others",
            repository: &[
                r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:user/alice"},"Action":"ecr:*"}"#,
            ],
            who: Some("bob"),
            ..ROW
        },
        Row { name: "anonymous pull via Principal *", repository: &[PUBLIC_PULL], who: None, want: Allow, ..ROW },
        Row {
            name: "anonymous pull via AWS *",
            repository: &[r#"{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"ecr:BatchGetImage"}"#],
            who: None,
            want: Allow,
            ..ROW
        },
        Row {
            name: "identity deny beats resource allow",
            identity: &[r#"{"Sid":"NoPull","Effect":"Deny","Action":"ecr:BatchGetImage","Resource":"*"}"#],
            repository: &[PUBLIC_PULL],
            want: Deny(Some("NoPull")),
            ..ROW
        },
        Row {
            name: "resource deny beats identity allow",
            identity: &[ALLOW_ALL],
            repository: &[DENY_PULL_EVERYONE],
            want: Deny(Some("DenyPull")),
            ..ROW
        },
        Row {
            name: "registry deny beats repository allow",
            repository: &[PUBLIC_PULL],
            registry: &[r#"{"Effect":"Deny","Principal":"*","Action":"ecr:*"}"#],
            want: Deny(None),
            ..ROW
        },
        Row {
            name: "read-only user pulls",
            identity: &[READ_ONLY],
            action: GET_DOWNLOAD_URL_FOR_LAYER,
            want: Allow,
            ..ROW
        },
        Row { name: "read-only user cannot push", identity: &[READ_ONLY], action: PUT_IMAGE, ..ROW },
        Row {
            name: "push denied, pull allowed: pull",
            identity: &[ALLOW_ALL],
            repository: &[DENY_PUSH],
            want: Allow,
            ..ROW
        },
        Row {
            name: "push denied, pull allowed: push",
            identity: &[ALLOW_ALL],
            repository: &[DENY_PUSH],
            action: PUT_IMAGE,
            want: Deny(Some("DenyPush")),
            ..ROW
        },
        Row {
            name: "NotAction allows everything else",
            identity: &[r#"{"Effect":"Allow","NotAction":"ecr:BatchDeleteImage","Resource":"*"}"#],
            want: Allow,
            ..ROW
        },
        Row {
            name: "NotAction excludes its action",
            identity: &[r#"{"Effect":"Allow","NotAction":"ecr:BatchDeleteImage","Resource":"*"}"#],
            action: BATCH_DELETE_IMAGE,
            ..ROW
        },
        Row {
            name: "NotResource deny hits other repositories",
            identity: &[
                ALLOW_ALL,
                r#"{"Sid":"OnlyPublic","Effect":"Deny","Action":"ecr:*","NotResource":"arn:aws:ecr:*:*:repository/public/*"}"#,
            ],
            on: "private/app",
            want: Deny(Some("OnlyPublic")),
            ..ROW
        },
        Row {
            name: "NotResource deny spares its resources",
            identity: &[
                ALLOW_ALL,
                r#"{"Sid":"OnlyPublic","Effect":"Deny","Action":"ecr:*","NotResource":"arn:aws:ecr:*:*:repository/public/*"}"#,
            ],
            on: "public/app",
            want: Allow,
            ..ROW
        },
        Row {
            name: "NotPrincipal deny hits others",
            identity: &[ALLOW_ALL],
            repository: &[
                r#"{"Sid":"OnlyAlice","Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::123456789012:user/alice"},"Action":"ecr:*"}"#,
            ],
            who: Some("bob"),
            want: Deny(Some("OnlyAlice")),
            ..ROW
        },
        Row {
            name: "NotPrincipal deny spares the named",
            identity: &[ALLOW_ALL],
            repository: &[
                r#"{"Sid":"OnlyAlice","Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::123456789012:user/alice"},"Action":"ecr:*"}"#,
            ],
            want: Allow,
            ..ROW
        },
        Row {
            name: "ecr:Batch* covers BatchGetImage",
            identity: &[r#"{"Effect":"Allow","Action":"ecr:Batch*","Resource":"*"}"#],
            want: Allow,
            ..ROW
        },
        Row {
            name: "ecr:Batch* misses PutImage",
            identity: &[r#"{"Effect":"Allow","Action":"ecr:Batch*","Resource":"*"}"#],
            action: PUT_IMAGE,
            ..ROW
        },
        Row {
            name: "? in actions, case-insensitive",
            identity: &[r#"{"Effect":"Allow","Action":"ECR:get?ownloadurlforlayer","Resource":"*"}"#],
            action: GET_DOWNLOAD_URL_FOR_LAYER,
            want: Allow,
            ..ROW
        },
        Row {
            name: "* in resources spans slashes",
            identity: &[
                r#"{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:*:123456789012:repository/team-*"}"#,
            ],
            on: "team-a/sub/app",
            want: Allow,
            ..ROW
        },
        Row {
            name: "resources are case-sensitive",
            identity: &[
                r#"{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:*:123456789012:repository/team-*"}"#,
            ],
            on: "Team-a",
            ..ROW
        },
        Row { name: "${aws:username} in Resource: own", identity: &[OWN_REPOS], on: "alice/app", want: Allow, ..ROW },
        Row { name: "${aws:username} in Resource: other", identity: &[OWN_REPOS], on: "bob/app", ..ROW },
        Row { name: "2008 documents have no variables", identity: &[OWN_REPOS_2008], on: "alice/app", ..ROW },
        Row {
            name: "IP restriction: inside",
            identity: &[ALLOW_ALL],
            repository: &[IP_RESTRICTION],
            ctx: &[("aws:SourceIp", &["54.240.143.10"])],
            want: Allow,
            ..ROW
        },
        Row {
            name: "IP restriction: inside, IPv6",
            identity: &[ALLOW_ALL],
            repository: &[IP_RESTRICTION],
            ctx: &[("aws:SourceIp", &["2001:db8:0:1::7"])],
            want: Allow,
            ..ROW
        },
        Row {
            name: "IP restriction: outside",
            identity: &[ALLOW_ALL],
            repository: &[IP_RESTRICTION],
            ctx: &[("aws:SourceIp", &["203.0.113.9"])],
            want: Deny(Some("IPRestriction")),
            ..ROW
        },
        Row {
            name: "IP restriction: no address is outside",
            identity: &[ALLOW_ALL],
            repository: &[IP_RESTRICTION],
            want: Deny(Some("IPRestriction")),
            ..ROW
        },
        Row {
            name: "deny plain HTTP",
            identity: &[ALLOW_ALL],
            registry: &[
                r#"{"Sid":"TLS","Effect":"Deny","Principal":"*","Action":"ecr:*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}"#,
            ],
            ctx: &[("aws:SecureTransport", &["false"])],
            want: Deny(Some("TLS")),
            ..ROW
        },
        Row {
            name: "allow HTTPS",
            identity: &[ALLOW_ALL],
            registry: &[
                r#"{"Sid":"TLS","Effect":"Deny","Principal":"*","Action":"ecr:*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}"#,
            ],
            ctx: &[("aws:SecureTransport", &["true"])],
            want: Allow,
            ..ROW
        },
        Row {
            name: "registry policy Resource: matching",
            registry: &[REPLICATION],
            action: "ecr:ReplicateImage",
            on: "prod-web",
            want: Allow,
            ..ROW
        },
        Row {
            name: "registry policy Resource: other",
            registry: &[REPLICATION],
            action: "ecr:ReplicateImage",
            on: "dev-web",
            ..ROW
        },
        Row {
            name: "registry-wide action on the registry",
            identity: &[
                r#"{"Effect":"Allow","Action":"ecr:DescribeRepositories","Resource":"arn:aws:ecr:us-west-2:123456789012:registry"}"#,
            ],
            action: "ecr:DescribeRepositories",
            on: "<registry>",
            want: Allow,
            ..ROW
        },
        Row {
            name: "resource tag condition",
            repository: &[
                r#"{"Effect":"Allow","Principal":"*","Action":"ecr:*","Condition":{"StringEquals":{"ecr:ResourceTag/team":"web"}}}"#,
            ],
            ctx: &[("ecr:ResourceTag/team", &["web"]), ("aws:ResourceTag/team", &["web"])],
            want: Allow,
            ..ROW
        },
    ];
    for row in &rows {
        let want = match row.want {
            Want::Allow => Decision::Allow,
            Want::Deny(sid) => Decision::ExplicitDeny { sid: sid.map(str::to_owned) },
            Want::Implicit => Decision::ImplicitDeny,
        };
        assert_eq!(decide(row), want, "{}", row.name);
    }
}

/// Every condition operator, through `evaluate`: each row is one `Condition` element on an
/// Allow statement, a context, and whether the statement applies.
#[test]
fn evaluates_every_condition_operator() {
    const NOW: &[&str] = &["2026-03-01T12:00:00Z"];
    let cases: &[(&str, Extra, bool)] = &[
        (r#"{"StringEquals":{"aws:username":"alice"}}"#, &[], true),
        (r#"{"StringEquals":{"aws:username":["bob","alice"]}}"#, &[], true),
        (r#"{"StringEquals":{"aws:username":"Alice"}}"#, &[], false),
        (r#"{"StringEquals":{"aws:userid":"AIDA1"}}"#, &[], false),
        (r#"{"StringNotEquals":{"aws:username":"bob"}}"#, &[], true),
        (r#"{"StringNotEquals":{"aws:username":["bob","alice"]}}"#, &[], false),
        (r#"{"StringNotEquals":{"aws:userid":"AIDA1"}}"#, &[], true),
        (r#"{"StringEqualsIgnoreCase":{"AWS:USERNAME":"ALICE"}}"#, &[], true),
        (r#"{"StringNotEqualsIgnoreCase":{"aws:username":"ALICE"}}"#, &[], false),
        (r#"{"StringLike":{"ecr:ResourceTag/team":"web-*"}}"#, &[("ecr:ResourceTag/team", &["web-a"])], true),
        (r#"{"StringLike":{"ecr:ResourceTag/team":"web-?"}}"#, &[("ecr:ResourceTag/team", &["web-ab"])], false),
        (r#"{"StringNotLike":{"ecr:ResourceTag/team":"prod-*"}}"#, &[("ecr:ResourceTag/team", &["dev"])], true),
        (r#"{"StringNotLike":{"ecr:ResourceTag/team":"prod-*"}}"#, &[("ecr:ResourceTag/team", &["prod-1"])], false),
        (r#"{"StringNotLike":{"ecr:ResourceTag/team":"prod-*"}}"#, &[], true),
        (r#"{"StringEquals":{"aws:PrincipalArn":"arn:aws:iam::123456789012:user/${aws:username}"}}"#, &[], true),
        (r#"{"StringEquals":{"aws:username":"alice","aws:userid":"AIDA1"}}"#, &[], false),
        (
            r#"{"StringEquals":{"aws:username":"alice"},"StringLike":{"aws:userid":"AIDA*"}}"#,
            &[("aws:userid", &["AIDA1"])],
            true,
        ),
        (r#"{"NumericEquals":{"n":"5"}}"#, &[("n", &["5.0"])], true),
        (r#"{"NumericNotEquals":{"n":5}}"#, &[("n", &["6"])], true),
        (r#"{"NumericLessThan":{"n":10}}"#, &[("n", &["10"])], false),
        (r#"{"NumericLessThanEquals":{"n":10}}"#, &[("n", &["10"])], true),
        (r#"{"NumericGreaterThan":{"n":10}}"#, &[("n", &["10.5"])], true),
        (r#"{"NumericGreaterThanEquals":{"n":10}}"#, &[("n", &["9"])], false),
        (r#"{"NumericGreaterThanEquals":{"n":10}}"#, &[("n", &["many"])], false),
        (r#"{"DateLessThan":{"aws:CurrentTime":"2027-01-01T00:00:00Z"}}"#, &[("aws:CurrentTime", NOW)], true),
        (r#"{"DateLessThan":{"aws:CurrentTime":"2026-01-01"}}"#, &[("aws:CurrentTime", NOW)], false),
        (r#"{"DateGreaterThan":{"aws:CurrentTime":"2026-01-01"}}"#, &[("aws:CurrentTime", NOW)], true),
        (r#"{"DateGreaterThan":{"aws:CurrentTime":"2026-06-01"}}"#, &[("aws:CurrentTime", NOW)], false),
        (r#"{"DateEquals":{"aws:CurrentTime":1772366400}}"#, &[("aws:CurrentTime", NOW)], true),
        (r#"{"DateNotEquals":{"aws:CurrentTime":"2026-03-01T12:00:00Z"}}"#, &[("aws:CurrentTime", NOW)], false),
        (
            r#"{"DateLessThanEquals":{"aws:EpochTime":"2026-03-01T12:00:00Z"}}"#,
            &[("aws:EpochTime", &["1772366400"])],
            true,
        ),
        (
            r#"{"DateGreaterThanEquals":{"aws:CurrentTime":"2026-03-01T13:00:00+01:00"}}"#,
            &[("aws:CurrentTime", NOW)],
            true,
        ),
        (r#"{"DateLessThan":{"aws:CurrentTime":"2027-01-01"}}"#, &[], false),
        (r#"{"Bool":{"aws:SecureTransport":"true"}}"#, &[("aws:SecureTransport", &["true"])], true),
        (r#"{"Bool":{"aws:SecureTransport":true}}"#, &[("aws:SecureTransport", &["false"])], false),
        (r#"{"Bool":{"aws:SecureTransport":"false"}}"#, &[], false),
        (r#"{"BinaryEquals":{"k":"aGk="}}"#, &[("k", &["aGk="])], true),
        (r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#, &[("aws:SourceIp", &["10.1.2.3"])], true),
        (r#"{"IpAddress":{"aws:SourceIp":"2001:db8::/32"}}"#, &[("aws:SourceIp", &["2001:db8::1"])], true),
        (r#"{"IpAddress":{"aws:SourceIp":"2001:db8::/32"}}"#, &[("aws:SourceIp", &["10.1.2.3"])], false),
        (r#"{"NotIpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#, &[("aws:SourceIp", &["192.0.2.1"])], true),
        (r#"{"NotIpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#, &[], true),
        (r#"{"ArnEquals":{"aws:PrincipalArn":"arn:aws:iam::123456789012:user/alice"}}"#, &[], true),
        (r#"{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::*:user/*"}}"#, &[], true),
        (r#"{"ArnNotEquals":{"aws:PrincipalArn":"arn:aws:iam::123456789012:user/alice"}}"#, &[], false),
        (r#"{"ArnNotLike":{"aws:PrincipalArn":"arn:aws:iam::*:root"}}"#, &[], true),
        (r#"{"Null":{"aws:userid":"true"}}"#, &[], true),
        (r#"{"Null":{"aws:username":"true"}}"#, &[], false),
        (r#"{"Null":{"aws:username":false}}"#, &[], true),
        (r#"{"Null":{"aws:userid":"false"}}"#, &[], false),
        (r#"{"StringEqualsIfExists":{"aws:username":"alice"}}"#, &[], true),
        (r#"{"StringEqualsIfExists":{"aws:username":"bob"}}"#, &[], false),
        (r#"{"StringEqualsIfExists":{"aws:userid":"AIDA1"}}"#, &[], true),
        (r#"{"NumericLessThanIfExists":{"n":3}}"#, &[], true),
        (r#"{"IpAddressIfExists":{"aws:SourceIp":"10.0.0.0/8"}}"#, &[("aws:SourceIp", &["192.0.2.1"])], false),
        (r#"{"ForAnyValue:StringEquals":{"aws:TagKeys":"b"}}"#, &[("aws:TagKeys", &["a", "b"])], true),
        (r#"{"ForAnyValue:StringEquals":{"aws:TagKeys":"c"}}"#, &[("aws:TagKeys", &["a", "b"])], false),
        (r#"{"ForAnyValue:StringEquals":{"aws:TagKeys":"c"}}"#, &[], false),
        (r#"{"ForAnyValue:StringNotEquals":{"aws:TagKeys":"a"}}"#, &[("aws:TagKeys", &["a", "b"])], true),
        (r#"{"ForAllValues:StringLike":{"aws:TagKeys":"team-*"}}"#, &[("aws:TagKeys", &["team-a", "team-b"])], true),
        (r#"{"ForAllValues:StringLike":{"aws:TagKeys":"team-*"}}"#, &[("aws:TagKeys", &["team-a", "owner"])], false),
        (r#"{"ForAllValues:StringLike":{"aws:TagKeys":"team-*"}}"#, &[], true),
        (r#"{"ForAllValues:StringNotLike":{"aws:TagKeys":"key1*"}}"#, &[("aws:TagKeys", &["key2:audit"])], true),
        (r#"{"ForAllValues:StringNotLike":{"aws:TagKeys":"key1*"}}"#, &[("aws:TagKeys", &["key1:hr", "x"])], false),
        (r#"{"StringEquals":{"aws:TagKeys":"b"}}"#, &[("aws:TagKeys", &["a", "b"])], true),
        (r#"{"StringNotEquals":{"aws:TagKeys":"b"}}"#, &[("aws:TagKeys", &["a", "b"])], false),
    ];
    for (condition, extra, applies) in cases {
        let statement = format!(r#"{{"Effect":"Allow","Action":"ecr:*","Resource":"*","Condition":{condition}}}"#);
        let doc = parse(PolicyKind::Identity, &statement);
        let principal = Principal::User { name: "alice".into() };
        let ctx = context(Some("alice"), extra);
        let resource = arns().repository("app");
        let req = Request { principal: &principal, action: BATCH_GET_IMAGE, resource: &resource, context: &ctx };
        let decision = evaluate(&Policies { identity: &[doc], resource: &[] }, &req, &arns());
        assert_eq!(decision.is_allowed(), *applies, "{condition} with {extra:?}");
    }
}

/// A scope action is granted when every ECR action behind it is: a read-only user gets
/// `pull` but not `push`, though `push` shares `BatchCheckLayerAvailability` with reading.
#[test]
fn grants_scopes_action_by_action() {
    let identity = [parse(PolicyKind::Identity, READ_ONLY)];
    let principal = Principal::User { name: "alice".into() };
    let ctx = context(Some("alice"), &[]);
    let resource = arns().repository("app");
    let granted = |scope: &str| {
        let needed = actions::for_scope_action("repository", scope).unwrap();
        needed.iter().all(|action| {
            let req = Request { principal: &principal, action, resource: &resource, context: &ctx };
            evaluate(&Policies { identity: &identity, resource: &[] }, &req, &arns()).is_allowed()
        })
    };
    assert_eq!(actions::for_scope_action("repository", "pull"), Some(PULL));
    assert_eq!(actions::for_scope_action("repository", "push"), Some(PUSH));
    assert!(granted("pull"));
    assert!(!granted("push"));
    assert!(!granted("*"));
}
