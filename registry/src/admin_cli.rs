//! `berth admin …` and `berth login-token`: identity administration on the stores of the
//! configuration, for the first steps and for scripts. Same verbs, validation and records
//! as the admin HTTP API (`berth_registry::auth::admin`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use berth_auth::token::TokenUse;
use berth_oci::RepoName;
use berth_registry::auth::SignedIn;
use berth_registry::auth::admin::{Admin, describe};
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
    /// Policies of users, access keys, repositories and the registry: put, get, list, delete.
    #[command(subcommand)]
    Policy(PolicyAction),
    /// Set or remove repository tags (the `ecr:ResourceTag/<key>` condition keys).
    Tag {
        /// The repository, e.g. team/app.
        repository: String,
        /// A tag to set, KEY=VALUE (repeatable).
        #[arg(value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// A tag key to remove (repeatable).
        #[arg(long, value_name = "KEY")]
        remove: Vec<String>,
        /// Print the repository's tags afterwards as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum UserAction {
    /// Create a user; without --password-stdin or --no-password a password is generated.
    ///
    /// A generated password is printed once, on standard output.
    Create {
        /// User name: A-Z a-z 0-9 and + = , . @ _ - (IAM's rule).
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long, conflicts_with = "no_password")]
        password_stdin: bool,
        /// No password sign-in: access keys only.
        #[arg(long)]
        no_password: bool,
        /// Print the new user (and a generated password) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every user: name, whether it has a password, state, ARN.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Disable a user: no new sign-ins or tokens (tokens issued expire within auth.token.ttl).
    Disable {
        /// The user's name.
        name: String,
    },
    /// Enable a disabled user.
    Enable {
        /// The user's name.
        name: String,
    },
    /// Set a user's password from the first line of standard input.
    Password {
        /// The user's name.
        name: String,
    },
    /// Delete a user with its access keys and policies.
    Delete {
        /// The user's name.
        name: String,
    },
}

#[derive(Subcommand)]
pub enum KeyAction {
    /// Create an access key for a user; its secret is printed once.
    Create {
        /// The user the key belongs to.
        user: String,
        /// Print the new key (id, secret) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every access key (or one user's): id, user, state.
    List {
        /// Only this user's keys.
        #[arg(long)]
        user: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Disable an access key: it no longer signs in.
    Disable {
        /// The access key id (AKIA…).
        id: String,
    },
    /// Enable a disabled access key.
    Enable {
        /// The access key id (AKIA…).
        id: String,
    },
    /// Delete an access key.
    Delete {
        /// The access key id (AKIA…).
        id: String,
    },
}

// What a policy is attached to: exactly one of the four. (A doc comment here would become
// the help of every command that flattens it.)
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// The policy of this user (identity policies are named: give --name).
    #[arg(long)]
    user: Option<String>,
    /// The policy of this access key (identity policies are named: give --name).
    #[arg(long)]
    access_key: Option<String>,
    /// The policy of this repository (one per repository, without a name).
    #[arg(long)]
    repository: Option<String>,
    /// The registry's policy (one, without a name).
    #[arg(long)]
    registry: bool,
}

#[derive(Subcommand)]
pub enum PolicyAction {
    /// Store a policy document (IAM JSON) from FILE, or `-` for standard input.
    Put {
        #[command(flatten)]
        target: TargetArgs,
        /// The policy's name (users and access keys only).
        #[arg(long)]
        name: Option<String>,
        /// The IAM policy document (JSON); `-` reads standard input.
        file: PathBuf,
        /// Print the stored policy as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a policy document (with --json: also its name and update time).
    Get {
        #[command(flatten)]
        target: TargetArgs,
        /// The policy's name (users and access keys only).
        #[arg(long)]
        name: Option<String>,
        /// Print name, document and update time as JSON instead of the document alone.
        #[arg(long)]
        json: bool,
    },
    /// The policies attached to a user, access key, repository or the registry.
    List {
        #[command(flatten)]
        target: TargetArgs,
        /// Print the policies with their documents as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a policy.
    Delete {
        #[command(flatten)]
        target: TargetArgs,
        /// The policy's name (users and access keys only).
        #[arg(long)]
        name: Option<String>,
    },
}

/// The policy's target, and its name checked in the flags' terms: users and access keys
/// hold named policies, a repository or the registry one without a name.
fn target(t: TargetArgs, name: Option<&str>, needs_name: bool) -> anyhow::Result<PolicyTarget> {
    let target = match (t.user, t.access_key, t.repository, t.registry) {
        (Some(u), None, None, false) => PolicyTarget::User(u),
        (None, Some(k), None, false) => PolicyTarget::AccessKey(k),
        (None, None, Some(r), false) => {
            PolicyTarget::Repository(r.parse().map_err(|e| anyhow::anyhow!("--repository {r}: {e}"))?)
        }
        (None, None, None, true) => PolicyTarget::Registry,
        _ => anyhow::bail!("give one of --user, --access-key, --repository, --registry"),
    };
    let named = matches!(target, PolicyTarget::User(_) | PolicyTarget::AccessKey(_));
    if named && needs_name && name.is_none() {
        anyhow::bail!(
            "{} holds named policies: give --name (`berth admin policy list {}` lists them)",
            describe(&target),
            flags(&target)
        );
    }
    if !named && name.is_some_and(|n| n != berth_storage::metadata::RESOURCE_POLICY) {
        anyhow::bail!("{} has one policy, without a name: leave out --name", describe(&target));
    }
    Ok(target)
}

/// The flags that name `target` again, for a hint.
fn flags(target: &PolicyTarget) -> String {
    match target {
        PolicyTarget::User(u) => format!("--user {u}"),
        PolicyTarget::AccessKey(k) => format!("--access-key {k}"),
        PolicyTarget::Repository(r) => format!("--repository {r}"),
        PolicyTarget::Registry => "--registry".into(),
    }
}

/// "policy NAME of user U" for named policies, "policy of repository R" for the others
/// (whose one policy is stored under a fixed name that means nothing to the reader).
fn which_policy(target: &PolicyTarget, name: &str) -> String {
    match target {
        PolicyTarget::User(_) | PolicyTarget::AccessKey(_) => format!("policy {name} of {}", describe(target)),
        PolicyTarget::Repository(_) | PolicyTarget::Registry => format!("policy of {}", describe(target)),
    }
}

/// The password on the first line of standard input.
fn stdin_password() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).context("reading the password from standard input")?;
    let line = text.lines().next().unwrap_or_default().to_owned();
    anyhow::ensure!(
        !line.is_empty(),
        "no password on standard input: give it on the first line (e.g. `… < password-file`)"
    );
    Ok(line)
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn seconds_to_rfc3339(seconds: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

pub async fn admin(registry: &Registry, action: AdminAction) -> anyhow::Result<()> {
    let admin = Admin { meta: registry.meta.as_ref(), arns: &registry.auth.arns };
    match action {
        AdminAction::User(a) => match a {
            UserAction::Create { name, password_stdin, no_password, json } => {
                let (password, generated) = match (password_stdin, no_password) {
                    (true, _) => (Some(stdin_password()?), false),
                    (_, true) => (None, false),
                    _ => (Some(berth_auth::credentials::random_password()), true),
                };
                let user = admin.create_user(&name, password.as_deref()).await?;
                let shown = password.filter(|_| generated);
                if json {
                    let mut value = serde_json::to_value(&user)?;
                    if let Some(p) = &shown {
                        value["generated_password"] = p.clone().into();
                    }
                    return print_json(&value);
                }
                println!("user {} created ({})", user.name, user.arn);
                if let Some(p) = shown {
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
                // The user first: no waiting for standard input to learn it does not exist.
                admin.user(&name).await?;
                admin.set_password(&name, Some(&stdin_password()?)).await?;
                println!("password of user {name} changed");
            }
            UserAction::Delete { name } => {
                admin.delete_user(&name).await?;
                println!("user {name} deleted with its access keys and policies");
            }
        },
        AdminAction::Key(a) => match a {
            KeyAction::Create { user, json } => {
                let key = admin.create_access_key(&user, registry.auth.sealing()).await?;
                if json {
                    return print_json(&key);
                }
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
            PolicyAction::Put { target: t, name, file, json } => {
                let t = target(t, name.as_deref(), true)?;
                let text = if file.as_os_str() == "-" {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s).context("reading the policy from standard input")?;
                    s
                } else {
                    std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?
                };
                let p = admin.put_policy(&t, name.as_deref(), &text).await?;
                if json {
                    return print_json(&p);
                }
                println!("{} stored", which_policy(&t, &p.name));
            }
            PolicyAction::Get { target: t, name, json } => {
                let t = target(t, name.as_deref(), true)?;
                let p = admin.policy(&t, name.as_deref()).await?;
                if json {
                    return print_json(&p);
                }
                print_json(&p.document)?;
            }
            PolicyAction::List { target: t, json } => {
                let t = target(t, None, false)?;
                let list = admin.policies(&t).await?;
                if json {
                    return print_json(&list);
                }
                println!("{:<32} UPDATED", "NAME");
                for p in list {
                    println!("{:<32} {}", p.name, seconds_to_rfc3339(p.updated_at));
                }
            }
            PolicyAction::Delete { target: t, name } => {
                let t = target(t, name.as_deref(), true)?;
                let p = admin.policy(&t, name.as_deref()).await?;
                admin.delete_policy(&t, name.as_deref()).await?;
                println!("{} deleted", which_policy(&t, &p.name));
            }
        },
        AdminAction::Tag { repository, set, remove, json } => {
            let repo: RepoName = repository.parse().map_err(|e| anyhow::anyhow!("{repository}: {e}"))?;
            let mut tags = BTreeMap::new();
            for kv in set {
                let (k, v) = kv.split_once('=').with_context(|| format!("{kv:?}: give a tag as KEY=VALUE"))?;
                tags.insert(k.to_owned(), v.to_owned());
            }
            let now = admin.tag_repository(&repo, &tags, &remove).await?;
            if json {
                return print_json(&now);
            }
            let listed: Vec<String> = now.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let listed = if listed.is_empty() { "none".to_owned() } else { listed.join(" ") };
            println!("repository {repo}: {} set, {} removed; tags now: {listed}", tags.len(), remove.len());
        }
    }
    Ok(())
}

/// Prints a login token for `user` (the password of `docker login -u AWS`), signed with the
/// registry's key, valid `auth.token.login_ttl`.
pub async fn login_token(registry: &Registry, user: &str) -> anyhow::Result<()> {
    let record = registry.meta.user(user).await?.with_context(|| format!("no user {user}"))?;
    anyhow::ensure!(!record.disabled, "user {user} is disabled (`berth admin user enable {user}`)");
    let who = SignedIn { user: user.to_owned(), access_key: None, user_id: record.id, generation: record.generation };
    let (token, _) = registry.auth.issue(TokenUse::Login, Some(&who), Vec::new())?;
    println!("{token}");
    Ok(())
}
