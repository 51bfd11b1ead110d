//! berth-bench against Berth in-process: every scenario at `--quick` size
//! (smaller still, to stay within seconds) must produce its metrics with no
//! errors and positive rates; with auth on, the scenarios that stream bodies and walk the
//! catalog must sign in with tokens. Behaviour only: no timing thresholds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use berth_conformance::Url;
use berth_conformance::auth::Credentials;
use berth_conformance::bench::report::{self, Report, RunConfig};
use berth_conformance::bench::{Params, Scenario, Unit};
use berth_registry::app::RunningServer;
use berth_registry::auth::config::AuthConfig;
use berth_registry::config::Config;

/// The quick preset with shorter loops: this test checks behaviour, not speed.
fn smoke_params() -> Params {
    let mut params = Params::quick();
    params.range_duration = Duration::from_millis(200);
    params.manifest_duration = Duration::from_millis(250);
    params.manifest_concurrency = vec![1, 16];
    params
}

async fn run_against_berth(scenarios: Vec<Scenario>, rounds: usize) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        auth: AuthConfig { enabled: false, ..Default::default() },
        ..Default::default()
    };
    run_against(config, None, scenarios, rounds).await
}

async fn run_against(
    config: Config,
    credentials: Option<Credentials>,
    scenarios: Vec<Scenario>,
    rounds: usize,
) -> Report {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = RunningServer::start(listener, &config).await.unwrap();
    let run = RunConfig {
        url: Url::parse(&server.url()).unwrap(),
        scenarios,
        params: smoke_params(),
        rounds,
        server_pid: Some(std::process::id()),
        namespace: "smoke".to_owned(),
        reuse_listing: false,
        ceilings: None,
        credentials,
    };
    let report = report::run(&run, &mut |line| eprintln!("{line}")).await.unwrap();
    server.stop().await;
    println!("{}", report.text());
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_reports_positive_rates_without_errors() {
    let report = run_against_berth(Scenario::ALL.to_vec(), 1).await;
    assert_eq!(report.errors(), Vec::<String>::new());
    let ran: Vec<Scenario> = report.scenarios.iter().map(|s| s.scenario).collect();
    assert_eq!(ran, Scenario::ALL);

    for sc in &report.scenarios {
        assert!(!sc.rows.is_empty(), "{}: no metrics", sc.scenario);
        for row in &sc.rows {
            let cell = &row.cells[0];
            let value =
                cell.median.unwrap_or_else(|| panic!("{} / {}: n/a: {:?}", sc.scenario, row.metric, cell.unavailable));
            assert!(value > 0.0 && value.is_finite(), "{} / {} = {value}", sc.scenario, row.metric);
        }
        // The PID given is this process (Berth runs in it), so the peak RSS is known.
        assert!(sc.rows.iter().any(|r| r.unit == Unit::Mebibytes), "{}: no peak RSS", sc.scenario);
    }

    let metric = |scenario: Scenario, name: &str, unit: Unit| {
        let sc = report.scenarios.iter().find(|s| s.scenario == scenario).unwrap();
        assert!(
            sc.rows.iter().any(|r| r.metric == name && r.unit == unit),
            "{scenario}: no {name} ({unit:?}) in {:?}",
            sc.rows.iter().map(|r| (&r.metric, r.unit)).collect::<Vec<_>>()
        );
    };
    metric(Scenario::BlobPush, "monolithic 64 KiB", Unit::MegabytesPerSec);
    metric(Scenario::BlobPush, "streamed PATCH 1 MiB", Unit::MegabytesPerSec);
    metric(Scenario::BlobPush, "16 KiB parts 1 MiB", Unit::MegabytesPerSec);
    metric(Scenario::BlobPush, "256 KiB parts 1 MiB", Unit::MegabytesPerSec);
    metric(Scenario::BlobPull, "GET 1 MiB", Unit::MegabytesPerSec);
    metric(Scenario::BlobPullBusy, "GET 1 MiB", Unit::MegabytesPerSec);
    metric(Scenario::BlobPullBusy, "range 64 KiB of 1 MiB", Unit::RequestsPerSec);
    metric(Scenario::BlobPull, "range 64 KiB of 1 MiB", Unit::RequestsPerSec);
    metric(Scenario::BlobPull, "range 64 KiB of 1 MiB p99", Unit::Millis);
    metric(Scenario::ManifestGet, "GET c=1", Unit::RequestsPerSec);
    metric(Scenario::ManifestGet, "HEAD c=16 p50", Unit::Millis);
    metric(Scenario::Image, "push", Unit::ImagesPerSec);
    metric(Scenario::Image, "pull", Unit::MegabytesPerSec);
    metric(Scenario::Listing, "catalog ?n=10 page p50", Unit::Millis);
    metric(Scenario::Listing, "catalog (no n)", Unit::Millis);
    metric(Scenario::Listing, "tags/list (no n) of 100", Unit::Millis);
    metric(Scenario::Listing, "tags/list ?n=10 walk", Unit::Seconds);
    metric(Scenario::Listing, "setup: 100 repositories", Unit::ItemsPerSec);
    metric(Scenario::ConcurrentPush, "32 × 256 KiB in parallel", Unit::MegabytesPerSec);

    // The report renders and serializes.
    assert!(report.text().contains("monolithic 64 KiB"));
    assert!(report.markdown().contains("| blob-push |"));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["scenarios"].as_array().map(Vec::len), Some(Scenario::ALL.len()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_setup_runs_once_per_server() {
    let report = run_against_berth(vec![Scenario::Listing], 2).await;
    assert_eq!(report.errors(), Vec::<String>::new());
    let rounds = &report.scenarios[0].registries[0].rounds;
    assert_eq!(rounds.len(), 2);
    assert!(rounds[0].setup_secs.is_some());
    assert_eq!(rounds[1].setup_secs, None, "round 2 reuses round 1's repositories");
    let walk = report.scenarios[0].rows.iter().find(|r| r.metric == "catalog ?n=10 walk").unwrap();
    assert_eq!(walk.cells[0].values.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_pushes_and_listings_sign_in_with_tokens() {
    // Auth on: every push streams its body, so the token must be attached before sending;
    // the listing walks the catalog, which needs its own scope.
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        auth: AuthConfig {
            enabled: true,
            admin_password: Some("bench-admin".to_string().into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let scenarios = vec![Scenario::BlobPush, Scenario::Image, Scenario::Listing];
    let report = run_against(config, Some(Credentials::new("admin", "bench-admin")), scenarios.clone(), 1).await;
    assert_eq!(report.errors(), Vec::<String>::new());
    assert_eq!(report.scenarios.iter().map(|s| s.scenario).collect::<Vec<_>>(), scenarios);
}

/// `berth-bench gc` at a tiny size (a few hundred blobs: CI never runs the 100,000): one
/// collection reclaims every seeded blob, and images push and pull with and without a
/// collector looping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_rounds_reclaim_what_they_seeded_and_measure_push_and_pull() {
    use berth_conformance::bench::gc::{self, GcParams};
    use berth_conformance::bench::{PayloadSource, Target};

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_owned(),
        auth: AuthConfig { enabled: false, ..Default::default() },
        ..Default::default()
    };
    config.gc.interval = Duration::ZERO;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = RunningServer::start(listener, &config).await.unwrap();
    let target = Target::new(Url::parse(&server.url()).unwrap(), None).unwrap();
    let params = GcParams { blobs: 120, effect_garbage: 40, ..GcParams::quick() };
    let source = std::sync::Arc::new(PayloadSource::new(params.largest_blob() as usize));
    let pid = Some(std::process::id());

    let r = gc::reclaim_round(&target, &source, "smoke/reclaim", &params, pid).await.unwrap();
    assert!(r.reclaimed >= 120, "{r:?}");
    assert!(r.blobs_per_sec > 0.0 && r.server_cpu_secs.is_some(), "{r:?}");
    assert_eq!(r.seeded.repositories, 120usize.div_ceil(params.per_repository));

    let mut rounds = Vec::new();
    for (i, with) in [false, true].into_iter().enumerate() {
        let e = gc::effect_round(&target, &source, &format!("smoke/effect{i}"), &params, with, pid).await.unwrap();
        assert_eq!(e.images, params.effect_clients * params.effect_images, "{e:?}");
        assert!(e.push_images_per_sec > 0.0 && e.pull_images_per_sec > 0.0, "{e:?}");
        // The looping collector ended at least the run it was in when the clients stopped.
        assert_eq!(e.collections > 0, with, "{e:?}");
        rounds.push(e);
    }
    // Each round deleted what it pushed and collected it: nothing is left to reclaim.
    let last = target.collect(params.collect_timeout).await.unwrap().unwrap();
    assert_eq!(gc::run_count(&last, "blobs"), Some(0), "{last}");
    let report = gc::GcReport {
        machine: berth_conformance::bench::machine::Machine::probe(),
        berth: "in-process".into(),
        storage: "local disk".into(),
        params,
        reclaim: vec![r],
        effect: rounds,
        errors: Vec::new(),
    };
    let table = report.markdown();
    assert!(table.contains("reclaim 120 unreferenced blobs: blobs/s") && table.contains("with ÷ without"), "{table}");
    server.stop().await;
}
