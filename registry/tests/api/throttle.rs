//! Sign-in throttling over real sockets: guessing is throttled per address, per user at an
//! address and per user from unknown addresses, without locking a legitimate user out of
//! an address it signed in from; `X-Forwarded-For` counts only from trusted proxies.
//!
//! Many client addresses are simulated with `X-Forwarded-For` through a trusted proxy: the
//! test's own loopback address, configured in `auth.trusted_proxies`.

use std::time::{Duration, Instant};

use base64::Engine as _;
use berth_registry::config::Config;
use serde_json::json;

use crate::support::*;

const ADMIN_PW: &str = "admin-password-for-throttle-tests";

fn config(dir: &std::path::Path, trusted: &[&str]) -> Config {
    let mut c = config_in(dir);
    c.auth.enabled = true;
    c.auth.admin_password = Some(ADMIN_PW.to_owned().into());
    c.auth.trusted_proxies = trusted.iter().map(|t| t.parse().unwrap()).collect();
    c
}

async fn start(trusted: &[&str]) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), trusted);
    TestServer::start_with(dir, c).await
}

fn basic(user: &str, secret: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}")))
}

/// A token request signed in as `user`, seemingly from `from` (`X-Forwarded-For`); the
/// status and the `Retry-After` seconds when there is one.
async fn sign_in(t: &TestServer, user: &str, secret: &str, from: Option<&str>) -> (u16, Option<u64>) {
    let mut req = t.client.get(t.url("/token?service=berth")).header("authorization", basic(user, secret));
    if let Some(ip) = from {
        req = req.header("x-forwarded-for", ip);
    }
    let r = req.send().await.unwrap();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().parse().unwrap());
    (r.status().as_u16(), retry)
}

async fn create_user(t: &TestServer, name: &str, password: &str) {
    let r = t
        .client
        .post(t.url("/api/v1/users"))
        .header("authorization", basic("admin", ADMIN_PW))
        .body(json!({"name": name, "password": password}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
}

async fn metrics(t: &TestServer) -> String {
    t.client.get(t.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

/// The value of one counter line of `/metrics`.
fn counter(metrics: &str, line: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line} in {metrics}"))
}

#[tokio::test]
async fn admin_at_its_known_address_signs_in_while_guessed_from_many() {
    let t = start(&["127.0.0.1"]).await;
    let home = Some("192.0.2.10");
    assert_eq!(sign_in(&t, "admin", ADMIN_PW, home).await.0, 200);
    for i in 0..30 {
        let from = format!("198.51.100.{i}");
        let (status, _) = sign_in(&t, "admin", "guess", Some(&from)).await;
        assert!(status == 401 || status == 429, "guess {i} from {from}: {status}");
    }
    // The real admin, from where it signed in before: not refused.
    assert_eq!(sign_in(&t, "admin", ADMIN_PW, home).await.0, 200);
    // From an address it never used, the name is backing off: guessing stays throttled.
    let (status, retry) = sign_in(&t, "admin", ADMIN_PW, Some("203.0.113.7")).await;
    assert_eq!(status, 429);
    assert!(retry.unwrap() >= 1);
    let m = metrics(&t).await;
    assert!(counter(&m, "berth_auth_throttled_total{reason=\"user\"}") >= 1, "{m}");
    assert!(counter(&m, "berth_auth_backoffs_total{reason=\"user\"}") >= 1, "{m}");
}

#[tokio::test]
async fn failures_of_many_users_at_one_address_do_not_lock_out_another() {
    // No proxy trusted: every request comes from 127.0.0.1, as behind a balancer that
    // Berth does not trust.
    let t = start(&[]).await;
    create_user(&t, "kim", "kim-password-123").await;
    create_user(&t, "lee", "lee-password-123").await;
    assert_eq!(sign_in(&t, "kim", "kim-password-123", None).await.0, 200);
    for user in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"] {
        assert_eq!(sign_in(&t, user, "wrong", None).await.0, 401, "{user}");
    }
    // The address is backing off, but kim signed in here before: she passes at once.
    assert_eq!(sign_in(&t, "kim", "kim-password-123", None).await.0, 200);
    // lee never signed in here: like a guess at a new name, he waits out the back-off
    // (Retry-After, a second at first), then passes.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut waited = 0;
    loop {
        match sign_in(&t, "lee", "lee-password-123", None).await {
            (200, _) => break,
            (429, Some(retry)) if Instant::now() < deadline => {
                waited += 1;
                tokio::time::sleep(Duration::from_secs(retry)).await;
            }
            other => panic!("lee: {other:?}"),
        }
    }
    assert!(waited >= 1, "the address was backing off");
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    // A proxy is trusted, but not the test's loopback: its X-Forwarded-For proves nothing.
    let t = start(&["10.9.9.9"]).await;
    create_user(&t, "carol", "carol-password-123").await;
    assert_eq!(sign_in(&t, "admin", ADMIN_PW, None).await.0, 200);
    for i in 0..10 {
        let from = format!("192.0.2.{i}");
        assert_eq!(sign_in(&t, "bob", "guess", Some(&from)).await.0, 401, "guess {i}");
    }
    // Had the header counted, the guesses would be spread over ten addresses and carol's
    // (claimed) fresh one would be clean: it is the loopback address, backing off.
    assert_eq!(sign_in(&t, "carol", "carol-password-123", Some("198.51.100.77")).await.0, 429);
    // The admin, known at the loopback address, signs in whatever the header claims.
    assert_eq!(sign_in(&t, "admin", ADMIN_PW, Some("192.0.2.200")).await.0, 200);
}
