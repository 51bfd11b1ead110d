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

/// The named-only scenarios that need nothing but a registry (concurrency, memory, storm,
/// replicas with one replica, then with a second address of the same server as its peer, which
/// exercises the spreading without needing PostgreSQL and S3: `conformance/bench/replicas.sh`
/// runs it on real replicas). Every figure is there, rates positive, CPU and memory known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_scenarios_report_every_figure_without_errors() {
    use berth_conformance::bench::set_peer_urls;

    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        auth: AuthConfig { enabled: false, ..Default::default() },
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = RunningServer::start(listener, &config).await.unwrap();
    let scenarios = vec![Scenario::Concurrency, Scenario::Memory, Scenario::Storm, Scenario::Replicas];
    let mut run = RunConfig {
        url: Url::parse(&server.url()).unwrap(),
        scenarios: scenarios.clone(),
        params: smoke_params(),
        rounds: 1,
        server_pid: Some(std::process::id()),
        namespace: "smoke".to_owned(),
        reuse_listing: false,
        ceilings: None,
        credentials: None,
    };
    let report = report::run(&run, &mut |line| eprintln!("{line}")).await.unwrap();
    println!("{}", report.text());
    assert_eq!(report.errors(), Vec::<String>::new());
    assert_eq!(report.scenarios.iter().map(|s| s.scenario).collect::<Vec<_>>(), scenarios);
    for sc in &report.scenarios {
        for row in &sc.rows {
            let cell = &row.cells[0];
            let value =
                cell.median.unwrap_or_else(|| panic!("{} / {}: n/a: {:?}", sc.scenario, row.metric, cell.unavailable));
            // CPU seconds per GiB may round to 0 at these sizes (the kernel counts in 10 ms ticks).
            let positive = !row.metric.ends_with("CPU-s/GiB");
            assert!(value.is_finite() && (value > 0.0 || !positive), "{} / {} = {value}", sc.scenario, row.metric);
        }
        for round in &sc.registries[0].rounds {
            assert!(round.notes.iter().all(|n| !n.contains("not deleted")), "{}: {:?}", sc.scenario, round.notes);
        }
    }
    let names = |scenario: Scenario| -> Vec<(String, Unit)> {
        let sc = report.scenarios.iter().find(|s| s.scenario == scenario).unwrap();
        sc.rows.iter().map(|r| (r.metric.clone(), r.unit)).collect()
    };
    let has = |scenario: Scenario, name: &str, unit: Unit| {
        assert!(names(scenario).contains(&(name.to_owned(), unit)), "{scenario}: no {name} in {:?}", names(scenario));
    };
    for clients in [16, 64] {
        has(Scenario::Concurrency, &format!("push {clients} clients × 256 KiB"), Unit::MegabytesPerSec);
        has(Scenario::Concurrency, &format!("push {clients} clients × 256 KiB p99"), Unit::Millis);
        has(Scenario::Concurrency, &format!("pull {clients} clients × 1 MiB"), Unit::MegabytesPerSec);
        has(Scenario::Concurrency, &format!("pull {clients} clients × 1 MiB server CPU-s/GiB"), Unit::Seconds);
    }
    has(Scenario::Memory, "peak RSS, pull 64 clients × 1 MiB", Unit::Mebibytes);
    has(Scenario::Memory, "peak RSS, push 64 clients × 256 KiB", Unit::Mebibytes);
    has(Scenario::Storm, "manifest GET c=2, quiet p99.9", Unit::Millis);
    has(Scenario::Storm, "manifest GET c=2, during 4 × 1 MiB pushes max", Unit::Millis);
    has(Scenario::Storm, "storm: 4 × 1 MiB pushes", Unit::MegabytesPerSec);
    has(Scenario::Replicas, "pull 8 × 256 KiB, 4 clients, 1 replica", Unit::MegabytesPerSec);

    // The same server under another name, as a second replica.
    let peer = Url::parse(&server.url().replace("127.0.0.1", "localhost")).unwrap();
    set_peer_urls(&run.url, vec![peer]);
    run.scenarios = vec![Scenario::Replicas];
    let report = report::run(&run, &mut |line| eprintln!("{line}")).await.unwrap();
    assert_eq!(report.errors(), Vec::<String>::new());
    let rows: Vec<&str> = report.scenarios[0].rows.iter().map(|r| r.metric.as_str()).collect();
    assert!(rows.contains(&"push 8 × 256 KiB, 4 clients, 2 replicas"), "{rows:?}");
    assert!(rows.contains(&"pull 8 × 256 KiB, 4 clients, 2 replicas"), "{rows:?}");
    server.stop().await;
}

/// The tls scenario against Berth serving HTTPS (a private CA, trusted the way
/// `berth-bench run --ca-cert` does) and plain HTTP on one port; and, given a plain URL, it
/// fails with the reason instead of passing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_scenario_measures_https_and_plain_http_on_one_port() {
    use berth_registry::config::TlsConfig;
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "berth-bench smoke CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::write(dir.path().join("cert.pem"), leaf_cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), leaf_key.serialize_pem()).unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        auth: AuthConfig { enabled: false, ..Default::default() },
        tls: TlsConfig {
            cert_file: Some(dir.path().join("cert.pem")),
            key_file: Some(dir.path().join("key.pem")),
            ..Default::default()
        },
        ..Default::default()
    };
    berth_conformance::bench::client::trust_root_pem(ca_cert.pem().as_bytes()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = RunningServer::start(listener, &config).await.unwrap();
    let mut run = RunConfig {
        url: Url::parse(&server.https_url()).unwrap(),
        scenarios: vec![Scenario::Tls],
        params: smoke_params(),
        rounds: 1,
        server_pid: Some(std::process::id()),
        namespace: "smoke".to_owned(),
        reuse_listing: false,
        ceilings: None,
        credentials: None,
    };
    let report = report::run(&run, &mut |line| eprintln!("{line}")).await.unwrap();
    println!("{}", report.text());
    assert_eq!(report.errors(), Vec::<String>::new());
    let rows = &report.scenarios[0].rows;
    for name in ["https pull 1 MiB", "https push 256 KiB", "http pull 1 MiB", "http push 256 KiB"] {
        let row = rows.iter().find(|r| r.metric == name && r.unit == Unit::MegabytesPerSec);
        let value = row.and_then(|r| r.cells[0].median);
        assert!(
            value.is_some_and(|v| v > 0.0),
            "{name}: {value:?} in {:?}",
            rows.iter().map(|r| &r.metric).collect::<Vec<_>>()
        );
        let cpu = format!("{name} server CPU-s/GiB");
        assert!(rows.iter().any(|r| r.metric == cpu && r.cells[0].median.is_some()), "no {cpu}");
    }

    // Plain HTTP given: the scenario says what it needs, as an error.
    run.url = Url::parse(&server.url()).unwrap();
    let report = report::run(&run, &mut |_| {}).await.unwrap();
    let errors = report.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("needs an https:// URL"), "{errors:?}");
    assert!(report.scenarios[0].rows.iter().all(|r| r.unit == Unit::Mebibytes || r.cells[0].median.is_none()));
    server.stop().await;
}
