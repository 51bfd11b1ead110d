//! Who may do what.
//!
//! Today: the [`Access`] each request needs (derived by the registry from its parsed route,
//! before the body is read), and the Docker token spec's scope grammar ([`Scope`]), in which
//! that access is asked for and granted. Principals, tokens and policy evaluation build on
//! these types.
//!
//! Invariants: pure logic, no I/O; the registry loads records and passes them in.

pub mod credentials;
pub mod ip;
pub mod policy;
pub mod sigv4;
pub mod token;

use std::fmt;
use std::str::FromStr;

use berth_oci::RepoName;

/// An action on a resource, as named in Docker token scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Pull,
    Push,
    Delete,
    /// Registry-wide listing (`registry:catalog:*`).
    Catalog,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::Catalog => "*",
        }
    }
}

/// What one request needs: an action on a repository, or on the registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Access {
    /// Nothing beyond reaching the registry (`GET /v2/`, health).
    None,
    Repository {
        name: RepoName,
        action: Action,
    },
    Registry {
        action: Action,
    },
}

impl Access {
    /// The scope a client would ask the token service for to be allowed this access.
    pub fn scope(&self) -> Option<Scope> {
        match self {
            Access::None => None,
            // Pushing clients also read (HEAD a blob, check a manifest), so the challenge
            // for a push asks for both, as Distribution's does.
            Access::Repository { name, action: Action::Push } => Some(Scope {
                resource_type: "repository".into(),
                name: name.to_string(),
                actions: vec!["pull".into(), "push".into()],
            }),
            Access::Repository { name, action } => Some(Scope {
                resource_type: "repository".into(),
                name: name.to_string(),
                actions: vec![action.as_str().into()],
            }),
            Access::Registry { action } => Some(Scope {
                resource_type: "registry".into(),
                name: "catalog".into(),
                actions: vec![action.as_str().into()],
            }),
        }
    }
}

/// One `resourcetype:resourcename:action[,action]*` of the Docker token spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub resource_type: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// A string that is not a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope must be resourcetype:resourcename:action[,action]*: {0:?}")]
pub struct ScopeError(String);

impl FromStr for Scope {
    type Err = ScopeError;
    /// The resource name may carry `host:port`, so the type is split off the left at the
    /// first colon and the actions off the right at the last: never "split on colons".
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ScopeError(s.to_owned());
        let (resource_type, rest) = s.split_once(':').ok_or_else(err)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(err)?;
        // A resource class in parentheses (`repository(plugin)`) is deprecated and ignored.
        let resource_type = resource_type.split('(').next().unwrap_or_default();
        let type_ok = !resource_type.is_empty() && resource_type.bytes().all(|b| b.is_ascii_lowercase());
        let actions: Vec<String> = actions.split(',').filter(|a| !a.is_empty()).map(str::to_owned).collect();
        let actions_ok = actions.iter().all(|a| a.bytes().all(|b| b.is_ascii_lowercase() || b == b'*'));
        if !type_ok || name.is_empty() || !actions_ok {
            return Err(err());
        }
        Ok(Scope { resource_type: resource_type.to_owned(), name: name.to_owned(), actions })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.resource_type, self.name, self.actions.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scopes_with_ports_in_names() {
        let s: Scope = "repository:localhost:5000/samalba/my-app:pull,push".parse().unwrap();
        assert_eq!(s.resource_type, "repository");
        assert_eq!(s.name, "localhost:5000/samalba/my-app");
        assert_eq!(s.actions, ["pull", "push"]);
        assert_eq!(s.to_string(), "repository:localhost:5000/samalba/my-app:pull,push");
        let c: Scope = "registry:catalog:*".parse().unwrap();
        assert_eq!(c.actions, ["*"]);
        let classed: Scope = "repository(plugin):a/b:pull".parse().unwrap();
        assert_eq!(classed.resource_type, "repository");
    }

    #[test]
    fn rejects_non_scopes() {
        for bad in ["", "repository", "repository:name", "Repo:a:pull", "repository::pull", "repository:a:PULL"] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
    }

    #[test]
    fn access_renders_the_scope_to_ask_for() {
        let a = Access::Repository { name: "a/b".parse().unwrap(), action: Action::Push };
        assert_eq!(a.scope().unwrap().to_string(), "repository:a/b:pull,push");
        assert_eq!(Access::Registry { action: Action::Catalog }.scope().unwrap().to_string(), "registry:catalog:*");
        assert!(Access::None.scope().is_none());
    }
}
