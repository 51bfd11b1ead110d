//! The token signing keys: from `auth.token.signing_key_file`, or generated once and kept
//! in the metadata store (so replicas share them), sealed under a KEK of the key ring so
//! that a copy of the database alone (a backup, a PostgreSQL dump) cannot sign tokens.
//!
//! A key stored before sealing existed, or sealed under a KEK that is no longer the active
//! one, is re-sealed under the active KEK at start (a compare-and-swap, so racing replicas
//! agree). A sealed key whose KEK this process lacks stops the start with the key's id.

use std::sync::Arc;

use berth_auth::token::SigningKey;
use berth_storage::MetadataStore;
use berth_storage::crypt::{Kek, KeyRing, secret};
use berth_storage::metadata::{SigningKeyRecord, unix_now};

use super::config::AuthConfig;

/// What seals secrets kept in the metadata store: the ring that opens them, and the KEK new
/// seals use (`None`: none available, secrets are stored as they are, with a warning at start).
#[derive(Debug, Clone)]
pub struct SecretSealing {
    pub ring: Arc<KeyRing>,
    pub kek: Option<Arc<Kek>>,
}

/// The associated data a signing key is sealed with: its record, so a sealed key moved to
/// another record does not open.
fn context(kid: &str) -> Vec<u8> {
    format!("berth/token-signing-key/{kid}").into_bytes()
}

/// The signing keys, oldest first; the last one signs.
pub async fn load(
    config: &AuthConfig,
    meta: &dyn MetadataStore,
    secrets: &SecretSealing,
) -> Result<Vec<SigningKey>, String> {
    if let Some(path) = &config.token.signing_key_file {
        private_file(path)?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("auth.token.signing_key_file {}: {e}", path.display()))?;
        let key =
            SigningKey::from_pem(&text).map_err(|e| format!("auth.token.signing_key_file {}: {e}", path.display()))?;
        return Ok(vec![key]);
    }
    let candidate = SigningKey::generate().map_err(|e| e.to_string())?;
    let stored = match &secrets.kek {
        Some(kek) => secret::seal(kek, candidate.pkcs8_der(), &context(candidate.kid()))
            .map_err(|e| format!("sealing the token signing key: {e}"))?,
        None => candidate.pkcs8_der().to_vec(),
    };
    let record = SigningKeyRecord { kid: candidate.kid().to_owned(), pkcs8: stored, created_at: unix_now() };
    let recorded = meta.ensure_signing_key(&record).await.map_err(|e| format!("token signing key: {e}"))?;
    let mut keys = Vec::with_capacity(recorded.len());
    for r in recorded {
        let der = if secret::is_sealed(&r.pkcs8) {
            secret::open(&secrets.ring, &r.pkcs8, &context(&r.kid))
                .map_err(|e| format!("the stored token signing key {} does not open: {e}", r.kid))?
        } else {
            r.pkcs8.clone()
        };
        let key = SigningKey::from_pkcs8_der(&der).map_err(|e| format!("stored signing key {}: {e}", r.kid))?;
        reseal_if_needed(meta, secrets, &r, &der).await;
        keys.push(key);
    }
    Ok(keys)
}

/// Seals a key stored unsealed, or sealed under a KEK other than the active one. A failure
/// is logged: the key still signs, and the next start tries again.
async fn reseal_if_needed(meta: &dyn MetadataStore, secrets: &SecretSealing, r: &SigningKeyRecord, der: &[u8]) {
    let Some(kek) = &secrets.kek else { return };
    let current = secret::is_sealed(&r.pkcs8).then(|| secret::kek_id(&r.pkcs8).ok()).flatten();
    if current == Some(kek.id()) {
        return;
    }
    let result = match secret::seal(kek, der, &context(&r.kid)) {
        Ok(sealed) => meta.reseal_signing_key(&r.kid, &r.pkcs8, &sealed).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(true) => tracing::info!(token.kid = %r.kid, key.id = kek.id(), from = current.unwrap_or("unsealed"),
            "sealed the token signing key under the active key-encryption key"),
        Ok(false) => {} // Another process did it first.
        Err(e) => tracing::warn!(token.kid = %r.kid, error = %e, "could not re-seal the token signing key"),
    }
}

/// Refuses a signing key file that other users may read: whoever reads it can mint tokens.
fn private_file(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("auth.token.signing_key_file {}: {e}", path.display()))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "auth.token.signing_key_file {} is open to other users (mode {mode:o}): run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}
