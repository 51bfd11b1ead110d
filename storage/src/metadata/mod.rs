//! The metadata store: every record of what the registry holds, apart from blob bytes.
//!
//! One small trait, [`MetadataStore`], with registry verbs, and two implementations run
//! against the same test suite (`storage/tests/storage/metadata.rs`): [`sqlite::SqliteStore`]
//! (an embedded file, one process) and [`postgres::PostgresStore`] (a server shared by
//! replicas). Every method is one transaction.
//!
//! Besides the registry's content, the store keeps what authentication and authorization
//! read: users, access keys (their secrets only as digests), policy documents attached to a
//! user, an access key, a repository or the whole registry, repository tags (the condition
//! keys of resource policies), and the token service's signing keys.
//!
//! And the webhooks' records ([`events`]): the outbox, to which each change a webhook reports
//! writes its [`Event`]s in the transaction that makes it (fanned out there to one delivery
//! per matching subscription), the subscriptions, the deliveries and their attempts.

pub mod events;
pub mod gc;
pub mod postgres;
pub mod postgres_tls;
pub mod postgres_url;
pub mod sqlite;

use std::collections::BTreeMap;

use async_trait::async_trait;
use berth_oci::{Digest, Reference, RepoName, Tag, UploadId};

use crate::crypt::{SealedBlob, UploadSealing};
use crate::error::Result;
pub use events::{
    Attempt, Claimed, Delivery, DeliveryCounts, DeliveryFilter, DeliveryPhase, DeliveryState, Event, EventKind, Origin,
    Outcome, PayloadFormat, Subscription, SubscriptionSource,
};
pub use gc::{Doomed, GcCounts, GcLease, GcPreview, GcRun, GcState, GcStore};

/// A stored manifest, byte-exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    pub content: Vec<u8>,
}

/// A reference from a manifest to content that must be in the same repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredContent {
    pub digest: Digest,
    pub size: u64,
}

/// Everything [`MetadataStore::put_manifest`] records, in one transaction.
#[derive(Debug, Clone)]
pub struct NewManifest {
    pub repo: RepoName,
    pub digest: Digest,
    pub media_type: String,
    /// Reported by the referrers API: `artifactType`, else the config's media type.
    pub artifact_type: Option<String>,
    pub content: Vec<u8>,
    pub subject: Option<Digest>,
    pub annotations: Option<BTreeMap<String, String>>,
    /// Blobs that must be linked to the repository, with their sizes.
    pub blobs: Vec<RequiredContent>,
    /// Manifests that must be in the repository, with their sizes.
    pub manifests: Vec<RequiredContent>,
    /// Tags to point at this manifest.
    pub tags: Vec<Tag>,
}

/// A manifest that names another as its `subject`, as the referrers API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// One page of a sorted listing: the entries after `last`, at most `limit` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub last: Option<String>,
    pub limit: usize,
}

/// Who opens an upload session, and how many open sessions a repository and a principal
/// may hold: a client that starts sessions and never finishes them holds rows (and staged
/// parts) until `uploads.max_age` removes them, so their number is bounded when one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadQuota {
    /// The signed-in principal's name; `""` for anonymous clients and authentication off.
    pub principal: String,
    pub per_repository: u64,
    pub per_principal: u64,
}

impl UploadQuota {
    /// Refuses a new session when `open_in_repo` or `open_by_principal` sessions are open.
    pub fn check(&self, open_in_repo: u64, open_by_principal: u64) -> Result<()> {
        if open_in_repo >= self.per_repository {
            return Err(crate::Error::Limit(format!(
                "the repository has {open_in_repo} upload sessions open, the most allowed \
                 (uploads.max_open_per_repository): finish or cancel some, or wait until idle ones expire"
            )));
        }
        if open_by_principal >= self.per_principal {
            return Err(crate::Error::Limit(format!(
                "you have {open_by_principal} upload sessions open, the most allowed \
                 (uploads.max_open_per_principal): finish or cancel some, or wait until idle ones expire"
            )));
        }
        Ok(())
    }
}

/// An upload session: where a chunked upload stands, so that any process can continue it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    pub id: UploadId,
    pub repo: RepoName,
    /// Bytes received so far; the next chunk must start here.
    pub offset: u64,
    /// The running digest state after `offset` bytes ([`berth_oci::DigestHasher::save_state`]).
    pub hash_state: Vec<u8>,
    /// Names of the staged parts, in order.
    pub parts: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last chunk; stale sessions are purged by this.
    pub updated_at: i64,
    /// For an encrypted upload: its data key, runs, and (sealed) hash state and tail; then
    /// `hash_state` is empty.
    pub sealing: Option<UploadSealing>,
}

/// A key-encryption key as the metadata store knows it: its id and state, never material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// `<name>.<version>`.
    pub id: String,
    pub name: String,
    pub state: KeyState,
    /// [`crate::crypt::Kek::check_value`] of the material first used under this id.
    pub check_value: String,
    pub created_at: i64,
    /// Blob copies whose data key it wraps (filled in by [`MetadataStore::keys`] on request).
    pub blobs: u64,
    /// Upload sessions whose data key it wraps (filled in by [`MetadataStore::keys`] on request).
    pub uploads: u64,
}

/// Where a key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Wraps the data keys of new blobs of its name (one per name).
    Active,
    /// Superseded; still unwraps what it wrapped until rotation re-wraps it all.
    Inactive,
    /// Wraps nothing any more; its material may be destroyed.
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Inactive => "inactive",
            KeyState::Retired => "retired",
        }
    }

    pub fn parse(s: &str) -> Result<KeyState> {
        match s {
            "active" => Ok(KeyState::Active),
            "inactive" => Ok(KeyState::Inactive),
            "retired" => Ok(KeyState::Retired),
            other => Err(crate::Error::Corrupt(format!("key state {other:?}"))),
        }
    }
}

/// What a repository holds of a blob: its size, and the encrypted copy for the repository's
/// key (none when the repository stores plaintext, or the blob predates its encryption).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    pub size: u64,
    pub key_name: Option<String>,
    pub copy: Option<SealedBlob>,
    /// A garbage-collector run marked the link for removal: before a client is told the blob
    /// is there, the mark must be cleared ([`GcStore::unmark_link`]).
    pub marked: bool,
}

/// Why a key cannot be retired.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetireRefused {
    #[error("no key {0} is recorded")]
    Unknown(String),
    #[error("key {0} is active: rotate to a new version first")]
    Active(String),
    #[error("key {id} still wraps the data keys of {blobs} blobs and {uploads} uploads: rotate first")]
    InUse { id: String, blobs: u64, uploads: u64 },
}

/// A change to manifests or tags, made by this process or another sharing the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Something in this repository's manifests or tags changed.
    Repository(RepoName),
    /// Anything may have changed (the feed was interrupted, or fell behind).
    Unknown,
}

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

/// An access key: its id is public, its secret is kept only as a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// What a policy is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyTarget {
    /// An identity policy of a user; applies to every request the user makes.
    User(String),
    /// An identity policy of one access key; applies to requests signed with it.
    AccessKey(String),
    /// A resource policy of a repository (which need not exist yet).
    Repository(RepoName),
    /// The resource policy of the whole registry.
    Registry,
}

impl PolicyTarget {
    /// The `target_kind` column: which namespace [`PolicyTarget::column`] is in.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            PolicyTarget::User(_) => "user",
            PolicyTarget::AccessKey(_) => "access_key",
            PolicyTarget::Repository(_) => "repository",
            PolicyTarget::Registry => "registry",
        }
    }

    /// The `target` column: the user's name, the key's id, the repository's name, or empty
    /// for the registry (part of the primary key, so never NULL).
    pub(crate) fn column(&self) -> &str {
        match self {
            PolicyTarget::User(name) | PolicyTarget::AccessKey(name) => name,
            PolicyTarget::Repository(repo) => repo.as_str(),
            PolicyTarget::Registry => "",
        }
    }

    /// The target read back from its two columns; anything else means the data is corrupt.
    pub(crate) fn from_columns(kind: &str, target: String) -> Result<PolicyTarget> {
        match kind {
            "user" => Ok(PolicyTarget::User(target)),
            "access_key" => Ok(PolicyTarget::AccessKey(target)),
            "repository" => target
                .parse()
                .map(PolicyTarget::Repository)
                .map_err(|e| crate::Error::Corrupt(format!("policy target repository {target:?}: {e}"))),
            "registry" => Ok(PolicyTarget::Registry),
            other => Err(crate::Error::Corrupt(format!("policy target kind {other:?}"))),
        }
    }

    /// The order [`PolicySet`] lists policies in: users before keys, the repository before
    /// the registry, each by name.
    fn rank(&self) -> u8 {
        match self {
            PolicyTarget::User(_) => 0,
            PolicyTarget::AccessKey(_) => 1,
            PolicyTarget::Repository(_) => 2,
            PolicyTarget::Registry => 3,
        }
    }
}

/// The name of a repository's or the registry's policy: each holds one, as in ECR
/// (`SetRepositoryPolicy`, `PutRegistryPolicy`), while users and keys may hold several.
pub const RESOURCE_POLICY: &str = "policy";

/// A stored policy document (validated by the caller before it is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRecord {
    /// What it is attached to: decides whether it is an identity or a resource policy.
    pub target: PolicyTarget,
    /// Unique per target; [`RESOURCE_POLICY`] for repositories and the registry.
    pub name: String,
    /// The policy JSON as the caller stored it, so it reads back as written.
    pub document: String,
    /// Unix seconds of the last put; shown in listings.
    pub updated_at: i64,
}

/// Everything the evaluation of one request needs, read in one go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySet {
    /// The user's and the access key's inline policies (the user's first, each by name).
    pub identity: Vec<PolicyRecord>,
    /// The repository's policy and the registry policy (in that order).
    pub resource: Vec<PolicyRecord>,
    /// The repository's tags (ecr:ResourceTag/<key> condition keys).
    pub resource_tags: BTreeMap<String, String>,
}

impl PolicySet {
    /// Files a policy read back from either store under identity or resource.
    pub(crate) fn add(&mut self, policy: PolicyRecord) {
        match policy.target {
            PolicyTarget::User(_) | PolicyTarget::AccessKey(_) => self.identity.push(policy),
            PolicyTarget::Repository(_) | PolicyTarget::Registry => self.resource.push(policy),
        }
    }

    /// Puts the policies in the documented order, whatever order the database returned.
    pub(crate) fn sort(&mut self) {
        for list in [&mut self.identity, &mut self.resource] {
            list.sort_by(|a, b| (a.target.rank(), &a.name).cmp(&(b.target.rank(), &b.name)));
        }
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

/// The registry's records. Implementations must make each method atomic.
#[async_trait]
pub trait MetadataStore: GcStore + Send + Sync + std::fmt::Debug {
    /// A feed of the changes other processes make, for caches to follow. `None` when no
    /// other process writes to this store (an embedded database).
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }

    /// Checks that the store answers.
    async fn ping(&self) -> Result<()>;

    /// The size of `digest` when it is linked to `repo`.
    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>>;
    /// The size of `digest` when any repository links it.
    async fn any_blob(&self, digest: &Digest) -> Result<Option<u64>>;
    /// Records that blob `digest` (stored, verified) is readable in `repo`; creates the
    /// repository on first use (with no key: see [`MetadataStore::create_repository`]).
    /// `plaintext`: the content was stored unencrypted at the blob's plain address.
    /// Events: `blob.push`, or `blob.mount` when `from` is the repository it was mounted
    /// from (after `repository.create` when the repository is new).
    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        plaintext: bool,
        from: Option<&RepoName>,
        origin: &Origin,
    ) -> Result<()>;
    /// The size of `digest` in `repo`, with the repository's key and its sealed copy.
    async fn repo_blob_entry(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobEntry>>;
    /// Every blob linked to `repo`, with its size.
    async fn repository_blobs(&self, repo: &RepoName) -> Result<Vec<(Digest, u64)>>;

    /// The key name of `repo`: `None` when the repository does not exist, `Some(None)` when
    /// it stores plaintext.
    async fn repository_key(&self, repo: &RepoName) -> Result<Option<Option<String>>>;
    /// Creates `repo` with key `key` (`None`: plaintext) unless it exists; returns the key
    /// it has (fixed at creation). Event: `repository.create` when it was created.
    async fn create_repository(&self, repo: &RepoName, key: Option<&str>, origin: &Origin) -> Result<Option<String>>;
    /// Deletes `repo` with its tags, manifests, blob links, upload sessions, repository
    /// tags and repository policies; refused while it holds manifests unless `force`.
    /// Events: `repository.delete`.
    async fn delete_repository(&self, repo: &RepoName, force: bool, origin: &Origin) -> Result<RepositoryDeleted>;
    /// Gives a plaintext repository a key (encrypting an existing registry); `false` when it
    /// has one already.
    async fn set_repository_key(&self, repo: &RepoName, key: &str) -> Result<bool>;
    /// Every repository with its key name.
    async fn repository_keys(&self) -> Result<Vec<(RepoName, Option<String>)>>;

    /// The copy of `digest` sealed for key `key_name`.
    async fn blob_copy(&self, digest: &Digest, key_name: &str) -> Result<Option<SealedBlob>>;
    /// Records a sealed copy of a verified blob (and the blob); `false` when a copy for that
    /// key already exists (the caller's object is then redundant).
    async fn add_blob_copy(&self, digest: &Digest, copy: &SealedBlob) -> Result<bool>;
    /// Up to `limit` copies whose data key `kek` wraps.
    async fn copies_wrapped_by(&self, kek: &str, limit: usize) -> Result<Vec<(Digest, SealedBlob)>>;
    /// Replaces a copy's wrapped key if `old_kek` still wraps it; `false` otherwise.
    async fn rewrap_copy(
        &self,
        digest: &Digest,
        key_name: &str,
        old_kek: &str,
        new_kek: &str,
        wrapped: &[u8],
    ) -> Result<bool>;
    /// Blobs whose plaintext object is no longer needed: every repository linking them has a
    /// key and a sealed copy for it.
    async fn redundant_plaintext(&self, limit: usize) -> Result<Vec<Digest>>;
    /// Records that the plaintext object of `digest` is gone, if it is still redundant.
    async fn drop_plaintext(&self, digest: &Digest) -> Result<bool>;

    /// Every key recorded; with `counts`, how many blobs and uploads each wraps (a scan of
    /// the copies: for listings, not request paths; without, both read 0).
    async fn keys(&self, counts: bool) -> Result<Vec<KeyRecord>>;
    /// Records a new key (state as given); `false` when the id exists.
    async fn add_key(&self, key: &KeyRecord) -> Result<bool>;
    /// Makes `id` the active key of its name; the previously active one becomes inactive.
    async fn activate_key(&self, id: &str) -> Result<()>;
    /// Marks `id` retired, if it is inactive and wraps nothing.
    async fn retire_key(&self, id: &str) -> Result<Result<(), RetireRefused>>;
    /// Removes the link; `false` when there was none.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;

    /// Stores a manifest, after checking in the same transaction that everything it
    /// references is in the repository; moves its tags. Pushing the same manifest again is
    /// not an error. Events: one `manifest.push` per tag in `manifest.tags` (one without a
    /// tag when there are none), after `repository.create` when the repository is new.
    async fn put_manifest(&self, manifest: &NewManifest, origin: &Origin) -> Result<()>;
    async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>>;
    /// Deletes a manifest and every tag pointing at it; `false` when it was not there.
    /// Events: a `tag.delete` per tag that went with it, then `manifest.delete`.
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest, origin: &Origin) -> Result<bool>;
    /// Removes one tag, leaving the manifest; `false` when the tag was not there.
    /// Event: `tag.delete` (with the digest it pointed at).
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag, origin: &Origin) -> Result<bool>;
    /// Tags of `repo` in byte order; `None` when the repository does not exist.
    async fn list_tags(&self, repo: &RepoName, page: &Page) -> Result<Option<Vec<String>>>;
    /// Repository names in byte order.
    async fn list_repositories(&self, page: &Page) -> Result<Vec<String>>;
    /// Manifests of `repo` whose subject is `subject`, optionally of one artifact type, in
    /// the order they were pushed: one page, the referrers after the one whose digest is
    /// `page.last` (none when that one is gone), at most `page.limit`.
    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        page: &Page,
    ) -> Result<Vec<Referrer>>;

    /// Opens a session for `quota.principal`, unless `upload.repo` or the principal already
    /// holds as many open sessions as `quota` allows ([`Error::Limit`]). Concurrent starts
    /// on PostgreSQL may pass the bound by as many as race.
    async fn create_upload(&self, upload: &UploadRecord, quota: &UploadQuota) -> Result<()>;
    async fn get_upload(&self, id: &UploadId) -> Result<Option<UploadRecord>>;
    /// Replaces the session's progress if it still stands at `expected_offset` with
    /// `expected_parts` parts; `false` when another writer got there first.
    async fn advance_upload(&self, upload: &UploadRecord, expected_offset: u64, expected_parts: usize) -> Result<bool>;
    /// Ends a session; `false` when it was not there.
    async fn delete_upload(&self, id: &UploadId) -> Result<bool>;
    /// Sessions with no activity since `updated_before` (unix seconds).
    async fn stale_uploads(&self, updated_before: i64) -> Result<Vec<UploadRecord>>;

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
    /// Stores (insert or replace) a policy; for a User/AccessKey target, false when the
    /// user/key does not exist, so no policy outlives its owner. Repository targets need not
    /// exist yet (a policy may be set before the first push). Repositories and the registry
    /// hold one policy each, by convention named [`RESOURCE_POLICY`]; the store does not
    /// enforce it, and [`MetadataStore::policies_for_request`] returns whatever is attached.
    async fn put_policy(&self, target: &PolicyTarget, name: &str, document: &str) -> Result<bool>;
    /// Removes one policy; false when there was none.
    async fn delete_policy(&self, target: &PolicyTarget, name: &str) -> Result<bool>;
    /// Policies attached to one target, by name.
    async fn policies(&self, target: &PolicyTarget) -> Result<Vec<PolicyRecord>>;
    /// One read for a request: inline policies of `user` and `access_key` (either may be
    /// None: anonymous, or a password login), the policy of `repo` (when Some) and the
    /// registry policy, and `repo`'s tags. Cheap: it runs on every request that carries
    /// credentials, so it is one statement (one round trip, one snapshot) in both stores.
    async fn policies_for_request(
        &self,
        user: Option<&str>,
        access_key: Option<&str>,
        repo: Option<&RepoName>,
    ) -> Result<PolicySet>;
    /// Repository tags (ECR's TagResource), by key. Kept by name, not by repository row, so
    /// a repository may be tagged before its first push.
    async fn repository_tags(&self, repo: &RepoName) -> Result<BTreeMap<String, String>>;
    /// Sets `set` and then removes `remove` in one transaction (a key in both ends removed),
    /// so a policy condition never sees half an edit.
    async fn tag_repository(&self, repo: &RepoName, set: &BTreeMap<String, String>, remove: &[String]) -> Result<()>;
    /// Records `candidate` as the token signing key unless one is recorded already, and
    /// returns every recorded key, oldest first: replicas starting at once agree on one key.
    async fn ensure_signing_key(&self, candidate: &SigningKeyRecord) -> Result<Vec<SigningKeyRecord>>;
    /// Replaces the stored form of signing key `kid` (sealed under another KEK, or sealed
    /// for the first time) if it is still `expected`; `false` when another process changed
    /// it first.
    async fn reseal_signing_key(&self, kid: &str, expected: &[u8], sealed: &[u8]) -> Result<bool>;

    // Webhooks: subscriptions, the outbox and deliveries (see [`events`]).

    /// Creates or replaces the subscription named `s.name` (keeping its `created_at` and
    /// deliveries); `true` when created.
    async fn put_subscription(&self, s: &Subscription) -> Result<bool>;
    /// Deletes a subscription with its deliveries and their attempts; `false` when absent.
    async fn delete_subscription(&self, name: &str) -> Result<bool>;
    /// Every subscription, by name.
    async fn subscriptions(&self) -> Result<Vec<Subscription>>;
    /// Makes the `config`-sourced subscriptions exactly `subs` (each with source `Config`):
    /// upserts them, deletes the other `config` ones. `api` subscriptions are untouched; a
    /// name already used by an `api` subscription is an error (`Error::Conflict`).
    async fn sync_config_subscriptions(&self, subs: &[Subscription]) -> Result<()>;
    /// Outbox events with `seq > after_seq`, oldest first, at most `limit`. A feed: no event
    /// with a lower `seq` than one returned ever commits later.
    async fn events(&self, after_seq: i64, limit: usize) -> Result<Vec<Event>>;
    /// Claims up to `limit` deliveries for `owner` until `now_ms + lease_ms`: each pending,
    /// due (`next_attempt_ms <= now_ms`), not leased (or its lease expired; a live lease of
    /// `owner` itself means in flight too), of an enabled subscription, and the oldest pending
    /// delivery (by event `seq`) of its subscription and repository, so that each
    /// (subscription, repository) line is delivered in order and by one owner at a time (an
    /// unfinished head holds up its line). Oldest first.
    async fn claim_deliveries(&self, owner: &str, now_ms: i64, lease_ms: i64, limit: usize) -> Result<Vec<Claimed>>;
    /// Records one attempt of a delivery `owner` holds: appends it to the delivery log
    /// (numbered after the log's last entry, which a replay keeps), counts it, applies the
    /// outcome, releases the lease. `false` (and nothing written) when `owner` no longer
    /// holds it.
    async fn finish_delivery(&self, id: i64, owner: &str, outcome: &Outcome, now_ms: i64) -> Result<bool> {
        let held = self.finish_deliveries(owner, &[(id, outcome.clone())], now_ms).await?;
        Ok(held.first().copied().unwrap_or(false))
    }
    /// `finish_delivery` for each of `finished` (delivery id, outcome), in one transaction:
    /// the attempts that ended together cost one commit. `held[i]` is `finish_delivery`'s
    /// answer for `finished[i]`.
    async fn finish_deliveries(&self, owner: &str, finished: &[(i64, Outcome)], now_ms: i64) -> Result<Vec<bool>>;
    /// Deliveries matching `filter`, newest first.
    async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>>;
    /// The attempts of one delivery, oldest first.
    async fn delivery_attempts(&self, id: i64) -> Result<Vec<Attempt>>;
    /// Sends the matching deliveries again: pending, attempts reset to 0, due at `now_ms`,
    /// lease cleared. A delivery in flight (pending under a live lease) is left alone, so a
    /// replay never sends one twice at once. Returns how many.
    async fn replay_deliveries(&self, filter: &DeliveryFilter, now_ms: i64) -> Result<u64>;
    /// Deletes the matching deliveries (with their attempts). Returns how many.
    async fn purge_deliveries(&self, filter: &DeliveryFilter) -> Result<u64>;
    /// Deliveries per state, per subscription (every subscription listed, zeros included).
    async fn delivery_counts(&self) -> Result<Vec<DeliveryCounts>>;
    /// Housekeeping: deletes delivered deliveries last updated before `delivered_before_ms`,
    /// dead ones before `dead_before_ms`, then events older than `delivered_before_ms`
    /// that no delivery needs. Returns the deliveries and events deleted.
    async fn prune_events(&self, delivered_before_ms: i64, dead_before_ms: i64) -> Result<(u64, u64)>;
}

/// What [`MetadataStore::delete_repository`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepositoryDeleted {
    Deleted,
    NotFound,
    /// Holds this many manifests and `force` was not given.
    NotEmpty {
        manifests: u64,
    },
}

/// A digest read back from the database; a bad one means the stored data is corrupt.
pub(crate) fn parse_digest(s: String) -> Result<Digest> {
    s.parse().map_err(|e| crate::error::Error::Corrupt(format!("stored digest {s:?}: {e}")))
}

/// A size column (SQL integers are signed) as bytes.
pub(crate) fn size_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or_default()
}

/// Bytes as a size column.
pub(crate) fn db_size(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The rule both stores apply to a manifest's reference: present in the repository, with
/// the size the descriptor declares.
pub(crate) fn check_reference(required: &RequiredContent, size: Option<u64>) -> Result<()> {
    use crate::error::Error;
    match size {
        None => Err(Error::MissingReference(required.digest.clone())),
        Some(actual) if actual != required.size => {
            Err(Error::ReferenceSize { digest: required.digest.clone(), declared: required.size, actual })
        }
        Some(_) => Ok(()),
    }
}

/// Seconds since the Unix epoch, as stored in records.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

// What both stores share of webhook records: the JSON they keep, the events each change
// reports, and how an attempt's outcome lands in a delivery's columns.

/// An event as its `payload` column (`seq` is the column's; the JSON carries 0).
pub(crate) fn event_payload(event: &Event) -> Result<String> {
    serde_json::to_string(&Event { seq: 0, ..event.clone() })
        .map_err(|e| crate::Error::Corrupt(format!("event {}: {e}", event.id)))
}

/// An event read back from its `seq` and `payload` columns.
pub(crate) fn event_from_payload(seq: i64, payload: &str) -> Result<Event> {
    let mut event: Event =
        serde_json::from_str(payload).map_err(|e| crate::Error::Corrupt(format!("event {seq}: {e}")))?;
    event.seq = seq;
    Ok(event)
}

/// A subscription's `definition` column: everything but what has a column of its own.
pub(crate) fn subscription_definition(s: &Subscription) -> Result<String> {
    serde_json::to_string(s).map_err(|e| crate::Error::Corrupt(format!("subscription {}: {e}", s.name)))
}

/// A subscription read back from its columns (which win over the JSON).
pub(crate) fn subscription_from_columns(
    name: String,
    definition: &str,
    enabled: bool,
    source: &str,
    created_at: i64,
) -> Result<Subscription> {
    let mut s: Subscription =
        serde_json::from_str(definition).map_err(|e| crate::Error::Corrupt(format!("subscription {name}: {e}")))?;
    s.source = source_from_column(source)?;
    s.name = name;
    s.enabled = enabled;
    s.created_at = created_at;
    Ok(s)
}

/// The `source` column.
pub(crate) fn source_column(source: SubscriptionSource) -> &'static str {
    match source {
        SubscriptionSource::Api => "api",
        SubscriptionSource::Config => "config",
    }
}

fn source_from_column(s: &str) -> Result<SubscriptionSource> {
    match s {
        "api" => Ok(SubscriptionSource::Api),
        "config" => Ok(SubscriptionSource::Config),
        other => Err(crate::Error::Corrupt(format!("subscription source {other:?}"))),
    }
}

/// A delivery's `state` column read back.
pub(crate) fn delivery_state(s: &str) -> Result<DeliveryState> {
    s.parse().map_err(crate::Error::Corrupt)
}

/// A delivery's columns as read (both stores select them in this order, then the event's
/// `seq` and `payload`): id, subscription, state, attempts, next_attempt_ms, last_status,
/// last_error, created_ms, updated_ms.
pub(crate) struct DeliveryColumns {
    pub id: i64,
    pub subscription: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub event_seq: i64,
    pub payload: String,
}

/// `d` is deliveries, `e` events: the columns of [`DeliveryColumns`], in order.
pub(crate) const DELIVERY_COLUMNS: &str = "d.id, d.subscription, d.state, d.attempts, d.next_attempt_ms, \
    d.last_status, d.last_error, d.created_ms, d.updated_ms, e.seq, e.payload";

impl DeliveryColumns {
    pub(crate) fn into_delivery(self) -> Result<Delivery> {
        Ok(Delivery {
            id: self.id,
            subscription: self.subscription,
            event: event_from_payload(self.event_seq, &self.payload)?,
            state: delivery_state(&self.state)?,
            attempts: u32::try_from(self.attempts).unwrap_or_default(),
            next_attempt_ms: self.next_attempt_ms,
            last_status: self.last_status.and_then(|s| u16::try_from(s).ok()),
            last_error: self.last_error,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
        })
    }
}

/// An attempt's outcome as the columns it writes: the delivery's new state, its next
/// attempt (when retried), and the attempt's status, error and duration.
pub(crate) struct OutcomeColumns<'a> {
    pub state: DeliveryState,
    pub next_attempt_ms: Option<i64>,
    pub status: Option<i32>,
    pub error: Option<&'a str>,
    pub duration_ms: i64,
}

impl<'a> OutcomeColumns<'a> {
    pub(crate) fn of(outcome: &'a Outcome) -> OutcomeColumns<'a> {
        let duration = |d: &u64| i64::try_from(*d).unwrap_or(i64::MAX);
        match outcome {
            Outcome::Delivered { status, duration_ms } => OutcomeColumns {
                state: DeliveryState::Delivered,
                next_attempt_ms: None,
                status: Some(i32::from(*status)),
                error: None,
                duration_ms: duration(duration_ms),
            },
            Outcome::Retry { status, error, duration_ms, next_attempt_ms } => OutcomeColumns {
                state: DeliveryState::Pending,
                next_attempt_ms: Some(*next_attempt_ms),
                status: status.map(i32::from),
                error: Some(error),
                duration_ms: duration(duration_ms),
            },
            Outcome::Dead { status, error, duration_ms } => OutcomeColumns {
                state: DeliveryState::Dead,
                next_attempt_ms: None,
                status: status.map(i32::from),
                error: Some(error),
                duration_ms: duration(duration_ms),
            },
        }
    }
}

/// An attempt read back: delivery, number, at_ms, status, error, duration_ms.
pub(crate) fn attempt_from_columns(
    delivery: i64,
    number: i64,
    at_ms: i64,
    status: Option<i64>,
    error: Option<String>,
    duration_ms: i64,
) -> Attempt {
    Attempt {
        delivery,
        number: u32::try_from(number).unwrap_or_default(),
        at_ms,
        status: status.and_then(|s| u16::try_from(s).ok()),
        error,
        duration_ms: u64::try_from(duration_ms).unwrap_or_default(),
    }
}

/// The event of a new repository.
pub(crate) fn repository_created(repo: &RepoName, origin: &Origin) -> Event {
    Event::new(EventKind::RepositoryCreate, repo.as_str(), origin)
}

/// The event of a blob linked to `repo`: pushed, or mounted `from` another repository.
pub(crate) fn blob_linked(
    repo: &RepoName,
    digest: &Digest,
    size: u64,
    from: Option<&RepoName>,
    origin: &Origin,
) -> Event {
    let kind = if from.is_some() { EventKind::BlobMount } else { EventKind::BlobPush };
    let mut event = Event::new(kind, repo.as_str(), origin);
    event.digest = Some(digest.to_string());
    event.size = Some(size);
    event.from_repository = from.map(|r| r.as_str().to_owned());
    event
}

/// The events of a stored manifest: one per tag it moved (each tag once, in the order
/// given), or one without a tag.
pub(crate) fn manifest_pushed(m: &NewManifest, origin: &Origin) -> Vec<Event> {
    let event = |tag: Option<&Tag>| {
        let mut event = Event::new(EventKind::ManifestPush, m.repo.as_str(), origin);
        event.digest = Some(m.digest.to_string());
        event.media_type = Some(m.media_type.clone());
        event.artifact_type = m.artifact_type.clone();
        event.size = Some(m.content.len() as u64);
        event.tag = tag.map(|t| t.as_str().to_owned());
        event
    };
    if m.tags.is_empty() {
        return vec![event(None)];
    }
    let mut seen = std::collections::BTreeSet::new();
    m.tags.iter().filter(|t| seen.insert(t.as_str())).map(|t| event(Some(t))).collect()
}

/// The event of a deleted tag, with the manifest it pointed at.
pub(crate) fn tag_deleted(repo: &str, tag: &str, digest: &str, media_type: Option<String>, origin: &Origin) -> Event {
    let mut event = Event::new(EventKind::TagDelete, repo, origin);
    event.tag = Some(tag.to_owned());
    event.digest = Some(digest.to_owned());
    event.media_type = media_type;
    event
}

/// The events of a deleted manifest: its tags' (sorted as given), then its own.
pub(crate) fn manifest_deleted(
    repo: &RepoName,
    digest: &Digest,
    media_type: &str,
    size: u64,
    tags: &[String],
    origin: &Origin,
) -> Vec<Event> {
    let digest = digest.to_string();
    let mut events: Vec<Event> =
        tags.iter().map(|t| tag_deleted(repo.as_str(), t, &digest, Some(media_type.to_owned()), origin)).collect();
    let mut event = Event::new(EventKind::ManifestDelete, repo.as_str(), origin);
    event.digest = Some(digest);
    event.media_type = Some(media_type.to_owned());
    event.size = Some(size);
    events.push(event);
    events
}
