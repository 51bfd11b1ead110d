//! Errors: the JSON error envelope, the error codes the spec names for bad
//! input, and robustness (no 5xx, no hang on a TLS handshake sent to the
//! plain-HTTP port).

use std::time::Duration;

use reqwest::Method;
use reqwest::header;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::check::{CaseResult, Failure};
use crate::content::{self, OCI_INDEX, OCI_MANIFEST};
use crate::ctx::{Ctx, Resp, with_digest};
use crate::{ensure, fail};

/// Requires a 4xx answer; returns its status.
fn expect_4xx(resp: &Resp) -> CaseResult<u16> {
    ensure!(
        (400..500).contains(&resp.status),
        "{}: want a 4xx, got {} ({})",
        resp.what(),
        resp.status,
        resp.body_excerpt()
    );
    Ok(resp.status)
}

/// Every error of a set of ordinary mistakes comes as
/// `{"errors":[{"code":"…","message":"…"}]}`.
pub async fn errors_bodies_are_json_envelopes(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let image = ctx.push_image(&repo, Some("v1")).await?;
    let unknown = content::sha256(&ctx.bytes(64));
    let mut answers = vec![
        ctx.call(Method::GET, &format!("/v2/{repo}/blobs/{unknown}")).await?,
        ctx.call(Method::GET, &format!("/v2/{repo}/manifests/{unknown}")).await?,
        ctx.call(Method::GET, &format!("/v2/{repo}/manifests/nope")).await?,
        ctx.call(Method::GET, &format!("/v2/{}/tags/list", ctx.repo_with("none"))).await?,
        ctx.call(Method::GET, &format!("/v2/{repo}/blobs/uploads/{}", uuid::Uuid::new_v4())).await?,
        ctx.put_manifest(&repo, "bad", OCI_MANIFEST, b"{not json").await?,
        ctx.put_manifest(&repo, &unknown, OCI_MANIFEST, &image.manifest).await?,
    ];
    let session = ctx.start_upload(&repo).await?;
    answers.push(ctx.send(ctx.request(Method::PUT, with_digest(&session, &unknown)).body(ctx.bytes(10))).await?);
    let mut not_json_typed = Vec::new();
    for resp in &answers {
        expect_4xx(resp)?;
        resp.error_codes()?;
        let json_typed = resp.header("content-type").is_some_and(|t| t.starts_with("application/json"));
        if !json_typed {
            not_json_typed.push(resp.what());
        }
    }
    if !not_json_typed.is_empty() {
        ctx.note(format!("error bodies without Content-Type application/json: {}", not_json_typed.join(", ")));
    }
    Ok(())
}

/// Repository names outside the spec's grammar → 400 `NAME_INVALID`. A
/// registry whose router never matches such names answers 404 instead,
/// which the spec tolerates; the note says which.
pub async fn errors_invalid_repository_name_is_name_invalid(ctx: &Ctx) -> CaseResult {
    let ns = ctx.repo();
    let names = [format!("{ns}/UPPER"), format!("{ns}/double..dot"), format!("{ns}/-leading-dash")];
    let mut lenient = Vec::new();
    for name in &names {
        let resp = ctx
            .send(ctx.at(Method::POST, &format!("/v2/{name}/blobs/uploads/"))?.header(header::CONTENT_LENGTH, "0"))
            .await?;
        match resp.status {
            400 => resp.expect_error(400, "NAME_INVALID")?,
            404 => lenient.push(name.rsplit('/').next().unwrap_or(name).to_owned()),
            _ => {
                fail!("{}: want 400 NAME_INVALID (or 404), got {} ({})", resp.what(), resp.status, resp.body_excerpt())
            }
        }
    }
    if !lenient.is_empty() {
        ctx.note(format!("answered 404 instead of 400 for {}", lenient.join(", ")));
    }
    Ok(())
}

/// A malformed `digest` query parameter → 400 `DIGEST_INVALID`.
pub async fn errors_malformed_digest_is_400_digest_invalid(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    for bad in ["sha256:not-a-digest", "sha256:abc", "nonsense"] {
        let session = ctx.start_upload(&repo).await?;
        ctx.send(ctx.request(Method::PUT, with_digest(&session, bad)).body(ctx.bytes(10)))
            .await?
            .expect_error(400, "DIGEST_INVALID")
            .map_err(|f| f.context(&format!("digest={bad}")))?;
    }
    Ok(())
}

/// A malformed digest in a blob path (upper-case hex, which the digest
/// grammar forbids): a read of a blob that cannot exist → 404 `BLOB_UNKNOWN`, as for any
/// absent blob; 400 `DIGEST_INVALID` is tolerated and noted.
pub async fn errors_malformed_digest_in_path_is_rejected(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    ctx.push_blob(&repo, &ctx.bytes(10)).await?;
    let upper = content::sha256(&ctx.bytes(8)).to_ascii_uppercase().replace("SHA256", "sha256");
    let resp = ctx.call(Method::GET, &format!("/v2/{repo}/blobs/{upper}")).await?;
    match resp.status {
        404 => resp.expect_error(404, "BLOB_UNKNOWN"),
        400 => {
            resp.expect_error(400, "DIGEST_INVALID")?;
            ctx.note("answered 400 DIGEST_INVALID rather than 404 BLOB_UNKNOWN");
            Ok(())
        }
        _ => fail!("{}: want 404 BLOB_UNKNOWN (or 400), got {} ({})", resp.what(), resp.status, resp.body_excerpt()),
    }
}

/// An upload id the registry never issued → 404 `BLOB_UPLOAD_UNKNOWN` for
/// GET, PATCH, PUT and DELETE.
pub async fn errors_unknown_upload_is_404_blob_upload_unknown(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    ctx.push_blob(&repo, &ctx.bytes(10)).await?;
    let path = format!("/v2/{repo}/blobs/uploads/{}", uuid::Uuid::new_v4());
    let data = ctx.bytes(10);
    let digest = content::sha256(&data);
    let url = ctx.url(&path)?;
    let answers = [
        ctx.send(ctx.request(Method::GET, url.clone())).await?,
        ctx.send(
            ctx.request(Method::PATCH, url.clone())
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(data.clone()),
        )
        .await?,
        ctx.send(ctx.request(Method::PUT, with_digest(&url, &digest)).body(data)).await?,
        ctx.send(ctx.request(Method::DELETE, url)).await?,
    ];
    for resp in &answers {
        resp.expect_error(404, "BLOB_UPLOAD_UNKNOWN")?;
    }
    Ok(())
}

/// A page size `n` that is not a non-negative integer → 400.
pub async fn errors_bad_pagination_n_is_400(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    ctx.push_image(&repo, Some("v1")).await?;
    let mut codes = Vec::new();
    let mut wrong = Vec::new();
    for path in [
        format!("/v2/{repo}/tags/list?n=abc"),
        format!("/v2/{repo}/tags/list?n=-1"),
        "/v2/_catalog?n=abc".to_owned(),
        "/v2/_catalog?n=-1".to_owned(),
    ] {
        let resp = ctx.call(Method::GET, &path).await?;
        // Check every endpoint before failing, so the message lists all.
        match resp.expect(400).and_then(|r| r.error_codes()) {
            Ok(found) => codes.extend(found),
            Err(f) => wrong.push(f.to_string()),
        }
    }
    ensure!(wrong.is_empty(), "{}", wrong.join("; "));
    codes.sort();
    codes.dedup();
    ctx.note(format!("codes {}", codes.join(", ")));
    Ok(())
}

/// Odd but harmless requests get a 4xx (or, where noted, a success), never
/// a 5xx.
pub async fn errors_odd_requests_are_4xx_not_5xx(ctx: &Ctx) -> CaseResult {
    let repo = ctx.repo();
    let image = ctx.push_image(&repo, Some("v1")).await?;
    let index_body = content::to_bytes(&content::index(OCI_INDEX, &[(OCI_MANIFEST, &image.manifest, "amd64")]));
    // Must be refused.
    let session = ctx.start_upload(&repo).await?;
    let refused = [
        ("PUT upload without digest", ctx.send(ctx.request(Method::PUT, session).body(ctx.bytes(5))).await?),
        ("PUT manifest with empty body", ctx.put_manifest(&repo, "empty", OCI_MANIFEST, b"").await?),
        ("PUT manifest with JSON null", ctx.put_manifest(&repo, "null", OCI_MANIFEST, b"null").await?),
        ("GET manifest with empty reference", ctx.call(Method::GET, &format!("/v2/{repo}/manifests/")).await?),
        (
            "PUT manifest with a 129-char tag",
            ctx.put_manifest(&repo, &"t".repeat(129), OCI_MANIFEST, &image.manifest).await?,
        ),
        ("GET upload without id", ctx.call(Method::GET, &format!("/v2/{repo}/blobs/uploads/")).await?),
    ];
    for (what, resp) in &refused {
        expect_4xx(resp).map_err(|f| f.context(what))?;
    }
    // May be accepted or refused, but must not break the server.
    let mut mount = ctx.url(&format!("/v2/{repo}/blobs/uploads/"))?;
    mount.query_pairs_mut().append_pair("mount", "garbage").append_pair("from", &repo);
    let tolerated = [
        (
            "POST mount of a garbage digest",
            ctx.send(ctx.request(Method::POST, mount).header(header::CONTENT_LENGTH, "0")).await?,
        ),
        (
            "PUT index body under an image-manifest Content-Type",
            ctx.put_manifest(&repo, "mismatch", OCI_MANIFEST, &index_body).await?,
        ),
    ];
    for (what, resp) in &tolerated {
        if resp.status >= 500 {
            return Err(Failure::new(format!("{what}: {} answered {}", resp.what(), resp.status)));
        }
        ctx.note(format!("{what}: {}", resp.status));
    }
    Ok(())
}

/// Runs last: no request of the whole run was answered with a 5xx.
pub async fn errors_nothing_answered_5xx(ctx: &Ctx) -> CaseResult {
    let errors = ctx.server_errors();
    if errors.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = errors.iter().take(5).map(String::as_str).collect();
    fail!("{} answers were 5xx: {}", errors.len(), shown.join("; "))
}

/// The first bytes of a TLS 1.2/1.3 ClientHello: record header, handshake
/// header, version, random, session id, two cipher suites, null
/// compression, no extensions. The random and session id avoid `\r` and
/// `\n`, so an HTTP parser cannot see a complete line in it by luck: the
/// server has to notice the handshake byte itself or time out.
pub(crate) fn client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend([0x42; 32]); // random
    body.push(32);
    body.extend([0x43; 32]); // session id
    body.extend([0x00, 0x04, 0x13, 0x01, 0x13, 0x02]); // cipher suites
    body.extend([0x01, 0x00]); // compression methods: null
    body.extend([0x00, 0x00]); // extensions: none
    let mut handshake = vec![0x01, 0x00, 0x00, body.len() as u8];
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend(handshake);
    record
}

/// A TLS ClientHello sent to the plain-HTTP port (a client configured for
/// https by mistake) is answered or the connection closed within 2 s,
/// instead of the server waiting for a request line forever.
pub async fn tls_probe_on_plain_http_is_answered_fast(ctx: &Ctx) -> CaseResult {
    const LIMIT: Duration = Duration::from_secs(2);
    let base = ctx.base();
    let Some(host) = base.host_str() else {
        fail!("the registry URL {base} has no host");
    };
    let Some(port) = base.port_or_known_default() else {
        fail!("the registry URL {base} has no port");
    };
    let address = format!("{host}:{port}");
    let mut stream = match tokio::time::timeout(LIMIT, TcpStream::connect(&address)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => fail!("cannot connect to {address}: {e}"),
        Err(_) => fail!("connecting to {address} took more than 2 s"),
    };
    stream.write_all(&client_hello()).await?;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(LIMIT, stream.read(&mut buf)).await {
        Ok(Ok(0)) => ctx.note("closed the connection"),
        Ok(Ok(n)) => {
            let head = String::from_utf8_lossy(&buf[..n]);
            let first = head.lines().next().unwrap_or_default().to_owned();
            ctx.note(format!("answered {first:?}"));
        }
        Ok(Err(e)) => ctx.note(format!("reset the connection ({e})")),
        Err(_) => fail!("no answer and no close within 2 s of a TLS ClientHello"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::client_hello;

    #[test]
    fn client_hello_is_a_tls_record_without_line_breaks() {
        let hello = client_hello();
        assert_eq!(&hello[..3], &[0x16, 0x03, 0x01]);
        assert_eq!(usize::from(hello[4]) + 5, hello.len());
        assert_eq!(hello[5], 0x01, "handshake type ClientHello");
        assert!(!hello.contains(&b'\n') && !hello.contains(&b'\r'));
    }
}
