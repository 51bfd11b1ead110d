//! `berth webhooks …`, `berth deliveries …`, `berth task-def resolve` and `berth repository
//! delete`: the same verbs as the admin API (`berth_registry::events::admin`, the service),
//! run on the stores of the configuration. A running server picks up what they change at
//! its next poll (`events.poll_interval`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use berth_oci::RepoName;
use berth_registry::events::admin::{Webhooks, filter_from};
use berth_registry::events::config::WebhookSpec;
use berth_registry::service::Registry;
use berth_storage::metadata::Origin;
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum WebhooksAction {
    /// Every subscription with its delivery counts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Create or replace a subscription. Without --secret-stdin a new one keeps the secret
    /// it has, and a new subscription gets a generated secret, printed once.
    Put {
        name: String,
        #[arg(long)]
        url: String,
        /// Read the signing secret from the first line of standard input.
        #[arg(long)]
        secret_stdin: bool,
        /// An event type to send (repeatable; default: all the format can express).
        #[arg(long = "event")]
        events: Vec<String>,
        /// A repository pattern (`*`, `?`; repeatable).
        #[arg(long = "repository")]
        repositories: Vec<String>,
        /// A tag pattern (repeatable): then only events with a matching tag are sent.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// cloudevents (default), distribution or ecr.
        #[arg(long)]
        format: Option<String>,
        /// An extra request header, NAME=VALUE (repeatable).
        #[arg(long = "header", value_name = "NAME=VALUE")]
        headers: Vec<String>,
        #[arg(long)]
        timeout: Option<String>,
        #[arg(long)]
        max_attempts: Option<u32>,
        #[arg(long)]
        disabled: bool,
    },
    /// Delete a subscription with its deliveries.
    Delete { name: String },
}

/// Which deliveries.
#[derive(Args)]
pub struct Selector {
    #[arg(long)]
    webhook: Option<String>,
    /// pending, delivered or dead.
    #[arg(long)]
    state: Option<String>,
    #[arg(long)]
    repository: Option<String>,
    #[arg(long)]
    id: Option<i64>,
    /// An event id (UUID).
    #[arg(long)]
    event: Option<String>,
}

impl Selector {
    fn pairs(&self, limit: Option<usize>) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                p.push((k.to_owned(), v));
            }
        };
        add("subscription", self.webhook.clone());
        add("state", self.state.clone());
        add("repository", self.repository.clone());
        add("id", self.id.map(|i| i.to_string()));
        add("event", self.event.clone());
        add("limit", limit.map(|l| l.to_string()));
        p
    }
}

#[derive(Subcommand)]
pub enum DeliveriesAction {
    /// Deliveries, newest first.
    List {
        #[command(flatten)]
        select: Selector,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One delivery with its attempts (status codes, errors, durations).
    Show { id: i64 },
    /// Send the selected deliveries again (attempts start over).
    Replay {
        #[command(flatten)]
        select: Selector,
    },
    /// Delete the selected deliveries.
    Purge {
        #[command(flatten)]
        select: Selector,
    },
}

#[derive(Subcommand)]
pub enum TaskDefAction {
    /// Print the task definition in FILE (`-`: standard input) with every image on this
    /// registry pinned to its digest.
    Resolve {
        file: PathBuf,
        /// A host name clients use for this registry (repeatable; adds to config `hosts`).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Leave images on other registries as they are instead of failing.
        #[arg(long)]
        keep_foreign: bool,
    },
}

#[derive(Subcommand)]
pub enum RepositoryAction {
    /// Delete a repository; one holding images only with --force.
    Delete {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn origin() -> Origin {
    Origin::command(&format!("berth cli ({})", std::env::var("USER").unwrap_or_else(|_| "unknown user".into())))
}

pub async fn webhooks(registry: &Registry, action: WebhooksAction) -> anyhow::Result<()> {
    let hooks =
        Webhooks { meta: registry.meta.as_ref(), config: &registry.events.config, sealing: &registry.events.sealing };
    match action {
        WebhooksAction::List { json } => {
            let list = hooks.list().await?;
            if json {
                return print_json(&list);
            }
            println!(
                "{:<20} {:<12} {:>8} {:>8} {:>9} {:>6}  URL",
                "NAME", "FORMAT", "PENDING", "RETRYING", "DELIVERED", "DEAD"
            );
            for w in list {
                let c = w.deliveries.unwrap_or_default();
                let off = if w.enabled { "" } else { " (disabled)" };
                println!(
                    "{:<20} {:<12} {:>8} {:>8} {:>9} {:>6}  {}{off}",
                    w.name, w.format, c.pending, c.retrying, c.delivered, c.dead, w.url
                );
            }
        }
        WebhooksAction::Put {
            name,
            url,
            secret_stdin,
            events,
            repositories,
            tags,
            format,
            headers,
            timeout,
            max_attempts,
            disabled,
        } => {
            let secret = if secret_stdin {
                let mut line = String::new();
                std::io::stdin().read_to_string(&mut line).context("reading the secret from standard input")?;
                Some(line.lines().next().unwrap_or_default().to_owned())
            } else {
                None
            };
            let headers = headers
                .iter()
                .map(|h| h.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
                .collect::<Option<BTreeMap<_, _>>>()
                .context("--header takes NAME=VALUE")?;
            let spec = WebhookSpec {
                url,
                secret,
                events,
                repositories,
                tags,
                format,
                headers,
                timeout,
                max_attempts,
                enabled: Some(!disabled),
            };
            let (created, view) = hooks.put(&name, &spec).await?;
            if let Some(secret) = &view.secret {
                eprintln!("webhook {name} created; its signing secret (shown once):");
                println!("{secret}");
            } else {
                eprintln!("webhook {name} {}", if created { "created" } else { "replaced" });
            }
        }
        WebhooksAction::Delete { name } => {
            hooks.delete(&name).await?;
            eprintln!("webhook {name} deleted");
        }
    }
    Ok(())
}

pub async fn deliveries(registry: &Registry, action: DeliveriesAction) -> anyhow::Result<()> {
    let hooks =
        Webhooks { meta: registry.meta.as_ref(), config: &registry.events.config, sealing: &registry.events.sealing };
    match action {
        DeliveriesAction::List { select, limit, json } => {
            let list = hooks.deliveries(&filter_from(&select.pairs(Some(limit)))?).await?;
            if json {
                return print_json(&list);
            }
            println!(
                "{:>8} {:<16} {:<10} {:>8}  {:<18} {:<30} LAST ERROR",
                "ID", "WEBHOOK", "STATE", "ATTEMPTS", "EVENT", "REPOSITORY"
            );
            for d in list {
                let what = match &d.event.tag {
                    Some(t) => format!("{}:{t}", d.event.repository),
                    None => d.event.repository.clone(),
                };
                println!(
                    "{:>8} {:<16} {:<10} {:>8}  {:<18} {:<30} {}",
                    d.id,
                    d.subscription,
                    d.state.as_str(),
                    d.attempts,
                    d.event.kind.as_str(),
                    what,
                    d.last_error.unwrap_or_default()
                );
            }
        }
        DeliveriesAction::Show { id } => print_json(&hooks.delivery(id).await?)?,
        DeliveriesAction::Replay { select } => {
            let n = hooks.replay(&filter_from(&select.pairs(None))?).await?;
            eprintln!("{n} deliveries will be sent again");
        }
        DeliveriesAction::Purge { select } => {
            let n = hooks.purge(&filter_from(&select.pairs(None))?).await?;
            eprintln!("{n} deliveries purged");
        }
    }
    Ok(())
}

pub async fn task_def(registry: &Registry, action: TaskDefAction) -> anyhow::Result<()> {
    let TaskDefAction::Resolve { file, hosts, keep_foreign } = action;
    let text = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?
    };
    let doc: serde_json::Value = serde_json::from_str(&text).context("the task definition is not JSON")?;
    let mut all = registry.hosts.clone();
    all.extend(hosts);
    if all.is_empty() {
        anyhow::bail!("say which host names are this registry's: --host HOST:PORT (or config `hosts`)");
    }
    match registry.pin_task_definition(doc, &all, keep_foreign, None).await {
        Ok(pinned) => print_json(&pinned),
        Err(berth_registry::error::ApiError::ImagesUnresolved(list)) => {
            for u in &list {
                eprintln!("{}: {} ({})", u.container.as_deref().unwrap_or("?"), u.message, u.code);
            }
            anyhow::bail!("{} image(s) could not be pinned", list.len())
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn repository(registry: &Registry, action: RepositoryAction) -> anyhow::Result<()> {
    let RepositoryAction::Delete { name, force } = action;
    let repo: RepoName = name.parse().map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    registry.delete_repository(&repo, force, &origin()).await?;
    eprintln!("repository {repo} deleted");
    Ok(())
}

/// `berth scrub` found damage: the exit status says so (2), apart from failing to run (1).
#[derive(Debug, thiserror::Error)]
#[error("the scrub found {0} damaged object(s)")]
pub struct ScrubFoundDamage(pub usize);

/// `berth scrub`: reads back the stored blobs and prints what is damaged.
pub async fn scrub(
    registry: &Registry,
    repository: Option<String>,
    rate: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    use berth_registry::service::scrub::ScrubOptions;
    let repository = match repository {
        Some(name) => Some(name.parse::<RepoName>().map_err(|e| anyhow::anyhow!("{name}: {e}"))?),
        None => None,
    };
    let rate = match rate {
        Some(r) => berth_registry::config::parse_byte_rate(&r)
            .with_context(|| format!("--rate {r:?}: give bytes per second like 52428800 or 50MiB"))?,
        None => 0,
    };
    let report = registry.scrub(&ScrubOptions { repository: repository.clone(), rate }).await.map_err(|e| {
        match (e, &repository) {
            (berth_registry::error::ApiError::NameUnknown, Some(r)) => anyhow::anyhow!("no repository {r}"),
            (e, _) => anyhow::Error::from(e),
        }
    })?;
    if json {
        print_json(&report)?;
    } else {
        for d in &report.damaged {
            println!("DAMAGED {} ({}): {}", d.digest, d.copy, d.problem);
            println!("  object: {}", d.object);
            println!("  linked by: {}", d.repositories.join(", "));
        }
        println!(
            "scrubbed {} repositories: {} objects, {} bytes in {:.1} s; {} damaged",
            report.repositories,
            report.objects,
            report.bytes,
            report.seconds,
            report.damaged.len()
        );
    }
    if report.damaged.is_empty() { Ok(()) } else { Err(ScrubFoundDamage(report.damaged.len()).into()) }
}
