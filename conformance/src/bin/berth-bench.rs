//! `berth-bench`: benchmarks a registry (`run`), compares Berth with CNCF
//! Distribution (`compare`), or measures this machine's limits (`ceilings`).
//! Prints a table on stdout, progress on stderr; `--json` and `--markdown`
//! write the report to files. Exits 1 if any scenario recorded an error, 2
//! if it could not run at all (bad usage, a missing binary).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use berth_conformance::Url;
use berth_conformance::auth::CredentialArgs;
use berth_conformance::bench::ceilings::{self, CeilingParams};
use berth_conformance::bench::report::{self, CompareConfig, Report, RunConfig};
use berth_conformance::bench::{Params, Scenario};
use clap::{Args, Parser, Subcommand};

/// HTTP load tool for container registries (black box, plain HTTP).
#[derive(Debug, Parser)]
#[command(name = "berth-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run scenarios against one registry URL.
    Run(RunArgs),
    /// Start Berth and Distribution and run every scenario against both.
    Compare(CompareArgs),
    /// Measure single-core SHA-256 and AES-256-GCM, loopback TCP and disk write.
    Ceilings(CeilingArgs),
    /// List the scenarios.
    List,
}

#[derive(Debug, Args)]
struct Common {
    /// Scenarios to run, comma-separated [default: all]
    #[arg(long, value_enum, value_delimiter = ',')]
    scenario: Vec<Scenario>,
    /// Tiny sizes and short loops (seconds in all), for smoke runs
    #[arg(long)]
    quick: bool,
    /// Also write the report (every sample) as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write the table as Markdown to this file
    #[arg(long)]
    markdown: Option<PathBuf>,
}

impl Common {
    fn scenarios(&self) -> Vec<Scenario> {
        if self.scenario.is_empty() { Scenario::ALL.to_vec() } else { self.scenario.clone() }
    }

    fn params(&self) -> Params {
        if self.quick { Params::quick() } else { Params::full() }
    }

    fn ceiling_params(&self, dir: PathBuf) -> CeilingParams {
        if self.quick { CeilingParams::quick(dir) } else { CeilingParams::full(dir) }
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Registry base URL, e.g. http://127.0.0.1:5000
    #[arg(long)]
    url: Url,
    #[command(flatten)]
    common: Common,
    /// Rounds per scenario (the table shows medians)
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// The registry's PID: report its peak RSS (VmHWM, reset before each scenario)
    #[arg(long)]
    server_pid: Option<u32>,
    /// Repository prefix for everything pushed [default: bench/RANDOM]
    #[arg(long)]
    namespace: Option<String>,
    /// Skip the listing setup: an earlier run with this --namespace made it
    #[arg(long, requires = "namespace")]
    reuse_listing: bool,
    /// Measure the machine's ceilings first
    #[arg(long)]
    ceilings: bool,
    /// Directory for the disk ceiling [default: the temp dir]
    #[arg(long)]
    disk_dir: Option<PathBuf>,
    #[command(flatten)]
    credentials: CredentialArgs,
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// The Berth binary (target/release/berth)
    #[arg(long)]
    berth_bin: PathBuf,
    /// The Distribution binary (Debian package docker-registry)
    #[arg(long, default_value = "/usr/bin/docker-registry")]
    distribution_bin: PathBuf,
    #[command(flatten)]
    common: Common,
    /// Rounds per scenario, alternating Berth and Distribution
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where the servers' fresh data directories go (and the disk ceiling is
    /// measured) [default: the temp dir]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Extra configuration for Berth as KEY=VALUE (a BERTH_* variable), repeatable
    #[arg(long, value_parser = parse_env)]
    berth_env: Vec<(String, String)>,
    /// Skip the ceilings measurement
    #[arg(long)]
    no_ceilings: bool,
    /// Run Berth with auth on (fresh admin password, token sign-in) instead of off;
    /// Distribution runs without auth either way
    #[arg(long)]
    berth_auth: bool,
}

#[derive(Debug, Args)]
struct CeilingArgs {
    /// Short measurements
    #[arg(long)]
    quick: bool,
    /// Directory for the disk test [default: the temp dir]
    #[arg(long)]
    disk_dir: Option<PathBuf>,
    /// Also write the figures as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (key, value) = s.split_once('=').ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    if !key.starts_with("BERTH_") {
        return Err(format!("{key} is not a BERTH_* variable"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

fn write_outputs(report: &Report, common: &Common) -> anyhow::Result<()> {
    if let Some(path) = &common.json {
        let json = serde_json::to_vec_pretty(report).context("serializing the report")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &common.markdown {
        std::fs::write(path, report.markdown()).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn progress() -> impl FnMut(&str) + Send {
    let started = Instant::now();
    move |line: &str| eprintln!("[{:>6.1} s] {line}", started.elapsed().as_secs_f64())
}

fn finish(report: &Report, common: &Common) -> anyhow::Result<ExitCode> {
    print!("{}", report.text());
    write_outputs(report, common)?;
    Ok(if report.errors().is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("berth-bench: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::List => {
            for scenario in Scenario::ALL {
                println!("{scenario}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ceilings(args) => {
            let dir = args.disk_dir.unwrap_or_else(std::env::temp_dir);
            let params = if args.quick { CeilingParams::quick(dir) } else { CeilingParams::full(dir) };
            let c = tokio::task::spawn_blocking(move || ceilings::measure(&params)).await??;
            println!("SHA-256 (1 core, sha2):           {:>8} MB/s", report::fmt_value(c.sha256_mbps));
            println!("AES-256-GCM (1 core, aws-lc-rs):  {:>8} MB/s", report::fmt_value(c.aes256gcm_mbps));
            println!("loopback TCP (1 connection):      {:>8} MB/s", report::fmt_value(c.loopback_mbps));
            println!(
                "disk write ({} MiB + fdatasync):  {:>8} MB/s in {}",
                c.disk_bytes >> 20,
                report::fmt_value(c.disk_write_mbps),
                c.disk_dir
            );
            if let Some(path) = &args.json {
                std::fs::write(path, serde_json::to_vec_pretty(&c)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            let namespace = args
                .namespace
                .clone()
                .unwrap_or_else(|| format!("bench/{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
            let config = RunConfig {
                url: args.url.clone(),
                scenarios: args.common.scenarios(),
                params: args.common.params(),
                rounds: args.rounds,
                server_pid: args.server_pid,
                namespace,
                reuse_listing: args.reuse_listing,
                ceilings: args
                    .ceilings
                    .then(|| args.common.ceiling_params(args.disk_dir.clone().unwrap_or_else(std::env::temp_dir))),
                credentials: args.credentials.credentials(),
            };
            eprintln!("berth-bench run: {} (namespace {})", config.url, config.namespace);
            let report = report::run(&config, &mut progress()).await?;
            finish(&report, &args.common)
        }
        Command::Compare(args) => {
            let data_root = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
            let config = CompareConfig {
                berth_bin: args.berth_bin.clone(),
                distribution_bin: args.distribution_bin.clone(),
                scenarios: args.common.scenarios(),
                params: args.common.params(),
                rounds: args.rounds,
                berth_env: args.berth_env.clone(),
                berth_auth: args.berth_auth,
                ceilings: (!args.no_ceilings).then(|| args.common.ceiling_params(data_root.clone())),
                data_root,
            };
            let report = report::compare(&config, &mut progress()).await?;
            finish(&report, &args.common)
        }
    }
}
