//! Patterns: the strings of a policy that are matched against a request (actions, resource
//! ARNs, string and ARN condition values), with IAM's `*`/`?` wildcards and policy variables.
//!
//! A pattern is parsed once, with the document, into tokens; evaluation substitutes the
//! variables from the request [`Context`] and then globs. Substitution happens on tokens,
//! not on text, so a `*` that arrives inside a variable's value is a literal character and
//! can never widen the pattern, and the escapes `${*}`, `${?}` and `${$}` stay literal too.
//! Variables are only recognised in documents of Version `2012-10-17`; in older documents
//! `${...}` is plain text, as in IAM.

use super::context::Context;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Char(char),
    /// `*`: any run of characters, `/` and `:` included.
    Any,
    /// `?`: exactly one character.
    One,
    /// `${key}` or `${key, 'default'}`.
    Var {
        key: String,
        default: Option<String>,
    },
}

/// What a pattern's text may contain besides literal characters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Syntax {
    pub wildcards: bool,
    pub variables: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    toks: Vec<Tok>,
}

impl Pattern {
    pub(crate) fn parse(text: &str, syntax: Syntax) -> Result<Pattern, String> {
        let mut toks = Vec::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if syntax.variables && rest.starts_with("${") {
                let end = rest.find('}').ok_or_else(|| format!("unterminated policy variable in {text:?}"))?;
                toks.push(variable(&rest[2..end]).ok_or_else(|| format!("malformed policy variable in {text:?}"))?);
                rest = &rest[end + 1..];
                continue;
            }
            toks.push(match c {
                '*' if syntax.wildcards => Tok::Any,
                '?' if syntax.wildcards => Tok::One,
                c => Tok::Char(c),
            });
            rest = &rest[c.len_utf8()..];
        }
        Ok(Pattern { toks })
    }

    /// Whether the pattern can match more than one string (before substitution).
    pub(crate) fn has_wildcards(&self) -> bool {
        self.toks.iter().any(|t| matches!(t, Tok::Any | Tok::One))
    }

    /// Whether `text` matches. A variable whose key is missing from `ctx` (and has no
    /// default) makes the pattern match nothing, as IAM does.
    pub(crate) fn matches(&self, text: &str, ctx: &Context, ignore_case: bool) -> bool {
        self.resolve(ctx).is_some_and(|glob| glob_match(&glob, &text.chars().collect::<Vec<_>>(), ignore_case))
    }

    /// ARN matching of the `Arn*` condition operators: the six colon-separated parts are
    /// matched one by one, so a wildcard in one part never spans into the next. A pattern
    /// without colons (such as `*` alone) is matched against the whole text; one with too
    /// few parts matches nothing.
    pub(crate) fn matches_arn(&self, text: &str, ctx: &Context) -> bool {
        let Some(glob) = self.resolve(ctx) else { return false };
        let pattern_parts = split_arn(&glob);
        let text: Vec<char> = text.chars().collect();
        let text_parts: Vec<&[char]> = text.splitn(6, |c| *c == ':').collect();
        match pattern_parts.len() {
            1 => glob_match(&glob, &text, false),
            6 => text_parts.len() == 6 && pattern_parts.iter().zip(&text_parts).all(|(p, t)| glob_match(p, t, false)),
            _ => false,
        }
    }

    /// The pattern with its variables substituted: only characters and wildcards remain.
    fn resolve(&self, ctx: &Context) -> Option<Vec<Tok>> {
        let mut out = Vec::with_capacity(self.toks.len());
        for tok in &self.toks {
            match tok {
                Tok::Var { key, default } => {
                    let value = match key.as_str() {
                        "*" | "?" | "$" => key.as_str(),
                        _ => ctx.single(key).or(default.as_deref())?,
                    };
                    out.extend(value.chars().map(Tok::Char));
                }
                other => out.push(other.clone()),
            }
        }
        Some(out)
    }
}

/// The inside of `${...}`: a key, optionally `, 'default'` (a quote doubled to escape it).
fn variable(inner: &str) -> Option<Tok> {
    let (key, default) = match inner.split_once(',') {
        None => (inner.trim(), None),
        Some((key, default)) => {
            let quoted = default.trim().strip_prefix('\'')?.strip_suffix('\'')?;
            if quoted.replace("''", "").contains('\'') {
                return None;
            }
            (key.trim(), Some(quoted.replace("''", "'")))
        }
    };
    let valid = !key.is_empty() && !key.contains(|c: char| c.is_whitespace() || c == '{' || (c == '$' && key != "$"));
    valid.then(|| Tok::Var { key: key.to_owned(), default })
}

/// Splits a resolved ARN pattern at its first five literal colons.
fn split_arn(glob: &[Tok]) -> Vec<&[Tok]> {
    let mut parts = Vec::with_capacity(6);
    let mut rest = glob;
    while parts.len() < 5 {
        let Some(i) = rest.iter().position(|t| *t == Tok::Char(':')) else { break };
        parts.push(&rest[..i]);
        rest = &rest[i + 1..];
    }
    parts.push(rest);
    parts
}

/// Wildcard matching by backtracking to the last `*` only, which is linear in practice and
/// never exponential.
fn glob_match(pattern: &[Tok], text: &[char], ignore_case: bool) -> bool {
    let same = |a: char, b: char| a == b || (ignore_case && a.to_lowercase().eq(b.to_lowercase()));
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(Tok::Any) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Tok::One) => (p, t) = (p + 1, t + 1),
            Some(Tok::Char(c)) if same(*c, text[t]) => (p, t) = (p + 1, t + 1),
            _ => match star {
                Some((sp, st)) => {
                    (p, t) = (sp + 1, st + 1);
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|t| *t == Tok::Any)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GLOB: Syntax = Syntax { wildcards: true, variables: true };
    const EXACT: Syntax = Syntax { wildcards: false, variables: true };

    #[test]
    fn globs_the_iam_way() {
        let ctx = Context::new().with("aws:username", "alice").with("odd", "a*");
        let cases: &[(&str, Syntax, &str, bool, bool)] = &[
            ("arn:aws:ecr:*:1:repository/*", GLOB, "arn:aws:ecr:us-east-1:1:repository/a/b", false, true),
            ("arn:aws:ecr:*", GLOB, "arn:aws:ecr:r:1:repository/x", false, true),
            ("ecr:Get?ownloadUrlForLayer", GLOB, "ecr:getdownloadurlforlayer", true, true),
            ("ecr:Batch*", GLOB, "ecr:PutImage", true, false),
            ("repo/a*", GLOB, "repo/A1", false, false),
            ("*", GLOB, "", false, true),
            ("a*b*c", GLOB, "aXXbYYbZc", false, true),
            ("a*b*c", GLOB, "aXXbYYbZ", false, false),
            ("a*", EXACT, "abc", false, false),
            ("a*", EXACT, "a*", false, true),
            ("repository/${aws:username}/*", GLOB, "repository/alice/app", false, true),
            ("repository/${aws:username}/*", GLOB, "repository/bob/app", false, false),
            ("repository/${odd}", GLOB, "repository/abc", false, false),
            ("repository/${odd}", GLOB, "repository/a*", false, true),
            ("${missing}", GLOB, "", false, false),
            ("${missing, 'x''y'}", GLOB, "x'y", false, true),
            ("a${*}b${?}${$}", GLOB, "a*b?$", false, true),
            ("a${*}b", GLOB, "aXb", false, false),
            ("${aws:username}", Syntax { wildcards: true, variables: false }, "${aws:username}", false, true),
        ];
        for (pattern, syntax, text, ignore_case, want) in cases {
            let p = Pattern::parse(pattern, *syntax).unwrap();
            assert_eq!(p.matches(text, &ctx, *ignore_case), *want, "{pattern} vs {text}");
        }
    }

    #[test]
    fn matches_arns_part_by_part() {
        let ctx = Context::new();
        let cases = [
            ("arn:aws:iam::123456789012:user/*", "arn:aws:iam::123456789012:user/a/b", true),
            ("arn:aws:iam::*:root", "arn:aws:iam::123456789012:root", true),
            ("arn:aws:iam::*", "arn:aws:iam::123456789012:root", false),
            ("arn:aws:*:root", "arn:aws:iam::1:root", false),
            ("*", "arn:aws:iam::1:root", true),
            ("arn:aws:iam::1:user/a", "not-an-arn", false),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(Pattern::parse(pattern, GLOB).unwrap().matches_arn(text, &ctx), want, "{pattern} vs {text}");
        }
    }

    #[test]
    fn rejects_malformed_variables() {
        for bad in ["${aws:username", "${}", "${a b}", "${a, default}", "${a, 'x'y'}"] {
            assert!(Pattern::parse(bad, GLOB).is_err(), "{bad}");
        }
        assert!(Pattern::parse("${aws:username", Syntax { wildcards: true, variables: false }).is_ok());
    }
}
