//! berth-replicas against one in-process Berth, its URL given twice: two "replicas" that
//! share everything. A small workload must find no inconsistency, and every operation kind
//! must run (the first round of a plan covers them all), with auth off and with auth on
//! (signed in with tokens). Behaviour only, small blobs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use berth_conformance::Url;
use berth_conformance::auth::Credentials;
use berth_conformance::replicas::{self, Config, OpKind, Sizes};
use berth_registry::app::RunningServer;
use berth_registry::auth::config::AuthConfig;
use berth_registry::config::Config as BerthConfig;

/// A small seeded workload against `berth` given twice; must find no inconsistency.
async fn one_registry_twice(berth: BerthConfig, credentials: Option<Credentials>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = RunningServer::start(listener, &berth).await.unwrap();
    let url = Url::parse(&server.url()).unwrap();

    let mut config = Config::new(vec![url.clone(), url]);
    config.seed = 20_240_601;
    config.ops = 40;
    config.concurrency = 8;
    config.namespace = "smoke/replicas".to_owned();
    config.settle = Duration::from_millis(100);
    config.timeout = Duration::from_secs(15);
    config.sizes = Sizes::small();
    config.credentials = credentials;
    assert!(replicas::plan(config.seed, config.ops).starts_with(&OpKind::ALL));

    let mut lines = Vec::new();
    let report = replicas::run(&config, &mut |line: &str| {
        println!("{line}");
        lines.push(line.to_owned());
    })
    .await
    .unwrap();
    server.stop().await;

    assert!(report.passed(), "inconsistencies: {:#?}", report.inconsistencies);
    assert_eq!(report.seed, 20_240_601);
    for phase in ["reach:", "plan:", "workload:", "settle:", "verify tags/list:", "verify content:", "verify model:"] {
        assert!(lines.iter().any(|l| l.starts_with(phase)), "no {phase} line in {lines:#?}");
    }
    assert!(lines.iter().any(|l| l.starts_with("verify catalog:")));
    assert!(lines.last().unwrap().starts_with("OK:"), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("40 operations in")), "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_registry_twice_is_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let berth = BerthConfig {
        data_dir: dir.path().to_owned(),
        auth: AuthConfig { enabled: false, ..Default::default() },
        ..BerthConfig::default()
    };
    one_registry_twice(berth, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_registry_twice_signed_in_with_tokens_is_consistent() {
    // Auth on: uploads spread over replicas, racing chunks and streamed blob reads all
    // carry tokens fetched once and shared by both "replicas".
    let dir = tempfile::tempdir().unwrap();
    let berth = BerthConfig {
        data_dir: dir.path().to_owned(),
        auth: AuthConfig {
            enabled: true,
            admin_password: Some("replicas-admin".to_string().into()),
            ..Default::default()
        },
        ..BerthConfig::default()
    };
    one_registry_twice(berth, Some(Credentials::new("admin", "replicas-admin"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_independent_registries_are_reported_inconsistent() {
    // Two Berths with separate data: not replicas of one registry. The check must say so,
    // naming the replica that disagreed.
    let (dir0, dir1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut servers = Vec::new();
    for dir in [&dir0, &dir1] {
        let berth = BerthConfig {
            data_dir: dir.path().to_owned(),
            auth: AuthConfig { enabled: false, ..Default::default() },
            ..BerthConfig::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        servers.push(RunningServer::start(listener, &berth).await.unwrap());
    }
    let urls = servers.iter().map(|s| Url::parse(&s.url()).unwrap()).collect();
    let mut config = Config::new(urls);
    config.ops = 12;
    config.settle = Duration::ZERO;
    config.timeout = Duration::from_secs(15);
    config.sizes = Sizes::small();
    let report = replicas::run(&config, &mut |line: &str| println!("{line}")).await.unwrap();
    for server in servers {
        server.stop().await;
    }
    assert!(!report.passed());
    assert!(report.summary().starts_with("FAILED"), "{}", report.summary());
    assert!(report.summary().contains(&format!("--seed {}", config.seed)));
    assert!(
        report.inconsistencies.iter().any(|i| i.contains("r1 (http://127.0.0.1:")),
        "{:#?}",
        report.inconsistencies
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_replica_stops_the_run_before_the_workload() {
    // A listener bound and kept, never served: connections are accepted by the kernel but
    // never answered, so the request times out instead of being refused.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let mut config = Config::new(vec![url]);
    config.timeout = Duration::from_millis(300);
    let err = replicas::run(&config, &mut |_: &str| {}).await.unwrap_err();
    assert!(err.to_string().contains("r0"), "{err}");
    drop(listener);
}
