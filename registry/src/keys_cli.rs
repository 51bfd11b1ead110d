//! `berth keys …`: list, create, rotate and retire key-encryption keys, and encrypt the
//! blobs of a registry that ran without encryption (`berth_registry::service::keys`).

use berth_registry::config::Config;
use berth_registry::service::Registry;

use crate::cli::KeysAction;

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn keys(registry: &Registry, config: &Config, action: KeysAction) -> anyhow::Result<()> {
    match action {
        KeysAction::List { json } => {
            let keys = registry.list_keys().await?;
            if json {
                return print_json(&keys);
            }
            println!("{:<24} {:<11} {:>8} {:>8}  SOURCE", "ID", "STATE", "BLOBS", "UPLOADS");
            for k in keys {
                let source = k.source.unwrap_or_else(|| "MISSING from this process's key ring".into());
                println!("{:<24} {:<11} {:>8} {:>8}  {source}", k.id, k.state, k.blobs, k.uploads);
            }
        }
        KeysAction::Create { name, json } => {
            let id = registry.create_key(&name).await?;
            if json {
                return print_json(&serde_json::json!({ "name": name, "id": id }));
            }
            println!("key {name} created: version {id} active");
        }
        KeysAction::Rotate { key, settle, json } => {
            let name = key.unwrap_or_else(|| config.encryption.default_key.clone());
            // The wait is announced only for a key there is: an unknown one is refused at once.
            let recorded = registry.list_keys().await?.iter().any(|k| k.name == name && k.state != "unrecorded");
            if recorded {
                eprintln!(
                    "rotating {name}: waiting {} for running registries to pick up the new version",
                    humantime::format_duration(settle)
                );
            }
            let done = registry.rotate_key(&name, settle, &|n| eprintln!("  {n} data keys re-wrapped")).await?;
            if json {
                return print_json(&done);
            }
            println!(
                "key {} rotated: {} active; {} data keys re-wrapped from {}",
                done.name,
                done.to,
                done.rewrapped,
                if done.from.is_empty() { "-".to_owned() } else { done.from.join(", ") }
            );
        }
        KeysAction::Retire { id } => {
            registry.retire_key(&id).await?;
            println!("key {id} retired: nothing depends on it; its material may be destroyed");
        }
        KeysAction::EncryptExisting { json } => {
            let done = registry
                .encrypt_existing(&|repo, blobs, bytes| {
                    eprintln!("  {repo}: {blobs} blobs, {bytes} bytes encrypted so far")
                })
                .await?;
            if json {
                return print_json(&done);
            }
            println!(
                "{} repositories given a key, {} blobs ({} bytes) encrypted, {} plaintext objects removed",
                done.repositories, done.blobs, done.bytes, done.plaintext_removed
            );
        }
    }
    Ok(())
}
