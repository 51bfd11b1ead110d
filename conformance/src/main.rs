//! `berth-conformance`: runs the suite against a registry URL and prints
//! `PASS name` / `FAIL name: reason` per case, then `N passed, N failed`.
//! Exits 1 if any case failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use berth_conformance::auth::CredentialArgs;
use berth_conformance::{Flags, SuiteConfig, Url};
use clap::Parser;

/// OCI distribution-spec conformance suite (black box, any registry).
#[derive(Debug, Parser)]
#[command(name = "berth-conformance", version)]
struct Args {
    /// Registry base URL, e.g. http://127.0.0.1:5000
    #[arg(long, env = "BERTH_CONFORMANCE_URL", required_unless_present = "list")]
    url: Option<Url>,
    /// Repository prefix for everything the suite pushes
    /// [default: conformance/<random>]
    #[arg(long)]
    namespace: Option<String>,
    /// The registry refuses manifest deletes (expect 405 UNSUPPORTED)
    #[arg(long)]
    no_delete_manifests: bool,
    /// The registry refuses blob deletes (expect 405 UNSUPPORTED)
    #[arg(long)]
    no_delete_blobs: bool,
    /// The registry has no referrers API (skip the referrers cases)
    #[arg(long)]
    no_referrers: bool,
    /// The registry does not mount across repositories (expect 202)
    #[arg(long)]
    no_cross_mount: bool,
    /// The registry supports `PUT manifests/<digest>?tag=..` (end-7b)
    #[arg(long)]
    tag_param: bool,
    #[command(flatten)]
    credentials: CredentialArgs,
    /// The registry takes Basic credentials only, no tokens (skip the token cases)
    #[arg(long)]
    no_token_auth: bool,
    /// Only run cases whose name or group contains this substring
    #[arg(long)]
    filter: Option<String>,
    /// Per-case timeout in seconds
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Also write the report as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
    /// Print the case list (group and name) and exit
    #[arg(long)]
    list: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if args.list {
        for case in berth_conformance::list() {
            println!("{:<18} {}", case.group.as_str(), case.name);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let url = args.url.context("--url is required")?;
    let mut config = SuiteConfig::new(url);
    if let Some(namespace) = args.namespace {
        config.namespace = namespace;
    }
    config.flags = Flags {
        delete_manifests: !args.no_delete_manifests,
        delete_blobs: !args.no_delete_blobs,
        referrers: !args.no_referrers,
        cross_mount: !args.no_cross_mount,
        tag_param: args.tag_param,
        token_auth: !args.no_token_auth,
    };
    config.credentials = args.credentials.credentials();
    config.filter = args.filter;
    config.case_timeout = Duration::from_secs(args.timeout.max(1));

    eprintln!("berth-conformance: {} (namespace {})", config.base_url, config.namespace);
    let report = berth_conformance::run_with_progress(&config, |case| {
        println!("{}", case.line());
    })
    .await;
    println!("auth: {}", report.auth);
    for skipped in &report.skipped {
        println!("SKIP {}: {}", skipped.name, skipped.reason);
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report).context("serializing the report")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{}", report.summary());
    Ok(if report.failed() > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
