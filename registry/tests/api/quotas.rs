//! Usage and quotas through the registry: where a push past a quota is refused (before its
//! bytes are stored where the size is known), what the refusal says, prefix quotas, the
//! admin API (and which of it and the configuration wins), the warning event once per
//! crossing, and the round trip: full, refused, delete, accepted again.

use std::path::Path;

use berth_registry::config::{Config, QuotaRule, QuotasConfig};
use serde_json::Value;

use crate::support::*;

fn with_quotas(dir: &Path, warning: u8, limits: Vec<QuotaRule>) -> Config {
    Config { quotas: QuotasConfig { warning, limits }, ..config_in(dir) }
}

fn rule(scope: &str, bytes: Option<u64>, images: Option<u64>) -> QuotaRule {
    QuotaRule { scope: scope.into(), bytes, images }
}

async fn start(warning: u8, limits: Vec<QuotaRule>) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let config = with_quotas(dir.path(), warning, limits);
    TestServer::start_with(dir, config).await
}

/// Every file under the data folder but the database's: what blob and upload bytes are stored.
fn stored_files(dir: &Path) -> usize {
    fn walk(at: &Path, n: &mut usize) {
        for entry in std::fs::read_dir(at).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, n);
            } else if !entry.file_name().to_string_lossy().starts_with("metadata.db") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(dir, &mut n);
    n
}

async fn monolithic(t: &TestServer, repo: &str, body: &[u8]) -> reqwest::Response {
    let digest = sha256(body);
    t.client
        .post(t.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

/// A refusal: 403 in the spec's error format, code DENIED; returns the message.
async fn denied(r: reqwest::Response) -> String {
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "DENIED", "{body}");
    body["errors"][0]["message"].as_str().unwrap().to_owned()
}

async fn get_json(t: &TestServer, path: &str) -> Value {
    let r = t.client.get(t.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

async fn image_manifest(t: &TestServer, repo: &str, reference: &str, layers: &[&[u8]]) -> reqwest::Response {
    let config = format!("{{\"repo\":\"{repo}\",\"reference\":\"{reference}\"}}").into_bytes();
    assert!(monolithic(t, repo, &config).await.status().is_success());
    let layers: Vec<Value> = layers
        .iter()
        .map(|l| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(l), "size": l.len()})
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": layers,
    });
    t.client
        .put(t.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_monolithic_push_past_a_byte_quota_is_refused_before_its_bytes_are_stored() {
    let t = start(0, vec![rule("team/app", Some(1000), None)]).await;
    let first = data(600, 1);
    assert_eq!(monolithic(&t, "team/app", &first).await.status(), 201);

    let files = stored_files(t.dir.path());
    let message = denied(monolithic(&t, "team/app", &data(500, 2)).await).await;
    for part in ["repository team/app", "1000 bytes", "600 bytes", "500 bytes", "raise the quota"] {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    assert_eq!(stored_files(t.dir.path()), files, "nothing of the refused blob was stored");
    let r = t.client.head(t.url(&format!("/v2/team/app/blobs/{}", sha256(&data(500, 2))))).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // What the repository links already adds nothing: pushed again at any use.
    assert_eq!(monolithic(&t, "team/app", &first).await.status(), 201);
    // Up to the limit exactly is allowed; another repository has no quota.
    assert_eq!(monolithic(&t, "team/app", &data(400, 3)).await.status(), 201);
    assert_eq!(monolithic(&t, "other/app", &data(5000, 4)).await.status(), 201);
    // A mount adds its blob's bytes too: refused when they do not fit.
    let big = sha256(&data(5000, 4));
    let r =
        t.client.post(t.url(&format!("/v2/team/app/blobs/uploads/?mount={big}&from=other/app"))).send().await.unwrap();
    assert!(denied(r).await.contains("5000 bytes"));
    let usage = get_json(&t, "/api/v1/usage/team/app").await;
    assert_eq!((usage["bytes"].as_u64(), usage["blobs"].as_u64()), (Some(1000), Some(2)), "{usage}");
    assert_eq!(usage["quotas"][0]["scope"], "team/app");
    assert_eq!(
        (usage["quotas"][0]["max_bytes"].as_u64(), usage["quotas"][0]["used_bytes"].as_u64()),
        (Some(1000), Some(1000))
    );
    t.server.stop().await;
}

#[tokio::test]
async fn a_chunked_upload_past_a_quota_is_refused_at_commit_and_its_data_discarded() {
    let t = start(0, vec![rule("team/*", Some(1000), None)]).await;
    assert_eq!(monolithic(&t, "team/a", &data(700, 1)).await.status(), 201);
    let files = stored_files(t.dir.path());

    let blob = data(400, 2);
    let location = t.start_upload("team/b").await;
    let r = t.client.patch(&location).body(blob[..300].to_vec()).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let r =
        t.client.put(format!("{location}?digest={}", sha256(&blob))).body(blob[300..].to_vec()).send().await.unwrap();
    let message = denied(r).await;
    for part in ["team/* (its repositories together)", "1000 bytes", "700 bytes", "400 bytes"] {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    assert_eq!(t.client.get(&location).send().await.unwrap().status(), 404, "the session is gone");
    assert_eq!(stored_files(t.dir.path()), files, "and its staged data with it");

    // A chunked push that fits goes through.
    let small = data(300, 3);
    let location = t.start_upload("team/b").await;
    let r = t.client.put(format!("{location}?digest={}", sha256(&small))).body(small).send().await.unwrap();
    assert_eq!(r.status(), 201);
    t.server.stop().await;
}

#[tokio::test]
async fn a_manifest_past_an_image_quota_is_refused_and_a_known_one_is_not() {
    let t = start(0, vec![rule("team/*", None, Some(2))]).await;
    assert_eq!(image_manifest(&t, "team/x", "v1", &[]).await.status(), 201);
    assert_eq!(image_manifest(&t, "team/y", "v1", &[]).await.status(), 201);
    let message = denied(image_manifest(&t, "team/x", "v2", &[]).await).await;
    for part in ["team/*", "allows 2 images", "2 are in use", "adds 1"] {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    // The same manifest again (another tag) is no new image.
    assert_eq!(image_manifest(&t, "team/x", "v1", &[]).await.status(), 201);
    assert_eq!(image_manifest(&t, "elsewhere/x", "v2", &[]).await.status(), 201);
    t.server.stop().await;
}

/// Full, refused; images and their blobs deleted; the same push accepted. (Before the
/// garbage collector, deleting a blob's link is what brings bytes down.)
#[tokio::test]
async fn deleting_images_brings_usage_down_and_the_push_is_accepted_again() {
    let t = start(0, vec![rule("rt/app", Some(2000), Some(1))]).await;
    let (layer, next) = (data(1500, 1), data(900, 2));
    assert_eq!(monolithic(&t, "rt/app", &layer).await.status(), 201);
    assert_eq!(image_manifest(&t, "rt/app", "v1", &[&layer]).await.status(), 201);
    let full = get_json(&t, "/api/v1/usage/rt/app").await;
    assert_eq!((full["manifests"].as_u64(), full["tags"].as_u64()), (Some(1), Some(1)), "{full}");
    let used = full["bytes"].as_u64().unwrap();
    assert!(used > 1500, "{full}");

    denied(monolithic(&t, "rt/app", &next).await).await;
    denied(image_manifest(&t, "rt/app", "v2", &[]).await).await;

    let manifest = t
        .client
        .get(t.url("/v2/rt/app/manifests/v1"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    let digest = manifest.headers()["docker-content-digest"].to_str().unwrap().to_owned();
    let body: Value = manifest.json().await.unwrap();
    assert_eq!(t.client.delete(t.url(&format!("/v2/rt/app/manifests/{digest}"))).send().await.unwrap().status(), 202);
    // The refused manifest's config blob went in before it (and fit).
    let refused_config = sha256(b"{\"repo\":\"rt/app\",\"reference\":\"v2\"}");
    for blob in
        [body["config"]["digest"].as_str().unwrap(), body["layers"][0]["digest"].as_str().unwrap(), &refused_config]
    {
        assert_eq!(t.client.delete(t.url(&format!("/v2/rt/app/blobs/{blob}"))).send().await.unwrap().status(), 202);
    }
    let empty = get_json(&t, "/api/v1/usage/rt/app").await;
    assert_eq!(
        (empty["bytes"].as_u64(), empty["blobs"].as_u64(), empty["manifests"].as_u64(), empty["tags"].as_u64()),
        (Some(0), Some(0), Some(0), Some(0)),
        "{empty}"
    );

    assert_eq!(monolithic(&t, "rt/app", &next).await.status(), 201);
    assert_eq!(image_manifest(&t, "rt/app", "v2", &[&next]).await.status(), 201);
    t.server.stop().await;
}

#[tokio::test]
async fn quotas_set_through_the_api_win_over_the_configuration_and_fall_back_when_deleted() {
    let t = start(0, vec![rule("api/*", Some(10), None)]).await;
    denied(monolithic(&t, "api/app", &data(100, 1)).await).await;

    let r = t
        .client
        .put(t.url("/api/v1/quotas/api/*"))
        .json(&serde_json::json!({"max_bytes": "1KiB"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let set: Value = r.json().await.unwrap();
    assert_eq!(
        (set["scope"].as_str(), set["source"].as_str(), set["max_bytes"].as_u64()),
        (Some("api/*"), Some("api"), Some(1024))
    );
    assert_eq!(set["overrides_config"], true);
    assert_eq!(monolithic(&t, "api/app", &data(100, 1)).await.status(), 201, "the API's quota applies");
    let r = t
        .client
        .put(t.url("/api/v1/quotas/api/*"))
        .json(&serde_json::json!({"max_bytes": 2048, "max_images": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "replaced");

    let list = get_json(&t, "/api/v1/quotas").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "one quota in effect per scope: {list}");
    assert_eq!((list[0]["used_bytes"].as_u64(), list[0]["max_images"].as_u64()), (Some(100), Some(5)));

    assert_eq!(t.client.delete(t.url("/api/v1/quotas/api/*")).send().await.unwrap().status(), 204);
    let list = get_json(&t, "/api/v1/quotas").await;
    assert_eq!((list[0]["source"].as_str(), list[0]["max_bytes"].as_u64()), (Some("config"), Some(10)), "{list}");
    denied(monolithic(&t, "api/app", &data(100, 2)).await).await;
    let r = t.client.delete(t.url("/api/v1/quotas/api/*")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("quotas.limits"), "{body}");

    // Bad requests say what is wrong.
    for (path, body, says) in [
        ("/api/v1/quotas/api*", serde_json::json!({"max_bytes": 1}), "team-a/*"),
        ("/api/v1/quotas/x", serde_json::json!({}), "must limit something"),
        ("/api/v1/quotas/x", serde_json::json!({"max_bytes": "lots"}), "10GiB"),
    ] {
        let r = t.client.put(t.url(path)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path} {body}");
        let text = r.text().await.unwrap();
        assert!(text.contains(says), "{path} {body}: {text}");
    }
    t.server.stop().await;
}

#[tokio::test]
async fn usage_reports_totals_keys_and_the_dedupe_ratio_and_metrics_show_them() {
    let t = start(0, vec![rule("*", Some(1 << 30), None)]).await;
    let shared = data(1000, 1);
    for repo in ["u/a", "u/b", "u/c"] {
        assert_eq!(monolithic(&t, repo, &shared).await.status(), 201);
    }
    assert_eq!(monolithic(&t, "u/a", &data(500, 2)).await.status(), 201);
    let u = get_json(&t, "/api/v1/usage").await;
    assert_eq!(
        (u["repositories"].as_u64(), u["bytes"].as_u64(), u["stored_bytes"].as_u64()),
        (Some(3), Some(3500), Some(1500)),
        "{u}"
    );
    assert_eq!(u["dedupe_ratio"].as_f64(), Some(3500.0 / 1500.0));
    // Encryption is on by default: every blob is sealed for the default key.
    assert_eq!((u["keys"][0]["key"].as_str(), u["keys"][0]["bytes"].as_u64()), (Some("default"), Some(1500)), "{u}");
    let names: Vec<&str> =
        u["repositories_page"].as_array().unwrap().iter().map(|r| r["repository"].as_str().unwrap()).collect();
    assert_eq!(names, ["u/a", "u/b", "u/c"]);
    let page = get_json(&t, "/api/v1/usage?n=2").await;
    assert_eq!(page["next"], "u/b");
    let rest = get_json(&t, "/api/v1/usage?n=2&last=u/b").await;
    assert_eq!(rest["repositories_page"][0]["repository"], "u/c");
    let r = t.client.get(t.url("/api/v1/usage/u/none")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    let metrics = t.client.get(t.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for line in [
        "berth_usage_bytes 3500",
        "berth_stored_bytes 1500",
        "berth_repositories 3",
        "berth_key_bytes{key=\"default\"} 1500",
        "berth_quota_limit{scope=\"*\",dimension=\"bytes\"} 1073741824",
        "berth_quota_used{scope=\"*\",dimension=\"bytes\"} 3500",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line:?} not in:\n{metrics}");
    }
    assert!(!metrics.contains("u/a"), "no series per repository");
    t.server.stop().await;
}

async fn warnings(t: &TestServer) -> Vec<Value> {
    let events = get_json(t, "/api/v1/events?after=0&limit=1000").await;
    events["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "quota.warning").cloned().collect()
}

#[tokio::test]
async fn a_warning_is_one_event_per_crossing_of_the_threshold() {
    let t = start(50, vec![rule("w/*", Some(1000), None)]).await;
    let (a, b, c) = (data(400, 1), data(200, 2), data(100, 3));
    assert_eq!(monolithic(&t, "w/app", &a).await.status(), 201);
    assert!(warnings(&t).await.is_empty(), "40 % is below the threshold");
    assert_eq!(monolithic(&t, "w/app", &b).await.status(), 201);
    let raised = warnings(&t).await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    let quota = &raised[0]["quota"];
    assert_eq!(raised[0]["repository"], "w/app");
    assert_eq!((quota["scope"].as_str(), quota["dimension"].as_str()), (Some("w/*"), Some("bytes")));
    assert_eq!(
        (quota["limit"].as_u64(), quota["used"].as_u64(), quota["threshold"].as_u64()),
        (Some(1000), Some(600), Some(50))
    );
    assert_eq!(monolithic(&t, "w/other", &c).await.status(), 201);
    assert_eq!(warnings(&t).await.len(), 1, "still past the threshold: no second warning");

    // Below again (a blob deleted; seen at the next push), then past it again: a new warning.
    let delete = |d: &[u8]| t.client.delete(t.url(&format!("/v2/w/app/blobs/{}", sha256(d)))).send();
    assert_eq!(delete(&b).await.unwrap().status(), 202);
    assert_eq!(delete(&a).await.unwrap().status(), 202);
    assert_eq!(monolithic(&t, "w/app", &data(10, 4)).await.status(), 201);
    assert_eq!(warnings(&t).await.len(), 1);
    assert_eq!(monolithic(&t, "w/app", &a).await.status(), 201);
    assert_eq!(warnings(&t).await.len(), 2, "a second crossing, a second warning");
    t.server.stop().await;
}
