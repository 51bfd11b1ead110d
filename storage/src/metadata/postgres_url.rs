//! `metadata.url`: a `postgres://` URL as libpq takes it, split into what tokio-postgres
//! parses itself ([`tokio_postgres::Config`]) and the TLS parameters Berth handles
//! ([`TlsSettings`]): `sslmode`, `sslrootcert`, `sslcert` and `sslkey`, with libpq's meanings:
//!
//! | `sslmode` | encrypted | certificate checked |
//! | --- | --- | --- |
//! | `disable` | no | no |
//! | `prefer` (the default) | when the server offers TLS | no |
//! | `require` | yes | no (but see below) |
//! | `verify-ca` | yes | chain, against the roots |
//! | `verify-full` | yes | chain and host name |
//!
//! As in libpq, `require` with an `sslrootcert` file checks the chain (it becomes `verify-ca`),
//! and `sslrootcert=system` means the system's roots and asks for `verify-full` (a weaker mode
//! is refused: any public certificate would pass a chain-only check against public roots).
//! Unlike libpq, which reads `~/.postgresql/root.crt`, `verify-full` without `sslrootcert` uses
//! the system's roots; `verify-ca` without it is refused for the same reason.

use std::path::PathBuf;
use std::str::FromStr;

use percent_encoding::percent_decode_str;

use crate::error::{Error, Result};

/// How much TLS the connection insists on (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    const ALL: [SslMode; 5] =
        [SslMode::Disable, SslMode::Prefer, SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull];

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the server's certificate chain is checked against roots.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<SslMode> {
        SslMode::ALL.into_iter().find(|m| m.as_str() == s).ok_or_else(|| {
            let accepted: Vec<&str> = SslMode::ALL.iter().map(|m| m.as_str()).collect();
            Error::PostgresSettings(format!("sslmode={s} is not one of {}", accepted.join(", ")))
        })
    }
}

/// The certificates a server's chain must lead to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The operating system's store (`sslrootcert=system`, or `verify-full` without
    /// `sslrootcert`): what `SSL_CERT_FILE`/`SSL_CERT_DIR` or the system's CA bundle hold.
    System,
    /// A PEM file of one or more CA certificates (`sslrootcert=/path/ca.pem`).
    File(PathBuf),
}

/// A client certificate and its key, both PEM files (`sslcert`, `sslkey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What the URL asks of TLS. Paths are only named here; [`super::postgres_tls::PgTls::new`]
/// reads the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// Set exactly when `mode` verifies.
    pub roots: Option<Roots>,
    pub client: Option<ClientCert>,
}

/// A parsed `metadata.url`.
#[derive(Debug)]
pub struct ConnectSettings {
    /// Everything but the TLS parameters, with `sslmode` set to what tokio-postgres knows
    /// (`verify-*` are `require` to it: the checks are the connector's).
    pub config: tokio_postgres::Config,
    pub tls: TlsSettings,
}

/// The parameters this module takes out of the URL before tokio-postgres sees the rest.
const TLS_PARAMETERS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Parses a `postgres://` or `postgresql://` URL. Errors never quote the URL (it may hold a
/// password).
pub fn parse(url: &str) -> Result<ConnectSettings> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(Error::PostgresSettings("the URL must start with postgres:// or postgresql://".into()));
    }
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut kept = Vec::new();
    let mut mode = None;
    let mut root = None;
    let mut cert = None;
    let mut key = None;
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = param.split_once('=').unwrap_or((param, ""));
        let name = decode(raw_key, "parameter name")?;
        if !TLS_PARAMETERS.contains(&name.as_str()) {
            kept.push(param);
            continue;
        }
        let value = decode(raw_value, &name)?;
        // The last occurrence wins, as in libpq.
        match name.as_str() {
            "sslmode" => mode = Some(value.parse::<SslMode>()?),
            "sslrootcert" => root = Some(value),
            "sslcert" => cert = Some(value),
            _ => key = Some(value),
        }
    }
    let tls = settings(mode, root, cert, key)?;
    let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    let mut config = tokio_postgres::Config::from_str(&rest)?;
    config.ssl_mode(match tls.mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
    });
    Ok(ConnectSettings { config, tls })
}

fn decode(raw: &str, what: &str) -> Result<String> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::PostgresSettings(format!("{what} is not UTF-8 once percent-decoded")))
}

/// libpq's rules for combining `sslmode` and `sslrootcert`, and the pairing of `sslcert`
/// with `sslkey`.
fn settings(
    mode: Option<SslMode>,
    root: Option<String>,
    cert: Option<String>,
    key: Option<String>,
) -> Result<TlsSettings> {
    let root = root.filter(|r| !r.is_empty());
    let (mode, roots) = match (mode, root.as_deref()) {
        (None | Some(SslMode::VerifyFull), Some("system")) => (SslMode::VerifyFull, Some(Roots::System)),
        (Some(mode), Some("system")) => {
            return Err(Error::PostgresSettings(format!(
                "sslrootcert=system needs sslmode=verify-full (not {mode}): against public roots only the host \
                 name tells one server from another"
            )));
        }
        (None | Some(SslMode::Prefer), _) => (SslMode::Prefer, None),
        (Some(SslMode::Disable), _) => (SslMode::Disable, None),
        (Some(SslMode::Require), None) => (SslMode::Require, None),
        // libpq: "if a root CA file exists, sslmode=require behaves like verify-ca".
        (Some(SslMode::Require | SslMode::VerifyCa), Some(path)) => {
            (SslMode::VerifyCa, Some(Roots::File(PathBuf::from(path))))
        }
        (Some(SslMode::VerifyCa), None) => {
            return Err(Error::PostgresSettings(
                "sslmode=verify-ca needs sslrootcert=/path/to/ca.pem (the CA that signed the server's certificate): \
                 it checks the chain but not the host name, so against the system's public roots any public \
                 certificate would pass; or use sslmode=verify-full"
                    .into(),
            ));
        }
        (Some(SslMode::VerifyFull), None) => (SslMode::VerifyFull, Some(Roots::System)),
        (Some(SslMode::VerifyFull), Some(path)) => (SslMode::VerifyFull, Some(Roots::File(PathBuf::from(path)))),
    };
    let client = match (cert.filter(|c| !c.is_empty()), key.filter(|k| !k.is_empty())) {
        (Some(cert), Some(key)) => Some(ClientCert { cert: cert.into(), key: key.into() }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(Error::PostgresSettings(
                "sslcert needs sslkey=/path/to/key.pem (the client certificate's private key)".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(Error::PostgresSettings(
                "sslkey needs sslcert=/path/to/cert.pem (the client certificate it belongs to)".into(),
            ));
        }
    };
    if client.is_some() && mode == SslMode::Disable {
        return Err(Error::PostgresSettings("sslcert and sslkey are sent over TLS: not with sslmode=disable".into()));
    }
    Ok(TlsSettings { mode, roots, client })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(url: &str) -> TlsSettings {
        parse(url).unwrap().tls
    }

    fn error(url: &str) -> String {
        parse(url).unwrap_err().to_string()
    }

    #[test]
    fn modes_map_to_what_tokio_postgres_enforces() {
        use tokio_postgres::config::SslMode as Wire;
        for (query, mode, wire) in [
            ("", SslMode::Prefer, Wire::Prefer),
            ("?sslmode=disable", SslMode::Disable, Wire::Disable),
            ("?sslmode=prefer", SslMode::Prefer, Wire::Prefer),
            ("?sslmode=require", SslMode::Require, Wire::Require),
            ("?sslmode=verify-ca&sslrootcert=/ca.pem", SslMode::VerifyCa, Wire::Require),
            ("?sslmode=verify-full", SslMode::VerifyFull, Wire::Require),
        ] {
            let parsed = parse(&format!("postgres://u:pw@db:5432/berth{query}")).unwrap();
            assert_eq!(parsed.tls.mode, mode, "{query}");
            assert_eq!(parsed.config.get_ssl_mode(), wire, "{query}");
            assert_eq!(parsed.config.get_dbname(), Some("berth"), "{query}");
            assert_eq!(parsed.config.get_password(), Some(&b"pw"[..]), "{query}");
        }
    }

    #[test]
    fn roots_follow_libpq() {
        assert_eq!(tls("postgres://db/x?sslmode=verify-full").roots, Some(Roots::System));
        assert_eq!(
            tls("postgres://db/x?sslrootcert=system"),
            TlsSettings { mode: SslMode::VerifyFull, roots: Some(Roots::System), client: None }
        );
        assert_eq!(
            tls("postgres://db/x?sslmode=verify-full&sslrootcert=%2Fetc%2Frds%20ca.pem").roots,
            Some(Roots::File("/etc/rds ca.pem".into()))
        );
        // A CA file upgrades require to verify-ca, as in libpq.
        let upgraded = tls("postgres://db/x?sslmode=require&sslrootcert=/ca.pem");
        assert_eq!((upgraded.mode, upgraded.roots), (SslMode::VerifyCa, Some(Roots::File("/ca.pem".into()))));
        // Without a verifying mode no roots are used.
        assert_eq!(tls("postgres://db/x?sslmode=require").roots, None);
        assert_eq!(tls("postgres://db/x?sslmode=disable&sslrootcert=/ca.pem").roots, None);
        // The last occurrence wins.
        assert_eq!(tls("postgres://db/x?sslmode=disable&sslmode=verify-full").mode, SslMode::VerifyFull);
    }

    #[test]
    fn other_parameters_reach_tokio_postgres() {
        let parsed = parse(
            "postgresql://u@db/x?options=-csearch_path%3Dberth&sslmode=verify-full&application_name=b1&sslrootcert=/ca",
        )
        .unwrap();
        assert_eq!(parsed.config.get_options(), Some("-csearch_path=berth"));
        assert_eq!(parsed.config.get_application_name(), Some("b1"));
        // An option neither side knows is still refused by tokio-postgres, by name.
        let err = error("postgres://db/x?sslmode=require&sslcrl=/crl.pem");
        assert!(err.contains("unknown option `sslcrl`"), "{err}");
    }

    #[test]
    fn a_bad_sslmode_lists_the_accepted_ones() {
        let err = error("postgres://u:secret@db/x?sslmode=verify");
        assert!(err.contains("sslmode=verify is not one of disable, prefer, require, verify-ca, verify-full"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn combinations_that_cannot_work_name_the_fix() {
        for (url, wanted) in [
            ("postgres://db/x?sslmode=verify-ca", "sslmode=verify-ca needs sslrootcert=/path/to/ca.pem"),
            ("postgres://db/x?sslmode=require&sslrootcert=system", "sslrootcert=system needs sslmode=verify-full"),
            ("postgres://db/x?sslmode=require&sslcert=/c.pem", "sslcert needs sslkey="),
            ("postgres://db/x?sslmode=require&sslkey=/k.pem", "sslkey needs sslcert="),
            ("postgres://db/x?sslmode=disable&sslcert=/c.pem&sslkey=/k.pem", "not with sslmode=disable"),
            ("mysql://db/x", "must start with postgres://"),
        ] {
            let err = error(url);
            assert!(err.contains(wanted), "{url}: {err}");
        }
    }

    #[test]
    fn client_certificates_come_in_pairs() {
        let parsed = tls("postgres://db/x?sslmode=verify-full&sslcert=/c.pem&sslkey=/k.pem");
        assert_eq!(parsed.client, Some(ClientCert { cert: "/c.pem".into(), key: "/k.pem".into() }));
    }
}
