//! Secrets at rest: the data folder, the database and key files are private to Berth's
//! user, and the token signing key is sealed under the key ring, so a copy of the database
//! alone cannot sign tokens.

use std::os::unix::fs::PermissionsExt;

use base64::Engine as _;
use berth_auth::token::SigningKey;
use berth_registry::app::RunningServer;
use berth_registry::config::Config;
use berth_storage::SqliteStore;
use berth_storage::metadata::SigningKeyRecord;
use berth_storage::metadata::prelude::*;
use tokio::net::TcpListener;

use crate::support::*;

const ADMIN_PW: &str = "admin-password-for-secrets";

fn auth_config(dir: &std::path::Path) -> Config {
    let mut c = config_in(dir);
    c.auth.enabled = true;
    c.auth.admin_password = Some(ADMIN_PW.to_owned().into());
    c
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The signing keys as stored (`ensure_signing_key` with a record that loses returns them).
async fn stored_keys(db: &std::path::Path) -> Vec<SigningKeyRecord> {
    let store = SqliteStore::open(db).await.unwrap();
    let probe = SigningKeyRecord { kid: "probe".into(), pkcs8: vec![0], created_at: 0 };
    store.ensure_signing_key(&probe).await.unwrap()
}

/// The `kid` in a token's header.
fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

async fn token(t: &TestServer) -> String {
    let r = t
        .client
        .get(t.url("/token?service=berth&scope=repository:s/a:pull"))
        .basic_auth("admin", Some(ADMIN_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<serde_json::Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
}

/// Before: `metadata.db` was 0644 in a 0755 folder and held the signing key as plain
/// PKCS#8: any local user could read it and mint admin tokens.
#[tokio::test]
async fn data_folder_is_private_and_the_signing_key_is_sealed() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let t = TestServer::start_with(tempfile::tempdir().unwrap(), auth_config(&data)).await;
    let first = token(&t).await;
    t.server.stop().await;
    assert_eq!(mode(&data), 0o700);
    for f in ["metadata.db", "metadata.db-wal", "metadata.db-shm", "admin-password"] {
        let path = data.join(f);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{f}");
        }
    }
    assert_eq!(mode(&data.join("keys")), 0o700);
    let keys = stored_keys(&data.join("metadata.db")).await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kid, kid_of(&first));
    assert!(SigningKey::from_pkcs8_der(&keys[0].pkcs8).is_err(), "the stored key is not usable as it is");

    // A restart opens it: tokens from before still verify.
    let t = TestServer::start_with(tempfile::tempdir().unwrap(), auth_config(&data)).await;
    let r = t.client.get(t.url("/v2/s/a/tags/list")).bearer_auth(&first).send().await.unwrap();
    assert_eq!(r.status(), 404, "the old token verifies (the repository is unknown)");
    t.server.stop().await;

    // Without the key ring the database alone does not sign: the start fails and names the key.
    std::fs::rename(data.join("keys"), root.path().join("keys-elsewhere")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut c = auth_config(&data);
    c.encryption.enabled = false;
    let Err(err) = RunningServer::start(listener, &c).await else { panic!("started without its key ring") };
    let err = err.to_string();
    assert!(err.contains("signing key") && err.contains("default.1"), "{err}");
}

/// A signing key stored unsealed (by an earlier release) is sealed at the next start and
/// keeps signing with the same `kid`.
#[tokio::test]
async fn an_unsealed_signing_key_is_sealed_at_start() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let legacy = SigningKey::generate().unwrap();
    {
        let store = SqliteStore::open(&data.join("metadata.db")).await.unwrap();
        let record = SigningKeyRecord { kid: legacy.kid().into(), pkcs8: legacy.pkcs8_der().to_vec(), created_at: 1 };
        store.ensure_signing_key(&record).await.unwrap();
    }
    let t = TestServer::start_with(tempfile::tempdir().unwrap(), auth_config(&data)).await;
    assert_eq!(kid_of(&token(&t).await), legacy.kid());
    t.server.stop().await;
    let keys = stored_keys(&data.join("metadata.db")).await;
    assert_eq!(keys[0].kid, legacy.kid());
    assert_ne!(keys[0].pkcs8, legacy.pkcs8_der(), "sealed now");
    assert!(SigningKey::from_pkcs8_der(&keys[0].pkcs8).is_err());
}

/// A data folder other users may enter, with data in it, stops the start with the fix; a
/// key file readable by others does too.
#[tokio::test]
async fn open_folders_and_key_files_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let t = TestServer::start_with(tempfile::tempdir().unwrap(), auth_config(&data)).await;
    t.server.stop().await;
    let start = || async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        RunningServer::start(listener, &auth_config(&data)).await.err().map(|e| e.to_string())
    };
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = start().await.expect("refused");
    assert!(err.contains(&format!("chmod 700 {}", data.display())), "{err}");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let key = data.join("keys/default.1.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = start().await.expect("refused");
    assert!(err.contains("chmod 600") && err.contains("default.1.key"), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(start().await.is_none(), "starts once fixed");
}

/// Before: webhook secrets (which sign every delivery, so whoever reads one can forge
/// deliveries its receiver trusts) were stored in the database as given. Now they are sealed;
/// one stored plain by an earlier release is sealed at the next start.
#[tokio::test]
async fn webhook_secrets_are_sealed_at_rest() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let secret = "webhook-secret-0123456789";
    let t = TestServer::start_with(tempfile::tempdir().unwrap(), auth_config(&data)).await;
    let r = t
        .client
        .put(t.url("/api/v1/webhooks/hook"))
        .basic_auth("admin", Some(ADMIN_PW))
        .body(serde_json::json!({"url": "http://127.0.0.1:9/", "secret": secret}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    t.server.stop().await;
    let db = data.join("metadata.db");
    let stored =
        |subs: Vec<berth_storage::metadata::Subscription>| subs.into_iter().find(|s| s.name == "hook").unwrap().secret;
    let sealed = stored(SqliteStore::open(&db).await.unwrap().subscriptions().await.unwrap());
    assert!(sealed.starts_with("sealed:v1:") && !sealed.contains(secret), "{sealed}");

    // As an earlier release stored it: plain. The next start seals it.
    {
        let store = SqliteStore::open(&db).await.unwrap();
        let mut sub = store.subscriptions().await.unwrap().into_iter().find(|s| s.name == "hook").unwrap();
        sub.secret = secret.into();
        store.put_subscription(&sub).await.unwrap();
    }
    let t = TestServer::start_with(tempfile::tempdir().unwrap(), auth_config(&data)).await;
    t.server.stop().await;
    let resealed = stored(SqliteStore::open(&db).await.unwrap().subscriptions().await.unwrap());
    assert!(resealed.starts_with("sealed:v1:") && !resealed.contains(secret), "{resealed}");
}
