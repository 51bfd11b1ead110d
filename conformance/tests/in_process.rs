//! The conformance suite against Berth itself, in-process on an ephemeral port: once with
//! every optional feature on, once with deletion switched off by configuration.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use berth_conformance::{SuiteConfig, Url};
use berth_registry::app::RunningServer;
use berth_registry::config::Config;

async fn run_suite(config: Config, adjust: impl FnOnce(&mut SuiteConfig)) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = RunningServer::start(listener, &config).await.unwrap();
    let mut suite = SuiteConfig::new(Url::parse(&server.url()).unwrap());
    suite.flags.tag_param = true;
    adjust(&mut suite);
    let report = berth_conformance::run(&suite).await;
    for case in &report.cases {
        println!("{}", case_line(case));
    }
    println!("{}", report.summary());
    server.stop().await;
    let failed: Vec<_> = report.cases.iter().filter(|c| !c.passed).map(|c| c.name).collect();
    assert!(report.passed() > 0, "no case ran");
    assert!(failed.is_empty(), "conformance cases failed: {failed:?}");
}

fn case_line(case: &berth_conformance::CaseReport) -> String {
    match &case.failure {
        None => format!("PASS {}", case.name),
        Some(why) => format!("FAIL {}: {why}", case.name),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    run_suite(Config { data_dir: dir.path().to_owned(), ..Config::default() }, |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_with_deletion_disabled_answers_405_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_owned(), ..Config::default() };
    config.delete.manifests = false;
    config.delete.blobs = false;
    run_suite(config, |s| {
        s.flags.delete_manifests = false;
        s.flags.delete_blobs = false;
        s.filter = Some("end_".into());
    })
    .await;
}
