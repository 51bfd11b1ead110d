//! Lifecycle policies (README "Lifecycle policies"; ARCHITECTURE.md: a preview equals the
//! run): ECR's checks through the admin API, what a run expires and how (events from actor
//! `lifecycle`, index children and referrers with their parent, an image re-tagged since the
//! plan kept), and the bytes gone after the next garbage collection.

use std::collections::BTreeSet;
use std::time::Duration;

use berth_oci::{Digest, RepoName};
use berth_registry::service::gc::GcOptions;
use berth_storage::metadata::unix_now;
use serde_json::{Value, json};

use crate::support::*;

const IMAGE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DAY: i64 = 86_400;

/// A registry where manifest deletion through the OCI API is switched off: lifecycle runs
/// delete anyway (the policy is the operator's).
async fn start() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.delete.manifests = false;
    TestServer::start_tuned(dir, config, &|s| {
        s.gc.grace = Duration::ZERO;
        s.gc.mark_wait = Duration::from_millis(100);
    })
    .await
}

async fn push_blob(t: &TestServer, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let r = t
        .client
        .post(t.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    digest
}

/// Pushes `body` of `media_type` to `reference` (a tag, or None: by its digest); its digest
/// and size.
async fn push(t: &TestServer, repo: &str, reference: Option<&str>, media_type: &str, body: &Value) -> (String, usize) {
    let body = body.to_string();
    let digest = sha256(body.as_bytes());
    let reference = reference.unwrap_or(&digest);
    let r = t
        .client
        .put(t.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("Content-Type", media_type)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    (digest, body.len())
}

/// An image with a config of its own (and `layer`, if given), optionally a referrer of
/// `subject`.
async fn image(
    t: &TestServer,
    repo: &str,
    tag: Option<&str>,
    seed: &str,
    layer: Option<&[u8]>,
    subject: Option<(&str, &str, usize)>,
) -> (String, usize) {
    let config = format!("{{\"seed\":\"{seed}\"}}");
    let config_d = push_blob(t, repo, config.as_bytes()).await;
    let mut layers = vec![];
    if let Some(layer) = layer {
        let d = push_blob(t, repo, layer).await;
        layers.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": layer.len()}));
    }
    let mut body = json!({
        "schemaVersion": 2,
        "mediaType": IMAGE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d, "size": config.len()},
        "layers": layers,
    });
    if let Some((media_type, digest, size)) = subject {
        body["subject"] = json!({"mediaType": media_type, "digest": digest, "size": size});
        body["artifactType"] = json!("application/vnd.example.signature");
    }
    push(t, repo, tag, IMAGE, &body).await
}

async fn index(t: &TestServer, repo: &str, tag: &str, children: &[&(String, usize)]) -> (String, usize) {
    let manifests: Vec<Value> =
        children.iter().map(|(d, n)| json!({"mediaType": IMAGE, "digest": d, "size": n})).collect();
    push(t, repo, Some(tag), INDEX, &json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests})).await
}

/// Sets the last pull time of `digests` to `days_ago` days ago, as the pull recorder does.
async fn pulled(t: &TestServer, repo: &str, digests: &[&str], days_ago: i64) {
    let repo: RepoName = repo.parse().unwrap();
    let pulls: Vec<(RepoName, Digest)> = digests.iter().map(|d| (repo.clone(), d.parse().unwrap())).collect();
    let meta = t.server.app.registry().meta.clone();
    assert_eq!(meta.record_pulls(&pulls, unix_now() - days_ago * DAY).await.unwrap(), digests.len() as u64);
}

async fn send(r: reqwest::RequestBuilder) -> (u16, Value) {
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn put_policy(t: &TestServer, repo: &str, policy: &Value) -> (u16, Value) {
    let body = json!({"lifecyclePolicyText": policy.to_string()});
    send(t.client.put(t.url(&format!("/api/v1/repositories/{repo}/lifecycle-policy"))).json(&body)).await
}

async fn preview(t: &TestServer, repo: &str) -> Value {
    let (status, body) =
        send(t.client.post(t.url(&format!("/api/v1/repositories/{repo}/lifecycle-policy/preview")))).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn run(t: &TestServer, repo: &str) -> Value {
    let (status, body) = send(t.client.post(t.url(&format!("/api/v1/lifecycle/run?repository={repo}")))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["runs"].as_array().unwrap().len(), 1, "{body}");
    body["runs"][0].clone()
}

fn digests(results: &Value) -> BTreeSet<String> {
    results.as_array().unwrap().iter().map(|r| r["imageDigest"].as_str().unwrap().to_owned()).collect()
}

fn message(body: &Value) -> String {
    body["errors"][0]["message"].as_str().unwrap_or_else(|| panic!("no errors[0].message in {body}")).to_owned()
}

fn rule(priority: u32, selection: Value) -> Value {
    json!({"rulePriority": priority, "selection": selection, "action": {"type": "expire"}})
}

fn pulled_more_than(days: u32, status: &str) -> Value {
    json!({"tagStatus": status, "countType": "sinceImagePulled", "countUnit": "days", "countNumber": days})
}

async fn delete_repository(t: &TestServer, repo: &str) {
    let r = t.client.delete(t.url(&format!("/api/v1/repositories?name={repo}&force=true"))).send().await.unwrap();
    assert_eq!(r.status(), 204);
}

/// ECR's checks, with the rule at fault named; put, get, delete in ECR's shapes.
#[tokio::test]
async fn policies_are_checked_stored_and_deleted() {
    let t = start().await;
    let repo = "lc/policies";
    let good = json!({"rules": [rule(1, json!({"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1}))]});
    let (status, body) = put_policy(&t, "lc/none", &good).await;
    assert_eq!((status, message(&body)), (404, "repository lc/none does not exist".into()));
    image(&t, repo, Some("v1"), "policies", None, None).await;

    let bad = [
        (
            json!({"rules": [rule(1, json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1})),
                             rule(2, json!({"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1}))]}),
            "rule 1: tagStatus \"any\" must be in the rule with the highest rulePriority",
        ),
        (
            json!({"rules": [rule(2, json!({"tagStatus": "tagged", "countType": "imageCountMoreThan", "countNumber": 1}))]}),
            "rule 2: tagStatus \"tagged\" needs a tagPrefixList or a tagPatternList",
        ),
        (
            json!({"rules": [rule(3, json!({"tagStatus": "tagged", "tagPatternList": ["a*b*c*d*e*"], "countType": "imageCountMoreThan", "countNumber": 1}))]}),
            "rule 3: tagPatternList entry \"a*b*c*d*e*\" has 5 wildcards",
        ),
        (
            json!({"rules": [rule(4, json!({"tagStatus": "untagged", "countType": "sinceImagePushed", "countNumber": 3}))]}),
            "rule 4: countType \"sinceImagePushed\" needs countUnit \"days\"",
        ),
        (
            json!({"rules": [rule(5, json!({"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 0}))]}),
            "rule 5: countNumber must be a positive integer",
        ),
        (
            json!({"rules": [rule(1, json!({"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1})),
                             rule(1, json!({"tagStatus": "tagged", "tagPrefixList": ["v"], "countType": "imageCountMoreThan", "countNumber": 1}))]}),
            "two rules have rulePriority 1",
        ),
        (json!({"rules": [], "extra": true}), "unknown field `extra`"),
    ];
    for (policy, want) in bad {
        let (status, body) = put_policy(&t, repo, &policy).await;
        assert_eq!(status, 400, "{policy}: {body}");
        assert!(message(&body).contains(want), "{policy}\n  gave {body}\n  want {want}");
    }
    let url = t.url(&format!("/api/v1/repositories/{repo}/lifecycle-policy"));
    let (status, body) = send(t.client.put(&url).json(&json!({"policy": "{}"}))).await;
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("lifecyclePolicyText"), "{body}");
    let (status, body) = send(t.client.get(&url)).await;
    assert_eq!((status, message(&body)), (404, format!("repository {repo} has no lifecycle policy")), "nothing stored");

    let (status, body) = put_policy(&t, repo, &good).await;
    assert_eq!(status, 200, "{body}");
    let want = json!({"repositoryName": repo, "lifecyclePolicyText": good.to_string(), "lastEvaluatedAt": null});
    assert_eq!(body, want);
    assert_eq!(send(t.client.get(&url)).await, (200, want.clone()));
    run(&t, repo).await;
    let (_, body) = send(t.client.get(&url)).await;
    let evaluated = body["lastEvaluatedAt"].as_i64().expect("set by the run");
    assert!((unix_now() - evaluated).abs() < 60, "{body}");
    assert_eq!(send(t.client.delete(&url)).await.0, 200);
    assert_eq!(send(t.client.get(&url)).await.0, 404);
    assert_eq!(send(t.client.delete(&url)).await.0, 404);
    delete_repository(&t, repo).await;
    t.server.stop().await;
}

/// The preview lists what the run then deletes, one for one; the run's deletions write
/// `tag.delete` and `manifest.delete` events from actor `lifecycle`, and the deleted manifests
/// are gone at once (the cache too), although manifest deletion is off for clients.
#[tokio::test]
async fn preview_equals_run() {
    let t = start().await;
    let repo = "lc/run";
    let stale = image(&t, repo, Some("release-1"), "stale", None, None).await;
    let fresh = image(&t, repo, Some("release-2"), "fresh", None, None).await;
    let old_untagged = image(&t, repo, None, "old-untagged", None, None).await;
    let new_untagged = image(&t, repo, None, "new-untagged", None, None).await;
    pulled(&t, repo, &[&stale.0, &old_untagged.0], 40).await;
    pulled(&t, repo, &[&fresh.0, &new_untagged.0], 1).await;
    // Cached before the run: the run must drop it.
    let r = t.client.get(t.url(&format!("/v2/{repo}/manifests/release-1"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = t.client.delete(t.url(&format!("/v2/{repo}/manifests/{}", stale.0))).send().await.unwrap();
    assert_eq!(r.status(), 405, "deletion is off for clients");

    let policy = json!({"rules": [
        rule(1, pulled_more_than(30, "untagged")),
        rule(2, json!({"tagStatus": "tagged", "tagPatternList": ["release-*"], "countType": "sinceImagePulled", "countUnit": "days", "countNumber": 30})),
    ]});
    assert_eq!(put_policy(&t, repo, &policy).await.0, 200);
    let before = preview(&t, repo).await;
    assert_eq!(before["summary"]["expiringImageTotalCount"], 2, "{before}");
    let planned = digests(&before["previewResults"]);
    assert_eq!(planned, BTreeSet::from([stale.0.clone(), old_untagged.0.clone()]));
    let result =
        |d: &str| before["previewResults"].as_array().unwrap().iter().find(|r| r["imageDigest"] == d).unwrap().clone();
    let stale_result = result(&stale.0);
    assert_eq!(stale_result["imageTags"], json!(["release-1"]));
    assert_eq!(stale_result["action"], json!({"type": "EXPIRE"}));
    assert_eq!(
        (stale_result["appliedRulePriority"].as_u64(), stale_result["reason"].as_str()),
        (Some(2), Some("rule 2"))
    );
    assert!(stale_result["lastRecordedPullTime"].as_i64().unwrap() < unix_now() - 39 * DAY, "{stale_result}");
    assert!(stale_result["imagePushedAt"].as_i64().unwrap() > unix_now() - 600, "{stale_result}");
    assert_eq!(result(&old_untagged.0)["appliedRulePriority"], 1);

    // A preview of another policy, given in the request, changes nothing stored.
    let other =
        json!({"rules": [rule(1, json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1}))]});
    let (status, body) = send(
        t.client
            .post(t.url(&format!("/api/v1/repositories/{repo}/lifecycle-policy/preview")))
            .json(&json!({"lifecyclePolicyText": other.to_string()})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"]["expiringImageTotalCount"], 3, "{body}");
    assert_eq!(preview(&t, repo).await, before, "the stored policy and the images are as they were");

    let report = run(&t, repo).await;
    assert_eq!(digests(&report["expired"]), planned, "the run deletes what the preview showed: {report}");
    assert_eq!(report["skipped"], json!([]));
    for (digest, _) in [&stale, &old_untagged] {
        let r = t.client.get(t.url(&format!("/v2/{repo}/manifests/{digest}"))).send().await.unwrap();
        assert_eq!(r.status(), 404, "{digest}");
    }
    let r = t.client.get(t.url(&format!("/v2/{repo}/manifests/release-1"))).send().await.unwrap();
    assert_eq!(r.status(), 404, "the cached tag is gone too");
    for (digest, _) in [&fresh, &new_untagged] {
        let r = t.client.get(t.url(&format!("/v2/{repo}/manifests/{digest}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "{digest}");
    }
    assert_eq!(preview(&t, repo).await["summary"]["expiringImageTotalCount"], 0, "nothing more to expire");

    let (status, body) = send(t.client.get(t.url("/api/v1/events?after=0&limit=1000"))).await;
    assert_eq!(status, 200, "{body}");
    let deletions: Vec<(String, Option<String>, Option<String>)> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["repository"] == repo && matches!(e["kind"].as_str(), Some("tag.delete" | "manifest.delete")))
        .map(|e| {
            assert_eq!(e["origin"]["actor"], "lifecycle", "{e}");
            let s = |k: &str| e[k].as_str().map(str::to_owned);
            (s("kind").unwrap_or_default(), s("tag"), s("digest"))
        })
        .collect();
    assert_eq!(
        deletions,
        [
            ("manifest.delete".to_owned(), None, Some(old_untagged.0.clone())),
            ("tag.delete".to_owned(), Some("release-1".to_owned()), Some(stale.0.clone())),
            ("manifest.delete".to_owned(), None, Some(stale.0.clone())),
        ],
        "{body}"
    );
    delete_repository(&t, repo).await;
    t.server.stop().await;
}

/// A client's pull, once the pull times are flushed, renews an image under
/// `sinceImagePulled`: the preview no longer lists it.
#[tokio::test]
async fn a_pull_renews_an_image() {
    let t = start().await;
    let repo = "lc/pull";
    let (digest, _) = image(&t, repo, Some("v1"), "pull", None, None).await;
    pulled(&t, repo, &[&digest], 45).await;
    let policy = json!({"rules": [rule(1, pulled_more_than(30, "any"))]});
    assert_eq!(put_policy(&t, repo, &policy).await.0, 200);
    assert_eq!(digests(&preview(&t, repo).await["previewResults"]), BTreeSet::from([digest.clone()]));

    let r = t.client.get(t.url(&format!("/v2/{repo}/manifests/v1"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    t.server.app.registry().flush_pull_times().await;
    let after = preview(&t, repo).await;
    assert_eq!(after["summary"]["expiringImageTotalCount"], 0, "{after}");
    assert_eq!(run(&t, repo).await["expired"], json!([]));
    delete_repository(&t, repo).await;
    t.server.stop().await;
}

/// An index's children are no candidates; they go with their index unless tagged or listed by
/// another; referrers go with their subject.
#[tokio::test]
async fn index_children_and_referrers_go_with_their_parent() {
    let t = start().await;
    let repo = "lc/index";
    let amd64 = image(&t, repo, None, "amd64", None, None).await;
    let arm64 = image(&t, repo, None, "arm64", None, None).await;
    let tagged_child = image(&t, repo, Some("v1-s390x"), "s390x", None, None).await;
    let old = index(&t, repo, "v1", &[&amd64, &arm64, &tagged_child]).await;
    let new = index(&t, repo, "v2", &[&arm64]).await;
    let signature = image(&t, repo, None, "signature", None, Some((INDEX, &old.0, old.1))).await;
    let signature_of_new = image(&t, repo, None, "signature-new", None, Some((INDEX, &new.0, new.1))).await;
    pulled(&t, repo, &[&old.0, &amd64.0, &arm64.0, &tagged_child.0, &signature.0, &signature_of_new.0], 90).await;
    pulled(&t, repo, &[&new.0], 1).await;

    let policy = json!({"rules": [rule(1, pulled_more_than(30, "any"))]});
    assert_eq!(put_policy(&t, repo, &policy).await.0, 200);
    let plan = preview(&t, repo).await;
    let reasons: Vec<(String, String, u64)> = plan["previewResults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["imageDigest"].as_str().unwrap().to_owned(),
                r["reason"].as_str().unwrap().to_owned(),
                r["appliedRulePriority"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (old.0.clone(), "rule 1".to_owned(), 1),
            (amd64.0.clone(), format!("child of {}", old.0), 1),
            (signature.0.clone(), format!("referrer of {}", old.0), 1),
        ],
        "arm64 is listed by v2, s390x is tagged, the other signature's subject stays: {plan}"
    );
    let report = run(&t, repo).await;
    assert_eq!(digests(&report["expired"]), digests(&plan["previewResults"]));
    for (digest, _) in [&new, &arm64, &tagged_child, &signature_of_new] {
        let r = t.client.get(t.url(&format!("/v2/{repo}/manifests/{digest}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "{digest} stays");
    }
    let r = t.client.get(t.url(&format!("/v2/{repo}/referrers/{}", old.0))).send().await.unwrap();
    let referrers: Value = r.json().await.unwrap();
    assert_eq!(referrers["manifests"], json!([]), "{referrers}");
    delete_repository(&t, repo).await;
    t.server.stop().await;
}

/// A tag pushed onto a planned image before the run keeps it (and what goes with it); the
/// run counts it as kept.
#[tokio::test]
async fn an_image_retagged_between_plan_and_run_is_kept() {
    let t = start().await;
    let repo = "lc/retag";
    let child = image(&t, repo, None, "retag-child", None, None).await;
    let parent = index(&t, repo, "old", &[&child]).await;
    let loose = image(&t, repo, None, "retag-loose", None, None).await;
    pulled(&t, repo, &[&parent.0, &child.0, &loose.0], 60).await;
    assert_eq!(put_policy(&t, repo, &json!({"rules": [rule(1, pulled_more_than(30, "any"))]})).await.0, 200);

    let registry = t.server.app.registry().clone();
    let name: RepoName = repo.parse().unwrap();
    let plan = registry.preview_lifecycle(&name, None).await.unwrap();
    let planned: BTreeSet<String> = plan.digests().iter().map(|d| d.to_string()).collect();
    assert_eq!(planned, BTreeSet::from([parent.0.clone(), child.0.clone(), loose.0.clone()]));
    // Meanwhile a client tags the index.
    let body = t.client.get(t.url(&format!("/v2/{repo}/manifests/old"))).send().await.unwrap().text().await.unwrap();
    let r = t
        .client
        .put(t.url(&format!("/v2/{repo}/manifests/keep")))
        .header("Content-Type", INDEX)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let report = registry.execute_lifecycle_plan(&name, plan).await.unwrap();
    let expired: Vec<String> = report.expired.iter().map(|e| e.digest.to_string()).collect();
    assert_eq!(expired, std::slice::from_ref(&loose.0));
    let kept: Vec<(String, String)> =
        report.skipped.iter().map(|(e, why)| (e.digest.to_string(), why.clone())).collect();
    assert_eq!(
        kept,
        [
            (parent.0.clone(), "its tags changed since the plan".to_owned()),
            (child.0.clone(), format!("{} was kept", parent.0)),
        ]
    );
    for digest in [&parent.0, &child.0] {
        let r = t.client.get(t.url(&format!("/v2/{repo}/manifests/{digest}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "{digest}");
    }
    delete_repository(&t, repo).await;
    t.server.stop().await;
}

/// After a run and a garbage collection, the expired image's layer is gone from disk; the
/// kept image's stays.
#[tokio::test]
async fn after_a_run_and_a_collection_the_bytes_are_gone() {
    let t = start().await;
    let repo = "lc/bytes";
    let (gone_layer, kept_layer) = (data(40_000, 21), data(30_000, 22));
    let expired = image(&t, repo, Some("old"), "bytes-old", Some(&gone_layer), None).await;
    let kept = image(&t, repo, Some("new"), "bytes-new", Some(&kept_layer), None).await;
    pulled(&t, repo, &[&expired.0], 100).await;
    pulled(&t, repo, &[&kept.0], 0).await;
    let policy = json!({"rules": [rule(1, json!({"tagStatus": "tagged", "tagPrefixList": ["old", "o"], "countType": "sinceImagePulled", "countUnit": "days", "countNumber": 7}))]});
    assert_eq!(put_policy(&t, repo, &policy).await.0, 200);
    assert_eq!(digests(&run(&t, repo).await["expired"]), BTreeSet::from([expired.0.clone()]));

    // Links are kept in whole seconds: let what was just written pass a grace of zero.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let run = t.server.app.registry().collect(&GcOptions::default()).await.unwrap();
    assert!(run.counts.bytes >= gone_layer.len() as u64, "{run:?}");
    let file = |d: &str| {
        let hex = d.trim_start_matches("sha256:");
        t.dir.path().join("blobs/blobs/sha256").join(&hex[..2]).join(hex)
    };
    let sealed = |d: &str| {
        let hex = d.trim_start_matches("sha256:");
        t.dir.path().join("blobs/sealed/sha256").join(&hex[..2]).join(hex)
    };
    let stored = |d: &str| file(d).exists() || std::fs::read_dir(sealed(d)).is_ok_and(|mut e| e.next().is_some());
    let (gone_d, kept_d) = (sha256(&gone_layer), sha256(&kept_layer));
    assert!(!stored(&gone_d), "the expired image's layer is gone");
    assert!(stored(&kept_d), "the kept image's layer stays");
    let r = t.client.get(t.url(&format!("/v2/{repo}/blobs/{kept_d}"))).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &kept_layer[..]);
    delete_repository(&t, repo).await;
    t.server.stop().await;
}

/// `berth lifecycle`: put, preview, run, get, delete against a stopped registry's data.
#[tokio::test]
async fn the_command_line() {
    let t = start().await;
    let repo = "lc/cli";
    let old = image(&t, repo, None, "cli-old", None, None).await;
    pulled(&t, repo, &[&old.0], 50).await;
    let dir = t.dir.path().to_owned();
    let policy_file = dir.join("policy.json");
    std::fs::write(&policy_file, json!({"rules": [rule(1, pulled_more_than(30, "untagged"))]}).to_string()).unwrap();
    let t_dir = t.dir;
    t.server.stop().await;

    let berth = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .env_remove("BERTH_CONFIG")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let policy_arg = policy_file.to_str().unwrap();
    let (ok, out) = berth(&["lifecycle", "put", "--repository", repo, policy_arg]);
    assert!(ok, "{out}");
    let (ok, out) = berth(&["lifecycle", "status"]);
    assert!(ok && out.contains(&format!("{repo}: never run")), "{out}");
    let (ok, out) = berth(&["lifecycle", "preview", "--repository", repo]);
    assert!(
        ok && out.contains(&format!("would expire {} [untagged]", old.0)) && out.contains("1 image(s) would expire"),
        "{out}"
    );
    let (ok, out) = berth(&["lifecycle", "preview", "--repository", repo, "--json"]);
    let preview: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(ok);
    assert_eq!(preview["previewResults"][0]["imageDigest"], old.0);
    let (ok, out) = berth(&["lifecycle", "run"]);
    assert!(ok && out.contains(&format!("{repo}: 1 image(s) expired, 0 kept")), "{out}");
    let (ok, out) = berth(&["lifecycle", "status"]);
    assert!(ok && out.contains(&format!("{repo}: last run ")) && out.contains(": 1 image(s) expired, 0 kept"), "{out}");
    let (ok, out) = berth(&["lifecycle", "get", "--repository", repo, "--json"]);
    assert!(ok && out.contains("\"lastEvaluatedAt\": 1"), "{out}");
    let (ok, out) = berth(&["lifecycle", "delete", "--repository", repo]);
    assert!(ok, "{out}");
    let (ok, out) = berth(&["lifecycle", "get", "--repository", repo]);
    assert!(!ok && out.contains(&format!("repository {repo} has no lifecycle policy")), "{out}");
    let (ok, out) = berth(&["lifecycle", "put", "--repository", repo, "/nonexistent/policy.json"]);
    assert!(!ok && out.contains("reading the policy /nonexistent/policy.json"), "{out}");
    drop(t_dir);
}

/// With authentication on, each endpoint is its ECR action on the repository (a run is
/// `berth:RunLifecyclePolicy`, on the registry when it covers every repository).
#[tokio::test]
async fn each_endpoint_is_its_ecr_action() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.auth.enabled = true;
    config.auth.admin_password = Some("admin-password-for-tests".to_owned().into());
    let t = TestServer::start_with(dir, config).await;
    let basic = |user: &str, password: &str| {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    };
    let admin = basic("admin", "admin-password-for-tests");
    let reader = basic("reader", "reader-password-1");
    let repo = "lc/auth";
    let meta = t.server.app.registry().meta.clone();
    let new = berth_storage::metadata::NewRepository::with_key(None);
    meta.create_repository(&repo.parse().unwrap(), &new, &Default::default()).await.unwrap();
    let r = t
        .client
        .post(t.url("/api/v1/users"))
        .header("authorization", &admin)
        .json(&json!({"name": "reader", "password": "reader-password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let arn = |name: &str| format!("arn:aws:ecr:*:*:repository/{name}");
    let policy = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": ["ecr:GetLifecyclePolicy", "ecr:StartLifecyclePolicyPreview", "berth:RunLifecyclePolicy"],
        "Resource": arn(repo)}]});
    let r = t
        .client
        .put(t.url("/api/v1/users/reader/policies/lifecycle"))
        .header("authorization", &admin)
        .body(policy.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);

    let url = t.url(&format!("/api/v1/repositories/{repo}/lifecycle-policy"));
    let text = json!({"rules": [rule(1, pulled_more_than(30, "untagged"))]}).to_string();
    let body = json!({"lifecyclePolicyText": text});
    let (status, answer) = send(t.client.put(&url).header("authorization", &reader).json(&body)).await;
    assert_eq!(status, 403, "{answer}");
    assert!(message(&answer).contains("ecr:PutLifecyclePolicy"), "{answer}");
    assert_eq!(send(t.client.put(&url).json(&body)).await.0, 401, "no credentials");
    assert_eq!(send(t.client.put(&url).header("authorization", &admin).json(&body)).await.0, 200);
    assert_eq!(send(t.client.get(&url).header("authorization", &reader)).await.0, 200);
    let preview = t.url(&format!("/api/v1/repositories/{repo}/lifecycle-policy/preview"));
    assert_eq!(send(t.client.post(&preview).header("authorization", &reader)).await.0, 200);
    let run_one = t.url(&format!("/api/v1/lifecycle/run?repository={repo}"));
    assert_eq!(send(t.client.post(&run_one).header("authorization", &reader)).await.0, 200);
    let (status, answer) = send(t.client.post(t.url("/api/v1/lifecycle/run")).header("authorization", &reader)).await;
    assert_eq!(status, 403, "every repository is the registry's: {answer}");
    let (status, answer) = send(t.client.delete(&url).header("authorization", &reader)).await;
    assert_eq!(status, 403, "{answer}");
    assert!(message(&answer).contains("ecr:DeleteLifecyclePolicy"), "{answer}");
    assert_eq!(send(t.client.delete(&url).header("authorization", &admin)).await.0, 200);
    t.server.stop().await;
}

/// The schedule (`lifecycle.interval`) runs every repository's policy by itself, as actor
/// `lifecycle`, and runs again: an image that becomes expirable after a run goes at a later one.
#[tokio::test]
async fn the_schedule_runs_every_policy_by_itself() {
    let t = start().await;
    let (a, b) = ("lc/scheduled-a", "lc/scheduled-b");
    let policy = json!({"rules": [rule(1, pulled_more_than(30, "untagged"))]});
    let old_a = image(&t, a, None, "sched-a-old", None, None).await;
    let new_a = image(&t, a, None, "sched-a-new", None, None).await;
    let old_b = image(&t, b, None, "sched-b-old", None, None).await;
    let new_b = image(&t, b, None, "sched-b-new", None, None).await;
    pulled(&t, a, &[&old_a.0], 40).await;
    pulled(&t, b, &[&old_b.0], 40).await;
    assert_eq!(put_policy(&t, a, &policy).await.0, 200);
    assert_eq!(put_policy(&t, b, &policy).await.0, 200);

    let meta = t.server.app.registry().meta.clone();
    let images = |repo: &'static str| {
        let meta = meta.clone();
        async move {
            let list = meta.list_images(&repo.parse().unwrap()).await.unwrap().unwrap();
            list.into_iter().map(|i| i.digest.to_string()).collect::<BTreeSet<_>>()
        }
    };
    let config = berth_registry::config::LifecycleConfig { interval: Duration::from_millis(200) };
    let schedule = t.server.app.spawn_lifecycle(&config).expect("a nonzero interval schedules runs");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while images(a).await.len() > 1 || images(b).await.len() > 1 {
        assert!(std::time::Instant::now() < deadline, "no scheduled run expired the stale images in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(images(a).await, BTreeSet::from([new_a.0.clone()]));
    assert_eq!(images(b).await, BTreeSet::from([new_b.0.clone()]));

    // The kept image turns stale: a later scheduled run takes it, untouched by anyone else.
    pulled(&t, a, &[&new_a.0], 40).await;
    while !images(a).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no later scheduled run took the image that turned stale");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    schedule.abort();
    assert_eq!(images(b).await, BTreeSet::from([new_b.0.clone()]));

    let deletes: Vec<_> =
        meta.events(0, 1000).await.unwrap().into_iter().filter(|e| e.kind.as_str() == "manifest.delete").collect();
    assert_eq!(deletes.len(), 3, "{deletes:?}");
    assert!(deletes.iter().all(|e| e.origin.actor.as_deref() == Some("lifecycle")), "{deletes:?}");
}
