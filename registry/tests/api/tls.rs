//! HTTPS on the registry's one port: the certificate and key from files, replaced without a
//! restart, plain HTTP kept for loopback (or refused with a hint to use https).

use std::path::Path;
use std::time::{Duration, Instant};

use berth_registry::app::RunningServer;
use berth_registry::config::{Config, PlainHttp, TlsConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use tokio::net::TcpListener;

use crate::support::*;

/// A certificate authority the test client trusts, and nothing else.
struct Ca {
    cert: rcgen::Certificate,
    issuer: Issuer<'static, KeyPair>,
}

/// A server certificate and its key.
struct Leaf {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Berth test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, issuer: Issuer::new(params, key) }
    }

    /// A leaf for `localhost` and `127.0.0.1`, plus `extra` (so two leaves differ).
    fn leaf(&self, extra: &str) -> Leaf {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), extra.to_owned()];
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, extra);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert, key }
    }

    /// A client trusting only this CA.
    fn client(&self) -> reqwest::Client {
        self.client_builder().build().unwrap()
    }

    fn client_builder(&self) -> reqwest::ClientBuilder {
        let root = reqwest::Certificate::from_pem(self.cert.pem().as_bytes()).unwrap();
        reqwest::Client::builder().tls_certs_only([root]).tls_info(true)
    }
}

impl Leaf {
    /// Writes `cert.pem` and `key.pem` in `dir`, each by a rename, as a deployment tool would.
    fn install(&self, dir: &Path) {
        // Berth refuses a data folder others may enter once it holds files (tempdirs are 0755).
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        write_atomically(&dir.join("cert.pem"), self.cert.pem().as_bytes());
        write_atomically(&dir.join("key.pem"), self.key.serialize_pem().as_bytes());
    }

    fn der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn tls_config(dir: &Path, plain_http: PlainHttp, reload_interval: Duration) -> Config {
    let tls = TlsConfig {
        cert_file: Some(dir.join("cert.pem")),
        key_file: Some(dir.join("key.pem")),
        plain_http,
        reload_interval,
    };
    Config { tls, ..config_in(dir) }
}

/// Starts Berth with TLS from `leaf`, written into a fresh data folder.
async fn start_tls(leaf: &Leaf, plain_http: PlainHttp, reload_interval: Duration) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    leaf.install(dir.path());
    let config = tls_config(dir.path(), plain_http, reload_interval);
    TestServer::start_with(dir, config).await
}

/// `GET /v2/` over HTTPS; the DER of the certificate the server presented. A new client
/// each time: a pooled connection, or a resumed TLS session, would show the certificate
/// of an earlier handshake.
async fn served_certificate(ca: &Ca, server: &RunningServer) -> Vec<u8> {
    let r = ca.client().get(format!("{}/v2/", server.https_url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let info = r.extensions().get::<reqwest::tls::TlsInfo>().expect("TLS info on an https response");
    info.peer_certificate().expect("the server's certificate").to_vec()
}

#[tokio::test]
async fn https_and_loopback_plain_http_share_the_port() {
    let ca = Ca::new();
    let leaf = ca.leaf("one.registry.test");
    let t = start_tls(&leaf, PlainHttp::Loopback, Duration::from_secs(10)).await;

    assert_eq!(served_certificate(&ca, &t.server).await, leaf.der());
    // By name too (the certificate's DNS name; resolved here to the listener's address).
    let by_name = ca.client_builder().resolve("localhost", t.server.addr).build().unwrap();
    let r = by_name.get(format!("https://localhost:{}/v2/", t.server.addr.port())).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Loopback peers keep plain HTTP on the same port.
    let plain = t.client.get(t.url("/v2/")).send().await.unwrap();
    assert_eq!(plain.status(), 200);
    t.server.stop().await;
}

#[tokio::test]
async fn plain_http_never_gets_400_with_a_hint_to_use_https() {
    let ca = Ca::new();
    let leaf = ca.leaf("never.registry.test");
    let t = start_tls(&leaf, PlainHttp::Never, Duration::from_secs(10)).await;

    let plain = t.client.get(t.url("/v2/")).send().await.unwrap();
    assert_eq!(plain.status(), 400);
    let body = plain.text().await.unwrap();
    assert!(body.contains("https://"), "{body}");

    assert_eq!(served_certificate(&ca, &t.server).await, leaf.der());
    t.server.stop().await;
}

#[tokio::test]
async fn reload_serves_new_files_and_keeps_the_old_certificate_when_they_are_bad() {
    let ca = Ca::new();
    let first = ca.leaf("first.registry.test");
    // A long poll interval: only the explicit reloads below act.
    let t = start_tls(&first, PlainHttp::Loopback, Duration::from_secs(3600)).await;
    let certs = t.server.certs().expect("TLS is configured");
    assert_eq!(served_certificate(&ca, &t.server).await, first.der());

    let second = ca.leaf("second.registry.test");
    second.install(t.dir.path());
    certs.reload().unwrap();
    assert_eq!(served_certificate(&ca, &t.server).await, second.der());

    // A garbage key: the reload fails, naming the file, and the second certificate stays.
    write_atomically(&t.dir.path().join("key.pem"), b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    let err = certs.reload().unwrap_err();
    assert!(err.to_string().contains("key.pem"), "{err}");
    assert_eq!(served_certificate(&ca, &t.server).await, second.der());

    // A new certificate with the old key: a mismatch, refused the same way.
    let third = ca.leaf("third.registry.test");
    write_atomically(&t.dir.path().join("cert.pem"), third.cert.pem().as_bytes());
    write_atomically(&t.dir.path().join("key.pem"), second.key.serialize_pem().as_bytes());
    let err = certs.reload().unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    assert_eq!(served_certificate(&ca, &t.server).await, second.der());

    // A missing file: the same.
    std::fs::remove_file(t.dir.path().join("cert.pem")).unwrap();
    let err = certs.reload().unwrap_err();
    assert!(err.to_string().contains("cert.pem"), "{err}");
    assert_eq!(served_certificate(&ca, &t.server).await, second.der());
    t.server.stop().await;
}

#[tokio::test]
async fn changed_files_are_picked_up_by_the_poll() {
    let ca = Ca::new();
    let first = ca.leaf("first.registry.test");
    let t = start_tls(&first, PlainHttp::Loopback, Duration::from_millis(50)).await;
    assert_eq!(served_certificate(&ca, &t.server).await, first.der());

    let second = ca.leaf("second.registry.test");
    second.install(t.dir.path());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if served_certificate(&ca, &t.server).await == second.der() {
            break;
        }
        assert!(Instant::now() < deadline, "the new certificate was not served within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.server.stop().await;
}

#[tokio::test]
async fn startup_with_a_missing_or_mismatched_file_fails_naming_it() {
    let ca = Ca::new();
    let leaf = ca.leaf("start.registry.test");
    let dir = tempfile::tempdir().unwrap();
    let config = tls_config(dir.path(), PlainHttp::Loopback, Duration::from_secs(10));
    std::fs::write(dir.path().join("cert.pem"), leaf.cert.pem()).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = RunningServer::start(listener, &config).await.unwrap_err().to_string();
    let key_file = dir.path().join("key.pem").display().to_string();
    assert!(err.contains("TLS key file") && err.contains(&key_file), "{err}");

    let other = ca.leaf("other.registry.test");
    std::fs::write(dir.path().join("key.pem"), other.key.serialize_pem()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = RunningServer::start(listener, &config).await.unwrap_err().to_string();
    assert!(err.contains("does not match") && err.contains(&key_file), "{err}");
}
