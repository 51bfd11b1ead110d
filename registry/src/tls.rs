//! HTTPS: a certificate and key read from PEM files, served with rustls (aws-lc-rs), and
//! swapped without a restart when the files change or on SIGHUP.
//!
//! Layout:
//! - [`Tls`]: what the accept loop needs: the rustls acceptor, and which peers may still
//!   speak plain HTTP ([`PlainHttp::allows`]).
//! - [`CertStore`]: the certificate in use, behind a lock, as rustls's
//!   `ResolvesServerCert`; [`CertStore::reload`] reads the files again and
//!   [`CertStore::watch`] does so whenever their modification time or length changes.
//! - [`reload_on_sighup`]: the SIGHUP hook, installed by the `berth serve` binary only
//!   (tests call [`CertStore::reload`] instead of sending signals to their own process).
//!
//! Invariants:
//! - A handshake always finds a certificate: the store is only built from a pair that
//!   loaded, and a reload that fails (missing file, bad PEM, a key that does not match the
//!   certificate) keeps the previous pair serving and logs the file at fault.
//! - Only HTTP/1.1 is offered in ALPN, because the server speaks nothing else.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::{PlainHttp, TlsConfig};

/// The certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing, unreadable, or holds nothing usable; `what` is "certificate" or "key".
    #[error("TLS {what} file {}: {reason}", path.display())]
    File { what: &'static str, path: PathBuf, reason: String },
    #[error("TLS key file {} does not match the certificate in {}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS setup: {0}")]
    Setup(rustls::Error),
}

impl TlsError {
    /// The file to look at (for a mismatch, the key).
    pub fn path(&self) -> Option<&Path> {
        match self {
            TlsError::File { path, .. } => Some(path),
            TlsError::Mismatch { key, .. } => Some(key),
            TlsError::Setup(_) => None,
        }
    }
}

impl PlainHttp {
    /// Whether a plain-HTTP connection from `peer` is served when TLS is configured.
    /// An IPv4 loopback address seen through an IPv6 socket (`::ffff:127.0.0.1`) is loopback.
    pub fn allows(self, peer: IpAddr) -> bool {
        match self {
            PlainHttp::Any => true,
            PlainHttp::Never => false,
            PlainHttp::Loopback => peer.to_canonical().is_loopback(),
        }
    }
}

/// HTTPS as the accept loop uses it. Cloning is cheap (shared handles).
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    plain_http: PlainHttp,
    certs: Arc<CertStore>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("plain_http", &self.plain_http).field("certs", &self.certs).finish()
    }
}

impl Tls {
    /// HTTPS as `config` describes it: `None` when no certificate is configured. Reads and
    /// checks the files now, so a bad pair stops startup with the file named. Starts no
    /// task: see [`CertStore::watch`].
    pub fn from_config(config: &TlsConfig) -> Result<Option<Tls>, TlsError> {
        let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
            return Ok(None);
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certs = Arc::new(CertStore::open(cert_file, key_file, provider.clone())?);
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Setup)?
            .with_no_client_auth()
            .with_cert_resolver(certs.clone());
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Tls { acceptor: TlsAcceptor::from(Arc::new(server)), plain_http: config.plain_http, certs }))
    }

    /// The certificate in use, to reload or watch.
    pub fn certs(&self) -> &Arc<CertStore> {
        &self.certs
    }

    /// Whether a plain-HTTP connection from `peer` is served.
    pub fn plain_http_allows(&self, peer: IpAddr) -> bool {
        self.plain_http.allows(peer)
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// What a file looked like when last read: modification time and length (`None`: missing).
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The certificate served to every handshake, replaced whole when its files change.
pub struct CertStore {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamps at the last load attempt, good or bad: a bad pair is reported
    /// once, and tried again only when a file changes again.
    seen: Mutex<[Stamp; 2]>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").field("cert_file", &self.cert_file).field("key_file", &self.key_file).finish()
    }
}

impl CertStore {
    /// Loads the pair, or fails naming the file at fault.
    pub fn open(cert_file: &Path, key_file: &Path, provider: Arc<CryptoProvider>) -> Result<CertStore, TlsError> {
        let seen = [stamp(cert_file), stamp(key_file)];
        let key = load_pair(cert_file, key_file, &provider)?;
        log_loaded(cert_file, &key, "TLS certificate loaded");
        Ok(CertStore {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            provider,
            current: RwLock::new(Arc::new(key)),
            seen: Mutex::new(seen),
        })
    }

    /// The certificate chain and key handshakes get now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Reads both files again and, if they make a good pair, serves it from the next
    /// handshake on. The outcome is logged here (an error names the file and says the
    /// previous certificate stays); the result is for callers that want to know.
    pub fn reload(&self) -> Result<(), TlsError> {
        // Stamped before reading: a file that changes while being read is read again at
        // the next poll.
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = self.stamps();
        match load_pair(&self.cert_file, &self.key_file, &self.provider) {
            Ok(key) => {
                log_loaded(&self.cert_file, &key, "TLS certificate reloaded");
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, tls.file = %e.path().unwrap_or(&self.cert_file).display(),
                    "TLS certificate reload failed; still serving the previous certificate");
                Err(e)
            }
        }
    }

    /// Reloads if either file's modification time or length changed since the last attempt.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let now = self.stamps();
        if *self.seen.lock().unwrap_or_else(PoisonError::into_inner) == now {
            return None;
        }
        Some(self.reload())
    }

    /// Checks the files every `every` and reloads a changed pair, for as long as the
    /// store is in use (the task ends once the last other handle to it is dropped).
    pub fn watch(self: &Arc<Self>, every: Duration) -> JoinHandle<()> {
        let store = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate; the files were just read
            loop {
                tick.tick().await;
                let Some(store) = store.upgrade() else { return };
                let _ = store.reload_if_changed(); // logged by reload
            }
        })
    }

    fn stamps(&self) -> [Stamp; 2] {
        [stamp(&self.cert_file), stamp(&self.key_file)]
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Reloads `certs` on every SIGHUP, for the life of the process. Only the `berth serve`
/// binary installs this: a signal handler belongs to the process, not to a library user.
#[cfg(unix)]
pub fn reload_on_sighup(certs: Arc<CertStore>) -> std::io::Result<JoinHandle<()>> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!(tls.cert_file = %certs.cert_file.display(), "SIGHUP: reloading the TLS certificate");
            let _ = certs.reload(); // logged by reload
        }
    }))
}

/// Reads a certificate chain (leaf first) and its private key, and checks they belong together.
fn load_pair(cert_file: &Path, key_file: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_error = |reason: String| TlsError::File { what: "certificate", path: cert_file.to_owned(), reason };
    let key_error = |reason: String| TlsError::File { what: "key", path: key_file.to_owned(), reason };

    let pem = std::fs::read(cert_file).map_err(|e| cert_error(e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(format!("not PEM: {e}")))?;
    if chain.is_empty() {
        return Err(cert_error("no \"BEGIN CERTIFICATE\" block in it".into()));
    }

    let pem = std::fs::read(key_file).map_err(|e| key_error(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => key_error(
            "no private key in it (a PEM \"PRIVATE KEY\", \"EC PRIVATE KEY\" or \"RSA PRIVATE KEY\" block)".into(),
        ),
        other => key_error(format!("not PEM: {other}")),
    })?;
    let key = provider.key_provider.load_private_key(key).map_err(|e| key_error(format!("unusable key: {e}")))?;

    let pair = CertifiedKey::new(chain, key);
    match pair.keys_match() {
        // Unknown: the key cannot tell its public half; the handshake will show.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(pair),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::Mismatch { cert: cert_file.to_owned(), key: key_file.to_owned() })
        }
        Err(e) => Err(cert_error(format!("unusable certificate: {e}"))),
    }
}

fn log_loaded(cert_file: &Path, key: &CertifiedKey, what: &'static str) {
    let leaf = key.end_entity_cert().map(|c| summary::read(c)).unwrap_or_default();
    tracing::info!(tls.cert_file = %cert_file.display(), tls.subject = leaf.subject.as_deref().unwrap_or("-"),
        tls.names = %leaf.names.join(","), tls.not_after = leaf.not_after.as_deref().unwrap_or("-"),
        tls.chain = key.cert.len(), "{what}");
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if let Some(end) = leaf.not_after_unix
        && end < i64::try_from(now).unwrap_or(i64::MAX)
    {
        tracing::warn!(tls.cert_file = %cert_file.display(), tls.not_after = leaf.not_after.as_deref().unwrap_or("-"),
            "the TLS certificate has expired: clients will refuse it");
    }
}

/// What the log says about a certificate, read from its DER with a few lines of parsing
/// (no X.509 crate for a log line). Anything it cannot read is left out.
mod summary {
    use std::net::IpAddr;

    #[derive(Debug, Default, PartialEq)]
    pub struct Summary {
        /// The subject's common name.
        pub subject: Option<String>,
        /// DNS names and IP addresses from the subject-alternative-name extension.
        pub names: Vec<String>,
        /// `2031-02-03T00:00:00Z`.
        pub not_after: Option<String>,
        pub not_after_unix: Option<i64>,
    }

    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

    pub fn read(der: &[u8]) -> Summary {
        parse(der).unwrap_or_default()
    }

    /// One DER element: (tag, contents, what follows).
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let (bytes, rest) = rest.split_at(n);
            (bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b)), rest)
        };
        if rest.len() < len {
            return None;
        }
        let (contents, rest) = rest.split_at(len);
        Some((tag, contents, rest))
    }

    /// The elements of a SEQUENCE or SET's contents.
    fn elements(mut input: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
        std::iter::from_fn(move || {
            let (tag, contents, rest) = tlv(input)?;
            input = rest;
            Some((tag, contents))
        })
    }

    fn parse(der: &[u8]) -> Option<Summary> {
        let (_, cert, _) = tlv(der)?;
        let (_, tbs, _) = tlv(cert)?;
        let mut fields = elements(tbs).peekable();
        if fields.peek()?.0 == 0xa0 {
            fields.next(); // version
        }
        let _serial = fields.next()?;
        let _signature = fields.next()?;
        let _issuer = fields.next()?;
        let (_, validity) = fields.next()?;
        let (_, subject) = fields.next()?;
        let _key = fields.next()?;
        let mut summary = Summary::default();
        if let Some((tag, time)) = elements(validity).nth(1)
            && let Some((text, unix)) = time_of(tag, time)
        {
            summary.not_after = Some(text);
            summary.not_after_unix = Some(unix);
        }
        summary.subject = elements(subject)
            .flat_map(|(_, set)| elements(set))
            .filter_map(|(_, pair)| {
                let mut pair = elements(pair);
                let (_, oid) = pair.next()?;
                let (_, value) = pair.next()?;
                (oid == COMMON_NAME).then(|| String::from_utf8_lossy(value).into_owned())
            })
            .next();
        for (tag, extensions) in fields {
            if tag == 0xa3 {
                summary.names = alt_names(extensions).unwrap_or_default();
            }
        }
        Some(summary)
    }

    fn alt_names(explicit: &[u8]) -> Option<Vec<String>> {
        let (_, extensions, _) = tlv(explicit)?;
        for (_, extension) in elements(extensions) {
            let mut parts = elements(extension);
            let (_, oid) = parts.next()?;
            if oid != SUBJECT_ALT_NAME {
                continue;
            }
            let (_, value) = parts.find(|(tag, _)| *tag == 0x04)?;
            let (_, names, _) = tlv(value)?;
            let names = elements(names)
                .filter_map(|(tag, name)| match tag {
                    0x82 => Some(String::from_utf8_lossy(name).into_owned()),
                    0x87 => match name.len() {
                        4 => <[u8; 4]>::try_from(name).ok().map(|a| IpAddr::from(a).to_string()),
                        16 => <[u8; 16]>::try_from(name).ok().map(|a| IpAddr::from(a).to_string()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect();
            return Some(names);
        }
        Some(Vec::new())
    }

    /// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`): ISO 8601 text and
    /// seconds since the Unix epoch.
    fn time_of(tag: u8, value: &[u8]) -> Option<(String, i64)> {
        let text = std::str::from_utf8(value).ok()?.strip_suffix('Z')?;
        let (year, rest) = match tag {
            0x17 if text.len() == 12 => {
                let yy: i64 = text.get(..2)?.parse().ok()?;
                (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
            }
            0x18 if text.len() == 14 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
            _ => return None,
        };
        let num = |range: std::ops::Range<usize>| rest.get(range)?.parse::<i64>().ok();
        let (month, day, hour, minute, second) = (num(0..2)?, num(2..4)?, num(4..6)?, num(6..8)?, num(8..10)?);
        let unix = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
        Some((format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z"), unix))
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
    fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
        let year = if month <= 2 { year - 1 } else { year };
        let era = year.div_euclid(400);
        let year_of_era = year - era * 400;
        let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn days_from_civil_matches_known_dates() {
            assert_eq!(days_from_civil(1970, 1, 1), 0);
            assert_eq!(days_from_civil(2000, 3, 1), 11_017);
            assert_eq!(days_from_civil(2038, 1, 19), 24_855);
            assert_eq!(time_of(0x17, b"491231235959Z").map(|t| t.1), Some(2_524_607_999));
            assert_eq!(time_of(0x18, b"20310203040506Z").map(|t| t.0), Some("2031-02-03T04:05:06Z".into()));
            assert_eq!(time_of(0x17, b"garbage"), None);
        }

        #[test]
        fn truncated_input_reads_as_nothing() {
            assert_eq!(read(&[]), Summary::default());
            assert_eq!(read(&[0x30, 0x82, 0xff]), Summary::default());
            assert_eq!(read(&[0x30, 0x03, 0x30, 0x01]), Summary::default());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use rcgen::{CertificateParams, DnType, KeyPair, date_time_ymd};

    use super::*;

    fn leaf(names: &[&str]) -> (rcgen::Certificate, KeyPair) {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "berth test");
        params.not_after = date_time_ymd(2031, 2, 3);
        let key = KeyPair::generate().unwrap();
        (params.self_signed(&key).unwrap(), key)
    }

    #[test]
    fn plain_http_policy_by_peer_address() {
        let loopback4 = IpAddr::from(Ipv4Addr::new(127, 0, 0, 1));
        let loopback_other = IpAddr::from(Ipv4Addr::new(127, 3, 2, 1));
        let loopback6 = IpAddr::from(Ipv6Addr::LOCALHOST);
        let mapped = IpAddr::from(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped());
        let lan = IpAddr::from(Ipv4Addr::new(10, 1, 2, 3));
        let lan_mapped = IpAddr::from(Ipv4Addr::new(192, 168, 1, 9).to_ipv6_mapped());
        let public6: IpAddr = "2001:db8::1".parse().unwrap();
        for (policy, peer, allowed) in [
            (PlainHttp::Loopback, loopback4, true),
            (PlainHttp::Loopback, loopback_other, true),
            (PlainHttp::Loopback, loopback6, true),
            (PlainHttp::Loopback, mapped, true),
            (PlainHttp::Loopback, lan, false),
            (PlainHttp::Loopback, lan_mapped, false),
            (PlainHttp::Loopback, public6, false),
            (PlainHttp::Any, lan, true),
            (PlainHttp::Any, public6, true),
            (PlainHttp::Never, loopback4, false),
            (PlainHttp::Never, lan, false),
        ] {
            assert_eq!(policy.allows(peer), allowed, "{policy:?} {peer}");
        }
    }

    #[test]
    fn summary_reads_subject_names_and_expiry() {
        let (cert, _) = leaf(&["localhost", "registry.example", "127.0.0.1", "::1"]);
        let s = summary::read(cert.der());
        assert_eq!(s.subject.as_deref(), Some("berth test"));
        assert_eq!(s.names, ["localhost", "registry.example", "127.0.0.1", "::1"]);
        assert_eq!(s.not_after.as_deref(), Some("2031-02-03T00:00:00Z"));
        assert_eq!(s.not_after_unix, Some(1_927_843_200));
    }

    #[test]
    fn key_formats_mismatch_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (cert, key) = leaf(&["localhost"]);
        let (_, other_key) = leaf(&["localhost"]);
        let cert_file = dir.path().join("cert.pem");
        let key_file = dir.path().join("key.pem");
        std::fs::write(&cert_file, cert.pem()).unwrap();

        // PKCS#8, as rcgen writes it.
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let store = CertStore::open(&cert_file, &key_file, provider.clone()).unwrap();
        assert_eq!(store.current().end_entity_cert().unwrap().as_ref(), cert.der().as_ref());
        assert!(store.reload_if_changed().is_none(), "nothing changed");

        // SEC1 ("EC PRIVATE KEY"): the same key in another envelope.
        let sec1 = sec1_pem(&key);
        std::fs::write(&key_file, sec1).unwrap();
        store.reload().unwrap();

        std::fs::write(&key_file, other_key.serialize_pem()).unwrap();
        let err = store.reload().unwrap_err();
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
        assert!(store.reload_if_changed().is_none(), "a bad pair is reported once");
        assert_eq!(store.current().end_entity_cert().unwrap().as_ref(), cert.der().as_ref());

        std::fs::write(&key_file, "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n").unwrap();
        let err = store.reload_if_changed().unwrap().unwrap_err();
        assert!(err.to_string().contains("key.pem"), "{err}");

        std::fs::write(&key_file, cert.pem()).unwrap();
        let err = store.reload().unwrap_err();
        assert!(err.to_string().contains("no private key"), "{err}");

        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        std::fs::write(&cert_file, "hello").unwrap();
        let err = store.reload().unwrap_err();
        assert!(err.to_string().contains("TLS certificate file") && err.to_string().contains("cert.pem"), "{err}");

        std::fs::remove_file(&cert_file).unwrap();
        let err = CertStore::open(&cert_file, &key_file, provider).unwrap_err();
        assert_eq!(err.path(), Some(cert_file.as_path()));
    }

    /// The SEC1 form of an rcgen P-256 key: PKCS#8 wraps it in an OCTET STRING.
    fn sec1_pem(key: &KeyPair) -> String {
        let der = key.serialize_der();
        // The SEC1 ECPrivateKey is the last OCTET STRING at the PKCS#8 top level; it
        // starts with 0x30 (a SEQUENCE) and runs to the end of the document.
        let at = (0..der.len())
            .rev()
            .find(|&i| der[i] == 0x04 && der.get(i + 2) == Some(&0x30) && i + 2 + usize::from(der[i + 1]) == der.len())
            .unwrap();
        let sec1 = &der[at + 2..];
        let body = base64_lines(sec1);
        format!("-----BEGIN EC PRIVATE KEY-----\n{body}-----END EC PRIVATE KEY-----\n")
    }

    fn base64_lines(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out.as_bytes().chunks(64).map(|l| format!("{}\n", String::from_utf8_lossy(l))).collect()
    }
}
