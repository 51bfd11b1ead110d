//! `berth images list`: a repository's images with their details, the same verb as the admin
//! API's `GET /api/v1/repositories/<name>/images` (`berth_registry::service::images`), run on
//! the stores of the configuration. Last pull times are as last flushed by the servers (each
//! writes its pulls every few seconds and when it stops).

use berth_oci::RepoName;
use berth_registry::error::ApiError;
use berth_registry::service::Registry;
use berth_registry::service::images::{DescribeImages, ImageDetail, TagStatus};
use berth_registry::service::usage::human_bytes;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ImagesAction {
    /// A repository's images: tags, digest, size, push and last pull times.
    ///
    /// SIZE is ECR's imageSizeInBytes: an image's config and layers (compressed, as
    /// stored); for an index, its largest child's.
    List {
        /// The repository, e.g. team-a/app.
        #[arg(long)]
        repository: String,
        /// TAGGED or UNTAGGED for only those images; ANY for all.
        #[arg(long, default_value = "ANY")]
        tag_status: String,
        /// Print ECR's DescribeImages JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn images(registry: &Registry, action: ImagesAction) -> anyhow::Result<()> {
    match action {
        ImagesAction::List { repository, tag_status, json } => {
            let repo: RepoName = repository.parse().map_err(|e| anyhow::anyhow!("--repository {repository}: {e}"))?;
            let tag_status: TagStatus = tag_status.parse().map_err(|e: String| anyhow::anyhow!("--tag-status: {e}"))?;
            let ask = DescribeImages { tag_status, ..Default::default() };
            let details = match registry.describe_images(&repo, &ask).await {
                Err(ApiError::NameUnknown) => anyhow::bail!("no repository {repo}"),
                other => other?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&details)?);
                return Ok(());
            }
            println!("{}", table(&details.image_details));
        }
    }
    Ok(())
}

/// The images as a table: TAGS, DIGEST, SIZE, PUSHED, LAST PULLED.
fn table(images: &[ImageDetail]) -> String {
    let rows: Vec<[String; 5]> = images
        .iter()
        .map(|i| {
            let mut tags = if i.image_tags.is_empty() { "<untagged>".to_owned() } else { i.image_tags.join(",") };
            if let Some(subject) = &i.subject_manifest_digest {
                tags = format!("{tags} (refers to {})", short(&subject.to_string()));
            }
            [
                tags,
                i.image_digest.to_string(),
                human_bytes(i.image_size_in_bytes),
                time(i.image_pushed_at),
                i.last_recorded_pull_time.map(time).unwrap_or_else(|| "never".into()),
            ]
        })
        .collect();
    let header = ["TAGS", "DIGEST", "SIZE", "PUSHED", "LAST PULLED"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |row: &[String; 5]| {
        let cells: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        cells.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(&header)];
    out.extend(rows.iter().map(line));
    if images.is_empty() {
        out.push("(no images)".into());
    }
    out.join("\n")
}

/// `sha256:0123456789ab`.
fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

fn time(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or_default());
    humantime::format_rfc3339_seconds(t).to_string()
}
