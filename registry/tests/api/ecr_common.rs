//! A small signing client for ECR API tests (authentication on), shared by the `ecr_*`
//! test modules.
//!
//! - [`start`]: a registry with authentication on, and an [`EcrClient`] signing as its
//!   administrator (who may do everything) with a fresh access key.
//! - [`EcrClient::call`]`(op, json)`: one ECR operation, signed; the status and the JSON
//!   answer (`{"__type": ..., "message": ...}` for errors).
//! - [`EcrClient::for_user`]: a client for a new user with the given identity policy (or
//!   none), to test `AccessDeniedException`.
//! - [`sign`]`(request, key_id, secret, region)`: signs any `reqwest::Request` as the AWS
//!   SDKs do (Signature Version 4, service `ecr`), for tests that build requests themselves.
//!
//! Signing uses `berth_auth::sigv4`, the module the server checks with; that module is
//! checked against AWS's test suite and botocore's signer in its own unit tests.

#![allow(dead_code)]

use std::time::SystemTime;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::{TestServer, config_in};

/// The administrator's password in these tests.
pub const ADMIN_PW: &str = "admin-password-for-ecr-tests";
/// `X-Amz-Target` before the operation's name.
pub const TARGET_PREFIX: &str = "AmazonEC2ContainerRegistry_V20150921.";
/// The region of the test configuration (`auth.region`'s default).
pub const REGION: &str = "local";

/// `Authorization: Basic` for `user:secret`.
pub fn basic(user: &str, secret: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}")))
}

/// Signs `request` now with `key_id`/`secret` for `region` (service `ecr`): sets `Host`,
/// `X-Amz-Date` and `Authorization`. Every header already on the request is signed.
pub fn sign(request: &mut reqwest::Request, key_id: &str, secret: &str, region: &str) {
    sign_at(request, key_id, secret, region, SystemTime::now());
}

/// [`sign`] as if the time were `time` (for clock-skew tests).
pub fn sign_at(request: &mut reqwest::Request, key_id: &str, secret: &str, region: &str, time: SystemTime) {
    let url = request.url().clone();
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap()),
        None => url.host_str().unwrap().to_owned(),
    };
    request.headers_mut().insert("host", host.parse().unwrap());
    let body = request.body().and_then(|b| b.as_bytes()).unwrap_or_default().to_vec();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .filter(|(n, _)| !matches!(n.as_str(), "authorization" | "x-amz-date"))
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let req = berth_auth::sigv4::Request {
        method: request.method().as_str(),
        path: url.path(),
        query: url.query(),
        headers: &pairs,
        body: &body,
    };
    let signed = berth_auth::sigv4::sign(&req, key_id, secret, region, "ecr", time);
    request.headers_mut().insert("x-amz-date", signed.amz_date.parse().unwrap());
    request.headers_mut().insert("authorization", signed.authorization.parse().unwrap());
}

/// A client of one registry's ECR API, signing with one access key.
#[derive(Clone)]
pub struct EcrClient {
    pub client: reqwest::Client,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub key_id: String,
    pub secret: String,
    pub region: String,
}

impl EcrClient {
    /// The unsigned request for `op` with `input` as its body.
    pub fn request(&self, op: &str, input: &Value) -> reqwest::Request {
        self.client
            .post(format!("{}/", self.url))
            .header("x-amz-target", format!("{TARGET_PREFIX}{op}"))
            .header("content-type", "application/x-amz-json-1.1")
            .body(input.to_string())
            .build()
            .unwrap()
    }

    /// Sends `request` as it is; the status and the JSON answer (`Null` if not JSON).
    pub async fn send(&self, request: reqwest::Request) -> (u16, Value) {
        let r = self.client.execute(request).await.unwrap();
        let status = r.status().as_u16();
        let body = r.bytes().await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// Calls `op` with `input`, signed with this client's key.
    pub async fn call(&self, op: &str, input: &Value) -> (u16, Value) {
        let mut req = self.request(op, input);
        sign(&mut req, &self.key_id, &self.secret, &self.region);
        self.send(req).await
    }

    /// A client for a new user `name` with identity policy `policy` (none: `None`), signing
    /// with a new access key of that user. Made through the admin API as the administrator.
    pub async fn for_user(&self, name: &str, policy: Option<Value>) -> EcrClient {
        let admin = |m: reqwest::Method, path: &str| {
            self.client
                .request(m, format!("{}/api/v1/{path}", self.url))
                .header("authorization", basic("admin", ADMIN_PW))
        };
        let r = admin(reqwest::Method::POST, "users").body(json!({"name": name}).to_string()).send().await.unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        if let Some(p) = policy {
            let r = admin(reqwest::Method::PUT, &format!("users/{name}/policies/main"))
                .body(p.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{:?}", r.text().await);
        }
        let (key_id, secret) = create_key(&self.client, &self.url, name).await;
        EcrClient { key_id, secret, ..self.clone() }
    }
}

/// A new access key of `user` through the admin API: (id, secret).
pub async fn create_key(client: &reqwest::Client, url: &str, user: &str) -> (String, String) {
    let r = client
        .post(format!("{url}/api/v1/users/{user}/access-keys"))
        .header("authorization", basic("admin", ADMIN_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let key: Value = r.json().await.unwrap();
    (key["id"].as_str().unwrap().to_owned(), key["secret"].as_str().unwrap().to_owned())
}

/// The test configuration with authentication on (administrator `admin`, [`ADMIN_PW`]).
pub fn auth_config(dir: &std::path::Path) -> berth_registry::config::Config {
    let mut c = config_in(dir);
    c.auth.enabled = true;
    c.auth.admin_password = Some(ADMIN_PW.to_owned().into());
    c
}

/// A registry with authentication on, and a client signing as its administrator.
pub async fn start() -> (TestServer, EcrClient) {
    let dir = tempfile::tempdir().unwrap();
    let c = auth_config(dir.path());
    start_with(dir, c).await
}

/// [`start`] with a configuration of the caller's (authentication must be on).
pub async fn start_with(dir: tempfile::TempDir, config: berth_registry::config::Config) -> (TestServer, EcrClient) {
    let t = TestServer::start_with(dir, config).await;
    let url = t.server.url();
    let (key_id, secret) = create_key(&t.client, &url, "admin").await;
    let client = EcrClient { client: t.client.clone(), url, key_id, secret, region: REGION.to_owned() };
    (t, client)
}
