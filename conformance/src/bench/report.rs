//! The two ways to run the benchmark and what they produce.
//!
//! - [`run`]: the selected scenarios against one registry URL, `rounds` times.
//! - [`compare`]: Berth's variants (defaults; plaintext) against CNCF
//!   Distribution. For each scenario fresh servers (fresh data directories)
//!   are started, the rounds alternate A B C A B C …, and each server's peak
//!   RSS is read when it stops. Scenarios that write GiBs per round
//!   ([`Scenario::fresh_servers_per_round`]) get fresh servers every round,
//!   so the disk holds one round of one server at a time.
//!
//! Either way the result is a [`Report`]: every round of every metric (JSON),
//! per metric the median and min–max across rounds, server CPU-s per GiB
//! beside every transfer, each registry's ratio to the last one
//! (Distribution) with its per-round min–max, each throughput as a
//! percentage of this machine's ceiling, and (compare) the goals
//! judged from the run's own figures ([`Goal`]), rendered as a text table
//! ([`Report::text`]) or Markdown ([`Report::markdown`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use reqwest::Url;
use serde::Serialize;

use super::ceilings::{self, CeilingParams, Ceilings};
use super::machine::{self, Machine};
use super::metric::{CeilingKind, ScenarioRun, Unit};
use super::server::{self, ServerProcess};
use super::{Bench, BenchError, Params, Scenario, Target, TargetState, stats};
use crate::auth::Credentials;

/// A metric's values across rounds, for one registry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    /// Median of `values`; `None` when no round measured it.
    pub median: Option<f64>,
    /// One value per round that measured it.
    pub values: Vec<f64>,
    /// The (0-based) round of each of `values`.
    pub rounds: Vec<usize>,
    /// Why there is no value, when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// One metric of one scenario, across rounds and registries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub scenario: Scenario,
    pub metric: String,
    pub unit: Unit,
    pub higher_is_better: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<CeilingKind>,
    /// One cell per registry, in the report's order.
    pub cells: Vec<Cell>,
    /// Each registry but the last against the last (compare: each Berth
    /// variant against Distribution).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ratios: Vec<RowRatio>,
}

/// One registry's figure over the reference registry's (the last one).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowRatio {
    pub registry: String,
    /// Ratio of the medians.
    pub ratio: Option<f64>,
    /// value ÷ reference value in each round both measured (rounds
    /// alternate, so these are neighbours in time).
    pub per_round: Vec<f64>,
}

impl Cell {
    /// The value measured in `round`, if any.
    pub fn in_round(&self, round: usize) -> Option<f64> {
        self.rounds.iter().position(|&r| r == round).map(|i| self.values[i])
    }

    pub fn min(&self) -> Option<f64> {
        self.values.iter().copied().reduce(f64::min)
    }

    pub fn max(&self) -> Option<f64> {
        self.values.iter().copied().reduce(f64::max)
    }
}

/// `a(r) / b(r)` for every round `r` both cells measured.
pub fn per_round_ratios(a: &Cell, b: &Cell) -> Vec<f64> {
    a.rounds.iter().zip(&a.values).filter_map(|(&r, &v)| stats::ratio(Some(v), b.in_round(r))).collect()
}

/// One registry's rounds of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct RegistryRuns {
    pub registry: String,
    pub rounds: Vec<ScenarioRun>,
    /// Peak RSS (VmHWM) when the scenario ended, in KiB, if the PID is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_kib: Option<u64>,
    /// Why the registry could not be started for this scenario.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_error: Option<String>,
    /// How the server process ended (compare only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// Everything about one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: Scenario,
    pub registries: Vec<RegistryRuns>,
    pub rows: Vec<Row>,
    pub elapsed_secs: f64,
}

/// A registry in the report.
#[derive(Debug, Clone, Serialize)]
pub struct RegistryInfo {
    pub name: String,
    /// `--version` output, or "unknown".
    pub version: String,
    /// The binary (compare) or URL (run).
    pub location: String,
}

/// The outcome of a `run` or `compare`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `run` or `compare`.
    pub mode: String,
    pub tool: String,
    pub started_unix: u64,
    pub machine: Machine,
    pub registries: Vec<RegistryInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceilings: Option<Ceilings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceilings_error: Option<String>,
    pub rounds: usize,
    pub params: Params,
    pub scenarios: Vec<ScenarioReport>,
    /// The goals, judged from this run's figures (compare only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub goals: Vec<Goal>,
    pub elapsed_secs: f64,
}

/// Writes back all dirty pages before a round (`sync`), so that no registry's round pays
/// for the writeback of data the other one left in the page cache: a registry that does
/// not fsync (Distribution) otherwise leaves up to a GiB of dirty pages that the kernel
/// flushes during the next round, competing with that round's own writes and fsyncs.
async fn flush_page_cache() {
    let _ = tokio::process::Command::new("sync").status().await;
}

/// Builds the rows of a scenario from each registry's rounds: metrics keyed
/// by (name, unit) in order of first appearance, the median per registry,
/// and each registry's ratio to the last one. A peak-RSS row comes last
/// when any registry's peak is known.
pub fn rows(scenario: Scenario, registries: &[RegistryRuns]) -> Vec<Row> {
    let names: Vec<&str> = registries.iter().map(|r| r.registry.as_str()).collect();
    let mut order: Vec<(String, Unit)> = Vec::new();
    let mut ceilings: HashMap<(String, Unit), CeilingKind> = HashMap::new();
    for reg in registries {
        for run in &reg.rounds {
            for m in &run.metrics {
                let key = (m.name.clone(), m.unit);
                if !order.contains(&key) {
                    order.push(key.clone());
                }
                if let Some(c) = m.ceiling {
                    ceilings.insert(key, c);
                }
            }
        }
    }
    let mut rows: Vec<Row> = order
        .into_iter()
        .map(|(name, unit)| {
            let cells = registries
                .iter()
                .map(|reg| {
                    let found: Vec<_> = reg
                        .rounds
                        .iter()
                        .flat_map(|r| r.metrics.iter().map(move |m| (r.round, m)))
                        .filter(|(_, m)| m.name == name && m.unit == unit)
                        .collect();
                    let measured: Vec<(usize, f64)> = found.iter().filter_map(|(r, m)| Some((*r, m.value?))).collect();
                    let values: Vec<f64> = measured.iter().map(|(_, v)| *v).collect();
                    let rounds: Vec<usize> = measured.iter().map(|(r, _)| *r).collect();
                    let found: Vec<_> = found.into_iter().map(|(_, m)| m).collect();
                    let unavailable = if values.is_empty() {
                        Some(
                            found
                                .iter()
                                .find_map(|m| m.unavailable.clone())
                                .or_else(|| reg.start_error.as_ref().map(|e| format!("not started: {e}")))
                                .unwrap_or_else(|| "not measured (see errors)".to_owned()),
                        )
                    } else {
                        None
                    };
                    Cell { median: stats::median(&values), values, rounds, unavailable }
                })
                .collect();
            let ceiling = ceilings.get(&(name.clone(), unit)).copied();
            make_row(scenario, name, unit, ceiling, cells, &names)
        })
        .collect();
    if registries.iter().any(|r| r.peak_rss_kib.is_some()) {
        let cells = registries
            .iter()
            .map(|reg| {
                let mib = reg.peak_rss_kib.map(|kib| kib as f64 / 1024.0);
                Cell {
                    median: mib,
                    values: mib.into_iter().collect(),
                    rounds: mib.map(|_| 0).into_iter().collect(),
                    unavailable: mib.is_none().then(|| "process not known".to_owned()),
                }
            })
            .collect();
        rows.push(make_row(scenario, "peak RSS (VmHWM)".to_owned(), Unit::Mebibytes, None, cells, &names));
    }
    rows
}

fn make_row(
    scenario: Scenario,
    metric: String,
    unit: Unit,
    ceiling: Option<CeilingKind>,
    cells: Vec<Cell>,
    names: &[&str],
) -> Row {
    let ratios = match cells.split_last() {
        Some((reference, others)) if !others.is_empty() => others
            .iter()
            .zip(names)
            .map(|(cell, name)| RowRatio {
                registry: (*name).to_owned(),
                ratio: stats::ratio(cell.median, reference.median),
                per_round: per_round_ratios(cell, reference),
            })
            .collect(),
        _ => Vec::new(),
    };
    Row { scenario, higher_is_better: unit.higher_is_better(), metric, unit, ceiling, cells, ratios }
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn measure_ceilings(params: Option<CeilingParams>) -> (Option<Ceilings>, Option<String>) {
    let Some(params) = params else {
        return (None, None);
    };
    match tokio::task::spawn_blocking(move || ceilings::measure(&params)).await {
        Ok(Ok(c)) => (Some(c), None),
        Ok(Err(err)) => (None, Some(err.to_string())),
        Err(err) => (None, Some(format!("ceilings task failed: {err}"))),
    }
}

/// Draws the payload buffer off the async threads (about 1 s per GiB).
async fn make_bench(params: Params, scenarios: Vec<Scenario>, namespace: String) -> Result<Bench, BenchError> {
    tokio::task::spawn_blocking(move || Bench::new(params, &scenarios, namespace))
        .await
        .map_err(|e| BenchError::new(format!("payload task failed: {e}")))
}

fn round_line(scenario: Scenario, registry: &str, run: &ScenarioRun, rounds: usize) -> String {
    let status = if run.errors.is_empty() { "ok".to_owned() } else { format!("{} error(s)", run.errors.len()) };
    let setup = run.setup_secs.map(|s| format!(", setup {s:.1} s")).unwrap_or_default();
    format!("[{scenario}] round {}/{rounds} {registry}: {:.1} s{setup}, {status}", run.round + 1, run.elapsed_secs)
}

/// What `run` does.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub url: Url,
    pub scenarios: Vec<Scenario>,
    pub params: Params,
    pub rounds: usize,
    /// The server's PID, to report its peak RSS per scenario.
    pub server_pid: Option<u32>,
    /// Repository prefix for everything pushed.
    pub namespace: String,
    /// Skip the listing setup (an earlier run with this namespace made it).
    pub reuse_listing: bool,
    /// Measure the machine's ceilings first.
    pub ceilings: Option<CeilingParams>,
    /// Who to sign in as when the registry asks.
    pub credentials: Option<Credentials>,
}

/// Runs the selected scenarios against one registry. Fails only if the
/// client cannot be built or the registry not reached; everything else is in
/// the report.
pub async fn run(config: &RunConfig, progress: &mut (dyn FnMut(&str) + Send)) -> Result<Report, BenchError> {
    let started = Instant::now();
    let started_unix = now_unix();
    let target = Target::new(config.url.clone(), config.credentials.clone())?;
    let auth = target.sign_in().await?;
    progress(&format!("signing in: {auth}"));
    let (ceilings, ceilings_error) = measure_ceilings(config.ceilings.clone()).await;
    let bench = make_bench(config.params.clone(), config.scenarios.clone(), config.namespace.clone()).await?;
    let mut state = TargetState::new();
    if config.reuse_listing {
        state = state.reuse_listing();
    }
    let rounds = config.rounds.max(1);
    let mut scenarios = Vec::new();
    for &scenario in &config.scenarios {
        let scenario_started = Instant::now();
        let mut runs = RegistryRuns {
            registry: "registry".to_owned(),
            rounds: Vec::new(),
            peak_rss_kib: None,
            start_error: None,
            stopped: None,
        };
        let reset = config.server_pid.map(server::reset_peak_rss);
        for round in 0..rounds {
            let mut run = bench.run_round(&target, &mut state, scenario, round, config.server_pid).await;
            if round == 0
                && let Some(Err(err)) = &reset
            {
                run.notes.push(format!("{err}; the peak RSS covers the server's whole life"));
            }
            progress(&round_line(scenario, "registry", &run, rounds));
            runs.rounds.push(run);
        }
        runs.peak_rss_kib = config.server_pid.and_then(server::peak_rss_kib);
        let registries = vec![runs];
        scenarios.push(ScenarioReport {
            scenario,
            rows: rows(scenario, &registries),
            registries,
            elapsed_secs: scenario_started.elapsed().as_secs_f64(),
        });
    }
    Ok(Report {
        mode: "run".to_owned(),
        tool: concat!("berth-bench ", env!("CARGO_PKG_VERSION")).to_owned(),
        started_unix,
        machine: Machine::probe(),
        registries: vec![RegistryInfo {
            name: "registry".to_owned(),
            version: "unknown".to_owned(),
            location: config.url.to_string(),
        }],
        ceilings,
        ceilings_error,
        rounds,
        params: config.params.clone(),
        scenarios,
        goals: Vec::new(),
        elapsed_secs: started.elapsed().as_secs_f64(),
    })
}

/// A Berth configuration `compare` runs side by side with the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Variant {
    /// The column name: `Berth`, `Berth plaintext`.
    pub name: String,
    /// `BERTH_*` variables on top of the compare's own.
    pub env: Vec<(String, String)>,
}

impl Variant {
    /// Berth on its defaults (encryption on, fsync on).
    pub fn defaults() -> Self {
        Self { name: "Berth".to_owned(), env: Vec::new() }
    }

    /// Berth with encryption off (new repositories store plaintext).
    pub fn plaintext() -> Self {
        Self {
            name: "Berth plaintext".to_owned(),
            env: vec![("BERTH_ENCRYPTION__ENABLED".to_owned(), "false".to_owned())],
        }
    }

    /// `default` or `plaintext`.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name.trim() {
            "default" => Ok(Self::defaults()),
            "plaintext" => Ok(Self::plaintext()),
            other => Err(format!("unknown variant {other:?} (known: default, plaintext)")),
        }
    }
}

/// What `compare` does.
#[derive(Debug, Clone)]
pub struct CompareConfig {
    pub berth_bin: PathBuf,
    pub distribution_bin: PathBuf,
    pub scenarios: Vec<Scenario>,
    pub params: Params,
    pub rounds: usize,
    /// The Berth columns, in order (Distribution comes last).
    pub variants: Vec<Variant>,
    /// Where the servers' fresh data directories are made.
    pub data_root: PathBuf,
    /// Extra `BERTH_*` variables for every Berth variant (e.g. `BERTH_STORAGE__FSYNC=false`).
    pub berth_env: Vec<(String, String)>,
    /// Run Berth with auth on (a fresh admin password) and sign in with tokens, so the
    /// figures include what auth costs; Distribution still runs without. Off: Berth runs
    /// with `auth.enabled = false`, like Distribution.
    pub berth_auth: bool,
    pub ceilings: Option<CeilingParams>,
}

/// Berth's environment for `compare` (`berth_env` last, so it wins) and the credentials
/// to sign in with: with `berth_auth`, auth on and a fresh admin password.
fn berth_auth_env(config: &CompareConfig) -> (Vec<(String, String)>, Option<Credentials>) {
    let mut env = Vec::new();
    let mut credentials = None;
    if config.berth_auth {
        let password = uuid::Uuid::new_v4().simple().to_string();
        env.push(("BERTH_AUTH__ENABLED".to_owned(), "true".to_owned()));
        env.push(("BERTH_AUTH__ADMIN_PASSWORD".to_owned(), password.clone()));
        credentials = Some(Credentials::new("admin", password));
    }
    env.extend(config.berth_env.iter().cloned());
    (env, credentials)
}

/// One server `compare` starts: a Berth variant or Distribution.
#[derive(Debug, Clone)]
struct ServerSpec {
    name: String,
    /// `Some(env)` for Berth, `None` for Distribution.
    berth_env: Option<Vec<(String, String)>>,
    credentials: Option<Credentials>,
}

impl ServerSpec {
    async fn start(&self, config: &CompareConfig) -> Result<ServerProcess, BenchError> {
        match &self.berth_env {
            Some(env) => ServerProcess::start_berth(&config.berth_bin, &config.data_root, env).await,
            None => ServerProcess::start_distribution(&config.distribution_bin, &config.data_root).await,
        }
    }
}

/// Records how a server ended: its error lines when a round failed (the log
/// goes with its data directory), its peak RSS (the highest over the servers
/// of this registry in the scenario), how it stopped.
async fn finish_server(runs: &mut RegistryRuns, server: ServerProcess, failed: bool) {
    if failed && let Some(last) = runs.rounds.last_mut() {
        last.notes.extend(server.error_lines(5).into_iter().map(|l| format!("server log: {l}")));
    }
    if let Some(kib) = server.peak_rss_kib() {
        runs.peak_rss_kib = Some(runs.peak_rss_kib.map_or(kib, |old| old.max(kib)));
    }
    runs.stopped = Some(server.stop().await.unwrap_or_else(|e| format!("stop failed: {e}")));
}

async fn signed_in(server: &ServerProcess, spec: &ServerSpec) -> Result<Target, BenchError> {
    let target = Target::new(server.url().clone(), spec.credentials.clone())?;
    target.sign_in().await?;
    Ok(target)
}

/// Berth's variants against Distribution, scenario by scenario, each on
/// fresh servers. Fails only if a binary is missing; a server that does not
/// start is reported in its scenario.
pub async fn compare(config: &CompareConfig, progress: &mut (dyn FnMut(&str) + Send)) -> Result<Report, BenchError> {
    for (bin, what) in [(&config.berth_bin, "Berth"), (&config.distribution_bin, "Distribution")] {
        if !bin.is_file() {
            let hint = if what == "Distribution" {
                server::DISTRIBUTION_INSTALL_HINT
            } else {
                "build it with: cargo build --release -p berth-registry"
            };
            return Err(BenchError::new(format!("{what} binary {} not found; {hint}", bin.display())));
        }
    }
    if config.variants.is_empty() {
        return Err(BenchError::new("no Berth variant selected"));
    }
    let started = Instant::now();
    let started_unix = now_unix();
    let berth_version = machine::version_of(&config.berth_bin);
    let mut registries: Vec<RegistryInfo> = config
        .variants
        .iter()
        .map(|v| {
            let env: Vec<String> = v.env.iter().map(|(k, val)| format!("{k}={val}")).collect();
            RegistryInfo {
                name: v.name.clone(),
                version: berth_version.clone(),
                location: format!(
                    "{}, auth {}{}",
                    config.berth_bin.display(),
                    if config.berth_auth { "on, signed in with tokens" } else { "off, like Distribution" },
                    if env.is_empty() { ", defaults".to_owned() } else { format!(", {}", env.join(" ")) }
                ),
            }
        })
        .collect();
    registries.push(RegistryInfo {
        name: "Distribution".to_owned(),
        version: machine::version_of(&config.distribution_bin),
        location: config.distribution_bin.display().to_string(),
    });
    progress("measuring this machine's ceilings");
    let (ceilings, ceilings_error) = measure_ceilings(config.ceilings.clone()).await;
    let bench = make_bench(config.params.clone(), config.scenarios.clone(), "bench".to_owned()).await?;
    let (berth_env, berth_credentials) = berth_auth_env(config);
    let mut specs: Vec<ServerSpec> = config
        .variants
        .iter()
        .map(|v| ServerSpec {
            name: v.name.clone(),
            berth_env: Some(berth_env.iter().chain(&v.env).cloned().collect()),
            credentials: berth_credentials.clone(),
        })
        .collect();
    specs.push(ServerSpec { name: "Distribution".to_owned(), berth_env: None, credentials: None });
    let rounds = config.rounds.max(1);
    let mut scenarios = Vec::new();
    for &scenario in &config.scenarios {
        let scenario_started = Instant::now();
        let mut runs: Vec<RegistryRuns> = specs
            .iter()
            .map(|spec| RegistryRuns {
                registry: spec.name.clone(),
                rounds: Vec::new(),
                peak_rss_kib: None,
                start_error: None,
                stopped: None,
            })
            .collect();
        if scenario.fresh_servers_per_round() {
            progress(&format!("[{scenario}] fresh servers every round"));
            for round in 0..rounds {
                for (i, spec) in specs.iter().enumerate() {
                    flush_page_cache().await;
                    let server = match spec.start(config).await {
                        Ok(server) => server,
                        Err(err) => {
                            progress(&format!("[{scenario}] {} did not start: {err}", spec.name));
                            runs[i].start_error = Some(err.to_string());
                            continue;
                        }
                    };
                    let target = signed_in(&server, spec).await?;
                    let mut state = TargetState::new();
                    let run = bench.run_round(&target, &mut state, scenario, round, Some(server.pid())).await;
                    progress(&round_line(scenario, &spec.name, &run, rounds));
                    let failed = !run.errors.is_empty();
                    runs[i].rounds.push(run);
                    drop(target); // close pooled connections before stopping the server
                    finish_server(&mut runs[i], server, failed).await;
                }
            }
        } else {
            progress(&format!("[{scenario}] starting fresh servers"));
            let mut servers = Vec::new();
            for (i, spec) in specs.iter().enumerate() {
                match spec.start(config).await {
                    Ok(server) => servers.push(Some(server)),
                    Err(err) => {
                        progress(&format!("[{scenario}] {} did not start: {err}", spec.name));
                        runs[i].start_error = Some(err.to_string());
                        servers.push(None);
                    }
                }
            }
            let mut targets = Vec::new();
            for (server, spec) in servers.iter().zip(&specs) {
                targets.push(match server {
                    Some(server) => Some(signed_in(server, spec).await?),
                    None => None,
                });
            }
            let mut states: Vec<TargetState> = specs.iter().map(|_| TargetState::new()).collect();
            for round in 0..rounds {
                for (i, target) in targets.iter().enumerate() {
                    let (Some(target), Some(server)) = (target, &servers[i]) else { continue };
                    flush_page_cache().await;
                    let run = bench.run_round(target, &mut states[i], scenario, round, Some(server.pid())).await;
                    progress(&round_line(scenario, &runs[i].registry, &run, rounds));
                    runs[i].rounds.push(run);
                }
            }
            drop(targets); // close pooled connections before stopping the servers
            for (i, server) in servers.into_iter().enumerate() {
                if let Some(server) = server {
                    let failed = runs[i].rounds.iter().any(|r| !r.errors.is_empty());
                    finish_server(&mut runs[i], server, failed).await;
                }
            }
        }
        scenarios.push(ScenarioReport {
            scenario,
            rows: rows(scenario, &runs),
            registries: runs,
            elapsed_secs: scenario_started.elapsed().as_secs_f64(),
        });
    }
    let mut report = Report {
        mode: "compare".to_owned(),
        tool: concat!("berth-bench ", env!("CARGO_PKG_VERSION")).to_owned(),
        started_unix,
        machine: Machine::probe(),
        registries,
        ceilings,
        ceilings_error,
        rounds,
        params: config.params.clone(),
        scenarios,
        goals: Vec::new(),
        elapsed_secs: started.elapsed().as_secs_f64(),
    };
    report.goals = goals(&report);
    Ok(report)
}

/// One of the goals and whether this run met it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Goal {
    /// What is measured, e.g. `server CPU per GiB pulled (GET 512 MiB), Berth`.
    pub goal: String,
    /// The bound, e.g. `≤ 0.30 CPU-s/GiB`.
    pub target: String,
    /// What this run measured, with its spread.
    pub measured: String,
    /// `None` when the run did not measure it.
    pub met: Option<bool>,
}

/// Thresholds of issue 20's goals.
const GOAL_CPU_ENCRYPTED: f64 = 0.30;
const GOAL_CPU_PLAINTEXT: f64 = 0.10;
const GOAL_PULL_QUIET: f64 = 1.3;
const GOAL_PULL_BUSY: f64 = 1.2;
const GOAL_PULL_PLAINTEXT: f64 = 2.0;
const GOAL_PARTS_VS_MONOLITHIC: f64 = 0.9;
const GOAL_PARTS_VS_DISTRIBUTION: f64 = 1.5;

fn find_row<'r>(report: &'r Report, scenario: Scenario, metric: &str, unit: Unit) -> Option<&'r Row> {
    report
        .scenarios
        .iter()
        .filter(|sc| sc.scenario == scenario)
        .flat_map(|sc| &sc.rows)
        .find(|r| r.metric == metric && r.unit == unit)
}

fn fmt_spread(median: Option<f64>, values: &[f64], fmt: fn(f64) -> String) -> String {
    let Some(median) = median else { return "not measured".to_owned() };
    let min = values.iter().copied().reduce(f64::min);
    let max = values.iter().copied().reduce(f64::max);
    match (min, max) {
        (Some(min), Some(max)) if values.len() > 1 => {
            format!("{} ({}–{})", fmt(median), fmt(min).trim_end_matches('×'), fmt(max))
        }
        _ => fmt(median),
    }
}

fn fmt_times(v: f64) -> String {
    fmt_ratio(Some(v))
}

/// The goals, judged from `report`'s figures: CPU per GiB pulled by
/// median, pull ratios by the ratio of medians (per-round min–max shown),
/// multi-PATCH against Berth's own monolithic push by its worst round.
pub fn goals(report: &Report) -> Vec<Goal> {
    let index = |name: &str| report.registries.iter().position(|r| r.name == name);
    let dist = report.registries.len().checked_sub(1).filter(|&i| report.registries[i].name == "Distribution");
    let params = &report.params;
    let mut out = Vec::new();
    let Some(pull) = params.pull.iter().map(|r| r.bytes).max() else { return out };
    let pull_name = super::scenarios::blobs::pull_metric(pull);
    let cell = |row: Option<&Row>, reg: Option<usize>| row.zip(reg).and_then(|(row, i)| row.cells.get(i).cloned());
    let ratio =
        |row: Option<&Row>, reg: &str| row.and_then(|row| row.ratios.iter().find(|r| r.registry == reg).cloned());

    for (variant, bound) in
        [(Variant::defaults().name, GOAL_CPU_ENCRYPTED), (Variant::plaintext().name, GOAL_CPU_PLAINTEXT)]
    {
        let row = find_row(report, Scenario::BlobPull, &pull_name, Unit::CpuSecsPerGib);
        let c = cell(row, index(&variant));
        let median = c.as_ref().and_then(|c| c.median);
        out.push(Goal {
            goal: format!("server CPU per GiB pulled ({pull_name}), {variant}"),
            target: format!("≤ {bound:.2} CPU-s/GiB"),
            measured: fmt_spread(median, c.as_ref().map_or(&[][..], |c| &c.values), fmt_value),
            met: median.map(|m| m <= bound),
        });
    }
    let pulls = [
        (Scenario::BlobPull, Variant::defaults().name, GOAL_PULL_QUIET, "pull"),
        (Scenario::BlobPullBusy, Variant::defaults().name, GOAL_PULL_BUSY, "pull with one core busy"),
        (Scenario::BlobPull, Variant::plaintext().name, GOAL_PULL_PLAINTEXT, "pull"),
    ];
    for (scenario, variant, bound, what) in pulls {
        let row = find_row(report, scenario, &pull_name, Unit::MegabytesPerSec);
        let r = ratio(row, &variant).filter(|_| dist.is_some());
        let median = r.as_ref().and_then(|r| r.ratio);
        out.push(Goal {
            goal: format!("{variant} {what} ({pull_name}) vs Distribution"),
            target: format!("≥ {bound:.1}×"),
            measured: fmt_spread(median, r.as_ref().map_or(&[][..], |r| &r.per_round), fmt_times),
            met: median.map(|m| m >= bound),
        });
    }
    if let Some(push) = params.push.iter().map(|r| r.bytes).max() {
        use super::scenarios::blobs::{PushKind, push_metric};
        let berth = Variant::defaults().name;
        let mono =
            find_row(report, Scenario::BlobPush, &push_metric(PushKind::Monolithic, push), Unit::MegabytesPerSec);
        for &part in params.part_sizes.iter().filter(|&&p| p < push) {
            let name = push_metric(PushKind::Parts(part), push);
            let row = find_row(report, Scenario::BlobPush, &name, Unit::MegabytesPerSec);
            let per_round = match (cell(row, index(&berth)), cell(mono, index(&berth))) {
                (Some(parts), Some(mono)) => per_round_ratios(&parts, &mono),
                _ => Vec::new(),
            };
            let worst = per_round.iter().copied().reduce(f64::min);
            out.push(Goal {
                goal: format!("{berth} {name} vs its own monolithic {}, every round", super::size_label(push)),
                target: format!("≥ {GOAL_PARTS_VS_MONOLITHIC:.1}× in every round"),
                measured: match worst {
                    Some(w) => format!(
                        "worst round {} (rounds: {})",
                        fmt_times(w),
                        per_round.iter().map(|v| fmt_times(*v)).collect::<Vec<_>>().join(", ")
                    ),
                    None => "not measured".to_owned(),
                },
                met: worst.map(|w| w >= GOAL_PARTS_VS_MONOLITHIC),
            });
            let r = ratio(row, &berth).filter(|_| dist.is_some());
            let median = r.as_ref().and_then(|r| r.ratio);
            out.push(Goal {
                goal: format!("{berth} {name} vs Distribution"),
                target: format!("≥ {GOAL_PARTS_VS_DISTRIBUTION:.1}×"),
                measured: fmt_spread(median, r.as_ref().map_or(&[][..], |r| &r.per_round), fmt_times),
                met: median.map(|m| m >= GOAL_PARTS_VS_DISTRIBUTION),
            });
        }
    }
    out
}

fn goal_rows(goals: &[Goal]) -> (Vec<String>, Vec<Vec<String>>) {
    let header = ["goal", "target", "measured", "verdict"].map(String::from).to_vec();
    let rows = goals
        .iter()
        .map(|g| {
            let verdict = match g.met {
                Some(true) => "met",
                Some(false) => "not met",
                None => "not measured",
            };
            vec![g.goal.clone(), g.target.clone(), g.measured.clone(), verdict.to_owned()]
        })
        .collect();
    (header, rows)
}

/// "CPU during the rounds: server 1.23 cores, client 0.45 cores (of 2)":
/// who had the shared cores, averaged over the rounds' wall time.
fn cpu_note(rounds: &[ScenarioRun], nproc: usize) -> Option<String> {
    let wall: f64 = rounds.iter().map(|r| r.elapsed_secs).sum();
    if wall <= 0.0 {
        return None;
    }
    let client: f64 = rounds.iter().map(|r| Some(r.cpu?.client_secs)).sum::<Option<f64>>()?;
    let server: Option<f64> = rounds.iter().map(|r| r.cpu?.server_secs).sum();
    let server = server.map(|s| format!("server {:.2} cores, ", s / wall)).unwrap_or_default();
    Some(format!("CPU during the rounds: {server}client {:.2} cores (of {nproc})", client / wall))
}

/// Numbers as a reader wants them: 3 significant digits or whole units.
pub fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        None => "–".to_owned(),
        Some(r) if r.abs() >= 100.0 => format!("{r:.0}×"),
        Some(r) if r.abs() >= 0.1 || r == 0.0 => format!("{r:.2}×"),
        Some(r) if r.abs() >= 0.01 => format!("{r:.3}×"),
        Some(r) => format!("{r:.4}×"),
    }
}

/// `median (min–max)`, or the one value, or `n/a`.
fn fmt_cell(cell: &Cell) -> String {
    match (cell.median, cell.min(), cell.max()) {
        (None, ..) => "n/a".to_owned(),
        (Some(m), Some(lo), Some(hi)) if cell.values.len() > 1 && fmt_value(lo) != fmt_value(hi) => {
            format!("{} ({}–{})", fmt_value(m), fmt_value(lo), fmt_value(hi))
        }
        (Some(m), ..) => fmt_value(m),
    }
}

/// `1.25× (1.10–1.40)`: ratio of medians, per-round min–max.
fn fmt_row_ratio(r: &RowRatio) -> String {
    let lo = r.per_round.iter().copied().reduce(f64::min);
    let hi = r.per_round.iter().copied().reduce(f64::max);
    match (r.ratio, lo, hi) {
        (Some(_), Some(lo), Some(hi)) if r.per_round.len() > 1 => {
            format!("{} ({}–{})", fmt_ratio(r.ratio), fmt_ratio(Some(lo)).trim_end_matches('×'), fmt_ratio(Some(hi)))
        }
        _ => fmt_ratio(r.ratio),
    }
}

fn fmt_duration(secs: f64) -> String {
    if secs >= 60.0 {
        format!("{} min {:02} s", (secs / 60.0) as u64, (secs % 60.0) as u64)
    } else {
        format!("{} s", fmt_value(secs))
    }
}

/// Pads columns to a common width; the first `left` columns align left.
fn aligned(header: &[String], rows: &[Vec<String>], left: usize) -> String {
    let width = |i: usize| {
        rows.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count())).chain([header[i].chars().count()]).max()
    };
    let widths: Vec<usize> = (0..header.len()).map(|i| width(i).unwrap_or(0)).collect();
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i > 0 {
                out.push_str("  ");
            }
            if i < left {
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            } else {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header);
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

impl Report {
    fn names(&self) -> Vec<&str> {
        self.registries.iter().map(|r| r.name.as_str()).collect()
    }

    fn pct(&self, row: &Row, cell: &Cell) -> String {
        match (row.ceiling, &self.ceilings, cell.median) {
            (Some(kind), Some(c), Some(v)) if c.for_kind(kind) > 0.0 => format!("{:.0}%", v / c.for_kind(kind) * 100.0),
            _ => String::new(),
        }
    }

    /// Header and rows. A transfer's server CPU-s/GiB goes in columns of its
    /// MB/s row; client CPU-s/GiB goes in the notes.
    fn table(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let names = self.names();
        let with_cpu = self.scenarios.iter().flat_map(|sc| &sc.rows).any(|r| r.unit == Unit::CpuSecsPerGib);
        let mut header: Vec<String> = ["scenario", "metric", "unit"].map(String::from).to_vec();
        header.extend(names.iter().map(|n| n.to_string()));
        if let Some((reference, others)) = names.split_last()
            && !others.is_empty()
        {
            header.extend(others.iter().map(|n| format!("{n}/{reference}")));
        }
        if with_cpu {
            header.extend(names.iter().map(|n| format!("{n} CPU-s/GiB")));
        }
        if self.ceilings.is_some() {
            header.extend(names.iter().map(|n| format!("{n} % ceil")));
        }
        if names.len() == 1 {
            header.push("rounds".to_owned());
        }
        let mut rows = Vec::new();
        for sc in &self.scenarios {
            let cpu_row = |metric: &str| sc.rows.iter().find(|r| r.unit == Unit::CpuSecsPerGib && r.metric == metric);
            let shown_with =
                |metric: &str| sc.rows.iter().any(|r| r.unit == Unit::MegabytesPerSec && r.metric == metric);
            for row in &sc.rows {
                if row.unit == Unit::ClientCpuSecsPerGib || (row.unit == Unit::CpuSecsPerGib && shown_with(&row.metric))
                {
                    continue;
                }
                let mut cells = vec![sc.scenario.name().to_owned(), row.metric.clone(), row.unit.label().to_owned()];
                cells.extend(row.cells.iter().map(fmt_cell));
                cells.extend(row.ratios.iter().map(fmt_row_ratio));
                if with_cpu {
                    let cpu = (row.unit == Unit::MegabytesPerSec).then(|| cpu_row(&row.metric)).flatten();
                    cells.extend(
                        (0..names.len()).map(|i| cpu.and_then(|r| r.cells.get(i)).map(fmt_cell).unwrap_or_default()),
                    );
                }
                if self.ceilings.is_some() {
                    cells.extend(row.cells.iter().map(|c| self.pct(row, c)));
                }
                if names.len() == 1 {
                    let values: Vec<String> =
                        row.cells.iter().flat_map(|c| c.values.iter().map(|v| fmt_value(*v))).collect();
                    cells.push(values.join(" / "));
                }
                rows.push(cells);
            }
        }
        (header, rows)
    }

    fn header_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let preset = &self.params.preset;
        lines.push(format!(
            "{} ({}): {preset} preset, {} round(s){}; each figure is the median across rounds (min–max)",
            self.tool,
            self.mode,
            self.rounds,
            if self.mode == "compare" {
                let fresh: Vec<&str> = self
                    .scenarios
                    .iter()
                    .filter(|s| s.scenario.fresh_servers_per_round())
                    .map(|s| s.scenario.name())
                    .collect();
                format!(
                    " alternating among the registries round by round, fresh servers per scenario{}",
                    if fresh.is_empty() { String::new() } else { format!(" (per round for {})", fresh.join(", ")) }
                )
            } else {
                String::new()
            }
        ));
        lines.push(format!("Machine: {}", self.machine.summary()));
        let versions: Vec<String> =
            self.registries.iter().map(|r| format!("{} = {} ({})", r.name, r.version, r.location)).collect();
        lines.push(format!("Registries: {}", versions.join("; ")));
        if let Some(c) = &self.ceilings {
            lines.push(format!(
                "Ceilings: SHA-256 {} MB/s (1 core, sha2); AES-256-GCM {} MB/s (1 core, aws-lc-rs); loopback TCP {} MB/s; \
                 disk write {} MB/s ({} + fdatasync in {})",
                fmt_value(c.sha256_mbps),
                fmt_value(c.aes256gcm_mbps),
                fmt_value(c.loopback_mbps),
                fmt_value(c.disk_write_mbps),
                super::size_label(c.disk_bytes),
                c.disk_dir
            ));
            lines.push(format!(
                "% ceil: push throughput vs min(SHA-256, disk) = {} MB/s; pull vs loopback = {} MB/s",
                fmt_value(c.push()),
                fmt_value(c.pull())
            ));
        }
        if let Some(err) = &self.ceilings_error {
            lines.push(format!("Ceilings: not measured ({err})"));
        }
        if let Some((reference, _)) = self.registries.split_last()
            && self.registries.len() >= 2
        {
            lines.push(format!(
                "'X/{b}' is the ratio of X's median to {b}'s, with the min–max of the per-round ratios (X's round over \
                 {b}'s of the same round); above 1 is better for rates, below 1 for times, memory and CPU",
                b = reference.name
            ));
        }
        if self.scenarios.iter().flat_map(|sc| &sc.rows).any(|r| r.unit == Unit::CpuSecsPerGib) {
            lines.push(
                "CPU-s/GiB: the server's user + system CPU (/proc/PID/stat, all threads) during the timed transfers, \
                 per GiB moved (1 GiB = 2^30 bytes); the client's own is in the notes"
                    .to_owned(),
            );
        }
        lines
    }

    /// Every error, as `scenario / registry / round N: message`.
    pub fn errors(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sc in &self.scenarios {
            for reg in &sc.registries {
                if let Some(err) = &reg.start_error {
                    out.push(format!("{} / {}: did not start: {err}", sc.scenario, reg.registry));
                }
                for run in &reg.rounds {
                    for err in &run.errors {
                        out.push(format!("{} / {} / round {}: {err}", sc.scenario, reg.registry, run.round + 1));
                    }
                }
            }
        }
        out
    }

    /// Notes (unique per scenario and registry), setup times, n/a reasons.
    fn footnotes(&self) -> (Vec<String>, Vec<String>) {
        let (mut notes, mut na) = (Vec::new(), Vec::new());
        for sc in &self.scenarios {
            for reg in &sc.registries {
                let mut seen: Vec<&String> = Vec::new();
                for note in reg.rounds.iter().flat_map(|r| &r.notes) {
                    if !seen.contains(&note) {
                        seen.push(note);
                        notes.push(format!("{} / {}: {note}", sc.scenario, reg.registry));
                    }
                }
                let client: Vec<String> = sc
                    .rows
                    .iter()
                    .filter(|r| r.unit == Unit::ClientCpuSecsPerGib)
                    .filter_map(|r| {
                        let i = sc.registries.iter().position(|x| x.registry == reg.registry)?;
                        let c = r.cells.get(i)?;
                        c.median.map(|_| format!("{} {}", r.metric, fmt_cell(c)))
                    })
                    .collect();
                if !client.is_empty() {
                    notes.push(format!(
                        "{} / {}: client (berth-bench) CPU-s/GiB: {}",
                        sc.scenario,
                        reg.registry,
                        client.join("; ")
                    ));
                }
                if let Some(note) = cpu_note(&reg.rounds, self.machine.nproc) {
                    notes.push(format!("{} / {}: {note}", sc.scenario, reg.registry));
                }
                let setup: f64 = reg.rounds.iter().filter_map(|r| r.setup_secs).sum();
                if setup > 0.0 {
                    notes.push(format!(
                        "{} / {}: setup took {} (not in any metric)",
                        sc.scenario,
                        reg.registry,
                        fmt_duration(setup)
                    ));
                }
            }
            // CPU figures left out below the clock tick are explained in the notes.
            for row in sc.rows.iter().filter(|r| !matches!(r.unit, Unit::CpuSecsPerGib | Unit::ClientCpuSecsPerGib)) {
                for (cell, reg) in row.cells.iter().zip(&sc.registries) {
                    if let Some(reason) = &cell.unavailable {
                        na.push(format!("{} / {} / {}: {reason}", sc.scenario, row.metric, reg.registry));
                    }
                }
            }
        }
        (notes, na)
    }

    /// The plain-text report: header, table, n/a reasons, errors, notes.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for line in self.header_lines() {
            out.push_str(&line);
            out.push('\n');
        }
        out.push('\n');
        let (header, rows) = self.table();
        out.push_str(&aligned(&header, &rows, 3));
        let (notes, na) = self.footnotes();
        for (title, items) in [("n/a", na), ("Errors", self.errors()), ("Notes", notes)] {
            if !items.is_empty() {
                let _ = writeln!(out, "\n{title}:");
                for item in items {
                    let _ = writeln!(out, "  - {item}");
                }
            }
        }
        if !self.goals.is_empty() {
            let (header, rows) = goal_rows(&self.goals);
            let _ = writeln!(out, "\nGoals:");
            out.push_str(&aligned(&header, &rows, 3));
        }
        let _ = writeln!(out, "\nTotal time: {}", fmt_duration(self.elapsed_secs));
        for sc in &self.scenarios {
            let _ = writeln!(out, "  {}: {}", sc.scenario, fmt_duration(sc.elapsed_secs));
        }
        out
    }

    /// The same as Markdown, ready to paste into BENCHMARKS.md.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        for line in self.header_lines() {
            let _ = writeln!(out, "- {line}");
        }
        out.push('\n');
        let (header, rows) = self.table();
        let escape = |s: &str| s.replace('|', "\\|");
        let _ = writeln!(out, "| {} |", header.iter().map(|h| escape(h)).collect::<Vec<_>>().join(" | "));
        let align: Vec<&str> = (0..header.len()).map(|i| if i < 3 { "---" } else { "---:" }).collect();
        let _ = writeln!(out, "|{}|", align.join("|"));
        for row in rows {
            let _ = writeln!(out, "| {} |", row.iter().map(|c| escape(c)).collect::<Vec<_>>().join(" | "));
        }
        let (notes, na) = self.footnotes();
        for (title, items) in [("n/a", na), ("Errors", self.errors()), ("Notes", notes)] {
            if !items.is_empty() {
                let _ = writeln!(out, "\n**{title}**\n");
                for item in items {
                    let _ = writeln!(out, "- {}", escape(&item));
                }
            }
        }
        if !self.goals.is_empty() {
            let (header, rows) = goal_rows(&self.goals);
            let _ = writeln!(out, "\n**Goals** (issue 20, judged from this run's figures)\n");
            let _ = writeln!(out, "| {} |", header.join(" | "));
            let _ = writeln!(out, "|---|---|---|---|");
            for row in rows {
                let _ = writeln!(out, "| {} |", row.iter().map(|c| escape(c)).collect::<Vec<_>>().join(" | "));
            }
        }
        let _ = writeln!(out, "\nTotal time: {}.", fmt_duration(self.elapsed_secs));
        for sc in &self.scenarios {
            let _ = writeln!(out, "- {}: {}", sc.scenario, fmt_duration(sc.elapsed_secs));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Metric;

    fn run(round: usize, metrics: Vec<Metric>) -> ScenarioRun {
        ScenarioRun {
            scenario: Scenario::BlobPush,
            round,
            metrics,
            errors: Vec::new(),
            notes: Vec::new(),
            setup_secs: None,
            elapsed_secs: 1.0,
            cpu: Some(crate::bench::CpuUse { client_secs: 0.5, server_secs: Some(1.5) }),
        }
    }

    #[test]
    fn cpu_note_averages_over_wall_time() {
        let runs = vec![run(0, vec![]), run(1, vec![])];
        assert_eq!(
            cpu_note(&runs, 2).as_deref(),
            Some("CPU during the rounds: server 1.50 cores, client 0.50 cores (of 2)")
        );
        let mut unknown = run(0, vec![]);
        unknown.cpu = None;
        assert_eq!(cpu_note(&[unknown], 2), None);
    }

    fn regs(a: Vec<ScenarioRun>, b: Vec<ScenarioRun>) -> Vec<RegistryRuns> {
        [("A", a, Some(2048)), ("B", b, None)]
            .into_iter()
            .map(|(name, rounds, rss)| RegistryRuns {
                registry: name.to_owned(),
                rounds,
                peak_rss_kib: rss,
                start_error: None,
                stopped: None,
            })
            .collect()
    }

    #[test]
    fn rows_take_medians_and_orient_ratios() {
        let a = vec![
            run(0, vec![Metric::new("push", Unit::MegabytesPerSec, 100.0), Metric::new("p99", Unit::Millis, 2.0)]),
            run(1, vec![Metric::new("push", Unit::MegabytesPerSec, 300.0), Metric::new("p99", Unit::Millis, 4.0)]),
            run(2, vec![Metric::new("push", Unit::MegabytesPerSec, 200.0), Metric::new("p99", Unit::Millis, 3.0)]),
        ];
        let b = vec![
            run(0, vec![Metric::new("push", Unit::MegabytesPerSec, 50.0), Metric::new("p99", Unit::Millis, 6.0)]),
            run(
                1,
                vec![Metric::unavailable("push", Unit::MegabytesPerSec, "boom"), Metric::new("p99", Unit::Millis, 6.0)],
            ),
            run(2, vec![Metric::new("push", Unit::MegabytesPerSec, 150.0), Metric::new("p99", Unit::Millis, 6.0)]),
        ];
        let rows = rows(Scenario::BlobPush, &regs(a, b));
        assert_eq!(rows.len(), 3);
        let push = &rows[0];
        assert_eq!(push.cells[0].median, Some(200.0));
        assert_eq!(push.cells[0].values, vec![100.0, 300.0, 200.0]);
        assert_eq!(push.cells[1].median, Some(100.0), "the failed round is left out");
        assert_eq!(push.ratios[0].ratio, Some(2.0));
        assert_eq!(push.ratios[0].per_round, vec![2.0, 200.0 / 150.0], "round 2 of B failed: no ratio for it");
        assert_eq!(push.cells[1].rounds, vec![0, 2]);
        assert_eq!(fmt_cell(&push.cells[0]), "200 (100–300)");
        assert_eq!(fmt_row_ratio(&push.ratios[0]), "2.00× (1.33–2.00×)");
        let p99 = &rows[1];
        assert_eq!(p99.ratios[0].ratio, Some(0.5));
        let rss = &rows[2];
        assert_eq!(rss.unit, Unit::Mebibytes);
        assert_eq!(rss.cells[0].median, Some(2.0));
        assert!(rss.cells[1].unavailable.is_some());
        assert_eq!(rss.ratios[0].ratio, None);
    }

    fn named_runs(scenario: Scenario, per_registry: Vec<(&str, Vec<Vec<Metric>>)>) -> ScenarioReport {
        let registries: Vec<RegistryRuns> = per_registry
            .into_iter()
            .map(|(name, rounds)| RegistryRuns {
                registry: name.to_owned(),
                rounds: rounds
                    .into_iter()
                    .enumerate()
                    .map(|(i, metrics)| ScenarioRun { scenario, ..run(i, metrics) })
                    .collect(),
                peak_rss_kib: None,
                start_error: None,
                stopped: None,
            })
            .collect();
        ScenarioReport { scenario, rows: rows(scenario, &registries), registries, elapsed_secs: 1.0 }
    }

    fn mbps(name: &str, v: f64) -> Metric {
        Metric::new(name, Unit::MegabytesPerSec, v)
    }

    fn cpu(name: &str, v: f64) -> Metric {
        Metric::new(name, Unit::CpuSecsPerGib, v)
    }

    /// Three registries, two rounds; each goal's verdict follows the figures.
    #[test]
    fn goals_are_judged_from_the_figures() {
        let mut params = Params::quick();
        params.pull = vec![crate::bench::SizeRun { bytes: 1 << 20, iterations: 1 }];
        params.push = vec![crate::bench::SizeRun { bytes: 64 << 20, iterations: 1 }];
        params.part_sizes = vec![8 << 20, 128 << 20];
        let get = "GET 1 MiB";
        let pull = named_runs(
            Scenario::BlobPull,
            vec![
                ("Berth", vec![vec![mbps(get, 1400.0), cpu(get, 0.24)], vec![mbps(get, 1300.0), cpu(get, 0.34)]]),
                (
                    "Berth plaintext",
                    vec![vec![mbps(get, 1900.0), cpu(get, 0.05)], vec![mbps(get, 2100.0), cpu(get, 0.07)]],
                ),
                ("Distribution", vec![vec![mbps(get, 1000.0), cpu(get, 0.5)], vec![mbps(get, 1000.0), cpu(get, 0.5)]]),
            ],
        );
        let busy = named_runs(
            Scenario::BlobPullBusy,
            vec![
                ("Berth", vec![vec![mbps(get, 1100.0)], vec![mbps(get, 1100.0)]]),
                ("Berth plaintext", vec![vec![], vec![]]),
                ("Distribution", vec![vec![mbps(get, 1000.0)], vec![mbps(get, 1000.0)]]),
            ],
        );
        let (mono, parts) = ("monolithic 64 MiB", "8 MiB parts 64 MiB");
        let push = named_runs(
            Scenario::BlobPush,
            vec![
                (
                    "Berth",
                    vec![vec![mbps(mono, 400.0), mbps(parts, 380.0)], vec![mbps(mono, 400.0), mbps(parts, 340.0)]],
                ),
                ("Berth plaintext", vec![vec![], vec![]]),
                (
                    "Distribution",
                    vec![vec![mbps(mono, 200.0), mbps(parts, 200.0)], vec![mbps(mono, 200.0), mbps(parts, 200.0)]],
                ),
            ],
        );
        let info = |name: &str| RegistryInfo { name: name.to_owned(), version: "v".into(), location: "here".into() };
        let mut report = Report {
            mode: "compare".into(),
            tool: "t".into(),
            started_unix: 0,
            machine: Machine::probe(),
            registries: vec![info("Berth"), info("Berth plaintext"), info("Distribution")],
            ceilings: None,
            ceilings_error: None,
            rounds: 2,
            params,
            scenarios: vec![push, pull, busy],
            goals: Vec::new(),
            elapsed_secs: 1.0,
        };
        report.goals = goals(&report);
        let verdicts: Vec<(&str, Option<bool>)> = report.goals.iter().map(|g| (g.goal.as_str(), g.met)).collect();
        assert_eq!(
            verdicts,
            [
                ("server CPU per GiB pulled (GET 1 MiB), Berth", Some(true)), // median 0.29
                ("server CPU per GiB pulled (GET 1 MiB), Berth plaintext", Some(true)),
                ("Berth pull (GET 1 MiB) vs Distribution", Some(true)), // 1.35×
                ("Berth pull with one core busy (GET 1 MiB) vs Distribution", Some(false)), // 1.1×
                ("Berth plaintext pull (GET 1 MiB) vs Distribution", Some(true)), // 2.0×
                ("Berth 8 MiB parts 64 MiB vs its own monolithic 64 MiB, every round", Some(false)), // 0.85× in round 2
                ("Berth 8 MiB parts 64 MiB vs Distribution", Some(true)), // 1.8×
            ]
        );
        assert_eq!(report.goals[0].measured, "0.290 (0.240–0.340)");
        assert_eq!(report.goals[2].measured, "1.35× (1.30–1.40×)");
        assert_eq!(report.goals[5].measured, "worst round 0.85× (rounds: 0.95×, 0.85×)");
        let md = report.markdown();
        assert!(md.contains("**Goals**"), "{md}");
        assert!(
            md.contains("| Berth 8 MiB parts 64 MiB vs Distribution | ≥ 1.5× | 1.80× (1.70–1.90×) | met |"),
            "{md}"
        );
        // The CPU goes in columns beside the MB/s, not in rows of its own.
        assert!(md.contains("| Berth CPU-s/GiB |"), "{md}");
        assert!(!md.contains("| CPU-s/GiB |"), "{md}");
        assert!(md.contains("| blob-pull | GET 1 MiB | MB/s | 1350 (1300–1400) | 2000 (1900–2100) | 1000 | 1.35× (1.30–1.40×) | 2.00× (1.90–2.10×) | 0.290 (0.240–0.340) | 0.060 (0.050–0.070) | 0.500 |"), "{md}");

        // Without the plaintext variant its goals are not measured, not failed.
        report.registries.remove(1);
        for sc in &mut report.scenarios {
            sc.registries.remove(1);
            sc.rows = rows(sc.scenario, &sc.registries);
        }
        let goals = goals(&report);
        assert_eq!(goals[1].met, None);
        assert_eq!(goals[1].measured, "not measured");
        assert_eq!(goals[4].met, None);
        assert_eq!(goals[2].met, Some(true));
    }

    #[test]
    fn variants_parse() {
        assert_eq!(Variant::parse("default"), Ok(Variant::defaults()));
        assert_eq!(
            Variant::parse(" plaintext").map(|v| v.env),
            Ok(vec![("BERTH_ENCRYPTION__ENABLED".to_owned(), "false".to_owned())])
        );
        assert!(Variant::parse("fast").is_err());
    }

    #[test]
    fn unavailable_everywhere_keeps_the_reason() {
        let a = vec![run(0, vec![Metric::new("tags", Unit::Millis, 1.0)])];
        let b = vec![run(0, vec![Metric::unavailable("tags", Unit::Millis, "no tag pagination")])];
        let rows = rows(Scenario::Listing, &regs(a, b));
        assert_eq!(rows[0].cells[1].unavailable.as_deref(), Some("no tag pagination"));
        assert_eq!(rows[0].ratios[0].ratio, None);
    }

    #[test]
    fn number_formats() {
        assert_eq!(fmt_value(1234.56), "1235");
        assert_eq!(fmt_value(12.345), "12.3");
        assert_eq!(fmt_value(1.2345), "1.23");
        assert_eq!(fmt_value(0.12345), "0.123");
        assert_eq!(fmt_ratio(Some(1.5)), "1.50×");
        assert_eq!(fmt_ratio(Some(435.9)), "436×");
        assert_eq!(fmt_ratio(Some(0.0523)), "0.052×");
        assert_eq!(fmt_ratio(Some(0.0023)), "0.0023×");
        assert_eq!(fmt_ratio(None), "–");
        assert_eq!(fmt_duration(75.0), "1 min 15 s");
        assert_eq!(fmt_duration(5.5), "5.50 s");
        assert_eq!(fmt_duration(0.042), "0.042 s");
    }

    #[test]
    fn aligned_table() {
        let header = vec!["a".to_owned(), "num".to_owned()];
        let rows = vec![vec!["long".to_owned(), "1".to_owned()]];
        assert_eq!(aligned(&header, &rows, 1), "a     num\nlong    1\n");
    }
}
