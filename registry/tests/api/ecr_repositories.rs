//! ECR's own API, the repository group, over real HTTP (`POST /` with `X-Amz-Target`):
//! CreateRepository / DescribeRepositories / DeleteRepository, the repository creation
//! templates, repository and registry policies, resource tags, DescribeRegistry and the
//! scanning settings (stored as given; StartImageScan and DescribeImageScanFindings say that
//! Berth does not scan). Each operation's answer shape and its errors by ECR's exception names.
//! Authentication is off here (every caller allowed), but for the last test, which signs its
//! requests (`ecr_common`) and checks that each operation is allowed by its own action.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

const ACCOUNT: &str = "000000000000";
const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"AllowPull","Effect":"Allow","Principal":"*","Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer"]}]}"#;

/// One ECR operation: the status and the JSON answer.
async fn ecr(t: &TestServer, op: &str, body: Value) -> (StatusCode, Value) {
    let r = t
        .client
        .post(t.url("/"))
        .header("x-amz-target", format!("AmazonEC2ContainerRegistry_V20150921.{op}"))
        .header("content-type", "application/x-amz-json-1.1")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status();
    if status == StatusCode::OK {
        assert_eq!(r.headers()["content-type"], "application/x-amz-json-1.1");
    }
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{op} answered no JSON: {text}")))
}

/// An operation that must succeed: its answer.
async fn ok(t: &TestServer, op: &str, body: Value) -> Value {
    let (status, answer) = ecr(t, op, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{op} {body}: {answer}");
    answer
}

/// An operation that must fail with ECR's exception `kind` (status 400): its message.
async fn refused(t: &TestServer, op: &str, body: Value, kind: &str) -> String {
    let (status, answer) = ecr(t, op, body.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{op} {body}: {answer}");
    assert_eq!(answer["__type"], kind, "{op} {body}: {answer}");
    answer["message"].as_str().unwrap().to_owned()
}

fn arn(name: &str) -> String {
    format!("arn:aws:ecr:local:{ACCOUNT}:repository/{name}")
}

fn kms_arn(key: &str) -> String {
    format!("arn:aws:kms:local:{ACCOUNT}:key/{key}")
}

fn host(t: &TestServer) -> String {
    t.server.url().trim_start_matches("http://").to_owned()
}

async fn names_of(t: &TestServer, body: Value) -> (Vec<String>, Option<String>) {
    let answer = ok(t, "DescribeRepositories", body).await;
    let names =
        answer["repositories"].as_array().unwrap().iter().map(|r| r["repositoryName"].as_str().unwrap().to_owned());
    (names.collect(), answer["nextToken"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn create_describe_and_delete_repositories_with_ecrs_shapes() {
    let t = TestServer::start().await;
    t.server.app.registry().create_key("team-a").await.unwrap();
    let created = ok(
        &t,
        "CreateRepository",
        json!({"repositoryName": "team/app", "registryId": ACCOUNT,
            "tags": [{"Key": "team", "Value": "a"}],
            "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
            "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "latest"}],
            "imageScanningConfiguration": {"scanOnPush": true},
            "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": kms_arn("team-a")}}),
    )
    .await;
    let repository = &created["repository"];
    assert!(repository["createdAt"].as_f64().unwrap() > 1.7e9, "{repository}");
    let mut shown = repository.clone();
    shown.as_object_mut().unwrap().remove("createdAt");
    assert_eq!(
        shown,
        json!({"repositoryArn": arn("team/app"), "registryId": ACCOUNT, "repositoryName": "team/app",
            "repositoryUri": format!("{}/team/app", host(&t)),
            "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
            "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "latest"}],
            "imageScanningConfiguration": {"scanOnPush": true},
            "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": kms_arn("team-a")}})
    );
    // The key by its name, as `berth keys list` shows it, is the same key.
    let by_name = ok(
        &t,
        "CreateRepository",
        json!({"repositoryName": "team/by-name", "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": "team-a"}}),
    )
    .await;
    assert_eq!(by_name["repository"]["encryptionConfiguration"]["kmsKey"], kms_arn("team-a"));
    // AES256, KMS without a key, and nothing at all: the registry's default key, shown as AES256.
    for (name, enc) in [
        ("team/aes", Some(json!({"encryptionType": "AES256"}))),
        ("team/kms-default", Some(json!({"encryptionType": "KMS"}))),
        ("team/plain-request", None),
    ] {
        let mut body = json!({"repositoryName": name});
        if let Some(enc) = enc {
            body["encryptionConfiguration"] = enc;
        }
        let r = ok(&t, "CreateRepository", body).await;
        assert_eq!(r["repository"]["encryptionConfiguration"], json!({"encryptionType": "AES256"}), "{name}");
        assert_eq!(r["repository"]["imageTagMutability"], "MUTABLE");
        assert!(r["repository"].get("imageTagMutabilityExclusionFilters").is_none(), "no empty list: {r}");
        assert_eq!(r["repository"]["imageScanningConfiguration"], json!({"scanOnPush": false}));
    }
    let again =
        refused(&t, "CreateRepository", json!({"repositoryName": "team/app"}), "RepositoryAlreadyExistsException")
            .await;
    assert!(again.contains("'team/app'"), "{again}");
    let tags = ok(&t, "ListTagsForResource", json!({"resourceArn": arn("team/app")})).await;
    assert_eq!(tags, json!({"tags": [{"Key": "team", "Value": "a"}]}));

    // By name: in the order asked, each once.
    let named = ok(&t, "DescribeRepositories", json!({"repositoryNames": ["team/aes", "team/app", "team/aes"]})).await;
    assert_eq!(named["repositories"][0]["repositoryName"], "team/aes");
    assert_eq!(named["repositories"][1], created["repository"], "described as created");
    assert_eq!(named["repositories"].as_array().unwrap().len(), 2);
    assert!(named.get("nextToken").is_none());
    let missing = refused(
        &t,
        "DescribeRepositories",
        json!({"repositoryNames": ["team/app", "team/nope"]}),
        "RepositoryNotFoundException",
    )
    .await;
    assert!(missing.contains("'team/nope'") && missing.contains(ACCOUNT), "{missing}");
    for bad in [
        json!({"repositoryNames": ["team/app"], "nextToken": "x"}),
        json!({"repositoryNames": ["team/app"], "maxResults": 5}),
        json!({"repositoryNames": []}),
        json!({"repositoryNames": (0..101).map(|i| format!("r{i}")).collect::<Vec<_>>()}),
        json!({"repositoryNames": ["Team/App"]}),
        json!({"maxResults": 0}),
        json!({"maxResults": 1001}),
        json!({"nextToken": "forged"}),
        json!({"registryId": "111111111111"}),
    ] {
        refused(&t, "DescribeRepositories", bad, "InvalidParameterException").await;
    }

    // Every repository, two at a time.
    let (mut all, mut token) = names_of(&t, json!({"maxResults": 2})).await;
    assert_eq!(all.len(), 2);
    while let Some(next) = token {
        let (page, after) = names_of(&t, json!({"maxResults": 2, "nextToken": next})).await;
        assert!(!page.is_empty() && page.len() <= 2);
        all.extend(page);
        token = after;
    }
    assert_eq!(all, ["team/aes", "team/app", "team/by-name", "team/kms-default", "team/plain-request"]);
    assert_eq!(names_of(&t, json!({})).await, (all.clone(), None), "one page of up to 100");

    // Deleting: refused while it holds images, unless forced; answers the repository.
    push_manifest(&t, "team/app", "v1", "one").await;
    let kept =
        refused(&t, "DeleteRepository", json!({"repositoryName": "team/app"}), "RepositoryNotEmptyException").await;
    assert!(kept.contains("force"), "{kept}");
    let deleted = ok(&t, "DeleteRepository", json!({"repositoryName": "team/app", "force": true})).await;
    assert_eq!(deleted["repository"]["repositoryArn"], arn("team/app"));
    assert_eq!(deleted["repository"]["encryptionConfiguration"]["encryptionType"], "KMS");
    refused(&t, "DescribeRepositories", json!({"repositoryNames": ["team/app"]}), "RepositoryNotFoundException").await;
    refused(&t, "DeleteRepository", json!({"repositoryName": "team/app"}), "RepositoryNotFoundException").await;
    for name in ["team/aes", "team/by-name", "team/kms-default", "team/plain-request"] {
        ok(&t, "DeleteRepository", json!({"repositoryName": name})).await;
    }
    assert_eq!(names_of(&t, json!({})).await, (vec![], None));
    t.server.stop().await;
}

#[tokio::test]
async fn create_repository_refuses_what_ecr_refuses_and_creates_nothing() {
    let t = TestServer::start().await;
    let fifty_one: Vec<Value> = (0..51).map(|i| json!({"Key": format!("k{i}"), "Value": "v"})).collect();
    let cases = [
        (json!({"repositoryName": "x/y", "tags": fifty_one}), "TooManyTagsException", "50"),
        (
            json!({"repositoryName": "x/y", "tags": [{"Key": "", "Value": "v"}]}),
            "InvalidTagParameterException",
            "tag key",
        ),
        (
            json!({"repositoryName": "x/y", "tags": [{"Key": "aws:x", "Value": "v"}]}),
            "InvalidTagParameterException",
            "aws:",
        ),
        (
            json!({"repositoryName": "x/y", "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": "nokey"}}),
            "InvalidParameterException",
            "berth keys create nokey",
        ),
        (
            json!({"repositoryName": "x/y", "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": kms_arn("nokey")}}),
            "InvalidParameterException",
            "berth keys list",
        ),
        (
            json!({"repositoryName": "x/y", "encryptionConfiguration": {"encryptionType": "KMS_DSSE"}}),
            "InvalidParameterException",
            "KMS_DSSE",
        ),
        (json!({"repositoryName": "x/y", "imageTagMutability": "FROZEN"}), "InvalidParameterException", "FROZEN"),
        (
            json!({"repositoryName": "x/y", "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
                "imageTagMutabilityExclusionFilters": (0..6).map(|i| json!({"filterType": "WILDCARD", "filter": format!("v{i}")})).collect::<Vec<_>>()}),
            "InvalidParameterException",
            "at most 5",
        ),
        (json!({"repositoryName": "X"}), "InvalidParameterException", "repositoryName"),
        (json!({"repositoryName": "x/y", "registryId": "111111111111"}), "InvalidParameterException", "registryId"),
        (json!({"repositoryName": 3}), "InvalidParameterException", "repositoryName"),
    ];
    for (body, kind, words) in cases {
        let message = refused(&t, "CreateRepository", body.clone(), kind).await;
        assert!(message.contains(words), "{body}: {message}");
    }
    assert_eq!(names_of(&t, json!({})).await, (vec![], None), "nothing was created");
    t.server.stop().await;
}

#[tokio::test]
async fn a_plaintext_repository_claims_no_encryption() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.encryption.enabled = false;
    let t = TestServer::start_with(dir, config).await;
    let created = ok(&t, "CreateRepository", json!({"repositoryName": "plain/app"})).await;
    assert!(created["repository"].get("encryptionConfiguration").is_none(), "{created}");
    let described = ok(&t, "DescribeRepositories", json!({"repositoryNames": ["plain/app"]})).await;
    assert!(described["repositories"][0].get("encryptionConfiguration").is_none(), "{described}");
    let asked = refused(
        &t,
        "CreateRepository",
        json!({"repositoryName": "plain/sealed", "encryptionConfiguration": {"encryptionType": "AES256"}}),
        "InvalidParameterException",
    )
    .await;
    assert!(asked.contains("encryption.enabled = false"), "{asked}");
    assert_eq!(names_of(&t, json!({})).await.0, ["plain/app"]);
    // The admin API's CreateRepository answer says the same.
    let r = t
        .client
        .post(t.url("/api/v1/repositories"))
        .json(&json!({"repositoryName": "plain/admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["repository"].get("encryptionConfiguration").is_none(), "{body}");
    t.server.stop().await;
}

#[tokio::test]
async fn repository_creation_templates_with_ecrs_shapes() {
    let t = TestServer::start().await;
    t.server.app.registry().create_key("team-a").await.unwrap();
    let created = ok(
        &t,
        "CreateRepositoryCreationTemplate",
        json!({"prefix": "prod/", "description": "production", "appliedFor": ["CREATE_ON_PUSH"],
            "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": kms_arn("team-a")},
            "resourceTags": [{"Key": "env", "Value": "prod"}], "imageTagMutability": "IMMUTABLE",
            "repositoryPolicy": POLICY}),
    )
    .await;
    assert_eq!(created["registryId"], ACCOUNT);
    let template = &created["repositoryCreationTemplate"];
    assert!(template["createdAt"].as_f64().unwrap() > 1.7e9 && template["updatedAt"].is_number(), "{template}");
    let mut shown = template.clone();
    shown.as_object_mut().unwrap().retain(|k, _| k != "createdAt" && k != "updatedAt");
    assert_eq!(
        shown,
        json!({"prefix": "prod", "description": "production", "appliedFor": ["CREATE_ON_PUSH"],
            "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": kms_arn("team-a")},
            "resourceTags": [{"Key": "env", "Value": "prod"}], "imageTagMutability": "IMMUTABLE",
            "repositoryPolicy": POLICY})
    );
    ok(&t, "CreateRepositoryCreationTemplate", json!({"prefix": "ROOT", "appliedFor": ["CREATE_ON_PUSH"]})).await;
    let exists = refused(
        &t,
        "CreateRepositoryCreationTemplate",
        json!({"prefix": "prod", "appliedFor": ["CREATE_ON_PUSH"]}),
        "TemplateAlreadyExistsException",
    )
    .await;
    assert!(exists.contains("prod"), "{exists}");
    let role = refused(
        &t,
        "CreateRepositoryCreationTemplate",
        json!({"prefix": "dev", "appliedFor": ["CREATE_ON_PUSH"], "customRoleArn": "arn:aws:iam::000000000000:role/x"}),
        "InvalidParameterException",
    )
    .await;
    assert!(role.contains("customRoleArn"), "{role}");
    refused(
        &t,
        "CreateRepositoryCreationTemplate",
        json!({"prefix": "Dev", "appliedFor": ["CREATE_ON_PUSH"]}),
        "InvalidParameterException",
    )
    .await;

    // A repository created under it takes its settings.
    let repo = ok(&t, "CreateRepository", json!({"repositoryName": "prod/api"})).await;
    assert_eq!(repo["repository"]["imageTagMutability"], "IMMUTABLE");
    assert_eq!(repo["repository"]["encryptionConfiguration"]["kmsKey"], kms_arn("team-a"));

    let described = ok(&t, "DescribeRepositoryCreationTemplates", json!({})).await;
    assert_eq!(described["registryId"], ACCOUNT);
    let prefixes: Vec<&str> = described["repositoryCreationTemplates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(prefixes, ["ROOT", "prod"]);
    let one = ok(&t, "DescribeRepositoryCreationTemplates", json!({"prefixes": ["prod/"]})).await;
    assert_eq!(one["repositoryCreationTemplates"], json!([template]));
    let first = ok(&t, "DescribeRepositoryCreationTemplates", json!({"maxResults": 1})).await;
    assert_eq!(first["repositoryCreationTemplates"][0]["prefix"], "ROOT");
    let token = first["nextToken"].as_str().unwrap();
    let second = ok(&t, "DescribeRepositoryCreationTemplates", json!({"maxResults": 1, "nextToken": token})).await;
    assert_eq!(second["repositoryCreationTemplates"][0]["prefix"], "prod");
    assert!(second.get("nextToken").is_none(), "{second}");
    refused(&t, "DescribeRepositoryCreationTemplates", json!({"nextToken": "forged"}), "InvalidParameterException")
        .await;
    refused(&t, "DescribeRepositoryCreationTemplates", json!({"maxResults": 0}), "InvalidParameterException").await;

    let updated = ok(
        &t,
        "UpdateRepositoryCreationTemplate",
        json!({"prefix": "prod", "description": "prod, updated", "encryptionConfiguration": {"encryptionType": "AES256"}}),
    )
    .await;
    let template = &updated["repositoryCreationTemplate"];
    assert_eq!(template["description"], "prod, updated");
    assert_eq!(template["encryptionConfiguration"], json!({"encryptionType": "AES256"}));
    assert_eq!(template["imageTagMutability"], "IMMUTABLE", "fields left out are kept");
    refused(
        &t,
        "UpdateRepositoryCreationTemplate",
        json!({"prefix": "dev", "description": "x"}),
        "TemplateNotFoundException",
    )
    .await;

    let deleted = ok(&t, "DeleteRepositoryCreationTemplate", json!({"prefix": "prod"})).await;
    assert_eq!(deleted["repositoryCreationTemplate"]["description"], "prod, updated");
    assert_eq!(deleted["registryId"], ACCOUNT);
    refused(&t, "DeleteRepositoryCreationTemplate", json!({"prefix": "prod"}), "TemplateNotFoundException").await;
    ok(&t, "DeleteRepositoryCreationTemplate", json!({"prefix": "ROOT"})).await;
    ok(&t, "DeleteRepository", json!({"repositoryName": "prod/api"})).await;
    let none = ok(&t, "DescribeRepositoryCreationTemplates", json!({})).await;
    assert_eq!(none["repositoryCreationTemplates"], json!([]));
    t.server.stop().await;
}

#[tokio::test]
async fn repository_and_registry_policies() {
    let t = TestServer::start().await;
    let set = json!({"repositoryName": "pol/app", "policyText": POLICY});
    refused(&t, "SetRepositoryPolicy", set.clone(), "RepositoryNotFoundException").await;
    ok(&t, "CreateRepository", json!({"repositoryName": "pol/app"})).await;
    refused(&t, "GetRepositoryPolicy", json!({"repositoryName": "pol/app"}), "RepositoryPolicyNotFoundException").await;
    let stored = ok(&t, "SetRepositoryPolicy", set).await;
    let want = json!({"registryId": ACCOUNT, "repositoryName": "pol/app", "policyText": POLICY});
    assert_eq!(stored, want);
    assert_eq!(ok(&t, "GetRepositoryPolicy", json!({"repositoryName": "pol/app"})).await, want, "the text as given");
    let bad = POLICY.replace("\"Allow\"", "\"Maybe\"");
    let message = refused(
        &t,
        "SetRepositoryPolicy",
        json!({"repositoryName": "pol/app", "policyText": bad}),
        "InvalidParameterException",
    )
    .await;
    assert!(message.contains("Statement[0]"), "names the statement: {message}");
    let long = json!({"repositoryName": "pol/app", "policyText": "x".repeat(10_241)});
    refused(&t, "SetRepositoryPolicy", long, "InvalidParameterException").await;
    assert_eq!(ok(&t, "GetRepositoryPolicy", json!({"repositoryName": "pol/app"})).await, want, "unchanged");
    assert_eq!(ok(&t, "DeleteRepositoryPolicy", json!({"repositoryName": "pol/app"})).await, want);
    refused(&t, "DeleteRepositoryPolicy", json!({"repositoryName": "pol/app"}), "RepositoryPolicyNotFoundException")
        .await;
    refused(&t, "GetRepositoryPolicy", json!({"repositoryName": "pol/none"}), "RepositoryNotFoundException").await;

    let registry_policy = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Replicate","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111111111111:root"},"Action":["ecr:CreateRepository","ecr:ReplicateImage"],"Resource":"arn:aws:ecr:local:000000000000:repository/*"}]}"#;
    refused(&t, "GetRegistryPolicy", json!({}), "RegistryPolicyNotFoundException").await;
    refused(&t, "DeleteRegistryPolicy", json!({}), "RegistryPolicyNotFoundException").await;
    let want = json!({"registryId": ACCOUNT, "policyText": registry_policy});
    assert_eq!(ok(&t, "PutRegistryPolicy", json!({"policyText": registry_policy})).await, want);
    assert_eq!(ok(&t, "GetRegistryPolicy", json!({})).await, want);
    let message =
        refused(&t, "PutRegistryPolicy", json!({"policyText": "{\"Statement\": 3}"}), "InvalidParameterException")
            .await;
    assert!(message.starts_with("policyText"), "{message}");
    assert_eq!(ok(&t, "DeleteRegistryPolicy", json!({})).await, want);
    refused(&t, "GetRegistryPolicy", json!({}), "RegistryPolicyNotFoundException").await;
    ok(&t, "DeleteRepository", json!({"repositoryName": "pol/app"})).await;
    t.server.stop().await;
}

#[tokio::test]
async fn resource_tags_on_repository_arns() {
    let t = TestServer::start().await;
    let resource = arn("tag/app");
    let tag = |tags: Value| json!({"resourceArn": resource, "tags": tags});
    refused(&t, "TagResource", tag(json!([{"Key": "a", "Value": "1"}])), "RepositoryNotFoundException").await;
    ok(&t, "CreateRepository", json!({"repositoryName": "tag/app", "tags": [{"Key": "a", "Value": "1"}]})).await;
    assert_eq!(
        ok(&t, "TagResource", tag(json!([{"Key": "b", "Value": "2"}, {"Key": "a", "Value": "one"}]))).await,
        json!({})
    );
    let listed = ok(&t, "ListTagsForResource", json!({"resourceArn": resource})).await;
    assert_eq!(listed, json!({"tags": [{"Key": "a", "Value": "one"}, {"Key": "b", "Value": "2"}]}));
    assert_eq!(ok(&t, "UntagResource", json!({"resourceArn": resource, "tagKeys": ["a", "absent"]})).await, json!({}));
    let listed = ok(&t, "ListTagsForResource", json!({"resourceArn": resource})).await;
    assert_eq!(listed, json!({"tags": [{"Key": "b", "Value": "2"}]}));

    // 49 more make 50; one more is too many, counting those kept.
    let many: Vec<Value> = (0..49).map(|i| json!({"Key": format!("k{i}"), "Value": "v"})).collect();
    ok(&t, "TagResource", tag(json!(many))).await;
    refused(&t, "TagResource", tag(json!([{"Key": "last", "Value": "v"}])), "TooManyTagsException").await;
    ok(&t, "TagResource", tag(json!([{"Key": "b", "Value": "replaced"}]))).await;
    refused(&t, "TagResource", tag(json!([{"Key": "k".repeat(129), "Value": "v"}])), "InvalidTagParameterException")
        .await;
    refused(&t, "TagResource", tag(json!([{"Key": "v", "Value": "v".repeat(257)}])), "InvalidTagParameterException")
        .await;
    let listed = ok(&t, "ListTagsForResource", json!({"resourceArn": resource})).await;
    assert_eq!(listed["tags"].as_array().unwrap().len(), 50);

    for bad in [
        "arn:aws:ecr:local:111111111111:repository/tag/app",
        "arn:aws:ecr:elsewhere:000000000000:repository/tag/app",
        "arn:aws:ecr:local:000000000000:registry",
        "tag/app",
    ] {
        let message =
            refused(&t, "ListTagsForResource", json!({"resourceArn": bad}), "InvalidParameterException").await;
        assert!(message.contains("resourceArn"), "{message}");
        refused(&t, "TagResource", json!({"resourceArn": bad, "tags": []}), "InvalidParameterException").await;
    }
    refused(&t, "ListTagsForResource", json!({"resourceArn": arn("tag/none")}), "RepositoryNotFoundException").await;
    refused(
        &t,
        "UntagResource",
        json!({"resourceArn": arn("tag/none"), "tagKeys": ["a"]}),
        "RepositoryNotFoundException",
    )
    .await;
    refused(&t, "UntagResource", json!({"resourceArn": resource, "tagKeys": [""]}), "InvalidTagParameterException")
        .await;
    ok(&t, "DeleteRepository", json!({"repositoryName": "tag/app"})).await;
    t.server.stop().await;
}

#[tokio::test]
async fn registry_and_scanning_settings_are_stored_and_no_scan_is_invented() {
    let t = TestServer::start().await;
    let registry = ok(&t, "DescribeRegistry", json!({})).await;
    assert_eq!(registry, json!({"registryId": ACCOUNT, "replicationConfiguration": {"rules": []}}));

    let default = ok(&t, "GetRegistryScanningConfiguration", json!({})).await;
    assert_eq!(default, json!({"registryId": ACCOUNT, "scanningConfiguration": {"scanType": "BASIC", "rules": []}}));
    let config = json!({"scanType": "ENHANCED", "rules": [{"scanFrequency": "CONTINUOUS_SCAN",
        "repositoryFilters": [{"filter": "prod/*", "filterType": "WILDCARD"}]}]});
    let put = ok(&t, "PutRegistryScanningConfiguration", config.clone()).await;
    assert_eq!(put, json!({"registryScanningConfiguration": config}));
    let read = ok(&t, "GetRegistryScanningConfiguration", json!({})).await;
    assert_eq!(read, json!({"registryId": ACCOUNT, "scanningConfiguration": config}));
    for bad in [
        json!({"scanType": "DEEP"}),
        json!({"rules": [{"scanFrequency": "HOURLY", "repositoryFilters": []}]}),
        json!({"rules": [{"scanFrequency": "MANUAL", "repositoryFilters": [{"filter": "Prod", "filterType": "WILDCARD"}]}]}),
        json!({"rules": [{"scanFrequency": "MANUAL", "repositoryFilters": []}, {"scanFrequency": "MANUAL", "repositoryFilters": []}, {"scanFrequency": "MANUAL", "repositoryFilters": []}]}),
    ] {
        refused(&t, "PutRegistryScanningConfiguration", bad, "InvalidParameterException").await;
    }
    assert_eq!(ok(&t, "GetRegistryScanningConfiguration", json!({})).await, read, "unchanged");

    ok(&t, "CreateRepository", json!({"repositoryName": "scan/app"})).await;
    let set = json!({"repositoryName": "scan/app", "imageScanningConfiguration": {"scanOnPush": true}});
    let put = ok(&t, "PutImageScanningConfiguration", set).await;
    assert_eq!(
        put,
        json!({"registryId": ACCOUNT, "repositoryName": "scan/app", "imageScanningConfiguration": {"scanOnPush": true}})
    );
    let described = ok(&t, "DescribeRepositories", json!({"repositoryNames": ["scan/app"]})).await;
    assert_eq!(described["repositories"][0]["imageScanningConfiguration"], json!({"scanOnPush": true}));
    let batch =
        ok(&t, "BatchGetRepositoryScanningConfiguration", json!({"repositoryNames": ["scan/app", "scan/none"]})).await;
    assert_eq!(
        batch["scanningConfigurations"],
        json!([{"repositoryArn": arn("scan/app"), "repositoryName": "scan/app", "scanOnPush": true,
            "scanFrequency": "SCAN_ON_PUSH", "appliedScanFilters": []}])
    );
    assert_eq!(batch["failures"][0]["repositoryName"], "scan/none");
    assert_eq!(batch["failures"][0]["failureCode"], "REPOSITORY_NOT_FOUND");
    let names: Vec<String> = (0..26).map(|i| format!("r{i}")).collect();
    refused(
        &t,
        "BatchGetRepositoryScanningConfiguration",
        json!({"repositoryNames": names}),
        "InvalidParameterException",
    )
    .await;
    refused(
        &t,
        "PutImageScanningConfiguration",
        json!({"repositoryName": "scan/none", "imageScanningConfiguration": {"scanOnPush": true}}),
        "RepositoryNotFoundException",
    )
    .await;

    push_manifest(&t, "scan/app", "v1", "scan").await;
    for op in ["StartImageScan", "DescribeImageScanFindings"] {
        let body = json!({"repositoryName": "scan/app", "imageId": {"imageTag": "v1"}});
        let message = refused(&t, op, body, "ValidationException").await;
        assert!(message.contains("Berth does not scan images"), "{message}");
        let elsewhere = json!({"repositoryName": "scan/none", "imageId": {"imageTag": "v1"}});
        refused(&t, op, elsewhere, "RepositoryNotFoundException").await;
    }
    ok(&t, "DeleteRepository", json!({"repositoryName": "scan/app", "force": true})).await;
    t.server.stop().await;
}

/// With authentication on, each operation is allowed by its own ECR action on its own
/// resource: a user allowed `ecr:DescribeRepositories` on one repository describes it and
/// nothing else, and is refused every change.
#[tokio::test]
async fn each_operation_is_allowed_by_its_own_action_on_its_resource() {
    use crate::ecr_common;
    let (t, admin) = ecr_common::start().await;
    for name in ["auth/mine", "auth/other"] {
        let (status, answer) = admin.call("CreateRepository", &json!({"repositoryName": name})).await;
        assert_eq!(status, 200, "{answer}");
    }
    let mine = format!("arn:aws:ecr:{}:{ACCOUNT}:repository/auth/mine", ecr_common::REGION);
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ecr:DescribeRepositories", "Resource": mine},
        {"Effect": "Allow", "Action": ["ecr:ListTagsForResource", "ecr:GetRepositoryPolicy"], "Resource": mine}]});
    let user = admin.for_user("reader", Some(policy)).await;
    let denied = |(status, answer): (u16, Value), what: &str| {
        assert_eq!(status, 403, "{what}: {answer}");
        assert_eq!(answer["__type"], "AccessDeniedException", "{what}: {answer}");
        answer["message"].as_str().unwrap().to_owned()
    };

    let (status, answer) = user.call("DescribeRepositories", &json!({"repositoryNames": ["auth/mine"]})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["repositories"][0]["repositoryName"], "auth/mine");
    let other = denied(
        user.call("DescribeRepositories", &json!({"repositoryNames": ["auth/mine", "auth/other"]})).await,
        "other",
    );
    assert!(other.contains("ecr:DescribeRepositories") && other.contains("repository/auth/other"), "{other}");
    let every = denied(user.call("DescribeRepositories", &json!({})).await, "every repository");
    assert!(every.contains("repository/*"), "{every}");
    let (status, answer) = user.call("ListTagsForResource", &json!({"resourceArn": mine})).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = user.call("GetRepositoryPolicy", &json!({"repositoryName": "auth/mine"})).await;
    assert_eq!(
        (status, answer["__type"].as_str()),
        (400, Some("RepositoryPolicyNotFoundException")),
        "allowed: {answer}"
    );

    // Every other operation is refused, each naming its own action, before anything changes.
    let changes = [
        ("CreateRepository", json!({"repositoryName": "auth/new"})),
        ("DeleteRepository", json!({"repositoryName": "auth/mine"})),
        ("SetRepositoryPolicy", json!({"repositoryName": "auth/mine", "policyText": POLICY})),
        ("DeleteRepositoryPolicy", json!({"repositoryName": "auth/mine"})),
        ("TagResource", json!({"resourceArn": mine, "tags": [{"Key": "a", "Value": "b"}]})),
        ("UntagResource", json!({"resourceArn": mine, "tagKeys": ["a"]})),
        (
            "PutImageScanningConfiguration",
            json!({"repositoryName": "auth/mine", "imageScanningConfiguration": {"scanOnPush": true}}),
        ),
        ("BatchGetRepositoryScanningConfiguration", json!({"repositoryNames": ["auth/mine"]})),
        ("CreateRepositoryCreationTemplate", json!({"prefix": "auth", "appliedFor": ["CREATE_ON_PUSH"]})),
        ("DescribeRepositoryCreationTemplates", json!({})),
        ("PutRegistryPolicy", json!({"policyText": POLICY})),
        ("GetRegistryPolicy", json!({})),
        ("DescribeRegistry", json!({})),
        ("PutRegistryScanningConfiguration", json!({"scanType": "BASIC"})),
        ("GetRegistryScanningConfiguration", json!({})),
        ("StartImageScan", json!({"repositoryName": "auth/mine", "imageId": {"imageTag": "v1"}})),
    ];
    for (op, input) in changes {
        let message = denied(user.call(op, &input).await, op);
        assert!(message.contains(&format!("ecr:{op}")), "{op}: {message}");
    }
    let (status, answer) = admin.call("DescribeRepositories", &json!({})).await;
    assert_eq!(status, 200, "{answer}");
    let names: Vec<&str> =
        answer["repositories"].as_array().unwrap().iter().map(|r| r["repositoryName"].as_str().unwrap()).collect();
    assert_eq!(names, ["auth/mine", "auth/other"], "nothing was created or deleted");
    let (_, tags) = admin.call("ListTagsForResource", &json!({"resourceArn": mine})).await;
    assert_eq!(tags["tags"], json!([]), "nothing was tagged");
    let (_, scanning) = admin.call("DescribeRepositories", &json!({"repositoryNames": ["auth/mine"]})).await;
    assert_eq!(scanning["repositories"][0]["imageScanningConfiguration"], json!({"scanOnPush": false}));
    t.server.stop().await;
}
