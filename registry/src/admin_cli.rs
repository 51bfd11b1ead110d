//! `berth admin …` and `berth login-token`: identity administration on the stores of the
//! configuration, for the first steps and for scripts. Same verbs, validation and records
//! as the admin HTTP API (`berth_registry::auth::admin`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use berth_auth::token::TokenUse;
use berth_registry::auth::SignedIn;
use berth_registry::auth::admin::Admin;
use berth_registry::service::Registry;
use berth_storage::metadata::PolicyTarget;
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum AdminAction {
    /// Users: create, list, disable, enable, set a password, delete.
    #[command(subcommand)]
    User(UserAction),
    /// Access keys: create (the secret is printed once), list, disable, enable, delete.
    #[command(subcommand)]
    Key(KeyAction),
    /// Policies of users, access keys, repositories and the registry.
    #[command(subcommand)]
    Policy(PolicyAction),
    /// Set or remove repository tags (the `ecr:ResourceTag/<key>` condition keys).
    Tag {
        repository: String,
        /// KEY=VALUE to set.
        #[arg(value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// A key to remove (repeatable).
        #[arg(long)]
        remove: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum UserAction {
    /// Create a user. Without --password-stdin or --no-password, a password is generated
    /// and printed once.
    Create {
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long, conflicts_with = "no_password")]
        password_stdin: bool,
        /// No password sign-in: access keys only.
        #[arg(long)]
        no_password: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Disable {
        name: String,
    },
    Enable {
        name: String,
    },
    /// Set a user's password from the first line of standard input.
    Password {
        name: String,
    },
    /// Delete a user with its access keys and policies.
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
pub enum KeyAction {
    Create {
        user: String,
    },
    List {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        json: bool,
    },
    Disable {
        id: String,
    },
    Enable {
        id: String,
    },
    Delete {
        id: String,
    },
}

/// What a policy is attached to: exactly one.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    access_key: Option<String>,
    #[arg(long)]
    repository: Option<String>,
    #[arg(long)]
    registry: bool,
}

#[derive(Subcommand)]
pub enum PolicyAction {
    /// Store a policy document (IAM JSON) from FILE, or `-` for standard input.
    Put {
        #[command(flatten)]
        target: TargetArgs,
        /// The policy's name (users and access keys; a repository or the registry has one).
        #[arg(long)]
        name: Option<String>,
        file: PathBuf,
    },
    Get {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        name: Option<String>,
    },
    List {
        #[command(flatten)]
        target: TargetArgs,
    },
    Delete {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        name: Option<String>,
    },
}

fn target(t: TargetArgs) -> anyhow::Result<PolicyTarget> {
    Ok(match (t.user, t.access_key, t.repository, t.registry) {
        (Some(u), None, None, false) => PolicyTarget::User(u),
        (None, Some(k), None, false) => PolicyTarget::AccessKey(k),
        (None, None, Some(r), false) => PolicyTarget::Repository(r.parse().context("--repository")?),
        (None, None, None, true) => PolicyTarget::Registry,
        _ => anyhow::bail!("give one of --user, --access-key, --repository, --registry"),
    })
}

fn stdin_line() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn admin(registry: &Registry, action: AdminAction) -> anyhow::Result<()> {
    let admin = Admin { meta: registry.meta.as_ref(), arns: &registry.auth.arns };
    match action {
        AdminAction::User(a) => match a {
            UserAction::Create { name, password_stdin, no_password } => {
                let (password, generated) = match (password_stdin, no_password) {
                    (true, _) => (Some(stdin_line()?), false),
                    (_, true) => (None, false),
                    _ => (Some(berth_auth::credentials::random_password()), true),
                };
                let user = admin.create_user(&name, password.as_deref()).await?;
                println!("user {} created ({})", user.name, user.arn);
                if generated && let Some(p) = password {
                    println!("password: {p}");
                    eprintln!("(shown once; sign in with it or set another with `berth admin user password {name}`)");
                }
            }
            UserAction::List { json } => {
                let users = admin.users().await?;
                if json {
                    return print_json(&users);
                }
                println!("{:<32} {:<9} {:<9} ARN", "NAME", "PASSWORD", "STATE");
                for u in users {
                    let state = if u.disabled { "disabled" } else { "enabled" };
                    println!("{:<32} {:<9} {:<9} {}", u.name, if u.password { "yes" } else { "no" }, state, u.arn);
                }
            }
            UserAction::Disable { name } => {
                admin.set_disabled(&name, true).await?;
                println!("user {name} disabled (tokens already issued expire within auth.token.ttl)");
            }
            UserAction::Enable { name } => {
                admin.set_disabled(&name, false).await?;
                println!("user {name} enabled");
            }
            UserAction::Password { name } => {
                admin.set_password(&name, Some(&stdin_line()?)).await?;
                println!("password of {name} changed");
            }
            UserAction::Delete { name } => {
                admin.delete_user(&name).await?;
                println!("user {name} deleted");
            }
        },
        AdminAction::Key(a) => match a {
            KeyAction::Create { user } => {
                let key = admin.create_access_key(&user).await?;
                println!("access key id:     {}", key.id);
                println!("secret access key: {}", key.secret.unwrap_or_default());
                eprintln!("(the secret is shown once; `docker login -u {} --password-stdin` signs in with it)", key.id);
            }
            KeyAction::List { user, json } => {
                let keys = admin.access_keys(user.as_deref()).await?;
                if json {
                    return print_json(&keys);
                }
                println!("{:<24} {:<32} STATE", "ID", "USER");
                for k in keys {
                    println!("{:<24} {:<32} {}", k.id, k.user, if k.disabled { "disabled" } else { "enabled" });
                }
            }
            KeyAction::Disable { id } => {
                admin.set_access_key_disabled(&id, true).await?;
                println!("access key {id} disabled");
            }
            KeyAction::Enable { id } => {
                admin.set_access_key_disabled(&id, false).await?;
                println!("access key {id} enabled");
            }
            KeyAction::Delete { id } => {
                admin.delete_access_key(&id).await?;
                println!("access key {id} deleted");
            }
        },
        AdminAction::Policy(a) => match a {
            PolicyAction::Put { target: t, name, file } => {
                let text = if file.as_os_str() == "-" {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s)?;
                    s
                } else {
                    std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?
                };
                let t = target(t)?;
                let p = admin.put_policy(&t, name.as_deref(), &text).await?;
                println!("policy {} of {} stored", p.name, berth_registry::auth::admin::describe(&t));
            }
            PolicyAction::Get { target: t, name } => print_json(&admin.policy(&target(t)?, name.as_deref()).await?)?,
            PolicyAction::List { target: t } => print_json(&admin.policies(&target(t)?).await?)?,
            PolicyAction::Delete { target: t, name } => {
                let t = target(t)?;
                admin.delete_policy(&t, name.as_deref()).await?;
                println!("policy of {} deleted", berth_registry::auth::admin::describe(&t));
            }
        },
        AdminAction::Tag { repository, set, remove } => {
            let repo = repository.parse().context("repository")?;
            let mut tags = BTreeMap::new();
            for kv in set {
                let (k, v) = kv.split_once('=').with_context(|| format!("{kv:?} is not KEY=VALUE"))?;
                tags.insert(k.to_owned(), v.to_owned());
            }
            print_json(&admin.tag_repository(&repo, &tags, &remove).await?)?;
        }
    }
    Ok(())
}

/// Prints a login token for `user` (the password of `docker login -u AWS`), signed with the
/// registry's key, valid `auth.token.login_ttl`.
pub async fn login_token(registry: &Registry, user: &str) -> anyhow::Result<()> {
    let record = registry.meta.user(user).await?.with_context(|| format!("no user {user}"))?;
    anyhow::ensure!(!record.disabled, "user {user} is disabled");
    let who = SignedIn { user: user.to_owned(), access_key: None, user_id: record.id, generation: record.generation };
    let (token, _) = registry.auth.issue(TokenUse::Login, Some(&who), Vec::new())?;
    println!("{token}");
    Ok(())
}
