//! `[quotas]`: limits on what repositories and prefixes may hold, and when to warn.

use berth_storage::metadata::{QuotaRecord, QuotaScope};
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Quotas of the configuration, and the warning threshold of every quota. Quotas set through
/// the admin API (`/api/v1/quotas`, `berth quota`) are kept in the metadata store and win
/// over one here of the same scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotasConfig {
    /// Percent of a limit at which a `quota.warning` event is written (once per crossing);
    /// `0`: never.
    pub warning: u8,
    /// `[[quotas.limits]] scope = "team-a/*"  bytes = "50GiB"  images = 1000`.
    pub limits: Vec<QuotaRule>,
}

impl Default for QuotasConfig {
    fn default() -> Self {
        QuotasConfig { warning: 80, limits: Vec::new() }
    }
}

/// One quota: at most `bytes` of linked blobs and `images` manifests in `scope` (a
/// repository, or `prefix/*` for all repositories under it together); either may be left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRule {
    pub scope: String,
    #[serde(default, with = "byte_size")]
    pub bytes: Option<u64>,
    #[serde(default)]
    pub images: Option<u64>,
}

impl QuotasConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.warning > 100 {
            return Err(ConfigError(format!("quotas.warning = {}: give a percentage, 0 to 100", self.warning)));
        }
        let mut seen = std::collections::BTreeSet::new();
        for rule in &self.limits {
            let record = rule.record().map_err(|e| ConfigError(format!("quotas.limits: {e}")))?;
            if !seen.insert(record.scope.clone()) {
                return Err(ConfigError(format!("quotas.limits: scope {} is given twice", record.scope)));
            }
        }
        Ok(())
    }

    /// The quotas as records (validated at load, so none fails here; one that did is left out).
    pub fn records(&self) -> Vec<QuotaRecord> {
        self.limits.iter().filter_map(|r| r.record().ok()).collect()
    }
}

impl QuotaRule {
    fn record(&self) -> Result<QuotaRecord, String> {
        let scope: QuotaScope = self.scope.parse()?;
        if self.bytes.is_none() && self.images.is_none() {
            return Err(format!("scope {scope} limits nothing: give bytes, images or both"));
        }
        Ok(QuotaRecord { scope, max_bytes: self.bytes, max_images: self.images, updated_at: 0 })
    }
}

/// `text` as bytes: digits, then optionally a unit: `B`, decimal `K`/`KB` … `P`/`PB`, binary
/// `KiB` … `PiB`.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let (power, base) = match unit.trim() {
        "" | "B" => (0, 1000),
        "K" | "KB" => (1, 1000),
        "M" | "MB" => (2, 1000),
        "G" | "GB" => (3, 1000),
        "T" | "TB" => (4, 1000),
        "P" | "PB" => (5, 1000),
        "KiB" => (1, 1024),
        "MiB" => (2, 1024),
        "GiB" => (3, 1024),
        "TiB" => (4, 1024),
        "PiB" => (5, 1024),
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(u64::pow(base, power))
}

/// A size in bytes: a number, or text with a unit (`50GiB`, `200MB`, `2TiB`).
pub mod byte_size {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(size: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match size {
            Some(n) => s.serialize_u64(*n),
            None => s.serialize_none(),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Number(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<Given>::deserialize(d)? {
            None => Ok(None),
            Some(Given::Number(n)) => Ok(Some(n)),
            Some(Given::Text(t)) => super::parse_size(&t)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("{t:?} is not a size like 10737418240 or 10GiB"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(scope: &str, bytes: Option<u64>, images: Option<u64>) -> QuotaRule {
        QuotaRule { scope: scope.into(), bytes, images }
    }

    #[test]
    fn sizes() {
        for (text, bytes) in [
            ("0", Some(0)),
            ("1024", Some(1024)),
            ("10GiB", Some(10 << 30)),
            ("2 TiB", Some(2 << 40)),
            ("3TB", Some(3_000_000_000_000)),
            ("1PiB", Some(1 << 50)),
            ("1.5GiB", None),
            ("lots", None),
            ("1GiB/s", None),
            ("99999999PiB", None),
        ] {
            assert_eq!(parse_size(text), bytes, "{text}");
        }
    }

    #[test]
    fn rules_are_checked() {
        let ok = QuotasConfig { warning: 80, limits: vec![rule("team-a/*", Some(10), None), rule("b", None, Some(3))] };
        ok.validate().unwrap();
        assert_eq!(ok.records().len(), 2);
        for (bad, says) in [
            (QuotasConfig { warning: 101, limits: vec![] }, "0 to 100"),
            (QuotasConfig { warning: 80, limits: vec![rule("a*", Some(1), None)] }, "team-a/*"),
            (QuotasConfig { warning: 80, limits: vec![rule("a", None, None)] }, "limits nothing"),
            (QuotasConfig { warning: 80, limits: vec![rule("a", Some(1), None), rule("a", None, Some(1))] }, "twice"),
        ] {
            let e = bad.validate().unwrap_err().0;
            assert!(e.contains(says), "{e}");
        }
    }
}
