//! Tag immutability as ECR has it: the four modes with their exclusion filters, the answer a
//! client gets (ECR's `TAG_INVALID` sentence), the same image pushed again, several tags in
//! one PUT (all or nothing), concurrent pushes to one new immutable tag (one wins), deleting
//! in an immutable repository, the admin API (its answers, its validation, its ECR actions),
//! `berth repository settings`, and (ignored unless PostgreSQL is up) the race from two
//! replicas sharing PostgreSQL.

use std::process::Output;

use berth_registry::config::Config;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

/// Pushes an image of `seed` (its config blob, then the manifest) to `repo:reference` with
/// `?tag=` for each of `extra`; the response to the manifest PUT and the manifest's digest.
async fn push(t: &TestServer, repo: &str, reference: &str, seed: &str, extra: &[&str]) -> (reqwest::Response, String) {
    let config = format!("{{\"seed\":\"{seed}\"}}").into_bytes();
    let digest = sha256(&config);
    let r = t
        .client
        .post(t.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
        .body(config.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": config.len()},
        "layers": []
    })
    .to_string();
    let manifest_digest = sha256(manifest.as_bytes());
    let reference = if reference.is_empty() { manifest_digest.clone() } else { reference.to_owned() };
    let query: Vec<String> = extra.iter().map(|t| format!("tag={t}")).collect();
    let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
    let r = t
        .client
        .put(t.url(&format!("/v2/{repo}/manifests/{reference}{query}")))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest)
        .send()
        .await
        .unwrap();
    (r, manifest_digest)
}

async fn pushed(t: &TestServer, repo: &str, tag: &str, seed: &str) -> String {
    let (r, digest) = push(t, repo, tag, seed, &[]).await;
    assert_eq!(r.status(), 201, "{repo}:{tag} ({seed}): {:?}", r.text().await);
    digest
}

/// The refusal of a push: 400 `TAG_INVALID`; returns the message.
async fn refused(r: reqwest::Response) -> String {
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "TAG_INVALID", "{body}");
    body["errors"][0]["message"].as_str().unwrap().to_owned()
}

async fn tag_digest(t: &TestServer, repo: &str, tag: &str) -> Option<String> {
    let r = t
        .client
        .head(t.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    (r.status() == 200).then(|| r.headers()["docker-content-digest"].to_str().unwrap().to_owned())
}

async fn tags(t: &TestServer, repo: &str) -> Vec<String> {
    let body: Value = t.client.get(t.url(&format!("/v2/{repo}/tags/list"))).send().await.unwrap().json().await.unwrap();
    body["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect()
}

async fn admin(t: &TestServer, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut req = t.client.request(method, t.url(&format!("/api/v1/{path}")));
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    req.send().await.unwrap()
}

async fn set(t: &TestServer, repo: &str, mode: &str, filters: &[&str]) -> Value {
    let filters: Vec<Value> = filters.iter().map(|f| json!({"filterType": "WILDCARD", "filter": f})).collect();
    let body = json!({"imageTagMutability": mode, "imageTagMutabilityExclusionFilters": filters});
    let r = admin(t, Method::PUT, &format!("repositories/{repo}/tag-mutability"), Some(body)).await;
    assert_eq!(r.status(), 200, "{mode} {filters:?}: {:?}", r.text().await);
    r.json().await.unwrap()
}

fn sentence(tag: &str, repo: &str) -> String {
    format!(
        "The image tag '{tag}' already exists in the '{repo}' repository and cannot be overwritten because the repository is immutable."
    )
}

#[tokio::test]
async fn every_mode_with_its_exclusion_filters() {
    let t = TestServer::start().await;
    // (mode, filters, tag, may the tag move)
    let cases: [(&str, &[&str], &str, bool); 9] = [
        ("MUTABLE", &[], "v1", true),
        ("IMMUTABLE", &[], "v1", false),
        ("IMMUTABLE", &[], "latest", false),
        ("IMMUTABLE_WITH_EXCLUSION", &["latest", "dev-*"], "latest", true),
        ("IMMUTABLE_WITH_EXCLUSION", &["latest", "dev-*"], "dev-42", true),
        ("IMMUTABLE_WITH_EXCLUSION", &["latest", "dev-*"], "v1", false),
        ("MUTABLE_WITH_EXCLUSION", &["v*"], "v1.0", false),
        ("MUTABLE_WITH_EXCLUSION", &["v*"], "latest", true),
        ("MUTABLE_WITH_EXCLUSION", &["v*"], "dev-42", true),
    ];
    for (i, (mode, filters, tag, moves)) in cases.into_iter().enumerate() {
        let repo = format!("modes/case{i}");
        let first = pushed(&t, &repo, tag, &format!("{i}-first")).await;
        set(&t, &repo, mode, filters).await;
        let (r, second) = push(&t, &repo, tag, &format!("{i}-second"), &[]).await;
        if moves {
            assert_eq!(r.status(), 201, "{mode} {filters:?} {tag}: {:?}", r.text().await);
            assert_eq!(tag_digest(&t, &repo, tag).await, Some(second), "{mode} {filters:?} {tag}");
        } else {
            assert_eq!(refused(r).await, sentence(tag, &repo), "{mode} {filters:?}");
            assert_eq!(tag_digest(&t, &repo, tag).await, Some(first), "{mode} {filters:?} {tag}");
        }
    }
    t.server.stop().await;
}

#[tokio::test]
async fn a_refused_push_gets_ecr_s_answer_and_the_same_image_goes_again() {
    let t = TestServer::start().await;
    let first = pushed(&t, "team/app", "v1", "a").await;
    let settings = set(&t, "team/app", "IMMUTABLE", &[]).await;
    assert_eq!(settings["imageTagMutability"], "IMMUTABLE");

    let (r, other) = push(&t, "team/app", "v1", "b", &[]).await;
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(refused(r).await, sentence("v1", "team/app"));
    assert_eq!(tag_digest(&t, "team/app", "v1").await, Some(first.clone()));
    // The refused manifest is not stored either.
    let r = t.client.head(t.url(&format!("/v2/team/app/manifests/{other}"))).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // Clients retry: the same manifest to the same tag is fine, and so is a new tag.
    assert_eq!(pushed(&t, "team/app", "v1", "a").await, first);
    pushed(&t, "team/app", "v2", "b").await;
    // By digest, no tag moves.
    let (r, _) = push(&t, "team/app", "", "c", &[]).await;
    assert_eq!(r.status(), 201);
    t.server.stop().await;
}

#[tokio::test]
async fn several_tags_in_one_put_are_all_or_nothing() {
    let t = TestServer::start().await;
    let first = pushed(&t, "multi/app", "v1", "a").await;
    set(&t, "multi/app", "IMMUTABLE", &[]).await;
    let (r, other) = push(&t, "multi/app", "", "b", &["new", "v1", "newer"]).await;
    assert_eq!(refused(r).await, sentence("v1", "multi/app"));
    assert_eq!(tags(&t, "multi/app").await, ["v1"], "no tag of the refused PUT was created");
    assert_eq!(tag_digest(&t, "multi/app", "v1").await, Some(first.clone()));

    // Without the held tag, the others go; with the image they name, all of them.
    let (r, same) = push(&t, "multi/app", "", "b", &["new", "newer"]).await;
    assert_eq!((r.status().as_u16(), same.clone()), (201, other));
    let (r, _) = push(&t, "multi/app", "", "a", &["v1", "also"]).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_eq!(tags(&t, "multi/app").await, ["also", "new", "newer", "v1"]);
    t.server.stop().await;
}

#[tokio::test]
async fn of_concurrent_pushes_to_a_new_immutable_tag_exactly_one_wins() {
    let t = TestServer::start().await;
    pushed(&t, "race/app", "seed", "seed").await;
    set(&t, "race/app", "IMMUTABLE", &[]).await;
    let seeds: Vec<String> = (0..8).map(|i| format!("racer-{i}")).collect();
    let pushes = seeds.iter().map(|seed| push(&t, "race/app", "release", seed, &[]));
    let results = futures::future::join_all(pushes).await;
    let mut winners = Vec::new();
    for (r, digest) in results {
        if r.status() == 201 {
            winners.push(digest);
        } else {
            assert_eq!(refused(r).await, sentence("release", "race/app"));
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(tag_digest(&t, "race/app", "release").await, winners.pop());
    t.server.stop().await;
}

#[tokio::test]
async fn deleting_tags_and_images_is_allowed_in_an_immutable_repository() {
    let t = TestServer::start().await;
    let first = pushed(&t, "del/app", "v1", "a").await;
    let second = pushed(&t, "del/app", "v2", "b").await;
    set(&t, "del/app", "IMMUTABLE", &[]).await;

    // As ECR's BatchDeleteImage: by tag (the image stays), by digest (with its tags).
    let r = t.client.delete(t.url("/v2/del/app/manifests/v1")).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let r = t.client.head(t.url(&format!("/v2/del/app/manifests/{first}"))).send().await.unwrap();
    assert_eq!(r.status(), 200, "untagging leaves the image");
    let r = t.client.delete(t.url(&format!("/v2/del/app/manifests/{second}"))).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(tags(&t, "del/app").await, Vec::<String>::new());
    // A deleted tag no longer exists: it may name another image.
    let third = pushed(&t, "del/app", "v1", "c").await;
    assert_eq!(tag_digest(&t, "del/app", "v1").await, Some(third));
    t.server.stop().await;
}

#[tokio::test]
async fn the_settings_endpoints_answer_and_check_what_they_are_given() {
    let t = TestServer::start().await;
    pushed(&t, "team/app", "v1", "a").await;
    let r = admin(&t, Method::GET, "repositories/team/app/settings", None).await;
    assert_eq!(r.status(), 200);
    let settings: Value = r.json().await.unwrap();
    assert_eq!(settings["repositoryName"], "team/app");
    assert!(settings["createdAt"].as_i64().unwrap() > 1_700_000_000, "{settings}");
    assert_eq!(settings["imageTagMutability"], "MUTABLE");
    assert_eq!(settings["imageTagMutabilityExclusionFilters"], json!([]));
    assert_eq!(settings["encryptionConfiguration"], json!({"encryptionType": "AES256", "keyName": "default"}));

    let put = set(&t, "team/app", "IMMUTABLE_WITH_EXCLUSION", &["latest", "dev-*"]).await;
    let got: Value = admin(&t, Method::GET, "repositories/team/app/settings", None).await.json().await.unwrap();
    assert_eq!(put, got);
    assert_eq!(
        got["imageTagMutabilityExclusionFilters"],
        json!([{"filterType": "WILDCARD", "filter": "latest"}, {"filterType": "WILDCARD", "filter": "dev-*"}])
    );

    // Each fault named; nothing changed.
    let wrong = [
        (json!({"imageTagMutability": "FROZEN"}), "\"FROZEN\" is not one of MUTABLE, IMMUTABLE"),
        (json!({"imageTagMutability": "IMMUTABLE_WITH_EXCLUSION"}), "needs at least one exclusion filter"),
        (
            json!({"imageTagMutability": "IMMUTABLE", "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "x"}]}),
            "takes no exclusion filters",
        ),
        (
            json!({"imageTagMutability": "MUTABLE_WITH_EXCLUSION", "imageTagMutabilityExclusionFilters": [{"filterType": "REGEX", "filter": "v.*"}]}),
            "imageTagMutabilityExclusionFilters[0].filterType \"REGEX\"",
        ),
        (
            json!({"imageTagMutability": "MUTABLE_WITH_EXCLUSION", "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "a/b"}]}),
            "exclusion filter \"a/b\" must be 1 to 128 characters",
        ),
        (
            json!({"imageTagMutability": "MUTABLE_WITH_EXCLUSION", "imageTagMutabilityExclusionFilters":
                (0..6).map(|i| json!({"filterType": "WILDCARD", "filter": format!("t{i}")})).collect::<Vec<_>>()}),
            "6 exclusion filters given, at most 5",
        ),
        (json!({"imageTagMutabilty": "IMMUTABLE"}), "unknown field `imageTagMutabilty`"),
    ];
    for (body, expected) in wrong {
        let r = admin(&t, Method::PUT, "repositories/team/app/tag-mutability", Some(body.clone())).await;
        assert_eq!(r.status(), 400, "{body}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["errors"][0]["code"], "INVALID_REQUEST", "{answer}");
        let message = answer["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{body}: {message:?} lacks {expected:?}");
    }
    let after: Value = admin(&t, Method::GET, "repositories/team/app/settings", None).await.json().await.unwrap();
    assert_eq!(after, got);

    // An unknown repository: 404 for both, and none is created.
    let r = admin(&t, Method::GET, "repositories/no/such/settings", None).await;
    assert_eq!(r.status(), 404);
    let r =
        admin(&t, Method::PUT, "repositories/no/such/tag-mutability", Some(json!({"imageTagMutability": "IMMUTABLE"})))
            .await;
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("repository no/such does not exist"));
    let catalog: Value = t.client.get(t.url("/v2/_catalog")).send().await.unwrap().json().await.unwrap();
    assert_eq!(catalog["repositories"], json!(["team/app"]));
    // Other methods are not these endpoints'.
    assert_eq!(admin(&t, Method::DELETE, "repositories/team/app/settings", None).await.status(), 405);
    t.server.stop().await;
}

#[tokio::test]
async fn the_settings_endpoints_are_allowed_by_their_ecr_actions() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let mut config: Config = config_in(dir.path());
    config.auth.enabled = true;
    config.auth.admin_password = Some("admin-password-for-tests".to_owned().into());
    let t = TestServer::start_with(dir, config).await;
    let basic = |user: &str, pw: &str| {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
    };
    let as_admin = basic("admin", "admin-password-for-tests");
    let call = |method: Method, path: &str, auth: Option<&str>, body: Option<Value>| {
        let mut req = t.client.request(method, t.url(&format!("/api/v1/{path}")));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        req.send()
    };
    // Users that may do one of the two, on team/* only.
    for (user, action) in [("reader", "ecr:DescribeRepositories"), ("setter", "ecr:PutImageTagMutability")] {
        let r = call(Method::POST, "users", Some(&as_admin), Some(json!({"name": user, "password": "password-1234"})))
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let policy = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": action,
            "Resource": "arn:aws:ecr:*:*:repository/team/*"}]});
        let r = call(Method::PUT, &format!("users/{user}/policies/main"), Some(&as_admin), Some(policy)).await.unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }
    for repo in ["team/app", "other/app"] {
        let config = b"{}".to_vec();
        let r = t
            .client
            .post(t.url(&format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(&config))))
            .header("authorization", &as_admin)
            .body(config)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{repo}");
    }
    let (reader, setter) = (basic("reader", "password-1234"), basic("setter", "password-1234"));
    let immutable = json!({"imageTagMutability": "IMMUTABLE"});
    let status = |r: reqwest::Response| r.status().as_u16();

    assert_eq!(status(call(Method::GET, "repositories/team/app/settings", None, None).await.unwrap()), 401);
    assert_eq!(status(call(Method::GET, "repositories/team/app/settings", Some(&reader), None).await.unwrap()), 200);
    assert_eq!(status(call(Method::GET, "repositories/other/app/settings", Some(&reader), None).await.unwrap()), 403);
    assert_eq!(status(call(Method::GET, "repositories/team/app/settings", Some(&setter), None).await.unwrap()), 403);
    let put = |auth, repo: &str| {
        call(Method::PUT, &format!("repositories/{repo}/tag-mutability"), auth, Some(immutable.clone()))
    };
    assert_eq!(status(put(Some(&reader), "team/app").await.unwrap()), 403);
    assert_eq!(status(put(Some(&setter), "other/app").await.unwrap()), 403);
    assert_eq!(status(put(None, "team/app").await.unwrap()), 401);
    let r = call(Method::GET, "repositories/team/app/settings", Some(&reader), None).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["imageTagMutability"], "MUTABLE", "no refused PUT changed it");
    assert_eq!(status(put(Some(&setter), "team/app").await.unwrap()), 200);
    let r = call(Method::GET, "repositories/team/app/settings", Some(&reader), None).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["imageTagMutability"], "IMMUTABLE");
    t.server.stop().await;
}

fn berth(dir: &std::path::Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .args(["--data-dir", dir.to_str().unwrap()])
        .env("BERTH_AUTH__ENABLED", "false")
        .env("BERTH_LOG__LEVEL", "warn")
        .env_remove("BERTH_CONFIG")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr_of_failure(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(o.stdout.is_empty(), "{o:?}");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn berth_repository_settings_shows_and_sets_them() {
    let t = TestServer::start().await;
    let dir = t.dir.path();
    let first = pushed(&t, "team/app", "v1", "a").await;

    let set = berth(
        dir,
        &[
            "repository",
            "settings",
            "--repository",
            "team/app",
            "--tag-mutability",
            "IMMUTABLE_WITH_EXCLUSION",
            "--exclude",
            "latest",
            "--exclude",
            "dev-*",
        ],
    );
    assert_eq!(stdout(&set), "repository team/app: tag mutability IMMUTABLE_WITH_EXCLUSION except latest, dev-*\n");
    // The running server holds it at once (it reads the setting with each push).
    assert_eq!(refused(push(&t, "team/app", "v1", "b", &[]).await.0).await, sentence("v1", "team/app"));
    pushed(&t, "team/app", "latest", "a").await;
    pushed(&t, "team/app", "latest", "b").await;
    assert_eq!(tag_digest(&t, "team/app", "v1").await, Some(first));

    let shown = stdout(&berth(dir, &["repository", "settings", "--repository", "team/app"]));
    for line in
        ["repository      team/app", "tag mutability  IMMUTABLE_WITH_EXCLUSION", "exclusions      latest, dev-*"]
    {
        assert!(shown.lines().any(|l| l == line), "{line:?} not in {shown}");
    }
    assert!(shown.contains("encryption      AES256 (key default)"), "{shown}");
    let json: Value =
        serde_json::from_str(&stdout(&berth(dir, &["repository", "settings", "--repository", "team/app", "--json"])))
            .unwrap();
    assert_eq!(json["imageTagMutabilityExclusionFilters"][1], json!({"filterType": "WILDCARD", "filter": "dev-*"}));

    // Errors name the flags.
    let e = stderr_of_failure(&berth(
        dir,
        &["repository", "settings", "--repository", "team/app", "--tag-mutability", "IMMUTABLE", "--exclude", "x"],
    ));
    assert!(e.contains("--tag-mutability IMMUTABLE takes no --exclude"), "{e}");
    let e = stderr_of_failure(&berth(dir, &["repository", "settings", "--repository", "team/app", "--exclude", "x"]));
    assert!(e.contains("--exclude needs --tag-mutability"), "{e}");
    let e = stderr_of_failure(&berth(dir, &["repository", "settings", "--repository", "no/such"]));
    assert!(e.contains("no repository no/such"), "{e}");
    t.server.stop().await;
}

/// Two replicas sharing PostgreSQL: a setting made through one holds on the other at once,
/// and of pushes of different images racing from both to one new immutable tag, one wins
/// (the check runs in PostgreSQL's transaction, not in either process).
#[tokio::test]
#[ignore = "needs PostgreSQL: eval \"$(bash .ci/postgres.sh start)\" (and S3: .ci/s3.sh), then cargo test -- --ignored"]
async fn on_replicas_sharing_postgres_one_push_wins_a_new_immutable_tag() {
    use crate::replicas::{Schema, replica_config};
    let schema = Schema::create().await;
    let blobs = tempfile::tempdir().unwrap();
    let mut rs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let mut config = replica_config(&schema, blobs.path(), &format!("immutability/{}", schema.name));
        config.data_dir = dir.path().to_owned();
        rs.push(TestServer::start_with(dir, config).await);
    }
    let first = pushed(&rs[0], "race/app", "v1", "first").await;
    set(&rs[0], "race/app", "IMMUTABLE", &[]).await;
    assert_eq!(refused(push(&rs[1], "race/app", "v1", "second", &[]).await.0).await, sentence("v1", "race/app"));
    assert_eq!(tag_digest(&rs[1], "race/app", "v1").await, Some(first));

    let seeds: Vec<String> = (0..8).map(|i| format!("racer-{i}")).collect();
    let pushes = seeds.iter().enumerate().map(|(i, seed)| push(&rs[i % 2], "race/app", "release", seed, &[]));
    let mut winners = Vec::new();
    for (r, digest) in futures::future::join_all(pushes).await {
        if r.status() == 201 {
            winners.push(digest);
        } else {
            assert_eq!(refused(r).await, sentence("release", "race/app"));
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    for r in &rs {
        assert_eq!(tag_digest(r, "race/app", "release").await.as_ref(), winners.first());
    }
    for r in rs {
        r.server.stop().await;
    }
    schema.drop().await;
}
