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

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::http::{middleware_peer, middleware_secure};
use crate::tls::Tls;

/// First byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// How long a new connection may stay silent, how long a TLS handshake may take, and how
/// long request headers may take.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
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

/// Serves `app` on `listener` until `shutdown` completes, then drains open connections.
/// With `tls`, TLS connections are served too, and plain HTTP only to the peers it allows.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    // Connections still waiting for their first byte are not yet watched by `graceful`
    // but hold a watcher; this tells them to give up at shutdown instead of waiting out
    // HEADER_TIMEOUT (clients keep spare connections open that may never send anything).
    let (stopping, stop_signal) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let watcher = graceful.watcher();
                    let app = app.clone();
                    let stop = stop_signal.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move { connection(stream, peer, app, tls, watcher, stop).await });
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

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    tls: Option<Tls>,
    watcher: hyper_util::server::graceful::Watcher,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 1];
    tokio::select! {
        peeked = tokio::time::timeout(HEADER_TIMEOUT, stream.peek(&mut first)) => match peeked {
            Ok(Ok(1..)) => {}
            _ => return, // closed, failed or silent
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
                done = tokio::time::timeout(HEADER_TIMEOUT, tls.acceptor().accept(stream)) => done,
                _ = stop.wait_for(|stopping| *stopping) => return,
            };
            match handshake {
                Ok(Ok(stream)) => http1(stream, peer, Transport::Tls, app, watcher).await,
                Ok(Err(e)) => tracing::debug!(client.addr = %peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(client.addr = %peer, "TLS handshake timed out"),
            }
        }
        (false, Some(tls)) if !tls.plain_http_allows(peer.ip()) => {
            tracing::debug!(client.addr = %peer, "plain HTTP refused: this peer must use TLS (tls.plain_http)");
            refuse(stream, PLAIN_REFUSAL).await;
        }
        (false, _) => http1(stream, peer, Transport::Plain, app, watcher).await,
    }
}

/// How a connection reached the HTTP layer, for the request extension the middleware reads.
#[derive(Clone, Copy)]
enum Transport {
    Plain,
    Tls,
}

/// Serves HTTP/1.1 on one connection, plain or decrypted, until it ends or shutdown drains it.
async fn http1<I>(
    io: I,
    peer: SocketAddr,
    transport: Transport,
    app: Router,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let secure = matches!(transport, Transport::Tls);
    let service = app.map_request(move |mut req: axum::extract::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(middleware_peer(peer));
        req.extensions_mut().insert(middleware_secure(secure));
        req
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(client.addr = %peer, error = %e, "connection ended with an error");
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

    #[test]
    fn refusals_declare_their_length() {
        for answer in [TLS_REFUSAL, PLAIN_REFUSAL] {
            let text = std::str::from_utf8(answer).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.ends_with(&format!("\r\nContent-Length: {}", body.len())), "{text}");
        }
    }
}
