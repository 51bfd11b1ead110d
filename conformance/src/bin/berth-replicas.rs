//! `berth-replicas`: runs a seeded, randomized workload spread over several replicas of one
//! registry, then checks that every replica serves the same tags, manifests, blobs and
//! catalog, and that these match what the workload did. One line per phase on stdout, an
//! `INCONSISTENT …` line per problem, then a summary. Exits 0 when the replicas agree, 1
//! on any inconsistency, 2 when the run could not start.

use std::process::ExitCode;
use std::time::Duration;

use berth_conformance::Url;
use berth_conformance::auth::CredentialArgs;
use berth_conformance::replicas::{self, Config, Sizes};
use clap::Parser;

/// Cross-replica consistency check for OCI registries (black box, plain HTTP).
#[derive(Debug, Parser)]
#[command(name = "berth-replicas", version)]
struct Args {
    /// A replica's base URL, e.g. http://127.0.0.1:5001; repeat for each replica
    #[arg(long = "url", value_name = "URL", required = true)]
    urls: Vec<Url>,
    /// Seed of every choice and every byte [default: random, printed]
    #[arg(long)]
    seed: Option<u64>,
    /// Operations in the workload
    #[arg(long, default_value_t = 200)]
    ops: usize,
    /// Operations running at once
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Prefix of every repository created [default: replicas/RANDOM]
    #[arg(long)]
    namespace: Option<String>,
    /// Seconds to wait after the workload before reading back (replicas may cache tags)
    #[arg(long, default_value_t = 3.0)]
    settle_seconds: f64,
    /// Upper bound in seconds for one operation, requests included
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Small blobs only (kilobytes): a quick run
    #[arg(long)]
    small: bool,
    #[command(flatten)]
    credentials: CredentialArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = Config::new(args.urls);
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(namespace) = args.namespace {
        config.namespace = namespace.trim_matches('/').to_owned();
    }
    config.ops = args.ops;
    config.concurrency = args.concurrency;
    config.settle = Duration::try_from_secs_f64(args.settle_seconds.max(0.0)).unwrap_or(Duration::from_secs(3));
    config.timeout = Duration::from_secs(args.timeout.max(1));
    if args.small {
        config.sizes = Sizes::small();
    }
    config.credentials = args.credentials.credentials();
    match replicas::run(&config, &mut |line: &str| println!("{line}")).await {
        Ok(report) if report.passed() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("berth-replicas: {err}");
            ExitCode::from(2)
        }
    }
}
