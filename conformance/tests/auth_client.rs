//! The tools' sign-in client (`berth_conformance::auth`) against in-process Berth with auth
//! on: a challenge met late is answered and the request retried once; a streamed body is
//! never replayed; wrong credentials fail with what the token service said.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use berth_conformance::Url;
use berth_conformance::auth::{Auth, Credentials};
use berth_registry::app::RunningServer;
use berth_registry::auth::config::AuthConfig;
use berth_registry::config::Config;
use reqwest::header::CONTENT_LENGTH;

const PASSWORD: &str = "auth-client-admin";

async fn berth_with_auth(dir: &tempfile::TempDir) -> (RunningServer, Url) {
    let config = Config {
        data_dir: dir.path().to_owned(),
        auth: AuthConfig { enabled: true, admin_password: Some(PASSWORD.to_string().into()), ..Default::default() },
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = RunningServer::start(listener, &config).await.unwrap();
    let url = Url::parse(&server.url()).unwrap();
    (server, url)
}

fn admin() -> Option<Credentials> {
    Some(Credentials::new("admin", PASSWORD))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_met_late_is_answered_and_the_request_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (server, base) = berth_with_auth(&dir).await;
    let http = reqwest::Client::new();
    // No discovery: the first request goes out unsigned and meets the challenge.
    let auth = Auth::new(http.clone(), std::slice::from_ref(&base), admin()).unwrap();
    let post = http.post(format!("{base}v2/late/blobs/uploads/")).header(CONTENT_LENGTH, 0).build().unwrap();
    let response = auth.execute(&http, post).await.unwrap();
    assert_eq!(response.status().as_u16(), 202);
    // From now on requests are signed before they are sent, and none was refused.
    let tags = http.get(format!("{base}v2/late/tags/list")).build().unwrap();
    assert_ne!(auth.execute(&http, tags).await.unwrap().status().as_u16(), 401);
    assert_eq!(auth.refusals().0, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_is_never_sent_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (server, base) = berth_with_auth(&dir).await;
    let http = reqwest::Client::new();
    let auth = Auth::new(http.clone(), std::slice::from_ref(&base), admin()).unwrap();
    let chunks = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"abc"))]);
    let post = http
        .post(format!("{base}v2/streamed/blobs/uploads/"))
        .body(reqwest::Body::wrap_stream(chunks))
        .build()
        .unwrap();
    // Unsigned (no discovery yet) and not replayable: the 401 comes back as is.
    assert_eq!(auth.execute(&http, post).await.unwrap().status().as_u16(), 401);
    // After discovery the same request is signed up front and goes through.
    auth.discover(&base, std::time::Duration::from_secs(10)).await.unwrap();
    let chunks = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"abc"))]);
    let post = http
        .post(format!("{base}v2/streamed/blobs/uploads/"))
        .body(reqwest::Body::wrap_stream(chunks))
        .build()
        .unwrap();
    assert_eq!(auth.execute(&http, post).await.unwrap().status().as_u16(), 202);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_with_the_token_services_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (server, base) = berth_with_auth(&dir).await;
    let http = reqwest::Client::new();
    let auth = Auth::new(http.clone(), std::slice::from_ref(&base), Some(Credentials::new("admin", "nope"))).unwrap();
    let how = auth.discover(&base, std::time::Duration::from_secs(10)).await.unwrap();
    assert!(how.starts_with("token auth: realm"), "{how}");
    let get = http.get(format!("{base}v2/x/tags/list")).build().unwrap();
    let err = auth.execute(&http, get).await.unwrap_err().to_string();
    assert!(err.contains("token request") && err.contains("answered 401"), "{err}");
    assert!(!err.contains("nope"), "the password leaked into {err}");
    server.stop().await;
}
