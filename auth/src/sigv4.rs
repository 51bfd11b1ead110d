//! AWS Signature Version 4 (`AWS4-HMAC-SHA256`), as the AWS SDKs sign requests to ECR's API.
//!
//! Checked in two steps, so that a request no key could have signed costs no body read:
//! [`Authorization::parse`] and [`Authorization::check_headers`] look at the headers alone
//! (shape, date, credential scope, clock skew); [`Authorization::verify`] then recomputes the
//! signature over the request and its body with the key's secret and compares it in constant
//! time. [`sign`] is the same computation from the client's side (tests, tools).
//!
//! The canonical request is AWS's: method, the URI-encoded path, the sorted canonical query
//! string, the signed headers (lowercase names, values trimmed with inner runs of spaces
//! collapsed, repeated headers joined with `,`), the signed header list and the hex SHA-256
//! of the body (which `X-Amz-Content-Sha256`, when sent, must equal). The path is not
//! normalized (`.`/`..` segments, as S3 also does not): ECR's API is `POST /`.
//!
//! Pure: the caller passes the headers, the body, the secret and the time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::hmac;

use crate::credentials::constant_time_eq;

/// The one algorithm of Signature Version 4 that the SDKs use.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far a request's time may be from the server's, either way (AWS's 15 minutes).
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// The longest `Authorization` value read: a credential, a few dozen signed header names
/// and a signature fit in well under this.
pub const MAX_AUTHORIZATION: usize = 4096;
/// The most signed headers a request may list.
pub const MAX_SIGNED_HEADERS: usize = 64;
/// The longest access key id, region or service name in a credential scope.
const MAX_SCOPE_PART: usize = 128;

/// Why a request's signature is refused. Each kind is an answer AWS gives; the message
/// (`Display`) says what is wrong in the client's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// The `Authorization` header is not a well-formed Signature Version 4 value, or a
    /// header the signature needs is missing (AWS: `IncompleteSignatureException`).
    #[error("{0}")]
    Incomplete(String),
    /// The request's time is more than [`MAX_SKEW`] before the server's.
    #[error("Signature expired: {request} is now earlier than {earliest} ({now} - 15 min.)")]
    Expired { request: String, earliest: String, now: String },
    /// The request's time is more than [`MAX_SKEW`] after the server's.
    #[error("Signature not yet current: {request} is still later than {latest} ({now} + 15 min.)")]
    NotYetCurrent { request: String, latest: String, now: String },
    /// The credential scope's date is not the request's date.
    #[error(
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: \
         '{scope}' != '{date}', from '{amz_date}'."
    )]
    ScopeDate { scope: String, date: String, amz_date: String },
    /// The credential scope names another region.
    #[error("Credential should be scoped to a valid region, not '{given}'. This registry's region is '{expected}'.")]
    Region { given: String, expected: String },
    /// The credential scope names another service.
    #[error("Credential should be scoped to correct service: '{expected}'. ")]
    Service { given: String, expected: String },
    /// `X-Amz-Content-Sha256` is not the SHA-256 of the body received.
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    ContentSha256,
    /// The signature is not the one the key's secret makes over this request.
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS \
         Secret Access Key and signing method. Consult the service documentation for details.\n\n\
         The Canonical String for this request should have been\n'{canonical_request}'\n\n\
         The String-to-Sign should have been\n'{string_to_sign}'\n"
    )]
    Mismatch { canonical_request: String, string_to_sign: String },
}

fn incomplete(message: impl Into<String>) -> SigV4Error {
    SigV4Error::Incomplete(message.into())
}

/// A parsed `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The access key that signed (not secret).
    pub access_key_id: String,
    /// The scope's date, `yyyymmdd`.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lowercase header names, in the order sent (AWS requires them sorted; the canonical
    /// request lists them as sent, so a client that did not sort fails the comparison).
    pub signed_headers: Vec<String>,
    /// The 32 bytes of the signature (sent as 64 hex digits).
    pub signature: [u8; 32],
}

/// Whether an `Authorization` value claims to be a Signature Version 4 one (whatever its shape).
pub fn is_sigv4(value: &str) -> bool {
    value.trim_start().starts_with(ALGORITHM)
}

impl Authorization {
    /// Parses the header value. Sizes are bounded: a value over [`MAX_AUTHORIZATION`] bytes,
    /// more than [`MAX_SIGNED_HEADERS`] signed headers, or over-long scope parts are refused.
    pub fn parse(value: &str) -> Result<Authorization, SigV4Error> {
        if value.len() > MAX_AUTHORIZATION {
            return Err(incomplete(format!("the Authorization header must be at most {MAX_AUTHORIZATION} bytes")));
        }
        let rest = value
            .trim()
            .strip_prefix(ALGORITHM)
            .filter(|r| r.starts_with(' '))
            .ok_or_else(|| incomplete(format!("Authorization header: the algorithm must be {ALGORITHM}")))?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let Some((k, v)) = part.split_once('=') else {
                return Err(incomplete(format!("Authorization header: '{}' is not a key=value pair", printable(part))));
            };
            let slot = match k.trim() {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed,
                "Signature" => &mut signature,
                // Other parameters are not part of Signature Version 4; ignore none silently.
                other => {
                    return Err(incomplete(format!(
                        "Authorization header: unknown parameter '{}' (expected Credential, SignedHeaders, Signature)",
                        printable(other)
                    )));
                }
            };
            if slot.replace(v.trim()).is_some() {
                return Err(incomplete(format!("Authorization header: '{}' is given twice", k.trim())));
            }
        }
        fn required<'v>(v: Option<&'v str>, name: &str) -> Result<&'v str, SigV4Error> {
            v.filter(|v| !v.is_empty())
                .ok_or_else(|| incomplete(format!("Authorization header requires '{name}' parameter.")))
        }
        let (credential, signed, signature) = (
            required(credential, "Credential")?,
            required(signed, "SignedHeaders")?,
            required(signature, "Signature")?,
        );

        let parts: Vec<&str> = credential.split('/').collect();
        let [access_key_id, date, region, service, terminator] = parts[..] else {
            return Err(incomplete(format!(
                "Credential must have the form <access key id>/<yyyymmdd>/<region>/<service>/aws4_request, not '{}'",
                printable(credential)
            )));
        };
        let token = |s: &str| {
            !s.is_empty()
                && s.len() <= MAX_SCOPE_PART
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        if terminator != "aws4_request" {
            return Err(incomplete("Credential should be scoped with a valid terminator: 'aws4_request'"));
        }
        if !token(access_key_id) || !token(region) || !token(service) {
            return Err(incomplete(format!("Credential '{}' has an empty or invalid part", printable(credential))));
        }
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(incomplete(format!("Credential's date must be yyyymmdd, not '{}'", printable(date))));
        }

        let signed_headers: Vec<String> = signed.split(';').map(str::to_owned).collect();
        if signed_headers.len() > MAX_SIGNED_HEADERS {
            return Err(incomplete(format!("SignedHeaders may list at most {MAX_SIGNED_HEADERS} headers")));
        }
        if signed_headers.iter().any(|h| {
            h.is_empty() || !h.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        }) {
            return Err(incomplete(format!(
                "SignedHeaders must be lowercase header names separated by ';', not '{}'",
                printable(signed)
            )));
        }

        let mut sig = [0u8; 32];
        if signature.len() != 64 || hex::decode_to_slice(signature, &mut sig).is_err() {
            return Err(incomplete("Signature must be 64 hexadecimal digits"));
        }
        Ok(Authorization {
            access_key_id: access_key_id.to_owned(),
            date: date.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
            signed_headers,
            signature: sig,
        })
    }

    /// `<date>/<region>/<service>/aws4_request`.
    pub fn scope(&self) -> String {
        format!("{}/{}/{}/aws4_request", self.date, self.region, self.service)
    }

    fn signs(&self, name: &str) -> bool {
        self.signed_headers.iter().any(|h| h == name)
    }

    /// The checks that need no secret and no body: `host` and the date header are signed,
    /// the scope's date is the request's, the scope's region and service are `region` and
    /// `service`, and the request's time is within [`MAX_SKEW`] of `now`. Returns the
    /// request's time as `X-Amz-Date` writes it (`yyyymmddThhmmssZ`), which
    /// [`Authorization::verify`] signs with.
    pub fn check_headers(
        &self,
        headers: &[(&str, &str)],
        region: &str,
        service: &str,
        now: SystemTime,
    ) -> Result<String, SigV4Error> {
        let amz_date = request_time(headers)?;
        if !self.signs("host") {
            return Err(incomplete("'Host' must be a signed header"));
        }
        let date_header = if header(headers, "x-amz-date").is_some() { "x-amz-date" } else { "date" };
        if !self.signs(date_header) {
            return Err(incomplete(format!("'{date_header}' must be a signed header")));
        }
        if self.date != amz_date[..8] {
            return Err(SigV4Error::ScopeDate {
                scope: self.date.clone(),
                date: amz_date[..8].to_owned(),
                amz_date: amz_date.clone(),
            });
        }
        if self.service != service {
            return Err(SigV4Error::Service { given: self.service.clone(), expected: service.to_owned() });
        }
        if self.region != region {
            return Err(SigV4Error::Region { given: self.region.clone(), expected: region.to_owned() });
        }
        let t = parse_amz_date(&amz_date).ok_or_else(|| incomplete("X-Amz-Date is not a date"))?;
        if t + MAX_SKEW < now {
            return Err(SigV4Error::Expired {
                request: amz_date,
                earliest: format_amz_date(now - MAX_SKEW),
                now: format_amz_date(now),
            });
        }
        if t > now + MAX_SKEW {
            return Err(SigV4Error::NotYetCurrent {
                request: amz_date,
                latest: format_amz_date(now + MAX_SKEW),
                now: format_amz_date(now),
            });
        }
        Ok(amz_date)
    }

    /// Recomputes the signature over `request` with `secret` and compares it with the one
    /// sent, in constant time. `amz_date` is [`Authorization::check_headers`]'s answer.
    pub fn verify(&self, request: &Request<'_>, amz_date: &str, secret: &str) -> Result<(), SigV4Error> {
        let payload = hex::encode(digest(&SHA256, request.body));
        // S3's `UNSIGNED-PAYLOAD` and streaming forms do not apply: ECR's bodies are signed.
        if let Some(sent) = header(request.headers, "x-amz-content-sha256")
            && !sent.eq_ignore_ascii_case(&payload)
        {
            return Err(SigV4Error::ContentSha256);
        }
        let canonical_request = canonical_request(request, &self.signed_headers, &payload)?;
        let string_to_sign = string_to_sign(amz_date, &self.scope(), &canonical_request);
        let expected = signature(secret, &self.date, &self.region, &self.service, &string_to_sign);
        if constant_time_eq(&expected, &self.signature) {
            Ok(())
        } else {
            Err(SigV4Error::Mismatch { canonical_request, string_to_sign })
        }
    }
}

/// A request as signed: the method, the path and query as sent on the wire, every header
/// (name, value; repeated names appear once per value, in order) and the body.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// The value of header `name` (any case); repeated headers joined with `,`.
fn header(headers: &[(&str, &str)], name: &str) -> Option<String> {
    let mut values = headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim());
    let first = values.next()?;
    Some(values.fold(first.to_owned(), |mut acc, v| {
        acc.push(',');
        acc.push_str(v);
        acc
    }))
}

/// The request's time from `X-Amz-Date` (`yyyymmddThhmmssZ`), or else `Date` (an HTTP
/// date), as `yyyymmddThhmmssZ`.
fn request_time(headers: &[(&str, &str)]) -> Result<String, SigV4Error> {
    if let Some(v) = header(headers, "x-amz-date") {
        return parse_amz_date(&v)
            .map(|_| v.clone())
            .ok_or_else(|| incomplete(format!("X-Amz-Date must be yyyymmddThhmmssZ, not '{}'", printable(&v))));
    }
    if let Some(v) = header(headers, "date") {
        return parse_http_date(&v)
            .map(format_amz_date)
            .ok_or_else(|| incomplete(format!("Date is not an HTTP date: '{}'", printable(&v))));
    }
    Err(incomplete("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."))
}

/// `yyyymmddThhmmssZ` as a time.
pub fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    if !b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit) {
        return None;
    }
    let rfc3339 = format!("{}-{}-{}T{}:{}:{}Z", &s[..4], &s[4..6], &s[6..8], &s[9..11], &s[11..13], &s[13..15]);
    humantime::parse_rfc3339(&rfc3339).ok()
}

/// A time as `X-Amz-Date` writes it.
pub fn format_amz_date(t: SystemTime) -> String {
    // Before 1970 cannot be formatted; no request is that old.
    let t = t.max(UNIX_EPOCH);
    let s = humantime::format_rfc3339_seconds(t).to_string(); // 2015-08-30T12:36:00Z
    s.chars().filter(|c| *c != '-' && *c != ':').collect()
}

/// An IMF-fixdate (`Sun, 30 Aug 2015 12:36:00 GMT`), the `Date` header's form.
fn parse_http_date(s: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (_, rest) = s.trim().split_once(", ")?;
    let f: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = f[..] else { return None };
    let month = MONTHS.iter().position(|m| *m == month)? + 1;
    if day.len() != 2 || year.len() != 4 || time.len() != 8 {
        return None;
    }
    humantime::parse_rfc3339(&format!("{year}-{month:02}-{day}T{time}Z")).ok()
}

/// A header value as the canonical request writes it: trimmed, inner runs of spaces (and
/// tabs) collapsed to one space.
fn canonical_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for word in v.split([' ', '\t']).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// RFC 3986 percent-encoding of every byte but the unreserved ones (and `/` when
/// `keep_slash`), after decoding what the client already encoded: `/ሴ` and `/%E1%88%B4`
/// both give `/%E1%88%B4`.
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let decoded = percent_decode(s.as_bytes());
    let mut out = String::with_capacity(decoded.len() * 3);
    for b in decoded {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && i + 2 < s.len()
            && let (Some(hi), Some(lo)) = (hex_digit(s[i + 1]), hex_digit(s[i + 2]))
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

fn hex_digit(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// The canonical query string: each name and value URI-encoded, sorted by name then value.
fn canonical_query(query: Option<&str>) -> String {
    let Some(q) = query.filter(|q| !q.is_empty()) else { return String::new() };
    let mut pairs: Vec<(String, String)> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(k, false), uri_encode(v, false))
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// The canonical request over the headers of `signed` (as listed by the client). A signed
/// header the request lacks is refused (an `Incomplete` naming it).
pub fn canonical_request(request: &Request<'_>, signed: &[String], payload_hash: &str) -> Result<String, SigV4Error> {
    let path = if request.path.is_empty() { "/" } else { request.path };
    let mut out = format!("{}\n{}\n{}\n", request.method, uri_encode(path, true), canonical_query(request.query));
    for name in signed {
        let values: Vec<String> = request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| canonical_value(v))
            .collect();
        if values.is_empty() {
            return Err(incomplete(format!("'{name}' is a signed header, but the request has no such header")));
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    Ok(out)
}

/// `AWS4-HMAC-SHA256\n<amz_date>\n<scope>\n<hex sha256 of the canonical request>`.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", hex::encode(digest(&SHA256, canonical_request.as_bytes())))
}

/// The signature: HMAC-SHA256 of the string to sign under the signing key, itself the
/// chain HMAC("AWS4"+secret, date) → region → service → "aws4_request".
pub fn signature(secret: &str, date: &str, region: &str, service: &str, string_to_sign: &str) -> [u8; 32] {
    let mac = |key: &[u8], data: &[u8]| -> [u8; 32] {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    };
    let k_date = mac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = mac(&k_date, region.as_bytes());
    let k_service = mac(&k_region, service.as_bytes());
    let k_signing = mac(&k_service, b"aws4_request");
    mac(&k_signing, string_to_sign.as_bytes())
}

/// What a client adds to sign a request: the `X-Amz-Date` value and the `Authorization`
/// value. `request.headers` must already hold `host`; every header given is signed, and
/// `X-Amz-Date` (at `time`) is added to them.
pub fn sign(
    request: &Request<'_>,
    key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Signed {
    let amz_date = format_amz_date(time);
    let mut headers: Vec<(&str, &str)> = request.headers.to_vec();
    headers.push(("x-amz-date", &amz_date));
    let mut signed: Vec<String> = headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    signed.sort();
    signed.dedup();
    let payload = hex::encode(digest(&SHA256, request.body));
    let with_date = Request { headers: &headers, ..*request };
    // Every name in `signed` comes from `headers`, so the canonical request has them all.
    let canonical = canonical_request(&with_date, &signed, &payload).unwrap_or_default();
    let scope = format!("{}/{region}/{service}/aws4_request", &amz_date[..8]);
    let sts = string_to_sign(&amz_date, &scope, &canonical);
    let sig = hex::encode(signature(secret, &amz_date[..8], region, service, &sts));
    let authorization =
        format!("{ALGORITHM} Credential={key_id}/{scope}, SignedHeaders={}, Signature={sig}", signed.join(";"));
    Signed { amz_date, authorization }
}

/// Headers [`sign`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub amz_date: String,
    pub authorization: String,
}

/// Up to 64 printable characters of client text, for error messages.
fn printable(s: &str) -> String {
    s.chars().take(64).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}

#[cfg(test)]
mod tests;
