//! The `berth` command line: the clap definitions of every command and flag. What each
//! command does is in `main.rs` (serve, health, config), `keys_cli.rs`, `admin_cli.rs`,
//! `ops_cli.rs` and `usage_cli.rs`.
//!
//! Every command and argument has a one-line help (the first paragraph of its doc comment);
//! further paragraphs appear under `--help` only. A test below walks the whole tree. The
//! store flags every subcommand inherits (`--config`, `--data-dir`) are listed last.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{admin_cli, ops_cli, usage_cli};

#[derive(Parser)]
#[command(name = "berth", version, about = "Berth: an OCI container registry")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the registry (default: 127.0.0.1:5000, data under ./berth-data).
    Serve {
        /// Address to listen on, e.g. 0.0.0.0:5000 (default: `listen` of the configuration).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Folder of blobs and the metadata database (default: ./berth-data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// TOML configuration file (default: none; defaults and BERTH_* variables apply).
        #[arg(long, env = "BERTH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Exit 0 when the registry answers `GET /healthz` with 200 (for container health checks).
    ///
    /// The image needs no curl: `HEALTHCHECK CMD ["berth", "health"]`.
    Health {
        /// Address to probe (default: `listen` of the configuration; 0.0.0.0 is probed on loopback).
        #[arg(long)]
        addr: Option<SocketAddr>,
        /// TOML configuration file whose `listen` address is probed.
        #[arg(long, env = "BERTH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Encryption keys: list, create a named key, rotate, retire, encrypt old blobs.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        /// TOML configuration file (as for `serve`).
        #[arg(long, env = "BERTH_CONFIG", global = true, display_order = 900)]
        config: Option<PathBuf>,
        /// Data folder of the registry (as for `serve`; default: ./berth-data).
        #[arg(long, global = true, display_order = 901)]
        data_dir: Option<PathBuf>,
    },
    /// Users, access keys, policies and repository tags (as the admin API under /api/v1/).
    ///
    /// Works on the stores of the configuration directly; a running server sees the changes.
    Admin {
        #[command(subcommand)]
        action: admin_cli::AdminAction,
        /// TOML configuration file (as for `serve`).
        #[arg(long, env = "BERTH_CONFIG", global = true, display_order = 900)]
        config: Option<PathBuf>,
        /// Data folder of the registry (as for `serve`; default: ./berth-data).
        #[arg(long, global = true, display_order = 901)]
        data_dir: Option<PathBuf>,
    },
    /// Webhook subscriptions: list, create or replace, delete.
    Webhooks {
        #[command(subcommand)]
        action: ops_cli::WebhooksAction,
        /// TOML configuration file (as for `serve`).
        #[arg(long, env = "BERTH_CONFIG", global = true, display_order = 900)]
        config: Option<PathBuf>,
        /// Data folder of the registry (as for `serve`; default: ./berth-data).
        #[arg(long, global = true, display_order = 901)]
        data_dir: Option<PathBuf>,
    },
    /// Webhook deliveries: list, show (with the delivery log), replay, purge.
    Deliveries {
        #[command(subcommand)]
        action: ops_cli::DeliveriesAction,
        /// TOML configuration file (as for `serve`).
        #[arg(long, env = "BERTH_CONFIG", global = true, display_order = 900)]
        config: Option<PathBuf>,
        /// Data folder of the registry (as for `serve`; default: ./berth-data).
        #[arg(long, global = true, display_order = 901)]
        data_dir: Option<PathBuf>,
    },
    /// ECS task definitions: pin their images to digests.
    TaskDef {
        #[command(subcommand)]
        action: ops_cli::TaskDefAction,
        /// TOML configuration file (as for `serve`).
        #[arg(long, env = "BERTH_CONFIG", global = true, display_order = 900)]
        config: Option<PathBuf>,
        /// Data folder of the registry (as for `serve`; default: ./berth-data).
        #[arg(long, global = true, display_order = 901)]
        data_dir: Option<PathBuf>,
    },
    /// Repositories: create, delete, settings.
    Repository {
        #[command(subcommand)]
        action: ops_cli::RepositoryAction,
        /// TOML configuration file (as for `serve`).
        #[arg(long, env = "BERTH_CONFIG", global = true, display_order = 900)]
        config: Option<PathBuf>,
        /// Data folder of the registry (as for `serve`; default: ./berth-data).
        #[arg(long, global = true, display_order = 901)]
        data_dir: Option<PathBuf>,
    },
    /// Repository creation templates: the settings new repositories start with.
    Templates {
        #[command(subcommand)]
        action: crate::templates_cli::TemplatesAction,
        /// TOML configuration file (as for `serve`).
        #[arg(long, env = "BERTH_CONFIG", global = true, display_order = 900)]
        config: Option<PathBuf>,
        /// Data folder of the registry (as for `serve`; default: ./berth-data).
        #[arg(long, global = true, display_order = 901)]
        data_dir: Option<PathBuf>,
    },
    /// Pull-through cache rules: repositories filled from another registry on a miss.
    PullThrough {
        #[command(subcommand)]
        action: crate::pull_through_cli::PullThroughAction,
        /// TOML configuration file (as for `serve`).
        #[arg(long, env = "BERTH_CONFIG", global = true, display_order = 900)]
        config: Option<PathBuf>,
        /// Data folder of the registry (as for `serve`; default: ./berth-data).
        #[arg(long, global = true, display_order = 901)]
        data_dir: Option<PathBuf>,
    },
    /// Replication to other registries: destinations, rules, and each image's status.
    Replication {
        #[command(subcommand)]
        action: crate::replication_cli::ReplicationAction,
        /// TOML configuration file (as for `serve`).
        #[arg(long, env = "BERTH_CONFIG", global = true, display_order = 900)]
        config: Option<PathBuf>,
        /// Data folder of the registry (as for `serve`; default: ./berth-data).
        #[arg(long, global = true, display_order = 901)]
        data_dir: Option<PathBuf>,
    },
    /// What the registry holds: per repository, per key, in total and deduplicated.
    Usage {
        /// Only this repository, with the quotas that cover it.
        #[arg(long)]
        repository: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// TOML configuration file (as for `serve`).
        #[arg(long, env = "BERTH_CONFIG")]
        config: Option<PathBuf>,
        /// Data folder of the registry (as for `serve`; default: ./berth-data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Quotas on bytes and images per repository or prefix: list, set, delete.
    Quota {
        #[command(subcommand)]
        action: usage_cli::QuotaAction,
        /// TOML configuration file (as for `serve`).
        #[arg(long, env = "BERTH_CONFIG", global = true, display_order = 900)]
        config: Option<PathBuf>,
        /// Data folder of the registry (as for `serve`; default: ./berth-data).
        #[arg(long, global = true, display_order = 901)]
        data_dir: Option<PathBuf>,
    },
    /// Images of a repository with their tags, sizes, push and last pull times.
    Images {
        #[command(subcommand)]
        action: crate::images_cli::ImagesAction,
        /// TOML configuration file (as for `serve`).
        #[arg(long, env = "BERTH_CONFIG", global = true, display_order = 900)]
        config: Option<PathBuf>,
        /// Data folder of the registry (as for `serve`; default: ./berth-data).
        #[arg(long, global = true, display_order = 901)]
        data_dir: Option<PathBuf>,
    },
    /// Lifecycle policies: put, get, delete, preview, run, status.
    Lifecycle {
        #[command(subcommand)]
        action: crate::lifecycle_cli::LifecycleAction,
        /// TOML configuration file (as for `serve`).
        #[arg(long, env = "BERTH_CONFIG", global = true, display_order = 900)]
        config: Option<PathBuf>,
        /// Data folder of the registry (as for `serve`; default: ./berth-data).
        #[arg(long, global = true, display_order = 901)]
        data_dir: Option<PathBuf>,
    },
    /// Garbage collection: run now, or show the recent runs.
    Gc {
        #[command(subcommand)]
        action: crate::gc_cli::GcAction,
        /// TOML configuration file (as for `serve`).
        #[arg(long, env = "BERTH_CONFIG", global = true, display_order = 900)]
        config: Option<PathBuf>,
        /// Data folder of the registry (as for `serve`; default: ./berth-data).
        #[arg(long, global = true, display_order = 901)]
        data_dir: Option<PathBuf>,
    },
    /// Read back every stored blob and check it against its digest; change nothing.
    ///
    /// Sealed copies are opened and checked as a pull would. Prints each damaged object;
    /// exit status 0 when all is sound, 2 when damage was found, 1 when it could not run.
    Scrub {
        /// Only the blobs of this repository (default: all).
        #[arg(long)]
        repository: Option<String>,
        /// Read at most this many bytes per second, e.g. 50MiB or 52428800 (default: no limit).
        #[arg(long)]
        rate: Option<String>,
        /// Print the report as JSON instead of lines.
        #[arg(long)]
        json: bool,
        /// TOML configuration file (as for `serve`).
        #[arg(long, env = "BERTH_CONFIG")]
        config: Option<PathBuf>,
        /// Data folder of the registry (as for `serve`; default: ./berth-data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print a login token for a user: the password of `docker login -u AWS`.
    ///
    /// Valid auth.token.login_ttl (default 12 h), like `aws ecr get-login-password`.
    LoginToken {
        /// The user the token signs in as.
        #[arg(long)]
        user: String,
        /// TOML configuration file (as for `serve`).
        #[arg(long, env = "BERTH_CONFIG")]
        config: Option<PathBuf>,
        /// Data folder of the registry (as for `serve`; default: ./berth-data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print the configuration in effect as JSON (defaults, file, environment, flags merged).
    ///
    /// Unset derived values (storage.path, metadata.path, ...) are filled in.
    Config {
        /// TOML configuration file (as for `serve`).
        #[arg(long, env = "BERTH_CONFIG")]
        config: Option<PathBuf>,
        /// Folder of blobs and the metadata database (as for `serve`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Address to listen on (as for `serve`).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Print a table instead: every key, its value and where it came from.
        ///
        /// The origin is the default, the file, an environment variable, a flag, or derived.
        #[arg(long)]
        sources: bool,
    },
}

#[derive(Subcommand)]
pub enum KeysAction {
    /// Every key version: id, state, blobs and uploads it protects, where its material is.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create a named key for repositories to choose (`encryption.repositories` rules).
    Create {
        /// Key name: a-z, 0-9 and -.
        name: String,
        /// Print the new key (name, version id) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a new version of a key active and re-wrap every data key under it.
    ///
    /// Blob bytes are not rewritten. The new version is taken from the key ring when one
    /// newer than the recorded ones is there, else generated into the key folder.
    Rotate {
        /// Name of the key to rotate (default: encryption.default_key).
        #[arg(long)]
        key: Option<String>,
        /// How long to wait for running registries to pick up the new version first.
        #[arg(long, default_value = "6s", value_parser = humantime::parse_duration)]
        settle: std::time::Duration,
        /// Print what was done (versions, data keys re-wrapped) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Retire a key version that protects nothing any more; its material may then be destroyed.
    Retire {
        /// Key version id, as `berth keys list` shows it (e.g. default.1).
        id: String,
    },
    /// Encrypt the blobs of repositories created while encryption was off; safe to run again.
    ///
    /// Then removes plaintext no repository needs. Prints progress on standard error.
    EncryptExisting {
        /// Print what was done (repositories, blobs, bytes, plaintext removed) as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The one line a failed command prints: the whole chain of causes (e.g. an unknown config
/// key). An internal error is shown by its detail alone: over HTTP "internal error" stands
/// in for a detail the client is not shown, but here the detail is shown, and it is what the
/// operator acts on (a missing key, a database that cannot be read).
pub fn error_line(e: &anyhow::Error) -> String {
    match e.downcast_ref::<berth_registry::error::ApiError>() {
        Some(berth_registry::error::ApiError::Internal(detail)) => detail.clone(),
        _ => format!("{e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context;
    use berth_registry::error::ApiError;
    use clap::CommandFactory;

    use super::{Cli, error_line};

    #[test]
    fn an_error_is_one_line_with_its_causes_and_no_internal_label() {
        let internal = anyhow::Error::from(ApiError::Internal("key team.1 is not in the key ring".into()));
        assert_eq!(error_line(&internal), "key team.1 is not in the key ring");
        let chained = Err::<(), _>(std::io::Error::other("denied")).context("reading config.toml").unwrap_err();
        assert_eq!(error_line(&chained), "reading config.toml: denied");
        assert_eq!(error_line(&anyhow::Error::from(ApiError::NameUnknown)), "repository name not known to registry");
    }

    /// Every command and argument of `cmd` and below without a help text, by path; and
    /// sibling commands sharing one (a doc comment on a flattened struct does that).
    fn missing_help(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        let short =
            |text: Option<&clap::builder::StyledStr>| text.map(|t| t.to_string()).filter(|t| !t.trim().is_empty());
        match short(cmd.get_about()) {
            None => out.push(format!("command `{path}` has no help")),
            Some(about) if about.contains('\n') || about.len() > 100 => {
                out.push(format!("command `{path}`: the first line of its help is not one short line: {about:?}"))
            }
            Some(_) => {}
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            match short(arg.get_help()) {
                None => out.push(format!("argument `{id}` of `{path}` has no help")),
                Some(help) if help.contains('\n') || help.len() > 100 => {
                    out.push(format!("argument `{id}` of `{path}`: its help is not one short line: {help:?}"))
                }
                Some(_) => {}
            }
        }
        let mut seen = std::collections::BTreeMap::new();
        for sub in cmd.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            if let Some(about) = short(sub.get_about())
                && let Some(other) = seen.insert(about.clone(), sub.get_name().to_owned())
            {
                out.push(format!("`{path} {other}` and `{path} {}` have the same help: {about:?}", sub.get_name()));
            }
            missing_help(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_command_and_argument_has_help() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut out = Vec::new();
        missing_help(&cmd, "berth", &mut out);
        assert!(out.is_empty(), "{}", out.join("\n"));
    }

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    /// The walk finds what it is meant to find: a command and a flag without help.
    #[test]
    fn the_walk_reports_missing_help() {
        let cmd = clap::Command::new("x")
            .about("x")
            .subcommand(clap::Command::new("bare").arg(clap::Arg::new("flag").long("flag")));
        let mut cmd = cmd;
        cmd.build();
        let mut out = Vec::new();
        missing_help(&cmd, "x", &mut out);
        assert_eq!(out, ["command `x bare` has no help", "argument `flag` of `x bare` has no help"]);
    }
}
