//! Key-encryption keys (KEKs) and the ring that holds them.
//!
//! A KEK's id is `<name>.<version>` (`default.1`, `team-a.3`): repositories refer to a key
//! by name, which is fixed; rotation adds a version and re-wraps data keys under it. Key
//! material (32 bytes, written as 64 hex digits) comes from files `<id>.key` in the key
//! folder, or from the `BERTH_KEYS` environment variable (`id=hex,id=hex`). Material is
//! never logged or printed; only ids and a check value (a GCM tag over the id) are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{Aad, LessSafeKey, NONCE_LEN, Nonce};

use super::{Dek, KEY_LEN, aead_key, fill_random, open_random_nonce, seal_random_nonce};
use crate::error::{Error, Result};

/// Where a KEK's material came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Environment,
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "file {}", p.display()),
            KeySource::Environment => f.write_str("environment BERTH_KEYS"),
        }
    }
}

/// One key-encryption key.
pub struct Kek {
    id: String,
    name: String,
    version: u32,
    key: LessSafeKey,
    source: KeySource,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek").field("id", &self.id).field("source", &self.source).finish_non_exhaustive()
    }
}

/// Splits a KEK id into name and version; `None` when it is not `<name>.<version>`.
pub fn parse_id(id: &str) -> Option<(&str, u32)> {
    let (name, version) = id.rsplit_once('.')?;
    let version: u32 = version.parse().ok().filter(|v| *v > 0)?;
    valid_name(name).then_some((name, version))
}

/// Key names: 1 to 63 of `a-z 0-9 -`, starting with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Kek {
    /// A KEK from raw material (tests, and the loaders below).
    pub fn from_raw(id: &str, raw: [u8; KEY_LEN]) -> Result<Kek> {
        Kek::new(id, raw, KeySource::Environment)
    }

    fn new(id: &str, raw: [u8; KEY_LEN], source: KeySource) -> Result<Kek> {
        let (name, version) = parse_id(id)
            .ok_or_else(|| Error::Key(format!("{id:?} is not a key id (<name>.<version>, e.g. default.1)")))?;
        Ok(Kek { id: id.into(), name: name.into(), version, key: aead_key(&raw)?, source })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// Wraps a data key: `nonce ‖ sealed key ‖ tag`, bound to `context`.
    pub fn wrap(&self, dek: &Dek, context: &[u8]) -> Result<Vec<u8>> {
        seal_random_nonce(&self.key, dek.raw(), &self.wrap_aad(context))
    }

    /// Unwraps what [`Kek::wrap`] made with this KEK and the same context.
    pub fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<Dek> {
        let raw = open_random_nonce(&self.key, wrapped, &self.wrap_aad(context))
            .map_err(|_| Error::Tampered(format!("a data key does not unwrap with KEK {}", self.id)))?;
        let raw: [u8; KEY_LEN] =
            raw.try_into().map_err(|_| Error::Tampered("a wrapped data key has the wrong length".into()))?;
        Dek::from_raw(raw)
    }

    fn wrap_aad(&self, context: &[u8]) -> Vec<u8> {
        let mut aad = format!("{}|", self.id).into_bytes();
        aad.extend_from_slice(context);
        aad
    }

    /// A value that identifies this material without revealing it: the GCM tag of nothing,
    /// with the id as associated data, under an all-zero nonce (one fixed message). Recorded
    /// when the key is first used, so that different material under the same id is refused.
    pub fn check_value(&self) -> Result<String> {
        let mut empty: [u8; 0] = [];
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([0u8; NONCE_LEN]),
                Aad::from(format!("berth-kek-check|{}", self.id)),
                &mut empty,
            )
            .map_err(|_| Error::Key("computing a key check value failed".into()))?;
        Ok(hex::encode(&tag.as_ref()[..8]))
    }
}

/// The KEKs this process can use. Looking up an id it does not hold re-reads the key folder
/// (at most every 2 s), so a key another process generated or an operator added is found.
#[derive(Debug)]
pub struct KeyRing {
    dir: Option<PathBuf>,
    keys: RwLock<BTreeMap<String, Arc<Kek>>>,
    last_scan: Mutex<Option<Instant>>,
}

const RESCAN_EVERY: Duration = Duration::from_secs(2);

impl KeyRing {
    /// Loads the keys of folder `dir` (if given; a missing folder holds none) and of
    /// `env` (the value of `BERTH_KEYS`).
    pub fn load(dir: Option<&Path>, env: Option<&str>) -> Result<KeyRing> {
        let mut keys = BTreeMap::new();
        if let Some(env) = env {
            for entry in env.split([',', '\n']).map(str::trim).filter(|e| !e.is_empty()) {
                let (id, material) = entry
                    .split_once('=')
                    .ok_or_else(|| Error::Key("BERTH_KEYS entries are <id>=<64 hex digits>".into()))?;
                let kek = Kek::new(id.trim(), parse_material(material, "BERTH_KEYS")?, KeySource::Environment)?;
                keys.insert(kek.id.clone(), Arc::new(kek));
            }
        }
        let ring = KeyRing { dir: dir.map(Path::to_path_buf), keys: RwLock::new(keys), last_scan: Mutex::new(None) };
        ring.scan()?;
        Ok(ring)
    }

    /// An empty ring with no folder (tests).
    pub fn empty() -> KeyRing {
        KeyRing { dir: None, keys: RwLock::new(BTreeMap::new()), last_scan: Mutex::new(None) }
    }

    /// Adds a key (tests, embedding).
    pub fn insert(&self, kek: Kek) {
        if let Ok(mut keys) = self.keys.write() {
            keys.insert(kek.id.clone(), Arc::new(kek));
        }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    fn scan(&self) -> Result<()> {
        if let Ok(mut last) = self.last_scan.lock() {
            *last = Some(Instant::now());
        }
        let Some(dir) = &self.dir else { return Ok(()) };
        if dir.exists() {
            private_only(dir, "the key folder", "700")?;
        }
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::Key(format!("cannot read the key folder {}: {e}", dir.display()))),
        };
        let mut found = Vec::new();
        for entry in entries {
            let path = entry.map_err(Error::Io)?.path();
            let Some(id) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".key")) else {
                continue;
            };
            private_only(&path, "key file", "600")?;
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::Key(format!("cannot read key file {}: {e}", path.display())))?;
            let raw = parse_material(&text, &path.display().to_string())?;
            found.push(Kek::new(id, raw, KeySource::File(path.clone()))?);
        }
        let mut keys = self.keys.write().map_err(|_| Error::Key("key ring lock poisoned".into()))?;
        for kek in found {
            keys.entry(kek.id.clone()).or_insert_with(|| Arc::new(kek));
        }
        Ok(())
    }

    /// The KEK `id`.
    pub fn get(&self, id: &str) -> Result<Arc<Kek>> {
        if let Some(k) = self.keys.read().ok().and_then(|k| k.get(id).cloned()) {
            return Ok(k);
        }
        let due = self.last_scan.lock().ok().is_none_or(|l| l.is_none_or(|t| t.elapsed() >= RESCAN_EVERY));
        if due {
            self.scan()?;
            if let Some(k) = self.keys.read().ok().and_then(|k| k.get(id).cloned()) {
                return Ok(k);
            }
        }
        Err(Error::Key(format!(
            "key {id} is not in this process's key ring (add {id}.key to the key folder or {id}=<hex> to BERTH_KEYS)"
        )))
    }

    /// Every KEK held, by id.
    pub fn all(&self) -> Vec<Arc<Kek>> {
        let _ = self.scan();
        self.keys.read().map(|k| k.values().cloned().collect()).unwrap_or_default()
    }

    /// Generates a new version of key `name` into the key folder (owner-only permissions).
    pub fn generate(&self, name: &str) -> Result<Arc<Kek>> {
        if !valid_name(name) {
            return Err(Error::Key(format!("{name:?} is not a key name (a-z, 0-9, -)")));
        }
        let dir = self.dir.as_ref().ok_or_else(|| Error::Key("no key folder to generate keys into".into()))?;
        self.scan()?;
        let version = self.all().iter().filter(|k| k.name == name).map(|k| k.version).max().unwrap_or(0) + 1;
        let id = format!("{name}.{version}");
        let mut raw = [0u8; KEY_LEN];
        fill_random(&mut raw)?;
        create_private_dir(dir)?;
        let path = dir.join(format!("{id}.key"));
        write_private(&path, &format!("{}\n", hex::encode(raw)))?;
        let kek = Arc::new(Kek::new(&id, raw, KeySource::File(path))?);
        self.keys.write().map_err(|_| Error::Key("key ring lock poisoned".into()))?.insert(id, kek.clone());
        Ok(kek)
    }
}

fn parse_material(text: &str, from: &str) -> Result<[u8; KEY_LEN]> {
    let bytes =
        hex::decode(text.trim()).map_err(|_| Error::Key(format!("{from}: key material must be 64 hex digits")))?;
    bytes.try_into().map_err(|_| Error::Key(format!("{from}: key material must be 32 bytes (64 hex digits)")))
}

/// Refuses a key file or folder that users other than its owner may read: any local user
/// holding a KEK can open every blob sealed under it. `mode` is the `chmod` that fixes it.
fn private_only(path: &Path, what: &str, mode: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| Error::Key(format!("{what} {}: {e}", path.display())))?;
    let bits = meta.permissions().mode() & 0o777;
    if bits & 0o077 != 0 {
        return Err(Error::Key(format!(
            "{what} {} is open to other users (mode {bits:o}): run `chmod {mode} {}` (keys must be readable by \
             Berth's user only)",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::Key(format!("cannot create the key folder {}: {e}", dir.display())))
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::Key(format!("cannot create key file {}: {e}", path.display())))?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(Error::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(parse_id("default.1"), Some(("default", 1)));
        assert_eq!(parse_id("team-a.12"), Some(("team-a", 12)));
        for bad in ["default", "default.0", "Default.1", ".1", "a b.1", "-x.1", "x.-1"] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn wrap_unwrap_and_wrong_keys() {
        let a = Kek::from_raw("default.1", [1; 32]).unwrap();
        let b = Kek::from_raw("default.1", [2; 32]).unwrap();
        let dek = Dek::generate().unwrap();
        let w = a.wrap(&dek, b"ctx").unwrap();
        assert_eq!(a.unwrap(&w, b"ctx").unwrap().raw(), dek.raw());
        assert!(a.unwrap(&w, b"other").is_err());
        assert!(b.unwrap(&w, b"ctx").is_err());
        assert_ne!(a.check_value().unwrap(), b.check_value().unwrap());
        assert_eq!(a.check_value().unwrap(), Kek::from_raw("default.1", [1; 32]).unwrap().check_value().unwrap());
        assert!(!format!("{a:?}").contains("0101"));
    }

    #[test]
    fn folder_env_and_generation() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let env = format!("ops.1={}", "ab".repeat(32));
        let ring = KeyRing::load(Some(&keys), Some(&env)).unwrap();
        assert_eq!(ring.get("ops.1").unwrap().source(), &KeySource::Environment);
        let k1 = ring.generate("default").unwrap();
        let k2 = ring.generate("default").unwrap();
        assert_eq!((k1.id(), k2.id()), ("default.1", "default.2"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keys.join("default.2.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Another process finds both in the folder.
        let other = KeyRing::load(Some(&keys), None).unwrap();
        assert_eq!(other.get("default.2").unwrap().check_value().unwrap(), k2.check_value().unwrap());
        assert!(other.get("ops.1").is_err());
        assert!(KeyRing::load(None, Some("x.1=zz")).is_err());
        assert!(KeyRing::load(None, Some("nokey")).is_err());
    }

    #[test]
    fn key_files_and_folders_open_to_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        KeyRing::load(Some(&keys), None).unwrap().generate("default").unwrap();
        let file = keys.join("default.1.key");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = KeyRing::load(Some(&keys), None).unwrap_err().to_string();
        assert!(err.contains("chmod 600") && err.contains("default.1.key"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = KeyRing::load(Some(&keys), None).unwrap_err().to_string();
        assert!(err.contains("chmod 700"), "{err}");
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(KeyRing::load(Some(&keys), None).unwrap().get("default.1").is_ok());
    }
}
