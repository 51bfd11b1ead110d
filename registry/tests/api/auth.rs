//! Authentication and authorization through the HTTP API: the challenge, the token
//! service (GET and the OAuth2 POST, refresh tokens, merged scopes), Basic credentials on
//! `/v2/` (passwords, access keys, login tokens), policies (read-only users, repository
//! policies that share, explicit Deny over Allow, IP conditions, anonymous pull), the admin
//! API, mounts that need pull on their source, and the sign-in throttle.

use std::time::Duration;

use base64::Engine as _;
use berth_registry::config::Config;
use serde_json::{Value, json};

use crate::support::*;

const ADMIN_PW: &str = "admin-password-for-tests";

fn auth_config(dir: &std::path::Path) -> Config {
    let mut c = config_in(dir);
    c.auth.enabled = true;
    c.auth.admin_password = Some(ADMIN_PW.to_owned().into());
    c
}

async fn start() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let c = auth_config(dir.path());
    TestServer::start_with(dir, c).await
}

fn basic(user: &str, secret: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}")))
}

impl TestServer {
    /// A registry token for `scopes`, signed in as `user` (anonymous with `None`).
    async fn token(&self, user: Option<(&str, &str)>, scopes: &[&str]) -> (String, Value) {
        let mut url = reqwest::Url::parse(&self.url("/token")).unwrap();
        url.query_pairs_mut().append_pair("service", "berth");
        for s in scopes {
            url.query_pairs_mut().append_pair("scope", s);
        }
        let mut req = self.client.get(url);
        if let Some((u, p)) = user {
            req = req.header("authorization", basic(u, p));
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "token for {user:?}: {:?}", r.text().await);
        let v: Value = r.json().await.unwrap();
        (v["token"].as_str().unwrap().to_owned(), v)
    }

    /// Granted scopes of a token, read from its claims (unverified: for assertions).
    fn access(token: &str) -> Value {
        let payload = token.split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        claims["access"].clone()
    }

    async fn admin_api(&self, method: reqwest::Method, path: &str, body: Option<String>) -> reqwest::Response {
        let mut req = self
            .client
            .request(method, self.url(&format!("/api/v1/{path}")))
            .header("authorization", basic("admin", ADMIN_PW));
        if let Some(b) = body {
            req = req.body(b);
        }
        req.send().await.unwrap()
    }

    async fn create_user(&self, name: &str, password: &str, policy: Option<Value>) {
        let r = self
            .admin_api(reqwest::Method::POST, "users", Some(json!({"name": name, "password": password}).to_string()))
            .await;
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        if let Some(p) = policy {
            let r =
                self.admin_api(reqwest::Method::PUT, &format!("users/{name}/policies/main"), Some(p.to_string())).await;
            assert_eq!(r.status(), 200, "{:?}", r.text().await);
        }
    }

    /// Pushes a one-layer image to `repo:tag` with `auth` on every request; the status of
    /// the first request that fails, or 201.
    async fn push_image(&self, repo: &str, tag: &str, auth: &str) -> u16 {
        let layer = data(3000, repo.len() as u8);
        let digest = sha256(&layer);
        let r = self
            .client
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
            .header("authorization", auth)
            .body(layer.clone())
            .send()
            .await
            .unwrap();
        if r.status() != 201 {
            return r.status().as_u16();
        }
        let config = b"{}".to_vec();
        let cd = sha256(&config);
        let r = self
            .client
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={cd}")))
            .header("authorization", auth)
            .body(config.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": layer.len()}],
        });
        let r = self
            .client
            .put(self.url(&format!("/v2/{repo}/manifests/{tag}")))
            .header("authorization", auth)
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.to_string())
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    }

    async fn pull_status(&self, repo: &str, tag: &str, auth: Option<&str>) -> u16 {
        let mut req = self
            .client
            .get(self.url(&format!("/v2/{repo}/manifests/{tag}")))
            .header("accept", "application/vnd.oci.image.manifest.v1+json");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send().await.unwrap().status().as_u16()
    }
}

fn form_body(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn anonymous_requests_get_a_bearer_challenge() {
    let t = start().await;
    let r = t.client.get(t.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert_eq!(challenge, format!("Bearer realm=\"{}/token\",service=\"berth\"", t.server.url()));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");

    let r = t.client.get(t.url("/v2/a/b/tags/list")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.ends_with(",scope=\"repository:a/b:pull\""), "{challenge}");
    // Health stays open.
    assert_eq!(t.client.get(t.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn token_flow_push_and_pull_with_merged_scopes() {
    let t = start().await;
    // Two scope parameters for two repositories, one token for both.
    let (token, body) =
        t.token(Some(("admin", ADMIN_PW)), &["repository:team/a:pull,push", "repository:team/b:pull"]).await;
    assert_eq!(body["expires_in"], 300);
    assert!(body["issued_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        TestServer::access(&token),
        json!([{"type":"repository","name":"team/a","actions":["pull","push"]},{"type":"repository","name":"team/b","actions":["pull"]}])
    );
    assert_eq!(t.client.get(t.url("/v2/")).header("authorization", bearer(&token)).send().await.unwrap().status(), 200);
    assert_eq!(t.push_image("team/a", "v1", &bearer(&token)).await, 201);
    assert_eq!(t.pull_status("team/a", "v1", Some(&bearer(&token))).await, 200);
    // team/b: pull granted (nothing there: 404), push not in the token: sent for a new one.
    assert_eq!(t.pull_status("team/b", "v1", Some(&bearer(&token))).await, 404);
    let r =
        t.client.post(t.url("/v2/team/b/blobs/uploads/")).header("authorization", bearer(&token)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let c = r.headers()["www-authenticate"].to_str().unwrap();
    assert!(c.contains("scope=\"repository:team/b:pull,push\"") && c.contains("error=\"insufficient_scope\""), "{c}");
    // Another repository entirely.
    assert_eq!(t.pull_status("team/c", "v1", Some(&bearer(&token))).await, 401);
    // The public keys are published.
    let jwks: Value = t.client.get(t.url("/token/jwks.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let t = start().await;
    let (token, _) = t.token(Some(("admin", ADMIN_PW)), &["repository:a:pull"]).await;
    let parts: Vec<&str> = token.split('.').collect();
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let mut claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["access"] = json!([{"type":"repository","name":"a","actions":["pull","push","delete"]}]);
    let tampered = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    let none = format!("{}.{}.", b64(&json!({"alg":"none","typ":"JWT"})), parts[1]);
    let hs = format!("{}.{}.{}", b64(&json!({"alg":"HS256","typ":"JWT"})), parts[1], parts[2]);
    for (what, bad) in [("tampered", tampered), ("alg none", none), ("HS256", hs), ("garbage", "x.y.z".to_owned())] {
        let r = t.client.get(t.url("/v2/a/tags/list")).header("authorization", bearer(&bad)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
        assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("error=\"invalid_token\""), "{what}");
    }
}

#[tokio::test]
async fn a_token_for_another_registry_is_refused() {
    // Two registries sharing a signing key but not a service name: a token for one is not
    // accepted by the other (audience).
    let key_dir = tempfile::tempdir().unwrap();
    let key = key_dir.path().join("signing.pem");
    let der = berth_auth::token::SigningKey::generate().unwrap().pkcs8_der().to_vec();
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    std::fs::write(&key, format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n")))
        .unwrap();
    // A signing key file others may read is refused.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let dir_a = tempfile::tempdir().unwrap();
    let mut ca = auth_config(dir_a.path());
    ca.auth.token.signing_key_file = Some(key.clone());
    ca.auth.token.service = "registry-a".into();
    let a = TestServer::start_with(dir_a, ca).await;
    let dir_b = tempfile::tempdir().unwrap();
    let mut cb = auth_config(dir_b.path());
    cb.auth.token.signing_key_file = Some(key);
    cb.auth.token.service = "registry-b".into();
    let b = TestServer::start_with(dir_b, cb).await;
    let r = a
        .client
        .get(a.url("/token?service=registry-a&scope=repository:x:pull"))
        .header("authorization", basic("admin", ADMIN_PW))
        .send()
        .await
        .unwrap();
    let token = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    assert_eq!(
        a.client.get(a.url("/v2/x/tags/list")).header("authorization", bearer(&token)).send().await.unwrap().status(),
        404
    );
    let r = b.client.get(b.url("/v2/x/tags/list")).header("authorization", bearer(&token)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.json::<Value>().await.unwrap()["errors"][0]["message"].as_str().unwrap().contains("audience"));
    // And the token service refuses to mint for another service.
    let r = a
        .client
        .get(a.url("/token?service=registry-b"))
        .header("authorization", basic("admin", ADMIN_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn read_only_users_pull_but_cannot_push() {
    let t = start().await;
    assert_eq!(t.push_image("app/web", "v1", &basic("admin", ADMIN_PW)).await, 201);
    let read_only = json!({"Version":"2012-10-17","Statement":[{"Sid":"Pull","Effect":"Allow",
        "Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer"],"Resource":"*"}]});
    t.create_user("reader", "reader-password", Some(read_only)).await;
    // A partial grant is not an error.
    let (token, _) = t.token(Some(("reader", "reader-password")), &["repository:app/web:pull,push"]).await;
    assert_eq!(TestServer::access(&token), json!([{"type":"repository","name":"app/web","actions":["pull"]}]));
    assert_eq!(t.pull_status("app/web", "v1", Some(&bearer(&token))).await, 200);
    assert_eq!(t.push_image("app/web", "v2", &bearer(&token)).await, 401);
    // Basic credentials on /v2/ go through the same policies: a final 403.
    assert_eq!(t.pull_status("app/web", "v1", Some(&basic("reader", "reader-password"))).await, 200);
    assert_eq!(t.push_image("app/web", "v2", &basic("reader", "reader-password")).await, 403);
}

#[tokio::test]
async fn repository_policy_shares_and_explicit_deny_wins() {
    let t = start().await;
    assert_eq!(t.push_image("shared/app", "v1", &basic("admin", ADMIN_PW)).await, 201);
    assert_eq!(t.push_image("private/app", "v1", &basic("admin", ADMIN_PW)).await, 201);
    // bob has no identity policy at all; a repository policy names him.
    t.create_user("bob", "bob-password", None).await;
    let bob = basic("bob", "bob-password");
    assert_eq!(t.pull_status("shared/app", "v1", Some(&bob)).await, 403);
    let share = json!({"Version":"2012-10-17","Statement":[{"Sid":"ShareWithBob","Effect":"Allow",
        "Principal":{"AWS":"arn:aws:iam::000000000000:user/bob"},
        "Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer"]}]});
    let r = t.admin_api(reqwest::Method::PUT, "repositories/shared/app/policy", Some(share.to_string())).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(t.pull_status("shared/app", "v1", Some(&bob)).await, 200);
    assert_eq!(t.pull_status("private/app", "v1", Some(&bob)).await, 403);
    assert_eq!(t.push_image("shared/app", "v2", &bob).await, 403);

    // An explicit Deny in the repository policy beats the admin's Allow *.
    let deny = json!({"Version":"2012-10-17","Statement":[{"Sid":"NoPushes","Effect":"Deny","Principal":"*",
        "Action":"ecr:PutImage"}]});
    let r = t.admin_api(reqwest::Method::PUT, "repositories/private/app/policy", Some(deny.to_string())).await;
    assert_eq!(r.status(), 200);
    assert_eq!(t.push_image("private/app", "v2", &basic("admin", ADMIN_PW)).await, 403);
    let (token, _) = t.token(Some(("admin", ADMIN_PW)), &["repository:private/app:pull,push"]).await;
    assert_eq!(TestServer::access(&token), json!([{"type":"repository","name":"private/app","actions":["pull"]}]));
    assert_eq!(t.pull_status("private/app", "v1", Some(&basic("admin", ADMIN_PW))).await, 200);
}

#[tokio::test]
async fn ip_conditions_and_anonymous_pull() {
    let t = start().await;
    assert_eq!(t.push_image("public/tool", "v1", &basic("admin", ADMIN_PW)).await, 201);
    assert_eq!(t.pull_status("public/tool", "v1", None).await, 401);
    // Anonymous pull of one repository, from loopback only.
    let public = json!({"Version":"2012-10-17","Statement":[{"Sid":"AnonymousPull","Effect":"Allow","Principal":"*",
        "Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer"],
        "Condition":{"IpAddress":{"aws:SourceIp":["127.0.0.0/8","::1/128"]}}}]});
    let r = t.admin_api(reqwest::Method::PUT, "repositories/public/tool/policy", Some(public.to_string())).await;
    assert_eq!(r.status(), 200);
    assert_eq!(t.pull_status("public/tool", "v1", None).await, 200);
    // The anonymous token flow (what docker pull does) grants it too.
    let (token, _) = t.token(None, &["repository:public/tool:pull,push"]).await;
    assert_eq!(TestServer::access(&token), json!([{"type":"repository","name":"public/tool","actions":["pull"]}]));
    assert_eq!(t.push_image("public/tool", "v2", "Bearer x").await, 401);

    // A registry policy denying everything but its own removal from outside 10.0.0.0/8
    // shuts out even the admin.
    let fence = json!({"Version":"2012-10-17","Statement":[{"Sid":"OnlyFromTheOffice","Effect":"Deny","Principal":"*",
        "NotAction":"ecr:*RegistryPolicy","Resource":"*","Condition":{"NotIpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]});
    let r = t.admin_api(reqwest::Method::PUT, "registry/policy", Some(fence.to_string())).await;
    assert_eq!(r.status(), 200);
    assert_eq!(t.pull_status("public/tool", "v1", Some(&basic("admin", ADMIN_PW))).await, 403);
    assert_eq!(t.pull_status("public/tool", "v1", None).await, 401);
    // Its NotAction leaves the admin a way to lift it.
    assert_eq!(t.admin_api(reqwest::Method::DELETE, "registry/policy", None).await.status(), 204);
    assert_eq!(t.pull_status("public/tool", "v1", Some(&basic("admin", ADMIN_PW))).await, 200);
}

#[tokio::test]
async fn access_keys_login_tokens_and_refresh_tokens() {
    let t = start().await;
    let all = json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecr:*"],"Resource":"*"}]});
    t.create_user("ci", "ci-password-1", Some(all)).await;
    let r = t.admin_api(reqwest::Method::POST, "users/ci/access-keys", None).await;
    assert_eq!(r.status(), 201);
    let key: Value = r.json().await.unwrap();
    let (id, secret) = (key["id"].as_str().unwrap().to_owned(), key["secret"].as_str().unwrap().to_owned());
    assert!(id.starts_with("BKIA"));
    // The secret is never shown again.
    let listed: Value = t.admin_api(reqwest::Method::GET, "users/ci/access-keys", None).await.json().await.unwrap();
    assert!(listed[0].get("secret").is_none());
    assert_eq!(t.push_image("ci/app", "v1", &basic(&id, &secret)).await, 201);
    assert_eq!(t.pull_status("ci/app", "v1", Some(&basic(&id, "wrong"))).await, 401);

    // A login token: the password of `docker login -u AWS`.
    let r =
        t.client.get(t.url("/api/v1/login-token")).header("authorization", basic(&id, &secret)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let login: Value = r.json().await.unwrap();
    let password = login["password"].as_str().unwrap().to_owned();
    let decoded =
        base64::engine::general_purpose::STANDARD.decode(login["authorizationToken"].as_str().unwrap()).unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), format!("AWS:{password}"));
    assert_eq!(t.pull_status("ci/app", "v1", Some(&basic("AWS", &password))).await, 200);
    // A login token is not a registry token, and a registry token is not a password.
    assert_eq!(t.pull_status("ci/app", "v1", Some(&bearer(&password))).await, 401);

    // Refresh tokens: GET with offline_token, then the OAuth2 POST.
    let r = t
        .client
        .get(t.url("/token?service=berth&offline_token=true&client_id=test"))
        .header("authorization", basic("ci", "ci-password-1"))
        .send()
        .await
        .unwrap();
    let refresh = r.json::<Value>().await.unwrap()["refresh_token"].as_str().unwrap().to_owned();
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
        ("service", "berth"),
        ("client_id", "test"),
        ("scope", "repository:ci/app:pull repository:ci/other:pull"),
    ];
    let r = t
        .client
        .post(t.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&form))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["scope"], "repository:ci/app:pull repository:ci/other:pull");
    assert_eq!(t.pull_status("ci/app", "v1", Some(&bearer(v["access_token"].as_str().unwrap()))).await, 200);
    // The refresh token is not a registry token.
    assert_eq!(t.pull_status("ci/app", "v1", Some(&bearer(&refresh))).await, 401);
    let r = t
        .client
        .post(t.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("grant_type", "password"),
            ("username", "ci"),
            ("password", "ci-password-1"),
            ("client_id", "t"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Disabling the user stops its password, its keys, its login tokens and its refresh tokens.
    let r = t.admin_api(reqwest::Method::PATCH, "users/ci", Some(json!({"disabled": true}).to_string())).await;
    assert_eq!(r.status(), 200);
    assert_eq!(t.pull_status("ci/app", "v1", Some(&basic(&id, &secret))).await, 401);
    assert_eq!(t.pull_status("ci/app", "v1", Some(&basic("AWS", &password))).await, 401);
    assert_eq!(t.pull_status("ci/app", "v1", Some(&basic("ci", "ci-password-1"))).await, 401);
    let r = t
        .client
        .post(t.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&form))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

impl TestServer {
    /// A refresh token (`offline_token=true`) for Basic credentials `user:secret`.
    async fn refresh_token(&self, user: &str, secret: &str) -> String {
        let r = self
            .client
            .get(self.url("/token?service=berth&offline_token=true&client_id=test"))
            .header("authorization", basic(user, secret))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "refresh token for {user}");
        r.json::<Value>().await.unwrap()["refresh_token"].as_str().unwrap().to_owned()
    }

    /// A login token (the password of `docker login -u AWS`) for Basic credentials.
    async fn login_token(&self, user: &str, secret: &str) -> String {
        let r =
            self.client.get(self.url("/api/v1/login-token")).header("authorization", basic(user, secret)).send().await;
        let r = r.unwrap();
        assert_eq!(r.status(), 200, "login token for {user}");
        r.json::<Value>().await.unwrap()["password"].as_str().unwrap().to_owned()
    }

    /// The status of the OAuth2 refresh grant with `refresh`.
    async fn redeem_refresh(&self, refresh: &str) -> u16 {
        let form =
            [("grant_type", "refresh_token"), ("refresh_token", refresh), ("service", "berth"), ("client_id", "t")];
        let r = self
            .client
            .post(self.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&form))
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    }

    /// The status of `GET /v2/` and of a token request, each signed in with a login token.
    async fn redeem_login(&self, login: &str) -> (u16, u16) {
        let v2 = self.client.get(self.url("/v2/")).header("authorization", basic("AWS", login)).send().await.unwrap();
        let token = self
            .client
            .get(self.url("/token?service=berth"))
            .header("authorization", basic("AWS", login))
            .send()
            .await
            .unwrap();
        (v2.status().as_u16(), token.status().as_u16())
    }

    async fn patch_user(&self, name: &str, change: Value) -> Value {
        let r = self.admin_api(reqwest::Method::PATCH, &format!("users/{name}"), Some(change.to_string())).await;
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
        r.json().await.unwrap()
    }
}

/// Refresh tokens (30 days) and login tokens (12 h) die with the credentials they came
/// from: a password change, a password removal, disabling the user (for good: enabling it
/// again does not revive them), deleting it (a new user of the same name is someone else,
/// with its own id, and the old user's access keys do not come back). Fresh ones work.
#[tokio::test]
async fn refresh_and_login_tokens_are_revoked_with_their_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = auth_config(dir.path());
    // Each revoked login token is a failed sign-in; the throttle is not what is tested.
    c.auth.max_failed_logins = 1000;
    let t = TestServer::start_with(dir, c).await;
    let all = json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecr:*"],"Resource":"*"}]});
    let (ok, revoked) = ((200, 200), (401, 401));
    t.create_user("rv", "first-password", Some(all.clone())).await;
    let first: Value = t.admin_api(reqwest::Method::GET, "users/rv", None).await.json().await.unwrap();
    let first_id = first["id"].as_str().unwrap().to_owned();
    assert!(first_id.starts_with("AIDA") && first_id.len() == 20, "{first}");

    let (refresh, login) = (t.refresh_token("rv", "first-password").await, t.login_token("rv", "first-password").await);
    assert_eq!(t.redeem_refresh(&refresh).await, 200, "fresh refresh token");
    assert_eq!(t.redeem_login(&login).await, ok, "fresh login token");
    // A login token signs in for another login token, which is bound the same way.
    let chained = t.login_token("AWS", &login).await;

    // A password change.
    t.patch_user("rv", json!({"password": "second-password"})).await;
    assert_eq!(t.redeem_refresh(&refresh).await, 401, "refresh token after a password change");
    assert_eq!(t.redeem_login(&login).await, revoked, "login token after a password change");
    assert_eq!(t.redeem_login(&chained).await, revoked, "chained login token after a password change");
    let (refresh, login) =
        (t.refresh_token("rv", "second-password").await, t.login_token("rv", "second-password").await);
    assert_eq!(t.redeem_refresh(&refresh).await, 200);
    assert_eq!(t.redeem_login(&login).await, ok);

    // The password removed (access keys only).
    let r = t.admin_api(reqwest::Method::POST, "users/rv/access-keys", None).await;
    let key: Value = r.json().await.unwrap();
    let (id, secret) = (key["id"].as_str().unwrap().to_owned(), key["secret"].as_str().unwrap().to_owned());
    t.patch_user("rv", json!({"password": null})).await;
    assert_eq!(t.redeem_refresh(&refresh).await, 401, "refresh token after the password is removed");
    assert_eq!(t.redeem_login(&login).await, revoked, "login token after the password is removed");
    let (refresh, login) = (t.refresh_token(&id, &secret).await, t.login_token(&id, &secret).await);
    assert_eq!(t.redeem_refresh(&refresh).await, 200, "tokens from the access key");
    assert_eq!(t.redeem_login(&login).await, ok);

    // Disabled, then enabled again.
    t.patch_user("rv", json!({"disabled": true})).await;
    assert_eq!(t.redeem_refresh(&refresh).await, 401, "refresh token of a disabled user");
    assert_eq!(t.redeem_login(&login).await, revoked, "login token of a disabled user");
    t.patch_user("rv", json!({"disabled": false, "password": "third-password"})).await;
    assert_eq!(t.redeem_refresh(&refresh).await, 401, "refresh token from before the user was disabled");
    assert_eq!(t.redeem_login(&login).await, revoked, "login token from before the user was disabled");
    let (refresh, login) = (t.refresh_token("rv", "third-password").await, t.login_token("rv", "third-password").await);
    let (key_refresh, key_login) = (t.refresh_token(&id, &secret).await, t.login_token(&id, &secret).await);
    assert_eq!(t.redeem_refresh(&refresh).await, 200);
    assert_eq!(t.redeem_login(&login).await, ok);

    // Deleted, and created again under the same name with the same password and policy.
    let r = t.admin_api(reqwest::Method::DELETE, "users/rv", None).await;
    assert!(r.status().is_success(), "{:?}", r.text().await);
    t.create_user("rv", "third-password", Some(all)).await;
    let second: Value = t.admin_api(reqwest::Method::GET, "users/rv", None).await.json().await.unwrap();
    assert_ne!(second["id"].as_str().unwrap(), first_id, "a new user, a new id");
    for (what, token) in [("password", &refresh), ("access key", &key_refresh)] {
        assert_eq!(t.redeem_refresh(token).await, 401, "the old user's refresh token ({what})");
    }
    for (what, token) in [("password", &login), ("access key", &key_login)] {
        assert_eq!(t.redeem_login(token).await, revoked, "the old user's login token ({what})");
    }
    let r = t.client.get(t.url("/v2/")).header("authorization", basic(&id, &secret)).send().await.unwrap();
    assert_eq!(r.status(), 401, "the old user's access key");
    let keys: Value = t.admin_api(reqwest::Method::GET, "users/rv/access-keys", None).await.json().await.unwrap();
    assert_eq!(keys, json!([]), "the new user has no keys");
    let (refresh, login) = (t.refresh_token("rv", "third-password").await, t.login_token("rv", "third-password").await);
    assert_eq!(t.redeem_refresh(&refresh).await, 200, "the new user's own tokens");
    assert_eq!(t.redeem_login(&login).await, ok);
}

/// A user deleted and created again at once is at the same credential generation (0) as
/// the old one: only the user id tells the old user's tokens from the new user's.
#[tokio::test]
async fn a_user_created_again_under_the_same_name_does_not_inherit_tokens() {
    let t = start().await;
    let all = json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecr:*"],"Resource":"*"}]});
    t.create_user("again", "same-password", Some(all.clone())).await;
    let (refresh, login) =
        (t.refresh_token("again", "same-password").await, t.login_token("again", "same-password").await);
    let r = t.admin_api(reqwest::Method::DELETE, "users/again", None).await;
    assert!(r.status().is_success(), "{:?}", r.text().await);
    t.create_user("again", "same-password", Some(all)).await;
    assert_eq!(t.redeem_refresh(&refresh).await, 401, "the old user's refresh token");
    assert_eq!(t.redeem_login(&login).await, (401, 401), "the old user's login token");
    let (refresh, login) =
        (t.refresh_token("again", "same-password").await, t.login_token("again", "same-password").await);
    assert_eq!(t.redeem_refresh(&refresh).await, 200);
    assert_eq!(t.redeem_login(&login).await, (200, 200));
}

#[tokio::test]
async fn mounts_need_pull_on_the_source() {
    let t = start().await;
    assert_eq!(t.push_image("secret/src", "v1", &basic("admin", ADMIN_PW)).await, 201);
    let layer = data(3000, "secret/src".len() as u8);
    let digest = sha256(&layer);
    let own = json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecr:*",
        "Resource":"arn:aws:ecr:local:000000000000:repository/${aws:username}/*"}]});
    t.create_user("eve", "eve-password", Some(own)).await;
    let eve = basic("eve", "eve-password");
    let mount = |auth: String| {
        t.client
            .post(t.url(&format!("/v2/eve/app/blobs/uploads/?mount={digest}&from=secret/src")))
            .header("authorization", auth)
            .send()
    };
    // No pull on the source: an ordinary upload starts instead.
    assert_eq!(mount(eve.clone()).await.unwrap().status(), 202);
    assert_eq!(mount(basic("admin", ADMIN_PW)).await.unwrap().status(), 201);
    // Tokens: pull on the source must be in the token.
    let (token, _) =
        t.token(Some(("eve", "eve-password")), &["repository:eve/app:pull,push", "repository:secret/src:pull"]).await;
    assert_eq!(TestServer::access(&token).as_array().unwrap().len(), 1);
    assert_eq!(mount(bearer(&token)).await.unwrap().status(), 202);
}

#[tokio::test]
async fn admin_api_validates_and_checks_permissions() {
    let t = start().await;
    let bad = json!({"Version":"2012-10-17","Statement":[{"Sid":"Ok","Effect":"Allow","Action":"ecr:BatchGetImage","Resource":"*"},
        {"Sid":"Typo","Effect":"Allow","Action":"ecr:BatchGetImages","Resource":"*"}]});
    t.create_user("mallory", "mallory-password", None).await;
    let r = t.admin_api(reqwest::Method::PUT, "users/mallory/policies/p", Some(bad.to_string())).await;
    assert_eq!(r.status(), 400);
    let msg = r.json::<Value>().await.unwrap()["errors"][0]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("Statement[1]") && msg.contains("Typo"), "{msg}");
    // Duplicate users, unknown users.
    let r = t
        .admin_api(
            reqwest::Method::POST,
            "users",
            Some(json!({"name":"mallory","password":"whatever-123"}).to_string()),
        )
        .await;
    assert_eq!(r.status(), 409);
    assert_eq!(t.admin_api(reqwest::Method::GET, "users/nobody", None).await.status(), 404);
    // A user without iam permissions cannot administer.
    let r = t
        .client
        .post(t.url("/api/v1/users"))
        .header("authorization", basic("mallory", "mallory-password"))
        .body(json!({"name":"mallory2","password":"whatever-123"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = t.client.get(t.url("/api/v1/users")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let users: Value = t.admin_api(reqwest::Method::GET, "users", None).await.json().await.unwrap();
    let names: Vec<&str> = users.as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin", "mallory"]);
    assert!(users[0].get("password_hash").is_none());
}

#[tokio::test]
async fn failed_sign_ins_are_throttled() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = auth_config(dir.path());
    c.auth.max_failed_logins = 3;
    c.auth.lockout = Duration::from_secs(60);
    let t = TestServer::start_with(dir, c).await;
    for _ in 0..3 {
        let r = t
            .client
            .get(t.url("/token?service=berth"))
            .header("authorization", basic("admin", "nope"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // Backing off: from an address where admin never signed in, even the right password
    // waits (it is indistinguishable from a guess), with a Retry-After.
    let r = t
        .client
        .get(t.url("/token?service=berth"))
        .header("authorization", basic("admin", ADMIN_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
}

#[tokio::test]
async fn auth_off_serves_everyone_and_has_no_token_service() {
    let t = TestServer::start().await;
    assert_eq!(t.client.get(t.url("/v2/")).send().await.unwrap().status(), 200);
    assert_eq!(t.client.get(t.url("/token")).send().await.unwrap().status(), 404);
}
