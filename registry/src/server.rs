//! The accept loop: HTTP/1.1 on a listener the caller bound, plain or over TLS on the same
//! port, graceful shutdown, and a fast answer to TLS clients when TLS is not configured.
//!
//! The first byte of each connection decides: a TLS handshake record (0x16) is handed to
//! rustls when TLS is configured ([`crate::tls`]); anything else is plain HTTP, served when
//! the peer may use it (`tls.plain_http`: without TLS everyone may; with TLS, by default only
//! loopback peers) and otherwise answered `400` with a hint to use https.
//!
//! Without TLS, "insecure registry" clients (docker, skopeo, podman) first try TLS on the
//! plain port and fall back to HTTP only when that attempt fails; a server that waits for an
//! HTTP request line costs them a 10 s handshake timeout. So a TLS record gets a plain `400`
//! and the connection is closed at once.
//!
//! Connections are counted before anything is read from them ([`Limits`], the `server.*`
//! keys): at most `max_connections_per_address` from one client address and
//! `max_connections` in all. At a cap, the oldest connection (from that address, for the
//! per-address cap) that has not yet sent a complete request head is closed to make room:
//! idle and slow-loris sockets go first, and clients that have been served keep their
//! connections; when there is none, the new connection is closed instead. Each connection must complete its first
//! request head within `header_timeout` of being accepted (TLS handshake included), and each
//! later one within `header_timeout` of the previous response (hyper's header timer, which
//! also runs while a kept-alive connection sits idle). Heads over `max_header_bytes` get 431
//! from hyper.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::config::ServerConfig;
use crate::http::{middleware_peer, middleware_secure};
use crate::tls::Tls;

/// First byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// How long in-flight requests get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

const TLS_REFUSAL: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\
Content-Length: 56\r\n\r\nThis registry speaks plain HTTP on this port, not TLS.\r\n";
/// The answer to plain HTTP from a peer `tls.plain_http` does not allow.
const PLAIN_REFUSAL: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\
Content-Length: 60\r\n\r\nThis registry requires TLS from this address: use https://\r\n";
/// How long a refused connection is read from before it is closed, so the client is not
/// reset before it has read the answer (closing with unread input sends a TCP RST).
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// File descriptors kept out of `max_connections` for everything else the process opens
/// (blob files, the database, S3 and webhook connections): a quarter of the open-file limit.
const RESERVED_FILES_DIVISOR: u64 = 4;

/// What clients may make the server hold before they are served: the `server.*` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
}

impl Limits {
    pub fn from_config(c: &ServerConfig) -> Limits {
        Limits {
            max_connections: c.max_connections,
            max_connections_per_address: c.max_connections_per_address,
            header_timeout: c.header_timeout,
            max_header_bytes: c.max_header_bytes,
        }
    }

    /// These limits with `max_connections` lowered to three quarters of `open_files`, so that
    /// a full house of connections still leaves descriptors for blob files and the database
    /// (past the limit, `accept` fails and so does every file the requests need).
    pub fn fit_open_files(mut self, open_files: u64) -> Limits {
        let usable = open_files.saturating_sub(open_files / RESERVED_FILES_DIVISOR).max(1);
        let usable = usize::try_from(usable).unwrap_or(usize::MAX);
        if self.max_connections > usable {
            tracing::warn!(
                server.max_connections = self.max_connections,
                limits.open_files = open_files,
                connections.max = usable,
                "server.max_connections lowered to fit the open-file limit"
            );
            self.max_connections = usable;
        }
        self.max_connections_per_address = self.max_connections_per_address.min(self.max_connections);
        self
    }
}

/// Raises the soft open-file limit (`RLIMIT_NOFILE`) to the hard one, logs both, and returns
/// the soft limit now in effect (`None` when it cannot be read). Many systems start services
/// with a soft limit of 1024, which a thousand idle sockets exhaust.
pub fn raise_open_file_limit() -> Option<u64> {
    let (soft, hard) = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit (RLIMIT_NOFILE)");
            return None;
        }
    };
    match rlimit::increase_nofile_limit(hard) {
        Ok(now) => {
            tracing::info!(
                limits.open_files.before = soft,
                limits.open_files.hard = hard,
                limits.open_files = now,
                "open-file limit raised to the hard limit"
            );
            Some(now)
        }
        Err(e) => {
            tracing::warn!(limits.open_files = soft, limits.open_files.hard = hard, error = %e,
                "cannot raise the open-file limit");
            Some(soft)
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then drains open connections.
/// With `tls`, TLS connections are served too, and plain HTTP only to the peers it allows.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Tls>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    // Connections still waiting for their first byte are not yet watched by `graceful`
    // but hold a watcher; this tells them to give up at shutdown instead of waiting out
    // the header timeout (clients keep spare connections open that may never send anything).
    let (stopping, stop_signal) = tokio::sync::watch::channel(false);
    let tracker = Arc::new(Tracker::new(limits));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Counted before anything is read: a refused socket is closed here.
                    let Some(slot) = tracker.admit(peer.ip()) else { continue };
                    let watcher = graceful.watcher();
                    let app = app.clone();
                    let stop = stop_signal.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move { guarded(stream, peer, app, tls, limits, slot, watcher, stop).await });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stopping.send(true);
    tracing::info!("shutting down: draining open connections");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
    Ok(())
}

/// Serves one connection while it keeps its place: it is closed when the tracker evicts it
/// to make room, or when it has sent no complete request head within the header timeout of
/// being accepted. One deadline covers the silent start, the TLS handshake and a head sent
/// byte by byte; hyper's own header timer covers the requests after the first.
#[allow(clippy::too_many_arguments)]
async fn guarded(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    tls: Option<Tls>,
    limits: Limits,
    slot: Slot,
    watcher: hyper_util::server::graceful::Watcher,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let deadline = tokio::time::Instant::now() + limits.header_timeout;
    let Slot { shared, mut evicted } = slot;
    let served = shared.clone();
    let first_head = async move {
        tokio::time::sleep_until(deadline).await;
        if served.established.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = connection(stream, peer, app, tls, limits, shared, watcher, stop) => {}
        Ok(()) = &mut evicted => {
            tracing::debug!(client.addr = %peer, "closed a connection with no request yet to make room (server.max_connections)");
        }
        () = first_head => {
            tracing::debug!(client.addr = %peer, "no complete request head within server.header_timeout; closed");
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    tls: Option<Tls>,
    limits: Limits,
    slot: Arc<SlotShared>,
    watcher: hyper_util::server::graceful::Watcher,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 1];
    // No timeout here: `guarded` holds the deadline for the first request head.
    tokio::select! {
        peeked = stream.peek(&mut first) => match peeked {
            Ok(1..) => {}
            _ => return, // closed or failed
        },
        _ = stop.wait_for(|stopping| *stopping) => return,
    }
    match (first[0] == TLS_HANDSHAKE, tls) {
        (true, None) => {
            tracing::debug!(client.addr = %peer, "TLS handshake on the plain-HTTP port refused");
            refuse(stream, TLS_REFUSAL).await;
        }
        (true, Some(tls)) => {
            let handshake = tokio::select! {
                done = tls.acceptor().accept(stream) => done,
                _ = stop.wait_for(|stopping| *stopping) => return,
            };
            match handshake {
                Ok(stream) => http1(stream, peer, Transport::Tls, app, limits, slot, watcher).await,
                Err(e) => tracing::debug!(client.addr = %peer, error = %e, "TLS handshake failed"),
            }
        }
        (false, Some(tls)) if !tls.plain_http_allows(peer.ip()) => {
            tracing::debug!(client.addr = %peer, "plain HTTP refused: this peer must use TLS (tls.plain_http)");
            refuse(stream, PLAIN_REFUSAL).await;
        }
        (false, _) => {
            let (stream, jobs) = crate::zerocopy::ZeroCopyStream::new(stream);
            http1(stream, peer, Transport::Plain(jobs), app, limits, slot, watcher).await
        }
    }
}

/// How a connection reached the HTTP layer, for the request extensions: the middleware reads
/// whether it is TLS; a plain connection's zero-copy jobs go to the blob handler.
enum Transport {
    /// Plain TCP, wrapped in a [`crate::zerocopy::ZeroCopyStream`] sharing these jobs.
    Plain(crate::zerocopy::Jobs),
    Tls,
}

/// Serves HTTP/1.1 on one connection, plain or decrypted, until it ends or shutdown drains it.
async fn http1<I>(
    io: I,
    peer: SocketAddr,
    transport: Transport,
    app: Router,
    limits: Limits,
    slot: Arc<SlotShared>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (secure, zero_copy) = match transport {
        Transport::Plain(jobs) => (false, Some(jobs)),
        Transport::Tls => (true, None),
    };
    let service = app.map_request(move |mut req: axum::extract::Request<hyper::body::Incoming>| {
        // A complete head arrived: from now on this connection is a client being served.
        slot.established();
        req.extensions_mut().insert(middleware_peer(peer));
        req.extensions_mut().insert(middleware_secure(secure));
        if let Some(jobs) = &zero_copy {
            req.extensions_mut().insert(jobs.clone());
        }
        req
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The header timer restarts whenever hyper waits for a head, idle keep-alive included.
    // `max_header_size` stops reading a head at that size (431) whatever the read buffer
    // may hold for bodies, so a pending head costs at most about that much.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(client.addr = %peer, error = %e, "connection ended with an error");
    }
}

/// The connections open, by client address, and the ones still waiting for their first
/// complete request head (oldest first: the ones evicted when the total cap is reached).
struct Tracker {
    limits: Limits,
    state: Mutex<TrackerState>,
}

#[derive(Default)]
struct TrackerState {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
    next_id: u64,
    /// Connection id -> its client's address and the sender that closes it. Ids grow, so
    /// the first is the oldest.
    waiting: BTreeMap<u64, (IpAddr, tokio::sync::oneshot::Sender<()>)>,
    /// Refusals and evictions since the last warning (one warning per 10 s at most, so a
    /// flood does not flood the log).
    refused: u64,
    evicted: u64,
    warned: Option<Instant>,
}

/// A connection's place, given by [`Tracker::admit`] and given back when dropped.
struct Slot {
    shared: Arc<SlotShared>,
    /// Resolves `Ok` when the tracker closes this connection to make room.
    evicted: tokio::sync::oneshot::Receiver<()>,
}

struct SlotShared {
    tracker: Arc<Tracker>,
    id: u64,
    addr: IpAddr,
    established: AtomicBool,
}

impl Tracker {
    fn new(limits: Limits) -> Tracker {
        Tracker { limits, state: Mutex::new(TrackerState::default()) }
    }

    /// A place for a new connection from `addr`, or `None` when it must be closed at once.
    fn admit(self: &Arc<Self>, addr: IpAddr) -> Option<Slot> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let from_addr = state.by_address.get(&addr).copied().unwrap_or(0);
        if from_addr >= self.limits.max_connections_per_address {
            // Make room among this address's own connections (behind a proxy or a NAT, its
            // real clients then still get in): the oldest that has sent no complete head yet.
            let oldest = state.waiting.iter().find(|(_, (from, _))| *from == addr).map(|(id, _)| *id);
            match oldest.and_then(|id| state.waiting.remove(&id)) {
                Some((_, close)) => {
                    let _ = close.send(());
                    state.evicted += 1;
                    state.warn(&self.limits, "server.max_connections_per_address");
                }
                None => {
                    state.refused += 1;
                    state.warn(&self.limits, "server.max_connections_per_address");
                    return None;
                }
            }
        } else if state.total >= self.limits.max_connections {
            // Make room by closing the oldest connection that has sent no complete head yet;
            // its count is given back when its task ends, a moment later.
            match state.waiting.pop_first() {
                Some((_, (_, close))) => {
                    let _ = close.send(());
                    state.evicted += 1;
                }
                None => {
                    state.refused += 1;
                    state.warn(&self.limits, "server.max_connections");
                    return None;
                }
            }
            state.warn(&self.limits, "server.max_connections");
        }
        state.total += 1;
        *state.by_address.entry(addr).or_insert(0) += 1;
        let id = state.next_id;
        state.next_id += 1;
        let (close, evicted) = tokio::sync::oneshot::channel();
        state.waiting.insert(id, (addr, close));
        let shared = Arc::new(SlotShared { tracker: self.clone(), id, addr, established: AtomicBool::new(false) });
        Some(Slot { shared, evicted })
    }
}

impl TrackerState {
    fn warn(&mut self, limits: &Limits, key: &'static str) {
        if self.warned.is_some_and(|at| at.elapsed() < Duration::from_secs(10)) {
            return;
        }
        tracing::warn!(
            limit = key,
            connections.open = self.total,
            connections.refused = self.refused,
            connections.evicted = self.evicted,
            server.max_connections = limits.max_connections,
            server.max_connections_per_address = limits.max_connections_per_address,
            "connection limit reached: refusing new connections and closing those with no request yet"
        );
        self.refused = 0;
        self.evicted = 0;
        self.warned = Some(Instant::now());
    }
}

impl SlotShared {
    /// The connection has sent a complete request head: it may no longer be evicted.
    fn established(&self) {
        if !self.established.swap(true, Ordering::Relaxed) {
            let mut state = self.tracker.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.waiting.remove(&self.id);
        }
    }
}

impl Drop for SlotShared {
    fn drop(&mut self) {
        let mut state = self.tracker.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.waiting.remove(&self.id);
        state.total = state.total.saturating_sub(1);
        if let Some(n) = state.by_address.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                state.by_address.remove(&self.addr);
            }
        }
    }
}

/// Sends `answer`, ends the write side, and reads (and drops) what the client already sent
/// or still sends, for up to [`REFUSAL_LINGER`] or 64 KiB, before closing.
async fn refuse(mut stream: TcpStream, answer: &[u8]) {
    let _ = stream.write_all(answer).await;
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < 64 * 1024 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_address: usize) -> Limits {
        Limits {
            max_connections: total,
            max_connections_per_address: per_address,
            header_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
        }
    }

    #[test]
    fn the_per_address_cap_evicts_that_addresses_unserved_then_refuses() {
        let tracker = Arc::new(Tracker::new(limits(10, 2)));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut first = tracker.admit(a).unwrap();
        let second = tracker.admit(a).unwrap();
        // A third from one address makes room among that address's unserved connections.
        let third = tracker.admit(a).unwrap();
        assert_eq!(first.evicted.try_recv(), Ok(()));
        drop(first);
        assert!(tracker.admit(b).is_some(), "another address");
        // When that address's connections have all been served, the new one is refused.
        second.shared.established();
        third.shared.established();
        assert!(tracker.admit(a).is_none(), "a third from one address, all served");
        drop(second);
        assert!(tracker.admit(a).is_some(), "a place given back");
    }

    #[test]
    fn at_the_total_cap_the_oldest_unserved_connection_makes_room() {
        let tracker = Arc::new(Tracker::new(limits(2, 2)));
        let addr = |i: u8| IpAddr::from([10, 0, 0, i]);
        let served = tracker.admit(addr(1)).unwrap();
        served.shared.established();
        let mut idle = tracker.admit(addr(2)).unwrap();
        // Full: the idle one is told to close; the served one is not.
        let mut newcomer = tracker.admit(addr(3)).unwrap();
        assert_eq!(idle.evicted.try_recv(), Ok(()));
        let mut served = served;
        assert!(served.evicted.try_recv().is_err());
        drop(idle);
        // Full again, and everyone left has been served once the newcomer is.
        newcomer.shared.established();
        assert!(tracker.admit(addr(4)).is_none());
        assert!(newcomer.evicted.try_recv().is_err());
    }

    #[test]
    fn the_connection_cap_fits_the_open_file_limit() {
        let fitted = limits(4096, 1024).fit_open_files(1024);
        assert_eq!((fitted.max_connections, fitted.max_connections_per_address), (768, 768));
        assert_eq!(limits(4096, 1024).fit_open_files(1 << 20), limits(4096, 1024));
    }

    #[test]
    fn refusals_declare_their_length() {
        for answer in [TLS_REFUSAL, PLAIN_REFUSAL] {
            let text = std::str::from_utf8(answer).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.ends_with(&format!("\r\nContent-Length: {}", body.len())), "{text}");
        }
    }
}
