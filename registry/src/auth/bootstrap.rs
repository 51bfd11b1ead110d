//! The first administrator: created when the registry starts with no users at all, so a
//! fresh install is closed to the world but usable by whoever installed it.

use std::io::Write;
use std::path::Path;

use berth_auth::credentials;
use berth_storage::MetadataStore;
use berth_storage::metadata::{PolicyTarget, UserRecord, unix_now};

use super::Authority;

/// The policy the bootstrap administrator gets: everything.
pub const ADMIN_POLICY_NAME: &str = "AdministratorAccess";
pub const ADMIN_POLICY: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Sid":"Everything","Effect":"Allow","Action":"*","Resource":"*"}]}"#;

/// Where a generated password is written.
pub fn password_file(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("admin-password")
}

/// Creates `auth.admin_user` with full access when there are no users. The password comes
/// from `auth.admin_password`, else it is generated and written to a file readable by this
/// user only; it is never logged. Replicas starting at once create the user once (the
/// insert refuses a taken name).
pub(super) async fn admin(auth: &Authority, meta: &dyn MetadataStore, data_dir: &Path) -> Result<(), String> {
    if !meta.users().await.map_err(|e| format!("users: {e}"))?.is_empty() {
        return Ok(());
    }
    let name = &auth.config.admin_user;
    let (password, file) = match &auth.config.admin_password {
        Some(p) => {
            credentials::check_password(p.expose()).map_err(|e| format!("auth.admin_password: {e}"))?;
            (p.expose().to_owned(), None)
        }
        None => {
            let password = credentials::random_password();
            let path = password_file(data_dir);
            write_private(&path, &password).map_err(|e| format!("{}: {e}", path.display()))?;
            (password, Some(path))
        }
    };
    let hash = credentials::hash_password(&password).map_err(|e| e.to_string())?;
    let user = UserRecord {
        id: credentials::generate_user_id(),
        name: name.clone(),
        password_hash: Some(hash),
        disabled: false,
        created_at: unix_now(),
        generation: 0,
    };
    let created = meta.create_user(&user).await.map_err(|e| format!("creating {name}: {e}"))?;
    if !created {
        // Another replica made it first; its password is the one that counts.
        if let Some(path) = file {
            let _ = std::fs::remove_file(path);
        }
        return Ok(());
    }
    meta.put_policy(&PolicyTarget::User(name.clone()), ADMIN_POLICY_NAME, ADMIN_POLICY)
        .await
        .map_err(|e| format!("policy of {name}: {e}"))?;
    match file {
        Some(path) => tracing::warn!(auth.user = %name, password.file = %path.display(),
            "created the administrator with a generated password, written to this file (readable by this user only): \
             sign in, then delete the file"),
        None => tracing::info!(auth.user = %name, "created the administrator with the configured password"),
    }
    Ok(())
}

/// Writes `text` to a new file only its owner may read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}
