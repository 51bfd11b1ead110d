//! `berth replication …`: the same verbs as the admin API's `/api/v1/replication`
//! (`berth_registry::service::replication`), run on the stores of the configuration. A
//! running server copies by the configuration stored here from its next delivery. The
//! copies themselves are deliveries: `berth deliveries list --webhook replication.<name>`,
//! `berth deliveries replay ...`.

use std::path::PathBuf;

use anyhow::Context;
use berth_oci::{Reference, RepoName};
use berth_registry::service::Registry;
use berth_registry::service::replication::ReplicationConfig;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum ReplicationAction {
    /// The replication configuration as JSON (destinations without their secrets, rules).
    Show,
    /// Replace the replication configuration with a JSON file of destinations and rules.
    ///
    /// A destination given without its password (or ECR secret key) keeps the stored one of
    /// the same user. Refused while the configuration file has a [replication] section.
    Put {
        /// The configuration's JSON file, e.g. replication.json.
        file: PathBuf,
    },
    /// Where one image stands at each destination: PENDING, IN_PROGRESS, COMPLETE or FAILED.
    Status {
        /// The repository, e.g. prod/app.
        repository: String,
        /// A tag or a digest.
        reference: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn replication(registry: &Registry, action: ReplicationAction) -> anyhow::Result<()> {
    match action {
        ReplicationAction::Show => print_json(&registry.replication().await?)?,
        ReplicationAction::Put { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let spec: ReplicationConfig = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a replication configuration", file.display()))?;
            let view = registry.put_replication(&spec).await?;
            println!(
                "replication configuration stored: {} destination(s), {} rule(s)",
                view.destinations.len(),
                view.rules.len()
            );
        }
        ReplicationAction::Status { repository, reference, json } => {
            let repo: RepoName = repository.parse().map_err(|e| anyhow::anyhow!("repository {repository:?}: {e}"))?;
            let reference: Reference =
                reference.parse().map_err(|e| anyhow::anyhow!("reference {reference:?}: a tag or a digest ({e})"))?;
            let status = registry.image_replication_status(&repo, &reference).await?;
            if json {
                return print_json(&status);
            }
            println!("{}@{}", status.repository, status.digest);
            println!("{:<26} {:<12} REASON", "DESTINATION", "STATUS");
            for s in &status.statuses {
                println!("{:<26} {:<12} {}", s.destination, s.status.as_str(), s.reason.as_deref().unwrap_or(""));
            }
            if status.statuses.is_empty() {
                println!("(no destination replicates this image)");
            }
        }
    }
    Ok(())
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
