//! `berth pull-through …`: the same verbs as the admin API's `/api/v1/pull-through-rules`
//! (`berth_registry::service::pull_through`), run on the stores of the configuration. A
//! running server sees a rule changed here within a few seconds.

use std::io::BufRead;

use anyhow::Context;
use berth_registry::service::Registry;
use berth_registry::service::pull_through::{Rule, RuleInput, RuleView};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum PullThroughAction {
    /// Every rule in effect: the configuration's, then the stored ones.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One rule as JSON (never its credentials).
    Get {
        /// ROOT or a namespace, e.g. hub.
        prefix: String,
    },
    /// Store a new rule: repositories under PREFIX are filled from UPSTREAM on a miss.
    Create(RuleArgs),
    /// Replace a stored rule's settings (credentials left out: the rule has none).
    Update(RuleArgs),
    /// Delete a stored rule (the repositories it filled stay).
    Delete {
        /// ROOT or a namespace, e.g. hub.
        prefix: String,
    },
    /// Check that the rule's upstream accepts its credentials (GET /v2/).
    Validate {
        /// ROOT or a namespace, e.g. hub.
        prefix: String,
    },
}

#[derive(clap::Args)]
pub struct RuleArgs {
    /// ROOT (what Docker's registry-mirrors sends: library/...) or a namespace, e.g. hub.
    prefix: String,
    /// The upstream registry, e.g. https://registry-1.docker.io.
    #[arg(long)]
    upstream: String,
    /// The namespace upstream that PREFIX stands for, e.g. library.
    #[arg(long)]
    upstream_prefix: Option<String>,
    /// Basic credentials upstream: the user name (with --password-stdin).
    #[arg(long)]
    username: Option<String>,
    /// Read the upstream password from standard input (one line).
    #[arg(long)]
    password_stdin: bool,
    /// An ECR upstream: the access key id (with --aws-secret-access-key-stdin).
    #[arg(long)]
    aws_access_key_id: Option<String>,
    /// Read the ECR upstream's secret access key from standard input (one line).
    #[arg(long)]
    aws_secret_access_key_stdin: bool,
    /// An ECR upstream's region.
    #[arg(long)]
    aws_region: Option<String>,
    /// An ECR upstream's API endpoint (default https://api.ecr.<region>.amazonaws.com).
    #[arg(long)]
    ecr_endpoint: Option<String>,
    /// How long a cached tag is served before it is checked upstream again (default 24h).
    #[arg(long)]
    refresh: Option<String>,
}

/// One line of standard input: a secret, never an argument (others could read it in the
/// process list).
fn secret_from_stdin(what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).with_context(|| format!("reading the {what} from standard input"))?;
    let secret = line.trim_end_matches(['\n', '\r']).to_owned();
    anyhow::ensure!(!secret.is_empty(), "no {what} on standard input");
    Ok(secret)
}

impl RuleArgs {
    fn input(self) -> anyhow::Result<RuleInput> {
        anyhow::ensure!(
            self.username.is_some() == self.password_stdin,
            "--username and --password-stdin go together (the password is read from standard input)"
        );
        anyhow::ensure!(
            self.aws_access_key_id.is_some() == self.aws_secret_access_key_stdin,
            "--aws-access-key-id and --aws-secret-access-key-stdin go together (the secret key is read from \
             standard input)"
        );
        let password = if self.password_stdin { Some(secret_from_stdin("upstream password")?) } else { None };
        let aws_secret_access_key =
            if self.aws_secret_access_key_stdin { Some(secret_from_stdin("AWS secret access key")?) } else { None };
        Ok(RuleInput {
            prefix: Some(self.prefix),
            upstream: self.upstream,
            upstream_prefix: self.upstream_prefix,
            username: self.username,
            password,
            aws_access_key_id: self.aws_access_key_id,
            aws_secret_access_key,
            aws_region: self.aws_region,
            ecr_endpoint: self.ecr_endpoint,
            refresh: self.refresh,
        })
    }
}

fn line(r: &RuleView) {
    let source = serde_json::to_value(r.source).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    println!(
        "{:<30} {:<7} {:<40} {:<16} {:<6} {}",
        r.prefix,
        source,
        r.upstream,
        r.upstream_prefix.as_deref().unwrap_or("-"),
        r.credentials,
        r.refresh
    );
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn pull_through(registry: &Registry, action: PullThroughAction) -> anyhow::Result<()> {
    match action {
        PullThroughAction::List { json } => {
            let rules: Vec<RuleView> = registry.pull_through_rules().await?.iter().map(Rule::view).collect();
            if json {
                return print_json(&serde_json::json!({ "rules": rules }));
            }
            println!(
                "{:<30} {:<7} {:<40} {:<16} {:<6} REFRESH",
                "PREFIX", "SOURCE", "UPSTREAM", "UPSTREAM PREFIX", "AUTH"
            );
            rules.iter().for_each(line);
        }
        PullThroughAction::Get { prefix } => print_json(&registry.pull_through_rule(&prefix).await?.view())?,
        PullThroughAction::Create(args) => {
            let r = registry.create_pull_through_rule(&args.input()?).await?;
            println!("pull-through cache rule {} created: {}", r.spec.prefix, r.spec.upstream_url);
        }
        PullThroughAction::Update(args) => {
            let prefix = args.prefix.clone();
            let r = registry.update_pull_through_rule(&prefix, &args.input()?).await?;
            println!("pull-through cache rule {} updated: {}", r.spec.prefix, r.spec.upstream_url);
        }
        PullThroughAction::Delete { prefix } => {
            let r = registry.delete_pull_through_rule(&prefix).await?;
            println!("pull-through cache rule {} deleted", r.spec.prefix);
        }
        PullThroughAction::Validate { prefix } => {
            let (r, outcome) = registry.validate_pull_through_rule(&prefix).await?;
            match outcome {
                Ok(()) => println!(
                    "pull-through cache rule {}: {} accepts its credentials",
                    r.spec.prefix, r.spec.upstream_url
                ),
                Err(why) => anyhow::bail!("pull-through cache rule {}: {why}", r.spec.prefix),
            }
        }
    }
    Ok(())
}
