//! The conformance suite against Berth itself, in-process on an ephemeral port: with every
//! optional feature on and auth off; with deletion switched off by configuration; and with
//! auth on, signed in as the admin the first start creates (the whole suite through tokens,
//! plus the auth cases).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use berth_conformance::auth::Credentials;
use berth_conformance::{Group, Report, SuiteConfig, Url};
use berth_registry::app::RunningServer;
use berth_registry::auth::config::AuthConfig;
use berth_registry::config::Config;

async fn run_suite(config: Config, adjust: impl FnOnce(&mut SuiteConfig)) -> Report {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = RunningServer::start(listener, &config).await.unwrap();
    let mut suite = SuiteConfig::new(Url::parse(&server.url()).unwrap());
    suite.flags.tag_param = true;
    adjust(&mut suite);
    let report = berth_conformance::run(&suite).await;
    println!("auth: {}", report.auth);
    for case in &report.cases {
        println!("{}", case_line(case));
    }
    println!("{}", report.summary());
    server.stop().await;
    let failed: Vec<_> = report.cases.iter().filter(|c| !c.passed).map(|c| c.name).collect();
    assert!(report.passed() > 0, "no case ran");
    assert!(failed.is_empty(), "conformance cases failed: {failed:?}");
    report
}

fn case_line(case: &berth_conformance::CaseReport) -> String {
    match &case.failure {
        None => format!("PASS {}", case.name),
        Some(why) => format!("FAIL {}: {why}", case.name),
    }
}

/// Berth with authentication off: anyone may push, pull and delete.
fn open_config(dir: &tempfile::TempDir) -> Config {
    Config {
        data_dir: dir.path().to_owned(),
        auth: AuthConfig { enabled: false, ..Default::default() },
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let report = run_suite(open_config(&dir), |_| {}).await;
    assert!(report.skipped.iter().any(|s| s.name.starts_with("auth_")), "auth cases need credentials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_with_deletion_disabled_answers_405_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = open_config(&dir);
    config.delete.manifests = false;
    config.delete.blobs = false;
    run_suite(config, |s| {
        s.flags.delete_manifests = false;
        s.flags.delete_blobs = false;
        s.filter = Some("end_".into());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_with_auth_passes_the_conformance_suite_signed_in() {
    const PASSWORD: &str = "in-process-admin-password";
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        auth: AuthConfig { enabled: true, admin_password: Some(PASSWORD.to_string().into()), ..Default::default() },
        ..Config::default()
    };
    let report = run_suite(config, |s| s.credentials = Some(Credentials::new("admin", PASSWORD))).await;
    assert!(report.auth.starts_with("token auth"), "{}", report.auth);
    let auth_cases: Vec<_> = report.cases.iter().filter(|c| c.group == Group::Auth).map(|c| c.name).collect();
    assert_eq!(auth_cases.len(), 6, "{auth_cases:?}");
    assert!(!report.skipped.iter().any(|s| s.name.starts_with("auth_")), "{:?}", report.skipped);
}
