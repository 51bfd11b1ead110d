//! Repository names, tags, references and upload ids, each valid by construction.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, DigestError};

/// Longest repository name Berth accepts. Clients cap `host[:port]/name` at 255 characters.
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag the spec allows.
pub const MAX_TAG_LEN: usize = 128;

/// Why a string is not a valid repository name or tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name must be 1 to {MAX_NAME_LEN} characters")]
    NameLength,
    #[error("repository name component {0:?} must match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*")]
    NameComponent(String),
    #[error("tag must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    Tag,
    #[error("upload id must be 1 to 128 characters of [A-Za-z0-9_-]")]
    UploadId,
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// A repository name such as `library/ubuntu`: slash-separated path components.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepoName(String);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-", always followed by alnum.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

impl FromStr for RepoName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > MAX_NAME_LEN {
            return Err(NameError::NameLength);
        }
        if let Some(bad) = s.split('/').find(|c| !is_valid_component(c)) {
            return Err(NameError::NameComponent(bad.to_owned()));
        }
        Ok(RepoName(s.to_owned()))
    }
}

/// A tag such as `latest` or `v1.2.3`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let first_ok = b.first().is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_');
        let rest_ok = b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if first_ok && rest_ok && b.len() <= MAX_TAG_LEN { Ok(Tag(s.to_owned())) } else { Err(NameError::Tag) }
    }
}

/// The `<reference>` of a manifest URL: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // A tag cannot contain ':', a digest always does.
        if s.contains(':') { Ok(Reference::Digest(s.parse()?)) } else { Ok(Reference::Tag(s.parse()?)) }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// The opaque id of an upload session, as it appears in the upload `Location`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UploadId(String);

impl UploadId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UploadId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok =
            !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok { Ok(UploadId(s.to_owned())) } else { Err(NameError::UploadId) }
    }
}

macro_rules! string_newtype_impls {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl TryFrom<String> for $t {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    )*};
}
string_newtype_impls!(RepoName, Tag, UploadId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        let good = ["a", "library/ubuntu", "a.b/c_d/e__f/g-h/i---j", "0/1/2", "conformance/x9-y"];
        for n in good {
            assert!(n.parse::<RepoName>().is_ok(), "{n} should be valid");
        }
        let too_long = "a".repeat(256);
        let bad =
            ["", "A", "a/", "/a", "a//b", "a_", "-a", "a.-b", "a___b", "a..b", "a:b", "a b", "é", too_long.as_str()];
        for n in bad {
            assert!(n.parse::<RepoName>().is_err(), "{n} should be invalid");
        }
    }

    #[test]
    fn tags() {
        let long_ok = "a".repeat(128);
        for t in ["latest", "_x", "V1.2.3-rc_1", long_ok.as_str()] {
            assert!(t.parse::<Tag>().is_ok(), "{t}");
        }
        let long_bad = "a".repeat(129);
        for t in ["", ".x", "-x", "a/b", "a:b", long_bad.as_str()] {
            assert!(t.parse::<Tag>().is_err(), "{t}");
        }
    }

    #[test]
    fn references_split_on_colon() {
        assert!(matches!("latest".parse::<Reference>(), Ok(Reference::Tag(_))));
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(matches!(d.parse::<Reference>(), Ok(Reference::Digest(_))));
        assert!("sha256:nothex".parse::<Reference>().is_err());
    }

    #[test]
    fn upload_ids() {
        assert!("4f1c2f3e-0000-4000-8000-000000000000".parse::<UploadId>().is_ok());
        assert!("../etc".parse::<UploadId>().is_err());
        assert!("".parse::<UploadId>().is_err());
    }
}
