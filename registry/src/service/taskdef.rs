//! Pinning ECS task definitions: every `containerDefinitions[].image` on this registry,
//! `host/repo:tag` or `host/repo@sha256:…`, becomes `host/repo@<digest>` after checking the
//! manifest exists, so a service runs exactly what was resolved however the tag moves later.

use berth_oci::{Digest, Reference, RepoName};
use serde::Serialize;
use serde_json::Value;

use berth_auth::policy::actions;

use super::Registry;
use crate::auth::{Caller, Permit};
use crate::error::{ApiError, ApiResult};

/// An image reference that could not be pinned, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unresolved {
    /// The container definition's `name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub image: String,
    /// The OCI error code: `NAME_INVALID`, `NAME_UNKNOWN`, `MANIFEST_UNKNOWN`, `DENIED`, or
    /// `UNSUPPORTED` (an image on another registry).
    pub code: &'static str,
    /// What is wrong, naming no switch: an image on another registry (`foreign`) may be
    /// kept as it is, and each front end says how in its own terms.
    pub message: String,
    /// On another registry: kept as it is when the caller asks (`foreign=keep`, `--keep-foreign`).
    #[serde(skip)]
    pub foreign: bool,
}

impl Unresolved {
    /// The switch that would have kept this image as it is, if there is one.
    pub fn hint(&self) -> Option<crate::error::Override> {
        self.foreign.then_some(crate::error::Override::KeepForeign)
    }
}

/// One image reference, split the way Docker splits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry host (with port), when the reference names one.
    pub host: Option<String>,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// `[host[:port]/]repo[:tag][@alg:hex]`. The first path component is a host when it has
    /// a `.` or a `:`, or is `localhost`, as Docker decides.
    pub fn parse(image: &str) -> Option<ImageRef> {
        let (rest, digest) = match image.split_once('@') {
            Some((r, d)) => (r, Some(d.to_owned())),
            None => (image, None),
        };
        let (host, path) = match rest.split_once('/') {
            Some((first, path)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (Some(first.to_owned()), path)
            }
            _ => (None, rest),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_owned(), Some(t.to_owned())),
            _ => (path.to_owned(), None),
        };
        if repository.is_empty() || tag.as_deref() == Some("") {
            return None;
        }
        Some(ImageRef { host, repository, tag, digest })
    }
}

impl Registry {
    /// Pins the images of a task definition (an ECS `RegisterTaskDefinition` input, or a
    /// `DescribeTaskDefinition` output with `taskDefinition` at the top) that are on one of
    /// `hosts` (the request's `Host` and the configured `hosts`). Images on other registries
    /// are errors unless `keep_foreign`. `caller` must be allowed to pull each repository
    /// (`None`: a local command, allowed everything). Every problem is reported, not just
    /// the first.
    pub async fn pin_task_definition(
        &self,
        mut doc: Value,
        hosts: &[String],
        keep_foreign: bool,
        caller: Option<&Caller>,
    ) -> ApiResult<Value> {
        let definitions = {
            let root = if doc.get("taskDefinition").is_some() { &mut doc["taskDefinition"] } else { &mut doc };
            match root.get_mut("containerDefinitions").and_then(Value::as_array_mut) {
                Some(list) => list,
                None => {
                    return Err(ApiError::Invalid(
                        "a task definition needs a containerDefinitions array (ECS RegisterTaskDefinition JSON)".into(),
                    ));
                }
            }
        };
        let mut problems = Vec::new();
        for def in definitions.iter_mut() {
            let container = def.get("name").and_then(Value::as_str).map(str::to_owned);
            let Some(image) = def.get("image").and_then(Value::as_str).map(str::to_owned) else {
                problems.push(Unresolved {
                    container,
                    image: String::new(),
                    code: "NAME_INVALID",
                    message: "a container definition has no image".into(),
                    foreign: false,
                });
                continue;
            };
            // A store or policy failure is the request's error (500/503), not the image's.
            match self.pin_image(&image, hosts, keep_foreign, caller).await? {
                Ok(Some(pinned)) => def["image"] = Value::String(pinned),
                Ok(None) => {}
                Err((code, message, foreign)) => problems.push(Unresolved { container, image, code, message, foreign }),
            }
        }
        if problems.is_empty() { Ok(doc) } else { Err(ApiError::ImagesUnresolved(problems)) }
    }

    /// `Ok(Ok(None))`: a foreign image kept as it is; `Ok(Err(..))`: what is wrong with the
    /// image; `Err`: the registry failed.
    async fn pin_image(
        &self,
        image: &str,
        hosts: &[String],
        keep_foreign: bool,
        caller: Option<&Caller>,
    ) -> ApiResult<Result<Option<String>, (&'static str, String, bool)>> {
        Ok(match self.try_pin(image, hosts, keep_foreign, caller).await {
            Ok(pinned) => Ok(pinned),
            Err(Failure::Image(code, message)) => Err((code, message, false)),
            Err(Failure::Foreign(message)) => Err(("UNSUPPORTED", message, true)),
            Err(Failure::Registry(e)) => return Err(e),
        })
    }

    async fn try_pin(
        &self,
        image: &str,
        hosts: &[String],
        keep_foreign: bool,
        caller: Option<&Caller>,
    ) -> Result<Option<String>, Failure> {
        let bad = |code: &'static str, message: String| Failure::Image(code, message);
        let parsed =
            ImageRef::parse(image).ok_or_else(|| bad("NAME_INVALID", format!("{image}: not an image reference")))?;
        let ours = parsed.host.as_deref().is_some_and(|h| hosts.iter().any(|o| o.eq_ignore_ascii_case(h)));
        let Some(host) = parsed.host.as_deref().filter(|_| ours) else {
            if keep_foreign {
                return Ok(None);
            }
            let on = parsed.host.as_deref().unwrap_or("Docker Hub");
            return Err(Failure::Foreign(format!("{image}: on {on}, not this registry ({})", hosts.join(", "))));
        };
        let repo: RepoName =
            parsed.repository.parse().map_err(|e| bad("NAME_INVALID", format!("{image}: repository name: {e}")))?;
        if let Some(caller) = caller {
            let permit = self.auth.decide(self.meta.as_ref(), caller, Some(&repo), actions::PULL).await;
            if let Permit::Deny(_) = permit.map_err(Failure::Registry)? {
                return Err(bad("DENIED", format!("{image}: not allowed to pull {repo}")));
            }
        }
        let reference = match (&parsed.digest, &parsed.tag) {
            (Some(d), _) => {
                Reference::Digest(d.parse::<Digest>().map_err(|e| bad("DIGEST_INVALID", format!("{image}: {e}")))?)
            }
            (None, Some(t)) => Reference::Tag(t.parse().map_err(|e| bad("TAG_INVALID", format!("{image}: {e}")))?),
            (None, None) => Reference::Tag("latest".parse().map_err(|e| bad("TAG_INVALID", format!("{image}: {e}")))?),
        };
        match self.get_manifest(&repo, &reference).await {
            Ok(m) => Ok(Some(format!("{host}/{repo}@{}", m.digest))),
            Err(ApiError::ManifestUnknown) => {
                let exists = self.meta.repository_key(&repo).await.map_err(|e| Failure::Registry(e.into()))?.is_some();
                if exists {
                    Err(bad("MANIFEST_UNKNOWN", format!("{image}: {reference} is not in repository {repo}")))
                } else {
                    Err(bad("NAME_UNKNOWN", format!("{image}: repository {repo} does not exist")))
                }
            }
            Err(e) => Err(Failure::Registry(e)),
        }
    }
}

/// Why an image did not pin: the image itself, its being on another registry, or the registry.
enum Failure {
    Image(&'static str, String),
    Foreign(String),
    Registry(ApiError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(host: Option<&str>, repo: &str, tag: Option<&str>, digest: Option<&str>) -> Option<ImageRef> {
        Some(ImageRef {
            host: host.map(Into::into),
            repository: repo.into(),
            tag: tag.map(Into::into),
            digest: digest.map(Into::into),
        })
    }

    #[test]
    fn splits_like_docker() {
        assert_eq!(
            ImageRef::parse("127.0.0.1:5000/team/app:v1"),
            r(Some("127.0.0.1:5000"), "team/app", Some("v1"), None)
        );
        assert_eq!(ImageRef::parse("reg.example/app"), r(Some("reg.example"), "app", None, None));
        assert_eq!(ImageRef::parse("localhost/app:1"), r(Some("localhost"), "app", Some("1"), None));
        assert_eq!(ImageRef::parse("nginx:1.27"), r(None, "nginx", Some("1.27"), None));
        assert_eq!(ImageRef::parse("library/nginx"), r(None, "library/nginx", None, None));
        assert_eq!(ImageRef::parse("h:5000/a/b:t@sha256:abc"), r(Some("h:5000"), "a/b", Some("t"), Some("sha256:abc")));
        assert_eq!(ImageRef::parse("h:5000/a@sha256:abc"), r(Some("h:5000"), "a", None, Some("sha256:abc")));
        assert_eq!(ImageRef::parse("h:5000/"), None);
        assert_eq!(ImageRef::parse("h:5000/a:"), None);
    }
}
