//! Reading inputs and writing outputs in the awsJson 1.1 protocol.
//!
//! Inputs are parsed with serde into each operation's own request type (`rename_all =
//! "camelCase"`, unknown fields ignored as AWS services ignore them); a field of the wrong
//! type or a missing required one is an `InvalidParameterException` naming it. Timestamps
//! are epoch seconds as JSON numbers ([`epoch`]), as botocore reads them in this protocol.

use axum::response::IntoResponse;
use berth_oci::RepoName;
use hyper::StatusCode;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Serialize};

use super::error::{EcrError, EcrResult, JSON_1_1};

/// The operation's input. An empty body is `{}` (botocore sends `{}`, curl may send nothing).
/// Its fields may borrow from the body (`UploadLayerPart`'s base64 part is not copied).
pub fn input<'a, T: Deserialize<'a>>(body: &'a [u8]) -> EcrResult<T> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { body };
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            EcrError::invalid(format!("the request is not the operation's JSON input: {inner}"))
        } else {
            EcrError::invalid(format!("{path}: {inner}"))
        }
    })
}

/// A 200 answer with `value` as its JSON body.
pub fn output<T: Serialize>(value: &T) -> EcrResult {
    let body = serde_json::to_vec(value).map_err(|e| EcrError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: "ServerException",
        message: format!("the answer could not be written: {e}"),
    })?;
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(JSON_1_1));
    Ok(r)
}

/// A repository name from an input field, checked as ECR checks it (2–256 characters of
/// ECR's grammar; Berth's own grammar allows what ECR does).
pub fn repository_name(field: &str, value: &str) -> EcrResult<RepoName> {
    if value.len() < 2 || value.len() > 256 {
        return Err(EcrError::invalid(format!("{field} '{value}' must be 2 to 256 characters long")));
    }
    value.parse().map_err(|e: berth_oci::name::NameError| {
        EcrError::invalid(format!(
            "{field} '{value}' is not a repository name ({e}); names are lowercase letters and digits, \
             separated by '.', '_', '-' and '/'"
        ))
    })
}

/// Unix seconds as ECR's timestamps are written in JSON: a number.
pub fn epoch(unix_seconds: i64) -> f64 {
    unix_seconds as f64
}

/// `maxResults` checked against ECR's bounds for the operation.
pub fn max_results(value: Option<i64>, max: i64) -> EcrResult<Option<usize>> {
    match value {
        None => Ok(None),
        Some(n) if (1..=max).contains(&n) => Ok(Some(n as usize)),
        Some(n) => Err(EcrError::invalid(format!("maxResults {n} must be from 1 to {max}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        repository_name: String,
        #[serde(default)]
        max_results: Option<i64>,
    }

    #[test]
    fn inputs_name_the_field_at_fault() {
        let p: Probe = input(br#"{"repositoryName":"a/b","extra":1}"#).unwrap();
        assert_eq!((p.repository_name.as_str(), p.max_results), ("a/b", None));
        let e = input::<Probe>(br#"{"repositoryName":"a/b","maxResults":"ten"}"#).unwrap_err();
        assert_eq!(e.kind, "InvalidParameterException");
        assert!(e.message.starts_with("maxResults"), "{}", e.message);
        let e = input::<Probe>(b"").unwrap_err();
        assert!(e.message.contains("repositoryName"), "{}", e.message);
        assert!(repository_name("repositoryName", "a").is_err());
        assert!(repository_name("repositoryName", "Team/App").is_err());
        assert_eq!(repository_name("repositoryName", "team/app").unwrap().as_str(), "team/app");
        assert!(max_results(Some(0), 1000).is_err());
        assert_eq!(max_results(Some(5), 1000).unwrap(), Some(5));
    }
}
