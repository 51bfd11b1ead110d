//! `berth templates …` and `berth repository create`: the same verbs as the admin API's
//! `/api/v1/templates` and `POST /api/v1/repositories` (`berth_registry::service::templates`),
//! run on the stores of the configuration. A running server uses a template stored here for
//! the next repository it creates.

use std::path::PathBuf;

use anyhow::Context;
use berth_registry::service::Registry;
use berth_registry::service::templates::{
    CreateRepositoryInput, EncryptionConfiguration, ExclusionFilter, ResourceTag, TemplateInput, TemplateView,
};
use berth_storage::metadata::Origin;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum TemplatesAction {
    /// Every repository creation template: stored ones, then the configuration's key rules.
    List {
        /// Print JSON (ECR's repositoryCreationTemplates) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One template as JSON, in ECR's shape (ready to edit and put back).
    Get {
        /// ROOT or a namespace, e.g. prod/team.
        prefix: String,
    },
    /// Create or update a template from a JSON file in ECR's shape (prefix, appliedFor, ...).
    ///
    /// On an update, fields the file leaves out keep their value.
    Put {
        /// The template's JSON file, e.g. prod.json.
        file: PathBuf,
    },
    /// Delete a stored template (repositories created with it keep their settings).
    Delete {
        /// ROOT or a namespace, e.g. prod/team.
        prefix: String,
    },
}

/// `berth repository create`'s options: ECR's CreateRepository; what is left out comes from
/// the template a push to the name would use.
#[derive(clap::Args)]
pub struct CreateArgs {
    /// The repository, e.g. team/app.
    #[arg(long)]
    pub repository: String,
    /// MUTABLE, IMMUTABLE, IMMUTABLE_WITH_EXCLUSION or MUTABLE_WITH_EXCLUSION.
    #[arg(long)]
    pub image_tag_mutability: Option<String>,
    /// An exclusion filter (wildcard, e.g. latest or dev-*); repeat for more.
    #[arg(long = "exclusion")]
    pub exclusions: Vec<String>,
    /// The key to seal its blobs with (a name from `berth keys list`); default: the template's.
    #[arg(long)]
    pub kms_key: Option<String>,
    /// A resource tag KEY=VALUE; repeat for more (replaces the template's tags).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Print the repository as JSON.
    #[arg(long)]
    pub json: bool,
}

fn origin() -> Origin {
    Origin::command(&format!("berth cli ({})", std::env::var("USER").unwrap_or_else(|_| "unknown user".into())))
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn line(t: &TemplateView) {
    let applied: Vec<&str> = t.applied_for.iter().map(|a| a.as_str()).collect();
    let key = t.encryption_configuration.kms_key.as_deref().unwrap_or("(default)");
    println!(
        "{:<30} {:<7} {:<25} {:<16} {}",
        t.prefix,
        serde_json::to_value(t.source).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
        t.image_tag_mutability,
        key,
        applied.join(",")
    );
}

pub async fn templates(registry: &Registry, action: TemplatesAction) -> anyhow::Result<()> {
    match action {
        TemplatesAction::List { json } => {
            let templates = registry.templates().await?;
            if json {
                return print_json(&serde_json::json!({ "repositoryCreationTemplates": templates }));
            }
            println!("{:<30} {:<7} {:<25} {:<16} APPLIED FOR", "PREFIX", "SOURCE", "TAG MUTABILITY", "KEY");
            templates.iter().for_each(line);
        }
        TemplatesAction::Get { prefix } => print_json(&registry.template(&prefix).await?)?,
        TemplatesAction::Put { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let input: TemplateInput = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a template in ECR's shape", file.display()))?;
            let (created, view) = registry.put_template(&input).await?;
            println!("template {} {}", view.prefix, if created { "created" } else { "updated" });
        }
        TemplatesAction::Delete { prefix } => {
            let view = registry.delete_template(&prefix).await?;
            println!("template {} deleted", view.prefix);
        }
    }
    Ok(())
}

/// `berth repository create`.
pub async fn create_repository(registry: &Registry, args: CreateArgs) -> anyhow::Result<()> {
    let tags = args
        .tags
        .iter()
        .map(|t| {
            let (k, v) = t.split_once('=').with_context(|| format!("--tag {t}: write KEY=VALUE"))?;
            Ok(ResourceTag { key: k.to_owned(), value: v.to_owned() })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let input = CreateRepositoryInput {
        repository_name: args.repository,
        image_tag_mutability: args.image_tag_mutability,
        image_tag_mutability_exclusion_filters: (!args.exclusions.is_empty()).then(|| {
            args.exclusions
                .iter()
                .map(|f| ExclusionFilter { filter_type: "WILDCARD".into(), filter: f.clone() })
                .collect()
        }),
        encryption_configuration: args
            .kms_key
            .map(|k| EncryptionConfiguration { encryption_type: "KMS".into(), kms_key: Some(k) }),
        tags: (!tags.is_empty()).then_some(tags),
        ..Default::default()
    };
    let repository = registry.create_repository(&input, &origin()).await?;
    if args.json {
        return print_json(&repository);
    }
    println!(
        "repository {} created ({}, key {})",
        repository.repository_name,
        repository.image_tag_mutability,
        repository.encryption_configuration.as_ref().and_then(|e| e.kms_key.as_deref()).unwrap_or("none: plaintext")
    );
    Ok(())
}
