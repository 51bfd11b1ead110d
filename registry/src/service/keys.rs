//! Key administration (`berth keys ...`): list, create, rotate, retire, and encrypting the
//! blobs of a registry that ran without encryption.

use std::time::Duration;

use berth_oci::RepoName;
use berth_storage::crypt::record::blob_wrap_context;
use berth_storage::metadata::{KeyRecord, KeyState};

use super::Registry;
use super::encryption::record;
use crate::error::{ApiError, ApiResult};

/// One row of `berth keys list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyListing {
    pub id: String,
    pub name: String,
    /// `active`, `inactive`, `retired`, or `unrecorded` (in the key ring, never used).
    pub state: String,
    pub blobs: u64,
    pub uploads: u64,
    /// Where this process found the material; `None`: missing here.
    pub source: Option<String>,
}

/// What a rotation did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rotation {
    pub name: String,
    pub from: Vec<String>,
    pub to: String,
    pub rewrapped: u64,
}

/// What `encrypt-existing` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Encrypted {
    pub repositories: u64,
    pub blobs: u64,
    pub bytes: u64,
    pub plaintext_removed: u64,
}

impl Registry {
    /// Every key recorded or in the ring, with state, use and source.
    pub async fn list_keys(&self) -> ApiResult<Vec<KeyListing>> {
        let ring = self.crypt.ring.all();
        let recorded = self.meta.keys(true).await?;
        let source = |id: &str| ring.iter().find(|k| k.id() == id).map(|k| k.source().to_string());
        let mut out: Vec<KeyListing> = recorded
            .iter()
            .map(|k| KeyListing {
                id: k.id.clone(),
                name: k.name.clone(),
                state: k.state.as_str().into(),
                blobs: k.blobs,
                uploads: k.uploads,
                source: source(&k.id),
            })
            .collect();
        for k in &ring {
            if !recorded.iter().any(|r| r.id == k.id()) {
                out.push(KeyListing {
                    id: k.id().into(),
                    name: k.name().into(),
                    state: "unrecorded".into(),
                    blobs: 0,
                    uploads: 0,
                    source: Some(k.source().to_string()),
                });
            }
        }
        Ok(out)
    }

    /// Creates key `name` (for repositories that choose it): its first version is taken
    /// from the key ring if there, else generated into the key folder; made active.
    pub async fn create_key(&self, name: &str) -> ApiResult<String> {
        if !berth_storage::crypt::keyring::valid_name(name) {
            return Err(ApiError::Invalid(format!(
                "{name:?} is not a key name: 1 to 63 of a-z, 0-9 and -, not starting with -"
            )));
        }
        if self.meta.keys(false).await?.iter().any(|k| k.name == name) {
            return Err(ApiError::Unsupported(format!("key {name} exists; use `berth keys rotate --key {name}`")));
        }
        if !self.crypt.ring.all().iter().any(|k| k.name() == name) {
            self.crypt.ring.generate(name)?;
        }
        Ok(self.crypt.active(self.meta.as_ref(), name).await?.id().to_owned())
    }

    /// Makes a new version of key `name` active and re-wraps every data key wrapped by an
    /// older version, without touching blob bytes. The new version is the newest in the key
    /// ring if it is newer than every recorded one, else generated into the key folder.
    /// Waits out the other processes' cache of the active key first (`settle`).
    pub async fn rotate_key(&self, name: &str, settle: Duration, progress: &dyn Fn(u64)) -> ApiResult<Rotation> {
        let recorded = self.meta.keys(false).await?;
        if !recorded.iter().any(|k| k.name == name) {
            // Rotating is for a key in use; making one is `create`, said out loud.
            return Err(ApiError::NotFound(format!(
                "no key {name} is recorded (`berth keys list` shows the keys; `berth keys create {name}` makes one)"
            )));
        }
        let newest_recorded = recorded
            .iter()
            .filter(|k| k.name == name)
            .filter_map(|k| berth_storage::crypt::keyring::parse_id(&k.id).map(|(_, v)| v))
            .max()
            .unwrap_or(0);
        let candidate = self.crypt.ring.all().into_iter().filter(|k| k.name() == name).max_by_key(|k| k.version());
        let next = match candidate {
            Some(k) if k.version() > newest_recorded => k,
            _ => self.crypt.ring.generate(name)?,
        };
        record(self.meta.as_ref(), &next, KeyState::Inactive).await?;
        self.meta.activate_key(next.id()).await?;
        self.crypt.forget_active();
        tracing::info!(key.id = next.id(), "key rotated: new version active");
        // Other processes may wrap with the old version until their cache expires.
        tokio::time::sleep(settle).await;
        let old: Vec<KeyRecord> = self
            .meta
            .keys(false)
            .await?
            .into_iter()
            .filter(|k| k.name == name && k.id != next.id() && k.state != KeyState::Retired)
            .collect();
        let mut rewrapped = 0;
        for old_key in &old {
            let old_kek = self.crypt.kek(self.meta.as_ref(), &old_key.id).await?;
            loop {
                let batch = self.meta.copies_wrapped_by(&old_key.id, 500).await?;
                if batch.is_empty() {
                    break;
                }
                for (digest, copy) in batch {
                    let context = blob_wrap_context(&digest, &copy.key_name);
                    let dek = old_kek.unwrap(&copy.wrapped, &context)?;
                    let wrapped = next.wrap(&dek, &context)?;
                    if self.meta.rewrap_copy(&digest, &copy.key_name, &old_key.id, next.id(), &wrapped).await? {
                        rewrapped += 1;
                        if rewrapped % 100 == 0 {
                            progress(rewrapped);
                        }
                    }
                }
            }
        }
        progress(rewrapped);
        Ok(Rotation {
            name: name.into(),
            from: old.into_iter().map(|k| k.id).collect(),
            to: next.id().into(),
            rewrapped,
        })
    }

    /// Retires key `id` (inactive, wrapping nothing): its material may then be destroyed.
    pub async fn retire_key(&self, id: &str) -> ApiResult<()> {
        use berth_storage::metadata::RetireRefused;
        let name = |id: &str| berth_storage::crypt::keyring::parse_id(id).map_or("NAME", |(n, _)| n).to_owned();
        self.meta.retire_key(id).await?.map_err(|refused| match refused {
            RetireRefused::Unknown(id) => ApiError::NotFound(format!(
                "no key version {id} is recorded (`berth keys list` shows the ids, e.g. default.1)"
            )),
            RetireRefused::Active(_) | RetireRefused::InUse { .. } => {
                ApiError::Conflict(format!("{refused} (`berth keys rotate --key {}`)", name(id)))
            }
        })
    }

    /// Encrypts a registry that ran without encryption: every plaintext repository gets the
    /// key a new one would get, every blob linked to it is sealed for that key, and then
    /// plaintext objects no repository needs any more are removed. Safe to run again;
    /// `progress(repository, blobs done, bytes done)` is called after each blob.
    pub async fn encrypt_existing(&self, progress: &dyn Fn(&RepoName, u64, u64)) -> ApiResult<Encrypted> {
        let mut done = Encrypted::default();
        if !self.crypt.enabled {
            return Err(ApiError::Unsupported(
                "encryption is off (encryption.enabled = false): turn it on in the configuration first".into(),
            ));
        }
        for (repo, key) in self.meta.repository_keys().await? {
            let key = match key {
                Some(k) => k,
                None => {
                    let plan = self.creation_plan(&repo, crate::rules::templates::AppliedFor::CreateOnPush).await?;
                    let Some(k) = plan.new.key else { continue };
                    // Sealed copies first, so reads never miss one once the key is set.
                    self.seal_repository(&repo, &k, &mut done, progress).await?;
                    self.meta.set_repository_key(&repo, &k).await?;
                    done.repositories += 1;
                    k
                }
            };
            // Blobs linked while the key was being set, or before an interrupted run.
            self.seal_repository(&repo, &key, &mut done, progress).await?;
        }
        loop {
            let redundant = self.meta.redundant_plaintext(500).await?;
            if redundant.is_empty() {
                break;
            }
            for digest in redundant {
                if self.meta.drop_plaintext(&digest).await? {
                    self.blobs.delete_object(&berth_storage::layout::blob(&digest)).await?;
                    done.plaintext_removed += 1;
                }
            }
        }
        Ok(done)
    }

    async fn seal_repository(
        &self,
        repo: &RepoName,
        key: &str,
        done: &mut Encrypted,
        progress: &dyn Fn(&RepoName, u64, u64),
    ) -> ApiResult<()> {
        for (digest, size) in self.meta.repository_blobs(repo).await? {
            // Held so that the collector does not delete the blob while its copy is written.
            let sealed = self
                .with_hold(&digest, async {
                    if self.meta.blob_copy(&digest, key).await?.is_some() {
                        return Ok(false);
                    }
                    let content = self.blobs.read(&digest, None).await?;
                    // Written verified: a damaged plaintext is refused, not sealed.
                    self.write_blob(&digest, content, Some(key)).await?;
                    Ok(true)
                })
                .await?;
            if !sealed {
                continue;
            }
            done.blobs += 1;
            done.bytes += size;
            progress(repo, done.blobs, done.bytes);
        }
        Ok(())
    }
}
