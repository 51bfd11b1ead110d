//! The `Condition` element: operators, their typed operands, and how they meet the request
//! [`Context`].
//!
//! Operands are parsed with the document (a date that does not parse is a policy error, not
//! a condition that silently never matches); request values are parsed at evaluation.
//!
//! IAM's rules, as implemented here (`AND` between operators and between keys, `OR` between
//! the values of one key):
//! - A positive operator on a key absent from the request does not match; a negated one
//!   (`StringNotEquals`, `NotIpAddress`, ...) does, since nothing equals nothing.
//! - A negated operator matches when the request value equals *none* of the policy values.
//! - `...IfExists` matches when the key is absent and otherwise tests as without the suffix.
//! - `Null: {"k": "true"}` matches when `k` is absent, `"false"` when it is present.
//! - `ForAnyValue:` matches when some request value passes (absent: no match);
//!   `ForAllValues:` when every request value passes (absent: match, which is why a
//!   `ForAllValues` Allow is dangerous and a `Null` check usually accompanies it).
//! - Without a set prefix, a multi-valued key is tested like `ForAnyValue` by positive
//!   operators and like `ForAllValues` by negated ones, so that a negated operator is always
//!   the exact complement of its positive form.

use std::cmp::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value as Json;

use super::actions::suggest;
use super::context::Context;
use super::pattern::{Pattern, Syntax};
use crate::ip::IpBlock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    String { ignore_case: bool },
    StringLike,
    Numeric(Ordering, bool),
    Date(Ordering, bool),
    Bool,
    Binary,
    Ip,
    Arn,
    Null,
}

use Ordering::{Equal, Greater, Less};

/// Base operator names: (name, test, negated). A `(ord, or_equal)` pair reads "request value
/// compares to the policy value as `ord`, or is equal when `or_equal`".
const OPERATORS: &[(&str, Test, bool)] = &[
    ("StringEquals", Test::String { ignore_case: false }, false),
    ("StringNotEquals", Test::String { ignore_case: false }, true),
    ("StringEqualsIgnoreCase", Test::String { ignore_case: true }, false),
    ("StringNotEqualsIgnoreCase", Test::String { ignore_case: true }, true),
    ("StringLike", Test::StringLike, false),
    ("StringNotLike", Test::StringLike, true),
    ("NumericEquals", Test::Numeric(Equal, false), false),
    ("NumericNotEquals", Test::Numeric(Equal, false), true),
    ("NumericLessThan", Test::Numeric(Less, false), false),
    ("NumericLessThanEquals", Test::Numeric(Less, true), false),
    ("NumericGreaterThan", Test::Numeric(Greater, false), false),
    ("NumericGreaterThanEquals", Test::Numeric(Greater, true), false),
    ("DateEquals", Test::Date(Equal, false), false),
    ("DateNotEquals", Test::Date(Equal, false), true),
    ("DateLessThan", Test::Date(Less, false), false),
    ("DateLessThanEquals", Test::Date(Less, true), false),
    ("DateGreaterThan", Test::Date(Greater, false), false),
    ("DateGreaterThanEquals", Test::Date(Greater, true), false),
    ("Bool", Test::Bool, false),
    ("BinaryEquals", Test::Binary, false),
    ("IpAddress", Test::Ip, false),
    ("NotIpAddress", Test::Ip, true),
    ("ArnEquals", Test::Arn, false),
    ("ArnLike", Test::Arn, false),
    ("ArnNotEquals", Test::Arn, true),
    ("ArnNotLike", Test::Arn, true),
    ("Null", Test::Null, false),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quantifier {
    Single,
    AnyValue,
    AllValues,
}

/// One policy value, typed by its operator.
#[derive(Debug, Clone)]
enum Operand {
    Text {
        pattern: Pattern,
        ignore_case: bool,
    },
    Like(Pattern),
    Arn(Pattern),
    Number(Ordering, bool, f64),
    Date(Ordering, bool, SystemTime),
    Bool(bool),
    Binary(String),
    Ip(IpBlock),
    /// `true`: the key must be absent.
    Null(bool),
}

/// One operator applied to one key: the unit that must hold.
#[derive(Debug, Clone)]
pub(crate) struct Condition {
    /// Lowercased, as context keys are.
    key: String,
    negated: bool,
    if_exists: bool,
    quantifier: Quantifier,
    /// Never empty.
    values: Vec<Operand>,
}

/// Parses a `Condition` element. `variables`: whether policy variables are substituted
/// (Version `2012-10-17`).
pub(crate) fn parse_block(block: &Json, variables: bool) -> Result<Vec<Condition>, String> {
    let Json::Object(operators) = block else { return Err("Condition must be an object".into()) };
    let mut conditions = Vec::new();
    for (name, keys) in operators {
        let (test, negated, if_exists, quantifier) = parse_operator(name)?;
        let keys = match keys {
            Json::Object(keys) if !keys.is_empty() => keys,
            _ => return Err(format!("condition operator {name} must map one or more keys to values")),
        };
        for (key, values) in keys {
            let at = |e: String| format!("{name} {key:?}: {e}");
            if key.is_empty() {
                return Err(at("empty condition key".into()));
            }
            let values = scalars(values)
                .map_err(at)?
                .iter()
                .map(|v| operand(test, v, variables))
                .collect::<Result<Vec<_>, _>>()
                .map_err(at)?;
            conditions.push(Condition { key: key.to_ascii_lowercase(), negated, if_exists, quantifier, values });
        }
    }
    Ok(conditions)
}

fn parse_operator(name: &str) -> Result<(Test, bool, bool, Quantifier), String> {
    let (quantifier, rest) = match name.split_once(':') {
        Some(("ForAnyValue", rest)) => (Quantifier::AnyValue, rest),
        Some(("ForAllValues", rest)) => (Quantifier::AllValues, rest),
        _ => (Quantifier::Single, name),
    };
    let (base, if_exists) = rest.strip_suffix("IfExists").map_or((rest, false), |base| (base, true));
    let known = OPERATORS.iter().find(|(n, ..)| *n == base).filter(|(_, test, _)| {
        // Null already tests existence; neither a suffix nor a set prefix means anything on it.
        *test != Test::Null || (!if_exists && quantifier == Quantifier::Single)
    });
    let Some(&(_, test, negated)) = known else {
        let names: Vec<&'static str> = OPERATORS.iter().map(|(n, ..)| *n).collect();
        let hint = suggest(base, &names).map(|s| format!(" (did you mean {}?)", name.replacen(base, s, 1)));
        return Err(format!("unknown condition operator {name:?}{}", hint.unwrap_or_default()));
    };
    Ok((test, negated, if_exists, quantifier))
}

/// A condition value is one scalar or a non-empty array of them; IAM accepts JSON numbers
/// and booleans and compares their text.
fn scalars(values: &Json) -> Result<Vec<String>, String> {
    let scalar = |v: &Json| match v {
        Json::String(s) => Some(s.clone()),
        Json::Bool(b) => Some(b.to_string()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let values = match values {
        Json::Array(a) if a.is_empty() => None,
        Json::Array(a) => a.iter().map(scalar).collect(),
        one => scalar(one).map(|s| vec![s]),
    };
    values.ok_or_else(|| "value must be a string, number, boolean or non-empty array of them".into())
}

fn operand(test: Test, value: &str, variables: bool) -> Result<Operand, String> {
    let pattern = |wildcards| Pattern::parse(value, Syntax { wildcards, variables });
    let invalid = |what: &str| format!("{value:?} is not {what}");
    Ok(match test {
        Test::String { ignore_case } => Operand::Text { pattern: pattern(false)?, ignore_case },
        Test::StringLike => Operand::Like(pattern(true)?),
        Test::Arn => Operand::Arn(pattern(true)?),
        Test::Numeric(ord, or_equal) => {
            Operand::Number(ord, or_equal, number(value).ok_or_else(|| invalid("a number"))?)
        }
        Test::Date(ord, or_equal) => Operand::Date(
            ord,
            or_equal,
            date(value).ok_or_else(|| invalid("a date (RFC 3339, YYYY-MM-DD or epoch seconds)"))?,
        ),
        Test::Bool => Operand::Bool(boolean(value).ok_or_else(|| invalid("true or false"))?),
        Test::Null => Operand::Null(boolean(value).ok_or_else(|| invalid("true or false"))?),
        Test::Binary if is_base64(value) => Operand::Binary(value.to_owned()),
        Test::Binary => return Err(invalid("base64")),
        Test::Ip => Operand::Ip(value.parse::<IpBlock>().map_err(|_| invalid("an IP address or CIDR block"))?),
    })
}

impl Condition {
    pub(crate) fn matches(&self, ctx: &Context) -> bool {
        let present = ctx.get(&self.key);
        if let Some(Operand::Null(_)) = self.values.first() {
            return self.values.iter().any(|v| matches!(v, Operand::Null(absent) if *absent == present.is_none()));
        }
        let Some(present) = present else {
            return self.if_exists
                || match self.quantifier {
                    Quantifier::AnyValue => false,
                    Quantifier::AllValues => true,
                    Quantifier::Single => self.negated,
                };
        };
        let passes = |v: &String| self.values.iter().any(|operand| operand.matches(v, ctx)) != self.negated;
        match self.quantifier {
            Quantifier::Single if self.negated => present.iter().all(passes),
            Quantifier::Single | Quantifier::AnyValue => present.iter().any(passes),
            Quantifier::AllValues => present.iter().all(passes),
        }
    }
}

impl Operand {
    /// Whether one request value meets this policy value, before any negation. A request
    /// value of the wrong type (a date key holding "yesterday") meets nothing.
    fn matches(&self, value: &str, ctx: &Context) -> bool {
        let compares = |got: Option<Ordering>, ord: Ordering, or_equal: bool| {
            got.is_some_and(|got| got == ord || (or_equal && got == Ordering::Equal))
        };
        match self {
            Operand::Text { pattern, ignore_case } => pattern.matches(value, ctx, *ignore_case),
            Operand::Like(pattern) => pattern.matches(value, ctx, false),
            Operand::Arn(pattern) => pattern.matches_arn(value, ctx),
            Operand::Number(ord, or_equal, want) => {
                compares(number(value).and_then(|got| got.partial_cmp(want)), *ord, *or_equal)
            }
            Operand::Date(ord, or_equal, want) => compares(date(value).map(|got| got.cmp(want)), *ord, *or_equal),
            Operand::Bool(want) => boolean(value) == Some(*want),
            Operand::Binary(want) => value == want,
            Operand::Ip(cidr) => value.trim().parse().is_ok_and(|ip| cidr.contains(ip)),
            Operand::Null(_) => false,
        }
    }
}

fn number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

fn boolean(s: &str) -> Option<bool> {
    ["false", "true"].iter().position(|b| s.eq_ignore_ascii_case(b)).map(|i| i == 1)
}

fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !s.is_empty()
        && s.len().is_multiple_of(4)
        && s.len() - body.len() <= 2
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// A date as IAM writes them: RFC 3339 (with `Z` or an offset), a bare `YYYY-MM-DD`
/// (midnight UTC), or seconds since the epoch.
pub(crate) fn date(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return UNIX_EPOCH.checked_add(Duration::from_secs(s.parse().ok()?));
    }
    if s.len() == 10 {
        return humantime::parse_rfc3339(&format!("{s}T00:00:00Z")).ok();
    }
    // humantime reads UTC only: an offset `+hh:mm` is taken off and applied by hand.
    let (local, offset) = match s.len().checked_sub(6).and_then(|i| s.get(i..).map(|tail| (i, tail))) {
        Some((i, tail)) if i >= 19 && tail.as_bytes()[3] == b':' && tail.starts_with(['+', '-']) => {
            let minutes = tail[1..3].parse::<u64>().ok()? * 60 + tail[4..].parse::<u64>().ok()?;
            (&s[..i], if tail.starts_with('-') { -(minutes as i64) } else { minutes as i64 })
        }
        _ => (s, 0),
    };
    let local = humantime::parse_rfc3339_weak(local).ok()?;
    let shift = Duration::from_secs(offset.unsigned_abs() * 60);
    if offset >= 0 { local.checked_sub(shift) } else { local.checked_add(shift) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_dates_in_every_form() {
        let midnight = UNIX_EPOCH + Duration::from_secs(1_767_225_600); // 2026-01-01T00:00:00Z
        for s in [
            "2026-01-01T00:00:00Z",
            "2026-01-01",
            "1767225600",
            "2026-01-01T02:00:00+02:00",
            "2025-12-31T19:00:00-05:00",
        ] {
            assert_eq!(date(s), Some(midnight), "{s}");
        }
        for bad in ["", "tomorrow", "2026-13-01", "2026-01-01T00:00:00+2:00x", "2026-1-1"] {
            assert_eq!(date(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_operators_and_suggests() {
        assert!(parse_operator("ForAllValues:StringLikeIfExists").is_ok());
        let cases = [
            ("StringEqual", "unknown condition operator \"StringEqual\" (did you mean StringEquals?)"),
            ("ForAnyValue:StringLke", "(did you mean ForAnyValue:StringLike?)"),
            ("NullIfExists", "unknown condition operator \"NullIfExists\""),
            ("ForAnyValue:Null", "unknown"),
            ("Frobnicate", "unknown"),
        ];
        for (name, want) in cases {
            let err = parse_operator(name).unwrap_err();
            assert!(err.contains(want), "{name}: {err}");
        }
        assert!(is_base64("aGVsbG8=") && !is_base64("aGVsbG8") && !is_base64("a==="));
    }
}
