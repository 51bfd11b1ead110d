//! Request id, the client's address and the route, worked out once, and one structured log
//! line per request.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::header::{CONTENT_LENGTH, HeaderValue, TRANSFER_ENCODING};
use tracing::Instrument;

use super::ParsedRoute;
use super::error::LoggedError;
use super::headers::REQUEST_ID;
use super::route::Route;
use crate::auth::config::IpBlock;
use crate::error::ApiError;
use crate::service::Registry;

/// The TCP peer's address, inserted by the server for each connection. Read it only
/// through [`client_addr`]: behind a trusted proxy the peer is the proxy.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The client as Berth counts it (sign-in throttling, `aws:SourceIp`, logs, events): a
/// request extension set by [`observe`] from [`client_addr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    pub ip: IpAddr,
    /// The TCP peer, when it is not the client itself (a trusted proxy forwarded it).
    pub via: Option<SocketAddr>,
    /// The TCP peer, when it is the client: shown with its port.
    peer: Option<SocketAddr>,
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.peer {
            Some(p) => write!(f, "{p}"),
            None => write!(f, "{}", self.ip),
        }
    }
}

/// The one place the client's address is worked out. The TCP peer, unless it is one of
/// `trusted` proxies: then `X-Forwarded-For` is read from the right (each proxy appends the
/// address it saw) and the first hop that is not itself trusted is the client; entries
/// further left were written by the client and prove nothing. A hop that does not parse
/// ends the walk at the last address that did. No peer (a request made in-process): the
/// loopback address.
pub fn client_addr(peer: Option<SocketAddr>, headers: &hyper::HeaderMap, trusted: &[IpBlock]) -> ClientAddr {
    let Some(peer) = peer else {
        return ClientAddr { ip: IpAddr::from([127, 0, 0, 1]), via: None, peer: None };
    };
    let direct = ClientAddr { ip: peer.ip().to_canonical(), via: None, peer: Some(peer) };
    let is_trusted = |ip: IpAddr| trusted.iter().any(|b| b.contains(ip));
    if !is_trusted(peer.ip()) {
        return direct;
    }
    let mut hops: Vec<&str> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        // A value that is not text is a hop that does not parse (it ends the walk there).
        hops.extend(v.to_str().map_or_else(|_| vec![""], |t| t.split(',').collect()));
    }
    let mut client = None;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else { break };
        client = Some(ip);
        if !is_trusted(ip) {
            break;
        }
    }
    match client {
        Some(ip) => ClientAddr { ip, via: Some(peer), peer: None },
        None => direct,
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`[::1]:80`, `10.0.0.1:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>().or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip())).ok().map(|ip| ip.to_canonical())
}

/// Whether the connection is TLS (inserted by the server for each connection): the
/// `aws:SecureTransport` condition key, and the scheme of the token realm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secure(pub bool);

/// The request's id, as logged and returned in `X-Request-Id` (a request extension).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A request id from the client is kept when it is short and printable; else one is made.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

fn header_u64(h: &hyper::HeaderMap, name: hyper::header::HeaderName) -> Option<u64> {
    h.get(name)?.to_str().ok()?.parse().ok()
}

pub async fn observe(State(reg): State<Arc<Registry>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&req);
    let method = req.method().clone();
    let parsed = Route::parse(&method, req.uri().path());
    let (route, access) = match &parsed {
        Some(Ok(r)) => (r.label(), r.access(&method).scope().map(|s| s.to_string())),
        Some(Err(_)) => ("invalid", None),
        None => match req.uri().path() {
            "/healthz" => ("healthz", None),
            "/readyz" => ("readyz", None),
            "/metrics" => ("metrics", None),
            "/token" => ("token", None),
            "/token/jwks.json" | "/.well-known/jwks.json" => ("jwks", None),
            "/api/v1/login-token" => ("login_token", None),
            p if p.starts_with("/api/v1/") => ("admin", None),
            "/" if method == hyper::Method::POST => ("ecr", None),
            p if p.starts_with(super::ecr::DOWNLOAD_PATH) => ("ecr_download", None),
            _ => ("unknown", None),
        },
    };
    let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
    let client = client_addr(peer, req.headers(), &reg.auth.config.trusted_proxies);
    req.extensions_mut().insert(client);
    let via = client.via.map(|v| v.to_string());
    let bytes_in = header_u64(req.headers(), CONTENT_LENGTH);
    if let Some(p) = parsed {
        req.extensions_mut().insert(ParsedRoute(p));
    }
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request.id = %id, http.method = %method, http.route = route,
        ecr.operation = tracing::field::Empty);
    let req = req.map(super::drain::DrainOnDrop::wrap);
    let mut response = match transfer_codings(req.headers()) {
        Ok(()) => next.run(req).instrument(span.clone()).await,
        Err(e) => e.into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    let status = response.status().as_u16();
    let bytes_out = header_u64(response.headers(), CONTENT_LENGTH);
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let error = response.extensions().get::<LoggedError>().map(|e| e.0.as_str());
    let _entered = span.enter();
    if status >= 500 {
        tracing::error!(http.status = status, client.addr = %client, client.via = via, auth.scope = access, bytes.r#in = bytes_in,
            bytes.out = bytes_out, duration_ms, error, "request failed");
    } else {
        tracing::info!(http.status = status, client.addr = %client, client.via = via, auth.scope = access, bytes.r#in = bytes_in,
            bytes.out = bytes_out, duration_ms, error, "request");
    }
    response
}

/// Refuses a body in any transfer coding but a single `chunked`. hyper decodes `chunked`
/// when it is the last coding and leaves the others in the header for the application
/// (RFC 9112 6.1: a server that does not understand a coding answers 501); reading such a
/// body as plain bytes would store the still-encoded data.
fn transfer_codings(headers: &hyper::HeaderMap) -> Result<(), ApiError> {
    let mut chunked = 0;
    for value in headers.get_all(TRANSFER_ENCODING) {
        let text = value.to_str().map_err(|_| ApiError::TransferCodingUnsupported("(not text)".into()))?;
        for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let name = coding.split(';').next().unwrap_or(coding).trim();
            if name.eq_ignore_ascii_case("chunked") && chunked == 0 {
                chunked += 1;
            } else {
                return Err(ApiError::TransferCodingUnsupported(name.chars().take(64).collect()));
            }
        }
    }
    Ok(())
}

/// A handler panicked: answer 500 in the spec's format (the panic is logged by tracing).
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!(panic = %what, "handler panicked");
    ApiError::Internal(format!("panic: {what}")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addr_believes_only_trusted_proxies() {
        let trusted: [IpBlock; 2] = ["10.0.0.0/24".parse().unwrap(), "fd00::1".parse().unwrap()];
        // (peer, X-Forwarded-For values, the client worked out)
        let cases: &[(&str, &[&str], &str)] = &[
            // An untrusted peer: its header is ignored.
            ("192.0.2.9:4000", &["203.0.113.5"], "192.0.2.9:4000"),
            // A trusted peer: the rightmost hop it did not write itself.
            ("10.0.0.2:80", &["203.0.113.5"], "203.0.113.5"),
            // Entries the client wrote (left of the real one) are not believed.
            ("10.0.0.2:80", &["1.1.1.1, 203.0.113.5"], "203.0.113.5"),
            // A chain of trusted proxies is walked through.
            ("10.0.0.2:80", &["203.0.113.5, 10.0.0.3"], "203.0.113.5"),
            ("10.0.0.2:80", &["203.0.113.5", "10.0.0.3"], "203.0.113.5"),
            // All trusted: the leftmost.
            ("10.0.0.2:80", &["10.0.0.7, 10.0.0.3"], "10.0.0.7"),
            // Garbage ends the walk at the last good hop; none: the peer.
            ("10.0.0.2:80", &["nonsense, 203.0.113.5"], "203.0.113.5"),
            ("10.0.0.2:80", &["203.0.113.5, nonsense"], "10.0.0.2:80"),
            ("10.0.0.2:80", &[], "10.0.0.2:80"),
            // Ports and IPv6, and IPv4 mapped into IPv6.
            ("10.0.0.2:80", &["203.0.113.5:5555"], "203.0.113.5"),
            ("[fd00::1]:80", &["[2001:db8::7]:443"], "2001:db8::7"),
            ("[::ffff:10.0.0.2]:80", &["::ffff:203.0.113.5"], "203.0.113.5"),
        ];
        for (peer, xff, want) in cases {
            let mut headers = hyper::HeaderMap::new();
            for v in *xff {
                headers.append("x-forwarded-for", v.parse().unwrap());
            }
            let got = client_addr(Some(peer.parse().unwrap()), &headers, &trusted);
            assert_eq!(got.to_string(), *want, "{peer} {xff:?}");
            assert_eq!(got.via.is_some(), want != peer, "{peer} {xff:?}");
        }
        assert_eq!(client_addr(None, &hyper::HeaderMap::new(), &trusted).to_string(), "127.0.0.1");
    }
}
