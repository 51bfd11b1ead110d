//! Pure helpers for the header grammars the suite reads and writes.
//!
//! Nothing here does I/O, so every rule the cases rely on (how a `Location` is
//! resolved, how a `Link` header is read, what a `Content-Range` must say) is
//! unit-tested on its own.

use reqwest::Url;

/// Resolves a `Location` (or `Link` target) the way RFC 9110 §10.2.2 says:
/// against the URL of the request that produced it. Registries answer with
/// absolute URLs (Distribution), absolute paths (`/v2/...`, most others) or
/// even other hosts; all three must work.
pub fn resolve_location(request_url: &Url, location: &str) -> Result<Url, String> {
    let trimmed = location.trim();
    if trimmed.is_empty() {
        return Err("empty Location".to_owned());
    }
    request_url.join(trimmed).map_err(|err| format!("cannot resolve Location {trimmed:?}: {err}"))
}

/// Returns the target of the `rel="next"` link in a `Link` header (RFC 8288),
/// if any. Accepts several comma-separated links, quoted or bare `rel`
/// values, and `rel` lists such as `rel="prev next"`.
pub fn parse_link_next(header: &str) -> Option<String> {
    let mut rest = header;
    loop {
        let open = rest.find('<')?;
        let close = open + rest[open..].find('>')?;
        let target = &rest[open + 1..close];
        let after = &rest[close + 1..];
        // Parameters run until the next link, which starts with '<'.
        let params_end = after.find('<').unwrap_or(after.len());
        let params = &after[..params_end];
        if params.split(';').any(is_rel_next) {
            return Some(target.trim().to_owned());
        }
        rest = &after[params_end..];
    }
}

fn is_rel_next(param: &str) -> bool {
    let Some((key, value)) = param.split_once('=') else {
        return false;
    };
    if !key.trim().eq_ignore_ascii_case("rel") {
        return false;
    }
    let value = value.trim().trim_end_matches(',').trim();
    let value = value.trim_matches('"');
    value.split_ascii_whitespace().any(|rel| rel.eq_ignore_ascii_case("next"))
}

/// A byte range a client asks for in a blob `GET` (RFC 9110 §14.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=first-last`, both inclusive.
    Closed { first: u64, last: u64 },
    /// `bytes=first-`: from `first` to the end.
    From { first: u64 },
    /// `bytes=-len`: the last `len` bytes.
    Suffix { len: u64 },
}

impl ByteRange {
    /// The `Range` request header value.
    pub fn header(self) -> String {
        match self {
            Self::Closed { first, last } => format!("bytes={first}-{last}"),
            Self::From { first } => format!("bytes={first}-"),
            Self::Suffix { len } => format!("bytes=-{len}"),
        }
    }

    /// The inclusive `(first, last)` a server must send for a blob of
    /// `total` bytes, or `None` when the range is unsatisfiable (416).
    pub fn resolve(self, total: u64) -> Option<(u64, u64)> {
        if total == 0 {
            return None;
        }
        match self {
            Self::Closed { first, last } if first <= last && first < total => Some((first, last.min(total - 1))),
            Self::Closed { .. } => None,
            Self::From { first } if first < total => Some((first, total - 1)),
            Self::From { .. } => None,
            Self::Suffix { len } if len > 0 => Some((total.saturating_sub(len), total - 1)),
            Self::Suffix { .. } => None,
        }
    }
}

/// The `Content-Range` a 206 answer must carry: `bytes first-last/total`.
pub fn format_content_range(first: u64, last: u64, total: u64) -> String {
    format!("bytes {first}-{last}/{total}")
}

/// A parsed response `Content-Range`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentRange {
    /// `bytes first-last/total` (total `None` for `*`).
    Satisfied { first: u64, last: u64, total: Option<u64> },
    /// `bytes */total`, sent with 416.
    Unsatisfied { total: u64 },
}

/// Parses a response `Content-Range` (RFC 9110 §14.4).
pub fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes")?;
    let rest = rest.strip_prefix(' ')?.trim_start();
    let (range, total) = rest.split_once('/')?;
    if range == "*" {
        return Some(ContentRange::Unsatisfied { total: total.parse().ok()? });
    }
    let (first, last) = range.split_once('-')?;
    let total = if total == "*" { None } else { Some(total.parse().ok()?) };
    Some(ContentRange::Satisfied { first: first.parse().ok()?, last: last.parse().ok()?, total })
}

/// The `Content-Range` a client sends with an upload `PATCH`: the spec's
/// non-standard `first-last` (inclusive, no `bytes ` unit).
pub fn format_upload_range(first: u64, last: u64) -> String {
    format!("{first}-{last}")
}

/// Parses the `Range` a registry returns for an upload session: `0-<last>`
/// per the spec, `bytes=0-<last>` from older registries. Returns the
/// inclusive `(first, last)`.
pub fn parse_upload_range(value: &str) -> Option<(u64, u64)> {
    let value = value.trim();
    let value = value.strip_prefix("bytes=").unwrap_or(value);
    let (first, last) = value.split_once('-')?;
    Some((first.trim().parse().ok()?, last.trim().parse().ok()?))
}

/// Whether `items` is in the byte-wise ("ASCIIbetical", Go `sort.Strings`)
/// order the spec calls lexical.
pub fn is_lexically_sorted(items: &[String]) -> bool {
    items.windows(2).all(|pair| pair[0].as_bytes() <= pair[1].as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn location_resolution_table() -> TestResult {
        let post = Url::parse("http://127.0.0.1:5000/v2/a/b/blobs/uploads/")?;
        let cases = [
            ("/v2/a/b/blobs/uploads/123?_state=x", "http://127.0.0.1:5000/v2/a/b/blobs/uploads/123?_state=x"),
            ("http://127.0.0.1:5000/v2/a/b/blobs/uploads/123", "http://127.0.0.1:5000/v2/a/b/blobs/uploads/123"),
            ("https://cdn.example/upload/9?sig=1", "https://cdn.example/upload/9?sig=1"),
            // Relative references resolve against the request URL.
            ("123", "http://127.0.0.1:5000/v2/a/b/blobs/uploads/123"),
            ("../sha256:ab", "http://127.0.0.1:5000/v2/a/b/blobs/sha256:ab"),
            ("  /v2/a/b/blobs/uploads/7  ", "http://127.0.0.1:5000/v2/a/b/blobs/uploads/7"),
        ];
        for (location, want) in cases {
            assert_eq!(resolve_location(&post, location).map(String::from), Ok(want.to_owned()), "{location}");
        }
        assert!(resolve_location(&post, "").is_err());
        Ok(())
    }

    #[test]
    fn location_under_a_path_prefix() -> TestResult {
        let req = Url::parse("http://h:8080/registry/v2/x/blobs/uploads/")?;
        assert_eq!(
            resolve_location(&req, "/registry/v2/x/blobs/uploads/1").map(String::from),
            Ok("http://h:8080/registry/v2/x/blobs/uploads/1".to_owned())
        );
        Ok(())
    }

    #[test]
    fn link_header_table() {
        let cases: [(&str, Option<&str>); 8] = [
            (r#"</v2/r/tags/list?n=2&last=b>; rel="next""#, Some("/v2/r/tags/list?n=2&last=b")),
            ("<http://h/v2/_catalog?last=a&n=1>; rel=next", Some("http://h/v2/_catalog?last=a&n=1")),
            (r#"</p?1>; rel="prev", </n?2>; rel="next""#, Some("/n?2")),
            (r#"</x>; title="a"; rel="prev next""#, Some("/x")),
            (r#"</x>;rel="NEXT""#, Some("/x")),
            (r#"</x>; rel="prev""#, None),
            ("", None),
            ("garbage", None),
        ];
        for (header, want) in cases {
            assert_eq!(parse_link_next(header).as_deref(), want, "{header}");
        }
    }

    #[test]
    fn range_request_headers() {
        assert_eq!(ByteRange::Closed { first: 1, last: 9 }.header(), "bytes=1-9");
        assert_eq!(ByteRange::From { first: 100 }.header(), "bytes=100-");
        assert_eq!(ByteRange::Suffix { len: 5 }.header(), "bytes=-5");
    }

    #[test]
    fn range_resolution_table() {
        let total = 100;
        let cases = [
            (ByteRange::Closed { first: 0, last: 9 }, Some((0, 9))),
            (ByteRange::Closed { first: 90, last: 200 }, Some((90, 99))),
            (ByteRange::Closed { first: 100, last: 120 }, None),
            (ByteRange::Closed { first: 9, last: 1 }, None),
            (ByteRange::From { first: 40 }, Some((40, 99))),
            (ByteRange::From { first: 100 }, None),
            (ByteRange::Suffix { len: 10 }, Some((90, 99))),
            (ByteRange::Suffix { len: 1000 }, Some((0, 99))),
            (ByteRange::Suffix { len: 0 }, None),
        ];
        for (range, want) in cases {
            assert_eq!(range.resolve(total), want, "{range:?}");
        }
        assert_eq!(ByteRange::From { first: 0 }.resolve(0), None);
    }

    #[test]
    fn content_range_round_trip() {
        assert_eq!(format_content_range(10, 99, 4096), "bytes 10-99/4096");
        assert_eq!(
            parse_content_range("bytes 10-99/4096"),
            Some(ContentRange::Satisfied { first: 10, last: 99, total: Some(4096) })
        );
        assert_eq!(
            parse_content_range("bytes 0-0/*"),
            Some(ContentRange::Satisfied { first: 0, last: 0, total: None })
        );
        assert_eq!(parse_content_range("bytes */4096"), Some(ContentRange::Unsatisfied { total: 4096 }));
        assert_eq!(parse_content_range("10-99/4096"), None);
        assert_eq!(parse_content_range("bytes=10-99/4096"), None);
        assert_eq!(parse_content_range("bytes x-y/1"), None);
    }

    #[test]
    fn upload_ranges() {
        assert_eq!(format_upload_range(0, 1023), "0-1023");
        assert_eq!(parse_upload_range("0-1023"), Some((0, 1023)));
        assert_eq!(parse_upload_range("bytes=0-7"), Some((0, 7)));
        assert_eq!(parse_upload_range(" 0-0 "), Some((0, 0)));
        assert_eq!(parse_upload_range("0-"), None);
        assert_eq!(parse_upload_range("bytes 0-7"), None);
    }

    #[test]
    fn lexical_order_is_bytewise() {
        let sorted: Vec<String> = ["10", "9", "A", "Z9", "_x", "a", "a-1", "a.0", "b"].map(String::from).to_vec();
        assert!(is_lexically_sorted(&sorted));
        let unsorted: Vec<String> = ["a", "B"].map(String::from).to_vec();
        assert!(!is_lexically_sorted(&unsorted));
        assert!(is_lexically_sorted(&[]));
    }
}
