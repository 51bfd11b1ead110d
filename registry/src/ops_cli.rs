//! `berth webhooks …`, `berth deliveries …`, `berth task-def resolve` and `berth repository
//! delete|settings`: the same verbs as the admin API (`berth_registry::events::admin`, the service),
//! run on the stores of the configuration. A running server picks up what they change at
//! its next poll (`events.poll_interval`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use berth_oci::RepoName;
use berth_registry::error::{ApiError, Override};
use berth_registry::events::admin::{Webhooks, filter_from};
use berth_registry::events::config::WebhookSpec;
use berth_registry::service::Registry;
use berth_storage::metadata::{DeliveryPhase, Origin};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum WebhooksAction {
    /// Every subscription with its delivery counts (pending, retrying, delivered, dead).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create or replace a subscription.
    ///
    /// Without --secret-stdin a subscription being replaced keeps its secret, and a new one
    /// gets a generated secret, printed once.
    Put {
        /// Subscription name: 1 to 64 of A-Z a-z 0-9 . _ -
        name: String,
        /// Where deliveries are POSTed: an http:// or https:// URL.
        #[arg(long)]
        url: String,
        /// Read the signing secret (16 characters or more) from the first line of standard input.
        #[arg(long)]
        secret_stdin: bool,
        /// An event type to send, e.g. manifest.push (repeatable; default: all the format can express).
        #[arg(long = "event", value_name = "TYPE")]
        events: Vec<String>,
        /// A repository pattern, `*` and `?` as wildcards (repeatable; default: every repository).
        #[arg(long = "repository", value_name = "PATTERN")]
        repositories: Vec<String>,
        /// A tag pattern (repeatable): then only events with a matching tag are sent.
        #[arg(long = "tag", value_name = "PATTERN")]
        tags: Vec<String>,
        /// Payload format: cloudevents (default), distribution or ecr.
        #[arg(long)]
        format: Option<String>,
        /// An extra request header, NAME=VALUE (repeatable).
        #[arg(long = "header", value_name = "NAME=VALUE")]
        headers: Vec<String>,
        /// Time allowed per attempt, e.g. 5s or 500ms (default: 5s).
        #[arg(long)]
        timeout: Option<String>,
        /// Attempts before a delivery is dead-lettered, 1 to 100 (default: 10).
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Store it disabled: events are not delivered until it is put again without this.
        #[arg(long)]
        disabled: bool,
        /// Print the subscription (with a generated secret) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a subscription with its deliveries.
    Delete {
        /// The subscription's name.
        name: String,
    },
}

// Which deliveries: every flag given must match. (A doc comment here would become the help
// of every command that flattens it.)
#[derive(Args)]
pub struct Selector {
    /// Only the deliveries of this webhook subscription.
    #[arg(long)]
    webhook: Option<String>,
    /// Only deliveries in this state: pending, retrying, delivered or dead.
    #[arg(long)]
    state: Option<String>,
    /// Only deliveries of events in this repository (its exact name).
    #[arg(long)]
    repository: Option<String>,
    /// Only the delivery with this id.
    #[arg(long)]
    id: Option<i64>,
    /// Only the deliveries of this event id (a UUID).
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

    /// The filter of a replay or purge, which must select something: all deliveries ever
    /// kept is rarely what was meant.
    fn chosen(&self, verb: &str) -> anyhow::Result<berth_storage::metadata::DeliveryFilter> {
        if self.webhook.is_none()
            && self.state.is_none()
            && self.repository.is_none()
            && self.id.is_none()
            && self.event.is_none()
        {
            anyhow::bail!("{verb}: say which deliveries: --webhook, --state, --repository, --id or --event");
        }
        Ok(filter_from(&self.pairs(None))?)
    }
}

#[derive(Subcommand)]
pub enum DeliveriesAction {
    /// Deliveries, newest first.
    List {
        #[command(flatten)]
        select: Selector,
        /// Show at most this many (0: all).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One delivery with its event and every attempt (status codes, errors, durations).
    Show {
        /// The delivery id, as `berth deliveries list` shows it.
        id: i64,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
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
    /// Print a task definition with every image on this registry pinned to its digest.
    Resolve {
        /// The task definition (ECS JSON); `-` reads standard input.
        file: PathBuf,
        /// A host name of this registry, e.g. reg.example:5000 (repeatable; adds to config `hosts`).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Leave images on other registries as they are instead of failing.
        #[arg(long)]
        keep_foreign: bool,
    },
}

#[derive(Subcommand)]
pub enum RepositoryAction {
    /// Create a repository (ECR's CreateRepository); settings left out come from its template.
    Create(crate::templates_cli::CreateArgs),
    /// Delete a repository with its tags, manifests and policy; one holding images only with --force.
    Delete {
        /// The repository, e.g. team/app.
        name: String,
        /// Delete it even though it holds manifests (they go with it).
        #[arg(long)]
        force: bool,
    },
    /// Show a repository's settings, or set its tag mutability (ECR's PutImageTagMutability).
    Settings {
        /// The repository, e.g. team/app.
        #[arg(long)]
        repository: String,
        /// Set it: MUTABLE, IMMUTABLE, IMMUTABLE_WITH_EXCLUSION or MUTABLE_WITH_EXCLUSION.
        #[arg(long, value_name = "MODE")]
        tag_mutability: Option<String>,
        /// A wildcard exclusion filter, e.g. 'dev-*' (repeatable, up to 5; with a *_WITH_EXCLUSION mode).
        #[arg(long = "exclude", value_name = "FILTER")]
        exclusions: Vec<String>,
        /// Print JSON (ECR's DescribeRepositories fields) instead of lines.
        #[arg(long)]
        json: bool,
    },
}

/// The words of the `berth` command for a switch that overrides a refusal.
fn flag_of(hint: Override) -> &'static str {
    match hint {
        Override::Force => "--force",
        Override::KeepForeign => "--keep-foreign",
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn origin() -> Origin {
    Origin::command(&format!("berth cli ({})", std::env::var("USER").unwrap_or_else(|_| "unknown user".into())))
}

/// `webhooks put --json`: the subscription and whether it was new.
#[derive(serde::Serialize)]
struct Saved<'a> {
    created: bool,
    #[serde(flatten)]
    webhook: &'a berth_registry::events::admin::WebhookView,
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
            json,
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
                .map(|h| {
                    h.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .with_context(|| format!("--header {h:?}: give NAME=VALUE"))
                })
                .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
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
            if json {
                return print_json(&Saved { created, webhook: &view });
            }
            let did = if created { "created" } else { "replaced" };
            let off = if view.enabled { "" } else { ", disabled" };
            match &view.secret {
                Some(secret) => {
                    println!("webhook {name} {did} ({}{off}); signing secret (shown once): {secret}", view.url)
                }
                None => println!("webhook {name} {did} ({}{off})", view.url),
            }
        }
        WebhooksAction::Delete { name } => {
            hooks.delete(&name).await?;
            println!("webhook {name} deleted with its deliveries");
        }
    }
    Ok(())
}

/// "1 delivery", "3 deliveries".
fn deliveries_count(n: u64) -> String {
    if n == 1 { "1 delivery".to_owned() } else { format!("{n} deliveries") }
}

/// A time in Unix milliseconds, as RFC 3339 (UTC, to the second).
fn at(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
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
                    DeliveryPhase::of(&d).as_str(),
                    d.attempts,
                    d.event.kind.as_str(),
                    what,
                    d.last_error.unwrap_or_default()
                );
            }
        }
        DeliveriesAction::Show { id, json } => {
            let view = hooks.delivery(id).await?;
            if json {
                return print_json(&view);
            }
            let d = &view.delivery;
            let what = match &d.event.tag {
                Some(t) => format!("{}:{t}", d.event.repository),
                None => d.event.repository.clone(),
            };
            println!("delivery {} to webhook {}: {}", d.id, d.subscription, DeliveryPhase::of(d).as_str());
            println!("  event:    {} {what} (id {})", d.event.kind, d.event.id);
            println!("  created:  {}", at(d.created_ms));
            if d.state == berth_storage::metadata::DeliveryState::Pending {
                println!("  next try: {}", at(d.next_attempt_ms));
            }
            println!("  attempts: {}", d.attempts);
            for a in &view.attempts_log {
                let status = a.status.map_or_else(|| "-".to_owned(), |s| s.to_string());
                let error = a.error.as_deref().unwrap_or("");
                println!("    #{:<3} {}  status {status:<4} {:>6} ms  {error}", a.number, at(a.at_ms), a.duration_ms);
            }
        }
        DeliveriesAction::Replay { select } => {
            let n = hooks.replay(&select.chosen("replay")?).await?;
            println!("{} replayed: sent again, attempts starting over", deliveries_count(n));
        }
        DeliveriesAction::Purge { select } => {
            let n = hooks.purge(&select.chosen("purge")?).await?;
            println!("{} purged", deliveries_count(n));
        }
    }
    Ok(())
}

pub async fn task_def(registry: &Registry, action: TaskDefAction) -> anyhow::Result<()> {
    let TaskDefAction::Resolve { file, hosts, keep_foreign } = action;
    let text = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading the task definition from standard input")?;
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
        Err(ApiError::ImagesUnresolved(list)) => {
            for u in &list {
                let hint = u.hint().map(|h| format!("; {} leaves it as it is", flag_of(h))).unwrap_or_default();
                eprintln!("{}: {}{hint} ({})", u.container.as_deref().unwrap_or("?"), u.message, u.code);
            }
            anyhow::bail!("{} image(s) could not be pinned", list.len())
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn repository(registry: &Registry, action: RepositoryAction) -> anyhow::Result<()> {
    let (name, force) = match action {
        RepositoryAction::Create(args) => return crate::templates_cli::create_repository(registry, args).await,
        RepositoryAction::Delete { name, force } => (name, force),
        RepositoryAction::Settings { repository, tag_mutability, exclusions, json } => {
            return repository_settings(registry, &repository, tag_mutability, exclusions, json).await;
        }
    };
    let repo: RepoName = name.parse().map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    match registry.delete_repository(&repo, force, &origin()).await {
        Ok(()) => {}
        Err(ApiError::NameUnknown) => anyhow::bail!("no repository {repo}"),
        Err(e) => match e.hint() {
            Some(h) => anyhow::bail!("{e} ({})", flag_of(h)),
            None => return Err(e.into()),
        },
    }
    println!("repository {repo} deleted");
    Ok(())
}

/// `berth repository settings`: shows them, or sets the tag mutability.
async fn repository_settings(
    registry: &Registry,
    name: &str,
    tag_mutability: Option<String>,
    exclusions: Vec<String>,
    json: bool,
) -> anyhow::Result<()> {
    use berth_registry::rules::mutability::{Mode, TagMutability};
    let repo: RepoName = name.parse().map_err(|e| anyhow::anyhow!("--repository {name}: {e}"))?;
    let unknown = |e: ApiError| match e {
        ApiError::NotFound(_) => anyhow::anyhow!("no repository {repo}"),
        e => e.into(),
    };
    // The rules' messages name ECR's fields; here the flags stand for them.
    let in_flags = |e: String| {
        anyhow::anyhow!(
            "{}",
            e.replace("exclusion filter", "--exclude").replace("imageTagMutability", "--tag-mutability")
        )
    };
    let view = match tag_mutability {
        None if !exclusions.is_empty() => {
            anyhow::bail!("--exclude needs --tag-mutability IMMUTABLE_WITH_EXCLUSION or MUTABLE_WITH_EXCLUSION")
        }
        None => registry.repository_settings(&repo).await.map_err(unknown)?,
        Some(mode) => {
            let mode: Mode = mode.parse().map_err(in_flags)?;
            let setting = TagMutability::new(mode, exclusions).map_err(in_flags)?;
            let view = registry.put_tag_mutability(&repo, &setting).await.map_err(unknown)?;
            if !json {
                let excluded = match setting.exclusions.as_slice() {
                    [] => String::new(),
                    list => format!(" except {}", list.join(", ")),
                };
                println!("repository {repo}: tag mutability {}{excluded}", setting.mode);
                return Ok(());
            }
            view
        }
    };
    if json {
        return print_json(&view);
    }
    let created = std::time::UNIX_EPOCH + std::time::Duration::from_secs(view.created_at.max(0) as u64);
    let filters: Vec<&str> = view.image_tag_mutability_exclusion_filters.iter().map(|f| f.filter.as_str()).collect();
    println!("repository      {}", view.repository_name);
    println!("created         {}", humantime::format_rfc3339_seconds(created));
    println!("tag mutability  {}", view.image_tag_mutability);
    if !filters.is_empty() {
        println!("exclusions      {}", filters.join(", "));
    }
    match &view.encryption_configuration.key_name {
        Some(key) => println!("encryption      {} (key {key})", view.encryption_configuration.encryption_type),
        None => println!("encryption      none (plaintext)"),
    }
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
