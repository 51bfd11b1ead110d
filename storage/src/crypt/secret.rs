//! Small secrets kept in the metadata store (the token signing key), sealed under a KEK of
//! the key ring, so that a copy of the database alone (a backup, a dump) reveals nothing.
//!
//! Format, all in one byte string: `MAGIC ‖ id length (u8) ‖ KEK id ‖ wrapped data key
//! length (u16, big-endian) ‖ wrapped data key ‖ nonce ‖ ciphertext ‖ tag`. A fresh data key
//! seals each secret; the KEK wraps it with the secret's `context` as associated data, and
//! the secret is sealed with the same context, so a sealed value moved to another record
//! (another `kid`) does not open.

use super::{Dek, Kek, KeyRing};
use crate::error::{Error, Result};

/// Starts every sealed secret. No DER value (what unsealed secrets are) starts with it.
const MAGIC: &[u8] = b"berth-sealed-secret-v1\0";

/// Whether `stored` is a sealed secret (else it is a value written before sealing).
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(MAGIC)
}

/// Seals `plain` under `kek`, bound to `context`.
pub fn seal(kek: &Kek, plain: &[u8], context: &[u8]) -> Result<Vec<u8>> {
    let dek = Dek::generate()?;
    let wrapped = kek.wrap(&dek, context)?;
    let id = kek.id().as_bytes();
    let id_len = u8::try_from(id.len()).map_err(|_| Error::Key("a KEK id is too long to record".into()))?;
    let wrapped_len = u16::try_from(wrapped.len()).map_err(|_| Error::Key("a wrapped key is too long".into()))?;
    let mut out = MAGIC.to_vec();
    out.push(id_len);
    out.extend_from_slice(id);
    out.extend_from_slice(&wrapped_len.to_be_bytes());
    out.extend_from_slice(&wrapped);
    out.extend_from_slice(&dek.seal_small(plain, context)?);
    Ok(out)
}

/// The KEK id a sealed secret names, so a caller can tell whether it should be re-sealed
/// under the active key.
pub fn kek_id(stored: &[u8]) -> Result<&str> {
    Ok(parts(stored)?.0)
}

/// Opens what [`seal`] made, with the KEK it names from `ring` and the same `context`.
pub fn open(ring: &KeyRing, stored: &[u8], context: &[u8]) -> Result<Vec<u8>> {
    let (id, wrapped, sealed) = parts(stored)?;
    let kek = ring.get(id)?;
    let dek = kek.unwrap(wrapped, context)?;
    dek.open_small(sealed, context).map_err(|_| Error::Tampered(format!("a sealed secret does not open with {id}")))
}

fn parts(stored: &[u8]) -> Result<(&str, &[u8], &[u8])> {
    let bad = || Error::Corrupt("a sealed secret is malformed".into());
    let rest = stored.strip_prefix(MAGIC).ok_or_else(bad)?;
    let (&id_len, rest) = rest.split_first().ok_or_else(bad)?;
    let (id, rest) = rest.split_at_checked(usize::from(id_len)).ok_or_else(bad)?;
    let id = std::str::from_utf8(id).map_err(|_| bad())?;
    let (len, rest) = rest.split_at_checked(2).ok_or_else(bad)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let (wrapped, sealed) = rest.split_at_checked(len).ok_or_else(bad)?;
    Ok((id, wrapped, sealed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let ring = KeyRing::empty();
        ring.insert(Kek::from_raw("default.1", [7; 32]).unwrap());
        ring.insert(Kek::from_raw("default.2", [8; 32]).unwrap());
        let k1 = ring.get("default.1").unwrap();
        let sealed = seal(&k1, b"private key", b"kid-a").unwrap();
        assert!(is_sealed(&sealed));
        assert!(!is_sealed(&[0x30, 0x81, 0x87]), "PKCS#8 DER is not sealed");
        assert!(!sealed.windows(b"private key".len()).any(|w| w == b"private key"));
        assert_eq!(kek_id(&sealed).unwrap(), "default.1");
        assert_eq!(open(&ring, &sealed, b"kid-a").unwrap(), b"private key");
        // Another context (record), a flipped byte, a truncation, a missing key: refused.
        assert!(open(&ring, &sealed, b"kid-b").is_err());
        for i in MAGIC.len()..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(open(&ring, &bad, b"kid-a").is_err(), "flipped byte {i}");
        }
        assert!(open(&ring, &sealed[..sealed.len() - 1], b"kid-a").is_err());
        assert!(open(&KeyRing::empty(), &sealed, b"kid-a").is_err());
        assert!(open(&ring, MAGIC, b"kid-a").is_err());
    }
}
