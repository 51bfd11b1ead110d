//! The request context: the condition keys a request carries (`aws:SourceIp`,
//! `aws:username`, `ecr:ResourceTag/<key>`, ...), which policy conditions and policy
//! variables read.
//!
//! Key names are case-insensitive, as in IAM, so they are stored lowercased. Every key holds
//! one or more string values; typed comparisons (dates, numbers, addresses) parse them when
//! a condition asks. A key set to no values is absent: IAM treats an empty multi-valued key
//! like a missing one, and keeping one representation of "absent" avoids a third state.

use std::collections::BTreeMap;

/// Condition keys and their values for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    values: BTreeMap<String, Vec<String>>,
}

impl Context {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to one value.
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.set(key, value);
        self
    }

    /// Sets `key` to several values (a multi-valued key, for `ForAnyValue`/`ForAllValues`).
    pub fn with_values<I, S>(mut self, key: &str, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.set_values(key, values);
        self
    }

    /// Sets `key` to one value, replacing what it held.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.values.insert(key.to_ascii_lowercase(), vec![value.into()]);
    }

    /// Sets `key` to several values, replacing what it held; no values removes the key.
    pub fn set_values<I, S>(&mut self, key: &str, values: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let values: Vec<String> = values.into_iter().map(Into::into).collect();
        let key = key.to_ascii_lowercase();
        if values.is_empty() {
            self.values.remove(&key);
        } else {
            self.values.insert(key, values);
        }
    }

    /// The values of `key`, never an empty slice.
    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.values.get(&key.to_ascii_lowercase()).map(Vec::as_slice)
    }

    /// The value of a single-valued key, as a policy variable needs: a multi-valued key
    /// cannot be substituted, so it counts as missing.
    pub(crate) fn single(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            [one] => Some(one),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_case_insensitive_and_empty_means_absent() {
        let mut c = Context::new().with("aws:SourceIp", "10.0.0.1").with_values("aws:TagKeys", ["a", "b"]);
        assert_eq!(c.get("AWS:SOURCEIP"), Some(&["10.0.0.1".to_owned()][..]));
        assert_eq!(c.single("aws:sourceip"), Some("10.0.0.1"));
        assert_eq!(c.single("aws:TagKeys"), None, "multi-valued keys are not variables");
        c.set_values("aws:tagkeys", Vec::<String>::new());
        assert_eq!(c.get("aws:TagKeys"), None);
    }
}
