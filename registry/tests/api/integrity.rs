//! Stored bytes that are not what their digest says: never served whole, counted in
//! `/metrics`, and found by `berth scrub` (and the scheduled scrub), which changes nothing.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use berth_registry::config::Config;

use crate::support::*;

/// Plaintext with whole reads hashed (`storage.verify_reads`; by default plaintext is served
/// as stored: `zerocopy.rs`).
fn plaintext_config(dir: &Path) -> Config {
    let mut c = config_in(dir);
    c.encryption.enabled = false;
    c.storage.verify_reads = true;
    c.scrub.interval = Duration::ZERO;
    c
}

async fn push(t: &TestServer, repo: &str, blob: &[u8]) -> String {
    let digest = sha256(blob);
    let url = t.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"));
    let r = t.client.post(url).body(blob.to_vec()).send().await.unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    digest
}

fn plain_object(dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    dir.join("blobs").join("blobs").join("sha256").join(&hex[..2]).join(hex)
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

/// A GET of `digest` as a client sees it: the status, and the body if it arrived whole.
async fn get(t: &TestServer, repo: &str, digest: &str, range: Option<&str>) -> (u16, Option<Vec<u8>>) {
    let mut req = t.client.get(t.url(&format!("/v2/{repo}/blobs/{digest}")));
    if let Some(r) = range {
        req = req.header("Range", r);
    }
    let Ok(r) = req.send().await else { return (0, None) };
    let status = r.status().as_u16();
    (status, r.bytes().await.ok().map(|b| b.to_vec()))
}

/// What a client that checks digests concludes: the read must not end with the whole body
/// of the blob, and whatever did arrive must not pass the digest check.
async fn assert_not_served(t: &TestServer, repo: &str, digest: &str, size: usize, range: Option<&str>) {
    let (status, body) = get(t, repo, digest, range).await;
    if status == 500 || status == 0 {
        return;
    }
    assert!(status == 200 || status == 206, "status {status}");
    if let Some(body) = body {
        assert!(body.len() < size, "a damaged blob was served whole ({} bytes)", body.len());
        assert_ne!(sha256(&body), digest);
    }
}

async fn metric(t: &TestServer, line_start: &str) -> u64 {
    let text = t.client.get(t.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with(line_start)).unwrap_or_else(|| panic!("no {line_start} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// `berth scrub` on the test server's stores (it runs while the server does, as an
/// operator would run it).
fn scrub(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("scrub")
        .args(["--data-dir", dir.to_str().unwrap()])
        .args(args)
        .env("BERTH_AUTH__ENABLED", "false")
        .env("BERTH_ENCRYPTION__ENABLED", "false")
        .env("BERTH_LOG__LEVEL", "warn")
        .env_remove("BERTH_CONFIG")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn a_flipped_byte_in_a_plaintext_blob_is_never_served_and_the_scrub_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let t = TestServer::start_with(dir, plaintext_config(&root)).await;
    let big = data(3 * 1024 * 1024 + 123, 1);
    let small = data(5000, 2);
    let other = data(70_000, 3);
    let d_big = push(&t, "plain/a", &big).await;
    let d_small = push(&t, "plain/a", &small).await;
    push(&t, "plain/b", &big).await;
    let d_other = push(&t, "plain/b", &other).await;

    // Undamaged: served whole, and the scrub finds nothing.
    assert_eq!(get(&t, "plain/a", &d_big, None).await, (200, Some(big.clone())));
    let clean = scrub(&root, &[]);
    assert!(clean.status.success(), "{clean:?}");
    assert!(stdout(&clean).contains("3 objects"), "{}", stdout(&clean));

    // One flipped byte in the middle of the big blob, one in the small one.
    let (p_big, p_small) = (plain_object(&root, &d_big), plain_object(&root, &d_small));
    flip(&p_big, big.len() / 2);
    flip(&p_small, 10);
    assert_eq!(metric(&t, "berth_blob_integrity_failures_total{source=\"read\"}").await, 0);
    assert_not_served(&t, "plain/a", &d_big, big.len(), None).await;
    assert_not_served(&t, "plain/b", &d_big, big.len(), None).await;
    // A range asking for the whole blob is a whole read, and checked.
    assert_not_served(&t, "plain/a", &d_big, big.len(), Some("bytes=0-")).await;
    // A blob of one piece fails before the answer starts.
    assert_eq!(get(&t, "plain/a", &d_small, None).await.0, 500);
    assert_eq!(metric(&t, "berth_blob_integrity_failures_total{source=\"read\"}").await, 4);
    // A partial range is served as stored, unchecked (documented: the scrub finds it).
    let (status, body) = get(&t, "plain/a", &d_big, Some("bytes=0-99")).await;
    assert_eq!((status, body.as_deref()), (206, Some(&big[..100])));
    // Undamaged blobs are untouched by all this.
    assert_eq!(get(&t, "plain/b", &d_other, None).await, (200, Some(other.clone())));

    // The scrub names both, with the repositories linking them and the file; exit status 2.
    let damaged = scrub(&root, &[]);
    assert_eq!(damaged.status.code(), Some(2), "{damaged:?}");
    let text = stdout(&damaged);
    assert!(text.contains(&format!("DAMAGED {d_big} (plaintext): content hashes to sha256:")), "{text}");
    assert!(text.contains(&format!("DAMAGED {d_small}")), "{text}");
    assert!(text.contains("linked by: plain/a, plain/b"), "{text}");
    assert!(text.contains(&p_big.display().to_string()), "{text}");
    assert!(!text.contains(&d_other), "{text}");
    let json = scrub(&root, &["--json", "--repository", "plain/b"]);
    assert_eq!(json.status.code(), Some(2), "{json:?}");
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["objects"], 2);
    let found = report["damaged"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{report}");
    assert_eq!(found[0]["digest"], d_big);
    assert_eq!(found[0]["repositories"], serde_json::json!(["plain/b"]));
    assert_eq!(found[0]["problem"]["kind"], "content");
    // The scrub changed nothing: the damage is still there, for an operator to look at.
    assert_ne!(sha256(&std::fs::read(&p_big).unwrap()), d_big);

    // A truncated object: a size problem.
    let mut bytes = std::fs::read(&p_small).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&p_small, &bytes[..4000]).unwrap();
    let text = stdout(&scrub(&root, &["--repository", "plain/a"]));
    assert!(text.contains("4000 bytes stored, 5000 recorded"), "{text}");
    assert_not_served(&t, "plain/a", &d_small, small.len(), None).await;

    // Repaired by the operator: served again, the scrub exits 0.
    std::fs::write(&p_big, &big).unwrap();
    std::fs::write(&p_small, &small).unwrap();
    assert_eq!(get(&t, "plain/a", &d_big, None).await, (200, Some(big.clone())));
    let clean = scrub(&root, &["--rate", "100MiB"]);
    assert!(clean.status.success(), "{clean:?}");
    assert!(!scrub(&root, &["--repository", "no/such"]).status.success());
    t.server.stop().await;
}

#[tokio::test]
async fn the_scheduled_scrub_counts_damage_in_metrics_and_opens_sealed_copies() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let mut config = config_in(&root);
    config.scrub.interval = Duration::from_millis(200);
    let t = TestServer::start_with(dir, config).await;
    // Encrypted (the default): a sealed copy, opened by the scrub as a pull opens it.
    let blob = data(200_000, 4);
    let digest = push(&t, "sealed/a", &blob).await;
    let hex = digest.trim_start_matches("sha256:");
    let folder = root.join("blobs").join("sealed").join("sha256").join(&hex[..2]).join(hex);
    let object = std::fs::read_dir(&folder).unwrap().next().unwrap().unwrap().path();
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&t, "berth_scrubs_completed_total").await == 0 {
        assert!(Instant::now() < deadline, "no scrub completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&t, "berth_blob_integrity_failures_total{source=\"scrub\"}").await, 0);

    flip(&object, 100);
    while metric(&t, "berth_blob_integrity_failures_total{source=\"scrub\"}").await == 0 {
        assert!(Instant::now() < deadline, "the scheduled scrub did not count the damage");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let completed = metric(&t, "berth_scrubs_completed_total").await;
    while metric(&t, "berth_scrubs_completed_total").await == completed {
        assert!(Instant::now() < deadline, "no scrub completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&t, "berth_scrub_damaged_objects").await, 1);

    // The command sees it too (it needs the key ring of the data folder, as serve does).
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["scrub", "--json", "--data-dir", root.to_str().unwrap()])
        .env("BERTH_AUTH__ENABLED", "false")
        .env("BERTH_LOG__LEVEL", "warn")
        .env_remove("BERTH_CONFIG")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let found = &report["damaged"][0];
    assert_eq!(found["digest"], digest);
    assert_eq!(found["copy"], "sealed for key default");
    assert_eq!(found["problem"]["kind"], "sealed");
    assert_eq!(found["object"], object.display().to_string());
    t.server.stop().await;
}
