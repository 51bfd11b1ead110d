//! The data folder holds the metadata database (with the sealed token signing key, password
//! hashes and webhook secrets), the admin password file and, by default, the key folder:
//! no other local user may enter it.
//!
//! - A missing data folder is created `0700`; the SQLite database is created `0600` (SQLite
//!   gives its `-wal` and `-shm` files the database's mode), and an existing one open to
//!   others is narrowed to `0600`, with its `-wal`/`-shm`.
//! - An existing data folder that others may enter is refused with the `chmod` that fixes
//!   it, unless it is empty: a fresh `mkdir` or container volume holds nothing yet and is
//!   narrowed to `0700` instead.
//! - Key files and the key folder are checked by the key ring (`storage::crypt::keyring`),
//!   the signing key file by `auth::signing`.
//!
//! Only `berth serve` creates a registry. The other commands open one that exists: a missing
//! data folder, metadata database (or Berth schema in PostgreSQL) or blob folder is refused
//! with the path looked at ([`missing_registry`], [`not_a_registry`]), and nothing is created.

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

use crate::config::{Config, MetadataBackend, StorageBackend};

/// Prepares the data folder and the SQLite file's mode; `Err` names the path and the fix.
pub fn secure(config: &Config) -> Result<(), String> {
    private_dir(&config.data_dir, "data folder")?;
    if config.metadata.backend == MetadataBackend::Sqlite {
        let db = config.metadata_path();
        if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
            create_private_dir(parent)?;
        }
        private_database(&db)?;
    }
    Ok(())
}

/// For a command other than `serve`: checks the modes of the data folder and database that
/// exist, as [`secure`] does, creating nothing (with PostgreSQL the data folder may be absent).
pub fn check_existing(config: &Config) -> Result<(), String> {
    if config.data_dir.exists() {
        private_dir(&config.data_dir, "data folder")?;
    }
    let db = config.metadata_path();
    if config.metadata.backend == MetadataBackend::Sqlite && db.exists() {
        private_database(&db)?;
    }
    Ok(())
}

/// For a command other than `serve`: why `config` names no registry, judged from the local
/// disk (the metadata database file), or `None`. What the database holds is looked at when it
/// is opened ([`not_a_registry`]), the blob folder after that ([`missing_blobs`]).
pub fn missing_registry(config: &Config) -> Option<String> {
    if config.metadata.backend == MetadataBackend::Sqlite && !config.metadata_path().is_file() {
        return Some(match &config.metadata.path {
            Some(path) => no_registry_at(path, "metadata.path", "no such file"),
            None => in_data_dir(config, "it holds no metadata.db"),
        });
    }
    None
}

/// For a command other than `serve`: the blob folder is missing (`serve` creates it at every
/// start, so a registry has one), or `None`.
pub fn missing_blobs(config: &Config) -> Option<String> {
    if config.storage.backend != StorageBackend::Filesystem || config.blob_dir().is_dir() {
        return None;
    }
    Some(match &config.storage.path {
        Some(path) => no_registry_at(path, "storage.path", "no such folder; is its volume mounted?"),
        None => in_data_dir(config, "it holds no blobs/ folder"),
    })
}

/// For a command other than `serve`: the metadata database that `config` names holds no
/// Berth schema (a file that is some other database, a PostgreSQL database never served).
pub fn not_a_registry(config: &Config) -> String {
    match (config.metadata.backend, &config.metadata.path, &config.metadata.url) {
        (MetadataBackend::Postgres, _, url) => format!(
            "no registry in the PostgreSQL database {} (metadata.url): it holds no Berth schema (check \
             metadata.url, or use --config; `berth serve` creates the schema)",
            url.as_ref().map(|u| u.redacted()).unwrap_or_default()
        ),
        (MetadataBackend::Sqlite, Some(path), _) => {
            no_registry_at(path, "metadata.path", "the file holds no Berth database")
        }
        (MetadataBackend::Sqlite, None, _) => in_data_dir(config, "its metadata.db holds no Berth database"),
    }
}

/// `no registry at ./berth-data (...)`, with `problem` when the folder exists.
fn in_data_dir(config: &Config, problem: &str) -> String {
    let dir = &config.data_dir;
    let problem = if dir.exists() { format!(": {problem}") } else { String::new() };
    format!("no registry at {}{problem} (use --data-dir or --config; `berth serve` creates one)", shown(dir))
}

/// A path that a configuration key set explicitly and that holds no registry.
fn no_registry_at(path: &Path, key: &str, problem: &str) -> String {
    format!("no registry at {} ({key}): {problem} (check {key}, or use --config)", shown(path))
}

/// A path as the user gave it, a relative one marked as such (`./berth-data`), so the message
/// says it was looked for in the current folder.
fn shown(path: &Path) -> String {
    match path.components().next() {
        Some(Component::Normal(_)) => format!("./{}", path.display()),
        _ => path.display().to_string(),
    }
}

fn mode_of(path: &Path) -> Result<u32, String> {
    Ok(std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.permissions().mode() & 0o777)
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the folder {}: {e}", dir.display()))
}

fn private_dir(dir: &Path, what: &str) -> Result<(), String> {
    if !dir.exists() {
        return create_private_dir(dir);
    }
    let mode = mode_of(dir)?;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let empty = std::fs::read_dir(dir).map_err(|e| format!("{what} {}: {e}", dir.display()))?.next().is_none();
    if empty {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make the {what} {} private (chmod 700): {e}", dir.display()))?;
        tracing::info!(path = %dir.display(), from = format!("{mode:o}"), "made the empty {what} private (0700)");
        return Ok(());
    }
    Err(format!(
        "the {what} {} is open to other users (mode {mode:o}); it holds the registry's secrets. Run \
         `chmod 700 {}` (and `chmod 600` on the files in it), then start again",
        dir.display(),
        dir.display()
    ))
}

/// Creates the SQLite file `0600` before SQLite does (it would use the umask), or narrows an
/// existing one and its `-wal`/`-shm` files.
fn private_database(db: &Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    if !db.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(db)
            .map_err(|e| format!("cannot create the database {}: {e}", db.display()))?;
        return Ok(());
    }
    for suffix in ["", "-wal", "-shm"] {
        let path = db.with_file_name(format!("{}{suffix}", db.file_name().and_then(|n| n.to_str()).unwrap_or("")));
        if !path.exists() || mode_of(&path)? & 0o077 == 0 {
            continue;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot make {} private (chmod 600): {e}", path.display()))?;
        tracing::warn!(path = %path.display(), "the metadata database was open to other users: made it 0600");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        Config { data_dir: dir.to_owned(), ..Config::default() }
    }

    #[test]
    fn paths_are_shown_as_given_with_relative_ones_marked() {
        for (given, shown_as) in
            [("berth-data", "./berth-data"), ("./d", "./d"), ("../d", "../d"), ("/srv/berth", "/srv/berth")]
        {
            assert_eq!(shown(Path::new(given)), shown_as);
        }
        let message = missing_registry(&config(Path::new("no/such/berth-data"))).unwrap();
        assert_eq!(
            message,
            "no registry at ./no/such/berth-data (use --data-dir or --config; `berth serve` creates one)"
        );
    }

    #[test]
    fn creates_private_and_refuses_open_folders_with_data() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("new");
        secure(&config(&data)).unwrap();
        assert_eq!(mode_of(&data).unwrap(), 0o700);
        assert_eq!(mode_of(&data.join("metadata.db")).unwrap(), 0o600);

        // Open to others, with data in it: refused, naming the path and the fix.
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = secure(&config(&data)).unwrap_err();
        assert!(err.contains(&format!("chmod 700 {}", data.display())), "{err}");

        // Empty and open (a fresh mkdir, a new volume): narrowed.
        let fresh = root.path().join("fresh");
        std::fs::create_dir(&fresh).unwrap();
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755)).unwrap();
        secure(&config(&fresh)).unwrap();
        assert_eq!(mode_of(&fresh).unwrap(), 0o700);

        // A database file open to others, in a private folder: narrowed with its WAL.
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        for f in ["metadata.db", "metadata.db-wal"] {
            std::fs::write(data.join(f), b"").unwrap();
            std::fs::set_permissions(data.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        secure(&config(&data)).unwrap();
        assert_eq!(mode_of(&data.join("metadata.db")).unwrap(), 0o600);
        assert_eq!(mode_of(&data.join("metadata.db-wal")).unwrap(), 0o600);
    }
}
