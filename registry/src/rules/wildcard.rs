//! ECR's tag wildcards: `*` matches any run of characters (none included), every other
//! character only itself; a pattern matches a whole tag. Used by tag-mutability exclusion
//! filters and lifecycle `tagPatternList`.

/// Whether `tag` matches `pattern` as a whole.
pub fn matches(pattern: &str, tag: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), tag.as_bytes());
    // Greedy with one backtrack point: the classic linear-time glob for `*` alone.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// How many `*` a pattern has (ECR allows at most 4 in a lifecycle `tagPatternList` entry).
pub fn stars(pattern: &str) -> usize {
    pattern.bytes().filter(|&c| c == b'*').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_match_any_run_and_the_rest_only_itself() {
        let cases = [
            ("v1", "v1", true),
            ("v1", "v10", false),
            ("v*", "v", true),
            ("v*", "v1.2.3", true),
            ("v*", "xv1", false),
            ("*", "", true),
            ("*", "anything", true),
            ("*-rc", "1.0-rc", true),
            ("*-rc", "1.0-rc1", false),
            ("prod*release", "prod-2024-release", true),
            ("prod*release", "prodrelease", true),
            ("prod*release", "prod-release-x", false),
            ("*a*b*c*", "xxaxxbxxcxx", true),
            ("*a*b*c*", "cba", false),
            ("a**b", "ab", true),
            ("a.b", "axb", false),
            ("", "", true),
            ("", "x", false),
        ];
        for (pattern, tag, want) in cases {
            assert_eq!(matches(pattern, tag), want, "{pattern:?} against {tag:?}");
        }
        assert_eq!(stars("*a*b*"), 3);
    }
}
