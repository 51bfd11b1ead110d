//! `berth gc`: run the garbage collector now, or show the recent runs.

use berth_oci::RepoName;
use berth_registry::error::ApiError;
use berth_registry::service::Registry;
use berth_registry::service::gc::GcOptions;
use berth_storage::metadata::GcRun;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum GcAction {
    /// Collect garbage now, while servers keep serving.
    ///
    /// Takes unreferenced blob links older than gc.grace, the blobs no repository links,
    /// unused sealed copies, unknown objects and stale uploads. Progress goes to the log;
    /// the summary is printed at the end.
    Run {
        /// Count what would be reclaimed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only this repository's unreferenced links and the blobs they release.
        #[arg(long)]
        repository: Option<String>,
        /// Print the run as JSON instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// The recent runs, newest first, and who is collecting now.
    Status {
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
}

pub async fn gc(registry: &Registry, action: GcAction) -> anyhow::Result<()> {
    match action {
        GcAction::Run { dry_run, repository, json } => {
            let repository = match repository {
                Some(name) => Some(name.parse::<RepoName>().map_err(|e| anyhow::anyhow!("--repository {name}: {e}"))?),
                None => None,
            };
            let run = registry.collect(&GcOptions { dry_run, repository }).await.map_err(|e| match e {
                ApiError::Conflict(m) => anyhow::anyhow!("{m} (`berth gc status` shows it)"),
                e => anyhow::Error::from(e),
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&run)?);
            } else {
                println!("{}", line(&run));
            }
        }
        GcAction::Status { json } => {
            let status = registry.gc_status().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(());
            }
            match &status.lease {
                Some(l) => println!("collecting now: {} (lease until {})", l.owner, time(l.expires_ms)),
                None => println!("no collection is running"),
            }
            if status.runs.is_empty() {
                println!("no run recorded yet");
            }
            for run in &status.runs {
                println!("{}", line(run));
            }
        }
    }
    Ok(())
}

/// One run in a line: when, what, and what it reclaimed.
fn line(run: &GcRun) -> String {
    let c = &run.counts;
    let verb = if run.dry_run { "would reclaim" } else { "reclaimed" };
    let scope = run.repository.as_deref().map(|r| format!(" (repository {r})")).unwrap_or_default();
    let error = run.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
    format!(
        "{} {} {}{scope}{error}; {verb} {} links, {} blobs, {} copies, {} unknown objects, {} uploads, {} bytes in {:.1} s",
        time(run.started_ms),
        run.id,
        run.state.as_str(),
        c.links,
        c.blobs,
        c.copies,
        c.unknown_objects,
        c.uploads,
        c.bytes,
        run.duration_ms as f64 / 1000.0
    )
}

fn time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or_default());
    humantime::format_rfc3339_seconds(t).to_string()
}
