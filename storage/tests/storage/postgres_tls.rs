//! TLS to PostgreSQL, against the server `.ci/postgres.sh start` runs with `ssl = on`: a
//! certificate for localhost and 127.0.0.1 signed by the CA at `BERTH_TEST_POSTGRES_CA`, and a
//! client certificate for the role `berth_cert` (`BERTH_TEST_POSTGRES_CLIENT_CERT`/`_KEY`).
//! Each `sslmode` is checked on the connection itself (`pg_stat_ssl`), through the connector the
//! store's pool and listener use.

use std::time::{Duration, Instant};

use berth_storage::PostgresStore;
use berth_storage::metadata::Change;
use berth_storage::metadata::postgres_tls::PgTls;
use berth_storage::metadata::postgres_url;
use berth_storage::metadata::prelude::*;

const NEEDS: &str = "BERTH_TEST_POSTGRES_URL and BERTH_TEST_POSTGRES_CA (eval \"$(bash .ci/postgres.sh start)\")";

/// The test server's URL (no query) and its CA file.
fn server() -> (String, String) {
    (std::env::var("BERTH_TEST_POSTGRES_URL").expect(NEEDS), std::env::var("BERTH_TEST_POSTGRES_CA").expect(NEEDS))
}

fn with_query(url: &str, query: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{query}")
}

/// A connection made as the store makes its own (the URL's TLS settings, the same connector),
/// and whether it is encrypted, as the server sees it.
async fn connect(url: &str) -> Result<(tokio_postgres::Client, bool), String> {
    let settings = postgres_url::parse(url).map_err(|e| e.to_string())?;
    let tls = PgTls::new(&settings.tls).map_err(|e| e.to_string())?;
    let (client, connection) =
        settings.config.connect(tls).await.map_err(|e| berth_storage::Error::from(e).to_string())?;
    tokio::spawn(connection);
    let ssl: bool = client
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    Ok((client, ssl))
}

#[tokio::test]
#[ignore = "needs PostgreSQL: eval \"$(bash .ci/postgres.sh start)\""]
async fn postgres_sslmodes_encrypt_as_asked() {
    let (url, ca) = server();
    let localhost = url.replacen("@127.0.0.1:", "@localhost:", 1);
    for (url, encrypted) in [
        (with_query(&url, "sslmode=disable"), false),
        (url.clone(), true), // prefer, libpq's default
        (with_query(&url, "sslmode=require"), true),
        (with_query(&url, &format!("sslmode=verify-ca&sslrootcert={ca}")), true),
        // The certificate's IP address, then its DNS name.
        (with_query(&url, &format!("sslmode=verify-full&sslrootcert={ca}")), true),
        (with_query(&localhost, &format!("sslmode=verify-full&sslrootcert={ca}")), true),
    ] {
        let (_, ssl) = connect(&url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(ssl, encrypted, "{url}");
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: eval \"$(bash .ci/postgres.sh start)\""]
async fn postgres_verify_full_refuses_another_ca_and_says_which() {
    let (url, _) = server();
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "Not the server's CA");
    let cert = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap();
    std::fs::write(&other_ca, cert.pem()).unwrap();

    for mode in ["verify-full", "verify-ca", "require"] {
        let url = with_query(&url, &format!("sslmode={mode}&sslrootcert={}", other_ca.display()));
        let err = PostgresStore::open(&url).await.unwrap_err().to_string();
        // require with a CA file checks the chain, as in libpq.
        let shown = if mode == "require" { "verify-ca" } else { mode };
        for wanted in [
            format!(
                "the server's certificate for 127.0.0.1 is not signed by a CA in sslrootcert {}",
                other_ca.display()
            ),
            format!("(sslmode={shown})"),
            "set sslrootcert=/path/to/ca.pem".to_owned(),
        ] {
            assert!(err.contains(&wanted), "{mode}: {wanted:?} not in {err}");
        }
        assert!(!err.contains("berth:berth"), "the password is not shown: {err}");
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: eval \"$(bash .ci/postgres.sh start)\""]
async fn postgres_verify_full_refuses_another_host_name_and_names_it() {
    let (url, ca) = server();
    // Connect to the test server (hostaddr) under a name its certificate does not hold.
    let renamed = url.replacen("@127.0.0.1:", "@db.example.invalid:", 1);
    let full = with_query(&renamed, &format!("hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}"));
    let err = PostgresStore::open(&full).await.unwrap_err().to_string();
    for wanted in [
        "not valid for the host name db.example.invalid (sslmode=verify-full): it names localhost, 127.0.0.1;",
        "or use sslmode=verify-ca",
    ] {
        assert!(err.contains(wanted), "{wanted:?} not in {err}");
    }
    // verify-ca checks the chain only: the same connection is accepted.
    let chain_only = with_query(&renamed, &format!("hostaddr=127.0.0.1&sslmode=verify-ca&sslrootcert={ca}"));
    let (_, ssl) = connect(&chain_only).await.unwrap();
    assert!(ssl);
}

#[tokio::test]
#[ignore = "needs PostgreSQL: eval \"$(bash .ci/postgres.sh start)\""]
async fn postgres_channel_binding_over_tls() {
    let (url, ca) = server();
    // SCRAM-SHA-256-PLUS: the server checks the certificate hash the client computed.
    let bound = with_query(&url, &format!("sslmode=verify-full&sslrootcert={ca}&channel_binding=require"));
    let (_, ssl) = connect(&bound).await.unwrap();
    assert!(ssl);
    // Without TLS there is nothing to bind to, so the same demand fails: the parameter bites.
    let plain = with_query(&url, "sslmode=disable&channel_binding=require");
    assert!(connect(&plain).await.is_err());
}

#[tokio::test]
#[ignore = "needs PostgreSQL: eval \"$(bash .ci/postgres.sh start)\""]
async fn postgres_client_certificate_signs_in() {
    let (url, ca) = server();
    let cert = std::env::var("BERTH_TEST_POSTGRES_CLIENT_CERT").expect(NEEDS);
    let key = std::env::var("BERTH_TEST_POSTGRES_CLIENT_KEY").expect(NEEDS);
    // The role berth_cert has no password: only its certificate lets it in (pg_hba `cert`).
    let (_, rest) = url.split_once('@').unwrap();
    let as_cert_user = format!("postgres://berth_cert@{rest}");
    let with_cert =
        with_query(&as_cert_user, &format!("sslmode=verify-full&sslrootcert={ca}&sslcert={cert}&sslkey={key}"));
    let (client, ssl) = connect(&with_cert).await.unwrap();
    assert!(ssl);
    let user: String = client.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(user, "berth_cert");
    let without = with_query(&as_cert_user, &format!("sslmode=verify-full&sslrootcert={ca}"));
    assert!(connect(&without).await.is_err());
}

/// The store over verify-full: migrations through the pool, and the LISTEN connection (its
/// own, with the same settings) passes a notification on.
#[tokio::test]
#[ignore = "needs PostgreSQL: eval \"$(bash .ci/postgres.sh start)\""]
async fn postgres_store_and_listener_over_verify_full() {
    let (url, ca) = server();
    let schema = format!("berth_tls_{}", uuid::Uuid::new_v4().simple());
    let (admin, _) = connect(&url).await.unwrap();
    admin.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let scoped = with_query(&url, &format!("options=-csearch_path%3D{schema}&sslmode=verify-full&sslrootcert={ca}"));
    let run = tokio::spawn(async move {
        let store = PostgresStore::open(&scoped).await.unwrap();
        store.ping().await.unwrap();
        let mut changes = store.changes().unwrap();
        // The listener reports Unknown once it listens; then a notification comes through.
        let deadline = Instant::now() + Duration::from_secs(20);
        let first = tokio::time::timeout_at(deadline.into(), changes.recv()).await.unwrap().unwrap();
        assert_eq!(first, Change::Unknown, "the first change is the listener's start");
        let (notifier, _) = connect(&scoped).await.unwrap();
        notifier.batch_execute("NOTIFY berth_manifests, 'tls/listened'").await.unwrap();
        // The channel is the database's: tests running beside this one announce their changes
        // on it too. Wait for this one.
        let wanted = Change::Repository("tls/listened".parse().unwrap());
        loop {
            let change = tokio::time::timeout_at(deadline.into(), changes.recv()).await;
            match change.expect("the notification came through the listener within 20 s") {
                Ok(change) if change == wanted => break,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("listener stopped: {e}"),
            }
        }
    })
    .await;
    admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
    if let Err(e) = run {
        std::panic::resume_unwind(e.into_panic());
    }
}
