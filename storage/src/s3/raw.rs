//! The S3 requests object_store does not expose, signed with its SigV4 signer and the same
//! credential provider: multipart uploads driven part by part, ranged server-side copies,
//! conditional completion, abort, and the listing of unfinished uploads.

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use object_store::aws::{AwsAuthorizer, AwsCredentialProvider};
use object_store::client::{HttpClient, HttpRequestBody};
use object_store::path::Path;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Attempts for one request when S3 answers 5xx/429 or the connection fails.
const ATTEMPTS: u32 = 4;

/// A part accepted into a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    pub number: u32,
    pub etag: String,
}

/// How a conditional completion ended. Either way the object now exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completed {
    /// Our parts became the object.
    Created,
    /// An object was already at the key (create-if-absent); our upload was aborted.
    AlreadyExists,
}

/// A multipart upload that was started and neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// The key, relative to the prefix.
    pub path: Path,
    pub upload_id: String,
    /// When it was started, in unix seconds.
    pub initiated: i64,
}

/// Signed requests to one bucket.
#[derive(Debug)]
pub struct RawS3 {
    client: HttpClient,
    credentials: AwsCredentialProvider,
    region: String,
    bucket: String,
    /// `https://bucket.s3.region.amazonaws.com`, or `<endpoint>/<bucket>` path-style.
    endpoint: String,
    prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InitiateResult {
    upload_id: String,
}

#[derive(Deserialize)]
struct CopyPartResult {
    #[serde(rename = "ETag")]
    etag: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListUploadsResult {
    #[serde(default, rename = "Upload")]
    uploads: Vec<ListedUpload>,
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedUpload {
    key: String,
    upload_id: String,
    initiated: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody {
    code: String,
    #[serde(default)]
    message: String,
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Escapes text for an XML element.
fn xml_text(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Unix seconds of an S3 timestamp such as `2026-11-21T10:00:00.000Z`.
fn unix_seconds(stamp: &str) -> Option<i64> {
    let num = |r: Range<usize>| stamp.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// What went wrong, from an S3 error body when there is one.
fn describe(status: StatusCode, body: &[u8]) -> String {
    match quick_xml::de::from_str::<ErrorBody>(&String::from_utf8_lossy(body)) {
        Ok(e) => format!("{status} {}: {}", e.code, e.message),
        Err(_) => format!("{status}"),
    }
}

fn error_code(body: &[u8]) -> Option<String> {
    quick_xml::de::from_str::<ErrorBody>(&String::from_utf8_lossy(body)).ok().map(|e| e.code)
}

impl RawS3 {
    pub fn new(
        client: HttpClient,
        credentials: AwsCredentialProvider,
        region: String,
        bucket: String,
        endpoint: String,
        prefix: Option<String>,
    ) -> RawS3 {
        RawS3 { client, credentials, region, bucket, endpoint, prefix }
    }

    /// The full key of `path` in the bucket. Paths come from [`crate::layout`] and the prefix
    /// is checked, so neither needs escaping.
    fn key(&self, path: &Path) -> String {
        match &self.prefix {
            Some(p) => format!("{p}/{path}"),
            None => path.to_string(),
        }
    }

    fn url(&self, key: &str, query: &[(&str, &str)]) -> String {
        let query: Vec<String> = query.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
        format!("{}/{key}?{}", self.endpoint, query.join("&"))
    }

    /// Signs and sends one request, retrying what S3 asks to retry. Returns the answer
    /// whatever its status; transport failures after the last attempt are errors.
    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes)> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let credential = self.credentials.get_credential().await?;
            let mut builder = http::Request::builder().method(method.clone()).uri(url);
            for (name, value) in headers {
                builder = builder.header(*name, value);
            }
            let mut request = builder
                .body(HttpRequestBody::from(body.clone()))
                .map_err(|e| Error::S3(format!("cannot build a request to {url}: {e}")))?;
            AwsAuthorizer::new(&credential, "s3", &self.region).try_authorize(&mut request, None)?;
            let outcome = match self.client.execute(request).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    match body.bytes().await {
                        Ok(bytes) => Ok((parts.status, parts.headers, bytes)),
                        Err(e) => Err(format!("{method} {url}: reading the answer: {e}")),
                    }
                }
                Err(e) => Err(format!("{method} {url}: {e}")),
            };
            let retry = match &outcome {
                Ok((status, _, _)) => status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS,
                Err(_) => true,
            };
            if !retry || attempt >= ATTEMPTS {
                return outcome.map_err(Error::S3);
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
    }

    /// Starts a multipart upload to `path`; returns its upload id.
    pub async fn create_multipart(&self, path: &Path) -> Result<String> {
        let url = self.url(&self.key(path), &[("uploads", "")]);
        let (status, _, body) = self.send(Method::POST, &url, &[], Bytes::new()).await?;
        if !status.is_success() {
            return Err(Error::S3(format!("CreateMultipartUpload {path}: {}", describe(status, &body))));
        }
        let result: InitiateResult = quick_xml::de::from_str(&String::from_utf8_lossy(&body))
            .map_err(|e| Error::S3(format!("CreateMultipartUpload {path}: unreadable answer: {e}")))?;
        Ok(result.upload_id)
    }

    /// Uploads part `number` (1-based) of `upload_id`.
    pub async fn upload_part(&self, path: &Path, upload_id: &str, number: u32, data: Bytes) -> Result<CompletedPart> {
        let n = number.to_string();
        let url = self.url(&self.key(path), &[("partNumber", &n), ("uploadId", upload_id)]);
        let (status, headers, body) = self.send(Method::PUT, &url, &[], data).await?;
        if !status.is_success() {
            return Err(Error::S3(format!("UploadPart {path} #{number}: {}", describe(status, &body))));
        }
        let etag = headers
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::S3(format!("UploadPart {path} #{number}: no ETag in the answer")))?;
        Ok(CompletedPart { number, etag: etag.to_owned() })
    }

    /// Makes bytes `range` of `source` part `number` of `upload_id`, server-side.
    pub async fn upload_part_copy(
        &self,
        path: &Path,
        upload_id: &str,
        number: u32,
        source: &Path,
        range: Range<u64>,
    ) -> Result<CompletedPart> {
        let n = number.to_string();
        let url = self.url(&self.key(path), &[("partNumber", &n), ("uploadId", upload_id)]);
        let headers = [
            ("x-amz-copy-source", format!("/{}/{}", self.bucket, self.key(source))),
            ("x-amz-copy-source-range", format!("bytes={}-{}", range.start, range.end - 1)),
        ];
        let (status, _, body) = self.send(Method::PUT, &url, &headers, Bytes::new()).await?;
        let text = String::from_utf8_lossy(&body);
        // S3 may answer 200 and put the error in the body.
        if !status.is_success() || text.contains("<Error>") {
            return Err(Error::S3(format!(
                "UploadPartCopy {path} #{number} from {source}: {}",
                describe(status, &body)
            )));
        }
        let result: CopyPartResult = quick_xml::de::from_str(&text)
            .map_err(|e| Error::S3(format!("UploadPartCopy {path} #{number}: unreadable answer: {e}")))?;
        Ok(CompletedPart { number, etag: result.etag })
    }

    /// Completes `upload_id` from `parts` (in order). With `if_absent`, an object already at
    /// `path` wins: the upload is aborted and [`Completed::AlreadyExists`] returned.
    pub async fn complete(
        &self,
        path: &Path,
        upload_id: &str,
        parts: &[CompletedPart],
        if_absent: bool,
    ) -> Result<Completed> {
        let url = self.url(&self.key(path), &[("uploadId", upload_id)]);
        let mut xml = String::from("<CompleteMultipartUpload>");
        for p in parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                p.number,
                xml_text(&p.etag)
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let headers: Vec<(&str, String)> = if if_absent { vec![("if-none-match", "*".into())] } else { vec![] };
        let (status, _, body) = self.send(Method::POST, &url, &headers, Bytes::from(xml)).await?;
        let text = String::from_utf8_lossy(&body);
        if status.is_success() && !text.contains("<Error>") {
            return Ok(Completed::Created);
        }
        let code = error_code(&body).unwrap_or_default();
        let taken = if_absent && (status == StatusCode::PRECONDITION_FAILED || code == "PreconditionFailed");
        // Otherwise, did an object land at the key anyway? A 409 means a conflicting
        // conditional write went on at the same time and may have won. An attempt whose
        // answer was lost may have gone through (S3 then says NoSuchUpload to the retry; some
        // servers answer 500): the key is ours (staging keys are unique) or holds the same
        // content (blob keys are content addresses), so it is done either way.
        if taken || self.exists(path).await? {
            if taken || status == StatusCode::CONFLICT {
                if let Err(e) = self.abort(path, upload_id).await {
                    tracing::warn!(key = %path, error = %e, "could not abort a multipart upload that lost to an existing object");
                }
                return Ok(Completed::AlreadyExists);
            }
            return Ok(Completed::Created);
        }
        Err(Error::S3(format!("CompleteMultipartUpload {path}: {}", describe(status, &body))))
    }

    async fn exists(&self, path: &Path) -> Result<bool> {
        let url = format!("{}/{}", self.endpoint, self.key(path));
        let (status, _, body) = self.send(Method::HEAD, &url, &[], Bytes::new()).await?;
        match status {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(Error::S3(format!("HeadObject {path}: {}", describe(s, &body)))),
        }
    }

    /// Aborts `upload_id`, dropping its parts. An upload already gone is fine.
    pub async fn abort(&self, path: &Path, upload_id: &str) -> Result<()> {
        let url = self.url(&self.key(path), &[("uploadId", upload_id)]);
        let (status, _, body) = self.send(Method::DELETE, &url, &[], Bytes::new()).await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(Error::S3(format!("AbortMultipartUpload {path}: {}", describe(status, &body))))
    }

    /// Every unfinished multipart upload whose key starts with `under`.
    pub async fn list_multipart(&self, under: &Path) -> Result<Vec<PendingUpload>> {
        let prefix = format!("{}/", self.key(under));
        let strip = self.prefix.as_ref().map(|p| format!("{p}/"));
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (String::new(), String::new());
        loop {
            let mut query = vec![("uploads", ""), ("prefix", prefix.as_str())];
            if !key_marker.is_empty() {
                query.push(("key-marker", &key_marker));
                query.push(("upload-id-marker", &id_marker));
            }
            let url = self.url("", &query);
            let (status, _, body) = self.send(Method::GET, &url, &[], Bytes::new()).await?;
            if !status.is_success() {
                return Err(Error::S3(format!("ListMultipartUploads {prefix}: {}", describe(status, &body))));
            }
            let page: ListUploadsResult = quick_xml::de::from_str(&String::from_utf8_lossy(&body))
                .map_err(|e| Error::S3(format!("ListMultipartUploads {prefix}: unreadable answer: {e}")))?;
            for up in page.uploads {
                let key = match &strip {
                    Some(s) => up.key.strip_prefix(s.as_str()).unwrap_or(&up.key).to_owned(),
                    None => up.key,
                };
                let initiated = unix_seconds(&up.initiated).unwrap_or(0);
                out.push(PendingUpload { path: Path::from(key), upload_id: up.upload_id, initiated });
            }
            match (page.is_truncated, page.next_key_marker, page.next_upload_id_marker) {
                (true, Some(k), Some(i)) if k != key_marker || i != id_marker => (key_marker, id_marker) = (k, i),
                _ => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(unix_seconds("2026-11-21T10:00:05.000Z"), Some(1_795_255_205));
        assert_eq!(unix_seconds("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(unix_seconds("garbage"), None);
    }

    #[test]
    fn encoding() {
        assert_eq!(encode("a+b/c=~"), "a%2Bb%2Fc%3D~");
        assert_eq!(xml_text("\"a&b\""), "\"a&amp;b\"");
    }

    #[test]
    fn answers_parse() {
        let init: InitiateResult = quick_xml::de::from_str(
            "<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>u-1</UploadId></InitiateMultipartUploadResult>",
        )
        .unwrap();
        assert_eq!(init.upload_id, "u-1");
        let copy: CopyPartResult = quick_xml::de::from_str(
            "<CopyPartResult><LastModified>2026-11-21T10:00:00.000Z</LastModified><ETag>\"abc\"</ETag></CopyPartResult>",
        )
        .unwrap();
        assert_eq!(copy.etag, "\"abc\"");
        let list: ListUploadsResult = quick_xml::de::from_str(
            "<ListMultipartUploadsResult><Bucket>b</Bucket><IsTruncated>true</IsTruncated>\
             <NextKeyMarker>k2</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>\
             <Upload><Key>k1</Key><UploadId>u1</UploadId><Initiated>1970-01-01T00:01:00.000Z</Initiated></Upload>\
             <Upload><Key>k2</Key><UploadId>u2</UploadId><Initiated>1970-01-01T00:02:00.000Z</Initiated></Upload>\
             </ListMultipartUploadsResult>",
        )
        .unwrap();
        assert_eq!(list.uploads.len(), 2);
        assert!(list.is_truncated);
        assert_eq!(list.next_key_marker.as_deref(), Some("k2"));
        let empty: ListUploadsResult =
            quick_xml::de::from_str("<ListMultipartUploadsResult><Bucket>b</Bucket></ListMultipartUploadsResult>")
                .unwrap();
        assert!(empty.uploads.is_empty() && !empty.is_truncated);
        assert_eq!(
            describe(
                StatusCode::PRECONDITION_FAILED,
                b"<Error><Code>PreconditionFailed</Code><Message>m</Message></Error>"
            ),
            "412 Precondition Failed PreconditionFailed: m"
        );
    }
}
