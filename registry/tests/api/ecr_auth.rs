//! ECR's API with authentication on: Signature Version 4 (what is accepted, every refusal
//! and its AWS error name), revocation of keys and users, keys created before secrets were
//! sealed, the sign-in throttle, and GetAuthorizationToken's login token on `/v2/`.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::ecr_common::*;

const GAT: &str = "GetAuthorizationToken";

fn kind(v: &Value) -> &str {
    v["__type"].as_str().unwrap_or("")
}

fn message(v: &Value) -> &str {
    v["message"].as_str().unwrap_or("")
}

/// The status of `GET /v2/` with `authorization`.
async fn v2_status(ecr: &EcrClient, authorization: &str) -> u16 {
    let r = ecr.client.get(format!("{}/v2/", ecr.url)).header("authorization", authorization).send().await.unwrap();
    r.status().as_u16()
}

/// The `docker login -u AWS` password of a GetAuthorizationToken answer.
fn login_password(answer: &Value) -> String {
    let data = &answer["authorizationData"][0];
    let decoded =
        base64::engine::general_purpose::STANDARD.decode(data["authorizationToken"].as_str().unwrap()).unwrap();
    String::from_utf8(decoded).unwrap().strip_prefix("AWS:").expect("AWS:<token>").to_owned()
}

#[tokio::test]
async fn signed_get_authorization_token_logs_docker_in() {
    let (t, ecr) = start().await;
    let before = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
    let (status, v) = ecr.call(GAT, &json!({})).await;
    assert_eq!(status, 200, "{v}");
    let data = v["authorizationData"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["proxyEndpoint"], ecr.url);
    // Valid 12 hours, as ECR's; a number of epoch seconds as botocore reads it.
    let expires = data[0]["expiresAt"].as_f64().unwrap();
    assert!((expires - before - 12.0 * 3600.0).abs() < 60.0, "{expires} vs {before}");
    let password = login_password(&v);
    assert_eq!(v2_status(&ecr, &basic("AWS", &password)).await, 200);
    assert_eq!(v2_status(&ecr, &basic("AWS", &format!("{password}x"))).await, 401);

    // registryIds: this registry's id only, 1 to 10 of them.
    let (status, _) = ecr.call(GAT, &json!({"registryIds": ["000000000000"]})).await;
    assert_eq!(status, 200);
    let eleven = vec!["000000000000"; 11];
    for bad in [json!({"registryIds": ["123456789012"]}), json!({"registryIds": []}), json!({"registryIds": eleven})] {
        let (status, v) = ecr.call(GAT, &bad).await;
        assert_eq!((status, kind(&v)), (400, "InvalidParameterException"), "{bad}: {v}");
    }

    // A user without ecr:GetAuthorizationToken is denied; with it, served.
    let nobody = ecr.for_user("nobody", None).await;
    let (status, v) = nobody.call(GAT, &json!({})).await;
    assert_eq!((status, kind(&v)), (403, "AccessDeniedException"), "{v}");
    let allow = json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecr:GetAuthorizationToken","Resource":"*"}]});
    let ci = ecr.for_user("ci", Some(allow)).await;
    let (status, v) = ci.call(GAT, &json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v2_status(&ecr, &basic("AWS", &login_password(&v))).await, 200);
    t.server.stop().await;
}

#[tokio::test]
async fn refusals_have_aws_error_names() {
    let (t, ecr) = start().await;
    let input = json!({});

    // No Authorization at all.
    let (status, v) = ecr.send(ecr.request(GAT, &input)).await;
    assert_eq!((status, kind(&v)), (403, "MissingAuthenticationTokenException"), "{v}");

    // Basic and Bearer credentials: ECR's API takes Signature Version 4.
    for authorization in [basic("admin", ADMIN_PW), "Bearer abc".to_owned()] {
        let mut req = ecr.request(GAT, &input);
        req.headers_mut().insert("authorization", authorization.parse().unwrap());
        let (status, v) = ecr.send(req).await;
        assert_eq!((status, kind(&v)), (400, "IncompleteSignatureException"), "{v}");
        assert!(message(&v).contains("Signature Version 4"), "{v}");
    }

    // Malformed: no signature.
    let mut req = ecr.request(GAT, &input);
    req.headers_mut().insert(
        "authorization",
        format!("AWS4-HMAC-SHA256 Credential={}/20261204/local/ecr/aws4_request, SignedHeaders=host", ecr.key_id)
            .parse()
            .unwrap(),
    );
    let (status, v) = ecr.send(req).await;
    assert_eq!((status, kind(&v)), (400, "IncompleteSignatureException"), "{v}");

    // Wrong secret.
    let wrong = EcrClient { secret: format!("{}x", ecr.secret), ..ecr.clone() };
    let (status, v) = wrong.call(GAT, &input).await;
    assert_eq!((status, kind(&v)), (403, "InvalidSignatureException"), "{v}");
    assert!(message(&v).starts_with("The request signature we calculated does not match"), "{v}");

    // Unknown key.
    let unknown = EcrClient { key_id: "BKIAAAAAAAAAAAAAAAAA".into(), ..ecr.clone() };
    let (status, v) = unknown.call(GAT, &input).await;
    assert_eq!((status, kind(&v)), (403, "UnrecognizedClientException"), "{v}");
    assert_eq!(message(&v), "The security token included in the request is invalid.");

    // Altered body, altered signed header, replay with another body.
    let mut req = ecr.request(GAT, &input);
    sign(&mut req, &ecr.key_id, &ecr.secret, REGION);
    *req.body_mut() = Some(json!({"registryIds": ["000000000000"]}).to_string().into());
    let (status, v) = ecr.send(req).await;
    assert_eq!((status, kind(&v)), (403, "InvalidSignatureException"), "altered body: {v}");

    let mut req = ecr.request(GAT, &input);
    sign(&mut req, &ecr.key_id, &ecr.secret, REGION);
    req.headers_mut().insert("content-type", "application/x-amz-json-1.0".parse().unwrap());
    let (status, v) = ecr.send(req).await;
    assert_eq!((status, kind(&v)), (403, "InvalidSignatureException"), "altered header: {v}");

    let mut signed = ecr.request(GAT, &input);
    sign(&mut signed, &ecr.key_id, &ecr.secret, REGION);
    let replay = |body: String| {
        let mut r = ecr.request(GAT, &input);
        for name in ["host", "x-amz-date", "authorization"] {
            r.headers_mut().insert(name, signed.headers()[name].clone());
        }
        *r.body_mut() = Some(body.into());
        r
    };
    // The same request again is the same signature (as AWS, within the skew allowed) ...
    let (status, v) = ecr.send(replay(input.to_string())).await;
    assert_eq!(status, 200, "{v}");
    // ... but its headers do not sign another body.
    let (status, v) = ecr.send(replay(json!({"registryIds": ["000000000000"]}).to_string())).await;
    assert_eq!((status, kind(&v)), (403, "InvalidSignatureException"), "replayed with another body: {v}");

    // Clock skew both ways: 16 minutes off is refused with AWS's sentence; 10 is fine.
    let now = SystemTime::now();
    for (time, prefix) in [
        (now - Duration::from_secs(16 * 60), "Signature expired: "),
        (now + Duration::from_secs(16 * 60), "Signature not yet current: "),
    ] {
        let mut req = ecr.request(GAT, &input);
        sign_at(&mut req, &ecr.key_id, &ecr.secret, REGION, time);
        let (status, v) = ecr.send(req).await;
        assert_eq!((status, kind(&v)), (403, "InvalidSignatureException"), "{v}");
        assert!(message(&v).starts_with(prefix), "{v}");
    }
    let mut req = ecr.request(GAT, &input);
    sign_at(&mut req, &ecr.key_id, &ecr.secret, REGION, now - Duration::from_secs(10 * 60));
    assert_eq!(ecr.send(req).await.0, 200);

    // Another region.
    let mut req = ecr.request(GAT, &input);
    sign(&mut req, &ecr.key_id, &ecr.secret, "us-east-1");
    let (status, v) = ecr.send(req).await;
    assert_eq!((status, kind(&v)), (403, "InvalidSignatureException"), "{v}");
    assert!(message(&v).starts_with("Credential should be scoped to a valid region, not 'us-east-1'."), "{v}");
    assert!(message(&v).contains("'local'"), "names the registry's region: {v}");

    // None of these refusals stopped the key.
    assert_eq!(ecr.call(GAT, &input).await.0, 200);
    t.server.stop().await;
}

#[tokio::test]
async fn disabled_or_deleted_keys_and_users_are_refused_with_their_tokens() {
    let (t, ecr) = start().await;
    let all = json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecr:*","Resource":"*"}]});
    let ci = ecr.for_user("ci", Some(all)).await;
    let admin = |m: reqwest::Method, path: &str, body: Option<Value>| {
        let mut r = ecr
            .client
            .request(m, format!("{}/api/v1/{path}", ecr.url))
            .header("authorization", basic("admin", ADMIN_PW));
        if let Some(b) = body {
            r = r.body(b.to_string());
        }
        r.send()
    };
    let refused = |v: &Value| kind(v) == "UnrecognizedClientException";

    // The key disabled: refused, and its login token with it; enabled again: signs again.
    let (status, v) = ci.call(GAT, &json!({})).await;
    assert_eq!(status, 200);
    let password = login_password(&v);
    assert_eq!(v2_status(&ci, &basic("AWS", &password)).await, 200);
    let r = admin(reqwest::Method::PATCH, &format!("access-keys/{}", ci.key_id), Some(json!({"disabled": true})))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let (status, v) = ci.call(GAT, &json!({})).await;
    assert!(status == 403 && refused(&v), "disabled key: {v}");
    assert_eq!(v2_status(&ci, &basic("AWS", &password)).await, 401, "its login token is revoked");
    let r = admin(reqwest::Method::PATCH, &format!("access-keys/{}", ci.key_id), Some(json!({"disabled": false})))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(ci.call(GAT, &json!({})).await.0, 200);

    // The user disabled: every key of it refused, and its login tokens.
    let (_, v) = ci.call(GAT, &json!({})).await;
    let password = login_password(&v);
    let r = admin(reqwest::Method::PATCH, "users/ci", Some(json!({"disabled": true}))).await.unwrap();
    assert_eq!(r.status(), 200);
    let (status, v) = ci.call(GAT, &json!({})).await;
    assert!(status == 403 && refused(&v), "disabled user: {v}");
    assert_eq!(v2_status(&ci, &basic("AWS", &password)).await, 401);
    let r = admin(reqwest::Method::PATCH, "users/ci", Some(json!({"disabled": false}))).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(ci.call(GAT, &json!({})).await.0, 200);

    // The key deleted.
    let r = admin(reqwest::Method::DELETE, &format!("access-keys/{}", ci.key_id), None).await.unwrap();
    assert_eq!(r.status(), 204);
    let (status, v) = ci.call(GAT, &json!({})).await;
    assert!(status == 403 && refused(&v), "deleted key: {v}");

    // The user deleted (with a fresh key first).
    let ci2 = EcrClient { ..ecr.for_user("ci2", None).await };
    let r = admin(reqwest::Method::DELETE, "users/ci2", None).await.unwrap();
    assert_eq!(r.status(), 204);
    let (status, v) = ci2.call(GAT, &json!({})).await;
    assert!(status == 403 && refused(&v), "deleted user: {v}");
    t.server.stop().await;
}

#[tokio::test]
async fn a_key_from_before_sealing_works_after_one_basic_sign_in() {
    let (t, ecr) = start().await;
    let meta = t.server.app.registry().meta.clone();
    let stored = meta.access_key(&ecr.key_id).await.unwrap().unwrap().secret_sealed.expect("sealed at creation");
    assert!(stored.starts_with("sealed:v1:"), "{stored}");
    assert!(!stored.contains(&ecr.secret), "never the plain secret");
    // As a key created before this release: no sealed secret.
    assert!(meta.set_access_key_secret_sealed(&ecr.key_id, Some(&stored), None).await.unwrap());

    let (status, v) = ecr.call(GAT, &json!({})).await;
    assert_eq!((status, kind(&v)), (403, "UnrecognizedClientException"), "{v}");
    assert!(message(&v).contains("sign in once with it"), "names the fix: {v}");
    assert!(message(&v).contains("berth admin key create"), "{v}");
    // A wrong Basic secret seals nothing.
    assert_eq!(v2_status(&ecr, &basic(&ecr.key_id, "not-the-secret")).await, 401);
    assert_eq!(meta.access_key(&ecr.key_id).await.unwrap().unwrap().secret_sealed, None);

    // One Basic sign-in with the secret (what docker login does) seals it.
    assert_eq!(v2_status(&ecr, &basic(&ecr.key_id, &ecr.secret)).await, 200);
    let resealed = meta.access_key(&ecr.key_id).await.unwrap().unwrap().secret_sealed.expect("sealed at sign-in");
    assert!(resealed.starts_with("sealed:v1:") && !resealed.contains(&ecr.secret));
    assert_eq!(ecr.call(GAT, &json!({})).await.0, 200);
    t.server.stop().await;
}

#[tokio::test]
async fn failed_signatures_count_in_the_sign_in_throttle() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = auth_config(dir.path());
    c.auth.max_failed_logins = 3;
    c.auth.lockout = Duration::from_secs(600);
    let (t, ecr) = start_with(dir, c).await;
    let wrong = EcrClient { secret: format!("{}x", ecr.secret), ..ecr.clone() };
    for _ in 0..3 {
        let (status, v) = wrong.call(GAT, &json!({})).await;
        assert_eq!((status, kind(&v)), (403, "InvalidSignatureException"), "{v}");
    }
    // Backing off now, whatever the signature: refused before it is checked.
    let (status, v) = ecr.call(GAT, &json!({})).await;
    assert_eq!((status, kind(&v)), (400, "ThrottlingException"), "{v}");
    let unknown = EcrClient { key_id: "BKIAAAAAAAAAAAAAAAAA".into(), ..ecr.clone() };
    assert_eq!(kind(&unknown.call(GAT, &json!({})).await.1), "ThrottlingException");
    t.server.stop().await;
}

#[tokio::test]
async fn botocore_style_requests_without_a_content_hash_and_with_one() {
    // The AWS CLI and boto3 send no X-Amz-Content-Sha256; other SDKs sign one. Both work, and
    // a hash that is not the body's is refused.
    let (t, ecr) = start().await;
    let body = json!({});
    let digest = berth_oci::Digest::sha256_of(body.to_string().as_bytes()).to_string();
    let hex = digest.trim_start_matches("sha256:");
    let mut req = ecr.request(GAT, &body);
    req.headers_mut().insert("x-amz-content-sha256", hex.parse().unwrap());
    sign(&mut req, &ecr.key_id, &ecr.secret, REGION);
    assert_eq!(ecr.send(req).await.0, 200);
    let mut req = ecr.request(GAT, &body);
    req.headers_mut().insert("x-amz-content-sha256", "0".repeat(64).parse().unwrap());
    sign(&mut req, &ecr.key_id, &ecr.secret, REGION);
    let (status, v) = ecr.send(req).await;
    assert_eq!((status, kind(&v)), (403, "InvalidSignatureException"), "{v}");
    assert!(message(&v).contains("x-amz-content-sha256"), "{v}");
    t.server.stop().await;
}

/// On PostgreSQL without a key-encryption key no secret is sealed: keys sign in with Basic
/// credentials only, and a signed request is told why it cannot be checked.
#[tokio::test]
#[ignore = "needs PostgreSQL: eval \"$(bash .ci/postgres.sh start)\", then cargo test -- --ignored"]
async fn without_a_kek_signed_requests_are_told_why() {
    let schema = crate::replicas::Schema::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = auth_config(dir.path());
    c.metadata.backend = berth_registry::config::MetadataBackend::Postgres;
    c.metadata.url = Some(schema.url.clone().try_into().unwrap());
    c.encryption.enabled = false;
    let (t, ecr) = start_with(dir, c).await;
    let meta = t.server.app.registry().meta.clone();
    assert_eq!(meta.access_key(&ecr.key_id).await.unwrap().unwrap().secret_sealed, None);
    let (status, v) = ecr.call(GAT, &json!({})).await;
    assert_eq!((status, kind(&v)), (403, "UnrecognizedClientException"), "{v}");
    assert!(message(&v).contains("no key-encryption key"), "{v}");
    // Basic credentials still work, and seal nothing (there is nothing to seal under).
    assert_eq!(v2_status(&ecr, &basic(&ecr.key_id, &ecr.secret)).await, 200);
    assert_eq!(meta.access_key(&ecr.key_id).await.unwrap().unwrap().secret_sealed, None);
    t.server.stop().await;
    schema.drop().await;
}

/// With authentication off nothing is signed or checked; GetAuthorizationToken still answers
/// (a token bound to no user, which signs in nobody once authentication is on).
#[tokio::test]
async fn with_authentication_off_requests_need_no_signature() {
    let t = crate::support::TestServer::start().await;
    let ecr = EcrClient {
        client: t.client.clone(),
        url: t.server.url(),
        key_id: String::new(),
        secret: String::new(),
        region: REGION.into(),
    };
    let (status, v) = ecr.send(ecr.request(GAT, &json!({}))).await;
    assert_eq!(status, 200, "{v}");
    assert!(!login_password(&v).is_empty());
    t.server.stop().await;
}

/// A secret sealed under a KEK that is no longer the active one is sealed again under the
/// active one when next used, and keeps working.
#[tokio::test]
async fn a_secret_sealed_under_a_rotated_kek_is_resealed_when_used() {
    let dir = tempfile::tempdir().unwrap();
    let config = auth_config(dir.path());
    let (t, ecr) = start_with(dir, config.clone()).await;
    let kek_of = |stored: String| {
        let b64 = stored.strip_prefix("sealed:v1:").unwrap().to_owned();
        let sealed = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        berth_storage::crypt::secret::kek_id(&sealed).unwrap().to_owned()
    };
    let sealed_now = |t: &crate::support::TestServer| {
        let meta = t.server.app.registry().meta.clone();
        let id = ecr.key_id.clone();
        async move { meta.access_key(&id).await.unwrap().unwrap().secret_sealed.unwrap() }
    };
    assert_eq!(kek_of(sealed_now(&t).await), "default.1");
    let rotation = t.server.app.registry().rotate_key("default", Duration::ZERO, &|_| {}).await.unwrap();
    assert_eq!(rotation.to, "default.2");
    let crate::support::TestServer { server, dir, .. } = t;
    server.stop().await;

    // Restarted: default.2 seals; the secret sealed under default.1 still opens, and is
    // sealed again under default.2 by its first use.
    let t = crate::support::TestServer::start_with(dir, config).await;
    let ecr = EcrClient { url: t.server.url(), ..ecr.clone() };
    assert_eq!(kek_of(sealed_now(&t).await), "default.1");
    let (status, v) = ecr.call(GAT, &json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(kek_of(sealed_now(&t).await), "default.2");
    assert_eq!(ecr.call(GAT, &json!({})).await.0, 200);
    t.server.stop().await;
}
