//! Repository creation templates and ECR's CreateRepository through the admin API: the
//! longest matching prefix gives a pushed repository its settings (ROOT last, `appliedFor`
//! respected), `registry.create_on_push = false` refuses pushes nothing covers with
//! NAME_UNKNOWN until a template or CreateRepository allows them, the old
//! `[[encryption.repositories]]` rules keep working as configuration templates, and each
//! endpoint is authorized by its ECR action.

use base64::Engine as _;
use berth_oci::RepoName;
use berth_registry::config::{Config, RepositoryKeyRule};
use berth_storage::metadata::NewRepository;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

const ADMIN_PW: &str = "admin-password-for-template-tests";

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

impl TestServer {
    /// An admin API call with no credentials (authentication off) or Basic ones.
    async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        auth: Option<(&str, &str)>,
    ) -> reqwest::Response {
        let mut req = self.client.request(method, self.url(&format!("/api/v1/{path}")));
        if let Some((u, p)) = auth {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            req = req.header("authorization", format!("Basic {basic}"));
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        req.send().await.unwrap()
    }

    async fn settings(&self, name: &str) -> Option<NewRepository> {
        self.server.app.registry().meta.repository_setup(&repo(name)).await.unwrap()
    }
}

/// The status and JSON body of a response.
async fn answer(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn message(body: &Value) -> String {
    body["errors"][0]["message"].as_str().unwrap_or_default().to_owned()
}

/// A blob pushed in one request; the status.
async fn push_blob(t: &TestServer, name: &str, body: &[u8]) -> (u16, Value) {
    let digest = sha256(body);
    let r =
        t.client.post(t.url(&format!("/v2/{name}/blobs/uploads/?digest={digest}"))).body(body.to_vec()).send().await;
    answer(r.unwrap()).await
}

/// A manifest referencing nothing (an empty image index), pushed as `name:tag`.
async fn push_empty_manifest(t: &TestServer, name: &str, tag: &str) -> (u16, Value) {
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []});
    let r = t
        .client
        .put(t.url(&format!("/v2/{name}/manifests/{tag}")))
        .header("content-type", "application/vnd.oci.image.index.v1+json")
        .body(manifest.to_string())
        .send()
        .await
        .unwrap();
    answer(r).await
}

const LIFECYCLE: &str = r#"{"rules":[{"rulePriority":1,"description":"Expire images older than 14 days","selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":14},"action":{"type":"expire"}}]}"#;
const REPO_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"AllowPull","Effect":"Allow","Principal":"*","Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer"]}]}"#;

async fn create_template(t: &TestServer, body: Value) -> Value {
    let (status, body) = answer(t.api(Method::POST, "templates", Some(body), None).await).await;
    assert_eq!(status, 201, "{body}");
    body["repositoryCreationTemplate"].clone()
}

#[tokio::test]
async fn templates_are_created_read_updated_and_deleted_with_ecr_shapes_and_checks() {
    let t = TestServer::start().await;
    t.server.app.registry().create_key("team-a").await.unwrap();
    let created = create_template(
        &t,
        json!({"prefix": "prod/team/", "description": "team templates", "appliedFor": ["CREATE_ON_PUSH"],
            "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": "team-a"},
            "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
            "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "latest"}],
            "resourceTags": [{"Key": "team", "Value": "a"}],
            "lifecyclePolicy": LIFECYCLE, "repositoryPolicy": REPO_POLICY}),
    )
    .await;
    assert_eq!(created["prefix"], "prod/team", "the trailing slash is normalized away");
    assert_eq!(created["encryptionConfiguration"], json!({"encryptionType": "KMS", "kmsKey": "team-a"}));
    assert_eq!(created["imageTagMutabilityExclusionFilters"], json!([{"filterType": "WILDCARD", "filter": "latest"}]));
    assert_eq!(created["resourceTags"], json!([{"Key": "team", "Value": "a"}]));
    assert_eq!(created["appliedFor"], json!(["CREATE_ON_PUSH"]));
    assert_eq!(created["lifecyclePolicy"], LIFECYCLE);
    assert_eq!(created["source"], "api");
    assert!(created["createdAt"].as_i64().unwrap() > 0);
    create_template(&t, json!({"prefix": "ROOT", "appliedFor": ["CREATE_ON_PUSH", "REPLICATION"]})).await;

    // A second template with the same prefix is refused.
    let (status, body) = answer(
        t.api(Method::POST, "templates", Some(json!({"prefix": "prod/team", "appliedFor": ["REPLICATION"]})), None)
            .await,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(message(&body).contains("exists already"), "{body}");

    // Bad input names the fault.
    let bad = [
        (json!({"prefix": "Prod", "appliedFor": ["CREATE_ON_PUSH"]}), "ROOT or a namespace"),
        (json!({"prefix": "x"}), "appliedFor is required"),
        (json!({"prefix": "x", "appliedFor": ["ON_PUSH"]}), "CREATE_ON_PUSH"),
        (json!({"prefix": "x", "appliedFor": []}), "at least one"),
        (
            json!({"prefix": "x", "appliedFor": ["CREATE_ON_PUSH"], "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION"}),
            "at least one exclusion",
        ),
        (
            json!({"prefix": "x", "appliedFor": ["CREATE_ON_PUSH"], "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": "nokey"}}),
            "berth keys create nokey",
        ),
        (
            json!({"prefix": "x", "appliedFor": ["CREATE_ON_PUSH"], "encryptionConfiguration": {"encryptionType": "KMS_DSSE"}}),
            "AES256",
        ),
        (json!({"prefix": "x", "appliedFor": ["CREATE_ON_PUSH"], "lifecyclePolicy": "{\"rule\": []}"}), "rules"),
        (
            json!({"prefix": "x", "appliedFor": ["CREATE_ON_PUSH"], "repositoryPolicy": "{\"Statement\": 3}"}),
            "repository policy",
        ),
        (
            json!({"prefix": "x", "appliedFor": ["CREATE_ON_PUSH"], "resourceTags": [{"Key": "aws:x", "Value": "1"}]}),
            "aws:",
        ),
        (
            json!({"prefix": "x", "appliedFor": ["CREATE_ON_PUSH"], "customRoleArn": "arn:aws:iam::1:role/r"}),
            "customRoleArn",
        ),
        (json!({"prefix": "x", "appliedFor": ["CREATE_ON_PUSH"], "unknown": 1}), "unknown field"),
    ];
    for (body, want) in bad {
        let (status, answer) = answer(t.api(Method::POST, "templates", Some(body.clone()), None).await).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(message(&answer).contains(want), "{body}: {answer}");
    }

    // List, get, update (fields left out are kept), delete.
    let (status, list) = answer(t.api(Method::GET, "templates", None, None).await).await;
    assert_eq!(status, 200);
    let prefixes: Vec<&str> =
        list["repositoryCreationTemplates"].as_array().unwrap().iter().map(|t| t["prefix"].as_str().unwrap()).collect();
    assert_eq!(prefixes, ["ROOT", "prod/team"]);
    let (status, one) = answer(t.api(Method::GET, "templates/prod/team", None, None).await).await;
    assert_eq!(status, 200);
    assert_eq!(one["repositoryCreationTemplate"]["description"], "team templates");
    let (status, updated) = answer(
        t.api(
            Method::PUT,
            "templates/prod/team/",
            Some(json!({"description": "changed", "repositoryPolicy": ""})),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    let updated = &updated["repositoryCreationTemplate"];
    assert_eq!(updated["description"], "changed");
    assert!(updated.get("repositoryPolicy").is_none(), "an empty policy removes it");
    assert_eq!(updated["imageTagMutability"], "IMMUTABLE_WITH_EXCLUSION", "kept");
    assert_eq!(updated["lifecyclePolicy"], LIFECYCLE, "kept");
    let (status, _) =
        answer(t.api(Method::PUT, "templates/nothing", Some(json!({"description": "x"})), None).await).await;
    assert_eq!(status, 404);
    let (status, body) =
        answer(t.api(Method::PUT, "templates/prod/team", Some(json!({"prefix": "prod"})), None).await).await;
    assert_eq!(status, 400, "{body}");
    let (status, deleted) = answer(t.api(Method::DELETE, "templates/prod/team", None, None).await).await;
    assert_eq!(status, 200);
    assert_eq!(deleted["repositoryCreationTemplate"]["description"], "changed");
    assert_eq!(t.api(Method::GET, "templates/prod/team", None, None).await.status(), 404);
    assert_eq!(t.api(Method::DELETE, "templates/prod/team", None, None).await.status(), 404);
    assert_eq!(t.api(Method::DELETE, "templates/ROOT", None, None).await.status(), 200);
    t.server.stop().await;
}

#[tokio::test]
async fn a_push_creates_the_repository_with_the_longest_matching_template() {
    let t = TestServer::start().await;
    let registry = t.server.app.registry().clone();
    registry.create_key("team-a").await.unwrap();
    create_template(
        &t,
        json!({"prefix": "ROOT", "appliedFor": ["CREATE_ON_PUSH"], "resourceTags": [{"Key": "scope", "Value": "root"}]}),
    )
    .await;
    create_template(&t, json!({"prefix": "prod", "appliedFor": ["CREATE_ON_PUSH"], "imageTagMutability": "IMMUTABLE"}))
        .await;
    create_template(
        &t,
        json!({"prefix": "prod/team", "appliedFor": ["CREATE_ON_PUSH"],
            "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": "team-a"},
            "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
            "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "latest"},
                {"filterType": "WILDCARD", "filter": "dev-*"}],
            "resourceTags": [{"Key": "team", "Value": "a"}, {"Key": "cost-center", "Value": "42"}],
            "lifecyclePolicy": LIFECYCLE, "repositoryPolicy": REPO_POLICY}),
    )
    .await;
    // Applied for pull-through only: a push never uses it.
    create_template(
        &t,
        json!({"prefix": "cache", "appliedFor": ["PULL_THROUGH_CACHE"], "imageTagMutability": "IMMUTABLE"}),
    )
    .await;

    // A blob push (chunked upload start), a monolithic blob, a mount, a manifest: each creates.
    let upload = t.start_upload("prod/team/app").await;
    let layer = data(5000, 1);
    let digest = sha256(&layer);
    let r = t.client.put(format!("{upload}?digest={digest}")).body(layer.clone()).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let team = t.settings("prod/team/app").await.expect("created by the push");
    assert_eq!(team.key.as_deref(), Some("team-a"));
    assert_eq!(team.tag_mutability, "IMMUTABLE_WITH_EXCLUSION");
    assert_eq!(team.tag_mutability_exclusions, ["latest", "dev-*"]);
    assert_eq!(team.lifecycle_policy.as_deref(), Some(LIFECYCLE));
    assert_eq!(team.repository_policy.as_deref(), Some(REPO_POLICY));
    assert_eq!(team.resource_tags, [("cost-center".into(), "42".into()), ("team".into(), "a".into())]);
    let target = berth_storage::metadata::PolicyTarget::Repository(repo("prod/team/app"));
    let policies = t.server.app.registry().meta.policies(&target).await.unwrap();
    assert_eq!(policies[0].document, REPO_POLICY, "the repository policy, where authorization reads it");

    assert_eq!(push_blob(&t, "prod/other", &data(100, 2)).await.0, 201);
    let prod = t.settings("prod/other").await.unwrap();
    assert_eq!(prod.tag_mutability, "IMMUTABLE");
    assert_eq!(prod.key.as_deref(), Some("default"), "no key in the template: the registry's default");
    assert!(prod.resource_tags.is_empty(), "one template applies, not a merge");
    // The template's IMMUTABLE holds from the first push: a tag does not move.
    let index = |n: &str| {
        json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [], "annotations": {"n": n}})
    };
    let put = |body: Value| {
        t.client
            .put(t.url("/v2/prod/fresh/manifests/v1"))
            .header("content-type", "application/vnd.oci.image.index.v1+json")
            .body(body.to_string())
            .send()
    };
    assert_eq!(put(index("1")).await.unwrap().status(), 201);
    let (status, body) = answer(put(index("2")).await.unwrap()).await;
    assert_eq!((status, body["errors"][0]["code"].as_str()), (400, Some("TAG_INVALID")), "{body}");

    let r = t
        .client
        .post(t.url(&format!("/v2/production/app/blobs/uploads/?mount={digest}&from=prod/team/app")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let production = t.settings("production/app").await.unwrap();
    assert_eq!(production.tag_mutability, "MUTABLE", "prod does not cover production/: ROOT does");
    assert_eq!(production.resource_tags, [("scope".into(), "root".into())]);

    assert_eq!(push_empty_manifest(&t, "cache/x", "v1").await.0, 201);
    let cache = t.settings("cache/x").await.unwrap();
    assert_eq!(cache.tag_mutability, "MUTABLE", "a PULL_THROUGH_CACHE template does not apply to a push");
    assert_eq!(cache.resource_tags, [("scope".into(), "root".into())]);

    // The repository named like the prefix is not under it.
    assert_eq!(push_blob(&t, "prod", &data(10, 3)).await.0, 201);
    assert_eq!(t.settings("prod").await.unwrap().tag_mutability, "MUTABLE");

    // An existing repository keeps its settings when the templates change.
    assert_eq!(t.api(Method::DELETE, "templates/prod/team", None, None).await.status(), 200);
    assert_eq!(push_blob(&t, "prod/team/app", &data(10, 4)).await.0, 201);
    assert_eq!(t.settings("prod/team/app").await.unwrap(), team);
    t.server.stop().await;
}

#[tokio::test]
async fn create_on_push_off_refuses_until_a_template_or_create_repository_allows() {
    let dir = tempfile::tempdir().unwrap();
    let mut config: Config = config_in(dir.path());
    config.registry.create_on_push = false;
    config.encryption.repositories = vec![RepositoryKeyRule { prefix: "legacy/".into(), key: "default".into() }];
    let t = TestServer::start_with(dir, config).await;

    let refused = |(status, body): (u16, Value)| {
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["errors"][0]["code"], "NAME_UNKNOWN", "{body}");
        let m = message(&body);
        assert!(m.contains("new/app") && m.contains("CREATE_ON_PUSH") && m.contains("CreateRepository"), "{m}");
    };
    refused(answer(t.client.post(t.url("/v2/new/app/blobs/uploads/")).send().await.unwrap()).await);
    refused(push_blob(&t, "new/app", b"x").await);
    refused(push_empty_manifest(&t, "new/app", "v1").await);
    let r = t
        .client
        .put(t.url("/v2/new/app/manifests/v1"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json");
    let body = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(b"{}"), "size": 2}, "layers": []});
    refused(answer(r.body(body.to_string()).send().await.unwrap()).await);
    assert!(t.settings("new/app").await.is_none(), "nothing was created");

    // CreateRepository: then pushes work; the same again is a conflict.
    let (status, created) = answer(
        t.api(
            Method::POST,
            "repositories",
            Some(json!({"repositoryName": "new/app", "imageTagMutability": "IMMUTABLE"})),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["repository"]["repositoryName"], "new/app");
    assert_eq!(created["repository"]["imageTagMutability"], "IMMUTABLE");
    assert!(created["repository"]["repositoryArn"].as_str().unwrap().ends_with(":repository/new/app"));
    assert_eq!(push_blob(&t, "new/app", b"x").await.0, 201);
    assert_eq!(push_empty_manifest(&t, "new/app", "v1").await.0, 201);
    let (status, again) =
        answer(t.api(Method::POST, "repositories", Some(json!({"repositoryName": "new/app"})), None).await).await;
    assert_eq!(status, 409, "{again}");
    assert!(message(&again).contains("already exists"), "{again}");

    // A mount into a repository nothing covers is refused too (its source is readable).
    let r = t
        .client
        .post(t.url(&format!("/v2/other/app/blobs/uploads/?mount={}&from=new/app", sha256(b"x"))))
        .send()
        .await
        .unwrap();
    refused_other(answer(r).await);

    // A template applied for CREATE_ON_PUSH covers its namespace; one for replication does not.
    create_template(&t, json!({"prefix": "team", "appliedFor": ["CREATE_ON_PUSH"]})).await;
    create_template(&t, json!({"prefix": "mirror", "appliedFor": ["REPLICATION"]})).await;
    assert_eq!(push_blob(&t, "team/app", b"y").await.0, 201);
    assert_eq!(push_empty_manifest(&t, "team/tool", "v1").await.0, 201);
    assert_eq!(push_blob(&t, "mirror/app", b"z").await.0, 404);
    // A configuration rule is a template for every way of creating: it allows pushes under it.
    assert_eq!(push_blob(&t, "legacy/app", b"w").await.0, 201);
    t.server.stop().await;
}

fn refused_other((status, body): (u16, Value)) {
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["errors"][0]["code"], "NAME_UNKNOWN", "{body}");
    assert!(message(&body).contains("other/app"), "{body}");
}

#[tokio::test]
async fn create_repository_takes_the_fields_given_and_the_template_for_the_rest() {
    let t = TestServer::start().await;
    t.server.app.registry().create_key("team-a").await.unwrap();
    create_template(
        &t,
        json!({"prefix": "prod", "appliedFor": ["CREATE_ON_PUSH"], "imageTagMutability": "IMMUTABLE",
            "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": "team-a"},
            "resourceTags": [{"Key": "env", "Value": "prod"}], "lifecyclePolicy": LIFECYCLE}),
    )
    .await;
    let (status, body) = answer(
        t.api(
            Method::POST,
            "repositories",
            Some(json!({"repositoryName": "prod/explicit", "imageTagMutability": "MUTABLE_WITH_EXCLUSION",
                "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "v*"}],
                "encryptionConfiguration": {"encryptionType": "AES256"},
                "tags": [{"Key": "owner", "Value": "me"}]})),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["repository"]["encryptionConfiguration"], json!({"encryptionType": "KMS", "kmsKey": "default"}));
    let explicit = t.settings("prod/explicit").await.unwrap();
    assert_eq!(explicit.tag_mutability, "MUTABLE_WITH_EXCLUSION");
    assert_eq!(explicit.tag_mutability_exclusions, ["v*"]);
    assert_eq!(explicit.key.as_deref(), Some("default"), "AES256: the registry's default key");
    assert_eq!(explicit.resource_tags, [("owner".into(), "me".into())]);
    assert_eq!(explicit.lifecycle_policy.as_deref(), Some(LIFECYCLE), "left out: the template's");

    let (status, _) =
        answer(t.api(Method::POST, "repositories", Some(json!({"repositoryName": "prod/implicit"})), None).await).await;
    assert_eq!(status, 201);
    let implicit = t.settings("prod/implicit").await.unwrap();
    assert_eq!(implicit.tag_mutability, "IMMUTABLE");
    assert_eq!(implicit.key.as_deref(), Some("team-a"));
    assert_eq!(implicit.resource_tags, [("env".into(), "prod".into())]);

    let bad = [
        (json!({"repositoryName": "Bad"}), 400),
        (
            json!({"repositoryName": "x/y", "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "v"}]}),
            400,
        ),
        (
            json!({"repositoryName": "x/y", "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": "nokey"}}),
            400,
        ),
        (json!({"repositoryName": "x/y", "tags": [{"Key": "", "Value": "v"}]}), 400),
    ];
    for (body, want) in bad {
        let (status, answer) = answer(t.api(Method::POST, "repositories", Some(body.clone()), None).await).await;
        assert_eq!(status, want, "{body}: {answer}");
    }
    assert!(t.settings("x/y").await.is_none());
    t.server.stop().await;
}

#[tokio::test]
async fn encryption_rules_still_work_as_configuration_templates() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.encryption.repositories = vec![
        RepositoryKeyRule { prefix: "team-a/".into(), key: "team-a".into() },
        RepositoryKeyRule { prefix: "legacy".into(), key: "team-a".into() },
    ];
    let t = TestServer::start_with(dir, config).await;
    t.server.app.registry().create_key("team-a").await.unwrap();

    // As before templates: the first matching rule's key; text matching for `legacy`.
    assert_eq!(push_blob(&t, "team-a/app", b"a").await.0, 201);
    assert_eq!(t.settings("team-a/app").await.unwrap().key.as_deref(), Some("team-a"));
    assert_eq!(push_blob(&t, "legacy-tools/x", b"b").await.0, 201);
    assert_eq!(t.settings("legacy-tools/x").await.unwrap().key.as_deref(), Some("team-a"));
    assert_eq!(push_blob(&t, "other/x", b"c").await.0, 201);
    assert_eq!(t.settings("other/x").await.unwrap().key.as_deref(), Some("default"));

    // Listed as templates from the configuration.
    let (_, list) = answer(t.api(Method::GET, "templates", None, None).await).await;
    let list = list["repositoryCreationTemplates"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["prefix"], "team-a");
    assert_eq!(list[0]["source"], "config");
    assert_eq!(list[0]["encryptionConfiguration"], json!({"encryptionType": "KMS", "kmsKey": "team-a"}));
    let (status, _) = answer(t.api(Method::GET, "templates/team-a", None, None).await).await;
    assert_eq!(status, 200);
    let (status, body) = answer(t.api(Method::DELETE, "templates/team-a", None, None).await).await;
    assert_eq!(status, 409, "{body}");
    assert!(message(&body).contains("[[encryption.repositories]]"), "{body}");

    // A stored ROOT template is shorter: the rule still gives team-a/ its key (and only the key).
    create_template(&t, json!({"prefix": "ROOT", "appliedFor": ["CREATE_ON_PUSH"], "imageTagMutability": "IMMUTABLE"}))
        .await;
    assert_eq!(push_blob(&t, "team-a/two", b"d").await.0, 201);
    let two = t.settings("team-a/two").await.unwrap();
    assert_eq!((two.key.as_deref(), two.tag_mutability.as_str()), (Some("team-a"), "MUTABLE"));
    assert_eq!(t.settings("team-a/app").await.unwrap().key.as_deref(), Some("team-a"));
    // A stored template with the rule's prefix wins the tie; a longer one wins outright.
    create_template(
        &t,
        json!({"prefix": "team-a", "appliedFor": ["CREATE_ON_PUSH"], "imageTagMutability": "IMMUTABLE",
        "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": "team-a"}}),
    )
    .await;
    assert_eq!(push_blob(&t, "team-a/three", b"e").await.0, 201);
    let three = t.settings("team-a/three").await.unwrap();
    assert_eq!((three.key.as_deref(), three.tag_mutability.as_str()), (Some("team-a"), "IMMUTABLE"));
    create_template(&t, json!({"prefix": "team-a/plain", "appliedFor": ["CREATE_ON_PUSH"]})).await;
    assert_eq!(push_blob(&t, "team-a/plain/x", b"f").await.0, 201);
    assert_eq!(t.settings("team-a/plain/x").await.unwrap().key.as_deref(), Some("default"));
    t.server.stop().await;
}

#[tokio::test]
async fn each_endpoint_is_authorized_by_its_ecr_action() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.auth.enabled = true;
    config.auth.admin_password = Some(ADMIN_PW.to_owned().into());
    let t = TestServer::start_with(dir, config).await;
    let admin = Some(("admin", ADMIN_PW));
    let endpoints: [(&str, Method, &str, Option<Value>, u16); 6] = [
        (
            "ecr:CreateRepositoryCreationTemplate",
            Method::POST,
            "templates",
            Some(json!({"prefix": "p", "appliedFor": ["CREATE_ON_PUSH"]})),
            201,
        ),
        ("ecr:DescribeRepositoryCreationTemplates", Method::GET, "templates", None, 200),
        ("ecr:DescribeRepositoryCreationTemplates", Method::GET, "templates/p", None, 200),
        ("ecr:UpdateRepositoryCreationTemplate", Method::PUT, "templates/p", Some(json!({"description": "d"})), 200),
        ("ecr:DeleteRepositoryCreationTemplate", Method::DELETE, "templates/p", None, 200),
        ("ecr:CreateRepository", Method::POST, "repositories", Some(json!({"repositoryName": "p/created"})), 201),
    ];
    // A user with no permission at all is refused everything, before anything changes.
    let r = t.api(Method::POST, "users", Some(json!({"name": "nobody", "password": "nobody-password-1"})), admin).await;
    assert_eq!(r.status(), 201);
    for (action, method, path, body, _) in &endpoints {
        let (status, answer) =
            answer(t.api(method.clone(), path, body.clone(), Some(("nobody", "nobody-password-1"))).await).await;
        assert_eq!(status, 403, "{action} {path}: {answer}");
        assert!(message(&answer).contains(action), "{answer}");
    }
    // Without credentials: 401.
    assert_eq!(t.api(Method::GET, "templates", None, None).await.status(), 401);
    // A user allowed exactly the endpoint's action gets through (in order: each needs the last).
    for (i, (action, method, path, body, want)) in endpoints.iter().enumerate() {
        let user = format!("user{i}");
        let r = t.api(Method::POST, "users", Some(json!({"name": user, "password": "user-password-123"})), admin).await;
        assert_eq!(r.status(), 201);
        let policy =
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}]});
        let r = t.api(Method::PUT, &format!("users/{user}/policies/only"), Some(policy), admin).await;
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
        let (status, answer) =
            answer(t.api(method.clone(), path, body.clone(), Some((&user, "user-password-123"))).await).await;
        assert_eq!(status, *want, "{action} {path}: {answer}");
    }
    // Tags on CreateRepository also need ecr:TagResource (user5 has only ecr:CreateRepository).
    let body = json!({"repositoryName": "p/tagged", "tags": [{"Key": "k", "Value": "v"}]});
    let (status, answer) =
        answer(t.api(Method::POST, "repositories", Some(body), Some(("user5", "user-password-123"))).await).await;
    assert_eq!(status, 403, "{answer}");
    assert!(message(&answer).contains("ecr:TagResource"), "{answer}");
    t.server.stop().await;
}

#[tokio::test]
async fn an_upload_prepared_for_one_key_does_not_create_a_repository_with_another() {
    let t = TestServer::start().await;
    let registry = t.server.app.registry().clone();
    registry.create_key("team-a").await.unwrap();
    registry.create_key("team-b").await.unwrap();
    let kms = |k: &str| json!({"encryptionType": "KMS", "kmsKey": k});
    create_template(
        &t,
        json!({"prefix": "svc", "appliedFor": ["CREATE_ON_PUSH"], "encryptionConfiguration": kms("team-a")}),
    )
    .await;
    // The upload starts sealed for team-a; the template changes before it is finished.
    let upload = t.start_upload("svc/app").await;
    let r = t.api(Method::PUT, "templates/svc", Some(json!({"encryptionConfiguration": kms("team-b")})), None).await;
    assert_eq!(r.status(), 200);
    let layer = data(3000, 9);
    let r = t.client.put(format!("{upload}?digest={}", sha256(&layer))).body(layer.clone()).send().await.unwrap();
    assert_eq!(r.status(), 500, "refused: the client pushes again");
    assert!(t.settings("svc/app").await.is_none(), "no repository with the wrong key");
    // Pushed again, it is sealed and created with the template's key now.
    assert_eq!(push_blob(&t, "svc/app", &layer).await.0, 201);
    assert_eq!(t.settings("svc/app").await.unwrap().key.as_deref(), Some("team-b"));
    let r = t.client.get(t.url(&format!("/v2/svc/app/blobs/{}", sha256(&layer)))).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), layer);
    t.server.stop().await;
}

#[tokio::test]
async fn the_templates_and_repository_create_commands() {
    let t = TestServer::start().await;
    let dir = t.dir.path().to_owned();
    let berth = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .args(["--data-dir", dir.to_str().unwrap()])
            .env("BERTH_AUTH__ENABLED", "false")
            .env("BERTH_LOG__LEVEL", "warn")
            .env_remove("BERTH_CONFIG")
            .output()
            .unwrap()
    };
    let stdout = |o: &std::process::Output| {
        assert!(o.status.success(), "{o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let file = dir.join("prod.json");
    std::fs::write(
        &file,
        json!({"prefix": "prod/", "appliedFor": ["CREATE_ON_PUSH"], "imageTagMutability": "IMMUTABLE",
            "resourceTags": [{"Key": "env", "Value": "prod"}]})
        .to_string(),
    )
    .unwrap();
    assert_eq!(stdout(&berth(&["templates", "put", file.to_str().unwrap()])), "template prod created\n");
    std::fs::write(&file, json!({"prefix": "prod", "description": "production"}).to_string()).unwrap();
    assert_eq!(stdout(&berth(&["templates", "put", file.to_str().unwrap()])), "template prod updated\n");
    let got: Value = serde_json::from_str(&stdout(&berth(&["templates", "get", "prod"]))).unwrap();
    assert_eq!(
        (got["description"].as_str(), got["imageTagMutability"].as_str()),
        (Some("production"), Some("IMMUTABLE"))
    );
    let list = stdout(&berth(&["templates", "list"]));
    assert!(list.lines().nth(1).unwrap().starts_with("prod "), "{list}");
    let json_list: Value = serde_json::from_str(&stdout(&berth(&["templates", "list", "--json"]))).unwrap();
    assert_eq!(json_list["repositoryCreationTemplates"][0]["prefix"], "prod");

    // A server running on the same stores uses the template at its next creation.
    assert_eq!(push_blob(&t, "prod/pushed", b"p").await.0, 201);
    assert_eq!(t.settings("prod/pushed").await.unwrap().tag_mutability, "IMMUTABLE");

    let line = stdout(&berth(&["repository", "create", "--repository", "prod/made", "--tag", "owner=me"]));
    assert_eq!(line, "repository prod/made created (IMMUTABLE, key default)\n");
    let made = t.settings("prod/made").await.unwrap();
    assert_eq!(made.resource_tags, [("owner".into(), "me".into())], "given tags replace the template's");
    let again = berth(&["repository", "create", "--repository", "prod/made"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"), "{again:?}");
    let bad = berth(&["repository", "create", "--repository", "x/y", "--tag", "novalue"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("KEY=VALUE"), "{bad:?}");

    assert_eq!(stdout(&berth(&["templates", "delete", "prod"])), "template prod deleted\n");
    let gone = berth(&["templates", "get", "prod"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no repository creation template"), "{gone:?}");
    t.server.stop().await;
}
