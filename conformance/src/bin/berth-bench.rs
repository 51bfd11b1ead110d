//! `berth-bench`: benchmarks a registry (`run`), compares Berth with CNCF
//! Distribution (`compare`), measures Berth's garbage collector (`gc`), or measures this
//! machine's limits (`ceilings`).
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
use berth_conformance::bench::report::{self, CompareConfig, Report, RunConfig, Variant};
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
    /// Start Berth and measure its garbage collector: blobs reclaimed per second, and its
    /// effect on concurrent push and pull.
    Gc(GcArgs),
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
    /// Trust this PEM CA certificate (a registry with a private CA over https://), repeatable
    #[arg(long)]
    ca_cert: Vec<PathBuf>,
    /// Another replica of the same registry (scenario `replicas` spreads clients over
    /// --url and these), repeatable
    #[arg(long)]
    peer_url: Vec<Url>,
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
    /// Rounds per scenario, alternating among the registries
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Berth configurations side by side with Distribution: `default` (encryption on,
    /// fsync on) and `plaintext` (BERTH_ENCRYPTION__ENABLED=false)
    #[arg(long, value_delimiter = ',', default_value = "default,plaintext", value_parser = Variant::parse)]
    variants: Vec<Variant>,
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

#[derive(Debug, Args)]
struct GcArgs {
    /// The Berth binary (target/release/berth)
    #[arg(long)]
    berth_bin: PathBuf,
    /// Tiny counts (seconds in all), for smoke runs
    #[arg(long)]
    quick: bool,
    /// Rounds of each measurement (each on a fresh Berth); the effect runs this many
    /// rounds without and with a collector, alternating
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Unreferenced blobs to reclaim [default: 100000; --quick: 300]
    #[arg(long)]
    blobs: Option<usize>,
    /// Unreferenced blobs present during each effect round [default: 20000; --quick: 100]
    #[arg(long)]
    effect_garbage: Option<usize>,
    /// Seconds the effect's looping collector pauses after each run [default: 0, back to back]
    #[arg(long)]
    effect_pause: Option<f64>,
    /// Only one of the two measurements
    #[arg(long, value_enum)]
    only: Option<GcPart>,
    /// Where the servers' fresh data directories go [default: the temp dir]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep blobs in S3 at this endpoint (e.g. moto from .ci/s3.sh), under a fresh prefix
    /// per server; credentials from --berth-env or the AWS variables, else moto's any-will-do
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// The bucket, with --s3-endpoint
    #[arg(long, default_value = "test", requires = "s3_endpoint")]
    s3_bucket: String,
    /// Extra configuration for Berth as KEY=VALUE (a BERTH_* variable), repeatable
    #[arg(long, value_parser = parse_env)]
    berth_env: Vec<(String, String)>,
    /// Also write every round as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write the table as Markdown to this file
    #[arg(long)]
    markdown: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum GcPart {
    Reclaim,
    Effect,
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
            for scenario in Scenario::EXTRA {
                println!("{scenario} (only when named)");
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
            for path in &args.ca_cert {
                let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                berth_conformance::bench::client::trust_root_pem(&pem)
                    .with_context(|| format!("CA certificate {}", path.display()))?;
            }
            if !args.peer_url.is_empty() {
                berth_conformance::bench::set_peer_urls(&args.url, args.peer_url.clone());
            }
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
        Command::Gc(args) => gc(args).await,
        Command::Compare(args) => {
            let data_root = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
            let config = CompareConfig {
                berth_bin: args.berth_bin.clone(),
                distribution_bin: args.distribution_bin.clone(),
                scenarios: args.common.scenarios(),
                params: args.common.params(),
                rounds: args.rounds,
                variants: args.variants.clone(),
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

/// The environment of a Berth for the GC benchmark: no scheduled collection (only the
/// benchmark's), and the S3 bucket under a prefix of its own when asked.
fn gc_env(args: &GcArgs) -> Vec<(String, String)> {
    let mut env = vec![("BERTH_GC__INTERVAL".to_owned(), "off".to_owned())];
    if let Some(endpoint) = &args.s3_endpoint {
        let prefix = format!("berth-bench/{}", uuid::Uuid::new_v4().simple());
        let aws = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        for (k, v) in [
            ("BERTH_STORAGE__BACKEND", "s3".to_owned()),
            ("BERTH_STORAGE__S3__ENDPOINT", endpoint.clone()),
            ("BERTH_STORAGE__S3__BUCKET", args.s3_bucket.clone()),
            ("BERTH_STORAGE__S3__PREFIX", prefix),
            ("BERTH_STORAGE__S3__PATH_STYLE", "true".to_owned()),
            ("BERTH_STORAGE__S3__ACCESS_KEY_ID", aws("AWS_ACCESS_KEY_ID", "berth-bench")),
            ("BERTH_STORAGE__S3__SECRET_ACCESS_KEY", aws("AWS_SECRET_ACCESS_KEY", "berth-bench-secret")),
        ] {
            env.push((k.to_owned(), v));
        }
    }
    env.extend(args.berth_env.iter().cloned());
    env
}

async fn gc(args: GcArgs) -> anyhow::Result<ExitCode> {
    use berth_conformance::bench::gc::{self, GcParams, GcReport};
    use berth_conformance::bench::server::ServerProcess;
    use berth_conformance::bench::{PayloadSource, Target};
    use std::sync::Arc;

    let mut params = if args.quick { GcParams::quick() } else { GcParams::full() };
    params.blobs = args.blobs.unwrap_or(params.blobs);
    params.effect_garbage = args.effect_garbage.unwrap_or(params.effect_garbage);
    if let Some(pause) = args.effect_pause {
        params.effect_pause = std::time::Duration::try_from_secs_f64(pause).context("--effect-pause")?;
    }
    let data_root = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let source = Arc::new(PayloadSource::new(usize::try_from(params.largest_blob())?));
    let mut report = GcReport {
        machine: berth_conformance::bench::machine::Machine::probe(),
        berth: berth_conformance::bench::machine::version_of(&args.berth_bin),
        storage: match &args.s3_endpoint {
            Some(e) => format!("S3 ({e}, bucket {})", args.s3_bucket),
            None => format!("local disk ({})", data_root.display()),
        },
        params: params.clone(),
        reclaim: Vec::new(),
        effect: Vec::new(),
        errors: Vec::new(),
    };
    let progress = progress();
    let mut progress = progress;
    // (measurement, with a collector) for every round, the effect alternating which goes first.
    let mut plan: Vec<(GcPart, bool)> = Vec::new();
    if args.only != Some(GcPart::Effect) {
        plan.extend((0..args.rounds).map(|_| (GcPart::Reclaim, false)));
    }
    if args.only != Some(GcPart::Reclaim) {
        for round in 0..args.rounds {
            let first = round % 2 == 1;
            plan.extend([(GcPart::Effect, first), (GcPart::Effect, !first)]);
        }
    }
    for (i, (part, with)) in plan.into_iter().enumerate() {
        let server =
            ServerProcess::start_berth(&args.berth_bin, &data_root, &gc_env(&args)).await.context("starting Berth")?;
        let target = Target::new(server.url().clone(), None)?;
        let namespace = format!("gcbench/r{i}");
        let pid = Some(server.pid());
        match part {
            GcPart::Reclaim => {
                progress(&format!("reclaim round: seeding {} unreferenced blobs", params.blobs));
                match gc::reclaim_round(&target, &source, &namespace, &params, pid).await {
                    Ok(r) => {
                        progress(&format!(
                            "reclaimed {} blobs in {:.2} s: {:.0} blobs/s, server CPU {:?} s (seeding {:.0} pushes/s)",
                            r.reclaimed,
                            r.collect_secs,
                            r.blobs_per_sec,
                            r.server_cpu_secs,
                            r.seeded.blobs as f64 / r.seeded.push_secs
                        ));
                        report.reclaim.push(r);
                    }
                    Err(e) => report.errors.push(format!("reclaim round: {e}")),
                }
            }
            GcPart::Effect => {
                let label = if with { "collector looping" } else { "no collector" };
                progress(&format!("effect round, {label}"));
                match gc::effect_round(&target, &source, &namespace, &params, with, pid).await {
                    Ok(r) => {
                        progress(&format!(
                            "push {:.1} images/s, pull {:.1} images/s, {} collections",
                            r.push_images_per_sec, r.pull_images_per_sec, r.collections
                        ));
                        report.effect.push(r);
                    }
                    Err(e) => report.errors.push(format!("effect round ({label}): {e}")),
                }
            }
        }
        for line in server.error_lines(5) {
            report.errors.push(format!("server log: {line}"));
        }
        server.stop().await?;
    }
    let markdown = report.markdown();
    print!("{markdown}");
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, &markdown).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if report.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
