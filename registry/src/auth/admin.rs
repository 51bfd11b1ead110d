//! Administration of identities and policies: users, access keys, policies attached to
//! them, repository and registry policies, repository tags. The one place these are
//! validated, used by both the admin HTTP API (`http::admin`) and the `berth admin`
//! commands.

use std::collections::BTreeMap;

use berth_auth::credentials;
use berth_auth::policy::{PolicyDocument, PolicyKind};
use berth_oci::RepoName;
use berth_storage::MetadataStore;
use berth_storage::metadata::{AccessKeyRecord, PolicyTarget, RESOURCE_POLICY, UserRecord, unix_now};
use serde::Serialize;

use super::{SecretSealing, key_secrets};
use crate::error::{ApiError, ApiResult};

/// A user as shown to administrators: never the password hash.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UserView {
    /// The stable id (`AIDA…`): a user created again under the same name has another.
    pub id: String,
    pub name: String,
    pub arn: String,
    pub password: bool,
    pub disabled: bool,
    pub created_at: i64,
}

/// An access key as shown to administrators: the secret only once, at creation.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AccessKeyView {
    pub id: String,
    pub user: String,
    pub disabled: bool,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A stored policy document.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PolicyView {
    pub name: String,
    pub document: serde_json::Value,
    pub updated_at: i64,
}

/// The administration verbs over a metadata store.
pub struct Admin<'a> {
    pub meta: &'a dyn MetadataStore,
    pub arns: &'a berth_auth::policy::Arns,
}

fn user_view(u: UserRecord, arns: &berth_auth::policy::Arns) -> UserView {
    UserView {
        id: u.id,
        arn: arns.user(&u.name),
        name: u.name,
        password: u.password_hash.is_some(),
        disabled: u.disabled,
        created_at: u.created_at,
    }
}

fn key_view(k: AccessKeyRecord) -> AccessKeyView {
    AccessKeyView { id: k.id, user: k.user, disabled: k.disabled, created_at: k.created_at, secret: None }
}

impl Admin<'_> {
    pub async fn create_user(&self, name: &str, password: Option<&str>) -> ApiResult<UserView> {
        credentials::check_user_name(name).map_err(|e| ApiError::Invalid(e.to_string()))?;
        let password_hash = match password {
            Some(p) => {
                credentials::check_password(p).map_err(|e| ApiError::Invalid(e.to_string()))?;
                Some(hash(p).await?)
            }
            None => None,
        };
        let user = UserRecord {
            id: credentials::generate_user_id(),
            name: name.to_owned(),
            password_hash,
            disabled: false,
            created_at: unix_now(),
            generation: 0,
        };
        if !self.meta.create_user(&user).await? {
            return Err(ApiError::Conflict(format!("user {name} exists")));
        }
        tracing::info!(auth.user = name, "user created");
        Ok(user_view(user, self.arns))
    }

    pub async fn users(&self) -> ApiResult<Vec<UserView>> {
        Ok(self.meta.users().await?.into_iter().map(|u| user_view(u, self.arns)).collect())
    }

    pub async fn user(&self, name: &str) -> ApiResult<UserView> {
        let u = self.meta.user(name).await?.ok_or_else(|| no_user(name))?;
        Ok(user_view(u, self.arns))
    }

    /// Enables or disables a user; a disabled user cannot sign in, and neither can its keys.
    /// Disabling revokes its refresh and login tokens (for good: enabling it again does not
    /// bring them back); registry tokens already issued live out `auth.token.ttl`.
    pub async fn set_disabled(&self, name: &str, disabled: bool) -> ApiResult<UserView> {
        if !self.meta.set_user_disabled(name, disabled).await? {
            return Err(no_user(name));
        }
        tracing::info!(auth.user = name, disabled, "user updated");
        self.user(name).await
    }

    /// Sets (or with `None` removes) a user's password, revoking the user's refresh and
    /// login tokens (the store moves its credential generation on).
    pub async fn set_password(&self, name: &str, password: Option<&str>) -> ApiResult<UserView> {
        let hash = match password {
            Some(p) => {
                credentials::check_password(p).map_err(|e| ApiError::Invalid(e.to_string()))?;
                Some(hash(p).await?)
            }
            None => None,
        };
        if !self.meta.set_user_password(name, hash.as_deref()).await? {
            return Err(no_user(name));
        }
        tracing::info!(auth.user = name, "password changed");
        self.user(name).await
    }

    pub async fn delete_user(&self, name: &str) -> ApiResult<()> {
        if !self.meta.delete_user(name).await? {
            return Err(no_user(name));
        }
        tracing::info!(auth.user = name, "user deleted");
        Ok(())
    }

    /// A new access key for `user`; its secret is in the answer, and stored only as its
    /// digest (for Basic sign-ins) and sealed under `sealing` (for Signature Version 4;
    /// without a KEK, not at all: `auth::key_secrets`).
    pub async fn create_access_key(&self, user: &str, sealing: &SecretSealing) -> ApiResult<AccessKeyView> {
        let new = credentials::generate_access_key();
        let record = AccessKeyRecord {
            id: new.id.clone(),
            user: user.to_owned(),
            secret_digest: credentials::secret_digest(&new.secret),
            disabled: false,
            created_at: unix_now(),
            secret_sealed: key_secrets::seal(sealing, &new.id, &new.secret).map_err(ApiError::Internal)?,
        };
        if !self.meta.create_access_key(&record).await? {
            return Err(no_user(user));
        }
        tracing::info!(auth.user = user, auth.access_key = %new.id, "access key created");
        let mut view = key_view(record);
        view.secret = Some(new.secret);
        Ok(view)
    }

    pub async fn access_keys(&self, user: Option<&str>) -> ApiResult<Vec<AccessKeyView>> {
        if let Some(u) = user
            && self.meta.user(u).await?.is_none()
        {
            return Err(no_user(u));
        }
        Ok(self.meta.access_keys(user).await?.into_iter().map(key_view).collect())
    }

    pub async fn access_key(&self, id: &str) -> ApiResult<AccessKeyView> {
        Ok(key_view(self.meta.access_key(id).await?.ok_or_else(|| no_key(id))?))
    }

    pub async fn set_access_key_disabled(&self, id: &str, disabled: bool) -> ApiResult<AccessKeyView> {
        if !self.meta.set_access_key_disabled(id, disabled).await? {
            return Err(no_key(id));
        }
        tracing::info!(auth.access_key = id, disabled, "access key updated");
        self.access_key(id).await
    }

    pub async fn delete_access_key(&self, id: &str) -> ApiResult<()> {
        if !self.meta.delete_access_key(id).await? {
            return Err(no_key(id));
        }
        tracing::info!(auth.access_key = id, "access key deleted");
        Ok(())
    }

    /// Validates and stores a policy document. Identity policies (users, keys) are named;
    /// a repository or the registry has one policy.
    pub async fn put_policy(&self, target: &PolicyTarget, name: Option<&str>, document: &str) -> ApiResult<PolicyView> {
        let name = policy_name(target, name)?;
        PolicyDocument::parse(document, kind_of(target))
            .map_err(|e| ApiError::Invalid(format!("policy document: {e}")))?;
        if !self.meta.put_policy(target, &name, document).await? {
            return Err(no_target(target));
        }
        tracing::info!(policy.target = %describe(target), policy.name = %name, "policy stored");
        self.policy(target, Some(&name)).await
    }

    pub async fn policy(&self, target: &PolicyTarget, name: Option<&str>) -> ApiResult<PolicyView> {
        let name = policy_name(target, name)?;
        let found = self.meta.policies(target).await?.into_iter().find(|p| p.name == name);
        let p = found.ok_or_else(|| no_policy(target, &name))?;
        Ok(PolicyView { document: document_value(&p.document), name: p.name, updated_at: p.updated_at })
    }

    /// The text of a repository's or the registry's one policy exactly as stored (ECR's
    /// `policyText`); `None` when it has none.
    pub async fn policy_text(&self, target: &PolicyTarget) -> ApiResult<Option<String>> {
        let name = policy_name(target, None)?;
        Ok(self.meta.policies(target).await?.into_iter().find(|p| p.name == name).map(|p| p.document))
    }

    pub async fn policies(&self, target: &PolicyTarget) -> ApiResult<Vec<PolicyView>> {
        Ok(self
            .meta
            .policies(target)
            .await?
            .into_iter()
            .map(|p| PolicyView { document: document_value(&p.document), name: p.name, updated_at: p.updated_at })
            .collect())
    }

    pub async fn delete_policy(&self, target: &PolicyTarget, name: Option<&str>) -> ApiResult<()> {
        let name = policy_name(target, name)?;
        if !self.meta.delete_policy(target, &name).await? {
            return Err(no_policy(target, &name));
        }
        tracing::info!(policy.target = %describe(target), policy.name = %name, "policy deleted");
        Ok(())
    }

    pub async fn repository_tags(&self, repo: &RepoName) -> ApiResult<BTreeMap<String, String>> {
        Ok(self.meta.repository_tags(repo).await?)
    }

    /// Sets and removes repository tags (the `ecr:ResourceTag/<key>` condition keys), with
    /// ECR's limits: keys 1–128 characters, values up to 256.
    pub async fn tag_repository(
        &self,
        repo: &RepoName,
        set: &BTreeMap<String, String>,
        remove: &[String],
    ) -> ApiResult<BTreeMap<String, String>> {
        for (k, v) in set {
            if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 || k.starts_with("aws:") {
                return Err(ApiError::Invalid(format!(
                    "tag {k:?}: keys are 1-128 characters (not starting with aws:), values up to 256"
                )));
            }
        }
        self.meta.tag_repository(repo, set, remove).await?;
        self.repository_tags(repo).await
    }
}

async fn hash(password: &str) -> ApiResult<String> {
    let p = password.to_owned();
    tokio::task::spawn_blocking(move || credentials::hash_password(&p))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Which rules a document attached to `target` follows.
pub(crate) fn kind_of(target: &PolicyTarget) -> PolicyKind {
    match target {
        PolicyTarget::User(_) | PolicyTarget::AccessKey(_) => PolicyKind::Identity,
        PolicyTarget::Repository(_) => PolicyKind::Repository,
        PolicyTarget::Registry => PolicyKind::Registry,
    }
}

/// Identity policies need a name (IAM's rule: 1–128 of `[\w+=,.@-]`); resource policies
/// have the one name.
fn policy_name(target: &PolicyTarget, name: Option<&str>) -> ApiResult<String> {
    match (target, name) {
        (PolicyTarget::Repository(_) | PolicyTarget::Registry, None) => Ok(RESOURCE_POLICY.to_owned()),
        (PolicyTarget::Repository(_) | PolicyTarget::Registry, Some(n)) if n == RESOURCE_POLICY => Ok(n.to_owned()),
        (PolicyTarget::Repository(_) | PolicyTarget::Registry, Some(_)) => {
            Err(ApiError::Invalid("a repository or the registry has one policy, without a name".into()))
        }
        (_, None) => Err(ApiError::Invalid("a user's or access key's policy needs a name".into())),
        (_, Some(n)) => {
            let ok = !n.is_empty()
                && n.len() <= 128
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
            if ok {
                Ok(n.to_owned())
            } else {
                Err(ApiError::Invalid(format!("policy name {n:?}: 1-128 of letters, digits and _+=,.@-")))
            }
        }
    }
}

fn document_value(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

pub fn describe(target: &PolicyTarget) -> String {
    match target {
        PolicyTarget::User(u) => format!("user {u}"),
        PolicyTarget::AccessKey(k) => format!("access key {k}"),
        PolicyTarget::Repository(r) => format!("repository {r}"),
        PolicyTarget::Registry => "the registry".into(),
    }
}

fn no_user(name: &str) -> ApiError {
    ApiError::NotFound(format!("no user {name}"))
}

fn no_key(id: &str) -> ApiError {
    ApiError::NotFound(format!("no access key {id}"))
}

/// "user U has no policy P"; a repository's or the registry's one policy has no name to say.
fn no_policy(target: &PolicyTarget, name: &str) -> ApiError {
    ApiError::NotFound(match target {
        PolicyTarget::User(_) | PolicyTarget::AccessKey(_) => format!("{} has no policy {name}", describe(target)),
        PolicyTarget::Repository(_) | PolicyTarget::Registry => format!("{} has no policy", describe(target)),
    })
}

fn no_target(target: &PolicyTarget) -> ApiError {
    ApiError::NotFound(format!("no {}", describe(target)))
}
