//! Webhook secrets at rest. A subscription's secret signs every delivery (HMAC-SHA256), so
//! whoever reads it can forge deliveries its receivers trust. It is kept in the metadata
//! store sealed under the key ring, like the token signing key (`storage::crypt::secret`),
//! as `sealed:v1:<base64>`; a copy of the database alone does not reveal it. A secret
//! stored before sealing (plain text) still works and is sealed at the next start.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use berth_storage::crypt::secret;

use crate::auth::SecretSealing;

const PREFIX: &str = "sealed:v1:";

/// The associated data: the subscription, so a sealed secret moved to another does not open.
fn context(name: &str) -> Vec<u8> {
    format!("berth/webhook-secret/{name}").into_bytes()
}

/// The stored form of `plain` for subscription `name`: sealed when a KEK is available.
pub fn seal(sealing: &SecretSealing, name: &str, plain: &str) -> Result<String, String> {
    match &sealing.kek {
        Some(kek) => secret::seal(kek, plain.as_bytes(), &context(name))
            .map(|sealed| format!("{PREFIX}{}", STANDARD.encode(sealed)))
            .map_err(|e| format!("sealing the secret of webhook {name}: {e}")),
        None => Ok(plain.to_owned()),
    }
}

/// The secret of subscription `name` from its stored form.
pub fn open(sealing: &SecretSealing, name: &str, stored: &str) -> Result<String, String> {
    let Some(b64) = stored.strip_prefix(PREFIX) else { return Ok(stored.to_owned()) };
    let sealed = STANDARD.decode(b64).map_err(|_| format!("the sealed secret of webhook {name} is malformed"))?;
    let plain = secret::open(&sealing.ring, &sealed, &context(name))
        .map_err(|e| format!("the secret of webhook {name} does not open: {e}"))?;
    String::from_utf8(plain).map_err(|_| format!("the secret of webhook {name} is not text"))
}

/// Whether the stored form should be sealed again: it is plain text, or sealed under a KEK
/// other than the active one (and a KEK is available).
pub fn needs_reseal(sealing: &SecretSealing, stored: &str) -> bool {
    let Some(kek) = &sealing.kek else { return false };
    let Some(b64) = stored.strip_prefix(PREFIX) else { return true };
    let Ok(sealed) = STANDARD.decode(b64) else { return false };
    secret::kek_id(&sealed).is_ok_and(|id| id != kek.id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_storage::crypt::{Kek, KeyRing};
    use std::sync::Arc;

    #[test]
    fn round_trip_plain_fallback_and_reseal() {
        let ring = Arc::new(KeyRing::empty());
        ring.insert(Kek::from_raw("default.1", [3; 32]).unwrap());
        ring.insert(Kek::from_raw("default.2", [4; 32]).unwrap());
        let one = SecretSealing { ring: ring.clone(), kek: Some(ring.get("default.1").unwrap()) };
        let two = SecretSealing { ring: ring.clone(), kek: Some(ring.get("default.2").unwrap()) };
        let stored = seal(&one, "hook", "0123456789abcdef").unwrap();
        assert!(stored.starts_with(PREFIX) && !stored.contains("0123456789abcdef"));
        assert_eq!(open(&one, "hook", &stored).unwrap(), "0123456789abcdef");
        assert!(open(&one, "other", &stored).is_err(), "bound to its subscription");
        assert!(!needs_reseal(&one, &stored));
        assert!(needs_reseal(&two, &stored), "sealed under a KEK that is no longer active");
        assert!(needs_reseal(&one, "plain-secret-from-before"));
        assert_eq!(open(&one, "hook", "plain-secret-from-before").unwrap(), "plain-secret-from-before");
        let none = SecretSealing { ring, kek: None };
        assert_eq!(seal(&none, "hook", "s").unwrap(), "s");
        assert!(!needs_reseal(&none, "s"));
    }
}
