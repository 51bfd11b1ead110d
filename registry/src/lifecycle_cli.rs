//! `berth lifecycle`: repositories' lifecycle policies (ECR's), their previews and runs.

use std::path::PathBuf;

use anyhow::Context;
use berth_oci::RepoName;
use berth_registry::service::Registry;
use berth_registry::service::lifecycle::{PolicyView, PreviewView, ResultView, RunView};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum LifecycleAction {
    /// Set a repository's lifecycle policy from a JSON file (`-`: standard input).
    Put {
        /// The repository, e.g. team/app.
        #[arg(long)]
        repository: String,
        /// The policy, as ECR's lifecycle policy JSON.
        policy: PathBuf,
    },
    /// Print a repository's lifecycle policy.
    Get {
        /// The repository, e.g. team/app.
        #[arg(long)]
        repository: String,
        /// Print ECR's GetLifecyclePolicy answer instead of the policy alone.
        #[arg(long)]
        json: bool,
    },
    /// Delete a repository's lifecycle policy.
    Delete {
        /// The repository, e.g. team/app.
        #[arg(long)]
        repository: String,
    },
    /// Show what a policy would expire now; change nothing.
    ///
    /// Previews the policy in the file given, else the repository's own.
    Preview {
        /// The repository, e.g. team/app.
        #[arg(long)]
        repository: String,
        /// A policy to try instead of the stored one (`-`: standard input).
        policy: Option<PathBuf>,
        /// Print ECR's GetLifecyclePolicyPreview answer instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// The repositories with a policy, and what each one's last run did.
    Status {
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Run lifecycle policies now: one repository's, or every one's.
    ///
    /// Expires what the preview shows, through the normal deletion (events from actor
    /// `lifecycle`), whatever delete.manifests says; an image whose tags changed since the
    /// plan is kept. The bytes go at the next garbage collection.
    Run {
        /// Only this repository (default: every repository with a policy).
        #[arg(long)]
        repository: Option<String>,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
}

fn repo(name: &str) -> anyhow::Result<RepoName> {
    name.parse().map_err(|e| anyhow::anyhow!("--repository {name}: {e}"))
}

fn read_policy(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        return std::io::read_to_string(std::io::stdin()).context("reading the policy from standard input");
    }
    std::fs::read_to_string(path).with_context(|| format!("reading the policy {}", path.display()))
}

pub async fn lifecycle(registry: &Registry, action: LifecycleAction) -> anyhow::Result<()> {
    match action {
        LifecycleAction::Put { repository, policy } => {
            let repo = repo(&repository)?;
            let text = read_policy(&policy)?;
            registry.put_lifecycle_policy(&repo, &text).await?;
            println!(
                "lifecycle policy of {repo} set (`berth lifecycle preview --repository {repo}` shows what it expires)"
            );
        }
        LifecycleAction::Get { repository, json } => {
            let repo = repo(&repository)?;
            let view = PolicyView::new(&repo, registry.lifecycle_policy(&repo).await?);
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                println!("{}", view.lifecycle_policy_text);
            }
        }
        LifecycleAction::Delete { repository } => {
            let repo = repo(&repository)?;
            registry.delete_lifecycle_policy(&repo).await?;
            println!("lifecycle policy of {repo} deleted");
        }
        LifecycleAction::Preview { repository, policy, json } => {
            let repo = repo(&repository)?;
            let text = policy.as_ref().map(read_policy).transpose()?;
            let view: PreviewView = registry.lifecycle_preview_view(&repo, text).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
                return Ok(());
            }
            for r in &view.preview_results {
                println!("would expire {}", line(r));
            }
            println!("{} image(s) would expire in {repo}", view.summary.expiring_image_total_count);
        }
        LifecycleAction::Status { json } => {
            let status = registry.lifecycle_status().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(());
            }
            if status.is_empty() {
                println!("no repository has a lifecycle policy");
            }
            for s in &status {
                match s.last_evaluated_at {
                    Some(at) => println!(
                        "{}: last run {}: {} image(s) expired, {} kept",
                        s.repository_name,
                        time(at),
                        s.expired_image_count,
                        s.kept_image_count
                    ),
                    None => println!("{}: never run", s.repository_name),
                }
            }
        }
        LifecycleAction::Run { repository, json } => {
            let repo = repository.as_deref().map(repo).transpose()?;
            let reports = registry.run_lifecycle(repo.as_ref()).await?;
            let views: Vec<RunView> = reports.iter().map(RunView::new).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "runs": views }))?);
                return Ok(());
            }
            if views.is_empty() {
                println!("no repository has a lifecycle policy");
            }
            for v in &views {
                for r in &v.expired {
                    println!("expired {}", line(r));
                }
                for r in &v.skipped {
                    println!("kept {}", line(r));
                }
                match &v.error {
                    Some(e) => println!("{}: not run: {e}", v.repository_name),
                    None => println!(
                        "{}: {} image(s) expired, {} kept",
                        v.repository_name,
                        v.expired.len(),
                        v.skipped.len()
                    ),
                }
            }
            if views.iter().any(|v| v.error.is_some()) {
                anyhow::bail!("some policies could not run");
            }
        }
    }
    Ok(())
}

/// One image in a line: digest, tags, push and pull times, why.
fn line(r: &ResultView) -> String {
    let tags = if r.image_tags.is_empty() { "untagged".to_owned() } else { r.image_tags.join(",") };
    let pulled = r.last_recorded_pull_time.map(time).unwrap_or_else(|| "never".into());
    format!("{} [{tags}] pushed {} pulled {pulled}: {}", r.image_digest, time(r.image_pushed_at), r.reason)
}

fn time(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or_default());
    humantime::format_rfc3339_seconds(t).to_string()
}
