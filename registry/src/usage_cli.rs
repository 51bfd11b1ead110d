//! `berth usage` and `berth quota …`: the same verbs as the admin API's `/api/v1/usage` and
//! `/api/v1/quotas` (`berth_registry::service::usage`), run on the stores of the
//! configuration. A running server applies a quota set here at its next push.

use anyhow::Context;
use berth_oci::RepoName;
use berth_registry::error::ApiError;
use berth_registry::service::Registry;
use berth_registry::service::usage::{QuotaView, human_bytes};
use berth_storage::metadata::QuotaScope;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum QuotaAction {
    /// Every quota in effect (configuration and stored) with its scope's use.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Set the stored quota of a repository or prefix (it wins over the configuration's).
    ///
    /// SCOPE is a repository (team-a/app), a prefix for its repositories together
    /// (team-a/*) or * for the whole registry. A limit left out is no limit.
    Set {
        /// team-a/app, team-a/* or *.
        scope: String,
        /// Most bytes of blobs, e.g. 10GiB or 10737418240.
        #[arg(long)]
        bytes: Option<String>,
        /// Most images (manifests).
        #[arg(long)]
        images: Option<u64>,
        /// Print the quota as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete the stored quota of a scope (the configuration's, if any, applies again).
    Delete {
        /// team-a/app, team-a/* or *.
        scope: String,
    },
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn limit_text(limit: Option<u64>, used: u64, bytes: bool) -> String {
    let show = |n: u64| if bytes { human_bytes(n) } else { n.to_string() };
    match limit {
        Some(l) => format!("{} / {}", show(used), show(l)),
        None => format!("{} / -", show(used)),
    }
}

fn quota_lines(quotas: &[QuotaView]) {
    println!("{:<30} {:<7} {:>24} {:>16}", "SCOPE", "SOURCE", "BYTES (USED / LIMIT)", "IMAGES");
    for q in quotas {
        let source = if q.overrides_config { "api*" } else { source_name(q) };
        println!(
            "{:<30} {:<7} {:>24} {:>16}",
            q.scope,
            source,
            limit_text(q.max_bytes, q.used_bytes, true),
            limit_text(q.max_images, q.used_images, false)
        );
    }
    if quotas.iter().any(|q| q.overrides_config) {
        println!("(api*: set through the API, hiding the configuration's quota of the same scope)");
    }
}

fn source_name(q: &QuotaView) -> &'static str {
    match q.source {
        berth_registry::service::usage::QuotaSource::Config => "config",
        berth_registry::service::usage::QuotaSource::Api => "api",
    }
}

/// `berth usage`: the registry's totals and every repository, or one repository with the
/// quotas covering it.
pub async fn usage(registry: &Registry, repository: Option<String>, json: bool) -> anyhow::Result<()> {
    if let Some(name) = repository {
        let repo: RepoName = name.parse().map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        let view = match registry.repository_usage(&repo).await {
            Err(ApiError::NameUnknown) => anyhow::bail!("no repository {repo}"),
            other => other?,
        };
        if json {
            return print_json(&view);
        }
        let u = &view.usage;
        println!("repository {}", u.repository);
        println!("  bytes:     {} in {} blobs", berth_registry::service::usage::bytes_text(u.bytes), u.blobs);
        println!("  manifests: {}", u.manifests);
        println!("  tags:      {}", u.tags);
        if !view.quotas.is_empty() {
            println!();
            quota_lines(&view.quotas);
        }
        return Ok(());
    }
    let mut report = registry.usage_report(None, berth_registry::service::MAX_PAGE).await?;
    let mut repositories = std::mem::take(&mut report.repositories_page);
    while let Some(last) = report.next.take() {
        let mut next = registry.usage_report(Some(last), berth_registry::service::MAX_PAGE).await?;
        repositories.append(&mut next.repositories_page);
        report.next = next.next;
    }
    report.repositories_page = repositories;
    if json {
        return print_json(&report);
    }
    let r = &report.registry;
    println!("{:<40} {:>12} {:>8} {:>10} {:>6}", "REPOSITORY", "BYTES", "BLOBS", "MANIFESTS", "TAGS");
    for u in &report.repositories_page {
        println!("{:<40} {:>12} {:>8} {:>10} {:>6}", u.repository, human_bytes(u.bytes), u.blobs, u.manifests, u.tags);
    }
    println!();
    println!("repositories: {}", r.repositories);
    println!(
        "linked:       {} ({} blob links, {} manifests, {} tags)",
        human_bytes(r.bytes),
        r.blobs,
        r.manifests,
        r.tags
    );
    println!(
        "stored:       {} in {} distinct blobs; dedupe ratio {:.2}",
        human_bytes(r.stored_bytes),
        r.stored_blobs,
        r.dedupe_ratio
    );
    for k in &r.keys {
        println!("key {:<9} {} in {} sealed copies", format!("{}:", k.key), human_bytes(k.bytes), k.copies);
    }
    Ok(())
}

pub async fn quota(registry: &Registry, action: QuotaAction) -> anyhow::Result<()> {
    let scope_of = |s: &str| s.parse::<QuotaScope>().map_err(|e| anyhow::anyhow!(e));
    match action {
        QuotaAction::List { json } => {
            let quotas = registry.quota_views().await?;
            if json {
                return print_json(&quotas);
            }
            quota_lines(&quotas);
        }
        QuotaAction::Set { scope, bytes, images, json } => {
            let scope = scope_of(&scope)?;
            let bytes = match bytes {
                Some(b) => Some(
                    berth_registry::config::parse_byte_size(&b)
                        .with_context(|| format!("--bytes {b:?}: give a size like 10GiB or 10737418240"))?,
                ),
                None => None,
            };
            if bytes.is_none() && images.is_none() {
                anyhow::bail!("say what the quota of {scope} limits: --bytes, --images or both");
            }
            let (created, view) = registry.put_quota(&scope, bytes, images).await?;
            if json {
                return print_json(&view);
            }
            let mut limits = Vec::new();
            if let Some(b) = view.max_bytes {
                limits.push(format!("{} of blobs ({} in use)", human_bytes(b), human_bytes(view.used_bytes)));
            }
            if let Some(i) = view.max_images {
                limits.push(format!("{i} images ({} in use)", view.used_images));
            }
            let did = if created { "set" } else { "replaced" };
            println!("quota of {scope} {did}: {}", limits.join(", "));
        }
        QuotaAction::Delete { scope } => {
            let scope = scope_of(&scope)?;
            registry.delete_quota(&scope).await?;
            println!("quota of {scope} deleted");
        }
    }
    Ok(())
}
