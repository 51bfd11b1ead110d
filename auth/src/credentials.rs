//! Passwords, access keys and user names: how they are generated, stored and checked.
//!
//! Two kinds of secret, stored two ways:
//! - Passwords are chosen by people, so they are guessable: they are stored as argon2id PHC
//!   strings ([`hash_password`]), slow on purpose.
//! - Access-key secrets are 240 random bits: no one can guess them, so a fast SHA-256 digest
//!   is enough ([`secret_digest`]), and checking one costs nothing on a request path.
//!
//! Invariants:
//! - No secret is stored or logged in the clear: `NewAccessKey`'s `Debug` hides the secret,
//!   and errors never carry a password.
//! - Comparisons of secrets are constant-time (argon2's own for passwords,
//!   [`constant_time_eq`] for digests), and a login for an unknown user costs one argon2
//!   verification like any other ([`burn_password_check`]), so timing tells neither.
//! - Randomness comes from AWS-LC's generator only.
//! - User names and access key ids cannot be confused: a user name may not have the shape
//!   of an access key id, nor be `AWS`, which `docker login -u AWS` uses for login tokens.

use std::fmt;

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier as _, Version};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Argon2id memory cost in KiB (19 MiB), time cost and parallelism: OWASP's first
/// recommended configuration, about 20-40 ms a hash on a server core.
const ARGON2_M_KIB: u32 = 19 * 1024;
const ARGON2_T: u32 = 2;
const ARGON2_P: u32 = 1;

/// The most any stored hash may ask verification to spend. Hashes come from our own
/// database, but one written with absurd parameters (by hand, or by a bug) must not let a
/// login request take gigabytes or minutes.
const MAX_VERIFY_M_KIB: u32 = 256 * 1024;
const MAX_VERIFY_T: u32 = 16;
const MAX_VERIFY_P: u32 = 16;

/// A decoy argon2id PHC string with the parameters above, for [`burn_password_check`]. Its
/// output is random bytes rather than the hash of anything, so no known password matches it.
/// A test keeps its parameters equal to the ones new hashes get, so the decoy costs what a
/// real check does.
const DECOY_PHC: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$YmVydGgtZGVjb3ktc2FsdA$MkCKc3t3m4w39l6xYtYSKcVGlBBWqbfSjdZxUPq4U1Q";

/// The prefix of every Berth access key id, after AWS's `AKIA`.
const ACCESS_KEY_PREFIX: &str = "BKIA";
/// Characters after the prefix: RFC 4648 base32 of 10 random bytes (80 bits).
const ACCESS_KEY_RANDOM_LEN: usize = 16;
const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

const USER_NAME_MAX: usize = 64;
const PASSWORD_MIN: usize = 8;
/// Long enough for any passphrase or password manager, short enough that hashing one is
/// not a way to make the server work.
const PASSWORD_MAX: usize = 1024;

/// Why a credential was refused or could not be made. Messages never include the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("invalid user name: {0}")]
    UserName(&'static str),
    #[error("invalid password: {0}")]
    Password(&'static str),
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

/// `n` bytes from AWS-LC's generator.
///
/// AWS-LC's `RAND_bytes` never reports failure: it aborts the process if its entropy
/// source fails, since every caller would otherwise have to handle a weak secret. The
/// `Err` arm below is therefore unreachable; panicking there only states that a secret is
/// never made from anything but fresh randomness.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        panic!("the system random number generator failed");
    }
    bytes
}

fn argon2() -> Result<Argon2<'static>, CredentialError> {
    let params =
        Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None).map_err(|e| CredentialError::Hashing(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// The argon2id PHC string of `password`, with a fresh 16-byte salt.
pub fn hash_password(password: &str) -> Result<String, CredentialError> {
    let salt = random_bytes::<16>();
    let hash = argon2()?
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| CredentialError::Hashing(e.to_string()))?;
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `phc`. False for anything but a well-formed
/// argon2id hash within the verification limits; argon2 compares outputs in constant time.
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    // One algorithm, as for tokens: argon2i/argon2d strings are not ours.
    if hash.algorithm != argon2::ARGON2ID_IDENT {
        return false;
    }
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    if params.m_cost() > MAX_VERIFY_M_KIB || params.t_cost() > MAX_VERIFY_T || params.p_cost() > MAX_VERIFY_P {
        return false;
    }
    // Verification uses the parameters stored in the hash, not the instance's, so hashes
    // made before a parameter change keep working.
    Argon2::default().verify_password(password.as_bytes(), &hash).is_ok()
}

/// Spend what a password check against a real user costs, for a user who does not exist,
/// so that response times do not reveal which user names are taken.
pub fn burn_password_check(password: &str) {
    std::hint::black_box(verify_password(password, DECOY_PHC));
}

/// A newly made access key. The secret is shown to its owner once and stored only as its
/// [`secret_digest`].
#[derive(Clone)]
pub struct NewAccessKey {
    /// `BKIA` and 16 characters of `[A-Z2-7]`; not secret, it names the key.
    pub id: String,
    /// 40 characters of base64url (240 random bits).
    pub secret: String,
}

impl fmt::Debug for NewAccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewAccessKey").field("id", &self.id).field("secret", &"<redacted>").finish()
    }
}

/// A fresh access key id and secret.
pub fn generate_access_key() -> NewAccessKey {
    let mut id = String::with_capacity(ACCESS_KEY_PREFIX.len() + ACCESS_KEY_RANDOM_LEN);
    id.push_str(ACCESS_KEY_PREFIX);
    id.push_str(&base32(&random_bytes::<10>()));
    NewAccessKey { id, secret: URL_SAFE_NO_PAD.encode(random_bytes::<30>()) }
}

/// RFC 4648 base32 without padding; only ever called with whole 5-byte groups.
fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32_ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(BASE32_ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The prefix of every Berth user id, as IAM's unique user ids start with `AIDA`.
const USER_ID_PREFIX: &str = "AIDA";

/// A fresh user id: `AIDA` and 16 characters of `[A-Z2-7]` (80 random bits). Unlike the
/// name, it is never given to another user: tokens carry it, so a user deleted and created
/// again under the same name does not inherit the old one's tokens. Not secret.
pub fn generate_user_id() -> String {
    let mut id = String::with_capacity(USER_ID_PREFIX.len() + ACCESS_KEY_RANDOM_LEN);
    id.push_str(USER_ID_PREFIX);
    id.push_str(&base32(&random_bytes::<10>()));
    id
}

/// Whether `s` has the shape of an access key id, to tell access-key logins from user names.
pub fn is_access_key_id(s: &str) -> bool {
    s.len() == ACCESS_KEY_PREFIX.len() + ACCESS_KEY_RANDOM_LEN
        && s.starts_with(ACCESS_KEY_PREFIX)
        && s.bytes().skip(ACCESS_KEY_PREFIX.len()).all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

/// The stored form of an access-key secret: SHA-256, lowercase hex.
pub fn secret_digest(secret: &str) -> String {
    hex::encode(digest(&SHA256, secret.as_bytes()))
}

/// Whether `secret` matches a stored [`secret_digest`], compared in constant time.
pub fn verify_secret(secret: &str, digest_hex: &str) -> bool {
    // The stored digest is not secret, so decoding it in variable time is fine.
    let Ok(expected) = hex::decode(digest_hex) else {
        return false;
    };
    constant_time_eq(digest(&SHA256, secret.as_bytes()).as_ref(), &expected)
}

/// A generated password (24 characters of base64url, 144 random bits), for a bootstrap
/// administrator.
pub fn random_password() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<18>())
}

/// Whether `a` and `b` are equal, in time that depends on their lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    verify_slices_are_equal(a, b).is_ok()
}

/// A user name: 1 to 64 characters of IAM's user-name alphabet `[A-Za-z0-9+=,.@_-]`, not
/// `AWS` in any case (reserved for `docker login -u AWS`), and not shaped like an access key
/// id (which would make a login ambiguous).
pub fn check_user_name(name: &str) -> Result<(), CredentialError> {
    if name.is_empty() || name.len() > USER_NAME_MAX {
        return Err(CredentialError::UserName("must be 1 to 64 characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b)) {
        return Err(CredentialError::UserName("may contain only A-Z a-z 0-9 and + = , . @ _ -"));
    }
    // Case-insensitively, as IAM compares user names: `aws` beside `AWS` would only confuse.
    if name.eq_ignore_ascii_case("AWS") {
        return Err(CredentialError::UserName("AWS is reserved for login tokens"));
    }
    if is_access_key_id(name) {
        return Err(CredentialError::UserName("must not look like an access key id"));
    }
    Ok(())
}

/// A password a user may set: 8 to 1024 characters.
pub fn check_password(password: &str) -> Result<(), CredentialError> {
    let chars = password.chars().count();
    if chars < PASSWORD_MIN {
        return Err(CredentialError::Password("must be at least 8 characters"));
    }
    if chars > PASSWORD_MAX {
        return Err(CredentialError::Password("must be at most 1024 characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify_round_trips() {
        let phc = hash_password("correct horse battery staple").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("correct horse battery staple", &phc));
    }

    #[test]
    fn wrong_password_is_refused() {
        let phc = hash_password("correct horse battery staple").unwrap();
        assert!(!verify_password("correct horse battery stapler", &phc));
        assert!(!verify_password("", &phc));
    }

    #[test]
    fn malformed_or_foreign_hashes_are_refused() {
        let phc = hash_password("pw").unwrap();
        let truncated = &phc[..phc.len() - 10];
        let argon2i = phc.replacen("$argon2id$", "$argon2i$", 1);
        let greedy = phc.replacen("m=19456", "m=4000000", 1);
        for bad in ["", "pw", "$argon2id$", "$2b$12$abcdefghijklmnopqrstuv", truncated, &argon2i, &greedy] {
            assert!(!verify_password("pw", bad), "{bad}");
        }
    }

    #[test]
    fn two_hashes_of_one_password_differ() {
        let (a, b) = (hash_password("same").unwrap(), hash_password("same").unwrap());
        assert_ne!(a, b);
        assert!(verify_password("same", &a) && verify_password("same", &b));
    }

    #[test]
    fn decoy_hash_costs_what_a_real_hash_costs() {
        let decoy = PasswordHash::new(DECOY_PHC).unwrap();
        let real = hash_password("anything").unwrap();
        let real = PasswordHash::new(&real).unwrap();
        assert_eq!(decoy.algorithm, real.algorithm);
        assert_eq!(decoy.version, real.version);
        assert_eq!(decoy.params, real.params);
        assert_eq!(decoy.hash.map(|h| h.len()), real.hash.map(|h| h.len()));
        // Runs to completion with no answer to give.
        burn_password_check("anything");
    }

    #[test]
    fn access_keys_have_the_documented_shape() {
        let key = generate_access_key();
        assert!(is_access_key_id(&key.id), "{}", key.id);
        assert_eq!(key.id.len(), 20);
        assert_eq!(key.secret.len(), 40);
        assert!(key.secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(URL_SAFE_NO_PAD.decode(&key.secret).unwrap().len(), 30);
        let other = generate_access_key();
        assert_ne!(key.id, other.id);
        assert_ne!(key.secret, other.secret);
        let shown = format!("{key:?}");
        assert!(shown.contains(&key.id) && !shown.contains(&key.secret), "{shown}");
    }

    #[test]
    fn user_ids_are_aida_and_random_base32() {
        let (a, b) = (generate_user_id(), generate_user_id());
        assert_ne!(a, b);
        for id in [a, b] {
            assert_eq!(id.len(), 20, "{id}");
            assert!(id.starts_with("AIDA"), "{id}");
            assert!(id[4..].bytes().all(|c| BASE32_ALPHABET.contains(&c)), "{id}");
            assert!(!is_access_key_id(&id));
        }
    }

    #[test]
    fn access_key_id_shape_check() {
        for good in ["BKIAAAAAAAAAAAAAAAAA", "BKIA234567ABCDEFGHIJ"] {
            assert!(is_access_key_id(good), "{good}");
        }
        for bad in
            ["", "BKIA", "AKIAAAAAAAAAAAAAAAAA", "BKIAAAAAAAAAAAAAAAA", "BKIAAAAAAAAAAAAAAAAAA", "BKIA0000000000000000"]
        {
            assert!(!is_access_key_id(bad), "{bad}");
        }
        assert!(!is_access_key_id("bkiaaaaaaaaaaaaaaaaa"));
    }

    #[test]
    fn base32_matches_rfc_4648_vectors() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"fooba"), "MZXW6YTB");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn secret_digest_verifies_and_mismatches() {
        let key = generate_access_key();
        let stored = secret_digest(&key.secret);
        assert_eq!(stored.len(), 64);
        assert!(verify_secret(&key.secret, &stored));
        assert!(!verify_secret(&generate_access_key().secret, &stored));
        assert!(!verify_secret(&key.secret, &stored[..62]));
        assert!(!verify_secret(&key.secret, "not hex"));
        assert_eq!(secret_digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn random_passwords_are_24_url_safe_characters() {
        let p = random_password();
        assert_eq!(p.len(), 24);
        assert!(p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(p, random_password());
        assert!(check_password(&p).is_ok());
    }

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn user_name_rules() {
        let long = "a".repeat(64);
        let too_long = "a".repeat(65);
        let cases: &[(&str, bool)] = &[
            ("alice", true),
            ("Alice.Smith@example.com", true),
            ("ci+deploy=prod,eu_west-1", true),
            ("a", true),
            (&long, true),
            ("AWSuser", true),
            ("BKIA0000000000000000", true), // 0 is not base32: not an access key id
            ("", false),
            (&too_long, false),
            ("AWS", false),
            ("aws", false),
            ("Aws", false),
            ("BKIAAAAAAAAAAAAAAAAA", false),
            ("alice smith", false),
            ("alice/smith", false),
            ("alice:smith", false),
            ("élodie", false),
            ("tab\t", false),
        ];
        for (name, ok) in cases {
            assert_eq!(check_user_name(name).is_ok(), *ok, "{name:?}");
        }
    }

    #[test]
    fn password_length_rules() {
        assert!(check_password("1234567").is_err());
        assert!(check_password("12345678").is_ok());
        assert!(check_password("ééééééé").is_err()); // 7 characters, 14 bytes
        assert!(check_password(&"x".repeat(1024)).is_ok());
        assert!(check_password(&"x".repeat(1025)).is_err());
    }
}
