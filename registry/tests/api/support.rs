//! A registry on an ephemeral port with its own data folder, and small request helpers.

use berth_registry::app::RunningServer;
use berth_registry::config::Config;
use tokio::net::TcpListener;

pub struct TestServer {
    pub server: RunningServer,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

/// A configuration with its data in `dir` and authentication off (the auth tests switch it
/// on: `auth.rs`).
pub fn config_in(dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.to_owned(),
        auth: berth_registry::auth::config::AuthConfig { enabled: false, ..Default::default() },
        // Collections run when a test asks: a scheduled one at a random moment would race it.
        gc: berth_registry::config::GcConfig { interval: std::time::Duration::ZERO, ..Default::default() },
        ..Config::default()
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        TestServer::start_with(dir, config).await
    }

    pub async fn start_with(dir: tempfile::TempDir, config: Config) -> TestServer {
        TestServer::start_tuned(dir, config, &|_| {}).await
    }

    /// With settings configuration cannot give (a GC grace period of seconds).
    pub async fn start_tuned(
        dir: tempfile::TempDir,
        config: Config,
        tune: &(dyn Fn(&mut berth_registry::service::Settings) + Sync),
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = RunningServer::start_tuned(listener, &config, tune).await.unwrap();
        TestServer { server, client: reqwest::Client::new(), dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    /// Starts an upload in `repo` and returns its absolute URL.
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self.client.post(self.url(&format!("/v2/{repo}/blobs/uploads/"))).send().await.unwrap();
        assert_eq!(r.status(), 202);
        self.url(r.headers()["location"].to_str().unwrap())
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    berth_oci::Digest::sha256_of(bytes).to_string()
}

/// Deterministic, incompressible-looking bytes.
pub fn data(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Pushes a config blob (monolithic) and a manifest referencing it as `repo:tag`; returns
/// the manifest's digest and size.
pub async fn push_manifest(t: &TestServer, repo: &str, tag: &str, seed: &str) -> (String, usize) {
    let config = format!("{{\"seed\":\"{seed}\"}}").into_bytes();
    let digest = sha256(&config);
    let r = t
        .client
        .post(t.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
        .body(config.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": config.len()},
        "layers": []
    })
    .to_string();
    let r = t
        .client
        .put(t.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    (sha256(manifest.as_bytes()), manifest.len())
}
