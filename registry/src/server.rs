//! The accept loop: HTTP/1.1 on a listener the caller bound, graceful shutdown, and a fast
//! answer to TLS clients knocking on the plain-HTTP port.
//!
//! "Insecure registry" clients (docker, skopeo, podman) first try TLS on the plain port and
//! fall back to HTTP only when that attempt fails; a server that waits for an HTTP request
//! line costs them a 10 s handshake timeout. A connection whose first byte is a TLS record
//! (0x16) gets a plain `400` and is closed at once.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::http::{middleware_peer, middleware_secure};

/// First byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// How long a new connection may stay silent, and how long request headers may take.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long in-flight requests get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

const TLS_REFUSAL: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\
Content-Length: 56\r\n\r\nThis registry speaks plain HTTP on this port, not TLS.\r\n";

/// Serves `app` on `listener` until `shutdown` completes, then drains open connections.
pub async fn serve(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
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
                    tokio::spawn(async move { connection(stream, peer, app, watcher, stop).await });
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
    if first[0] == TLS_HANDSHAKE {
        tracing::debug!(client.addr = %peer, "TLS handshake on the plain-HTTP port refused");
        let mut stream = stream;
        let _ = stream.write_all(TLS_REFUSAL).await;
        let _ = stream.shutdown().await;
        return;
    }
    let service = app.map_request(move |mut req: axum::extract::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(middleware_peer(peer));
        req.extensions_mut().insert(middleware_secure(false));
        req
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(client.addr = %peer, error = %e, "connection ended with an error");
    }
}
