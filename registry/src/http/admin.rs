//! The admin HTTP API under `/api/v1/`: users, access keys, their policies, repository and
//! registry policies, repository tags. JSON in and out; Basic credentials; each endpoint is
//! the IAM or ECR action it is named after, decided by the same policies as the registry
//! (the bootstrap administrator holds `"Action": "*"`).
//!
//! | endpoint | action |
//! |---|---|
//! | `GET /api/v1/users`, `POST /api/v1/users` | `iam:ListUsers`, `iam:CreateUser` |
//! | `GET`, `PATCH`, `DELETE /api/v1/users/<user>` | `iam:GetUser`, `iam:UpdateUser`, `iam:DeleteUser` |
//! | `GET`, `POST /api/v1/users/<user>/access-keys` | `iam:ListAccessKeys`, `iam:CreateAccessKey` |
//! | `GET`, `PATCH`, `DELETE /api/v1/access-keys/<id>` | `iam:ListAccessKeys`, `iam:UpdateAccessKey`, `iam:DeleteAccessKey` |
//! | `GET /api/v1/{users/<user>,access-keys/<id>}/policies` | `iam:ListUserPolicies` |
//! | `GET`, `PUT`, `DELETE …/policies/<name>` | `iam:GetUserPolicy`, `iam:PutUserPolicy`, `iam:DeleteUserPolicy` |
//! | `GET`, `PUT`, `DELETE /api/v1/repositories/<name>/policy` | `ecr:GetRepositoryPolicy`, `ecr:SetRepositoryPolicy`, `ecr:DeleteRepositoryPolicy` |
//! | `GET`, `PATCH /api/v1/repositories/<name>/tags` | `ecr:ListTagsForResource`, `ecr:TagResource` (+ `ecr:UntagResource`) |
//! | `GET`, `PUT`, `DELETE /api/v1/registry/policy` | `ecr:GetRegistryPolicy`, `ecr:PutRegistryPolicy`, `ecr:DeleteRegistryPolicy` |
//! | `DELETE /api/v1/repositories?name=<name>[&force=true]` | `ecr:DeleteRepository` |
//! | `GET /api/v1/repositories/<name>/settings`, `PUT …/tag-mutability` | `ecr:DescribeRepositories`, `ecr:PutImageTagMutability` (`http::repository_settings`) |
//! | `POST /api/v1/repositories` | `ecr:CreateRepository` (`http::templates`) |
//! | `POST /api/v1/gc`, `GET /api/v1/gc` | `berth:RunGarbageCollection`, `berth:GetGarbageCollection` |
//! | lifecycle policies, previews and runs (`http::lifecycle`) | `ecr:PutLifecyclePolicy`, … |
//! | pull-through cache rules (`http::pull_through`) | `ecr:CreatePullThroughCacheRule`, … |
//! | `GET`, `PUT /api/v1/replication`, `GET …/replication/status` (`http::replication`) | `ecr:DescribeRegistry`, `ecr:PutReplicationConfiguration`, `ecr:DescribeImageReplicationStatus` |
//!
//! Webhooks, deliveries and task definitions (`http::webhooks`), usage and quotas
//! (`http::usage`), image details (`http::images`) and repository creation templates
//! (`http::templates`) are served here too, and also with
//! authentication off (then to anyone, like everything else).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use berth_oci::RepoName;
use berth_storage::metadata::PolicyTarget;
use hyper::{Method, StatusCode};
use serde::Deserialize;

use super::auth::{Credentials, credentials, origin, sign_in};
use crate::auth::admin::Admin;
use crate::auth::{Authority, Caller, Permit};
use crate::error::{ApiError, ApiResult};
use crate::service::Registry;

/// The largest request body (a policy document is at most 20 KiB).
const BODY_LIMIT: usize = 64 * 1024;

/// What an admin request addresses, parsed from the path after `/api/v1/`.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Users,
    User(String),
    UserKeys(String),
    Key(String),
    Policies(PolicyTarget),
    Policy(PolicyTarget, Option<String>),
    Tags(RepoName),
    /// `DELETE /api/v1/repositories?name=…`.
    Repositories,
    /// `POST /api/v1/gc` (run now), `GET /api/v1/gc` (recent runs, the lease).
    Gc,
    Events(super::webhooks::Target),
    Usage(super::usage::Target),
    RepositorySettings(super::repository_settings::Target),
    /// `GET /api/v1/repositories/<name>/images` (`http::images`).
    Images(RepoName),
    Lifecycle(super::lifecycle::Target),
    Templates(super::templates::Target),
    PullThrough(super::pull_through::Target),
    Replication(super::replication::Target),
}

impl Target {
    /// Identities and policies exist only with authentication on.
    fn needs_auth(&self) -> bool {
        !matches!(
            self,
            Target::Repositories
                | Target::Gc
                | Target::Events(_)
                | Target::Usage(_)
                | Target::Images(_)
                | Target::Lifecycle(_)
                | Target::RepositorySettings(_)
                | Target::Templates(_)
                | Target::PullThrough(_)
                | Target::Replication(_)
        )
    }
}

fn parse(path: &str) -> ApiResult<Target> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let unknown = || ApiError::NotFound(format!("no admin endpoint /api/v1/{path}"));
    let repo = |parts: &[&str]| -> ApiResult<RepoName> {
        parts.join("/").parse().map_err(|e: berth_oci::name::NameError| ApiError::NameInvalid(e.to_string()))
    };
    Ok(match segs.as_slice() {
        ["users"] => Target::Users,
        ["users", u] => Target::User((*u).to_owned()),
        ["users", u, "access-keys"] => Target::UserKeys((*u).to_owned()),
        ["users", u, "policies"] => Target::Policies(PolicyTarget::User((*u).to_owned())),
        ["users", u, "policies", p] => Target::Policy(PolicyTarget::User((*u).to_owned()), Some((*p).to_owned())),
        ["access-keys", k] => Target::Key((*k).to_owned()),
        ["access-keys", k, "policies"] => Target::Policies(PolicyTarget::AccessKey((*k).to_owned())),
        ["access-keys", k, "policies", p] => {
            Target::Policy(PolicyTarget::AccessKey((*k).to_owned()), Some((*p).to_owned()))
        }
        ["registry", "policy"] => Target::Policy(PolicyTarget::Registry, None),
        ["repositories", name @ .., "policy"] if !name.is_empty() => {
            Target::Policy(PolicyTarget::Repository(repo(name)?), None)
        }
        ["repositories", name @ .., "tags"] if !name.is_empty() => Target::Tags(repo(name)?),
        ["repositories", name @ .., "images"] if !name.is_empty() => Target::Images(repo(name)?),
        ["repositories"] => Target::Repositories,
        ["gc"] => Target::Gc,
        other if super::pull_through::parse(other).is_some() => {
            Target::PullThrough(super::pull_through::parse(other).ok_or_else(unknown)?)
        }
        other => match (super::repository_settings::parse(other), super::usage::parse(other)) {
            (Some(settings), _) => Target::RepositorySettings(settings?),
            (None, Some(usage)) => Target::Usage(usage?),
            (None, None) => match (super::lifecycle::parse(other), super::templates::parse(other)) {
                (Some(lifecycle), _) => Target::Lifecycle(lifecycle?),
                (None, Some(templates)) => Target::Templates(templates),
                (None, None) => match super::replication::parse(other) {
                    Some(replication) => Target::Replication(replication),
                    None => Target::Events(super::webhooks::parse(other).ok_or_else(unknown)?),
                },
            },
        },
    })
}

pub async fn admin(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    handle(&reg, req).await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserChange {
    disabled: Option<bool>,
    /// A new password; `null` removes password sign-in (access keys only).
    #[serde(default, deserialize_with = "some_or_null")]
    password: Option<Option<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyChange {
    disabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TagChange {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// Tells `"password": null` (remove) from an absent field (keep).
fn some_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::Invalid(format!("request body: {e}")))
}

fn ok<T: serde::Serialize>(status: StatusCode, value: T) -> ApiResult<Response> {
    Ok((status, Json(value)).into_response())
}

async fn handle(reg: &Registry, req: Request) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().strip_prefix("/api/v1/").unwrap_or_default().to_owned();
    let target = parse(&path)?;
    if !reg.auth.enabled() && target.needs_auth() {
        return Err(ApiError::NotFound(
            "authentication is off (auth.enabled = false): there are no users or policies".into(),
        ));
    }
    let method = parts.method.clone();
    let query: Vec<(String, String)> =
        parts.uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let caller = if reg.auth.enabled() {
        let origin = origin(&parts.extensions);
        if matches!(credentials(&parts.headers)?, Credentials::None) {
            return Err(ApiError::Unauthorized {
                message: "sign in with Basic credentials (a user and password, or an access key)".into(),
                challenge: Some(format!("Basic realm=\"{}\"", reg.auth.service())),
            });
        }
        let who = sign_in(reg, &parts.headers, origin).await?.ok_or(ApiError::Internal("no sign-in".into()))?;
        Some(Caller {
            principal: Authority::principal(Some(&who)),
            access_key: who.access_key.clone(),
            grant: None,
            origin,
        })
    } else {
        None
    };
    let event_origin = super::event_origin(
        &method,
        &parts.headers,
        caller.as_ref(),
        parts.extensions.get::<super::middleware::RequestId>(),
        parts.extensions.get::<super::middleware::ClientAddr>(),
        parts.extensions.get::<super::middleware::Secure>(),
    );
    let body = axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .map_err(|_| ApiError::Invalid(format!("the request body must be under {BODY_LIMIT} bytes")))?;
    let target = match target {
        Target::Events(t) => {
            let host = parts.headers.get(hyper::header::HOST).and_then(|v| v.to_str().ok());
            let call =
                super::webhooks::Call { reg, caller: caller.as_ref(), query: &query, body: &body, host, path: &path };
            return super::webhooks::handle(call, &method, t).await;
        }
        Target::Usage(t) => {
            let call = super::webhooks::Call {
                reg,
                caller: caller.as_ref(),
                query: &query,
                body: &body,
                host: None,
                path: &path,
            };
            return super::usage::handle(call, &method, t).await;
        }
        Target::Lifecycle(t) => {
            let call = super::webhooks::Call {
                reg,
                caller: caller.as_ref(),
                query: &query,
                body: &body,
                host: None,
                path: &path,
            };
            return super::lifecycle::handle(call, &method, t).await;
        }
        Target::Images(repo) => {
            let call = super::webhooks::Call {
                reg,
                caller: caller.as_ref(),
                query: &query,
                body: &body,
                host: None,
                path: &path,
            };
            return super::images::handle(call, &method, repo).await;
        }
        Target::RepositorySettings(t) => {
            let call = super::webhooks::Call {
                reg,
                caller: caller.as_ref(),
                query: &query,
                body: &body,
                host: None,
                path: &path,
            };
            return super::repository_settings::handle(call, &method, t).await;
        }
        Target::Templates(t) => {
            let call = super::webhooks::Call {
                reg,
                caller: caller.as_ref(),
                query: &query,
                body: &body,
                host: None,
                path: &path,
            };
            return super::templates::handle(call, &method, t).await;
        }
        Target::PullThrough(t) => {
            let call = super::webhooks::Call {
                reg,
                caller: caller.as_ref(),
                query: &query,
                body: &body,
                host: None,
                path: &path,
            };
            return super::pull_through::handle(call, &method, t).await;
        }
        Target::Replication(t) => {
            let call = super::webhooks::Call {
                reg,
                caller: caller.as_ref(),
                query: &query,
                body: &body,
                host: None,
                path: &path,
            };
            return super::replication::handle(call, &method, t).await;
        }
        Target::Repositories if method == Method::POST => {
            let call = super::webhooks::Call {
                reg,
                caller: caller.as_ref(),
                query: &query,
                body: &body,
                host: None,
                path: &path,
            };
            return super::templates::create_repository(call, &event_origin).await;
        }
        Target::Repositories => {
            let name = query.iter().find(|(k, _)| k == "name").map(|(_, v)| v.as_str()).unwrap_or_default();
            let repo: RepoName = name
                .parse()
                .map_err(|e: berth_oci::name::NameError| ApiError::NameInvalid(format!("name {name:?}: {e}")))?;
            let force = query.iter().any(|(k, v)| k == "force" && v == "true");
            if method != Method::DELETE {
                return Err(ApiError::Unsupported(format!("{method} is not a method of /api/v1/repositories")));
            }
            allow(reg, caller.as_ref(), "ecr:DeleteRepository", reg.auth.arns.repository(repo.as_str())).await?;
            reg.delete_repository(&repo, force, &event_origin).await?;
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        Target::Gc => {
            let registry_arn = reg.auth.arns.registry();
            return match method {
                Method::POST => {
                    allow(reg, caller.as_ref(), "berth:RunGarbageCollection", registry_arn).await?;
                    let options: crate::service::gc::GcOptions =
                        if body.is_empty() { Default::default() } else { json_body(&body)? };
                    ok(StatusCode::OK, reg.collect(&options).await?)
                }
                Method::GET => {
                    allow(reg, caller.as_ref(), "berth:GetGarbageCollection", registry_arn).await?;
                    ok(StatusCode::OK, reg.gc_status().await?)
                }
                m => Err(ApiError::Unsupported(format!("{m} is not a method of /api/v1/gc (GET or POST)"))),
            };
        }
        t => t,
    };
    let Some(caller) = caller else {
        return Err(ApiError::Internal("an identity endpoint without a caller".into()));
    };
    let admin = Admin { meta: reg.meta.as_ref(), arns: &reg.auth.arns };
    let arns = &reg.auth.arns;
    // The resource of an access-key endpoint is its owner.
    let key_owner = |id: &str| {
        let id = id.to_owned();
        async move { Ok::<_, ApiError>(arns.user(&admin_key_owner(reg, &id).await?)) }
    };
    let allow = |action: &'static str, resource: String| allow(reg, Some(&caller), action, resource);
    match (method, target) {
        (Method::GET, Target::Users) => {
            allow("iam:ListUsers", arns.user("*")).await?;
            ok(StatusCode::OK, admin.users().await?)
        }
        (Method::POST, Target::Users) => {
            let new: NewUser = json_body(&body)?;
            allow("iam:CreateUser", arns.user(&new.name)).await?;
            ok(StatusCode::CREATED, admin.create_user(&new.name, new.password.as_deref()).await?)
        }
        (Method::GET, Target::User(u)) => {
            allow("iam:GetUser", arns.user(&u)).await?;
            ok(StatusCode::OK, admin.user(&u).await?)
        }
        (Method::PATCH, Target::User(u)) => {
            let change: UserChange = json_body(&body)?;
            allow("iam:UpdateUser", arns.user(&u)).await?;
            let mut view = admin.user(&u).await?;
            if let Some(p) = change.password {
                view = admin.set_password(&u, p.as_deref()).await?;
            }
            if let Some(d) = change.disabled {
                view = admin.set_disabled(&u, d).await?;
            }
            ok(StatusCode::OK, view)
        }
        (Method::DELETE, Target::User(u)) => {
            allow("iam:DeleteUser", arns.user(&u)).await?;
            admin.delete_user(&u).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Method::GET, Target::UserKeys(u)) => {
            allow("iam:ListAccessKeys", arns.user(&u)).await?;
            ok(StatusCode::OK, admin.access_keys(Some(&u)).await?)
        }
        (Method::POST, Target::UserKeys(u)) => {
            allow("iam:CreateAccessKey", arns.user(&u)).await?;
            ok(StatusCode::CREATED, admin.create_access_key(&u, reg.auth.sealing()).await?)
        }
        (Method::GET, Target::Key(k)) => {
            allow("iam:ListAccessKeys", key_owner(&k).await?).await?;
            ok(StatusCode::OK, admin.access_key(&k).await?)
        }
        (Method::PATCH, Target::Key(k)) => {
            let change: KeyChange = json_body(&body)?;
            allow("iam:UpdateAccessKey", key_owner(&k).await?).await?;
            ok(StatusCode::OK, admin.set_access_key_disabled(&k, change.disabled).await?)
        }
        (Method::DELETE, Target::Key(k)) => {
            allow("iam:DeleteAccessKey", key_owner(&k).await?).await?;
            admin.delete_access_key(&k).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Method::GET, Target::Policies(t)) => {
            allow("iam:ListUserPolicies", policy_resource(reg, &t).await?).await?;
            ok(StatusCode::OK, admin.policies(&t).await?)
        }
        (method @ (Method::GET | Method::PUT | Method::DELETE), Target::Policy(t, name)) => {
            let action = policy_action(&method, &t);
            allow(action, policy_resource(reg, &t).await?).await?;
            match method {
                Method::GET => ok(StatusCode::OK, admin.policy(&t, name.as_deref()).await?),
                Method::PUT => {
                    let text =
                        std::str::from_utf8(&body).map_err(|_| ApiError::Invalid("policy is not UTF-8".into()))?;
                    ok(StatusCode::OK, admin.put_policy(&t, name.as_deref(), text).await?)
                }
                _ => {
                    admin.delete_policy(&t, name.as_deref()).await?;
                    Ok(StatusCode::NO_CONTENT.into_response())
                }
            }
        }
        (Method::GET, Target::Tags(repo)) => {
            allow("ecr:ListTagsForResource", arns.repository(repo.as_str())).await?;
            ok(StatusCode::OK, admin.repository_tags(&repo).await?)
        }
        (Method::PATCH | Method::PUT, Target::Tags(repo)) => {
            let change: TagChange = json_body(&body)?;
            if !change.set.is_empty() {
                allow("ecr:TagResource", arns.repository(repo.as_str())).await?;
            }
            if !change.remove.is_empty() {
                allow("ecr:UntagResource", arns.repository(repo.as_str())).await?;
            }
            ok(StatusCode::OK, admin.tag_repository(&repo, &change.set, &change.remove).await?)
        }
        (method, _) => Err(ApiError::Unsupported(format!("{method} is not a method of /api/v1/{path}"))),
    }
}

/// Whether `caller` may do `action` on `resource`; with authentication off (no caller),
/// anyone may.
pub(crate) async fn allow(reg: &Registry, caller: Option<&Caller>, action: &str, resource: String) -> ApiResult<()> {
    let Some(caller) = caller else { return Ok(()) };
    match reg.auth.decide_on(reg.meta.as_ref(), caller, action, &resource).await? {
        Permit::Allow => Ok(()),
        Permit::Deny(_) => {
            Err(ApiError::Denied { message: format!("{action} on {resource} is not allowed"), challenge: None })
        }
    }
}

async fn admin_key_owner(reg: &Registry, id: &str) -> ApiResult<String> {
    Ok(reg.meta.access_key(id).await?.ok_or_else(|| ApiError::NotFound(format!("no access key {id}")))?.user)
}

/// The ARN a policy endpoint acts on: the user (for a key's policies, its owner), the
/// repository, or the registry.
async fn policy_resource(reg: &Registry, t: &PolicyTarget) -> ApiResult<String> {
    let arns = &reg.auth.arns;
    Ok(match t {
        PolicyTarget::User(u) => arns.user(u),
        PolicyTarget::AccessKey(k) => arns.user(&admin_key_owner(reg, k).await?),
        PolicyTarget::Repository(r) => arns.repository(r.as_str()),
        PolicyTarget::Registry => arns.registry(),
    })
}

fn policy_action(method: &Method, t: &PolicyTarget) -> &'static str {
    match (t, *method == Method::GET, *method == Method::PUT) {
        (PolicyTarget::User(_) | PolicyTarget::AccessKey(_), true, _) => "iam:GetUserPolicy",
        (PolicyTarget::User(_) | PolicyTarget::AccessKey(_), _, true) => "iam:PutUserPolicy",
        (PolicyTarget::User(_) | PolicyTarget::AccessKey(_), _, _) => "iam:DeleteUserPolicy",
        (PolicyTarget::Repository(_), true, _) => "ecr:GetRepositoryPolicy",
        (PolicyTarget::Repository(_), _, true) => "ecr:SetRepositoryPolicy",
        (PolicyTarget::Repository(_), _, _) => "ecr:DeleteRepositoryPolicy",
        (PolicyTarget::Registry, true, _) => "ecr:GetRegistryPolicy",
        (PolicyTarget::Registry, _, true) => "ecr:PutRegistryPolicy",
        (PolicyTarget::Registry, _, _) => "ecr:DeleteRegistryPolicy",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_admin_paths() {
        assert_eq!(parse("users").unwrap(), Target::Users);
        assert_eq!(parse("users/alice/").unwrap(), Target::User("alice".into()));
        assert_eq!(parse("users/alice/access-keys").unwrap(), Target::UserKeys("alice".into()));
        assert_eq!(
            parse("users/alice/policies/ro").unwrap(),
            Target::Policy(PolicyTarget::User("alice".into()), Some("ro".into()))
        );
        assert_eq!(
            parse("repositories/team/app/policy").unwrap(),
            Target::Policy(PolicyTarget::Repository("team/app".parse().unwrap()), None)
        );
        assert_eq!(parse("repositories/policy/tags").unwrap(), Target::Tags("policy".parse().unwrap()));
        assert_eq!(parse("registry/policy").unwrap(), Target::Policy(PolicyTarget::Registry, None));
        assert!(matches!(parse("repositories/policy"), Err(ApiError::NotFound(_))));
        assert!(matches!(parse("repositories/Bad/policy"), Err(ApiError::NameInvalid(_))));
        assert!(matches!(parse("nothing"), Err(ApiError::NotFound(_))));
        assert_eq!(parse("gc").unwrap(), Target::Gc);
    }
}
