//! Who signs in: users, their access keys, and the token service's signing keys.

use async_trait::async_trait;

use crate::error::Result;

/// A person or service that signs in with a password and/or access keys.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Stable and unique (`AIDA…`, like IAM's user ids), never reused: a user deleted and
    /// created again under the same name gets a new one, so tokens that carry it (refresh
    /// and login tokens) do not pass to the new user.
    pub id: String,
    /// Unique; what policies and access keys are attached to.
    pub name: String,
    /// argon2id PHC string; None: no password login (access keys only).
    pub password_hash: Option<String>,
    /// A disabled user cannot sign in by any means, but keeps its keys and policies, so
    /// enabling it again restores exactly what it had.
    pub disabled: bool,
    /// Unix seconds; shown in listings.
    pub created_at: i64,
    /// The credential generation: starts at 0 and moves on with every password change or
    /// removal and every disabling, in the same write. Refresh and login tokens carry the
    /// generation they were issued at and are refused once it has moved on, so rotating a
    /// leaked password cuts off every long-lived token derived from it.
    pub generation: i64,
}

impl std::fmt::Debug for UserRecord {
    // A password hash can be attacked offline: it never goes to a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("password_hash", &self.password_hash.as_ref().map(|_| "<redacted>"))
            .field("disabled", &self.disabled)
            .field("created_at", &self.created_at)
            .field("generation", &self.generation)
            .finish()
    }
}

/// An access key: its id is public; its secret is kept as a digest (what Basic sign-ins
/// check) and, since Signature Version 4 needs the secret itself, sealed under the key ring.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKeyRecord {
    /// Public, unique across users; a request names it to say which secret signed it.
    pub id: String,
    /// The owner: the key acts as this user (narrowed by the key's own policies).
    pub user: String,
    /// SHA-256 hex of the secret. The secret is random and long, so a fast digest suffices
    /// and keeps checking a key cheap on every request; a leaked digest does not sign in.
    pub secret_digest: String,
    /// Disabled keys stay listed (and keep their policies) but do not authenticate.
    pub disabled: bool,
    /// Unix seconds; shown in listings, and tells an operator which keys are old.
    pub created_at: i64,
    /// The secret sealed under a KEK of the key ring (`sealed:v1:<base64>`, bound to the
    /// key id), for checking Signature Version 4 requests, which need the secret itself.
    /// `None` for keys created before secrets were sealed (until their next Basic sign-in
    /// seals them) and on a registry without a KEK. Never the plain secret.
    pub secret_sealed: Option<String>,
}

impl std::fmt::Debug for AccessKeyRecord {
    // Even sealed, the secret stays out of log lines.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeyRecord")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("secret_digest", &self.secret_digest)
            .field("disabled", &self.disabled)
            .field("created_at", &self.created_at)
            .field("secret_sealed", &self.secret_sealed.as_ref().map(|_| "<sealed>"))
            .finish()
    }
}

/// The token service's signing key (PKCS#8 DER of an ES256 key pair).
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    /// The JWT `kid`: which key signed a token, so that verifiers pick the right one.
    pub kid: String,
    /// The private key (PKCS#8 DER), sealed under a KEK (`crypt::secret`): stored here so
    /// every replica signs with the same key and tokens survive restarts, and sealed so that
    /// the database alone cannot sign. Keys written before sealing are plain DER until the
    /// next start seals them.
    pub pkcs8: Vec<u8>,
    /// Unix seconds; orders keys oldest first.
    pub created_at: i64,
}

impl std::fmt::Debug for SigningKeyRecord {
    // Key material never goes to a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("pkcs8", &format_args!("<{} bytes>", self.pkcs8.len()))
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Who signs in: users, their access keys, and the token service's signing keys.
#[async_trait]
pub trait Identity: Send + Sync {
    // Authentication and authorization records. Names and ids are opaque strings here: the
    // caller validates them (and policy documents) before they are stored.

    /// Creates a user; false when the name is taken.
    async fn create_user(&self, user: &UserRecord) -> Result<bool>;
    /// The user named `name`, to check a sign-in.
    async fn user(&self, name: &str) -> Result<Option<UserRecord>>;
    /// Every user, by name.
    async fn users(&self) -> Result<Vec<UserRecord>>;
    /// Disables or enables a user (keeping its keys and policies); false when there is no
    /// such user. Disabling moves the user's credential generation on.
    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool>;
    /// Replaces (or with `None` removes) the user's password hash and moves its credential
    /// generation on; false when there is no such user.
    async fn set_user_password(&self, name: &str, password_hash: Option<&str>) -> Result<bool>;
    /// Removes a user with its access keys and its and its keys' policies; false when absent.
    /// Nothing of the user survives, so a new user of the same name starts empty (and with
    /// a new id).
    async fn delete_user(&self, name: &str) -> Result<bool>;
    /// Records a new access key; false when its user does not exist (or the id is taken).
    async fn create_access_key(&self, key: &AccessKeyRecord) -> Result<bool>;
    /// The key with this id, to check a request that names it.
    async fn access_key(&self, id: &str) -> Result<Option<AccessKeyRecord>>;
    /// Access keys of one user, or of everyone, by user then id.
    async fn access_keys(&self, user: Option<&str>) -> Result<Vec<AccessKeyRecord>>;
    /// Disables or enables a key (keeping its policies); false when there is no such key.
    async fn set_access_key_disabled(&self, id: &str, disabled: bool) -> Result<bool>;
    /// Removes an access key and its policies; false when absent.
    async fn delete_access_key(&self, id: &str) -> Result<bool>;
    /// Replaces key `id`'s sealed secret with `sealed` if it is still `expected` (`None`:
    /// not sealed yet): sealing a key at its first sign-in, or under a new KEK, once even
    /// when replicas race. False when the key is gone or another process changed it first.
    async fn set_access_key_secret_sealed(
        &self,
        id: &str,
        expected: Option<&str>,
        sealed: Option<&str>,
    ) -> Result<bool>;
    /// Records `candidate` as the token signing key unless one is recorded already, and
    /// returns every recorded key, oldest first: replicas starting at once agree on one key.
    async fn ensure_signing_key(&self, candidate: &SigningKeyRecord) -> Result<Vec<SigningKeyRecord>>;
    /// Replaces the stored form of signing key `kid` (sealed under another KEK, or sealed
    /// for the first time) if it is still `expected`; `false` when another process changed
    /// it first.
    async fn reseal_signing_key(&self, kid: &str, expected: &[u8], sealed: &[u8]) -> Result<bool>;
}
