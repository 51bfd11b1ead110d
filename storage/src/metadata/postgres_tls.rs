//! [`PgTls`]: TLS for the PostgreSQL connections (the pool's and the listener's), on rustls
//! over tokio-rustls, as tokio-postgres's `MakeTlsConnect`.
//!
//! - What is checked follows `sslmode` ([`super::postgres_url`]): nothing for `prefer` and
//!   `require` (the handshake's signatures are still verified), the chain for `verify-ca`, the
//!   chain and the host name (the URL's host; `hostaddr` only says where to connect) for
//!   `verify-full`.
//! - Channel binding: the stream reports `tls-server-end-point` (RFC 5929: the server
//!   certificate's hash, by the hash of its signature algorithm), so tokio-postgres signs in
//!   with SCRAM-SHA-256-PLUS when the server offers it (`channel_binding=require` in the URL
//!   insists on it).
//! - A failed handshake says what to change: the CA to name in `sslrootcert`, the host name
//!   the certificate was checked for.
//! - ALPN offers `postgresql`, which PostgreSQL 17's direct TLS (`sslnegotiation=direct`) needs.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use super::postgres_url::{ClientCert, Roots, SslMode, TlsSettings};
use crate::error::{Error, Result};

/// The connector: cheap to clone (a shared rustls configuration).
#[derive(Clone)]
pub struct PgTls {
    config: Arc<ClientConfig>,
    mode: SslMode,
    /// Where the roots came from, for error messages ("sslrootcert /etc/ca.pem").
    roots: Arc<str>,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTls").field("mode", &self.mode).field("roots", &self.roots).finish()
    }
}

impl PgTls {
    /// Reads the files `settings` names (roots, client certificate and key) and builds the
    /// rustls configuration. A file that is missing or holds nothing usable is named.
    pub fn new(settings: &TlsSettings) -> Result<PgTls> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (verifier, roots): (Arc<dyn ServerCertVerifier>, String) = match (&settings.roots, settings.mode) {
            (Some(roots), mode) if mode.verifies() => {
                let (store, described) = load_roots(roots)?;
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                    .build()
                    .map_err(|e| settings_error(format!("the roots in {described} cannot be used: {e}")))?;
                if mode == SslMode::VerifyFull { (webpki, described) } else { (Arc::new(ChainOnly(webpki)), described) }
            }
            _ => (Arc::new(NoCertificateCheck(provider.clone())), "no roots (the certificate is not checked)".into()),
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| settings_error(format!("TLS setup: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &settings.client {
            None => builder.with_no_client_auth(),
            Some(client) => {
                let (chain, key) = load_client_cert(client)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    settings_error(format!(
                        "sslcert {} with sslkey {}: {e}",
                        client.cert.display(),
                        client.key.display()
                    ))
                })?
            }
        };
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(PgTls { config: Arc::new(config), mode: settings.mode, roots: roots.into() })
    }
}

fn settings_error(message: String) -> Error {
    Error::PostgresSettings(message)
}

fn load_roots(roots: &Roots) -> Result<(RootCertStore, String)> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::File(path) => {
            let certs = read_certs(path, "sslrootcert")?;
            for cert in certs {
                store.add(cert).map_err(|e| {
                    settings_error(format!(
                        "sslrootcert {} holds a certificate that cannot be a root: {e}",
                        path.display()
                    ))
                })?;
            }
            Ok((store, format!("sslrootcert {}", path.display())))
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                return Err(settings_error(format!(
                    "no CA certificates in the system's store{}: install the ca-certificates package (or point \
                     SSL_CERT_FILE at a bundle), or name the server's CA with sslrootcert=/path/to/ca.pem",
                    if errors.is_empty() { String::new() } else { format!(" ({})", errors.join("; ")) }
                )));
            }
            Ok((store, format!("the system's {added} CA certificates")))
        }
    }
}

/// The PEM certificates in `path` (`what` is the URL parameter that named it).
fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let unreadable =
        |e: &dyn std::fmt::Display| settings_error(format!("{what} {} cannot be read: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| match e {
            rustls_pki_types::pem::Error::Io(e) if e.kind() == io::ErrorKind::NotFound => {
                settings_error(format!("{what} {} does not exist", path.display()))
            }
            e => unreadable(&e),
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(&e))?;
    if certs.is_empty() {
        return Err(settings_error(format!("{what} {} holds no PEM certificate (BEGIN CERTIFICATE)", path.display())));
    }
    Ok(certs)
}

fn load_client_cert(client: &ClientCert) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = read_certs(&client.cert, "sslcert")?;
    let key = PrivateKeyDer::from_pem_file(&client.key).map_err(|e| match e {
        rustls_pki_types::pem::Error::Io(e) if e.kind() == io::ErrorKind::NotFound => {
            settings_error(format!("sslkey {} does not exist", client.key.display()))
        }
        e => settings_error(format!("sslkey {} holds no usable PEM private key: {e}", client.key.display())),
    })?;
    Ok((chain, key))
}

/// `prefer` and `require`: encrypted, with whatever certificate the server shows. The
/// handshake's signatures are still checked (the server holds the key of what it shows).
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a root, whatever names the certificate holds. rustls
/// checks the chain first and the name last, so a name error means the chain passed.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl<S> MakeTlsConnect<S> for PgTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type TlsConnect = PgTlsConnect;
    type Error = Infallible;

    /// `host` is the URL's host name (empty for a unix socket, where PostgreSQL has no TLS):
    /// it is only turned into a TLS server name if a handshake happens.
    fn make_tls_connect(&mut self, host: &str) -> Result<PgTlsConnect, Infallible> {
        Ok(PgTlsConnect { tls: self.clone(), host: host.to_owned() })
    }
}

/// One handshake with the server at `host`.
pub struct PgTlsConnect {
    tls: PgTls,
    host: String,
}

/// Why a handshake failed, in words that say what to change.
#[derive(Debug)]
pub struct HandshakeError(String);

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HandshakeError {}

impl<S> TlsConnect<S> for PgTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type Error = HandshakeError;
    type Future = Pin<Box<dyn Future<Output = Result<PgTlsStream<S>, HandshakeError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let name = ServerName::try_from(self.host.clone()).map_err(|_| {
                HandshakeError(format!("host {:?} is neither a DNS name nor an IP address, as TLS needs", self.host))
            })?;
            let connector = tokio_rustls::TlsConnector::from(self.tls.config.clone());
            match connector.connect(name, stream).await {
                Ok(stream) => Ok(PgTlsStream(stream)),
                Err(e) => Err(HandshakeError(explain(&self.tls, &self.host, &e))),
            }
        })
    }
}

/// The message for a failed handshake: for a certificate the checks refused, what to put in
/// the URL instead.
fn explain(tls: &PgTls, host: &str, e: &io::Error) -> String {
    let mode = tls.mode;
    let roots = &tls.roots;
    let refused = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).and_then(|r| match r {
        rustls::Error::InvalidCertificate(c) => Some(c),
        _ => None,
    });
    match refused {
        Some(CertificateError::UnknownIssuer) => format!(
            "the server's certificate for {host} is not signed by a CA in {roots} (sslmode={mode}): set \
             sslrootcert=/path/to/ca.pem in metadata.url to the CA that issued it (managed databases publish theirs, \
             e.g. Amazon RDS's global-bundle.pem)"
        ),
        Some(CertificateError::NotValidForNameContext { expected, presented }) => format!(
            "the server's certificate is not valid for the host name {} (sslmode={mode}): it names {}; put one of \
             those in metadata.url's host (hostaddr=IP can still say where to connect), or use sslmode=verify-ca to \
             check the chain only",
            expected.to_str(),
            if presented.is_empty() {
                "no host at all".to_owned()
            } else {
                presented.iter().map(|p| plain_name(p)).collect::<Vec<_>>().join(", ")
            }
        ),
        Some(CertificateError::NotValidForName) => format!(
            "the server's certificate is not valid for the host name {host} (sslmode={mode}): put a name the \
             certificate holds in metadata.url's host, or use sslmode=verify-ca to check the chain only"
        ),
        Some(other) => format!("the server's certificate for {host} was refused (sslmode={mode}, {roots}): {other}"),
        None => format!("TLS with {host} failed (sslmode={mode}): {e}"),
    }
}

/// A name as rustls presents it (`DnsName("db.internal")`, `IpAddress(10.0.0.5)`), as a user
/// writes it.
fn plain_name(presented: &str) -> &str {
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
        .or_else(|| presented.strip_prefix("IpAddress(").and_then(|rest| rest.strip_suffix(')')))
        .unwrap_or(presented)
}

/// A TLS connection to the server, with its channel-binding data.
pub struct PgTlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PgTlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PgTlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for PgTlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, connection) = self.0.get_ref();
        match connection.peer_certificates().and_then(|chain| chain.first()).and_then(|c| tls_server_end_point(c)) {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
    }
}

/// RFC 5929's `tls-server-end-point`: the certificate hashed with the hash of its own
/// signature algorithm, SHA-256 for MD5 and SHA-1. `None` for an algorithm without one fixed
/// hash (Ed25519, RSA-PSS): then no channel binding is offered, as PostgreSQL itself does.
pub fn tls_server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    use aws_lc_rs::digest;
    let algorithm =
        match signature_algorithm(cert)? {
            // md5WithRSAEncryption, sha1WithRSAEncryption, sha256WithRSAEncryption, ecdsa-with-SHA1,
            // ecdsa-with-SHA256.
            [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04 | 0x05 | 0x0b]
            | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01]
            | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02] => &digest::SHA256,
            // sha384WithRSAEncryption, ecdsa-with-SHA384.
            [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c]
            | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03] => &digest::SHA384,
            // sha512WithRSAEncryption, ecdsa-with-SHA512.
            [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d]
            | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04] => &digest::SHA512,
            // sha224WithRSAEncryption, ecdsa-with-SHA224.
            [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0e]
            | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x01] => &digest::SHA224,
            _ => return None,
        };
    Some(digest::digest(algorithm, cert).as_ref().to_vec())
}

/// The OID (content bytes) of a DER certificate's outer `signatureAlgorithm`:
/// `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm SEQUENCE { OID, .. }, .. }`.
fn signature_algorithm(cert: &[u8]) -> Option<&[u8]> {
    let (0x30, certificate, _) = der_element(cert)? else { return None };
    let (0x30, _tbs, rest) = der_element(certificate)? else { return None };
    let (0x30, algorithm, _) = der_element(rest)? else { return None };
    let (0x06, oid, _) = der_element(algorithm)? else { return None };
    Some(oid)
}

/// One DER element: its tag, its contents, and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        (bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b)), rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::postgres_url::parse;

    fn certificate(algorithm: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(algorithm).unwrap();
        let params = rcgen::CertificateParams::new(vec!["db.example".to_owned()]).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        use aws_lc_rs::digest;
        for (algorithm, hash) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, &digest::SHA256),
            (&rcgen::PKCS_ECDSA_P384_SHA384, &digest::SHA384),
            (&rcgen::PKCS_RSA_SHA256, &digest::SHA256),
            (&rcgen::PKCS_RSA_SHA512, &digest::SHA512),
        ] {
            let der = certificate(algorithm);
            assert_eq!(tls_server_end_point(&der), Some(digest::digest(hash, &der).as_ref().to_vec()), "{algorithm:?}");
        }
        // Ed25519 fixes no hash: no channel binding.
        assert_eq!(tls_server_end_point(&certificate(&rcgen::PKCS_ED25519)), None);
        // Not a certificate at all.
        assert_eq!(tls_server_end_point(b"\x30\x03\x02\x01"), None);
        assert_eq!(tls_server_end_point(&[]), None);
    }

    #[test]
    fn presented_names_read_as_written() {
        assert_eq!(plain_name("DnsName(\"db.internal\")"), "db.internal");
        assert_eq!(plain_name("IpAddress(10.0.0.5)"), "10.0.0.5");
        assert_eq!(plain_name("*.example.com"), "*.example.com");
    }

    #[test]
    fn files_that_are_not_there_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-ca.pem");
        let url = format!("postgres://db/x?sslmode=verify-full&sslrootcert={}", missing.display());
        let err = PgTls::new(&parse(&url).unwrap().tls).unwrap_err().to_string();
        assert!(err.contains(&format!("sslrootcert {} does not exist", missing.display())), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let url = format!("postgres://db/x?sslmode=verify-ca&sslrootcert={}", empty.display());
        let err = PgTls::new(&parse(&url).unwrap().tls).unwrap_err().to_string();
        assert!(err.contains(&format!("sslrootcert {} holds no PEM certificate", empty.display())), "{err}");

        // A client key that is missing, next to a certificate that is there.
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["berth".to_owned()]).unwrap().self_signed(&key).unwrap();
        let cert_file = dir.path().join("client.pem");
        std::fs::write(&cert_file, cert.pem()).unwrap();
        let url = format!(
            "postgres://db/x?sslmode=require&sslcert={}&sslkey={}",
            cert_file.display(),
            dir.path().join("client.key").display()
        );
        let err = PgTls::new(&parse(&url).unwrap().tls).unwrap_err().to_string();
        assert!(err.contains(&format!("sslkey {} does not exist", dir.path().join("client.key").display())), "{err}");

        // With the key, the pair loads.
        let key_file = dir.path().join("client.key");
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        PgTls::new(&parse(&url).unwrap().tls).unwrap();
    }
}
