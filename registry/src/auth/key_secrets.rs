//! Access-key secrets kept recoverable for Signature Version 4, which needs the secret
//! itself (a Basic sign-in needs only its digest). The secret is sealed under the key ring
//! like the token signing key and webhook secrets (`storage::crypt::secret`), as
//! `sealed:v1:<base64>` with the key id as associated data, so a sealed secret copied to
//! another key does not open, and a copy of the database alone reveals no secret.
//!
//! - A key created by `Admin::create_access_key` is stored sealed (with a KEK available).
//! - A key created before sealing (`secret_sealed` NULL) is sealed at its next successful
//!   Basic sign-in, when the secret is at hand (a compare-and-set on NULL, so replicas agree);
//!   until then a SigV4 request with it is refused with a message saying so.
//! - A secret sealed under a KEK that is no longer active is sealed again under the active
//!   one when it is next used (SigV4 or Basic).
//! - Without a KEK (PostgreSQL without a shared key) nothing is sealed: such keys sign in
//!   with Basic credentials only, and SigV4 says why.
//!
//! The plain secret is never stored and never logged.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use berth_storage::MetadataStore;
use berth_storage::crypt::secret;
use berth_storage::metadata::{AccessKeyRecord, UserRecord};

use std::net::IpAddr;
use std::time::{Duration, Instant};

use berth_auth::policy::Principal;

use super::throttle::{Admission, Attempt, Secret};
use super::{Authority, Caller, SecretSealing, SignedIn};
use crate::error::ApiError;

const PREFIX: &str = "sealed:v1:";

/// The associated data: the key, so a sealed secret moved to another key does not open.
fn context(key_id: &str) -> Vec<u8> {
    format!("berth/access-key-secret/{key_id}").into_bytes()
}

/// The stored form of `plain` for key `key_id`, or `None` without a KEK.
pub fn seal(sealing: &SecretSealing, key_id: &str, plain: &str) -> Result<Option<String>, String> {
    let Some(kek) = &sealing.kek else { return Ok(None) };
    secret::seal(kek, plain.as_bytes(), &context(key_id))
        .map(|sealed| Some(format!("{PREFIX}{}", STANDARD.encode(sealed))))
        .map_err(|e| format!("sealing the secret of access key {key_id}: {e}"))
}

/// The secret of key `key_id` from its stored form.
fn open(sealing: &SecretSealing, key_id: &str, stored: &str) -> Result<String, String> {
    let sealed = stored
        .strip_prefix(PREFIX)
        .and_then(|b64| STANDARD.decode(b64).ok())
        .ok_or_else(|| format!("the sealed secret of access key {key_id} is malformed"))?;
    let plain = secret::open(&sealing.ring, &sealed, &context(key_id))
        .map_err(|e| format!("the secret of access key {key_id} does not open: {e}"))?;
    String::from_utf8(plain).map_err(|_| format!("the secret of access key {key_id} is not text"))
}

/// Whether `stored` was sealed under a KEK other than the active one (and one is active).
fn sealed_under_old_kek(sealing: &SecretSealing, stored: &str) -> bool {
    let Some(kek) = &sealing.kek else { return false };
    let Some(sealed) = stored.strip_prefix(PREFIX).and_then(|b64| STANDARD.decode(b64).ok()) else { return false };
    secret::kek_id(&sealed).is_ok_and(|id| id != kek.id())
}

/// A key a Signature Version 4 request may be checked with: enabled, of an enabled user,
/// with its secret opened.
pub struct SigV4Key {
    pub id: String,
    pub user: UserRecord,
    /// The plain secret, in memory only for the request being checked.
    pub secret: String,
}

impl std::fmt::Debug for SigV4Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigV4Key").field("id", &self.id).field("user", &self.user.name).finish_non_exhaustive()
    }
}

/// Why a key cannot check a Signature Version 4 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRefused {
    /// No such key, or it or its user is disabled (or deleted): AWS answers these alike.
    Unrecognized,
    /// Created before secrets were sealed, and not used with Basic credentials since.
    NotSealed,
    /// The registry has no KEK, so no secret is kept.
    NoKek,
    /// The sealed secret does not open (its KEK is missing from the ring).
    Unopenable(String),
}

impl KeyRefused {
    /// What the client is told, with the fix in its terms.
    pub fn message(&self, key_id: &str) -> String {
        match self {
            KeyRefused::Unrecognized => "The security token included in the request is invalid.".into(),
            KeyRefused::NotSealed => format!(
                "access key {key_id} was created before this registry kept secrets for Signature Version 4, \
                 so its secret cannot be checked here yet: sign in once with it, e.g. docker login -u {key_id}, \
                 or create a new key with `berth admin key create`"
            ),
            KeyRefused::NoKek => "this registry has no key-encryption key, so it keeps no access-key secrets and \
                 cannot check Signature Version 4: give every replica the same key (BERTH_KEYS=default.1=<64 hex \
                 digits>), restart, and create a new key with `berth admin key create`"
                .into(),
            KeyRefused::Unopenable(_) => format!(
                "the secret of access key {key_id} cannot be opened by this registry (its key-encryption key is \
                 missing); create a new key with `berth admin key create`"
            ),
        }
    }
}

impl Authority {
    /// Admits a Signature Version 4 attempt with key `key_id` from `ip` to the sign-in
    /// throttle (an access key's secret: not counted per key, only per address); refused with
    /// the wait while a back-off runs.
    pub fn admit_signature(&self, key_id: &str, ip: IpAddr) -> Result<Admission<'_>, Duration> {
        let attempt = Attempt::new(key_id, ip, Secret::Random);
        self.throttle.admit(attempt, Instant::now()).map_err(|r| {
            tracing::info!(auth.access_key = key_id, client.ip = %ip, auth.throttle.reason = r.reason.as_str(),
                retry_after_s = r.wait.as_secs_f64().ceil() as u64, "signed request refused: throttled");
            r.wait
        })
    }

    /// Records a refused signature (a wrong secret, an unknown or disabled key) as a failed
    /// sign-in, logged as Basic failures are.
    pub fn signature_failed(&self, admission: Admission<'_>, key_id: &str, ip: IpAddr, why: &str) {
        let backoffs = admission.failed(Instant::now());
        tracing::info!(auth.access_key = key_id, client.ip = %ip, auth.failure = why, "signed request refused");
        if let Some(longest) = backoffs.iter().max_by_key(|b| b.wait) {
            tracing::warn!(auth.access_key = key_id, client.ip = %ip, auth.throttle.reason = longest.reason.as_str(),
                auth.failures = longest.failures, backoff_s = longest.wait.as_secs_f64(), "sign-in back-off started");
        }
    }

    /// The sign-in a signed-in caller stands for now (its user's id and credential
    /// generation, which login tokens carry), if its user and key are still enabled.
    pub async fn signed_in_as(&self, meta: &dyn MetadataStore, caller: &Caller) -> Result<Option<SignedIn>, ApiError> {
        match (&caller.access_key, &caller.principal) {
            (Some(key), _) => self.subject_signed_in(meta, key).await,
            (None, Principal::User { name }) => self.subject_signed_in(meta, name).await,
            (None, Principal::Anonymous) => Ok(None),
        }
    }

    /// What seals secrets kept in the metadata store.
    pub fn sealing(&self) -> &SecretSealing {
        &self.sealing
    }

    /// The key `id` with its secret, for checking a Signature Version 4 request; re-seals the
    /// secret under the active KEK if it was sealed under another.
    pub async fn signing_key(
        &self,
        meta: &dyn MetadataStore,
        id: &str,
    ) -> Result<Result<SigV4Key, KeyRefused>, ApiError> {
        let Some(key) = meta.access_key(id).await?.filter(|k| !k.disabled) else {
            return Ok(Err(KeyRefused::Unrecognized));
        };
        let Some(user) = self.enabled_user(meta, &key.user).await? else { return Ok(Err(KeyRefused::Unrecognized)) };
        let Some(stored) = &key.secret_sealed else {
            return Ok(Err(if self.sealing.kek.is_none() { KeyRefused::NoKek } else { KeyRefused::NotSealed }));
        };
        let secret = match open(&self.sealing, id, stored) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(auth.access_key = id, error = %e, "an access key's sealed secret does not open");
                return Ok(Err(KeyRefused::Unopenable(e)));
            }
        };
        if sealed_under_old_kek(&self.sealing, stored) {
            self.store_sealed(meta, &key, &secret).await;
        }
        Ok(Ok(SigV4Key { id: key.id, user, secret }))
    }

    /// After a successful Basic sign-in with `key`'s secret: seals the secret if the key has
    /// none sealed yet, or has it under a KEK that is no longer active.
    pub(super) async fn seal_at_sign_in(&self, meta: &dyn MetadataStore, key: &AccessKeyRecord, secret: &str) {
        let due = match &key.secret_sealed {
            None => self.sealing.kek.is_some(),
            Some(stored) => sealed_under_old_kek(&self.sealing, stored),
        };
        if due {
            self.store_sealed(meta, key, secret).await;
        }
    }

    /// Seals `secret` under the active KEK in place of what `key` holds (compare-and-set).
    /// A failure is logged: the sign-in it happens in still succeeds.
    async fn store_sealed(&self, meta: &dyn MetadataStore, key: &AccessKeyRecord, secret: &str) {
        let result = match seal(&self.sealing, &key.id, secret) {
            Ok(Some(sealed)) => meta
                .set_access_key_secret_sealed(&key.id, key.secret_sealed.as_deref(), Some(&sealed))
                .await
                .map_err(|e| e.to_string()),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        match result {
            Ok(true) => {
                tracing::info!(auth.access_key = %key.id, from = if key.secret_sealed.is_some() { "another key-encryption key" } else { "digest only" },
                "sealed the access key's secret under the active key-encryption key")
            }
            Ok(false) => {} // Another request or replica did it first, or the key is gone.
            Err(e) => tracing::warn!(auth.access_key = %key.id, error = %e, "could not seal the access key's secret"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_storage::crypt::{Kek, KeyRing};
    use std::sync::Arc;

    #[test]
    fn sealed_secrets_are_bound_to_their_key_and_kek() {
        let ring = Arc::new(KeyRing::empty());
        ring.insert(Kek::from_raw("default.1", [3; 32]).unwrap());
        ring.insert(Kek::from_raw("default.2", [4; 32]).unwrap());
        let one = SecretSealing { ring: ring.clone(), kek: Some(ring.get("default.1").unwrap()) };
        let two = SecretSealing { ring: ring.clone(), kek: Some(ring.get("default.2").unwrap()) };
        let stored = seal(&one, "BKIAAAAAAAAAAAAAAAAA", "s3cr3t-value").unwrap().unwrap();
        assert!(stored.starts_with(PREFIX) && !stored.contains("s3cr3t"));
        assert_eq!(open(&one, "BKIAAAAAAAAAAAAAAAAA", &stored).unwrap(), "s3cr3t-value");
        assert_eq!(open(&two, "BKIAAAAAAAAAAAAAAAAA", &stored).unwrap(), "s3cr3t-value", "the ring opens old seals");
        assert!(open(&one, "BKIABBBBBBBBBBBBBBBB", &stored).is_err(), "bound to its key");
        assert!(open(&one, "BKIAAAAAAAAAAAAAAAAA", "s3cr3t-value").is_err(), "plain text is never taken");
        assert!(!sealed_under_old_kek(&one, &stored));
        assert!(sealed_under_old_kek(&two, &stored));
        let none = SecretSealing { ring, kek: None };
        assert_eq!(seal(&none, "BKIAAAAAAAAAAAAAAAAA", "s").unwrap(), None);
    }
}
